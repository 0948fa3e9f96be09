//! Accumulators: what a window (or a pane of one) keeps per key, and how two are merged.
//!
//! A feature's aggregates are compiled into a [`Layout`]: a short list of slots, each one
//! piece of state shared by every aggregate that needs it (`sum` and `mean` of one field share
//! its sum and its count of present values). Every window operator keeps a key's state as a
//! run of slots, updates it per event, merges runs (panes into a sliding window, sessions into
//! one another) and finishes a run into the JSON values of a result. Every slot merges
//! exactly, whatever the order, except a float sum, whose compensated sum may differ in its
//! last bits between orders (see `docs/features.md`).
//!
//! Sums of integers are exact: an `i128` (stored as two words so a slot stays 24 bytes) until
//! the first float, then a Neumaier-compensated `f64` that starts from the exact integer sum.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::extract::{EventTime, FieldValue};
use crate::sketch::{Distinct, Quantiles};
use crate::spec::{AggregateKind, FeatureSpec, FieldPointer};

/// Why the values of a record cannot be aggregated; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The record has the wrong number of values.
    #[error("expected {expected} field values (one per field the aggregates read), got {got}")]
    Arity {
        /// Fields of the feature.
        expected: usize,
        /// Values in the record.
        got: usize,
    },
    /// A numeric aggregate's field holds something else.
    #[error("`{field}` must be a number for aggregate `{aggregate}` ({kind}), but it is {found}")]
    NotANumber {
        /// `data/…`.
        field: String,
        /// The aggregate's name.
        aggregate: String,
        /// The aggregate's kind.
        kind: &'static str,
        /// What the field holds.
        found: &'static str,
    },
    /// A float that is NaN or infinite (JSON cannot hold one; a Rust caller can).
    #[error("`{field}` is not a finite number")]
    NotFinite {
        /// `data/…`.
        field: String,
    },
    /// An empty key.
    #[error("the window key is empty")]
    EmptyKey,
    /// An event time outside the years 1 to 9999.
    #[error("event time {time} µs since the epoch is outside the years 1 to 9999")]
    TimeOutOfRange {
        /// The time given.
        time: EventTime,
    },
}

/// Where an event came from, for `last` (latest event time, then partition, then offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Origin {
    pub(crate) time: EventTime,
    pub(crate) partition: u32,
    pub(crate) offset: u64,
}

/// One piece of per-key state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Slot {
    /// Events, or events with a present field.
    Count(u64),
    Sum(Sum),
    Min(Option<Num>),
    Max(Option<Num>),
    Last(Option<Box<Latest>>),
    Distinct(Distinct),
    Quantiles(Box<Quantiles>),
}

/// A sum: exact over integers, compensated once a float is seen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Sum {
    /// An `i128` as its low and high words.
    Int { lo: u64, hi: i64 },
    /// Neumaier's compensated sum: the value is `sum + comp`.
    Float { sum: f64, comp: f64 },
}

impl Sum {
    const ZERO: Self = Self::Int { lo: 0, hi: 0 };

    fn from_i128(value: i128) -> Self {
        Self::Int {
            lo: value as u64,
            hi: (value >> 64) as i64,
        }
    }

    fn add_int(&mut self, value: i128) {
        match *self {
            Self::Int { lo, hi } => {
                let current = (i128::from(hi) << 64) | i128::from(lo);
                match current.checked_add(value) {
                    Some(total) => *self = Self::from_i128(total),
                    None => {
                        *self = Self::float_of(current);
                        self.add_float(value as f64);
                    }
                }
            }
            Self::Float { .. } => self.add_float(value as f64),
        }
    }

    /// The float sum closest to `value`, with what `f64` cannot hold kept in `comp`.
    fn float_of(value: i128) -> Self {
        let sum = value as f64;
        let comp = value.saturating_sub(sum as i128) as f64;
        Self::Float { sum, comp }
    }

    fn add_float(&mut self, value: f64) {
        if let Self::Int { lo, hi } = *self {
            *self = Self::float_of((i128::from(hi) << 64) | i128::from(lo));
        }
        if let Self::Float { sum, comp } = self {
            let total = *sum + value;
            if sum.abs() >= value.abs() {
                *comp += (*sum - total) + value;
            } else {
                *comp += (value - total) + *sum;
            }
            *sum = total;
        }
    }

    fn merge(&mut self, other: &Self) {
        match *other {
            Self::Int { lo, hi } => self.add_int((i128::from(hi) << 64) | i128::from(lo)),
            Self::Float { sum, comp } => {
                self.add_float(sum);
                self.add_float(comp);
            }
        }
    }

