//! The connection commands: PING, ECHO, AUTH, HELLO, INFO, CLIENT (its LIST
//! and INFO in `client_list.rs`, KILL in `client_kill.rs`), COMMAND,
//! SELECT, CONFIG, UNWATCH, DBSIZE and DEBUG. This node answers them itself,
//! in every state (even waiting to join), and they go nowhere near the log.
//! Also the checks Redis makes of every request before anything else (an
//! unknown command, a wrong number of arguments, an unknown subcommand), so
//! that they come before `NOAUTH` and abort a transaction as in Redis.

use super::clients::Client;
use super::cluster::Standing;
use super::config_get::config_get;
use super::event_loop::Server;
use super::info::{self, InfoContext};
use crate::kv::command::parse_integer;
use crate::kv::reply::up_to_nul;
use crate::kv::{Command, CommandError, Reply};
use crate::raft::NodeId;
use crate::wire::resp::Protocol;
use mio::Token;

pub(super) fn error(text: &str) -> Reply {
    Reply::Error(text.to_string())
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(text.as_bytes().to_vec())
}

pub(super) fn wrong_arity(name: &str) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{}' command",
        name
    ))
}

/// Longest (sub)command name matched here; a longer one reads as "" (and then
/// falls through to the key-value parser, which rejects it).
const NAME_MAX_BYTES: usize = 32;

/// A command or subcommand name lower-cased for matching, on the stack: every
/// request has one, and the common ones are ASCII.
pub(super) enum Name {
    Ascii {
        bytes: [u8; NAME_MAX_BYTES],
        len: usize,
    },
    /// Not ASCII: lossily decoded, for the error message that will follow.
    Other(String),
}

impl Name {
    pub(super) fn as_str(&self) -> &str {
        match self {
            // ASCII bytes are always valid UTF-8.
            Name::Ascii { bytes, len } => std::str::from_utf8(&bytes[..*len]).unwrap_or(""),
            Name::Other(text) => text,
        }
    }
}

pub(super) fn command_name(raw: &[u8]) -> Name {
    if raw.len() > NAME_MAX_BYTES {
        return Name::Ascii {
            bytes: [0; NAME_MAX_BYTES],
            len: 0,
        };
    }
    if !raw.is_ascii() {
        return Name::Other(String::from_utf8_lossy(raw).to_ascii_lowercase());
    }
    let mut bytes = [0; NAME_MAX_BYTES];
    bytes[..raw.len()].copy_from_slice(raw);
    bytes.make_ascii_lowercase();
    Name::Ascii {
        bytes,
        len: raw.len(),
    }
}

/// How many words a command takes, as Redis checks before it queues or runs
/// one.
enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

impl Arity {
    fn fits(&self, words: usize) -> bool {
        match *self {
            Arity::Exactly(n) => words == n,
            Arity::AtLeast(n) => words >= n,
        }
    }
}

/// Whether a request is a connection command that reports this node's data:
/// DBSIZE, INFO (`keys`, the indexes) and DEBUG DIGEST.
pub(super) fn reports_data(argv: &[Vec<u8>]) -> bool {
    // Asked of every request: the length alone turns away GET and SET.
    argv.first().is_some_and(|name| {
        (4..=6).contains(&name.len())
            && matches!(command_name(name).as_str(), "dbsize" | "info" | "debug")
    })
}

/// Whether `name` is one of the connection commands SPEC §3 names, which a
/// node serves in every state, also when it is not a member. The other
/// commands this node answers by itself (DBSIZE, ECHO, CONFIG, DEBUG,
/// UNWATCH) it serves only as a member: DBSIZE and DEBUG DIGEST would report
/// data it does not hold.
pub(super) fn served_when_not_a_member(name: &str) -> bool {
    matches!(
        name,
        "ping" | "info" | "hello" | "auth" | "client" | "command" | "select" | "quit"
    )
}

/// Whether `name` is a connection command.
pub(super) fn is_local(name: &str) -> bool {
    local_arity(name).is_some()
}

fn local_arity(name: &str) -> Option<Arity> {
    Some(match name {
        "ping" | "hello" | "info" | "command" => Arity::AtLeast(1),
        "auth" | "client" | "config" | "debug" => Arity::AtLeast(2),
        "echo" | "select" => Arity::Exactly(2),
        "unwatch" | "dbsize" => Arity::Exactly(1),
        _ => return None,
    })
}

