//! The checkpoint: where recovery starts replaying the commit log, plus the snapshot of the state
//! derived from the log before that point (consumer progress).
//!
//! ```text
//!  0        4         8                  16           20          24
//!  +--------+---------+------------------+------------+-----------+---------------------+
//!  | "WCKP" | version | replay_from u64  | state len  | crc32c    | state snapshot      |
//!  |        | u32 = 1 | log position     | u32        | of 0..20  | (state len bytes)   |
//!  |        |         |                  |            | + state   |                     |
//!  +--------+---------+------------------+------------+-----------+---------------------+
//! ```
//!
//! Invariant when a checkpoint is on disk: every log byte before `replay_from` is fdatasynced, every
//! index entry for a message before it is fdatasynced, and the snapshot reflects exactly the records
//! before it. It is replaced atomically (write `checkpoint.tmp`, fdatasync, rename, fsync the
//! directory), so a crash leaves either the old or the new one, never a mix.

use std::io::Write;
use std::path::Path;

use crate::storage::{StorageError, sync_dir};

const MAGIC: &[u8; 4] = b"WCKP";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 24;
const FILE: &str = "checkpoint";

/// A loaded or to-be-written checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Recovery replays log records from this position on.
    pub replay_from: u64,
    /// Opaque snapshot of derived state as of `replay_from`.
    pub state: Vec<u8>,
}

impl Checkpoint {
    /// Reads the checkpoint in `dir`. A missing file means "replay everything"; a damaged one is an
    /// error, because silently replaying from zero could resurrect acknowledged consumer progress.
    pub fn load(dir: &Path) -> Result<Option<Self>, StorageError> {
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io("read checkpoint", &path, e)),
        };
        let bad = |reason: &str| StorageError::Corrupt {
            position: None,
            reason: format!(
                "{}: {reason}; remove the file to rebuild derived state from the whole log",
                path.display()
            ),
        };
        if bytes.len() < HEADER_LEN || &bytes[0..4] != MAGIC {
            return Err(bad("not a checkpoint file"));
        }
        let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(bad(&format!("unsupported checkpoint version {version}")));
        }
        let replay_from = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let state_len = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
        if bytes.len() != HEADER_LEN + state_len {
            return Err(bad("length mismatch"));
        }
        let computed = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..20]), &bytes[HEADER_LEN..]);
        if computed != crc {
            return Err(bad("checksum mismatch"));
        }
        Ok(Some(Self { replay_from, state: bytes[HEADER_LEN..].to_vec() }))
    }

    /// Atomically replaces the checkpoint in `dir`.
    pub fn store(&self, dir: &Path) -> Result<(), StorageError> {
        let mut bytes = Vec::with_capacity(HEADER_LEN + self.state.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.replay_from.to_le_bytes());
        bytes.extend_from_slice(&(self.state.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..20]), &self.state);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(&self.state);

        let tmp = dir.join(format!("{FILE}.tmp"));
        let path = dir.join(FILE);
        let mut f = std::fs::File::create(&tmp).map_err(|e| StorageError::io("create checkpoint", &tmp, e))?;
        f.write_all(&bytes).map_err(|e| StorageError::io("write checkpoint", &tmp, e))?;
        f.sync_data().map_err(|e| StorageError::io("sync checkpoint", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| StorageError::io("install checkpoint", &path, e))?;
        sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
        let c = Checkpoint { replay_from: 123_456, state: b"groups".to_vec() };
        c.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(c));
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Checkpoint::load(dir.path()).is_err());
    }
}
