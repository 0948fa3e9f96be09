//! The CloudEvents JSON event and batch formats: the spec's own examples, and every kind of
//! bad input.

use runnel_envelope::{Data, EnvelopeError, Event, ExtensionValue, Limits};
use serde_json::{Value, json};

/// The spec treats `null` members as unset, so writing an event back omits them.
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn parse(value: &Value) -> Result<Event, EnvelopeError> {
    Event::from_json(value.to_string().as_bytes())
}

fn assert_round_trips(example: &Value) -> Event {
    let event = parse(example).unwrap();
    assert_eq!(event.to_json_value(), without_nulls(example));
    let reparsed: Value = serde_json::from_str(&event.to_json()).unwrap();
    assert_eq!(reparsed, without_nulls(example));
    event
}

#[test]
fn spec_example_with_binary_data_round_trips_through_data_base64() {
    // JSON format spec §3.2, with a real base64 payload in place of the placeholder.
    let example = json!({
        "specversion" : "1.0",
        "type" : "com.example.someevent",
        "source" : "/mycontext",
        "id" : "A234-1234-1234",
        "time" : "2018-04-05T17:31:00Z",
        "comexampleextension1" : "value",
        "comexampleothervalue" : 5,
        "datacontenttype" : "application/vnd.apache.thrift.binary",
        "data_base64" : "AAECAwT/"
    });
    let event = assert_round_trips(&example);
    assert_eq!(
        event.data(),
        &Data::Binary(bytes::Bytes::from_static(&[0, 1, 2, 3, 4, 255]))
    );
    assert_eq!(event.id().as_str(), "A234-1234-1234");
    assert_eq!(event.source().as_str(), "/mycontext");
    assert_eq!(event.event_type().as_str(), "com.example.someevent");
    assert_eq!(
        event.time().map(|t| t.to_rfc3339()),
        Some("2018-04-05T17:31:00+00:00".to_owned())
    );
    assert_eq!(
        event.extension("comexampleextension1"),
        Some(&ExtensionValue::String("value".into()))
    );
    assert_eq!(
        event.extension("comexampleothervalue"),
        Some(&ExtensionValue::Integer(5))
    );
}

#[test]
fn spec_example_with_xml_text_data_round_trips_and_drops_null_extensions() {
    let example = json!({
        "specversion" : "1.0",
        "type" : "com.example.someevent",
        "source" : "/mycontext",
        "id" : "B234-1234-1234",
        "time" : "2018-04-05T17:31:00Z",
        "comexampleextension1" : "value",
        "comexampleothervalue" : 5,
        "unsetextension": null,
        "datacontenttype" : "application/xml",
        "data" : "<much wow=\"xml\"/>"
    });
    let event = assert_round_trips(&example);
    assert_eq!(event.data(), &Data::Text("<much wow=\"xml\"/>".into()));
    assert_eq!(event.extension("unsetextension"), None);
}

#[test]
fn spec_example_with_json_object_data_round_trips() {
    let example = json!({
        "specversion" : "1.0",
        "type" : "com.example.someevent",
        "source" : "/mycontext",
        "subject": null,
        "id" : "C234-1234-1234",
        "time" : "2018-04-05T17:31:00Z",
        "comexampleextension1" : "value",
        "comexampleothervalue" : 5,
        "datacontenttype" : "application/json",
        "data" : {
            "appinfoA" : "abc",
            "appinfoB" : 123,
            "appinfoC" : true
        }
    });
    let event = assert_round_trips(&example);
    assert_eq!(event.subject(), None);
    assert_eq!(
        event.data().as_json(),
        Some(&json!({"appinfoA": "abc", "appinfoB": 123, "appinfoC": true}))
    );
}

