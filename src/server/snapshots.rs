//! The event loop's side of snapshots: taking them (through the helper
//! thread), streaming the newest one to followers that are behind the
//! leader's log, and receiving one from the leader.
//!
//! Leader: when the core hands the transport an InstallSnapshot, the file it
//! names is streamed to that follower as `SnapshotChunk` frames, a few at a
//! time: no more is queued while the connection holds [`SEND_WINDOW`] unsent
//! bytes, so each iteration does a bounded amount of work and clients and
//! heartbeats keep flowing. After the last chunk the InstallSnapshot message
//! itself is queued on the same connection (so it arrives after the bytes)
//! and the core is told the send succeeded; a dropped connection, or a lost
//! leadership, reports failure instead. Exactly one report per message. That
//! side is in `snapshots_streaming.rs`.
//!
//! Follower: chunks go to a temp file. When the InstallSnapshot message
//! arrives and the core would install it, the complete file goes to the
//! helper thread, which verifies, syncs and decodes it; only then is the
//! message stepped into the core, whose `Ready` then stores the leader's
//! term and installs the decoded map (`DiskLog::install_snapshot`), which
//! publishes the file under its final name and resets the log. A file the
//! core does not install is deleted as a temp file, never published: a
//! published one would be the state a start takes, and would have pruned
//! the older snapshots, which are the fallback.

use super::snapshot_resend::ResendWaits;
use super::snapshotter::{Done, Job, Snapshotter};
use crate::kv::KvStore;
use crate::raft::{Message, MessageBody, NodeId, SnapshotMeta, NO_NODE};
use crate::replica::{Compacted, Replica};
use crate::storage::snapshot::{RawReader, ReceivedSnapshot, SnapshotReceiver};
use crate::storage::{SegmentRemover, StorageError};
use log::{debug, info, warn};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "snapshots_streaming.rs"]
mod streaming;

/// Bytes of one chunk frame's data.
pub const CHUNK_BYTES: usize = 512 << 10;
/// No more chunks are queued for a follower while its connection holds this
/// many unsent bytes.
pub const SEND_WINDOW: usize = 4 << 20;

/// Whether the core still wants the snapshot at an index streamed to a
/// node (`Node::snapshot_wanted`).
pub type Wanted<'a> = &'a dyn Fn(NodeId, u64) -> bool;

/// A snapshot being streamed to one follower.
struct Outgoing {
    message: Message,
    reader: RawReader,
    offset: u64,
}

/// One `SnapshotChunk` frame, and the node it came from.
pub struct Chunk<'a> {
    pub from: NodeId,
    /// Index and term of the snapshot's last entry: they name the snapshot,
    /// and say nothing of the term its sender leads.
    pub index: u64,
    pub term: u64,
    pub offset: u64,
    pub total: u64,
    pub data: &'a [u8],
}

/// A snapshot arriving from the leader.
struct Incoming {
    from: NodeId,
    index: u64,
    term: u64,
    total: u64,
    receiver: SnapshotReceiver,
}

/// A snapshot received from the leader, checked and decoded off the loop,
/// that the core is about to install: `DiskLog::install_snapshot` publishes
/// `file` and takes `kv`. Dropped instead, the file goes.
pub struct Decoded {
    pub file: ReceivedSnapshot,
    pub kv: KvStore,
}

/// What INFO shows about snapshots.
#[derive(Clone, Debug, Default)]
pub struct SnapshotStats {
    /// Size of the newest snapshot file this node took, received or started from.
    pub bytes: u64,
    /// How long writing the last snapshot took (helper thread, wall time).
    pub last_duration: Duration,
    pub taken: u64,
    pub received: u64,
    pub sent: u64,
    /// Longest loop iteration while the last snapshot was being written:
    /// wall time, and the loop thread's CPU time.
    pub last_max_iteration: Duration,
    pub last_max_iteration_cpu: Duration,
}

