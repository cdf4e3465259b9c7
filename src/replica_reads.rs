//! Linearizable reads: each waits for a ReadIndex round to confirm that this
//! node still leads, then for the state machine to reach the confirmed index
//! and every write proposed before the read, and is answered here or handed
//! to the caller. Reads dropped when this node stops leading are answered
//! `-TRYAGAIN` or kept for the caller to route again.
//!
//! It is a file of its own because reads never enter the log: their two
//! queues and the rule that keeps the confirmed one sorted read best without
//! the write path around them.

use super::{reply_not_committed, Completion, FullRead, Refused, Replica};
use crate::kv::Command;
use crate::raft::Ready;

pub(super) struct PendingRead<W> {
    waiter: W,
    command: Command,
    /// The last log index when the read arrived: a read is answered only after
    /// every write proposed before it is applied, so a client that pipelines
    /// SET then GET reads its own write (as Redis users expect), not only a
    /// state as of the read index.
    after_index: u64,
}

impl<W> Replica<W> {
    /// From now on, reads dropped unconfirmed when this node stops leading are
    /// kept for [`Replica::take_dropped_reads`] rather than answered
    /// `-TRYAGAIN`: a read has no effect, so the caller can route it to the
    /// next leader and a client sees the change of leader as a delay.
    pub fn keep_dropped_reads(&mut self) {
        self.dropped_reads.get_or_insert_with(Vec::new);
    }

    /// The reads dropped since the last call (empty unless
    /// [`Replica::keep_dropped_reads`] was called).
    pub fn take_dropped_reads(&mut self) -> Vec<(W, Command)> {
        self.dropped_reads
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
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

    /// Drops the reads the core will never confirm and queues the confirmed
    /// ones by the index they wait for, then answers those that are due.
    pub(super) fn settle_reads(&mut self, ready: &mut Ready, done: &mut Vec<Completion<W>>) {
        for ctx in ready.dropped_reads.drain(..) {
            if let Some(read) = self.reads_unconfirmed.remove(&ctx) {
                match self.dropped_reads.as_mut() {
                    Some(kept) => kept.push((read.waiter, read.command)),
                    None => done.push(Completion {
                        waiter: read.waiter,
                        reply: reply_not_committed(),
                    }),
                }
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
    }

    fn answer_reads(&mut self, done: &mut Vec<Completion<W>>) {
        let now = self.time();
        while self
            .reads_confirmed
            .front()
            .is_some_and(|(index, _)| *index <= self.applied_index)
        {
            if let Some((_, read)) = self.reads_confirmed.pop_front() {
                if let Some(full_reads) = self
                    .full_reads
                    .as_mut()
                    .filter(|_| read.command.reads_many_keys())
                {
                    full_reads.push(FullRead {
                        waiter: read.waiter,
                        command: read.command,
                        view: self.kv.clone(),
                        now,
                    });
                    continue;
                }
                let reply = self.kv.read_at(&read.command, now);
                done.push(Completion {
                    waiter: read.waiter,
                    reply,
                });
            }
        }
    }
}
