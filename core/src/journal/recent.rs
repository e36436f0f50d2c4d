//! The events committed last, kept in memory so the sink workers deliver them without reading
//! them back from the journal and parsing their JSON again. Bounded: an event that fell out
//! (a sink far behind, a restart) is read from disk as before, so the cache changes how fast a
//! delivery starts, never what is delivered.
//!
//! Events pushed out are not freed by the journal's writer, which pushes new ones in: they
//! wait in a pile that the next sink worker to look up an event takes and frees. The writer
//! is the one thread every event goes through, and freeing an event allocated by a runtime
//! thread is the allocator's slower cross-thread path; a worker frees it cheaply half the
//! time, off the writer's path (`bench/ab.sh`, README.md "The append-only log").

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

/// Events pushed out and not yet freed: at most this many wait for a worker to free them
/// (with no worker looking events up, the writer frees them itself).
const PILE: usize = 1024;

#[derive(Default)]
pub(crate) struct Recent {
    events: Mutex<Events>,
}

#[derive(Default)]
struct Events {
    /// In increasing seq order.
    held: VecDeque<Held>,
    /// Pushed out, to be freed by the next [`Recent::get`].
    pushed_out: Vec<Held>,
}

impl Recent {
    /// Adds the events of one commit (in seq order, each above every seq held already).
    pub fn extend(&self, committed: impl IntoIterator<Item = Held>) {
        let mut freed = Vec::new();
        {
            let mut events = self.lock();
            for entry in committed {
                if events.held.len() >= RECENT_EVENTS
                    && let Some(out) = events.held.pop_front()
                {
                    events.pushed_out.push(out);
                }
                events.held.push_back(entry);
            }
            if events.pushed_out.len() > PILE {
                freed = std::mem::take(&mut events.pushed_out);
            }
        }
        drop(freed);
    }

    /// The event `seq`, if it is still held. Frees the events pushed out meanwhile.
    pub fn get(&self, seq: u64) -> Option<Held> {
        self.get_all([seq]).pop().flatten()
    }

    /// [`Recent::get`] of each of `seqs` (in increasing order), under one lock.
    pub fn get_all(&self, seqs: impl IntoIterator<Item = u64>) -> Vec<Option<Held>> {
        let (found, freed) = {
            let mut events = self.lock();
            let found = seqs
                .into_iter()
                .map(|seq| {
                    let i = events.held.partition_point(|held| held.seq < seq);
                    events.held.get(i).filter(|held| held.seq == seq).cloned()
                })
                .collect();
            (found, std::mem::take(&mut events.pushed_out))
        };
        drop(freed);
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Events> {
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

    #[test]
    fn events_pushed_out_are_freed_by_the_next_lookup_or_once_the_pile_is_full() {
        let recent = Recent::default();
        let first = held(0, 0, "first");
        let watch = Arc::downgrade(&first.event);
        recent.extend([first]);
        recent.extend((1..=RECENT_EVENTS as u64).map(|s| held(s, 0, "x")));
        assert!(watch.upgrade().is_some(), "pushed out, waits in the pile");
        assert!(recent.get(0).is_none(), "pushed out");
        assert!(watch.upgrade().is_none(), "freed by the lookup");

        // No lookups: the writer frees the pile itself once it is full.
        let next = RECENT_EVENTS as u64 + 1;
        let watched: Vec<_> = (next..next + PILE as u64 + 1)
            .map(|s| held(s, 0, "y"))
            .collect();
        let watch: Vec<_> = watched.iter().map(|h| Arc::downgrade(&h.event)).collect();
        recent.extend(watched);
        let later = next + PILE as u64 + 1;
        recent.extend((later..later + RECENT_EVENTS as u64).map(|s| held(s, 0, "z")));
        assert!(
            watch.iter().all(|w| w.upgrade().is_none()),
            "freed with the full pile"
        );
        assert!(recent.lock().pushed_out.len() <= PILE);
    }
}
