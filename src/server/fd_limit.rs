//! How many client connections a node takes: every connection is a file
//! descriptor, and running out of them would fail the node's own files (a
//! new log segment, the stable file) and stop it. So, as Redis does, the soft
//! limit on open files is raised to the hard one at start, a reserve is kept
//! for the node's own files and its peers, and a client beyond the rest is
//! answered `-ERR max number of clients reached` and closed.

use log::warn;

/// Redis's default `maxclients`.
pub const MAX_CLIENTS: usize = 10_000;

/// Descriptors kept for everything but clients: standard streams, the poller
/// and its waker, the two listeners, the signal pipe, the newest log segment
/// (and the one before while it is synced), snapshot files, the stable file
/// and temporary files, and the peers' connections (one each way per member,
/// and a few inbound ones not yet identified).
pub const RESERVED_FDS: u64 = 96;

/// Inbound raft connections that have not sent their handshake yet, at most
/// (the oldest is closed for a new one). A member needs one at a time; more
/// are strangers or stale reconnects.
pub const MAX_UNIDENTIFIED_PEERS: usize = 16;

/// Raises the soft open-files limit to the hard one and returns how many
/// clients fit in it. All of it, not just what the clients need: snapshot
/// files and peer connections come and go. (The log holds a descriptor for
/// its newest segment only, see `Segment::close_file`.)
pub fn client_capacity() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return MAX_CLIENTS;
        }
        // An unlimited hard limit is refused for open files (the kernel's
        // nr_open caps it); a million is what most systems allow.
        for wanted in [limit.rlim_max, 1 << 20] {
            if limit.rlim_cur >= wanted {
                break;
            }
            let raised = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = wanted;
                break;
            }
        }
        limit.rlim_cur
    };
    let capacity = soft.saturating_sub(RESERVED_FDS).min(MAX_CLIENTS as u64) as usize;
    if capacity < MAX_CLIENTS {
        warn!(
            "the open-files limit is {soft}: at most {} client connections (raise `ulimit -n` for more)",
            capacity.max(1)
        );
    }
    capacity.max(1)
}
