//! The JSON the console's pages read besides the existing admin API (docs/architecture.md
//! §12): `GET /api/overview`, `GET /api/config` and `POST /api/try`. Guarded like the rest of
//! `/api/*` (`super::guard`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use herald_core::config::QueueEngine;
use herald_core::queue::Tapped;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::admin::AdminState;

/// How many recent events the overview keeps.
const RECENT: usize = 20;

/// What this gateway routed since it started: per source a count and the last event, and the
/// last few events (fed by the same tap as `herald tap`). Per gateway: with a shared queue,
/// another gateway's events are not here.
#[derive(Default)]
pub struct Activity {
    inner: Mutex<ActivityInner>,
}

#[derive(Default)]
struct ActivityInner {
    sources: BTreeMap<String, SourceActivity>,
    recent: VecDeque<Arc<Tapped>>,
}

#[derive(Clone, Serialize)]
struct SourceActivity {
    events: u64,
    last: Value,
}

impl Activity {
    /// Follows the queue's tap until `stop`.
    pub fn follow(
        self: Arc<Self>,
        journal: &dyn herald_core::queue::Queue,
        stop: CancellationToken,
    ) {
        let mut rx = journal.tap();
        tokio::spawn(async move {
            loop {
                let tapped = tokio::select! {
                    _ = stop.cancelled() => return,
                    t = rx.recv() => t,
                };
                match tapped {
                    Ok(t) => self.record(t),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    fn record(&self, tapped: Arc<Tapped>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let e = &tapped.event;
        let entry = inner
            .sources
            .entry(e.source.clone())
            .or_insert_with(|| SourceActivity {
                events: 0,
                last: Value::Null,
            });
        entry.events += 1;
        entry.last = json!({"id": e.id, "type": e.ty, "subject": e.subject, "time": e.time_text()});
        if inner.recent.len() == RECENT {
            inner.recent.pop_front();
        }
        inner.recent.push_back(tapped);
    }
}

/// `GET /api/overview`: the gateway, readiness, the queue, each sink, each source, recent
/// events.
pub async fn overview(State(s): State<AdminState>) -> Response {
    let config = s.reloader.current().await;
    let stats = match s.journal.stats().await {
        Ok(stats) => Some(stats),
        Err(e) => {
            tracing::warn!(error = %e, "overview: queue statistics unavailable");
            None
        }
    };
    let metrics = Metrics::parse(&(s.metrics)());
    let sinks: Vec<Value> = config
        .sinks
        .iter()
        .map(|sink| {
            let n = &sink.name;
            json!({
                "name": n,
                "type": sink.type_name,
                "destination": sink.spec.describe(),
                "pending": stats.as_ref().and_then(|st| st.pending.get(n).copied()).unwrap_or(0),
                "delivered": metrics.get("herald_deliveries_total", &[("sink", n), ("outcome", "delivered")]),
                "retried": metrics.get("herald_deliveries_total", &[("sink", n), ("outcome", "retry")]),
                "dead": metrics.get("herald_deliveries_total", &[("sink", n), ("outcome", "dead")]),
                "circuit": match metrics.get("herald_circuit_state", &[("sink", n)]) as u64 {
                    0 => "closed",
                    1 => "half-open",
                    _ => "open",
                },
            })
        })
        .collect();
    let (sources, recent) = {
        let inner = s.activity.inner.lock().unwrap_or_else(|p| p.into_inner());
        let sources: Vec<Value> = config
            .sources
            .iter()
            .map(|src| {
                let a = inner.sources.get(&src.name);
                json!({
                    "name": src.name,
                    "type": src.type_name,
                    "events": a.map_or(0, |a| a.events),
                    "last": a.map_or(Value::Null, |a| a.last.clone()),
                })
            })
            .collect();
        let recent: Vec<Value> = inner
            .recent
            .iter()
            .rev()
            .map(|t| serde_json::to_value(&**t).unwrap_or(Value::Null))
            .collect();
        (sources, recent)
    };
    let ready = match s.journal.ready() {
        Ok(()) => json!({"ready": true, "notes": s.journal.notes()}),
        Err(reason) => json!({"ready": false, "reason": reason, "notes": s.journal.notes()}),
    };
    let started = s.started;
    Json(json!({
        "gateway": {
            "holder": s.journal.holder(),
            "engine": s.journal.engine().name(),
            "shared": s.journal.engine() != QueueEngine::Local,
            "started": started,
            "config": config.file.display().to_string(),
        },
        "readiness": ready,
        "queue": stats.as_ref().map(|st| json!({
            "undelivered_events": st.undelivered_events,
            "undelivered_bytes": st.undelivered_bytes,
            "dead_letters": st.dead_letters,
            "max_events": config.queue.max_events,
            "max_bytes": config.queue.max_bytes,
        })),
        "sinks": sinks,
        "sources": sources,
        "recent": recent,
    }))
    .into_response()
}

/// `GET /api/config`: the file as loaded (masked), `herald check`'s summary, the last reload.
pub async fn config(State(s): State<AdminState>) -> Response {
    let config = s.reloader.current().await;
    let path = s.reloader.path().to_path_buf();
    let text = tokio::fs::read_to_string(&path)
        .await
        .map(|t| super::mask::mask_yaml(&t))
        .unwrap_or_else(|e| format!("# cannot read {}: {e}", path.display()));
    Json(json!({
        "file": path.display().to_string(),
        "text": text,
        "summary": crate::check::summary(&config),
        "last_reload": s.reloader.last_reload(),
    }))
    .into_response()
}

/// `POST /api/try`: `{"event": "<Event JSON>"}` or `{"source": S, "raw": "...", "headers":
/// ["K: v"]}` → what `herald test --json` prints. Nothing is sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TryRequest {
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    raw: Option<String>,
    #[serde(default)]
    headers: Vec<String>,
}

pub async fn try_route(State(s): State<AdminState>, body: axum::body::Bytes) -> Response {
    let request: TryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad("bad request", &e.to_string()),
    };
    let config = s.reloader.current().await;
    let (input, source) = match (&request.event, &request.source, &request.raw) {
        (Some(event), None, None) => (event.as_str(), None),
        (None, Some(source), Some(raw)) => (raw.as_str(), Some(source.as_str())),
        _ => {
            return bad(
                "bad request",
                "send `event` (an Event JSON), or `source` and `raw` (a raw notification)",
            );
        }
    };
    match crate::try_event::evaluate(&config, input, source, &request.headers) {
        Ok(Some(report)) => Json(report).into_response(),
        Ok(None) => Json(json!({"sync": true, "routes": [], "deliveries": []})).into_response(),
        Err(e) => bad("cannot route this input", &format!("{e:#}")),
    }
}

fn bad(error: &str, reason: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "reason": reason})),
    )
        .into_response()
}

