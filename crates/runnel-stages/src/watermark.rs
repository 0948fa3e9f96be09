//! Event-time progress: a watermark per input partition, and the stage's as their minimum.
//!
//! Flink's rules, applied to Runnel's partitions:
//! - A partition's watermark is the newest event time it has delivered minus
//!   `max_out_of_orderness`: an event older than that is out of order beyond the bound.
//! - The stage's watermark is the minimum over its partitions, so one partition running
//!   behind holds every window back — except an *idle* partition: one that has delivered
//!   nothing for `idle_timeout` of wall-clock time (Flink's `withIdleness`). That includes a
//!   partition that never delivered anything (idle from the stage's start) and one whose
//!   events the stage filters out (they count only when the integration reports them with a
//!   time, through [`WatermarkTracker::observe`]). A partition with no event and not yet idle
//!   holds the watermark where it is.
//! - When every partition is idle the watermark stays where it is (Flink does the same):
//!   windows close when event time moves, not when the wall clock does.
//! - The watermark never goes back. A partition that wakes up behind it delivers late events.
//!
//! Wall-clock time is never read here: each [`WatermarkTracker::advance`] is given `now`
//! (from the injected clock), and events mark their partition active as of the next advance.

use std::collections::BTreeMap;

use runnel_clock::Micros;
use serde::{Deserialize, Serialize};

use crate::extract::EventTime;

/// The watermark state of a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatermarkTracker {
    out_of_orderness: u64,
    idle_timeout: u64,
    partitions: BTreeMap<u32, PartitionClock>,
    watermark: EventTime,
    now: Micros,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PartitionClock {
    max_event_time: Option<EventTime>,
    last_active: Micros,
    /// Had an event since the last advance (which stamps `last_active`).
    touched: bool,
}

/// One partition's watermark, as shown to operators of the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionWatermark {
    /// The input partition.
    pub partition: u32,
    /// The newest event time it has delivered.
    pub max_event_time: Option<EventTime>,
    /// `max_event_time − max_out_of_orderness`.
    pub watermark: Option<EventTime>,
    /// Whether it is idle (and so not holding the stage's watermark back) as of the last
    /// advance.
    pub idle: bool,
    /// Wall-clock time of its last event (or of the stage's start).
    pub last_active: Micros,
}

impl WatermarkTracker {
    /// A tracker over `partitions`, started at `now`. An `idle_timeout` of zero means never
    /// idle.
    pub fn new(
        out_of_orderness: u64,
        idle_timeout: u64,
        partitions: impl IntoIterator<Item = u32>,
        now: Micros,
    ) -> Self {
        let mut tracker = Self {
            out_of_orderness,
            idle_timeout,
            partitions: BTreeMap::new(),
            watermark: EventTime::MIN,
            now,
        };
        for partition in partitions {
            tracker.add_partition(partition, now);
        }
        tracker
    }

    /// Starts tracking `partition` (idle after `idle_timeout` from `now` if it stays silent).
    /// A partition already tracked is left as it is.
    pub fn add_partition(&mut self, partition: u32, now: Micros) {
        self.partitions.entry(partition).or_insert(PartitionClock {
            max_event_time: None,
            last_active: now,
            touched: false,
        });
    }

    /// Stops tracking `partition` (it moved to another instance of the stage).
    pub fn remove_partition(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// An event of `partition` at `event_time` (accepted, late or filtered out).
    pub fn observe(&mut self, partition: u32, event_time: EventTime) {
        let now = self.now;
        let clock = self.partitions.entry(partition).or_insert(PartitionClock {
            max_event_time: None,
            last_active: now,
            touched: false,
        });
        clock.max_event_time = Some(
            clock
                .max_event_time
                .map_or(event_time, |m| m.max(event_time)),
        );
        clock.touched = true;
    }

    /// Moves to wall-clock time `now`: partitions with events since the last call become
    /// active as of `now`, idleness is judged, and the stage's watermark is recomputed.
    /// Returns it (it never decreases).
    pub fn advance(&mut self, now: Micros) -> EventTime {
        self.now = self.now.max(now);
        let mut minimum: Option<EventTime> = None;
        let mut blocked = false;
        let mut any_active = false;
        for clock in self.partitions.values_mut() {
            if clock.touched {
                clock.last_active = self.now;
                clock.touched = false;
            }
            if is_idle(clock, self.now, self.idle_timeout) {
                continue;
            }
            any_active = true;
            match clock.max_event_time {
                Some(max) => {
                    let mark = partition_mark(max, self.out_of_orderness);
                    minimum = Some(minimum.map_or(mark, |m| m.min(mark)));
                }
                None => blocked = true,
            }
        }
        if any_active
            && !blocked
            && let Some(minimum) = minimum
        {
            self.watermark = self.watermark.max(minimum);
        }
        self.watermark
    }

    /// Ends event time: the watermark becomes the greatest time, so every window fires.
    pub fn finish(&mut self) -> EventTime {
        self.watermark = EventTime::MAX;
        self.watermark
    }

    /// The stage's watermark, `None` before the first one.
    pub fn watermark(&self) -> Option<EventTime> {
        (self.watermark != EventTime::MIN).then_some(self.watermark)
    }

    /// The stage's watermark, `EventTime::MIN` before the first one.
    pub(crate) fn current(&self) -> EventTime {
        self.watermark
    }

    /// Every partition's watermark, by partition.
    pub fn partitions(&self) -> Vec<PartitionWatermark> {
        self.partitions
            .iter()
            .map(|(&partition, clock)| PartitionWatermark {
                partition,
                max_event_time: clock.max_event_time,
                watermark: clock
                    .max_event_time
                    .map(|m| partition_mark(m, self.out_of_orderness)),
                idle: is_idle(clock, self.now, self.idle_timeout),
                last_active: clock.last_active,
            })
            .collect()
    }

    /// The settings this tracker was restored with are replaced by the current ones (a
    /// changed bound or timeout applies from now on).
    pub(crate) fn reconfigure(&mut self, out_of_orderness: u64, idle_timeout: u64) {
        self.out_of_orderness = out_of_orderness;
        self.idle_timeout = idle_timeout;
    }
}

fn is_idle(clock: &PartitionClock, now: Micros, idle_timeout: u64) -> bool {
    idle_timeout > 0 && !clock.touched && now.saturating_sub(clock.last_active) >= idle_timeout
}

fn partition_mark(max: EventTime, out_of_orderness: u64) -> EventTime {
    max.saturating_sub(i64::try_from(out_of_orderness).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn the_stage_watermark_is_the_slowest_partition_minus_the_bound() {
        let mut marks = WatermarkTracker::new(5 * SEC, 0, [0, 1], 0);
        marks.observe(0, 100_000_000);
        marks.observe(1, 40_000_000);
        assert_eq!(marks.advance(1), 35_000_000);
        marks.observe(1, 30_000_000);
        assert_eq!(
            marks.advance(2),
            35_000_000,
            "an older event does not lower it"
        );
        marks.observe(1, 200_000_000);
        assert_eq!(marks.advance(3), 95_000_000);
    }

    #[test]
    fn a_silent_partition_holds_the_watermark_until_it_is_idle() {
        let mut marks = WatermarkTracker::new(0, 60 * SEC, [0, 1], 0);
        marks.observe(0, 1_000);
        assert_eq!(marks.advance(59 * SEC), EventTime::MIN);
        assert_eq!(marks.advance(60 * SEC), 1_000);
        let shown = marks.partitions();
        assert!(!shown[0].idle && shown[1].idle);
    }
}
