//! In-process ONNX models on CPU through tract (pure Rust; cargo feature `onnx`).
//!
//! The model is loaded, typed for a batch of any size (`[N, inputs]` of f32), optimised once
//! and checked by scoring one row of zeros, so a file with the wrong width or output shape is
//! refused when it is loaded, never when an event is scored. Each call runs on tokio's
//! blocking pool: a 20-tree forest takes tens of microseconds a row, which must not stall the
//! stage's other tasks. Tree ensembles are slow in tract (see docs/inference.md for figures);
//! `RUST_BACKTRACE=1` makes them several times slower still, because tract builds error values
//! with backtraces on its hot path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use tract_onnx::prelude::*;

use crate::model::{Model, ModelError, ModelInfo, check_answer, check_rows};

type Plan = TypedRunnableModel<TypedModel>;

/// How to load an ONNX model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxOptions {
    /// The model's name.
    pub name: String,
    /// Its version; `None`: `sha-` and 16 hex digits of a hash of the file.
    pub version: Option<String>,
    /// Numbers per input row (the model's single input is `[N, inputs]` of f32).
    pub inputs: usize,
    /// The ONNX output to read (skl2onnx classifiers: `probabilities`).
    pub output: String,
    /// Names of that output's columns (a classifier's classes, in order).
    pub outputs: Vec<String>,
}

/// An ONNX model run in this process.
pub struct OnnxModel {
    info: ModelInfo,
    path: PathBuf,
    plan: Arc<Plan>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("info", &self.info)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Loads, types, optimises and checks the model at `path`. Blocking (it reads the file
    /// and compiles the graph): call it from a blocking context or at start-up.
    pub fn load(path: impl AsRef<Path>, options: OnnxOptions) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let fail = |reason: String| ModelError::Load {
            model: options.name.clone(),
            reason: format!("{}: {reason}", path.display()),
        };
        let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        let version = options
            .version
            .clone()
            .unwrap_or_else(|| format!("sha-{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)));
        let mut model = tract_onnx::onnx()
            .model_for_read(&mut bytes.as_slice())
            .map_err(|e| fail(format!("not a readable ONNX model: {e}")))?;
        let batch = model.sym("N");
        model
            .set_input_fact(
                0,
                InferenceFact::dt_shape(
                    f32::datum_type(),
                    tvec!(batch.to_dim(), options.inputs.to_dim()),
                ),
            )
            .map_err(|e| fail(format!("its input: {e}")))?;
        model
            .set_output_names([options.output.as_str()])
            .map_err(|e| fail(format!("no output `{}`: {e}", options.output)))?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| {
                fail(format!(
                    "does not take rows of {} numbers: {e:#}",
                    options.inputs
                ))
            })?;
        let loaded = Self {
            info: ModelInfo {
                name: options.name.clone(),
                version,
                inputs: options.inputs,
                outputs: options.outputs.clone(),
            },
            path: path.to_path_buf(),
            plan: Arc::new(plan),
        };
        let probe = run(&loaded.info, &loaded.plan, &[vec![0.0; options.inputs]])
            .map_err(|e| fail(format!("scoring a row of zeros: {e}")))?;
        check_answer(&loaded.info, 1, &probe).map_err(|e| fail(e.to_string()))?;
        Ok(loaded)
    }

    /// Scores rows on the calling thread (what [`Model::predict`] runs on the blocking pool).
    pub fn predict_blocking(&self, rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, ModelError> {
        check_rows(&self.info, rows)?;
        let answer = run(&self.info, &self.plan, rows)?;
        check_answer(&self.info, rows.len(), &answer)?;
        Ok(answer)
    }
}

fn run(info: &ModelInfo, plan: &Plan, rows: &[Vec<f64>]) -> Result<Vec<Vec<f64>>, ModelError> {
    let fail = |reason: String| ModelError::Inference {
        model: info.name.clone(),
        reason,
    };
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let flat: Vec<f32> = rows.iter().flatten().map(|v| *v as f32).collect();
    let input = tract_ndarray::Array2::from_shape_vec((rows.len(), info.inputs), flat)
        .map_err(|e| fail(e.to_string()))?
        .into_tensor();
    let outputs = plan
        .run(tvec!(input.into()))
        .map_err(|e| fail(format!("{e:#}")))?;
    let output = outputs
        .first()
        .ok_or_else(|| fail("no output".to_string()))?;
    let output = output
        .cast_to::<f32>()
        .map_err(|e| fail(format!("output is not numeric: {e}")))?;
    let view = output
        .to_array_view::<f32>()
        .map_err(|e| fail(e.to_string()))?;
    let shape = view.shape().to_vec();
    let width = match shape.as_slice() {
        [n, width] if *n == rows.len() => *width,
        [n] if *n == rows.len() => 1,
        _ => {
            return Err(ModelError::Protocol {
                model: info.name.clone(),
                reason: format!("output of shape {shape:?} for {} rows", rows.len()),
            });
        }
    };
    let values: Vec<f64> = view.iter().map(|v| f64::from(*v)).collect();
    Ok(values.chunks(width).map(<[f64]>::to_vec).collect())
}

#[async_trait]
impl Model for OnnxModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn predict(&self, rows: Vec<Vec<f64>>) -> Result<Vec<Vec<f64>>, ModelError> {
        check_rows(&self.info, &rows)?;
        let info = self.info.clone();
        let plan = self.plan.clone();
        let name = info.name.clone();
        let answer =
            tokio::task::spawn_blocking(move || run(&info, &plan, &rows).map(|a| (a, rows.len())))
                .await
                .map_err(|e| ModelError::Inference {
                    model: name,
                    reason: format!("the scoring task failed: {e}"),
                })??;
        check_answer(&self.info, answer.1, &answer.0)?;
        Ok(answer.0)
    }
}
