//! Building events: defaults, setters, and the rules `build` enforces.

use chrono::{TimeZone, Utc};
use runnel_envelope::{
    Data, EnvelopeError, Event, EventId, EventType, ExtensionValue, Limits, Source, TraceParent,
};
use serde_json::json;

fn order_placed() -> runnel_envelope::EventBuilder {
    Event::builder(
        EventType::new("order.placed").unwrap(),
        Source::new("/shop/checkout").unwrap(),
    )
}

#[test]
fn build_defaults_to_a_uuid_v7_id_and_the_current_time() {
    let before = Utc::now();
    let event = order_placed().build().unwrap();
    let after = Utc::now();

    let id = uuid::Uuid::parse_str(event.id().as_str()).unwrap();
    assert_eq!(id.get_version_num(), 7);
    let time = event.time().unwrap();
    assert!(before <= time && time <= after);
    assert_eq!(event.spec_version(), "1.0");
    assert_eq!(event.data(), &Data::None);
    assert_eq!(event.subject(), None);
    assert!(event.extensions().is_empty());
}

#[test]
fn each_build_gets_a_fresh_id() {
    let a = order_placed().build().unwrap();
    let b = order_placed().build().unwrap();
    assert_ne!(a.id(), b.id());
}

#[test]
fn setters_set_every_attribute() {
    let time = Utc.with_ymd_and_hms(2024, 9, 1, 12, 0, 0).unwrap();
    let tp: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .unwrap();
    let event = order_placed()
        .id(EventId::new("order-42-placed").unwrap())
        .time(time)
        .subject("order-42")
        .data_json(json!({"order": 42}))
        .data_schema("https://schemas.example.com/order/placed/2")
        .partition_key("customer-9")
        .correlation_id("req-7")
        .causation_id(EventId::new("cart-1-checked-out").unwrap())
        .traceparent(tp)
        .schema_version(2)
        .extension("tenant", "acme")
        .extension("retries", 3)
        .extension("vip", true)
        .build()
        .unwrap();
    assert_eq!(event.id().as_str(), "order-42-placed");
    assert_eq!(event.time(), Some(time));
    assert_eq!(event.subject(), Some("order-42"));
    assert_eq!(event.data().as_json(), Some(&json!({"order": 42})));
    assert_eq!(event.data_content_type(), Some("application/json"));
    assert_eq!(
        event.data_schema(),
        Some("https://schemas.example.com/order/placed/2")
    );
    assert_eq!(event.partition_key(), Some("customer-9"));
    assert_eq!(event.correlation_id(), Some("req-7"));
    assert_eq!(
        event.causation_id().map(EventId::as_str),
        Some("cart-1-checked-out")
    );
    assert_eq!(event.traceparent(), Some(&tp));
    assert_eq!(event.schema_version().map(|v| v.get()), Some(2));
    assert_eq!(
        event.extension("tenant"),
        Some(&ExtensionValue::String("acme".into()))
    );
    assert_eq!(
        event.extension("retries"),
        Some(&ExtensionValue::Integer(3))
    );
    assert_eq!(event.extension("vip"), Some(&ExtensionValue::Boolean(true)));
}

#[test]
fn data_json_keeps_a_json_media_type_set_before_or_after() {
    let before = order_placed()
        .data_content_type("application/vnd.acme.order+json")
        .data_json(json!(1))
        .build()
        .unwrap();
    let after = order_placed()
        .data_json(json!(1))
        .data_content_type("application/vnd.acme.order+json")
        .build()
        .unwrap();
    assert_eq!(
        before.data_content_type(),
        Some("application/vnd.acme.order+json")
    );
    assert_eq!(before.data_content_type(), after.data_content_type());
}

#[test]
fn binary_and_text_data_carry_their_media_type() {
    let event = order_placed()
        .data_binary(vec![1u8, 2, 3], "application/octet-stream")
        .build()
        .unwrap();
    assert_eq!(
        event.data().as_binary().map(|b| &b[..]),
        Some(&[1u8, 2, 3][..])
    );
    assert_eq!(event.data_content_type(), Some("application/octet-stream"));

    let event = order_placed()
        .data_text("hello", "text/plain; charset=utf-8")
        .build()
        .unwrap();
    assert_eq!(event.data().as_text(), Some("hello"));
}

