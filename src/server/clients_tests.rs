//! Reply slots: the order and routing rules a connection's requests keep.

use super::*;

fn client() -> (Client, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let stream =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let conn = Conn::new(mio::net::TcpStream::from_std(stream));
    (Client::new(conn, 1, 1 << 20, true), listener)
}

#[test]
fn the_bytes_of_unanswered_writes_count_until_each_is_answered() {
    let (mut c, _listener) = client();
    let first = c.open_slot(Pending::Parked, Kind::Write);
    c.expect_written_bytes(first, 100);
    let second = c.open_slot(Pending::Parked, Kind::Write);
    c.expect_written_bytes(second, 20);
    c.expect_written_bytes(second, 30);
    assert_eq!(c.written_in_flight(), 130, "replaced, not added");
    assert!(c.complete(first, Reply::Ok));
    c.expect_written_bytes(first, 7);
    assert_eq!(c.written_in_flight(), 30, "an answered slot writes nothing");
    c.encode_replies();
    c.expect_written_bytes(first, 7);
    assert_eq!(c.written_in_flight(), 30, "a slot gone is ignored");
    assert!(c.complete(second, Reply::Ok));
    assert_eq!(c.written_in_flight(), 0);
}

#[test]
fn a_request_behind_an_unanswered_membership_change_is_held_until_it_is_answered() {
    let (mut c, _listener) = client();
    let write = c.open_slot(Pending::Parked, Kind::Write);
    let set = vec![b"SET".to_vec()];
    assert!(!c.must_wait(&set), "unanswered writes hold nothing back");
    let read = c.open_slot(Pending::Parked, Kind::Read);
    assert!(!c.must_wait(&set), "unanswered reads hold nothing back");
    let change = c.open_slot(Pending::Parked, Kind::Change);
    assert!(c.must_wait(&set));
    assert!(!c.must_wait(&[b"GET".to_vec()]), "a plain read is not held");
    c.hold(set.clone());
    assert!(c.is_holding());
    assert!(c.complete(write, Reply::Ok));
    assert!(c.complete(read, Reply::Nil));
    assert_eq!(c.release_held(), None, "the change is still unanswered");
    assert!(!c.finished());
    assert!(c.complete(change, Reply::Ok));
    assert!(!c.complete(change, Reply::Ok), "a slot is answered once");
    assert_eq!(c.release_held(), Some(set.clone()));
    assert!(!c.must_wait(&set) && !c.is_holding());
}

#[test]
fn a_returned_request_sees_what_became_of_the_requests_after_it() {
    let (mut c, _listener) = client();
    let write = c.open_slot(Pending::Parked, Kind::Write);
    let read = c.open_slot(Pending::Parked, Kind::Read);
    c.reply_now(Reply::Status("PONG".into()));
    assert_eq!(c.requests_after(write, true), RequestsAfter::Unseen);
    c.set_forwarded(read, false, 1, 2);
    assert!(c.forwards_elsewhere(3) && !c.forwards_elsewhere(2));
    assert_eq!(c.requests_after(write, true), RequestsAfter::InFlight);
    // A write does not wait for a read after it to be answered unapplied.
    let later_write = c.open_slot(Pending::Parked, Kind::Write);
    assert_eq!(c.requests_after(read, false), RequestsAfter::Unseen);
    assert!(c.complete(read, Reply::Nil));
    assert!(!c.forwards_elsewhere(3), "answered: nothing in flight");
    assert_eq!(
        c.requests_after(write, true),
        RequestsAfter::Answered,
        "the read did not see the write"
    );
    assert_eq!(c.requests_after(read, false), RequestsAfter::Unseen);
    c.set_forwarded(later_write, true, 2, 2);
    assert_eq!(c.requests_after(read, false), RequestsAfter::InFlight);
    assert!(c.complete(later_write, Reply::error("TRYAGAIN no leader")));
    assert_eq!(
        c.requests_after(read, false),
        RequestsAfter::Unseen,
        "refused unapplied"
    );
    // A membership change in flight before a read does not hold it.
    let change = c.open_slot(Pending::Parked, Kind::Change);
    let after_change = c.open_slot(Pending::Parked, Kind::Read);
    c.set_forwarded(change, true, 4, 2);
    assert!(c.read_may_be_routed_again(after_change));
    assert!(c.complete(change, Reply::Ok));
    // Back to parked, a forwarded slot is no longer counted.
    let last = c.open_slot(Pending::Parked, Kind::Write);
    c.set_forwarded(last, true, 3, 2);
    c.set_pending(last, Pending::Parked);
    assert!(!c.forwards_elsewhere(3));
}

