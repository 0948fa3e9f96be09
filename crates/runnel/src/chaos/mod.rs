//! `runnel chaos`: the crash harness (issue #10).
//!
//! Unit tests and the log's own crash test prove pieces; this proves the whole server keeps
//! its promise when the process dies at an arbitrary instant. It runs `runnel serve` (this
//! binary, as a child) under publish and consume load, kills it with SIGKILL at random moments
//! and restarts it, and at the end checks what clients were told against what they got:
//! every event answered 202 reached every group, no offset was skipped, dead-letter entries
//! hold the events that were published. It also tears the tail of a segment while the server
//! is down and fills the disk under a running server. See `docs/RELIABILITY.md`.

mod disk;
mod load;
mod server;
mod verify;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use runnel_log::{LogConfig, PartitionLog};
use serde::Serialize;
use serde_json::json;

use self::disk::DiskFull;
use self::load::{GroupLoad, Published, STREAM};
use self::server::{ServerProc, Target};
use self::verify::{DlqSeen, GroupInput, GroupVerdict, PartitionSpan, Position};
use crate::api::Api;

/// Flags of `runnel chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 20)]
    pub cycles: u32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Seed of the random kill times and torn writes (printed; pass it to reproduce a run's
    /// schedule — thread timing still varies).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Publisher threads.
    #[arg(long, default_value_t = 3)]
    pub publishers: usize,
    /// Events per second over all publishers (0: as fast as the server answers).
    #[arg(long, default_value_t = 1000)]
    pub events_per_second: u32,
    /// Shortest time under load before a kill, in milliseconds.
    #[arg(long, default_value_t = 300)]
    pub min_up_ms: u64,
    /// Longest time under load before a kill, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub max_up_ms: u64,
    /// Tear the tail of a segment after every N-th kill (0: never).
    #[arg(long, default_value_t = 3)]
    pub torn_every: u32,
    /// Skip the disk-full phase (it mounts a tmpfs, which needs root).
    #[arg(long)]
    pub no_disk_full: bool,
    /// How long consumers may take to catch up after the last cycle, in seconds.
    #[arg(long, default_value_t = 120)]
    pub drain_secs: u64,
    /// Keep the servers' data and logs here (default: a temporary directory, kept only if a
    /// check fails).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
}

/// One torn write injected while the server was down.
#[derive(Debug, Clone, Serialize)]
struct Torn {
    after_kill: u32,
    partition: u32,
    segment: String,
    /// Segment length before the garbage, and bytes appended.
    at: u64,
    bytes: u64,
    kind: &'static str,
}

