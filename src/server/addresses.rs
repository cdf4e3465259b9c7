//! The address book: the raft and client address of every node this node has
//! heard of, so that it can dial the members of whatever configuration is in
//! force and tell clients where the leader is.
//!
//! Addresses come from four places, later ones winning for raft addresses:
//!
//! 1. the `addresses` file in the data dir (what the book held before a restart);
//! 2. the `cluster` config key (the founders);
//! 3. the context of each AddLearner entry in the log: the whole address book
//!    of the configuration it makes (`1=host:port,2=host:port,4=host:port`),
//!    so a node that appends it can dial every member, however little of the
//!    log's history it holds;
//! 4. peer handshakes, which carry the dialer's raft and client address: a
//!    raft address only when none is known (a joining node learns its first
//!    peers this way), a client address always.
//!
//! The file matters after a restart from a snapshot: the log that follows it
//! may hold no AddLearner entry, and without the file a node added after the
//! cluster was founded would know nobody's address, nor anyone its own. It is
//! only a hint (nothing about safety rests on it), so one that does not parse
//! is passed over with a warning.

use crate::raft::{NodeId, NO_NODE};
use log::{info, warn};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file's name inside the data dir.
pub const FILE_NAME: &str = "addresses";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Known {
    raft: String,
    client: String,
}

pub struct AddressBook {
    me: NodeId,
    nodes: BTreeMap<NodeId, Known>,
    /// Where the book is kept; None in tests that need no file.
    path: Option<PathBuf>,
    /// Changed since it was last written.
    unsaved: bool,
    /// After a failed save: when to try again, and the wait after that.
    retry: Option<(Instant, Duration)>,
    /// Members whose handshake named another raft address than the one
    /// they are dialed at, with that address: warned about once each, until
    /// a handshake names the right one again.
    elsewhere: BTreeMap<NodeId, String>,
}

impl AddressBook {
    /// The book a node starts with: the file, then the configured founders,
    /// then this node's own configured addresses. (The caller then learns
    /// the AddLearner entries of the restored log.)
    pub fn load(
        me: (NodeId, &str, &str),
        data_dir: Option<&Path>,
        cluster: &[(NodeId, String)],
    ) -> AddressBook {
        let path = data_dir.map(|dir| dir.join(FILE_NAME));
        let mut book = AddressBook {
            me: me.0,
            nodes: BTreeMap::new(),
            path,
            unsaved: false,
            retry: None,
            elsewhere: BTreeMap::new(),
        };
        if let Some(path) = &book.path {
            match crate::storage::read_regular_text(path) {
                Ok(text) => book.nodes = parse_file(&text, path),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => warn!(
                    "cannot read {}: {}; starting without it",
                    path.display(),
                    err
                ),
            }
        }
        for (id, addr) in cluster {
            book.set_raft(*id, addr);
        }
        book.set_raft(me.0, me.1);
        book.set_client(me.0, me.2);
        book
    }

    pub fn raft_addr(&self, id: NodeId) -> Option<&str> {
        self.nodes
            .get(&id)
            .map(|k| k.raft.as_str())
            .filter(|a| !a.is_empty())
    }

    pub fn client_addr(&self, id: NodeId) -> Option<&str> {
        self.nodes
            .get(&id)
            .map(|k| k.client.as_str())
            .filter(|a| !a.is_empty())
    }

    /// The node among `among` whose raft address is `addr`, if any. The
    /// book keeps every node it ever learned, removed ones too, so a former
    /// holder of the address is no answer: asked of the whole book, a
    /// removed node with a lower id hid the member that holds it now.
    /// Addresses are compared as what they dial (see [`same_addr`]), not as
    /// text: `127.0.0.1:07002` is node 2's `127.0.0.1:7002`.
    pub fn owner_of(&self, addr: &str, among: &[NodeId]) -> Option<NodeId> {
        among
            .iter()
            .copied()
            .find(|id| self.raft_addr(*id).is_some_and(|a| same_addr(a, addr)))
    }

    fn set_raft(&mut self, id: NodeId, addr: &str) {
        if id == NO_NODE || addr.is_empty() {
            return;
        }
        let known = self.nodes.entry(id).or_default();
        if known.raft != addr {
            known.raft = addr.to_string();
            self.unsaved = true;
        }
    }

