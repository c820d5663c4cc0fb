//! `peers` and `stats`: what the node knows of the mesh and of itself,
//! live from the node or from the store.

use std::collections::BTreeMap;

use anyhow::Result;
use libp2p::PeerId;
use metamesh_protocol::reputation;
use metamesh_storage::Store;

use super::{connect, out, out_json, unix_now, Target};
use crate::api::{PeerView, StatsView};
use crate::cli::{trust, GlobalArgs, JsonArgs};
use crate::config::Config;

/// Known peers from the store: addresses and persisted reputation, under
/// the configured trust.
fn offline_peers(store: &Store, cfg: &Config, now: f64) -> Vec<PeerView> {
    let book = trust::book(cfg, store);
    let mut peers: BTreeMap<PeerId, PeerView> = BTreeMap::new();
    let blank = |p: &PeerId| PeerView {
        peer_id: p.to_string(),
        addrs: Vec::new(),
        connected: false,
        reputation: 0.0,
        class: reputation::class(0.0).as_str().to_string(),
    };
    for (p, addrs) in store.peer_addrs() {
        peers.entry(p).or_insert_with(|| blank(&p)).addrs = addrs;
    }
    for p in book.peers() {
        let s = book.standing(&p, now);
        let v = peers.entry(p).or_insert_with(|| blank(&p));
        v.reputation = s.score;
        v.class = s.class.as_str().to_string();
    }
    peers.into_values().collect()
}

pub fn peers(g: &GlobalArgs, a: JsonArgs) -> Result<()> {
    let (peers, live) = match connect(g)? {
        Target::Api(c) => (c.get::<Vec<PeerView>>("/v1/peers", &[])?, true),
        Target::Store(o) => (offline_peers(&o.store, &o.cfg, unix_now()), false),
    };
    if a.json {
        return out_json(&peers);
    }
    out(&render_peers(&peers, live))
}

pub fn render_peers(peers: &[PeerView], live: bool) -> String {
    let mut s = String::new();
    if !live {
        s.push_str("(no node running: peers known from the store)\n");
    }
    if peers.is_empty() {
        s.push_str("no known peers\n");
        return s;
    }
    s.push_str(&format!(
        "{:<52} {:<9} {:>8} {:<10} addrs\n",
        "peer", "connected", "score", "class"
    ));
    for p in peers {
        s.push_str(&format!(
            "{:<52} {:<9} {:>8.2} {:<10} {}\n",
            p.peer_id,
            if p.connected { "yes" } else { "no" },
            p.reputation,
            p.class,
            p.addrs.join(" ")
        ));
    }
    s
}
fn offline_stats(store: &Store, me: &PeerId) -> StatsView {
    StatsView {
        peer_id: me.to_string(),
        pattern_count: store.pattern_count(),
        own_seq: store.own_seq(),
        origins: store.frontier().len() as u64,
        depth_distribution: store.depth_distribution(),
        connected_peers: 0,
        known_peers: store.peer_addrs().len() as u64,
        uptime_secs: 0.0,
        metrics: Default::default(),
    }
}

pub fn stats(g: &GlobalArgs, a: JsonArgs) -> Result<()> {
    let (stats, live) = match connect(g)? {
        Target::Api(c) => (c.get::<StatsView>("/v1/stats", &[])?, true),
        Target::Store(o) => {
            let me = o.dd.load_identity()?.public().to_peer_id();
            (offline_stats(&o.store, &me), false)
        }
    };
    if a.json {
        return out_json(&stats);
    }
    out(&render_stats(&stats, live))
}

pub fn render_stats(s: &StatsView, live: bool) -> String {
    let m = &s.metrics;
    let mut t = format!("node            {}\n", s.peer_id);
    if live {
        t.push_str(&format!("uptime          {:.0} s\n", s.uptime_secs));
    } else {
        t.push_str("state           not running (numbers from the store)\n");
    }
    t.push_str(&format!("patterns        {}\n", s.pattern_count));
    t.push_str(&format!("own seq         {}\n", s.own_seq));
    t.push_str(&format!("origins         {}\n", s.origins));
    t.push_str(&format!(
        "peers           {} connected, {} known\n",
        s.connected_peers, s.known_peers
    ));
    let dist: Vec<String> = s
        .depth_distribution
        .iter()
        .map(|(d, n)| format!("{d}={n}"))
        .collect();
    t.push_str(&format!("by depth        {}\n", dist.join(" ")));
    if live {
        t.push_str(&format!(
            "patterns        recorded {}, shared {}, received {}, accepted {}, rejected {}\n",
            m.patterns_recorded,
            m.patterns_shared,
            m.patterns_received,
            m.patterns_accepted,
            m.patterns_rejected
        ));
        for (reason, n) in &m.rejected_by_reason {
            t.push_str(&format!("  rejected      {reason}: {n}\n"));
        }
        t.push_str(&format!(
            "traffic         {} requests served, {} B sent, {} B received\n",
            m.requests_served, m.bytes_sent, m.bytes_received
        ));
        let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
        let q = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
        t.push_str(&format!(
            "adoption        {} ({} followed, {} explored)\n",
            pct(m.adoption_rate),
            m.recommendations_followed,
            m.recommendations_explored
        ));
        t.push_str(&format!(
            "effectiveness   quality {} following advice, {} exploring\n",
            q(m.effectiveness_followed),
            q(m.effectiveness_explored)
        ));
    }
    t
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use metamesh_protocol::Depth;

    #[test]
    fn renderers_show_the_numbers() {
        let mut s = StatsView {
            peer_id: "me".into(),
            pattern_count: 12,
            ..Default::default()
        };
        s.depth_distribution.insert(Depth::Deep, 12);
        let t = render_stats(&s, false);
        assert!(
            t.contains("patterns        12") && t.contains("deep=12") && t.contains("not running")
        );
        let peers = vec![PeerView {
            peer_id: "p1".into(),
            addrs: vec!["/ip4/1.2.3.4/tcp/1".into()],
            connected: true,
            reputation: 3.5,
            class: "neutral".into(),
        }];
        let t = render_peers(&peers, true);
        assert!(t.contains("p1") && t.contains("3.50") && t.contains("/ip4/1.2.3.4/tcp/1"));
        assert!(render_peers(&[], false).contains("no known peers"));
    }
}
