//! Node configuration: TOML file, then environment, then `run` flags.
//!
//! Every key has a default, so an empty file (or none) is a valid
//! configuration. Unknown keys are errors at every level (a typo must not be
//! silently ignored). Layers, later wins:
//!
//! 1. the TOML file given with `--config` / `METAMESH_CONFIG`, else
//!    `DIR/config.toml` in the data directory when it exists (every command
//!    reads it, so offline commands weigh peers as the running node does);
//! 2. environment variables `METAMESH_<SECTION>_<KEY>` (e.g.
//!    `METAMESH_SHARING_ENABLED=false`, `METAMESH_LIMITS_MAX_CONNECTIONS=64`)
//!    and `METAMESH_<KEY>` for top-level keys (`METAMESH_MESH=lab`).
//!    Lists are comma-separated (`METAMESH_BOOTSTRAP=/ip4/…,/ip4/…`);
//!    `trust.fixed` is `PEER=SCORE,PEER=SCORE`;
//! 3. the `run` flags `--listen`, `--bootstrap`, `--api`, `--mesh`, `--parent`
//!    (a repeated flag replaces the whole list).
//!
//! A `METAMESH_*` variable that names no key is reported as a warning with
//! the nearest valid name (`METAMESH_SHARING_ENABELD` → did you mean
//! `METAMESH_SHARING_ENABLED`?); [`CLI_ENV_VARS`] are the CLI's own.
//!
//! [`Config::validate`] then checks every value; its errors name the key,
//! e.g. `limits.max_patterns_per_response: must be between 1 and 1024`.
//! See `docs/config.md` and `metamesh.example.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::{Multiaddr, PeerId};
use metamesh_protocol::schema::MAX_REPUTATION;
use serde::{Deserialize, Serialize};

use crate::cli::{GlobalArgs, RunArgs};
use crate::datadir::DataDir;

/// Largest configuration file read.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Bounds on list lengths in the configuration.
pub const MAX_LISTEN_ADDRS: usize = 32;
pub const MAX_BOOTSTRAP_ADDRS: usize = 256;
pub const MAX_TRUST_ENTRIES: usize = 4096;
const ENV_PREFIX: &str = "METAMESH_";
/// `METAMESH_*` variables that are not configuration keys: the CLI's own
/// and the test and script harnesses'.
pub const CLI_ENV_VARS: [&str; 5] = [
    "METAMESH_DATA_DIR",
    "METAMESH_GIT_COMMIT",
    "METAMESH_CONFIG",
    "METAMESH_BIN",
    "METAMESH_CRASH_WRITER_DIR",
];
/// The configuration file looked for in the data directory.
pub const DATA_DIR_CONFIG: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    /// The TOML did not parse or has an unknown key / a value of the wrong
    /// type; `message` is toml's, which names the key and the line.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// An environment override could not be applied.
    #[error("environment variable {var}: {reason}")]
    Env { var: String, reason: String },
    /// A value is out of range or malformed; `key` is the dotted TOML key.
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// The dotted key (or environment variable) the error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Env { var, .. } => Some(var),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Mesh name; topics are `metamesh/<mesh>/...`.
    pub mesh: String,
    /// Listen multiaddrs; empty means `/ip4/0.0.0.0/tcp/0` and `/ip4/0.0.0.0/udp/0/quic-v1`.
    pub listen: Vec<String>,
    /// Bootstrap peers: multiaddrs ending in `/p2p/<PeerId>`.
    pub bootstrap: Vec<String>,
    /// HTTP API socket address; port 0 picks a free port.
    pub api: String,
    /// Extra `Host` names the API answers besides its bound address
    /// (`name` for any port or `name:port`), e.g. behind a proxy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_allowed_hosts: Vec<String>,
    /// Optional separate socket address serving only `GET /metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Parent node multiaddr (with `/p2p/<PeerId>`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub sharing: SharingConfig,
    /// When a child promotes its insights to its `parent`.
    pub promotion: PromotionConfig,
    pub limits: LimitsConfig,
    pub acceptance: AcceptanceConfig,
    pub trust: TrustConfig,
    pub store: StoreSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharingConfig {
    /// Share own patterns and insights with peers at all.
    pub enabled: bool,
    /// Periodic announcement interval.
    pub announce_interval_secs: u64,
    /// Delay after new patterns before announcing (batches bursts).
    pub announce_debounce_ms: u64,
    /// Minimum interval between insight broadcasts.
    pub insight_min_interval_secs: u64,
}