    fn set_client(&mut self, id: NodeId, addr: &str) {
        if id == NO_NODE || addr.is_empty() {
            return;
        }
        let known = self.nodes.entry(id).or_default();
        if known.client != addr {
            known.client = addr.to_string();
            self.unsaved = true;
        }
    }

    /// An AddLearner entry's context: `id=raft_addr` pairs, comma-separated.
    /// This node's own address is never taken from it (its config says).
    pub fn learn_context(&mut self, context: &[u8]) {
        for (id, addr) in parse_pairs(&String::from_utf8_lossy(context)) {
            if id != self.me {
                self.set_raft(id, &addr);
            }
        }
    }

    /// A peer's handshake. Returns whether its raft address was new.
    pub fn learn_handshake(&mut self, id: NodeId, raft: &str, client: &str) -> bool {
        if id == self.me {
            return false;
        }
        let new = self.raft_addr(id).is_none();
        if new {
            self.set_raft(id, raft);
        } else if let Some(dialed) = self.dialed_elsewhere(id, raft) {
            // Its members still dial the old address, so it hears no
            // leader and campaigns in vain: say so once, and what to do.
            warn!(
                "node {} connected from raft address {}, but this node dials it at {}, as its other members do: a member's raft address cannot change in place; start it at {} again, or move it with CLUSTER REMOVE {} and CLUSTER ADD of a new id with an empty data dir at the new address",
                id, raft, dialed, dialed, id
            );
        }
        self.set_client(id, client);
        new
    }

    /// The address `id` is dialed at when its handshake named another one
    /// (`raft`), the first time it names that one.
    fn dialed_elsewhere(&mut self, id: NodeId, raft: &str) -> Option<String> {
        let dialed = self.raft_addr(id)?;
        if same_addr(dialed, raft) {
            // Back where it belongs: its next move is a new mistake.
            self.elsewhere.remove(&id);
            return None;
        }
        if !valid_addr(raft) {
            return None;
        }
        let dialed = dialed.to_string();
        match self.elsewhere.insert(id, raft.to_string()) {
            Some(warned) if warned == raft => None,
            _ => Some(dialed),
        }
    }

    /// The context of an AddLearner of `new` at `addr`: the raft address of
    /// every member of the configuration it makes (`members` plus `new`).
    pub fn context_for(&self, members: &[NodeId], new: NodeId, addr: &str) -> Vec<u8> {
        let mut pairs: BTreeMap<NodeId, &str> = members
            .iter()
            .filter_map(|id| self.raft_addr(*id).map(|a| (*id, a)))
            .collect();
        pairs.insert(new, addr);
        format_pairs(pairs.into_iter()).into_bytes()
    }

    /// Writes the book if it changed: a temp file, synced, renamed over the
    /// old one. A failure is logged and tried again after a wait that
    /// doubles up to a minute: a restart from a snapshot reads the book, so
    /// it must not stay stale, but a lasting failure (a full disk) tried on
    /// every loop iteration would log a warning each time.
    pub fn save_if_changed(&mut self) {
        if !self.unsaved {
            return;
        }
        let Some(path) = &self.path else {
            self.unsaved = false;
            return;
        };
        let now = Instant::now();
        if self.retry.is_some_and(|(at, _)| now < at) {
            return;
        }
        match crate::storage::write_atomically(path, self.file_text().as_bytes()) {
            Ok(()) => {
                if self.retry.take().is_some() {
                    info!("saved the address book {} again", path.display());
                }
                self.unsaved = false;
            }
            Err(err) => {
                let wait = self.retry.map_or(Duration::from_secs(1), |(_, wait)| {
                    (wait * 2).min(Duration::from_secs(60))
                });
                warn!(
                    "cannot save the address book: {}; trying again in {} s",
                    err,
                    wait.as_secs()
                );
                self.retry = Some((now + wait, wait));
            }
        }
    }

    /// One last try at a save still waiting out its retry, as the node stops.
    pub fn save_before_exit(&mut self) {
        self.retry = None;
        self.save_if_changed();
    }

