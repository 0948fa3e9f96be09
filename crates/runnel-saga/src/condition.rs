//! Conditions on event data: a saga's start condition (`score < 0.8`) and a step's `when`
//! (`reserve.warehouse == "eu"`), parsed once when the saga is validated.
//!
//! A condition is one or more comparisons joined by `and`: `path op literal`, where `path` is
//! a dotted path into a JSON object (`customer.tier`; a segment of digits indexes an array),
//! `op` is one of `<`, `<=`, `>`, `>=`, `==`, `!=`, and `literal` is a number, a quoted string
//! (`"eu"` or `'eu'`), `true`, `false` or `null`. Numbers compare numerically, strings by
//! their bytes; booleans and `null` only with `==` and `!=`. A path that is absent, or a value
//! of another kind than the literal, makes its comparison false whatever the operator — a
//! missing score never passes `score < 0.8`, nor `score != 1`.

use std::fmt;

use serde_json::Value;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    text: String,
    comparisons: Vec<Comparison>,
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    path: Vec<String>,
    op: Op,
    literal: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

/// Why a condition's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("condition `{text}`: {reason}")]
pub struct InvalidCondition {
    /// The condition as written.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Condition {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, InvalidCondition> {
        let invalid = |reason: String| InvalidCondition {
            text: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(invalid("is empty".into()));
        }
        let mut comparisons = Vec::new();
        for part in split_and(text) {
            comparisons.push(parse_comparison(part.trim()).map_err(invalid)?);
        }
        Ok(Self {
            text: text.to_string(),
            comparisons,
        })
    }

    /// The condition as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first segment of every path (a step's `when` names the steps it reads this way).
    pub fn roots(&self) -> impl Iterator<Item = &str> {
        self.comparisons
            .iter()
            .filter_map(|c| c.path.first().map(String::as_str))
    }

    /// Whether `value` satisfies every comparison.
    pub fn matches(&self, value: &Value) -> bool {
        self.comparisons.iter().all(|c| c.matches(value))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Splits on the word `and` outside quotes.
fn split_and(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let bytes = text.as_bytes();
    let (mut start, mut quote) = (0, None::<u8>);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if text[i..].starts_with(" and ") => {
                parts.push(&text[start..i]);
                i += 5;
                start = i;
                continue;
            }
            None => {}
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

fn parse_comparison(text: &str) -> Result<Comparison, String> {
    const OPS: [(&str, Op); 6] = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];
    let (at, token, op) = OPS
        .iter()
        .filter_map(|(token, op)| text.find(token).map(|at| (at, *token, *op)))
        .min_by_key(|(at, token, _)| (*at, std::cmp::Reverse(token.len())))
        .ok_or_else(|| {
            format!(
                "`{text}` has no operator (one of <, <=, >, >=, ==, !=) between a path and a value"
            )
        })?;
    let path_text = text[..at].trim();
    let literal_text = text[at + token.len()..].trim();
    if path_text.is_empty() {
        return Err(format!("`{text}` has no path before `{token}`"));
    }
    let path: Vec<String> = path_text.split('.').map(str::to_string).collect();
    if let Some(bad) = path.iter().find(|s| {
        s.is_empty()
            || !s
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        return Err(format!(
            "path `{path_text}` has a bad segment `{bad}` (letters, digits, `_` and `-` only)"
        ));
    }
    let literal = parse_literal(literal_text).ok_or_else(|| {
        format!("`{literal_text}` is not a number, a quoted string, true, false or null")
    })?;
    if matches!(literal, Value::Bool(_) | Value::Null) && !matches!(op, Op::Eq | Op::Ne) {
        return Err(format!(
            "`{literal_text}` can only be compared with == or !="
        ));
    }
    Ok(Comparison { path, op, literal })
}

fn parse_literal(text: &str) -> Option<Value> {
    match text {
        "true" => return Some(Value::Bool(true)),
        "false" => return Some(Value::Bool(false)),
        "null" => return Some(Value::Null),
        _ => {}
    }
    for quote in ['"', '\''] {
        if text.len() >= 2 && text.starts_with(quote) && text.ends_with(quote) {
            let inner = &text[1..text.len() - 1];
            return (!inner.contains(quote)).then(|| Value::String(inner.to_string()));
        }
    }
    let number: f64 = text.parse().ok()?;
    serde_json::Number::from_f64(number).map(Value::Number)
}

impl Comparison {
    fn matches(&self, root: &Value) -> bool {
        let mut value = root;
        for segment in &self.path {
            value = match value {
                Value::Object(map) => match map.get(segment) {
                    Some(v) => v,
                    None => return false,
                },
                Value::Array(items) => {
                    match segment.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        Some(v) => v,
                        None => return false,
                    }
                }
                _ => return false,
            };
        }
        let ordering = match (value, &self.literal) {
            (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
                (Some(a), Some(b)) => a.partial_cmp(&b),
                _ => None,
            },
            (Value::String(a), Value::String(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (Value::Bool(a), Value::Bool(b)) => return (a == b) == (self.op == Op::Eq),
            (Value::Null, Value::Null) => return self.op == Op::Eq,
            _ => None,
        };
        let Some(ordering) = ordering else {
            return false;
        };
        use std::cmp::Ordering::*;
        match self.op {
            Op::Lt => ordering == Less,
            Op::Le => ordering != Greater,
            Op::Gt => ordering == Greater,
            Op::Ge => ordering != Less,
            Op::Eq => ordering == Equal,
            Op::Ne => ordering != Equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(text: &str, value: Value) -> bool {
        Condition::parse(text).unwrap().matches(&value)
    }

    #[test]
    fn numbers_compare_numerically() {
        assert!(check("score < 0.8", json!({"score": 0.5})));
        assert!(!check("score < 0.8", json!({"score": 0.8})));
        assert!(check("score <= 0.8", json!({"score": 0.8})));
        assert!(check("score >= 2", json!({"score": 2})));
        assert!(check("score != 2", json!({"score": 3})));
        assert!(check("score == 2", json!({"score": 2.0})));
    }

    #[test]
    fn nested_paths_strings_booleans_and_arrays() {
        let data = json!({"customer": {"tier": "gold", "vip": true}, "items": [{"sku": "a"}]});
        assert!(check("customer.tier == \"gold\"", data.clone()));
        assert!(check("customer.tier != 'silver'", data.clone()));
        assert!(check("customer.vip == true", data.clone()));
        assert!(check("items.0.sku == 'a'", data.clone()));
        assert!(check(
            "customer.tier == 'gold' and customer.vip == true",
            data.clone()
        ));
        assert!(!check(
            "customer.tier == 'gold' and customer.vip == false",
            data
        ));
    }

    #[test]
    fn a_missing_path_or_another_kind_is_false_for_every_operator() {
        for op in ["<", "<=", ">", ">=", "==", "!="] {
            assert!(!check(&format!("score {op} 1"), json!({})), "{op}");
            assert!(
                !check(&format!("score {op} 1"), json!({"score": "high"})),
                "{op}"
            );
        }
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        let reason = |t: &str| Condition::parse(t).unwrap_err().reason;
        assert!(reason("score").contains("no operator"));
        assert!(reason("< 3").contains("no path"));
        assert!(reason("score < high").contains("not a number"));
        assert!(reason("score < true").contains("only be compared"));
        assert!(reason("a..b == 1").contains("bad segment"));
        assert!(reason("  ").contains("empty"));
    }

    #[test]
    fn and_inside_a_quoted_string_is_not_a_separator() {
        assert!(check(
            "name == 'salt and pepper'",
            json!({"name": "salt and pepper"})
        ));
    }
}
