//! `data_dir/founders`: the `cluster` a node first started with (empty for a
//! node that joined). The SPEC asks for `cluster` on first boot only; with
//! this file a node restarts without it and still knows the configuration it
//! was founded in, which nothing else records while no membership change has
//! been made (the log holds no configuration entry then).

use super::ServerError;
use crate::config::{self, FOUNDERS_FILE};
use crate::raft::NodeId;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;

type Members = Vec<(NodeId, String)>;

/// The founding members to start with: `configured` when given (written to
/// the file on first boot), else what the file recorded. The founding voters
/// cannot change later (membership changes go through CLUSTER ADD/REMOVE),
/// so a `cluster` naming other ids than the file is refused; other addresses
/// for the same ids are taken and recorded. This node (`id` at `raft_addr`)
/// must be among the founders, unless it joined (none).
///
/// Reads only: the file is written by [`Settled::record`], once the node
/// has recovered, so that a start refused here or later changes nothing.
pub fn decide(
    data_dir: &Path,
    configured: &[(NodeId, String)],
    id: NodeId,
    raft_addr: &str,
) -> Result<Settled, ServerError> {
    let path = data_dir.join(FOUNDERS_FILE);
    let fatal = |why: String| ServerError::Fatal(format!("{}: {}", path.display(), why));
    let (members, write) = match fs::read_to_string(&path) {
        Ok(text) => {
            let recorded = parse(&text).map_err(fatal)?;
            let ids = |members: &[(NodeId, String)]| -> Vec<NodeId> {
                let mut ids: Vec<NodeId> = members.iter().map(|(id, _)| *id).collect();
                ids.sort_unstable();
                ids
            };
            if configured.is_empty() || configured == recorded.as_slice() {
                (recorded, false)
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
        _ => Ok(Settled { members, write }),
    }
}

/// The founding members [`decide`] settled on, and whether the file must
/// say so.
pub struct Settled {
    members: Members,
    write: bool,
}

impl Settled {
    /// Writes the file if it must change, and returns the members.
    pub fn record(self, data_dir: &Path) -> Result<Members, ServerError> {
        if self.write {
            record(data_dir, &self.members).map_err(|e| {
                let path = data_dir.join(FOUNDERS_FILE);
                ServerError::Fatal(format!("{}: {}", path.display(), e))
            })?;
        }
        Ok(self.members)
    }
}

/// What `record` writes: comments and one `cluster =` line. Anything else
/// means the file was damaged or is not ours.
fn parse(text: &str) -> Result<Members, String> {
    let mut cluster = None;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_prefix("cluster =") {
            Some(value) if cluster.is_none() => cluster = Some(value),
            Some(_) => return Err(format!("line {}: a second 'cluster =' line", n + 1)),
            None => return Err(format!("line {}: unexpected {:?}", n + 1, line)),
        }
    }
    let line = cluster.ok_or("no 'cluster =' line")?;
    match line.trim() {
        "" => Ok(Vec::new()),
        members => config::parse_members(members).map_err(|why| format!("bad members: {}", why)),
    }
}

/// Written whole or not at all: a temporary file, synced, renamed.
fn record(data_dir: &Path, members: &[(NodeId, String)]) -> std::io::Result<()> {
    let listed: Vec<String> = members
        .iter()
        .map(|(id, addr)| format!("{}={}", id, addr))
        .collect();
    let text = format!(
        "# raftkv: the cluster this node was founded with (empty: it joined)\ncluster = {}\n",
        listed.join(",")
    );
    let tmp = data_dir.join(format!("{}.tmp", FOUNDERS_FILE));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, data_dir.join(FOUNDERS_FILE))?;
    fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            settle(dir.path(), &[], 2, "h:9"),
            Err(ServerError::Fatal(_))
        ));
        assert!(settle(dir.path(), &[], 2, "h:2").is_ok());
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
