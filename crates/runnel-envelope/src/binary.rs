//! The compact binary form the log stores. The layout is drawn in `docs/envelope-format.md`.
//!
//! In short: a format version byte, a 16-bit presence bitmap of optional attributes, the
//! three required strings, each present optional attribute in bitmap order, the extensions,
//! then the tagged data. Strings and byte runs are prefixed with their length as an unsigned
//! LEB128 varint; fixed-width integers are little-endian. Decoding checks every rule the
//! JSON reader checks, and rejects anything non-canonical, so re-encoding a decoded event
//! gives its bytes back. JSON data is stored as its text, as it came (see [`JsonData`]).

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::DateTime;

use crate::{
    Data, EnvelopeError, Event, EventId, EventType, ExtensionValue, JsonData, SchemaVersion,
    Source, TraceParent,
};

/// The version byte every encoding starts with.
pub const FORMAT_VERSION: u8 = 1;

/// Presence bits, in the order the optional attributes follow the required ones.
mod bit {
    pub const TIME: u16 = 1 << 0;
    pub const SUBJECT: u16 = 1 << 1;
    pub const DATA_CONTENT_TYPE: u16 = 1 << 2;
    pub const DATA_SCHEMA: u16 = 1 << 3;
    pub const CORRELATION_ID: u16 = 1 << 4;
    pub const CAUSATION_ID: u16 = 1 << 5;
    pub const TRACEPARENT: u16 = 1 << 6;
    pub const SCHEMA_VERSION: u16 = 1 << 7;
    pub const PARTITION_KEY: u16 = 1 << 8;
    pub const EXTENSIONS: u16 = 1 << 9;
    /// Every bit this version defines; the others must be zero.
    pub const KNOWN: u16 = (1 << 10) - 1;
}

/// Data kind tags.
mod data_tag {
    pub const NONE: u8 = 0;
    pub const JSON: u8 = 1;
    pub const BINARY: u8 = 2;
    pub const TEXT: u8 = 3;
}

/// Extension value tags.
mod ext_tag {
    pub const STRING: u8 = 0;
    pub const BOOLEAN: u8 = 1;
    pub const INTEGER: u8 = 2;
}

impl Event {
    /// The event in Runnel's binary form, as the log stores it.
    pub fn encode_binary(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_binary_into(&mut out);
        out
    }

    /// Appends the event's binary form to `out`.
    pub fn encode_binary_into(&self, out: &mut Vec<u8>) {
        encode(self, out);
    }

    /// The length of [`Event::encode_binary`]'s output, computed without allocating it.
    /// This is the size [`Event::check_size`] measures.
    pub fn encoded_len(&self) -> usize {
        let mut counter = Counter(0);
        encode(self, &mut counter);
        counter.0
    }

    /// Reads an event from its binary form. Garbage, truncated or non-canonical input is an
    /// error, never a panic; the whole input must be one event.
    pub fn decode_binary(input: &[u8]) -> Result<Event, EnvelopeError> {
        decode(&mut Reader {
            rest: input,
            owner: None,
        })
    }

    /// [`Event::decode_binary`] for input held in [`Bytes`]: the data is shared with `input`
    /// instead of copied.
    pub fn decode_binary_shared(input: &Bytes) -> Result<Event, EnvelopeError> {
        decode(&mut Reader {
            rest: input,
            owner: Some(input),
        })
    }
}

/// Where an encoding goes: bytes, or only their count.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn put_json(&mut self, json: &JsonData);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn put_json(&mut self, json: &JsonData) {
        put_bytes(self, json.text());
    }
}

struct Counter(usize);

impl Sink for Counter {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }

    fn put_json(&mut self, json: &JsonData) {
        self.0 += varint_len(json.text().len() as u64) + json.text().len();
    }
}

fn put_varint(out: &mut impl Sink, mut v: u64) {
    let mut buf = [0u8; 10];
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            buf[n] = byte;
            n += 1;
            break;
        }
        buf[n] = byte | 0x80;
        n += 1;
    }
    out.put(&buf[..n]);
}

fn varint_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

fn put_bytes(out: &mut impl Sink, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.put(bytes);
}

