//! The snapshot helper thread. It does the slow snapshot jobs off the event
//! loop: serializing a point-in-time view of the map to a snapshot file
//! (seconds for millions of keys), finishing a snapshot received from the
//! leader (CRC check, fsync, then decoding it into a map; its rename to the
//! final name waits for the install), and the cleanup after compaction
//! (freeing the log entries the core dropped and deleting whole segment
//! files, tens of milliseconds each). Results come back over a channel, and
//! a `mio::Waker` wakes the loop to take them.
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
use crate::storage::snapshot::{
    self, ReceivedSnapshot, SnapshotInfo, SnapshotReceiver, SnapshotWriter,
};
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
    /// A snapshot received whole from the leader: verify and sync the file
    /// (published only when installed), then decode the map it holds.
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
        result: Result<(ReceivedSnapshot, KvStore), StorageError>,
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
            result: finish(&meta, receiver, total),
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
    meta: &SnapshotMeta,
    receiver: SnapshotReceiver,
    total: u64,
) -> Result<(ReceivedSnapshot, KvStore), StorageError> {
    // Refused, the file goes with `received` (it was never published, so
    // it is no snapshot a start would take, and pruned nothing).
    let received = receiver.finish(total)?;
    let kv = check_received(meta, &received)?;
    Ok((received, kv))
}

/// Whether a received snapshot is the one the leader announced and its map
/// decodes; the map if so.
fn check_received(
    meta: &SnapshotMeta,
    received: &ReceivedSnapshot,
) -> Result<KvStore, StorageError> {
    if received.meta() != meta {
        return Err(StorageError::invalid(
            received.tmp_path(),
            None,
            format!(
                "the file holds snapshot {:?}, the leader announced {:?}",
                received.meta(),
                meta
            ),
        ));
    }
    let loaded = received.load()?;
    KvStore::restore_from(&mut loaded.body.as_slice()).map_err(|e| {
        StorageError::corrupt(
            &loaded.path,
            None,
            format!("its key-value data does not decode: {}", e),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The bytes of a snapshot file at `meta` whose body is `body`.
    fn file_bytes(meta: &SnapshotMeta, body: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut writer = SnapshotWriter::create(dir.path(), meta).expect("create");
        writer.write_all(body).expect("write");
        let info = writer.finish().expect("finish");
        std::fs::read(info.path).expect("read back")
    }

    fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("list")
            .map(|item| item.expect("entry").path())
            .collect();
        files.sort();
        files
    }

    /// A snapshot from the leader whose CRC matches but whose map does not
    /// decode (or that is not the one announced) is refused, and leaves no
    /// file: published, it was the newest snapshot, which a restart must
    /// reach, though this node never held its state, and so a start was
    /// refused. Nor does it prune the node's older snapshots, its fallback:
    /// it used to be published (and prune) before it was checked.
    #[test]
    fn a_received_snapshot_that_cannot_be_used_leaves_no_file() {
        let meta = SnapshotMeta {
            index: 10,
            term: 1,
            voters: vec![1, 2],
            learners: Vec::new(),
        };
        let mut other = meta.clone();
        other.voters = vec![1, 2, 3];
        let mut kv = KvStore::new();
        kv.apply(&crate::kv::Command::Set(b"k".to_vec(), b"v".to_vec()));
        let mut map = Vec::new();
        kv.snapshot_view().write_to(&mut map).expect("map");
        for (announced, bytes) in [
            (&meta, file_bytes(&meta, b"not a map")),
            (&other, file_bytes(&meta, &map)),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let older: Vec<PathBuf> = [4, 6]
                .iter()
                .map(|&index| {
                    let meta = SnapshotMeta {
                        index,
                        ..meta.clone()
                    };
                    let mut writer = SnapshotWriter::create(dir.path(), &meta).expect("create");
                    writer.write_all(&map).expect("write");
                    writer.finish().expect("finish").path
                })
                .collect();
            let mut receiver = SnapshotReceiver::create(dir.path(), 10, 1).expect("receiver");
            receiver.write_at(0, &bytes).expect("write");
            let result = finish(announced, receiver, bytes.len() as u64);
            assert!(result.is_err(), "an unusable snapshot was taken");
            assert_eq!(snapshot_files(dir.path()), older);
        }
    }
}
