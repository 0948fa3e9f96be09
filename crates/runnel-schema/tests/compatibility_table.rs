//! The compatibility table: schema pairs (old → new) with the verdict expected under every
//! mode, and transitive modes checked against a history of three versions.
//!
//! Each row says whether consumers on the new schema read old data (`backward`) and whether
//! consumers on the old schema read new data (`forward`); the seven modes follow from those
//! two (FULL is both, NONE is always compatible, and with one earlier version the transitive
//! modes agree with the plain ones). A breaking direction names a fragment its reason must
//! contain, so the table also pins down what the user is told.

use runnel_schema::CompatibilityMode::{self, *};
use runnel_schema::mode::check;
use serde_json::{Value, json};

/// The expected outcome in one direction.
#[derive(Debug, Clone, Copy)]
enum Dir {
    Reads,
    Breaks(&'static str),
}
use Dir::{Breaks, Reads};

struct Row {
    name: &'static str,
    old: Value,
    new: Value,
    backward: Dir,
    forward: Dir,
}

fn closed(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

fn open(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn row(name: &'static str, old: Value, new: Value, backward: Dir, forward: Dir) -> Row {
    Row {
        name,
        old,
        new,
        backward,
        forward,
    }
}

fn table() -> Vec<Row> {
    let id = || json!({"id": string()});
    let with = |extra: Value| {
        let mut props = id();
        for (k, v) in extra.as_object().unwrap() {
            props[k] = v.clone();
        }
        props
    };
    let customer = |age: &str, extra: Value| {
        let mut props = json!({"name": string(), "age": {"type": age}});
        for (k, v) in extra.as_object().unwrap() {
            props[k] = v.clone();
        }
        closed(props, &["name"])
    };
    let defs = |zip: &str, extra: Value| {
        let mut address = json!({"zip": {"type": zip}});
        for (k, v) in extra.as_object().unwrap() {
            address[k] = v.clone();
        }
        json!({
            "type": "object",
            "properties": {"ship_to": {"$ref": "#/$defs/address"}},
            "required": ["ship_to"],
            "additionalProperties": false,
            "$defs": {"address": closed(address, &["zip"])}
        })
    };
    vec![
        // ---- adding fields
        row(
            "add optional field (closed model)",
            closed(id(), &["id"]),
            closed(with(json!({"note": string()})), &["id"]),
            Reads,
            Reads,
        ),
        row(
            "add optional field (open model)",
            open(id(), &["id"]),
            open(with(json!({"note": string()})), &["id"]),
            Breaks("property `note` added to an open content model"),
            Reads,
        ),
        row(
            "add required field without default",
            closed(id(), &["id"]),
            closed(with(json!({"currency": string()})), &["id", "currency"]),
            Breaks("required property `currency` added without a default"),
            Reads,
        ),
        row(
            "add required field with default",
            closed(id(), &["id"]),
            closed(
                with(json!({"currency": {"type": "string", "default": "EUR"}})),
                &["id", "currency"],
            ),
            Reads,
            Reads,
        ),
        row(
            "add required field with default (open model)",
            open(id(), &["id"]),
            open(
                with(json!({"currency": {"type": "string", "default": "EUR"}})),
                &["id", "currency"],
            ),
            Breaks("added to an open content model"),
            Reads,
        ),
        // ---- removing fields
        row(
            "remove optional field (closed model)",
            closed(with(json!({"note": string()})), &["id"]),
            closed(id(), &["id"]),
            Reads,
            Reads,
        ),
        row(
            "remove optional field (open model)",
            open(with(json!({"note": string()})), &["id"]),
            open(id(), &["id"]),
            Reads,
            Breaks("property `note` removed from an open content model"),
        ),
        row(
            "remove required field",
            closed(with(json!({"note": string()})), &["id", "note"]),
            closed(id(), &["id"]),
            Reads,
            Breaks("required property `note` removed"),
        ),
        row(
            "remove required field that had a default",
            closed(
                with(json!({"note": {"type": "string", "default": ""}})),
                &["id", "note"],
            ),
            closed(id(), &["id"]),
            Reads,
            Reads,
        ),
        row(
            "make a field optional",
            closed(with(json!({"note": string()})), &["id", "note"]),
            closed(with(json!({"note": string()})), &["id"]),
            Reads,
            Breaks("property `note` became optional"),
        ),
        row(
            "make a field required with a default",
            closed(with(json!({"note": string()})), &["id"]),
            closed(
                with(json!({"note": {"type": "string", "default": ""}})),
                &["id", "note"],
            ),
            Reads,
            Reads,
        ),
        row(
            "make a field required without a default",
            closed(with(json!({"note": string()})), &["id"]),
            closed(with(json!({"note": string()})), &["id", "note"]),
            Breaks("property `note` became required without a default"),
            Reads,
        ),
        // ---- renaming
        row(
            "rename a required field",
            closed(json!({"customer_id": string()}), &["customer_id"]),
            closed(json!({"client_id": string()}), &["client_id"]),
            Breaks("required property `client_id` added without a default"),
            Breaks("required property `customer_id` removed"),
        ),
        row(
            "rename an optional field (readable, but the value is lost)",
            closed(json!({"customer_id": string()}), &[]),
            closed(json!({"client_id": string()}), &[]),
            Reads,
            Reads,
        ),
        // ---- types
        row(
            "widen integer to number",
            closed(json!({"amount": {"type": "integer"}}), &["amount"]),
            closed(json!({"amount": {"type": "number"}}), &["amount"]),
            Reads,
            Breaks("/properties/amount: type widened from integer to number"),
        ),
        row(
            "narrow number to integer",
            closed(json!({"amount": {"type": "number"}}), &["amount"]),
            closed(json!({"amount": {"type": "integer"}}), &["amount"]),
            Breaks("/properties/amount: type narrowed from number to integer"),
            Reads,
        ),
        row(
            "make a field nullable",
            closed(json!({"note": string()}), &["note"]),
            closed(json!({"note": {"type": ["string", "null"]}}), &["note"]),
            Reads,
            Breaks("type widened from string to [null, string]"),
        ),
        row(
            "make a nullable field non-null",
            closed(json!({"note": {"type": ["string", "null"]}}), &["note"]),
            closed(json!({"note": string()}), &["note"]),
            Breaks("type narrowed from [null, string] to string"),
            Reads,
        ),
        row(
            "change a type",
            closed(json!({"zip": string()}), &["zip"]),
            closed(json!({"zip": {"type": "integer"}}), &["zip"]),
            Breaks("type changed from string to integer"),
            Breaks("type changed from string to integer"),
        ),
        // ---- enum and const
        row(
            "add an enum value",
            closed(json!({"status": {"enum": ["placed", "paid"]}}), &["status"]),
            closed(
                json!({"status": {"enum": ["placed", "paid", "refunded"]}}),
                &["status"],
            ),
            Reads,
            Breaks("enum value \"refunded\" added"),
        ),
        row(
            "remove an enum value",
            closed(
                json!({"status": {"enum": ["placed", "paid", "refunded"]}}),
                &["status"],
            ),
            closed(json!({"status": {"enum": ["placed", "paid"]}}), &["status"]),
            Breaks("enum value \"refunded\" removed"),
            Reads,
        ),
        row(
            "change a const",
            closed(json!({"kind": {"const": "v1"}}), &["kind"]),
            closed(json!({"kind": {"const": "v2"}}), &["kind"]),
            Breaks("enum value \"v1\" removed"),
            Breaks("enum value \"v2\" added"),
        ),
        // ---- content model
        row(
            "close an open model",
            open(id(), &["id"]),
            closed(id(), &["id"]),
            Reads,
            Reads,
        ),
        row(
            "open a closed model",
            closed(id(), &["id"]),
            open(id(), &["id"]),
            Reads,
            Reads,
        ),
        row(
            "widen the values of a map",
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            json!({"type": "object", "additionalProperties": {"type": ["string", "number"]}}),
            Reads,
            Breaks("/additionalProperties: type widened from string to [number, string]"),
        ),
        row(
            "close a map",
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            json!({"type": "object", "additionalProperties": false}),
            Breaks("additional properties are no longer allowed"),
            Reads,
        ),
        // ---- nested objects
        row(
            "nested: add an optional field",
            closed(
                json!({"customer": customer("integer", json!({}))}),
                &["customer"],
            ),
            closed(
                json!({"customer": customer("integer", json!({"email": string()}))}),
                &["customer"],
            ),
            Reads,
            Reads,
        ),
        row(
            "nested: narrow a type",
            closed(
                json!({"customer": customer("number", json!({}))}),
                &["customer"],
            ),
            closed(
                json!({"customer": customer("integer", json!({}))}),
                &["customer"],
            ),
            Breaks("/properties/customer/properties/age: type narrowed from number to integer"),
            Reads,
        ),
        row(
            "nested: add a required field without default",
            closed(
                json!({"customer": closed(json!({"name": string()}), &["name"])}),
                &["customer"],
            ),
            closed(
                json!({"customer": closed(json!({"name": string(), "tier": string()}), &["name", "tier"])}),
                &["customer"],
            ),
            Breaks(
                "/properties/customer/properties/tier: required property `tier` added without a default",
            ),
            Reads,
        ),
        // ---- arrays
        row(
            "array: widen items",
            json!({"type": "array", "items": {"type": "integer"}}),
            json!({"type": "array", "items": {"type": "number"}}),
            Reads,
            Breaks("/items: type widened from integer to number"),
        ),
        row(
            "array: narrow items",
            json!({"type": "array", "items": {"type": "number"}}),
            json!({"type": "array", "items": {"type": "integer"}}),
            Breaks("/items: type narrowed from number to integer"),
            Reads,
        ),
        row(
            "array: items gain a required field with default",
            json!({"type": "array", "items": closed(json!({"sku": string()}), &["sku"])}),
            json!({"type": "array", "items": closed(json!({"sku": string(), "qty": {"type": "integer", "default": 1}}), &["sku", "qty"])}),
            Reads,
            Reads,
        ),
        row(
            "array: add maxItems",
            json!({"type": "array", "items": string()}),
            json!({"type": "array", "items": string(), "maxItems": 10}),
            Breaks("maxItems 10 added"),
            Reads,
        ),
        // ---- $ref
        row(
            "$ref: add an optional field to a definition",
            defs("string", json!({})),
            defs("string", json!({"city": string()})),
            Reads,
            Reads,
        ),
        row(
            "$ref: narrow a type inside a definition",
            defs("string", json!({})),
            defs("integer", json!({})),
            Breaks("/properties/ship_to/properties/zip: type changed from string to integer"),
            Breaks("/properties/ship_to/properties/zip: type changed from string to integer"),
        ),
        row(
            "$ref: inline a definition (same shape)",
            defs("string", json!({})),
            closed(
                json!({"ship_to": closed(json!({"zip": string()}), &["zip"])}),
                &["ship_to"],
            ),
            Reads,
            Reads,
        ),
        row(
            "$ref: draft-07 definitions to 2020-12 $defs",
            json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"ship_to": {"$ref": "#/definitions/address"}},
                "additionalProperties": false,
                "definitions": {"address": closed(json!({"zip": string()}), &["zip"])}
            }),
            defs("string", json!({})),
            // The old schema does not require `ship_to`; the new one does, without a default.
            Breaks("property `ship_to` became required without a default"),
            Reads,
        ),
        row(
            "optional struct becomes mandatory (anyOf with null)",
            json!({"type": "object", "properties": {"address": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]}},
                   "required": ["address"], "additionalProperties": false,
                   "$defs": {"a": closed(json!({"zip": string()}), &["zip"])}}),
            json!({"type": "object", "properties": {"address": {"$ref": "#/$defs/a"}},
                   "required": ["address"], "additionalProperties": false,
                   "$defs": {"a": closed(json!({"zip": string()}), &["zip"])}}),
            Breaks("/properties/address: type narrowed from [null, object] to object"),
            Reads,
        ),
        // ---- numeric and string constraints
        row(
            "raise a minimum",
            json!({"type": "number", "minimum": 0}),
            json!({"type": "number", "minimum": 1}),
            Breaks("minimum narrowed from 0 to 1"),
            Reads,
        ),
        row(
            "coarser multipleOf",
            json!({"type": "number", "multipleOf": 0.01}),
            json!({"type": "number", "multipleOf": 0.05}),
            Breaks("multipleOf narrowed from 0.01 to 0.05"),
            Reads,
        ),
        row(
            "relax a maxLength",
            json!({"type": "string", "maxLength": 10}),
            json!({"type": "string", "maxLength": 20}),
            Reads,
            Breaks("maxLength widened from 10 to 20"),
        ),
        row(
            "add a pattern",
            string(),
            json!({"type": "string", "pattern": "^[A-Z]{3}$"}),
            Breaks("pattern `^[A-Z]{3}$` added"),
            Reads,
        ),
        row(
            "add a format",
            string(),
            json!({"type": "string", "format": "date-time"}),
            Breaks("format `date-time` added"),
            Reads,
        ),
    ]
}

