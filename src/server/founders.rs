//! `data_dir/founders`: the node's id and the `cluster` it first started
//! with (empty for a node that joined). The SPEC asks for `cluster` on first
//! boot only; with this file a node restarts without it and still knows the
//! configuration it was founded in, which nothing else records while no
//! membership change has been made (the log holds no configuration entry
//! then). The id is there so that a data dir is never run as another node:
//! the vote in `stable` is that node's, and a node voting with another's
//! record could give a second vote in a term (two founders' files are
//! otherwise alike).

use super::ServerError;
use crate::config::{self, FOUNDERS_FILE};
use crate::raft::NodeId;
use std::io::ErrorKind;
use std::path::Path;

type Members = Vec<(NodeId, String)>;

/// The founding members to start with: `configured` when given (written to
/// the file on first boot), else what the file recorded. The founding voters
/// cannot change later (membership changes go through CLUSTER ADD/REMOVE),
/// so a `cluster` naming other ids than the file is refused; other addresses
/// for the same ids are taken and recorded. This node (`id` at `raft_addr`)
/// must be among the founders, unless it joined (none).
///
/// Reads only: the file is written by [`Settled::record`], once every check
/// of the data dir has passed, so that a start refused by one changes
/// nothing.
pub fn decide(
    data_dir: &Path,
    configured: &[(NodeId, String)],
    id: NodeId,
    raft_addr: &str,
) -> Result<Settled, ServerError> {
    let path = data_dir.join(FOUNDERS_FILE);
    let fatal = |why: String| ServerError::Fatal(format!("{}: {}", path.display(), why));
    let (members, write) = match crate::storage::read_regular_text(&path) {
        Ok(text) => {
            let (recorded, node) = parse(&text).map_err(fatal)?;
            if let Some(node) = node.filter(|node| *node != id) {
                return Err(fatal(format!(
                    "this data dir is node {}'s, but id is {} (is this another node's data dir?)",
                    node, id
                )));
            }
            // A file of a build that did not record the id: the data dir is
            // taken as this node's, as it was then, and the id recorded.
            let unrecorded = node.is_none();
            let ids = |members: &[(NodeId, String)]| -> Vec<NodeId> {
                let mut ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
                ids.sort_unstable();
                ids
            };
            if configured.is_empty() || configured == recorded.as_slice() {
                (recorded, unrecorded)
            } else if ids(configured) == ids(&recorded) {
                (configured.to_vec(), true)
            } else {
                return Err(fatal(format!(
                    "this node was founded with members {:?}, but cluster names {:?}; the founding members cannot change (use CLUSTER ADD and REMOVE)",
                    ids(&recorded),
                    ids(configured)
                )));
            }
        }
        Err(err) if err.kind() == ErrorKind::NotFound => (configured.to_vec(), true),
        Err(err) => return Err(fatal(err.to_string())),
    };
    match members.iter().find(|(member, _)| *member == id) {
        None if !members.is_empty() => Err(fatal(format!(
            "node {} is not among the founding members (is this another node's data dir?)",
            id
        ))),
        Some((_, addr)) if addr != raft_addr => Err(fatal(format!(
            "node {} was founded at {}, but raft_addr is {}",
            id, addr, raft_addr
        ))),
        _ => Ok(Settled { members, write, id }),
    }
}

/// A node that joined, restarted on another `raft_addr` than it last ran
/// with, is refused as a founder would be: the members know it by the
/// address it was added at (the AddLearner entry) and keep dialing that one,
/// so it would sit unreachable, still counted as a voter, until the cluster
/// lost its quorum to one more failure. `holds_state` says it was added (a
/// joiner receives entries or a snapshot only once it is a member); one that
/// never was may move freely, as nobody knows it yet.
pub fn check_joiner_address(
    data_dir: &Path,
    settled: &Settled,
    holds_state: bool,
    raft_addr: &str,
) -> Result<(), ServerError> {
    if !settled.members.is_empty() || !holds_state {
        return Ok(());
    }
    match crate::server::addresses::recorded_own_raft_addr(data_dir, settled.id) {
        Some(recorded) if recorded != raft_addr => Err(ServerError::Fatal(format!(
            "{}: node {} joined at {}, but raft_addr is {} (the members know it by that address; to move a node, CLUSTER REMOVE it and add a node with a new id and an empty data dir at the new address)",
            data_dir.join(crate::server::addresses::FILE_NAME).display(),
            settled.id,
            recorded,
            raft_addr
        ))),
        _ => Ok(()),
    }
}

