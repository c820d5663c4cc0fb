//! The unified pattern schema (protocol document, "Unified Pattern Schema"),
//! with the Legion and Thor extensions and the task card's `pattern_type`.
//!
//! Field names are exactly the document's. Every value is range-checked by
//! [`Pattern::validate`]; errors name the field. [`Pattern::from_json_value`]
//! is the lenient entry point for files: depth names in any case, and fields
//! this schema does not know are moved into `context` (never silently dropped).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Longest `pattern_id` / `node_id`, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Longest `platform`, `mode`, `cogitation_mode`, `cognitive_depth`, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Largest `context` / `federation_context`, as compact JSON, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 4096;
/// Deepest nesting of `context` / `federation_context`.
pub const MAX_CONTEXT_DEPTH: usize = 8;
/// How far in the future a timestamp may lie, in seconds (clock skew).
pub const MAX_FUTURE_SKEW_SECS: f64 = 300.0;
/// Largest absolute ATP value.
pub const MAX_ATP: f64 = 1.0e9;
/// Largest absolute reputation value.
pub const MAX_REPUTATION: f64 = 1.0e6;

/// Default `platform` for input that omits it (the protocol document's own
/// example lines do).
pub const DEFAULT_PLATFORM: &str = "unknown";
/// Default `mode` for input that omits it.
pub const DEFAULT_MODE: &str = "general";

/// Verification depth, cheapest first. Ordering follows cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Depth {
    Minimal,
    Light,
    Standard,
    Deep,
    Thorough,
}

impl Depth {
    pub const ALL: [Depth; 5] = [
        Depth::Minimal,
        Depth::Light,
        Depth::Standard,
        Depth::Deep,
        Depth::Thorough,
    ];
    pub const COUNT: usize = 5;

    pub fn as_str(self) -> &'static str {
        match self {
            Depth::Minimal => "minimal",
            Depth::Light => "light",
            Depth::Standard => "standard",
            Depth::Deep => "deep",
            Depth::Thorough => "thorough",
        }
    }

    /// Position in [`Depth::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_index(i: usize) -> Option<Depth> {
        Depth::ALL.get(i).copied()
    }
}

impl fmt::Display for Depth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Depth {
    type Err = SchemaError;
    /// Case-insensitive: `DEEP`, `Deep` and `deep` are the same depth.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Depth::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                SchemaError::new(
                    "depth_used",
                    format!(
                        "unknown depth {:?} (expected minimal, light, standard, deep or thorough)",
                        truncate(s, 32)
                    ),
                )
            })
    }
}

impl Serialize for Depth {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Depth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Depth;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a depth name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Depth, E> {
                v.parse().map_err(|e: SchemaError| E::custom(e.reason))
            }
        }
        d.deserialize_str(V)
    }
}

/// The task card's pattern taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PatternType {
    Algorithmic,
    Behavioral,
    Resource,
}

/// One recorded outcome: what happened when a system chose a depth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    pub pattern_id: String,
    pub node_id: String,
    pub timestamp: f64,
    pub platform: String,
    pub depth_used: Depth,
    pub mode: String,
    pub quality_achieved: f64,
    pub success: bool,
    pub atp_before: f64,
    pub atp_after: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation_before: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reputation_after: Option<f64>,
    /// Platform-specific object. `None` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_type: Option<PatternType>,
    // Legion extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cogitation_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_quality_score: Option<f64>,
    // Thor extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cognitive_depth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_health: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federation_context: Option<Value>,
}

/// A schema violation: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SchemaError {
    pub field: String,
    pub reason: String,
}

impl SchemaError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SchemaError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn check_string(field: &str, v: &str, max: usize, allow_empty: bool) -> Result<(), SchemaError> {
    if !allow_empty && v.trim().is_empty() {
        return Err(SchemaError::new(field, "must not be empty"));
    }
    if v.len() > max {
        return Err(SchemaError::new(
            field,
            format!("is {} bytes long; the limit is {max}", v.len()),
        ));
    }
    if v.chars().any(|c| c.is_control()) {
        return Err(SchemaError::new(field, "contains control characters"));
    }
    Ok(())
}

fn check_finite(field: &str, v: f64, lo: f64, hi: f64) -> Result<(), SchemaError> {
    if !v.is_finite() {
        return Err(SchemaError::new(
            field,
            format!("must be a finite number, got {v}"),
        ));
    }
    if v < lo || v > hi {
        return Err(SchemaError::new(
            field,
            format!("{v} is outside [{lo}, {hi}]"),
        ));
    }
    Ok(())
}

