//! The admin HTTP endpoint: `GET /metrics` (OpenMetrics text, for
//! Prometheus), `GET /health` (200 while the call engine answers, 503 when it
//! does not) and `GET /api/v1/status` (a JSON summary for operators and
//! scripts). Everything is read-only.
//!
//! Owns: the listener (bound before Palisade starts serving, so a taken port
//! fails the start), the routes, the connection cap and lifetime that keep a
//! slow or hostile client from holding resources, and the rendering of a
//! [`Sample`] with `prometheus-client`.
//!
//! Does not own: any counter. The engine, the transports, the relay and the
//! guard keep their own; on each request a [`Source`] (the binary) asks the
//! engine task for a snapshot over its bounded control channel and turns it
//! into a [`Sample`]. A scrape therefore costs the data path one message on
//! that channel and nothing else, and a stuck engine shows up here as a 503
//! instead of a hung scrape.
//!
//! Metric names follow `palisade_<area>_<name>_<unit>`; label values are
//! `&'static str`, so they come from the enums of the crates that count, and
//! a family's label set is bounded by construction.
#![forbid(unsafe_code)]

mod listener;
mod render;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

pub use crate::render::render;

/// At most this many admin connections at once; the next waits in the
/// kernel's accept queue.
pub const MAX_CONNECTIONS: usize = 16;
/// An admin connection is closed this long after it was accepted, whatever
/// it is doing (a scrape takes milliseconds).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// How long a request waits for the engine's snapshot before answering 503.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);
/// The content type of `/metrics`.
pub const OPENMETRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Errors, by who is at fault.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The operator or the host: `admin.listen` cannot be bound (in use, not
    /// an address of this host, not permitted).
    #[error("cannot listen on {addr} (admin.listen): {source}")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

/// Counter (only grows; rendered with `_total`) or gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic since start.
    Counter,
    /// A current value.
    Gauge,
}

/// One labelled value of a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Label pairs; empty for an unlabelled metric.
    pub labels: Vec<(&'static str, &'static str)>,
    /// The value.
    pub value: u64,
}

/// One metric family: a name, its help text, its type and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// `palisade_<area>_<name>_<unit>`; counters without the `_total`
    /// suffix, which the encoder adds.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The values, one per label set.
    pub points: Vec<Point>,
}

/// What `/api/v1/status` answers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `node.name`.
    pub node: String,
    /// Palisade's version.
    pub version: &'static str,
    /// Seconds since the process started serving.
    pub uptime_seconds: u64,
    /// Calls in progress.
    pub calls_active: u64,
    /// Whether calls are being refused while the process drains (SIGTERM).
    pub draining: bool,
    /// Where bans are enforced: `nftables`, `in-process` (nftables not
    /// usable: the fallback) or `off` (no guard).
    pub guard_blocking: &'static str,
    /// Whether media is anchored (the relay runs).
    pub media_anchored: bool,
}

/// A snapshot of everything the endpoint reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// The metric families, in the order they are rendered.
    pub families: Vec<Family>,
    /// The status summary.
    pub status: Status,
}

impl Sample {
    /// Adds an unlabelled counter.
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.push(name, help, Kind::Counter, vec![Point::plain(value)]);
    }

    /// Adds an unlabelled gauge.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: u64) {
        self.push(name, help, Kind::Gauge, vec![Point::plain(value)]);
    }

    /// Adds a counter family with one label `key`, one point per `(value, count)`.
    pub fn counter_by(
        &mut self,
        name: &'static str,
        help: &'static str,
        key: &'static str,
        values: &[(&'static str, u64)],
    ) {
        self.by(name, help, Kind::Counter, key, values);
    }

    /// Adds a gauge family with one label `key`, one point per `(value, count)`.
    pub fn gauge_by(
        &mut self,
        name: &'static str,
        help: &'static str,
        key: &'static str,
        values: &[(&'static str, u64)],
    ) {
        self.by(name, help, Kind::Gauge, key, values);
    }

    fn by(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        key: &'static str,
        values: &[(&'static str, u64)],
    ) {
        let points = values
            .iter()
            .map(|&(v, n)| Point {
                labels: vec![(key, v)],
                value: n,
            })
            .collect();
        self.push(name, help, kind, points);
    }

    fn push(&mut self, name: &'static str, help: &'static str, kind: Kind, points: Vec<Point>) {
        self.families.push(Family {
            name,
            help,
            kind,
            points,
        });
    }

    /// The value of the unlabelled metric `name`, or of its point with label
    /// value `label`; for tests and the status line.
    pub fn value(&self, name: &str, label: Option<&str>) -> Option<u64> {
        let f = self.families.iter().find(|f| f.name == name)?;
        f.points
            .iter()
            .find(|p| match label {
                None => p.labels.is_empty(),
                Some(l) => p.labels.iter().any(|(_, v)| *v == l),
            })
            .map(|p| p.value)
    }
}

impl Point {
    fn plain(value: u64) -> Self {
        Point {
            labels: Vec::new(),
            value,
        }
    }
}

/// A boxed future of a snapshot.
pub type SampleFuture<'a> = Pin<Box<dyn Future<Output = Option<Sample>> + Send + 'a>>;

/// Where samples come from: the binary, which asks the engine task.
pub trait Source: Send + Sync + 'static {
    /// A fresh snapshot; `None` when the engine is gone or did not answer.
    fn sample(&self) -> SampleFuture<'_>;
}

/// A bound admin listener, not yet serving.
#[derive(Debug)]
pub struct AdminListener {
    listener: tokio::net::TcpListener,
    local: SocketAddr,
}

impl AdminListener {
    /// Binds `addr` now (before Palisade serves anything, so a taken port
    /// fails the start). Needs a tokio runtime with I/O enabled.
    pub fn bind(addr: SocketAddr) -> Result<Self, AdminError> {
        let bind = |source| AdminError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let local = std_listener.local_addr().map_err(bind)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind)?;
        Ok(AdminListener { listener, local })
    }

    /// The address bound (the port, when `admin.listen` asked for 0 in tests).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `shutdown` completes.
    pub async fn serve(
        self,
        source: Arc<dyn Source>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = router(source);
        let listener = listener::Capped::new(self.listener, MAX_CONNECTIONS, CONNECTION_LIFETIME);
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

type Shared = Arc<dyn Source>;

fn router(source: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/api/v1/status", get(status))
        .fallback(not_found)
        .with_state(source)
}

async fn sample(source: &Shared) -> Option<Sample> {
    tokio::time::timeout(SAMPLE_TIMEOUT, source.sample())
        .await
        .ok()
        .flatten()
}

/// A plain-text answer.
fn text(status: StatusCode, body: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn unavailable() -> Response {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "the call engine did not answer\n",
    )
}

async fn metrics(State(source): State<Shared>) -> Response {
    let Some(s) = sample(&source).await else {
        return unavailable();
    };
    match render(s) {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot render the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn health(State(source): State<Shared>) -> Response {
    match sample(&source).await {
        Some(s) if s.status.draining => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        Some(_) => text(StatusCode::OK, "ok\n"),
        None => unavailable(),
    }
}

async fn status(State(source): State<Shared>) -> Response {
    let Some(s) = sample(&source).await else {
        return unavailable();
    };
    match serde_json::to_string_pretty(&s.status) {
        Ok(mut body) => {
            body.push('\n');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn not_found() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "not found: try /metrics, /health or /api/v1/status\n",
    )
}

#[cfg(test)]
mod tests;
