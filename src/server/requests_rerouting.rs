//! Parked requests, and those that did not get an answer where they went:
//! reads a leader dropped when it stopped leading, requests forwarded to a
//! node that no longer leads, and requests a leader sent back. Each is
//! parked to be routed again, in its connection's order; `dispatch_parked`
//! routes them once they may go, and refuses a returned one that would then
//! take effect after a request its connection sent after it.

use super::{written_bytes, READ_DROPPED};
use crate::kv::Command;
use crate::raft::NodeId;
use crate::server::clients::{Client, Pending, ReadStanding, RequestsAfter};
use crate::server::connection::error;
use crate::server::event_loop::{Forwarded, Server, Waiter};
use crate::server::parked::ParkedRequest;
use crate::wire::peer_msg::PeerMessage;
use mio::Token;
use std::collections::HashMap;

/// What `settle_orphaned_forwards` does with a read forwarded to a node
/// that no longer leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OrphanedRead {
    /// Parked, to be routed again.
    Go,
    /// Answered `-TRYAGAIN leader changed`: it can never be routed again,
    /// and the node it went to is gone.
    Refuse,
    /// Left for the node it went to, or its deadline, to answer.
    WaitForTarget,
    /// As `WaitForTarget`, but a request of its own connection holds it
    /// back, and it is looked at again once a write of the connection is
    /// answered (`recheck_held_reads_of`).
    WaitForConnection,
}

/// Value bytes of parked writes routed in one loop iteration: requests
/// parked while there was no leader (clients go on sending meanwhile, up to
/// their deadline) went to the new leader all at once, which could stall
/// its loop as long as the election it had just won; the rest go in later
/// iterations, in order.
const DISPATCH_BUDGET: usize = 16 << 20;

impl Server {
    /// Reads this node took as leader and dropped unconfirmed when it
    /// stopped leading: they never ran, so they go to the next leader like
    /// any request that arrives between leaders (a client's, parked until
    /// one is known; a follower's, handed back with `-TRYAGAIN`, on which the
    /// follower routes it again). A write its connection sent before it may
    /// still be in this node's log, its fate open: the read still sees it if
    /// it is ever applied, since the next leader answers reads only once it
    /// has committed an entry of its term, and by then every entry of an
    /// earlier term is either in its log, ahead of the read's place, or can
    /// never be committed.
    pub(in crate::server) fn route_dropped_reads(&mut self) {
        for (waiter, command) in self.replica.take_dropped_reads() {
            match waiter {
                Waiter::Client { token, seq } => self.park_again(token, seq, command),
                Waiter::Peer { from, id } => {
                    let reply = error(READ_DROPPED);
                    self.peers
                        .send(from, &PeerMessage::ForwardReply { id, reply });
                }
                Waiter::Nobody => {}
            }
        }
    }

    /// Requests forwarded to a node that no longer leads, as far as this
    /// node knows. A read is routed again at once if it may be (see
    /// `ReadStanding::may_be_routed_again`): it changed nothing, and a leader
    /// that was frozen or cut off keeps its connections but answers nothing,
    /// so waiting for it would spend the client's whole wait (its answer,
    /// should it come, is dropped). One that never may be, since a write
    /// its connection sent after it was answered, is answered `-TRYAGAIN
    /// leader changed` if that node cannot be reached either: nothing else
    /// will answer it before its deadline. A write's outcome is unknown,
    /// since the old leader may have replicated it: `-TIMEOUT` now if that
    /// leader cannot be reached (it died, and its reply will never come);
    /// one still connected answers for itself, or the deadline does.
    pub(in crate::server) fn settle_orphaned_forwards(&mut self) {
        let ids: Vec<u64> = self.forwards.keys().copied().collect();
        self.settle_orphaned(&ids);
        self.settle_orphaned_cluster_forwards();
    }

    /// Looks again at a connection's reads that `settle_orphaned_forwards`
    /// left waiting for requests of the connection itself, now that a write
    /// of it was answered: what held a read back may be settled, and
    /// nothing else would look before its deadline (`reads_held`).
    pub(in crate::server) fn recheck_held_reads_of(&mut self, token: Token) {
        if self.reads_held.is_empty() || !self.reads_held.remove(&token) {
            return;
        }
        if let Some(deferred) = self.rechecks_deferred.as_mut() {
            // A batch of completions can answer thousands of a pipeline's
            // writes: one look after all of them, not one each, since a
            // look costs a pass over the connection's requests.
            deferred.push(token);
            return;
        }
        self.settle_held_reads_of(token);
    }

    /// [`Server::recheck_held_reads_of`], its connection taken out of
    /// `reads_held` (put back if a read still waits for the connection).
    pub(in crate::server) fn settle_held_reads_of(&mut self, token: Token) {
        let Some(client) = self.clients.get(&token) else {
            return;
        };
        let ids: Vec<u64> = client.forward_ids().collect();
        self.settle_orphaned(&ids);
    }

