//! Schema compatibility: can a consumer holding one schema read data written with another?
//!
//! This module exists so that "a producer cannot break its consumers by accident" is a pure,
//! testable function of two JSON Schemas, with no storage or I/O: the registry calls it at
//! registration, the CLI and the REST API call it to preview a change.
//!
//! Everything is built on one question, [`can_read`]`(reader, writer)`: is every value valid
//! under `writer`, once *resolved* for the reader, valid under `reader`? Resolution is what
//! a Runnel consumer pinned to a version does to each event (see [`crate::adapt`]):
//! properties the reader's schema does not declare are dropped (when it declares its
//! properties and has no `additionalProperties` schema), and missing properties the reader
//! gives a `default` are filled in. The modes are then:
//!
//! - `BACKWARD`: `can_read(new, old)` — consumers on the new schema read old data.
//! - `FORWARD`: `can_read(old, new)` — consumers on the old schema read new data.
//! - `FULL`: both. `*_TRANSITIVE`: against every earlier version instead of the latest.
//!
//! The checker is *sound, not complete*: when it says compatible, it is (for the keywords it
//! understands); when it cannot prove it (regular-expression inclusion, `if`/`then`, …) it
//! says incompatible and names the keyword. Each [`Reason`] names a JSON path and the rule.

mod accept;
pub(crate) mod shape;

use std::collections::HashSet;
use std::fmt;

use serde_json::Value;

pub(crate) use accept::rejects;
use shape::{
    Additional, BOOLEAN, Bound, Doc, FAMILIES, INTEGER, NULL, NUMBER, Node, STRING, Shape, Slot,
    describe_types, fmt_num, json_eq,
};

/// Which way a check reads: it decides how a [`Reason`] is worded for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The reader is the new schema, the writer the old one (`BACKWARD`).
    Backward,
    /// The reader is the old schema, the writer the new one (`FORWARD`).
    Forward,
}

/// One incompatibility: where (a JSON pointer into the schema, following `properties`,
/// `items`, … through `$ref`s) and which rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Reason {
    /// A JSON pointer such as `/properties/amount`; empty for the root.
    pub path: String,
    pub rule: Rule,
}

/// The rule a change breaks. Fields hold rendered values (types, bounds, JSON values).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Rule {
    /// The reader does not accept some type the writer writes (`disjoint`: none of them).
    TypeNarrowed {
        writer: String,
        reader: String,
        disjoint: bool,
    },
    /// A value the writer may write (from its `enum`/`const`) is rejected by the reader.
    ValueRejected {
        value: String,
        why: String,
        /// The reader has an `enum` without this value.
        enum_member: bool,
    },
    /// A constraint of the reader is narrower than the writer's (or the writer has none).
    ConstraintNarrowed {
        keyword: String,
        writer: Option<String>,
        reader: String,
    },
    /// The reader requires a property the writer may omit, and gives it no default.
    RequiredWithoutDefault {
        property: String,
        writer_declares: bool,
    },
    /// The reader constrains a property the writer does not declare but, with an open
    /// content model, may still write with any value.
    PropertyFromOpenModel { property: String },
    /// The reader rejects a property the writer may write.
    PropertyNotAllowed { property: String },
    /// The reader rejects additional properties the writer may write.
    AdditionalClosed,
    /// No branch of the reader's `anyOf`/`oneOf` accepts what the writer writes.
    NoBranch {
        keyword: &'static str,
        writer: String,
    },
    /// The reader accepts no value at all.
    AcceptsNothing,
    /// The checker cannot prove compatibility (an unsupported keyword changed, an
    /// unresolvable `$ref`, …).
    Unprovable { detail: String },
}

impl Reason {
    /// The reason as a sentence, worded for the direction of the check.
    pub fn describe(&self, direction: Direction) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        format!("{path}: {}", self.rule.describe(Some(direction)))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.rule.describe(None))
    }
}

