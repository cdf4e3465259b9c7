//! One key-value pair in one heap allocation.
//!
//! Why: the map holds millions of small pairs. A `HashMap<Vec<u8>, Vec<u8>>`
//! pays per pair two 24-byte `Vec` headers in its table slot and two malloc
//! chunks (each with an 8-byte allocator header and rounded up to 16 bytes):
//! about 240 bytes for a 16-byte key and a 100-byte value. An `Entry` is a thin
//! pointer (8 bytes, beside the key's hash in the table's slot) to a single
//! allocation:
//!
//! ```text
//! key_len: varint | value_len: varint | key bytes | value bytes
//! ```
//!
//! The lengths are LEB128 varints (one byte below 128, two below 16384), so a
//! small pair costs 2 bytes of header: that pair takes one 128-byte malloc
//! chunk, plus its table slot.
//!
//! The allocation is rounded up to what the allocator's chunk holds anyway
//! (`capacity_for`), so a value can change length by a few bytes in place,
//! without an allocator call, as a `Vec` reuses its capacity.
//!
//! The table that holds entries (`shard.rs`) looks them up by key bytes and
//! hands out `&mut Entry` for replacing a value in place.
//!
//! # Safety
//!
//! The invariant every `unsafe` block below relies on: `ptr` points to a live
//! allocation of layout `header().layout()`, made by `Entry::allocate` (or
//! resized by `set_value`), owned by this `Entry` alone, starting with a header
//! as written by `write_header` and with its key and value bytes initialized.

use std::alloc::{self, Layout};
use std::ptr::{self, NonNull};

pub struct Entry {
    ptr: NonNull<u8>,
}

// SAFETY: an `Entry` owns its bytes exactly as a `Box<[u8]>` does: shared
// access only reads the pointer and the bytes, and writes need `&mut`.
unsafe impl Send for Entry {}
unsafe impl Sync for Entry {}

/// The decoded header: both lengths, and where the key starts.
#[derive(Clone, Copy)]
struct Header {
    key_len: usize,
    value_len: usize,
    header_len: usize,
}

impl Header {
    fn new(key_len: usize, value_len: usize) -> Header {
        Header {
            key_len,
            value_len,
            header_len: varint_len(key_len) + varint_len(value_len),
        }
    }

    fn total(self) -> usize {
        self.header_len + self.key_len + self.value_len
    }

    /// The allocation's layout: a function of the lengths alone, so `Drop`
    /// and `realloc` find it again from the header.
    fn layout(self) -> Layout {
        match Layout::array::<u8>(capacity_for(self.total())) {
            Ok(layout) => layout,
            // Key and value are already in memory, so their sum fits isize.
            Err(_) => panic!(
                "entry of {} + {} bytes does not fit a layout",
                self.key_len, self.value_len
            ),
        }
    }
}

impl Entry {
    pub fn new(key: &[u8], value: &[u8]) -> Entry {
        let entry = Entry::allocate(Header::new(key.len(), value.len()));
        let (key_at, value_at) = entry.parts_ptr();
        // SAFETY: `allocate` made room for exactly these lengths; the sources
        // are other allocations, so the ranges do not overlap.
        unsafe {
            ptr::copy_nonoverlapping(key.as_ptr(), key_at, key.len());
            ptr::copy_nonoverlapping(value.as_ptr(), value_at, value.len());
        }
        entry
    }

    /// An entry with zeroed key and value of these lengths, to be filled through
    /// `parts_mut` (e.g. read straight from a snapshot stream).
    pub fn zeroed(key_len: usize, value_len: usize) -> Entry {
        let header = Header::new(key_len, value_len);
        let entry = Entry::allocate(header);
        let (key_at, _) = entry.parts_ptr();
        // SAFETY: key and value are contiguous and end at the allocation's end.
        unsafe { ptr::write_bytes(key_at, 0, key_len + value_len) };
        entry
    }

    /// Allocates and writes the header; key and value bytes are left for the
    /// caller to initialize before anything reads them.
    fn allocate(header: Header) -> Entry {
        let layout = header.layout();
        // SAFETY: the layout is never zero-sized (the header takes >= 2 bytes).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: a fresh allocation of `header.total()` bytes.
        unsafe { write_header(ptr, header) };
        Entry { ptr }
    }

    #[inline]
    fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    #[inline]
    fn header(&self) -> Header {
        // SAFETY: the allocation starts with a header written by `write_header`.
        unsafe { read_header(self.base()) }
    }

