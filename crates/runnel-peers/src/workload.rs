//! The workloads of `runnel bench compare`, written once over [`Peer`] so that every system
//! is timed by the same code: publish (sizes, batches, producers), consume+ack of a backlog,
//! publish→consume latency at a fixed rate, fan-out to several groups, and replay of a long
//! backlog by a new group.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{OnEvent, Peer, PeerError, Result, Topic, now_micros, parse_payload, payload};

/// The kinds of workload, for [`Peer::cannot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Publish,
    Consume,
    Latency,
    Fanout,
    Replay,
}

/// What one run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Events published (publish) or consumed and acknowledged (per group for fan-out).
    pub events: u64,
    pub seconds: f64,
    pub events_per_sec: f64,
    /// Per publish call (publish) or publish→consume (latency), in µs.
    pub p50_us: Option<f64>,
    pub p95_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| PeerError::Other(Box::new(e)))
}

fn with_percentiles(mut f: Figures, h: &Histogram<u64>) -> Figures {
    if !h.is_empty() {
        f.p50_us = Some(h.value_at_quantile(0.50) as f64);
        f.p95_us = Some(h.value_at_quantile(0.95) as f64);
        f.p99_us = Some(h.value_at_quantile(0.99) as f64);
        f.p999_us = Some(h.value_at_quantile(0.999) as f64);
    }
    f
}

fn joined<T>(r: std::result::Result<Result<T>, tokio::task::JoinError>) -> Result<T> {
    r.map_err(|e| PeerError::Other(Box::new(e)))?
}

/// `producers` tasks publish calls of `batch` payloads of `size` bytes, each call awaited,
/// for `duration`. Latency percentiles are per call.
pub async fn publish(
    peer: &dyn Peer,
    size: usize,
    batch: usize,
    producers: usize,
    duration: Duration,
) -> Result<Figures> {
    let topic = peer.open(&["g0".to_string()]).await?;
    let result = publish_on(topic.clone(), size, batch, producers, duration).await;
    let closed = topic.close().await;
    let figures = result?;
    closed?;
    Ok(figures)
}

