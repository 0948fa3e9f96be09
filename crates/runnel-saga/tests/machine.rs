//! The orchestrator's pure core, told as stories and then checked against a reference on
//! random sagas, random service behaviour (successes, failures of each class, silence,
//! late and duplicated replies) and an operator's resume.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;
use runnel_envelope::{EventId, Source};
use runnel_saga::{
    Command, CommandKind, Happened, Instance, Reply, Saga, SagaSpec, SagaState, StepSpec,
    StepStatus, Trigger, TriggerSpec,
};
use runnel_stages::HumanDuration;
use serde_json::{Value, json};

const SEC: u64 = 1_000_000;
const T0: u64 = 1_767_225_600 * SEC;

fn trigger(data: Value) -> Trigger {
    Trigger {
        id: EventId::new_v7(),
        source: Source::new("test://shop").unwrap(),
        event_type: "order.placed".into(),
        data,
        correlation_id: None,
        stream: "order".into(),
        partition: 0,
    }
}

fn step(name: &str) -> StepSpec {
    let mut step = StepSpec::command(name, &format!("{name}.requested"), &format!("{name}.done"))
        .failure(&format!("{name}.failed"))
        .compensate(&format!("{name}.undo_requested"), &format!("{name}.undone"));
    step.timeout = HumanDuration::from_secs(5);
    step.backoff = vec![HumanDuration::from_secs(1), HumanDuration::from_secs(2)];
    if let Some(c) = &mut step.compensation {
        c.failure = Some(format!("{name}.undo_failed"));
        c.backoff = vec![HumanDuration::from_secs(1)];
        c.max_attempts = 3;
    }
    step
}

fn saga(steps: Vec<StepSpec>) -> Saga {
    SagaSpec {
        name: "order".into(),
        trigger: TriggerSpec {
            event_type: "order.placed".into(),
            condition: None,
        },
        steps,
    }
    .validate()
    .expect("a valid saga")
}

fn order_saga() -> Saga {
    saga(vec![step("reserve"), step("charge"), step("ship")])
}

fn reply_to(command: &Command, event_type: &str, data: Value) -> Reply {
    Reply {
        id: EventId::new_v7().as_str().to_string(),
        event_type: event_type.into(),
        causation_id: Some(command.id.clone()),
        data,
    }
}

fn success(command: &Command) -> Reply {
    let event_type = match command.kind {
        CommandKind::Step => command.event_type.replace(".requested", ".done"),
        CommandKind::Compensation => command.event_type.replace(".undo_requested", ".undone"),
    };
    reply_to(command, &event_type, json!({"ok": command.step}))
}

fn failure(command: &Command, class: &str) -> Reply {
    let event_type = match command.kind {
        CommandKind::Step => command.event_type.replace(".requested", ".failed"),
        CommandKind::Compensation => command
            .event_type
            .replace(".undo_requested", ".undo_failed"),
    };
    reply_to(
        command,
        &event_type,
        json!({"class": class, "reason": "no"}),
    )
}

fn outcomes(instance: &Instance) -> usize {
    instance
        .timeline
        .iter()
        .filter(|e| {
            matches!(
                e.what,
                Happened::Completed | Happened::SagaCompensated | Happened::Stuck
            )
        })
        .count()
}

#[test]
fn three_steps_that_succeed_complete_with_one_command_each() {
    let saga = order_saga();
    let (mut instance, t) = saga.start(trigger(json!({"order": 7})), T0);
    assert_eq!(t.commands.len(), 1);
    assert_eq!(t.commands[0].event_type, "reserve.requested");
    let mut command = t.commands[0].clone();
    for name in ["charge", "ship"] {
        let t = saga.on_reply(&mut instance, &success(&command), T0 + SEC);
        assert_eq!(t.commands.len(), 1);
        assert_eq!(t.commands[0].step, name);
        let data = saga.command_data(&instance, &t.commands[0]);
        assert_eq!(data["input"]["order"], 7, "the trigger's data travels");
        command = t.commands[0].clone();
    }
    let t = saga.on_reply(&mut instance, &success(&command), T0 + 2 * SEC);
    assert_eq!(t.outcome, Some(SagaState::Completed));
    assert_eq!(instance.state, SagaState::Completed);
    assert!(instance.in_flight().is_empty());
    assert_eq!(outcomes(&instance), 1);
}

