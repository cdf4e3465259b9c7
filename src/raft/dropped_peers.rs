//! The filter that keeps members dropped by `--force-new-cluster` out:
//! their messages are ignored (`Node::step` drops them) and they cannot be
//! added back (`ConfChangeError::Dropped`). Apart because it is a recovery
//! tool's rule, not part of Raft.

use super::message::NodeId;
use super::Node;

impl Node {
    /// Ignores every message from `ids` from now on: members that
    /// `--force-new-cluster` dropped. Such a node may come back with its old
    /// data dir, still counting itself and this node among the voters of the
    /// old configuration. Its log can be longer than ours or of later terms
    /// (it was in the majority this node was cut off from), so neither the
    /// election restriction nor a leader lease keeps it out: a vote request
    /// at a higher term would depose this leader, our vote could make it
    /// leader of the old configuration, and its AppendEntries would then
    /// overwrite our log. Nothing it says can be trusted to agree with our
    /// log, so it is not heard at all (etcd drops a removed member's
    /// messages at its transport for the same reason).
    pub fn ignore_dropped_peers(&mut self, ids: &[NodeId]) {
        self.dropped_peers = ids.iter().copied().filter(|id| *id != self.id).collect();
    }

    /// The members whose messages are ignored (see
    /// [`Node::ignore_dropped_peers`]).
    pub fn dropped_peers(&self) -> &[NodeId] {
        &self.dropped_peers
    }
}
