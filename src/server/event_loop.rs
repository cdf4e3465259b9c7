//! One node's event loop: poll, read, feed the core, handle its output batch
//! with one sync, answer, write. See DESIGN.md "The loop".

use super::addresses::AddressBook;
use super::clients::Client;
use super::clock::Clock;
use super::cluster::ClusterState;
use super::full_reads::FullReads;
use super::lookups::Lookups;
use super::peers::{LocalIdentity, PeerEvent, Peers};
use super::snapshots::Snapshots;
use super::snapshotter::Snapshotter;
use super::{DiskLog, LoopMap, ServerError};
use crate::config::Config;
use crate::kv::Command;
use crate::raft::{Message, MessageBody, NodeId, Role, SoftState, NO_NODE};
use crate::replica::{Completion, PurgeLimits, PurgeOutcome, Replica, Transport};
use crate::timer_wheel::TimerWheel;
use crate::wire::peer_msg::PeerMessage;
use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook_mio::v1_0::Signals;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENT_LISTENER: Token = Token(0);
const RAFT_LISTENER: Token = Token(1);
const SIGNALS: Token = Token(2);
/// The snapshot or full-reads thread finished a job, or an embedding process
/// asks to stop.
const WAKER: Token = Token(3);
const FIRST_CONNECTION: usize = 16;

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

/// The wall clock in unix milliseconds (0 before 1970: a broken clock only
/// makes keys with a timeout live longer).
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

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
    /// The core's logical clock: tick `n`, then schedule tick `n + 1` (a
    /// late wake-up runs every tick it missed, so no tick is lost).
    RaftTick(u64),
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
    /// Client requests waiting for a leader to be known, in arrival order.
    pub(super) parked: VecDeque<(Token, u64, Command)>,
    /// Whether this node, as leader, has open connections to a majority of
    /// the voters (itself counted): see `Server::takes_writes`. Refreshed
    /// each iteration.
    pub(super) quorum_connected: bool,
    /// Writes followers forwarded while this leader had no connected quorum,
    /// and requests forwarded behind them: (follower, forward id, command,
    /// tick by which to answer `-TRYAGAIN`).
    pub(super) quorum_waits: VecDeque<(NodeId, u64, Command, u64)>,
    pub(super) client_listener: TcpListener,
    raft_listener: TcpListener,
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
    pub(super) completions: Vec<Completion<Waiter>>,
    peer_events: Vec<PeerEvent>,
    /// Clients with replies to encode or output to write this iteration.
    pub(super) dirty_clients: Vec<Token>,
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
    /// When this node, as leader, next looks for expired keys to purge.
    next_purge: Instant,
    /// Membership: addresses, standing, CLUSTER commands (`cluster.rs`).
    pub(super) cluster: ClusterState,
}

fn bind(what: &'static str, addr: &str) -> Result<TcpListener, ServerError> {
    let bind_err = |err| ServerError::Bind {
        what,
        addr: addr.to_string(),
        err,
    };
    let sockaddr = super::lookups::resolve(addr).map_err(bind_err)?;
    TcpListener::bind(sockaddr).map_err(bind_err)
}

