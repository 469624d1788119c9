//! `berthctl sync`: copies repositories from any registry that speaks the
//! OCI distribution API into another, over that API — Harbor's pull-based
//! replication, run by hand or from cron (`docs/migration.md`).
//!
//! For every repository of the source's catalog (or `--repos`) and every
//! tag (or `--tags`): the source's manifest is read; if the destination
//! holds it by digest, only the tag is set; otherwise its blobs (config and
//! layers; an index's child manifests first, recursively) are copied where
//! the destination lacks them (a `HEAD` by digest decides), streamed from
//! the source's GET into the destination's upload `PUT` without buffering,
//! and the manifest is put with the source's very bytes and media type.
//! Referrers (OCI 1.1 `referrers` API) of every manifest copied come along
//! with their blobs; a source without that API (distribution 2.8) keeps
//! them in `sha256-<hex>` tags, which are tags like any other.
//!
//! Auth on each side: Basic, or the Docker token flow (a `401` with
//! `WWW-Authenticate: Bearer realm=…` is answered by fetching a token for
//! the scope from the realm, with the side's credentials) — what Docker
//! Hub, Harbor, distribution with a token server and berth ask for.
//! Transient failures (connection errors, 429, 502–504) are retried with
//! backoff; a tag that still fails is reported and the others go on.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use berth_engine::{Algorithm, Digest};
use reqwest::blocking::{Body, Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::Value;

// The manifest types copied (schema 1 is not: berth stores schema 2 and
// OCI only), the challenge and `Link` parsers: `berth_wire::challenge`,
// shared with the server's proxy cache.
use berth_wire::challenge::{
    next_link, Challenge, MANIFEST_ACCEPT as MANIFEST_TYPES, MANIFEST_TYPE_LIST,
};

/// Attempts of one request (or one blob copy) on transient failures.
const ATTEMPTS: u32 = 4;
/// Most manifest bytes read (berth's own limit).
const MAX_MANIFEST: u64 = 4 << 20;
/// Entries asked for per catalog or tag list page.
const PAGE: u32 = 1000;
/// Deepest nesting followed (an index's children, referrers of
/// referrers): a source cannot make the copy recurse without bound.
const MAX_DEPTH: u32 = 8;

/// One side of a sync.
#[derive(Clone, Debug)]
pub struct Side {
    /// `http(s)://host[:port]`.
    pub url: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Accept any TLS certificate (a registry with a self-signed one).
    pub insecure: bool,
}

/// What to sync.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub from: Side,
    pub to: Side,
    /// Repositories to copy: a pattern (`*` within a path component, `**`
    /// across, `?`, `{a,b}`), as Harbor's replication filters.
    pub repos: Option<String>,
    /// Tags to copy: a pattern as for `repos`.
    pub tags: Option<String>,
    /// Tags copied at once.
    pub concurrency: usize,
}

/// What a sync did.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub repositories: u64,
    /// Tags copied or moved, and tags the destination had already.
    pub tags_copied: u64,
    pub tags_present: u64,
    /// Manifests put (children of indexes and referrers included).
    pub manifests_copied: u64,
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    pub blobs_present: u64,
    /// Manifests of a type berth does not store (schema 1), skipped.
    pub skipped: u64,
    /// `repo:tag: what went wrong`.
    pub failures: Vec<String>,
}

/// A failure of one request or step, with what it was about.
#[derive(Debug)]
pub struct SyncError(pub String);

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, SyncError>;

