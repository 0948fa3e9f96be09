//! The delivery gate: one per consumer instance, shared by its partition workers.
//!
//! A crash takes the whole process down, so after one, each event that may have caused it
//! (a crash suspect) must run with nothing else in flight anywhere in the instance: then, if
//! the process dies again, only that event is blamed. The gate counts the instance's
//! deliveries in flight and lets a suspect in only when that count is zero, after which
//! nothing else is admitted until the suspect settles.

/// Deliveries in flight across every partition worker of one consumer instance.
#[derive(Debug, Default)]
pub(crate) struct DeliveryGate {
    state: std::sync::Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    in_flight: usize,
    isolating: bool,
}

impl DeliveryGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits `n` ordinary deliveries unless a suspect is running alone.
    pub(super) fn admit(&self, n: usize) -> bool {
        let mut state = self.lock();
        if state.isolating {
            return false;
        }
        state.in_flight += n;
        true
    }

    /// Admits a suspect if nothing else is in flight; then nothing else is admitted.
    pub(super) fn admit_alone(&self) -> bool {
        let mut state = self.lock();
        if state.isolating || state.in_flight > 0 {
            return false;
        }
        state.isolating = true;
        state.in_flight = 1;
        true
    }

    /// `n` deliveries settled (or never went out); `was_alone` when one was a suspect.
    pub(super) fn release(&self, n: usize, was_alone: bool) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(n);
        if was_alone {
            state.isolating = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspect_waits_for_an_empty_gate_and_then_runs_alone() {
        let gate = DeliveryGate::default();
        assert!(gate.admit(2), "ordinary deliveries share the gate");
        assert!(
            !gate.admit_alone(),
            "a suspect waits while others are in flight"
        );
        gate.release(2, false);
        assert!(gate.admit_alone(), "then it runs");
        assert!(!gate.admit(1), "and nothing joins it");
        assert!(!gate.admit_alone(), "not even another suspect");
        gate.release(1, true);
        assert!(gate.admit(1), "once it settles, deliveries flow again");
    }
}
