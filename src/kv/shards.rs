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
pub use super::shard::Shard;
use std::hash::Hasher;
use std::sync::Arc;

/// Default number of shards. While a snapshot is written, the first write to
/// each shard copies it, on the event loop; a batch of writes to random keys
/// touches about as many shards as it has writes. With 1,000,000 keys a shard
/// holds about 15 entries, so a batch of 1,000 such writes copies ~15,000
/// entries (a few milliseconds); with 4096 shards it was ~240,000 (measured
/// 160 ms on a busy 2-core machine), longer than a heartbeat. `snapshot_view`
/// stays cheap: 65,536 reference-count increments, well under a millisecond.
pub const DEFAULT_SHARD_COUNT: usize = 65536;

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

/// Most keys `ShardedMap::prefetch` looks ahead at once: enough to keep the
/// memory system busy, few enough that the lines stay in cache until used.
pub const PREFETCH_KEYS_MAX: usize = 32;

/// Hints the CPU to bring the cache line at `at` into cache. Never faults,
/// whatever the address.
#[inline]
pub(super) fn prefetch_line<T>(at: *const T) {
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
    /// The shard every slot starts as; a slot still pointing at it was
    /// never written.
    empty: Arc<Shard>,
}

impl ShardedMap {
    pub fn new(shard_count: usize) -> ShardedMap {
        assert!(
            shard_count.is_power_of_two(),
            "shard count {} is not a power of two",
            shard_count
        );
        // All shards start as the same empty map; the first write to each
        // clones it (an empty Shard does not allocate), so `new` is cheap.
        let empty = Arc::new(Shard::default());
        ShardedMap {
            shards: vec![empty.clone(); shard_count],
            mask: shard_count as u64 - 1,
            empty,
        }
    }

    /// Empties the map and returns the shards that were ever written, for
    /// the caller to free. Comparing pointers is far cheaper than a fresh
    /// map, which costs one reference count per shard (0.7 ms at 65,536):
    /// this way a FLUSHALL after a few writes costs a pass over the slots.
    pub fn take_written(&mut self) -> Vec<Arc<Shard>> {
        let mut written = Vec::new();
        for slot in self.shards.iter_mut() {
            if !Arc::ptr_eq(slot, &self.empty) {
                written.push(std::mem::replace(slot, self.empty.clone()));
            }
        }
        written
    }