impl Server {
    pub fn new(
        config: Config,
        clock: Clock,
        replica: Replica<Waiter>,
        disk: DiskLog,
        stop_on: StopOn,
        snapshot_bytes: u64,
    ) -> Result<Server, ServerError> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let snapshotter = Snapshotter::start(disk.snapshot_dir.clone(), Arc::clone(&waker))?;
        let mut disk = disk;
        if disk.fsync {
            disk.syncer = Some(super::syncer::Syncer::start(Arc::clone(&waker))?);
        }
        let snapshots = Snapshots::new(disk.snapshot_dir.clone(), snapshotter, snapshot_bytes);
        let full_reads = FullReads::start(Arc::clone(&waker))?;
        let lookups = Lookups::new(Arc::clone(&waker));
        let mut client_listener = bind("client", &config.client_addr)?;
        let mut raft_listener = bind("raft", &config.raft_addr)?;
        let registry = poll.registry();
        registry.register(&mut client_listener, CLIENT_LISTENER, Interest::READABLE)?;
        registry.register(&mut raft_listener, RAFT_LISTENER, Interest::READABLE)?;
        let (signals, stop_channel) = match stop_on {
            StopOn::Signals(mut signals) => {
                registry.register(&mut signals, SIGNALS, Interest::READABLE)?;
                (Some(signals), None)
            }
            StopOn::Channel(receiver) => (None, Some(receiver)),
        };
        let identity = LocalIdentity {
            id: config.id,
            cluster_name: config.cluster_name.clone(),
            raft_addr: config.raft_addr.clone(),
            client_addr: config.client_addr.clone(),
        };
        let peers =
            Peers::new(identity, &config.cluster).with_election_timeout(config.election_timeout_ms);
        let book = AddressBook::load(
            (config.id, &config.raft_addr, &config.client_addr),
            Some(&config.data_dir),
            &config.cluster,
        );
        // A joiner holds log entries or a snapshot only once a leader has
        // replicated to it, which it does only after adding it: so a joiner
        // restarted with state was a member, and is removed if the
        // configuration it restarts with leaves it out, even when neither its
        // snapshot nor its log names it (a snapshot taken past its removal).
        let founder = !config.cluster.is_empty();
        let was_member = founder || replica.status().last_index > 0;
        let cluster = ClusterState::new(book, founder, was_member);
        let tick_ms = super::clock::tick_for(config.heartbeat_ms).as_millis() as u64;
        let deadline_ticks = (config.election_timeout_ms * 4).div_ceil(tick_ms);
        info!(
            "node {} serving clients on {} and peers on {}",
            config.id, config.client_addr, config.raft_addr
        );
        Ok(Server {
            config,
            poll,
            clock,
            started: Instant::now(),
            wheel: {
                let mut wheel = TimerWheel::new(1024);
                wheel.schedule(1, Timer::RaftTick(1));
                wheel
            },
            replica,
            disk,
            peers,
            clients: LoopMap::default(),
            forwards: LoopMap::default(),
            forwards_to_check: false,
            next_forward_id: 1,
            parked: VecDeque::new(),
            quorum_connected: true,
            quorum_waits: VecDeque::new(),
            client_listener,
            raft_listener,
            signals,
            stop_channel,
            waker,
            next_token: FIRST_CONNECTION,
            next_client_id: 1,
            commands_processed: 0,
            max_clients: super::fd_limit::client_capacity(),
            shutdown: false,
            completions: Vec::new(),
            peer_events: Vec::new(),
            dirty_clients: Vec::new(),
            deadline_ticks,
            leader_seen: NO_NODE,
            role_seen: (Role::Follower, 0),
            snapshots,
            full_reads,
            lookups,
            snapshot_reports: Vec::new(),
            max_iteration: Duration::ZERO,
            next_purge: Instant::now(),
            cluster,
        })
    }

    /// Wakes the loop from another thread (after sending it a stop message).
    pub fn waker(&self) -> Arc<mio::Waker> {
        Arc::clone(&self.waker)
    }

    /// Starts the lookups of peer host names that dials asked for, and dials
    /// those that were answered (see `lookups`).
    fn look_up_peers(&mut self) {
        for (peer, raft_addr) in std::mem::take(&mut self.peers.lookups) {
            self.lookups.start(peer, raft_addr);
        }
        let answers: Vec<_> = self.lookups.answers().collect();
        for answer in answers {
            let token = self.take_token();
            self.peers.looked_up(
                answer.peer,
                &answer.raft_addr,
                answer.result,
                self.poll.registry(),
                token,
            );
        }
    }

    pub(super) fn take_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    /// Loops until a signal asks it to stop; then finishes the iteration, flushes and returns.
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
                self.clock.until_next_tick()
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err.into()),
            }
            let began = Instant::now();
            let snapshotting = self.snapshots.is_writing();
            // Thread CPU time is a real syscall (no vDSO): read it only for the
            // snapshot-stall statistics, while a snapshot is written.
            let began_cpu = snapshotting.then(super::clock::thread_cpu_time);
            for event in events.iter() {
                if event.is_read_closed() || event.is_error() {
                    self.note_read_closed(event.token());
                }
                self.handle_event(event.token(), event.is_readable(), event.is_writable());
            }
            self.iterate()?;
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
                // The CPU time is measured only while a snapshot is written.
                let cpu = match began_cpu {
                    Some(_) => format!(" ({} us of CPU)", took_cpu.as_micros()),
                    None => String::new(),
                };
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
        info!("node {} shutting down", self.config.id);
        self.flush_clients();
        self.peers.close_all(self.poll.registry());
        self.disk.storage.sync()?;
        Ok(())
    }

    /// As leader: proposes the deletion of keys whose timeout has passed,
    /// so that the memory of expired keys nobody reads again comes back. A
    /// look that finds none waits [`PURGE_EVERY`] for the next (all shards
    /// in about 6 s); while there are more, purges follow each other.
    fn purge_expired_keys(&mut self) {
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

    fn has_immediate_work(&self) -> bool {
        let leader_reachable =
            self.takes_writes() || self.peers.is_connected(self.replica.node().leader_id());
        (!self.parked.is_empty() && leader_reachable) || !self.dirty_clients.is_empty()
    }

    /// Everything after the socket events of one iteration.
    fn iterate(&mut self) -> Result<(), ServerError> {
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
                    for signal in signals.pending() {
                        info!("received signal {}; stopping", signal);
                        self.shutdown = true;
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
                        self.shutdown = true;
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

    fn accept_peers(&mut self) {
        loop {
            match self.raft_listener.accept() {
                Ok((stream, _)) => {
                    let token = self.take_token();
                    self.peers.accept(stream, self.poll.registry(), token);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) => {
                    warn!("accept on the raft port failed: {}", err);
                    return;
                }
            }
        }
    }

    fn handle_peer_events(&mut self) {
        let events = std::mem::take(&mut self.peer_events);
        for event in events {
            match event {
                PeerEvent::Message { from, message } => match message {
                    PeerMessage::Raft(message) => self.step_peer_message(message),
                    PeerMessage::Forward { id, payload } => self.handle_forward(from, id, &payload),
                    PeerMessage::ForwardReply { id, reply } => self.handle_forward_reply(id, reply),
                    PeerMessage::SnapshotChunk {
                        snapshot_index,
                        snapshot_term,
                        offset,
                        total,
                        data,
                    } => self.snapshots.on_chunk(
                        from,
                        snapshot_index,
                        snapshot_term,
                        offset,
                        total,
                        &data,
                    ),
                },
                PeerEvent::Disconnected(id) => {
                    self.forwards_to_check = true;
                    self.replica.report_unreachable(id);
                    self.snapshots
                        .peer_disconnected(id, &mut self.snapshot_reports);
                }
            }
        }
    }

    /// An InstallSnapshot that would replace our state waits until the
    /// snapshot thread has checked and decoded the file streamed before it.
    fn step_peer_message(&mut self, message: Message) {
        if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
            if let Some(message) = self.snapshots.on_install_message(message, &self.replica) {
                self.replica.step(message);
            }
        } else if self.snapshots.is_finishing()
            && matches!(message.body, MessageBody::Append { .. })
        {
            // Our log is still the one before the snapshot, so the core would
            // reject this, and the leader, whose log no longer holds what we
            // lack, would stream the whole snapshot again. Dropped instead:
            // the leader probes again after its next heartbeat, answered once
            // the snapshot is in.
            debug!(
                "append from node {} dropped: a snapshot is being finished",
                message.from
            );
        } else {
            self.replica.step(message);
        }
    }

    /// Results of the snapshot thread; a written snapshot shrinks the log
    /// (the entries and segment files it lets go of are freed by the thread).
    /// Releases what the batches whose background sync finished promised.
    fn collect_syncs(&mut self) -> Result<(), ServerError> {
        let Some(result) = self.disk.syncer.as_ref().and_then(|s| s.try_done()) else {
            return Ok(());
        };
        let ticket = result.map_err(|err| ServerError::Fatal(format!("sync failed: {}", err)))?;
        let mut transport = PeerTransport {
            peers: &mut self.peers,
            registry: self.poll.registry(),
            events: &mut self.peer_events,
            snapshots: &mut self.snapshots.requested,
        };
        self.replica.synced(ticket, &mut transport);
        Ok(())
    }

    fn collect_snapshots(&mut self) -> Result<(), ServerError> {
        let compacted = self
            .snapshots
            .collect(&mut self.replica, &mut self.disk.decoded)?;
        if let Some(compacted) = compacted {
            let before = self.disk.storage.first_index();
            let segments = self.disk.storage.detach_before(compacted.keep_from);
            let after = self.disk.storage.first_index();
            if after > before {
                info!(
                    "log compacted: first index {} -> {} ({} bytes of segments left)",
                    before,
                    after,
                    self.disk.storage.log_bytes()
                );
            }
            self.snapshots.remove_segments(segments);
            self.snapshots.free(compacted.dropped);
        }
        Ok(())
    }

    /// Starts streams for the InstallSnapshots the core sent, queues more
    /// chunks on running ones, and reports finished streams to the core.
    fn stream_snapshots(&mut self) {
        // A snapshot the core did not install (it learned the entries
        // another way) is not kept decoded.
        self.disk.decoded = None;
        let mut reports = std::mem::take(&mut self.snapshot_reports);
        let leader_term = self.replica.is_leader().then(|| self.replica.node().term());
        self.snapshots.start_streams(leader_term, &mut reports);
        self.snapshots
            .pump(&mut self.peers, leader_term, &mut reports);
        for (to, ok) in reports {
            self.replica.report_snapshot(to, ok);
        }
    }

    /// Fires every timer due by now: heartbeats and election timeouts (through
    /// the core's tick), request deadlines, reconnects.
    fn run_timers(&mut self) {
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
                    Timer::Reconnect(id) => {
                        let token = self.take_token();
                        self.peers.connect(id, self.poll.registry(), token);
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
        let tick_ms = super::clock::tick_for(self.config.heartbeat_ms).as_millis() as u64;
        (span.as_millis() as u64).div_ceil(tick_ms.max(1))
    }

    /// Closes a lingering client `after` from now, if it is still there.
    pub(super) fn schedule_end_linger(&mut self, token: Token, after: Duration) {
        let at = self.clock.now_ticks() + self.ticks_in(after);
        self.wheel.schedule(at, Timer::EndLinger(token));
    }

    pub(super) fn schedule_deadline(&mut self, token: Token, seq: u64) {
        let at = self.clock.now_ticks() + self.deadline_ticks;
        self.wheel.schedule(at, Timer::Deadline { token, seq });
    }

    pub(super) fn now_ticks(&self) -> u64 {
        self.clock.now_ticks()
    }

    fn process_ready(&mut self) -> Result<(), ServerError> {
        let mut transport = PeerTransport {
            peers: &mut self.peers,
            registry: self.poll.registry(),
            events: &mut self.peer_events,
            snapshots: &mut self.snapshots.requested,
        };
        let mut outcome = self
            .replica
            .handle_ready(&mut self.disk, &mut transport, &mut self.completions)
            .map_err(|err| ServerError::Fatal(err.to_string()))?;
        if let Some(replaced) = outcome.replaced_state.take() {
            self.snapshots.free(replaced);
        }
        for flushed in outcome.flushed.drain(..) {
            self.snapshots.free(flushed);
        }
        self.route_dropped_reads();
        self.cluster_after_ready(&outcome);
        for id in std::mem::take(&mut self.peers.unreachable) {
            self.replica.report_unreachable(id);
        }
        if let Some(soft) = outcome.soft_state {
            self.forwards_to_check = true;
            self.log_soft_state(soft);
        }
        if std::mem::take(&mut self.forwards_to_check) {
            self.settle_orphaned_forwards();
        }
        Ok(())
    }

    /// One line per change of role (with its term) or of the known leader.
    fn log_soft_state(&mut self, soft: SoftState) {
        let id = self.config.id;
        let role = match soft.role {
            Role::PreCandidate => "pre-candidate",
            other => other.as_str(),
        };
        if (soft.role, soft.term) != self.role_seen {
            match soft.role {
                Role::Leader => info!("node {} became leader in term {}", id, soft.term),
                Role::Follower if soft.leader_id != NO_NODE => info!(
                    "node {} is follower in term {}, leader is node {}",
                    id, soft.term, soft.leader_id
                ),
                _ => info!("node {} is {} in term {}", id, role, soft.term),
            }
        } else if soft.leader_id != self.leader_seen {
            if soft.leader_id == NO_NODE {
                info!("no leader in term {} (role {})", soft.term, role);
            } else {
                info!("leader is node {} in term {}", soft.leader_id, soft.term);
            }
        }
        self.role_seen = (soft.role, soft.term);
        self.leader_seen = soft.leader_id;
    }

    pub(super) fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// The replica's view of the peer connections.
struct PeerTransport<'a> {
    peers: &'a mut Peers,
    registry: &'a Registry,
    events: &'a mut Vec<PeerEvent>,
    /// InstallSnapshot messages: streamed with their bytes after the Ready.
    snapshots: &'a mut Vec<Message>,
}

impl Transport for PeerTransport<'_> {
    fn send(&mut self, message: Message) {
        if matches!(message.body, MessageBody::InstallSnapshot { .. }) {
            self.snapshots.push(message);
        } else {
            self.peers.send_raft(message);
        }
    }
    fn flush(&mut self) {
        self.peers.flush(self.registry, self.events);
    }
}
