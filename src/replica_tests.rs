//! The replica on a single node: its membership glue (a change answers its
//! waiter when applied, transfers answer theirs from the core's outcomes, and
//! the outcome reports what the shell needs), full reads, the wall clock
//! that stamps writes, and the purges of expired keys.
//!
//! Acknowledgements and votes against a disk whose syncs run in the
//! background are tested in `replica_sync_tests.rs`.

use super::*;
use crate::raft::{testnet, ConfChange, ConfChangeError, Entry, HardState, RaftConfig, Restored};
use crate::raft::{MessageBody, NodeId};
use crate::storage::StorageError;

struct MemDisk;

impl Durable for MemDisk {
    fn append(&mut self, _: &[Entry]) -> Result<(), StorageError> {
        Ok(())
    }
    fn set_hard_state(&mut self, _: HardState) -> Result<(), StorageError> {
        Ok(())
    }
    fn start_sync(&mut self) -> Result<SyncStart, StorageError> {
        Ok(SyncStart::Synced)
    }
    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<KvStore, StorageError> {
        panic!("no snapshot expected, got {:?}", meta);
    }
}

struct Nowhere;

impl Transport for Nowhere {
    fn send(&mut self, _: Message) {}
    fn flush(&mut self) {}
}

fn ready(replica: &mut Replica<u32>, done: &mut Vec<Completion<u32>>) -> ReadyOutcome {
    replica
        .handle_ready(&mut MemDisk, &mut Nowhere, done)
        .expect("in-memory ready")
}

/// A one-voter cluster that has elected itself and committed its Noop.
fn leader() -> Replica<u32> {
    leader_applying(u64::MAX)
}

/// [`leader`], applying at most `max_apply_bytes` per call of `handle_ready`.
fn leader_applying(max_apply_bytes: u64) -> Replica<u32> {
    // As a server runs its core: with pre-vote and check-quorum.
    let config = RaftConfig {
        pre_vote: true,
        check_quorum: true,
        max_apply_bytes,
        ..testnet::config(1, &[1])
    };
    let mut replica = Replica::new(Node::new(config, Restored::default(), 7), KvStore::new());
    let mut done = Vec::new();
    for _ in 0..100 {
        replica.tick();
        ready(&mut replica, &mut done);
        if replica.is_leader() && replica.status().commit_index > 0 {
            return replica;
        }
    }
    panic!("no leader after 100 ticks: {:?}", replica.status());
}

#[test]
fn a_change_answers_when_applied_and_is_reported() {
    let mut replica = leader();
    let mut done = Vec::new();
    let change = ConfChange::AddLearner {
        id: 2,
        context: b"1=a:1,2=b:2".to_vec(),
    };
    replica.propose_conf_change(change.clone(), 5).unwrap();
    let outcome = ready(&mut replica, &mut done);
    assert_eq!(
        done,
        vec![Completion {
            waiter: 5,
            reply: Reply::Ok
        }]
    );
    let index = replica.status().conf_index;
    assert_eq!(outcome.conf_appended.len(), 1);
    assert_eq!(outcome.conf_appended[0].0, index);
    assert_eq!(outcome.conf_appended[0].1.change, change);
    assert_eq!(outcome.conf_appended[0].1.learners, vec![2]);
    assert_eq!(outcome.conf_applied, outcome.conf_appended);
    // One change at a time is the core's rule; the waiter comes back with it.
    let again = replica.propose_conf_change(ConfChange::Remove { id: 9 }, 6);
    assert_eq!(
        again.unwrap_err(),
        (ConfChangeError::UnknownNode { id: 9 }, 6)
    );
}

#[test]
fn transfers_answer_from_the_outcomes() {
    let mut replica = leader();
    let mut done = Vec::new();
    replica
        .propose_conf_change(
            ConfChange::AddLearner {
                id: 2,
                context: Vec::new(),
            },
            1,
        )
        .unwrap();
    ready(&mut replica, &mut done);
    assert_eq!(
        replica.transfer_leader(2, 2).unwrap_err(),
        (ConfChangeError::NotVoter { id: 2 }, 2)
    );
    // A transfer to itself finishes at once.
    replica.transfer_leader(1, 3).unwrap();
    done.clear();
    let outcome = ready(&mut replica, &mut done);
    assert_eq!(
        done,
        vec![Completion {
            waiter: 3,
            reply: Reply::Ok
        }]
    );
    assert_eq!(
        outcome.transfer_outcomes,
        vec![TransferOutcome::Finished { target: 1 }]
    );
    assert_eq!(
        reply_transfer_abandoned(2),
        Reply::Error("ERR transfer to 2 abandoned".into())
    );
}

