//! The small RESP client the process tests speak to a node with, and the
//! reading of its INFO and bulk replies.

use raftkv::kv::Reply;
use raftkv::wire::resp;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// A blocking RESP client with timeouts, speaking arrays of bulk strings.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: &str) -> Client {
        Client::try_connect(addr).unwrap_or_else(|| panic!("cannot connect to {}", addr))
    }

    pub fn try_connect(addr: &str) -> Option<Client> {
        let stream = TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Client {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, argv: &[&[u8]]) {
        let mut out = Vec::new();
        resp::encode_request(argv, &mut out);
        self.stream.write_all(&out).expect("write request");
    }

    /// Sends a request; false if the connection is gone (a killed node).
    pub fn try_send(&mut self, argv: &[&[u8]]) -> bool {
        let mut out = Vec::new();
        resp::encode_request(argv, &mut out);
        self.stream.write_all(&out).is_ok()
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one reply; None on timeout or a closed connection.
    pub fn try_read(&mut self) -> Option<Reply> {
        loop {
            if let Ok(Some((reply, used))) = resp::parse_reply(&self.buf) {
                self.buf.drain(..used);
                return Some(reply);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub fn read(&mut self) -> Reply {
        self.try_read().expect("a reply before the timeout")
    }

    /// Reads one reply's bytes exactly as the server sent them. For replies
    /// of tens of MB: `read` parses the whole buffer again after every read,
    /// copying every complete value each time.
    pub fn read_raw(&mut self) -> Vec<u8> {
        let mut chunk = vec![0u8; 1 << 20];
        loop {
            if let Some(end) = reply_end(&self.buf, 0) {
                let rest = self.buf.split_off(end);
                return std::mem::replace(&mut self.buf, rest);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed after {} bytes", self.buf.len()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(err) => panic!("no whole reply after {} bytes: {}", self.buf.len(), err),
            }
        }
    }

    /// Whether the server closed the connection (reads EOF within the timeout).
    pub fn is_closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }

    pub fn cmd(&mut self, argv: &[&str]) -> Reply {
        let argv: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
        self.send(&argv);
        self.read()
    }

    /// Retries on `-TRYAGAIN` for up to 10 s (what a client does during an election).
    pub fn cmd_retry(&mut self, argv: &[&str]) -> Reply {
        let start = Instant::now();
        loop {
            let reply = self.cmd(argv);
            match &reply {
                Reply::Error(e)
                    if e.starts_with("TRYAGAIN") && start.elapsed() < Duration::from_secs(10) =>
                {
                    thread::sleep(Duration::from_millis(50))
                }
                _ => return reply,
            }
        }
    }

    pub fn try_info(&mut self) -> Option<HashMap<String, String>> {
        self.send(&[b"INFO"]);
        match self.try_read()? {
            Reply::Bulk(text) => Some(parse_info(&String::from_utf8_lossy(&text))),
            _ => None,
        }
    }

    pub fn info(&mut self) -> HashMap<String, String> {
        self.try_info().expect("INFO reply")
    }
}

/// Where the RESP2 or RESP3 reply starting at `at` ends, once it is all in
/// `buf`: looks at headers only, jumping over bulk contents.
fn reply_end(buf: &[u8], at: usize) -> Option<usize> {
    let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let next = line_end + 2;
    let number = || -> i64 {
        let text = std::str::from_utf8(&buf[at + 1..line_end]).expect("ASCII length");
        text.parse().expect("a length")
    };
    match buf[at] {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(next),
        b'$' | b'=' => match number() {
            -1 => Some(next),
            len => {
                let end = next + len as usize + 2;
                (buf.len() >= end).then_some(end)
            }
        },
        b'*' | b'~' | b'>' | b'%' => {
            let elements = number().max(0) * if buf[at] == b'%' { 2 } else { 1 };
            let mut end = next;
            for _ in 0..elements {
                end = reply_end(buf, end)?;
            }
            Some(end)
        }
        other => panic!("unexpected reply type {:?}", other as char),
    }
}

pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.split("\r\n")
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.as_bytes().to_vec())
}
