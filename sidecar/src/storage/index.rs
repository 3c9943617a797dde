//! The per-partition index (RocketMQ's "consume queue"): queue offset -> where the message sits in
//! the commit log.
//!
//! Entries have a fixed size, so entry `n` of a file lives at `(n - base) * ENTRY_LEN`. A partition's
//! index is split into files of `ENTRIES_PER_FILE` entries named after their first queue offset, so
//! retention can delete whole files:
//!
//! ```text
//! index/<topic>/<partition>/00000000000000000000.idx
//!
//!  0                 8            12           16                  24           28         32
//!  +-----------------+------------+------------+-------------------+------------+----------+
//!  | position (u64)  | length u32 | tag hash   | store time (u64,  | group hash | spare    |
//!  | of the frame in | of the     | u32, 0 =   | ms since epoch)   | u32, 0 =   | u32 = 0  |
//!  | the commit log  | frame      | no tag     |                   | no group   |          |
//!  +-----------------+------------+------------+-------------------+------------+----------+
//!  one entry, little endian. The group hash lets FIFO delivery keep one message per message
//!  group in flight without reading the messages themselves.
//! ```
//!
//! The index is derived data: it is written after the commit log and never trusted beyond what the
//! log's recovery verified. Recovery rewrites it from the log past the last checkpoint.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::lock::RwLock;

use crate::storage::{StorageError, sync_dir};

/// Bytes per entry.
pub const ENTRY_LEN: usize = 32;
/// Entries per index file (32 MiB).
pub const ENTRIES_PER_FILE: u64 = 1 << 20;
const SUFFIX: &str = "idx";

/// Where one message is, plus what filtering and time lookups need without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Log position of the frame.
    pub position: u64,
    /// Frame length (header + body).
    pub length: u32,
    /// [`tag_hash`] of the message tag; 0 when it has none.
    pub tag_hash: u32,
    /// When the broker stored it, in ms since the Unix epoch.
    pub store_time_ms: u64,
    /// [`tag_hash`] of the FIFO message group; 0 when it has none.
    pub group_hash: u32,
}

impl IndexEntry {
    /// Serialises the entry in the on-disk layout.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.position.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.extend_from_slice(&self.tag_hash.to_le_bytes());
        out.extend_from_slice(&self.store_time_ms.to_le_bytes());
        out.extend_from_slice(&self.group_hash.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
    }

    /// Reads an entry from exactly [`ENTRY_LEN`] bytes.
    pub fn decode(b: &[u8]) -> Self {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        Self {
            position: u64_at(0),
            length: u32_at(8),
            tag_hash: u32_at(12),
            store_time_ms: u64_at(16),
            group_hash: u32_at(24),
        }
    }
}

impl IndexEntry {
    /// Placeholder for a queue offset whose record was lost to log corruption; readers skip it.
    pub fn hole(position: u64) -> Self {
        Self { position, length: 0, tag_hash: 0, store_time_ms: 0, group_hash: 0 }
    }

    /// True for [`IndexEntry::hole`] entries.
    pub fn is_hole(&self) -> bool {
        self.length == 0
    }
}

/// A stable 32-bit hash of a tag or message group for the index; never 0, which means "none".
pub fn tag_hash(tag: &str) -> u32 {
    if tag.is_empty() {
        return 0;
    }
    crc32c::crc32c(tag.as_bytes()).max(1)
}

#[derive(Debug)]
struct IndexFile {
    base: u64,
    file: File,
}

/// The index of one partition.
#[derive(Debug)]
pub struct PartitionIndex {
    dir: PathBuf,
    files: RwLock<Vec<IndexFile>>,
    /// First queue offset still retained.
    start: AtomicU64,
    /// One past the last readable queue offset (the next offset the writer will assign).
    end: AtomicU64,
    /// Written since the last [`PartitionIndex::sync`].
    dirty: AtomicBool,
}

