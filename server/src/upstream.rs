//! berth as a client of another registry: the upstream of a proxy cache
//! project (`proxy_cache.rs`). One [`Upstream`] per registry record: its
//! HTTP client (TLS verified with the system's roots, or the record's CA,
//! or not at all when `insecure`), its credential, and the bearer tokens
//! it was given.
//!
//! Auth as Docker clients do it: a request goes out with what worked
//! before (a token for its scope, or Basic once the upstream asked for
//! it); a `401` is met once — `Basic` from then on, or a token for the
//! scope fetched from the challenge's realm with the credential (Docker
//! token auth) — and the request is sent again. Tokens are kept per scope
//! for their `expires_in` (60 s when not given), less a margin.
//!
//! Nothing here retries: the proxy cache answers a client who is waiting,
//! and an upstream that does not answer is served from the cache
//! (`UpstreamError::Unreachable`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_engine::records::RegistryRecord;
use berth_engine::{Algorithm, Digest};
use berth_wire::challenge::{Challenge, MANIFEST_ACCEPT};
use berth_wire::manifest::MAX_MANIFEST_BYTES;
use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode, Url};

/// Time to connect to an upstream.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for any read of a response (a blob's next bytes included).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Whole-request limit for manifests, tokens and pings.
const SMALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A token is not used in its last seconds.
const TOKEN_MARGIN: Duration = Duration::from_secs(5);

/// Why an upstream request failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream could not be reached or did not answer (connection
    /// refused, timeout, TLS failure, 5xx, 429): the cache may serve what
    /// it holds.
    #[error("upstream {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    /// The upstream answered, but not as a registry should (refused our
    /// credential, served bytes that do not match their digest, …).
    #[error("upstream {url}: {detail}")]
    Refused { url: String, detail: String },
}

/// A manifest as the upstream served it, its digest checked.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub digest: Digest,
    pub media_type: String,
    pub body: Vec<u8>,
}

/// One upstream registry.
pub struct Upstream {
    http: Client,
    base: Url,
    creds: Option<(String, String)>,
    /// `docker-hub`: one-component names are `library/<name>` there.
    hub: bool,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    basic: AtomicBool,
}