    /// `settle_orphaned_forwards` for the forwards of `ids` (those of one
    /// connection, or all); ids no longer in `forwards` are passed over.
    fn settle_orphaned(&mut self, ids: &[u64]) {
        // Writes first: a read behind one of them may go once it is answered.
        for write in [true, false] {
            let mut settled = Vec::new();
            // Each connection's slots looked at once, for all its reads.
            let mut standings: HashMap<Token, Vec<ReadStanding>> = HashMap::new();
            for &id in ids {
                let Some(f) = self.forwards.get(&id) else {
                    continue;
                };
                if f.command.is_write() != write || !self.is_orphaned(f.leader, write) {
                    continue;
                }
                let fate = if write {
                    OrphanedRead::Go
                } else {
                    let reads = standings.entry(f.token).or_insert_with(|| {
                        self.clients
                            .get(&f.token)
                            .map(Client::waiting_reads_standing)
                            .unwrap_or_default()
                    });
                    let standing = reads
                        .binary_search_by_key(&f.seq, |read| read.seq)
                        .ok()
                        .map(|at| reads[at]);
                    self.orphaned_read_fate(standing, f.leader)
                };
                match fate {
                    OrphanedRead::WaitForConnection => {
                        self.reads_held.insert(f.token);
                    }
                    OrphanedRead::WaitForTarget => {}
                    fate => settled.push((id, fate)),
                }
            }
            for (id, fate) in settled {
                let Some(Forwarded {
                    token,
                    seq,
                    command,
                    ..
                }) = self.forwards.remove(&id)
                else {
                    continue;
                };
                let waiter = Waiter::Client { token, seq };
                if write {
                    self.complete(waiter, error("TIMEOUT outcome unknown"));
                } else if fate == OrphanedRead::Refuse {
                    self.complete(waiter, error(READ_DROPPED));
                } else {
                    self.park_again(token, seq, command);
                }
            }
        }
    }

    /// What becomes of a read forwarded to `asked`, which no longer leads,
    /// as its connection stands (`None`: it no longer waits).
    fn orphaned_read_fate(&self, standing: Option<ReadStanding>, asked: NodeId) -> OrphanedRead {
        let Some(standing) = standing else {
            return OrphanedRead::WaitForTarget;
        };
        if standing.may_be_routed_again {
            return OrphanedRead::Go;
        }
        if standing.after != RequestsAfter::Answered {
            // A write before it in flight (proposed here while this node
            // led: its fate open until its index is applied), or one after
            // it, sent to `asked` too and still connected: either may be
            // answered before the deadline, and the read may go then.
            return OrphanedRead::WaitForConnection;
        }
        // A write sent after it was answered: that holds for good (the
        // read's slot keeps the later ones from being written out), so it
        // can never be routed again. Only `asked` may still answer it, from
        // its place: a node still connected might (one deposed drops it
        // with `-TRYAGAIN`, one that confirmed the read answers it), one
        // that cannot be reached is taken for gone, as it is for a write.
        if self.peers.is_connected(asked) {
            OrphanedRead::WaitForTarget
        } else {
            OrphanedRead::Refuse
        }
    }

    /// Whether a request forwarded to `asked` is to be settled here (see
    /// `settle_orphaned_forwards`): `asked` no longer leads as far as this
    /// node knows and, for a write, cannot be reached either.
    pub(in crate::server) fn is_orphaned(&self, asked: NodeId, write: bool) -> bool {
        asked != self.replica.node().leader_id() && (!write || !self.peers.is_connected(asked))
    }

    /// Parks a client's request that was not applied where it went, to be
    /// routed again, if the client still waits for it: ahead of its
    /// connection's later requests parked meanwhile. `dispatch_parked`
    /// decides when it goes, or whether it is refused instead, from what
    /// became of the requests its connection sent after it
    /// (`Client::requests_after`).
    pub(super) fn park_again(&mut self, token: Token, seq: u64, command: Command) {
        let waiting = self
            .clients
            .get(&token)
            .is_some_and(|c| c.pending(seq).is_some());
        if waiting {
            let write = command.is_write();
            self.set_pending(token, seq, Pending::Parked);
            self.parked.insert_returned(token, seq, command);
            // It may come back after a request sent after it was answered.
            self.parked.check_unroutable(token);
            if write {
                // Parked, it holds back no read of its connection: one
                // parked again too goes after it, in the connection's order.
                self.recheck_held_reads_of(token);
            }
        }
    }

    /// Whether a connection's request must wait in `parked` rather than be
    /// routed now: behind its connection's requests already parked, so that
    /// they take effect in the order it sent them (`dispatch_parked` routes
    /// them in order), or behind its requests in flight to another node.
    /// Other connections go on.
    pub(in crate::server) fn must_park(&self, token: Token) -> bool {
        self.parked.holds(token) || self.waits_for_forwards(token)
    }

    /// Whether the connection has requests in flight to a node other than
    /// the one a request of it would go to now.
    pub(in crate::server) fn waits_for_forwards(&self, token: Token) -> bool {
        let target = if self.replica.is_leader() {
            self.config.id
        } else {
            self.replica.node().leader_id()
        };
        self.clients
            .get(&token)
            .is_some_and(|client| client.forwards_elsewhere(target))
    }

