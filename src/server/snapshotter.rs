//! The snapshot helper thread. It does the slow snapshot jobs off the event
//! loop: serializing a point-in-time view of the map to a snapshot file
//! (seconds for millions of keys), finishing a snapshot received from the
//! leader (CRC check, fsync, rename, then decoding it into a map), and the
//! cleanup after compaction (freeing the log entries the core dropped and
//! deleting whole segment files, tens of milliseconds each). Results come
//! back over a channel, and a `mio::Waker` wakes the loop to take them.
//!
//! Why a thread and a view rather than a fork or incremental writing: the
//! map's shards are copy-on-write (`kv::KvSnapshot` holds them by `Arc`), so
//! the view costs O(shards) on the loop and the loop only pays to copy a
//! shard on its first write to it while the view is alive. The thread does
//! all the per-key work. A fork would need `unsafe` and copies page tables of
//! the whole process on the loop; chunked writing on the loop would stretch
//! each snapshot over many iterations and still need a consistent view.

use crate::kv::{KvSnapshot, KvStore};
use crate::raft::SnapshotMeta;
use crate::storage::snapshot::{self, SnapshotInfo, SnapshotReceiver, SnapshotWriter};
use crate::storage::{SegmentRemover, StorageError};
use crossbeam_channel::{unbounded, Receiver, Sender};
use mio::Waker;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Work for the helper thread.
pub enum Job {
    /// Serialize `view` as the snapshot `meta` and publish it.
    Write {
        meta: SnapshotMeta,
        view: KvSnapshot,
    },
    /// A snapshot received whole from the leader: verify and publish the
    /// file, then decode the map it holds.
    Finish {
        meta: SnapshotMeta,
        receiver: SnapshotReceiver,
        total: u64,
    },
    /// After compaction: delete the detached segments' files.
    RemoveSegments(SegmentRemover),
    /// Free something large (compacted entries, a replaced map) here rather
    /// than on the loop; freeing millions of allocations takes a while.
    Free(Box<dyn Send>),
}

/// A finished job.
pub enum Done {
    Written {
        meta: SnapshotMeta,
        result: Result<SnapshotInfo, StorageError>,
        elapsed: Duration,
    },
    Received {
        meta: SnapshotMeta,
        result: Result<(SnapshotInfo, KvStore), StorageError>,
        elapsed: Duration,
    },
    SegmentsRemoved {
        result: Result<(), StorageError>,
    },
    Freed,
}

pub struct Snapshotter {
    jobs: Sender<Job>,
    done: Receiver<Done>,
}

impl Snapshotter {
    /// Starts the thread for the snapshot directory `dir`; `waker` wakes the
    /// loop after each job. The thread ends when the `Snapshotter` is dropped
    /// and its current job is done; nobody waits for it (a half-written
    /// snapshot is a temp file that the next start deletes).
    pub fn start(dir: PathBuf, waker: Arc<Waker>) -> std::io::Result<Snapshotter> {
        let (jobs, job_rx) = unbounded::<Job>();
        let (done_tx, done) = unbounded::<Done>();
        thread::Builder::new()
            .name("snapshot".to_string())
            .spawn(move || {
                for job in job_rx {
                    let done = run(&dir, job);
                    if done_tx.send(done).is_err() {
                        return;
                    }
                    if let Err(err) = waker.wake() {
                        log::warn!("snapshot thread cannot wake the event loop: {}", err);
                    }
                }
            })?;
        Ok(Snapshotter { jobs, done })
    }

    /// Queues a job. Jobs run one at a time, in order.
    ///
    /// # Panics
    /// If the thread is gone, which only a panic in it can cause.
    pub fn submit(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            panic!("the snapshot thread died");
        }
    }

    /// A finished job, if any.
    pub fn try_done(&self) -> Option<Done> {
        self.done.try_recv().ok()
    }
}

fn run(dir: &Path, job: Job) -> Done {
    let started = Instant::now();
    match job {
        Job::Write { meta, view } => {
            // The view's references to shards the loop has since copied are
            // the last ones: those shards are freed here, not on the loop.
            let result = write(dir, &meta, view);
            Done::Written {
                meta,
                result,
                elapsed: started.elapsed(),
            }
        }
        Job::Finish {
            meta,
            receiver,
            total,
        } => Done::Received {
            result: finish(dir, &meta, receiver, total),
            meta,
            elapsed: started.elapsed(),
        },
        Job::RemoveSegments(segments) => Done::SegmentsRemoved {
            result: segments.remove(),
        },
        Job::Free(garbage) => {
            drop(garbage);
            Done::Freed
        }
    }
}

fn write(dir: &Path, meta: &SnapshotMeta, view: KvSnapshot) -> Result<SnapshotInfo, StorageError> {
    let mut writer = SnapshotWriter::create(dir, meta)?;
    view.write_to(&mut writer)
        .map_err(|e| StorageError::io(dir.join(snapshot::file_name(meta.index, meta.term)), e))?;
    writer.finish()
}

fn finish(
    dir: &Path,
    meta: &SnapshotMeta,
    receiver: SnapshotReceiver,
    total: u64,
) -> Result<(SnapshotInfo, KvStore), StorageError> {
    let info = receiver.finish(total)?;
    if info.meta != *meta {
        return Err(StorageError::invalid(
            &info.path,
            None,
            format!(
                "the file holds snapshot {:?}, the leader announced {:?}",
                info.meta, meta
            ),
        ));
    }
    let loaded = snapshot::load(dir, meta.index, meta.term)?;
    let kv = KvStore::restore_from(&mut loaded.body.as_slice()).map_err(|e| {
        StorageError::corrupt(
            &loaded.path,
            None,
            format!("its key-value data does not decode: {}", e),
        )
    })?;
    Ok((info, kv))
}
