//! The demo's fraud model: the shipped logistic regression, in this process through tract,
//! behind a switch that makes every call slow while it is on (the demo turns it on midway for
//! a few seconds, so the breaker opens and the ladder answers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use runnel_inference::{
    InferenceHandle, InferenceStage, Model, ModelError, ModelInfo, ModelSpec, OnnxModel,
    OnnxOptions, StageOptions,
};
use runnel_server::App;

use super::shop::{FRAUD_MODEL_ONNX, MODEL_TOML};

/// How long a call takes while the model is slow: far beyond the model's `timeout`.
const SLOW_CALL: Duration = Duration::from_secs(5);

/// A model that answers like `inner`, but only after [`SLOW_CALL`] while `slow` is on.
#[derive(Debug)]
pub struct SwitchableSlowModel {
    inner: Arc<dyn Model>,
    slow: Arc<AtomicBool>,
}

#[async_trait]
impl Model for SwitchableSlowModel {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    async fn predict(&self, rows: Vec<Vec<f64>>) -> Result<Vec<Vec<f64>>, ModelError> {
        if self.slow.load(Ordering::Acquire) {
            tokio::time::sleep(SLOW_CALL).await;
        }
        self.inner.predict(rows).await
    }
}

/// The fraud model's stage and the switch that slows it.
pub struct Fraud {
    pub stage: InferenceHandle,
    pub slow: Arc<AtomicBool>,
    pub spec: ModelSpec,
}

/// Loads the shipped model (written from the binary into `dir`) and starts its stage over the
/// server's runtime, reading features from the server's feature store.
pub async fn start(app: &App, dir: &std::path::Path) -> anyhow::Result<Fraud> {
    let spec: ModelSpec = toml::from_str(MODEL_TOML).context("the demo's model table")?;
    let path = dir.join("fraud_lr.onnx");
    std::fs::write(&path, FRAUD_MODEL_ONNX)
        .with_context(|| format!("writing the model to {}", path.display()))?;
    let options = OnnxOptions {
        name: spec.name.clone(),
        version: spec.version.clone(),
        inputs: spec.inputs.len(),
        output: "probabilities".into(),
        outputs: spec.outputs.clone(),
    };
    let onnx = tokio::task::spawn_blocking(move || OnnxModel::load(&path, options))
        .await
        .context("the model loading task")??;
    let slow = Arc::new(AtomicBool::new(false));
    let model = Arc::new(SwitchableSlowModel {
        inner: Arc::new(onnx),
        slow: slow.clone(),
    });
    let options = StageOptions {
        instance_id: app.instance_id().map(str::to_string),
        group: None,
        store: Some(app.features().store().clone()),
    };
    let stage = InferenceStage::start_with_model(app.runnel(), spec.clone(), model, options)
        .await
        .context("starting the fraud model's stage")?;
    Ok(Fraud { stage, slow, spec })
}
