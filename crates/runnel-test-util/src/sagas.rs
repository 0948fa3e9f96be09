//! Sagas (`runnel-saga`) as conformance tests over any backend: an order saga — reserve
//! inventory, charge payment, ship — driven by [`SagaDriver`] over real consumer groups,
//! against simulated inventory, payment and shipping services that are consumer groups too.
//! Expanded per backend by [`crate::saga_conformance_tests!`].
//!
//! The services keep a ledger: every command id they received (a command executed twice
//! fails the test), what each instance reserved, charged and shipped, and what was released,
//! refunded and cancelled; every compensated order must have released exactly what it
//! reserved and refunded exactly what it charged.
//!
//! Time is the harness's manual clock: a timeout happens when the test moves the clock past
//! it. The tests wait for outcomes by polling, never for a deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_clock::{Clock, ManualClock};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{ConsumerHandle, HandlerError, Message, Runnel};
use runnel_saga::{
    Command, CommandKind, Happened, Instance, InstanceStore, InstanceSummary, Saga, SagaDriver,
    SagaHandle, SagaOptions, SagaQuery, SagaSpec, SagaState, Sagas, StepStatus, Trigger,
};
use serde_json::{Value, json};

use crate::BackendHarness;
use crate::runtime::runtime_with;

/// What a simulated service does with one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Does it and replies with the success type.
    Succeed,
    /// Replies with the failure type and this class.
    Fail(&'static str),
    /// Receives it and never replies.
    Silent,
}

/// Decides what a service does: (step, run or undo, command data, attempt) → act.
type Behaviour = Arc<dyn Fn(&str, CommandKind, &Value, u32) -> Act + Send + Sync>;

/// What the simulated services did.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Deliveries of each command id to a service.
    pub received: HashMap<String, u32>,
    /// Distinct command ids per (instance, step, run or undo).
    pub ids: BTreeMap<(String, String, &'static str), BTreeSet<String>>,
    /// Amount done per (instance, step) — units reserved, cents charged, parcels shipped.
    pub done: BTreeMap<(String, String), i64>,
    /// Amount undone per (instance, step).
    pub undone: BTreeMap<(String, String), i64>,
    /// Undos in the order they were executed, per instance.
    pub undo_order: BTreeMap<String, Vec<String>>,
}

/// The order saga's steps: (step, domain, command, success, failure, undo command, undone).
const STEPS: [(&str, &str, &str, &str, &str, &str, &str); 3] = [
    (
        "reserve",
        "inventory",
        "inventory.reserve_requested",
        "inventory.reserved",
        "inventory.reservation_failed",
        "inventory.release_requested",
        "inventory.released",
    ),
    (
        "charge",
        "payment",
        "payment.charge_requested",
        "payment.charged",
        "payment.declined",
        "payment.refund_requested",
        "payment.refunded",
    ),
    (
        "ship",
        "shipping",
        "shipping.ship_requested",
        "shipping.shipped",
        "shipping.failed",
        "shipping.cancel_requested",
        "shipping.cancelled",
    ),
];

/// The order saga as a `[[sagas]]` table would give it, changed by `edit`.
fn order_saga(edit: impl FnOnce(&mut Value)) -> Saga {
    let steps: Vec<Value> = STEPS
        .iter()
        .map(|(name, _, command, success, failure, undo, undone)| {
            json!({
                "name": name,
                "command": command,
                "success": success,
                "failure": failure,
                "timeout": "5s",
                "max_attempts": 2,
                "backoff": ["1s"],
                "compensation": {
                    "command": undo,
                    "success": undone,
                    "failure": format!("{}_failed", undone.trim_end_matches('d')),
                    "max_attempts": 2,
                    "backoff": ["1s"],
                },
            })
        })
        .collect();
    let mut spec = json!({
        "name": "order",
        "trigger": { "type": "order.placed", "condition": "amount > 0" },
        "steps": steps,
    });
    edit(&mut spec);
    let spec: SagaSpec = serde_json::from_value(spec).expect("a saga specification");
    spec.validate().expect("a valid saga")
}

/// How much a command does: the order's `items` for inventory, `amount` for payment, 1
/// parcel for shipping.
fn amount_of(step: &str, data: &Value) -> i64 {
    let input = &data["input"];
    match step {
        "reserve" => input["items"].as_i64().unwrap_or(0),
        "charge" => input["amount"].as_i64().unwrap_or(0),
        _ => 1,
    }
}

