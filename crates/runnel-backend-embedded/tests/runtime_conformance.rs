//! The runtime conformance suite (`runnel-test-util`) over the embedded backend.

use std::sync::Arc;

use runnel_backend::Backend;
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_test_util::{BackendHarness, ReopeningHarness};

fn harness() -> impl BackendHarness {
    let dir = runnel_test_util::temp_dir();
    ReopeningHarness::new(move |clock: runnel_clock::ManualClock| {
        let config = EmbeddedConfig {
            fsync: FsyncPolicy::Os,
            clock: clock.shared(),
            ..EmbeddedConfig::new(dir.path())
        };
        async move {
            let backend = EmbeddedBackend::open(config)
                .await
                .expect("open the embedded backend");
            Arc::new(backend) as Arc<dyn Backend>
        }
    })
}

runnel_test_util::runtime_conformance_tests!(harness());

mod failures {
    runnel_test_util::failure_conformance_tests!(super::harness());
}
