//! Live against shadow: how far a candidate model's predictions are from the serving one's,
//! on the same inputs.
//!
//! A shadow (`shadow_of = "<live>"` in its `[[models]]` table) scores every input the live
//! model scores and publishes into its own stream, so nothing downstream acts on it. This
//! module joins the two models' recent predictions by their input (source and id, the latest
//! revision of each) and reports what an ML engineer checks before promoting a candidate:
//! how often both pick the same top output, and the distribution of each output's score
//! delta (shadow − live). Only pairs that both models answered themselves are compared: a
//! prediction from the cache or the fallback is not the model's opinion; those pairs are
//! counted apart.

use std::collections::{BTreeSet, HashMap};

use runnel_backend::StreamName;
use runnel_runtime::{Runnel, RuntimeError};
use serde::Serialize;
use serde_json::Value;

use crate::spec::ModelSpec;

/// One side's predictions as read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SideSummary {
    /// The model's name.
    pub model: String,
    /// The prediction events' type.
    pub output: String,
    /// Predictions read (the latest revision per input).
    pub predictions: usize,
    /// The versions seen, sorted.
    pub versions: Vec<String>,
}

/// The spread of one output's score delta (shadow − live) over the compared pairs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutputDelta {
    /// The output's name.
    pub output: String,
    /// Mean of shadow − live.
    pub mean: f64,
    /// Mean of |shadow − live|.
    pub mean_abs: f64,
    /// Median of |shadow − live|.
    pub p50_abs: f64,
    /// 99th percentile of |shadow − live|.
    pub p99_abs: f64,
    /// Largest |shadow − live|.
    pub max_abs: f64,
}

/// Live against shadow over the inputs both scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The serving model.
    pub live: SideSummary,
    /// The candidate.
    pub shadow: SideSummary,
    /// Inputs both models answered themselves: what the figures below are over.
    pub compared: usize,
    /// Inputs both scored where at least one answer came from the cache or the fallback.
    pub degraded: usize,
    /// Inputs only the live model's predictions read cover (the shadow is behind, or it
    /// started later).
    pub live_only: usize,
    /// Inputs only the shadow's predictions read cover.
    pub shadow_only: usize,
    /// Share of compared inputs where both models' highest output is the same one (`null`
    /// with nothing compared).
    pub agreement: Option<f64>,
    /// Per output, in the models' order.
    pub deltas: Vec<OutputDelta>,
}

/// One prediction's data as the stage publishes it.
struct Scored {
    revision: u64,
    by_model: bool,
    version: String,
    outputs: Vec<f64>,
}

/// The latest revision of each input's prediction of `model`, keyed by (source, id).
fn latest_by_input(model: &str, outputs: &[String], data: &[Value]) -> HashMap<String, Scored> {
    let mut latest: HashMap<String, Scored> = HashMap::new();
    for prediction in data {
        if prediction["model"].as_str() != Some(model) {
            continue;
        }
        let (Some(source), Some(id)) = (
            prediction["input"]["source"].as_str(),
            prediction["input"]["id"].as_str(),
        ) else {
            continue;
        };
        let Some(values) = outputs
            .iter()
            .map(|name| prediction["outputs"][name].as_f64())
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        let scored = Scored {
            revision: prediction["revision"].as_u64().unwrap_or(1),
            by_model: prediction["served_by"].as_str() == Some("model"),
            version: prediction["version"].as_str().unwrap_or("").to_string(),
            outputs: values,
        };
        // The source and id joined by a byte neither may hold.
        let input = format!("{source}\u{0}{id}");
        match latest.get(&input) {
            Some(seen) if seen.revision >= scored.revision => {}
            _ => {
                latest.insert(input, scored);
            }
        }
    }
    latest
}

fn summary(spec: &ModelSpec, latest: &HashMap<String, Scored>) -> SideSummary {
    let versions: BTreeSet<&str> = latest.values().map(|s| s.version.as_str()).collect();
    SideSummary {
        model: spec.name.clone(),
        output: spec.output.as_str().to_string(),
        predictions: latest.len(),
        versions: versions.into_iter().map(str::to_string).collect(),
    }
}

