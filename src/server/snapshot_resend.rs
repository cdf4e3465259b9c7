//! When a leader may stream a snapshot to a follower again.
//!
//! A follower that was sent a snapshot in full asks for the same one again
//! only when it could not use it: its disk is full, the file failed its
//! check, or it runs an older build that cannot read it. Streaming it again at
//! once repeats the failure, and each try sends the whole file (12 MB with
//! 100,000 keys) and logs on both nodes. So a repeat of the snapshot last sent
//! in full to a node waits 1 s after that send finished, and each further
//! repeat of it twice as long as the one before, up to 30 s. A newer snapshot,
//! or a new leader, starts again without a wait.
//!
//! A held InstallSnapshot is not reported to the core until it is sent, or
//! dropped (`Snapshots::start_streams`: the core no longer wants it): the
//! core keeps that follower in its snapshot state, sending it nothing but
//! heartbeats meanwhile.

use crate::raft::{Message, MessageBody, NodeId};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The wait before the first repeat of a snapshot to a node.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between repeats.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// The last snapshot streamed in full to a node.
struct Sent {
    snapshot: (u64, u64),
    term: u64,
    finished: Instant,
    wait: Duration,
}

#[derive(Default)]
pub struct ResendWaits {
    sent: BTreeMap<NodeId, Sent>,
    /// InstallSnapshots waiting for their time, with that time.
    held: BTreeMap<NodeId, (Message, Instant)>,
}

/// (index, term) of the snapshot an InstallSnapshot carries.
pub fn snapshot_of(message: &Message) -> Option<(u64, u64)> {
    match &message.body {
        MessageBody::InstallSnapshot { meta } => Some((meta.index, meta.term)),
        _ => None,
    }
}

impl ResendWaits {
    /// The whole of `message`'s snapshot was queued for its follower at `now`.
    pub fn finished(&mut self, message: &Message, now: Instant) {
        let Some(snapshot) = snapshot_of(message) else {
            return;
        };
        let wait = match self.sent.get(&message.to) {
            Some(last) if last.snapshot == snapshot && last.term == message.term => {
                (last.wait * 2).min(MAX_WAIT)
            }
            _ => FIRST_WAIT,
        };
        let sent = Sent {
            snapshot,
            term: message.term,
            finished: now,
            wait,
        };
        self.sent.insert(message.to, sent);
    }

    /// Whether `message` is the one already held for its node.
    pub fn is_held(&self, message: &Message) -> bool {
        self.held.get(&message.to).is_some_and(|(held, _)| {
            held.term == message.term && snapshot_of(held) == snapshot_of(message)
        })
    }

    /// Returns `message` if it may be streamed now; otherwise holds it (in
    /// place of any held before for that node, which the core replaced) and
    /// returns when it will be due.
    pub fn admit(&mut self, message: Message, now: Instant) -> Result<Message, Instant> {
        self.held.remove(&message.to);
        let due = self.sent.get(&message.to).and_then(|last| {
            let repeat = last.term == message.term && Some(last.snapshot) == snapshot_of(&message);
            let due = last.finished + last.wait;
            (repeat && now < due).then_some(due)
        });
        match due {
            None => Ok(message),
            Some(due) => {
                self.held.insert(message.to, (message, due));
                Err(due)
            }
        }
    }

    /// Takes the held messages that are due by `now`.
    pub fn take_due(&mut self, now: Instant) -> Vec<Message> {
        let due: Vec<NodeId> = self
            .held
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(to, _)| *to)
            .collect();
        due.into_iter()
            .filter_map(|to| self.held.remove(&to).map(|(message, _)| message))
            .collect()
    }

    /// Drops the held messages `keep` says no to, and returns whom they
    /// were for.
    pub fn drop_unless(&mut self, keep: impl Fn(&Message) -> bool) -> Vec<NodeId> {
        let stale: Vec<NodeId> = self
            .held
            .iter()
            .filter(|(_, (message, _))| !keep(message))
            .map(|(to, _)| *to)
            .collect();
        for to in &stale {
            self.held.remove(to);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::SnapshotMeta;

    fn install(to: NodeId, term: u64, index: u64) -> Message {
        Message {
            from: 1,
            to,
            term,
            body: MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    index,
                    term,
                    voters: vec![1, 2, 3],
                    learners: vec![],
                },
            },
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_first_send_is_not_held() {
        let mut waits = ResendWaits::default();
        let now = Instant::now();
        assert!(waits.admit(install(2, 5, 100), now).is_ok());
        waits.finished(&install(2, 5, 100), now);
        // Another node, or a newer snapshot, goes at once.
        assert!(waits.admit(install(3, 5, 100), now).is_ok());
        assert!(waits.admit(install(2, 5, 200), now).is_ok());
        // So does the same snapshot asked for by a new leader's term.
        assert!(waits.admit(install(2, 6, 100), now).is_ok());
    }

    #[test]
    fn repeats_of_one_snapshot_wait_twice_as_long_each_time_up_to_the_cap() {
        let mut waits = ResendWaits::default();
        let start = Instant::now();
        let message = install(2, 5, 100);
        let mut now = start;
        waits.finished(&message, now);
        let mut expected = FIRST_WAIT;
        for _ in 0..8 {
            let due = waits
                .admit(message.clone(), now)
                .expect_err("a repeat right after a send is held");
            assert_eq!(due, now + expected);
            assert!(waits.is_held(&message));
            assert!(waits.take_due(due - Duration::from_millis(1)).is_empty());
            assert_eq!(waits.take_due(due), vec![message.clone()]);
            assert!(!waits.is_held(&message));
            now = due;
            waits.finished(&message, now);
            expected = (expected * 2).min(MAX_WAIT);
        }
        assert_eq!(expected, MAX_WAIT);
    }

    #[test]
    fn a_repeat_asked_for_after_its_wait_goes_at_once() {
        let mut waits = ResendWaits::default();
        let now = Instant::now();
        waits.finished(&install(2, 5, 100), now);
        assert!(waits.admit(install(2, 5, 100), now + secs(2)).is_ok());
    }

    #[test]
    fn a_newer_request_replaces_the_held_one() {
        let mut waits = ResendWaits::default();
        let now = Instant::now();
        waits.finished(&install(2, 5, 100), now);
        assert!(waits.admit(install(2, 5, 100), now).is_err());
        assert!(waits.admit(install(2, 5, 200), now).is_ok());
        assert!(waits.take_due(now + MAX_WAIT).is_empty());
    }

    #[test]
    fn held_messages_the_caller_does_not_keep_are_dropped() {
        let mut waits = ResendWaits::default();
        let now = Instant::now();
        for to in [2, 3] {
            waits.finished(&install(to, 5, 100), now);
            assert!(waits.admit(install(to, 5, 100), now).is_err());
        }
        assert!(waits.drop_unless(|m| m.term == 5).is_empty());
        assert_eq!(waits.drop_unless(|m| m.to == 3), vec![2]);
        assert_eq!(waits.drop_unless(|_| false), vec![3]);
        assert!(waits.take_due(now + MAX_WAIT).is_empty());
    }
}
