//! Reads answered from their place in the apply order (`replica_reads.rs`):
//! on one node, and on three whose leader is deposed while a confirmed read
//! waits for its place.

use super::*;
use crate::raft::{MessageBody, Role};

#[test]
fn a_read_is_answered_from_its_place_among_the_writes() {
    let mut replica = leader();
    let mut done = Vec::new();
    replica.propose(parse(&["SET", "k", "0"]), 1).unwrap();
    replica.read(Command::Get(b"k".to_vec()), 2).unwrap();
    replica.read(Command::Keys(b"*".to_vec()), 3).unwrap();
    replica.propose(parse(&["SET", "k", "1"]), 4).unwrap();
    replica.propose(parse(&["SET", "j", "1"]), 5).unwrap();
    replica.read(Command::Get(b"k".to_vec()), 6).unwrap();
    // One batch applies all three writes and confirms both reads; each
    // read sees the writes before it and none after.
    ready(&mut replica, &mut done);
    let replies: Vec<(u32, Reply)> = done.drain(..).map(|c| (c.waiter, c.reply)).collect();
    assert!(
        replies.contains(&(2, Reply::Bulk(b"0".to_vec()))),
        "{:?}",
        replies
    );
    assert!(
        replies.contains(&(3, Reply::Array(vec![Reply::Bulk(b"k".to_vec())]))),
        "{:?}",
        replies
    );
    assert!(
        replies.contains(&(6, Reply::Bulk(b"1".to_vec()))),
        "{:?}",
        replies
    );
    assert_eq!(replies.len(), 6);
    assert_eq!(replica.pending(), 0);
}

#[test]
fn a_read_of_many_keys_is_handed_over_with_a_view_at_its_place() {
    let mut replica = leader();
    replica.answer_full_reads_elsewhere();
    let mut done = Vec::new();
    replica.propose(parse(&["SET", "a", "1"]), 1).unwrap();
    replica.read(Command::Keys(b"*".to_vec()), 2).unwrap();
    replica.propose(parse(&["SET", "b", "1"]), 3).unwrap();
    ready(&mut replica, &mut done);
    let full = replica.take_full_reads();
    assert_eq!(full.len(), 1);
    assert_eq!(full[0].waiter, 2);
    assert_eq!(
        full[0].view.read_at(&full[0].command, full[0].now),
        Reply::Array(vec![Reply::Bulk(b"a".to_vec())])
    );
}

/// Three replicas wired to each other in memory; messages can be cut per
/// node, or the AppendEntries of one node dropped while its heartbeats pass.
struct Outbox(Vec<Message>);

impl Transport for Outbox {
    fn send(&mut self, m: Message) {
        self.0.push(m);
    }
    fn flush(&mut self) {}
}

struct Net3 {
    r: Vec<Replica<u32>>,
    done: Vec<Vec<Completion<u32>>>,
    cut: Vec<NodeId>,
    drop_appends_from: Option<NodeId>,
}

