//! The replicated state machine: a key-value map. Pure: no IO, no clock.
//!
//! (Helper C: replace the stubs; keep the public API.)

pub mod command;
pub mod reply;

pub use command::{Command, CommandError, DecodeError};
pub use reply::Reply;

#[derive(Default)]
pub struct KvStore {
    _private: (),
}

impl KvStore {
    pub fn new() -> KvStore {
        todo!()
    }
    /// Applies a command (writes and reads alike, e.g. a `Multi` holding both);
    /// returns the reply the client gets. A failing command (INCR on a
    /// non-integer) returns an error reply and changes nothing.
    pub fn apply(&mut self, _command: &Command) -> Reply {
        todo!()
    }
    /// Answers a read-only command without changing anything.
    pub fn read(&self, _command: &Command) -> Reply {
        todo!()
    }
    /// Number of keys.
    pub fn len(&self) -> usize {
        todo!()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
