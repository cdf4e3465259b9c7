//! `raftkv --local-cluster N`: N nodes on loopback as child processes of this
//! one, on the default ports, with data under `./data/nodeN`. SIGTERM/SIGINT
//! stops them all: each child gets SIGTERM, and any still running after a
//! grace period gets SIGKILL. If this process dies without a chance to do
//! that (SIGKILL), each child gets SIGTERM from the kernel.

use crate::cli::{self, Action, Flags};
use crate::config;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(4);
/// A child that fails this soon after starting is a failed start (say, a
/// port in use), see [`failed_start`].
const STARTUP: Duration = Duration::from_secs(2);
/// Longest wait for the nodes' client ports before the banner.
const LISTEN_WAIT: Duration = Duration::from_secs(30);

/// The flags that give node `i` of an `n`-node loopback cluster its identity;
/// its data dir is `nodeI` under `data_base`.
pub fn node_args(i: u32, n: u32, data_base: &str) -> Vec<String> {
    let cluster: Vec<String> = (1..=n)
        .map(|j| format!("{}=127.0.0.1:{}", j, 7000 + j))
        .collect();
    vec![
        "--id".into(),
        i.to_string(),
        "--raft-addr".into(),
        format!("127.0.0.1:{}", 7000 + i),
        "--client-addr".into(),
        format!("127.0.0.1:{}", 6380 + i),
        "--cluster".into(),
        cluster.join(","),
        "--data-dir".into(),
        format!("{}/node{}", data_base, i),
    ]
}

/// The flags every child gets, except `--data-dir`, which is the base of the
/// children's own data dirs.
fn passthrough(flags: &Flags) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(config) = &flags.config {
        args.push("--config".into());
        args.push(config.display().to_string());
    }
    for (key, value) in flags.overrides.iter().filter(|(key, _)| key != "data_dir") {
        args.push(format!("--{}", key.replace('_', "-")));
        args.push(value.clone());
    }
    args
}

/// Makes the child get SIGTERM when this process dies, so that a parent
/// killed with SIGKILL (which it cannot catch to stop them) leaves no nodes
/// running on the default ports.
#[cfg(target_os = "linux")]
fn stop_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec; prctl and
    // getppid are async-signal-safe, and nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect: then
            // there is no one to run the node for.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn stop_with_parent(_: &mut Command) {}

/// The settings of the `--config` file, which every node gets. A node's own
/// settings there would be overridden for every node without a word: they
/// are refused, naming file and line, as the same flags are.
fn shared_file_settings(flags: &Flags) -> Result<Vec<(String, String, usize)>, String> {
    let Some(path) = flags.config.as_deref() else {
        return Ok(Vec::new());
    };
    let settings = config::read_file(path).map_err(|err| err.to_string())?;
    match settings
        .iter()
        .find(|(key, _, _)| cli::PER_NODE_KEYS.contains(&key.as_str()))
    {
        Some((key, _, line)) => Err(config::ConfigError(format!(
            "{}:{}: '{}' cannot be used with --local-cluster (it sets each node's own)",
            path.display(),
            line,
            key
        ))
        .to_string()),
        None => Ok(settings),
    }
}

/// The base of the nodes' data dirs: `--data-dir`, else the file's
/// `data_dir`, else `data`. The flag is not passed on to the nodes, so it is
/// checked here: empty, it would put their data dirs at `/node1`, ... (an
/// empty `data_dir` in the file is refused by the nodes' check, naming its line).
fn data_base<'a>(
    flags: &'a Flags,
    file_settings: &'a [(String, String, usize)],
) -> Result<&'a str, String> {
    let flag = flags
        .overrides
        .iter()
        .rev()
        .find(|(key, _)| key == "data_dir")
        .map(|(_, value)| value.as_str());
    if flag == Some("") {
        return Err(format!(
            "{}: bad value '' for 'data_dir': must not be empty",
            config::flag_name("data_dir")
        ));
    }
    Ok(flag
        .or_else(|| {
            file_settings
                .iter()
                .find(|(key, _, _)| key == "data_dir")
                .map(|(_, value, _)| value.as_str())
        })
        .unwrap_or("data"))
}

