//! Per-client connection state: the request parser, the MULTI queue, and the
//! reply slots that keep pipelined replies in request order.

use super::client_list::ClientInfo;
use super::conn::Conn;
use super::connection::reports_data;
use super::requests::only_reads;
use super::shutdown_command::is_shutdown;
use super::transactions::{LocalCommand, Queued};
use crate::kv::Reply;
use crate::raft::NodeId;
use crate::wire::resp::{self, Protocol, RequestParser};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Stop reading from a client with this many requests awaiting replies, or
/// this much unsent output, until it catches up (Redis's output-buffer limit,
/// as backpressure instead of a disconnect). The output counts the replies
/// not yet encoded too, and for those not yet answered what they are
/// expected to hold ([`Client::expect_reply_bytes`]): a client that never
/// reads could otherwise pipeline thousands of 9-byte `GET big` requests,
/// each answered with its own copy of the value.
const MAX_PENDING_REPLIES: usize = 16 * 1024;

#[cfg(test)]
thread_local! {
    /// Passes over a connection's reply slots to judge its requests that
    /// came back (`requests_after`, `waiting_reads_standing`): tests count
    /// them to check that looking at held reads again stays linear.
    pub static SLOT_PASSES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn note_slot_pass() {
    #[cfg(test)]
    SLOT_PASSES.with(|passes| passes.set(passes.get() + 1));
}
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
    /// With the value bytes its request may write (see
    /// [`Client::expect_written_bytes`]).
    Waiting(Pending, Protocol, Kind, usize),
    /// Answered; what its request was.
    Done(Reply, Protocol, Kind),
}

/// What became of a connection's requests after one (see
/// [`Client::requests_after`]). Ordered by precedence: of several requests
/// after one, the greatest says what became of them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RequestsAfter {
    /// Each is parked, refused unapplied, or a connection command.
    Unseen,
    /// One is in flight: its fate is not known yet.
    InFlight,
    /// One was answered that the request would now come after: a write, or
    /// for a write, also a read (it did not see the write).
    Answered,
}

/// Whether requests after a waiting slot's must wait for its reply, for
/// [`Client::held`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An EXEC with connection commands queued in it: the connection's later
    /// requests other than plain reads wait until it is answered.
    Barrier,
    /// A membership change or transfer: a barrier too, but it neither reads
    /// nor writes a key, so a write that comes back from where it went may
    /// still go after it (`Client::requests_after`).
    Change,
    /// A barrier that also writes (an EXEC).
    WriteBarrier,
    /// A read: it holds nothing back, since it is answered from the state as
    /// of its place among the connection's writes (`replica_reads.rs`).
    Read,
    /// A write.
    Write,
    Other,
}

/// What [`Client::waiting_reads_standing`] tells of a waiting slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadStanding {
    pub seq: u64,
    /// Whether it may be routed again at once, for a read forwarded to a
    /// node that no longer leads and has not answered
    /// (`Server::settle_orphaned_forwards`). Redis answers a connection's
    /// requests as if one at a time, so not if a write sent before it is
    /// still in flight (its outcome unknown, it could be applied after the
    /// read is answered; a membership change is no write), nor if one sent
    /// after it is in flight or answered (`after`); then it waits for that
    /// node's answer.
    pub may_be_routed_again: bool,
    /// [`Client::requests_after`] for a read.
    pub after: RequestsAfter,
}

impl Slot {
    /// What this slot, as one of the requests sent after another, tells of
    /// them (see [`Client::requests_after`]).
    fn seen_by_earlier(&self, write: bool) -> RequestsAfter {
        match self {
            Slot::Waiting(Pending::InFlight { .. }, _, kind, _)
                if kind.touches_keys() && (write || kind.writes()) =>
            {
                RequestsAfter::InFlight
            }
            // Refused unapplied, a connection command or a membership
            // change: no key changed or seen. A read's place is only
            // moved by writes.
            Slot::Done(Reply::Error(text), ..) if text.starts_with("TRYAGAIN") => {
                RequestsAfter::Unseen
            }
            Slot::Done(_, _, kind) if !kind.touches_keys() => RequestsAfter::Unseen,
            Slot::Done(_, _, kind) if write || kind.writes() => RequestsAfter::Answered,
            _ => RequestsAfter::Unseen,
        }
    }

