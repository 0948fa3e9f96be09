//! The `[[sagas]]` of `runnel.toml`, run by the server: a driver per saga type
//! ([`runnel_saga::SagaDriver`]) started when the application is built and stopped, before
//! the backend closes, when it stops; and the operator's view ([`runnel_saga::Sagas`]) the
//! `/v1/sagas` routes read.
//!
//! It exists so that users who write no Rust get sagas whose steps are services in any
//! language consuming over HTTP: the binary validates the tables and hands the sagas to
//! [`crate::App::run_sagas`]. Mirrors the correlation index's task (`run_trace_index`):
//! started again after a failure, every few seconds, until shutdown.

use std::time::Duration;

use runnel_saga::{Saga, SagaDriver, SagaHandle, SagaOptions, Sagas};

use crate::routes::AppState;

/// Starts every saga's driver with this server's instance id (a restarted server re-adopts
/// its homes at once), keeps them until shutdown, then stops them (each commits what it
/// applied and releases its partitions).
pub(crate) async fn run_saga_drivers(state: AppState, sagas: Vec<Saga>) {
    let options = SagaOptions {
        instance_id: state.consumers.instance().map(str::to_string),
        ..SagaOptions::default()
    };
    let mut handles: Vec<SagaHandle> = Vec::with_capacity(sagas.len());
    for saga in sagas {
        let name = saga.name().to_string();
        loop {
            if state.shutdown.is_triggered() {
                return stop_all(handles).await;
            }
            match SagaDriver::start(&state.runnel, saga.clone(), options.clone()).await {
                Ok(handle) => {
                    tracing::info!(saga = %name, "saga driver started");
                    handles.push(handle);
                    break;
                }
                Err(error) => {
                    tracing::warn!(saga = %name, %error, "the saga driver could not start; trying again in 5 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = state.shutdown.wait() => return stop_all(handles).await,
                    }
                }
            }
        }
    }
    state.shutdown.wait().await;
    stop_all(handles).await;
}

async fn stop_all(handles: Vec<SagaHandle>) {
    for handle in handles {
        let name = handle.saga().to_string();
        if let Err(error) = handle.stop().await {
            tracing::warn!(saga = %name, %error, "the saga driver did not stop cleanly");
        }
    }
}

/// The operator's view for the routes: the server's sagas, or none configured.
pub(crate) fn view(state: &AppState) -> Option<&Sagas> {
    state.sagas.get()
}
