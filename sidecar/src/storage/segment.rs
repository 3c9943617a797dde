//! One file of the commit log.
//!
//! A segment holds the log bytes from `base` up to `base + len`, and is named after its base
//! position (`00000000000268435456.log`). It is preallocated with `fallocate(KEEP_SIZE)` so that the
//! blocks are reserved up front (an out-of-space condition surfaces when the segment is created, not
//! halfway through a write).
//!
//! While it is the active segment under Sync load, the zero-filler (`zero_fill.rs`) writes zeros a
//! few MiB ahead of the data, so appends land in blocks that are already written and inside the
//! file length:
//!
//! ```text
//!  file offset 0             len                   zeroed                    capacity
//!              [ frames ...... | zeros ............ | preallocated, unwritten ]
//!                              ^ appends go here     ^ the zero-filler goes on from here
//! ```
//!
//! Sealing (at a roll, or a clean shutdown) cuts the zeros off, so a sealed segment's file length
//! is its data length. Only the last segment can end in zeros, after a crash; recovery finds the
//! end of its data by scanning its frames (`recovery.rs`).

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::lock::Mutex;

use crate::storage::{StorageError, sync_dir};

/// File name suffix of segments.
pub const SUFFIX: &str = "log";

/// An open segment file.
#[derive(Debug)]
pub struct Segment {
    base: u64,
    path: PathBuf,
    file: File,
    /// Bytes of this segment that hold written frames (readers must not go past it).
    len: AtomicU64,
    /// File offset below which the zero-filler never writes: the zeros it wrote and everything
    /// appended. [`SEALED`] once the segment takes no more appends.
    zeroed: AtomicU64,
    /// Held while zeros are written and while an append writes, so zeros never land on data and
    /// the two take turns here rather than in the file system (see [`Segment::append`]).
    filling: Mutex<()>,
    /// The file opened again with `O_DIRECT`, on the first read of log the page cache let go of
    /// (see [`Self::read_direct`]); `None` where the file system refuses `O_DIRECT`.
    direct: OnceLock<Option<File>>,
}

/// Alignment of `O_DIRECT` reads: their file offset, length and buffer (the page size, a multiple
/// of every block size a Linux file system uses).
const DIRECT_ALIGN: usize = 4096;

/// `zeroed` of a segment that is not to be zero-filled any more.
const SEALED: u64 = u64::MAX;

