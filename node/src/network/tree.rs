//! `/metamesh/tree/1`: the exchange core's record tree on the wire.
//!
//! One long-lived outbound stream per peer ([`libp2p_stream`]), opened on
//! the first message and reopened on the next one after it fails, carries
//! `TreeMsg::encode()` bytes as length-prefixed frames (4-byte big-endian
//! length, [`LengthDelimitedCodec`]), in order (FIFO per link). Each peer
//! has a bounded send queue: a message that finds it full is dropped (the
//! tree repairs loss by ids/graft, the core by digest repair). Inbound
//! streams are bounded per peer and in all; a frame's length is read
//! first and a frame over [`MAX_TREE_MSG_BYTES`] is refused before any
//! allocation (reported as [`FrameError::TooLarge`], charged by the core).
//! The bytes are opaque here: the actor decodes them (`TreeMsg::decode`)
//! and hands them to the core with the connection's authenticated peer.
//!
//! A node with the tree off does not accept the protocol, so a peer that
//! tries sees "unsupported protocol" and stops sending to it until the
//! peer reconnects.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures::{SinkExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use metamesh_exchange::tree::MAX_TREE_MSG_BYTES;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError};
use tokio_util::compat::FuturesAsyncReadCompatExt;

use super::NetError;

/// The protocol name.
pub const TREE_PROTOCOL: StreamProtocol = StreamProtocol::new("/metamesh/tree/1");
/// Frames queued per peer before new ones are dropped.
pub const SEND_QUEUE: usize = 256;
/// Inbound streams open at once from one peer (a reconnect may overlap).
pub const MAX_INBOUND_PER_PEER: usize = 2;
/// Inbound streams open at once in all.
pub const MAX_INBOUND: usize = 512;
/// Frames read but not yet taken by the actor (the readers wait: yamux's
/// flow control then slows the senders).
const EVENT_QUEUE: usize = 1024;

/// A frame that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("tree frame over {max} bytes")]
    TooLarge { max: usize },
}

/// What the tree's streams report to [`super::Net`].
#[derive(Debug)]
enum TreeEvent {
    Frame {
        peer: PeerId,
        frame: Result<Vec<u8>, FrameError>,
    },
    /// The peer does not speak `/metamesh/tree/1`.
    Unsupported { peer: PeerId },
}

/// The record tree as a node sees it (`Node::tree_stats`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreeView {
    /// `[tree] enabled`.
    pub enabled: bool,
    /// The core's tree counters (`pushes_received` − `duplicates`: records
    /// that arrived first by the tree).
    pub core: metamesh_exchange::tree::TreeStats,
    /// Tree neighbours, and how many of them we push records to in full.
    pub neighbours: usize,
    pub eager: usize,
    pub transport: TreeCounters,
}

/// Counters of the tree's transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TreeCounters {
    pub frames_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub bytes_received: u64,
    /// Frames dropped: full queue, a peer not connected or without the protocol.
    pub frames_dropped: u64,
    /// Outbound streams opened (first and reopened).
    pub streams_opened: u64,
    /// Inbound streams refused (over the per-peer or total bound).
    pub inbound_refused: u64,
    /// Inbound frames over [`MAX_TREE_MSG_BYTES`].
    pub frames_too_large: u64,
    /// Peers found not to speak the protocol.
    pub unsupported: u64,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_received: AtomicU64,
    bytes_received: AtomicU64,
    frames_dropped: AtomicU64,
    streams_opened: AtomicU64,
    inbound_refused: AtomicU64,
    frames_too_large: AtomicU64,
    unsupported: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_TREE_MSG_BYTES)
        .new_codec()
}

/// The node's side of the tree protocol (owned by [`super::Net`]).
pub struct TreeNet {
    enabled: bool,
    control: Control,
    queues: HashMap<PeerId, mpsc::Sender<Vec<u8>>>,
    unsupported: HashSet<PeerId>,
    /// Kept so that `events` never ends (and for the writers).
    events_tx: mpsc::Sender<TreeEvent>,
    events: mpsc::Receiver<TreeEvent>,
    counters: Arc<Counters>,
}

