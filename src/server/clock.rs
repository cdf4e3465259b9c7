//! The node's clocks: wall time turned into whole logical ticks for the
//! core, and the wall clock in unix milliseconds that stamps writes and
//! numbers forwards.

use std::time::{Duration, Instant};

pub struct Clock {
    start: Instant,
    tick: Duration,
}

impl Clock {
    pub fn new(tick: Duration) -> Clock {
        assert!(!tick.is_zero(), "a tick must last some time");
        Clock {
            start: Instant::now(),
            tick,
        }
    }

    /// Whole ticks since the clock started. Never goes backwards (Instant is monotonic).
    pub fn now_ticks(&self) -> u64 {
        (self.start.elapsed().as_nanos() / self.tick.as_nanos()) as u64
    }

    /// Time until the next tick boundary, for the poll timeout.
    pub fn until_next_tick(&self) -> Duration {
        let tick_nanos = self.tick.as_nanos();
        let into_tick = self.start.elapsed().as_nanos() % tick_nanos;
        Duration::from_nanos((tick_nanos - into_tick) as u64)
    }

    /// A seed that differs between nodes and between runs, for election jitter.
    pub fn seed(&self, id: u64) -> u64 {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        wall ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// The wall clock in unix milliseconds (0 before 1970: a broken clock only
/// makes keys with a timeout live longer).
pub(super) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// The id of the first request this run of the node forwards to a leader:
/// the wall time in nanoseconds, counted up by one per forward from there.
/// A leader answers a forward by its id on whatever connection to the
/// follower is open then, so a reply to a run that was killed can reach the
/// next run of that node (the leader held the request across the restart:
/// waiting for a quorum, or a commit). Had every run counted from 1, that
/// reply would answer another request of the new run that got the same id
/// (a GET answered with an earlier run's INCR result). A run forwards far
/// fewer than one request per nanosecond, so the ids of an earlier run stay
/// below the time it ended, and so below this run's first, unless the wall
/// clock was set back by more than the node was down.
pub fn first_forward_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        .max(1)
}

/// CPU time the calling thread has used. Unlike wall time it leaves out the
/// time the OS gave other threads and processes, so per-iteration figures
/// show the loop's own work even on a busy machine. Zero if unavailable.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The loop thread's CPU time in its slow iterations, read at most about
/// once a tick: reading it is a real syscall (no vDSO), too dear for every
/// iteration. A mark is taken when an iteration starts a tick or more after
/// the last; a slow iteration's CPU is counted from the mark, so it may
/// include up to a tick of the iterations just before it. Unlike its wall
/// time, it leaves out what other processes took: on a loaded machine an
/// iteration of 80 ms of work took over 400 ms of wall time.
pub struct IterationCpu {
    mark: Duration,
    marked_at: Instant,
    tick: Duration,
    /// The most CPU time counted for one slow iteration.
    pub max: Duration,
}

impl IterationCpu {
    pub fn new(tick: Duration) -> IterationCpu {
        IterationCpu {
            mark: thread_cpu_time(),
            marked_at: Instant::now(),
            tick,
            max: Duration::ZERO,
        }
    }

    /// At the start of an iteration that began at `now`.
    pub fn iteration_began(&mut self, now: Instant) {
        if now.saturating_duration_since(self.marked_at) >= self.tick {
            self.mark = thread_cpu_time();
            self.marked_at = now;
        }
    }

    /// At the end of a slow iteration: its CPU time, `exact` if measured
    /// from its start, else from the mark (see above).
    pub fn slow_iteration_ended(&mut self, exact: Option<Duration>) -> Duration {
        let cpu = exact.unwrap_or_else(|| thread_cpu_time().saturating_sub(self.mark));
        self.max = self.max.max(cpu);
        cpu
    }
}

/// Picks the tick length for the given heartbeat: short enough that the
/// heartbeat is several ticks, never longer than 10 ms.
pub fn tick_for(heartbeat_ms: u64) -> Duration {
    Duration::from_millis((heartbeat_ms / 5).clamp(1, 10))
}
