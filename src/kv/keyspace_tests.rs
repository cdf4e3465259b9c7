//! The keyspace commands besides KEYS and SCAN (TYPE, STRLEN, TTL and the
//! expiry commands, APPEND, GETDEL, UNLINK, RENAME, MSETNX, FLUSHALL), and
//! the store against a model map. KEYS and SCAN are tested in
//! `keyspace_scan_tests.rs`.

use super::expiry::{ExpireCondition, Expiry, TimeUnit};
use super::keyspace_scan_tests::keys_of;
use super::tests::{bulk, cmd, err, parse_error};
use super::*;

#[test]
fn type_strlen_ttl_persist() {
    let mut kv = KvStore::with_shards(8);
    kv.apply(&cmd(&["SET", "k", "hello"]));
    assert_eq!(
        kv.read(&cmd(&["TYPE", "k"])),
        Reply::Status("string".into())
    );
    assert_eq!(
        kv.read(&cmd(&["TYPE", "nope"])),
        Reply::Status("none".into())
    );
    assert_eq!(kv.read(&cmd(&["STRLEN", "k"])), Reply::Integer(5));
    assert_eq!(kv.read(&cmd(&["STRLEN", "nope"])), Reply::Integer(0));
    assert_eq!(kv.read(&cmd(&["TTL", "k"])), Reply::Integer(-1));
    assert_eq!(kv.read(&cmd(&["PTTL", "nope"])), Reply::Integer(-2));
    assert_eq!(kv.apply(&cmd(&["PERSIST", "k"])), Reply::Integer(0));
}

