//! Deadlines: retries falling due, and deliveries not settled within `ack_wait`.
//!
//! Both are times on the runtime's injected clock (µs since the epoch), checked on the
//! worker's timer tick rather than slept until: the system clock behaves as a timer would
//! (to within a tick), and under a manual clock tests move time past a deadline instead of
//! waiting for it, which takes effect at the next tick.

use std::time::Duration;

use super::{State, Worker};
use crate::error::Result;
use crate::group::delivery::FailureClass;

/// How often due retries and `ack_wait` deadlines are checked against the clock.
pub(super) const TIMER_EVERY: Duration = Duration::from_millis(20);

impl Worker {
    /// Retries whose time has come go back in line.
    pub(super) fn release_due(&mut self) {
        let now = self.now();
        while let Some(&(due, offset)) = self.waiting.first() {
            if due > now {
                break;
            }
            self.waiting.pop_first();
            if let Some(pending) = self.pending.get_mut(&offset)
                && matches!(pending.state, State::Waiting { .. })
            {
                pending.state = State::Queued;
                self.ready.push_back(offset);
            }
        }
    }

    /// Deliveries not settled within `ack_wait` (by the injected clock) count as transient
    /// failures.
    pub(super) async fn expire_unacknowledged(&mut self) -> Result<()> {
        let now = self.now();
        let expired: Vec<u64> = self
            .in_flight
            .keys()
            .filter(|o| {
                self.pending.get(o).is_some_and(
                    |p| matches!(p.state, State::InFlight { deadline: Some(deadline) } if deadline <= now),
                )
            })
            .copied()
            .collect();
        for offset in expired {
            self.ctx.stats.record_ack_timeout();
            self.untrack(offset);
            let wait = self.ctx.group.ack_wait;
            self.fail(
                offset,
                FailureClass::Transient,
                format!("not acknowledged within ack_wait ({wait:?})"),
            )
            .await?;
        }
        Ok(())
    }
}