/// The simulated services: one consumer group per domain, answering the saga's commands.
struct Services {
    ledger: Arc<Mutex<Ledger>>,
    groups: Vec<ConsumerHandle>,
}

impl Services {
    async fn start(runnel: &Runnel, saga: &Saga, behaviour: Behaviour) -> Self {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        // command type → (step, kind, success type, failure type)
        let mut commands: HashMap<String, (String, CommandKind, String, Option<String>)> =
            HashMap::new();
        for step in saga.steps() {
            commands.insert(
                step.command.as_str().into(),
                (
                    step.name.clone(),
                    CommandKind::Step,
                    step.success.as_str().into(),
                    step.failure.as_ref().map(|f| f.as_str().to_string()),
                ),
            );
            if let Some(c) = &step.compensation {
                commands.insert(
                    c.command.as_str().into(),
                    (
                        step.name.clone(),
                        CommandKind::Compensation,
                        c.success.as_str().into(),
                        c.failure.as_ref().map(|f| f.as_str().to_string()),
                    ),
                );
            }
        }
        let commands = Arc::new(commands);
        let domains: BTreeSet<&str> = commands
            .keys()
            .map(|t| t.split('.').next().unwrap_or(t))
            .collect();
        let mut groups = Vec::new();
        for domain in domains {
            let (ledger, commands, behaviour) =
                (ledger.clone(), commands.clone(), behaviour.clone());
            let handle = runnel
                .group(format!("svc-{domain}"))
                .subscribe(format!("{domain}.>"))
                .run(move |message: Message| {
                    let outputs = serve(&message, &commands, &behaviour, &ledger);
                    async move { outputs }
                })
                .await
                .expect("start a service");
            groups.push(handle);
        }
        Self { ledger, groups }
    }

    async fn stop(self) {
        for group in self.groups {
            group.stop().await.expect("stop a service");
        }
    }
}

type Commands = HashMap<String, (String, CommandKind, String, Option<String>)>;

fn serve(
    message: &Message,
    commands: &Commands,
    behaviour: &Behaviour,
    ledger: &Mutex<Ledger>,
) -> Result<Vec<Event>, HandlerError> {
    let event = &message.event;
    let Some((step, kind, success, failure)) = commands.get(event.event_type().as_str()) else {
        return Ok(Vec::new()); // a reply, or another saga's command
    };
    let data = event.data().as_json().cloned().unwrap_or(Value::Null);
    let instance = event
        .correlation_id()
        .expect("commands are correlated")
        .to_string();
    let attempt = data["attempt"]
        .as_u64()
        .expect("commands say their attempt") as u32;
    let act = behaviour(step, *kind, &data, attempt);
    let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
    *ledger
        .received
        .entry(event.id().as_str().to_string())
        .or_default() += 1;
    let kind_name = match kind {
        CommandKind::Step => "do",
        CommandKind::Compensation => "undo",
    };
    ledger
        .ids
        .entry((instance.clone(), step.clone(), kind_name))
        .or_default()
        .insert(event.id().as_str().to_string());
    let amount = amount_of(step, &data);
    let reply = match act {
        Act::Silent => return Ok(Vec::new()),
        Act::Succeed => {
            let key = (instance.clone(), step.clone());
            match kind {
                CommandKind::Step => *ledger.done.entry(key).or_default() += amount,
                CommandKind::Compensation => {
                    *ledger.undone.entry(key).or_default() += amount;
                    ledger
                        .undo_order
                        .entry(instance)
                        .or_default()
                        .push(step.clone());
                }
            }
            message.reply(
                success,
                json!({ "amount": amount, "express": data["input"]["express"] }),
            )?
        }
        Act::Fail(class) => {
            let failure = failure.as_deref().expect("the step has a failure type");
            message.reply(failure, json!({ "class": class, "reason": "simulated" }))?
        }
    };
    Ok(vec![reply])
}

fn options(instance: &str) -> SagaOptions {
    SagaOptions {
        instance_id: Some(instance.into()),
        timer_every: Duration::from_millis(10),
        group: None,
    }
}

