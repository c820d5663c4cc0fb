//! `insights` and `recommend`: what the patterns teach, from the node or
//! computed here from the store.

use anyhow::{anyhow, Result};
use metamesh_protocol::InsightsDocument;

use super::{connect, out, out_json, scope_str, unix_now, Target};
use crate::api::{KnowledgeTransfer, Recommendation};
use crate::cli::exit::{coded, USAGE};
use crate::cli::{trust, GlobalArgs, InsightsArgs, RecommendArgs, Scope};
use crate::learning;

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
