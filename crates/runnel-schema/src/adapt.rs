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

use serde_json::Value;

use crate::compat::rejects;
use crate::compat::shape::{ARRAY, Doc, Group, Node, OBJECT, Shape, Slot, type_of};

/// How deep values are followed; deeper parts are left as they are.
const MAX_DEPTH: usize = 64;

/// `data` as a consumer reading through `schema` sees it: undeclared properties removed,
/// missing defaulted properties filled. Data the schema does not describe is left alone.
pub fn resolve(schema: &Value, data: Value) -> Value {
    let doc = Doc::new(schema);
    resolve_nodes(&[Node::new(&doc, schema)], data, 0)
}

fn resolve_nodes(nodes: &[Node<'_>], value: Value, depth: usize) -> Value {
    if nodes.is_empty() || depth > MAX_DEPTH {
        return value;
    }
    resolve_shape(Shape::of_all(nodes), value, depth)
}

fn resolve_shape(mut shape: Shape<'_>, value: Value, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return value;
    }
    if !shape.groups.is_empty() {
        let groups = std::mem::take(&mut shape.groups);
        for group in &groups {
            if let Some(branch) = pick(group, &value) {
                shape.merge(Shape::of(branch));
            }
        }
        return resolve_shape(shape, value, depth + 1);
    }
    match value {
        Value::Object(mut map) if shape.types & OBJECT != 0 => {
            let names: Vec<String> = map.keys().cloned().collect();
            for name in names {
                match shape.reader_slot(&name) {
                    Slot::Dropped => {
                        map.remove(&name);
                    }
                    Slot::Checked(nodes) => {
                        if let Some(slot) = map.get_mut(&name) {
                            let inner = std::mem::take(slot);
                            *slot = resolve_nodes(&nodes, inner, depth + 1);
                        }
                    }
                    Slot::Anything | Slot::Rejected => {}
                }
            }
            for (name, nodes) in &shape.properties {
                if !map.contains_key(*name)
                    && let Some(default) = Shape::of_all(nodes).default
                {
                    map.insert((*name).to_owned(), default.clone());
                }
            }
            Value::Object(map)
        }
        Value::Array(items) if shape.types & ARRAY != 0 => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| resolve_nodes(&shape.item_at(i), item, depth + 1))
                .collect(),
        ),
        other => other,
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
    fn data_the_schema_does_not_describe_is_left_alone() {
        assert_eq!(resolve(&json!({"type": "string"}), json!(5)), json!(5));
        assert_eq!(resolve(&json!(true), json!({"a": 1})), json!({"a": 1}));
    }
}