fn set(key: &str) -> Command {
    Command::Set(key.as_bytes().to_vec(), b"v".to_vec())
}

#[test]
fn reads_of_every_key_are_handed_over_with_a_view_at_their_read_point() {
    let mut replica = leader();
    replica.answer_full_reads_elsewhere();
    let mut done = Vec::new();
    replica.propose(set("a"), 1).unwrap();
    ready(&mut replica, &mut done);
    replica.read(Command::Keys(b"*".to_vec()), 2).unwrap();
    replica.read(Command::Get(b"a".to_vec()), 3).unwrap();
    ready(&mut replica, &mut done);
    // The GET is answered here; the KEYS is handed over, not answered.
    let waiters: Vec<u32> = done.iter().map(|c| c.waiter).collect();
    assert_eq!(waiters, vec![1, 3]);
    let full = replica.take_full_reads();
    assert_eq!(full.len(), 1);
    assert!(replica.take_full_reads().is_empty());
    // A write applied after the read point is not in its answer.
    replica.propose(set("b"), 4).unwrap();
    ready(&mut replica, &mut done);
    assert_eq!(replica.kv().len(), 2);
    let answer = full.into_iter().next().map(FullRead::answer);
    assert_eq!(
        answer,
        Some(Completion {
            waiter: 2,
            reply: Reply::Array(vec![Reply::Bulk(b"a".to_vec())])
        })
    );
}

#[test]
fn reads_of_every_key_are_answered_in_place_by_default() {
    let mut replica = leader();
    let mut done = Vec::new();
    replica.propose(set("a"), 1).unwrap();
    replica.read(Command::Keys(b"*".to_vec()), 2).unwrap();
    ready(&mut replica, &mut done);
    assert!(replica.take_full_reads().is_empty());
    assert_eq!(
        done.last(),
        Some(&Completion {
            waiter: 2,
            reply: Reply::Array(vec![Reply::Bulk(b"a".to_vec())])
        })
    );
}

#[test]
fn flushed_keys_are_handed_to_the_caller() {
    let mut replica = leader();
    let mut done = Vec::new();
    replica.propose(set("a"), 1).unwrap();
    replica.propose(Command::FlushAll, 2).unwrap();
    let outcome = ready(&mut replica, &mut done);
    assert_eq!(format!("{:?}", outcome.flushed), "[FlushedKeys(1 keys)]");
    assert!(replica.kv().is_empty());
}

fn parse(words: &[&str]) -> Command {
    let argv: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
    Command::parse(&argv).unwrap()
}

#[test]
fn a_leader_stamps_writes_with_its_clock_and_reads_at_it() {
    let mut replica = leader();
    let mut done = Vec::new();
    let t0 = 1_700_000_000_000;
    replica.set_wall_clock(t0);
    replica
        .propose(parse(&["SET", "k", "v", "PX", "1000"]), 1)
        .unwrap();
    ready(&mut replica, &mut done);
    assert_eq!(replica.kv().clock(), t0);
    // Writes are stamped with the wall clock as it is, also when it went
    // back: the relative time counts from that stamp.
    replica.set_wall_clock(t0 - 5_000);
    replica
        .propose(parse(&["SET", "j", "v", "PX", "1000"]), 2)
        .unwrap();
    ready(&mut replica, &mut done);
    assert_eq!(replica.kv().clock(), t0 - 5_000);
    // Reads are answered at the wall clock.
    replica.read(parse(&["PTTL", "j"]), 3).unwrap();
    ready(&mut replica, &mut done);
    replica.set_wall_clock(t0 + 999);
    replica.read(Command::Get(b"k".to_vec()), 4).unwrap();
    ready(&mut replica, &mut done);
    replica.set_wall_clock(t0 + 1_000);
    replica.read(Command::Get(b"k".to_vec()), 5).unwrap();
    ready(&mut replica, &mut done);
    let replies: Vec<(u32, Reply)> = done.drain(..).map(|c| (c.waiter, c.reply)).collect();
    assert_eq!(
        replies,
        vec![
            (1, Reply::Ok),
            (2, Reply::Ok),
            (3, Reply::Integer(1000)),
            (4, Reply::Bulk(b"v".to_vec())),
            (5, Reply::Nil)
        ]
    );
}