/// The index of the highest value (the first of equals).
fn top(values: &[f64]) -> Option<usize> {
    values
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (i, v)| match best {
            Some((_, b)) if b >= *v => best,
            _ => Some((i, *v)),
        })
        .map(|(i, _)| i)
}

/// The `q` quantile (0..=1) of sorted values, by the nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Compares predictions already read: `live` and `shadow` are the `data` of each model's
/// prediction events (any order, other models' and undecodable ones skipped).
pub fn compare_predictions(
    live_spec: &ModelSpec,
    shadow_spec: &ModelSpec,
    live: &[Value],
    shadow: &[Value],
) -> Comparison {
    let outputs = &live_spec.outputs;
    let live = latest_by_input(&live_spec.name, outputs, live);
    let shadow = latest_by_input(&shadow_spec.name, outputs, shadow);
    let mut compared = 0;
    let mut degraded = 0;
    let mut agreeing = 0;
    let mut deltas: Vec<Vec<f64>> = vec![Vec::new(); outputs.len()];
    for (input, l) in &live {
        let Some(s) = shadow.get(input) else { continue };
        if !(l.by_model && s.by_model) {
            degraded += 1;
            continue;
        }
        compared += 1;
        if top(&l.outputs) == top(&s.outputs) {
            agreeing += 1;
        }
        for (i, (a, b)) in l.outputs.iter().zip(&s.outputs).enumerate() {
            deltas[i].push(b - a);
        }
    }
    let both = compared + degraded;
    let deltas = outputs
        .iter()
        .zip(deltas)
        .map(|(output, signed)| {
            let n = signed.len().max(1) as f64;
            let mut abs: Vec<f64> = signed.iter().map(|d| d.abs()).collect();
            abs.sort_by(f64::total_cmp);
            OutputDelta {
                output: output.clone(),
                mean: signed.iter().sum::<f64>() / n,
                mean_abs: abs.iter().sum::<f64>() / n,
                p50_abs: quantile(&abs, 0.5),
                p99_abs: quantile(&abs, 0.99),
                max_abs: abs.last().copied().unwrap_or(0.0),
            }
        })
        .collect();
    Comparison {
        live: summary(live_spec, &live),
        shadow: summary(shadow_spec, &shadow),
        compared,
        degraded,
        live_only: live.len() - both,
        shadow_only: shadow.len() - both,
        agreement: (compared > 0).then(|| agreeing as f64 / compared as f64),
        deltas,
    }
}

/// Why a comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// `shadow` is not a shadow of `live`.
    #[error("model `{shadow}` is not a shadow of `{live}` (its `shadow_of` must name it)")]
    NotAShadow {
        /// The live model.
        live: String,
        /// The model asked for as its shadow.
        shadow: String,
    },
    /// A prediction stream could not be read.
    #[error("reading the predictions of `{model}`: {source}")]
    Read {
        /// The model whose stream it is.
        model: String,
        /// Why.
        #[source]
        source: RuntimeError,
    },
}

