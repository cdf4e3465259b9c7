//! The data directory guards, against the real binary:
//!
//! - a second process on a data dir a live node holds exits with status 1
//!   naming the dir and the holder's pid, changes nothing, and the first
//!   keeps serving; once the first is `kill -9`ed the dir starts again;
//! - a node whose `log/` was removed stops with status 1 naming it and
//!   recreates nothing, with or without a snapshot (it used to start with an
//!   empty log, or empty it to continue the snapshot, losing acknowledged
//!   writes); left with only its snapshot, it stops and creates no `log/`;
//! - a node that joined and never got an entry still restarts;
//! - a `log` link to nothing stops the node naming link and target;
//! - a FIFO in place of `stable` or `founders` stops the node with status 1
//!   naming it, and one left at `stable.tmp` is replaced (each used to hang
//!   the node in `open`, deaf to SIGTERM).

mod common;

use common::{bulk, contents, free_port, run_to_exit, wait_for, Cluster};
use raftkv::kv::Reply;
use std::fs;
use std::time::Duration;

/// The line `main` prints for the error that stopped the node.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|line| line.starts_with("raftkv: "))
        .unwrap_or_else(|| panic!("no 'raftkv: ' error line:\n{}", stderr))
}

#[test]
fn a_second_process_on_a_live_data_dir_exits_1_and_the_first_keeps_serving() {
    let mut cluster = Cluster::new(1);
    cluster.spawn(0);
    cluster.wait_for_settled_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    assert_eq!(client.cmd_retry(&["SET", "before", "1"]), Reply::Ok);
    let data_dir = cluster.data_dir(0).to_path_buf();
    let lock = data_dir.join("lock");
    let first_pid = cluster.pid(0).expect("running");
    assert_eq!(
        fs::read_to_string(&lock).expect("read the lock file"),
        format!("{}\n", first_pid)
    );
    let kept = ["lock", "founders", "stable"].map(|name| {
        let path = data_dir.join(name);
        let bytes = fs::read(&path).expect("read");
        (path, bytes)
    });

    // Same id and data dir, ports of its own and a cluster naming them: the
    // old binary started this one, recorded its address as node 1's in
    // `founders`, and had it elect itself and acknowledge writes too.
    let raft = format!("127.0.0.1:{}", free_port());
    let args: Vec<String> = [
        "--id",
        "1",
        "--raft-addr",
        &raft,
        "--client-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--cluster",
        &format!("1={}", raft),
        "--data-dir",
        &data_dir.display().to_string(),
        "--heartbeat-ms",
        "20",
        "--election-timeout-ms",
        "200",
    ]
    .map(String::from)
    .to_vec();
    let (code, stderr) = run_to_exit(&args, Duration::from_secs(15));
    assert_eq!(code, Some(1), "{}", stderr);
    assert_eq!(
        error_line(&stderr),
        format!(
            "raftkv: data dir {} is in use by another process: pid {} holds the lock on {}",
            data_dir.display(),
            first_pid,
            lock.display()
        ),
        "{}",
        stderr
    );
    for (path, bytes) in &kept {
        assert_eq!(
            &fs::read(path).expect("read"),
            bytes,
            "{} changed",
            path.display()
        );
    }

    // The first node never noticed.
    assert_eq!(client.cmd_retry(&["SET", "during", "2"]), Reply::Ok);
    assert_eq!(client.cmd(&["GET", "before"]), bulk("1"));

    // kill -9: the kernel drops the lock with the process.
    cluster.kill(0);
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    assert_eq!(client.cmd_retry(&["GET", "before"]), bulk("1"));
    assert_eq!(client.cmd_retry(&["GET", "during"]), bulk("2"));
    assert_eq!(client.cmd_retry(&["SET", "after", "3"]), Reply::Ok);
    assert_eq!(
        fs::read_to_string(&lock).expect("read the lock file"),
        format!("{}\n", cluster.pid(0).expect("running"))
    );
}

