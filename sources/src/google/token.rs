//! OAuth2 access tokens from a service-account key file: a JWT signed with the account's key
//! is exchanged at its `token_uri` (or `google.token_url`) for an access token with the
//! scopes a caller needs (the JWT-bearer grant), optionally acting as a user of the domain
//! (`sub`, domain-wide delegation). The token is cached until a minute before it expires,
//! and dropped when the API refuses it. Used by the pull loop (Pub/Sub scope) and by the
//! Google lifecycle manager (Classroom and Directory scopes).

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::answer::clip;

/// The scope the pull loop asks for.
pub const PUBSUB_SCOPE: &str = "https://www.googleapis.com/auth/pubsub";
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const GRANT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
/// A token is renewed this long before it expires.
const MARGIN: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    client_email: String,
    private_key: String,
    #[serde(default)]
    private_key_id: Option<String>,
    #[serde(default)]
    token_uri: Option<String>,
}

#[derive(Serialize)]
struct GrantClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// What a token is asked for: scopes (space-separated), the user to act as, and a token
/// endpoint that replaces the key file's `token_uri` (tests, private endpoints).
#[derive(Clone, Debug, Default)]
pub struct Grant {
    pub scopes: String,
    pub subject: Option<String>,
    pub token_url: Option<String>,
}

pub struct TokenSource {
    email: String,
    scopes: String,
    subject: Option<String>,
    key: EncodingKey,
    key_id: Option<String>,
    token_uri: String,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl TokenSource {
    /// Reads a service-account key file for the Pub/Sub scope; the error names the file and
    /// what is wrong.
    pub async fn from_file(path: &Path) -> Result<Self, String> {
        let grant = Grant {
            scopes: PUBSUB_SCOPE.to_owned(),
            ..Grant::default()
        };
        Self::load(path, grant).await
    }

    /// Reads a service-account key file for `grant`.
    pub async fn load(path: &Path, grant: Grant) -> Result<Self, String> {
        let text = tokio::fs::read(path)
            .await
            .map_err(|e| format!("cannot read the credentials file {}: {e}", path.display()))?;
        let file: KeyFile = serde_json::from_slice(&text).map_err(|e| {
            format!(
                "the credentials file {} is not a service-account key (JSON): {e}",
                path.display()
            )
        })?;
        if let Some(kind) = &file.kind
            && kind != "service_account"
        {
            return Err(format!(
                "the credentials file {} is a `{kind}` credential; a service-account key is needed",
                path.display()
            ));
        }
        let key = EncodingKey::from_rsa_pem(file.private_key.as_bytes()).map_err(|e| {
            format!(
                "the credentials file {} has no usable `private_key`: {e}",
                path.display()
            )
        })?;
        Ok(TokenSource {
            email: file.client_email,
            scopes: grant.scopes,
            subject: grant.subject,
            key,
            key_id: file.private_key_id,
            token_uri: grant
                .token_url
                .or(file.token_uri)
                .unwrap_or_else(|| GOOGLE_TOKEN_URI.to_owned()),
            cached: tokio::sync::Mutex::new(None),
        })
    }

    /// A current access token, fetched when none is cached or it is about to expire.
    pub async fn token(&self, client: &reqwest::Client) -> Result<String, String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && *until > Instant::now()
        {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch(client).await?;
        let until = Instant::now() + lifetime.saturating_sub(MARGIN);
        *cached = Some((token.clone(), until));
        Ok(token)
    }

    /// The same account asked for other scopes, with a cache of its own (the key file is
    /// read once).
    pub fn with_scopes(&self, scopes: &str) -> TokenSource {
        TokenSource {
            email: self.email.clone(),
            scopes: scopes.to_owned(),
            subject: self.subject.clone(),
            key: self.key.clone(),
            key_id: self.key_id.clone(),
            token_uri: self.token_uri.clone(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The service account's e-mail address (for messages to the operator).
    pub fn email(&self) -> &str {
        &self.email
    }

    /// Forgets the cached token (the API answered 401).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self, client: &reqwest::Client) -> Result<(String, Duration), String> {
        let now = chrono::Utc::now().timestamp();
        let claims = GrantClaims {
            iss: &self.email,
            scope: &self.scopes,
            sub: self.subject.as_deref(),
            aud: &self.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let assertion = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| format!("cannot sign the token request: {e}"))?;
        let response = client
            .post(&self.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            // The assertion is base64url and dots: nothing in it needs escaping.
            .body(format!("grant_type={GRANT_TYPE}&assertion={assertion}"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| format!("the token request to {} failed: {e}", self.token_uri))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!(
                "{} refused the token request ({status}): {}",
                self.token_uri,
                clip(&text)
            ));
        }
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| format!("{} answered no access token: {e}", self.token_uri))?;
        Ok((
            answer.access_token,
            Duration::from_secs(answer.expires_in.unwrap_or(3600)),
        ))
    }
}
