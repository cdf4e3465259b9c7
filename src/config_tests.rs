use super::values::check_value;
use super::*;

/// Its data dir never exists: one with a `founders` file (as the README's
/// first command leaves in `data/`) would make `cluster` optional.
const BASE: &str = "\
id = 2
raft_addr = 127.0.0.1:7002
client_addr = 127.0.0.1:6382
cluster = 3=127.0.0.1:7003, 1=127.0.0.1:7001,2=127.0.0.1:7002
data_dir = /nonexistent/raftkv-config-tests/node2
";

fn from_text(text: &str, overrides: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let overrides: Vec<(String, String)> = overrides
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let settings = parse(text, "conf/x.conf")?;
    resolve("conf/x.conf", &settings, &overrides)
}

fn err(text: &str, overrides: &[(&str, &str)]) -> String {
    match from_text(text, overrides) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parse_skips_comments_and_blanks_and_numbers_lines() {
    let text =
        "\u{feff}# header\n\n  id = 7   # trailing\r\nraft_addr=h:1\n\t\n data_dir =  a b \n";
    let settings = parse(text, "f").unwrap();
    assert_eq!(
        settings,
        vec![
            ("id".to_string(), "7".to_string(), 3),
            ("raft_addr".to_string(), "h:1".to_string(), 4),
            ("data_dir".to_string(), "a b".to_string(), 6),
        ]
    );
}

#[test]
fn parse_errors_name_file_line_and_key() {
    let text = "id = 1\n\n# c\ncolour = blue\n";
    assert_eq!(
        parse(text, "conf/node1.conf").unwrap_err().to_string(),
        "conf/node1.conf:4: unknown key 'colour'"
    );
    let text = "id = 1\nraft_addr = a:1\nid = 2\n";
    assert_eq!(
        parse(text, "c.conf").unwrap_err().to_string(),
        "c.conf:3: duplicate key 'id'"
    );
    // Control characters are shown escaped: the error stays one line.
    assert_eq!(
        parse("colour\u{1b}[31m = red\rsize = 2\n", "c.conf")
            .unwrap_err()
            .to_string(),
        "c.conf:1: unknown key 'colour\\u{1b}[31m'"
    );
    assert_eq!(
        parse("id = 1\n\njust words\n", "c.conf")
            .unwrap_err()
            .to_string(),
        "c.conf:3: unknown key 'just'"
    );
    assert_eq!(
        parse("fsync always\n", "c.conf").unwrap_err().to_string(),
        "c.conf:1: expected 'fsync = value'"
    );
    assert_eq!(
        parse(" = 5\n", "c.conf").unwrap_err().to_string(),
        "c.conf:1: expected 'key = value'"
    );
    // Keys are exact: no case folding, no dashes.
    assert_eq!(
        parse("ID = 1", "c").unwrap_err().to_string(),
        "c:1: unknown key 'ID'"
    );
    assert_eq!(
        parse("data-dir = x", "c").unwrap_err().to_string(),
        "c:1: unknown key 'data-dir'"
    );
}

#[test]
fn defaults_fill_unset_keys_and_cluster_is_sorted() {
    let config = from_text(BASE, &[]).unwrap();
    assert_eq!(
        config,
        Config {
            id: 2,
            raft_addr: "127.0.0.1:7002".to_string(),
            client_addr: "127.0.0.1:6382".to_string(),
            cluster: vec![
                (1, "127.0.0.1:7001".to_string()),
                (2, "127.0.0.1:7002".to_string()),
                (3, "127.0.0.1:7003".to_string()),
            ],
            data_dir: PathBuf::from("/nonexistent/raftkv-config-tests/node2"),
            cluster_name: "raftkv".to_string(),
            heartbeat_ms: 50,
            election_timeout_ms: 500,
            fsync: FsyncMode::Always,
            snapshot_entries: 100_000,
            max_request_bytes: 8_388_608,
            requirepass: None,
            join: false,
            log_level: "info".to_string(),
            force_new_cluster: false,
        }
    );
}

#[test]
fn every_default_passes_its_own_check() {
    for def in KEYS {
        if let Presence::Default(value) = def.presence {
            assert_eq!(
                check_value(def.kind, value),
                Ok(()),
                "default of {}",
                def.name
            );
        }
    }
}

#[test]
fn flags_override_file_keys_and_every_key_is_settable() {
    let text = format!("{BASE}heartbeat_ms = 10\nfsync = never\n");
    let config = from_text(
        &text,
        &[
            ("data_dir", "/tmp/n2"),
            ("heartbeat_ms", "20"),
            ("election_timeout_ms", "200"),
            ("cluster_name", "blue"),
            ("snapshot_entries", "5"),
            ("max_request_bytes", "1024"),
            ("requirepass", "s3cret pass"),
            ("log_level", "DEBUG"),
            ("fsync", "always"),
        ],
    )
    .unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/tmp/n2"));
    assert_eq!((config.heartbeat_ms, config.election_timeout_ms), (20, 200));
    assert_eq!(config.cluster_name, "blue");
    assert_eq!(config.snapshot_entries, 5);
    assert_eq!(config.max_request_bytes, 1024);
    assert_eq!(config.requirepass.as_deref(), Some("s3cret pass"));
    assert_eq!(config.log_level, "debug");
    assert_eq!(config.fsync, FsyncMode::Always);
    let config = from_text(&text, &[]).unwrap();
    assert_eq!((config.heartbeat_ms, config.fsync), (10, FsyncMode::Never));
}

#[test]
fn flags_alone_without_a_file() {
    let overrides: Vec<(String, String)> = [
        ("id", "1"),
        ("raft_addr", "[::1]:7001"),
        ("client_addr", "localhost:6381"),
        ("cluster", "1=[::1]:7001"),
        ("data_dir", "d"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = load(&Flags {
        config: None,
        force_new_cluster: false,
        overrides,
    })
    .unwrap();
    assert_eq!(config.cluster, vec![(1, "[::1]:7001".to_string())]);
    assert_eq!(config.client_addr, "localhost:6381");
}

#[test]
fn client_and_raft_addresses_must_differ() {
    assert_eq!(
            err(BASE, &[("client_addr", "127.0.0.1:7002")]),
            "--client-addr: bad value '127.0.0.1:7002' for 'client_addr': the same address as raft_addr; the two ports must differ"
        );
}

#[test]
fn the_client_address_cannot_be_another_members_raft_address() {
    assert_eq!(
        err(BASE, &[("client_addr", "127.0.0.1:7003")]),
        "--client-addr: bad value '127.0.0.1:7003' for 'client_addr': the raft address of node 3 in cluster"
    );
}

/// A NUL byte cannot be in a path (the OS takes none), so a `data_dir` holding
/// one is a bad value named with its line (status 2, nothing created), not a
/// failure to create the data dir (status 1, and no key named); the NUL is
/// shown escaped, so the line stays one line of text.
#[test]
fn a_data_dir_with_a_nul_byte_is_a_bad_value() {
    let text = BASE.replace("node2\n", "no\0de2\n");
    assert_eq!(
        err(&text, &[]),
        "conf/x.conf:5: bad value '/nonexistent/raftkv-config-tests/no\\u{0}de2' for 'data_dir': \
         a path cannot contain a NUL byte"
    );
}

#[test]
fn bad_values_name_their_line_or_flag() {
    let text = format!("{BASE}heartbeat_ms = abc\n");
    assert_eq!(
        err(&text, &[]),
        "conf/x.conf:6: bad value 'abc' for 'heartbeat_ms': expected an integer from 1 to 60000"
    );
    assert_eq!(
            err(BASE, &[("heartbeat_ms", "0")]),
            "--heartbeat-ms: bad value '0' for 'heartbeat_ms': out of range, expected an integer from 1 to 60000"
        );
    // A flag does not hide a bad file value.
    assert_eq!(
        err(&text, &[("heartbeat_ms", "10")]),
        "conf/x.conf:6: bad value 'abc' for 'heartbeat_ms': expected an integer from 1 to 60000"
    );
    assert_eq!(
        err(&BASE.replace("id = 2", "id = +2"), &[]),
        "conf/x.conf:1: bad value '+2' for 'id': expected an integer >= 1"
    );
    assert_eq!(
        err(&BASE.replace("id = 2", "id = 0"), &[]),
        "conf/x.conf:1: bad value '0' for 'id': out of range, expected an integer >= 1"
    );
    assert_eq!(
        err(&BASE.replace("id = 2", "id = -2"), &[]),
        "conf/x.conf:1: bad value '-2' for 'id': expected an integer >= 1"
    );
    assert_eq!(
        err(BASE, &[("fsync", "sometimes")]),
        "--fsync: bad value 'sometimes' for 'fsync': expected always or never"
    );
    assert_eq!(
        err(BASE, &[("log_level", "loud")]),
        "--log-level: bad value 'loud' for 'log_level': expected error, warn, info, debug or trace"
    );
    assert_eq!(
        err(BASE, &[("cluster_name", "a b")]),
        "--cluster-name: bad value 'a b' for 'cluster_name': must not contain whitespace"
    );
    assert_eq!(
        err(&format!("{BASE}requirepass =\n"), &[]),
        "conf/x.conf:6: bad value '' for 'requirepass': must not be empty"
    );
    assert_eq!(
        err(BASE, &[("max_request_bytes", "0")]),
        "--max-request-bytes: bad value '0' for 'max_request_bytes': out of range, expected an integer from 1 to 15728640"
    );
    assert_eq!(
            err(BASE, &[("max_request_bytes", "16777216")]),
            "--max-request-bytes: bad value '16777216' for 'max_request_bytes': out of range, expected an integer from 1 to 15728640"
        );
    assert_eq!(
        err(BASE, &[("join", "maybe")]),
        "--join: bad value 'maybe' for 'join': expected yes or no"
    );
    assert_eq!(
        err(BASE, &[("fsync", "never\r\u{7}")]),
        "--fsync: bad value 'never\\r\\u{7}' for 'fsync': expected always or never"
    );
}

#[test]
fn addresses_need_host_and_valid_port() {
    for (addr, why) in [
        ("127.0.0.1", "expected host:port"),
        (":6382", "expected host:port with a host name or IP address"),
        (
            "::1:6382",
            "an IPv6 address needs brackets, as in [::1]:7001",
        ),
        (
            "[]:7001",
            "expected an IPv6 address in brackets, as in [::1]:7001",
        ),
        (
            "[h]:7001",
            "expected an IPv6 address in brackets, as in [::1]:7001",
        ),
        (
            "[::1:7001",
            "expected an IPv6 address in brackets, as in [::1]:7001",
        ),
        ("h:0", "bad port '0', expected 1 to 65535"),
        ("h:65536", "bad port '65536', expected 1 to 65535"),
        ("h:+80", "bad port '+80', expected 1 to 65535"),
        ("h:", "bad port '', expected 1 to 65535"),
    ] {
        assert_eq!(
            err(BASE, &[("client_addr", addr)]),
            format!("--client-addr: bad value '{addr}' for 'client_addr': {why}")
        );
    }
    for addr in ["h:1", "example.com:65535", "[::1]:6382", "0.0.0.0:6382"] {
        assert!(from_text(BASE, &[("client_addr", addr)]).is_ok(), "{addr}");
    }
}

#[test]
fn cluster_must_be_well_formed_and_contain_this_node() {
    let cases = [
        ("1=a:1,1=b:2", "node 1 appears twice"),
        ("1=a:1,2=a:1", "nodes 1 and 2 have the same address a:1"),
        ("1=a:1,", "expected id=host:port, not ''"),
        ("x=a:1", "node id 'x': expected an integer >= 1"),
        (
            "0=a:1",
            "node id '0': out of range, expected an integer >= 1",
        ),
        ("2=a", "node 2 address 'a': expected host:port"),
        ("1=127.0.0.1:7001", "this node's id 2 is not in it"),
        (
            "2=127.0.0.1:9999",
            "node 2 is 127.0.0.1:9999 here but raft_addr is 127.0.0.1:7002",
        ),
    ];
    for (cluster, why) in cases {
        assert_eq!(
            err(BASE, &[("cluster", cluster)]),
            format!("--cluster: bad value '{cluster}' for 'cluster': {why}")
        );
    }
    let text = BASE.replace("127.0.0.1:7001,2=127.0.0.1:7002", "127.0.0.1:7001");
    assert_eq!(
            err(&text, &[]),
            "conf/x.conf:4: bad value '3=127.0.0.1:7003, 1=127.0.0.1:7001' for 'cluster': this node's id 2 is not in it"
        );
}

#[test]
fn election_timeout_must_cover_two_heartbeats() {
    assert_eq!(
            err(BASE, &[("heartbeat_ms", "100"), ("election_timeout_ms", "199")]),
            "--election-timeout-ms: bad value '199' for 'election_timeout_ms': must be at least 2 x heartbeat_ms (100 x 2 = 200)"
        );
    assert!(from_text(
        BASE,
        &[("heartbeat_ms", "100"), ("election_timeout_ms", "200")]
    )
    .is_ok());
    // Only heartbeat_ms was set: it is the one blamed.
    assert_eq!(
            err(&format!("{BASE}heartbeat_ms = 300\n"), &[]),
            "conf/x.conf:6: bad value '300' for 'heartbeat_ms': must be at most election_timeout_ms / 2 (500 / 2 = 250)"
        );
}

#[test]
fn missing_required_settings_are_named() {
    assert_eq!(
        err(&BASE.replace("id = 2\n", ""), &[]),
        "missing required setting 'id' (config key id or flag --id)"
    );
    assert_eq!(
        err(
            &BASE.replace("data_dir = /nonexistent/raftkv-config-tests/node2\n", ""),
            &[]
        ),
        "missing required setting 'data_dir' (config key data_dir or flag --data-dir)"
    );
    let no_cluster: String = BASE
        .lines()
        .filter(|l| !l.starts_with("cluster"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
            err(&no_cluster, &[]),
            "missing required setting 'cluster' (config key cluster or flag --cluster) on first boot, unless join = yes"
        );
    let joined = from_text(&no_cluster, &[("join", "yes")]).unwrap();
    assert!(joined.join);
    assert!(joined.cluster.is_empty());
    assert_eq!(
            err(BASE, &[("join", "yes")]),
            "conf/x.conf:4: 'cluster' cannot be set when join = yes (a joining node learns the members from the leader)"
        );
    assert_eq!(
            err(&no_cluster, &[("join", "yes"), ("cluster", "2=127.0.0.1:7002")]),
            "--cluster: 'cluster' cannot be set when join = yes (a joining node learns the members from the leader)"
        );
    assert!(!from_text(BASE, &[("join", "no")]).unwrap().join);
}

#[test]
fn load_reads_the_file_and_names_it_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.conf");
    let message = load(&Flags {
        config: Some(missing.clone()),
        force_new_cluster: false,
        overrides: Vec::new(),
    })
    .unwrap_err()
    .to_string();
    assert!(
        message.starts_with(&format!("{}: cannot read config file: ", missing.display())),
        "{message}"
    );
    let bad = dir.path().join("bad.conf");
    std::fs::write(&bad, b"id = 1\nrequirepass = \xff\xfe\n").unwrap();
    let message = load(&Flags {
        config: Some(bad.clone()),
        force_new_cluster: false,
        overrides: Vec::new(),
    })
    .unwrap_err()
    .to_string();
    assert_eq!(message, format!("{}:2: not valid UTF-8", bad.display()));
    // The node's own address must resolve; the error names its line.
    let unknown = dir.path().join("unknown.conf");
    std::fs::write(
        &unknown,
        "id = 1\nraft_addr = 127.0.0.1:7001\nclient_addr = no-such-host.invalid:6381\n\
             cluster = 1=127.0.0.1:7001\ndata_dir = d\n",
    )
    .unwrap();
    let message = load(&Flags {
        config: Some(unknown.clone()),
        force_new_cluster: false,
        overrides: Vec::new(),
    })
    .unwrap_err()
    .to_string();
    assert!(
        message.starts_with(&format!(
            "{}:3: bad value 'no-such-host.invalid:6381' for 'client_addr': cannot resolve it: ",
            unknown.display()
        )),
        "{message}"
    );
}

#[test]
fn shipped_conf_files_load() {
    let conf = |name: &str| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("conf")
            .join(name);
        load(&Flags {
            config: Some(path),
            force_new_cluster: false,
            overrides: Vec::new(),
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let members: Vec<(NodeId, String)> =
        (1..=3).map(|i| (i, format!("127.0.0.1:700{i}"))).collect();
    for i in 1..=3u64 {
        let config = conf(&format!("node{i}.conf"));
        assert_eq!(config.id, i);
        assert_eq!(config.raft_addr, format!("127.0.0.1:{}", 7000 + i));
        assert_eq!(config.client_addr, format!("127.0.0.1:{}", 6380 + i));
        assert_eq!(config.data_dir, PathBuf::from(format!("data/node{i}")));
        assert_eq!(config.cluster, members);
        assert_eq!(config.heartbeat_ms, 50);
        assert!(!config.join);
    }
    let single = conf("single.conf");
    assert_eq!(single.cluster, vec![(1, "127.0.0.1:7001".to_string())]);
    assert_eq!(single.data_dir, PathBuf::from("data/single"));
    assert_eq!(single.client_addr, "127.0.0.1:6381");
}

/// README: "Every key is commented, with its default, in conf/node1.conf".
/// Each shipped file sets every required key and shows every other one,
/// commented out where it has a default, with that default.
#[test]
fn shipped_conf_files_show_every_key_with_its_default() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf");
    for name in ["node1.conf", "node2.conf", "node3.conf", "single.conf"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        for def in KEYS {
            let set = format!("{} = ", def.name);
            let shown = format!("# {} = ", def.name);
            let line = text
                .lines()
                .find(|line| line.starts_with(&set) || line.starts_with(&shown))
                .unwrap_or_else(|| panic!("{name}: no line for key '{}'", def.name));
            match def.presence {
                Presence::Required | Presence::RequiredUnlessJoin => {
                    assert!(line.starts_with(&set), "{name}: '{line}' is not set")
                }
                Presence::Default(value) if line.starts_with(&shown) => assert_eq!(
                    line,
                    format!("{shown}{value}"),
                    "{name}: the default shown is not the default"
                ),
                Presence::Default(_) | Presence::Optional => {}
            }
        }
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_and_values_never_panic(
        text in "[a-z_ =#0-9.:,\n\t\u{e9}-]{0,120}",
        key in 0..KEYS.len(),
        value in r"[a-z0-9=:,. \[\]-]{0,24}",
    ) {
        if let Ok(settings) = parse(&text, "f") {
            let _ = resolve("f", &settings, &[]);
        }
        let _ = resolve("f", &[], &[(KEYS[key].name.to_string(), value.clone())]);
        let base = parse(BASE, "f").unwrap();
        let _ = resolve("f", &base, &[(KEYS[key].name.to_string(), value)]);
    }
}

#[test]
fn force_new_cluster_needs_a_node_that_ran_and_is_not_joining() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node1");
    let flags = |extra: &[(&str, &str)]| {
        let mut overrides: Vec<(String, String)> = [
            ("id", "1"),
            ("raft_addr", "127.0.0.1:7001"),
            ("client_addr", "127.0.0.1:6381"),
            ("data_dir", data_dir.to_str().unwrap()),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        overrides.sort();
        Flags {
            config: None,
            force_new_cluster: true,
            overrides,
        }
    };
    let message = load(&flags(&[])).unwrap_err().to_string();
    assert!(
        message.starts_with("--force-new-cluster: data dir")
            && message.contains("no cluster to recover"),
        "{message}"
    );
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(
        data_dir.join(FOUNDERS_FILE),
        "node = 1\ncluster = 1=127.0.0.1:7001\n",
    )
    .unwrap();
    let config = load(&flags(&[])).unwrap();
    assert!(config.force_new_cluster);
    let message = load(&flags(&[("join", "yes")])).unwrap_err().to_string();
    assert!(message.contains("cannot be used with join"), "{message}");
    let plain = Flags {
        force_new_cluster: false,
        ..flags(&[])
    };
    assert!(!load(&plain).unwrap().force_new_cluster);
}