impl Segment {
    /// Creates the segment that starts at log position `base`, reserves `capacity` bytes, and makes
    /// the new name durable (file and directory fsync) before anything is written to it.
    pub fn create(dir: &Path, base: u64, capacity: u64) -> Result<Self, StorageError> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::io("create segment", &path, e))?;
        let prepared = match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, capacity) {
            Ok(()) => Ok(()),
            // Some network filesystems cannot preallocate; writes still work there.
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
            Err(e) => Err(StorageError::io("preallocate segment", &path, e.into())),
        }
        .and_then(|()| file.sync_all().map_err(|e| StorageError::io("sync new segment", &path, e)));
        if let Err(e) = prepared {
            // Without its space the segment is useless; remove it so a later roll can try again.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        sync_dir(dir)?;
        Ok(Self::new(base, path, file, 0))
    }

    fn new(base: u64, path: PathBuf, file: File, len: u64) -> Self {
        Self {
            base,
            path,
            file,
            len: AtomicU64::new(len),
            zeroed: AtomicU64::new(len),
            filling: Mutex::new(()),
            direct: OnceLock::new(),
        }
    }

    /// Opens an existing segment; its written length is the file length (recovery moves it back
    /// to the end of the data when a crash left zeros after it, see [`Self::end_data_at`]).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let base = parse_file_name(path).ok_or_else(|| StorageError::Corrupt {
            position: None,
            reason: format!("{} is not a segment name (expected <20-digit position>.{SUFFIX})", path.display()),
        })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StorageError::io("open segment", path, e))?;
        let len = file.metadata().map_err(|e| StorageError::io("stat segment", path, e))?.len();
        Ok(Self::new(base, path.to_owned(), file, len))
    }

    /// Log position of the first byte.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Log position just past the last written byte.
    pub fn end(&self) -> u64 {
        self.base + self.len()
    }

    /// Written bytes.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `buf` at log position `position`, which must be the current end. The new bytes become
    /// readable only after the whole buffer is written.
    pub fn append(&self, position: u64, buf: &[u8]) -> io::Result<()> {
        debug_assert_eq!(position, self.end());
        let (offset, end) = (position - self.base, position - self.base + buf.len() as u64);
        {
            // Taken even inside the zeros: the file system holds the file's inode lock for a
            // buffered write's whole copy, and a writer waiting for it spins on its core for as
            // long as the holder runs (a chunk of zeros copied into fresh page-cache pages: up to
            // 0.1 ms). Waiting here, an append sleeps after a brief spin and leaves the core to
            // the rest of the broker.
            let _turn = self.filling.lock();
            // Past the zeros: the filler goes on after this append's range.
            self.zeroed.fetch_max(end, Ordering::AcqRel);
            write_in_slices(&self.file, buf, offset)?;
        }
        self.len.fetch_add(buf.len() as u64, Ordering::AcqRel);
        Ok(())
    }

    /// File offset up to which the segment is zero-filled or written; `u64::MAX` once sealed.
    pub fn zeroed(&self) -> u64 {
        self.zeroed.load(Ordering::Acquire)
    }

    /// Writes zeros from [`Self::zeroed`] on, at most `zeros.len()` bytes and not past file
    /// offset `upto`; returns how many. The caller fdatasyncs them.
    pub fn fill_zeros(&self, upto: u64, zeros: &[u8]) -> io::Result<u64> {
        let _filling = self.filling.lock();
        let from = self.zeroed.load(Ordering::Acquire);
        let n = upto.saturating_sub(from).min(zeros.len() as u64);
        if n > 0 {
            write_in_slices(&self.file, &zeros[..n as usize], from)?;
            self.zeroed.store(from + n, Ordering::Release);
        }
        Ok(n)
    }

    /// Takes no more appends: cuts off the zeros after the data and fdatasyncs the segment, so its
    /// file length is its data length again.
    pub fn seal(&self) -> io::Result<()> {
        let _filling = self.filling.lock();
        self.zeroed.store(SEALED, Ordering::Release);
        let len = self.len();
        if self.file.metadata()?.len() > len {
            self.file.set_len(len)?;
        }
        self.file.sync_data()
    }

    /// Recovery found that the data ends at log position `end` and only zeros follow: appends go
    /// on from there, into the zeros.
    pub fn end_data_at(&self, end: u64) {
        self.len.store(end - self.base, Ordering::Release);
    }

    /// Reads exactly `buf.len()` bytes at log position `position`.
    pub fn read_at(&self, position: u64, buf: &mut [u8]) -> io::Result<()> {
        if position < self.base || position + buf.len() as u64 > self.end() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the written end of the segment"));
        }
        self.file.read_exact_at(buf, position - self.base)
    }

    /// Reads exactly `len` bytes at log position `position` into a new buffer. The buffer is not
    /// zero-filled first: this runs once per delivered message, and clearing it cost about as
    /// much as the read itself.
    pub fn read_vec(&self, position: u64, len: usize) -> io::Result<Vec<u8>> {
        self.check_written(position, len)?;
        let mut buf = Vec::with_capacity(len);
        while buf.len() < len {
            let at = position - self.base + buf.len() as u64;
            if rustix::io::pread(&self.file, rustix::buffer::spare_capacity(&mut buf), at)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment ended early"));
            }
        }
        buf.truncate(len);
        Ok(buf)
    }

    /// Refuses a read of `len` bytes at `position` that is not all within the written bytes.
    fn check_written(&self, position: u64, len: usize) -> io::Result<()> {
        if position < self.base || position + len as u64 > self.end() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the written end of the segment"));
        }
        Ok(())
    }

    /// Reads exactly `len` bytes at log position `position` past the page cache (`O_DIRECT`): the
    /// disk's DMA fills the buffer, with no page cache pages to allocate and no copy out of
    /// them. For log the page cache let go of (`cache_window.rs`), which is synced, so no dirty
    /// page has to be written first. The read is widened to `DIRECT_ALIGN` at both ends into
    /// an aligned part of a larger buffer (zero-filled first, as safe code reads only into
    /// initialised bytes; still cheaper than the copy it saves); the answer shares that buffer.
    /// `None` where the file system refuses `O_DIRECT` (the caller reads through the cache).
    pub fn read_direct(&self, position: u64, len: usize) -> io::Result<Option<Bytes>> {
        self.check_written(position, len)?;
        let opened = self.direct.get_or_init(|| {
            OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32).open(&self.path).ok()
        });
        let Some(file) = opened else { return Ok(None) };
        let align = DIRECT_ALIGN as u64;
        let offset = position - self.base;
        let (start, end) = (offset / align * align, (offset + len as u64).div_ceil(align) * align);
        let wanted_end = (offset + len as u64 - start) as usize;
        let mut buf = vec![0; (end - start) as usize + DIRECT_ALIGN];
        let skew = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let aligned = &mut buf[skew..skew + (end - start) as usize];
        let mut read = 0;
        while read < wanted_end {
            // Whole aligned blocks from an aligned offset; the file may end inside the last one.
            match file.read_at(&mut aligned[read..], start + read as u64)? {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment ended early")),
                n => read += n,
            }
        }
        let at = skew + (offset - start) as usize;
        Ok(Some(Bytes::from(buf).slice(at..at + len)))
    }

    /// Asks the kernel to read log positions `start..end` (clipped to this segment's written bytes)
    /// into the page cache in the background. Advice only: a failure changes nothing but speed.
    pub fn prefetch(&self, start: u64, end: u64) {
        self.advise(start, end, rustix::fs::Advice::WillNeed);
    }

    /// Lets the kernel drop log positions `start..end` from the page cache (they must be synced:
    /// dirty pages are only queued for writeback, not dropped).
    pub fn release(&self, start: u64, end: u64) {
        self.advise(start, end, rustix::fs::Advice::DontNeed);
    }

    fn advise(&self, start: u64, end: u64, advice: rustix::fs::Advice) {
        let (from, to) = (start.max(self.base), end.min(self.end()));
        if let Some(len) = to.checked_sub(from).and_then(NonZeroU64::new) {
            let _ = rustix::fs::fadvise(&self.file, from - self.base, Some(len), advice);
        }
    }

    /// fdatasync: makes every written byte durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Cuts the segment to end at log position `end` (used for a torn tail) and syncs the cut.
    pub fn truncate(&self, end: u64) -> Result<(), StorageError> {
        let len = end - self.base;
        let _filling = self.filling.lock();
        self.zeroed.store(len, Ordering::Release);
        self.file.set_len(len).map_err(|e| StorageError::io("truncate segment", &self.path, e))?;
        self.file.sync_all().map_err(|e| StorageError::io("sync truncated segment", &self.path, e))?;
        self.len.store(len, Ordering::Release);
        Ok(())
    }
}