/// Parent/child promotion: a node with a `parent` sends it its signed
/// insight record once its own `optimal_quality_depth` confidence reaches
/// `min_confidence`, and again when the record changes, at most once per
/// `min_interval_secs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromotionConfig {
    /// Confidence (P(best)) of the local `optimal_quality_depth` insight
    /// needed before promoting (0.5-1).
    pub min_confidence: f64,
    /// Minimum interval between promotions, seconds (1-86400).
    pub min_interval_secs: u64,
}

impl Default for PromotionConfig {
    fn default() -> Self {
        PromotionConfig {
            min_confidence: 0.9,
            min_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_patterns_per_response: usize,
    pub max_response_bytes: usize,
    pub bytes_per_sec_per_peer: u64,
    pub records_per_sec_per_peer: u32,
    pub record_burst_per_peer: u32,
    pub records_per_origin_per_hour: u32,
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub request_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AcceptanceConfig {
    /// Received patterns below this quality are declined (not stored).
    pub min_quality: f64,
    /// Patterns from peers whose reputation is below this are declined.
    pub min_reputation_patterns: f64,
    /// Insights from peers whose reputation is below this are ignored.
    pub min_reputation_insights: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// Pre-trusted peers (PeerId strings): anchors of trust.
    pub trusted: Vec<String>,
    /// Denied peers: never connected to, their records never stored.
    pub denied: Vec<String>,
    /// Fixed reputation scores by PeerId (overrides the computed score).
    pub fixed: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// sled page cache size in MiB.
    pub cache_mb: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mesh: "default".to_string(),
            listen: Vec::new(),
            bootstrap: Vec::new(),
            api: "127.0.0.1:0".to_string(),
            api_allowed_hosts: Vec::new(),
            metrics_listen: None,
            parent: None,
            sharing: SharingConfig::default(),
            promotion: PromotionConfig::default(),
            limits: LimitsConfig::default(),
            acceptance: AcceptanceConfig::default(),
            trust: TrustConfig::default(),
            store: StoreSection::default(),
        }
    }
}

impl Default for SharingConfig {
    fn default() -> Self {
        SharingConfig {
            enabled: true,
            announce_interval_secs: 10,
            announce_debounce_ms: 300,
            insight_min_interval_secs: 5,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_patterns_per_response: 256,
            max_response_bytes: 1024 * 1024,
            bytes_per_sec_per_peer: 1024 * 1024,
            records_per_sec_per_peer: 500,
            record_burst_per_peer: 2000,
            records_per_origin_per_hour: 20_000,
            max_connections: 128,
            max_connections_per_peer: 2,
            request_timeout_secs: 30,
        }
    }
}

impl Default for AcceptanceConfig {
    fn default() -> Self {
        AcceptanceConfig {
            min_quality: 0.0,
            min_reputation_patterns: -20.0,
            min_reputation_insights: -20.0,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { cache_mb: 64 }
    }
}

/// Default listen addresses when `listen` is empty.
pub const DEFAULT_LISTEN: [&str; 2] = ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"];

impl Config {
    /// File, then the process environment, then flags; validated. Unknown
    /// `METAMESH_*` variables are logged as warnings naming the nearest key.
    pub fn load(file: Option<&Path>, run_args: &RunArgs) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        for w in unknown_env_vars(&env) {
            tracing::warn!("{w}");
        }
        Self::load_with_env(file, run_args, &env)
    }

    /// The configuration a command runs with: `--config`/`METAMESH_CONFIG`,
    /// else `DIR/config.toml` if present; then the environment; then the
    /// `run` flags when given.
    pub fn for_command(
        g: &GlobalArgs,
        dd: &DataDir,
        run_args: Option<&RunArgs>,
    ) -> Result<Config, ConfigError> {
        let file = config_file(g.config.as_deref(), dd);
        Self::load(file.as_deref(), run_args.unwrap_or(&RunArgs::default()))
    }

