//! The server loop: accepting connections, HTTP/1.1 and h2c on one port,
//! request ids, the access log, graceful shutdown; and the small helpers
//! every handler shares (response building, running engine calls off the
//! async path).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_engine::{Engine, EngineConfig, StorageError};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::config::Config;
use crate::errors::ApiError;
use crate::limits::{Activity, Limits, PrefaceDeadline, RequestBody, Tracked};
use crate::proxy::{ConnInfo, ProxyConfig};
use crate::sendfile;

/// Every response body: one buffer or a chunk stream. Blob and manifest
/// bytes are wrapped without copying (`Bytes::from_owner` over a memory map
/// or the engine's `Arc<[u8]>`).
pub use crate::body::Body;

pub const HDR_API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const REGISTRY_2_0: HeaderValue = HeaderValue::from_static("registry/2.0");
pub const HDR_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
pub const HDR_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
pub const HDR_OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
pub const HDR_OCI_TAG: HeaderName = HeaderName::from_static("oci-tag");
pub const HDR_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
pub const HDR_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long in-flight requests get to finish after a shutdown signal.
/// Requests cut off after it lose nothing acknowledged: an upload's bytes
/// are acknowledged only by a completed PATCH or PUT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// State shared by every request. Owned by [`serve`] behind an `Arc`; each
/// connection task holds a clone, so it lives until the last connection
/// ends, and the engine is dropped (closing the index, joining its workers)
/// when `serve` returns.
pub struct App {
    pub engine: Arc<Engine>,
    pub read_only: bool,
    pub delete_enabled: bool,
    /// The external URL rule's settings (see `proxy.rs`).
    pub proxy: ProxyConfig,
    /// Accounts and tokens (see `auth.rs`); `auth.enabled` is false by default.
    pub auth: Auth,
    /// Online GC period (`None`: off) and grace window, for the GC API.
    pub gc_interval: Option<Duration>,
    pub gc_grace: Duration,
    pub upload_ttl: Duration,
    /// Proxy cache projects: their upstreams and what is being fetched
    /// (see `proxy_cache.rs`).
    pub proxy_cache: crate::proxy_cache::ProxyCache,
    /// Replication runs and the scheduler's bell (see `replication.rs`).
    pub replication: crate::replication::Replication,
    /// Retention runs in progress and the scheduler's bell
    /// (`retention_api.rs`).
    pub retention: crate::retention_api::Retention,
    /// Request counters for `/metrics`.
    pub metrics: crate::metrics::ServerMetrics,
    /// Pulls counted since the last flush (see `pulls.rs`).
    pub pulls: crate::pulls::Pulls,
    /// Audit log entries not yet in the index (see `audit.rs`).
    pub audit: crate::audit::AuditQueue,
    /// Webhook policies as last read, and the deliverer's bell.
    pub webhooks: crate::webhooks::Webhooks,
    pub charts: ChartsState,
    /// The key of sealed listing cursors (see `cursor.rs`).
    pub(crate) cursors: crate::cursor::Cursors,
    /// Connection permits and read timeouts (see `limits.rs`).
    pub limits: Limits,
}

/// The chart repository's settings and its rendered-index cache.
pub struct ChartsState {
    /// Re-uploading an existing chart version replaces it (else `409`
    /// unless the request says `?force`).
    pub allow_overwrite: bool,
    pub limits: crate::charts::Limits,
    /// Rendered `index.yaml` per project, keyed by chart generation.
    pub cache: crate::charts::IndexCache,
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("berth: data directory {dir}: {source}")]
    Engine {
        dir: String,
        #[source]
        source: StorageError,
    },
    /// The data directory is open to other users (the error names it).
    #[error("berth: {0}")]
    OpenDataDir(#[source] StorageError),
    #[error("berth: listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("berth: auth: {0}")]
    Auth(String),
    #[error("berth: TLS: {0}")]
    Tls(String),
}

