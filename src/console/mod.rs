//! The web console and the admin listener's access control (docs/architecture.md §12).
//!
//! * `server.admin_token` set: `/api/*` and `/-/*` want `Authorization: Bearer <token>` (the
//!   CLI sends it) or a console session; the console (`/console`) wants a login with the token,
//!   then a session cookie (HttpOnly, SameSite=Strict, 8 h), a CSRF token on every POST, an
//!   Origin / `Sec-Fetch-Site` of this site and a `Host` that names this listener.
//! * not set: the API stays open as before (the listener is loopback by default) and the
//!   console refuses with a page saying to set the token.
//!
//! `/metrics`, `/healthz` and `/readyz` are always open. The pages are files of
//! `src/console/assets/` compiled into the binary; they render data with `textContent` only.
//! Logins, replays, purges, renewals and stops are logged on the tracing target `audit`.

pub mod mask;
pub mod views;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use herald_core::config::AdminToken;
use herald_core::encoding::hex;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::admin::AdminState;

/// How long a console session lasts from its login.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Logins allowed per client address: a burst of this many, then one more per 12 s.
pub const LOGIN_BURST: u32 = 5;
/// At most this many live sessions; the oldest goes first.
const MAX_SESSIONS: usize = 256;
pub const COOKIE: &str = "herald_session";
/// The header the console's scripts send the session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON: &[u8] = include_bytes!("assets/icon.svg");

/// The Content-Security-Policy of every console answer: nothing but this origin's files, no
/// inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Who asked for an admin operation, for the audit log.
#[derive(Clone, Debug)]
pub struct Actor(pub String);

struct Session {
    csrf: String,
    expires: Instant,
    /// A number for the audit log (the id itself is a secret).
    label: u64,
}

/// The admin token, the console's sessions and the login limiter.
pub struct Security {
    token: Option<AdminToken>,
    /// The admin listener's bound address, for the `Host` check (set once it is bound).
    pub local: OnceLock<SocketAddr>,
    /// Keyed by the SHA-256 of the session id, so a lookup takes no time that depends on it.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    next_label: std::sync::atomic::AtomicU64,
    logins: DefaultKeyedRateLimiter<IpAddr>,
}

impl Security {
    pub fn new(token: Option<AdminToken>) -> Security {
        let burst = NonZeroU32::new(LOGIN_BURST).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_secs(12))
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(burst);
        Security {
            token,
            local: OnceLock::new(),
            sessions: Mutex::new(HashMap::new()),
            next_label: std::sync::atomic::AtomicU64::new(1),
            logins: RateLimiter::keyed(quota),
        }
    }

    pub fn token_set(&self) -> bool {
        self.token.is_some()
    }

    /// Compares `given` with the admin token in constant time (of both hashed, so the
    /// length does not show either).
    fn token_matches(&self, given: &str) -> bool {
        let Some(token) = &self.token else {
            return false;
        };
        let a = Sha256::digest(token.expose().as_bytes());
        let b = Sha256::digest(given.as_bytes());
        bool::from(a.ct_eq(&b))
    }

    fn new_session(&self) -> (String, u64) {
        let id: [u8; 32] = rand::random();
        let csrf: [u8; 32] = rand::random();
        let label = self
            .next_label
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        let id = hex(&id);
        sessions.insert(
            Sha256::digest(id.as_bytes()).into(),
            Session {
                csrf: hex(&csrf),
                expires: now + SESSION_TTL,
                label,
            },
        );
        (id, label)
    }

    /// The live session the request's cookie names: its CSRF token and label.
    fn session(&self, headers: &HeaderMap) -> Option<(String, u64)> {
        let id = cookie(headers, COOKIE)?;
        let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some((s.csrf.clone(), s.label)),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    fn end_session(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE) {
            let key: [u8; 32] = Sha256::digest(id.as_bytes()).into();
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }

    /// `Host` must name this listener: its bound address, or `localhost` / a loopback
    /// address on its port (an SSH tunnel, a reverse proxy passing the upstream's host).
    /// A page reached under another name (DNS rebinding) gets nothing.
    fn host_ok(&self, headers: &HeaderMap) -> Result<(), String> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let Some(local) = self.local.get() else {
            return Err("the admin listener is not bound yet".into());
        };
        let port = local.port();
        let allowed = [
            local.to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        if allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            Ok(())
        } else {
            Err(format!(
                "the Host header `{}` does not name this admin listener; use http://localhost:{port}/console (docs: README, \"The console\")",
                clip(host)
            ))
        }
    }
}

