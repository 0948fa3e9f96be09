//! The five conformance suites (`runnel-test-util`) against a real nats-server with
//! JetStream: the backend suite, the runtime suite, the failure-handling suite, the
//! feature-pipeline suite and the saga suite. Each test gets a namespace of its own, so they run in parallel on
//! one server; `open()` reconnects (a restart). Needs `RUNNEL_TEST_NATS_URL` (see `common`).

mod common;

mod backend {
    runnel_test_util::conformance_tests!(crate::harness_or_skip!());
}

mod runtime {
    runnel_test_util::runtime_conformance_tests!(crate::harness_or_skip!());
}

mod failures {
    runnel_test_util::failure_conformance_tests!(crate::harness_or_skip!());
}

mod features {
    runnel_test_util::features_conformance_tests!(crate::harness_or_skip!());
}

mod sagas {
    runnel_test_util::saga_conformance_tests!(crate::harness_or_skip!());
}
