//! The two approximate aggregates, each a thin wrapper over a maintained sketch crate that
//! keeps small windows small and states its error bound.
//!
//! - [`Distinct`]: `cardinality-estimator` (Cloudflare), HyperLogLog++ with 2¹² registers of
//!   6 bits. Up to 2 distinct values it is 8 bytes inline; up to 128 it is an array of 32-bit
//!   hash codes, exact unless two values share a code (probability about n²/2²⁶, under
//!   2.5·10⁻⁴ at n = 128); above 128 it is a 3 KiB HyperLogLog with a relative standard error
//!   of 1.04/√4096 ≈ 1.6 % (so within ±5 % about 99.7 % of the time).
//! - [`Quantiles`]: up to [`EXACT_QUANTILE_VALUES`] values are kept as they are and the
//!   quantile is exact; beyond, `sketches-ddsketch` (a port of Datadog's DDSketch) with
//!   relative accuracy α = 1 %: the value returned for quantile q is within 1 % of the value
//!   at rank ⌊q·(n−1)⌋ of the sorted inputs, whatever their distribution, as long as the
//!   inputs span less than 2048 bins (a ratio of about 10¹⁷ between the smallest and largest
//!   magnitude; beyond, the smallest collapse together). Values within 10⁻⁹ of zero count as
//!   zero.
//!
//! Both merge without loss of their guarantee (register maxima, bin sums), and both give the
//! same answer whatever order values and merges come in, which is what lets a sliding window
//! be built from panes and a replay agree with the original run.

use cardinality_estimator::CardinalityEstimator;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sketches_ddsketch::{Config, DDSketch};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::extract::FieldValue;

/// Inputs kept exactly before a quantile aggregate switches to a sketch.
pub const EXACT_QUANTILE_VALUES: usize = 64;

/// The relative accuracy of quantiles past [`EXACT_QUANTILE_VALUES`] inputs.
pub const QUANTILE_RELATIVE_ACCURACY: f64 = 0.01;

/// The relative standard error of distinct counts above 128 values.
pub const DISTINCT_RELATIVE_STANDARD_ERROR: f64 = 1.04 / 64.0;

/// 2¹² registers of 6 bits (the crate's defaults); values are hashed here, with xxh3.
type Estimator = CardinalityEstimator<u64>;

/// A distinct-count accumulator.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Distinct(Estimator);

impl std::fmt::Debug for Distinct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Distinct(~{})", self.0.estimate())
    }
}

impl Distinct {
    /// Counts `value` (nulls and missing values are not counted).
    pub(crate) fn insert(&mut self, value: &FieldValue) {
        if let Some(hash) = hash_value(value) {
            self.0.insert_hash(hash);
        }
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        self.0.merge(&other.0);
    }

    pub(crate) fn estimate(&self) -> u64 {
        self.0.estimate() as u64
    }

    /// Bytes held on the heap.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0
            .size_of()
            .saturating_sub(std::mem::size_of::<usize>())
    }
}

/// The hash a distinct count uses for a value: equal JSON values hash equally (`1` and `1.0`
/// included, objects whatever their member order).
fn hash_value(value: &FieldValue) -> Option<u64> {
    const INT: u8 = 1;
    const FLOAT: u8 = 2;
    const STR: u8 = 3;
    const BOOL: u8 = 4;
    const JSON: u8 = 5;
    let tagged = |tag: u8, bytes: &[u8]| {
        let mut hasher = Xxh3::new();
        hasher.update(&[tag]);
        hasher.update(bytes);
        hasher.digest()
    };
    let int = |i: i64| {
        let mut buf = [INT; 9];
        buf[1..].copy_from_slice(&i.to_le_bytes());
        xxh3_64(&buf)
    };
    match value {
        FieldValue::Missing | FieldValue::Null => None,
        FieldValue::Int(i) => Some(int(*i)),
        FieldValue::Float(f) if f.fract() == 0.0 && *f >= -9.2e18 && *f <= 9.2e18 => {
            Some(int(*f as i64))
        }
        FieldValue::Float(f) => Some(tagged(FLOAT, &f.to_bits().to_le_bytes())),
        FieldValue::Str(s) => Some(tagged(STR, s.as_bytes())),
        FieldValue::Bool(b) => Some(tagged(BOOL, &[u8::from(*b)])),
        FieldValue::Json(v) => {
            let mut hasher = Xxh3::new();
            hasher.update(&[JSON]);
            canonical(v, &mut hasher);
            Some(hasher.digest())
        }
    }
}

/// Feeds `value` to `hasher` with object members sorted, so member order does not matter.
fn canonical(value: &Value, hasher: &mut Xxh3) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            hasher.update(b"{");
            for (name, member) in members {
                hasher.update(&(name.len() as u64).to_le_bytes());
                hasher.update(name.as_bytes());
                canonical(member, hasher);
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for item in items {
                canonical(item, hasher);
            }
            hasher.update(b"]");
        }
        scalar => hasher.update(scalar.to_string().as_bytes()),
    }
}

