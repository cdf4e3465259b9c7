//! The map's core commands (SET and its options, GET, GETRANGE, DEL,
//! EXISTS, MSET, INCR, MULTI), the reply budget, the digest and encoded
//! payloads; and the helpers the other kv test files import. Snapshots of
//! the map are tested in `snapshot_tests.rs`.

use super::*;
use proptest::prelude::*;

pub(super) fn cmd(words: &[&str]) -> Command {
    Command::parse(
        &words
            .iter()
            .map(|w| w.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|e| panic!("{:?} does not parse: {}", words, e))
}

/// The error text `Command::parse` gives for these words.
pub(super) fn parse_error(words: &[&str]) -> String {
    let argv: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
    match Command::parse(&argv) {
        Ok(command) => panic!("{words:?} parses as {command:?}"),
        Err(error) => error.to_string(),
    }
}

pub(super) fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}

pub(super) fn err(s: &str) -> Reply {
    Reply::Error(s.to_string())
}

pub(super) fn snapshot_bytes(store: &KvStore) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .snapshot_view()
        .write_to(&mut out)
        .expect("Vec never fails");
    out
}

#[test]
fn set_options_nx_xx_get_as_in_redis() {
    let mut kv = KvStore::new();
    let mut run = |words: &[&str]| kv.apply(&cmd(words));
    assert_eq!(run(&["SET", "k", "1", "XX"]), Reply::Nil);
    assert_eq!(run(&["SET", "k", "1", "XX", "GET"]), Reply::Nil);
    assert_eq!(run(&["GET", "k"]), Reply::Nil, "XX wrote an absent key");
    assert_eq!(run(&["SET", "k", "1", "nx"]), Reply::Ok);
    assert_eq!(run(&["SET", "k", "2", "NX"]), Reply::Nil);
    assert_eq!(run(&["SET", "k", "2", "NX", "GET"]), bulk("1"));
    assert_eq!(run(&["GET", "k"]), bulk("1"), "NX overwrote");
    assert_eq!(run(&["SET", "k", "3", "XX"]), Reply::Ok);
    assert_eq!(run(&["SET", "k", "4", "GET", "KEEPTTL"]), bulk("3"));
    assert_eq!(run(&["SET", "new", "a", "GET"]), Reply::Nil);
    assert_eq!(run(&["GET", "new"]), bulk("a"));
    assert_eq!(run(&["GETSET", "k", "5"]), bulk("4"));
    assert_eq!(run(&["GETSET", "other", "x"]), Reply::Nil);
    assert_eq!(run(&["SETNX", "k", "6"]), Reply::Integer(0));
    assert_eq!(run(&["SETNX", "fresh", "6"]), Reply::Integer(1));
    assert_eq!(run(&["GET", "k"]), bulk("5"));
    assert_eq!(run(&["GET", "fresh"]), bulk("6"));
    assert_eq!(kv.len(), 4);
    // In a transaction, in order, each seeing the one before.
    let multi = Command::Multi(vec![
        cmd(&["SET", "t", "1", "NX", "GET"]),
        cmd(&["SET", "t", "2", "NX", "GET"]),
        cmd(&["SET", "t", "3", "GET"]),
    ]);
    assert_eq!(
        kv.apply(&multi),
        Reply::Array(vec![Reply::Nil, bulk("1"), bulk("1")])
    );
    assert_eq!(kv.read(&cmd(&["GET", "t"])), bulk("3"));
}

