//! The replica on a single node: its membership glue (a change answers its
//! waiter when applied, transfers answer theirs from the core's outcomes, and
//! the outcome reports what the shell needs), full reads, the wall clock
//! that stamps writes, and the purges of expired keys.

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

/// What a disk holds whose syncs run in the background, as the server's
/// sync thread runs them: a sync makes durable what was written when it
/// started, and finishes only when the test says so. The hard state and a
/// snapshot's reset are durable at once, as in `DiskLog`.
#[derive(Default)]
struct DiskState {
    hard_state: HardState,
    /// The log holds entries after this index (a snapshot covers the rest).
    offset: u64,
    /// The term of each entry written, from `offset + 1` on.
    written: Vec<u64>,
    /// What a crash keeps of them.
    synced: Vec<u64>,
    /// Syncs started and not finished, oldest first, with what each makes durable.
    running: std::collections::VecDeque<(u64, Vec<u64>)>,
    next_ticket: u64,
}

impl DiskState {
    fn term_in(&self, log: &[u64], index: u64) -> Option<u64> {
        let i = usize::try_from(index.checked_sub(self.offset + 1)?).ok()?;
        log.get(i).copied()
    }
}

/// The replica's side of a [`DiskState`] (the transport reads the same one).
#[derive(Clone, Default)]
struct BackgroundDisk(std::rc::Rc<std::cell::RefCell<DiskState>>);

impl BackgroundDisk {
    /// Finishes the oldest running sync and returns its ticket.
    fn finish_sync(&self) -> u64 {
        let mut disk = self.0.borrow_mut();
        let (ticket, written) = disk.running.pop_front().expect("a sync is running");
        disk.synced = written;
        ticket
    }

    fn syncs_running(&self) -> usize {
        self.0.borrow().running.len()
    }
}

impl Durable for BackgroundDisk {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut disk = self.0.borrow_mut();
        let keep = (entries[0].index - disk.offset - 1) as usize;
        disk.written.truncate(keep);
        disk.written.extend(entries.iter().map(|e| e.term));
        Ok(())
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.0.borrow_mut().hard_state = hard_state;
        Ok(())
    }
    fn start_sync(&mut self) -> Result<SyncStart, StorageError> {
        let mut disk = self.0.borrow_mut();
        disk.next_ticket += 1;
        let (ticket, written) = (disk.next_ticket, disk.written.clone());
        disk.running.push_back((ticket, written));
        Ok(SyncStart::Pending(ticket))
    }
    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<KvStore, StorageError> {
        // The log is emptied durably; the syncs still running finish on
        // files that are gone, and make none of the new log durable.
        let mut disk = self.0.borrow_mut();
        disk.offset = meta.index;
        disk.written.clear();
        disk.synced.clear();
        for (_, written) in disk.running.iter_mut() {
            written.clear();
        }
        Ok(KvStore::new())
    }
}

/// Messages as they leave, each checked against what the disk holds at that
/// moment: a granted vote or a vote request only once the hard state holds
/// it, and an
/// acknowledgement of index `i` in the disk's term only once the disk holds,
/// synced, the very entry the node's log has at `i` (not one of the same
/// index that a newer leader's entries have replaced).
struct Checked {
    disk: BackgroundDisk,
    sent: Vec<Message>,
}

impl Transport for Checked {
    fn send(&mut self, message: Message) {
        let disk = self.disk.0.borrow();
        match message.body {
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            } => assert!(
                disk.hard_state.term > message.term
                    || disk.hard_state
                        == HardState {
                            term: message.term,
                            vote: message.to
                        },
                "vote {} left with {:?} on disk",
                message,
                disk.hard_state
            ),
            MessageBody::RequestVote {
                pre_vote: false, ..
            } => assert!(
                disk.hard_state.term > message.term
                    || disk.hard_state
                        == HardState {
                            term: message.term,
                            vote: message.from
                        },
                "vote request {} left with {:?} on disk",
                message,
                disk.hard_state
            ),
            MessageBody::AppendResponse {
                success: true,
                index,
                ..
            } if message.term == disk.hard_state.term && index > disk.offset => {
                let synced = disk.term_in(&disk.synced, index);
                let written = disk.term_in(&disk.written, index);
                assert!(
                    synced.is_some() && synced == written,
                    "{} left with entry {} of term {:?} written and {:?} synced",
                    message,
                    index,
                    written,
                    synced
                );
            }
            _ => {}
        }
        drop(disk);
        self.sent.push(message);
    }
    fn flush(&mut self) {}
}

impl Checked {
    fn new(disk: &BackgroundDisk) -> Checked {
        Checked {
            disk: disk.clone(),
            sent: Vec::new(),
        }
    }

