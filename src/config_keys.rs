//! The key table: every config key once, with its kind of value, whether it
//! must be set, its default and its help line. Apart from the parsing and the
//! checks because `cli` reads it too, to build one flag per key.

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
    /// A file system path: non-empty, and without the NUL byte no OS path holds.
    Path,
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
        kind: ValueKind::Path,
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
