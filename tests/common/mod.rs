//! Helpers for tests that run the real `raftkv` binary: free loopback ports,
//! temporary data dirs, a cluster whose processes are killed when it is
//! dropped (also when the test fails), and a small RESP client.

#![allow(dead_code)]

mod client;
pub mod load;

use raftkv::kv::Reply;
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering as AtomicOrdering};
use std::thread;
use std::time::{Duration, Instant};

// Every test target compiles this module and uses only some of it; the
// allow(dead_code) above does not cover re-exports.
#[allow(unused_imports)]
pub use client::{bulk, parse_info, Client};

pub const BIN: &str = env!("CARGO_BIN_EXE_raftkv");

/// A port nobody listens on right now, below the kernel's ephemeral range:
/// a port from that range can be taken as the local end of any outgoing
/// connection between now and the moment a node binds it (tests that start
/// nodes late and connect a lot lost nodes to that). Falls back to an
/// ephemeral port when the range leaves no room below it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = 10000u32;
    if ephemeral_low > low + 1000 {
        let span = ephemeral_low - low;
        // Spread concurrent test processes over the span.
        let start = std::process::id().wrapping_mul(7919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, AtomicOrdering::Relaxed);
            let port = low + (start + n.wrapping_mul(37)) % span;
            if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` every 20 ms until it returns Some, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        if start.elapsed() > limit {
            panic!("timed out after {:?} waiting for {}", limit, what);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until no open file holds a lock on `data_dir`'s lock file, as
/// `/proc/locks` shows (returns at once where there is none to read). For a
/// test that wrote the data dir with the storage library and then starts a
/// node on it: the library's lock is an `flock` on an open file, and a child
/// another test thread was spawning meanwhile shares that open file from its
/// fork until its exec, so the lock can outlive the library's close by as
/// long as the loaded machine takes to run the child (a node started then
/// found its data dir "in use by another process", this one). Probing with a
/// lock of our own could be shared the same way; reading `/proc/locks` is not.
pub fn wait_until_unlocked(data_dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(data_dir.join("lock")) else {
        return;
    };
    let file_id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    wait_for(
        Duration::from_secs(30),
        "no process to hold the data dir's lock",
        || {
            let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
            (!locks
                .lines()
                .any(|line| line.split_whitespace().any(|field| field == file_id)))
            .then_some(())
        },
    );
}

/// One node's fixed identity; the process comes and goes.
pub struct NodeSpec {
    pub id: u64,
    pub raft_port: u16,
    pub client_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    pub extra_args: Vec<String>,
    /// Started with `--join` instead of `--cluster` (added later with CLUSTER ADD).
    pub join: bool,
    /// Started with neither `--cluster` nor `--join` (a restart: the data dir
    /// records the members it was founded with).
    pub restart_bare: bool,
    /// Both open-files limits (`ulimit -n`) the process starts with.
    pub open_files: Option<u64>,
    /// Both file-size limits (`ulimit -f`, in bytes) the process starts with,
    /// with SIGXFSZ ignored: a write past it fails with EFBIG, as a write to a
    /// full disk fails with ENOSPC.
    pub file_size: Option<u64>,
}

impl NodeSpec {
    pub fn client_addr(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn raft_addr(&self) -> String {
        format!("127.0.0.1:{}", self.raft_port)
    }
}

/// A child process that is killed and reaped when dropped, also when the
/// test fails; one that already exited is only reaped.
pub struct Spawned(pub Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs `command` (stdin closed; stdout and stderr as the caller set them)
/// until it exits and returns what it wrote to the pipes among them. One still
/// running after `limit` is killed, and what it wrote comes back as the error.
pub fn output_within(command: &mut Command, limit: Duration) -> Result<Output, Output> {
    let mut child = Spawned(
        command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {:?}: {}", command, err)),
    );
    // Read on threads, so a process that writes a lot cannot block on a full pipe.
    fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.0.stdout.take());
    let stderr = drain(child.0.stderr.take());
    let deadline = Instant::now() + limit;
    let timed_out = loop {
        if child.0.try_wait().expect("wait for the process").is_some() {
            break false;
        }
        if Instant::now() > deadline {
            let _ = child.0.kill();
            break true;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let status = child.0.wait().expect("reap the process");
    let output = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    if timed_out {
        Err(output)
    } else {
        Ok(output)
    }
}

/// Runs the binary with `args` until it exits and returns its exit code and
/// stderr; one still running after `limit` (it accepted the data dir) is
/// killed and fails the test.
pub fn run_to_exit(args: &[String], limit: Duration) -> (Option<i32>, String) {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    match output_within(&mut command, limit) {
        Ok(output) => (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ),
        Err(output) => panic!(
            "the node accepted the data dir and ran for {:?}:\n{}",
            limit,
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// A cluster of real processes in a temp dir; every process is killed on drop.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeSpec>,
    children: Vec<Option<Child>>,
    cluster_arg: String,
    /// The host nodes are named by in `--raft-addr` and `--cluster`.
    raft_host: String,
    /// `--election-timeout-ms` (200 unless set).
    election_timeout_ms: u64,
}

impl Cluster {
    /// Allocates ports and dirs for `n` nodes without starting them.
    pub fn new(n: usize) -> Cluster {
        Cluster::with_joiners(n, 0)
    }

    /// `founders` nodes that form the cluster (ids 1..=founders) and
    /// `joiners` more (the next ids) that start with `--join`, all unstarted.
    pub fn with_joiners(founders: usize, joiners: usize) -> Cluster {
        let n = founders + joiners;
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<NodeSpec> = (1..=n as u64)
            .map(|id| NodeSpec {
                id,
                raft_port: free_port(),
                client_port: free_port(),
                data_dir: dir.path().join(format!("node{}", id)),
                log_path: dir.path().join(format!("node{}.log", id)),
                extra_args: Vec::new(),
                join: id > founders as u64,
                restart_bare: false,
                open_files: None,
                file_size: None,
            })
            .collect();
        let cluster_arg = nodes
            .iter()
            .filter(|n| !n.join)
            .map(|n| format!("{}=127.0.0.1:{}", n.id, n.raft_port))
            .collect::<Vec<_>>()
            .join(",");
        let children = (0..n).map(|_| None).collect();
        Cluster {
            dir,
            nodes,
            children,
            cluster_arg,
            raft_host: "127.0.0.1".to_string(),
            election_timeout_ms: 200,
        }
    }

    /// Starts `n` nodes with fast timeouts and waits for a leader.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with_election_timeout(n, 200)
    }

    /// Starts `n` nodes with an election timeout of `ms` (see
    /// [`Cluster::set_election_timeout_ms`]) and waits for a leader.
    pub fn start_with_election_timeout(n: usize, ms: u64) -> Cluster {
        let mut cluster = Cluster::new(n);
        cluster.set_election_timeout_ms(ms);
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster.wait_for_settled_leader(Duration::from_secs(30) + Duration::from_millis(4 * ms));
        cluster
    }

    /// Names the nodes by `host` instead of 127.0.0.1 in `--raft-addr` and
    /// `--cluster`.
    pub fn name_members_by_host(&mut self, host: &str) {
        self.cluster_arg = self.cluster_arg.replace(&self.raft_host, host);
        self.raft_host = host.to_string();
    }

    /// A slower election timeout, for tests that need a leader to keep
    /// leading for a while after it loses its followers (requests then
    /// wait four times as long for their deadline).
    pub fn set_election_timeout_ms(&mut self, ms: u64) {
        self.election_timeout_ms = ms;
    }

    pub fn args(&self, i: usize) -> Vec<String> {
        let node = &self.nodes[i];
        let mut args: Vec<String> = vec![
            "--id".into(),
            node.id.to_string(),
            "--raft-addr".into(),
            format!("{}:{}", self.raft_host, node.raft_port),
            "--client-addr".into(),
            node.client_addr(),
            "--data-dir".into(),
            node.data_dir.display().to_string(),
            "--heartbeat-ms".into(),
            "20".into(),
            "--election-timeout-ms".into(),
            self.election_timeout_ms.to_string(),
            "--log-level".into(),
            "debug".into(),
        ];
        if node.join && !node.restart_bare {
            args.push("--join".into());
        } else if !node.restart_bare {
            args.push("--cluster".into());
            args.push(self.cluster_arg.clone());
        }
        args.extend(node.extra_args.iter().cloned());
        args
    }

    /// Starts node `i` (0-based), appending its stderr to its log file.
    pub fn spawn(&mut self, i: usize) {
        assert!(
            self.children[i].is_none(),
            "node {} is already running",
            i + 1
        );
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.nodes[i].log_path)
            .expect("open node log");
        let mut command = Command::new(BIN);
        let (open_files, file_size) = (self.nodes[i].open_files, self.nodes[i].file_size);
        if open_files.is_some() || file_size.is_some() {
            // SAFETY: setrlimit and signal are async-signal-safe; nothing else
            // runs in the child.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    let limits = [
                        (libc::RLIMIT_NOFILE, open_files),
                        (libc::RLIMIT_FSIZE, file_size),
                    ];
                    for (resource, value) in limits {
                        let Some(n) = value else { continue };
                        let limit = libc::rlimit {
                            rlim_cur: n,
                            rlim_max: n,
                        };
                        if libc::setrlimit(resource, &limit) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    if file_size.is_some() {
                        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    }
                    Ok(())
                });
            }
        }
        let child = command
            .args(self.args(i))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftkv");
        self.children[i] = Some(child);
        let addr = self.nodes[i].client_addr();
        wait_for(Duration::from_secs(10), "the client port to open", || {
            TcpStream::connect(&addr).ok()
        });
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// The pid of node `i`'s process while it runs (to signal it, e.g. SIGSTOP).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// `kill -9` node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to `limit` for node `i` to exit by itself and returns its exit
    /// code (None if a signal ended it).
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> Option<i32> {
        let mut child = self.children[i].take().expect("node was started");
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} did not exit within {:?}", i + 1, limit);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends node `i` SIGTERM, leaving it running to be waited for.
    pub fn sigterm(&self, i: usize) {
        let pid = self.pid(i).expect("running") as i32;
        // SAFETY: kill(2) on the pid of a child this test spawned, not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }

    /// Sends the leader SIGTERM and waits for its log to name the node it
    /// hands over to; returns that node.
    pub fn stop_and_await_handover(&self, leader: usize) -> usize {
        self.sigterm(leader);
        let target: u64 = wait_for(Duration::from_secs(5), "the handover to start", || {
            let log = self.log_text(leader);
            let (_, rest) = log.split_once("handing leadership to node ")?;
            rest.split_whitespace().next()?.parse().ok()
        });
        self.nodes
            .iter()
            .position(|n| n.id == target)
            .expect("a member")
    }

    /// SIGTERM node `i` and return its exit code (None if killed by a signal).
    pub fn terminate(&mut self, i: usize) -> Option<i32> {
        let mut child = self.children[i].take()?;
        // SAFETY: a pid we spawned and have not reaped yet.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {} ignored SIGTERM for 10 s", i + 1);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn client(&self, i: usize) -> Client {
        Client::connect(&self.nodes[i].client_addr())
    }

    pub fn info(&self, i: usize) -> HashMap<String, String> {
        self.client(i).info()
    }

    /// The index of the node every running node agrees leads, once they do.
    pub fn wait_for_leader(&self, limit: Duration) -> usize {
        wait_for(limit, "a leader all running nodes agree on", || {
            self.agreed_leader()
        })
    }

    /// The index of the node every running node names as leader, if they
    /// all name the same running one.
    fn agreed_leader(&self) -> Option<usize> {
        let mut leader = None;
        for i in self.running() {
            let info = Client::try_connect(&self.nodes[i].client_addr())?.try_info()?;
            let id: u64 = info.get("leader_id")?.parse().ok()?;
            if id == 0 || leader.is_some_and(|l| l != id) {
                return None;
            }
            leader = Some(id);
        }
        let id = leader?;
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .filter(|&i| self.is_running(i))
    }

    /// [`Cluster::wait_for_leader`], and then until the leader has committed
    /// everything in its log, its election's Noop included, and every running
    /// node has applied that, all in the leader's term. Until then the first
    /// client write carries the fresh log's first fdatasync on the leader and
    /// a follower (the zeros written ahead of the records, the preallocated
    /// blocks marked written), which on a disk busy with other synced writes
    /// outlasted a write's deadline of four 200 ms election timeouts
    /// (`-TIMEOUT outcome unknown`). Needs a majority running and connected.
    pub fn wait_for_settled_leader(&self, limit: Duration) -> usize {
        wait_for(
            limit,
            "a leader whose log every running node applied",
            || {
                let leader = self.agreed_leader()?;
                let number = |info: &HashMap<String, String>, field: &str| -> Option<u64> {
                    info.get(field)?.parse().ok()
                };
                let info = Client::try_connect(&self.nodes[leader].client_addr())?.try_info()?;
                let (term, commit) = (number(&info, "term")?, number(&info, "commit_index")?);
                let settled = info.get("role").is_some_and(|r| r == "leader")
                    && commit >= 1
                    && commit >= number(&info, "last_log_index")?
                    && number(&info, "applied_index")? >= commit;
                if !settled {
                    return None;
                }
                for i in self.running() {
                    let info = Client::try_connect(&self.nodes[i].client_addr())?.try_info()?;
                    if number(&info, "term")? != term || number(&info, "applied_index")? < commit {
                        return None;
                    }
                }
                Some(leader)
            },
        )
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.is_running(i))
    }

    /// Waits until every running node has applied at least `index`.
    pub fn wait_applied(&self, index: u64, limit: Duration) {
        wait_for(limit, "all running nodes to apply", || {
            (0..self.nodes.len())
                .filter(|&i| self.is_running(i))
                .all(|i| {
                    self.info(i)
                        .get("applied_index")
                        .and_then(|v| v.parse::<u64>().ok())
                        .is_some_and(|a| a >= index)
                })
                .then_some(())
        })
    }

    /// The match index node `leader` knows node `i` to have (its CLUSTER
    /// MEMBERS): what it acts on, e.g. a stopping leader hands over to the
    /// follower with the highest, not to one that holds a longer log but
    /// whose acknowledgement has not reached it yet.
    pub fn match_index_known_to(&self, leader: usize, i: usize) -> Option<u64> {
        let mut client = Client::try_connect(&self.nodes[leader].client_addr())?;
        if !client.try_send(&[b"CLUSTER", b"MEMBERS"]) {
            return None;
        }
        let Reply::Bulk(text) = client.try_read()? else {
            return None;
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        let prefix = format!("id={} ", self.nodes[i].id);
        let line = text.lines().find(|line| line.starts_with(&prefix))?;
        line.split("match_index=").nth(1)?.trim().parse().ok()
    }

    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default()
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].data_dir
    }

    /// Copies every node's whole log under `$RAFTKV_TEST_LOGS`, when set, in
    /// a directory of its own: a failure seen once in hundreds of loaded runs
    /// needs more than the tails printed below, and the temp dir goes with
    /// the cluster.
    fn keep_logs(&self) {
        let Some(base) = std::env::var_os("RAFTKV_TEST_LOGS") else {
            return;
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let kept = Path::new(&base).join(format!("{}-{}", stamp, std::process::id()));
        if let Err(err) = fs::create_dir_all(&kept) {
            eprintln!("cannot keep the node logs in {}: {}", kept.display(), err);
            return;
        }
        for node in &self.nodes {
            let name = node.log_path.file_name().unwrap_or_default();
            if let Err(err) = fs::copy(&node.log_path, kept.join(name)) {
                eprintln!("cannot keep {}: {}", node.log_path.display(), err);
            }
        }
        eprintln!("---- node logs kept in {} ----", kept.display());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            // A node that died by itself (or was killed from outside) explains a lot.
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
                    eprintln!("---- node {} had already exited: {} ----", i + 1, status);
                }
            }
        }
        for i in 0..self.children.len() {
            self.kill(i);
        }
        if thread::panicking() {
            self.keep_logs();
            for i in 0..self.nodes.len() {
                let text = self.log_text(i);
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("---- node {} log (last 40 lines) ----", i + 1);
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{}", line);
                }
            }
        }
    }
}

/// Every file under `dir` (relative path → bytes), `skip` left out.
pub fn contents(dir: &Path, skip: &[&str]) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for item in fs::read_dir(dir).expect("read dir") {
            let path = item.expect("dir entry").path();
            let rel = path.strip_prefix(root).expect("inside").to_path_buf();
            if skip.iter().any(|s| rel == Path::new(s)) {
                continue;
            }
            if path.is_dir() {
                out.insert(rel.join(""), Vec::new());
                walk(root, &path, skip, out);
            } else {
                out.insert(rel, fs::read(&path).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

/// SIGCONTs a SIGSTOPped node when dropped, also when the test fails.
pub struct Resume(u32);

impl Resume {
    /// SIGSTOPs the node with this pid, until the guard is dropped.
    pub fn stop(pid: u32) -> Resume {
        // SAFETY: kill(2) on the pid of a child this test spawned.
        unsafe {
            libc::kill(pid as i32, libc::SIGSTOP);
        }
        Resume(pid)
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of a child this test spawned.
        unsafe {
            libc::kill(self.0 as i32, libc::SIGCONT);
        }
    }
}
