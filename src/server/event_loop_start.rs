//! Building a node's server: the poll and its waker, the helper threads, the
//! two listeners, what stops the loop, the peer connections and membership,
//! and the first value of every field of `Server`.
//!
//! Separate from `event_loop.rs` because it runs once, before the loop: the
//! loop reads without it, and what each piece is set up with (and why a
//! restarted joiner counts as a member) reads best in one place.

use super::timers::Timer;
use super::{
    Server, StopOn, Waiter, CLIENT_LISTENER, FIRST_CONNECTION, RAFT_LISTENER, SIGNALS, WAKER,
};
use crate::config::Config;
use crate::raft::{Role, NO_NODE};
use crate::replica::Replica;
use crate::server::addresses::AddressBook;
use crate::server::clock::Clock;
use crate::server::cluster::ClusterState;
use crate::server::full_reads::FullReads;
use crate::server::lookups::Lookups;
use crate::server::parked::ParkedRequests;
use crate::server::peers::{LocalIdentity, Peers};
use crate::server::snapshots::Snapshots;
use crate::server::snapshotter::Snapshotter;
use crate::server::{DiskLog, LoopMap, ServerError};
use crate::timer_wheel::TimerWheel;
use log::info;
use mio::net::TcpListener;
use mio::{Interest, Poll, Waker};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn bind(what: &'static str, addr: &str) -> Result<TcpListener, ServerError> {
    let bind_err = |err| ServerError::Bind {
        what,
        addr: addr.to_string(),
        err,
    };
    let sockaddr = crate::server::lookups::resolve(addr).map_err(bind_err)?;
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
            disk.syncer = Some(crate::server::syncer::Syncer::start(Arc::clone(&waker))?);
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
        let tick_ms = crate::server::clock::tick_for(config.heartbeat_ms).as_millis() as u64;
        let deadline_ticks = (config.election_timeout_ms * 4).div_ceil(tick_ms);
        info!(
            "node {} serving clients on {} and peers on {}",
            config.id, config.client_addr, config.raft_addr
        );
        if !was_member {
            // Otherwise the log of a node started with `join` says nothing
            // until a leader contacts it, which an operator cannot tell
            // from a node that hangs.
            info!(
                "node {} is not a member yet: it waits for a leader to add it (CLUSTER ADD {} {} on any member)",
                config.id, config.id, config.raft_addr
            );
        }
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
            reads_held: Default::default(),
            rechecks_deferred: None,
            next_forward_id: crate::server::clock::first_forward_id(),
            forwards_read: HashMap::new(),
            forward_floors: HashMap::new(),
            parked: ParkedRequests::default(),
            quorum_connected: true,
            quorum_waits: VecDeque::new(),
            client_listener: Some(client_listener),
            raft_listener: Some(raft_listener),
            signals,
            stop_channel,
            waker,
            next_token: FIRST_CONNECTION,
            next_client_id: 1,
            commands_processed: 0,
            max_clients: crate::server::fd_limit::client_capacity(),
            shutdown: false,
            handoff: None,
            completions: Vec::new(),
            peer_events: Vec::new(),
            dirty_clients: Vec::new(),
            relayed_replies: VecDeque::new(),
            more_ready: false,
            iteration_client_bytes: 0,
            over_budget: VecDeque::new(),
            accept_retry: [false; 2],
            accept_failures: [0; 2],
            unanswered_reply_bytes: Arc::new(AtomicUsize::new(0)),
            deadline_ticks,
            leader_seen: NO_NODE,
            role_seen: (Role::Follower, 0),
            snapshots,
            full_reads,
            lookups,
            snapshot_reports: Vec::new(),
            max_iteration: Duration::ZERO,
            iteration_cpu: crate::server::clock::IterationCpu::new(Duration::from_millis(tick_ms)),
            next_purge: Instant::now(),
            cluster,
        })
    }
}
