//! The thread that answers reads of many keys (KEYS, and SCAN with a large
//! COUNT) off the event loop.
//!
//! KEYS over a million keys takes 0.07 s to match and 0.4 s to answer them
//! all. On the loop, a leader would send no heartbeat meanwhile, and a few
//! million keys would outlast an election timeout and cost the cluster its
//! leader. (Turning the reply into bytes, about 20 ms per million keys,
//! stays on the loop.) The replica hands over
//! each such read with a copy-on-write view of the map at the read's point
//! (O(shards), as a snapshot takes one), so the reply is the same one the
//! loop would have given, and the loop only pays to copy the shards it
//! writes to while the view lives.

use super::event_loop::Waiter;
use crate::replica::{Completion, FullRead};
use crossbeam_channel::{unbounded, Receiver, Sender};
use mio::Waker;
use std::sync::Arc;
use std::thread;

pub struct FullReads {
    jobs: Sender<FullRead<Waiter>>,
    done: Receiver<Completion<Waiter>>,
}

impl FullReads {
    /// Starts the thread; `waker` wakes the loop after each answered read.
    /// The thread ends when the `FullReads` is dropped.
    pub fn start(waker: Arc<Waker>) -> std::io::Result<FullReads> {
        let (jobs, job_rx) = unbounded::<FullRead<Waiter>>();
        let (done_tx, done) = unbounded();
        thread::Builder::new()
            .name("full-reads".to_string())
            .spawn(move || {
                for read in job_rx {
                    if done_tx.send(read.answer()).is_err() {
                        return;
                    }
                    if let Err(err) = waker.wake() {
                        log::warn!("full-reads thread cannot wake the event loop: {}", err);
                    }
                }
            })?;
        Ok(FullReads { jobs, done })
    }

    /// Queues a read; reads are answered one at a time, in order.
    ///
    /// # Panics
    /// If the thread is gone, which only a panic in it can cause.
    pub fn submit(&self, read: FullRead<Waiter>) {
        if self.jobs.send(read).is_err() {
            panic!("the full-reads thread died");
        }
    }

    /// Moves the answered reads into `into`.
    pub fn collect(&self, into: &mut Vec<Completion<Waiter>>) {
        into.extend(self.done.try_iter());
    }
}
