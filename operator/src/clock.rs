//! Time as an input: reconciles read the clock once and hand `now` to the pure plans, so tests
//! decide what time it is.

use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Time;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        // Kubernetes serialises times with second precision; dropping the rest keeps a status
        // written now equal to the same status read back later.
        Time(truncate_to_seconds(Timestamp::now()))
    }
}

/// A clock that stands still until moved (for tests).
#[derive(Debug)]
pub struct ManualClock(Mutex<Timestamp>);

impl ManualClock {
    /// A clock at `secs` seconds after the epoch.
    pub fn at_second(secs: i64) -> Self {
        Self(Mutex::new(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let by = SignedDuration::try_from(by).unwrap_or(SignedDuration::ZERO);
        *t = t.checked_add(by).unwrap_or(*t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Time {
        Time(*self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Seconds from `earlier` to `later` (negative if `later` is before).
pub fn seconds_between(earlier: &Time, later: &Time) -> i64 {
    later.0.as_second() - earlier.0.as_second()
}

fn truncate_to_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}