/// Writes keys to a one-node cluster snapshotting every `snapshot_entries`
/// entries, kills it, removes its `log/` and the files `removed_too`, and
/// restarts it: it must stop, naming `log/` (or, with `founders` gone too,
/// the missing `stable` beside the snapshot), and change nothing, not even
/// the pid in the lock file: no `log/` is created either.
fn removed_log_dir_stops_the_node(
    snapshot_entries: u64,
    keys: u64,
    snapshot_at: u64,
    removed_too: &[&str],
) {
    let mut cluster = Cluster::new(1);
    cluster.nodes[0].extra_args = vec!["--snapshot-entries".into(), snapshot_entries.to_string()];
    cluster.spawn(0);
    cluster.wait_for_settled_leader(Duration::from_secs(15));
    let mut client = cluster.client(0);
    for k in 0..keys {
        let key = format!("k{}", k);
        assert_eq!(client.cmd_retry(&["SET", &key, "v"]), Reply::Ok);
    }
    if snapshot_at > 0 {
        wait_for(Duration::from_secs(20), "a snapshot", || {
            let info = client.try_info()?;
            let at: u64 = info.get("snapshot_index")?.parse().ok()?;
            let busy = info.get("snapshot_in_progress")? != "0";
            (at >= snapshot_at && !busy).then_some(())
        });
    }
    cluster.kill(0);
    let data_dir = cluster.data_dir(0).to_path_buf();
    let log_dir = data_dir.join("log");
    fs::remove_dir_all(&log_dir).expect("rm -rf log/");
    for name in removed_too {
        fs::remove_file(data_dir.join(name)).expect("rm");
    }
    // `snapshot/` is created with the first snapshot.
    let has_snapshot = fs::read_dir(data_dir.join("snapshot")).is_ok_and(|mut items| {
        items.any(|e| {
            e.expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == "snap")
        })
    });
    assert_eq!(has_snapshot, snapshot_at > 0);
    // What shows the log was there: `stable`, else `founders`, else (with
    // neither) the snapshot, which a node keeps only after storing its term.
    let (stable, founders) = (data_dir.join("stable"), data_dir.join("founders"));
    let missing_log = format!("raftkv: {}: corrupt: missing", log_dir.display());
    let (expected, witness) = match (stable.exists(), founders.exists()) {
        (true, _) => (missing_log, stable.display().to_string()),
        (false, true) => (missing_log, founders.display().to_string()),
        (false, false) => (
            format!("{} is missing, but ", stable.display()),
            ".snap is there".to_string(),
        ),
    };
    let before = contents(&data_dir, &[]);

    for _ in 0..2 {
        let (code, stderr) = run_to_exit(&cluster.args(0), Duration::from_secs(15));
        assert_eq!(code, Some(1), "{}", stderr);
        let line = error_line(&stderr);
        assert!(
            line.contains(&expected) && line.contains(&witness),
            "{}",
            stderr
        );
        assert!(
            !log_dir.exists(),
            "the node recreated {}",
            log_dir.display()
        );
        assert_eq!(contents(&data_dir, &[]), before);
    }
}

#[test]
fn a_node_whose_log_dir_was_removed_exits_1_naming_it_and_recreates_nothing() {
    removed_log_dir_stops_the_node(1_000_000, 20, 0, &[]);
}

/// With `stable` removed too, the node started as a new one: empty, at term
/// 0, a voter that could vote twice in a term (found by hand, a joiner
/// rejoined its cluster that way). `founders`, written after the first
/// start created `log/`, shows the log was removed.
#[test]
fn a_node_whose_log_dir_and_stable_file_were_removed_exits_1_naming_them() {
    removed_log_dir_stops_the_node(1_000_000, 20, 0, &["stable"]);
}

#[test]
fn a_node_with_a_snapshot_whose_log_dir_was_removed_exits_1_naming_it() {
    removed_log_dir_stops_the_node(10, 45, 30, &[]);
}

#[test]
fn a_node_with_a_snapshot_whose_log_dir_and_stable_file_were_removed_exits_1() {
    removed_log_dir_stops_the_node(10, 45, 30, &["stable"]);
}

