//! The admin listener (`server.admin_listen`, loopback by default): metrics, health and the
//! dead-letter API that `herald dlq` uses while a gateway holds the journal. It reaches the
//! queue only through the storage boundary (`Arc<dyn Queue>`, docs/architecture.md §10). It is separate
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
//! | POST | `/-/reload` | reload routes.yaml; 400 with the errors when it is invalid |
//! | GET | `/-/tap?filter=type=directory.*&route=R` | routed events as JSON lines, live |
//! | GET | `/api/google` | Classroom registrations and Directory channels, with expiry and health |
//! | POST | `/api/google/renew` | `{"name": N}` (or null: all) → `{"renewed": [..]}` |
//! | POST | `/api/google/stop` | `{"name": N}` → `{"stopped": "…"}` |
//! | GET | `/api/overview`, `/api/config` | the console's Overview and Config (`console::views`) |
//! | POST | `/api/try` | the console's "Try a route": `herald test --json` of the body |
//! | GET, POST | `/console…` | the web console (`console`) |
//!
//! With `server.admin_token` set, `/api/*` and `/-/*` want the token or a console session
//! (`console::guard`, docs/architecture.md §12); `/metrics` and the probes stay open.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::console::Actor;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use herald_core::queue::{DeadFilter, Queue, QueueError as JournalError, Tapped, now_millis};
use herald_core::rules::FieldPath;

use crate::reload::{ReloadError, Reloader};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AdminState {
    pub journal: Arc<dyn Queue>,
    pub reloader: Arc<Reloader>,
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Set once the Google lifecycle started (after the public listener); empty when no
    /// source declares registrations or channels.
    pub google: Arc<std::sync::OnceLock<herald_sources::google::Control>>,
    /// The admin token, the console's sessions and logins (docs/architecture.md §12).
    pub security: Arc<crate::console::Security>,
    /// What this gateway routed lately, for the console's overview.
    pub activity: Arc<crate::console::views::Activity>,
    pub started: chrono::DateTime<chrono::Utc>,
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
    let guarded = Router::new()
        .route("/api/dlq", get(list))
        .route("/api/dlq/{id}", get(show))
        .route("/api/dlq/replay", post(replay))
        .route("/api/dlq/purge", post(purge))
        .route("/-/reload", post(reload))
        .route("/-/tap", get(tap))
        .route("/api/google", get(google_status))
        .route("/api/google/renew", post(google_renew))
        .route("/api/google/stop", post(google_stop))
        .route("/api/overview", get(crate::console::views::overview))
        .route("/api/config", get(crate::console::views::config))
        .route("/api/try", post(crate::console::views::try_route))
        .route("/api/outcomes", get(crate::console::views::outcomes))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::console::guard,
        ));
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move { (s.metrics)() }),
        )
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .merge(guarded)
        .merge(crate::console::router())
        .with_state(state)
}

/// Binds `addr` and serves until `stop` is cancelled; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: AdminState,
    stop: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (server.admin_listen): {e}"))?;
    let local = listener.local_addr()?;
    let _ = state.security.local.set(local);
    if !local.ip().is_loopback() && !state.security.token_set() {
        tracing::warn!(admin = %local, "the admin listener is not on loopback and server.admin_token is not set: anyone who reaches it can replay, purge and reload (docs: README, \"The console\")");
    }
    state
        .activity
        .clone()
        .follow(&*state.journal, state.metrics.clone(), stop.clone());
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    Ok((local, task))
}

async fn ready(State(s): State<AdminState>) -> Response {
    // Notes do not make the gateway unready (it still accepts and delivers its own sinks):
    // e.g. deliveries on a shared queue for a sink this gateway lacks.
    let notes = s.journal.notes();
    match s.journal.ready() {
        Ok(()) if notes.is_empty() => Json(json!({"status": "ready"})).into_response(),
        Ok(()) => Json(json!({"status": "ready", "notes": notes})).into_response(),
        Err(reason) if notes.is_empty() => {
            error(StatusCode::SERVICE_UNAVAILABLE, "not ready", &reason)
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "not ready", "reason": reason, "notes": notes})),
        )
            .into_response(),
    }
}

async fn list(State(s): State<AdminState>, Query(q): Query<Selection>) -> Response {
    match s.journal.dead_letters(&q.filter()).await {
        Ok(letters) => Json(letters).into_response(),
        Err(e) => journal_error(&e),
    }
}

async fn show(State(s): State<AdminState>, Path(id): Path<u64>) -> Response {
    // One record read by its id: a damaged one is a 500 naming it, not a 404.
    match s.journal.dead_letter(id).await {
        Ok(Some(letter)) => Json(letter).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no such dead letter",
            &format!("no dead letter {id}"),
        ),
        Err(e) => journal_error(&e),
    }
}

