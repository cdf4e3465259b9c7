//! Membership changes as log entries: what a [`ConfChange`] asks for and how an
//! `EntryKind::ConfChange` entry's payload is laid out.
//!
//! Each entry carries the change *and the whole configuration that results*,
//! so a node learns the membership from the latest such entry alone, without
//! the history before it. That matters to a node that joins: its log may
//! begin long after the cluster's bootstrap configuration, which is in no
//! entry at all.
//!
//! ```text
//! payload = version u8 (1) | op u8 | id u64 | context bytes | voters [u64] | learners [u64]
//!   op: 1 AddLearner, 2 Promote, 3 Remove, 4 ForceNewCluster
//!   bytes = u32 length | data;  [u64] = u32 count | ids, ascending, no duplicates
//! ```
//!
//! Integers are big-endian. `context` is opaque to the core (the shell puts the
//! new member's raft address there) and empty for the other ops.

use std::fmt;

use super::message::{NodeId, NO_NODE};

/// One single-server membership change (Raft thesis §4.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// A new member that receives the log but neither votes nor counts toward
    /// any majority. `context` travels with the entry, uninterpreted.
    AddLearner { id: NodeId, context: Vec<u8> },
    /// A learner becomes a voter.
    Promote { id: NodeId },
    /// A voter or learner leaves the cluster.
    Remove { id: NodeId },
    /// `--force-new-cluster`: node `id` became the only member, whatever
    /// the configuration before. Never proposed: the node writes it into
    /// its own log at start (`server/force_new.rs`), where no quorum is left
    /// to commit a change the usual way.
    ForceNewCluster { id: NodeId },
}

impl ConfChange {
    /// The node the change is about.
    pub fn id(&self) -> NodeId {
        match self {
            ConfChange::AddLearner { id, .. }
            | ConfChange::Promote { id }
            | ConfChange::Remove { id }
            | ConfChange::ForceNewCluster { id } => *id,
        }
    }
}

/// The decoded payload of a ConfChange entry: the change and the
/// configuration in effect from that entry on (both lists sorted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfEntry {
    pub change: ConfChange,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

/// Why a payload is not a valid ConfChange entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad membership change: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

const VERSION: u8 = 1;