/// The error Redis gives a connection or transaction command before it
/// looks at anything else: a wrong number of arguments or an unknown
/// subcommand. `None` when there is none, and for key-value commands
/// (`Command::parse` checks those).
pub(super) fn precheck(name: &str, argv: &[Vec<u8>]) -> Option<Reply> {
    let arity = match name {
        "multi" | "exec" | "discard" => Arity::Exactly(1),
        "watch" | "cluster" => Arity::AtLeast(2),
        "quit" | "shutdown" => Arity::AtLeast(1),
        other => local_arity(other)?,
    };
    if !arity.fits(argv.len()) {
        return Some(wrong_arity(name));
    }
    match name {
        "client" => subcommand_error(argv, CLIENT),
        "command" => subcommand_error(argv, COMMAND),
        "config" => subcommand_error(argv, CONFIG),
        "debug" => subcommand_error(argv, DEBUG),
        _ => None,
    }
}

/// [`precheck`], and for a key-value command the errors `Command::parse`
/// reports before running it (unknown command, wrong arity).
pub(super) fn request_error(name: &str, argv: &[Vec<u8>]) -> Option<Reply> {
    if is_known_name(name) {
        return precheck(name, argv);
    }
    Command::parse(argv)
        .err()
        .filter(CommandError::is_queue_time)
        .map(|err| Reply::Error(err.to_string()))
}

fn is_known_name(name: &str) -> bool {
    is_local(name)
        || matches!(
            name,
            "multi" | "exec" | "discard" | "watch" | "cluster" | "quit" | "shutdown"
        )
}

fn unknown_subcommand(sub: &[u8], help: &str) -> Reply {
    Reply::Error(format!(
        "ERR unknown subcommand '{}'. {}",
        shown_word(sub),
        help
    ))
}

/// A client's word (a subcommand, an option, a node id) as an error echoes
/// it: as typed, up to a NUL and at most 128 bytes (Redis's `%.128s`), so a
/// long one does not make a long error.
pub(super) fn shown_word(word: &[u8]) -> String {
    let mut shown = String::from_utf8_lossy(up_to_nul(word)).into_owned();
    let mut end = shown.len().min(128);
    while !shown.is_char_boundary(end) {
        end -= 1;
    }
    shown.truncate(end);
    shown
}