fn json_depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn check_object(field: &str, v: &Value) -> Result<(), SchemaError> {
    if !v.is_object() {
        return Err(SchemaError::new(field, "must be a JSON object"));
    }
    if json_depth(v) > MAX_CONTEXT_DEPTH {
        return Err(SchemaError::new(
            field,
            format!("is nested deeper than {MAX_CONTEXT_DEPTH} levels"),
        ));
    }
    // Counting bytes by serializing is exact and bounded: the depth check above
    // and the decoder's own input bound keep this cheap.
    let len = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if len > MAX_CONTEXT_BYTES {
        return Err(SchemaError::new(
            field,
            format!("is {len} bytes as JSON; the limit is {MAX_CONTEXT_BYTES}"),
        ));
    }
    Ok(())
}

impl Pattern {
    /// Check every field. `now` is unix seconds (the caller's clock): a
    /// timestamp more than [`MAX_FUTURE_SKEW_SECS`] ahead of it is an error.
    pub fn validate(&self, now: f64) -> Result<(), SchemaError> {
        check_string("pattern_id", &self.pattern_id, MAX_ID_LEN, false)?;
        check_string("node_id", &self.node_id, MAX_ID_LEN, false)?;
        check_string("platform", &self.platform, MAX_NAME_LEN, false)?;
        check_string("mode", &self.mode, MAX_NAME_LEN, false)?;
        if !self.timestamp.is_finite() || self.timestamp < 0.0 {
            return Err(SchemaError::new(
                "timestamp",
                format!(
                    "must be a finite, non-negative unix time, got {}",
                    self.timestamp
                ),
            ));
        }
        if self.timestamp > now + MAX_FUTURE_SKEW_SECS {
            return Err(SchemaError::new(
                "timestamp",
                format!(
                    "{} is more than {MAX_FUTURE_SKEW_SECS} s in the future",
                    self.timestamp
                ),
            ));
        }
        check_finite("quality_achieved", self.quality_achieved, 0.0, 1.0)?;
        check_finite("atp_before", self.atp_before, -MAX_ATP, MAX_ATP)?;
        check_finite("atp_after", self.atp_after, -MAX_ATP, MAX_ATP)?;
        if let Some(v) = self.reputation_before {
            check_finite("reputation_before", v, -MAX_REPUTATION, MAX_REPUTATION)?;
        }
        if let Some(v) = self.reputation_after {
            check_finite("reputation_after", v, -MAX_REPUTATION, MAX_REPUTATION)?;
        }
        if let Some(v) = &self.context {
            check_object("context", v)?;
        }
        if let Some(v) = &self.cogitation_mode {
            check_string("cogitation_mode", v, MAX_NAME_LEN, false)?;
        }
        if let Some(v) = self.outcome_confidence {
            check_finite("outcome_confidence", v, 0.0, 1.0)?;
        }
        if let Some(v) = self.verification_quality_score {
            check_finite("verification_quality_score", v, -MAX_ATP, MAX_ATP)?;
        }
        if let Some(v) = &self.cognitive_depth {
            check_string("cognitive_depth", v, MAX_NAME_LEN, false)?;
        }
        if let Some(v) = self.network_health {
            check_finite("network_health", v, 0.0, 1.0)?;
        }
        if let Some(v) = &self.federation_context {
            check_object("federation_context", v)?;
        }
        Ok(())
    }

    /// ATP spent on this outcome (`atp_before - atp_after`).
    pub fn atp_cost(&self) -> f64 {
        self.atp_before - self.atp_after
    }

