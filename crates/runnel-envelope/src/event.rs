//! The envelope itself and its builder.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::data::{is_json_content_type, validate_content_type, validate_data};
use crate::extension::validate_extension_name;
use crate::{
    Data, EnvelopeError, EventId, EventType, ExtensionValue, JsonData, SchemaVersion, Source,
    TraceParent,
};

/// The only CloudEvents version this crate reads and writes.
pub const SPEC_VERSION: &str = "1.0";

/// Size limits applied to events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest event accepted, in bytes of its binary encoding ([`Event::encoded_len`]).
    /// Default 1 MiB (1 048 576).
    pub max_event_bytes: usize,
}

impl Limits {
    /// The default limit on event size: 1 MiB.
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 1_048_576;

    /// Limits with the given maximum event size in bytes.
    pub fn with_max_event_bytes(max_event_bytes: usize) -> Self {
        Self { max_event_bytes }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// A CloudEvents 1.0 event with Runnel's extensions.
///
/// Construct one with [`Event::builder`], or read one with [`Event::from_json`] or
/// [`Event::decode_binary`]; all three enforce the same rules, so an `Event` that exists is
/// valid and can be written in either format and read back equal. `specversion` is always
/// `"1.0"` and is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub(crate) id: EventId,
    pub(crate) source: Source,
    pub(crate) event_type: EventType,
    pub(crate) time: Option<DateTime<Utc>>,
    pub(crate) subject: Option<String>,
    pub(crate) data_content_type: Option<String>,
    pub(crate) data_schema: Option<String>,
    pub(crate) data: Data,
    pub(crate) correlation_id: Option<String>,
    pub(crate) causation_id: Option<EventId>,
    pub(crate) traceparent: Option<TraceParent>,
    pub(crate) schema_version: Option<SchemaVersion>,
    pub(crate) partition_key: Option<String>,
    pub(crate) extensions: BTreeMap<String, ExtensionValue>,
}

impl Event {
    /// Starts an event of type `event_type` from `source`. See [`EventBuilder`] for defaults.
    pub fn builder(event_type: EventType, source: Source) -> EventBuilder {
        EventBuilder::new(event_type, source)
    }

    /// A builder holding every attribute of this event, to change some and build again.
    /// The id and time are kept, not regenerated.
    pub fn into_builder(self) -> EventBuilder {
        EventBuilder {
            schema_version: self.schema_version.map(SchemaVersion::get),
            time: TimeChoice::Fixed(self.time),
            id: Some(self.id),
            event: Parts {
                source: self.source,
                event_type: self.event_type,
                subject: self.subject,
                data_content_type: self.data_content_type,
                data_schema: self.data_schema,
                data: self.data,
                correlation_id: self.correlation_id,
                causation_id: self.causation_id,
                traceparent: self.traceparent,
                partition_key: self.partition_key,
                extensions: self.extensions,
            },
        }
    }

    /// The deterministic id of output number `output_index` that `scope` (a consumer group or
    /// stage) made from this event; see [`EventId::derived`] for how it is computed.
    pub fn derived_id(&self, scope: &str, output_index: usize) -> EventId {
        EventId::derived(scope, &self.source, &self.id, output_index)
    }

    /// `id`: unique per source; UUIDv7 unless the producer chose one.
    pub fn id(&self) -> &EventId {
        &self.id
    }

    /// `source`: the context in which the event happened.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// `type`: the `domain.fact` name of what happened.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// `specversion`: always `"1.0"`.
    pub fn spec_version(&self) -> &'static str {
        SPEC_VERSION
    }

    /// `time`: when the fact happened (event time), if known.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }

    /// `subject`: what the event is about, within the source.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// `datacontenttype`: the media type of `data`.
    pub fn data_content_type(&self) -> Option<&str> {
        self.data_content_type.as_deref()
    }

    /// `dataschema`: the URI of the schema `data` follows.
    pub fn data_schema(&self) -> Option<&str> {
        self.data_schema.as_deref()
    }

    /// `data`: the payload.
    pub fn data(&self) -> &Data {
        &self.data
    }

    /// Takes the payload out of the event.
    pub fn into_data(self) -> Data {
        self.data
    }

