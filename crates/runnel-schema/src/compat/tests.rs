//! Unit tests of `can_read`, one rule each. The table of schema pairs under every mode is in
//! `tests/compatibility_table.rs`.

use serde_json::{Value, json};

use super::{Direction, can_read};

/// The reasons `reader` cannot read `writer`, worded for a backward check.
fn backward(reader: Value, writer: Value) -> Vec<String> {
    can_read(&reader, &writer, "")
        .iter()
        .map(|r| r.describe(Direction::Backward))
        .collect()
}

fn assert_readable(reader: Value, writer: Value) {
    let reasons = backward(reader, writer);
    assert!(reasons.is_empty(), "expected compatible, got {reasons:#?}");
}

fn assert_reason(reader: Value, writer: Value, expected: &str) {
    let reasons = backward(reader, writer);
    assert!(
        reasons.iter().any(|r| r.contains(expected)),
        "expected a reason containing {expected:?}, got {reasons:#?}"
    );
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

#[test]
fn identical_schemas_are_readable() {
    let schema = object(json!({"id": {"type": "string"}}), &["id"]);
    assert_readable(schema.clone(), schema);
}

#[test]
fn integer_is_read_as_number_but_not_the_other_way() {
    assert_readable(json!({"type": "number"}), json!({"type": "integer"}));
    assert_eq!(
        backward(
            object(json!({"amount": {"type": "integer"}}), &[]),
            object(json!({"amount": {"type": "number"}}), &[]),
        ),
        ["/properties/amount: type narrowed from number to integer"]
    );
}

#[test]
fn type_unions_widen_and_narrow() {
    assert_readable(
        json!({"type": ["string", "null"]}),
        json!({"type": "string"}),
    );
    assert_reason(
        json!({"type": "string"}),
        json!({"type": ["string", "null"]}),
        "type narrowed from [null, string] to string",
    );
}

#[test]
fn a_missing_type_is_any_type() {
    assert_reason(
        json!({"type": "string"}),
        json!({}),
        "type narrowed from any type to string",
    );
    assert_readable(json!({}), json!({"type": "string"}));
    assert_readable(json!(true), json!({"type": "object"}));
}

#[test]
fn enum_values_added_are_readable_removed_are_not() {
    assert_readable(
        json!({"enum": ["a", "b", "c"]}),
        json!({"enum": ["a", "b"]}),
    );
    assert_eq!(
        backward(json!({"enum": ["a"]}), json!({"enum": ["a", "b"]})),
        ["/: enum value \"b\" removed"]
    );
}

#[test]
fn const_is_a_one_value_enum() {
    assert_readable(json!({"enum": ["a", "b"]}), json!({"const": "a"}));
    assert_reason(
        json!({"const": "a"}),
        json!({"type": "string"}),
        "const \"a\" added",
    );
    assert_readable(
        json!({"type": "string", "minLength": 1}),
        json!({"const": "abc"}),
    );
    assert_reason(
        json!({"type": "string", "maxLength": 2}),
        json!({"const": "abc"}),
        "value \"abc\" was allowed and is now rejected (longer than maxLength)",
    );
}

#[test]
fn an_enum_covering_every_boolean_reads_a_boolean() {
    assert_readable(json!({"enum": [true, false]}), json!({"type": "boolean"}));
    assert_reason(
        json!({"enum": [true]}),
        json!({"type": "boolean"}),
        "const true added",
    );
}

#[test]
fn numeric_bounds_narrow_and_widen() {
    assert_readable(
        json!({"type": "number", "minimum": 0}),
        json!({"type": "number", "minimum": 5}),
    );
    assert_reason(
        json!({"type": "number", "minimum": 5}),
        json!({"type": "number", "minimum": 0}),
        "minimum narrowed from 0 to 5",
    );
    assert_reason(
        json!({"type": "number", "maximum": 10}),
        json!({"type": "number"}),
        "maximum 10 added",
    );
    assert_reason(
        json!({"type": "number", "exclusiveMaximum": 10}),
        json!({"type": "number", "maximum": 10}),
        "maximum narrowed from 10 to 10 (exclusive)",
    );
    assert_readable(
        json!({"type": "number", "maximum": 10}),
        json!({"type": "number", "exclusiveMaximum": 10}),
    );
}

#[test]
fn integer_bounds_compare_as_integers() {
    // For integers, `exclusiveMinimum: 0` and `minimum: 1` admit the same values.
    assert_readable(
        json!({"type": "integer", "minimum": 1}),
        json!({"type": "integer", "exclusiveMinimum": 0}),
    );
    assert_readable(
        json!({"type": "integer", "exclusiveMinimum": 0}),
        json!({"type": "integer", "minimum": 1}),
    );
}

#[test]
fn multiple_of_must_divide_the_writers() {
    assert_readable(
        json!({"type": "number", "multipleOf": 5}),
        json!({"type": "number", "multipleOf": 10}),
    );
    assert_reason(
        json!({"type": "number", "multipleOf": 10}),
        json!({"type": "number", "multipleOf": 5}),
        "multipleOf narrowed from 5 to 10",
    );
    assert_readable(
        json!({"type": "number", "multipleOf": 1}),
        json!({"type": "integer"}),
    );
}

#[test]
fn string_constraints_narrow_and_widen() {
    assert_readable(
        json!({"type": "string"}),
        json!({"type": "string", "maxLength": 5}),
    );
    assert_reason(
        json!({"type": "string", "maxLength": 5}),
        json!({"type": "string", "maxLength": 10}),
        "maxLength narrowed from 10 to 5",
    );
    assert_reason(
        json!({"type": "string", "minLength": 2}),
        json!({"type": "string"}),
        "minLength 2 added",
    );
    assert_reason(
        json!({"type": "string", "pattern": "^[a-z]+$"}),
        json!({"type": "string"}),
        "pattern `^[a-z]+$` added",
    );
    assert_reason(
        json!({"type": "string", "format": "email"}),
        json!({"type": "string"}),
        "format `email` added",
    );
    assert_readable(
        json!({"type": "string"}),
        json!({"type": "string", "format": "email", "pattern": "@"}),
    );
}

#[test]
fn optional_property_added_to_a_closed_model_is_readable() {
    assert_readable(
        object(
            json!({"id": {"type": "string"}, "note": {"type": "string"}}),
            &["id"],
        ),
        object(json!({"id": {"type": "string"}}), &["id"]),
    );
}

#[test]
fn property_added_to_an_open_model_is_not() {
    let reasons = backward(
        json!({"type": "object", "properties": {"id": {"type": "string"}, "note": {"type": "string"}}}),
        json!({"type": "object", "properties": {"id": {"type": "string"}}}),
    );
    assert_eq!(reasons.len(), 1, "{reasons:#?}");
    assert!(
        reasons[0].starts_with("/properties/note: property `note` added to an open content model"),
        "{reasons:#?}"
    );
}

#[test]
fn required_property_added_needs_a_default() {
    assert_eq!(
        backward(
            object(
                json!({"id": {"type": "string"}, "currency": {"type": "string"}}),
                &["id", "currency"]
            ),
            object(json!({"id": {"type": "string"}}), &["id"]),
        ),
        ["/properties/currency: required property `currency` added without a default"]
    );
    assert_readable(
        object(
            json!({"id": {"type": "string"}, "currency": {"type": "string", "default": "EUR"}}),
            &["id", "currency"],
        ),
        object(json!({"id": {"type": "string"}}), &["id"]),
    );
}

#[test]
fn optional_property_made_required_needs_a_default() {
    assert_reason(
        object(json!({"note": {"type": "string"}}), &["note"]),
        object(json!({"note": {"type": "string"}}), &[]),
        "property `note` became required without a default",
    );
}

#[test]
fn readers_drop_properties_they_do_not_declare() {
    // The old schema wrote `legacy`; the new one no longer declares it: consumers drop it.
    assert_readable(
        object(json!({"id": {"type": "string"}}), &["id"]),
        object(
            json!({"id": {"type": "string"}, "legacy": {"type": "string"}}),
            &["id", "legacy"],
        ),
    );
}

#[test]
fn a_closed_reader_without_properties_rejects_what_it_cannot_drop() {
    assert_reason(
        json!({"type": "object", "additionalProperties": false}),
        json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false}),
        "property `a` is no longer allowed",
    );
}

