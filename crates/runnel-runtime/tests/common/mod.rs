//! Shared setup of the runtime tests: a runtime over the embedded backend in a temp dir.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use runnel_backend::Backend;
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_clock::ManualClock;
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{Runnel, RuntimeConfig};

pub async fn open_backend(dir: &Path, clock: &ManualClock) -> Arc<dyn Backend> {
    let config = EmbeddedConfig {
        fsync: FsyncPolicy::Os,
        clock: clock.shared(),
        ..EmbeddedConfig::new(dir)
    };
    Arc::new(EmbeddedBackend::open(config).await.expect("open backend"))
}

pub async fn open_runtime(dir: &Path, clock: &ManualClock) -> Runnel {
    let backend = open_backend(dir, clock).await;
    Runnel::open(
        RuntimeConfig {
            clock: clock.shared(),
            dedup_window: Duration::from_secs(120),
            ..RuntimeConfig::default()
        },
        backend,
    )
}

/// A real clock reading, as a manual clock (tests move it on when they need to).
pub fn clock_now() -> ManualClock {
    use runnel_clock::Clock;
    ManualClock::new(runnel_clock::SystemClock.now_micros())
}

pub fn event(event_type: &str, key: &str, n: u64) -> Event {
    Event::builder(
        EventType::new(event_type).unwrap(),
        Source::new("test://runtime").unwrap(),
    )
    .partition_key(key)
    .data_json(serde_json::json!({ "n": n, "key": key }))
    .build()
    .unwrap()
}

pub fn number(event: &Event) -> u64 {
    event
        .data()
        .as_json()
        .and_then(|d| d["n"].as_u64())
        .unwrap()
}

/// Waits (bounded) until `done` holds, checking every 10 ms.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
