//! A leader stopped with SIGTERM answers its own clients' requests still
//! waiting before it exits, in each connection's order: a write it never
//! appended (parked for want of a connected quorum, or while a leadership
//! transfer is under way) `-TRYAGAIN no leader`, one it appended whose
//! commit never came `-TIMEOUT outcome unknown`. Before, those clients saw
//! only the connection close, and could not tell a write safe to send again
//! from one that may have been applied. A write answered `-TRYAGAIN` must
//! never be applied.
//!
//! Requests the node never read (sent after a stopping leader stopped
//! reading its clients) get `-TRYAGAIN no leader` too, and a client that is
//! not reading when the node exits still gets every reply, then the end of
//! the connection: before, those requests got no answer, and what did not
//! fit the socket's buffers was lost.
//!
//! Also here: a plain `CLUSTER TRANSFER` holds the CLUSTER ADD that arrives
//! during it, as a stop's handover does, rather than refuse it.

mod common;

use common::{bulk, wait_for, Client, Cluster, Resume};
use raftkv::kv::Reply;
use std::io::{self, Read};
use std::time::Duration;

const ELECTION_TIMEOUT_MS: u64 = 4000;

fn tryagain() -> Option<Reply> {
    Some(Reply::Error("TRYAGAIN no leader".into()))
}

/// A three-node cluster with a leader that holds one acknowledged write.
fn cluster_with_a_leader(election_timeout_ms: u64) -> (Cluster, usize) {
    let cluster = Cluster::start_with_election_timeout(3, election_timeout_ms);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    assert_eq!(
        cluster.client(leader).cmd_retry(&["SET", "before", "1"]),
        Reply::Ok
    );
    (cluster, leader)
}

/// How many requests the node behind `observer` has handled, this INFO
/// included.
fn commands_processed(observer: &mut Client) -> u64 {
    observer.info()["total_commands_processed"]
        .parse()
        .expect("numeric total_commands_processed")
}

/// Waits until the node behind `observer` has handled `sent` requests
/// since `before` was read (each INFO asked counts itself): a stop that
/// comes after this cannot come before the node read them, however slow
/// the machine.
fn wait_until_handled(observer: &mut Client, before: u64, sent: u64) {
    let mut asked = 0;
    wait_for(
        Duration::from_secs(20),
        "the node to read the requests",
        || {
            asked += 1;
            (commands_processed(observer) >= before + sent + asked).then_some(())
        },
    );
}

/// Sends `requests` on `writer` to the leader, waits until the leader has
/// handled them, stops it with SIGTERM and returns what `writer` got for
/// each.
fn send_then_stop(
    cluster: &mut Cluster,
    leader: usize,
    writer: &mut Client,
    requests: &[&[&[u8]]],
) -> Vec<Option<Reply>> {
    let mut observer = cluster.client(leader);
    let before = commands_processed(&mut observer);
    for request in requests {
        writer.send(request);
    }
    // The leader reads them before the stop closes its ears.
    wait_until_handled(&mut observer, before, requests.len() as u64);
    assert_eq!(cluster.terminate(leader), Some(0), "exit status");
    requests.iter().map(|_| writer.try_read()).collect()
}

/// Freezes a follower and has a client of the leader start a `CLUSTER
/// TRANSFER` to it, which stays under way until its timeout: the frozen
/// follower (resumed when dropped), that client, and the follower's id.
fn transfer_to_a_frozen_follower(cluster: &Cluster, leader: usize) -> (Resume, Client, String) {
    let target = (0..3).find(|&i| i != leader).expect("a follower");
    let target_id = cluster.nodes[target].id.to_string();
    let frozen = Resume::stop(cluster.pid(target).expect("running"));
    let mut transferrer = cluster.client(leader);
    transferrer.send(&[b"CLUSTER", b"TRANSFER", target_id.as_bytes()]);
    let started = format!("transferring leadership to node {target_id}");
    wait_for(Duration::from_secs(5), "the transfer to start", || {
        cluster.log_text(leader).contains(&started).then_some(())
    });
    (frozen, transferrer, target_id)
}

/// Reads, through a leader the cluster elects, that `keys` hold nothing.
fn assert_never_applied(cluster: &Cluster, keys: &[&str]) {
    let next = cluster.wait_for_leader(Duration::from_secs(30));
    let mut reader = cluster.client(next);
    assert_eq!(reader.cmd_retry(&["GET", "before"]), bulk("1"));
    for key in keys {
        assert_eq!(
            reader.cmd_retry(&["GET", key]),
            Reply::Nil,
            "{key}, answered -TRYAGAIN, was applied"
        );
    }
}

