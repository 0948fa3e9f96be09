//! Event type names: lowercase `domain.fact`, and a lint for past tense.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::EnvelopeError;

/// The `type` of an event: a lowercase, dot-separated `domain.fact` name such as
/// `order.placed` or `payment.charged`.
///
/// Only names matching `^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$` can be held: at least two
/// segments, each starting with a letter and made of `a-z`, `0-9` and `_`. The first segment
/// is the [domain](EventType::domain), which names the stream the event goes to; the last is
/// the [fact](EventType::fact), which should be past tense (see [`lint_event_type`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventType(String);

impl EventType {
    /// Parses and validates an event type name.
    pub fn new(name: impl Into<String>) -> Result<Self, EnvelopeError> {
        let name = name.into();
        match check(&name) {
            Ok(()) => Ok(Self(name)),
            Err(reason) => Err(EnvelopeError::InvalidEventType { name, reason }),
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first segment, which names the stream: `order.placed` → `order`.
    pub fn domain(&self) -> &str {
        self.0.split_once('.').map_or(self.0.as_str(), |(d, _)| d)
    }

    /// The last segment, the fact that happened: `order.placed` → `placed`.
    pub fn fact(&self) -> &str {
        self.0.rsplit_once('.').map_or(self.0.as_str(), |(_, f)| f)
    }

    /// All segments in order: `billing.invoice.paid` → `billing`, `invoice`, `paid`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }
}

/// Returns the reason `name` is not a valid event type, if it is not.
fn check(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty: use `domain.fact`, for example `order.placed`".into());
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return Err(format!("must be lowercase{}", did_you_mean(name)));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'))
    {
        return Err(format!(
            "contains {c:?}: only `a-z`, `0-9`, `_` and `.` are allowed{}",
            did_you_mean(name)
        ));
    }
    if !name.contains('.') {
        return Err("must be `domain.fact` (for example `order.placed`)".into());
    }
    for segment in name.split('.') {
        match segment.chars().next() {
            None => {
                return Err("has an empty segment: segments are separated by single dots".into());
            }
            Some(first) if !first.is_ascii_lowercase() => {
                return Err(format!(
                    "has segment `{segment}`, which must start with a letter"
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// ` (did you mean `…`?)` with a valid name close to `name`, or nothing when none is plain:
/// a suggestion is only made if it is itself a valid event type.
fn did_you_mean(name: &str) -> String {
    suggestion(name).map_or_else(String::new, |s| format!(" (did you mean `{s}`?)"))
}

/// `name` lowercased, with `-`, ` `, `/` and `:` read as separators: the first one the domain
/// separator when `name` has no dot (`Order-Placed` → `order.placed`), the others `_`
/// (`order-service.placed` → `order_service.placed`). `None` unless the result is valid.
fn suggestion(name: &str) -> Option<String> {
    let mut dot_wanted = !name.contains('.');
    let mut out = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        match c {
            'a'..='z' | '0'..='9' | '_' | '.' => out.push(c),
            '-' | ' ' | '/' | ':' if dot_wanted => {
                out.push('.');
                dot_wanted = false;
            }
            '-' | ' ' | '/' | ':' => out.push('_'),
            _ => return None,
        }
    }
    // `out` holds only characters `check` allows, so this does not come back here.
    check(&out).is_ok().then_some(out)
}

impl FromStr for EventType {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for EventType {
    type Error = EnvelopeError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<String> for EventType {
    type Error = EnvelopeError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<EventType> for String {
    fn from(value: EventType) -> Self {
        value.0
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A style problem with a valid event type. Lints advise; they never reject an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypeLint {
    /// The fact (last segment) does not look past tense: `order.place` rather than
    /// `order.placed`. Events record what has happened; commands belong elsewhere.
    FactNotPastTense {
        /// The whole event type.
        event_type: String,
        /// Its last segment.
        fact: String,
    },
}

impl EventTypeLint {
    /// A stable identifier for the lint, e.g. `fact_not_past_tense`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::FactNotPastTense { .. } => "fact_not_past_tense",
        }
    }

    /// The lint as a sentence for people.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for EventTypeLint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FactNotPastTense { event_type, fact } => write!(
                f,
                "event type `{event_type}`: the fact `{fact}` does not look past tense; \
                 events record what happened (`order.placed`, not `order.place`)"
            ),
        }
    }
}

/// Reports style problems with an event type.
///
/// The only lint today is [`EventTypeLint::FactNotPastTense`]. Its heuristic: the fact is
/// past tense when some `_`-separated word of it ends in `ed` (but is not one of a few
/// present-tense words such as `need` or `proceed`) or is a common irregular past tense or
/// participle (`paid`, `sold`, `began`, `done`, …). So `user.signed_up`, `fraud.scored` and
/// `order.paid` pass, `order.place` and `payment.charge` are reported.
pub fn lint_event_type(event_type: &EventType) -> Vec<EventTypeLint> {
    let fact = event_type.fact();
    let mut lints = Vec::new();
    if !fact.split('_').any(looks_past_tense) {
        lints.push(EventTypeLint::FactNotPastTense {
            event_type: event_type.as_str().to_owned(),
            fact: fact.to_owned(),
        });
    }
    lints
}

fn looks_past_tense(word: &str) -> bool {
    (word.len() > 2 && word.ends_with("ed") && !NOT_PAST_ED.contains(&word))
        || IRREGULAR_PAST.contains(&word)
}

/// Words ending in `ed` that are not past tense.
const NOT_PAST_ED: &[&str] = &[
    "bleed", "breed", "embed", "exceed", "feed", "heed", "need", "proceed", "seed", "speed",
    "succeed", "weed",
];

/// Common irregular past tenses and past participles, including those spelled like the
/// present (`set`, `put`, `cut`), which read as participles in an event name.
const IRREGULAR_PAST: &[&str] = &[
    "arisen",
    "arose",
    "ate",
    "awoke",
    "awoken",
    "beaten",
    "became",
    "began",
    "begun",
    "bent",
    "bet",
    "bid",
    "bit",
    "bitten",
    "blew",
    "blown",
    "bore",
    "born",
    "borne",
    "bought",
    "bound",
    "bred",
    "broadcast",
    "broke",
    "broken",
    "brought",
    "built",
    "burnt",
    "burst",
    "cast",
    "caught",
    "chose",
    "chosen",
    "clung",
    "cost",
    "crept",
    "cut",
    "dealt",
    "did",
    "done",
    "dove",
    "drawn",
    "dreamt",
    "drew",
    "driven",
    "drove",
    "dug",
    "dwelt",
    "eaten",
    "fallen",
    "fed",
    "fell",
    "felt",
    "fit",
    "fled",
    "flew",
    "flown",
    "flung",
    "forbade",
    "forbidden",
    "forecast",
    "forgave",
    "forgiven",
    "forgot",
    "forgotten",
    "fought",
    "found",
    "froze",
    "frozen",
    "gave",
    "given",
    "gone",
    "got",
    "gotten",
    "grew",
    "grown",
    "had",
    "heard",
    "held",
    "hid",
    "hidden",
    "hit",
    "hung",
    "hurt",
    "kept",
    "knelt",
    "knew",
    "known",
    "laid",
    "lain",
    "lay",
    "leapt",
    "learnt",
    "led",
    "left",
    "lent",
    "let",
    "lit",
    "lost",
    "made",
    "meant",
    "met",
    "mislaid",
    "mistaken",
    "overcame",
    "overridden",
    "overrode",
    "overseen",
    "oversaw",
    "overtaken",
    "overtook",
    "overthrew",
    "overthrown",
    "paid",
    "proven",
    "put",
    "quit",
    "rang",
    "read",
    "rebuilt",
    "redone",
    "remade",
    "rerun",
    "reset",
    "resent",
    "retold",
    "rewritten",
    "rewrote",
    "ridden",
    "risen",
    "rode",
    "rose",
    "rung",
    "said",
    "sang",
    "sank",
    "sat",
    "saw",
    "seen",
    "sent",
    "set",
    "sewn",
    "shaken",
    "shed",
    "shone",
    "shook",
    "shot",
    "shown",
    "shrank",
    "shrunk",
    "shut",
    "slept",
    "slid",
    "sold",
    "sought",
    "sown",
    "spat",
    "sped",
    "spelt",
    "spent",
    "split",
    "spoke",
    "spoken",
    "spread",
    "sprang",
    "sprung",
    "spun",
    "stole",
    "stolen",
    "stood",
    "struck",
    "stuck",
    "stung",
    "sung",
    "sunk",
    "swept",
    "swore",
    "sworn",
    "swum",
    "swung",
    "taken",
    "taught",
    "thought",
    "threw",
    "thrown",
    "told",
    "took",
    "tore",
    "torn",
    "trod",
    "trodden",
    "understood",
    "undid",
    "undone",
    "upheld",
    "upset",
    "went",
    "wept",
    "withdrawn",
    "withdrew",
    "withheld",
    "woke",
    "woken",
    "won",
    "wore",
    "worn",
    "wound",
    "woven",
    "written",
    "wrote",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(name: &str) -> String {
        match EventType::new(name) {
            Err(EnvelopeError::InvalidEventType { reason, .. }) => reason,
            other => panic!("expected `{name}` to be rejected, got {other:?}"),
        }
    }

    #[test]
    fn valid_names_are_accepted() {
        for name in [
            "order.placed",
            "payment.charged",
            "user.signed_up",
            "billing.invoice.paid",
            "a.b",
            "v2.thing_1_done",
            "com.example.someevent",
        ] {
            assert!(EventType::new(name).is_ok(), "`{name}` should be valid");
        }
    }

    #[test]
    fn invalid_names_are_rejected_with_the_reason() {
        let table = [
            ("", "must not be empty"),
            ("order", "must be `domain.fact`"),
            ("Order.Placed", "must be lowercase"),
            ("order.Placed", "must be lowercase"),
            ("ORDER.PLACED", "must be lowercase"),
            ("order-service.placed", "contains '-'"),
            ("order placed", "contains ' '"),
            ("order.placé", "contains 'é'"),
            ("order/placed", "contains '/'"),
            (".placed", "empty segment"),
            ("order.", "empty segment"),
            ("order..placed", "empty segment"),
            (
                "1order.placed",
                "segment `1order`, which must start with a letter",
            ),
            (
                "order._placed",
                "segment `_placed`, which must start with a letter",
            ),
            ("order.9", "segment `9`, which must start with a letter"),
        ];
        for (name, expected) in table {
            let reason = reason(name);
            assert!(
                reason.contains(expected),
                "`{name}`: reason `{reason}` should contain `{expected}`"
            );
        }
    }

    #[test]
    fn a_suggested_name_is_itself_valid() {
        let table = [
            ("Order-Placed", Some("order.placed")),
            ("Order.Placed", Some("order.placed")),
            ("ORDER.PLACED", Some("order.placed")),
            ("order-placed", Some("order.placed")),
            ("order placed", Some("order.placed")),
            ("order/placed", Some("order.placed")),
            ("order-service.placed", Some("order_service.placed")),
            ("Billing.Invoice-Paid", Some("billing.invoice_paid")),
            ("OrderPlaced", None),
            ("order.placé", None),
            ("Order-9", None),
        ];
        for (name, expected) in table {
            let reason = reason(name);
            match expected {
                Some(suggested) => {
                    assert!(
                        reason.ends_with(&format!("(did you mean `{suggested}`?)")),
                        "`{name}`: {reason}"
                    );
                    assert!(EventType::new(suggested).is_ok(), "`{suggested}`");
                }
                None => assert!(!reason.contains("did you mean"), "`{name}`: {reason}"),
            }
        }
    }

    #[test]
    fn messages_name_the_bad_type_and_why() {
        let err = EventType::new("Order.Placed").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event type `Order.Placed` must be lowercase"),
            "{err}"
        );
        let err = EventType::new("order").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("event type `order` must be `domain.fact`"),
            "{err}"
        );
    }

    #[test]
    fn domain_is_the_first_segment_and_fact_the_last() {
        let t: EventType = "billing.invoice.paid".parse().unwrap();
        assert_eq!(t.domain(), "billing");
        assert_eq!(t.fact(), "paid");
        assert_eq!(
            t.segments().collect::<Vec<_>>(),
            ["billing", "invoice", "paid"]
        );
        let t = EventType::try_from("order.placed").unwrap();
        assert_eq!((t.domain(), t.fact()), ("order", "placed"));
    }

    #[test]
    fn serde_validates_on_deserialize() {
        let t: EventType = serde_json::from_str("\"order.placed\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"order.placed\"");
        let err = serde_json::from_str::<EventType>("\"Order.Placed\"").unwrap_err();
        assert!(err.to_string().contains("must be lowercase"), "{err}");
    }

    #[test]
    fn past_tense_facts_pass_the_lint() {
        for name in [
            "order.placed",
            "email.sent",
            "payment.charged",
            "inventory.reserved",
            "user.signed_up",
            "fraud.scored",
            "order.paid",
            "build.began",
            "item.sold",
            "key.lost",
            "task.done",
            "quota.limit_exceeded",
        ] {
            let t = EventType::new(name).unwrap();
            assert_eq!(lint_event_type(&t), [], "`{name}` should pass");
        }
    }

    #[test]
    fn present_tense_facts_are_reported_with_a_message() {
        for name in [
            "order.place",
            "payment.charge",
            "email.send",
            "user.sign_up",
            "stock.need",
            "quota.exceed",
        ] {
            let t = EventType::new(name).unwrap();
            let lints = lint_event_type(&t);
            assert_eq!(lints.len(), 1, "`{name}` should be reported");
            assert_eq!(lints[0].code(), "fact_not_past_tense");
            let message = lints[0].message();
            assert!(message.contains(name), "{message}");
            assert!(message.contains("past tense"), "{message}");
        }
    }
}
