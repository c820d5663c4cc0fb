//! The flood test of issue 12: two real nodes on loopback with the node's
//! default configuration (no trust), `n1 — n2`, and an adversary attached
//! to n1 only that floods the mesh with records from many fresh identities
//! (valid but junk, each under the per-origin quota, so n1 accepts and
//! forwards them), then with records whose signatures do not verify.
//! Measured: the latency of one honest pattern recorded on n1 until n2
//! holds it, before and during the flood (median of `--samples` each),
//! and their ratio, from one run. Checked (by `tests/tests/hardening.rs`,
//! which runs the same code smaller): n2 never charges, scores down,
//! graylists or disconnects n1; every honest pattern arrives; the invalid
//! records stop at n1 and are charged to the adversary.
//!
//! ```text
//! cargo run --release -p metamesh-tests --example flood -- --identities 200 --rate 1000 --samples 30
//! ```
//! Options: `--identities N` (200), `--rate R` flood records per second
//! (1000), `--samples K` honest patterns timed per phase (30), `--invalid M`
//! bad-signature records at the end (20).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::PeerId;
use metamesh_node::api::NodeApi;
use metamesh_node::network::{self, NetEvent, NetworkConfig, TopicKind};
use metamesh_protocol::sync::SyncResponse;
use metamesh_protocol::wire::{GossipMessage, RecordPush, WIRE_VERSION};
use metamesh_protocol::{Depth, SignedRecord};
use metamesh_tests::*;

#[derive(Debug, Clone)]
pub struct Options {
    pub identities: usize,
    pub rate: f64,
    pub samples: usize,
    pub invalid: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            identities: 200,
            rate: 1000.0,
            samples: 30,
            invalid: 20,
        }
    }
}

/// What one run measured and saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub n1: PeerId,
    /// Honest pattern latency n1 → n2 (ms), before and during the flood.
    pub before_ms: Vec<f64>,
    pub during_ms: Vec<f64>,
    /// Of which the local write on n1 (until the API's answer), ms.
    pub before_local_ms: Vec<f64>,
    pub during_local_ms: Vec<f64>,
    /// Records shed (verified, not stored: fetched again later) at n1, n2.
    pub shed: (u64, u64),
    /// Flood records the adversary published, and over how long.
    pub flood_sent: u64,
    pub flood_secs: f64,
    /// Flood identities whose records n2 holds (n1 forwarded them).
    pub flood_origins_at_n2: usize,
    pub flood_records_at_n2: u64,
    /// n2's view of n1 after everything.
    pub relay_score: f64,
    pub relay_class: String,
    pub relay_counters: BTreeMap<String, u64>,
    pub relay_gossip_score: Option<f64>,
    pub relay_connected: bool,
    /// Honest patterns recorded on n1, and whether n2 holds them all.
    pub honest_recorded: usize,
    pub honest_all_arrived: bool,
    /// n1's count of bad signatures, and its score of the adversary.
    pub n1_bad_signatures: u64,
    pub adversary_score_at_n1: Option<f64>,
    /// n2's rejections by reason (nothing invalid should reach it).
    pub n2_rejected: serde_json::Value,
    /// Peers the adversary was ever connected to.
    pub adversary_peers: Vec<PeerId>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        f64::NAN
    } else {
        s[s.len() / 2]
    }
}

pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s[i.min(s.len() - 1)]
}

fn push(record: SignedRecord) -> Vec<u8> {
    GossipMessage::RecordPush(RecordPush {
        v: WIRE_VERSION,
        record,
    })
    .encode()
}

