//! CLUSTER commands from clients: parsing them, and getting them to the
//! leader.
//!
//! CLUSTER commands are answered by the leader, like writes: a follower
//! forwards them (tagged [`PAYLOAD_CLUSTER`] in the Forward payload) or parks
//! them until a leader is known.
//!
//! Separate from `cluster.rs` because the path a command takes (run here,
//! forwarded, parked, routed again when the node it went to no longer leads)
//! and the text a forwarded command travels in are one question, easier to
//! check with its cases side by side than spread among the standing and
//! dialing code. What the leader then does with it is `cluster_leader.rs`.

use super::{NOT_THE_LEADER, PAYLOAD_CLUSTER};
use crate::kv::Reply;
use crate::raft::{NodeId, NO_NODE};
use crate::replica::Completion;
use crate::server::addresses::valid_addr;
use crate::server::clients::{Kind, Pending};
use crate::server::connection::shown_word;
use crate::server::event_loop::{Server, Waiter};
use crate::server::requests::READ_DROPPED;
use crate::wire::peer_msg::PeerMessage;
use mio::Token;

/// A parsed CLUSTER command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterRequest {
    Members,
    Add { id: NodeId, addr: String },
    Remove { id: NodeId },
    Transfer { id: NodeId },
}

impl ClusterRequest {
    /// `CLUSTER <sub> args...` (argv includes CLUSTER itself).
    pub fn parse(argv: &[Vec<u8>]) -> Result<ClusterRequest, Reply> {
        let words: Vec<String> = argv
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(sub) = words.get(1).map(|s| s.to_ascii_lowercase()) else {
            return Err(Reply::error(
                "ERR wrong number of arguments for 'cluster' command",
            ));
        };
        let arity = match sub.as_str() {
            "members" => 2,
            "add" => 4,
            "remove" | "transfer" => 3,
            _ => {
                return Err(Reply::Error(format!(
                    "ERR unknown subcommand '{}'. Try CLUSTER MEMBERS, ADD, REMOVE or TRANSFER.",
                    shown_word(&argv[1])
                )))
            }
        };
        if words.len() != arity {
            return Err(Reply::Error(format!(
                "ERR wrong number of arguments for 'cluster|{}' command",
                sub
            )));
        }
        if sub == "members" {
            return Ok(ClusterRequest::Members);
        }
        let id = match words[2].parse::<NodeId>() {
            Ok(id) if id != NO_NODE => id,
            _ => {
                return Err(Reply::Error(format!(
                    "ERR invalid node id '{}'",
                    shown_word(words[2].as_bytes())
                )))
            }
        };
        Ok(match sub.as_str() {
            "add" if valid_addr(&words[3]) => ClusterRequest::Add {
                id,
                addr: words[3].clone(),
            },
            "add" => {
                return Err(Reply::Error(format!(
                    "ERR invalid raft address '{}' (expected host:port)",
                    shown_word(words[3].as_bytes())
                )))
            }
            "remove" => ClusterRequest::Remove { id },
            _ => ClusterRequest::Transfer { id },
        })
    }

    fn to_text(&self) -> String {
        match self {
            ClusterRequest::Members => "CLUSTER MEMBERS".to_string(),
            ClusterRequest::Add { id, addr } => format!("CLUSTER ADD {} {}", id, addr),
            ClusterRequest::Remove { id } => format!("CLUSTER REMOVE {}", id),
            ClusterRequest::Transfer { id } => format!("CLUSTER TRANSFER {}", id),
        }
    }

    fn from_text(text: &[u8]) -> Result<ClusterRequest, Reply> {
        let argv: Vec<Vec<u8>> = text.split(|b| *b == b' ').map(|w| w.to_vec()).collect();
        ClusterRequest::parse(&argv)
    }

    /// Whether a timeout leaves its outcome unknown (a change may commit).
    pub(super) fn is_change(&self) -> bool {
        matches!(
            self,
            ClusterRequest::Add { .. } | ClusterRequest::Remove { .. }
        )
    }
}

fn is_not_the_leader(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(text) if text == NOT_THE_LEADER)
}

impl Server {
    /// CLUSTER from a client: `None` when the reply comes later.
    pub(in crate::server) fn cluster_command(
        &mut self,
        token: Token,
        argv: &[Vec<u8>],
    ) -> Option<Reply> {
        let request = match ClusterRequest::parse(argv) {
            Ok(request) => request,
            Err(reply) => return Some(reply),
        };
        if let Some(reply) = self.cluster.refusal() {
            return Some(reply);
        }
        let client = self.clients.get_mut(&token)?;
        let kind = match request {
            ClusterRequest::Members => Kind::Other,
            _ => Kind::Change,
        };
        let seq = client.open_slot(Pending::Parked, kind);
        // Within the same `election_timeout_ms * 4` as every other request
        // (SPEC): a removal of the leader waits for a transfer, then for a
        // commit, which takes milliseconds when a quorum is up.
        self.schedule_deadline(token, seq);
        self.route_cluster(token, seq, request);
        None
    }