/// With `founders` gone as well, only the snapshot shows what the node
/// held; the start is refused by recovery's checks, after the storage's
/// open, which used to create an empty `log/` on the way.
#[test]
fn a_node_left_with_only_its_snapshot_exits_1_and_creates_no_log_dir() {
    removed_log_dir_stops_the_node(10, 45, 30, &["stable", "founders"]);
}

/// A node started with `--join` that was never added holds an empty `log/`
/// (and no entries): it restarts after `kill -9`, and is then added and
/// catches up.
#[test]
fn a_joiner_that_never_got_an_entry_restarts() {
    let mut cluster = Cluster::with_joiners(1, 1);
    cluster.spawn(0);
    cluster.wait_for_settled_leader(Duration::from_secs(15));
    cluster.spawn(1);
    for dir in ["log", "snapshot"] {
        assert!(cluster.data_dir(1).join(dir).is_dir(), "{dir}/ missing");
    }
    cluster.kill(1);
    cluster.spawn(1);
    let mut leader = cluster.client(0);
    assert_eq!(leader.cmd_retry(&["SET", "k", "v"]), Reply::Ok);
    let raft = cluster.nodes[1].raft_addr();
    assert_eq!(leader.cmd_retry(&["CLUSTER", "ADD", "2", &raft]), Reply::Ok);
    let index: u64 = cluster.info(0)["commit_index"]
        .parse()
        .expect("commit_index");
    cluster.wait_applied(index, Duration::from_secs(15));
    cluster.kill(1);
    cluster.spawn(1);
    cluster.wait_applied(index, Duration::from_secs(15));
}

/// Two founders' data dirs swapped: each node refuses the other's, with
/// status 1 naming the file, and changes nothing in it (the vote in `stable`
/// is the other node's: running on it could give a second vote in a term).
/// Started on their own, both serve again.
#[test]
fn a_node_started_on_another_nodes_data_dir_exits_1_and_changes_nothing() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(15));
    assert_eq!(
        cluster.client(leader).cmd_retry(&["SET", "k", "v"]),
        Reply::Ok
    );
    let (a, b) = (1, 2);
    cluster.terminate(a);
    cluster.terminate(b);
    for (node, other) in [(a, b), (b, a)] {
        let other_dir = cluster.data_dir(other).to_path_buf();
        let before = contents(&other_dir, &[]);
        let mut args = cluster.args(node);
        let at = args
            .iter()
            .position(|arg| arg == "--data-dir")
            .expect("--data-dir")
            + 1;
        args[at] = other_dir.display().to_string();
        let (code, stderr) = run_to_exit(&args, Duration::from_secs(15));
        assert_eq!(code, Some(1), "{}", stderr);
        let founders = other_dir.join("founders");
        assert_eq!(
            error_line(&stderr),
            format!(
                "raftkv: {}: this data dir is node {}'s, but id is {} (is this another node's data dir?)",
                founders.display(),
                cluster.nodes[other].id,
                cluster.nodes[node].id
            ),
            "{}",
            stderr
        );
        assert_eq!(contents(&other_dir, &[]), before, "the data dir changed");
    }
    cluster.spawn(a);
    cluster.spawn(b);
    for i in [a, b] {
        assert_eq!(cluster.client(i).cmd_retry(&["GET", "k"]), bulk("v"));
    }
}