    /// `correlationid`: groups every event of one business transaction.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// `causationid`: the id of the event that directly caused this one.
    pub fn causation_id(&self) -> Option<&EventId> {
        self.causation_id.as_ref()
    }

    /// `traceparent`: the W3C trace context.
    pub fn traceparent(&self) -> Option<&TraceParent> {
        self.traceparent.as_ref()
    }

    /// `schemaversion`: the version of the type's schema that `data` follows.
    pub fn schema_version(&self) -> Option<SchemaVersion> {
        self.schema_version
    }

    /// `partitionkey`: events with the same key go to the same partition, in order.
    pub fn partition_key(&self) -> Option<&str> {
        self.partition_key.as_deref()
    }

    /// Every other extension attribute, by name.
    pub fn extensions(&self) -> &BTreeMap<String, ExtensionValue> {
        &self.extensions
    }

    /// One other extension attribute.
    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions.get(name)
    }

    /// Fails with [`EnvelopeError::TooLarge`] if the event's binary encoding is larger than
    /// `limits.max_event_bytes`. The size is measured on the binary form because that is
    /// what the log stores, whatever format the event arrived in.
    pub fn check_size(&self, limits: &Limits) -> Result<(), EnvelopeError> {
        let size = self.encoded_len();
        if size > limits.max_event_bytes {
            Err(EnvelopeError::TooLarge {
                size,
                limit: limits.max_event_bytes,
            })
        } else {
            Ok(())
        }
    }

    /// Checks the rules the attribute types cannot carry alone. Every way of making an
    /// `Event` ends here.
    pub(crate) fn validate(self) -> Result<Self, EnvelopeError> {
        if let Err(problem) = uri_reference_problem(self.source.as_str()) {
            return Err(EnvelopeError::invalid(
                "source",
                format!("must be a URI-reference (RFC 3986): {problem}"),
            ));
        }
        if let Some(uri) = &self.data_schema
            && !uri.is_empty()
            && !is_absolute_uri(uri)
        {
            return Err(EnvelopeError::invalid(
                "dataschema",
                format!(
                    "must be an absolute URI (a scheme such as `https:` or `urn:`, no spaces), \
                     got `{uri}`"
                ),
            ));
        }
        self.validate_stored()
    }

    /// The rules an event read back from storage must meet: those of [`Event::validate`]
    /// but the ones added since events were first stored (so an older record never turns
    /// into a poison pill on reading).
    pub(crate) fn validate_stored(self) -> Result<Self, EnvelopeError> {
        if let Some(time) = self.time {
            // RFC 3339 has four-digit years only.
            if !(0..=9999).contains(&time.year()) {
                return Err(EnvelopeError::invalid(
                    "time",
                    format!("year must be 0000 to 9999 to be written in RFC 3339, got {time}"),
                ));
            }
        }
        for (attribute, value) in [
            ("subject", &self.subject),
            ("dataschema", &self.data_schema),
            ("correlationid", &self.correlation_id),
            ("partitionkey", &self.partition_key),
        ] {
            if value.as_deref() == Some("") {
                return Err(EnvelopeError::invalid(
                    attribute,
                    "must not be empty when present; omit it instead",
                ));
            }
        }
        if let Some(ct) = &self.data_content_type {
            validate_content_type(ct)?;
        }
        validate_data(&self.data, self.data_content_type.as_deref())?;
        for name in self.extensions.keys() {
            validate_extension_name(name)?;
        }
        Ok(self)
    }
}

/// When the built event's `time` comes from.
#[derive(Debug, Clone)]
enum TimeChoice {
    /// The clock at [`EventBuilder::build`].
    Now,
    /// A fixed value, possibly none.
    Fixed(Option<DateTime<Utc>>),
}

/// The attributes a builder passes through unchanged.
#[derive(Debug, Clone)]
struct Parts {
    source: Source,
    event_type: EventType,
    subject: Option<String>,
    data_content_type: Option<String>,
    data_schema: Option<String>,
    data: Data,
    correlation_id: Option<String>,
    causation_id: Option<EventId>,
    traceparent: Option<TraceParent>,
    partition_key: Option<String>,
    extensions: BTreeMap<String, ExtensionValue>,
}