/// Runs a sync; see the module docs. Fails only if a side cannot be
/// listed; per-tag failures are in the report.
pub fn sync(opts: &SyncOptions, progress: &(dyn Fn(&SyncReport) + Sync)) -> Result<SyncReport> {
    let from = Registry::new(&opts.from)?;
    let to = Registry::new(&opts.to)?;
    let repos: Vec<String> = from
        .list("/v2/_catalog", "registry:catalog:*", "repositories")?
        .into_iter()
        .filter(|r| opts.repos.as_deref().is_none_or(|p| glob(p, r)))
        .collect();
    let mut jobs = Vec::new();
    for repo in &repos {
        let scope = format!("repository:{repo}:pull");
        let tags = from.list(&format!("/v2/{repo}/tags/list"), &scope, "tags")?;
        for tag in tags {
            if opts.tags.as_deref().is_none_or(|p| glob(p, &tag)) {
                jobs.push((repo.clone(), tag));
            }
        }
    }
    let run = Run {
        from,
        to,
        counts: Counts::default(),
        done_blobs: Mutex::new(HashSet::new()),
        failures: Mutex::new(Vec::new()),
    };
    let (tx, rx) = crossbeam_channel::unbounded();
    for j in jobs {
        let _ = tx.send(j);
    }
    drop(tx);
    std::thread::scope(|s| {
        for _ in 0..opts.concurrency.max(1) {
            s.spawn(|| {
                for (repo, tag) in rx.iter() {
                    if let Err(e) = run.sync_tag(&repo, &tag) {
                        run.fail(format!("{repo}:{tag}: {e}"));
                    }
                    progress(&run.report(0));
                }
            });
        }
    });
    Ok(run.report(repos.len() as u64))
}

#[derive(Default)]
struct Counts {
    tags_copied: AtomicU64,
    tags_present: AtomicU64,
    manifests_copied: AtomicU64,
    blobs_copied: AtomicU64,
    bytes_copied: AtomicU64,
    blobs_present: AtomicU64,
    skipped: AtomicU64,
}