impl Upstream {
    /// The client of registry record `rec`.
    pub fn new(rec: &RegistryRecord) -> Result<Upstream, String> {
        let base = Url::parse(&format!("{}/", rec.url.trim_end_matches('/')))
            .map_err(|e| format!("registry URL {}: {e}", rec.url))?;
        let mut b = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(5))
            .danger_accept_invalid_certs(rec.insecure);
        if !rec.ca_certificate.is_empty() {
            for cert in reqwest::Certificate::from_pem_bundle(rec.ca_certificate.as_bytes())
                .map_err(|e| format!("registry {} ca_certificate: {e}", rec.name))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        let http = b.build().map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Upstream {
            http,
            base,
            creds: rec
                .credential
                .as_ref()
                .map(|c| (c.access_key.clone(), c.access_secret.clone())),
            hub: rec.kind == "docker-hub",
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
        })
    }

    /// The upstream's name for `repo` (the part after the proxy project).
    pub fn repo_name(&self, repo: &str) -> String {
        if self.hub && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_owned()
        }
    }

    fn url(&self, path: &str) -> Result<Url, UpstreamError> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| self.refused(format!("{path}: {e}")))
    }

    fn refused(&self, detail: String) -> UpstreamError {
        UpstreamError::Refused {
            url: self.base.to_string(),
            detail,
        }
    }

    fn unreachable(&self, detail: String) -> UpstreamError {
        UpstreamError::Unreachable {
            url: self.base.to_string(),
            detail,
        }
    }

    /// `req` with what this upstream took before for `scope`.
    fn authorized(&self, req: RequestBuilder, scope: &str) -> RequestBuilder {
        let token = self.tokens.lock().ok().and_then(|t| {
            t.get(scope)
                .filter(|(_, until)| *until > Instant::now())
                .map(|(tok, _)| tok.clone())
        });
        if let Some(t) = token {
            return req.bearer_auth(t);
        }
        match (&self.creds, self.basic.load(Ordering::Relaxed)) {
            (Some((u, p)), true) => req.basic_auth(u, Some(p)),
            _ => req,
        }
    }

    /// One request, a `401` met once (see the module docs). Connection
    /// failures, timeouts, `429` and `5xx` are [`UpstreamError::Unreachable`].
    async fn send(
        &self,
        method: Method,
        path: &str,
        scope: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Response, UpstreamError> {
        let url = self.url(path)?;
        let mut authed = false;
        loop {
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            let resp = self
                .authorized(req, scope)
                .send()
                .await
                .map_err(|e| self.unreachable(format!("{method} {path}: {e}")))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !authed {
                authed = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                self.authenticate(&challenge, scope).await?;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                return Err(self.unreachable(format!("{method} {path}: {status}")));
            }
            return Ok(resp);
        }
    }

    /// Meets a challenge for `scope`.
    async fn authenticate(&self, challenge: &str, scope: &str) -> Result<(), UpstreamError> {
        let (realm, service) = match Challenge::parse(challenge) {
            Challenge::Basic => {
                self.basic.store(true, Ordering::Relaxed);
                return Ok(());
            }
            Challenge::Bearer { realm, service } => (realm, service),
            Challenge::Other(h) => {
                return Err(self.refused(format!("unauthorized, with challenge {h:?}")))
            }
        };
        let mut url =
            Url::parse(&realm).map_err(|e| self.refused(format!("token realm {realm:?}: {e}")))?;
        // The credential never goes in clear text to a realm when the
        // upstream itself is reached over TLS.
        if self.creds.is_some() && self.base.scheme() == "https" && url.scheme() != "https" {
            return Err(self.refused(format!(
                "refusing to send the credential to token realm {realm} (not https)"
            )));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = &service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = self.http.get(url).timeout(SMALL_TIMEOUT);
        if let Some((u, p)) = &self.creds {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.unreachable(format!("token from {realm}: {e}")))?;
        if resp.status().is_server_error() {
            return Err(self.unreachable(format!("token from {realm}: {}", resp.status())));
        }
        if !resp.status().is_success() {
            return Err(self.refused(format!("token from {realm}: {}", resp.status())));
        }
        let body = read_capped(resp, 64 << 10)
            .await
            .map_err(|e| self.unreachable(format!("token from {realm}: {e}")))?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.refused(format!("token from {realm}: {e}")))?;
        let token = json["token"]
            .as_str()
            .or_else(|| json["access_token"].as_str())
            .ok_or_else(|| self.refused(format!("token from {realm}: no token in the answer")))?;
        let life = json["expires_in"].as_u64().unwrap_or(60).clamp(10, 3600);
        let until = Instant::now() + Duration::from_secs(life).saturating_sub(TOKEN_MARGIN);
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(scope.to_owned(), (token.to_owned(), until));
        }
        Ok(())
    }

    /// Checks the upstream answers as a registry (`GET /v2/`, signing in
    /// if it asks): Harbor's registry ping.
    pub async fn ping(&self) -> Result<(), UpstreamError> {
        let resp = self
            .send(Method::GET, "/v2/", "", None, Some(SMALL_TIMEOUT))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            StatusCode::UNAUTHORIZED => Err(self.refused("the credential was refused".into())),
            s => Err(self.refused(format!("GET /v2/: {s}"))),
        }
    }

    /// The digest the upstream has for manifest `reference` of `repo` (a
    /// `HEAD`, which Docker Hub does not count against pull limits), or
    /// `None` when it has none. A `HEAD` answered without
    /// `Docker-Content-Digest` counts as unknown: the caller GETs.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Option<Digest>>, UpstreamError> {
        let tail = format!("manifests/{reference}");
        let found = self
            .object(
                Method::HEAD,
                repo,
                &tail,
                Some(MANIFEST_ACCEPT),
                Some(SMALL_TIMEOUT),
            )
            .await?;
        Ok(found.map(|resp| content_digest(&resp)))
    }

    /// Manifest `reference` of `repo`, or `None` when the upstream has
    /// none. Its bytes are checked against the digest asked for, else
    /// against the `Docker-Content-Digest` the upstream sent (sha256 of
    /// the bytes when it sent none); at most 4 MiB are read.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Fetched>, UpstreamError> {
        let path = format!("/v2/{}/manifests/{reference}", self.repo_name(repo));
        let tail = format!("manifests/{reference}");
        let found = self
            .object(
                Method::GET,
                repo,
                &tail,
                Some(MANIFEST_ACCEPT),
                Some(SMALL_TIMEOUT),
            )
            .await?;
        let Some(resp) = found else {
            return Ok(None);
        };
        let media_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
            .unwrap_or_default();
        let named = content_digest(&resp);
        let body = read_capped(resp, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| self.unreachable(format!("GET {path}: {e}")))?;
        // A registry that does not say (or says only JSON): the body's own
        // `mediaType`, as berth reads a push without one.
        let media_type = if media_type.is_empty() || media_type == "application/json" {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
                .unwrap_or(media_type)
        } else {
            media_type
        };
        let expected = Digest::parse(reference).ok().or(named);
        let digest = match expected {
            Some(d) => {
                if Digest::of(d.algorithm(), &body) != d {
                    return Err(
                        self.refused(format!("GET {path}: the bytes served do not hash to {d}"))
                    );
                }
                d
            }
            None => Digest::of(Algorithm::Sha256, &body),
        };
        Ok(Some(Fetched {
            digest,
            media_type,
            body,
        }))
    }

    /// `GET` (or `HEAD`) of blob `digest` of `repo`: the response, `200`,
    /// its body not yet read; `None` when the upstream has no such blob.
    pub async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
        head: bool,
    ) -> Result<Option<Response>, UpstreamError> {
        let method = if head { Method::HEAD } else { Method::GET };
        self.object(method, repo, &format!("blobs/{digest}"), None, None)
            .await
    }

    /// `/v2/<repo>/<tail>` (`manifests/…`, `blobs/…`) of `repo` (berth's
    /// name for it): `200` is the response, `404` none, anything else
    /// refused.
    async fn object(
        &self,
        method: Method,
        repo: &str,
        tail: &str,
        accept: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Option<Response>, UpstreamError> {
        let repo = self.repo_name(repo);
        let path = format!("/v2/{repo}/{tail}");
        let resp = self
            .send(method.clone(), &path, &pull_scope(&repo), accept, timeout)
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(Some(resp)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.refused(format!("{method} {path}: {s}"))),
        }
    }
}

