//! Time on the loop: the timer wheel (the core's tick, hence heartbeats and
//! election timeouts; request deadlines; lingering clients; reconnects), and
//! the leader's periodic purge of expired keys.
//!
//! Separate from `event_loop.rs` because all of it is driven by the clock
//! rather than by readiness, and how durations become wheel ticks, and what
//! each timer does when it fires, read best next to each other.

use super::{Server, Waiter};
use crate::raft::NodeId;
use crate::replica::{PurgeLimits, PurgeOutcome};
use log::{debug, warn};
use mio::Token;
use std::time::{Duration, Instant};

/// How often a leader looks for expired keys to delete when the last look
/// found none (after one that found some, it looks again as soon as that
/// purge is applied), and how much one purge looks at and deletes: a key
/// of up to `max_request_bytes` goes in a purge of its own, well inside a
/// peer frame.
const PURGE_EVERY: Duration = Duration::from_millis(100);
const PURGE_LIMITS: PurgeLimits = PurgeLimits {
    shards: 1024,
    keys: 1000,
    bytes: 1 << 20,
};

/// How long after a failed accept (out of descriptors: EMFILE, ENFILE) the
/// listener is tried again. Its readiness is edge-triggered: the
/// connections left in its queue raise no new event, so without a retry they
/// waited, unanswered, until another connection arrived. Trying again at
/// once would spin while the descriptors stay short (nginx waits 500 ms).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// What an accept loop does after `accept()` returned an error.
#[derive(Debug, PartialEq, Eq)]
pub(in crate::server) enum AfterAcceptError {
    /// The queue is empty (`WouldBlock`): wait for the next readiness event.
    Stop,
    /// That one connection was reset before it was taken (`ECONNABORTED`),
    /// or a signal interrupted the call: the rest of the queue is still
    /// there, so take the next one at once.
    Next,
    /// Out of descriptors or memory: try again [`ACCEPT_RETRY`] from now.
    Retry,
}

pub(in crate::server) fn after_accept_error(err: &std::io::Error) -> AfterAcceptError {
    match err.kind() {
        std::io::ErrorKind::WouldBlock => AfterAcceptError::Stop,
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted => {
            AfterAcceptError::Next
        }
        _ => AfterAcceptError::Retry,
    }
}

/// Deadlines and retries on the timer wheel.
#[derive(Debug)]
pub enum Timer {
    /// The request's time is up: `-TRYAGAIN` if it never left, `-TIMEOUT` if
    /// a write's outcome is unknown.
    Deadline {
        token: Token,
        seq: u64,
    },
    Reconnect(NodeId),
    /// A lingering client (see `client_io`) had its time to close.
    EndLinger(Token),
    /// Accept again on the client port (`raft: false`) or the raft port,
    /// after an accept failed (see [`ACCEPT_RETRY`]).
    RetryAccept {
        raft: bool,
    },
    /// The core's logical clock: tick `n`, then schedule tick `n + 1` (a
    /// late wake-up runs every tick it missed, so no tick is lost).
    RaftTick(u64),
}

impl Server {
    /// Fires every timer due by now: heartbeats and election timeouts (through
    /// the core's tick), request deadlines, reconnects.
    pub(super) fn run_timers(&mut self) {
        let now = self.clock.now_ticks();
        let mut fired = Vec::new();
        loop {
            self.wheel.advance(now, &mut fired);
            if fired.is_empty() {
                break;
            }
            for timer in fired.drain(..) {
                match timer {
                    Timer::RaftTick(n) => {
                        self.replica.tick();
                        // On the tick, not every iteration: it looks at most
                        // every 200 ms anyway.
                        self.peers.drop_cut_connections(
                            Instant::now(),
                            self.poll.registry(),
                            &mut self.peer_events,
                        );
                        self.wheel.schedule(n + 1, Timer::RaftTick(n + 1));
                    }
                    Timer::Deadline { token, seq } => self.expire(token, seq),
                    Timer::EndLinger(token) => self.close_client(token),
                    Timer::RetryAccept { raft } => {
                        self.accept_retry[usize::from(raft)] = false;
                        if raft {
                            self.accept_peers();
                        } else {
                            self.accept_clients();
                        }
                    }
                    Timer::Reconnect(id) => {
                        let token = self.take_token();
                        self.peers.redial(id, self.poll.registry(), token);
                    }
                }
            }
        }
        for (id, delay_ms) in std::mem::take(&mut self.peers.reconnects) {
            let at = now + self.ticks_in(Duration::from_millis(delay_ms));
            self.wheel.schedule(at, Timer::Reconnect(id));
        }
    }

