//! The demo's shop: its orders, its pipeline as configuration, and what a run must add up to.
//!
//! Everything here is a function of the order number `n`, so the figures a run must reach are
//! known before it starts:
//! - every 40th order (n % 40 == 23) is a guest checkout of 1,500–4,000 with a stolen card:
//!   the model scores it far above the threshold (so does the fallback rule, and a guest has
//!   no cached prediction), so no saga starts for it;
//! - every 10th other order (n % 10 == 3) is an ordinary guest checkout; the rest come from
//!   50 regular customers (`customer-<n % 50>`), one order every 20 s of event time, so a
//!   regular customer places about 4 orders an hour: far below what the model flags;
//! - the order saga fails on purpose for some approved orders: out of stock at reserve
//!   (n % 50 == 11), card declined at charge (n % 50 == 29), shipping never answers
//!   (n % 100 == 47, the step times out). These sets do not meet each other or the stolen cards.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Value, json};

/// The order events' event time starts here (2026-01-01T00:00:00Z), one order every
/// [`ORDER_SPACING_SECS`].
pub const ORDERS_START_SECS: i64 = 1_767_225_600;
/// Event time between two orders.
pub const ORDER_SPACING_SECS: i64 = 20;
/// Regular customers.
pub const CUSTOMERS: u64 = 50;
/// A prediction with `outputs.fraud` at or above this is flagged; below it the order saga
/// starts (the saga's trigger condition says the same).
pub const FRAUD_THRESHOLD: f64 = 0.5;

/// Who placed order `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buyer {
    /// One of the regular customers.
    Regular,
    /// A one-off guest checkout.
    Guest,
    /// A guest checkout of a large amount with a stolen card.
    StolenCard,
}

pub fn buyer(n: u64) -> Buyer {
    if n % 40 == 23 {
        Buyer::StolenCard
    } else if n % 10 == 3 {
        Buyer::Guest
    } else {
        Buyer::Regular
    }
}

/// The customer (the partition key, the features' and the model's entity).
pub fn customer(n: u64) -> String {
    match buyer(n) {
        Buyer::Regular => format!("customer-{}", n % CUSTOMERS),
        Buyer::Guest | Buyer::StolenCard => format!("guest-{n}"),
    }
}

pub fn amount_cents(n: u64) -> u64 {
    match buyer(n) {
        Buyer::StolenCard => 150_000 + (n * 7919) % 250_000,
        _ => 500 + (n * 7919) % 14_500,
    }
}

/// Units the order asks for (what the inventory service reserves).
pub fn items(n: u64) -> u64 {
    1 + n % 3
}

/// How the order saga is made to fail for order `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaFailure {
    /// The inventory service has none left: the reserve step fails.
    OutOfStock,
    /// The payment service declines the card: the charge step fails, the reservation is
    /// released.
    CardDeclined,
    /// The shipping service never answers: both attempts of the ship step time out, the
    /// payment is refunded and the reservation released.
    ShipTimeout,
}

pub fn saga_failure(n: u64) -> Option<SagaFailure> {
    if n % 50 == 11 {
        Some(SagaFailure::OutOfStock)
    } else if n % 50 == 29 {
        Some(SagaFailure::CardDeclined)
    } else if n % 100 == 47 {
        Some(SagaFailure::ShipTimeout)
    } else {
        None
    }
}

/// Order `n` as a CloudEvent, keyed by customer.
pub fn order(n: u64) -> Value {
    let customer = customer(n);
    let cents = amount_cents(n);
    let time =
        DateTime::<Utc>::from_timestamp(ORDERS_START_SECS + ORDER_SPACING_SECS * n as i64, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Secs, true);
    json!({
        "specversion": "1.0",
        "id": format!("order-{n}"),
        "source": "/demo/shop",
        "type": "order.placed",
        "time": time,
        "partitionkey": customer,
        "data": {
            "n": n,
            "order_id": format!("ord-{n:06}"),
            "customer": customer,
            "amount_cents": cents,
            "amount": cents as f64 / 100.0,
            "merchant": format!("merchant-{}", n % 37),
            "items": items(n),
            "email": format!("{customer}@example.com"),
        },
    })
}

/// The order number of an order event id (`order-17` → 17).
pub fn order_number(id: &str) -> Option<u64> {
    id.strip_prefix("order-")?.parse().ok()
}

/// The phases of a run: orders `0..slow_from` with the model well, `slow_from..slow_until`
/// while it is slow, the rest after it recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Phases {
    pub slow_from: u64,
    pub slow_until: u64,
}

impl Phases {
    pub fn of(events: u64) -> Self {
        Self {
            slow_from: events * 2 / 5,
            slow_until: events * 3 / 5,
        }
    }
}

/// What a run of `events` orders must add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// Predictions the model answers: every order outside the slow phase.
    pub model: u64,
    /// Orders of the slow phase whose customer had a prediction from the model before it.
    pub cache: u64,
    /// The other orders of the slow phase (guests, customers not seen yet).
    pub fallback: u64,
    /// Orders flagged as fraud (stolen cards): no saga.
    pub flagged: u64,
    /// Orders approved: one saga each.
    pub approved: u64,
    pub completed: u64,
    pub compensated: u64,
    pub stuck: u64,
    pub out_of_stock: u64,
    pub card_declined: u64,
    pub ship_timeout: u64,
}

