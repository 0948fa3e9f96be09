//! Saga definitions as `[[sagas]]` tables: a full one compiles; each broken rule is refused
//! with the field that breaks it named.

use runnel_saga::{SagaSpec, validate_sagas};

#[derive(Debug, serde::Deserialize)]
struct Config {
    sagas: Vec<SagaSpec>,
}

const ORDER: &str = r#"
[[sagas]]
name = "order"
trigger = { type = "fraud.scored", condition = "score < 0.8" }

[[sagas.steps]]
name = "reserve"
command = "inventory.reserve_requested"
success = "inventory.reserved"
failure = "inventory.reservation_failed"
timeout = "10s"
compensation = { command = "inventory.release_requested", success = "inventory.released" }

[[sagas.steps]]
name = "charge"
command = "payment.charge_requested"
success = "payment.charged"
failure = "payment.declined"
max_attempts = 5
backoff = ["500ms", "2s"]
compensation = { command = "payment.refund_requested", success = "payment.refunded", max_attempts = 8 }

[[sagas.steps]]
name = "express"
when = "trigger.priority == 'express'"
command = "shipping.express_requested"
success = "shipping.express_booked"

[[sagas.steps]]
name = "fulfil"
compensation_order = ["ship", "notify"]
parallel = [
  { name = "ship", command = "shipping.ship_requested", success = "shipping.shipped", compensation = { command = "shipping.cancel_requested", success = "shipping.cancelled" } },
  { name = "notify", when = "charge.amount > 100", command = "mail.notify_requested", success = "mail.notified" },
]
"#;

fn parse(text: &str) -> Vec<SagaSpec> {
    toml::from_str::<Config>(text).expect("valid TOML").sagas
}

/// The problems of the single saga in `text`, as `field: problem` lines.
fn problems(text: &str) -> Vec<String> {
    let err = validate_sagas(&parse(text)).expect_err("refused");
    err.errors.iter().map(ToString::to_string).collect()
}

#[test]
fn a_declared_order_saga_compiles_with_defaults_filled() {
    let sagas = validate_sagas(&parse(ORDER)).expect("valid");
    let saga = &sagas[0];
    assert_eq!(saga.name(), "order");
    assert_eq!(saga.trigger().as_str(), "fraud.scored");
    assert_eq!(saga.condition().map(|c| c.as_str()), Some("score < 0.8"));
    let names: Vec<&str> = saga.steps().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["reserve", "charge", "express", "ship", "notify"]);
    assert_eq!(saga.stages().len(), 4);
    assert_eq!(saga.stages()[3].steps, [3, 4]);
    assert_eq!(saga.stages()[3].compensation_order, [3, 4], "as declared");
    let reserve = &saga.steps()[0];
    assert_eq!(reserve.timeout, 10_000_000);
    assert_eq!(reserve.max_attempts, 3, "default");
    assert_eq!(reserve.backoff.len(), 5, "default 1, 2, 4, 8, 16 s");
    let release = reserve.compensation.as_ref().unwrap();
    assert_eq!(release.timeout, 10_000_000, "the step's timeout by default");
    assert_eq!(release.max_attempts, 5);
    let charge = &saga.steps()[1];
    assert_eq!(charge.backoff, [500_000, 2_000_000]);
    assert_eq!(charge.compensation.as_ref().unwrap().max_attempts, 8);
    assert!(saga.reply_types().contains("payment.refunded"));
    assert!(saga.steps()[2].when.is_some());
}

#[test]
fn a_group_without_compensation_order_is_undone_in_reverse() {
    let text = ORDER.replace("compensation_order = [\"ship\", \"notify\"]\n", "");
    let saga = &validate_sagas(&parse(&text)).unwrap()[0];
    assert_eq!(saga.stages()[3].compensation_order, [4, 3]);
}

#[test]
fn the_definition_round_trips_through_json() {
    let spec = &parse(ORDER)[0];
    let json = serde_json::to_string(spec).unwrap();
    let back: SagaSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, spec);
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let text = r#"
[[sagas]]
name = "Order!"
trigger = { type = "fraud.", condition = "score <" }

[[sagas.steps]]
name = "reserve"
command = "Inventory.Reserve"
timeout = "0s"
max_attempts = 0
backoff = []
compensation = { command = "inventory.release_requested", success = "inventory.release_requested" }

[[sagas.steps]]
name = "reserve"
when = "ship.done == true"
command = "payment.charge_requested"
success = "payment.charged"
failure = "payment.charged"

[[sagas.steps]]
name = "group"
command = "x.y"
compensation_order = ["a"]
parallel = [
  { name = "a", command = "a.requested", success = "a.done" },
  { name = "b", command = "b.requested", success = "b.done", parallel = [] },
]
"#;
    let found = problems(text);
    let expect = [
        "name: `Order!` is not a name",
        "trigger.type: invalid type pattern",
        "trigger.condition: condition `score <`",
        "steps[0].command: event type `Inventory.Reserve` must be lowercase",
        "steps[0].success: is required",
        "steps[0].timeout: must be more than 0",
        "steps[0].max_attempts: must be at least 1",
        "steps[0].backoff: needs at least one delay",
        "steps[1].name: `reserve` is already the name of steps[0].",
        "steps[1].when: `ship` is not `trigger` or the name of an earlier step",
        "steps[1].failure: must differ from `success`",
        "steps[2].command: a parallel group has none",
        "steps[2].compensation_order: must name every step of the group once (a, b), not a",
    ];
    for want in expect {
        assert!(
            found.iter().any(|f| f.starts_with(want)),
            "missing `{want}` in {found:#?}"
        );
    }
}

#[test]
fn a_trigger_matching_a_reply_is_refused() {
    let text = r#"
[[sagas]]
name = "loop"
trigger = { type = "inventory.*" }
[[sagas.steps]]
name = "reserve"
command = "stock.reserve_requested"
success = "inventory.reserved"
"#;
    let found = problems(text);
    assert!(
        found[0].contains("matches the reply type `inventory.reserved`"),
        "{found:?}"
    );
}

#[test]
fn unknown_keys_and_duplicate_sagas_are_refused() {
    let unknown = toml::from_str::<Config>(&ORDER.replace("timeout = \"10s\"", "timeout_s = 10"));
    assert!(unknown.unwrap_err().to_string().contains("timeout_s"));
    let twice = format!("{ORDER}\n{ORDER}");
    let err = validate_sagas(&parse(&twice)).unwrap_err();
    assert_eq!(err.errors[0].field, "sagas[1].name");
}

#[test]
fn a_condition_may_read_a_member_of_an_earlier_group() {
    let text = format!(
        "{ORDER}\n[[sagas.steps]]\nname = \"thank\"\nwhen = \"ship.carrier == 'dhl'\"\ncommand = \"mail.thanks_requested\"\nsuccess = \"mail.thanked\"\n"
    );
    validate_sagas(&parse(&text)).expect("`ship` ran in an earlier group");
}
