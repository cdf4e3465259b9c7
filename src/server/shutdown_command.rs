//! SHUTDOWN: a client stops the node it is connected to, as SIGTERM does
//! (`Server::stop_requested`): a leader hands its leadership over first,
//! the requests taken are answered, and the process exits with status 0.
//! As in Redis, a SHUTDOWN that stops the node gets no reply: its
//! connection closes when the node exits. It is never forwarded.
//!
//! SAVE, NOSAVE, NOW and FORCE are taken and change nothing: every write
//! was synced to the log before it was acknowledged, so there is nothing to
//! save, and nothing (no slow replica, no save) for NOW or FORCE to skip.
//! ABORT has nothing to abort: a stopping node reads no more requests, so
//! no client sees a shutdown in progress.

use super::connection::command_name;
use super::event_loop::Server;
use crate::kv::Reply;
use log::info;
use mio::Token;

/// Whether a request is a SHUTDOWN: it waits for its connection's earlier
/// requests to be answered (`Client::must_wait`), as Redis has answered
/// them before it reads the SHUTDOWN; stopped at once, a write sent just
/// before it would be answered `-TIMEOUT outcome unknown`.
pub fn is_shutdown(argv: &[Vec<u8>]) -> bool {
    argv.first()
        .is_some_and(|name| name.eq_ignore_ascii_case(b"shutdown"))
}

/// What a SHUTDOWN's options ask for.
#[derive(Debug, PartialEq, Eq)]
pub enum ShutdownOptions {
    Stop,
    Abort,
}

/// SHUTDOWN's options, refused as Redis 7 refuses them: an unknown word, or
/// ABORT with any other, or SAVE with NOSAVE, is a syntax error.
pub fn shutdown_options(argv: &[Vec<u8>]) -> Result<ShutdownOptions, Reply> {
    let (mut abort, mut save, mut nosave, mut other) = (false, false, false, false);
    for word in argv.iter().skip(1) {
        match command_name(word).as_str() {
            "abort" => abort = true,
            "save" => save = true,
            "nosave" => nosave = true,
            "now" | "force" => other = true,
            _ => return Err(syntax_error()),
        }
    }
    if (abort && (save || nosave || other)) || (save && nosave) {
        return Err(syntax_error());
    }
    Ok(if abort {
        ShutdownOptions::Abort
    } else {
        ShutdownOptions::Stop
    })
}

fn syntax_error() -> Reply {
    Reply::Error("ERR syntax error".into())
}

impl Server {
    /// SHUTDOWN from the client `token`: `None` when the node stops (no
    /// reply), else the refusal.
    pub(super) fn shutdown_command(&mut self, token: Token, argv: &[Vec<u8>]) -> Option<Reply> {
        match shutdown_options(argv) {
            Err(refusal) => Some(refusal),
            Ok(ShutdownOptions::Abort) => Some(Reply::Error("ERR No shutdown in progress.".into())),
            Ok(ShutdownOptions::Stop) => {
                if let Some(client) = self.clients.get(&token) {
                    info!(
                        "shutdown requested by client id={} addr={}",
                        client.id,
                        client.info.addr()
                    );
                }
                self.stop_requested();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(line: &str) -> Result<ShutdownOptions, Reply> {
        let argv: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        shutdown_options(&argv)
    }

    /// The combinations Redis 7.0 refuses, checked against redis-server
    /// 7.0.15 by hand.
    #[test]
    fn shutdown_options_are_checked_as_redis_checks_them() {
        for line in [
            "SHUTDOWN",
            "shutdown nosave",
            "SHUTDOWN SAVE NOW FORCE",
            "SHUTDOWN now",
        ] {
            assert_eq!(options(line), Ok(ShutdownOptions::Stop), "{line}");
        }
        assert_eq!(options("SHUTDOWN abort"), Ok(ShutdownOptions::Abort));
        for line in [
            "SHUTDOWN foo",
            "SHUTDOWN ABORT NOW",
            "SHUTDOWN NOSAVE ABORT",
            "SHUTDOWN SAVE NOSAVE",
        ] {
            assert_eq!(options(line), Err(syntax_error()), "{line}");
        }
    }
}