/// `log` a symbolic link to a path that does not exist (a volume not
/// mounted, say): one line naming the link and its target, status 1, and
/// nothing created, neither the target nor anything in the data dir (it
/// used to say only `data/log: File exists (os error 17)`). The same on a
/// data dir of a node that ran, and on one that holds only the link.
#[test]
fn a_log_link_to_nothing_exits_1_naming_link_and_target_and_creates_nothing() {
    let mut cluster = Cluster::new(1);
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    assert_eq!(cluster.client(0).cmd_retry(&["SET", "k", "v"]), Reply::Ok);
    cluster.kill(0);
    let data_dir = cluster.data_dir(0).to_path_buf();
    let log_dir = data_dir.join("log");
    let moved = cluster.dir.path().join("log-moved");
    fs::rename(&log_dir, &moved).expect("move log/ away");
    let target = cluster.dir.path().join("unmounted").join("log");
    std::os::unix::fs::symlink(&target, &log_dir).expect("symlink");
    let before = contents(&data_dir, &["log"]);
    let expected = format!(
        "raftkv: {}: a symbolic link to {}, which does not exist",
        log_dir.display(),
        target.display()
    );
    for _ in 0..2 {
        let (code, stderr) = run_to_exit(&cluster.args(0), Duration::from_secs(15));
        assert_eq!(code, Some(1), "{}", stderr);
        assert_eq!(error_line(&stderr), expected, "{}", stderr);
        assert_eq!(
            contents(&data_dir, &["log"]),
            before,
            "the data dir changed"
        );
        assert_eq!(fs::read_link(&log_dir).ok(), Some(target.clone()));
        assert!(!cluster.dir.path().join("unmounted").exists());
    }
    // A new node's data dir, the link alone in it (and its lock, which any
    // start creates first).
    let fresh = cluster.dir.path().join("fresh");
    fs::create_dir(&fresh).expect("mkdir");
    std::os::unix::fs::symlink(&target, fresh.join("log")).expect("symlink");
    let mut args = cluster.args(0);
    let at = args
        .iter()
        .position(|arg| arg == "--data-dir")
        .expect("--data-dir")
        + 1;
    args[at] = fresh.display().to_string();
    let (code, stderr) = run_to_exit(&args, Duration::from_secs(15));
    assert_eq!(code, Some(1), "{}", stderr);
    assert!(
        error_line(&stderr).ends_with("which does not exist"),
        "{}",
        stderr
    );
    let mut names: Vec<String> = fs::read_dir(&fresh)
        .expect("read the data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["lock", "log"]);
    assert!(!cluster.dir.path().join("unmounted").exists());
    // Back in place, the node serves what it had.
    fs::remove_file(&log_dir).expect("rm the link");
    fs::rename(&moved, &log_dir).expect("move log/ back");
    cluster.spawn(0);
    assert_eq!(cluster.client(0).cmd_retry(&["GET", "k"]), bulk("v"));
}

#[test]
fn a_fifo_in_place_of_a_data_dir_file_stops_the_node_instead_of_hanging_it() {
    let mut cluster = Cluster::new(1);
    cluster.spawn(0);
    cluster.wait_for_leader(Duration::from_secs(15));
    assert_eq!(cluster.client(0).cmd_retry(&["SET", "k", "v"]), Reply::Ok);
    cluster.terminate(0);
    let data_dir = cluster.data_dir(0).to_path_buf();
    for name in ["stable", "founders"] {
        let path = data_dir.join(name);
        let saved = data_dir.join(format!("{name}.saved"));
        fs::rename(&path, &saved).expect("move the file aside");
        mkfifo(&path);
        // Opened for reading the usual way, a FIFO blocks until a writer
        // comes: the start hung, deaf to SIGTERM.
        let (code, stderr) = run_to_exit(&cluster.args(0), Duration::from_secs(15));
        assert_eq!(code, Some(1), "{}", stderr);
        let line = error_line(&stderr);
        assert!(
            line.contains(&path.display().to_string()) && line.contains("not a regular file"),
            "{}",
            stderr
        );
        fs::remove_file(&path).expect("rm the fifo");
        fs::rename(&saved, &path).expect("put the file back");
    }
    // A FIFO left where the node writes its next term (`stable.tmp`): the
    // write opened it and blocked for good, deaf to SIGTERM.
    mkfifo(&data_dir.join("stable.tmp"));
    cluster.spawn(0);
    assert_eq!(cluster.client(0).cmd_retry(&["GET", "k"]), bulk("v"));
}

fn mkfifo(path: &std::path::Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
}
