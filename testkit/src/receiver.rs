//! Real HTTP receivers on 127.0.0.1 for the sink tests: they record every request and answer
//! from a script (e.g. 503, 503, then 200), the way a flaky destination would.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A scripted answer: status, headers, body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Answer {
    pub fn status(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }
    pub fn with_header(mut self, name: &'static str, value: &str) -> Answer {
        self.headers.push((name, value.to_owned()));
        self
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Answer>,
    /// Answer when the script is used up.
    otherwise: Option<Answer>,
    /// A rate limit the receiver enforces, as Slack does per webhook (see [`Receiver::pace`]).
    pace: Option<Bucket>,
    /// Requests answered 429 by the pace.
    throttled: usize,
}

/// A token bucket: `burst` at once, refilled at `per_second`.
struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token if there is one; `slack` is the early arrival forgiven (network jitter).
    fn take(&mut self, slack: std::time::Duration) -> bool {
        let now = Instant::now();
        let refilled = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refilled).min(self.burst);
        self.at = now;
        let forgiven = slack.as_secs_f64() * self.per_second;
        if self.tokens + forgiven >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A receiver running on 127.0.0.1 until dropped.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    _server: Arc<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver answering 200 `ok` unless scripted otherwise.
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(record).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            inner,
            _server: Arc::new(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next answers, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.lock().unwrap().script.extend(answers);
    }

    /// The answer once the script is used up (default 200 `ok`).
    pub fn otherwise(&self, answer: Answer) {
        self.inner.lock().unwrap().otherwise = Some(answer);
    }

    /// Enforces a rate limit, as Slack does per webhook: a request above `per_second` with
    /// `burst` at once is answered 429 with `Retry-After: 1` (and still recorded); an
    /// arrival up to 50 ms early is forgiven as network jitter.
    pub fn pace(&self, per_second: f64, burst: u32) {
        self.inner.lock().unwrap().pace = Some(Bucket {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
        });
    }

    /// How many requests the pace answered 429.
    pub fn throttled(&self) -> usize {
        self.inner.lock().unwrap().throttled
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Waits until `n` requests arrived (at most 20 s).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out: {} of {n} requests arrived",
                got.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

async fn record(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = {
        let mut inner = inner.lock().unwrap();
        inner.received.push(Received {
            method,
            uri,
            headers,
            body,
            at: Instant::now(),
        });
        let within_pace = inner
            .pace
            .as_mut()
            .is_none_or(|bucket| bucket.take(std::time::Duration::from_millis(50)));
        if !within_pace {
            inner.throttled += 1;
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "1")],
                "rate limited",
            )
                .into_response();
        }
        inner
            .script
            .pop_front()
            .or_else(|| inner.otherwise.clone())
            .unwrap_or_else(|| Answer::status(200, "ok"))
    };
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK),
        answer.body,
    )
        .into_response();
    for (name, value) in answer.headers {
        if let Ok(v) = value.parse() {
            response.headers_mut().insert(name, v);
        }
    }
    response
}
