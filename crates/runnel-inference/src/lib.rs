//! Runnel's inference stage: events (joined with their entity's features) in, prediction
//! events out, degrading instead of failing.
//!
//! Model runtimes stay out of the core: this crate sits above the runtime, like the feature
//! stage. A model runs in this process (ONNX through tract, cargo feature `onnx`) or on a
//! model server (Open Inference Protocol, [`RemoteModel`]), both behind the [`Model`] trait.
//!
//! Modules, one concern each:
//! - `model`: the trait, what a model is, and the slot a hot reload swaps.
//! - `onnx`, `remote`: the two ways to run a model.
//! - `breaker`: a circuit breaker per model (resilience4j's states and thresholds), pure.
//! - `cache`, `fallback`: the degradation ladder's two steps below the model.
//! - `compare`: a shadow's predictions against its live model's.
//! - `inputs`: an event's input row from the feature store and its data.
//! - `spec`: the `[[models]]` table, validated with errors naming the field.
//! - `rescore`: predictions the ladder answered, scored again once the model answers.
//! - `stage`, `load`: the stage over a consumer group, and the model a spec names.
//! - `scorer`: a model behind its dynamic batcher, breaker and ladder, answering every
//!   request within its deadline.
//!
//! Semantics and configuration: `docs/inference.md`.

#![warn(missing_docs)]

mod breaker;
mod cache;
mod compare;
mod fallback;
mod inputs;
mod load;
mod model;
#[cfg(feature = "onnx")]
mod onnx;
mod remote;
mod rescore;
mod scorer;
mod spec;
mod stage;

pub use breaker::{BreakerConfig, BreakerState, CallOutcome, CircuitBreaker, Permit, Transition};
pub use cache::{Cached, PredictionCache};
pub use compare::{
    CompareError, Comparison, OutputDelta, SideSummary, compare_models, compare_predictions,
};
pub use fallback::{FallbackError, FallbackRule};
pub use inputs::{Assembled, InputAssembler, InputError, InputSpec};
pub use load::load_model;
pub use model::{Model, ModelError, ModelInfo, ModelSlot, SwapError};
#[cfg(feature = "onnx")]
pub use onnx::{OnnxModel, OnnxOptions};
pub use remote::{RemoteModel, RemoteOptions};
pub use rescore::{RESCORE_BUCKET, RESCORE_EVERY, waiting_count};
pub use scorer::{
    DegradedReason, Prediction, ScoreError, Scorer, ScorerCounts, ScorerOptions, Source,
};
pub use spec::{
    MAX_MODEL_NAME_LEN, ModelSpec, ModelSpecErrors, OnnxSpec, RemoteSpec, validate_models,
};
pub use stage::{InferenceHandle, InferenceStage, StageError, StageOptions, group_name};
