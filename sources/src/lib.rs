//! herald-sources: the notification sources and the HTTP server they are mounted on.
//!
//! * [`classroom_pubsub`] — Google Classroom notifications through Cloud Pub/Sub: push
//!   endpoint (with OIDC verification of Pub/Sub's token) or pull loop;
//! * [`directory`] — Google Workspace Directory API push notifications (webhooks);
//! * [`source`] — the [`Source`] interface every source type implements: what the server,
//!   `herald test` and the Google lifecycle ask of a source, without naming its type;
//! * [`server`] — the axum server: one listener, each HTTP source at its path, `/healthz`,
//!   `/readyz`, `/metrics`, body limit, request timeout, optional TLS, graceful shutdown;
//!   it also starts the pull loops;
//! * [`enrich`] — looking up what a Classroom notification points to (course, person),
//!   cached in the queue's state, before the event is routed (docs/architecture.md §11);
//! * [`google`] — keeping Classroom registrations and Directory channels alive (create,
//!   renew before expiry, stop), with the state in the journal;
//! * `answer` — the JSON answers of docs/architecture.md §6 and reading a body under the limit;
//! * `telemetry` — the metrics this crate records (through the `metrics` facade).
//!
//! Each source folder has `config.rs` (the routes.yaml keys and their pure validation),
//! `decode.rs` (payload → [`Event`], no I/O) and its handler. The binary calls [`register`]
//! once, then [`serve`] with the validated config and the journal's [`Ingest`].
//!
//! Each source folder's `mod.rs` implements [`Source`] for its spec. `herald test --source
//! NAME` uses [`decode_raw`]: the same decoding the running source does, without
//! authentication and without storing anything.
//!
//! [`Event`]: herald_core::Event
//! [`Ingest`]: herald_core::ingest::Ingest

mod answer;
pub mod classroom_pubsub;
mod config;
pub mod directory;
pub mod enrich;
pub mod google;
mod intake;
pub mod server;
pub mod source;
mod telemetry;

use herald_core::Event;
use herald_core::config::{Registry, SourceSpec};

pub use server::{ServeError, ServerHandle, serve, serve_linked};
pub use source::{Source, source_of};

/// Registers every source type this crate provides, and the `google:` section. A new source
/// is its folder plus two lines here, `pub mod` and `add_source` (docs/architecture.md §14).
pub fn register(registry: &mut Registry) {
    registry.add_source(classroom_pubsub::TYPE);
    registry.add_source(directory::TYPE);
    registry.add_section(google::settings::SECTION);
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
/// the event the running source would commit, for `herald test --source NAME`: see
/// [`Source::decode_raw`] of each source type for what `body` and `headers` are. Nothing is
/// authenticated and nothing is stored.
pub fn decode_raw(
    spec: &dyn SourceSpec,
    source_name: &str,
    body: &[u8],
    headers: &[(String, String)],
) -> Result<Option<Event>, DecodeError> {
    let source = source_of(spec).ok_or_else(|| {
        DecodeError::new(format!(
            "source `{source_name}` is not a source type of herald-sources"
        ))
    })?;
    source.decode_raw(source_name, body, headers)
}
