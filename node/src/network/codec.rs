//! The sync protocol's codec: libp2p's CBOR codec (one CBOR value per
//! stream), with reading split from decoding so that a message the peer
//! *sent wrong* is told apart from a stream that broke.
//!
//! libp2p's codec reports a decode failure as an `io::Error` whose kind
//! depends on the failure (`InvalidData`, `UnexpectedEof`, `Unsupported`, or
//! `Other` for a value of the wrong shape) and silently cuts a message at
//! the size limit, so an oversized or malformed response looked like a
//! dropped connection and went uncharged (issue 12 #12). Here the bytes are
//! read first (transport errors pass through untouched) and every failure
//! to decode them, or a message past the limit, is an [`Undecodable`]
//! error, which [`undecodable`] finds again in the failure event.

use std::io;

use futures::io::Cursor;
use futures::prelude::*;
use libp2p::request_response::{self, cbor};
use libp2p::StreamProtocol;
use metamesh_protocol::sync::{SyncRequest, SyncResponse};

/// A sync message the peer sent that cannot be decoded (or is too large).
#[derive(Debug, thiserror::Error)]
#[error("undecodable sync {what}: {reason}")]
pub struct Undecodable {
    pub what: &'static str,
    pub reason: String,
}

/// The [`Undecodable`] error inside a request-response failure, if the
/// failure was the peer's malformed message (not a broken stream).
pub fn undecodable(e: &io::Error) -> Option<&Undecodable> {
    e.get_ref()?.downcast_ref::<Undecodable>()
}

fn refuse(what: &'static str, reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Undecodable { what, reason })
}

/// The sync codec; see the module docs.
#[derive(Clone)]
pub struct SyncCodec {
    inner: cbor::codec::Codec<SyncRequest, SyncResponse>,
    max_request: u64,
    max_response: u64,
}

impl SyncCodec {
    pub fn new(max_request: u64, max_response: u64) -> Self {
        SyncCodec {
            // The inner limits never cut: the bytes it decodes are bounded here.
            inner: cbor::codec::Codec::default()
                .set_request_size_maximum(u64::MAX)
                .set_response_size_maximum(u64::MAX),
            max_request,
            max_response,
        }
    }
}

/// Read the whole stream, at most `max` bytes; one byte more is the peer's fault.
async fn read_bounded<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    max: u64,
    what: &'static str,
) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() as u64 > max {
        return Err(refuse(what, format!("more than {max} bytes")));
    }
    Ok(bytes)
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_bounded(io, self.max_request, "request").await?;
        self.inner
            .read_request(p, &mut Cursor::new(bytes))
            .await
            .map_err(|e| refuse("request", e.to_string()))
    }

    async fn read_response<T>(&mut self, p: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let bytes = read_bounded(io, self.max_response, "response").await?;
        self.inner
            .read_response(p, &mut Cursor::new(bytes))
            .await
            .map_err(|e| refuse("response", e.to_string()))
    }

    async fn write_request<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.inner.write_request(p, io, req).await
    }

    async fn write_response<T>(
        &mut self,
        p: &StreamProtocol,
        io: &mut T,
        res: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.inner.write_response(p, io, res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::request_response::Codec;

    fn proto() -> StreamProtocol {
        StreamProtocol::new(super::super::behaviour::SYNC_PROTOCOL)
    }

    async fn read(bytes: Vec<u8>, max: u64) -> io::Result<SyncResponse> {
        let mut c = SyncCodec::new(max, max);
        c.read_response(&proto(), &mut Cursor::new(bytes)).await
    }

    #[tokio::test]
    async fn malformed_or_oversized_responses_are_the_peers_fault() {
        // Not CBOR, CBOR of the wrong shape, a value cut short, too many bytes.
        let wrong_shape = metamesh_protocol::codec::to_cbor(&"hello");
        let good = {
            let mut v = Vec::new();
            let mut c = SyncCodec::new(1 << 20, 1 << 20);
            let mut resp = SyncResponse::refusal("");
            resp.error = None;
            c.write_response(&proto(), &mut v, resp).await.unwrap();
            v
        };
        let cut = good[..good.len() - 1].to_vec();
        for (bytes, max, want) in [
            (vec![0xff, 0x00, 0x13], 1 << 20, "undecodable sync response"),
            (wrong_shape, 1 << 20, "undecodable sync response"),
            (cut, 1 << 20, "undecodable sync response"),
            (good.clone(), good.len() as u64 - 1, "more than"),
        ] {
            let e = read(bytes, max).await.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            let u = undecodable(&e).expect("marked as the peer's fault");
            assert_eq!(u.what, "response");
            assert!(e.to_string().contains(want), "{e}");
        }
        // At the limit exactly, a good response still decodes.
        let ok = read(good.clone(), good.len() as u64).await.unwrap();
        assert!(ok.records.is_empty());
    }

    #[tokio::test]
    async fn a_broken_stream_is_not_the_peers_fault() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &mut [u8],
            ) -> std::task::Poll<io::Result<usize>> {
                std::task::Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
        let mut c = SyncCodec::new(1024, 1024);
        let e = c.read_response(&proto(), &mut Broken).await.unwrap_err();
        assert!(undecodable(&e).is_none());
        let e = c.read_request(&proto(), &mut Broken).await.unwrap_err();
        assert!(undecodable(&e).is_none());
    }
}
