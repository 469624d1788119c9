//! Zero-copy blob bodies: mapped blob bytes leave through `sendfile(2)`.
//!
//! hyper writes a response body as the `Bytes` frames it is given, queued
//! as iovecs (HTTP/1.1 with vectored writes; h2 chains large DATA payloads
//! the same way). A blob chunk's `Bytes` point into the blob file's memory
//! map, so writing them would copy every byte from the page cache into the
//! socket. Instead each plain-TCP connection has a [`Lane`]: the blob bodies
//! answered on that connection put their [`Region`] (the map, the file it
//! maps, owned) on the lane, and the connection's [`Stream`] checks each
//! iovec it is asked to write against the live regions of its own lane. An
//! iovec inside one is sent with `sendfile` from that region's file at the
//! same offset, and the kernel moves page references instead of bytes. The
//! bytes sent are the bytes of the iovec (the file is never modified in
//! place, see `BlobData::Mapped`), so the result on the wire is identical;
//! anything else (headers, manifests, TLS connections, small h2 frames
//! copied into h2's buffer) is written as is.
//!
//! hyper hands the stream bare iovecs, not the `Bytes` they came from, so the
//! stream can only recognise a chunk by its address. That is sound because
//! a [`Region`] *owns* its mapping: every chunk holds an `Arc<Region>`, the
//! region holds the `Arc<Mmap>`, and the lane finds regions only through
//! `Weak::upgrade`. A region that the lane can reach is therefore mapped,
//! and a live mapping's address range belongs to it alone: an iovec (itself
//! borrowed from a live `Bytes`) that lies inside it is those mapped bytes
//! and nothing else. No region can outlive its map, no map can be replaced
//! at its address while a region names it, and no lookup ever sees another
//! connection's regions.
//!
//! Shared state: a lane is owned by its connection (the stream and every
//! request of the connection hold an `Arc`); its mutex is taken by that
//! connection's writes and by its own blob responses (h2 polls bodies on
//! other tasks), never by another connection. There is no global registry.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};

use berth_engine::BlobData;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Bytes sent with `sendfile` since start (for `/metrics` and tests).
pub static SENT_ZERO_COPY: AtomicU64 = AtomicU64::new(0);

/// A mapped blob file and the map itself, owned: while a `Region` lives, its
/// address range is this map and the bytes there are the file's bytes at the
/// same offset (the map starts at file offset 0).
pub struct Region {
    map: Arc<memmap2::Mmap>,
    file: Arc<File>,
}

impl Region {
    /// The file offset of `buf`, if `buf` lies inside this map.
    fn offset_of(&self, buf: &[u8]) -> Option<u64> {
        let base = self.map.as_ptr() as usize;
        let addr = buf.as_ptr() as usize;
        let offset = addr.checked_sub(base)?;
        let end = offset.checked_add(buf.len())?;
        (end <= self.map.len()).then_some(offset as u64)
    }
}

/// The regions of the blob bodies answered on one connection.
#[derive(Default)]
pub struct Lane {
    /// Weak: a region lives exactly as long as the chunks that hold it; the
    /// lane only finds it while they do. Dead entries are pruned on every
    /// [`Lane::open`], so the list is as long as the connection's blob
    /// responses in flight.
    regions: Mutex<Vec<Weak<Region>>>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self
            .regions()
            .iter()
            .filter(|r| r.strong_count() > 0)
            .count();
        write!(f, "Lane({live} live regions)")
    }
}

impl Lane {
    fn regions(&self) -> MutexGuard<'_, Vec<Weak<Region>>> {
        // Every update is one push or retain: a panic cannot leave the list
        // inconsistent, so a poisoned lock is still usable.
        self.regions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts the map behind `data` on the lane, if it is mapped. The chunks
    /// of the body hold the returned region (see [`Chunk`]).
    pub fn open(&self, data: &BlobData) -> Option<Arc<Region>> {
        let (file, map) = data.mapped_file()?;
        let region = Arc::new(Region {
            map: map.clone(),
            file: file.clone(),
        });
        let mut regions = self.regions();
        regions.retain(|r| r.strong_count() > 0);
        regions.push(Arc::downgrade(&region));
        Some(region)
    }

    /// The live region holding `buf` and `buf`'s offset in its file.
    fn lookup(&self, buf: &[u8]) -> Option<(Arc<Region>, u64)> {
        if buf.is_empty() {
            return None;
        }
        let regions = self.regions();
        regions.iter().find_map(|r| {
            let r = r.upgrade()?;
            let offset = r.offset_of(buf)?;
            Some((r, offset))
        })
    }
}

/// A body chunk: its bytes and, on a lane, the region that owns their map.
pub struct Chunk {
    pub data: BlobData,
    pub region: Option<Arc<Region>>,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        self.data.as_ref()
    }
}

/// A TCP stream whose writes of bytes in its lane's regions use `sendfile`.
pub struct Stream {
    inner: TcpStream,
    lane: Arc<Lane>,
}

