//! The `[[models]]` table of `runnel.toml`: what a user writes to run a model without Rust.
//!
//! ```toml
//! [[models]]
//! name = "fraud"
//! input = "order.placed"
//! output = "fraud.scored"
//! onnx = { path = "models/fraud_rf.onnx", output = "probabilities" }
//! outputs = ["legit", "fraud"]
//! inputs = [
//!   { name = "amount", pointer = "/amount" },
//!   { name = "orders_1h", feature = "customer_1h.orders", default = 0 },
//! ]
//! fallback = { legit = "0.98", fraud = "if(amount > 1000, 0.5, 0.02)" }
//! ```
//!
//! Parsing checks each value (durations, pointers, the output type); [`ModelSpec::validate`]
//! and [`validate_models`] check the rules between fields, each problem naming its path
//! (`models[0].inputs[1].feature: …`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use runnel_envelope::EventType;
use runnel_runtime::TypePattern;
use runnel_stages::KeySource;
use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;
use crate::fallback::FallbackRule;
use crate::inputs::InputSpec;
use crate::scorer::ScorerOptions;

/// Durations written as `"50ms"`, `"5s"` (runnel-stages' `HumanDuration`).
pub(crate) mod duration {
    use std::time::Duration;

    use runnel_stages::HumanDuration;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        HumanDuration::from_micros(u64::try_from(value.as_micros()).unwrap_or(u64::MAX))
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let parsed = HumanDuration::deserialize(d)?;
        Ok(Duration::from_micros(parsed.as_micros()))
    }
}

/// Most characters of a model name: its group is `inference-<name>`, at most 56.
pub const MAX_MODEL_NAME_LEN: usize = 56 - "inference-".len();

/// An ONNX file run in process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxSpec {
    /// The file (relative paths from the working directory).
    pub path: String,
    /// The ONNX output to read. Default `probabilities` (skl2onnx classifiers).
    #[serde(default = "default_onnx_output")]
    pub output: String,
}

/// A model on a model server (Open Inference Protocol).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// The server's base URL.
    pub url: String,
    /// The model's name on the server. Default: the model's name.
    #[serde(default)]
    pub model: Option<String>,
    /// The version to call. Default: the server's.
    #[serde(default)]
    pub version: Option<String>,
    /// The input tensor's name. Default `input-0`.
    #[serde(default = "default_input_name")]
    pub input_name: String,
    /// The output to ask for. Default `predict_proba`.
    #[serde(default = "default_remote_output")]
    pub output: String,
}

fn default_onnx_output() -> String {
    "probabilities".to_string()
}
fn default_input_name() -> String {
    "input-0".to_string()
}
fn default_remote_output() -> String {
    "predict_proba".to_string()
}

/// One `[[models]]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// `a-z 0-9 _ -`, at most [`MAX_MODEL_NAME_LEN`]; on every prediction and metric.
    pub name: String,
    /// The events to score: a type pattern (`order.placed`, `order.*`).
    pub input: String,
    /// The prediction events' type (`fraud.scored`).
    pub output: EventType,
    /// The entity: feature values and cached predictions are looked up by it. Default
    /// `partitionkey`; or a JSON pointer into the event's data.
    #[serde(default)]
    pub key: KeySource,
    /// The version on predictions. Default: the server's, or a hash of the ONNX file.
    #[serde(default)]
    pub version: Option<String>,
    /// In-process ONNX (needs the `onnx` feature). Exactly one of `onnx` and `remote`.
    #[serde(default)]
    pub onnx: Option<OnnxSpec>,
    /// A model server.
    #[serde(default)]
    pub remote: Option<RemoteSpec>,
    /// Names of the model's outputs (a classifier's classes, in order).
    pub outputs: Vec<String>,
    /// The model's inputs, in its order.
    pub inputs: Vec<InputSpec>,
    /// Output name → a number or an expression over the inputs: the ladder's last step.
    pub fallback: BTreeMap<String, String>,
    /// Most rows in one model call. Default 32.
    #[serde(default = "defaults::max_batch")]
    pub max_batch: usize,
    /// Longest wait for more rows after the first of a batch. Default 2ms.
    #[serde(default = "defaults::max_wait", with = "duration")]
    pub max_wait: Duration,
    /// Most model calls in flight. Default 4.
    #[serde(default = "defaults::max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    /// Longest a model call may take. Default 50ms.
    #[serde(default = "defaults::timeout", with = "duration")]
    pub timeout: Duration,
    /// Longest from taking an event to having its prediction. Default 100ms.
    #[serde(default = "defaults::deadline", with = "duration")]
    pub deadline: Duration,
    /// How long a cached prediction may answer. Default 10m.
    #[serde(default = "defaults::cache_ttl", with = "duration")]
    pub cache_ttl: Duration,
    /// Most entities cached. Default 100000; 0 turns the cache off.
    #[serde(default = "defaults::cache_capacity")]
    pub cache_capacity: usize,
    /// The circuit breaker.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// Score again, once the model answers again, every event it answered degraded (from
    /// the cache or the fallback), publishing revision 2 of that prediction. Default false.
    #[serde(default)]
    pub rescore_degraded: bool,
    /// This model is a shadow of the named live model: it scores the same inputs into its
    /// own stream (its `output`'s domain must differ from the live model's), for
    /// `runnel models compare`. Default: none (a live model).
    #[serde(default)]
    pub shadow_of: Option<String>,
}

