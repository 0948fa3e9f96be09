//! The remote runner against a real MLServer (PyPI `mlserver` + `mlserver-sklearn`), serving
//! the shipped fraud models that this test trains with `scripts/train_fraud_model.py
//! --joblib`: the same probabilities as scikit-learn's test set, through the Open Inference
//! Protocol.
//!
//! Needs `RUNNEL_TEST_MLSERVER`: the path of the `mlserver` executable, in a virtual
//! environment whose `python` has scikit-learn (`.ci/run` makes `.venv-mlserver`). Without
//! it the test says it was skipped and passes, unless `RUNNEL_CI` is set.

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use runnel_inference::{Model, ModelError, RemoteModel, RemoteOptions};
use support::{input_names, test_set};
use tokio::process::{Child, Command};

fn mlserver_or_skip() -> Option<PathBuf> {
    match std::env::var_os("RUNNEL_TEST_MLSERVER") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            assert!(
                std::env::var_os("RUNNEL_CI").is_none(),
                "RUNNEL_CI is set but RUNNEL_TEST_MLSERVER is not: the MLServer test must run in CI"
            );
            println!(
                "skipped: set RUNNEL_TEST_MLSERVER to an `mlserver` executable (pip install \
                 mlserver mlserver-sklearn) to run the Open Inference Protocol test"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Trains the joblib models and writes MLServer's settings for them.
async fn prepare(mlserver: &Path, dir: &Path) -> u16 {
    let python = mlserver.with_file_name("python");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/train_fraud_model.py");
    let status = Command::new(&python)
        .arg(&script)
        .arg("--joblib")
        .arg(dir)
        .status()
        .await
        .expect("run the training script");
    assert!(status.success(), "{} --joblib failed", script.display());
    for (name, version) in [("lr", "v1"), ("rf", "v1")] {
        let settings = serde_json::json!({
            "name": format!("fraud-{name}"),
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": { "uri": "./model.joblib", "version": version },
        });
        std::fs::write(
            dir.join(name).join("model-settings.json"),
            settings.to_string(),
        )
        .expect("model settings");
    }
    let port = free_port();
    let settings = serde_json::json!({
        "host": "127.0.0.1",
        "http_port": port,
        "grpc_port": free_port(),
        "metrics_port": free_port(),
        // With today's uvloop MLServer's worker processes die at start; serve in-process.
        "parallel_workers": 0,
    });
    std::fs::write(dir.join("settings.json"), settings.to_string()).expect("settings");
    port
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn start(mlserver: &Path, dir: &Path, port: u16) -> Server {
    let child = Command::new(mlserver)
        .arg("start")
        .arg(dir)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start mlserver");
    let mut server = Server(child);
    let ready = format!("http://127.0.0.1:{port}/v2/models/fraud-rf/ready");
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(&ready).send().await
            && r.status().is_success()
        {
            return server;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!("mlserver exited at start: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "mlserver not ready after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn options(port: u16, model: &str) -> RemoteOptions {
    RemoteOptions {
        name: "fraud".into(),
        url: format!("http://127.0.0.1:{port}"),
        model: model.into(),
        version: None,
        inputs: input_names().len(),
        input_name: "input-0".into(),
        output: "predict_proba".into(),
        outputs: vec!["legit".into(), "fraud".into()],
        connect_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_answers_the_shipped_models_as_scikit_learn_does() {
    let Some(mlserver) = mlserver_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = prepare(&mlserver, dir.path()).await;
    let _server = start(&mlserver, dir.path(), port).await;
    let rows = test_set();
    let inputs: Vec<Vec<f64>> = rows.iter().map(|r| r.inputs.clone()).collect();
    for (model, pick) in [
        (
            "fraud-lr",
            (|r: &support::TestRow| r.p_lr) as fn(&support::TestRow) -> f64,
        ),
        ("fraud-rf", |r: &support::TestRow| r.p_rf),
    ] {
        let remote = RemoteModel::connect(options(port, model)).await.unwrap();
        assert_eq!(
            remote.info().version,
            "v1",
            "the version the server reports"
        );
        let batched = remote.predict(inputs.clone()).await.unwrap();
        let single = remote.predict(vec![inputs[7].clone()]).await.unwrap();
        assert_eq!(single[0], batched[7]);
        for (i, row) in rows.iter().enumerate() {
            let fraud = batched[i][1];
            assert!(
                (fraud - pick(row)).abs() <= 1e-5,
                "{model} row {i}: MLServer {fraud}, scikit-learn {}",
                pick(row)
            );
        }
    }
    // A model the server does not have is refused when connecting, naming the URL.
    let err = RemoteModel::connect(options(port, "fraud-xx"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ModelError::Load { .. }) && err.to_string().contains("/v2/models/fraud-xx"),
        "{err}"
    );
    // A row of the wrong width never leaves the process.
    let remote = RemoteModel::connect(options(port, "fraud-lr"))
        .await
        .unwrap();
    let err = remote.predict(vec![vec![1.0; 2]]).await.unwrap_err();
    assert!(matches!(err, ModelError::InputWidth { .. }), "{err}");
    // An output the model does not have, or a width it does not take: refused when
    // connecting, by the probe row, with the server's answer.
    let mut wrong = options(port, "fraud-lr");
    wrong.output = "no_such_output".into();
    let err = RemoteModel::connect(wrong).await.unwrap_err();
    assert!(
        err.to_string().contains("scoring a row of zeros") && err.to_string().contains("400"),
        "{err}"
    );
    let mut wrong = options(port, "fraud-rf");
    wrong.inputs = 3;
    let err = RemoteModel::connect(wrong).await.unwrap_err();
    assert!(err.to_string().contains("scoring a row of zeros"), "{err}");
}
