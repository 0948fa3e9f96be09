//! The inference stage: a consumer group that turns each input event into one prediction
//! event, degrading instead of failing.
//!
//! [`InferenceStage::start`] joins the group `inference-<name>` subscribed to the spec's
//! `input` pattern and runs a handler per delivery (up to the group's `max_in_flight` at
//! once, in order per key, concurrently across keys: that concurrency is what fills the
//! batcher). Per event:
//! 1. its inputs are assembled (feature store and data); a missing required input or a
//!    non-number is a **permanent** failure naming it (dead-lettered), a feature store that
//!    cannot be read a **service** failure (retried with backoff);
//! 2. the [`Scorer`] answers within the deadline: the model, or the cache, or the fallback;
//! 3. the prediction is returned as the handler's output, built with `Message::reply`
//!    (correlation id inherited, causation id = the input's id, a child trace context, the
//!    input's partition key) and published with an id derived from (group, input source,
//!    input id, index 0): the prediction's revision 1. A redelivery republishes the same id,
//!    which publish deduplication absorbs;
//! 4. with `rescore_degraded`, an input answered degraded is recorded (durably, before its
//!    prediction is published) for the re-scoring task, which publishes revision 2 once the
//!    model answers again (see `rescore`).
//!
//! A slow or failing model never fails an event: the ladder always answers. Circuit breaker
//! transitions are published as `model.circuit_opened`, `model.circuit_half_opened` and
//! `model.circuit_closed` events (source `runnel://models/<name>`, key = model name).

use std::sync::Arc;

use runnel_backend::Backend;
use runnel_envelope::{Event, EventType, Source as EventSource};
use runnel_runtime::{
    ConsumerHandle, GroupConfig, HandlerError, Message, Runnel, RuntimeError, TypePattern,
};
use runnel_stages::FeatureStore;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::breaker::{BreakerState, Transition};
use crate::fallback::FallbackRule;
use crate::inputs::{InputAssembler, InputError};
use crate::model::{Model, ModelError, ModelSlot};
use crate::rescore::{self, Rescorer};
use crate::scorer::Scorer;
use crate::spec::{ModelSpec, ModelSpecErrors};

const GROUP_PREFIX: &str = "inference-";

/// The consumer group of model `name`'s stage.
pub fn group_name(name: &str) -> String {
    format!("{GROUP_PREFIX}{name}")
}

/// How a stage runs.
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// This instance's id within the group. Default: a random id.
    pub instance_id: Option<String>,
    /// Group settings (`max_in_flight`, `ack_wait`, retries, …); name and filter are the
    /// stage's. Default: the group defaults.
    pub group: Option<GroupConfig>,
    /// Where feature inputs are read. Default: [`FeatureStore::new`] over the runtime's
    /// backend.
    pub store: Option<FeatureStore>,
}

