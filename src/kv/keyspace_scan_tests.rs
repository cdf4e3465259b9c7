//! KEYS and SCAN: patterns, the reply budget, cursors that survive writes,
//! restores and emptied maps, how they parse, and their refusal in
//! transactions that write. Apart from `keyspace_tests.rs` so that each
//! reads in one sitting.

use super::command::MAX_PATTERN_BYTES;
use super::tests::{bulk, cmd, err, parse_error};
use super::*;
use std::collections::BTreeSet;

pub(super) fn keys_of(reply: Reply) -> BTreeSet<Vec<u8>> {
    let Reply::Array(keys) = reply else {
        panic!("not an array: {reply:?}");
    };
    let mut found = BTreeSet::new();
    for key in keys {
        let Reply::Bulk(key) = key else {
            panic!("not a bulk string: {key:?}");
        };
        assert!(found.insert(key.clone()), "{key:?} returned twice");
    }
    found
}

fn set_of(keys: &[&str]) -> BTreeSet<Vec<u8>> {
    keys.iter().map(|k| k.as_bytes().to_vec()).collect()
}

/// One SCAN call: the cursor it gives back and its keys.
fn scan(kv: &KvStore, words: &[&str]) -> (String, Vec<Reply>) {
    let mut argv = vec!["SCAN"];
    argv.extend_from_slice(words);
    match kv.read(&cmd(&argv)) {
        Reply::Array(mut parts) if parts.len() == 2 => {
            let keys = match parts.pop() {
                Some(Reply::Array(keys)) => keys,
                other => panic!("SCAN's keys: {other:?}"),
            };
            match parts.pop() {
                Some(Reply::Bulk(cursor)) => (String::from_utf8(cursor).expect("digits"), keys),
                other => panic!("SCAN's cursor: {other:?}"),
            }
        }
        other => panic!("SCAN answered {other:?}"),
    }
}

/// A whole SCAN iteration from cursor 0, calling `between` after each call.
fn scan_all(
    kv: &mut KvStore,
    options: &[&str],
    mut between: impl FnMut(&mut KvStore),
) -> BTreeSet<Vec<u8>> {
    let mut cursor = "0".to_string();
    let mut found = BTreeSet::new();
    for _ in 0..1_000_000 {
        let mut words = vec![cursor.as_str()];
        words.extend_from_slice(options);
        let (next, keys) = scan(kv, &words);
        for key in keys_of(Reply::Array(keys)) {
            assert!(found.insert(key.clone()), "{key:?} returned by two calls");
        }
        between(kv);
        if next == "0" {
            return found;
        }
        cursor = next;
    }
    panic!("SCAN never came back to cursor 0");
}

#[test]
fn keys_matches_patterns() {
    let mut kv = KvStore::with_shards(16);
    kv.apply(&cmd(&[
        "MSET", "user:1", "a", "user:2", "b", "order:1", "c",
    ]));
    assert_eq!(
        keys_of(kv.read(&cmd(&["KEYS", "*"]))),
        set_of(&["user:1", "user:2", "order:1"])
    );
    assert_eq!(
        keys_of(kv.read(&cmd(&["KEYS", "user:*"]))),
        set_of(&["user:1", "user:2"])
    );
    assert_eq!(
        keys_of(kv.read(&cmd(&["KEYS", "*:[1]"]))),
        set_of(&["user:1", "order:1"])
    );
    assert_eq!(keys_of(kv.read(&cmd(&["KEYS", "nothing*"]))), set_of(&[]));
}

#[test]
fn keys_past_the_reply_budget_is_an_error() {
    let mut kv = KvStore::with_shards(16);
    kv.apply(&cmd(&["MSET", "aaaa", "1", "bbbb", "2"]));
    // Each key costs its bytes and its element of the reply.
    let both = 2 * (4 + std::mem::size_of::<Reply>());
    kv.set_max_reply_value_bytes(both - 1);
    assert_eq!(
        kv.read(&cmd(&["KEYS", "*"])),
        err(&format!(
            "ERR reply exceeds the limit of {} bytes of values",
            both - 1
        ))
    );
    kv.set_max_reply_value_bytes(both);
    assert_eq!(keys_of(kv.read(&cmd(&["KEYS", "*"]))).len(), 2);
}

