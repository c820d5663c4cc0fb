//! Tests of the configuration layers and validation.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use libp2p::PeerId;

use super::*;
use crate::cli::RunArgs;
use crate::datadir::DataDir;

const PEER_A: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

fn peer() -> String {
    PeerId::random().to_string()
}

fn no_args() -> RunArgs {
    RunArgs {
        listen: vec![],
        bootstrap: vec![],
        api: None,
        mesh: None,
        parent: None,
        json: false,
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn invalid_key(cfg: &Config) -> String {
    match cfg.validate() {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn defaults_are_valid_and_match_the_interface() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.mesh, "default");
    assert_eq!(c.api, "127.0.0.1:0");
    assert!(c.sharing.enabled);
    assert!(c.tree.enabled, "records go over the tree by default");
    assert_eq!(c.sharing.announce_interval_secs, 10);
    assert_eq!(c.limits.max_patterns_per_response, 256);
    assert_eq!(c.limits.max_response_bytes, 1 << 20);
    assert_eq!(c.store.cache_mb, 64);
    assert_eq!(c.listen_addrs().len(), 2);
    // An empty file is the defaults.
    assert_eq!(Config::from_toml_str("").unwrap(), c);
    // The defaults round-trip through TOML.
    assert_eq!(Config::from_toml_str(&c.to_toml()).unwrap(), c);
}

#[test]
fn example_file_parses_to_the_defaults() {
    let text = include_str!("../../../metamesh.example.toml");
    let c = Config::from_toml_str(text).unwrap();
    c.validate().unwrap();
    assert_eq!(c, Config::default());
}

#[test]
fn docs_example_is_valid() {
    let md = include_str!("../../../docs/config.md");
    let start = md.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + md[start..].find("```").unwrap();
    let c = Config::from_toml_str(&md[start..end]).unwrap();
    c.validate().unwrap();
    assert_eq!(c.trusted_peers().len(), 1);
    assert_eq!(
        c.fixed_scores().values().copied().collect::<Vec<_>>(),
        vec![-50.0]
    );
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let e = Config::from_toml_str("mesh = \"x\"\nbogus_key = 1\n").unwrap_err();
    assert!(e.contains("bogus_key"), "{e}");
    let e = Config::from_toml_str("[sharing]\nenabeld = false\n").unwrap_err();
    assert!(e.contains("enabeld"), "{e}");
    let e = Config::from_toml_str("[nosuchsection]\n").unwrap_err();
    assert!(e.contains("nosuchsection"), "{e}");
    let e = Config::from_toml_str("[limits]\nmax_connections = \"many\"\n").unwrap_err();
    assert!(e.contains("max_connections"), "{e}");
}

#[test]
fn file_layer_applies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(
        &path,
        format!(
            "mesh = \"lab\"\n[sharing]\nenabled = false\n[trust]\ntrusted = [\"{PEER_A}\"]\n[trust.fixed]\n\"{PEER_A}\" = 30.0\n"
        ),
    )
    .unwrap();
    let c = Config::load_with_env(Some(&path), &no_args(), &[]).unwrap();
    assert_eq!(c.mesh, "lab");
    assert!(!c.sharing.enabled);
    assert_eq!(c.trusted_peers(), vec![PEER_A.parse::<PeerId>().unwrap()]);
    assert_eq!(
        c.fixed_scores().values().copied().collect::<Vec<_>>(),
        vec![30.0]
    );
    // Untouched keys keep their defaults.
    assert_eq!(c.limits, LimitsConfig::default());
}

#[test]
fn missing_or_bad_file_is_an_error() {
    let e =
        Config::load_with_env(Some(Path::new("/nonexistent/m.toml")), &no_args(), &[]).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, "[limits]\nmax_conections = 3\n").unwrap();
    let e = Config::load_with_env(Some(&path), &no_args(), &[]).unwrap_err();
    assert!(e.to_string().contains("max_conections"), "{e}");
}

