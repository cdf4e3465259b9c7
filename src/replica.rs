//! IO-free glue between the Raft core, the key-value state machine and the
//! durable log: it turns client commands into proposals and reads, handles
//! every `Ready` batch in the one legal order, and says which waiting request
//! got which reply.
//!
//! The shell (`server/`) and the simulator (`tests/sim`) both drive a
//! [`Replica`], so the ordering rules below are exercised by both.

use crate::kv::{Command, KvStore, Reply};
use crate::raft::Entry;
use crate::raft::{
    EntryKind, HardState, Message, Node, ProposeError, Ready, Role, SoftState, Status,
};
use crate::storage::StorageError;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Where entries and the hard state go. `append` and `set_hard_state` may
/// buffer; only after `sync` returns may anything that promises them be sent.
pub trait Durable {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Durable when it returns (the stable file is replaced atomically).
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError>;
    fn sync(&mut self) -> Result<(), StorageError>;
}

/// Where messages to peers go.
pub trait Transport {
    /// Queues a message; it may be written out at once or on `flush`.
    fn send(&mut self, message: Message);
    /// Pushes queued messages towards the network. Called before a sync, so a
    /// leader's AppendEntries travel while it writes its own copy.
    fn flush(&mut self);
}

/// A fatal error: the node must stop (a sync that failed cannot be retried
/// safely, and a committed entry that does not decode means a corrupt log).
#[derive(Debug)]
pub enum ReplicaError {
    Storage(StorageError),
    BadEntry { index: u64, reason: String },
}

impl fmt::Display for ReplicaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaError::Storage(err) => write!(f, "storage failure: {}", err),
            ReplicaError::BadEntry { index, reason } => {
                write!(f, "committed entry {} does not decode: {}", index, reason)
            }
        }
    }
}

impl std::error::Error for ReplicaError {}

impl From<StorageError> for ReplicaError {
    fn from(err: StorageError) -> Self {
        ReplicaError::Storage(err)
    }
}

/// A reply for a request that was waiting on the log or a read round.
#[derive(Debug, PartialEq, Eq)]
pub struct Completion<W> {
    pub waiter: W,
    pub reply: Reply,
}

/// What one call of [`Replica::handle_ready`] observed, for logging and INFO.
#[derive(Debug, Default)]
pub struct ReadyOutcome {
    /// The last role/leader/term change seen, if any.
    pub soft_state: Option<SoftState>,
    pub entries_applied: u64,
}

/// The reply given when a write can no longer be committed: its log slot was
/// taken by another leader's entry, so it was not and will not be applied.
pub fn reply_not_committed() -> Reply {
    Reply::error("TRYAGAIN no leader")
}

/// A request the core would not take, handed back untouched.
#[derive(Debug)]
pub struct Refused<W> {
    pub error: ProposeError,
    pub command: Command,
    pub waiter: W,
}

struct PendingWrite<W> {
    term: u64,
    waiter: W,
    /// Kept so the leader applies its own proposal without decoding it again.
    command: Option<Command>,
}

struct PendingRead<W> {
    waiter: W,
    command: Command,
    /// The last log index when the read arrived: a read is answered only after
    /// every write proposed before it is applied, so a client that pipelines
    /// SET then GET reads its own write (as Redis users expect), not only a
    /// state as of the read index.
    after_index: u64,
}

pub struct Replica<W> {
    node: Node,
    kv: KvStore,
    /// Local proposals by (index, term), waiting for their index to be applied.
    /// A node that led an earlier term may still hold proposals of that term at
    /// indexes above its current ones, so this is not a queue.
    writes: BTreeMap<(u64, u64), PendingWrite<W>>,
    /// Reads waiting for their ReadIndex round to be confirmed, by context.
    reads_unconfirmed: BTreeMap<u64, PendingRead<W>>,
    /// Confirmed reads waiting for the applied index to reach theirs.
    reads_confirmed: VecDeque<(u64, PendingRead<W>)>,
    next_read_ctx: u64,
    applied_index: u64,
    payload_buf: Vec<u8>,
}

