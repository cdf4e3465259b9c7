//! Startup: the newest valid snapshot, then the log after it (SPEC §4).
//!
//! A newest snapshot that fails its checks is passed over with a warning
//! (by `storage::snapshot::load_latest_decoded`) only if the previous one plus the
//! log still cover everything it covered; otherwise, or when no snapshot is
//! valid, the node stops with an error naming the data directory. How the
//! log must continue the snapshot is decided by `recovery::plan_log`.
//!
//! A refused start changes nothing (SPEC §4): [`check`] only reads, and the
//! repairs the storage's open found (a torn tail to cut, a short newest
//! segment to extend) are made by [`finish`], with the plan's own changes,
//! once every check has passed.

use super::ServerError;
use crate::kv::KvStore;
use crate::raft::{trailing_count, Restored, SnapshotMeta};
use crate::recovery::{plan_log, LogPlan};
use crate::replica::MAX_TRAILING_BYTES;
use crate::storage::snapshot::{self, load_latest_decoded, parse_path, remove_temp_files};
use crate::storage::Storage;
use log::{info, warn};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What [`check`] decided, for [`finish`] to carry out.
pub(super) struct Checked {
    meta: SnapshotMeta,
    kv: KvStore,
    snapshot_bytes: u64,
    plan: LogPlan,
    /// Snapshots newer than the one loaded that failed their checks.
    passed_over: Vec<PathBuf>,
    started: Instant,
}

pub(super) struct Recovered {
    pub restored: Restored,
    /// Snapshots that failed their checks, for [`set_aside`] once the start
    /// can no longer be refused.
    pub passed_over: Vec<PathBuf>,
    pub kv: KvStore,
    /// Size of the snapshot file started from (0 without one).
    pub snapshot_bytes: u64,
}

impl Checked {
    /// The index of the snapshot the node restarts from (0 without one).
    pub(super) fn snapshot_index(&self) -> u64 {
        self.meta.index
    }
}