fn encode(e: &Event, out: &mut impl Sink) {
    let mut presence = 0u16;
    for (present, flag) in [
        (e.time.is_some(), bit::TIME),
        (e.subject.is_some(), bit::SUBJECT),
        (e.data_content_type.is_some(), bit::DATA_CONTENT_TYPE),
        (e.data_schema.is_some(), bit::DATA_SCHEMA),
        (e.correlation_id.is_some(), bit::CORRELATION_ID),
        (e.causation_id.is_some(), bit::CAUSATION_ID),
        (e.traceparent.is_some(), bit::TRACEPARENT),
        (e.schema_version.is_some(), bit::SCHEMA_VERSION),
        (e.partition_key.is_some(), bit::PARTITION_KEY),
        (!e.extensions.is_empty(), bit::EXTENSIONS),
    ] {
        if present {
            presence |= flag;
        }
    }
    out.put(&[FORMAT_VERSION]);
    out.put(&presence.to_le_bytes());
    put_bytes(out, e.id.as_str().as_bytes());
    put_bytes(out, e.source.as_str().as_bytes());
    put_bytes(out, e.event_type.as_str().as_bytes());
    if let Some(time) = e.time {
        out.put(&time.timestamp().to_le_bytes());
        out.put(&time.timestamp_subsec_nanos().to_le_bytes());
    }
    let strings = [
        &e.subject,
        &e.data_content_type,
        &e.data_schema,
        &e.correlation_id,
    ];
    for value in strings.into_iter().flatten() {
        put_bytes(out, value.as_bytes());
    }
    if let Some(id) = &e.causation_id {
        put_bytes(out, id.as_str().as_bytes());
    }
    if let Some(tp) = &e.traceparent {
        out.put(&[tp.version()]);
        out.put(&tp.trace_id());
        out.put(&tp.parent_id());
        out.put(&[tp.flags()]);
    }
    if let Some(v) = e.schema_version {
        put_varint(out, u64::from(v.get()));
    }
    if let Some(key) = &e.partition_key {
        put_bytes(out, key.as_bytes());
    }
    if !e.extensions.is_empty() {
        put_varint(out, e.extensions.len() as u64);
        for (name, value) in &e.extensions {
            // Names are 1 to 20 ASCII bytes, so one length byte suffices.
            out.put(&[name.len() as u8]);
            out.put(name.as_bytes());
            match value {
                ExtensionValue::String(s) => {
                    out.put(&[ext_tag::STRING]);
                    put_bytes(out, s.as_bytes());
                }
                ExtensionValue::Boolean(b) => out.put(&[ext_tag::BOOLEAN, u8::from(*b)]),
                ExtensionValue::Integer(i) => {
                    out.put(&[ext_tag::INTEGER]);
                    out.put(&i.to_le_bytes());
                }
            }
        }
    }
    match &e.data {
        Data::None => out.put(&[data_tag::NONE]),
        Data::Json(value) => {
            out.put(&[data_tag::JSON]);
            out.put_json(value);
        }
        Data::Binary(bytes) => {
            out.put(&[data_tag::BINARY]);
            put_bytes(out, bytes);
        }
        Data::Text(text) => {
            out.put(&[data_tag::TEXT]);
            put_bytes(out, text.as_bytes());
        }
    }
}

/// The unread rest of the input.
struct Reader<'a> {
    rest: &'a [u8],
    /// What `rest` is part of, when it can be shared.
    owner: Option<&'a Bytes>,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], EnvelopeError> {
        if n > self.rest.len() {
            return Err(EnvelopeError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], EnvelopeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, EnvelopeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// An unsigned LEB128 varint of at most 10 bytes, in its shortest form.
    fn varint(&mut self, field: &'static str) -> Result<u64, EnvelopeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = self.u8(field)?;
            let payload = u64::from(byte & 0x7f);
            if i == 9 && payload > 1 {
                return Err(malformed(field, "varint overflows 64 bits"));
            }
            value |= payload << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(malformed(field, "varint is not in its shortest form"));
                }
                return Ok(value);
            }
        }
        Err(malformed(field, "varint is longer than 10 bytes"))
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], EnvelopeError> {
        let len = self.varint(field)?;
        // A length that does not fit in memory cannot fit in the input either.
        let len = usize::try_from(len).map_err(|_| EnvelopeError::Truncated { field })?;
        self.take(len, field)
    }

    /// Bytes of the input as [`Bytes`], shared with the owner when there is one.
    fn shared_bytes(&mut self, field: &'static str) -> Result<Bytes, EnvelopeError> {
        let bytes = self.bytes(field)?;
        Ok(match self.owner {
            Some(owner) => owner.slice_ref(bytes),
            None => Bytes::copy_from_slice(bytes),
        })
    }

    fn string(&mut self, field: &'static str) -> Result<String, EnvelopeError> {
        let bytes = self.bytes(field)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| malformed(field, format!("not valid UTF-8: {e}")))
    }
}

fn malformed(field: &'static str, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::MalformedBinary {
        field,
        reason: reason.into(),
    }
}

