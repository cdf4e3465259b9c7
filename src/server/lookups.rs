//! Looking up peers' host names off the event loop.
//!
//! `getaddrinfo` blocks: when the name server does not answer, for 5-25 s
//! with its retries. Done on the loop at each dial, that stopped heartbeats
//! and clients alike, and a `CLUSTER ADD` naming a host that would not
//! resolve hung a whole cluster with no way back (no leader could be elected
//! to commit the removal). Each lookup runs on a thread of its own and
//! `Peers` starts at most one per peer at a time, so a name that hangs delays
//! only the dials to its own peer. Addresses given as IP literals need no
//! lookup and never come here.
//!
//! The blocking lookup itself, [`resolve_all`], is here too, with
//! [`resolve`], which the node also calls for its own listen addresses at
//! start, before its loop runs.

use crate::raft::NodeId;
use crossbeam_channel::{unbounded, Receiver, Sender};
use mio::Waker;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread;

/// What one lookup found.
pub struct Answer {
    pub peer: NodeId,
    pub raft_addr: String,
    /// Every address the name resolves to, in the resolver's order.
    pub result: io::Result<Vec<SocketAddr>>,
}

pub struct Lookups {
    answers_tx: Sender<Answer>,
    answers: Receiver<Answer>,
    waker: Arc<Waker>,
}

impl Lookups {
    /// `waker` wakes the loop after each answer.
    pub fn new(waker: Arc<Waker>) -> Lookups {
        let (answers_tx, answers) = unbounded();
        Lookups {
            answers_tx,
            answers,
            waker,
        }
    }

    /// Looks up `raft_addr` for `peer` on a new thread. A thread that cannot
    /// be started is an answer too: the dial is retried later.
    pub fn start(&self, peer: NodeId, raft_addr: String) {
        let tx = self.answers_tx.clone();
        let waker = Arc::clone(&self.waker);
        let addr = raft_addr.clone();
        let spawned = thread::Builder::new()
            .name("lookup".to_string())
            .spawn(move || {
                let result = resolve_all(&addr);
                let answer = Answer {
                    peer,
                    raft_addr: addr,
                    result,
                };
                if tx.send(answer).is_ok() {
                    if let Err(err) = waker.wake() {
                        log::warn!("lookup thread cannot wake the event loop: {}", err);
                    }
                }
            });
        if let Err(err) = spawned {
            let answer = Answer {
                peer,
                raft_addr,
                result: Err(err),
            };
            // The receiver lives in `self`, so the send cannot fail.
            let _ = self.answers_tx.send(answer);
        }
    }

    /// The answers that arrived since the last call.
    pub fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
    }
}

/// Resolves a configured host:port to its first address (a literal address,
/// or a name looked up on the calling thread).
pub fn resolve(addr: &str) -> io::Result<SocketAddr> {
    resolve_all(addr).map(|addrs| addrs[0])
}

/// Every address `addr` stands for, in the resolver's order; never empty.
pub fn resolve_all(addr: &str) -> io::Result<Vec<SocketAddr>> {
    if let Ok(parsed) = addr.parse() {
        return Ok(vec![parsed]);
    }
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no address for {}", addr),
        ));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Poll, Token};
    use std::time::{Duration, Instant};

    fn wait_answer(lookups: &Lookups) -> Answer {
        let start = Instant::now();
        loop {
            if let Some(answer) = lookups.answers().next() {
                return answer;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no answer");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_lookup_answers_on_the_channel_with_what_it_was_asked() {
        let poll = Poll::new().expect("poll");
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
        let lookups = Lookups::new(waker);
        lookups.start(4, "localhost:7004".to_string());
        let answer = wait_answer(&lookups);
        assert_eq!(
            (answer.peer, answer.raft_addr.as_str()),
            (4, "localhost:7004")
        );
        let addrs = answer.result.expect("localhost resolves");
        assert!(!addrs.is_empty());
        for addr in addrs {
            assert!(addr.ip().is_loopback() && addr.port() == 7004, "{addr}");
        }
        lookups.start(5, "no-port-given".to_string());
        let answer = wait_answer(&lookups);
        assert_eq!(answer.peer, 5);
        assert!(answer.result.is_err());
    }
}
