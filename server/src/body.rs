//! The response body: one buffer, or a stream of chunks (a blob, so a
//! large memory-mapped blob is never resident all at once and a blob still
//! arriving from the bucket is sent as it arrives).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use berth_engine::BlobData;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use hyper::body::{Frame, SizeHint};

use crate::sendfile::{Chunk, Lane};

/// Blobs larger than this are streamed in chunks of this size: 4 MiB keeps
/// per-chunk overhead (page release, re-faults, frames) small and resident
/// memory bounded.
pub const STREAM_CHUNK: usize = 4 << 20;

/// A response body with an exact, known length.
pub struct Body {
    kind: Kind,
}

enum Kind {
    Once(Option<Bytes>),
    Chunks {
        /// Polled from `poll_frame`: it must never block the thread (a chunk
        /// that is not there yet is `Pending`, with a waker).
        chunks: Pin<Box<dyn Stream<Item = Bytes> + Send>>,
        remaining: u64,
    },
}

impl Body {
    /// A body of one buffer.
    pub fn new(bytes: Bytes) -> Body {
        Body {
            kind: Kind::Once(Some(bytes).filter(|b| !b.is_empty())),
        }
    }

    /// A body of `len` bytes produced by `chunks`, one frame per chunk.
    /// `chunks` must not block (it runs on an async worker).
    pub fn chunks(chunks: impl Iterator<Item = Bytes> + Send + 'static, len: u64) -> Body {
        Body::stream(futures::stream::iter(chunks), len)
    }

    /// A body of `len` bytes produced by `chunks`, one frame per chunk.
    pub fn stream(chunks: impl Stream<Item = Bytes> + Send + 'static, len: u64) -> Body {
        Body {
            kind: Kind::Chunks {
                chunks: Box::pin(chunks),
                remaining: len,
            },
        }
    }

    /// The body of a blob read: chunks of [`STREAM_CHUNK`] bytes. Mapped
    /// bytes answered on a connection with a `lane` carry their region, so
    /// the connection sends them with `sendfile(2)` (see `sendfile`); each
    /// sent chunk gives its mapped pages back, so resident memory stays
    /// bounded. A blob still arriving from the bucket yields each chunk
    /// once it has arrived, without blocking a worker thread
    /// (`BlobData::into_async_chunks`).
    pub fn blob(data: BlobData, lane: Option<&Lane>) -> Body {
        let len = data.len() as u64;
        let region = lane.and_then(|l| l.open(&data));
        let chunks = data.into_async_chunks(STREAM_CHUNK).map(move |data| {
            Bytes::from_owner(Chunk {
                data,
                region: region.clone(),
            })
        });
        Body::stream(chunks, len)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match &mut self.get_mut().kind {
            Kind::Once(b) => b.take(),
            Kind::Chunks { chunks, remaining } => {
                let next = match chunks.as_mut().poll_next(cx) {
                    Poll::Ready(next) => next,
                    Poll::Pending => return Poll::Pending,
                };
                if let Some(b) = &next {
                    *remaining = remaining.saturating_sub(b.len() as u64);
                }
                next
            }
        };
        Poll::Ready(next.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Once(b) => b.is_none(),
            Kind::Chunks { remaining, .. } => *remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Once(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Chunks { remaining, .. } => SizeHint::with_exact(*remaining),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn once_and_chunks_yield_their_bytes_and_exact_sizes() {
        let b = Body::new(Bytes::from_static(b"abc"));
        assert_eq!(hyper::body::Body::size_hint(&b).exact(), Some(3));
        assert_eq!(&b.collect().await.unwrap().to_bytes()[..], b"abc");

        let empty = Body::new(Bytes::new());
        assert!(hyper::body::Body::is_end_stream(&empty));

        let parts = vec![Bytes::from_static(b"ab"), Bytes::from_static(b"cd")];
        let c = Body::chunks(parts.into_iter(), 4);
        assert_eq!(hyper::body::Body::size_hint(&c).exact(), Some(4));
        assert_eq!(&c.collect().await.unwrap().to_bytes()[..], b"abcd");
    }
}
