//! Online feature store lookups, in process, over the embedded backend: `FeatureStore::get`
//! of a present key, with and without the in-process cache. Criterion measures the mean; each
//! lookup is also timed on its own and the p50/p99 of those are printed (the target is a p99
//! of at most 100 µs for a present key).
//!
//! `cargo bench -p runnel-stages --bench feature_store`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use runnel_backend::Backend;
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_stages::{FeatureStore, FeatureValue};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: usize = 10_000;

fn value(i: usize) -> FeatureValue {
    let mut values = serde_json::Map::new();
    values.insert("payments".into(), serde_json::json!(i % 17));
    values.insert("spent".into(), serde_json::json!(i * 3));
    values.insert("average".into(), serde_json::json!(12.5));
    FeatureValue {
        values,
        window_start: 0,
        window_end: 600_000_000,
        revision: 1,
        watermark: Some(600_000_000),
        updated_at: 1,
    }
}

fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[rank]
}

fn lookups(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let backend: Arc<dyn Backend> = runtime.block_on(async {
        Arc::new(
            EmbeddedBackend::open(EmbeddedConfig::new(dir.path()))
                .await
                .expect("open the embedded backend"),
        )
    });
    let plain = FeatureStore::new(backend.clone());
    runtime.block_on(async {
        for i in 0..KEYS {
            plain
                .put("card_spend", &format!("card-{i}"), &value(i))
                .await
                .expect("put");
        }
    });
    let cached = FeatureStore::new(backend.clone())
        .with_cache(runnel_clock::system(), Duration::from_secs(1));
    for (name, store) in [("uncached", &plain), ("cached", &cached)] {
        let mut samples = Vec::with_capacity(200_000);
        c.bench_function(&format!("feature_store_get_present_{name}"), |b| {
            let mut i = 0usize;
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        i = (i + 7919) % KEYS;
                        let key = format!("card-{i}");
                        let start = Instant::now();
                        let got = store.get("card_spend", &key).await.expect("get");
                        let took = start.elapsed();
                        assert!(got.is_some());
                        total += took;
                        if samples.len() < 200_000 {
                            samples.push(took);
                        }
                    }
                    total
                })
            })
        });
        let p50 = percentile(&mut samples, 0.50);
        let p99 = percentile(&mut samples, 0.99);
        println!(
            "feature_store_get_present_{name}: {} lookups, p50 {p50:?}, p99 {p99:?}",
            samples.len()
        );
    }
}

criterion_group!(benches, lookups);
criterion_main!(benches);
