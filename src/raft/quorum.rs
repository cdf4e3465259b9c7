//! Pure majority arithmetic and the membership it is computed over.
//!
//! Only voters count toward a majority. Learners receive the log but neither vote
//! nor count for commit, reads or check-quorum.

use super::conf_change::ConfChange;
use super::message::{NodeId, NO_NODE};
use super::ConfChangeError;

/// Who votes and who only listens. Both lists are sorted and free of duplicates,
/// and no id is in both, so iterating them is deterministic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Membership {
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl Membership {
    /// Panics if an id is both a voter and a learner, or is `NO_NODE`: a
    /// configuration like that cannot be reasoned about.
    pub fn new(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        let mut voters = voters.to_vec();
        voters.sort_unstable();
        voters.dedup();
        let mut learners = learners.to_vec();
        learners.sort_unstable();
        learners.dedup();
        for id in voters.iter().chain(&learners) {
            assert_ne!(*id, 0, "node id 0 is reserved for NO_NODE");
        }
        for id in &learners {
            assert!(
                voters.binary_search(id).is_err(),
                "node {id} is both a voter and a learner (voters {voters:?}, learners {learners:?})"
            );
        }
        Membership { voters, learners }
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// The configuration after `change`, or why it cannot be made. A change
    /// that would leave no voter is refused: nobody could ever commit again.
    pub fn apply(&self, change: &ConfChange) -> Result<Membership, ConfChangeError> {
        let mut voters = self.voters.clone();
        let mut learners = self.learners.clone();
        match *change {
            ConfChange::AddLearner { id, .. } => {
                if id == NO_NODE {
                    return Err(ConfChangeError::UnknownNode { id });
                }
                if self.is_member(id) {
                    return Err(ConfChangeError::AlreadyMember { id });
                }
                learners.push(id);
            }
            ConfChange::Promote { id } => {
                if self.is_voter(id) {
                    return Err(ConfChangeError::AlreadyVoter { id });
                }
                if !self.is_learner(id) {
                    return Err(ConfChangeError::UnknownNode { id });
                }
                learners.retain(|l| *l != id);
                voters.push(id);
            }
            ConfChange::Remove { id } => {
                if !self.is_member(id) {
                    return Err(ConfChangeError::UnknownNode { id });
                }
                if self.voters == [id] {
                    return Err(ConfChangeError::LastVoter { id });
                }
                voters.retain(|v| *v != id);
                learners.retain(|l| *l != id);
            }
            ConfChange::ForceNewCluster { id } => {
                if id == NO_NODE {
                    return Err(ConfChangeError::UnknownNode { id });
                }
                voters = vec![id];
                learners.clear();
            }
        }
        Ok(Membership::new(&voters, &learners))
    }

    /// Every member except `me`, voters and learners, in id order.
    pub fn peers(&self, me: NodeId) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self
            .voters
            .iter()
            .chain(&self.learners)
            .copied()
            .filter(|id| *id != me)
            .collect();
        peers.sort_unstable();
        peers
    }

    /// Votes needed to win (more than half of the voters).
    pub fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// The largest value that a majority of the voters have reached, given each
/// voter's value: the commit index over match indexes, or the confirmed read
/// round over acknowledged rounds. Returns 0 for an empty set.
pub(super) fn majority_value(mut values: Vec<u64>) -> u64 {
    if values.is_empty() {
        return 0;
    }
    // Sorted descending, the value at position majority-1 is held by at least a
    // majority (it and everything before it).
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[values.len() / 2]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies `granted`/`rejected` counts among `voters` voters.
pub(super) fn vote_result(voters: usize, granted: usize, rejected: usize) -> VoteResult {
    let majority = voters / 2 + 1;
    if granted >= majority {
        VoteResult::Won
    } else if rejected + majority > voters {
        // Even if every missing voter granted, `granted` could not reach a majority.
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_value_is_held_by_a_majority() {
        assert_eq!(majority_value(vec![]), 0);
        assert_eq!(majority_value(vec![7]), 7);
        assert_eq!(majority_value(vec![5, 9]), 5);
        assert_eq!(majority_value(vec![1, 5, 9]), 5);
        assert_eq!(majority_value(vec![9, 1, 5, 3]), 3);
        assert_eq!(majority_value(vec![2, 2, 8, 8, 8]), 8);
        assert_eq!(majority_value(vec![2, 2, 2, 8, 8]), 2);
    }

    #[test]
    fn vote_result_needs_a_strict_majority() {
        assert_eq!(vote_result(1, 1, 0), VoteResult::Won);
        assert_eq!(vote_result(3, 1, 0), VoteResult::Pending);
        assert_eq!(vote_result(3, 2, 0), VoteResult::Won);
        assert_eq!(vote_result(3, 1, 2), VoteResult::Lost);
        assert_eq!(vote_result(4, 2, 1), VoteResult::Pending);
        assert_eq!(vote_result(4, 2, 2), VoteResult::Lost);
        assert_eq!(vote_result(4, 3, 1), VoteResult::Won);
    }

    #[test]
    fn membership_sorts_and_separates_roles() {
        let m = Membership::new(&[3, 1, 2, 1], &[5]);
        assert_eq!(m.voters, vec![1, 2, 3]);
        assert_eq!(m.peers(2), vec![1, 3, 5]);
        assert!(m.is_voter(3) && !m.is_voter(5));
        assert_eq!(m.majority(), 2);
    }

    #[test]
    fn changes_move_one_server_and_refuse_nonsense() {
        // Reference: thesis §4.1 (one server added or removed at a time).
        let m = Membership::new(&[1, 2], &[3]);
        let add = ConfChange::AddLearner {
            id: 4,
            context: Vec::new(),
        };
        assert_eq!(m.apply(&add), Ok(Membership::new(&[1, 2], &[3, 4])));
        assert_eq!(
            m.apply(&ConfChange::Promote { id: 3 }),
            Ok(Membership::new(&[1, 2, 3], &[]))
        );
        assert_eq!(
            m.apply(&ConfChange::Remove { id: 3 }),
            Ok(Membership::new(&[1, 2], &[]))
        );
        assert_eq!(
            m.apply(&ConfChange::Remove { id: 1 }),
            Ok(Membership::new(&[2], &[3]))
        );
        let readd = ConfChange::AddLearner {
            id: 2,
            context: Vec::new(),
        };
        assert_eq!(
            m.apply(&readd),
            Err(ConfChangeError::AlreadyMember { id: 2 })
        );
        assert_eq!(
            m.apply(&ConfChange::Promote { id: 1 }),
            Err(ConfChangeError::AlreadyVoter { id: 1 })
        );
        assert_eq!(
            m.apply(&ConfChange::Promote { id: 9 }),
            Err(ConfChangeError::UnknownNode { id: 9 })
        );
        assert_eq!(
            m.apply(&ConfChange::Remove { id: 9 }),
            Err(ConfChangeError::UnknownNode { id: 9 })
        );
        let alone = Membership::new(&[1], &[]);
        assert_eq!(
            alone.apply(&ConfChange::Remove { id: 1 }),
            Err(ConfChangeError::LastVoter { id: 1 })
        );
    }

    #[test]
    #[should_panic(expected = "both a voter and a learner")]
    fn membership_rejects_overlap() {
        Membership::new(&[1, 2], &[2]);
    }
}
