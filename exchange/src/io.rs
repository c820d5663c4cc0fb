//! What goes into the core and what comes out of it.
//!
//! The shell (the node's actor, or the simulator) turns everything that
//! happens into an [`Input`], calls [`crate::State::handle`] with the current
//! time, and executes every [`Output`] in order. Work the core cannot do
//! itself (signature checks, store reads and writes, sockets) is an output
//! whose result comes back as an input carrying the same id.
//!
//! Time is unix seconds as `f64` (the unit the protocol's reputation and
//! schema checks use). Ids are plain counters chosen by whoever starts the
//! exchange: the core numbers its outbound requests, verifications and
//! writes; the shell numbers inbound requests, gossip messages and
//! submissions.

use libp2p_identity::PeerId;
use metamesh_protocol::record::{ContentHash, RecordError};
use metamesh_protocol::reputation::{ReputationClass, ReputationEvent};
use metamesh_protocol::sync::{ReconReply, SyncRequest, SyncResponse};
use metamesh_protocol::wire::{Cursor, RequestFilters, SeqRange, WireError};
use metamesh_protocol::SignedRecord;
use metamesh_protocol::{Depth, DepthTable, InsightBody, InsightSet, Pattern, PatternBody};

/// Gossipsub topics the core publishes on and reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `metamesh/<mesh>/records/1`: [`metamesh_protocol::wire::RecordPush`], eager push of new records.
    Records,
    /// `metamesh/<mesh>/announce/1`: digest announcements (and legacy pattern announcements).
    Announce,
    /// `metamesh/<mesh>/insights/1`: insight broadcasts.
    Insights,
}

/// The shell's handle on one received gossip message (maps to gossipsub's `MessageId`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(pub u64);
/// An inbound request (the shell keeps the response channel under this id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InboundId(pub u64);
/// An outbound request the core started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);
/// A verification batch the core asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VerifyId(pub u64);
/// A store write the core asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u64);
/// A local submission (API call) the shell numbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubmitId(pub u64);

/// Which lane the shell runs a [`Output::Verify`] or [`Output::Persist`]
/// in (issue 12: a flood of fresh identities must not delay established
/// origins' records). Decided by the core from its reputation book (see
/// [`crate::State::lane_of`]); the shell keeps one bounded queue per lane
/// and always serves the higher lane first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Our own records and state: never behind peers' work.
    Own,
    /// Records of established origins (see [`crate::State::established`]).
    High,
    /// Fresh or unknown identities, or anything a sender in bad standing
    /// delivers: bounded tighter, shed first.
    Low,
}

/// Gossipsub validation verdict for a message (`report_message_validation_result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Valid and new: deliver and forward.
    Accept,
    /// Provably bad (penalises the propagation source in gossipsub's score).
    Reject,
    /// Not forwarded, no penalty (duplicate, unknown version, quota, …).
    Ignore,
}

/// One received gossip message.
#[derive(Debug, Clone, PartialEq)]
pub struct Gossip {
    pub id: MsgId,
    pub topic: Topic,
    /// The authenticated gossipsub author (`message.source`) when messages are
    /// signed; `None` when the mesh runs unsigned (then only the propagation
    /// source is known and announcements count only from it).
    pub author: Option<PeerId>,
    /// The direct peer that delivered it.
    pub source: PeerId,
    pub data: Vec<u8>,
}

/// What the store did with one record of a [`Output::Persist`] batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Inserted,
    Duplicate,
    /// The (origin, seq) slot holds a different body; both are kept as evidence.
    Equivocation,
}

/// The result of a [`Output::Persist`].
#[derive(Debug, Clone, PartialEq)]
pub struct Persisted {
    /// One outcome per record of the batch, in order.
    pub outcomes: Vec<WriteOutcome>,
    /// The new contiguous frontier of every origin the batch touched (the
    /// store applies `record::extends_frontier`, pending records and
    /// declined marks).
    pub frontier: Vec<(PeerId, u64)>,
}