#[test]
fn environment_overrides_file_and_flags_override_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, "mesh = \"file\"\napi = \"127.0.0.1:1000\"\n").unwrap();
    let bootstrap = format!("/ip4/127.0.0.1/tcp/4001/p2p/{PEER_A}");
    let e = env(&[
        ("METAMESH_MESH", "envmesh"),
        ("METAMESH_API", "127.0.0.1:2000"),
        ("METAMESH_SHARING_ENABLED", "false"),
        ("METAMESH_SHARING_ANNOUNCE_INTERVAL_SECS", "42"),
        ("METAMESH_LIMITS_MAX_PATTERNS_PER_RESPONSE", "64"),
        ("METAMESH_ACCEPTANCE_MIN_QUALITY", "0.5"),
        ("METAMESH_BOOTSTRAP", &bootstrap),
        ("METAMESH_TRUST_DENIED", &format!("{},{}", peer(), peer())),
        ("METAMESH_TRUST_FIXED", &format!("{PEER_A}=12.5")),
        ("METAMESH_STORE_CACHE_MB", "8"),
        // Not configuration keys: ignored.
        ("METAMESH_DATA_DIR", "/tmp/x"),
        ("METAMESH_UNRELATED", "1"),
        ("OTHER_MESH", "zzz"),
    ]);
    let c = Config::load_with_env(Some(&path), &no_args(), &e).unwrap();
    assert_eq!(c.mesh, "envmesh");
    assert_eq!(c.api, "127.0.0.1:2000");
    assert!(!c.sharing.enabled);
    assert_eq!(c.sharing.announce_interval_secs, 42);
    assert_eq!(c.limits.max_patterns_per_response, 64);
    assert_eq!(c.acceptance.min_quality, 0.5);
    assert_eq!(c.bootstrap, vec![bootstrap.clone()]);
    assert_eq!(c.bootstrap_peers().len(), 1);
    assert_eq!(c.denied_peers().len(), 2);
    assert_eq!(c.fixed_scores().len(), 1);
    assert_eq!(c.store.cache_mb, 8);
    assert_eq!(c.store_cache_bytes(), 8 << 20);

    let args = RunArgs {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: vec![],
        api: Some("127.0.0.1:3000".into()),
        mesh: Some("flagmesh".into()),
        parent: Some(bootstrap.clone()),
        json: false,
    };
    let c = Config::load_with_env(Some(&path), &args, &e).unwrap();
    assert_eq!(c.mesh, "flagmesh");
    assert_eq!(c.api, "127.0.0.1:3000");
    assert_eq!(c.api_addr().unwrap().port(), 3000);
    assert_eq!(c.listen, vec!["/ip4/127.0.0.1/tcp/0".to_string()]);
    assert_eq!(
        c.bootstrap,
        vec![bootstrap],
        "no --bootstrap flag keeps the env list"
    );
    assert!(c.parent_peer().is_some());
}

#[test]
fn promotion_from_file_and_environment() {
    let c = Config::from_toml_str("[promotion]\nmin_confidence = 0.8\n").unwrap();
    assert_eq!(c.promotion.min_confidence, 0.8);
    assert_eq!(c.promotion.min_interval_secs, 60);
    let c = Config::load_with_env(
        None,
        &no_args(),
        &env(&[
            ("METAMESH_PROMOTION_MIN_CONFIDENCE", "0.95"),
            ("METAMESH_PROMOTION_MIN_INTERVAL_SECS", "5"),
        ]),
    )
    .unwrap();
    assert_eq!(c.promotion.min_confidence, 0.95);
    assert_eq!(c.promotion.min_interval_secs, 5);
    assert!(Config::from_toml_str("[promotion]\nmin_confidense = 0.8\n").is_err());
}

#[test]
fn parent_from_environment() {
    let parent = format!("/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{PEER_A}");
    let c = Config::load_with_env(None, &no_args(), &env(&[("METAMESH_PARENT", &parent)])).unwrap();
    assert_eq!(c.parent.as_deref(), Some(parent.as_str()));
    let c = Config::load_with_env(None, &no_args(), &env(&[("METAMESH_MESH", "m")])).unwrap();
    assert_eq!(c.parent, None);
}

