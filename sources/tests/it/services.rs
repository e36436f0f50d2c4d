//! The outside services the sources talk to, as real HTTP servers on 127.0.0.1: a JWKS
//! endpoint with the test keys, and a Pub/Sub REST server (pull, acknowledge,
//! modifyAckDeadline, redelivery after the ack deadline) with an OAuth2 token endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::common::*;

async fn serve(app: Router) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

// ---------------------------------------------------------------------------------------

type Keys = Arc<Mutex<Vec<Value>>>;

/// A JWKS endpoint whose keys a test can change; it counts the fetches.
pub struct JwksServer {
    pub url: String,
    keys: Keys,
    fetches: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> JwksServer {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let state = (keys.clone(), fetches.clone());
        let app = Router::new().route(
            "/oauth2/v3/certs",
            get(
                |State((keys, fetches)): State<(Keys, Arc<AtomicUsize>)>| async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    let keys = keys.lock().unwrap().clone();
                    (
                        [(
                            header::CACHE_CONTROL,
                            "public, max-age=3600, must-revalidate",
                        )],
                        axum::Json(json!({ "keys": keys })),
                    )
                },
            )
            .with_state(state),
        );
        let (base, task) = serve(app).await;
        JwksServer {
            url: format!("{base}/oauth2/v3/certs"),
            keys,
            fetches,
            task,
        }
    }

    pub fn add(&self, key: Value) {
        self.keys.lock().unwrap().push(key);
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------

pub const SUBSCRIPTION: &str = "projects/district-edu/subscriptions/classroom-pull";
pub const SERVICE_ACCOUNT: &str = "puller@district-edu.iam.gserviceaccount.com";
pub const ACCESS_TOKEN: &str = "ya29.test-access-token";
const GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

struct Message {
    message: Value,
    acked: bool,
    leased_until: Option<Instant>,
    deliveries: u32,
}

#[derive(Default)]
struct Pubsub {
    messages: Vec<Message>,
    ack_ids: HashMap<String, usize>,
    next_ack: u64,
    ack_deadline: Duration,
    /// Acknowledge calls to answer 200 but ignore (an acknowledgement lost on the way).
    lose_acks: usize,
    /// When set, every Pub/Sub call must carry `Bearer ACCESS_TOKEN`.
    require_token: bool,
    token_uri: String,
    calls: Vec<String>,
    token_grants: usize,
    bad_grants: Vec<String>,
}

/// Pub/Sub's REST API for one subscription, and an OAuth2 token endpoint.
#[derive(Clone)]
pub struct FakePubsub {
    pub url: String,
    state: Arc<Mutex<Pubsub>>,
}

impl FakePubsub {
    pub async fn start(
        ack_deadline: Duration,
        require_token: bool,
    ) -> (FakePubsub, JoinHandle<()>) {
        let state = Arc::new(Mutex::new(Pubsub {
            ack_deadline,
            require_token,
            ..Pubsub::default()
        }));
        let app = Router::new().fallback(pubsub).with_state(state.clone());
        let (url, task) = serve(app).await;
        state.lock().unwrap().token_uri = format!("{url}/token");
        (FakePubsub { url, state }, task)
    }

    pub fn token_uri(&self) -> String {
        format!("{}/token", self.url)
    }

    /// Publishes a message whose `data` is `data` (base64-encoded here).
    pub fn publish(&self, id: &str, data: &[u8]) {
        self.state.lock().unwrap().messages.push(Message {
            message: json!({
                "data": STANDARD.encode(data),
                "attributes": { "registrationId": "reg-pull" },
                "messageId": id,
                "publishTime": "2026-11-20T09:15:02.512Z",
            }),
            acked: false,
            leased_until: None,
            deliveries: 0,
        });
    }

    pub fn lose_next_ack(&self) {
        self.state.lock().unwrap().lose_acks += 1;
    }

    pub fn unacked(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .messages
            .iter()
            .filter(|m| !m.acked)
            .count()
    }

    pub fn deliveries(&self, id: &str) -> u32 {
        let state = self.state.lock().unwrap();
        state
            .messages
            .iter()
            .find(|m| m.message["messageId"] == id)
            .map_or(0, |m| m.deliveries)
    }

    pub fn calls(&self, method: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| *c == method)
            .count()
    }

    pub fn token_grants(&self) -> usize {
        self.state.lock().unwrap().token_grants
    }

    pub fn bad_grants(&self) -> Vec<String> {
        self.state.lock().unwrap().bad_grants.clone()
    }
}

