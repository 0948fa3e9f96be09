//! The CloudEvents JSON event format (`application/cloudevents+json`) and JSON batch format
//! (`application/cloudevents-batch+json`).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::data::{is_json_content_type, visit_scalars};
// The attributes the reader keeps in fixed places: every one but `data`.
use crate::event::SPEC_VERSION;
use crate::extension::ATTRIBUTE_NAMES as ATTRIBUTES;
use crate::extension::validate_extension_name;
use crate::{
    Data, EnvelopeError, Event, EventId, EventType, ExtensionValue, JsonData, Limits,
    SchemaVersion, Source, TraceParent,
};

/// Standard base64 (RFC 4648 §4). Written with padding; read with or without it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl Event {
    /// The event in the CloudEvents JSON format, as a JSON object.
    ///
    /// JSON data goes in `data` as a JSON value, text data in `data` as a JSON string, binary
    /// data in `data_base64` as standard padded base64. `time` is written in UTC with a `Z`
    /// and as many fractional digits as it needs (0, 3, 6 or 9). Unset attributes are omitted.
    pub fn to_json_value(&self) -> Value {
        Value::Object(self.json_members(true))
    }

    /// The members of the JSON form; `data` (or `data_base64`) only `with_data`.
    fn json_members(&self, with_data: bool) -> Map<String, Value> {
        let mut map = Map::new();
        let mut put = |name: &str, value: Value| {
            map.insert(name.to_owned(), value);
        };
        put("specversion", SPEC_VERSION.into());
        put("id", self.id.as_str().into());
        put("source", self.source.as_str().into());
        put("type", self.event_type.as_str().into());
        if let Some(time) = self.time {
            put("time", format_time(time).into());
        }
        for (name, value) in [
            ("subject", &self.subject),
            ("datacontenttype", &self.data_content_type),
            ("dataschema", &self.data_schema),
            ("correlationid", &self.correlation_id),
            ("partitionkey", &self.partition_key),
        ] {
            if let Some(value) = value {
                put(name, value.as_str().into());
            }
        }
        if let Some(id) = &self.causation_id {
            put("causationid", id.as_str().into());
        }
        if let Some(tp) = &self.traceparent {
            put("traceparent", tp.to_string().into());
        }
        if let Some(v) = self.schema_version {
            put("schemaversion", v.get().into());
        }
        match &self.data {
            _ if !with_data => {}
            Data::None => {}
            Data::Json(json) => put("data", json.value().clone()),
            Data::Text(text) => put("data", text.as_str().into()),
            Data::Binary(bytes) => put("data_base64", BASE64.encode(bytes).into()),
        }
        for (name, value) in &self.extensions {
            put(name, value.to_json_value());
        }
        map
    }

    /// The event in the CloudEvents JSON format (`application/cloudevents+json`), compact.
    /// JSON data is written as the text it was published with, so nothing a JSON value
    /// cannot hold exactly (integers past 64 bits, `1E2` against `100.0`, repeated keys) is
    /// changed on the way through.
    pub fn to_json(&self) -> String {
        let Data::Json(json) = &self.data else {
            return self.to_json_value().to_string();
        };
        let Ok(data) = std::str::from_utf8(json.text()) else {
            return self.to_json_value().to_string();
        };
        let mut head = Value::Object(self.json_members(false)).to_string();
        // `head` is a JSON object with at least `specversion`: it ends with `}`.
        head.pop();
        head.push_str(",\"data\":");
        // Line breaks in JSON text are whitespace (a string cannot hold one unescaped): kept
        // out, the event stays on one line, as line-based readers (SSE, JSON lines) need.
        head.extend(data.trim().chars().map(|c| match c {
            '\n' | '\r' => ' ',
            c => c,
        }));
        head.push('}');
        head
    }

    /// Reads one event in the CloudEvents JSON format, with the default [`Limits`].
    pub fn from_json(input: &[u8]) -> Result<Event, EnvelopeError> {
        Self::from_json_with_limits(input, &Limits::default())
    }

    /// Reads one event in the CloudEvents JSON format and checks its size against `limits`
    /// (on its binary encoding, see [`Event::check_size`]).
    pub fn from_json_with_limits(input: &[u8], limits: &Limits) -> Result<Event, EnvelopeError> {
        let event = parse::<Item>(input)?.into_event()?;
        event.check_size(limits)?;
        Ok(event)
    }

    /// Reads one event from a JSON value in the CloudEvents JSON format. No size check.
    ///
    /// `null` members count as absent, except `data: null`, which is an explicit null JSON
    /// payload. Members other than the known attributes are extension attributes: their
    /// names must be valid and their values strings, booleans or 32-bit integers.
    pub fn from_json_value(value: Value) -> Result<Event, EnvelopeError> {
        let Value::Object(mut map) = value else {
            return Err(EnvelopeError::NotAnObject {
                found: kind(&value),
            });
        };
        let data = map.remove("data").map(DataMember::Value);
        Self::from_members(map, data)
    }

    /// An event from its attributes and its `data` member, kept apart.
    fn from_members(
        mut map: impl Members,
        data: Option<DataMember>,
    ) -> Result<Event, EnvelopeError> {
        match take(&mut map, "specversion") {
            None => {
                return Err(EnvelopeError::MissingAttribute {
                    attribute: "specversion",
                });
            }
            Some(Value::String(v)) if v == SPEC_VERSION => {}
            Some(Value::String(v)) => {
                return Err(EnvelopeError::UnsupportedSpecVersion { found: v });
            }
            Some(other) => return Err(wrong_type("specversion", "a string", &other)),
        }
        let id = EventId::new(required_string(&mut map, "id")?)?;
        let source = Source::new(required_string(&mut map, "source")?)?;
        let event_type = EventType::new(required_string(&mut map, "type")?)?;
        let time = optional_string(&mut map, "time")?
            .map(|s| parse_time(&s))
            .transpose()?;
        let subject = optional_string(&mut map, "subject")?;
        let data_content_type = optional_string(&mut map, "datacontenttype")?;
        let data_schema = optional_string(&mut map, "dataschema")?;
        let correlation_id = optional_string(&mut map, "correlationid")?;
        let causation_id = optional_string(&mut map, "causationid")?
            .map(|id| {
                EventId::new(id).map_err(|_| {
                    EnvelopeError::invalid("causationid", "must not be empty when present")
                })
            })
            .transpose()?;
        let traceparent = optional_string(&mut map, "traceparent")?
            .map(|s| TraceParent::parse(&s))
            .transpose()?;
        let schema_version = match take(&mut map, "schemaversion") {
            None => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| {
                        EnvelopeError::invalid(
                            "schemaversion",
                            format!(
                                "must be a positive integer no larger than {}, got {n}",
                                SchemaVersion::MAX
                            ),
                        )
                    })
                    .and_then(SchemaVersion::new)?,
            ),
            Some(other) => return Err(wrong_type("schemaversion", "an integer", &other)),
        };
        let partition_key = optional_string(&mut map, "partitionkey")?;
        let data = read_data(&mut map, data, data_content_type.as_deref())?;
        let mut extensions = std::collections::BTreeMap::new();
        for (name, value) in map.into_rest() {
            validate_extension_name(&name)?;
            if let Some(value) = extension_value(&name, value)? {
                extensions.insert(name, value);
            }
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
        .validate()
    }

    /// Events in the CloudEvents JSON batch format (`application/cloudevents-batch+json`):
    /// a JSON array of events.
    pub fn to_json_batch(events: &[Event]) -> String {
        Value::Array(events.iter().map(Event::to_json_value).collect()).to_string()
    }

    /// Reads a JSON batch with the default [`Limits`]. An empty array is a valid batch.
    pub fn from_json_batch(input: &[u8]) -> Result<Vec<Event>, EnvelopeError> {
        Self::from_json_batch_with_limits(input, &Limits::default())
    }

    /// Reads a JSON batch, checking each event against `limits`. The first invalid event
    /// fails the whole batch with [`EnvelopeError::InBatch`] naming its position.
    pub fn from_json_batch_with_limits(
        input: &[u8],
        limits: &Limits,
    ) -> Result<Vec<Event>, EnvelopeError> {
        let items = match parse::<Batch>(input)? {
            Batch::Items(items) => items,
            Batch::Other(found) => return Err(EnvelopeError::NotAnArray { found }),
        };
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                item.into_event()
                    .and_then(|event| event.check_size(limits).map(|()| event))
                    .map_err(|source| EnvelopeError::InBatch {
                        index,
                        source: Box::new(source),
                    })
            })
            .collect()
    }
}