/// A quantile accumulator: exact values while few, then a DDSketch.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) enum Quantiles {
    Exact(Vec<f64>),
    Sketch(Box<DDSketch>),
}

impl std::fmt::Debug for Quantiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(values) => write!(f, "Quantiles::Exact({values:?})"),
            Self::Sketch(sketch) => write!(f, "Quantiles::Sketch(n = {})", sketch.count()),
        }
    }
}

impl Default for Quantiles {
    fn default() -> Self {
        Self::Exact(Vec::new())
    }
}

fn config() -> Config {
    Config::new(QUANTILE_RELATIVE_ACCURACY, 2048, 1.0e-9)
}

impl Quantiles {
    pub(crate) fn add(&mut self, value: f64) {
        match self {
            Self::Exact(values) => {
                values.push(value);
                if values.len() > EXACT_QUANTILE_VALUES {
                    self.make_sketch();
                }
            }
            Self::Sketch(sketch) => sketch.add(value),
        }
    }

    fn make_sketch(&mut self) {
        if let Self::Exact(values) = self {
            let mut sketch = DDSketch::new(config());
            for value in values.iter() {
                sketch.add(*value);
            }
            *self = Self::Sketch(Box::new(sketch));
        }
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        match other {
            Self::Exact(values) => {
                for value in values {
                    self.add(*value);
                }
            }
            Self::Sketch(theirs) => {
                self.make_sketch();
                if let Self::Sketch(ours) = self {
                    // Every sketch has `config()`: built here, or checked when restored
                    // (`is_valid`), so the configurations always match.
                    let merged = ours.merge(theirs);
                    debug_assert!(merged.is_ok());
                }
            }
        }
    }

    /// The value at quantile `q` (rank ⌊q·(n−1)⌋), or `None` without values.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        match self {
            Self::Exact(values) if values.is_empty() => None,
            Self::Exact(values) => {
                let mut sorted = values.clone();
                sorted.sort_by(f64::total_cmp);
                let rank = (q * (sorted.len() as f64 - 1.0)) as usize;
                sorted.get(rank).copied()
            }
            Self::Sketch(sketch) => sketch.quantile(q).ok().flatten(),
        }
    }

    /// Whether a restored accumulator is one this crate could have built.
    pub(crate) fn is_valid(&self) -> bool {
        match self {
            Self::Exact(values) => {
                values.len() <= EXACT_QUANTILE_VALUES && values.iter().all(|v| v.is_finite())
            }
            Self::Sketch(sketch) => DDSketch::new(config()).merge(sketch).is_ok(),
        }
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        match self {
            Self::Exact(values) => values.capacity() * 8,
            // The sketch's two stores grow 128 bins (1 KiB) at a time.
            Self::Sketch(sketch) => std::mem::size_of::<DDSketch>() + sketch.length() * 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_json_values_count_once_whatever_their_form() {
        let mut distinct = Distinct::default();
        for value in [
            FieldValue::Int(1),
            FieldValue::Float(1.0),
            FieldValue::Json(serde_json::json!({"a": 1, "b": [2]})),
            FieldValue::Json(serde_json::from_str(r#"{"b": [2], "a": 1}"#).unwrap()),
            FieldValue::Str("1".into()),
            FieldValue::Null,
            FieldValue::Missing,
        ] {
            distinct.insert(&value);
        }
        assert_eq!(
            distinct.estimate(),
            3,
            "1, the object, and the string \"1\""
        );
    }

    #[test]
    fn a_hundred_thousand_distinct_values_are_counted_within_five_percent() {
        let mut parts = vec![Distinct::default(); 10];
        for i in 0..100_000i64 {
            parts[(i % 10) as usize].insert(&FieldValue::Int(i * 7919));
        }
        let mut merged = Distinct::default();
        for part in &parts {
            merged.merge(part);
        }
        let estimate = merged.estimate() as f64;
        assert!(
            (estimate - 100_000.0).abs() / 100_000.0 < 0.05,
            "{estimate}"
        );
    }

    #[test]
    fn quantiles_are_exact_while_few_and_within_one_percent_after() {
        let mut few = Quantiles::default();
        for v in [5.0, 1.0, 3.0, 2.0, 4.0] {
            few.add(v);
        }
        assert_eq!(few.quantile(0.5), Some(3.0));
        assert_eq!(few.quantile(0.99), Some(4.0), "rank ⌊0.99·4⌋ = 3");

        let mut many = Quantiles::default();
        let mut other = Quantiles::default();
        for i in 1..=10_000 {
            if i % 2 == 0 {
                many.add(f64::from(i));
            } else {
                other.add(f64::from(i));
            }
        }
        many.merge(&other);
        for (q, exact) in [(0.5, 5_000.0), (0.9, 9_000.0), (0.99, 9_900.0)] {
            let got = many.quantile(q).unwrap();
            assert!(
                (got - exact).abs() <= 0.01 * exact,
                "p{q}: {got} vs {exact}"
            );
        }
        assert!(many.is_valid());
    }
}
