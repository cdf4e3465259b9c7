//! Membership changes and leadership transfer with real processes: CLUSTER
//! MEMBERS / ADD / REMOVE / TRANSFER, joining nodes, removed nodes, and a
//! cluster grown from 3 to 5 and shrunk by two of its founders (the leader
//! among them) under write load.
//!
//! The tests are grouped by what they are about, one module each; this file
//! holds the helpers more than one of them uses.

mod a_voter_down;
mod addresses;
#[path = "../common/mod.rs"]
mod common;
mod growth_and_full_restart;
mod joining;
mod removed_nodes;
mod restart_log;
mod transfers;

use common::{wait_for, Cluster};
use raftkv::kv::Reply;
use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::{Duration, Instant};

fn ok() -> Reply {
    Reply::Ok
}

fn err(text: &str) -> Reply {
    Reply::Error(text.to_string())
}

fn text(reply: Reply) -> String {
    match reply {
        Reply::Bulk(b) => String::from_utf8(b).expect("utf-8 reply"),
        other => panic!("expected a bulk string, got {:?}", other),
    }
}

/// CLUSTER MEMBERS through node `via`, parsed: id -> field -> value.
fn members(cluster: &Cluster, via: usize) -> BTreeMap<u64, HashMap<String, String>> {
    let reply = cluster.client(via).cmd_retry(&["CLUSTER", "MEMBERS"]);
    let text = text(reply);
    text.split('\n')
        .map(|line| {
            let fields: HashMap<String, String> = line
                .split(' ')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("key=value");
                    (k.to_string(), v.to_string())
                })
                .collect();
            (fields["id"].parse().expect("numeric id"), fields)
        })
        .collect()
}

/// Runs a CLUSTER command through node `via`, retrying `-TRYAGAIN` for up to 20 s.
fn cluster_cmd(cluster: &Cluster, via: usize, args: &[&str]) -> Reply {
    let mut argv = vec!["CLUSTER"];
    argv.extend_from_slice(args);
    let start = Instant::now();
    loop {
        let reply = cluster.client(via).cmd(&argv);
        match &reply {
            Reply::Error(e) if e.starts_with("TRYAGAIN") && start.elapsed().as_secs() < 20 => {
                thread::sleep(Duration::from_millis(50))
            }
            _ => return reply,
        }
    }
}

fn wait_voter(cluster: &Cluster, via: usize, id: u64) {
    wait_for(
        Duration::from_secs(15),
        "the new node to become a voter",
        || {
            members(cluster, via)
                .get(&id)
                .filter(|m| m["suffrage"] == "voter")
                .map(|_| ())
        },
    );
}

fn index_of(cluster: &Cluster, id: u64) -> usize {
    cluster
        .nodes
        .iter()
        .position(|n| n.id == id)
        .expect("node id")
}
