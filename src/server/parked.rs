//! Client requests waiting to be routed: no leader is known or reachable,
//! the leader may not take writes now, or the connection still has requests
//! in flight that these must not overtake. Kept per connection, in the order
//! it sent them; a connection with a request here parks its later ones here
//! too, while other connections' requests go on. A connection that must
//! wait is passed over whole, so a dispatch costs one step per connection
//! waiting, not per request.
//!
//! Two queues of this kind: the key-value requests' (`Server::parked`) and
//! the CLUSTER commands' (`ClusterState::parked`), each with its own
//! dispatch, both emptied of requests answered where they waited or whose
//! client went away, also while none can be dispatched.

use crate::kv::Command;
use mio::Token;
use std::collections::{HashMap, HashSet, VecDeque};

/// A parked request: its slot, the command, and whether it came back from
/// where it was sent (then requests the connection sent after it may have
/// gone ahead, and are looked at before it goes again).
pub struct ParkedRequest<C = Command> {
    pub seq: u64,
    pub command: C,
    pub returned: bool,
}

pub struct ParkedRequests<C = Command> {
    by_connection: HashMap<Token, VecDeque<ParkedRequest<C>>>,
    /// The connections with requests here, each once, in the order they
    /// first parked; also, while `stale`, connections whose requests were
    /// all dropped since (see [`ParkedRequests::forget`]).
    connections: VecDeque<Token>,
    /// `connections` may name connections with no requests here.
    stale: bool,
    /// Something was parked since the last dispatch, or may go now
    /// ([`ParkedRequests::retry`]).
    changed: bool,
    /// Connections that parked a request again, or had one answered, since
    /// they were last looked at: a request of theirs that came back may
    /// now be one that can never be routed again, and a dispatch, which
    /// refuses those, needs a reachable leader (`take_unroutable_checks`).
    unroutable_checks: HashSet<Token>,
}

impl<C> Default for ParkedRequests<C> {
    fn default() -> Self {
        ParkedRequests {
            by_connection: HashMap::new(),
            connections: VecDeque::new(),
            stale: false,
            changed: false,
            unroutable_checks: HashSet::new(),
        }
    }
}

impl<C> ParkedRequests<C> {
    pub fn is_empty(&self) -> bool {
        self.by_connection.is_empty()
    }

    /// Whether the connection has a request here: its later ones wait behind it.
    pub fn holds(&self, token: Token) -> bool {
        self.by_connection.contains_key(&token)
    }