impl Serialize for Event {
    /// Serializes as the CloudEvents JSON format object.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Event {
    /// Deserializes from the CloudEvents JSON format object, with every check of
    /// [`Event::from_json_value`] (no size limit).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Event::from_json_value(value).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, EnvelopeError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            EnvelopeError::invalid(
                "time",
                format!("expected an RFC 3339 timestamp such as `2018-04-05T17:31:00Z`, got `{s}`"),
            )
        })
}

fn parse<T: serde::de::DeserializeOwned>(input: &[u8]) -> Result<T, EnvelopeError> {
    serde_json::from_slice(input).map_err(|e| EnvelopeError::MalformedJson {
        reason: e.to_string(),
    })
}

/// The members of an event object other than `data`, as the reader takes them apart.
trait Members {
    /// Removes the member `name` (one of [`ATTRIBUTES`]).
    fn remove(&mut self, name: &str) -> Option<Value>;
    /// What is left: the extension attributes, each name once.
    fn into_rest(self) -> impl Iterator<Item = (String, Value)>;
}

impl Members for Map<String, Value> {
    fn remove(&mut self, name: &str) -> Option<Value> {
        Map::remove(self, name)
    }

    fn into_rest(self) -> impl Iterator<Item = (String, Value)> {
        self.into_iter()
    }
}

