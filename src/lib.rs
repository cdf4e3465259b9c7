//! raftkv: a Raft-replicated key-value daemon that speaks the Redis protocol.

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
