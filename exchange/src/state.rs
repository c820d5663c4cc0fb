//! The state machine: [`State::handle`] and the read-only views.

use std::collections::BTreeMap;

use libp2p_identity::{Keypair, PeerId};
use metamesh_protocol::record::ContentHash;
use metamesh_protocol::reputation::{ReputationEvent, ReputationState, Standing};
use metamesh_protocol::sync::Frontier;
use metamesh_protocol::wire::FrontierEntry;
use metamesh_protocol::{InsightBody, SignedRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::book::{Book, TokenBucket};
use crate::bounded::BoundedMap;
use crate::config::Config;
use crate::io::*;
use crate::recon::DigestTree;

/// What the core is started with (read from the store by the shell).
#[derive(Debug, Clone)]
pub struct Init {
    /// The node's identity: signs own records.
    pub key: Keypair,
    /// This process's epoch, already durable (see [`crate::own::next_epoch`]);
    /// `None`: contiguous own seqs (`last_own_seq + 1`, the pre-epoch rule).
    pub epoch: Option<u32>,
    /// The highest own seq in the store (0 if none).
    pub last_own_seq: u64,
    /// The store's per-origin frontier.
    pub frontier: Frontier,
    /// Persisted reputation (the most valuable first if the book is smaller).
    pub reputation: Vec<(PeerId, ReputationState)>,
    /// Our latest own insight record.
    pub own_insight: Option<(SignedRecord, InsightBody)>,
    /// Seeds the core's randomness (peer choice, jitter).
    pub seed: u64,
}

/// Counters for metrics and the simulator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub gossip_records_received: u64,
    pub pulled_records_received: u64,
    pub records_accepted: u64,
    pub records_duplicate: u64,
    pub records_rejected: BTreeMap<&'static str, u64>,
    pub records_declined: u64,
    pub records_deferred: u64,
    pub requests_sent: u64,
    pub recon_rounds: u64,
    pub requests_served: u64,
    pub requests_refused: u64,
    pub records_served: u64,
    pub bytes_served: u64,
    pub unrequested_dropped: u64,
    pub announcements_sent: u64,
    /// Verified records not stored because the store's writes were backed
    /// up (not accepted, not forwarded; reconciliation brings them again).
    pub records_shed: u64,
}

/// A connected peer.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerInfo {
    pub last_recon: f64,
    pub recon_running: bool,
    pub pulling: bool,
    /// Spoke an older protocol (answered a recon query without `recon`).
    pub legacy: bool,
    /// What reconciliation found this peer holds beyond us: origin → seq.
    pub targets: BTreeMap<PeerId, u64>,
}

/// Bound of one peer's repair targets.
pub(crate) const MAX_TARGETS_PER_PEER: usize = 4096;

/// Why an outbound request was sent.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    Recon {
        asked: metamesh_protocol::sync::ReconQuery,
        round: u32,
    },
    Pull {
        ranges: Vec<metamesh_protocol::wire::SeqRange>,
        max_count: u32,
        max_bytes: u64,
        pages: u32,
    },
    Legacy,
}

#[derive(Debug, Clone)]
pub(crate) struct OutboundReq {
    pub peer: PeerId,
    pub sent: f64,
    pub what: Outbound,
}

