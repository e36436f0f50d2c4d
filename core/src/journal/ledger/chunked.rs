//! A queue of small `Copy` values kept in fixed chunks, for the index's per-record slots and
//! per-sink deliveries (docs/architecture.md §10.3). A `VecDeque` doubles as it grows: up
//! to half of it unused, and each growth copies all of it while old and new are both held,
//! which during a long sink outage (millions of pending deliveries) was tens of MiB at the
//! peak. This grows one chunk at a time, never copies what it holds, and frees each chunk as
//! the front passes it, but one: the last chunk passed is kept for the next one needed. A
//! sink's queue that keeps up empties after every batch, and allocating (and zeroing) a new
//! 64 KiB chunk for the next batch was 9% of the gateway's instructions under load (README,
//! "The sixth pass").

use std::collections::VecDeque;

/// Values per chunk (64 KiB of `u64`s).
const CHUNK: usize = 8192;

#[derive(Clone, Debug)]
pub struct Chunked<T> {
    chunks: VecDeque<Box<[T]>>,
    /// The last chunk the front passed, reused before a new one is allocated.
    spare: Option<Box<[T]>>,
    /// Where the front is in the first chunk.
    head: usize,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: VecDeque::new(),
            spare: None,
            head: 0,
            len: 0,
        }
    }
}

impl<T: Copy + Default> Chunked<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let at = self.head + i;
        Some(&self.chunks[at / CHUNK][at % CHUNK])
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let at = self.head + i;
        Some(&mut self.chunks[at / CHUNK][at % CHUNK])
    }

    pub fn front(&self) -> Option<&T> {
        self.get(0)
    }

    pub fn back(&self) -> Option<&T> {
        self.get(self.len.checked_sub(1)?)
    }

    pub fn push_back(&mut self, value: T) {
        let at = self.head + self.len;
        if at / CHUNK == self.chunks.len() {
            // A spare's old values are never read: only the first `len` from `head` are.
            let chunk = self
                .spare
                .take()
                .unwrap_or_else(|| vec![T::default(); CHUNK].into_boxed_slice());
            self.chunks.push_back(chunk);
        }
        self.chunks[at / CHUNK][at % CHUNK] = value;
        self.len += 1;
    }

    pub fn pop_front(&mut self) -> Option<T> {
        let value = *self.front()?;
        self.len -= 1;
        self.head += 1;
        if self.head == CHUNK || self.len == 0 {
            // The first chunk is passed (or the queue is empty): it becomes the spare, and
            // the spare before it goes back.
            self.spare = self.chunks.pop_front();
            if self.len == 0 {
                self.chunks.clear();
            }
            self.head = 0;
        }
        Some(value)
    }

    /// The index of the first value for which `before` is false (the values must be
    /// partitioned by it, as `slice::partition_point` asks).
    pub fn partition_point(&self, before: impl Fn(&T) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid) {
                Some(value) if before(value) => lo = mid + 1,
                _ => hi = mid,
            }
        }
        lo
    }

    /// The values from index `start` on, in order.
    pub fn iter_from(&self, start: usize) -> impl Iterator<Item = &T> + '_ {
        (start..self.len).filter_map(|i| self.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.iter_from(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Push(u64),
        Pop,
    }

    proptest! {
        /// Whatever the pushes and pops, it holds what a `VecDeque` holds, in order, and no
        /// more chunks than its values need.
        #[test]
        fn behaves_as_a_vecdeque(ops in prop::collection::vec(
            prop_oneof![3 => any::<u64>().prop_map(Op::Push), 2 => Just(Op::Pop)],
            0..40_000,
        )) {
            let mut chunked = Chunked::default();
            let mut model = VecDeque::new();
            for op in ops {
                match op {
                    Op::Push(v) => {
                        chunked.push_back(v);
                        model.push_back(v);
                    }
                    Op::Pop => prop_assert_eq!(chunked.pop_front(), model.pop_front()),
                }
                prop_assert_eq!(chunked.len(), model.len());
                prop_assert_eq!(chunked.front(), model.front());
                prop_assert!(chunked.chunks.len() <= (chunked.head + chunked.len).div_ceil(CHUNK));
            }
            prop_assert!(chunked.iter().eq(model.iter()));
            let mid = model.len() / 2;
            prop_assert!(chunked.iter_from(mid).eq(model.iter().skip(mid)));
        }
    }

    #[test]
    fn partition_point_and_get_across_chunks() {
        let mut chunked = Chunked::default();
        for v in 0..(3 * CHUNK as u64) {
            chunked.push_back(v * 2);
        }
        for _ in 0..CHUNK + 5 {
            chunked.pop_front();
        }
        let first = (CHUNK as u64 + 5) * 2;
        assert_eq!(chunked.front(), Some(&first));
        assert_eq!(chunked.partition_point(|v| *v < first), 0);
        assert_eq!(chunked.partition_point(|v| *v < first + 2 * 100), 100);
        assert_eq!(chunked.partition_point(|v| *v < first + 2 * 100 + 1), 101);
        assert_eq!(chunked.partition_point(|_| true), chunked.len());
        *chunked.get_mut(CHUNK).unwrap() = 7;
        assert_eq!(chunked.get(CHUNK), Some(&7));
        assert_eq!(chunked.get(chunked.len()), None);
        while chunked.pop_front().is_some() {}
        assert!(chunked.is_empty() && chunked.chunks.is_empty());
    }

    #[test]
    fn a_queue_that_empties_and_fills_again_reuses_its_chunk() {
        let mut chunked = Chunked::default();
        chunked.push_back(1u64);
        let first = chunked.chunks[0].as_ptr();
        for round in 0..3 {
            assert_eq!(chunked.pop_front(), Some(round + 1));
            assert!(chunked.is_empty() && chunked.chunks.is_empty());
            chunked.push_back(round + 2);
            assert_eq!(chunked.chunks[0].as_ptr(), first, "round {round}");
            assert_eq!(chunked.iter().copied().collect::<Vec<_>>(), [round + 2]);
        }
        // Passing a whole chunk keeps only one spare.
        for v in 0..(2 * CHUNK as u64) {
            chunked.push_back(v);
        }
        while chunked.pop_front().is_some() {}
        assert!(chunked.spare.is_some() && chunked.chunks.is_empty());
    }
}
