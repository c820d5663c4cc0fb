//! `GET /v1/events`: server-sent events with `id:` and resume through
//! `Last-Event-ID` from a bounded replay ring.
//!
//! An [`EventHub`] relays the node's broadcast (started by the first event
//! stream), numbering events `<boot>-<n>` and keeping the last
//! [`EVENT_REPLAY`] of them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::http::AppState;
use super::{ApiError, NodeApi};
use crate::events::NodeEvent;

/// Events kept for resumption (and the relay channel's capacity).
pub const EVENT_REPLAY: usize = 1024;
/// SSE keep-alive comment interval.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
struct Frame {
    id: u64,
    kind: &'static str,
    data: Arc<str>,
}

#[derive(Debug, Clone)]
enum Item {
    Event(Frame),
    /// The relay fell behind the node and lost this many events.
    Lagged(u64),
    /// A resume that cannot be served from the ring: re-read state.
    Reset(String),
}

struct Ring {
    frames: VecDeque<Frame>,
    /// Id of the last event numbered (0: none yet).
    last_id: u64,
}

pub(super) struct EventHub {
    /// Distinguishes this process's ids from an earlier one's.
    boot: String,
    started: OnceLock<()>,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Item>,
}

impl EventHub {
    pub fn new() -> Self {
        EventHub {
            boot: format!("{:08x}", rand::random::<u32>()),
            started: OnceLock::new(),
            ring: Mutex::new(Ring {
                frames: VecDeque::with_capacity(EVENT_REPLAY),
                last_id: 0,
            }),
            tx: broadcast::channel(EVENT_REPLAY).0,
        }
    }

