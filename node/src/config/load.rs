//! Loading: the file, then the environment (`env.rs`), then the `run`
//! flags; and where the file is looked for.

use std::path::{Path, PathBuf};

use super::{unknown_env_vars, Config, ConfigError, DATA_DIR_CONFIG, ENV_PREFIX, MAX_CONFIG_BYTES};
use crate::cli::{GlobalArgs, RunArgs};
use crate::datadir::DataDir;

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
}

/// The configuration file: the explicit one, else `DIR/config.toml` when it
/// exists.
pub fn config_file(explicit: Option<&Path>, dd: &DataDir) -> Option<PathBuf> {
    explicit.map(Path::to_path_buf).or_else(|| {
        let p = dd.root.join(DATA_DIR_CONFIG);
        p.is_file().then_some(p)
    })
}