/// The subcommands of CLIENT, COMMAND, CONFIG and DEBUG this node knows, with
/// the words each takes (the whole request's), and the hint of the error an
/// unknown one gets.
type Family = (&'static str, &'static [(&'static str, Arity)], &'static str);

const CLIENT: Family = (
    "client",
    &[
        ("setname", Arity::Exactly(3)),
        ("getname", Arity::Exactly(2)),
        ("id", Arity::Exactly(2)),
        // Libraries send this on connect: `CLIENT SETINFO <attr> <value>`,
        // Redis's arity 4; any attribute is taken.
        ("setinfo", Arity::Exactly(4)),
        // Sent on connect too; any arguments are taken.
        ("maint_notifications", Arity::AtLeast(2)),
        // `on` or `off`, as in Redis.
        ("no-evict", Arity::Exactly(3)),
        ("no-touch", Arity::Exactly(3)),
        // `CLIENT LIST [TYPE t | ID id...]`, checked by `client_list`.
        ("list", Arity::AtLeast(2)),
        ("info", Arity::Exactly(2)),
        // `CLIENT KILL ip:port` or filters, checked by `client_kill`.
        ("kill", Arity::AtLeast(3)),
    ],
    "raftkv supports CLIENT SETNAME, GETNAME, ID, SETINFO, LIST, INFO, KILL, MAINT_NOTIFICATIONS, NO-EVICT and NO-TOUCH.",
);
const COMMAND: Family = (
    "command",
    &[
        ("count", Arity::Exactly(2)),
        ("docs", Arity::AtLeast(2)),
        ("info", Arity::AtLeast(2)),
        ("list", Arity::AtLeast(2)),
    ],
    "raftkv supports COMMAND COUNT, INFO and LIST (and refuses DOCS).",
);
const CONFIG: Family = (
    "config",
    &[("get", Arity::AtLeast(3))],
    "raftkv supports CONFIG GET only.",
);
const DEBUG: Family = (
    "debug",
    &[("digest", Arity::Exactly(2))],
    "raftkv supports DEBUG DIGEST only.",
);

fn subcommand_error(argv: &[Vec<u8>], (family, known, help): Family) -> Option<Reply> {
    let sub = argv.get(1)?;
    let name = command_name(sub);
    match known.iter().find(|(known, _)| *known == name.as_str()) {
        Some((known, arity)) if !arity.fits(argv.len()) => {
            Some(wrong_arity(&format!("{}|{}", family, known)))
        }
        Some(_) => None,
        None => Some(unknown_subcommand(sub, help)),
    }
}

impl Server {
    /// A connection command's reply, `None` for any other command.
    pub(super) fn local_command(
        &mut self,
        token: Token,
        name: &str,
        argv: &[Vec<u8>],
    ) -> Option<Reply> {
        if !is_local(name) {
            return None;
        }
        if let Some(error) = precheck(name, argv) {
            return Some(error);
        }
        Some(match name {
            "ping" => match argv.len() {
                1 => Reply::Status("PONG".into()),
                2 => Reply::Bulk(argv[1].clone()),
                _ => wrong_arity("ping"),
            },
            "echo" => Reply::Bulk(argv[1].clone()),
            "auth" => self.auth(token, argv),
            "hello" => self.hello(token, argv),
            "info" => Reply::Bulk(self.info(&argv[1..]).into_bytes()),
            "client" => self.client_command(token, argv),
            "command" => command_command(argv),
            "select" => select_command(argv),
            "config" => config_get(&self.config, &argv[2..]),
            "dbsize" => Reply::Integer(self.replica.kv().len() as i64),
            "debug" => self.debug_command(argv),
            _ => Reply::Ok, // unwatch
        })
    }

    fn auth(&mut self, token: Token, argv: &[Vec<u8>]) -> Reply {
        let (password, user_named) = match argv.len() {
            2 => (&argv[1], false),
            3 if argv[1] == b"default" => (&argv[2], true),
            3 => return error("WRONGPASS invalid password"),
            1 => return wrong_arity("auth"),
            _ => return error("ERR syntax error"),
        };
        let Some(expected) = self.config.requirepass.as_deref() else {
            // As in Redis: without requirepass the default user takes any
            // password (clients that always send one, as `HELLO 3 AUTH
            // default ...`, keep working), while the old one-argument form
            // points at a configuration mistake.
            if user_named {
                return Reply::Ok;
            }
            return error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        };
        let ok = password.as_slice() == expected.as_bytes();
        if let Some(client) = self.clients.get_mut(&token) {
            client.authenticated |= ok;
        }
        if ok {
            Reply::Ok
        } else {
            error("WRONGPASS invalid password")
        }
    }

    fn hello(&mut self, token: Token, argv: &[Vec<u8>]) -> Reply {
        let mut protocol = None;
        let mut rest = &argv[1..];
        if let Some(version) = rest.first() {
            protocol = match parse_integer(version) {
                Some(2) => Some(Protocol::Resp2),
                Some(3) => Some(Protocol::Resp3),
                Some(_) => return error("NOPROTO unsupported protocol version"),
                None => return error("ERR Protocol version is not an integer or out of range"),
            };
            rest = &rest[1..];
        }
        // Every option is checked before AUTH takes effect, as in Redis: a
        // HELLO answered with an error changes nothing.
        let mut name = None;
        let mut auth = None;
        while let Some(typed) = rest.first() {
            let option = command_name(typed);
            match (option.as_str(), rest.len()) {
                ("auth", n) if n >= 3 => {
                    auth = Some([b"auth".to_vec(), rest[1].clone(), rest[2].clone()]);
                    rest = &rest[3..];
                }
                ("setname", n) if n >= 2 => {
                    match client_name(&rest[1]) {
                        Ok(given) => name = Some(given),
                        Err(refusal) => return refusal,
                    }
                    rest = &rest[2..];
                }
                _ => {
                    return Reply::Error(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        shown_word(typed)
                    ))
                }
            }
        }
        if let Some(auth) = auth {
            if let reply @ Reply::Error(_) = self.auth(token, &auth) {
                return reply;
            }
        }
        let Some(client) = self.clients.get_mut(&token) else {
            return Reply::Ok;
        };
        if !client.authenticated {
            return error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if let Some(protocol) = protocol {
            client.protocol = protocol;
        }
        if let Some(name) = name {
            client.name = name;
        }
        let proto = match client.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        info::hello_reply(client.id, proto)
    }

    fn client_command(&mut self, token: Token, argv: &[Vec<u8>]) -> Reply {
        if let Some(error) = precheck("client", argv) {
            return error;
        }
        match command_name(&argv[1]).as_str() {
            "list" => return self.client_list(token, argv),
            "info" => return self.client_info(token, argv),
            "kill" => return self.client_kill(token, argv),
            _ => {}
        }
        let Some(client) = self.clients.get_mut(&token) else {
            return Reply::Ok;
        };
        match command_name(&argv[1]).as_str() {
            "setname" => match client_name(&argv[2]) {
                Ok(name) => {
                    client.name = name;
                    Reply::Ok
                }
                Err(refusal) => refusal,
            },
            "getname" => match &client.name {
                Some(name) => bulk(name),
                None => Reply::Nil,
            },
            "id" => Reply::Integer(client.id as i64),
            "setinfo" => set_info(client, &argv[2], &argv[3]),
            // Redis takes only these; nothing here is evicted or touched.
            "no-evict" | "no-touch" => match argv.get(2).map(|on| command_name(on)) {
                Some(word) if matches!(word.as_str(), "on" | "off") => Reply::Ok,
                _ => error("ERR syntax error"),
            },
            _ => Reply::Ok,
        }
    }

    /// DEBUG DIGEST, as in Redis: a hash of this node's own state (not a
    /// linearizable read), so tests and operators can compare nodes.
    fn debug_command(&self, argv: &[Vec<u8>]) -> Reply {
        match precheck("debug", argv) {
            Some(error) => error,
            None => Reply::Status(format!("{:016x}", self.replica.kv().digest())),
        }
    }

    pub(super) fn info(&self, sections: &[Vec<u8>]) -> String {
        let status = self.replica.status();
        let book = &self.cluster.book;
        let addresses: Vec<(NodeId, String)> = status
            .voters
            .iter()
            .chain(&status.learners)
            .map(|id| (*id, book.raft_addr(*id).unwrap_or("").to_string()))
            .collect();
        let leader_client_addr = book.client_addr(status.leader_id).unwrap_or("");
        info::info_text(
            &InfoContext {
                status: &status,
                addresses: &addresses,
                leader_client_addr,
                keys: self.replica.kv().len(),
                expiring_keys: self.replica.kv().expiring_keys(),
                connected_clients: self.clients.len(),
                forwarded_requests: self.forwards.len() + self.cluster.forwarded_count(),
                connections_received: self.next_client_id - 1,
                commands_processed: self.commands_processed,
                resident_bytes: info::resident_bytes(),
                uptime_secs: self.uptime_secs(),
                log_bytes: self.disk.storage.log_bytes(),
                refused_peer_messages: self.replica.node().refused_messages(),
                connected_peers: self.peers.connected_count(),
                membership: match self.cluster.standing {
                    Standing::Member => "member",
                    Standing::NotYet => "joining",
                    Standing::Removed => "removed",
                },
                snapshot: self.snapshot_info(),
            },
            sections,
        )
    }

    fn snapshot_info(&self) -> info::SnapshotInfo {
        let stats = &self.snapshots.stats;
        info::SnapshotInfo {
            bytes: stats.bytes,
            in_progress: self.snapshots.is_writing(),
            last_duration_ms: stats.last_duration.as_millis() as u64,
            taken: stats.taken,
            received: stats.received,
            sent: stats.sent,
            last_max_iteration_us: stats.last_max_iteration.as_micros() as u64,
            last_max_iteration_cpu_us: stats.last_max_iteration_cpu.as_micros() as u64,
            max_iteration_us: self.max_iteration.as_micros() as u64,
            max_iteration_cpu_us: self.iteration_cpu.max.as_micros() as u64,
        }
    }
}

/// A name for CLIENT SETNAME or HELLO SETNAME; an empty one removes the
/// name. As in Redis, it is one printable word, so CLIENT GETNAME and the
/// logs show it as given.
fn client_name(given: &[u8]) -> Result<Option<String>, Reply> {
    if given.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok((!given.is_empty()).then(|| String::from_utf8_lossy(given).into_owned()))
}

/// CLIENT SETINFO: lib-name and lib-ver are kept for CLIENT LIST, checked
/// as Redis checks them; any other attribute is taken and forgotten, as
/// before raftkv kept these.
fn set_info(client: &mut Client, attribute: &[u8], value: &[u8]) -> Reply {
    let kept = match command_name(attribute).as_str() {
        "lib-name" => &mut client.info.lib_name,
        "lib-ver" => &mut client.info.lib_ver,
        _ => return Reply::Ok,
    };
    if value.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Reply::Error(format!(
            "ERR {} cannot contain spaces, newlines or special characters.",
            shown_word(attribute)
        ));
    }
    *kept = (!value.is_empty()).then(|| String::from_utf8_lossy(value).into_owned());
    Reply::Ok
}

/// COMMAND: redis-cli and client libraries ask for the command table on
/// connect and do without it; this node lists none.
fn command_command(argv: &[Vec<u8>]) -> Reply {
    if let Some(error) = precheck("command", argv) {
        return error;
    }
    match argv.get(1).map(|sub| command_name(sub)) {
        Some(sub) if sub.as_str() == "count" => Reply::Integer(0),
        // redis-cli asks for the docs to build its hints and `help`; an
        // error makes it use the ones it was built with, where an empty
        // answer would leave it with none.
        Some(sub) if sub.as_str() == "docs" => error("ERR COMMAND DOCS is not supported"),
        // One entry per name asked for, as Redis answers; nil is the entry
        // of a name it does not describe.
        Some(sub) if sub.as_str() == "info" => Reply::Array(vec![Reply::Nil; argv.len() - 2]),
        _ => Reply::Array(Vec::new()),
    }
}

/// SELECT: there is one database, 0.
fn select_command(argv: &[Vec<u8>]) -> Reply {
    if let Some(error) = precheck("select", argv) {
        return error;
    }
    // Redis reads the index as a C int: a number beyond it gets that error
    // before the index is looked at.
    match crate::kv::parse_integer(&argv[1]) {
        Some(0) => Reply::Ok,
        Some(n) if i32::try_from(n).is_err() => {
            error("ERR value is out of range, value must between -2147483648 and 2147483647")
        }
        Some(_) => error("ERR DB index is out of range"),
        None => error("ERR value is not an integer or out of range"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(index: &str) -> Reply {
        select_command(&[b"select".to_vec(), index.as_bytes().to_vec()])
    }

    fn words(line: &str) -> Vec<Vec<u8>> {
        line.split(' ').map(|w| w.as_bytes().to_vec()).collect()
    }

    /// Redis checks `CLIENT SETINFO`'s arity (4) before the attribute: one
    /// sent without its attribute or value, or with more, is an arity error,
    /// not `+OK`.
    #[test]
    fn client_setinfo_takes_an_attribute_and_a_value() {
        let arity = error("ERR wrong number of arguments for 'client|setinfo' command");
        for line in [
            "CLIENT SETINFO",
            "CLIENT setinfo lib-name",
            "CLIENT SETINFO lib-name x y",
        ] {
            assert_eq!(
                precheck("client", &words(line)),
                Some(arity.clone()),
                "{line}"
            );
        }
        for line in [
            "CLIENT SETINFO lib-name redis-py",
            "client SetInfo LIB-VER 5.0",
        ] {
            assert_eq!(precheck("client", &words(line)), None, "{line}");
        }
    }

    /// Redis echoes a subcommand or option with `%.128s`: up to a NUL, and
    /// at most 128 bytes.
    #[test]
    fn shown_word_ends_at_a_nul_or_128_bytes() {
        assert_eq!(shown_word(b"a\0b"), "a");
        assert_eq!(shown_word(b"\0"), "");
        assert_eq!(shown_word(&[b'x'; 200]), "x".repeat(128));
        assert_eq!(
            precheck("client", &[b"CLIENT".to_vec(), b"no\0such".to_vec()]),
            Some(unknown_subcommand(b"no", CLIENT.2))
        );
    }

    #[test]
    fn select_words_its_errors_as_redis() {
        assert_eq!(select("0"), Reply::Ok);
        assert_eq!(select("1"), error("ERR DB index is out of range"));
        assert_eq!(select("-2147483648"), error("ERR DB index is out of range"));
        assert_eq!(select("2147483647"), error("ERR DB index is out of range"));
        let beyond_int =
            error("ERR value is out of range, value must between -2147483648 and 2147483647");
        assert_eq!(select("2147483648"), beyond_int);
        assert_eq!(select("-2147483649"), beyond_int);
        assert_eq!(select("9223372036854775807"), beyond_int);
        let not_integer = error("ERR value is not an integer or out of range");
        assert_eq!(select("x"), not_integer);
        assert_eq!(select("00"), not_integer);
        assert_eq!(select("9223372036854775808"), not_integer);
    }
}