#[test]
fn a_failure_at_each_step_undoes_the_earlier_ones_in_reverse_order() {
    for failing in 0..3 {
        let saga = order_saga();
        let (mut instance, t) = saga.start(trigger(json!({})), T0);
        let mut command = t.commands[0].clone();
        for _ in 0..failing {
            command = saga
                .on_reply(&mut instance, &success(&command), T0)
                .commands[0]
                .clone();
        }
        let mut t = saga.on_reply(&mut instance, &failure(&command, "permanent"), T0);
        let mut undone = Vec::new();
        while let Some(c) = t.commands.first().cloned() {
            assert_eq!(c.kind, CommandKind::Compensation);
            undone.push(c.step.clone());
            t = saga.on_reply(&mut instance, &success(&c), T0);
        }
        let expected: Vec<&str> = ["reserve", "charge"][..failing]
            .iter()
            .rev()
            .copied()
            .collect();
        assert_eq!(undone, expected, "failing at step {failing}");
        assert_eq!(instance.state, SagaState::Compensated);
        assert_eq!(t.outcome, Some(SagaState::Compensated));
        assert!(
            instance.reason.as_deref().unwrap().contains("failed"),
            "{:?}",
            instance.reason
        );
    }
}

#[test]
fn a_step_that_times_out_is_retried_with_a_new_command_id_then_compensated() {
    let saga = order_saga();
    let (mut instance, t) = saga.start(trigger(json!({})), T0);
    let reserve = t.commands[0].clone();
    let t = saga.on_reply(&mut instance, &success(&reserve), T0);
    let first = t.commands[0].clone();
    assert!(
        saga.on_tick(&mut instance, T0 + 4 * SEC)
            .commands
            .is_empty(),
        "not yet"
    );
    let t = saga.on_tick(&mut instance, T0 + 5 * SEC);
    assert!(
        t.commands.is_empty(),
        "a service failure waits for its backoff"
    );
    let wake = instance.next_wake().expect("a retry is scheduled");
    assert!(
        (T0 + 5 * SEC + SEC / 2..=T0 + 6 * SEC).contains(&wake),
        "1 s, jittered"
    );
    let second = saga.on_tick(&mut instance, wake).commands[0].clone();
    assert_eq!((second.step.as_str(), second.attempt), ("charge", 2));
    assert_ne!(second.id, first.id);
    // The third attempt also times out: the step has failed, reserve is undone.
    let t = saga.on_tick(&mut instance, second.deadline);
    let wake = instance.next_wake().unwrap();
    let third = saga.on_tick(&mut instance, wake).commands[0].clone();
    assert!(t.commands.is_empty());
    assert_eq!(third.attempt, 3);
    let t = saga.on_tick(&mut instance, third.deadline);
    assert_eq!(t.commands[0].kind, CommandKind::Compensation);
    assert_eq!(t.commands[0].step, "reserve");
    assert!(
        instance
            .reason
            .as_deref()
            .unwrap()
            .contains("after 3 attempts")
    );
    // A late success of the first attempt changes nothing.
    let late = saga.on_reply(&mut instance, &success(&first), third.deadline);
    assert!(late.commands.is_empty());
    assert_eq!(instance.step("charge").unwrap().status, StepStatus::Failed);
}

