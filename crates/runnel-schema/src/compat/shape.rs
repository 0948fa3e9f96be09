//! A schema node flattened into the facts the checker and the adapter reason about.
//!
//! JSON Schema spreads one constraint over many spellings: `const` is a one-value `enum`,
//! `allOf` members and a 2020-12 `$ref`'s siblings all narrow the same node, `type` may be a
//! string or a list, draft-07 `items` may be a tuple. [`Shape`] is the one form they all
//! normalise to: the types a node admits, its enumeration, bounds, object and array structure,
//! and the unions (`anyOf`/`oneOf`) it still carries as groups of branches. Subschemas stay
//! unnormalised ([`Node`]s) until someone descends into them, so recursive schemas cost
//! nothing here.
//!
//! Merging two shapes is intersection. For a *writer* that is always safe (where the merge is
//! approximate it admits more, never less); where it could admit more for a *reader* the shape
//! records a caveat, which the checker reports instead of guessing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Whether validation checks `format` (registered schemas are compiled with format
/// assertion on). Unknown formats, such as the `uint8` or `double` that `schemars` writes, are
/// annotations: they constrain nothing, so the checker ignores them.
pub(crate) fn is_asserted_format(name: &str) -> bool {
    let options = jsonschema::options();
    options.is_known_format(jsonschema::Draft::Draft202012, name)
        || options.is_known_format(jsonschema::Draft::Draft7, name)
}

/// One schema document: the root `$ref`s resolve against, and how `$ref` treats its siblings.
#[derive(Debug)]
pub(crate) struct Doc<'a> {
    pub root: &'a Value,
    /// Draft-07 and earlier: a `$ref` replaces its whole object; siblings are ignored.
    pub ref_replaces_siblings: bool,
}

impl<'a> Doc<'a> {
    pub fn new(root: &'a Value) -> Self {
        let ref_replaces_siblings = root
            .get("$schema")
            .and_then(Value::as_str)
            .is_some_and(|s| {
                s.contains("draft-07") || s.contains("draft-06") || s.contains("draft-04")
            });
        Self {
            root,
            ref_replaces_siblings,
        }
    }

    /// Resolves a local `$ref` (`#`, `#/$defs/x`, `#/definitions/x`, any JSON pointer).
    pub fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        let decoded = percent_decode(pointer)?;
        self.root.pointer(&decoded)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A subschema in its document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Node<'a> {
    pub doc: &'a Doc<'a>,
    pub schema: &'a Value,
}

impl<'a> Node<'a> {
    pub fn new(doc: &'a Doc<'a>, schema: &'a Value) -> Self {
        Self { doc, schema }
    }

    fn child(&self, schema: &'a Value) -> Self {
        Self {
            doc: self.doc,
            schema,
        }
    }

    /// Identity of the node for cycle detection.
    pub fn addr(&self) -> usize {
        std::ptr::from_ref(self.schema) as usize
    }
}

/// JSON types as bits. `number` is `INTEGER | FRACTION`, so "integer ⊂ number" is plain set
/// inclusion and intersection is `&`.
pub(crate) type TypeSet = u8;
pub(crate) const NULL: TypeSet = 1;
pub(crate) const BOOLEAN: TypeSet = 2;
pub(crate) const INTEGER: TypeSet = 4;
pub(crate) const FRACTION: TypeSet = 8;
pub(crate) const NUMBER: TypeSet = INTEGER | FRACTION;
pub(crate) const STRING: TypeSet = 16;
pub(crate) const ARRAY: TypeSet = 32;
pub(crate) const OBJECT: TypeSet = 64;
pub(crate) const ANY_TYPE: TypeSet = NULL | BOOLEAN | NUMBER | STRING | ARRAY | OBJECT;

fn type_bits(name: &str) -> Option<TypeSet> {
    Some(match name {
        "null" => NULL,
        "boolean" => BOOLEAN,
        "integer" => INTEGER,
        "number" => NUMBER,
        "string" => STRING,
        "array" => ARRAY,
        "object" => OBJECT,
        _ => return None,
    })
}

