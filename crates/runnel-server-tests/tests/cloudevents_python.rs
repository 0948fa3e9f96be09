//! The official CloudEvents Python SDK against a real server: runs
//! `tests/python/test_cloudevents.py` under pytest with the server's URL in `RUNNEL_URL`.
//! Structured, binary and batch events are sent with the SDK and the events pulled back must
//! equal them, extensions included. Needs `RUNNEL_PYTHON` with `cloudevents` (see
//! [`common::outside_python`]).

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_python_sdk_round_trips_structured_binary_and_batch() {
    let Some(python) = common::outside_python("cloudevents") else {
        return;
    };
    let server = common::serve(|_| {}).await;
    let url = format!("http://{}", server.addr);
    let (passed, output) =
        common::run_python_script(python, "test_cloudevents.py", vec![("RUNNEL_URL", url)]).await;
    server.stop().await;
    assert!(passed, "the CloudEvents SDK test failed:\n{output}");
    println!("{output}");
}
