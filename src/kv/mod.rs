//! The replicated state machine: a key-value map. Pure: no IO, no clock.
//!
//! Every node applies the same commands in the same order and must end with
//! the same map, so nothing here depends on the process: the map's hasher is
//! unseeded (`shards.rs`) and snapshots are written in a canonical order
//! (`snapshot.rs`). A command that fails (INCR on a non-integer) answers an
//! error and changes nothing, identically on every node.

pub mod command;
mod deadlines;
mod entry;
pub mod expiry;
pub mod glob;
mod keyspace;
mod payload;
pub mod reply;
mod shard;
mod shards;
mod snapshot;
mod timeouts;

pub use command::{
    parse_integer, Command, CommandError, DecodeError, ScanOptions, SetCondition, SetOptions,
};
pub use keyspace::FlushedKeys;
pub use payload::{encode_set, MAX_MULTI_DEPTH};
pub use reply::Reply;
pub use shards::{KeyHasher, DEFAULT_SHARD_COUNT, PREFETCH_KEYS_MAX};
pub use snapshot::KvSnapshot;

use deadlines::Deadlines;
use shards::ShardedMap;
use std::hash::{Hash, Hasher};

/// Whether `payload` decodes as a command, as [`KvStore::apply_encoded`]
/// needs, without applying it. A SET, nearly every entry, is checked in place.
pub fn check_encoded(payload: &[u8]) -> Result<(), DecodeError> {
    if payload::decode_set(payload).is_some() {
        return Ok(());
    }
    Command::decode(payload).map(drop)
}

/// What `approx_bytes` adds per key beyond key and value bytes: the entry's
/// 2-3 byte header, the allocator's 8-byte chunk header and rounding to 16
/// (8 on average), and a 16-byte table slot (hash and pointer, see `shard.rs`)
/// at the table's average load of a little over half: 28 bytes
/// (tests/kv_memory.rs measures the total).
const ENTRY_OVERHEAD_BYTES: usize = 46;

const OVERFLOW_ERROR: &str = "ERR increment or decrement would overflow";

/// The most bytes of values one reply carries (Redis's `proto-max-bulk-len`
/// for a single value is the same figure). An MGET beyond it, or a read in a
/// transaction beyond what the transaction's earlier reads left, answers an
/// error: a few requests naming a big value many times could otherwise make
/// every node that applies them allocate gigabytes.
pub const MAX_REPLY_VALUE_BYTES: usize = 512 << 20;

/// `Clone` is O(shards) and shares every shard copy-on-write, like a snapshot.
pub struct KvStore {
    map: ShardedMap,
    /// Number of keys, kept so `len` is O(1). Invariant: the sum of shard lengths.
    len: usize,
    /// Sum of key and value lengths. Invariant: matches the map's contents.
    data_bytes: usize,
    /// [`MAX_REPLY_VALUE_BYTES`], smaller in tests.
    max_reply_value_bytes: usize,
    /// What FLUSHALL emptied, until [`KvStore::take_flushed`].
    flushed: Vec<FlushedKeys>,
    /// Deadlines of the keys that have a timeout.
    expires: Deadlines,
    /// The latest leader stamp applied, unix ms (see `timeouts.rs`).
    clock: u64,
}

impl Clone for KvStore {
    /// The copy holds no flushed keys: those are the original's to hand over.
    fn clone(&self) -> KvStore {
        KvStore {
            map: self.map.clone(),
            len: self.len,
            data_bytes: self.data_bytes,
            max_reply_value_bytes: self.max_reply_value_bytes,
            flushed: Vec::new(),
            expires: self.expires.clone(),
            clock: self.clock,
        }
    }
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("len", &self.len)
            .field("data_bytes", &self.data_bytes)
            .field("shards", &self.map.shards().len())
            .finish()
    }
}

impl Default for KvStore {
    fn default() -> KvStore {
        KvStore::new()
    }
}

impl KvStore {
    pub fn new() -> KvStore {
        KvStore::with_shards(DEFAULT_SHARD_COUNT)
    }

