//! The one trait every way of running a model implements, so the stage, the batcher and the
//! degradation ladder never know whether a model runs in this process (ONNX through tract) or
//! on a model server (Open Inference Protocol).
//!
//! A model takes rows of numbers in its declared input order and answers one row of numbers
//! per input row, named by [`ModelInfo::outputs`] (for a classifier, the probability of each
//! class). A call takes a whole batch: the batcher gathers rows so that a model server sees
//! one request, and tract one tensor, for many events.

use std::fmt;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

/// What a model is: its name and version (both on every prediction), and its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model's name (`[[models]].name`).
    pub name: String,
    /// Its version: given by configuration, or reported by the model server.
    pub version: String,
    /// How many numbers each input row has.
    pub inputs: usize,
    /// The names of the numbers of each output row, in order.
    pub outputs: Vec<String>,
}

/// Why a model call failed. Every failure is answered by the degradation ladder; the kind is
/// the reason given on the degraded prediction.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    /// The model file or server could not be loaded, or does not have the declared shape.
    #[error("model `{model}` could not be loaded: {reason}")]
    Load {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// A row had the wrong number of inputs.
    #[error("model `{model}` takes {expected} inputs per row, got {got}")]
    InputWidth {
        /// The model.
        model: String,
        /// Inputs per row the model takes.
        expected: usize,
        /// Inputs in the row given.
        got: usize,
    },
    /// The runtime failed while computing.
    #[error("model `{model}` failed: {reason}")]
    Inference {
        /// The model.
        model: String,
        /// Why.
        reason: String,
    },
    /// The model server could not be reached or did not answer in full.
    #[error("model server {url}: {reason}")]
    Transport {
        /// The request's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The model server answered with an error status.
    #[error("model server {url} answered {status}: {body}")]
    Status {
        /// The request's URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// The answer is not what the protocol or the declared shape promised.
    #[error("model `{model}` answered something unexpected: {reason}")]
    Protocol {
        /// The model.
        model: String,
        /// What is wrong.
        reason: String,
    },
}

/// A way of running a model. Implementations must answer exactly one output row of
/// `info().outputs.len()` numbers per input row, in order, or fail the whole call.
#[async_trait]
pub trait Model: Send + Sync + fmt::Debug {
    /// Name, version and shape.
    fn info(&self) -> &ModelInfo;

    /// Scores a batch of rows.
    async fn predict(&self, rows: Vec<Vec<f64>>) -> Result<Vec<Vec<f64>>, ModelError>;
}

/// Checks an answer's shape against the rows asked for.
pub(crate) fn check_answer(
    info: &ModelInfo,
    asked: usize,
    answer: &[Vec<f64>],
) -> Result<(), ModelError> {
    if answer.len() != asked {
        return Err(ModelError::Protocol {
            model: info.name.clone(),
            reason: format!("{} output rows for {asked} input rows", answer.len()),
        });
    }
    if let Some(row) = answer.iter().find(|r| r.len() != info.outputs.len()) {
        return Err(ModelError::Protocol {
            model: info.name.clone(),
            reason: format!(
                "an output row of {} numbers, {} declared ({})",
                row.len(),
                info.outputs.len(),
                info.outputs.join(", ")
            ),
        });
    }
    Ok(())
}

/// Checks every row's width against the model's inputs.
pub(crate) fn check_rows(info: &ModelInfo, rows: &[Vec<f64>]) -> Result<(), ModelError> {
    match rows.iter().find(|r| r.len() != info.inputs) {
        Some(row) => Err(ModelError::InputWidth {
            model: info.name.clone(),
            expected: info.inputs,
            got: row.len(),
        }),
        None => Ok(()),
    }
}

/// The model a scorer calls now, swapped atomically by a hot reload: a call reads the current
/// model once, so every batch is scored wholly by one version and there is never a moment
/// without a model.
#[derive(Debug, Clone)]
pub struct ModelSlot {
    current: Arc<RwLock<Arc<dyn Model>>>,
}

/// Why a new model version was refused by [`ModelSlot::swap`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("model `{model}`: version `{version}` cannot replace `{current}`: {reason}")]
pub struct SwapError {
    /// The model.
    pub model: String,
    /// The version refused.
    pub version: String,
    /// The version serving.
    pub current: String,
    /// What differs.
    pub reason: String,
}

impl ModelSlot {
    /// A slot serving `model`.
    pub fn new(model: Arc<dyn Model>) -> Self {
        Self {
            current: Arc::new(RwLock::new(model)),
        }
    }

    /// The model serving now.
    pub fn current(&self) -> Arc<dyn Model> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `next` in place of the serving model if it takes the same inputs and answers the
    /// same outputs; returns the model it replaced. Batches already sent finish on the old
    /// version; every later batch goes to the new one.
    pub fn swap(&self, next: Arc<dyn Model>) -> Result<Arc<dyn Model>, SwapError> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let (old, new) = (current.info(), next.info());
        let reason = if old.name != new.name {
            Some(format!("it is model `{}`", new.name))
        } else if old.inputs != new.inputs {
            Some(format!(
                "it takes {} inputs, not {}",
                new.inputs, old.inputs
            ))
        } else if old.outputs != new.outputs {
            Some(format!(
                "it answers [{}], not [{}]",
                new.outputs.join(", "),
                old.outputs.join(", ")
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(SwapError {
                model: old.name.clone(),
                version: new.version.clone(),
                current: old.version.clone(),
                reason,
            });
        }
        Ok(std::mem::replace(&mut *current, next))
    }
}
