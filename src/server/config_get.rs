//! `CONFIG GET pattern [pattern ...]`: this node's settings, matched as
//! Redis matches them (glob-style, case-insensitive), as a map of names to
//! values. Read-only: there is no CONFIG SET, a node's settings come from
//! its file and flags.

use crate::config::{Config, FsyncMode};
use crate::kv::Reply;

/// Every name CONFIG GET knows, with this node's value.
fn parameters(config: &Config) -> Vec<(&'static str, String)> {
    let fsync = config.fsync == FsyncMode::Always;
    let cluster: Vec<String> = config
        .cluster
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect();
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    vec![
        ("id", config.id.to_string()),
        ("raft_addr", config.raft_addr.clone()),
        ("client_addr", config.client_addr.clone()),
        ("cluster", cluster.join(",")),
        ("data_dir", config.data_dir.display().to_string()),
        ("cluster_name", config.cluster_name.clone()),
        ("heartbeat_ms", config.heartbeat_ms.to_string()),
        (
            "election_timeout_ms",
            config.election_timeout_ms.to_string(),
        ),
        ("fsync", if fsync { "always" } else { "never" }.to_string()),
        ("snapshot_entries", config.snapshot_entries.to_string()),
        ("max_request_bytes", config.max_request_bytes.to_string()),
        ("join", yes_no(config.join)),
        ("log_level", config.log_level.clone()),
        // The Redis names redis-benchmark asks for: no RDB snapshots, and
        // every write appended to the log, synced before it is acknowledged
        // unless fsync = never.
        ("save", String::new()),
        // What GUIs and libraries read to lay out their views: one database,
        // no memory limit.
        ("databases", "1".to_string()),
        ("maxmemory", "0".to_string()),
        ("appendonly", yes_no(true)),
        (
            "appendfsync",
            if fsync { "always" } else { "no" }.to_string(),
        ),
    ]
}

/// The most pattern bytes one CONFIG GET takes, all its patterns together.
/// Matching a name costs up to a pattern's length for each of the name's
/// bytes, so megabytes of patterns in one request would stall the event loop
/// for the whole cluster; the longest name is 19 bytes, so no useful request
/// comes anywhere near this.
const MAX_PATTERN_BYTES: usize = 4096;

/// The reply to `CONFIG GET` with these patterns: each matching name once,
/// named as the first pattern that matches it names it. A pattern without
/// glob characters names it as typed (`CONFIG GET MaxMemory` answers
/// `MaxMemory`), as Redis does, which looks such a name up instead of
/// matching it; a glob names it as it is.
pub(super) fn config_get(config: &Config, patterns: &[Vec<u8>]) -> Reply {
    if let Some(refusal) = refuse_overlong(patterns) {
        return refusal;
    }
    let pairs = parameters(config)
        .into_iter()
        .filter_map(|(name, value)| {
            let pattern = patterns.iter().find(|p| match has_glob(p) {
                true => glob_match(p, name.as_bytes()),
                false => p.eq_ignore_ascii_case(name.as_bytes()),
            })?;
            let shown = match has_glob(pattern) {
                true => name.as_bytes().to_vec(),
                false => pattern.clone(),
            };
            Some((Reply::Bulk(shown), Reply::Bulk(value.into_bytes())))
        })
        .collect();
    Reply::Map(pairs)
}