#[test]
fn build_rejects_json_data_with_a_non_json_media_type() {
    let err = order_placed()
        .data_json(json!(1))
        .data_content_type("application/xml")
        .build()
        .unwrap_err();
    assert_eq!(err.attribute(), Some("datacontenttype"));
}

#[test]
fn build_rejects_text_data_with_a_json_media_type() {
    let err = order_placed()
        .data_text("{}", "application/json")
        .build()
        .unwrap_err();
    assert_eq!(err.attribute(), Some("datacontenttype"));
}

#[test]
fn build_rejects_bad_extension_names_and_reserved_ones() {
    for name in [
        "Tenant",
        "ten_ant",
        "",
        "averyveryverylongname",
        "traceparent",
        "id",
    ] {
        let err = order_placed().extension(name, "x").build().unwrap_err();
        assert!(
            matches!(err, EnvelopeError::InvalidExtensionName { name: ref n, .. } if n == name),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn build_rejects_empty_strings_and_a_zero_schema_version() {
    assert!(order_placed().subject("").build().is_err());
    assert!(order_placed().partition_key("").build().is_err());
    assert!(order_placed().correlation_id("").build().is_err());
    let err = order_placed().schema_version(0).build().unwrap_err();
    assert_eq!(err.attribute(), Some("schemaversion"));
}

#[test]
fn build_rejects_times_rfc3339_cannot_write() {
    let time = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
    let err = order_placed().time(time).build().unwrap_err();
    assert_eq!(err.attribute(), Some("time"));
}

#[test]
fn without_time_leaves_time_unset() {
    let event = order_placed().without_time().build().unwrap();
    assert_eq!(event.time(), None);
}

#[test]
fn caused_by_links_an_output_to_its_input() {
    let input = order_placed().build().unwrap();
    let output = Event::builder(
        EventType::new("payment.charged").unwrap(),
        Source::new("/payments").unwrap(),
    )
    .id(input.derived_id("payments", 0))
    .caused_by(&input)
    .build()
    .unwrap();
    assert_eq!(output.causation_id(), Some(input.id()));
    assert_eq!(output.correlation_id(), Some(input.id().as_str()));
    assert_eq!(
        output.id(),
        &EventId::derived("payments", input.source(), input.id(), 0)
    );

    let next = order_placed().caused_by(&output).build().unwrap();
    assert_eq!(next.correlation_id(), Some(input.id().as_str()));
    assert_eq!(next.causation_id(), Some(output.id()));
}

#[test]
fn derived_ids_are_deterministic() {
    let input = order_placed().build().unwrap();
    assert_eq!(input.derived_id("g", 1), input.derived_id("g", 1));
    assert_ne!(input.derived_id("g", 0), input.derived_id("g", 1));
    assert_ne!(input.derived_id("g", 0), input.derived_id("h", 0));
}

#[test]
fn into_builder_keeps_id_and_time() {
    let event = order_placed().data_json(json!({"v": 1})).build().unwrap();
    let upcast = event
        .clone()
        .into_builder()
        .data_json(json!({"v": 1, "currency": "EUR"}))
        .schema_version(2)
        .build()
        .unwrap();
    assert_eq!(upcast.id(), event.id());
    assert_eq!(upcast.time(), event.time());
    assert_eq!(upcast.schema_version().map(|v| v.get()), Some(2));
    assert_eq!(event.clone().into_builder().build().unwrap(), event);
}

#[test]
fn check_size_names_both_sizes() {
    let event = order_placed()
        .data_binary(vec![0u8; 2_000_000], "application/octet-stream")
        .build()
        .unwrap();
    let err = event.check_size(&Limits::default()).unwrap_err();
    let size = event.encoded_len();
    assert_eq!(
        err,
        EnvelopeError::TooLarge {
            size,
            limit: 1_048_576
        }
    );
    assert_eq!(
        err.to_string(),
        format!("event is {size} bytes encoded, over the limit of 1048576 bytes")
    );
    assert_eq!(err.code(), "envelope.too_large");
    assert!(
        event
            .check_size(&Limits::with_max_event_bytes(size))
            .is_ok()
    );
    assert!(
        event
            .check_size(&Limits::with_max_event_bytes(size - 1))
            .is_err()
    );
}

#[test]
fn default_limit_is_one_mebibyte() {
    assert_eq!(Limits::default().max_event_bytes, 1_048_576);
    let limits: Limits = serde_json::from_value(json!({})).unwrap();
    assert_eq!(limits, Limits::default());
}