    /// Uses bits 32.. of the hash: a shard's table takes a slot from the low
    /// bits, so this keeps them varied inside a shard.
    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        ((hash >> 32) & self.mask) as usize
    }

    #[inline]
    fn shard_of(&self, hash: u64) -> &Shard {
        &self.shards[self.shard_index(hash)]
    }

    /// The shard for `hash`, copied first if a snapshot still shares it.
    #[inline]
    pub fn shard_mut(&mut self, hash: u64) -> &mut Shard {
        let index = self.shard_index(hash);
        Arc::make_mut(&mut self.shards[index])
    }

    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let hash = hash_key(key);
        self.shard_of(hash).get(key, hash).map(Entry::value)
    }

    /// Sets `key` to `value`; returns the old value's length if it was present.
    #[inline]
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Option<usize> {
        let hash = hash_key(key);
        self.shard_mut(hash).set(key, hash, value)
    }

    /// Removes `key`, without copying a shard a snapshot holds when the key is
    /// not there.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let hash = hash_key(key);
        self.shard_of(hash).get(key, hash)?;
        self.shard_mut(hash).remove(key, hash)
    }

    /// Inserts an entry whose key is not present; returns false (and drops it)
    /// if it is.
    pub fn insert_new(&mut self, entry: Entry) -> bool {
        let hash = hash_key(entry.key());
        self.shard_mut(hash).insert_new(hash, entry)
    }

    /// Starts loading, for each key, the links a lookup follows: the shard's
    /// slot in `shards`, the shard, the key's home slot in the shard's table,
    /// and the entry. With many keys these are cache misses that a lookup
    /// would take one after the other; here each pass issues the loads of all
    /// `keys` together, and reads only what the pass before asked for, so it
    /// stalls at most once, on the slowest of them.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        let keys = &keys[..keys.len().min(PREFETCH_KEYS_MAX)];
        let mut hashes = [0u64; PREFETCH_KEYS_MAX];
        let mut slots = [0usize; PREFETCH_KEYS_MAX];
        for ((hash, slot), key) in hashes.iter_mut().zip(slots.iter_mut()).zip(keys) {
            *hash = hash_key(key);
            *slot = self.shard_index(*hash);
            prefetch_line(&self.shards[*slot]);
        }
        let count = keys.len();
        for &slot in &slots[..count] {
            prefetch_line(Arc::as_ptr(&self.shards[slot]));
        }
        for (&slot, &hash) in slots[..count].iter().zip(&hashes) {
            prefetch_line(self.shards[slot].home(hash));
        }
        for (&slot, &hash) in slots[..count].iter().zip(&hashes) {
            if let Some(entry) = self.shards[slot].find_entry(hash) {
                // A 16-byte key and 100-byte value span two lines.
                prefetch_line(entry.as_ptr());
                prefetch_line(entry.as_ptr().wrapping_add(64));
            }
        }
    }

    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    /// Whether shard `index` was never written (a pointer comparison: no
    /// shard is read).
    pub fn is_untouched(&self, index: usize) -> bool {
        self.shards
            .get(index)
            .is_some_and(|shard| Arc::ptr_eq(shard, &self.empty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fixed_across_runs() {
        // A change here changes snapshot order and shard placement on disk:
        // deliberate changes only. Pinned values, through every path of
        // `write`: no tail, tails of 1-3, 4-7 and 8-15 bytes, 16-byte chunks.
        let pinned: [(&[u8], u64); 7] = [
            (b"", 0xfa24af427935d1a6),
            (b"a", 0xfd96e8382b5ef8cd),
            (b"abcde", 0xff46a42ec0960e42),
            (b"twelve bytes", 0x4b7a972f1dc8c1e6),
            (b"key:000000000001", 0x2072b9e62e0199a5),
            (&[0; 17], 0xa2ba7b3717f66461),
            (b"this key is longer than sixteen bytes", 0xc705cef0d9999518),
        ];
        for (key, hash) in pinned {
            assert_eq!(hash_key(key), hash, "{:?}", String::from_utf8_lossy(key));
        }
        assert_ne!(hash_key(b"a"), hash_key(b"b"));
        assert_ne!(hash_key(b"ab"), hash_key(b"ba"));
        assert_ne!(hash_key(&[0; 16]), hash_key(&[0; 17]));
    }

    #[test]
    fn shards_are_evenly_used() {
        let map = ShardedMap::new(64);
        let mut counts = [0usize; 64];
        for i in 0..64_000u32 {
            counts[map.shard_index(hash_key(format!("key:{:012}", i).as_bytes()))] += 1;
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
    fn take_written_hands_over_only_written_shards() {
        let mut map = ShardedMap::new(8);
        map.set(b"a", b"1");
        map.set(b"b", b"1");
        map.remove(b"b");
        let distinct_shards =
            usize::from(map.shard_index(hash_key(b"a")) != map.shard_index(hash_key(b"b"))) + 1;
        let taken = map.take_written();
        assert_eq!(taken.len(), distinct_shards);
        let keys: usize = taken.iter().map(|shard| shard.len()).sum();
        assert_eq!(keys, 1);
        assert_eq!(map.get(b"a"), None);
        assert!(map
            .shards()
            .iter()
            .all(|shard| Arc::ptr_eq(shard, &map.empty)));
        assert!(map.take_written().is_empty());
        map.set(b"a", b"2");
        assert_eq!(map.get(b"a"), Some(&b"2"[..]));
    }

    #[test]
    fn write_after_snapshot_clones_only_that_shard() {
        let mut map = ShardedMap::new(8);
        map.set(b"a", b"1");
        map.set(b"b", b"1");
        let held = map.shards().to_vec();
        assert_eq!(map.set(b"a", b"2"), Some(1));
        let shared = held
            .iter()
            .zip(map.shards())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert_eq!(shared, 7);
        assert_eq!(
            held[map.shard_index(hash_key(b"a"))]
                .get(b"a", hash_key(b"a"))
                .map(Entry::value),
            Some(&b"1"[..])
        );
        assert_eq!(map.get(b"a"), Some(&b"2"[..]));
    }
}