/// Members read straight from JSON text: known attributes in fixed places (no map, no key
/// strings), extensions in order.
#[derive(Default)]
struct ReadMembers {
    known: [Option<Value>; ATTRIBUTES.len()],
    rest: Vec<(String, Value)>,
}

impl ReadMembers {
    /// Sets a member; a repeated name keeps the last value, as a JSON object map does.
    fn set(&mut self, name: MemberName, value: Value) {
        match name {
            MemberName::Known(i) => self.known[i] = Some(value),
            MemberName::Other(name) => match self.rest.iter_mut().find(|(n, _)| *n == name) {
                Some(member) => member.1 = value,
                None => self.rest.push((name, value)),
            },
            MemberName::Data => {}
        }
    }
}

impl Members for ReadMembers {
    fn remove(&mut self, name: &str) -> Option<Value> {
        let i = ATTRIBUTES.iter().position(|a| *a == name)?;
        self.known[i].take()
    }

    fn into_rest(self) -> impl Iterator<Item = (String, Value)> {
        self.rest.into_iter()
    }
}

/// A member name as read, matched without allocating for the names the reader knows.
enum MemberName {
    Known(usize),
    Data,
    Other(String),
}

impl<'de> Deserialize<'de> for MemberName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl Visitor<'_> for NameVisitor {
            type Value = MemberName;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }

            fn visit_str<E>(self, name: &str) -> Result<MemberName, E> {
                Ok(match ATTRIBUTES.iter().position(|a| *a == name) {
                    Some(i) => MemberName::Known(i),
                    None if name == "data" => MemberName::Data,
                    None => MemberName::Other(name.to_owned()),
                })
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

/// Removes a member, treating `null` as absent.
fn take(map: &mut impl Members, name: &str) -> Option<Value> {
    map.remove(name).filter(|v| !v.is_null())
}

fn required_string(map: &mut impl Members, name: &'static str) -> Result<String, EnvelopeError> {
    match take(map, name) {
        None => Err(EnvelopeError::MissingAttribute { attribute: name }),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(wrong_type(name, "a string", &other)),
    }
}

fn optional_string(map: &mut impl Members, name: &str) -> Result<Option<String>, EnvelopeError> {
    match take(map, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(name, "a string", &other)),
    }
}

/// The `data` member as read: a value, or (from [`Event::from_json`]) its text.
enum DataMember {
    Value(Value),
    Text(Box<RawValue>),
}

