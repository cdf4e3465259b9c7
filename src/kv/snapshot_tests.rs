//! Snapshots of the map: a view is isolated from later writes and lets go
//! of each shard once written, equal maps give equal streams, and restoring
//! refuses damaged streams without panicking. Apart from `tests.rs` so that
//! each reads in one sitting.

use super::tests::{cmd, encoded, snapshot_bytes};
use super::*;
use proptest::prelude::*;

#[test]
fn snapshot_view_is_isolated_from_later_writes() {
    let mut kv = KvStore::with_shards(16);
    for i in 0..100 {
        kv.apply(&cmd(&["SET", &format!("k{}", i), "old"]));
    }
    let view = kv.snapshot_view();
    let digest_before = kv.digest();
    kv.apply(&cmd(&["SET", "k1", "new"]));
    kv.apply(&cmd(&["DEL", "k2"]));
    kv.apply(&cmd(&["SET", "extra", "x"]));
    assert_eq!(view.len(), 100);
    assert_eq!(view.digest(), digest_before);
    assert_ne!(kv.digest(), digest_before);
    let mut bytes = Vec::new();
    view.write_to(&mut bytes).unwrap();
    let restored = KvStore::restore_from(&mut bytes.as_slice()).unwrap();
    assert_eq!(restored.get(b"k1"), Some(&b"old"[..]));
    assert_eq!(restored.digest(), digest_before);
}

#[test]
fn snapshot_is_send_and_static() {
    fn check<T: Send + 'static>(_: &T) {}
    let view = KvStore::new().snapshot_view();
    check(&view);
    let handle = std::thread::spawn(move || {
        let mut out = Vec::new();
        view.write_to(&mut out).map(|_| out.len())
    });
    // Magic, count, no timeouts, the clock, end marker.
    assert_eq!(handle.join().unwrap().unwrap(), 8 + 8 + 8 + 8 + 8);
}

#[test]
fn snapshot_bytes_do_not_depend_on_history() {
    // Two shards put hundreds of keys in each, so the order within a shard is
    // what is tested there.
    for shards in [crate::kv::DEFAULT_SHARD_COUNT, 2] {
        let mut forward = KvStore::with_shards(shards);
        let mut backward = KvStore::with_shards(shards);
        for i in 0..500 {
            forward.apply(&cmd(&["SET", &format!("key{}", i), &i.to_string()]));
            backward.apply(&cmd(&[
                "SET",
                &format!("key{}", 499 - i),
                &(499 - i).to_string(),
            ]));
            backward.apply(&cmd(&["SET", &format!("tmp{}", i), "x"]));
        }
        for i in 0..500 {
            backward.apply(&cmd(&["DEL", &format!("tmp{}", i)]));
        }
        assert_eq!(forward.digest(), backward.digest());
        assert_eq!(snapshot_bytes(&forward), snapshot_bytes(&backward));
        let restored =
            KvStore::restore_from_with_shards(&mut snapshot_bytes(&forward).as_slice(), shards)
                .unwrap();
        assert_eq!(snapshot_bytes(&restored), snapshot_bytes(&forward));
        assert_eq!(restored.len(), 500);
        assert_eq!(restored.approx_bytes(), forward.approx_bytes());
        restored.assert_invariants();
    }
}

#[test]
fn restore_rejects_bad_streams() {
    let mut kv = KvStore::new();
    kv.apply(&cmd(&["MSET", "a", "1", "b", "2"]));
    let good = snapshot_bytes(&kv);
    for cut in 0..good.len() {
        assert!(
            KvStore::restore_from(&mut &good[..cut]).is_err(),
            "cut at {}",
            cut
        );
    }
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    assert!(KvStore::restore_from(&mut bad_magic.as_slice()).is_err());
    // A huge declared count or length fails on the missing bytes, without allocating them.
    let mut huge = good[..8].to_vec();
    huge.extend_from_slice(&u64::MAX.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    huge.extend_from_slice(b"short");
    assert!(KvStore::restore_from(&mut huge.as_slice()).is_err());
    // The same record twice.
    let mut dup = good[..8].to_vec();
    dup.extend_from_slice(&2u64.to_le_bytes());
    for _ in 0..2 {
        dup.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, b'a', b'1']);
    }
    dup.extend_from_slice(b"RKVSEND.");
    let err = KvStore::restore_from(&mut dup.as_slice()).err().unwrap();
    assert!(err.0.contains("duplicate"), "{}", err);
    // Trailing bytes are left for the caller (e.g. a CRC after the stream).
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"CRC!");
    let mut reader = trailing.as_slice();
    assert!(KvStore::restore_from(&mut reader).is_ok());
    assert_eq!(reader, b"CRC!");
}