    /// Start relaying the node's events (once per hub).
    fn ensure_started(
        self: &Arc<Self>,
        subscribe: impl FnOnce() -> broadcast::Receiver<NodeEvent>,
    ) {
        self.started.get_or_init(|| {
            let rx = subscribe();
            tokio::spawn(relay(Arc::downgrade(self), rx));
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, ev: &NodeEvent) {
        let data: Arc<str> = match serde_json::to_string(ev) {
            Ok(s) => s.into(),
            Err(_) => return,
        };
        let mut ring = self.lock();
        ring.last_id += 1;
        let frame = Frame {
            id: ring.last_id,
            kind: ev.kind(),
            data,
        };
        if ring.frames.len() >= EVENT_REPLAY {
            ring.frames.pop_front();
        }
        ring.frames.push_back(frame.clone());
        // Sent under the lock: a subscriber sees each event once, either
        // in its replay or live.
        let _ = self.tx.send(Item::Event(frame));
    }

    fn lagged(&self, n: u64) {
        let mut ring = self.lock();
        ring.last_id += n;
        let _ = self.tx.send(Item::Lagged(n));
    }

    /// A live receiver and what to send first for a client that last saw
    /// `last_event_id` (the `Last-Event-ID` header).
    fn subscribe_from(
        &self,
        last_event_id: Option<&str>,
    ) -> (broadcast::Receiver<Item>, Vec<Item>) {
        let ring = self.lock();
        let rx = self.tx.subscribe();
        let Some(raw) = last_event_id.map(str::trim).filter(|s| !s.is_empty()) else {
            return (rx, Vec::new());
        };
        let reset = |why: &str| vec![Item::Reset(why.to_string())];
        let Some(n) = raw
            .split_once('-')
            .filter(|(boot, _)| *boot == self.boot)
            .and_then(|(_, n)| n.parse::<u64>().ok())
        else {
            return (
                rx,
                reset("Last-Event-ID is not from this node process; events before it are gone"),
            );
        };
        if n > ring.last_id {
            return (rx, reset("Last-Event-ID is newer than any event sent"));
        }
        let oldest = ring
            .frames
            .front()
            .map(|f| f.id)
            .unwrap_or(ring.last_id + 1);
        if n + 1 < oldest {
            return (
                rx,
                reset("Last-Event-ID has left the replay ring; events were missed"),
            );
        }
        let mut out = Vec::new();
        let mut prev = n;
        for f in ring.frames.iter().filter(|f| f.id > n) {
            if f.id > prev + 1 {
                out.push(Item::Lagged(f.id - prev - 1));
            }
            prev = f.id;
            out.push(Item::Event(f.clone()));
        }
        (rx, out)
    }

    fn frame(&self, item: Item) -> Event {
        match item {
            Item::Event(f) => Event::default()
                .id(format!("{}-{}", self.boot, f.id))
                .event(f.kind)
                .data(&*f.data),
            Item::Lagged(n) => Event::default().comment(format!("lagged: {n} events skipped")),
            Item::Reset(reason) => Event::default()
                .event("reset")
                .data(serde_json::json!({"type": "reset", "reason": reason}).to_string()),
        }
    }
}

/// Number and keep the node's events until the node or the hub is gone.
async fn relay(hub: Weak<EventHub>, mut rx: broadcast::Receiver<NodeEvent>) {
    loop {
        let got = rx.recv().await;
        let Some(hub) = hub.upgrade() else { return };
        match got {
            Ok(ev) => hub.publish(&ev),
            Err(broadcast::error::RecvError::Lagged(n)) => hub.lagged(n),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

pub(super) async fn get_events<N: NodeApi>(
    State(s): State<AppState<N>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = s
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::unavailable("too many event streams open; retry later"))?;
    s.events.ensure_started(|| s.node.subscribe());
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    let (rx, first) = s.events.subscribe_from(last);
    let replayed_up_to = first
        .iter()
        .filter_map(|i| match i {
            Item::Event(f) => Some(f.id),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let hub = s.events.clone();
    let live = BroadcastStream::new(rx).filter_map(move |item| {
        let keep = match item {
            Ok(Item::Event(f)) if f.id <= replayed_up_to => None,
            Ok(i) => Some(i),
            Err(BroadcastStreamRecvError::Lagged(n)) => Some(Item::Lagged(n)),
        };
        futures::future::ready(keep)
    });
    let stream = futures::stream::iter(first)
        .chain(live)
        .map(move |item| {
            // The permit lives as long as the stream.
            let _held = &permit;
            Ok(hub.frame(item))
        })
        .take_until(s.shutdown_signal());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64) -> NodeEvent {
        NodeEvent::PeerJoined {
            peer: format!("p{i}"),
        }
    }

    fn ids(items: &[Item]) -> Vec<u64> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Event(f) => Some(f.id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn resume_replays_after_the_given_id() {
        let hub = EventHub::new();
        for i in 0..5 {
            hub.publish(&ev(i));
        }
        let id = format!("{}-2", hub.boot);
        let (_rx, first) = hub.subscribe_from(Some(&id));
        assert_eq!(ids(&first), vec![3, 4, 5]);
        let (_rx, first) = hub.subscribe_from(Some(&format!("{}-5", hub.boot)));
        assert!(first.is_empty());
        let (_rx, first) = hub.subscribe_from(None);
        assert!(first.is_empty());
    }

    #[test]
    fn unknown_or_lost_ids_reset() {
        let hub = EventHub::new();
        for i in 0..(EVENT_REPLAY as u64 + 10) {
            hub.publish(&ev(i));
        }
        for bad in [
            "other-3".to_string(),
            format!("{}-x", hub.boot),
            format!("{}-999999", hub.boot),
            format!("{}-1", hub.boot),
        ] {
            let (_rx, first) = hub.subscribe_from(Some(&bad));
            assert!(matches!(first.as_slice(), [Item::Reset(_)]), "{bad}");
        }
        // The oldest id still in the ring minus one resumes fully.
        let (_rx, first) = hub.subscribe_from(Some(&format!("{}-10", hub.boot)));
        assert_eq!(first.len(), EVENT_REPLAY);
    }

    #[test]
    fn a_relay_lag_shows_as_a_gap_comment_in_replay() {
        let hub = EventHub::new();
        hub.publish(&ev(0));
        hub.lagged(3);
        hub.publish(&ev(1));
        let (_rx, first) = hub.subscribe_from(Some(&format!("{}-0", hub.boot)));
        assert!(matches!(first[0], Item::Event(ref f) if f.id == 1));
        assert!(matches!(first[1], Item::Lagged(3)));
        assert!(matches!(first[2], Item::Event(ref f) if f.id == 5));
    }
}
