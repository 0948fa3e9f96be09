//! The JetStream backend's test harness: a backend on the nats-server named by
//! `RUNNEL_TEST_NATS_URL`, in a namespace of its own (so tests run in parallel against one
//! server), reconnected by `open()` (a restart), and the namespace deleted when the harness
//! is dropped.
//!
//! Without `RUNNEL_TEST_NATS_URL` the tests say they were skipped and pass — unless
//! `RUNNEL_CI` is set, where a missing server is a failure.

#![allow(dead_code)]

use std::sync::Arc;

use async_trait::async_trait;
use runnel_backend::Backend;
use runnel_backend_jetstream::{JetStreamBackend, JetStreamConfig};
use runnel_clock::ManualClock;
use runnel_test_util::{BackendHarness, ReopeningHarness};

/// The server's URL, or `None` (after saying so) when the tests are to be skipped.
pub fn nats_url() -> Option<String> {
    match std::env::var("RUNNEL_TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("RUNNEL_CI").is_none(),
                "RUNNEL_CI is set but RUNNEL_TEST_NATS_URL is not: the JetStream tests must run in CI"
            );
            println!(
                "skipped: set RUNNEL_TEST_NATS_URL to a nats-server 2.10+ with JetStream \
                 (e.g. nats://127.0.0.1:14222) to run the JetStream backend tests"
            );
            None
        }
    }
}

/// A namespace no other test uses.
pub fn unique_namespace() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// A configuration for `url` in `namespace` with `clock`.
///
/// The record's id is not used as `Nats-Msg-Id`: JetStream judges its duplicate window by
/// the server's real time, which a manual clock cannot move, so a test that steps past the
/// runtime's dedup window (judged by the manual clock) would still be answered "duplicate"
/// by JetStream. The runtime's own dedup, which the suites test, is unaffected; the
/// id-based dedup is tested on its own, in real time, in `tests/jetstream.rs`.
pub fn config(url: &str, namespace: &str, clock: &ManualClock) -> JetStreamConfig {
    JetStreamConfig {
        namespace: namespace.to_string(),
        clock: clock.shared(),
        dedup_header: None,
        ..JetStreamConfig::new(url)
    }
}

/// A reconnecting harness in a fresh namespace; deletes the namespace when dropped.
pub struct NamespaceHarness {
    inner: Box<dyn BackendHarness>,
    url: String,
    namespace: String,
}

impl NamespaceHarness {
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The harness, or `None` when the tests are skipped.
pub fn harness() -> Option<NamespaceHarness> {
    let url = nats_url()?;
    let namespace = unique_namespace();
    let (open_url, open_namespace) = (url.clone(), namespace.clone());
    let inner = ReopeningHarness::new(move |clock: ManualClock| {
        let config = config(&open_url, &open_namespace, &clock);
        async move {
            let backend = JetStreamBackend::connect(config)
                .await
                .expect("connect the JetStream backend");
            Arc::new(backend) as Arc<dyn Backend>
        }
    });
    Some(NamespaceHarness {
        inner: Box::new(inner),
        url,
        namespace,
    })
}

#[async_trait]
impl BackendHarness for NamespaceHarness {
    async fn open(&self) -> Arc<dyn Backend> {
        self.inner.open().await
    }

    fn clock(&self) -> ManualClock {
        self.inner.clock()
    }
}

impl Drop for NamespaceHarness {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be gone: clean up on a thread with a
        // runtime of its own.
        let config = config(&self.url, &self.namespace, &self.inner.clock());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            runtime.block_on(JetStreamBackend::delete_namespace(config))
        });
        if let Ok(Err(error)) = cleanup.join() {
            eprintln!("deleting test namespace {}: {error}", self.namespace);
        }
    }
}

/// A harness expression for the conformance macros that returns from the test (skipping it)
/// when no server is configured.
#[macro_export]
macro_rules! harness_or_skip {
    () => {
        match $crate::common::harness() {
            Some(harness) => harness,
            None => return,
        }
    };
}