async fn pubsub(State(state): State<Arc<Mutex<Pubsub>>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    if path == "/token" {
        return token(&state, &body);
    }
    let mut state = state.lock().unwrap();
    let Some(method) = path
        .strip_prefix(&format!("/v1/{SUBSCRIPTION}:"))
        .map(str::to_owned)
    else {
        return (StatusCode::NOT_FOUND, "no such subscription").into_response();
    };
    state.calls.push(method.clone());
    if state.require_token && !bearer_is(&headers, ACCESS_TOKEN) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong access token").into_response();
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    let now = Instant::now();
    let ack_ids = || {
        request["ackIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    match method.as_str() {
        "pull" => {
            let max = request["maxMessages"].as_u64().unwrap() as usize;
            let deadline = state.ack_deadline;
            let mut received = Vec::new();
            let mut leased = Vec::new();
            for (i, m) in state.messages.iter_mut().enumerate() {
                if received.len() + leased.len() >= max {
                    break;
                }
                if m.acked || m.leased_until.is_some_and(|t| t > now) {
                    continue;
                }
                m.leased_until = Some(now + deadline);
                m.deliveries += 1;
                leased.push((i, m.message.clone(), m.deliveries));
            }
            for (i, message, attempt) in leased {
                state.next_ack += 1;
                let ack_id = format!("ack-{}", state.next_ack);
                state.ack_ids.insert(ack_id.clone(), i);
                received
                    .push(json!({"ackId": ack_id, "message": message, "deliveryAttempt": attempt}));
            }
            if received.is_empty() {
                axum::Json(json!({})).into_response()
            } else {
                axum::Json(json!({ "receivedMessages": received })).into_response()
            }
        }
        "acknowledge" => {
            if state.lose_acks > 0 {
                state.lose_acks -= 1;
                return axum::Json(json!({})).into_response();
            }
            for id in ack_ids() {
                if let Some(&i) = state.ack_ids.get(&id) {
                    state.messages[i].acked = true;
                }
            }
            axum::Json(json!({})).into_response()
        }
        "modifyAckDeadline" => {
            let seconds = request["ackDeadlineSeconds"].as_u64().unwrap();
            for id in ack_ids() {
                if let Some(&i) = state.ack_ids.get(&id) {
                    state.messages[i].leased_until = Some(now + Duration::from_secs(seconds));
                }
            }
            axum::Json(json!({})).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "no such method").into_response(),
    }
}

fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {token}"))
}

/// The JWT-bearer grant: the assertion must be signed by the service account's key (test
/// key `a`) for this token endpoint and the Pub/Sub scope.
fn token(state: &Mutex<Pubsub>, body: &[u8]) -> Response {
    let mut state = state.lock().unwrap();
    let form = String::from_utf8_lossy(body).into_owned();
    let fields: HashMap<&str, &str> = form
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[state.token_uri.clone()]);
    validation.set_issuer(&[SERVICE_ACCOUNT]);
    let key = DecodingKey::from_rsa_pem(&key_pem("a.pub.pem")).unwrap();
    let verdict = match (fields.get("grant_type"), fields.get("assertion")) {
        (Some(&GRANT), Some(assertion)) => {
            jsonwebtoken::decode::<Value>(assertion, &key, &validation)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    if t.claims["scope"] == "https://www.googleapis.com/auth/pubsub" {
                        Ok(())
                    } else {
                        Err(format!("wrong scope {}", t.claims["scope"]))
                    }
                })
        }
        _ => Err(format!("not a JWT-bearer grant: {form}")),
    };
    match verdict {
        Ok(()) => {
            state.token_grants += 1;
            axum::Json(
                json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}),
            )
            .into_response()
        }
        Err(e) => {
            state.bad_grants.push(e);
            (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "invalid_grant"})),
            )
                .into_response()
        }
    }
}
