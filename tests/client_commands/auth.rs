//! AUTH: requirepass gates everything but AUTH, HELLO and QUIT, and without
//! requirepass AUTH is answered as redis-server 7.0 answers it.

use super::common::{bulk, Cluster};
use super::{err, status};
use raftkv::kv::Reply;

#[test]
fn requirepass_gates_everything_but_auth_hello_and_quit() {
    let mut cluster = Cluster::new(1);
    cluster.nodes[0].extra_args = vec!["--requirepass".into(), "s3cret".into()];
    cluster.spawn(0);
    let mut c = cluster.client(0);
    assert_eq!(c.cmd(&["PING"]), err("NOAUTH Authentication required."));
    assert_eq!(
        c.cmd(&["HELLO", "2"]),
        err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time")
    );
    // As Redis: an unknown command or a wrong arity is reported first.
    assert_eq!(c.cmd(&["FOO"]), err("ERR unknown command 'FOO'"));
    assert_eq!(
        c.cmd(&["GET"]),
        err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        c.cmd(&["CLUSTER", "INFO"]),
        err("NOAUTH Authentication required.")
    );
    assert_eq!(
        c.cmd(&["SET", "k", "v"]),
        err("NOAUTH Authentication required.")
    );
    // MSET's odd pairs are found when it runs, after the check of AUTH.
    assert_eq!(
        c.cmd(&["MSET", "a", "1", "b"]),
        err("NOAUTH Authentication required.")
    );
    // A refused EXEC is an EXECABORT, as in Redis 7.0.
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of: NOAUTH Authentication required.")
    );
    assert_eq!(
        c.cmd(&["EXEC", "x"]),
        err("EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command")
    );
    assert_eq!(c.cmd(&["AUTH", "wrong"]), err("WRONGPASS invalid password"));
    assert_eq!(
        c.cmd(&["AUTH", "default", "wrong"]),
        err("WRONGPASS invalid password")
    );
    assert_eq!(c.cmd(&["AUTH", "s3cret"]), Reply::Ok);
    assert_eq!(c.cmd(&["PING"]), status("PONG"));
    assert_eq!(c.cmd_retry(&["SET", "k", "v"]), Reply::Ok);
    // A HELLO answered with an error changes nothing, its AUTH included.
    let mut refused = cluster.client(0);
    assert_eq!(
        refused.cmd(&["HELLO", "3", "AUTH", "default", "s3cret", "SETNAME", "a b"]),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    assert_eq!(
        refused.cmd(&["PING"]),
        err("NOAUTH Authentication required.")
    );
    // An unknown option is echoed cut to 128 bytes, however long.
    let long_option = "x".repeat(100_000);
    assert_eq!(
        refused.cmd(&["HELLO", "2", &long_option]),
        err(&format!(
            "ERR Syntax error in HELLO option '{}'",
            &long_option[..128]
        ))
    );
    // HELLO can authenticate and switch protocol in one go.
    let mut h = cluster.client(0);
    match h.cmd(&["HELLO", "3", "AUTH", "default", "s3cret"]) {
        Reply::Map(fields) => assert!(fields.contains(&(bulk("proto"), Reply::Integer(3)))),
        other => panic!("HELLO 3 AUTH answered {:?}", other),
    }
    assert_eq!(h.cmd(&["GET", "k"]), bulk("v"));
    // redis-cli falls back to the help it was built with on an error.
    assert_eq!(
        h.cmd(&["COMMAND", "DOCS"]),
        err("ERR COMMAND DOCS is not supported")
    );
    let mut q = cluster.client(0);
    assert_eq!(q.cmd(&["QUIT"]), Reply::Ok);
    assert!(q.is_closed());
}

/// Without requirepass, as redis-server 7.0 answers: the default user takes
/// any password, and the one-argument form is a configuration mistake.
#[test]
fn auth_without_requirepass_is_answered_as_redis_does() {
    let cluster = Cluster::start(1);
    let mut c = cluster.client(0);
    assert_eq!(
        c.cmd(&["AUTH", "x"]),
        err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
    );
    assert_eq!(c.cmd(&["AUTH", "default", "x"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["AUTH", "bob", "x"]),
        err("WRONGPASS invalid password")
    );
    assert_eq!(c.cmd(&["AUTH", "a", "b", "c"]), err("ERR syntax error"));
    // Another user fails in HELLO as in AUTH, and the protocol stays.
    assert_eq!(
        c.cmd(&["HELLO", "3", "AUTH", "bob", "x"]),
        err("WRONGPASS invalid password")
    );
    assert!(matches!(c.cmd(&["HELLO"]), Reply::Array(_)), "still RESP2");
    match c.cmd(&["HELLO", "3", "AUTH", "default", "x"]) {
        Reply::Map(fields) => assert!(fields.contains(&(bulk("proto"), Reply::Integer(3)))),
        other => panic!("HELLO 3 AUTH answered {:?}", other),
    }
    assert_eq!(c.cmd(&["PING"]), status("PONG"));
}