#[test]
fn additional_properties_schema_is_compared_like_a_map() {
    assert_readable(
        json!({"type": "object", "additionalProperties": {"type": "number"}}),
        json!({"type": "object", "additionalProperties": {"type": "integer"}}),
    );
    assert_reason(
        json!({"type": "object", "additionalProperties": {"type": "integer"}}),
        json!({"type": "object", "additionalProperties": {"type": "number"}}),
        "/additionalProperties: type narrowed from number to integer",
    );
    assert_reason(
        json!({"type": "object", "additionalProperties": {"type": "integer"}}),
        json!({"type": "object"}),
        "/additionalProperties: type narrowed from any type to integer",
    );
}

#[test]
fn nested_objects_report_nested_paths() {
    let old = object(
        json!({"customer": object(json!({"email": {"type": "string"}}), &["email"])}),
        &["customer"],
    );
    let new = object(
        json!({"customer": object(json!({"email": {"type": "string", "format": "email"}}), &["email"])}),
        &["customer"],
    );
    assert_eq!(
        backward(new, old),
        ["/properties/customer/properties/email: format `email` added"]
    );
}

#[test]
fn array_items_are_compared() {
    assert_readable(
        json!({"type": "array", "items": {"type": "number"}}),
        json!({"type": "array", "items": {"type": "integer"}}),
    );
    assert_eq!(
        backward(
            json!({"type": "array", "items": {"type": "integer"}}),
            json!({"type": "array", "items": {"type": "number"}}),
        ),
        ["/items: type narrowed from number to integer"]
    );
    assert_reason(
        json!({"type": "array", "items": {"type": "string"}, "maxItems": 3}),
        json!({"type": "array", "items": {"type": "string"}}),
        "maxItems 3 added",
    );
    assert_reason(
        json!({"type": "array", "uniqueItems": true}),
        json!({"type": "array"}),
        "uniqueItems true added",
    );
}

