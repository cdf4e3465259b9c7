//! The validated node settings: config file keys, overridden by flags.
//!
//! Every key is declared once, in [`KEYS`], with its default, its bounds and its
//! help text (the way Redis `config.c` declares `createIntConfig("port", ...)`);
//! the command line (`cli`) builds one flag per entry from the same table.
//!
//! Three steps, only the first of which touches the file system:
//! 1. [`load`] reads the file named by `--config`;
//! 2. [`parse`] turns its text into `(key, value, line)` triples, rejecting
//!    unknown and duplicate keys (pure, so it is tested on strings);
//! 3. [`resolve`] lays the flags over the file, checks every value against its
//!    key's bounds and the keys against each other, and builds a [`Config`].
//!
//! Every error is one line naming where the bad setting came from: `file:line:`
//! for the config file, `--flag:` for a flag.

use crate::cli::Flags;
use crate::raft::NodeId;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncMode {
    Always,
    Never,
}

/// The file in the data dir that records the members a node was founded
/// with (see `server::founders`).
pub const FOUNDERS_FILE: &str = "founders";

/// Every setting of SPEC §2, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub id: NodeId,
    /// host:port exactly as configured.
    pub raft_addr: String,
    pub client_addr: String,
    /// Initial members (id, raft address), sorted by id; empty when `join`.
    pub cluster: Vec<(NodeId, String)>,
    pub data_dir: PathBuf,
    pub cluster_name: String,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub fsync: FsyncMode,
    pub snapshot_entries: u64,
    pub max_request_bytes: u64,
    pub requirepass: Option<String>,
    pub join: bool,
    pub log_level: String,
    /// `--force-new-cluster`: a one-shot start option, not a key (see
    /// `server/force_new.rs`).
    pub force_new_cluster: bool,
}

/// A bad setting. `Display` is the one line printed on stderr (after `raftkv: `),
/// e.g. `conf/node1.conf:13: unknown key 'colour'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(&self.0))
    }
}

impl std::error::Error for ConfigError {}

/// What values a key accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// A decimal integer in `min..=max`.
    Int { min: u64, max: u64 },
    /// `host:port`; IPv6 hosts in brackets; port 1..=65535.
    Addr,
    /// `id=host:port,...`
    Members,
    /// Any non-empty text without whitespace.
    Word,
    /// Any non-empty text.
    Text,
    /// One of these words (ASCII case-insensitive; stored in lower case).
    OneOf(&'static [&'static str]),
}

/// Whether a key must be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Required,
    /// Required unless `join = yes`, and forbidden when it is.
    RequiredUnlessJoin,
    /// May be left unset; no default.
    Optional,
    /// Takes this value when unset (it passes the key's own check).
    Default(&'static str),
}

/// One config key: its name (the flag is the same with `-` for `_`), what it
/// accepts, whether it must be set, and the help line shared by `--help`.
#[derive(Clone, Copy, Debug)]
pub struct KeyDef {
    pub name: &'static str,
    pub kind: ValueKind,
    pub presence: Presence,
    /// The value's placeholder in `--help` (`N`, `HOST:PORT`, ...).
    pub hint: &'static str,
    pub help: &'static str,
}

/// Above this a request could not travel in one 16 MiB peer frame once it is a
/// log entry (forwarded, or replicated in an AppendEntries); and the room a
/// relayed reply has beyond its values (`frame::MAX_FORWARD_REPLY_BYTES`)
/// counts on requests being smaller than a frame.
pub const MAX_REQUEST_BYTES_LIMIT: u64 = 15 << 20;
const _: () = assert!(MAX_REQUEST_BYTES_LIMIT < crate::wire::frame::MAX_FRAME_BYTES as u64);

