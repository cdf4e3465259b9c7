//! How refused peer connections are logged. A node misconfigured for hours
//! (another `cluster_name`, a member list that puts the wrong id at an
//! address) is redialed about once a second, and both sides logged every
//! refusal at warn: thousands of identical lines an hour in each log,
//! burying everything else. So the first refusal of a streak goes out at
//! warn, the repeats at debug, a reminder at warn at most every
//! [`REMIND_EVERY`] with how many there were, a warn again at once when the
//! reason changes, and an info line when the connection is accepted again.
//!
//! Separate from `peers.rs` because it is bookkeeping about log lines only:
//! nothing here decides what is refused or when a peer is redialed.

use super::{Peers, BACKOFF_MAX_MS};
use crate::raft::NodeId;
use log::{info, Level};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How often a streak of refusals is logged at warn again.
pub(super) const REMIND_EVERY: Duration = Duration::from_secs(60);
/// Streaks remembered at once. Anyone who reaches the raft port can make
/// refusals with ids of their choosing; past this many, the streak refused
/// least recently is forgotten (its next refusal logs at warn again).
const MAX_STREAKS: usize = 64;

/// The two ends a refusal is counted for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Who {
    /// Our connection to member `0`, refused by whatever answers at its address.
    Dialed(NodeId),
    /// A connection to us from `ip`, by a node that said it is `claimed`
    /// and dialed node `dialed` (None until its handshake, or if it never
    /// sent one). The dialed id keeps apart a peer's connections meant for
    /// us, accepted, from those its member list sends to our address for
    /// another id, refused: an acceptance of one ended the streak of the
    /// other, which then warned again.
    Dialer {
        ip: Option<IpAddr>,
        claimed: Option<NodeId>,
        dialed: Option<NodeId>,
    },
}

struct Streak {
    reason: String,
    since: Instant,
    refusals: u64,
    last: Instant,
    warned: Instant,
    /// Refusals logged at debug since the last warn.
    unwarned: u64,
}

#[derive(Default)]
pub(super) struct Refusals {
    streaks: HashMap<Who, Streak>,
}

impl Refusals {
    /// One more refusal of `who` for `reason`; `line` says it. Returns the
    /// level to log at and the line to log.
    pub(super) fn refused(
        &mut self,
        who: Who,
        reason: &str,
        line: &str,
        now: Instant,
    ) -> (Level, String) {
        if let Some(streak) = self.streaks.get_mut(&who) {
            if streak.reason == reason {
                streak.refusals += 1;
                streak.last = now;
                if now.saturating_duration_since(streak.warned) < REMIND_EVERY {
                    streak.unwarned += 1;
                    return (Level::Debug, line.to_string());
                }
                let reminder = format!(
                    "{} (still: {} times since the first, {} s ago; {} at debug level since the last warning)",
                    line,
                    streak.refusals,
                    now.saturating_duration_since(streak.since).as_secs(),
                    streak.unwarned
                );
                streak.warned = now;
                streak.unwarned = 0;
                return (Level::Warn, reminder);
            }
        }
        if !self.streaks.contains_key(&who) && self.streaks.len() >= MAX_STREAKS {
            let stalest = self.streaks.iter().min_by_key(|(_, s)| s.last);
            if let Some(stalest) = stalest.map(|(who, _)| *who) {
                self.streaks.remove(&stalest);
            }
        }
        self.streaks.insert(
            who,
            Streak {
                reason: reason.to_string(),
                since: now,
                refusals: 1,
                last: now,
                warned: now,
                unwarned: 0,
            },
        );
        let every = REMIND_EVERY.as_secs();
        let line =
            format!("{line} (repeats are logged at debug level, and at warn every {every} s)");
        (Level::Warn, line)
    }

    /// `who`'s connection was accepted: ends its streak. Returns what to add
    /// to the line that says so, if there was one.
    pub(super) fn accepted(&mut self, who: Who, now: Instant) -> Option<String> {
        let streak = self.streaks.remove(&who)?;
        Some(format!(
            "after {} refusals, the first {} s ago",
            streak.refusals,
            now.saturating_duration_since(streak.since).as_secs()
        ))
    }

    /// Whether `who` was refused last time.
    pub(super) fn refusing(&self, who: Who) -> bool {
        self.streaks.contains_key(&who)
    }
}

