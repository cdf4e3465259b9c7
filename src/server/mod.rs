//! The shell: sockets, the clock, signals (stub).