    /// Routes the parked requests again once a leader may serve them: each
    /// connection's in order, up to the first that must wait; a connection
    /// whose first must wait is passed over whole.
    pub(in crate::server) fn dispatch_parked(&mut self) {
        // Routed now, by a node that is handing over or about to stop, a
        // request could get no answer before the node goes, or only
        // `-TIMEOUT`: left parked, it was never sent anywhere, and is
        // answered `-TRYAGAIN` at exit (`event_loop_exit.rs`).
        if self.parked.is_empty() || self.stopping() {
            return;
        }
        let leader = self.replica.node().leader_id();
        let reachable = if self.replica.is_leader() {
            self.takes_writes()
        } else {
            self.peers.is_connected(leader)
        };
        if !reachable {
            return;
        }
        let mut routed = 0usize;
        let mut connections = self.parked.start_dispatch();
        while let Some(token) = connections.pop_front() {
            if routed >= DISPATCH_BUDGET {
                connections.push_front(token);
                self.parked.not_reached(connections);
                return;
            }
            let mut queue = self.parked.take(token);
            // See `after_returned`.
            let mut rest_unseen = false;
            while let Some(parked) = queue.pop_front() {
                let still_waiting = self
                    .clients
                    .get(&token)
                    .is_some_and(|c| c.pending(parked.seq) == Some(Pending::Parked));
                if !still_waiting {
                    continue;
                }
                if self.waits_for_forwards(token) {
                    queue.push_front(parked);
                    break;
                }
                let after = if parked.returned && !rest_unseen {
                    self.after_returned(token, &parked, &mut rest_unseen)
                } else {
                    RequestsAfter::Unseen
                };
                match after {
                    RequestsAfter::InFlight => {
                        queue.push_front(parked);
                        break;
                    }
                    RequestsAfter::Answered => {
                        // Routed again, it would take effect after requests
                        // sent after it that have: it never did, and is
                        // refused (SPEC allows -TRYAGAIN).
                        let waiter = Waiter::Client {
                            token,
                            seq: parked.seq,
                        };
                        self.complete(waiter, error(READ_DROPPED));
                        continue;
                    }
                    RequestsAfter::Unseen => {}
                }
                routed += written_bytes(self.replica.kv(), &parked.command);
                self.route(token, parked.seq, parked.command);
                if self.parked.holds(token) || routed >= DISPATCH_BUDGET {
                    break;
                }
            }
            self.parked.put_back(token, queue);
        }
        self.parked.finish_dispatch();
        if routed >= DISPATCH_BUDGET {
            // The rest of the last connection's requests, put back above.
            self.parked.retry();
        }
    }

    /// What became of the requests sent after a returned one
    /// (`Client::requests_after`). Sets `rest_unseen` once none after it
    /// touches a key or is out, as a write would see them: then the same
    /// holds for every later one of the pass, which need no scan of their
    /// own (a whole pipeline can come back).
    fn after_returned(
        &self,
        token: Token,
        parked: &ParkedRequest,
        rest_unseen: &mut bool,
    ) -> RequestsAfter {
        let Some(client) = self.clients.get(&token) else {
            return RequestsAfter::Unseen;
        };
        let strict = client.requests_after(parked.seq, true);
        *rest_unseen = strict == RequestsAfter::Unseen;
        if parked.command.is_write() || *rest_unseen {
            strict
        } else {
            client.requests_after(parked.seq, false)
        }
    }

    /// Lets the loop route a connection's parked requests at once, not at
    /// its next tick, once one of its requests is answered: they may have
    /// waited for it (`dispatch_parked`), or may never go now
    /// (`refuse_unroutable_parked`).
    pub(in crate::server) fn retry_parked_of(&mut self, token: Token) {
        if self.parked.holds(token) {
            self.parked.retry();
            self.parked.check_unroutable(token);
        }
    }

    /// Answers `-TRYAGAIN leader changed` the parked requests that came
    /// back from where they were sent and can never be routed again, since
    /// a request their connection sent after them was answered (see
    /// `dispatch_parked`), once per iteration for the connections whose
    /// requests were answered or parked again in it. `dispatch_parked`
    /// refuses them too, but runs only while a leader is reachable: through
    /// an outage such a request waited for its deadline, and every reply of
    /// its connection behind it with it (GET and SET pipelined through a
    /// follower, the GET dropped by a deposed leader, the SET then answered
    /// `-TIMEOUT` when that leader died).
    pub(in crate::server) fn refuse_unroutable_parked(&mut self) {
        for token in self.parked.take_unroutable_checks() {
            let Some(client) = self.clients.get(&token) else {
                continue;
            };
            let returned: Vec<(u64, bool)> = self
                .parked
                .queued(token)
                .filter(|parked| parked.returned)
                .filter(|parked| client.pending(parked.seq) == Some(Pending::Parked))
                .map(|parked| (parked.seq, parked.command.is_write()))
                .collect();
            if returned.is_empty() {
                continue;
            }
            let answered = client.answered_after(&returned);
            for (&(seq, _), answered) in returned.iter().zip(answered) {
                if answered {
                    self.parked.remove(token, seq);
                    self.complete(Waiter::Client { token, seq }, error(READ_DROPPED));
                }
            }
        }
    }
}
