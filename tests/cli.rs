//! The binary's command line and start-up contract (SPEC §1, §2, §4, §5): exit
//! status 2 with one line naming the problem for bad flags and config, exit
//! status 1 for a data dir it cannot use, and never a silent reset; exit
//! status 0 on SIGINT; `log_level`, RUST_LOG and the `fsync = never` warning.

mod common;

use common::{free_port, output_within, BIN};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn run(args: &[&str]) -> Output {
    output(Command::new(BIN).args(args))
}

/// Runs `command` to its exit with stdout and stderr captured. Each of these
/// must exit at once; one that runs on (it started serving) is killed after
/// 30 s and fails the test.
fn output(command: &mut Command) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    output_within(command, Duration::from_secs(30)).unwrap_or_else(|output| {
        panic!(
            "still running after 30 s:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_and_version_exit_zero() {
    let help = run(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--config",
        "--local-cluster",
        "--data-dir",
        "--election-timeout-ms",
        "--requirepass",
    ] {
        assert!(text.contains(flag), "--help does not mention {}", flag);
    }
    let version = run(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("raftkv {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Help that cannot be written is a failure with a message, not a panic.
#[test]
fn help_to_a_full_device_exits_1() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return; // not Linux
    };
    let output = output_within(
        Command::new(BIN)
            .arg("--help")
            .stdout(full)
            .stderr(Stdio::piped()),
        Duration::from_secs(30),
    )
    .expect("raftkv --help exits");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("raftkv: cannot write to stdout"),
        "{stderr}"
    );
}

#[test]
fn a_bad_flag_exits_2_with_one_line() {
    let output = run(&["--colour", "red"]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{}", err);
    assert!(
        err.starts_with("raftkv: ") && err.contains("colour"),
        "{}",
        err
    );
    // Control characters in what was given come out escaped: one line, and
    // nothing for the terminal to act on.
    for args in [
        &["--col\u{1b}[31mour", "red"][..],
        &["--fsync", "never\r\u{1b}[2J"][..],
    ] {
        let output = run(args);
        assert_eq!(output.status.code(), Some(2));
        let err = stderr(&output);
        let body = err.strip_suffix('\n').unwrap_or(&err);
        assert!(
            !body.chars().any(char::is_control) && body.contains("\\u{1b}"),
            "{:?}",
            err
        );
    }
}

#[test]
fn a_missing_required_setting_exits_2_naming_it() {
    let output = run(&[
        "--id",
        "1",
        "--raft-addr",
        "127.0.0.1:1",
        "--client-addr",
        "127.0.0.1:2",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{}", err);
    assert!(
        err.contains("cluster") || err.contains("data_dir"),
        "{}",
        err
    );
}

#[test]
fn an_unknown_config_key_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.conf");
    std::fs::write(&path, "id = 1\n# a comment\n\ncolour = red\n").unwrap();
    let path_arg = path.display().to_string();
    let output = run(&["--config", &path_arg]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        stderr(&output).trim_end(),
        format!("raftkv: {}:4: unknown key 'colour'", path_arg)
    );
}

#[test]
fn a_bad_value_for_a_local_cluster_exits_2_with_one_line_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = output(Command::new(BIN).current_dir(dir.path()).args([
        "--local-cluster",
        "2",
        "--heartbeat-ms",
        "0",
    ]));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{}", err);
    assert_eq!(err.lines().count(), 1, "{}", err);
    assert!(err.contains("heartbeat"), "{}", err);
    assert!(
        !dir.path().join("data").exists(),
        "a node started and made its data dir"
    );
}

/// An address that resolves to nothing is a bad value: status 2 before the
/// data dir is made.
#[test]
fn an_own_address_that_does_not_resolve_exits_2_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for key in ["--client-addr", "--raft-addr"] {
        let mut args = node_args(&data.display().to_string());
        let at = args.iter().position(|a| a == key).expect("flag") + 1;
        args[at] = "no-such-host.invalid:7001".into();
        if key == "--raft-addr" {
            let cluster = args.iter().position(|a| a == "--cluster").expect("flag") + 1;
            args[cluster] = "1=no-such-host.invalid:7001".into();
        }
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let output = run(&args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{}", err);
        assert_eq!(err.lines().count(), 1, "{}", err);
        assert!(err.contains("no-such-host.invalid:7001"), "{}", err);
        assert!(!data.exists(), "{key}: the data dir was made");
    }
}

/// A node's own setting in a config file given to `--local-cluster` would be
/// overridden for every node: refused as the flag is, naming file and line.
#[test]
fn a_per_node_setting_in_the_file_of_a_local_cluster_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("node.conf");
    std::fs::write(&conf, "# one node's file\nheartbeat_ms = 40\nid = 1\n").unwrap();
    let output = output(
        Command::new(BIN)
            .current_dir(dir.path())
            .args(["--local-cluster", "2", "--config"])
            .arg(&conf),
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{}", err);
    assert_eq!(err.lines().count(), 1, "{}", err);
    assert!(
        err.contains(&format!("{}:3: 'id'", conf.display())),
        "{}",
        err
    );
    assert!(!dir.path().join("data").exists(), "a node started");
}

fn node_args(data_dir: &str) -> Vec<String> {
    let raft = format!("127.0.0.1:{}", free_port());
    vec![
        "--id".into(),
        "1".into(),
        "--raft-addr".into(),
        raft.clone(),
        "--client-addr".into(),
        format!("127.0.0.1:{}", free_port()),
        "--cluster".into(),
        format!("1={}", raft),
        "--data-dir".into(),
        data_dir.into(),
    ]
}

#[test]
fn a_corrupt_stable_file_stops_the_node_with_status_1_and_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let garbage = b"this is not a stable file, and it must not be wiped".to_vec();
    std::fs::write(data.join("stable"), &garbage).unwrap();
    let args = node_args(&data.display().to_string());
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let output = run(&args);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("stable"), "{}", stderr(&output));
    assert_eq!(std::fs::read(data.join("stable")).unwrap(), garbage);
}

#[test]
fn a_data_dir_that_cannot_be_created_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let inside_file = file.join("data").display().to_string();
    let args = node_args(&inside_file);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let output = run(&args);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("a-file"), "{}", stderr(&output));
    // The file itself as the data dir: said so, not just "File exists".
    let args = node_args(&file.display().to_string());
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let output = run(&args);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output).trim_end(),
        format!("raftkv: {}: exists and is not a directory", file.display()),
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// Starts a one-node cluster with `flags` and `rust_log` as RUST_LOG (none
/// when `None`), waits until it serves, stops it with SIGINT (Ctrl-C in its
/// terminal) and returns its exit code and what it wrote to stderr.
fn serve_then_interrupt(flags: &[&str], rust_log: Option<&str>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = node_args(&dir.path().join("data").display().to_string());
    args.extend(flags.iter().map(|f| f.to_string()));
    let client_addr = args[args.iter().position(|a| a == "--client-addr").unwrap() + 1].clone();
    let log_path = dir.path().join("stderr");
    let mut command = Command::new(BIN);
    command
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
    let mut node = common::Spawned(command.spawn().expect("spawn raftkv"));
    common::wait_for(Duration::from_secs(10), "the client port to open", || {
        std::net::TcpStream::connect(&client_addr).ok()
    });
    // SAFETY: kill(2) with the pid of a child this test owns and has not reaped.
    assert_eq!(unsafe { libc::kill(node.0.id() as i32, libc::SIGINT) }, 0);
    let code = common::wait_for(Duration::from_secs(10), "the node to exit", || {
        node.0.try_wait().expect("wait for the node")
    })
    .code();
    (code, std::fs::read_to_string(&log_path).unwrap())
}

