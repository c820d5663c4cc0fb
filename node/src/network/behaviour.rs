//! The composed libp2p behaviour and the swarm builder.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use libp2p::gossipsub::{
    self, MessageAuthenticity, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
    ValidationMode,
};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{
    allow_block_list, connection_limits, identify, noise, ping, tcp, yamux, StreamProtocol, Swarm,
};
use metamesh_protocol::wire::{MAX_GOSSIP_BYTES, MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES};

use super::codec::SyncCodec;
use super::{NetError, NetworkConfig, Topics};

/// The sync protocol: `pattern_request` → `pattern_response`, CBOR.
pub const SYNC_PROTOCOL: &str = "/metamesh/sync/1";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/metamesh/id/1";

/// Gossipsub peer-score thresholds. The application score we feed in
/// (reputation, see `metamesh_protocol::reputation`) is on the same scale:
/// an untrusted peer's application score alone takes it below these.
pub const GOSSIP_THRESHOLD: f64 = -20.0;
pub const PUBLISH_THRESHOLD: f64 = -50.0;
pub const GRAYLIST_THRESHOLD: f64 = -80.0;

#[derive(NetworkBehaviour)]
pub struct MeshBehaviour {
    /// The peer manager (refuses connections beyond our target).
    pub gate: super::gate::Gate,
    pub blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub limits: connection_limits::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub sync: request_response::Behaviour<SyncCodec>,
    pub identify: identify::Behaviour,
    pub kad: kad::Behaviour<MemoryStore>,
    pub ping: ping::Behaviour,
}

/// Content-hash message id: blake3 of the payload, so the same bytes from
/// anyone are one message (dedup across publishers and re-publications).
fn message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    gossipsub::MessageId::from(blake3::hash(&m.data).as_bytes().to_vec())
}

/// Per-topic score parameters, derived from the expected traffic: each node
/// publishes about one announcement per announce interval (10 s by default)
/// and at most one insight broadcast per few seconds. At such low rates the
/// mesh-delivery-rate penalties (P3, P3b) would punish honest quiet peers, so
/// they are off; what matters is P4 — invalid messages (bad signatures,
/// malformed bodies) cost quadratically and decay slowly.
fn topic_score_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        // P1: time in mesh, small positive, capped at +3.
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 300.0,
        // P2: first deliveries, capped at +10.
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(600)),
        first_message_deliveries_cap: 10.0,
        // P3 / P3b off (see above).
        mesh_message_deliveries_weight: 0.0,
        mesh_message_deliveries_decay: 0.5,
        mesh_message_deliveries_cap: 1.0,
        mesh_message_deliveries_threshold: 1.0,
        mesh_message_deliveries_window: Duration::from_millis(10),
        mesh_message_deliveries_activation: Duration::from_secs(60),
        mesh_failure_penalty_weight: 0.0,
        mesh_failure_penalty_decay: 0.5,
        // P4: one invalid message costs 30, two 120 (below the graylist).
        invalid_message_deliveries_weight: -30.0,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(Duration::from_secs(
            1800,
        )),
    }
}

fn peer_score_params(topics: &Topics) -> PeerScoreParams {
    let mut p = PeerScoreParams {
        topic_score_cap: 20.0,
        // Reputation is fed in already scaled (see the thresholds above).
        app_specific_weight: 1.0,
        ..PeerScoreParams::default()
    };
    // Local meshes (tests, `metamesh swarm`) put every peer on one address.
    p.ip_colocation_factor_whitelist = HashSet::from([
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]);
    p.topics
        .insert(topics.announce.hash(), topic_score_params());
    p.topics
        .insert(topics.insights.hash(), topic_score_params());
    p.topics.insert(topics.records.hash(), topic_score_params());
    p
}

