//! One node's event loop: poll, read, feed the core, handle its output batch
//! with one sync, answer, write. See README.md, "Architecture".
//!
//! This file holds the loop's types, the loop itself and the order of one
//! iteration (`iterate`), and the dispatch of socket events. The rest of the
//! loop's work is `impl Server` blocks in other files, each readable without
//! the rest: the client side in `client_io.rs`, `requests.rs`,
//! `connection.rs`, `transactions.rs` and `cluster.rs`; and, as child modules
//! of this one because they use the loop's private state, building the server
//! (`event_loop_start.rs`), what peers send (`event_loop_peer_events.rs`),
//! the clock's work (`event_loop_timers.rs`), the core's output with the
//! background work that finishes it (`event_loop_ready.rs`), a stopping
//! leader's handover (`event_loop_handoff.rs`), the answers a node gives
//! its clients before it exits (`event_loop_exit.rs`), and the writing of
//! those answers after the loop (`event_loop_exit_linger.rs`).

#[path = "event_loop_exit.rs"]
mod exit;
#[path = "event_loop_exit_linger.rs"]
mod exit_linger;
#[path = "event_loop_handoff.rs"]
mod handoff;
#[path = "event_loop_peer_events.rs"]
mod peer_events;
#[path = "event_loop_ready.rs"]
mod ready;
#[path = "event_loop_start.rs"]
mod start;
#[path = "event_loop_timers.rs"]
mod timers;

pub(super) use timers::{after_accept_error, AfterAcceptError};

use super::clients::Client;
use super::clock::{unix_millis, Clock};
use super::cluster::ClusterState;
use super::full_reads::FullReads;
use super::lookups::Lookups;
use super::parked::ParkedRequests;
use super::peers::{PeerEvent, Peers};
use super::snapshots::Snapshots;
use super::{DiskLog, LoopMap, ServerError};
use crate::config::Config;
use crate::kv::{Command, KeyHasher};
use crate::raft::{NodeId, Role};
use crate::replica::{Completion, Replica};
use crate::timer_wheel::TimerWheel;
use log::{debug, info};
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use signal_hook_mio::v1_0::Signals;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use timers::Timer;

const CLIENT_LISTENER: Token = Token(0);
const RAFT_LISTENER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// The snapshot or full-reads thread finished a job, or an embedding process
/// asks to stop.
const WAKER: Token = Token(3);
const FIRST_CONNECTION: usize = 16;

/// Who waits for a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiter {
    /// A client connection's reply slot.
    Client { token: Token, seq: u64 },
    /// A request a follower forwarded to us; the reply goes back to it.
    Peer { from: NodeId, id: u64 },
    /// The node's own request (a purge of expired keys): nobody waits.
    Nobody,
}

/// What stops the loop: SIGTERM/SIGINT for a node process, or a message on a
/// channel (with a wake-up) for a node embedded in a test or bench.
pub enum StopOn {
    /// Registered before recovery (see `server::run`), so a signal that
    /// arrives while the node starts is kept for the loop's first poll.
    Signals(Signals),
    Channel(crossbeam_channel::Receiver<()>),
}

/// A request forwarded to the leader, kept until its reply comes back.
pub struct Forwarded {
    pub token: Token,
    pub seq: u64,
    pub command: Command,
    /// The leader it went to.
    pub leader: NodeId,
}

