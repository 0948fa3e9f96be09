//! A model on a model server, over the Open Inference Protocol's REST API (KServe V2), as
//! MLServer, Triton and KServe serve it.
//!
//! [`RemoteModel::connect`] reads the model's metadata (`GET /v2/models/{name}`) so a wrong
//! URL or name is refused at start, not at the first event; each call is one
//! `POST /v2/models/{name}[/versions/{v}]/infer` with the batch as one `[N, inputs]` FP64
//! tensor, asking for the configured output (MLServer's scikit-learn runtime:
//! `predict_proba`). The call has no timeout of its own: the batcher bounds it (`timeout`)
//! and drops it, which closes the request.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Model, ModelError, ModelInfo, check_answer, check_rows};

/// Where and what to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOptions {
    /// The model's name in Runnel.
    pub name: String,
    /// The server's base URL (`http://127.0.0.1:8080`).
    pub url: String,
    /// The model's name on the server.
    pub model: String,
    /// The version to call; `None`: the server's default, named by its answers.
    pub version: Option<String>,
    /// Numbers per input row.
    pub inputs: usize,
    /// The input tensor's name.
    pub input_name: String,
    /// The output tensor to ask for (`predict_proba`).
    pub output: String,
    /// Names of that output's columns.
    pub outputs: Vec<String>,
    /// How long connecting and reading the metadata may take.
    pub connect_timeout: Duration,
}

/// A model served over the Open Inference Protocol.
#[derive(Debug)]
pub struct RemoteModel {
    info: ModelInfo,
    client: reqwest::Client,
    infer_url: String,
    input_name: String,
    output: String,
}

#[derive(Serialize)]
struct InferRequest<'a> {
    inputs: [RequestTensor<'a>; 1],
    outputs: [RequestOutput<'a>; 1],
}

#[derive(Serialize)]
struct RequestTensor<'a> {
    name: &'a str,
    shape: [usize; 2],
    datatype: &'static str,
    data: Vec<f64>,
}

#[derive(Serialize)]
struct RequestOutput<'a> {
    name: &'a str,
}

#[derive(Deserialize)]
struct InferResponse {
    #[serde(default)]
    model_version: Option<String>,
    outputs: Vec<ResponseTensor>,
}

#[derive(Deserialize)]
struct ResponseTensor {
    name: String,
    shape: Vec<usize>,
    data: Value,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    versions: Vec<String>,
}