    /// As [`Config::load`] with an explicit environment (for tests and
    /// embedding). Variables not naming a configuration key are ignored
    /// (`METAMESH_DATA_DIR` belongs to the CLI).
    pub fn load_with_env(
        file: Option<&Path>,
        run_args: &RunArgs,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut cfg = match file {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        cfg.apply_env(env)?;
        cfg.apply_run_args(run_args);
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse a file (not validated).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
                max: MAX_CONFIG_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::from_toml_str(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parse TOML text (not validated). The error is toml's message, which
    /// names an unknown or mistyped key.
    pub fn from_toml_str(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Overlay `METAMESH_*` variables. Each one is parsed according to the
    /// type of the key it names.
    pub fn apply_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        let to_value = |c: &Config| {
            toml::Value::try_from(c).map_err(|e| ConfigError::Env {
                var: ENV_PREFIX.to_string(),
                reason: e.to_string(),
            })
        };
        let mut root = to_value(self)?;
        let Some(table) = root.as_table_mut() else {
            return Ok(());
        };
        // `parent` is absent from the serialised form when unset; give it a
        // string slot so `METAMESH_PARENT` is recognised.
        table
            .entry("parent")
            .or_insert_with(|| toml::Value::String(String::new()));
        let mut changed = false;
        let mut parent_set = self.parent.is_some();
        for (var, raw) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            let Some((path, slot)) = find_slot(table, &rest) else {
                continue;
            };
            *slot = parse_env_value(var, raw, slot)?;
            changed = true;
            if path == "parent" {
                parent_set = !raw.trim().is_empty();
            }
        }
        if !changed {
            return Ok(());
        }
        if !parent_set {
            table.remove("parent");
        }
        let text = toml::to_string(&root).map_err(|e| ConfigError::Env {
            var: ENV_PREFIX.to_string(),
            reason: e.to_string(),
        })?;
        *self = toml::from_str(&text).map_err(|e| ConfigError::Env {
            var: ENV_PREFIX.to_string(),
            reason: e.to_string(),
        })?;
        Ok(())
    }

    /// Overlay the `run` flags that were given.
    pub fn apply_run_args(&mut self, a: &RunArgs) {
        if !a.listen.is_empty() {
            self.listen = a.listen.clone();
        }
        if !a.bootstrap.is_empty() {
            self.bootstrap = a.bootstrap.clone();
        }
        if let Some(api) = &a.api {
            self.api = api.clone();
        }
        if let Some(mesh) = &a.mesh {
            self.mesh = mesh.clone();
        }
        if let Some(parent) = &a.parent {
            self.parent = Some(parent.clone());
        }
    }

    /// Check every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_mesh_name(&self.mesh)?;

        if self.listen.len() > MAX_LISTEN_ADDRS {
            return Err(ConfigError::invalid(
                "listen",
                format!("at most {MAX_LISTEN_ADDRS} addresses"),
            ));
        }
        for (i, a) in self.listen.iter().enumerate() {
            parse_multiaddr(&format!("listen[{i}]"), a)?;
        }
        if self.bootstrap.len() > MAX_BOOTSTRAP_ADDRS {
            return Err(ConfigError::invalid(
                "bootstrap",
                format!("at most {MAX_BOOTSTRAP_ADDRS} addresses"),
            ));
        }
        for (i, a) in self.bootstrap.iter().enumerate() {
            parse_dialable(&format!("bootstrap[{i}]"), a)?;
        }
        SocketAddr::from_str(self.api.trim()).map_err(|e| {
            ConfigError::invalid(
                "api",
                format!("not a socket address like 127.0.0.1:8080 ({e})"),
            )
        })?;
        if let Some(p) = &self.parent {
            parse_dialable("parent", p)?;
        }
        if self.api_allowed_hosts.len() > 64 {
            return Err(ConfigError::invalid(
                "api_allowed_hosts",
                "at most 64 host names",
            ));
        }
        for (i, h) in self.api_allowed_hosts.iter().enumerate() {
            let h = h.trim();
            if h.is_empty() || h.len() > 255 || h.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(ConfigError::invalid(
                    format!("api_allowed_hosts[{i}]"),
                    "must be a host name, optionally with :port",
                ));
            }
        }
        self.metrics_addr()?;

        let s = &self.sharing;
        range(
            "sharing.announce_interval_secs",
            s.announce_interval_secs,
            1,
            3600,
        )?;
        range(
            "sharing.announce_debounce_ms",
            s.announce_debounce_ms,
            0,
            60_000,
        )?;
        range(
            "sharing.insight_min_interval_secs",
            s.insight_min_interval_secs,
            1,
            3600,
        )?;

        let pr = &self.promotion;
        if !(pr.min_confidence.is_finite() && (0.5..=1.0).contains(&pr.min_confidence)) {
            return Err(ConfigError::invalid(
                "promotion.min_confidence",
                "must be between 0.5 and 1",
            ));
        }
        range(
            "promotion.min_interval_secs",
            pr.min_interval_secs,
            1,
            86_400,
        )?;

        let l = &self.limits;
        range(
            "limits.max_patterns_per_response",
            l.max_patterns_per_response as u64,
            1,
            metamesh_protocol::wire::MAX_RECORDS_PER_RESPONSE as u64,
        )?;
        range(
            "limits.max_response_bytes",
            l.max_response_bytes as u64,
            4096,
            metamesh_protocol::wire::MAX_RESPONSE_BYTES as u64,
        )?;
        range(
            "limits.bytes_per_sec_per_peer",
            l.bytes_per_sec_per_peer,
            1024,
            1 << 34,
        )?;
        range(
            "limits.records_per_sec_per_peer",
            l.records_per_sec_per_peer.into(),
            1,
            1_000_000,
        )?;
        range(
            "limits.record_burst_per_peer",
            l.record_burst_per_peer.into(),
            1,
            10_000_000,
        )?;
        if l.record_burst_per_peer < l.records_per_sec_per_peer {
            return Err(ConfigError::invalid(
                "limits.record_burst_per_peer",
                format!(
                    "must be at least limits.records_per_sec_per_peer ({})",
                    l.records_per_sec_per_peer
                ),
            ));
        }
        range(
            "limits.records_per_origin_per_hour",
            l.records_per_origin_per_hour.into(),
            1,
            100_000_000,
        )?;
        range(
            "limits.max_connections",
            l.max_connections.into(),
            1,
            65_535,
        )?;
        range(
            "limits.max_connections_per_peer",
            l.max_connections_per_peer.into(),
            1,
            16,
        )?;
        range(
            "limits.request_timeout_secs",
            l.request_timeout_secs,
            1,
            600,
        )?;

        let a = &self.acceptance;
        if !(a.min_quality.is_finite() && (0.0..=1.0).contains(&a.min_quality)) {
            return Err(ConfigError::invalid(
                "acceptance.min_quality",
                "must be between 0 and 1",
            ));
        }
        reputation(
            "acceptance.min_reputation_patterns",
            a.min_reputation_patterns,
        )?;
        reputation(
            "acceptance.min_reputation_insights",
            a.min_reputation_insights,
        )?;

        let t = &self.trust;
        for (name, list) in [("trust.trusted", &t.trusted), ("trust.denied", &t.denied)] {
            if list.len() > MAX_TRUST_ENTRIES {
                return Err(ConfigError::invalid(
                    name,
                    format!("at most {MAX_TRUST_ENTRIES} entries"),
                ));
            }
            for (i, p) in list.iter().enumerate() {
                parse_peer_id(&format!("{name}[{i}]"), p)?;
            }
        }
        if let Some(p) = t.trusted.iter().find(|p| t.denied.contains(p)) {
            return Err(ConfigError::invalid(
                "trust.denied",
                format!("{p} is also in trust.trusted"),
            ));
        }
        if t.fixed.len() > MAX_TRUST_ENTRIES {
            return Err(ConfigError::invalid(
                "trust.fixed",
                format!("at most {MAX_TRUST_ENTRIES} entries"),
            ));
        }
        for (p, score) in &t.fixed {
            let key = format!("trust.fixed.{p}");
            parse_peer_id(&key, p)?;
            reputation(&key, *score)?;
        }

        range("store.cache_mb", self.store.cache_mb, 1, 1 << 20)?;
        Ok(())
    }