struct Run {
    from: Registry,
    to: Registry,
    counts: Counts,
    /// (repository, digest) of blobs the destination holds: asked once.
    done_blobs: Mutex<HashSet<(String, String)>>,
    failures: Mutex<Vec<String>>,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Run {
    fn report(&self, repositories: u64) -> SyncReport {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SyncReport {
            repositories,
            tags_copied: get(&c.tags_copied),
            tags_present: get(&c.tags_present),
            manifests_copied: get(&c.manifests_copied),
            blobs_copied: get(&c.blobs_copied),
            bytes_copied: get(&c.bytes_copied),
            blobs_present: get(&c.blobs_present),
            skipped: get(&c.skipped),
            failures: self.failures.lock().map(|f| f.clone()).unwrap_or_default(),
        }
    }

    fn fail(&self, what: String) {
        if let Ok(mut f) = self.failures.lock() {
            f.push(what);
        }
    }

    fn sync_tag(&self, repo: &str, tag: &str) -> Result<()> {
        let pull = format!("repository:{repo}:pull");
        let push = format!("repository:{repo}:pull,push");
        let path = format!("/v2/{repo}/manifests/{tag}");
        // Unchanged since the last sync: one HEAD on each side.
        let source = self.from.head_digest(&path, &pull)?;
        if source.is_some() && source == self.to.head_digest(&path, &push)? {
            add(&self.counts.tags_present, 1);
            if let Some(d) = source {
                self.sync_referrers(repo, &d, &mut HashSet::new(), 0)?;
            }
            return Ok(());
        }
        let mut seen = HashSet::new();
        if let Some((digest, body, media_type)) = self.sync_manifest(repo, tag, &mut seen, 0)? {
            let ok = self.to.send(
                Method::PUT,
                &path,
                &push,
                &[(CONTENT_TYPE.as_str(), media_type.as_str())],
                Some(body),
            )?;
            expect(ok, StatusCode::CREATED, &format!("PUT {path}"))?;
            self.sync_referrers(repo, &digest, &mut seen, 0)?;
            add(&self.counts.tags_copied, 1);
        }
        Ok(())
    }

    /// Copies manifest `reference` of `repo` (and everything it needs)
    /// by digest unless the destination has it; returns its digest, bytes
    /// and media type, or `None` for a manifest berth does not store.
    fn sync_manifest(
        &self,
        repo: &str,
        reference: &str,
        seen: &mut HashSet<String>,
        depth: u32,
    ) -> Result<Option<(String, Vec<u8>, String)>> {
        if depth > MAX_DEPTH {
            return Err(SyncError(format!(
                "{repo}@{reference}: nested deeper than {MAX_DEPTH} levels"
            )));
        }
        let pull = format!("repository:{repo}:pull");
        let push = format!("repository:{repo}:pull,push");
        let path = format!("/v2/{repo}/manifests/{reference}");
        let resp = self.from.send(
            Method::GET,
            &path,
            &pull,
            &[(ACCEPT.as_str(), MANIFEST_TYPES)],
            None,
        )?;
        let resp = expect(resp, StatusCode::OK, &format!("GET {path} on the source"))?;
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let mut body = Vec::new();
        resp.take(MAX_MANIFEST + 1)
            .read_to_end(&mut body)
            .map_err(|e| SyncError(format!("GET {path}: {e}")))?;
        if body.len() as u64 > MAX_MANIFEST {
            return Err(SyncError(format!("{path}: manifest larger than 4 MiB")));
        }
        let digest = Digest::of(Algorithm::Sha256, &body).to_string();
        if reference.contains(':') && reference != digest {
            return Err(SyncError(format!(
                "{path}: the source served bytes that hash to {digest}"
            )));
        }
        if !MANIFEST_TYPE_LIST.contains(&media_type.as_str()) {
            add(&self.counts.skipped, 1);
            return Ok(None);
        }
        if !seen.insert(digest.clone()) {
            return Ok(Some((digest, body, media_type)));
        }
        let by_digest = format!("/v2/{repo}/manifests/{digest}");
        if self.to.head_digest(&by_digest, &push)?.is_none() {
            let json: Value = serde_json::from_slice(&body)
                .map_err(|e| SyncError(format!("{path}: not JSON: {e}")))?;
            if let Some(children) = json["manifests"].as_array() {
                for c in children {
                    let d = descriptor_digest(c, &path)?;
                    self.sync_manifest(repo, &d, seen, depth + 1)?;
                }
            } else {
                let blobs = json["layers"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(std::iter::once(&json["config"]));
                for b in blobs {
                    let d = descriptor_digest(b, &path)?;
                    let size = b["size"].as_u64().unwrap_or(0);
                    self.copy_blob(repo, &d, size)?;
                }
            }
            let put = self.to.send(
                Method::PUT,
                &by_digest,
                &push,
                &[(CONTENT_TYPE.as_str(), media_type.as_str())],
                Some(body.clone()),
            )?;
            expect(put, StatusCode::CREATED, &format!("PUT {by_digest}"))?;
            add(&self.counts.manifests_copied, 1);
        }
        Ok(Some((digest, body, media_type)))
    }

    /// Copies the referrers of `digest` the source lists (OCI 1.1); none
    /// where it has no referrers API.
    fn sync_referrers(
        &self,
        repo: &str,
        digest: &str,
        seen: &mut HashSet<String>,
        depth: u32,
    ) -> Result<()> {
        let pull = format!("repository:{repo}:pull");
        let path = format!("/v2/{repo}/referrers/{digest}");
        let resp = self.from.send(Method::GET, &path, &pull, &[], None)?;
        if resp.status() != StatusCode::OK {
            return Ok(());
        }
        let json: Value = resp.json().unwrap_or(Value::Null);
        for r in json["manifests"].as_array().into_iter().flatten() {
            let d = descriptor_digest(r, &path)?;
            if !seen.contains(&d) {
                self.sync_manifest(repo, &d, seen, depth + 1)?;
                self.sync_referrers(repo, &d, seen, depth + 1)?;
            }
        }
        Ok(())
    }

    /// Copies blob `d` of `repo` unless the destination has it: streamed
    /// from the source's GET into a monolithic upload (POST, then PUT with
    /// the digest), the whole copy retried on a transient failure.
    fn copy_blob(&self, repo: &str, d: &str, size: u64) -> Result<()> {
        let key = (repo.to_owned(), d.to_owned());
        if self.done_blobs.lock().is_ok_and(|s| s.contains(&key)) {
            return Ok(());
        }
        let pull = format!("repository:{repo}:pull");
        let push = format!("repository:{repo}:pull,push");
        let path = format!("/v2/{repo}/blobs/{d}");
        let head = self.to.send(Method::HEAD, &path, &push, &[], None)?;
        if head.status() == StatusCode::OK {
            add(&self.counts.blobs_present, 1);
        } else {
            let mut attempt = 0;
            loop {
                match self.stream_blob(repo, d, size, &pull, &push) {
                    Ok(n) => {
                        add(&self.counts.blobs_copied, 1);
                        add(&self.counts.bytes_copied, n);
                        break;
                    }
                    Err(e) if attempt + 1 < ATTEMPTS && e.1 => {
                        attempt += 1;
                        std::thread::sleep(backoff(attempt));
                    }
                    Err(e) => return Err(e.0),
                }
            }
        }
        if let Ok(mut s) = self.done_blobs.lock() {
            s.insert(key);
        }
        Ok(())
    }

    /// One attempt of [`Run::copy_blob`]; the error says whether it may
    /// be retried.
    fn stream_blob(
        &self,
        repo: &str,
        d: &str,
        size: u64,
        pull: &str,
        push: &str,
    ) -> std::result::Result<u64, (SyncError, bool)> {
        let path = format!("/v2/{repo}/blobs/{d}");
        let src = self
            .from
            .send(Method::GET, &path, pull, &[], None)
            .map_err(|e| (e, true))?;
        let src = expect(src, StatusCode::OK, &format!("GET {path} on the source"))
            .map_err(|e| (e, false))?;
        let len = src.content_length().unwrap_or(size);
        let upload = format!("/v2/{repo}/blobs/uploads/");
        let post = self
            .to
            .send(Method::POST, &upload, push, &[], None)
            .map_err(|e| (e, true))?;
        let post = expect(post, StatusCode::ACCEPTED, &format!("POST {upload}"))
            .map_err(|e| (e, false))?;
        let location = post
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| (SyncError(format!("POST {upload}: no Location")), false))?;
        let mut url = self.to.resolve(location).map_err(|e| (e, false))?;
        url.query_pairs_mut().append_pair("digest", d);
        let req = self
            .to
            .http
            .put(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(Body::sized(src, len));
        let put = self.to.authorized(req, push).send().map_err(|e| {
            (
                SyncError(format!("PUT {path} on the destination: {e}")),
                true,
            )
        })?;
        let status = put.status();
        if status != StatusCode::CREATED {
            let transient = is_transient(status);
            let text = put.text().unwrap_or_default();
            return Err((
                SyncError(format!("PUT {path}: {status}: {text}")),
                transient,
            ));
        }
        Ok(len)
    }
}

/// The `digest` of an OCI descriptor, checked to be one.
fn descriptor_digest(desc: &Value, within: &str) -> Result<String> {
    let d = desc["digest"].as_str().unwrap_or_default();
    d.parse::<Digest>()
        .map(|d| d.to_string())
        .map_err(|e| SyncError(format!("{within}: descriptor digest {d:?}: {e}")))
}

fn expect(resp: Response, want: StatusCode, what: &str) -> Result<Response> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let text: String = resp.text().unwrap_or_default().chars().take(300).collect();
    Err(SyncError(format!("{what}: {status}: {text}")))
}

fn is_transient(s: StatusCode) -> bool {
    matches!(s.as_u16(), 429 | 502 | 503 | 504)
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(200 << attempt.min(6))
}

/// One registry: its client, credentials and the bearer tokens it gave.
struct Registry {
    http: Client,
    base: url::Url,
    creds: Option<(String, String)>,
    /// Bearer tokens by scope; `None` once the registry asked for Basic.
    tokens: Mutex<HashMap<String, String>>,
    basic: std::sync::atomic::AtomicBool,
}

impl Registry {
    fn new(side: &Side) -> Result<Registry> {
        let base = url::Url::parse(&side.url)
            .map_err(|e| SyncError(format!("{}: not a URL: {e}", side.url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(SyncError(format!("{}: http or https", side.url)));
        }
        let http = Client::builder()
            .danger_accept_invalid_certs(side.insecure)
            .connect_timeout(Duration::from_secs(10))
            .timeout(None)
            .build()
            .map_err(|e| SyncError(format!("HTTP client: {e}")))?;
        Ok(Registry {
            http,
            base,
            creds: side
                .user
                .clone()
                .map(|u| (u, side.password.clone().unwrap_or_default())),
            tokens: Mutex::new(HashMap::new()),
            basic: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn resolve(&self, path: &str) -> Result<url::Url> {
        self.base
            .join(path)
            .map_err(|e| SyncError(format!("{path}: {e}")))
    }

    /// `req` with the credentials this registry takes for `scope`.
    fn authorized(&self, req: RequestBuilder, scope: &str) -> RequestBuilder {
        if let Some(t) = self.tokens.lock().ok().and_then(|t| t.get(scope).cloned()) {
            return req.bearer_auth(t);
        }
        match (&self.creds, self.basic.load(Ordering::Relaxed)) {
            (Some((u, p)), true) => req.basic_auth(u, Some(p)),
            _ => req,
        }
    }

    /// One request, answered: a `401` is met once (a token for `scope`,
    /// or Basic), transient failures are retried with backoff.
    fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        let url = self.resolve(path)?;
        let mut attempt = 0;
        let mut authed = false;
        loop {
            let mut req = self.http.request(method.clone(), url.clone());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            let result = self.authorized(req, scope).send();
            let transient = match result {
                Ok(r) if r.status() == StatusCode::UNAUTHORIZED && !authed => {
                    authed = true;
                    self.authenticate(r.headers(), scope)?;
                    continue;
                }
                Ok(r) if is_transient(r.status()) => format!("{}", r.status()),
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => e.to_string(),
                Err(e) => return Err(SyncError(format!("{method} {url}: {e}"))),
            };
            attempt += 1;
            if attempt >= ATTEMPTS {
                return Err(SyncError(format!("{method} {url}: {transient}")));
            }
            std::thread::sleep(backoff(attempt));
        }
    }

    /// Meets a `401`'s challenge: a bearer token for `scope` from the
    /// realm (Docker token auth), or Basic from now on.
    fn authenticate(&self, headers: &HeaderMap, scope: &str) -> Result<()> {
        let challenge = headers
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (realm, service) = match Challenge::parse(challenge) {
            Challenge::Basic => {
                self.basic.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Challenge::Bearer { realm, service } => (realm, service),
            Challenge::Other(_) => {
                return Err(SyncError(format!(
                    "{}: unauthorized ({challenge:?})",
                    self.base
                )))
            }
        };
        let realm = &realm;
        let mut url =
            url::Url::parse(realm).map_err(|e| SyncError(format!("token realm {realm:?}: {e}")))?;
        // The credentials go where the registry says; never in clear text
        // when the registry itself was reached over TLS.
        if self.base.scheme() == "https" && url.scheme() != "https" {
            return Err(SyncError(format!(
                "{}: refusing to send credentials to the token realm {realm} (not https)",
                self.base
            )));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = self.http.get(url.clone());
        if let Some((u, p)) = &self.creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .map_err(|e| SyncError(format!("token from {url}: {e}")))?;
        let resp = expect(resp, StatusCode::OK, &format!("token from {realm}"))?;
        let json: Value = resp
            .json()
            .map_err(|e| SyncError(format!("token from {realm}: {e}")))?;
        let token = json["token"]
            .as_str()
            .or_else(|| json["access_token"].as_str())
            .ok_or_else(|| SyncError(format!("token from {realm}: no token in the answer")))?;
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(scope.to_owned(), token.to_owned());
        }
        Ok(())
    }

    /// The digest a `HEAD` of manifest `path` answers, or `None` (404).
    fn head_digest(&self, path: &str, scope: &str) -> Result<Option<String>> {
        let r = self.send(
            Method::HEAD,
            path,
            scope,
            &[(ACCEPT.as_str(), MANIFEST_TYPES)],
            None,
        )?;
        match r.status() {
            StatusCode::OK => Ok(r
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(SyncError(format!("HEAD {path}: {s}"))),
        }
    }

    /// Every entry of a paged list (`/v2/_catalog`, tag lists): follows
    /// `Link: <…>; rel="next"`.
    fn list(&self, path: &str, scope: &str, field: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut next = Some(format!("{path}?n={PAGE}"));
        while let Some(p) = next.take() {
            let r = self.send(Method::GET, &p, scope, &[], None)?;
            if r.status() == StatusCode::NOT_FOUND && field == "tags" {
                break; // a repository without tags
            }
            let r = expect(r, StatusCode::OK, &format!("GET {p}"))?;
            next = r
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let json: Value = r.json().map_err(|e| SyncError(format!("GET {p}: {e}")))?;
            out.extend(
                json[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            );
        }
        Ok(out)
    }
}

pub use berth_wire::pattern::glob;