pub struct Snapshots {
    dir: PathBuf,
    thread: Snapshotter,
    /// When the snapshot being written was handed to the thread.
    writing_since: Option<Instant>,
    /// Longest loop iteration since `writing_since` (wall, CPU).
    writing_max_iteration: (Duration, Duration),
    outgoing: BTreeMap<NodeId, Outgoing>,
    /// Repeats of a snapshot a follower could not use, held back.
    resend: ResendWaits,
    incoming: Option<Incoming>,
    /// The InstallSnapshot message waiting for its file to be finished.
    finishing: Option<Message>,
    /// InstallSnapshot messages the core handed the transport.
    pub requested: Vec<Message>,
    pub stats: SnapshotStats,
}

impl Snapshots {
    pub fn new(dir: PathBuf, thread: Snapshotter, initial_bytes: u64) -> Snapshots {
        Snapshots {
            dir,
            thread,
            writing_since: None,
            writing_max_iteration: (Duration::ZERO, Duration::ZERO),
            outgoing: BTreeMap::new(),
            resend: ResendWaits::default(),
            incoming: None,
            finishing: None,
            requested: Vec::new(),
            stats: SnapshotStats {
                bytes: initial_bytes,
                ..SnapshotStats::default()
            },
        }
    }

    /// Whether a received snapshot is being checked and decoded.
    pub fn is_finishing(&self) -> bool {
        self.finishing.is_some()
    }

    pub fn is_writing(&self) -> bool {
        self.writing_since.is_some()
    }

    /// Records the wall and CPU time of a loop iteration during which a
    /// snapshot was being written. The iteration that collected it (and
    /// compacted the log) counts toward the figures already reported.
    pub fn note_iteration(&mut self, wall: Duration, cpu: Duration) {
        let (max_wall, max_cpu) = &mut self.writing_max_iteration;
        *max_wall = (*max_wall).max(wall);
        *max_cpu = (*max_cpu).max(cpu);
        if self.writing_since.is_none() {
            let stats = &mut self.stats;
            stats.last_max_iteration = stats.last_max_iteration.max(wall);
            stats.last_max_iteration_cpu = stats.last_max_iteration_cpu.max(cpu);
        }
    }

    /// Starts writing a snapshot if the replica says one is due.
    pub fn maybe_start<W>(&mut self, replica: &mut Replica<W>) {
        if self.writing_since.is_some() {
            return;
        }
        if let Some((meta, view)) = replica.take_snapshot() {
            info!(
                "taking snapshot at index {} term {} ({} keys)",
                meta.index,
                meta.term,
                view.len()
            );
            self.writing_since = Some(Instant::now());
            self.writing_max_iteration = (Duration::ZERO, Duration::ZERO);
            self.thread.submit(Job::Write { meta, view });
        }
    }

    /// Takes the helper thread's results: a written snapshot lets the core
    /// and the log compact (returned, for the caller to detach segments and
    /// free the dropped entries); a finished received one is put in `decoded` for
    /// `DiskLog::install_snapshot` and its message stepped into the core. A
    /// segment file that could not be deleted is an error. Also drops a
    /// snapshot being received from a node that no longer leads (see
    /// [`Self::drop_abandoned_incoming`]).
    pub fn collect<W>(
        &mut self,
        replica: &mut Replica<W>,
        decoded: &mut Option<Decoded>,
    ) -> Result<Option<Compacted>, StorageError> {
        self.drop_abandoned_incoming(replica);
        let mut compacted = None;
        while let Some(done) = self.thread.try_done() {
            match done {
                Done::Written {
                    meta,
                    result,
                    elapsed,
                } => {
                    self.writing_since = None;
                    match result {
                        Ok(info) => {
                            let (wall, cpu) = self.writing_max_iteration;
                            info!(
                                "snapshot at index {} written: {} bytes in {} ms (longest loop iteration meanwhile {} us, {} us of CPU)",
                                meta.index,
                                info.bytes,
                                elapsed.as_millis(),
                                wall.as_micros(),
                                cpu.as_micros()
                            );
                            self.stats.bytes = info.bytes;
                            self.stats.last_duration = elapsed;
                            self.stats.last_max_iteration = wall;
                            self.stats.last_max_iteration_cpu = cpu;
                            self.stats.taken += 1;
                            compacted = Some(replica.snapshot_written(&meta));
                        }
                        Err(err) => {
                            warn!("snapshot at index {} failed: {}", meta.index, err);
                            replica.snapshot_failed();
                        }
                    }
                }
                Done::Received {
                    meta,
                    result,
                    elapsed,
                } => self.received(meta, result, elapsed, replica, decoded),
                Done::SegmentsRemoved { result } => result?,
                Done::Freed => {}
            }
        }
        Ok(compacted)
    }

