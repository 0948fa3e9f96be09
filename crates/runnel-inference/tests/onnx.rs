//! The shipped fraud models in process: tract's probabilities equal scikit-learn's to 1e-5 on
//! the test set `scripts/train_fraud_model.py` wrote, one row at a time and batched.

#![cfg(feature = "onnx")]

mod support;

use runnel_inference::{Model, ModelError, OnnxModel};
use support::{fraud_onnx_options, models_dir, test_set};

const TOLERANCE: f64 = 1e-5;

async fn check_model(file: &str, expected: impl Fn(&support::TestRow) -> f64) {
    let model = OnnxModel::load(models_dir().join(file), fraud_onnx_options(file)).unwrap();
    let rows = test_set();
    assert_eq!(rows.len(), 200);
    let inputs: Vec<Vec<f64>> = rows.iter().map(|r| r.inputs.clone()).collect();
    let batched = model.predict(inputs.clone()).await.unwrap();
    let mut worst: f64 = 0.0;
    for (i, row) in rows.iter().enumerate() {
        let single = model.predict(vec![row.inputs.clone()]).await.unwrap();
        for answer in [&batched[i], &single[0]] {
            let (legit, fraud) = (answer[0], answer[1]);
            let want = expected(row);
            worst = worst.max((fraud - want).abs());
            assert!(
                (fraud - want).abs() <= TOLERANCE,
                "{file} row {i}: tract {fraud}, scikit-learn {want}"
            );
            assert!((legit + fraud - 1.0).abs() <= TOLERANCE);
        }
    }
    println!("{file}: largest difference from scikit-learn {worst:e}");
}

#[tokio::test]
async fn the_logistic_regression_equals_scikit_learn_on_the_test_set() {
    check_model("fraud_lr.onnx", |r| r.p_lr).await;
}

#[tokio::test]
async fn the_random_forest_equals_scikit_learn_on_the_test_set() {
    check_model("fraud_rf.onnx", |r| r.p_rf).await;
}

#[tokio::test]
async fn a_model_of_another_width_or_output_is_refused_when_loaded() {
    let mut options = fraud_onnx_options("fraud_rf.onnx");
    options.inputs = 4;
    let err = OnnxModel::load(models_dir().join("fraud_rf.onnx"), options).unwrap_err();
    assert!(matches!(err, ModelError::Load { .. }), "{err}");
    let mut options = fraud_onnx_options("fraud_lr.onnx");
    options.outputs = vec!["fraud".into()];
    let err = OnnxModel::load(models_dir().join("fraud_lr.onnx"), options).unwrap_err();
    assert!(err.to_string().contains("output row of 2 numbers"), "{err}");
    let mut options = fraud_onnx_options("fraud_lr.onnx");
    options.output = "scores".into();
    let err = OnnxModel::load(models_dir().join("fraud_lr.onnx"), options).unwrap_err();
    assert!(err.to_string().contains("scores"), "{err}");
    let err = OnnxModel::load(
        models_dir().join("fraud_testset.csv"),
        fraud_onnx_options("x"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not a readable ONNX model"),
        "{err}"
    );
}

#[tokio::test]
async fn a_row_of_the_wrong_width_fails_the_call_without_scoring() {
    let model = OnnxModel::load(
        models_dir().join("fraud_lr.onnx"),
        fraud_onnx_options("fraud_lr.onnx"),
    )
    .unwrap();
    let err = model
        .predict(vec![vec![1.0; 5], vec![1.0; 3]])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ModelError::InputWidth {
            model: "fraud".into(),
            expected: 5,
            got: 3
        }
    );
}
