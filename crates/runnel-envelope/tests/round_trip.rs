//! Both formats against random events, the binary form against random and damaged bytes,
//! and the binary layout pinned byte for byte.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use runnel_envelope::{
    Data, EnvelopeError, Event, EventId, EventType, ExtensionValue, FORMAT_VERSION, Source,
    TraceParent, validate_extension_name,
};
use serde_json::{Value, json};

fn event_type() -> impl Strategy<Value = EventType> {
    "[a-z][a-z0-9_]{0,6}(\\.[a-z][a-z0-9_]{0,6}){1,3}"
        .prop_map(|s| EventType::new(s).expect("the pattern only makes valid types"))
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    // 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z, the years RFC 3339 can write.
    (-62_167_219_200_i64..=253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(s, ns)| DateTime::from_timestamp(s, ns).expect("the range is within chrono's"))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(".{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn any_content_type() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("application/octet-stream".to_owned()),
        Just("application/json".to_owned()),
        Just("text/plain; charset=utf-8".to_owned()),
        Just("application/vnd.apache.thrift.binary".to_owned()),
    ]
}

fn data() -> impl Strategy<Value = (Data, Option<String>)> {
    let json_ct = prop_oneof![
        Just("application/json".to_owned()),
        Just("application/cloudevents+json".to_owned()),
        Just("text/json; charset=utf-8".to_owned()),
    ];
    let text_ct = prop_oneof![
        Just("text/plain".to_owned()),
        Just("application/xml".to_owned()),
        Just("text/csv; charset=utf-8".to_owned()),
    ];
    prop_oneof![
        option::of(any_content_type()).prop_map(|ct| (Data::None, ct)),
        (json_value(), option::of(json_ct)).prop_map(|(v, ct)| (Data::Json(v.into()), ct)),
        (vec(any::<u8>(), 0..64), option::of(any_content_type()))
            .prop_map(|(b, ct)| (Data::Binary(b.into()), ct)),
        (".{0,32}", text_ct).prop_map(|(t, ct)| (Data::Text(t), Some(ct))),
    ]
}

fn extension_value() -> impl Strategy<Value = ExtensionValue> {
    prop_oneof![
        ".{0,12}".prop_map(ExtensionValue::String),
        any::<bool>().prop_map(ExtensionValue::Boolean),
        any::<i32>().prop_map(ExtensionValue::Integer),
    ]
}

fn extensions() -> impl Strategy<Value = BTreeMap<String, ExtensionValue>> {
    btree_map(
        "[a-z0-9]{1,20}".prop_filter("reserved names have their own fields", |n| {
            validate_extension_name(n).is_ok()
        }),
        extension_value(),
        0..4,
    )
}

