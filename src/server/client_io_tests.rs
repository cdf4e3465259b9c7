//! The clients' shared budget, driven step by step on a node whose loop
//! does not run (a single member that has not campaigned: every request
//! that needs the log waits, parked).

use super::*;
use crate::config::{Config, FsyncMode};
use crate::server::event_loop::StopOn;
use std::io::{Read, Write};
use std::net::TcpStream;

/// A node of one member listening on `client_port` (and the port after it
/// for raft), its loop not running.
fn node(client_port: u16) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let raft_addr = format!("127.0.0.1:{}", client_port + 1);
    let config = Config {
        id: 1,
        raft_addr: raft_addr.clone(),
        client_addr: format!("127.0.0.1:{client_port}"),
        cluster: vec![(1, raft_addr)],
        data_dir: dir.path().join("data"),
        cluster_name: "budget".to_string(),
        heartbeat_ms: 100,
        election_timeout_ms: 1000,
        fsync: FsyncMode::Never,
        snapshot_entries: 1_000_000,
        max_request_bytes: 1 << 20,
        requirepass: None,
        join: false,
        log_level: "warning".to_string(),
    };
    let (_stop, receiver) = crossbeam_channel::bounded(1);
    let server = crate::server::build(config, StopOn::Channel(receiver)).expect("build");
    (server, dir)
}

/// Connects a client and has the node accept it; returns its socket and token.
fn connect(server: &mut Server) -> (TcpStream, Token) {
    let before: Vec<Token> = server.clients.keys().copied().collect();
    let stream = TcpStream::connect(&server.config.client_addr).expect("connect");
    server.accept_clients();
    let token = server
        .clients
        .keys()
        .copied()
        .find(|token| !before.contains(token))
        .expect("accepted");
    (stream, token)
}

fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).expect("send");
    // On loopback the bytes are in the node's socket by then.
    std::thread::sleep(Duration::from_millis(20));
}

/// A client paused over the budget that reads a request to hold while the
/// budget allows (another client's unanswered replies went away in the
/// same iteration) still gets that request served once the requests
/// before it are answered.
#[test]
fn a_request_held_while_paused_over_the_budget_is_served() {
    let (mut server, _dir) = node(24710);
    let (mut c, tc) = connect(&mut server);
    let (mut d, td) = connect(&mut server);
    send(&mut c, b"SET k v\r\n");
    server.read_client(tc);
    send(&mut d, b"GET k\r\n");
    server.read_client(td);
    // D's read is expected to answer the most all clients may have unanswered.
    let client = server.clients.get_mut(&td).expect("d");
    let seq = client.first_seq();
    client.expect_reply_bytes(seq, MAX_UNANSWERED_BYTES);
    // C, its SET unanswered, must wait before its DBSIZE is read.
    send(&mut c, b"DBSIZE\r\n");
    server.read_client(tc);
    assert!(server.clients[&tc].over_budget);
    assert!(!server.clients[&tc].is_holding());
    // D goes away; C's DBSIZE is read in the same iteration, and held
    // behind its SET.
    server.close_client(td);
    drop(d);
    server.read_client(tc);
    assert!(server.clients[&tc].is_holding());
    // The next iteration; then the SET is answered.
    server.start_client_budget();
    let client = server.clients.get_mut(&tc).expect("c");
    let seq = client.first_seq();
    assert!(client.complete(seq, Reply::Ok));
    server.mark_dirty(tc);
    server.flush_clients();
    server.flush_clients();
    assert!(
        !server.clients[&tc].is_holding(),
        "the DBSIZE is still held with nothing before it unanswered"
    );
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let want = b"+OK\r\n:0\r\n";
    let mut got = vec![0; want.len()];
    c.read_exact(&mut got).expect("both replies");
    assert_eq!(got, want);
}
