//! The pull loop: `:pull` a batch from the subscription, commit each message's event, and
//! `:acknowledge` only the messages whose event (or rejected input) is stored. A message the
//! journal cannot take is handed back at once (`:modifyAckDeadline` to 0) and the loop
//! backs off; one whose acknowledgement is lost comes back after its deadline and is then a
//! duplicate to the journal, acknowledged without a second event.
//!
//! The endpoint is `pull.endpoint`, else `http://$PUBSUB_EMULATOR_HOST`, else Google's. It is
//! called with an OAuth2 token from a service-account key (`pull.credentials`, then
//! `google.credentials`, then `$GOOGLE_APPLICATION_CREDENTIALS`), except that an emulator
//! (`pull.endpoint` or `$PUBSUB_EMULATOR_HOST`) without `pull.credentials` gets none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald_core::backoff::Backoff;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::{PUBSUB_ENDPOINT, PullSpec};
use super::decode::decode_message;
use crate::answer::clip;
use crate::google::settings::Fallbacks;
use crate::google::token::TokenSource;
use crate::intake::Intake;
use crate::telemetry;

/// After an empty pull, the next one waits this long (an emulator answers at once).
const IDLE: Duration = Duration::from_millis(500);
/// After failed pulls in a row: 250 ms doubling up to 30 s.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
/// A pull may be held open by Pub/Sub while it waits for messages.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Puller {
    intake: Arc<Intake>,
    subscription: String,
    /// `{endpoint}/v1/{subscription}`, to which `:pull` etc. are appended.
    base: String,
    auth: Option<TokenSource>,
    client: reqwest::Client,
    max_messages: u32,
    ack_deadline: Option<Duration>,
}

#[derive(Deserialize)]
struct PullAnswer {
    #[serde(default, rename = "receivedMessages")]
    received: Vec<Received>,
}

#[derive(Deserialize)]
struct Received {
    #[serde(rename = "ackId")]
    ack_id: String,
    #[serde(default)]
    message: Value,
}

impl Puller {
    /// Prepares the loop of one source: picks the endpoint and reads the credentials. The
    /// error names the source and says what to set.
    pub async fn new(
        intake: Intake,
        spec: &PullSpec,
        fallbacks: &Fallbacks,
        client: reqwest::Client,
    ) -> Result<Self, String> {
        let emulator = fallbacks
            .emulator_host
            .as_deref()
            .filter(|h| !h.is_empty())
            .map(|host| format!("http://{host}"));
        let (endpoint, credentials) = match (&spec.endpoint, emulator) {
            (Some(endpoint), _) => (endpoint.clone(), spec.credentials.clone()),
            (None, Some(emulator)) => (emulator, spec.credentials.clone()),
            (None, None) => {
                let credentials = spec
                    .credentials
                    .clone()
                    .or_else(|| fallbacks.google_credentials.clone())
                    .or_else(|| fallbacks.application_credentials.clone())
                    .ok_or_else(|| {
                        "pulling from Google's Pub/Sub needs a service-account key: set \
                         `pull.credentials`, `google.credentials` or \
                         $GOOGLE_APPLICATION_CREDENTIALS"
                            .to_owned()
                    })?;
                (PUBSUB_ENDPOINT.to_owned(), Some(credentials))
            }
        };
        let auth = match credentials {
            Some(path) => Some(TokenSource::from_file(&path).await?),
            None => None,
        };
        Ok(Puller {
            intake: Arc::new(intake),
            subscription: spec.subscription.clone(),
            base: format!(
                "{}/v1/{}",
                endpoint.trim_end_matches('/'),
                spec.subscription
            ),
            auth,
            client,
            max_messages: spec.max_messages,
            ack_deadline: spec.ack_deadline,
        })
    }

