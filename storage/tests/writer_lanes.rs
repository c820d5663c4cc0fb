//! The group-commit writer's lanes: an urgent write is not queued behind a
//! backlog of bulk writes (issue 12's flood: a local POST waited behind a
//! flood's records), and every write of both lanes is still stored.
#![allow(clippy::unwrap_used)]

use std::sync::{mpsc, Arc, Mutex};

use libp2p_identity::Keypair;
use metamesh_protocol::record::SignedRecord;
use metamesh_protocol::schema::Pattern;
use metamesh_storage::{Batch, Store, StoreConfig, Urgency, Writer, WriterConfig};

fn pattern(i: u64) -> Pattern {
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": format!("p{i}"), "node_id": "n", "timestamp": 1_700_000_000.0 + i as f64,
            "platform": "test", "depth_used": "deep", "mode": "m",
            "quality_achieved": 0.5, "success": true, "atp_before": 100.0, "atp_after": 90.0
        }),
        None,
    )
    .unwrap()
}

fn insert(k: &Keypair, seq: u64) -> Batch {
    Batch::Insert(vec![SignedRecord::sign_pattern_after(
        pattern(seq),
        seq,
        (seq > 1).then(|| seq - 1),
        k,
    )])
}

/// Submit seq 1 of `k` as bulk and hold the writer thread inside that
/// group's acknowledgement until the returned sender is used: what is
/// submitted meanwhile queues behind it.
fn hold(w: &Writer, k: &Keypair) -> mpsc::Sender<()> {
    let (started_tx, started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    w.submit_with_in(
        Urgency::Bulk,
        insert(k, 1),
        Box::new(move |r| {
            r.unwrap();
            started_tx.send(()).unwrap();
            released.recv().unwrap();
        }),
    )
    .unwrap();
    started.recv().unwrap();
    release
}

#[test]
fn an_urgent_write_overtakes_a_bulk_backlog() {
    const BULK: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), &StoreConfig::default()).unwrap();
    // One job per group, so the order of acknowledgements is the order of writes.
    let cfg = WriterConfig {
        queue: 1024,
        max_group_records: 1,
        max_bulk_group_records: 1,
        bulk_linger: std::time::Duration::ZERO,
    };
    let w = Writer::start(store.clone(), None, cfg).unwrap();
    let flood = Keypair::generate_ed25519();
    let own = Keypair::generate_ed25519();
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();

    // The backlog and the urgent job all queue before anything else is written.
    let release = hold(&w, &flood);
    let (done_tx, done) = mpsc::channel();
    for seq in 2..=BULK {
        let (order, done_tx) = (order.clone(), done_tx.clone());
        w.submit_with_in(
            Urgency::Bulk,
            insert(&flood, seq),
            Box::new(move |r| {
                r.unwrap();
                order.lock().unwrap().push("bulk");
                done_tx.send(()).unwrap();
            }),
        )
        .unwrap();
    }
    {
        let (order, done_tx) = (order.clone(), done_tx.clone());
        w.submit_with(
            insert(&own, 1),
            Box::new(move |r| {
                r.unwrap();
                order.lock().unwrap().push("urgent");
                done_tx.send(()).unwrap();
            }),
        )
        .unwrap();
    }
    release.send(()).unwrap();
    for _ in 0..BULK {
        done.recv().unwrap();
    }
    let order = order.lock().unwrap();
    let at = order.iter().position(|o| *o == "urgent").unwrap();
    // FIFO would write it last (at BULK - 1). With lanes it waits only for
    // what the signer had prepared before it arrived; allow the signer a
    // slow start on a loaded machine, but not the backlog.
    assert!(
        at < (BULK as usize) / 4,
        "the urgent write was acknowledged after {at} of {} bulk writes",
        BULK - 1
    );
    w.shutdown();
    assert_eq!(
        store.pattern_count(),
        BULK + 1,
        "every write of both lanes stored"
    );
    assert_eq!(store.frontier()[&flood.public().to_peer_id()], BULK);
}