/// Opens the engine for `config` (on a blocking thread: RocksDB open and
/// upload recovery touch the disk).
pub async fn open_engine(config: &Config) -> Result<Engine, ServeError> {
    let mut ec = EngineConfig::new(&config.data_dir);
    ec.upload_ttl = config.upload_ttl;
    ec.max_uploads_per_owner = config.max_uploads_per_user;
    ec.max_members_per_project = config.max_members_per_project;
    ec.max_robots_per_project = config.max_robots_per_project;
    ec.backend = config.storage.clone();
    ec.database = config.database.clone();
    ec.gc_interval = config.gc_interval;
    ec.gc_grace = config.gc_grace;
    ec.allow_open_data_dir = config.allow_open_data_dir;
    let dir = config.data_dir.display().to_string();
    tokio::task::spawn_blocking(move || Engine::open(ec))
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))?
        .map_err(|source| match source {
            StorageError::OpenToOthers { .. } => ServeError::OpenDataDir(source),
            source => ServeError::Engine { dir, source },
        })
}

/// Runs berth on `listener` until `shutdown` completes: opens the engine in
/// `config.data_dir`, prints `berth: listening on http://ADDR (data: DIR)`
/// to stderr once ready, serves HTTP/1.1 and h2c, and on shutdown stops
/// accepting, lets in-flight requests finish (up to 30 s) and drops the
/// engine. Tests start it in-process on a `127.0.0.1:0` listener.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::acceptor(t).map_err(ServeError::Tls)?),
        None => None,
    };
    let engine = Arc::new(open_engine(&config).await?);
    let key = {
        let e = engine.clone();
        let admin_password = config.auth.admin_password.clone().map(|s| s.0);
        let enabled = config.auth.enabled;
        tokio::task::spawn_blocking(move || {
            if enabled {
                admin_at_start(&e, admin_password.as_deref())?;
            }
            e.token_signing_key()
                .map_err(|err| ServeError::Auth(format!("token signing key: {err}")))
        })
        .await
        .map_err(|e| ServeError::Io(std::io::Error::other(e)))??
    };
    let directory = match &config.auth.ldap {
        Some(l) if config.auth.enabled => Some(
            crate::ldap::Directory::new(l).map_err(|e| ServeError::Auth(format!("LDAP: {e}")))?,
        ),
        _ => None,
    };
    let cursors = crate::cursor::Cursors::new(&key.seed());
    let app = Arc::new(App {
        engine,
        cursors,
        read_only: config.read_only,
        delete_enabled: config.delete_enabled,
        proxy: config.proxy.clone(),
        auth: Auth::new(&config.auth, key, directory),
        gc_interval: config.gc_interval,
        gc_grace: config.gc_grace,
        upload_ttl: config.upload_ttl,
        proxy_cache: crate::proxy_cache::ProxyCache::new(config.proxy_revalidate),
        replication: crate::replication::Replication::default(),
        retention: crate::retention_api::Retention::default(),
        metrics: crate::metrics::ServerMetrics::default(),
        pulls: crate::pulls::Pulls::default(),
        audit: crate::audit::AuditQueue::default(),
        webhooks: crate::webhooks::Webhooks::new(config.webhook_allow_private),
        charts: ChartsState {
            allow_overwrite: config.chart_allow_overwrite,
            limits: config.chart_limits,
            cache: crate::charts::IndexCache::new(config.chart_index_cache_bytes),
        },
        limits: config.limits,
    });
    tokio::spawn(crate::metrics::sample_loop(Arc::downgrade(&app)));
    if !config.read_only {
        tokio::spawn(crate::replication::schedule(Arc::downgrade(&app)));
        tokio::spawn(crate::retention_api::schedule(Arc::downgrade(&app)));
        tokio::spawn(crate::pulls::flush_loop(Arc::downgrade(&app)));
        tokio::spawn(crate::webhooks::deliver_loop(Arc::downgrade(&app)));
        tokio::spawn(crate::audit::flush_loop(
            Arc::downgrade(&app),
            config.audit_retention,
        ));
    }
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    eprintln!(
        "berth: listening on {scheme}://{addr} (data: {})",
        config.data_dir.display()
    );
    tracing::info!(%addr, read_only = config.read_only, delete_enabled = config.delete_enabled,
        auth = config.auth.enabled, tls = tls.is_some(),
        gc_interval_seconds = config.gc_interval.map_or(0, |i| i.as_secs()),
        gc_grace_seconds = config.gc_grace.as_secs(),
        max_connections = config.limits.max_connections,
        body_read_timeout_seconds = config.limits.body_read_timeout.as_secs(), "serving");
    run(app.clone(), listener, tls, shutdown).await;
    // What was tallied and queued since the last flush goes in now.
    if !app.read_only {
        crate::pulls::flush(&app).await;
        crate::audit::flush(&app).await;
    }
    // IMPORTANT: every connection has ended, so this is the last reference
    // to the engine unless a blocking engine call outlived its request;
    // dropping it joins the engine's workers, so do it off the async path.
    let engine = match Arc::try_unwrap(app) {
        Ok(app) => Some(app.engine),
        Err(_) => {
            tracing::warn!(
                "requests still hold the engine at shutdown; it closes when they finish"
            );
            None
        }
    };
    if let Some(engine) = engine {
        let _ = tokio::task::spawn_blocking(move || drop(engine)).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// At every start with auth on: applies `BERTH_ADMIN_PASSWORD` to the
/// `admin` account (creating it, or replacing a stored password that
/// differs — never ignoring it), makes sure `library` exists, and logs what
/// changed and who the system administrators are. Names only: no password
/// or hash is ever logged. Refuses to start with no admin and no password.
fn admin_at_start(e: &Engine, admin_password: Option<&str>) -> Result<(), ServeError> {
    use berth_engine::accounts::AdminAccount;
    let setup = e
        .ensure_admin(admin_password)
        .map_err(|err| ServeError::Auth(err.to_string()))?;
    match setup.account {
        AdminAccount::Created => {
            tracing::info!(target: "berth::auth", "created the admin account")
        }
        AdminAccount::Updated {
            password_applied,
            admin_flag_restored,
        } => {
            if password_applied {
                tracing::warn!(target: "berth::auth",
                    "BERTH_ADMIN_PASSWORD differs from the stored password of admin: \
                     the configured password now applies and the stored one no longer works");
            }
            if admin_flag_restored {
                tracing::warn!(target: "berth::auth",
                    "the admin account was not a system administrator: restored");
            }
        }
        AdminAccount::Unchanged => {}
    }
    if setup.library_created {
        tracing::info!(target: "berth::auth", "created the public project library");
    }
    let admins: Vec<String> = e
        .users()
        .map_err(|err| ServeError::Auth(err.to_string()))?
        .into_iter()
        .filter(|(_, u)| u.is_admin())
        .map(|(name, _)| name)
        .collect();
    tracing::info!(target: "berth::auth", admins = %admins.join(","), "system administrators");
    Ok(())
}

/// The accept loop. With `tls`, each connection's handshake runs in its
/// own task (a slow client cannot stall accepting), and ALPN picks h2 or
/// HTTP/1.1.
///
/// Each connection holds one of `limits.max_connections` permits from
/// before its accept until it ends. With none left the loop stops
/// accepting (new connections wait in the kernel's backlog) until one
/// closes, saying so (a warning at most once a minute, and the
/// `berth_connections_waiting` gauge). A connection must finish its TLS
/// handshake within `limits.tls_handshake_timeout`, send its first bytes,
/// and each HTTP/1 request head, within `limits.header_read_timeout`, and
/// is closed after `limits.idle_timeout` with no request in flight (see
/// [`Activity`]), so silent and idle ones give their permit back.
async fn run(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limits = app.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    // Pings find peers that vanished with streams open; a connection with
    // none is closed by the idle timeout below.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.idle_timeout)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let ids = Arc::new(RequestIds::new());
    // Owned by the loop; each connection task holds one permit and returns
    // it when it ends (however it ends: the permit is dropped with the task).
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let m = &app.metrics;
                m.connection_limit_reached.fetch_add(1, Ordering::Relaxed);
                m.connections_waiting.store(1, Ordering::Relaxed);
                if warned.is_none_or(|t| t.elapsed() >= LIMIT_WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "every connection permit is taken (BERTH_MAX_CONNECTIONS): \
                         new connections wait to be accepted until one closes"
                    );
                }
                let p = tokio::select! {
                    p = permits.clone().acquire_owned() => p,
                    _ = &mut shutdown => break,
                };
                m.connections_waiting.store(0, Ordering::Relaxed);
                match p {
                    Ok(p) => p,
                    Err(_) => break, // never closed
                }
            }
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning or dying.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let slot = ConnSlot::new(permit, app.clone());
        let activity = Activity::new();
        let conn_activity = activity.clone();
        let app = app.clone();
        let ids = ids.clone();
        let info = ConnInfo {
            peer,
            tls: tls.is_some(),
        };
        // The connection's sendfile lane (plain TCP only: under TLS the
        // bytes must pass through rustls).
        let lane = Arc::new(sendfile::Lane::default());
        let req_lane = tls.is_none().then(|| lane.clone());
        let service = service_fn(move |req| {
            let app = app.clone();
            let ids = ids.clone();
            let lane = req_lane.clone();
            // In flight from here until hyper drops the response body.
            let in_flight = activity.start();
            async move {
                let res = handle(&app, &ids, info, lane, req).await;
                Ok::<_, Infallible>(res.map(|b| Tracked::new(b, in_flight)))
            }
        });
        match &tls {
            None => {
                let io = PrefaceDeadline::new(
                    sendfile::Stream::new(stream, lane),
                    limits.header_read_timeout,
                );
                let conn = builder
                    .serve_connection(TokioIo::new(io), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _slot = slot;
                    until_idle(conn, &conn_activity, limits.idle_timeout, peer).await;
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    let handshake =
                        tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream));
                    let stream = match handshake.await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let io = PrefaceDeadline::new(stream, limits.header_read_timeout);
                    let conn = builder
                        .serve_connection(TokioIo::new(io), service)
                        .into_owned();
                    let conn = watcher.watch(conn);
                    until_idle(conn, &conn_activity, limits.idle_timeout, peer).await;
                });
            }
        }
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down: finishing in-flight requests"
    );
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; closing");
    }
}

