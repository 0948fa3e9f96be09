//! Rows per second of the shipped fraud models in process (tract), one row per call and in
//! batches of 32 and 256, on the calling thread (no blocking-pool hop), so the figures are
//! tract's. `cargo bench -p runnel-inference --features onnx --bench onnx_rows`; do not set
//! `RUST_BACKTRACE` (tract's trees are several times slower with it).

use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runnel_inference::{OnnxModel, OnnxOptions};

fn rows(n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| {
            let orders = (i % 5 + 1) as f64;
            let amount = 5.0 + (i * 37 % 400) as f64;
            vec![amount, orders, amount * orders, amount, (i % 3 + 1) as f64]
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let models = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    let mut group = c.benchmark_group("onnx_rows");
    for file in ["fraud_lr.onnx", "fraud_rf.onnx"] {
        let model = OnnxModel::load(
            models.join(file),
            OnnxOptions {
                name: "fraud".into(),
                version: None,
                inputs: 5,
                output: "probabilities".into(),
                outputs: vec!["legit".into(), "fraud".into()],
            },
        )
        .expect("the shipped model loads");
        for batch in [1usize, 32, 256] {
            let input = rows(batch);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(file, batch), &input, |b, input| {
                b.iter(|| model.predict_blocking(input).expect("scores"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