    /// Steps `messages` into `replica` and handles what is ready; returns
    /// what left.
    fn step(&mut self, replica: &mut Replica<u32>, messages: Vec<Message>) -> Vec<Message> {
        for message in messages {
            replica.step(message);
        }
        let mut disk = self.disk.clone();
        replica
            .handle_ready(&mut disk, self, &mut Vec::new())
            .expect("in-memory ready");
        std::mem::take(&mut self.sent)
    }

    /// Finishes the oldest running sync and reports it; returns what left.
    fn finish_sync(&mut self, replica: &mut Replica<u32>) -> Vec<Message> {
        let ticket = self.disk.finish_sync();
        replica.synced(ticket, self);
        let mut disk = self.disk.clone();
        replica
            .handle_ready(&mut disk, self, &mut Vec::new())
            .expect("in-memory ready");
        std::mem::take(&mut self.sent)
    }
}

fn append_msg(from: NodeId, term: u64, prev: (u64, u64), entries: &[(u64, u64)]) -> Message {
    testnet::msg(
        from,
        2,
        term,
        MessageBody::Append {
            prev_index: prev.0,
            prev_term: prev.1,
            entries: entries
                .iter()
                .map(|&(index, term)| testnet::entry(index, term))
                .collect(),
            commit: 0,
        },
    )
}

/// Node 2 of three, a follower that knows no leader yet.
fn follower() -> Replica<u32> {
    Replica::new(
        Node::new(testnet::config(2, &[1, 2, 3]), Restored::default(), 2),
        KvStore::new(),
    )
}

fn acks(sent: &[Message]) -> Vec<(u64, u64)> {
    sent.iter()
        .filter_map(|m| match m.body {
            MessageBody::AppendResponse {
                success: true,
                index,
                ..
            } => Some((m.term, index)),
            _ => None,
        })
        .collect()
}

/// An acknowledgement whose batch has no entries of its own (a repeated
/// AppendEntries) leaves only once the sync that covers its index finishes.
#[test]
fn an_ack_without_entries_of_its_own_waits_for_the_sync_covering_it() {
    let disk = BackgroundDisk::default();
    let mut net = Checked::new(&disk);
    let mut replica = follower();
    let append = append_msg(1, 1, (0, 0), &[(1, 1), (2, 1), (3, 1)]);
    let sent = net.step(&mut replica, vec![append.clone()]);
    assert_eq!(acks(&sent), vec![]);
    let sent = net.step(&mut replica, vec![append]);
    assert_eq!(acks(&sent), vec![], "the repeat's ack overtook the sync");
    assert_eq!(disk.syncs_running(), 1);
    let sent = net.finish_sync(&mut replica);
    assert_eq!(acks(&sent), vec![(1, 3), (1, 3)]);
}

/// A newer leader's entries replace synced ones of the same indexes: their
/// acknowledgement waits for their own sync, though the disk already holds
/// synced entries at those indexes; and a sync still running when they
/// replaced its entries releases only what it covered.
#[test]
fn an_ack_of_entries_that_replaced_synced_ones_waits_for_their_sync() {
    for first_sync_done_before in [true, false] {
        let disk = BackgroundDisk::default();
        let mut net = Checked::new(&disk);
        let mut replica = follower();
        let old = append_msg(1, 1, (0, 0), &[(1, 1), (2, 1), (3, 1)]);
        let sent = net.step(&mut replica, vec![old]);
        assert_eq!(acks(&sent), vec![]);
        if first_sync_done_before {
            assert_eq!(acks(&net.finish_sync(&mut replica)), vec![(1, 3)]);
        }
        // Node 3 leads term 2; its entry 2 conflicts with ours.
        let new = append_msg(3, 2, (1, 1), &[(2, 2)]);
        let sent = net.step(&mut replica, vec![new.clone(), new]);
        assert_eq!(acks(&sent), vec![]);
        if !first_sync_done_before {
            // The old term's ack may leave (its entries were replaced by a
            // leader elected without us); the new one may not.
            assert_eq!(acks(&net.finish_sync(&mut replica)), vec![(1, 3)]);
        }
        assert_eq!(disk.syncs_running(), 1);
        assert_eq!(acks(&net.finish_sync(&mut replica)), vec![(2, 2), (2, 2)]);
    }
}

/// A vote granted while a sync runs leaves with the vote on disk (the
/// transport checks) and without waiting for that sync: it promises only
/// the hard state.
#[test]
fn a_vote_leaves_with_its_hard_state_while_a_log_sync_runs() {
    let disk = BackgroundDisk::default();
    let mut net = Checked::new(&disk);
    let mut replica = follower();
    net.step(&mut replica, vec![append_msg(1, 1, (0, 0), &[(1, 1)])]);
    let request = testnet::msg(
        3,
        2,
        2,
        MessageBody::RequestVote {
            pre_vote: false,
            last_index: 1,
            last_term: 1,
            transfer: false,
        },
    );
    let granted = |sent: &[Message]| {
        sent.iter().any(|m| {
            matches!(
                m.body,
                MessageBody::RequestVoteResponse { granted: true, .. }
            )
        })
    };
    let sent = net.step(&mut replica, vec![request]);
    assert_eq!(disk.0.borrow().hard_state, HardState { term: 2, vote: 3 });
    assert_eq!(disk.syncs_running(), 1);
    assert!(granted(&sent), "the vote waited for the log's sync");
    let sent = net.finish_sync(&mut replica);
    assert!(!granted(&sent), "the vote left twice");
}