    pub(super) fn route_cluster(&mut self, token: Token, seq: u64, request: ClusterRequest) {
        let write = request.is_change();
        let leader = self.replica.node().leader_id();
        // Behind its connection's requests in flight to another node, or
        // parked, as a key-value request (`Server::must_park`): a CLUSTER
        // ADD sent to the leader while a MEMBERS sent before it waits here
        // (its send failed, or it arrived before this node led) would take
        // effect first, and that MEMBERS would show the node added.
        let waits = self.waits_for_forwards(token) || self.cluster.parked.holds(token);
        if !waits && self.replica.is_leader() {
            let waiter = Waiter::Client { token, seq };
            self.set_pending(
                token,
                seq,
                Pending::InFlight {
                    write,
                    forward: None,
                },
            );
            if let Some(reply) = self.execute_cluster(request, waiter, None) {
                self.completions.push(Completion { waiter, reply });
            }
            return;
        } else if !waits && self.peers.is_connected(leader) {
            let id = self.next_forward_id;
            let mut payload = vec![PAYLOAD_CLUSTER];
            payload.extend_from_slice(request.to_text().as_bytes());
            if self
                .peers
                .send(leader, &PeerMessage::Forward { id, payload })
            {
                self.next_forward_id += 1;
                self.note_forward_sent(leader, id);
                self.cluster
                    .forwards
                    .insert(id, (token, seq, request, leader));
                if let Some(client) = self.clients.get_mut(&token) {
                    client.set_forwarded(seq, write, id, leader);
                }
                return;
            }
        }
        self.set_pending(token, seq, Pending::Parked);
        self.cluster.parked.push_back(token, seq, request);
    }

    pub(super) fn slot_waiting(&self, token: Token, seq: u64) -> bool {
        self.clients
            .get(&token)
            .is_some_and(|c| c.pending(seq).is_some())
    }

    /// A CLUSTER command forwarded to us by a follower.
    pub(in crate::server) fn handle_cluster_forward(&mut self, from: NodeId, id: u64, text: &[u8]) {
        let reply = match ClusterRequest::from_text(text) {
            Err(reply) => Some(reply),
            Ok(_) if !self.replica.is_leader() => Some(Reply::error(NOT_THE_LEADER)),
            Ok(request) => self.execute_cluster(request, Waiter::Peer { from, id }, None),
        };
        if let Some(reply) = reply {
            self.peers
                .send(from, &PeerMessage::ForwardReply { id, reply });
        }
    }