/// SPEC §5: SIGINT stops a node as SIGTERM does, with exit status 0. SPEC §2:
/// `fsync = never` logs a warning; `log_level` sets which lines are logged,
/// and RUST_LOG overrides it.
#[test]
fn sigint_exits_0_and_log_level_fsync_never_and_rust_log_are_honoured() {
    let (code, quiet) = serve_then_interrupt(&["--fsync", "never", "--log-level", "warn"], None);
    assert_eq!(code, Some(0), "{quiet}");
    assert!(
        quiet.contains(" WARN ") && quiet.contains("fsync = never"),
        "no fsync = never warning: {quiet}"
    );
    assert!(
        !quiet.contains(" INFO "),
        "INFO lines at log_level warn: {quiet}"
    );

    let (code, overridden) = serve_then_interrupt(&["--log-level", "warn"], Some("info"));
    assert_eq!(code, Some(0), "{overridden}");
    assert!(
        overridden.contains(" INFO ") && overridden.contains("received signal"),
        "RUST_LOG=info did not override log_level warn: {overridden}"
    );
    assert!(!overridden.contains("fsync = never"), "{overridden}");

    // An empty RUST_LOG is no filter: log_level holds (it logged nothing).
    let (code, empty) = serve_then_interrupt(&[], Some(""));
    assert_eq!(code, Some(0), "{empty}");
    assert!(
        empty.contains(" INFO ") && empty.contains("serving clients"),
        "RUST_LOG= silenced log_level info: {empty}"
    );

    // Nor is one that does not parse: log_level holds, and a warning says
    // why (it logged errors only).
    let (code, invalid) = serve_then_interrupt(&[], Some("bogus==="));
    assert_eq!(code, Some(0), "{invalid}");
    assert!(
        invalid.contains(" INFO ") && invalid.contains("serving clients"),
        "RUST_LOG=bogus=== silenced log_level info: {invalid}"
    );
    assert!(
        invalid.contains(" WARN ") && invalid.contains("RUST_LOG=\"bogus===\" is ignored"),
        "no warning for an invalid RUST_LOG: {invalid}"
    );
}