/// Everything that can happen to the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    PeerConnected {
        peer: PeerId,
        /// We dialled it.
        outbound: bool,
    },
    PeerDisconnected {
        peer: PeerId,
    },
    /// A gossip message arrived (the shell has not validated it; gossipsub
    /// waits for the [`Output::Validate`] verdict before forwarding).
    Gossip(Gossip),
    /// A peer asked us something. `request` is the decode result so that
    /// malformed requests are charged too.
    Request {
        peer: PeerId,
        id: InboundId,
        request: Result<SyncRequest, WireError>,
    },
    /// The shell sent the response of a [`Output::Serve`]: what it held.
    Served {
        peer: PeerId,
        id: InboundId,
        records: u32,
        bytes: u64,
    },
    /// The answer to one of our requests (or why it did not decode).
    Response {
        peer: PeerId,
        id: RequestId,
        response: Result<SyncResponse, WireError>,
    },
    /// One of our requests failed in transport (timeout, closed, unsupported).
    RequestFailed {
        peer: PeerId,
        id: RequestId,
        error: String,
    },
    /// Results of a [`Output::Verify`], one per record in order: the
    /// verified signer or why the signature failed.
    Verified {
        id: VerifyId,
        results: Vec<Result<PeerId, RecordError>>,
    },
    /// Result of a [`Output::Persist`]. `Err` means nothing was written.
    Persisted {
        id: WriteId,
        result: Result<Persisted, String>,
    },
    /// A timer the core scheduled came due.
    Timer(Timer),
    /// Local patterns to sign and publish (API). Answered by [`Output::Submitted`].
    Submit {
        id: SubmitId,
        patterns: Vec<Pattern>,
    },
    /// Our own insights changed: sign (next insight seq) and broadcast, rate-limited.
    OwnInsights {
        stats: DepthTable,
        insights: InsightSet,
    },
    /// New configuration (bounds, rates, acceptance policy, trust).
    Config(Box<crate::Config>),
    /// A message from a tree neighbour (decoded with [`crate::tree::TreeMsg::decode`]).
    Tree {
        peer: PeerId,
        msg: Result<crate::tree::TreeMsg, crate::tree::TreeError>,
    },
    /// A charge the exchange cannot see for itself: the learning policy
    /// found a peer's evidence contradicted by the node's own outcomes.
    Charge {
        peer: PeerId,
        event: ReputationEvent,
    },
}

/// Timers the core asks the shell to fire (opaque to the shell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Periodic work: announce cadence, reputation persistence and decay,
    /// deferred-origin expiry, stuck-exchange timeouts.
    Tick,
    /// Reconcile with a peer (after a connection or a differing digest).
    Reconcile(PeerId),
    /// Pull what reconciliation found missing from a peer (after the
    /// repair delay, so records still in flight by gossip are not pulled).
    Repair(PeerId),
    /// The record tree's batching, graft and neighbour timers.
    Tree,
}

/// What the shell must fetch from its store to answer a request. The core
/// has already admitted it (rate limits, byte budget, bounds). Execute it
/// with [`crate::serve::execute`] (or equivalently), send the response, then
/// report [`Input::Served`].
#[derive(Debug, Clone, PartialEq)]
pub struct ServePlan {
    /// Exact ranges to return, in order (a range may span empty slots; count
    /// records returned, never the span).
    pub ranges: Vec<SeqRange>,
    /// The seed's filters, with their resume cursor.
    pub filters: Option<RequestFilters>,
    pub cursor: Option<Cursor>,
    /// Most records in the response.
    pub max_count: u32,
    /// Most record bytes in the response.
    pub max_bytes: u64,
    /// Put into the response as is.
    pub insight: Option<SignedRecord>,
    /// Put into the response as is.
    pub recon: Option<ReconReply>,
}

/// A slot declined for good (below the acceptance threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declined {
    pub origin: PeerId,
    pub seq: u64,
    /// The record's previous seq (for the frontier rule).
    pub prev: u64,
    pub hash: ContentHash,
}

/// A batch for the store, written atomically (group commit is the shell's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PersistBatch {
    /// Verified records to insert (pending ones included: the store keeps
    /// records above a gap and advances the frontier when the gap fills).
    pub records: Vec<(SignedRecord, PatternBody)>,
    /// Slots declined for a permanent reason: they advance the frontier and
    /// the hash is kept as declined.
    pub declined: Vec<Declined>,
    /// Insight records to keep (latest per origin), with their bodies.
    pub insights: Vec<(SignedRecord, InsightBody)>,
    /// Changed reputation states (encoded with `ReputationState::to_bytes`).
    pub reputation: Vec<(PeerId, Vec<u8>)>,
    /// Our own highest seq reached (the shell persists it with the batch).
    pub own_seq: Option<u64>,
}