/// Every key of SPEC §2, in the order `--help` and `conf/*.conf` list them.
pub const KEYS: &[KeyDef] = &[
    KeyDef {
        name: "id",
        kind: ValueKind::Int {
            min: 1,
            max: u64::MAX,
        },
        presence: Presence::Required,
        hint: "N",
        help: "this node's id, unique in the cluster",
    },
    KeyDef {
        name: "raft_addr",
        kind: ValueKind::Addr,
        presence: Presence::Required,
        hint: "HOST:PORT",
        help: "address the peer protocol listens on",
    },
    KeyDef {
        name: "client_addr",
        kind: ValueKind::Addr,
        presence: Presence::Required,
        hint: "HOST:PORT",
        help: "address the client (Redis) protocol listens on",
    },
    KeyDef {
        name: "cluster",
        kind: ValueKind::Members,
        presence: Presence::RequiredUnlessJoin,
        hint: "ID=HOST:PORT,...",
        help: "initial members by raft address, this node included",
    },
    KeyDef {
        name: "data_dir",
        kind: ValueKind::Text,
        presence: Presence::Required,
        hint: "DIR",
        help: "directory for the log, stable file and snapshots",
    },
    KeyDef {
        name: "cluster_name",
        kind: ValueKind::Word,
        presence: Presence::Default("raftkv"),
        hint: "NAME",
        help: "checked in the peer handshake",
    },
    KeyDef {
        name: "heartbeat_ms",
        kind: ValueKind::Int {
            min: 1,
            max: 60_000,
        },
        presence: Presence::Default("50"),
        hint: "MS",
        help: "leader heartbeat interval",
    },
    KeyDef {
        name: "election_timeout_ms",
        kind: ValueKind::Int {
            min: 2,
            max: 600_000,
        },
        presence: Presence::Default("500"),
        hint: "MS",
        help: "base election timeout, at least 2 x heartbeat_ms",
    },
    KeyDef {
        name: "fsync",
        kind: ValueKind::OneOf(&["always", "never"]),
        presence: Presence::Default("always"),
        hint: "always|never",
        help: "sync before acknowledging (never: benchmarks only)",
    },
    KeyDef {
        name: "snapshot_entries",
        kind: ValueKind::Int {
            min: 1,
            max: u64::MAX,
        },
        presence: Presence::Default("100000"),
        hint: "N",
        help: "snapshot after this many applied entries",
    },
    KeyDef {
        name: "max_request_bytes",
        kind: ValueKind::Int {
            min: 1,
            max: MAX_REQUEST_BYTES_LIMIT,
        },
        presence: Presence::Default("8388608"),
        hint: "BYTES",
        help: "largest client request accepted",
    },
    KeyDef {
        name: "requirepass",
        kind: ValueKind::Text,
        presence: Presence::Optional,
        hint: "PASSWORD",
        help: "clients must AUTH with this password first",
    },
    KeyDef {
        name: "join",
        kind: ValueKind::OneOf(&["yes", "no"]),
        presence: Presence::Default("no"),
        hint: "yes|no",
        help: "start empty and wait to be added (no cluster then)",
    },
    KeyDef {
        name: "log_level",
        kind: ValueKind::OneOf(&["error", "warn", "info", "debug", "trace"]),
        presence: Presence::Default("info"),
        hint: "LEVEL",
        help: "error, warn, info, debug or trace (RUST_LOG overrides)",
    },
];

/// The table entry for `name`, if it is a key.
pub fn key_def(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|def| def.name == name)
}

/// The flag that sets `key`: `data_dir` is `--data-dir`.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// Splits a config file's text into `(key, value, line)` triples, line numbers
/// counting from 1. `#` starts a comment anywhere on a line (so a value cannot
/// contain one); blank lines are skipped; keys and values are trimmed. Unknown and
/// duplicate keys are errors here; values are checked by [`resolve`].
pub fn parse(text: &str, file_name: &str) -> Result<Vec<(String, String, usize)>, ConfigError> {
    let mut settings: Vec<(String, String, usize)> = Vec::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (number, raw) in text.lines().enumerate() {
        let line = number + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let Some((key, value)) = content.split_once('=') else {
            // Name the key, as every other error here does: a line like
            // `colour red` is an unknown key, `fsync always` a known key
            // missing its `=`.
            let word = content.split_whitespace().next().unwrap_or(content);
            return Err(ConfigError(if key_def(word).is_none() {
                format!("{file_name}:{line}: unknown key '{word}'")
            } else {
                format!("{file_name}:{line}: expected '{word} = value'")
            }));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(ConfigError(format!(
                "{file_name}:{line}: expected 'key = value'"
            )));
        }
        if key_def(key).is_none() {
            return Err(ConfigError(format!(
                "{file_name}:{line}: unknown key '{key}'"
            )));
        }
        if settings.iter().any(|(seen, _, _)| seen == key) {
            return Err(ConfigError(format!(
                "{file_name}:{line}: duplicate key '{key}'"
            )));
        }
        settings.push((key.to_string(), value.to_string(), line));
    }
    Ok(settings)
}

