//! When keys expire: unix milliseconds by key, for the keys that have one.
//!
//! Kept beside the map rather than in its entries, so that a store without
//! timeouts (the common case) pays one length check per write for them. It
//! is sharded like the map, by the same bits of the same hash, and each
//! shard is copy-on-write, so that a snapshot view costs O(shards) here too
//! and the loop copies only the shards it writes to while a view lives. The
//! shards are made with the first timeout: until then a copy costs nothing.

use super::shards::{hash_key, KeyHasher};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

pub type DeadlineShard = HashMap<Box<[u8]>, u64, BuildHasherDefault<KeyHasher>>;

#[derive(Clone)]
pub struct Deadlines {
    /// Empty until the first timeout is set, then `mask + 1` shards.
    shards: Vec<Arc<DeadlineShard>>,
    mask: u64,
    /// Keys with a time. Invariant: the sum of the shards' lengths.
    len: usize,
}

impl Deadlines {
    pub fn new(shard_count: usize) -> Deadlines {
        Deadlines {
            shards: Vec::new(),
            mask: shard_count as u64 - 1,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// The map's shard index for `key` (see `ShardedMap::shard_index`).
    fn index(&self, key: &[u8]) -> usize {
        ((hash_key(key) >> 32) & self.mask) as usize
    }

    pub fn get(&self, key: &[u8]) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        self.shards[self.index(key)].get(key).copied()
    }

    pub fn set(&mut self, key: &[u8], at: u64) {
        if self.shards.is_empty() {
            let empty = Arc::new(DeadlineShard::default());
            self.shards = vec![empty; self.mask as usize + 1];
        }
        let index = self.index(key);
        if Arc::make_mut(&mut self.shards[index])
            .insert(key.into(), at)
            .is_none()
        {
            self.len += 1;
        }
    }

    /// Removes `key`'s time, without copying a shard a view holds when the
    /// key has none.
    pub fn remove(&mut self, key: &[u8]) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let index = self.index(key);
        self.shards[index].get(key)?;
        let removed = Arc::make_mut(&mut self.shards[index]).remove(key);
        self.len -= usize::from(removed.is_some());
        removed
    }

    /// The shards, in order; none before the first timeout.
    pub fn shards(&self) -> &[Arc<DeadlineShard>] {
        &self.shards
    }
}
