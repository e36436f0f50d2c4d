//! The four Google calls the lifecycle needs, over reqwest with service-account tokens:
//! Classroom `registrations.create` / `registrations.delete`, Directory `users.watch` /
//! `channels.stop`. Errors keep Google's status and message and add what the operator must
//! do for the errors Google documents (`@MissingGrant`, publish permission on the topic).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::{RegistrationSpec, WatchSpec};
use super::token::{Grant, TokenSource};

/// Google's messages are kept whole up to this many characters: the documented markers
/// (`@MissingGrant`) and the advice come after the status.
fn long_clip(text: &str) -> String {
    match text.char_indices().nth(400) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

pub const CLASSROOM_API: &str = "https://classroom.googleapis.com";
pub const DIRECTORY_API: &str = "https://admin.googleapis.com";
const PUSH_SCOPE: &str = "https://www.googleapis.com/auth/classroom.push-notifications";
const DIRECTORY_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Who publishes Classroom's notifications, and so needs publish rights on the topic.
pub const CLASSROOM_PUBLISHER: &str = "classroom-notifications@system.gserviceaccount.com";

/// Where the calls go and as whom (from `google:`; tests point the URLs at local servers).
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub credentials: std::path::PathBuf,
    pub subject: Option<String>,
    pub token_url: Option<String>,
    pub classroom_api: String,
    pub directory_api: String,
}

/// A failed call: what Google said, and whether trying again can help by itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub message: String,
    /// 404 on delete/stop: the thing is gone already, which is what was wanted.
    pub gone: bool,
}

impl ApiError {
    fn new(message: impl Into<String>) -> Self {
        ApiError {
            message: message.into(),
            gone: false,
        }
    }
}

/// A registration as Classroom answered it.
#[derive(Clone, Debug, PartialEq)]
pub struct Registration {
    pub id: String,
    pub expiry: DateTime<Utc>,
}

/// A channel as the Directory API answered it.
#[derive(Clone, Debug, PartialEq)]
pub struct Channel {
    pub id: String,
    pub resource_id: String,
    pub expiration: DateTime<Utc>,
}

pub struct Api {
    client: reqwest::Client,
    config: ApiConfig,
    classroom: TokenSource,
    directory: TokenSource,
}

impl Api {
    /// Reads the key file; `feeds` decide the Classroom scopes asked for.
    pub async fn new(
        config: ApiConfig,
        registrations: &[RegistrationSpec],
        client: reqwest::Client,
    ) -> Result<Api, String> {
        let mut scopes = vec![PUSH_SCOPE];
        for registration in registrations {
            let scope = registration.feed.scope();
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        let grant = Grant {
            scopes: scopes.join(" "),
            subject: config.subject.clone(),
            token_url: config.token_url.clone(),
        };
        let classroom = TokenSource::load(&config.credentials, grant).await?;
        let directory = classroom.with_scopes(DIRECTORY_SCOPE);
        Ok(Api {
            client,
            config,
            classroom,
            directory,
        })
    }

    /// Who the calls are made as, for messages: the subject, else the service account.
    pub fn acting_as(&self) -> &str {
        self.config
            .subject
            .as_deref()
            .unwrap_or(self.classroom.email())
    }

    /// `registrations.create`: also how a registration is renewed.
    pub async fn create_registration(
        &self,
        spec: &RegistrationSpec,
    ) -> Result<Registration, ApiError> {
        let url = format!("{}/v1/registrations", self.config.classroom_api);
        let body = json!({
            "feed": spec.feed.to_api(),
            "cloudPubsubTopic": {"topicName": spec.topic},
        });
        let answer = self
            .call(&self.classroom, reqwest::Method::POST, &url, Some(body))
            .await
            .map_err(|e| self.explain_registration(spec, e))?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            registration_id: String,
            expiry_time: DateTime<Utc>,
        }
        let answer: Answer = serde_json::from_value(answer).map_err(|e| {
            ApiError::new(format!(
                "registrations.create answered without registrationId/expiryTime: {e}"
            ))
        })?;
        Ok(Registration {
            id: answer.registration_id,
            expiry: answer.expiry_time,
        })
    }

    /// `registrations.delete`.
    pub async fn delete_registration(&self, id: &str) -> Result<(), ApiError> {
        let url = format!("{}/v1/registrations/{id}", self.config.classroom_api);
        self.call(&self.classroom, reqwest::Method::DELETE, &url, None)
            .await
            .map(drop)
    }