pub struct Server {
    pub(super) config: Config,
    pub(super) poll: Poll,
    clock: Clock,
    started: Instant,
    wheel: TimerWheel<Timer>,
    pub(super) replica: Replica<Waiter>,
    pub(super) disk: DiskLog,
    pub(super) peers: Peers,
    pub(super) clients: LoopMap<Token, Client>,
    pub(super) forwards: LoopMap<u64, Forwarded>,
    /// The known leader changed or a peer connection closed: forwards to a
    /// leader that is neither the leader nor reachable any more are to be
    /// settled (`settle_orphaned_forwards`).
    pub(super) forwards_to_check: bool,
    pub(super) next_forward_id: u64,
    /// Per peer, one past the highest id of its Forwards this node has
    /// read: told to it when this node stops (`PeerMessage::Stopping`).
    pub(super) forwards_read: HashMap<NodeId, u64>,
    /// Per leader forwarded to, the connection to it (`Peers::last_connection`)
    /// when the first forward since that connection went, and that forward's
    /// id: what a stopping node says it never read counts only from there.
    pub(super) forward_floors: HashMap<NodeId, (u64, u64)>,
    /// Connections with a read forwarded to a node that no longer leads,
    /// which waits for a request of the connection itself (see
    /// `Server::recheck_held_reads_of`).
    pub(super) reads_held: HashSet<Token, BuildHasherDefault<KeyHasher>>,
    /// While a batch of completions is delivered: the connections of
    /// `reads_held` to look at once it is (see
    /// `Server::recheck_held_reads_of`).
    pub(super) rechecks_deferred: Option<Vec<Token>>,
    /// Client requests waiting to be routed (see `parked.rs`).
    pub(super) parked: ParkedRequests,
    /// Whether this node, as leader, has open connections to a majority of
    /// the voters (itself counted): see `Server::takes_writes`. Refreshed
    /// each iteration.
    pub(super) quorum_connected: bool,
    /// Writes followers forwarded while this leader had no connected quorum,
    /// and requests forwarded behind them: (follower, forward id, command,
    /// tick by which to answer `-TRYAGAIN`).
    pub(super) quorum_waits: VecDeque<(NodeId, u64, Command, u64)>,
    /// None once a stopping leader closed it (see `event_loop_handoff.rs`),
    /// or once the node lingers before it exits (`event_loop_exit_linger.rs`).
    pub(super) client_listener: Option<TcpListener>,
    /// None once the node lingers before it exits.
    raft_listener: Option<TcpListener>,
    signals: Option<Signals>,
    stop_channel: Option<crossbeam_channel::Receiver<()>>,
    waker: Arc<mio::Waker>,
    next_token: usize,
    pub(super) next_client_id: u64,
    /// Requests handled since start, for INFO.
    pub(super) commands_processed: u64,
    /// Client connections beyond this many are refused (`fd_limit`).
    pub(super) max_clients: usize,
    shutdown: bool,
    /// A stopping leader's handover, while it runs.
    handoff: Option<handoff::Handoff>,
    pub(super) completions: Vec<Completion<Waiter>>,
    peer_events: Vec<PeerEvent>,
    /// Clients with replies to encode or output to write this iteration.
    pub(super) dirty_clients: Vec<Token>,
    /// Replies relayed by the leader, each with the commit index this node
    /// knew when it came: delivered once that much is applied here
    /// (`Server::release_relayed_replies`).
    pub(super) relayed_replies: VecDeque<(u64, Completion<Waiter>)>,
    /// The last `process_ready` stopped at its apply budget with more ready.
    pub(super) more_ready: bool,
    /// Client request bytes read, and reply bytes the requests handled are
    /// expected to answer, in this loop iteration (see
    /// `client_io::ITERATION_BUDGET`).
    pub(super) iteration_client_bytes: usize,
    /// Clients that stopped reading because the iteration's budget was
    /// spent, in the order they stopped: resumed first in the next iteration.
    pub(super) over_budget: VecDeque<Token>,
    /// A retry of the client listener's (0) and raft listener's (1) accept
    /// is scheduled (see `event_loop_timers::ACCEPT_RETRY`).
    pub(super) accept_retry: [bool; 2],
    /// Accepts on each listener that failed since the last that succeeded.
    pub(super) accept_failures: [u64; 2],
    /// The reply bytes all clients' unanswered requests are expected to
    /// hold (see `client_io::MAX_UNANSWERED_BYTES`), kept by the clients.
    pub(super) unanswered_reply_bytes: Arc<AtomicUsize>,
    pub(super) deadline_ticks: u64,
    leader_seen: NodeId,
    /// Role and term last logged.
    role_seen: (Role, u64),
    pub(super) snapshots: Snapshots,
    /// Answers KEYS and large SCANs off the loop (`full_reads.rs`).
    full_reads: FullReads,
    /// Host names of peers being looked up off the loop.
    lookups: Lookups,
    /// Snapshot streams that ended outside `stream_snapshots`, to report.
    snapshot_reports: Vec<(NodeId, bool)>,
    /// Longest loop iteration (poll return to the end of the iteration) since start.
    pub(super) max_iteration: Duration,
    /// CPU time of the slow iterations (`max_iteration_cpu_us`).
    pub(super) iteration_cpu: super::clock::IterationCpu,
    /// When this node, as leader, next looks for expired keys to purge.
    next_purge: Instant,
    /// Membership: addresses, standing, CLUSTER commands (`cluster.rs`).
    pub(super) cluster: ClusterState,
}

impl Server {
    /// Wakes the loop from another thread (after sending it a stop message).
    pub fn waker(&self) -> Arc<mio::Waker> {
        Arc::clone(&self.waker)
    }

