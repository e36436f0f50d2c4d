//! The typed sections of routes.yaml that core owns: `server`, `queue`, and the
//! `delivery:` key every sink may carry.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::registry::QueueSpec;
use super::units;
use crate::sink::DeliveryPolicy;

/// `server:` — the HTTP listener the sources are mounted on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to listen on; `127.0.0.1:0` picks a free port (tests).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The admin listener (metrics, health, dead-letter API), kept off the public port.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Reload routes.yaml when the file changes (as on SIGHUP or `POST /-/reload`).
    #[serde(default = "default_true")]
    pub watch_config: bool,
    /// The admin listener's token: `/api/*` and `/-/*` want `Authorization: Bearer` it, the
    /// console a login with it (docs/architecture.md §12). A secret: never logged or shown.
    /// Empty is unset, so `admin_token: ${HERALD_ADMIN_TOKEN:-}` turns it on by environment.
    #[serde(default, deserialize_with = "admin_token")]
    pub admin_token: Option<AdminToken>,
    /// Serve HTTPS with these PEM files (the Directory API only calls HTTPS endpoints).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Larger request bodies are refused with 413.
    #[serde(default = "default_body_limit", deserialize_with = "units::bytes")]
    pub body_limit: u64,
    /// A request that takes longer is answered 408 and nothing is stored.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "units::duration"
    )]
    pub request_timeout: Duration,
    /// On SIGTERM, how long in-flight deliveries may take before the gateway exits anyway.
    #[serde(
        default = "default_shutdown_timeout",
        deserialize_with = "units::duration"
    )]
    pub shutdown_timeout: Duration,
}

/// `server.admin_token`: at least [`AdminToken::MIN_LEN`] printable ASCII characters without
/// spaces (so it fits an `Authorization` header as written). `Debug` and `Display` mask it;
/// [`AdminToken::expose`] is for the one comparison and the CLI's header.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    pub const MIN_LEN: usize = 16;

    pub fn new(token: &str) -> Result<AdminToken, String> {
        if token.len() < Self::MIN_LEN {
            return Err(format!(
                "`admin_token` must be at least {} characters (e.g. `openssl rand -hex 32`), found {}",
                Self::MIN_LEN,
                token.chars().count()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "`admin_token` may only use printable ASCII characters without spaces".into(),
            );
        }
        Ok(AdminToken(token.to_owned()))
    }

    /// The token itself: only to compare it or to send it to the admin listener.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl fmt::Display for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for AdminToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        AdminToken::new(&text).map_err(serde::de::Error::custom)
    }
}

fn admin_token<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<AdminToken>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => AdminToken::new(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            watch_config: true,
            admin_token: None,
            tls: None,
            body_limit: default_body_limit(),
            request_timeout: default_request_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_true() -> bool {
    true
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_body_limit() -> u64 {
    1 << 20
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `queue:` — the durable queue. Core reads the keys every engine shares and `path` (the
/// `local` engine's); another engine's own keys are read by the crate that registered it
/// ([`crate::config::QueueEngineType`]) into `engine_spec` (docs/architecture.md §10).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Which engine keeps the queue (docs/architecture.md §10).
    #[serde(default)]
    pub engine: QueueEngine,
    /// `local` only: directory of the journal; relative to the config file's directory.
    #[serde(default = "default_queue_path")]
    pub path: PathBuf,
    /// When the queue holds this many bytes of undelivered events, sources answer 503.
    #[serde(default, deserialize_with = "units::opt_bytes")]
    pub max_bytes: Option<u64>,
    /// When the queue holds this many undelivered events, sources answer 503.
    #[serde(default)]
    pub max_events: Option<u64>,
    /// How long delivered events are kept; also the duplicate-suppression window.
    #[serde(default = "default_retention", deserialize_with = "units::duration")]
    pub retention: Duration,
    /// The engine's own keys as its crate validated them; `None` for `local`.
    #[serde(skip)]
    pub engine_spec: Option<EngineSpec>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            engine: QueueEngine::default(),
            path: default_queue_path(),
            max_bytes: None,
            max_events: None,
            retention: default_retention(),
            engine_spec: None,
        }
    }
}

/// A registered engine's validated keys. Two are equal when the keys were written the same
/// (a reload compares queue configs); `Debug` shows the spec's own masked `Debug` and never
/// the keys as written, which may hold a password.
#[derive(Clone)]
pub struct EngineSpec {
    pub spec: Arc<dyn QueueSpec>,
    /// A hash of the engine's keys as written (after `${VAR}`).
    pub fingerprint: u64,
}

impl EngineSpec {
    pub fn new(spec: Arc<dyn QueueSpec>, written: &str) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        written.hash(&mut hasher);
        EngineSpec {
            spec,
            fingerprint: hasher.finish(),
        }
    }

    /// The spec as the type its engine's crate made.
    pub fn downcast<T: 'static>(&self) -> Option<&T> {
        self.spec.as_any().downcast_ref()
    }
}