    fn file_text(&self) -> String {
        let mut out = String::from("# raftkv address book: id raft_addr client_addr (- unknown)\n");
        for (id, known) in &self.nodes {
            let dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            let _ = writeln!(out, "{} {} {}", id, dash(&known.raft), dash(&known.client));
        }
        out
    }
}

/// The raft address the book in `data_dir` recorded for this node `id`: the
/// `raft_addr` it last ran with (the book always holds its own). None when
/// the file is missing, unreadable or has no line for it, as the book is a
/// hint and a refusal must not rest on a guess.
pub fn recorded_own_raft_addr(data_dir: &Path, id: NodeId) -> Option<String> {
    let path = data_dir.join(FILE_NAME);
    let text = crate::storage::read_regular_text(&path).ok()?;
    parse_file(&text, &path)
        .remove(&id)
        .map(|known| known.raft)
        .filter(|raft| !raft.is_empty())
}

fn parse_file(text: &str, path: &Path) -> BTreeMap<NodeId, Known> {
    let mut nodes = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let id = fields.first().and_then(|f| f.parse::<NodeId>().ok());
        match (id, fields.len()) {
            (Some(id), 3) if id != NO_NODE => {
                let undash = |s: &str| {
                    if s == "-" {
                        String::new()
                    } else {
                        s.to_string()
                    }
                };
                nodes.insert(
                    id,
                    Known {
                        raft: undash(fields[1]),
                        client: undash(fields[2]),
                    },
                );
            }
            _ => warn!(
                "{}:{}: not 'id raft_addr client_addr'; line ignored",
                path.display(),
                n + 1
            ),
        }
    }
    nodes
}

/// `1=a,2=b` -> [(1, "a"), (2, "b")]; malformed pairs are skipped.
fn parse_pairs(text: &str) -> Vec<(NodeId, String)> {
    text.split(',')
        .filter_map(|pair| {
            let (id, addr) = pair.trim().split_once('=')?;
            let id: NodeId = id.trim().parse().ok()?;
            let addr = addr.trim();
            (id != NO_NODE && !addr.is_empty()).then(|| (id, addr.to_string()))
        })
        .collect()
}

fn format_pairs<'a>(pairs: impl Iterator<Item = (NodeId, &'a str)>) -> String {
    let mut out = String::new();
    for (id, addr) in pairs {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{}={}", id, addr);
    }
    out
}

/// Whether two raft addresses name the same place without a lookup: the
/// same IP address when both hosts are IP literals (`[0:0::1]` is `[::1]`,
/// brackets or not, as the dialer's lookup takes both; `[::ffff:127.0.0.1]`
/// is `127.0.0.1`), else the same host name in any case; and the same port
/// number (`07002` is `7002`). Names that resolve alike (`localhost` and
/// `127.0.0.1`) are not caught: that would need a blocking lookup.
fn same_addr(a: &str, b: &str) -> bool {
    fn parts(addr: &str) -> Option<(&str, Option<IpAddr>, u16)> {
        let (host, port) = addr.rsplit_once(':')?;
        Some((
            host,
            unbracketed(host).parse::<IpAddr>().ok(),
            port.parse().ok()?,
        ))
    }
    match (parts(a), parts(b)) {
        (Some((host_a, ip_a, port_a)), Some((host_b, ip_b, port_b))) => {
            port_a == port_b
                && match (ip_a, ip_b) {
                    (Some(ip_a), Some(ip_b)) => ip_a.to_canonical() == ip_b.to_canonical(),
                    _ => host_a.eq_ignore_ascii_case(host_b),
                }
        }
        _ => a == b,
    }
}

/// A host without the brackets an IPv6 literal is written in.
fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The longest host a raft address may have: a DNS name's 253 bytes (an IP
/// literal is shorter). Each AddLearner entry carries the raft address of
/// every member, so addresses as long as a request could be added up to an
/// entry larger than a peer frame, which no follower would take: the leader
/// lost its quorum, and the change its log.
const MAX_HOST_BYTES: usize = 253;

