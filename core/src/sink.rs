//! The `Sink` trait every destination implements, its error, and the delivery policy the
//! engine applies around it (retries, rate limit, concurrency). Sinks only send; retrying,
//! timing out and rate limiting live in the delivery engine, once for all of them.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::event::Event;
use crate::template::Rendered;

/// One `(event, route, sink)` delivery, with the sink's templates already rendered.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub event: &'a Event,
    /// `event` as CloudEvents JSON (what [`Event::to_json`] gives), serialized once when it
    /// was committed: a sink that sends the event as is sends this.
    pub json: &'a str,
    pub route: &'a str,
    pub sink: &'a str,
    pub rendered: &'a Rendered,
}

/// A running sink.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Sends one delivery. `Ok` means the destination has it (SMTP 250, Kafka ack, HTTP 2xx).
    async fn deliver(&self, delivery: Delivery<'_>) -> Result<(), SinkError>;

    /// Makes sure everything delivered so far is durable (e.g. fsync a file) before the
    /// gateway exits. Most sinks have nothing to do.
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Why a delivery failed, and whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkError {
    /// Worth retrying (HTTP 408/429/5xx, connection errors, SMTP 4xx, Kafka retriable).
    /// `retry_after` is the destination's own request (HTTP `Retry-After`).
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Will fail the same way again (HTTP 4xx, Slack `channel_not_found`, SMTP 5xx).
    Permanent { message: String },
}

impl SinkError {
    pub fn retryable(message: impl Into<String>) -> Self {
        SinkError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        SinkError::Permanent {
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Retryable { .. })
    }

    pub fn message(&self) -> &str {
        match self {
            SinkError::Retryable { message, .. } | SinkError::Permanent { message } => message,
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Retryable { message, .. } => write!(f, "{message} (will retry)"),
            SinkError::Permanent { message } => write!(f, "{message} (permanent)"),
        }
    }
}

impl std::error::Error for SinkError {}

/// How the delivery engine treats one sink. Every sink type has defaults; routes.yaml can
/// change them under the sink's `delivery:` key.
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryPolicy {
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Deliveries per second (`None`: unlimited), with `burst` allowed at once.
    pub rate_per_second: Option<f64>,
    pub burst: u32,
    /// Attempts before a delivery becomes a dead letter.
    pub max_attempts: u32,
    /// Age (since the event was committed) after which no more attempts are made.
    pub max_age: Duration,
    /// How long one attempt may take before it counts as a retryable failure.
    pub timeout: Duration,
    /// First retry delay; doubles each attempt up to `max_backoff` (full jitter).
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            concurrency: 16,
            rate_per_second: None,
            burst: 1,
            max_attempts: 12,
            max_age: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl DeliveryPolicy {
    /// The backoff between attempts: `initial_backoff` doubling up to `max_backoff`.
    pub fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff::new(self.initial_backoff, self.max_backoff)
    }
}
