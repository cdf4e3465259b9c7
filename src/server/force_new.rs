//! `--force-new-cluster`: a node that survived the loss of a majority of its
//! cluster's voters restarts as the only member of a one-member cluster that
//! keeps its data (etcd's `--force-new-cluster`, `restartAsStandaloneNode`).
//!
//! # The rewrite
//!
//! After recovery and before the core is built, the node:
//!
//! 1. records the members it drops in `data_dir/dropped` (written atomically),
//!    whose messages it ignores from then on, on this and every later start
//!    (see `Node::ignore_dropped_peers`);
//! 2. stores term `t + 1` and a vote for itself, `t` being the highest term
//!    it knows (stable file or log);
//! 3. appends a ForceNewCluster entry, which makes it the only voter, at the
//!    next index with term `t + 1`, and syncs it.
//!
//! Everything in its snapshot and log is kept: the single voter commits it
//! all with the Noop of the term it is elected in, as etcd commits the log it
//! finds. The configuration is in the log, so a restart without the flag
//! keeps it; a crash part-way leaves either the old configuration with the
//! dropped members ignored (no leader: start with the flag again, which is
//! idempotent) or the new one.
//!
//! # Why it is safe for the new cluster
//!
//! - One voter: the survivor alone is a majority, so it commits on its own
//!   vote, and nobody else can be elected in its configuration.
//! - Term `t + 1` with its own vote durable first: the entry is one a leader
//!   of `t + 1` could have written (the survivor voted for itself in it and
//!   can vote for nobody else there), and every later term of the new
//!   cluster is higher. The old members' logs may hold other entries of
//!   these terms; they never exchange entries with the new cluster, see next.
//! - Nodes added later join empty (`--join`, `CLUSTER ADD`) and receive the
//!   survivor's log, so log matching holds among the new members.
//! - A dropped member that comes back with its old data dir still counts the
//!   survivor as a voter; its log may be longer and of later terms. Its
//!   messages are ignored, so it can neither win the survivor's vote, nor
//!   depose it with a higher term, nor write into its log. It dials only
//!   the members of its old configuration, so nodes added later never hear
//!   from it. Two dropped members back together still form a majority of
//!   the old configuration among themselves: that is an operator error
//!   (they were to be gone for good), which this cannot prevent, but which
//!   does not touch the new cluster's data.
//!
//! What is lost: writes the old majority committed that are not in the
//! survivor's log, as with etcd. Pick the survivor with the highest
//! `last_log_index`.

use super::ServerError;
use crate::raft::conf_change::{self, ConfChange, ConfEntry};
use crate::raft::{Entry, EntryKind, HardState, NodeId, Restored, MAX_STORED_TERM};
use crate::storage::Storage;
use log::{info, warn};
use std::io::ErrorKind;
use std::path::Path;

/// In the data dir: the members a `--force-new-cluster` start dropped.
pub const DROPPED_FILE: &str = "dropped";

/// The members dropped by earlier forced starts (none without the file).
pub fn read_dropped(data_dir: &Path) -> Result<Vec<NodeId>, ServerError> {
    let path = data_dir.join(DROPPED_FILE);
    let fatal = |why: String| ServerError::Fatal(format!("{}: {}", path.display(), why));
    let text = match crate::storage::read_regular_text(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(fatal(err.to_string())),
    };
    parse_dropped(&text).map_err(fatal)
}

