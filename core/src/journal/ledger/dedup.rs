//! The duplicate window in memory: which seq may hold an event with a given `(source, id)`
//! hash. Compact, because it covers every event still in the log (at least `queue.retention`):
//! the bulk is a sorted array of 8 bytes per event (the hash's upper 32 bits and the seq's
//! offset from a base), the newest events a hash map that is merged into the array every
//! [`MERGE_AT`] inserts. A candidate is only a candidate: the caller confirms it against the
//! stored event (a 32-bit fingerprint matches another event's about once in 4,000 lookups at
//! a million events, which costs one read, never a dropped event).

use super::super::JournalError;
use super::codec::Reader;
use crate::FastMap;

/// Inserts kept in the hash map before they are merged into the sorted array.
const MERGE_AT: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct Window {
    /// Seqs in `sorted` are offsets from this.
    base: u64,
    /// `(fingerprint << 32) | (seq - base)`, sorted.
    sorted: Vec<u64>,
    /// The newest: full hash → seq.
    recent: FastMap<u64, u64>,
}

fn fingerprint(hash: u64) -> u64 {
    hash >> 32
}

impl Window {
    pub fn insert(&mut self, hash: u64, seq: u64) {
        self.recent.insert(hash, seq);
        if self.recent.len() >= MERGE_AT {
            self.merge();
        }
    }

    /// The seqs that may hold an event with this hash, newest first.
    pub fn candidates(&self, hash: u64) -> Vec<u64> {
        let mut found = Vec::new();
        if let Some(seq) = self.recent.get(&hash) {
            found.push(*seq);
        }
        let fp = fingerprint(hash);
        let from = self.sorted.partition_point(|e| e >> 32 < fp);
        let older = self.sorted[from..]
            .iter()
            .take_while(|e| *e >> 32 == fp)
            .map(|e| self.base + (e & 0xffff_ffff));
        let at = found.len();
        found.extend(older);
        found[at..].sort_unstable_by(|a, b| b.cmp(a));
        found
    }

    /// Moves the hash map's entries into the sorted array: sorts only them and merges them
    /// in from the back, in place, so a merge costs the array's length once (not a sort of
    /// all of it). The array grows by at least an eighth at a time: at most that much of it
    /// unused, and a copy every few merges rather than at each.
    fn merge(&mut self) {
        let base = self.base;
        let mut new = Vec::with_capacity(self.recent.len());
        let mut kept = Vec::new();
        // `drain` keeps the map's table for the next 64k.
        for (hash, seq) in self.recent.drain() {
            match seq.checked_sub(base).filter(|off| *off <= 0xffff_ffff) {
                Some(off) => new.push((fingerprint(hash) << 32) | off),
                // Only when the log holds 2^32 records: kept in the map.
                None => kept.push((hash, seq)),
            }
        }
        self.recent.extend(kept);
        new.sort_unstable();
        let old = self.sorted.len();
        let total = old + new.len();
        if total > self.sorted.capacity() {
            self.sorted.reserve_exact(new.len().max(old / 8));
        }
        self.sorted.resize(total, 0);
        let (mut i, mut j, mut k) = (old, new.len(), total);
        while j > 0 {
            k -= 1;
            if i > 0 && self.sorted[i - 1] > new[j - 1] {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = new[j - 1];
                j -= 1;
            }
        }
    }

    /// Forgets the events below `first_seq` (their segments were deleted).
    pub fn forget_below(&mut self, first_seq: u64) {
        self.recent.retain(|_, seq| *seq >= first_seq);
        let new_base = first_seq.max(self.base);
        let shift = new_base - self.base;
        let base = self.base;
        self.sorted
            .retain(|e| base + (e & 0xffff_ffff) >= first_seq);
        if shift > 0 {
            for e in &mut self.sorted {
                *e -= shift;
            }
            self.base = new_base;
        }
        self.sorted.shrink_to_fit();
        self.recent.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn encode(&self, out: &mut (impl super::index::Out + ?Sized)) {
        out.put(&self.base.to_le_bytes());
        out.put(&(self.sorted.len() as u64).to_le_bytes());
        for e in &self.sorted {
            out.put(&e.to_le_bytes());
        }
        out.put(&(self.recent.len() as u64).to_le_bytes());
        for (hash, seq) in &self.recent {
            out.put(&hash.to_le_bytes());
            out.put(&seq.to_le_bytes());
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>, limit: usize) -> Result<Window, JournalError> {
        let base = r.u64()?;
        let count = |r: &mut Reader<'_>| -> Result<usize, JournalError> {
            let n = r.u64()?;
            usize::try_from(n)
                .ok()
                .filter(|n| *n <= limit)
                .ok_or_else(|| r.bad(format_args!("an impossible count {n}")))
        };
        let n = count(r)?;
        let mut sorted = Vec::with_capacity(n);
        for _ in 0..n {
            sorted.push(r.u64()?);
        }
        if !sorted.is_sorted() {
            return Err(r.bad("the duplicate window is out of order"));
        }
        let n = count(r)?;
        let mut recent = FastMap::with_capacity_and_hasher(n, Default::default());
        for _ in 0..n {
            let hash = r.u64()?;
            recent.insert(hash, r.u64()?);
        }
        Ok(Window {
            base,
            sorted,
            recent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inserted_hash_finds_its_seq_across_merges_and_forgetting() {
        let mut w = Window::default();
        let hash = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for seq in 1..=200_000u64 {
            w.insert(hash(seq), seq);
        }
        assert_eq!(w.len(), 200_000);
        for seq in [1, 65_536, 65_537, 150_000, 200_000] {
            assert!(w.candidates(hash(seq)).contains(&seq), "seq {seq}");
        }
        w.forget_below(100_000);
        assert!(!w.candidates(hash(5)).contains(&5));
        for seq in [100_000, 150_000, 200_000] {
            assert!(
                w.candidates(hash(seq)).contains(&seq),
                "seq {seq} after forgetting"
            );
        }
        w.insert(hash(300_000), 300_000);
        let mut out = Vec::new();
        w.encode(&mut out);
        let back = Window::decode(&mut Reader::new(0, &out), out.len()).unwrap();
        assert_eq!(back.len(), w.len());
        assert!(back.candidates(hash(150_000)).contains(&150_000));
        assert!(back.candidates(hash(300_000)).contains(&300_000));
    }

    #[test]
    fn merging_keeps_the_array_sorted_and_complete() {
        let mut w = Window::default();
        let mut all = Vec::new();
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for round in 0..5u64 {
            for i in 0..(1000 + round * 777) {
                // xorshift: hashes in no order, some fingerprints repeated.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let hash = if i % 97 == 0 {
                    0xabcd_0000_0000_0000 | i
                } else {
                    x
                };
                let seq = round * 10_000 + i;
                w.insert(hash, seq);
                all.push((fingerprint(hash) << 32) | seq);
            }
            w.merge();
            all.sort_unstable();
            assert_eq!(w.sorted, all, "round {round}");
            assert!(w.recent.is_empty());
        }
    }

    #[test]
    fn a_fingerprint_shared_by_two_events_gives_both_as_candidates() {
        let mut w = Window::default();
        let a = 0xdead_beef_0000_0001;
        let b = 0xdead_beef_0000_0002;
        w.insert(a, 10);
        w.merge();
        w.insert(b, 20);
        w.merge();
        assert_eq!(w.candidates(a), [20, 10]);
    }
}