#[test]
fn a_compensation_that_keeps_failing_is_stuck_then_resumed_by_an_operator() {
    let saga = order_saga();
    let (mut instance, t) = saga.start(trigger(json!({})), T0);
    let reserve = t.commands[0].clone();
    let charge = saga
        .on_reply(&mut instance, &success(&reserve), T0)
        .commands[0]
        .clone();
    let mut undo = saga
        .on_reply(&mut instance, &failure(&charge, "permanent"), T0)
        .commands[0]
        .clone();
    let mut ids = HashSet::new();
    let mut now = T0;
    loop {
        assert!(ids.insert(undo.id.clone()), "each attempt has its own id");
        let t = saga.on_reply(&mut instance, &failure(&undo, "service"), now);
        if t.outcome == Some(SagaState::Stuck) {
            break;
        }
        now = instance.next_wake().expect("a retry with backoff");
        undo = saga.on_tick(&mut instance, now).commands[0].clone();
    }
    assert_eq!(ids.len(), 3, "max_attempts of the compensation");
    assert_eq!(instance.state, SagaState::Stuck);
    assert!(
        instance
            .reason
            .as_deref()
            .unwrap()
            .contains("compensation of step `reserve` failed after 3 attempts")
    );
    assert_eq!(
        instance.next_wake(),
        None,
        "a stuck instance waits for an operator"
    );
    assert!(
        saga.on_tick(&mut instance, now + 3600 * SEC)
            .commands
            .is_empty()
    );
    let t = saga.resume(&mut instance, now + 3600 * SEC).expect("stuck");
    let retry = t.commands[0].clone();
    assert_eq!((retry.kind, retry.attempt), (CommandKind::Compensation, 4));
    assert!(!ids.contains(&retry.id));
    // Compensating again, it says why it compensates, not why it was stuck.
    let why = instance.reason.clone().unwrap();
    assert!(why.starts_with("step `charge` failed"), "{why}");
    let t = saga.on_reply(&mut instance, &success(&retry), now + 3601 * SEC);
    assert_eq!(t.outcome, Some(SagaState::Compensated));
    assert_eq!(instance.reason.as_deref(), Some(why.as_str()));
    assert!(
        saga.resume(&mut instance, now).is_err(),
        "only a stuck instance resumes"
    );
}

#[test]
fn conditional_steps_branch_on_the_trigger_and_on_earlier_results() {
    let saga = saga(vec![
        step("reserve"),
        step("express").when("reserve.ok == 'reserve' and trigger.priority == 'express'"),
        step("standard").when("trigger.priority != 'express'"),
    ]);
    for (priority, expected) in [("express", "express"), ("normal", "standard")] {
        let (mut instance, t) = saga.start(trigger(json!({"priority": priority})), T0);
        let t = saga.on_reply(&mut instance, &success(&t.commands[0]), T0);
        assert_eq!(t.commands.len(), 1);
        assert_eq!(t.commands[0].step, expected);
        let t = saga.on_reply(&mut instance, &success(&t.commands[0]), T0);
        assert_eq!(t.outcome, Some(SagaState::Completed));
        let skipped: Vec<&str> = instance
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Skipped)
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(skipped.len(), 1);
        assert_ne!(skipped[0], expected);
    }
}

#[test]
fn a_parallel_group_waits_for_members_in_flight_and_undoes_those_that_succeeded() {
    let mut group = StepSpec::parallel("fulfil", vec![step("ship"), step("mail"), step("bill")]);
    group.compensation_order = Some(vec!["bill".into(), "ship".into(), "mail".into()]);
    let saga = saga(vec![step("reserve"), group]);
    let (mut instance, t) = saga.start(trigger(json!({})), T0);
    let t = saga.on_reply(&mut instance, &success(&t.commands[0]), T0);
    let by_step: BTreeMap<String, Command> = t
        .commands
        .iter()
        .map(|c| (c.step.clone(), c.clone()))
        .collect();
    assert_eq!(by_step.len(), 3, "all members at once");
    saga.on_reply(&mut instance, &success(&by_step["ship"]), T0);
    let t = saga.on_reply(&mut instance, &failure(&by_step["mail"], "permanent"), T0);
    assert!(
        t.commands.is_empty(),
        "bill is still in flight: nothing is undone yet"
    );
    let t = saga.on_reply(&mut instance, &success(&by_step["bill"]), T0);
    let mut undone = vec![t.commands[0].step.clone()];
    let mut next = t.commands[0].clone();
    loop {
        let t = saga.on_reply(&mut instance, &success(&next), T0);
        match t.commands.first() {
            Some(c) => {
                undone.push(c.step.clone());
                next = c.clone();
            }
            None => break,
        }
    }
    assert_eq!(
        undone,
        ["bill", "ship", "reserve"],
        "the group's order, then earlier steps"
    );
    assert_eq!(instance.state, SagaState::Compensated);
}