impl Net3 {
    fn new() -> Net3 {
        let r = (1..=3)
            .map(|id| {
                let config = crate::raft::testnet::config(id, &[1, 2, 3]);
                Replica::new(Node::new(config, Restored::default(), id), KvStore::new())
            })
            .collect();
        Net3 {
            r,
            done: vec![Vec::new(), Vec::new(), Vec::new()],
            cut: Vec::new(),
            drop_appends_from: None,
        }
    }
    fn rep(&mut self, id: u64) -> &mut Replica<u32> {
        &mut self.r[id as usize - 1]
    }
    /// Handles every node's Ready and delivers messages until quiet.
    fn stabilize(&mut self) {
        for _ in 0..1000 {
            let mut msgs = Vec::new();
            for i in 0..3 {
                let mut out = Outbox(Vec::new());
                self.r[i]
                    .handle_ready(&mut MemDisk, &mut out, &mut self.done[i])
                    .unwrap();
                msgs.extend(out.0);
            }
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                if self.cut.contains(&m.from) || self.cut.contains(&m.to) {
                    continue;
                }
                if Some(m.from) == self.drop_appends_from
                    && matches!(m.body, MessageBody::Append { .. })
                {
                    continue;
                }
                let to = m.to;
                self.rep(to).step(m);
            }
        }
        panic!("no quiet");
    }
    fn campaign(&mut self, id: u64) {
        let term = self.rep(id).node().term();
        for _ in 0..100 {
            self.rep(id).tick();
            if self.rep(id).node().role() != Role::Follower || self.rep(id).node().term() != term {
                break;
            }
        }
        self.stabilize();
        assert!(self.rep(id).is_leader(), "{} did not win", id);
    }
    /// Node 1 (leading) appends four writes that reach nobody; its
    /// heartbeats, and so its read rounds, still do. Messages flow again
    /// once `elect_2_without_1` runs.
    fn append_unseen_on_1(&mut self) {
        self.drop_appends_from = Some(1);
        for i in 0..4 {
            self.rep(1)
                .propose(parse(&["SET", &format!("other{i}"), "x"]), 100 + i)
                .unwrap();
        }
    }

    /// Node 1 is cut off and node 2, whose log is shorter, is elected.
    fn elect_2_without_1(&mut self) {
        self.drop_appends_from = None;
        self.cut = vec![1];
        self.campaign(2);
        self.cut.clear();
    }

    fn reply_to(&self, id: u64, waiter: u32) -> Option<Reply> {
        self.done[id as usize - 1]
            .iter()
            .find(|c| c.waiter == waiter)
            .map(|c| c.reply.clone())
    }
}

/// A read confirmed by its round, whose place was not yet committed when its
/// leader was deposed. The new leader's log is shorter, and a write the
/// read's connection sent after it (through this node, now a follower) lands
/// at or below the read's place: answered from there, the read would see it.
/// It is dropped instead (`-TRYAGAIN` here, where dropped reads are not kept
/// for routing).
#[test]
fn a_read_whose_place_a_new_leader_replaced_is_dropped() {
    let mut net = Net3::new();
    net.campaign(1);
    net.rep(1).propose(parse(&["SET", "k", "0"]), 50).unwrap();
    net.stabilize();
    assert_eq!(net.reply_to(1, 50), Some(Reply::Ok));
    net.append_unseen_on_1();
    // The client's pipeline: GET k (this read), then SET k 1.
    net.rep(1).read(Command::Get(b"k".to_vec()), 7).unwrap();
    let place = net.rep(1).node().last_index();
    net.stabilize();
    assert_eq!(
        net.reply_to(1, 7),
        None,
        "confirmed, but its place is not applied"
    );
    assert_eq!(net.rep(1).pending(), 5);
    net.elect_2_without_1();
    net.rep(2).tick();
    net.stabilize(); // node 1 follows node 2 now
    assert!(!net.rep(1).is_leader());
    // The client's SET k 1, sent after the GET, arrives at node 1 (a
    // follower): forwarded to node 2, it is appended below the read's place.
    net.rep(2).propose(parse(&["SET", "k", "1"]), 8).unwrap();
    assert!(net.rep(2).node().last_index() <= place);
    while net.rep(2).node().last_index() < place {
        net.rep(2).propose(parse(&["SET", "z", "z"]), 9).unwrap();
    }
    net.stabilize();
    assert_eq!(net.reply_to(2, 8), Some(Reply::Ok));
    assert_eq!(
        net.reply_to(1, 7),
        Some(reply_not_committed()),
        "GET k must not be answered from the new leader's entries"
    );
    assert_eq!(net.rep(1).pending(), 0);
}

/// Same start, but no more writes come: the new leader's log never reaches
/// the read's place, and the read does not wait for it.
#[test]
fn a_confirmed_read_not_yet_answered_is_dropped_when_its_leader_is_deposed() {
    let mut net = Net3::new();
    net.campaign(1);
    net.append_unseen_on_1();
    net.rep(1).read(Command::Get(b"k".to_vec()), 7).unwrap();
    net.stabilize();
    net.elect_2_without_1();
    for _ in 0..50 {
        net.rep(2).tick();
        net.stabilize();
    }
    assert!(!net.rep(1).is_leader());
    assert_eq!(net.reply_to(1, 7), Some(reply_not_committed()));
}
