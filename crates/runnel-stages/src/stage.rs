//! The feature stage: one feature's windows, watermarks, lateness and results behind the API
//! the integration calls.
//!
//! The integration feeds it events in partition order and drives it:
//! 1. [`FeatureStage::extract`] an event into a [`Record`] (an error dead-letters the event);
//! 2. [`FeatureStage::process`] the record: it is accepted, late but within
//!    `allowed_lateness` (its windows will be re-emitted), or too late ([`Outcome::TooLate`]:
//!    the event goes to the late stream with the reason). Events the stage filters out or
//!    dead-letters are reported with [`FeatureStage::skip`], so offsets and watermarks move;
//! 3. [`FeatureStage::advance`] with the clock's `now`, after each batch: the watermark is
//!    recomputed and every window it passed fires, as [`WindowResult`]s to publish;
//! 4. [`FeatureStage::snapshot`] to checkpoint, together with the results not yet published
//!    (see `docs/features.md`: checkpoint, then publish).
//!
//! Everything here is deterministic given the calls: no clock is read, no hash order leaks
//! into results, and a stage restored from a snapshot continues exactly as the original.

use std::collections::BTreeMap;
use std::fmt;

use runnel_clock::Micros;
use runnel_envelope::Event;
use serde::{Deserialize, Serialize};

use crate::HumanDuration;
use crate::aggregate::{InputError, Layout, Origin};
use crate::extract::{
    EventTime, ExtractError, Extractor, MAX_EVENT_TIME, MIN_EVENT_TIME, Record, format_time,
};
use crate::keys::KeyTable;
use crate::panes::Contribution;
use crate::result::{Emitter, WindowResult};
use crate::session::Sessions;
use crate::sliding::Sliding;
use crate::snapshot::{self, RestoreError, Saved, SavedOperator, SnapshotError};
use crate::spec::{FeatureSpec, SpecErrors, WindowSpec};
use crate::tumbling::Tumbling;
use crate::watermark::{PartitionWatermark, WatermarkTracker};

/// Where an event landed, as seen by an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    OnTime,
    Late,
    TooLate { last_end: EventTime },
}

/// What became of a processed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Counted in windows that have not fired yet.
    Accepted,
    /// Counted in at least one window that already fired (or was due): that window is
    /// re-emitted with its next revision at the next advance.
    Late,
    /// Too late for every window it belongs to: send it to the late stream with the reason.
    TooLate(LateEvent),
}

/// Why an event was too late; its `Display` is the reason sent with it to the late stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateEvent {
    /// The event's time.
    pub event_time: EventTime,
    /// The stage's watermark when it arrived.
    pub watermark: EventTime,
    /// End of the last window the event belongs to.
    pub window_end: EventTime,
    /// The feature's allowed lateness.
    pub allowed_lateness: HumanDuration,
}

impl fmt::Display for LateEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "too late: event time {} is behind the watermark {}; its last window ended at {} \
             and allowed_lateness is {}",
            format_time(self.event_time),
            format_time(self.watermark),
            format_time(self.window_end),
            self.allowed_lateness,
        )
    }
}

/// Running totals of a stage (kept in its snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCounters {
    /// Events counted in windows not yet fired.
    pub accepted: u64,
    /// Events that revised windows already fired.
    pub late: u64,
    /// Events sent to the late stream.
    pub too_late: u64,
    /// Events reported with [`FeatureStage::skip`] (filtered out or dead-lettered).
    pub skipped: u64,
    /// Results emitted.
    pub results: u64,
}

/// Size of a stage's state, for metrics and the per-window budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageStats {
    /// Keys with state.
    pub keys: usize,
    /// Pane rows (tumbling, sliding) or sessions holding state.
    pub rows: usize,
    /// (key, window) pairs with state that have not fired yet.
    pub open_windows: u64,
    /// Approximate bytes of memory the window state holds.
    pub state_bytes: usize,
}

#[derive(Debug)]
pub(crate) enum Operator {
    Tumbling(Tumbling),
    Sliding(Sliding),
    Session(Sessions),
}

/// One feature's windowed aggregation.
#[derive(Debug)]
pub struct FeatureStage {
    spec: FeatureSpec,
    extractor: Extractor,
    layout: Layout,
    lateness: i64,
    keys: KeyTable,
    operator: Operator,
    watermarks: WatermarkTracker,
    /// Next offset to read, per partition.
    offsets: BTreeMap<u32, u64>,
    counters: StageCounters,
    /// Arrival number of the last processed event.
    seq: u64,
}

