//! Wall-clock time for Runnel, injected rather than read ambiently.
//!
//! Everything in Runnel that depends on time (append timestamps, retention by age, retry
//! schedules, leases, windows) asks a [`Clock`] instead of calling `SystemTime::now()`, so tests
//! drive time with a [`ManualClock`] and never sleep waiting for a deadline.
//!
//! Time is expressed as microseconds since the Unix epoch ([`Micros`]): one integer, cheap to
//! store in a log record, precise enough for latency figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = u64;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in microseconds since the Unix epoch.
    fn now_micros(&self) -> Micros;

    /// The current time as a [`SystemTime`].
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.now_micros())
    }
}

/// A shared handle to a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> Micros {
        // A clock set before 1970 reads as the epoch rather than panicking.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as Micros)
            .unwrap_or(0)
    }
}

/// The system clock as a [`SharedClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock reading `start` microseconds since the epoch.
    pub fn new(start: Micros) -> Self {
        Self {
            micros: Arc::new(AtomicU64::new(start)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.micros
            .fetch_add(by.as_micros() as Micros, Ordering::SeqCst);
    }

    /// Sets the clock to `to` microseconds since the epoch (it may go backwards).
    pub fn set(&self, to: Micros) {
        self.micros.store(to, Ordering::SeqCst);
    }

    /// This clock as a [`SharedClock`] that keeps sharing its time with `self`.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> Micros {
        self.micros.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_time() {
        let clock = ManualClock::new(1_000);
        let shared = clock.shared();
        assert_eq!(shared.now_micros(), 1_000);
        clock.advance(Duration::from_millis(2));
        assert_eq!(shared.now_micros(), 3_000);
        clock.set(10);
        assert_eq!(shared.now_micros(), 10);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_micros() > 1_577_836_800_000_000);
    }
}