/// The type bits of a JSON value.
pub(crate) fn type_of(value: &Value) -> TypeSet {
    match value {
        Value::Null => NULL,
        Value::Bool(_) => BOOLEAN,
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) {
                INTEGER
            } else {
                FRACTION
            }
        }
        Value::String(_) => STRING,
        Value::Array(_) => ARRAY,
        Value::Object(_) => OBJECT,
    }
}

/// `integer`, `[string, null]`, `any`, `nothing`.
pub(crate) fn describe_types(types: TypeSet) -> String {
    if types == ANY_TYPE {
        return "any type".into();
    }
    let mut names = Vec::new();
    for (bits, name) in [
        (NULL, "null"),
        (BOOLEAN, "boolean"),
        (STRING, "string"),
        (ARRAY, "array"),
        (OBJECT, "object"),
    ] {
        if types & bits != 0 {
            names.push(name);
        }
    }
    match types & NUMBER {
        NUMBER | FRACTION => names.insert(0, "number"),
        INTEGER => names.insert(0, "integer"),
        _ => {}
    }
    match names.len() {
        0 => "nothing".into(),
        1 => names[0].into(),
        _ => format!("[{}]", names.join(", ")),
    }
}

/// The type families a union is split by: a writer value has exactly one of them.
pub(crate) const FAMILIES: [TypeSet; 6] = [NULL, BOOLEAN, NUMBER, STRING, ARRAY, OBJECT];

/// A JSON number, compared exactly: an integer (everything `serde_json` parses into an `i64`
/// or `u64`) as an integer, anything else as the `f64` it was parsed into. As `f64`s,
/// 9007199254740993 and 9007199254740992 are the same number; as [`Num`]s they differ.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    pub fn of(number: &serde_json::Number) -> Option<Self> {
        if let Some(i) = number.as_i64() {
            return Some(Self::Int(i.into()));
        }
        if let Some(u) = number.as_u64() {
            return Some(Self::Int(u.into()));
        }
        number.as_f64().map(Self::Float)
    }

    pub fn of_value(value: &Value) -> Option<Self> {
        value.as_number().and_then(Self::of)
    }

    /// The nearest `f64`, for arithmetic that needs one (`multipleOf`).
    pub fn as_f64(self) -> f64 {
        match self {
            Self::Int(i) => i as f64,
            Self::Float(f) => f,
        }
    }

    /// `f`, when it is a whole number in `i128`'s range.
    fn integral(f: f64) -> Option<i128> {
        // 2^127: the first power of two `i128` cannot hold.
        const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
        (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i128)
    }
}

/// Exact comparison of an integer with a float. JSON holds no NaN or infinity.
fn cmp_int_float(i: i128, f: f64) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let floor = f.floor();
    match Num::integral(floor) {
        Some(whole) => match i.cmp(&whole) {
            Ordering::Equal if f > floor => Ordering::Less,
            ordering => ordering,
        },
        None if floor > 0.0 => Ordering::Less,
        None => Ordering::Greater,
    }
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (*self, *other) {
            (Self::Int(a), Self::Int(b)) => a.cmp(&b),
            (Self::Int(a), Self::Float(b)) => cmp_int_float(a, b),
            (Self::Float(a), Self::Int(b)) => cmp_int_float(b, a).reverse(),
            (Self::Float(a), Self::Float(b)) => {
                a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
            }
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Num {}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(i) => i.fmt(f),
            Self::Float(x) => f.write_str(&fmt_num(*x)),
        }
    }
}

/// A lower or upper numeric bound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bound {
    pub value: Num,
    pub exclusive: bool,
}

impl Bound {
    pub fn describe(&self, lower: bool) -> String {
        match (lower, self.exclusive) {
            (true, false) => format!("minimum {}", self.value),
            (true, true) => format!("exclusiveMinimum {}", self.value),
            (false, false) => format!("maximum {}", self.value),
            (false, true) => format!("exclusiveMaximum {}", self.value),
        }
    }

    /// The equivalent inclusive bound over integers.
    pub fn to_integer(self, lower: bool) -> Bound {
        // The whole number at or beyond the bound, then one step in for exclusive bounds.
        let step = match (lower, self.exclusive) {
            (_, false) => 0,
            (true, true) => 1,
            (false, true) => -1,
        };
        let value = match self.value {
            Num::Int(i) => Num::Int(i + step),
            Num::Float(f) => {
                let edge = match (lower, self.exclusive) {
                    (true, false) | (false, true) => f.ceil(),
                    (true, true) | (false, false) => f.floor(),
                };
                match Num::integral(edge) {
                    Some(whole) => Num::Int(whole + step),
                    None => Num::Float(edge),
                }
            }
        };
        Bound {
            value,
            exclusive: false,
        }
    }

