//! The services of the demo's shop, each an HTTP consumer group (pull, ack, publish replies)
//! as a service in any language would be: the saga's inventory, payment and shipping services
//! with their ledgers, and the fraud team's review of every prediction.
//!
//! A step service executes each command once by its id (the idempotency key docs/sagas.md
//! asks for) and counts deliveries of an id it already executed; a repeated delivery gets the
//! first execution's reply again (same reply id, which publish deduplication absorbs). It
//! recognises a step by (instance, step), so a new attempt of a step already done is
//! answered without doing it twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{Value, json};

use super::shop::{self, Buyer, SagaFailure};
use crate::api::Api;

/// Messages asked for per pull.
const PULL_MAX: u64 = 500;

/// A command as a step service sees it.
pub struct Command<'a> {
    pub kind: &'a str,
    pub instance: String,
    pub order: Option<u64>,
    pub data: &'a Value,
}

/// Deliveries a step service received, by command id.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct CommandCounts {
    /// Distinct command ids executed (each once).
    pub executed: u64,
    /// Deliveries of a command id already executed (answered again, not executed again).
    pub redelivered: u64,
}

/// A service's handling of one new command: its reply (type and data), or none.
type Handler<S> = fn(&mut S, &Command<'_>) -> Option<(&'static str, Value)>;

/// Creates the service's group.
pub fn create_group(api: &Api, group: &str, filter: &str) -> anyhow::Result<()> {
    api.put(
        &format!("/v1/groups/{group}"),
        &json!({
            "filter": filter,
            "start": "earliest",
            "ordering": "none",
            "max_in_flight": 1000,
            "max_ack_pending": 4000,
        }),
    )?;
    Ok(())
}

