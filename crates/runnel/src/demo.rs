//! `runnel demo`: what Runnel is for, end to end, in one command — the pipeline the seeds
//! describe.
//!
//! A server on the embedded backend (a temporary data directory unless `--data-dir`) runs in
//! this process on loopback, configured like any `runnel serve` (a `RunnelConfig` with a
//! `[[features]]` set and a `[[sagas]]` definition, `demo/shop.rs`), with the shipped fraud
//! model's inference stage beside it. Then:
//!
//! 1. **Fan-out.** `order.placed` events go to four consumer groups, each served by a
//!    "service" of its own (a thread pulling, acking and nacking over HTTP, as a service in any
//!    language would), with deterministic failures:
//!    - `payments`: every 20th order fails with a service error on its first attempt, every
//!      100th on its second too; retried after a 100 ms backoff, all succeed;
//!    - `emails`: every 50th order (offset by 7) has an invalid address: a permanent failure,
//!      dead-lettered at once;
//!    - `inventory` and `analytics` succeed.
//! 2. **Features.** `customer_1h`: each customer's orders, amount sum and mean and distinct
//!    merchants over a sliding hour of event time, into the online feature store.
//! 3. **Fraud scoring.** The shipped logistic regression (`models/fraud_lr.onnx`, built into
//!    the binary) scores every order with its customer's features and publishes
//!    `fraud.scored`. Midway the model is made slow for a few seconds (`demo/model.rs`): the
//!    breaker opens, predictions come from the cache and the fallback rule, then the breaker
//!    closes again. The publisher paces the orders around that window, so which step answers
//!    each order is known in advance (`shop::Expected`).
//! 4. **The order saga.** An approved score starts reserve → charge → ship, whose steps are
//!    done by inventory, payment and shipping services over HTTP (`demo/services.rs`), with
//!    injected failures: out of stock, card declined, shipping that never answers.
//!
//! The summary is checked against the server and the services' ledgers: every event acked or
//! dead-lettered by every group, every order counted by the features, one prediction per order
//! by outcome, the breaker's transitions, one outcome per saga matching the injected failures,
//! and every compensated order released what it reserved and refunded what it charged.

mod model;
mod services;
mod shop;

use std::collections::{BTreeMap, HashSet};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use runnel_inference::{BreakerState, Scorer};
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::Api;
use crate::config::RunnelConfig;
use services::Shop;
use shop::{Expected, Phases};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many `order.placed` events to publish.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub events: u64,
    /// Data directory of the embedded backend (default: a temporary one, removed at the end);
    /// it must be new or empty: the demo's figures count one run.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the in-process server.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub bind: SocketAddr,
    /// After the summary, keep the server up to explore (stop with Ctrl-C).
    #[arg(long)]
    pub keep_serving: bool,
    /// Print the summary as JSON (and no live progress).
    #[arg(long)]
    pub json: bool,
}

/// Events published per batch request.
const BATCH: u64 = 500;
/// Messages asked for per pull.
const PULL_MAX: u64 = 500;
/// A stage or service that shows no progress for this long is given up on (the summary then
/// shows what is missing).
const STALL: Duration = Duration::from_secs(30);
/// How long the model stays slow: the slow phase's orders are spread over it.
const SLOW_FOR: Duration = Duration::from_secs(3);
/// Publishes the slow phase's orders are spread into.
const SLOW_SLICES: u64 = 15;

/// How a group's service treats an order.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    /// Every 20th order fails (service) on attempt 1, every 100th on attempt 2 too.
    FlakyPayments,
    /// Every 50th order (offset 7) fails permanently.
    BadAddresses,
    Succeeds,
}

impl Behaviour {
    /// `None`: ack; `Some((class, reason))`: nack.
    fn outcome(self, n: u64, attempt: u64) -> Option<(&'static str, &'static str)> {
        match self {
            Behaviour::FlakyPayments if n.is_multiple_of(20) && attempt == 1 => {
                Some(("service", "503 from the payment provider"))
            }
            Behaviour::FlakyPayments if n.is_multiple_of(100) && attempt == 2 => {
                Some(("service", "payment provider timed out"))
            }
            Behaviour::BadAddresses if n % 50 == 7 => Some(("permanent", "invalid email address")),
            _ => None,
        }
    }

    /// Orders `0..events` this behaviour dead-letters.
    fn expected_dead(self, events: u64) -> u64 {
        match self {
            Behaviour::BadAddresses => (0..events).filter(|n| n % 50 == 7).count() as u64,
            _ => 0,
        }
    }
}

const GROUPS: [(&str, Behaviour); 4] = [
    ("payments", Behaviour::FlakyPayments),
    ("inventory", Behaviour::Succeeds),
    ("emails", Behaviour::BadAddresses),
    ("analytics", Behaviour::Succeeds),
];

/// The feature set, model and saga of the demo (as in `shop::PIPELINE_TOML`).
const FEATURE_SET: &str = "customer_1h";
const SAGA: &str = "order";

/// What one group's service has done so far.
#[derive(Default)]
struct Progress {
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    done: AtomicBool,
    error: Mutex<Option<String>>,
}

/// One group's line of the summary.
#[derive(Debug, Serialize)]
struct GroupSummary {
    group: String,
    /// Distinct events the service acked.
    acked: u64,
    /// Entries in the group's dead-letter queue (from the server).
    dead_lettered: u64,
    /// Retries the server scheduled (service failures).
    retries: u64,
    /// Events not yet done (from the server).
    lag: u64,
    /// `events - acked - dead_lettered`.
    missing: u64,
    ok: bool,
}

