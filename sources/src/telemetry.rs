//! The metrics the sources record, through the `metrics` facade; the binary installs the
//! Prometheus recorder and `/metrics` renders it. Every series carries the source's name.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Histogram, counter, gauge, histogram};

/// Requests answered, by source and HTTP status.
pub const REQUESTS: &str = "herald_source_requests_total";
/// Notifications decoded into an event (pushed or pulled).
pub const EVENTS: &str = "herald_source_events_total";
/// Events the journal already held (a redelivery or a retry), acknowledged without storing.
pub const DUPLICATES: &str = "herald_source_duplicates_total";
/// Authenticated inputs that could not be decoded, kept with the dead letters.
pub const REJECTED: &str = "herald_source_rejected_total";
/// Requests refused for a missing or wrong OIDC token or channel token.
pub const AUTH_FAILURES: &str = "herald_source_auth_failures_total";
/// Time to decode one notification.
pub const DECODE_SECONDS: &str = "herald_source_decode_seconds";
/// Directory `sync` messages received.
pub const SYNC: &str = "herald_directory_sync_total";
/// When each Directory channel expires (Unix seconds): channels do not renew themselves.
pub const CHANNEL_EXPIRATION: &str = "herald_directory_channel_expiration_timestamp_seconds";
/// Failed Pub/Sub REST calls of a pull loop (pull, acknowledge, token).
pub const PULL_ERRORS: &str = "herald_pubsub_pull_errors_total";

/// The series one source records on every request, registered once: a labelled `counter!`
/// call allocates its labels and looks its series up each time.
#[derive(Clone)]
pub struct SourceMetrics {
    pub decoded: Counter,
    pub decode_seconds: Histogram,
}

impl SourceMetrics {
    pub fn new(source: &str) -> Self {
        SourceMetrics {
            decoded: counter!(EVENTS, "source" => source.to_owned()),
            decode_seconds: histogram!(DECODE_SECONDS, "source" => source.to_owned()),
        }
    }
}

/// The request counters of one source for the answers it gives on success (200 for the
/// webhook, 204 for a push), registered once; other statuses go through [`request`].
#[derive(Clone)]
pub struct Answered {
    source: Arc<str>,
    // Registered at the first such answer, so that no series shows a status the source
    // never gave. Shared by the clones of one source's layer.
    ok: Arc<OnceLock<Counter>>,
    no_content: Arc<OnceLock<Counter>>,
}

impl Answered {
    pub fn new(source: Arc<str>) -> Self {
        Answered {
            source,
            ok: Arc::default(),
            no_content: Arc::default(),
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn record(&self, status: u16) {
        let (cached, label) = match status {
            200 => (&self.ok, "200"),
            204 => (&self.no_content, "204"),
            other => return request(&self.source, other),
        };
        cached
            .get_or_init(
                || counter!(REQUESTS, "source" => self.source.to_string(), "status" => label),
            )
            .increment(1);
    }
}

pub fn request(source: &str, status: u16) {
    counter!(REQUESTS, "source" => source.to_owned(), "status" => status.to_string()).increment(1);
}

pub fn duplicate(source: &str) {
    counter!(DUPLICATES, "source" => source.to_owned()).increment(1);
}

pub fn rejected(source: &str) {
    counter!(REJECTED, "source" => source.to_owned()).increment(1);
}

pub fn auth_failure(source: &str) {
    counter!(AUTH_FAILURES, "source" => source.to_owned()).increment(1);
}

pub fn sync(source: &str) {
    counter!(SYNC, "source" => source.to_owned()).increment(1);
}

pub fn channel_expiration(source: &str, channel: &str, unix_seconds: i64) {
    gauge!(CHANNEL_EXPIRATION, "source" => source.to_owned(), "channel" => channel.to_owned())
        .set(unix_seconds as f64);
}

pub fn pull_error(source: &str) {
    counter!(PULL_ERRORS, "source" => source.to_owned()).increment(1);
}
