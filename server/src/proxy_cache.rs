//! Proxy cache projects (Harbor 2.x's "proxy cache"): a project created
//! with a `registry_id` pulls through that upstream registry
//! (`docs/proxy-cache.md`). `GET /v2/<project>/<upstream repo>/…` is
//! answered from the cache when it can be, else from the upstream, and
//! what the upstream serves is stored as the project's own content.
//!
//! ```text
//! manifest by digest   cached: served (a digest never changes)
//!                      else: fetched, its digest checked, served, cached
//! manifest by tag      cached and checked within the revalidation time: served
//!                      cached: HEAD upstream; same digest: served; moved:
//!                      fetched as below; upstream unreachable: served stale
//!                      else: fetched, served, cached with the tag
//! blob                 cached (or stored for another repository: linked): served
//!                      else: fetched once however many ask at once; the
//!                      first asker gets the bytes as they arrive, the
//!                      others when they are stored
//! ```
//!
//! Caching a manifest stores, in the background, what it references
//! first (an index's every child manifest, each image's config and
//! layers), then the manifest with its tag in one batch, as a push would:
//! the engine's rule that a stored manifest is complete holds for cached
//! ones too. A client that pulls meanwhile is answered from the upstream
//! (manifests) or joins the fetch in flight (blobs).
//!
//! Bytes are verified as everywhere else: a manifest against the digest
//! asked for (or the upstream's `Docker-Content-Digest`), a blob by the
//! upload session that stores it. A streamed blob's last chunk is sent
//! only once the blob is verified and stored, so a client never reads to
//! a clean end bytes that failed their digest; it sees the connection cut.
//!
//! Pushes to a proxy cache project are refused (the router, see
//! [`refuse_push`]); deletes are allowed (the next pull fetches again).
//! In read-only mode a proxy cache project serves what it holds and
//! fetches nothing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use berth_engine::{Digest, Reference, RepoName, Tag};
use bytes::Bytes;
use futures::StreamExt;
use hyper::{Response, StatusCode};
use tokio::sync::{mpsc, watch};

use crate::blobs::GetBlob;
use crate::errors::{ApiError, Code};
use crate::http::{blocking, empty, set_content_length, App, Body};
use crate::manifest_parse;
use crate::manifests::{manifest_response, GetManifest};
use crate::upstream::{Fetched, Upstream, UpstreamError};

/// Whom the proxy cache's upload sessions count against.
const OWNER: &str = "proxy cache";
/// A project found not to be a proxy cache is asked again after this
/// long (another node may have created it since).
const PLAIN_TTL: Duration = Duration::from_secs(10);
/// Body bytes gathered before one blocking write of a fetched blob.
const WRITE_BATCH: usize = 1 << 20;
/// Chunks of a streamed blob queued for a slow client before the fetch
/// waits for it.
const TEE_DEPTH: usize = 16;
/// Deepest index nesting followed when caching.
const MAX_DEPTH: u32 = 8;
/// Entries of the project and tag-check maps before stale ones are
/// dropped: a caller naming ever new projects or tags (auth off) cannot
/// grow them without bound.
const MAX_ENTRIES: usize = 100_000;

/// What the proxy cache knows and is doing; one per server.
pub struct ProxyCache {
    revalidate: Duration,
    /// Project → its registry id, or not a proxy cache (until a time).
    projects: RwLock<HashMap<String, ProjectKind>>,
    /// Registry id → its client, built for the record's update time.
    upstreams: Mutex<HashMap<u64, (u64, Arc<Upstream>)>>,
    /// When each cached tag was last found current upstream.
    checked: Mutex<HashMap<(RepoName, Tag), Instant>>,
    /// Blobs being fetched: the outcome, once there is one.
    blobs: Mutex<HashMap<Digest, watch::Receiver<Outcome>>>,
    /// Manifests (`repo@digest`) being cached.
    manifests: Mutex<HashSet<String>>,
}

