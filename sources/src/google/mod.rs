//! Keeping Google's subscriptions alive: Classroom registrations (a week each, renewed by
//! repeating `registrations.create`) and Directory watch channels (hours, replaced by a new
//! channel before expiry, with an overlap, then `channels.stop`).
//!
//! * `settings` — the `google:` section (credentials, endpoints), registered with core;
//! * `config` — `registrations:`/`topic:` and `watch:`/`address:`/`ttl:` of the sources;
//! * `token` — OAuth2 access tokens from a service-account key (JWT-bearer grant);
//! * `api` — the four Google calls, with the documented errors explained;
//! * `state` — the records kept in the journal, so a restart reuses them;
//! * `manager` — the renewal loop, its metrics and readiness checks;
//! * `control` — the [`Control`] handle the admin listener uses for `herald google
//!   status|renew|stop`; `status` — the rows those commands show;
//! * `clock` — the loop's wall clock (the system's, or one that follows tokio's in tests).
//!
//! [`Links`] ties the loop to the Directory handlers: the tokens of the channels it opened
//! (accepted besides `channel_tokens`) and the `sync` messages that arrive for them.

pub mod api;
mod clock;
pub mod config;
mod control;
pub mod manager;
pub mod settings;
pub mod state;
pub mod status;
pub(crate) mod token;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use herald_core::Config;
use herald_core::health::Health;
use subtle::{Choice, ConstantTimeEq};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use clock::Clock;
pub use control::Control;
pub use state::StateStore;
pub use status::{Status, status_rows};

use crate::source::source_of;
use api::{Api, ApiConfig, CLASSROOM_API, DIRECTORY_API};
use config::{RegistrationSpec, WatchSpec};
use manager::Manager;

/// At most this many `sync` channel ids wait to be read by the loop.
const MAX_SYNCED: usize = 1024;

/// Shared by the lifecycle loop and the Directory handlers.
#[derive(Clone, Default)]
pub struct Links {
    inner: Arc<LinksInner>,
}

#[derive(Default)]
struct LinksInner {
    /// Source name → the tokens of the channels Herald opened for it. Secret.
    tokens: RwLock<HashMap<String, Vec<String>>>,
    synced: Mutex<HashSet<String>>,
    notify: Notify,
}

impl Links {
    /// Whether `token` is the token of a channel Herald opened for `source` (constant time
    /// in where it differs).
    pub fn accepts(&self, source: &str, token: &[u8]) -> bool {
        let tokens = self.inner.tokens.read().unwrap_or_else(|e| e.into_inner());
        let Some(tokens) = tokens.get(source) else {
            return false;
        };
        let mut found = Choice::from(0);
        for t in tokens {
            found |= token.ct_eq(t.as_bytes());
        }
        found.into()
    }

    /// Records that the `sync` of `channel_id` arrived.
    pub fn synced(&self, channel_id: &str) {
        let mut synced = self.inner.synced.lock().unwrap_or_else(|e| e.into_inner());
        if synced.len() < MAX_SYNCED {
            synced.insert(channel_id.to_owned());
        }
        drop(synced);
        self.inner.notify.notify_one();
    }

    pub(crate) fn set_tokens(&self, source: &str, tokens: Vec<String>) {
        let mut all = self.inner.tokens.write().unwrap_or_else(|e| e.into_inner());
        all.insert(source.to_owned(), tokens);
    }

    pub(crate) fn add_token(&self, source: &str, token: &str) {
        let mut all = self.inner.tokens.write().unwrap_or_else(|e| e.into_inner());
        all.entry(source.to_owned())
            .or_default()
            .push(token.to_owned());
    }

    pub(crate) fn remove_token(&self, source: &str, token: &str) {
        let mut all = self.inner.tokens.write().unwrap_or_else(|e| e.into_inner());
        if let Some(tokens) = all.get_mut(source) {
            tokens.retain(|t| t != token);
        }
    }

    pub(crate) fn take_synced(&self) -> HashSet<String> {
        std::mem::take(&mut *self.inner.synced.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn take_synced_id(&self, id: &str) -> bool {
        let mut synced = self.inner.synced.lock().unwrap_or_else(|e| e.into_inner());
        synced.remove(id)
    }

    pub(crate) async fn synced_changed(&self) {
        self.inner.notify.notified().await;
    }
}

/// What the sources of `config` ask Herald to keep alive.
pub fn declared(config: &Config) -> (Vec<RegistrationSpec>, Vec<WatchSpec>) {
    let mut registrations = Vec::new();
    let mut watches = Vec::new();
    for source in config
        .sources
        .iter()
        .filter_map(|s| source_of(s.spec.as_ref()))
    {
        let declared = source.subscriptions();
        registrations.extend(declared.registrations);
        watches.extend(declared.watches);
    }
    (registrations, watches)
}

/// The running lifecycle.
pub struct Lifecycle {
    pub control: Control,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the lifecycle loop when a source declares registrations or channels (and also
/// when none does but the journal still holds some, so they are deleted and stopped).
/// Errors name what to set: without credentials nothing can be renewed.
pub async fn start(
    config: &Config,
    store: Arc<dyn StateStore>,
    health: Health,
    links: Links,
    clock: Clock,
    queue: Option<Arc<dyn herald_core::queue::Queue>>,
    stop: CancellationToken,
) -> Result<Option<Lifecycle>, String> {
    let (registrations, watches) = declared(config);
    let held = {
        let store = &*store;
        let list =
            |prefix| async move { store.list_state(prefix).await.map_err(|e| e.to_string()) };
        !list(state::REGISTRATION_PREFIX).await?.is_empty()
            || !list(state::CHANNEL_PREFIX).await?.is_empty()
    };
    if registrations.is_empty() && watches.is_empty() && !held {
        return Ok(None);
    }
    let google = settings::GoogleConfig::of(config);
    let credentials: PathBuf = google
        .credentials
        .or_else(settings::application_credentials)
        .ok_or_else(|| {
            "Classroom registrations and Directory channels (`registrations:`, `watch:`, or ones \
             recorded in the journal) need a service-account key: set `google.credentials` or \
             $GOOGLE_APPLICATION_CREDENTIALS"
                .to_owned()
        })?;
    let api_config = ApiConfig {
        credentials,
        subject: google.subject,
        token_url: google.token_url,
        classroom_api: trimmed(google.classroom_api, CLASSROOM_API),
        directory_api: trimmed(google.directory_api, DIRECTORY_API),
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client for Google's APIs: {e}"))?;
    let api = Api::new(api_config, &registrations, client).await?;
    let manager = Manager::new(
        api,
        store,
        health,
        links,
        clock,
        registrations,
        watches,
        queue,
    )
    .await?;
    let (control, task) = manager.spawn(stop);
    Ok(Some(Lifecycle { control, task }))
}

fn trimmed(url: Option<String>, default: &str) -> String {
    url.unwrap_or_else(|| default.to_owned())
        .trim_end_matches('/')
        .to_owned()
}
