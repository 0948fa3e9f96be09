//! Versions side by side: turning data written at one version into what a consumer pinned to
//! another version reads.
//!
//! One rule covers both directions, and it is the rule the compatibility checker assumes
//! ([`crate::compat`]), so "compatible" means "the adapted data validates":
//!
//! - **upcast** (old data, newer reader): properties the reader's schema declares with a
//!   `default` and the data lacks are filled in, recursively through nested objects and
//!   arrays;
//! - **downcast** (new data, older reader): properties the reader's schema does not declare
//!   are removed, recursively — where the schema declares `properties` and has no
//!   `additionalProperties` schema (a schema there makes the other keys data, like a map's).
//!
//! Both happen in either direction: an old event may carry a property a newer schema removed,
//! and a newer event may lack one an older schema gave a default. Unions (`anyOf`, `oneOf`)
//! are followed into the first branch that accepts the value.
//!
//! Adapting works on the data's JSON text, not on a parsed tree: every value it does not
//! change keeps its text exactly, so an integer past `f64`'s precision
//! (`12345678901234567890123`), `1E2` or an escaped string reach the consumer as the producer
//! wrote them. Objects it changes are written compactly, their remaining members in their
//! order and filled defaults after them.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::compat::rejects;
use crate::compat::shape::{ARRAY, Doc, Group, Node, OBJECT, Shape, Slot, type_of};

/// How deep values are followed; deeper parts are left as they are.
const MAX_DEPTH: usize = 64;

/// `text`, one JSON value, as a consumer reading through `schema` sees it: undeclared
/// properties removed, missing defaulted properties filled. `None` when that changes nothing;
/// otherwise the new text, in which every value left alone keeps its original text. Data
/// the schema does not describe is left alone. Fails only when `text` is not JSON.
pub fn resolve_text(schema: &Value, text: &str) -> Result<Option<String>, serde_json::Error> {
    let raw: &RawValue = serde_json::from_str(text)?;
    let doc = Doc::new(schema);
    resolve_nodes(&[Node::new(&doc, schema)], raw, 0)
}

/// [`resolve_text`] for a parsed value. The value has already lost what parsing loses (the
/// digits of an integer past `f64`'s precision): adapt the text when you have it.
pub fn resolve(schema: &Value, data: Value) -> Value {
    match resolve_text(schema, &data.to_string()) {
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or(data),
        Ok(None) | Err(_) => data,
    }
}

fn resolve_nodes(
    nodes: &[Node<'_>],
    raw: &RawValue,
    depth: usize,
) -> Result<Option<String>, serde_json::Error> {
    if nodes.is_empty() || depth > MAX_DEPTH {
        return Ok(None);
    }
    resolve_shape(Shape::of_all(nodes), raw, depth)
}

fn resolve_shape(
    mut shape: Shape<'_>,
    raw: &RawValue,
    depth: usize,
) -> Result<Option<String>, serde_json::Error> {
    if depth > MAX_DEPTH {
        return Ok(None);
    }
    if !shape.groups.is_empty() {
        // Which branch a value takes depends on the value: parse it (its text stays as is).
        let value: Value = serde_json::from_str(raw.get())?;
        let groups = std::mem::take(&mut shape.groups);
        for group in &groups {
            if let Some(branch) = pick(group, &value) {
                shape.merge(Shape::of(branch));
            }
        }
        return resolve_shape(shape, raw, depth + 1);
    }
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') if shape.types & OBJECT != 0 => resolve_object(&shape, raw, depth),
        Some(b'[') if shape.types & ARRAY != 0 => resolve_array(&shape, raw, depth),
        _ => Ok(None),
    }
}

fn resolve_object(
    shape: &Shape<'_>,
    raw: &RawValue,
    depth: usize,
) -> Result<Option<String>, serde_json::Error> {
    let Members(members) = serde_json::from_str(raw.get())?;
    let mut changed = false;
    let mut kept: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(members.len());
    for (name, value) in &members {
        match shape.reader_slot(name) {
            Slot::Dropped => changed = true,
            Slot::Checked(nodes) => match resolve_nodes(&nodes, value, depth + 1)? {
                Some(text) => {
                    changed = true;
                    kept.push((name, Cow::Owned(text)));
                }
                None => kept.push((name, Cow::Borrowed(value.get()))),
            },
            Slot::Anything | Slot::Rejected => kept.push((name, Cow::Borrowed(value.get()))),
        }
    }
    for (name, nodes) in &shape.properties {
        if !members.iter().any(|(present, _)| present == name)
            && let Some(default) = Shape::of_all(nodes).default
        {
            changed = true;
            kept.push((name, Cow::Owned(default.to_string())));
        }
    }
    if !changed {
        return Ok(None);
    }
    let mut out = String::with_capacity(raw.get().len());
    out.push('{');
    for (i, (name, text)) in kept.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(name)?);
        out.push(':');
        out.push_str(text);
    }
    out.push('}');
    Ok(Some(out))
}

fn resolve_array(
    shape: &Shape<'_>,
    raw: &RawValue,
    depth: usize,
) -> Result<Option<String>, serde_json::Error> {
    let items: Vec<&RawValue> = serde_json::from_str(raw.get())?;
    let mut changed = false;
    let mut texts: Vec<Cow<'_, str>> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match resolve_nodes(&shape.item_at(i), item, depth + 1)? {
            Some(text) => {
                changed = true;
                texts.push(Cow::Owned(text));
            }
            None => texts.push(Cow::Borrowed(item.get())),
        }
    }
    Ok(changed.then(|| format!("[{}]", texts.join(","))))
}