/// Both followers killed: the leader, its connections to them closed,
/// parks its clients' writes rather than append what could not commit (it
/// steps down an election timeout after it last heard them; the stop comes
/// well before), and a read pipelined behind them waits with them. Nobody
/// can take over, so it stops at once.
/// A cluster whose followers were killed, its leader, and a client of the
/// leader, once the leader saw its followers gone.
fn a_leader_without_followers() -> (Cluster, usize, Client) {
    let (mut cluster, leader) = cluster_with_a_leader(ELECTION_TIMEOUT_MS);
    for i in (0..3).filter(|&i| i != leader) {
        cluster.kill(i);
    }
    let mut writer = cluster.client(leader);
    wait_for(
        Duration::from_secs(5),
        "the leader to see its followers gone",
        || (writer.info()["connected_peers"] == "0").then_some(()),
    );
    (cluster, leader, writer)
}

#[test]
fn writes_parked_on_a_leader_without_a_quorum_are_refused_tryagain_when_it_stops() {
    let (mut cluster, leader, mut writer) = a_leader_without_followers();
    let requests: [&[&[u8]]; 3] = [
        &[b"SET", b"parked", b"1"],
        &[b"GET", b"parked"],
        &[b"SET", b"later", b"1"],
    ];
    let replies = send_then_stop(&mut cluster, leader, &mut writer, &requests);
    assert_eq!(replies, [tryagain(), tryagain(), tryagain()]);
    for i in 0..3 {
        cluster.spawn(i);
    }
    assert_never_applied(&cluster, &["parked", "later"]);
}

/// A `CLUSTER TRANSFER` to a frozen follower: no write is appended while
/// it is under way, so another client's write is parked. The stop waits
/// for that transfer, which outlasts the bound (2 s, its own timeout being
/// 4 s): the transfer gets `-ERR transfer to N abandoned` (its deadline's
/// answer: the target may still act on it), the parked write `-TRYAGAIN`.
#[test]
fn a_write_parked_during_a_transfer_is_refused_tryagain_when_the_leader_stops() {
    let (mut cluster, leader) = cluster_with_a_leader(ELECTION_TIMEOUT_MS);
    let (frozen, mut transferrer, target_id) = transfer_to_a_frozen_follower(&cluster, leader);
    let mut writer = cluster.client(leader);
    let replies = send_then_stop(
        &mut cluster,
        leader,
        &mut writer,
        &[&[b"SET", b"parked", b"1"]],
    );
    assert_eq!(
        transferrer.try_read(),
        Some(Reply::Error(format!(
            "ERR transfer to {target_id} abandoned"
        )))
    );
    assert_eq!(replies, [tryagain()], "the parked write");
    drop(frozen);
    cluster.spawn(leader);
    assert_never_applied(&cluster, &["parked"]);
}

/// Both followers frozen (their connections stay open): the leader appends
/// its client's writes, which cannot commit, and its read waits for a
/// ReadIndex round that cannot finish. The handover to a frozen follower
/// outlasts the bound; at exit the writes' outcome is unknown (`-TIMEOUT`:
/// the next leader may commit them), the read changed nothing (`-TRYAGAIN`).
#[test]
fn writes_a_stopping_leader_appended_are_answered_timeout_in_order() {
    let (mut cluster, leader) = cluster_with_a_leader(ELECTION_TIMEOUT_MS);
    let frozen: Vec<Resume> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| Resume::stop(cluster.pid(i).expect("running")))
        .collect();
    let mut writer = cluster.client(leader);
    let requests: [&[&[u8]]; 3] = [
        &[b"SET", b"appended", b"1"],
        &[b"GET", b"appended"],
        &[b"SET", b"appended", b"2"],
    ];
    let replies = send_then_stop(&mut cluster, leader, &mut writer, &requests);
    let timeout = Some(Reply::Error("TIMEOUT outcome unknown".into()));
    assert_eq!(replies, [timeout.clone(), tryagain(), timeout]);
    drop(frozen);
}
/// Requests a client pipelines to a leader handing over (to a follower
/// frozen by a `CLUSTER TRANSFER` under way, so the handover lasts its 2 s
/// bound) are never read: at exit each is refused `-TRYAGAIN no leader`, in
/// order, a QUIT among them `+OK`, which ends the connection (the request
/// after it gets no answer), and none is applied.
#[test]
fn requests_a_stopping_leader_never_read_are_refused_tryagain_in_order() {
    let (mut cluster, leader) = cluster_with_a_leader(ELECTION_TIMEOUT_MS);
    let (frozen, mut transferrer, target_id) = transfer_to_a_frozen_follower(&cluster, leader);
    let mut writer = cluster.client(leader);
    // Accepted before the stop closes the listener.
    assert_eq!(writer.cmd(&["PING"]), Reply::Status("PONG".into()));
    cluster.stop_and_await_handover(leader);
    let requests: [&[&[u8]]; 5] = [
        &[b"SET", b"unread", b"1"],
        &[b"GET", b"unread"],
        &[b"INCR", b"counter"],
        &[b"QUIT"],
        &[b"SET", b"after_quit", b"1"],
    ];
    for request in requests {
        writer.send(request);
    }
    assert_eq!(cluster.wait_exit(leader, Duration::from_secs(10)), Some(0));
    let replies: Vec<Option<Reply>> = (0..4).map(|_| writer.try_read()).collect();
    assert_eq!(
        replies,
        [tryagain(), tryagain(), tryagain(), Some(Reply::Ok)]
    );
    assert!(writer.is_closed(), "an answer after QUIT");
    assert_eq!(
        transferrer.try_read(),
        Some(Reply::Error(format!(
            "ERR transfer to {target_id} abandoned"
        )))
    );
    drop(frozen);
    cluster.spawn(leader);
    assert_never_applied(&cluster, &["unread", "counter", "after_quit"]);
}