/// Loads the snapshot and decides how the log continues it, changing nothing.
pub(super) fn check(data_dir: &Path, storage: &Storage) -> Result<Checked, ServerError> {
    let started = Instant::now();
    let unusable = |why: String| {
        ServerError::Fatal(format!(
            "data dir {} cannot be recovered: {}",
            data_dir.display(),
            why
        ))
    };
    let dir = snapshot::snapshot_dir(data_dir);
    // Every snapshot this node took or installed, and every entry in its
    // log, was written after a stable file with at least its term
    // (`Replica` makes the hard state durable first). This build publishes
    // a received snapshot only as it installs it, after the term is stored;
    // earlier builds published it before the core stepped its message, so
    // in a data dir they wrote, one of a term above the stable file's was
    // never installed: a crash came first, before the core stored the
    // leader's term (a removed node, answered by a snapshot to its pre-vote,
    // has not stored it before). It is no state this node reached, and is
    // passed over (and left) as if it were not there. Kept for those data
    // dirs; this build leaves no such file (a stale stable file aside,
    // which the check on the log below still catches). A stable file that
    // is missing altogether is no such case: a node stores a term before
    // it keeps any snapshot, so with one there, the stable file was lost.
    let stable_term = storage.hard_state().term;
    let stable_path = data_dir.join(crate::storage::STABLE_FILE);
    let stable_missing = matches!(std::fs::symlink_metadata(&stable_path),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound);
    let mut above_stable = Vec::new();
    let loaded = load_latest_decoded(
        &dir,
        |path, (_, term)| {
            let installed = term <= stable_term;
            if !installed {
                above_stable.push(path.display().to_string());
                if !stable_missing {
                    warn!(
                        "passing over snapshot {}: its term {} is above the term {} in {}, so it was received from a leader but never installed (or the stable file is older than it)",
                        path.display(),
                        term,
                        stable_term,
                        stable_path.display()
                    );
                }
            }
            installed
        },
        |body| KvStore::restore_from(&mut &body[..]).map_err(|err| err.to_string()),
    )
    .map_err(|err| unusable(format!("no valid snapshot: {}", err)))?;
    // Passed over, the snapshots would leave the node empty at term 0: a
    // silent reset, and a second vote in a term it voted in.
    if stable_missing {
        if let Some(snapshot) = above_stable.first() {
            return Err(unusable(format!(
                "{} is missing, but {} is there: a node stores its term before it keeps any snapshot, so the stable file was lost, and starting without it could vote twice in a term; restore the file, or replace the node (CLUSTER REMOVE, then a new id with an empty data dir)",
                stable_path.display(),
                snapshot
            )));
        }
    }
    // Snapshots passed over now, or set aside by an earlier start: the state
    // reached their indexes once, so it must reach them again.
    // The newest of them, with its file for the error that names it.
    let mut must_reach: Option<(u64, PathBuf)> = snapshot::set_aside_snapshots(&dir)
        .map_err(|err| unusable(err.to_string()))?
        .into_iter()
        .max();
    let mut passed_over = Vec::new();
    let (meta, kv, snapshot_bytes) = match loaded {
        None => (SnapshotMeta::default(), KvStore::new(), 0),
        Some((loaded, kv)) => {
            for skipped in &loaded.skipped {
                if let Some((index, _)) = parse_path(&skipped.path) {
                    must_reach = must_reach.max(Some((index, skipped.path.clone())));
                }
                if skipped.corrupt {
                    passed_over.push(skipped.path.clone());
                }
            }
            let bytes = std::fs::metadata(&loaded.path).map_or(0, |m| m.len());
            info!(
                "loaded snapshot {} (index {}, term {}, {} keys) in {} ms",
                loaded.path.display(),
                loaded.meta.index,
                loaded.meta.term,
                kv.len(),
                started.elapsed().as_millis()
            );
            (loaded.meta, kv, bytes)
        }
    };
    let (first, last) = (storage.first_index(), storage.last_index());
    // Checked before anything is changed: a log or snapshot of a term above
    // the stable file's (see above) means a missing or stale stable file.
    let newest_term = storage.term(last).unwrap_or(0).max(meta.term);
    if stable_term < newest_term && stable_missing {
        return Err(unusable(format!(
            "{} is missing, but the log reaches term {}: it holds this node's term and vote, and starting without it could vote twice in a term; restore the file, or replace the node (CLUSTER REMOVE, then a new id with an empty data dir)",
            stable_path.display(),
            newest_term
        )));
    }
    if stable_term < newest_term {
        return Err(unusable(format!(
            "{} holds term {}, below term {} of the snapshot and log: the stable file is older than the log, and starting from it could vote twice in a term",
            stable_path.display(),
            stable_term,
            newest_term
        )));
    }
    let reach = must_reach.as_ref().map_or(0, |(index, _)| *index);
    let plan = plan_log(&meta, first, last, |i| storage.term(i), reach).map_err(|why| {
        let why = match &must_reach {
            Some((index, path)) if *index > meta.index => {
                format!("{} (the snapshot passed over: {})", why, path.display())
            }
            _ => why,
        };
        if above_stable.is_empty() {
            return unusable(why);
        }
        // Unless the stable file is older than they are.
        unusable(format!(
            "{}; snapshots passed over as never installed, their terms above the {} in {}: {}",
            why,
            stable_term,
            stable_path.display(),
            above_stable.join(", ")
        ))
    })?;
    Ok(Checked {
        meta,
        kv,
        snapshot_bytes,
        plan,
        passed_over,
        started,
    })
}