    /// A store with `shard_count` copy-on-write shards (a power of two). More
    /// shards make the copy after a snapshot finer-grained; fewer make `new`
    /// and `snapshot_view` cheaper.
    pub fn with_shards(shard_count: usize) -> KvStore {
        KvStore {
            map: ShardedMap::new(shard_count),
            len: 0,
            data_bytes: 0,
            max_reply_value_bytes: MAX_REPLY_VALUE_BYTES,
            flushed: Vec::new(),
            expires: Deadlines::new(shard_count),
            clock: 0,
        }
    }

    /// [`apply`](Self::apply) at the leader's stamp `stamp` (unix ms), which
    /// becomes the store's clock. Stamps follow the leaders' wall clocks and
    /// may go back (a clock set back, a new leader's behind the old one's):
    /// what matters is that every node applies each entry at its stamp.
    pub fn apply_at(&mut self, command: &Command, stamp: u64) -> Reply {
        self.clock = stamp;
        self.apply(command)
    }

    /// Applies a command (writes and reads alike, e.g. a `Multi` holding both)
    /// at the store's clock; returns the reply the client gets. A failing
    /// command (INCR on a non-integer) returns an error reply and changes
    /// nothing.
    pub fn apply(&mut self, command: &Command) -> Reply {
        let mut budget = self.max_reply_value_bytes;
        self.apply_within(command, &mut budget)
    }

    /// [`apply`](Self::apply), the values its reply carries taken from
    /// `budget` (a transaction's replies share one).
    fn apply_within(&mut self, command: &Command, budget: &mut usize) -> Reply {
        match command {
            Command::Set(key, value) => {
                self.set_from_slices(key, value);
                Reply::Ok
            }
            Command::MSet(pairs) => {
                for (key, value) in pairs {
                    self.set_from_slices(key, value);
                }
                Reply::Ok
            }
            Command::SetWith(key, value, options) => self.set_with(key, value, options, budget),
            Command::Del(keys) => Reply::Integer(self.delete(keys)),
            Command::IncrBy(key, by) => self.incr_by(key, *by),
            Command::MSetNx(pairs) => self.mset_nx(pairs),
            Command::Append(key, tail) => self.append(key, tail),
            Command::GetDel(key) => self.get_del(key, budget),
            Command::GetEx(key, action) => self.get_ex(key, *action, budget),
            Command::Rename(source, destination, nx) => self.rename(source, destination, *nx),
            Command::FlushAll => self.flush_all(),
            Command::Expire(key, expiry, condition) => self.expire(key, *expiry, *condition),
            Command::Persist(key) => self.persist(key),
            Command::Purge(keys) => self.purge(keys),
            Command::Multi(commands) if command.is_write() => {
                let mut budget = self.max_reply_value_bytes;
                let replies = commands
                    .iter()
                    .map(|c| self.apply_within(c, &mut budget))
                    .collect();
                Reply::Array(replies)
            }
            // Every write is above; `read_within` names each read.
            read => self.read_within(read, budget, self.clock),
        }
    }