fn read_data(
    map: &mut impl Members,
    data: Option<DataMember>,
    content_type: Option<&str>,
) -> Result<Data, EnvelopeError> {
    // `data: null` is an explicit null payload; `data_base64: null` is absent.
    let base64 = take(map, "data_base64");
    match (data, base64) {
        (Some(_), Some(_)) => Err(EnvelopeError::DataConflict),
        (None, None) => Ok(Data::None),
        (None, Some(Value::String(encoded))) => BASE64
            .decode(encoded.as_bytes())
            .map(|bytes| Data::Binary(bytes.into()))
            .map_err(|e| {
                EnvelopeError::invalid("data_base64", format!("expected standard base64: {e}"))
            }),
        (None, Some(other)) => Err(wrong_type("data_base64", "a base64 string", &other)),
        (Some(DataMember::Text(text)), None) => match content_type {
            Some(ct) if !is_json_content_type(ct) => read_data(
                map,
                Some(DataMember::Value(parse(text.get().as_bytes())?)),
                content_type,
            ),
            _ => JsonData::from_text(Bytes::from(String::from(Box::<str>::from(text))))
                .map(Data::Json)
                .map_err(|e| EnvelopeError::MalformedJson {
                    reason: e.to_string(),
                }),
        },
        (Some(DataMember::Value(value)), None) => match content_type {
            Some(ct) if !is_json_content_type(ct) => match value {
                Value::String(text) => Ok(Data::Text(text)),
                other => Err(wrong_type(
                    "data",
                    "a string (`datacontenttype` is not a JSON media type)",
                    &other,
                )),
            },
            _ => Ok(Data::Json(value.into())),
        },
    }
}

fn extension_value(name: &str, value: Value) -> Result<Option<ExtensionValue>, EnvelopeError> {
    const EXPECTED: &str = "a string, a boolean or an integer";
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(ExtensionValue::String(s))),
        Value::Bool(b) => Ok(Some(ExtensionValue::Boolean(b))),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i32::try_from(i)
                .map(|i| Some(ExtensionValue::Integer(i)))
                .map_err(|_| out_of_range(name, &n)),
            (None, Some(_)) => Err(out_of_range(name, &n)),
            (None, None) => Err(EnvelopeError::WrongType {
                attribute: name.to_owned(),
                expected: EXPECTED,
                found: "a number with a fraction or exponent",
            }),
        },
        other => Err(wrong_type(name, EXPECTED, &other)),
    }
}

fn out_of_range(name: &str, n: &serde_json::Number) -> EnvelopeError {
    EnvelopeError::invalid(
        name,
        format!(
            "a CloudEvents Integer must be in {} ..= {}, got {n}",
            i32::MIN,
            i32::MAX
        ),
    )
}

fn wrong_type(attribute: &str, expected: &'static str, found: &Value) -> EnvelopeError {
    EnvelopeError::WrongType {
        attribute: attribute.to_owned(),
        expected,
        found: kind(found),
    }
}

/// One event of the JSON format as read: its attributes as JSON values and its `data` as
/// text, so no tree is built for data nobody looks into; or what was found instead of an
/// object.
// Large (the attributes in place), but read once and turned into an event at once: boxing
// would add an allocation per event.
#[allow(clippy::large_enum_variant)]
enum Item {
    Object {
        members: ReadMembers,
        data: Option<Box<RawValue>>,
    },
    Other(&'static str),
}

impl Item {
    fn into_event(self) -> Result<Event, EnvelopeError> {
        match self {
            Item::Object { members, data } => {
                Event::from_members(members, data.map(DataMember::Text))
            }
            Item::Other(found) => Err(EnvelopeError::NotAnObject { found }),
        }
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a CloudEvents JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Item, A::Error> {
        let mut members = ReadMembers::default();
        let mut data = None;
        while let Some(name) = access.next_key::<MemberName>()? {
            if let MemberName::Data = name {
                data = Some(access.next_value::<Box<RawValue>>()?);
            } else {
                let value = access.next_value::<Value>()?;
                members.set(name, value);
            }
        }
        Ok(Item::Object { members, data })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Item::Other("an array"))
    }

    visit_scalars!(Item::Other);
}

/// A JSON batch as read: its items, or what was found instead of an array.
enum Batch {
    Items(Vec<Item>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BatchVisitor)
    }
}

struct BatchVisitor;

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = Batch;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of CloudEvents")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(item) = seq.next_element::<Item>()? {
            items.push(item);
        }
        Ok(Batch::Items(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Batch, A::Error> {
        while access.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Batch::Other("an object"))
    }

    visit_scalars!(Batch::Other);
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
