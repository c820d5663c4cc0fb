//! Patterns and keys for tests and the simulator.

use libp2p_identity::Keypair;
use metamesh_protocol::{Depth, Pattern};

/// A fixed "now" (unix seconds) after every sample timestamp.
pub const NOW: f64 = 1_800_000_000.0;

/// A valid pattern of quality `q`.
pub fn pattern(q: f64) -> Pattern {
    Pattern {
        pattern_id: format!("p-{q}"),
        node_id: "sim".into(),
        timestamp: 1_704_902_400.0,
        platform: "sim".into(),
        depth_used: Depth::Standard,
        mode: "general".into(),
        quality_achieved: q,
        success: q > 0.5,
        atp_before: 100.0,
        atp_after: 90.0,
        reputation_before: None,
        reputation_after: None,
        context: None,
        pattern_type: None,
        cogitation_mode: None,
        outcome_confidence: None,
        verification_quality_score: None,
        cognitive_depth: None,
        network_health: None,
        federation_context: None,
    }
}

/// A deterministic ed25519 key from a number.
pub fn key(i: u64) -> Keypair {
    let mut seed = [0x5au8; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    // 32 bytes are always a valid ed25519 secret; fall back to a fixed key.
    Keypair::ed25519_from_bytes(seed).unwrap_or_else(|_| Keypair::generate_ed25519())
}
