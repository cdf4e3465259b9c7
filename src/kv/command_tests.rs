//! Parsing of client argvs: names, arity, arguments and Redis's error texts.

use super::parse::UNKNOWN_NAME_MAX_BYTES;
use super::*;
use crate::kv::expiry::TimeUnit;

fn argv(words: &[&str]) -> Vec<Vec<u8>> {
    words.iter().map(|w| w.as_bytes().to_vec()).collect()
}

fn parse(words: &[&str]) -> Result<Command, CommandError> {
    Command::parse(&argv(words))
}

#[test]
fn parse_integer_follows_string2ll() {
    assert_eq!(parse_integer(b"0"), Some(0));
    assert_eq!(parse_integer(b"-1"), Some(-1));
    assert_eq!(parse_integer(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_integer(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b""[..],
        b"-",
        b"-0",
        b"+1",
        b" 1",
        b"1 ",
        b"01",
        b"00",
        b"1.0",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"99999999999999999999999",
        b"1a",
    ] {
        assert_eq!(
            parse_integer(bad),
            None,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn names_are_case_insensitive() {
    assert_eq!(
        parse(&["sEt", "k", "v"]),
        Ok(Command::Set(b"k".to_vec(), b"v".to_vec()))
    );
    assert_eq!(parse(&["INCR", "k"]), Ok(Command::IncrBy(b"k".to_vec(), 1)));
    assert_eq!(
        parse(&["decr", "k"]),
        Ok(Command::IncrBy(b"k".to_vec(), -1))
    );
    assert_eq!(
        parse(&["DecrBy", "k", "5"]),
        Ok(Command::IncrBy(b"k".to_vec(), -5))
    );
}

#[test]
fn errors_have_redis_texts() {
    let text = |words: &[&str]| parse(words).unwrap_err().to_string();
    assert_eq!(text(&["FOO", "x"]), "ERR unknown command 'FOO'");
    assert_eq!(
        text(&["SET", "k"]),
        "ERR wrong number of arguments for 'set' command"
    );
    assert_eq!(
        text(&["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        text(&["GET", "a", "b"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(text(&["SET", "k", "v", "NX", "XX"]), "ERR syntax error");
    assert_eq!(text(&["SET", "k", "v", "XX", "nx"]), "ERR syntax error");
    assert_eq!(text(&["SET", "k", "v", "BOGUS"]), "ERR syntax error");
    // Redis's own errors win, as Redis checks them first.
    for syntax in [
        &["SET", "k", "v", "KEEPTTL", "EX", "10"][..],
        &["SET", "k", "v", "EX", "10", "KEEPTTL"],
        &["SET", "k", "v", "EX", "10", "PX", "10"],
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "EX", "10", "NX", "XX"],
    ] {
        assert_eq!(text(syntax), "ERR syntax error", "{syntax:?}");
    }
    assert_eq!(
        text(&["SET", "k", "v", "EX", "abc"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        text(&["SET", "k", "v", "PX", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    let keep_ttl = SetOptions {
        keep_ttl: true,
        ..SetOptions::default()
    };
    assert_eq!(
        parse(&["SET", "k", "v", "KEEPTTL"]),
        Ok(Command::SetWith(b"k".to_vec(), b"v".to_vec(), keep_ttl))
    );
    let ex = |time, unit| SetOptions {
        expiry: Some(Expiry { time, unit }),
        ..SetOptions::default()
    };
    assert_eq!(
        parse(&["SET", "k", "v", "ex", "10"]),
        Ok(Command::SetWith(
            b"k".to_vec(),
            b"v".to_vec(),
            ex(10, TimeUnit::RelativeSeconds)
        ))
    );
    assert_eq!(
        parse(&["SET", "k", "v", "EX", "1", "EX", "2"]),
        Ok(Command::SetWith(
            b"k".to_vec(),
            b"v".to_vec(),
            ex(2, TimeUnit::RelativeSeconds)
        )),
        "the last time given counts, as in Redis"
    );
    assert_eq!(
        parse(&["SETEX", "k", "5", "v"]),
        Ok(Command::SetWith(
            b"k".to_vec(),
            b"v".to_vec(),
            ex(5, TimeUnit::RelativeSeconds)
        ))
    );
    assert_eq!(
        parse(&["PSETEX", "k", "5", "v"]),
        Ok(Command::SetWith(
            b"k".to_vec(),
            b"v".to_vec(),
            ex(5, TimeUnit::RelativeMillis)
        ))
    );
    assert_eq!(
        text(&["SETNX", "k"]),
        "ERR wrong number of arguments for 'setnx' command"
    );
    assert_eq!(
        text(&["MSET", "a", "1", "b"]),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        text(&["MSET", "a"]),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(
        text(&["INCRBY", "k", "01"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        text(&["DECRBY", "k", "-9223372036854775808"]),
        "ERR decrement would overflow"
    );
    assert_eq!(
        Command::parse(&[]),
        Err(CommandError::Unknown(String::new()))
    );
}

#[test]
fn unknown_name_is_truncated() {
    let long = "x".repeat(1000);
    let err = parse(&[&long]).unwrap_err();
    assert_eq!(
        err,
        CommandError::Unknown("x".repeat(UNKNOWN_NAME_MAX_BYTES))
    );
}

/// Redis echoes a client's word with `%s`, so it ends at the first NUL.
#[test]
fn echoed_names_end_at_a_nul() {
    assert_eq!(
        parse(&["FOO\0BAR", "x"]),
        Err(CommandError::Unknown("FOO".into()))
    );
    assert_eq!(parse(&["\0abc"]), Err(CommandError::Unknown(String::new())));
    assert_eq!(
        parse(&["MEMORY", "a\0b", "k"]),
        Err(CommandError::UnknownSubcommand("a".into(), "MEMORY"))
    );
}

#[test]
fn queued_argument_errors_become_invalid() {
    assert_eq!(
        Command::parse_queued(&argv(&["INCRBY", "k", "x"])),
        Ok(Command::Invalid(
            "ERR value is not an integer or out of range".into()
        ))
    );
    assert_eq!(
        Command::parse_queued(&argv(&["SET", "k"])),
        Err(CommandError::WrongArity("set".into()))
    );
    // Odd pairs are found when EXEC runs MSET, as in Redis, whose arity
    // for it is "at least 3".
    assert_eq!(
        Command::parse_queued(&argv(&["MSETNX", "a", "1", "b"])),
        Ok(Command::Invalid(
            "ERR wrong number of arguments for 'msetnx' command".into()
        ))
    );
    assert_eq!(
        Command::parse_queued(&argv(&["MSET", "a"])),
        Err(CommandError::WrongArity("mset".into()))
    );
}

#[test]
fn is_write_classifies() {
    assert!(!parse(&["GET", "k"]).unwrap().is_write());
    assert!(!parse(&["EXISTS", "k", "k"]).unwrap().is_write());
    assert!(parse(&["DEL", "k"]).unwrap().is_write());
    assert!(parse(&["MSET", "a", "1"]).unwrap().is_write());
    let multi = Command::Multi(vec![Command::Get(b"a".to_vec())]);
    assert!(!multi.is_write());
    let multi = Command::Multi(vec![Command::Get(b"a".to_vec()), Command::Del(vec![])]);
    assert!(multi.is_write());
}

#[test]
fn memory_usage_parses_as_redis_does() {
    assert_eq!(
        parse(&["memory", "Usage", "k"]),
        Ok(Command::MemoryUsage(b"k".to_vec()))
    );
    assert_eq!(
        parse(&["MEMORY", "USAGE", "k", "SAMPLES", "0"]),
        Ok(Command::MemoryUsage(b"k".to_vec()))
    );
    let text = |words: &[&str]| parse(words).map_err(|e| e.to_string());
    assert_eq!(
        text(&["MEMORY"]),
        Err("ERR wrong number of arguments for 'memory' command".into())
    );
    assert_eq!(
        text(&["MEMORY", "USAGE"]),
        Err("ERR wrong number of arguments for 'memory|usage' command".into())
    );
    assert_eq!(
        text(&["MEMORY", "Stats"]),
        Err("ERR unknown subcommand 'Stats'. Try MEMORY HELP.".into())
    );
    for (words, error) in [
        (&["MEMORY", "USAGE", "k", "SAMPLES"][..], "ERR syntax error"),
        (&["MEMORY", "USAGE", "k", "FOO", "1"], "ERR syntax error"),
        (
            &["MEMORY", "USAGE", "k", "SAMPLES", "-1"],
            "ERR syntax error",
        ),
        (
            &["MEMORY", "USAGE", "k", "SAMPLES", "x"],
            "ERR value is not an integer or out of range",
        ),
    ] {
        assert_eq!(text(words), Err(error.into()), "{words:?}");
    }
    // An unknown subcommand aborts a transaction as in Redis 7; a bad
    // SAMPLES is answered by EXEC.
    assert!(Command::parse_queued(&argv(&["MEMORY", "DOCTOR"])).is_err());
    assert!(matches!(
        Command::parse_queued(&argv(&["MEMORY", "USAGE", "k", "X"])),
        Ok(Command::Invalid(_))
    ));
    assert!(!parse(&["MEMORY", "USAGE", "k"]).unwrap().is_write());
}

#[test]
fn the_refusal_of_many_key_reads_names_the_scan_limit() {
    use crate::kv::command::{MANY_KEYS_REFUSED_IN_WRITES, SCAN_MAX_COUNT_IN_PLACE};
    let limit = format!("over {SCAN_MAX_COUNT_IN_PLACE},");
    assert!(MANY_KEYS_REFUSED_IN_WRITES.contains(&limit));
}

#[test]
fn expire_echoes_an_unsupported_option_up_to_a_nul_as_redis() {
    let words = [
        b"expire".to_vec(),
        b"k".to_vec(),
        b"10".to_vec(),
        b"ab\0cd".to_vec(),
    ];
    assert_eq!(
        Command::parse(&words),
        Err(CommandError::Rejected("ERR Unsupported option ab".into()))
    );
    let words = [
        b"pexpireat".to_vec(),
        b"k".to_vec(),
        b"10".to_vec(),
        b"\0x".to_vec(),
    ];
    assert_eq!(
        Command::parse(&words),
        Err(CommandError::Rejected("ERR Unsupported option ".into()))
    );
}
