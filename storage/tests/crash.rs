//! Durability under `kill -9`: a writer in a child process appends patterns
//! in batches, flushes after each batch and only then prints the batch's last
//! seq ("acknowledged"). The parent kills it with SIGKILL mid-stream, reopens
//! the store and checks that every acknowledged pattern is there and that the
//! statistics, frontier and indexes agree with the records (atomic batches).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libp2p_identity::Keypair;
use metamesh_protocol::schema::{Depth, Pattern};
use metamesh_protocol::stats::DepthTable;
use metamesh_storage::{AppendOutcome, Batch, Outcomes, Store, StoreConfig, Writer, WriterConfig};

const ENV_DIR: &str = "METAMESH_CRASH_WRITER_DIR";
const BATCH: u64 = 50;
/// The parent kills the child once this seq is acknowledged.
const KILL_AFTER: u64 = 1500;

fn key() -> Keypair {
    Keypair::ed25519_from_bytes([42; 32]).unwrap()
}

fn pattern(i: u64) -> Pattern {
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": format!("crash-{i}"), "node_id": "crash", "timestamp": 1_700_000_000.0 + i as f64,
            "platform": "test", "depth_used": Depth::ALL[(i % 5) as usize].as_str(), "mode": format!("m{}", i % 7),
            "quality_achieved": (i % 101) as f64 / 100.0, "success": !i.is_multiple_of(3),
            "atp_before": 100.0, "atp_after": 100.0 - (i % 13) as f64
        }),
        None,
    )
    .unwrap()
}

/// The child: runs only when re-executed by the parent with ENV_DIR set.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var(ENV_DIR) else {
        return; // normal test runs: nothing to do
    };
    let cfg = StoreConfig {
        // sled also flushes in the background, often: a kill then lands in
        // the middle of writes that are partly on disk, which the parent's
        // atomicity checks must see whole or not at all.
        flush_every_ms: Some(1),
        ..Default::default()
    };
    let store = Store::open(&PathBuf::from(dir), &cfg).unwrap();
    // Through the group-commit writer: submit returns after the flush.
    let writer = Writer::start(store, Some(key()), WriterConfig::default()).unwrap();
    let mut i = 0u64;
    loop {
        let batch: Vec<_> = (i..i + BATCH).map(|j| (pattern(j), None)).collect();
        i += BATCH;
        let Outcomes::Appended(out) = writer.submit(Batch::Append(batch)).unwrap() else {
            panic!("not an append");
        };
        let AppendOutcome::Appended(_, body) = out.last().unwrap() else {
            panic!("no append");
        };
        // Printed only after the flush: this seq's counter (= records so far) is durable.
        println!("ACK {}", body.seq & 0xffff_ffff);
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    if std::env::var(ENV_DIR).is_ok() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DIR, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked < KILL_AFTER {
        assert!(Instant::now() < deadline, "writer too slow: acked {acked}");
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(s) = l.strip_prefix("ACK ") {
                    acked = s.trim().parse().unwrap();
                }
            }
            _ => panic!("writer exited early after ack {acked}"),
        }
    }
    // The writer is mid-stream (it never stops on its own). Vary the kill
    // point by up to ~20 ms (this is not a wait for a condition: it moves the
    // SIGKILL to a random phase of the next batches — signing, transaction,
    // background flush or explicit flush).
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        % 20_000;
    std::thread::sleep(Duration::from_micros(jitter));
    child.kill().unwrap();
    child.wait().unwrap();
    // Acks printed before the kill still count.
    for l in lines.map_while(Result::ok) {
        if let Some(s) = l.strip_prefix("ACK ") {
            acked = acked.max(s.trim().parse().unwrap());
        }
    }

    let store = Store::open(&dir, &StoreConfig::default()).unwrap();
    let k = key();
    let me = k.public().to_peer_id();
    let records = store
        .records_in_range(me, 1, u64::MAX, usize::MAX, usize::MAX)
        .unwrap();
    let held = records.len() as u64;
    eprintln!("acknowledged {acked}, held after SIGKILL {held}");
    assert!(
        held >= acked,
        "lost acknowledged writes: held {held} < acked {acked}"
    );
    // Whatever survived is a whole prefix of batches: counters 1..=held of one epoch.
    let mut table = DepthTable::default();
    let mut last = 0;
    for (n, r) in records.iter().enumerate() {
        let body = r.open_pattern(2e9).unwrap();
        assert_eq!(body.seq & 0xffff_ffff, n as u64 + 1);
        assert_eq!(body.prev_seq, if n == 0 { Some(0) } else { None });
        assert_eq!(body.pattern, pattern(n as u64));
        assert!(store.holds(&me, body.seq, &r.content_hash()).unwrap());
        table.add_pattern(&body.pattern);
        last = body.seq;
    }
    assert_eq!(held % BATCH, 0, "a batch landed partially");
    assert_eq!(
        store.merged_stats(),
        table,
        "statistics disagree with the records"
    );
    assert_eq!(store.stats_of(&me), table);
    assert_eq!(store.pattern_count(), held);
    assert_eq!(store.frontier().get(&me).copied().unwrap_or(0), last);
    let modes = store.origin_mode_stats(&me);
    assert_eq!(modes.values().map(|s| s.n).sum::<u64>(), held);
    assert!(store.own_seq() >= last);
    // And the store keeps working: the next local append begins a new epoch
    // that continues the chain (a seq of the killed process — even one
    // signed but never acknowledged — is never reused).
    let (_, b) = store.append_local(&k, pattern(held)).unwrap();
    assert!(b.seq >> 32 > last >> 32);
    assert_eq!(b.prev_seq, Some(last));
    assert_eq!(store.frontier()[&me], b.seq);
}