/// `<base as 20 digits>.log`, so names sort in log order.
pub fn file_name(base: u64) -> String {
    format!("{base:020}.{SUFFIX}")
}

/// The base position encoded in a segment file name.
pub fn parse_file_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(&format!(".{SUFFIX}"))?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

/// Longest single `pwrite` into the log, and the alignment of the file ranges the writes are cut
/// at. A longer write into the page cache gets larger folios, and on the build machine (a VM that
/// hands free memory back to its host) those come from memory the host must fault in again:
/// 400 MiB written in 32 KiB `pwrite`s took 0.10 s of CPU, in 128 KiB ones 0.46-1.5 s (five rounds
/// each, alternating). Turn-sized groups (`staging`) lost throughput with four producers (8-20%)
/// until their writes were sliced; sliced, a group's size no longer matters to the kernel.
///
/// The slices are cut where the file offset crosses a multiple of this size, not every so many
/// bytes from where a group starts: a group of two 17 KiB sends is then one `pwrite` unless it
/// crosses a boundary, and the kernel, which sizes a new folio by the write's length and its
/// index's alignment, gets aligned ranges to fill. Against slices of 32 KiB counted from each
/// group's start, one producer published 5-15% more (9 of 9 interleaved rounds) with about 40%
/// fewer page-cache folios allocated per MiB written (BENCHMARKS.md, "Changes measured").
const WRITE_SLICE: u64 = 64 << 10;