pub fn encode(entry: &ConfEntry) -> Vec<u8> {
    let (op, context): (u8, &[u8]) = match &entry.change {
        ConfChange::AddLearner { context, .. } => (1, context),
        ConfChange::Promote { .. } => (2, &[]),
        ConfChange::Remove { .. } => (3, &[]),
        ConfChange::ForceNewCluster { .. } => (4, &[]),
    };
    let mut out = Vec::with_capacity(
        2 + 8 + 4 + context.len() + 8 + 8 * (entry.voters.len() + entry.learners.len()),
    );
    out.push(VERSION);
    out.push(op);
    out.extend_from_slice(&entry.change.id().to_be_bytes());
    out.extend_from_slice(&len_u32(context.len()).to_be_bytes());
    out.extend_from_slice(context);
    for ids in [&entry.voters, &entry.learners] {
        out.extend_from_slice(&len_u32(ids.len()).to_be_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or_else(|_| panic!("membership payload field of {len} items"))
}

/// Decodes and validates a payload: a known version and op, a non-zero id,
/// sorted duplicate-free id lists that do not overlap, nothing left over.
pub fn decode(data: &[u8]) -> Result<ConfEntry, DecodeError> {
    let mut r = Cursor { data, pos: 0 };
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError(format!("unknown version {version}")));
    }
    let op = r.u8("op")?;
    let id = r.u64("id")?;
    let context_len = r.u32("context length")? as usize;
    let context = r.take(context_len, "context")?.to_vec();
    let voters = r.ids("voters")?;
    let learners = r.ids("learners")?;
    if r.pos != data.len() {
        return Err(DecodeError(format!(
            "{} bytes left over",
            data.len() - r.pos
        )));
    }
    if id == NO_NODE {
        return Err(DecodeError("node id 0".to_string()));
    }
    if let Some(both) = voters.iter().find(|v| learners.binary_search(v).is_ok()) {
        return Err(DecodeError(format!(
            "node {both} is both a voter and a learner"
        )));
    }
    let change = match op {
        1 => ConfChange::AddLearner { id, context },
        2..=4 if !context.is_empty() => {
            return Err(DecodeError(format!("op {op} with a context")));
        }
        2 => ConfChange::Promote { id },
        3 => ConfChange::Remove { id },
        4 if voters != [id] || !learners.is_empty() => {
            return Err(DecodeError(format!(
                "op 4 for node {id} with voters {voters:?} and learners {learners:?}"
            )));
        }
        4 => ConfChange::ForceNewCluster { id },
        _ => return Err(DecodeError(format!("unknown op {op}"))),
    };
    Ok(ConfEntry {
        change,
        voters,
        learners,
    })
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], DecodeError> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(DecodeError(format!("{field} needs {n} bytes, {left} left")));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, field: &str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }

    fn u32(&mut self, field: &str) -> Result<u32, DecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, field)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self, field: &str) -> Result<u64, DecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_be_bytes(b))
    }

    /// A count, then that many ascending non-zero ids. The count is checked
    /// against the bytes left before anything is allocated.
    fn ids(&mut self, field: &str) -> Result<Vec<NodeId>, DecodeError> {
        let count = self.u32(field)? as usize;
        let left = self.data.len() - self.pos;
        if count > left / 8 {
            return Err(DecodeError(format!(
                "{field} count {count} exceeds the {left} bytes left"
            )));
        }
        let mut ids = Vec::with_capacity(count);
        for _ in 0..count {
            let id = self.u64(field)?;
            if id == NO_NODE || ids.last().is_some_and(|last| *last >= id) {
                return Err(DecodeError(format!(
                    "{field} not ascending non-zero ids: {id} after {:?}",
                    ids.last()
                )));
            }
            ids.push(id);
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<ConfEntry> {
        vec![
            ConfEntry {
                change: ConfChange::AddLearner {
                    id: 4,
                    context: b"127.0.0.1:7004".to_vec(),
                },
                voters: vec![1, 2, 3],
                learners: vec![4],
            },
            ConfEntry {
                change: ConfChange::Promote { id: 4 },
                voters: vec![1, 2, 3, 4],
                learners: vec![],
            },
            ConfEntry {
                change: ConfChange::Remove { id: u64::MAX },
                voters: vec![1],
                learners: vec![],
            },
            ConfEntry {
                change: ConfChange::ForceNewCluster { id: 3 },
                voters: vec![3],
                learners: vec![],
            },
        ]
    }

    #[test]
    fn entries_round_trip() {
        for entry in samples() {
            assert_eq!(decode(&encode(&entry)), Ok(entry));
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for entry in samples() {
            let bytes = encode(&entry);
            for cut in 0..bytes.len() {
                assert!(decode(&bytes[..cut]).is_err(), "{entry:?} cut at {cut}");
            }
            let mut long = bytes.clone();
            long.push(0);
            assert_eq!(
                decode(&long),
                Err(DecodeError("1 bytes left over".to_string()))
            );
        }
    }

    #[test]
    fn invalid_configurations_are_refused() {
        let bad = |voters: Vec<u64>, learners: Vec<u64>| {
            let entry = ConfEntry {
                change: ConfChange::Promote { id: 2 },
                voters,
                learners,
            };
            decode(&encode(&entry)).expect_err("invalid")
        };
        assert!(bad(vec![2, 1], vec![]).0.contains("not ascending"));
        assert!(bad(vec![1, 1], vec![]).0.contains("not ascending"));
        assert!(bad(vec![0, 1], vec![]).0.contains("not ascending"));
        assert!(bad(vec![1, 2], vec![2])
            .0
            .contains("both a voter and a learner"));
        let mut zero_id = encode(&samples()[1]);
        zero_id[2..10].copy_from_slice(&0u64.to_be_bytes());
        assert_eq!(decode(&zero_id), Err(DecodeError("node id 0".to_string())));
        let mut bad_op = encode(&samples()[1]);
        bad_op[1] = 9;
        assert_eq!(
            decode(&bad_op),
            Err(DecodeError("unknown op 9".to_string()))
        );
        // A forced configuration holds its node alone, as a voter.
        for (voters, learners) in [(vec![3, 4], vec![]), (vec![4], vec![]), (vec![3], vec![4])] {
            let forced = ConfEntry {
                change: ConfChange::ForceNewCluster { id: 3 },
                voters,
                learners,
            };
            assert!(decode(&encode(&forced))
                .expect_err("invalid")
                .0
                .contains("op 4"));
        }
        let mut bad_version = encode(&samples()[1]);
        bad_version[0] = 2;
        assert!(decode(&bad_version).is_err());
    }

    #[test]
    fn a_lying_count_fails_before_allocating() {
        let mut bytes = vec![VERSION, 2];
        bytes.extend_from_slice(&5u64.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode(&bytes),
            Err(DecodeError(
                "voters count 4294967295 exceeds the 0 bytes left".to_string()
            ))
        );
    }
}