fn expected(mode: CompatibilityMode, row: &Row) -> Vec<&'static str> {
    let mut breaks = Vec::new();
    if mode.checks_backward()
        && let Breaks(why) = row.backward
    {
        breaks.push(why);
    }
    if mode.checks_forward()
        && let Breaks(why) = row.forward
    {
        breaks.push(why);
    }
    breaks
}

#[test]
fn every_pair_has_the_expected_verdict_under_every_mode() {
    let table = table();
    assert!(table.len() >= 30, "the table has {} rows", table.len());
    let mut failures = Vec::new();
    for row in &table {
        for mode in CompatibilityMode::ALL {
            let verdict = check(mode, &row.new, &[(1, &row.old)]);
            let breaks = expected(mode, row);
            let ok = verdict.compatible == breaks.is_empty()
                && breaks
                    .iter()
                    .all(|why| verdict.reasons.iter().any(|r| r.contains(why)));
            if !ok {
                failures.push(format!(
                    "{} under {mode}: expected {}, got {:#?}",
                    row.name,
                    if breaks.is_empty() {
                        "compatible".to_owned()
                    } else {
                        format!("incompatible with {breaks:?}")
                    },
                    verdict
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Runs a three-version history: v3 is checked against v1 and v2.
fn history_verdicts(v1: &Value, v2: &Value, v3: &Value) -> Vec<(CompatibilityMode, bool)> {
    CompatibilityMode::ALL
        .into_iter()
        .map(|mode| (mode, check(mode, v3, &[(1, v1), (2, v2)]).compatible))
        .collect()
}

#[test]
fn transitive_modes_remember_a_field_the_middle_version_dropped() {
    // v1 has `extra` as an integer, v2 drops it, v3 brings it back as a string. Each step is
    // fine on its own; v3 against v1 is not, in either direction.
    let v1 = closed(
        json!({"id": string(), "extra": {"type": "integer"}}),
        &["id"],
    );
    let v2 = closed(json!({"id": string()}), &["id"]);
    let v3 = closed(json!({"id": string(), "extra": string()}), &["id"]);
    assert_eq!(
        history_verdicts(&v1, &v2, &v3),
        [
            (Backward, true),
            (BackwardTransitive, false),
            (Forward, true),
            (ForwardTransitive, false),
            (Full, true),
            (FullTransitive, false),
            (None, true),
        ]
    );
    let verdict = check(BackwardTransitive, &v3, &[(1, &v1), (2, &v2)]);
    assert_eq!(
        verdict.reasons,
        ["version 1: /properties/extra: type changed from integer to string"]
    );
}

#[test]
fn transitive_forward_remembers_a_consumer_without_a_default() {
    // v1 requires `currency` with no default, v2 gives it a default, v3 drops it. Consumers
    // still on v1 cannot read v3 data; consumers on v2 fill the default.
    let v1 = closed(
        json!({"id": string(), "currency": string()}),
        &["id", "currency"],
    );
    let v2 = closed(
        json!({"id": string(), "currency": {"type": "string", "default": "EUR"}}),
        &["id", "currency"],
    );
    let v3 = closed(json!({"id": string()}), &["id"]);
    assert_eq!(
        history_verdicts(&v1, &v2, &v3),
        [
            (Backward, true),
            (BackwardTransitive, true),
            (Forward, true),
            (ForwardTransitive, false),
            (Full, true),
            (FullTransitive, false),
            (None, true),
        ]
    );
    let verdict = check(ForwardTransitive, &v3, &[(1, &v1), (2, &v2)]);
    assert_eq!(verdict.reasons.len(), 1, "{verdict:#?}");
    assert!(
        verdict.reasons[0]
            .starts_with("version 1: /properties/currency: required property `currency` removed"),
        "{verdict:#?}"
    );
}

#[test]
fn an_empty_history_is_compatible_in_every_mode() {
    for mode in CompatibilityMode::ALL {
        assert!(check(mode, &json!({"type": "string"}), &[]).compatible);
    }
}