    /// Whether `self` admits a value `other` excludes, for lower (`lower`) or upper bounds.
    pub fn is_looser_than(&self, other: &Bound, lower: bool) -> bool {
        if self.value == other.value {
            return !self.exclusive && other.exclusive;
        }
        if lower {
            self.value < other.value
        } else {
            self.value > other.value
        }
    }
}

pub(crate) fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// What happens to properties an object schema neither declares nor matches by pattern.
#[derive(Debug, Clone)]
pub(crate) enum Additional<'a> {
    /// Absent or `true`: anything.
    Open,
    /// `false`.
    Closed,
    /// A schema (a conjunction of them after merging).
    Schemas(Vec<Node<'a>>),
}

/// `anyOf` or `oneOf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupKind {
    AnyOf,
    OneOf,
}

impl GroupKind {
    pub fn keyword(self) -> &'static str {
        match self {
            Self::AnyOf => "anyOf",
            Self::OneOf => "oneOf",
        }
    }
}

/// A union: the value matches (at least) one branch.
#[derive(Debug, Clone)]
pub(crate) struct Group<'a> {
    pub kind: GroupKind,
    pub branches: Vec<Node<'a>>,
}

/// Keywords the checker does not reason about; a reader that has one the writer does not
/// have in the same form is reported, since compatibility cannot be proven.
const OPAQUE_KEYWORDS: &[&str] = &[
    "if",
    "then",
    "else",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "minContains",
    "maxContains",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
    "$dynamicRef",
    "$recursiveRef",
];

/// The normalised facts of one schema node. Empty conjunctions (`Vec<Node>`) mean "any".
#[derive(Debug, Clone)]
pub(crate) struct Shape<'a> {
    /// Admits no value (`false`, or contradictory types).
    pub never: bool,
    pub types: TypeSet,
    pub enumeration: Option<Vec<&'a Value>>,
    pub default: Option<&'a Value>,
    pub minimum: Option<Bound>,
    pub maximum: Option<Bound>,
    pub multiple_of: Vec<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub patterns: Vec<&'a str>,
    pub formats: Vec<&'a str>,
    pub properties: BTreeMap<&'a str, Vec<Node<'a>>>,
    pub declares_properties: bool,
    pub pattern_properties: Vec<(&'a str, Node<'a>)>,
    pub additional: Additional<'a>,
    pub required: BTreeSet<&'a str>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub prefix_items: Vec<Vec<Node<'a>>>,
    pub items: Vec<Node<'a>>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub unique_items: bool,
    pub contains: Vec<Node<'a>>,
    pub groups: Vec<Group<'a>>,
    pub not: Vec<Node<'a>>,
    pub opaque: Vec<(&'a str, &'a Value)>,
    /// Things the normaliser could not express exactly (unresolvable `$ref`, `allOf` members
    /// whose `additionalProperties` interact). Reported when the shape is a reader.
    pub caveats: Vec<String>,
}

/// How deep `$ref` chains and `allOf` nesting may go at one node before the normaliser gives
/// up (and records a caveat).
const MAX_INLINE_DEPTH: usize = 32;

impl<'a> Shape<'a> {
    /// The shape that admits everything (`true`, `{}`).
    pub fn any() -> Self {
        Self {
            never: false,
            types: ANY_TYPE,
            enumeration: None,
            default: None,
            minimum: None,
            maximum: None,
            multiple_of: Vec::new(),
            min_length: None,
            max_length: None,
            patterns: Vec::new(),
            formats: Vec::new(),
            properties: BTreeMap::new(),
            declares_properties: false,
            pattern_properties: Vec::new(),
            additional: Additional::Open,
            required: BTreeSet::new(),
            min_properties: None,
            max_properties: None,
            prefix_items: Vec::new(),
            items: Vec::new(),
            min_items: None,
            max_items: None,
            unique_items: false,
            contains: Vec::new(),
            groups: Vec::new(),
            not: Vec::new(),
            opaque: Vec::new(),
            caveats: Vec::new(),
        }
    }