    /// Listen multiaddrs, the defaults when none are configured. Call after
    /// [`Config::validate`]; invalid entries are skipped.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        if self.listen.is_empty() {
            DEFAULT_LISTEN
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect()
        } else {
            self.listen
                .iter()
                .filter_map(|a| a.trim().parse().ok())
                .collect()
        }
    }

    /// Bootstrap peers as (PeerId, address). Call after [`Config::validate`].
    pub fn bootstrap_peers(&self) -> Vec<(PeerId, Multiaddr)> {
        self.bootstrap
            .iter()
            .filter_map(|a| parse_dialable("bootstrap", a).ok())
            .collect()
    }

    /// The parent as (PeerId, address), if configured and valid.
    pub fn parent_peer(&self) -> Option<(PeerId, Multiaddr)> {
        self.parent
            .as_deref()
            .and_then(|p| parse_dialable("parent", p).ok())
    }

    /// The API socket address (call after [`Config::validate`]).
    pub fn api_addr(&self) -> Result<SocketAddr, ConfigError> {
        SocketAddr::from_str(self.api.trim())
            .map_err(|e| ConfigError::invalid("api", format!("not a socket address ({e})")))
    }

    /// The separate metrics address, if configured.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        self.metrics_listen
            .as_deref()
            .map(|a| {
                SocketAddr::from_str(a.trim()).map_err(|e| {
                    ConfigError::invalid(
                        "metrics_listen",
                        format!("not a socket address like 127.0.0.1:9100 ({e})"),
                    )
                })
            })
            .transpose()
    }

    pub fn trusted_peers(&self) -> Vec<PeerId> {
        self.trust
            .trusted
            .iter()
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    pub fn denied_peers(&self) -> Vec<PeerId> {
        self.trust
            .denied
            .iter()
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }

    pub fn fixed_scores(&self) -> BTreeMap<PeerId, f64> {
        self.trust
            .fixed
            .iter()
            .filter_map(|(p, s)| Some((p.trim().parse().ok()?, *s)))
            .collect()
    }

    /// sled cache size in bytes.
    pub fn store_cache_bytes(&self) -> u64 {
        self.store.cache_mb.saturating_mul(1024 * 1024)
    }

    /// The configuration as TOML (all keys, defaults included).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// The configuration file: the explicit one, else `DIR/config.toml` when it
/// exists.
pub fn config_file(explicit: Option<&Path>, dd: &DataDir) -> Option<PathBuf> {
    explicit.map(Path::to_path_buf).or_else(|| {
        let p = dd.root.join(DATA_DIR_CONFIG);
        p.is_file().then_some(p)
    })
}

/// Every environment variable name that sets a configuration key.
pub fn env_var_names() -> Vec<String> {
    let mut names = vec![format!("{ENV_PREFIX}PARENT")];
    if let Ok(toml::Value::Table(t)) = toml::Value::try_from(Config::default()) {
        for (k, v) in &t {
            match v.as_table() {
                Some(sub) => names.extend(
                    sub.keys()
                        .map(|s| format!("{ENV_PREFIX}{k}_{s}").to_ascii_uppercase()),
                ),
                None => names.push(format!("{ENV_PREFIX}{k}").to_ascii_uppercase()),
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

fn env_tail(s: &str) -> &str {
    s.strip_prefix(ENV_PREFIX).unwrap_or(s)
}

/// Warnings for `METAMESH_*` variables that name no configuration key and
/// are not the CLI's own, each with the nearest valid name when one is close.
pub fn unknown_env_vars(env: &[(String, String)]) -> Vec<String> {
    let names = env_var_names();
    let mut out = Vec::new();
    for (var, _) in env {
        if !var.starts_with(ENV_PREFIX)
            || names.iter().any(|n| n == var)
            || CLI_ENV_VARS.contains(&var.as_str())
        {
            continue;
        }
        let nearest = names
            .iter()
            .map(String::as_str)
            .chain(CLI_ENV_VARS)
            // Compare what follows the shared prefix.
            .map(|n| (strsim::jaro_winkler(env_tail(var), env_tail(n)), n))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .filter(|(score, _)| *score >= 0.85)
            .map(|(_, n)| n);
        out.push(match nearest {
            Some(n) => format!(
                "environment variable {var} is not a metamesh setting and is ignored; did you mean {n}?"
            ),
            None => format!(
                "environment variable {var} is not a metamesh setting and is ignored \
                 (see docs/config.md for the METAMESH_* names)"
            ),
        });
    }
    out
}

/// The mesh name charset: `[a-zA-Z0-9._-]{1,64}`.
pub fn validate_mesh_name(mesh: &str) -> Result<(), ConfigError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if mesh.is_empty() || mesh.len() > 64 || !mesh.chars().all(ok_char) {
        return Err(ConfigError::invalid(
            "mesh",
            format!(
                "{:?} is not a mesh name: 1 to 64 characters from a-z A-Z 0-9 . _ -",
                truncate(mesh, 80)
            ),
        ));
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn range(key: &str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if v < min || v > max {
        return Err(ConfigError::invalid(
            key,
            format!("must be between {min} and {max} (got {v})"),
        ));
    }
    Ok(())
}

fn reputation(key: &str, v: f64) -> Result<(), ConfigError> {
    if !v.is_finite() || v.abs() > MAX_REPUTATION {
        return Err(ConfigError::invalid(
            key,
            format!("must be a finite score between -{MAX_REPUTATION} and {MAX_REPUTATION}"),
        ));
    }
    Ok(())
}

fn parse_peer_id(key: &str, s: &str) -> Result<PeerId, ConfigError> {
    s.trim().parse::<PeerId>().map_err(|e| {
        ConfigError::invalid(key, format!("{:?} is not a PeerId ({e})", truncate(s, 80)))
    })
}

fn parse_multiaddr(key: &str, s: &str) -> Result<Multiaddr, ConfigError> {
    s.trim().parse::<Multiaddr>().map_err(|e| {
        ConfigError::invalid(
            key,
            format!("{:?} is not a multiaddr ({e})", truncate(s, 120)),
        )
    })
}

/// A multiaddr that ends in `/p2p/<PeerId>`.
fn parse_dialable(key: &str, s: &str) -> Result<(PeerId, Multiaddr), ConfigError> {
    let addr = parse_multiaddr(key, s)?;
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(ConfigError::invalid(
            key,
            format!("{:?} must end in /p2p/<PeerId>", truncate(s, 120)),
        )),
    }
}

/// Find the value slot an environment suffix (lower-cased, after
/// `METAMESH_`) names: a top-level scalar/list key, or `<section>_<key>`.
fn find_slot<'t>(
    table: &'t mut toml::map::Map<String, toml::Value>,
    rest: &str,
) -> Option<(String, &'t mut toml::Value)> {
    // Top-level non-table key?
    if table.get(rest).is_some_and(|v| !v.is_table()) {
        return table.get_mut(rest).map(|v| (rest.to_string(), v));
    }
    let section = table
        .keys()
        .filter(|k| table.get(*k).is_some_and(toml::Value::is_table))
        .find(|k| {
            rest.strip_prefix(k.as_str())
                .and_then(|r| r.strip_prefix('_'))
                .is_some()
        })?
        .clone();
    let key = rest[section.len() + 1..].to_string();
    let sub = table.get_mut(&section)?.as_table_mut()?;
    let slot = sub.get_mut(&key)?;
    Some((format!("{section}.{key}"), slot))
}

/// Parse an environment value as the type of `current`.
fn parse_env_value(
    var: &str,
    raw: &str,
    current: &toml::Value,
) -> Result<toml::Value, ConfigError> {
    let err = |reason: String| ConfigError::Env {
        var: var.to_string(),
        reason,
    };
    let s = raw.trim();
    Ok(match current {
        toml::Value::String(_) => toml::Value::String(s.to_string()),
        toml::Value::Boolean(_) => toml::Value::Boolean(match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            _ => return Err(err(format!("{s:?} is not a boolean (true/false)"))),
        }),
        toml::Value::Integer(_) => toml::Value::Integer(
            s.parse::<i64>()
                .map_err(|_| err(format!("{s:?} is not an integer")))?,
        ),
        toml::Value::Float(_) => {
            let f = s
                .parse::<f64>()
                .map_err(|_| err(format!("{s:?} is not a number")))?;
            toml::Value::Float(f)
        }
        toml::Value::Array(_) => toml::Value::Array(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| toml::Value::String(x.to_string()))
                .collect(),
        ),
        toml::Value::Table(_) => {
            // trust.fixed: PEER=SCORE,PEER=SCORE
            let mut t = toml::map::Map::new();
            for item in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                let (k, v) = item
                    .split_once('=')
                    .ok_or_else(|| err(format!("{item:?} is not KEY=NUMBER")))?;
                let f = v
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| err(format!("{v:?} is not a number")))?;
                t.insert(k.trim().to_string(), toml::Value::Float(f));
            }
            toml::Value::Table(t)
        }
        toml::Value::Datetime(_) => return Err(err("unsupported type".into())),
    })
}

#[cfg(test)]
mod tests;
