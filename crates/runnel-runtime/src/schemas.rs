//! Schemas at the runtime's two boundaries: a publish is validated against the version its
//! `schemaversion` names (the latest when absent, which is then stamped on the event), and at
//! consume an event whose data fails the schema it names is a poison pill (`schema_invalid`);
//! a group pinned to a version receives every event adapted to it (older ones upcast with
//! defaults, newer ones with unknown fields removed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_envelope::{Data, Event, EventType, JsonData};
use runnel_schema::{RegistryError, SchemaRegistry, ValidationError};
use serde_json::Value;

use crate::error::{Result, RuntimeError};

/// How long the latest version of a type is trusted before it is looked up again (changes
/// through this process's registry are seen at once).
const LATEST_TTL: Duration = Duration::from_secs(1);

pub(crate) struct Schemas {
    pub registry: Arc<SchemaRegistry>,
    require_schema: bool,
    latest: Mutex<HashMap<EventType, LatestSeen>>,
}

/// The latest version of a type (none: no schema), when it was read, and the registry's
/// generation then.
type LatestSeen = (Option<u32>, Instant, u64);

/// Why an event was rejected at consume, for its dead-letter entry.
pub(crate) struct SchemaRejection(pub String);

impl Schemas {
    pub fn new(registry: Arc<SchemaRegistry>, require_schema: bool) -> Self {
        Self {
            registry,
            require_schema,
            latest: Mutex::new(HashMap::new()),
        }
    }

    /// The newest live version of a type, cached briefly (a registration on another node is
    /// seen within a second). A type whose versions are all soft deleted has none, and is an
    /// error ([`ValidationError::SubjectDeleted`]) until a schema is registered again.
    async fn latest(&self, subject: &EventType) -> Result<Option<u32>> {
        let generation = self.registry.generation();
        if let Ok(cache) = self.latest.lock()
            && let Some((version, at, seen)) = cache.get(subject)
            && at.elapsed() < LATEST_TTL
            && *seen == generation
        {
            return Ok(*version);
        }
        let version = self.registry.latest_for_validation(subject).await?;
        if let Ok(mut cache) = self.latest.lock() {
            cache.insert(subject.clone(), (version, Instant::now(), generation));
        }
        Ok(version)
    }

    /// Validates an event about to be published; returns it stamped with the schema version
    /// it was validated against.
    pub async fn check_publish(&self, event: Event) -> Result<Event> {
        let subject = event.event_type().clone();
        let named = event.schema_version().map(|v| v.get());
        let version = match named {
            Some(v) => Some(v),
            None => self.latest(&subject).await?,
        };
        let Some(version) = version else {
            if self.require_schema {
                return Err(RuntimeError::Schema(ValidationError::NoSchema {
                    subject: subject.to_string(),
                }));
            }
            return Ok(event);
        };
        let data = json_data(&event).ok_or_else(|| RuntimeError::DataNotJson {
            event_type: subject.to_string(),
        })?;
        match self.registry.validate(&subject, Some(version), data).await {
            Ok(_) => {}
            // Only when an earlier version exists is "you validated against the latest" news.
            Err(source @ ValidationError::Invalid { .. }) if named.is_none() && version > 1 => {
                return Err(RuntimeError::InvalidForLatest { version, source });
            }
            Err(error) => return Err(error.into()),
        }
        if named.is_some() {
            return Ok(event);
        }
        Ok(event.into_builder().schema_version(version).build()?)
    }

    /// Checks an event at consume against the version it names, and adapts it to the
    /// group's pinned version. `Ok(Err(..))` means the event is a poison pill.
    ///
    /// For a pinned group, an event that names no version (published before its type had a
    /// schema) is read as the type's first version: validated against it and adapted from it,
    /// so the group never receives data that breaks the version it is pinned to.
    pub async fn check_consume(
        &self,
        event: Event,
        pinned: Option<u32>,
    ) -> Result<std::result::Result<Event, SchemaRejection>> {
        let subject = event.event_type().clone();
        let version = match (event.schema_version(), pinned) {
            (Some(named), _) => named.get(),
            (None, None) => return Ok(Ok(event)),
            (None, Some(_)) => match self.registry.versions(&subject).await {
                Ok(versions) => match versions.into_iter().min() {
                    Some(first) => first,
                    None => return Ok(Ok(event)),
                },
                Err(RegistryError::SubjectNotFound { .. }) => return Ok(Ok(event)),
                Err(e) => return Err(RuntimeError::Schema(ValidationError::Registry(e))),
            },
        };
        let unnamed = event.schema_version().is_none();
        let Some(data) = json_data(&event) else {
            return Ok(Err(SchemaRejection(
                "schema_invalid: the data is not JSON".into(),
            )));
        };
        match self.registry.validate(&subject, Some(version), data).await {
            Ok(_) => {}
            Err(invalid @ ValidationError::Invalid { .. }) if unnamed => {
                return Ok(Err(SchemaRejection(format!(
                    "schema_invalid: the event names no schemaversion (published before its \
                     type had a schema), and read as version {version}, the first, for a group \
                     pinned to a version: {invalid}"
                ))));
            }
            Err(invalid @ ValidationError::Invalid { .. }) => {
                return Ok(Err(SchemaRejection(format!("schema_invalid: {invalid}"))));
            }
            Err(ValidationError::Registry(
                missing @ (RegistryError::SubjectNotFound { .. }
                | RegistryError::VersionNotFound { .. }),
            )) => {
                return Ok(Err(SchemaRejection(format!("schema_invalid: {missing}"))));
            }
            Err(other) => return Err(other.into()),
        }
        let Some(to) = pinned.filter(|to| *to != version) else {
            return Ok(Ok(event));
        };
        // Adapted as text, so values it leaves alone reach the group as they were written.
        let null;
        let original = match event.data() {
            Data::Json(json) => json,
            _ => {
                null = JsonData::from_value(Value::Null);
                &null
            }
        };
        let adapted = match self.registry.adapt(&subject, version, to, original).await {
            Ok(adapted) => adapted,
            Err(e) => {
                return Ok(Err(SchemaRejection(format!(
                    "schema_invalid: cannot adapt version {version} to {to}: {e}"
                ))));
            }
        };
        // What the group gets must hold to the version it is pinned to. The compatibility
        // check cannot see everything (`uniqueItems` after fields were dropped, a `default`
        // that breaks its own schema in a schema stored before registration refused those):
        // such an event is a poison pill, not bad data handed out.
        match self
            .registry
            .validate(&subject, Some(to), adapted.value())
            .await
        {
            Ok(_) => {}
            Err(ValidationError::Invalid { errors, .. }) => {
                let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
                return Ok(Err(SchemaRejection(format!(
                    "schema_invalid: version {version} adapted to {to} does not match version \
                     {to}: {}",
                    reasons.join("; ")
                ))));
            }
            Err(other) => return Err(other.into()),
        }
        Ok(Ok(event
            .into_builder()
            .data_json_text(adapted.text_bytes().clone())?
            .schema_version(to)
            .build()?))
    }
}

/// The data to validate, borrowed: validation happens on every publish and consume.
fn json_data(event: &Event) -> Option<&Value> {
    static NULL: Value = Value::Null;
    match event.data() {
        Data::Json(json) => Some(json.value()),
        Data::None => Some(&NULL),
        _ => None,
    }
}
