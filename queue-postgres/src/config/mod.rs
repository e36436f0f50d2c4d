//! The postgres engine's `queue:` keys (`url`, `password`, `tls`, `pool`, `lease`), read and
//! checked without I/O into a [`PgSpec`] (docs/architecture.md §10, "The postgres engine's
//! config"). Core reads the keys every engine shares and hands these over.
//!
//! No message here quotes the URL or the password: a mistake names the key and what is wrong.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use herald_core::config::node::Loc;
use herald_core::config::{ConfigError, QueueInput, QueueResult, QueueSpec, units};
use serde::Deserialize;
use tokio_postgres::config::Host;

/// The postgres engine's own `queue:` keys.
pub const KEYS: &[&str] = &["url", "password", "tls", "pool", "lease"];

/// Connections per gateway when `pool` is not set.
pub const DEFAULT_POOL: usize = 16;

/// How long a connection attempt may take when the URL does not set `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// libpq's `sslmode` values Herald takes (docs/architecture.md §10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// Encrypted, the server's certificate not checked (open to a man in the middle). With
    /// `tls.ca` it is checked against that CA, as libpq does: then it is [`SslMode::VerifyCa`].
    Require,
    /// Encrypted; the certificate chain is checked against `tls.ca`, the host name is not.
    VerifyCa,
    /// Encrypted; the chain is checked against `tls.ca` and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// Whether the server's certificate chain is checked.
    pub fn verifies(self) -> bool {
        matches!(self, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// The validated postgres queue config. `Debug` and [`QueueSpec::describe`] mask the password.
#[derive(Clone)]
pub struct PgSpec {
    /// The driver's config: hosts, port, user, database, options, and the password (from
    /// `password` when set, else from the URL). `sslmode` is ours ([`PgSpec::ssl`]): the
    /// driver is told only whether to use TLS.
    pub pg: tokio_postgres::Config,
    pub ssl: SslMode,
    /// Whether `sslmode` was left to the default (docs/architecture.md §10: `verify-full`, or
    /// `disable` when every host is loopback).
    pub ssl_defaulted: bool,
    /// The CA certificates (PEM) the server's chain is checked against, resolved against the
    /// config file's directory. Read when connecting, not when validating.
    pub ca: Option<PathBuf>,
    /// Connections per gateway.
    pub pool: usize,
    /// How long a claim lasts unless renewed (docs/architecture.md §10.1, "Leases").
    pub lease: Duration,
}

impl PgSpec {
    /// `user@host:port/dbname` (several hosts joined by commas): where the queue is, without
    /// any secret, for messages and `herald check`.
    pub fn target(&self) -> String {
        let hosts: Vec<String> = self
            .pg
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let name = match host {
                    Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
                    Host::Tcp(name) => name.clone(),
                    Host::Unix(path) => path.display().to_string(),
                };
                let port = self
                    .pg
                    .get_ports()
                    .get(i)
                    .or_else(|| self.pg.get_ports().first())
                    .copied()
                    .unwrap_or(5432);
                format!("{name}:{port}")
            })
            .collect();
        let user = self.pg.get_user().unwrap_or("?");
        let db = self.pg.get_dbname().unwrap_or(user);
        format!("{user}@{}/{db}", hosts.join(","))
    }

    /// Whether a password will be sent (from `password` or the URL).
    pub fn has_password(&self) -> bool {
        self.pg.get_password().is_some()
    }
}

impl fmt::Debug for PgSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgSpec")
            .field("target", &self.target())
            .field("password", &self.has_password().then_some("***"))
            .field("ssl", &self.ssl)
            .field("ca", &self.ca)
            .field("pool", &self.pool)
            .field("lease", &self.lease)
            .finish()
    }
}