/// Where a write of `len` bytes at file `offset` is cut: `(offset, length)` of each `pwrite`, in
/// order, none crossing a multiple of [`WRITE_SLICE`].
fn slices(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize)> {
    let end = offset + len as u64;
    let mut at = offset;
    std::iter::from_fn(move || {
        (at < end).then(|| {
            let stop = ((at / WRITE_SLICE + 1) * WRITE_SLICE).min(end);
            let slice = (at, (stop - at) as usize);
            at = stop;
            slice
        })
    })
}

/// Writes `buf` at `offset` in [`slices`].
fn write_in_slices(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    for (at, len) in slices(offset, buf.len()) {
        let from = (at - offset) as usize;
        file.write_all_at(&buf[from..from + len], at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{cached, evictable_dir};

    /// A write is cut only where it crosses a multiple of the slice size, and its slices cover it
    /// exactly, in order.
    #[test]
    fn writes_are_cut_at_aligned_boundaries_only() {
        const S: u64 = WRITE_SLICE;
        let cut = |offset: u64, len: usize| slices(offset, len).collect::<Vec<_>>();
        assert_eq!(cut(100, 17_000), [(100, 17_000)], "inside one aligned range: one write");
        assert_eq!(cut(S - 10, 30), [(S - 10, 10), (S, 20)], "crossing a boundary: cut at it");
        assert_eq!(cut(S, S as usize), [(S, S as usize)], "exactly one aligned range");
        let long = [(S / 2, S as usize / 2), (S, S as usize), (2 * S, S as usize / 2)];
        assert_eq!(cut(S / 2, 2 * S as usize), long, "a long write: cut at every boundary it crosses");
        assert_eq!(cut(7, 0), [], "nothing to write");
        proptest::proptest!(|(offset in 0..4 * S, len in 0..(3 * S) as usize)| {
            let mut at = offset;
            for (start, n) in slices(offset, len) {
                proptest::prop_assert_eq!(start, at);
                proptest::prop_assert!(n > 0 && n as u64 <= S);
                proptest::prop_assert_eq!(start / S, (start + n as u64 - 1) / S, "a slice crosses a boundary");
                at += n as u64;
            }
            proptest::prop_assert_eq!(at, offset + len as u64);
        });
    }

    #[test]
    fn create_append_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segment::create(dir.path(), 4096, 1 << 20).unwrap();
        s.append(4096, b"abcdefgh").unwrap();
        assert_eq!(s.end(), 4104);
        drop(s);
        let s = Segment::open(&dir.path().join(file_name(4096))).unwrap();
        assert_eq!((s.base(), s.len()), (4096, 8));
        let mut b = [0; 3];
        s.read_at(4098, &mut b).unwrap();
        assert_eq!(&b, b"cde");
        assert!(s.read_at(4100, &mut [0; 8]).is_err());
        assert_eq!(s.read_vec(4098, 3).unwrap(), b"cde");
        assert_eq!(s.read_vec(4096, 8).unwrap(), b"abcdefgh");
        assert!(s.read_vec(4100, 5).is_err(), "past the written end");
        assert!(s.read_vec(4095, 2).is_err(), "before the base");
        s.truncate(4100).unwrap();
        assert_eq!(s.len(), 4);
    }

    fn file_len(s: &Segment) -> u64 {
        std::fs::metadata(s.path()).unwrap().len()
    }

    /// Zeros go only where no data is or will be: after the data, and after an append that ran
    /// ahead of them. Sealing cuts them off again.
    #[test]
    fn zero_fill_never_covers_data_and_sealing_cuts_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let s = Segment::create(dir.path(), 4096, 1 << 20).unwrap();
        let zeros = vec![0; 16 << 10];
        s.append(4096, &[1; 100]).unwrap();
        assert_eq!(s.fill_zeros(64 << 10, &zeros).unwrap(), 16 << 10, "one chunk at most");
        assert_eq!((s.zeroed(), file_len(&s)), (100 + (16 << 10), 100 + (16 << 10)));
        assert_eq!(s.len(), 100, "zeros are not data");
        // Appends into the zeros, then one that runs past them.
        s.append(s.end(), &[2; 1000]).unwrap();
        s.append(s.end(), &[3; 20 << 10]).unwrap();
        assert_eq!(s.zeroed(), 1100 + (20 << 10), "the append claimed its range");
        while s.fill_zeros(64 << 10, &zeros).unwrap() > 0 {}
        assert_eq!(s.fill_zeros(64 << 10, &zeros).unwrap(), 0, "filled up to the limit");
        assert_eq!(file_len(&s), 64 << 10);
        let mut data = vec![0; s.len() as usize];
        s.read_at(4096, &mut data).unwrap();
        assert!(data[..100].iter().all(|&b| b == 1) && data[100..1100].iter().all(|&b| b == 2));
        assert!(data[1100..].iter().all(|&b| b == 3), "no zeros landed on data");
        s.seal().unwrap();
        assert_eq!(file_len(&s), s.len(), "sealed: the file holds the data only");
        assert_eq!(s.fill_zeros(1 << 20, &zeros).unwrap(), 0, "a sealed segment is not filled");
        let end = s.end();
        drop(s);
        assert_eq!(Segment::open(&dir.path().join(file_name(4096))).unwrap().end(), end);
    }

    /// Cold reads depend on it: after `prefetch`, an evicted range comes back into the page cache
    /// without anyone reading it. On the build directory's file system (a tmpfs cannot evict).
    #[test]
    fn prefetch_reads_an_evicted_range_into_the_page_cache() {
        let dir = evictable_dir("prefetch-test-");
        let s = Segment::create(dir.path(), 1 << 30, 16 << 20).unwrap();
        s.append(1 << 30, &vec![7; 8 << 20]).unwrap();
        s.sync().unwrap();
        rustix::fs::fadvise(&s.file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert!(cached(s.path()) < 1 << 20, "evicted before the test");
        // Clipped to the written bytes: asking past the end is harmless.
        s.prefetch((1 << 30) + (4 << 20), 2 << 30);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while cached(s.path()) < 4 << 20 {
            assert!(std::time::Instant::now() < deadline, "prefetched: {} bytes cached", cached(s.path()));
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The cache window's tool: a released range leaves the page cache, the rest of the segment
    /// stays, and every byte still reads back (from the disk). On the build directory's file
    /// system, as above.
    #[test]
    fn release_drops_a_synced_range_from_the_page_cache_and_loses_nothing() {
        let dir = evictable_dir("release-test-");
        let s = Segment::create(dir.path(), 1 << 30, 16 << 20).unwrap();
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        s.append(1 << 30, &data).unwrap();
        s.sync().unwrap();
        assert!(cached(s.path()) >= 8 << 20, "written data is cached before the test");
        // Clipped to the segment: asking from before its base is harmless.
        s.release(0, (1 << 30) + (6 << 20));
        let left = cached(s.path());
        assert!((2 << 20..4 << 20).contains(&left), "only the last 2 MiB stay cached: {left} bytes");
        let mut back = vec![0; data.len()];
        s.read_at(1 << 30, &mut back).unwrap();
        assert!(back == data, "released bytes read back from the disk");
    }

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name(Path::new("/x/00000000000000000042.log")), Some(42));
        assert_eq!(parse_file_name(Path::new("/x/42.log")), None);
    }
}
