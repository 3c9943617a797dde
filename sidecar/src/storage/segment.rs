//! One file of the commit log.
//!
//! A segment holds the log bytes from `base` up to `base + len`, and is named after its base
//! position (`00000000000268435456.log`). It is preallocated with `fallocate(KEEP_SIZE)` so that the
//! blocks are reserved up front (an out-of-space condition surfaces when the segment is created, not
//! halfway through a write) while the file length keeps meaning "bytes written". Recovery therefore
//! never has to scan zero-filled space to find the end of the data.

use std::fs::{File, OpenOptions};
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
}

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
        Ok(Self { base, path, file, len: AtomicU64::new(0) })
    }

    /// Opens an existing segment; its written length is the file length.
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
        Ok(Self { base, path: path.to_owned(), file, len: AtomicU64::new(len) })
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
        self.file.write_all_at(buf, position - self.base)?;
        self.len.fetch_add(buf.len() as u64, Ordering::AcqRel);
        Ok(())
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
        if position < self.base || position + len as u64 > self.end() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the written end of the segment"));
        }
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

    /// Asks the kernel to read log positions `start..end` (clipped to this segment's written bytes)
    /// into the page cache in the background. Advice only: a failure changes nothing but speed.
    pub fn prefetch(&self, start: u64, end: u64) {
        let (from, to) = (start.max(self.base), end.min(self.end()));
        if let Some(len) = to.checked_sub(from).and_then(NonZeroU64::new) {
            let _ = rustix::fs::fadvise(&self.file, from - self.base, Some(len), rustix::fs::Advice::WillNeed);
        }
    }

    /// fdatasync: makes every written byte durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Cuts the segment to end at log position `end` (used for a torn tail) and syncs the cut.
    pub fn truncate(&self, end: u64) -> Result<(), StorageError> {
        let len = end - self.base;
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Resident bytes of `path` as util-linux `fincore` reports them (mincore(2) needs unsafe code).
    fn cached(path: &Path) -> u64 {
        let out = std::process::Command::new("fincore").args(["-bnr", "-o", "RES"]).arg(path).output();
        let out = out.expect("fincore (util-linux), installed by the README's test command");
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("fincore prints a byte count")
    }

    /// Cold reads depend on it: after `prefetch`, an evicted range comes back into the page cache
    /// without anyone reading it. On the build directory's file system (a tmpfs cannot evict).
    #[test]
    fn prefetch_reads_an_evicted_range_into_the_page_cache() {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        let dir = tempfile::Builder::new().prefix("prefetch-test-").tempdir_in(target).unwrap();
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

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name(Path::new("/x/00000000000000000042.log")), Some(42));
        assert_eq!(parse_file_name(Path::new("/x/42.log")), None);
    }
}
