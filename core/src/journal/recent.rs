//! The events committed last, kept in memory so the sink workers deliver them without reading
//! them back from the journal and parsing their JSON again. Bounded: an event that fell out
//! (a sink far behind, a restart) is read from disk as before, so the cache changes how fast a
//! delivery starts, never what is delivered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::records::Millis;
use crate::event::Event;

/// Events kept. A sink that is this far behind reads from disk.
pub const RECENT_EVENTS: usize = 2048;

/// A committed event as held: the event and its JSON exactly as stored, which the sinks
/// send as is instead of serializing the event again.
#[derive(Clone, Debug)]
pub(crate) struct Held {
    pub seq: u64,
    pub committed_at: Millis,
    pub event: Arc<Event>,
    pub json: Arc<str>,
}

#[derive(Default)]
pub(crate) struct Recent {
    /// In increasing seq order.
    events: Mutex<VecDeque<Held>>,
}

impl Recent {
    /// Adds the events of one commit (in seq order, each above every seq held already).
    pub fn extend(&self, committed: impl IntoIterator<Item = Held>) {
        let mut events = self.lock();
        for entry in committed {
            if events.len() >= RECENT_EVENTS {
                events.pop_front();
            }
            events.push_back(entry);
        }
    }

    /// The event `seq`, if it is still held.
    pub fn get(&self, seq: u64) -> Option<Held> {
        let events = self.lock();
        let i = events.partition_point(|held| held.seq < seq);
        events.get(i).filter(|held| held.seq == seq).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Held>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(seq: u64, committed_at: Millis, id: &str) -> Held {
        let event = Event::new(
            id,
            "test",
            "add",
            chrono::Utc::now(),
            serde_json::Value::Null,
        );
        Held {
            seq,
            committed_at,
            json: event.to_json().into(),
            event: Arc::new(event),
        }
    }

    #[test]
    fn finds_what_it_holds_and_forgets_the_oldest() {
        let recent = Recent::default();
        recent.extend([held(3, 30, "a"), held(5, 50, "b")]);
        assert_eq!(
            recent.get(5).map(|h| (h.committed_at, h.event.id.clone())),
            Some((50, "b".into()))
        );
        assert!(recent.get(4).is_none(), "a gap in the seqs");
        assert!(recent.get(6).is_none());

        let more = (6..6 + RECENT_EVENTS as u64).map(|s| held(s, 0, "x"));
        recent.extend(more);
        assert!(recent.get(3).is_none(), "pushed out");
        assert!(recent.get(5).is_none(), "pushed out");
        assert!(recent.get(6).is_some());
        assert!(recent.get(5 + RECENT_EVENTS as u64).is_some());
    }
}