/// Builds an [`Event`]. Made by [`Event::builder`].
///
/// Defaults: the id is a fresh UUIDv7 and the time is the current UTC time, both taken at
/// [`build`](EventBuilder::build); there is no data and no optional attribute. Setters may be
/// called in any order; `build` checks the rules that span attributes.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct EventBuilder {
    id: Option<EventId>,
    time: TimeChoice,
    schema_version: Option<u32>,
    event: Parts,
}

impl EventBuilder {
    fn new(event_type: EventType, source: Source) -> Self {
        Self {
            id: None,
            time: TimeChoice::Now,
            schema_version: None,
            event: Parts {
                source,
                event_type,
                subject: None,
                data_content_type: None,
                data_schema: None,
                data: Data::None,
                correlation_id: None,
                causation_id: None,
                traceparent: None,
                partition_key: None,
                extensions: BTreeMap::new(),
            },
        }
    }

    /// Sets the id instead of generating a UUIDv7.
    pub fn id(mut self, id: EventId) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the event time instead of taking the clock at `build`.
    pub fn time(mut self, time: DateTime<Utc>) -> Self {
        self.time = TimeChoice::Fixed(Some(time));
        self
    }

    /// Leaves `time` unset.
    pub fn without_time(mut self) -> Self {
        self.time = TimeChoice::Fixed(None);
        self
    }

    /// Sets `subject` (non-empty).
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.event.subject = Some(subject.into());
        self
    }

    /// Sets JSON data. Sets `datacontenttype` to `application/json` unless it already names
    /// a JSON media type (such as `application/vnd.acme+json`).
    pub fn data_json(self, value: serde_json::Value) -> Self {
        self.json(value.into())
    }

    /// Sets JSON data from its text, which must be one valid JSON value (checked here, kept
    /// as it is). `datacontenttype` as with [`EventBuilder::data_json`].
    pub fn data_json_text(self, text: impl Into<Bytes>) -> Result<Self, EnvelopeError> {
        let json = JsonData::from_text(text.into())
            .map_err(|e| EnvelopeError::invalid("data", format!("not valid JSON: {e}")))?;
        Ok(self.json(json))
    }

    fn json(mut self, json: JsonData) -> Self {
        if !self
            .event
            .data_content_type
            .as_deref()
            .is_some_and(is_json_content_type)
        {
            self.event.data_content_type = Some("application/json".to_owned());
        }
        self.event.data = Data::Json(json);
        self
    }

    /// Sets binary data and its media type, e.g. `application/octet-stream`.
    pub fn data_binary(mut self, bytes: impl Into<Bytes>, content_type: impl Into<String>) -> Self {
        self.event.data = Data::Binary(bytes.into());
        self.event.data_content_type = Some(content_type.into());
        self
    }

    /// Sets text data and its non-JSON media type, e.g. `text/plain` or `application/xml`.
    pub fn data_text(mut self, text: impl Into<String>, content_type: impl Into<String>) -> Self {
        self.event.data = Data::Text(text.into());
        self.event.data_content_type = Some(content_type.into());
        self
    }

    /// Sets the payload and its media type together (`None` leaves `datacontenttype` unset).
    pub fn data(mut self, data: Data, content_type: Option<String>) -> Self {
        self.event.data = data;
        self.event.data_content_type = content_type;
        self
    }

    /// Sets `datacontenttype` explicitly.
    pub fn data_content_type(mut self, content_type: impl Into<String>) -> Self {
        self.event.data_content_type = Some(content_type.into());
        self
    }

    /// Sets `dataschema` (non-empty URI).
    pub fn data_schema(mut self, uri: impl Into<String>) -> Self {
        self.event.data_schema = Some(uri.into());
        self
    }

    /// Sets `partitionkey` (non-empty).
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.event.partition_key = Some(key.into());
        self
    }

    /// Sets `correlationid` (non-empty).
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.event.correlation_id = Some(id.into());
        self
    }

    /// Sets `causationid`.
    pub fn causation_id(mut self, id: EventId) -> Self {
        self.event.causation_id = Some(id);
        self
    }

    /// Marks the event as caused by `cause`: `causationid` becomes `cause`'s id and
    /// `correlationid` is carried over (or starts at `cause`'s id if it has none).
    pub fn caused_by(mut self, cause: &Event) -> Self {
        self.event.causation_id = Some(cause.id.clone());
        self.event.correlation_id = Some(
            cause
                .correlation_id
                .clone()
                .unwrap_or_else(|| cause.id.as_str().to_owned()),
        );
        self
    }

    /// Sets `traceparent`.
    pub fn traceparent(mut self, traceparent: TraceParent) -> Self {
        self.event.traceparent = Some(traceparent);
        self
    }

    /// Sets `schemaversion` (1 ..= 2³¹ − 1, checked at `build`).
    pub fn schema_version(mut self, version: u32) -> Self {
        self.schema_version = Some(version);
        self
    }

    /// Sets another extension attribute (name checked at `build`), replacing any earlier
    /// value of the same name.
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<ExtensionValue>) -> Self {
        self.event.extensions.insert(name.into(), value.into());
        self
    }

    /// Removes an extension attribute set earlier.
    pub fn remove_extension(mut self, name: &str) -> Self {
        self.event.extensions.remove(name);
        self
    }

    /// Checks every rule and makes the event, generating the id and time if not set.
    pub fn build(self) -> Result<Event, EnvelopeError> {
        let schema_version = self.schema_version.map(SchemaVersion::new).transpose()?;
        let p = self.event;
        Event {
            id: self.id.unwrap_or_else(EventId::new_v7),
            time: match self.time {
                TimeChoice::Now => Some(Utc::now()),
                TimeChoice::Fixed(time) => time,
            },
            schema_version,
            source: p.source,
            event_type: p.event_type,
            subject: p.subject,
            data_content_type: p.data_content_type,
            data_schema: p.data_schema,
            data: p.data,
            correlation_id: p.correlation_id,
            causation_id: p.causation_id,
            traceparent: p.traceparent,
            partition_key: p.partition_key,
            extensions: p.extensions,
        }
        .validate()
    }
}