#[test]
fn set_get_past_the_reply_budget_answers_an_error_and_writes_nothing() {
    let mut kv = KvStore::new();
    kv.apply(&cmd(&["SET", "big", "0123456789"]));
    kv.set_max_reply_value_bytes(4);
    let refused = kv.apply(&cmd(&["SET", "big", "small", "GET"]));
    assert!(matches!(refused, Reply::Error(_)), "{refused:?}");
    kv.set_max_reply_value_bytes(1 << 20);
    assert_eq!(kv.read(&cmd(&["GET", "big"])), bulk("0123456789"));
    // In a transaction, the budget is what the replies before it left.
    kv.set_max_reply_value_bytes(12);
    let multi = Command::Multi(vec![
        cmd(&["GET", "big"]),
        cmd(&["SET", "big", "small", "GET"]),
        cmd(&["SET", "other", "x", "GET"]),
    ]);
    match kv.apply(&multi) {
        Reply::Array(replies) => {
            assert_eq!(replies[0], bulk("0123456789"));
            assert!(matches!(replies[1], Reply::Error(_)), "{:?}", replies[1]);
            assert_eq!(replies[2], Reply::Nil);
        }
        other => panic!("EXEC answered {other:?}"),
    }
    kv.set_max_reply_value_bytes(1 << 20);
    assert_eq!(kv.read(&cmd(&["GET", "big"])), bulk("0123456789"));
    assert_eq!(kv.read(&cmd(&["GET", "other"])), bulk("x"));
}