    /// The shape that admits nothing (`false`).
    pub fn never() -> Self {
        Self {
            never: true,
            types: 0,
            ..Self::any()
        }
    }

    /// Normalises one node.
    pub fn of(node: Node<'a>) -> Self {
        Self::of_depth(node, 0)
    }

    /// Normalises a conjunction of nodes (all must hold); empty is "any".
    pub fn of_all(nodes: &[Node<'a>]) -> Self {
        let mut shape = Self::any();
        for node in nodes {
            shape.merge(Self::of(*node));
        }
        shape
    }

    fn of_depth(node: Node<'a>, depth: usize) -> Self {
        let object = match node.schema {
            Value::Bool(true) => return Self::any(),
            Value::Bool(false) => return Self::never(),
            Value::Object(object) => object,
            // Not a schema; registration rejects these, so treat as "any" defensively.
            _ => return Self::any(),
        };
        if depth > MAX_INLINE_DEPTH {
            let mut shape = Self::any();
            shape
                .caveats
                .push("`$ref`/`allOf` nesting is too deep to analyse".into());
            return shape;
        }
        let mut shape = Self::any();
        if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
            match node.doc.resolve(reference) {
                Some(target) => {
                    let target = Self::of_depth(node.child(target), depth + 1);
                    if node.doc.ref_replaces_siblings {
                        return target;
                    }
                    shape.merge(target);
                }
                None => shape.caveats.push(format!(
                    "`$ref` `{reference}` does not resolve within the schema"
                )),
            }
        }
        shape.read_keywords(node, object);
        if let Some(members) = object.get("allOf").and_then(Value::as_array) {
            for member in members {
                let member = Self::of_depth(node.child(member), depth + 1);
                shape.merge(member);
            }
        }
        shape
    }

    fn read_keywords(&mut self, node: Node<'a>, object: &'a serde_json::Map<String, Value>) {
        let num = |key: &str| object.get(key).and_then(Num::of_value);
        let count = |key: &str| object.get(key).and_then(Value::as_u64);

        match object.get("type") {
            Some(Value::String(name)) => self.types &= type_bits(name).unwrap_or(0),
            Some(Value::Array(names)) => {
                let bits = names
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(type_bits)
                    .fold(0, |acc, bits| acc | bits);
                self.types &= bits;
            }
            _ => {}
        }
        if let Some(values) = object.get("enum").and_then(Value::as_array) {
            self.intersect_enum(values.iter().collect());
        }
        if let Some(value) = object.get("const") {
            self.intersect_enum(vec![value]);
        }
        if self.default.is_none() {
            self.default = object.get("default");
        }

        // Numbers. Draft-04 spelled exclusivity as a boolean beside minimum/maximum.
        let exclusive_flag = |key: &str| object.get(key).and_then(Value::as_bool) == Some(true);
        if let Some(value) = num("minimum") {
            self.tighten_lower(Bound {
                value,
                exclusive: exclusive_flag("exclusiveMinimum"),
            });
        }
        if let Some(value) = num("exclusiveMinimum") {
            self.tighten_lower(Bound {
                value,
                exclusive: true,
            });
        }
        if let Some(value) = num("maximum") {
            self.tighten_upper(Bound {
                value,
                exclusive: exclusive_flag("exclusiveMaximum"),
            });
        }
        if let Some(value) = num("exclusiveMaximum") {
            self.tighten_upper(Bound {
                value,
                exclusive: true,
            });
        }
        if let Some(value) = object
            .get("multipleOf")
            .and_then(Value::as_f64)
            .filter(|m| *m > 0.0)
        {
            self.multiple_of.push(value);
        }

        // Strings.
        if let Some(n) = count("minLength") {
            self.min_length = Some(self.min_length.map_or(n, |m| m.max(n)));
        }
        if let Some(n) = count("maxLength") {
            self.max_length = Some(self.max_length.map_or(n, |m| m.min(n)));
        }
        if let Some(pattern) = object.get("pattern").and_then(Value::as_str) {
            self.patterns.push(pattern);
        }
        if let Some(format) = object.get("format").and_then(Value::as_str)
            && is_asserted_format(format)
        {
            self.formats.push(format);
        }

        // Objects.
        if let Some(properties) = object.get("properties").and_then(Value::as_object) {
            self.declares_properties = true;
            for (name, schema) in properties {
                self.properties
                    .entry(name.as_str())
                    .or_default()
                    .push(node.child(schema));
            }
        }
        if let Some(patterns) = object.get("patternProperties").and_then(Value::as_object) {
            for (pattern, schema) in patterns {
                self.pattern_properties
                    .push((pattern.as_str(), node.child(schema)));
            }
        }
        match object.get("additionalProperties") {
            Some(Value::Bool(false)) => self.additional = Additional::Closed,
            Some(schema @ Value::Object(_)) => {
                self.additional = Additional::Schemas(vec![node.child(schema)]);
            }
            _ => {}
        }
        if let Some(required) = object.get("required").and_then(Value::as_array) {
            self.required
                .extend(required.iter().filter_map(Value::as_str));
        }
        if let Some(n) = count("minProperties") {
            self.min_properties = Some(self.min_properties.map_or(n, |m| m.max(n)));
        }
        if let Some(n) = count("maxProperties") {
            self.max_properties = Some(self.max_properties.map_or(n, |m| m.min(n)));
        }

        // Arrays: 2020-12 `prefixItems` + `items`; draft-07 tuple `items` + `additionalItems`.
        if let Some(prefix) = object.get("prefixItems").and_then(Value::as_array) {
            self.prefix_items = prefix.iter().map(|s| vec![node.child(s)]).collect();
        }
        match object.get("items") {
            Some(Value::Array(tuple)) => {
                self.prefix_items = tuple.iter().map(|s| vec![node.child(s)]).collect();
                if let Some(rest) = object.get("additionalItems") {
                    self.items.push(node.child(rest));
                }
            }
            Some(schema) => self.items.push(node.child(schema)),
            None => {}
        }
        if let Some(n) = count("minItems") {
            self.min_items = Some(self.min_items.map_or(n, |m| m.max(n)));
        }
        if let Some(n) = count("maxItems") {
            self.max_items = Some(self.max_items.map_or(n, |m| m.min(n)));
        }
        if object.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
            self.unique_items = true;
        }
        if let Some(schema) = object.get("contains") {
            self.contains.push(node.child(schema));
        }

