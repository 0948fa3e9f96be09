//! The event envelope of Runnel: one CloudEvents 1.0 event, defined once for every layer.
//!
//! Producers build events, the HTTP server reads and writes them in the CloudEvents JSON
//! format, the log stores them in a compact binary form, and consumers read them back. This
//! crate is the single definition all of them share, so the rules live in one place. It knows
//! nothing of networks or storage: it turns bytes into validated [`Event`]s and back.
//!
//! # Invariants
//!
//! - An [`Event`] that exists is valid. The three ways to make one — [`Event::builder`],
//!   [`Event::from_json`] and [`Event::decode_binary`] — run the same checks, and the fields
//!   are private, so no code path can hold an event the others would reject.
//! - The `type` is a lowercase `domain.fact` name ([`EventType`]); its domain names the stream.
//! - Attributes with rules are newtypes that cannot hold a bad value: [`EventId`] and
//!   [`Source`] are non-empty, [`TraceParent`] is a valid W3C trace context,
//!   [`SchemaVersion`] is a positive CloudEvents Integer. Runnel's own string extensions
//!   (`correlationid`, `partitionkey`) and `subject` and `dataschema` are non-empty when set.
//! - The payload kind agrees with `datacontenttype`: JSON data has a JSON media type or none,
//!   text data has a non-JSON one ([`Data`]).
//! - Writing an event in either format and reading it back gives an equal event. Unknown
//!   extension attributes (string, boolean or integer) survive the trip; `time` is kept to
//!   the nanosecond and always written in UTC.
//! - Decoding never panics: bad input of any shape is an [`EnvelopeError`] naming the
//!   attribute or field at fault.
//! - Size limits ([`Limits`]) are measured on the binary encoding, the form the log stores.
//!
//! The binary layout is described, with a byte diagram, in `docs/envelope-format.md`.

#![warn(missing_docs)]

mod binary;
mod data;
mod error;
mod event;
mod event_type;
mod extension;
mod ids;
mod json;
mod traceparent;

pub use binary::FORMAT_VERSION;
pub use data::{Data, JsonData, is_json_content_type};
pub use error::EnvelopeError;
pub use event::{Event, EventBuilder, Limits, SPEC_VERSION};
pub use event_type::{EventType, EventTypeLint, lint_event_type};
pub use extension::{ExtensionValue, MAX_EXTENSION_NAME_LEN, validate_extension_name};
pub use ids::{EventId, SchemaVersion, Source};
pub use traceparent::TraceParent;