/// Why a stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The specification breaks a rule.
    #[error("model specification: {0}")]
    Spec(#[from] ModelSpecErrors),
    /// The model could not be loaded or reached.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The model does not have the declared shape.
    #[error("model `{model}`: {reason}")]
    Shape {
        /// The model.
        model: String,
        /// What differs.
        reason: String,
    },
    /// Joining the consumer group failed.
    #[error("consumer group: {0}")]
    Group(#[source] RuntimeError),
}

/// Runs models over consumer groups.
#[derive(Debug)]
pub struct InferenceStage;

impl InferenceStage {
    /// Validates `spec`, loads its model (`onnx` or `remote`) and starts the stage.
    pub async fn start(
        runnel: &Runnel,
        spec: ModelSpec,
        options: StageOptions,
    ) -> Result<InferenceHandle, StageError> {
        spec.validate()?;
        let model = crate::load::load_model(&spec).await?;
        Self::start_with_model(runnel, spec, model, options).await
    }

    /// Starts the stage with a model built by the caller (a test wrapper, a custom runner).
    pub async fn start_with_model(
        runnel: &Runnel,
        spec: ModelSpec,
        model: Arc<dyn Model>,
        options: StageOptions,
    ) -> Result<InferenceHandle, StageError> {
        spec.validate_without_runner()?;
        let info = model.info();
        let shape_error = |reason: String| StageError::Shape {
            model: spec.name.clone(),
            reason,
        };
        if info.inputs != spec.inputs.len() {
            return Err(shape_error(format!(
                "it takes {} inputs, {} are declared",
                info.inputs,
                spec.inputs.len()
            )));
        }
        if info.outputs != spec.outputs {
            return Err(shape_error(format!(
                "it answers [{}], [{}] are declared",
                info.outputs.join(", "),
                spec.outputs.join(", ")
            )));
        }
        let fallback = FallbackRule::new(&spec.input_names(), &spec.outputs, &spec.fallback)
            .map_err(|e| {
                StageError::Spec(ModelSpecErrors {
                    problems: vec![(format!("fallback.{}", e.output), e.reason)],
                })
            })?;
        let clock = runnel.config().clock.clone();
        let scorer = Scorer::start(
            ModelSlot::new(model),
            fallback,
            spec.scorer_options(),
            clock,
        );
        let store = options
            .store
            .clone()
            .unwrap_or_else(|| FeatureStore::new(runnel.backend().clone()));
        let assembler = InputAssembler::new(spec.inputs.clone(), spec.key.clone(), store);
        let group = group_name(&spec.name);
        let filter = TypePattern::new(spec.input.clone()).map_err(|e| {
            StageError::Spec(ModelSpecErrors {
                problems: vec![("input".into(), e.to_string())],
            })
        })?;
        let mut config = options
            .group
            .clone()
            .unwrap_or_else(|| GroupConfig::new(&group, filter.clone()));
        config.name = group.clone();
        config.filter = filter;
        let transitions = scorer.transitions();
        let events = tokio::spawn(publish_transitions(
            runnel.clone(),
            spec.name.clone(),
            transitions,
        ));
        let (stop_rescoring, stop_rx) = watch::channel(false);
        let rescoring = spec.rescore_degraded.then(|| {
            let rescorer = Arc::new(Rescorer {
                runnel: runnel.clone(),
                scorer: scorer.clone(),
                model: spec.name.clone(),
                group: group.clone(),
                outputs: spec.outputs.clone(),
                output_type: spec.output.as_str().to_string(),
            });
            tokio::spawn(rescorer.run(scorer.transitions(), stop_rx))
        });
        let context = Arc::new(Context {
            spec,
            scorer: scorer.clone(),
            assembler,
            backend: runnel.backend().clone(),
        });
        // A killed server is not its inputs' fault: they are scored again, never dead-lettered.
        let mut builder = runnel.group(&group).config(config).blame_no_crashes();
        if let Some(instance) = &options.instance_id {
            builder = builder.instance_id(instance.clone());
        }
        let consumer = builder
            .run(move |message: Message| {
                let context = context.clone();
                async move { context.handle(message).await }
            })
            .await
            .map_err(StageError::Group)?;
        Ok(InferenceHandle {
            consumer,
            scorer,
            events,
            rescoring: rescoring.map(|task| (task, stop_rescoring)),
        })
    }
}

struct Context {
    spec: ModelSpec,
    scorer: Scorer,
    assembler: InputAssembler,
    backend: Arc<dyn Backend>,
}

impl Context {
    async fn handle(&self, message: Message) -> Result<Vec<Event>, HandlerError> {
        let name = &self.spec.name;
        let assembled = self.assembler.assemble(&message.event).await.map_err(|e| {
            let reason = format!("model `{name}`: {e}");
            match e {
                InputError::Store(_) => HandlerError::service(reason),
                _ => HandlerError::permanent(reason),
            }
        })?;
        let prediction = self
            .scorer
            .score(assembled.key.as_deref(), assembled.row.clone())
            .await
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        let outputs: Map<String, Value> = self
            .spec
            .outputs
            .iter()
            .zip(&prediction.outputs)
            .map(|(name, value)| (name.clone(), number(*value)))
            .collect();
        let inputs: Map<String, Value> = self
            .spec
            .inputs
            .iter()
            .zip(&assembled.row)
            .map(|(input, value)| (input.name.clone(), number(*value)))
            .collect();
        let event = &message.event;
        let data = json!({
            "model": name,
            "version": prediction.version,
            "outputs": outputs,
            "served_by": prediction.source.as_str(),
            "degraded": prediction.degraded.is_some(),
            "reason": prediction.degraded.as_ref().map(|r| r.kind()),
            "reason_detail": prediction.degraded.as_ref().map(|r| r.to_string()),
            "latency_ms": prediction.latency.as_secs_f64() * 1e3,
            "revision": 1,
            "shadow_of": self.spec.shadow_of,
            "entity": assembled.key,
            "inputs": inputs,
            "input": {
                "id": event.id().as_str(),
                "source": event.source().as_str(),
                "type": event.event_type().as_str(),
            },
        });
        if self.spec.rescore_degraded && prediction.degraded.is_some() {
            // Durable before the degraded prediction is published and the input acked.
            rescore::remember(
                &*self.backend,
                name,
                &message,
                &assembled.row,
                &prediction,
                &data,
            )
            .await?;
        }
        let reply = message.reply(self.spec.output.as_str(), data)?;
        Ok(vec![reply])
    }
}

pub(crate) fn number(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// Publishes each breaker transition as an event; a failed publish is logged (the transition
/// is also counted in `runnel_model_circuit_transitions_total`).
async fn publish_transitions(
    runnel: Runnel,
    model: String,
    mut transitions: broadcast::Receiver<Transition>,
) {
    let Ok(source) = EventSource::new(format!("runnel://models/{model}")) else {
        return;
    };
    loop {
        let transition = match transitions.recv().await {
            Ok(transition) => transition,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    model = model.as_str(),
                    missed,
                    "breaker transition events were missed"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let kind = match transition.to {
            BreakerState::Open => "model.circuit_opened",
            BreakerState::HalfOpen => "model.circuit_half_opened",
            BreakerState::Closed => "model.circuit_closed",
        };
        let Ok(event_type) = EventType::new(kind) else {
            continue;
        };
        let event = Event::builder(event_type, source.clone())
            .partition_key(model.clone())
            .data_json(json!({
                "model": model,
                "from": transition.from.as_str(),
                "to": transition.to.as_str(),
                "reason": transition.reason,
                "at_micros": transition.at,
            }))
            .build();
        match event {
            Ok(event) => {
                if let Err(error) = runnel.publish(event).await {
                    tracing::warn!(model = model.as_str(), %error, "publishing a breaker transition failed");
                }
            }
            Err(error) => {
                tracing::warn!(model = model.as_str(), %error, "a breaker transition event")
            }
        }
    }
}

/// Controls a running stage.
pub struct InferenceHandle {
    consumer: ConsumerHandle,
    scorer: Scorer,
    events: JoinHandle<()>,
    /// The re-scoring task and its stop signal (`rescore_degraded`).
    rescoring: Option<(JoinHandle<()>, watch::Sender<bool>)>,
}

impl std::fmt::Debug for InferenceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceHandle")
            .field("model", &self.scorer.name())
            .finish_non_exhaustive()
    }
}

impl InferenceHandle {
    /// The model's scorer: counts, breaker state, cache, and the slot a reload swaps.
    pub fn scorer(&self) -> &Scorer {
        &self.scorer
    }

    /// The consumer group's handle (counts, leases).
    pub fn consumer(&self) -> &ConsumerHandle {
        &self.consumer
    }

    /// Swaps in a new version of the model after checking it has the same shape; events
    /// scored after this use it, none is scored twice.
    pub fn reload(&self, model: Arc<dyn Model>) -> Result<String, crate::model::SwapError> {
        let old = self.scorer.slot().swap(model)?;
        Ok(old.info().version.clone())
    }

    /// Stops: handlers running finish and settle, the group commits and leaves.
    pub async fn stop(self) -> Result<(), RuntimeError> {
        let result = self.consumer.stop().await;
        if let Some((task, stop)) = self.rescoring {
            let _ = stop.send(true);
            let _ = task.await;
        }
        self.events.abort();
        result
    }
}