#[test]
fn bulk_work_is_written_in_small_groups() {
    const BULK: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), &StoreConfig::default()).unwrap();
    let cfg = WriterConfig {
        max_bulk_group_records: 16,
        bulk_linger: std::time::Duration::ZERO,
        ..WriterConfig::default()
    };
    let w = Writer::start(store.clone(), None, cfg).unwrap();
    let k = Keypair::generate_ed25519();
    let release = hold(&w, &k);
    let tickets: Vec<_> = (2..=BULK)
        .map(|seq| {
            let (tx, rx) = mpsc::channel();
            w.submit_with_in(
                Urgency::Bulk,
                insert(&k, seq),
                Box::new(move |r| tx.send(r.is_ok()).unwrap()),
            )
            .unwrap();
            rx
        })
        .collect();
    release.send(()).unwrap();
    assert!(tickets.into_iter().all(|t| t.recv().unwrap()));
    let groups = w.stats().groups.load(std::sync::atomic::Ordering::Relaxed);
    // One group would do for the whole backlog; bulk groups hold 16 at most.
    assert!(
        groups > BULK / 16,
        "{groups} groups for {BULK} bulk records"
    );
    w.shutdown();
    assert_eq!(store.pattern_count(), BULK);
}

#[test]
fn an_urgent_write_joins_a_lingering_bulk_group() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), &StoreConfig::default()).unwrap();
    // A long linger: the bulk job waits for the urgent one, which joins it.
    let cfg = WriterConfig {
        bulk_linger: std::time::Duration::from_secs(30),
        ..WriterConfig::default()
    };
    let w = Writer::start(store.clone(), None, cfg).unwrap();
    let (flood, own) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let (tx, bulk_done) = mpsc::channel();
    w.submit_with_in(
        Urgency::Bulk,
        insert(&flood, 1),
        Box::new(move |r| tx.send(r.is_ok()).unwrap()),
    )
    .unwrap();
    let started = std::time::Instant::now();
    w.submit(insert(&own, 1)).unwrap();
    assert!(bulk_done.recv().unwrap());
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // FIFO, or no linger, would write the bulk job first: two flushes.
    assert_eq!(
        w.stats().groups.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    w.shutdown();
    assert_eq!(store.pattern_count(), 2);
}

/// The non-blocking submit: with the writer held and its one-job queues
/// full, a job is handed back untouched (nothing written, its reply never
/// runs); once the writer is free, it is taken and stored.
#[test]
fn a_full_queue_hands_the_job_back_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store"), &StoreConfig::default()).unwrap();
    let cfg = WriterConfig {
        queue: 1,
        bulk_linger: std::time::Duration::ZERO,
        ..WriterConfig::default()
    };
    let w = Writer::start(store.clone(), None, cfg).unwrap();
    let k = Keypair::generate_ed25519();
    let release = hold(&w, &k);
    // Fill both stages of the bulk lane (the signer's queue and the writer's).
    let mut queued = 0;
    let ran = Arc::new(Mutex::new(0usize));
    let mut refused = None;
    for seq in 2..50 {
        let r = ran.clone();
        match w.try_submit_with_in(
            Urgency::Bulk,
            insert(&k, seq),
            Box::new(move |res| {
                res.unwrap();
                *r.lock().unwrap() += 1;
            }),
        ) {
            Ok(()) => queued += 1,
            Err(not) => {
                assert!(!not.closed);
                refused = Some((seq, not));
                break;
            }
        }
    }
    let (seq, not) = refused.expect("a one-job queue filled up");
    assert!(queued <= 3, "{queued} jobs queued past a one-job queue");
    assert_eq!(not.batch.len(), 1);
    release.send(()).unwrap();
    // The handed-back job, submitted again, is stored.
    let (tx, done) = mpsc::channel();
    w.submit_with_in(
        Urgency::Bulk,
        not.batch,
        Box::new(move |r| tx.send(r.is_ok()).unwrap()),
    )
    .unwrap();
    assert!(done.recv().unwrap());
    w.shutdown();
    assert_eq!(*ran.lock().unwrap(), queued);
    assert_eq!(store.pattern_count(), seq);
}