#[test]
fn bad_environment_values_name_the_variable() {
    for (var, val) in [
        ("METAMESH_SHARING_ENABLED", "perhaps"),
        ("METAMESH_LIMITS_MAX_CONNECTIONS", "lots"),
        ("METAMESH_ACCEPTANCE_MIN_QUALITY", "high"),
        ("METAMESH_TRUST_FIXED", "novalue"),
    ] {
        let e = Config::load_with_env(None, &no_args(), &env(&[(var, val)])).unwrap_err();
        assert_eq!(e.key(), Some(var), "{e}");
    }
    // A value that parses but is out of range names the key.
    let e = Config::load_with_env(
        None,
        &no_args(),
        &env(&[("METAMESH_LIMITS_MAX_PATTERNS_PER_RESPONSE", "0")]),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "limits.max_patterns_per_response: must be between 1 and 1024 (got 0)"
    );
    // Negative into an unsigned key: a deserialisation error, not a panic.
    assert!(Config::load_with_env(
        None,
        &no_args(),
        &env(&[("METAMESH_LIMITS_MAX_CONNECTIONS", "-1")])
    )
    .is_err());
}

#[test]
fn bad_values_are_named() {
    let mut c = Config::default();
    c.limits.max_patterns_per_response = 5000;
    assert_eq!(invalid_key(&c), "limits.max_patterns_per_response");

    type Mutation = Box<dyn Fn(&mut Config)>;
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|c| c.mesh = "bad mesh!".into()), "mesh"),
        (Box::new(|c| c.mesh = String::new()), "mesh"),
        (Box::new(|c| c.mesh = "a".repeat(65)), "mesh"),
        (
            Box::new(|c| c.listen = vec!["/ip4/1.2.3.4/tcp/1".into(), "not-an-addr".into()]),
            "listen[1]",
        ),
        (
            Box::new(|c| c.bootstrap = vec!["/ip4/1.2.3.4/tcp/1".into()]),
            "bootstrap[0]",
        ),
        (
            Box::new(|c| c.bootstrap = vec!["garbage".into()]),
            "bootstrap[0]",
        ),
        (Box::new(|c| c.api = "localhost".into()), "api"),
        (
            Box::new(|c| c.parent = Some("/ip4/1.2.3.4/tcp/1".into())),
            "parent",
        ),
        (
            Box::new(|c| c.sharing.announce_interval_secs = 0),
            "sharing.announce_interval_secs",
        ),
        (
            Box::new(|c| c.sharing.announce_debounce_ms = 10_000_000),
            "sharing.announce_debounce_ms",
        ),
        (
            Box::new(|c| c.sharing.insight_min_interval_secs = 0),
            "sharing.insight_min_interval_secs",
        ),
        (
            Box::new(|c| c.promotion.min_confidence = 0.2),
            "promotion.min_confidence",
        ),
        (
            Box::new(|c| c.promotion.min_confidence = f64::NAN),
            "promotion.min_confidence",
        ),
        (
            Box::new(|c| c.promotion.min_interval_secs = 0),
            "promotion.min_interval_secs",
        ),
        (
            Box::new(|c| c.limits.max_response_bytes = 10),
            "limits.max_response_bytes",
        ),
        (
            Box::new(|c| c.limits.bytes_per_sec_per_peer = 1),
            "limits.bytes_per_sec_per_peer",
        ),
        (
            Box::new(|c| c.limits.records_per_sec_per_peer = 0),
            "limits.records_per_sec_per_peer",
        ),
        (
            Box::new(|c| c.limits.record_burst_per_peer = 10),
            "limits.record_burst_per_peer",
        ),
        (
            Box::new(|c| c.limits.records_per_origin_per_hour = 0),
            "limits.records_per_origin_per_hour",
        ),
        (
            Box::new(|c| c.limits.max_connections = 0),
            "limits.max_connections",
        ),
        (
            Box::new(|c| c.limits.max_connections_per_peer = 100),
            "limits.max_connections_per_peer",
        ),
        (
            Box::new(|c| c.limits.request_timeout_secs = 0),
            "limits.request_timeout_secs",
        ),
        (
            Box::new(|c| c.acceptance.min_quality = 1.5),
            "acceptance.min_quality",
        ),
        (
            Box::new(|c| c.acceptance.min_quality = f64::NAN),
            "acceptance.min_quality",
        ),
        (
            Box::new(|c| c.acceptance.min_reputation_patterns = f64::INFINITY),
            "acceptance.min_reputation_patterns",
        ),
        (
            Box::new(|c| c.acceptance.min_reputation_insights = -1e9),
            "acceptance.min_reputation_insights",
        ),
        (
            Box::new(|c| c.trust.trusted = vec![peer(), "QmNotAPeer".into()]),
            "trust.trusted[1]",
        ),
        (
            Box::new(|c| c.trust.denied = vec!["nope".into()]),
            "trust.denied[0]",
        ),
        (
            Box::new(|c| {
                c.trust.trusted = vec![PEER_A.into()];
                c.trust.denied = vec![PEER_A.into()];
            }),
            "trust.denied",
        ),
        (
            Box::new(|c| {
                c.trust.fixed.insert("bad".into(), 1.0);
            }),
            "trust.fixed.bad",
        ),
        (
            Box::new(|c| {
                c.trust.fixed.insert(PEER_A.into(), f64::NAN);
            }),
            "trust.fixed.12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        ),
        (Box::new(|c| c.store.cache_mb = 0), "store.cache_mb"),
    ];
    for (mutate, key) in cases {
        let mut c = Config::default();
        mutate(&mut c);
        assert_eq!(invalid_key(&c), key);
    }
}

