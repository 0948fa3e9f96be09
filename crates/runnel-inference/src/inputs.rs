//! A model's inputs for one event: feature values from the online feature store and fields of
//! the event, by name, in the model's input order, with a default where a value may be
//! missing.
//!
//! A missing input without a default, or a value that is not a number, is the event's fault:
//! a permanent failure naming the input and where it was looked for (the event is
//! dead-lettered, and nothing is scored from a guess). A feature store that cannot be read is
//! the infrastructure's: a service failure, retried with backoff.

use runnel_envelope::Event;
use runnel_stages::{FeatureStore, FieldPointer, KeySource, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One declared input (`[[models]].inputs`): exactly one of `pointer` and `feature`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The input's name (the fallback rule reads it by this name).
    pub name: String,
    /// A JSON pointer into the event's data (`/amount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<FieldPointer>,
    /// A feature value: `<feature set>.<aggregate>` (`customer_1h.orders`), read from the
    /// online feature store under the event's entity key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    /// The value when the input is missing or null; without one a missing input is a
    /// permanent failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<f64>,
}

impl InputSpec {
    /// Where the value comes from, for messages: `data/amount` or `feature customer_1h.orders`.
    pub fn origin(&self) -> String {
        match (&self.pointer, &self.feature) {
            (Some(pointer), _) => pointer.field_name(),
            (None, Some(feature)) => format!("feature {feature}"),
            (None, None) => "nowhere".to_string(),
        }
    }

    /// `(set, aggregate)` of a feature input.
    pub fn feature_parts(&self) -> Option<(&str, &str)> {
        self.feature.as_deref()?.split_once('.')
    }
}

/// Why an event's inputs could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A required value is missing: permanent.
    #[error("input `{input}` ({origin}) is missing and has no default")]
    Missing {
        /// The input.
        input: String,
        /// Where it was looked for.
        origin: String,
    },
    /// A value is not a number: permanent.
    #[error("input `{input}` ({origin}) is {found}, not a number")]
    NotNumber {
        /// The input.
        input: String,
        /// Where it was read.
        origin: String,
        /// What was found.
        found: String,
    },
    /// The entity key is missing or unusable while features or the cache need it:
    /// permanent.
    #[error("the entity key ({origin}) is {problem}")]
    Key {
        /// Where it was looked for.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// The feature store could not be read: transient.
    #[error("reading the feature store: {0}")]
    Store(#[from] StoreError),
}

impl InputError {
    /// Whether retrying cannot help (the event's fault).
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Store(_))
    }
}

/// An event's entity key and input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    /// The entity key, if the event has one.
    pub key: Option<String>,
    /// The inputs in order.
    pub row: Vec<f64>,
}

/// Assembles rows for one model.
#[derive(Debug, Clone)]
pub struct InputAssembler {
    inputs: Vec<InputSpec>,
    key: KeySource,
    /// Distinct feature sets read, in first-use order.
    sets: Vec<String>,
    store: FeatureStore,
}

impl InputAssembler {
    /// An assembler for validated `inputs`, keyed by `key`, reading features from `store`.
    pub fn new(inputs: Vec<InputSpec>, key: KeySource, store: FeatureStore) -> Self {
        let mut sets: Vec<String> = Vec::new();
        for input in &inputs {
            if let Some((set, _)) = input.feature_parts()
                && !sets.iter().any(|s| s == set)
            {
                sets.push(set.to_string());
            }
        }
        Self {
            inputs,
            key,
            sets,
            store,
        }
    }

    /// The input names in order.
    pub fn names(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.name.clone()).collect()
    }

    /// The entity key of `event`.
    pub fn key(&self, event: &Event) -> Result<Option<String>, InputError> {
        match &self.key {
            KeySource::PartitionKey => Ok(event.partition_key().map(str::to_string)),
            KeySource::Data(pointer) => {
                let origin = pointer.field_name();
                match event
                    .data()
                    .as_json()
                    .and_then(|d| d.pointer(pointer.as_str()))
                {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
                    Some(other) => Err(InputError::Key {
                        origin,
                        problem: format!("{}, not a string or number", kind(other)),
                    }),
                }
            }
        }
    }

    /// The key and the row of `event`.
    pub async fn assemble(&self, event: &Event) -> Result<Assembled, InputError> {
        let key = self.key(event)?;
        let mut features = Vec::with_capacity(self.sets.len());
        if !self.sets.is_empty() {
            let Some(key) = &key else {
                return Err(InputError::Key {
                    origin: self.key.to_string(),
                    problem: "missing, and feature inputs are read by it".to_string(),
                });
            };
            for set in &self.sets {
                features.push(self.store.get(set, key).await?);
            }
        }
        let data = event.data().as_json();
        let mut row = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let found: Option<&Value> = match (&input.pointer, input.feature_parts()) {
                (Some(pointer), _) => data.and_then(|d| d.pointer(pointer.as_str())),
                (None, Some((set, aggregate))) => self
                    .sets
                    .iter()
                    .position(|s| s == set)
                    .and_then(|i| features[i].as_ref())
                    .and_then(|value| value.values.get(aggregate)),
                (None, None) => None,
            };
            let value = match found {
                None | Some(Value::Null) => input.default.ok_or_else(|| InputError::Missing {
                    input: input.name.clone(),
                    origin: input.origin(),
                })?,
                Some(Value::Number(n)) => n.as_f64().ok_or_else(|| InputError::NotNumber {
                    input: input.name.clone(),
                    origin: input.origin(),
                    found: n.to_string(),
                })?,
                Some(Value::Bool(b)) => f64::from(u8::from(*b)),
                Some(other) => {
                    return Err(InputError::NotNumber {
                        input: input.name.clone(),
                        origin: input.origin(),
                        found: kind(other).to_string(),
                    });
                }
            };
            row.push(value);
        }
        Ok(Assembled { key, row })
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
