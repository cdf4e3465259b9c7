//! Requests that cross between nodes: those a follower forwarded to this
//! leader (held while it has no connected quorum, then proposed, or sent
//! back for the follower to route again), and the replies a leader relays
//! for this node's own forwarded requests, delivered once this node has
//! applied what they committed.

use super::{is_tryagain, NO_LEADER};
use crate::kv::{Command, Reply};
use crate::raft::{NodeId, ProposeError};
use crate::replica::Completion;
use crate::server::cluster::{PAYLOAD_CLUSTER, PAYLOAD_KV};
use crate::server::connection::error;
use crate::server::event_loop::{Forwarded, Server, Waiter};
use crate::wire::peer_msg::PeerMessage;
use std::collections::{HashMap, VecDeque};

impl Server {
    /// The writes followers forwarded while this leader had no connected
    /// quorum, and the requests behind them: proposed in order once it has
    /// one; handed back to the
    /// follower (which routes them again) if this node no longer leads;
    /// answered `-TRYAGAIN no leader` when their time is up. None was
    /// appended, so either answer keeps its promise.
    pub(in crate::server) fn dispatch_quorum_waits(&mut self) {
        if self.quorum_waits.is_empty() {
            return;
        }
        if !self.replica.is_leader() {
            for (from, id, _, _) in std::mem::take(&mut self.quorum_waits) {
                let reply = error("TRYAGAIN not the leader");
                self.peers
                    .send(from, &PeerMessage::ForwardReply { id, reply });
            }
            return;
        }
        if self.quorum_connected {
            for (from, id, command, by) in std::mem::take(&mut self.quorum_waits) {
                self.propose_forwarded(from, id, command, Some(by));
            }
            return;
        }
        let now = self.now_ticks();
        while self.quorum_waits.front().is_some_and(|(.., by)| *by <= now) {
            if let Some((from, id, _, _)) = self.quorum_waits.pop_front() {
                let reply = error(NO_LEADER);
                self.peers
                    .send(from, &PeerMessage::ForwardReply { id, reply });
            }
        }
    }

    /// A request forwarded to us by a follower that believes we lead.
    pub(in crate::server) fn handle_forward(&mut self, from: NodeId, id: u64, payload: &[u8]) {
        let read = self.forwards_read.entry(from).or_default();
        *read = (*read).max(id.saturating_add(1));
        let payload = match payload.split_first() {
            Some((&PAYLOAD_KV, command)) => command,
            Some((&PAYLOAD_CLUSTER, text)) => return self.handle_cluster_forward(from, id, text),
            _ => &[],
        };
        let command = match Command::decode(payload) {
            Ok(command) => command,
            Err(err) => {
                let reply = Reply::Error(format!("ERR forwarded request: {}", err));
                self.peers
                    .send(from, &PeerMessage::ForwardReply { id, reply });
                return;
            }
        };
        // Reads too, behind held writes: a connection's read waits for the
        // writes it sent before.
        let held_back =
            !self.quorum_waits.is_empty() || (command.is_write() && !self.quorum_connected);
        if self.replica.is_leader() && held_back {
            let by = self.quorum_wait_until();
            self.quorum_waits.push_back((from, id, command, by));
            return;
        }
        self.propose_forwarded(from, id, command, None);
    }

    /// The tick by which a forward arriving now that waits for a
    /// connected quorum, or is held for a transfer, is answered
    /// `-TRYAGAIN no leader`. Not at once: the follower would send it
    /// straight back. Before the follower's own deadline, which would
    /// make it `-TIMEOUT`.
    pub(in crate::server) fn quorum_wait_until(&self) -> u64 {
        self.now_ticks() + self.deadline_ticks * 3 / 4
    }

