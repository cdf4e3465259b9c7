//! `raftkv --local-cluster 3` on the default ports (SPEC §1): serving within
//! seconds, and gone, with exit status 0, soon after SIGTERM; its nodes gone
//! too when it is killed with SIGKILL.
//! This is the only test on the fixed ports 6381-6383 and 7001-7003.

mod common;

use common::{bulk, wait_for, Client, BIN};
use raftkv::kv::Reply;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // A child already reaped may have had its pid reused: leave it.
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: a pid we spawned and have not reaped; SIGTERM lets it stop
        // its own children.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn spawn_local_cluster(dir: &std::path::Path, flags: &[&str]) -> KillOnDrop {
    let child = Command::new(BIN)
        .args(["--local-cluster", "3", "--election-timeout-ms", "300"])
        .args(flags)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn raftkv --local-cluster 3");
    KillOnDrop(child)
}

#[test]
fn local_cluster_serves_and_stops_cleanly_on_sigterm() {
    for port in [6381, 6382, 6383, 7001, 7002, 7003] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {} is taken by another process; this test needs the default ports",
            port
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let mut guard = spawn_local_cluster(dir.path(), &[]);
    let leader = wait_for(Duration::from_secs(20), "a leader on 6381-6383", || {
        let mut client = Client::try_connect("127.0.0.1:6381")?;
        let info = client.try_info()?;
        let id: u64 = info.get("leader_id")?.parse().ok()?;
        (id != 0).then_some(id)
    });
    assert!((1..=3).contains(&leader));
    for port in [6381, 6382, 6383] {
        let mut client = Client::connect(&format!("127.0.0.1:{}", port));
        let key = format!("k{}", port);
        assert_eq!(client.cmd_retry(&["SET", &key, "v"]), Reply::Ok);
        assert_eq!(client.cmd(&["GET", &key]), bulk("v"));
    }
    for n in 1..=3 {
        assert!(dir.path().join(format!("data/node{}", n)).is_dir());
    }

    // SAFETY: the pid of the child spawned above, not yet reaped.
    unsafe {
        libc::kill(guard.0.id() as i32, libc::SIGTERM);
    }
    let start = Instant::now();
    let status = loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "still running 6 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    for port in [6381, 6382, 6383, 7001, 7002, 7003] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {} still open after the cluster stopped",
            port
        );
    }

    // A parent killed outright cannot stop its nodes: the kernel does. This
    // time from a config file, whose data_dir is the base of the nodes'.
    std::fs::write(dir.path().join("c.conf"), "data_dir = elsewhere\n").unwrap();
    let mut guard = spawn_local_cluster(dir.path(), &["--config", "c.conf"]);
    wait_for(Duration::from_secs(20), "node 3 serving again", || {
        Client::try_connect("127.0.0.1:6383").map(drop)
    });
    assert!(dir.path().join("elsewhere/node3").is_dir());
    guard.0.kill().expect("SIGKILL the parent");
    guard.0.wait().expect("reap the parent");
    wait_all_closed("after the parent was killed");

    // Nobody reads what it prints (`raftkv --local-cluster 3 | head -1`, a
    // closed terminal): it runs on, and stops cleanly.
    let mut guard = spawn_local_cluster(dir.path(), &[]);
    drop(guard.0.stdout.take());
    wait_for(Duration::from_secs(20), "node 3 serving again", || {
        let mut client = Client::try_connect("127.0.0.1:6383")?;
        (client.cmd_retry(&["SET", "k", "v"]) == Reply::Ok).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        matches!(guard.0.try_wait(), Ok(None)),
        "the parent exited when its stdout closed"
    );
    // SAFETY: the pid of the child spawned above, not yet reaped.
    unsafe {
        libc::kill(guard.0.id() as i32, libc::SIGTERM);
    }
    let status = wait_for(Duration::from_secs(6), "the parent to exit", || {
        guard.0.try_wait().ok().flatten()
    });
    assert_eq!(status.code(), Some(0));
    wait_all_closed("after SIGTERM with stdout closed");
}

fn wait_all_closed(when: &str) {
    wait_for(
        Duration::from_secs(6),
        &format!("every port closed {when}"),
        || {
            [6381, 6382, 6383, 7001, 7002, 7003]
                .iter()
                .all(|&port| TcpStream::connect(("127.0.0.1", port)).is_err())
                .then_some(())
        },
    );
}
