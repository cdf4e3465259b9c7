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
//! The place holds only while the entry there is the one that was there when
//! the read arrived (by Log Matching, so is every entry below it). A new
//! leader may replace it, and may put there a write the read's connection
//! sent after the read through the new leader. So a read whose place was
//! replaced, and every read not yet answered when this node stops leading,
//! is dropped, as an unconfirmed read is: never answered from that state.
//!
//! It is a file of its own because reads never enter the log: their queues
//! and the places they are evaluated at read best without the write path
//! around them.

use super::{reply_not_committed, Completion, FullRead, Refused, Replica};
use crate::kv::{Command, KvStore, Reply};
use crate::raft::Ready;
use std::collections::VecDeque;

pub(super) struct PendingRead<W> {
    waiter: W,
    command: Command,
    /// Its place in the apply order (see the module docs).
    at_index: u64,
    /// The term of the entry at `at_index` when the read arrived.
    at_term: u64,
    /// The wall clock when it arrived, which it is answered at: the writes
    /// above its place are stamped at that time or later, so a read
    /// evaluated at a later clock could find a key gone that a write after
    /// it then finds alive.
    at_time: u64,
    confirmed: bool,
    /// The answer as of `at_index`, once it is applied.
    answer: Option<Answer>,
}

pub(super) enum Answer {
    Reply(Reply),
    /// A read of many keys, answered by the caller from this view (see
    /// [`Replica::answer_full_reads_elsewhere`]). Boxed: reads of one key
    /// are most reads, and a map inline would double what each one moves.
    View(Box<(KvStore, u64)>),
}

/// The reads waiting, by context: contexts are handed out one after the
/// other and most reads are answered in that order, so a queue from the
/// oldest waiting one finds each without a search and moves none.
pub(super) struct ReadsByCtx<W> {
    first_ctx: u64,
    /// `None` once answered or dropped.
    reads: VecDeque<Option<PendingRead<W>>>,
    waiting: usize,
}

impl<W> ReadsByCtx<W> {
    pub(super) fn new(first_ctx: u64) -> ReadsByCtx<W> {
        ReadsByCtx {
            first_ctx,
            reads: VecDeque::new(),
            waiting: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.waiting
    }

    /// Adds the read of `ctx`, the next context after the last one added.
    fn push(&mut self, ctx: u64, read: PendingRead<W>) {
        if self.reads.is_empty() {
            self.first_ctx = ctx;
        }
        debug_assert_eq!(ctx, self.first_ctx + self.reads.len() as u64);
        self.reads.push_back(Some(read));
        self.waiting += 1;
    }

    fn slot(&mut self, ctx: u64) -> Option<&mut Option<PendingRead<W>>> {
        let offset = usize::try_from(ctx.checked_sub(self.first_ctx)?).ok()?;
        self.reads.get_mut(offset)
    }

    fn get_mut(&mut self, ctx: u64) -> Option<&mut PendingRead<W>> {
        self.slot(ctx)?.as_mut()
    }

    fn remove(&mut self, ctx: u64) -> Option<PendingRead<W>> {
        let read = self.slot(ctx)?.take()?;
        self.waiting -= 1;
        while let Some(None) = self.reads.front() {
            self.reads.pop_front();
            self.first_ctx += 1;
        }
        Some(read)
    }

    fn first(&self) -> Option<u64> {
        let offset = self.reads.iter().position(Option::is_some)?;
        Some(self.first_ctx + offset as u64)
    }
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
        let at_term = self.node.last_term();
        let at_time = self.time();
        // With nothing left to apply, its place is the state as it is now:
        // the usual case for reads that no write races.
        let answer = (at_index == self.applied_index)
            .then(|| evaluate(&self.kv, &command, at_time, self.full_reads.is_some()));
        if answer.is_none() {
            self.reads_to_evaluate.insert((at_index, ctx));
        }
        self.reads.push(
            ctx,
            PendingRead {
                waiter,
                command,
                at_index,
                at_term,
                at_time,
                confirmed: false,
                answer,
            },
        );
        Ok(())
    }