    /// Pulls until `stop` is cancelled; a batch being stored is finished first.
    pub async fn run(self, stop: CancellationToken) {
        let source = self.intake.source.clone();
        tracing::info!(source = %source, subscription = %self.subscription, url = %self.base,
            authenticated = self.auth.is_some(), "pulling from Pub/Sub");
        let mut failures = 0;
        loop {
            if stop.is_cancelled() {
                break;
            }
            let pulled = tokio::select! {
                _ = stop.cancelled() => break,
                pulled = self.pull() => pulled,
            };
            let wait = match pulled {
                Err(e) => {
                    failures += 1;
                    let wait = BACKOFF.ceiling(failures);
                    telemetry::pull_error(&source);
                    tracing::warn!(source = %source, "pull failed, retrying in {wait:?}: {e}");
                    wait
                }
                Ok(batch) if batch.is_empty() => {
                    failures = 0;
                    IDLE
                }
                Ok(batch) => {
                    if self.handle(batch).await {
                        failures = 0;
                        Duration::ZERO
                    } else {
                        failures += 1;
                        BACKOFF.ceiling(failures)
                    }
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        tracing::info!(source = %source, "pull loop stopped");
    }

    /// Stores a batch and acknowledges what was stored; `false` when the journal could not
    /// take some of it (they were handed back).
    async fn handle(&self, batch: Vec<Received>) -> bool {
        let source = &self.intake.source;
        if let Some(deadline) = self.ack_deadline {
            let ids: Vec<&str> = batch.iter().map(|r| r.ack_id.as_str()).collect();
            if let Err(e) = self.modify_deadline(&ids, deadline.as_secs()).await {
                telemetry::pull_error(source);
                tracing::warn!(source = %source, "cannot extend the ack deadline: {e}");
            }
        }
        let mut stores = JoinSet::new();
        for received in batch {
            let intake = Arc::clone(&self.intake);
            let subscription = self.subscription.clone();
            stores.spawn(async move {
                let stored = store(&intake, &subscription, &received.message).await;
                (received.ack_id, stored)
            });
        }
        let mut acked = Vec::new();
        let mut handed_back = Vec::new();
        while let Some(joined) = stores.join_next().await {
            match joined {
                Ok((ack_id, true)) => acked.push(ack_id),
                Ok((ack_id, false)) => handed_back.push(ack_id),
                // A store task that panicked: its message comes back after its deadline.
                Err(e) => tracing::error!(source = %source, "storing a pulled message failed: {e}"),
            }
        }
        if !acked.is_empty()
            && let Err(e) = self
                .call("acknowledge", json!({ "ackIds": acked }), CALL_TIMEOUT)
                .await
        {
            // The messages come back after their deadline and are duplicates then.
            telemetry::pull_error(source);
            tracing::warn!(source = %source, "acknowledge failed; the stored messages will be redelivered and recognised as duplicates: {e}");
        }
        if handed_back.is_empty() {
            return true;
        }
        let ids: Vec<&str> = handed_back.iter().map(String::as_str).collect();
        if let Err(e) = self.modify_deadline(&ids, 0).await {
            telemetry::pull_error(source);
            tracing::warn!(source = %source, "cannot hand messages back: {e}");
        }
        false
    }

    async fn pull(&self) -> Result<Vec<Received>, String> {
        let answer = self
            .call(
                "pull",
                json!({ "maxMessages": self.max_messages }),
                PULL_TIMEOUT,
            )
            .await?;
        let answer: PullAnswer = serde_json::from_value(answer)
            .map_err(|e| format!("the pull answer is not a list of received messages: {e}"))?;
        Ok(answer.received)
    }

    async fn modify_deadline(&self, ack_ids: &[&str], seconds: u64) -> Result<(), String> {
        self.call(
            "modifyAckDeadline",
            json!({ "ackIds": ack_ids, "ackDeadlineSeconds": seconds }),
            CALL_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `POST {base}:{method}` with a JSON body, authenticated when the source has
    /// credentials.
    async fn call(&self, method: &str, body: Value, timeout: Duration) -> Result<Value, String> {
        let mut request = self
            .client
            .post(format!("{}:{method}", self.base))
            .json(&body)
            .timeout(timeout);
        if let Some(auth) = &self.auth {
            request = request.bearer_auth(auth.token(&self.client).await?);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!(":{method} failed: {e}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED
            && let Some(auth) = &self.auth
        {
            auth.invalidate().await;
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!(":{method} answered {status}: {}", clip(&text)));
        }
        let text = response
            .bytes()
            .await
            .map_err(|e| format!(":{method} answer could not be read: {e}"))?;
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Object(Default::default()));
        }
        serde_json::from_slice(&text).map_err(|e| format!(":{method} answer is not JSON: {e}"))
    }
}

/// Stores one pulled message: its event, or the message as a rejected input when it cannot
/// be decoded. `true` when it may be acknowledged.
async fn store(intake: &Intake, subscription: &str, message: &Value) -> bool {
    let started = Instant::now();
    let decoded = decode_message(&intake.source, Some(subscription), message);
    intake.metrics.decode_seconds.record(started.elapsed());
    let stored = match decoded {
        Ok(event) => intake.commit(event).await.map(drop),
        Err(e) => {
            tracing::warn!(source = %intake.source, "pulled message kept as a rejected input: {e}");
            let mut meta = BTreeMap::from([("subscription".to_owned(), subscription.to_owned())]);
            if let Some(id) = message.get("messageId").and_then(Value::as_str) {
                meta.insert("messageId".to_owned(), id.to_owned());
            }
            intake
                .reject(&e.reason, meta, message.to_string().as_bytes())
                .await
        }
    };
    match stored {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(source = %intake.source, "pulled message not stored, handed back: {e}");
            false
        }
    }
}