impl Upstream {
    /// Every repository of the upstream's catalog (`/v2/_catalog`, paged
    /// by its `Link`s), at most `limit`.
    pub async fn catalog(&self, limit: usize) -> Result<Vec<String>, UpstreamError> {
        self.list("/v2/_catalog", "registry:catalog:*", "repositories", limit)
            .await
    }

    /// Every tag of `repo` (none when the upstream has no such
    /// repository), at most `limit`.
    pub async fn tags(&self, repo: &str, limit: usize) -> Result<Vec<String>, UpstreamError> {
        let repo = self.repo_name(repo);
        let path = format!("/v2/{repo}/tags/list");
        self.list(&path, &pull_scope(&repo), "tags", limit).await
    }

    async fn list(
        &self,
        path: &str,
        scope: &str,
        field: &str,
        limit: usize,
    ) -> Result<Vec<String>, UpstreamError> {
        let mut out = Vec::new();
        let mut next = Some(format!("{path}?n=1000"));
        while let Some(p) = next.take() {
            let resp = self
                .send(Method::GET, &p, scope, None, Some(SMALL_TIMEOUT))
                .await?;
            match resp.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND if field == "tags" => break,
                s => return Err(self.refused(format!("GET {p}: {s}"))),
            }
            next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(berth_wire::challenge::next_link)
                .filter(|n| n.starts_with(path) || n.starts_with(self.base.as_str()));
            let body = read_capped(resp, 16 << 20)
                .await
                .map_err(|e| self.unreachable(format!("GET {p}: {e}")))?;
            let json: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| self.refused(format!("GET {p}: {e}")))?;
            out.extend(
                json[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            );
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
        Ok(out)
    }
}

/// The digest a registry names its answer with, if it names one.
fn content_digest(resp: &Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Digest::parse(v).ok())
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

/// A response body, refused past `limit` bytes.
async fn read_capped(resp: Response, limit: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!("more than {limit} bytes"));
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if out.len() + chunk.len() > limit {
            return Err(format!("more than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
