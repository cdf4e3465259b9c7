//! Key-value commands: from a client's argv, and to/from a log entry payload.
//!
//! (Helper C: replace the stubs; keep the public API.)

use std::fmt;

/// A key-value command. Reads are never logged on their own, but may be part of
/// a `Multi` (a MULTI/EXEC transaction is one log entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Get(Vec<u8>),
    MGet(Vec<Vec<u8>>),
    Exists(Vec<Vec<u8>>),
    Set(Vec<u8>, Vec<u8>),
    Del(Vec<Vec<u8>>),
    /// INCR is `IncrBy(key, 1)`.
    IncrBy(Vec<u8>, i64),
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
    /// The queued commands of one MULTI/EXEC, applied atomically in order.
    Multi(Vec<Command>),
}

/// Why an argv is not a command; `Display` gives the exact Redis error text
/// (without the leading `-`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandError {
    /// `ERR unknown command 'foo'` (name as the client wrote it).
    Unknown(String),
    /// `ERR wrong number of arguments for 'set' command` (name lower-cased).
    WrongArity(String),
    /// `ERR value is not an integer or out of range`
    NotInteger,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown(name) => write!(f, "ERR unknown command '{}'", name),
            CommandError::WrongArity(name) => {
                write!(f, "ERR wrong number of arguments for '{}' command", name)
            }
            CommandError::NotInteger => write!(f, "ERR value is not an integer or out of range"),
        }
    }
}

impl std::error::Error for CommandError {}

/// A log payload that does not decode (a bug or a corrupt log, never client input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad command payload: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl Command {
    /// Parses a client argv (argv[0] is the command name, any case).
    pub fn parse(_argv: Vec<Vec<u8>>) -> Result<Command, CommandError> {
        todo!()
    }
    /// Whether the command changes the map (must go through the log).
    pub fn is_write(&self) -> bool {
        todo!()
    }
    /// Appends the compact log-payload encoding to `out`.
    pub fn encode(&self, _out: &mut Vec<u8>) {
        todo!()
    }
    pub fn decode(_payload: &[u8]) -> Result<Command, DecodeError> {
        todo!()
    }
}
