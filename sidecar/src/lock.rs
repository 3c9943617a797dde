//! The storage engine's locks: `std`'s futex locks behind a lock-and-go API (a panic while
//! holding one does not poison it; the state it guards is kept consistent by the code, not by
//! unwinding).
//!
//! Why not `parking_lot`, as elsewhere: a contended `parking_lot` lock calls `sched_yield` up to
//! seven times before it sleeps. The storage locks are held across system calls (a group's
//! `pwrite`, the index appends of a publish) and waited for by the log writer thread, whose next
//! fdatasync every Sync send waits for. With more runnable threads than cores a yield can give
//! the core away for a whole scheduler slice: on the 2-core build machine under a Sync load at
//! 50,000 msgs/s the broker yielded 1,400-2,400 times a second, nearly half of it the log writer
//! waiting for the writer lock and the publisher queue, and the writer waited 0.58 ms per yield
//! on average before it ran again. `std`'s locks
//! spin briefly without yielding, then sleep on a futex until the holder lets go and wakes them.
//! With them the writer ran 5-40% more fdatasyncs in the same time, and more appends were
//! published within 1 ms (BENCHMARKS.md). The request threads' own locks (consumer progress,
//! de-duplication) guard short in-memory work between the two request threads, where spinning
//! and yielding won: with `std` locks there too, publish-and-consume throughput was 5-9% lower
//! (five interleaved pairs).

use std::sync::{PoisonError, TryLockError};

/// A mutual exclusion lock.
#[derive(Debug, Default)]
pub struct Mutex<T: ?Sized>(std::sync::Mutex<T>);

/// The guard of a locked [`Mutex`].
pub type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }
}

impl<T: ?Sized> Mutex<T> {
    /// Locks, waiting for the holder if there is one.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Locks if nobody holds it.
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        match self.0.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

/// A reader-writer lock.
#[derive(Debug, Default)]
pub struct RwLock<T: ?Sized>(std::sync::RwLock<T>);

impl<T> RwLock<T> {
    pub const fn new(value: T) -> Self {
        Self(std::sync::RwLock::new(value))
    }
}

impl<T: ?Sized> RwLock<T> {
    /// Shared access, waiting for a writer if there is one.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Exclusive access, waiting for the others to let go.
    pub fn write(&self) -> std::sync::RwLockWriteGuard<'_, T> {
        self.0.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Runs `f`, which panics while it holds a guard, on a thread of its own.
    fn panic_holding<T: Send + Sync + 'static>(lock: &Arc<T>, f: impl FnOnce(&T) + Send + 'static) {
        let lock = lock.clone();
        let _ = std::thread::spawn(move || f(&lock)).join();
    }

    /// A panic while the lock is held leaves it usable, as `parking_lot`'s did.
    #[test]
    fn a_panic_while_locked_does_not_poison() {
        let mutex = Arc::new(Mutex::new(1));
        panic_holding(&mutex, |m| {
            let _guard = m.lock();
            panic!("while holding the mutex");
        });
        *mutex.lock() += 1;
        assert_eq!(*mutex.try_lock().expect("free"), 2);

        let rw = Arc::new(RwLock::new(1));
        panic_holding(&rw, |rw| {
            let _guard = rw.write();
            panic!("while writing");
        });
        *rw.write() += 1;
        assert_eq!(*rw.read(), 2);
    }

    #[test]
    fn try_lock_fails_while_held() {
        let lock = Mutex::new(());
        let _held = lock.lock();
        assert!(lock.try_lock().is_none());
    }
}
