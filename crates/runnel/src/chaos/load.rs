//! The load the server is killed under: publisher threads that retry the same event ids until
//! they are answered 202, and one consumer thread per group that pulls, acks (or dead-letters
//! a fixed subset) and records what it was handed and what the server confirmed.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::server::Target;
use super::verify::{GroupRecord, Handout, Position};
use crate::api::ApiError;

pub const EVENT_TYPE: &str = "chaos.generated";
pub const STREAM: &str = "chaos";
/// Events per batch request; publishers alternate single events and batches.
const BATCH: u64 = 10;
/// Pause before retrying a request the server did not answer (it is down or restarting).
const RETRY_PAUSE: Duration = Duration::from_millis(10);

pub fn event_id(publisher: usize, n: u64) -> String {
    format!("p{publisher}-{n}")
}

fn parse_id(id: &str) -> Option<(usize, u64)> {
    let (p, n) = id.strip_prefix('p')?.split_once('-')?;
    Some((p.parse().ok()?, n.parse().ok()?))
}

/// The event a publisher sends as number `n`; derived from the id alone, so a stored copy
/// can be compared with what was sent.
pub fn event(publisher: usize, n: u64) -> Value {
    json!({
        "specversion": "1.0",
        "id": event_id(publisher, n),
        "source": "/chaos",
        "type": EVENT_TYPE,
        "partitionkey": format!("k{}", n % 32),
        "data": {"publisher": publisher, "n": n, "pad": "x".repeat(64 + (n % 64) as usize)},
    })
}

/// Whether `stored` (an event in the CloudEvents JSON format) is the one published under its id.
pub fn is_published_event(stored: &Value) -> bool {
    let Some((publisher, n)) = stored["id"].as_str().and_then(parse_id) else {
        return false;
    };
    let sent = event(publisher, n);
    stored["id"] == sent["id"] && stored["type"] == sent["type"] && stored["data"] == sent["data"]
}

/// The subset the dead-lettering group nacks as `permanent`: every 13th event of a publisher.
pub fn dead_letters(id: &str) -> bool {
    parse_id(id).is_some_and(|(_, n)| n % 13 == 5)
}

/// What the publishers were promised.
#[derive(Default)]
pub struct Published {
    /// Event ids answered 202, with the position the answer named.
    pub acked: Mutex<BTreeMap<String, Position>>,
    /// Requests sent again after no answer or a 5xx.
    pub retries: AtomicU64,
    /// Events answered `duplicate: true` (a retry of something already appended).
    pub duplicates: AtomicU64,
    /// Answers that broke a rule (a 4xx, an id acknowledged at two positions).
    pub failures: Mutex<Vec<String>>,
}