#[test]
fn scan_returns_every_key_once_and_ends_at_cursor_zero() {
    let mut kv = KvStore::with_shards(64);
    let keys: Vec<String> = (0..500).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        kv.apply(&cmd(&["SET", key, "v"]));
    }
    let all: BTreeSet<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
    assert_eq!(scan_all(&mut kv, &[], |_| {}), all);
    assert_eq!(scan_all(&mut kv, &["COUNT", "1"], |_| {}), all);
    assert_eq!(scan_all(&mut kv, &["COUNT", "100000"], |_| {}), all);
    // With COUNT 10 over 64 shards of about 8 keys, a call returns whole
    // shards: at least 10 keys, far fewer than all of them.
    let (cursor, first) = scan(&kv, &["0"]);
    assert_ne!(cursor, "0");
    assert!((10..100).contains(&first.len()), "{} keys", first.len());
}

#[test]
fn scan_returns_keys_present_throughout_despite_writes_between_calls() {
    let mut kv = KvStore::with_shards(64);
    for i in 0..300 {
        kv.apply(&cmd(&["SET", &format!("stays:{i}"), "v"]));
        kv.apply(&cmd(&["SET", &format!("goes:{i}"), "v"]));
    }
    let mut step = 0;
    let found = scan_all(&mut kv, &["COUNT", "7"], |kv| {
        // Between calls: delete old keys and add many new ones.
        for _ in 0..20 {
            kv.apply(&cmd(&["DEL", &format!("goes:{step}")]));
            kv.apply(&cmd(&["SET", &format!("new:{step}"), "v"]));
            step += 1;
        }
    });
    for i in 0..300 {
        assert!(
            found.contains(format!("stays:{i}").as_bytes()),
            "stays:{i} missed"
        );
    }
}

#[test]
fn scan_match_type_and_cursor_past_the_end() {
    let mut kv = KvStore::with_shards(8);
    kv.apply(&cmd(&["MSET", "a:1", "x", "a:2", "x", "b:1", "x"]));
    assert_eq!(
        scan_all(&mut kv, &["MATCH", "a:*", "COUNT", "1000"], |_| {}),
        set_of(&["a:1", "a:2"])
    );
    assert_eq!(
        scan_all(&mut kv, &["TYPE", "STRING"], |_| {}),
        set_of(&["a:1", "a:2", "b:1"])
    );
    assert_eq!(scan_all(&mut kv, &["TYPE", "hash"], |_| {}), set_of(&[]));
    assert_eq!(scan(&kv, &["8"]), ("0".to_string(), vec![]));
    assert_eq!(
        scan(&kv, &["18446744073709551615"]),
        ("0".to_string(), vec![])
    );
}