        // Combinators.
        for (key, kind) in [("anyOf", GroupKind::AnyOf), ("oneOf", GroupKind::OneOf)] {
            if let Some(branches) = object.get(key).and_then(Value::as_array) {
                self.groups.push(Group {
                    kind,
                    branches: branches.iter().map(|b| node.child(b)).collect(),
                });
            }
        }
        if let Some(schema) = object.get("not") {
            self.not.push(node.child(schema));
        }
        for key in OPAQUE_KEYWORDS {
            if let Some((key, value)) = object.get_key_value(*key) {
                self.opaque.push((key.as_str(), value));
            }
        }
        if self.types == 0 {
            self.never = true;
        }
    }

    fn intersect_enum(&mut self, values: Vec<&'a Value>) {
        self.enumeration = Some(match self.enumeration.take() {
            None => values,
            Some(current) => current
                .into_iter()
                .filter(|v| values.iter().any(|w| json_eq(v, w)))
                .collect(),
        });
        if self.enumeration.as_ref().is_some_and(Vec::is_empty) {
            self.never = true;
        }
    }

    fn tighten_lower(&mut self, bound: Bound) {
        if self
            .minimum
            .is_none_or(|current| current.is_looser_than(&bound, true))
        {
            self.minimum = Some(bound);
        }
    }

    fn tighten_upper(&mut self, bound: Bound) {
        if self
            .maximum
            .is_none_or(|current| current.is_looser_than(&bound, false))
        {
            self.maximum = Some(bound);
        }
    }

    /// Intersects `other` into `self` (both constraints hold).
    pub fn merge(&mut self, other: Shape<'a>) {
        // A closed member only admits its own properties; merged with a member that declares
        // others, the merged shape would admit more than the real one.
        let closes_over_foreign = |closing: &Shape<'a>, declaring: &Shape<'a>| {
            !matches!(closing.additional, Additional::Open)
                && declaring
                    .properties
                    .keys()
                    .any(|name| !closing.properties.contains_key(name))
        };
        if closes_over_foreign(self, &other) || closes_over_foreign(&other, self) {
            self.caveats.push(
                "`allOf` combines `additionalProperties` with properties declared in another \
                 member"
                    .into(),
            );
        }
        let positions = self.prefix_items.len().max(other.prefix_items.len());
        let mut prefix = Vec::with_capacity(positions);
        for i in 0..positions {
            let mut at = self.item_at(i);
            at.extend(other.item_at(i));
            prefix.push(at);
        }
        self.never |= other.never;
        self.types &= other.types;
        if self.types == 0 {
            self.never = true;
        }
        if let Some(values) = other.enumeration {
            self.intersect_enum(values);
        }
        if self.default.is_none() {
            self.default = other.default;
        }
        if let Some(bound) = other.minimum {
            self.tighten_lower(bound);
        }
        if let Some(bound) = other.maximum {
            self.tighten_upper(bound);
        }
        self.multiple_of.extend(other.multiple_of);
        self.min_length = max_opt(self.min_length, other.min_length);
        self.max_length = min_opt(self.max_length, other.max_length);
        self.patterns.extend(other.patterns);
        self.formats.extend(other.formats);

        for (name, nodes) in other.properties {
            self.properties.entry(name).or_default().extend(nodes);
        }
        self.declares_properties |= other.declares_properties;
        self.pattern_properties.extend(other.pattern_properties);
        self.additional = match (
            std::mem::replace(&mut self.additional, Additional::Open),
            other.additional,
        ) {
            (Additional::Open, other) | (other, Additional::Open) => other,
            (Additional::Closed, _) | (_, Additional::Closed) => Additional::Closed,
            (Additional::Schemas(mut a), Additional::Schemas(b)) => {
                a.extend(b);
                Additional::Schemas(a)
            }
        };
        self.required.extend(other.required);
        self.min_properties = max_opt(self.min_properties, other.min_properties);
        self.max_properties = min_opt(self.max_properties, other.max_properties);

        self.prefix_items = prefix;
        self.items.extend(other.items);
        self.min_items = max_opt(self.min_items, other.min_items);
        self.max_items = min_opt(self.max_items, other.max_items);
        self.unique_items |= other.unique_items;
        self.contains.extend(other.contains);

        self.groups.extend(other.groups);
        self.not.extend(other.not);
        self.opaque.extend(other.opaque);
        self.caveats.extend(other.caveats);
    }

    /// The schemas item `index` of an array must satisfy (empty: any).
    pub fn item_at(&self, index: usize) -> Vec<Node<'a>> {
        self.prefix_items
            .get(index)
            .cloned()
            .unwrap_or_else(|| self.items.clone())
    }

    /// The same shape without its unions.
    pub fn without_groups(&self) -> Self {
        Self {
            groups: Vec::new(),
            ..self.clone()
        }
    }

    /// The same shape restricted to the types in `family`.
    pub fn restricted_to(&self, family: TypeSet) -> Self {
        let mut shape = self.clone();
        shape.types &= family;
        if shape.types == 0 {
            shape.never = true;
        }
        shape
    }

    /// Pattern-property schemas whose pattern matches `name`. A pattern the `regex` crate
    /// cannot compile is assumed to match (conservative both ways: the writer may write
    /// there, the reader constrains it).
    pub fn pattern_matches(&self, name: &str) -> Vec<Node<'a>> {
        self.pattern_properties
            .iter()
            .filter(|(pattern, _)| regex::Regex::new(pattern).map_or(true, |re| re.is_match(name)))
            .map(|(_, node)| *node)
            .collect()
    }

    /// Whether a consumer reading through this shape drops properties it does not declare:
    /// it declares `properties` and its `additionalProperties` is not a schema (a schema
    /// makes the other properties data, like a map's entries).
    pub fn drops_undeclared(&self) -> bool {
        self.declares_properties && !matches!(self.additional, Additional::Schemas(_))
    }

    /// What a writer with this shape may put under `name`: `None` when it never writes it,
    /// otherwise the conjunction its value satisfies (empty: anything).
    pub fn writer_value(&self, name: &str) -> Option<Vec<Node<'a>>> {
        let mut matches = self.pattern_matches(name);
        if let Some(declared) = self.properties.get(name) {
            matches.extend(declared.iter().copied());
            return Some(matches);
        }
        if !matches.is_empty() {
            return Some(matches);
        }
        match &self.additional {
            Additional::Open => Some(Vec::new()),
            Additional::Closed => None,
            Additional::Schemas(schemas) => Some(schemas.clone()),
        }
    }

    /// How a reader with this shape treats a property `name`.
    pub fn reader_slot(&self, name: &str) -> Slot<'a> {
        let mut matches = self.pattern_matches(name);
        if let Some(declared) = self.properties.get(name) {
            matches.extend(declared.iter().copied());
            return Slot::Checked(matches);
        }
        if !matches.is_empty() {
            return Slot::Checked(matches);
        }
        if self.drops_undeclared() {
            return Slot::Dropped;
        }
        match &self.additional {
            Additional::Open => Slot::Anything,
            Additional::Closed => Slot::Rejected,
            Additional::Schemas(schemas) => Slot::Checked(schemas.clone()),
        }
    }

    /// The default a reader fills in for a missing property `name`, if it has one.
    pub fn default_of(&self, name: &str) -> Option<&'a Value> {
        let nodes = self.properties.get(name)?;
        Shape::of_all(nodes).default
    }

    /// Whether the shape admits every value (no constraint at all).
    pub fn is_any(&self) -> bool {
        !self.never
            && self.types == ANY_TYPE
            && self.enumeration.is_none()
            && self.minimum.is_none()
            && self.maximum.is_none()
            && self.multiple_of.is_empty()
            && self.min_length.is_none()
            && self.max_length.is_none()
            && self.patterns.is_empty()
            && self.formats.is_empty()
            && self.properties.is_empty()
            && self.pattern_properties.is_empty()
            && matches!(self.additional, Additional::Open)
            && self.required.is_empty()
            && self.min_properties.is_none()
            && self.max_properties.is_none()
            && self.prefix_items.is_empty()
            && self.items.iter().all(|n| Shape::of(*n).is_any())
            && self.min_items.is_none()
            && self.max_items.is_none()
            && !self.unique_items
            && self.contains.is_empty()
            && self.groups.is_empty()
            && self.not.is_empty()
            && self.opaque.is_empty()
            && self.caveats.is_empty()
    }
}

