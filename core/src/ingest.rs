//! The boundary between sources and the journal: a source hands a decoded event over and
//! answers its sender only when [`Ingest::commit`] returned, i.e. when the event is durable.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// What became of a committed event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Committed {
    /// Stored for the first time; it will be routed and delivered.
    New,
    /// An event with the same `(source, id)` was stored within the retention window (a
    /// Pub/Sub redelivery, a Directory retry); nothing new was stored.
    Duplicate,
}

/// Why an event could not be taken. Sources answer 503 to both, which Google's senders retry.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The journal reached `queue.max_events` or `queue.max_bytes`.
    #[error("the queue is full: {0}")]
    Full(String),
    /// The journal cannot write (disk error, shutting down).
    #[error("the journal is unavailable: {0}")]
    Unavailable(String),
}

/// An authenticated input that could not be decoded. It is acknowledged (so Pub/Sub does
/// not redeliver it forever) and kept with the dead letters, so nothing is lost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedInput {
    /// The source's name in routes.yaml.
    pub source: String,
    /// What was wrong, for the operator.
    pub reason: String,
    pub received: DateTime<Utc>,
    /// Request metadata worth keeping (never a token or a secret).
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    /// The body as received, lossily as UTF-8.
    pub body: String,
}

/// Where sources put what they received.
#[async_trait]
pub trait Ingest: Send + Sync + 'static {
    /// Stores `event` durably. Returns once it is committed (fsync'd); only then may the
    /// source answer 2xx.
    async fn commit(&self, event: Event) -> Result<Committed, IngestError>;

    /// Stores `event` durably like [`Ingest::commit`] but unrouted: it waits in the queue
    /// until the enrichment task routes it (`Queue::commit_unrouted`, docs/architecture.md
    /// §11). A sink of events that cannot hold unrouted ones refuses.
    async fn commit_for_enrichment(&self, event: Event) -> Result<Committed, IngestError> {
        let _ = event;
        Err(IngestError::Unavailable(
            "this queue cannot hold events for enrichment".into(),
        ))
    }

    /// Stores an undecodable input with the dead letters.
    async fn reject(&self, input: RejectedInput) -> Result<(), IngestError>;

    /// For a change a source can receive once per channel (a Directory watch's old and new
    /// channel while one replaces the other, docs/architecture.md §7): records that
    /// `change` came on `channel`, and answers the channel it came on first within `window`,
    /// if another did. An engine shared by several gateways answers for all of them,
    /// atomically, since the copy may reach another gateway. The default remembers nothing
    /// (`None`): a single gateway's source keeps that memory itself.
    async fn first_channel(
        &self,
        _change: &str,
        _channel: &str,
        _window: std::time::Duration,
    ) -> Result<Option<String>, IngestError> {
        Ok(None)
    }

    /// `Err(reason)` when new events cannot be taken now (`/readyz` says why).
    fn ready(&self) -> Result<(), String>;
}
