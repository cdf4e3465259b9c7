//! Commands over many keys or over a key's whole life: KEYS, SCAN, RENAME,
//! MSETNX, APPEND, GETDEL, FLUSHALL.
//!
//! SCAN's cursor is a shard index. The shards are fixed in number and a key's
//! shard comes from an unseeded hash, so every node, and every later leader,
//! puts each key in the same shard. A SCAN call returns whole shards, so a
//! full iteration returns each key present throughout it exactly once, where
//! Redis promises at least once.

use super::command::ScanOptions;
use super::shards::ShardedMap;
use super::{glob, KvStore, Reply};

/// Keys a FLUSHALL removed, to be dropped (freed) wherever suits.
pub struct FlushedKeys(ShardedMap);

impl std::fmt::Debug for FlushedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: usize = self.0.shards().iter().map(|shard| shard.len()).sum();
        write!(f, "FlushedKeys({keys} keys)")
    }
}

impl KvStore {
    /// KEYS: every key that matches, their bytes taken from `budget`.
    pub(super) fn keys(&self, pattern: &[u8], budget: &mut usize) -> Reply {
        let mut keys = Vec::new();
        let mut bytes = 0;
        for shard in self.map.shards() {
            for entry in shard.iter() {
                let key = entry.key();
                if glob::matches(pattern, key) {
                    bytes += key.len();
                    if bytes > *budget {
                        return self.reply_too_large();
                    }
                    keys.push(Reply::Bulk(key.to_vec()));
                }
            }
        }
        *budget -= bytes;
        Reply::Array(keys)
    }

    /// SCAN: the keys of whole shards from the cursor on, until about
    /// `count` keys have been looked at, and the cursor to go on from.
    pub(super) fn scan(&self, scan: &ScanOptions, budget: &mut usize) -> Reply {
        let shards = self.map.shards();
        let mut at = usize::try_from(scan.cursor).unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        let (mut looked_at, mut bytes) = (0u64, 0usize);
        // Empty shards cost next to nothing (all of them are one shared
        // allocation until written): a call walks past any number of them.
        while let Some(shard) = shards.get(at) {
            if looked_at >= scan.count {
                break;
            }
            at += 1;
            looked_at += shard.len() as u64;
            if scan.other_type {
                continue;
            }
            for entry in shard.iter() {
                let key = entry.key();
                if scan
                    .pattern
                    .as_ref()
                    .map_or(true, |p| glob::matches(p, key))
                {
                    bytes += key.len();
                    if bytes > *budget {
                        return self.reply_too_large();
                    }
                    keys.push(Reply::Bulk(key.to_vec()));
                }
            }
        }
        *budget -= bytes;
        let next = if at >= shards.len() { 0 } else { at };
        Reply::Array(vec![
            Reply::Bulk(next.to_string().into_bytes()),
            Reply::Array(keys),
        ])
    }

    /// RENAME and RENAMENX, as Redis answers them.
    pub(super) fn rename(&mut self, source: &[u8], destination: &[u8], nx: bool) -> Reply {
        let Some(value) = self.map.get(source) else {
            return Reply::error("ERR no such key");
        };
        if source == destination {
            return if nx { Reply::Integer(0) } else { Reply::Ok };
        }
        if nx && self.map.get(destination).is_some() {
            return Reply::Integer(0);
        }
        let value = value.to_vec();
        self.delete_one(source);
        self.set_from_slices(destination, &value);
        if nx {
            Reply::Integer(1)
        } else {
            Reply::Ok
        }
    }

    /// MSETNX: all the pairs if none of their keys exists (`:1`), else none (`:0`).
    pub(super) fn mset_nx(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Reply {
        if pairs.iter().any(|(key, _)| self.map.get(key).is_some()) {
            return Reply::Integer(0);
        }
        for (key, value) in pairs {
            self.set_from_slices(key, value);
        }
        Reply::Integer(1)
    }

    /// APPEND: the value's new length. A value is never made longer than a
    /// reply may carry (512 MiB, Redis's `proto-max-bulk-len`), so that it
    /// can still be read.
    pub(super) fn append(&mut self, key: &[u8], tail: &[u8]) -> Reply {
        let old = self.map.get(key).unwrap_or_default();
        if old.len() + tail.len() > self.max_reply_value_bytes {
            return Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        }
        let mut value = Vec::with_capacity(old.len() + tail.len());
        value.extend_from_slice(old);
        value.extend_from_slice(tail);
        self.set_from_slices(key, &value);
        Reply::Integer(value.len() as i64)
    }

    /// GETDEL: the value (its bytes taken from `budget`) and the key gone;
    /// past the budget, an error and the key kept.
    pub(super) fn get_del(&mut self, key: &[u8], budget: &mut usize) -> Reply {
        let reply = self.value_reply(self.map.get(key), budget);
        if matches!(reply, Reply::Bulk(_)) {
            self.delete_one(key);
        }
        reply
    }

    /// FLUSHALL: no keys. Shards a snapshot in progress still holds stay
    /// with it. The old keys wait in the store for [`KvStore::take_flushed`]:
    /// freeing a million of them takes about 0.4 s.
    pub(super) fn flush_all(&mut self) -> Reply {
        let empty = ShardedMap::new(self.map.shards().len());
        let old = std::mem::replace(&mut self.map, empty);
        self.flushed.push(FlushedKeys(old));
        self.len = 0;
        self.data_bytes = 0;
        Reply::Ok
    }

    /// The keys FLUSHALL emptied since the last call, for the caller to free
    /// off its event loop.
    pub fn take_flushed(&mut self) -> Vec<FlushedKeys> {
        std::mem::take(&mut self.flushed)
    }

    fn delete_one(&mut self, key: &[u8]) {
        if let Some(old) = self.map.remove(key) {
            self.len -= 1;
            self.data_bytes -= key.len() + old.value().len();
        }
    }
}
