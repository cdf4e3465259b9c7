//! A non-blocking TCP connection with an input and an output buffer; shared by
//! client and peer connections.

use mio::net::TcpStream;
use std::io::{self, Read, Write};

const READ_CHUNK: usize = 64 * 1024;

pub struct Conn {
    pub stream: TcpStream,
    in_buf: Vec<u8>,
    /// Bytes of `in_buf` already consumed by the parser.
    in_start: usize,
    out_buf: Vec<u8>,
    /// Bytes of `out_buf` already written to the socket.
    out_start: usize,
}

/// What one `fill` saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// Some bytes arrived; call again (edge-triggered: read until `WouldBlock`).
    Data,
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
            out_buf: Vec::new(),
            out_start: 0,
        }
    }

    /// Reads one chunk from the socket into the input buffer.
    pub fn fill(&mut self) -> io::Result<Fill> {
        if self.in_start > 0 && self.in_start * 2 >= self.in_buf.len() {
            self.in_buf.drain(..self.in_start);
            self.in_start = 0;
        }
        let old_len = self.in_buf.len();
        self.in_buf.resize(old_len + READ_CHUNK, 0);
        loop {
            match self.stream.read(&mut self.in_buf[old_len..]) {
                Ok(0) => {
                    self.in_buf.truncate(old_len);
                    return Ok(Fill::Closed);
                }
                Ok(n) => {
                    self.in_buf.truncate(old_len + n);
                    return Ok(Fill::Data);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.in_buf.truncate(old_len);
                    if err.kind() == io::ErrorKind::WouldBlock {
                        return Ok(Fill::WouldBlock);
                    }
                    return Err(err);
                }
            }
        }
    }

    /// The received bytes not yet consumed.
    pub fn input(&self) -> &[u8] {
        &self.in_buf[self.in_start..]
    }

    pub fn consume(&mut self, n: usize) {
        assert!(
            self.in_start + n <= self.in_buf.len(),
            "consumed {} bytes past the {} buffered",
            n,
            self.in_buf.len() - self.in_start
        );
        self.in_start += n;
        if self.in_start == self.in_buf.len() {
            self.in_buf.clear();
            self.in_start = 0;
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
        Ok(true)
    }
}
