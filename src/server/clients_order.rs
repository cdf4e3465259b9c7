//! What a connection's later requests tell of an earlier one that came
//! back from where it was sent: whether routed again it would take effect
//! after them. Apart from `clients.rs` because these passes over the reply
//! slots read best together, and the slots' bookkeeping apart from them.

use super::{note_slot_pass, Client, ReadStanding, RequestsAfter, Slot};

impl Client {
    /// What became of the requests this connection sent after slot `seq`,
    /// for a request of it that came back from where it was sent (routed
    /// again now, it would take effect after them).
    pub fn requests_after(&self, seq: u64, write: bool) -> RequestsAfter {
        note_slot_pass();
        let Some(at) = seq
            .checked_sub(self.first_seq)
            .and_then(|offset| usize::try_from(offset).ok())
        else {
            return RequestsAfter::Unseen;
        };
        let mut seen = RequestsAfter::Unseen;
        // Answered beats in flight: the request is refused either way.
        for slot in self.slots.iter().skip(at + 1) {
            match slot.seen_by_earlier(write) {
                RequestsAfter::Answered => return RequestsAfter::Answered,
                now => seen = seen.max(now),
            }
        }
        seen
    }

    /// For each of `requests` (slot, whether it writes), in the
    /// connection's order: whether [`Client::requests_after`] is
    /// [`RequestsAfter::Answered`] for it, found in one pass over the slots
    /// for all of them (a whole pipeline can come back).
    pub fn answered_after(&self, requests: &[(u64, bool)]) -> Vec<bool> {
        note_slot_pass();
        let mut answered = vec![false; requests.len()];
        let mut next = requests.len();
        // Whether a later slot was answered that a read, or a write, would
        // now come after.
        let (mut after_read, mut after_write) = (false, false);
        for (offset, slot) in self.slots.iter().enumerate().rev() {
            let seq = self.first_seq + offset as u64;
            while next > 0 && requests[next - 1].0 > seq {
                next -= 1;
            }
            if next > 0 && requests[next - 1].0 == seq {
                let write = requests[next - 1].1;
                answered[next - 1] = if write { after_write } else { after_read };
            }
            after_read |= slot.seen_by_earlier(false) == RequestsAfter::Answered;
            after_write |= slot.seen_by_earlier(true) == RequestsAfter::Answered;
        }
        answered
    }

    /// Whether a membership change this connection sent after slot `seq`
    /// went where it was sent (in flight or answered): a CLUSTER command of
    /// slot `seq` that came back, routed again, would take effect after it
    /// (a MEMBERS would show the node a later CLUSTER ADD added).
    /// `requests_after` passes over changes: they touch no key.
    pub fn change_went_after(&self, seq: u64) -> bool {
        let Some(at) = seq
            .checked_sub(self.first_seq)
            .and_then(|offset| usize::try_from(offset).ok())
        else {
            return false;
        };
        self.slots.iter().skip(at + 1).any(Slot::is_change_gone)
    }

    /// Where every slot still waiting stands, as a read forwarded to a node
    /// that no longer leads (see [`ReadStanding`]), in the connection's order,
    /// found in two passes over the slots: asked slot by slot, a connection
    /// with thousands of forwarded reads cost a pass each, every time one
    /// of its writes was answered (`Server::recheck_held_reads_of`).
    pub fn waiting_reads_standing(&self) -> Vec<ReadStanding> {
        note_slot_pass();
        let in_flight_writes = self.slots.iter().filter(|s| s.is_write_in_flight()).count();
        let mut standings = Vec::new();
        let mut after = RequestsAfter::Unseen;
        let mut from_here = 0;
        for (offset, slot) in self.slots.iter().enumerate().rev() {
            if let Slot::Waiting(..) = slot {
                let earlier_in_flight =
                    in_flight_writes - from_here > usize::from(slot.is_write_in_flight());
                standings.push(ReadStanding {
                    seq: self.first_seq + offset as u64,
                    may_be_routed_again: !earlier_in_flight && after == RequestsAfter::Unseen,
                    after,
                });
            }
            from_here += usize::from(slot.is_write_in_flight());
            after = after.max(slot.seen_by_earlier(false));
        }
        standings.reverse();
        standings
    }

    /// [`ReadStanding::may_be_routed_again`] of slot `seq`.
    #[cfg(test)]
    pub fn read_may_be_routed_again(&self, seq: u64) -> bool {
        self.waiting_reads_standing()
            .iter()
            .any(|read| read.seq == seq && read.may_be_routed_again)
    }
}
