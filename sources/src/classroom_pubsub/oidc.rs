//! Verifies the OIDC token Pub/Sub attaches to each push (`Authorization: Bearer <JWT>`).
//!
//! The token must be RS256 (anything else, `none` and HS256 included, is refused before any
//! key is looked at), signed by a key of the JWKS at `auth.jwks_url`, and carry `iss`
//! `accounts.google.com` (with or without `https://`), `aud` equal to `auth.audience`, `email`
//! equal to `auth.service_account` with `email_verified: true`, and a current `exp`/`iat`
//! (30 s of leeway for clock skew).
//!
//! Keys are cached for the JWKS's `Cache-Control: max-age` (1 h when it has none). A token
//! naming an unknown `kid` — Google rotates its keys — makes one refetch, at most once per
//! [`MIN_REFETCH`], so that made-up `kid`s cannot make the gateway hammer the key server. If
//! the key server cannot be reached the keys already held are kept; with none at all the
//! push is answered 503 (Pub/Sub retries) rather than 401.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::HeaderValue;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::time::Instant;

use super::config::AuthSpec;
use crate::answer::{Problem, clip};

/// At most one refetch for an unknown `kid` per this long.
pub const MIN_REFETCH: Duration = Duration::from_secs(30);
/// How long keys are kept when the JWKS answer does not say.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// After a failed fetch, the next one waits this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
const LEEWAY_SECONDS: u64 = 30;
const ISSUERS: [&str; 2] = ["accounts.google.com", "https://accounts.google.com"];

/// Why a push was not authenticated. The messages never quote the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// No token, or not a valid one for this gateway: 401.
    Unauthorized(String),
    /// A valid Google token, but for another principal: 403.
    Forbidden(String),
    /// The keys could not be fetched: 503, Pub/Sub retries.
    Unavailable(String),
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Problem {
        match e {
            AuthError::Unauthorized(reason) => Problem::unauthorized(reason),
            AuthError::Forbidden(reason) => Problem::forbidden(reason),
            AuthError::Unavailable(reason) => Problem::unavailable(reason),
        }
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    iat: Option<i64>,
}

/// The keys known now, and until when they are fresh.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, DecodingKey>,
    /// `None` until the first successful fetch.
    fresh_until: Option<Instant>,
}

#[derive(Default)]
struct FetchState {
    last_unknown_kid_refetch: Option<Instant>,
    no_fetch_before: Option<Instant>,
}

pub struct Verifier {
    auth: AuthSpec,
    client: reqwest::Client,
    validation: Validation,
    keys: RwLock<Arc<KeySet>>,
    /// Serializes fetches, so that a burst of pushes makes one request.
    fetch: tokio::sync::Mutex<FetchState>,
    min_refetch: Duration,
}

impl Verifier {
    pub fn new(auth: AuthSpec, client: reqwest::Client) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[&auth.audience]);
        validation.set_issuer(&ISSUERS);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        validation.leeway = LEEWAY_SECONDS;
        Verifier {
            auth,
            client,
            validation,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
            min_refetch: MIN_REFETCH,
        }
    }

    /// Checks the `Authorization` header of a push request.
    pub async fn verify(&self, authorization: Option<&HeaderValue>) -> Result<(), AuthError> {
        let unauthorized = |reason: &str| AuthError::Unauthorized(reason.to_owned());
        let header = authorization.ok_or_else(|| {
            unauthorized(
                "the request has no Authorization header; this source requires Pub/Sub's OIDC token",
            )
        })?;
        let header = header
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not text"))?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(unauthorized(
                    "the Authorization header is not `Bearer <token>`",
                ));
            }
        };
        let kid = key_id(token)?;
        let key = self.key(&kid).await?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &self.validation)
            .map_err(|e| AuthError::Unauthorized(describe(e.kind(), &self.auth)))?
            .claims;
        let now = chrono::Utc::now().timestamp();
        if claims
            .iat
            .is_some_and(|iat| iat > now + LEEWAY_SECONDS as i64)
        {
            return Err(unauthorized("the token is issued in the future (`iat`)"));
        }
        match claims.email.as_deref() {
            Some(email) if email == self.auth.service_account => {}
            Some(email) => {
                return Err(AuthError::Forbidden(format!(
                    "the token is for `{}`, not the service account of `auth.service_account`",
                    clip(email)
                )));
            }
            None => return Err(AuthError::Forbidden("the token has no `email`".into())),
        }
        if claims.email_verified != Some(serde_json::Value::Bool(true)) {
            return Err(AuthError::Forbidden(
                "the token's `email_verified` is not true".into(),
            ));
        }
        Ok(())
    }

    /// The key `kid`, fetching the JWKS when the keys are stale or `kid` is new.
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let now = Instant::now();
        let current = self.current();
        if current.fresh_until.is_some_and(|t| t > now)
            && let Some(key) = current.keys.get(kid)
        {
            return Ok(key.clone());
        }
        let mut state = self.fetch.lock().await;
        let now = Instant::now();
        let current = self.current();
        let fresh = current.fresh_until.is_some_and(|t| t > now);
        if !(fresh && current.keys.contains_key(kid)) {
            let may_fetch = state.no_fetch_before.is_none_or(|t| t <= now)
                && (!fresh
                    || state
                        .last_unknown_kid_refetch
                        .is_none_or(|t| now.duration_since(t) >= self.min_refetch));
            if may_fetch {
                if fresh {
                    state.last_unknown_kid_refetch = Some(now);
                }
                match self.fetch_keys().await {
                    Ok(keys) => {
                        state.no_fetch_before = None;
                        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
                    }
                    Err(reason) => {
                        state.no_fetch_before = Some(now + RETRY_AFTER_FAILURE);
                        tracing::warn!(jwks_url = %self.auth.jwks_url, "cannot fetch the OIDC keys: {reason}");
                        if current.keys.is_empty() {
                            return Err(AuthError::Unavailable(format!(
                                "the keys to verify the token cannot be fetched from auth.jwks_url: {reason}"
                            )));
                        }
                    }
                }
            }
        }
        drop(state);
        self.current().keys.get(kid).cloned().ok_or_else(|| {
            AuthError::Unauthorized(format!(
                "the token is signed with key `{}`, which auth.jwks_url does not publish",
                clip(kid)
            ))
        })
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn fetch_keys(&self) -> Result<KeySet, String> {
        let response = self
            .client
            .get(&self.auth.jwks_url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the key server answered {}", response.status()));
        }
        let ttl = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .unwrap_or(DEFAULT_TTL)
            .clamp(Duration::from_secs(60), Duration::from_secs(24 * 3600));
        let jwks: Jwks = response
            .json()
            .await
            .map_err(|e| format!("the key set is not a JWKS: {e}"))?;
        let keys: HashMap<String, DecodingKey> = jwks
            .keys
            .into_iter()
            .filter(|k| k.kty == "RSA" && k.alg.as_deref().is_none_or(|a| a == "RS256"))
            .filter_map(|k| {
                let kid = k.kid?;
                let key =
                    DecodingKey::from_rsa_components(k.n.as_deref()?, k.e.as_deref()?).ok()?;
                Some((kid, key))
            })
            .collect();
        if keys.is_empty() {
            return Err("the key set has no RS256 key".into());
        }
        Ok(KeySet {
            keys,
            fresh_until: Some(Instant::now() + ttl),
        })
    }

    #[cfg(test)]
    fn with_min_refetch(mut self, min_refetch: Duration) -> Self {
        self.min_refetch = min_refetch;
        self
    }
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