/// An object's members in their order, each value as its text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;

        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }

        deserializer.deserialize_map(MembersVisitor)
    }
}

/// The branch a value belongs to: the first that accepts it, else the first whose types
/// admit it.
fn pick<'a>(group: &Group<'a>, value: &Value) -> Option<Node<'a>> {
    let shapes: Vec<(Node<'a>, Shape<'a>)> =
        group.branches.iter().map(|b| (*b, Shape::of(*b))).collect();
    shapes
        .iter()
        .find(|(_, s)| rejects(s, value).is_none())
        .or_else(|| shapes.iter().find(|(_, s)| s.types & type_of(value) != 0))
        .map(|(node, _)| *node)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn order_v1() -> Value {
        json!({
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "amount": {"type": "number"}
            },
            "required": ["order_id", "amount"],
            "additionalProperties": false
        })
    }

    fn order_v2() -> Value {
        json!({
            "type": "object",
            "properties": {
                "order_id": {"type": "string"},
                "amount": {"type": "number"},
                "currency": {"type": "string", "default": "EUR"},
                "customer": {"$ref": "#/$defs/customer"}
            },
            "required": ["order_id", "amount", "currency"],
            "additionalProperties": false,
            "$defs": {"customer": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "tier": {"type": "string", "default": "standard"}},
                "required": ["id"],
                "additionalProperties": false
            }}
        })
    }

    #[test]
    fn upcast_fills_defaults() {
        let v1 = json!({"order_id": "o-1", "amount": 12.5});
        assert_eq!(
            resolve(&order_v2(), v1),
            json!({"order_id": "o-1", "amount": 12.5, "currency": "EUR"})
        );
    }

    #[test]
    fn upcast_fills_nested_defaults_through_refs() {
        let data = json!({"order_id": "o-1", "amount": 1, "customer": {"id": "c-1"}});
        assert_eq!(
            resolve(&order_v2(), data),
            json!({"order_id": "o-1", "amount": 1, "currency": "EUR",
                   "customer": {"id": "c-1", "tier": "standard"}})
        );
    }

    #[test]
    fn downcast_removes_unknown_properties() {
        let v2 = json!({"order_id": "o-1", "amount": 1, "currency": "USD",
                        "customer": {"id": "c-1", "tier": "gold"}});
        assert_eq!(
            resolve(&order_v1(), v2),
            json!({"order_id": "o-1", "amount": 1})
        );
    }

    #[test]
    fn downcast_is_recursive_and_keeps_maps() {
        let schema = json!({
            "type": "object",
            "properties": {
                "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "meta": {"type": "object"}
            }
        });
        let data = json!({
            "lines": [{"sku": "a", "gift": true}, {"sku": "b"}],
            "labels": {"env": "prod"},
            "meta": {"anything": 1},
            "extra": 2
        });
        assert_eq!(
            resolve(&schema, data),
            json!({"lines": [{"sku": "a"}, {"sku": "b"}], "labels": {"env": "prod"}, "meta": {"anything": 1}})
        );
    }

    #[test]
    fn unions_resolve_through_the_matching_branch() {
        let schema = json!({
            "type": "object",
            "properties": {"address": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/address"}]}},
            "$defs": {"address": {"type": "object", "properties": {"zip": {"type": "string"}, "country": {"type": "string", "default": "NL"}}}}
        });
        assert_eq!(
            resolve(&schema, json!({"address": {"zip": "1011", "street": "x"}})),
            json!({"address": {"zip": "1011", "country": "NL"}})
        );
        assert_eq!(
            resolve(&schema, json!({"address": null})),
            json!({"address": null})
        );
    }

    #[test]
    fn text_is_kept_for_every_value_left_alone() {
        let schema = json!({
            "type": "object",
            "properties": {
                "lines": {"type": "array", "items": {"type": "object", "properties": {
                    "sku": {"type": "string"},
                    "qty": {"type": "integer", "default": 1}
                }}},
                "total": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"cents": {"type": "integer"}}}]}
            }
        });
        let text = r#"{"lines":[{"sku":"a\u00e9","qty":18446744073709551616},{"sku":"b"}],"total":{"cents":-99999999999999999999,"x":1},"extra":[1.50]}"#;
        assert_eq!(
            resolve_text(&schema, text).unwrap().as_deref(),
            Some(
                r#"{"lines":[{"sku":"a\u00e9","qty":18446744073709551616},{"sku":"b","qty":1}],"total":{"cents":-99999999999999999999}}"#
            )
        );
        // Unchanged data: `None`, the caller keeps its text.
        assert_eq!(
            resolve_text(&schema, r#" {"lines": [{"sku": "a", "qty": 1.0}]} "#).unwrap(),
            None
        );
        assert!(resolve_text(&schema, "{not json").is_err());
    }

    #[test]
    fn data_the_schema_does_not_describe_is_left_alone() {
        assert_eq!(resolve(&json!({"type": "string"}), json!(5)), json!(5));
        assert_eq!(resolve(&json!(true), json!({"a": 1})), json!({"a": 1}));
    }
}
