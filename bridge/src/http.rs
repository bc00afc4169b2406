//! The HTTP side: Prometheus `/metrics`, `/healthz` (the process answers),
//! `/readyz` (listeners bound and flows running) and the operators' API
//! (datasets, dead letters).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::Path;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::datasets::{valid_key, DatasetStore};
use crate::deadletter::DeadLetters;
use crate::flow::ReplayRequest;
use crate::health::FlowHealth;
use crate::metrics::Metrics;

pub struct HttpState {
    pub metrics: Metrics,
    pub ready: AtomicBool,
    pub datasets: Arc<DatasetStore>,
    pub dead_letters: DeadLetters,
    pub health: Arc<FlowHealth>,
    /// Each running flow's replay channel, by flow name.
    pub replays: HashMap<String, mpsc::Sender<ReplayRequest>>,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/api/v1/datasets", get(list_datasets))
        .route("/api/v1/deadletters/{flow}", get(list_dead_letters))
        .route(
            "/api/v1/deadletters/{flow}/replay",
            post(replay_dead_letters),
        )
        .route("/api/v1/datasets/{key}", put(put_dataset))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.encode(),
    )
}

/// 200 once running with no parked flow; 503 while starting, or naming
/// each parked flow and why.
async fn ready(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string());
    }
    let parked = state.health.parked();
    if parked.is_empty() {
        return (StatusCode::OK, "ready\n".to_string());
    }
    let lines: String = parked
        .iter()
        .map(|(flow, reason)| format!("flow '{flow}' parked: {reason}\n"))
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, lines)
}

/// `{"flow": "...", "deadLetters": [...]}`
async fn list_dead_letters(
    State(state): State<Arc<HttpState>>,
    Path(flow): Path<String>,
) -> impl IntoResponse {
    if !valid_key(&flow) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "invalid flow name"})),
        );
    }
    match state.dead_letters.list(&flow) {
        Ok(letters) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"flow": flow, "deadLetters": letters})),
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({"error": err.to_string()})),
        ),
    }
}

/// Sends the flow's dead letters again and answers when done:
/// `{"flow": "...", "replayed": 1, "deadLetteredAgain": 0}`. While the
/// endpoint is down the answer waits, as the flow's own data does.
async fn replay_dead_letters(
    State(state): State<Arc<HttpState>>,
    Path(flow): Path<String>,
) -> impl IntoResponse {
    let failed = |status: StatusCode, error: String| (status, axum::Json(json!({"error": error})));
    let Some(replays) = state.replays.get(&flow) else {
        return failed(
            StatusCode::NOT_FOUND,
            format!("no running data flow is named '{flow}'"),
        );
    };
    let (reply, answer) = oneshot::channel();
    if replays.send(ReplayRequest { reply }).await.is_err() {
        return failed(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("data flow '{flow}' has stopped"),
        );
    }
    match answer.await {
        Ok(Ok(report)) => {
            let mut body = serde_json::to_value(report).unwrap_or_default();
            body["flow"] = json!(flow);
            (StatusCode::OK, axum::Json(body))
        }
        Ok(Err(error)) => failed(StatusCode::INTERNAL_SERVER_ERROR, error),
        Err(_) => failed(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("data flow '{flow}' stopped during the replay"),
        ),
    }
}

/// `{"datasets":[{"key":"assets","records":2}]}`
async fn list_datasets(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let list: Vec<_> = state
        .datasets
        .summary()
        .into_iter()
        .map(|(key, records)| serde_json::json!({"key": key, "records": records}))
        .collect();
    axum::Json(serde_json::json!({ "datasets": list }))
}

/// Replaces a dataset with the JSON Lines in the body.
async fn put_dataset(
    State(state): State<Arc<HttpState>>,
    Path(key): Path<String>,
    body: String,
) -> impl IntoResponse {
    if !valid_key(&key) {
        let message =
            format!("'{key}' is not a valid dataset key (letters, digits, '-', '_', '.')\n");
        return (StatusCode::BAD_REQUEST, message);
    }
    match state.datasets.replace(&key, &body) {
        Ok(records) => (
            StatusCode::OK,
            format!("dataset '{key}' replaced: {records} records\n"),
        ),
        Err(err) => (
            StatusCode::BAD_REQUEST,
            format!("dataset '{key}' not replaced: {err}\n"),
        ),
    }
}

pub async fn serve(listener: TcpListener, state: Arc<HttpState>) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
