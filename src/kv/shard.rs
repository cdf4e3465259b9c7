//! One shard of the map: an open-addressing table of entries with linear
//! probing, each slot holding the key's full hash beside the entry pointer.
//!
//! Why not `std::collections::HashSet<Entry>`: applying a committed SET is a
//! chain of dependent cache misses (shard slot, shard, table, entry), and the
//! apply loop hides them by prefetching each link for a batch of keys before
//! using any (`ShardedMap::prefetch`). std's set does not say where a key's
//! bucket lies, so the last two links could not be prefetched; here
//! [`Shard::home`] gives the slot's address and [`Shard::find_entry`] the
//! entry's. Keeping the hash in the slot also means a probe touches an entry
//! only when the full 64-bit hash matches, and the table grows without
//! hashing a key again.
//!
//! Invariants: `slots.len()` is 0 or a power of two; at most 3/4 of the slots
//! are full, so every probe meets an empty slot; an entry sits at its home
//! slot (`hash & mask`) or after it with no empty slot in between (removal
//! shifts later entries back to keep this); `len` counts the full slots.

use super::entry::Entry;
use super::shards::prefetch_line;

#[derive(Clone, Default)]
pub struct Shard {
    slots: Vec<Slot>,
    len: usize,
}

#[derive(Clone)]
struct Slot {
    hash: u64,
    entry: Option<Entry>,
}

/// Capacity of a table's first allocation: 4 slots of 16 bytes, one cache line.
const MIN_CAPACITY: usize = 4;

