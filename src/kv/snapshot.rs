//! A point-in-time view of the map, and its serialized form.
//!
//! Stream format (little-endian; the file around it, with its header and CRC,
//! is `storage`'s):
//!
//! ```text
//! "RKVSNAP2"                       8 bytes ("RKVSNAP1" before timeouts: read too)
//! count: u64                       number of records
//! count × record:
//!   key_len: u32, value_len: u32, key, value
//! timeouts: u64                    (not in RKVSNAP1)
//! timeouts × (key_len: u32, key, deadline: u64 unix ms)
//! clock: u64                       the latest leader stamp applied (not in RKVSNAP1)
//! "RKVSEND."                       8 bytes
//! ```
//!
//! Records are written shard by shard in shard order, sorted within a shard
//! by the key's hash and then the key, and timeouts shard by shard sorted by
//! key, so equal maps give byte-identical streams whatever their history.
//! The stream is self-delimiting: `restore_from` reads exactly up to the end
//! marker and leaves anything after it unread.

use super::deadlines::{DeadlineShard, Deadlines};
use super::entry::Entry;
use super::shards::{prefetch_line, Shard, DEFAULT_SHARD_COUNT};
use super::{digest_of, DecodeError, KvStore};
use std::io::{self, Read, Write};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"RKVSNAP2";
const MAGIC_WITHOUT_TIMEOUTS: &[u8; 8] = b"RKVSNAP1";
const END_MARKER: &[u8; 8] = b"RKVSEND.";

/// Keys and values up to this size are read into an exact-size buffer; larger
/// ones grow with the bytes actually read, so a corrupt length cannot make
/// `restore_from` allocate more than the stream holds.
const TRUSTED_ALLOC_BYTES: usize = 64 * 1024;

/// How many shards ahead `write_to` starts loading each link of a shard.
const SCAN_AHEAD_SHARDS: usize = 4;

/// Records are gathered into a buffer of about this size before each write.
const WRITE_CHUNK_BYTES: usize = 64 * 1024;

/// The map as it was when `KvStore::snapshot_view` was called. Holds the
/// shards by `Arc`, so it is cheap to take and can be written from another
/// thread while the store keeps changing.
#[derive(Clone)]
pub struct KvSnapshot {
    shards: Vec<Arc<Shard>>,
    len: usize,
    expires: Deadlines,
    clock: u64,
}

impl KvStore {
    /// A point-in-time view: O(shards), no key is copied now (the store copies
    /// a shard later, on its first write to it while the view is alive).
    pub fn snapshot_view(&self) -> KvSnapshot {
        KvSnapshot {
            shards: self.map.shards().to_vec(),
            len: self.len,
            expires: self.expires.clone(),
            clock: self.clock,
        }
    }

    /// Rebuilds a store from a stream written by `KvSnapshot::write_to`.
    /// Bad input (wrong magic, truncation, duplicate keys) is a `DecodeError`,
    /// as is an IO error of the reader.
    pub fn restore_from(r: &mut dyn Read) -> Result<KvStore, DecodeError> {
        KvStore::restore_from_with_shards(r, DEFAULT_SHARD_COUNT)
    }

    /// `restore_from` into a store of `shard_count` shards (a power of two;
    /// tests with tiny maps use few, as with `KvStore::with_shards`).
    pub fn restore_from_with_shards(
        r: &mut dyn Read,
        shard_count: usize,
    ) -> Result<KvStore, DecodeError> {
        let mut header = [0u8; 16];
        read_exact(r, &mut header, "header")?;
        let with_timeouts = match &header[..8] {
            magic if magic == MAGIC => true,
            magic if magic == MAGIC_WITHOUT_TIMEOUTS => false,
            magic => return Err(DecodeError(format!("bad snapshot magic {:?}", magic))),
        };
        let count = u64::from_le_bytes(array8(&header[8..]));
        let mut store = KvStore::with_shards(shard_count);
        for index in 0..count {
            let mut lengths = [0u8; 8];
            read_exact(r, &mut lengths, "record lengths")?;
            let key_len = u32::from_le_bytes(array4(&lengths[..4])) as usize;
            let value_len = u32::from_le_bytes(array4(&lengths[4..])) as usize;
            let entry = read_entry(r, key_len, value_len)?;
            if !store.insert_new(entry) {
                return Err(DecodeError(format!(
                    "duplicate key in snapshot record {}",
                    index
                )));
            }
        }
        if with_timeouts {
            read_timeouts(r, &mut store)?;
        }
        let mut end = [0u8; 8];
        read_exact(r, &mut end, "end marker")?;
        if &end != END_MARKER {
            return Err(DecodeError(format!("bad snapshot end marker {:?}", end)));
        }
        Ok(store)
    }
}