impl Rule {
    fn describe(&self, direction: Option<Direction>) -> String {
        use Direction::{Backward, Forward};
        match (self, direction) {
            (
                Self::TypeNarrowed {
                    writer,
                    reader,
                    disjoint: true,
                },
                Some(Backward),
            ) => {
                format!("type changed from {writer} to {reader}")
            }
            (
                Self::TypeNarrowed {
                    writer,
                    reader,
                    disjoint: true,
                },
                Some(Forward),
            ) => format!(
                "type changed from {reader} to {writer}, which consumers of the old schema cannot read"
            ),
            (Self::TypeNarrowed { writer, reader, .. }, Some(Backward)) => {
                format!("type narrowed from {writer} to {reader}")
            }
            (Self::TypeNarrowed { writer, reader, .. }, Some(Forward)) => format!(
                "type widened from {reader} to {writer}, which consumers of the old schema cannot read"
            ),
            (Self::TypeNarrowed { writer, reader, .. }, None) => {
                format!("reader type {reader} does not accept writer type {writer}")
            }
            (
                Self::ValueRejected {
                    value,
                    enum_member: true,
                    ..
                },
                Some(Backward),
            ) => {
                format!("enum value {value} removed")
            }
            (
                Self::ValueRejected {
                    value,
                    enum_member: true,
                    ..
                },
                Some(Forward),
            ) => {
                format!("enum value {value} added, which consumers of the old schema reject")
            }
            (Self::ValueRejected { value, why, .. }, Some(Backward)) => {
                format!("value {value} was allowed and is now rejected ({why})")
            }
            (Self::ValueRejected { value, why, .. }, Some(Forward)) => {
                format!("value {value} is now allowed but the old schema rejects it ({why})")
            }
            (Self::ValueRejected { value, why, .. }, None) => {
                format!("the reader rejects writer value {value} ({why})")
            }
            (
                Self::ConstraintNarrowed {
                    keyword,
                    writer: None,
                    reader,
                },
                Some(Backward),
            ) => {
                format!("{keyword} {reader} added")
            }
            (
                Self::ConstraintNarrowed {
                    keyword,
                    writer: Some(w),
                    reader,
                },
                Some(Backward),
            ) => {
                format!("{keyword} narrowed from {w} to {reader}")
            }
            (
                Self::ConstraintNarrowed {
                    keyword,
                    writer: None,
                    reader,
                },
                Some(Forward),
            ) => format!(
                "{keyword} {reader} removed, so new data may break it for consumers of the old schema"
            ),
            (
                Self::ConstraintNarrowed {
                    keyword,
                    writer: Some(w),
                    reader,
                },
                Some(Forward),
            ) => {
                format!(
                    "{keyword} widened from {reader} to {w}, which consumers of the old schema reject"
                )
            }
            (
                Self::ConstraintNarrowed {
                    keyword,
                    writer: None,
                    reader,
                },
                None,
            ) => {
                format!("the reader adds {keyword} {reader}")
            }
            (
                Self::ConstraintNarrowed {
                    keyword,
                    writer: Some(w),
                    reader,
                },
                None,
            ) => {
                format!("reader {keyword} {reader} is narrower than writer {keyword} {w}")
            }
            (
                Self::RequiredWithoutDefault {
                    property,
                    writer_declares: true,
                },
                Some(Backward),
            ) => {
                format!("property `{property}` became required without a default")
            }
            (
                Self::RequiredWithoutDefault {
                    property,
                    writer_declares: false,
                },
                Some(Backward),
            ) => {
                format!("required property `{property}` added without a default")
            }
            (
                Self::RequiredWithoutDefault {
                    property,
                    writer_declares: true,
                },
                Some(Forward),
            ) => {
                format!(
                    "property `{property}` became optional, but consumers of the old schema \
                     require it and have no default for it"
                )
            }
            (
                Self::RequiredWithoutDefault {
                    property,
                    writer_declares: false,
                },
                Some(Forward),
            ) => {
                format!(
                    "required property `{property}` removed, but consumers of the old schema \
                     require it and have no default for it"
                )
            }
            (Self::RequiredWithoutDefault { property, .. }, None) => format!(
                "the reader requires `{property}`, which the writer may omit, and has no default"
            ),
            (Self::PropertyFromOpenModel { property }, Some(Backward)) => format!(
                "property `{property}` added to an open content model: data written with the old \
                 schema may hold any value under `{property}` (close the old schema with \
                 \"additionalProperties\": false to add properties)"
            ),
            (Self::PropertyFromOpenModel { property }, Some(Forward)) => format!(
                "property `{property}` removed from an open content model: new data may hold any \
                 value under `{property}`, which consumers of the old schema still check"
            ),
            (Self::PropertyFromOpenModel { property }, None) => format!(
                "the reader constrains `{property}`, which the open writer leaves unconstrained"
            ),
            (Self::PropertyNotAllowed { property }, Some(Backward)) => {
                format!("property `{property}` is no longer allowed")
            }
            (Self::PropertyNotAllowed { property }, Some(Forward)) => {
                format!("property `{property}` added, but the old schema does not allow it")
            }
            (Self::PropertyNotAllowed { property }, None) => {
                format!("the reader does not allow property `{property}`")
            }
            (Self::AdditionalClosed, Some(Backward)) => {
                "additional properties are no longer allowed".into()
            }
            (Self::AdditionalClosed, Some(Forward)) => {
                "additional properties are now allowed, but the old schema rejects them".into()
            }
            (Self::AdditionalClosed, None) => {
                "the reader rejects additional properties the writer may write".into()
            }
            (Self::NoBranch { keyword, writer }, Some(Backward)) => format!(
                "no `{keyword}` branch of the new schema accepts {writer} data written with the old schema"
            ),
            (Self::NoBranch { keyword, writer }, Some(Forward)) => format!(
                "no `{keyword}` branch of the old schema accepts {writer} data written with the new schema"
            ),
            (Self::NoBranch { keyword, writer }, None) => {
                format!("no `{keyword}` branch of the reader accepts writer {writer} data")
            }
            (Self::AcceptsNothing, Some(Backward)) => "the new schema accepts nothing".into(),
            (Self::AcceptsNothing, Some(Forward)) => "the old schema accepts nothing".into(),
            (Self::AcceptsNothing, None) => "the reader accepts nothing".into(),
            (Self::Unprovable { detail }, _) => {
                format!("compatibility cannot be proven: {detail}")
            }
        }
    }
}

