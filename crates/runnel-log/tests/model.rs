//! Model-based property test: the log against a `Vec` of records, through random batches,
//! reads by offset and by time, retention, and close/reopen.

use std::time::Duration;

use proptest::prelude::*;
use runnel_clock::{Clock, ManualClock};
use runnel_log::{FsyncPolicy, LogConfig, PartitionLog, Record, Retention, StoredRecord};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<(Vec<u8>, Vec<u8>, u8)>),
    Tick(u64),
    Read { at: u16, max: u8 },
    ReadTime { at: u16, nudge: u8 },
    RetainBytes(u16),
    RetainAge(u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        prop::collection::vec(any::<u8>(), 0..12),
        prop::collection::vec(any::<u8>(), 0..300),
        0u8..3,
    );
    prop_oneof![
        6 => prop::collection::vec(record, 1..12).prop_map(Op::Append),
        2 => (0u64..5_000).prop_map(Op::Tick),
        3 => (any::<u16>(), 1u8..40).prop_map(|(at, max)| Op::Read { at, max }),
        2 => (any::<u16>(), 0u8..3).prop_map(|(at, nudge)| Op::ReadTime { at, nudge }),
        1 => (512u16..8_000).prop_map(Op::RetainBytes),
        1 => (0u16..20_000).prop_map(Op::RetainAge),
        1 => Just(Op::Reopen),
    ]
}

struct Model {
    records: Vec<StoredRecord>,
    start: u64,
}

fn config(clock: &ManualClock, policy: FsyncPolicy, retention: Retention) -> LogConfig {
    LogConfig {
        segment_bytes: 2_048,
        index_interval_bytes: 97,
        fsync: policy,
        retention,
        clock: clock.shared(),
        ..LogConfig::default()
    }
}

fn to_record((key, value, headers): &(Vec<u8>, Vec<u8>, u8)) -> Record {
    let mut record = Record::new(key.clone(), value.clone());
    for h in 0..*headers {
        record = record.with_header(format!("h{h}"), vec![h; h as usize]);
    }
    record
}

fn read_all_from(log: &PartitionLog, from: u64) -> Vec<StoredRecord> {
    let mut reader = log.reader(from).expect("reader");
    let mut out = Vec::new();
    loop {
        let batch = reader.read(17, usize::MAX).expect("read");
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

fn run(ops: Vec<Op>, policy: FsyncPolicy) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new(1_700_000_000_000_000);
    let mut retention = Retention::default();
    let open = |retention: Retention| {
        PartitionLog::open(dir.path(), config(&clock, policy, retention))
            .expect("open")
            .0
    };
    let mut log = open(retention);
    let mut model = Model {
        records: Vec::new(),
        start: 0,
    };
    let mut last_ts = 0;
    for op in ops {
        match op {
            Op::Append(batch) => {
                let records: Vec<Record> = batch.iter().map(to_record).collect();
                let appended = log.append_blocking(records.clone()).expect("append");
                let ts = clock.now_micros().max(last_ts);
                last_ts = ts;
                assert_eq!(
                    appended.base_offset,
                    model.start + model.records.len() as u64
                );
                assert_eq!(appended.timestamp, ts);
                for (i, record) in records.into_iter().enumerate() {
                    model.records.push(StoredRecord {
                        offset: appended.base_offset + i as u64,
                        timestamp: ts,
                        key: record.key,
                        value: record.value,
                        headers: record.headers,
                    });
                }
            }
            Op::Tick(ms) => clock.advance(Duration::from_millis(ms)),
            Op::Read { at, max } => {
                let len = model.records.len() as u64;
                let from = model.start + if len == 0 { 0 } else { at as u64 % (len + 1) };
                let mut reader = log.reader(from).expect("reader");
                let got = reader.read(max as usize, usize::MAX).expect("read");
                let skip = (from - model.start) as usize;
                let want: Vec<_> = model.records[skip..]
                    .iter()
                    .take(max as usize)
                    .cloned()
                    .collect();
                assert_eq!(got, want);
            }
            Op::ReadTime { at, nudge } => {
                // Aim at a stored timestamp, just before it, or just after it.
                let len = model.records.len();
                let around = if len == 0 {
                    last_ts
                } else {
                    model.records[at as usize % len].timestamp
                };
                let target = (around + nudge as u64).saturating_sub(1);
                let want = model
                    .records
                    .iter()
                    .find(|r| r.timestamp >= target)
                    .map_or(model.start + model.records.len() as u64, |r| r.offset);
                assert_eq!(log.offset_for_time(target).expect("time"), want);
            }
            Op::RetainBytes(max) => {
                retention = Retention {
                    max_bytes: Some(max as u64),
                    max_age: None,
                };
                drop(log);
                log = open(retention);
                let before = log.segment_count();
                let report = log.enforce_retention().expect("retention");
                assert!(log.size_bytes() <= max as u64 || log.segment_count() == 1);
                assert_eq!(before - report.removed_segments, log.segment_count());
                apply_start(&mut model, report.start_offset);
            }
            Op::RetainAge(ms) => {
                retention = Retention {
                    max_bytes: None,
                    max_age: Some(Duration::from_millis(ms as u64)),
                };
                drop(log);
                log = open(retention);
                let report = log.enforce_retention().expect("retention");
                let cutoff = clock.now_micros().saturating_sub(ms as u64 * 1_000);
                // Whatever was removed was entirely older than the cutoff.
                assert!(
                    model
                        .records
                        .iter()
                        .filter(|r| r.offset < report.start_offset)
                        .all(|r| r.timestamp < cutoff)
                );
                apply_start(&mut model, report.start_offset);
            }
            Op::Reopen => {
                drop(log);
                let (reopened, report) =
                    PartitionLog::open(dir.path(), config(&clock, policy, retention))
                        .expect("reopen");
                assert_eq!(
                    report.truncated_bytes, 0,
                    "a clean close leaves no torn tail"
                );
                assert!(report.rebuilt_indexes.is_empty(), "{report:?}");
                log = reopened;
            }
        }
        assert_eq!(log.start_offset(), model.start);
        assert_eq!(
            log.high_watermark(),
            model.start + model.records.len() as u64
        );
    }
    assert_eq!(read_all_from(&log, model.start), model.records);
}

fn apply_start(model: &mut Model, start: u64) {
    assert!(start >= model.start);
    assert!(start <= model.start + model.records.len() as u64);
    model.records.drain(..(start - model.start) as usize);
    model.start = start;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_with_os_policy(ops in prop::collection::vec(op(), 1..60)) {
        run(ops, FsyncPolicy::Os);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model_with_group_commit(ops in prop::collection::vec(op(), 1..30)) {
        run(ops, FsyncPolicy::group());
    }
}

#[test]
fn keys_values_and_headers_survive_byte_for_byte() {
    let ops = vec![
        Op::Append(vec![(vec![0, 255], vec![1; 1000], 2), (vec![], vec![], 0)]),
        Op::Reopen,
        Op::Read { at: 0, max: 10 },
    ];
    run(ops, FsyncPolicy::Os);
}
