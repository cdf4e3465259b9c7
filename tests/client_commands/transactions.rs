//! MULTI/EXEC/DISCARD and their errors, and a request pipelined behind an
//! EXEC seeing the connection commands run in it.

use super::common::{bulk, Cluster};
use super::{err, raw, status};
use raftkv::kv::Reply;
use std::time::Duration;

#[test]
fn multi_exec_discard_and_their_errors() {
    let cluster = Cluster::start(1);
    let addr = cluster.nodes[0].client_addr();
    let mut c = cluster.client(0);
    assert_eq!(c.cmd(&["EXEC"]), err("ERR EXEC without MULTI"));
    assert_eq!(
        c.cmd(&["EXEC", "x"]),
        err("EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command")
    );
    assert_eq!(c.cmd(&["DISCARD"]), err("ERR DISCARD without MULTI"));
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["MULTI"]), err("ERR MULTI calls can not be nested"));
    assert_eq!(c.cmd(&["SET", "t", "1"]), status("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "t"]), status("QUEUED"));
    assert_eq!(c.cmd(&["SET", "s", "text"]), status("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "s"]), status("QUEUED"));
    // Odd pairs are found when EXEC runs MSET, as in Redis.
    assert_eq!(c.cmd(&["MSET", "t", "9", "u"]), status("QUEUED"));
    assert_eq!(c.cmd(&["GET", "t"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![
            Reply::Ok,
            Reply::Integer(2),
            Reply::Ok,
            err("ERR value is not an integer or out of range"),
            err("ERR wrong number of arguments for 'mset' command"),
            bulk("2"),
        ])
    );
    // DISCARD drops the queue; nothing was applied.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "d", "x"]), status("QUEUED"));
    assert_eq!(c.cmd(&["DISCARD"]), Reply::Ok);
    assert_eq!(c.cmd(&["GET", "d"]), Reply::Nil);
    // A command refused at queue time aborts the transaction.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "a", "1"]), status("QUEUED"));
    assert_eq!(c.cmd(&["NOSUCH", "x"]), err("ERR unknown command 'NOSUCH'"));
    assert_eq!(
        c.cmd(&["SET", "only-key"]),
        err("ERR wrong number of arguments for 'set' command")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["GET", "a"]), Reply::Nil);
    assert_eq!(c.cmd(&["WATCH", "a"]), err("ERR WATCH is not supported"));
    // Connection commands are queued too, and answered in their places.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["PING"]), status("QUEUED"));
    assert_eq!(c.cmd(&["SET", "m", "1"]), status("QUEUED"));
    assert_eq!(c.cmd(&["ECHO", "between"]), status("QUEUED"));
    assert_eq!(c.cmd(&["INCR", "m"]), status("QUEUED"));
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "in-multi"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![
            status("PONG"),
            Reply::Ok,
            bulk("between"),
            Reply::Integer(2),
            Reply::Ok,
        ])
    );
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), bulk("in-multi"));
    // They run when the entry is applied, so they see its writes.
    let keys = match c.cmd(&["DBSIZE"]) {
        Reply::Integer(n) => n,
        other => panic!("DBSIZE answered {:?}", other),
    };
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "new-in-multi", "1"]), status("QUEUED"));
    assert_eq!(c.cmd(&["DBSIZE"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::Ok, Reply::Integer(keys + 1)])
    );
    // Wrong arity and unknown subcommands are refused at once, as in Redis.
    assert_eq!(
        c.cmd(&["MULTI", "x"]),
        err("ERR wrong number of arguments for 'multi' command")
    );
    assert_eq!(
        c.cmd(&["WATCH"]),
        err("ERR wrong number of arguments for 'watch' command")
    );
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["CLIENT", "FOO"]),
        err("ERR unknown subcommand 'FOO'. raftkv supports CLIENT SETNAME, GETNAME, ID, SETINFO, LIST, INFO, KILL, MAINT_NOTIFICATIONS, NO-EVICT and NO-TOUCH.")
    );
    assert_eq!(
        c.cmd(&["DISCARD", "x"]),
        err("ERR wrong number of arguments for 'discard' command")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "q", "2"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["EXEC", "x"]),
        err("EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command")
    );
    assert_eq!(c.cmd(&["GET", "q"]), Reply::Nil);
    assert_eq!(c.cmd(&["EXEC"]), err("ERR EXEC without MULTI"));
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["ECHO"]),
        err("ERR wrong number of arguments for 'echo' command")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    // A membership change cannot go in a transaction's log entry.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(c.cmd(&["SET", "q", "3"]), status("QUEUED"));
    assert_eq!(
        c.cmd(&["CLUSTER", "MEMBERS"]),
        err("ERR Command not allowed inside a transaction")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["GET", "q"]), Reply::Nil);
    // Nor can a protocol switch, which would come after the replies to
    // requests pipelined behind EXEC; HELLO without a version can.
    assert_eq!(c.cmd(&["MULTI"]), Reply::Ok);
    assert_eq!(
        c.cmd(&["HELLO", "3"]),
        err("ERR Command not allowed inside a transaction")
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    raw(
        &addr,
        b"MULTI\r\nHELLO\r\nGET nokey\r\nEXEC\r\nGET nokey\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n*14\r\n",
    );
    // Inline, the way a person types it.
    raw(
        &addr,
        b"MULTI\r\nSET x 1\r\nINCR x\r\nEXEC\r\n",
        b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n",
    );
}

/// A CLIENT GETNAME pipelined behind an EXEC that runs a CLIENT SETNAME sees
/// that name, as in Redis, whether the transaction reads or writes: the
/// connection commands queued in it run when EXEC's reply comes, so what the
/// connection sent after EXEC waits for it.
#[test]
fn a_request_pipelined_behind_exec_sees_the_connection_commands_run_in_it() {
    let cluster = Cluster::start(1);
    cluster.wait_for_leader(Duration::from_secs(10));
    let mut c = cluster.client(0);
    for (queued, answer) in [
        (&["GET", "k"][..], Reply::Nil),
        (&["SET", "k", "v"][..], Reply::Ok),
    ] {
        let name = format!("after-{}", queued[0]);
        let mut batch = Vec::new();
        for argv in [
            vec!["MULTI"],
            queued.to_vec(),
            vec!["CLIENT", "SETNAME", &name],
            vec!["EXEC"],
            vec!["CLIENT", "GETNAME"],
        ] {
            let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
            raftkv::wire::resp::encode_request(&argv, &mut batch);
        }
        c.send_raw(&batch).expect("write pipeline");
        assert_eq!(c.read(), Reply::Ok);
        assert_eq!(c.read(), status("QUEUED"));
        assert_eq!(c.read(), status("QUEUED"));
        assert_eq!(c.read(), Reply::Array(vec![answer, Reply::Ok]));
        assert_eq!(c.read(), bulk(&name), "GETNAME ran before EXEC's SETNAME");
    }
}