    fn to_json(self) -> Value {
        match self {
            Self::Int { lo, hi } => {
                let value = (i128::from(hi) << 64) | i128::from(lo);
                if let Ok(small) = i64::try_from(value) {
                    Value::from(small)
                } else if let Ok(big) = u64::try_from(value) {
                    Value::from(big)
                } else {
                    float(value as f64)
                }
            }
            Self::Float { sum, comp } => float(sum + comp),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Self::Int { lo, hi } => ((i128::from(hi) << 64) | i128::from(lo)) as f64,
            Self::Float { sum, comp } => sum + comp,
        }
    }
}

fn float(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// A number as it came: integer or float.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(value: &FieldValue) -> Option<Self> {
        match value {
            FieldValue::Int(i) => Some(Self::Int(*i)),
            FieldValue::Float(f) => Some(Self::Float(*f)),
            _ => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }

    /// Numeric order; on a tie an integer counts as smaller, so `min` and `max` pick the same
    /// representation whatever the order of inputs.
    fn less(self, other: Self) -> bool {
        match (self, other) {
            (Self::Int(a), Self::Int(b)) => a < b,
            _ => match self.as_f64().total_cmp(&other.as_f64()) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => {
                    matches!(self, Self::Int(_)) && matches!(other, Self::Float(_))
                }
            },
        }
    }

    fn to_json(self) -> Value {
        match self {
            Self::Int(i) => Value::from(i),
            Self::Float(f) => float(f),
        }
    }
}

/// The latest value of a field, with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Latest {
    time: EventTime,
    partition: u32,
    offset: u64,
    /// Kept as JSON text in snapshots: the compact binary format cannot hold a self-describing
    /// value.
    #[serde(with = "json_text")]
    value: Value,
}

mod json_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    pub(super) fn serialize<S: Serializer>(
        value: &Value,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Value, D::Error> {
        let text = String::deserialize(deserializer)?;
        serde_json::from_str(&text).map_err(serde::de::Error::custom)
    }
}