/// How a reader treats one property of the data it reads.
#[derive(Debug, Clone)]
pub(crate) enum Slot<'a> {
    /// Checked against this conjunction (declared, pattern-matched, or additional schema).
    Checked(Vec<Node<'a>>),
    /// Removed before reading (not declared by a reader that declares its properties).
    Dropped,
    /// Kept and accepted as is (open content model with no declared properties).
    Anything,
    /// Kept and rejected (`additionalProperties: false` with nothing declared).
    Rejected,
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// JSON equality as JSON Schema defines it: numbers compare by value (`1 == 1.0`), exactly
/// ([`Num`]).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (Num::of(x), Num::of(y)) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::Num;

    #[test]
    fn numbers_compare_exactly_across_integers_and_floats() {
        let two_53 = 9_007_199_254_740_992_i128;
        assert!(Num::Int(two_53 + 1) > Num::Int(two_53));
        assert!(Num::Int(two_53 + 1) > Num::Float(two_53 as f64));
        assert!(Num::Float(two_53 as f64) < Num::Int(two_53 + 1));
        assert_eq!(Num::Int(two_53), Num::Float(two_53 as f64));
        assert!(Num::Int(2) < Num::Float(2.5) && Num::Int(3) > Num::Float(2.5));
        assert!(Num::Int(-3) < Num::Float(-2.5) && Num::Int(-2) > Num::Float(-2.5));
        assert_eq!(Num::Int(0), Num::Float(-0.0));
        assert!(Num::Int(u64::MAX.into()) < Num::Float(1e300));
        assert!(Num::Int(i64::MIN.into()) > Num::Float(-1e300));
        let parsed = |text: &str| Num::of_value(&serde_json::from_str(text).unwrap()).unwrap();
        assert_ne!(parsed("9007199254740993"), parsed("9007199254740992"));
        assert_eq!(parsed("1"), parsed("1.0"));
    }
}
