//! The key-value map as a fixed array of copy-on-write shards.
//!
//! Why shards: a snapshot must be taken without stalling the event loop, of a
//! map that may hold millions of keys. Each shard is an `Arc<Shard>`; a
//! snapshot clones the `Arc`s (O(shards)), and a later write to a shard the
//! snapshot still holds clones that one shard only (`Arc::make_mut`), so the
//! cost of copy-on-write is spread over writes in pieces of `len / shards` keys.
//!
//! Why a fixed hasher: `std`'s `RandomState` is seeded per process, so the
//! iteration order of a map would differ between runs and nodes. `KeyHasher` has
//! no seed, so the same operations give the same map on every node (determinism
//! for the simulator). Snapshots additionally sort each shard (see `snapshot.rs`).

use super::entry::Entry;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

/// Default number of shards. While a snapshot is written, the first write to
/// each shard copies it, on the event loop; a batch of writes to random keys
/// touches about as many shards as it has writes. With 1,000,000 keys a shard
/// holds about 15 entries, so a batch of 1,000 such writes copies ~15,000
/// entries (a few milliseconds); with 4096 shards it was ~240,000 (measured
/// 160 ms on a busy 2-core machine), longer than a heartbeat. `snapshot_view`
/// stays cheap: 65,536 reference-count increments, well under a millisecond.
pub const DEFAULT_SHARD_COUNT: usize = 65536;

/// One shard: a set of entries (key and value in one allocation, see
/// `entry.rs`) looked up by key bytes. A table slot is one 8-byte pointer.
#[derive(Clone, Default)]
pub struct Shard {
    entries: HashSet<Entry, BuildHasherDefault<KeyHasher>>,
}

/// An entry found through `Shard::get_mut`: holding it borrows the shard
/// exclusively, which is what makes writing its value in place sound.
pub struct ValueMut<'a> {
    entry: &'a Entry,
    _shard: PhantomData<&'a mut Shard>,
}

impl ValueMut<'_> {
    #[inline]
    pub fn value(&self) -> &[u8] {
        self.entry.value()
    }

    /// Replaces the value (in place when the length is unchanged); returns the
    /// old value's length.
    #[inline]
    pub fn set(&mut self, value: &[u8]) -> usize {
        // SAFETY: `self` exclusively borrows the shard that owns the entry (see
        // `Shard::get_mut`), so nothing else refers to it; `value` cannot point
        // into the entry, whose bytes are only reachable through that shard.
        unsafe { self.entry.set_value(value) }
    }
}

impl Shard {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.entries.get(key)
    }

    #[inline]
    pub fn get_mut(&mut self, key: &[u8]) -> Option<ValueMut<'_>> {
        // `&mut self` stays borrowed for the ValueMut's lifetime.
        let entry = self.entries.get(key)?;
        Some(ValueMut {
            entry,
            _shard: PhantomData,
        })
    }

    /// Sets `key` to `value`; returns the old value's length if the key was present.
    #[inline]
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Option<usize> {
        if let Some(mut found) = self.get_mut(key) {
            return Some(found.set(value));
        }
        self.entries.insert(Entry::new(key, value));
        None
    }

    /// Inserts an entry whose key is not present; returns false (and drops it)
    /// if it is.
    pub fn insert_new(&mut self, entry: Entry) -> bool {
        self.entries.insert(entry)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        self.entries.take(key)
    }
}

impl<'a> IntoIterator for &'a Shard {
    type Item = &'a Entry;
    type IntoIter = std::collections::hash_set::Iter<'a, Entry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

/// A small unseeded hasher built on the folded 64×64→128-bit multiply (as in
/// foldhash/ahash's fallback): fast on short keys and well mixed in every bit,
/// which matters because the shard index and the shard's table use
/// different bits of the same hash.
#[derive(Clone, Copy, Debug)]
pub struct KeyHasher {
    state: u64,
}

const SEED: u64 = 0x243f_6a88_85a3_08d3; // digits of pi: nothing up the sleeve
const MUL: u64 = 0x9e37_79b9_7f4a_7c15; // 2^64 / golden ratio
const MUL2: u64 = 0xd6e8_feb8_6659_fd93;

impl Default for KeyHasher {
    fn default() -> KeyHasher {
        KeyHasher { state: SEED }
    }
}

#[inline]
fn folded_multiply(x: u64, y: u64) -> u64 {
    let full = u128::from(x) * u128::from(y);
    (full as u64) ^ ((full >> 64) as u64)
}

#[inline]
fn read_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(buf)
}

impl Hasher for KeyHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut state = self.state;
        let mut chunks = bytes.chunks_exact(16);
        for chunk in &mut chunks {
            state = folded_multiply(read_u64(chunk) ^ state, read_u64(&chunk[8..]) ^ MUL);
        }
        let rest = chunks.remainder();
        let (a, b) = if rest.len() >= 8 {
            (read_u64(rest), read_u64(&rest[rest.len() - 8..]))
        } else if rest.len() >= 4 {
            let lo = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
            let tail = &rest[rest.len() - 4..];
            let hi = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
            (u64::from(lo), u64::from(hi))
        } else if !rest.is_empty() {
            let mid = rest[rest.len() / 2];
            let bits =
                u64::from(rest[0]) | u64::from(mid) << 8 | u64::from(rest[rest.len() - 1]) << 16;
            (bits, 0)
        } else {
            (0, 0)
        };
        self.state = folded_multiply(a ^ state ^ MUL2, b ^ MUL ^ rest.len() as u64);
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.state = folded_multiply(value ^ self.state, MUL);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.write_u64(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        folded_multiply(self.state, MUL2).rotate_left(23)
    }
}