impl Published {
    fn fail(&self, message: String) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(message);
    }

    fn record(&self, answer: &Value, events: &[Value]) {
        let positions: Vec<&Value> = match answer {
            Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        if positions.len() != events.len() {
            self.fail(format!(
                "{} events answered with {} positions",
                events.len(),
                positions.len()
            ));
            return;
        }
        let mut acked = self.acked.lock().unwrap_or_else(|p| p.into_inner());
        for (position, event) in positions.into_iter().zip(events) {
            let id = event["id"].as_str().unwrap_or_default().to_string();
            let (Some(partition), Some(offset)) = (
                position["partition"]
                    .as_u64()
                    .and_then(|p| u32::try_from(p).ok()),
                position["offset"].as_u64(),
            ) else {
                self.fail(format!("a 202 without a position for {id}: {position}"));
                continue;
            };
            if position["duplicate"].as_bool() == Some(true) {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            let at = Position { partition, offset };
            if let Some(before) = acked.insert(id.clone(), at)
                && before != at
            {
                self.fail(format!(
                    "{id} acknowledged at {}/{} and at {partition}/{offset}",
                    before.partition, before.offset
                ));
            }
        }
    }
}

/// Publishes until `stop`, then finishes (retries) the request in hand and returns.
/// `rate` is this publisher's events per second (0: as fast as answered).
pub fn publisher(
    index: usize,
    rate: f64,
    target: &Target,
    stop: &AtomicBool,
    published: &Published,
) {
    let (mut n, mut request) = (0u64, 0u64);
    let mut due = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let batch = if request.is_multiple_of(2) { 1 } else { BATCH };
        request += 1;
        let events: Vec<Value> = (n..n + batch).map(|i| event(index, i)).collect();
        n += batch;
        if rate > 0.0 {
            due += Duration::from_secs_f64(batch as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > Duration::from_secs(1) {
                // Behind after an outage: carry on at the rate rather than in a burst.
                due = now;
            }
        }
        loop {
            let Some(api) = target.current() else { return };
            let result = if batch == 1 {
                api.post_as("/v1/events", "application/cloudevents+json", &events[0])
            } else {
                api.publish_batch(&events)
            };
            match result {
                Ok(answer) => {
                    published.record(&answer, &events);
                    break;
                }
                // No answer (killed mid-request, or down): the same ids again.
                Err(ApiError::Unreachable { .. }) => {}
                Err(ApiError::Status { status, .. }) if status >= 500 => {}
                Err(error) => {
                    published.fail(format!("publish refused: {error}"));
                    return;
                }
            }
            published.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(RETRY_PAUSE);
        }
    }
}

/// One consumer group under load and what its consumer recorded.
pub struct GroupLoad {
    pub name: String,
    pub processed_ids: bool,
    /// Nacks [`dead_letters`] events as `permanent`.
    pub dead_letters: bool,
    pub record: Mutex<GroupRecord>,
    /// Pulls, acks and nacks that got no usable answer.
    pub errors: AtomicU64,
}

impl GroupLoad {
    pub fn new(name: &str, processed_ids: bool, dead_letters: bool) -> Self {
        Self {
            name: name.to_string(),
            processed_ids,
            dead_letters,
            record: Mutex::new(GroupRecord::default()),
            errors: AtomicU64::new(0),
        }
    }

    pub fn expects_dead(&self, id: &str) -> bool {
        self.dead_letters && dead_letters(id)
    }

    /// The settings the harness gives the group: a short lease so a killed server's
    /// partitions are free again soon after the restart.
    pub fn spec(&self) -> Value {
        json!({
            "filter": format!("{STREAM}.*"),
            "processed_ids": self.processed_ids,
            "lease_ttl": 1000,
            "ack_wait": 10000,
            "max_deliver": 1000,
        })
    }

    fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(RETRY_PAUSE);
    }

    /// Pulls and settles until `stop`.
    pub fn consume(&self, target: &Target, stop: &AtomicBool) {
        let pull = format!("/v1/groups/{}/pull", self.name);
        let ack = format!("/v1/groups/{}/ack", self.name);
        let nack = format!("/v1/groups/{}/nack", self.name);
        while !stop.load(Ordering::SeqCst) {
            let Some(api) = target.current() else { return };
            let pulled = match api.post(&pull, &json!({"max": 100, "wait_ms": 200})) {
                Ok(pulled) => pulled,
                Err(_) => {
                    self.error();
                    continue;
                }
            };
            let messages = pulled["messages"].as_array().cloned().unwrap_or_default();
            let mut to_ack: Vec<(String, String)> = Vec::new();
            for message in &messages {
                let id = message["event"]["id"].as_str().unwrap_or_default();
                let receipt = message["receipt"].as_str().unwrap_or_default().to_string();
                if let (Some(partition), Some(offset)) = (
                    message["partition"]
                        .as_u64()
                        .and_then(|p| u32::try_from(p).ok()),
                    message["offset"].as_u64(),
                ) && message["stream"] == STREAM
                {
                    self.lock().handouts.push(Handout {
                        id: id.to_string(),
                        position: Position { partition, offset },
                    });
                }
                if self.expects_dead(id) {
                    let body = json!({"receipt": receipt, "class": "permanent",
                        "reason": "chaos: dead-lettered on purpose"});
                    match api.post(&nack, &body) {
                        Ok(_) => *self.lock().nacked.entry(id.to_string()).or_default() += 1,
                        Err(ApiError::Unreachable { .. }) => {
                            *self.lock().unanswered.entry(id.to_string()).or_default() += 1;
                            self.error();
                        }
                        Err(_) => self.error(),
                    }
                } else {
                    to_ack.push((receipt, id.to_string()));
                }
            }
            if to_ack.is_empty() {
                continue;
            }
            let receipts: Vec<&str> = to_ack.iter().map(|(r, _)| r.as_str()).collect();
            let refused: HashSet<String> = match api.post(&ack, &json!({"receipts": receipts})) {
                Ok(_) => HashSet::new(),
                // Some receipts lapsed (a restart of the consumer); the others were acked.
                Err(ApiError::Status { problem, .. }) if problem.get("acked").is_some() => {
                    ["unknown", "expired"]
                        .iter()
                        .flat_map(|k| problem[*k].as_array().cloned().unwrap_or_default())
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect()
                }
                Err(error) => {
                    if matches!(error, ApiError::Unreachable { .. }) {
                        let mut record = self.lock();
                        for (_, id) in to_ack {
                            *record.unanswered.entry(id).or_default() += 1;
                        }
                    }
                    self.error();
                    continue;
                }
            };
            let mut record = self.lock();
            for (receipt, id) in to_ack {
                if !refused.contains(&receipt) {
                    *record.acked.entry(id).or_default() += 1;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GroupRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}