/// Every reason `reader` cannot read all data valid under `writer` (resolved for the reader:
/// undeclared properties dropped, defaults filled). Both are whole schema documents; `path`
/// prefixes every reported path (usually `""`). Empty means compatible.
pub fn can_read(reader: &Value, writer: &Value, path: &str) -> Vec<Reason> {
    let reader_doc = Doc::new(reader);
    let writer_doc = Doc::new(writer);
    let mut checker = Checker::default();
    checker.nodes(
        &[Node::new(&reader_doc, reader)],
        &[Node::new(&writer_doc, writer)],
        path,
    );
    let mut seen = HashSet::new();
    checker
        .reasons
        .into_iter()
        .filter(|r| seen.insert(r.to_string()))
        .collect()
}

/// How deep the checker follows nested schemas before it gives up on a branch. Schema text
/// nests at most 128 JSON levels (the parser's limit), so only recursive `$ref`s whose
/// cycles do not line up reach this; it keeps a check well inside a 1 MiB stack.
const MAX_DEPTH: usize = 64;
/// How many alternatives a writer's unions may expand to before they are approximated.
const MAX_ALTERNATIVES: usize = 64;
/// How many shape comparisons one check may make before it gives up (nested unions can
/// multiply the work); a schema that needs more is reported as too complex.
const MAX_STEPS: usize = 20_000;

