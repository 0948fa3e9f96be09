//! `/metrics` in the Prometheus text format.
//!
//! It exists to keep metric names and labels in one place. Counters the server sees happen
//! (publishes, duplicate publishes, HTTP acks and their delivery→ack latency) are recorded
//! as they happen; what the runtime knows (group counters, lag, DLQ depth) is read at scrape
//! time, so a scrape shows the state of that moment. Each server owns its own recorder (no
//! global one), so several servers in one test process do not mix their figures — except
//! what other crates record through the `metrics` facade (the saga driver's
//! `runnel_saga_*`): [`Metrics::install_global`] makes one server's recorder the process's,
//! the first server of a process that runs sagas (`runnel serve` has one).

use std::sync::Arc;

use metrics::{Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use runnel_runtime::{DlqDepth, GroupCounts, GroupLag};

static META: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Seconds from a message being handed to an HTTP consumer to its ack.
pub const HANDLER_LATENCY: &str = "runnel_handler_latency_seconds";

/// Seconds from a saga instance's start to its outcome (recorded by `runnel-saga`).
pub const SAGA_DURATION: &str = "runnel_saga_duration_seconds";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The server's metrics.
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// This recorder is the process's global one.
    global: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What a feature pipeline reports about one input partition at scrape time.
#[derive(Debug, Clone, Default)]
pub struct FeaturePartitionSnapshot {
    pub feature: String,
    pub stream: String,
    pub partition: u32,
    /// Now minus the partition's watermark; `None` before its first event.
    pub watermark_lag_seconds: Option<f64>,
    pub open_windows: u64,
    pub state_bytes: u64,
    /// Events sent to the late stream (cumulative: kept in the partition's checkpoint).
    pub late_events: u64,
    /// Results emitted (cumulative, likewise).
    pub results: u64,
}

/// What the runtime reports about one group at scrape time.
#[derive(Debug, Default)]
pub struct GroupSnapshot {
    pub group: String,
    /// Counters of this server's consumer of the group, summed over its restarts.
    pub counts: Option<GroupCounts>,
    pub lag: Option<GroupLag>,
    pub dlq: Option<DlqDepth>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<Label> {
    pairs
        .iter()
        .map(|(k, v)| Label::new(*k, v.to_string()))
        .collect()
}

impl Metrics {
    pub fn new() -> Self {
        // A non-empty constant list cannot fail; fall back to summaries if it ever did.
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(HANDLER_LATENCY.into()), LATENCY_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(SAGA_DURATION.into()), LATENCY_BUCKETS)
            })
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
            global: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Makes this recorder the process's global one, so that `/metrics` renders what other
    /// crates record through the `metrics` facade. False if the process has one already
    /// (another server's, or the embedding program's); true again when it is this one's.
    pub fn install_global(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.global.load(Ordering::SeqCst) {
            return true;
        }
        let installed = metrics::set_global_recorder(SharedRecorder(self.recorder.clone())).is_ok();
        if installed {
            self.global.store(true, Ordering::SeqCst);
        }
        installed
    }

    fn counter(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> metrics::Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels(pairs)), &META)
    }

    fn gauge(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> metrics::Gauge {
        self.recorder
            .register_gauge(&Key::from_parts(name, labels(pairs)), &META)
    }

    /// Events appended by a publish.
    pub fn published(&self, stream: &str, event_type: &str, events: u64) {
        self.counter(
            "runnel_events_published_total",
            &[("stream", stream), ("type", event_type)],
        )
        .increment(events);
    }

    /// Publishes answered from the dedup window (nothing appended).
    pub fn duplicates(&self, stream: &str, events: u64) {
        self.counter("runnel_publish_duplicates_total", &[("stream", stream)])
            .increment(events);
    }

    /// An HTTP consumer acknowledged an event `seconds` after it was handed out.
    pub fn acked(&self, group: &str, stream: &str, event_type: &str, seconds: f64) {
        self.counter(
            "runnel_events_consumed_total",
            &[("group", group), ("stream", stream), ("type", event_type)],
        )
        .increment(1);
        self.recorder
            .register_histogram(
                &Key::from_parts(HANDLER_LATENCY, labels(&[("group", group)])),
                &META,
            )
            .record(seconds);
    }

    /// Renders everything, after setting the scrape-time figures.
    pub fn render(&self, groups: &[GroupSnapshot]) -> String {
        self.render_with(groups, &[])
    }

    /// Renders everything, with the feature pipelines' figures too.
    pub fn render_with(
        &self,
        groups: &[GroupSnapshot],
        features: &[FeaturePartitionSnapshot],
    ) -> String {
        for f in features {
            let partition = f.partition.to_string();
            let l = &[
                ("feature", f.feature.as_str()),
                ("stream", f.stream.as_str()),
                ("partition", partition.as_str()),
            ];
            if let Some(lag) = f.watermark_lag_seconds {
                self.gauge("runnel_feature_watermark_lag_seconds", l)
                    .set(lag);
            }
            self.gauge("runnel_feature_open_windows", l)
                .set(f.open_windows as f64);
            self.gauge("runnel_feature_state_bytes", l)
                .set(f.state_bytes as f64);
            self.counter("runnel_late_events_total", l)
                .absolute(f.late_events);
            self.counter("runnel_feature_results_total", l)
                .absolute(f.results);
        }
        for snapshot in groups {
            let group = snapshot.group.as_str();
            if let Some(c) = &snapshot.counts {
                let g = &[("group", group)];
                self.counter("runnel_consumer_delivered_total", g)
                    .absolute(c.delivered);
                self.counter("runnel_consumer_redelivered_total", g)
                    .absolute(c.redelivered);
                self.counter("runnel_consumer_acked_total", g)
                    .absolute(c.acked);
                self.counter("runnel_consumer_retries_total", g)
                    .absolute(c.retries_scheduled);
                self.counter("runnel_consumer_dead_lettered_total", g)
                    .absolute(c.dead_lettered);
                self.counter("runnel_consumer_ack_timeouts_total", g)
                    .absolute(c.ack_timeouts);
                self.counter("runnel_consumer_skipped_duplicates_total", g)
                    .absolute(c.skipped_duplicates);
                for (class, value) in [
                    ("transient", c.failed_transient),
                    ("service", c.failed_service),
                    ("permanent", c.failed_permanent),
                ] {
                    self.counter(
                        "runnel_consumer_failures_total",
                        &[("group", group), ("class", class)],
                    )
                    .absolute(value);
                }
            }
            if let Some(lag) = &snapshot.lag {
                for p in &lag.partitions {
                    let partition = p.partition.to_string();
                    let l = &[
                        ("group", group),
                        ("stream", p.stream.as_str()),
                        ("partition", partition.as_str()),
                    ];
                    self.gauge("runnel_consumer_lag_events", l)
                        .set(p.events as f64);
                    self.gauge("runnel_consumer_lag_seconds", l).set(p.seconds);
                }
            }
            if let Some(dlq) = &snapshot.dlq {
                self.gauge("runnel_dlq_depth", &[("group", group)])
                    .set(dlq.depth as f64);
                // The queue as counted for this scrape, not the flag of the last dead-lettering:
                // a purge or replay since then lowers it.
                self.gauge("runnel_dlq_alert", &[("group", group)])
                    .set(if dlq.alert { 1.0 } else { 0.0 });
            }
        }
        self.handle.render()
    }
}

