//! The answers a node gives its clients' waiting requests before it exits,
//! driven step by step on a node whose loop does not run (a single member
//! that has not campaigned: no leader is known, so a request that needs
//! one waits, parked). Before, each of these was left to the closed
//! connection.

use crate::kv::Command;
use crate::server::client_io::tests::{
    connect, expect_replies, forwarded_to, iterate_until_replied, lead, node, send,
};
use crate::server::clients::{Kind, Pending};
use crate::server::event_loop::Server;
use std::io::Read;
use std::net::TcpStream;

fn set(key: &str) -> Command {
    Command::Set(key.as_bytes().to_vec(), b"1".to_vec())
}

/// Has the node answer its clients as it does before exiting, sends the
/// answers, and compares what `client` reads with `want`.
fn exit_and_expect(server: &mut Server, client: &mut TcpStream, want: &[u8]) {
    server.answer_clients_before_exit();
    server.flush_clients();
    expect_replies(client, want);
}

/// A write sent on to node 2, which stopped leading, may have been
/// appended there: `-TIMEOUT`. The requests pipelined after it wait,
/// parked, never sent anywhere: `-TRYAGAIN`, after it, in order.
#[test]
fn parked_requests_are_refused_tryagain_in_order_behind_one_of_unknown_outcome() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    forwarded_to(&mut server, tc, 7, 2, set("sent"));
    send(&mut c, b"SET parked 1\r\nGET parked\r\nSET later 1\r\n");
    server.read_client(tc);
    assert!(server.parked.holds(tc), "behind the write sent to node 2");
    exit_and_expect(
        &mut server,
        &mut c,
        b"-TIMEOUT outcome unknown\r\n-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n",
    );
    assert!(server.parked.is_empty());
    assert!(server.forwards.is_empty());
}

/// A write this node appended while it led, its commit not come: the next
/// leader may commit it, `-TIMEOUT`. A read waiting for its ReadIndex round
/// changed nothing: `-TRYAGAIN`, as is the write parked behind them.
#[test]
fn an_appended_write_is_answered_timeout_and_a_waiting_read_tryagain() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("client");
    let appended = Pending::InFlight {
        write: true,
        forward: None,
    };
    client.open_slot(appended, Kind::Write);
    let reading = Pending::InFlight {
        write: false,
        forward: None,
    };
    client.open_slot(reading, Kind::Read);
    send(&mut c, b"SET parked 1\r\n");
    server.read_client(tc);
    assert!(server.parked.holds(tc), "no leader is known");
    exit_and_expect(
        &mut server,
        &mut c,
        b"-TIMEOUT outcome unknown\r\n-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n",
    );
}

/// A request held behind its connection's unanswered CLUSTER ADD, and the
/// one still in the input buffer behind it, were read and never handled:
/// `-TRYAGAIN`, after the ADD's `-TIMEOUT` (it went to node 2).
#[test]
fn requests_read_and_never_handled_are_refused_tryagain() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("client");
    let add = client.open_slot(Pending::Parked, Kind::Change);
    client.set_forwarded(add, true, 7, 2);
    server
        .cluster
        .forwarded(7, tc, add, "CLUSTER ADD 4 127.0.0.1:9", 2);
    send(&mut c, b"SET held 1\r\nSET buffered 1\r\n");
    server.read_client(tc);
    assert!(server.clients[&tc].is_holding());
    exit_and_expect(
        &mut server,
        &mut c,
        b"-TIMEOUT outcome unknown\r\n-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n",
    );
}

/// A QUIT read and never handled is answered `+OK` as always, and ends
/// the connection: the request sent after it is never taken, so it gets
/// no answer, not `-TRYAGAIN`.
#[test]
fn nothing_after_an_unhandled_quit_is_answered() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("client");
    client.open_slot(Pending::Parked, Kind::Barrier);
    send(&mut c, b"SET held 1\r\nQUIT\r\nSET after 1\r\n");
    server.read_client(tc);
    assert!(server.clients[&tc].is_holding());
    exit_and_expect(
        &mut server,
        &mut c,
        b"-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n+OK\r\n",
    );
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("the end of the replies");
    assert_eq!(String::from_utf8_lossy(&rest), "", "after QUIT");
}

