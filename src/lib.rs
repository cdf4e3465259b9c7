//! raftkv: a Raft-replicated key-value daemon that speaks the Redis protocol.

/// `println!` that lets a stdout nobody reads any more pass (`raftkv --help |
/// head -1`, `--local-cluster` under a closed pipe): a message lost is no
/// reason to panic and take a running cluster down.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that lets a closed stderr pass, as [`outln!`] does stdout.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod cli;
pub mod config;
pub mod kv;
mod pending_writes;
pub mod raft;
pub mod recovery;
pub mod replica;
pub mod server;
pub mod storage;
pub mod timer_wheel;
pub mod wire;