/// Hashes a key the way the shards' tables do (an `Entry` hashes as its key).
#[inline]
pub fn hash_key(key: &[u8]) -> u64 {
    let mut hasher = KeyHasher::default();
    std::hash::Hash::hash(key, &mut hasher);
    hasher.finish()
}

/// Most keys [`ShardedMap::prefetch`] looks ahead at once: enough to keep the
/// memory system busy, few enough that the lines stay in cache until used.
pub const PREFETCH_KEYS_MAX: usize = 32;

/// Hints the CPU to bring the cache line at `at` into cache. Never faults,
/// whatever the address.
#[inline]
fn prefetch_line<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch is only a hint; it reads nothing the program can
        // observe and does not fault on any address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// The sharded map. Invariant: every key lives in shard `shard_index(hash_key(key))`.
#[derive(Clone)]
pub struct ShardedMap {
    shards: Vec<Arc<Shard>>,
    /// `shards.len() - 1`; the count is a power of two.
    mask: u64,
}

impl ShardedMap {
    pub fn new(shard_count: usize) -> ShardedMap {
        assert!(
            shard_count.is_power_of_two(),
            "shard count {} is not a power of two",
            shard_count
        );
        // All shards start as the same empty map; the first write to each
        // clones it (an empty HashSet does not allocate), so `new` is cheap.
        let empty = Arc::new(Shard::default());
        ShardedMap {
            shards: vec![empty; shard_count],
            mask: shard_count as u64 - 1,
        }
    }

    /// Uses bits 32.. of the hash: hashbrown takes the bucket from the low bits
    /// and the control tag from the top 7, so this keeps both varied inside a shard.
    #[inline]
    fn shard_index(&self, key: &[u8]) -> usize {
        ((hash_key(key) >> 32) & self.mask) as usize
    }

    #[inline]
    pub fn shard(&self, key: &[u8]) -> &Shard {
        &self.shards[self.shard_index(key)]
    }

    /// The shard holding `key`, cloned first if a snapshot still shares it.
    #[inline]
    pub fn shard_mut(&mut self, key: &[u8]) -> &mut Shard {
        let index = self.shard_index(key);
        Arc::make_mut(&mut self.shards[index])
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.shard(key).get(key).map(Entry::value)
    }

    /// Starts loading, for each key, the first two links a lookup follows:
    /// the shard's slot in `shards`, then the shard itself. With many keys
    /// these are cache misses that a lookup would take one after the other;
    /// here the misses of all `keys` are in flight together. (The second
    /// pass reads the slots the first one asked for, so it stalls at most
    /// once, on the slowest of them.)
    pub fn prefetch(&self, keys: &[&[u8]]) {
        let mut slots = [0usize; PREFETCH_KEYS_MAX];
        let keys = &keys[..keys.len().min(PREFETCH_KEYS_MAX)];
        for (slot, key) in slots.iter_mut().zip(keys) {
            *slot = self.shard_index(key);
            prefetch_line(&self.shards[*slot]);
        }
        for &slot in &slots[..keys.len()] {
            prefetch_line(Arc::as_ptr(&self.shards[slot]));
        }
    }

    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fixed_across_runs() {
        // A change here changes snapshot order and shard placement on disk:
        // deliberate changes only.
        assert_eq!(hash_key(b""), hash_key(b""));
        assert_ne!(hash_key(b"a"), hash_key(b"b"));
        assert_ne!(hash_key(b"ab"), hash_key(b"ba"));
        assert_ne!(hash_key(&[0; 16]), hash_key(&[0; 17]));
    }

    #[test]
    fn shards_are_evenly_used() {
        let map = ShardedMap::new(64);
        let mut counts = [0usize; 64];
        for i in 0..64_000u32 {
            counts[map.shard_index(format!("key:{:012}", i).as_bytes())] += 1;
        }
        let (min, max) = (counts.iter().min(), counts.iter().max());
        assert!(
            min >= Some(&800) && max <= Some(&1200),
            "min {:?} max {:?}",
            min,
            max
        );
    }

    #[test]
    fn write_after_snapshot_clones_only_that_shard() {
        let mut map = ShardedMap::new(8);
        map.shard_mut(b"a").set(b"a", b"1");
        map.shard_mut(b"b").set(b"b", b"1");
        let held = map.shards().to_vec();
        assert_eq!(map.shard_mut(b"a").set(b"a", b"2"), Some(1));
        let shared = held
            .iter()
            .zip(map.shards())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert_eq!(shared, 7);
        assert_eq!(
            held[map.shard_index(b"a")].get(b"a").map(Entry::value),
            Some(&b"1"[..])
        );
        assert_eq!(map.get(b"a"), Some(&b"2"[..]));
    }
}
