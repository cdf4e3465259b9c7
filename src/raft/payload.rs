//! Entry payloads: ranges of shared, immutable byte buffers.
//!
//! Shared rather than copied: the leader hands the same entry out to be
//! persisted, sent to each follower and applied. And allocated in bulk: the
//! entries a follower receives in one AppendEntries are ranges of one buffer,
//! and a leader's proposals are packed into 64 KiB buffers by a
//! [`PayloadArena`], so a busy log costs one allocation (and one free, when it
//! is compacted, on another thread) per buffer instead of per entry. Before the
//! arena, each proposal's own allocation, freed later by the snapshot thread,
//! kept the leader's allocator on its slow path.
//!
//! # Safety
//!
//! A [`Buffer`] is written only by the arena that made it, and only past every
//! range it has handed out; the bytes of a range are written before the
//! `Payload` for it exists and never again. So every byte a `Payload` can read
//! is initialized and immutable, while the arena's writes touch no byte that
//! any `Payload` covers. Everything `unsafe` below rests on that.

use std::alloc::{self, Layout};
use std::fmt;
use std::ops::{Deref, Range};
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// Size of each buffer a [`PayloadArena`] fills.
pub const ARENA_BUFFER_BYTES: usize = 64 * 1024;

/// Payloads larger than this get a buffer of their own rather than waste the
/// rest of an arena buffer.
const ARENA_MAX_PAYLOAD_BYTES: usize = ARENA_BUFFER_BYTES / 8;

/// An owned allocation of `capacity` bytes (none when 0).
struct Buffer {
    ptr: NonNull<u8>,
    capacity: usize,
}

// SAFETY: the bytes are read through `Payload`s only where immutable, and
// written only by the one arena, where no `Payload` reads (module docs); the
// channels that carry payloads between threads order those writes before any
// read. Dropping frees the allocation once, from whichever thread holds the
// last `Arc`.
unsafe impl Send for Buffer {}
unsafe impl Sync for Buffer {}

impl Buffer {
    /// Takes over a vector's allocation: its initialized bytes are `0..len`.
    fn from_vec(bytes: Vec<u8>) -> Buffer {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        Buffer {
            // A `Vec` pointer is never null (dangling, not null, when empty).
            ptr: NonNull::new(bytes.as_mut_ptr()).unwrap_or(NonNull::dangling()),
            capacity: bytes.capacity(),
        }
    }

    /// An allocation of `capacity` (> 0) uninitialized bytes.
    fn with_capacity(capacity: usize) -> Buffer {
        let layout = Buffer::layout(capacity);
        // SAFETY: `capacity` > 0, so the layout is not zero-sized.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        Buffer { ptr, capacity }
    }

    /// The layout a `Vec<u8>` of this capacity is allocated with.
    fn layout(capacity: usize) -> Layout {
        match Layout::array::<u8>(capacity) {
            Ok(layout) => layout,
            Err(_) => panic!("payload buffer of {} bytes", capacity),
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if self.capacity > 0 {
            // SAFETY: allocated (by `with_capacity` or by a `Vec`) with this
            // layout, and freed only here, once.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), Buffer::layout(self.capacity)) }
        }
    }
}

/// A buffer that payloads can be cut from (see [`Payload::slice`]).
#[derive(Clone)]
pub struct PayloadBuffer {
    buffer: Arc<Buffer>,
    /// Bytes `0..len` are initialized.
    len: usize,
}

impl PayloadBuffer {
    /// A buffer holding a copy of `bytes`.
    pub fn copy_from(bytes: &[u8]) -> PayloadBuffer {
        PayloadBuffer {
            buffer: Arc::new(Buffer::from_vec(bytes.to_vec())),
            len: bytes.len(),
        }
    }
}

/// An entry's payload: a range of a shared buffer, immutable.
#[derive(Clone)]
pub struct Payload {
    buffer: Arc<Buffer>,
    range: Range<usize>,
}

impl Payload {
    /// The bytes `range` of `buffer`.
    ///
    /// # Panics
    /// If `range` is not within `buffer`.
    pub fn slice(buffer: &PayloadBuffer, range: Range<usize>) -> Payload {
        assert!(
            range.start <= range.end && range.end <= buffer.len,
            "payload range {:?} outside a buffer of {} bytes",
            range,
            buffer.len
        );
        Payload {
            buffer: Arc::clone(&buffer.buffer),
            range,
        }
    }

    /// Whether both are ranges of the same buffer.
    pub fn shares_buffer_with(&self, other: &Payload) -> bool {
        Arc::ptr_eq(&self.buffer, &other.buffer)
    }
}

impl Deref for Payload {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: the range lies within the buffer's initialized bytes, which
        // nothing writes while a `Payload` covers them (module docs).
        unsafe {
            std::slice::from_raw_parts(
                self.buffer.ptr.as_ptr().add(self.range.start),
                self.range.len(),
            )
        }
    }
}

