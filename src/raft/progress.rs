//! What the leader knows about one follower's log, and how eagerly it sends.
//!
//! Invariant: `match_index < next_index`. Entries up to `match_index` are known to
//! be on the follower's disk and equal to the leader's; `next_index` is the first
//! entry the leader will send next.
//!
//! States (etcd `tracker/progress.go`):
//! - `Probe`: the leader does not know where the logs agree. It sends one
//!   AppendEntries and waits for the answer (or the next heartbeat response)
//!   before sending another, so a rejected probe costs one round trip, not a burst.
//! - `Replicate`: the logs agree up to `match_index`; the leader streams entries
//!   optimistically, advancing `next_index` as it sends, with at most
//!   `max_inflight` unacknowledged AppendEntries and, but for the first,
//!   `max_inflight_bytes` of unacknowledged payload (etcd `MaxInflightBytes`).
//! - `Snapshot`: the follower needs entries the leader has compacted away; an
//!   InstallSnapshot is in flight and nothing else is sent until
//!   `report_snapshot` or an acknowledgement at or past the snapshot.

use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProgressState {
    Probe,
    Replicate,
    /// `pending` is the index of the snapshot being sent.
    Snapshot {
        pending: u64,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Progress {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    /// Probe only: an AppendEntries is out and unanswered.
    pub probe_sent: bool,
    /// Replicate only: the last index and payload bytes of each unacknowledged
    /// AppendEntries, ascending.
    inflight: VecDeque<(u64, u64)>,
    /// The sum of `inflight`'s bytes.
    inflight_bytes: u64,
    max_inflight: usize,
    max_inflight_bytes: u64,
    /// Heard from in the current check-quorum round (a round is an election
    /// timeout of the leader's, and ends with or without check-quorum).
    pub recent_active: bool,
    /// Heard from in the check-quorum round before the current one: a
    /// follower that is up may not have answered yet in a round just begun.
    pub active_last_round: bool,
    /// A check-quorum round has ended since this progress was created. Until
    /// then, not having heard from the follower says nothing: a new leader's
    /// first messages may simply not have been answered yet.
    pub round_ended: bool,
    /// The highest ReadIndex confirmation round this follower acknowledged.
    pub read_round_acked: u64,
    /// The commit index last sent, so that a follower that already knows it is
    /// not sent an empty AppendEntries just to learn it.
    pub commit_sent: u64,
    /// Send an AppendEntries even if it carries nothing new: the follower is
    /// alive but behind, and what was sent to it may have been lost.
    pub resend: bool,
}

impl Progress {
    /// A fresh progress, as a new leader creates it: probe from just past its own
    /// last index (the optimistic guess of Raft §5.3).
    pub fn new(next_index: u64, max_inflight: usize, max_inflight_bytes: u64) -> Progress {
        assert!(max_inflight > 0, "max_inflight must be positive");
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            max_inflight,
            max_inflight_bytes,
            recent_active: false,
            active_last_round: false,
            round_ended: false,
            read_round_acked: 0,
            commit_sent: 0,
            resend: false,
        }
    }

    /// Whether the leader must hold off sending AppendEntries.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.window_full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// The replicate window holds as many messages, or (with one at least)
    /// as many bytes, as it may: a message of large values is one of 256,
    /// and a window of them held gigabytes for the follower to take.
    fn window_full(&self) -> bool {
        self.inflight.len() >= self.max_inflight
            || (!self.inflight.is_empty() && self.inflight_bytes >= self.max_inflight_bytes)
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    fn pop_inflight(&mut self) {
        if let Some((_, bytes)) = self.inflight.pop_front() {
            self.inflight_bytes -= bytes;
        }
    }

    #[cfg(test)]
    pub fn inflight_count(&self) -> usize {
        self.inflight.len()
    }

    pub fn become_probe(&mut self) {
        // Leaving Snapshot after a successful send, the follower will hold at
        // least the snapshot, so probing below it would be wasted.
        self.next_index = match self.state {
            ProgressState::Snapshot { pending } => (self.match_index + 1).max(pending + 1),
            _ => self.match_index + 1,
        };
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.clear_inflight();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.clear_inflight();
    }

    pub fn become_snapshot(&mut self, snapshot_index: u64) {
        self.state = ProgressState::Snapshot {
            pending: snapshot_index,
        };
        self.probe_sent = false;
        self.clear_inflight();
    }

    /// The caller reports how sending the snapshot went. Either way the leader
    /// probes next, but only after the follower's acknowledgement or its next
    /// heartbeat response, so it does not probe below a snapshot still being
    /// installed. A failed snapshot is forgotten: probing restarts from match.
    pub fn on_snapshot_reported(&mut self, success: bool) {
        if !matches!(self.state, ProgressState::Snapshot { .. }) {
            return;
        }
        if !success {
            self.state = ProgressState::Probe;
        }
        self.become_probe();
        self.probe_sent = true;
    }

    /// Records AppendEntries carrying entries up to `last_index` (or none, when
    /// `last_index` is None), `bytes` of payload, as sent.
    pub fn on_append_sent(&mut self, last_index: Option<u64>, bytes: u64, commit: u64) {
        self.commit_sent = commit;
        self.resend = false;
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                if let Some(last) = last_index {
                    assert!(
                        last >= self.next_index,
                        "sent entries up to {last} but next index is {}",
                        self.next_index
                    );
                    self.next_index = last + 1;
                    self.inflight.push_back((last, bytes));
                    self.inflight_bytes += bytes;
                }
            }
            ProgressState::Snapshot { .. } => {
                panic!("sent AppendEntries to a follower in snapshot state")
            }
        }
    }

    /// A successful acknowledgement of `index`. Returns whether it taught the
    /// leader something new (a higher match index).
    pub fn maybe_update(&mut self, index: u64) -> bool {
        if self.state == ProgressState::Probe && index + 1 >= self.next_index {
            // The answer to the outstanding probe: the next one may go.
            self.probe_sent = false;
        }
        while self
            .inflight
            .front()
            .is_some_and(|(last, _)| *last <= index)
        {
            self.pop_inflight();
        }
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index + 1);
        self.probe_sent = false;
        true
    }

    /// Whether the rejection of the probe at `rejected` denies an entry this
    /// follower acknowledged: the answer to the outstanding probe, which in
    /// Probe starts right after `match_index`.
    pub fn rejects_acknowledged(&self, rejected: u64) -> bool {
        self.state == ProgressState::Probe
            && rejected == self.match_index
            && self.next_index == rejected + 1
            && rejected > 0
    }

    /// The follower no longer holds `rejected`, which it acknowledged:
    /// nothing past `probe_hint` is known to be there any more.
    pub fn forget_match(&mut self, rejected: u64, probe_hint: u64) {
        self.match_index = self.match_index.min(probe_hint).min(rejected - 1);
    }

    /// A rejection of the AppendEntries whose previous index was `rejected`;
    /// `probe_hint` is where the leader now believes the logs may agree.
    /// Returns false for a stale rejection, which is ignored.
    pub fn maybe_decrease_to(&mut self, rejected: u64, probe_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            // Everything up to match is known good; a rejection at or below it
            // is an old message overtaken by later successes.
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index + 1;
            return true;
        }
        // In Probe only the rejection of the last probe counts; earlier probes
        // were already superseded.
        if self.next_index == 0 || self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = (rejected.min(probe_hint.saturating_add(1))).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    /// A heartbeat response: the follower is alive, so a probe lost in the
    /// network is retried, and a window jammed by lost acknowledgements frees
    /// one slot (etcd does the same). If the follower is behind the leader's
    /// `last_index`, or probing, an AppendEntries goes out even if empty: in a
    /// FIFO link its previous entry has arrived unless it was lost, and a
    /// rejection then restarts probing. Without it a follower whose appends were
    /// all lost in Replicate would never be sent anything again.
    pub fn on_heartbeat_response(&mut self, last_index: u64) {
        self.recent_active = true;
        self.resend = self.match_index < last_index || self.state == ProgressState::Probe;
        match self.state {
            ProgressState::Probe => self.probe_sent = false,
            ProgressState::Replicate => {
                if self.window_full() {
                    self.pop_inflight();
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_message_until_answered() {
        let mut pr = Progress::new(11, 4, u64::MAX);
        assert!(!pr.is_paused());
        pr.on_append_sent(Some(12), 10, 0);
        assert!(pr.is_paused(), "a probe waits for its answer");
        assert_eq!(pr.next_index, 11, "probing does not move next");
        assert!(pr.maybe_decrease_to(10, 5));
        assert_eq!(pr.next_index, 6);
        assert!(!pr.is_paused());
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut pr = Progress::new(11, 4, u64::MAX);
        assert!(
            !pr.maybe_decrease_to(7, 3),
            "rejection of a probe not sent last"
        );
        pr.maybe_update(5);
        pr.become_replicate();
        assert!(!pr.maybe_decrease_to(5, 0), "at or below match");
        assert!(pr.maybe_decrease_to(8, 0));
        assert_eq!(pr.next_index, 6);
    }

    #[test]
    fn replicate_window_is_bounded_and_freed_by_acks() {
        let mut pr = Progress::new(1, 2, u64::MAX);
        pr.maybe_update(0);
        pr.become_replicate();
        pr.on_append_sent(Some(3), 10, 0);
        assert!(!pr.is_paused());
        pr.on_append_sent(Some(6), 10, 0);
        assert!(pr.is_paused());
        assert_eq!(pr.next_index, 7);
        assert!(pr.maybe_update(3));
        assert_eq!(pr.inflight_count(), 1);
        assert!(!pr.is_paused());
        pr.on_append_sent(Some(7), 10, 0);
        pr.on_heartbeat_response(7);
        assert_eq!(pr.inflight_count(), 1, "a full window frees one slot");
        assert!(pr.resend);
    }

    #[test]
    fn replicate_window_is_bounded_in_bytes_but_takes_one_message_of_any_size() {
        let mut pr = Progress::new(1, 100, 1000);
        pr.maybe_update(0);
        pr.become_replicate();
        pr.on_append_sent(Some(1), 5000, 0);
        assert!(
            pr.is_paused(),
            "one message over the limit fills the window"
        );
        assert!(pr.maybe_update(1));
        assert!(
            !pr.is_paused(),
            "an empty window takes a message of any size"
        );
        pr.on_append_sent(Some(2), 600, 0);
        assert!(!pr.is_paused());
        pr.on_append_sent(Some(3), 400, 0);
        assert!(pr.is_paused(), "1000 bytes in flight");
        pr.on_heartbeat_response(3);
        assert!(!pr.is_paused(), "a jammed window frees one message");
        assert_eq!(pr.inflight_count(), 1);
        assert!(pr.maybe_update(3));
        pr.become_probe();
        pr.maybe_update(3);
        pr.become_replicate();
        pr.on_append_sent(Some(4), 999, 0);
        assert!(!pr.is_paused(), "leaving replicate emptied the byte count");
    }

    #[test]
    fn leaving_snapshot_probes_past_the_snapshot() {
        let mut pr = Progress::new(3, 2, u64::MAX);
        pr.become_snapshot(50);
        assert!(pr.is_paused());
        pr.become_probe();
        assert_eq!(pr.next_index, 51);
    }
}