    /// Where the key and the value start.
    #[inline]
    fn parts_ptr(&self) -> (*mut u8, *mut u8) {
        self.parts_ptr_of(self.header())
    }

    #[inline]
    fn parts_ptr_of(&self, header: Header) -> (*mut u8, *mut u8) {
        // SAFETY: both offsets are within the allocation (the value's is its end
        // when the value is empty).
        unsafe {
            let key_at = self.base().add(header.header_len);
            (key_at, key_at.add(header.key_len))
        }
    }

    #[inline]
    pub fn key(&self) -> &[u8] {
        self.parts().0
    }

    #[inline]
    pub fn value(&self) -> &[u8] {
        self.parts().1
    }

    #[inline]
    pub fn parts(&self) -> (&[u8], &[u8]) {
        let header = self.header();
        let (key_at, value_at) = self.parts_ptr_of(header);
        // SAFETY: initialized bytes owned by `self`, not written while `&self` lives.
        unsafe {
            (
                std::slice::from_raw_parts(key_at, header.key_len),
                std::slice::from_raw_parts(value_at, header.value_len),
            )
        }
    }

    pub fn parts_mut(&mut self) -> (&mut [u8], &mut [u8]) {
        let header = self.header();
        let (key_at, value_at) = self.parts_ptr_of(header);
        // SAFETY: `&mut self` is exclusive; the two ranges are disjoint.
        unsafe {
            (
                std::slice::from_raw_parts_mut(key_at, header.key_len),
                std::slice::from_raw_parts_mut(value_at, header.value_len),
            )
        }
    }

    /// Replaces the value: in place when the length is unchanged, else by
    /// resizing the allocation (which the allocator often does in place, e.g.
    /// when shrinking), else with a fresh allocation.
    ///
    /// Returns the old value's length.
    #[inline]
    pub fn set_value(&mut self, value: &[u8]) -> usize {
        let old = self.header();
        if old.value_len == value.len() {
            let (_, value_at) = self.parts_ptr_of(old);
            // SAFETY: the value's bytes, owned by `self` (held `&mut`); `value`
            // is borrowed separately, so it cannot point into them.
            unsafe { ptr::copy_nonoverlapping(value.as_ptr(), value_at, value.len()) };
            return old.value_len;
        }
        self.resize_value(old, value);
        old.value_len
    }

    /// `set_value` for a value of another length; `old` is the current header.
    fn resize_value(&mut self, old: Header, value: &[u8]) {
        let new = Header::new(old.key_len, value.len());
        if new.header_len != old.header_len {
            // The key would move: rare (the value length crossed 128, 16384...).
            // The old bytes are freed when `self`'s old value drops here.
            *self = Entry::new(self.key(), value);
            return;
        }
        let value_at = self.relayout(old, new);
        // SAFETY: `relayout` left room for the new value at `value_at`;
        // `value` is borrowed separately, so it is not in the allocation.
        unsafe { ptr::copy_nonoverlapping(value.as_ptr(), value_at, value.len()) };
    }

    /// Gives the allocation the layout of `new` (the same header width as
    /// `old`, the current header) and writes that header; returns where the
    /// value starts. Header, key and the start of the old value keep their
    /// place, as realloc preserves them.
    fn relayout(&mut self, old: Header, new: Header) -> *mut u8 {
        debug_assert_eq!(old.header_len, new.header_len);
        let (old_layout, new_layout) = (old.layout(), new.layout());
        // SAFETY: `self` owns the allocation of `old_layout` (the invariant)
        // and is held `&mut`; the new layout has room for the new header, the
        // key and the value, whose bytes the caller then writes.
        unsafe {
            if new_layout != old_layout {
                let raw = alloc::realloc(self.base(), old_layout, new_layout.size());
                let Some(ptr) = NonNull::new(raw) else {
                    alloc::handle_alloc_error(new_layout)
                };
                self.ptr = ptr;
            }
            write_header(self.ptr, new);
        }
        self.parts_ptr_of(new).1
    }