#[test]
fn spec_example_with_a_json_string_and_no_content_type_stays_json() {
    let example = json!({
        "specversion" : "1.0",
        "type" : "com.example.someevent",
        "source" : "/mycontext",
        "subject": null,
        "id" : "D234-1234-1234",
        "time" : "2018-04-05T17:31:00Z",
        "comexampleextension1" : "value",
        "comexampleothervalue" : 5,
        "data" : "I'm just a string"
    });
    let event = assert_round_trips(&example);
    assert_eq!(event.data(), &Data::Json(json!("I'm just a string").into()));
    assert_eq!(event.data_content_type(), None);
}

#[test]
fn spec_batch_example_round_trips() {
    let batch = json!([
        {
            "specversion" : "1.0",
            "type" : "com.example.someevent",
            "source" : "/mycontext/4",
            "id" : "B234-1234-1234",
            "time" : "2018-04-05T17:31:00Z",
            "comexampleextension1" : "value",
            "comexampleothervalue" : 5,
            "datacontenttype" : "application/vnd.apache.thrift.binary",
            "data_base64" : "aGVsbG8="
        },
        {
            "specversion" : "1.0",
            "type" : "com.example.someotherevent",
            "source" : "/mycontext/9",
            "id" : "C234-1234-1234",
            "time" : "2018-04-05T17:31:05Z",
            "comexampleextension1" : "value",
            "comexampleothervalue" : 5,
            "datacontenttype" : "application/json",
            "data" : {"appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true}
        }
    ]);
    let events = Event::from_json_batch(batch.to_string().as_bytes()).unwrap();
    assert_eq!(events.len(), 2);
    let written: Value = serde_json::from_str(&Event::to_json_batch(&events)).unwrap();
    assert_eq!(written, batch);
}

#[test]
fn empty_batch_is_valid() {
    assert_eq!(Event::from_json_batch(b"[]").unwrap(), []);
    assert_eq!(Event::to_json_batch(&[]), "[]");
}

#[test]
fn runnel_extensions_and_unknown_extensions_round_trip() {
    let example = json!({
        "specversion": "1.0",
        "type": "order.placed",
        "source": "/shop/checkout",
        "id": "0191e6a2-7c3b-7b7e-9a0e-2f1c1d2e3f40",
        "time": "2024-09-01T12:00:00.123456789Z",
        "subject": "order-42",
        "dataschema": "https://schemas.example.com/order/placed/3",
        "correlationid": "req-7",
        "causationid": "0191e6a2-0000-7000-8000-000000000001",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "schemaversion": 3,
        "partitionkey": "customer-9",
        "tracestate": "rojo=00f067aa0ba902b7",
        "retries": 0,
        "priority": -2147483648,
        "vip": true,
        "data": null
    });
    let event = parse(&example).unwrap();
    assert_eq!(event.to_json_value(), example);
    assert_eq!(event.correlation_id(), Some("req-7"));
    assert_eq!(event.partition_key(), Some("customer-9"));
    assert_eq!(event.schema_version().map(|v| v.get()), Some(3));
    assert!(event.traceparent().is_some_and(|tp| tp.sampled()));
    assert_eq!(event.data(), &Data::Json(Value::Null.into()));
    assert_eq!(event.extensions().len(), 4);
    assert_eq!(event.extension("vip"), Some(&ExtensionValue::Boolean(true)));
}

#[test]
fn time_is_normalised_to_utc() {
    let mut example = minimal();
    example["time"] = json!("2018-04-05T19:31:00.5+02:00");
    let event = parse(&example).unwrap();
    assert_eq!(
        event.to_json_value()["time"],
        json!("2018-04-05T17:31:00.500Z")
    );
}

#[test]
fn data_base64_without_padding_is_accepted_and_written_padded() {
    let mut example = minimal();
    example["data_base64"] = json!("aGVsbG8");
    let event = parse(&example).unwrap();
    assert_eq!(
        event.data().as_binary().map(|b| &b[..]),
        Some(&b"hello"[..])
    );
    assert_eq!(event.to_json_value()["data_base64"], json!("aGVsbG8="));
}

#[test]
fn serde_impls_use_the_json_format_and_validate() {
    let event: Event = serde_json::from_value(minimal()).unwrap();
    assert_eq!(serde_json::to_value(&event).unwrap(), minimal());
    let mut bad = minimal();
    bad["type"] = json!("Order.Placed");
    let err = serde_json::from_value::<Event>(bad).unwrap_err();
    assert!(err.to_string().contains("must be lowercase"), "{err}");
}

fn minimal() -> Value {
    json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "order.placed"})
}

