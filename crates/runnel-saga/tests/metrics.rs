//! The driver's metrics through the `metrics` facade: an instance started and its outcome
//! counted, its duration recorded, labelled by saga type. A saga whose only step is skipped
//! completes as it starts, so no step service is needed.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use runnel_backend::Backend;
use runnel_backend_embedded::{EmbeddedBackend, EmbeddedConfig};
use runnel_envelope::{Event, EventType, Source};
use runnel_runtime::{Runnel, RuntimeConfig};
use runnel_saga::{
    SagaDriver, SagaOptions, SagaQuery, SagaSpec, SagaState, Sagas, StepSpec, TriggerSpec,
};

#[test]
fn started_and_completed_instances_are_counted_and_timed_per_saga() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let backend = EmbeddedBackend::open(EmbeddedConfig::new(dir.path()))
                .await
                .unwrap();
            let runnel = Runnel::open(
                RuntimeConfig::default(),
                Arc::new(backend) as Arc<dyn Backend>,
            );
            let saga = SagaSpec {
                name: "gift".into(),
                trigger: TriggerSpec {
                    event_type: "order.placed".into(),
                    condition: None,
                },
                steps: vec![
                    StepSpec::command("wrap", "gift.wrap_requested", "gift.wrapped")
                        .when("trigger.gift == true"),
                ],
            }
            .validate()
            .unwrap();
            let driver = SagaDriver::start(&runnel, saga.clone(), SagaOptions::default())
                .await
                .unwrap();
            let sagas = Sagas::new(&runnel, vec![saga]).unwrap();
            let orders = (0..3).map(|n| {
                Event::builder(
                    EventType::new("order.placed").unwrap(),
                    Source::new("test://shop").unwrap(),
                )
                .data_json(serde_json::json!({ "order": n }))
                .build()
                .unwrap()
            });
            runnel.publish_batch(orders.collect()).await.unwrap();
            let query = SagaQuery {
                state: Some(SagaState::Completed),
                ..SagaQuery::default()
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while sagas.list(&query).await.unwrap().len() < 3 {
                assert!(tokio::time::Instant::now() < deadline, "never completed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            driver.stop().await.unwrap();
        })
    });
    let text = handle.render();
    assert!(
        text.contains("runnel_saga_started_total{saga=\"gift\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("runnel_saga_completed_total{saga=\"gift\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("runnel_saga_duration_seconds_count{saga=\"gift\",outcome=\"completed\"} 3"),
        "{text}"
    );
}
