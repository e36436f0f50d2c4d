//! Helpers shared by the source tests: an in-memory journal, a gateway started on
//! 127.0.0.1:0 from a routes.yaml text, the fixtures of `tests/fixtures`, and OIDC tokens
//! signed with the test keys of `tests/keys`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use herald_core::Event;
use herald_core::config::Registry;
use herald_core::ingest::{Committed, Ingest, IngestError, RejectedInput};
use herald_sources::ServerHandle;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");
pub const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

/// A journal in memory: events with duplicate suppression by `(source, id)`, rejected
/// inputs, and a switch that makes it answer "full".
#[derive(Default)]
pub struct MemoryIngest {
    state: Mutex<Stored>,
    full: AtomicBool,
}

#[derive(Default)]
struct Stored {
    events: Vec<Event>,
    seen: HashSet<(String, String)>,
    rejected: Vec<RejectedInput>,
}

impl MemoryIngest {
    pub fn events(&self) -> Vec<Event> {
        self.state.lock().unwrap().events.clone()
    }

    pub fn rejected(&self) -> Vec<RejectedInput> {
        self.state.lock().unwrap().rejected.clone()
    }

    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), IngestError> {
        if self.full.load(Ordering::SeqCst) {
            Err(IngestError::Full("test journal is full".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl Ingest for MemoryIngest {
    async fn commit(&self, event: Event) -> Result<Committed, IngestError> {
        self.check()?;
        let mut state = self.state.lock().unwrap();
        if state
            .seen
            .insert((event.source.to_string(), event.id.clone()))
        {
            state.events.push(event);
            Ok(Committed::New)
        } else {
            Ok(Committed::Duplicate)
        }
    }

    async fn reject(&self, input: RejectedInput) -> Result<(), IngestError> {
        self.check()?;
        self.state.lock().unwrap().rejected.push(input);
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        match self.check() {
            Ok(()) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// A gateway serving the sources of a config, on 127.0.0.1 with a free port.
pub struct Gateway {
    pub addr: SocketAddr,
    pub ingest: Arc<MemoryIngest>,
    /// Holds the config file (and credentials) for as long as the gateway runs.
    _dir: tempfile::TempDir,
    /// Cancels the server's token when dropped, so a failed test stops its server too.
    stop: Option<DropGuard>,
    handle: Option<ServerHandle>,
}

impl Gateway {
    /// Starts `herald_sources::serve` on `yaml` (a whole routes.yaml; `server.listen` is
    /// set to 127.0.0.1:0 unless the text has a `server:` section).
    pub async fn start(yaml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        Gateway::start_in(yaml, dir).await
    }

    pub async fn start_in(yaml: &str, dir: tempfile::TempDir) -> Gateway {
        let text = if yaml.contains("server:") {
            yaml.to_owned()
        } else {
            format!("server: {{ listen: 127.0.0.1:0 }}\n{yaml}")
        };
        let config = parse_config(&text, dir.path());
        let ingest = Arc::new(MemoryIngest::default());
        let stop = CancellationToken::new();
        let handle = herald_sources::serve(
            &config,
            ingest.clone(),
            Some(metrics_render()),
            stop.clone(),
        )
        .await
        .expect("the server starts");
        Gateway {
            addr: handle.local_addr,
            ingest,
            _dir: dir,
            stop: Some(stop.drop_guard()),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Asks the server to stop and waits until it has.
    pub async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), handle.stopped())
                .await
                .expect("the server stops within 10s");
        }
    }
}

pub fn registry() -> Registry {
    let mut registry = Registry::default();
    herald_sources::register(&mut registry);
    registry
}

pub fn parse_config(text: &str, dir: &Path) -> herald_core::Config {
    let file = dir.join("routes.yaml");
    std::fs::write(&file, text).unwrap();
    herald_core::config::parse(text, &file, &registry(), &|_| None)
        .unwrap_or_else(|e| panic!("test config is valid:\n{e}\n{text}"))
}

/// The process's Prometheus recorder, installed once.
pub fn metrics_render() -> herald_sources::server::RenderMetrics {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    let handle = HANDLE
        .get_or_init(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .expect("the recorder installs")
        })
        .clone();
    Arc::new(move || handle.render())
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Status and JSON body (null when the body is empty or not JSON).
pub async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

// ---------------------------------------------------------------------------------------
// Fixtures.

pub fn fixture(path: &str) -> PathBuf {
    Path::new(FIXTURES).join(path)
}

pub fn read_json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(path)).unwrap()).unwrap()
}

/// A raw request of a `.http` fixture: path, headers (without Host/Content-Length), body.
pub struct HttpFixture {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpFixture {
    pub fn read(path: &str) -> HttpFixture {
        let raw = std::fs::read_to_string(fixture(path))
            .unwrap()
            .replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let path = request_line.split(' ').nth(1).unwrap().to_owned();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .filter(|(k, _)| {
                !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("content-length")
            })
            .collect();
        HttpFixture {
            path,
            headers,
            body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("fixture has no {name} header"))
    }

    /// The fixture with header `name` replaced (or added); `None` removes it.
    pub fn with_header(mut self, name: &str, value: Option<&str>) -> HttpFixture {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            self.headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    pub fn request(&self, client: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        let mut request = client.post(format!("{base}{}", self.path));
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        request.body(self.body.clone())
    }
}

/// A Pub/Sub push body carrying `notification` as its base64 `data`.
pub fn push_body(notification: &Value, message_id: &str) -> String {
    json!({
        "message": {
            "attributes": { "registrationId": "Cg0I2fQDEgYIABCA6gcaAA" },
            "data": STANDARD.encode(notification.to_string()),
            "messageId": message_id,
            "publishTime": "2026-11-20T09:15:02.512Z"
        },
        "subscription": "projects/district-edu/subscriptions/classroom-push"
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------
// OIDC tokens.

pub fn key_pem(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(KEYS).join(name)).unwrap()
}

/// The public JWK of test key `a` or `b` (kid `key-a`, `key-b`).
pub fn jwk(name: &str) -> Value {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(KEYS).join("jwks.json")).unwrap())
            .unwrap();
    all[name].clone()
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a Pub/Sub push token.
pub fn push_claims(audience: &str, email: &str) -> Value {
    json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "azp": "1234567890",
        "sub": "1234567890",
        "email": email,
        "email_verified": true,
        "iat": now(),
        "exp": now() + 3600,
    })
}

/// An RS256 token signed with test key `key` (`a.pem`), naming `kid`.
pub fn sign(key: &str, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_rsa_pem(&key_pem(&format!("{key}.pem"))).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// A token with `alg` written by hand (`none`), with no signature.
pub fn unsigned(alg: &str, kid: &str, claims: &Value) -> String {
    let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// An HS256 token keyed with the public key's PEM text: the classic key-confusion attack.
pub fn hs256_with_public_key(kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    let key = EncodingKey::from_secret(&key_pem("a.pub.pem"));
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}