#[derive(Clone, Copy)]
enum ProjectKind {
    Proxy(u64),
    Plain { until: Instant },
}

/// A fetch's outcome: `None` while it runs.
type Outcome = Option<Result<(), String>>;

impl ProxyCache {
    pub fn new(revalidate: Duration) -> ProxyCache {
        ProxyCache {
            revalidate,
            projects: RwLock::new(HashMap::new()),
            upstreams: Mutex::new(HashMap::new()),
            checked: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashSet::new()),
        }
    }

    fn fresh(&self, repo: &RepoName, tag: &Tag) -> bool {
        let checked = lock(&self.checked);
        checked
            .get(&(repo.clone(), tag.clone()))
            .is_some_and(|t| t.elapsed() < self.revalidate)
    }

    fn mark_checked(&self, repo: &RepoName, tag: &Tag) {
        let mut checked = lock(&self.checked);
        if checked.len() >= MAX_ENTRIES {
            let revalidate = self.revalidate;
            checked.retain(|_, t| t.elapsed() < revalidate);
        }
        if checked.len() >= MAX_ENTRIES {
            checked.clear(); // every tag is asked upstream once more
        }
        checked.insert((repo.clone(), tag.clone()), Instant::now());
    }

    /// Forgets what is known of `project` (it was just created here).
    pub fn forget_project(&self, project: &str) {
        if let Ok(mut p) = self.projects.write() {
            p.remove(project);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The registry `repo`'s project pulls through, if it is a proxy cache
/// project and `repo` names something upstream (`project/name…`). One
/// map lookup once the project has been seen.
pub async fn registry_of(app: &App, repo: &RepoName) -> Result<Option<u64>, ApiError> {
    if !repo.as_str().contains('/') {
        return Ok(None);
    }
    registry_of_project(app, repo.project()).await
}

async fn registry_of_project(app: &App, project: &str) -> Result<Option<u64>, ApiError> {
    let known = app
        .proxy_cache
        .projects
        .read()
        .ok()
        .and_then(|p| p.get(project).copied());
    match known {
        Some(ProjectKind::Proxy(id)) => return Ok(Some(id)),
        Some(ProjectKind::Plain { until }) if until > Instant::now() => return Ok(None),
        _ => {}
    }
    let p = project.to_owned();
    let rec = blocking(app, move |e| e.project(&p)).await??;
    // A project's registry is fixed for its life, so a proxy entry never
    // goes stale; a plain one is asked again after PLAIN_TTL.
    let kind = match rec.and_then(|r| r.registry_id) {
        Some(id) => ProjectKind::Proxy(id),
        None => ProjectKind::Plain {
            until: Instant::now() + PLAIN_TTL,
        },
    };
    if let Ok(mut m) = app.proxy_cache.projects.write() {
        if m.len() >= MAX_ENTRIES {
            // Proxy entries are few and never stale; plain ones are asked
            // again anyway.
            m.retain(|_, k| matches!(k, ProjectKind::Proxy(_)));
        }
        m.insert(project.to_owned(), kind);
    }
    Ok(match kind {
        ProjectKind::Proxy(id) => Some(id),
        ProjectKind::Plain { .. } => None,
    })
}

/// The router's check before a write in the registry or chart API: a
/// proxy cache project takes no pushes (`403 DENIED`, as Harbor).
pub async fn refuse_push(app: &App, project: &str) -> Result<(), ApiError> {
    match registry_of_project(app, project).await? {
        Some(_) => Err(ApiError::new(
            Code::Denied,
            format!("project {project} is a proxy cache: it takes no pushes"),
        )),
        None => Ok(()),
    }
}

/// The client of registry `id`, rebuilt when its record changed.
pub(crate) async fn upstream(app: &App, id: u64) -> Result<Arc<Upstream>, ApiError> {
    let rec = blocking(app, move |e| e.registry(id)).await??;
    let Some(rec) = rec else {
        return Err(ApiError::new(
            Code::Unavailable,
            format!("the proxy cache's registry {id} no longer exists"),
        ));
    };
    let mut ups = lock(&app.proxy_cache.upstreams);
    if let Some((at, up)) = ups.get(&id) {
        if *at == rec.updated_ms {
            return Ok(up.clone());
        }
    }
    let up = Arc::new(Upstream::new(&rec).map_err(|e| ApiError::new(Code::Unavailable, e))?);
    ups.insert(id, (rec.updated_ms, up.clone()));
    Ok(up)
}

/// `repo` without its project: the upstream's name for it.
fn upstream_repo(repo: &RepoName) -> &str {
    &repo.as_str()[repo.project().len() + 1..]
}

fn unknown(repo: &RepoName, reference: &Reference, why: &str) -> ApiError {
    ApiError::new(
        Code::ManifestUnknown,
        format!("manifest {reference} is not known in repository {repo}{why}"),
    )
}

/// `GET|HEAD /v2/<name>/manifests/<ref>` in a proxy cache project.
pub async fn get_manifest(
    app: &Arc<App>,
    registry: u64,
    get: GetManifest,
) -> Result<Response<Body>, ApiError> {
    if app.read_only {
        return get.apply(app).await;
    }
    let GetManifest {
        repo,
        reference,
        head,
    } = get;
    let local = app.engine.get_manifest_async(&repo, &reference).await?;
    let tag = match &reference {
        Reference::Tag(t) => Some(t.clone()),
        Reference::Digest(_) => None,
    };
    if let Some(m) = &local {
        match &tag {
            None => return Ok(manifest_response(m, head)),
            Some(t) if app.proxy_cache.fresh(&repo, t) => return Ok(manifest_response(m, head)),
            Some(_) => {}
        }
    }
    let up = match upstream(app, registry).await {
        Ok(up) => up,
        Err(e) => {
            return match &local {
                Some(m) => Ok(manifest_response(m, head)),
                None => Err(e),
            }
        }
    };
    let name = upstream_repo(&repo);
    // A cached tag: one HEAD says whether it moved.
    if let (Some(m), Some(t)) = (&local, &tag) {
        match up.manifest_digest(name, t.as_str()).await {
            Ok(Some(Some(d))) if d == m.digest => {
                app.proxy_cache.mark_checked(&repo, t);
                return Ok(manifest_response(m, head));
            }
            Ok(Some(_)) => {} // moved, or no digest in the answer: GET it
            Ok(None) => return Err(unknown(&repo, &reference, " (nor upstream any more)")),
            Err(e) => {
                tracing::warn!(target: "berth::proxy", %repo, tag = %t, error = %e,
                    "serving the cached tag");
                return Ok(manifest_response(m, head));
            }
        }
    }
    let fetched = match up.manifest(name, &reference.to_string()).await {
        Ok(Some(f)) => f,
        Ok(None) => return Err(unknown(&repo, &reference, " nor upstream")),
        Err(e) => {
            if let Some(m) = &local {
                tracing::warn!(target: "berth::proxy", %repo, %reference, error = %e,
                    "serving the cached manifest");
                return Ok(manifest_response(m, head));
            }
            return Err(match e {
                UpstreamError::Unreachable { .. } => {
                    ApiError::new(Code::Unavailable, e.to_string())
                }
                UpstreamError::Refused { .. } => unknown(&repo, &reference, &format!(": {e}")),
            });
        }
    };
    let res = manifest_response(
        &berth_engine::Manifest {
            digest: fetched.digest.clone(),
            media_type: fetched.media_type.clone(),
            body: fetched.body.clone().into(),
            subject: None,
        },
        head,
    );
    spawn_cache_manifest(app, up, repo, tag, fetched);
    Ok(res)
}

/// Caches `m` (see the module docs) in a task of its own, logging the
/// outcome; one task per manifest of a repository at a time.
fn spawn_cache_manifest(
    app: &Arc<App>,
    up: Arc<Upstream>,
    repo: RepoName,
    tag: Option<Tag>,
    m: Fetched,
) {
    let app = app.clone();
    tokio::spawn(async move {
        let (r, d) = (repo.clone(), m.digest.clone());
        let src = upstream_repo(&repo).to_owned();
        match cache_manifest(&app, &up, &src, repo, tag, m).await {
            Ok(()) => tracing::info!(target: "berth::proxy", repo = %r, digest = %d, "cached"),
            Err(e) => tracing::warn!(target: "berth::proxy", repo = %r, digest = %d, error = %e,
                "not cached"),
        }
    });
}

/// Stores manifest `m` of upstream repository `src` in `repo` with what it
/// references (fetched from `src` where `repo` lacks it), then points
/// `tag` at it. Also the replication runs' copy (`replication.rs`).
pub(crate) async fn cache_manifest(
    app: &Arc<App>,
    up: &Arc<Upstream>,
    src: &str,
    repo: RepoName,
    tag: Option<Tag>,
    m: Fetched,
) -> Result<(), String> {
    cache_nested(app, up, src, repo, tag, m, 0).await
}

async fn cache_nested(
    app: &Arc<App>,
    up: &Arc<Upstream>,
    src: &str,
    repo: RepoName,
    tag: Option<Tag>,
    m: Fetched,
    depth: u32,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let key = format!("{repo}@{}", m.digest);
    if !lock(&app.proxy_cache.manifests).insert(key.clone()) {
        return Ok(()); // another task is caching it
    }
    let result = async {
        let content_type = Some(m.media_type.as_str()).filter(|t| !t.is_empty());
        let mut put = manifest_parse::parse(content_type, m.body)
            .map_err(|e| format!("{}: {e}", m.media_type))?;
        for child in put.manifests.clone() {
            let held = app
                .engine
                .get_manifest_async(&repo, &Reference::Digest(child.clone()))
                .await
                .map_err(|e| e.to_string())?;
            if held.is_some() {
                continue;
            }
            let f = up
                .manifest(src, child.as_str())
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("child manifest {child} is not upstream"))?;
            Box::pin(cache_nested(app, up, src, repo.clone(), None, f, depth + 1)).await?;
        }
        for b in put.blobs.clone() {
            ensure_blob(app, up, src, &repo, &b).await?;
        }
        put.digest = Some(m.digest.clone());
        put.tags = tag.clone().into_iter().collect();
        let r = repo.clone();
        blocking(app, move |e| e.put_manifest(&r, put))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if let Some(t) = &tag {
            app.proxy_cache.mark_checked(&repo, t);
        }
        Ok(())
    }
    .await;
    lock(&app.proxy_cache.manifests).remove(&key);
    result
}

/// One fetch of a blob at a time: the first asker leads, the others
/// wait for its outcome.
enum Flight {
    Lead(Lead),
    Join(watch::Receiver<Outcome>),
}

/// The leader's duty: publish the outcome, and leave the map (on drop,
/// as a failure, if it did not finish).
struct Lead {
    app: Arc<App>,
    digest: Digest,
    tx: watch::Sender<Outcome>,
}

impl Lead {
    fn finish(self, outcome: Result<(), String>) {
        let _ = self.tx.send(Some(outcome));
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        lock(&self.app.proxy_cache.blobs).remove(&self.digest);
        self.tx.send_if_modified(|o| {
            if o.is_none() {
                *o = Some(Err("the fetch was abandoned".into()));
                true
            } else {
                false
            }
        });
    }
}

fn take_flight(app: &Arc<App>, digest: &Digest) -> Flight {
    let mut blobs = lock(&app.proxy_cache.blobs);
    if let Some(rx) = blobs.get(digest) {
        return Flight::Join(rx.clone());
    }
    let (tx, rx) = watch::channel(None);
    blobs.insert(digest.clone(), rx);
    Flight::Lead(Lead {
        app: app.clone(),
        digest: digest.clone(),
        tx,
    })
}

async fn wait(mut rx: watch::Receiver<Outcome>) -> Result<(), String> {
    match rx.wait_for(Option::is_some).await {
        Ok(o) => o.clone().unwrap_or(Ok(())),
        Err(_) => Err("the fetch was abandoned".into()),
    }
}

/// Whether blob `digest` is readable in `repo` now: linked there, or
/// stored for another repository and linked now (no bytes move) — but only
/// once the upstream confirms it has the blob in this repository, so no
/// caller reads through a proxy cache project a blob it could not pull
/// upstream (one of another project, whose digest it learned).
async fn readable(
    app: &App,
    up: Option<(&Upstream, &str)>,
    repo: &RepoName,
    digest: &Digest,
) -> Result<bool, ApiError> {
    let (r, d) = (repo.clone(), digest.clone());
    let (linked, stored) = blocking(app, move |e| -> Result<(bool, bool), ApiError> {
        if e.stat_blob(&r, &d)?.is_some() {
            return Ok((true, true));
        }
        Ok((false, e.blob_exists(&d)?))
    })
    .await??;
    if linked {
        return Ok(true);
    }
    let Some((up, src)) = up.filter(|_| stored) else {
        return Ok(false);
    };
    if !matches!(up.blob(src, digest, true).await, Ok(Some(_))) {
        return Ok(false);
    }
    let (r, d) = (repo.clone(), digest.clone());
    Ok(blocking(app, move |e| e.mount_blob(&r, &d, None))
        .await??
        .is_some())
}

/// Makes blob `digest` readable in `repo`, fetching it if no one holds it.
async fn ensure_blob(
    app: &Arc<App>,
    up: &Arc<Upstream>,
    src: &str,
    repo: &RepoName,
    digest: &Digest,
) -> Result<(), String> {
    loop {
        if readable(app, Some((up, src)), repo, digest)
            .await
            .map_err(|e| e.to_string())?
        {
            return Ok(());
        }
        match take_flight(app, digest) {
            Flight::Join(rx) => wait(rx).await?,
            Flight::Lead(lead) => {
                let result = fetch(app, up, src, repo, digest).await;
                lead.finish(result.clone());
                return result;
            }
        }
    }
}

/// `GET|HEAD /v2/<name>/blobs/<digest>` in a proxy cache project.
pub async fn get_blob(
    app: &Arc<App>,
    registry: u64,
    get: GetBlob,
) -> Result<Response<Body>, ApiError> {
    if app.read_only || readable(app, None, &get.repo, &get.digest).await? {
        return get.apply(app).await;
    }
    let unknown = |why: String| {
        ApiError::new(
            Code::BlobUnknown,
            format!(
                "blob {} is not known in repository {}{why}",
                get.digest, get.repo
            ),
        )
    };
    let up = upstream(app, registry).await?;
    let name = upstream_repo(&get.repo).to_owned();
    if readable(app, Some((&up, &name)), &get.repo, &get.digest).await? {
        return get.apply(app).await;
    }
    let unreachable = |e: UpstreamError| match e {
        UpstreamError::Unreachable { .. } => ApiError::new(Code::Unavailable, e.to_string()),
        UpstreamError::Refused { .. } => unknown(format!(": {e}")),
    };
    if get.head {
        // The size from the upstream; nothing is fetched for a HEAD.
        let Some(resp) = up
            .blob(&name, &get.digest, true)
            .await
            .map_err(unreachable)?
        else {
            return Err(unknown(" nor upstream".into()));
        };
        let mut res = empty(StatusCode::OK);
        crate::blobs::blob_headers(&mut res, &get.digest);
        if let Some(n) = resp.content_length() {
            set_content_length(&mut res, n);
        }
        return Ok(res);
    }
    loop {
        let lead = match take_flight(app, &get.digest) {
            Flight::Join(rx) => {
                wait(rx)
                    .await
                    .map_err(|e| ApiError::new(Code::Unavailable, e))?;
                if readable(app, Some((&up, &name)), &get.repo, &get.digest).await? {
                    return get.apply(app).await;
                }
                continue;
            }
            Flight::Lead(lead) => lead,
        };
        let resp = match up.blob(&name, &get.digest, false).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(unknown(" nor upstream".into())),
            Err(e) => return Err(unreachable(e)),
        };
        // A range, or a length the upstream does not say: fetched whole,
        // then served from the store.
        let len = resp.content_length();
        let (Some(len), None) = (len, &get.range) else {
            let result = store(app, &get.repo, &get.digest, resp, None).await;
            lead.finish(result.clone());
            result.map_err(|e| ApiError::new(Code::Unavailable, e))?;
            return get.apply(app).await;
        };
        let (tx, mut rx) = mpsc::channel::<Bytes>(TEE_DEPTH);
        let (app2, repo, digest) = (app.clone(), get.repo.clone(), get.digest.clone());
        tokio::spawn(async move {
            let result = store(&app2, &repo, &digest, resp, Some(tx)).await;
            if let Err(e) = &result {
                tracing::warn!(target: "berth::proxy", %repo, %digest, error = %e, "blob not cached");
            }
            lead.finish(result);
        });
        let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut res = Response::new(Body::stream(chunks, len));
        crate::blobs::blob_headers(&mut res, &get.digest);
        return Ok(res);
    }
}