/// Reads the latest `last` prediction events per partition of each model's output stream
/// and compares them ([`compare_predictions`]). A stream not created yet reads as empty.
pub async fn compare_models(
    runnel: &Runnel,
    live: &ModelSpec,
    shadow: &ModelSpec,
    last: u64,
) -> Result<Comparison, CompareError> {
    if shadow.shadow_of.as_deref() != Some(live.name.as_str()) {
        return Err(CompareError::NotAShadow {
            live: live.name.clone(),
            shadow: shadow.name.clone(),
        });
    }
    let read = |spec: &ModelSpec| {
        let spec = spec.clone();
        async move {
            let stream = StreamName::new(spec.output.domain()).map_err(|e| CompareError::Read {
                model: spec.name.clone(),
                source: RuntimeError::Name(e),
            })?;
            let events = runnel
                .recent_events(&stream, last)
                .await
                .map_err(|source| CompareError::Read {
                    model: spec.name.clone(),
                    source,
                })?;
            Ok::<_, CompareError>(
                events
                    .into_iter()
                    .filter(|e| e.event_type() == &spec.output)
                    .filter_map(|e| e.data().as_json().cloned())
                    .collect::<Vec<Value>>(),
            )
        }
    };
    let (live_data, shadow_data) = tokio::try_join!(read(live), read(shadow))?;
    Ok(compare_predictions(live, shadow, &live_data, &shadow_data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(name: &str, output: &str, shadow_of: Option<&str>) -> ModelSpec {
        let mut spec: ModelSpec = toml::from_str(&format!(
            r#"
name = "{name}"
input = "order.placed"
output = "{output}"
outputs = ["legit", "fraud"]
inputs = [{{ name = "amount", pointer = "/amount" }}]
fallback = {{ legit = "0.9", fraud = "0.1" }}
"#
        ))
        .expect("a spec");
        spec.shadow_of = shadow_of.map(str::to_string);
        spec
    }

    fn prediction(model: &str, id: &str, fraud: f64, served_by: &str, revision: u64) -> Value {
        json!({
            "model": model, "version": format!("{model}-v1"), "served_by": served_by,
            "revision": revision, "outputs": {"legit": 1.0 - fraud, "fraud": fraud},
            "input": {"source": "test://shop", "id": id, "type": "order.placed"},
        })
    }

    #[test]
    fn pairs_by_input_agreement_and_deltas() {
        let live = spec("fraud", "fraud.scored", None);
        let shadow = spec("fraud_v2", "fraud_shadow.scored", Some("fraud"));
        let live_data = vec![
            prediction("fraud", "a", 0.1, "model", 1),
            prediction("fraud", "b", 0.6, "model", 1),
            prediction("fraud", "c", 0.2, "model", 1),
            // Degraded at first, rescored by the model: the revision counts.
            prediction("fraud", "d", 0.5, "fallback", 1),
            prediction("fraud", "d", 0.3, "model", 2),
            // Degraded and never rescored: not the model's opinion.
            prediction("fraud", "e", 0.5, "cache", 1),
            prediction("fraud", "only-live", 0.1, "model", 1),
            prediction("another", "a", 0.9, "model", 1),
        ];
        let shadow_data = vec![
            prediction("fraud_v2", "a", 0.2, "model", 1),
            prediction("fraud_v2", "b", 0.4, "model", 1),
            prediction("fraud_v2", "c", 0.2, "model", 1),
            prediction("fraud_v2", "d", 0.1, "model", 1),
            prediction("fraud_v2", "e", 0.5, "model", 1),
            prediction("fraud_v2", "only-shadow", 0.1, "model", 1),
        ];
        let report = compare_predictions(&live, &shadow, &live_data, &shadow_data);
        assert_eq!(report.compared, 4, "a, b, c and d: {report:?}");
        assert_eq!(report.degraded, 1);
        assert_eq!((report.live_only, report.shadow_only), (1, 1));
        assert_eq!(report.live.predictions, 6);
        assert_eq!(report.shadow.versions, ["fraud_v2-v1"]);
        // b flips from fraud (0.6) to legit (0.4); a, c and d agree.
        assert_eq!(report.agreement, Some(0.75));
        let fraud = &report.deltas[1];
        assert_eq!(fraud.output, "fraud");
        // Deltas: a +0.1, b −0.2, c 0, d −0.2.
        assert!((fraud.mean - (-0.075)).abs() < 1e-12, "{fraud:?}");
        assert!((fraud.mean_abs - 0.125).abs() < 1e-12, "{fraud:?}");
        assert!((fraud.max_abs - 0.2).abs() < 1e-12, "{fraud:?}");
        assert!((fraud.p50_abs - 0.1).abs() < 1e-12, "{fraud:?}");
    }

    #[test]
    fn nothing_compared_has_no_agreement() {
        let live = spec("fraud", "fraud.scored", None);
        let shadow = spec("fraud_v2", "fraud_shadow.scored", Some("fraud"));
        let report = compare_predictions(&live, &shadow, &[], &[]);
        assert_eq!(report.compared, 0);
        assert_eq!(report.agreement, None);
        assert_eq!(report.deltas[0].max_abs, 0.0);
    }
}
