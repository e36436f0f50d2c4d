//! The admin listener (`server.admin_listen`, loopback by default): metrics, health and the
//! dead-letter API that `herald dlq` uses while a gateway holds the journal. It is separate
//! from the public listener so that the port Google reaches exposes no admin surface.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/metrics` | Prometheus text |
//! | GET | `/healthz`, `/readyz` | liveness; readiness with the reason when not ready |
//! | GET | `/api/dlq?sink=S&route=R` | dead letters |
//! | GET | `/api/dlq/{id}` | one dead letter |
//! | POST | `/api/dlq/replay` | `{"ids": [..], "sink": "S", "route": "R"}` → replay report |
//! | POST | `/api/dlq/purge` | `{"older_than_ms": N}` → `{"purged": N}` |

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::ingest::Ingest;
use herald_core::journal::{DeadFilter, Journal, now_millis};
use serde::Deserialize;
use serde_json::json;

#[derive(Clone)]
pub struct AdminState {
    pub journal: Arc<Journal>,
    pub sinks: Arc<Vec<String>>,
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

/// The selection of dead letters a request works on (query string or JSON body).
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    #[serde(default)]
    pub ids: Vec<u64>,
    #[serde(default)]
    pub sink: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
    /// Only dead letters older than this many milliseconds.
    #[serde(default)]
    pub older_than_ms: Option<i64>,
}

impl Selection {
    pub fn filter(&self) -> DeadFilter {
        DeadFilter {
            ids: self.ids.clone(),
            sink: self.sink.clone(),
            route: self.route.clone(),
            before: self.older_than_ms.map(|age| now_millis() - age),
        }
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move { (s.metrics)() }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/api/dlq", get(list))
        .route("/api/dlq/{id}", get(show))
        .route("/api/dlq/replay", post(replay))
        .route("/api/dlq/purge", post(purge))
        .with_state(state)
}

/// Binds `addr` and serves until `shutdown` resolves; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (server.admin_listen): {e}"))?;
    let local = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    Ok((local, task))
}

async fn ready(State(s): State<AdminState>) -> Response {
    match s.journal.ready() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(reason) => error(StatusCode::SERVICE_UNAVAILABLE, "not ready", &reason),
    }
}

async fn list(State(s): State<AdminState>, Query(q): Query<Selection>) -> Response {
    match s.journal.dead_letters(&q.filter()) {
        Ok(letters) => Json(letters).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "journal error",
            &e.to_string(),
        ),
    }
}

async fn show(State(s): State<AdminState>, Path(id): Path<u64>) -> Response {
    let filter = DeadFilter {
        ids: vec![id],
        ..DeadFilter::default()
    };
    match s.journal.dead_letters(&filter) {
        Ok(mut letters) if !letters.is_empty() => Json(letters.remove(0)).into_response(),
        Ok(_) => error(
            StatusCode::NOT_FOUND,
            "no such dead letter",
            &format!("no dead letter {id}"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "journal error",
            &e.to_string(),
        ),
    }
}

async fn replay(State(s): State<AdminState>, Json(q): Json<Selection>) -> Response {
    let journal = s.journal.clone();
    let sinks = s.sinks.clone();
    let result = tokio::task::spawn_blocking(move || journal.replay(&q.filter(), &sinks)).await;
    match result {
        Ok(Ok(report)) => Json(report).into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "journal error",
            &e.to_string(),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "replay failed",
            &e.to_string(),
        ),
    }
}

async fn purge(State(s): State<AdminState>, Json(q): Json<Selection>) -> Response {
    let journal = s.journal.clone();
    let result = tokio::task::spawn_blocking(move || journal.purge(&q.filter())).await;
    match result {
        Ok(Ok(n)) => Json(json!({"purged": n})).into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "journal error",
            &e.to_string(),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "purge failed",
            &e.to_string(),
        ),
    }
}

fn error(status: StatusCode, error: &str, reason: &str) -> Response {
    (status, Json(json!({"error": error, "reason": reason}))).into_response()
}