/// An order placed: `n` items, `n * 100` cents, and `extra` fields.
fn order(n: usize, extra: Value) -> Event {
    let mut data = json!({ "order": n, "items": n as i64 % 5 + 1, "amount": (n as i64 + 1) * 100 });
    if let (Some(data), Some(extra)) = (data.as_object_mut(), extra.as_object()) {
        data.extend(extra.clone());
    }
    Event::builder(
        EventType::new("order.placed").expect("type"),
        Source::new("test://shop").expect("source"),
    )
    .partition_key(format!("order-{n}"))
    .data_json(data)
    .build()
    .expect("an order")
}

async fn place(runnel: &Runnel, orders: Vec<Event>) {
    runnel
        .publish_batch(orders)
        .await
        .expect("place the orders");
}

/// Waits (at most 60 s) until `count` instances are in `state`; returns every instance.
async fn wait_for(sagas: &Sagas, state: SagaState, count: usize) -> Vec<InstanceSummary> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = sagas.list(&SagaQuery::default()).await.expect("list");
        let reached = all.iter().filter(|i| i.state == state).count();
        if reached >= count {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {count} instances {state:?}: {:#?}",
            all.iter()
                .map(|i| (i.state, i.step.clone(), i.reason.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 60 s) until the services' ledger satisfies `done`.
async fn wait_for_ledger(what: &str, ledger: &Mutex<Ledger>, done: impl Fn(&Ledger) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        {
            let ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
            if done(&ledger) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {ledger:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// No command id reached a service twice, and every compensated step was undone by exactly
/// what it did.
fn assert_ledger_consistent(ledger: &Ledger, instances: &[InstanceSummary]) {
    for (id, n) in &ledger.received {
        assert_eq!(*n, 1, "command {id} was executed {n} times");
    }
    for instance in instances {
        for (step, ..) in STEPS {
            let key = (instance.id.clone(), step.to_string());
            let done = ledger.done.get(&key).copied().unwrap_or(0);
            let undone = ledger.undone.get(&key).copied().unwrap_or(0);
            match instance.state {
                SagaState::Completed => assert_eq!(undone, 0, "{key:?}"),
                SagaState::Compensated => {
                    assert_eq!(undone, done, "{key:?} undone exactly what it did")
                }
                _ => {}
            }
        }
    }
}

/// Every instance, whole.
async fn instances(sagas: &Sagas) -> Vec<Instance> {
    let mut all = Vec::new();
    for summary in sagas.list(&SagaQuery::default()).await.expect("list") {
        all.push(sagas.get(&summary.id).await.expect("an instance"));
    }
    all
}

/// Until `done` holds (at most 60 s): whenever every unfinished instance allows it
/// (`may_jump`: typically, nothing it waits for can still answer), moves the manual clock to
/// the earliest deadline or retry of any instance. So a timeout fires only for a command
/// that was never going to be answered, however slow the machine.
async fn drive_clock(
    sagas: &Sagas,
    clock: &ManualClock,
    what: &str,
    may_jump: impl Fn(&Instance) -> bool,
    done: impl Fn(&[Instance]) -> bool,
) -> Vec<Instance> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let all = instances(sagas).await;
        if done(&all) {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:#?}",
            all.iter()
                .map(|i| (i.state, i.reason.clone()))
                .collect::<Vec<_>>()
        );
        let waiting: Vec<&Instance> = all.iter().filter(|i| !i.state.is_outcome()).collect();
        if waiting.iter().all(|i| may_jump(i))
            && let Some(wake) = waiting.iter().filter_map(|i| i.next_wake()).min()
            && wake > clock.now_micros()
        {
            clock.set(wake);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nothing in flight: only scheduled retries to wait for.
fn idle(instance: &Instance) -> bool {
    instance.in_flight().is_empty()
}

/// Only commands in flight that `silent` says get no reply.
fn only_silent(silent: impl Fn(&Command) -> bool) -> impl Fn(&Instance) -> bool {
    move |i| i.in_flight().iter().all(&silent)
}

fn count(all: &[Instance], state: SagaState) -> usize {
    all.iter().filter(|i| i.state == state).count()
}

async fn start(runnel: &Runnel, saga: &Saga, instance: &str) -> SagaHandle {
    SagaDriver::start(runnel, saga.clone(), options(instance))
        .await
        .expect("start the saga driver")
}

pub async fn three_step_sagas_complete_and_each_command_runs_once(h: &impl BackendHarness) {
    let runnel = runtime_with(h, false).await;
    let saga = order_saga(|_| {});
    let services = Services::start(&runnel, &saga, Arc::new(|_, _, _, _| Act::Succeed)).await;
    let driver = start(&runnel, &saga, "a").await;
    let sagas = Sagas::new(&runnel, vec![saga.clone()]).expect("sagas");
    let mut orders: Vec<Event> = (0..20).map(|n| order(n, json!({}))).collect();
    // Not an order the condition accepts: no instance.
    orders.push(order(99, json!({ "amount": 0 })));
    place(&runnel, orders.clone()).await;
    // A trigger delivered twice starts one instance.
    place(&runnel, vec![orders[0].clone()]).await;

    let all = wait_for(&sagas, SagaState::Completed, 20).await;
    assert_eq!(all.len(), 20, "one instance per accepted order");
    let ledger = services.ledger.lock().unwrap().clone_counts();
    assert_ledger_consistent(&ledger, &all);
    for instance in &all {
        for (step, ..) in STEPS {
            let ids = &ledger.ids[&(instance.id.clone(), step.to_string(), "do")];
            assert_eq!(
                ids.len(),
                1,
                "{step} of {} was sent as one command",
                instance.id
            );
        }
    }
    let one = sagas.get(&all[0].id).await.expect("an instance");
    let sent = one
        .timeline
        .iter()
        .filter(|e| e.what == Happened::CommandSent)
        .count();
    let replies = one
        .timeline
        .iter()
        .filter(|e| e.what == Happened::Succeeded)
        .count();
    assert_eq!(
        (sent, replies),
        (3, 3),
        "the timeline shows each command and reply"
    );
    assert!(
        one.steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded && s.finished_at.is_some())
    );
    let listed = sagas
        .list(&SagaQuery {
            saga: Some("order".into()),
            state: Some(SagaState::Running),
            ..SagaQuery::default()
        })
        .await
        .expect("list");
    assert!(listed.is_empty());
    driver.stop().await.expect("stop");
    services.stop().await;
}

impl Ledger {
    fn clone_counts(&self) -> Ledger {
        Ledger {
            received: self.received.clone(),
            ids: self.ids.clone(),
            done: self.done.clone(),
            undone: self.undone.clone(),
            undo_order: self.undo_order.clone(),
        }
    }
}

pub async fn a_failure_at_each_step_compensates_what_was_done_in_reverse(h: &impl BackendHarness) {
    let runnel = runtime_with(h, false).await;
    let saga = order_saga(|_| {});
    let behaviour: Behaviour = Arc::new(|step, kind, data, _| {
        if kind == CommandKind::Step && data["input"]["fail_at"].as_str() == Some(step) {
            Act::Fail("permanent")
        } else {
            Act::Succeed
        }
    });
    let services = Services::start(&runnel, &saga, behaviour).await;
    let driver = start(&runnel, &saga, "a").await;
    let sagas = Sagas::new(&runnel, vec![saga.clone()]).expect("sagas");
    let orders: Vec<Event> = (0..9)
        .map(|n| order(n, json!({ "fail_at": STEPS[n % 3].0 })))
        .collect();
    place(&runnel, orders).await;
    let all = wait_for(&sagas, SagaState::Compensated, 9).await;
    let ledger = services.ledger.lock().unwrap().clone_counts();
    assert_ledger_consistent(&ledger, &all);
    for summary in &all {
        let instance = sagas.get(&summary.id).await.expect("instance");
        let fail_at = instance.trigger.data["fail_at"]
            .as_str()
            .unwrap()
            .to_string();
        let index = STEPS.iter().position(|s| s.0 == fail_at).unwrap();
        let expected: Vec<String> = STEPS[..index]
            .iter()
            .rev()
            .map(|s| s.0.to_string())
            .collect();
        let order = ledger
            .undo_order
            .get(&instance.id)
            .cloned()
            .unwrap_or_default();
        assert_eq!(order, expected, "failing at {fail_at}: undone in reverse");
        assert!(
            instance
                .reason
                .as_deref()
                .unwrap()
                .contains(&format!("step `{fail_at}` failed"))
        );
        let comp = instance
            .timeline
            .iter()
            .filter(|e| e.what == Happened::Compensated)
            .count();
        assert_eq!(comp, index, "the timeline shows each compensation");
    }
    driver.stop().await.expect("stop");
    services.stop().await;
}

pub async fn a_step_that_never_replies_times_out_and_is_compensated(h: &impl BackendHarness) {
    let runnel = runtime_with(h, false).await;
    let clock = h.clock();
    let saga = order_saga(|_| {});
    let behaviour: Behaviour = Arc::new(|step, kind, _, _| match (step, kind) {
        ("ship", CommandKind::Step) => Act::Silent,
        _ => Act::Succeed,
    });
    let services = Services::start(&runnel, &saga, behaviour).await;
    let driver = start(&runnel, &saga, "a").await;
    let sagas = Sagas::new(&runnel, vec![saga.clone()]).expect("sagas");
    place(&runnel, (0..4).map(|n| order(n, json!({}))).collect()).await;
    // Each ship attempt gets no reply: the clock moves to its deadline (5 s), then to its
    // retry (1 s backoff, jittered), then to the second deadline; the step has failed.
    let silent_ship = only_silent(|c| c.step == "ship" && c.kind == CommandKind::Step);
    let settled = drive_clock(&sagas, &clock, "4 compensated", silent_ship, |all| {
        count(all, SagaState::Compensated) == 4
    })
    .await;
    let all: Vec<InstanceSummary> = settled.iter().map(InstanceSummary::of).collect();
    assert_ledger_consistent(&services.ledger.lock().unwrap(), &all);
    let instance = sagas.get(&all[0].id).await.expect("instance");
    assert!(
        instance
            .reason
            .as_deref()
            .unwrap()
            .contains("after 2 attempts"),
        "{:?}",
        instance.reason
    );
    let timeouts = instance
        .timeline
        .iter()
        .filter(|e| e.what == Happened::TimedOut)
        .count();
    assert_eq!(timeouts, 2);
    driver.stop().await.expect("stop");
    services.stop().await;
}

pub async fn a_compensation_that_keeps_failing_is_stuck_until_an_operator_retries(
    h: &impl BackendHarness,
) {
    let runnel = runtime_with(h, false).await;
    let clock = h.clock();
    let saga = order_saga(|_| {});
    let fixed = Arc::new(Mutex::new(false));
    let refunds_work = fixed.clone();
    let behaviour: Behaviour = Arc::new(move |step, kind, _, _| match (step, kind) {
        ("ship", CommandKind::Step) => Act::Fail("permanent"),
        ("charge", CommandKind::Compensation) if !*refunds_work.lock().unwrap() => {
            Act::Fail("service")
        }
        _ => Act::Succeed,
    });
    let services = Services::start(&runnel, &saga, behaviour).await;
    let driver = start(&runnel, &saga, "a").await;
    let sagas = Sagas::new(&runnel, vec![saga.clone()]).expect("sagas");
    place(&runnel, vec![order(1, json!({}))]).await;
    let ledger = services.ledger.clone();
    // Refund attempt 1 fails, attempt 2 after its backoff fails too: stuck.
    drive_clock(&sagas, &clock, "stuck", idle, |all| {
        count(all, SagaState::Stuck) == 1
    })
    .await;
    let stuck = sagas.stuck().await.expect("stuck");
    assert_eq!(stuck.len(), 1);
    let reason = stuck[0].reason.clone().unwrap();
    assert!(
        reason.contains("compensation of step `charge` failed after 2 attempts"),
        "{reason}"
    );
    {
        let ledger = ledger.lock().unwrap();
        let key = (stuck[0].id.clone(), "reserve".to_string());
        assert_eq!(ledger.undone.get(&key), None, "reserve waits behind charge");
    }
    // Nothing moves on its own.
    clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        sagas.get(&stuck[0].id).await.unwrap().state,
        SagaState::Stuck
    );
    assert!(sagas.retry(&stuck[0].id).await.is_ok());
    // Retried while refunds still fail: stuck again after two more attempts.
    drive_clock(&sagas, &clock, "stuck again", idle, |all| {
        all[0].state == SagaState::Stuck
            && all[0].step("charge").unwrap().compensation_attempts == 4
    })
    .await;
    *fixed.lock().unwrap() = true;
    let resumed = sagas.retry(&stuck[0].id).await.expect("retry");
    assert_eq!(resumed.state, SagaState::Compensating);
    let all = wait_for(&sagas, SagaState::Compensated, 1).await;
    assert_ledger_consistent(&ledger.lock().unwrap(), &all);
    assert!(matches!(
        sagas.retry(&stuck[0].id).await,
        Err(runnel_saga::SagaError::NotStuck(_))
    ));
    assert!(matches!(
        sagas.get("nope").await,
        Err(runnel_saga::SagaError::NotFound(_))
    ));
    driver.stop().await.expect("stop");
    services.stop().await;
}

pub async fn a_conditional_step_branches_on_the_order(h: &impl BackendHarness) {
    let runnel = runtime_with(h, false).await;
    let saga = order_saga(|spec| {
        let steps = spec["steps"].as_array_mut().unwrap();
        steps[2]["when"] = json!("trigger.express != true");
        steps.push(json!({
            "name": "express",
            "when": "trigger.express == true and charge.amount >= 100",
            "command": "shipping.express_requested",
            "success": "shipping.express_shipped",
        }));
    });
    let services = Services::start(&runnel, &saga, Arc::new(|_, _, _, _| Act::Succeed)).await;
    let driver = start(&runnel, &saga, "a").await;
    let sagas = Sagas::new(&runnel, vec![saga.clone()]).expect("sagas");
    place(
        &runnel,
        (0..6)
            .map(|n| order(n, json!({ "express": n % 2 == 0 })))
            .collect(),
    )
    .await;
    let all = wait_for(&sagas, SagaState::Completed, 6).await;
    for summary in all {
        let instance = sagas.get(&summary.id).await.unwrap();
        let express = instance.trigger.data["express"] == json!(true);
        let status = |name: &str| instance.step(name).unwrap().status;
        let (taken, skipped) = if express {
            ("express", "ship")
        } else {
            ("ship", "express")
        };
        assert_eq!(status(taken), StepStatus::Succeeded);
        assert_eq!(status(skipped), StepStatus::Skipped);
    }
    driver.stop().await.expect("stop");
    services.stop().await;
}

pub async fn a_parallel_group_undoes_the_members_that_succeeded(h: &impl BackendHarness) {
    let runnel = runtime_with(h, false).await;
    let saga = order_saga(|spec| {
        let steps = spec["steps"].as_array_mut().unwrap();
        let charge = steps.remove(1);
        let ship = steps.remove(1);
        steps.push(json!({
            "name": "pay_and_ship",
            "compensation_order": ["charge", "ship"],
            "parallel": [charge, ship],
        }));
    });
    let behaviour: Behaviour = Arc::new(|step, kind, data, _| {
        if kind == CommandKind::Step && data["input"]["fail_at"].as_str() == Some(step) {
            Act::Fail("permanent")
        } else {
            Act::Succeed
        }
    });
    let services = Services::start(&runnel, &saga, behaviour).await;
    let driver = start(&runnel, &saga, "a").await;
    let sagas = Sagas::new(&runnel, vec![saga.clone()]).expect("sagas");
    place(
        &runnel,
        vec![
            order(1, json!({ "fail_at": "ship" })),
            order(2, json!({ "fail_at": "charge" })),
            order(3, json!({})),
        ],
    )
    .await;
    wait_for(&sagas, SagaState::Completed, 1).await;
    let all = wait_for(&sagas, SagaState::Compensated, 2).await;
    let ledger = services.ledger.lock().unwrap().clone_counts();
    assert_ledger_consistent(&ledger, &all);
    for summary in all.iter().filter(|i| i.state == SagaState::Compensated) {
        let instance = sagas.get(&summary.id).await.unwrap();
        let expected = match instance.trigger.data["fail_at"].as_str().unwrap() {
            "ship" => vec!["charge", "reserve"],
            _ => vec!["ship", "reserve"],
        };
        assert_eq!(ledger.undo_order[&instance.id], expected);
    }
    driver.stop().await.expect("stop");
    services.stop().await;
}

pub async fn two_drivers_share_instances_and_one_stopping_hands_its_instances_over(
    h: &impl BackendHarness,
) {
    let runnel = runtime_with(h, false).await;
    let clock = h.clock();
    let saga = order_saga(|_| {});
    // The first shipment of every order gets no reply: the instances wait on a timer.
    let behaviour: Behaviour = Arc::new(|step, kind, _, attempt| match (step, kind, attempt) {
        ("ship", CommandKind::Step, 1) => Act::Silent,
        _ => Act::Succeed,
    });
    let services = Services::start(&runnel, &saga, behaviour).await;
    let a = start(&runnel, &saga, "a").await;
    let b = start(&runnel, &saga, "b").await;
    let sagas = Sagas::new(&runnel, vec![saga.clone()]).expect("sagas");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (a_homes, b_homes) = loop {
        a.rebalance_now().await.expect("rebalance");
        b.rebalance_now().await.expect("rebalance");
        let (x, y) = (a.owned_homes().await, b.owned_homes().await);
        if !x.is_empty() && !y.is_empty() && x.len() + y.len() == 4 {
            break (x, y);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the drivers never split the partitions"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        a_homes.iter().all(|h| !b_homes.contains(h)),
        "each home has one owner"
    );
    place(&runnel, (0..24).map(|n| order(n, json!({}))).collect()).await;
    let ledger = services.ledger.clone();
    wait_for_ledger("24 first shipments", &ledger, |l| {
        l.ids.keys().filter(|k| k.1 == "ship").count() == 24
    })
    .await;
    let instances = sagas.list(&SagaQuery::default()).await.expect("list");
    let mut on_a = 0;
    for summary in &instances {
        let instance = sagas.get(&summary.id).await.unwrap();
        if a_homes.contains(&(instance.trigger.stream.clone(), instance.trigger.partition)) {
            on_a += 1;
        }
    }
    assert!(
        on_a > 0,
        "some instances are timed by the driver that stops"
    );
    // `a` stops in the middle of every saga; `b` takes its partitions and runs its timers.
    a.stop().await.expect("stop a");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while b.owned_homes().await.len() < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never took the partitions over"
        );
        b.rebalance_now().await.expect("rebalance");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first shipments time out on `b`'s timers, and their retries complete the sagas.
    let first_ship = only_silent(|c| c.step == "ship" && c.attempt == 1);
    drive_clock(&sagas, &clock, "24 completed", first_ship, |all| {
        count(all, SagaState::Completed) == 24
    })
    .await;
    let all = sagas.list(&SagaQuery::default()).await.expect("list");
    let ledger = ledger.lock().unwrap().clone_counts();
    assert_ledger_consistent(&ledger, &all);
    for instance in &all {
        for (step, ..) in STEPS {
            let ids = &ledger.ids[&(instance.id.clone(), step.to_string(), "do")];
            let want = if step == "ship" { 2 } else { 1 };
            assert_eq!(
                ids.len(),
                want,
                "{step} of {}: one command per attempt",
                instance.id
            );
        }
    }
    b.stop().await.expect("stop b");
    services.stop().await;
}

pub async fn an_instance_written_but_not_published_before_a_crash_is_finished_by_the_next_driver(
    h: &impl BackendHarness,
) {
    let runnel = runtime_with(h, false).await;
    let saga = order_saga(|_| {});
    // A driver wrote an instance and its first command, then died before publishing it.
    let placed = order(7, json!({}));
    let partition = runnel_runtime::partition_for_key("order-7", 4);
    let trigger = Trigger {
        id: placed.id().clone(),
        source: placed.source().clone(),
        event_type: "order.placed".into(),
        data: placed.data().as_json().cloned().unwrap_or_default(),
        correlation_id: None,
        stream: "order".into(),
        partition,
    };
    let clock = h.clock();
    let (instance, t) = saga.start(trigger, clock.now_micros());
    assert_eq!(t.commands.len(), 1);
    let store = InstanceStore::new(runnel.backend().clone());
    store.create(&instance).await.expect("write").expect("new");
    store.activate(&instance).await.expect("index");

    let services = Services::start(&runnel, &saga, Arc::new(|_, _, _, _| Act::Succeed)).await;
    let driver = start(&runnel, &saga, "next").await;
    let sagas = Sagas::new(&runnel, vec![saga.clone()]).expect("sagas");
    let all = wait_for(&sagas, SagaState::Completed, 1).await;
    assert_eq!(all[0].id, instance.id);
    // The trigger, delivered now, finds the instance it started.
    place(&runnel, vec![placed]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ledger = services.ledger.lock().unwrap().clone_counts();
    assert_ledger_consistent(&ledger, &sagas.list(&SagaQuery::default()).await.unwrap());
    let reserve = &ledger.ids[&(instance.id.clone(), "reserve".to_string(), "do")];
    assert_eq!(
        reserve.iter().collect::<Vec<_>>(),
        vec![&t.commands[0].id],
        "the command written before the crash, under its id"
    );
    assert_eq!(sagas.list(&SagaQuery::default()).await.unwrap().len(), 1);
    driver.stop().await.expect("stop");
    services.stop().await;
}
