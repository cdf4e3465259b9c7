//! The requests a leader holds (`Held`), in the order they came, and the
//! followers with forwarded key-value requests among them. A follower's
//! next forward waits behind its held ones (`propose_forwarded`,
//! `retry_held`), so each forward asks whether it has any: a scan of the
//! list each time made holding n forwards during a transfer cost O(n²)
//! (10,000 of them stalled the leader's loop for 0.17 s, twice: once
//! holding them, once retrying them behind a restarted transfer).
//!
//! A follower's held requests are also answered at their `by` while they
//! stay held (`take_due`), so the earliest is kept beside them: the list
//! is looked through only on the tick it comes due, not on every one.

use super::Held;
use crate::raft::NodeId;
use crate::server::event_loop::Waiter;
use std::collections::{HashMap, HashSet};

#[derive(Default)]
pub(super) struct HeldRequests {
    requests: Vec<(Waiter, Held)>,
    /// The followers with a `Held::Kv` in `requests`. Requests leave all
    /// at once, all forwarded ones at once, or in `take_due`, which
    /// counts them again, so no count is needed.
    forwarding: HashSet<NodeId>,
    /// No forwarded request is due before this tick (`None`: none held).
    /// Possibly early, never late.
    next_due: Option<u64>,
}

/// The tick by which a held request a follower forwarded is answered.
fn due(held: &Held) -> u64 {
    match held {
        Held::Kv { by, .. } | Held::Cluster { by, .. } => *by,
    }
}

impl HeldRequests {
    pub(super) fn push(&mut self, request: (Waiter, Held)) {
        if let (Waiter::Peer { from, .. }, Held::Kv { .. }) = &request {
            self.forwarding.insert(*from);
        }
        if let Waiter::Peer { .. } = request.0 {
            let by = due(&request.1);
            self.next_due = Some(self.next_due.map_or(by, |next| next.min(by)));
        }
        self.requests.push(request);
    }

    /// Whether a forwarded request is held, so that one may be due: the
    /// clock is read only then.
    pub(super) fn may_be_due(&self) -> bool {
        self.next_due.is_some()
    }

    /// Takes the forwarded requests due at `now`: (follower, forward id),
    /// in order. One is due once its `by` and that of every earlier held
    /// request of its follower have come, so a follower's later request
    /// never leaves (to be answered, or carried out once the transfer
    /// ends) ahead of an earlier one, whatever their ticks.
    pub(super) fn take_due(&mut self, now: u64) -> Vec<(NodeId, u64)> {
        if self.next_due.is_none_or(|next| next > now) {
            return Vec::new();
        }
        let mut due_by: HashMap<NodeId, u64> = HashMap::new();
        let mut taken = Vec::new();
        let mut next_due: Option<u64> = None;
        self.forwarding.clear();
        self.requests.retain(|(waiter, held)| {
            let Waiter::Peer { from, id } = *waiter else {
                return true;
            };
            let by = due(held);
            let at = due_by.entry(from).or_insert(by);
            *at = (*at).max(by);
            if *at <= now {
                taken.push((from, id));
                return false;
            }
            next_due = Some(next_due.map_or(*at, |next| next.min(*at)));
            if matches!(held, Held::Kv { .. }) {
                self.forwarding.insert(from);
            }
            true
        });
        self.next_due = next_due;
        taken
    }

    /// Whether key-value requests forwarded by `from` are held.
    pub(super) fn holds_forwarded_from(&self, from: NodeId) -> bool {
        self.forwarding.contains(&from)
    }

    /// Takes the requests followers forwarded (CLUSTER commands too):
    /// (follower, forward id), in order.
    pub(super) fn take_forwards(&mut self) -> Vec<(NodeId, u64)> {
        let mut forwarded = Vec::new();
        self.requests.retain(|(waiter, _)| match *waiter {
            Waiter::Peer { from, id } => {
                forwarded.push((from, id));
                false
            }
            _ => true,
        });
        self.forwarding.clear();
        self.next_due = None;
        forwarded
    }

    pub(super) fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.requests.len()
    }

    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = &(Waiter, Held)> {
        self.requests.iter()
    }
}

impl IntoIterator for HeldRequests {
    type Item = (Waiter, Held);
    type IntoIter = std::vec::IntoIter<(Waiter, Held)>;

    fn into_iter(self) -> Self::IntoIter {
        self.requests.into_iter()
    }
}

impl Extend<(Waiter, Held)> for HeldRequests {
    fn extend<I: IntoIterator<Item = (Waiter, Held)>>(&mut self, requests: I) {
        for request in requests {
            self.push(request);
        }
    }
}
