//! Zero-copy blob bodies: mapped blob bytes leave through `sendfile(2)`.
//!
//! hyper writes a response body as the `Bytes` frames it is given, queued
//! as iovecs (HTTP/1.1 with vectored writes). A blob chunk's `Bytes` point
//! into the blob file's memory map, so writing them copies every byte from
//! the page cache into the socket. Instead, the blob GET handler registers
//! the map here ([`register`]) and the connection's stream ([`Stream`])
//! looks up each iovec it is asked to write: one that lies inside a
//! registered map is sent with `sendfile` from the mapped file at the same
//! offset, and the kernel moves page references instead of bytes. The
//! bytes sent are the bytes of the iovec (the file is never modified in
//! place, see `BlobData::Mapped`), so the result on the wire is identical;
//! anything not registered (headers, manifests, TLS records, h2 frames
//! copied into h2's buffers) is written normally.
//!
//! Soundness of the lookup: a registration lives as long as any chunk
//! `Bytes` of its map (each chunk's owner holds it), and an iovec being
//! written is borrowed from a live `Bytes`. So a hit always names the live
//! map containing that address, never a map that was unmapped and whose
//! address range was reused.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use berth_engine::BlobData;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Bytes sent with `sendfile` since start (for `/metrics` and tests).
pub static SENT_ZERO_COPY: AtomicU64 = AtomicU64::new(0);

/// Registered maps by start address.
static REGIONS: Mutex<BTreeMap<usize, Region>> = Mutex::new(BTreeMap::new());

struct Region {
    len: usize,
    file: Arc<File>,
    /// Live [`Registration`]s of this map.
    refs: usize,
}

fn regions() -> MutexGuard<'static, BTreeMap<usize, Region>> {
    // The map stays consistent across a panic (every update is one insert
    // or remove), so a poisoned lock is still usable.
    REGIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keeps a map registered while alive.
pub struct Registration {
    base: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut regions = regions();
        if let Some(r) = regions.get_mut(&self.base) {
            r.refs -= 1;
            if r.refs == 0 {
                regions.remove(&self.base);
            }
        }
    }
}

/// Registers the map behind `data`, if it is mapped.
pub fn register(data: &BlobData) -> Option<Arc<Registration>> {
    let (file, map) = data.mapped_file()?;
    let base = map.as_ptr() as usize;
    let mut regions = regions();
    regions
        .entry(base)
        .or_insert_with(|| Region {
            len: map.len(),
            file: file.clone(),
            refs: 0,
        })
        .refs += 1;
    Some(Arc::new(Registration { base }))
}

/// A body chunk that keeps its map registered.
pub struct Chunk {
    pub data: BlobData,
    pub registration: Option<Arc<Registration>>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self.data.as_ref()
    }
}

/// The file and offset holding `buf`, if `buf` lies inside a registered map.
fn lookup(buf: &[u8]) -> Option<(Arc<File>, u64)> {
    let addr = buf.as_ptr() as usize;
    let regions = regions();
    let (base, r) = regions.range(..=addr).next_back()?;
    let offset = addr - base;
    (offset + buf.len() <= r.len).then(|| (r.file.clone(), offset as u64))
}

/// A TCP stream whose writes of registered bytes use `sendfile`.
pub struct Stream {
    inner: TcpStream,
}

impl Stream {
    pub fn new(inner: TcpStream) -> Stream {
        Stream { inner }
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let sock = self.inner.as_raw_fd();
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let sent = self.inner.try_io(Interest::WRITABLE, || {
                let mut off = offset as libc::off_t;
                // SAFETY: both descriptors are open for the call (the file
                // is held by the caller, the socket by `self`); `off` is a
                // valid out-pointer.
                let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, len) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match sent {
                Ok(n) => {
                    SENT_ZERO_COPY.fetch_add(n as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    /// Writes a prefix of `bufs`: either a run of unregistered buffers with
    /// one `writev`, or the first buffer with `sendfile` if it is registered.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let bufs = match bufs.iter().position(|b| !b.is_empty()) {
            Some(first) => &bufs[first..],
            None => return Poll::Ready(Ok(0)),
        };
        if let Some((file, offset)) = lookup(&bufs[0]) {
            return this.poll_sendfile(cx, &file, offset, bufs[0].len());
        }
        let plain = bufs
            .iter()
            .position(|b| !b.is_empty() && lookup(b).is_some())
            .unwrap_or(bufs.len());
        Pin::new(&mut this.inner).poll_write_vectored(cx, &bufs[..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_engine::store::{LocalStore, PutMode};
    use berth_engine::{Algorithm, BlobStore, Digest};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn stored_blob(dir: &std::path::Path, bytes: &[u8]) -> BlobData {
        let store = LocalStore::open(dir).expect("open store");
        let digest = Digest::of(Algorithm::Sha256, bytes);
        store
            .put_bytes(&digest, bytes, PutMode::CreateOnly)
            .expect("put");
        store.get(&digest, None).expect("get")
    }

    #[test]
    fn lookup_finds_only_live_registered_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = stored_blob(dir.path(), &[7u8; 10_000]);
        let bytes: &[u8] = data.as_ref();
        assert!(lookup(&bytes[100..200]).is_none(), "not registered yet");
        let reg = register(&data).expect("mapped");
        let (_, off) = lookup(&bytes[100..200]).expect("registered");
        assert_eq!(off, 100);
        assert!(lookup(b"elsewhere").is_none());
        drop(reg);
        assert!(lookup(&bytes[100..200]).is_none(), "unregistered on drop");
    }

    #[tokio::test]
    async fn mixed_writes_arrive_in_order_and_mapped_bytes_use_sendfile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let data = stored_blob(dir.path(), &blob);
        let reg = register(&data);
        let chunks: Vec<bytes::Bytes> = data
            .into_chunks(1 << 20)
            .map(|c| {
                bytes::Bytes::from_owner(Chunk {
                    data: c,
                    registration: reg.clone(),
                })
            })
            .collect();
        drop(reg);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("read");
            got
        });
        let mut out = Stream::new(TcpStream::connect(addr).await.expect("connect"));
        let before = SENT_ZERO_COPY.load(Ordering::Relaxed);
        let mut expected = Vec::new();
        for c in &chunks {
            let head = b"HEAD";
            expected.extend_from_slice(head);
            expected.extend_from_slice(c);
            let mut parts = [IoSlice::new(head), IoSlice::new(c)];
            let mut parts = &mut parts[..];
            while !parts.is_empty() {
                let n = out.write_vectored(parts).await.expect("write");
                IoSlice::advance_slices(&mut parts, n);
            }
        }
        out.shutdown().await.expect("shutdown");
        drop(out);
        assert_eq!(reader.await.expect("reader"), expected);
        assert!(
            SENT_ZERO_COPY.load(Ordering::Relaxed) - before >= blob.len() as u64,
            "every mapped byte went through sendfile"
        );
    }
}
