//! The runtime conformance suite (`runnel-test-util`) over the embedded backend.

use std::sync::Arc;

use runnel_backend::Backend;
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_test_util::{BackendHarness, ReopeningHarness};

fn harness() -> impl BackendHarness {
    harness_with(FsyncPolicy::Os)
}

fn harness_with(fsync: FsyncPolicy) -> impl BackendHarness {
    let dir = runnel_test_util::temp_dir();
    ReopeningHarness::new(move |clock: runnel_clock::ManualClock| {
        let config = EmbeddedConfig {
            fsync,
            clock: clock.shared(),
            ..EmbeddedConfig::new(dir.path())
        };
        async move {
            // A test that aborts its tasks ("a crash") reopens while an operation of the
            // aborted ones may still hold the previous metadata store for a moment.
            let mut tries = 0;
            let backend = loop {
                match EmbeddedBackend::open(config.clone()).await {
                    Ok(backend) => break backend,
                    Err(runnel_backend::BackendError::Unavailable(reason))
                        if reason.contains("already open") && tries < 100 =>
                    {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(error) => panic!("open the embedded backend: {error}"),
                }
            };
            Arc::new(backend) as Arc<dyn Backend>
        }
    })
}

runnel_test_util::runtime_conformance_tests!(harness());

/// With the default fsync policy (`group`) an append waits for its flush, so a publish can be
/// dropped while its append is in flight; the shared test needs that to test anything here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_group_fsync_a_publish_dropped_while_appending_settles_and_a_retry_gets_its_position()
{
    let harness = harness_with(FsyncPolicy::default());
    let in_flight = runnel_test_util::runtime::a_publish_dropped_while_appending_settles_and_a_retry_gets_its_position(&harness).await;
    assert!(
        in_flight,
        "the append finished in one poll: nothing was dropped mid-append"
    );
}

mod failures {
    runnel_test_util::failure_conformance_tests!(super::harness());
}

mod features {
    runnel_test_util::features_conformance_tests!(super::harness());
}

mod sagas {
    runnel_test_util::saga_conformance_tests!(super::harness());
}