fn with(member: &str, value: Value) -> Value {
    let mut v = minimal();
    v[member] = value;
    v
}

fn without(member: &str) -> Value {
    let mut v = minimal();
    v.as_object_mut().map(|m| m.remove(member));
    v
}

#[test]
fn missing_required_attributes_are_named() {
    for attribute in ["id", "source", "type", "specversion"] {
        let err = parse(&without(attribute)).unwrap_err();
        assert_eq!(err, EnvelopeError::MissingAttribute { attribute });
        assert_eq!(
            err.to_string(),
            format!("required attribute `{attribute}` is missing")
        );
        // `null` is the same as absent.
        let err = parse(&with(attribute, Value::Null)).unwrap_err();
        assert_eq!(err, EnvelopeError::MissingAttribute { attribute });
    }
}

#[test]
fn wrong_specversion_is_rejected() {
    let err = parse(&with("specversion", json!("0.3"))).unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::UnsupportedSpecVersion {
            found: "0.3".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "attribute `specversion`: only \"1.0\" is supported, got `0.3`"
    );
    let err = parse(&with("specversion", json!(1.0))).unwrap_err();
    assert!(
        matches!(err, EnvelopeError::WrongType { ref attribute, .. } if attribute == "specversion")
    );
}

#[test]
fn attributes_of_the_wrong_type_are_named() {
    let table = [
        ("id", json!(42)),
        ("source", json!(["a"])),
        ("type", json!({"a": 1})),
        ("time", json!(1_522_949_460)),
        ("subject", json!(true)),
        ("datacontenttype", json!(1)),
        ("dataschema", json!(1)),
        ("correlationid", json!(1)),
        ("causationid", json!(1)),
        ("traceparent", json!(1)),
        ("schemaversion", json!("3")),
        ("partitionkey", json!(7)),
        ("data_base64", json!(7)),
        ("myext", json!({"nested": true})),
        ("myext", json!([1, 2])),
        ("myext", json!(1.5)),
    ];
    for (member, value) in table {
        let err = parse(&with(member, value.clone())).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::WrongType { ref attribute, .. } if attribute == member),
            "{member} = {value}: got {err:?}"
        );
        assert_eq!(err.attribute(), Some(member));
        assert!(
            err.to_string()
                .starts_with(&format!("attribute `{member}`: expected "))
        );
    }
}

#[test]
fn attributes_breaking_their_rules_are_named() {
    let table = [
        ("id", json!("")),
        ("source", json!("")),
        ("time", json!("yesterday")),
        ("time", json!("2018-04-05 17:31")),
        ("subject", json!("")),
        ("datacontenttype", json!("xml")),
        ("dataschema", json!("")),
        ("dataschema", json!("not a uri")),
        ("dataschema", json!("::::")),
        ("dataschema", json!("/relative/path")),
        ("correlationid", json!("")),
        ("causationid", json!("")),
        ("traceparent", json!("abc")),
        ("schemaversion", json!(0)),
        ("schemaversion", json!(-1)),
        ("schemaversion", json!(2_147_483_648_u64)),
        ("partitionkey", json!("")),
        ("data_base64", json!("not base64!")),
        ("myext", json!(2_147_483_648_u64)),
        ("myext", json!(-2_147_483_649_i64)),
    ];
    for (member, value) in table {
        let err = parse(&with(member, value.clone())).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::InvalidAttribute { ref attribute, .. } if attribute == member),
            "{member} = {value}: got {err:?}"
        );
    }
}

