//! Node events: what `GET /v1/events` streams (server-sent events) and what
//! the running node broadcasts on its `tokio::sync::broadcast` channel.
//!
//! The serialised form is internally tagged: `{"type": "pattern_accepted", ...}`.
//! The SSE layer uses [`NodeEvent::kind`] as the `event:` name and the full
//! JSON object as `data:`.

use metamesh_protocol::Depth;
use serde::Serialize;

/// Capacity of the node's event broadcast channel. Slow subscribers lag (and
/// skip ahead) rather than blocking the node.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NodeEvent {
    /// A pattern was stored: recorded here (`local`) or received and accepted.
    PatternAccepted {
        origin: String,
        seq: u64,
        hash: String,
        depth: Depth,
        local: bool,
    },
    /// A received pattern (or batch) was rejected by the validation pipeline.
    PatternRejected {
        peer: Option<String>,
        reason: String,
    },
    /// The recommended depth or its confidence changed.
    InsightChanged {
        scope: String,
        optimal_quality_depth: Option<Depth>,
        confidence: f64,
    },
    PeerJoined {
        peer: String,
    },
    PeerLeft {
        peer: String,
    },
}

impl NodeEvent {
    /// The `type` tag, used as the SSE `event:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeEvent::PatternAccepted { .. } => "pattern_accepted",
            NodeEvent::PatternRejected { .. } => "pattern_rejected",
            NodeEvent::InsightChanged { .. } => "insight_changed",
            NodeEvent::PeerJoined { .. } => "peer_joined",
            NodeEvent::PeerLeft { .. } => "peer_left",
        }
    }
}

/// A new bounded event channel (sender; subscribe with `sender.subscribe()`).
pub fn channel() -> tokio::sync::broadcast::Sender<NodeEvent> {
    tokio::sync::broadcast::channel(EVENT_CHANNEL_CAPACITY).0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_snake_case_type_tag() {
        let e = NodeEvent::PatternAccepted {
            origin: "12D3".into(),
            seq: 7,
            hash: "ab".into(),
            depth: Depth::Deep,
            local: true,
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "pattern_accepted");
        assert_eq!(v["depth"], "deep");
        assert_eq!(v["seq"], 7);
        assert_eq!(e.kind(), "pattern_accepted");
        let v = serde_json::to_value(NodeEvent::PeerLeft { peer: "p".into() }).unwrap();
        assert_eq!(v["type"], "peer_left");
        assert_eq!(
            NodeEvent::InsightChanged {
                scope: "local".into(),
                optimal_quality_depth: None,
                confidence: 0.5
            }
            .kind(),
            "insight_changed"
        );
    }
}
