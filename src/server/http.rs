//! The operations endpoint: `/healthz` (alive), `/readyz` (a table is published and every source
//! has delivered; otherwise 503 naming what is missing; either way one line per source and its
//! state), `/metrics` (Prometheus text), `/explain` (`explain.rs`) and the HTML status page
//! `/status` (`status.rs`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;

use super::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/explain", get(super::explain::handler))
        .route("/status", get(super::status::handler))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    let mut missing = Vec::new();
    // Every source gets a line, ready or not: an operator reading a 503 sees what does work too
    // (each Kubernetes cluster is its own source, `kubernetes:NAME`).
    let mut lines = Vec::new();
    let now = std::time::Instant::now();
    for (name, state) in shared.sources.snapshot() {
        let note = state
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        if !state.loaded && !state.holds_readiness(now) {
            // One dead member must not make every replica NotReady (issue 11 §6).
            lines.push(format!(
                "source {name}: not synced within its sync_timeout; ready without it{}",
                state
                    .last_error
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        } else if !state.loaded {
            missing.push(format!(
                "source {name}: not ready: has not delivered a snapshot{}",
                state
                    .last_error
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
        } else if let Some(e) = state.last_error {
            lines.push(format!(
                "source {name}: serving last good data; latest load failed: {e}"
            ));
        } else {
            lines.push(format!("source {name}: ready{note}"));
        }
    }
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        // First, so that a load balancer stops sending here at once.
        missing.insert(0, "shutting down (lame duck: still answering DNS)".into());
    }
    let table = shared.table.load();
    if !table.is_ready() {
        missing.push("no answer table published yet".into());
    }
    let mut body = if missing.is_empty() {
        format!(
            "ready: table generation {} serial {}\n",
            table.generation, table.serial
        )
    } else {
        format!("not ready:\n{}\n", missing.join("\n"))
    };
    for l in lines {
        body.push_str(&l);
        body.push('\n');
    }
    let status = if missing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

async fn metrics(
    State(shared): State<Arc<Shared>>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(),
    )
}