mod defaults {
    use std::time::Duration;

    pub fn max_batch() -> usize {
        32
    }
    pub fn max_wait() -> Duration {
        Duration::from_millis(2)
    }
    pub fn max_concurrent_calls() -> usize {
        4
    }
    pub fn timeout() -> Duration {
        Duration::from_millis(50)
    }
    pub fn deadline() -> Duration {
        Duration::from_millis(100)
    }
    pub fn cache_ttl() -> Duration {
        Duration::from_secs(600)
    }
    pub fn cache_capacity() -> usize {
        100_000
    }
}

/// The problems of a specification, each with its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ModelSpecErrors {
    /// `(path, problem)` pairs.
    pub problems: Vec<(String, String)>,
}

impl fmt::Display for ModelSpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (path, problem)) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{path}: {problem}")?;
        }
        Ok(())
    }
}

impl ModelSpec {
    /// Checks the rules between fields; paths are relative to the table (`inputs[1].feature`).
    pub fn validate(&self) -> Result<(), ModelSpecErrors> {
        self.check(true)
    }

    /// [`ModelSpec::validate`] for a stage given its model by the caller: `onnx` and
    /// `remote` may both be absent.
    pub fn validate_without_runner(&self) -> Result<(), ModelSpecErrors> {
        self.check(false)
    }

