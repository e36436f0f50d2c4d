//! The webhook the Directory API POSTs to. In order: the channel token (401 when missing,
//! 403 when it matches none of `channel_tokens`, compared in constant time), the
//! `channel_ids` allow-list (403), the body limit (413), then decoding. 200 once the event is
//! committed; a `sync` message is counted and answered 200, and committed only with
//! `route_sync: true`.
//!
//! Besides `channel_tokens`, the tokens of the channels Herald opened itself (`watch:`) are
//! accepted, and each `sync` is reported to the lifecycle loop, which stops a replaced
//! channel once its successor synced. While two channels of one watch overlap, Google
//! sends each change on both: a change on a channel Herald opened whose user `id` and `etag`
//! (with the resource URI and state) was committed from another such channel within the
//! last [`OVERLAP_WINDOW`] is acknowledged as a duplicate. Changes on the channels of
//! `channel_tokens` (made by the operator, who renews them) are not remembered for this:
//! Herald does not know which of them overlap, and the journal's own duplicate suppression
//! still catches a retried message.
//! That memory is in-process and bounded; after a restart mid-overlap a duplicate may
//! pass, which at-least-once delivery allows. On a queue shared by several gateways the
//! queue remembers it too (`Ingest::first_channel`, a marker per change kept for the
//! window), since Google may send the two copies to two gateways.
//!
//! A request with a valid token that cannot be decoded (a missing header, a message number
//! that is not a number, a body that is not JSON) is answered 400 with the header or field
//! named, as the Directory API expects; since Google does not retry a 4xx it is also kept
//! as a rejected input, so that nothing it sent is lost. Without a valid token nothing is
//! stored.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use subtle::{Choice, ConstantTimeEq};

use super::config::DirectorySpec;
use super::decode::{self, CHANNEL_ID, CHANNEL_TOKEN, DirectoryMessage, Found};
use crate::answer::{Problem, clip, empty_reusing, read_body};
use crate::google::Links;
use crate::intake::Intake;
use crate::telemetry;

/// Channels expiring sooner than this are warned about.
const EXPIRY_WARNING: chrono::TimeDelta = chrono::TimeDelta::hours(1);
/// Bound on the channels remembered for the expiry warning.
const MAX_REMEMBERED: usize = 10_000;
/// How long a committed change is remembered to recognise its copy from an overlapping
/// channel: the overlap lasts until the new channel's `sync`, at most a few minutes.
pub const OVERLAP_WINDOW: Duration = Duration::from_secs(600);
/// Bound on the changes remembered for that.
const MAX_CHANGES: usize = 100_000;

pub struct DirectoryState {
    pub intake: Intake,
    pub spec: DirectorySpec,
    pub body_limit: u64,
    pub links: Links,
    /// Channel → the expiration already warned about, so each is warned about once.
    warned: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Channel → the expiration last set on its gauge, so the gauge is set when it changes
    /// rather than on every message.
    exposed: Mutex<HashMap<String, i64>>,
    changes: Mutex<Changes>,
}

impl DirectoryState {
    pub fn new(intake: Intake, spec: DirectorySpec, body_limit: u64, links: Links) -> Self {
        DirectoryState {
            intake,
            spec,
            body_limit,
            links,
            warned: Mutex::new(HashMap::new()),
            exposed: Mutex::new(HashMap::new()),
            changes: Mutex::new(Changes::default()),
        }
    }
}

/// Recently committed changes, by `resource URI, state, user id, etag`, with the channel
/// each came on.
#[derive(Default)]
struct Changes {
    seen: HashMap<String, String>,
    order: VecDeque<(Instant, String)>,
}

