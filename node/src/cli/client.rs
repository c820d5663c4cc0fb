//! Client commands: `insights`, `record`, `recommend`, `peers`, `stats`.
//!
//! Each one looks for a running node through the data dir's `api.addr`
//! (written by `metamesh run`). If that node answers (and is this data dir's
//! identity) the command goes through its HTTP API; otherwise it opens the
//! store directly and computes the same answer with [`crate::learning`]. A
//! store held by a node whose API does not answer is a clear error.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use metamesh_protocol::reputation;
use metamesh_protocol::schema::DEFAULT_MODE;
use metamesh_protocol::{Depth, InsightsDocument, Pattern};
use metamesh_storage::{Store, StoreConfig, StoreError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::exit::{coded, NODE_UNREACHABLE, USAGE};
use super::trust;
use super::*;
use crate::api::{
    ApiError, KnowledgeTransfer, NodeInfo, PeerView, Recommendation, StatsView, SubmittedPattern,
};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::learning;

/// How long to wait for a node to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request may take (a record waits for a durable flush).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest API response read.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// `platform` of patterns recorded with `metamesh record`.
pub const RECORD_PLATFORM: &str = "metamesh-cli";

/// Where a client command gets its answer.
pub(crate) enum Target {
    Api(ApiClient),
    Store(Offline),
}

/// A running node's API.
pub struct ApiClient {
    pub(crate) base: String,
    pub(crate) http: reqwest::blocking::Client,
}

/// The store opened directly (no node running), with the configuration
/// the node would run with (its trust settings weigh the origins).
pub(crate) struct Offline {
    pub store: Store,
    pub dd: DataDir,
    pub cfg: Config,
}

impl ApiClient {
    pub fn new(addr: &str) -> Result<ApiClient> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        Ok(ApiClient {
            base: format!("http://{}", addr.trim()),
            http,
        })
    }

    pub(crate) fn decode<T: DeserializeOwned>(resp: reqwest::blocking::Response) -> Result<T> {
        let status = resp.status();
        let bytes = read_bounded(resp)?;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes).context("decoding the node's answer")
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .with_context(|| format!("asking the node at {}", self.base))?;
        Self::decode(resp)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .with_context(|| format!("sending to the node at {}", self.base))?;
        Self::decode(resp)
    }
}

/// A response body, at most [`MAX_RESPONSE_BYTES`].
pub(crate) fn read_bounded(resp: reqwest::blocking::Response) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    resp.take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading the node's answer")?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        bail!("the node's answer is larger than {MAX_RESPONSE_BYTES} bytes");
    }
    Ok(bytes)
}

/// The error for a non-success answer (the API's `{error, field}` if any).
pub(crate) fn refusal(status: reqwest::StatusCode, bytes: &[u8]) -> anyhow::Error {
    match serde_json::from_slice::<ApiError>(bytes) {
        Ok(e) => match e.field {
            Some(f) => anyhow!("the node refused: {} (field {f})", e.error),
            None => anyhow!("the node refused: {}", e.error),
        },
        Err(_) => anyhow!("the node answered HTTP {status}"),
    }
}

/// Find a running node for this data dir, else open the store.
pub(crate) fn connect(g: &GlobalArgs) -> Result<Target> {
    let dd = DataDir::resolve(g.data_dir.clone());
    let key = dd.load_identity()?;
    // Read (and check) the configuration first: its environment warnings
    // and errors apply whether or not a node runs.
    let cfg = Config::for_command(g, &dd, None)?;
    let me = key.public().to_peer_id();
    let mut unreachable: Option<(String, String)> = None;
    if let Some(addr) = dd.read_api_addr() {
        match probe(&addr, &me) {
            Ok(client) => return Ok(Target::Api(client)),
            Err(why) => unreachable = Some((addr, format!("{why:#}"))),
        }
    }
    match Store::open(&dd.store_path(), &StoreConfig::default()) {
        Ok(store) => Ok(Target::Store(Offline { store, dd, cfg })),
        Err(StoreError::Locked { path }) => match unreachable {
            Some((addr, why)) => Err(coded(
                NODE_UNREACHABLE,
                format!(
                    "the store {} is locked by a running node, but its API at {addr} does not \
                     answer ({why}); wait for it to finish starting, or stop it to use the store \
                     directly",
                    path.display()
                ),
            )),
            None => bail!(
                "the store {} is locked by another process (a running node still starting up, \
                 or another metamesh command) and no API address is published in {}; try \
                 again shortly",
                path.display(),
                dd.api_addr_path().display()
            ),
        },
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("opening the store {}", dd.store_path().display()))),
    }
}