    /// The wheel's ticks in `span`, rounded up.
    fn ticks_in(&self, span: Duration) -> u64 {
        let tick_ms = crate::server::clock::tick_for(self.config.heartbeat_ms).as_millis() as u64;
        (span.as_millis() as u64).div_ceil(tick_ms.max(1))
    }

    /// An accept on the client port (`raft: false`) or the raft port
    /// failed: logged (the first time, then every 100th while it keeps
    /// failing), and tried again [`ACCEPT_RETRY`] from now.
    pub(in crate::server) fn accept_failed(&mut self, raft: bool, err: &std::io::Error) {
        let side = usize::from(raft);
        if self.accept_failures[side] % 100 == 0 {
            warn!(
                "accept on the {} port failed: {} (trying again every {} ms)",
                if raft { "raft" } else { "client" },
                err,
                ACCEPT_RETRY.as_millis()
            );
        }
        self.accept_failures[side] += 1;
        if std::mem::replace(&mut self.accept_retry[side], true) {
            return;
        }
        let at = self.clock.now_ticks() + self.ticks_in(ACCEPT_RETRY);
        self.wheel.schedule(at, Timer::RetryAccept { raft });
    }

    /// Closes a lingering client `after` from now, if it is still there.
    pub(in crate::server) fn schedule_end_linger(&mut self, token: Token, after: Duration) {
        let at = self.clock.now_ticks() + self.ticks_in(after);
        self.wheel.schedule(at, Timer::EndLinger(token));
    }

    pub(in crate::server) fn schedule_deadline(&mut self, token: Token, seq: u64) {
        let at = self.clock.now_ticks() + self.deadline_ticks;
        self.wheel.schedule(at, Timer::Deadline { token, seq });
    }

    pub(in crate::server) fn now_ticks(&self) -> u64 {
        self.clock.now_ticks()
    }

    /// As leader: proposes the deletion of keys whose timeout has passed,
    /// so that the memory of expired keys nobody reads again comes back. A
    /// look that finds none waits [`PURGE_EVERY`] for the next (all shards
    /// in about 6 s); while there are more, purges follow each other.
    pub(super) fn purge_expired_keys(&mut self) {
        if !self.replica.is_leader()
            || self.replica.kv().expiring_keys() == 0
            || Instant::now() < self.next_purge
        {
            return;
        }
        match self.replica.propose_purge(PURGE_LIMITS, Waiter::Nobody) {
            Ok(PurgeOutcome::Proposed | PurgeOutcome::Pending) => {}
            Ok(PurgeOutcome::NoneExpired) => self.next_purge = Instant::now() + PURGE_EVERY,
            Err(refused) => {
                debug!("purge of expired keys not proposed: {:?}", refused.error);
                self.next_purge = Instant::now() + PURGE_EVERY;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{after_accept_error, AfterAcceptError};
    use std::io::{Error, ErrorKind};

    #[test]
    fn an_aborted_connection_is_skipped_and_running_out_of_descriptors_is_retried_later() {
        let kind = |kind: ErrorKind| after_accept_error(&Error::from(kind));
        assert_eq!(kind(ErrorKind::WouldBlock), AfterAcceptError::Stop);
        assert_eq!(kind(ErrorKind::ConnectionAborted), AfterAcceptError::Next);
        assert_eq!(kind(ErrorKind::Interrupted), AfterAcceptError::Next);
        let emfile = Error::from_raw_os_error(24);
        assert_eq!(after_accept_error(&emfile), AfterAcceptError::Retry);
        let enfile = Error::from_raw_os_error(23);
        assert_eq!(after_accept_error(&enfile), AfterAcceptError::Retry);
        let econnaborted = Error::from_raw_os_error(103);
        assert_eq!(after_accept_error(&econnaborted), AfterAcceptError::Next);
    }
}