/// Comments, one `dropped = id,id,...` line (possibly empty) and the
/// `crc = ` line after it: the CRC-32 of the dropped line, as for every other
/// state file. A flipped digit would still parse, and a member no longer
/// ignored could depose the forced node and write into its log.
fn parse_dropped(text: &str) -> Result<Vec<NodeId>, String> {
    let mut found: Option<(Vec<NodeId>, &str)> = None;
    let mut checked = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(value) = line.strip_prefix("crc =") {
            let Some((_, dropped_line)) = &found else {
                return Err(format!("line {}: 'crc =' before 'dropped ='", n + 1));
            };
            if checked {
                return Err(format!("line {}: a second 'crc =' line", n + 1));
            }
            let stored = u32::from_str_radix(value.trim(), 16)
                .map_err(|_| format!("line {}: bad crc {:?}", n + 1, value.trim()))?;
            let computed = crc32fast::hash(dropped_line.as_bytes());
            if stored != computed {
                return Err(format!(
                    "line {}: crc {:08x} does not match the dropped line's {:08x} (the file is corrupt)",
                    n + 1,
                    stored,
                    computed
                ));
            }
            checked = true;
            continue;
        }
        let Some(value) = line.strip_prefix("dropped =") else {
            return Err(format!("line {}: unexpected {:?}", n + 1, line));
        };
        if found.is_some() {
            return Err(format!("line {}: a second 'dropped =' line", n + 1));
        }
        let mut ids = Vec::new();
        for word in value.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word.parse::<NodeId>() {
                Ok(id) if id > 0 => ids.push(id),
                _ => return Err(format!("line {}: bad node id {:?}", n + 1, word)),
            }
        }
        found = Some((ids, line));
    }
    match found {
        None => Err("no 'dropped =' line".to_string()),
        Some(_) if !checked => Err("no 'crc =' line (the file is cut short)".to_string()),
        Some((ids, _)) => Ok(ids),
    }
}

fn render_dropped(ids: &[NodeId]) -> String {
    let listed: Vec<String> = ids.iter().map(u64::to_string).collect();
    let line = format!("dropped = {}", listed.join(","));
    format!(
        "# raftkv: members dropped by --force-new-cluster; this node ignores their messages\n{}\ncrc = {:08x}\n",
        line,
        crc32fast::hash(line.as_bytes())
    )
}

fn write_dropped(data_dir: &Path, ids: &[NodeId]) -> Result<(), ServerError> {
    let text = render_dropped(ids);
    crate::storage::write_atomically(&data_dir.join(DROPPED_FILE), text.as_bytes())
        .map_err(|err| ServerError::Fatal(format!("cannot record the dropped members: {}", err)))
}

/// The configuration in force in `restored`: that of its last ConfChange
/// entry, else its snapshot's, else the founders' (voters, learners).
fn configuration(restored: &Restored, founders: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
    let last_conf = restored
        .entries
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::ConfChange)
        .find_map(|e| conf_change::decode(&e.data).ok());
    match last_conf {
        Some(conf) => (conf.voters, conf.learners),
        None if !restored.snapshot.voters.is_empty() => (
            restored.snapshot.voters.clone(),
            restored.snapshot.learners.clone(),
        ),
        None => (founders.to_vec(), Vec::new()),
    }
}

