//! The shell: the only module with sockets, the clock, signals and child
//! processes. It owns one `mio::Poll` loop per node (see `event_loop`).

mod addresses;
mod client_io;
mod client_kill;
mod client_list;
mod clients;
mod clock;
mod cluster;
mod config_get;
mod conn;
mod connection;
mod event_loop;
mod fd_limit;
mod force_new;
mod founders;
mod full_reads;
mod info;
pub mod local_cluster;
mod lookups;
mod parked;
mod peers;
mod recover;
mod requests;
mod shutdown_command;
#[cfg(test)]
mod snapshot_install_tests;
mod snapshot_resend;
mod snapshots;
mod snapshotter;
mod syncer;
mod transactions;

use crate::config::{Config, FsyncMode};
use crate::kv::{KeyHasher, KvStore};
use crate::raft::{Entry, HardState, Node, RaftConfig, Restored, SnapshotMeta};
use crate::replica::{trailing_entries, Durable, Replica, SyncStart};
use crate::storage::snapshot;
use crate::storage::{Storage, StorageError, StorageOptions};
use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasherDefault;
use std::io;
use std::path::PathBuf;

/// A map keyed by the loop's own numbers (connection tokens, forward ids).
/// Why not `std`'s default SipHash: the loop looks up a client several times
/// per request, and SipHash was 3-4% of a pipelined leader's loop. The keys
/// are handed out by the loop, not chosen by peers or clients, so flooding one
/// bucket is not a concern here.
pub(crate) type LoopMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// Why a node stopped with an error (exit status 1).
#[derive(Debug)]
pub enum ServerError {
    Storage(StorageError),
    Bind {
        what: &'static str,
        addr: String,
        err: io::Error,
    },
    Io(io::Error),
    Fatal(String),
    /// A start the command line asked for that cannot be made (exit status
    /// 2, as a usage error): `--force-new-cluster` with nothing to recover.
    Usage(String),
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerError::Storage(err) => write!(f, "{}", err),
            ServerError::Bind { what, addr, err } => {
                write!(f, "cannot listen on {} address {}: {}", what, addr, err)
            }
            ServerError::Io(err) => write!(f, "{}", err),
            ServerError::Fatal(what) | ServerError::Usage(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for ServerError {}

impl From<StorageError> for ServerError {
    fn from(err: StorageError) -> Self {
        ServerError::Storage(err)
    }
}

impl From<io::Error> for ServerError {
    fn from(err: io::Error) -> Self {
        ServerError::Io(err)
    }
}

/// The storage as the replica sees it; `fsync = never` skips the data sync
/// (benchmarks only), never the stable file's.
pub(crate) struct DiskLog {
    pub storage: Storage,
    pub fsync: bool,
    pub snapshot_dir: PathBuf,
    /// A snapshot received from the leader and already decoded off the loop,
    /// for `install_snapshot` to publish and take.
    pub decoded: Option<snapshots::Decoded>,
    /// The sync thread (None until the loop starts it, and with `fsync = never`).
    pub syncer: Option<syncer::Syncer>,
}

impl Durable for DiskLog {
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.storage.append(entries)
    }
    fn set_hard_state(&mut self, hard_state: HardState) -> Result<(), StorageError> {
        self.storage.set_hard_state(hard_state)
    }
    fn start_sync(&mut self) -> Result<SyncStart, StorageError> {
        match (&mut self.syncer, self.fsync) {
            (_, false) => Ok(SyncStart::Synced),
            (Some(syncer), true) => Ok(SyncStart::Pending(
                syncer.submit(self.storage.take_sync_targets()),
            )),
            (None, true) => {
                self.storage.sync()?;
                Ok(SyncStart::Synced)
            }
        }
    }
    fn install_snapshot(&mut self, meta: &SnapshotMeta) -> Result<KvStore, StorageError> {
        let kv = match self.decoded.take() {
            Some(decoded) if decoded.file.meta() == meta => {
                // The stable file already holds the leader's term (the core's
                // hard state is stored before its snapshot), so a published
                // snapshot never has a term above it; and the log is reset
                // only once a start would load this snapshot, so a crash in
                // between leaves the old state or the new one, whole.
                decoded.file.publish()?;
                decoded.kv
            }
            _ => {
                // Not reached while the loop steps InstallSnapshot only after
                // the helper thread decoded its file; kept as a safe fallback.
                warn!("decoding snapshot {} on the event loop", meta.index);
                let loaded = snapshot::load(&self.snapshot_dir, meta.index, meta.term)?;
                KvStore::restore_from(&mut loaded.body.as_slice()).map_err(|e| {
                    StorageError::corrupt(&loaded.path, None, format!("does not decode: {}", e))
                })?
            }
        };
        self.storage.reset(meta.index + 1)?;
        info!(
            "installed snapshot at index {} term {} ({} keys); the log continues at {}",
            meta.index,
            meta.term,
            kv.len(),
            meta.index + 1
        );
        Ok(kv)
    }
}

/// Turns off glibc's fastbins. With millions of keys, overwrites free many
/// small values into them, and glibc consolidates them on the next larger
/// allocation, such as the table of a shard copied while a snapshot is
/// written; measured with 1,000,000 keys, that made single loop iterations
/// take 100+ ms of CPU, against ~13 ms with fastbins off
/// (tests/snapshot_process/one_million_keys.rs, one_million_keys_snapshot_stall_and_restart_time).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; M_MXFAST = 0 is a
    // documented setting ("disable fastbins"), valid at any time.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

/// Runs one node until SIGTERM/SIGINT.
pub fn run(config: Config) -> Result<(), ServerError> {
    // Caught from before recovery, which takes seconds with a large log or
    // snapshot: a signal meanwhile stops the node at the loop's first
    // iteration, exit status 0 (SPEC §5), instead of killing it.
    let signals = Signals::new([SIGTERM, SIGINT])?;
    build(config, event_loop::StopOn::Signals(signals))?.run()
}

/// A node running on its own thread inside this process (benches, tests).
pub struct NodeHandle {
    stop: crossbeam_channel::Sender<()>,
    waker: std::sync::Arc<mio::Waker>,
    thread: std::thread::JoinHandle<Result<(), ServerError>>,
}

impl NodeHandle {
    /// Stops the node as SIGTERM would and waits for its thread.
    pub fn stop(self) -> Result<(), ServerError> {
        let _ = self.stop.send(());
        self.waker.wake()?;
        self.thread
            .join()
            .unwrap_or_else(|_| Err(ServerError::Fatal("node thread panicked".into())))
    }
}

/// Starts a node on a new thread; it is listening when this returns.
pub fn spawn(config: Config) -> Result<NodeHandle, ServerError> {
    let (stop, receiver) = crossbeam_channel::bounded(1);
    let mut server = build(config, event_loop::StopOn::Channel(receiver))?;
    let waker = server.waker();
    let thread = std::thread::Builder::new()
        .name("raftkv-node".into())
        .spawn(move || server.run())?;
    Ok(NodeHandle {
        stop,
        waker,
        thread,
    })
}

fn build(
    mut config: Config,
    stop_on: event_loop::StopOn,
) -> Result<event_loop::Server, ServerError> {
    tune_allocator();
    if config.fsync == FsyncMode::Never {
        warn!("fsync = never: acknowledged writes can be lost on a crash (benchmarks only)");
    }
    let options = StorageOptions {
        check_payload: Some(crate::recovery::check_payload),
        written_after_log: &[crate::config::FOUNDERS_FILE],
        ..StorageOptions::default()
    };
    let mut storage = Storage::open(&config.data_dir, options)?;
    // Everything is checked before anything is written (the founders file,
    // the storage's repairs): a start refused for its data dir changes
    // nothing. (One that fails later, to write or to bind, may have.)
    let checked = recover::check(&config.data_dir, &storage)?;
    let founding = founders::decide(
        &config.data_dir,
        &config.cluster,
        config.id,
        &config.raft_addr,
    )?;
    let holds_state = checked.snapshot_index() > 0 || storage.last_index() > 0;
    if config.force_new_cluster && !holds_state {
        return Err(ServerError::Usage(format!(
            "--force-new-cluster: data dir {} holds no log or snapshot: there is no cluster to recover",
            config.data_dir.display()
        )));
    }
    founders::check_joiner_address(&config.data_dir, &founding, holds_state, &config.raft_addr)?;
    // The founders file first: on a data dir this node may not write, that
    // fails before the log's repairs have changed anything. `log/` before
    // it: `founders` without `log/` means the log was removed.
    storage.create_log_dir()?;
    config.cluster = founding.record(&config.data_dir)?;
    let mut recovered = recover::finish(
        &config.data_dir,
        &mut storage,
        checked,
        trailing_entries(config.snapshot_entries),
    )?;
    let passed_over = std::mem::take(&mut recovered.passed_over);
    // Where the log ended before this start appended anything: the entry
    // `--force-new-cluster` appends is no change made before it.
    let log_end_before_start = recovered
        .restored
        .entries
        .last()
        .map_or(recovered.restored.snapshot.index, |entry| entry.index);
    if config.force_new_cluster {
        let founders: Vec<_> = config.cluster.iter().map(|(id, _)| *id).collect();
        force_new::rewrite(
            &config.data_dir,
            &mut storage,
            &mut recovered.restored,
            &founders,
            config.id,
        )?;
    }
    let dropped = force_new::read_dropped(&config.data_dir)?;
    let tick = clock::tick_for(config.heartbeat_ms);
    let tick_ms = tick.as_millis() as u64;
    let raft_config = RaftConfig {
        id: config.id,
        voters: config.cluster.iter().map(|(id, _)| *id).collect(),
        learners: Vec::new(),
        election_ticks: (config.election_timeout_ms / tick_ms).max(2) as u32,
        heartbeat_ticks: (config.heartbeat_ms / tick_ms).max(1) as u32,
        pre_vote: true,
        check_quorum: true,
        max_inflight_msgs: 256,
        max_msg_bytes: 1 << 20,
        max_inflight_bytes: 16 << 20,
        max_apply_bytes: 4 << 20,
        acks_are_durable: config.fsync == FsyncMode::Always,
    };
    let clock = clock::Clock::new(tick);
    // What the address book and the node's standing need from the restored
    // state, before the core takes it.
    let restored_confs = Restored {
        hard_state: HardState::default(),
        snapshot: recovered.restored.snapshot.clone(),
        entries: cluster::conf_entries(&recovered.restored.entries)
            .cloned()
            .collect(),
    };
    let mut node = Node::new(raft_config, recovered.restored, clock.seed(config.id));
    if !dropped.is_empty() {
        info!(
            "ignoring nodes {:?}: dropped by --force-new-cluster ({})",
            dropped,
            config.data_dir.join(force_new::DROPPED_FILE).display()
        );
        node.ignore_dropped_peers(&dropped);
    }
    let mut replica = Replica::new(node, recovered.kv);
    replica.keep_dropped_reads();
    replica.answer_full_reads_elsewhere();
    replica.set_snapshot_policy(
        config.snapshot_entries,
        trailing_entries(config.snapshot_entries),
    );
    let disk = DiskLog {
        storage,
        fsync: config.fsync == FsyncMode::Always,
        snapshot_dir: snapshot::snapshot_dir(&config.data_dir),
        decoded: None,
        syncer: None,
    };
    let id = config.id;
    let mut server = event_loop::Server::new(
        config,
        clock,
        replica,
        disk,
        stop_on,
        recovered.snapshot_bytes,
    )?;
    server
        .cluster
        .restored(id, &restored_confs, log_end_before_start);
    recover::set_aside(&passed_over);
    Ok(server)
}