    /// `users.watch` with a fresh channel id and token.
    pub async fn watch(
        &self,
        spec: &WatchSpec,
        id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Channel, ApiError> {
        let (event, address) = (spec.event.as_str(), spec.address.as_str());
        let ttl = spec.ttl.as_secs().max(1);
        let expiration = now + chrono::TimeDelta::seconds(ttl as i64);
        let (key, value) = spec.scope.query();
        let url = format!(
            "{}/admin/directory/v1/users/watch",
            self.config.directory_api
        );
        let url = reqwest::Url::parse_with_params(&url, [("event", event), (key, value)])
            .map_err(|e| ApiError::new(format!("bad Directory API URL: {e}")))?;
        let body = json!({
            "id": id,
            "type": "web_hook",
            "address": address,
            "token": token,
            "expiration": expiration.timestamp_millis().to_string(),
            "params": {"ttl": ttl.to_string()},
        });
        let answer = self
            .call(
                &self.directory,
                reqwest::Method::POST,
                url.as_str(),
                Some(body),
            )
            .await
            .map_err(|e| self.explain_directory(e))?;
        let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_owned);
        let resource_id = field("resourceId")
            .ok_or_else(|| ApiError::new("users.watch answered without a resourceId"))?;
        // `expiration` is int64 milliseconds, which Google's JSON writes as a string.
        let expiration = answer
            .get("expiration")
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or(v.as_i64()))
            .and_then(|ms: i64| Utc.timestamp_millis_opt(ms).single())
            .unwrap_or(expiration);
        Ok(Channel {
            id: field("id").unwrap_or_else(|| id.to_owned()),
            resource_id,
            expiration,
        })
    }

    /// `channels.stop`.
    pub async fn stop_channel(&self, id: &str, resource_id: &str) -> Result<(), ApiError> {
        let url = format!(
            "{}/admin/directory_v1/channels/stop",
            self.config.directory_api
        );
        let body = json!({"id": id, "resourceId": resource_id});
        self.call(&self.directory, reqwest::Method::POST, &url, Some(body))
            .await
            .map(drop)
    }

    async fn call(
        &self,
        tokens: &TokenSource,
        method: reqwest::Method,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let token = tokens
            .token(&self.client)
            .await
            .map_err(|e| ApiError::new(format!("no access token for {}: {e}", self.acting_as())))?;
        let mut request = self
            .client
            .request(method.clone(), url)
            .bearer_auth(token)
            .timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let what = format!("{method} {}", url.split('?').next().unwrap_or(url));
        let response = request
            .send()
            .await
            .map_err(|e| ApiError::new(format!("{what} failed: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| {
                ApiError::new(format!("{what} answered something that is not JSON: {e}"))
            });
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            tokens.invalidate().await;
        }
        let (google_status, message) = google_error(&text);
        Err(ApiError {
            message: format!("{what} answered {status} {google_status}: {message}"),
            gone: status == reqwest::StatusCode::NOT_FOUND
                && (method == reqwest::Method::DELETE || url.ends_with("/channels/stop")),
        })
    }

    /// Adds what the operator must do to the errors `registrations.create` documents.
    fn explain_registration(&self, spec: &RegistrationSpec, e: ApiError) -> ApiError {
        let hint = if e.message.contains("@MissingGrant") {
            format!(
                "{} has not granted this Cloud project the scopes for {} (domain-wide \
                 delegation does not count for Classroom notifications): have that account \
                 authorize the project once and keep its OAuth grant, or set `google.subject` \
                 to an account that has",
                self.acting_as(),
                spec.feed
            )
        } else if e.message.contains("PERMISSION_DENIED") || e.message.contains("NOT_FOUND") {
            format!(
                "check that {} may read {} and that {CLASSROOM_PUBLISHER} has the Pub/Sub \
                 Publisher role (roles/pubsub.publisher) on {}",
                self.acting_as(),
                spec.feed,
                spec.topic
            )
        } else {
            return e;
        };
        ApiError {
            message: format!("{}; {hint}", e.message),
            gone: e.gone,
        }
    }

    fn explain_directory(&self, e: ApiError) -> ApiError {
        if !(e.message.contains("403") || e.message.contains("401")) {
            return e;
        }
        ApiError {
            message: format!(
                "{}; the service account needs domain-wide delegation for {DIRECTORY_SCOPE} \
                 and `google.subject` must be an administrator who may read users",
                e.message
            ),
            gone: e.gone,
        }
    }
}

/// Google's `{"error": {"status": "...", "message": "..."}}`, or the body clipped.
fn google_error(text: &str) -> (String, String) {
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match (field("status"), field("message")) {
        (status, Some(message)) => (status.unwrap_or_default(), long_clip(&message)),
        (_, None) => (String::new(), long_clip(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn googles_error_body_is_read() {
        let body = r#"{"error": {"code": 403, "message": "@MissingGrant The user has not granted", "status": "PERMISSION_DENIED"}}"#;
        assert_eq!(
            google_error(body),
            (
                "PERMISSION_DENIED".to_owned(),
                "@MissingGrant The user has not granted".to_owned()
            )
        );
        assert_eq!(google_error("oops").1, "oops");
    }
}
