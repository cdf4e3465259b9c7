//! A node's last replies reach a client that was not reading when the node
//! stopped, on a node whose loop does not run (a single member that has not
//! campaigned), shut down as `Server::run` does once its loop ends. Before,
//! one write sent what the socket's buffers took, and the rest was lost.

use super::EXIT_LINGER;
use crate::kv::Reply;
use crate::server::client_io::tests::{connect, node, send};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// More than the socket buffers of a loopback connection hold (about 4 MiB
/// on Linux when the client does not read).
const LARGE: usize = 12 << 20;

/// Reads `c` until the node closes it: every byte, or the error that ended
/// it (a reset).
fn read_to_end(mut c: TcpStream) -> (Vec<u8>, io::Result<()>) {
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut chunk = vec![0; 1 << 16];
    loop {
        match c.read(&mut chunk) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(err) => return (got, Err(err)),
        }
    }
}

/// A client pipelines a large request's reply and a write the node cannot
/// take yet (no leader), and is busy when the node stops; once it reads
/// (sending a request first, after the node's exit point, which is never
/// answered), it gets every reply, in order, and then the end of the
/// connection, not a reset.
#[test]
fn a_client_that_reads_late_gets_every_reply_then_the_end() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let value = vec![b'v'; LARGE];
    server
        .clients
        .get_mut(&tc)
        .expect("client")
        .reply_now(Reply::Bulk(value.clone()));
    send(&mut c, b"SET parked 1\r\n");
    server.read_client(tc);
    assert!(server.parked.holds(tc), "no leader is known");
    let reader = thread::spawn(move || {
        // Busy while the node answers, and sends on before it reads.
        thread::sleep(Duration::from_millis(200));
        c.write_all(b"PING\r\n").expect("send");
        read_to_end(c)
    });
    server.shutdown = true;
    server.shut_down().expect("shut down");
    drop(server);
    let (got, end) = reader.join().expect("reader");
    let mut want = format!("${}\r\n", LARGE).into_bytes();
    want.extend_from_slice(&value);
    want.extend_from_slice(b"\r\n-TRYAGAIN no leader\r\n");
    assert_eq!(got.len(), want.len(), "bytes read before the end");
    assert!(got == want, "the replies differ");
    end.expect("the end of the connection, not an error");
}

/// A client that never reads keeps what its buffers took, and holds the
/// node's exit for the bound, not longer.
#[test]
fn a_client_that_never_reads_holds_the_exit_no_longer_than_the_bound() {
    let (mut server, _dir) = node();
    let (c, tc) = connect(&mut server);
    server
        .clients
        .get_mut(&tc)
        .expect("client")
        .reply_now(Reply::Bulk(vec![b'v'; LARGE]));
    server.shutdown = true;
    let start = Instant::now();
    server.shut_down().expect("shut down");
    let took = start.elapsed();
    // Generous: only a linger that does not end fails this.
    assert!(took < EXIT_LINGER * 5, "the exit took {took:?}");
    drop(server);
    drop(c);
}

/// An idle client's connection is shut and closed at once: the linger
/// waits for nothing (the client's acknowledgement of the FIN aside).
#[test]
fn an_idle_client_sees_the_end_of_the_connection() {
    let (mut server, _dir) = node();
    let (c, _tc) = connect(&mut server);
    server.shutdown = true;
    server.shut_down().expect("shut down");
    assert!(server.clients.is_empty(), "the connection is still open");
    let (got, end) = read_to_end(c);
    assert_eq!(got, b"");
    end.expect("the end of the connection, not an error");
}