#[derive(Debug, Clone, Serialize)]
struct Recovery {
    first_start_ms: f64,
    restarts: usize,
    p50_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
struct LogCheck {
    partitions: usize,
    /// Bytes the final clean reopen had to cut (must be 0 after a clean stop).
    truncated_bytes: u64,
    corrupt_segments: usize,
    /// Partitions whose reopened end differs from the server's high watermark.
    mismatched_ends: usize,
}

#[derive(Debug, Clone, Serialize)]
struct Check {
    name: String,
    /// `passed`, `failed` or `skipped`.
    status: &'static str,
    detail: String,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    seed: u64,
    cycles: u32,
    kills: u32,
    publishers: usize,
    events_acked: u64,
    publish_retries: u64,
    publish_duplicates: u64,
    /// Acknowledged events missing from some group (sum over groups).
    lost: u64,
    /// Redeliveries over all groups (at-least-once after crashes).
    duplicates: u64,
    /// Events acknowledged twice in groups with the processed-id store on.
    processed_twice: u64,
    recovery: Recovery,
    groups: Vec<GroupVerdict>,
    torn_writes: Vec<Torn>,
    log: LogCheck,
    disk_full: DiskFull,
    checks: Vec<Check>,
    passed: bool,
    elapsed_secs: f64,
    work_dir: Option<String>,
}

pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    if args.min_up_ms > args.max_up_ms {
        return Err(
            crate::cli::UsageError("--min-up-ms must not exceed --max-up-ms".into()).into(),
        );
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let temp = match &args.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            None
        }
        None => Some(tempfile::Builder::new().prefix("runnel-chaos-").tempdir()?),
    };
    let work = match (&temp, &args.work_dir) {
        (Some(temp), _) => temp.path().to_path_buf(),
        (None, Some(dir)) => dir.clone(),
        (None, None) => bail!("no work directory"),
    };
    if !args.json {
        println!("runnel chaos: seed {seed}, work dir {}", work.display());
    }
    let report = chaos(&args, seed, &work)?;
    let kept = !report.passed && args.work_dir.is_none();
    let report = Report {
        work_dir: (kept || args.work_dir.is_some()).then(|| work.display().to_string()),
        ..report
    };
    if kept && let Some(temp) = temp {
        // The temporary directory would be removed on drop; a failed run keeps its evidence.
        let _ = temp.keep();
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    if !report.passed {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == "failed")
            .map(|c| c.name.as_str())
            .collect();
        bail!(
            "chaos: {} check(s) failed: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

fn chaos(args: &ChaosArgs, seed: u64, work: &Path) -> anyhow::Result<Report> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let data = work.join("data");
    let log = work.join("server.log");
    let target = Target::default();
    let published = Published::default();
    let groups = [
        GroupLoad::new("ledger", true, false),
        GroupLoad::new("audit", false, false),
        GroupLoad::new("mailer", true, true),
    ];
    let stop_publishing = AtomicBool::new(false);
    let stop_consuming = AtomicBool::new(false);

    let mut server = ServerProc::spawn(&data, &log)?;
    let first_start = server.recovery;
    let api = server.api();
    api.post("/v1/streams", &json!({"name": STREAM, "partitions": 4}))?;
    for group in &groups {
        api.put(&format!("/v1/groups/{}", group.name), &group.spec())
            .with_context(|| format!("creating group {}", group.name))?;
    }
    target.set(Some(api));

    let rate = f64::from(args.events_per_second) / args.publishers.max(1) as f64;
    let mut recoveries = Vec::new();
    let mut torn = Vec::new();
    let mut kills = 0;
    let drained = std::thread::scope(|s| -> anyhow::Result<bool> {
        let publishers: Vec<_> = (0..args.publishers)
            .map(|i| {
                let (target, stop, published) = (&target, &stop_publishing, &published);
                s.spawn(move || load::publisher(i, rate, target, stop, published))
            })
            .collect();
        let consumers: Vec<_> = groups
            .iter()
            .map(|g| {
                let (target, stop) = (&target, &stop_consuming);
                s.spawn(move || g.consume(target, stop))
            })
            .collect();
        let cycled = (|| -> anyhow::Result<()> {
            for cycle in 1..=args.cycles {
                let up = rng.random_range(args.min_up_ms..=args.max_up_ms);
                std::thread::sleep(Duration::from_millis(up));
                target.set(None);
                server.kill_in_place()?;
                kills += 1;
                if args.torn_every > 0 && cycle.is_multiple_of(args.torn_every) {
                    torn.push(tear(&data, &mut rng, cycle)?);
                }
                server = ServerProc::spawn(&data, &log)
                    .with_context(|| format!("restarting after kill {cycle}"))?;
                recoveries.push(server.recovery);
                target.set(Some(server.api()));
                if !args.json {
                    let acked = published.acked.lock().map(|a| a.len()).unwrap_or(0);
                    println!(
                        "cycle {cycle}/{}: killed after {up} ms, ready again in {:.0} ms, {acked} events acked",
                        args.cycles,
                        server.recovery.as_secs_f64() * 1e3,
                    );
                }
            }
            Ok(())
        })();
        if cycled.is_err() {
            target.abort();
        }
        stop_publishing.store(true, Ordering::SeqCst);
        for publisher in publishers {
            let _ = publisher.join();
        }
        let drained = match &cycled {
            Ok(()) => drain(&server.api(), &groups, Duration::from_secs(args.drain_secs)),
            Err(_) => Ok(false),
        };
        stop_consuming.store(true, Ordering::SeqCst);
        for consumer in consumers {
            let _ = consumer.join();
        }
        cycled?;
        drained
    })?;

    let api = server.api();
    let stream = api.get(&format!("/v1/streams/{STREAM}"))?;
    let spans: Vec<PartitionSpan> = stream["partition_info"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| PartitionSpan {
            partition: p["partition"].as_u64().unwrap_or(0) as u32,
            start: p["start_offset"].as_u64().unwrap_or(0),
            high_watermark: p["high_watermark"].as_u64().unwrap_or(0),
        })
        .collect();
    let promised = published
        .acked
        .lock()
        .map(|a| a.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let mut verdicts = Vec::new();
    for group in &groups {
        let dlq = dlq_entries(&api, &group.name)?;
        let record = group.record.lock().unwrap_or_else(|p| p.into_inner());
        verdicts.push(verify::verify_group(
            &promised,
            &spans,
            GroupInput {
                name: &group.name,
                processed_ids: group.processed_ids,
                record: &record,
                dlq: &dlq,
                expect_dead: &|id| group.expects_dead(id),
            },
        ));
    }
    let stopped = server.stop(Duration::from_secs(30));
    let log_check = check_log(&data, &spans)?;
    let disk_full = if args.no_disk_full {
        DiskFull {
            status: "skipped".into(),
            problems: vec!["--no-disk-full".into()],
            ..DiskFull::default()
        }
    } else {
        disk::run(work)
    };
    let panics = server_panics(&[log, work.join("disk-server.log")]);

    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(Check {
            name: name.to_string(),
            status: if ok { "passed" } else { "failed" },
            detail,
        });
    };
    let lost: u64 = verdicts.iter().map(|v| v.lost).sum();
    check(
        "nothing acknowledged lost",
        lost == 0,
        format!("{lost} acknowledged event(s) missing from some group"),
    );
    let group_failures: Vec<String> = verdicts.iter().flat_map(GroupVerdict::failures).collect();
    check(
        "groups: offsets, positions, dead letters",
        group_failures.is_empty(),
        group_failures.join("; "),
    );
    let publish_failures = published
        .failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default();
    check(
        "publish answers consistent",
        publish_failures.is_empty(),
        publish_failures
            .into_iter()
            .take(5)
            .collect::<Vec<_>>()
            .join("; "),
    );
    check(
        "consumers caught up",
        drained,
        format!("lag 0 and nothing outstanding within {} s", args.drain_secs),
    );
    check(
        "clean stop after the run",
        stopped.is_ok(),
        stopped.err().map(|e| format!("{e:#}")).unwrap_or_default(),
    );
    check(
        "log reopens clean",
        log_check.truncated_bytes == 0
            && log_check.corrupt_segments == 0
            && log_check.mismatched_ends == 0,
        format!("{log_check:?}"),
    );
    check("no server panic", panics.is_empty(), panics.join("; "));
    checks.extend(disk_checks(&disk_full));
    let passed = checks.iter().all(|c| c.status != "failed");

    let mut ms: Vec<f64> = recoveries.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    Ok(Report {
        seed,
        cycles: args.cycles,
        kills,
        publishers: args.publishers,
        events_acked: promised.len() as u64,
        publish_retries: published.retries.load(Ordering::Relaxed),
        publish_duplicates: published.duplicates.load(Ordering::Relaxed),
        lost,
        duplicates: verdicts.iter().map(|v| v.redeliveries).sum(),
        processed_twice: verdicts
            .iter()
            .filter(|v| v.processed_ids)
            .map(|v| v.processed_twice)
            .sum(),
        recovery: Recovery {
            first_start_ms: first_start.as_secs_f64() * 1e3,
            restarts: ms.len(),
            p50_ms: ms.get(ms.len() / 2).copied().unwrap_or(0.0),
            max_ms: ms.last().copied().unwrap_or(0.0),
        },
        groups: verdicts,
        torn_writes: torn,
        log: log_check,
        disk_full,
        checks,
        passed,
        elapsed_secs: started.elapsed().as_secs_f64(),
        work_dir: None,
    })
}

/// The disk-full phase's verdicts, one a promise.
fn disk_checks(d: &DiskFull) -> Vec<Check> {
    if d.status == "skipped" {
        return vec![Check {
            name: "disk full".into(),
            status: "skipped",
            detail: d.problems.join("; "),
        }];
    }
    let problems = |words: &[&str]| -> String {
        d.problems
            .iter()
            .filter(|p| words.iter().any(|w| p.contains(w)))
            .cloned()
            .collect::<Vec<_>>()
            .join("; ")
    };
    let verdict = |ok: bool| if ok { "passed" } else { "failed" };
    let refused_ok = d.refused_status == Some(507)
        && d.refused_content_type.as_deref() == Some("application/problem+json");
    let mut checks = vec![
        Check {
            name: "disk full: publish refused with 507 problem+json".into(),
            status: verdict(refused_ok),
            detail: format!(
                "answered {} {}",
                opt(d.refused_status),
                d.refused_content_type.as_deref().unwrap_or("-")
            ),
        },
        Check {
            name: "disk full: publishing resumes when space returns".into(),
            status: verdict(d.resumed_after_ms.is_some()),
            detail: problems(&["publishes still fail"]),
        },
        Check {
            name: "disk full: metadata writes resume when space returns".into(),
            status: verdict(d.metadata_write_after_space.is_some_and(|s| s < 300)),
            detail: problems(&["metadata writes"]),
        },
        Check {
            name: "disk full: acknowledged events intact".into(),
            status: verdict(d.lost_or_damaged == 0 && d.refused_status.is_some()),
            detail: problems(&["read back"]),
        },
    ];
    let known = [
        "not 507",
        "content type",
        "publishes still fail",
        "metadata writes",
        "read back",
    ];
    let other = d
        .problems
        .iter()
        .filter(|p| !known.iter().any(|k| p.contains(k)))
        .cloned()
        .collect::<Vec<_>>();
    if !other.is_empty() {
        checks.push(Check {
            name: "disk full: phase ran to the end".into(),
            status: "failed",
            detail: other.join("; "),
        });
    }
    checks
}

/// Waits until every group has lag 0 and nothing handed out unsettled, twice in a row.
fn drain(api: &Api, groups: &[GroupLoad], limit: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + limit;
    let mut quiet = 0;
    while Instant::now() < deadline {
        let mut settled = true;
        for group in groups {
            let view = api.get(&format!("/v1/groups/{}", group.name))?;
            settled &= view["lag"]["total_events"].as_u64() == Some(0)
                && view["consumer"]["outstanding"].as_u64() == Some(0);
        }
        quiet = if settled { quiet + 1 } else { 0 };
        if quiet >= 2 {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(false)
}

/// Every entry of a group's dead-letter queue, each checked against the published event.
fn dlq_entries(api: &Api, group: &str) -> anyhow::Result<Vec<DlqSeen>> {
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/groups/{group}/dlq?limit=1000");
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let page = api.get(&path)?;
        for entry in page["entries"].as_array().cloned().unwrap_or_default() {
            entries.push(DlqSeen {
                event_id: entry["event_id"].as_str().unwrap_or_default().to_string(),
                class: entry["class"].as_str().unwrap_or_default().to_string(),
                position: Position {
                    partition: entry["partition"].as_u64().unwrap_or(0) as u32,
                    offset: entry["offset"].as_u64().unwrap_or(0),
                },
                intact: entry["stream"] == STREAM && load::is_published_event(&entry["event"]),
            });
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => return Ok(entries),
        }
    }
}

/// Appends a torn frame or garbage to the newest segment of a random partition.
fn tear(data: &Path, rng: &mut StdRng, after_kill: u32) -> anyhow::Result<Torn> {
    let partition = rng.random_range(0..4u32);
    let dir = data
        .join("streams")
        .join(STREAM)
        .join(partition.to_string());
    let segment = server::newest_segment(&dir)?
        .with_context(|| format!("no segment in {}", dir.display()))?;
    let at = std::fs::metadata(&segment)?.len();
    let (kind, bytes) = if after_kill.is_multiple_of(2) {
        // A frame header promising more body than follows: a write cut short.
        let mut frame = Vec::new();
        frame.extend_from_slice(&200u32.to_le_bytes());
        frame.extend_from_slice(&rng.random::<u32>().to_le_bytes());
        frame.push(1);
        let partial: Vec<u8> = (0..rng.random_range(1..100))
            .map(|_| rng.random())
            .collect();
        frame.extend_from_slice(&partial);
        ("partial frame", frame)
    } else {
        let garbage: Vec<u8> = (0..rng.random_range(1..300))
            .map(|_| rng.random())
            .collect();
        ("garbage", garbage)
    };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .with_context(|| format!("opening {}", segment.display()))?;
    file.write_all(&bytes)?;
    file.sync_data()?;
    Ok(Torn {
        after_kill,
        partition,
        segment: segment
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        at,
        bytes: bytes.len() as u64,
        kind,
    })
}

/// Reopens every partition of the stream after the clean stop: nothing may need cutting.
fn check_log(data: &Path, spans: &[PartitionSpan]) -> anyhow::Result<LogCheck> {
    let mut check = LogCheck {
        partitions: 0,
        truncated_bytes: 0,
        corrupt_segments: 0,
        mismatched_ends: 0,
    };
    for span in spans {
        let dir = data
            .join("streams")
            .join(STREAM)
            .join(span.partition.to_string());
        let (_log, report) = PartitionLog::open(&dir, LogConfig::default())
            .with_context(|| format!("reopening {}", dir.display()))?;
        check.partitions += 1;
        check.truncated_bytes += report.truncated_bytes;
        check.corrupt_segments += report.corrupt_segments.len();
        if report.next_offset != span.high_watermark {
            check.mismatched_ends += 1;
        }
    }
    Ok(check)
}

/// Lines of the servers' stderr that report a panic.
fn server_panics(logs: &[PathBuf]) -> Vec<String> {
    logs.iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| {
            text.lines()
                .filter(|l| l.contains("panicked"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .take(5)
        .collect()
}

fn opt(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn print_disk_full(d: &DiskFull) {
    println!(
        "disk full: {} (publish refused with {} {} code {}; /readyz {} while full; publishing resumed after {} ms; then /readyz {}, metadata write {}; {} acked before, {} while filling, {} after; {} lost or damaged after a restart)",
        d.status,
        opt(d.refused_status),
        d.refused_content_type.as_deref().unwrap_or("-"),
        d.refused_code.as_deref().unwrap_or("-"),
        opt(d.readyz_while_full),
        opt(d.resumed_after_ms),
        opt(d.readyz_after_space),
        opt(d.metadata_write_after_space),
        d.acked_before_full,
        d.acked_while_filling,
        d.acked_after,
        d.lost_or_damaged
    );
}

fn print_report(report: &Report) {
    println!();
    println!(
        "{} cycles, {} kills, {} publishers: {} events acknowledged ({} retried requests, {} answered as duplicates)",
        report.cycles,
        report.kills,
        report.publishers,
        report.events_acked,
        report.publish_retries,
        report.publish_duplicates
    );
    println!(
        "recovery (spawn to /readyz 200): first start {:.0} ms; {} restarts, p50 {:.0} ms, max {:.0} ms",
        report.recovery.first_start_ms,
        report.recovery.restarts,
        report.recovery.p50_ms,
        report.recovery.max_ms
    );
    println!();
    let row = |cells: [String; 11]| {
        println!(
            "{:<8} {:>8} {:>9} {:>5} {:>9} {:>11} {:>11} {:>12} {:>5} {:>10} {:>5}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9],
            cells[10]
        );
    };
    row([
        "group",
        "proc.ids",
        "delivered",
        "lost",
        "handouts",
        "redelivered",
        "acked twice",
        "ack no reply",
        "DLQ",
        "unexpected",
        "gaps",
    ]
    .map(String::from));
    for g in &report.groups {
        row([
            g.group.clone(),
            (if g.processed_ids { "on" } else { "off" }).to_string(),
            g.delivered.to_string(),
            g.lost.to_string(),
            g.handouts.to_string(),
            g.redeliveries.to_string(),
            g.processed_twice.to_string(),
            g.settled_unconfirmed.to_string(),
            g.dlq_entries.to_string(),
            g.dlq_unexpected.values().sum::<u64>().to_string(),
            g.offset_gaps.to_string(),
        ]);
    }
    println!();
    for t in &report.torn_writes {
        println!(
            "torn write after kill {}: {} bytes of {} at byte {} of partition {} segment {}",
            t.after_kill, t.bytes, t.kind, t.at, t.partition, t.segment
        );
    }
    let d = &report.disk_full;
    if d.status == "skipped" {
        println!("disk full: skipped ({})", d.problems.join("; "));
    } else {
        print_disk_full(d);
    }
    println!();
    for c in &report.checks {
        let detail = if c.status == "passed" || c.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", c.detail)
        };
        println!("{:<7} {}{detail}", c.status, c.name);
    }
    println!(
        "\n{} in {:.1} s (seed {})",
        if report.passed { "PASSED" } else { "FAILED" },
        report.elapsed_secs,
        report.seed
    );
    if let Some(dir) = &report.work_dir {
        println!("data and server logs kept in {dir}");
    }
}
