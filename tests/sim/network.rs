//! A seeded network between simulated nodes: per-message loss, duplication
//! and delay (so reordering), and partitions that cut links until healed.

use raftkv::raft::rng::Rng;
use raftkv::raft::{Message, NodeId};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// How unreliable the network is; probabilities in percent.
#[derive(Clone, Debug)]
pub struct NetworkOptions {
    pub loss_percent: u64,
    pub duplicate_percent: u64,
    pub delay_min: u64,
    pub delay_max: u64,
}

impl NetworkOptions {
    pub fn reliable() -> NetworkOptions {
        NetworkOptions {
            loss_percent: 0,
            duplicate_percent: 0,
            delay_min: 1,
            delay_max: 2,
        }
    }

    /// A random profile for one seed: from nearly clean to quite lossy.
    pub fn random(rng: &mut Rng) -> NetworkOptions {
        let delay_min = rng.range(1, 3);
        NetworkOptions {
            loss_percent: rng.range(0, 15),
            duplicate_percent: rng.range(0, 6),
            delay_min,
            delay_max: delay_min + rng.range(1, 8),
        }
    }
}

struct InFlight {
    deliver_at: u64,
    seq: u64,
    message: Message,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.seq) == (other.deliver_at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deliver_at, self.seq).cmp(&(other.deliver_at, other.seq))
    }
}

pub struct Network {
    pub options: NetworkOptions,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// Directed links that drop everything: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
    seq: u64,
    pub sent: u64,
    pub dropped: u64,
}

impl Network {
    pub fn new(options: NetworkOptions) -> Network {
        Network {
            options,
            queue: BinaryHeap::new(),
            cut: BTreeSet::new(),
            seq: 0,
            sent: 0,
            dropped: 0,
        }
    }

    pub fn send(&mut self, now: u64, message: Message, rng: &mut Rng) {
        self.sent += 1;
        if self.cut.contains(&(message.from, message.to))
            || rng.chance(self.options.loss_percent, 100)
        {
            self.dropped += 1;
            return;
        }
        let copies = if rng.chance(self.options.duplicate_percent, 100) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = rng.range(self.options.delay_min, self.options.delay_max + 1);
            self.seq += 1;
            self.queue.push(Reverse(InFlight {
                deliver_at: now + delay,
                seq: self.seq,
                message: message.clone(),
            }));
        }
    }

    /// Messages due at or before `now`, in delivery order. A link cut while a
    /// message was in flight drops it too.
    pub fn due(&mut self, now: u64) -> Vec<Message> {
        let mut out = Vec::new();
        while self.queue.peek().is_some_and(|m| m.0.deliver_at <= now) {
            if let Some(Reverse(inflight)) = self.queue.pop() {
                let m = inflight.message;
                if self.cut.contains(&(m.from, m.to)) {
                    self.dropped += 1;
                } else {
                    out.push(m);
                }
            }
        }
        out
    }

    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts every link between `node` and the others.
    pub fn isolate(&mut self, node: NodeId, all: &[NodeId]) {
        for &other in all.iter().filter(|&&o| o != node) {
            self.cut(node, other);
        }
    }

    /// Splits the nodes into two sides with no links between them.
    pub fn partition(&mut self, side_a: &[NodeId], side_b: &[NodeId]) {
        for &a in side_a {
            for &b in side_b {
                self.cut(a, b);
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }
}
