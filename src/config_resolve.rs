//! Laying the flags over the file, defaults for unset keys, and the checks
//! that span keys (presence, timeouts, members, ports) before the [`Config`]
//! is built. Apart from the file syntax and the single-value checks, which it
//! calls, because it is the one step that sees every setting at once.

use super::values::{check_value, parse_members};
use super::{flag_name, key_def, Config, ConfigError, FsyncMode, Presence, FOUNDERS_FILE, KEYS};
use std::path::{Path, PathBuf};

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
/// of the file `file_name` (as [`parse`](super::parse) returns them), checks every value, and
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

/// The client listener cannot take the address of a raft listener, this
/// node's or another member's; caught here, before the data directory is
/// made, rather than as a failed bind (or, for another member's, as that
/// member's clients reaching this node's client port).
fn check_distinct_ports(merged: &Merged<'_>, config: &Config) -> Result<(), ConfigError> {
    let Some(setting) = merged.get("client_addr") else {
        return Ok(());
    };
    if config.client_addr == config.raft_addr {
        return Err(merged.bad_value(
            setting,
            "the same address as raft_addr; the two ports must differ",
        ));
    }
    match config
        .cluster
        .iter()
        .find(|(_, addr)| *addr == config.client_addr)
    {
        Some((id, _)) => Err(merged.bad_value(
            setting,
            &format!("the raft address of node {id} in cluster"),
        )),
        None => Ok(()),
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
