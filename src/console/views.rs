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
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
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
    recent: VecDeque<Tapped>,
    /// Per sink: deliveries and failures (retries and dead letters) a minute, the last hour.
    sinks: BTreeMap<String, SinkActivity>,
}

#[derive(Clone)]
struct SourceActivity {
    events: u64,
    /// The source's last event, shared with `recent`; its summary (`last_json`) is built when
    /// the overview is read, not per event (docs/architecture.md §12, README "Benchmark").
    last: Tapped,
    /// Events a second, the last minute.
    per_second: Buckets,
}

#[derive(Clone)]
struct SinkActivity {
    /// `herald_deliveries_total` as last sampled: delivered, failed.
    seen: (f64, f64),
    delivered: Buckets,
    failed: Buckets,
}

/// Counts in the last `len` buckets of `width` seconds each (a ring: the bucket of second
/// `t` is `t / width`; a bucket older than `len` buckets is reused).
#[derive(Clone, Debug)]
pub struct Buckets {
    width: i64,
    counts: Vec<u64>,
    /// The bucket number each slot of `counts` holds.
    at: Vec<i64>,
}

impl Buckets {
    pub fn new(width: i64, len: usize) -> Buckets {
        Buckets {
            width: width.max(1),
            counts: vec![0; len.max(1)],
            at: vec![i64::MIN; len.max(1)],
        }
    }

    fn slot(&self, bucket: i64) -> usize {
        // `len` fits in i64 and rem_euclid is never negative.
        bucket.rem_euclid(self.counts.len() as i64) as usize
    }

    /// Adds `n` at `now` (unix seconds).
    pub fn add(&mut self, now: i64, n: u64) {
        let bucket = now.div_euclid(self.width);
        let slot = self.slot(bucket);
        if self.at[slot] != bucket {
            self.at[slot] = bucket;
            self.counts[slot] = 0;
        }
        self.counts[slot] = self.counts[slot].saturating_add(n);
    }

    /// The counts of the last `len` buckets at `now`, oldest first, the current one last.
    pub fn series(&self, now: i64) -> Vec<u64> {
        let current = now.div_euclid(self.width);
        let len = self.counts.len() as i64;
        (current - len + 1..=current)
            .map(|b| {
                let slot = self.slot(b);
                if self.at[slot] == b {
                    self.counts[slot]
                } else {
                    0
                }
            })
            .collect()
    }

    /// The sum of the last `len` buckets at `now`.
    pub fn total(&self, now: i64) -> u64 {
        self.series(now).iter().sum()
    }
}

/// The overview's summary of a source's last event.
fn last_json(tapped: &Tapped) -> Value {
    let e = &tapped.event;
    json!({"id": e.id, "type": e.ty, "subject": e.subject, "time": e.time_text()})
}

/// The chart's buckets: one a minute, the last hour.
pub const CHART_BUCKET_S: i64 = 60;
pub const CHART_BUCKETS: usize = 60;

