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

#[derive(Default)]
pub(crate) struct Recent {
    /// `(seq, committed_at, event)` in increasing seq order.
    events: Mutex<VecDeque<(u64, Millis, Arc<Event>)>>,
}

impl Recent {
    /// Adds the events of one commit (in seq order, each above every seq held already).
    pub fn extend(&self, committed: impl IntoIterator<Item = (u64, Millis, Arc<Event>)>) {
        let mut events = self.lock();
        for entry in committed {
            if events.len() >= RECENT_EVENTS {
                events.pop_front();
            }
            events.push_back(entry);
        }
    }

    /// The event `seq` with its commit time, if it is still held.
    pub fn get(&self, seq: u64) -> Option<(Millis, Arc<Event>)> {
        let events = self.lock();
        let i = events.partition_point(|(s, _, _)| *s < seq);
        events
            .get(i)
            .filter(|(s, _, _)| *s == seq)
            .map(|(_, at, event)| (*at, event.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Millis, Arc<Event>)>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Arc<Event> {
        Arc::new(Event::new(
            id,
            "test",
            "add",
            chrono::Utc::now(),
            serde_json::Value::Null,
        ))
    }

    #[test]
    fn finds_what_it_holds_and_forgets_the_oldest() {
        let recent = Recent::default();
        recent.extend([(3, 30, event("a")), (5, 50, event("b"))]);
        assert_eq!(
            recent.get(5).map(|(at, e)| (at, e.id.clone())),
            Some((50, "b".into()))
        );
        assert!(recent.get(4).is_none(), "a gap in the seqs");
        assert!(recent.get(6).is_none());

        let more = (6..6 + RECENT_EVENTS as u64).map(|s| (s, 0, event("x")));
        recent.extend(more);
        assert!(recent.get(3).is_none(), "pushed out");
        assert!(recent.get(5).is_none(), "pushed out");
        assert!(recent.get(6).is_some());
        assert!(recent.get(5 + RECENT_EVENTS as u64).is_some());
    }
}