#[test]
fn a_duplicate_reply_is_recognised_and_a_reply_without_causation_is_matched_by_type() {
    let saga = order_saga();
    let (mut instance, t) = saga.start(trigger(json!({})), T0);
    let mut reply = success(&t.commands[0]);
    reply.causation_id = None;
    let first = saga.on_reply(&mut instance, &reply, T0);
    assert_eq!(first.commands.len(), 1);
    let again = saga.on_reply(&mut instance, &reply, T0);
    assert!(again.duplicate && again.commands.is_empty() && !again.changed);
    assert_eq!(
        instance.in_flight(),
        first.commands,
        "what the driver publishes again"
    );
}

#[test]
fn command_ids_are_a_function_of_the_trigger_step_kind_and_attempt() {
    let saga = order_saga();
    let trigger = trigger(json!({}));
    let (a, ta) = saga.start(trigger.clone(), T0);
    let (b, tb) = saga.start(trigger, T0 + 9 * SEC);
    assert_eq!(a.id, b.id, "the same trigger, the same instance");
    assert_eq!(
        ta.commands[0].id, tb.commands[0].id,
        "and the same first command"
    );
}

// ---- The reference check on random sagas --------------------------------------------------

/// What a simulated service does with one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behave {
    Succeed,
    Fail(&'static str),
    Silent,
    /// A failure reply that arrives after the attempt timed out.
    LateFailure,
}

fn behave() -> impl Strategy<Value = Behave> {
    prop_oneof![
        6 => Just(Behave::Succeed),
        1 => Just(Behave::Fail("permanent")),
        1 => Just(Behave::Fail("service")),
        1 => Just(Behave::Fail("transient")),
        1 => Just(Behave::Silent),
        1 => Just(Behave::LateFailure),
    ]
}

#[derive(Debug, Clone)]
struct Shape {
    /// Per stage: its members' (max attempts, compensated, condition on `trigger.x`).
    stages: Vec<Vec<(u32, bool, Option<i64>)>>,
    x: i64,
    /// Per step name and kind: behaviour by attempt (beyond the list: succeed).
    scripts: Vec<(Vec<Behave>, Vec<Behave>)>,
    /// Per command: delay of its reply (µs, less than the timeout) and whether it is
    /// delivered twice.
    delays: Vec<(u64, bool)>,
}

fn shape() -> impl Strategy<Value = Shape> {
    let member = (
        1u32..=3,
        prop::bool::weighted(0.8),
        prop::option::weighted(0.2, 0i64..10),
    );
    let stage = prop::collection::vec(member, 1..=3);
    (
        prop::collection::vec(stage, 1..=4),
        0i64..10,
        prop::collection::vec(
            (
                prop::collection::vec(behave(), 0..4),
                prop::collection::vec(behave(), 0..5),
            ),
            12,
        ),
        prop::collection::vec((0u64..4_900_000, prop::bool::weighted(0.2)), 64),
    )
        .prop_map(|(stages, x, scripts, delays)| Shape {
            stages,
            x,
            scripts,
            delays,
        })
}

fn build(shape: &Shape) -> Saga {
    let mut n = 0;
    let mut steps = Vec::new();
    for (i, members) in shape.stages.iter().enumerate() {
        let mut made = Vec::new();
        for &(attempts, compensated, when) in members {
            let mut s = step(&format!("s{n}"));
            n += 1;
            s.max_attempts = attempts;
            if !compensated {
                s.compensation = None;
            }
            if let Some(limit) = when {
                s = s.when(&format!("trigger.x < {limit}"));
            }
            made.push(s);
        }
        if made.len() == 1 {
            steps.push(made.remove(0));
        } else {
            steps.push(StepSpec::parallel(&format!("g{i}"), made));
        }
    }
    saga(steps)
}

