//! Counters of one consumer group in this process, read by `describe` and the metrics.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::delivery::FailureClass;

#[derive(Debug, Default)]
pub struct GroupStats {
    delivered: AtomicU64,
    redelivered: AtomicU64,
    acked: AtomicU64,
    skipped_duplicates: AtomicU64,
    failed_transient: AtomicU64,
    failed_service: AtomicU64,
    failed_permanent: AtomicU64,
    ack_timeouts: AtomicU64,
    exhausted: AtomicU64,
    undecodable: AtomicU64,
    retries_scheduled: AtomicU64,
    dead_lettered: AtomicU64,
    quarantined: AtomicU64,
    /// Tickets handed to counts of the dead-letter queue, in the order they were asked for.
    dlq_counts: AtomicU64,
    /// The alert flag in the lowest bit, above it the ticket of the count it came from; set
    /// with `fetch_max`, so a count that started earlier (and may have missed entries) never
    /// overwrites a later one.
    dlq_alert: AtomicU64,
}

/// A snapshot of [`GroupStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GroupCounts {
    /// Deliveries, first attempts and retries.
    pub delivered: u64,
    /// Deliveries after the first.
    pub redelivered: u64,
    pub acked: u64,
    /// Redeliveries skipped because the event id was already processed.
    pub skipped_duplicates: u64,
    pub failed_transient: u64,
    pub failed_service: u64,
    pub failed_permanent: u64,
    pub ack_timeouts: u64,
    /// Events that failed their last allowed delivery.
    pub exhausted: u64,
    pub undecodable: u64,
    /// Failures given a later retry (immediate or after backoff).
    pub retries_scheduled: u64,
    pub dead_lettered: u64,
    /// Dead-lettered as poison pills (crash loops).
    pub quarantined: u64,
    /// The dead-letter queue was at or over its alert threshold when this member last
    /// dead-lettered. It is not lowered by a purge or replay elsewhere: `dlq_depth` (and the
    /// `runnel_dlq_alert` gauge) count the queue as it is now.
    pub dlq_alert: bool,
}

impl GroupStats {
    pub(crate) fn record_delivered(&self, attempt: u32) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if attempt > 1 {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub(crate) fn record_acked(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_skipped_duplicate(&self) {
        self.skipped_duplicates.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_failed(&self, class: FailureClass) {
        let counter = match class {
            FailureClass::Transient => &self.failed_transient,
            FailureClass::Service => &self.failed_service,
            FailureClass::Permanent => &self.failed_permanent,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_ack_timeout(&self) {
        self.ack_timeouts.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_exhausted(&self) {
        self.exhausted.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_undecodable(&self) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_retry_scheduled(&self) {
        self.retries_scheduled.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn record_dead_lettered(&self, quarantined: bool) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if quarantined {
            self.quarantined.fetch_add(1, Ordering::Relaxed);
        }
    }
    /// A ticket for a count of the dead-letter queue about to start (after an entry was
    /// put), for [`GroupStats::set_dlq_alert`].
    pub(crate) fn dlq_count_ticket(&self) -> u64 {
        self.dlq_counts.fetch_add(1, Ordering::SeqCst) + 1
    }
    /// Sets the alert flag from the count that holds `ticket`, unless a count that started
    /// later has already set it.
    pub(crate) fn set_dlq_alert(&self, ticket: u64, on: bool) {
        self.dlq_alert
            .fetch_max(ticket << 1 | u64::from(on), Ordering::SeqCst);
    }

    pub fn snapshot(&self) -> GroupCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GroupCounts {
            delivered: get(&self.delivered),
            redelivered: get(&self.redelivered),
            acked: get(&self.acked),
            skipped_duplicates: get(&self.skipped_duplicates),
            failed_transient: get(&self.failed_transient),
            failed_service: get(&self.failed_service),
            failed_permanent: get(&self.failed_permanent),
            ack_timeouts: get(&self.ack_timeouts),
            exhausted: get(&self.exhausted),
            undecodable: get(&self.undecodable),
            retries_scheduled: get(&self.retries_scheduled),
            dead_lettered: get(&self.dead_lettered),
            quarantined: get(&self.quarantined),
            dlq_alert: self.dlq_alert.load(Ordering::SeqCst) & 1 == 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dlq_count_that_started_earlier_never_overwrites_a_later_one() {
        let stats = GroupStats::default();
        // Two workers dead-letter at once: the first count starts before the second
        // entry is put and sees the queue under its threshold, but finishes last.
        let earlier = stats.dlq_count_ticket();
        let later = stats.dlq_count_ticket();
        stats.set_dlq_alert(later, true);
        stats.set_dlq_alert(earlier, false);
        assert!(stats.snapshot().dlq_alert);
        // A count that starts after a purge can lower it.
        let after_purge = stats.dlq_count_ticket();
        stats.set_dlq_alert(after_purge, false);
        assert!(!stats.snapshot().dlq_alert);
    }
}