/// The feature set's line of the summary (from the server's `/v1/features`).
#[derive(Debug, Default, Serialize)]
struct FeatureSummary {
    set: String,
    /// Orders the pipeline counted: accepted, late and too late, and dead-lettered.
    counted: u64,
    late: u64,
    too_late: u64,
    dead_lettered: u64,
    /// Window results published (and written to the online store).
    results: u64,
    /// Windows the watermark has not passed yet (the last hour of event time).
    open_windows: u64,
    ok: bool,
}

/// Predictions, by which step of the ladder answered.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
struct Outcomes {
    model: u64,
    cache: u64,
    fallback: u64,
}

#[derive(Debug, Serialize)]
struct PredictionSummary {
    model: String,
    /// Distinct orders with a `fraud.scored` event (read back by the `fraud-review` group).
    predictions: u64,
    /// From the `served_by` of those events.
    outcomes: Outcomes,
    /// What the phases make them: the model outside the slow phase; in it, the cache for
    /// customers the model had scored before, the fallback rule for the others.
    expected: Outcomes,
    /// From the stage's scorer (counts every answer, a redelivery's too).
    stage: Outcomes,
    /// Degraded predictions by reason (`timeout`, `circuit_open`, `deadline`, `model_error`).
    degraded_reasons: BTreeMap<String, u64>,
    /// Model calls (batches) and how many failed or timed out.
    calls: u64,
    failed_calls: u64,
    /// Orders flagged (fraud score ≥ threshold) and approved.
    flagged: u64,
    approved: u64,
    /// Flagged orders that were not stolen cards plus stolen cards approved.
    misjudged: u64,
    /// Predictions made with some of the customer's last hour from the feature store.
    with_customer_history: u64,
    /// Entries in the stage's dead-letter queue (a slow model must never put one there).
    dead_lettered: u64,
    /// Every breaker transition, in order.
    breaker: Vec<TransitionSummary>,
    ok: bool,
}