fn terminate(children: &mut [(u32, Child)]) {
    for (_, child) in children.iter_mut() {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory is involved.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + GRACE;
    for (i, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    crate::errln!("raftkv: node {} did not stop in time; killing it", i);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Runs the cluster until a signal; the exit status is 0 after a clean stop.
pub fn run(nodes: u32, flags: &Flags) -> ExitCode {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        if let Err(err) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            crate::errln!("raftkv: cannot install a signal handler: {}", err);
            return ExitCode::from(1);
        }
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            crate::errln!("raftkv: cannot find my own executable: {}", err);
            return ExitCode::from(1);
        }
    };
    let extra = passthrough(flags);
    let file_settings = match shared_file_settings(flags) {
        Ok(settings) => settings,
        Err(err) => {
            crate::errln!("raftkv: {}", err);
            return ExitCode::from(2);
        }
    };
    let data_base = match data_base(flags, &file_settings) {
        Ok(base) => base,
        Err(err) => {
            crate::errln!("raftkv: {}", err);
            return ExitCode::from(2);
        }
    };
    // Checked here, as the children will check them, so that a bad setting
    // is one line and status 2 with nothing started (SPEC §1), not one
    // line per child and a cluster that falls apart.
    for i in 1..=nodes {
        let mut args = node_args(i, nodes, data_base);
        args.extend(extra.iter().cloned());
        let checked = match cli::parse(&args) {
            Ok(Action::Run(child)) => config::load(&child).map(drop).map_err(|e| e.to_string()),
            Ok(_) => Err(format!("node {i}: unexpected arguments {args:?}")),
            Err(err) => Err(err.to_string()),
        };
        if let Err(err) = checked {
            crate::errln!("raftkv: {}", err);
            return ExitCode::from(2);
        }
    }
    let mut children = Vec::new();
    for i in 1..=nodes {
        let mut command = Command::new(&exe);
        command.args(node_args(i, nodes, data_base)).args(&extra);
        stop_with_parent(&mut command);
        let spawned = command.spawn();
        match spawned {
            Ok(child) => children.push((i, child)),
            Err(err) => {
                crate::errln!("raftkv: cannot start node {}: {}", i, err);
                terminate(&mut children);
                return ExitCode::from(1);
            }
        }
    }
    if let Err(code) = wait_until_listening(&mut children, &stop) {
        terminate(&mut children);
        return code;
    }
    crate::outln!(
        "raftkv: started a {}-node cluster on loopback; connect to any node:",
        nodes
    );
    for i in 1..=nodes {
        crate::outln!(
            "  node {}: redis-cli -p {}   (client 127.0.0.1:{}, raft 127.0.0.1:{}, data {}/node{})",
            i,
            6380 + i,
            6380 + i,
            7000 + i,
            data_base,
            i
        );
    }
    crate::outln!("Ctrl-C stops all of them.");
    let started = Instant::now();
    // Whether every node that left exited with status 0 (a `SHUTDOWN` sent
    // to it): the last one leaving is then a clean stop, not a failure.
    let mut all_stopped_cleanly = true;
    while !stop.load(Ordering::Relaxed) {
        let mut exited = None;
        for (i, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some((*i, status));
            }
        }
        if let Some((i, status)) = exited {
            children.retain(|(j, _)| *j != i);
            all_stopped_cleanly &= status.success();
            let at_start = started.elapsed() < STARTUP && failed_start(status);
            let next = match (at_start, children.is_empty()) {
                (true, _) => stopping_at_start(&children),
                (false, true) => "; no node is left".to_string(),
                (false, false) => format!("; {}", carry_on(&children)),
            };
            crate::errln!("raftkv: node {} exited ({}){}", i, status, next);
            if children.is_empty() && all_stopped_cleanly {
                crate::outln!("raftkv: cluster stopped");
                return ExitCode::SUCCESS;
            }
            if at_start || children.is_empty() {
                terminate(&mut children);
                return ExitCode::from(1);
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    terminate(&mut children);
    crate::outln!("raftkv: cluster stopped");
    ExitCode::SUCCESS
}

/// "node 2", "nodes 1 and 3", "nodes 1, 2 and 4".
fn listed(children: &[(u32, Child)]) -> String {
    let ids: Vec<String> = children.iter().map(|(i, _)| i.to_string()).collect();
    match ids.as_slice() {
        [rest @ .., last] if !rest.is_empty() => {
            format!("nodes {} and {}", rest.join(", "), last)
        }
        _ => format!("node {}", ids.join("")),
    }
}

/// "node 2 carries on", "nodes 1 and 3 carry on".
fn carry_on(others: &[(u32, Child)]) -> String {
    match others.len() {
        1 => format!("{} carries on", listed(others)),
        _ => format!("{} carry on", listed(others)),
    }
}

/// What follows "node N exited (status)" when it failed to start.
fn stopping_at_start(others: &[(u32, Child)]) -> String {
    match others.is_empty() {
        true => " at start".to_string(),
        false => format!(" at start; stopping {}", listed(others)),
    }
}

/// Whether a node that exited within [`STARTUP`] failed to start (an error
/// status, or a crash) rather than was stopped from outside (SIGKILL, or
/// SIGTERM/SIGINT and a clean exit). Only a failed start stops the others: a
/// minority killed at once, as anyone may kill one at any moment (SPEC §4),
/// leaves a cluster that serves, and SIGTERM must still stop it with status 0.
fn failed_start(status: ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code != 0,
        (None, Some(signal)) => ![libc::SIGKILL, libc::SIGTERM, libc::SIGINT].contains(&signal),
        (None, None) => true,
    }
}

/// Waits until every node accepts connections on its client port, so that the
/// banner's "started" is true. A node that fails first (its port taken, say)
/// ends the cluster with status 1, but one stopped from outside (see
/// [`failed_start`]) is only reported: the others are waited for, as they
/// are once the banner is out. A slow start (a large snapshot to load) is
/// waited for up to `LISTEN_WAIT`, then the banner is printed anyway.
fn wait_until_listening(
    children: &mut Vec<(u32, Child)>,
    stop: &AtomicBool,
) -> Result<(), ExitCode> {
    let deadline = Instant::now() + LISTEN_WAIT;
    let mut waiting: Vec<u32> = children.iter().map(|(i, _)| *i).collect();
    while !waiting.is_empty() && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let mut exited = Vec::new();
        for (i, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                exited.push((*i, status));
            }
        }
        // Reaped, so their pids may be reused: out of `children` before any
        // is sent SIGTERM.
        children.retain(|(i, _)| !exited.iter().any(|(j, _)| j == i));
        waiting.retain(|i| !exited.iter().any(|(j, _)| j == i));
        if let Some((i, status)) = exited.iter().find(|(_, status)| failed_start(*status)) {
            // Said before the others are stopped: their own lines then say
            // only that they received SIGTERM.
            let next = stopping_at_start(children);
            crate::errln!("raftkv: node {i} exited ({status}){next}");
            return Err(ExitCode::from(1));
        }
        for (i, status) in &exited {
            match children.is_empty() {
                true => crate::errln!("raftkv: node {i} exited ({status}); no node is left"),
                false => {
                    let others = carry_on(children);
                    crate::errln!("raftkv: node {i} exited ({status}); {others}");
                }
            }
        }
        if children.is_empty() {
            return Err(ExitCode::from(1));
        }
        waiting.retain(|i| {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 6380 + *i as u16));
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err()
        });
        if !waiting.is_empty() {
            thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn the_data_base_is_the_flag_else_the_file_else_data_and_never_empty() {
        let flags = |overrides: &[(&str, &str)]| Flags {
            config: None,
            force_new_cluster: false,
            overrides: overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let file = vec![("data_dir".to_string(), "from-file".to_string(), 3)];
        assert_eq!(data_base(&flags(&[]), &[]), Ok("data"));
        assert_eq!(data_base(&flags(&[]), &file), Ok("from-file"));
        assert_eq!(
            data_base(&flags(&[("data_dir", "from-flag")]), &file),
            Ok("from-flag")
        );
        // An empty --data-dir is a bad value, as for one node: as a base it
        // would put the nodes' data dirs at /node1, /node2, ...
        assert_eq!(
            data_base(&flags(&[("data_dir", "")]), &file),
            Err("--data-dir: bad value '' for 'data_dir': must not be empty".to_string())
        );
    }

    #[test]
    fn only_an_error_or_a_crash_is_a_failed_start() {
        // wait(2) statuses: the exit code in the second byte, a signal in the first.
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        let killed = ExitStatus::from_raw;
        assert!(failed_start(exited(1)));
        assert!(failed_start(exited(2)));
        assert!(failed_start(killed(libc::SIGABRT)));
        assert!(failed_start(killed(libc::SIGSEGV)));
        assert!(!failed_start(exited(0)));
        assert!(!failed_start(killed(libc::SIGKILL)));
        assert!(!failed_start(killed(libc::SIGTERM)));
        assert!(!failed_start(killed(libc::SIGINT)));
    }
}