fn decode(r: &mut Reader<'_>) -> Result<Event, EnvelopeError> {
    let version = r.u8("format version")?;
    if version != FORMAT_VERSION {
        return Err(EnvelopeError::UnsupportedFormatVersion { version });
    }
    let presence = u16::from_le_bytes(r.array("presence")?);
    if presence & !bit::KNOWN != 0 {
        return Err(malformed(
            "presence",
            format!(
                "unknown attribute bits set: {:#06x}",
                presence & !bit::KNOWN
            ),
        ));
    }
    let has = |flag: u16| presence & flag != 0;

    let id = EventId::new(r.string("id")?)?;
    let source = Source::new(r.string("source")?)?;
    let event_type = EventType::new(r.string("type")?)?;
    let time =
        if has(bit::TIME) {
            let secs = i64::from_le_bytes(r.array("time")?);
            let nanos = u32::from_le_bytes(r.array("time")?);
            Some(DateTime::from_timestamp(secs, nanos).ok_or_else(|| {
                malformed("time", format!("{secs} s + {nanos} ns is out of range"))
            })?)
        } else {
            None
        };
    let mut optional = |flag: u16, field: &'static str| -> Result<Option<String>, EnvelopeError> {
        if has(flag) {
            r.string(field).map(Some)
        } else {
            Ok(None)
        }
    };
    let subject = optional(bit::SUBJECT, "subject")?;
    let data_content_type = optional(bit::DATA_CONTENT_TYPE, "datacontenttype")?;
    let data_schema = optional(bit::DATA_SCHEMA, "dataschema")?;
    let correlation_id = optional(bit::CORRELATION_ID, "correlationid")?;
    let causation_id = optional(bit::CAUSATION_ID, "causationid")?
        .map(|id| {
            EventId::new(id).map_err(|_| {
                EnvelopeError::invalid("causationid", "must not be empty when present")
            })
        })
        .transpose()?;
    let traceparent = if has(bit::TRACEPARENT) {
        let version = r.u8("traceparent")?;
        let trace_id = r.array("traceparent")?;
        let parent_id = r.array("traceparent")?;
        let flags = r.u8("traceparent")?;
        Some(TraceParent::from_raw(version, trace_id, parent_id, flags)?)
    } else {
        None
    };
    let schema_version = if has(bit::SCHEMA_VERSION) {
        let v = r.varint("schemaversion")?;
        let v = u32::try_from(v)
            .map_err(|_| malformed("schemaversion", format!("{v} does not fit in 32 bits")))?;
        Some(SchemaVersion::new(v)?)
    } else {
        None
    };
    let partition_key = if has(bit::PARTITION_KEY) {
        Some(r.string("partitionkey")?)
    } else {
        None
    };
    let extensions = if has(bit::EXTENSIONS) {
        decode_extensions(r)?
    } else {
        BTreeMap::new()
    };
    let data = match r.u8("data")? {
        data_tag::NONE => Data::None,
        data_tag::JSON => {
            let text = r.shared_bytes("data")?;
            Data::Json(
                JsonData::from_text(text)
                    .map_err(|e| malformed("data", format!("invalid JSON: {e}")))?,
            )
        }
        data_tag::BINARY => Data::Binary(r.shared_bytes("data")?),
        data_tag::TEXT => Data::Text(r.string("data")?),
        tag => return Err(malformed("data", format!("unknown data kind tag {tag}"))),
    };
    if !r.rest.is_empty() {
        return Err(malformed(
            "end",
            format!("{} unexpected bytes after the data", r.rest.len()),
        ));
    }
    Event {
        id,
        source,
        event_type,
        time,
        subject,
        data_content_type,
        data_schema,
        data,
        correlation_id,
        causation_id,
        traceparent,
        schema_version,
        partition_key,
        extensions,
    }
    .validate_stored()
}

fn decode_extensions(
    r: &mut Reader<'_>,
) -> Result<BTreeMap<String, ExtensionValue>, EnvelopeError> {
    let count = r.varint("extensions")?;
    if count == 0 {
        return Err(malformed(
            "extensions",
            "the presence bit is set but the count is 0",
        ));
    }
    let mut extensions = BTreeMap::new();
    let mut previous: Option<String> = None;
    for _ in 0..count {
        let len = r.u8("extension name")?;
        let name = r.take(usize::from(len), "extension name")?;
        let name = std::str::from_utf8(name)
            .map_err(|e| malformed("extension name", format!("not valid UTF-8: {e}")))?
            .to_owned();
        if previous.as_ref().is_some_and(|p| *p >= name) {
            return Err(malformed(
                "extension name",
                format!("`{name}` is repeated or out of order; names are stored sorted"),
            ));
        }
        let value = match r.u8("extension value")? {
            ext_tag::STRING => ExtensionValue::String(r.string("extension value")?),
            ext_tag::BOOLEAN => match r.u8("extension value")? {
                0 => ExtensionValue::Boolean(false),
                1 => ExtensionValue::Boolean(true),
                b => {
                    return Err(malformed(
                        "extension value",
                        format!("boolean byte must be 0 or 1, got {b}"),
                    ));
                }
            },
            ext_tag::INTEGER => {
                ExtensionValue::Integer(i32::from_le_bytes(r.array("extension value")?))
            }
            tag => {
                return Err(malformed(
                    "extension value",
                    format!("unknown extension value tag {tag}"),
                ));
            }
        };
        extensions.insert(name.clone(), value);
        previous = Some(name);
    }
    Ok(extensions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_match_the_encoder() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(
                Reader {
                    rest: &out,
                    owner: None
                }
                .varint("x"),
                Ok(v)
            );
        }
    }

    #[test]
    fn non_canonical_or_overflowing_varints_are_rejected() {
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0xff; 11],
        ] {
            assert!(matches!(
                Reader {
                    rest: bad,
                    owner: None
                }
                .varint("x"),
                Err(EnvelopeError::MalformedBinary { .. })
            ));
        }
        assert_eq!(
            Reader {
                rest: &[0x80],
                owner: None
            }
            .varint("x"),
            Err(EnvelopeError::Truncated { field: "x" })
        );
    }
}