#[test]
fn a_read_is_routed_again_only_if_no_write_around_it_may_be_applied_out_of_order() {
    let (mut c, _listener) = client();
    let in_flight = |forward| Pending::InFlight {
        write: true,
        forward: Some(forward),
    };
    let first = c.open_slot(Pending::Parked, Kind::Read);
    let second = c.open_slot(Pending::Parked, Kind::Read);
    assert!(c.read_may_be_routed_again(first), "only a read after it");
    let members = c.open_slot(Pending::Parked, Kind::Other);
    assert!(
        c.read_may_be_routed_again(first),
        "CLUSTER MEMBERS writes nothing"
    );
    let write = c.open_slot(Pending::Parked, Kind::Write);
    assert!(
        c.read_may_be_routed_again(first),
        "a parked write: the read is parked again ahead of it"
    );
    c.set_pending(write, in_flight(7));
    assert!(!c.read_may_be_routed_again(first));
    assert!(!c.read_may_be_routed_again(second));
    // Answered, the write is applied: that can never be undone.
    assert!(c.complete(write, Reply::Ok));
    assert!(!c.read_may_be_routed_again(second));
    for slot in [first, second, members] {
        assert!(c.complete(slot, Reply::Nil));
    }
    c.encode_replies();
    let third = c.open_slot(Pending::Parked, Kind::Read);
    assert!(
        c.read_may_be_routed_again(third),
        "that write came before it"
    );
    // A write before it whose outcome is not known yet.
    let write = c.open_slot(Pending::Parked, Kind::Write);
    let fourth = c.open_slot(Pending::Parked, Kind::Read);
    assert!(c.read_may_be_routed_again(fourth), "parked: it goes first");
    c.set_pending(write, in_flight(8));
    assert!(!c.read_may_be_routed_again(fourth), "in flight");
    assert!(c.complete(write, Reply::Ok));
    assert!(c.read_may_be_routed_again(fourth));
    // An EXEC with connection commands that writes.
    let exec = c.open_slot(Pending::Parked, Kind::WriteBarrier);
    assert!(c.must_wait(&[b"SET".to_vec()]), "a barrier");
    assert!(c.complete(exec, Reply::Array(Vec::new())));
    assert!(!c.read_may_be_routed_again(fourth), "it wrote");
}

/// A xorshift generator: `next(below)` draws from `0..below`.
fn generator(mut state: u64) -> impl FnMut(u64) -> u64 {
    move |below| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    }
}

/// 500 connections, each with up to 11 slots of random kinds in random
/// states (waiting, forwarded, answered `+OK` or `-TRYAGAIN`), their
/// replies encoded or not; `check` is given each with its round and the
/// generator, for choices of its own.
fn random_connections(
    seed: u64,
    mut check: impl FnMut(usize, &Client, &mut dyn FnMut(u64) -> u64),
) {
    let kinds = [
        Kind::Read,
        Kind::Write,
        Kind::Change,
        Kind::WriteBarrier,
        Kind::Barrier,
        Kind::Other,
    ];
    let mut next = generator(seed);
    for round in 0..500 {
        let (mut c, _listener) = client();
        for id in 0..next(12) {
            let kind = kinds[next(kinds.len() as u64) as usize];
            let seq = c.open_slot(Pending::Parked, kind);
            match next(4) {
                0 => {}
                1 => c.set_forwarded(seq, kind.writes(), id, 2),
                2 => {
                    c.complete(seq, Reply::Ok);
                }
                _ => {
                    c.complete(seq, Reply::error("TRYAGAIN no leader"));
                }
            }
        }
        if next(2) == 0 {
            c.encode_replies();
        }
        check(round, &c, &mut next);
    }
}

