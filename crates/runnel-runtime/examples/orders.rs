//! Replace `charge(); email(); reserve();` with one published event and independent consumer
//! groups. Run with `cargo run -p runnel-runtime --example orders`.
//!
//! An `order.placed` event is published per order; the `payments` group charges each order and
//! publishes `payment.charged` as a reply to the order (its id derived from the group and the
//! order's, so a retry cannot charge twice); the `emails` group is independent of it. Both see every order, each at its own pace.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_runtime::{HandlerError, Runnel, RuntimeConfig, TypedEvent};
use serde::Serialize;
use serde_json::json;

#[derive(Serialize)]
struct OrderPlaced {
    order_id: String,
    customer: String,
    total_cents: u64,
}

impl TypedEvent for OrderPlaced {
    const EVENT_TYPE: &'static str = "order.placed";
    const SCHEMA_VERSION: u32 = 1;

    fn partition_key(&self) -> Option<String> {
        // All events of one customer stay in order.
        Some(self.customer.clone())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let backend = EmbeddedBackend::open(EmbeddedConfig::new(dir.path())).await?;
    let runnel = Runnel::open(RuntimeConfig::default(), Arc::new(backend));

    for n in 0..100u64 {
        let order = OrderPlaced {
            order_id: format!("o-{n}"),
            customer: format!("c-{}", n % 10),
            total_cents: 1_000 + n,
        };
        runnel.publish_typed(&order).await?;
    }

    let charged = Arc::new(AtomicU64::new(0));
    let count = charged.clone();
    let payments = runnel
        .group("payments")
        .subscribe("order.placed")
        .run(move |message| {
            let count = count.clone();
            async move {
                let order = message.event.data().as_json().cloned().unwrap_or_default();
                count.fetch_add(1, Ordering::Relaxed);
                let charged =
                    message.reply("payment.charged", json!({ "order_id": order["order_id"] }))?;
                Ok(vec![charged])
            }
        })
        .await?;

    let emailed = Arc::new(AtomicU64::new(0));
    let count = emailed.clone();
    let emails = runnel
        .group("emails")
        .subscribe("order.*")
        .run(move |_message| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                Ok::<_, HandlerError>(vec![])
            }
        })
        .await?;

    while charged.load(Ordering::Relaxed) < 100 || emailed.load(Ordering::Relaxed) < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    payments.stop().await?;
    emails.stop().await?;
    for group in ["payments", "emails"] {
        let lag = runnel.lag(group).await?;
        println!("{group}: lag {} events", lag.total_events);
    }
    let payments_stream = runnel_backend::StreamName::new("payment")?;
    let published: u64 = runnel
        .backend()
        .describe_stream(&payments_stream)
        .await?
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .sum();
    println!("charged 100 orders, emailed 100, published {published} payment.charged events");
    Ok(())
}
