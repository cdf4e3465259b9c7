//! Commands over many keys or over a key's whole life: KEYS, SCAN, RENAME,
//! MSETNX, APPEND, GETDEL, FLUSHALL.
//!
//! SCAN's cursor is a shard index. The shards are fixed in number and a key's
//! shard comes from an unseeded hash, so every node, and every later leader,
//! puts each key in the same shard. A SCAN call returns whole shards, so a
//! full iteration returns each key present throughout it exactly once, where
//! Redis promises at least once.

use super::command::ScanOptions;
use super::deadlines::Deadlines;
use super::entry::Entry;
use super::shards::{self, Shard};
use super::{glob, KvStore, Reply};
use std::sync::Arc;

/// Keys a FLUSHALL removed, to be dropped (freed) wherever suits.
pub struct FlushedKeys {
    keys: Vec<Arc<Shard>>,
    _timeouts: Deadlines,
}

impl std::fmt::Debug for FlushedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: usize = self.keys.iter().map(|shard| shard.len()).sum();
        write!(f, "FlushedKeys({keys} keys)")
    }
}

/// A SCAN call looks at no more than this many shards, emptied ones
/// included, so that one call over a map whose keys were deleted (its shards
/// emptied one by one) stays near a millisecond; four calls cover such a map.
/// Shards never written are passed over without counting (no shard is read
/// for them), so a fresh or flushed keyspace takes one call, as in Redis.
const SCAN_MAX_SHARDS: usize = 16384;

/// Matching work one KEYS or SCAN may do: this much, plus
/// [`MATCH_STEPS_PER_BYTE`] for each byte of the keys it looks at. Plain
/// patterns take about one step per byte; a pattern like `*` followed by
/// thousands of `?` would take thousands, and gets an error instead.
const MATCH_STEPS_BASE: u64 = 1_000_000;
const MATCH_STEPS_PER_BYTE: u64 = 8;

/// What the reply budget is charged per key beyond its bytes: the reply's
/// element for it, so that millions of short keys count as the memory
/// their reply takes.
const REPLY_BYTES_PER_KEY: usize = std::mem::size_of::<Reply>();

/// Keys matched by KEYS or SCAN, and what they cost.
struct Matched<'a> {
    pattern: Option<&'a [u8]>,
    keys: Vec<Reply>,
    reply_bytes: usize,
    steps: u64,
}

impl<'a> Matched<'a> {
    fn new(pattern: Option<&'a [u8]>) -> Matched<'a> {
        Matched {
            pattern: pattern.filter(|p| *p != b"*"),
            keys: Vec::new(),
            reply_bytes: 0,
            steps: MATCH_STEPS_BASE,
        }
    }

    /// Adds `key` if it matches; `Err` with the reply when the reply budget
    /// or the matching work runs out.
    fn offer(&mut self, store: &KvStore, key: &[u8], budget: usize) -> Result<(), Reply> {
        if let Some(pattern) = self.pattern {
            self.steps = self
                .steps
                .saturating_add(MATCH_STEPS_PER_BYTE * (key.len() as u64 + 1));
            match glob::matches_within(pattern, key, &mut self.steps) {
                Some(true) => {}
                Some(false) => return Ok(()),
                None => {
                    return Err(Reply::error(
                        "ERR pattern too costly to match against these keys: use a simpler one",
                    ))
                }
            }
        }
        self.reply_bytes += key.len() + REPLY_BYTES_PER_KEY;
        if self.reply_bytes > budget {
            return Err(store.reply_too_large());
        }
        self.keys.push(Reply::Bulk(key.to_vec()));
        Ok(())
    }
}

impl KvStore {
    /// KEYS: every key that matches, their bytes taken from `budget`.
    pub(super) fn keys(&self, pattern: &[u8], budget: &mut usize, now: u64) -> Reply {
        let mut matched = Matched::new(Some(pattern));
        for shard in self.map.shards().iter().filter(|shard| shard.len() > 0) {
            for entry in shard.iter() {
                if self.is_expired(entry.key(), now) {
                    continue;
                }
                if let Err(reply) = matched.offer(self, entry.key(), *budget) {
                    return reply;
                }
            }
        }
        *budget -= matched.reply_bytes;
        Reply::Array(matched.keys)
    }