#[test]
fn tuples_compare_position_by_position() {
    // Draft-07 tuple against a 2020-12 prefixItems tuple.
    assert_reason(
        json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}),
        json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "array",
               "items": [{"type": "string"}, {"type": "number"}]}),
        "/prefixItems/1: type narrowed from number to integer",
    );
}

#[test]
fn refs_are_followed_in_both_documents() {
    let old = json!({
        "type": "object",
        "properties": {"shipping": {"$ref": "#/definitions/address"}},
        "definitions": {"address": {"type": "object", "properties": {"zip": {"type": "string"}}, "additionalProperties": false}}
    });
    let new = json!({
        "type": "object",
        "properties": {"shipping": {"$ref": "#/$defs/address"}},
        "$defs": {"address": {"type": "object", "properties": {"zip": {"type": "integer"}}, "additionalProperties": false}}
    });
    assert_eq!(
        backward(new, old.clone()),
        ["/properties/shipping/properties/zip: type changed from string to integer"]
    );
    assert_readable(old.clone(), old);
}

#[test]
fn recursive_refs_terminate() {
    let tree = |leaf: &str| {
        json!({
            "$ref": "#/$defs/node",
            "$defs": {"node": {
                "type": "object",
                "properties": {"value": {"type": leaf}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "additionalProperties": false
            }}
        })
    };
    assert_readable(tree("number"), tree("integer"));
    assert_reason(
        tree("integer"),
        tree("number"),
        "/properties/value: type narrowed from number to integer",
    );
}

#[test]
fn unresolvable_refs_are_reported_not_guessed() {
    assert_reason(
        json!({"$ref": "#/$defs/missing"}),
        json!({"type": "string"}),
        "`$ref` `#/$defs/missing` does not resolve within the schema",
    );
}

#[test]
fn optional_fields_as_unions_with_null() {
    // What schemars writes for `Option<Address>`.
    let option_of = |zip: &str| {
        json!({
            "type": "object",
            "properties": {"address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]}},
            "additionalProperties": false,
            "$defs": {"Address": {"type": "object", "properties": {"zip": {"type": zip}}, "required": ["zip"], "additionalProperties": false}}
        })
    };
    assert_readable(option_of("string"), option_of("string"));
    assert_readable(option_of("number"), option_of("integer"));
    assert_eq!(
        backward(option_of("integer"), option_of("number")),
        ["/properties/address/properties/zip: type narrowed from number to integer"]
    );
    // `[string, null]` is read by an `anyOf` with one branch per type.
    assert_readable(
        json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
        json!({"type": ["string", "null"]}),
    );
    assert_reason(
        json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}),
        json!({"type": ["string", "null"]}),
        "no `anyOf` branch of the new schema accepts null data",
    );
}

