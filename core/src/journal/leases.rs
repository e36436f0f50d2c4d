//! The local engine's leases (docs/architecture.md §10): who holds an unrouted event or a
//! leadership, until when. One process owns the journal, so they live in memory; a task
//! that claims and then dies (or forgets) still loses its claim when the lease runs out,
//! exactly as a gateway sharing a PostgreSQL queue would. After a restart every lease is
//! free again, which is right: the process that held them is gone.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use super::records::Millis;

/// Held leases by key: `(holder, until)`.
pub(crate) struct Leases<K> {
    held: Mutex<HashMap<K, (String, Millis)>>,
}

impl<K> Default for Leases<K> {
    fn default() -> Self {
        Leases {
            held: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq> Leases<K> {
    /// Grants (or extends) `key` to `holder` until `until`, unless another holder's lease on
    /// it runs past `now`; then returns that holder and its lease's end.
    pub fn acquire(
        &self,
        key: K,
        holder: &str,
        now: Millis,
        until: Millis,
    ) -> Result<Millis, (String, Millis)> {
        let mut held = self.lock();
        if let Some((other, end)) = held.get(&key)
            && other != holder
            && *end > now
        {
            return Err((other.clone(), *end));
        }
        held.insert(key, (holder.to_owned(), until));
        Ok(until)
    }

    /// Extends `holder`'s lease on `key`; `false` when it does not hold it any more (another
    /// holder took it after it ran out, or it was ended). A lease that ran out but was not
    /// taken is still the holder's.
    pub fn renew(&self, key: &K, holder: &str, until: Millis) -> bool {
        match self.lock().get_mut(key) {
            Some((h, end)) if h == holder => {
                *end = until;
                true
            }
            _ => false,
        }
    }

    /// The holder whose lease on `key` runs past `now`, if any.
    pub fn holder(&self, key: &K, now: Millis) -> Option<(String, Millis)> {
        self.lock()
            .get(key)
            .filter(|(_, end)| *end > now)
            .map(|(h, end)| (h.clone(), *end))
    }

    /// Ends `holder`'s lease on `key` (nothing if another holder has it).
    pub fn release(&self, key: &K, holder: &str) {
        let mut held = self.lock();
        if held.get(key).is_some_and(|(h, _)| h == holder) {
            held.remove(key);
        }
    }

    /// Ends whatever lease there is on `key` (the work is done).
    pub fn end(&self, key: &K) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (String, Millis)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_keeps_others_out_until_it_runs_out() {
        let leases = Leases::<u64>::default();
        assert_eq!(leases.acquire(1, "a", 0, 100), Ok(100));
        assert_eq!(leases.acquire(1, "b", 50, 150), Err(("a".into(), 100)));
        assert_eq!(
            leases.acquire(1, "a", 50, 150),
            Ok(150),
            "the holder extends"
        );
        assert!(leases.renew(&1, "a", 200));
        assert!(!leases.renew(&1, "b", 200));
        assert_eq!(
            leases.acquire(1, "b", 200, 300),
            Ok(300),
            "ran out: taken over"
        );
        assert!(!leases.renew(&1, "a", 400), "a lost it");
        assert_eq!(leases.holder(&1, 250), Some(("b".into(), 300)));
        leases.release(&1, "a");
        assert_eq!(leases.holder(&1, 250), Some(("b".into(), 300)), "not a's");
        leases.release(&1, "b");
        assert_eq!(leases.holder(&1, 250), None);
    }
}
