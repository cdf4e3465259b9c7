//! The sync thread: fdatasync of the log's segment files off the event loop.
//!
//! Why: with the sync on the loop, a leader stops for its whole fdatasync each
//! batch. It cannot read its followers' acknowledgements, answer the clients
//! whose writes they just committed, or take the next batch, so every commit
//! costs two loop iterations each holding a sync. With the sync here, the loop
//! keeps going; the leader counts itself toward a majority only once its sync
//! is reported (`Node::persisted`), and a follower's acknowledgement waits for
//! its own (`Replica::synced`). Measured with `fsync = always` against
//! `fsync = never` on the same machine, the loop-blocking sync cost about a
//! third of the write throughput at 64 clients (README, "Performance").
//!
//! Jobs carry increasing tickets and finish in order. Jobs that queued up
//! while a sync ran are done by one fdatasync per file (group commit across
//! loop iterations), and reported by the highest ticket.

use crate::storage::{StorageError, SyncTarget};
use crossbeam_channel::{unbounded, Receiver};
use mio::Waker;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

struct Job {
    ticket: u64,
    targets: Vec<SyncTarget>,
}

/// A finished sync: every ticket up to this one is durable, or the sync
/// failed (the node must stop: after a failed fdatasync the page cache may
/// have dropped the writes, so retrying proves nothing).
pub type Synced = Result<u64, StorageError>;

/// The job queue. A mutex and condvar rather than a channel: a blocking
/// channel receive spins and calls sched_yield before it parks, which measured
/// about two yields per write at low load (`strace -c`), all wasted CPU on a
/// 2-core machine that runs three nodes.
#[derive(Default)]
struct Queue {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
}

pub struct Syncer {
    queue: Arc<Queue>,
    done: Receiver<Synced>,
    next_ticket: u64,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.queue.jobs.lock() {
            jobs.1 = true;
        }
        self.queue.ready.notify_one();
    }
}

/// Waits for jobs; all that queued up while the last sync ran come at once.
/// None once the `Syncer` is gone.
fn next_jobs(queue: &Queue) -> Option<Vec<Job>> {
    let mut jobs = queue.jobs.lock().ok()?;
    loop {
        if !jobs.0.is_empty() {
            return Some(jobs.0.drain(..).collect());
        }
        if jobs.1 {
            return None;
        }
        jobs = queue.ready.wait(jobs).ok()?;
    }
}

impl Syncer {
    /// Starts the thread; `waker` wakes the loop after each finished sync.
    /// The thread ends when the `Syncer` is dropped.
    pub fn start(waker: Arc<Waker>) -> std::io::Result<Syncer> {
        let queue = Arc::new(Queue::default());
        let (done_tx, done) = unbounded::<Synced>();
        let thread_queue = Arc::clone(&queue);
        thread::Builder::new()
            .name("sync".to_string())
            .spawn(move || {
                while let Some(jobs) = next_jobs(&thread_queue) {
                    let result = sync_all(&jobs);
                    if done_tx.send(result).is_err() {
                        return;
                    }
                    if let Err(err) = waker.wake() {
                        log::warn!("sync thread cannot wake the event loop: {}", err);
                    }
                }
            })?;
        Ok(Syncer {
            queue,
            done,
            next_ticket: 1,
        })
    }

    /// Queues a sync of `targets` (possibly none: it then still finishes only
    /// after every earlier one) and returns its ticket.
    ///
    /// # Panics
    /// If the thread panicked (the queue's lock is poisoned).
    pub fn submit(&mut self, targets: Vec<SyncTarget>) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        match self.queue.jobs.lock() {
            Ok(mut jobs) => jobs.0.push_back(Job { ticket, targets }),
            Err(_) => panic!("the sync thread died"),
        }
        self.queue.ready.notify_one();
        ticket
    }

    /// The latest finished sync since the last call, if any.
    pub fn try_done(&self) -> Option<Synced> {
        let mut latest = None;
        for result in self.done.try_iter() {
            match result {
                Ok(ticket) => latest = Some(Ok(ticket)),
                Err(err) => return Some(Err(err)),
            }
        }
        latest
    }
}

fn sync_all(jobs: &[Job]) -> Synced {
    let mut synced: Vec<&SyncTarget> = Vec::new();
    for target in jobs.iter().flat_map(|job| &job.targets) {
        if !synced.iter().any(|done| done.same_file(target)) {
            target.sync()?;
            synced.push(target);
        }
    }
    Ok(jobs.last().map_or(0, |job| job.ticket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::time::{Duration, Instant};

    /// A sync that fails is reported as that failure, naming the file, also
    /// when a later job's sync succeeded before the loop looked: the loop
    /// must stop (README, "a node that cannot write its data dir"), not take
    /// the later ticket as covering the failed batch and send the
    /// acknowledgements it holds (after a failed fdatasync the page cache
    /// may have dropped the writes, and a later sync succeeds all the same).
    /// fdatasync of a FIFO fails (EINVAL) where no disk can be made to.
    #[test]
    fn a_failed_sync_is_reported_though_a_later_one_succeeded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.seg");
        let c_path = CString::new(fifo.as_os_str().as_bytes()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path and nothing else.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        // Read-write, so the open does not wait for the other end.
        let open = |path: &std::path::Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .expect("open")
        };
        let good = dir.path().join("good.seg");
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let mut syncer = Syncer::start(waker).expect("sync thread");
        let finished = |syncer: &Syncer, n: usize| {
            let started = Instant::now();
            while syncer.done.len() < n {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "sync thread stuck"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        syncer.submit(vec![SyncTarget::for_file(open(&fifo), fifo.clone())]);
        finished(&syncer, 1);
        syncer.submit(vec![SyncTarget::for_file(open(&good), good)]);
        finished(&syncer, 2);
        match syncer.try_done() {
            Some(Err(err)) => assert!(err.to_string().contains("fifo.seg"), "{err}"),
            other => panic!("the failed sync was reported as {other:?}"),
        }
    }
}