    /// SET with options: writes unless its condition fails, and answers the
    /// old value for GET, taking its bytes from `budget` (a transaction's
    /// replies share one). An old value past the budget is an error, and an
    /// error changes nothing.
    fn set_with(
        &mut self,
        key: &[u8],
        value: &[u8],
        options: &SetOptions,
        budget: &mut usize,
    ) -> Reply {
        self.drop_if_expired(key);
        let old = self.map.get(key);
        if options.get && old.is_some_and(|old| old.len() > *budget) {
            return self.reply_too_large();
        }
        let writes = match options.condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => old.is_none(),
            SetCondition::IfPresent => old.is_some(),
        };
        let reply = if options.counted {
            Reply::Integer(i64::from(writes))
        } else if options.get {
            self.value_reply(old, budget)
        } else if writes {
            Reply::Ok
        } else {
            Reply::Nil
        };
        if writes {
            let kept = options.keep_ttl.then(|| self.expires.get(key)).flatten();
            self.set_from_slices(key, value);
            match (options.expiry, kept) {
                (Some(expiry), _) => self.set_deadline(key, expiry.deadline(self.clock)),
                (None, Some(deadline)) => self.expires.set(key, deadline),
                (None, None) => {}
            }
        }
        reply
    }

    /// Prepares the map for applying these payloads next (a hint; it changes
    /// nothing): see `ShardedMap::prefetch`. Only SETs are looked at.
    pub fn prefetch_encoded<'a>(&self, payloads: impl Iterator<Item = &'a [u8]>) {
        let mut keys: [&[u8]; shards::PREFETCH_KEYS_MAX] = [&[]; shards::PREFETCH_KEYS_MAX];
        let mut count = 0;
        for payload in payloads.take(shards::PREFETCH_KEYS_MAX) {
            if let Some((key, _)) = payload::decode_set(payload) {
                keys[count] = key;
                count += 1;
            }
        }
        self.map.prefetch(&keys[..count]);
    }

    /// Applies a command in its log-payload encoding (see `payload.rs`). A SET
    /// goes straight from the payload's bytes into the map: an entry holds its
    /// key and value in one allocation, so decoding them into buffers of their
    /// own first would only add two allocations and copies.
    pub fn apply_encoded(&mut self, payload: &[u8]) -> Result<Reply, DecodeError> {
        if let Some((key, value)) = payload::decode_set(payload) {
            self.set_from_slices(key, value);
            return Ok(Reply::Ok);
        }
        match Command::decode_stamped(payload)? {
            (Some(stamp), command) => Ok(self.apply_at(&command, stamp)),
            (None, command) => Ok(self.apply(&command)),
        }
    }

    /// Answers a read-only command without changing anything.
    ///
    /// # Panics
    /// If `command.is_write()`: the caller must route writes through the log.
    pub fn read(&self, command: &Command) -> Reply {
        self.read_at(command, self.clock)
    }

    /// [`read`](Self::read) at `now` (unix ms): keys whose deadline is not
    /// after it are absent. A leader reads at its own wall clock.
    pub fn read_at(&self, command: &Command, now: u64) -> Reply {
        let mut budget = self.max_reply_value_bytes;
        self.read_within(command, &mut budget, now)
    }

    /// [`read`](Self::read), answering an error instead of values beyond
    /// `budget` bytes, and taking the values' bytes from it (a transaction's
    /// reads share one).
    fn read_within(&self, command: &Command, budget: &mut usize, now: u64) -> Reply {
        match command {
            Command::Get(key) => self.value_reply(self.live(key, now), budget),
            Command::MGet(keys) => {
                let mut replies = Vec::with_capacity(keys.len());
                let mut bytes = 0;
                for key in keys {
                    replies.push(match self.live(key, now) {
                        Some(value) => {
                            bytes += value.len();
                            if bytes > *budget {
                                return self.reply_too_large();
                            }
                            Reply::Bulk(value.to_vec())
                        }
                        None => Reply::Nil,
                    });
                }
                *budget -= bytes;
                Reply::Array(replies)
            }
            Command::Exists(keys) => {
                let found = keys.iter().filter(|k| self.live(k, now).is_some()).count();
                Reply::Integer(found as i64)
            }
            Command::Keys(pattern) => self.keys(pattern, budget, now),
            Command::Scan(scan) => self.scan(scan, budget, now),
            Command::Type(key) => Reply::Status(
                if self.live(key, now).is_some() {
                    "string"
                } else {
                    "none"
                }
                .to_string(),
            ),
            Command::Strlen(key) => {
                Reply::Integer(self.live(key, now).map_or(0, |value| value.len() as i64))
            }
            // The entry's one allocation and its 16-byte table slot (hash and
            // pointer); the timeouts index adds a little for a key with one.
            Command::MemoryUsage(key) => match self.live(key, now) {
                Some(value) => {
                    Reply::Integer((entry::allocated_bytes(key.len(), value.len()) + 16) as i64)
                }
                None => Reply::Nil,
            },
            Command::GetRange(key, start, end) => {
                let value = self.live(key, now).unwrap_or(&[]);
                self.value_reply(Some(byte_range(value, *start, *end)), budget)
            }
            Command::Ttl(key) => self.time_left(key, now, false, false),
            Command::Pttl(key) => self.time_left(key, now, true, false),
            Command::ExpireTime(key, millis) => self.time_left(key, now, *millis, true),
            Command::Invalid(text) => Reply::Error(text.clone()),
            Command::DbSize => Reply::Integer(self.len() as i64),
            Command::GetExRefused(key, text) => match self.live(key, now) {
                Some(_) => Reply::Error(text.clone()),
                None => Reply::Nil,
            },
            Command::Multi(commands) if !command.is_write() => {
                let mut budget = self.max_reply_value_bytes;
                let replies = commands
                    .iter()
                    .map(|c| self.read_within(c, &mut budget, now));
                Reply::Array(replies.collect())
            }
            Command::Set(..)
            | Command::SetWith(..)
            | Command::MSet(_)
            | Command::Del(_)
            | Command::IncrBy(..)
            | Command::MSetNx(_)
            | Command::Append(..)
            | Command::GetDel(_)
            | Command::GetEx(..)
            | Command::Rename(..)
            | Command::FlushAll
            | Command::Expire(..)
            | Command::Persist(_)
            | Command::Purge(_)
            | Command::Multi(_) => {
                panic!(
                    "KvStore::read called with write command '{}'",
                    command.name()
                )
            }
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Memory used by keys and values plus an estimate of the map's overhead
    /// (for INFO; not counting shards copied for a snapshot still being written).
    pub fn approx_bytes(&self) -> usize {
        self.data_bytes + self.len * ENTRY_OVERHEAD_BYTES
    }

    /// An order-independent hash of the whole contents: equal maps give equal
    /// digests whatever their history or shard count (for tests comparing nodes).
    /// O(keys).
    pub fn digest(&self) -> u64 {
        let digest = digest_of(self.map.shards().iter().map(|shard| &**shard));
        digest_with_timeouts(digest, &self.expires, self.clock)
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key)
    }

    /// A value as a bulk reply (nil if absent), its bytes taken from
    /// `budget`, or the error for a reply past it.
    fn value_reply(&self, value: Option<&[u8]>, budget: &mut usize) -> Reply {
        match value {
            Some(value) if value.len() > *budget => self.reply_too_large(),
            Some(value) => {
                *budget -= value.len();
                Reply::Bulk(value.to_vec())
            }
            None => Reply::Nil,
        }
    }

    fn reply_too_large(&self) -> Reply {
        Reply::Error(format!(
            "ERR reply exceeds the limit of {} bytes of values",
            self.max_reply_value_bytes
        ))
    }

    #[cfg(test)]
    pub(crate) fn set_max_reply_value_bytes(&mut self, bytes: usize) {
        self.max_reply_value_bytes = bytes;
    }

    /// Sets `key` without a timeout, as SET does.
    fn set_from_slices(&mut self, key: &[u8], value: &[u8]) {
        if self.expires.len() > 0 {
            self.expires.remove(key);
        }
        match self.map.set(key, value) {
            Some(old_len) => self.data_bytes = self.data_bytes - old_len + value.len(),
            None => {
                self.len += 1;
                self.data_bytes += key.len() + value.len();
            }
        }
    }

    /// Inserts an entry read from a snapshot; returns false if its key is
    /// already present (and leaves the store unchanged).
    fn insert_new(&mut self, entry: entry::Entry) -> bool {
        let (key_len, value_len) = (entry.key().len(), entry.value().len());
        if !self.map.insert_new(entry) {
            return false;
        }
        self.len += 1;
        self.data_bytes += key_len + value_len;
        true
    }

    fn delete(&mut self, keys: &[Vec<u8>]) -> i64 {
        let mut removed = 0;
        for key in keys {
            let expired = self.is_expired(key, self.clock);
            if self.delete_one(key) && !expired {
                removed += 1;
            }
        }
        removed
    }

    /// Looks the key up once, in the shard it will write to: when a snapshot
    /// holds that shard, even a failing INCR copies it, as the next write to
    /// the shard would anyway.
    fn incr_by(&mut self, key: &[u8], by: i64) -> Reply {
        self.drop_if_expired(key);
        let hash = shards::hash_key(key);
        let shard = self.map.shard_mut(hash);
        let mut existing = shard.get_mut(key, hash);
        let current = match &existing {
            None => 0,
            Some(found) => match parse_integer(found.value()) {
                Some(n) => n,
                None => return Reply::Error(CommandError::NotInteger.to_string()),
            },
        };
        let Some(new) = current.checked_add(by) else {
            return Reply::Error(OVERFLOW_ERROR.to_string());
        };
        let mut buffer = [0u8; 20];
        let digits = format_i64(new, &mut buffer);
        let old_len = match &mut existing {
            Some(found) => Some(found.set_value(digits)),
            None => {
                shard.insert_absent(hash, entry::Entry::new(key, digits));
                None
            }
        };
        match old_len {
            Some(old_len) => self.data_bytes = self.data_bytes - old_len + digits.len(),
            None => {
                self.len += 1;
                self.data_bytes += key.len() + digits.len();
            }
        }
        Reply::Integer(new)
    }

    /// Checks the counters against the shards (O(keys); for tests).
    #[cfg(test)]
    fn assert_invariants(&self) {
        let shards = self.map.shards();
        let len: usize = shards.iter().map(|s| s.len()).sum();
        let bytes: usize = shards
            .iter()
            .flat_map(|s| s.iter())
            .map(|entry| entry.key().len() + entry.value().len())
            .sum();
        assert_eq!(
            (self.len, self.data_bytes),
            (len, bytes),
            "(len, data_bytes) drifted"
        );
        let timeouts: Vec<&[u8]> = self
            .expires
            .shards()
            .iter()
            .flat_map(|shard| shard.keys())
            .map(|key| &**key)
            .collect();
        assert_eq!(timeouts.len(), self.expires.len(), "timeout count drifted");
        for key in timeouts {
            assert!(self.map.get(key).is_some(), "a timeout for no key: {key:?}");
        }
    }
}

