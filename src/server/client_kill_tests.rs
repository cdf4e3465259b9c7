//! CLIENT KILL's arguments and which connections they name.

use super::*;
use crate::server::client_list::tests::{client, words};

fn parsed(line: &str) -> Result<KillFilter, Reply> {
    kill_filter(&words(line))
}

fn refused(line: &str) -> String {
    match parsed(line) {
        Err(Reply::Error(text)) => text,
        other => panic!("{line}: not refused: {other:?}"),
    }
}

#[test]
fn three_words_are_the_old_form_whatever_the_third() {
    for (line, addr) in [
        ("CLIENT KILL 127.0.0.1:5000", "127.0.0.1:5000"),
        // Redis too reads these as addresses, and finds no such client.
        ("CLIENT KILL id", "id"),
        ("client kill SKIPME", "SKIPME"),
    ] {
        let filter = parsed(line).expect(line);
        assert!(filter.old_form, "{line}");
        assert!(!filter.skip_me, "the old form kills the caller too");
        assert_eq!(filter.addr.as_deref(), Some(addr));
    }
}

#[test]
fn filters_are_read_in_pairs_and_the_caller_is_skipped_by_default() {
    let filter = parsed("CLIENT KILL id 12 ADDR 10.0.0.1:4000 laddr 10.0.0.2:6379 type NORMAL user default maxage 30").expect("parsed");
    assert_eq!(
        filter,
        KillFilter {
            id: Some(12),
            addr: Some("10.0.0.1:4000".into()),
            laddr: Some("10.0.0.2:6379".into()),
            no_such_type: false,
            skip_me: true,
            max_age: Some(30),
            old_form: false,
        }
    );
    assert!(
        !parsed("CLIENT KILL skipme NO id 1")
            .expect("parsed")
            .skip_me
    );
    assert!(
        parsed("CLIENT KILL skipme yes id 1")
            .expect("parsed")
            .skip_me
    );
    // A later filter of the same kind replaces the earlier, as in Redis.
    assert_eq!(parsed("CLIENT KILL id 5 id 6").expect("parsed").id, Some(6));
    for kind in ["master", "replica", "slave", "PubSub"] {
        let filter = parsed(&format!("CLIENT KILL TYPE {kind}")).expect(kind);
        assert!(filter.no_such_type, "{kind}");
    }
}

/// Each text checked against redis-server 7.0.15 (MAXAGE's are 7.4's: 7.0
/// has no MAXAGE).
#[test]
fn bad_filters_get_redis_errors() {
    for (line, text) in [
        ("CLIENT KILL id 0", "ERR client-id should be greater than 0"),
        (
            "CLIENT KILL id -1",
            "ERR client-id should be greater than 0",
        ),
        (
            "CLIENT KILL id abc",
            "ERR client-id should be greater than 0",
        ),
        ("CLIENT KILL type foo", "ERR Unknown client type 'foo'"),
        ("CLIENT KILL user bob", "ERR No such user 'bob'"),
        ("CLIENT KILL user DEFAULT", "ERR No such user 'DEFAULT'"),
        ("CLIENT KILL skipme maybe", "ERR syntax error"),
        ("CLIENT KILL foo bar", "ERR syntax error"),
        ("CLIENT KILL id 1 id", "ERR syntax error"),
        (
            "CLIENT KILL maxage 0",
            "ERR maxage should be greater than 0",
        ),
        (
            "CLIENT KILL maxage x",
            "ERR maxage is not an integer or out of range",
        ),
    ] {
        assert_eq!(refused(line), text, "{line}");
    }
}

#[test]
fn every_filter_must_match() {
    let before = unix_millis();
    let (c, far, _listener) = client();
    let addr = far.local_addr().expect("addr").to_string();
    let laddr = far.peer_addr().expect("addr").to_string();
    let now = unix_millis();
    let kills = |line: &str, is_caller: bool, now: u64| {
        parsed(line).expect(line).matches(&c, is_caller, now)
    };
    assert!(kills("CLIENT KILL id 7", false, now));
    assert!(!kills("CLIENT KILL id 8", false, now));
    assert!(kills(&format!("CLIENT KILL {addr}"), false, now));
    assert!(kills(&format!("CLIENT KILL addr {addr} id 7"), false, now));
    assert!(!kills(&format!("CLIENT KILL addr {addr} id 8"), false, now));
    assert!(kills(&format!("CLIENT KILL laddr {laddr}"), false, now));
    assert!(!kills(&format!("CLIENT KILL laddr {addr}"), false, now));
    assert!(kills("CLIENT KILL type normal", false, now));
    assert!(!kills("CLIENT KILL type pubsub", false, now));
    assert!(kills("CLIENT KILL user default", false, now));
    // The caller: spared unless SKIPME no, or named by the old form.
    assert!(!kills("CLIENT KILL id 7", true, now));
    assert!(kills("CLIENT KILL id 7 skipme no", true, now));
    assert!(kills(&format!("CLIENT KILL {addr}"), true, now));
    // Whole seconds of age, as CLIENT LIST shows them. The client was
    // made between `before` and `now`: a clock tick between them must not
    // make it a millisecond older than the first check assumes.
    assert!(!kills("CLIENT KILL maxage 2", false, before + 1999));
    assert!(kills("CLIENT KILL maxage 2", false, now + 2000));
}
