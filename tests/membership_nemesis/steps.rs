//! The nemesis steps: changes, transfers, kills (also in the middle of a
//! change) and stops of the leader.

use super::cluster_command::{cluster_request, is_timeout, is_tryagain};
use super::cluster_command::{Asked, Change};
use super::common::Cluster;
use super::history::show;
use super::nemesis::Nemesis;
use super::toolkit::connect;
use super::{CLUSTER_REPLY_LIMIT, MIN_VOTERS};
use raftkv::kv::Reply;
use std::thread;
use std::time::{Duration, Instant};

impl Nemesis<'_> {
    /// ADD or REMOVE through a random node, as an operator would: retried on
    /// `-TRYAGAIN` for up to 3 s.
    pub fn change(&mut self, cluster: &Cluster) {
        let view = self.must_view(cluster, "before a change");
        let want_remove = self.rng.below(2) == 0;
        let Some(change) = self.pick_change(&view, want_remove) else {
            return;
        };
        self.count_action("change");
        // Mostly through a member; sometimes through any node (a joiner or a
        // removed node must answer -TRYAGAIN).
        let members = view.members();
        let candidates: Vec<usize> = self
            .usable(cluster)
            .into_iter()
            .filter(|&i| self.rng.below(5) == 0 || members.contains(&(i as u64 + 1)))
            .collect();
        let Some(via) = self.rng.pick(&candidates) else {
            return;
        };
        let start = Instant::now();
        loop {
            let sent = self.ask_change(cluster, change, via);
            let retry = matches!(&sent, Asked::Reply(r) if is_tryagain(r))
                && members.contains(&(via as u64 + 1))
                && start.elapsed() < Duration::from_secs(3);
            if !retry {
                break;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// TRANSFER to a random voter; `+OK` means that node leads (its term grew).
    pub fn transfer(&mut self, cluster: &Cluster) {
        let view = self.must_view(cluster, "before a transfer");
        let Some(target) = self.rng.pick(&view.voters) else {
            return;
        };
        let t = (target - 1) as usize;
        let Some(via) = self.rng.pick(&self.usable(cluster)) else {
            return;
        };
        if !cluster.is_running(t) {
            return;
        }
        self.count_action("transfer");
        let term_before = term_of(cluster, t);
        let sent = cluster_request(
            &cluster.nodes[via].client_addr(),
            &["TRANSFER".to_string(), target.to_string()],
            CLUSTER_REPLY_LIMIT,
        );
        self.count_reply("TRANSFER", &sent);
        self.event(format!(
            "CLUSTER TRANSFER {} through node {} (leader was {:?}): {}",
            target,
            via + 1,
            view.leader,
            match &sent {
                Asked::Reply(r) => show(r),
                other => format!("{:?}", other),
            }
        ));
        match &sent {
            Asked::NotSent => {}
            Asked::NoReply => self.hist.violation(format!(
                "node {} (running, not stopped) gave no reply to CLUSTER TRANSFER {} within {:?}",
                via + 1,
                target,
                CLUSTER_REPLY_LIMIT
            )),
            Asked::Reply(Reply::Ok) => {
                let term_after = term_of(cluster, t);
                let was_leader = view.leader == Some(target);
                if !was_leader && (term_before.is_none() || term_after <= term_before) {
                    self.hist.violation(format!(
                        "CLUSTER TRANSFER {} answered +OK, but node {}'s term went from {:?} to {:?}: it was not elected",
                        target, target, term_before, term_after
                    ));
                }
            }
            Asked::Reply(r) if is_tryagain(r) || is_timeout(r) => {}
            Asked::Reply(Reply::Error(e))
                if *e == format!("ERR transfer to {} abandoned", target)
                    || *e == format!("ERR unknown node {}", target)
                    || *e == format!("ERR node {} is a learner", target) => {}
            Asked::Reply(other) => self.hist.violation(format!(
                "CLUSTER TRANSFER {} answered {}, which SPEC does not allow",
                target,
                show(other)
            )),
        }
    }

    /// `kill -9` a random node (half the time the leader), restart it later.
    pub fn kill_and_restart(&mut self, cluster: &mut Cluster) {
        let view = self.must_view(cluster, "before a kill");
        let leader = view.leader.map(|id| (id - 1) as usize);
        let target = match leader {
            Some(l) if self.rng.below(2) == 0 => l,
            _ => match self.rng.pick(&self.usable(cluster)) {
                Some(i) => i,
                None => return,
            },
        };
        self.count_action("kill");
        cluster.kill(target);
        self.event(format!(
            "kill -9 node {}{} (members {:?})",
            target + 1,
            if Some(target) == leader {
                " (the leader)"
            } else {
                ""
            },
            view
        ));
        let down = self.rng.millis(200, 1500);
        let started = Instant::now();
        if self.rng.below(2) == 0 {
            self.change_while_down(cluster, target);
        }
        thread::sleep(down.saturating_sub(started.elapsed()));
        self.restart(cluster, target);
        self.event(format!(
            "restarted node {} after {} ms",
            target + 1,
            started.elapsed().as_millis()
        ));
    }

    /// While node `down` is killed: remove it (it learns that when it
    /// returns), add it back, or else make any change, through a member.
    fn change_while_down(&mut self, cluster: &Cluster, down: usize) {
        let Some(view) = self.view(cluster, Duration::from_secs(5)) else {
            return;
        };
        let id = down as u64 + 1;
        let members = view.members();
        let change = if view.learners.contains(&id)
            || (view.voters.contains(&id) && view.voters.len() > MIN_VOTERS)
        {
            Some(Change::Remove(id))
        } else if !members.contains(&id) {
            Some(Change::Add(id))
        } else {
            let want_remove = self.rng.below(2) == 0;
            self.pick_change(&view, want_remove)
        };
        let vias: Vec<usize> = self
            .usable(cluster)
            .into_iter()
            .filter(|i| members.contains(&(*i as u64 + 1)))
            .collect();
        let (Some(change), Some(via)) = (change, self.rng.pick(&vias)) else {
            return;
        };
        self.count_action("change while a node is down");
        self.ask_change(cluster, change, via);
    }

    /// Sends `change` through node `via`, records the reply against the
    /// model and checks that a definite OK shows in CLUSTER MEMBERS at once.
    fn ask_change(&mut self, cluster: &Cluster, change: Change, via: usize) -> Asked {
        let sent = cluster_request(
            &cluster.nodes[via].client_addr(),
            &change.args(cluster),
            CLUSTER_REPLY_LIMIT,
        );
        self.record_change(change, via, &sent, true);
        self.check_ok_shows(cluster, change, &sent);
        sent
    }

    /// A change through one node and, 0–80 ms later, `kill -9` of the leader
    /// or of the node the change is about; the reply must still come.
    pub fn kill_mid_change(&mut self, cluster: &mut Cluster) {
        let view = self.must_view(cluster, "before a change with a kill");
        let want_remove = self.rng.below(2) == 0;
        let Some(change) = self.pick_change(&view, want_remove) else {
            return;
        };
        let leader = view.leader.map(|id| (id - 1) as usize);
        let subject = (change.id() - 1) as usize;
        let victim = match leader {
            Some(l) if self.rng.below(3) != 0 => l,
            _ => subject,
        };
        let members = view.members();
        let vias: Vec<usize> = self
            .usable(cluster)
            .into_iter()
            .filter(|&i| i != victim && members.contains(&(i as u64 + 1)))
            .collect();
        let Some(via) = self.rng.pick(&vias) else {
            return;
        };
        if !cluster.is_running(victim) {
            return;
        }
        self.count_action("kill mid-change");
        let addr = cluster.nodes[via].client_addr();
        let args = change.args(cluster);
        let request = thread::spawn(move || cluster_request(&addr, &args, CLUSTER_REPLY_LIMIT));
        thread::sleep(self.rng.millis(0, 80));
        cluster.kill(victim);
        self.event(format!(
            "{:?} sent through node {}; kill -9 node {}{}",
            change,
            via + 1,
            victim + 1,
            if Some(victim) == leader {
                " (the leader)"
            } else {
                " (the node changed)"
            }
        ));
        let down = self.rng.millis(200, 1500);
        thread::sleep(down);
        self.restart(cluster, victim);
        self.event(format!("restarted node {}", victim + 1));
        let sent = request.join().unwrap_or(Asked::NoReply);
        self.record_change(change, via, &sent, true);
        self.check_ok_shows(cluster, change, &sent);
    }

    /// SIGSTOP the leader for 0.3–1.5 s; half the time a change or a
    /// transfer goes through another node meanwhile.
    pub fn stop_leader(&mut self, cluster: &Cluster) {
        let view = self.must_view(cluster, "before a stop");
        let Some(leader) = view.leader.map(|id| (id - 1) as usize) else {
            return;
        };
        let Some(pid) = cluster.pid(leader) else {
            return;
        };
        self.count_action("stop leader");
        let hold = self.rng.millis(300, 1500);
        let started = Instant::now();
        self.stopped.stop(pid);
        self.event(format!(
            "SIGSTOP node {} (the leader) for {} ms",
            leader + 1,
            hold.as_millis()
        ));
        match self.rng.below(4) {
            0 => {
                thread::sleep(self.rng.millis(0, 400));
                let members = view.members();
                let vias: Vec<usize> = self
                    .usable(cluster)
                    .into_iter()
                    .filter(|i| members.contains(&(*i as u64 + 1)))
                    .collect();
                let want_remove = self.rng.below(2) == 0;
                let change = self.pick_change(&view, want_remove);
                if let (Some(via), Some(change)) = (self.rng.pick(&vias), change) {
                    // The stopped leader may be the subject: fine either way.
                    let sent = cluster_request(
                        &cluster.nodes[via].client_addr(),
                        &change.args(cluster),
                        CLUSTER_REPLY_LIMIT,
                    );
                    self.record_change(change, via, &sent, true);
                }
            }
            1 => {
                thread::sleep(self.rng.millis(0, 400));
                self.transfer(cluster);
            }
            _ => {}
        }
        thread::sleep(hold.saturating_sub(started.elapsed()));
        self.stopped.resume();
        self.event(format!(
            "SIGCONT node {} after {} ms",
            leader + 1,
            started.elapsed().as_millis()
        ));
    }
}

fn term_of(cluster: &Cluster, i: usize) -> Option<u64> {
    let mut client = connect(&cluster.nodes[i].client_addr(), Duration::from_secs(2))?;
    client.try_info()?.get("term")?.parse().ok()
}
