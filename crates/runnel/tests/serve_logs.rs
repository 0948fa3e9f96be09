//! The server's log is one line per record whatever clients send: event ids and nack reasons
//! are client text, and a newline in them must not start a line of its own (a forged record).

mod common;

use std::time::Duration;

use serde_json::json;

use common::{Serve, json, publish};

#[test]
fn client_text_in_the_log_is_escaped_not_written_as_lines_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let data = dir.path().join("data");
    let mut server = Serve::start_with_log(["--data-dir".as_ref(), data.as_os_str()], log);
    let base = server.url();
    let forged = "2026-01-01T00:00:00.000000Z ERROR runnel_server: FORGED";
    let (status, _) = json(
        "PUT",
        &format!("{base}/v1/groups/audit"),
        &json!({"filter": "audit.*"}),
    )
    .unwrap();
    assert_eq!(status, 201);
    let (status, answer) = publish(
        &base,
        &json!({"specversion": "1.0", "id": format!("evil\n{forged} id"), "source": "/t",
                "type": "audit.logged", "data": {}}),
    )
    .unwrap();
    assert_eq!(status, 202, "{answer}");
    let mut pulled = serde_json::Value::Null;
    for _ in 0..50 {
        let (status, answer) = json(
            "POST",
            &format!("{base}/v1/groups/audit/pull"),
            &json!({"max": 1, "wait_ms": 1000}),
        )
        .unwrap();
        assert_eq!(status, 200, "{answer}");
        if answer["messages"].as_array().is_some_and(|m| !m.is_empty()) {
            pulled = answer["messages"][0].clone();
            break;
        }
    }
    let receipt = pulled["receipt"].as_str().expect("the event was pulled");
    let (status, answer) = json(
        "POST",
        &format!("{base}/v1/groups/audit/nack"),
        &json!({"receipt": receipt, "class": "permanent", "reason": format!("bad\n{forged} reason")}),
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    // The dead-lettering is logged by the group's worker, a moment after the nack.
    for _ in 0..100 {
        if std::fs::read_to_string(&log_path)
            .unwrap()
            .contains("dead-lettered")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("dead-lettered"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no terminal colours in a log file:\n{text}"
    );
    for line in text.lines() {
        assert!(
            !line.starts_with(forged),
            "a client's text became a log line of its own:\n{text}"
        );
    }
    assert!(
        text.contains(r"evil\n2026") && text.contains(r"bad\n2026"),
        "the id and reason are logged, escaped:\n{text}"
    );
}
