//! Snapshots as the caller sees them: building their metadata, compacting
//! the log below them, deciding whether an InstallSnapshot is worth its
//! bytes, and the caller's reports on delivering to a follower. Apart
//! because these are the caller's side of the snapshot exchange, not Raft's
//! rules.

use super::message::{Entry, NodeId, SnapshotMeta};
use super::progress::ProgressState;
use super::ready::Role;
use super::Node;

impl Node {
    /// The metadata of a snapshot covering `index`: its term and the
    /// configuration in effect at `index` (not a later, possibly uncommitted
    /// one). Use it to write a snapshot before calling [`Node::compact`].
    ///
    /// `None` when this node does not know the configuration at `index`: a
    /// node that joined holds the entries before the one that added it, but
    /// the bootstrap configuration they were written under is in no entry. A
    /// snapshot there would name no members where every other node's names
    /// the founders, so the caller waits until the applied index passes a
    /// ConfChange entry (or a snapshot from the leader told it).
    ///
    /// # Panics
    ///
    /// If `index` is above the applied index or below the first index in memory - 1.
    pub fn snapshot_meta(&self, index: u64) -> Option<SnapshotMeta> {
        let meta = self.snapshot_meta_at(index);
        (!meta.voters.is_empty()).then_some(meta)
    }

    /// How large a trailing margin below a snapshot at `index`, of at most
    /// `max_entries`, keeps at most `max_bytes` of payload in the log.
    pub fn trailing_within(&self, index: u64, max_entries: u64, max_bytes: u64) -> u64 {
        self.log.trailing_within(index, max_entries, max_bytes)
    }

    /// The caller took a snapshot covering `meta.index`; entries up to
    /// `meta.index - trailing` are dropped from memory and returned (freeing
    /// a long prefix is slow enough that the caller may want to do it off its
    /// event loop). Followers that need a dropped entry are sent this snapshot.
    ///
    /// # Panics
    ///
    /// If `meta.index` is above the applied index, or its term or
    /// configuration disagrees with the log (build it with
    /// [`Node::snapshot_meta`]).
    pub fn compact(&mut self, meta: SnapshotMeta, trailing: u64) -> Vec<Entry> {
        self.check_snapshot_conf(&meta);
        let dropped = self.log.compact(meta, trailing);
        self.debug_assert_invariants();
        dropped
    }

    /// The caller finished (or failed) sending a snapshot to `to`. Every
    /// InstallSnapshot handed out in `send_now` must be reported once: until
    /// then nothing else is sent to that follower.
    pub fn report_snapshot(&mut self, to: NodeId, success: bool) {
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.on_snapshot_reported(success);
        }
    }

    /// Whether stepping an InstallSnapshot for `meta`, sent in `term`, would
    /// replace this node's state (a `Ready::snapshot` follows). The caller must
    /// have the snapshot's bytes at hand before stepping such a message; one
    /// this returns false for is answered from the log and needs no bytes.
    pub fn would_install_snapshot(&self, term: u64, meta: &SnapshotMeta) -> bool {
        term >= self.term
            && meta.index > self.log.committed
            && !self.log.match_term(meta.index, meta.term)
    }

    /// Whether the snapshot at `index` that an InstallSnapshot for `to` named
    /// is still worth its bytes: this node leads, `to` still waits for that
    /// very snapshot (it did not catch up otherwise meanwhile, nor was it
    /// handed a newer one), and the log still holds the entries right after
    /// it, which `to` needs next once it holds the snapshot. A snapshot the log
    /// has moved past (a newer one compacted it) is useless to `to`: it
    /// would be sent the newest one right after installing it. A removed node
    /// is sent snapshots without a progress; only the log decides for it.
    pub fn snapshot_wanted(&self, to: NodeId, index: u64) -> bool {
        let waits = self
            .progress
            .get(&to)
            .is_none_or(|pr| pr.state == ProgressState::Snapshot { pending: index });
        self.role == Role::Leader && waits && self.log.first_index() <= index.saturating_add(1)
    }

    /// The caller could not deliver to `to` (connection down): stop streaming to
    /// it optimistically and probe instead.
    pub fn report_unreachable(&mut self, to: NodeId) {
        if let Some(pr) = self.progress.get_mut(&to) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }
}
