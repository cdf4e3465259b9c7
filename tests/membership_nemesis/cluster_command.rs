//! CLUSTER requests and how their replies are read: what a request got
//! ([`Asked`]), the changes the nemesis asks for, and CLUSTER MEMBERS parsed
//! into a [`View`].

use super::common::Cluster;
use super::toolkit::connect;
use raftkv::kv::Reply;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

fn err_text(reply: &Reply) -> Option<&str> {
    match reply {
        Reply::Error(e) => Some(e.as_str()),
        _ => None,
    }
}

pub fn is_tryagain(reply: &Reply) -> bool {
    err_text(reply).is_some_and(|e| e.starts_with("TRYAGAIN"))
}

pub fn is_timeout(reply: &Reply) -> bool {
    err_text(reply).is_some_and(|e| e.starts_with("TIMEOUT"))
}

/// What a CLUSTER request got.
#[derive(Debug, PartialEq)]
pub enum Asked {
    /// No connection: the request never left.
    NotSent,
    /// Sent, no reply within the limit (or the connection closed).
    NoReply,
    Reply(Reply),
}

/// Sends one CLUSTER request through `addr`, waiting up to `limit` for the reply.
pub fn cluster_request(addr: &str, args: &[String], limit: Duration) -> Asked {
    let Some(mut client) = connect(addr, limit) else {
        return Asked::NotSent;
    };
    let mut argv: Vec<&[u8]> = vec![b"CLUSTER"];
    argv.extend(args.iter().map(|a| a.as_bytes()));
    if !client.try_send(&argv) {
        return Asked::NoReply;
    }
    match client.try_read() {
        Some(reply) => Asked::Reply(reply),
        None => Asked::NoReply,
    }
}

/// A membership change the nemesis asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    Add(u64),
    Remove(u64),
}

impl Change {
    pub fn id(self) -> u64 {
        match self {
            Change::Add(id) | Change::Remove(id) => id,
        }
    }

    /// The change that undoes this one.
    pub fn opposite(self) -> Change {
        match self {
            Change::Add(id) => Change::Remove(id),
            Change::Remove(id) => Change::Add(id),
        }
    }

    pub fn args(self, cluster: &Cluster) -> Vec<String> {
        match self {
            Change::Add(id) => vec![
                "ADD".into(),
                id.to_string(),
                cluster.nodes[(id - 1) as usize].raft_addr(),
            ],
            Change::Remove(id) => vec!["REMOVE".into(), id.to_string()],
        }
    }
}

/// CLUSTER MEMBERS as the leader answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub leader: Option<u64>,
}

impl View {
    pub fn members(&self) -> BTreeSet<u64> {
        self.voters.iter().chain(&self.learners).copied().collect()
    }
}

pub fn parse_members(text: &str) -> Option<View> {
    let mut view = View {
        voters: Vec::new(),
        learners: Vec::new(),
        leader: None,
    };
    for line in text.split('\n') {
        let fields: HashMap<&str, &str> = line
            .split(' ')
            .map(|kv| kv.split_once('='))
            .collect::<Option<_>>()?;
        let id: u64 = fields.get("id")?.parse().ok()?;
        match *fields.get("suffrage")? {
            "voter" => view.voters.push(id),
            "learner" => view.learners.push(id),
            _ => return None,
        }
        if *fields.get("leader")? == "yes" {
            view.leader = Some(id);
        }
    }
    Some(view)
}
