//! A real client library, unmodified: redis-py (from PyPI, in a virtualenv
//! under target/) runs `clients/redis_py_check.py` against the leader and a
//! follower of a 3-node cluster, in its default protocol (RESP3 with HELLO 3)
//! and in RESP2, including its default MULTI/EXEC pipeline.

mod common;

use common::Cluster;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn run(cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {}", cmd, e));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{:?} failed:\n{}", cmd, text);
    text
}

/// A virtualenv with redis-py, made once per target dir.
fn venv_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("redis-py-venv");
    let python = venv.join("bin").join("python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    }
    let has_redis = Command::new(&python)
        .args(["-c", "import redis"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_redis {
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "redis>=5"]));
    }
    python
}

#[test]
fn redis_py_works_against_leader_and_follower() {
    let python = venv_python();
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = (leader + 1) % 3;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/redis_py_check.py");
    let out = run(Command::new(python)
        .arg(script)
        .arg(cluster.nodes[leader].client_port.to_string())
        .arg(cluster.nodes[follower].client_port.to_string()));
    assert_eq!(out.matches(": ok").count(), 6, "{}", out);
}
