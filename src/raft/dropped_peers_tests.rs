//! A node made the only member by `--force-new-cluster` and a member it
//! dropped that comes back with its old data dir: the survivor's log and
//! leadership must not depend on anything the old member says (see
//! [`Node::ignore_dropped_peers`]).

use super::conf_change::{self, ConfChange, ConfEntry};
use super::message::{Entry, EntryKind, HardState, MessageBody};
use super::ready::Role;
use super::testnet::{config, entry, msg, Net};
use super::{ConfChangeError, Node};

fn production_like(id: u64, voters: &[u64]) -> super::RaftConfig {
    let mut cfg = config(id, voters);
    cfg.pre_vote = true;
    cfg.check_quorum = true;
    cfg
}

/// Nodes 1..=3 commit a few entries; 2 and 3 are then lost, and node 1
/// restarts as the shell restarts it with `--force-new-cluster`: its log
/// plus a ForceNewCluster entry of a term above any it had, with that term
/// (and its own vote) in its hard state. Its bootstrap configuration is
/// still the founders'. Returns the net and the forced entry's index.
fn forced_survivor(ignore: bool) -> (Net, u64) {
    let mut net = Net::with(3, |c| *c = production_like(c.id, &[1, 2, 3]));
    net.campaign(1);
    for _ in 0..3 {
        net.node_mut(1).propose(Vec::new()).expect("leader");
    }
    net.stabilize();
    net.isolate(2);
    net.isolate(3);
    let mut disk = net.disks[&1].clone();
    let last = disk.entries.last().expect("entries");
    let (index, term) = (last.index + 1, disk.hard_state.term.max(last.term) + 1);
    let forced = ConfEntry {
        change: ConfChange::ForceNewCluster { id: 1 },
        voters: vec![1],
        learners: vec![],
    };
    disk.entries.push(Entry {
        index,
        term,
        kind: EntryKind::ConfChange,
        data: conf_change::encode(&forced).into(),
    });
    disk.hard_state = HardState { term, vote: 1 };
    net.add_node(production_like(1, &[1, 2, 3]), disk);
    if ignore {
        net.node_mut(1).ignore_dropped_peers(&[2, 3]);
    }
    (net, index)
}

/// What node 1 holds: (term, vote, role, its log's (index, term) pairs).
type State = (u64, u64, Role, Vec<(u64, u64)>);

fn state(node: &Node) -> State {
    let status = node.status();
    let log = (status.first_index..=status.last_index)
        .map(|i| (i, node.log.term(i).expect("in the log")))
        .collect();
    (status.term, status.vote, status.role, log)
}

#[test]
fn the_forced_node_leads_alone_and_commits_its_whole_log() {
    let (mut net, forced) = forced_survivor(true);
    assert_eq!(net.node(1).voters(), &[1]);
    net.campaign(1);
    let node = net.node(1);
    assert_eq!(node.role(), Role::Leader);
    // Its Noop after the forced entry, and everything before it, committed
    // on its own vote.
    assert_eq!(node.commit_index(), forced + 1);
    assert_eq!(node.last_index(), forced + 1);
    // A restart without the flag (nothing ignored: that is the shell's
    // `dropped` file, not the log) keeps the one-member configuration.
    net.restart(1);
    assert_eq!(net.node(1).voters(), &[1]);
}

/// Node 2 was in the majority node 1 was cut off from: its log is longer
/// and of later terms. Restarted with its old data dir, it asks node 1 for
/// a vote at a higher term before node 1 has led (just restarted), then,
/// having led the old configuration, sends node 1 its entries.
fn old_member_returns(ignore: bool) -> (State, Node) {
    let (mut net, _) = forced_survivor(ignore);
    let vote = MessageBody::RequestVote {
        pre_vote: false,
        last_index: 40,
        last_term: 30,
        transfer: false,
    };
    net.node_mut(1).step(msg(2, 1, 31, vote));
    net.handle_ready(1);
    net.take_queue();
    let after_vote = state(net.node(1));
    net.campaign(1);
    let last = net.node(1).last_index();
    let append = MessageBody::Append {
        prev_index: last,
        prev_term: net.node(1).last_term(),
        entries: vec![entry(last + 1, 40)],
        commit: last,
    };
    net.node_mut(1).step(msg(2, 1, 40, append));
    net.handle_ready(1);
    (after_vote, net.take_node(1))
}

#[test]
fn a_dropped_member_back_with_its_old_data_dir_is_not_heard() {
    let (untouched, _) = forced_survivor(true);
    let before = state(untouched.node(1));
    let (after_vote, node) = old_member_returns(true);
    assert_eq!(after_vote, before, "a vote request changed the survivor");
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(node.voters(), &[1]);
    let (term, _, _, log) = state(&node);
    assert!(term < 31, "took the old member's term {term}");
    assert!(
        log.iter().all(|(_, t)| *t < 31),
        "took the old member's entries: {log:?}"
    );
    // What the test guards against: heard, the same messages cost the
    // survivor its vote, its leadership and its forced configuration.
    let (after_vote, node) = old_member_returns(false);
    assert_eq!((after_vote.0, after_vote.1), (31, 2), "{after_vote:?}");
    assert_eq!((node.role(), node.leader_id()), (Role::Follower, 2));
    assert_eq!(node.last_term(), 40);
}

#[test]
fn a_dropped_id_cannot_be_added_again() {
    let (mut net, _) = forced_survivor(true);
    net.campaign(1);
    let add = |id| ConfChange::AddLearner {
        id,
        context: Vec::new(),
    };
    assert_eq!(
        net.node_mut(1).propose_conf_change(add(2)),
        Err(ConfChangeError::Dropped { id: 2 })
    );
    assert!(net.node_mut(1).propose_conf_change(add(4)).is_ok());
}