    /// Lenient parse of one JSON object from a file or an API body.
    ///
    /// - `depth_used` in any case;
    /// - `platform` defaults to [`DEFAULT_PLATFORM`] and `mode` to
    ///   `cogitation_mode` or [`DEFAULT_MODE`] when absent;
    /// - `outcome_quality` (Legion) is accepted for `quality_achieved`;
    /// - `node_id` defaults to `default_node_id` when absent;
    /// - fields the schema does not know are moved into `context` under their
    ///   own names (an existing `context` key wins; a clash is an error);
    /// - wrong types are errors naming the field.
    ///
    /// Range checks are [`Pattern::validate`]'s job; call it afterwards.
    pub fn from_json_value(
        v: Value,
        default_node_id: Option<&str>,
    ) -> Result<Pattern, SchemaError> {
        let Value::Object(mut m) = v else {
            return Err(SchemaError::new("pattern", "must be a JSON object"));
        };
        if !m.contains_key("quality_achieved") {
            if let Some(q) = m.remove("outcome_quality") {
                m.insert("quality_achieved".into(), q);
            }
        }
        let pattern_id = take_string(&mut m, "pattern_id")?
            .ok_or_else(|| SchemaError::new("pattern_id", "is required"))?;
        let node_id = match take_string(&mut m, "node_id")? {
            Some(n) => n,
            None => default_node_id
                .map(str::to_string)
                .ok_or_else(|| SchemaError::new("node_id", "is required"))?,
        };
        let timestamp = take_f64(&mut m, "timestamp")?
            .ok_or_else(|| SchemaError::new("timestamp", "is required"))?;
        let platform = take_string(&mut m, "platform")?.unwrap_or_else(|| DEFAULT_PLATFORM.into());
        let depth_used: Depth = take_string(&mut m, "depth_used")?
            .ok_or_else(|| SchemaError::new("depth_used", "is required"))?
            .parse()?;
        let cogitation_mode = take_string(&mut m, "cogitation_mode")?;
        let mode = take_string(&mut m, "mode")?
            .or_else(|| cogitation_mode.clone())
            .unwrap_or_else(|| DEFAULT_MODE.into());
        let quality_achieved = take_f64(&mut m, "quality_achieved")?
            .ok_or_else(|| SchemaError::new("quality_achieved", "is required"))?;
        let success = match m.remove("success") {
            Some(Value::Bool(b)) => b,
            Some(_) => return Err(SchemaError::new("success", "must be true or false")),
            None => return Err(SchemaError::new("success", "is required")),
        };
        let atp_before = take_f64(&mut m, "atp_before")?
            .ok_or_else(|| SchemaError::new("atp_before", "is required"))?;
        let atp_after = take_f64(&mut m, "atp_after")?
            .ok_or_else(|| SchemaError::new("atp_after", "is required"))?;
        let reputation_before = take_f64(&mut m, "reputation_before")?;
        let reputation_after = take_f64(&mut m, "reputation_after")?;
        let mut context = match m.remove("context") {
            None | Some(Value::Null) => None,
            Some(o @ Value::Object(_)) => Some(o),
            Some(_) => return Err(SchemaError::new("context", "must be a JSON object")),
        };
        let pattern_type = match m.remove("pattern_type") {
            None | Some(Value::Null) => None,
            Some(t) => Some(serde_json::from_value(t).map_err(|_| {
                SchemaError::new(
                    "pattern_type",
                    "must be one of algorithmic, behavioral, resource",
                )
            })?),
        };
        let outcome_confidence = take_f64(&mut m, "outcome_confidence")?;
        let verification_quality_score = take_f64(&mut m, "verification_quality_score")?;
        let cognitive_depth = take_string(&mut m, "cognitive_depth")?;
        let network_health = take_f64(&mut m, "network_health")?;
        let federation_context = match m.remove("federation_context") {
            None | Some(Value::Null) => None,
            Some(o @ Value::Object(_)) => Some(o),
            Some(_) => {
                return Err(SchemaError::new(
                    "federation_context",
                    "must be a JSON object",
                ))
            }
        };
        // Whatever is left is unknown to the schema: keep it in `context`.
        m.remove("signature"); // the seed's response carries it inline; we sign envelopes instead
        if !m.is_empty() {
            let ctx = context.get_or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(c) = ctx {
                for (k, v) in m {
                    if c.contains_key(&k) {
                        return Err(SchemaError::new(
                            k.clone(),
                            "unknown field clashes with a context key of the same name",
                        ));
                    }
                    c.insert(k, v);
                }
            }
        }
        Ok(Pattern {
            pattern_id,
            node_id,
            timestamp,
            platform,
            depth_used,
            mode,
            quality_achieved,
            success,
            atp_before,
            atp_after,
            reputation_before,
            reputation_after,
            context,
            pattern_type,
            cogitation_mode,
            outcome_confidence,
            verification_quality_score,
            cognitive_depth,
            network_health,
            federation_context,
        })
    }
}

fn take_string(m: &mut Map<String, Value>, field: &str) -> Result<Option<String>, SchemaError> {
    match m.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(SchemaError::new(field, "must be a string")),
    }
}

