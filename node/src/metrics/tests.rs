//! Tests of the counters, gauges, labels and the snapshot.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn counters_appear_in_text_and_snapshot() {
    let m = Metrics::new();
    m.pattern_recorded();
    m.pattern_recorded();
    m.pattern_shared(5);
    m.pattern_received();
    m.pattern_accepted();
    m.pattern_rejected("bad_signature");
    m.pattern_rejected("bad_signature");
    m.pattern_rejected("schema");
    m.request_served();
    m.bytes_sent(100);
    m.bytes_received(40);
    m.set_peers(3);
    m.set_reputation_classes(&[("trusted", 1), ("neutral", 2)]);
    m.recommendation_followed(true);
    m.recommendation_followed(true);
    m.recommendation_followed(false);
    m.outcome_quality(true, 0.9);
    m.outcome_quality(true, 0.7);
    m.outcome_quality(false, 0.4);
    m.outcome_quality(false, f64::NAN);

    let text = m.encode();
    for needle in [
        "metamesh_patterns_recorded_total 2",
        "metamesh_patterns_shared_total 5",
        "metamesh_patterns_received_total 1",
        "metamesh_patterns_accepted_total 1",
        "metamesh_patterns_rejected_total{reason=\"bad_signature\"} 2",
        "metamesh_patterns_rejected_total{reason=\"schema\"} 1",
        "metamesh_requests_served_total 1",
        "metamesh_bytes_sent_total 100",
        "metamesh_bytes_received_total 40",
        "metamesh_peers 3",
        "metamesh_reputation_peers{class=\"neutral\"} 2",
        "metamesh_recommendations_total{followed=\"true\"} 2",
        "metamesh_outcome_quality_count_total{advice=\"followed\"} 2",
        "# EOF",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }

    let s = m.snapshot();
    assert_eq!(s.patterns_recorded, 2);
    assert_eq!(s.patterns_rejected, 3);
    assert_eq!(s.rejected_by_reason["bad_signature"], 2);
    assert_eq!(s.peers, 3);
    assert_eq!(s.reputation_classes["trusted"], 1);
    assert_eq!(s.recommendations_followed, 2);
    assert_eq!(s.recommendations_explored, 1);
    assert!((s.adoption_rate.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert!((s.effectiveness_followed.unwrap() - 0.8).abs() < 1e-12);
    assert!((s.effectiveness_explored.unwrap() - 0.4).abs() < 1e-12);
    assert_eq!(s.outcome_quality_explored_count, 1);
}

#[test]
fn reputation_classes_reset_when_absent() {
    let m = Metrics::new();
    let s = m.snapshot();
    assert_eq!(s.reputation_classes.len(), 5, "all classes present at 0");
    assert_eq!(s.reputation_classes["neutral"], 0);
    assert!(m
        .encode()
        .contains("metamesh_reputation_peers{class=\"untrusted\"} 0"));
    m.set_reputation_classes(&[("good", 4)]);
    m.set_reputation_classes(&[("poor", 1)]);
    let s = m.snapshot();
    assert_eq!(s.reputation_classes["good"], 0);
    assert_eq!(s.reputation_classes["poor"], 1);
}

#[test]
fn rejection_reasons_are_bounded_and_cleaned() {
    let m = Metrics::new();
    for i in 0..200 {
        m.pattern_rejected(&format!("reason-{i}"));
    }
    m.pattern_rejected("with \"quotes\"\n");
    let s = m.snapshot();
    assert!(s.rejected_by_reason.len() <= MAX_LABEL_VALUES);
    assert_eq!(s.patterns_rejected, 201);
    assert!(s.rejected_by_reason[OTHER] > 0);
    assert!(!m.encode().contains("\\\""));
}

#[test]
fn gauges_for_stored_patterns_and_belief() {
    use metamesh_protocol::Depth;
    let m = Metrics::new();
    m.set_patterns_stored(10_000);
    m.set_prob_best(&[
        (Depth::Deep, 0.75),
        (Depth::Light, 0.25),
        (Depth::Minimal, f64::NAN),
    ]);
    m.set_prob_best(&[(Depth::Deep, 0.8)]);
    let text = m.encode();
    for needle in [
        "metamesh_patterns_stored 10000",
        "metamesh_best_depth_confidence{depth=\"deep\"} 0.8",
        "metamesh_best_depth_confidence{depth=\"light\"} 0.25",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    assert!(!text.contains("depth=\"minimal\""), "{text}");
}

#[test]
fn empty_snapshot_has_no_rates() {
    let s = Metrics::new().snapshot();
    assert_eq!(s.adoption_rate, None);
    assert_eq!(s.effectiveness_followed, None);
}