/// How long an h2 peer has to answer a keep-alive ping (hyper's default).
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// At most one "every permit is taken" warning per this long.
const LIMIT_WARN_EVERY: Duration = Duration::from_secs(60);

/// A connection's permit, and its count in `berth_connections_open`; both
/// given back when the connection task ends, however it ends.
struct ConnSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    app: Arc<App>,
}

impl ConnSlot {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, app: Arc<App>) -> ConnSlot {
        app.metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        ConnSlot {
            _permit: permit,
            app,
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.app
            .metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `conn` until it ends, or until it has had no request in flight
/// for `idle`: then it is dropped, which closes the socket (for HTTP/1 a
/// keep-alive close between requests; an h2 client sees the connection end
/// with no stream open).
async fn until_idle<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    activity: &Activity,
    idle: Duration,
    peer: SocketAddr,
) {
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        _ = activity.idle_for(idle) => {
            tracing::debug!(%peer, "closed an idle connection");
        }
    }
}

/// One request: request id, connection info into the request's
/// extensions (for `auth` and `proxy`; the sendfile lane, if the connection
/// has one, for blob bodies), routing, absolute `Location`s when
/// the origin is authoritative, the access log line (method, path, status:
/// never the query, headers or body, so no credential reaches the log).
async fn handle(
    app: &Arc<App>,
    ids: &RequestIds,
    conn: ConnInfo,
    lane: Option<Arc<sendfile::Lane>>,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let start = Instant::now();
    let peer: SocketAddr = conn.peer;
    let request_id = ids.for_request(req.headers().get(&HDR_REQUEST_ID));
    let method = req.method().clone();
    let uri = req.uri().clone();
    let origin = app.proxy.origin(&conn, req.headers(), &uri);
    req.extensions_mut().insert(conn);
    if let Some(lane) = lane {
        req.extensions_mut().insert(lane);
    }
    let version = req.version();
    let body_timed_out = Arc::new(AtomicBool::new(false));
    let req =
        req.map(|b| RequestBody::new(b, app.limits.body_read_timeout, body_timed_out.clone()));
    let rid = request_id.to_str().unwrap_or_default().to_owned();
    let mut res = crate::router::dispatch(app, req, &rid).await;
    if body_timed_out.load(Ordering::Relaxed)
        && (version == hyper::Version::HTTP_11 || version == hyper::Version::HTTP_10)
    {
        // The rest of a stalled body is not worth waiting for: answer and
        // close (h2 resets just the stream when the body is dropped).
        res.headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let sent = hyper::body::Body::size_hint(res.body())
        .exact()
        .unwrap_or(0);
    let sent = if method == hyper::Method::HEAD {
        0
    } else {
        sent
    };
    app.metrics.request(&method, res.status().as_u16(), sent);
    let h = res.headers_mut();
    if origin.authoritative {
        absolute_location(h, &origin.base);
    }
    h.insert(HDR_API_VERSION, REGISTRY_2_0);
    h.insert(HDR_REQUEST_ID, request_id.clone());
    tracing::info!(
        target: "berth::access",
        request_id = request_id.to_str().unwrap_or_default(),
        %peer,
        %method,
        path = uri.path(),
        status = res.status().as_u16(),
        micros = start.elapsed().as_micros() as u64,
    );
    res
}

/// Makes a relative `Location` (`/v2/…`) absolute on `base`: the one place
/// where the external URL reaches upload and manifest locations.
fn absolute_location(h: &mut hyper::HeaderMap, base: &str) {
    let Some(loc) = h.get(hyper::header::LOCATION) else {
        return;
    };
    let Ok(loc) = loc.to_str() else {
        return;
    };
    if loc.starts_with('/') && !loc.starts_with("//") {
        let abs = hv(&format!("{base}{loc}"));
        h.insert(hyper::header::LOCATION, abs);
    }
}

/// Request ids: a client's `X-Request-Id` is echoed if it is short printable
/// ASCII; otherwise one is made from a per-process random prefix and a
/// counter (unique within and, with high probability, across processes).
struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        RequestIds {
            prefix: u32::from_le_bytes(b),
            next: AtomicU64::new(1),
        }
    }

    fn for_request(&self, given: Option<&HeaderValue>) -> HeaderValue {
        if let Some(v) = given {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
                return v.clone();
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // The String's buffer becomes the header value's (no copy).
        HeaderValue::from_maybe_shared(Bytes::from(format!("{:08x}-{n:x}", self.prefix)))
            .unwrap_or(HeaderValue::from_static("-"))
    }
}