/// Reads `client`'s connection until the node closes it: every byte, and
/// how it ended (an error is a reset, or no end within the timeout).
fn read_until_closed(client: &mut Client) -> (Vec<u8>, io::Result<()>) {
    let mut got = Vec::new();
    let mut chunk = vec![0; 1 << 16];
    loop {
        match client.stream.read(&mut chunk) {
            Ok(0) => return (got, Ok(())),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(err) => return (got, Err(err)),
        }
    }
}

/// The bytes written to `stream` that the other end's kernel has not
/// acknowledged yet (TIOCOUTQ).
fn unacknowledged_bytes(stream: &std::net::TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: ioctl(TIOCOUTQ) on a socket borrowed for the call, into an int
    // that outlives it.
    let got = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    assert_eq!(got, 0, "ioctl(TIOCOUTQ): {}", io::Error::last_os_error());
    usize::try_from(queued).unwrap_or(0)
}

/// A client of a leader without a quorum pipelines large ECHOs (answered at
/// once, 10 MiB of replies) and 17,000 writes (parked, or past the
/// connection's limit of replies waiting, unread), without reading. The
/// leader stops: the writes are answered `-TRYAGAIN` at exit, far more than
/// the socket's buffers hold. The client, reading only then, gets every
/// reply in order, then the end of the connection, not a reset.
#[test]
fn a_client_not_reading_at_exit_gets_every_reply_then_the_end() {
    const ECHOES: usize = 10;
    // Past the connection's limit of replies waiting (16384) by few enough
    // that the rest fits the node's receive buffer: what TCP's flow control
    // still holds in this client's kernel when the node reads at exit
    // arrives after its exit point, and is not answered.
    const WRITES: usize = 17_000;
    let (mut cluster, leader, mut writer) = a_leader_without_followers();
    let mut observer = cluster.client(leader);
    let before = commands_processed(&mut observer);
    let echoed = vec![b'e'; 1 << 20];
    let mut want = Vec::new();
    for _ in 0..ECHOES {
        writer.send(&[b"ECHO", &echoed]);
        want.extend_from_slice(format!("${}\r\n", echoed.len()).as_bytes());
        want.extend_from_slice(&echoed);
        want.extend_from_slice(b"\r\n");
    }
    for i in 0..WRITES {
        writer.send(&[b"SET", format!("k{i}").as_bytes(), b"1"]);
        want.extend_from_slice(b"-TRYAGAIN no leader\r\n");
    }
    // The ECHOs are answered, not refused at exit; so are the writes the
    // connection may have waiting (16384), the rest left unread.
    wait_until_handled(&mut observer, before, (ECHOES + 16_384) as u64);
    wait_for(
        Duration::from_secs(10),
        "the node's kernel to hold every request sent",
        || (unacknowledged_bytes(&writer.stream) == 0).then_some(()),
    );
    cluster.sigterm(leader);
    let (got, end) = read_until_closed(&mut writer);
    assert_eq!(cluster.wait_exit(leader, Duration::from_secs(10)), Some(0));
    assert_eq!(got.len(), want.len(), "bytes read before the end");
    assert!(got == want, "the replies differ");
    end.expect("the end of the connection, not a reset");
}

/// A `CLUSTER ADD` sent while a plain `CLUSTER TRANSFER` is under way (to a
/// frozen follower, so it is abandoned at its timeout) is held, as during a
/// stop's handover, and carried out once the transfer is over: not refused
/// `-TRYAGAIN leadership transfer in progress` for its client to retry.
#[test]
fn a_cluster_add_during_a_plain_transfer_is_held_and_carried_out() {
    let mut cluster = Cluster::with_joiners(3, 1);
    cluster.set_election_timeout_ms(1000);
    for i in 0..3 {
        cluster.spawn(i);
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let (frozen, mut transferrer, target_id) = transfer_to_a_frozen_follower(&cluster, leader);
    let addr = cluster.nodes[3].raft_addr();
    let mut adder = Client::connect(&cluster.nodes[leader].client_addr());
    adder.send(&[b"CLUSTER", b"ADD", b"4", addr.as_bytes()]);
    assert_eq!(
        transferrer.try_read(),
        Some(Reply::Error(format!(
            "ERR transfer to {target_id} abandoned"
        )))
    );
    assert_eq!(adder.try_read(), Some(Reply::Ok), "the CLUSTER ADD");
    drop(frozen);
}
