//! Does a reader accept one concrete value? The checker asks this when a writer's values are
//! a finite set (`enum`, `const`), and the adapter asks it to pick the union branch a value
//! belongs to.
//!
//! This is a small evaluator over [`Shape`]s, not a second validator: it answers for the
//! keywords the checker understands and says "no" for the ones it does not (so the checker
//! stays conservative). Real validation of events uses the `jsonschema` crate.

use serde_json::Value;

use super::shape::{GroupKind, Num, Shape, Slot, describe_types, fmt_num, json_eq, type_of};

/// How deep values are followed before giving up (and rejecting, to stay conservative).
const MAX_DEPTH: usize = 64;

/// Why `shape` (read as a consumer reads: undeclared properties dropped, defaults filled)
/// rejects `value`, or `None` when it accepts it.
pub(crate) fn rejects(shape: &Shape<'_>, value: &Value) -> Option<String> {
    rejects_at(shape, value, 0)
}

fn rejects_at(shape: &Shape<'_>, value: &Value, depth: usize) -> Option<String> {
    if depth > MAX_DEPTH {
        return Some("too deeply nested to evaluate".into());
    }
    if shape.never {
        return Some("the schema accepts nothing".into());
    }
    if let Some(caveat) = shape.caveats.first() {
        return Some(format!("cannot evaluate: {caveat}"));
    }
    if let Some((keyword, _)) = shape.opaque.first() {
        return Some(format!("cannot evaluate `{keyword}`"));
    }
    let kind = type_of(value);
    if shape.types & kind == 0 {
        return Some(format!("type {} is not accepted", describe_types(kind)));
    }
    if let Some(values) = &shape.enumeration
        && !values.iter().any(|v| json_eq(v, value))
    {
        return Some("not one of the allowed values".into());
    }
    let why = match value {
        Value::Number(n) => Num::of(n).and_then(|n| number(shape, n)),
        Value::String(s) => string(shape, s),
        Value::Array(items) => array(shape, items, depth),
        Value::Object(map) => object(shape, map, depth),
        Value::Null | Value::Bool(_) => None,
    };
    if why.is_some() {
        return why;
    }
    for group in &shape.groups {
        let matching = group
            .branches
            .iter()
            .filter(|b| rejects_at(&Shape::of(**b), value, depth + 1).is_none())
            .count();
        if matching == 0 {
            return Some(format!("no `{}` branch accepts it", group.kind.keyword()));
        }
        if group.kind == GroupKind::OneOf && matching > 1 {
            return Some("more than one `oneOf` branch accepts it".into());
        }
    }
    for not in &shape.not {
        if rejects_at(&Shape::of(*not), value, depth + 1).is_none() {
            return Some("it matches a `not` schema".into());
        }
    }
    None
}

fn number(shape: &Shape<'_>, n: Num) -> Option<String> {
    if let Some(min) = shape.minimum
        && (n < min.value || (min.exclusive && n == min.value))
    {
        return Some(format!("below {}", min.describe(true)));
    }
    if let Some(max) = shape.maximum
        && (n > max.value || (max.exclusive && n == max.value))
    {
        return Some(format!("above {}", max.describe(false)));
    }
    for m in &shape.multiple_of {
        let q = n.as_f64() / m;
        if (q - q.round()).abs() > 1e-9 {
            return Some(format!("not a multiple of {}", fmt_num(*m)));
        }
    }
    None
}

fn string(shape: &Shape<'_>, s: &str) -> Option<String> {
    let len = s.chars().count() as u64;
    if shape.min_length.is_some_and(|m| len < m) {
        return Some("shorter than minLength".into());
    }
    if shape.max_length.is_some_and(|m| len > m) {
        return Some("longer than maxLength".into());
    }
    for pattern in &shape.patterns {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => return Some(format!("does not match pattern `{pattern}`")),
            Err(_) => return Some(format!("cannot evaluate pattern `{pattern}`")),
        }
    }
    if let Some(format) = shape.formats.first() {
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&serde_json::json!({ "format": format }));
        match validator {
            Ok(v) if v.is_valid(&Value::String(s.to_owned())) => {}
            Ok(_) => return Some(format!("not a valid `{format}`")),
            Err(_) => return Some(format!("cannot evaluate format `{format}`")),
        }
    }
    None
}

fn array(shape: &Shape<'_>, items: &[Value], depth: usize) -> Option<String> {
    let len = items.len() as u64;
    if shape.min_items.is_some_and(|m| len < m) || shape.max_items.is_some_and(|m| len > m) {
        return Some("item count out of bounds".into());
    }
    if shape.unique_items {
        for (i, a) in items.iter().enumerate() {
            if items[..i].iter().any(|b| json_eq(a, b)) {
                return Some("items are not unique".into());
            }
        }
    }
    for (i, item) in items.iter().enumerate() {
        let item_shape = Shape::of_all(&shape.item_at(i));
        if let Some(why) = rejects_at(&item_shape, item, depth + 1) {
            return Some(format!("item {i}: {why}"));
        }
    }
    if !shape.contains.is_empty() {
        for contains in &shape.contains {
            let contains = Shape::of(*contains);
            if !items
                .iter()
                .any(|item| rejects_at(&contains, item, depth + 1).is_none())
            {
                return Some("no item matches `contains`".into());
            }
        }
    }
    None
}

fn object(shape: &Shape<'_>, map: &serde_json::Map<String, Value>, depth: usize) -> Option<String> {
    let mut kept = 0u64;
    for (name, value) in map {
        match shape.reader_slot(name) {
            Slot::Dropped => continue,
            Slot::Anything => {}
            Slot::Rejected => return Some(format!("property `{name}` is not allowed")),
            Slot::Checked(nodes) => {
                if let Some(why) = rejects_at(&Shape::of_all(&nodes), value, depth + 1) {
                    return Some(format!("property `{name}`: {why}"));
                }
            }
        }
        kept += 1;
    }
    for name in &shape.required {
        if !map.contains_key(*name) {
            if shape.default_of(name).is_none() {
                return Some(format!("required property `{name}` is missing"));
            }
            kept += 1;
        }
    }
    if shape.min_properties.is_some_and(|m| kept < m)
        || shape.max_properties.is_some_and(|m| kept > m)
    {
        return Some("property count out of bounds".into());
    }
    None
}