#[test]
fn expiry_commands_parse_as_redis() {
    assert_eq!(
        parse_error(&["EXPIRE", "k", "ten"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        parse_error(&["SETEX", "k", "0", "v"]),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(
        parse_error(&["EXPIRE", "k"]),
        "ERR wrong number of arguments for 'expire' command"
    );
    // Redis checks the options first, then the time.
    assert_eq!(
        parse_error(&["EXPIRE", "k", "abc", "junk"]),
        "ERR Unsupported option junk"
    );
    assert_eq!(
        parse_error(&["EXPIRE", "k", "10", "nx", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        parse_error(&["EXPIRE", "k", "10", "GT", "lt"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    // Times Redis cannot hold in milliseconds from now.
    for (words, name) in [
        (&["EXPIRE", "k", "9223372036854775807"][..], "expire"),
        (&["EXPIREAT", "k", "-9223372036854775808"], "expireat"),
        (&["PEXPIRE", "k", "9223372036854775807"], "pexpire"),
        (&["SETEX", "k", "9223372036854775", "v"], "setex"),
        (&["PSETEX", "k", "9223372036854775807", "v"], "psetex"),
        (&["SET", "k", "v", "EX", "9223372036854775"], "set"),
    ] {
        assert_eq!(
            parse_error(words),
            format!("ERR invalid expire time in '{name}' command"),
            "{words:?}"
        );
    }
    assert_eq!(
        cmd(&["pexpireat", "k", "9223372036854775807", "xx", "LT"]),
        Command::Expire(
            b"k".to_vec(),
            Expiry {
                time: i64::MAX,
                unit: TimeUnit::AbsoluteMillis
            },
            ExpireCondition {
                xx: true,
                lt: true,
                ..ExpireCondition::default()
            }
        )
    );
    assert_eq!(
        cmd(&["EXPIRE", "k", "-5"]),
        Command::Expire(
            b"k".to_vec(),
            Expiry {
                time: -5,
                unit: TimeUnit::RelativeSeconds
            },
            ExpireCondition::default()
        )
    );
}

#[test]
fn append_getdel_unlink() {
    let mut kv = KvStore::with_shards(8);
    assert_eq!(kv.apply(&cmd(&["APPEND", "k", "ab"])), Reply::Integer(2));
    assert_eq!(kv.apply(&cmd(&["APPEND", "k", "cd"])), Reply::Integer(4));
    assert_eq!(kv.read(&cmd(&["GET", "k"])), bulk("abcd"));
    assert_eq!(kv.apply(&cmd(&["GETDEL", "k"])), bulk("abcd"));
    assert_eq!(kv.apply(&cmd(&["GETDEL", "k"])), Reply::Nil);
    assert!(kv.is_empty());
    kv.apply(&cmd(&["MSET", "a", "1", "b", "2"]));
    assert_eq!(
        kv.apply(&cmd(&["UNLINK", "a", "b", "c"])),
        Reply::Integer(2)
    );
    kv.assert_invariants();
}

#[test]
fn append_and_getdel_stay_within_the_reply_limit() {
    let mut kv = KvStore::with_shards(8);
    kv.set_max_reply_value_bytes(4);
    assert_eq!(kv.apply(&cmd(&["APPEND", "k", "abc"])), Reply::Integer(3));
    assert_eq!(
        kv.apply(&cmd(&["APPEND", "k", "de"])),
        err("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
    );
    assert_eq!(kv.read(&cmd(&["GET", "k"])), bulk("abc"));
    // In a transaction, GETDEL shares the reply budget: past it, the key stays.
    let multi = Command::Multi(vec![cmd(&["GET", "k"]), cmd(&["GETDEL", "k"])]);
    assert_eq!(
        kv.apply(&multi),
        Reply::Array(vec![
            bulk("abc"),
            err("ERR reply exceeds the limit of 4 bytes of values")
        ])
    );
    assert_eq!(kv.read(&cmd(&["GET", "k"])), bulk("abc"));
    kv.assert_invariants();
}

#[test]
fn rename_and_renamenx_as_redis() {
    let mut kv = KvStore::with_shards(8);
    assert_eq!(
        kv.apply(&cmd(&["RENAME", "a", "b"])),
        err("ERR no such key")
    );
    assert_eq!(
        kv.apply(&cmd(&["RENAMENX", "a", "a"])),
        err("ERR no such key")
    );
    kv.apply(&cmd(&["MSET", "a", "1", "c", "3"]));
    assert_eq!(kv.apply(&cmd(&["RENAME", "a", "a"])), Reply::Ok);
    assert_eq!(kv.apply(&cmd(&["RENAMENX", "a", "a"])), Reply::Integer(0));
    assert_eq!(kv.apply(&cmd(&["RENAME", "a", "b"])), Reply::Ok);
    assert_eq!(
        kv.read(&cmd(&["MGET", "a", "b"])),
        Reply::Array(vec![Reply::Nil, bulk("1")])
    );
    assert_eq!(kv.apply(&cmd(&["RENAMENX", "b", "c"])), Reply::Integer(0));
    assert_eq!(kv.apply(&cmd(&["RENAME", "b", "c"])), Reply::Ok);
    assert_eq!(kv.read(&cmd(&["GET", "c"])), bulk("1"));
    assert_eq!(kv.apply(&cmd(&["RENAMENX", "c", "d"])), Reply::Integer(1));
    assert_eq!(kv.len(), 1);
    kv.assert_invariants();
}

#[test]
fn msetnx_sets_all_or_none() {
    let mut kv = KvStore::with_shards(8);
    assert_eq!(
        kv.apply(&cmd(&["MSETNX", "a", "1", "b", "2"])),
        Reply::Integer(1)
    );
    assert_eq!(
        kv.apply(&cmd(&["MSETNX", "c", "3", "a", "9"])),
        Reply::Integer(0)
    );
    assert_eq!(
        kv.read(&cmd(&["MGET", "a", "b", "c"])),
        Reply::Array(vec![bulk("1"), bulk("2"), Reply::Nil])
    );
    assert_eq!(
        kv.apply(&cmd(&["MSETNX", "d", "1", "d", "2"])),
        Reply::Integer(1)
    );
    assert_eq!(
        kv.read(&cmd(&["GET", "d"])),
        bulk("2"),
        "the last pair wins, as MSET"
    );
    let text = Command::parse(&[b"MSETNX".to_vec(), b"a".to_vec()])
        .unwrap_err()
        .to_string();
    assert_eq!(text, "ERR wrong number of arguments for 'msetnx' command");
    kv.assert_invariants();
}

#[test]
fn flushall_empties_the_map_but_not_a_snapshot_view() {
    let mut kv = KvStore::with_shards(8);
    kv.apply(&cmd(&["MSET", "a", "1", "b", "2"]));
    let digest = kv.digest();
    let view = kv.snapshot_view();
    assert_eq!(kv.apply(&cmd(&["FLUSHDB", "ASYNC"])), Reply::Ok);
    assert!(kv.is_empty());
    // The old keys wait to be freed by the caller, once.
    let flushed = kv.take_flushed();
    assert_eq!(format!("{flushed:?}"), "[FlushedKeys(2 keys)]");
    assert!(kv.take_flushed().is_empty());
    // An empty map is left as it is: nothing to free, no new shards.
    assert_eq!(kv.apply(&cmd(&["FLUSHALL"])), Reply::Ok);
    assert!(
        kv.take_flushed().is_empty(),
        "a second FLUSHALL replaced the map"
    );
    assert_eq!(kv.approx_bytes(), 0);
    assert_eq!(kv.read(&cmd(&["GET", "a"])), Reply::Nil);
    let mut bytes = Vec::new();
    view.write_to(&mut bytes).expect("Vec never fails");
    let restored = KvStore::restore_from(&mut &bytes[..]).expect("restores");
    assert_eq!(restored.digest(), digest);
    assert_eq!(kv.apply(&cmd(&["FLUSHALL"])), Reply::Ok);
    let text = Command::parse(&[b"FLUSHALL".to_vec(), b"LATER".to_vec()])
        .unwrap_err()
        .to_string();
    assert_eq!(text, "ERR syntax error");
    kv.assert_invariants();
}

#[test]
fn new_commands_are_reads_or_writes_as_they_act() {
    for read in [
        &["KEYS", "*"][..],
        &["SCAN", "0"],
        &["TYPE", "k"],
        &["STRLEN", "k"],
        &["TTL", "k"],
        &["PTTL", "k"],
        &["EXPIRETIME", "k"],
        &["PEXPIRETIME", "k"],
        &["GETEX", "k"],
    ] {
        assert!(!cmd(read).is_write(), "{read:?}");
    }
    for write in [
        &["APPEND", "k", "v"][..],
        &["GETDEL", "k"],
        &["UNLINK", "k"],
        &["RENAME", "a", "b"],
        &["RENAMENX", "a", "b"],
        &["MSETNX", "a", "b"],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["PERSIST", "k"],
        &["EXPIRE", "k", "1"],
        &["PEXPIRE", "k", "1"],
        &["EXPIREAT", "k", "1"],
        &["PEXPIREAT", "k", "1"],
        &["SETEX", "k", "1", "v"],
        &["PSETEX", "k", "1", "v"],
        &["GETEX", "k", "PERSIST"],
    ] {
        assert!(cmd(write).is_write(), "{write:?}");
    }
}

mod model {
    //! The store against a plain `BTreeMap` that does what Redis does.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    type Model = BTreeMap<Vec<u8>, Vec<u8>>;

    fn command() -> impl Strategy<Value = Command> {
        let key = prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(|k| k.into());
        let value = prop::sample::select(vec!["1", "-2", "x", "", "yz"]).prop_map(|v| v.into());
        let keys = prop::collection::vec(key.clone(), 1..4);
        prop_oneof![
            10 => (key.clone(), value.clone()).prop_map(|(k, v)| Command::Set(k, v)),
            5 => keys.prop_map(Command::Del),
            5 => (key.clone(), -2i64..3).prop_map(|(k, n)| Command::IncrBy(k, n)),
            10 => (key.clone(), value.clone()).prop_map(|(k, v)| Command::Append(k, v)),
            5 => key.clone().prop_map(Command::GetDel),
            10 => (key.clone(), key.clone(), any::<bool>())
                .prop_map(|(a, b, nx)| Command::Rename(a, b, nx)),
            5 => prop::collection::vec((key, value), 1..3).prop_map(Command::MSetNx),
            1 => Just(Command::FlushAll),
        ]
    }

    fn apply(model: &mut Model, command: &Command) -> Reply {
        match command {
            Command::Set(k, v) => {
                model.insert(k.clone(), v.clone());
                Reply::Ok
            }
            Command::Del(keys) => {
                Reply::Integer(keys.iter().filter(|k| model.remove(*k).is_some()).count() as i64)
            }
            Command::IncrBy(k, by) => {
                let current = match model.get(k) {
                    None => 0,
                    Some(v) => match parse_integer(v) {
                        Some(n) => n,
                        None => return Reply::Error(CommandError::NotInteger.to_string()),
                    },
                };
                match current.checked_add(*by) {
                    Some(new) => {
                        model.insert(k.clone(), new.to_string().into_bytes());
                        Reply::Integer(new)
                    }
                    None => Reply::error("ERR increment or decrement would overflow"),
                }
            }
            Command::Append(k, tail) => {
                let value = model.entry(k.clone()).or_default();
                value.extend_from_slice(tail);
                Reply::Integer(value.len() as i64)
            }
            Command::GetDel(k) => model.remove(k).map_or(Reply::Nil, Reply::Bulk),
            Command::Rename(from, to, nx) => {
                if !model.contains_key(from) {
                    return Reply::error("ERR no such key");
                }
                if from == to || (*nx && model.contains_key(to)) {
                    return if *nx { Reply::Integer(0) } else { Reply::Ok };
                }
                if let Some(value) = model.remove(from) {
                    model.insert(to.clone(), value);
                }
                if *nx {
                    Reply::Integer(1)
                } else {
                    Reply::Ok
                }
            }
            Command::MSetNx(pairs) => {
                if pairs.iter().any(|(k, _)| model.contains_key(k)) {
                    return Reply::Integer(0);
                }
                for (k, v) in pairs {
                    model.insert(k.clone(), v.clone());
                }
                Reply::Integer(1)
            }
            Command::FlushAll => {
                model.clear();
                Reply::Ok
            }
            other => panic!("no model for {}", other.name()),
        }
    }

    /// The store's contents, every key with its value.
    fn contents(kv: &KvStore) -> Model {
        let keys = keys_of(kv.read(&Command::Keys(b"*".to_vec())));
        keys.into_iter()
            .map(|k| {
                let value = kv.get(&k).map(<[u8]>::to_vec).unwrap_or_default();
                (k, value)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn writes_do_what_the_model_does(commands in prop::collection::vec(command(), 0..60)) {
            let mut kv = KvStore::with_shards(4);
            let mut model = Model::new();
            let mut views = Vec::new();
            for c in &commands {
                views.push((kv.snapshot_view(), model.clone()));
                let expected = apply(&mut model, c);
                prop_assert_eq!(kv.apply(c), expected, "{:?}", c);
                kv.assert_invariants();
            }
            prop_assert_eq!(contents(&kv), model);
            // Each view still holds the map as it was when taken.
            for (view, then) in views {
                let mut bytes = Vec::new();
                view.write_to(&mut bytes).expect("Vec never fails");
                let restored = KvStore::restore_from_with_shards(&mut &bytes[..], 4).expect("restores");
                prop_assert_eq!(contents(&restored), then);
            }
        }
    }
}