impl Peers {
    /// Ends the streak of each member that refused us before and has kept
    /// our latest connection for as long as a connection must last to reset
    /// the redial backoff: nothing tells a dialer it was accepted, and a
    /// refusal comes right after the handshake.
    pub(super) fn note_lasting_dials(&mut self, now: Instant) {
        let lasting = Duration::from_millis(BACKOFF_MAX_MS);
        for (id, peer) in &self.members {
            let Some(since) = peer.connected_since else {
                continue;
            };
            if now.saturating_duration_since(since) < lasting {
                continue;
            }
            if let Some(after) = self.refusals.accepted(Who::Dialed(*id), now) {
                info!(
                    "node {} at {} accepts our connection again, {}",
                    id, peer.raft_addr, after
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REASON: &str = "node 3 belongs to cluster 'other', not 'raftkv'";

    fn line(reason: &str) -> String {
        format!("refused peer connection: {reason}")
    }

    fn from3() -> Who {
        Who::Dialer {
            ip: Some(IpAddr::from([127, 0, 0, 1])),
            claimed: Some(3),
            dialed: Some(1),
        }
    }

    #[test]
    fn repeats_log_at_debug_and_a_reminder_at_warn_every_minute() {
        let mut refusals = Refusals::default();
        let start = Instant::now();
        let (level, first) = refusals.refused(from3(), REASON, &line(REASON), start);
        assert_eq!(level, Level::Warn);
        assert!(first.starts_with(&line(REASON)), "{first}");
        for s in 1..60 {
            let at = start + Duration::from_secs(s);
            let (level, text) = refusals.refused(from3(), REASON, &line(REASON), at);
            assert_eq!((level, text), (Level::Debug, line(REASON)), "at {s} s");
        }
        let at = start + Duration::from_secs(60);
        let (level, reminder) = refusals.refused(from3(), REASON, &line(REASON), at);
        assert_eq!(level, Level::Warn);
        assert!(
            reminder.contains("still: 61 times since the first, 60 s ago; 59 at debug"),
            "{reminder}"
        );
        let at = start + Duration::from_secs(61);
        let (level, _) = refusals.refused(from3(), REASON, &line(REASON), at);
        assert_eq!(level, Level::Debug, "the reminder restarts the minute");
    }

    #[test]
    fn a_new_reason_or_another_peer_warns_at_once() {
        let mut refusals = Refusals::default();
        let now = Instant::now();
        refusals.refused(from3(), REASON, &line(REASON), now);
        let other = "node 3 dialed node 2 but this is node 1";
        let (level, text) = refusals.refused(from3(), other, &line(other), now);
        assert_eq!(level, Level::Warn);
        assert!(text.starts_with(&line(other)));
        let (level, _) = refusals.refused(Who::Dialed(3), REASON, REASON, now);
        assert_eq!(
            level,
            Level::Warn,
            "the other direction is a streak of its own"
        );
        let stranger = Who::Dialer {
            ip: Some(IpAddr::from([10, 0, 0, 9])),
            claimed: Some(3),
            dialed: Some(1),
        };
        let (level, _) = refusals.refused(stranger, REASON, REASON, now);
        assert_eq!(level, Level::Warn, "another address is another dialer");
    }

    #[test]
    fn an_accepted_connection_ends_the_streak() {
        let mut refusals = Refusals::default();
        let start = Instant::now();
        for s in 0..5 {
            let at = start + Duration::from_secs(s);
            refusals.refused(from3(), REASON, &line(REASON), at);
        }
        assert!(refusals.refusing(from3()));
        // Its connection for the id it has right is no end of a streak of
        // connections for an id it has wrong.
        let dialed_right = Who::Dialer {
            ip: Some(IpAddr::from([127, 0, 0, 1])),
            claimed: Some(3),
            dialed: Some(2),
        };
        assert_eq!(refusals.accepted(dialed_right, start), None);
        assert!(refusals.refusing(from3()));
        let said = refusals.accepted(from3(), start + Duration::from_secs(7));
        assert_eq!(said.as_deref(), Some("after 5 refusals, the first 7 s ago"));
        assert!(!refusals.refusing(from3()));
        assert_eq!(refusals.accepted(from3(), start), None, "nothing to end");
        let (level, _) = refusals.refused(from3(), REASON, &line(REASON), start);
        assert_eq!(level, Level::Warn, "a refusal after an acceptance is news");
    }

    #[test]
    fn strangers_cannot_grow_the_streaks_without_bound() {
        let mut refusals = Refusals::default();
        let start = Instant::now();
        for id in 0..1000u64 {
            let who = Who::Dialer {
                ip: None,
                claimed: Some(id),
                dialed: None,
            };
            let at = start + Duration::from_millis(id);
            refusals.refused(who, REASON, REASON, at);
        }
        assert_eq!(refusals.streaks.len(), MAX_STREAKS);
        let newest = Who::Dialer {
            ip: None,
            claimed: Some(999),
            dialed: None,
        };
        assert!(
            refusals.refusing(newest),
            "the least recent went, not the newest"
        );
    }
}