#[derive(Default)]
struct Checker {
    reasons: Vec<Reason>,
    /// Node pairs being compared further up: meeting one again (a recursive `$ref`) is
    /// assumed compatible, which is sound for recursive types (the other levels are checked).
    visiting: HashSet<(usize, usize)>,
    depth: usize,
    steps: usize,
}

impl Checker {
    fn push(&mut self, path: &str, rule: Rule) {
        self.reasons.push(Reason {
            path: path.to_owned(),
            rule,
        });
    }

    /// Runs `f` on a scratch list of reasons and returns them, leaving ours untouched.
    fn probe(&mut self, f: impl FnOnce(&mut Self)) -> Vec<Reason> {
        let saved = std::mem::take(&mut self.reasons);
        f(self);
        std::mem::replace(&mut self.reasons, saved)
    }

    fn nodes(&mut self, reader: &[Node<'_>], writer: &[Node<'_>], path: &str) {
        if self.depth > MAX_DEPTH {
            self.push(
                path,
                Rule::Unprovable {
                    detail: "the schema is nested too deeply to analyse".into(),
                },
            );
            return;
        }
        let key = match (reader, writer) {
            ([r], [w]) => {
                if json_eq(r.schema, w.schema) && !contains_ref(r.schema) {
                    return;
                }
                Some((r.addr(), w.addr()))
            }
            _ => None,
        };
        if let Some(key) = key
            && !self.visiting.insert(key)
        {
            return;
        }
        self.depth += 1;
        // Boxed: these are large, and recursion through them must fit a worker's stack.
        let r = Box::new(Shape::of_all(reader));
        let w = Box::new(Shape::of_all(writer));
        self.shapes(&r, &w, path);
        self.depth -= 1;
        if let Some(key) = key {
            self.visiting.remove(&key);
        }
    }

    fn shapes(&mut self, r: &Shape<'_>, w: &Shape<'_>, path: &str) {
        if w.never {
            return;
        }
        self.steps += 1;
        if self.steps > MAX_STEPS {
            if self.steps == MAX_STEPS + 1 {
                self.push(
                    path,
                    Rule::Unprovable {
                        detail: "the schemas are too complex to compare".into(),
                    },
                );
            }
            return;
        }
        if self.depth > MAX_DEPTH {
            self.push(
                path,
                Rule::Unprovable {
                    detail: "the schema is nested too deeply to analyse".into(),
                },
            );
            return;
        }
        // A writer with a finite set of values: check each one.
        if let Some(values) = &w.enumeration {
            self.writer_values(r, values, path);
            return;
        }
        // A writer union: every alternative must be readable.
        if !w.groups.is_empty() {
            self.writer_union(r, w, path);
            return;
        }
        if r.never {
            self.push(path, Rule::AcceptsNothing);
            return;
        }
        for caveat in &r.caveats {
            self.push(
                path,
                Rule::Unprovable {
                    detail: caveat.clone(),
                },
            );
        }
        if r.groups.is_empty() {
            self.plain(r, w, path);
        } else {
            self.reader_union(r, w, path);
        }
    }

    /// A writer whose values are a finite set (`enum`, `const`): the reader must accept each.
    #[inline(never)]
    fn writer_values(&mut self, r: &Shape<'_>, values: &[&Value], path: &str) {
        for value in values {
            if let Some(why) = rejects(r, value) {
                let enum_member = r
                    .enumeration
                    .as_ref()
                    .is_some_and(|allowed| !allowed.iter().any(|a| json_eq(a, value)));
                self.push(
                    path,
                    Rule::ValueRejected {
                        value: compact(value),
                        why,
                        enum_member,
                    },
                );
            }
        }
    }