#[test]
fn a_leader_purges_expired_keys() {
    let mut replica = leader();
    let mut done = Vec::new();
    let t0 = 1_700_000_000_000;
    replica.set_wall_clock(t0);
    for key in ["a", "b", "c"] {
        replica
            .propose(parse(&["SET", key, "v", "PX", "10"]), 1)
            .unwrap();
    }
    replica.propose(set("kept"), 1).unwrap();
    ready(&mut replica, &mut done);
    let limits = PurgeLimits {
        shards: 1 << 16,
        keys: 2,
        bytes: 1 << 20,
    };
    let purge = |replica: &mut Replica<u32>| match replica.propose_purge(limits, 9) {
        Ok(outcome) => outcome,
        Err(refused) => panic!("purge refused: {:?}", refused.error),
    };
    assert_eq!(purge(&mut replica), PurgeOutcome::NoneExpired);
    replica.set_wall_clock(t0 + 10);
    assert_eq!(purge(&mut replica), PurgeOutcome::Proposed);
    // The next purge waits for this one to be applied, then goes at once.
    assert_eq!(purge(&mut replica), PurgeOutcome::Pending);
    ready(&mut replica, &mut done);
    assert_eq!(replica.kv().expiring_keys(), 1);
    assert_eq!(purge(&mut replica), PurgeOutcome::Proposed);
    ready(&mut replica, &mut done);
    assert_eq!(purge(&mut replica), PurgeOutcome::NoneExpired);
    let purged: Vec<Reply> = done
        .iter()
        .filter(|c| c.waiter == 9)
        .map(|c| c.reply.clone())
        .collect();
    assert_eq!(purged, vec![Reply::Integer(2), Reply::Integer(1)]);
    assert_eq!(replica.kv().len(), 1);
    assert_eq!(replica.kv().expiring_keys(), 0);
}

#[path = "replica_reads_tests.rs"]
mod reads_tests;

#[path = "replica_sync_tests.rs"]
mod sync_tests;

/// Writes `count` SETs of `bytes`-byte values to `key` and applies them.
fn write_values(replica: &mut Replica<u32>, key: &str, bytes: usize, count: usize) {
    let mut done = Vec::new();
    for i in 0..count {
        let value = vec![b'a' + (i % 26) as u8; bytes];
        replica
            .propose(Command::Set(key.as_bytes().to_vec(), value), 1)
            .unwrap();
        ready(replica, &mut done);
    }
}

#[test]
fn a_snapshot_is_due_once_the_log_since_the_last_carries_enough_bytes() {
    let mut replica = leader();
    // By count, not before 1,000 entries.
    replica.set_snapshot_policy(1_000, 10);
    replica.set_snapshot_bytes(10_000, 1 << 30);
    write_values(&mut replica, "k", 2_000, 4);
    assert!(
        replica.take_snapshot().is_none(),
        "8,000 bytes are not enough"
    );
    write_values(&mut replica, "k", 2_000, 1);
    let (meta, _) = replica.take_snapshot().expect("10,000 bytes are");
    assert_eq!(meta.index, replica.status().applied_index);
    replica.snapshot_written(&meta);
    // Counted afresh from the snapshot on.
    write_values(&mut replica, "k", 2_000, 4);
    assert!(replica.take_snapshot().is_none());

    // Once the map holds more than the bound, the log must reach its size.
    let mut replica = leader();
    replica.set_snapshot_policy(1_000, 10);
    replica.set_snapshot_bytes(10_000, 1 << 30);
    for key in ["a", "b", "c", "d", "e", "f"] {
        write_values(&mut replica, key, 2_000, 1);
    }
    replica.set_snapshot_policy(5, 1);
    let (meta, _) = replica.take_snapshot().expect("due by count");
    replica.snapshot_written(&meta);
    replica.set_snapshot_policy(1_000, 10);
    write_values(&mut replica, "a", 2_000, 5);
    assert!(
        replica.take_snapshot().is_none(),
        "10,000 bytes, under the map's 12,000 and more"
    );
    write_values(&mut replica, "a", 2_000, 2);
    assert!(replica.take_snapshot().is_some());
}