/// Where a record under verification came from.
#[derive(Debug, Clone)]
pub(crate) enum Via {
    Gossip {
        msg: MsgId,
        source: PeerId,
    },
    Pull {
        peer: PeerId,
    },
    /// A child's insight carried by its request (its origin must be the child).
    Promotion {
        peer: PeerId,
    },
    /// Pushed by a tree neighbour (`id`: the record's hash, for the verdict).
    Tree {
        peer: PeerId,
        id: ContentHash,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct VerifyJob {
    pub via: Via,
    pub started: f64,
    pub items: Vec<crate::ingest::Candidate>,
    pub lane: Priority,
}

#[derive(Debug, Clone)]
pub(crate) enum WriteJob {
    Records {
        items: Vec<crate::ingest::Written>,
        via: Option<PeerId>,
        lane: Priority,
    },
    Submit {
        id: SubmitId,
        records: Vec<(SignedRecord, SubmittedRecord, metamesh_protocol::Depth)>,
    },
    Other,
}

/// The exchange core.
pub struct State {
    pub(crate) cfg: Config,
    pub(crate) key: Keypair,
    pub(crate) me: PeerId,
    pub(crate) rng: ChaCha8Rng,
    pub(crate) tree: DigestTree,
    pub(crate) own: crate::own::OwnSeq,
    pub(crate) book: Book,
    pub(crate) peers: BoundedMap<PeerId, PeerInfo>,
    pub(crate) origin_quota: BoundedMap<PeerId, TokenBucket>,
    pub(crate) request_rate: BoundedMap<PeerId, TokenBucket>,
    pub(crate) serve_bytes: BoundedMap<PeerId, TokenBucket>,
    /// Origins declined for a passable reason, until when.
    pub(crate) deferred: BoundedMap<PeerId, f64>,
    pub(crate) verifying: BoundedMap<VerifyId, VerifyJob>,
    pub(crate) writing: BoundedMap<WriteId, WriteJob>,
    pub(crate) outbound: BoundedMap<RequestId, OutboundReq>,
    /// Origin → (highest seq being pulled, from which peer, since).
    pub(crate) inflight: BoundedMap<PeerId, (u64, PeerId, f64)>,
    /// Origin → latest insight (seq, hash), for ordering and equivocation.
    pub(crate) insight_seqs: BoundedMap<PeerId, (u64, ContentHash)>,
    pub(crate) own_insight: Option<(SignedRecord, InsightBody)>,
    /// When our next insight broadcast may go (`None`: none pending yet).
    pub(crate) next_insight_at: Option<f64>,
    pub(crate) pending_insight:
        Option<(metamesh_protocol::DepthTable, metamesh_protocol::InsightSet)>,
    pub(crate) last_announce_at: f64,
    pub(crate) announced_root: u64,
    pub(crate) counters: Counters,
    pub(crate) next_id: u64,
    pub(crate) out: Vec<Output>,
    pub(crate) started: bool,
    /// The record tree (used when [`Config::tree_active`]).
    pub(crate) ptree: crate::tree::Tree,
}

impl State {
    pub fn new(cfg: Config, init: Init) -> State {
        let me = init.key.public().to_peer_id();
        let mut book = Book::new(cfg.max_reputation_entries);
        for (p, s) in init.reputation {
            book.load(p, s);
        }
        let own = crate::own::OwnSeq::new(init.epoch, init.last_own_seq);
        let insight_seq = init.own_insight.as_ref().map(|(_, b)| b.seq).unwrap_or(0);
        let mut insight_seqs = BoundedMap::new(cfg.max_insight_seqs);
        if let Some((r, b)) = &init.own_insight {
            insight_seqs.insert(me, (b.seq, r.content_hash()));
        }
        let _ = insight_seq;
        State {
            ptree: crate::tree::Tree::new(cfg.tree.clone(), me, init.seed ^ 0x7472_6565),
            tree: DigestTree::from_frontier(&init.frontier),
            rng: ChaCha8Rng::seed_from_u64(init.seed),
            own,
            book,
            peers: BoundedMap::new(cfg.max_peers),
            origin_quota: BoundedMap::new(cfg.max_origin_buckets),
            request_rate: BoundedMap::new(cfg.max_peer_buckets),
            serve_bytes: BoundedMap::new(cfg.max_peer_buckets),
            deferred: BoundedMap::new(cfg.max_deferred_origins),
            verifying: BoundedMap::new(cfg.max_pending_verify),
            writing: BoundedMap::new(cfg.max_pending_writes),
            outbound: BoundedMap::new(cfg.max_outbound_requests),
            inflight: BoundedMap::new(cfg.max_inflight_ranges),
            insight_seqs,
            own_insight: init.own_insight,
            next_insight_at: None,
            pending_insight: None,
            last_announce_at: f64::NEG_INFINITY,
            announced_root: 0,
            counters: Counters::default(),
            next_id: 1,
            out: Vec::new(),
            started: false,
            key: init.key,
            me,
            cfg,
        }
    }

    /// Handle one input at `now` (unix seconds); returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: f64) -> Vec<Output> {
        if !self.started {
            self.started = true;
            self.schedule(now + self.cfg.tick_secs, Timer::Tick);
            let first = self.jitter(self.cfg.announce_interval_secs);
            self.last_announce_at = now + first - self.cfg.announce_interval_secs;
        }
        match input {
            Input::PeerConnected { peer, .. } => self.on_connected(peer, now),
            Input::PeerDisconnected { peer } => self.on_disconnected(peer, now),
            Input::Gossip(g) => self.on_gossip(g, now),
            Input::Request { peer, id, request } => self.on_request(peer, id, request, now),
            Input::Served {
                peer,
                records,
                bytes,
                ..
            } => self.on_served(peer, records, bytes, now),
            Input::Response { peer, id, response } => self.on_response(peer, id, response, now),
            Input::RequestFailed { peer, id, .. } => self.on_request_failed(peer, id),
            Input::Verified { id, results } => self.on_verified(id, results, now),
            Input::Persisted { id, result } => self.on_persisted(id, result, now),
            Input::Timer(t) => self.on_timer(t, now),
            Input::Submit { id, patterns } => self.on_submit(id, patterns, now),
            Input::OwnInsights { stats, insights } => self.on_own_insights(stats, insights, now),
            Input::Config(cfg) => self.on_config(*cfg),
            Input::Charge { peer, event } => self.charge(peer, event, 1, now),
            Input::Tree { peer, msg } => self.on_tree(peer, msg, now),
        }
        std::mem::take(&mut self.out)
    }

    // ---- views ---------------------------------------------------------------

    pub fn peer_id(&self) -> PeerId {
        self.me
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The per-origin frontier the core believes the store holds.
    pub fn frontier(&self) -> &Frontier {
        self.tree.frontier()
    }

    /// Root digest of the frontier.
    pub fn frontier_root(&self) -> u64 {
        self.tree.root()
    }

    /// A peer's standing now (decayed, with trust).
    pub fn standing(&self, peer: &PeerId, now: f64) -> Standing {
        self.book.standing(peer, now, &self.cfg)
    }

    /// Every reputation state held (bounded by `max_reputation_entries`).
    pub fn reputation(&self) -> impl Iterator<Item = (&PeerId, &ReputationState)> {
        self.book.iter()
    }

    /// Connected peers.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.peers.keys()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Our highest own seq signed so far.
    pub fn own_seq(&self) -> u64 {
        self.own.last
    }

    /// Origins deferred (declined for a passable reason) and until when.
    pub fn deferred(&self) -> impl Iterator<Item = (&PeerId, &f64)> {
        self.deferred.iter()
    }

    /// Sizes of every bounded table and their bounds: (name, len, cap).
    pub fn table_sizes(&self) -> Vec<(&'static str, usize, usize)> {
        vec![
            ("reputation", self.book.len(), self.book.cap()),
            ("peers", self.peers.len(), self.peers.cap()),
            (
                "origin_quota",
                self.origin_quota.len(),
                self.origin_quota.cap(),
            ),
            (
                "request_rate",
                self.request_rate.len(),
                self.request_rate.cap(),
            ),
            (
                "serve_bytes",
                self.serve_bytes.len(),
                self.serve_bytes.cap(),
            ),
            ("deferred", self.deferred.len(), self.deferred.cap()),
            ("verifying", self.verifying.len(), self.verifying.cap()),
            ("writing", self.writing.len(), self.writing.cap()),
            ("outbound", self.outbound.len(), self.outbound.cap()),
            ("inflight", self.inflight.len(), self.inflight.cap()),
            (
                "insight_seqs",
                self.insight_seqs.len(),
                self.insight_seqs.cap(),
            ),
            ("frontier", self.tree.len(), self.cfg.max_origins),
        ]
        .into_iter()
        .chain(self.ptree.table_sizes())
        .collect()
    }

    /// The record tree's counters.
    pub fn tree_stats(&self) -> &crate::tree::TreeStats {
        self.ptree.stats()
    }

    /// The record tree's connected peers (peer, is a tree edge: parent or child).
    pub fn tree_neighbours(&self) -> impl Iterator<Item = (&PeerId, bool)> {
        self.ptree.active()
    }

    /// Where this node sits in the record tree (root, distance, children).
    pub fn tree_place(&self) -> crate::tree::Place {
        self.ptree.place()
    }

    // ---- helpers -----------------------------------------------------------------

    pub(crate) fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(crate) fn emit(&mut self, ev: Event) {
        self.out.push(Output::Event(ev));
    }

    pub(crate) fn schedule(&mut self, at: f64, timer: Timer) {
        self.out.push(Output::Schedule { at, timer });
    }

    /// A uniformly random delay in `[0.5, 1.5) × secs`.
    pub(crate) fn jitter(&mut self, secs: f64) -> f64 {
        secs * (0.5 + self.rng.gen::<f64>())
    }

    /// Charge (or credit) a peer and act on the transition: gossipsub score,
    /// disconnect, ban, event.
    pub(crate) fn charge(&mut self, peer: PeerId, event: ReputationEvent, n: u64, now: f64) {
        if peer == self.me || n == 0 {
            return;
        }
        let t = self.book.apply(peer, event, n, now, &self.cfg);
        if t.app_score_changed {
            self.out.push(Output::SetPeerScore {
                peer,
                score: t.app_score,
            });
        }
        if t.after.class != t.before.class || t.after.hostile != t.before.hostile {
            self.emit(Event::ReputationChanged {
                peer,
                event,
                score: t.after.score,
                class: t.after.class,
            });
        }
        let s = t.after.score;
        let was = t.before.score;
        if (s < self.cfg.ban_below && was >= self.cfg.ban_below)
            || (t.after.hostile && !t.before.hostile)
        {
            self.out.push(Output::Ban {
                peer,
                until: now + self.cfg.ban_secs,
            });
        }
        if self.peers.contains_key(&peer) && s < self.cfg.disconnect_below {
            self.peers.remove(&peer);
            self.out.push(Output::Disconnect { peer });
        }
    }

    /// Writes in flight leave room for local submissions: records from
    /// peers may use three quarters of `max_pending_writes`. Past it they
    /// are shed (a flood backs up in its senders, not in our write queue,
    /// and never takes the room our own writes need). A write the core
    /// forgot because its table was full would never be answered.
    pub(crate) fn writes_backed_up(&self) -> bool {
        let cap = self.writing.cap();
        self.writing.len() >= cap - cap / 4
    }

    pub(crate) fn is_deferred(&self, origin: &PeerId, now: f64) -> bool {
        self.deferred.get(origin).is_some_and(|until| *until > now)
    }

    pub(crate) fn defer(&mut self, origin: PeerId, until: f64) {
        let cur = self.deferred.get(&origin).copied().unwrap_or(0.0);
        self.deferred.insert(origin, until.max(cur));
    }

    // ---- peers and timers ---------------------------------------------------------

    fn on_connected(&mut self, peer: PeerId, now: f64) {
        if peer == self.me {
            return;
        }
        let st = self.standing(&peer, now);
        if st.refused || st.score < self.cfg.disconnect_below {
            self.out.push(Output::Disconnect { peer });
            return;
        }
        self.peers.insert(peer, PeerInfo::default());
        if self.cfg.tree_active() {
            self.tree_in(crate::tree::TreeIn::Up(peer), now);
        }
        // A new connection compares digests; it does not pull everything.
        self.schedule(now + self.cfg.connect_delay_secs, Timer::Reconcile(peer));
    }

    fn on_disconnected(&mut self, peer: PeerId, now: f64) {
        self.tree_in(crate::tree::TreeIn::Down(peer), now);
        self.peers.remove(&peer);
        self.inflight.retain(|_, (_, p, _)| *p != peer);
        self.outbound.retain(|_, o| o.peer != peer);
    }

    fn on_timer(&mut self, t: Timer, now: f64) {
        match t {
            Timer::Tick => self.on_tick(now),
            Timer::Reconcile(peer) => self.start_recon(peer, now),
            Timer::Repair(peer) => self.start_pull(peer, now),
            Timer::Tree => self.tree_in(crate::tree::TreeIn::Timer, now),
        }
    }

    fn on_tick(&mut self, now: f64) {
        self.schedule(now + self.cfg.tick_secs, Timer::Tick);
        // expire stuck exchanges
        let timeout = self.cfg.request_timeout_secs;
        let mut expired = Vec::new();
        for (id, o) in self.outbound.iter() {
            if now - o.sent > timeout {
                expired.push((*id, o.peer));
            }
        }
        for (id, peer) in expired {
            self.on_request_failed(peer, id);
        }
        self.verifying.retain(|_, j| now - j.started <= timeout);
        self.inflight
            .retain(|_, (_, _, since)| now - *since <= timeout);
        self.deferred.retain(|_, until| *until > now);
        self.maybe_announce(now);
        self.maybe_broadcast_insight(now);
        // Parent and child may be in different meshes (no announcement
        // crosses): reconcile with the parent on a cadence.
        if let Some(p) = self.cfg.parent {
            let due = self.peers.get(&p).is_some_and(|i| {
                !i.recon_running && now - i.last_recon >= self.cfg.parent_resync_secs
            });
            if due {
                self.start_recon(p, now);
            }
        }
        // persist changed reputation (when there is room: later otherwise)
        if self.writes_backed_up() {
            return;
        }
        let rep = self.book.take_dirty(1024);
        if !rep.is_empty() {
            let id = WriteId(self.id());
            self.writing.insert(id, WriteJob::Other);
            self.out.push(Output::Persist {
                id,
                batch: PersistBatch {
                    reputation: rep,
                    ..PersistBatch::default()
                },
                priority: Priority::High,
            });
        }
    }

    fn on_config(&mut self, cfg: Config) {
        self.book.set_cap(cfg.max_reputation_entries);
        self.peers.set_cap(cfg.max_peers);
        self.origin_quota.set_cap(cfg.max_origin_buckets);
        self.request_rate.set_cap(cfg.max_peer_buckets);
        self.serve_bytes.set_cap(cfg.max_peer_buckets);
        self.deferred.set_cap(cfg.max_deferred_origins);
        self.verifying.set_cap(cfg.max_pending_verify);
        self.writing.set_cap(cfg.max_pending_writes);
        self.outbound.set_cap(cfg.max_outbound_requests);
        self.inflight.set_cap(cfg.max_inflight_ranges);
        self.insight_seqs.set_cap(cfg.max_insight_seqs);
        self.ptree.set_config(cfg.tree.clone());
        self.cfg = cfg;
    }

    /// Announce our digest to direct peers: when it changed (at most every
    /// `announce_interval_secs`) or, unchanged, every `announce_idle_secs`.
    fn maybe_announce(&mut self, now: f64) {
        if !self.cfg.sharing || self.peers.is_empty() {
            return;
        }
        let root = self.tree.root();
        let since = now - self.last_announce_at;
        // With the tree on, new records travel by the tree (and its repair):
        // announcing changes is the last resort, at the tree's slower cadence
        // — unless a connected peer stays out of the tree (tree off, sharing
        // off, an older build): then announcements are all it gets.
        let silent_after = 2.0 * self.cfg.tree.heartbeat_secs;
        let interval = if self.cfg.tree_active() && self.ptree.silent_peers(now, silent_after) == 0
        {
            self.cfg.tree.announce_interval_secs
        } else {
            self.cfg.announce_interval_secs
        };
        let due = if root != self.announced_root {
            since >= interval
        } else {
            since >= self.cfg.announce_idle_secs
        };
        if !due {
            return;
        }
        self.last_announce_at = now;
        self.announced_root = root;
        let a = metamesh_protocol::wire::DigestAnnouncement {
            v: metamesh_protocol::wire::WIRE_VERSION,
            from: self.me,
            root,
            origins: self.tree.len() as u64,
            own_seq: self.tree.get(&self.me),
            at: now.max(0.0) as u64,
        };
        self.counters.announcements_sent += 1;
        self.out.push(Output::Publish {
            topic: Topic::Announce,
            data: metamesh_protocol::wire::GossipMessage::DigestAnnouncement(a).encode(),
        });
    }

    /// Merge repair targets into a peer's entry (bounded).
    pub(crate) fn add_targets(&mut self, peer: PeerId, targets: Vec<FrontierEntry>) {
        if let Some(info) = self.peers.get_mut(&peer) {
            for t in targets {
                if info.targets.len() >= MAX_TARGETS_PER_PEER
                    && !info.targets.contains_key(&t.origin)
                {
                    break;
                }
                let s = info.targets.entry(t.origin).or_insert(0);
                *s = (*s).max(t.seq);
            }
        }
    }
}

// ---- the record tree (exchange/src/tree/) ------------------------------------

impl State {
    /// Run the tree and turn what it asks for into outputs.
    pub(crate) fn tree_in(&mut self, input: crate::tree::TreeIn, now: f64) {
        use crate::tree::TreeOut;
        for o in self.ptree.handle(input, now) {
            match o {
                TreeOut::Send { to, msg } => self.out.push(Output::Tree { peer: to, msg }),
                TreeOut::Schedule { at } => self.schedule(at, Timer::Tree),
                TreeOut::Repair { peer } => {
                    // a session already running may predate the record: the next one
                    if self.peers.get(&peer).is_some_and(|i| i.recon_running) {
                        let at = now + self.cfg.recon_min_interval_secs;
                        self.schedule(at, Timer::Reconcile(peer));
                    } else {
                        self.start_recon(peer, now);
                    }
                }
                TreeOut::Deliver { from, id, record } => {
                    self.counters.gossip_records_received += 1;
                    self.ingest(vec![record], Via::Tree { peer: from, id }, now);
                }
            }
        }
    }

    fn on_tree(
        &mut self,
        peer: PeerId,
        msg: Result<crate::tree::TreeMsg, crate::tree::TreeError>,
        now: f64,
    ) {
        if !self.cfg.tree_active() || !self.peers.contains_key(&peer) {
            return;
        }
        match msg {
            Ok(msg) => self.tree_in(crate::tree::TreeIn::Message { from: peer, msg }, now),
            Err(e) => {
                self.charge(peer, ReputationEvent::DecodeError, 1, now);
                self.emit(Event::PatternRejected {
                    peer: Some(peer),
                    reason: match e {
                        crate::tree::TreeError::Codec(_) => "malformed_tree_message",
                    },
                });
            }
        }
    }

    pub(crate) fn tree_verdict(&mut self, id: ContentHash, accept: bool, now: f64) {
        self.tree_in(crate::tree::TreeIn::Verdict { id, accept }, now);
    }

    pub(crate) fn tree_have(&mut self, id: ContentHash, now: f64) {
        if self.cfg.tree_active() {
            self.tree_in(crate::tree::TreeIn::Have(id), now);
        }
    }
}