fn take_f64(m: &mut Map<String, Value>, field: &str) -> Result<Option<f64>, SchemaError> {
    match m.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| SchemaError::new(field, "is not representable as a float")),
        Some(_) => Err(SchemaError::new(field, "must be a number")),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(node: &str, depth: Depth, q: f64) -> Pattern {
        Pattern {
            pattern_id: format!("{node}-{depth}-{q}"),
            node_id: node.into(),
            timestamp: 1_704_902_400.0,
            platform: "test".into(),
            depth_used: depth,
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

    const NOW: f64 = 1_800_000_000.0;

    #[test]
    fn seed_example_lines_parse_with_defaults() {
        let l1 = r#"{"pattern_id":"p1","node_id":"legion","timestamp":1704902400.0,"depth_used":"standard","quality_achieved":0.45,"success":true,"atp_before":100.0,"atp_after":95.0}"#;
        let l2 = r#"{"pattern_id":"p2","node_id":"thor","timestamp":1704902460.0,"depth_used":"deep","quality_achieved":0.52,"success":true,"atp_before":120.0,"atp_after":110.0}"#;
        for l in [l1, l2] {
            let p = Pattern::from_json_value(serde_json::from_str(l).unwrap(), None).unwrap();
            p.validate(NOW).unwrap();
            assert_eq!(p.platform, DEFAULT_PLATFORM);
            assert_eq!(p.mode, DEFAULT_MODE);
        }
    }

    #[test]
    fn depth_is_case_insensitive() {
        assert_eq!("DEEP".parse::<Depth>().unwrap(), Depth::Deep);
        assert_eq!("Thorough".parse::<Depth>().unwrap(), Depth::Thorough);
        let e = "medium".parse::<Depth>().unwrap_err();
        assert_eq!(e.field, "depth_used");
        let d: Depth = serde_json::from_str("\"LIGHT\"").unwrap();
        assert_eq!(d, Depth::Light);
    }

    #[test]
    fn range_errors_name_the_field() {
        let mut p = sample("n", Depth::Deep, 0.5);
        p.quality_achieved = 1.7;
        assert_eq!(p.validate(NOW).unwrap_err().field, "quality_achieved");
        p.quality_achieved = f64::NAN;
        assert_eq!(p.validate(NOW).unwrap_err().field, "quality_achieved");
        let mut p = sample("n", Depth::Deep, 0.5);
        p.atp_after = f64::INFINITY;
        assert_eq!(p.validate(NOW).unwrap_err().field, "atp_after");
        let mut p = sample("n", Depth::Deep, 0.5);
        p.timestamp = NOW + 301.0;
        assert_eq!(p.validate(NOW).unwrap_err().field, "timestamp");
        p.timestamp = NOW + 299.0;
        p.validate(NOW).unwrap();
        let mut p = sample("n", Depth::Deep, 0.5);
        p.pattern_id = String::new();
        assert_eq!(p.validate(NOW).unwrap_err().field, "pattern_id");
        let mut p = sample("n", Depth::Deep, 0.5);
        p.node_id = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(p.validate(NOW).unwrap_err().field, "node_id");
        let mut p = sample("n", Depth::Deep, 0.5);
        p.context = Some(serde_json::json!({"big": "y".repeat(MAX_CONTEXT_BYTES)}));
        assert_eq!(p.validate(NOW).unwrap_err().field, "context");
        let mut p = sample("n", Depth::Deep, 0.5);
        p.context = Some(serde_json::json!([1, 2]));
        assert_eq!(p.validate(NOW).unwrap_err().field, "context");
        let mut p = sample("n", Depth::Deep, 0.5);
        p.network_health = Some(-0.1);
        assert_eq!(p.validate(NOW).unwrap_err().field, "network_health");
    }

    #[test]
    fn unknown_fields_move_into_context_and_legion_names_map() {
        let v = serde_json::json!({
            "pattern_id": "legion-1-0", "cogitation_mode": "verifying", "depth_used": "light",
            "outcome_quality": 0.25, "outcome_confidence": 0.47, "atp_before": 47.5,
            "atp_after": 43.1, "success": false, "timestamp": 1767225600.0, "extra_thing": 3
        });
        let p = Pattern::from_json_value(v, Some("legion")).unwrap();
        p.validate(NOW).unwrap();
        assert_eq!(p.node_id, "legion");
        assert_eq!(p.quality_achieved, 0.25);
        assert_eq!(p.mode, "verifying");
        assert_eq!(p.context.unwrap()["extra_thing"], 3);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let v = serde_json::json!({"pattern_id": "p", "node_id": "n", "timestamp": "yesterday"});
        assert_eq!(
            Pattern::from_json_value(v, None).unwrap_err().field,
            "timestamp"
        );
        let v = serde_json::json!({"pattern_id": "p", "node_id": "n", "timestamp": 1.0,
            "depth_used": "deep", "quality_achieved": 0.5, "success": "yes"});
        assert_eq!(
            Pattern::from_json_value(v, None).unwrap_err().field,
            "success"
        );
    }

    #[test]
    fn strict_serde_round_trip() {
        let mut p = sample("n", Depth::Standard, 0.42);
        p.context = Some(serde_json::json!({"a": {"b": [1, 2.5, "c"]}}));
        p.pattern_type = Some(PatternType::Resource);
        let s = serde_json::to_string(&p).unwrap();
        let back: Pattern = serde_json::from_str(&s).unwrap();
        assert_eq!(p, back);
    }
}
