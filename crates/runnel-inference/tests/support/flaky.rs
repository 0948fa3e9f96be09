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
    /// Added to the fraud probability (clamped to 0..=1): a candidate that differs.
    shift: f64,
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
            shift: 0.0,
            calls: AtomicUsize::new(0),
            rows: AtomicUsize::new(0),
            largest_batch: AtomicUsize::new(0),
        })
    }

    /// A model answering [`Self::shifted_answer`] with `shift`.
    pub fn shifted(name: &str, version: &str, inputs: usize, shift: f64) -> Arc<Self> {
        let mut model = Arc::into_inner(Self::new(name, version, inputs)).expect("one owner");
        model.shift = shift;
        Arc::new(model)
    }

    /// What a shifted model answers for a row.
    pub fn shifted_answer(row: &[f64], shift: f64) -> Vec<f64> {
        let p = (Self::expected(row)[1] + shift).clamp(0.0, 1.0);
        vec![1.0 - p, p]
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
        if self.shift != 0.0 {
            return Ok(rows
                .iter()
                .map(|r| Self::shifted_answer(r, self.shift))
                .collect());
        }
        Ok(rows.iter().map(|r| Self::expected(r)).collect())
    }
}
