//! The clients' shared budget, parked requests and requests routed again,
//! driven step by step on a node whose loop does not run (a single member
//! that has not campaigned: every request that needs the log waits, parked).

use super::*;
use crate::config::{Config, FsyncMode};
use crate::kv::Command;
use crate::raft::NodeId;
use crate::replica::Completion;
use crate::server::clients::{Kind, Pending};
use crate::server::event_loop::{Forwarded, StopOn, Waiter};
use std::io::{Read, Write};
use std::net::TcpStream;

/// A loopback port nothing listens on (now).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A node of one member on free loopback ports, its loop not running.
pub(in crate::server) fn node() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let client_port = free_port();
    let raft_addr = format!("127.0.0.1:{}", free_port());
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
        force_new_cluster: false,
    };
    let (_stop, receiver) = crossbeam_channel::bounded(1);
    let server = crate::server::build(config, StopOn::Channel(receiver)).expect("build");
    (server, dir)
}

/// Reads exactly `want` from the client's socket (5 s at most) and compares.
pub(in crate::server) fn expect_replies(c: &mut TcpStream, want: &[u8]) {
    c.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = vec![0; want.len()];
    c.read_exact(&mut got).expect("the replies");
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// Connects a client and has the node accept it; returns its socket and token.
pub(in crate::server) fn connect(server: &mut Server) -> (TcpStream, Token) {
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

pub(in crate::server) fn send(stream: &mut TcpStream, bytes: &[u8]) {
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
    let (mut server, _dir) = node();
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
    expect_replies(&mut c, b"+OK\r\n:0\r\n");
}

/// A write relayed to the leader is answered once this node has applied
/// what it knew to be committed when the leader's reply came (the leader
/// sent that commit index ahead of the reply), though one iteration
/// applies only `max_apply_bytes`: a DBSIZE held behind the write counts
/// every write committed before it.
#[test]
fn a_relayed_reply_waits_for_the_entries_known_committed_to_be_applied() {
    let (mut server, _dir) = node();
    lead(&mut server);
    // Six writes of 3 MB: a Ready applies 4 MiB, two of them.
    let value = vec![b'v'; 3 << 20];
    for k in 0..6 {
        let key = format!("big{k}");
        assert!(server
            .replica
            .propose_set(key.as_bytes(), &value, Waiter::Nobody)
            .is_ok());
    }
    server.iterate().expect("iterate");
    let committed = server.replica.node().commit_index();
    assert!(
        server.replica.applied_index() + 2 < committed,
        "applied {} of {committed}",
        server.replica.applied_index()
    );
    // A client's write, sent to the leader (as a follower relays it), and
    // a DBSIZE held behind it.
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("c");
    let pending = Pending::InFlight {
        write: true,
        forward: None,
    };
    let seq = client.open_slot(pending, Kind::Write);
    client.set_forwarded(seq, true, 7, 2);
    let command = Command::Set(b"x".to_vec(), b"1".to_vec());
    let forwarded = Forwarded {
        token: tc,
        seq,
        command,
        leader: 2,
    };
    server.forwards.insert(7, forwarded);
    send(&mut c, b"DBSIZE\r\n");
    server.read_client(tc);
    assert!(server.clients[&tc].is_holding());
    // The leader's reply comes; the loop goes on.
    server.handle_forward_reply(7, Reply::Ok);
    for _ in 0..10 {
        server.iterate().expect("iterate");
    }
    expect_replies(&mut c, b"+OK\r\n:6\r\n");
}

/// A parked request answered at its deadline (`-TRYAGAIN no leader`), or
/// whose client went away, leaves nothing parked: while no leader is
/// reachable the parked requests are never dispatched, so each write a
/// client retries there kept its value for as long as the outage lasted.
#[test]
fn parked_requests_answered_at_their_deadline_or_whose_client_left_are_dropped() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    send(&mut c, b"SET k v\r\nGET k\r\n");
    server.read_client(tc);
    assert!(server.parked.holds(tc), "no leader: parked");
    let first = server.clients[&tc].first_seq();
    server.expire(tc, first);
    server.expire(tc, first + 1);
    assert!(!server.parked.holds(tc), "answered: nothing left parked");
    assert!(server.parked.is_empty());
    server.flush_clients();
    expect_replies(&mut c, b"-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n");
    // A later request of the connection is not held behind them.
    send(&mut c, b"SET k w\r\n");
    server.read_client(tc);
    assert!(server.parked.holds(tc));

    let (mut d, td) = connect(&mut server);
    send(&mut d, b"SET j v\r\n");
    server.read_client(td);
    assert!(server.parked.holds(td));
    server.close_client(td);
    drop(d);
    assert!(!server.parked.holds(td), "its client gone: dropped");
    server.close_client(tc);
    assert!(server.parked.is_empty());
}

/// Ticks the node's core until it leads (it is the only member), then lets
/// it commit the entry of its term.
pub(in crate::server) fn lead(server: &mut Server) {
    use crate::raft::Role;
    for _ in 0..1000 {
        if server.replica.node().role() == Role::Leader {
            break;
        }
        server.replica.node_mut().tick();
        server.iterate().expect("iterate");
    }
    assert_eq!(server.replica.node().role(), Role::Leader);
    for _ in 0..10 {
        server.iterate().expect("iterate");
    }
}

/// Opens a slot on `token` for `command` as if forwarded to node `to` with
/// forwarding id `id`, which then stopped leading: no leader is known and
/// node `to` is not connected (this node has no peer).
pub(in crate::server) fn forwarded_to(
    server: &mut Server,
    token: Token,
    id: u64,
    to: NodeId,
    command: Command,
) -> u64 {
    let write = command.is_write();
    let kind = if write { Kind::Write } else { Kind::Read };
    let client = server.clients.get_mut(&token).expect("client");
    let seq = client.open_slot(Pending::Parked, kind);
    client.set_forwarded(seq, write, id, to);
    let forwarded = Forwarded {
        token,
        seq,
        command,
        leader: to,
    };
    server.forwards.insert(id, forwarded);
    server.note_forward_sent(to, id);
    seq
}

fn get(key: &str) -> Command {
    Command::Get(key.as_bytes().to_vec())
}

/// A read forwarded to a leader that stopped leading, held back only by a
/// write its connection sent before it and this node proposed while it led
/// (its fate open: it may still be applied, after the read's place
/// elsewhere), is routed again as soon as that write is answered, and
/// served: it stayed forwarded until its deadline (`-TRYAGAIN no leader`),
/// though nothing held it back any more.
#[test]
fn an_orphaned_read_held_back_by_an_earlier_local_write_goes_once_the_write_is_answered() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let in_flight = Pending::InFlight {
        write: true,
        forward: None,
    };
    let client = server.clients.get_mut(&tc).expect("c");
    let write = client.open_slot(in_flight, Kind::Write);
    forwarded_to(&mut server, tc, 7, 2, get("k"));
    server.settle_orphaned_forwards();
    assert!(
        server.forwards.contains_key(&7),
        "the write before it is in flight: the read waits"
    );
    assert!(!server.parked.holds(tc));
    // The write's entry is applied here.
    let waiter = Waiter::Client {
        token: tc,
        seq: write,
    };
    server.completions.push(Completion {
        waiter,
        reply: Reply::Ok,
    });
    server.deliver_completions();
    assert!(server.forwards.is_empty(), "the read left node 2");
    assert!(server.parked.holds(tc), "parked to be routed again");
    // A leader is known (this node): the read is served, in its place.
    lead(&mut server);
    expect_replies(&mut c, b"+OK\r\n$-1\r\n");
}

