//! How long and how many: the bounds that keep slow or numerous clients
//! from holding the server's connections and upload sessions.
//!
//! ```text
//! accept ── connection permit (BERTH_MAX_CONNECTIONS; beyond it accept waits,
//!   │         and says so: a rate-limited warning, berth_connections_waiting)
//!   │
//!   ├─ TLS handshake                  ── BERTH_TLS_HANDSHAKE_TIMEOUT_SECONDS
//!   ├─ first bytes (h1 vs h2 preface) ── BERTH_HEADER_READ_TIMEOUT_SECONDS  (PrefaceDeadline)
//!   ├─ HTTP/1 request head            ── BERTH_HEADER_READ_TIMEOUT_SECONDS  (hyper's header_read_timeout)
//!   ├─ request body: no byte for      ── BERTH_BODY_READ_TIMEOUT_SECONDS    (RequestBody)
//!   └─ no request in flight for       ── BERTH_IDLE_TIMEOUT_SECONDS         (Activity)
//! ```
//!
//! A request is in flight from the moment hyper hands it to the service
//! until its response body is dropped (sent, or the stream reset): the
//! response is wrapped in a [`Tracked`] body holding an [`InFlight`] guard,
//! so a slow download is never idle, on HTTP/1 or h2 alike. Bytes alone do
//! not count as activity: an h2 client that only sends PINGs or SETTINGS
//! holds no request and is closed like a silent HTTP/1 keep-alive one.
//!
//! Every handler receives its body as a [`RequestBody`], never hyper's
//! `Incoming`: the idle timeout is part of the type, so no body-reading path
//! (uploads, manifests, charts, JSON APIs, the token form) can forget it.
//! A body that stalls fails with [`BodyError::Idle`]; the request then
//! fails like any other broken body (its upload chunk is not acknowledged
//! and the session's writer is released), and the HTTP/1 connection is
//! closed after the answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// As nginx's and distribution's keep-alive timeouts.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection and request bounds, from the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A request body that sends nothing for this long fails.
    pub body_read_timeout: Duration,
    /// A connection's first bytes, and each HTTP/1 request head, must
    /// arrive within this.
    pub header_read_timeout: Duration,
    /// Open connections at most; the accept loop waits for one to close.
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// A TLS handshake must complete within this.
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no body bytes arrived for {} s; the request is cut off", .0.as_secs())]
    Idle(Duration),
    #[error("{0}")]
    Transport(#[from] hyper::Error),
}

/// A request body with an idle timeout: if the client sends nothing for
/// `idle` while the handler waits for the next frame, the next frame is
/// [`BodyError::Idle`]. The timer runs only while the handler waits on the
/// client (not while it writes what it has) and restarts on every frame.
pub struct RequestBody {
    /// `None`: an empty body (the console's in-process API reads).
    inner: Option<Incoming>,
    idle: Duration,
    /// Armed while a poll is pending; created on the first wait.
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// Set when the timeout fired; read by the server loop, which then
    /// closes the connection after the answer.
    timed_out: Arc<AtomicBool>,
}

impl RequestBody {
    pub fn new(inner: Incoming, idle: Duration, timed_out: Arc<AtomicBool>) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            idle,
            timer: None,
            waiting: false,
            timed_out,
        }
    }

    /// An empty body, for a request made in-process.
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            idle: Duration::ZERO,
            timer: None,
            waiting: false,
            timed_out: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(BodyError::Transport)))
            }
            Poll::Pending => {
                if !this.waiting {
                    // A new wait: the client has this long from now.
                    let deadline = Instant::now() + this.idle;
                    match &mut this.timer {
                        Some(t) => t.as_mut().reset(deadline),
                        None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    this.waiting = true;
                }
                if let Some(t) = &mut this.timer {
                    if t.as_mut().poll(cx).is_ready() {
                        this.timed_out.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyError::Idle(this.idle))));
                    }
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

/// The h2 connection preface; hyper-util's auto builder reads up to this
/// many bytes to tell h2 from HTTP/1, with no timeout of its own.
const H2_PREFACE_LEN: usize = 24;

/// A connection whose first [`H2_PREFACE_LEN`] bytes must arrive within a
/// deadline: covers the version sniffing that happens before hyper's own
/// header timeout starts (a connection that sends nothing would otherwise
/// hold its permit forever). Past those bytes, or once the client has
/// finished sending, it is a plain pass-through.
pub struct PrefaceDeadline<S> {
    inner: S,
    /// `None` once the preface bytes have arrived.
    deadline: Option<Pin<Box<Sleep>>>,
    read: usize,
}

impl<S> PrefaceDeadline<S> {
    pub fn new(inner: S, within: Duration) -> PrefaceDeadline<S> {
        PrefaceDeadline {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(within))),
            read: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefaceDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let n = buf.filled().len() - before;
                this.read = this.read.saturating_add(n);
                if this.read >= H2_PREFACE_LEN || n == 0 {
                    this.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                if let Some(d) = &mut this.deadline {
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client sent no request in time",
                        )));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefaceDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One connection's requests in flight, and since when it has had none.
/// The server loop closes the connection once [`Activity::idle_for`]
/// completes.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when the last request in flight ends.
    quiet: Notify,
}

#[derive(Debug)]
struct ActivityState {
    in_flight: usize,
    /// When `in_flight` last became 0 (or the connection opened).
    since: Instant,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                since: Instant::now(),
            }),
            quiet: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request starts; it is in flight until the guard drops.
    pub fn start(self: &Arc<Activity>) -> InFlight {
        let mut s = self.state();
        s.in_flight = s.in_flight.saturating_add(1);
        InFlight(self.clone())
    }

    /// Completes once the connection has had no request in flight for
    /// `idle` without a break.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = {
                let s = self.state();
                (s.in_flight == 0).then(|| s.since + idle)
            };
            match deadline {
                // `notify_one` keeps a wake-up for a waiter that has not
                // arrived yet, so an end between the check and the wait
                // is not missed.
                None => self.quiet.notified().await,
                Some(d) if Instant::now() >= d => return,
                // A request may start and end meanwhile: look again.
                Some(d) => tokio::time::sleep_until(d).await,
            }
        }
    }
}

/// A request in flight on its connection (see [`Activity::start`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            s.since = Instant::now();
            drop(s);
            self.0.quiet.notify_one();
        }
    }
}

/// A response body that keeps its request in flight until hyper drops it
/// (all sent, or the connection or stream gone).
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        Tracked {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_counts_from_the_last_request_and_never_during_one() {
        let a = Activity::new();
        let idle = Duration::from_millis(100);
        let within = |d| tokio::time::timeout(Duration::from_millis(d), a.idle_for(idle));
        let first = a.start();
        // In flight: never idle, however long.
        assert!(within(1000).await.is_err());
        let second = a.start();
        drop(first);
        assert!(within(1000).await.is_err());
        drop(second);
        assert!(within(30_000).await.is_ok());
    }
}
