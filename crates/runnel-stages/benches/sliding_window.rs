//! Events per second through a 10-minute sliding window with a 1-minute slide, 100,000 keys,
//! count + sum + mean + distinct, on decoded records (the operator alone: no I/O, no JSON).
//!
//! Each iteration feeds one more minute of event time to a stage that already holds ten
//! minutes of state (steady state: every key has about ten open windows), advancing after
//! every batch of 10,000 events as the integration does after each fetch; a minute boundary
//! fires 100,000 windows, each merged from ten panes. Two densities: 10 events per key per
//! minute (1,000,000 events per iteration) and 2 (200,000, so five times more windows per
//! event). Before measuring, the bench prints the state held per key per open window.
//!
//! `cargo bench -p runnel-stages --bench sliding_window`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runnel_stages::{
    AggregateKind, AggregateSpec, FeatureSpec, FeatureStage, FieldValue, HumanDuration, Record,
    WindowSpec,
};

// The allocator of the `runnel` binary, which runs the stage in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const KEYS: u64 = 100_000;
const MINUTE: i64 = 60_000_000;
const PARTITIONS: u32 = 4;
const BATCH: usize = 10_000;

fn spec() -> FeatureSpec {
    FeatureSpec {
        name: "card_spend".into(),
        input: "payment.charged".into(),
        key: Default::default(),
        time: Default::default(),
        window: WindowSpec::Sliding {
            size: HumanDuration::from_mins(10),
            slide: HumanDuration::from_mins(1),
        },
        max_out_of_orderness: HumanDuration::from_secs(5),
        allowed_lateness: HumanDuration::ZERO,
        idle_timeout: HumanDuration::from_mins(1),
        aggregates: vec![
            AggregateSpec::new("payments", AggregateKind::Count, None),
            AggregateSpec::new("spent", AggregateKind::Sum, Some("/amount")),
            AggregateSpec::new("average", AggregateKind::Mean, Some("/amount")),
            AggregateSpec::new("merchants", AggregateKind::Distinct, Some("/merchant")),
        ],
        output: "feature.computed".parse().expect("a valid type"),
        late_stream: None,
    }
}

/// One minute of events (times within `[0, 1 min)`, in order up to a 2 s jitter), with the
/// partition of each key.
fn minute_of_events(per_key: u64, rng: &mut StdRng) -> Vec<(u32, Record)> {
    let count = (KEYS * per_key) as usize;
    let mut events = Vec::with_capacity(count);
    for i in 0..count {
        let key = rng.random_range(0..KEYS);
        let base = (i as i64) * MINUTE / count as i64;
        let jitter = rng.random_range(0..2_000_000);
        let time = (base - jitter).clamp(0, MINUTE - 1);
        events.push((
            (key % u64::from(PARTITIONS)) as u32,
            Record {
                key: format!("card-{key:06}"),
                event_time: time,
                values: vec![
                    FieldValue::Int(rng.random_range(1..10_000)),
                    FieldValue::Int(rng.random_range(0..50)),
                ],
                correlation: Some(format!("{:032x}", rng.random::<u128>())),
            },
        ));
    }
    events
}

struct Feed {
    stage: FeatureStage,
    events: Vec<(u32, Record)>,
    minute: i64,
    offsets: [u64; PARTITIONS as usize],
    results: u64,
}

impl Feed {
    fn new(per_key: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(7);
        Self {
            stage: FeatureStage::new(spec(), 0..PARTITIONS, 0).expect("a valid spec"),
            events: minute_of_events(per_key, &mut rng),
            minute: 0,
            offsets: [0; PARTITIONS as usize],
            results: 0,
        }
    }

    /// Moves the prepared events to the next minute (not timed).
    fn shift(&mut self) {
        let by = if self.minute == 0 { 0 } else { MINUTE };
        for (_, record) in &mut self.events {
            record.event_time += by;
        }
        self.minute += 1;
    }

    /// Feeds the prepared minute (timed).
    fn feed(&mut self) -> Duration {
        let start = Instant::now();
        for (i, (partition, record)) in self.events.iter().enumerate() {
            let offset = &mut self.offsets[*partition as usize];
            let outcome = self.stage.process(*partition, *offset, record);
            black_box(&outcome);
            *offset += 1;
            if i % BATCH == BATCH - 1 {
                self.results += self.stage.advance((self.minute * MINUTE) as u64).len() as u64;
            }
        }
        self.results += self.stage.advance((self.minute * MINUTE) as u64).len() as u64;
        start.elapsed()
    }
}

fn sliding_window(c: &mut Criterion) {
    let mut group = c.benchmark_group("sliding_window_10m_1m_100k_keys");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(30));
    for per_key in [10u64, 2] {
        let mut feed = Feed::new(per_key);
        for _ in 0..11 {
            feed.shift();
            feed.feed();
        }
        let stats = feed.stage.stats();
        let snapshot = feed.stage.snapshot().map(|s| s.len()).unwrap_or(0);
        eprintln!(
            "{per_key} events/key/min: {} keys, {} pane rows, {} open windows; memory {} B \
             = {:.1} B per key per open window; snapshot {} B = {:.1} B per key per open window",
            stats.keys,
            stats.rows,
            stats.open_windows,
            stats.state_bytes,
            stats.state_bytes as f64 / stats.open_windows.max(1) as f64,
            snapshot,
            snapshot as f64 / stats.open_windows.max(1) as f64,
        );
        group.throughput(Throughput::Elements(feed.events.len() as u64));
        group.bench_function(format!("{per_key}_events_per_key_per_minute"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    feed.shift();
                    total += feed.feed();
                }
                total
            })
        });
        eprintln!("{} results emitted", feed.results);
    }
    group.finish();
}

criterion_group!(benches, sliding_window);
criterion_main!(benches);