async fn publish_on(
    topic: Arc<dyn Topic>,
    size: usize,
    batch: usize,
    producers: usize,
    duration: Duration,
) -> Result<Figures> {
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..producers {
        let (topic, seq) = (topic.clone(), seq.clone());
        tasks.spawn(async move {
            let mut h = histogram()?;
            let mut published = 0u64;
            while Instant::now() < deadline {
                let first = seq.fetch_add(batch as u64, Ordering::Relaxed);
                let payloads = (first..first + batch as u64)
                    .map(|n| payload(size, n))
                    .collect();
                let t = Instant::now();
                topic.publish(payloads).await?;
                h.saturating_record((t.elapsed().as_micros() as u64).max(1));
                published += batch as u64;
            }
            Ok((published, h))
        });
    }
    let mut h = histogram()?;
    let mut events = 0;
    while let Some(done) = tasks.join_next().await {
        let (n, part) = joined(done)?;
        events += n;
        h.add(part).map_err(|e| PeerError::Other(Box::new(e)))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(with_percentiles(
        Figures {
            events,
            seconds,
            events_per_sec: events as f64 / seconds,
            ..Figures::default()
        },
        &h,
    ))
}

/// Publishes up to `count` payloads of `size` bytes (4 producers, batches of 100) but stops
/// at `budget`; returns how many were published. Used to build backlogs.
pub async fn preload(
    topic: &Arc<dyn Topic>,
    size: usize,
    count: u64,
    budget: Duration,
) -> Result<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + budget;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (topic, next, done) = (topic.clone(), next.clone(), done.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let first = next.fetch_add(100, Ordering::Relaxed);
                if first >= count {
                    break;
                }
                let last = (first + 100).min(count);
                topic
                    .publish((first..last).map(|n| payload(size, n)).collect())
                    .await?;
                done.fetch_add(last - first, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        joined(r)?;
    }
    Ok(done.load(Ordering::Relaxed))
}

fn counting() -> (Arc<AtomicU64>, OnEvent) {
    let seen = Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    (
        seen,
        Arc::new(move |_: &[u8]| {
            s.fetch_add(1, Ordering::Relaxed);
        }),
    )
}

/// Builds a backlog of `count` events of `size` bytes (capped at `preload_budget`), then
/// times `groups` groups each consuming and acknowledging all of it at once. The figure is
/// per group.
pub async fn consume(
    peer: &dyn Peer,
    size: usize,
    count: u64,
    groups: usize,
    preload_budget: Duration,
    timeout: Duration,
) -> Result<Figures> {
    let names: Vec<String> = (0..groups).map(|g| format!("g{g}")).collect();
    let topic = peer.open(&names).await?;
    let result = async {
        let loaded = preload(&topic, size, count, preload_budget).await?;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tasks = tokio::task::JoinSet::new();
        for name in &names {
            let (topic, name) = (topic.clone(), name.clone());
            let (_, on_event) = counting();
            tasks.spawn(async move { topic.consume(&name, loaded, on_event, deadline).await });
        }
        while let Some(r) = tasks.join_next().await {
            joined(r)?;
        }
        let seconds = started.elapsed().as_secs_f64();
        Ok(Figures {
            events: loaded,
            seconds,
            events_per_sec: loaded as f64 / seconds,
            ..Figures::default()
        })
    }
    .await;
    let closed = topic.close().await;
    let figures = result?;
    closed?;
    Ok(figures)
}

/// Publishes `rate` events/s of `size` bytes in 1 ms ticks (one call per tick, calls not
/// awaited one by one) for `duration` while one group consumes; records each event's time
/// from its creation to its consumer.
pub async fn latency(
    peer: &dyn Peer,
    size: usize,
    rate: u64,
    duration: Duration,
    timeout: Duration,
) -> Result<Figures> {
    let topic = peer.open(&["g0".to_string()]).await?;
    let result = latency_on(&topic, size, rate, duration, timeout).await;
    let closed = topic.close().await;
    let figures = result?;
    closed?;
    Ok(figures)
}

async fn latency_on(
    topic: &Arc<dyn Topic>,
    size: usize,
    rate: u64,
    duration: Duration,
    timeout: Duration,
) -> Result<Figures> {
    let per_tick = (rate / 1000).max(1);
    let ticks = duration.as_millis() as u64;
    let total = per_tick * ticks;
    let h = Arc::new(Mutex::new(histogram()?));
    let sink = h.clone();
    let on_event: OnEvent = Arc::new(move |bytes: &[u8]| {
        if let Ok((time, _)) = parse_payload(bytes) {
            let micros = now_micros().saturating_sub(time).max(1);
            if let Ok(mut h) = sink.lock() {
                h.saturating_record(micros);
            }
        }
    });
    let deadline = tokio::time::Instant::now() + duration + timeout;
    let consumer = {
        let topic = topic.clone();
        tokio::spawn(async move { topic.consume("g0", total, on_event, deadline).await })
    };
    // Let the consumer join before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for tick in 0..ticks {
        interval.tick().await;
        let first = tick * per_tick;
        let payloads = (first..first + per_tick)
            .map(|n| payload(size, n))
            .collect();
        let topic = topic.clone();
        in_flight.spawn(async move { topic.publish(payloads).await });
        while let Some(done) = in_flight.try_join_next() {
            joined(done)?;
        }
    }
    // A peer that cannot keep up with the rate is given until the deadline, then reported.
    loop {
        match tokio::time::timeout_at(deadline, in_flight.join_next()).await {
            Ok(Some(done)) => joined(done)?,
            Ok(None) => break,
            Err(_) => {
                in_flight.abort_all();
                consumer.abort();
                return Err(PeerError::Timeout {
                    workload: "latency (publishing could not keep up with the rate)",
                    done: total - in_flight.len() as u64 * per_tick,
                    expected: total,
                });
            }
        }
    }
    let published_in = started.elapsed().as_secs_f64();
    let consumed = joined(consumer.await)?;
    let h = h
        .lock()
        .map_err(|_| PeerError::Other("latency histogram lock poisoned".into()))?;
    Ok(with_percentiles(
        Figures {
            events: consumed,
            seconds: published_in,
            events_per_sec: total as f64 / published_in,
            ..Figures::default()
        },
        &h,
    ))
}