/// A read forwarded to a leader that is gone (no longer leading, its
/// connection closed), with a write its connection sent after it answered
/// (here `-TIMEOUT`, sent to the same leader): routed again, the read would
/// come after that write, so it never can be, and nothing else will answer
/// it. `-TRYAGAIN leader changed` at once, not `-TRYAGAIN no leader` at its
/// deadline.
#[test]
fn an_orphaned_read_that_can_never_be_routed_again_is_refused_at_once() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    forwarded_to(&mut server, tc, 7, 2, get("k"));
    let set = Command::Set(b"k".to_vec(), b"v".to_vec());
    forwarded_to(&mut server, tc, 8, 2, set);
    server.settle_orphaned_forwards();
    assert!(server.forwards.is_empty(), "both settled");
    assert!(!server.parked.holds(tc));
    server.flush_clients();
    expect_replies(
        &mut c,
        b"-TRYAGAIN leader changed\r\n-TIMEOUT outcome unknown\r\n",
    );
}

/// A read dropped unconfirmed by a leader that stepped down comes back and
/// is parked, to be routed again; then a write its connection sent after
/// it to the same leader is answered (`-TIMEOUT`: that leader is gone).
/// Routed again, the read would come after that write, so it never can be.
/// With no leader anywhere, no dispatch comes to refuse it: it is refused
/// at once all the same, not at its deadline with the write's reply held
/// behind it.
#[test]
fn a_parked_read_that_can_never_be_routed_again_is_refused_without_a_leader() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    forwarded_to(&mut server, tc, 7, 2, get("k"));
    let set = Command::Set(b"k".to_vec(), b"v".to_vec());
    forwarded_to(&mut server, tc, 8, 2, set);
    server.handle_forward_reply(7, Reply::error("TRYAGAIN leader changed"));
    assert!(server.parked.holds(tc), "parked to be routed again");
    server.iterate().expect("iterate");
    assert!(
        server.parked.holds(tc),
        "the write after it is in flight: the read may still go"
    );
    server.settle_orphaned_forwards();
    assert!(server.forwards.is_empty(), "the write settled");
    server.iterate().expect("iterate");
    assert!(
        !server.parked.holds(tc),
        "refused, not left for its deadline"
    );
    expect_replies(
        &mut c,
        b"-TRYAGAIN leader changed\r\n-TIMEOUT outcome unknown\r\n",
    );
}