impl PersistBatch {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.declined.is_empty()
            && self.insights.is_empty()
            && self.reputation.is_empty()
            && self.own_seq.is_none()
    }
}

/// Why a local submission was refused (nothing of it was stored).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// More than the per-origin quota peers would accept: retry later.
    #[error("quota: {allowed} records per hour per origin; retry in {retry_after_secs:.0} s")]
    Quota { allowed: u32, retry_after_secs: f64 },
    #[error("pattern {index}: {reason}")]
    Invalid { index: usize, reason: String },
    #[error("too many patterns in one submission ({0}); the limit is {1}")]
    TooMany(usize, usize),
    #[error("the store did not write the batch: {0}")]
    Store(String),
    #[error("busy: {0} writes in flight")]
    Busy(usize),
}

/// One stored local pattern, as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmittedRecord {
    pub seq: u64,
    pub hash: ContentHash,
}

/// Something the API or the metrics may want to know.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    PatternAccepted {
        origin: PeerId,
        seq: u64,
        hash: ContentHash,
        depth: Depth,
        local: bool,
    },
    PatternRejected {
        /// Who is charged for it (origin or sender), if anyone.
        peer: Option<PeerId>,
        reason: &'static str,
    },
    /// Declined by local policy. `passable`: not stored and stays fetchable
    /// (quota, reputation threshold); otherwise the slot is marked declined.
    PatternDeclined {
        origin: PeerId,
        seq: u64,
        reason: &'static str,
        passable: bool,
    },
    InsightAccepted {
        origin: PeerId,
        seq: u64,
    },
    /// A peer's reputation class changed.
    ReputationChanged {
        peer: PeerId,
        event: ReputationEvent,
        score: f64,
        class: ReputationClass,
    },
    /// A child's promotion (its insight carried by a request): `seq` of the
    /// insight kept, or `None` when it was refused (forged, not the
    /// child's own, …).
    Promotion {
        child: PeerId,
        seq: Option<u64>,
    },
    /// Every record a peer announced is held (our own history included):
    /// own-seq safety for nodes that learn their own frontier from peers.
    CaughtUp {
        peer: PeerId,
    },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Report the validation verdict of a gossip message to gossipsub.
    Validate {
        id: MsgId,
        acceptance: Acceptance,
    },
    /// Publish bytes on a topic.
    Publish {
        topic: Topic,
        data: Vec<u8>,
    },
    /// Send a request; answer with [`Input::Response`] or [`Input::RequestFailed`].
    SendRequest {
        peer: PeerId,
        id: RequestId,
        request: SyncRequest,
    },
    /// Answer an inbound request right away (refusals, reconciliation only).
    Respond {
        id: InboundId,
        response: SyncResponse,
    },
    /// Answer an inbound request from the store per the plan, then report
    /// [`Input::Served`].
    Serve {
        peer: PeerId,
        id: InboundId,
        plan: ServePlan,
    },
    /// Check these signatures (batch); answer with [`Input::Verified`].
    Verify {
        id: VerifyId,
        records: Vec<SignedRecord>,
        priority: Priority,
    },
    /// Write this batch durably; answer with [`Input::Persisted`].
    Persist {
        id: WriteId,
        batch: PersistBatch,
        priority: Priority,
    },
    /// Answer a [`Input::Submit`] (after the records are durable).
    Submitted {
        id: SubmitId,
        result: Result<Vec<SubmittedRecord>, SubmitError>,
    },
    /// Gossipsub application score of a peer.
    SetPeerScore {
        peer: PeerId,
        score: f64,
    },
    /// Close connections to a peer.
    Disconnect {
        peer: PeerId,
    },
    /// Refuse a peer's connections until `until` (unix seconds; blacklist in gossipsub).
    Ban {
        peer: PeerId,
        until: f64,
    },
    /// Call back with [`Input::Timer`] at `at` (unix seconds). A later
    /// schedule of the same timer replaces the earlier one.
    Schedule {
        at: f64,
        timer: Timer,
    },
    Event(Event),
    /// Send a tree message to a peer (encode with [`crate::tree::TreeMsg::encode`]);
    /// received ones come back as [`Input::Tree`].
    Tree {
        peer: PeerId,
        msg: crate::tree::TreeMsg,
    },
}
