//! The disk-full phase: a server whose data directory is on a small tmpfs, a filler file
//! that takes the rest of it, publishes that must be refused with a clear error (507,
//! `application/problem+json`) without damaging what was acknowledged, and service that
//! resumes once the filler is deleted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::{Value, json};

use super::load::{self, STREAM};
use super::server::ServerProc;
use crate::api::{Api, ApiError};

/// Publisher index of this phase's events (the load's publishers count from 0).
const PUBLISHER: usize = 900;
/// Events acknowledged before the disk fills.
const BEFORE: u64 = 200;
/// Size of the tmpfs.
const TMPFS_SIZE: &str = "32m";

/// What the phase saw.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DiskFull {
    /// `passed`, `failed` or `skipped`.
    pub status: String,
    /// Why it failed or was skipped.
    pub problems: Vec<String>,
    pub acked_before_full: u64,
    /// Publishes still answered 202 after the filler was written (space the filler left).
    pub acked_while_filling: u64,
    /// The first refused publish: status, content type and problem `code`.
    pub refused_status: Option<u16>,
    pub refused_content_type: Option<String>,
    pub refused_code: Option<String>,
    /// `/readyz` while the disk was full.
    pub readyz_while_full: Option<u16>,
    /// From deleting the filler to the first 202.
    pub resumed_after_ms: Option<u64>,
    /// `/readyz` and a metadata write (`PUT` of the group) once space returned (0: no answer).
    pub readyz_after_space: Option<u16>,
    pub metadata_write_after_space: Option<u16>,
    pub acked_after: u64,
    /// Acknowledged events not read back intact after a restart.
    pub lost_or_damaged: u64,
}

/// Unmounts the tmpfs when dropped, also on error.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

pub fn run(work: &Path) -> DiskFull {
    let mountpoint = work.join("tmpfs");
    if let Err(error) = std::fs::create_dir_all(&mountpoint) {
        return skipped(format!("creating {}: {error}", mountpoint.display()));
    }
    let mount = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={TMPFS_SIZE}"),
            "runnel-chaos",
        ])
        .arg(&mountpoint)
        .output();
    match mount {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            return skipped(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Err(error) => return skipped(format!("cannot run mount: {error}")),
    }
    let _mounted = Mounted(mountpoint.clone());
    let mut report = DiskFull::default();
    if let Err(error) = phase(&mountpoint, &work.join("disk-server.log"), &mut report) {
        report.problems.push(format!("{error:#}"));
    }
    report.status = if report.problems.is_empty() {
        "passed"
    } else {
        "failed"
    }
    .to_string();
    report
}

fn skipped(reason: String) -> DiskFull {
    DiskFull {
        status: "skipped".into(),
        problems: vec![reason],
        ..DiskFull::default()
    }
}

/// One publish, answered with status, content type and body.
fn publish_raw(url: &str, event: &Value) -> anyhow::Result<(u16, String, Value)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let body = serde_json::to_vec(event)?;
    let mut response = agent
        .post(&format!("{url}/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .send(&body[..])
        .context("publishing while the disk is full")?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, content_type, body))
}