/// Does the node at `addr` answer, and is it this data dir's identity?
fn probe(addr: &str, me: &PeerId) -> Result<ApiClient> {
    let client = ApiClient::new(addr)?;
    let info: NodeInfo = client.get("/v1/node", &[])?;
    if info.peer_id != me.to_string() {
        bail!("{addr} is a different node ({})", info.peer_id);
    }
    Ok(client)
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub fn out(text: &str) -> Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

pub fn out_json<T: Serialize>(v: &T) -> Result<()> {
    out(&serde_json::to_string_pretty(v)?)
}

fn scope_str(s: Scope) -> &'static str {
    match s {
        Scope::Local => "local",
        Scope::Collective => "collective",
    }
}

// ---- insights ----------------------------------------------------------------

pub fn insights(g: &GlobalArgs, a: InsightsArgs) -> Result<()> {
    // The knowledge-transfer report accompanies collective insights in the
    // human output (a node that does not report it is skipped silently).
    let (doc, knowledge): (InsightsDocument, Option<KnowledgeTransfer>) = match connect(g)? {
        Target::Api(c) => {
            let doc = c.get("/v1/insights", &[("scope", scope_str(a.scope).to_string())])?;
            let kt = (a.scope == Scope::Collective && !a.json)
                .then(|| c.get::<KnowledgeTransfer>("/v1/knowledge", &[]).ok())
                .flatten();
            (doc, kt)
        }
        Target::Store(o) => {
            let key = o.dd.load_identity()?;
            let me = key.public().to_peer_id();
            let now = unix_now();
            match a.scope {
                Scope::Local => (learning::local_insights(&o.store, &me, now), None),
                Scope::Collective => {
                    let w = trust::origin_weights(&o.cfg, &o.store, me, now);
                    let c = learning::collective(&o.store, &me, &w);
                    (
                        learning::collective_document(&c, &me, now),
                        Some(learning::knowledge_transfer(&c)),
                    )
                }
            }
        }
    };
    if a.json {
        return out_json(&doc);
    }
    let mut text = render_insights(&doc, a.scope);
    if let Some(kt) = knowledge.filter(|k| !k.contributors.is_empty() || !k.excluded.is_empty()) {
        text.push_str(&render_knowledge(&kt));
    }
    out(&text)
}

/// Human-readable knowledge-transfer report.
pub fn render_knowledge(kt: &KnowledgeTransfer) -> String {
    let mut s = format!(
        "
evidence from {} origins ({} patterns)
",
        kt.contributors.len(),
        kt.pattern_count
    );
    let mut by_share = kt.contributors.clone();
    by_share.sort_by(|a, b| b.share.total_cmp(&a.share));
    for c in &by_share {
        s.push_str(&format!(
            "  {:<52} {:>6.1}%  {:>7} patterns  weight {:.2}{}
",
            c.peer_id,
            c.share * 100.0,
            c.patterns,
            c.weight,
            if c.anchor { "  (anchor)" } else { "" }
        ));
    }
    for e in &kt.excluded {
        let why = match e.reason.as_str() {
            "anchor" => format!("disagrees with the anchors' evidence (z = {:.1})", e.z),
            "majority" => format!("disagrees with the weighted majority (z = {:.1})", e.z),
            "volume" => format!("floods ({:.1}× the median volume)", e.z),
            other => format!("{other} (z = {:.1})", e.z),
        };
        s.push_str(&format!(
            "  excluded {} at {} depth: {why}\n",
            e.peer_id, e.depth
        ));
    }
    s
}