impl TreeNet {
    /// With `enabled`, accept inbound `/metamesh/tree/1` streams (must run
    /// inside the tokio runtime); without, refuse the protocol and send nothing.
    pub fn new(mut control: Control, enabled: bool) -> Result<TreeNet, NetError> {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let counters = Arc::new(Counters::default());
        if enabled {
            let incoming = control
                .accept(TREE_PROTOCOL)
                .map_err(|e| NetError::Config(format!("{TREE_PROTOCOL}: {e}")))?;
            let rt = tokio::runtime::Handle::try_current()
                .map_err(|e| NetError::Config(format!("{TREE_PROTOCOL}: {e}")))?;
            rt.spawn(accept(incoming, events_tx.clone(), counters.clone()));
        }
        Ok(TreeNet {
            enabled,
            control,
            queues: HashMap::new(),
            unsupported: HashSet::new(),
            events_tx,
            events,
            counters,
        })
    }

    /// Queue `frame` for `peer` (connected, as the caller checked); dropped
    /// when the queue is full or the peer does not speak the protocol.
    /// `true` if queued.
    pub fn send(&mut self, peer: PeerId, frame: Vec<u8>, connected: bool) -> bool {
        if !self.enabled || !connected || self.unsupported.contains(&peer) {
            add(&self.counters.frames_dropped, 1);
            return false;
        }
        let frame = match self.queues.get(&peer) {
            Some(q) => match q.try_send(frame) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    add(&self.counters.frames_dropped, 1);
                    return false;
                }
                // the writer ended (its stream failed): reopen
                Err(mpsc::error::TrySendError::Closed(f)) => f,
            },
            None => frame,
        };
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        let queued = tx.try_send(frame).is_ok();
        self.queues.insert(peer, tx);
        tokio::spawn(write(
            peer,
            self.control.clone(),
            rx,
            self.events_tx.clone(),
            self.counters.clone(),
        ));
        queued
    }

    /// The peer's last connection closed: end its writer, forget its mark.
    pub fn on_disconnected(&mut self, peer: &PeerId) {
        self.queues.remove(peer);
        self.unsupported.remove(peer);
    }

    /// The next inbound frame (peers without the protocol are noted here).
    pub async fn next(&mut self) -> (PeerId, Result<Vec<u8>, FrameError>) {
        loop {
            // `events_tx` lives in `self`: the channel never closes.
            let Some(ev) = self.events.recv().await else {
                futures::future::pending::<()>().await;
                continue;
            };
            match ev {
                TreeEvent::Frame { peer, frame } => return (peer, frame),
                TreeEvent::Unsupported { peer } => {
                    if self.unsupported.insert(peer) {
                        add(&self.counters.unsupported, 1);
                    }
                    self.queues.remove(&peer);
                }
            }
        }
    }

    pub fn counters(&self) -> TreeCounters {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TreeCounters {
            frames_sent: g(&c.frames_sent),
            bytes_sent: g(&c.bytes_sent),
            frames_received: g(&c.frames_received),
            bytes_received: g(&c.bytes_received),
            frames_dropped: g(&c.frames_dropped),
            streams_opened: g(&c.streams_opened),
            inbound_refused: g(&c.inbound_refused),
            frames_too_large: g(&c.frames_too_large),
            unsupported: g(&c.unsupported),
        }
    }
}