/// Writes `n` in decimal into the end of `buffer` (20 bytes fit any i64).
fn format_i64(n: i64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut rest = n.unsigned_abs();
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buffer[at] = b'-';
    }
    &buffer[at..]
}

/// Sum of per-entry hashes (so any order gives the same result), then mixed with
/// the count.
fn digest_of<'a>(shards: impl Iterator<Item = &'a shards::Shard>) -> u64 {
    let mut sum: u64 = 0;
    let mut count: u64 = 0;
    for shard in shards {
        for entry in shard.iter() {
            let mut hasher = KeyHasher::default();
            entry.parts().hash(&mut hasher);
            sum = sum.wrapping_add(hasher.finish());
            count += 1;
        }
    }
    let mut hasher = KeyHasher::default();
    hasher.write_u64(sum);
    hasher.write_u64(count);
    hasher.finish()
}

/// `digest` with the keys' timeouts and the clock folded in; unchanged when
/// no key has a timeout and no stamp was applied.
fn digest_with_timeouts(digest: u64, expires: &Deadlines, clock: u64) -> u64 {
    if expires.len() == 0 && clock == 0 {
        return digest;
    }
    let mut sum: u64 = 0;
    for (key, at) in expires.shards().iter().flat_map(|shard| shard.iter()) {
        let mut hasher = KeyHasher::default();
        key.hash(&mut hasher);
        hasher.write_u64(*at);
        sum = sum.wrapping_add(hasher.finish());
    }
    let mut hasher = KeyHasher::default();
    hasher.write_u64(digest);
    hasher.write_u64(sum);
    hasher.write_u64(clock);
    hasher.finish()
}

#[cfg(test)]
mod keyspace_scan_tests;
#[cfg(test)]
mod keyspace_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timeouts_tests;

/// GETRANGE's bytes of `value`, as Redis 7.0 picks them: negative indexes
/// count from the end, both are clamped into the value, and a range that
/// ends before it starts is empty.
fn byte_range(value: &[u8], start: i64, end: i64) -> &[u8] {
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    let from_end = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (start, end) = (from_end(start), from_end(end).min(len - 1));
    if start > end || len == 0 {
        return &[];
    }
    &value[start as usize..=end as usize]
}