#[test]
fn traceparent_error_message_is_for_people() {
    let err = parse(&with("traceparent", json!("abc"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attribute `traceparent`: expected 00-<32 hex>-<16 hex>-<2 hex>, got `abc`"
    );
}

#[test]
fn bad_event_type_is_rejected() {
    let err = parse(&with("type", json!("order"))).unwrap_err();
    assert!(matches!(err, EnvelopeError::InvalidEventType { ref name, .. } if name == "order"));
    assert_eq!(err.attribute(), Some("type"));
}

#[test]
fn data_and_data_base64_together_are_rejected() {
    let mut v = with("data", json!({"a": 1}));
    v["data_base64"] = json!("aGVsbG8=");
    assert_eq!(parse(&v).unwrap_err(), EnvelopeError::DataConflict);
    // A null `data_base64` is unset, so there is no conflict.
    let mut v = with("data", json!({"a": 1}));
    v["data_base64"] = Value::Null;
    assert!(parse(&v).is_ok());
}

#[test]
fn non_string_data_with_a_non_json_content_type_is_rejected() {
    let mut v = with("data", json!({"a": 1}));
    v["datacontenttype"] = json!("text/plain");
    let err = parse(&v).unwrap_err();
    assert!(matches!(err, EnvelopeError::WrongType { ref attribute, .. } if attribute == "data"));
}

#[test]
fn invalid_extension_names_are_rejected() {
    for name in [
        "Upper",
        "with_underscore",
        "muchtoolongextension1",
        "data_base65",
    ] {
        let err = parse(&with(name, json!("x"))).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::InvalidExtensionName { name: ref n, .. } if n == name),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn input_that_is_not_an_event_object_is_rejected() {
    assert!(matches!(
        Event::from_json(b"{not json"),
        Err(EnvelopeError::MalformedJson { .. })
    ));
    assert!(matches!(
        Event::from_json(b"{} trailing"),
        Err(EnvelopeError::MalformedJson { .. })
    ));
    assert_eq!(
        Event::from_json(b"[]"),
        Err(EnvelopeError::NotAnObject { found: "an array" })
    );
    assert_eq!(
        Event::from_json_batch(b"{}"),
        Err(EnvelopeError::NotAnArray { found: "an object" })
    );
}

#[test]
fn json_data_is_kept_as_sent_and_checked_like_a_value() {
    let input = br#"{"specversion":"1.0","id":"1","source":"/s","type":"order.placed",
        "data": { "b" : 1, "a" : [1.5, "\u00e9"] }}"#;
    let event = Event::from_json(input).unwrap();
    let json = event.data().as_json_data().unwrap();
    assert_eq!(json.text(), br#"{ "b" : 1, "a" : [1.5, "\u00e9"] }"#);
    assert_eq!(json.value(), &json!({"a": [1.5, "é"], "b": 1}));
    // The binary form keeps the text; the event reads back equal.
    let decoded = Event::decode_binary(&event.encode_binary()).unwrap();
    assert_eq!(decoded, event);
    assert_eq!(decoded.data().as_json_data().unwrap().text(), json.text());
    // What a JSON value cannot hold is refused, as before.
    for data in ["1e400", "[1e400]"] {
        let input = format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"order.placed","data":{data}}}"#
        );
        assert!(
            matches!(
                Event::from_json(input.as_bytes()),
                Err(EnvelopeError::MalformedJson { .. })
            ),
            "{data}"
        );
    }
    // Text data (a non-JSON media type) must still be a JSON string.
    let input = br#"{"specversion":"1.0","id":"1","source":"/s","type":"order.placed",
        "datacontenttype":"text/plain","data":"hello"}"#;
    assert_eq!(
        Event::from_json(input).unwrap().data(),
        &Data::Text("hello".into())
    );
    let input = br#"{"specversion":"1.0","id":"1","source":"/s","type":"order.placed",
        "datacontenttype":"text/plain","data":{"a":1}}"#;
    assert!(matches!(
        Event::from_json(input),
        Err(EnvelopeError::WrongType { .. })
    ));
}