impl<W> Replica<W> {
    /// Joins a core restarted from durable state with the state machine that
    /// corresponds to its snapshot (empty when there is none).
    pub fn new(node: Node, kv: KvStore) -> Replica<W> {
        let applied_index = node.status().applied_index;
        Replica {
            node,
            kv,
            writes: BTreeMap::new(),
            reads_unconfirmed: BTreeMap::new(),
            reads_confirmed: VecDeque::new(),
            next_read_ctx: 1,
            applied_index,
            payload_buf: Vec::new(),
        }
    }

    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The core itself, for what this glue does not wrap (membership
    /// changes, leadership transfer).
    pub fn node_mut(&mut self) -> &mut Node {
        &mut self.node
    }

    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    pub fn status(&self) -> Status {
        self.node.status()
    }

    pub fn is_leader(&self) -> bool {
        self.node.role() == Role::Leader
    }

    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Requests waiting on the log or a read round.
    pub fn pending(&self) -> usize {
        self.writes.len() + self.reads_unconfirmed.len() + self.reads_confirmed.len()
    }

    pub fn tick(&mut self) {
        self.node.tick();
    }

    pub fn step(&mut self, message: Message) {
        self.node.step(message);
    }

    pub fn report_unreachable(&mut self, peer: crate::raft::NodeId) {
        self.node.report_unreachable(peer);
    }

    /// Proposes a write (or a MULTI/EXEC transaction). On `Err` nothing was
    /// appended and the request comes back, so the caller may forward or park it.
    pub fn propose(&mut self, command: Command, waiter: W) -> Result<(), Refused<W>> {
        self.payload_buf.clear();
        command.encode(&mut self.payload_buf);
        let (index, term) = match self.node.propose(self.payload_buf.clone()) {
            Ok(assigned) => assigned,
            Err(error) => {
                return Err(Refused {
                    error,
                    command,
                    waiter,
                })
            }
        };
        self.writes.insert(
            (index, term),
            PendingWrite {
                term,
                waiter,
                command: Some(command),
            },
        );
        Ok(())
    }

    /// Starts a linearizable read; it is answered after a ReadIndex round
    /// confirms leadership and the state machine has caught up with it.
    pub fn read(&mut self, command: Command, waiter: W) -> Result<(), Refused<W>> {
        let ctx = self.next_read_ctx;
        if let Err(error) = self.node.read_index(ctx) {
            return Err(Refused {
                error,
                command,
                waiter,
            });
        }
        self.next_read_ctx += 1;
        let after_index = self.node.last_index();
        self.reads_unconfirmed.insert(
            ctx,
            PendingRead {
                waiter,
                command,
                after_index,
            },
        );
        Ok(())
    }

    /// Handles every batch the core has ready, in the order the persistence
    /// contract requires, and pushes the replies that became known onto `done`.
    pub fn handle_ready<D: Durable, T: Transport>(
        &mut self,
        durable: &mut D,
        transport: &mut T,
        done: &mut Vec<Completion<W>>,
    ) -> Result<ReadyOutcome, ReplicaError> {
        let mut outcome = ReadyOutcome::default();
        while self.node.has_ready() {
            let ready = self.node.ready();
            self.handle_one(ready, durable, transport, done, &mut outcome)?;
            self.node.advance();
        }
        Ok(outcome)
    }

    fn handle_one<D: Durable, T: Transport>(
        &mut self,
        mut ready: Ready,
        durable: &mut D,
        transport: &mut T,
        done: &mut Vec<Completion<W>>,
        outcome: &mut ReadyOutcome,
    ) -> Result<(), ReplicaError> {
        if let Some(soft) = ready.soft_state {
            outcome.soft_state = Some(soft);
        }
        // 1. Persist. The stable file is durable on return; entries wait for the sync.
        if !ready.entries.is_empty() {
            durable.append(&ready.entries)?;
        }
        if let Some(hard_state) = ready.hard_state {
            durable.set_hard_state(hard_state)?;
        }
        // 2. The leader's AppendEntries leave before its own sync (thesis §10.2.1):
        //    followers write their copies while we write ours.
        for message in ready.send_now.drain(..) {
            transport.send(message);
        }
        transport.flush();
        // 3. One sync for everything appended in this batch (group commit).
        if ready.must_sync() {
            durable.sync()?;
        }
        // 4. Votes and acknowledgements promise what is now on disk.
        for message in ready.send_after_sync.drain(..) {
            transport.send(message);
        }
        transport.flush();
        // 5. Apply, answering the proposals whose entries these are.
        for entry in ready.committed.drain(..) {
            self.apply(entry, done)?;
            outcome.entries_applied += 1;
        }
        // 6. Reads: confirmed ones wait for the applied index; dropped ones never ran.
        for ctx in ready.dropped_reads.drain(..) {
            if let Some(read) = self.reads_unconfirmed.remove(&ctx) {
                done.push(Completion {
                    waiter: read.waiter,
                    reply: reply_not_committed(),
                });
            }
        }
        for state in ready.read_states.drain(..) {
            if let Some(read) = self.reads_unconfirmed.remove(&state.ctx) {
                // Raising an index only makes a read wait longer, which is always
                // safe; it keeps the queue sorted so answering looks at its front.
                let floor = self.reads_confirmed.back().map_or(0, |(index, _)| *index);
                let index = state.index.max(read.after_index).max(floor);
                self.reads_confirmed.push_back((index, read));
            }
        }
        self.answer_reads(done);
        Ok(())
    }

    fn apply(&mut self, entry: Entry, done: &mut Vec<Completion<W>>) -> Result<(), ReplicaError> {
        debug_assert_eq!(
            entry.index,
            self.applied_index + 1,
            "entries applied out of order"
        );
        self.applied_index = entry.index;
        // Every proposal made at this index is decided now: the one whose term
        // matches is applied; any other can never be (its slot is taken for good).
        let mut ours = None;
        let decided: Vec<(u64, u64)> = self
            .writes
            .range((entry.index, 0)..=(entry.index, u64::MAX))
            .map(|(key, _)| *key)
            .collect();
        for key in decided {
            let Some(write) = self.writes.remove(&key) else {
                continue;
            };
            if write.term == entry.term {
                ours = Some(write);
            } else {
                done.push(Completion {
                    waiter: write.waiter,
                    reply: reply_not_committed(),
                });
            }
        }
        let reply = match entry.kind {
            EntryKind::Normal => {
                let command = ours.as_mut().and_then(|w| w.command.take());
                let command = match command {
                    Some(command) => command,
                    None => Command::decode(&entry.data).map_err(|err| ReplicaError::BadEntry {
                        index: entry.index,
                        reason: err.to_string(),
                    })?,
                };
                self.kv.apply_owned(command)
            }
            EntryKind::Noop | EntryKind::ConfChange => Reply::Ok,
        };
        if let Some(write) = ours {
            done.push(Completion {
                waiter: write.waiter,
                reply,
            });
        }
        Ok(())
    }

    fn answer_reads(&mut self, done: &mut Vec<Completion<W>>) {
        while self
            .reads_confirmed
            .front()
            .is_some_and(|(index, _)| *index <= self.applied_index)
        {
            if let Some((_, read)) = self.reads_confirmed.pop_front() {
                let reply = self.kv.read(&read.command);
                done.push(Completion {
                    waiter: read.waiter,
                    reply,
                });
            }
        }
    }
}
