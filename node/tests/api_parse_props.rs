#![allow(clippy::unwrap_used)]
//! Property tests: the API's request parsers never panic on arbitrary input,
//! every error names a field, and what they accept is valid.

use metamesh_node::api::*;
use metamesh_node::config::Config;
use proptest::prelude::*;
use serde_json::{json, Value};

const NOW: f64 = 1.8e9;
const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<f64>().prop_map(|f| json!(f)),
        any::<i64>().prop_map(|i| json!(i)),
        "[a-z_]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("standard"),
            Just("DEEP"),
            Just("minimal"),
            Just("quality_achieved")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("depth_used".to_string()),
                    Just("quality_achieved".to_string()),
                    Just("success".to_string()),
                    Just("atp_before".to_string()),
                    Just("atp_after".to_string()),
                    Just("timestamp".to_string()),
                    Just("context".to_string()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A pattern object with some fields possibly perturbed.
fn arb_patternish() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            Just(json!("standard")),
            Just(json!("bogus")),
            Just(json!(3))
        ]),
        prop::option::of(prop_oneof![
            (-1.0f64..2.0).prop_map(|q| json!(q)),
            Just(json!("x"))
        ]),
        prop::option::of(any::<bool>()),
        prop::option::of(-2.0e9f64..2.0e9),
        prop::option::of(0.0f64..3.0e9),
    )
        .prop_map(|(d, q, s, atp, ts)| {
            let mut m = serde_json::Map::new();
            if let Some(d) = d {
                m.insert("depth_used".into(), d);
            }
            if let Some(q) = q {
                m.insert("quality_achieved".into(), q);
            }
            if let Some(s) = s {
                m.insert("success".into(), json!(s));
            }
            if let Some(a) = atp {
                m.insert("atp_before".into(), json!(a));
                m.insert("atp_after".into(), json!(0.0));
            }
            if let Some(t) = ts {
                m.insert("timestamp".into(), json!(t));
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn pattern_body_parser_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = parse_pattern_body(&bytes, PEER, NOW) {
            prop_assert!(e.field.is_some());
            prop_assert!(e.status == 400 || e.status == 422 || e.status == 413);
        }
    }

    #[test]
    fn pattern_body_parser_on_json(v in arb_json()) {
        let text = v.to_string();
        match parse_pattern_body(text.as_bytes(), PEER, NOW) {
            Ok(ps) => {
                prop_assert!(!ps.is_empty());
                for p in ps {
                    prop_assert!(p.validate(NOW).is_ok());
                }
            }
            Err(e) => prop_assert!(e.field.is_some() && !e.error.is_empty()),
        }
    }

    #[test]
    fn array_errors_name_the_failing_index(items in prop::collection::vec(arb_patternish(), 1..8)) {
        let body = Value::Array(items.clone()).to_string();
        match parse_pattern_body(body.as_bytes(), PEER, NOW) {
            Ok(ps) => prop_assert_eq!(ps.len(), items.len()),
            Err(e) => {
                let field = e.field.unwrap();
                prop_assert!(field.starts_with('['), "{}", field);
                let idx: usize = field[1..field.find(']').unwrap()].parse().unwrap();
                // Every element before the failing one parses on its own.
                for ok_item in &items[..idx] {
                    prop_assert!(parse_pattern_body(ok_item.to_string().as_bytes(), PEER, NOW).is_ok());
                }
                prop_assert!(parse_pattern_body(items[idx].to_string().as_bytes(), PEER, NOW).is_err());
            }
        }
    }

    #[test]
    fn query_parsers_never_panic(pairs in prop::collection::vec(
        (prop_oneof![Just("depths"), Just("min_quality"), Just("min_timestamp"), Just("max_count"), Just("atp"), Just("strategy"), Just("scope")],
         "[ -~]{0,16}"),
        0..5,
    )) {
        let pairs: Vec<(String, String)> = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        match parse_pattern_query(&pairs) {
            Ok((f, limit)) => {
                prop_assert!((1..=MAX_QUERY_COUNT as usize).contains(&limit));
                prop_assert!(f.validate().is_ok());
            }
            Err(e) => prop_assert_eq!(e.status, 400),
        }
        if let Ok((atp, strategy)) = parse_recommendation_query(&pairs) {
            prop_assert!(atp.is_finite() && atp >= 0.0);
            prop_assert!(!strategy.is_empty() && strategy.len() <= 32);
        }
    }

    #[test]
    fn config_parser_never_panics(text in "[ -~\n]{0,200}") {
        if let Ok(c) = Config::from_toml_str(&text) {
            let _ = c.validate();
        }
    }
}