/// The `kid` of an RS256 token; any other `alg` is refused here, before a key is chosen.
fn key_id(token: &str) -> Result<String, AuthError> {
    let not_jwt = || AuthError::Unauthorized("the bearer token is not a JWT".into());
    let header = token.split('.').next().ok_or_else(not_jwt)?;
    let header = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| not_jwt())?;
    #[derive(Deserialize)]
    struct Header {
        alg: Option<String>,
        kid: Option<String>,
    }
    let header: Header = serde_json::from_slice(&header).map_err(|_| not_jwt())?;
    match header.alg.as_deref() {
        Some("RS256") => {}
        Some(alg) => {
            return Err(AuthError::Unauthorized(format!(
                "the token's algorithm `{}` is not accepted; Pub/Sub signs with RS256",
                clip(alg)
            )));
        }
        None => {
            return Err(AuthError::Unauthorized(
                "the token names no algorithm".into(),
            ));
        }
    }
    header
        .kid
        .ok_or_else(|| AuthError::Unauthorized("the token names no key (`kid`)".into()))
}

fn describe(kind: &ErrorKind, auth: &AuthSpec) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".into(),
        ErrorKind::InvalidIssuer => "the token is not issued by accounts.google.com".into(),
        ErrorKind::InvalidAudience => format!(
            "the token's audience is not `{}` (auth.audience)",
            auth.audience
        ),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not RS256".into(),
        _ => "the bearer token is not a valid JWT".into(),
    }
}

/// `max-age` of a `Cache-Control` header.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("max-age") {
            value.trim().parse().ok().map(Duration::from_secs)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=19192, must-revalidate, no-transform"),
            Some(Duration::from_secs(19192))
        );
        assert_eq!(max_age("no-store"), None);
    }

    #[test]
    fn only_rs256_is_accepted() {
        let token = |header: &str| format!("{}.e30.", URL_SAFE_NO_PAD.encode(header));
        assert_eq!(
            key_id(&token(r#"{"alg":"RS256","kid":"k1"}"#)),
            Ok("k1".to_owned())
        );
        for alg in ["none", "HS256", "RS512", "ES256"] {
            let err = key_id(&token(&format!(r#"{{"alg":"{alg}","kid":"k1"}}"#))).unwrap_err();
            assert!(
                matches!(&err, AuthError::Unauthorized(m) if m.contains(&format!("`{alg}` is not accepted"))),
                "{err:?}"
            );
        }
        assert!(key_id("garbage").is_err());
        assert!(key_id(&token(r#"{"alg":"RS256"}"#)).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_key_server_answers_unavailable() {
        let auth = AuthSpec {
            audience: "a".into(),
            service_account: "s@x".into(),
            // Nothing listens on port 9 of loopback (discard is not run here).
            jwks_url: "http://127.0.0.1:9/certs".into(),
        };
        let verifier = Verifier::new(auth, reqwest::Client::new()).with_min_refetch(Duration::ZERO);
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k1"}"#);
        let value = HeaderValue::from_str(&format!("Bearer {header}.e30.sig")).unwrap();
        let err = verifier.verify(Some(&value)).await.unwrap_err();
        assert!(matches!(err, AuthError::Unavailable(_)), "{err:?}");
    }
}