impl Expected {
    pub fn of(events: u64) -> Self {
        let phases = Phases::of(events);
        let seen: HashSet<String> = (0..phases.slow_from)
            .filter(|&n| buyer(n) == Buyer::Regular)
            .map(customer)
            .collect();
        let slow = phases.slow_from..phases.slow_until;
        let cache = slow
            .clone()
            .filter(|&n| buyer(n) == Buyer::Regular && seen.contains(&customer(n)))
            .count() as u64;
        let flagged = (0..events)
            .filter(|&n| buyer(n) == Buyer::StolenCard)
            .count() as u64;
        let failing = |kind| {
            (0..events)
                .filter(|&n| saga_failure(n) == Some(kind))
                .count() as u64
        };
        let out_of_stock = failing(SagaFailure::OutOfStock);
        let card_declined = failing(SagaFailure::CardDeclined);
        let ship_timeout = failing(SagaFailure::ShipTimeout);
        let approved = events - flagged;
        let compensated = out_of_stock + card_declined + ship_timeout;
        Self {
            model: events - (slow.end - slow.start),
            cache,
            fallback: (slow.end - slow.start) - cache,
            flagged,
            approved,
            completed: approved - compensated,
            compensated,
            stuck: 0,
            out_of_stock,
            card_declined,
            ship_timeout,
        }
    }
}

/// The feature set and the order saga, as a user writes them in `runnel.toml`.
pub const PIPELINE_TOML: &str = r#"
# Each customer's last hour of orders, recomputed every 30 minutes of event time.
[[features]]
name = "customer_1h"
input = "order.placed"
window = { kind = "sliding", size = "1h", slide = "30m" }
max_out_of_orderness = "1m"
output = "customer.features_computed"
aggregates = [
  { name = "orders", kind = "count" },
  { name = "spent", kind = "sum", field = "/amount" },
  { name = "mean", kind = "mean", field = "/amount" },
  { name = "merchants", kind = "distinct", field = "/merchant" },
]

# Reserve → charge → ship, started by an approved fraud score.
[[sagas]]
name = "order"
trigger = { type = "fraud.scored", condition = "outputs.fraud < 0.5" }

[[sagas.steps]]
name = "reserve"
command = "inventory.reserve.requested"
success = "inventory.reserved"
failure = "inventory.reservation_failed"
timeout = "20s"
compensation = { command = "inventory.release.requested", success = "inventory.released", backoff = ["200ms"] }

[[sagas.steps]]
name = "charge"
command = "payment.charge.requested"
success = "payment.charged"
failure = "payment.declined"
timeout = "20s"
compensation = { command = "payment.refund.requested", success = "payment.refunded", backoff = ["200ms"] }

[[sagas.steps]]
name = "ship"
command = "shipping.ship.requested"
success = "shipping.shipped"
timeout = "6s"
max_attempts = 2
backoff = ["200ms"]
"#;

/// The fraud model (`models/fraud_lr.onnx`, inputs as `scripts/train_fraud_model.py` trained
/// it), as a `[[models]]` table. The demo loads the file's bytes built into the binary.
pub const MODEL_TOML: &str = r#"
name = "fraud"
input = "order.placed"
output = "fraud.scored"
version = "fraud_lr"
outputs = ["legit", "fraud"]
inputs = [
  { name = "amount", pointer = "/amount" },
  { name = "orders_1h", feature = "customer_1h.orders", default = 0 },
  { name = "spent_1h", feature = "customer_1h.spent", default = 0 },
  { name = "mean_1h", feature = "customer_1h.mean", default = 0 },
  { name = "merchants_1h", feature = "customer_1h.merchants", default = 0 },
]
fallback = { legit = "if(amount > 1000, 0.1, 0.97)", fraud = "if(amount > 1000, 0.9, 0.03)" }
max_batch = 64
timeout = "500ms"
deadline = "1500ms"
breaker = { sliding_window = 10, minimum_calls = 4, open_duration = "1s", permitted_calls_in_half_open = 1, slow_call_duration = "400ms", max_wait_in_half_open = "10s" }
"#;

/// The shipped logistic regression.
pub const FRAUD_MODEL_ONNX: &[u8] = include_bytes!("../../../../models/fraud_lr.onnx");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_injected_failures_never_meet_each_other_or_a_stolen_card() {
        for n in 0..10_000 {
            if buyer(n) == Buyer::StolenCard {
                assert_eq!(saga_failure(n), None, "order {n}");
                assert!(amount_cents(n) >= 150_000, "order {n}");
            } else {
                assert!(amount_cents(n) <= 15_000, "order {n}");
            }
        }
    }

    #[test]
    fn expected_figures_add_up() {
        for events in [0, 1, 10, 300, 10_000] {
            let e = Expected::of(events);
            assert_eq!(e.model + e.cache + e.fallback, events);
            assert_eq!(e.flagged + e.approved, events);
            assert_eq!(e.completed + e.compensated + e.stuck, e.approved);
        }
        let e = Expected::of(300);
        assert_eq!(
            (e.flagged, e.out_of_stock, e.card_declined, e.ship_timeout),
            (7, 6, 6, 3)
        );
    }

    #[test]
    fn the_pipeline_and_the_model_tables_are_valid() {
        let config = crate::config::RunnelConfig::layered(
            Some((std::path::Path::new("demo"), PIPELINE_TOML)),
            Vec::new(),
        )
        .expect("the pipeline tables parse");
        config.validate().expect("the pipeline table is valid");
        let spec: runnel_inference::ModelSpec =
            toml::from_str(MODEL_TOML).expect("the model table parses");
        spec.validate_without_runner()
            .expect("the model table is valid");
    }
}