    /// Drops the reads the core will never confirm, and once this node no
    /// longer leads every read not yet answered (see the module docs);
    /// answers the confirmed ones already evaluated. The others are answered
    /// when their place is applied (see [`Replica::evaluate_due_reads`]).
    pub(super) fn settle_reads(&mut self, ready: &mut Ready, done: &mut Vec<Completion<W>>) {
        for ctx in ready.dropped_reads.drain(..) {
            self.drop_read(ctx, done);
        }
        for state in ready.read_states.drain(..) {
            // The round's index is not the read's place: that is at or above
            // it (see the module docs).
            let Some(read) = self.reads.get_mut(state.ctx) else {
                continue;
            };
            if read.answer.is_none() {
                read.confirmed = true;
            } else if let Some(PendingRead {
                waiter,
                command,
                answer: Some(answer),
                ..
            }) = self.reads.remove(state.ctx)
            {
                self.deliver(waiter, command, answer, done);
            }
        }
        if !self.is_leader() {
            while let Some(ctx) = self.reads.first() {
                self.drop_read(ctx, done);
            }
        }
    }

    /// A read that will not be answered here: kept for the caller to route
    /// again, or answered `-TRYAGAIN` (see [`Replica::keep_dropped_reads`]).
    fn drop_read(&mut self, ctx: u64, done: &mut Vec<Completion<W>>) {
        let Some(read) = self.reads.remove(ctx) else {
            return;
        };
        self.reads_to_evaluate.remove(&(read.at_index, ctx));
        match self.dropped_reads.as_mut() {
            Some(kept) => kept.push((read.waiter, read.command)),
            None => done.push(Completion {
                waiter: read.waiter,
                reply: reply_not_committed(),
            }),
        }
    }

    /// The lowest place in the apply order a read waits to be evaluated at.
    pub(super) fn next_read_place(&self) -> u64 {
        self.reads_to_evaluate
            .first()
            .map_or(u64::MAX, |&(index, _)| index)
    }

    /// Evaluates the reads whose place is the applied index, answering the
    /// confirmed ones. A read whose place now holds another entry, or was
    /// skipped by an installed snapshot (that state is gone), is dropped.
    pub(super) fn evaluate_due_reads(&mut self, done: &mut Vec<Completion<W>>) {
        while let Some(&(at_index, ctx)) = self.reads_to_evaluate.first() {
            if at_index > self.applied_index {
                break;
            }
            self.reads_to_evaluate.pop_first();
            let elsewhere = self.full_reads.is_some();
            let Some(read) = self.reads.get_mut(ctx) else {
                continue;
            };
            if at_index < self.applied_index || read.at_term != self.applied_term {
                self.drop_read(ctx, done);
                continue;
            }
            let answer = evaluate(&self.kv, &read.command, read.at_time, elsewhere);
            if !read.confirmed {
                read.answer = Some(answer);
            } else if let Some(read) = self.reads.remove(ctx) {
                self.deliver(read.waiter, read.command, answer, done);
            }
        }
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
            Answer::View(view) => match (self.full_reads.as_mut(), *view) {
                (Some(full_reads), (view, now)) => full_reads.push(FullRead {
                    waiter,
                    command,
                    view,
                    now,
                }),
                (None, (view, now)) => done.push(Completion {
                    waiter,
                    reply: view.read_at(&command, now),
                }),
            },
        }
    }
}

/// The answer to `command` from `kv` as it stands, at time `now`; a read of
/// many keys gets a view instead when they are answered `elsewhere`.
fn evaluate(kv: &KvStore, command: &Command, now: u64, elsewhere: bool) -> Answer {
    if elsewhere && command.reads_many_keys() {
        return Answer::View(Box::new((kv.clone(), now)));
    }
    Answer::Reply(kv.read_at(command, now))
}