/// The founding members [`decide`] settled on, and whether the file must
/// say so.
pub struct Settled {
    members: Members,
    write: bool,
    id: NodeId,
}

impl Settled {
    /// Writes the file if it must change, and returns the members.
    pub fn record(self, data_dir: &Path) -> Result<Members, ServerError> {
        if self.write {
            record(data_dir, self.id, &self.members).map_err(|err| {
                ServerError::Fatal(format!("cannot record the founding members: {}", err))
            })?;
        }
        Ok(self.members)
    }
}

/// What `record` writes: comments, one `node =` line (absent from files of
/// earlier builds) and one `cluster =` line. Anything else means the file
/// was damaged or is not ours.
fn parse(text: &str) -> Result<(Members, Option<NodeId>), String> {
    let (mut cluster, mut node) = (None, None);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (seen, value) = if let Some(value) = line.strip_prefix("cluster =") {
            (&mut cluster, value)
        } else if let Some(value) = line.strip_prefix("node =") {
            (&mut node, value)
        } else {
            return Err(format!("line {}: unexpected {:?}", n + 1, line));
        };
        if seen.replace(value).is_some() {
            return Err(format!("line {}: a second {:?} line", n + 1, line));
        }
    }
    let node = match node.map(str::trim) {
        None => None,
        Some(id) => match id.parse::<NodeId>() {
            Ok(id) if id > 0 => Some(id),
            _ => return Err(format!("bad node id {:?}", id)),
        },
    };
    let line = cluster.ok_or("no 'cluster =' line")?;
    let members = match line.trim() {
        "" => Vec::new(),
        members => config::parse_members(members).map_err(|why| format!("bad members: {}", why))?,
    };
    Ok((members, node))
}