fn traceparent() -> impl Strategy<Value = TraceParent> {
    (0u8..0xff, any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())
        .prop_filter("ids are not all zeros", |(_, t, p, _)| {
            *t != [0; 16] && *p != [0; 8]
        })
        .prop_map(|(v, t, p, f)| {
            format!("{v:02x}-{}-{}-{f:02x}", hex(&t), hex(&p))
                .parse()
                .expect("a valid traceparent")
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn event() -> impl Strategy<Value = Event> {
    // A source is a URI-reference: unreserved characters, delimiters and %XX escapes.
    let required = (
        ".{1,24}",
        "([A-Za-z0-9._~:/?@!$&'()*+,;=-]|%[0-9A-F]{2}){1,24}",
        event_type(),
    );
    let optional = (
        option::of(time()),
        option::of(".{1,16}"),
        // An absolute URI: a scheme, a colon, then anything but whitespace and controls.
        option::of("[a-z][a-z0-9+.-]{0,8}:[^\\s\\p{Cc}]{0,24}"),
        option::of(".{1,16}"),
        option::of(".{1,16}"),
        option::of(traceparent()),
        option::of(1u32..=i32::MAX as u32),
        option::of(".{1,16}"),
    );
    (required, optional, data(), extensions()).prop_map(
        |(
            (id, source, ty),
            (time, subject, schema, correlation, causation, tp, version, key),
            (data, ct),
            exts,
        )| {
            let mut b = Event::builder(ty, Source::new(source).expect("non-empty"))
                .id(EventId::new(id).expect("non-empty"))
                .data(data, ct);
            b = match time {
                Some(t) => b.time(t),
                None => b.without_time(),
            };
            if let Some(s) = subject {
                b = b.subject(s);
            }
            if let Some(s) = schema {
                b = b.data_schema(s);
            }
            if let Some(c) = correlation {
                b = b.correlation_id(c);
            }
            if let Some(c) = causation {
                b = b.causation_id(EventId::new(c).expect("non-empty"));
            }
            if let Some(tp) = tp {
                b = b.traceparent(tp);
            }
            if let Some(v) = version {
                b = b.schema_version(v);
            }
            if let Some(k) = key {
                b = b.partition_key(k);
            }
            for (name, value) in exts {
                b = b.extension(name, value);
            }
            b.build().expect("the strategy only makes valid events")
        },
    )
}

proptest! {
    #[test]
    fn random_events_round_trip_through_the_binary_form(event in event()) {
        let bytes = event.encode_binary();
        prop_assert_eq!(bytes[0], FORMAT_VERSION);
        prop_assert_eq!(event.encoded_len(), bytes.len());
        prop_assert_eq!(Event::decode_binary(&bytes)?, event);
    }

    #[test]
    fn random_events_round_trip_through_json(event in event()) {
        let json = event.to_json();
        prop_assert_eq!(Event::from_json(json.as_bytes())?, event.clone());
        let batch = Event::to_json_batch(&[event.clone(), event.clone()]);
        prop_assert_eq!(Event::from_json_batch(batch.as_bytes())?, vec![event.clone(), event]);
    }

    #[test]
    fn every_strict_prefix_of_an_encoding_is_rejected(event in event()) {
        let bytes = event.encode_binary();
        for end in 0..bytes.len() {
            prop_assert!(Event::decode_binary(&bytes[..end]).is_err(), "prefix of {} bytes", end);
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let _ = Event::decode_binary(&bytes);
    }

    #[test]
    fn random_bytes_after_the_version_byte_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let mut input = vec![FORMAT_VERSION];
        input.extend_from_slice(&bytes);
        let _ = Event::decode_binary(&input);
    }

    #[test]
    fn damaged_encodings_never_panic_and_what_decodes_is_valid(
        event in event(),
        damage in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = event.encode_binary();
        for (at, value) in damage {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(decoded) = Event::decode_binary(&bytes) {
            prop_assert_eq!(Event::decode_binary(&decoded.encode_binary())?, decoded);
        }
    }

    #[test]
    fn random_json_never_panics(value in json_value()) {
        let _ = Event::from_json_value(value.clone());
        let _ = Event::from_json_value(json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "a.b", "data": value.clone(),
            "datacontenttype": "text/plain",
        }));
        let _ = Event::from_json(value.to_string().as_bytes());
    }
}

#[test]
fn the_binary_layout_is_pinned() {
    // The example drawn in docs/envelope-format.md.
    let event = Event::builder(EventType::new("a.b").unwrap(), Source::new("/s").unwrap())
        .id(EventId::new("e1").unwrap())
        .time(Utc.with_ymd_and_hms(2018, 4, 5, 17, 31, 0).unwrap())
        .partition_key("k")
        .extension("x", true)
        .data_json(json!({"n": 1}))
        .build()
        .unwrap();
    #[rustfmt::skip]
    let expected: &[u8] = &[
        0x01,                                           // format version
        0x05, 0x03,                                     // presence: time, datacontenttype, partitionkey, extensions
        0x02, b'e', b'1',                               // id
        0x02, b'/', b's',                               // source
        0x03, b'a', b'.', b'b',                         // type
        0x54, 0x5d, 0xc6, 0x5a, 0x00, 0x00, 0x00, 0x00, // time: seconds (i64 LE)
        0x00, 0x00, 0x00, 0x00,                         // time: nanoseconds (u32 LE)
        0x10, b'a', b'p', b'p', b'l', b'i', b'c', b'a', b't', b'i', b'o', b'n',
              b'/', b'j', b's', b'o', b'n',             // datacontenttype
        0x01, b'k',                                     // partitionkey
        0x01,                                           // extension count
        0x01, b'x', 0x01, 0x01,                         // name `x`, boolean, true
        0x01, 0x07, b'{', b'"', b'n', b'"', b':', b'1', b'}', // data: JSON, 7 bytes
    ];
    assert_eq!(event.encode_binary(), expected);
    assert_eq!(Event::decode_binary(expected).unwrap(), event);
}

#[test]
fn json_floats_read_back_bit_exact_from_both_formats() {
    let data = json!([1.824_276_674_684_247_7e-308, 0.1 + 0.2, -0.0, 1e300, 5e-324]);
    let event = Event::builder(EventType::new("a.b").unwrap(), Source::new("/s").unwrap())
        .data_json(data.clone())
        .build()
        .unwrap();
    let from_binary = Event::decode_binary(&event.encode_binary()).unwrap();
    let from_json = Event::from_json(event.to_json().as_bytes()).unwrap();
    for decoded in [from_binary, from_json] {
        let floats = decoded.data().as_json().and_then(Value::as_array).unwrap();
        let bits: Vec<_> = floats
            .iter()
            .filter_map(Value::as_f64)
            .map(f64::to_bits)
            .collect();
        let expected: Vec<_> = data
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .map(f64::to_bits)
            .collect();
        assert_eq!(bits, expected);
    }
}

#[test]
fn an_unknown_format_version_is_rejected() {
    assert_eq!(
        Event::decode_binary(&[2, 0, 0]),
        Err(EnvelopeError::UnsupportedFormatVersion { version: 2 })
    );
    assert_eq!(
        Event::decode_binary(&[]),
        Err(EnvelopeError::Truncated {
            field: "format version"
        })
    );
}

#[test]
fn unknown_presence_bits_data_tags_and_trailing_bytes_are_rejected() {
    let minimal = Event::builder(EventType::new("a.b").unwrap(), Source::new("/s").unwrap())
        .id(EventId::new("e").unwrap())
        .without_time()
        .build()
        .unwrap();
    let bytes = minimal.encode_binary();
    assert_eq!(
        bytes,
        [1, 0, 0, 1, b'e', 2, b'/', b's', 3, b'a', b'.', b'b', 0]
    );

    let mut unknown_bit = bytes.clone();
    unknown_bit[2] = 0x80;
    assert!(matches!(
        Event::decode_binary(&unknown_bit),
        Err(EnvelopeError::MalformedBinary {
            field: "presence",
            ..
        })
    ));

    let mut unknown_tag = bytes.clone();
    *unknown_tag.last_mut().unwrap() = 9;
    assert!(matches!(
        Event::decode_binary(&unknown_tag),
        Err(EnvelopeError::MalformedBinary { field: "data", .. })
    ));

    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        Event::decode_binary(&trailing),
        Err(EnvelopeError::MalformedBinary { field: "end", .. })
    ));

    let mut bad_type = bytes;
    bad_type[9] = b'A';
    assert!(matches!(
        Event::decode_binary(&bad_type),
        Err(EnvelopeError::InvalidEventType { .. })
    ));
}

#[test]
fn extensions_out_of_order_are_rejected() {
    let event = Event::builder(EventType::new("a.b").unwrap(), Source::new("/s").unwrap())
        .id(EventId::new("e").unwrap())
        .without_time()
        .extension("a", true)
        .extension("b", true)
        .build()
        .unwrap();
    let mut bytes = event.encode_binary();
    // Layout after the type: count, then `01 'a' 01 01`, `01 'b' 01 01`; swap the names.
    let first = bytes.len() - 9;
    assert_eq!(&bytes[first..], [1, b'a', 1, 1, 1, b'b', 1, 1, 0]);
    bytes[first + 1] = b'b';
    bytes[first + 5] = b'a';
    assert!(matches!(
        Event::decode_binary(&bytes),
        Err(EnvelopeError::MalformedBinary {
            field: "extension name",
            ..
        })
    ));
}