impl std::fmt::Debug for KvSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSnapshot")
            .field("len", &self.len)
            .finish()
    }
}

impl KvSnapshot {
    /// Number of keys in the view.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Same as `KvStore::digest` at the time of the view.
    pub fn digest(&self) -> u64 {
        let digest = digest_of(self.shards.iter().map(|shard| &**shard));
        super::digest_with_timeouts(digest, &self.expires, self.clock)
    }

    /// Writes the view as the stream described in the module docs. Pass a
    /// buffered or in-memory writer; records are written in 64 kB pieces.
    ///
    /// Consumes the view, letting go of each shard as soon as it is written:
    /// the store copies a shard on its first write only while a view still
    /// holds it, so a shard released early is one copy fewer on the event loop.
    pub fn write_to(mut self, w: &mut dyn Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(WRITE_CHUNK_BYTES * 2);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&(self.len as u64).to_le_bytes());
        let mut written: usize = 0;
        let released = Arc::new(Shard::default());
        for at in 0..self.shards.len() {
            // Each shard is three dependent cache misses away (shard, table,
            // entries): start them for shards a little ahead, one link per
            // distance, so they arrive by the time the scan gets there.
            if let Some(ahead) = self.shards.get(at + 3 * SCAN_AHEAD_SHARDS) {
                prefetch_line(Arc::as_ptr(ahead));
            }
            if let Some(ahead) = self.shards.get(at + 2 * SCAN_AHEAD_SHARDS) {
                ahead.prefetch_table();
            }
            if let Some(ahead) = self.shards.get(at + SCAN_AHEAD_SHARDS) {
                ahead.prefetch_entries();
            }
            let shard = std::mem::replace(&mut self.shards[at], Arc::clone(&released));
            written += write_shard(&shard, &mut buf)?;
            if buf.len() >= WRITE_CHUNK_BYTES {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        assert_eq!(
            written, self.len,
            "snapshot view count differs from its shards"
        );
        buf.extend_from_slice(&(self.expires.len() as u64).to_le_bytes());
        for shard in self.expires.shards() {
            write_timeouts(shard, &mut buf)?;
            if buf.len() >= WRITE_CHUNK_BYTES {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        buf.extend_from_slice(&self.clock.to_le_bytes());
        buf.extend_from_slice(END_MARKER);
        w.write_all(&buf)
    }
}

/// Appends a shard's timeouts to `buf`, sorted by key.
fn write_timeouts(shard: &DeadlineShard, buf: &mut Vec<u8>) -> io::Result<()> {
    let mut timeouts: Vec<(&[u8], u64)> = shard.iter().map(|(k, at)| (&**k, *at)).collect();
    timeouts.sort_unstable();
    for (key, at) in timeouts {
        let key_len = u32::try_from(key.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("key of {} bytes does not fit a snapshot record", key.len()),
            )
        })?;
        buf.extend_from_slice(&key_len.to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(&at.to_le_bytes());
    }
    Ok(())
}

/// Reads the timeouts and the clock into `store`, whose keys are read: a
/// timeout for a key it does not hold, or twice for one, is an error.
fn read_timeouts(r: &mut dyn Read, store: &mut KvStore) -> Result<(), DecodeError> {
    let mut word = [0u8; 8];
    read_exact(r, &mut word, "timeout count")?;
    let count = u64::from_le_bytes(word);
    for index in 0..count {
        let mut len = [0u8; 4];
        read_exact(r, &mut len, "timeout key length")?;
        let key = read_vec(r, u32::from_le_bytes(len) as usize, "timeout key")?;
        read_exact(r, &mut word, "timeout")?;
        if store.map.get(&key).is_none() || store.expires.get(&key).is_some() {
            return Err(DecodeError(format!(
                "snapshot timeout {index} for a key without a record, or twice"
            )));
        }
        store.expires.set(&key, u64::from_le_bytes(word));
    }
    read_exact(r, &mut word, "clock")?;
    store.clock = u64::from_le_bytes(word);
    Ok(())
}

/// Shards up to this many keys are sorted on the stack.
const SORT_ON_STACK: usize = 16;

/// Appends a shard's records to `buf`, in the order of their keys' hashes
/// (keys break ties); returns how many. Why hashes: they sit in the table's
/// slots, so the sort reads no entry, where comparing keys cost a tenth of the
/// snapshot thread's time. Any order that depends only on the keys keeps
/// streams of equal maps byte-identical.
fn write_shard(shard: &Shard, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut on_stack: [Option<(u64, &Entry)>; SORT_ON_STACK] = [None; SORT_ON_STACK];
    let mut on_heap = Vec::new();
    let entries: &mut [Option<(u64, &Entry)>] = if shard.len() <= SORT_ON_STACK {
        for (slot, hashed) in on_stack.iter_mut().zip(shard.iter_hashed()) {
            *slot = Some(hashed);
        }
        &mut on_stack[..shard.len()]
    } else {
        on_heap.extend(shard.iter_hashed().map(Some));
        &mut on_heap
    };
    entries.sort_unstable_by(|a, b| match (a, b) {
        (Some(a), Some(b)) => a.0.cmp(&b.0).then_with(|| a.1.key().cmp(b.1.key())),
        _ => a.is_some().cmp(&b.is_some()),
    });
    for (_, entry) in entries.iter().flatten() {
        let (key, value) = entry.parts();
        put_record(buf, key, value)?;
    }
    Ok(entries.len())
}

fn put_record(buf: &mut Vec<u8>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let too_long = |what: &str, len: usize| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} of {} bytes does not fit a snapshot record", what, len),
        )
    };
    let key_len = u32::try_from(key.len()).map_err(|_| too_long("key", key.len()))?;
    let value_len = u32::try_from(value.len()).map_err(|_| too_long("value", value.len()))?;
    buf.extend_from_slice(&key_len.to_le_bytes());
    buf.extend_from_slice(&value_len.to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    Ok(())
}