#[test]
fn the_trailing_margin_keeps_a_bounded_number_of_bytes() {
    // Every 20 entries, keeping up to 10 below the snapshot by count, but
    // only 5,000 bytes of them; returns the snapshot's index and the first
    // index the log keeps.
    let compact_after = |value_bytes| {
        let mut replica = leader();
        replica.set_snapshot_policy(20, 10);
        replica.set_snapshot_bytes(1 << 30, 5_000);
        write_values(&mut replica, "k", value_bytes, 19);
        let (meta, _) = replica.take_snapshot().expect("due by count");
        (meta.index, replica.snapshot_written(&meta).keep_from)
    };
    // Two entries of 2,000 bytes fit; a third would pass 5,000.
    let (index, keep_from) = compact_after(2_000);
    assert_eq!(keep_from, index - 1);
    // Small entries keep the whole margin by count.
    let (index, keep_from) = compact_after(10);
    assert_eq!(keep_from, index - 9);
}

#[test]
fn a_read_waiting_for_its_place_is_answered_at_the_time_it_arrived() {
    // A connection pipelines a write, `GET k` and `INCR k` while `k` has a
    // few ms left: the GET waits for the write below it, the INCR is
    // stamped as it arrives. Evaluated later at the clock of that moment,
    // the GET found `k` gone, and then the INCR, applied after it at its
    // earlier stamp, found it alive and added to it: the client saw the
    // key missing, then its old value incremented.
    let mut replica = leader();
    let mut done = Vec::new();
    let t0 = 1_700_000_000_000;
    replica.set_wall_clock(t0);
    let deadline = (t0 + 5).to_string();
    replica
        .propose(parse(&["SET", "k", "5", "PXAT", &deadline]), 1)
        .unwrap();
    ready(&mut replica, &mut done);
    replica.propose(parse(&["SET", "other", "x"]), 2).unwrap();
    replica.read(parse(&["GET", "k"]), 3).unwrap();
    replica.propose(parse(&["INCR", "k"]), 4).unwrap();
    replica.set_wall_clock(t0 + 10);
    for _ in 0..3 {
        ready(&mut replica, &mut done);
    }
    let mut replies: Vec<(u32, Reply)> = done.drain(..).map(|c| (c.waiter, c.reply)).collect();
    replies.sort_by_key(|(waiter, _)| *waiter);
    assert_eq!(
        replies,
        vec![
            (1, Reply::Ok),
            (2, Reply::Ok),
            (3, Reply::Bulk(b"5".to_vec())),
            (4, Reply::Integer(6)),
        ]
    );
}

#[test]
fn one_call_applies_a_budget_of_bytes_and_says_more_is_ready() {
    let value = vec![b'v'; 1000];
    let mut replica = leader_applying(2500);
    let mut done = Vec::new();
    for waiter in 0..10 {
        let key = format!("k{waiter}");
        replica
            .propose_set(key.as_bytes(), &value, waiter)
            .expect("leader");
    }
    let outcome = ready(&mut replica, &mut done);
    assert!(outcome.more_ready);
    // Readies of two entries (2,500 bytes hold two), until 2,500 are applied.
    assert!(
        (3..=4).contains(&outcome.entries_applied),
        "{} entries of 1000 bytes applied",
        outcome.entries_applied
    );
    let mut calls = 1;
    loop {
        calls += 1;
        if !ready(&mut replica, &mut done).more_ready {
            break;
        }
        assert!(calls < 10, "still more ready");
    }
    assert_eq!(calls, 3, "calls for 10 kB");
    let waiters: Vec<u32> = done.iter().map(|c| c.waiter).collect();
    assert_eq!(
        waiters,
        (0..10).collect::<Vec<_>>(),
        "every SET answered in order"
    );
    assert_eq!(replica.kv().len(), 10);
}
