//! `METAMESH_*` environment variables: overlaying them on a configuration,
//! and warning about the ones that name no key.

use super::{Config, ConfigError, CLI_ENV_VARS, ENV_PREFIX};

impl Config {
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
