//! A model a test can make slow or failing: a fixed logistic function of the row's sum,
//! wrapped with a switch.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use runnel_inference::{Model, ModelError, ModelInfo};

/// How the model behaves now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    /// Answers after this long.
    Slow(Duration),
    /// Fails every call.
    Failing,
}

#[derive(Debug)]
pub struct FlakyModel {
    info: ModelInfo,
    mode: Mutex<Mode>,
    pub calls: AtomicUsize,
    pub rows: AtomicUsize,
    pub largest_batch: AtomicUsize,
}

impl FlakyModel {
    pub fn new(name: &str, version: &str, inputs: usize) -> Arc<Self> {
        Arc::new(Self {
            info: ModelInfo {
                name: name.into(),
                version: version.into(),
                inputs,
                outputs: vec!["legit".into(), "fraud".into()],
            },
            mode: Mutex::new(Mode::Healthy),
            calls: AtomicUsize::new(0),
            rows: AtomicUsize::new(0),
            largest_batch: AtomicUsize::new(0),
        })
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// What the healthy model answers for a row.
    pub fn expected(row: &[f64]) -> Vec<f64> {
        let p = 1.0 / (1.0 + (-(row.iter().sum::<f64>() / 100.0 - 3.0)).exp());
        vec![1.0 - p, p]
    }
}

#[async_trait]
impl Model for FlakyModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    async fn predict(&self, rows: Vec<Vec<f64>>) -> Result<Vec<Vec<f64>>, ModelError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.rows.fetch_add(rows.len(), Ordering::SeqCst);
        self.largest_batch.fetch_max(rows.len(), Ordering::SeqCst);
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Healthy => {}
            Mode::Slow(delay) => tokio::time::sleep(delay).await,
            Mode::Failing => {
                return Err(ModelError::Inference {
                    model: self.info.name.clone(),
                    reason: "the test made it fail".into(),
                });
            }
        }
        Ok(rows.iter().map(|r| Self::expected(r)).collect())
    }
}
