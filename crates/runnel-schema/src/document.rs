//! A schema as the registry holds it: parsed, checked against its draft's meta-schema,
//! compiled, and written in one canonical text.
//!
//! Every way a schema enters the registry (REST, Rust, typed events) goes through
//! [`SchemaDoc::parse`] or [`SchemaDoc::from_value`], so a stored schema is always valid JSON
//! Schema of a supported draft whose `$ref`s all resolve within itself, and two schemas that
//! differ only in key order or whitespace are the same schema (same id, same version).

use std::fmt;
use std::sync::Arc;

use jsonschema::{Draft, Validator};
use serde_json::Value;

use crate::error::InvalidSchema;

/// The JSON Schema drafts the registry accepts. A schema without `$schema` is 2020-12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaDraft {
    Draft7,
    Draft202012,
}

impl SchemaDraft {
    fn jsonschema(self) -> Draft {
        match self {
            Self::Draft7 => Draft::Draft7,
            Self::Draft202012 => Draft::Draft202012,
        }
    }

    fn of(schema: &Value) -> Result<Self, InvalidSchema> {
        let Some(declared) = schema.get("$schema") else {
            return Ok(Self::Draft202012);
        };
        let Some(uri) = declared.as_str() else {
            return Err(InvalidSchema::at("/$schema", "must be a string"));
        };
        let trimmed = uri
            .trim_end_matches('#')
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        match trimmed {
            "json-schema.org/draft/2020-12/schema" => Ok(Self::Draft202012),
            "json-schema.org/draft-07/schema" => Ok(Self::Draft7),
            _ => Err(InvalidSchema::at(
                "/$schema",
                format!(
                    "`{uri}` is not a supported draft: use \
                     https://json-schema.org/draft/2020-12/schema or \
                     http://json-schema.org/draft-07/schema#"
                ),
            )),
        }
    }
}

impl fmt::Display for SchemaDraft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Draft7 => "draft-07",
            Self::Draft202012 => "draft 2020-12",
        })
    }
}

/// A valid schema: its JSON, its canonical text (keys sorted, no whitespace) and its
/// compiled validator. Cheap to share (`Arc`).
pub struct SchemaDoc {
    value: Value,
    canonical: String,
    draft: SchemaDraft,
    validator: Validator,
}

impl fmt::Debug for SchemaDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaDoc")
            .field("draft", &self.draft)
            .field("canonical", &self.canonical)
            .finish_non_exhaustive()
    }
}

impl SchemaDoc {
    /// Parses schema text (JSON) and checks it; `max_bytes` bounds the text.
    pub fn parse(text: &str, max_bytes: usize) -> Result<Arc<Self>, InvalidSchema> {
        if text.len() > max_bytes {
            return Err(InvalidSchema::TooLarge {
                bytes: text.len(),
                max: max_bytes,
            });
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| InvalidSchema::at("", format!("not valid JSON: {e}")))?;
        Self::from_value(value)
    }

    /// Checks a schema given as JSON.
    pub fn from_value(value: Value) -> Result<Arc<Self>, InvalidSchema> {
        if !(value.is_object() || value.is_boolean()) {
            return Err(InvalidSchema::at(
                "",
                "a schema must be a JSON object (or `true`/`false`)",
            ));
        }
        let draft = SchemaDraft::of(&value)?;
        let validator = compile(&value, draft)?;
        let canonical = canonical_text(&value);
        Ok(Arc::new(Self {
            value,
            canonical,
            draft,
            validator,
        }))
    }

    /// The schema as JSON.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The canonical text: object keys sorted, no insignificant whitespace. Two schemas are
    /// the same schema when their canonical texts are equal.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    pub fn draft(&self) -> SchemaDraft {
        self.draft
    }

    /// The compiled validator (formats are asserted, not just annotated).
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// Every error of `data` against this schema, with JSON-pointer instance paths.
    pub fn errors(&self, data: &Value) -> Vec<crate::FieldError> {
        self.validator
            .iter_errors(data)
            .map(|e| crate::FieldError {
                path: e.instance_path().to_string(),
                message: shorten(&e.to_string(), 300),
            })
            .collect()
    }
}

fn compile(value: &Value, draft: SchemaDraft) -> Result<Validator, InvalidSchema> {
    jsonschema::options()
        .with_draft(draft.jsonschema())
        .should_validate_formats(true)
        .offline()
        .build(value)
        .map_err(|e| {
            let path = e.schema_path().to_string();
            let message = e.to_string();
            let message = if message.contains("Resource") || message.contains("resolve") {
                format!(
                    "{message} (only `$ref`s within the schema itself are supported, such as \
                     `#/$defs/name`)"
                )
            } else {
                message
            };
            InvalidSchema::at(path, shorten(&message, 500))
        })
}

/// Object keys sorted at every level, compact. Independent of how `serde_json` orders maps.
pub fn canonical_text(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max_chars.saturating_sub(3)).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn canonical_text_ignores_key_order_and_whitespace() {
        let a = SchemaDoc::parse(
            r#"{"type": "object", "properties": {"b": {}, "a": {}}}"#,
            MAX,
        )
        .unwrap();
        let b = SchemaDoc::parse(r#"{"properties":{"a":{},"b":{}},"type":"object"}"#, MAX).unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(
            a.canonical(),
            r#"{"properties":{"a":{},"b":{}},"type":"object"}"#
        );
    }

    #[test]
    fn drafts_are_detected_and_others_refused() {
        let d7 = json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"});
        assert_eq!(
            SchemaDoc::from_value(d7).unwrap().draft(),
            SchemaDraft::Draft7
        );
        let none = json!({"type": "string"});
        assert_eq!(
            SchemaDoc::from_value(none).unwrap().draft(),
            SchemaDraft::Draft202012
        );
        let d4 = json!({"$schema": "http://json-schema.org/draft-04/schema#"});
        let err = SchemaDoc::from_value(d4).unwrap_err();
        assert!(err.to_string().contains("not a supported draft"), "{err}");
    }

    #[test]
    fn invalid_schemas_are_refused_with_where() {
        let err = SchemaDoc::parse(r#"{"type": "strin"}"#, MAX).unwrap_err();
        assert!(err.to_string().contains("/type"), "{err}");
        let err = SchemaDoc::parse("{not json", MAX).unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err = SchemaDoc::parse("[1]", MAX).unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
        let err = SchemaDoc::parse(r#"{"type": "string"}"#, 5).unwrap_err();
        assert!(matches!(err, InvalidSchema::TooLarge { .. }), "{err}");
    }

    #[test]
    fn external_refs_are_refused() {
        let err = SchemaDoc::from_value(json!({"$ref": "https://example.com/s.json"})).unwrap_err();
        assert!(err.to_string().contains("within the schema"), "{err}");
    }

    #[test]
    fn formats_are_asserted() {
        let doc = SchemaDoc::from_value(json!({"type": "string", "format": "date-time"})).unwrap();
        assert!(doc.errors(&json!("2024-01-01T00:00:00Z")).is_empty());
        assert_eq!(doc.errors(&json!("yesterday")).len(), 1);
    }

    #[test]
    fn errors_list_every_failing_path() {
        let doc = SchemaDoc::from_value(json!({
            "type": "object",
            "properties": {"amount": {"type": "number"}, "items": {"type": "array", "items": {"type": "string"}}},
            "required": ["id"]
        }))
        .unwrap();
        let errors = doc.errors(&json!({"amount": "ten", "items": ["a", 2]}));
        let mut paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["", "/amount", "/items/1"]);
    }
}
