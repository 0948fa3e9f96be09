//! Helpers shared by the tests: the shipped model's files and test set.

#![allow(dead_code)]

use std::path::PathBuf;

/// `models/` at the workspace root.
pub fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

/// A row of `models/fraud_testset.csv`.
#[derive(Debug, Clone)]
pub struct TestRow {
    pub inputs: Vec<f64>,
    pub label: i64,
    pub p_lr: f64,
    pub p_rf: f64,
}

/// The model's input names, in order (`models/fraud_model.json`).
pub fn input_names() -> Vec<String> {
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(models_dir().join("fraud_model.json")).expect("models/fraud_model.json"),
    )
    .expect("JSON");
    meta["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|v| v.as_str().expect("a name").to_string())
        .collect()
}

/// The test set the training script wrote.
pub fn test_set() -> Vec<TestRow> {
    let text = std::fs::read_to_string(models_dir().join("fraud_testset.csv"))
        .expect("models/fraud_testset.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let names = input_names();
    assert_eq!(&header[..names.len()], names.as_slice());
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            let number = |i: usize| cells[i].parse::<f64>().expect("a number");
            let n = names.len();
            TestRow {
                inputs: (0..n).map(number).collect(),
                label: cells[n].parse().expect("a label"),
                p_lr: number(n + 1),
                p_rf: number(n + 2),
            }
        })
        .collect()
}

#[cfg(feature = "onnx")]
pub fn fraud_onnx_options(file: &str) -> runnel_inference::OnnxOptions {
    runnel_inference::OnnxOptions {
        name: "fraud".into(),
        version: Some(file.trim_end_matches(".onnx").to_string()),
        inputs: input_names().len(),
        output: "probabilities".into(),
        outputs: vec!["legit".into(), "fraud".into()],
    }
}

pub mod backends;
pub mod flaky;