    /// SCAN: the keys of whole shards from the cursor on, until about
    /// `count` keys have been looked at, and the cursor to go on from.
    pub(super) fn scan(&self, scan: &ScanOptions, budget: &mut usize, now: u64) -> Reply {
        let shards = self.map.shards();
        let mut at = usize::try_from(scan.cursor).unwrap_or(usize::MAX);
        let mut matched = Matched::new(scan.pattern.as_deref());
        let (mut looked_at, mut shards_seen) = (0u64, 0usize);
        while let Some(shard) = shards.get(at) {
            if looked_at >= scan.count || shards_seen >= SCAN_MAX_SHARDS {
                break;
            }
            if self.map.is_untouched(at) {
                at += 1;
                continue;
            }
            at += 1;
            shards_seen += 1;
            if shard.len() == 0 {
                continue;
            }
            looked_at += shard.len() as u64;
            if scan.other_type {
                continue;
            }
            for entry in shard.iter() {
                if self.is_expired(entry.key(), now) {
                    continue;
                }
                if let Err(reply) = matched.offer(self, entry.key(), *budget) {
                    return reply;
                }
            }
        }
        *budget -= matched.reply_bytes;
        let next = if at >= shards.len() { 0 } else { at };
        Reply::Array(vec![
            Reply::Bulk(next.to_string().into_bytes()),
            Reply::Array(matched.keys),
        ])
    }

    /// RENAME and RENAMENX, as Redis answers them.
    /// The destination takes the source's timeout, or none.
    pub(super) fn rename(&mut self, source: &[u8], destination: &[u8], nx: bool) -> Reply {
        self.drop_if_expired(source);
        self.drop_if_expired(destination);
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
        let deadline = self.expires.get(source);
        self.delete_one(source);
        self.set_from_slices(destination, &value);
        if let Some(deadline) = deadline {
            self.expires.set(destination, deadline);
        }
        if nx {
            Reply::Integer(1)
        } else {
            Reply::Ok
        }
    }

    /// MSETNX: all the pairs if none of their keys exists (`:1`), else none (`:0`).
    pub(super) fn mset_nx(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Reply {
        for (key, _) in pairs {
            self.drop_if_expired(key);
        }
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
        self.drop_if_expired(key);
        let old_len = self.map.get(key).map_or(0, <[u8]>::len);
        if old_len + tail.len() > self.max_reply_value_bytes {
            return Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        }
        let hash = shards::hash_key(key);
        let shard = self.map.shard_mut(hash);
        let new_len = match shard.get_mut(key, hash) {
            Some(entry) => entry.append_value(tail),
            None => {
                shard.insert_absent(hash, Entry::new(key, tail));
                self.len += 1;
                self.data_bytes += key.len();
                tail.len()
            }
        };
        self.data_bytes += tail.len();
        Reply::Integer(new_len as i64)
    }

    /// GETDEL: the value (its bytes taken from `budget`) and the key gone;
    /// past the budget, an error and the key kept.
    pub(super) fn get_del(&mut self, key: &[u8], budget: &mut usize) -> Reply {
        self.drop_if_expired(key);
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
        if self.len == 0 {
            // Hundreds of FLUSHALLs in one MULTI once stalled every node past
            // an election timeout; an empty map needs no pass at all.
            return Reply::Ok;
        }
        let shard_count = self.map.shards().len();
        let old = self.map.take_written();
        let expires = std::mem::replace(&mut self.expires, Deadlines::new(shard_count));
        self.flushed.push(FlushedKeys {
            keys: old,
            _timeouts: expires,
        });
        self.len = 0;
        self.data_bytes = 0;
        Reply::Ok
    }

    /// The keys FLUSHALL emptied since the last call, for the caller to free
    /// off its event loop.
    pub fn take_flushed(&mut self) -> Vec<FlushedKeys> {
        std::mem::take(&mut self.flushed)
    }

    /// Deletes `key` and its timeout; whether it was there.
    pub(super) fn delete_one(&mut self, key: &[u8]) -> bool {
        self.expires.remove(key);
        let Some(old) = self.map.remove(key) else {
            return false;
        };
        self.len -= 1;
        self.data_bytes -= key.len() + old.value().len();
        true
    }
}