    /// A writer with unions: each alternative (base plus one branch per union) must be
    /// readable. Kept out of [`Self::shapes`] so its locals do not weigh on every level of
    /// recursion.
    #[inline(never)]
    fn writer_union(&mut self, r: &Shape<'_>, w: &Shape<'_>, path: &str) {
        let alternatives = alternatives(w);
        let mut restrict = shape::ANY_TYPE;
        if r.groups.is_empty() && !r.never {
            // Report lost types once for the whole union, not per alternative.
            let all = alternatives.iter().fold(0, |acc, a| acc | a.types);
            if all & !r.types != 0 {
                self.push(
                    path,
                    Rule::TypeNarrowed {
                        writer: describe_types(all),
                        reader: describe_types(r.types),
                        disjoint: all & r.types == 0,
                    },
                );
                restrict = r.types;
            }
        }
        self.depth += 1;
        for alternative in alternatives {
            let alternative = Box::new(alternative.restricted_to(restrict));
            self.shapes(r, &alternative, path);
        }
        self.depth -= 1;
    }

    /// A reader with unions: its base must read the writer, and each union must have a
    /// branch that reads each kind of value the writer writes.
    #[inline(never)]
    fn reader_union(&mut self, r: &Shape<'_>, w: &Shape<'_>, path: &str) {
        self.plain(&r.without_groups(), w, path);
        self.depth += 1;
        for group in &r.groups {
            for family in FAMILIES {
                if w.types & family == 0 {
                    continue;
                }
                let part = Box::new(w.restricted_to(family));
                let mut best: Option<Vec<Reason>> = None;
                for branch in &group.branches {
                    let branch = Box::new(Shape::of(*branch));
                    if branch.types & part.types == 0 {
                        continue;
                    }
                    let found = self.probe(|c| c.shapes(&branch, &part, path));
                    let better = best.as_ref().is_none_or(|b| found.len() < b.len());
                    let done = found.is_empty();
                    if better {
                        best = Some(found);
                    }
                    if done {
                        break;
                    }
                }
                match best {
                    Some(reasons) => self.reasons.extend(reasons),
                    None => self.push(
                        path,
                        Rule::NoBranch {
                            keyword: group.kind.keyword(),
                            writer: describe_types(part.types),
                        },
                    ),
                }
            }
        }
        self.depth -= 1;
    }

    /// Compares two union-free shapes keyword by keyword.
    fn plain(&mut self, r: &Shape<'_>, w: &Shape<'_>, path: &str) {
        let lost = w.types & !r.types;
        if lost != 0 {
            self.push(
                path,
                Rule::TypeNarrowed {
                    writer: describe_types(w.types),
                    reader: describe_types(r.types),
                    disjoint: w.types & r.types == 0,
                },
            );
        }
        let flow = w.types & r.types;
        if flow == 0 {
            return;
        }
        if let Some(allowed) = &r.enumeration
            && self.reader_values(allowed, flow, path)
        {
            return;
        }
        if flow & NUMBER != 0 {
            self.numbers(r, w, flow, path);
        }
        if flow & STRING != 0 {
            self.strings(r, w, path);
        }
        if flow & shape::ARRAY != 0 {
            self.arrays(r, w, path);
        }
        if flow & shape::OBJECT != 0 {
            self.objects(r, w, path);
        }
        for not in &r.not {
            if !w.not.iter().any(|n| json_eq(n.schema, not.schema)) {
                self.push(
                    path,
                    Rule::ConstraintNarrowed {
                        keyword: "not".into(),
                        writer: None,
                        reader: compact(not.schema),
                    },
                );
            }
        }
        for (keyword, value) in &r.opaque {
            if !w
                .opaque
                .iter()
                .any(|(k, v)| k == keyword && json_eq(v, value))
            {
                self.push(
                    path,
                    Rule::Unprovable {
                        detail: format!("`{keyword}` was added or changed"),
                    },
                );
            }
        }
    }

