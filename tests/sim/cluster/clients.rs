//! The simulated clients: ops invoked with the history, offered to the node
//! each client believes leads, and their replies checked against the history
//! and the read-index rule; an op that takes too long is abandoned.

use super::{Op, OpId, OpKind, Sim, KEYS, OP_TIMEOUT_STEPS};
use crate::checker::{check_read_index, Outcome, Violation};
use raftkv::kv::{Command, Reply};
use raftkv::raft::NodeId;
use raftkv::replica::Completion;

impl Sim {
    pub(super) fn run_clients(&mut self) {
        if self.now >= self.reads_only_until && self.rng.chance(1, 400) {
            self.reads_only_until = self.now + self.rng.range(50, 250);
        }
        for c in 0..self.clients.len() {
            let timed_out = self.clients[c].0.filter(|op| {
                self.ops
                    .get(op)
                    .is_some_and(|o| self.now - o.invoked > OP_TIMEOUT_STEPS)
            });
            if let Some(op) = timed_out {
                self.abandon(op);
            }
            match self.clients[c].0 {
                Some(op) if self.ops.get(&op).is_some_and(|o| o.node.is_none()) => self.submit(op),
                Some(_) => {}
                None if self.rng.chance(1, 3) => {
                    let op = self.new_op(c);
                    self.submit(op);
                }
                None => {}
            }
        }
    }

    fn new_op(&mut self, client: usize) -> OpId {
        let key = format!("k{}", self.rng.range(0, KEYS)).into_bytes();
        let id = self.next_op;
        self.next_op += 1;
        let kind = if self.rng.chance(1, 5) && self.now >= self.reads_only_until {
            OpKind::Timed {
                command: self.timed_command(),
            }
        } else if self.rng.chance(1, 2) && self.now >= self.reads_only_until {
            let value = format!("v{}", id).into_bytes();
            self.history.invoke_write(&key, &value, self.now);
            OpKind::Write { key, value }
        } else {
            OpKind::Read { key }
        };
        self.start_op(id, kind, client)
    }

    /// Records op `id` as invoked now by `client`, its one op in flight.
    fn start_op(&mut self, id: OpId, kind: OpKind, client: usize) -> OpId {
        self.ops.insert(
            id,
            Op {
                kind,
                client,
                invoked: self.now,
                committed_before: self.checker.max_applied(),
                node: None,
                place: None,
            },
        );
        self.clients[client].0 = Some(id);
        id
    }

    /// A write that sets, keeps, moves or removes a timeout, or meets an
    /// expired key, on one of four keys of its own. Times are a few ticks.
    fn timed_command(&mut self) -> Command {
        let key = format!("t{}", self.rng.range(0, 4));
        let other = format!("t{}", self.rng.range(0, 4));
        let ms = self.rng.range(1, 300).to_string();
        let words: Vec<&str> = match self.rng.range(0, 8) {
            0 => vec!["SET", &key, "v", "PX", &ms],
            1 => vec!["SET", &key, "w", "KEEPTTL"],
            2 => vec!["PEXPIRE", &key, &ms],
            3 => vec!["PEXPIRE", &key, &ms, "GT"],
            4 => vec!["INCR", &key],
            5 => vec!["PERSIST", &key],
            6 => vec!["RENAME", &key, &other],
            _ => vec!["APPEND", &key, "x"],
        };
        let argv: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
        match Command::parse(&argv) {
            Ok(command) => command,
            Err(error) => panic!("{words:?} does not parse: {error}"),
        }
    }

    /// Offers an op to the node its client believes leads; on refusal the
    /// client follows the hint (or picks another node) and retries next step.
    pub fn submit(&mut self, op: OpId) {
        let Some(o) = self.ops.get(&op) else { return };
        let client = o.client;
        let target = self.clients[client].1;
        let kind = o.kind.clone();
        let Some(replica) = self.nodes[target as usize - 1].replica.as_mut() else {
            self.clients[client].1 = self.rng.range(1, self.nodes.len() as u64 + 1);
            return;
        };
        let result = match kind {
            OpKind::Write { key, value } => replica.propose(Command::Set(key, value), op),
            OpKind::Read { key } => replica.read(Command::Get(key), op),
            OpKind::Timed { command } => replica.propose(command, op),
        };
        let last_index = replica.node().last_index();
        if self.opts.trace {
            println!(
                "[{:5}] submit op {} to node {}: {:?}",
                self.now,
                op,
                target,
                result.as_ref().map_err(|r| r.error)
            );
        }
        match result {
            Ok(()) => {
                if let Some(o) = self.ops.get_mut(&op) {
                    o.node = Some(target);
                    if matches!(o.kind, OpKind::Read { .. }) {
                        o.place = Some(last_index);
                    }
                }
            }
            Err(refused) => {
                let hint = match refused.error {
                    raftkv::raft::ProposeError::NotLeader { leader } if leader != 0 => leader,
                    _ => self.rng.range(1, self.nodes.len() as u64 + 1),
                };
                self.clients[client].1 = hint;
            }
        }
    }