impl PartitionIndex {
    /// Opens (or creates) the index in `dir`, reading how many entries it has.
    pub fn open(dir: PathBuf) -> Result<Self, StorageError> {
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create index dir", &dir, e))?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| StorageError::io("list index dir", &dir, e))? {
            let path = entry.map_err(|e| StorageError::io("list index dir", &dir, e))?.path();
            let Some(base) = parse_name(&path) else {
                continue;
            };
            let file = open_file(&path, false)?;
            files.push(IndexFile { base, file });
        }
        files.sort_by_key(|f| f.base);
        let (start, end) = match (files.first(), files.last()) {
            (Some(first), Some(last)) => {
                let len = last.file.metadata().map_err(|e| StorageError::io("stat index", &dir, e))?.len();
                // A torn entry at the end (crash mid-write) is dropped here and rewritten by recovery.
                (first.base, last.base + len / ENTRY_LEN as u64)
            }
            _ => (0, 0),
        };
        let index = Self {
            dir,
            files: RwLock::new(files),
            start: AtomicU64::new(start),
            end: AtomicU64::new(end),
            dirty: AtomicBool::new(false),
        };
        Ok(index)
    }

    /// First retained queue offset.
    pub fn start(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }

    /// One past the newest readable queue offset.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Appends entries for queue offsets `end..end+n` (the publisher only, one group at a time). `encoded` holds `n`
    /// entries in the on-disk layout. They become readable when this returns.
    pub fn append(&self, encoded: &[u8]) -> Result<(), StorageError> {
        debug_assert_eq!(encoded.len() % ENTRY_LEN, 0);
        let mut offset = self.end();
        let mut rest = encoded;
        while !rest.is_empty() {
            let file_base = offset - offset % ENTRIES_PER_FILE;
            let room = (file_base + ENTRIES_PER_FILE - offset) as usize * ENTRY_LEN;
            let (now, later) = rest.split_at(room.min(rest.len()));
            {
                let needs_file = self.files.read().last().is_none_or(|f| f.base != file_base);
                if needs_file {
                    let path = self.dir.join(file_name(file_base));
                    let file = open_file(&path, true)?;
                    sync_dir(&self.dir)?;
                    self.files.write().push(IndexFile { base: file_base, file });
                }
            }
            let files = self.files.read();
            let last = files.last().expect("file just ensured");
            last.file
                .write_all_at(now, (offset - file_base) * ENTRY_LEN as u64)
                .map_err(|e| StorageError::io("write index", &self.dir, e))?;
            offset += (now.len() / ENTRY_LEN) as u64;
            rest = later;
        }
        self.dirty.store(true, Ordering::Release);
        self.end.store(offset, Ordering::Release);
        Ok(())
    }

    /// Reads up to `max` entries starting at queue offset `from` (clamped to what is retained and
    /// readable). Returns the offset of the first entry and the entries.
    pub fn read(&self, from: u64, max: usize) -> Result<(u64, Vec<IndexEntry>), StorageError> {
        let from = from.max(self.start());
        let end = self.end();
        if from >= end || max == 0 {
            return Ok((from, Vec::new()));
        }
        let want = ((end - from) as usize).min(max);
        let mut out = Vec::with_capacity(want);
        let mut buf = Vec::new();
        let files = self.files.read();
        let mut offset = from;
        while out.len() < want {
            let Some(file) = files.iter().rev().find(|f| f.base <= offset) else {
                break;
            };
            let in_file = ((file.base + ENTRIES_PER_FILE - offset) as usize).min(want - out.len());
            buf.resize(in_file * ENTRY_LEN, 0);
            file.file
                .read_exact_at(&mut buf, (offset - file.base) * ENTRY_LEN as u64)
                .map_err(|e| StorageError::io("read index", &self.dir, e))?;
            out.extend(buf.chunks_exact(ENTRY_LEN).map(IndexEntry::decode));
            offset += in_file as u64;
        }
        Ok((from, out))
    }

    /// The entry at `offset`, if retained and written.
    pub fn get(&self, offset: u64) -> Result<Option<IndexEntry>, StorageError> {
        let (at, entries) = self.read(offset, 1)?;
        Ok(entries.first().copied().filter(|_| at == offset))
    }

    /// Forgets every entry at or after `offset` (recovery only).
    pub fn truncate(&self, offset: u64) -> Result<(), StorageError> {
        if offset >= self.end() {
            return Ok(());
        }
        let mut files = self.files.write();
        while let Some(last) = files.last() {
            if last.base >= offset && last.base > self.start() {
                let path = self.dir.join(file_name(last.base));
                files.pop();
                std::fs::remove_file(&path).map_err(|e| StorageError::io("remove index file", &path, e))?;
            } else {
                let len = (offset.saturating_sub(last.base)) * ENTRY_LEN as u64;
                last.file.set_len(len).map_err(|e| StorageError::io("truncate index", &self.dir, e))?;
                break;
            }
        }
        self.end.store(offset.max(self.start()), Ordering::Release);
        self.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Records the entry for `offset` found while replaying the log after a crash: kept if the index
    /// already has it, otherwise the index is cut at `offset` and the entry appended. A gap before
    /// `offset` (records lost to corruption) is filled with holes so offsets stay dense.
    pub fn put_recovered(&self, offset: u64, entry: IndexEntry) -> Result<(), StorageError> {
        if offset < self.start() {
            return Ok(());
        }
        if offset < self.end() {
            if self.get(offset)? == Some(entry) {
                return Ok(());
            }
            self.truncate(offset)?;
        }
        let mut buf = Vec::new();
        for _ in self.end()..offset {
            IndexEntry::hole(entry.position).encode(&mut buf);
        }
        entry.encode(&mut buf);
        self.append(&buf)
    }

    /// The first retained offset whose entry points at or after log position `position`.
    fn first_at_or_after(&self, position: u64) -> Result<u64, StorageError> {
        let (mut lo, mut hi) = (self.start(), self.end());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid)? {
                Some(e) if e.position < position => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Replaces the entries that point into the damaged log range `[start, end)` with holes, so
    /// readers skip the lost records instead of tripping over them.
    pub fn punch_holes(&self, start: u64, end: u64) -> Result<usize, StorageError> {
        let mut offset = self.first_at_or_after(start)?;
        let mut punched = 0;
        while let Some(entry) = self.get(offset)? {
            if entry.position >= end {
                break;
            }
            if !entry.is_hole() {
                let mut buf = Vec::with_capacity(ENTRY_LEN);
                IndexEntry::hole(entry.position).encode(&mut buf);
                let files = self.files.read();
                let file = files.iter().rev().find(|f| f.base <= offset).expect("entry exists");
                file.file
                    .write_all_at(&buf, (offset - file.base) * ENTRY_LEN as u64)
                    .map_err(|e| StorageError::io("write index", &self.dir, e))?;
                self.dirty.store(true, Ordering::Release);
                punched += 1;
            }
            offset += 1;
        }
        Ok(punched)
    }

    /// The first retained offset whose message was stored at or after `ms` (the end if none was).
    pub fn offset_for_time(&self, ms: u64) -> Result<u64, StorageError> {
        let (mut lo, mut hi) = (self.start(), self.end());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid)? {
                // Holes carry no time; treat them as older so the search moves past them.
                Some(e) if e.is_hole() || e.store_time_ms < ms => lo = mid + 1,
                _ => hi = mid,
            }
        }
        Ok(lo)
    }

    /// Forgets entries pointing at or past `log_end` (the log was cut shorter by recovery).
    pub fn truncate_from_position(&self, log_end: u64) -> Result<(), StorageError> {
        let keep = self.first_at_or_after(log_end)?;
        self.truncate(keep)
    }

    /// Drops entries below the first one that still points at retained log data (`log_start`).
    /// Whole files go; the partition's start offset moves up. Returns the new start.
    pub fn retain_from_position(&self, log_start: u64) -> Result<u64, StorageError> {
        let lo = self.first_at_or_after(log_start)?;
        self.start.store(lo, Ordering::Release);
        let mut files = self.files.write();
        while files.len() > 1 && files[1].base <= lo {
            let gone = files.remove(0);
            let path = self.dir.join(file_name(gone.base));
            std::fs::remove_file(&path).map_err(|e| StorageError::io("remove index file", &path, e))?;
        }
        Ok(lo)
    }

    /// Sets the start offset of an index with no entries (a partition whose data all expired keeps
    /// counting from where it was, so queue offsets never go backwards).
    pub fn reset_empty(&self, next: u64) {
        if self.end() == self.start() && self.files.read().is_empty() {
            self.start.store(next, Ordering::Release);
            self.end.store(next, Ordering::Release);
        }
    }

    /// fdatasync of the files written since the last call.
    pub fn sync(&self) -> Result<(), StorageError> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            for f in self.files.read().iter().rev().take(2) {
                f.file.sync_data().map_err(|e| StorageError::io("sync index", &self.dir, e))?;
            }
        }
        Ok(())
    }

    /// Directory of this index.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn open_file(path: &Path, create: bool) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)
        .map_err(|e| StorageError::io("open index", path, e))
}