    pub(super) fn take_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    /// Loops until a signal asks it to stop; then finishes the iteration and
    /// shuts down (`Server::shut_down`).
    pub fn run(&mut self) -> Result<(), ServerError> {
        self.refresh_membership();
        let ids: Vec<NodeId> = self.peers.members.keys().copied().collect();
        for id in ids {
            let token = self.take_token();
            self.peers.connect(id, self.poll.registry(), token);
        }
        let mut events = Events::with_capacity(1024);
        while !self.shutdown {
            let timeout = if self.has_immediate_work() {
                Duration::ZERO
            } else {
                self.handoff_poll_timeout(self.clock.until_next_tick())
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err.into()),
            }
            let began = Instant::now();
            self.iteration_cpu.iteration_began(began);
            self.start_client_budget();
            let snapshotting = self.snapshots.is_writing();
            // Thread CPU time is a real syscall (no vDSO): read it only for the
            // snapshot-stall statistics, while a snapshot is written.
            let began_cpu = snapshotting.then(super::clock::thread_cpu_time);
            self.peers
                .resume_reads(self.poll.registry(), &mut self.peer_events);
            for event in events.iter() {
                if event.is_read_closed() || event.is_error() {
                    self.note_read_closed(event.token());
                }
                self.handle_event(event.token(), event.is_readable(), event.is_writable());
            }
            self.iterate()?;
            self.check_handoff();
            let took = began.elapsed();
            self.max_iteration = self.max_iteration.max(took);
            // An iteration that started a snapshot counts too, its CPU time
            // taken as its wall time (an upper bound).
            let took_cpu = began_cpu.map_or(took, |cpu| {
                super::clock::thread_cpu_time().saturating_sub(cpu)
            });
            let snapshotting = snapshotting || self.snapshots.is_writing();
            if snapshotting {
                self.snapshots.note_iteration(took, took_cpu);
            }
            if took.as_millis() as u64 > self.config.heartbeat_ms {
                // Exact while a snapshot is written; otherwise from the last mark.
                let exact = began_cpu.map(|_| took_cpu);
                let cpu = self.iteration_cpu.slow_iteration_ended(exact);
                let cpu = format!(" ({} us of CPU)", cpu.as_micros());
                debug!(
                    "slow loop iteration: {} us{}{}",
                    took.as_micros(),
                    cpu,
                    if snapshotting {
                        " while a snapshot was written"
                    } else {
                        ""
                    }
                );
            }
        }
        self.shut_down()
    }

    /// What the node does once its loop ended: answers its clients, tells
    /// its peers, syncs, and gets its clients their replies (for a second
    /// at most).
    pub(super) fn shut_down(&mut self) -> Result<(), ServerError> {
        info!("node {} shutting down", self.config.id);
        self.cluster.book.save_before_exit();
        self.answer_clients_before_exit();
        self.flush_clients();
        self.refuse_unproposed_forwards();
        self.tell_peers_stopping();
        self.peers.close_all(self.poll.registry());
        // Synced first: waiting for slow clients must not hold it up.
        let synced = self.disk.storage.sync();
        self.linger_before_exit();
        synced?;
        Ok(())
    }

    fn has_immediate_work(&self) -> bool {
        let leader_reachable =
            self.takes_writes() || self.peers.is_connected(self.replica.node().leader_id());
        // No client request is taken while a stopping leader hands over.
        let serving = !self.handing_over();
        (serving && self.parked.has_untried() && leader_reachable)
            || !self.dirty_clients.is_empty()
            || self.peers.has_unfinished_reads()
            || self.more_ready
            || (serving && self.over_budget_resumable())
            || self.cluster_parked_routable()
    }

    /// Everything after the socket events of one iteration.
    pub(super) fn iterate(&mut self) -> Result<(), ServerError> {
        self.replica.set_wall_clock(unix_millis());
        self.handle_peer_events();
        self.collect_syncs()?;
        self.collect_snapshots()?;
        self.run_timers();
        self.refresh_quorum_connected();
        self.dispatch_quorum_waits();
        self.dispatch_parked();
        self.cluster_tick();
        self.process_ready()?;
        self.release_relayed_replies();
        self.refresh_quorum_connected();
        self.stream_snapshots();
        self.snapshots.maybe_start(&mut self.replica);
        self.purge_expired_keys();
        for read in self.replica.take_full_reads() {
            self.full_reads.submit(read);
        }
        self.look_up_peers();
        self.full_reads.collect(&mut self.completions);
        self.deliver_completions();
        self.refuse_unroutable_parked();
        self.flush_clients();
        self.peers
            .flush(self.poll.registry(), &mut self.peer_events);
        Ok(())
    }

    fn note_read_closed(&mut self, token: Token) {
        match self.clients.get_mut(&token) {
            Some(client) => client.conn.note_read_closed(),
            None => self.peers.note_read_closed(token),
        }
    }

    fn handle_event(&mut self, token: Token, readable: bool, writable: bool) {
        match token {
            CLIENT_LISTENER => self.accept_clients(),
            RAFT_LISTENER => self.accept_peers(),
            SIGNALS => {
                if let Some(signals) = self.signals.as_mut() {
                    let received: Vec<i32> = signals.pending().collect();
                    for signal in received {
                        info!("received signal {}; stopping", signal);
                        self.stop_requested();
                    }
                }
            }
            // Wakes for the snapshot and full-reads threads (their results are
            // collected every iteration) and for a stop request from an
            // embedding process.
            WAKER => {
                if let Some(channel) = &self.stop_channel {
                    if channel.try_recv().is_ok() {
                        info!("asked to stop");
                        self.stop_requested();
                    }
                }
            }
            token if self.peers.owns(token) => {
                self.peers.ready(
                    token,
                    readable,
                    writable,
                    self.poll.registry(),
                    &mut self.peer_events,
                );
            }
            token => {
                if writable {
                    self.mark_dirty(token);
                }
                if readable {
                    self.read_client(token);
                }
            }
        }
    }

    pub(super) fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