/// `waiting_reads_standing`, two passes for all slots, says for each
/// what asking slot by slot says: a write in flight before it, and
/// `requests_after` of what follows, over random mixes of kinds and
/// states.
#[test]
fn the_standing_of_all_waiting_slots_at_once_is_each_ones_alone() {
    random_connections(0x2545_f491_4f6c_dd1d, |round, c, _| {
        let standings = c.waiting_reads_standing();
        let mut expected = Vec::new();
        for (at, slot) in c.slots.iter().enumerate() {
            if let Slot::Waiting(..) = slot {
                let seq = c.first_seq + at as u64;
                let after = c.requests_after(seq, false);
                let earlier = c.slots.iter().take(at).any(Slot::is_write_in_flight);
                expected.push(ReadStanding {
                    seq,
                    may_be_routed_again: !earlier && after == RequestsAfter::Unseen,
                    after,
                });
            }
        }
        assert_eq!(standings, expected, "round {round}");
    });
}

/// `answered_after`, for many waiting slots in one pass, tells of each
/// what `requests_after` tells of it alone, with random slots in random
/// states.
#[test]
fn answered_after_for_many_slots_at_once_is_each_ones_alone() {
    random_connections(0x9e37_79b9_7f4a_7c15, |round, c, next| {
        // Some of the waiting slots, each as a read or a write.
        let mut asked: Vec<(u64, bool)> = Vec::new();
        for (at, slot) in c.slots.iter().enumerate() {
            if matches!(slot, Slot::Waiting(..)) && next(3) != 0 {
                asked.push((c.first_seq + at as u64, next(2) == 0));
            }
        }
        let expected: Vec<bool> = asked
            .iter()
            .map(|&(seq, write)| c.requests_after(seq, write) == RequestsAfter::Answered)
            .collect();
        assert_eq!(c.answered_after(&asked), expected, "round {round}");
    });
}

#[test]
fn a_report_of_the_data_waits_for_every_request_before_it() {
    let (mut c, _listener) = client();
    let dbsize = vec![b"dbsize".to_vec()];
    assert!(!c.must_wait(&dbsize), "nothing unanswered");
    let write = c.open_slot(Pending::Parked, Kind::Write);
    assert!(c.must_wait(&dbsize));
    assert!(c.must_wait(&[b"INFO".to_vec()]));
    assert!(!c.must_wait(&[b"PING".to_vec()]), "PING reports nothing");
    assert!(!c.must_wait(&[b"SET".to_vec()]), "behind a write only");
    c.hold(dbsize.clone());
    assert_eq!(c.release_held(), None, "the write is unanswered");
    assert!(c.complete(write, Reply::Ok));
    assert_eq!(c.release_held(), Some(dbsize.clone()));
    // In a transaction, EXEC waits if INFO is queued in it (it runs
    // when EXEC's reply comes; a queued DBSIZE goes in the entry).
    let exec = vec![b"Exec".to_vec()];
    let write = c.open_slot(Pending::Parked, Kind::Write);
    c.multi = Some(Multi {
        queued: vec![Queued::Local(vec![b"PING".to_vec()])],
        failed: false,
        bytes: 0,
    });
    assert!(!c.must_wait(&dbsize), "queued, not run");
    assert!(!c.must_wait(&exec), "only PING queued");
    if let Some(multi) = c.multi.as_mut() {
        multi.queued.push(Queued::Local(vec![b"info".to_vec()]));
    }
    assert!(c.must_wait(&exec));
    assert!(c.complete(write, Reply::Ok));
    assert!(!c.must_wait(&exec));
}
