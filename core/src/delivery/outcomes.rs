//! The last outcome of this gateway's recent deliveries, for the console's live events
//! (docs/architecture.md §12, "Live events"). In memory, per process (one gateway), bounded
//! by [`CAPACITY`]; fed by the sink workers after each batch of attempts with one hash per
//! attempt and one short lock per batch, allocating nothing here. A delivery made by another
//! gateway on a shared queue is not here.
//!
//! The outcomes are kept as a ring in the order they came, which a console's question reads
//! from the newest back: noting one writes next to the last instead of into a map (whose
//! insert and removal of the oldest touched two places at random in 256 KiB, per delivery).

use std::collections::VecDeque;

use std::hash::BuildHasher;
use std::sync::{LazyLock, Mutex};

/// How many outcomes are remembered; the oldest are forgotten first.
pub const CAPACITY: usize = 8192;

/// How a delivery's last attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Seen {
    Delivered,
    Retrying,
    Dead,
}

/// The last [`CAPACITY`] outcomes noted, the newest last.
struct Recent(VecDeque<(u64, Seen)>);

static RECENT: LazyLock<Mutex<Recent>> =
    LazyLock::new(|| Mutex::new(Recent(VecDeque::with_capacity(CAPACITY))));

/// The delivery of event `(source, id)` by `route` to `sink`, as one number (a collision
/// among 8,192 keys of 64 bits is negligible, and would only mislabel a console line).
pub fn key(source: &str, id: &str, route: &str, sink: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0).hash_one((source, id, route, sink))
}

/// Records the outcome of one attempt.
#[cfg(test)]
fn note(source: &str, id: &str, route: &str, sink: &str, seen: Seen) {
    note_all([(key(source, id, route, sink), seen)]);
}

/// Records the outcomes of a batch of attempts, each under its [`key`], with one lock.
pub fn note_all(noted: impl IntoIterator<Item = (u64, Seen)>) {
    let mut recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    for (key, seen) in noted {
        if recent.0.len() == CAPACITY {
            recent.0.pop_front();
        }
        recent.0.push_back((key, seen));
    }
}

/// The last outcome recorded for the delivery, if this gateway attempted it lately.
pub fn last(source: &str, id: &str, route: &str, sink: &str) -> Option<Seen> {
    let k = key(source, id, route, sink);
    let recent = RECENT.lock().unwrap_or_else(|p| p.into_inner());
    recent
        .0
        .iter()
        .rev()
        .find(|(noted, _)| *noted == k)
        .map(|(_, seen)| *seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_outcome_is_kept_and_the_oldest_forgotten() {
        note("s", "first", "r", "k", Seen::Retrying);
        note("s", "first", "r", "k", Seen::Delivered);
        assert_eq!(last("s", "first", "r", "k"), Some(Seen::Delivered));
        assert_eq!(last("s", "first", "r", "other"), None);
        for n in 0..CAPACITY {
            note("s", &format!("e{n}"), "r", "k", Seen::Dead);
        }
        assert_eq!(last("s", "first", "r", "k"), None, "forgotten");
        assert_eq!(
            last("s", &format!("e{}", CAPACITY - 1), "r", "k"),
            Some(Seen::Dead)
        );
    }
}
