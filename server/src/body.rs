//! The response body: one buffer, or a blob streamed as a sequence of
//! chunks (so a large memory-mapped blob is never resident all at once).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

/// A response body with an exact, known length.
pub struct Body {
    kind: Kind,
}

enum Kind {
    Once(Option<Bytes>),
    Chunks {
        chunks: Box<dyn Iterator<Item = Bytes> + Send>,
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
    pub fn chunks(chunks: impl Iterator<Item = Bytes> + Send + 'static, len: u64) -> Body {
        Body {
            kind: Kind::Chunks {
                chunks: Box::new(chunks),
                remaining: len,
            },
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match &mut self.get_mut().kind {
            Kind::Once(b) => b.take(),
            Kind::Chunks { chunks, remaining } => {
                let next = chunks.next();
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
