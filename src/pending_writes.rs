//! A node's own proposals waiting for their log index to be applied, ordered
//! by (index, term).
//!
//! Why not a `BTreeMap`: a leader inserts one proposal per write request and
//! removes it when the entry is applied, so under load the map's node
//! allocations and rebalancing were 8% of the leader's event loop. Proposals
//! almost always arrive in increasing index order and leave from the front,
//! which a sorted `VecDeque` serves with a push and a pop. The exception: a
//! node that led an earlier term may still hold proposals of that term at
//! indexes above its current ones; those are inserted in place, which is
//! linear but happens only after a lost leadership.

use std::collections::VecDeque;

pub struct PendingWrites<W> {
    /// Sorted by (index, term), each pair at most once.
    queue: VecDeque<Pending<W>>,
    /// No proposal in `queue` has a lower term: lets
    /// [`PendingWrites::take_older_than`] skip its scan in the usual case,
    /// where every proposal is of the term being applied.
    lowest_term: u64,
}

struct Pending<W> {
    index: u64,
    term: u64,
    waiter: W,
}

impl<W> Default for PendingWrites<W> {
    fn default() -> PendingWrites<W> {
        PendingWrites {
            queue: VecDeque::new(),
            lowest_term: 0,
        }
    }
}

impl<W> PendingWrites<W> {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Adds the proposal at (index, term). The core assigns each (index, term)
    /// once, so a duplicate is a bug in the caller.
    pub fn insert(&mut self, index: u64, term: u64, waiter: W) {
        if self.queue.is_empty() || term < self.lowest_term {
            self.lowest_term = term;
        }
        let key = (index, term);
        if self
            .queue
            .back()
            .is_none_or(|last| (last.index, last.term) < key)
        {
            self.queue.push_back(Pending {
                index,
                term,
                waiter,
            });
            return;
        }
        let at = self
            .queue
            .partition_point(|pending| (pending.index, pending.term) < key);
        assert!(
            self.queue
                .get(at)
                .is_none_or(|next| (next.index, next.term) != key),
            "proposal ({}, {}) registered twice",
            index,
            term
        );
        self.queue.insert(
            at,
            Pending {
                index,
                term,
                waiter,
            },
        );
    }

    /// Removes and returns the oldest proposal, as (index, term, waiter), if
    /// its index is at most `index`.
    pub fn pop_up_to(&mut self, index: u64) -> Option<(u64, u64, W)> {
        if self.queue.front()?.index > index {
            return None;
        }
        self.queue
            .pop_front()
            .map(|pending| (pending.index, pending.term, pending.waiter))
    }
}

impl<W> PendingWrites<W> {
    /// Removes and returns the waiters of the proposals of terms below
    /// `term`, in order. Once an entry of `term` is committed, such a proposal
    /// can never be, wherever its index: every later leader's log holds that
    /// entry, and a log's terms never decrease along it. A node that led an
    /// earlier term learns so here even when the new leader's log does not
    /// yet reach its proposals' indexes, and that log may grow only once
    /// they are answered (a client's later requests wait for them).
    pub fn take_older_than(&mut self, term: u64) -> Vec<W> {
        if self.queue.is_empty() || self.lowest_term >= term {
            return Vec::new();
        }
        let mut older = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for pending in self.queue.drain(..) {
            if pending.term < term {
                older.push(pending.waiter);
            } else {
                kept.push_back(pending);
            }
        }
        self.queue = kept;
        self.lowest_term = term;
        older
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (term, name) of each proposal taken, checking each index is in range.
    fn drain_up_to(
        writes: &mut PendingWrites<&'static str>,
        index: u64,
    ) -> Vec<(u64, &'static str)> {
        std::iter::from_fn(|| writes.pop_up_to(index))
            .map(|(at, term, name)| {
                assert!(at <= index, "{} taken at {}", name, index);
                (term, name)
            })
            .collect()
    }

    #[test]
    fn in_order_proposals_leave_by_index() {
        let mut writes = PendingWrites::default();
        writes.insert(5, 2, "a");
        writes.insert(6, 2, "b");
        writes.insert(7, 2, "c");
        assert_eq!(drain_up_to(&mut writes, 4), vec![]);
        assert_eq!(drain_up_to(&mut writes, 6), vec![(2, "a"), (2, "b")]);
        assert_eq!(writes.len(), 1);
        assert_eq!(drain_up_to(&mut writes, 100), vec![(2, "c")]);
        assert_eq!(writes.len(), 0);
    }

    #[test]
    fn an_earlier_terms_proposals_above_the_new_ones_stay_in_order() {
        // Led term 2 up to index 12, lost the tail, leads term 4 from index 9.
        let mut writes = PendingWrites::default();
        for (index, name) in [(10, "t2-10"), (11, "t2-11"), (12, "t2-12")] {
            writes.insert(index, 2, name);
        }
        for (index, name) in [(9, "t4-9"), (10, "t4-10"), (11, "t4-11")] {
            writes.insert(index, 4, name);
        }
        assert_eq!(drain_up_to(&mut writes, 9), vec![(4, "t4-9")]);
        assert_eq!(
            drain_up_to(&mut writes, 10),
            vec![(2, "t2-10"), (4, "t4-10")]
        );
        assert_eq!(
            drain_up_to(&mut writes, 12),
            vec![(2, "t2-11"), (4, "t4-11"), (2, "t2-12")]
        );
    }

    #[test]
    fn proposals_of_earlier_terms_leave_when_a_later_term_commits() {
        let mut writes = PendingWrites::default();
        for (index, name) in [(10, "t2-10"), (11, "t2-11"), (12, "t2-12")] {
            writes.insert(index, 2, name);
        }
        assert!(writes.take_older_than(2).is_empty());
        writes.insert(9, 4, "t4-9");
        writes.insert(11, 3, "t3-11");
        assert_eq!(writes.take_older_than(3), vec!["t2-10", "t2-11", "t2-12"]);
        assert_eq!(writes.len(), 2);
        assert!(writes.take_older_than(3).is_empty());
        assert_eq!(writes.take_older_than(4), vec!["t3-11"]);
        assert_eq!(drain_up_to(&mut writes, 100), vec![(4, "t4-9")]);
        writes.insert(20, 5, "t5-20");
        assert!(writes.take_older_than(5).is_empty());
        assert_eq!(writes.len(), 1);
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_duplicate_is_refused() {
        let mut writes = PendingWrites::default();
        writes.insert(3, 1, "a");
        writes.insert(4, 1, "b");
        writes.insert(3, 1, "c");
    }
}
