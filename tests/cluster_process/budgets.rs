//! The event loop's budgets: clients that never read their replies held to one
//! shared bound, a pipeline larger than a client's read budget and clients over
//! an iteration's budget served whole and in order, and writes parked past the
//! dispatch budget all going once there is a leader.

use super::common::{bulk, Client, Cluster, Resume};
use raftkv::kv::Reply;
use raftkv::wire::resp;
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

/// Clients that pipeline GETs of a large value and never read the replies
/// are held together to what one such client may have unanswered, not each
/// to it: the replies of ten of them (64 MiB each) were made in one loop
/// iteration of about a second, which cost the cluster its leader.
///
/// The iteration is held to a bound in CPU time, not wall time: on a loaded
/// machine (load average 18) iterations of the fixed loop took 300-470 ms of
/// wall time (12 of 30 runs over 300 ms). Their CPU time was 30-45 ms;
/// with the shared budget removed, 420-550 ms, which the bound catches. No
/// election is asserted: loaded runs had one at 500 ms (1 of 30) and at 2 s
/// (1 of 22, after a 4.2 s iteration with 26 ms of CPU, the loop waiting
/// on the disk), which says nothing of the replies made in an iteration.
#[test]
fn clients_that_never_read_replies_to_large_gets_do_not_stall_the_leader() {
    let cluster = Cluster::start_with_election_timeout(3, 2000);
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    let mut c = cluster.client(leader);
    let value = vec![b'v'; 4_000_000];
    assert_eq!(c.cmd_retry(&["SET", "warm", "1"]), Reply::Ok);
    c.send(&[b"SET", b"big", &value]);
    assert_eq!(c.read(), Reply::Ok);
    let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(2000);
    let addr = cluster.nodes[leader].client_addr();
    let silent: Vec<TcpStream> = (0..10)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).expect("connect");
            stream.write_all(&request).expect("send the GETs");
            stream
        })
        .collect();
    // Time for the node to answer all it will before the clients read.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(c.cmd(&["GET", "warm"]), bulk("1"));
    let info = cluster.info(leader);
    let stall_us: u64 = info["max_iteration_cpu_us"]
        .parse()
        .expect("max_iteration_cpu_us");
    assert!(
        stall_us < 300_000,
        "a loop iteration took {stall_us} us of CPU"
    );
    drop(silent);
}

#[test]
fn a_pipeline_larger_than_a_read_budget_is_served_whole_and_in_order() {
    // A node reads 4 MiB of one client's requests at a time and takes up the
    // rest in later iterations: a pipeline of writes larger than that, which
    // waits in the kernel while the node is stopped, is served whole and in
    // order once it runs again.
    //
    // A 2 s election timeout, not the tests' 200 ms, as in
    // `clients_over_an_iterations_read_budget_are_all_served_whole_and_in_order`:
    // each write's deadline (4 election timeouts) runs from when the node
    // read it, and the 6 MB must be synced by then, which 800 ms need not
    // be on a machine with other disk traffic.
    let cluster = Cluster::start_with_election_timeout(1, 2000);
    let mut client = cluster.client(0);
    let value = |i: usize| format!("{i}:{}", "v".repeat(300 << 10));
    let mut requests = Vec::new();
    for i in 0..20 {
        let key = format!("big{i}");
        resp::encode_request(
            &[b"SET", key.as_bytes(), value(i).as_bytes()],
            &mut requests,
        );
    }
    let pid = cluster.pid(0).expect("running");
    let resume = Resume::stop(pid);
    let mut writer = client.stream.try_clone().expect("clone the stream");
    let sender = thread::spawn(move || writer.write_all(&requests));
    thread::sleep(Duration::from_millis(300));
    drop(resume);
    for i in 0..20 {
        assert_eq!(client.read(), Reply::Ok, "SET {i}");
    }
    sender.join().expect("writer").expect("write the pipeline");
    for i in 0..20 {
        assert_eq!(client.cmd(&["GET", &format!("big{i}")]), bulk(&value(i)));
    }
}