fn read_exact(r: &mut dyn Read, buf: &mut [u8], what: &str) -> Result<(), DecodeError> {
    r.read_exact(buf)
        .map_err(|e| DecodeError(format!("snapshot {}: {}", what, e)))
}

/// Reads a record's key and value straight into an entry when they are small
/// enough to trust their lengths.
fn read_entry(r: &mut dyn Read, key_len: usize, value_len: usize) -> Result<Entry, DecodeError> {
    if key_len.saturating_add(value_len) <= TRUSTED_ALLOC_BYTES {
        let mut entry = Entry::zeroed(key_len, value_len);
        let (key, value) = entry.parts_mut();
        read_exact(r, key, "key")?;
        read_exact(r, value, "value")?;
        return Ok(entry);
    }
    let key = read_vec(r, key_len, "key")?;
    let value = read_vec(r, value_len, "value")?;
    Ok(Entry::new(&key, &value))
}

fn read_vec(r: &mut dyn Read, len: usize, what: &str) -> Result<Vec<u8>, DecodeError> {
    if len <= TRUSTED_ALLOC_BYTES {
        let mut bytes = vec![0u8; len];
        read_exact(r, &mut bytes, what)?;
        return Ok(bytes);
    }
    let mut bytes = Vec::new();
    let got = r
        .take(len as u64)
        .read_to_end(&mut bytes)
        .map_err(|e| DecodeError(format!("snapshot {}: {}", what, e)))?;
    if got != len {
        return Err(DecodeError(format!(
            "snapshot {} truncated: {} of {} bytes",
            what, got, len
        )));
    }
    Ok(bytes)
}

fn array8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    out
}

fn array4(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(bytes);
    out
}