/// `text` with control characters escaped (`\r`, `\u{1b}`), so that an
/// error stays one line and cannot drive the terminal, whatever the file or
/// the command line holds. Every config and usage error is shown through it.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Reads the config file named in `flags` (if any), applies the flags over it,
/// and validates the result.
pub fn load(flags: &Flags) -> Result<Config, ConfigError> {
    let (file_name, settings) = match &flags.config {
        Some(path) => (path.display().to_string(), read_file(path)?),
        None => (String::new(), Vec::new()),
    };
    if flags.force_new_cluster {
        check_force_new_cluster(&settings, &flags.overrides)?;
    }
    let mut config = resolve(&file_name, &settings, &flags.overrides)?;
    if flags.force_new_cluster && config.join {
        return Err(ConfigError(
            "--force-new-cluster cannot be used with join: a joining node has no cluster to recover"
                .to_string(),
        ));
    }
    config.force_new_cluster = flags.force_new_cluster;
    for (key, addr) in [
        ("client_addr", &config.client_addr),
        ("raft_addr", &config.raft_addr),
    ] {
        if let Err(err) = resolve_host(addr) {
            let place = if flags.overrides.iter().any(|(k, _)| k == key) {
                format!("{}: ", flag_name(key))
            } else {
                settings
                    .iter()
                    .find(|(k, _, _)| k == key)
                    .map_or(String::new(), |(_, _, line)| {
                        format!("{file_name}:{line}: ")
                    })
            };
            return Err(ConfigError(format!(
                "{place}bad value '{addr}' for '{key}': cannot resolve it: {err}"
            )));
        }
    }
    Ok(config)
}

/// `--force-new-cluster` recovers a node that ran before: its data dir
/// (a flag's, else the file's) must hold the founders file every node
/// writes on its first start. Checked before `resolve`, whose error for a
/// missing `cluster` would not say why.
fn check_force_new_cluster(
    file: &[(String, String, usize)],
    overrides: &[(String, String)],
) -> Result<(), ConfigError> {
    let data_dir = overrides
        .iter()
        .rev()
        .find(|(key, _)| key == "data_dir")
        .map(|(_, value)| value)
        .or_else(|| {
            file.iter()
                .find(|(key, _, _)| key == "data_dir")
                .map(|(_, value, _)| value)
        });
    match data_dir {
        Some(dir) if !Path::new(dir).join(FOUNDERS_FILE).exists() => Err(ConfigError(format!(
            "--force-new-cluster: data dir '{dir}' holds no node's state: there is no cluster to recover"
        ))),
        _ => Ok(()),
    }
}

/// Whether `addr` (host:port) names an address: the node's own addresses
/// must, or it could not listen on them. Checked when the settings are
/// loaded, so that one that names no host is a bad value (SPEC §1: status 2,
/// nothing started), found before the data dir is created; binding comes
/// later and may still fail (a port in use), with status 1.
fn resolve_host(addr: &str) -> std::io::Result<()> {
    use std::net::{SocketAddr, ToSocketAddrs};
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match addr.to_socket_addrs()?.next() {
        Some(_) => Ok(()),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address for it",
        )),
    }
}

/// The `(key, value, line)` settings of the config file at `path`, as
/// [`parse`] gives them; values are not checked yet.
pub fn read_file(path: &std::path::Path) -> Result<Vec<(String, String, usize)>, ConfigError> {
    let file_name = path.display().to_string();
    let bytes = std::fs::read(path)
        .map_err(|err| ConfigError(format!("{file_name}: cannot read config file: {err}")))?;
    let text = String::from_utf8(bytes).map_err(|err| {
        let valid = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError(format!("{file_name}:{line}: not valid UTF-8"))
    })?;
    parse(&text, &file_name)
}

/// Where a setting's value came from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    File(usize),
    Flag,
    Default,
}