#[test]
fn clients_over_an_iterations_read_budget_are_all_served_whole_and_in_order() {
    // A node reads 16 MiB of all its clients' requests in one iteration; the
    // clients left over go first in the next. Four pipelines of 10 MiB,
    // waiting in the kernel while the node is stopped, take many turns each:
    // none is starved, reordered or cut.
    //
    // A 2 s election timeout, not the tests' 200 ms: each write's deadline
    // (4 election timeouts) runs from when the node read it, and the 40 MiB
    // must be synced by then; 800 ms was too short on a machine with other
    // disk traffic (`-TIMEOUT outcome unknown`).
    let cluster = Cluster::start_with_election_timeout(1, 2000);
    let value = |c: usize, i: usize| format!("{c}:{i}:{}", "v".repeat(1 << 20));
    let mut clients = Vec::new();
    let mut pipelines = Vec::new();
    for c in 0..4 {
        clients.push(cluster.client(0));
        let mut requests = Vec::new();
        for i in 0..10 {
            let key = format!("big{c}-{i}");
            resp::encode_request(
                &[b"SET", key.as_bytes(), value(c, i).as_bytes()],
                &mut requests,
            );
        }
        pipelines.push(requests);
    }
    let pid = cluster.pid(0).expect("running");
    let resume = Resume::stop(pid);
    let senders: Vec<_> = clients
        .iter()
        .zip(pipelines)
        .map(|(client, requests)| {
            let mut writer = client.stream.try_clone().expect("clone the stream");
            thread::spawn(move || writer.write_all(&requests))
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    drop(resume);
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..10 {
            assert_eq!(client.read(), Reply::Ok, "client {c}, SET {i}");
        }
    }
    for sender in senders {
        sender.join().expect("writer").expect("write the pipeline");
    }
    let mut client = cluster.client(0);
    for c in 0..4 {
        for i in 0..10 {
            let key = format!("big{c}-{i}");
            assert_eq!(client.cmd(&["GET", &key]), bulk(&value(c, i)), "{key}");
        }
    }
}

#[test]
fn writes_parked_past_a_dispatch_budget_all_go_once_there_is_a_leader() {
    // Requests that arrive while there is no leader are parked; once one is
    // elected they are routed 16 MiB at a time, in order. Four clients park
    // 8 MiB each on a node alone, then the others start.
    //
    // Each write's deadline (4 election timeouts) runs from its arrival, and
    // must cover the start of two processes, an election (up to 2 election
    // timeouts after they start) and the replication of 32 MiB: with 1 s
    // election timeouts a loaded machine took longer, and the first writes
    // were answered `-TIMEOUT`. With 3 s the election leaves 6 s for the rest.
    let election_timeout = Duration::from_secs(3);
    let mut cluster = Cluster::new(3);
    cluster.set_election_timeout_ms(election_timeout.as_millis() as u64);
    cluster.spawn(0);
    let value = |c: usize, i: usize| format!("{c}:{i}:{}", "p".repeat(1 << 20));
    let mut clients: Vec<Client> = (0..4).map(|_| cluster.client(0)).collect();
    for client in &clients {
        // The first reply may take up to the writes' deadline.
        let wait = election_timeout * 4 + Duration::from_secs(10);
        client
            .stream
            .set_read_timeout(Some(wait))
            .expect("set the read timeout");
    }
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..8 {
            client.send(&[
                b"SET",
                format!("parked{c}-{i}").as_bytes(),
                value(c, i).as_bytes(),
            ]);
        }
    }
    thread::sleep(Duration::from_millis(300));
    cluster.spawn(1);
    cluster.spawn(2);
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..8 {
            assert_eq!(client.read(), Reply::Ok, "client {c}, SET {i}");
        }
    }
    let mut client = cluster.client(0);
    for c in 0..4 {
        for i in 0..8 {
            let key = format!("parked{c}-{i}");
            assert_eq!(
                client.cmd_retry(&["GET", &key]),
                bulk(&value(c, i)),
                "{key}"
            );
        }
    }
}