/// A candidate's vote request leaves with its own vote on disk (the
/// transport checks) while a sync of its log still runs.
#[test]
fn a_vote_request_leaves_while_a_log_sync_runs() {
    let disk = BackgroundDisk::default();
    let mut net = Checked::new(&disk);
    let mut replica = follower();
    net.step(&mut replica, vec![append_msg(1, 1, (0, 0), &[(1, 1)])]);
    for _ in 0..100 {
        replica.tick();
        let sent = net.step(&mut replica, Vec::new());
        if replica.status().term == 1 {
            continue;
        }
        assert_eq!(disk.syncs_running(), 1, "the log's sync finished meanwhile");
        let asked: Vec<u64> = sent
            .iter()
            .filter(|m| matches!(m.body, MessageBody::RequestVote { .. }))
            .map(|m| m.to)
            .collect();
        assert_eq!(
            asked,
            vec![1, 3],
            "the vote requests waited for the log's sync"
        );
        assert_eq!(disk.0.borrow().hard_state, HardState { term: 2, vote: 2 });
        return;
    }
    panic!("no campaign in 100 ticks");
}

/// A snapshot installed while a sync of the log it replaced still runs:
/// that sync's completion promises nothing of the new log, whose entries'
/// acknowledgement waits for their own sync.
#[test]
fn a_sync_running_across_a_snapshot_install_releases_nothing_of_the_new_log() {
    let disk = BackgroundDisk::default();
    let mut net = Checked::new(&disk);
    let mut replica = follower();
    net.step(
        &mut replica,
        vec![append_msg(1, 1, (0, 0), &[(1, 1), (2, 1), (3, 1)])],
    );
    let meta = SnapshotMeta {
        index: 5,
        term: 2,
        voters: vec![1, 2, 3],
        learners: Vec::new(),
    };
    let install = testnet::msg(3, 2, 2, MessageBody::InstallSnapshot { meta });
    let sent = net.step(&mut replica, vec![install]);
    assert_eq!(disk.0.borrow().offset, 5, "the snapshot was not installed");
    assert_eq!(acks(&sent), vec![]);
    let sent = net.step(&mut replica, vec![append_msg(3, 2, (5, 2), &[(6, 2)])]);
    assert_eq!(acks(&sent), vec![]);
    assert_eq!(disk.syncs_running(), 2);
    // The old log's ack (an older term) and the snapshot's (durable at once).
    assert_eq!(acks(&net.finish_sync(&mut replica)), vec![(1, 3), (2, 5)]);
    assert_eq!(acks(&net.finish_sync(&mut replica)), vec![(2, 6)]);
}

/// A leader counts its own entries toward a majority only once its sync
/// of them finished, however many followers acknowledged.
#[test]
fn a_leader_counts_itself_only_after_its_own_sync() {
    let disk = BackgroundDisk::default();
    let mut net = Checked::new(&disk);
    let mut replica = Replica::new(
        Node::new(testnet::config(1, &[1, 2, 3]), Restored::default(), 1),
        KvStore::new(),
    );
    let mut asked = false;
    for _ in 0..100 {
        replica.tick();
        let sent = net.step(&mut replica, Vec::new());
        if sent
            .iter()
            .any(|m| matches!(m.body, MessageBody::RequestVote { .. }))
        {
            asked = true;
            break;
        }
    }
    assert!(asked, "no campaign in 100 ticks");
    let term = replica.status().term;
    let vote = testnet::msg(
        2,
        1,
        term,
        MessageBody::RequestVoteResponse {
            pre_vote: false,
            granted: true,
        },
    );
    net.step(&mut replica, vec![vote]);
    assert!(replica.is_leader());
    // Its Noop, written and being synced.
    let noop = replica.node().last_index();
    assert_eq!(disk.syncs_running(), 1);
    let ack = |from| {
        testnet::msg(
            from,
            1,
            term,
            MessageBody::AppendResponse {
                success: true,
                index: noop,
                hint_index: 0,
                hint_term: 0,
            },
        )
    };
    net.step(&mut replica, vec![ack(2)]);
    assert_eq!(
        replica.status().commit_index,
        0,
        "counted its unsynced Noop"
    );
    net.finish_sync(&mut replica);
    assert_eq!(replica.status().commit_index, noop);
}