#[test]
fn scan_and_keys_parse_as_redis() {
    assert_eq!(parse_error(&["SCAN", "x"]), "ERR invalid cursor");
    assert_eq!(parse_error(&["SCAN", " 1"]), "ERR invalid cursor");
    assert_eq!(parse_error(&["SCAN", "-"]), "ERR invalid cursor");
    // As strtoul reads them: a sign, and nothing at all as 0.
    let cursor = |word: &str| match cmd(&["SCAN", word]) {
        Command::Scan(scan) => scan.cursor,
        other => panic!("{other:?}"),
    };
    assert_eq!(cursor(""), 0);
    assert_eq!(cursor("+7"), 7);
    assert_eq!(cursor("-1"), u64::MAX);
    assert_eq!(cursor("18446744073709551615"), u64::MAX);
    assert_eq!(
        parse_error(&["SCAN", "18446744073709551616"]),
        "ERR invalid cursor"
    );
    assert_eq!(
        parse_error(&["SCAN", "0", "COUNT", "0"]),
        "ERR syntax error"
    );
    assert_eq!(
        parse_error(&["SCAN", "0", "COUNT", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(parse_error(&["SCAN", "0", "MATCH"]), "ERR syntax error");
    assert_eq!(
        parse_error(&["SCAN", "0", "LIMIT", "1"]),
        "ERR syntax error"
    );
    assert_eq!(
        parse_error(&["SCAN"]),
        "ERR wrong number of arguments for 'scan' command"
    );
    assert_eq!(
        parse_error(&["KEYS", &"*".repeat(MAX_PATTERN_BYTES + 1)]),
        "ERR pattern longer than 4096 bytes"
    );
    assert_eq!(
        cmd(&["scan", "7", "match", "*", "count", "3"]),
        Command::Scan(ScanOptions {
            cursor: 7,
            pattern: None,
            count: 3,
            other_type: false
        })
    );
}

#[test]
fn costly_patterns_get_an_error_not_unbounded_work() {
    let mut kv = KvStore::with_shards(16);
    for i in 0..2000 {
        kv.apply(&cmd(&["SET", &format!("{i:0100}"), "v"]));
    }
    let costly = format!("*{}b", "?".repeat(90));
    let refused = err("ERR pattern too costly to match against these keys: use a simpler one");
    assert_eq!(kv.read(&cmd(&["KEYS", &costly])), refused);
    assert_eq!(
        kv.read(&cmd(&["SCAN", "0", "MATCH", &costly, "COUNT", "100000"])),
        refused
    );
    // A long set costs its length at each byte, matched or not.
    let long_set = format!("*[{}]", "x".repeat(4000));
    assert_eq!(kv.read(&cmd(&["KEYS", &long_set])), refused);
    // Patterns of ordinary cost are answered over the same keys.
    assert_eq!(keys_of(kv.read(&cmd(&["KEYS", "*9?"]))).len(), 200);
    assert_eq!(keys_of(kv.read(&cmd(&["KEYS", "0*[0-9]*1"]))).len(), 200);
}

#[test]
fn scan_of_an_emptied_map_takes_a_few_bounded_calls() {
    let mut kv = KvStore::new();
    for i in 0..100_000 {
        kv.apply(&cmd(&["SET", &i.to_string(), "v"]));
    }
    for i in 1..100_000 {
        kv.apply(&cmd(&["DEL", &i.to_string()]));
    }
    let mut cursors = Vec::new();
    let mut cursor = "0".to_string();
    let mut found = Vec::new();
    loop {
        let (next, keys) = scan(&kv, &[&cursor]);
        found.extend(keys);
        cursors.push(next.clone());
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(found, vec![bulk("0")]);
    // Each call looks at 16,384 emptied shards, and passes over the shards
    // these keys never reached (about a fifth) besides.
    assert_eq!(cursors.len(), 4, "{cursors:?}");
    assert_eq!(cursors.last().map(String::as_str), Some("0"));
    let first: usize = cursors[0].parse().expect("a cursor");
    assert!((16_384..24_576).contains(&first), "{cursors:?}");
    // Shards never written cost no call: a flushed or fresh keyspace is
    // done in one, as in Redis.
    kv.apply(&cmd(&["FLUSHALL"]));
    assert_eq!(scan(&kv, &["0"]), ("0".to_string(), Vec::new()));
    assert_eq!(scan(&KvStore::new(), &["0"]), ("0".to_string(), Vec::new()));
    let mut sparse = KvStore::new();
    sparse.apply(&cmd(&["SET", "only", "v"]));
    assert_eq!(
        scan(&sparse, &["0", "COUNT", "1000"]),
        ("0".to_string(), vec![bulk("only")])
    );
}

#[test]
fn scan_goes_on_over_a_map_restored_from_a_snapshot() {
    // A new leader holds the same keys in a map of another history: restored
    // from a snapshot, its tables filled in another order.
    let mut kv = KvStore::with_shards(64);
    for i in 0..1000 {
        kv.apply(&cmd(&["SET", &format!("key:{i}"), "v"]));
    }
    let (cursor, first) = scan(&kv, &["0", "COUNT", "100"]);
    let mut bytes = Vec::new();
    kv.snapshot_view()
        .write_to(&mut bytes)
        .expect("Vec never fails");
    let restored = KvStore::restore_from_with_shards(&mut &bytes[..], 64).expect("restores");
    let mut found = keys_of(Reply::Array(first));
    let rest = {
        let mut cursor = cursor;
        let mut rest = BTreeSet::new();
        while cursor != "0" {
            let (next, keys) = scan(&restored, &[&cursor, "COUNT", "100"]);
            rest.extend(keys_of(Reply::Array(keys)));
            cursor = next;
        }
        rest
    };
    for key in rest {
        assert!(found.insert(key.clone()), "{key:?} returned twice");
    }
    assert_eq!(found.len(), 1000);
    restored.assert_invariants();
}

#[test]
fn transactions_that_write_refuse_reads_of_many_keys() {
    let refused = Command::Invalid(
        "ERR KEYS, and SCAN with a COUNT over 10000, are not allowed in a transaction that writes"
            .into(),
    );
    let writing = Command::transaction(vec![
        cmd(&["SET", "a", "1"]),
        cmd(&["KEYS", "*"]),
        cmd(&["SCAN", "0", "COUNT", "10000"]),
        cmd(&["SCAN", "0", "COUNT", "10001"]),
    ]);
    assert_eq!(
        writing,
        Command::Multi(vec![
            cmd(&["SET", "a", "1"]),
            refused.clone(),
            cmd(&["SCAN", "0", "COUNT", "10000"]),
            refused,
        ])
    );
    let reading = vec![cmd(&["GET", "a"]), cmd(&["KEYS", "*"])];
    assert_eq!(
        Command::transaction(reading.clone()),
        Command::Multi(reading)
    );
    assert!(Command::transaction(vec![cmd(&["KEYS", "*"])]).reads_many_keys());
    assert!(!cmd(&["SCAN", "0", "COUNT", "10000"]).reads_many_keys());
}
