//! Backends for the stage tests: the embedded log, and JetStream on the nats-server named by
//! `RUNNEL_TEST_NATS_URL` (skipped without it, unless `RUNNEL_CI` is set), each in storage of
//! its own with a manual clock.

use std::sync::Arc;

use runnel_backend::Backend;
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_backend_jetstream::{JetStreamBackend, JetStreamConfig};
use runnel_clock::ManualClock;
use runnel_runtime::{Runnel, RuntimeConfig};

/// A runtime over fresh storage, its clock, and what keeps the storage alive.
pub struct TestBackend {
    pub runnel: Runnel,
    pub clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
    namespace: Option<(JetStreamConfig, String)>,
}

fn runtime(clock: &ManualClock, backend: Arc<dyn Backend>) -> Runnel {
    Runnel::open(
        RuntimeConfig {
            clock: clock.shared(),
            ..RuntimeConfig::default()
        },
        backend,
    )
}

pub async fn embedded() -> TestBackend {
    let clock = runnel_test_util::manual_clock();
    let dir = runnel_test_util::temp_dir();
    let config = EmbeddedConfig {
        fsync: FsyncPolicy::Os,
        clock: clock.shared(),
        ..EmbeddedConfig::new(dir.path())
    };
    let backend = EmbeddedBackend::open(config)
        .await
        .expect("open the embedded backend");
    TestBackend {
        runnel: runtime(&clock, Arc::new(backend)),
        clock,
        _dir: Some(dir),
        namespace: None,
    }
}

pub async fn jetstream() -> Option<TestBackend> {
    let url = match std::env::var("RUNNEL_TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                std::env::var_os("RUNNEL_CI").is_none(),
                "RUNNEL_CI is set but RUNNEL_TEST_NATS_URL is not: the JetStream tests must run in CI"
            );
            println!("skipped: set RUNNEL_TEST_NATS_URL to run the inference stage on JetStream");
            return None;
        }
    };
    let clock = runnel_test_util::manual_clock();
    let namespace = format!("i{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let config = JetStreamConfig {
        namespace: namespace.clone(),
        clock: clock.shared(),
        // JetStream judges its duplicate window by real time, which the manual clock cannot
        // move; the runtime's own dedup is what these tests rely on.
        dedup_header: None,
        ..JetStreamConfig::new(&url)
    };
    let backend = JetStreamBackend::connect(config.clone())
        .await
        .expect("connect the JetStream backend");
    Some(TestBackend {
        runnel: runtime(&clock, Arc::new(backend)),
        clock,
        _dir: None,
        namespace: Some((config, namespace)),
    })
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some((config, namespace)) = self.namespace.take() {
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for cleanup");
                runtime.block_on(JetStreamBackend::delete_namespace(config))
            });
            if let Ok(Err(error)) = cleanup.join() {
                eprintln!("deleting test namespace {namespace}: {error}");
            }
        }
    }
}