/// Why `text` is not an RFC 3986 URI-reference, if it is not: every character is unreserved,
/// a delimiter or part of a `%XX` escape (so no space, control character, non-ASCII character
/// or one of `"<>\^`{|}`), and `#` comes at most once.
fn uri_reference_problem(text: &str) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut fragments = 0;
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        let allowed = byte.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&byte);
        if byte == b'%' {
            let escape = bytes.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return Err(format!(
                    "`%` at byte {i} does not start a %XX escape (write `%25` for a percent sign)"
                ));
            }
            i += 3;
            continue;
        }
        if !allowed {
            let what = match byte {
                b' ' => "a space".to_string(),
                0 => "a NUL character".to_string(),
                b if b.is_ascii_control() => format!("the control character 0x{b:02x}"),
                b if b.is_ascii() => format!("`{}`", b as char),
                _ => "a non-ASCII character (percent-encode its UTF-8 bytes)".to_string(),
            };
            return Err(format!("{what} at byte {i} is not allowed in a URI"));
        }
        if byte == b'#' {
            fragments += 1;
            if fragments > 1 {
                return Err(format!("a second `#` at byte {i}"));
            }
        }
        i += 1;
    }
    Ok(())
}

/// RFC 3986's absolute URI, as far as a producer's mistakes go: a scheme (a letter, then
/// letters, digits, `+`, `-`, `.`), a colon, and no whitespace or control characters.
fn is_absolute_uri(uri: &str) -> bool {
    let Some((scheme, _)) = uri.split_once(':') else {
        return false;
    };
    let mut scheme_chars = scheme.chars();
    scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme_chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !uri.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::uri_reference_problem;

    #[test]
    fn sources_are_uri_references() {
        for good in [
            "/shop",
            "https://example.com/a?b=c#d",
            "urn:runnel:saga:order",
            "runnel://groups/payments",
            "a%20b",
            "",
        ] {
            assert!(uri_reference_problem(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("/shop\0x", "NUL"),
            ("/my shop", "a space at byte 3"),
            ("/a\tb", "control character 0x09"),
            ("/caf\u{e9}", "non-ASCII"),
            ("/a<b>", "`<`"),
            ("/100%", "%XX"),
            ("/a#b#c", "second `#`"),
        ] {
            let problem = uri_reference_problem(bad).unwrap_err();
            assert!(problem.contains(says), "{bad}: {problem}");
        }
    }
}