/// The last `flush_clients` resumes reading a client whose held request
/// was answered: a request read then would get no answer before the node
/// goes, and must not be taken.
#[test]
fn a_stopping_node_reads_no_request_after_its_last_answers() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("client");
    client.open_slot(Pending::Parked, Kind::Barrier);
    send(&mut c, b"SET held 1\r\n");
    server.read_client(tc);
    assert!(server.clients[&tc].is_holding());
    server.shutdown = true;
    server.answer_clients_before_exit();
    send(&mut c, b"SET late 1\r\n");
    server.flush_clients();
    expect_replies(&mut c, b"-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n");
    assert!(!server.parked.holds(tc), "SET late was taken");
}

/// In the iteration that ends with the node stopping, a parked write is
/// not routed, though a leader could take it now: appended, it could only
/// be answered `-TIMEOUT`; parked, it is refused `-TRYAGAIN`, unapplied.
#[test]
fn a_stopping_node_routes_no_parked_write() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    send(&mut c, b"SET parked 1\r\n");
    server.read_client(tc);
    assert!(server.parked.holds(tc), "no leader is known");
    server.shutdown = true;
    lead(&mut server);
    exit_and_expect(&mut server, &mut c, b"-TRYAGAIN no leader\r\n");
    assert_eq!(server.replica.kv().get(b"parked"), None);
}

/// As for a write: a CLUSTER ADD parked while no leader was known is not
/// routed in the iteration after which the node exits, though it leads
/// now; refused `-TRYAGAIN`, it changed nothing.
#[test]
fn a_stopping_node_routes_no_parked_cluster_command() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    send(&mut c, b"CLUSTER ADD 4 127.0.0.1:9\r\n");
    server.read_client(tc);
    assert!(server.cluster.parked.holds(tc), "no leader is known");
    server.shutdown = true;
    lead(&mut server);
    exit_and_expect(&mut server, &mut c, b"-TRYAGAIN no leader\r\n");
    assert_eq!(server.replica.status().learners, Vec::<u64>::new());
}

/// A request held behind a barrier whose reply comes in the iteration
/// after which the node exits is not routed then (`flush_clients` does not
/// resume it), nor are the whole requests behind it in the buffer: appended
/// or sent on, each could only be answered `-TIMEOUT`; refused at exit,
/// they are `-TRYAGAIN`, never appended.
#[test]
fn a_stopping_node_routes_no_request_released_from_behind_a_barrier() {
    use crate::kv::Reply;
    use crate::replica::Completion;
    use crate::server::event_loop::Waiter;
    let (mut server, _dir) = node();
    lead(&mut server);
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("client");
    let barrier = client.open_slot(Pending::Parked, Kind::Barrier);
    send(&mut c, b"SET held 1\r\nSET buffered 1\r\n");
    server.read_client(tc);
    assert!(server.clients[&tc].is_holding());
    // The iteration that ends with the node stopping (a follower's SIGTERM,
    // or the handover's last): the barrier's reply comes, then
    // `iterate` ends with `flush_clients`.
    server.shutdown = true;
    server.completions.push(Completion {
        waiter: Waiter::Client {
            token: tc,
            seq: barrier,
        },
        reply: Reply::Ok,
    });
    server.deliver_completions();
    server.flush_clients();
    let appended = server.replica.pending();
    exit_and_expect(
        &mut server,
        &mut c,
        b"+OK\r\n-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n",
    );
    assert_eq!(appended, 0, "writes appended while stopping");
}

