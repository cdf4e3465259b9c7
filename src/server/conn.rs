//! A non-blocking TCP connection with an input and an output buffer; shared by
//! client and peer connections.

use mio::net::TcpStream;
use std::io::{self, Read, Write};

/// Free space wanted before each read; the buffer grows (and is zeroed) only
/// when a request does not fit, so a read costs no memset.
const READ_CHUNK: usize = 16 * 1024;
/// A buffer grown past this for one large request is given back once it drains.
const KEEP_BUFFER: usize = 1 << 20;
/// An output buffer grown past this for one large reply is given back once it
/// is written. Higher than [`KEEP_BUFFER`]: a peer connection's output holds
/// batches of entries of up to a frame, and would otherwise be reallocated
/// every iteration under load; what it saves is a relayed reply of hundreds of
/// MiB kept for the life of the connection.
const KEEP_OUTPUT: usize = 64 << 20;

pub struct Conn {
    pub stream: TcpStream,
    /// Received bytes live in `in_buf[in_start..in_end]`; the rest is free space.
    in_buf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    out_buf: Vec<u8>,
    /// Bytes of `out_buf` already written to the socket.
    out_start: usize,
    /// The poller reported the peer's side closed: read to the end rather
    /// than stop at a short read (the EOF raises no further edge).
    read_closed: bool,
    /// The size of the message at the front of the input, when the caller
    /// knows it (see [`Conn::expect_input`]); 0 otherwise.
    expected: usize,
}

