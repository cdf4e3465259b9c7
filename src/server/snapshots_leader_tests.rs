//! A leader's side of snapshots: streams and held repeats the core no
//! longer wants stop before they cost a follower's worth of bytes.

use super::*;
use crate::server::peers::{LocalIdentity, PeerEvent, Peers};
use crate::server::snapshot_resend::MAX_WAIT;
use crate::storage::snapshot;
use mio::{Poll, Token, Waker};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

const INDEX: u64 = 100;
const TERM: u64 = 3;

/// The InstallSnapshot node 1, leading `TERM`, hands out for node 2.
fn install() -> Message {
    Message {
        from: 1,
        to: 2,
        term: TERM,
        body: MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index: INDEX,
                term: 1,
                voters: vec![1, 2],
                learners: Vec::new(),
            },
        },
    }
}

struct Leader {
    _dir: tempfile::TempDir,
    /// The snapshot file streamed.
    path: std::path::PathBuf,
    snapshots: Snapshots,
    peers: Peers,
    _poll: Poll,
    /// Node 2's raft port: it takes the connection and reads nothing, so
    /// a stream fills its send window and stays under way.
    _follower: TcpListener,
}

/// Node 1 with a snapshot file (its bytes are not checked on this side)
/// of three send windows, and a connection to node 2 up.
fn leader() -> Leader {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(snapshot::file_name(INDEX, 1));
    std::fs::write(&path, vec![0u8; 3 * SEND_WINDOW]).expect("write");
    let mut poll = Poll::new().expect("poll");
    let waker = Arc::new(Waker::new(poll.registry(), Token(0)).expect("waker"));
    let thread = Snapshotter::start(dir.path().to_path_buf(), waker).expect("thread");
    let snapshots = Snapshots::new(dir.path().to_path_buf(), thread, 0);
    let follower = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = follower.local_addr().expect("addr").to_string();
    let me = LocalIdentity {
        id: 1,
        cluster_name: "test".to_string(),
        raft_addr: "127.0.0.1:1".to_string(),
        client_addr: "127.0.0.1:2".to_string(),
    };
    let mut peers = Peers::new(me, &[(2, addr)]);
    peers.connect(2, poll.registry(), Token(1));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = mio::Events::with_capacity(8);
    let mut peer_events: Vec<PeerEvent> = Vec::new();
    while peers.pending_output(2).is_none() {
        assert!(Instant::now() < deadline, "never connected");
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .expect("poll");
        for event in events.iter() {
            let (readable, writable) = (event.is_readable(), event.is_writable());
            peers.ready(
                event.token(),
                readable,
                writable,
                poll.registry(),
                &mut peer_events,
            );
        }
    }
    Leader {
        _dir: dir,
        path,
        snapshots,
        peers,
        _poll: poll,
        _follower: follower,
    }
}

/// How many of this process's file descriptors name `path` (open, or open
/// and deleted).
fn open_descriptors(path: &Path) -> usize {
    let deleted = format!("{} (deleted)", path.display());
    std::fs::read_dir("/proc/self/fd")
        .expect("list descriptors")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target == path || target.to_string_lossy() == deleted)
        .count()
}

/// A follower too slow (or stopped) to take a stream, whose snapshot a
/// newer one then compacted past and pruning deleted: the stream is
/// abandoned, so the core sends the newest snapshot (this one would only
/// have been followed by it), and the deleted file's descriptor, which kept
/// its disk space taken, is closed. Before, the stream went on for as long
/// as the follower took, and held the file as long.
#[test]
fn a_stream_the_core_no_longer_wants_is_abandoned_and_its_file_closed() {
    let mut leader = leader();
    let wanted = |_: NodeId, _: u64| true;
    let mut reports = Vec::new();
    let snapshots = &mut leader.snapshots;
    snapshots.requested.push(install());
    snapshots.start_streams(Some(TERM), &wanted, &mut reports);
    snapshots.pump(&mut leader.peers, Some(TERM), &wanted, &mut reports);
    assert!(reports.is_empty(), "{reports:?}");
    assert!(snapshots.outgoing.contains_key(&2), "not streaming");
    assert!(leader.peers.pending_output(2) >= Some(SEND_WINDOW));
    std::fs::remove_file(&leader.path).expect("prune");
    assert_eq!(open_descriptors(&leader.path), 1);
    // The window stays full: the stream waits, wanted.
    snapshots.pump(&mut leader.peers, Some(TERM), &wanted, &mut reports);
    assert!(reports.is_empty() && snapshots.outgoing.contains_key(&2));

    let unwanted = |_: NodeId, _: u64| false;
    snapshots.pump(&mut leader.peers, Some(TERM), &unwanted, &mut reports);
    assert_eq!(reports, vec![(2, false)], "the stream went on");
    assert!(snapshots.outgoing.is_empty());
    assert_eq!(
        open_descriptors(&leader.path),
        0,
        "the pruned snapshot is still open"
    );
}

/// A repeat held back (see `snapshot_resend`) that the core no longer
/// waits for when it comes due (the follower caught up otherwise, or the
/// log moved past the snapshot) is dropped and reported, not streamed in
/// full; one still wanted is streamed when due.
#[test]
fn a_held_repeat_the_core_no_longer_wants_is_not_streamed() {
    let mut leader = leader();
    let snapshots = &mut leader.snapshots;
    let wanted = |_: NodeId, _: u64| true;
    let unwanted = |_: NodeId, _: u64| false;
    let now = Instant::now();
    let mut reports = Vec::new();
    for (still_wanted, want) in [(false, &unwanted as Wanted<'_>), (true, &wanted)] {
        // Sent in full a moment ago, and asked for again.
        snapshots.resend.finished(&install(), now);
        snapshots.requested.push(install());
        snapshots.start_streams_at(now, Some(TERM), &wanted, &mut reports);
        assert!(snapshots.resend.is_held(&install()), "not held");
        assert!(reports.is_empty() && snapshots.outgoing.is_empty());

        snapshots.start_streams_at(now + MAX_WAIT, Some(TERM), want, &mut reports);
        assert!(!snapshots.resend.is_held(&install()));
        if still_wanted {
            assert!(reports.is_empty(), "{reports:?}");
            assert!(snapshots.outgoing.contains_key(&2), "a due repeat not sent");
        } else {
            assert_eq!(reports, vec![(2, false)]);
            assert!(
                snapshots.outgoing.is_empty(),
                "a repeat no longer wanted was streamed"
            );
        }
        reports.clear();
    }
}
