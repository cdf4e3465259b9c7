//! Payloads: a record written whole (its CRC matches) whose payload is not
//! one its kind can have is corruption, found as the log is opened.

use super::{all_entries, build, open, options, segment_files, tempdir, SEG};
use raftkv::raft::{Entry, EntryKind};
use raftkv::storage::record;
use raftkv::storage::{Storage, StorageOptions};

#[test]
fn payload_that_does_not_decode_is_an_error_naming_the_record() {
    use raftkv::kv::Command;
    let mut set = Vec::new();
    Command::Set(b"k".to_vec(), b"v".to_vec()).encode(&mut set);
    for kind in [EntryKind::ConfChange, EntryKind::Normal] {
        let dir = tempdir();
        let log = [
            Entry {
                index: 1,
                term: 1,
                kind: EntryKind::Normal,
                data: set.clone().into(),
            },
            Entry {
                index: 2,
                term: 1,
                kind,
                data: vec![0x01, 0x09].into(),
            },
        ];
        build(dir.path(), SEG, &log);
        let checked = StorageOptions {
            check_payload: Some(raftkv::recovery::check_payload),
            ..options(SEG)
        };
        let message = match Storage::open(dir.path(), checked) {
            Ok(_) => panic!("{:?} entry 2 with payload 01 09 was accepted", kind),
            Err(err) => err.to_string(),
        };
        let newest = segment_files(dir.path()).pop().expect("a segment");
        let at = format!("at offset {}", record::encoded_len(set.len()));
        assert!(
            message.contains(&newest.display().to_string()) && message.contains(&at),
            "{}",
            message
        );
        // Without a check (the default) storage takes any payload.
        assert_eq!(all_entries(&open(dir.path(), SEG)), log);
    }
}
