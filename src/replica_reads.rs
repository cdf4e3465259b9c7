//! Linearizable reads: each has a place in the apply order, the last log
//! index when it arrived, and is answered from the state machine exactly as
//! it stands once that entry is applied, after a ReadIndex round has
//! confirmed that this node still leads. Reads dropped when this node stops
//! leading are answered `-TRYAGAIN` or kept for the caller to route again.
//!
//! Why that place: every write acknowledged before the read arrived is at or
//! below it (a leader's log holds every committed entry), so the answer is
//! never stale; every write that arrived after the read is above it, so a
//! client that pipelines `SET k 0`, `GET k`, `SET k 1` reads 0 even when the
//! second write is applied before the round is confirmed. The shell can
//! therefore send a connection's writes on without waiting for the reads
//! before them, and a pipeline of writes and reads costs no commit round per
//! pair. A read evaluated before its round is confirmed keeps its answer
//! until then.
//!
//! It is a file of its own because reads never enter the log: their queues
//! and the places they are evaluated at read best without the write path
//! around them.

use super::{reply_not_committed, Completion, FullRead, Refused, Replica};
use crate::kv::{Command, KvStore, Reply};
use crate::raft::Ready;

pub(super) struct PendingRead<W> {
    waiter: W,
    command: Command,
    /// Its place in the apply order (see the module docs).
    at_index: u64,
    confirmed: bool,
    /// The answer as of `at_index`, once it is applied.
    answer: Option<Answer>,
}

pub(super) enum Answer {
    Reply(Reply),
    /// A read of many keys, answered by the caller from this view (see
    /// [`Replica::answer_full_reads_elsewhere`]).
    View {
        view: KvStore,
        now: u64,
    },
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
    /// confirms leadership, from the state as of its place in the apply order.
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
        let at_index = self.node.last_index();
        // With nothing left to apply, its place is the state as it is now:
        // the usual case for reads that no write races.
        let answer = (at_index == self.applied_index).then(|| self.evaluate(&command));
        if answer.is_none() {
            self.reads_to_evaluate.insert((at_index, ctx));
        }
        self.reads.insert(
            ctx,
            PendingRead {
                waiter,
                command,
                at_index,
                confirmed: false,
                answer,
            },
        );
        Ok(())
    }

    /// Drops the reads the core will never confirm and answers the confirmed
    /// ones already evaluated; the others are answered when their place is
    /// applied (see [`Replica::evaluate_due_reads`]).
    pub(super) fn settle_reads(&mut self, ready: &mut Ready, done: &mut Vec<Completion<W>>) {
        for ctx in ready.dropped_reads.drain(..) {
            if let Some(read) = self.reads.remove(&ctx) {
                self.reads_to_evaluate.remove(&(read.at_index, ctx));
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
            // The round's index is not the read's place: that is at or above
            // it (see the module docs).
            let Some(read) = self.reads.get_mut(&state.ctx) else {
                continue;
            };
            read.confirmed = true;
            if read.answer.is_some() {
                if let Some(PendingRead {
                    waiter,
                    command,
                    answer: Some(answer),
                    ..
                }) = self.reads.remove(&state.ctx)
                {
                    self.deliver(waiter, command, answer, done);
                }
            }
        }
    }

    /// The lowest place in the apply order a read waits to be evaluated at.
    pub(super) fn next_read_place(&self) -> u64 {
        self.reads_to_evaluate
            .first()
            .map_or(u64::MAX, |&(index, _)| index)
    }

    /// Evaluates the reads whose place is the applied index, answering the
    /// confirmed ones. A place below it was skipped by an installed
    /// snapshot: that state is gone, and the read, which changed nothing,
    /// is answered `-TRYAGAIN`.
    pub(super) fn evaluate_due_reads(&mut self, done: &mut Vec<Completion<W>>) {
        while let Some(&(at_index, ctx)) = self.reads_to_evaluate.first() {
            if at_index > self.applied_index {
                break;
            }
            self.reads_to_evaluate.pop_first();
            let answer = if at_index == self.applied_index {
                match self.reads.get(&ctx) {
                    Some(read) => self.evaluate(&read.command),
                    None => continue,
                }
            } else {
                Answer::Reply(reply_not_committed())
            };
            let Some(read) = self.reads.get_mut(&ctx) else {
                continue;
            };
            if !read.confirmed {
                read.answer = Some(answer);
            } else if let Some(read) = self.reads.remove(&ctx) {
                self.deliver(read.waiter, read.command, answer, done);
            }
        }
    }

    fn evaluate(&self, command: &Command) -> Answer {
        let now = self.time();
        if self.full_reads.is_some() && command.reads_many_keys() {
            return Answer::View {
                view: self.kv.clone(),
                now,
            };
        }
        Answer::Reply(self.kv.read_at(command, now))
    }

    fn deliver(
        &mut self,
        waiter: W,
        command: Command,
        answer: Answer,
        done: &mut Vec<Completion<W>>,
    ) {
        match answer {
            Answer::Reply(reply) => done.push(Completion { waiter, reply }),
            Answer::View { view, now } => match self.full_reads.as_mut() {
                Some(full_reads) => full_reads.push(FullRead {
                    waiter,
                    command,
                    view,
                    now,
                }),
                None => done.push(Completion {
                    waiter,
                    reply: view.read_at(&command, now),
                }),
            },
        }
    }
}