impl Default for Payload {
    fn default() -> Payload {
        Payload::from(Vec::new())
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Payload {
        Payload::from(bytes.to_vec())
    }
}

impl From<Vec<u8>> for Payload {
    /// Takes the vector's allocation; nothing is copied.
    fn from(bytes: Vec<u8>) -> Payload {
        let len = bytes.len();
        Payload {
            buffer: Arc::new(Buffer::from_vec(bytes)),
            range: 0..len,
        }
    }
}

impl FromIterator<u8> for Payload {
    fn from_iter<I: IntoIterator<Item = u8>>(bytes: I) -> Payload {
        Payload::from(bytes.into_iter().collect::<Vec<u8>>())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        **self == **other
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &**self)
    }
}

/// Packs payloads into shared buffers, one after the other: a new buffer when
/// the current one is full, which is freed when its last payload is.
#[derive(Default)]
pub struct PayloadArena {
    current: Option<Arc<Buffer>>,
    /// Bytes of `current` handed out (and initialized).
    used: usize,
}

impl PayloadArena {
    /// A payload holding a copy of `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> Payload {
        if bytes.is_empty() || bytes.len() > ARENA_MAX_PAYLOAD_BYTES {
            return Payload::from(bytes);
        }
        let fits = self
            .current
            .as_ref()
            .is_some_and(|buffer| self.used + bytes.len() <= buffer.capacity);
        if !fits {
            self.current = Some(Arc::new(Buffer::with_capacity(ARENA_BUFFER_BYTES)));
            self.used = 0;
        }
        let Some(buffer) = &self.current else {
            unreachable!("a buffer was just made")
        };
        let range = self.used..self.used + bytes.len();
        // SAFETY: `range` lies within the buffer's capacity (checked above),
        // past every range handed out so far, so no `Payload` covers it, and
        // only this arena (held `&mut`) writes to the buffer. `bytes` is
        // borrowed, so it cannot be inside it.
        unsafe {
            ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                buffer.ptr.as_ptr().add(range.start),
                bytes.len(),
            );
        }
        self.used = range.end;
        Payload {
            buffer: Arc::clone(buffer),
            range,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_payloads_share_a_buffer_until_it_is_full() {
        let mut arena = PayloadArena::default();
        let record = [7u8; 1000];
        let payloads: Vec<Payload> = (0..100u8)
            .map(|i| {
                let mut bytes = record;
                bytes[0] = i;
                arena.push(&bytes)
            })
            .collect();
        for (i, payload) in payloads.iter().enumerate() {
            assert_eq!(payload.len(), 1000);
            assert_eq!(payload[0], i as u8);
            assert!(payload[1..].iter().all(|&b| b == 7));
        }
        let per_buffer = ARENA_BUFFER_BYTES / 1000;
        assert!(payloads[0].shares_buffer_with(&payloads[per_buffer - 1]));
        assert!(!payloads[0].shares_buffer_with(&payloads[per_buffer]));
    }

    #[test]
    fn a_large_payload_gets_its_own_buffer() {
        let mut arena = PayloadArena::default();
        let small = arena.push(b"small");
        let large = arena.push(&vec![1u8; ARENA_MAX_PAYLOAD_BYTES + 1]);
        let next = arena.push(b"next");
        assert!(!large.shares_buffer_with(&small));
        assert!(next.shares_buffer_with(&small));
        assert_eq!((&*small, &*next), (&b"small"[..], &b"next"[..]));
        assert_eq!(arena.push(b""), Payload::default());
    }

    #[test]
    fn payloads_read_on_other_threads_while_the_arena_writes() {
        let mut arena = PayloadArena::default();
        let (send, receive) = std::sync::mpsc::channel::<(u32, Payload)>();
        let reader = std::thread::spawn(move || {
            let mut count = 0;
            for (n, payload) in receive {
                assert_eq!(&*payload, &n.to_le_bytes().repeat(5)[..], "payload {}", n);
                count += 1;
            }
            count
        });
        for n in 0..50_000u32 {
            let payload = arena.push(&n.to_le_bytes().repeat(5));
            if send.send((n, payload)).is_err() {
                break;
            }
        }
        drop(send);
        assert_eq!(reader.join().ok(), Some(50_000));
    }

    #[test]
    fn from_vec_takes_the_allocation_and_slices_check_their_range() {
        let bytes = b"abcdef".to_vec();
        let at = bytes.as_ptr();
        let payload = Payload::from(bytes);
        assert_eq!(payload.as_ptr(), at);
        let buffer = PayloadBuffer::copy_from(b"0123456789");
        assert_eq!(&*Payload::slice(&buffer, 2..5), b"234");
        let outside = std::panic::catch_unwind(|| Payload::slice(&buffer, 8..11));
        assert!(outside.is_err());
    }
}