impl Changes {
    /// Whether the change `key` was committed from another channel than `channel` (a copy
    /// from the other channel of an overlap). The same change again on one channel has a
    /// new message number and is a new notification.
    fn copied(&mut self, key: &str, channel: &str, now: Instant) -> bool {
        while let Some((at, _)) = self.order.front()
            && (now.duration_since(*at) > OVERLAP_WINDOW || self.order.len() > MAX_CHANGES)
        {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.get(key).is_some_and(|first| first != channel)
    }

    fn insert(&mut self, key: String, channel: &str, now: Instant) {
        if self.seen.insert(key.clone(), channel.to_owned()).is_none() {
            self.order.push_back((now, key));
        }
    }
}

/// The identity of a change independent of the channel it came on: `None` when the body
/// has no user `id` and `etag`. Read from what the decoder kept, so `data` is not parsed.
fn change_key(message: &DirectoryMessage) -> Option<String> {
    let event = &message.event;
    let id = event.subject.as_deref()?.strip_prefix("users/")?;
    let etag = message.etag.as_deref()?;
    let meta = |name: &str| event.meta.get(name).cloned().unwrap_or_default();
    Some(format!(
        "{}\0{}\0{id}\0{etag}",
        meta("resourceUri"),
        meta("resourceState")
    ))
}

pub async fn handle(state: Arc<DirectoryState>, request: axum::extract::Request) -> Response {
    // The request taken apart rather than its headers extracted: axum's `HeaderMap`
    // extractor clones them, which was 5% of the gateway's CPU under load (README,
    // "Benchmark").
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    match answer(&state, &headers, body).await {
        Ok(()) => empty_reusing(StatusCode::OK, headers),
        Err(problem) => problem.into_response(),
    }
}

async fn answer(state: &DirectoryState, headers: &HeaderMap, body: Body) -> Result<(), Problem> {
    let source = &state.intake.source;
    let found = Found::in_map(headers);
    let managed = match authorize(state, &found) {
        Ok(managed) => managed,
        Err(problem) => {
            telemetry::auth_failure(source);
            return Err(problem);
        }
    };
    let body = read_body(headers, body, state.body_limit).await?;
    let started = Instant::now();
    let decoded = decode::decode_found(source, &found, &body, Utc::now());
    state
        .intake
        .metrics
        .decode_seconds
        .record(started.elapsed());
    let message = match decoded {
        Ok(message) => message,
        Err(e) => {
            state
                .intake
                .reject(&e.reason, kept_headers(headers), &body)
                .await?;
            return Err(Problem::bad_request(e.reason));
        }
    };
    watch_expiration(state, &message);
    if message.sync {
        telemetry::sync(source);
        state.links.synced(&message.channel_id);
        if !state.spec.route_sync {
            return Ok(());
        }
    }
    let key = if managed { change_key(&message) } else { None };
    if let Some(key) = &key {
        let copied = state
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .copied(key, &message.channel_id, Instant::now());
        if copied {
            telemetry::duplicate(source);
            return Ok(());
        }
        // Several gateways on one queue: the copy may have reached another gateway. The
        // queue answers for all of them (the local engine leaves it to the memory above).
        if state
            .intake
            .first_channel(key, &message.channel_id, OVERLAP_WINDOW)
            .await?
            .is_some()
        {
            telemetry::duplicate(source);
            return Ok(());
        }
    }
    let channel = message.channel_id;
    state.intake.commit(message.event).await?;
    if let Some(key) = key {
        let mut changes = state.changes.lock().unwrap_or_else(|e| e.into_inner());
        changes.insert(key, &channel, Instant::now());
    }
    Ok(())
}

/// `Ok(true)` for the token of a channel Herald opened, `Ok(false)` for one of
/// `channel_tokens`.
fn authorize(state: &DirectoryState, headers: &Found<'_>) -> Result<bool, Problem> {
    let spec = &state.spec;
    let token = headers
        .get(CHANNEL_TOKEN)
        .ok_or_else(|| Problem::unauthorized(format!("missing header {CHANNEL_TOKEN}")))?;
    let fixed = matches_any(token.as_bytes(), &spec.channel_tokens);
    let managed = state.links.accepts(&state.intake.source, token.as_bytes());
    if !(fixed | managed) {
        return Err(Problem::forbidden(format!(
            "header {CHANNEL_TOKEN} matches none of `channel_tokens` nor a channel Herald opened"
        )));
    }
    if let Some(ids) = &spec.channel_ids
        && let Ok(Some(id)) = headers.optional(CHANNEL_ID)
        && !ids.iter().any(|allowed| allowed == id)
    {
        return Err(Problem::forbidden(format!(
            "channel `{}` is not in `channel_ids`",
            clip(id)
        )));
    }
    Ok(managed)
}

/// Compares `given` with every token, in time that does not depend on where they differ.
fn matches_any(given: &[u8], tokens: &[String]) -> bool {
    let mut found = Choice::from(0);
    for token in tokens {
        found |= given.ct_eq(token.as_bytes());
    }
    found.into()
}

/// The `X-Goog-*` headers of a rejected request, without the token.
fn kept_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| {
            name.as_str().starts_with("x-goog-")
                && !name.as_str().eq_ignore_ascii_case(CHANNEL_TOKEN)
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Exposes the channel's expiration as a metric and warns (once per channel and
/// expiration) when it is less than an hour away: channels do not renew themselves.
fn watch_expiration(state: &DirectoryState, message: &DirectoryMessage) {
    let Some(expiration) = message.expiration else {
        return;
    };
    let source = &state.intake.source;
    {
        let mut exposed = state.exposed.lock().unwrap_or_else(|e| e.into_inner());
        if exposed.get(message.channel_id.as_str()) != Some(&expiration.timestamp()) {
            if exposed.len() >= MAX_REMEMBERED {
                exposed.clear();
            }
            exposed.insert(message.channel_id.to_string(), expiration.timestamp());
            telemetry::channel_expiration(source, &message.channel_id, expiration.timestamp());
        }
    }
    // `time` is when the request was received, a moment ago: no second clock read.
    if expiration - message.event.time > EXPIRY_WARNING {
        return;
    }
    let mut warned = state.warned.lock().unwrap_or_else(|e| e.into_inner());
    if warned.get(message.channel_id.as_str()) == Some(&expiration) {
        return;
    }
    if warned.len() >= MAX_REMEMBERED {
        warned.clear();
    }
    warned.insert(message.channel_id.to_string(), expiration);
    tracing::warn!(
        source = %source,
        channel = %message.channel_id,
        expires = %expiration.to_rfc3339(),
        "Directory channel expires within an hour and does not renew itself; \
         create a new channel with users.watch before then"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let tokens = vec!["old-token".to_owned(), "new-token".to_owned()];
        assert!(matches_any(b"old-token", &tokens));
        assert!(matches_any(b"new-token", &tokens));
        assert!(!matches_any(b"new-toke", &tokens));
        assert!(!matches_any(b"new-tokenx", &tokens));
        assert!(!matches_any(b"", &tokens));
    }

    #[test]
    fn a_change_is_remembered_for_the_overlap_window() {
        let mut changes = Changes::default();
        let t0 = Instant::now();
        changes.insert("a".into(), "old", t0);
        let soon = t0 + Duration::from_secs(1);
        assert!(
            changes.copied("a", "new", soon),
            "a copy from the other channel"
        );
        assert!(
            !changes.copied("a", "old", soon),
            "the same channel again is new"
        );
        assert!(!changes.copied("b", "new", soon));
        let later = t0 + OVERLAP_WINDOW + Duration::from_secs(1);
        assert!(!changes.copied("a", "new", later));
    }

    #[test]
    fn the_token_is_not_kept() {
        let mut headers = HeaderMap::new();
        headers.insert("x-goog-channel-token", "secret".parse().unwrap());
        headers.insert("x-goog-channel-id", "c1".parse().unwrap());
        headers.insert("authorization", "Bearer x".parse().unwrap());
        let kept = kept_headers(&headers);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept["x-goog-channel-id"], "c1");
    }
}
