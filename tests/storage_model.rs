//! Storage against a model: random appends (some overlapping the tail, so
//! they truncate), syncs, prefix drops, resets and reopens, with small
//! segments so that rollover, oversized records and multi-segment truncation
//! all happen. After every step, every read must match a plain `Vec` model.
//!
//! `drop_before` deletes whole segments only, and the model does not know
//! where segments end, so after it the model adopts the storage's new first
//! index once that index is checked to be allowed: not below the old one,
//! not above the requested one, and not past the log's end.

use proptest::prelude::*;
use raftkv::raft::{Entry, EntryKind};
use raftkv::storage::{Storage, StorageOptions};
use std::path::Path;

const SEGMENT_BYTES: u64 = 600;

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries starting `back` entries before the next index.
    Append {
        back: u64,
        count: usize,
        payload: usize,
    },
    Sync,
    /// `drop_before(first_index + ahead)`.
    DropBefore {
        ahead: u64,
    },
    /// `reset(max(1, next index + shift))`.
    Reset {
        shift: i64,
    },
    Reopen {
        sync_first: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u64..6, 1usize..8, prop_oneof![9 => 0usize..100, 1 => 600usize..900])
            .prop_map(|(back, count, payload)| Op::Append { back, count, payload }),
        2 => Just(Op::Sync),
        2 => (0u64..40).prop_map(|ahead| Op::DropBefore { ahead }),
        1 => (-10i64..10).prop_map(|shift| Op::Reset { shift }),
        2 => any::<bool>().prop_map(|sync_first| Op::Reopen { sync_first }),
    ]
}

/// The log as a first index and the entries from there on.
struct Model {
    first: u64,
    entries: Vec<Entry>,
}

impl Model {
    fn last(&self) -> u64 {
        self.first + self.entries.len() as u64 - 1
    }
}

fn entry(index: u64, term: u64, payload: usize) -> Entry {
    let kind = match index % 7 {
        0 => EntryKind::Noop,
        1 => EntryKind::ConfChange,
        _ => EntryKind::Normal,
    };
    Entry {
        index,
        term,
        kind,
        data: (0..payload)
            .map(|k| (index as usize * 131 + term as usize * 17 + k) as u8)
            .collect(),
    }
}

fn open(dir: &Path) -> Storage {
    let options = StorageOptions {
        segment_bytes: SEGMENT_BYTES,
        ..StorageOptions::default()
    };
    match Storage::open(dir, options) {
        Ok(mut storage) => {
            storage.finish_recovery().expect("finish recovery");
            storage
        }
        Err(err) => panic!("reopen failed: {}", err),
    }
}

fn check(storage: &Storage, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(storage.first_index(), model.first);
    prop_assert_eq!(storage.last_index(), model.last());
    let lo = model.first.saturating_sub(2);
    for index in lo..=model.last() + 2 {
        let want = index
            .checked_sub(model.first)
            .and_then(|k| model.entries.get(k as usize))
            .map(|e| e.term);
        prop_assert_eq!(storage.term(index), want, "term({})", index);
    }
    let all = storage
        .entries(model.first, model.last() + 1)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&all, &model.entries);
    if model.entries.len() > 2 {
        let (a, b) = (model.first + 1, model.last());
        let some = storage
            .entries(a, b)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&some[..], &model.entries[1..model.entries.len() - 1]);
    }
    Ok(())
}

/// Applies `op` and returns the storage (a new one after `Reopen`).
fn apply(
    mut storage: Storage,
    model: &mut Model,
    dir: &Path,
    step: u64,
    op: &Op,
) -> Result<Storage, TestCaseError> {
    match *op {
        Op::Append {
            back,
            count,
            payload,
        } => {
            let next = model.last() + 1;
            let start = next - back.min(model.entries.len() as u64);
            let batch: Vec<Entry> = (0..count as u64)
                .map(|k| entry(start + k, step, payload + k as usize))
                .collect();
            storage
                .append(&batch)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            model.entries.truncate((start - model.first) as usize);
            model.entries.extend(batch);
        }
        Op::Sync => storage
            .sync()
            .map_err(|e| TestCaseError::fail(e.to_string()))?,
        Op::DropBefore { ahead } => {
            let index = model.first + ahead;
            storage
                .drop_before(index)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let first = storage.first_index();
            prop_assert!(first >= model.first, "drop_before moved first back");
            prop_assert!(
                first <= index.max(model.first),
                "drop_before({}) dropped up to {}",
                index,
                first
            );
            prop_assert!(first <= model.last() + 1, "drop_before emptied the log");
            let dropped = (first - model.first) as usize;
            model.entries.drain(..dropped);
            model.first = first;
        }
        Op::Reset { shift } => {
            let next = ((model.last() + 1) as i64 + shift).max(1) as u64;
            storage
                .reset(next)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            model.first = next;
            model.entries.clear();
        }
        Op::Reopen { sync_first } => {
            if sync_first {
                storage
                    .sync()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            // Unsynced records are in the page cache, so a process-level
            // reopen sees them either way, as after `kill -9`. The old
            // storage goes first, as a process does: it holds the data
            // dir's lock.
            drop(storage);
            storage = open(dir);
        }
    }
    Ok(storage)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn storage_matches_model(ops in prop::collection::vec(op(), 1..30)) {
        let tmp = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut storage = open(tmp.path());
        let mut model = Model { first: 1, entries: Vec::new() };
        check(&storage, &model)?;
        for (step, op) in ops.iter().enumerate() {
            storage = apply(storage, &mut model, tmp.path(), step as u64 + 1, op)?;
            check(&storage, &model)?;
        }
        storage.sync().map_err(|e| TestCaseError::fail(e.to_string()))?;
        drop(storage);
        check(&open(tmp.path()), &model)?;
    }
}