#[derive(Debug, Clone, Serialize)]
struct TransitionSummary {
    from: String,
    to: String,
    /// Seconds since the demo started.
    at_secs: f64,
    reason: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
struct SagaOutcomes {
    completed: u64,
    compensated: u64,
    stuck: u64,
}

#[derive(Debug, Serialize)]
struct SagaSummary {
    saga: String,
    /// Instances on the server.
    instances: u64,
    /// Their states (from `GET /v1/sagas`).
    outcomes: SagaOutcomes,
    /// Still running or compensating at the end.
    unfinished: u64,
    /// What the injected failures make them.
    expected: SagaOutcomes,
    /// Compensated instances by the failure that was injected into their order.
    compensated_by_failure: BTreeMap<String, u64>,
    /// Commands each service executed (once per id) and deliveries of an id it had done.
    commands: BTreeMap<String, services::CommandCounts>,
    ledger: LedgerSummary,
    /// Instances whose outcome or ledger entries are not what their order makes them.
    problems: Vec<String>,
    ok: bool,
}

/// The services' books.
#[derive(Debug, Default, Serialize)]
struct LedgerSummary {
    reserved_units: u64,
    released_units: u64,
    charged_cents: u64,
    refunded_cents: u64,
    shipped: u64,
    /// Compensated instances that had reserved, and of them how many released exactly that.
    compensated_with_reservation: u64,
    released_exactly: u64,
    /// Compensated instances that had charged, and of them how many refunded exactly that.
    compensated_with_charge: u64,
    refunded_exactly: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    url: String,
    events: u64,
    published: u64,
    duration_secs: f64,
    publish_rate: f64,
    /// Orders `slow_from..slow_until` were scored while the model was slow.
    phases: Phases,
    groups: Vec<GroupSummary>,
    features: FeatureSummary,
    predictions: PredictionSummary,
    sagas: SagaSummary,
    ok: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let temp;
    let data_dir = match &args.data_dir {
        Some(dir) => {
            // A second run over the first one's data would find its orders already published
            // (deduplicated) and its groups already done, and report them all missing.
            let used = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
            if used {
                return Err(crate::cli::UsageError(format!(
                    "{} is not empty: the demo counts one run over a new data directory; remove \
                     it or give another --data-dir (look at this one with `runnel serve \
                     --data-dir {}`)",
                    dir.display(),
                    dir.display()
                ))
                .into());
            }
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("runnel-demo-")
                .tempdir()
                .context("creating a temporary data directory")?;
            temp.path().to_path_buf()
        }
    };
    let model_dir = tempfile::Builder::new()
        .prefix("runnel-demo-model-")
        .tempdir()
        .context("creating a directory for the model")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // The feature set and the saga, read as `runnel serve` reads runnel.toml.
    let mut config = RunnelConfig::layered(Some((Path::new("demo"), shop::PIPELINE_TOML)), [])
        .context("the demo's pipeline")?;
    config.server.bind = args.bind;
    config.server.data_dir = data_dir;
    let server = runtime.block_on(config.bind())?;
    let addr = server.local_addr()?;
    let started = Instant::now();
    let fraud = runtime.block_on(model::start(server.app(), model_dir.path()))?;
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let watching = runtime.spawn(watch_breaker(
        fraud.stage.scorer().transitions(),
        transitions.clone(),
        started,
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}");
    let result = demo(&args, &url, &fraud, &transitions, started);
    let outcome = match result {
        Ok(summary) if summary.ok && args.keep_serving => {
            print_explore(&url);
            runtime.block_on(crate::serve::shutdown_signal());
            Ok(())
        }
        Ok(summary) if summary.ok => Ok(()),
        Ok(_) => Err(anyhow::anyhow!(
            "the pipeline did not account for every event (see the summary)"
        )),
        Err(error) => Err(error),
    };
    watching.abort();
    let stage = runtime.block_on(fraud.stage.stop());
    let _ = stop.send(());
    runtime
        .block_on(serving)
        .context("the server task")?
        .context("stopping the server")?;
    stage.context("stopping the fraud model's stage")?;
    outcome
}

/// Collects the breaker's transitions as they happen.
async fn watch_breaker(
    mut transitions: tokio::sync::broadcast::Receiver<runnel_inference::Transition>,
    seen: Arc<Mutex<Vec<TransitionSummary>>>,
    started: Instant,
) {
    loop {
        match transitions.recv().await {
            Ok(t) => seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(TransitionSummary {
                    from: t.from.as_str().to_string(),
                    to: t.to.as_str().to_string(),
                    at_secs: started.elapsed().as_secs_f64(),
                    reason: t.reason,
                }),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Creates the stream and groups, runs the services and the publisher, prints progress and
/// the summary.
fn demo(
    args: &DemoArgs,
    url: &str,
    fraud: &model::Fraud,
    transitions: &Mutex<Vec<TransitionSummary>>,
    started: Instant,
) -> anyhow::Result<Summary> {
    let api = Api::new(url, None);
    let people = !args.json;
    let expected = Expected::of(args.events);
    let phases = Phases::of(args.events);
    if people {
        print_intro(url, args.events, &phases);
    }
    api.post("/v1/streams", &json!({"name": "order", "partitions": 4}))?;
    for (group, _) in GROUPS {
        api.put(
            &format!("/v1/groups/{group}"),
            &json!({
                "filter": "order.*",
                "start": "earliest",
                "ordering": "none",
                "max_deliver": 5,
                "backoff": [100],
                "max_in_flight": 1000,
                "max_ack_pending": 4000,
            }),
        )?;
    }
    let shop = Arc::new(Shop::default());
    let stop_services = Arc::new(AtomicBool::new(false));
    let shop_threads = services::start(&api, &shop, &stop_services)?;

    let progress: Vec<Arc<Progress>> = GROUPS.iter().map(|_| Arc::default()).collect();
    let fan_out: Vec<_> = GROUPS
        .iter()
        .zip(&progress)
        .map(|(&(group, behaviour), progress)| {
            let api = api.clone();
            let progress = progress.clone();
            let events = args.events;
            std::thread::Builder::new()
                .name(format!("demo-{group}"))
                .spawn(move || {
                    if let Err(error) = service(&api, group, behaviour, events, &progress) {
                        *progress.error.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(format!("{error:#}"));
                    }
                    progress.done.store(true, Ordering::Release);
                })
                .context("starting a service thread")
        })
        .collect::<Result<_, _>>()?;

    let published = Arc::new(AtomicU64::new(0));
    let publishing_done = Arc::new(AtomicBool::new(false));
    let (notes, noted) = mpsc::channel::<String>();
    let publisher = {
        let api = api.clone();
        let published = published.clone();
        let done = publishing_done.clone();
        let scorer = fraud.stage.scorer().clone();
        let slow = fraud.slow.clone();
        let events = args.events;
        std::thread::Builder::new()
            .name("demo-publisher".into())
            .spawn(move || {
                let result = publish(&api, events, &published, &scorer, &slow, &notes, started);
                slow.store(false, Ordering::Release);
                done.store(true, Ordering::Release);
                result
            })
            .context("starting the publisher")?
    };

    let mut display = Display::new(people, args.events);
    let mut publish_secs = None;
    let mut last_change = (Instant::now(), 0u64);
    let mut shown_transitions = 0;
    loop {
        let status = Status::read(&api, fraud.stage.scorer(), &shop);
        for note in noted.try_iter() {
            display.note(&note);
        }
        {
            let seen = transitions.lock().unwrap_or_else(|p| p.into_inner());
            for t in &seen[shown_transitions..] {
                display.note(&format!(
                    "{:>6.1}s  breaker {} → {}: {}",
                    t.at_secs, t.from, t.to, t.reason
                ));
            }
            shown_transitions = seen.len();
        }
        let published_now = published.load(Ordering::Acquire);
        if publish_secs.is_none() && published_now >= args.events {
            publish_secs = Some(started.elapsed().as_secs_f64());
        }
        let fan_out_done = progress.iter().all(|p| p.done.load(Ordering::Acquire));
        let publisher_done = publishing_done.load(Ordering::Acquire);
        let finished = fan_out_done
            && publisher_done
            && status.features_counted >= args.events
            && status.reviewed >= args.events
            && status.saga_outcomes() >= status.approved;
        let stalled = last_change.0.elapsed() > STALL;
        display.show(
            started.elapsed(),
            published_now,
            &progress,
            &status,
            finished || stalled,
        );
        if finished || (stalled && publisher_done) {
            break;
        }
        let total = status.total() + published_now;
        if total != last_change.1 {
            last_change = (Instant::now(), total);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for note in noted.try_iter() {
        display.note(&note);
    }
    let publish_result = publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher panicked"))?;
    for service in fan_out {
        service
            .join()
            .map_err(|_| anyhow::anyhow!("a service panicked"))?;
    }
    stop_services.store(true, Ordering::Release);
    for thread in shop_threads {
        if let Err(error) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a shop service panicked"))?
        {
            eprintln!("a shop service failed: {error:#}");
        }
    }
    publish_result?;

    let groups = group_summaries(&api, args.events, &progress)?;
    let features = feature_summary(&api, args.events)?;
    let predictions = prediction_summary(&api, fraud, &shop, &expected, transitions)?;
    let sagas = saga_summary(&api, &shop, &expected)?;
    let duration = started.elapsed().as_secs_f64();
    let published = published.load(Ordering::Acquire);
    let summary = Summary {
        url: url.to_string(),
        events: args.events,
        published,
        duration_secs: duration,
        publish_rate: published as f64 / publish_secs.unwrap_or(duration).max(1e-9),
        phases,
        ok: published == args.events
            && groups.iter().all(|g| g.ok)
            && features.ok
            && predictions.ok
            && sagas.ok,
        groups,
        features,
        predictions,
        sagas,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(summary)
}

/// Publishes the orders in three phases around the slow model: orders `0..slow_from` with the
/// model well; the model made slow and orders `slow_from..slow_until` spread over
/// [`SLOW_FOR`] (the breaker opens, the ladder answers); the model fast again and, once the
/// breaker lets a probe through, one order alone (the probe that closes it), then the rest.
/// Each phase starts once every order before it has its prediction, so which step answers an
/// order depends on its number only.
fn publish(
    api: &Api,
    events: u64,
    published: &AtomicU64,
    scorer: &Scorer,
    slow: &AtomicBool,
    notes: &mpsc::Sender<String>,
    started: Instant,
) -> anyhow::Result<()> {
    let phases = Phases::of(events);
    let note = |text: String| {
        let _ = notes.send(format!("{:>6.1}s  {text}", started.elapsed().as_secs_f64()));
    };
    let batch = |from: u64, to: u64| -> anyhow::Result<()> {
        let mut n = from;
        while n < to {
            let end = (n + BATCH).min(to);
            let batch: Vec<Value> = (n..end).map(shop::order).collect();
            api.publish_batch(&batch)
                .with_context(|| format!("publishing orders {n}..{end}"))?;
            published.fetch_add(end - n, Ordering::AcqRel);
            n = end;
        }
        Ok(())
    };
    batch(0, phases.slow_from)?;
    wait_scored(scorer, phases.slow_from)?;
    if phases.slow_until > phases.slow_from {
        slow.store(true, Ordering::Release);
        note(format!(
            "the fraud model is slow now (every call takes seconds, its timeout is {:?}): \
             orders {}..{} are answered from the cache and the fallback rule",
            scorer.options().timeout,
            phases.slow_from,
            phases.slow_until
        ));
        let size = phases.slow_until - phases.slow_from;
        let pause = SLOW_FOR / SLOW_SLICES as u32;
        for slice in 0..SLOW_SLICES {
            let from = phases.slow_from + size * slice / SLOW_SLICES;
            let to = phases.slow_from + size * (slice + 1) / SLOW_SLICES;
            batch(from, to)?;
            std::thread::sleep(pause);
        }
        wait_scored(scorer, phases.slow_until)?;
        slow.store(false, Ordering::Release);
        note("the fraud model is fast again; the breaker closes after its probe".to_string());
        // Open → half-open after its open duration; the next call is the probe.
        let until = Instant::now() + STALL;
        while scorer.breaker_state() == BreakerState::Open && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if phases.slow_until < events {
        batch(phases.slow_until, phases.slow_until + 1)?;
        wait_scored(scorer, phases.slow_until + 1)?;
        batch(phases.slow_until + 1, events)?;
    }
    note(format!("all {events} orders published"));
    Ok(())
}

/// Waits until the fraud stage has answered `target` predictions.
fn wait_scored(scorer: &Scorer, target: u64) -> anyhow::Result<()> {
    let answered = |s: &Scorer| {
        let c = s.counts();
        c.model + c.cache + c.fallback
    };
    let mut last = (Instant::now(), answered(scorer));
    loop {
        let now = answered(scorer);
        if now >= target {
            return Ok(());
        }
        if now != last.1 {
            last = (Instant::now(), now);
        } else if last.0.elapsed() > STALL {
            anyhow::bail!(
                "the fraud model's stage answered {now} of {target} orders and nothing more for \
                 {STALL:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One group's service: pull, handle, ack or nack, until every order is acked or
/// dead-lettered (or nothing arrives for `STALL`).
fn service(
    api: &Api,
    group: &str,
    behaviour: Behaviour,
    events: u64,
    progress: &Progress,
) -> anyhow::Result<()> {
    let pull = format!("/v1/groups/{group}/pull");
    let ack = format!("/v1/groups/{group}/ack");
    let nack = format!("/v1/groups/{group}/nack");
    let mut settled: HashSet<u64> = HashSet::new();
    let mut last_progress = Instant::now();
    while (settled.len() as u64) < events {
        if last_progress.elapsed() > STALL {
            anyhow::bail!(
                "nothing new for {STALL:?}; {} of {events} settled",
                settled.len()
            );
        }
        let answer = api.post(&pull, &json!({"max": PULL_MAX, "wait_ms": 500}))?;
        let messages = answer["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        last_progress = Instant::now();
        let mut receipts = Vec::with_capacity(messages.len());
        let mut acked_now = Vec::with_capacity(messages.len());
        for message in &messages {
            let receipt = message["receipt"].as_str().unwrap_or_default().to_string();
            let attempt = message["attempt"].as_u64().unwrap_or(1);
            let Some(n) = message["event"]["data"]["n"].as_u64() else {
                // Not one of ours: settle it so it does not hold the group.
                receipts.push(receipt);
                continue;
            };
            match behaviour.outcome(n, attempt) {
                None => {
                    receipts.push(receipt);
                    acked_now.push(n);
                }
                Some((class, reason)) => {
                    api.post(
                        &nack,
                        &json!({"receipt": receipt, "class": class, "reason": reason}),
                    )?;
                    if class == "permanent" {
                        if settled.insert(n) {
                            progress.dead_lettered.fetch_add(1, Ordering::AcqRel);
                        }
                    } else {
                        progress.retried.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        }
        if !receipts.is_empty() {
            api.post(&ack, &json!({"receipts": receipts}))?;
        }
        for n in acked_now {
            if settled.insert(n) {
                progress.acked.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
    Ok(())
}

fn lag_of(view: &Value) -> u64 {
    view["lag"]["total_events"].as_u64().unwrap_or(0)
}

/// What the live display and the loop's end condition read, every tick.
struct Status {
    groups: Vec<Option<Value>>,
    features_counted: u64,
    feature_results: u64,
    scored: runnel_inference::ScorerCounts,
    breaker: BreakerState,
    reviewed: u64,
    approved: u64,
    saga_started: u64,
    saga_completed: u64,
    saga_compensated: u64,
    saga_stuck: u64,
}

impl Status {
    fn read(api: &Api, scorer: &Scorer, shop: &Shop) -> Self {
        let groups: Vec<Option<Value>> = GROUPS
            .iter()
            .map(|(group, _)| api.get(&format!("/v1/groups/{group}")).ok())
            .collect();
        let (features_counted, feature_results) = api
            .get(&format!("/v1/features/{FEATURE_SET}"))
            .map(|view| {
                let totals = feature_totals(&view);
                (totals.counted, totals.results)
            })
            .unwrap_or((0, 0));
        let metrics = api.get_text("/metrics").unwrap_or_default();
        let saga = |name: &str| saga_metric(&metrics, name);
        let (reviewed, approved) = {
            let review = shop.review.lock().unwrap_or_else(|p| p.into_inner());
            (review.predictions, review.approved)
        };
        Self {
            groups,
            features_counted,
            feature_results,
            scored: scorer.counts(),
            breaker: scorer.breaker_state(),
            reviewed,
            approved,
            saga_started: saga("runnel_saga_started_total"),
            saga_completed: saga("runnel_saga_completed_total"),
            saga_compensated: saga("runnel_saga_compensated_total"),
            saga_stuck: saga("runnel_saga_stuck_total"),
        }
    }

    fn saga_outcomes(&self) -> u64 {
        self.saga_completed + self.saga_compensated + self.saga_stuck
    }

    /// A number that grows while anything progresses.
    fn total(&self) -> u64 {
        let acked: u64 = self
            .groups
            .iter()
            .flatten()
            .map(|v| v["counters"]["acked"].as_u64().unwrap_or(0) + lag_of(v))
            .sum();
        acked
            + self.features_counted
            + self.scored.model
            + self.scored.cache
            + self.scored.fallback
            + self.reviewed
            + self.saga_started
            + self.saga_outcomes()
    }
}

/// A counter of saga `order` in the Prometheus text (`name{saga="order"} 12`), 0 if absent.
fn saga_metric(text: &str, name: &str) -> u64 {
    let label = format!("saga=\"{SAGA}\"");
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The sums over a feature set's partitions.
fn feature_totals(view: &Value) -> FeatureSummary {
    let mut totals = FeatureSummary {
        set: FEATURE_SET.to_string(),
        ..FeatureSummary::default()
    };
    for p in view["partitions"].as_array().into_iter().flatten() {
        let n = |field: &str| p[field].as_u64().unwrap_or(0);
        totals.counted += n("accepted") + n("late") + n("too_late") + n("skipped");
        totals.late += n("late");
        totals.too_late += n("too_late");
        totals.dead_lettered += n("skipped");
        totals.results += n("results");
        totals.open_windows += n("open_windows");
    }
    totals
}

fn group_summaries(
    api: &Api,
    events: u64,
    progress: &[Arc<Progress>],
) -> anyhow::Result<Vec<GroupSummary>> {
    // Check against the server: lag 0 (commits may trail the last ack briefly) and the DLQ.
    let mut groups = Vec::new();
    for ((group, behaviour), progress) in GROUPS.iter().zip(progress) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let view = loop {
            let view = api.get(&format!("/v1/groups/{group}"))?;
            if lag_of(&view) == 0 || Instant::now() > deadline {
                break view;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let acked = progress.acked.load(Ordering::Acquire);
        let dead_lettered = view["dlq"]["depth"].as_u64().unwrap_or(0);
        let lag = lag_of(&view);
        let missing = events.saturating_sub(acked + dead_lettered);
        if let Some(error) = progress
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            eprintln!("{group}: {error}");
        }
        groups.push(GroupSummary {
            group: group.to_string(),
            acked,
            dead_lettered,
            retries: view["counters"]["retries_scheduled"].as_u64().unwrap_or(0),
            lag,
            missing,
            ok: acked + dead_lettered == events
                && lag == 0
                && dead_lettered == behaviour.expected_dead(events),
        });
    }
    Ok(groups)
}

fn feature_summary(api: &Api, events: u64) -> anyhow::Result<FeatureSummary> {
    let view = api.get(&format!("/v1/features/{FEATURE_SET}"))?;
    let mut totals = feature_totals(&view);
    totals.ok = totals.counted == events && totals.dead_lettered == 0;
    Ok(totals)
}

fn prediction_summary(
    api: &Api,
    fraud: &model::Fraud,
    shop: &Shop,
    expected: &Expected,
    transitions: &Mutex<Vec<TransitionSummary>>,
) -> anyhow::Result<PredictionSummary> {
    let scorer = fraud.stage.scorer();
    let counts = scorer.counts();
    let group = runnel_inference::group_name(&fraud.spec.name);
    let view = api.get(&format!("/v1/groups/{group}"))?;
    let review = shop.review.lock().unwrap_or_else(|p| p.into_inner());
    let served = |name: &str| review.served_by.get(name).copied().unwrap_or(0);
    let outcomes = Outcomes {
        model: served("model"),
        cache: served("cache"),
        fallback: served("fallback"),
    };
    let dead_lettered = view["dlq"]["depth"].as_u64().unwrap_or(0);
    let events = expected.model + expected.cache + expected.fallback;
    let ok = review.predictions == events
        && outcomes.model + outcomes.cache + outcomes.fallback == events
        && review.misjudged == 0
        && dead_lettered == 0;
    Ok(PredictionSummary {
        model: fraud.spec.name.clone(),
        predictions: review.predictions,
        expected: Outcomes {
            model: expected.model,
            cache: expected.cache,
            fallback: expected.fallback,
        },
        outcomes,
        stage: Outcomes {
            model: counts.model,
            cache: counts.cache,
            fallback: counts.fallback,
        },
        degraded_reasons: review.reasons.clone(),
        calls: counts.calls,
        failed_calls: counts.failed_calls,
        flagged: review.flagged,
        approved: review.approved,
        misjudged: review.misjudged,
        with_customer_history: review.with_history,
        dead_lettered,
        breaker: transitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        ok,
    })
}

/// Every instance of the saga, from the server, page by page.
fn saga_instances(api: &Api) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(id) => format!("/v1/sagas?type={SAGA}&limit=1000&after={id}"),
            None => format!("/v1/sagas?type={SAGA}&limit=1000"),
        };
        let page = api.get(&path)?;
        let instances = page["instances"].as_array().cloned().unwrap_or_default();
        let Some(last) = instances.last().and_then(|i| i["id"].as_str()) else {
            return Ok(all);
        };
        after = Some(last.to_string());
        all.extend(instances);
    }
}

/// Checks every instance's outcome against its order's injected failure, and the services'
/// ledgers against the outcome.
fn saga_summary(api: &Api, shop: &Shop, expected: &Expected) -> anyhow::Result<SagaSummary> {
    let instances = saga_instances(api)?;
    let inventory = shop.inventory.lock().unwrap_or_else(|p| p.into_inner());
    let payments = shop.payments.lock().unwrap_or_else(|p| p.into_inner());
    let shipping = shop.shipping.lock().unwrap_or_else(|p| p.into_inner());
    let mut outcomes = SagaOutcomes::default();
    let mut unfinished = 0;
    let mut by_failure: BTreeMap<String, u64> = BTreeMap::new();
    let mut ledger = LedgerSummary {
        reserved_units: inventory.ledger.reserved.values().sum(),
        released_units: inventory.ledger.released.values().sum(),
        charged_cents: payments.ledger.charged.values().sum(),
        refunded_cents: payments.ledger.refunded.values().sum(),
        shipped: shipping.ledger.shipped.len() as u64,
        ..LedgerSummary::default()
    };
    let mut problems = Vec::new();
    for instance in &instances {
        let id = instance["id"].as_str().unwrap_or_default();
        let state = instance["state"].as_str().unwrap_or_default();
        let order = inventory.ledger.orders.get(id).copied();
        let reserved = inventory.ledger.reserved.get(id);
        let released = inventory.ledger.released.get(id);
        let charged = payments.ledger.charged.get(id);
        let refunded = payments.ledger.refunded.get(id);
        let shipped = shipping.ledger.shipped.contains(id);
        let failure = order.and_then(shop::saga_failure);
        let mut problem = |what: String| {
            problems.push(format!(
                "instance {id} (order {}): {what}",
                order.map_or("?".to_string(), |n| n.to_string())
            ))
        };
        match state {
            "completed" => {
                outcomes.completed += 1;
                if failure.is_some() {
                    problem(format!("completed, but {failure:?} was injected"));
                }
                if reserved.is_none() || charged.is_none() || !shipped {
                    problem("completed without a reservation, a charge and a shipment".into());
                }
                if released.is_some() || refunded.is_some() {
                    problem("completed, yet released or refunded".into());
                }
            }
            "compensated" => {
                outcomes.compensated += 1;
                let name = failure.map_or("none".to_string(), |f| {
                    serde_json::to_value(f)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                });
                *by_failure.entry(name).or_default() += 1;
                if failure.is_none() {
                    problem("compensated without an injected failure".into());
                }
                if let Some(units) = reserved {
                    ledger.compensated_with_reservation += 1;
                    if released == Some(units) {
                        ledger.released_exactly += 1;
                    } else {
                        problem(format!("reserved {units}, released {released:?}"));
                    }
                } else if released.is_some() {
                    problem("released without a reservation".into());
                }
                if let Some(cents) = charged {
                    ledger.compensated_with_charge += 1;
                    if refunded == Some(cents) {
                        ledger.refunded_exactly += 1;
                    } else {
                        problem(format!("charged {cents}, refunded {refunded:?}"));
                    }
                } else if refunded.is_some() {
                    problem("refunded without a charge".into());
                }
                if shipped {
                    problem("compensated after shipping".into());
                }
            }
            "stuck" => {
                outcomes.stuck += 1;
                problem(format!(
                    "stuck: {}",
                    instance["reason"].as_str().unwrap_or("no reason given")
                ));
            }
            other => {
                unfinished += 1;
                problem(format!("still {other}"));
            }
        }
    }
    let expected_outcomes = SagaOutcomes {
        completed: expected.completed,
        compensated: expected.compensated,
        stuck: expected.stuck,
    };
    let mut commands = BTreeMap::new();
    commands.insert("inventory-service".to_string(), inventory.counts);
    commands.insert("payment-service".to_string(), payments.counts);
    commands.insert("shipping-service".to_string(), shipping.counts);
    let ok = instances.len() as u64 == expected.approved
        && outcomes == expected_outcomes
        && unfinished == 0
        && problems.is_empty();
    problems.truncate(20);
    Ok(SagaSummary {
        saga: SAGA.to_string(),
        instances: instances.len() as u64,
        outcomes,
        unfinished,
        expected: expected_outcomes,
        compensated_by_failure: by_failure,
        commands,
        ledger,
        problems,
        ok,
    })
}

fn print_intro(url: &str, events: u64, phases: &Phases) {
    println!("runnel demo: a server on {url} with the pipeline the seeds describe.");
    println!(
        "  {events} order.placed events fan out to 4 consumer groups (payments retries, emails \
         dead-letters bad addresses);"
    );
    println!(
        "  feature set `{FEATURE_SET}` counts each customer's orders and spend over a sliding hour;"
    );
    println!(
        "  the shipped fraud model scores every order with those features → fraud.scored; orders \
         {}..{} meet a slow model;",
        phases.slow_from, phases.slow_until
    );
    println!(
        "  an approved score starts saga `{SAGA}`: reserve → charge → ship, with out-of-stock, \
         declined cards and a shipping timeout injected."
    );
    println!();
}

/// Live progress: a refreshing block on a terminal, a line per stage every second otherwise,
/// nothing with `--json`. Notes (phases, breaker transitions) are printed above it.
struct Display {
    enabled: bool,
    terminal: bool,
    events: u64,
    drawn: usize,
    last_print: Option<Instant>,
    last: Vec<(Instant, u64)>,
    rates: Vec<f64>,
}

impl Display {
    fn new(enabled: bool, events: u64) -> Self {
        Self {
            enabled,
            terminal: std::io::stdout().is_terminal(),
            events,
            drawn: 0,
            last_print: None,
            last: Vec::new(),
            rates: Vec::new(),
        }
    }

    fn note(&mut self, text: &str) {
        if !self.enabled {
            return;
        }
        let mut out = std::io::stdout().lock();
        if self.terminal && self.drawn > 0 {
            // Over the block; it is drawn again below the note.
            let _ = write!(out, "\x1b[{}A\x1b[0J", self.drawn);
            self.drawn = 0;
        }
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn show(
        &mut self,
        elapsed: Duration,
        published: u64,
        progress: &[Arc<Progress>],
        status: &Status,
        finished: bool,
    ) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self.last.is_empty() {
            self.last = vec![(now, 0); progress.len()];
            self.rates = vec![0.0; progress.len()];
        }
        // Throughput over the last second or so.
        for (i, p) in progress.iter().enumerate() {
            let acked = p.acked.load(Ordering::Acquire) + p.dead_lettered.load(Ordering::Acquire);
            let (then, before) = self.last[i];
            let dt = now.duration_since(then).as_secs_f64();
            if dt >= 0.5 {
                self.rates[i] = (acked - before) as f64 / dt;
                self.last[i] = (now, acked);
            }
        }
        if !self.terminal
            && !finished
            && self
                .last_print
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_print = Some(now);
        let mut lines = vec![format!(
            "{:>6.1}s  published {published}/{}",
            elapsed.as_secs_f64(),
            self.events
        )];
        for (i, ((group, _), p)) in GROUPS.iter().zip(progress).enumerate() {
            let view = status.groups.get(i).and_then(Option::as_ref);
            let lag = view.map(lag_of).unwrap_or(0);
            let dlq = view
                .and_then(|v| v["dlq"]["depth"].as_u64())
                .unwrap_or_else(|| p.dead_lettered.load(Ordering::Acquire));
            let retries = view
                .and_then(|v| v["counters"]["retries_scheduled"].as_u64())
                .unwrap_or_else(|| p.retried.load(Ordering::Acquire));
            lines.push(format!(
                "  {group:<10} acked {:>7}  {:>8.0}/s  lag {lag:>6}  retries {retries:>5}  dlq {dlq:>5}",
                p.acked.load(Ordering::Acquire),
                self.rates[i],
            ));
        }
        lines.push(format!(
            "  features   {FEATURE_SET}: orders counted {:>6}  windows computed {:>6}",
            status.features_counted, status.feature_results
        ));
        let s = &status.scored;
        lines.push(format!(
            "  fraud      predictions {:>6}: model {:>6}  cache {:>5}  fallback {:>5}  breaker {}",
            s.model + s.cache + s.fallback,
            s.model,
            s.cache,
            s.fallback,
            status.breaker
        ));
        lines.push(format!(
            "  saga order started {:>6}  completed {:>6}  compensated {:>4}  stuck {:>3}",
            status.saga_started, status.saga_completed, status.saga_compensated, status.saga_stuck
        ));
        let mut out = std::io::stdout().lock();
        if self.terminal {
            if self.drawn > 0 {
                let _ = write!(out, "\x1b[{}A", self.drawn);
            }
            for line in &lines {
                let _ = writeln!(out, "\x1b[2K{line}");
            }
            self.drawn = lines.len();
        } else {
            for line in &lines {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = out.flush();
    }
}

fn print_summary(summary: &Summary) {
    println!();
    let headers = [
        "group",
        "acked",
        "dead-lettered",
        "total",
        "retries",
        "lag",
        "missing",
    ];
    let rows: Vec<Vec<String>> = summary
        .groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                g.acked.to_string(),
                g.dead_lettered.to_string(),
                (g.acked + g.dead_lettered).to_string(),
                g.retries.to_string(),
                g.lag.to_string(),
                g.missing.to_string(),
            ]
        })
        .collect();
    crate::bench::print_table(&headers, &rows);
    println!();
    if summary.groups.iter().all(|g| g.ok) {
        println!(
            "every group accounted for all {} events: acked or dead-lettered, nothing missing.",
            summary.events
        );
    } else {
        println!(
            "NOT every group accounted for all {} events.",
            summary.events
        );
    }

    let f = &summary.features;
    println!();
    println!(
        "features `{}`: {} of {} orders counted ({} late, {} too late, {} dead-lettered); {} \
         windows computed, {} still open (the last hour of event time).",
        f.set,
        f.counted,
        summary.events,
        f.late,
        f.too_late,
        f.dead_lettered,
        f.results,
        f.open_windows
    );

    let p = &summary.predictions;
    println!();
    println!(
        "fraud model `{}`: {} predictions for {} orders ({} calls, {} failed or timed out), {} \
         dead-lettered; {} used the customer's last hour of features.",
        p.model,
        p.predictions,
        summary.events,
        p.calls,
        p.failed_calls,
        p.dead_lettered,
        p.with_customer_history
    );
    let headers = ["answered by", "predictions", "expected"];
    let rows = vec![
        vec![
            "model".to_string(),
            p.outcomes.model.to_string(),
            p.expected.model.to_string(),
        ],
        vec![
            "cache".to_string(),
            p.outcomes.cache.to_string(),
            p.expected.cache.to_string(),
        ],
        vec![
            "fallback".to_string(),
            p.outcomes.fallback.to_string(),
            p.expected.fallback.to_string(),
        ],
    ];
    crate::bench::print_table(&headers, &rows);
    if !p.degraded_reasons.is_empty() {
        let reasons: Vec<String> = p
            .degraded_reasons
            .iter()
            .map(|(reason, n)| format!("{reason} {n}"))
            .collect();
        println!("degraded because: {}", reasons.join(", "));
    }
    if p.breaker.is_empty() {
        println!("the breaker never changed state.");
    } else {
        println!("breaker transitions:");
        for t in &p.breaker {
            println!("  {:>6.1}s  {} → {}: {}", t.at_secs, t.from, t.to, t.reason);
        }
    }
    println!(
        "{} orders flagged as fraud (score ≥ {}), {} approved; {} misjudged.",
        p.flagged,
        shop::FRAUD_THRESHOLD,
        p.approved,
        p.misjudged
    );

    let s = &summary.sagas;
    println!();
    println!(
        "saga `{}`: {} instances (one per approved order).",
        s.saga, s.instances
    );
    let headers = ["outcome", "instances", "expected"];
    let rows = vec![
        vec![
            "completed".to_string(),
            s.outcomes.completed.to_string(),
            s.expected.completed.to_string(),
        ],
        vec![
            "compensated".to_string(),
            s.outcomes.compensated.to_string(),
            s.expected.compensated.to_string(),
        ],
        vec![
            "stuck".to_string(),
            s.outcomes.stuck.to_string(),
            s.expected.stuck.to_string(),
        ],
    ];
    crate::bench::print_table(&headers, &rows);
    let causes: Vec<String> = s
        .compensated_by_failure
        .iter()
        .map(|(cause, n)| format!("{cause} {n}"))
        .collect();
    if !causes.is_empty() {
        println!("compensated because: {}", causes.join(", "));
    }
    let l = &s.ledger;
    println!(
        "ledgers: {} units reserved, {} released; {:.2} charged, {:.2} refunded; {} shipped.",
        l.reserved_units,
        l.released_units,
        l.charged_cents as f64 / 100.0,
        l.refunded_cents as f64 / 100.0,
        l.shipped
    );
    println!(
        "every compensated order released exactly what it reserved ({} of {}) and refunded \
         exactly what it charged ({} of {}).",
        l.released_exactly,
        l.compensated_with_reservation,
        l.refunded_exactly,
        l.compensated_with_charge
    );
    let commands: Vec<String> = s
        .commands
        .iter()
        .map(|(service, c)| format!("{service} {} (redelivered {})", c.executed, c.redelivered))
        .collect();
    println!("commands executed once each: {}.", commands.join(", "));
    for problem in &s.problems {
        println!("  problem: {problem}");
    }

    println!();
    if summary.ok {
        println!(
            "all {} orders accounted for in every group, the features, the predictions and the \
             sagas.",
            summary.events
        );
    } else {
        println!("NOT everything was accounted for (see above).");
    }
    println!(
        "published {} events (paced around the slow model) at {:.0}/s; demo ran {:.2}s",
        summary.published, summary.publish_rate, summary.duration_secs
    );
}

fn print_explore(url: &str) {
    println!();
    println!("The server keeps running at {url} (Ctrl-C to stop). Try:");
    println!("  curl -s {url}/v1/streams");
    println!("  curl -s {url}/v1/groups/payments");
    println!("  curl -s '{url}/v1/groups/emails/dlq?limit=5'");
    println!("  curl -s {url}/v1/features/{FEATURE_SET}");
    println!("  curl -s '{url}/v1/sagas?type={SAGA}&state=compensated&limit=5'");
    println!("  curl -s {url}/metrics | grep -E 'runnel_(dlq_depth|predictions_total|saga_)'");
    println!(
        "  curl -s -X POST {url}/v1/events -H 'content-type: application/cloudevents+json' \\\n      -d '{{\"specversion\":\"1.0\",\"id\":\"x1\",\"source\":\"/me\",\"type\":\"order.placed\",\"data\":{{\"n\":1}}}}'"
    );
    println!("  runnel lag payments --url {url}");
    println!("  runnel dlq list emails --url {url}");
    println!("  runnel saga list --url {url}");
}
