//! [`Config::validate`] and the checks behind it; every error names the key.

use std::net::SocketAddr;
use std::str::FromStr;

use libp2p::{Multiaddr, PeerId};
use metamesh_protocol::schema::MAX_REPUTATION;

use super::{Config, ConfigError, MAX_BOOTSTRAP_ADDRS, MAX_LISTEN_ADDRS, MAX_TRUST_ENTRIES};

impl Config {
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

        let p = &self.peers;
        range("peers.target", p.target as u64, 1, 1024)?;
        range("peers.max", p.max as u64, p.target as u64, 65_535)?;
        if p.max as u64 > u64::from(l.max_connections) {
            return Err(ConfigError::invalid(
                "peers.max",
                format!(
                    "must be at most limits.max_connections ({})",
                    l.max_connections
                ),
            ));
        }
        range("peers.grace_secs", p.grace_secs, 0, 3600)?;
        range(
            "peers.reconnect_cooldown_secs",
            p.reconnect_cooldown_secs,
            0,
            86_400,
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
pub(super) fn parse_dialable(key: &str, s: &str) -> Result<(PeerId, Multiaddr), ConfigError> {
    let addr = parse_multiaddr(key, s)?;
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(ConfigError::invalid(
            key,
            format!("{:?} must end in /p2p/<PeerId>", truncate(s, 120)),
        )),
    }
}