/// Carries out what [`check`] decided: first the storage's deferred repairs
/// (a torn tail, a short newest segment) and the removal of unfinished
/// snapshot files, then the log plan.
///
/// A log kept after the snapshot is then compacted as a snapshot taken now
/// would compact it, keeping `trailing` entries below it (fewer when their
/// payloads pass [`MAX_TRAILING_BYTES`]): a crash while the segments the
/// last compaction detached were being deleted leaves them on disk, and the
/// next snapshot, which would delete them, may be a whole interval away.
pub(super) fn finish(
    data_dir: &Path,
    storage: &mut Storage,
    checked: Checked,
    trailing: u64,
) -> Result<Recovered, ServerError> {
    let Checked {
        meta,
        kv,
        snapshot_bytes,
        plan,
        passed_over,
        started,
    } = checked;
    storage.finish_recovery()?;
    let dir = snapshot::snapshot_dir(data_dir);
    let removed = remove_temp_files(&dir)?;
    if removed > 0 {
        info!(
            "removed {} unfinished snapshot file(s) from {}",
            removed,
            dir.display()
        );
    }
    let (first, last) = (storage.first_index(), storage.last_index());
    let entries = match plan {
        LogPlan::Keep { from } => {
            let entries = storage.entries(from, last + 1)?;
            let keep_from = trailing_start(storage, meta.index, trailing)?;
            if keep_from > first {
                storage.drop_before(keep_from)?;
                if storage.first_index() > first {
                    info!(
                        "log compacted on start: first index {} -> {} (snapshot index {})",
                        first,
                        storage.first_index(),
                        meta.index
                    );
                }
            }
            entries
        }
        LogPlan::Reset { next } => {
            warn!(
                "the log ({}..={}) does not continue snapshot {}/{}; emptying it to continue at {}",
                first, last, meta.index, meta.term, next
            );
            storage.reset(next)?;
            Vec::new()
        }
    };
    let hard_state = storage.hard_state();
    info!(
        "recovered term {} vote {}, snapshot index {} and {} log entries after it from {} in {} ms",
        hard_state.term,
        hard_state.vote,
        meta.index,
        entries.len(),
        data_dir.display(),
        started.elapsed().as_millis()
    );
    Ok(Recovered {
        restored: Restored {
            hard_state,
            snapshot: meta,
            entries,
        },
        passed_over,
        kv,
        snapshot_bytes,
    })
}

/// The first index a compaction at snapshot index `index` keeps: at most
/// `trailing` entries below it, and only as many as fit in
/// [`MAX_TRAILING_BYTES`] of payload (as `Replica::snapshot_written` keeps).
fn trailing_start(storage: &Storage, index: u64, trailing: u64) -> Result<u64, ServerError> {
    let lo = (index + 1)
        .saturating_sub(trailing)
        .max(storage.first_index());
    if lo > index {
        return Ok(index + 1);
    }
    // One entry at a time: the margin may hold far more than its byte limit.
    let mut failed = None;
    let sizes = (lo..=index)
        .rev()
        .map_while(|i| match storage.entries(i, i + 1) {
            Ok(entries) => Some(entries.iter().map(|e| e.data.len() as u64).sum()),
            Err(err) => {
                failed = Some(err);
                None
            }
        });
    let kept = trailing_count(sizes, trailing, MAX_TRAILING_BYTES).min(index + 1 - lo);
    match failed {
        Some(err) => Err(err.into()),
        None => Ok(index + 1 - kept),
    }
}