fn phase(mountpoint: &Path, log: &Path, report: &mut DiskFull) -> anyhow::Result<()> {
    let server = ServerProc::spawn(&mountpoint.join("data"), log)?;
    let api = server.api();
    let group = json!({"filter": format!("{STREAM}.*"), "lease_ttl": 1000});
    api.put("/v1/groups/disk", &group)?;
    let mut acked: BTreeMap<String, Value> = BTreeMap::new();
    let mut n = 0;
    while n < BEFORE {
        let event = load::event(PUBLISHER, n);
        api.post_as("/v1/events", "application/cloudevents+json", &event)
            .context("publishing before the disk fills")?;
        acked.insert(load::event_id(PUBLISHER, n), event);
        n += 1;
    }
    report.acked_before_full = BEFORE;

    let filler = mountpoint.join("filler");
    fill(&filler)?;
    // Publish until refused; what is left after the filler may still take a few events.
    let mut refused = false;
    for _ in 0..500 {
        let event = load::event(PUBLISHER, n);
        let (status, content_type, body) = match publish_raw(&server.url, &event) {
            Ok(answer) => answer,
            Err(error) => {
                report
                    .problems
                    .push(format!("no answer to a publish on a full disk: {error:#}"));
                return Ok(());
            }
        };
        if status == 202 {
            acked.insert(load::event_id(PUBLISHER, n), event);
            report.acked_while_filling += 1;
            n += 1;
            continue;
        }
        n += 1;
        report.refused_status = Some(status);
        report.refused_content_type = Some(content_type.clone());
        report.refused_code = body["code"].as_str().map(str::to_string);
        if status != 507 {
            report.problems.push(format!(
                "a publish on a full disk was answered {status}, not 507: {body}"
            ));
        }
        if content_type != "application/problem+json" {
            report.problems.push(format!(
                "the refusal's content type is {content_type:?}, not application/problem+json"
            ));
        }
        refused = true;
        break;
    }
    if !refused {
        report
            .problems
            .push("500 publishes were accepted on a full disk".into());
    }
    report.readyz_while_full = Some(match api.get("/readyz") {
        Ok(_) => 200,
        Err(crate::api::ApiError::Status { status, .. }) => status,
        Err(error) => {
            report
                .problems
                .push(format!("/readyz on a full disk: {error}"));
            0
        }
    });

    std::fs::remove_file(&filler).context("removing the filler")?;
    let freed = Instant::now();
    loop {
        let event = load::event(PUBLISHER, n);
        match api.post_as("/v1/events", "application/cloudevents+json", &event) {
            Ok(_) => {
                acked.insert(load::event_id(PUBLISHER, n), event);
                report.resumed_after_ms = Some(freed.elapsed().as_millis() as u64);
                report.acked_after += 1;
                n += 1;
                break;
            }
            Err(error) if freed.elapsed() > Duration::from_secs(10) => {
                report.problems.push(format!(
                    "publishes still fail 10 s after space returned: {error}"
                ));
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    // The metadata store (groups, offsets, `/readyz`'s probe) must take writes again too.
    report.readyz_after_space = Some(status_of(&api.get("/readyz")));
    let rewrite = api.put("/v1/groups/disk", &group);
    report.metadata_write_after_space = Some(status_of(&rewrite));
    if let Err(error) = rewrite {
        report.problems.push(format!(
            "metadata writes still fail after space returned (until a restart): {error}"
        ));
    }
    // Whatever the running server's state, what was acknowledged must be intact on disk:
    // restart it and read everything back.
    if let Err(error) = server.stop(Duration::from_secs(30)) {
        report.problems.push(format!("{error:#}"));
    }
    let server = ServerProc::spawn(&mountpoint.join("data"), log)?;
    let api = server.api();
    for _ in 0..50 {
        let event = load::event(PUBLISHER, n);
        api.post_as("/v1/events", "application/cloudevents+json", &event)
            .context("publishing after a restart with space")?;
        acked.insert(load::event_id(PUBLISHER, n), event);
        report.acked_after += 1;
        n += 1;
    }
    report.lost_or_damaged = read_back(&api, &acked)?;
    if report.lost_or_damaged > 0 {
        report.problems.push(format!(
            "{} acknowledged events were not read back intact",
            report.lost_or_damaged
        ));
    }
    if let Err(error) = server.stop(Duration::from_secs(30)) {
        report.problems.push(format!("{error:#}"));
    }
    Ok(())
}

fn status_of(result: &Result<Value, ApiError>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(ApiError::Status { status, .. } | ApiError::Refused { status, .. }) => *status,
        Err(ApiError::Unreachable { .. }) => 0,
    }
}

/// Writes 64 KiB chunks until the file system is full.
fn fill(path: &Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path).context("creating the filler")?;
    let chunk = vec![0xa5u8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => return Ok(()),
            Err(error) => return Err(error).context("writing the filler"),
        }
    }
}

/// Pulls group `disk` until every acknowledged event was seen; returns how many were not
/// seen or came back different.
fn read_back(api: &Api, acked: &BTreeMap<String, Value>) -> anyhow::Result<u64> {
    let mut good = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while good.len() < acked.len() && Instant::now() < deadline {
        let pulled = api.post("/v1/groups/disk/pull", &json!({"max": 500, "wait_ms": 500}))?;
        let messages = pulled["messages"].as_array().cloned().unwrap_or_default();
        let receipts: Vec<Value> = messages.iter().map(|m| m["receipt"].clone()).collect();
        for message in &messages {
            let event = &message["event"];
            if let Some(id) = event["id"].as_str()
                && acked.contains_key(id)
                && load::is_published_event(event)
            {
                good.insert(id.to_string());
            }
        }
        if !receipts.is_empty() {
            api.post("/v1/groups/disk/ack", &json!({"receipts": receipts}))?;
        }
    }
    Ok((acked.len() - good.len()) as u64)
}