impl ActivityInner {
    /// One tapped event, at `now`.
    fn record(&mut self, tapped: Tapped, now: i64) {
        match self.sources.get_mut(tapped.event.source.as_str()) {
            Some(entry) => {
                entry.events += 1;
                entry.per_second.add(now, 1);
                entry.last = tapped.clone();
            }
            None => {
                let mut per_second = Buckets::new(1, 60);
                per_second.add(now, 1);
                self.sources.insert(
                    tapped.event.source.to_string(),
                    SourceActivity {
                        events: 1,
                        last: tapped.clone(),
                        per_second,
                    },
                );
            }
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(tapped);
    }
}

/// How often the deliveries counters are sampled into the charts (also at each overview).
const SAMPLE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Activity {
    /// Follows the queue's tap until `stop`, and samples the deliveries counters of
    /// `metrics` into the charts every [`SAMPLE_EVERY`].
    pub fn follow(
        self: Arc<Self>,
        journal: &dyn herald_core::queue::Queue,
        metrics: Arc<dyn Fn() -> String + Send + Sync>,
        stop: CancellationToken,
    ) {
        {
            let (me, stop) = (self.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SAMPLE_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tick.tick() => me.sample(&Metrics::parse(&metrics()), unix_now()),
                    }
                }
            });
        }
        let mut rx = journal.tap();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(RECENT);
            loop {
                let tapped = tokio::select! {
                    _ = stop.cancelled() => return,
                    t = rx.recv() => t,
                };
                let first = match tapped {
                    Ok(t) => t,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                // A commit taps its events together: take those waiting already with it,
                // under one lock and one reading of the clock.
                batch.push(first);
                while batch.len() < RECENT {
                    match rx.try_recv() {
                        Ok(t) => batch.push(t),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                        Err(_) => break,
                    }
                }
                self.record(batch.drain(..));
            }
        });
    }

    /// Runs for the events a commit tapped, so it allocates only for a source's first event:
    /// the source is looked up by `&str`, and the last event is kept as the shared `Tapped`.
    fn record(&self, batch: impl IntoIterator<Item = Tapped>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = unix_now();
        for tapped in batch {
            inner.record(tapped, now);
        }
    }

    /// Adds what each sink's `herald_deliveries_total` grew by since the last sample to the
    /// current minute. The counters are where the sink workers count deliveries
    /// (core/src/delivery/worker.rs); sampling them keeps the delivery path unchanged.
    fn sample(&self, metrics: &Metrics, now: i64) {
        let mut totals: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        for (name, labels, value) in &metrics.0 {
            if name != "herald_deliveries_total" {
                continue;
            }
            let label = |k: &str| {
                labels
                    .iter()
                    .find(|(lk, _)| lk == k)
                    .map(|(_, v)| v.as_str())
            };
            let (Some(sink), Some(outcome)) = (label("sink"), label("outcome")) else {
                continue;
            };
            let t = totals.entry(sink).or_default();
            if outcome == "delivered" {
                t.0 += value;
            } else {
                t.1 += value;
            }
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (sink, (delivered, failed)) in totals {
            let entry = inner
                .sinks
                .entry(sink.to_owned())
                .or_insert_with(|| SinkActivity {
                    seen: (0.0, 0.0),
                    delivered: Buckets::new(CHART_BUCKET_S, CHART_BUCKETS),
                    failed: Buckets::new(CHART_BUCKET_S, CHART_BUCKETS),
                });
            // Counters only grow; the difference is a whole number.
            let grew = |now: f64, seen: f64| (now - seen).max(0.0).round() as u64;
            entry.delivered.add(now, grew(delivered, entry.seen.0));
            entry.failed.add(now, grew(failed, entry.seen.1));
            entry.seen = (delivered, failed);
        }
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
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
    let now = unix_now();
    s.activity.sample(&metrics, now);
    let next_retries = s.journal.next_retries().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "overview: next retries unavailable");
        BTreeMap::new()
    });
    let charts: BTreeMap<String, Value> = {
        let inner = s.activity.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner
            .sinks
            .iter()
            .map(|(name, a)| {
                (
                    name.clone(),
                    json!({"delivered": a.delivered.series(now), "failed": a.failed.series(now)}),
                )
            })
            .collect()
    };
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
                "next_retry": next_retries.get(n).and_then(|ms| chrono::DateTime::from_timestamp_millis(*ms)),
                "chart": charts.get(n).cloned().unwrap_or_else(|| json!({
                    "delivered": vec![0; CHART_BUCKETS], "failed": vec![0; CHART_BUCKETS],
                })),
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
                    "per_second": a.map_or(0.0, |a| a.per_second.total(now) as f64 / 60.0),
                    "last": a.map_or(Value::Null, |a| last_json(&a.last)),
                })
            })
            .collect();
        let recent: Vec<Value> = inner
            .recent
            .iter()
            .rev()
            .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
            .collect();
        (sources, recent)
    };
    let ready = match s.journal.ready() {
        Ok(()) => json!({"ready": true, "notes": s.journal.notes()}),
        Err(reason) => json!({"ready": false, "reason": reason, "notes": s.journal.notes()}),
    };
    let started = s.started;
    let shared = s.journal.engine() != QueueEngine::Local;
    let gateways = if shared {
        s.journal.gateways().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "overview: the gateways sharing the queue are unavailable");
            Vec::new()
        })
    } else {
        Vec::new()
    };
    let gateways: Vec<Value> = gateways
        .iter()
        .map(|g| {
            json!({
                "holder": g.holder,
                "version": g.version,
                "started": chrono::DateTime::from_timestamp_millis(g.started),
                "last_seen": chrono::DateTime::from_timestamp_millis(g.last_seen),
                "this": g.holder == s.journal.holder(),
            })
        })
        .collect();
    Json(json!({
        "gateway": {
            "holder": s.journal.holder(),
            "engine": s.journal.engine().name(),
            "shared": shared,
            "started": started,
            "config": config.file.display().to_string(),
            // The views of the whole cluster and those of this gateway only (§12).
            "cluster_views": ["queue", "dead letters", "Google subscriptions", "next retry"],
            "gateway_views": ["live events", "recent events", "events/s", "charts", "delivery counts", "circuit state"],
            "lease_ms": s.journal.lease().as_millis() as u64,
            "gateways": gateways,
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

/// `GET /api/outcomes?source=S&id=I&route=R&sink=K[&route=…&sink=…]`: the last outcome this
/// gateway recorded for each `(route, sink)` delivery of event `(source, id)`
/// (`herald_core::delivery::outcomes`): `delivered`, `retrying`, `dead`, or `null` when this
/// gateway has not attempted it (not yet, or another gateway did). Per gateway.
pub async fn outcomes(axum::extract::RawQuery(query): axum::extract::RawQuery) -> Response {
    let pairs = crate::admin::form_pairs(query.as_deref().unwrap_or(""));
    let one = |k: &str| {
        pairs
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.as_str())
    };
    let (Some(source), Some(id)) = (one("source"), one("id")) else {
        return bad(
            "bad request",
            "send `source` and `id`, and `route` and `sink` pairs",
        );
    };
    let routes = pairs.iter().filter(|(k, _)| k == "route").map(|(_, v)| v);
    let sinks = pairs.iter().filter(|(k, _)| k == "sink").map(|(_, v)| v);
    let out: Vec<Value> = routes
        .zip(sinks)
        .take(256)
        .map(|(route, sink)| {
            json!({
                "route": route,
                "sink": sink,
                "outcome": herald_core::delivery::outcomes::last(source, id, route, sink),
            })
        })
        .collect();
    Json(out).into_response()
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

#[cfg(test)]
mod bucket_tests {
    use super::Buckets;

    #[test]
    fn buckets_count_the_last_n_and_forget_older_ones() {
        let mut b = Buckets::new(60, 3);
        b.add(0, 1);
        b.add(59, 2);
        b.add(60, 5);
        assert_eq!(b.series(60), vec![0, 3, 5]);
        assert_eq!(b.series(179), vec![3, 5, 0]);
        assert_eq!(b.series(180), vec![5, 0, 0], "the first minute is out");
        b.add(240, 7);
        assert_eq!(
            b.series(240),
            vec![0, 0, 7],
            "its slot reused, not added to"
        );
        assert_eq!(b.total(240), 7);
    }
}

#[cfg(test)]
mod activity_tests {
    use std::sync::Arc;

    use herald_core::Event;
    use herald_core::queue::Tapped;
    use serde_json::json;

    use super::{Activity, RECENT, last_json, unix_now};

    fn tapped(id: &str, source: &str) -> Tapped {
        let event = Event::new(
            id,
            source,
            "directory.users.add",
            chrono::Utc::now(),
            json!({}),
        );
        Tapped {
            event: Arc::new(event),
            deliveries: Arc::new([]),
        }
    }

    #[test]
    fn each_source_counts_its_events_and_keeps_its_last() {
        let activity = Activity::default();
        // As a commit taps them: many at once, then one.
        activity.record((0..RECENT + 5).map(|i| tapped(&format!("d{i}"), "directory")));
        activity.record(vec![tapped("c1", "classroom")]);
        let inner = activity.inner.lock().unwrap();
        let d = &inner.sources["directory"];
        assert_eq!(d.events, RECENT as u64 + 5);
        assert_eq!(d.per_second.total(unix_now()), RECENT as u64 + 5);
        let last = last_json(&d.last);
        assert_eq!(last["id"], format!("d{}", RECENT + 4));
        assert_eq!(last["type"], "directory.users.add");
        assert_eq!(last["time"], d.last.event.time_text());
        assert_eq!(inner.sources["classroom"].events, 1);
        assert_eq!(last_json(&inner.sources["classroom"].last)["id"], "c1");
        assert_eq!(inner.recent.len(), RECENT);
        assert_eq!(inner.recent.back().unwrap().event.id, "c1");
    }
}
