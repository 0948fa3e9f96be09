//! The CloudEvents 1.0 HTTP protocol binding: turning a `POST /v1/events` request into
//! validated events.
//!
//! It exists because the binding's three modes differ only in where the attributes are, and
//! the envelope crate already knows the JSON format: structured and batch bodies go straight
//! to it; binary mode gathers the `ce-*` headers (percent-decoded, as the binding requires)
//! and `Content-Type` into the same JSON shape, so every mode runs the same checks. Errors
//! name the failing field: a JSON pointer (`/type`, `/3/id`) in the JSON modes, the header
//! (`ce-type`, `content-type`) or `body` in binary mode.
//!
//! Binary-mode data: a JSON `Content-Type` (`*/json`, `*/*+json`) makes the body JSON data;
//! `text/*`, XML types and any type with a `charset` make it text (it must be UTF-8); any
//! other type, or none, makes it opaque bytes (`data_base64` when read back structured).
//! Extension values arrive as strings (headers carry no types), except `schemaversion`,
//! which Runnel types as an integer.

use axum::http::{HeaderMap, header};
use runnel_envelope::{Data, EnvelopeError, Event, JsonData, Limits, is_json_content_type};
use serde_json::{Map, Value};

use crate::problem::{ApiError, pointer};

pub const STRUCTURED: &str = "application/cloudevents+json";
pub const BATCH: &str = "application/cloudevents-batch+json";

/// What a publish request carried.
#[derive(Debug)]
pub struct Incoming {
    pub events: Vec<Event>,
    /// Sent as a batch: answered with an array.
    pub batch: bool,
}

/// Reads the events of a request in whichever mode it uses.
pub fn read_events(
    headers: &HeaderMap,
    body: &[u8],
    limits: &Limits,
) -> Result<Incoming, ApiError> {
    let content_type = match headers.get(header::CONTENT_TYPE) {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request(
                "request.invalid_header",
                "the Content-Type header is not visible ASCII",
            )
            .with_field("content-type", "not visible ASCII")
        })?),
        None => None,
    };
    let essence = content_type.map(media_essence);
    match essence.as_deref() {
        Some(STRUCTURED) => {
            let event = Event::from_json_with_limits(body, limits)
                .map_err(|e| ApiError::from_envelope(&e, &pointer))?;
            Ok(Incoming {
                events: vec![event],
                batch: false,
            })
        }
        Some(BATCH) => {
            let events = Event::from_json_batch_with_limits(body, limits)
                .map_err(|e| ApiError::from_envelope(&e, &pointer))?;
            if events.is_empty() {
                return Err(ApiError::bad_request(
                    "publish.empty_batch",
                    "a batch must hold at least one event",
                )
                .with_field("body", "empty array"));
            }
            Ok(Incoming {
                events,
                batch: true,
            })
        }
        Some(other) if other.starts_with("application/cloudevents") => {
            Err(ApiError::unsupported_media_type(format!(
                "`{other}` is not supported: use `{STRUCTURED}`, `{BATCH}`, or binary mode \
                 (`ce-*` headers with the data as the body)"
            )))
        }
        _ if has_ce_headers(headers) => {
            let event = binary_event(headers, content_type, body)?;
            event
                .check_size(limits)
                .map_err(|e| ApiError::from_envelope(&e, &header_of))?;
            Ok(Incoming {
                events: vec![event],
                batch: false,
            })
        }
        _ => Err(ApiError::unsupported_media_type(format!(
            "a CloudEvent is sent as `{STRUCTURED}`, as a `{BATCH}` array, or in binary mode \
             with `ce-specversion`, `ce-id`, `ce-source` and `ce-type` headers; got {}",
            match content_type {
                Some(ct) => format!("Content-Type `{ct}` and no `ce-` headers"),
                None => "no Content-Type and no `ce-` headers".into(),
            }
        ))),
    }
}

/// `type/subtype`, lower case, without parameters.
fn media_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

fn has_ce_headers(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| name.as_str().starts_with("ce-"))
}

/// Where an attribute travels in binary mode.
fn header_of(attribute: &str) -> String {
    match attribute {
        "datacontenttype" => "content-type".into(),
        "data" | "data_base64" => "body".into(),
        other => format!("ce-{other}"),
    }
}