    /// A reader restricted to a finite set of values, reading a writer that is not: reports
    /// the narrowing (and returns true) unless the set covers every value of the types that
    /// flow (`null`, both booleans).
    #[inline(never)]
    fn reader_values(&mut self, allowed: &[&Value], flow: u8, path: &str) -> bool {
        let covers_finite_domain = flow & !(NULL | BOOLEAN) == 0
            && (flow & NULL == 0 || allowed.iter().any(|v| v.is_null()))
            && (flow & BOOLEAN == 0
                || (allowed.iter().any(|v| **v == Value::Bool(true))
                    && allowed.iter().any(|v| **v == Value::Bool(false))));
        if covers_finite_domain {
            return false;
        }
        let keyword = if allowed.len() == 1 { "const" } else { "enum" };
        let rendered = if allowed.len() == 1 {
            compact(allowed[0])
        } else {
            compact(&Value::Array(
                allowed.iter().map(|v| (*v).clone()).collect(),
            ))
        };
        self.push(
            path,
            Rule::ConstraintNarrowed {
                keyword: keyword.into(),
                writer: None,
                reader: rendered,
            },
        );
        true
    }

    #[inline(never)]
    fn numbers(&mut self, r: &Shape<'_>, w: &Shape<'_>, flow: u8, path: &str) {
        let integers_only = flow & NUMBER == INTEGER;
        for lower in [true, false] {
            let (reader_bound, writer_bound) = if lower {
                (r.minimum, w.minimum)
            } else {
                (r.maximum, w.maximum)
            };
            let Some(reader_bound) = reader_bound else {
                continue;
            };
            let normalise = |b: Bound| {
                if integers_only {
                    b.to_integer(lower)
                } else {
                    b
                }
            };
            let narrowed = writer_bound
                .is_none_or(|wb| normalise(wb).is_looser_than(&normalise(reader_bound), lower));
            if narrowed {
                self.push(
                    path,
                    Rule::ConstraintNarrowed {
                        keyword: if lower { "minimum" } else { "maximum" }.into(),
                        writer: writer_bound.map(render_bound),
                        reader: render_bound(reader_bound),
                    },
                );
            }
        }
        for m in &r.multiple_of {
            let ok = w.multiple_of.iter().any(|wm| divides(*m, *wm))
                || (integers_only && divides(*m, 1.0));
            if !ok {
                self.push(
                    path,
                    Rule::ConstraintNarrowed {
                        keyword: "multipleOf".into(),
                        writer: w.multiple_of.first().map(|m| fmt_num(*m)),
                        reader: fmt_num(*m),
                    },
                );
            }
        }
    }

    #[inline(never)]
    fn strings(&mut self, r: &Shape<'_>, w: &Shape<'_>, path: &str) {
        if let Some(min) = r.min_length
            && min > w.min_length.unwrap_or(0)
        {
            self.push(
                path,
                Rule::ConstraintNarrowed {
                    keyword: "minLength".into(),
                    writer: w.min_length.map(|n| n.to_string()),
                    reader: min.to_string(),
                },
            );
        }
        if let Some(max) = r.max_length
            && w.max_length.is_none_or(|wm| wm > max)
        {
            self.push(
                path,
                Rule::ConstraintNarrowed {
                    keyword: "maxLength".into(),
                    writer: w.max_length.map(|n| n.to_string()),
                    reader: max.to_string(),
                },
            );
        }
        for (keyword, readers, writers) in [
            ("pattern", &r.patterns, &w.patterns),
            ("format", &r.formats, &w.formats),
        ] {
            for wanted in readers {
                if !writers.contains(wanted) {
                    self.push(
                        path,
                        Rule::ConstraintNarrowed {
                            keyword: keyword.into(),
                            writer: writers.first().map(|p| format!("`{p}`")),
                            reader: format!("`{wanted}`"),
                        },
                    );
                }
            }
        }
    }

