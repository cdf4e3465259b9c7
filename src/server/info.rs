//! Replies that describe the node: INFO and HELLO.

use crate::kv::Reply;
use crate::raft::{NodeId, Status};
use std::fmt::Write;

/// The Redis release whose commands and replies this server follows.
pub const REDIS_VERSION: &str = "7.0.0";

/// What INFO reports beyond the core's status.
pub struct InfoContext<'a> {
    pub status: &'a Status,
    /// (id, raft address) of every voter and learner, this node included.
    pub addresses: &'a [(NodeId, String)],
    pub leader_client_addr: &'a str,
    pub keys: usize,
    /// Keys with a timeout.
    pub expiring_keys: usize,
    pub connected_clients: usize,
    /// Client requests forwarded to the leader whose replies are awaited.
    pub forwarded_requests: usize,
    pub connections_received: u64,
    pub commands_processed: u64,
    pub resident_bytes: u64,
    pub uptime_secs: u64,
    pub log_bytes: u64,
    /// `Node::refused_messages`: nonzero means a bug or a stranger on the raft port.
    pub refused_peer_messages: u64,
    /// Other members this node has an open connection to.
    pub connected_peers: usize,
    /// `member`, `joining` (started with `join` and not added yet) or
    /// `removed`: the other Raft fields of a node that is not a member are
    /// what it last knew (a removed node still shows `role:follower` and the
    /// leader it had), so a monitor needs this to tell.
    pub membership: &'static str,
    pub snapshot: SnapshotInfo,
}

/// Snapshot and loop figures for INFO's Persistence section.
#[derive(Clone, Debug, Default)]
pub struct SnapshotInfo {
    /// Size of the newest snapshot file in use.
    pub bytes: u64,
    pub in_progress: bool,
    pub last_duration_ms: u64,
    pub taken: u64,
    pub received: u64,
    pub sent: u64,
    /// Longest loop iteration while the last snapshot was written (wall
    /// time, and the loop thread's CPU time).
    pub last_max_iteration_us: u64,
    pub last_max_iteration_cpu_us: u64,
    /// Longest loop iteration since start.
    pub max_iteration_us: u64,
    /// The most CPU time of one slow iteration since start (an iteration
    /// longer than the heartbeat in wall time).
    pub max_iteration_cpu_us: u64,
}

fn member_list(ids: &[NodeId], addresses: &[(NodeId, String)]) -> String {
    let mut out = String::new();
    for id in ids {
        if !out.is_empty() {
            out.push(',');
        }
        let addr = addresses
            .iter()
            .find(|(a, _)| a == id)
            .map(|(_, addr)| addr.as_str())
            .unwrap_or("");
        let _ = write!(out, "{}={}", id, addr);
    }
    out
}

/// The INFO text for `INFO [section ...]`: `field:value` lines separated by
/// `\r\n`, under `# Section` headers. As in Redis, sections are named
/// case-insensitively; none, `all`, `everything` or `default` give every
/// section, and an unknown name gives nothing.
///
/// Beside the Raft state it has the fields Redis tools read
/// (`redis-cli --stat` reads the clients, memory, stats and `db0` ones).
/// `used_memory` is the resident size: raftkv does not count its
/// allocations as Redis does.
pub fn info_text(ctx: &InfoContext, sections: &[Vec<u8>]) -> String {
    let wanted = |name: &str| {
        sections.is_empty()
            || sections.iter().any(|asked| {
                let asked = asked.to_ascii_lowercase();
                asked == name.as_bytes()
                    || [&b"all"[..], b"everything", b"default"].contains(&&asked[..])
            })
    };
    let mut out = String::with_capacity(1024);
    let s = ctx.status;
    if wanted("server") {
        section(&mut out, "Server");
        // Libraries read `redis_version` to decide which commands they may
        // send: the Redis whose commands and replies raftkv follows.
        field(&mut out, "redis_version", REDIS_VERSION);
        field(&mut out, "raftkv_version", env!("CARGO_PKG_VERSION"));
        field(&mut out, "process_id", std::process::id());
        field(&mut out, "uptime_in_seconds", ctx.uptime_secs);
    }
    if wanted("clients") {
        section(&mut out, "Clients");
        field(&mut out, "connected_clients", ctx.connected_clients);
        field(&mut out, "blocked_clients", 0);
        field(&mut out, "forwarded_requests", ctx.forwarded_requests);
    }
    if wanted("memory") {
        section(&mut out, "Memory");
        field(&mut out, "used_memory", ctx.resident_bytes);
        field(&mut out, "used_memory_rss", ctx.resident_bytes);
    }
    if wanted("raft") {
        section(&mut out, "Raft");
        field(&mut out, "id", s.id);
        field(&mut out, "membership", ctx.membership);
        field(&mut out, "role", s.role.as_str());
        field(&mut out, "term", s.term);
        field(&mut out, "leader_id", s.leader_id);
        field(&mut out, "leader_client_addr", ctx.leader_client_addr);
        field(&mut out, "commit_index", s.commit_index);
        field(&mut out, "applied_index", s.applied_index);
        field(&mut out, "last_log_index", s.last_index);
        field(&mut out, "first_log_index", s.first_index);
        field(&mut out, "snapshot_index", s.snapshot_index);
        // Here rather than under Keyspace: libraries parse every Keyspace
        // line as a `dbN` of `keys=..,expires=..` (redis-py's
        // `info("keyspace")` gives a dict of dicts, which callers sum over),
        // and a bare `keys:12` there broke that.
        field(&mut out, "keys", ctx.keys);
        field(&mut out, "log_bytes", ctx.log_bytes);
        field(&mut out, "refused_peer_messages", ctx.refused_peer_messages);
        field(&mut out, "connected_peers", ctx.connected_peers);
        field(&mut out, "members", member_list(&s.voters, ctx.addresses));
        field(
            &mut out,
            "learners",
            member_list(&s.learners, ctx.addresses),
        );
    }
    if wanted("persistence") {
        persistence(&mut out, &ctx.snapshot);
    }
    if wanted("stats") {
        section(&mut out, "Stats");
        field(
            &mut out,
            "total_connections_received",
            ctx.connections_received,
        );
        field(&mut out, "total_commands_processed", ctx.commands_processed);
    }
    if wanted("keyspace") {
        section(&mut out, "Keyspace");
        if ctx.keys > 0 {
            let db0 = format!("keys={},expires={},avg_ttl=0", ctx.keys, ctx.expiring_keys);
            field(&mut out, "db0", db0);
        }
    }
    out
}