/// Whether Redis reads `pattern` as a glob rather than a name (a backslash
/// alone does not make one: `heartbeat\_ms` names nothing).
fn has_glob(pattern: &[u8]) -> bool {
    pattern.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

fn refuse_overlong(patterns: &[Vec<u8>]) -> Option<Reply> {
    let total: usize = patterns.iter().map(Vec::len).sum();
    (total > MAX_PATTERN_BYTES).then(|| {
        Reply::error(format!(
            "ERR CONFIG GET patterns longer than {MAX_PATTERN_BYTES} bytes in all"
        ))
    })
}

/// Redis's glob, without case, as CONFIG GET matches names.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    crate::kv::glob::matches_nocase(pattern, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        glob_match(pattern.as_bytes(), text.as_bytes())
    }

    #[test]
    fn globs_match_as_in_redis() {
        let cases = [
            ("*", "heartbeat_ms", true),
            ("heartbeat*", "heartbeat_ms", true),
            ("*_ms", "election_timeout_ms", true),
            ("*_ms", "fsync", false),
            ("h?artbeat_ms", "heartbeat_ms", true),
            ("h?artbeat_ms", "hartbeat_ms", false),
            ("[hs]*", "save", true),
            ("[hs]*", "fsync", false),
            ("[^h]*", "fsync", true),
            ("[^h]*", "heartbeat_ms", false),
            ("[a-f]sync", "fsync", true),
            ("[f-a]sync", "fsync", true),
            ("FSYNC", "fsync", true),
            ("\\*", "*", true),
            ("\\*", "fsync", false),
            ("[", "[", false),
            ("[^", "x", true),
            ("save", "saves", false),
            ("saves", "save", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
            ("", "x", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(matches(pattern, text), expected, "{pattern:?} on {text:?}");
        }
    }

    #[test]
    fn a_name_is_answered_as_typed_and_a_glob_match_as_it_is() {
        let config = Config {
            id: 1,
            raft_addr: "127.0.0.1:7001".to_string(),
            client_addr: "127.0.0.1:6381".to_string(),
            cluster: vec![(1, "127.0.0.1:7001".to_string())],
            data_dir: "data".into(),
            cluster_name: "names".to_string(),
            heartbeat_ms: 100,
            election_timeout_ms: 1000,
            fsync: FsyncMode::Always,
            snapshot_entries: 1000,
            max_request_bytes: 1 << 20,
            requirepass: None,
            join: false,
            log_level: "warning".to_string(),
            force_new_cluster: false,
        };
        let names = |patterns: &[&str]| -> Vec<Vec<u8>> {
            let patterns: Vec<Vec<u8>> = patterns.iter().map(|p| p.as_bytes().to_vec()).collect();
            match config_get(&config, &patterns) {
                Reply::Map(pairs) => pairs
                    .into_iter()
                    .map(|(name, _)| match name {
                        Reply::Bulk(name) => name,
                        other => panic!("a name as {other:?}"),
                    })
                    .collect(),
                other => panic!("CONFIG GET answered {other:?}"),
            }
        };
        assert_eq!(names(&["MaxMemory"]), vec![b"MaxMemory".to_vec()]);
        assert_eq!(names(&["MaxMemor?"]), vec![b"maxmemory".to_vec()]);
        assert_eq!(
            names(&["MaxMemory", "maxmemory"]),
            vec![b"MaxMemory".to_vec()]
        );
        assert_eq!(
            names(&["maxmemor?", "MaxMemory"]),
            vec![b"maxmemory".to_vec()]
        );
        assert!(names(&["heartbeat\\_ms"]).is_empty());
        assert_eq!(names(&["heartbeat?ms"]), vec![b"heartbeat_ms".to_vec()]);
    }

    #[test]
    fn overlong_patterns_are_refused() {
        let longest = format!("{}*", "[".repeat(MAX_PATTERN_BYTES - 1)).into_bytes();
        assert!(refuse_overlong(std::slice::from_ref(&longest)).is_none());
        let over = "*".repeat(MAX_PATTERN_BYTES + 1).into_bytes();
        let many = vec![b"*[[".to_vec(); MAX_PATTERN_BYTES / 3 + 1];
        for patterns in [vec![b"id".to_vec(), over], many] {
            match refuse_overlong(&patterns) {
                Some(Reply::Error(text)) => assert!(text.contains("longer than 4096"), "{text}"),
                other => panic!("overlong patterns answered {other:?}"),
            }
        }
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let pattern = format!("{}x", "*".repeat(10_000));
        assert!(!matches(&pattern, &"a".repeat(10_000)));
    }
}
