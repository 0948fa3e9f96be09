//! `runnel demo`: what Runnel is for, end to end, in one command.
//!
//! A server on the embedded backend (a temporary data directory unless `--data-dir`) runs in
//! this process on loopback. Over its HTTP API the demo creates stream `order` and four
//! consumer groups, each served by a "service" of its own (a thread pulling, acking and
//! nacking over HTTP, as a service in any language would), publishes `order.placed` events in
//! batches, shows each group's progress live, and ends with a summary checked against the
//! server: every event acked or dead-lettered by every group, lag 0, nothing missing.
//!
//! The failures are deterministic (from the order number), so the expected figures are known:
//! - `payments`: every 20th order fails with a service error (a 503 from the payment provider)
//!   on its first attempt, every 100th on its second too; retried after a 100 ms backoff, all
//!   succeed;
//! - `emails`: every 50th order (offset by 7) has an invalid address: a permanent failure,
//!   dead-lettered at once;
//! - `inventory` and `analytics` succeed.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use runnel_server::ServerConfig;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::Api;
use crate::config::RunnelConfig;

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
/// A service that sees nothing new for this long gives up (the summary then shows what is
/// missing).
const STALL: Duration = Duration::from_secs(30);

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

#[derive(Debug, Serialize)]
struct Summary {
    url: String,
    events: u64,
    published: u64,
    duration_secs: f64,
    publish_rate: f64,
    groups: Vec<GroupSummary>,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let config = RunnelConfig {
        server: ServerConfig {
            bind: args.bind,
            data_dir,
            ..ServerConfig::default()
        },
        ..RunnelConfig::default()
    };
    let server = runtime.block_on(config.bind())?;
    let addr = server.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let url = format!("http://{addr}");
    let result = demo(&args, &url);
    let outcome = match result {
        Ok(summary) if summary.ok && args.keep_serving => {
            print_explore(&url);
            runtime.block_on(crate::serve::shutdown_signal());
            Ok(())
        }
        Ok(summary) if summary.ok => Ok(()),
        Ok(_) => Err(anyhow::anyhow!(
            "some groups did not account for every event (see the summary)"
        )),
        Err(error) => Err(error),
    };
    let _ = stop.send(());
    runtime
        .block_on(serving)
        .context("the server task")?
        .context("stopping the server")?;
    outcome
}

