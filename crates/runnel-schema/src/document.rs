//! A schema as the registry holds it: parsed, checked against its draft's meta-schema,
//! compiled, and written in one canonical text.
//!
//! Every way a schema enters the registry (REST, Rust, typed events) goes through
//! [`SchemaDoc::parse`] or [`SchemaDoc::from_value`], so a stored schema is always valid JSON
//! Schema of a supported draft whose `$ref`s all resolve within itself, and two schemas that
//! differ only in key order or whitespace are the same schema (same id, same version).
//!
//! A schema being registered is also held to [`SchemaDoc::check_defaults`]: every `default`
//! is valid under the schema it sits in. Stored schemas are not checked again when loaded.

use std::fmt;
use std::sync::Arc;

use jsonschema::{Draft, Registry, Validator};
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

impl SchemaDoc {
    /// Checks that every `default` is valid under the schema it sits in, or names the first
    /// that is not by its JSON pointer (`/properties/note/default`).
    ///
    /// A consumer pinned to a version fills that version's defaults into events that lack the
    /// property (see [`crate::adapt`]), and the filled event must validate; a default that
    /// breaks its own schema would turn every such event into a poison pill. The registry
    /// checks this when a schema is registered or checked for compatibility, whatever the
    /// mode; schemas already stored are loaded without it.
    pub fn check_defaults(&self) -> Result<(), InvalidSchema> {
        let mut defaults = Vec::new();
        collect_defaults(
            &self.value,
            String::new(),
            self.draft == SchemaDraft::Draft7,
            &mut defaults,
        );
        if defaults.is_empty() {
            return Ok(());
        }
        // Each default is validated by a schema that is just a `$ref` to the subschema
        // holding it, so `$ref`s inside that subschema resolve against this document.
        let draft = self.draft.jsonschema();
        let registry = Registry::new()
            .draft(draft)
            .retrieve_known_draft_meta_schemas(false)
            .add(DOCUMENT_URI, &self.value)
            .and_then(|builder| builder.prepare())
            .map_err(|e| InvalidSchema::at("", shorten(&e.to_string(), 500)))?;
        for (pointer, default) in defaults {
            let reference =
                serde_json::json!({ "$ref": format!("{DOCUMENT_URI}#{}", fragment(&pointer)) });
            let validator = jsonschema::options()
                .with_draft(draft)
                .should_validate_formats(true)
                .offline()
                .with_registry(&registry)
                .build(&reference)
                .map_err(|e| InvalidSchema::at(pointer.clone(), shorten(&e.to_string(), 500)))?;
            if let Some(error) = validator.iter_errors(default).next() {
                let at = error.instance_path().to_string();
                let within = if at.is_empty() {
                    String::new()
                } else {
                    format!(" at `{at}`")
                };
                return Err(InvalidSchema::at(
                    format!("{pointer}/default"),
                    shorten(
                        &format!(
                            "the default {} does not match its own schema{within}: {error}",
                            shorten(&default.to_string(), 80)
                        ),
                        500,
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The base URI the document is known by while its defaults are checked.
const DOCUMENT_URI: &str = "urn:runnel:schema";

/// Keywords whose value is one schema, a list of schemas, or a map of names to schemas. Data
/// keywords (`enum`, `const`, `default`, `examples`) are not among them: they hold values.
const SCHEMA_KEYWORDS: &[&str] = &[
    "additionalItems",
    "additionalProperties",
    "contains",
    "contentSchema",
    "else",
    "if",
    "items",
    "not",
    "propertyNames",
    "then",
    "unevaluatedItems",
    "unevaluatedProperties",
];
const SCHEMA_LIST_KEYWORDS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems", "items"];
const SCHEMA_MAP_KEYWORDS: &[&str] = &[
    "$defs",
    "definitions",
    "dependentSchemas",
    "dependencies",
    "patternProperties",
    "properties",
];

/// Every schema object below `schema` that holds a `default`, as (JSON pointer, default).
/// In draft-07 a `$ref` replaces its object, so a `default` beside it is ignored, as its
/// other siblings are.
fn collect_defaults<'a>(
    schema: &'a Value,
    pointer: String,
    ref_replaces_siblings: bool,
    found: &mut Vec<(String, &'a Value)>,
) {
    let Some(object) = schema.as_object() else {
        return;
    };
    if ref_replaces_siblings && object.contains_key("$ref") {
        return;
    }
    if let Some(default) = object.get("default") {
        found.push((pointer.clone(), default));
    }
    for (keyword, value) in object {
        let at = format!("{pointer}/{}", crate::compat::escape_pointer(keyword));
        let keyword = keyword.as_str();
        match value {
            Value::Object(_) if SCHEMA_KEYWORDS.contains(&keyword) => {
                collect_defaults(value, at, ref_replaces_siblings, found);
            }
            Value::Object(members) if SCHEMA_MAP_KEYWORDS.contains(&keyword) => {
                for (name, member) in members {
                    let at = format!("{at}/{}", crate::compat::escape_pointer(name));
                    collect_defaults(member, at, ref_replaces_siblings, found);
                }
            }
            Value::Array(items) if SCHEMA_LIST_KEYWORDS.contains(&keyword) => {
                for (i, item) in items.iter().enumerate() {
                    collect_defaults(item, format!("{at}/{i}"), ref_replaces_siblings, found);
                }
            }
            _ => {}
        }
    }
}

/// A JSON pointer as a URI fragment: characters outside the fragment's safe set are
/// percent-encoded.
fn fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for byte in pointer.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
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
    fn defaults_must_match_the_schema_they_sit_in() {
        let ok = SchemaDoc::from_value(json!({
            "type": "object",
            "properties": {
                "currency": {"type": "string", "default": "EUR"},
                "customer": {"$ref": "#/$defs/customer", "default": {"id": "c-0"}},
                "a b~c": {"type": "integer", "default": 1}
            },
            "$defs": {"customer": {
                "type": "object",
                "properties": {"id": {"type": "string"}},
                "required": ["id"]
            }},
            "enum": [{"default": "data, not a schema"}]
        }))
        .unwrap();
        ok.check_defaults().unwrap();

        let refused = |schema: Value| SchemaDoc::from_value(schema).unwrap().check_defaults();
        let err =
            refused(json!({"properties": {"note": {"type": "string", "default": 5}}})).unwrap_err();
        assert!(
            matches!(&err, InvalidSchema::Invalid { path, .. } if path == "/properties/note/default"),
            "{err}"
        );
        // Through a `$ref`: the default is checked against what the `$ref` points to.
        let err = refused(json!({
            "properties": {"customer": {"$ref": "#/$defs/customer", "default": {}}},
            "$defs": {"customer": {"type": "object", "required": ["id"]}}
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("/properties/customer/default"),
            "{err}"
        );
        // Escaped names, tuples, unions and formats.
        let err =
            refused(json!({"properties": {"a/b": {"format": "date-time", "default": "soon"}}}))
                .unwrap_err();
        assert!(
            err.to_string().contains("/properties/a~1b/default"),
            "{err}"
        );
        let err = refused(
            json!({"prefixItems": [{"anyOf": [{"type": "null"}, {"minimum": 0, "default": -1}]}]}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/prefixItems/0/anyOf/1/default"),
            "{err}"
        );
        // Draft-07 ignores whatever sits beside a `$ref`, its default included.
        refused(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "properties": {"n": {"$ref": "#/definitions/n", "default": "x"}},
            "definitions": {"n": {"type": "integer"}}
        }))
        .unwrap();
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