/// A leader exiting at once (no voter to hand over to) does not retry, in
/// its last iteration, a CLUSTER ADD it held (a change was in progress):
/// appended then, it could only be answered `-TIMEOUT`; still held, it is
/// refused `-TRYAGAIN`, never appended.
#[test]
fn an_exiting_leader_retries_no_held_cluster_command() {
    let (mut server, _dir) = node();
    lead(&mut server);
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("client");
    let pending = Pending::InFlight {
        write: true,
        forward: None,
    };
    let seq = client.open_slot(pending, Kind::Change);
    server.cluster.hold(tc, seq, "CLUSTER ADD 4 127.0.0.1:9");
    server.shutdown = true;
    server.cluster_tick();
    assert_eq!(server.replica.pending(), 0, "the held ADD was appended");
    exit_and_expect(&mut server, &mut c, b"-TRYAGAIN no leader\r\n");
    assert_eq!(server.replica.status().learners, Vec::<u64>::new());
}

/// A node about to exit answers its clients' CLUSTER commands still here:
/// one parked (never sent anywhere) `-TRYAGAIN`, one forwarded and not
/// answered (it may still be carried out) `-TIMEOUT`; before, both were
/// left to the closed connection.
#[test]
fn an_exiting_node_answers_its_clients_cluster_commands() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("c");
    let add = client.open_slot(Pending::Parked, Kind::Change);
    client.set_forwarded(add, true, 7, 2);
    server
        .cluster
        .forwarded(7, tc, add, "CLUSTER ADD 4 127.0.0.1:9", 2);
    let (mut d, td) = connect(&mut server);
    send(&mut d, b"CLUSTER REMOVE 3\r\n");
    server.read_client(td);
    assert!(server.cluster.parked.holds(td), "no leader is known");
    server.answer_own_cluster_commands();
    let replies = iterate_until_replied(&mut server, &mut c, "\r\n");
    assert_eq!(replies, "-TIMEOUT outcome unknown\r\n");
    let replies = iterate_until_replied(&mut server, &mut d, "\r\n");
    assert_eq!(replies, "-TRYAGAIN no leader\r\n");
}

/// Requests a client sent that the node never read (it was stopping, as a
/// leader handing over is: `read_client` takes nothing) are read at exit
/// and refused `-TRYAGAIN`, never taken: before, they got no answer.
#[test]
fn requests_left_in_the_socket_are_refused_tryagain() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    server.shutdown = true;
    send(&mut c, b"SET unread 1\r\nGET unread\r\n");
    server.read_client(tc);
    assert!(!server.parked.holds(tc), "read while stopping");
    exit_and_expect(
        &mut server,
        &mut c,
        b"-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n",
    );
    assert!(server.parked.is_empty());
    assert_eq!(server.replica.pending(), 0);
}

/// Unread requests in the socket, behind those in the input buffer, keep
/// their connection's order; a QUIT among them is answered `+OK` and ends
/// the connection: the request after it is not answered.
#[test]
fn unread_requests_follow_the_buffered_ones_up_to_a_quit() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    let client = server.clients.get_mut(&tc).expect("client");
    client.open_slot(Pending::Parked, Kind::Barrier);
    send(&mut c, b"SET held 1\r\nSET buffered 1\r\n");
    server.read_client(tc);
    assert!(server.clients[&tc].is_holding());
    server.shutdown = true;
    send(&mut c, b"SET unread 1\r\nQUIT\r\nSET after 1\r\n");
    exit_and_expect(
        &mut server,
        &mut c,
        b"-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n-TRYAGAIN no leader\r\n+OK\r\n",
    );
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("the end of the replies");
    assert_eq!(String::from_utf8_lossy(&rest), "", "after QUIT");
}

/// An unread request over `max_request_bytes` gets the protocol error it
/// would have got, and ends the connection.
#[test]
fn an_oversized_unread_request_gets_its_protocol_error() {
    let (mut server, _dir) = node();
    let (mut c, tc) = connect(&mut server);
    server.shutdown = true;
    send(&mut c, b"SET unread 1\r\n*2\r\n$3\r\nGET\r\n$2000000\r\nxx");
    server.read_client(tc);
    exit_and_expect(
        &mut server,
        &mut c,
        b"-TRYAGAIN no leader\r\n-ERR protocol error: request exceeds max_request_bytes (1048576)\r\n",
    );
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("the end of the replies");
    assert_eq!(String::from_utf8_lossy(&rest), "");
}
