//! What the replica does for the keyspace besides applying entries: the wall
//! clock that a leader stamps writes with and answers reads at, purges of
//! expired keys, and reads of many keys handed to the caller to answer off
//! its event loop.

use super::{Completion, Refused, Replica};
use crate::kv::{Command, KvStore};

/// A confirmed read of many keys (KEYS, SCAN with a large COUNT), with a view of the map
/// at its read point, for the caller to answer off its event loop (see
/// [`Replica::answer_full_reads_elsewhere`]).
pub struct FullRead<W> {
    pub waiter: W,
    pub(super) command: Command,
    /// O(shards) to take; the shards it shares are copied on the map's next
    /// write to them while it lives, as for a snapshot.
    pub(super) view: KvStore,
    /// The time it is answered at.
    pub(super) now: u64,
}

impl<W> FullRead<W> {
    /// The read's reply, as the map stood at its read point.
    pub fn answer(self) -> Completion<W> {
        let reply = self.view.read_at(&self.command, self.now);
        Completion {
            waiter: self.waiter,
            reply,
        }
    }
}

/// How much one purge of expired keys looks at and deletes.
#[derive(Clone, Copy, Debug)]
pub struct PurgeLimits {
    /// Shards whose timeouts it looks through.
    pub shards: usize,
    /// Keys it deletes at most.
    pub keys: usize,
    /// Bytes of keys it names at most, past the first key.
    pub bytes: usize,
}

/// What [`Replica::propose_purge`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgeOutcome {
    /// A purge entry went into the log.
    Proposed,
    /// The last purge is not applied yet: ask again later.
    Pending,
    /// The shards looked at hold no expired key.
    NoneExpired,
}

impl<W> Replica<W> {
    /// From now on, reads of many keys (KEYS, which takes about 0.07 s per
    /// million keys, and SCAN with a large COUNT) are not answered in
    /// [`Replica::handle_ready`] but kept, each with a view of the map, for
    /// [`Replica::take_full_reads`]: the caller answers them on another
    /// thread, so that its loop goes on sending heartbeats meanwhile.
    pub fn answer_full_reads_elsewhere(&mut self) {
        self.full_reads.get_or_insert_with(Vec::new);
    }

    /// The reads of many keys confirmed since the last call (empty unless
    /// [`Replica::answer_full_reads_elsewhere`] was called).
    pub fn take_full_reads(&mut self) -> Vec<FullRead<W>> {
        self.full_reads
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Sets the wall clock (unix ms) that a leader stamps writes with and
    /// answers reads at; the caller sets it as time passes.
    pub fn set_wall_clock(&mut self, unix_ms: u64) {
        self.now_ms = unix_ms;
    }

    /// The time a write is stamped with or a read answered at: the wall
    /// clock, as Redis uses its own. A clock set back, or a new leader's
    /// behind the old one's, can make a key live longer than it would have;
    /// a floor under it (the last stamp, say) would instead hold the whole
    /// cluster's time in the future after one leader's clock jumped ahead.
    pub(super) fn time(&self) -> u64 {
        self.now_ms
    }

    /// As leader: proposes the deletion of keys that have expired, found
    /// among the timeouts of `limits.shards` shards (the search goes round
    /// them call by call), at most `limits.keys` of them and, past the first,
    /// `limits.bytes` of key bytes, so that the entry fits a peer frame. The
    /// entry deletes only keys expired at its own stamp, so a key given a new
    /// time meanwhile stays.
    pub fn propose_purge(
        &mut self,
        limits: PurgeLimits,
        waiter: W,
    ) -> Result<PurgeOutcome, Refused<W>> {
        if self.purge_index > self.applied_index {
            return Ok(PurgeOutcome::Pending);
        }
        let keys = self.kv.expired_keys(
            self.time(),
            &mut self.purge_cursor,
            limits.shards,
            limits.keys,
            limits.bytes,
        );
        if keys.is_empty() {
            return Ok(PurgeOutcome::NoneExpired);
        }
        self.propose(Command::Purge(keys), waiter)?;
        self.purge_index = self.node.last_index();
        Ok(PurgeOutcome::Proposed)
    }
}