#[test]
fn a_writer_union_needs_every_branch_readable() {
    assert_readable(
        json!({"type": ["string", "integer"]}),
        json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
    );
    assert_reason(
        json!({"type": "string"}),
        json!({"oneOf": [{"type": "string"}, {"type": "integer"}]}),
        "type narrowed from [integer, string] to string",
    );
}

#[test]
fn all_of_members_are_merged() {
    let writer = json!({
        "allOf": [
            {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
            {"properties": {"amount": {"type": "integer"}}, "required": ["amount"]}
        ]
    });
    let reader = json!({
        "type": "object",
        "properties": {"id": {"type": "string"}, "amount": {"type": "number"}},
        "required": ["id", "amount"]
    });
    assert_readable(reader, writer);
}

#[test]
fn unknown_keywords_added_to_the_reader_cannot_be_proven() {
    let conditional = json!({
        "type": "object",
        "if": {"properties": {"kind": {"const": "a"}}},
        "then": {"required": ["a"]}
    });
    assert_reason(
        conditional.clone(),
        json!({"type": "object"}),
        "compatibility cannot be proven: `if` was added or changed",
    );
    assert_readable(conditional.clone(), conditional);
}

#[test]
fn false_schemas() {
    assert_readable(json!({"type": "string"}), json!(false));
    assert_reason(
        json!(false),
        json!({"type": "string"}),
        "the new schema accepts nothing",
    );
}

#[test]
fn forward_wording_names_the_old_consumers() {
    let reasons: Vec<String> =
        can_read(&json!({"type": "integer"}), &json!({"type": "number"}), "")
            .iter()
            .map(|r| r.describe(Direction::Forward))
            .collect();
    assert_eq!(
        reasons,
        ["/: type widened from integer to number, which consumers of the old schema cannot read"]
    );
}

#[test]
fn path_prefix_and_pointer_escaping() {
    let reasons = can_read(
        &json!({"type": "object", "properties": {"a/b": {"type": "integer"}}, "additionalProperties": false}),
        &json!({"type": "object", "properties": {"a/b": {"type": "number"}}, "additionalProperties": false}),
        "/data",
    );
    assert_eq!(reasons[0].path, "/data/properties/a~1b");
}

#[test]
fn pattern_properties_are_compared_by_pattern() {
    let map = |t: &str| json!({"type": "object", "patternProperties": {"^x-": {"type": t}}, "additionalProperties": false});
    assert_readable(map("number"), map("integer"));
    assert_reason(
        map("integer"),
        map("number"),
        "/patternProperties/^x-: type narrowed from number to integer",
    );
}

/// `n` definitions in a ring, each an object holding a `v` and a `next` pointing on.
fn ring(n: usize, leaf: &str) -> Value {
    let mut defs = serde_json::Map::new();
    for i in 0..n {
        defs.insert(
            format!("d{i}"),
            json!({
                "type": "object",
                "properties": {"v": {"type": leaf}, "next": {"$ref": format!("#/$defs/d{}", (i + 1) % n)}},
                "additionalProperties": false
            }),
        );
    }
    json!({"$ref": "#/$defs/d0", "$defs": defs})
}

#[test]
fn recursion_of_different_periods_is_cut_off_within_a_small_stack() {
    let run = |reader: Value, writer: Value| {
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || backward(reader, writer))
            .unwrap()
            .join()
            .unwrap()
    };
    // Periods 5 and 7 meet again after 35 levels: proven compatible.
    assert_eq!(
        run(ring(5, "number"), ring(7, "integer")),
        Vec::<String>::new()
    );
    // 13 and 17 would need 221 levels: given up, and said so.
    let reasons = run(ring(13, "number"), ring(17, "integer"));
    assert!(
        reasons.iter().any(|r| r.contains("nested too deeply")),
        "{reasons:#?}"
    );
}

#[test]
fn nested_unions_are_bounded_in_work() {
    // Eight levels of three-way unions on both sides, differing only at the leaves, so
    // nothing short-circuits: without a budget this is millions of comparisons.
    let nest = |leaf: Value| {
        let mut schema = leaf;
        for _ in 0..8 {
            schema = json!({"anyOf": [
                {"type": "object", "properties": {"a": schema.clone()}, "additionalProperties": false},
                {"type": "array", "items": schema.clone()},
                {"type": "object", "properties": {"b": schema}, "additionalProperties": false}
            ]});
        }
        schema
    };
    let reader = nest(json!({"type": ["string", "null"]}));
    let writer = nest(json!({"type": "string"}));
    let reasons = backward(reader, writer);
    assert!(
        reasons.is_empty() || reasons.iter().any(|r| r.contains("too complex")),
        "{reasons:#?}"
    );
}