    /// Drops the snapshot being received, and its temporary file, once the
    /// core follows (or is) a leader other than its sender: that stream will
    /// never continue (a leader of a newer term streams from offset 0) and its
    /// InstallSnapshot, of an older term, will not be installed. Kept, its
    /// file held up to a snapshot's size on disk until another stream began or
    /// the node restarted, and the new leader may catch the node up from its
    /// log and never stream to it.
    fn drop_abandoned_incoming<W>(&mut self, replica: &Replica<W>) {
        let leader = replica.node().leader_id();
        let Some(inc) = &self.incoming else {
            return;
        };
        if leader != NO_NODE && leader != inc.from {
            info!(
                "snapshot {}/{} from node {} abandoned: node {} leads now ({} of {} bytes had arrived)",
                inc.index,
                inc.term,
                inc.from,
                leader,
                inc.receiver.received(),
                inc.total
            );
            self.incoming = None;
        }
    }

    /// Deletes detached segment files off the loop.
    pub fn remove_segments(&mut self, segments: SegmentRemover) {
        self.thread.submit(Job::RemoveSegments(segments));
    }

    /// Frees `garbage` off the loop.
    pub fn free(&mut self, garbage: impl Send + 'static) {
        self.thread.submit(Job::Free(Box::new(garbage)));
    }

    fn received<W>(
        &mut self,
        meta: SnapshotMeta,
        result: Result<(ReceivedSnapshot, KvStore), StorageError>,
        elapsed: Duration,
        replica: &mut Replica<W>,
        decoded: &mut Option<Decoded>,
    ) {
        let message = self.finishing.take();
        match result {
            Ok((file, kv)) => {
                info!(
                    "snapshot at index {} received from the leader: {} bytes, {} keys, checked and loaded in {} ms",
                    meta.index,
                    file.bytes(),
                    kv.len(),
                    elapsed.as_millis()
                );
                match message {
                    Some(message) if replica.node().would_install_snapshot(message.term, &meta) => {
                        // Only for one the core installs: INFO's
                        // snapshot_bytes is the size of the snapshot the node
                        // holds, and a removed file is none.
                        self.stats.bytes = file.bytes();
                        self.stats.received += 1;
                        *decoded = Some(Decoded { file, kv });
                        replica.step(message);
                    }
                    // A new term began, or the log reached its index (the
                    // node may even hold its own snapshot there, under the
                    // name this one would take), while it was checked.
                    _ => {
                        info!("snapshot at index {} not installed (a newer term or log passed it while it was checked): removed", meta.index);
                        self.free(Decoded { file, kv });
                    }
                }
            }
            Err(err) => warn!(
                "snapshot at index {} from the leader is unusable: {}",
                meta.index, err
            ),
        }
    }

