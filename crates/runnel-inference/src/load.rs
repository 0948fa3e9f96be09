//! Builds the model a `[[models]]` table names.

use std::sync::Arc;
use std::time::Duration;

use crate::model::{Model, ModelError};
use crate::remote::{RemoteModel, RemoteOptions};
use crate::spec::ModelSpec;

/// Loads (ONNX) or connects to (remote) the model of a validated `spec`, checking its shape.
pub async fn load_model(spec: &ModelSpec) -> Result<Arc<dyn Model>, ModelError> {
    if let Some(remote) = &spec.remote {
        let model = RemoteModel::connect(RemoteOptions {
            name: spec.name.clone(),
            url: remote.url.clone(),
            model: remote.model.clone().unwrap_or_else(|| spec.name.clone()),
            version: remote.version.clone().or_else(|| spec.version.clone()),
            inputs: spec.inputs.len(),
            input_name: remote.input_name.clone(),
            output: remote.output.clone(),
            outputs: spec.outputs.clone(),
            connect_timeout: Duration::from_secs(10),
        })
        .await?;
        return Ok(Arc::new(model));
    }
    load_onnx(spec).await
}

#[cfg(feature = "onnx")]
async fn load_onnx(spec: &ModelSpec) -> Result<Arc<dyn Model>, ModelError> {
    use crate::onnx::{OnnxModel, OnnxOptions};

    let Some(onnx) = spec.onnx.clone() else {
        return Err(ModelError::Load {
            model: spec.name.clone(),
            reason: "neither `onnx` nor `remote` is given".into(),
        });
    };
    let options = OnnxOptions {
        name: spec.name.clone(),
        version: spec.version.clone(),
        inputs: spec.inputs.len(),
        output: onnx.output.clone(),
        outputs: spec.outputs.clone(),
    };
    let name = spec.name.clone();
    let model = tokio::task::spawn_blocking(move || OnnxModel::load(&onnx.path, options))
        .await
        .map_err(|e| ModelError::Load {
            model: name,
            reason: format!("the loading task failed: {e}"),
        })??;
    Ok(Arc::new(model))
}

#[cfg(not(feature = "onnx"))]
async fn load_onnx(spec: &ModelSpec) -> Result<Arc<dyn Model>, ModelError> {
    Err(ModelError::Load {
        model: spec.name.clone(),
        reason: "this build has no ONNX runtime (cargo feature `onnx` of runnel-inference)".into(),
    })
}