impl Latest {
    fn origin(&self) -> Origin {
        Origin {
            time: self.time,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotKind {
    Events,
    Present(usize),
    Sum(usize),
    Min(usize),
    Max(usize),
    Last(usize),
    Distinct(usize),
    Quantiles(usize),
}

#[derive(Debug, Clone)]
enum Output {
    Count(usize),
    Sum { sum: usize, present: usize },
    Mean { sum: usize, present: usize },
    Min(usize),
    Max(usize),
    Last(usize),
    Distinct(usize),
    Quantiles(usize),
}

/// The compiled aggregates of one feature.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    slots: Vec<SlotKind>,
    outputs: Vec<(String, Output)>,
    fields: Vec<FieldPointer>,
    /// For each field, the first numeric aggregate reading it (to name in errors).
    numeric: Vec<Option<(String, AggregateKind)>>,
}

impl Layout {
    pub(crate) fn new(spec: &FeatureSpec) -> Self {
        let fields = spec.fields();
        let mut slots: Vec<SlotKind> = Vec::new();
        let mut slot = |kind: SlotKind| match slots.iter().position(|k| *k == kind) {
            Some(i) => i,
            None => {
                slots.push(kind);
                slots.len() - 1
            }
        };
        let mut numeric = vec![None; fields.len()];
        let mut outputs = Vec::with_capacity(spec.aggregates.len());
        for aggregate in &spec.aggregates {
            let field = aggregate
                .field
                .as_ref()
                .and_then(|f| fields.iter().position(|g| g == f));
            if let Some(f) = field
                && aggregate.kind.is_numeric()
                && numeric[f].is_none()
            {
                numeric[f] = Some((aggregate.name.clone(), aggregate.kind));
            }
            // A validated spec has a field wherever the kind needs one; without one, the
            // aggregate counts events (a `count`) rather than failing here.
            let output = match (aggregate.kind, field) {
                (AggregateKind::Count, Some(f)) => Output::Count(slot(SlotKind::Present(f))),
                (_, None) => Output::Count(slot(SlotKind::Events)),
                (AggregateKind::Sum, Some(f)) => Output::Sum {
                    sum: slot(SlotKind::Sum(f)),
                    present: slot(SlotKind::Present(f)),
                },
                (AggregateKind::Mean, Some(f)) => Output::Mean {
                    sum: slot(SlotKind::Sum(f)),
                    present: slot(SlotKind::Present(f)),
                },
                (AggregateKind::Min, Some(f)) => Output::Min(slot(SlotKind::Min(f))),
                (AggregateKind::Max, Some(f)) => Output::Max(slot(SlotKind::Max(f))),
                (AggregateKind::Last, Some(f)) => Output::Last(slot(SlotKind::Last(f))),
                (AggregateKind::Distinct, Some(f)) => Output::Distinct(slot(SlotKind::Distinct(f))),
                (AggregateKind::Quantiles, Some(f)) => {
                    Output::Quantiles(slot(SlotKind::Quantiles(f)))
                }
            };
            outputs.push((aggregate.name.clone(), output));
        }
        Self {
            slots,
            outputs,
            fields,
            numeric,
        }
    }

    /// Slots per key.
    pub(crate) fn width(&self) -> usize {
        self.slots.len()
    }

    /// Appends the empty state of one key.
    pub(crate) fn push_empty(&self, out: &mut Vec<Slot>) {
        out.extend(self.slots.iter().map(|kind| match kind {
            SlotKind::Events | SlotKind::Present(_) => Slot::Count(0),
            SlotKind::Sum(_) => Slot::Sum(Sum::ZERO),
            SlotKind::Min(_) => Slot::Min(None),
            SlotKind::Max(_) => Slot::Max(None),
            SlotKind::Last(_) => Slot::Last(None),
            SlotKind::Distinct(_) => Slot::Distinct(Distinct::default()),
            SlotKind::Quantiles(_) => Slot::Quantiles(Box::default()),
        }));
    }

    /// Checks a record's values against the fields and the kinds that read them.
    pub(crate) fn check(&self, values: &[FieldValue]) -> Result<(), InputError> {
        if values.len() != self.fields.len() {
            return Err(InputError::Arity {
                expected: self.fields.len(),
                got: values.len(),
            });
        }
        for ((value, field), numeric) in values.iter().zip(&self.fields).zip(&self.numeric) {
            match value {
                FieldValue::Float(f) if !f.is_finite() => {
                    return Err(InputError::NotFinite {
                        field: field.field_name(),
                    });
                }
                FieldValue::Missing | FieldValue::Null | FieldValue::Int(_) => {}
                FieldValue::Float(_) => {}
                other => {
                    if let Some((aggregate, kind)) = numeric {
                        return Err(InputError::NotANumber {
                            field: field.field_name(),
                            aggregate: aggregate.clone(),
                            kind: kind.as_str(),
                            found: other.kind_name(),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds one (checked) record to a key's state.
    pub(crate) fn update(&self, slots: &mut [Slot], values: &[FieldValue], origin: Origin) {
        for (slot, kind) in slots.iter_mut().zip(&self.slots) {
            match (slot, *kind) {
                (Slot::Count(n), SlotKind::Events) => *n += 1,
                (Slot::Count(n), SlotKind::Present(f)) if values[f].is_present() => *n += 1,
                (Slot::Sum(sum), SlotKind::Sum(f)) => match values[f] {
                    FieldValue::Int(i) => sum.add_int(i128::from(i)),
                    FieldValue::Float(x) => sum.add_float(x),
                    _ => {}
                },
                (Slot::Min(min), SlotKind::Min(f)) => {
                    if let Some(n) = Num::of(&values[f])
                        && min.is_none_or(|m| n.less(m))
                    {
                        *min = Some(n);
                    }
                }
                (Slot::Max(max), SlotKind::Max(f)) => {
                    if let Some(n) = Num::of(&values[f])
                        && max.is_none_or(|m| m.less(n))
                    {
                        *max = Some(n);
                    }
                }
                (Slot::Last(last), SlotKind::Last(f))
                    if values[f].is_present()
                        && last.as_ref().is_none_or(|l| l.origin() < origin) =>
                {
                    *last = Some(Box::new(Latest {
                        time: origin.time,
                        partition: origin.partition,
                        offset: origin.offset,
                        value: values[f].to_json(),
                    }));
                }
                (Slot::Distinct(distinct), SlotKind::Distinct(f)) => distinct.insert(&values[f]),
                (Slot::Quantiles(q), SlotKind::Quantiles(f)) => {
                    if let Some(n) = Num::of(&values[f]) {
                        q.add(n.as_f64());
                    }
                }
                _ => {}
            }
        }
    }

    /// Merges the state `from` into `into` (both of this layout).
    pub(crate) fn merge(&self, into: &mut [Slot], from: &[Slot]) {
        for (a, b) in into.iter_mut().zip(from) {
            merge_slot(a, b);
        }
    }

    /// The values of a result: one member per aggregate, in order.
    pub(crate) fn finish(&self, slots: &[Slot]) -> Map<String, Value> {
        let mut values = Map::new();
        for (name, output) in &self.outputs {
            let value = match *output {
                Output::Count(i) => Value::from(count(&slots[i])),
                Output::Sum { sum, present } => match (&slots[sum], count(&slots[present])) {
                    (Slot::Sum(s), n) if n > 0 => s.to_json(),
                    _ => Value::Null,
                },
                Output::Mean { sum, present } => match (&slots[sum], count(&slots[present])) {
                    (Slot::Sum(s), n) if n > 0 => float(s.as_f64() / n as f64),
                    _ => Value::Null,
                },
                Output::Min(i) | Output::Max(i) => match &slots[i] {
                    Slot::Min(Some(n)) | Slot::Max(Some(n)) => n.to_json(),
                    _ => Value::Null,
                },
                Output::Last(i) => match &slots[i] {
                    Slot::Last(Some(last)) => last.value.clone(),
                    _ => Value::Null,
                },
                Output::Distinct(i) => match &slots[i] {
                    Slot::Distinct(d) => Value::from(d.estimate()),
                    _ => Value::Null,
                },
                Output::Quantiles(i) => match &slots[i] {
                    Slot::Quantiles(q) => {
                        match (q.quantile(0.5), q.quantile(0.9), q.quantile(0.99)) {
                            (Some(p50), Some(p90), Some(p99)) => {
                                let mut map = Map::new();
                                map.insert("p50".into(), float(p50));
                                map.insert("p90".into(), float(p90));
                                map.insert("p99".into(), float(p99));
                                Value::Object(map)
                            }
                            _ => Value::Null,
                        }
                    }
                    _ => Value::Null,
                },
            };
            values.insert(name.clone(), value);
        }
        values
    }

    /// Whether restored slots have this layout's kinds and hold valid sketches.
    pub(crate) fn is_valid(&self, slots: &[Slot]) -> bool {
        slots.len().is_multiple_of(self.width().max(1))
            && slots
                .iter()
                .zip(self.slots.iter().cycle())
                .all(|(slot, kind)| match (slot, kind) {
                    (Slot::Count(_), SlotKind::Events | SlotKind::Present(_)) => true,
                    (Slot::Sum(_), SlotKind::Sum(_))
                    | (Slot::Min(_), SlotKind::Min(_))
                    | (Slot::Max(_), SlotKind::Max(_))
                    | (Slot::Last(_), SlotKind::Last(_))
                    | (Slot::Distinct(_), SlotKind::Distinct(_)) => true,
                    (Slot::Quantiles(q), SlotKind::Quantiles(_)) => q.is_valid(),
                    _ => false,
                })
    }
}

fn count(slot: &Slot) -> u64 {
    match slot {
        Slot::Count(n) => *n,
        _ => 0,
    }
}

fn merge_slot(a: &mut Slot, b: &Slot) {
    match (a, b) {
        (Slot::Count(x), Slot::Count(y)) => *x += y,
        (Slot::Sum(x), Slot::Sum(y)) => x.merge(y),
        (Slot::Min(x), Slot::Min(Some(y))) if x.is_none_or(|m| y.less(m)) => *x = Some(*y),
        (Slot::Max(x), Slot::Max(Some(y))) if x.is_none_or(|m| m.less(*y)) => *x = Some(*y),
        (Slot::Last(x), Slot::Last(Some(y)))
            if x.as_ref().is_none_or(|l| l.origin() < y.origin()) =>
        {
            *x = Some(y.clone());
        }
        (Slot::Distinct(x), Slot::Distinct(y)) => x.merge(y),
        (Slot::Quantiles(x), Slot::Quantiles(y)) => x.merge(y),
        _ => {}
    }
}

/// Heap bytes held by slots beyond their inline size.
pub(crate) fn heap_bytes(slots: &[Slot]) -> usize {
    slots
        .iter()
        .map(|slot| match slot {
            Slot::Distinct(d) => d.heap_bytes(),
            Slot::Quantiles(q) => std::mem::size_of::<Quantiles>() + q.heap_bytes(),
            Slot::Last(Some(_)) => std::mem::size_of::<Latest>(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_sums_are_exact_past_the_range_of_f64_and_i64() {
        let mut sum = Sum::ZERO;
        for _ in 0..4 {
            sum.add_int(i128::from(i64::MAX));
        }
        sum.add_int(3);
        let expected = i128::from(i64::MAX) * 4 + 3;
        assert_eq!(sum, Sum::from_i128(expected));
    }

    #[test]
    fn a_million_small_float_adds_do_not_drift() {
        let mut sum = Sum::ZERO;
        for _ in 0..1_000_000 {
            sum.add_float(0.1);
        }
        assert!((sum.as_f64() - 100_000.0).abs() < 1e-9, "{}", sum.as_f64());
    }

    #[test]
    fn switching_to_floats_keeps_the_exact_integer_part() {
        let mut sum = Sum::ZERO;
        sum.add_int(1 << 60);
        sum.add_int(1);
        sum.add_float(0.5);
        sum.add_int(-(1 << 60));
        assert_eq!(sum.as_f64(), 1.5);
    }

    #[test]
    fn slots_stay_small() {
        assert!(
            std::mem::size_of::<Slot>() <= 24,
            "{}",
            std::mem::size_of::<Slot>()
        );
    }
}