async fn replay(
    State(s): State<AdminState>,
    actor: Option<Extension<Actor>>,
    Json(q): Json<Selection>,
) -> Response {
    let sinks = s.reloader.sink_names().await;
    // The engine does the work off the async threads (the local one on the blocking pool).
    match s.journal.replay(&q.filter(), &sinks).await {
        Ok(report) => {
            tracing::info!(target: "audit", action = "replay", by = %who(&actor), ids = ?q.ids, sink = ?q.sink, route = ?q.route, replayed = report.replayed.len(), skipped = report.skipped.len(), "dead letters replayed");
            Json(report).into_response()
        }
        Err(e) => journal_error(&e),
    }
}

async fn purge(
    State(s): State<AdminState>,
    actor: Option<Extension<Actor>>,
    Json(q): Json<Selection>,
) -> Response {
    match s.journal.purge(&q.filter()).await {
        Ok(n) => {
            tracing::info!(target: "audit", action = "purge", by = %who(&actor), ids = ?q.ids, sink = ?q.sink, route = ?q.route, older_than_ms = ?q.older_than_ms, purged = n, "dead letters purged");
            Json(json!({"purged": n})).into_response()
        }
        Err(e) => journal_error(&e),
    }
}

async fn reload(State(s): State<AdminState>, actor: Option<Extension<Actor>>) -> Response {
    tracing::info!(target: "audit", action = "reload", by = %who(&actor), "reload asked");
    match s.reloader.reload("POST /-/reload").await {
        Ok(report) => Json(json!({"status": "reloaded", "report": report})).into_response(),
        Err(ReloadError::Invalid(errors)) => {
            let list: Vec<String> = errors.to_string().lines().map(str::to_owned).collect();
            let body = json!({"error": "invalid config; the running config stays", "reason": list.join("\n"), "errors": list});
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "reload failed; the running config stays",
            &e.to_string(),
        ),
    }
}

/// `GET /-/tap?filter=type=directory.*&filter=source=classroom&route=R`: every event routed
/// from now on, as JSON lines (chunked), while the client stays connected.
async fn tap(State(s): State<AdminState>, RawQuery(query): RawQuery) -> Response {
    let filter = match TapFilter::parse(query.as_deref().unwrap_or("")) {
        Ok(f) => f,
        Err(reason) => return error(StatusCode::BAD_REQUEST, "bad tap filter", &reason),
    };
    let mut rx = s.journal.tap();
    let stream = async_stream(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(tapped) => {
                    if !filter.matches(&tapped) {
                        continue;
                    }
                    let mut line = serde_json::to_vec(&tapped).unwrap_or_default();
                    line.push(b'\n');
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let line = format!("{{\"lagged\": {n}}}\n").into_bytes();
                    if tx.send(Ok(line)).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// A stream fed by a task through a small channel (ends when the task or the client does).
fn async_stream<F, Fut>(f: F) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Which tapped events a client wants: `field=glob` pairs (all must match) and routes.
#[derive(Debug, Default)]
pub struct TapFilter {
    fields: Vec<(FieldPath, globset::GlobMatcher)>,
    routes: Vec<String>,
}

impl TapFilter {
    pub fn parse(query: &str) -> Result<TapFilter, String> {
        let mut filter = TapFilter::default();
        for (key, value) in form_pairs(query) {
            match key.as_str() {
                "filter" => {
                    let (field, pattern) = value.split_once('=').ok_or_else(|| {
                        format!("`{value}` is not `field=glob`, e.g. `type=directory.*`")
                    })?;
                    let path = FieldPath::parse(field.trim())?;
                    let glob = globset::Glob::new(pattern.trim())
                        .map_err(|e| format!("bad glob `{pattern}`: {}", e.kind()))?;
                    filter.fields.push((path, glob.compile_matcher()));
                }
                "route" => filter.routes.push(value),
                other => {
                    return Err(format!(
                        "unknown tap parameter `{other}`; use filter= and route="
                    ));
                }
            }
        }
        Ok(filter)
    }

    fn matches(&self, tapped: &Tapped) -> bool {
        let fields = self.fields.iter().all(|(path, glob)| {
            path.lookup(&tapped.event)
                .and_then(|f| f.text().map(|t| glob.is_match(t.as_ref())))
                .unwrap_or(false)
        });
        let routes = self.routes.is_empty()
            || tapped
                .deliveries
                .iter()
                .any(|(r, _)| self.routes.contains(r));
        fields && routes
    }
}

/// `a=1&b=x%3Dy` → [("a", "1"), ("b", "x=y")]
pub(crate) fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GoogleName {
    #[serde(default)]
    name: Option<String>,
}

async fn google_status(State(s): State<AdminState>) -> Response {
    let Some(control) = s.google.get() else {
        return Json(json!([])).into_response();
    };
    match control.status().await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, "google lifecycle", &e),
    }
}

async fn google_renew(
    State(s): State<AdminState>,
    actor: Option<Extension<Actor>>,
    body: axum::body::Bytes,
) -> Response {
    let Some(control) = s.google.get() else {
        return no_google();
    };
    let request: GoogleName = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad request", &e.to_string()),
    };
    let name = request.name.clone();
    match control.renew(request.name).await {
        Ok(names) => {
            tracing::info!(target: "audit", action = "renew", by = %who(&actor), name = ?name, renewed = ?names, "Google subscriptions renewed");
            Json(json!({"renewed": names})).into_response()
        }
        Err(e) => {
            tracing::warn!(target: "audit", action = "renew", by = %who(&actor), name = ?name, outcome = "failed", "Google renewal failed: {e}");
            error(StatusCode::BAD_GATEWAY, "renewal failed", &e)
        }
    }
}

