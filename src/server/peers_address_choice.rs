//! Which of a peer host name's addresses to dial. A name may stand for
//! several addresses, some of them dead (a retired host, a proxy, a node of
//! another id there), and resolvers rotate and shuffle their answers, so the
//! choice keeps a memory of its own: the address dialed last and those that
//! failed since one last held.
//!
//! Separate from `peers.rs` because it is a policy with no sockets in it: the
//! connection code only reports what it dialed and how that went, and what to
//! dial next can be read (and tested) here without any connection. The
//! lookups themselves are `lookups.rs`.

use std::net::SocketAddr;

/// One peer's memory of its addresses.
#[derive(Default)]
pub(super) struct AddressChoice {
    /// The address of the latest dial.
    dialed: Option<SocketAddr>,
    /// Addresses whose connect failed, or whose connection closed soon after
    /// (a proxy, a node of another id there), since one last held: of a name
    /// with several addresses, the others are dialed first. Kept by address,
    /// not by place in the answer, as resolvers rotate and shuffle answers.
    failed_addrs: Vec<SocketAddr>,
}

impl AddressChoice {
    /// Which of `addrs` (not empty), a lookup's answer, to dial: the address
    /// dialed last unless it failed, else the first that has not failed
    /// since one last held; when every one has, all are tried again.
    pub(super) fn next_address(&mut self, addrs: &[SocketAddr]) -> SocketAddr {
        if let Some(last) = self.dialed.filter(|a| addrs.contains(a)) {
            if !self.failed_addrs.contains(&last) {
                return last;
            }
        }
        if let Some(untried) = addrs.iter().find(|a| !self.failed_addrs.contains(a)) {
            return *untried;
        }
        self.failed_addrs.clear();
        addrs[0]
    }

    pub(super) fn note_dialed(&mut self, addr: SocketAddr) {
        self.dialed = Some(addr);
    }

    pub(super) fn note_failed_address(&mut self) {
        if let Some(addr) = self.dialed {
            if !self.failed_addrs.contains(&addr) {
                self.failed_addrs.push(addr);
            }
        }
    }

    /// A connection held: every address may be dialed again.
    pub(super) fn forget_failed_addresses(&mut self) {
        self.failed_addrs.clear();
    }

    #[cfg(test)]
    pub(super) fn failed_addrs(&self) -> &[SocketAddr] {
        &self.failed_addrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which address a peer dials next, by address rather than by place in
    /// an answer that resolvers rotate and shuffle.
    #[test]
    fn the_next_address_skips_those_that_failed_and_keeps_one_that_holds() {
        let [a, b, c]: [SocketAddr; 3] =
            ["10.0.0.1:7", "10.0.0.2:7", "10.0.0.3:7"].map(|s| s.parse().expect("address"));
        let mut choice = AddressChoice::default();
        let dial = |choice: &mut AddressChoice, answer: &[SocketAddr], fails: bool| {
            let addr = choice.next_address(answer);
            choice.note_dialed(addr);
            if fails {
                choice.note_failed_address();
            }
            addr
        };
        assert_eq!(dial(&mut choice, &[a, b, c], true), a);
        assert_eq!(dial(&mut choice, &[c, a, b], true), c, "a failed");
        assert_eq!(dial(&mut choice, &[c, a, b], false), b, "a and c failed");
        assert_eq!(dial(&mut choice, &[a, c, b], false), b, "b holds");
        choice.note_failed_address();
        assert_eq!(dial(&mut choice, &[a, c, b], false), a, "all failed: again");
        assert!(choice.failed_addrs.is_empty());
    }
}
