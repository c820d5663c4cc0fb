//! The fuzz targets' bodies: one function per decoder, called by the
//! libFuzzer binaries in `fuzz_targets/`. Each feeds arbitrary bytes to a
//! decoder exactly as the node does and checks what holds for every input:
//! no panic (libFuzzer reports panics, aborts, leaks of time and memory),
//! every accepted value is within its bounds, and what the node would
//! re-send (re-encode) decodes again.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::OnceLock;

use libp2p_identity::{Keypair, PeerId};
use metamesh_node::api::{
    parse_pattern_body, parse_pattern_query, parse_recommendation_query, parse_scope,
};
use metamesh_node::config::Config;
use metamesh_protocol::record::{RecordKind, SignedRecord, MAX_BODY_BYTES};
use metamesh_protocol::schema::Pattern;
use metamesh_protocol::sync::{SyncRequest, SyncResponse};
use metamesh_protocol::wire::{GossipMessage, PatternRequest, PatternResponse};
use metamesh_storage::interop::{self, detect_format, Format};

/// A fixed "now" (unix seconds) for schema checks: runs are reproducible.
pub const NOW: f64 = 1.8e9;

fn key() -> &'static Keypair {
    static K: OnceLock<Keypair> = OnceLock::new();
    K.get_or_init(|| Keypair::ed25519_from_bytes([9; 32]).unwrap())
}

fn peer() -> PeerId {
    key().public().to_peer_id()
}

/// Gossip messages (`metamesh/<mesh>/announce/1`, `insights/1`).
pub fn wire_gossip(data: &[u8]) {
    if let Ok(m) = GossipMessage::decode(data) {
        let again = GossipMessage::decode(&m.encode());
        assert!(again.is_ok(), "re-encoded gossip message fails: {again:?}");
    }
}

/// Sync requests (`/metamesh/sync/1`).
pub fn wire_request(data: &[u8]) {
    if let Ok(r) = PatternRequest::decode(data) {
        assert!(r.validate().is_ok());
        let again = PatternRequest::decode(&r.encode());
        assert!(again.is_ok(), "re-encoded request fails: {again:?}");
    }
    // What the node's codec decodes (the seed's request plus `recon`).
    if let Ok(r) = SyncRequest::decode(data) {
        if r.validate().is_ok() {
            let again = SyncRequest::decode(&r.encode());
            assert!(again.is_ok(), "re-encoded sync request fails: {again:?}");
        }
    }
}

/// Sync responses, then every record in them as the receiver opens it.
pub fn wire_response(data: &[u8]) {
    if let Ok(r) = PatternResponse::decode(data) {
        for rec in &r.records {
            let _ = rec.open_pattern(NOW);
        }
        if let Some(i) = &r.insight {
            let _ = i.open_insight();
        }
        let again = PatternResponse::decode(&r.encode());
        assert!(again.is_ok(), "re-encoded response fails: {again:?}");
    }
    if let Ok(r) = SyncResponse::decode(data) {
        let _ = r.validate();
        let again = SyncResponse::decode(&r.encode());
        assert!(again.is_ok(), "re-encoded sync response fails: {again:?}");
    }
}

/// Signed envelopes as stored and sent: decode, verify, open both kinds.
pub fn record_envelope(data: &[u8]) {
    if let Ok(rec) = SignedRecord::from_bytes(data) {
        let _ = rec.content_hash();
        let _ = rec.verify_signature();
        let _ = rec.open_pattern(NOW);
        let _ = rec.open_insight();
        let again = SignedRecord::from_bytes(&rec.to_bytes());
        assert_eq!(again.as_ref(), Ok(&rec));
    }
}

/// Pattern bodies (CBOR) past the signature check: the decode and schema
/// checks an attacker reaches with a validly signed body.
pub fn pattern_body(data: &[u8]) {
    if data.len() > MAX_BODY_BYTES {
        return;
    }
    let rec = SignedRecord {
        kind: RecordKind::Pattern,
        signer: peer().to_bytes(),
        body: data.to_vec(),
        signature: vec![0; 64],
    };
    if let Ok(body) = rec.decode_pattern_unverified(peer(), NOW) {
        assert!(body.seq >= 1);
        assert!(body.pattern.validate(NOW).is_ok());
    }
}