#[test]
fn batch_items_that_are_not_objects_are_named_by_position() {
    for (item, found) in [
        ("[]", "an array"),
        ("1", "a number"),
        ("\"x\"", "a string"),
        ("null", "null"),
        ("true", "a boolean"),
    ] {
        let input = format!("[{}, {item}]", minimal());
        assert_eq!(
            Event::from_json_batch(input.as_bytes()),
            Err(EnvelopeError::InBatch {
                index: 1,
                source: Box::new(EnvelopeError::NotAnObject { found })
            }),
            "{item}"
        );
    }
    assert_eq!(
        Event::from_json_batch(b"\"x\""),
        Err(EnvelopeError::NotAnArray { found: "a string" })
    );
}

#[test]
fn a_bad_event_in_a_batch_is_reported_by_position() {
    let batch = json!([minimal(), without("source")]);
    let err = Event::from_json_batch(batch.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        err,
        EnvelopeError::InBatch {
            index: 1,
            source: Box::new(EnvelopeError::MissingAttribute {
                attribute: "source"
            })
        }
    );
    assert_eq!(
        err.to_string(),
        "event 1 of the batch: required attribute `source` is missing"
    );
    assert_eq!(err.attribute(), Some("source"));
    assert_eq!(err.code(), "envelope.missing_attribute");
}

#[test]
fn from_json_with_limits_rejects_large_events() {
    let big = with("data", json!("x".repeat(2_000)));
    let limits = Limits::with_max_event_bytes(1_000);
    let err = Event::from_json_with_limits(big.to_string().as_bytes(), &limits).unwrap_err();
    let EnvelopeError::TooLarge { size, limit } = err else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert_eq!(limit, 1_000);
    assert!(size > 2_000);
    assert!(Event::from_json(big.to_string().as_bytes()).is_ok());

    let batch = json!([minimal(), big]);
    let err =
        Event::from_json_batch_with_limits(batch.to_string().as_bytes(), &limits).unwrap_err();
    assert!(
        matches!(err, EnvelopeError::InBatch { index: 1, ref source } if matches!(**source, EnvelopeError::TooLarge { .. }))
    );
}

#[test]
fn a_repeated_member_keeps_its_last_value_as_in_a_json_object() {
    let input = br#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"order.placed",
        "myext":1.5,"myext":"ok","data":1,"data":{"n":2}}"#;
    let event = Event::from_json(input).unwrap();
    assert_eq!(event.id().as_str(), "2");
    assert_eq!(
        event.extension("myext"),
        Some(&ExtensionValue::String("ok".into()))
    );
    assert_eq!(event.data().as_json(), Some(&json!({"n": 2})));
    // Read through a JSON value, the same object gives the same event.
    let value: Value = serde_json::from_slice(input).unwrap();
    assert_eq!(Event::from_json_value(value).unwrap(), event);
}

#[test]
fn json_data_is_written_back_as_the_text_it_came_in() {
    // Numbers a JSON value cannot hold exactly, an exponent and a repeated key: a consumer
    // gets what the producer sent, byte for byte.
    let data =
        r#"{"big":12345678901234567890123,"neg":-9223372036854775809,"e":1E2,"dup":1,"dup":2}"#;
    let text = format!(
        r#"{{"specversion":"1.0","id":"n1","source":"/t","type":"order.placed","data": {data} }}"#
    );
    let event = Event::from_json(text.as_bytes()).unwrap();
    let written = event.to_json();
    assert!(written.contains(&format!(r#""data":{data}"#)), "{written}");
    let again = Event::from_json(written.as_bytes()).unwrap();
    assert_eq!(again.to_json(), written);
    // Pretty-printed data stays one line: its line breaks were whitespace.
    let pretty = text.replace(r#""big":"#, "\n  \"big\": ");
    let one_line = Event::from_json(pretty.as_bytes()).unwrap().to_json();
    assert!(!one_line.contains('\n'), "{one_line}");
    assert!(one_line.contains("12345678901234567890123"), "{one_line}");
    // Through the binary encoding (the log's) too.
    let decoded = Event::decode_binary(&event.encode_binary()).unwrap();
    assert_eq!(decoded.to_json(), written);
}
