//! Runnel's HTTP server: the runtime behind one HTTP API.
//!
//! Polyglot services publish CloudEvents 1.0 over HTTP (structured, binary and batch modes of
//! the HTTP binding), consume as groups with pull/ack/nack or Server-Sent Events, and
//! operators administer streams and dead-letter queues, the schema registry (under
//! `/registry`), and read health, readiness and Prometheus metrics. `GET /openapi.json`
//! describes every route; `docs/http-api.md` says the same for people.
//!
//! The server knows no storage format and holds no business rule: handlers parse, check the
//! caller's scope, call `runnel-runtime` and map the result (`routes`). What is particular to
//! HTTP lives here, each in its module:
//! - [`config`]: the one config struct, layered defaults → file → environment → flags;
//! - [`auth`]: API keys and scopes;
//! - [`binding`]: the CloudEvents HTTP binding;
//! - [`consume`]: a runtime consumer per group and the receipt table behind ack/nack;
//! - [`features`]: the feature pipelines the binary started beside the server;
//! - [`models`]: the inference stages (`[[models]]`) the binary started beside the server;
//! - [`problem`]: RFC 9457 problem documents, the one error type of every handler;
//! - [`tls`]: HTTPS from `tls_cert`/`tls_key`, reloaded without dropping connections;
//! - [`metrics`], [`openapi`], and [`server`] (start, graceful stop).
//!
//! Invariants:
//! - A publish is answered 202 only after the runtime says the events are durable; a batch
//!   is validated whole before anything is appended.
//! - Nothing a client sends yields a 5xx: bad input is a 4xx problem naming the field.
//! - Without API keys the server listens on loopback only; other addresses are refused at
//!   start. With keys, another address needs TLS (or `allow_plaintext` said on purpose), so
//!   keys do not cross a network in clear by accident.
//! - What the server holds for consumers is bounded by the runtime's `max_in_flight` and
//!   `max_ack_pending`; long polls are bounded by `max_pull_messages` and `max_pull_wait_ms`.

mod accept;
pub mod auth;
pub mod binding;
pub mod codes;
pub mod config;
pub mod consume;
pub mod extract;
pub mod features;
pub mod limits;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod problem;
pub mod routes;
mod sagas;
pub mod server;
mod stages;
#[cfg(feature = "test-util")]
pub mod test_certs;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod tls;
pub mod views;

pub use config::{ApiKeyConfig, ConfigError, ServerConfig};
pub use problem::{ApiError, Problem};
pub use server::{App, Server, ServerError};
pub use tls::{TlsError, TlsReloader};