    /// Appends `tail` to the value and returns the value's new length. Only
    /// `tail` is copied when the allocator grows the allocation in place, as
    /// it does for large ones by remapping their pages; APPENDs to a large
    /// value would otherwise copy it whole each time.
    pub fn append_value(&mut self, tail: &[u8]) -> usize {
        let old = self.header();
        let new = Header::new(old.key_len, old.value_len + tail.len());
        if new.header_len != old.header_len {
            // The key would move: rare (the value length crossed 128, 16384...).
            let mut value = Vec::with_capacity(new.value_len);
            value.extend_from_slice(self.value());
            value.extend_from_slice(tail);
            *self = Entry::new(self.key(), &value);
            return new.value_len;
        }
        let value_at = self.relayout(old, new);
        // SAFETY: `relayout` kept the old value and left room for `tail`
        // after it; `tail` is borrowed separately, so it is not in the
        // allocation.
        unsafe { ptr::copy_nonoverlapping(tail.as_ptr(), value_at.add(old.value_len), tail.len()) };
        new.value_len
    }

    /// Where the entry's bytes start, for a prefetch hint.
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let layout = self.header().layout();
        // SAFETY: allocated in `allocate` (or resized by `set_value`) with the
        // layout its current header gives, and dropped once.
        unsafe { alloc::dealloc(self.base(), layout) }
    }
}

impl Clone for Entry {
    fn clone(&self) -> Entry {
        let header = self.header();
        let copy = Entry::allocate(header);
        // SAFETY: same layout, distinct allocations; copies header, key, value.
        unsafe {
            ptr::copy_nonoverlapping(self.base(), copy.base(), header.total());
        }
        copy
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (key, value) = self.parts();
        f.debug_struct("Entry")
            .field("key", &String::from_utf8_lossy(key))
            .field("value_len", &value.len())
            .finish()
    }
}

/// LEB128 length: 7 bits per byte.
#[inline]
fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

/// Writes both lengths at the start of the allocation.
///
/// # Safety
/// `at` must point to at least `header.header_len` writable bytes.
#[inline]
unsafe fn write_header(at: NonNull<u8>, header: Header) {
    let value_at = write_varint(at.as_ptr(), header.key_len);
    write_varint(value_at, header.value_len);
}

/// Writes `n` as LEB128 at `at`; returns the byte after it.
///
/// # Safety
/// `at` must point to `varint_len(n)` writable bytes.
#[inline]
unsafe fn write_varint(mut at: *mut u8, mut n: usize) -> *mut u8 {
    while n >= 0x80 {
        *at = (n as u8) | 0x80;
        n >>= 7;
        at = at.add(1);
    }
    *at = n as u8;
    at.add(1)
}

/// glibc malloc's smallest chunk, and the header inside each chunk.
const MALLOC_MIN_CHUNK_BYTES: usize = 32;
const MALLOC_HEADER_BYTES: usize = 8;

/// The bytes of the allocation an entry of these lengths takes, its
/// allocator header included.
pub fn allocated_bytes(key_len: usize, value_len: usize) -> usize {
    capacity_for(Header::new(key_len, value_len).total()) + MALLOC_HEADER_BYTES
}

/// Bytes to allocate for an entry of `total` bytes: what a glibc malloc chunk
/// holds anyway (chunks are multiples of 16 bytes, of which 8 are its header),
/// so the rounding costs no memory there and lets `set_value` resize in place.
/// Elsewhere it is at most 15 bytes more than needed, and still correct.
#[inline]
fn capacity_for(total: usize) -> usize {
    let chunk = (total + MALLOC_HEADER_BYTES).next_multiple_of(16);
    chunk.max(MALLOC_MIN_CHUNK_BYTES) - MALLOC_HEADER_BYTES
}

/// Reads the header at the start of an entry.
///
/// # Safety
/// `at` must point to a header written by `write_header`, all of it readable.
#[inline]
unsafe fn read_header(at: *const u8) -> Header {
    // Fast path: a key shorter than 128 bytes and a value shorter than 16384.
    let (key_byte, first_value_byte) = (*at, *at.add(1));
    if key_byte < 0x80 {
        if first_value_byte < 0x80 {
            return Header {
                key_len: usize::from(key_byte),
                value_len: usize::from(first_value_byte),
                header_len: 2,
            };
        }
        let second_value_byte = *at.add(2);
        if second_value_byte < 0x80 {
            return Header {
                key_len: usize::from(key_byte),
                value_len: usize::from(first_value_byte & 0x7f)
                    | usize::from(second_value_byte) << 7,
                header_len: 3,
            };
        }
    }
    read_header_slow(at)
}

#[cold]
unsafe fn read_header_slow(at: *const u8) -> Header {
    let (key_len, first) = read_varint(at);
    let (value_len, second) = read_varint(at.add(first));
    Header {
        key_len,
        value_len,
        header_len: first + second,
    }
}