impl QueueSpec for PgSpec {
    fn describe(&self) -> String {
        let mut out = format!("postgres://{}", self.target());
        out.push_str(&format!(", sslmode {}", self.ssl.name()));
        if self.ssl_defaulted {
            out.push_str(" (default)");
        }
        if let Some(ca) = &self.ca {
            out.push_str(&format!(", ca {}", ca.display()));
        }
        if self.has_password() {
            out.push_str(", password ***");
        }
        out.push_str(&format!(
            ", pool {}, lease {}s",
            self.pool,
            self.lease.as_secs_f64()
        ));
        out
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsKeys {
    ca: PathBuf,
}

/// The engine's validator (registered as the `postgres` queue engine). Pure: no I/O.
pub fn validate(input: &QueueInput<'_>) -> QueueResult {
    let node = input.node;
    let mut errors = Vec::new();
    let at = |key: &str| node.get(key).map_or(node.loc, |n| n.loc);
    let err = |loc: Loc, message: String| ConfigError::new(loc, format!("`queue`: {message}"));

    let text = |key: &str, errors: &mut Vec<ConfigError>| -> Option<String> {
        let value = node.get(key)?;
        match &value.kind {
            herald_core::config::NodeKind::Str(s) => Some(s.clone()),
            _ => {
                errors.push(err(value.loc, format!("`{key}` must be a string")));
                None
            }
        }
    };
    let url = text("url", &mut errors);
    let password = text("password", &mut errors).filter(|p| !p.is_empty());
    let ca = match node.get("tls") {
        None => None,
        Some(tls) => match tls.deserialize::<TlsKeys>() {
            Ok(keys) => Some(input.base_dir.join(keys.ca)),
            Err(e) => {
                errors.push(ConfigError::from_de("`queue.tls`", e, tls.loc));
                None
            }
        },
    };
    let pool = match node.get("pool") {
        None => DEFAULT_POOL,
        Some(n) => match n.deserialize::<usize>() {
            Ok(p) if p >= 1 => p,
            _ => {
                errors.push(err(
                    n.loc,
                    "`pool` must be a number of connections, at least 1".into(),
                ));
                DEFAULT_POOL
            }
        },
    };
    let lease = match node.get("lease") {
        None => herald_core::queue::DEFAULT_LEASE,
        Some(n) => match units::duration(n) {
            Ok(d) if d >= Duration::from_secs(1) => d,
            Ok(_) => {
                errors.push(err(n.loc, "`lease` must be at least 1s".into()));
                herald_core::queue::DEFAULT_LEASE
            }
            Err(e) => {
                errors.push(ConfigError::from_de("`queue.lease`", e, n.loc));
                herald_core::queue::DEFAULT_LEASE
            }
        },
    };

    let Some(url) = url else {
        if node.get("url").is_none() {
            errors.push(err(
                node.loc,
                "`url` is required with `engine: postgres`, e.g. \
                 `url: postgres://herald@db.internal:5432/herald`"
                    .into(),
            ));
        }
        return Err(errors);
    };
    match parse_url(&url, password.as_deref(), ca.is_some()) {
        Ok((pg, ssl, ssl_defaulted)) => {
            if ssl.verifies() && ca.is_none() {
                errors.push(err(
                    at("url"),
                    format!(
                        "sslmode {}{} checks the server's certificate: set `tls: {{ ca: FILE }}` \
                         to the CA (PEM) that signed it, or `sslmode=require` in the URL to \
                         encrypt without checking (open to a man in the middle)",
                        ssl.name(),
                        if ssl_defaulted {
                            " (the default for a host that is not loopback)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            if ca.is_some() && ssl == SslMode::Disable {
                errors.push(err(
                    at("tls"),
                    "`tls.ca` is set but sslmode is disable: remove it or set sslmode".into(),
                ));
            }
            if errors.is_empty() {
                return Ok(Arc::new(PgSpec {
                    pg,
                    ssl,
                    ssl_defaulted,
                    ca,
                    pool,
                    lease,
                }));
            }
        }
        Err(message) => errors.push(err(at("url"), message)),
    }
    Err(errors)
}

/// Reads `url` into the driver's config and our `sslmode`: `(config, sslmode, defaulted)`.
/// The driver knows only `disable | prefer | require`, so `sslmode` is taken out of the query
/// before the driver reads the rest. The error never quotes the URL.
fn parse_url(
    url: &str,
    password: Option<&str>,
    has_ca: bool,
) -> Result<(tokio_postgres::Config, SslMode, bool), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("`url` must be a URL `postgres://USER@HOST:PORT/DATABASE`".into());
    }
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut ssl = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => {
                ssl = Some(SslMode::parse(value).ok_or_else(|| {
                    "`url`: sslmode must be one of disable, require, verify-ca, verify-full"
                        .to_owned()
                })?);
            }
            Some(("sslrootcert" | "sslcert" | "sslkey", _)) => {
                return Err(
                    "`url`: give the CA as `tls: { ca: FILE }`, not in the URL (client \
                     certificates are not supported)"
                        .into(),
                );
            }
            _ => rest.push(pair),
        }
    }
    let driver_url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut pg = tokio_postgres::Config::from_str(&driver_url)
        // The driver's messages name the option, never its value.
        .map_err(|e| format!("`url` is not a PostgreSQL URL: {e}"))?;
    if pg.get_hosts().is_empty() {
        return Err("`url` names no host".into());
    }
    if pg.get_user().is_none() {
        return Err("`url` names no user: `postgres://USER@HOST/DATABASE`".into());
    }
    if let Some(password) = password {
        pg.password(password);
    }
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    pg.application_name("herald");
    let defaulted = ssl.is_none();
    let mut ssl = ssl.unwrap_or_else(|| {
        if pg.get_hosts().iter().all(is_loopback) {
            SslMode::Disable
        } else {
            SslMode::VerifyFull
        }
    });
    // libpq: `require` with a root CA given checks the chain like `verify-ca`.
    if ssl == SslMode::Require && has_ca {
        ssl = SslMode::VerifyCa;
    }
    pg.ssl_mode(match ssl {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        _ => tokio_postgres::config::SslMode::Require,
    });
    Ok((pg, ssl, defaulted))
}

/// `localhost`, 127.0.0.0/8, `::1`, or a Unix socket: the connection never leaves the machine.
fn is_loopback(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// The spec `herald check` validated, from the queue config core hands over.
pub fn spec_of(queue: &herald_core::config::QueueConfig) -> Option<&PgSpec> {
    queue.engine_spec.as_ref()?.downcast::<PgSpec>()
}

#[cfg(test)]
mod tests;
