//! Fixtures shared by the crate's unit tests.
#![allow(clippy::unwrap_used)]

use metamesh_protocol::schema::Pattern;

/// A valid pattern whose id is `p{i}`.
pub(crate) fn pattern(i: u64) -> Pattern {
    Pattern::from_json_value(
        serde_json::json!({
            "pattern_id": format!("p{i}"), "node_id": "n", "timestamp": 1_700_000_000.0,
            "platform": "t", "depth_used": "deep", "mode": "m",
            "quality_achieved": 0.5, "success": true, "atp_before": 1.0, "atp_after": 0.5
        }),
        None,
    )
    .unwrap()
}
