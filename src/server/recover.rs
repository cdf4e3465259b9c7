//! Startup: the newest valid snapshot, then the log after it (SPEC §4).
//!
//! A newest snapshot that fails its checks is passed over with a warning
//! (by `storage::snapshot::load_latest`) only if the previous one plus the
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
use crate::raft::{Restored, SnapshotMeta};
use crate::recovery::{plan_log, LogPlan};
use crate::storage::snapshot::{self, load_latest, parse_path, remove_temp_files};
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
    /// Snapshots newer than the one loaded that failed their check.
    passed_over: Vec<PathBuf>,
    started: Instant,
}

pub(super) struct Recovered {
    pub restored: Restored,
    pub kv: KvStore,
    /// Size of the snapshot file started from (0 without one).
    pub snapshot_bytes: u64,
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
    let loaded =
        load_latest(&dir).map_err(|err| unusable(format!("no valid snapshot: {}", err)))?;
    let mut passed_over = Vec::new();
    let (meta, kv, snapshot_bytes, must_reach) = match loaded {
        None => (SnapshotMeta::default(), KvStore::new(), 0, 0),
        Some(mut loaded) => {
            passed_over = std::mem::take(&mut loaded.skipped);
            let must_reach = passed_over
                .iter()
                .filter_map(|p| parse_path(p))
                .map(|(index, _)| index)
                .max()
                .unwrap_or(0);
            let kv = KvStore::restore_from(&mut loaded.body.as_slice()).map_err(|e| {
                unusable(format!(
                    "snapshot {} does not decode: {}",
                    loaded.path.display(),
                    e
                ))
            })?;
            let bytes = std::fs::metadata(&loaded.path).map_or(0, |m| m.len());
            info!(
                "loaded snapshot {} (index {}, term {}, {} keys) in {} ms",
                loaded.path.display(),
                loaded.meta.index,
                loaded.meta.term,
                kv.len(),
                started.elapsed().as_millis()
            );
            (loaded.meta, kv, bytes, must_reach)
        }
    };
    let (first, last) = (storage.first_index(), storage.last_index());
    // Checked before anything is changed. Every snapshot or entry on disk was
    // written after a stable file with at least its term (`Replica` makes the
    // hard state durable first), so a lower term means a missing or stale
    // stable file. (A snapshot received from a leader is published before
    // the core sees its message, but only by a follower that had already
    // answered that leader in its term, after storing that term.)
    let stable_term = storage.hard_state().term;
    let newest_term = storage.term(last).unwrap_or(0).max(meta.term);
    if stable_term < newest_term {
        return Err(unusable(format!(
            "{} holds term {}, below term {} of the snapshot and log: the stable file is missing or older than the log, and starting from it could vote twice in a term",
            data_dir.join(crate::storage::STABLE_FILE).display(),
            stable_term,
            newest_term
        )));
    }
    let plan = plan_log(&meta, first, last, |i| storage.term(i), must_reach).map_err(unusable)?;
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
pub(super) fn finish(
    data_dir: &Path,
    storage: &mut Storage,
    checked: Checked,
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
    for path in passed_over {
        set_aside(&path);
    }
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
        LogPlan::Keep { from } => storage.entries(from, last + 1)?,
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
        kv,
        snapshot_bytes,
    })
}

/// Renames a snapshot that failed its check to `<name>.broken`, kept for
/// inspection. Left where it was, it counted as one of the two snapshots
/// kept, so the first new snapshot pruned the good one this start used and
/// left a known-bad one as the only fallback.
fn set_aside(path: &Path) {
    let mut broken = path.as_os_str().to_owned();
    broken.push(".broken");
    let broken = PathBuf::from(broken);
    match std::fs::rename(path, &broken) {
        Ok(()) => warn!(
            "moved snapshot {}, which failed its check, to {}; delete it once looked at",
            path.display(),
            broken.display()
        ),
        Err(err) => warn!(
            "could not move snapshot {}, which failed its check, aside: {}",
            path.display(),
            err
        ),
    }
}
