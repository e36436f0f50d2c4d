//! What the journal stores, and how it is encoded. Values are compact: an event is its commit
//! time and its CloudEvents JSON; a fresh delivery is an empty value.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::error::{JournalError, json_detail};
use crate::event::Event;
use crate::ingest::RejectedInput;

/// Milliseconds since the Unix epoch, the journal's clock.
pub type Millis = i64;

pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

pub fn to_time(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// An event as stored: when it was committed, and the event's JSON (the format before the
/// log; only the upgrade's tests still write it).
#[cfg(test)]
pub fn encode_event(committed_at: Millis, json: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + json.len());
    bytes.extend_from_slice(&committed_at.to_be_bytes());
    bytes.extend_from_slice(json.as_bytes());
    bytes
}

/// The commit time and the JSON of a stored event.
pub fn decode_event(bytes: &[u8]) -> Option<(Millis, &[u8])> {
    let (time, json) = bytes.split_at_checked(8)?;
    Some((Millis::from_be_bytes(time.try_into().ok()?), json))
}

/// The stored event `seq`: its commit time, the event, and its JSON exactly as stored.
/// [`JournalError::Corrupt`] names the event when the record cannot be decoded.
pub fn read_event(seq: u64, bytes: &[u8]) -> Result<(Millis, Event, &[u8]), JournalError> {
    let what = || format!("event {seq}");
    let (committed_at, json) = decode_event(bytes).ok_or_else(|| {
        JournalError::corrupt(what(), "the record is shorter than its commit time")
    })?;
    let event =
        serde_json::from_slice(json).map_err(|e| JournalError::corrupt(what(), json_detail(&e)))?;
    Ok((committed_at, event, json))
}

/// One failed attempt of a delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: Millis,
    pub error: String,
}

/// The retry state of a pending delivery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingState {
    /// Attempts made so far.
    #[serde(rename = "a")]
    pub attempts: u32,
    /// Not before this time (0: now).
    #[serde(rename = "n")]
    pub next_at: Millis,
    /// The errors of the attempts so far (the last [`MAX_KEPT_ERRORS`]).
    #[serde(rename = "e", default)]
    pub errors: Vec<Attempt>,
}

/// A dead letter keeps at most this many attempt errors (the first and the latest ones).
pub const MAX_KEPT_ERRORS: usize = 20;

impl PendingState {
    pub fn encode(&self) -> Vec<u8> {
        if *self == PendingState::default() {
            Vec::new()
        } else {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }

    pub fn decode(bytes: &[u8]) -> PendingState {
        if bytes.is_empty() {
            PendingState::default()
        } else {
            serde_json::from_slice(bytes).unwrap_or_default()
        }
    }

    pub fn push_error(&mut self, attempt: Attempt) {
        if self.errors.len() >= MAX_KEPT_ERRORS {
            // Keep the first error (how it started) and the most recent ones.
            self.errors.remove(1);
        }
        self.errors.push(attempt);
    }
}

/// A dead letter: a delivery that failed for good, or an input that could not be decoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub created: DateTime<Utc>,
    #[serde(flatten)]
    pub kind: DeadKind,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeadKind {
    /// `(event, route, sink)` that ran out of attempts or failed permanently.
    Delivery {
        route: String,
        sink: String,
        /// Why it stopped: "permanent error", "10 attempts", "older than 24h".
        reason: String,
        attempts: Vec<Attempt>,
        event: Box<Event>,
    },
    /// An authenticated input the source could not decode.
    Rejected { input: RejectedInput },
}

impl DeadLetter {
    /// The stored dead letter `id`; [`JournalError::Corrupt`] names it when the record
    /// cannot be decoded.
    pub fn decode(id: u64, bytes: &[u8]) -> Result<DeadLetter, JournalError> {
        serde_json::from_slice(bytes)
            .map_err(|e| JournalError::corrupt(format!("dead letter {id}"), json_detail(&e)))
    }

    pub fn sink(&self) -> Option<&str> {
        match &self.kind {
            DeadKind::Delivery { sink, .. } => Some(sink),
            DeadKind::Rejected { .. } => None,
        }
    }

    pub fn route(&self) -> Option<&str> {
        match &self.kind {
            DeadKind::Delivery { route, .. } => Some(route),
            DeadKind::Rejected { .. } => None,
        }
    }

    /// The last error, or the rejection reason: one line for `dlq list`.
    pub fn summary(&self) -> &str {
        match &self.kind {
            DeadKind::Delivery {
                attempts, reason, ..
            } => attempts
                .last()
                .map_or(reason.as_str(), |a| a.error.as_str()),
            DeadKind::Rejected { input } => &input.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_pending_state_is_empty_bytes() {
        assert!(PendingState::default().encode().is_empty());
        let mut s = PendingState {
            attempts: 2,
            next_at: 5,
            errors: vec![],
        };
        s.push_error(Attempt {
            at: 1,
            error: "503".into(),
        });
        assert_eq!(PendingState::decode(&s.encode()), s);
    }

    #[test]
    fn errors_keep_the_first_and_the_latest() {
        let mut s = PendingState::default();
        for i in 0..50 {
            s.push_error(Attempt {
                at: i,
                error: format!("e{i}"),
            });
        }
        assert_eq!(s.errors.len(), MAX_KEPT_ERRORS);
        assert_eq!(s.errors[0].error, "e0");
        assert_eq!(s.errors.last().unwrap().error, "e49");
    }

    #[test]
    fn events_encode_with_their_commit_time() {
        let event = Event::new("1", "test", "add", Utc::now(), serde_json::Value::Null);
        let bytes = encode_event(1234, &event.to_json());
        let (at, json) = decode_event(&bytes).unwrap();
        assert_eq!(at, 1234);
        assert_eq!(serde_json::from_slice::<Event>(json).unwrap(), event);
        assert_eq!(decode_event(b"short"), None);
    }

    #[test]
    fn undecodable_records_are_corrupt_and_named() {
        let e = read_event(42, b"short").unwrap_err();
        assert!(
            matches!(&e, JournalError::Corrupt { what, .. } if what == "event 42"),
            "{e:?}"
        );
        let e = read_event(43, &encode_event(1, "{\"secret\": \"hunter2\"")).unwrap_err();
        assert!(
            matches!(&e, JournalError::Corrupt { what, .. } if what == "event 43"),
            "{e:?}"
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = DeadLetter::decode(7, b"\xff garbage").unwrap_err();
        assert!(
            matches!(&e, JournalError::Corrupt { what, .. } if what == "dead letter 7"),
            "{e:?}"
        );
    }
}