/// A server's recorder shared as the process's global one.
struct SharedRecorder(Arc<PrometheusRecorder>);

impl Recorder for SharedRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_counter(key, unit, description)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_gauge(key, unit, description)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.0.describe_histogram(key, unit, description)
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> metrics::Counter {
        self.0.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> metrics::Gauge {
        self.0.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> metrics::Histogram {
        self.0.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_scrape_time_gauges() {
        let metrics = Metrics::new();
        metrics.published("order", "order.placed", 1);
        metrics.duplicates("order", 1);
        metrics.acked("billing", "order", "order.placed", 0.003);
        let text = metrics.render(&[GroupSnapshot {
            group: "billing".into(),
            counts: Some(GroupCounts {
                failed_service: 2,
                ..GroupCounts::default()
            }),
            lag: None,
            dlq: Some(DlqDepth {
                depth: 3,
                alert_threshold: Some(2),
                alert: true,
            }),
        }]);
        for needle in [
            "runnel_events_published_total{stream=\"order\",type=\"order.placed\"} 1",
            "runnel_publish_duplicates_total{stream=\"order\"} 1",
            "runnel_handler_latency_seconds_bucket{group=\"billing\",le=\"0.005\"} 1",
            "runnel_consumer_failures_total{group=\"billing\",class=\"service\"} 2",
            "runnel_dlq_depth{group=\"billing\"} 3",
            "runnel_dlq_alert{group=\"billing\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn feature_partitions_show_watermark_lag_windows_state_and_late_events() {
        let text = Metrics::new().render_with(
            &[],
            &[FeaturePartitionSnapshot {
                feature: "card_spend".into(),
                stream: "payment".into(),
                partition: 3,
                watermark_lag_seconds: Some(12.5),
                open_windows: 40,
                state_bytes: 4096,
                late_events: 2,
                results: 7,
            }],
        );
        let l = "feature=\"card_spend\",stream=\"payment\",partition=\"3\"";
        for needle in [
            format!("runnel_feature_watermark_lag_seconds{{{l}}} 12.5"),
            format!("runnel_feature_open_windows{{{l}}} 40"),
            format!("runnel_feature_state_bytes{{{l}}} 4096"),
            format!("runnel_late_events_total{{{l}}} 2"),
            format!("runnel_feature_results_total{{{l}}} 7"),
        ] {
            assert!(text.contains(&needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn the_dlq_alert_follows_the_queue_as_counted_not_the_last_dead_lettering() {
        // The group's workers raised their flag, then the queue was purged below the threshold.
        let text = Metrics::new().render(&[GroupSnapshot {
            group: "billing".into(),
            counts: Some(GroupCounts {
                dead_lettered: 5,
                dlq_alert: true,
                ..GroupCounts::default()
            }),
            lag: None,
            dlq: Some(DlqDepth {
                depth: 1,
                alert_threshold: Some(2),
                alert: false,
            }),
        }]);
        assert!(
            text.contains("runnel_dlq_alert{group=\"billing\"} 0"),
            "{text}"
        );
    }
}