    /// A membership change (CLUSTER ADD, REMOVE, TRANSFER) that went where
    /// it was sent: in flight, or answered other than `-TRYAGAIN` (see
    /// [`Client::change_went_after`]).
    fn is_change_gone(&self) -> bool {
        match self {
            Slot::Waiting(Pending::InFlight { .. }, _, Kind::Change, _) => true,
            Slot::Done(Reply::Error(text), ..) if text.starts_with("TRYAGAIN") => false,
            Slot::Done(_, _, kind) => *kind == Kind::Change,
            _ => false,
        }
    }

    /// A write whose outcome is still open: a read sent after it may not
    /// be routed again (see [`ReadStanding::may_be_routed_again`]).
    fn is_write_in_flight(&self) -> bool {
        matches!(self, Slot::Waiting(Pending::InFlight { .. }, _, kind, _) if kind.writes())
    }
}

fn is_forwarded(pending: Pending) -> bool {
    matches!(
        pending,
        Pending::InFlight {
            forward: Some(_),
            ..
        }
    )
}

impl Kind {
    fn holds_back(self) -> bool {
        matches!(self, Kind::Barrier | Kind::WriteBarrier | Kind::Change)
    }

    /// Whether the request reads or writes keys.
    fn touches_keys(self) -> bool {
        !matches!(self, Kind::Other | Kind::Change)
    }

    fn writes(self) -> bool {
        matches!(self, Kind::Write | Kind::WriteBarrier)
    }
}

pub struct Multi {
    pub queued: Vec<Queued>,
    /// A queued command was refused: EXEC answers EXECABORT.
    pub failed: bool,
    /// The queued commands' size, counted against the limit of one log entry.
    pub bytes: usize,
}

pub struct Client {
    pub conn: Conn,
    /// The connection id HELLO and CLIENT ID report.
    pub id: u64,
    pub parser: RequestParser,
    pub protocol: Protocol,
    pub authenticated: bool,
    pub name: Option<String>,
    /// Where it comes from and what it last did, for CLIENT LIST.
    pub info: ClientInfo,
    pub multi: Option<Multi>,
    slots: VecDeque<Slot>,
    /// For each slot, in step with `slots`: the bytes its reply holds once
    /// answered, or is expected to hold before (see [`MAX_PENDING_OUTPUT`]).
    slot_bytes: VecDeque<usize>,
    /// The sum of `slot_bytes`.
    unsent_reply_bytes: usize,
    /// The part of `unsent_reply_bytes` expected by requests not yet
    /// answered, also counted in `unanswered_total`.
    unanswered_bytes: usize,
    /// [`Client::unanswered_bytes`] summed over every client of the node
    /// (see `client_io::MAX_UNANSWERED_BYTES`).
    unanswered_total: Arc<AtomicUsize>,
    /// The value bytes this connection's unanswered writes may put in keys:
    /// a read pipelined behind `SET k <1 MB>` is read before that write is
    /// applied, so the map alone says k holds nothing, and every `GET k`
    /// after it would answer its own copy unbounded.
    written_in_flight: usize,
    /// Sequence number of `slots[0]`.
    first_seq: u64,
    /// Close once every reply is written (QUIT, a protocol error, or EOF).
    pub close_after_replies: bool,
    /// The client closed its side (EOF read).
    pub peer_closed: bool,
    /// Every reply is written and this side shut: what still arrives is read
    /// and dropped until the client closes (see `client_io::linger`).
    pub lingering: Option<usize>,
    /// Reading stopped for backpressure (resume when the output drains) or
    /// for a held request (resume when the reads before it are answered).
    pub read_paused: bool,
    /// Reading stopped because the loop iteration's budget for all clients
    /// was spent: the client waits in `Server::over_budget`, resumed in the
    /// next iteration (see `client_io::ITERATION_BUDGET`).
    pub over_budget: bool,
    /// Requests of this connection still waiting for their replies that
    /// hold back the ones after them ([`Kind::Barrier`]).
    barriers_waiting: usize,
    /// A request that arrived behind unanswered barriers and would not only
    /// read: it waits, and the connection takes nothing after it, until those
    /// are answered. Why: a `CLUSTER REMOVE` pipelined behind a `CLUSTER ADD`
    /// would otherwise find the addition still in progress and be refused,
    /// where sent after its reply it succeeds. Redis answers each
    /// connection's requests in order, as if one at a time. (Reads need no
    /// such wait: see [`Kind::Read`].)
    held: Option<Vec<Vec<u8>>>,
    /// EXECs waiting for their entry, by slot, with the connection commands
    /// queued with them (see `transactions`).
    exec_locals: Vec<(u64, Vec<LocalCommand>)>,
    /// Requests forwarded and not answered yet, all to `forwarded_to`: a
    /// node that refuses one, or drops it, sends it back to be routed again,
    /// so none of this connection's requests may go to another node until
    /// these are answered (see [`Client::forwards_elsewhere`]).
    forwards_in_flight: usize,
    forwarded_to: NodeId,
}