/// Fetches blob `digest` of upstream repository `src` and stores it in
/// `repo`.
async fn fetch(
    app: &Arc<App>,
    up: &Arc<Upstream>,
    src: &str,
    repo: &RepoName,
    digest: &Digest,
) -> Result<(), String> {
    let resp = up
        .blob(src, digest, false)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("blob {digest} is not upstream in {src}"))?;
    store(app, repo, digest, resp, None).await
}

/// Streams an upstream blob response into an upload session of `repo`
/// and completes it as `digest` (verified, linked). Each chunk also goes
/// to `tee` while it listens, the last one only once the blob is stored.
async fn store(
    app: &Arc<App>,
    repo: &RepoName,
    digest: &Digest,
    resp: reqwest::Response,
    mut tee: Option<mpsc::Sender<Bytes>>,
) -> Result<(), String> {
    let size = resp.content_length();
    let (r, alg) = (repo.clone(), digest.algorithm());
    let writer = blocking(app, move |e| {
        let status = e.begin_upload_as(&r, alg, OWNER)?;
        e.upload_writer(&r, &status.id, Some(0))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    let id = writer.id().to_owned();
    let result = async {
        let mut writer = writer;
        let mut stream = resp.bytes_stream();
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0;
        // Held back from the client until the blob is verified.
        let mut last: Option<Bytes> = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("reading blob {digest} upstream: {e}"))?;
            if chunk.is_empty() {
                continue;
            }
            if let (Some(tx), Some(prev)) = (&tee, last.take()) {
                if tx.send(prev).await.is_err() {
                    tee = None; // the client left; the fetch goes on
                }
            }
            last = Some(chunk.clone());
            batched += chunk.len();
            batch.push(chunk);
            if batched >= WRITE_BATCH {
                writer = crate::uploads::write_batch(app, writer, std::mem::take(&mut batch))
                    .await
                    .map_err(|e| e.to_string())?;
                batched = 0;
            }
        }
        if !batch.is_empty() {
            writer = crate::uploads::write_batch(app, writer, batch)
                .await
                .map_err(|e| e.to_string())?;
        }
        let d = digest.clone();
        blocking(app, move |_| writer.complete(&d, size))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if let (Some(tx), Some(prev)) = (&tee, last) {
            let _ = tx.send(prev).await;
        }
        Ok(())
    }
    .await;
    if result.is_err() {
        let r = repo.clone();
        let _ = blocking(app, move |e| e.cancel_upload(&r, &id)).await;
    }
    result
}