/// Runs a step service until `stop`: pulls commands of `group`, executes each new one with
/// `handle` on the shared `state`, publishes the replies, then acks.
pub fn run_step_service<S>(
    api: &Api,
    group: &str,
    state: &Mutex<StepState<S>>,
    handle: Handler<S>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let source = format!("/demo/{group}");
    let pull = format!("/v1/groups/{group}/pull");
    let ack = format!("/v1/groups/{group}/ack");
    while !stop.load(Ordering::Acquire) {
        let answer = api.post(&pull, &json!({"max": PULL_MAX, "wait_ms": 300}))?;
        let messages = answer["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let mut receipts = Vec::with_capacity(messages.len());
        let mut replies = Vec::new();
        {
            let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
            let state = &mut *guard;
            for message in &messages {
                receipts.push(message["receipt"].clone());
                let event = &message["event"];
                let Some(id) = event["id"].as_str() else {
                    continue;
                };
                let reply = match state.replies.get(id) {
                    Some(reply) => {
                        state.counts.redelivered += 1;
                        reply.clone()
                    }
                    None => {
                        let data = &event["data"];
                        let command = Command {
                            kind: event["type"].as_str().unwrap_or_default(),
                            instance: event["correlationid"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            order: data["input"]["input"]["id"]
                                .as_str()
                                .and_then(shop::order_number),
                            data,
                        };
                        let reply = handle(&mut state.ledger, &command);
                        state.counts.executed += 1;
                        state.replies.insert(id.to_string(), reply.clone());
                        reply
                    }
                };
                if let Some((kind, data)) = reply {
                    replies.push(json!({
                        "specversion": "1.0",
                        "id": format!("reply-{id}"),
                        "source": source,
                        "type": kind,
                        "correlationid": event["correlationid"],
                        "causationid": id,
                        "partitionkey": event["correlationid"],
                        "data": data,
                    }));
                }
            }
        }
        if !replies.is_empty() {
            api.publish_batch(&replies)?;
        }
        api.post(&ack, &json!({"receipts": receipts}))?;
    }
    Ok(())
}

/// What a step service keeps: its ledger, its counts and the reply to each command id.
#[derive(Default)]
pub struct StepState<L> {
    pub ledger: L,
    pub counts: CommandCounts,
    replies: HashMap<String, Option<(&'static str, Value)>>,
}

/// The inventory service's ledger, by saga instance.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Order of each instance it saw.
    pub orders: HashMap<String, u64>,
    /// Units reserved per instance.
    pub reserved: HashMap<String, u64>,
    /// Units released per instance.
    pub released: HashMap<String, u64>,
    /// Reservations refused for lack of stock.
    pub out_of_stock: u64,
}

pub fn inventory(ledger: &mut Inventory, command: &Command<'_>) -> Option<(&'static str, Value)> {
    let order = command.order?;
    ledger.orders.insert(command.instance.clone(), order);
    match command.kind {
        "inventory.reserve.requested" => {
            if shop::saga_failure(order) == Some(SagaFailure::OutOfStock) {
                ledger.out_of_stock += 1;
                return Some((
                    "inventory.reservation_failed",
                    json!({"class": "permanent", "reason": format!("out of stock: sku-{}", order % 12), "order": order}),
                ));
            }
            let units = *ledger
                .reserved
                .entry(command.instance.clone())
                .or_insert_with(|| shop::items(order));
            Some((
                "inventory.reserved",
                json!({"order": order, "sku": format!("sku-{}", order % 12), "units": units}),
            ))
        }
        "inventory.release.requested" => {
            // What the saga says was reserved: the reserve step's reply it kept.
            let units = command.data["result"]["units"].as_u64().unwrap_or(0);
            ledger
                .released
                .entry(command.instance.clone())
                .or_insert(units);
            Some((
                "inventory.released",
                json!({"order": order, "units": units}),
            ))
        }
        _ => None,
    }
}

/// The payment service's ledger, by saga instance.
#[derive(Debug, Default)]
pub struct Payments {
    pub orders: HashMap<String, u64>,
    /// Cents charged per instance.
    pub charged: HashMap<String, u64>,
    /// Cents refunded per instance.
    pub refunded: HashMap<String, u64>,
    pub declined: u64,
}

pub fn payments(ledger: &mut Payments, command: &Command<'_>) -> Option<(&'static str, Value)> {
    let order = command.order?;
    ledger.orders.insert(command.instance.clone(), order);
    match command.kind {
        "payment.charge.requested" => {
            if shop::saga_failure(order) == Some(SagaFailure::CardDeclined) {
                ledger.declined += 1;
                return Some((
                    "payment.declined",
                    json!({"class": "permanent", "reason": "card declined", "order": order}),
                ));
            }
            // The amount the order was scored with (the trigger's `inputs.amount`).
            let amount = command.data["input"]["inputs"]["amount"]
                .as_f64()
                .unwrap_or(0.0);
            let cents = *ledger
                .charged
                .entry(command.instance.clone())
                .or_insert((amount * 100.0).round() as u64);
            Some((
                "payment.charged",
                json!({"order": order, "amount_cents": cents}),
            ))
        }
        "payment.refund.requested" => {
            let cents = command.data["result"]["amount_cents"].as_u64().unwrap_or(0);
            ledger
                .refunded
                .entry(command.instance.clone())
                .or_insert(cents);
            Some((
                "payment.refunded",
                json!({"order": order, "amount_cents": cents}),
            ))
        }
        _ => None,
    }
}

/// The shipping service's ledger.
#[derive(Debug, Default)]
pub struct Shipping {
    pub orders: HashMap<String, u64>,
    pub shipped: HashSet<String>,
    /// Commands it never answered (the injected timeouts).
    pub unanswered: u64,
}

pub fn shipping(ledger: &mut Shipping, command: &Command<'_>) -> Option<(&'static str, Value)> {
    let order = command.order?;
    ledger.orders.insert(command.instance.clone(), order);
    if command.kind != "shipping.ship.requested" {
        return None;
    }
    if shop::saga_failure(order) == Some(SagaFailure::ShipTimeout) {
        ledger.unanswered += 1;
        return None;
    }
    // A second attempt (the first answered late) ships nothing more.
    ledger.shipped.insert(command.instance.clone());
    Some((
        "shipping.shipped",
        json!({"order": order, "carrier": "demo-post"}),
    ))
}

/// The fraud team's view of every prediction, by input (order) id.
#[derive(Debug, Default)]
pub struct Review {
    seen: HashSet<String>,
    /// Distinct orders with a prediction.
    pub predictions: u64,
    /// By `served_by`: model, cache, fallback.
    pub served_by: BTreeMap<String, u64>,
    /// Degraded predictions by reason.
    pub reasons: BTreeMap<String, u64>,
    /// `outputs.fraud` at or above the threshold.
    pub flagged: u64,
    pub approved: u64,
    /// Flagged orders that were not stolen cards, and stolen cards not flagged.
    pub misjudged: u64,
    /// Predictions made with some of the customer's last hour from the feature store.
    pub with_history: u64,
    /// Deliveries of `fraud.scored` (above `predictions` when one came twice).
    pub deliveries: u64,
}

/// Reads `fraud.scored` in group `fraud-review` until `stop`.
pub fn run_review(api: &Api, review: &Mutex<Review>, stop: &AtomicBool) -> anyhow::Result<()> {
    let pull = "/v1/groups/fraud-review/pull";
    let ack = "/v1/groups/fraud-review/ack";
    while !stop.load(Ordering::Acquire) {
        let answer = api.post(pull, &json!({"max": PULL_MAX, "wait_ms": 300}))?;
        let messages = answer["messages"].as_array().cloned().unwrap_or_default();
        if messages.is_empty() {
            continue;
        }
        let mut receipts = Vec::with_capacity(messages.len());
        {
            let mut review = review.lock().unwrap_or_else(|p| p.into_inner());
            for message in &messages {
                receipts.push(message["receipt"].clone());
                let data = &message["event"]["data"];
                review.deliveries += 1;
                let Some(input) = data["input"]["id"].as_str() else {
                    continue;
                };
                if !review.seen.insert(input.to_string()) {
                    continue;
                }
                review.predictions += 1;
                let served_by = data["served_by"].as_str().unwrap_or("unknown").to_string();
                *review.served_by.entry(served_by).or_default() += 1;
                if let Some(reason) = data["reason"].as_str() {
                    *review.reasons.entry(reason.to_string()).or_default() += 1;
                }
                let fraud = data["outputs"]["fraud"].as_f64().unwrap_or(1.0);
                let flagged = fraud >= shop::FRAUD_THRESHOLD;
                if flagged {
                    review.flagged += 1;
                } else {
                    review.approved += 1;
                }
                let stolen =
                    shop::order_number(input).is_some_and(|n| shop::buyer(n) == Buyer::StolenCard);
                if flagged != stolen {
                    review.misjudged += 1;
                }
                if data["inputs"]["orders_1h"].as_f64().unwrap_or(0.0) > 0.0 {
                    review.with_history += 1;
                }
            }
        }
        api.post(ack, &json!({"receipts": receipts}))?;
    }
    Ok(())
}

/// The three step services' state, shared with the summary.
#[derive(Default)]
pub struct Shop {
    pub inventory: Mutex<StepState<Inventory>>,
    pub payments: Mutex<StepState<Payments>>,
    pub shipping: Mutex<StepState<Shipping>>,
    pub review: Mutex<Review>,
}

/// The step services: group, the command types it takes.
pub const STEP_GROUPS: [(&str, &str); 3] = [
    ("inventory-service", "inventory.*.requested"),
    ("payment-service", "payment.*.requested"),
    ("shipping-service", "shipping.*.requested"),
];

/// Starts the step services and the review, each on a thread of its own.
pub fn start(
    api: &Api,
    shop: &Arc<Shop>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<anyhow::Result<()>>>> {
    for (group, filter) in STEP_GROUPS {
        create_group(api, group, filter)?;
    }
    create_group(api, "fraud-review", "fraud.scored")?;
    let mut threads = Vec::new();
    let spawn = |name: &str, run: Box<dyn FnOnce() -> anyhow::Result<()> + Send>| {
        std::thread::Builder::new()
            .name(format!("demo-{name}"))
            .spawn(run)
    };
    {
        let (api, shop, stop) = (api.clone(), shop.clone(), stop.clone());
        threads.push(spawn(
            "inventory",
            Box::new(move || {
                run_step_service(&api, "inventory-service", &shop.inventory, inventory, &stop)
            }),
        )?);
    }
    {
        let (api, shop, stop) = (api.clone(), shop.clone(), stop.clone());
        threads.push(spawn(
            "payment",
            Box::new(move || {
                run_step_service(&api, "payment-service", &shop.payments, payments, &stop)
            }),
        )?);
    }
    {
        let (api, shop, stop) = (api.clone(), shop.clone(), stop.clone());
        threads.push(spawn(
            "shipping",
            Box::new(move || {
                run_step_service(&api, "shipping-service", &shop.shipping, shipping, &stop)
            }),
        )?);
    }
    {
        let (api, shop, stop) = (api.clone(), shop.clone(), stop.clone());
        threads.push(spawn(
            "review",
            Box::new(move || run_review(&api, &shop.review, &stop)),
        )?);
    }
    Ok(threads)
}