#[test]
fn large_values_round_trip_through_snapshot() {
    let mut kv = KvStore::new();
    let big = vec![7u8; 200_000];
    let set = Command::Set(b"big".to_vec(), big.clone());
    assert_eq!(kv.apply_encoded(&encoded(&set)), Ok(Reply::Ok));
    let restored = KvStore::restore_from(&mut snapshot_bytes(&kv).as_slice()).unwrap();
    assert_eq!(restored.get(b"big"), Some(big.as_slice()));
}

proptest! {
    #[test]
    fn restore_never_panics(junk in prop::collection::vec(any::<u8>(), 0..80), keep_magic in any::<bool>()) {
        let mut input = if keep_magic { b"RKVSNAP1".to_vec() } else { Vec::new() };
        input.extend_from_slice(&junk);
        let _ = KvStore::restore_from(&mut input.as_slice());
    }
}

#[test]
fn overwrites_in_place_or_resized_leave_a_view_untouched() {
    let mut kv = KvStore::with_shards(1);
    kv.apply(&cmd(&[
        "MSET", "same", "aaa", "grow", "b", "shrink", "cccccc", "n", "9",
    ]));
    let view = kv.snapshot_view();
    let before = view.digest();
    kv.apply(&cmd(&[
        "MSET",
        "same",
        "xyz",
        "grow",
        "bbbbbbbbbb",
        "shrink",
        "c",
    ]));
    kv.apply(&cmd(&["INCR", "n"]));
    let long = "v".repeat(300);
    kv.apply(&cmd(&["SET", "same", &long]));
    assert_eq!(view.digest(), before);
    let mut bytes = Vec::new();
    view.write_to(&mut bytes).unwrap();
    let restored = KvStore::restore_from(&mut bytes.as_slice()).unwrap();
    assert_eq!(restored.get(b"same"), Some(&b"aaa"[..]));
    assert_eq!(restored.get(b"n"), Some(&b"9"[..]));
    assert_eq!(kv.get(b"same"), Some(long.as_bytes()));
    assert_eq!(kv.get(b"grow"), Some(&b"bbbbbbbbbb"[..]));
    assert_eq!(kv.get(b"shrink"), Some(&b"c"[..]));
    assert_eq!(kv.get(b"n"), Some(&b"10"[..]));
    kv.assert_invariants();
}

/// A writer that, at its first write, counts how many of the store's shards
/// the view still holds (a strong count of 3: store, view, `probe`).
struct CountHeldAtFirstWrite {
    probe: Vec<std::sync::Arc<super::shards::Shard>>,
    held_at_first_write: Option<usize>,
}

impl std::io::Write for CountHeldAtFirstWrite {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.held_at_first_write.is_none() {
            let held = self
                .probe
                .iter()
                .filter(|shard| std::sync::Arc::strong_count(shard) == 3)
                .count();
            self.held_at_first_write = Some(held);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn writing_a_view_lets_go_of_each_shard_once_written() {
    let mut kv = KvStore::with_shards(8);
    for i in 0..2000 {
        kv.apply(&cmd(&["SET", &format!("key{}", i), &"v".repeat(100)]));
    }
    let view = kv.snapshot_view();
    let mut writer = CountHeldAtFirstWrite {
        probe: kv.map.shards().to_vec(),
        held_at_first_write: None,
    };
    view.write_to(&mut writer).unwrap();
    // 230 kB of records: the first 64 kB piece leaves once a few shards
    // are written, and those are no longer held; the rest still are.
    let held = writer.held_at_first_write;
    assert!(held.is_some_and(|held| held > 0 && held < 8), "{:?}", held);
    assert!(writer
        .probe
        .iter()
        .all(|shard| std::sync::Arc::strong_count(shard) == 2));
}