    /// `applied` is the answering node's applied index once its Readies are handled.
    pub(super) fn complete(
        &mut self,
        node: NodeId,
        applied: u64,
        completion: Completion<OpId>,
    ) -> Result<(), Violation> {
        if self.opts.trace {
            println!(
                "[{:5}] complete op {}: {:?}",
                self.now, completion.waiter, completion.reply
            );
        }
        let Some(op) = self.ops.remove(&completion.waiter) else {
            return Ok(());
        };
        self.clients[op.client].0 = None;
        if matches!(op.kind, OpKind::Timed { .. }) {
            return Ok(());
        }
        if matches!(completion.reply, Reply::Bulk(_) | Reply::Nil) {
            let place = op.place.unwrap_or(applied);
            if place > applied {
                return Err(format!(
                    "node {} answered a read from index {} before applying it (applied {})",
                    node, place, applied
                ));
            }
            check_read_index(node, op.committed_before, place)?;
        }
        match (op.kind, completion.reply) {
            (OpKind::Write { value, .. }, Reply::Ok) => {
                let Some(&index) = self.history.applied_index.get(&value) else {
                    return Err(format!(
                        "write {:?} acknowledged before it was applied",
                        value
                    ));
                };
                let term = self.checker.applied_at(index).unwrap_or(0);
                self.checker.observe_ack(index, term);
                self.acks += 1;
                self.history
                    .complete_write(&value, self.now, Outcome::Acked(index))
            }
            (OpKind::Write { value, .. }, Reply::Error(e)) if e.starts_with("TRYAGAIN") => self
                .history
                .complete_write(&value, self.now, Outcome::Refused),
            // Decided inside a snapshot this node installed: may or may not be applied.
            (OpKind::Write { value, .. }, Reply::Error(e)) if e.starts_with("TIMEOUT") => self
                .history
                .complete_write(&value, self.now, Outcome::Unknown),
            (OpKind::Read { key }, Reply::Bulk(value)) => {
                self.history
                    .check_read(&key, op.invoked, self.now, Some(&value))
            }
            (OpKind::Read { key }, Reply::Nil) => {
                self.history.check_read(&key, op.invoked, self.now, None)
            }
            (OpKind::Read { .. }, Reply::Error(e)) if e.starts_with("TRYAGAIN") => Ok(()),
            (kind, reply) => Err(format!("{:?} answered {:?}", kind, reply)),
        }
    }

    /// The client gives up on an op: a write's outcome becomes unknown.
    pub(super) fn abandon(&mut self, op: OpId) {
        if let Some(o) = self.ops.remove(&op) {
            self.clients[o.client].0 = None;
            if let OpKind::Write { value, .. } = o.kind {
                let _ = self
                    .history
                    .complete_write(&value, self.now, Outcome::Unknown);
            }
        }
    }

    /// Submits one write from a fresh client slot and reports when it is acknowledged.
    pub fn liveness_write(&mut self) -> OpId {
        let client = 0;
        if let Some(op) = self.clients[client].0 {
            self.abandon(op);
        }
        let key = b"liveness".to_vec();
        let id = self.next_op;
        self.next_op += 1;
        let value = format!("v{}", id).into_bytes();
        self.history.invoke_write(&key, &value, self.now);
        self.start_op(id, OpKind::Write { key, value }, client)
    }

    pub fn is_acked(&self, value_op: OpId) -> bool {
        let value = format!("v{}", value_op).into_bytes();
        matches!(
            self.history.writes.get(&value).map(|w| w.outcome),
            Some(Outcome::Acked(_))
        )
    }
}