/// Human-readable insights: per-depth table, then the insights.
pub fn render_insights(doc: &InsightsDocument, scope: Scope) -> String {
    let mut s = format!(
        "{} insights of {} — {} patterns\n",
        scope_str(scope),
        doc.node_id,
        doc.pattern_count
    );
    if doc.pattern_count == 0 {
        s.push_str("no patterns yet: record some (`metamesh record`) or import files (`metamesh import`)\n");
        return s;
    }
    s.push_str(&format!(
        "\n{:<10} {:>8} {:>11} {:>9} {:>9}\n",
        "depth", "samples", "avg quality", "success", "avg ATP"
    ));
    for (d, p) in &doc.depth_performance {
        s.push_str(&format!(
            "{:<10} {:>8} {:>11.3} {:>8.1}% {:>9.1}\n",
            d.as_str(),
            p.sample_count,
            p.avg_quality,
            p.success_rate * 100.0,
            p.avg_atp_cost
        ));
    }
    s.push('\n');
    for i in &doc.insights {
        s.push_str(&format!(
            "{:<22} {:>6.1}%  {}\n",
            i.insight_type,
            i.confidence * 100.0,
            i.description
        ));
    }
    s
}

// ---- record --------------------------------------------------------------

/// The pattern `metamesh record` stores (validated).
pub fn record_pattern(a: &RecordArgs, node_id: &PeerId, now: f64) -> Result<Pattern> {
    // Checked before the JSON is built: serde_json would turn NaN and the
    // infinities into null, which the schema reports as a missing field.
    for (flag, v, range) in [
        ("--quality", a.quality, " between 0 and 1"),
        ("--atp-before", a.atp_before, ""),
        ("--atp-after", a.atp_after, ""),
    ] {
        if !v.is_finite() {
            return Err(coded(
                USAGE,
                format!("{flag}: must be a finite number{range}, got {v}"),
            ));
        }
    }
    record_pattern_checked(a, node_id, now).map_err(|e| coded(USAGE, format!("{e}")))
}

fn record_pattern_checked(a: &RecordArgs, node_id: &PeerId, now: f64) -> Result<Pattern> {
    let depth: Depth = a
        .depth
        .parse()
        .map_err(|e: metamesh_protocol::SchemaError| anyhow!("--depth: {}", e.reason))?;
    let id: u64 = rand::random();
    let p = Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": format!("cli-{id:016x}"),
            "node_id": node_id.to_string(),
            "timestamp": now,
            "platform": RECORD_PLATFORM,
            "depth_used": depth.as_str(),
            "mode": a.mode.clone().unwrap_or_else(|| DEFAULT_MODE.to_string()),
            "quality_achieved": a.quality,
            "success": a.success,
            "atp_before": a.atp_before,
            "atp_after": a.atp_after,
        }),
        None,
    )
    .map_err(|e| anyhow!("{}: {}", flag_of(&e.field), e.reason))?;
    p.validate(now)
        .map_err(|e| anyhow!("{}: {}", flag_of(&e.field), e.reason))?;
    Ok(p)
}

/// The command-line flag behind a pattern field, for error messages.
fn flag_of(field: &str) -> String {
    match field {
        "quality_achieved" => "--quality".into(),
        "depth_used" => "--depth".into(),
        "atp_before" => "--atp-before".into(),
        "atp_after" => "--atp-after".into(),
        "mode" => "--mode".into(),
        f => f.to_string(),
    }
}

