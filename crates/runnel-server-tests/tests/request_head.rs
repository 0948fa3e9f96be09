//! Request heads too large for the API (a URL, too many or too large headers) are answered
//! with problem documents over a real socket, like every other error: hyper alone answered
//! some of them with a bare 431 and no body.

mod common;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `head` (without the blank line) and returns the status and the body as JSON.
async fn send_raw(addr: std::net::SocketAddr, head: String) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (
        status,
        content_type,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_url_too_long_is_a_414_problem() {
    let server = serve(|_| {}).await;
    let path = format!("/v1/streams/{}", "a".repeat(20_000));
    let (status, content_type, body) =
        send_raw(server.addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n")).await;
    assert_eq!(status, 414, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["code"], "request.uri_too_long");
    assert!(body["detail"].as_str().unwrap().contains("16384"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn too_many_headers_is_a_431_problem_with_a_body() {
    let server = serve(|_| {}).await;
    let mut head = "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_string();
    for n in 0..250 {
        head.push_str(&format!("X-Filler-{n}: {n}\r\n"));
    }
    let (status, content_type, body) = send_raw(server.addr, head).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["code"], "request.headers_too_large");
    server.stop().await;
}

#[tokio::test]
async fn headers_too_large_are_a_431_problem_with_a_body() {
    let server = serve(|_| {}).await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n",
        "b".repeat(100_000)
    );
    let (status, content_type, body) = send_raw(server.addr, head).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert!(body["detail"].as_str().unwrap().contains("65536"), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn a_head_within_the_limits_is_served() {
    let server = serve(|_| {}).await;
    let mut head = "GET /healthz HTTP/1.1\r\nHost: x\r\n".to_string();
    for n in 0..150 {
        head.push_str(&format!("X-Filler-{n}: {n}\r\n"));
    }
    let (status, _, _) = send_raw(server.addr, head).await;
    assert_eq!(status, 200);
    server.stop().await;
}