/// Written whole or not at all (`write_atomically`).
fn record(
    data_dir: &Path,
    id: NodeId,
    members: &[(NodeId, String)],
) -> Result<(), crate::storage::StorageError> {
    let listed: Vec<String> = members
        .iter()
        .map(|(id, addr)| format!("{}={}", id, addr))
        .collect();
    let text = format!(
        "# raftkv: this node's id, and the cluster it was founded with (empty: it joined)\nnode = {}\ncluster = {}\n",
        id,
        listed.join(",")
    );
    crate::storage::write_atomically(&data_dir.join(FOUNDERS_FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn settle(
        data_dir: &Path,
        configured: &[(NodeId, String)],
        id: NodeId,
        raft_addr: &str,
    ) -> Result<Members, ServerError> {
        decide(data_dir, configured, id, raft_addr)?.record(data_dir)
    }

    #[test]
    fn the_first_boot_records_the_members_and_a_restart_without_them_reads_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let founders = vec![(1, "127.0.0.1:7001".to_string()), (2, "h:2".to_string())];
        let settle =
            |configured: &[(NodeId, String)]| settle(dir.path(), configured, 1, "127.0.0.1:7001");
        assert_eq!(settle(&founders).expect("first boot"), founders);
        assert_eq!(settle(&[]).expect("restart"), founders);
        // A new address of a founder is taken, and recorded.
        let moved = vec![(1, "127.0.0.1:7001".to_string()), (2, "h:22".to_string())];
        assert_eq!(settle(&moved).expect("restart"), moved);
        assert_eq!(settle(&[]).expect("restart"), moved);
        // Other founders are refused, and the file is kept.
        let other = vec![(1, "127.0.0.1:7001".to_string()), (3, "h:3".to_string())];
        assert!(matches!(settle(&other), Err(ServerError::Fatal(_))));
        assert_eq!(settle(&[]).expect("restart"), moved);
    }

    #[test]
    fn deciding_writes_nothing_until_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let founders = vec![(1, "h:1".to_string()), (2, "h:2".to_string())];
        let settled = decide(dir.path(), &founders, 1, "h:1").expect("first boot");
        assert!(!dir.path().join(FOUNDERS_FILE).exists());
        assert_eq!(settled.record(dir.path()).expect("record"), founders);
        assert!(dir.path().join(FOUNDERS_FILE).exists());
        let moved = vec![(1, "h:1".to_string()), (2, "h:22".to_string())];
        let before = fs::read(dir.path().join(FOUNDERS_FILE)).expect("read");
        decide(dir.path(), &moved, 1, "h:1").expect("restart");
        assert_eq!(
            fs::read(dir.path().join(FOUNDERS_FILE)).expect("read"),
            before
        );
    }

    #[test]
    fn a_joiner_records_no_members() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            settle(dir.path(), &[], 4, "h:4").expect("first boot"),
            Vec::new()
        );
        assert_eq!(
            settle(dir.path(), &[], 4, "h:4").expect("restart"),
            Vec::new()
        );
    }

    #[test]
    fn another_nodes_data_dir_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let founders = vec![(1, "h:1".to_string()), (2, "h:2".to_string())];
        settle(dir.path(), &founders, 1, "h:1").expect("first boot");
        assert!(matches!(
            settle(dir.path(), &[], 3, "h:3"),
            Err(ServerError::Fatal(_))
        ));
        assert!(matches!(
            settle(dir.path(), &[], 1, "h:9"),
            Err(ServerError::Fatal(_))
        ));
        assert!(settle(dir.path(), &[], 1, "h:1").is_ok());
    }

    #[test]
    fn another_nodes_data_dir_is_refused_also_when_both_founded_the_cluster() {
        let (one, two) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        let founders = vec![(1, "h:1".to_string()), (2, "h:2".to_string())];
        settle(one.path(), &founders, 1, "h:1").expect("node 1's first boot");
        settle(two.path(), &founders, 2, "h:2").expect("node 2's first boot");
        let before = fs::read(one.path().join(FOUNDERS_FILE)).expect("read");
        for configured in [&founders[..], &[]] {
            match settle(one.path(), configured, 2, "h:2") {
                Err(ServerError::Fatal(text)) => assert!(
                    text.contains(FOUNDERS_FILE) && text.contains("node 1's, but id is 2"),
                    "{}",
                    text
                ),
                other => panic!("node 2 ran on node 1's data dir: {:?}", other.map(|_| ())),
            }
        }
        assert_eq!(
            fs::read(one.path().join(FOUNDERS_FILE)).expect("read"),
            before
        );
        // Joiners' files are alike but for the id.
        let joiner = tempfile::tempdir().expect("tempdir");
        settle(joiner.path(), &[], 4, "h:4").expect("joiner's first boot");
        assert!(settle(joiner.path(), &[], 5, "h:5").is_err());
        assert!(settle(joiner.path(), &[], 4, "h:4").is_ok());
    }

    #[test]
    fn a_file_without_the_id_is_taken_and_gets_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FOUNDERS_FILE);
        fs::write(&path, "# an earlier build's\ncluster = 1=h:1,2=h:2\n").expect("write");
        let members = settle(dir.path(), &[], 2, "h:2").expect("restart");
        assert_eq!(
            members,
            vec![(1, "h:1".to_string()), (2, "h:2".to_string())]
        );
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains("\nnode = 2\n"), "{}", text);
        assert!(settle(dir.path(), &[], 1, "h:1").is_err());
        // Other founders are still refused, and nothing is written then.
        fs::write(&path, "cluster = 1=h:1,2=h:2\n").expect("write");
        let other = vec![(2, "h:2".to_string()), (3, "h:3".to_string())];
        assert!(settle(dir.path(), &other, 2, "h:2").is_err());
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "cluster = 1=h:1,2=h:2\n"
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = "# comment\ncluster = 1=h:1\n";
        for damaged in [
            "cluster = 1=\n".to_string(),
            format!("{good}garbage"),
            format!("{good}cluster = 1=h:1\n"),
            good.replace("cluster", "clusterX"),
            format!("node = 1\n{good}node = 1\n"),
            format!("node = x\n{good}"),
            format!("node = 0\n{good}"),
        ] {
            fs::write(dir.path().join(FOUNDERS_FILE), &damaged).expect("write");
            match settle(dir.path(), &[], 1, "h:1") {
                Err(ServerError::Fatal(text)) => assert!(text.contains(FOUNDERS_FILE), "{}", text),
                other => panic!("{damaged:?} was taken: {:?}", other.map(|_| ())),
            }
        }
        fs::write(dir.path().join(FOUNDERS_FILE), good).expect("write");
        assert!(settle(dir.path(), &[], 1, "h:1").is_ok());
    }
}
