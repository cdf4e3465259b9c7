//! The replica against a disk whose syncs run in the background, as the
//! server's sync thread runs them: an acknowledgement leaves only once the
//! sync covering its very entries finished, a vote or vote request leaves
//! with its hard state without waiting for the log's sync (and never when
//! the hard state could not be stored), a snapshot
//! installed mid-sync gets nothing from it, and a leader counts itself only
//! after its own sync. Apart from `replica_tests.rs` so that each reads in
//! one sitting.

use super::*;

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
    /// The stable file cannot be written (a full disk).
    refuse_hard_state: bool,
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
        let mut disk = self.0.borrow_mut();
        if disk.refuse_hard_state {
            let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(StorageError::io("stable.tmp", full));
        }
        disk.hard_state = hard_state;
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

/// A vote whose hard state cannot be stored (the stable file's write,
/// fsync or rename failed) never leaves: the batch stops with the error,
/// which stops the node. The transport would also catch a vote sent with
/// the old hard state on disk.
#[test]
fn a_vote_whose_hard_state_cannot_be_stored_never_leaves() {
    let disk = BackgroundDisk::default();
    disk.0.borrow_mut().refuse_hard_state = true;
    let mut net = Checked::new(&disk);
    let mut replica = follower();
    replica.step(testnet::msg(
        3,
        2,
        2,
        MessageBody::RequestVote {
            pre_vote: false,
            last_index: 0,
            last_term: 0,
            transfer: false,
        },
    ));
    let result = replica.handle_ready(&mut disk.clone(), &mut net, &mut Vec::new());
    assert!(
        result
            .as_ref()
            .is_err_and(|err| err.to_string().contains("stable.tmp")),
        "{:?}",
        result.map(|_| ())
    );
    assert_eq!(net.sent, Vec::new(), "sent without its hard state");
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