/// A key's raw value and where it came from.
struct Setting<'a> {
    key: &'static str,
    value: &'a str,
    origin: Origin,
}

/// The settings after flags are laid over the file, by key.
struct Merged<'a> {
    file_name: &'a str,
    settings: Vec<Setting<'a>>,
}

impl<'a> Merged<'a> {
    fn get(&self, key: &str) -> Option<&Setting<'a>> {
        self.settings.iter().find(|setting| setting.key == key)
    }

    /// The prefix naming where `setting` came from: `file:line:` or `--flag:`.
    fn place(&self, setting: &Setting<'_>) -> String {
        match setting.origin {
            Origin::File(line) => format!("{}:{}: ", self.file_name, line),
            Origin::Flag => format!("{}: ", flag_name(setting.key)),
            Origin::Default => String::new(),
        }
    }

    fn bad_value(&self, setting: &Setting<'_>, why: &str) -> ConfigError {
        ConfigError(format!(
            "{}bad value '{}' for '{}': {}",
            self.place(setting),
            setting.value,
            setting.key,
            why
        ))
    }
}

/// Lays `overrides` (flag values, by key) over the `(key, value, line)` triples
/// of the file `file_name` (as [`parse`] returns them), checks every value, and
/// builds the [`Config`]. Pure.
pub fn resolve(
    file_name: &str,
    file: &[(String, String, usize)],
    overrides: &[(String, String)],
) -> Result<Config, ConfigError> {
    let merged = merge(file_name, file, overrides)?;
    // A bad value in the file is an error even where a flag overrides it:
    // the node runs with the file alone once the flag is gone.
    for (key, value, line) in file {
        if let Some(def) = key_def(key) {
            let setting = Setting {
                key: def.name,
                value,
                origin: Origin::File(*line),
            };
            check_value(def.kind, value).map_err(|why| merged.bad_value(&setting, &why))?;
        }
    }
    for setting in &merged.settings {
        let def = key_def(setting.key).unwrap_or_else(|| panic!("key {} has no def", setting.key));
        check_value(def.kind, setting.value).map_err(|why| merged.bad_value(setting, &why))?;
    }
    let join = merged
        .get("join")
        .map(|s| s.value.eq_ignore_ascii_case("yes"))
        == Some(true);
    // A node that has booted before records its founding members in its data
    // dir (`server::founders`), so `cluster` is needed on first boot only.
    let booted_before = merged
        .get("data_dir")
        .is_some_and(|dir| Path::new(dir.value).join(FOUNDERS_FILE).exists());
    check_presence(&merged, join, booted_before)?;
    build(&merged, join)
}

fn merge<'a>(
    file_name: &'a str,
    file: &'a [(String, String, usize)],
    overrides: &'a [(String, String)],
) -> Result<Merged<'a>, ConfigError> {
    let mut merged = Merged {
        file_name,
        settings: Vec::with_capacity(KEYS.len()),
    };
    for def in KEYS {
        let from_flag = overrides.iter().rev().find(|(key, _)| key == def.name);
        let from_file = file.iter().find(|(key, _, _)| key == def.name);
        let setting = match (from_flag, from_file, def.presence) {
            (Some((_, value)), _, _) => Some((value.as_str(), Origin::Flag)),
            (None, Some((_, value, line)), _) => Some((value.as_str(), Origin::File(*line))),
            (None, None, Presence::Default(value)) => Some((value, Origin::Default)),
            (None, None, _) => None,
        };
        if let Some((value, origin)) = setting {
            merged.settings.push(Setting {
                key: def.name,
                value,
                origin,
            });
        }
    }
    let stray = file
        .iter()
        .map(|(key, _, _)| key)
        .chain(overrides.iter().map(|(key, _)| key))
        .find(|key| key_def(key).is_none());
    if let Some(key) = stray {
        return Err(ConfigError(format!("unknown setting '{key}'")));
    }
    Ok(merged)
}