/// A state-changing request from a browser must come from this site: `Sec-Fetch-Site:
/// same-origin` when the browser sends it, else an `Origin` (when sent) naming `Host`.
fn same_site(headers: &HeaderMap) -> Result<(), String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return if site.eq_ignore_ascii_case("same-origin") {
            Ok(())
        } else {
            Err(format!("a {} request (Sec-Fetch-Site)", clip(site)))
        };
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or("");
        let ok = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|o| o.eq_ignore_ascii_case(host));
        if !ok {
            return Err(format!("a request from another origin ({})", clip(origin)));
        }
    }
    Ok(())
}

/// The value of cookie `name` in the request.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn clip(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

fn problem(status: StatusCode, error: &str, reason: &str) -> Response {
    (status, Json(json!({"error": error, "reason": reason}))).into_response()
}

/// The guard of `/api/*` and `/-/*`: a bearer token or a console session (with CSRF checks
/// on a POST) when `server.admin_token` is set; open otherwise. Records who asked.
pub async fn guard(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let security = &s.security;
    if !security.token_set() {
        request
            .extensions_mut()
            .insert(Actor(format!("api from {}", peer.ip())));
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let given = auth
            .to_str()
            .ok()
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        if security.token_matches(given.trim()) {
            request
                .extensions_mut()
                .insert(Actor(format!("token from {}", peer.ip())));
            return next.run(request).await;
        }
        tracing::warn!(target: "audit", action = "api", outcome = "refused", client = %peer.ip(), path = %request.uri().path(), "wrong admin token");
        return unauthorized("the bearer token is not this gateway's `server.admin_token`");
    }
    if let Some((csrf, label)) = security.session(headers) {
        if let Err(reason) = security.host_ok(headers) {
            return problem(StatusCode::MISDIRECTED_REQUEST, "wrong host", &reason);
        }
        if !matches!(*request.method(), Method::GET | Method::HEAD) {
            if let Err(why) = same_site(headers) {
                return problem(
                    StatusCode::FORBIDDEN,
                    "cross-site request refused",
                    &format!("{why}; the console only accepts its own pages' requests"),
                );
            }
            let given = headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !bool::from(given.as_bytes().ct_eq(csrf.as_bytes())) {
                return problem(
                    StatusCode::FORBIDDEN,
                    "CSRF token missing or wrong",
                    "reload the console page and try again",
                );
            }
        }
        request
            .extensions_mut()
            .insert(Actor(format!("console session {label} from {}", peer.ip())));
        return next.run(request).await;
    }
    unauthorized(
        "the admin API wants `Authorization: Bearer <server.admin_token>` (the herald CLI sends it from the config) or a console login",
    )
}

fn unauthorized(reason: &str) -> Response {
    let mut r = problem(StatusCode::UNAUTHORIZED, "unauthorized", reason);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"herald admin\""),
    );
    r
}

/// `/console…`: the pages, the login and the logout.
pub fn router() -> Router<AdminState> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/app.js", get(|| asset("text/javascript", APP_JS)))
        .route("/console/app.css", get(|| asset("text/css", APP_CSS)))
        .route(
            "/console/icon.svg",
            get(|| async { ([(header::CONTENT_TYPE, "image/svg+xml")], ICON).into_response() }),
        )
        .layer(axum::middleware::from_fn(headers_layer))
}

async fn asset(kind: &'static str, text: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, format!("{kind}; charset=utf-8")),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
        ],
        text,
    )
        .into_response()
}

/// The console's security headers, on every answer under `/console`.
async fn headers_layer(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A small page of fixed text (no request data in it but escaped text).
fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = LOGIN
        .replace("{{title}}", &escape(title))
        .replace("{{message}}", &escape(text))
        .replace("{{form_hidden}}", "hidden");
    html(status, body)
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn no_token_page() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "The console is off",
        "Set server.admin_token in routes.yaml (at least 16 characters, e.g. from `openssl rand -hex 32`, best through ${HERALD_ADMIN_TOKEN}) and restart the gateway; the console then asks for that token.",
    )
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response()
}

async fn index(State(s): State<AdminState>, headers: HeaderMap) -> Response {
    let security = &s.security;
    if let Some(refused) = console_refused(security, &headers) {
        return refused;
    }
    match security.session(&headers) {
        // The CSRF token is hex: safe in the attribute as it is.
        Some((csrf, _)) => html(StatusCode::OK, INDEX.replace("{{csrf}}", &csrf)),
        None => redirect("/console/login"),
    }
}