    /// The connections with requests here, in no particular order.
    pub fn connections(&self) -> impl Iterator<Item = Token> + '_ {
        self.by_connection.keys().copied()
    }

    /// Whether the loop should dispatch again without waiting for a message
    /// or a tick: something changed since the last dispatch.
    pub fn has_untried(&self) -> bool {
        self.changed && !self.is_empty()
    }

    /// Lets the loop dispatch again at once: a connection's requests
    /// elsewhere were answered.
    pub fn retry(&mut self) {
        self.changed = true;
    }

    /// Parks a request behind its connection's.
    pub fn push_back(&mut self, token: Token, seq: u64, command: C) {
        self.queue_of(token).push_back(ParkedRequest {
            seq,
            command,
            returned: false,
        });
    }

    /// Has the connection's parked requests looked at again: one of its
    /// requests was answered, or came back and was parked again.
    pub fn check_unroutable(&mut self, token: Token) {
        if self.holds(token) {
            self.unroutable_checks.insert(token);
        }
    }

    /// The connections to look at again
    /// ([`ParkedRequests::check_unroutable`]), some perhaps with nothing
    /// parked any more.
    pub fn take_unroutable_checks(&mut self) -> HashSet<Token> {
        std::mem::take(&mut self.unroutable_checks)
    }

    /// A connection's parked requests, in its order.
    pub fn queued(&self, token: Token) -> impl Iterator<Item = &ParkedRequest<C>> {
        self.by_connection.get(&token).into_iter().flatten()
    }

    /// Parks a request that came back from where it was sent, ahead of its
    /// connection's later ones.
    pub fn insert_returned(&mut self, token: Token, seq: u64, command: C) {
        let queue = self.queue_of(token);
        let at = queue.partition_point(|parked| parked.seq < seq);
        queue.insert(
            at,
            ParkedRequest {
                seq,
                command,
                returned: true,
            },
        );
    }

    fn queue_of(&mut self, token: Token) -> &mut VecDeque<ParkedRequest<C>> {
        self.changed = true;
        self.drop_stale();
        let connections = &mut self.connections;
        self.by_connection.entry(token).or_insert_with(|| {
            connections.push_back(token);
            VecDeque::new()
        })
    }

    /// The connections with parked requests, in order, for a dispatch; each
    /// one's requests are taken with [`ParkedRequests::take`].
    pub fn start_dispatch(&mut self) -> VecDeque<Token> {
        self.drop_stale();
        std::mem::take(&mut self.connections)
    }

    /// Puts back, ahead of the rest, the connections a dispatch stopped
    /// before (its budget spent), and has the loop dispatch again at once.
    pub fn not_reached(&mut self, connections: VecDeque<Token>) {
        self.drop_stale();
        // A set, not `VecDeque::contains`: with thousands of connections on
        // either side (a budget spent halfway through 10,000 clients, each
        // reached one parked again) that cost 0.09 s per dispatch.
        let mut placed: HashSet<Token> = self.connections.iter().copied().collect();
        for token in connections.into_iter().rev() {
            if self.by_connection.contains_key(&token) && placed.insert(token) {
                self.connections.push_front(token);
            }
        }
        self.changed = true;
    }

    /// Records that every request now parked was just tried: those parked
    /// again meanwhile (a leader link too backlogged to take them, say)
    /// wait for a message or a tick, not a poll that does not wait.
    pub fn finish_dispatch(&mut self) {
        self.changed = false;
    }

    /// Drops the request of slot `seq`, answered where it waited (its
    /// deadline passed). Left here, it kept its command, a write's value
    /// and all, until a dispatch, and none comes while no leader is
    /// reachable: a client retrying its writes through an outage piled
    /// them up.
    pub fn remove(&mut self, token: Token, seq: u64) {
        let Some(queue) = self.by_connection.get_mut(&token) else {
            return;
        };
        // Usually the oldest: deadlines pass in the order requests came.
        if let Some(at) = queue.iter().position(|parked| parked.seq == seq) {
            queue.remove(at);
        }
        if queue.is_empty() {
            self.forget(token);
        }
    }

    /// Drops a connection's requests: its client went away. Its place in
    /// `connections` is dropped later, with every other one forgotten
    /// meanwhile, in one pass: a pass each would cost O(connections) per
    /// request when thousands of parked requests reach their deadline in
    /// the same iteration of an outage.
    pub fn forget(&mut self, token: Token) {
        if self.by_connection.remove(&token).is_some() {
            self.stale = true;
        }
    }

    fn drop_stale(&mut self) {
        if std::mem::take(&mut self.stale) {
            let by_connection = &self.by_connection;
            self.connections
                .retain(|token| by_connection.contains_key(token));
        }
    }

    /// Takes a connection's requests (the connection no longer holds any).
    pub fn take(&mut self, token: Token) -> VecDeque<ParkedRequest<C>> {
        self.by_connection.remove(&token).unwrap_or_default()
    }

    /// Puts back requests of a connection that a dispatch did not route,
    /// behind any it parked meanwhile (those are earlier: a connection's
    /// requests are routed in order and stop at the first parked again).
    /// Moves the queue, not its requests: a connection waiting for a frozen
    /// leader may hold thousands, passed over in every iteration.
    pub fn put_back(&mut self, token: Token, mut rest: VecDeque<ParkedRequest<C>>) {
        if rest.is_empty() {
            return;
        }
        let queue = self.queue_of(token);
        while let Some(parked) = queue.pop_back() {
            rest.push_front(parked);
        }
        *queue = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(key: &str) -> Command {
        Command::Get(key.as_bytes().to_vec())
    }

    fn seqs(queue: &VecDeque<ParkedRequest>) -> Vec<(u64, bool)> {
        queue.iter().map(|p| (p.seq, p.returned)).collect()
    }

    #[test]
    fn a_returned_request_goes_ahead_of_its_connections_later_ones() {
        let mut parked = ParkedRequests::default();
        let (a, b) = (Token(1), Token(2));
        parked.push_back(a, 5, get("a5"));
        parked.push_back(b, 1, get("b1"));
        parked.push_back(a, 7, get("a7"));
        assert!(parked.holds(a) && parked.holds(b) && !parked.holds(Token(3)));
        parked.insert_returned(a, 6, get("a6"));
        parked.insert_returned(b, 9, get("b9"));
        assert_eq!(parked.start_dispatch(), [a, b]);
        assert_eq!(seqs(&parked.take(a)), [(5, false), (6, true), (7, false)]);
        assert!(!parked.holds(a) && parked.holds(b));
        assert_eq!(seqs(&parked.take(b)), [(1, false), (9, true)]);
        assert!(parked.is_empty());
    }

    #[test]
    fn requests_put_back_follow_those_parked_again() {
        let mut parked = ParkedRequests::default();
        let a = Token(1);
        for seq in 1..=3 {
            parked.push_back(a, seq, get("x"));
        }
        assert_eq!(parked.start_dispatch(), [a]);
        let mut queue = parked.take(a);
        let first = queue.pop_front().expect("first");
        parked.push_back(a, first.seq, first.command);
        parked.put_back(a, queue);
        assert_eq!(parked.start_dispatch(), [a]);
        assert_eq!(seqs(&parked.take(a)), [(1, false), (2, false), (3, false)]);
    }

    #[test]
    fn a_forgotten_connection_is_dispatched_once_and_in_its_new_place() {
        let mut parked = ParkedRequests::default();
        let (a, b, c) = (Token(1), Token(2), Token(3));
        for token in [a, b, c] {
            parked.push_back(token, 1, get("x"));
        }
        parked.forget(b);
        parked.remove(c, 1);
        assert!(!parked.holds(b) && !parked.holds(c) && parked.holds(a));
        parked.push_back(b, 2, get("y"));
        assert_eq!(parked.start_dispatch(), [a, b]);
        assert_eq!(seqs(&parked.take(a)), [(1, false)]);
        assert_eq!(seqs(&parked.take(b)), [(2, false)]);
        assert!(parked.is_empty());
        parked.push_back(a, 3, get("z"));
        parked.forget(a);
        assert!(parked.is_empty());
        assert!(parked.start_dispatch().is_empty());
    }

    #[test]
    fn connections_a_dispatch_did_not_reach_go_first_next_time() {
        let mut parked = ParkedRequests::default();
        let (a, b, c) = (Token(1), Token(2), Token(3));
        for token in [a, b, c] {
            parked.push_back(token, 1, get("x"));
            parked.push_back(token, 2, get("y"));
        }
        let mut connections = parked.start_dispatch();
        assert_eq!(connections.pop_front(), Some(a));
        // The budget ran out after a's first request.
        let mut queue = parked.take(a);
        queue.pop_front();
        parked.put_back(a, queue);
        parked.finish_dispatch();
        parked.not_reached(connections);
        assert!(parked.has_untried(), "the rest goes at once");
        assert_eq!(parked.start_dispatch(), [b, c, a]);
        assert_eq!(seqs(&parked.take(a)), [(2, false)]);
        assert_eq!(seqs(&parked.take(b)), [(1, false), (2, false)]);
    }

    /// A connection a dispatch did not reach that is already in line again
    /// (its client went away and parked anew meanwhile, say) keeps its
    /// place and is not listed twice.
    #[test]
    fn a_connection_not_reached_but_already_in_line_is_listed_once() {
        let mut parked = ParkedRequests::default();
        let (a, b, c) = (Token(1), Token(2), Token(3));
        for token in [a, b, c] {
            parked.push_back(token, 1, get("x"));
        }
        let mut connections = parked.start_dispatch();
        assert_eq!(connections.pop_front(), Some(a));
        let queue = parked.take(a);
        parked.put_back(a, queue);
        connections.push_back(a);
        parked.not_reached(connections);
        assert_eq!(parked.start_dispatch(), [b, c, a]);
    }

    /// Not a check (nothing is timed against a bound): prints what
    /// `not_reached` costs when a dispatch's budget runs out halfway
    /// through `n` connections, each of those it reached parked again (a
    /// leader link too backlogged to take more). Run with
    /// `cargo test --release --lib not_reached_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn not_reached_cost() {
        for n in [100usize, 1000, 10_000, 100_000] {
            let mut parked = ParkedRequests::default();
            for token in 0..n {
                parked.push_back(Token(token), 1, get("x"));
            }
            let mut connections = parked.start_dispatch();
            for _ in 0..n / 2 {
                let token = connections.pop_front().expect("a connection");
                let queue = parked.take(token);
                parked.put_back(token, queue);
            }
            let started = std::time::Instant::now();
            parked.not_reached(connections);
            let spent = started.elapsed();
            assert_eq!(parked.start_dispatch().len(), n);
            println!("{} connections, half reached: not_reached {:?}", n, spent);
        }
    }

    #[test]
    fn the_loop_dispatches_at_once_only_after_a_change() {
        let mut parked = ParkedRequests::default();
        assert!(!parked.has_untried());
        parked.push_back(Token(1), 0, get("x"));
        assert!(parked.has_untried());
        let connections = parked.start_dispatch();
        let mut queue = parked.take(connections[0]);
        // Tried and parked again: the backlogged link takes nothing now.
        let first = queue.pop_front().expect("one");
        parked.push_back(Token(1), first.seq, first.command);
        parked.put_back(Token(1), queue);
        parked.finish_dispatch();
        assert!(
            !parked.has_untried(),
            "parked again in the dispatch: it waits"
        );
        parked.retry();
        assert!(parked.has_untried());
        parked.start_dispatch();
        parked.finish_dispatch();
        parked.insert_returned(Token(2), 3, get("y"));
        assert!(parked.has_untried());
    }
}