    /// A chunk of a snapshot. A chunk at offset 0 begins a new one, unless
    /// its sender is not `leader` (the leader this node follows, or
    /// [`NO_NODE`] while it knows none); a later chunk from another node than
    /// the one being received is ignored; one from the same node that does
    /// not continue its snapshot is dropped with it: the leader starts over.
    pub fn on_chunk(&mut self, chunk: Chunk<'_>, leader: NodeId) {
        let Chunk {
            from,
            index,
            term,
            offset,
            total,
            data,
        } = chunk;
        if self.finishing.is_some() {
            // One snapshot at a time; the leader will send again if needed.
            return;
        }
        if offset == 0 && leader != NO_NODE && leader != from {
            // A node deposed without knowing it yet (its repeat came due, or
            // it queued the stream before our rejection reached it). Taken,
            // it replaced the stream of the node that leads now, whose later
            // chunks then continued nothing and whose snapshot was streamed
            // in full again after a wait; and this one would have been
            // dropped at the next `collect` anyway.
            debug!(
                "snapshot {}/{} from {} ignored: node {} leads",
                index, term, from, leader
            );
            return;
        }
        if offset == 0 {
            // Dropped first: the new receiver may use the same temp file.
            self.incoming = None;
            match SnapshotReceiver::create(&self.dir, index, term) {
                Ok(receiver) => {
                    debug!(
                        "receiving snapshot {}/{} ({} bytes) from {}",
                        index, term, total, from
                    );
                    self.incoming = Some(Incoming {
                        from,
                        index,
                        term,
                        total,
                        receiver,
                    });
                }
                Err(err) => warn!("cannot receive a snapshot: {}", err),
            }
        }
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        if inc.from != from {
            // The rest of a stream another node began earlier (at offset 0,
            // which would have replaced this one): one that led an earlier
            // term and has not learned it yet, say. It continues nothing
            // here, and must not drop the stream of the node that leads now.
            debug!(
                "snapshot chunk {}/{} at {} from {} ignored: receiving one from {}",
                index, term, offset, from, inc.from
            );
            return;
        }
        let continues = (inc.from, inc.index, inc.term, inc.total) == (from, index, term, total)
            && inc.receiver.received() == offset;
        if !continues {
            debug!(
                "snapshot chunk {}/{} at {} from {} does not continue the one being received",
                index, term, offset, from
            );
            self.incoming = None;
            return;
        }
        if let Err(err) = inc.receiver.write_at(offset, data) {
            warn!("cannot write a received snapshot: {}", err);
            self.incoming = None;
        }
    }

    /// An InstallSnapshot message from the leader. Returns it when it can be
    /// stepped into the core now (the core will not install it, so it needs
    /// no bytes); otherwise the received file goes to the helper thread and
    /// the message waits for it, or is dropped if its bytes did not all arrive
    /// (the leader sends again).
    pub fn on_install_message<W>(
        &mut self,
        message: Message,
        replica: &Replica<W>,
    ) -> Option<Message> {
        let MessageBody::InstallSnapshot { meta } = &message.body else {
            return Some(message);
        };
        if !replica.node().would_install_snapshot(message.term, meta) {
            // The bytes streamed before it are this message's (a connection
            // delivers in order, and a stream sent again starts at offset 0
            // after it): nothing will use them. Kept, a whole snapshot's size
            // stayed on disk until another stream began or a restart. Only
            // whole: all of its stream arrived before it, so one part-way is
            // a newer stream (of a connection opened since) and is kept.
            if self.incoming.as_ref().is_some_and(|inc| {
                (inc.from, inc.index, inc.term) == (message.from, meta.index, meta.term)
                    && inc.receiver.received() == inc.total
            }) {
                debug!("snapshot {} received but not needed: dropped", meta.index);
                self.incoming = None;
            }
            return Some(message);
        }
        if self.finishing.is_some() {
            debug!("snapshot {} dropped: another is being finished", meta.index);
            return None;
        }
        let Some(inc) = self.incoming.take() else {
            debug!("snapshot {} dropped: its bytes did not arrive", meta.index);
            return None;
        };
        let complete = (inc.from, inc.index, inc.term) == (message.from, meta.index, meta.term)
            && inc.receiver.received() == inc.total;
        if !complete {
            debug!(
                "snapshot {} dropped: {} of {} bytes of snapshot {}/{} arrived",
                meta.index,
                inc.receiver.received(),
                inc.total,
                inc.index,
                inc.term
            );
            return None;
        }
        self.thread.submit(Job::Finish {
            meta: meta.clone(),
            receiver: inc.receiver,
            total: inc.total,
        });
        self.finishing = Some(message);
        None
    }
}

#[cfg(test)]
#[path = "snapshots_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "snapshots_leader_tests.rs"]
mod leader_tests;
