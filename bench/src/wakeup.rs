//! How long this machine takes to wake a thread on another CPU: two threads, pinned to two
//! different CPUs, hand one byte back and forth over a socket pair, each blocking in `read`
//! until the other's byte arrives. Every round trip is two wake-ups across CPUs.
//!
//! Both systems under test are pipelines of threads (load generator, request threads, log
//! writer) that wake each other with a bounded number of messages in flight, so what a wake-up
//! costs is part of every figure. On a VM whose idle CPUs halt (the build machine runs with
//! guest halt polling off), waking an idle CPU goes through the host, and the host's load is
//! not the guest's to see. The figure is printed beside each table so that tables can be
//! compared with the machine's state in view (BENCHMARKS.md, "The machine's state").

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use anyhow::{Context, Result};
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

/// Round trips per measurement: about a second on a slow hour's VM (40 µs each).
const ROUND_TRIPS: u32 = 20_000;

/// Mean microseconds of a wake-up round trip between the first two CPUs this process may run
/// on; `None` on a single CPU.
pub fn round_trip_micros() -> Result<Option<f64>> {
    let allowed = sched_getaffinity(None).context("reading the CPUs this process may run on")?;
    let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&cpu| allowed.is_set(cpu)).take(2).collect();
    let &[here, there] = cpus.as_slice() else { return Ok(None) };
    let (mut near, mut far) = UnixStream::pair().context("creating a socket pair")?;
    // Two threads of their own, so that no caller's thread is pinned.
    let echo = std::thread::spawn(move || -> Result<()> {
        pin_to(there)?;
        let mut byte = [0u8];
        for _ in 0..ROUND_TRIPS {
            far.read_exact(&mut byte)?;
            far.write_all(&byte)?;
        }
        Ok(())
    });
    let measure = std::thread::spawn(move || -> Result<f64> {
        pin_to(here)?;
        let mut byte = [1u8];
        let started = Instant::now();
        for _ in 0..ROUND_TRIPS {
            near.write_all(&byte)?;
            near.read_exact(&mut byte)?;
        }
        Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(ROUND_TRIPS))
        // `near` is dropped here even on an early error, which ends the echo thread's read.
    });
    let joined = |name| move |_| anyhow::anyhow!("the {name} thread panicked");
    let micros = measure.join().map_err(joined("measuring"))??;
    echo.join().map_err(joined("echo"))??;
    Ok(Some(micros))
}

/// What [`round_trip_micros`] measures, for a report's line.
pub const WHAT: &str = "Wake-up round trip across CPUs (two threads pinned to two CPUs pass one byte back and forth)";

/// One measurement as a report's line.
pub fn describe(micros: f64) -> String {
    format!("{WHAT}: {micros:.1} µs")
}

fn pin_to(cpu: usize) -> Result<()> {
    let mut only = CpuSet::new();
    only.set(cpu);
    sched_setaffinity(None, &only).with_context(|| format!("pinning a thread to CPU {cpu}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_positive_round_trip_on_two_cpus() {
        match round_trip_micros().unwrap() {
            Some(micros) => assert!(micros > 0.0 && micros.is_finite(), "{micros}"),
            None => assert!(std::thread::available_parallelism().unwrap().get() < 2),
        }
    }
}