/// The page that refuses a console request, if it is refused: the console answers only
/// with a token set and on this listener's Host.
fn console_refused(security: &Security, headers: &HeaderMap) -> Option<Response> {
    if !security.token_set() {
        return Some(no_token_page());
    }
    security
        .host_ok(headers)
        .err()
        .map(|reason| message_page(StatusCode::MISDIRECTED_REQUEST, "Wrong address", &reason))
}

async fn login_page(
    State(s): State<AdminState>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let security = &s.security;
    if let Some(refused) = console_refused(security, &headers) {
        return refused;
    }
    let message = match query.as_deref() {
        Some("failed") => "Login failed.",
        Some("expired") => "Your session ended; log in again.",
        _ => "",
    };
    html(
        StatusCode::OK,
        LOGIN
            .replace("{{title}}", "Log in to Herald")
            .replace("{{message}}", message)
            .replace("{{form_hidden}}", ""),
    )
}

async fn login(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let security = &s.security;
    if let Some(refused) = console_refused(security, &headers) {
        return refused;
    }
    if let Err(why) = same_site(&headers) {
        tracing::warn!(target: "audit", action = "login", outcome = "refused", client = %peer.ip(), "{why}");
        return message_page(
            StatusCode::FORBIDDEN,
            "Login refused",
            "This login did not come from the console's own page.",
        );
    }
    if security.logins.check_key(&peer.ip()).is_err() {
        tracing::warn!(target: "audit", action = "login", outcome = "rate-limited", client = %peer.ip(), "too many logins");
        let mut r = message_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many logins",
            "Too many login attempts from this address; wait a minute and try again.",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let body = String::from_utf8_lossy(&body);
    let token = crate::admin::form_pairs(&body)
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
        .unwrap_or_default();
    if !security.token_matches(token.trim()) {
        tracing::warn!(target: "audit", action = "login", outcome = "failed", client = %peer.ip(), "console login failed");
        return redirect("/console/login?failed");
    }
    let (id, label) = security.new_session();
    tracing::info!(target: "audit", action = "login", outcome = "ok", client = %peer.ip(), session = label, "console login");
    // Behind a TLS-terminating proxy (X-Forwarded-Proto: https) the cookie is Secure too.
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut r = redirect("/console");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn logout(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let security = &s.security;
    let Some((csrf, label)) = security.session(&headers) else {
        return redirect("/console/login");
    };
    let body = String::from_utf8_lossy(&body);
    let given = crate::admin::form_pairs(&body)
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v)
        .unwrap_or_default();
    if same_site(&headers).is_err() || !bool::from(given.as_bytes().ct_eq(csrf.as_bytes())) {
        return message_page(
            StatusCode::FORBIDDEN,
            "Logout refused",
            "This request did not come from the console's own page.",
        );
    }
    security.end_session(&headers);
    tracing::info!(target: "audit", action = "logout", client = %peer.ip(), session = label, "console logout");
    let mut r = redirect("/console/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("herald_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn same_site_wants_this_origin() {
        assert!(same_site(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_site(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_site(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(
            same_site(&headers(&[
                ("host", "127.0.0.1:9090"),
                ("origin", "http://127.0.0.1:9090")
            ]))
            .is_ok()
        );
        assert!(
            same_site(&headers(&[
                ("host", "127.0.0.1:9090"),
                ("origin", "http://evil.example")
            ]))
            .is_err()
        );
        assert!(
            same_site(&headers(&[])).is_ok(),
            "curl: the CSRF token decides"
        );
    }

    #[test]
    fn cookies_and_escaping() {
        let h = headers(&[("cookie", "a=1; herald_session=abc; b=2")]);
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(
            escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }

    #[test]
    fn sessions_are_random_and_found_by_their_cookie() {
        let s = Security::new(Some(AdminToken::new("0123456789abcdef").unwrap()));
        assert!(s.token_matches("0123456789abcdef"));
        assert!(!s.token_matches("0123456789abcdeg"));
        assert!(!s.token_matches(""));
        let (a, _) = s.new_session();
        let (b, _) = s.new_session();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64, "256 bits");
        let h = headers(&[("cookie", &format!("herald_session={a}"))]);
        assert!(s.session(&h).is_some());
        s.end_session(&h);
        assert!(s.session(&h).is_none());
    }
}