impl RemoteModel {
    /// Checks that the server serves the model, and builds the client.
    pub async fn connect(options: RemoteOptions) -> Result<Self, ModelError> {
        let base = options.url.trim_end_matches('/').to_string();
        let load = |reason: String| ModelError::Load {
            model: options.name.clone(),
            reason,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .build()
            .map_err(|e| load(format!("HTTP client: {e}")))?;
        let model_path = format!("{base}/v2/models/{}", options.model);
        let versioned = match &options.version {
            Some(version) => format!("{model_path}/versions/{version}"),
            None => model_path.clone(),
        };
        let response = client
            .get(&versioned)
            .timeout(options.connect_timeout)
            .send()
            .await
            .map_err(|e| load(format!("GET {versioned}: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| load(format!("GET {versioned}: {e}")))?;
        if !status.is_success() {
            return Err(load(format!(
                "GET {versioned} answered {status}: {}",
                snippet(&body)
            )));
        }
        let metadata: Metadata = serde_json::from_slice(&body)
            .map_err(|e| load(format!("GET {versioned}: not model metadata: {e}")))?;
        let version = options
            .version
            .clone()
            .or_else(|| metadata.versions.first().cloned())
            .unwrap_or_else(|| "unversioned".to_string());
        let mut model = Self {
            info: ModelInfo {
                name: options.name.clone(),
                version,
                inputs: options.inputs,
                outputs: options.outputs,
            },
            client,
            infer_url: format!("{versioned}/infer"),
            input_name: options.input_name,
            output: options.output,
        };
        // A row of zeros checks the input width and the output's shape now, and names the
        // version the server answers with when its metadata lists none.
        let probe = tokio::time::timeout(
            options.connect_timeout,
            model.infer(vec![vec![0.0; options.inputs]]),
        )
        .await
        .map_err(|_| {
            load(format!(
                "POST {}: no answer within {:?}",
                model.infer_url, options.connect_timeout
            ))
        })?
        .map_err(|e| load(format!("scoring a row of zeros: {e}")))?;
        if options.version.is_none()
            && metadata.versions.is_empty()
            && let Some(version) = probe.1.filter(|v| !v.is_empty())
        {
            model.info.version = version;
        }
        Ok(model)
    }

    /// The URL each call posts to.
    pub fn infer_url(&self) -> &str {
        &self.infer_url
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

/// Row-major numbers of a tensor's `data`, flat or nested.
fn flatten(value: &Value, out: &mut Vec<f64>) -> Result<(), String> {
    match value {
        Value::Number(n) => out.push(n.as_f64().ok_or("a number out of range")?),
        Value::Array(items) => {
            for item in items {
                flatten(item, out)?;
            }
        }
        other => return Err(format!("a non-number in the data: {other}")),
    }
    Ok(())
}

#[async_trait]
impl Model for RemoteModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn predict(&self, rows: Vec<Vec<f64>>) -> Result<Vec<Vec<f64>>, ModelError> {
        Ok(self.infer(rows).await?.0)
    }
}

impl RemoteModel {
    /// One inference call: the outputs, and the version the server says answered.
    async fn infer(
        &self,
        rows: Vec<Vec<f64>>,
    ) -> Result<(Vec<Vec<f64>>, Option<String>), ModelError> {
        check_rows(&self.info, &rows)?;
        if rows.is_empty() {
            return Ok((Vec::new(), None));
        }
        let n = rows.len();
        let request = InferRequest {
            inputs: [RequestTensor {
                name: &self.input_name,
                shape: [n, self.info.inputs],
                datatype: "FP64",
                data: rows.into_iter().flatten().collect(),
            }],
            outputs: [RequestOutput { name: &self.output }],
        };
        let transport = |e: reqwest::Error| ModelError::Transport {
            url: self.infer_url.clone(),
            reason: e.to_string(),
        };
        let response = self
            .client
            .post(&self.infer_url)
            .json(&request)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(ModelError::Status {
                url: self.infer_url.clone(),
                status: status.as_u16(),
                body: snippet(&body),
            });
        }
        let protocol = |reason: String| ModelError::Protocol {
            model: self.info.name.clone(),
            reason,
        };
        let answer: InferResponse = serde_json::from_slice(&body)
            .map_err(|e| protocol(format!("not an inference response: {e}")))?;
        if let Some(version) = &answer.model_version
            && !version.is_empty()
            && *version != self.info.version
        {
            tracing::debug!(
                model = self.info.name.as_str(),
                version = version.as_str(),
                "answered by another version"
            );
        }
        let tensor = answer
            .outputs
            .iter()
            .find(|t| t.name == self.output)
            .ok_or_else(|| {
                protocol(format!(
                    "no output `{}` (got {})",
                    self.output,
                    answer
                        .outputs
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        let mut values = Vec::with_capacity(n * self.info.outputs.len());
        flatten(&tensor.data, &mut values).map_err(protocol)?;
        let width = match tensor.shape.as_slice() {
            [rows, width] if *rows == n => *width,
            [rows] if *rows == n => 1,
            shape => return Err(protocol(format!("output of shape {shape:?} for {n} rows"))),
        };
        if values.len() != n * width {
            return Err(protocol(format!(
                "{} numbers for shape [{n}, {width}]",
                values.len()
            )));
        }
        let outputs: Vec<Vec<f64>> = values.chunks(width.max(1)).map(<[f64]>::to_vec).collect();
        check_answer(&self.info, n, &outputs)?;
        Ok((outputs, answer.model_version))
    }
}
