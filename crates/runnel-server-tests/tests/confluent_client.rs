//! Confluent's own Python client (`SchemaRegistryClient` from `confluent-kafka`) against the
//! schema registry of a real server, mounted under `/registry`: runs
//! `tests/python/test_schema_registry.py` under pytest with the registry's URL in
//! `RUNNEL_REGISTRY_URL`. Needs `RUNNEL_PYTHON` with `confluent_kafka` (see
//! [`common::outside_python`]).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_python_client_registers_fetches_checks_and_configures() {
    let Some(python) = common::outside_python("confluent_kafka.schema_registry") else {
        return;
    };
    let server = common::serve(|_| {}).await;
    let url = format!("http://{}/registry", server.addr);
    let (passed, output) = common::run_python_script(
        python,
        "test_schema_registry.py",
        vec![("RUNNEL_REGISTRY_URL", url)],
    )
    .await;
    server.stop().await;
    assert!(passed, "the Confluent client test failed:\n{output}");
    println!("{output}");
}