/// A CLUSTER command parked while no leader is known leaves its queue when
/// it is answered at its deadline, or its client goes away, as a key-value
/// request does: it stayed until a leader was reachable again.
#[test]
fn parked_cluster_commands_answered_at_their_deadline_or_whose_client_left_are_dropped() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    send(&mut c, b"CLUSTER MEMBERS\r\n");
    server.read_client(tc);
    assert!(server.cluster.parked.holds(tc), "no leader: parked");
    let first = server.clients[&tc].first_seq();
    server.expire(tc, first);
    assert!(!server.cluster.parked.holds(tc), "answered: nothing left");
    assert!(server.cluster.parked.is_empty());
    server.flush_clients();
    expect_replies(&mut c, b"-TRYAGAIN no leader\r\n");

    let (mut d, td) = connect(&mut server);
    send(&mut d, b"CLUSTER ADD 4 127.0.0.1:9\r\n");
    server.read_client(td);
    assert!(server.cluster.parked.holds(td));
    server.close_client(td);
    drop(d);
    assert!(!server.cluster.parked.holds(td), "its client gone: dropped");
    assert!(server.cluster.parked.is_empty());
}

/// Runs the node's loop (its steps, as `iterate`) until the client has
/// been sent replies ending with `end` (5 s at most); returns them.
pub(in crate::server) fn iterate_until_replied(
    server: &mut Server,
    c: &mut TcpStream,
    end: &str,
) -> String {
    c.set_read_timeout(Some(Duration::from_millis(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    let start = std::time::Instant::now();
    while !String::from_utf8_lossy(&got).ends_with(end) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no {end:?} after {:?}",
            String::from_utf8_lossy(&got)
        );
        server.iterate().expect("iterate");
        match c.read(&mut buf) {
            Ok(0) => panic!("closed after {:?}", String::from_utf8_lossy(&got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) => assert!(
                matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{err}"
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A CLUSTER MEMBERS that comes back from a node that no longer leads is
/// parked ahead of the CLUSTER commands its connection parked after it
/// meanwhile: behind them, it went after a CLUSTER ADD sent after it.
#[test]
fn a_cluster_command_that_comes_back_is_parked_ahead_of_later_ones() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("c");
    let members = client.open_slot(Pending::Parked, Kind::Other);
    client.set_forwarded(members, false, 7, 2);
    server
        .cluster
        .forwarded(7, tc, members, "CLUSTER MEMBERS", 2);
    send(&mut c, b"CLUSTER ADD 4 127.0.0.1:9\r\n");
    server.read_client(tc);
    assert!(server.cluster.parked.holds(tc), "behind the MEMBERS");
    server.handle_cluster_forward_reply(7, Reply::error("TRYAGAIN not the leader"));
    let order: Vec<u64> = server.cluster.parked.queued(tc).map(|p| p.seq).collect();
    assert_eq!(order, [members, members + 1], "in the order sent");
    lead(&mut server);
    let replies = iterate_until_replied(&mut server, &mut c, "+OK\r\n");
    assert!(!replies.contains("id=4"), "{replies:?}");
}

/// A CLUSTER MEMBERS and a CLUSTER ADD pipelined through this node, both
/// forwarded to node 2, which then stopped leading: the MEMBERS comes back,
/// but the ADD may take effect where it went (`-TIMEOUT`, node 2 gone).
/// Routed again, the MEMBERS would run after the ADD and could show the
/// node added: it is refused, as a read is behind a later write.
#[test]
fn a_cluster_command_that_comes_back_behind_a_later_change_is_refused() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("c");
    let members = client.open_slot(Pending::Parked, Kind::Other);
    client.set_forwarded(members, false, 7, 2);
    let add = client.open_slot(Pending::Parked, Kind::Change);
    client.set_forwarded(add, true, 8, 2);
    server
        .cluster
        .forwarded(7, tc, members, "CLUSTER MEMBERS", 2);
    server
        .cluster
        .forwarded(8, tc, add, "CLUSTER ADD 4 127.0.0.1:9", 2);
    server.settle_orphaned_forwards();
    lead(&mut server);
    let replies = iterate_until_replied(&mut server, &mut c, "-TIMEOUT outcome unknown\r\n");
    assert_eq!(
        replies,
        "-TRYAGAIN leader changed\r\n-TIMEOUT outcome unknown\r\n"
    );
}

/// A CLUSTER command sent while one its connection sent before waits in
/// the parked queue waits behind it, though this node could serve it at
/// once: served first, a CLUSTER ADD went before the MEMBERS sent before
/// it, and that MEMBERS showed the node added.
#[test]
fn a_cluster_command_waits_behind_its_connections_parked_ones() {
    let (mut server, _dir) = node();
    lead(&mut server);
    let (mut c, tc) = connect(&mut server);
    // A GET forwarded to node 2 holds the MEMBERS back, parked, until its
    // reply is delivered, after this iteration's dispatch.
    forwarded_to(&mut server, tc, 7, 2, get("k"));
    send(&mut c, b"CLUSTER MEMBERS\r\n");
    server.read_client(tc);
    assert!(server.cluster.parked.holds(tc));
    server.handle_forward_reply(7, Reply::Nil);
    server.iterate().expect("iterate");
    assert!(server.cluster.parked.holds(tc), "not dispatched yet");
    send(&mut c, b"CLUSTER ADD 4 127.0.0.1:9\r\n");
    server.read_client(tc);
    let replies = iterate_until_replied(&mut server, &mut c, "+OK\r\n");
    assert!(replies.starts_with("$-1\r\n$"), "{replies:?}");
    assert!(!replies.contains("id=4"), "{replies:?}");
}

/// A deep pipeline of writes this node proposed while it led, each followed
/// by a read forwarded to a leader that has stopped leading since (node 2,
/// gone): every read waits for the writes around it. Returns the writes'
/// slots.
fn pipeline_of_held_reads(server: &mut Server, token: Token, pairs: u64) -> Vec<u64> {
    let in_flight = Pending::InFlight {
        write: true,
        forward: None,
    };
    let mut writes = Vec::new();
    for id in 0..pairs {
        let client = server.clients.get_mut(&token).expect("client");
        writes.push(client.open_slot(in_flight, Kind::Write));
        forwarded_to(server, token, 1000 + id, 2, get("k"));
    }
    server.settle_orphaned_forwards();
    assert_eq!(server.forwards.len() as u64, pairs, "every read waits");
    writes
}

/// Passes over a connection's requests made on this thread so far: how the
/// held-read tests tell linear work from quadratic without timing it.
fn slot_passes() -> u64 {
    crate::server::clients::SLOT_PASSES.with(|passes| passes.get())
}

/// Each read but the last came before a write since answered: it could
/// only come after it if routed again, and node 2 is gone.
fn assert_held_reads_settled(server: &Server, token: Token) {
    assert!(server.forwards.is_empty(), "every read settled");
    assert!(server.parked.holds(token), "the last read goes again");
}

/// Each write of a deep pipeline answered looks at the connection's held
/// reads again: one pass over its requests, not one per read. A pass per
/// read made each answer cost the square of the pipeline's depth, and the
/// pipeline's answers its cube (2,000 pairs took 6.7 s; counted here in passes, not timed).
#[test]
fn held_reads_of_a_deep_pipeline_are_looked_at_in_one_pass_per_answer() {
    let (mut server, _dir) = node();
    let (_c, tc) = connect(&mut server);
    const PAIRS: u64 = 2000;
    let writes = pipeline_of_held_reads(&mut server, tc, PAIRS);
    let passes_before = slot_passes();
    for seq in writes {
        let waiter = Waiter::Client { token: tc, seq };
        server.completions.push(Completion {
            waiter,
            reply: Reply::Ok,
        });
        server.deliver_completions();
    }
    let passes = slot_passes() - passes_before;
    assert_held_reads_settled(&server, tc);
    assert!(
        passes <= 2 * PAIRS,
        "{PAIRS} answers took {passes} passes over the connection's requests"
    );
}

/// The writes of a deep pipeline answered in one batch (one `Ready`
/// applies thousands of entries) have the connection's held reads looked
/// at once, after the batch, not once per write.
#[test]
fn held_reads_are_looked_at_once_per_batch_of_answers() {
    let (mut server, _dir) = node();
    let (_c, tc) = connect(&mut server);
    const PAIRS: u64 = 8000;
    let writes = pipeline_of_held_reads(&mut server, tc, PAIRS);
    for seq in writes {
        let waiter = Waiter::Client { token: tc, seq };
        server.completions.push(Completion {
            waiter,
            reply: Reply::Ok,
        });
    }
    let passes_before = slot_passes();
    server.deliver_completions();
    let passes = slot_passes() - passes_before;
    assert_held_reads_settled(&server, tc);
    assert!(
        passes <= 4,
        "{PAIRS} answers in one batch took {passes} passes over the connection's requests"
    );
}

/// A connection closed while reads of it wait for its writes leaves
/// nothing behind: not its forwards, nor its place among the connections
/// whose held reads are looked at again (a token is handed to the next
/// client that connects).
#[test]
fn a_connection_closed_with_held_reads_leaves_nothing_behind() {
    let (mut server, _dir) = node();
    let (c, tc) = connect(&mut server);
    pipeline_of_held_reads(&mut server, tc, 3);
    assert!(server.reads_held.contains(&tc));
    server.close_client(tc);
    drop(c);
    assert!(server.reads_held.is_empty());
    assert!(server.forwards.is_empty());
    assert!(!server.parked.holds(tc));
}

/// Two writes forwarded to node 2 (ids 7 and 8), which then stopped,
/// saying it read the first and never the second: the second was never
/// applied, and is served by the next leader (here this node); the first
/// may have been, and is answered `-TIMEOUT outcome unknown`. Left to the
/// closed connection, both were.
#[test]
fn a_write_a_stopping_node_never_read_goes_to_the_next_leader() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let set = |key: &str| Command::Set(key.as_bytes().to_vec(), b"1".to_vec());
    forwarded_to(&mut server, tc, 7, 2, set("read"));
    forwarded_to(&mut server, tc, 8, 2, set("unread"));
    server.peer_stopping(2, 8);
    expect_only_the_second_routed_again(&mut server, &mut c, tc, "read", "unread");
}

/// A forward that went before the latest connection with the stopping
/// node may have reached an earlier run of it, which may have appended it,
/// though the run that stops read nothing: it is not routed again, however
/// little that run read, and is answered as a write to a lost leader is.
/// One sent since then, which that run never read, is routed again.
#[test]
fn a_write_sent_before_the_latest_connection_with_a_stopping_node_is_not_routed_again() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let set = |key: &str| Command::Set(key.as_bytes().to_vec(), b"1".to_vec());
    forwarded_to(&mut server, tc, 7, 2, set("before"));
    // Node 2 restarted: its new run connected, and will say it read nothing.
    server.peers.note_connection(2);
    forwarded_to(&mut server, tc, 8, 2, set("after"));
    server.peer_stopping(2, 0);
    expect_only_the_second_routed_again(&mut server, &mut c, tc, "before", "after");
}

/// Once the stopping node's word is settled and this node leads: the write
/// to `kept` (forwarded as id 7) is answered `-TIMEOUT` and was not routed
/// again, the one to `rerouted` (id 8) was, and applied here.
fn expect_only_the_second_routed_again(
    server: &mut Server,
    c: &mut TcpStream,
    tc: Token,
    kept: &str,
    rerouted: &str,
) {
    server.settle_orphaned_forwards();
    lead(server);
    let replies = iterate_until_replied(server, c, "+OK\r\n");
    assert_eq!(replies, "-TIMEOUT outcome unknown\r\n+OK\r\n");
    send(c, format!("MGET {kept} {rerouted}\r\n").as_bytes());
    server.read_client(tc);
    let replies = iterate_until_replied(server, c, "$1\r\n1\r\n");
    assert_eq!(replies, "*2\r\n$-1\r\n$1\r\n1\r\n");
}
