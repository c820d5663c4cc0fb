//! A peer that answers the node's sync requests with bytes that are not a
//! sync response is charged for it (issue 12 #12: before, libp2p's codec
//! error looked like a broken stream and cost the sender nothing).
//!
//! The rogue is a bare libp2p swarm that speaks the sync protocol with a
//! codec of raw bytes; the node pulls from it on connect (its digest
//! comparison) and gets garbage back.
#![allow(clippy::unwrap_used)]

use std::io;
use std::time::Duration;

use futures::prelude::*;
use futures::StreamExt;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, StreamProtocol};
use metamesh_node::network::behaviour::SYNC_PROTOCOL;
use metamesh_tests::*;

async fn read_all<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    io.take(1 << 20).read_to_end(&mut v).await?;
    Ok(v)
}

/// Requests and responses as raw bytes: the rogue sends what it likes.
#[derive(Clone, Default)]
struct Raw;

impl request_response::Codec for Raw {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_all(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_all(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&r).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&r).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_answering_with_garbage_is_charged() {
    let v = TestNode::start(test_config(&[])).await;

    let mut rogue = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::<Raw>::new(
                [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                request_response::Config::default(),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    let rogue_id = *rogue.local_peer_id();
    rogue.dial(v.addr()).unwrap();
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Some(ev) = rogue.next().await {
            if let SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            }) = ev
            {
                // Alternate: not CBOR at all, then CBOR of the wrong shape.
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let garbage = if n % 2 == 0 {
                    vec![0xff, 0x13, 0x37, 0x00]
                } else {
                    metamesh_protocol::codec::to_cbor(&"not a sync response")
                };
                let _ = rogue.behaviour_mut().send_response(channel, garbage);
            }
        }
    });

    wait_until(
        "V charged the rogue for an undecodable response",
        || async {
            let rep = get_json(&v.api(), "/v1/reputation").await;
            rep.as_array().unwrap().iter().any(|r| {
                r["peer_id"] == rogue_id.to_string()
                    && r["counters"]["decode_error"].as_u64().unwrap_or(0) >= 1
                    && r["score"].as_f64().unwrap() < 0.0
            })
        },
    )
    .await;
    assert!(requests.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // Nothing was stored from it.
    assert_eq!(v.pattern_count(), 0);
}