pub fn record(g: &GlobalArgs, a: RecordArgs) -> Result<()> {
    let target = connect(g)?;
    let dd = DataDir::resolve(g.data_dir.clone());
    let key: Keypair = dd.load_identity()?;
    let me = key.public().to_peer_id();
    let pattern = record_pattern(&a, &me, unix_now())?;
    let submitted: SubmittedPattern = match target {
        Target::Api(c) => {
            let list: Vec<SubmittedPattern> = c.post("/v1/patterns", &pattern)?;
            list.into_iter()
                .next()
                .ok_or_else(|| anyhow!("the node stored nothing"))?
        }
        Target::Store(o) => {
            let pattern_id = pattern.pattern_id.clone();
            let (rec, body) = o.store.append_local(&key, pattern)?;
            o.store.flush()?;
            SubmittedPattern {
                origin: body.origin.to_string(),
                seq: body.seq,
                hash: rec.content_hash().to_hex(),
                pattern_id,
            }
        }
    };
    if a.json {
        return out_json(&submitted);
    }
    out(&format!(
        "recorded {} as seq {} of {} (hash {})",
        submitted.pattern_id, submitted.seq, submitted.origin, submitted.hash
    ))
}

// ---- recommend -------------------------------------------------------------

pub fn recommend(g: &GlobalArgs, a: RecommendArgs) -> Result<()> {
    if !(a.atp.is_finite() && a.atp >= 0.0) {
        return Err(coded(
            USAGE,
            format!(
                "--atp: must be a finite number of at least 0, got {}",
                a.atp
            ),
        ));
    }
    let rec: Recommendation = match connect(g)? {
        Target::Api(c) => c.get(
            "/v1/recommendation",
            &[("atp", a.atp.to_string()), ("strategy", a.strategy.clone())],
        )?,
        Target::Store(o) => {
            let key = o.dd.load_identity()?;
            let me = key.public().to_peer_id();
            let w = trust::origin_weights(&o.cfg, &o.store, me, unix_now());
            let c = learning::collective(&o.store, &me, &w);
            learning::recommend(
                &learning::collective_view(&c),
                a.atp,
                &a.strategy,
                &mut rand::thread_rng(),
            )
            .map_err(|e| match e.field {
                Some(f) => anyhow!("--{f}: {}", e.error),
                None => anyhow!("{}", e.error),
            })?
        }
    };
    if a.json {
        return out_json(&rec);
    }
    out(&format!(
        "{} (confidence {:.1}%, strategy {}, {} ATP): {}",
        rec.depth,
        rec.confidence * 100.0,
        rec.strategy,
        rec.atp,
        rec.reason
    ))
}

// ---- peers -----------------------------------------------------------------

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

// ---- stats -----------------------------------------------------------------

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

    fn args(depth: &str, quality: f64) -> RecordArgs {
        RecordArgs {
            depth: depth.into(),
            quality,
            success: true,
            atp_before: 100.0,
            atp_after: 70.0,
            mode: None,
            json: false,
        }
    }

    #[test]
    fn record_pattern_validates_and_names_flags() {
        let me = PeerId::random();
        let p = record_pattern(&args("DEEP", 0.7), &me, 1.8e9).unwrap();
        assert_eq!(p.depth_used, Depth::Deep);
        assert_eq!(p.node_id, me.to_string());
        assert_eq!(p.mode, DEFAULT_MODE);
        assert_eq!(p.platform, RECORD_PLATFORM);
        let e = record_pattern(&args("deep", 1.5), &me, 1.8e9).unwrap_err();
        assert!(e.to_string().starts_with("--quality:"), "{e}");
        let e = record_pattern(&args("abyss", 0.5), &me, 1.8e9).unwrap_err();
        assert!(e.to_string().starts_with("--depth:"), "{e}");
        let mut a = args("light", 0.5);
        a.atp_before = f64::INFINITY;
        let e = record_pattern(&a, &me, 1.8e9).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--atp-before: must be a finite number, got inf"
        );
        let e = record_pattern(&args("light", f64::NAN), &me, 1.8e9).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--quality: must be a finite number between 0 and 1, got NaN"
        );
        assert_eq!(super::super::exit::code_of(&e), USAGE);
        a.atp_before = -10.0;
        assert_eq!(record_pattern(&a, &me, 1.8e9).unwrap().atp_before, -10.0);
    }

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