/// Reads a LEB128 value; returns it and the bytes used.
///
/// # Safety
/// `at` must point to a varint written by `put_varint`, all of it readable.
unsafe fn read_varint(at: *const u8) -> (usize, usize) {
    let first = *at;
    if first < 0x80 {
        return (usize::from(first), 1);
    }
    let mut value = usize::from(first & 0x7f);
    let mut used = 1;
    loop {
        let byte = *at.add(used);
        value |= usize::from(byte & 0x7f) << (7 * used);
        used += 1;
        if byte < 0x80 {
            return (value, used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longest LEB128 encoding of a `u64`.
    const VARINT_MAX_BYTES: usize = 10;

    #[test]
    fn varints_round_trip_at_every_width() {
        for n in [
            0,
            1,
            127,
            128,
            300,
            16383,
            16384,
            1 << 21,
            1 << 35,
            usize::MAX,
        ] {
            let mut buf = [0u8; VARINT_MAX_BYTES];
            // SAFETY: `buf` has room for any varint, then holds the one written.
            let (used, read) = unsafe {
                let end = write_varint(buf.as_mut_ptr(), n);
                (
                    end.offset_from(buf.as_ptr()) as usize,
                    read_varint(buf.as_ptr()),
                )
            };
            assert_eq!(used, varint_len(n), "{}", n);
            assert_eq!(read, (n, used), "{}", n);
        }
    }

    #[test]
    fn parts_survive_every_header_width() {
        for (key_len, value_len) in [(0, 0), (0, 5), (127, 128), (200, 20_000), (16, 100)] {
            let key: Vec<u8> = (0..key_len).map(|i| i as u8).collect();
            let value: Vec<u8> = (0..value_len).map(|i| (i * 7) as u8).collect();
            let entry = Entry::new(&key, &value);
            assert_eq!(entry.parts(), (&key[..], &value[..]));
            let copy = entry.clone();
            drop(entry);
            assert_eq!(copy.key(), &key[..]);
            assert_eq!(copy.value(), &value[..]);
        }
    }

    #[test]
    fn zeroed_then_filled() {
        let mut entry = Entry::zeroed(3, 4);
        assert_eq!(entry.parts(), (&[0u8; 3][..], &[0u8; 4][..]));
        let (key, value) = entry.parts_mut();
        key.copy_from_slice(b"abc");
        value.copy_from_slice(b"wxyz");
        assert_eq!(entry.parts(), (&b"abc"[..], &b"wxyz"[..]));
    }

    #[test]
    fn capacity_fills_the_malloc_chunk() {
        assert_eq!(capacity_for(2), 24);
        assert_eq!(capacity_for(24), 24);
        assert_eq!(capacity_for(25), 40);
        assert_eq!(capacity_for(118), 120);
        assert_eq!(capacity_for(120), 120);
        assert_eq!(capacity_for(121), 136);
    }

    #[test]
    fn append_value_at_every_size_change() {
        let key = b"the key";
        let mut entry = Entry::new(key, b"");
        let mut expected = Vec::new();
        // Within the chunk, realloc, across header widths (128, 16384).
        for (step, len) in [0, 1, 3, 20, 100, 4, 1, 16_000, 300, 5]
            .into_iter()
            .enumerate()
        {
            let tail: Vec<u8> = (0..len).map(|i| (i * 7 + step) as u8).collect();
            expected.extend_from_slice(&tail);
            assert_eq!(entry.append_value(&tail), expected.len(), "step {step}");
            assert_eq!(entry.parts(), (&key[..], &expected[..]), "step {step}");
            assert_eq!(entry.clone().value(), &expected[..], "step {step}");
        }
    }

    #[test]
    fn set_value_at_every_size_change() {
        let key = b"the key";
        // In place, within the chunk, realloc up and down, header width changes.
        let mut lengths = vec![
            3, 3, 0, 1, 9, 127, 120, 30, 128, 100, 20_000, 16_383, 16_384,
        ];
        lengths.extend([5, 0]);
        lengths.extend([200, 90, 200]);
        let mut entry = Entry::new(key, b"abc");
        for (step, len) in lengths.into_iter().enumerate() {
            let value: Vec<u8> = (0..len).map(|i| (i + step) as u8).collect();
            entry.set_value(&value);
            assert_eq!(entry.parts(), (&key[..], &value[..]), "step {}", step);
            assert_eq!(entry.clone().value(), &value[..], "step {}", step);
        }
    }
}