/// Insight bodies (CBOR) past the signature check: the decode and schema
/// checks an attacker reaches with a validly signed body (the signature
/// itself is `record_envelope`'s concern).
pub fn insight_body(data: &[u8]) {
    if data.len() > MAX_BODY_BYTES {
        return;
    }
    let rec = SignedRecord {
        kind: RecordKind::Insight,
        signer: peer().to_bytes(),
        body: data.to_vec(),
        signature: vec![0; 64],
    };
    if let Ok(body) = rec.decode_insight_unverified(peer()) {
        assert!(body.computed_at.is_finite());
        assert!(body.stats.validate().is_ok() && body.insights.validate().is_ok());
    }
}

/// One import line of each format, as the importer parses it: JSON, the
/// format's defaults (Legion's node and platform, Thor's), schema checks.
pub fn import_line(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for (platform, node) in [
        (None, None),
        (Some("legion"), Some("legion")),
        (Some("thor"), None),
    ] {
        let mut v = v.clone();
        if let (serde_json::Value::Object(m), Some(p)) = (&mut v, platform) {
            m.entry("platform").or_insert_with(|| p.into());
        }
        if let Ok(p) = Pattern::from_json_value(v, node) {
            if p.validate(NOW).is_ok() {
                // What is stored is what export writes back.
                let text = serde_json::to_string(&p).unwrap();
                let back: Pattern = serde_json::from_str(&text).unwrap();
                assert!(back.validate(NOW).is_ok(), "{text}");
            }
        }
    }
}

/// Whole import files through the importer's decoding half
/// (`interop::decode_file`, what `import_file` runs before signing and
/// storing): format detection, the Legion array streamer, bounded lines,
/// the format's defaults, schema checks. The first byte picks the file
/// name and format, the rest is the content, written under `$FUZZ_TMP`
/// (default /dev/shm).
pub fn import_file(data: &[u8]) {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let Some((&sel, content)) = data.split_first() else {
        return;
    };
    let dir = DIR.get_or_init(|| {
        let base = std::env::var_os("FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/dev/shm"));
        let dir = base.join(format!("metamesh-fuzz-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let names = [
        "in.jsonl",
        "n1_patterns.json",
        "thor_depth_patterns.jsonl",
        "_patterns.json",
    ];
    let formats = [Format::Auto, Format::Unified, Format::Legion, Format::Thor];
    let file = dir.join(names[(sel & 3) as usize]);
    std::fs::write(&file, content).unwrap();
    let format = formats[((sel >> 2) & 3) as usize];
    let _ = detect_format(&file);
    let mut valid = 0u64;
    let Ok(report) = interop::decode_file(&file, format, &mut |p| {
        // Validated by the decoder moments ago: still valid a second later.
        let now = std::time::UNIX_EPOCH
            .elapsed()
            .map_or(0.0, |d| d.as_secs_f64());
        assert!(p.validate(now + 1.0).is_ok());
        valid += 1;
    }) else {
        return;
    };
    // Every element (a line, or a Legion array element: `1,` is one) takes
    // at least one byte of the file. (The first campaign's bound, 64 per
    // line, was wrong: a Legion array may hold any number per line.)
    assert!(valid + report.invalid_total <= content.len() as u64 + 1);
    assert_eq!(report.accepted, 0);
}

/// HTTP API inputs: the `POST /v1/patterns` body, the query strings of
/// `GET /v1/patterns` and `/v1/recommendation`, `scope`, and the config file.
pub fn api_body(data: &[u8]) {
    const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
    match parse_pattern_body(data, PEER, NOW) {
        Ok(ps) => {
            assert!(!ps.is_empty());
            for p in ps {
                assert!(p.validate(NOW).is_ok());
            }
        }
        Err(e) => assert!(e.field.is_some() && !e.error.is_empty()),
    }
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(String, String)> = text
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.to_string(), String::new()),
        })
        .collect();
    if let Ok((f, limit)) = parse_pattern_query(&pairs) {
        assert!(limit >= 1);
        assert!(f.validate().is_ok());
    }
    if let Ok((atp, strategy)) = parse_recommendation_query(&pairs) {
        assert!(atp.is_finite() && atp >= 0.0);
        assert!(!strategy.is_empty());
    }
    let _ = parse_scope(Some(&text));
    if let Ok(c) = Config::from_toml_str(&text) {
        let _ = c.validate();
    }
}
