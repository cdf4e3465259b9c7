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
//! 3. [`resolve`](fn@resolve) lays the flags over the file, checks every value against its
//!    key's bounds and the keys against each other, and builds a [`Config`].
//!
//! Every error is one line naming where the bad setting came from: `file:line:`
//! for the config file, `--flag:` for a flag.
//!
//! The steps live apart, each readable alone: the key table in
//! `config_keys.rs`, the file syntax in `config_file.rs`, the merge and the
//! checks across keys in `config_resolve.rs`, and the check of one value in
//! `config_values.rs`. This file holds the settings' types and [`load`], the
//! one step that reads the file and the flags (`--force-new-cluster` too).

#[path = "config_file.rs"]
mod file;
#[path = "config_keys.rs"]
mod keys;
#[path = "config_resolve.rs"]
mod resolve;
#[path = "config_values.rs"]
mod values;

pub use file::{parse, read_file};
pub use keys::{flag_name, key_def, KeyDef, Presence, ValueKind, KEYS, MAX_REQUEST_BYTES_LIMIT};
pub use resolve::resolve;
pub(crate) use values::parse_members;

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

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