/// GETRANGE as Redis 7.0 answers it (checked byte for byte against
/// redis-server 7.0.15 over every start and end in -20..=20 and the extremes,
/// on a value, an empty one and a missing key).
#[test]
fn getrange_picks_bytes_as_redis_does() {
    let mut kv = KvStore::new();
    kv.apply(&cmd(&["SET", "s", "This is a string"]));
    for (start, end, expected) in [
        ("0", "3", "This"),
        ("-3", "-1", "ing"),
        ("0", "-1", "This is a string"),
        ("10", "100", "string"),
        ("5", "2", ""),
        ("-1", "-5", ""),
        ("-100", "1", "Th"),
        ("16", "20", ""),
        (
            "-9223372036854775808",
            "9223372036854775807",
            "This is a string",
        ),
    ] {
        assert_eq!(
            kv.read(&cmd(&["GETRANGE", "s", start, end])),
            bulk(expected),
            "GETRANGE s {start} {end}"
        );
    }
    assert_eq!(kv.read(&cmd(&["SUBSTR", "s", "5", "6"])), bulk("is"));
    assert_eq!(
        kv.read(&cmd(&["TOUCH", "s", "s", "none"])),
        Reply::Integer(2),
        "TOUCH counts as EXISTS"
    );
    assert_eq!(kv.read(&cmd(&["GETRANGE", "none", "0", "-1"])), bulk(""));
    assert_eq!(
        parse_error(&["GETRANGE", "s", "0", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        parse_error(&["GETRANGE", "s", "0"]),
        "ERR wrong number of arguments for 'getrange' command"
    );
    assert!(!cmd(&["GETRANGE", "s", "0", "1"]).is_write());
}

#[test]
fn memory_usage_counts_the_entry_and_its_slot() {
    let mut kv = KvStore::new();
    assert_eq!(kv.read(&cmd(&["MEMORY", "USAGE", "k"])), Reply::Nil);
    kv.apply(&cmd(&["SET", "k", "v"]));
    let Reply::Integer(small) = kv.read(&cmd(&["MEMORY", "USAGE", "k"])) else {
        panic!("MEMORY USAGE is not an integer");
    };
    // One malloc chunk of 32 bytes (the smallest) and a 16-byte slot.
    assert_eq!(small, 48);
    kv.apply(&cmd(&["SET", "k", &"x".repeat(100_000)]));
    let Reply::Integer(large) = kv.read(&cmd(&["MEMORY", "USAGE", "k"])) else {
        panic!("MEMORY USAGE is not an integer");
    };
    assert!((100_000..100_100).contains(&large), "{large}");
}

#[test]
fn set_get_del() {
    let mut kv = KvStore::new();
    assert_eq!(kv.apply(&cmd(&["GET", "k"])), Reply::Nil);
    assert_eq!(kv.apply(&cmd(&["SET", "k", "v"])), Reply::Ok);
    assert_eq!(kv.apply(&cmd(&["GET", "k"])), bulk("v"));
    assert_eq!(kv.apply(&cmd(&["SET", "k", "longer value"])), Reply::Ok);
    assert_eq!(kv.read(&cmd(&["GET", "k"])), bulk("longer value"));
    assert_eq!(kv.len(), 1);
    assert_eq!(
        kv.apply(&cmd(&["DEL", "k", "k", "nope"])),
        Reply::Integer(1)
    );
    assert_eq!(kv.apply(&cmd(&["DEL", "k"])), Reply::Integer(0));
    assert!(kv.is_empty());
    kv.assert_invariants();
}

#[test]
fn exists_counts_each_mention() {
    let mut kv = KvStore::new();
    kv.apply(&cmd(&["MSET", "a", "1", "b", "2"]));
    assert_eq!(
        kv.read(&cmd(&["EXISTS", "a", "a", "b", "c"])),
        Reply::Integer(3)
    );
    assert_eq!(kv.read(&cmd(&["EXISTS", "c"])), Reply::Integer(0));
}

#[test]
fn mset_mget() {
    let mut kv = KvStore::new();
    assert_eq!(
        kv.apply(&cmd(&["MSET", "a", "1", "b", "2", "a", "3"])),
        Reply::Ok
    );
    assert_eq!(
        kv.read(&cmd(&["MGET", "a", "x", "b"])),
        Reply::Array(vec![bulk("3"), Reply::Nil, bulk("2")])
    );
    assert_eq!(kv.len(), 2);
    kv.assert_invariants();
}

#[test]
fn incr_family() {
    let mut kv = KvStore::new();
    assert_eq!(kv.apply(&cmd(&["INCR", "n"])), Reply::Integer(1));
    assert_eq!(kv.apply(&cmd(&["INCRBY", "n", "41"])), Reply::Integer(42));
    assert_eq!(kv.apply(&cmd(&["DECRBY", "n", "50"])), Reply::Integer(-8));
    assert_eq!(kv.apply(&cmd(&["DECR", "n"])), Reply::Integer(-9));
    assert_eq!(kv.read(&cmd(&["GET", "n"])), bulk("-9"));
    kv.assert_invariants();
}

#[test]
fn incr_on_non_integer_changes_nothing() {
    let mut kv = KvStore::new();
    for value in ["abc", " 1", "01", "+1", "1.5", "", "99999999999999999999"] {
        kv.apply(&cmd(&["SET", "k", value]));
        assert_eq!(
            kv.apply(&cmd(&["INCR", "k"])),
            err("ERR value is not an integer or out of range"),
            "value {:?}",
            value
        );
        assert_eq!(kv.read(&cmd(&["GET", "k"])), bulk(value));
    }
}

#[test]
fn incr_overflow_changes_nothing() {
    let mut kv = KvStore::new();
    kv.apply(&cmd(&["SET", "k", "9223372036854775807"]));
    assert_eq!(kv.apply(&cmd(&["INCR", "k"])), err(OVERFLOW_ERROR));
    kv.apply(&cmd(&["SET", "m", "-9223372036854775808"]));
    assert_eq!(kv.apply(&cmd(&["DECR", "m"])), err(OVERFLOW_ERROR));
    assert_eq!(kv.read(&cmd(&["GET", "k"])), bulk("9223372036854775807"));
}

#[test]
fn multi_applies_in_order_with_errors_inside() {
    let mut kv = KvStore::new();
    kv.apply(&cmd(&["SET", "s", "text"]));
    let multi = Command::Multi(vec![
        cmd(&["SET", "a", "1"]),
        cmd(&["INCR", "s"]),
        cmd(&["INCR", "a"]),
        Command::parse_queued(&[b"INCRBY".to_vec(), b"a".to_vec(), b"x".to_vec()]).unwrap(),
        cmd(&["GET", "a"]),
        cmd(&["DEL", "s"]),
    ]);
    let expected = Reply::Array(vec![
        Reply::Ok,
        err("ERR value is not an integer or out of range"),
        Reply::Integer(2),
        err("ERR value is not an integer or out of range"),
        bulk("2"),
        Reply::Integer(1),
    ]);
    let mut owned = KvStore::new();
    owned.apply(&cmd(&["SET", "s", "text"]));
    assert_eq!(owned.apply_encoded(&encoded(&multi)), Ok(expected.clone()));
    assert_eq!(kv.apply(&multi), expected);
    assert_eq!(kv.digest(), owned.digest());
    assert_eq!(kv.len(), 1);
}

#[test]
fn read_only_multi_can_be_read() {
    let kv = KvStore::new();
    let multi = Command::Multi(vec![cmd(&["GET", "a"]), cmd(&["EXISTS", "a"])]);
    assert_eq!(
        kv.read(&multi),
        Reply::Array(vec![Reply::Nil, Reply::Integer(0)])
    );
}

#[test]
fn replies_carry_at_most_the_reply_limit_of_values() {
    let mut kv = KvStore::new();
    kv.set_max_reply_value_bytes(25);
    kv.apply(&cmd(&["SET", "ten", "0123456789"]));
    let too_large = err("ERR reply exceeds the limit of 25 bytes of values");
    assert_eq!(
        kv.read(&cmd(&["MGET", "ten", "ten"])),
        Reply::Array(vec![bulk("0123456789"); 2])
    );
    assert_eq!(kv.read(&cmd(&["MGET", "ten", "ten", "ten"])), too_large);
    // In a transaction the reads share one budget; writes still apply.
    let multi = Command::Multi(vec![
        cmd(&["MGET", "ten", "ten"]),
        cmd(&["GET", "ten"]),
        cmd(&["SET", "one", "1"]),
        cmd(&["GET", "one"]),
    ]);
    let replies = Reply::Array(vec![
        Reply::Array(vec![bulk("0123456789"); 2]),
        err("ERR reply exceeds the limit of 25 bytes of values"),
        Reply::Ok,
        bulk("1"),
    ]);
    assert_eq!(kv.apply(&multi), replies);
    let reads = Command::Multi(vec![cmd(&["GET", "ten"]); 3]);
    assert_eq!(
        kv.read(&reads),
        Reply::Array(vec![
            bulk("0123456789"),
            bulk("0123456789"),
            err("ERR reply exceeds the limit of 25 bytes of values"),
        ])
    );
}

#[test]
#[should_panic(expected = "write command 'set'")]
fn read_refuses_writes() {
    KvStore::new().read(&cmd(&["SET", "a", "1"]));
}

#[test]
fn digest_ignores_shard_count_but_not_contents() {
    let mut a = KvStore::with_shards(1);
    let mut b = KvStore::with_shards(64);
    for kv in [&mut a, &mut b] {
        kv.apply(&cmd(&["MSET", "x", "1", "y", "2"]));
    }
    assert_eq!(a.digest(), b.digest());
    b.apply(&cmd(&["SET", "y", "3"]));
    assert_ne!(a.digest(), b.digest());
    // Swapping which key holds which value changes the digest.
    a.apply(&cmd(&["MSET", "x", "2", "y", "1"]));
    b.apply(&cmd(&["MSET", "x", "1", "y", "2"]));
    assert_ne!(a.digest(), b.digest());
    assert_ne!(KvStore::new().digest(), a.digest());
}

pub(super) fn encoded(command: &Command) -> Vec<u8> {
    let mut payload = Vec::new();
    command.encode(&mut payload);
    payload
}

#[test]
fn prefetching_changes_nothing_and_takes_any_payload() {
    let mut kv = KvStore::new();
    let mut payloads: Vec<Vec<u8>> = (0..40)
        .map(|i| encoded(&Command::Set(format!("k{}", i).into_bytes(), b"v".to_vec())))
        .collect();
    payloads.push(encoded(&Command::Del(vec![b"k1".to_vec()])));
    payloads.push(vec![4, 200]);
    payloads.push(Vec::new());
    for payload in &payloads[..20] {
        assert!(kv.apply_encoded(payload).is_ok());
    }
    let before = (kv.digest(), kv.len());
    kv.prefetch_encoded(payloads.iter().map(Vec::as_slice));
    kv.prefetch_encoded(payloads.iter().rev().map(Vec::as_slice));
    assert_eq!((kv.digest(), kv.len()), before);
}

#[test]
fn a_damaged_set_payload_is_an_error_and_changes_nothing() {
    let payload = encoded(&Command::Set(b"key".to_vec(), b"value".to_vec()));
    let mut longer = payload.clone();
    longer.push(0);
    for bad in [&payload[..payload.len() - 1], &payload[..2], &longer[..]] {
        let mut kv = KvStore::new();
        assert!(kv.apply_encoded(bad).is_err(), "{:?}", bad);
        assert_eq!(kv.len(), 0);
    }
}

fn write_command() -> impl Strategy<Value = Command> {
    let key = prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(|k| k.as_bytes().to_vec());
    let value = prop::sample::select(vec!["1", "-5", "x", "", "9223372036854775807"])
        .prop_map(|v| v.as_bytes().to_vec());
    prop_oneof![
        (key.clone(), value.clone()).prop_map(|(k, v)| Command::Set(k, v)),
        (
            key.clone(),
            value.clone(),
            0..3usize,
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(k, v, condition, get, counted)| {
                let condition = [
                    SetCondition::Always,
                    SetCondition::IfAbsent,
                    SetCondition::IfPresent,
                ][condition];
                let options = SetOptions {
                    condition,
                    get,
                    counted,
                    ..SetOptions::default()
                };
                Command::SetWith(k, v, options)
            }),
        prop::collection::vec(key.clone(), 1..3).prop_map(Command::Del),
        (key.clone(), -3i64..3).prop_map(|(k, n)| Command::IncrBy(k, n)),
        prop::collection::vec((key.clone(), value.clone()), 1..3).prop_map(Command::MSet),
        prop::collection::vec((key.clone(), value.clone()), 1..3).prop_map(Command::MSetNx),
        (key.clone(), value).prop_map(|(k, v)| Command::Append(k, v)),
        key.clone().prop_map(Command::GetDel),
        (key.clone(), key, any::<bool>()).prop_map(|(a, b, nx)| Command::Rename(a, b, nx)),
    ]
}

proptest! {
    #[test]
    fn apply_and_apply_encoded_agree(commands in prop::collection::vec(write_command(), 0..40)) {
        let mut by_ref = KvStore::with_shards(4);
        let mut owned = KvStore::with_shards(4);
        let mut views = Vec::new();
        for c in &commands {
            views.push(by_ref.snapshot_view());
            prop_assert_eq!(Ok(by_ref.apply(c)), owned.apply_encoded(&encoded(c)));
        }
        by_ref.assert_invariants();
        owned.assert_invariants();
        prop_assert_eq!(by_ref.digest(), owned.digest());
        prop_assert_eq!(snapshot_bytes(&by_ref), snapshot_bytes(&owned));
    }
}

#[test]
fn format_i64_matches_to_string() {
    let mut buffer = [0u8; 20];
    for n in [0, 1, -1, 9, 10, -10, 1234567890, i64::MAX, i64::MIN] {
        assert_eq!(format_i64(n, &mut buffer), n.to_string().as_bytes());
    }
}

#[test]
fn clone_is_independent() {
    let mut a = KvStore::new();
    a.apply(&cmd(&["SET", "k", "1"]));
    let b = a.clone();
    a.apply(&cmd(&["INCR", "k"]));
    assert_eq!(b.get(b"k"), Some(&b"1"[..]));
    assert_eq!(a.get(b"k"), Some(&b"2"[..]));
    assert_eq!(
        format!("{:?}", b),
        "KvStore { len: 1, data_bytes: 2, shards: 65536 }"
    );
}
