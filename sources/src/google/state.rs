//! What the lifecycle remembers across restarts, as JSON values in the queue's state table
//! (`QueueAdmin::get_state`/`put_state`/`list_state`, docs/architecture.md §10): one record per registration (`google/registration/<name>`) and per channel
//! (`google/channel/<name>`). A restart reads them back, so it neither creates a second set
//! of channels nor forgets one it must stop. A channel record holds the channel's token:
//! the journal directory is the gateway's own (mode 0700 under systemd's `StateDirectory`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::{Feed, WatchScope};

pub const REGISTRATION_PREFIX: &str = "google/registration/";
pub const CHANNEL_PREFIX: &str = "google/channel/";

/// The durable values the lifecycle reads and writes: the state table of the storage
/// boundary, on a running gateway's queue or a stopped one's (`herald google status`).
pub use herald_core::queue::QueueAdmin as StateStore;

/// A Classroom registration Herald created.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegistrationRecord {
    pub name: String,
    pub source: String,
    pub feed: Feed,
    pub topic: String,
    pub registration_id: String,
    pub expiry: DateTime<Utc>,
    /// When it was created or last renewed: its life runs from here to `expiry`.
    pub renewed: DateTime<Utc>,
}

/// One Directory channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelInfo {
    pub id: String,
    pub resource_id: String,
    /// Secret: the channel's `X-Goog-Channel-Token`.
    pub token: String,
    pub expiration: DateTime<Utc>,
    pub created: DateTime<Utc>,
    /// Its `sync` message arrived.
    #[serde(default)]
    pub synced: bool,
}

/// A Directory watch and the channel(s) open for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChannelRecord {
    pub name: String,
    pub source: String,
    pub event: String,
    pub scope: WatchScope,
    pub address: String,
    pub current: ChannelInfo,
    /// The channel being replaced during an overlap: stopped once `current` synced, or at
    /// `stop_after`.
    #[serde(default)]
    pub retiring: Option<Retiring>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retiring {
    pub channel: ChannelInfo,
    pub stop_after: DateTime<Utc>,
}

/// Every record under `prefix`, skipping (and reporting) any that do not read back.
pub async fn load<T: for<'de> Deserialize<'de>>(
    store: &dyn StateStore,
    prefix: &str,
) -> Result<Vec<T>, String> {
    let mut records = Vec::new();
    let listed = store.list_state(prefix).await.map_err(|e| e.to_string())?;
    for (key, value) in listed {
        match serde_json::from_slice(&value) {
            Ok(record) => records.push(record),
            Err(e) => tracing::error!(key = %key, "unreadable Google state record, ignored: {e}"),
        }
    }
    Ok(records)
}

pub async fn save<T: Serialize>(
    store: &dyn StateStore,
    key: &str,
    record: &T,
) -> Result<(), String> {
    let bytes = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    store
        .put_state(key, Some(&bytes))
        .await
        .map_err(|e| e.to_string())
}
