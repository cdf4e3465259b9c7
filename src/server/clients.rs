//! Per-client connection state: the request parser, the MULTI queue, and the
//! reply slots that keep pipelined replies in request order.

use super::conn::Conn;
use crate::kv::{Command, Reply};
use crate::wire::resp::{self, Protocol, RequestParser};
use std::collections::VecDeque;

/// Stop reading from a client with this many requests awaiting replies, or
/// this much unsent output, until it catches up (Redis's output-buffer limit,
/// as backpressure instead of a disconnect).
const MAX_PENDING_REPLIES: usize = 16 * 1024;
const MAX_PENDING_OUTPUT: usize = 64 << 20;

/// Where a request that has no reply yet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Waiting for a leader to be known; never proposed, so `-TRYAGAIN` is safe.
    Parked,
    /// Proposed locally or forwarded; `forward` is the forwarding id if forwarded.
    InFlight { write: bool, forward: Option<u64> },
}

/// A reply slot, with the protocol in force when its request was handled:
/// replies are encoded only when the connection is flushed, and a HELLO later
/// in the same pipeline must not change how earlier replies are written.
enum Slot {
    Waiting(Pending, Protocol),
    Done(Reply, Protocol),
}

pub struct Multi {
    pub queued: Vec<Command>,
    /// A queued command was refused: EXEC answers EXECABORT.
    pub failed: bool,
}

pub struct Client {
    pub conn: Conn,
    /// The connection id HELLO and CLIENT ID report.
    pub id: u64,
    pub parser: RequestParser,
    pub protocol: Protocol,
    pub authenticated: bool,
    pub name: Option<String>,
    pub multi: Option<Multi>,
    slots: VecDeque<Slot>,
    /// Sequence number of `slots[0]`.
    first_seq: u64,
    /// Close once every reply is written (QUIT, a protocol error, or EOF).
    pub close_after_replies: bool,
    /// Reading stopped for backpressure; resume when the output drains.
    pub read_paused: bool,
}

impl Client {
    pub fn new(conn: Conn, id: u64, max_request_bytes: usize, authenticated: bool) -> Client {
        Client {
            conn,
            id,
            parser: RequestParser::new(max_request_bytes),
            protocol: Protocol::Resp2,
            authenticated,
            name: None,
            multi: None,
            slots: VecDeque::new(),
            first_seq: 0,
            close_after_replies: false,
            read_paused: false,
        }
    }

    /// Opens a reply slot for the next request; returns its sequence number.
    pub fn open_slot(&mut self, pending: Pending) -> u64 {
        self.slots.push_back(Slot::Waiting(pending, self.protocol));
        self.first_seq + self.slots.len() as u64 - 1
    }

    /// Opens a slot that is already answered.
    pub fn reply_now(&mut self, reply: Reply) {
        self.slots.push_back(Slot::Done(reply, self.protocol));
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let offset = seq.checked_sub(self.first_seq)?;
        self.slots.get_mut(usize::try_from(offset).ok()?)
    }

    /// The state of a slot still waiting for its reply.
    pub fn pending(&self, seq: u64) -> Option<Pending> {
        let offset = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        match self.slots.get(offset) {
            Some(Slot::Waiting(pending, _)) => Some(*pending),
            _ => None,
        }
    }

    pub fn set_pending(&mut self, seq: u64, pending: Pending) {
        if let Some(Slot::Waiting(slot_pending, _)) = self.slot_mut(seq) {
            *slot_pending = pending;
        }
    }

    /// Answers a waiting slot; false if it was already answered (a late
    /// completion after a timeout) or is gone.
    pub fn complete(&mut self, seq: u64, reply: Reply) -> bool {
        match self.slot_mut(seq) {
            Some(slot @ Slot::Waiting(..)) => {
                let protocol = match slot {
                    Slot::Waiting(_, protocol) | Slot::Done(_, protocol) => *protocol,
                };
                *slot = Slot::Done(reply, protocol);
                true
            }
            _ => false,
        }
    }

    /// Encodes the answered replies at the front, in order, into the output buffer.
    pub fn encode_replies(&mut self) {
        while let Some(Slot::Done(..)) = self.slots.front() {
            if let Some(Slot::Done(reply, protocol)) = self.slots.pop_front() {
                resp::encode_reply(&reply, protocol, self.conn.output());
                self.first_seq += 1;
            }
        }
    }

    pub fn is_backlogged(&self) -> bool {
        self.slots.len() >= MAX_PENDING_REPLIES || self.conn.pending_output() >= MAX_PENDING_OUTPUT
    }

    /// Whether the connection can be dropped now: asked to close and nothing left to say.
    pub fn finished(&self) -> bool {
        self.close_after_replies && self.slots.is_empty() && self.conn.pending_output() == 0
    }
}