    fn check(&self, runner_needed: bool) -> Result<(), ModelSpecErrors> {
        let mut problems: Vec<(String, String)> = Vec::new();
        let mut problem = |path: &str, text: String| problems.push((path.to_string(), text));
        if self.name.is_empty()
            || self.name.len() > MAX_MODEL_NAME_LEN
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            problem(
                "name",
                format!(
                    "`{}` must be 1 to {MAX_MODEL_NAME_LEN} characters of a-z, 0-9, `_` and `-`",
                    self.name
                ),
            );
        }
        match TypePattern::new(self.input.clone()) {
            Err(e) => problem("input", e.to_string()),
            // Its predictions would be inputs again: each would be scored, and so on.
            Ok(pattern) if pattern.matches(self.output.as_str()) => problem(
                "output",
                format!(
                    "`{}` is matched by `input` (`{}`): the model would score its own predictions; \
                     give them a type of another domain (`{}.scored`)",
                    self.output.as_str(),
                    self.input,
                    self.name.replace('-', "_"),
                ),
            ),
            Ok(_) => {}
        }
        match (&self.onnx, &self.remote) {
            (None, None) if runner_needed => {
                problem("onnx", "one of `onnx` and `remote` is needed".into())
            }
            (None, None) => {}
            (Some(_), Some(_)) => problem(
                "remote",
                "only one of `onnx` and `remote` may be given".into(),
            ),
            (Some(onnx), None) => {
                if onnx.path.is_empty() {
                    problem("onnx.path", "must not be empty".into());
                }
                if cfg!(not(feature = "onnx")) {
                    problem(
                        "onnx",
                        "this build has no ONNX runtime (cargo feature `onnx`)".into(),
                    );
                }
            }
            (None, Some(remote)) => {
                if !(remote.url.starts_with("http://") || remote.url.starts_with("https://")) {
                    problem(
                        "remote.url",
                        format!("`{}` must start with http:// or https://", remote.url),
                    );
                }
            }
        }
        if self.outputs.is_empty() {
            problem("outputs", "name at least one output".into());
        }
        for (i, name) in self.outputs.iter().enumerate() {
            if self.outputs[..i].contains(name) {
                problem(&format!("outputs[{i}]"), format!("`{name}` is named twice"));
            }
        }
        if self.inputs.is_empty() {
            problem("inputs", "declare at least one input".into());
        }
        for (i, input) in self.inputs.iter().enumerate() {
            let path = format!("inputs[{i}]");
            if !is_identifier(&input.name) {
                problem(
                    &format!("{path}.name"),
                    format!(
                        "`{}` must be a letter or `_` followed by letters, digits or `_`",
                        input.name
                    ),
                );
            } else if self.inputs[..i].iter().any(|o| o.name == input.name) {
                problem(
                    &format!("{path}.name"),
                    format!("`{}` is declared twice", input.name),
                );
            }
            match (&input.pointer, &input.feature) {
                (None, None) => problem(&path, "give `pointer` or `feature`".into()),
                (Some(_), Some(_)) => {
                    problem(&path, "give only one of `pointer` and `feature`".into())
                }
                (None, Some(feature)) => {
                    if !feature
                        .split_once('.')
                        .is_some_and(|(s, a)| !s.is_empty() && !a.is_empty())
                    {
                        problem(
                            &format!("{path}.feature"),
                            format!("`{feature}` must be `<feature set>.<aggregate>`"),
                        );
                    }
                }
                (Some(_), None) => {}
            }
            if input.default.is_some_and(|d| !d.is_finite()) {
                problem(&format!("{path}.default"), "must be a finite number".into());
            }
        }
        let names: Vec<String> = self.inputs.iter().map(|i| i.name.clone()).collect();
        if !self.outputs.is_empty()
            && let Err(e) = FallbackRule::new(&names, &self.outputs, &self.fallback)
        {
            problem(&format!("fallback.{}", e.output), e.reason);
        }
        for (field, value) in [
            ("max_batch", self.max_batch),
            ("max_concurrent_calls", self.max_concurrent_calls),
        ] {
            if value == 0 {
                problem(field, "must be at least 1".into());
            }
        }
        if self.max_batch > 65_536 {
            problem("max_batch", "must be at most 65536".into());
        }
        if self.timeout.is_zero() {
            problem("timeout", "must be longer than 0".into());
        }
        if self.deadline < Duration::from_millis(1) {
            problem("deadline", "must be at least 1ms".into());
        }
        if self.max_wait >= self.deadline {
            problem(
                "max_wait",
                format!("must be shorter than the deadline ({:?})", self.deadline),
            );
        }
        for (field, text) in self.breaker.problems() {
            problem(&format!("breaker.{field}"), text);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ModelSpecErrors { problems })
        }
    }

    /// The scorer's settings.
    pub fn scorer_options(&self) -> ScorerOptions {
        ScorerOptions {
            max_batch: self.max_batch,
            max_wait: self.max_wait,
            max_concurrent_calls: self.max_concurrent_calls,
            timeout: self.timeout,
            deadline: self.deadline,
            cache_ttl: self.cache_ttl,
            cache_capacity: self.cache_capacity,
            breaker: self.breaker.clone(),
        }
    }

    /// The input names in order.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs.iter().map(|i| i.name.clone()).collect()
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks every table of `[[models]]` and that names are unique; paths start `models[i].`.
pub fn validate_models(models: &[ModelSpec]) -> Result<(), ModelSpecErrors> {
    let mut problems = Vec::new();
    for (i, model) in models.iter().enumerate() {
        if let Err(errors) = model.validate() {
            problems.extend(
                errors
                    .problems
                    .into_iter()
                    .map(|(path, text)| (format!("models[{i}].{path}"), text)),
            );
        }
        if models[..i].iter().any(|m| m.name == model.name) {
            problems.push((
                format!("models[{i}].name"),
                format!("`{}` is used by another model", model.name),
            ));
        }
        if let Some(live) = &model.shadow_of {
            let path = format!("models[{i}].shadow_of");
            match models.iter().find(|m| &m.name == live) {
                None => problems.push((path, format!("no model is named `{live}`"))),
                Some(live) if live.name == model.name => {
                    problems.push((path, "a model cannot shadow itself".into()))
                }
                Some(live) if live.shadow_of.is_some() => problems.push((
                    path,
                    format!("`{}` is itself a shadow: name the live model", live.name),
                )),
                Some(live) => {
                    if live.input != model.input {
                        problems.push((
                            format!("models[{i}].input"),
                            format!(
                                "a shadow scores its live model's inputs: `{}`, as `{}` does",
                                live.input, live.name
                            ),
                        ));
                    }
                    if live.outputs != model.outputs {
                        problems.push((
                            format!("models[{i}].outputs"),
                            format!(
                                "a shadow answers its live model's outputs: [{}], as `{}` does",
                                live.outputs.join(", "),
                                live.name
                            ),
                        ));
                    }
                    if live.output.domain() == model.output.domain() {
                        problems.push((
                            format!("models[{i}].output"),
                            format!(
                                "a shadow publishes into its own stream, not `{}` where `{}`'s \
                                 predictions go (try `{}_shadow.{}`)",
                                live.output.domain(),
                                live.name,
                                live.output.domain(),
                                live.output.fact()
                            ),
                        ));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ModelSpecErrors { problems })
    }
}