/// Makes node `id` the only voter (see the module docs): durable when this
/// returns, with `restored` updated to match the disk. `founders` is the
/// bootstrap configuration. Refused (status 2, nothing written) when the
/// node is not a member of the configuration in force: a removed node's
/// data is stale, and a node that never joined has none.
pub fn rewrite(
    data_dir: &Path,
    storage: &mut Storage,
    restored: &mut Restored,
    founders: &[NodeId],
    id: NodeId,
) -> Result<(), ServerError> {
    let (voters, learners) = configuration(restored, founders);
    if !voters.contains(&id) && !learners.contains(&id) {
        return Err(ServerError::Usage(format!(
            "--force-new-cluster: node {} is not a member of the configuration in its data dir {} (voters {:?}, learners {:?}): it was removed or never added, and has no cluster to recover",
            id,
            data_dir.display(),
            voters,
            learners
        )));
    }
    let last_index = restored
        .entries
        .last()
        .map_or(restored.snapshot.index, |e| e.index);
    assert_eq!(
        last_index,
        storage.last_index(),
        "restored entries end at {last_index}, the log at {}",
        storage.last_index()
    );
    if voters == [id] && learners.is_empty() {
        info!(
            "--force-new-cluster: node {} is already the only member; nothing to rewrite",
            id
        );
        return Ok(());
    }
    if !voters.contains(&id) {
        warn!(
            "--force-new-cluster: node {} was a learner; its log may be behind the voters' (last index {})",
            id, last_index
        );
    }
    let dropped: Vec<NodeId> = voters
        .iter()
        .chain(&learners)
        .copied()
        .filter(|member| *member != id)
        .collect();
    let last_term = restored
        .entries
        .last()
        .map_or(restored.snapshot.term, |e| e.term);
    let term = storage.hard_state().term.max(last_term) + 1;
    if term > MAX_STORED_TERM {
        // The stable file could not be read back.
        return Err(ServerError::Fatal(format!(
            "--force-new-cluster: term {} is above the highest term a stable file holds, {}",
            term, MAX_STORED_TERM
        )));
    }
    let mut ignored = read_dropped(data_dir)?;
    ignored.extend(&dropped);
    ignored.sort_unstable();
    ignored.dedup();
    write_dropped(data_dir, &ignored)?;
    let hard_state = HardState { term, vote: id };
    storage.set_hard_state(hard_state)?;
    let payload = conf_change::encode(&ConfEntry {
        change: ConfChange::ForceNewCluster { id },
        voters: vec![id],
        learners: Vec::new(),
    });
    let entry = Entry {
        index: last_index + 1,
        term,
        kind: EntryKind::ConfChange,
        data: payload.into(),
    };
    storage.append(std::slice::from_ref(&entry))?;
    storage.sync()?;
    warn!(
        "--force-new-cluster: node {} is now the only member of a one-member cluster; dropped members {:?} (voters were {:?}, learners {:?}); their messages are ignored from now on (recorded in {})",
        id,
        dropped,
        voters,
        learners,
        data_dir.join(DROPPED_FILE).display()
    );
    warn!(
        "--force-new-cluster: kept the snapshot (index {}) and every log entry up to index {}; the new configuration is entry {} of term {}; writes the old majority acknowledged beyond this node's log are lost; add nodes with --join and CLUSTER ADD under new ids",
        restored.snapshot.index, last_index, entry.index, term
    );
    restored.hard_state = hard_state;
    restored.entries.push(entry);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::SnapshotMeta;
    use crate::storage::StorageOptions;

    fn options() -> StorageOptions {
        StorageOptions {
            segment_bytes: 1 << 20,
            check_payload: None,
            ..StorageOptions::default()
        }
    }

    fn conf_entry(
        index: u64,
        term: u64,
        change: ConfChange,
        voters: &[u64],
        learners: &[u64],
    ) -> Entry {
        let payload = conf_change::encode(&ConfEntry {
            change,
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        });
        Entry {
            index,
            term,
            kind: EntryKind::ConfChange,
            data: payload.into(),
        }
    }

    /// A data dir whose log is entries 1..=4 of term 2 and a ConfChange at
    /// 5 (term 3) setting `voters` and `learners`, in stable term `term`.
    /// Returns it with the storage reopened as a start finds it.
    fn data_dir(
        voters: &[u64],
        learners: &[u64],
        term: u64,
    ) -> (tempfile::TempDir, Storage, Restored) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut entries: Vec<Entry> = (1..=4)
            .map(|index| Entry {
                index,
                term: 2,
                kind: EntryKind::Noop,
                data: Vec::new().into(),
            })
            .collect();
        let add = ConfChange::AddLearner {
            id: 4,
            context: b"h:4".to_vec(),
        };
        entries.push(conf_entry(5, 3, add, voters, learners));
        {
            let mut storage = Storage::open(dir.path(), options()).expect("open");
            storage.finish_recovery().expect("finish");
            storage
                .set_hard_state(HardState { term, vote: 2 })
                .expect("stable");
            storage.append(&entries).expect("append");
            storage.sync().expect("sync");
        }
        let mut storage = Storage::open(dir.path(), options()).expect("reopen");
        storage.finish_recovery().expect("finish");
        let restored = Restored {
            hard_state: storage.hard_state(),
            snapshot: SnapshotMeta::default(),
            entries,
        };
        (dir, storage, restored)
    }

    #[test]
    fn the_node_becomes_the_only_voter_durably_in_a_term_of_its_own() {
        let (dir, mut storage, mut restored) = data_dir(&[1, 2, 3], &[4], 6);
        rewrite(dir.path(), &mut storage, &mut restored, &[1, 2, 3], 1).expect("rewrite");
        let forced = conf_entry(6, 7, ConfChange::ForceNewCluster { id: 1 }, &[1], &[]);
        assert_eq!(restored.entries.last(), Some(&forced));
        assert_eq!(restored.entries.len(), 6, "every earlier entry kept");
        assert_eq!(restored.hard_state, HardState { term: 7, vote: 1 });
        assert_eq!(read_dropped(dir.path()).expect("read"), vec![2, 3, 4]);
        drop(storage);
        // What the next start finds on disk, with or without the flag.
        let storage = Storage::open(dir.path(), options()).expect("reopen");
        assert_eq!(storage.hard_state(), HardState { term: 7, vote: 1 });
        assert_eq!(storage.last_index(), 6);
        assert_eq!(storage.entries(1, 7).expect("entries"), restored.entries);
    }

    #[test]
    fn the_term_is_above_the_logs_when_the_stable_file_is_behind() {
        // Node::new takes the log's last term then; so must the rewrite.
        let (dir, mut storage, mut restored) = data_dir(&[1, 2, 3], &[], 1);
        rewrite(dir.path(), &mut storage, &mut restored, &[1, 2, 3], 2).expect("rewrite");
        assert_eq!(restored.entries.last().map(|e| e.term), Some(4));
        assert_eq!(read_dropped(dir.path()).expect("read"), vec![1, 3]);
    }

    #[test]
    fn a_term_past_what_a_stable_file_holds_is_refused_and_nothing_written() {
        let (dir, mut storage, mut restored) = data_dir(&[1, 2, 3], &[], MAX_STORED_TERM);
        match rewrite(dir.path(), &mut storage, &mut restored, &[1, 2, 3], 1) {
            Err(ServerError::Fatal(text)) => assert!(text.contains("highest term"), "{text}"),
            other => panic!("forced past the highest term: {:?}", other.map(|_| ())),
        }
        assert_eq!(storage.last_index(), 5);
        assert!(!dir.path().join(DROPPED_FILE).exists());
    }

    #[test]
    fn a_start_that_died_before_the_entry_is_completed_by_forcing_again() {
        // Killed after the dropped file and the stable term, before the entry.
        let (dir, mut storage, mut restored) = data_dir(&[1, 2, 3], &[], 6);
        write_dropped(dir.path(), &[2, 3]).expect("dropped");
        storage
            .set_hard_state(HardState { term: 7, vote: 1 })
            .expect("stable");
        drop(storage);
        let mut storage = Storage::open(dir.path(), options()).expect("reopen");
        storage.finish_recovery().expect("finish");
        restored.hard_state = storage.hard_state();
        rewrite(dir.path(), &mut storage, &mut restored, &[1, 2, 3], 1).expect("rewrite");
        // Term 7 may hold our vote already: the entry takes a term past it.
        let forced = conf_entry(6, 8, ConfChange::ForceNewCluster { id: 1 }, &[1], &[]);
        assert_eq!(storage.entries(6, 7).expect("entry"), vec![forced]);
        assert_eq!(storage.hard_state(), HardState { term: 8, vote: 1 });
        assert_eq!(read_dropped(dir.path()).expect("read"), vec![2, 3]);
    }

    #[test]
    fn forcing_again_changes_nothing() {
        let (dir, mut storage, mut restored) = data_dir(&[1, 2, 3], &[], 3);
        rewrite(dir.path(), &mut storage, &mut restored, &[1, 2, 3], 1).expect("rewrite");
        let before = (restored.clone().entries, storage.hard_state());
        rewrite(dir.path(), &mut storage, &mut restored, &[1, 2, 3], 1).expect("again");
        assert_eq!((restored.entries, storage.hard_state()), before);
        assert_eq!(storage.last_index(), 6);
        assert_eq!(read_dropped(dir.path()).expect("read"), vec![2, 3]);
    }

    #[test]
    fn a_node_outside_the_configuration_is_refused_and_nothing_written() {
        let (dir, mut storage, mut restored) = data_dir(&[2, 3], &[4], 3);
        match rewrite(dir.path(), &mut storage, &mut restored, &[1, 2, 3], 1) {
            Err(ServerError::Usage(text)) => assert!(text.contains("not a member"), "{text}"),
            other => panic!("a removed node was forced: {:?}", other.map(|_| ())),
        }
        assert_eq!(storage.last_index(), 5);
        assert_eq!(storage.hard_state(), HardState { term: 3, vote: 2 });
        assert!(!dir.path().join(DROPPED_FILE).exists());
    }

    #[test]
    fn the_founders_are_the_configuration_before_any_change() {
        let (voters, learners) = configuration(&Restored::default(), &[1, 2, 3]);
        assert_eq!((voters, learners), (vec![1, 2, 3], vec![]));
        let snapshot = SnapshotMeta {
            index: 9,
            term: 2,
            voters: vec![1, 5],
            learners: vec![6],
        };
        let restored = Restored {
            snapshot,
            ..Restored::default()
        };
        assert_eq!(configuration(&restored, &[1, 2, 3]), (vec![1, 5], vec![6]));
    }

    #[test]
    fn the_dropped_file_parses_strictly() {
        assert_eq!(parse_dropped(&render_dropped(&[2, 3])), Ok(vec![2, 3]));
        assert_eq!(parse_dropped(&render_dropped(&[])), Ok(vec![]));
        let crc_of = |line: &str| format!("crc = {:08x}\n", crc32fast::hash(line.as_bytes()));
        for bad in [
            String::new(),
            "dropped = 2,3\n".to_string(),
            format!("{}dropped = 2,3\n", crc_of("dropped = 2,3")),
            format!("dropped = 2,x\n{}", crc_of("dropped = 2,x")),
            format!("dropped = 0\n{}", crc_of("dropped = 0")),
            format!("dropped = 2\n{}dropped = 3\n", crc_of("dropped = 2")),
            format!("dropped = 2\n{0}{0}", crc_of("dropped = 2")),
            "drop = 2\n".to_string(),
            "dropped = 2\ncrc = zz\n".to_string(),
        ] {
            assert!(parse_dropped(&bad).is_err(), "{bad:?} taken");
        }
    }

    #[test]
    fn a_corrupt_dropped_file_stops_the_start_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_dropped(dir.path(), &[2, 3, 14]).expect("write");
        let path = dir.path().join(DROPPED_FILE);
        let good = std::fs::read(&path).expect("read");
        // Every digit and comma of the file replaced by every other one: each
        // either leaves the ids as they were (a comment) or is refused.
        for at in 0..good.len() {
            for byte in b"0123456789,".iter().copied().filter(|b| *b != good[at]) {
                let mut bad = good.clone();
                bad[at] = byte;
                std::fs::write(&path, &bad).expect("write");
                match read_dropped(dir.path()) {
                    Ok(ids) => assert_eq!(ids, vec![2, 3, 14], "byte {at} set to {byte}"),
                    Err(ServerError::Fatal(text)) => {
                        assert!(text.contains(&path.display().to_string()), "{text}")
                    }
                    Err(other) => panic!("{other}"),
                }
            }
        }
        // Cut short anywhere past the comment: refused too.
        let comment = good.iter().position(|b| *b == b'\n').expect("comment") + 1;
        for len in comment..good.len() - 1 {
            std::fs::write(&path, &good[..len]).expect("write");
            assert!(
                read_dropped(dir.path()).is_err(),
                "cut to {len} bytes taken"
            );
        }
    }
}