fn file_name(base: u64) -> String {
    format!("{base:020}.{SUFFIX}")
}

fn parse_name(path: &Path) -> Option<u64> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".idx")?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> IndexEntry {
        IndexEntry { position: i * 100, length: 64, tag_hash: tag_hash("A"), store_time_ms: 1000 + i, group_hash: 7 }
    }

    fn append_n(index: &PartitionIndex, range: std::ops::Range<u64>) {
        let mut buf = Vec::new();
        for i in range {
            entry(i).encode(&mut buf);
        }
        index.append(&buf).unwrap();
    }

    #[test]
    fn append_read_reopen_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let index = PartitionIndex::open(dir.path().join("t/0")).unwrap();
        append_n(&index, 0..10);
        assert_eq!(index.end(), 10);
        let (at, got) = index.read(3, 4).unwrap();
        assert_eq!(at, 3);
        assert_eq!(got, (3..7).map(entry).collect::<Vec<_>>());
        drop(index);
        let index = PartitionIndex::open(dir.path().join("t/0")).unwrap();
        assert_eq!((index.start(), index.end()), (0, 10));
        index.truncate(6).unwrap();
        assert_eq!(index.end(), 6);
        assert_eq!(index.get(6).unwrap(), None);
        assert_eq!(index.get(5).unwrap(), Some(entry(5)));
    }

    #[test]
    fn spans_files_and_retains() {
        let dir = tempfile::tempdir().unwrap();
        let index = PartitionIndex::open(dir.path().join("t/1")).unwrap();
        let n = ENTRIES_PER_FILE + 10;
        append_n(&index, 0..n);
        let (_, got) = index.read(ENTRIES_PER_FILE - 2, 5).unwrap();
        assert_eq!(got, (ENTRIES_PER_FILE - 2..ENTRIES_PER_FILE + 3).map(entry).collect::<Vec<_>>());
        // Everything before position of entry ENTRIES_PER_FILE + 1 expired.
        let start = index.retain_from_position((ENTRIES_PER_FILE + 1) * 100).unwrap();
        assert_eq!(start, ENTRIES_PER_FILE + 1);
        assert_eq!(index.files.read().len(), 1);
        assert_eq!(index.read(0, 1).unwrap().0, ENTRIES_PER_FILE + 1);
    }

    #[test]
    fn tag_hash_never_zero_for_a_tag() {
        assert_eq!(tag_hash(""), 0);
        assert_ne!(tag_hash("TagA"), 0);
        assert_eq!(tag_hash("TagA"), tag_hash("TagA"));
    }
}