impl Client {
    pub fn new(conn: Conn, id: u64, max_request_bytes: usize, authenticated: bool) -> Client {
        Client {
            info: ClientInfo::new(&conn.stream),
            conn,
            id,
            parser: RequestParser::new(max_request_bytes),
            protocol: Protocol::Resp2,
            authenticated,
            name: None,
            multi: None,
            slots: VecDeque::new(),
            slot_bytes: VecDeque::new(),
            unsent_reply_bytes: 0,
            unanswered_bytes: 0,
            unanswered_total: Arc::new(AtomicUsize::new(0)),
            written_in_flight: 0,
            first_seq: 0,
            close_after_replies: false,
            peer_closed: false,
            lingering: None,
            read_paused: false,
            over_budget: false,
            barriers_waiting: 0,
            held: None,
            exec_locals: Vec::new(),
            forwards_in_flight: 0,
            forwarded_to: 0,
        }
    }

    /// Whether this connection has requests in flight to a node other than
    /// `target`. One sent to `target` now could take effect before them: a
    /// node that stopped leading refuses them, and the follower routes them
    /// again, after it (`SET k 1`, `SET k 2` would leave 1), and a read
    /// could miss a write sent before it.
    pub fn forwards_elsewhere(&self, target: NodeId) -> bool {
        self.forwards_in_flight > 0 && self.forwarded_to != target
    }

    /// Slot `seq` was forwarded to `to` with forwarding id `id`.
    pub fn set_forwarded(&mut self, seq: u64, write: bool, id: u64, to: NodeId) {
        debug_assert!(!self.forwards_elsewhere(to), "forwarded to two nodes");
        self.forwarded_to = to;
        self.set_pending(
            seq,
            Pending::InFlight {
                write,
                forward: Some(id),
            },
        );
    }

    /// Opens a reply slot for the next request; returns its sequence number.
    pub fn open_slot(&mut self, pending: Pending, kind: Kind) -> u64 {
        self.forwards_in_flight += usize::from(is_forwarded(pending));
        if kind.holds_back() {
            self.barriers_waiting += 1;
        }
        self.slots
            .push_back(Slot::Waiting(pending, self.protocol, kind, 0));
        self.slot_bytes.push_back(0);
        self.first_seq + self.slots.len() as u64 - 1
    }

    /// Slot `seq`'s reply is expected to hold about `bytes` (the values a
    /// read names, as this node holds them now): counted as output from
    /// now on, so that the requests in flight cannot together answer far
    /// more than [`MAX_PENDING_OUTPUT`].
    pub fn expect_reply_bytes(&mut self, seq: u64, bytes: usize) {
        let waiting = matches!(self.slot_mut(seq), Some(Slot::Waiting(..)));
        if let Some(counted) = self.slot_bytes_mut(seq) {
            let before = std::mem::replace(counted, bytes);
            self.unsent_reply_bytes = self.unsent_reply_bytes - before + bytes;
            if waiting {
                self.count_unanswered(before, bytes);
            }
        }
    }

    /// Counts this client's unanswered requests' expected reply bytes in
    /// `total` too, the sum over all of a node's clients.
    pub fn count_unanswered_in(&mut self, total: Arc<AtomicUsize>) {
        self.unanswered_total
            .fetch_sub(self.unanswered_bytes, Ordering::Relaxed);
        total.fetch_add(self.unanswered_bytes, Ordering::Relaxed);
        self.unanswered_total = total;
    }

