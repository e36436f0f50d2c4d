//! The metrics the sources record, through the `metrics` facade; the binary installs the
//! Prometheus recorder and `/metrics` renders it. Every series carries the source's name.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

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

pub fn request(source: &str, status: u16) {
    counter!(REQUESTS, "source" => source.to_owned(), "status" => status.to_string()).increment(1);
}

/// Records how long one decode took (successful or not).
pub fn decode_time(source: &str, took: Duration) {
    histogram!(DECODE_SECONDS, "source" => source.to_owned()).record(took.as_secs_f64());
}

pub fn decoded(source: &str) {
    counter!(EVENTS, "source" => source.to_owned()).increment(1);
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
