//! `/metrics` (OpenMetrics text), `/healthz` (the process serves) and `/readyz` (the
//! process has what it needs to do its job: watches synced, membership joined).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use thiserror::Error;

/// The endpoint could not be served.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The address cannot be bound (in use, or not local).
    #[error("cannot listen on {address} (--metrics-bind-address): {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the metrics server failed: {0}")]
    Serve(std::io::Error),
}

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct Health {
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// Set once the process is ready; `/readyz` answers 503 until then.
    pub ready: Arc<AtomicBool>,
    /// What `/readyz` says while not ready, e.g. "watches not synced yet".
    pub not_ready: &'static str,
}

/// Serves until the process ends.
pub async fn serve(address: SocketAddr, health: Health) -> Result<(), HttpError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| HttpError::Bind { address, source })?;
    axum::serve(listener, router(health))
        .await
        .map_err(HttpError::Serve)
}

fn router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics(State(health): State<Health>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &health.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(health): State<Health>) -> Response {
    if health.ready.load(Ordering::Relaxed) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, health.not_ready).into_response()
    }
}