/// Prometheus text, read back by name and labels (the counters the delivery engine keeps,
/// docs/architecture.md §7).
struct Metrics(Vec<Series>);

/// One line of Prometheus text: name, labels, value.
type Series = (String, Vec<(String, String)>, f64);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter_map(|pair| pair.split_once("=\""))
                .map(|(k, v)| (k.trim().to_owned(), v.trim_end_matches('"').to_owned()))
                .collect();
            out.push((name.to_owned(), labels, value));
        }
        Metrics(out)
    }

    /// The sum of the series of `name` carrying all of `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn prometheus_text_reads_back() {
        let m = Metrics::parse(
            "# TYPE herald_deliveries_total counter\nherald_deliveries_total{sink=\"a\",outcome=\"delivered\"} 3\nherald_deliveries_total{sink=\"a\",outcome=\"dead\"} 1\nherald_circuit_state{sink=\"a\"} 2\n",
        );
        assert_eq!(
            m.get(
                "herald_deliveries_total",
                &[("sink", "a"), ("outcome", "delivered")]
            ),
            3.0
        );
        assert_eq!(m.get("herald_circuit_state", &[("sink", "a")]), 2.0);
        assert_eq!(m.get("herald_circuit_state", &[("sink", "b")]), 0.0);
    }
}
