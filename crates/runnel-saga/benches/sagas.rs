//! Three-step sagas (reserve → charge → ship) run in process over the embedded backend with
//! `group` fsync, against in-process step services (consumer groups that reply at once):
//! sagas completed per second with a backlog of `SAGAS`, then the p50/p99 saga duration
//! (start to outcome) at a fixed rate. Prints one JSON line per measurement.
//!
//! `cargo bench -p runnel-saga --bench sagas` (targets: ≥ 5,000 sagas/s, p50 ≤ 10 ms)

use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use runnel_backend::Backend;
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig, FsyncPolicy};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{GroupConfig, Message, Runnel, RuntimeConfig, TypePattern};
use runnel_saga::{
    SagaDriver, SagaOptions, SagaQuery, SagaSpec, SagaState, Sagas, StepSpec, TriggerSpec,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SAGAS: usize = 5_000;
const RATE: usize = 200;
const RATE_SECONDS: usize = 5;

fn completed(metrics: &PrometheusHandle) -> usize {
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with("runnel_saga_completed_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as usize)
}

fn order(n: usize) -> Event {
    Event::builder(
        EventType::new("order.placed").unwrap(),
        Source::new("bench://shop").unwrap(),
    )
    .partition_key(format!("order-{n}"))
    .data_json(serde_json::json!({ "order": n, "items": 2, "amount": 300 }))
    .build()
    .unwrap()
}

async fn wait_completed(metrics: &PrometheusHandle, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while completed(metrics) < want {
        assert!(
            Instant::now() < deadline,
            "only {} of {want} completed",
            completed(metrics)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(samples: &mut [u64], q: f64) -> f64 {
    samples.sort_unstable();
    samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
}

/// Durations (µs) of completed instances in order of start, the first `skip` left out.
async fn durations_ms(sagas: &Sagas, skip: usize) -> Vec<u64> {
    let query = SagaQuery {
        state: Some(SagaState::Completed),
        ..SagaQuery::default()
    };
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = sagas
            .list(&SagaQuery {
                saga: Some("order".into()),
                after: after.clone(),
                ..query.clone()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|i| i.id.clone());
        all.extend(
            page.iter()
                .filter_map(|i| Some((i.started_at, i.ended_at? - i.started_at))),
        );
    }
    all.sort_unstable();
    all.into_iter().skip(skip).map(|(_, d)| d).collect()
}

fn main() {
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .expect("a recorder");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let config = EmbeddedConfig {
            fsync: FsyncPolicy::group(),
            ..EmbeddedConfig::new(dir.path())
        };
        let backend = EmbeddedBackend::open(config).await.unwrap();
        let runnel = Runnel::open(
            RuntimeConfig::default(),
            Arc::new(backend) as Arc<dyn Backend>,
        );
        let steps = [
            ("reserve", "inventory"),
            ("charge", "payment"),
            ("ship", "shipping"),
        ];
        let saga = SagaSpec {
            name: "order".into(),
            trigger: TriggerSpec {
                event_type: "order.placed".into(),
                condition: None,
            },
            steps: steps
                .iter()
                .map(|(step, domain)| {
                    StepSpec::command(
                        step,
                        &format!("{domain}.{step}_requested"),
                        &format!("{domain}.{step}_done"),
                    )
                    .compensate(
                        &format!("{domain}.{step}_undo_requested"),
                        &format!("{domain}.{step}_undone"),
                    )
                })
                .collect(),
        }
        .validate()
        .unwrap();
        let mut services = Vec::new();
        for (step, domain) in steps {
            let command = format!("{domain}.{step}_requested");
            let done = format!("{domain}.{step}_done");
            let mut group = GroupConfig::new(
                format!("svc-{domain}"),
                TypePattern::new(format!("{domain}.>")).unwrap(),
            );
            group.max_in_flight = 512;
            group.processed_ids = false;
            let handle = runnel
                .group(format!("svc-{domain}"))
                .config(group)
                .run(move |message: Message| {
                    let reply = (message.event.event_type().as_str() == command)
                        .then(|| message.reply(&done, serde_json::json!({ "ok": true })));
                    async move { reply.transpose().map(|r| r.into_iter().collect()) }
                })
                .await
                .unwrap();
            services.push(handle);
        }
        let mut group = GroupConfig::new("unused", TypePattern::new("order.placed").unwrap());
        group.max_in_flight = 512;
        let options = SagaOptions {
            group: Some(group),
            ..SagaOptions::default()
        };
        let driver = SagaDriver::start(&runnel, saga.clone(), options)
            .await
            .unwrap();
        let sagas = Sagas::new(&runnel, vec![saga]).unwrap();

        // Throughput: a backlog of SAGAS orders.
        let started = Instant::now();
        for chunk in (0..SAGAS).collect::<Vec<_>>().chunks(500) {
            runnel
                .publish_batch(chunk.iter().map(|&n| order(n)).collect())
                .await
                .unwrap();
        }
        wait_completed(&metrics, SAGAS).await;
        let seconds = started.elapsed().as_secs_f64();
        let mut backlog = durations_ms(&sagas, 0).await;
        println!(
            "{}",
            serde_json::json!({
                "bench": "sagas_backlog", "sagas": SAGAS, "steps": 3, "fsync": "group",
                "seconds": seconds, "sagas_per_second": SAGAS as f64 / seconds,
                "steps_per_second": 3.0 * SAGAS as f64 / seconds,
                "p50_ms": percentile(&mut backlog, 0.5), "p99_ms": percentile(&mut backlog, 0.99),
            })
        );

        // Latency at a fixed rate.
        let total = RATE * RATE_SECONDS;
        let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE as u32);
        for n in 0..total {
            tick.tick().await;
            runnel.publish(order(SAGAS + n)).await.unwrap();
        }
        wait_completed(&metrics, SAGAS + total).await;
        // The paced instances are the ones started last.
        let mut paced = durations_ms(&sagas, SAGAS).await;
        println!(
            "{}",
            serde_json::json!({
                "bench": "sagas_fixed_rate", "rate_per_second": RATE, "sagas": total, "steps": 3,
                "fsync": "group", "p50_ms": percentile(&mut paced, 0.5),
                "p99_ms": percentile(&mut paced, 0.99),
            })
        );
        driver.stop().await.unwrap();
        for service in services {
            service.stop().await.unwrap();
        }
    });
}