/// What the simulated services did.
#[derive(Debug, Default)]
struct Ledger {
    /// Executions of each step (a success reply sent).
    done: BTreeMap<String, u32>,
    /// Undos of each step, in order.
    undone: Vec<String>,
    /// Every command id received.
    ids: HashSet<String>,
}

struct World<'a> {
    saga: &'a Saga,
    shape: &'a Shape,
    instance: Instance,
    now: u64,
    pending: Vec<(u64, Reply)>,
    ledger: Ledger,
    sent: usize,
    /// Compensations always succeed (after an operator fixed the service).
    fixed: bool,
}

impl World<'_> {
    fn receive(&mut self, commands: Vec<Command>) {
        for command in commands {
            assert!(
                self.ledger.ids.insert(command.id.clone()),
                "command {} sent twice",
                command.id
            );
            let index: usize = command.step[1..].parse().unwrap();
            let (forward, undo) = &self.shape.scripts[index];
            let script = match command.kind {
                CommandKind::Step => forward,
                CommandKind::Compensation => undo,
            };
            let mut behaviour = script
                .get(command.attempt as usize - 1)
                .copied()
                .unwrap_or(Behave::Succeed);
            if self.fixed && command.kind == CommandKind::Compensation {
                behaviour = Behave::Succeed;
            }
            let (delay, twice) = self.shape.delays[self.sent % self.shape.delays.len()];
            self.sent += 1;
            let at = self.now + delay;
            let reply = match behaviour {
                Behave::Succeed => {
                    match command.kind {
                        CommandKind::Step => {
                            *self.ledger.done.entry(command.step.clone()).or_default() += 1
                        }
                        CommandKind::Compensation => self.ledger.undone.push(command.step.clone()),
                    }
                    success(&command)
                }
                Behave::Fail(class) => failure(&command, class),
                Behave::Silent => continue,
                Behave::LateFailure => {
                    self.pending
                        .push((command.deadline + SEC, failure(&command, "service")));
                    continue;
                }
            };
            if twice {
                self.pending.push((at + SEC, reply.clone()));
            }
            self.pending.push((at, reply));
        }
    }

    fn run(&mut self) {
        for _ in 0..10_000 {
            let next_reply = self.pending.iter().map(|(at, _)| *at).min();
            let Some(now) = [next_reply, self.instance.next_wake()]
                .into_iter()
                .flatten()
                .min()
            else {
                return;
            };
            self.now = self.now.max(now);
            let due: Vec<Reply> = {
                let (due, rest): (Vec<_>, Vec<_>) =
                    self.pending.drain(..).partition(|(at, _)| *at <= self.now);
                self.pending = rest;
                due.into_iter().map(|(_, r)| r).collect()
            };
            for reply in due {
                let t = self.saga.on_reply(&mut self.instance, &reply, self.now);
                self.receive(t.commands);
            }
            let t = self.saga.on_tick(&mut self.instance, self.now);
            self.receive(t.commands);
        }
        panic!("the instance never settled");
    }
}

