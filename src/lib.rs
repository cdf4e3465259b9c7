//! raftkv: a Raft-replicated key-value daemon that speaks the Redis protocol.

/// `println!` that lets a stdout nobody reads any more pass (`raftkv --help |
/// head -1`, `--local-cluster` under a closed pipe): a message lost is no
/// reason to panic and take a running cluster down.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that lets a closed stderr pass, as [`outln!`] does stdout,
/// and writes the line in one call (see [`write_line`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        let _ = $crate::write_line(&mut std::io::stderr(), format_args!($($arg)*));
    }};
}

/// Writes `args` and a newline with one `write_all`. Stderr is unbuffered,
/// so `writeln!` makes a `write` per piece of the format; `--local-cluster`'s
/// nodes share the parent's stderr, and a node's error line came out cut in
/// two by another node's log line.
pub fn write_line(out: &mut impl std::io::Write, args: std::fmt::Arguments) -> std::io::Result<()> {
    let mut line = std::fmt::format(args);
    line.push('\n');
    out.write_all(line.as_bytes())
}

pub mod cli;
pub mod config;
pub mod kv;
mod pending_writes;
pub mod raft;
pub mod recovery;
pub mod replica;
pub mod server;
pub mod storage;
pub mod timer_wheel;
pub mod wire;

#[cfg(test)]
mod tests {
    /// Records each `write` call, as a pipe shared with other processes
    /// would take it: one call is one piece that nothing can cut.
    #[derive(Default)]
    struct Calls(Vec<Vec<u8>>);

    impl std::io::Write for Calls {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_error_line_is_written_in_one_call() {
        let mut calls = Calls::default();
        let addr = "127.0.0.1:6382";
        let err = "Address already in use (os error 98)";
        super::write_line(
            &mut calls,
            format_args!("raftkv: cannot listen on client address {}: {}", addr, err),
        )
        .expect("write");
        let line = format!("raftkv: cannot listen on client address {addr}: {err}\n");
        assert_eq!(calls.0, vec![line.into_bytes()]);
    }
}