    fn count_unanswered(&mut self, before: usize, after: usize) {
        self.unanswered_bytes = self.unanswered_bytes - before + after;
        // One thread, the loop's, uses these: nothing to order. Most
        // requests expect no reply bytes worth counting (a SET's `+OK`
        // counts 0): no atomic operation for them.
        if after > before {
            self.unanswered_total
                .fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.unanswered_total
                .fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Slot `seq`'s request, unanswered, may write values of `bytes` in
    /// all: until it is answered, the reads after it may find them.
    pub fn expect_written_bytes(&mut self, seq: u64, bytes: usize) {
        if let Some(Slot::Waiting(.., written)) = self.slot_mut(seq) {
            let before = std::mem::replace(written, bytes);
            self.written_in_flight = self.written_in_flight - before + bytes;
        }
    }

    /// See [`Client::expect_written_bytes`].
    pub fn written_in_flight(&self) -> usize {
        self.written_in_flight
    }

    /// The sequence number of the oldest reply still to be written.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The sequence number the next request's slot will get.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.slots.len() as u64
    }

    fn slot_bytes_mut(&mut self, seq: u64) -> Option<&mut usize> {
        let offset = seq.checked_sub(self.first_seq)?;
        self.slot_bytes.get_mut(usize::try_from(offset).ok()?)
    }

    /// The connection commands queued in the EXEC of slot `seq`, to run when
    /// its reply comes.
    pub fn await_locals(&mut self, seq: u64, locals: Vec<LocalCommand>) {
        self.exec_locals.push((seq, locals));
    }

    /// The connection commands waiting for the EXEC of slot `seq`, if any.
    pub fn take_locals(&mut self, seq: u64) -> Option<Vec<LocalCommand>> {
        let found = self.exec_locals.iter().position(|(at, _)| *at == seq)?;
        Some(self.exec_locals.swap_remove(found).1)
    }

    /// Whether `argv`, this connection's next request, must be held until
    /// replies before it come: anything but a plain read behind unanswered
    /// barriers (not reads), and a report of this node's data (DBSIZE, INFO)
    /// or a SHUTDOWN behind any unanswered request. A write's reply comes
    /// once it is applied here or, through a follower, by the leader, whose
    /// commit reaches this node ahead of the reply (unless this node is
    /// still catching up); held until then, DBSIZE counts the writes sent
    /// before it, and none sent after it, which are not read until it is
    /// answered.
    pub fn must_wait(&self, argv: &[Vec<u8>]) -> bool {
        let in_multi = self.multi.is_some();
        if self.barriers_waiting > 0 && !only_reads(argv, in_multi) {
            return true;
        }
        let reports = match &self.multi {
            None => reports_data(argv) || is_shutdown(argv),
            // An EXEC runs the connection commands queued with it.
            Some(multi) => {
                argv.first()
                    .is_some_and(|name| name.eq_ignore_ascii_case(b"exec"))
                    && multi
                        .queued
                        .iter()
                        .any(|queued| matches!(queued, Queued::Local(words) if reports_data(words)))
            }
        };
        reports && self.slots.iter().any(|s| matches!(s, Slot::Waiting(..)))
    }

    pub fn hold(&mut self, argv: Vec<Vec<u8>>) {
        debug_assert!(self.held.is_none(), "a second request held");
        self.held = Some(argv);
    }

    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// The held request, once it need not wait any more.
    pub fn release_held(&mut self) -> Option<Vec<Vec<u8>>> {
        let held = self.held.take()?;
        if self.must_wait(&held) {
            self.held = Some(held);
            return None;
        }
        Some(held)
    }

    /// Opens a slot that is already answered.
    pub fn reply_now(&mut self, reply: Reply) {
        let bytes = reply_bytes(&reply);
        self.slots
            .push_back(Slot::Done(reply, self.protocol, Kind::Other));
        self.slot_bytes.push_back(bytes);
        self.unsent_reply_bytes += bytes;
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let offset = seq.checked_sub(self.first_seq)?;
        self.slots.get_mut(usize::try_from(offset).ok()?)
    }

    /// The forwarding ids of this connection's requests still waiting for
    /// the node they went to.
    pub fn forward_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots.iter().filter_map(|slot| match slot {
            Slot::Waiting(
                Pending::InFlight {
                    forward: Some(id), ..
                },
                ..,
            ) => Some(*id),
            _ => None,
        })
    }