/// Whether `addr` can be a raft address in a context or the book: host:port
/// with none of the separators those formats use (the file splits its lines
/// at any whitespace, Unicode's too; control characters have no place in a
/// host either), and a host no longer than a host name can be.
pub fn valid_addr(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && unbracketed(host).len() <= MAX_HOST_BYTES
        && port.parse::<u16>().is_ok_and(|p| p != 0)
        && !addr.contains([',', '='])
        && !addr.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_save_is_tried_again_after_a_growing_wait() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut book = AddressBook::load((1, "h:1", "c:1"), Some(dir.path()), &[]);
        // What makes the save fail: its temp file's place is taken.
        let tmp = dir.path().join(format!("{FILE_NAME}.tmp"));
        std::fs::create_dir(&tmp).expect("mkdir");
        assert!(book.learn_handshake(2, "h:2", "c:2"));
        book.save_if_changed();
        let (first_at, first_wait) = book.retry.expect("waiting to try again");
        assert!(book.unsaved && first_wait == Duration::from_secs(1));
        // Not tried again before the wait is over, however often asked.
        book.save_if_changed();
        assert_eq!(book.retry, Some((first_at, first_wait)));
        book.retry = Some((Instant::now(), first_wait));
        book.save_if_changed();
        assert_eq!(book.retry.map(|(_, wait)| wait), Some(first_wait * 2));

        std::fs::remove_dir(&tmp).expect("rmdir");
        book.save_if_changed();
        assert!(book.unsaved, "tried again before its wait was over");
        // A node that stops does not wait.
        book.save_before_exit();
        assert!(!book.unsaved && book.retry.is_none());
        let again = AddressBook::load((1, "h:1", "c:1"), Some(dir.path()), &[]);
        assert_eq!(again.raft_addr(2), Some("h:2"));
    }

    /// A node back at the address it is dialed at (the operator restarted
    /// it there, as the warning says) and later restarted at the wrong
    /// address again is warned about again: the first mistake is long fixed.
    #[test]
    fn a_node_back_at_its_address_is_warned_again_at_its_next_move() {
        let cluster = vec![(1, "h:1".to_string()), (2, "h:2".to_string())];
        let mut book = AddressBook::load((1, "h:1", "c:1"), None, &cluster);
        assert_eq!(book.dialed_elsewhere(2, "new:2"), Some("h:2".to_string()));
        assert_eq!(book.dialed_elsewhere(2, "new:2"), None, "twice");
        // Restarts at the same address warn of nothing.
        assert_eq!(book.dialed_elsewhere(2, "h:2"), None);
        assert_eq!(book.dialed_elsewhere(2, "h:2"), None);
        assert_eq!(book.dialed_elsewhere(2, "new:2"), Some("h:2".to_string()));
    }

    #[test]
    fn later_sources_win_and_the_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = vec![(1, "h:1".to_string()), (2, "h:2".to_string())];
        let mut book = AddressBook::load((1, "h:1", "c:1"), Some(dir.path()), &cluster);
        book.learn_context(b"1=elsewhere:1,2=h:22,4=h:4");
        assert_eq!(book.raft_addr(1), Some("h:1"));
        assert_eq!(book.raft_addr(2), Some("h:22"));
        assert_eq!(book.raft_addr(4), Some("h:4"));
        assert_eq!(book.client_addr(1), Some("c:1"));
        assert_eq!(book.client_addr(2), None);
        // A handshake fills in what is unknown but does not move a member.
        assert!(book.learn_handshake(5, "h:5", "c:5"));
        assert!(!book.learn_handshake(4, "elsewhere:9", "c:4"));
        assert_eq!(book.raft_addr(4), Some("h:4"));
        // ... and such a node is warned about once per address it names
        // (a node restarted at a new address waits for a leader forever).
        assert_eq!(book.dialed_elsewhere(4, "elsewhere:9"), None);
        assert_eq!(book.dialed_elsewhere(4, "H:04"), None);
        assert_eq!(book.dialed_elsewhere(4, "bad addr:9"), None);
        assert_eq!(
            book.dialed_elsewhere(4, "elsewhere:10"),
            Some("h:4".to_string())
        );
        assert_eq!(book.dialed_elsewhere(4, "elsewhere:10"), None);
        assert_eq!(book.client_addr(4), Some("c:4"));
        book.save_if_changed();
        let again = AddressBook::load((1, "h:1", "c:1"), Some(dir.path()), &[]);
        assert_eq!(again.nodes, book.nodes);
        assert_eq!(book.context_for(&[1, 2], 6, "h:6"), b"1=h:1,2=h:22,6=h:6");
        assert_eq!(book.owner_of("h:5", &[2, 5]), Some(5));
        assert_eq!(book.owner_of("h:5", &[2]), None);
        // Node 4 left h:4, and 7 took it: 7 holds it, not 4.
        book.learn_context(b"7=h:4");
        assert_eq!(book.owner_of("h:4", &[1, 2, 7]), Some(7));
    }

    #[test]
    fn an_address_written_another_way_still_has_its_owner() {
        let cluster = vec![
            (1, "127.0.0.1:7001".to_string()),
            (2, "[::1]:7002".to_string()),
            (3, "node3.example:7003".to_string()),
        ];
        let book = AddressBook::load((1, "127.0.0.1:7001", "c:1"), None, &cluster);
        let members = [1, 2, 3];
        for (addr, owner) in [
            ("127.0.0.1:07001", Some(1)),
            ("[0:0:0:0:0:0:0:1]:7002", Some(2)),
            ("[::1]:007002", Some(2)),
            ("::1:7002", Some(2)),
            ("127.0.0.1:+7001", Some(1)),
            ("[::ffff:127.0.0.1]:7001", Some(1)),
            ("NODE3.example:7003", Some(3)),
            ("node3.example:07003", Some(3)),
            ("127.0.0.1:7002", None),
            ("node3.example:7001", None),
        ] {
            assert_eq!(book.owner_of(addr, &members), owner, "{addr}");
        }
    }

    #[test]
    fn bad_lines_and_pairs_are_skipped() {
        let nodes = parse_file(
            "# c\n1 a:1 -\nx a:2 b\n0 a:3 b\n2 a:2\n3 a:3 c:3\n",
            Path::new("f"),
        );
        assert_eq!(nodes.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(nodes[&1].client, "");
        assert_eq!(
            parse_pairs("1=a:1, x=b,0=c,2=,3=d:3,junk"),
            vec![(1, "a:1".to_string()), (3, "d:3".to_string())]
        );
    }

    /// The file holds one node a line, its fields split at whitespace: an
    /// address CLUSTER ADD takes must come back from it as it went in.
    #[test]
    fn every_address_taken_survives_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut book = AddressBook::load((1, "h:1", "c:1"), Some(dir.path()), &[]);
        let tricky = [
            "h\u{b}x:7004",
            "h\u{c}x:7004",
            "h\u{85}x:7004",
            "h\u{a0}x:7004",
            "h\u{2028}x:7004",
            "h\u{3000}x:7004",
            "h\u{0}x:7004",
            "h\u{1b}x:7004",
            "h\u{7f}x:7004",
            "#h:7004",
        ];
        let taken: Vec<(NodeId, &str)> = (10..)
            .zip(tricky)
            .filter(|(_, addr)| valid_addr(addr))
            .collect();
        for (id, addr) in &taken {
            book.learn_context(format!("{id}={addr}").as_bytes());
        }
        book.save_if_changed();
        let again = AddressBook::load((1, "h:1", "c:1"), Some(dir.path()), &[]);
        for (id, addr) in taken {
            assert_eq!(again.raft_addr(id), Some(addr), "{addr:?}");
        }
    }

    #[test]
    fn addresses_are_checked() {
        assert!(valid_addr("127.0.0.1:7004"));
        assert!(valid_addr("[::1]:7004"));
        assert!(valid_addr("node4.example:7004"));
        let longest = format!("{}:7004", "h".repeat(MAX_HOST_BYTES));
        assert!(valid_addr(&longest));
        assert!(valid_addr(&format!(
            "[{}]:7004",
            "h".repeat(MAX_HOST_BYTES)
        )));
        let too_long = format!("{}:7004", "h".repeat(MAX_HOST_BYTES + 1));
        for bad in [
            "7004",
            ":7004",
            "h:0",
            "h:99999",
            "h:1,2=x:3",
            "a=b:1",
            "h :1",
            &too_long,
        ] {
            assert!(!valid_addr(bad), "{bad}");
        }
    }
}
