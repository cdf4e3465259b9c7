//! A write load from several client threads spread over every node: each
//! writer SETs unique keys and INCRs a shared counter, records what was
//! acknowledged and every error reply, and moves to the next node after an
//! error or a closed connection (a stopped, killed or removed node).

use super::{Client, Cluster};
use raftkv::kv::Reply;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct Record {
    acked: HashMap<String, String>,
    incrs: Vec<i64>,
    errors: Vec<String>,
}

/// What the writers saw: acknowledged SETs (key -> value), INCR replies, and
/// every error reply.
pub struct LoadResult {
    pub acked: HashMap<String, String>,
    pub incrs: Vec<i64>,
    pub errors: Vec<String>,
}

pub struct WriteLoad {
    stop: Arc<AtomicBool>,
    handles: Vec<thread::JoinHandle<()>>,
    record: Arc<Mutex<Record>>,
}

impl WriteLoad {
    pub fn start(cluster: &Cluster, writers: usize) -> WriteLoad {
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let record = Arc::new(Mutex::new(Record::default()));
        let handles = (0..writers)
            .map(|w| {
                let (addrs, stop, record) = (addrs.clone(), Arc::clone(&stop), Arc::clone(&record));
                thread::spawn(move || write_until_stopped(w, &addrs, &stop, &record))
            })
            .collect();
        WriteLoad {
            stop,
            handles,
            record,
        }
    }

    /// SETs acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.record.lock().unwrap().acked.len()
    }

    pub fn finish(self) -> LoadResult {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            handle.join().expect("writer thread");
        }
        let record = std::mem::take(&mut *self.record.lock().unwrap());
        LoadResult {
            acked: record.acked,
            incrs: record.incrs,
            errors: record.errors,
        }
    }
}

fn write_until_stopped(w: usize, addrs: &[String], stop: &AtomicBool, record: &Mutex<Record>) {
    let mut node = w % addrs.len();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Some(mut client) = Client::try_connect(&addrs[node]) {
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let (key, value) = (format!("w{}:{}", w, n), format!("v{}", n));
                if !write_one(&mut client, key, value, record) {
                    break;
                }
            }
        }
        node = (node + 1) % addrs.len();
        thread::sleep(Duration::from_millis(10));
    }
}

/// One SET and one INCR; false when the writer should move to another node.
fn write_one(client: &mut Client, key: String, value: String, record: &Mutex<Record>) -> bool {
    if !client.try_send(&[b"SET", key.as_bytes(), value.as_bytes()]) {
        return false;
    }
    match client.try_read() {
        Some(Reply::Ok) => {
            record.lock().unwrap().acked.insert(key, value);
        }
        other => return note_failure("SET", other, record),
    }
    if !client.try_send(&[b"INCR", b"counter"]) {
        return false;
    }
    match client.try_read() {
        Some(Reply::Integer(v)) => {
            record.lock().unwrap().incrs.push(v);
            true
        }
        other => note_failure("INCR", other, record),
    }
}

fn note_failure(what: &str, reply: Option<Reply>, record: &Mutex<Record>) -> bool {
    match reply {
        Some(Reply::Error(e)) => record.lock().unwrap().errors.push(e),
        None => {}
        Some(other) => panic!("{} answered {:?}", what, other),
    }
    false
}