fn micros(duration: HumanDuration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl FeatureStage {
    /// A stage for `spec` reading `partitions`, started at wall-clock time `now` (partitions
    /// that stay silent become idle `idle_timeout` after it).
    pub fn new(
        spec: FeatureSpec,
        partitions: impl IntoIterator<Item = u32>,
        now: Micros,
    ) -> Result<Self, SpecErrors> {
        spec.validate()?;
        let operator = match spec.window {
            WindowSpec::Tumbling { size } => Operator::Tumbling(Tumbling::new(micros(size))),
            WindowSpec::Sliding { size, slide } => {
                Operator::Sliding(Sliding::new(micros(size), micros(slide)))
            }
            WindowSpec::Session { gap } => Operator::Session(Sessions::new(micros(gap))),
        };
        Ok(Self {
            extractor: Extractor::new(&spec),
            layout: Layout::new(&spec),
            lateness: micros(spec.allowed_lateness),
            keys: KeyTable::default(),
            operator,
            watermarks: WatermarkTracker::new(
                spec.max_out_of_orderness.as_micros(),
                spec.idle_timeout.as_micros(),
                partitions,
                now,
            ),
            offsets: BTreeMap::new(),
            counters: StageCounters::default(),
            seq: 0,
            spec,
        })
    }

    /// The specification.
    pub fn spec(&self) -> &FeatureSpec {
        &self.spec
    }

    /// The key, time, field values and correlation of `event`; an error names the field and
    /// means the event is dead-lettered as permanent (then report it with
    /// [`FeatureStage::skip`]).
    pub fn extract(&self, event: &Event) -> Result<Record, ExtractError> {
        self.extractor.extract(event)
    }

    /// Adds the record read at `offset` of `partition`. An error (a value of the wrong type,
    /// an empty key, a time out of range) changes nothing: dead-letter the event and report
    /// it with [`FeatureStage::skip`].
    pub fn process(
        &mut self,
        partition: u32,
        offset: u64,
        record: &Record,
    ) -> Result<Outcome, InputError> {
        if record.key.is_empty() {
            return Err(InputError::EmptyKey);
        }
        if !(MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&record.event_time) {
            return Err(InputError::TimeOutOfRange {
                time: record.event_time,
            });
        }
        self.layout.check(&record.values)?;
        self.note_offset(partition, offset);
        self.watermarks.observe(partition, record.event_time);
        self.seq += 1;
        let event = Contribution {
            values: &record.values,
            origin: Origin {
                time: record.event_time,
                partition,
                offset,
            },
            seq: self.seq,
            correlation: record.correlation.as_deref(),
        };
        let key = self.keys.intern(&record.key);
        let bounds = (self.watermarks.current(), self.lateness);
        let time = record.event_time;
        let (layout, keys) = (&self.layout, &mut self.keys);
        let placement = match &mut self.operator {
            Operator::Tumbling(op) => op.add(layout, keys, key, time, &event, bounds),
            Operator::Sliding(op) => op.add(layout, keys, key, time, &event, bounds),
            Operator::Session(op) => op.add(layout, keys, key, time, &event, bounds),
        };
        Ok(match placement {
            Placement::OnTime => {
                self.counters.accepted += 1;
                Outcome::Accepted
            }
            Placement::Late => {
                self.counters.late += 1;
                Outcome::Late
            }
            Placement::TooLate { last_end } => {
                self.keys.forget_if_unused(key);
                self.counters.too_late += 1;
                Outcome::TooLate(LateEvent {
                    event_time: time,
                    watermark: self.watermarks.current(),
                    window_end: last_end,
                    allowed_lateness: self.spec.allowed_lateness,
                })
            }
        })
    }

    /// Reports an event of `partition` at `offset` that is not processed: filtered out by
    /// type, or dead-lettered. Its offset is recorded and, if it has an `event_time` (its
    /// `time` attribute, say), its partition's watermark moves and the partition counts as
    /// active; without one, the partition may go idle.
    pub fn skip(&mut self, partition: u32, offset: u64, event_time: Option<EventTime>) {
        self.note_offset(partition, offset);
        if let Some(time) = event_time.filter(|t| (MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(t)) {
            self.watermarks.observe(partition, time);
        }
        self.counters.skipped += 1;
    }

    fn note_offset(&mut self, partition: u32, offset: u64) {
        let next = self.offsets.entry(partition).or_insert(0);
        *next = (*next).max(offset.saturating_add(1));
    }

    /// Moves to wall-clock time `now`: recomputes the watermark (judging idleness), fires
    /// every window whose end it reached, re-emits windows revised by late events, and drops
    /// state past `end + allowed_lateness`. Results come in window-end order.
    pub fn advance(&mut self, now: Micros) -> Vec<WindowResult> {
        let watermark = self.watermarks.advance(now);
        self.fire(watermark)
    }

    /// Ends the input (a bounded replay, say): the watermark jumps to the end of time, every
    /// window fires and all state is dropped. Later events are all too late.
    pub fn finish(&mut self) -> Vec<WindowResult> {
        let watermark = self.watermarks.finish();
        self.fire(watermark)
    }

    fn fire(&mut self, watermark: EventTime) -> Vec<WindowResult> {
        let mut out = Vec::new();
        if watermark == EventTime::MIN {
            // No watermark yet: nothing can have fired, so nothing is due or revised.
            return out;
        }
        let mut emitter = Emitter {
            layout: &self.layout,
            feature: &self.spec.name,
            out: &mut out,
        };
        let bounds = (watermark, self.lateness);
        match &mut self.operator {
            Operator::Tumbling(op) => op.fire(&mut emitter, &mut self.keys, bounds),
            Operator::Sliding(op) => op.fire(&mut emitter, &mut self.keys, bounds),
            Operator::Session(op) => op.fire(&mut emitter, &mut self.keys, bounds),
        }
        self.counters.results += out.len() as u64;
        out
    }

    /// Starts reading `partition` (assigned to this instance); silent, it becomes idle after
    /// `idle_timeout` from `now`.
    pub fn add_partition(&mut self, partition: u32, now: Micros) {
        self.watermarks.add_partition(partition, now);
    }

    /// Stops reading `partition`: it no longer holds the watermark back.
    pub fn remove_partition(&mut self, partition: u32) {
        self.watermarks.remove_partition(partition);
    }

    /// The stage's watermark, `None` before the first.
    pub fn watermark(&self) -> Option<EventTime> {
        self.watermarks.watermark()
    }

    /// Each partition's watermark and idleness.
    pub fn watermarks(&self) -> Vec<PartitionWatermark> {
        self.watermarks.partitions()
    }

    /// The next offset to read per partition: what the state reflects.
    pub fn offsets(&self) -> &BTreeMap<u32, u64> {
        &self.offsets
    }

    /// Running totals.
    pub fn counters(&self) -> StageCounters {
        self.counters
    }

    /// The size of the state.
    pub fn stats(&self) -> StageStats {
        let (rows, open_windows, bytes) = match &self.operator {
            Operator::Tumbling(op) => (op.rows(), op.open_windows(), op.heap_bytes()),
            Operator::Sliding(op) => (op.rows(), op.open_windows(), op.heap_bytes()),
            Operator::Session(op) => (op.rows(), op.open_windows(), op.heap_bytes()),
        };
        StageStats {
            keys: self.keys.len(),
            rows,
            open_windows,
            state_bytes: bytes + self.keys.heap_bytes(),
        }
    }

    /// The state as bytes, to checkpoint with the offsets it reflects ([`Self::offsets`]
    /// are inside too).
    pub fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let operator = match &self.operator {
            Operator::Tumbling(op) => SavedOperator::Tumbling(op.save()),
            Operator::Sliding(op) => SavedOperator::Sliding(op.save()),
            Operator::Session(op) => SavedOperator::Session(op.save()),
        };
        snapshot::encode(&Saved {
            fingerprint: snapshot::fingerprint(&self.spec),
            seq: self.seq,
            offsets: self.offsets.clone(),
            counters: self.counters,
            watermarks: std::borrow::Cow::Borrowed(&self.watermarks),
            keys: self
                .keys
                .live()
                .map(|(id, k)| (id, std::borrow::Cow::Borrowed(k)))
                .collect(),
            free_keys: self.keys.free_list().to_vec(),
            operator,
        })
    }

    /// A stage for `spec` continuing from `snapshot`. Partitions in `partitions` that the
    /// snapshot does not know start at `now`; the out-of-orderness and idle timeout of `spec`
    /// apply from now on. Fails if the snapshot is damaged or was taken with a different
    /// key, time, window or aggregates.
    pub fn restore(
        spec: FeatureSpec,
        snapshot: &[u8],
        partitions: impl IntoIterator<Item = u32>,
        now: Micros,
    ) -> Result<Self, RestoreError> {
        let mut stage = Self::new(spec, [], now)?;
        let saved = snapshot::decode(snapshot)?;
        if saved.fingerprint != snapshot::fingerprint(&stage.spec) {
            return Err(RestoreError::SpecChanged);
        }
        let saved_keys = saved
            .keys
            .into_iter()
            .map(|(id, key)| (id, key.into_owned()))
            .collect();
        let mut keys =
            KeyTable::restore(saved_keys, saved.free_keys).ok_or(RestoreError::Damaged)?;
        let layout = &stage.layout;
        stage.operator = match (stage.operator, saved.operator) {
            (Operator::Tumbling(op), SavedOperator::Tumbling(s)) => {
                op.restore(s, layout, &mut keys).map(Operator::Tumbling)
            }
            (Operator::Sliding(op), SavedOperator::Sliding(s)) => {
                op.restore(s, layout, &mut keys).map(Operator::Sliding)
            }
            (Operator::Session(op), SavedOperator::Session(s)) => op
                .restore(s, layout, &mut keys, stage.lateness)
                .map(Operator::Session),
            _ => None,
        }
        .ok_or(RestoreError::Damaged)?;
        if keys.has_unused() {
            return Err(RestoreError::Damaged);
        }
        stage.keys = keys;
        stage.watermarks = saved.watermarks.into_owned();
        stage.watermarks.reconfigure(
            stage.spec.max_out_of_orderness.as_micros(),
            stage.spec.idle_timeout.as_micros(),
        );
        for partition in partitions {
            stage.watermarks.add_partition(partition, now);
        }
        stage.offsets = saved.offsets;
        stage.counters = saved.counters;
        stage.seq = saved.seq;
        Ok(stage)
    }
}