impl Shard {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.slots.iter().filter_map(|slot| slot.entry.as_ref())
    }

    /// Each entry with its key's hash, as kept in its slot.
    pub fn iter_hashed(&self) -> impl Iterator<Item = (u64, &Entry)> {
        self.slots
            .iter()
            .filter_map(|slot| slot.entry.as_ref().map(|entry| (slot.hash, entry)))
    }

    /// The slot a probe for `hash` starts at, for a prefetch hint; null if the
    /// table has none.
    #[inline]
    pub fn home(&self, hash: u64) -> *const u8 {
        match self.slots.len() {
            0 => std::ptr::null(),
            capacity => (&self.slots[hash as usize & (capacity - 1)] as *const Slot).cast(),
        }
    }

    /// The first entry whose slot holds `hash`, without reading any entry: for
    /// a prefetch hint (it is `key`'s entry unless two keys share all 64 bits).
    #[inline]
    pub fn find_entry(&self, hash: u64) -> Option<&Entry> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = hash as usize & mask;
        loop {
            let slot = &self.slots[at];
            let entry = slot.entry.as_ref()?;
            if slot.hash == hash {
                return Some(entry);
            }
            at = (at + 1) & mask;
        }
    }

    /// Hints the CPU to load the whole table, ahead of a scan.
    pub fn prefetch_table(&self) {
        let start = self.slots.as_ptr().cast::<u8>();
        let bytes = std::mem::size_of_val(self.slots.as_slice());
        for offset in (0..bytes).step_by(64) {
            prefetch_line(start.wrapping_add(offset));
        }
    }

    /// Hints the CPU to load the start of every entry, ahead of a scan; the
    /// table itself should be in cache by now (see `prefetch_table`).
    pub fn prefetch_entries(&self) {
        for entry in self.iter() {
            prefetch_line(entry.as_ptr());
        }
    }

    /// Index of the slot holding `key`.
    #[inline]
    fn position(&self, key: &[u8], hash: u64) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = hash as usize & mask;
        loop {
            let slot = &self.slots[at];
            let entry = slot.entry.as_ref()?;
            if slot.hash == hash && entry.key() == key {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    /// `hash` is `shards::hash_key(key)`, here and below.
    #[inline]
    pub fn get(&self, key: &[u8], hash: u64) -> Option<&Entry> {
        let at = self.position(key, hash)?;
        self.slots[at].entry.as_ref()
    }

    #[inline]
    pub fn get_mut(&mut self, key: &[u8], hash: u64) -> Option<&mut Entry> {
        let at = self.position(key, hash)?;
        self.slots[at].entry.as_mut()
    }

    /// Sets `key` to `value`; returns the old value's length if the key was present.
    #[inline]
    pub fn set(&mut self, key: &[u8], hash: u64, value: &[u8]) -> Option<usize> {
        if let Some(entry) = self.get_mut(key, hash) {
            return Some(entry.set_value(value));
        }
        self.insert_absent(hash, Entry::new(key, value));
        None
    }

    /// Inserts an entry whose key is not present; returns false (and drops it)
    /// if it is.
    pub fn insert_new(&mut self, hash: u64, entry: Entry) -> bool {
        if self.position(entry.key(), hash).is_some() {
            return false;
        }
        self.insert_absent(hash, entry);
        true
    }

    /// Inserts an entry the caller has just looked up and not found.
    pub fn insert_absent(&mut self, hash: u64, entry: Entry) {
        debug_assert!(
            self.position(entry.key(), hash).is_none(),
            "insert_absent of a key that is present"
        );
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        self.place(hash, entry);
        self.len += 1;
    }

    pub fn remove(&mut self, key: &[u8], hash: u64) -> Option<Entry> {
        let mut hole = self.position(key, hash)?;
        let removed = self.slots[hole].entry.take();
        self.len -= 1;
        // Close the gap: an entry after it may move back into the hole unless
        // its home lies (cyclically) after the hole, where the hole is not on
        // its probe path.
        let mask = self.slots.len() - 1;
        let mut next = (hole + 1) & mask;
        while self.slots[next].entry.is_some() {
            let home = self.slots[next].hash as usize & mask;
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots.swap(hole, next);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        removed
    }

    /// Puts an entry in the first empty slot from its home; there is room.
    fn place(&mut self, hash: u64, entry: Entry) {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        while self.slots[at].entry.is_some() {
            at = (at + 1) & mask;
        }
        self.slots[at] = Slot {
            hash,
            entry: Some(entry),
        };
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(MIN_CAPACITY);
        let mut empty = Vec::with_capacity(capacity);
        empty.resize_with(capacity, || Slot {
            hash: 0,
            entry: None,
        });
        let old = std::mem::replace(&mut self.slots, empty);
        for slot in old {
            if let Some(entry) = slot.entry {
                self.place(slot.hash, entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Hashes with few bits, so that keys collide in their home slot and in
    /// all 64 bits, and removals have runs to close.
    fn weak_hash(key: &[u8]) -> u64 {
        u64::from(key.first().copied().unwrap_or(0) % 8) * 0x1_0000_0001
    }

    #[derive(Debug, Clone)]
    enum Op {
        Set(u8, u8),
        Remove(u8),
        InsertNew(u8, u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::Set(k, v)),
            (0u8..40).prop_map(Op::Remove),
            (0u8..40, any::<u8>()).prop_map(|(k, v)| Op::InsertNew(k, v)),
        ]
    }

    fn key_of(k: u8) -> Vec<u8> {
        vec![k; 1 + usize::from(k % 5)]
    }

    fn check(shard: &Shard, model: &HashMap<Vec<u8>, Vec<u8>>) {
        assert_eq!(shard.len(), model.len());
        assert_eq!(shard.iter().count(), model.len());
        assert!(shard.len() * 4 <= shard.slots.len() * 3);
        for (key, value) in model {
            let found = shard.get(key, weak_hash(key)).map(Entry::value);
            assert_eq!(found, Some(&value[..]), "key {:?}", key);
        }
        for entry in shard.iter() {
            assert!(model.contains_key(entry.key()));
        }
    }

    proptest! {
        #[test]
        fn behaves_as_a_hashmap(ops in proptest::collection::vec(op(), 0..300)) {
            let mut shard = Shard::default();
            let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Set(k, v) => {
                        let (key, value) = (key_of(k), vec![v; usize::from(v % 7)]);
                        let old = shard.set(&key, weak_hash(&key), &value);
                        let expected = model.insert(key, value).map(|old| old.len());
                        prop_assert_eq!(old, expected);
                    }
                    Op::Remove(k) => {
                        let key = key_of(k);
                        let removed = shard.remove(&key, weak_hash(&key));
                        let expected = model.remove(&key);
                        prop_assert_eq!(removed.map(|e| e.value().to_vec()), expected);
                    }
                    Op::InsertNew(k, v) => {
                        let key = key_of(k);
                        let inserted = shard.insert_new(weak_hash(&key), Entry::new(&key, &[v]));
                        prop_assert_eq!(inserted, !model.contains_key(&key));
                        model.entry(key).or_insert_with(|| vec![v]);
                    }
                }
                check(&shard, &model);
            }
        }
    }

    #[test]
    fn hints_point_at_the_keys_slot_and_entry() {
        let mut shard = Shard::default();
        assert!(shard.home(7).is_null());
        assert!(shard.find_entry(7).is_none());
        for k in 0..20u8 {
            shard.set(&[k], u64::from(k) * 3, b"v");
        }
        let entry = shard.find_entry(5 * 3).map(Entry::key);
        assert_eq!(entry, Some(&[5u8][..]));
        assert!(shard.find_entry(1000).is_none());
        let home = shard.home(5 * 3);
        assert!(shard.slots.as_ptr_range().contains(&home.cast()));
    }

    #[test]
    fn a_clone_is_independent() {
        let mut shard = Shard::default();
        shard.set(b"a", 1, b"1");
        let copy = shard.clone();
        shard.set(b"a", 1, b"2");
        shard.remove(b"a", 1);
        assert_eq!(copy.get(b"a", 1).map(Entry::value), Some(&b"1"[..]));
        assert_eq!(shard.len(), 0);
    }
}