fn build_behaviour(
    key: &Keypair,
    cfg: &NetworkConfig,
    topics: &Topics,
) -> Result<MeshBehaviour, NetError> {
    let local = key.public().to_peer_id();
    // No gossipsub signatures: every record we carry is signed by its
    // origin already, and gossipsub verifies its own signature on every
    // received copy, duplicates included (issue 8: ~22 % of CPU at N=20).
    // Without them gossipsub knows no author, so an announcement counts only
    // for the peer that delivered it directly (see `actor::gossip`).
    let gs_config = gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(message_id)
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .heartbeat_interval(Duration::from_millis(700))
        .build()
        .map_err(|e| NetError::Config(format!("gossipsub: {e}")))?;
    let mut gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gs_config)
        .map_err(|e| NetError::Config(format!("gossipsub: {e}")))?;
    gossipsub
        .with_peer_score(
            peer_score_params(topics),
            PeerScoreThresholds {
                gossip_threshold: GOSSIP_THRESHOLD,
                publish_threshold: PUBLISH_THRESHOLD,
                graylist_threshold: GRAYLIST_THRESHOLD,
                accept_px_threshold: 10.0,
                opportunistic_graft_threshold: 5.0,
            },
        )
        .map_err(|e| NetError::Config(format!("gossipsub scoring: {e}")))?;
    if cfg.subscribe {
        for t in [&topics.records, &topics.announce, &topics.insights] {
            gossipsub
                .subscribe(t)
                .map_err(|e| NetError::Config(format!("subscribe {t}: {e}")))?;
        }
    }

    let codec = SyncCodec::new(MAX_REQUEST_BYTES as u64, MAX_RESPONSE_BYTES as u64);
    let sync = request_response::Behaviour::with_codec(
        codec,
        [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(cfg.request_timeout)
            .with_max_concurrent_streams(64),
    );

    let identify = identify::Behaviour::new(
        identify::Config::new(IDENTIFY_PROTOCOL.into(), key.public())
            .with_agent_version(format!("metamesh/{}", env!("CARGO_PKG_VERSION")))
            .with_push_listen_addr_updates(true),
    );

    let kad_protocol = StreamProtocol::try_from_owned(format!("/metamesh/{}/kad/1", cfg.mesh))
        .map_err(|e| NetError::Config(format!("mesh: {e}")))?;
    let mut kad_cfg = kad::Config::new(kad_protocol);
    // The event loop bootstraps once connected; kad's own timer would warn
    // "Failed to trigger bootstrap: No known peers" on a lone node (its
    // trigger on a new listen address cannot be turned off; main.rs filters
    // that warning).
    kad_cfg.set_periodic_bootstrap_interval(None);
    let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), kad_cfg);
    // Loopback and LAN nodes never get a confirmed external address; without
    // server mode they would not answer each other's discovery queries.
    kad.set_mode(Some(kad::Mode::Server));

    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(cfg.max_connections))
            .with_max_established_per_peer(Some(cfg.max_connections_per_peer))
            .with_max_pending_incoming(Some(cfg.max_connections))
            .with_max_pending_outgoing(Some(cfg.max_connections)),
    );
    let mut blocked = allow_block_list::Behaviour::<allow_block_list::BlockedPeers>::default();
    for p in &cfg.denied {
        blocked.block_peer(*p);
    }
    let peer_limits = super::peers::PeerLimits::new(
        cfg.target_peers,
        cfg.max_peers,
        cfg.peer_grace.as_secs_f64(),
        cfg.reconnect_cooldown.as_secs_f64(),
    );
    Ok(MeshBehaviour {
        gate: super::gate::Gate::new(peer_limits),
        blocked,
        limits,
        gossipsub,
        sync,
        identify,
        kad,
        ping: ping::Behaviour::new(ping::Config::new()),
    })
}

/// Build the swarm: TCP (noise, yamux) and QUIC, our behaviour, and an idle
/// timeout long enough that quiet meshes do not flap.
pub fn build_swarm(
    key: Keypair,
    cfg: &NetworkConfig,
    topics: &Topics,
) -> Result<Swarm<MeshBehaviour>, NetError> {
    let behaviour = build_behaviour(&key, cfg, topics)?;
    let idle = cfg.idle_timeout;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Config(format!("tcp transport: {e}")))?
        .with_quic()
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetError::Config(format!("behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok(swarm)
}
