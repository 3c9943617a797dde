//! The disk's own sequential write limit, measured on the same filesystem and with the same
//! number of bytes as a run publishes, so a broker's write rate can be shown as a fraction of it.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

/// Bytes per write: large enough that the syscall count does not matter.
const CHUNK: usize = 1 << 20;

/// MiB/s of appending `bytes` to a new file in `dir` in 1 MiB writes: with one fdatasync at the end
/// (what Async durability can reach at best), or after every write (the ceiling of an
/// fdatasync-per-group-commit log that commits 1 MiB at a time).
pub fn sequential_write_mib_per_s(dir: &Path, bytes: u64, sync_every_write: bool) -> Result<f64> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = tempfile::tempfile_in(dir).with_context(|| format!("creating a file in {}", dir.display()))?;
    let chunk = vec![0x5a_u8; CHUNK];
    let started = Instant::now();
    let mut written = 0;
    while written < bytes {
        let n = CHUNK.min((bytes - written) as usize);
        file.write_all(&chunk[..n])?;
        written += n as u64;
        if sync_every_write {
            file.sync_data()?;
        }
    }
    file.sync_data()?;
    Ok(written as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_positive_rate() {
        let dir = tempfile::tempdir().unwrap();
        assert!(sequential_write_mib_per_s(dir.path(), 3 << 20, true).unwrap() > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the file is gone afterwards");
    }
}