impl Stream {
    pub fn new(inner: TcpStream, lane: Arc<Lane>) -> Stream {
        Stream { inner, lane }
    }

    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let sock = self.inner.as_raw_fd();
        let Ok(start) = libc::off_t::try_from(offset) else {
            return Poll::Ready(Err(io::Error::other("file offset out of range")));
        };
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let sent = self.inner.try_io(Interest::WRITABLE, || {
                let mut off = start;
                // SAFETY: both descriptors are open for the call (the file
                // is held by the caller's region, the socket by `self`);
                // `off` is a valid out-pointer.
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

    /// Writes a prefix of `bufs`: either a run of buffers outside the lane's
    /// regions with one `writev`, or the first buffer with `sendfile` if it
    /// lies in one.
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
        if let Some((region, offset)) = this.lane.lookup(&bufs[0]) {
            return this.poll_sendfile(cx, &region.file, offset, bufs[0].len());
        }
        let plain = bufs
            .iter()
            .skip(1)
            .position(|b| this.lane.lookup(b).is_some())
            .map_or(bufs.len(), |i| i + 1);
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
    use crate::body::Body;
    use berth_engine::store::{LocalStore, PutMode};
    use berth_engine::{Algorithm, BlobStore, Digest};
    use http_body_util::BodyExt;
    use std::collections::{HashMap, HashSet};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn put(store: &LocalStore, bytes: &[u8]) -> Digest {
        let digest = Digest::of(Algorithm::Sha256, bytes);
        store
            .put_bytes(&digest, bytes, PutMode::CreateOnly)
            .expect("put");
        digest
    }

    /// A connected pair: the server side wrapped in a [`Stream`] on `lane`,
    /// the client side as a plain socket.
    async fn pair(lane: Arc<Lane>) -> (Stream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server, _) = accepted.expect("accept");
        (Stream::new(server, lane), client.expect("connect"))
    }

    async fn write_all_vectored(out: &mut Stream, parts: &mut [IoSlice<'_>]) {
        let mut parts = parts;
        while !parts.is_empty() {
            let n = out.write_vectored(parts).await.expect("write");
            IoSlice::advance_slices(&mut parts, n);
        }
    }

    #[test]
    fn a_lane_finds_only_its_own_live_regions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open store");
        let d = put(&store, &[7u8; 10_000]);
        let data = store.get(&d, None).expect("get");
        let (lane, other) = (Lane::default(), Lane::default());
        let bytes: &[u8] = data.as_ref();
        assert!(lane.lookup(&bytes[100..200]).is_none(), "not opened yet");
        let region = lane.open(&data).expect("mapped");
        let (_, off) = lane.lookup(&bytes[100..200]).expect("opened");
        assert_eq!(off, 100);
        assert!(lane.lookup(&bytes[9_999..]).is_some());
        assert!(lane.lookup(b"elsewhere").is_none());
        assert!(other.lookup(&bytes[100..200]).is_none(), "another lane");
        drop(region);
        assert!(
            lane.lookup(&bytes[100..200]).is_none(),
            "gone with its chunks"
        );
    }

    #[tokio::test]
    async fn mixed_writes_arrive_in_order_and_mapped_bytes_use_sendfile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path()).expect("open store");
        let blob: Vec<u8> = (0..9_000_000u32).map(|i| (i % 251) as u8).collect();
        let data = store.get(&put(&store, &blob), None).expect("get");
        let lane = Arc::new(Lane::default());
        let mut body = Body::blob(data, Some(&*lane));
        let (mut out, mut client) = pair(lane).await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.expect("read");
            got
        });
        let before = SENT_ZERO_COPY.load(Ordering::Relaxed);
        let mut expected = Vec::new();
        while let Some(frame) = body.frame().await {
            let c = frame.expect("frame").into_data().expect("data");
            let head = b"HEAD";
            expected.extend_from_slice(head);
            expected.extend_from_slice(&c);
            write_all_vectored(&mut out, &mut [IoSlice::new(head), IoSlice::new(&c)]).await;
        }
        out.shutdown().await.expect("shutdown");
        drop(out);
        assert_eq!(reader.await.expect("reader"), expected);
        assert!(
            SENT_ZERO_COPY.load(Ordering::Relaxed) - before >= blob.len() as u64,
            "every mapped byte went through sendfile"
        );
    }

    /// Maps, drops and remaps many distinct blobs of one size, so their
    /// maps land at addresses other blobs had a moment before, while
    /// several connections send them concurrently; every body that arrives
    /// must hash to the digest of the blob that was asked for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn remapped_addresses_never_send_another_blobs_bytes() {
        const BLOBS: usize = 12;
        const CONNECTIONS: usize = 8;
        const ROUNDS: usize = 30;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(LocalStore::open(dir.path()).expect("open store"));
        // Same size (several chunks), different bytes.
        let size = crate::body::STREAM_CHUNK + 12_345;
        let digests: Arc<Vec<Digest>> = Arc::new(
            (0..BLOBS)
                .map(|b| {
                    let bytes: Vec<u8> = (0..size)
                        .map(|i| {
                            (i as u64)
                                .wrapping_mul(2654435761)
                                .wrapping_add(b as u64 * 97) as u8
                        })
                        .collect();
                    put(&store, &bytes)
                })
                .collect(),
        );
        let seen = Arc::new(Mutex::new(HashMap::<usize, HashSet<usize>>::new()));
        let before = SENT_ZERO_COPY.load(Ordering::Relaxed);
        let mut tasks = Vec::new();
        for c in 0..CONNECTIONS {
            let (store, digests, seen) = (store.clone(), digests.clone(), seen.clone());
            tasks.push(tokio::spawn(async move {
                let lane = Arc::new(Lane::default());
                let (mut out, mut client) = pair(lane.clone()).await;
                let digests2 = digests.clone();
                // The client: `[blob index u32][len u64][bytes]` per response.
                let reader = tokio::spawn(async move {
                    let mut bodies = 0usize;
                    loop {
                        let mut head = [0u8; 12];
                        if client.read_exact(&mut head).await.is_err() {
                            return bodies;
                        }
                        let b = u32::from_le_bytes(head[..4].try_into().expect("4")) as usize;
                        let len = u64::from_le_bytes(head[4..].try_into().expect("8")) as usize;
                        let mut body = vec![0u8; len];
                        client.read_exact(&mut body).await.expect("body");
                        assert_eq!(
                            Digest::of(Algorithm::Sha256, &body),
                            digests2[b],
                            "connection {c}: body {bodies} was asked for as blob {b}"
                        );
                        bodies += 1;
                    }
                });
                for round in 0..ROUNDS {
                    let b = (round * 5 + c * 7) % BLOBS;
                    let d = digests[b].clone();
                    let s2 = store.clone();
                    // Every other response is a range, every read a new map.
                    let range = (round % 2 == 1).then_some(1_000..size as u64);
                    let data = tokio::task::spawn_blocking(move || s2.get(&d, None))
                        .await
                        .expect("join")
                        .expect("get");
                    let (_, map) = data.mapped_file().expect("mapped");
                    seen.lock()
                        .expect("seen")
                        .entry(map.as_ptr() as usize)
                        .or_default()
                        .insert(b);
                    let whole_len = data.len();
                    let body_data = match &range {
                        None => data,
                        Some(r) => {
                            drop(data);
                            let (d, s2) = (digests[b].clone(), store.clone());
                            let r = r.clone();
                            tokio::task::spawn_blocking(move || s2.get(&d, Some(r)))
                                .await
                                .expect("join")
                                .expect("get range")
                        }
                    };
                    let mut body = Body::blob(body_data, Some(&*lane));
                    let mut frames = Vec::new();
                    while let Some(f) = body.frame().await {
                        frames.push(f.expect("frame").into_data().expect("data"));
                    }
                    drop(body);
                    let len: usize = frames.iter().map(|f| f.len()).sum();
                    let mut head = [0u8; 12];
                    // A range is checked against the whole blob's digest by
                    // sending the missing prefix from a fresh read.
                    let prefix = match range {
                        None => None,
                        Some(_) => {
                            let (d, s2) = (digests[b].clone(), store.clone());
                            Some(
                                tokio::task::spawn_blocking(move || s2.get(&d, Some(0..1_000)))
                                    .await
                                    .expect("join")
                                    .expect("get prefix"),
                            )
                        }
                    };
                    let prefix_len = prefix.as_ref().map_or(0, |p| p.len());
                    assert_eq!(len + prefix_len, whole_len);
                    head[..4].copy_from_slice(&(b as u32).to_le_bytes());
                    head[4..].copy_from_slice(&((len + prefix_len) as u64).to_le_bytes());
                    let mut parts = vec![IoSlice::new(&head)];
                    if let Some(p) = &prefix {
                        parts.push(IoSlice::new(p.as_ref()));
                    }
                    parts.extend(frames.iter().map(|f| IoSlice::new(f)));
                    write_all_vectored(&mut out, &mut parts).await;
                    // Frames drop one by one, the last one unmapping.
                    drop(parts);
                    while let Some(f) = frames.pop() {
                        drop(f);
                        tokio::task::yield_now().await;
                    }
                }
                out.shutdown().await.expect("shutdown");
                drop(out);
                assert_eq!(reader.await.expect("reader"), ROUNDS);
            }));
        }
        for t in tasks {
            t.await.expect("connection task");
        }
        assert!(
            SENT_ZERO_COPY.load(Ordering::Relaxed) - before
                >= (CONNECTIONS * ROUNDS * 1_000) as u64
        );
        let seen = seen.lock().expect("seen");
        assert!(
            seen.values().any(|blobs| blobs.len() > 1),
            "no address was reused by another blob's map: the test did not exercise remapping"
        );
    }
}