async fn google_stop(
    State(s): State<AdminState>,
    actor: Option<Extension<Actor>>,
    body: axum::body::Bytes,
) -> Response {
    let Some(control) = s.google.get() else {
        return no_google();
    };
    let name = match serde_json::from_slice::<GoogleName>(&body) {
        Ok(GoogleName { name: Some(name) }) => name,
        Ok(_) => return error(StatusCode::BAD_REQUEST, "bad request", "`name` is required"),
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad request", &e.to_string()),
    };
    match control.stop(name.clone()).await {
        Ok(done) => {
            tracing::info!(target: "audit", action = "stop", by = %who(&actor), name = %name, "Google subscription stopped");
            Json(json!({"stopped": done})).into_response()
        }
        Err(e) => {
            tracing::warn!(target: "audit", action = "stop", by = %who(&actor), name = %name, outcome = "failed", "Google stop failed: {e}");
            error(StatusCode::BAD_GATEWAY, "stop failed", &e)
        }
    }
}

/// Who asked, as the guard recorded it (docs/architecture.md §12).
fn who(actor: &Option<Extension<Actor>>) -> String {
    actor
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), |Extension(a)| a.0.clone())
}

fn no_google() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no Google lifecycle",
        "no source declares `registrations:` or `watch:`",
    )
}

/// The status of a journal error: 503 when the same request may succeed later by itself (the
/// journal is full, shutting down, or held by another process), 500 when an operator has to
/// look (a damaged journal, an I/O failure). Every kind is named, so a new one needs a choice.
fn journal_status(e: &JournalError) -> (StatusCode, &'static str) {
    match e {
        JournalError::Full(_)
        | JournalError::Closed
        | JournalError::Locked { .. }
        | JournalError::Unavailable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "journal unavailable")
        }
        JournalError::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "journal damaged"),
        JournalError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "journal error"),
    }
}

/// A journal error as an answer, with its message as the reason.
fn journal_error(e: &JournalError) -> Response {
    let (status, what) = journal_status(e);
    error(status, what, &e.to_string())
}

fn error(status: StatusCode, error: &str, reason: &str) -> Response {
    (status, Json(json!({"error": error, "reason": reason}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn journal_errors_answer_503_when_waiting_helps_and_500_otherwise() {
        use herald_core::journal::Limit;
        let cases = [
            (
                JournalError::Full(Limit::Events {
                    undelivered: 5,
                    max: 5,
                }),
                503,
                "journal unavailable",
            ),
            (JournalError::Closed, 503, "journal unavailable"),
            (
                JournalError::Locked {
                    path: "/q/journal.redb".into(),
                },
                503,
                "journal unavailable",
            ),
            (
                JournalError::corrupt("dead letter 7", "the record is not JSON"),
                500,
                "journal damaged",
            ),
            (
                JournalError::io("replaying dead letters", "EIO"),
                500,
                "journal error",
            ),
        ];
        for (e, status, what) in cases {
            let response = journal_error(&e);
            assert_eq!(response.status().as_u16(), status, "{e}");
            let body = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"], what, "{e}");
            assert_eq!(body["reason"], e.to_string(), "the message is the reason");
        }
    }

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            form_pairs("filter=type%3Ddirectory.*&route=new+students&x=%zz"),
            vec![
                ("filter".to_owned(), "type=directory.*".to_owned()),
                ("route".to_owned(), "new students".to_owned()),
                ("x".to_owned(), "%zz".to_owned()),
            ]
        );
    }

    #[test]
    fn tap_filters_say_what_is_wrong() {
        assert!(
            TapFilter::parse("filter=type")
                .unwrap_err()
                .contains("is not `field=glob`")
        );
        assert!(
            TapFilter::parse("filter=tpye=x")
                .unwrap_err()
                .contains("did you mean `type`?")
        );
        assert!(
            TapFilter::parse("nope=1")
                .unwrap_err()
                .contains("unknown tap parameter")
        );
        assert!(TapFilter::parse("filter=type%3Ddirectory.*&route=r").is_ok());
    }
}