impl PartialEq for EngineSpec {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl fmt::Debug for EngineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.spec, f)
    }
}

/// `queue.engine`: the engine behind the storage boundary (docs/architecture.md §10). Core
/// knows the names; the `postgres` engine's code is in its own crate (herald-queue-postgres).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueEngine {
    /// The embedded journal under `queue.path` (an append-only log and a redb file): nothing
    /// to install.
    #[default]
    Local,
    /// One queue shared by every gateway pointed at the same PostgreSQL database.
    Postgres,
}

impl QueueEngine {
    pub fn name(self) -> &'static str {
        match self {
            QueueEngine::Local => "local",
            QueueEngine::Postgres => "postgres",
        }
    }
}

impl<'de> Deserialize<'de> for QueueEngine {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "local" => Ok(QueueEngine::Local),
            "postgres" => Ok(QueueEngine::Postgres),
            other => Err(serde::de::Error::custom(format!(
                "unknown queue engine `{other}`; expected `local` (the default) or `postgres`"
            ))),
        }
    }
}

fn default_queue_path() -> PathBuf {
    PathBuf::from("./herald-data")
}
fn default_retention() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// A sink's `delivery:` key; each field replaces the sink type's default.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeliveryOverrides {
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// `10/s`, `1/s`, `30/m`, or `none`.
    #[serde(default)]
    pub rate_limit: Option<String>,
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub max_age: Option<Duration>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub timeout: Option<Duration>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub initial_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "units::opt_duration")]
    pub max_backoff: Option<Duration>,
}

impl DeliveryOverrides {
    /// Applies the overrides to a sink type's defaults; the error names the bad field.
    pub fn apply(&self, mut policy: DeliveryPolicy) -> Result<DeliveryPolicy, String> {
        if let Some(c) = self.concurrency {
            if c == 0 {
                return Err("`concurrency` must be at least 1".into());
            }
            policy.concurrency = c;
        }
        if let Some(rate) = &self.rate_limit {
            policy.rate_per_second = parse_rate(rate)?;
        }
        if let Some(b) = self.burst {
            policy.burst = b.max(1);
        }
        if let Some(a) = self.max_attempts {
            if a == 0 {
                return Err("`max_attempts` must be at least 1".into());
            }
            policy.max_attempts = a;
        }
        policy.max_age = self.max_age.unwrap_or(policy.max_age);
        policy.timeout = self.timeout.unwrap_or(policy.timeout);
        policy.initial_backoff = self.initial_backoff.unwrap_or(policy.initial_backoff);
        policy.max_backoff = self.max_backoff.unwrap_or(policy.max_backoff);
        if policy.initial_backoff > policy.max_backoff {
            return Err("`initial_backoff` is longer than `max_backoff`".into());
        }
        Ok(policy)
    }
}

/// `10/s`, `30/m`, `100/h`, or `none`, as deliveries per second.
pub fn parse_rate(text: &str) -> Result<Option<f64>, String> {
    if text.trim() == "none" {
        return Ok(None);
    }
    let bad = || format!("`{text}` is not a rate; write e.g. `1/s`, `30/m`, `100/h` or `none`");
    let (count, per) = text.split_once('/').ok_or_else(bad)?;
    let count: f64 = count.trim().parse().map_err(|_| bad())?;
    let seconds = match per.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    if count <= 0.0 || !count.is_finite() {
        return Err(bad());
    }
    Ok(Some(count / seconds))
}