fn persistence(out: &mut String, p: &SnapshotInfo) {
    section(out, "Persistence");
    field(out, "snapshot_bytes", p.bytes);
    field(out, "snapshot_in_progress", u8::from(p.in_progress));
    field(out, "last_snapshot_duration_ms", p.last_duration_ms);
    field(
        out,
        "last_snapshot_max_iteration_us",
        p.last_max_iteration_us,
    );
    field(
        out,
        "last_snapshot_max_iteration_cpu_us",
        p.last_max_iteration_cpu_us,
    );
    field(out, "snapshots_taken", p.taken);
    field(out, "snapshots_received", p.received);
    field(out, "snapshots_sent", p.sent);
    field(out, "max_iteration_us", p.max_iteration_us);
    field(out, "max_iteration_cpu_us", p.max_iteration_cpu_us);
}

/// This process's resident size in bytes (`VmRSS`), 0 where /proc does not
/// tell.
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn section(out: &mut String, name: &str) {
    if !out.is_empty() {
        out.push_str("\r\n");
    }
    let _ = write!(out, "# {}\r\n", name);
}

fn field(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "{}:{}\r\n", key, value);
}

/// HELLO's reply map (flattened to an array by the RESP2 encoder).
pub fn hello_reply(connection_id: u64, protocol: i64) -> Reply {
    let field = |name: &str, value: Reply| (Reply::Bulk(name.as_bytes().to_vec()), value);
    Reply::Map(vec![
        field("server", Reply::Bulk(b"raftkv".to_vec())),
        field(
            "version",
            Reply::Bulk(env!("CARGO_PKG_VERSION").as_bytes().to_vec()),
        ),
        field("proto", Reply::Integer(protocol)),
        field("id", Reply::Integer(connection_id as i64)),
        field("mode", Reply::Bulk(b"standalone".to_vec())),
        field("role", Reply::Bulk(b"master".to_vec())),
        field("modules", Reply::Array(Vec::new())),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::Role;

    fn text(sections: &[&str]) -> String {
        let status = Status {
            id: 2,
            role: Role::Leader,
            term: 7,
            vote: 2,
            leader_id: 2,
            commit_index: 40,
            applied_index: 40,
            first_index: 1,
            last_index: 41,
            snapshot_index: 0,
            voters: vec![1, 2],
            learners: vec![],
            conf_index: 0,
            progress: vec![],
            transfer_target: 0,
        };
        let addresses = [(1, "127.0.0.1:7001".into()), (2, "127.0.0.1:7002".into())];
        let ctx = InfoContext {
            status: &status,
            addresses: &addresses,
            leader_client_addr: "127.0.0.1:6382",
            keys: 12,
            expiring_keys: 3,
            connected_clients: 3,
            forwarded_requests: 0,
            connections_received: 9,
            commands_processed: 1234,
            resident_bytes: 4096,
            uptime_secs: 5,
            log_bytes: 0,
            refused_peer_messages: 0,
            connected_peers: 1,
            membership: "member",
            snapshot: SnapshotInfo::default(),
        };
        let sections: Vec<Vec<u8>> = sections.iter().map(|s| s.as_bytes().to_vec()).collect();
        info_text(&ctx, &sections)
    }

    #[test]
    fn sections_are_chosen_as_in_redis() {
        let all = text(&[]);
        for line in [
            "# Raft\r\n",
            "role:leader\r\n",
            "members:1=127.0.0.1:7001,2=127.0.0.1:7002\r\n",
            "connected_peers:1\r\n",
            "membership:member\r\n",
            "connected_clients:3\r\n",
            "redis_version:7.0.0\r\n",
            "used_memory:4096\r\n",
            "total_connections_received:9\r\n",
            "total_commands_processed:1234\r\n",
            "keys:12\r\n",
            "db0:keys=12,expires=3,avg_ttl=0\r\n",
        ] {
            assert!(all.contains(line), "{line:?} missing from {all:?}");
        }
        assert_eq!(text(&["ALL"]), all);
        assert_eq!(text(&["everything"]), all);
        let raft = text(&["raft"]);
        assert!(raft.starts_with("# Raft\r\n") && raft.contains("term:7\r\n"));
        assert!(raft.contains("\r\nkeys:12\r\n"), "{raft:?}");
        assert!(!raft.contains("db0:"), "{raft:?}");
        let two = text(&["Keyspace", "stats"]);
        assert!(two.contains("# Stats\r\n") && two.contains("# Keyspace\r\n"));
        // Keyspace holds only `dbN:` lines, as Redis's does.
        assert!(
            two.ends_with("# Keyspace\r\ndb0:keys=12,expires=3,avg_ttl=0\r\n"),
            "{two:?}"
        );
        assert!(!two.contains("role:"), "{two:?}");
        assert_eq!(text(&["no-such-section"]), "");
    }
}