#[test]
fn annotation_only_formats_constrain_nothing() {
    // What schemars writes for `u8` and then `u16`: a widening, whatever the format says.
    assert_readable(
        json!({"type": "integer", "format": "uint16", "minimum": 0, "maximum": 65535}),
        json!({"type": "integer", "format": "uint8", "minimum": 0, "maximum": 255}),
    );
    assert_reason(
        json!({"type": "string", "format": "uuid"}),
        json!({"type": "string", "format": "not-a-real-format"}),
        "format `uuid` added",
    );
}

/// `{"type": "integer", <keyword>: <number>}` with the number written as `number`.
fn integer_with(keyword: &str, number: &str) -> Value {
    serde_json::from_str(&format!(r#"{{"type": "integer", "{keyword}": {number}}}"#)).unwrap()
}

#[test]
fn integers_past_two_to_the_53_compare_exactly() {
    const TWO_53: &str = "9007199254740992";
    const TWO_53_PLUS_1: &str = "9007199254740993";
    assert_reason(
        integer_with("maximum", TWO_53),
        integer_with("maximum", TWO_53_PLUS_1),
        "maximum narrowed from 9007199254740993 to 9007199254740992",
    );
    assert_readable(
        integer_with("maximum", TWO_53_PLUS_1),
        integer_with("maximum", TWO_53),
    );
    assert_reason(
        integer_with("minimum", TWO_53_PLUS_1),
        integer_with("minimum", TWO_53),
        "minimum narrowed from 9007199254740992 to 9007199254740993",
    );
    assert_reason(
        integer_with("minimum", "-9007199254740992"),
        integer_with("minimum", "-9007199254740993"),
        "minimum narrowed from -9007199254740993 to -9007199254740992",
    );
    assert_reason(
        integer_with("maximum", "18446744073709551614"),
        integer_with("maximum", "18446744073709551615"),
        "maximum narrowed",
    );
    // A float bound against an integer one: 2^53 as a float is below 2^53 + 1.
    assert_reason(
        integer_with("maximum", "9007199254740992.0"),
        integer_with("maximum", TWO_53_PLUS_1),
        "maximum narrowed",
    );
    // Values from `enum` and `const`.
    assert_reason(
        integer_with("enum", &format!("[{TWO_53}]")),
        integer_with("const", TWO_53_PLUS_1),
        "enum",
    );
    assert_reason(
        integer_with("maximum", TWO_53),
        integer_with("const", TWO_53_PLUS_1),
        "value 9007199254740993 was allowed and is now rejected",
    );
    assert_readable(
        integer_with("const", TWO_53_PLUS_1),
        integer_with("enum", &format!("[{TWO_53_PLUS_1}]")),
    );
}

#[test]
fn min_properties_of_a_closed_reader_counts_the_properties_it_keeps() {
    let v1 = json!({
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "minProperties": 1,
        "additionalProperties": false
    });
    // A compatible change elsewhere leaves minProperties as it was.
    let mut v2 = v1.clone();
    v2["properties"]["c"] = json!({"type": "string"});
    assert_readable(v2.clone(), v1.clone());
    // The other way round it does narrow: `{"c": "x"}` is empty once v1 drops `c`.
    assert_reason(v1.clone(), v2, "minProperties 1 added");
    // The same schema behind a `$ref`, compared part by part.
    let wrapped = json!({"$defs": {"order": v1}, "$ref": "#/$defs/order"});
    assert_readable(wrapped.clone(), wrapped);

    // A reader dropping `b` may see nothing of what the writer counted.
    let only_a = json!({
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "minProperties": 1,
        "additionalProperties": false
    });
    assert_reason(only_a.clone(), v1.clone(), "minProperties 1 added");
    // Unless the writer requires what it keeps, or the reader fills a default.
    let mut a_required = v1.clone();
    a_required["required"] = json!(["a"]);
    assert_readable(only_a.clone(), a_required);
    let mut a_defaulted = only_a.clone();
    a_defaulted["properties"]["a"]["default"] = json!("x");
    assert_readable(a_defaulted, v1);
}
