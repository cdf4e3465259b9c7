//! State-machine apply throughput, with a plain `std::collections::HashMap`
//! doing the same inserts in the same run as the baseline: read the KvStore
//! numbers as ratios to it, not as absolutes.
//!
//! `cargo bench --bench kv_apply` (a short run: 10 samples of ~3 s per case).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use raftkv::kv::{Command, KvStore};
use std::collections::HashMap;
use std::time::Duration;

const KEYS: usize = 100_000;
const VALUE_BYTES: usize = 100;

/// `KEYS` distinct 16-byte keys with 100-byte values.
fn pairs() -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..KEYS)
        .map(|i| {
            let key = format!("key:{:012}", i).into_bytes();
            assert_eq!(key.len(), 16);
            let value = vec![b'a' + (i % 26) as u8; VALUE_BYTES];
            (key, value)
        })
        .collect()
}

fn set_commands(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<Command> {
    pairs
        .iter()
        .map(|(k, v)| Command::Set(k.clone(), v.clone()))
        .collect()
}

/// The commands as log payloads, the form every node applies them in.
fn encoded(commands: &[Command]) -> Vec<Vec<u8>> {
    commands
        .iter()
        .map(|command| {
            let mut payload = Vec::new();
            command.encode(&mut payload);
            payload
        })
        .collect()
}

fn filled_store(pairs: &[(Vec<u8>, Vec<u8>)]) -> KvStore {
    let mut kv = KvStore::new();
    for command in set_commands(pairs) {
        kv.apply(&command);
    }
    kv
}

fn bench_set(c: &mut Criterion) {
    let pairs = pairs();
    let commands = set_commands(&pairs);
    let mut group = c.benchmark_group("kv_apply/set_100k_new_keys");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("baseline_std_hashmap_insert_clone", |b| {
        b.iter(|| {
            let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
            for (k, v) in &pairs {
                map.insert(k.clone(), v.clone());
            }
            black_box(map.len())
        })
    });
    group.bench_function("kvstore_apply", |b| {
        b.iter(|| {
            let mut kv = KvStore::new();
            for command in &commands {
                black_box(kv.apply(command));
            }
            black_box(kv.len())
        })
    });
    group.bench_function("baseline_std_hashmap_insert_owned", |b| {
        b.iter_batched(
            || pairs.clone(),
            |owned| {
                let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
                for (k, v) in owned {
                    map.insert(k, v);
                }
                map
            },
            BatchSize::LargeInput,
        )
    });
    let payloads = encoded(&commands);
    group.bench_function("kvstore_apply_encoded", |b| {
        b.iter(|| {
            let mut kv = KvStore::new();
            for payload in &payloads {
                let _ = black_box(kv.apply_encoded(payload));
            }
            black_box(kv.len())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("kv_apply/set_100k_existing_keys");
    group.throughput(Throughput::Elements(KEYS as u64));
    let mut map: HashMap<Vec<u8>, Vec<u8>> = pairs.iter().cloned().collect();
    group.bench_function("baseline_std_hashmap_overwrite", |b| {
        b.iter(|| {
            for (k, v) in &pairs {
                if let Some(old) = map.get_mut(k.as_slice()) {
                    old.clone_from(v);
                }
            }
        })
    });
    let mut kv = filled_store(&pairs);
    group.bench_function("kvstore_apply", |b| {
        b.iter(|| {
            for command in &commands {
                black_box(kv.apply(command));
            }
        })
    });
    // Values alternate between 100 and 90 bytes, so no overwrite is in place.
    let shorter: Vec<Command> = pairs
        .iter()
        .map(|(k, v)| Command::Set(k.clone(), v[..VALUE_BYTES - 10].to_vec()))
        .collect();
    let mut use_shorter = false;
    group.bench_function("kvstore_apply_other_length", |b| {
        b.iter(|| {
            use_shorter = !use_shorter;
            let batch = if use_shorter { &shorter } else { &commands };
            for command in batch {
                black_box(kv.apply(command));
            }
        })
    });
    group.finish();
}

fn bench_incr(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|i| format!("counter:{:08}", i).into_bytes())
        .collect();
    let commands: Vec<Command> = (0..KEYS)
        .map(|i| Command::IncrBy(keys[i % keys.len()].clone(), 1))
        .collect();
    let mut group = c.benchmark_group("kv_apply/incr_100k_on_1k_keys");
    group.throughput(Throughput::Elements(KEYS as u64));
    let mut counters: HashMap<Vec<u8>, i64> = HashMap::new();
    group.bench_function("baseline_std_hashmap_i64_add", |b| {
        b.iter(|| {
            for i in 0..KEYS {
                let key = &keys[i % keys.len()];
                match counters.get_mut(key.as_slice()) {
                    Some(n) => *n += 1,
                    None => {
                        counters.insert(key.clone(), 1);
                    }
                }
            }
        })
    });
    let mut kv = KvStore::new();
    group.bench_function("kvstore_apply", |b| {
        b.iter(|| {
            for command in &commands {
                black_box(kv.apply(command));
            }
        })
    });
    group.finish();
}

fn bench_snapshot(c: &mut Criterion) {
    let pairs = pairs();
    let mut kv = filled_store(&pairs);
    let mut stream = Vec::new();
    kv.snapshot_view()
        .write_to(&mut stream)
        .expect("Vec never fails");
    println!(
        "snapshot of {} keys: {} bytes, digest {:016x}",
        kv.len(),
        stream.len(),
        kv.digest()
    );

    let mut group = c.benchmark_group("kv_snapshot/100k_keys");
    group.bench_function("snapshot_view", |b| {
        b.iter(|| black_box(kv.snapshot_view()))
    });
    let extra = Command::Set(b"key:000000000007".to_vec(), vec![b'z'; VALUE_BYTES]);
    group.bench_function("snapshot_view_then_one_set", |b| {
        b.iter(|| {
            let view = kv.snapshot_view();
            black_box(kv.apply(&extra));
            view
        })
    });
    group.throughput(Throughput::Bytes(stream.len() as u64));
    let view = kv.snapshot_view();
    let mut out = Vec::with_capacity(stream.len());
    group.bench_function("write_to", |b| {
        // Writing consumes a view; each run writes a fresh one (made untimed).
        b.iter_batched(
            || view.clone(),
            |fresh| {
                out.clear();
                fresh.write_to(&mut out).expect("Vec never fails");
                black_box(out.len())
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("baseline_memcpy_same_bytes", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(&stream);
            black_box(out.len())
        })
    });
    group.bench_function("restore_from", |b| {
        b.iter(|| {
            let restored = KvStore::restore_from(&mut stream.as_slice()).expect("valid stream");
            black_box(restored.len())
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_set, bench_incr, bench_snapshot
}
criterion_main!(benches);
