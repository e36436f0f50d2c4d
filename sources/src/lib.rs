//! herald-sources: the notification sources and the HTTP server they are mounted on.
//!
//! * [`classroom_pubsub`] — Google Classroom notifications through Cloud Pub/Sub: push
//!   endpoint (with OIDC verification of Pub/Sub's token) or pull loop;
//! * [`directory`] — Google Workspace Directory API push notifications (webhooks);
//! * [`server`] — the axum server: one listener, each HTTP source at its path, `/healthz`,
//!   `/readyz`, `/metrics`, body limit, request timeout, optional TLS, graceful shutdown;
//!   it also starts the pull loops;
//! * [`google`] — keeping Classroom registrations and Directory channels alive (create,
//!   renew before expiry, stop), with the state in the journal;
//! * `answer` — the JSON answers of DESIGN.md §6 and reading a body under the limit;
//! * `telemetry` — the metrics this crate records (through the `metrics` facade).
//!
//! Each source folder has `config.rs` (the routes.yaml keys and their pure validation),
//! `decode.rs` (payload → [`Event`], no I/O) and its handler. The binary calls [`register`]
//! once, then [`serve`] with the validated config and the journal's [`Ingest`].
//!
//! `herald test --source NAME` uses [`decode_raw`]: the same decoding the running source
//! does, without authentication and without storing anything.
//!
//! [`Event`]: herald_core::Event
//! [`Ingest`]: herald_core::ingest::Ingest

mod answer;
pub mod classroom_pubsub;
mod config;
pub mod directory;
pub mod google;
mod intake;
pub mod server;
mod telemetry;

use herald_core::Event;
use herald_core::config::{Registry, SourceSpec};

pub use server::{ServeError, ServerHandle, serve, serve_linked};

/// Registers every source type this crate provides.
pub fn register(registry: &mut Registry) {
    registry.add_source(classroom_pubsub::TYPE);
    registry.add_source(directory::TYPE);
}

/// Why a payload could not be turned into an event. The reason names the field or header
/// that is wrong (`message.data is not valid base64: …`, `missing header X-Goog-Channel-ID`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    pub reason: String,
}

impl DecodeError {
    pub fn new(reason: impl Into<String>) -> Self {
        DecodeError {
            reason: reason.into(),
        }
    }
}

/// Decodes a raw payload of the source `source_name` (whose validated spec is `spec`) into
/// the event the running source would commit, for `herald test --source NAME`.
///
/// * `classroom_pubsub`: `body` is a Pub/Sub push request body (`{"message": {…},
///   "subscription": "…"}`), also for a source configured with `pull:` (a pulled message has
///   the same shape; the configured subscription is used when the body names none).
///   `headers` are ignored.
/// * `directory_webhook`: `headers` are the request's `X-Goog-*` headers (names in any case),
///   `body` the JSON body (may be empty). `time` is now, as for a received request.
///
/// Nothing is authenticated here: no OIDC token is checked and the channel token is not
/// compared (nor put anywhere). Returns `Ok(None)` for a Directory `sync` message of a source
/// without `route_sync: true`, which the running source acknowledges without routing.
pub fn decode_raw(
    spec: &dyn SourceSpec,
    source_name: &str,
    body: &[u8],
    headers: &[(String, String)],
) -> Result<Option<Event>, DecodeError> {
    let any = spec.as_any();
    if let Some(spec) = any.downcast_ref::<classroom_pubsub::ClassroomSpec>() {
        let fallback = spec.pull().map(|p| p.subscription.as_str());
        return classroom_pubsub::decode::decode_push(source_name, body, fallback).map(Some);
    }
    if let Some(spec) = any.downcast_ref::<directory::DirectorySpec>() {
        let headers = directory::decode::header_map(headers)?;
        let message = directory::decode::decode(source_name, &headers, body, chrono::Utc::now())?;
        return Ok((!message.sync || spec.route_sync).then_some(message.event));
    }
    Err(DecodeError::new(format!(
        "source `{source_name}` is not a source type of herald-sources"
    )))
}
