//! The admin server: `GET /metrics` (Prometheus text), `GET /healthz` (the process answers) and
//! `GET /readyz` (see [`super::health`]), on the address given with `--admin-address`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use super::catalog::{BUCKETS, RESIDENT_MEMORY, describe_all};
use super::health::readiness;

/// The content type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// A running admin server.
#[derive(Debug)]
pub struct AdminServer {
    /// The address it listens on (the port chosen when `:0` was given).
    pub address: SocketAddr,
}

/// Why the admin server did not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address is taken or not this machine's.
    #[error(
        "cannot listen on the admin address {address}: {source} (choose another with --admin-address)"
    )]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// A recorder is installed already (a bug: one admin server per process).
    #[error("the metrics recorder could not be installed: {0}")]
    Recorder(String),
}

/// Installs the process's metrics recorder and serves the admin endpoints on `address` for as
/// long as the process runs (health checks must answer until the very end of a shutdown).
pub async fn start(address: SocketAddr) -> Result<AdminServer, AdminError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| AdminError::Bind { address, source })?;
    let address = listener
        .local_addr()
        .map_err(|source| AdminError::Bind { address, source })?;
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| AdminError::Recorder(e.to_string()))?;
    describe_all();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(handle)).await {
            tracing::error!(error = %e, "the admin server stopped");
        }
    });
    tracing::info!(%address, "admin endpoints: /metrics, /healthz, /readyz");
    Ok(AdminServer { address })
}

/// The admin routes.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(handle)
}

async fn scrape(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    if let Some(bytes) = crate::progress::resident_memory_bytes() {
        metrics::gauge!(RESIDENT_MEMORY).set(bytes as f64);
    }
    ([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], handle.render())
}

async fn ready() -> (StatusCode, String) {
    match readiness().report(Instant::now()) {
        Ok(checks) => (StatusCode::OK, format!("ready\n{checks}\n")),
        Err(failing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{failing}\n"),
        ),
    }
}