    /// Puts forwards held for a transfer that ended, which find no
    /// connected quorum (`retry_held_requests`), into `quorum_waits`:
    /// `earlier` is in the order each follower's came, but not always in
    /// the order of `by` across followers (a forward that waited for the
    /// quorum once, and was held again behind one held anew in that pass,
    /// when a second transfer ran). So they are sorted by `by` first,
    /// each raised to its follower's earlier ones' (as `take_due` counts
    /// them) so that the sort keeps a follower's order. A follower's
    /// requests already in `quorum_waits` came after its held ones (they
    /// enter only on arrival, behind what is held then, and leave all at
    /// once), and each `by` is its arrival plus the same span, so merging
    /// by `by`, `earlier` first on a tie, keeps each follower's requests
    /// in order and the queue in the order of `by`, which the expiry
    /// above takes from the front.
    pub(in crate::server) fn wait_for_quorum_ahead(
        &mut self,
        mut earlier: Vec<(NodeId, u64, Command, u64)>,
    ) {
        if earlier.is_empty() {
            return;
        }
        let mut latest: HashMap<NodeId, u64> = HashMap::new();
        for (from, _, _, by) in earlier.iter_mut() {
            let at = latest.entry(*from).or_insert(*by);
            *at = (*at).max(*by);
            *by = *at;
        }
        earlier.sort_by_key(|(.., by)| *by);
        let mut later = std::mem::take(&mut self.quorum_waits)
            .into_iter()
            .peekable();
        let mut merged = VecDeque::with_capacity(earlier.len() + later.len());
        for wait in earlier {
            while let Some(next) = later.next_if(|(.., by)| *by < wait.3) {
                merged.push_back(next);
            }
            merged.push_back(wait);
        }
        merged.extend(later);
        self.quorum_waits = merged;
    }

    /// Proposes (or reads) a request a follower forwarded; a refusal goes
    /// back to the follower, which routes the request again. `by`: its
    /// tick in `quorum_waits`, kept should it be held; `None` for one that
    /// arrived just now, whose tick is read off the clock only if it is
    /// held (not on every forward's way).
    fn propose_forwarded(&mut self, from: NodeId, id: u64, command: Command, by: Option<u64>) {
        let waiter = Waiter::Peer { from, id };
        if self.holds_forwarded_from(from) {
            // Behind requests from that follower held for a transfer, in
            // order: a read served now could miss a write its connection
            // sent before it, and a write overtake one.
            let by = by.unwrap_or_else(|| self.quorum_wait_until());
            return self.hold_forwarded(waiter, command, by);
        }
        if let Err(refused) = self.propose_or_read(command, waiter) {
            if refused.error == ProposeError::TransferInProgress {
                let by = by.unwrap_or_else(|| self.quorum_wait_until());
                return self.hold_forwarded(refused.waiter, refused.command, by);
            }
            // Nothing was appended, so the follower may safely route it again.
            let reply = match refused.error {
                ProposeError::NotLeader { .. } => error("TRYAGAIN not the leader"),
                ProposeError::TransferInProgress => error("TRYAGAIN leadership transfer"),
                ProposeError::NotReady => error("TRYAGAIN leader not ready"),
            };
            self.peers
                .send(from, &PeerMessage::ForwardReply { id, reply });
        }
    }

    pub(in crate::server) fn handle_forward_reply(&mut self, id: u64, reply: Reply) {
        let Some(forwarded) = self.forwards.remove(&id) else {
            return self.handle_cluster_forward_reply(id, reply);
        };
        let Forwarded {
            token,
            seq,
            command,
            ..
        } = forwarded;
        if is_tryagain(&reply) && reply != error(NO_LEADER) {
            // The leader we asked did not take it: it was not applied, try
            // elsewhere, once the requests sent after it are settled
            // (`dispatch_parked`). (`NO_LEADER` is its final answer: it held
            // the write while it could, and sending it back would only
            // repeat that.)
            return self.park_again(token, seq, command);
        }
        // Delivered once this node has applied every entry it knows to be
        // committed now: the leader sent the commit index ahead of this
        // reply, and the requests held behind it (DBSIZE, INFO) and the
        // connection commands queued with an EXEC, run on delivery, must see
        // what it committed. Each `Ready` applies at most
        // `RaftConfig::max_apply_bytes`, so that can take more than this
        // iteration (`release_relayed_replies`).
        let known_committed = self.replica.node().commit_index();
        self.relayed_replies.push_back((
            known_committed,
            Completion {
                waiter: Waiter::Client { token, seq },
                reply,
            },
        ));
    }

    /// Hands the relayed replies whose entries are applied here to
    /// [`Server::deliver_completions`], in the order they came.
    pub(in crate::server) fn release_relayed_replies(&mut self) {
        let applied = self.replica.applied_index();
        while self
            .relayed_replies
            .front()
            .is_some_and(|(committed, _)| *committed <= applied)
        {
            if let Some((_, completion)) = self.relayed_replies.pop_front() {
                self.completions.push(completion);
            }
        }
    }
}