    /// The state of a slot still waiting for its reply.
    pub fn pending(&self, seq: u64) -> Option<Pending> {
        let offset = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        match self.slots.get(offset) {
            Some(Slot::Waiting(pending, ..)) => Some(*pending),
            _ => None,
        }
    }

    pub fn set_pending(&mut self, seq: u64, pending: Pending) {
        if let Some(Slot::Waiting(slot_pending, ..)) = self.slot_mut(seq) {
            let was_forwarded = is_forwarded(*slot_pending);
            *slot_pending = pending;
            self.forwards_in_flight += usize::from(is_forwarded(pending));
            self.forwards_in_flight -= usize::from(was_forwarded);
        }
    }

    /// Answers a waiting slot; false if it was already answered (a late
    /// completion after a timeout) or is gone.
    pub fn complete(&mut self, seq: u64, reply: Reply) -> bool {
        match self.slot_mut(seq) {
            Some(slot @ Slot::Waiting(..)) => {
                let (pending, protocol, kind, written) = match slot {
                    Slot::Waiting(pending, protocol, kind, written) => {
                        (*pending, *protocol, *kind, *written)
                    }
                    Slot::Done(_, protocol, _) => (Pending::Parked, *protocol, Kind::Other, 0),
                };
                let bytes = reply_bytes(&reply);
                *slot = Slot::Done(reply, protocol, kind);
                let expected = self.slot_bytes_mut(seq).map_or(0, |counted| *counted);
                self.count_unanswered(expected, 0);
                self.written_in_flight -= written;
                self.expect_reply_bytes(seq, bytes);
                if kind.holds_back() {
                    self.barriers_waiting -= 1;
                }
                self.forwards_in_flight -= usize::from(is_forwarded(pending));
                true
            }
            _ => false,
        }
    }

    /// Encodes the answered replies at the front, in order, into the output buffer.
    pub fn encode_replies(&mut self) {
        while let Some(Slot::Done(..)) = self.slots.front() {
            if let Some(Slot::Done(reply, protocol, _)) = self.slots.pop_front() {
                resp::encode_reply(&reply, protocol, self.conn.output());
                self.first_seq += 1;
                self.unsent_reply_bytes -= self.slot_bytes.pop_front().unwrap_or(0);
            }
        }
    }

    pub fn is_backlogged(&self) -> bool {
        self.slots.len() >= MAX_PENDING_REPLIES || self.has_output_backlog()
    }

    /// The bytes of replies not yet encoded, and for requests not yet
    /// answered what their replies are expected to hold.
    pub fn unsent_reply_bytes(&self) -> usize {
        self.unsent_reply_bytes
    }

    /// The replies unsent, or expected, reach [`MAX_PENDING_OUTPUT`].
    pub fn has_output_backlog(&self) -> bool {
        self.conn.pending_output() + self.unsent_reply_bytes >= MAX_PENDING_OUTPUT
    }

    /// Whether any request of this connection still waits for its reply
    /// to be answered or written: a request read now would be pipelined.
    pub fn awaits_replies(&self) -> bool {
        !self.slots.is_empty()
    }

    /// Whether the connection can be dropped now: asked to close and nothing left to say.
    pub fn finished(&self) -> bool {
        self.close_after_replies
            && self.held.is_none()
            && self.slots.is_empty()
            && self.conn.pending_output() == 0
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.count_unanswered(self.unanswered_bytes, 0);
    }
}

/// About the bytes `reply` takes once encoded: its strings' bytes, and a
/// few more for each element (exact enough for backpressure).
fn reply_bytes(reply: &Reply) -> usize {
    const OVERHEAD: usize = 16;
    OVERHEAD
        + match reply {
            Reply::Ok | Reply::Nil | Reply::Integer(_) => 0,
            Reply::Status(text) | Reply::Error(text) => text.len(),
            Reply::Bulk(bytes) => bytes.len(),
            Reply::Array(items) => items.iter().map(reply_bytes).sum(),
            Reply::Map(pairs) => pairs
                .iter()
                .map(|(key, value)| reply_bytes(key) + reply_bytes(value))
                .sum(),
        }
}

#[path = "clients_order.rs"]
mod order;

#[cfg(test)]
#[path = "clients_tests.rs"]
mod tests;