fn check_presence(merged: &Merged<'_>, join: bool, booted_before: bool) -> Result<(), ConfigError> {
    for def in KEYS {
        let required = match def.presence {
            Presence::Required => true,
            Presence::RequiredUnlessJoin => !join && !booted_before,
            Presence::Optional | Presence::Default(_) => false,
        };
        match merged.get(def.name) {
            None if required => {
                let unless = if def.presence == Presence::RequiredUnlessJoin {
                    " on first boot, unless join = yes"
                } else {
                    ""
                };
                return Err(ConfigError(format!(
                    "missing required setting '{}' (config key {} or flag {}){}",
                    def.name,
                    def.name,
                    flag_name(def.name),
                    unless
                )));
            }
            Some(setting) if join && def.presence == Presence::RequiredUnlessJoin => {
                return Err(ConfigError(format!(
                    "{}'{}' cannot be set when join = yes (a joining node learns the members from the leader)",
                    merged.place(setting),
                    def.name
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

fn build(merged: &Merged<'_>, join: bool) -> Result<Config, ConfigError> {
    let text = |key: &str| merged.get(key).map(|s| s.value.to_string());
    let word = |key: &str| text(key).map(|s| s.to_ascii_lowercase());
    let int = |key: &str| merged.get(key).and_then(|s| s.value.parse::<u64>().ok());
    let config = Config {
        id: int("id").unwrap_or_else(|| missing("id")),
        raft_addr: text("raft_addr").unwrap_or_else(|| missing("raft_addr")),
        client_addr: text("client_addr").unwrap_or_else(|| missing("client_addr")),
        cluster: match merged.get("cluster") {
            Some(setting) => parse_members(setting.value).unwrap_or_else(|_| missing("cluster")),
            None => Vec::new(),
        },
        data_dir: PathBuf::from(text("data_dir").unwrap_or_else(|| missing("data_dir"))),
        cluster_name: text("cluster_name").unwrap_or_else(|| missing("cluster_name")),
        heartbeat_ms: int("heartbeat_ms").unwrap_or_else(|| missing("heartbeat_ms")),
        election_timeout_ms: int("election_timeout_ms")
            .unwrap_or_else(|| missing("election_timeout_ms")),
        fsync: match word("fsync").as_deref() {
            Some("never") => FsyncMode::Never,
            _ => FsyncMode::Always,
        },
        snapshot_entries: int("snapshot_entries").unwrap_or_else(|| missing("snapshot_entries")),
        max_request_bytes: int("max_request_bytes").unwrap_or_else(|| missing("max_request_bytes")),
        requirepass: text("requirepass"),
        join,
        force_new_cluster: false,
        log_level: word("log_level").unwrap_or_else(|| missing("log_level")),
    };
    check_timeouts(merged, &config)?;
    check_members(merged, &config)?;
    check_distinct_ports(merged, &config)?;
    Ok(config)
}

/// The two listeners cannot share an address; caught here, before the data
/// directory is made, rather than as a failed bind.
fn check_distinct_ports(merged: &Merged<'_>, config: &Config) -> Result<(), ConfigError> {
    match merged.get("client_addr") {
        Some(setting) if config.client_addr == config.raft_addr => Err(merged.bad_value(
            setting,
            "the same address as raft_addr; the two ports must differ",
        )),
        _ => Ok(()),
    }
}

/// Values passed their checks and presence was verified before `build`, so a
/// setting missing there is a bug.
fn missing<T>(key: &str) -> T {
    panic!("checked setting {key} is missing")
}

/// A follower times out after at least `election_timeout_ms`; with at least two
/// heartbeats in that window, one lost heartbeat does not start an election.
fn check_timeouts(merged: &Merged<'_>, config: &Config) -> Result<(), ConfigError> {
    let (heartbeat, election) = (config.heartbeat_ms, config.election_timeout_ms);
    if election >= heartbeat.saturating_mul(2) {
        return Ok(());
    }
    let (Some(election_setting), Some(heartbeat_setting)) = (
        merged.get("election_timeout_ms"),
        merged.get("heartbeat_ms"),
    ) else {
        panic!("timeouts {heartbeat}/{election} checked without their settings");
    };
    // Blame the key the user set; the defaults alone always pass.
    if election_setting.origin != Origin::Default {
        let why = format!(
            "must be at least 2 x heartbeat_ms ({heartbeat} x 2 = {})",
            heartbeat.saturating_mul(2)
        );
        Err(merged.bad_value(election_setting, &why))
    } else {
        let why = format!(
            "must be at most election_timeout_ms / 2 ({election} / 2 = {})",
            election / 2
        );
        Err(merged.bad_value(heartbeat_setting, &why))
    }
}

fn check_members(merged: &Merged<'_>, config: &Config) -> Result<(), ConfigError> {
    let Some(setting) = merged.get("cluster") else {
        return Ok(());
    };
    match config.cluster.iter().find(|(id, _)| *id == config.id) {
        None => Err(merged.bad_value(
            setting,
            &format!("this node's id {} is not in it", config.id),
        )),
        Some((_, addr)) if *addr != config.raft_addr => Err(merged.bad_value(
            setting,
            &format!(
                "node {} is {} here but raft_addr is {}",
                config.id, addr, config.raft_addr
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// Checks one value against its kind; the error is the reason, for `bad value`.
fn check_value(kind: ValueKind, value: &str) -> Result<(), String> {
    match kind {
        ValueKind::Int { min, max } => parse_int(value, min, max).map(|_| ()),
        ValueKind::Addr => check_addr(value),
        ValueKind::Members => parse_members(value).map(|_| ()),
        ValueKind::Word if value.is_empty() => Err("must not be empty".to_string()),
        ValueKind::Word if value.chars().any(char::is_whitespace) => {
            Err("must not contain whitespace".to_string())
        }
        ValueKind::Text if value.is_empty() => Err("must not be empty".to_string()),
        ValueKind::Word | ValueKind::Text => Ok(()),
        ValueKind::OneOf(words) if words.iter().any(|w| w.eq_ignore_ascii_case(value)) => Ok(()),
        ValueKind::OneOf(words) => Err(format!("expected {}", one_of(words))),
    }
}

/// `a, b or c`.
fn one_of(words: &[&str]) -> String {
    match words.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {}", rest.join(", "), last),
        None => String::new(),
    }
}

fn parse_int(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let range = if max == u64::MAX {
        format!("an integer >= {min}")
    } else {
        format!("an integer from {min} to {max}")
    };
    // Digits only: Rust's parse would also take a leading '+'.
    let digits = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u64>() {
        Ok(n) if digits && (min..=max).contains(&n) => Ok(n),
        _ if digits => Err(format!("out of range, expected {range}")),
        _ => Err(format!("expected {range}")),
    }
}

/// `host:port`: a non-empty host without whitespace (an IPv6 host in brackets),
/// and a port from 1 to 65535. Names are not resolved here.
fn check_addr(value: &str) -> Result<(), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("expected host:port".to_string());
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err("expected host:port with a host name or IP address".to_string());
    }
    if host.starts_with('[') || host.ends_with(']') {
        let inner = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        if inner
            .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
            .is_none()
        {
            return Err("expected an IPv6 address in brackets, as in [::1]:7001".to_string());
        }
    } else if host.contains(':') {
        return Err("an IPv6 address needs brackets, as in [::1]:7001".to_string());
    }
    match port.parse::<u16>() {
        Ok(p) if p >= 1 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!("bad port '{port}', expected 1 to 65535")),
    }
}

/// `id=host:port,...` into members sorted by id; ids unique.
pub(crate) fn parse_members(value: &str) -> Result<Vec<(NodeId, String)>, String> {
    let mut members: Vec<(NodeId, String)> = Vec::new();
    for part in value.split(',') {
        let part = part.trim();
        let Some((id, addr)) = part.split_once('=') else {
            return Err(format!("expected id=host:port, not '{part}'"));
        };
        let (id, addr) = (id.trim(), addr.trim());
        let id = parse_int(id, 1, u64::MAX).map_err(|why| format!("node id '{id}': {why}"))?;
        check_addr(addr).map_err(|why| format!("node {id} address '{addr}': {why}"))?;
        if members.iter().any(|(seen, _)| *seen == id) {
            return Err(format!("node {id} appears twice"));
        }
        if let Some((other, _)) = members.iter().find(|(_, seen)| seen == addr) {
            return Err(format!(
                "nodes {other} and {id} have the same address {addr}"
            ));
        }
        members.push((id, addr.to_string()));
    }
    members.sort_by_key(|(id, _)| *id);
    Ok(members)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
