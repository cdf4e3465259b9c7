//! What the clients saw, and the checks of each reply against it.

use super::clients::Workload;
use super::toolkit::utc_now;
use raftkv::kv::Reply;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A reply as a person reads it in a report.
pub fn show(reply: &Reply) -> String {
    match reply {
        Reply::Nil => "nil".to_string(),
        Reply::Bulk(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
        other => format!("{:?}", other),
    }
}

/// What is known about one SET key, owned by one writer.
#[derive(Default)]
pub struct KeyState {
    /// Highest value sent (values are sent in increasing order, one at a time).
    pub sent: u64,
    /// Highest value acknowledged with `+OK`.
    pub acked: u64,
    /// Values answered `-TRYAGAIN`: never to be applied.
    pub refused: HashSet<u64>,
    /// Values whose outcome is unknown (`-TIMEOUT`, no reply): may be applied, even late.
    pub unknown: HashSet<u64>,
    /// Every value a read returned.
    pub seen: HashSet<u64>,
}

#[derive(Default)]
pub struct CounterState {
    pub attempted: i64,
    pub refused: i64,
    pub acked: i64,
    /// The highest value an acknowledged INCR returned.
    pub max_reply: i64,
    pub replies: HashSet<i64>,
}

/// The shared record every client thread updates and checks against.
pub struct History {
    pub start: Instant,
    pub keys: HashMap<String, Mutex<KeyState>>,
    pub counters: HashMap<String, Mutex<CounterState>>,
    pub violations: Mutex<Vec<String>>,
    pub events: Mutex<Vec<String>>,
    pub errors: Mutex<HashMap<String, u64>>,
    pub acked_sets: AtomicU64,
    pub checked_reads: AtomicU64,
    pub probe_reads: AtomicU64,
}

impl History {
    pub fn new(workload: &Workload) -> History {
        let mut keys: HashMap<String, Mutex<KeyState>> = (0..workload.writers)
            .flat_map(|w| (0..workload.keys_per_writer).map(move |j| workload.writer_key(w, j)))
            .map(|k| (k, Mutex::default()))
            .collect();
        keys.insert(workload.probe_key.to_string(), Mutex::default());
        History {
            start: Instant::now(),
            keys,
            counters: (0..workload.counters)
                .map(|c| (workload.counter_key(c), Mutex::default()))
                .collect(),
            violations: Mutex::default(),
            events: Mutex::default(),
            errors: Mutex::default(),
            acked_sets: AtomicU64::new(0),
            checked_reads: AtomicU64::new(0),
            probe_reads: AtomicU64::new(0),
        }
    }

    pub fn stamp(&self) -> String {
        format!("+{:7.3}s {}", self.start.elapsed().as_secs_f64(), utc_now())
    }

    pub fn event(&self, text: String) {
        let line = format!("{} {}", self.stamp(), text);
        eprintln!("nemesis: {}", line);
        self.events.lock().unwrap().push(line);
    }

    pub fn violation(&self, text: String) {
        let line = format!("{} {}", self.stamp(), text);
        let mut violations = self.violations.lock().unwrap();
        if violations.len() < 20 {
            eprintln!("VIOLATION: {}", line);
        }
        violations.push(line);
    }

    pub fn has_violations(&self) -> bool {
        !self.violations.lock().unwrap().is_empty()
    }

    pub fn count_error(&self, text: &str) {
        let code = text.split_whitespace().next().unwrap_or("").to_string();
        *self.errors.lock().unwrap().entry(code).or_default() += 1;
    }

    pub fn key(&self, key: &str) -> std::sync::MutexGuard<'_, KeyState> {
        self.keys[key].lock().unwrap()
    }

    pub fn counter(&self, key: &str) -> std::sync::MutexGuard<'_, CounterState> {
        self.counters[key].lock().unwrap()
    }

    /// What a read of `key` sent now must return at least.
    pub fn floor(&self, key: &str) -> i64 {
        match self.counters.get(key) {
            Some(c) => c.lock().unwrap().max_reply,
            None => self.key(key).acked as i64,
        }
    }

    pub fn all_floors(&self, keys: &[String]) -> Vec<i64> {
        keys.iter().map(|k| self.floor(k)).collect()
    }

    /// Checks one read's reply for `key` against the floor taken when it was sent.
    pub fn check_read(&self, key: &str, floor: i64, reply: &Reply, via: &str) {
        self.checked_reads.fetch_add(1, Ordering::Relaxed);
        let value = match reply {
            Reply::Nil => 0,
            Reply::Bulk(bytes) => {
                match std::str::from_utf8(bytes).ok().and_then(|s| s.parse().ok()) {
                    Some(v) if v > 0 => v,
                    _ => {
                        return self.violation(format!(
                            "{}: GET {} returned {:?}, which no client ever wrote",
                            via,
                            key,
                            String::from_utf8_lossy(bytes)
                        ))
                    }
                }
            }
            other => {
                return self.violation(format!(
                    "{}: GET {} answered {:?} (expected a bulk string or nil)",
                    via, key, other
                ))
            }
        };
        if let Some(counter) = self.counters.get(key) {
            let c = counter.lock().unwrap();
            let most = c.attempted - c.refused;
            if value < floor {
                self.violation(format!(
                    "{}: stale read: GET {} returned {}, but an INCR reply of {} was acknowledged before the GET was sent",
                    via, key, value, floor
                ));
            }
            if value > most {
                self.violation(format!(
                    "{}: GET {} returned {}, above the {} INCRs attempted and not refused before the reply",
                    via, key, value, most
                ));
            }
            return;
        }
        let value = value as u64;
        let mut k = self.key(key);
        if value > 0 {
            k.seen.insert(value);
        }
        if value > k.sent {
            self.violation(format!(
                "{}: GET {} returned {}, never written (highest value sent before the reply: {})",
                via, key, value, k.sent
            ));
        }
        if k.refused.contains(&value) {
            self.violation(format!(
                "{}: GET {} returned {}, whose SET was answered -TRYAGAIN (promised not applied)",
                via, key, value
            ));
        }
        if (value as i64) < floor && !k.unknown.contains(&value) {
            self.violation(format!(
                "{}: stale read: GET {} returned {}, but {} was acknowledged before the GET was sent (acked now {}, sent {})",
                via,
                key,
                if value == 0 { "nil".to_string() } else { value.to_string() },
                floor,
                k.acked,
                k.sent
            ));
        }
    }

    /// The value to send next for `key` (recorded as sent before it leaves).
    pub fn begin_set(&self, key: &str) -> u64 {
        let mut k = self.key(key);
        k.sent += 1;
        k.sent
    }

    /// Records a SET's outcome; false if the connection should be dropped.
    pub fn end_set(&self, key: &str, value: u64, reply: Option<Reply>, via: &str) -> bool {
        let mut k = self.key(key);
        match reply {
            Some(Reply::Ok) => {
                k.acked = k.acked.max(value);
                self.acked_sets.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(Reply::Error(e)) if e.starts_with("TRYAGAIN") => {
                if k.seen.contains(&value) {
                    self.violation(format!(
                        "{}: SET {} {} answered -{} but a read had already returned it",
                        via, key, value, e
                    ));
                }
                k.refused.insert(value);
                drop(k);
                self.count_error(&e);
                true
            }
            Some(Reply::Error(e)) if e.starts_with("TIMEOUT") => {
                k.unknown.insert(value);
                drop(k);
                self.count_error(&e);
                true
            }
            None => {
                k.unknown.insert(value);
                drop(k);
                self.count_error("no-reply");
                false
            }
            Some(other) => {
                k.unknown.insert(value);
                drop(k);
                self.violation(format!(
                    "{}: SET {} {} answered {:?}",
                    via, key, value, other
                ));
                false
            }
        }
    }

    /// Records an INCR as attempted; returns the floor its reply must exceed.
    pub fn begin_incr(&self, key: &str) -> i64 {
        let mut c = self.counter(key);
        c.attempted += 1;
        c.max_reply
    }

    pub fn end_incr(&self, key: &str, floor: i64, reply: Option<Reply>, via: &str) -> bool {
        let mut c = self.counter(key);
        match reply {
            Some(Reply::Integer(n)) => {
                c.acked += 1;
                c.max_reply = c.max_reply.max(n);
                let most = c.attempted - c.refused;
                let fresh = c.replies.insert(n);
                drop(c);
                if !fresh {
                    self.violation(format!(
                        "{}: INCR {} returned {} a second time",
                        via, key, n
                    ));
                }
                if n <= floor {
                    self.violation(format!(
                        "{}: INCR {} returned {}, not above {} acknowledged before it was sent",
                        via, key, n, floor
                    ));
                }
                if n > most {
                    self.violation(format!(
                        "{}: INCR {} returned {}, above the {} INCRs attempted and not refused",
                        via, key, n, most
                    ));
                }
                true
            }
            Some(Reply::Error(e)) if e.starts_with("TRYAGAIN") => {
                c.refused += 1;
                drop(c);
                self.count_error(&e);
                true
            }
            Some(Reply::Error(e)) if e.starts_with("TIMEOUT") => {
                drop(c);
                self.count_error(&e);
                true
            }
            None => {
                drop(c);
                self.count_error("no-reply");
                false
            }
            Some(other) => {
                drop(c);
                self.violation(format!("{}: INCR {} answered {:?}", via, key, other));
                false
            }
        }
    }

    /// A read's reply that is not a value: true if it is an allowed error.
    pub fn read_failed(&self, reply: &Option<Reply>, what: &str, via: &str) -> bool {
        match reply {
            Some(Reply::Error(e)) if e.starts_with("TRYAGAIN") => {
                self.count_error(e);
                true
            }
            None => {
                self.count_error("no-reply");
                false
            }
            Some(Reply::Error(e)) => {
                self.violation(format!("{}: {} answered -{}", via, what, e));
                false
            }
            Some(_) => unreachable!("only called for errors and missing replies"),
        }
    }

    /// Checks a read made after the cluster converged: a counter lies between
    /// its acknowledged and attempted INCRs; a SET key holds at least its
    /// acknowledged value (or one of unknown outcome), nothing refused and
    /// nothing never sent.
    pub fn check_final_read(&self, via: &str, key: &str, reply: &Reply) {
        let value: i64 = match reply {
            Reply::Nil => 0,
            Reply::Bulk(b) => String::from_utf8_lossy(b).parse().unwrap_or(-1),
            _ => -1,
        };
        if let Some(counter) = self.counters.get(key) {
            let c = counter.lock().unwrap();
            let (least, most) = (c.acked.max(c.max_reply), c.attempted - c.refused);
            if value < least || value > most {
                self.violation(format!(
                    "{}: counter {} is {}, outside [{}, {}] (acknowledged {}, highest reply {}, attempted {}, refused {})",
                    via, key, show(reply), least, most, c.acked, c.max_reply, c.attempted, c.refused
                ));
            }
            return;
        }
        let k = self.key(key);
        let lost = value < k.acked as i64 && !k.unknown.contains(&(value as u64));
        if value < 0 || value as u64 > k.sent || k.refused.contains(&(value as u64)) || lost {
            self.violation(format!(
                "{}: {} is {} (acknowledged up to {}, sent up to {}, {} refused, {} of unknown outcome)",
                via,
                key,
                show(reply),
                k.acked,
                k.sent,
                k.refused.len(),
                k.unknown.len()
            ));
        }
    }

    /// No read ever returned a value whose SET was answered -TRYAGAIN.
    pub fn check_no_refused_value_was_read(&self) {
        for (key, state) in &self.keys {
            let k = state.lock().unwrap();
            if let Some(v) = k.seen.intersection(&k.refused).next() {
                self.violation(format!(
                    "a read of {} returned {}, whose SET was answered -TRYAGAIN",
                    key, v
                ));
            }
        }
    }
}
