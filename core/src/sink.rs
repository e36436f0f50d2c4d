//! The `Sink` trait every destination implements, its error, and the delivery policy the
//! engine applies around it (retries, rate limit, concurrency). Sinks only send; retrying,
//! timing out and rate limiting live in the delivery engine, once for all of them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    /// Whether this gateway may still send for the sink. Always, except for a paced sink on
    /// a shared queue, which one gateway at a time delivers (docs/architecture.md §10.2,
    /// "Paced sinks"): a sink that sends later than `deliver` was called (Slack queues
    /// deliveries behind its pace) checks [`Turn::holds`] right before sending and fails the
    /// delivery as retryable once it does not.
    pub turn: &'a Turn,
}

/// A gateway's turn at delivering a paced sink on a shared queue, ending at a deadline the
/// engine moves on while it keeps the sink's leadership (docs/architecture.md §10.2). Clones
/// share the deadline.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    /// `None`: always held (the local engine, or a sink without a pace).
    state: Option<Arc<TurnState>>,
}

#[derive(Debug)]
struct TurnState {
    base: Instant,
    /// The end of the turn, in milliseconds after `base`; 0: not held.
    until: AtomicU64,
}

/// The turn of every delivery that is not paced on a shared queue.
pub static ALWAYS: Turn = Turn { state: None };

impl Turn {
    /// A turn not held yet.
    pub fn ended() -> Turn {
        Turn {
            state: Some(Arc::new(TurnState {
                base: Instant::now(),
                until: AtomicU64::new(0),
            })),
        }
    }

    /// Whether the turn runs now.
    pub fn holds(&self) -> bool {
        match &self.state {
            None => true,
            Some(state) => {
                let now = u64::try_from(state.base.elapsed().as_millis()).unwrap_or(u64::MAX);
                now < state.until.load(Ordering::Acquire)
            }
        }
    }

    /// The turn runs until `until` (earlier or later than before).
    pub fn run_until(&self, until: Instant) {
        if let Some(state) = &self.state {
            let ms = until
                .checked_duration_since(state.base)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            state.until.store(ms, Ordering::Release);
        }
    }

    /// Ends the turn now.
    pub fn end(&self) {
        if let Some(state) = &self.state {
            state.until.store(0, Ordering::Release);
        }
    }
}

/// The pace a sink keeps by itself rather than through the engine's `rate_limit` (Slack's
/// per webhook URL): on a shared queue the engine lets one gateway at a time deliver it and
/// needs the pace to hand the sink over without exceeding it (docs/architecture.md §10.2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pace {
    pub per_second: f64,
    pub burst: u32,
}

impl Pace {
    /// How long a full burst takes to come back: the quiet a gateway leaves between its last
    /// send and the next gateway's first.
    pub fn refill(&self) -> Duration {
        if self.per_second > 0.0 {
            Duration::try_from_secs_f64(f64::from(self.burst.max(1)) / self.per_second)
                .unwrap_or(Duration::MAX)
        } else {
            Duration::ZERO
        }
    }
}

/// A running sink.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Sends one delivery. `Ok` means the destination has it (SMTP 250, Kafka ack, HTTP 2xx).
    async fn deliver(&self, delivery: Delivery<'_>) -> Result<(), SinkError>;

    /// Whether [`Sink::deliver_batch`] costs less than one `deliver` after another (a file:
    /// one `write` for all the lines). The engine then hands such a sink the due deliveries
    /// of a page of its backlog together, as one attempt (docs/architecture.md §7,
    /// "Batches"), unless a rate limit or a pace spaces them.
    fn batches(&self) -> bool {
        false
    }

    /// Sends `deliveries` as one attempt, answering for each, in their order: `Ok` for
    /// each the destination has, as [`Sink::deliver`] would. The default sends them one
    /// after another.
    async fn deliver_batch(&self, deliveries: &[Delivery<'_>]) -> Vec<Result<(), SinkError>> {
        let mut answers = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            answers.push(self.deliver(*delivery).await);
        }
        answers
    }

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
    /// The engine's own pace for the sink (`rate_limit`, `burst`), if it has one.
    pub fn pace(&self) -> Option<Pace> {
        self.rate_per_second.map(|per_second| Pace {
            per_second,
            burst: self.burst.max(1),
        })
    }

    /// The backoff between attempts: `initial_backoff` doubling up to `max_backoff`.
    pub fn backoff(&self) -> crate::backoff::Backoff {
        crate::backoff::Backoff::new(self.initial_backoff, self.max_backoff)
    }
}
