//! Helpers shared by this crate's integration tests: a registry over a fresh embedded
//! backend in a temporary directory, and a few schemas.

#![allow(dead_code)] // each test file uses a different subset

use std::sync::Arc;

use runnel_backend::Backend;
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_envelope::EventType;
use runnel_schema::{RegistryConfig, SchemaRegistry};
use serde_json::{Value, json};
use tempfile::TempDir;

/// A registry over a fresh embedded backend; keep the `TempDir` alive as long as it is used.
pub struct Fixture {
    pub dir: TempDir,
    pub backend: Arc<dyn Backend>,
    pub registry: Arc<SchemaRegistry>,
}

pub async fn fixture() -> Fixture {
    fixture_with(RegistryConfig::default()).await
}

pub async fn fixture_with(config: RegistryConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend: Arc<dyn Backend> = Arc::new(
        EmbeddedBackend::open(EmbeddedConfig::new(dir.path()))
            .await
            .expect("open embedded backend"),
    );
    let registry = Arc::new(SchemaRegistry::new(backend.clone(), config));
    Fixture {
        dir,
        backend,
        registry,
    }
}

pub fn subject(name: &str) -> EventType {
    EventType::new(name).expect("valid event type")
}

/// `order.placed` version 1: id and amount, closed.
pub fn order_v1() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "number", "minimum": 0}
        },
        "required": ["order_id", "amount"],
        "additionalProperties": false
    })
}

/// `order.placed` version 2: adds `currency` (required, default EUR) and an optional
/// `customer` with a defaulted `tier`.
pub fn order_v2() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "number", "minimum": 0},
            "currency": {"type": "string", "default": "EUR", "pattern": "^[A-Z]{3}$"},
            "customer": {"$ref": "#/$defs/customer"}
        },
        "required": ["order_id", "amount", "currency"],
        "additionalProperties": false,
        "$defs": {
            "customer": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "tier": {"enum": ["standard", "gold"], "default": "standard"}
                },
                "required": ["id"],
                "additionalProperties": false
            }
        }
    })
}

/// `order.placed` with `amount` narrowed to an integer: breaks BACKWARD against v1.
pub fn order_amount_integer() -> Value {
    json!({
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "integer", "minimum": 0}
        },
        "required": ["order_id", "amount"],
        "additionalProperties": false
    })
}

pub fn text(value: &Value) -> String {
    value.to_string()
}
