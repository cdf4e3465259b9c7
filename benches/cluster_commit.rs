//! End-to-end commit throughput of a 3-node cluster over loopback: three nodes
//! in this process, each on its own thread with its own event loop, with
//! `fsync = always` on a temp dir beside the build. One client connection to the
//! leader keeps N `SET`s in flight (a pipeline of N) and waits for every `+OK`,
//! so a measured element is a write committed on a majority of disks and applied.
//! N = 1 is the latency of one commit; larger N shows how group commit batches.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftkv::config::{Config, FsyncMode};
use raftkv::kv::Reply;
use raftkv::server::{self, NodeHandle};
use raftkv::wire::resp;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

struct Cluster {
    nodes: Vec<NodeHandle>,
    client_addrs: Vec<String>,
    _dir: tempfile::TempDir,
}

fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let raft: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let client_addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let cluster: Vec<(u64, String)> = raft
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.clone()))
        .collect();
    let nodes = (0..3)
        .map(|i| {
            let config = Config {
                id: i as u64 + 1,
                raft_addr: raft[i].clone(),
                client_addr: client_addrs[i].clone(),
                cluster: cluster.clone(),
                data_dir: dir.path().join(format!("node{}", i + 1)),
                cluster_name: "bench".into(),
                heartbeat_ms: 50,
                election_timeout_ms: 500,
                fsync: FsyncMode::Always,
                snapshot_entries: 1_000_000,
                max_request_bytes: 8 << 20,
                requirepass: None,
                join: false,
                force_new_cluster: false,
                log_level: "error".into(),
            };
            server::spawn(config).expect("start node")
        })
        .collect();
    Cluster {
        nodes,
        client_addrs,
        _dir: dir,
    }
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    fn read_reply(&mut self) -> Reply {
        loop {
            if let Ok(Some((reply, used))) = resp::parse_reply(&self.buf) {
                self.buf.drain(..used);
                return reply;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read a reply");
            assert!(n > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn call(&mut self, argv: &[&[u8]]) -> Reply {
        let mut out = Vec::new();
        resp::encode_request(argv, &mut out);
        self.stream.write_all(&out).expect("write");
        self.read_reply()
    }
}

fn leader_client(cluster: &Cluster) -> Client {
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no leader elected"
        );
        for addr in &cluster.client_addrs {
            let mut client = Client::connect(addr);
            if let Reply::Bulk(text) = client.call(&[b"INFO"]) {
                if String::from_utf8_lossy(&text).contains("role:leader") {
                    return client;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn commit_throughput(c: &mut Criterion) {
    let cluster = start_cluster();
    let mut client = leader_client(&cluster);
    let value = [b'v'; 100];
    let mut key_number = 0u64;
    let mut group = c.benchmark_group("cluster_commit");
    for in_flight in [1u64, 16, 256] {
        group.throughput(Throughput::Elements(in_flight));
        group.bench_with_input(
            BenchmarkId::from_parameter(in_flight),
            &in_flight,
            |b, &n| {
                b.iter_custom(|iters| {
                    let mut batch = Vec::new();
                    let start = Instant::now();
                    for _ in 0..iters {
                        batch.clear();
                        for _ in 0..n {
                            key_number += 1;
                            let key = format!("key:{:012}", key_number % 100_000);
                            resp::encode_request(&[b"SET", key.as_bytes(), &value], &mut batch);
                        }
                        client.stream.write_all(&batch).expect("write batch");
                        for _ in 0..n {
                            assert_eq!(client.read_reply(), Reply::Ok);
                        }
                    }
                    start.elapsed()
                })
            },
        );
    }
    group.finish();
    for node in cluster.nodes {
        node.stop().expect("clean stop");
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = commit_throughput
}
criterion_main!(benches);