#[test]
fn valid_non_default_values_pass() {
    let mut c = Config {
        mesh: "Lab-1.test_x".into(),
        listen: vec![
            "/ip6/::1/tcp/4001".into(),
            "/ip4/0.0.0.0/udp/0/quic-v1".into(),
        ],
        bootstrap: vec![format!("/dns4/example.org/tcp/4001/p2p/{PEER_A}")],
        api: "[::1]:8080".into(),
        ..Config::default()
    };
    c.acceptance.min_quality = 1.0;
    c.trust.trusted = vec![peer()];
    c.validate().unwrap();
    assert_eq!(c.listen_addrs().len(), 2);
    assert_eq!(c.bootstrap_peers()[0].0.to_string(), PEER_A);
}

#[test]
fn misspelled_environment_variables_are_reported_with_the_nearest_name() {
    let w = unknown_env_vars(&env(&[
        ("METAMESH_SHARING_ENABELD", "false"),
        ("METAMESH_DATA_DIRR", "/x"),
        ("METAMESH_ZZZZZZZZZZZZZZ", "1"),
        // Valid keys and the CLI's own variables are not reported.
        ("METAMESH_SHARING_ENABLED", "false"),
        ("METAMESH_TRUST_FIXED", ""),
        ("METAMESH_PARENT", ""),
        ("METAMESH_DATA_DIR", "/x"),
        ("METAMESH_CONFIG", "/x"),
    ]));
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(
        w[0].contains("METAMESH_SHARING_ENABELD")
            && w[0].contains("did you mean METAMESH_SHARING_ENABLED?"),
        "{}",
        w[0]
    );
    assert!(w[1].contains("did you mean METAMESH_DATA_DIR?"), "{}", w[1]);
    assert!(
        w[2].contains("METAMESH_ZZZZZZZZZZZZZZ") && !w[2].contains("did you mean"),
        "{}",
        w[2]
    );
    assert!(env_var_names().contains(&"METAMESH_LIMITS_MAX_CONNECTIONS".to_string()));
}

#[test]
fn the_data_dir_config_file_is_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let dd = DataDir::resolve(Some(dir.path().to_path_buf()));
    assert_eq!(config_file(None, &dd), None);
    std::fs::write(dir.path().join(DATA_DIR_CONFIG), "mesh = \"lab\"\n").unwrap();
    assert_eq!(
        config_file(None, &dd),
        Some(dir.path().join(DATA_DIR_CONFIG))
    );
    let other = Path::new("/elsewhere.toml");
    assert_eq!(config_file(Some(other), &dd).as_deref(), Some(other));
}