/// The reference: whether a step succeeds, given its script and attempts (a permanent
/// failure stops it; any other failure or silence is retried while attempts remain).
fn forward_succeeds(script: &[Behave], max_attempts: u32) -> bool {
    for attempt in 0..max_attempts as usize {
        match script.get(attempt).copied().unwrap_or(Behave::Succeed) {
            Behave::Succeed => return true,
            Behave::Fail("permanent") => return false,
            _ => {}
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_instance_reaches_exactly_one_outcome_agreeing_with_the_reference(shape in shape()) {
        let saga = build(&shape);
        let (instance, t) = saga.start(trigger(json!({"x": shape.x})), T0);
        let mut world = World {
            saga: &saga,
            shape: &shape,
            instance,
            now: T0,
            pending: Vec::new(),
            ledger: Ledger::default(),
            sent: 0,
            fixed: false,
        };
        world.receive(t.commands);
        world.run();
        let instance = &world.instance;
        prop_assert!(instance.state.is_outcome());
        prop_assert_eq!(outcomes(instance), 1, "exactly one outcome in the timeline");
        prop_assert!(instance.in_flight().is_empty());
        prop_assert_eq!(instance.next_wake(), None);
        for (name, n) in &world.ledger.done {
            prop_assert_eq!(*n, 1, "{} executed once", name);
        }

        // The reference outcome of the forward steps.
        let mut k = 0;
        let mut all_succeed = true;
        for members in &shape.stages {
            for &(attempts, _, when) in members {
                let runs = when.is_none_or(|limit| shape.x < limit);
                if runs && !forward_succeeds(&shape.scripts[k].0, attempts) {
                    all_succeed = false;
                }
                k += 1;
            }
            if !all_succeed {
                break;
            }
        }
        if all_succeed {
            prop_assert_eq!(instance.state, SagaState::Completed);
            prop_assert!(world.ledger.undone.is_empty());
            return Ok(());
        }
        prop_assert_ne!(instance.state, SagaState::Completed);

        // What must be undone: every executed step with a compensation, in reverse stage
        // order and, within a group, in reverse declaration (the default).
        let mut expected = Vec::new();
        let mut k = 0;
        let mut by_stage = Vec::new();
        for members in &shape.stages {
            let mut names = Vec::new();
            for &(_, compensated, _) in members {
                let name = format!("s{k}");
                if compensated && world.ledger.done.contains_key(&name) {
                    names.push(name);
                }
                k += 1;
            }
            by_stage.push(names);
        }
        for names in by_stage.iter().rev() {
            expected.extend(names.iter().rev().cloned());
        }
        match instance.state {
            SagaState::Compensated => {
                prop_assert_eq!(&world.ledger.undone, &expected);
            }
            SagaState::Stuck => {
                prop_assert!(expected.starts_with(&world.ledger.undone));
                prop_assert!(world.ledger.undone.len() < expected.len());
                // The operator fixes the service and resumes: everything is undone.
                world.fixed = true;
                let now = world.now + 3600 * SEC;
                world.now = now;
                let t = saga.resume(&mut world.instance, now).expect("stuck");
                world.receive(t.commands);
                world.run();
                prop_assert_eq!(world.instance.state, SagaState::Compensated);
                prop_assert_eq!(&world.ledger.undone, &expected);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
        for step in &world.instance.steps {
            let executed = world.ledger.done.contains_key(&step.name);
            let undone = world.ledger.undone.contains(&step.name);
            prop_assert!(!undone || executed, "{} undone but never done", step.name);
        }
    }
}

#[test]
fn a_late_success_of_an_earlier_attempt_is_taken_and_heals_a_stuck_instance() {
    let saga = order_saga();
    let (mut instance, t) = saga.start(trigger(json!({})), T0);
    let first = t.commands[0].clone();
    saga.on_tick(&mut instance, first.deadline);
    let wake = instance.next_wake().unwrap();
    let second = saga.on_tick(&mut instance, wake).commands[0].clone();
    assert_eq!(second.attempt, 2);
    // The first attempt was done after all: reserve succeeded, charge goes out.
    let t = saga.on_reply(&mut instance, &success(&first), wake + SEC);
    assert_eq!(t.commands[0].step, "charge");
    assert_eq!(
        instance.step("reserve").unwrap().status,
        StepStatus::Succeeded
    );
    // A failure of an earlier attempt is stale.
    let t = saga.on_reply(&mut instance, &failure(&second, "permanent"), wake + SEC);
    assert!(t.commands.is_empty());
    assert_eq!(instance.state, SagaState::Running);

    // Undoing reserve times out until stuck; then its first undo's success arrives.
    let charge = instance.in_flight()[0].clone();
    let undo = saga
        .on_reply(&mut instance, &failure(&charge, "permanent"), wake + SEC)
        .commands[0]
        .clone();
    let mut now = undo.deadline;
    loop {
        saga.on_tick(&mut instance, now);
        if instance.state == SagaState::Stuck {
            break;
        }
        now = instance.next_wake().unwrap();
    }
    let t = saga.on_reply(&mut instance, &success(&undo), now + SEC);
    assert_eq!(t.outcome, Some(SagaState::Compensated));
    assert_eq!(outcomes(&instance), 2, "stuck, then healed to compensated");
    assert_eq!(instance.state, SagaState::Compensated);
}