/// Creates the stream and groups, runs the services and the publisher, prints progress and
/// the summary.
fn demo(args: &DemoArgs, url: &str) -> anyhow::Result<Summary> {
    let api = Api::new(url, None);
    let people = !args.json;
    if people {
        println!(
            "runnel demo: server on {url}, publishing {} order.placed events to 4 groups",
            args.events
        );
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

    let started = Instant::now();
    let progress: Vec<Arc<Progress>> = GROUPS.iter().map(|_| Arc::default()).collect();
    let services: Vec<_> = GROUPS
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
                        *progress.error.lock().unwrap() = Some(format!("{error:#}"));
                    }
                    progress.done.store(true, Ordering::Release);
                })
                .context("starting a service thread")
        })
        .collect::<Result<_, _>>()?;

    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let api = api.clone();
        let published = published.clone();
        let events = args.events;
        std::thread::Builder::new()
            .name("demo-publisher".into())
            .spawn(move || publish(&api, events, &published))
            .context("starting the publisher")?
    };

    let mut display = Display::new(people, args.events);
    let mut publish_secs = None;
    loop {
        let finished = progress.iter().all(|p| p.done.load(Ordering::Acquire));
        if publish_secs.is_none() && published.load(Ordering::Acquire) >= args.events {
            publish_secs = Some(started.elapsed().as_secs_f64());
        }
        let views: Vec<Option<Value>> = GROUPS
            .iter()
            .map(|(group, _)| api.get(&format!("/v1/groups/{group}")).ok())
            .collect();
        display.show(
            started.elapsed(),
            published.load(Ordering::Acquire),
            &progress,
            &views,
            finished,
        );
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    publisher
        .join()
        .map_err(|_| anyhow::anyhow!("the publisher panicked"))??;
    for service in services {
        service
            .join()
            .map_err(|_| anyhow::anyhow!("a service panicked"))?;
    }

    // Check against the server: lag 0 (commits may trail the last ack briefly) and the DLQ.
    let mut groups = Vec::new();
    for ((group, behaviour), progress) in GROUPS.iter().zip(&progress) {
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
        let missing = args.events.saturating_sub(acked + dead_lettered);
        if let Some(error) = progress.error.lock().unwrap().as_ref() {
            eprintln!("{group}: {error}");
        }
        groups.push(GroupSummary {
            group: group.to_string(),
            acked,
            dead_lettered,
            retries: view["counters"]["retries_scheduled"].as_u64().unwrap_or(0),
            lag,
            missing,
            ok: acked + dead_lettered == args.events
                && lag == 0
                && dead_lettered == behaviour.expected_dead(args.events),
        });
    }
    let duration = started.elapsed().as_secs_f64();
    let published = published.load(Ordering::Acquire);
    let summary = Summary {
        url: url.to_string(),
        events: args.events,
        published,
        duration_secs: duration,
        publish_rate: published as f64 / publish_secs.unwrap_or(duration).max(1e-9),
        ok: published == args.events && groups.iter().all(|g| g.ok),
        groups,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(summary)
}

/// The demo's events: order `n`, keyed by customer.
fn order(n: u64) -> Value {
    json!({
        "specversion": "1.0",
        "id": format!("order-{n}"),
        "source": "/demo/shop",
        "type": "order.placed",
        "partitionkey": format!("customer-{}", n % 97),
        "data": {
            "n": n,
            "order_id": format!("ord-{n:06}"),
            "customer": format!("customer-{}", n % 97),
            "amount_cents": 500 + (n * 7919) % 20_000,
            "email": format!("customer-{}@example.com", n % 97),
        },
    })
}

fn publish(api: &Api, events: u64, published: &AtomicU64) -> anyhow::Result<()> {
    let mut n = 0;
    while n < events {
        let end = (n + BATCH).min(events);
        let batch: Vec<Value> = (n..end).map(order).collect();
        api.publish_batch(&batch)
            .with_context(|| format!("publishing orders {n}..{end}"))?;
        published.fetch_add(end - n, Ordering::AcqRel);
        n = end;
    }
    Ok(())
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

/// Live progress: a refreshing block on a terminal, a line per group every second otherwise,
/// nothing with `--json`.
struct Display {
    enabled: bool,
    terminal: bool,
    events: u64,
    drawn: bool,
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
            drawn: false,
            last_print: None,
            last: Vec::new(),
            rates: Vec::new(),
        }
    }

    fn show(
        &mut self,
        elapsed: Duration,
        published: u64,
        progress: &[Arc<Progress>],
        views: &[Option<Value>],
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
            let view = views.get(i).and_then(Option::as_ref);
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
        let mut out = std::io::stdout().lock();
        if self.terminal {
            if self.drawn {
                let _ = write!(out, "\x1b[{}A", lines.len());
            }
            for line in &lines {
                let _ = writeln!(out, "\x1b[2K{line}");
            }
            self.drawn = true;
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
    if summary.ok {
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
    println!(
        "published {} events at {:.0}/s; demo ran {:.2}s",
        summary.published, summary.publish_rate, summary.duration_secs
    );
}

fn print_explore(url: &str) {
    println!();
    println!("The server keeps running at {url} (Ctrl-C to stop). Try:");
    println!("  curl -s {url}/v1/streams");
    println!("  curl -s {url}/v1/groups/payments");
    println!("  curl -s '{url}/v1/groups/emails/dlq?limit=5'");
    println!("  curl -s {url}/metrics | grep runnel_dlq_depth");
    println!(
        "  curl -s -X POST {url}/v1/events -H 'content-type: application/cloudevents+json' \\\n      -d '{{\"specversion\":\"1.0\",\"id\":\"x1\",\"source\":\"/me\",\"type\":\"order.placed\",\"data\":{{\"n\":1}}}}'"
    );
    println!("  runnel lag payments --url {url}");
    println!("  runnel dlq list emails --url {url}");
}
