//! Client requests waiting to be routed: no leader is known or reachable,
//! the leader may not take writes now, or the connection still has requests
//! in flight to another node. Kept in one queue in arrival order, with each
//! connection's requests in the order it sent them; a connection with a
//! request here routes its later ones here too, while other connections'
//! requests go on.

use crate::kv::Command;
use mio::Token;
use std::collections::{HashMap, VecDeque};

#[derive(Default)]
pub struct ParkedRequests {
    queue: VecDeque<(Token, u64, Command)>,
    /// How many entries of `queue` each connection has.
    by_connection: HashMap<Token, usize>,
    /// Entries at the front that the last dispatch tried and parked again:
    /// nothing routes them until something changes, and that something
    /// (a message, a tick, an answered request) wakes the loop itself.
    tried: usize,
}

impl ParkedRequests {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether the connection has a request here: its later ones wait behind it.
    pub fn holds(&self, token: Token) -> bool {
        self.by_connection.contains_key(&token)
    }

    /// Whether some entry has not been tried since it was parked, or since
    /// [`ParkedRequests::retry`].
    pub fn has_untried(&self) -> bool {
        self.queue.len() > self.tried
    }

    /// Lets the loop try every entry again without waiting: a connection's
    /// requests elsewhere were answered.
    pub fn retry(&mut self) {
        self.tried = 0;
    }

    pub fn push_back(&mut self, token: Token, seq: u64, command: Command) {
        *self.by_connection.entry(token).or_default() += 1;
        self.queue.push_back((token, seq, command));
    }

    /// Parks a request ahead of its connection's later ones.
    pub fn insert_in_order(&mut self, token: Token, seq: u64, command: Command) {
        let at = self
            .queue
            .iter()
            .position(|(t, s, _)| *t == token && *s > seq)
            .unwrap_or(self.queue.len());
        if at < self.tried {
            self.tried = at;
        }
        *self.by_connection.entry(token).or_default() += 1;
        self.queue.insert(at, (token, seq, command));
    }

    /// Every entry, in order, for the caller to route again (or park anew).
    pub fn take(&mut self) -> VecDeque<(Token, u64, Command)> {
        self.by_connection.clear();
        self.tried = 0;
        std::mem::take(&mut self.queue)
    }

    /// Records that every entry now parked was just tried.
    pub fn mark_tried(&mut self) {
        self.tried = self.queue.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(key: &str) -> Command {
        Command::Get(key.as_bytes().to_vec())
    }

    #[test]
    fn a_request_parked_again_goes_ahead_of_its_connections_later_ones() {
        let mut parked = ParkedRequests::default();
        let (a, b) = (Token(1), Token(2));
        parked.push_back(a, 5, get("a5"));
        parked.push_back(b, 1, get("b1"));
        parked.push_back(a, 7, get("a7"));
        assert!(parked.holds(a) && parked.holds(b) && !parked.holds(Token(3)));
        parked.insert_in_order(a, 6, get("a6"));
        parked.insert_in_order(b, 9, get("b9"));
        let order: Vec<(Token, u64)> = parked.take().iter().map(|(t, s, _)| (*t, *s)).collect();
        assert_eq!(order, [(a, 5), (b, 1), (a, 6), (a, 7), (b, 9)]);
        assert!(parked.is_empty() && !parked.holds(a));
    }

    #[test]
    fn entries_tried_wait_until_a_new_one_comes_or_a_retry() {
        let mut parked = ParkedRequests::default();
        assert!(!parked.has_untried());
        parked.push_back(Token(1), 0, get("x"));
        assert!(parked.has_untried());
        parked.mark_tried();
        assert!(!parked.has_untried());
        parked.push_back(Token(2), 0, get("y"));
        assert!(parked.has_untried());
        parked.mark_tried();
        parked.retry();
        assert!(parked.has_untried());
        parked.mark_tried();
        parked.insert_in_order(Token(1), 1, get("z"));
        assert!(parked.has_untried());
    }
}
