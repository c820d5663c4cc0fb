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

use std::path::PathBuf;

mod env;
mod load;
mod types;
mod validate;

pub use env::{env_var_names, unknown_env_vars};
pub use load::config_file;
pub use types::{
    AcceptanceConfig, Config, LimitsConfig, PeersConfig, PromotionConfig, SharingConfig,
    StoreSection, TreeSection, TrustConfig, DEFAULT_LISTEN,
};
pub use validate::validate_mesh_name;

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

#[cfg(test)]
mod tests;