/// What one `fill` saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// Bytes arrived and filled the free space: there may be more; call again
    /// (edge-triggered readiness: read until the socket is drained).
    Data,
    /// Bytes arrived but fewer than there was room for: the socket's receive
    /// queue is empty now, so no further read is needed until the next event
    /// (any later arrival raises a new edge). Saves one read per iteration.
    Drained,
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side.
    Closed,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            in_buf: Vec::new(),
            in_start: 0,
            in_end: 0,
            out_buf: Vec::new(),
            out_start: 0,
            read_closed: false,
            expected: 0,
        }
    }

    /// Makes at least `READ_CHUNK` bytes of free space after the received bytes.
    fn make_room(&mut self) {
        if self.in_buf.len() - self.in_end >= READ_CHUNK {
            return;
        }
        if self.in_start > 0 {
            self.in_buf.copy_within(self.in_start..self.in_end, 0);
            self.in_end -= self.in_start;
            self.in_start = 0;
        }
        if self.in_buf.len() - self.in_end < READ_CHUNK {
            let mut len = self.in_buf.len() * 2;
            if self.expected > self.in_end {
                // Doubling past the end of a message of known size would hold
                // up to twice a relayed reply of hundreds of MiB for nothing.
                len = len.min(self.expected + READ_CHUNK);
            }
            self.in_buf.resize(len.max(self.in_end + READ_CHUNK), 0);
        }
    }

    /// Tells the buffer how large the message at the front of the input is,
    /// once its header is in, so that it grows to hold it and no more. The
    /// buffer still grows only as bytes arrive: a size a peer merely declares
    /// allocates nothing. Forgotten when input is consumed.
    pub fn expect_input(&mut self, size: usize) {
        self.expected = size;
    }

    /// Reads one chunk from the socket into the input buffer.
    pub fn fill(&mut self) -> io::Result<Fill> {
        self.make_room();
        loop {
            match self.stream.read(&mut self.in_buf[self.in_end..]) {
                Ok(0) => return Ok(Fill::Closed),
                Ok(n) => {
                    let room = self.in_buf.len() - self.in_end;
                    self.in_end += n;
                    let drained = n < room && !self.read_closed;
                    return Ok(if drained { Fill::Drained } else { Fill::Data });
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::WouldBlock),
                Err(err) => return Err(err),
            }
        }
    }

    /// The poller saw the peer close its side (or an error): the next reads
    /// go on until EOF.
    pub fn note_read_closed(&mut self) {
        self.read_closed = true;
    }

    #[cfg(test)]
    pub(crate) fn expected_input(&self) -> usize {
        self.expected
    }

    /// The received bytes not yet consumed.
    pub fn input(&self) -> &[u8] {
        &self.in_buf[self.in_start..self.in_end]
    }

    /// Free space after the received bytes, before the buffer must grow.
    pub fn input_free(&self) -> usize {
        self.in_buf.len() - self.in_end
    }

    /// The bytes the output buffer holds allocated.
    pub fn output_capacity(&self) -> usize {
        self.out_buf.capacity()
    }

    pub fn consume(&mut self, n: usize) {
        assert!(
            self.in_start + n <= self.in_end,
            "consumed {} bytes past the {} buffered",
            n,
            self.in_end - self.in_start
        );
        self.in_start += n;
        self.expected = 0;
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
            if self.in_buf.len() > KEEP_BUFFER {
                self.in_buf = Vec::new();
            }
        }
    }

    /// The output buffer, to append encoded replies or frames to.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out_buf
    }

    pub fn pending_output(&self) -> usize {
        self.out_buf.len() - self.out_start
    }

    /// Writes as much buffered output as the socket takes. `Ok(true)` when all was written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.out_start < self.out_buf.len() {
            match self.stream.write(&self.out_buf[self.out_start..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_start += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) => return Err(err),
            }
        }
        self.out_buf.clear();
        self.out_start = 0;
        if self.out_buf.capacity() > KEEP_OUTPUT {
            self.out_buf = Vec::new();
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::time::{Duration, Instant};

    fn pair() -> (Conn, StdStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let far = StdStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (near, _) = listener.accept().expect("accept");
        near.set_nonblocking(true).expect("nonblocking");
        (Conn::new(TcpStream::from_std(near)), far)
    }

    /// Reads until `n` bytes are in, for at most 10 s.
    fn fill_to(conn: &mut Conn, n: usize) {
        let start = Instant::now();
        while conn.input().len() < n {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out");
            if conn.fill().expect("read") == Fill::WouldBlock {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn a_message_of_known_size_grows_the_buffer_to_it_not_past() {
        let size = (1 << 20) + 100;
        let (mut conn, mut far) = pair();
        let writer = std::thread::spawn(move || far.write_all(&vec![7; size]).map(|_| far));
        fill_to(&mut conn, 4);
        conn.expect_input(size);
        fill_to(&mut conn, size);
        let far = writer.join().expect("writer").expect("write");
        assert!(
            conn.in_buf.len() <= size + READ_CHUNK,
            "buffer of {} for a message of {size}",
            conn.in_buf.len()
        );
        conn.consume(size);
        assert_eq!(conn.expected_input(), 0, "forgotten once consumed");
        assert!(conn.in_buf.is_empty(), "a large buffer is given back");
        // Without a size, the buffer doubles (fewer reads, fewer copies).
        drop(far);
        let (mut conn, mut far) = pair();
        let writer = std::thread::spawn(move || far.write_all(&vec![7; size]).map(|_| far));
        fill_to(&mut conn, size);
        writer.join().expect("writer").expect("write");
        assert!(conn.in_buf.len() >= 2 << 20);
    }

    #[test]
    fn a_large_output_buffer_is_given_back_once_written() {
        let (mut conn, far) = pair();
        conn.output().reserve(KEEP_OUTPUT + 1);
        conn.output().extend_from_slice(b"reply");
        assert!(conn.flush().expect("write"));
        assert_eq!(conn.output().capacity(), 0);
        conn.output().reserve(KEEP_OUTPUT / 2);
        conn.output().extend_from_slice(b"reply");
        assert!(conn.flush().expect("write"));
        assert!(
            conn.output().capacity() >= KEEP_OUTPUT / 2,
            "a smaller one is kept"
        );
        drop(far);
    }
}