    /// CLUSTER requests forwarded to a node that no longer leads (see
    /// `settle_orphaned_forwards`): MEMBERS is routed again at once; a
    /// TRANSFER, once that node is also unreachable; a change's outcome is
    /// then unknown.
    pub(in crate::server) fn settle_orphaned_cluster_forwards(&mut self) {
        // A TRANSFER whose target leads now has done what it asked: `+OK`
        // (SPEC), also when the node it went to cannot answer (frozen, or
        // cut off, after it told the target to campaign).
        let leader = self.replica.node().leader_id();
        let transferred: Vec<u64> = self
            .cluster
            .forwards
            .iter()
            .filter(|(_, (.., request, _))| {
                leader != NO_NODE && *request == ClusterRequest::Transfer { id: leader }
            })
            .map(|(id, _)| *id)
            .collect();
        for id in transferred {
            if let Some((token, seq, ..)) = self.cluster.forwards.remove(&id) {
                self.completions.push(Completion {
                    waiter: Waiter::Client { token, seq },
                    reply: Reply::Ok,
                });
            }
        }
        let orphaned: Vec<u64> = self
            .cluster
            .forwards
            .iter()
            .filter(|(_, (_, _, request, to))| {
                // A TRANSFER the old leader still works on is not started
                // again elsewhere: it answers for itself, as a write does.
                let read = matches!(request, ClusterRequest::Members);
                self.is_orphaned(*to, !read)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in orphaned {
            let Some((token, seq, request, _)) = self.cluster.forwards.remove(&id) else {
                continue;
            };
            if request.is_change() {
                self.completions.push(Completion {
                    waiter: Waiter::Client { token, seq },
                    reply: Reply::error("TIMEOUT outcome unknown"),
                });
            } else if self.slot_waiting(token, seq) {
                if let ClusterRequest::Transfer { id: target } = request {
                    self.cluster.orphaned_transfers.insert((token, seq), target);
                }
                self.park_cluster_again(token, seq, request);
            }
        }
    }

    /// Parks a CLUSTER command that came back from where it went (or was
    /// held there), ahead of its connection's later ones parked meanwhile:
    /// behind them, a MEMBERS would go after a CLUSTER ADD sent after it.
    /// One behind which its connection's later change already went (a
    /// MEMBERS pipelined with an ADD, both forwarded to a leader that
    /// stepped down) would take effect after that change, routed again:
    /// it is refused `-TRYAGAIN leader changed`, as a key-value request is
    /// (`dispatch_parked`). Later ones are parked behind it, so this is
    /// known once, here.
    pub(super) fn park_cluster_again(&mut self, token: Token, seq: u64, request: ClusterRequest) {
        self.set_pending(token, seq, Pending::Parked);
        if self
            .clients
            .get(&token)
            .is_some_and(|client| client.change_went_after(seq))
        {
            self.completions.push(Completion {
                waiter: Waiter::Client { token, seq },
                reply: Reply::error(READ_DROPPED),
            });
            return;
        }
        self.cluster.parked.insert_returned(token, seq, request);
        self.retry_parked_of(token);
    }

    /// The leader's reply to a CLUSTER command we forwarded: relayed, or the
    /// request routed again when the node asked no longer leads.
    pub(in crate::server) fn handle_cluster_forward_reply(&mut self, id: u64, reply: Reply) {
        let Some((token, seq, request, _)) = self.cluster.forwards.remove(&id) else {
            return;
        };
        if is_not_the_leader(&reply) {
            if self.slot_waiting(token, seq) {
                self.park_cluster_again(token, seq, request);
            }
            return;
        }
        self.completions.push(Completion {
            waiter: Waiter::Client { token, seq },
            reply,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<ClusterRequest, Reply> {
        let argv: Vec<Vec<u8>> = line.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        ClusterRequest::parse(&argv)
    }

    #[test]
    fn requests_parse_and_survive_forwarding() {
        let cases = [
            ("CLUSTER members", ClusterRequest::Members),
            (
                "cluster ADD 4 127.0.0.1:7004",
                ClusterRequest::Add {
                    id: 4,
                    addr: "127.0.0.1:7004".into(),
                },
            ),
            ("CLUSTER Remove 2", ClusterRequest::Remove { id: 2 }),
            ("CLUSTER TRANSFER 3", ClusterRequest::Transfer { id: 3 }),
        ];
        for (line, request) in cases {
            assert_eq!(parse(line), Ok(request.clone()));
            assert_eq!(
                ClusterRequest::from_text(request.to_text().as_bytes()),
                Ok(request)
            );
        }
    }

    #[test]
    fn bad_requests_get_redis_style_errors() {
        let cases = [
            (
                "CLUSTER",
                "ERR wrong number of arguments for 'cluster' command",
            ),
            (
                "CLUSTER NODES",
                "ERR unknown subcommand 'NODES'. Try CLUSTER MEMBERS, ADD, REMOVE or TRANSFER.",
            ),
            (
                "CLUSTER MEMBERS x",
                "ERR wrong number of arguments for 'cluster|members' command",
            ),
            ("CLUSTER REMOVE 0", "ERR invalid node id '0'"),
            ("CLUSTER TRANSFER -1", "ERR invalid node id '-1'"),
            (
                "CLUSTER ADD 4 h:1,5=h:2",
                "ERR invalid raft address 'h:1,5=h:2' (expected host:port)",
            ),
        ];
        for (line, reply) in cases {
            assert_eq!(parse(line), Err(Reply::error(reply)), "{line}");
        }
    }

    /// A CLUSTER TRANSFER forwarded to node 2, which then stopped leading
    /// and cannot be reached, goes to the next leader; none is known
    /// before its deadline. Node 2 may have told the target to campaign
    /// before it went, so the target may lead yet: the deadline answers
    /// it as abandoned, as it does one still forwarded, and at exit too,
    /// not `-TRYAGAIN`, whose promise is that nothing happened.
    #[test]
    fn a_transfer_whose_leader_was_lost_is_answered_abandoned_not_tryagain() {
        use crate::server::client_io::tests::{connect, expect_replies, node};
        for at_exit in [false, true] {
            let (mut server, _dir) = node();
            let (mut c, tc) = connect(&mut server);
            let client = server.clients.get_mut(&tc).expect("client");
            let seq = client.open_slot(Pending::Parked, Kind::Change);
            client.set_forwarded(seq, false, 7, 2);
            server
                .cluster
                .forwarded(7, tc, seq, "CLUSTER TRANSFER 3", 2);
            server.settle_orphaned_forwards();
            assert!(
                server.cluster.parked.holds(tc),
                "parked for the next leader"
            );
            if at_exit {
                server.answer_own_cluster_commands();
            } else {
                server.expire(tc, seq);
            }
            server.flush_clients();
            expect_replies(&mut c, b"-ERR transfer to 3 abandoned\r\n");
        }
    }

    #[test]
    fn a_long_bad_word_is_echoed_cut_to_128_bytes() {
        let long = "9".repeat(100_000);
        let cut = &long[..128];
        assert_eq!(
            parse(&format!("CLUSTER REMOVE {long}")),
            Err(Reply::Error(format!("ERR invalid node id '{cut}'")))
        );
        assert_eq!(
            parse(&format!("CLUSTER ADD 4 {long}")),
            Err(Reply::Error(format!(
                "ERR invalid raft address '{cut}' (expected host:port)"
            )))
        );
    }
}