// ---- helpers shared by handlers ---------------------------------------------

/// Runs an engine call that may block on disk (fsync, file I/O) on tokio's
/// blocking pool. A panic in it becomes a `500`.
pub async fn blocking<T, F>(app: &App, f: F) -> Result<T, ApiError>
where
    F: FnOnce(&Engine) -> T + Send + 'static,
    T: Send + 'static,
{
    let engine = app.engine.clone();
    tokio::task::spawn_blocking(move || f(&engine))
        .await
        .map_err(ApiError::internal)
}

/// A response with an empty body.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut res = Response::new(Body::new(Bytes::new()));
    *res.status_mut() = status;
    res
}

/// A `200` JSON response.
pub fn json(bytes: Vec<u8>, content_type: &'static str) -> Response<Body> {
    let mut res = Response::new(Body::new(Bytes::from(bytes)));
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// A header value from a string berth built or validated; anything not
/// representable (which validation rules out) becomes empty.
pub fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(""))
}

/// `Content-Length` for `HEAD` answers, whose body is empty but whose length
/// is the resource's.
pub fn set_content_length(res: &mut Response<Body>, len: u64) {
    res.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(len));
}

/// Reads a whole small request body (forms, JSON), refusing more than
/// `limit` bytes with `400`.
pub async fn read_small_body(mut body: RequestBody, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                crate::errors::Code::BadRequest,
                format!("reading the request body: {e}"),
            )
        })?;
        if let Some(d) = frame.data_ref() {
            if out.len() + d.len() > limit {
                return Err(ApiError::new(
                    crate::errors::Code::BadRequest,
                    format!("request body over {limit} bytes"),
                ));
            }
            out.extend_from_slice(d);
        }
    }
    Ok(Bytes::from(out))
}

/// Reads and drops up to `budget` more bytes of a request body. Used before
/// refusing a request whose body the client is still sending: hyper then
/// closes the connection, and unread bytes would turn that close into a
/// reset that can swallow the answer (`413`, `416`) on the client's side.
pub async fn drain(mut body: RequestBody, mut budget: usize) {
    use http_body_util::BodyExt;
    while budget > 0 {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    budget = budget.saturating_sub(d.len());
                }
            }
            _ => break,
        }
    }
}