    fn arrays(&mut self, r: &Shape<'_>, w: &Shape<'_>, path: &str) {
        let positions = r.prefix_items.len().max(w.prefix_items.len());
        for i in 0..positions {
            let reader_item = r.item_at(i);
            if reader_item.is_empty() {
                continue;
            }
            self.nodes(
                &reader_item,
                &w.item_at(i),
                &format!("{path}/prefixItems/{i}"),
            );
        }
        if !r.items.is_empty() {
            self.nodes(&r.items, &w.items, &format!("{path}/items"));
        }
        self.count_bounds(
            path,
            ("minItems", r.min_items, w.min_items),
            ("maxItems", r.max_items, w.max_items),
        );
        if r.unique_items && !w.unique_items {
            self.push(
                path,
                Rule::ConstraintNarrowed {
                    keyword: "uniqueItems".into(),
                    writer: None,
                    reader: "true".into(),
                },
            );
        }
        for contains in &r.contains {
            if !w
                .contains
                .iter()
                .any(|c| json_eq(c.schema, contains.schema))
            {
                self.push(
                    path,
                    Rule::ConstraintNarrowed {
                        keyword: "contains".into(),
                        writer: None,
                        reader: compact(contains.schema),
                    },
                );
            }
        }
    }

    fn count_bounds(
        &mut self,
        path: &str,
        (min_keyword, reader_min, writer_min): (&str, Option<u64>, Option<u64>),
        (max_keyword, reader_max, writer_max): (&str, Option<u64>, Option<u64>),
    ) {
        if let Some(min) = reader_min
            && min > writer_min.unwrap_or(0)
        {
            self.push(
                path,
                Rule::ConstraintNarrowed {
                    keyword: min_keyword.into(),
                    writer: writer_min.map(|n| n.to_string()),
                    reader: min.to_string(),
                },
            );
        }
        if let Some(max) = reader_max
            && writer_max.is_none_or(|wm| wm > max)
        {
            self.push(
                path,
                Rule::ConstraintNarrowed {
                    keyword: max_keyword.into(),
                    writer: writer_max.map(|n| n.to_string()),
                    reader: max.to_string(),
                },
            );
        }
    }

    fn objects(&mut self, r: &Shape<'_>, w: &Shape<'_>, path: &str) {
        let mut names: Vec<&str> = r
            .properties
            .keys()
            .chain(w.properties.keys())
            .chain(r.required.iter())
            .copied()
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let at = format!("{path}/properties/{}", escape_pointer(name));
            let written = w.writer_value(name);
            match (&written, r.reader_slot(name)) {
                (None, _) | (Some(_), Slot::Dropped | Slot::Anything) => {}
                (Some(_), Slot::Rejected) => self.push(
                    &at,
                    Rule::PropertyNotAllowed {
                        property: name.into(),
                    },
                ),
                (Some(written), Slot::Checked(reader_nodes)) => {
                    let unconstrained = written.is_empty()
                        && !w.properties.contains_key(name)
                        && w.pattern_matches(name).is_empty();
                    if unconstrained {
                        if !Shape::of_all(&reader_nodes).is_any() {
                            self.push(
                                &at,
                                Rule::PropertyFromOpenModel {
                                    property: name.into(),
                                },
                            );
                        }
                    } else {
                        self.nodes(&reader_nodes, written, &at);
                    }
                }
            }
            if r.required.contains(name)
                && !w.required.contains(name)
                && r.default_of(name).is_none()
            {
                self.push(
                    &at,
                    Rule::RequiredWithoutDefault {
                        property: name.into(),
                        writer_declares: w.properties.contains_key(name),
                    },
                );
            }
        }