/// Sets aside the snapshots a start passed over for failing their checks
/// (`snapshot::set_aside`), once that start can no longer be refused, so a
/// refused start still changes nothing of them.
pub(super) fn set_aside(passed_over: &[PathBuf]) {
    for path in passed_over {
        match snapshot::set_aside(path) {
            Ok(broken) => warn!(
                "moved snapshot {}, which failed its checks, to {}; delete it once looked at",
                path.display(),
                broken.display()
            ),
            Err(err) => warn!(
                "could not move snapshot {}, which failed its checks, aside: {}",
                path.display(),
                err
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{Entry, EntryKind, HardState};
    use crate::storage::snapshot::SnapshotWriter;
    use crate::storage::StorageOptions;

    fn options() -> StorageOptions {
        StorageOptions {
            segment_bytes: 1 << 20,
            check_payload: None,
            ..StorageOptions::default()
        }
    }

    /// A data dir whose stable file holds `hard_state` and whose log holds
    /// entries 1..=5 of `log_term`, synced.
    fn data_dir(hard_state: HardState, log_term: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut storage = Storage::open(dir.path(), options()).expect("open");
        storage.finish_recovery().expect("finish");
        storage.set_hard_state(hard_state).expect("stable");
        let entries: Vec<Entry> = (1..=5)
            .map(|index| Entry {
                index,
                term: log_term,
                kind: EntryKind::Noop,
                data: Vec::new().into_iter().collect(),
            })
            .collect();
        storage.append(&entries).expect("append");
        storage.sync().expect("sync");
        dir
    }

    fn write_snapshot(data_dir: &Path, index: u64, term: u64) {
        let meta = SnapshotMeta {
            index,
            term,
            voters: vec![1, 2, 3],
            learners: Vec::new(),
        };
        let dir = snapshot::snapshot_dir(data_dir);
        let mut writer = SnapshotWriter::create(&dir, &meta).expect("writer");
        KvStore::new()
            .snapshot_view()
            .write_to(&mut writer)
            .expect("body");
        writer.finish().expect("publish");
    }

    /// A node removed while it was down hears the leader's term first in
    /// the InstallSnapshot the leader answers its pre-vote with (a pre-vote
    /// stores no term), and builds before this one published a received
    /// snapshot before the core stepped its message and stored that term.
    /// Killed in between, such a node must still start (with this build
    /// too): from where it was, since it never installed the snapshot
    /// (installing stores the term first).
    #[test]
    fn a_received_snapshot_above_the_stored_term_was_never_installed_and_is_passed_over() {
        let dir = data_dir(HardState { term: 6, vote: 1 }, 6);
        write_snapshot(dir.path(), 20, 7);
        let storage = Storage::open(dir.path(), options()).expect("reopen");
        let checked = match check(dir.path(), &storage) {
            Ok(checked) => checked,
            Err(err) => panic!("start refused: {err}"),
        };
        assert_eq!(checked.snapshot_index(), 0);
        assert_eq!(checked.plan, LogPlan::Keep { from: 1 });
        assert!(checked.passed_over.is_empty());
    }

    /// A stable file lost after a snapshot was installed (the log emptied)
    /// still stops the start, and the error names the file and the snapshot.
    #[test]
    fn a_missing_stable_file_beside_an_installed_snapshot_is_still_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut storage = Storage::open(dir.path(), options()).expect("open");
            storage.finish_recovery().expect("finish");
            storage
                .set_hard_state(HardState { term: 7, vote: 0 })
                .expect("stable");
            storage.reset(21).expect("reset");
        }
        write_snapshot(dir.path(), 20, 7);
        std::fs::remove_file(dir.path().join(crate::storage::STABLE_FILE)).expect("remove");
        let storage = Storage::open(dir.path(), options()).expect("reopen");
        let err = match check(dir.path(), &storage) {
            Ok(_) => panic!("a start without its stable file was taken"),
            Err(err) => err.to_string(),
        };
        let stable = dir.path().join(crate::storage::STABLE_FILE);
        assert!(
            err.contains(&format!("{} is missing", stable.display()))
                && err.contains("00000000000000000020-00000000000000000007.snap"),
            "{err}"
        );
    }

    /// With the segments deleted as well as the stable file, nothing but
    /// the snapshot shows what the node held: passed over as never
    /// installed, it left the node empty at term 0, a silent reset (found
    /// by hand: a one-node cluster restarted with none of its keys).
    #[test]
    fn a_missing_stable_file_beside_a_snapshot_and_no_log_is_refused() {
        let dir = data_dir(HardState { term: 7, vote: 1 }, 7);
        write_snapshot(dir.path(), 3, 7);
        let log_dir = dir.path().join("log");
        for segment in std::fs::read_dir(&log_dir).expect("log dir") {
            std::fs::remove_file(segment.expect("entry").path()).expect("remove a segment");
        }
        let stable = dir.path().join(crate::storage::STABLE_FILE);
        std::fs::remove_file(&stable).expect("remove");
        let storage = Storage::open(dir.path(), options()).expect("reopen");
        let err = match check(dir.path(), &storage) {
            Ok(_) => panic!("a start with neither its stable file nor its log was taken"),
            Err(err) => err.to_string(),
        };
        assert!(
            err.contains(&format!("{} is missing", stable.display()))
                && err.contains("00000000000000000003-00000000000000000007.snap"),
            "{err}"
        );
    }

    /// What the stable file's term is checked for still holds: entries of a
    /// term above it mean a missing or stale stable file.
    #[test]
    fn a_log_above_the_stored_term_is_still_refused() {
        let dir = data_dir(HardState { term: 6, vote: 1 }, 6);
        write_snapshot(dir.path(), 3, 6);
        let stable = dir.path().join(crate::storage::STABLE_FILE);
        let older = data_dir(HardState { term: 5, vote: 1 }, 5);
        std::fs::copy(older.path().join(crate::storage::STABLE_FILE), &stable).expect("copy");
        let storage = Storage::open(dir.path(), options()).expect("reopen");
        let err = match check(dir.path(), &storage) {
            Ok(_) => panic!("a stable file behind the log was taken"),
            Err(err) => err.to_string(),
        };
        assert!(
            err.contains("holds term 5, below term 6") && !err.contains("missing"),
            "{err}"
        );
    }
}
