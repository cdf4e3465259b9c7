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
/// the file on first boot), else what the file recorded.
pub fn settle(data_dir: &Path, configured: &[(NodeId, String)]) -> Result<Members, ServerError> {
    let path = data_dir.join(FOUNDERS_FILE);
    let fatal = |why: String| ServerError::Fatal(format!("{}: {}", path.display(), why));
    match fs::read_to_string(&path) {
        Ok(text) if configured.is_empty() => parse(&text).map_err(fatal),
        Ok(_) => Ok(configured.to_vec()),
        Err(err) if err.kind() == ErrorKind::NotFound => {
            record(data_dir, configured).map_err(|e| fatal(e.to_string()))?;
            Ok(configured.to_vec())
        }
        Err(err) => Err(fatal(err.to_string())),
    }
}

fn parse(text: &str) -> Result<Members, String> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("cluster ="))
        .ok_or("no 'cluster =' line")?;
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

    #[test]
    fn the_first_boot_records_the_members_and_a_restart_without_them_reads_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let founders = vec![(1, "127.0.0.1:7001".to_string()), (2, "h:2".to_string())];
        assert_eq!(settle(dir.path(), &founders).expect("first boot"), founders);
        assert_eq!(settle(dir.path(), &[]).expect("restart"), founders);
        // Given again, the key is used as given.
        let other = vec![(1, "127.0.0.1:7001".to_string())];
        assert_eq!(settle(dir.path(), &other).expect("restart"), other);
        assert_eq!(settle(dir.path(), &[]).expect("restart"), founders);
    }

    #[test]
    fn a_joiner_records_no_members() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(settle(dir.path(), &[]).expect("first boot"), Vec::new());
        assert_eq!(settle(dir.path(), &[]).expect("restart"), Vec::new());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(FOUNDERS_FILE), "cluster = 1=\n").expect("write");
        match settle(dir.path(), &[]) {
            Err(ServerError::Fatal(text)) => assert!(text.contains(FOUNDERS_FILE), "{}", text),
            other => panic!("expected an error, got {:?}", other.map(|_| ())),
        }
    }
}