        // Properties neither side declares.
        let writer_rest: Option<Vec<Node<'_>>> = match &w.additional {
            Additional::Open => Some(Vec::new()),
            Additional::Closed => None,
            Additional::Schemas(schemas) => Some(schemas.clone()),
        };
        if !r.drops_undeclared() {
            let at = format!("{path}/additionalProperties");
            match &r.additional {
                Additional::Open => {}
                Additional::Closed => {
                    let foreign_patterns = w
                        .pattern_properties
                        .iter()
                        .any(|(p, _)| !r.pattern_properties.iter().any(|(q, _)| q == p));
                    if writer_rest.is_some() || foreign_patterns {
                        self.push(&at, Rule::AdditionalClosed);
                    }
                }
                Additional::Schemas(reader_rest) => {
                    if let Some(writer_rest) = &writer_rest {
                        self.nodes(reader_rest, writer_rest, &at);
                    }
                    for (pattern, node) in &w.pattern_properties {
                        if !r.pattern_properties.iter().any(|(p, _)| p == pattern) {
                            self.nodes(reader_rest, &[*node], &at);
                        }
                    }
                }
            }
        }
        for (pattern, reader_node) in &r.pattern_properties {
            let at = format!("{path}/patternProperties/{}", escape_pointer(pattern));
            match w.pattern_properties.iter().find(|(p, _)| p == pattern) {
                Some((_, writer_node)) => self.nodes(&[*reader_node], &[*writer_node], &at),
                None => {
                    if let Some(writer_rest) = &writer_rest {
                        self.nodes(&[*reader_node], writer_rest, &at);
                    }
                }
            }
        }
        // A reader that drops undeclared properties may see fewer than the writer wrote.
        let writer_min = if r.drops_undeclared() {
            properties_kept_at_least(r, w)
        } else {
            w.min_properties
        };
        self.count_bounds(
            path,
            ("minProperties", r.min_properties, writer_min),
            ("maxProperties", r.max_properties, w.max_properties),
        );
    }
}

/// How many properties a reader that drops undeclared ones is sure to see of what `w`
/// writes: those the writer requires and the reader keeps, with those the reader fills a
/// default for; or the writer's `minProperties` less those it may write and the reader drops,
/// when it writes only properties it declares. `None` when nothing is sure.
fn properties_kept_at_least(r: &Shape<'_>, w: &Shape<'_>) -> Option<u64> {
    let kept = |name: &&str| !matches!(r.reader_slot(name), Slot::Dropped);
    let mut present: HashSet<&str> = w.required.iter().copied().filter(kept).collect();
    present.extend(
        r.properties
            .keys()
            .copied()
            .filter(|name| r.default_of(name).is_some()),
    );
    let writes_only_declared =
        matches!(w.additional, Additional::Closed) && w.pattern_properties.is_empty();
    let from_writer_min = match w.min_properties {
        Some(min) if writes_only_declared => {
            let dropped = w.properties.keys().filter(|name| !kept(name)).count() as u64;
            min.saturating_sub(dropped)
        }
        _ => 0,
    };
    let at_least = from_writer_min.max(present.len() as u64);
    (at_least > 0).then_some(at_least)
}

/// The alternatives a writer with unions expands to: its base merged with one branch of each
/// group. Too many alternatives fall back to the base alone, which admits more (sound).
fn alternatives<'a>(w: &Shape<'a>) -> Vec<Shape<'a>> {
    let base = w.without_groups();
    let mut alternatives = vec![base.clone()];
    for group in &w.groups {
        let mut next = Vec::new();
        for alternative in &alternatives {
            for branch in &group.branches {
                let mut merged = alternative.clone();
                merged.merge(Shape::of(*branch));
                if !merged.never {
                    next.push(merged);
                }
            }
        }
        if next.len() > MAX_ALTERNATIVES {
            return vec![base];
        }
        alternatives = next;
    }
    alternatives
}

fn render_bound(bound: Bound) -> String {
    if bound.exclusive {
        format!("{} (exclusive)", bound.value)
    } else {
        bound.value.to_string()
    }
}

/// Whether every multiple of `outer` is a multiple of `inner`.
fn divides(inner: f64, outer: f64) -> bool {
    let q = outer / inner;
    q.is_finite() && (q - q.round()).abs() < 1e-9 && q.round() != 0.0
}

fn contains_ref(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k == "$ref" || k == "$dynamicRef" || contains_ref(v)),
        Value::Array(items) => items.iter().any(contains_ref),
        _ => false,
    }
}

/// A JSON value on one line, cut short when long.
fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// Escapes a property name for a JSON pointer (`~` → `~0`, `/` → `~1`).
pub(crate) fn escape_pointer(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests;
