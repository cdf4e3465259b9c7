//! Pieces both nemesis tests use: a seeded RNG, the wall clock as node logs
//! print it, a client with timeouts, guards that resume a stopped node and
//! stop the client threads when a test fails, and the failure report.

// Each test binary uses its own part of it.
#![allow(dead_code)]

use super::common::{Client, Cluster};
use super::history::History;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// SplitMix64: the test's choices come from one seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low))
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.below(items.len() as u64) as usize])
    }
}

/// The wall clock as the nodes' log lines print it (RFC 3339, UTC, millis).
pub fn utc_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        year,
        month,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

pub fn connect(addr: &str, timeout: Duration) -> Option<Client> {
    let client = Client::try_connect(addr)?;
    client.stream.set_read_timeout(Some(timeout)).ok()?;
    client.stream.set_write_timeout(Some(timeout)).ok()?;
    Some(client)
}

/// SIGCONTs a stopped node when dropped (also when the test fails), before
/// the cluster kills every node.
pub struct Stopped(pub Option<u32>);

impl Stopped {
    pub fn signal(pid: u32, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not
        // reaped (a node is never killed and reaped while it is stopped).
        let rc = unsafe { libc::kill(pid as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {})", pid, signal);
    }

    pub fn stop(&mut self, pid: u32) {
        assert!(self.0.is_none(), "one node stopped at a time");
        Stopped::signal(pid, libc::SIGSTOP);
        self.0 = Some(pid);
    }

    pub fn resume(&mut self) {
        if let Some(pid) = self.0.take() {
            Stopped::signal(pid, libc::SIGCONT);
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: as in `signal`; no assertion while possibly unwinding.
            unsafe {
                libc::kill(pid as i32, libc::SIGCONT);
            }
        }
    }
}

/// Sets the stop flag when dropped, so client threads end when the test fails.
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Fails a nemesis test with everything needed to reproduce and explain it:
/// the node logs and the report are kept in `<CARGO_TARGET_TMPDIR>/<test>-<seed>`,
/// and the seed's variable (`NEMESIS_SEED` for the test `nemesis`) replays
/// the nemesis's choices.
pub fn fail_with_report(
    cluster: &Cluster,
    hist: &History,
    test: &str,
    seed: u64,
    stats: &str,
    why: &str,
) -> ! {
    let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{test}-{seed}"));
    let _ = std::fs::create_dir_all(&saved);
    for (i, node) in cluster.nodes.iter().enumerate() {
        let _ = std::fs::copy(&node.log_path, saved.join(format!("node{}.log", i + 1)));
    }
    let seed_var = format!("{}_SEED", test.to_uppercase().replace('-', "_"));
    let mut report = String::new();
    let _ = writeln!(report, "{why}");
    let _ = writeln!(
        report,
        "seed {seed} (replay the nemesis choices with {seed_var}={seed}); node logs kept in {}",
        saved.display()
    );
    let _ = writeln!(report, "{stats}");
    let _ = writeln!(report, "nemesis timeline:");
    for line in hist.events.lock().unwrap().iter() {
        let _ = writeln!(report, "  {line}");
    }
    let violations = hist.violations.lock().unwrap();
    let _ = writeln!(report, "{} violations (first 30):", violations.len());
    for line in violations.iter().take(30) {
        let _ = writeln!(report, "  {line}");
    }
    drop(violations);
    let _ = std::fs::write(saved.join("report.txt"), &report);
    panic!("{}", report);
}
