//! Replies that describe the node: INFO and HELLO.

use crate::kv::Reply;
use crate::raft::{NodeId, Status};
use std::fmt::Write;

/// What INFO reports beyond the core's status.
pub struct InfoContext<'a> {
    pub status: &'a Status,
    /// (id, raft address) of every voter and learner, this node included.
    pub addresses: &'a [(NodeId, String)],
    pub leader_client_addr: &'a str,
    pub keys: usize,
    pub connected_clients: usize,
    pub uptime_secs: u64,
    pub log_bytes: u64,
    /// `Node::refused_messages`: nonzero means a bug or a stranger on the raft port.
    pub refused_peer_messages: u64,
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

/// The INFO text: `field:value` lines separated by `\r\n`, with `# Section` headers.
pub fn info_text(ctx: &InfoContext) -> String {
    let s = ctx.status;
    let mut out = String::with_capacity(512);
    section(&mut out, "Server");
    field(&mut out, "raftkv_version", env!("CARGO_PKG_VERSION"));
    field(&mut out, "uptime_in_seconds", ctx.uptime_secs);
    field(&mut out, "connected_clients", ctx.connected_clients);
    section(&mut out, "Raft");
    field(&mut out, "id", s.id);
    field(&mut out, "role", s.role.as_str());
    field(&mut out, "term", s.term);
    field(&mut out, "leader_id", s.leader_id);
    field(&mut out, "leader_client_addr", ctx.leader_client_addr);
    field(&mut out, "commit_index", s.commit_index);
    field(&mut out, "applied_index", s.applied_index);
    field(&mut out, "last_log_index", s.last_index);
    field(&mut out, "first_log_index", s.first_index);
    field(&mut out, "snapshot_index", s.snapshot_index);
    field(&mut out, "log_bytes", ctx.log_bytes);
    field(&mut out, "refused_peer_messages", ctx.refused_peer_messages);
    field(&mut out, "members", member_list(&s.voters, ctx.addresses));
    field(
        &mut out,
        "learners",
        member_list(&s.learners, ctx.addresses),
    );
    let p = &ctx.snapshot;
    section(&mut out, "Persistence");
    field(&mut out, "snapshot_bytes", p.bytes);
    field(&mut out, "snapshot_in_progress", u8::from(p.in_progress));
    field(&mut out, "last_snapshot_duration_ms", p.last_duration_ms);
    field(
        &mut out,
        "last_snapshot_max_iteration_us",
        p.last_max_iteration_us,
    );
    field(
        &mut out,
        "last_snapshot_max_iteration_cpu_us",
        p.last_max_iteration_cpu_us,
    );
    field(&mut out, "snapshots_taken", p.taken);
    field(&mut out, "snapshots_received", p.received);
    field(&mut out, "snapshots_sent", p.sent);
    field(&mut out, "max_iteration_us", p.max_iteration_us);
    section(&mut out, "Keyspace");
    field(&mut out, "keys", ctx.keys);
    out
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
