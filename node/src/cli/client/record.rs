//! `record`: one local pattern, through the node or into the store.

use anyhow::{anyhow, Result};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use metamesh_protocol::schema::DEFAULT_MODE;
use metamesh_protocol::{Depth, Pattern};

use super::{connect, out, out_json, unix_now, Target, RECORD_PLATFORM};
use crate::api::SubmittedPattern;
use crate::cli::exit::{coded, USAGE};
use crate::cli::{GlobalArgs, RecordArgs};
use crate::datadir::DataDir;

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
        assert_eq!(crate::cli::exit::code_of(&e), USAGE);
        a.atp_before = -10.0;
        assert_eq!(record_pattern(&a, &me, 1.8e9).unwrap().atp_before, -10.0);
    }
}