fn binary_event(
    headers: &HeaderMap,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Event, ApiError> {
    let mut map = Map::new();
    for name in headers.keys() {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let field = |message: String| {
            ApiError::bad_request(
                "envelope.invalid_attribute",
                format!("header `{name}`: {message}"),
            )
            .with_field(name.as_str(), message)
        };
        let mut values = headers.get_all(name).iter();
        let (Some(raw), None) = (values.next(), values.next()) else {
            return Err(field("given more than once".into()));
        };
        match attribute {
            "datacontenttype" => {
                return Err(field(
                    "in binary mode `datacontenttype` travels as the Content-Type header".into(),
                ));
            }
            "data" | "data_base64" => {
                return Err(field("in binary mode the data is the body".into()));
            }
            _ => {}
        }
        let text = percent_decode(raw.as_bytes()).map_err(field)?;
        let value = if attribute == "schemaversion" {
            match text.trim().parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => return Err(field(format!("expected a positive integer, got `{text}`"))),
            }
        } else {
            Value::String(text)
        };
        map.insert(attribute.to_string(), value);
    }
    if let Some(ct) = content_type {
        map.insert("datacontenttype".into(), Value::String(ct.to_string()));
    }
    // JSON and binary bodies are set on the event as they are (JSON checked, never parsed into
    // a tree); text goes through the attribute map, which checks it against the content type.
    let data = if body.is_empty() {
        None
    } else {
        match content_type {
            Some(ct) if is_json_content_type(ct) => {
                let json =
                    JsonData::from_text(bytes::Bytes::copy_from_slice(body)).map_err(|e| {
                        ApiError::bad_request(
                            "envelope.malformed_json",
                            format!("the body is not valid JSON, as `{ct}` says it is: {e}"),
                        )
                        .with_field("body", e.to_string())
                    })?;
                Some(Data::Json(json))
            }
            Some(ct) if is_text(ct) => {
                let text = std::str::from_utf8(body).map_err(|e| {
                    ApiError::bad_request(
                        "publish.invalid_utf8",
                        format!("the body is not valid UTF-8, as text `{ct}` must be: {e}"),
                    )
                    .with_field("body", e.to_string())
                })?;
                map.insert("data".into(), Value::String(text.to_string()));
                None
            }
            _ => Some(Data::Binary(bytes::Bytes::copy_from_slice(body))),
        }
    };
    let event = Event::from_json_value(Value::Object(map))
        .map_err(|e| ApiError::from_envelope(&e, &header_of))?;
    match data {
        None => Ok(event),
        Some(data) => {
            let ct = event.data_content_type().map(str::to_string);
            event
                .into_builder()
                .data(data, ct)
                .build()
                .map_err(|e: EnvelopeError| ApiError::from_envelope(&e, &header_of))
        }
    }
}

/// Media types whose bodies are text: `text/*`, XML, or anything declaring a charset.
fn is_text(content_type: &str) -> bool {
    let essence = media_essence(content_type);
    essence.starts_with("text/")
        || essence.ends_with("/xml")
        || essence.ends_with("+xml")
        || content_type.to_ascii_lowercase().contains("charset=")
}

/// Decodes `%XX` sequences (the binding percent-encodes header values outside printable
/// ASCII, and `%` and `"`), then requires UTF-8.
fn percent_decode(raw: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("`%` at byte {i} is not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 after percent-decoding".to_string())
}

/// Percent-encodes a header value the way the binding asks (for responses and clients).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b' '..=b'~').contains(&b) && b != b'"' && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn binary_headers(extra: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "a1"),
            ("ce-source", "/tests"),
            ("ce-type", "order.placed"),
        ]
        .iter()
        .chain(extra)
        {
            headers.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn binary_mode_reads_headers_content_type_and_body() {
        let headers = binary_headers(&[
            ("content-type", "application/json"),
            ("ce-comexample", "caf%C3%A9%20au%20lait"),
            ("ce-schemaversion", "2"),
            (
                "ce-traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ]);
        let incoming = read_events(&headers, br#"{"n": 1}"#, &Limits::default()).unwrap();
        let event = &incoming.events[0];
        assert_eq!(event.id().as_str(), "a1");
        assert_eq!(event.data().as_json(), Some(&serde_json::json!({"n": 1})));
        assert_eq!(
            event.extension("comexample").and_then(|v| v.as_str()),
            Some("café au lait")
        );
        assert_eq!(event.schema_version().map(|v| v.get()), Some(2));
        assert!(event.traceparent().is_some());
    }

    #[test]
    fn binary_mode_keeps_bytes_and_text_apart() {
        let octets = binary_headers(&[("content-type", "application/octet-stream")]);
        let event = &read_events(&octets, b"\x00\xff", &Limits::default())
            .unwrap()
            .events[0];
        assert!(event.data().as_binary().is_some());
        let text = binary_headers(&[("content-type", "text/plain")]);
        let event = &read_events(&text, b"hello", &Limits::default())
            .unwrap()
            .events[0];
        assert_eq!(event.data().as_text(), Some("hello"));
        let err = read_events(&text, b"\xff\xfe", &Limits::default()).unwrap_err();
        assert_eq!(err.code(), "publish.invalid_utf8");
    }

    #[test]
    fn binary_mode_names_the_failing_header() {
        let mut headers = binary_headers(&[]);
        headers.remove("ce-type");
        let err = read_events(&headers, b"", &Limits::default()).unwrap_err();
        assert_eq!(err.code(), "envelope.missing_attribute");
        assert_eq!(err.problem().errors[0].path, "ce-type");
        let headers = binary_headers(&[("ce-x", "%zz")]);
        let err = read_events(&headers, b"", &Limits::default()).unwrap_err();
        assert_eq!(err.problem().errors[0].path, "ce-x");
    }

    #[test]
    fn other_media_types_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let err = read_events(&headers, b"{}", &Limits::default()).unwrap_err();
        assert_eq!(err.status().as_u16(), 415);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents+xml"),
        );
        let err = read_events(&headers, b"{}", &Limits::default()).unwrap_err();
        assert_eq!(err.status().as_u16(), 415);
    }

    #[test]
    fn percent_encoding_round_trips() {
        for text in ["plain", "café \"quoted\" 100%", "日本"] {
            assert_eq!(
                percent_decode(percent_encode(text).as_bytes()).unwrap(),
                text
            );
        }
    }
}
