//! A real crash test of the log: a child process appends with `fsync = always` and reports
//! every acknowledged record; it is killed with SIGKILL at random moments. After each kill the
//! log is reopened and every acknowledged record must read back byte for byte, densely.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::Rng;
use runnel_log::{FsyncPolicy, LogConfig, PartitionLog};

const CYCLES: usize = 24;

#[test]
fn every_acknowledged_record_survives_sigkill_over_many_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("partition");
    // offset -> (length, crc32c) as acknowledged by some child
    let mut acked: BTreeMap<u64, (usize, u32)> = BTreeMap::new();
    let mut rng = rand::rng();
    let mut kills_mid_stream = 0;
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["__log-writer", "--fsync", "always", "--max-value", "3000"])
            // Small segments so kills also land around segment rolls.
            .args(["--segment-bytes", "65536", "--seed"])
            .arg(cycle.to_string())
            .arg("--dir")
            .arg(&log_dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the writer");
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        let pump = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let ready = lines_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ready line");
        assert!(ready.starts_with("ready"), "{ready}");
        std::thread::sleep(Duration::from_millis(rng.random_range(5..120)));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        pump.join().unwrap();
        let mut this_cycle = 0;
        for line in lines_rx.try_iter() {
            let mut parts = line.split(' ');
            let (Some(offset), Some(len), Some(crc)) = (parts.next(), parts.next(), parts.next())
            else {
                continue; // the last line may be cut by the kill
            };
            let (Ok(offset), Ok(len), Ok(crc)) = (offset.parse(), len.parse(), crc.parse()) else {
                continue;
            };
            acked.insert(offset, (len, crc));
            this_cycle += 1;
        }
        if this_cycle > 0 {
            kills_mid_stream += 1;
        }

        let cfg = LogConfig {
            fsync: FsyncPolicy::Always,
            segment_bytes: 65_536,
            ..LogConfig::default()
        };
        let (log, report) = PartitionLog::open(&log_dir, cfg).expect("reopen after SIGKILL");
        assert!(report.corrupt_segments.is_empty(), "{report:?}");
        let high = log.high_watermark();
        let max_acked = acked.keys().next_back().copied();
        assert!(
            max_acked.is_none_or(|max| high > max),
            "cycle {cycle}: high watermark {high} below acknowledged offset {max_acked:?}"
        );
        let mut reader = log.reader(0).unwrap();
        let mut expected_offset = 0;
        loop {
            let batch = reader.read(1_000, usize::MAX).expect("read back");
            if batch.is_empty() {
                break;
            }
            for record in batch {
                assert_eq!(record.offset, expected_offset, "offsets stay dense");
                expected_offset += 1;
                if let Some((len, crc)) = acked.get(&record.offset) {
                    assert_eq!(record.value.len(), *len, "offset {}", record.offset);
                    assert_eq!(
                        crc32c::crc32c(&record.value),
                        *crc,
                        "offset {}",
                        record.offset
                    );
                }
            }
        }
        assert_eq!(expected_offset, high);
        // Acknowledged records from earlier cycles are never rewritten: a later writer only
        // appends after the high watermark it found.
    }
    assert!(
        acked.len() > 100,
        "only {} records acknowledged",
        acked.len()
    );
    assert!(
        kills_mid_stream >= CYCLES / 2,
        "{kills_mid_stream} kills landed mid-stream"
    );
}