/// Record one pattern on `from` and wait until `to` holds it: milliseconds
/// until `from` stored it, and until `to` did.
async fn one_latency(from: &TestNode, to: &TestNode, tag: &str) -> (f64, f64) {
    let origin = from.n().peer_id();
    let start = Instant::now();
    let done = from
        .n()
        .node
        .submit_patterns(vec![pattern(tag, Depth::Standard, 0.8)])
        .await
        .unwrap();
    let seq = done[0].seq;
    let stored = start.elapsed().as_secs_f64() * 1e3;
    let store = to.n().node.store();
    while store.frontier_of(&origin) < seq {
        assert!(start.elapsed() < DEADLINE, "{tag} never reached n2");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let total = start.elapsed().as_secs_f64() * 1e3;
    if std::env::var_os("FLOOD_VERBOSE").is_some() {
        eprintln!("{tag}: stored on n1 after {stored:.1} ms, at n2 after {total:.1} ms");
    }
    (stored, total)
}

pub async fn run(opts: &Options) -> Outcome {
    let n1 = TestNode::start(test_config(&[])).await;
    let n2 = TestNode::start(test_config(&[n1.n()])).await;
    let (p1, p2) = (n1.n().peer_id(), n2.n().peer_id());
    let mut honest = 0usize;
    // the link is up and gossip flows
    one_latency(&n1, &n2, "warm-up").await;
    honest += 1;

    // The adversary: our own network layer, attached to n1 only (it
    // listens nowhere, so n2 cannot dial it, and it refuses n2 itself:
    // everything it sends reaches n2 through n1).
    let adv_key = Keypair::generate_ed25519();
    // (a second identity of the adversary for the bad signatures: the first
    // one's send queue may still hold the flood)
    let adv_key2 = Keypair::generate_ed25519();
    let adv_id2 = adv_key2.public().to_peer_id();
    // Both adversary identities dial only n1 and never reach n2 directly.
    let adversary_net = || NetworkConfig {
        listen: vec![],
        bootstrap: vec![n1.addr()],
        target_peers: 1,
        denied: vec![p2],
        ..NetworkConfig::default()
    };
    let (adv, mut events, _task) = network::start(adv_key, adversary_net()).unwrap();
    let peers_seen: Arc<Mutex<Vec<PeerId>>> = Arc::default();
    let subscribed = Arc::new(AtomicBool::new(false));
    {
        let (adv, peers_seen, subscribed) = (adv.clone(), peers_seen.clone(), subscribed.clone());
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    NetEvent::PeerConnected { peer } => peers_seen.lock().unwrap().push(peer),
                    NetEvent::PeerSubscribed { peer, .. } if peer == p1 => {
                        subscribed.store(true, Ordering::SeqCst)
                    }
                    // It serves nothing.
                    NetEvent::Request { channel, .. } => {
                        let _ = adv.respond(channel, SyncResponse::refusal("no")).await;
                    }
                    _ => {}
                }
            }
        });
    }
    wait_until("the adversary is in n1's mesh", || {
        let s = subscribed.clone();
        async move { s.load(Ordering::SeqCst) }
    })
    .await;

    let (mut before, mut before_local) = (Vec::new(), Vec::new());
    for i in 0..opts.samples {
        let (local, total) = one_latency(&n1, &n2, &format!("before-{i}")).await;
        before.push(total);
        before_local.push(local);
        honest += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The flood: records from `identities` fresh keys, round-robin, at `rate`.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (adv, stop, sent) = (adv.clone(), stop.clone(), sent.clone());
        let keys: Vec<Keypair> = (0..opts.identities)
            .map(|_| Keypair::generate_ed25519())
            .collect();
        let rate = opts.rate;
        tokio::spawn(async move {
            let start = Instant::now();
            let mut k = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let due = (start.elapsed().as_secs_f64() * rate) as u64;
                while k < due {
                    let id = (k % keys.len() as u64) as usize;
                    let seq = k / keys.len() as u64 + 1;
                    let q = (k % 97) as f64 / 97.0;
                    let p = pattern(&format!("junk-{k}"), Depth::Minimal, q);
                    let r = SignedRecord::sign_pattern(p, seq, &keys[id]);
                    if adv.publish(TopicKind::Records, push(r)).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    k += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            start.elapsed().as_secs_f64()
        })
    };
    // let it build up, then time honest patterns while it runs
    let flood_at_n2 = |n: &TestNode| n.n().node.store().frontier().len().saturating_sub(1);
    wait_until(
        "every flood identity published, n2 holds flood records",
        || {
            let sent = sent.clone();
            let n = opts.identities as u64;
            let at_n2 = flood_at_n2(&n2);
            async move { sent.load(Ordering::Relaxed) >= n && at_n2 >= 1 }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut during, mut during_local) = (Vec::new(), Vec::new());
    for i in 0..opts.samples {
        let (local, total) = one_latency(&n1, &n2, &format!("during-{i}")).await;
        during.push(total);
        during_local.push(local);
        honest += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let flood_secs = flood.await.unwrap();
    let c1 = n1.n().node.counters().await.unwrap();
    let c2 = n2.n().node.counters().await.unwrap();
    eprintln!(
        "flood: {} sent in {flood_secs:.1} s; before p50 {:.1} ms, during p50 {:.1} ms; \
         n1 gossip received {} shed {}; n2 gossip received {} accepted {} shed {}",
        sent.load(Ordering::Relaxed),
        median(&before),
        median(&during),
        c1.gossip_records_received,
        c1.records_shed,
        c2.gossip_records_received,
        c2.records_accepted,
        c2.records_shed
    );

    // Records whose signatures do not verify, from the adversary's second identity.
    let (adv, mut events2, _task2) = network::start(adv_key2, adversary_net()).unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    {
        let (ready, peers_seen) = (ready.clone(), peers_seen.clone());
        tokio::spawn(async move {
            while let Some(ev) = events2.recv().await {
                match ev {
                    NetEvent::PeerConnected { peer } => peers_seen.lock().unwrap().push(peer),
                    NetEvent::PeerSubscribed { peer } if peer == p1 => {
                        ready.store(true, Ordering::SeqCst)
                    }
                    _ => {}
                }
            }
        });
    }
    wait_until("the adversary's second connection is in n1's mesh", || {
        let r = ready.clone();
        async move { r.load(Ordering::SeqCst) }
    })
    .await;
    for i in 0..opts.invalid {
        let k = Keypair::generate_ed25519();
        let mut r =
            SignedRecord::sign_pattern(pattern(&format!("forged-{i}"), Depth::Deep, 1.0), 1, &k);
        r.signature[9] ^= 0x10;
        // (its send queue may still be full of the flood: retry)
        let data = push(r);
        let start = Instant::now();
        while let Err(e) = adv.publish(TopicKind::Records, data.clone()).await {
            assert!(
                start.elapsed() < DEADLINE,
                "the adversary cannot publish: {e}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    if opts.invalid > 0 {
        wait_until("n1 counted the bad signatures", || async {
            let s = get_json(&n1.api(), "/v1/stats").await;
            s["metrics"]["rejected_by_reason"]["bad_signature"]
                .as_u64()
                .unwrap_or(0)
                >= 1
        })
        .await;
    }
    // after the flood
    one_latency(&n1, &n2, "after").await;
    honest += 1;
    let origin_seq = n1.n().node.store().frontier_of(&p1);
    let honest_all_arrived = n2.n().node.store().frontier_of(&p1) >= origin_seq;

    // n2's view of n1
    let rep = n2.n().node.reputation().await.unwrap();
    let r1 = rep.iter().find(|r| r.peer_id == p1.to_string());
    let peers = n2.n().node.peers().await.unwrap();
    let relay_connected = peers
        .iter()
        .any(|p| p.peer_id == p1.to_string() && p.connected);
    let relay_gossip_score = n2.n().node.gossip_score(p1).await.unwrap();
    let s1 = get_json(&n1.api(), "/v1/stats").await;
    let s2 = get_json(&n2.api(), "/v1/stats").await;
    let rep1 = n1.n().node.reputation().await.unwrap();
    let flood_origins_at_n2 = flood_at_n2(&n2);
    let flood_records_at_n2 = n2.pattern_count().saturating_sub(honest as u64);
    let out = Outcome {
        n1: p1,
        before_ms: before,
        during_ms: during,
        before_local_ms: before_local,
        during_local_ms: during_local,
        shed: (c1.records_shed, c2.records_shed),
        flood_sent: sent.load(Ordering::Relaxed),
        flood_secs,
        flood_origins_at_n2,
        flood_records_at_n2,
        relay_score: r1.map_or(0.0, |r| r.score),
        relay_class: r1.map_or("neutral".into(), |r| r.class.clone()),
        relay_counters: r1.map(|r| r.counters.clone()).unwrap_or_default(),
        relay_gossip_score,
        relay_connected,
        honest_recorded: honest,
        honest_all_arrived,
        n1_bad_signatures: s1["metrics"]["rejected_by_reason"]["bad_signature"]
            .as_u64()
            .unwrap_or(0),
        adversary_score_at_n1: rep1
            .iter()
            .find(|r| r.peer_id == adv_id2.to_string())
            .map(|r| r.score),
        n2_rejected: s2["metrics"]["rejected_by_reason"].clone(),
        adversary_peers: peers_seen.lock().unwrap().clone(),
    };
    let (mut n1, mut n2) = (n1, n2);
    n2.stop().await;
    n1.stop().await;
    out
}

#[allow(dead_code)]
fn main() {
    let mut opts = Options::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--identities" => opts.identities = v.parse().unwrap(),
            "--rate" => opts.rate = v.parse().unwrap(),
            "--samples" => opts.samples = v.parse().unwrap(),
            "--invalid" => opts.invalid = v.parse().unwrap(),
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let o = rt.block_on(run(&opts));
    let (b, d) = (median(&o.before_ms), median(&o.during_ms));
    println!("{opts:?}");
    println!(
        "flood: {} records from {} identities in {:.1} s ({:.0}/s); n2 holds {} flood records of {} origins",
        o.flood_sent,
        opts.identities,
        o.flood_secs,
        o.flood_sent as f64 / o.flood_secs,
        o.flood_records_at_n2,
        o.flood_origins_at_n2
    );
    println!(
        "honest latency n1→n2 ms: before p50 {:.1} p90 {:.1} max {:.1}; during p50 {:.1} p90 {:.1} max {:.1}",
        b,
        quantile(&o.before_ms, 0.9),
        quantile(&o.before_ms, 1.0),
        d,
        quantile(&o.during_ms, 0.9),
        quantile(&o.during_ms, 1.0)
    );
    println!(
        "of which the write on n1 ms: before p50 {:.1}, during p50 {:.1}; shed at n1 {}, at n2 {}",
        median(&o.before_local_ms),
        median(&o.during_local_ms),
        o.shed.0,
        o.shed.1
    );
    println!("ratio during/before (p50): {:.2}", d / b);
    println!(
        "n1 at n2: score {:.2} class {} counters {:?} gossipsub score {:?} connected {}",
        o.relay_score, o.relay_class, o.relay_counters, o.relay_gossip_score, o.relay_connected
    );
    println!(
        "honest patterns: {} recorded, all at n2: {}; n1 bad signatures {}, adversary score at n1 {:?}; n2 rejected {}",
        o.honest_recorded, o.honest_all_arrived, o.n1_bad_signatures, o.adversary_score_at_n1, o.n2_rejected
    );
}