/// One peer's writer: open the stream, write what is queued (flushing when
/// the queue is empty); end on any failure (the next message reopens).
async fn write(
    peer: PeerId,
    mut control: Control,
    mut rx: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<TreeEvent>,
    counters: Arc<Counters>,
) {
    let Some(mut next) = rx.recv().await else {
        return;
    };
    let stream = match control.open_stream(peer, TREE_PROTOCOL).await {
        Ok(s) => s,
        Err(OpenStreamError::UnsupportedProtocol(_)) => {
            let _ = events.send(TreeEvent::Unsupported { peer }).await;
            return;
        }
        Err(e) => {
            tracing::debug!(%peer, error = %e, "opening the tree stream");
            return;
        }
    };
    add(&counters.streams_opened, 1);
    let mut sink = FramedWrite::new(stream.compat(), codec());
    loop {
        let n = next.len() as u64;
        if let Err(e) = sink.feed(Bytes::from(next)).await {
            tracing::debug!(%peer, error = %e, "writing to the tree stream");
            return;
        }
        add(&counters.frames_sent, 1);
        add(&counters.bytes_sent, n);
        next = match rx.try_recv() {
            Ok(f) => f,
            Err(_) => {
                if let Err(e) = SinkExt::<Bytes>::flush(&mut sink).await {
                    tracing::debug!(%peer, error = %e, "flushing the tree stream");
                    return;
                }
                match rx.recv().await {
                    Some(f) => f,
                    None => break,
                }
            }
        };
    }
    let _ = SinkExt::<Bytes>::close(&mut sink).await;
}

/// Inbound streams open per peer; a slot is given back when its reader ends.
#[derive(Default)]
struct Slots {
    per_peer: HashMap<PeerId, usize>,
    total: usize,
}

struct Slot {
    slots: Arc<Mutex<Slots>>,
    peer: PeerId,
}

impl Slot {
    fn take(slots: &Arc<Mutex<Slots>>, peer: PeerId) -> Option<Slot> {
        let mut s = slots.lock().unwrap_or_else(PoisonError::into_inner);
        let n = s.per_peer.get(&peer).copied().unwrap_or(0);
        if n >= MAX_INBOUND_PER_PEER || s.total >= MAX_INBOUND {
            return None;
        }
        s.per_peer.insert(peer, n + 1);
        s.total += 1;
        Some(Slot {
            slots: slots.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_peer.remove(&self.peer);
            }
        }
    }
}

async fn accept(
    mut incoming: libp2p_stream::IncomingStreams,
    events: mpsc::Sender<TreeEvent>,
    counters: Arc<Counters>,
) {
    let slots = Arc::new(Mutex::new(Slots::default()));
    while let Some((peer, stream)) = incoming.next().await {
        match Slot::take(&slots, peer) {
            Some(slot) => {
                tokio::spawn(read(peer, stream, events.clone(), counters.clone(), slot));
            }
            None => {
                add(&counters.inbound_refused, 1);
                tracing::debug!(%peer, "refusing a tree stream (too many open)");
            }
        }
    }
}

/// One inbound stream: frames to the actor until it ends or breaks. An
/// oversized frame is reported and ends the stream (its rest is unread).
async fn read(
    peer: PeerId,
    stream: Stream,
    events: mpsc::Sender<TreeEvent>,
    counters: Arc<Counters>,
    _slot: Slot,
) {
    let mut frames = FramedRead::new(stream.compat(), codec());
    while let Some(r) = frames.next().await {
        let frame = match r {
            Ok(b) => {
                add(&counters.frames_received, 1);
                add(&counters.bytes_received, b.len() as u64);
                Ok(b.to_vec())
            }
            Err(e) => match e
                .get_ref()
                .and_then(|i| i.downcast_ref::<LengthDelimitedCodecError>())
            {
                Some(_) => {
                    add(&counters.frames_too_large, 1);
                    Err(FrameError::TooLarge {
                        max: MAX_TREE_MSG_BYTES,
                    })
                }
                None => {
                    tracing::debug!(%peer, error = %e, "reading a tree stream");
                    return;
                }
            },
        };
        let last = frame.is_err();
        if events.send(TreeEvent::Frame { peer, frame }).await.is_err() || last {
            return;
        }
    }
}
