//! Blob uploads: start, mount, monolithic POST, chunked PATCH, completing
//! PUT, status and cancel (end-4a/b/c, end-5, end-6, end-11, end-13, end-14).
//!
//! Request bodies are streamed into the engine's [`UploadWriter`] frame by
//! frame, never buffered whole: frames are gathered up to [`WRITE_BATCH`]
//! bytes (without copying) and written on a blocking thread, then the next
//! batch is read. Bytes are acknowledged (`202`/`201`) only after the engine
//! has made them durable (`commit`/`complete`).
//!
//! Advertised upload state is `Range: 0-<last byte>` as distribution sends
//! it: `0-0` for an empty session. A new session advertises
//! `OCI-Chunk-Min-Length: 1048576` (spec main): any chunk is accepted, but
//! each acknowledged chunk costs a data fsync and an index sync, so smaller
//! chunks mostly measure fsync latency.
//!
//! Open sessions are bounded per owner ([`session_owner`]: the signed-in
//! account, else the repository) by `BERTH_MAX_UPLOADS_PER_USER` (default
//! 256); one more is `429 TOOMANYREQUESTS` until a session completes, is
//! cancelled or expires.

use crate::limits::RequestBody;
use berth_engine::{Algorithm, Digest, RepoName, UploadError, UploadWriter};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, LOCATION, RANGE};
use hyper::{Response, StatusCode};

use crate::auth::Principal;
use crate::errors::{ApiError, Code};
use crate::http::{blocking, drain, empty, hv, App, Body, HDR_CONTENT_DIGEST, HDR_UPLOAD_UUID};
use crate::router::Query;

pub use berth_wire::range::ChunkRange;

/// Body bytes gathered before one blocking write.
const WRITE_BATCH: usize = 1 << 20;

/// How much of a chunk is read and dropped before refusing it (see
/// [`drain`]); larger chunks get their answer on a closing connection.
const DRAIN_ON_REFUSAL: usize = 8 << 20;

/// `POST /v2/<name>/blobs/uploads/` in its three forms.
#[derive(Debug)]
pub enum StartUpload {
    /// `?mount=<digest>[&from=<repo>]`: link an existing blob (from `from`,
    /// or from anywhere without it); `201`, or a new session (`202`) when
    /// there is nothing to mount.
    Mount {
        repo: RepoName,
        digest: Digest,
        from: Option<RepoName>,
        algorithm: Algorithm,
    },
    /// `?digest=<digest>` with the blob as body: one-request upload, `201`.
    Monolithic { repo: RepoName, digest: Digest },
    /// No digest: a new session hashing with `?digest-algorithm=` (default
    /// sha256); `202` with the session's `Location`.
    Session {
        repo: RepoName,
        algorithm: Algorithm,
    },
}

impl StartUpload {
    pub fn parse(name: &str, query: Query<'_>) -> Result<StartUpload, ApiError> {
        let repo = RepoName::parse(name)?;
        let algorithm = match query.get("digest-algorithm") {
            Some(a) => Algorithm::parse(&a)?,
            None => Algorithm::Sha256,
        };
        if let Some(m) = query.get("mount") {
            let digest = Digest::parse(&m)?;
            return Ok(match query.get("from") {
                None => StartUpload::Mount {
                    repo,
                    digest,
                    from: None,
                    algorithm,
                },
                Some(f) => match RepoName::parse(&f) {
                    Ok(from) => StartUpload::Mount {
                        repo,
                        digest,
                        from: Some(from),
                        algorithm,
                    },
                    // Nothing can be mounted from a repository that cannot
                    // exist: the spec's answer is a plain session.
                    Err(_) => StartUpload::Session { repo, algorithm },
                },
            });
        }
        if let Some(d) = query.get("digest") {
            return Ok(StartUpload::Monolithic {
                repo,
                digest: Digest::parse(&d)?,
            });
        }
        Ok(StartUpload::Session { repo, algorithm })
    }

    /// The same request as a plain new session (a mount the caller may
    /// not make; the monolithic form stays as it is).
    pub fn into_session(self) -> StartUpload {
        match self {
            StartUpload::Mount {
                repo, algorithm, ..
            } => StartUpload::Session { repo, algorithm },
            other => other,
        }
    }

    /// Runs the request; new sessions belong to `owner` ([`session_owner`]).
    pub async fn apply(
        self,
        app: &App,
        body: RequestBody,
        owner: String,
    ) -> Result<Response<Body>, ApiError> {
        match self {
            StartUpload::Mount {
                repo,
                digest,
                from,
                algorithm,
            } => {
                let (r, d) = (repo.clone(), digest.clone());
                let mounted = blocking(app, move |e| e.mount_blob(&r, &d, from.as_ref())).await??;
                match mounted {
                    Some(info) => Ok(created_blob(&repo, &info.digest)),
                    None => start_session(app, repo, algorithm, owner).await,
                }
            }
            StartUpload::Monolithic { repo, digest } => {
                let (r, alg) = (repo.clone(), digest.algorithm());
                let writer = blocking(app, move |e| -> Result<UploadWriter, UploadError> {
                    let status = e.begin_upload_as(&r, alg, &owner)?;
                    e.upload_writer(&r, &status.id, Some(0))
                })
                .await??;
                let id = writer.id().to_owned();
                let result = async {
                    let (writer, _) = pump(app, writer, body).await?;
                    let d = digest.clone();
                    Ok::<_, ApiError>(blocking(app, move |_| writer.complete(&d, None)).await??)
                }
                .await;
                match result {
                    Ok(info) => Ok(created_blob(&repo, &info.digest)),
                    Err(err) => {
                        // The session was ours alone; do not leave it behind.
                        let _ = blocking(app, move |e| e.cancel_upload(&repo, &id)).await;
                        Err(err)
                    }
                }
            }
            StartUpload::Session { repo, algorithm } => {
                start_session(app, repo, algorithm, owner).await
            }
        }
    }
}

/// Whom upload sessions started by `principal` in `repo` count against:
/// the signed-in account (user or robot), else the repository (auth off,
/// or a caller with no name).
pub fn session_owner(principal: &Principal, repo: &str) -> String {
    match principal.name() {
        "" => format!("repository {repo}"),
        name => format!("account {name}"),
    }
}

async fn start_session(
    app: &App,
    repo: RepoName,
    algorithm: Algorithm,
    owner: String,
) -> Result<Response<Body>, ApiError> {
    let r = repo.clone();
    let status = blocking(app, move |e| e.begin_upload_as(&r, algorithm, &owner)).await??;
    let mut res = upload_progress(StatusCode::ACCEPTED, &repo, &status.id, status.offset);
    res.headers_mut()
        .insert(HDR_CHUNK_MIN_LENGTH, HeaderValue::from(CHUNK_MIN_LENGTH));
    Ok(res)
}

/// `OCI-Chunk-Min-Length`, sent when a session starts.
const HDR_CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");
/// The advertised minimum chunk: 1 MiB (see the module docs).
const CHUNK_MIN_LENGTH: u64 = 1 << 20;

/// `PATCH /v2/<name>/blobs/uploads/<id>` with `Content-Range: a-b`
/// (optional; without it the chunk appends at the current offset) and the
/// chunk as body. `202` with `Range: 0-<last byte>`; `416` with the current
/// `Range` if `a` is not where the upload stands.
#[derive(Debug)]
pub struct PatchUpload {
    pub repo: RepoName,
    pub id: String,
    pub range: Option<ChunkRange>,
}

impl PatchUpload {
    pub fn parse(name: &str, id: &str, headers: &HeaderMap) -> Result<PatchUpload, ApiError> {
        let repo = RepoName::parse(name)?;
        let id = upload_id(&repo, id)?;
        let range = chunk_range(headers)?;
        Ok(PatchUpload { repo, id, range })
    }

    pub async fn apply(self, app: &App, body: RequestBody) -> Result<Response<Body>, ApiError> {
        let PatchUpload { repo, id, range } = self;
        let writer = receive(app, &repo, &id, range, body).await?;
        let status = blocking(app, move |_| writer.commit()).await??;
        Ok(upload_progress(
            StatusCode::ACCEPTED,
            &repo,
            &id,
            status.offset,
        ))
    }
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=<digest>`, optionally with a
/// last chunk (and its `Content-Range`). Verifies the whole blob against
/// `digest`; `201` with the blob's `Location`.
#[derive(Debug)]
pub struct CompleteUpload {
    pub repo: RepoName,
    pub id: String,
    pub digest: Digest,
    pub range: Option<ChunkRange>,
}

impl CompleteUpload {
    pub fn parse(
        name: &str,
        id: &str,
        query: Query<'_>,
        headers: &HeaderMap,
    ) -> Result<CompleteUpload, ApiError> {
        let repo = RepoName::parse(name)?;
        let id = upload_id(&repo, id)?;
        let Some(d) = query.get("digest") else {
            return Err(ApiError::new(
                Code::DigestInvalid,
                "the digest query parameter is required to complete an upload",
            ));
        };
        let digest = Digest::parse(&d)?;
        let range = chunk_range(headers)?;
        Ok(CompleteUpload {
            repo,
            id,
            digest,
            range,
        })
    }

    pub async fn apply(self, app: &App, body: RequestBody) -> Result<Response<Body>, ApiError> {
        let CompleteUpload {
            repo,
            id,
            digest,
            range,
        } = self;
        let writer = receive(app, &repo, &id, range, body).await?;
        let d = digest.clone();
        let info = blocking(app, move |_| writer.complete(&d, None)).await??;
        Ok(created_blob(&repo, &info.digest))
    }
}

/// `GET /v2/<name>/blobs/uploads/<id>`: where the upload stands, `204`.
#[derive(Debug)]
pub struct UploadStatus {
    pub repo: RepoName,
    pub id: String,
}

impl UploadStatus {
    pub fn parse(name: &str, id: &str) -> Result<UploadStatus, ApiError> {
        let repo = RepoName::parse(name)?;
        let id = upload_id(&repo, id)?;
        Ok(UploadStatus { repo, id })
    }

    /// An index read only: runs inline.
    pub fn apply(self, app: &App) -> Result<Response<Body>, ApiError> {
        let status = app.engine.upload_status(&self.repo, &self.id)?;
        Ok(upload_progress(
            StatusCode::NO_CONTENT,
            &self.repo,
            &self.id,
            status.offset,
        ))
    }
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`: cancels the session, `204`.
#[derive(Debug)]
pub struct CancelUpload {
    pub repo: RepoName,
    pub id: String,
}

impl CancelUpload {
    pub fn parse(name: &str, id: &str) -> Result<CancelUpload, ApiError> {
        let repo = RepoName::parse(name)?;
        let id = upload_id(&repo, id)?;
        Ok(CancelUpload { repo, id })
    }

    pub async fn apply(self, app: &App) -> Result<Response<Body>, ApiError> {
        let CancelUpload { repo, id } = self;
        blocking(app, move |e| e.cancel_upload(&repo, &id)).await??;
        Ok(empty(StatusCode::NO_CONTENT))
    }
}

/// Reads `Content-Range` (see [`ChunkRange::parse`]) and checks it against
/// `Content-Length`.
fn chunk_range(headers: &HeaderMap) -> Result<Option<ChunkRange>, ApiError> {
    let Some(v) = headers.get(hyper::header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let range = v.to_str().ok().and_then(ChunkRange::parse).ok_or_else(|| {
        ApiError::new(
            Code::BlobUploadInvalid,
            "malformed Content-Range; expected <first>-<last>",
        )
    })?;
    if let (Some(len), Some(size)) = (content_length(headers), range.size()) {
        if len != size {
            return Err(ApiError::new(
                Code::SizeInvalid,
                format!("Content-Range {range} is {size} bytes but Content-Length is {len}",),
            ));
        }
    }
    Ok(Some(range))
}

/// Checks that a chunk's body had the size its `Content-Range` announced.
fn check_received(range: ChunkRange, n: u64) -> Result<(), ApiError> {
    if range.size() == Some(n) {
        Ok(())
    } else {
        Err(ApiError::new(
            Code::SizeInvalid,
            format!(
                "Content-Range {range} announced a different size than the {n} bytes of the body"
            ),
        ))
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Rejects ids that cannot name a session before touching the index.
fn upload_id(repo: &RepoName, id: &str) -> Result<String, ApiError> {
    if berth_engine::valid_upload_id(id) {
        Ok(id.to_owned())
    } else {
        Err(ApiError::new(
            Code::BlobUploadUnknown,
            format!("upload {id:?} is not known in repository {repo}"),
        ))
    }
}

/// Opens the upload's writer; an offset that is not the durable one is
/// `416` with where the upload stands.
async fn open_writer(
    app: &App,
    repo: &RepoName,
    id: &str,
    offset: Option<u64>,
) -> Result<UploadWriter, ApiError> {
    let (r, i) = (repo.clone(), id.to_owned());
    let err = match blocking(app, move |e| e.upload_writer(&r, &i, offset)).await? {
        Ok(w) => return Ok(w),
        Err(err) => err,
    };
    if let UploadError::OffsetMismatch { expected, .. } = &err {
        return Err(range_invalid(repo, id, *expected, err.to_string()));
    }
    Err(err.into())
}

/// `416 RANGE_INVALID` with the session's `Location`, `Range` (it stands
/// at `offset`) and `Docker-Upload-UUID`: the spec's answer to a chunk that
/// does not continue the upload.
fn range_invalid(repo: &RepoName, id: &str, offset: u64, detail: String) -> ApiError {
    let mut api = ApiError::new(Code::RangeInvalid, detail);
    api.headers.push((LOCATION, upload_location(repo, id)));
    api.headers.push((RANGE, progress_range(offset)));
    api.headers.push((HDR_UPLOAD_UUID, hv(id)));
    api
}

/// Opens the session's writer at the chunk's start (draining the body if
/// the session refuses it, so the client reads the answer) and streams the
/// body into it, checking the byte count against `Content-Range`. Nothing is
/// acknowledged yet.
async fn receive(
    app: &App,
    repo: &RepoName,
    id: &str,
    range: Option<ChunkRange>,
    body: RequestBody,
) -> Result<UploadWriter, ApiError> {
    let opened = match range {
        // IMPORTANT: refused before the writer opens, so the session is
        // untouched (no busy flag taken, no byte written).
        Some(r) if r.size().is_none() => match app.engine.upload_status(repo, id) {
            Ok(status) => Err(range_invalid(
                repo,
                id,
                status.offset,
                format!("Content-Range {r} is not a chunk: its last byte must be at or after its first, and its size below 2^64"),
            )),
            Err(e) => Err(e.into()),
        },
        _ => open_writer(app, repo, id, range.map(|r| r.first)).await,
    };
    let writer = match opened {
        Ok(w) => w,
        Err(e) => {
            drain(body, DRAIN_ON_REFUSAL).await;
            return Err(e);
        }
    };
    let (writer, n) = pump(app, writer, body).await?;
    if let Some(r) = range {
        check_received(r, n)?;
    }
    Ok(writer)
}

/// Streams `body` into `writer` (see the module docs). Returns the writer
/// and the number of bytes written; nothing is acknowledged yet.
async fn pump(
    app: &App,
    mut writer: UploadWriter,
    mut body: RequestBody,
) -> Result<(UploadWriter, u64), ApiError> {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batched = 0usize;
    let mut total = 0u64;
    loop {
        let frame = match body.frame().await {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                return Err(ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("reading the request body: {e}"),
                ))
            }
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if data.is_empty() {
            continue;
        }
        total += data.len() as u64;
        app.metrics.received(data.len() as u64);
        batched += data.len();
        batch.push(data);
        if batched >= WRITE_BATCH {
            writer = write_batch(app, writer, std::mem::take(&mut batch)).await?;
            batched = 0;
        }
    }
    if !batch.is_empty() {
        writer = write_batch(app, writer, batch).await?;
    }
    Ok((writer, total))
}

pub(crate) async fn write_batch(
    app: &App,
    mut writer: UploadWriter,
    batch: Vec<Bytes>,
) -> Result<UploadWriter, ApiError> {
    blocking(app, move |_| {
        writer.write_all(&batch)?;
        Ok::<_, UploadError>(writer)
    })
    .await?
    .map_err(ApiError::from)
}

fn upload_location(repo: &RepoName, id: &str) -> HeaderValue {
    hv(&format!("/v2/{repo}/blobs/uploads/{id}"))
}

/// `0-<offset-1>`, and `0-0` for an empty upload (distribution's form).
fn progress_range(offset: u64) -> HeaderValue {
    hv(&format!("0-{}", offset.saturating_sub(1)))
}

/// An upload session's state: `Location`, `Range`, `Docker-Upload-UUID`.
fn upload_progress(status: StatusCode, repo: &RepoName, id: &str, offset: u64) -> Response<Body> {
    let mut res = empty(status);
    let h = res.headers_mut();
    h.insert(LOCATION, upload_location(repo, id));
    h.insert(RANGE, progress_range(offset));
    h.insert(HDR_UPLOAD_UUID, hv(id));
    res
}

/// `201` for a blob now readable in `repo`.
fn created_blob(repo: &RepoName, digest: &Digest) -> Response<Body> {
    let mut res = empty(StatusCode::CREATED);
    let h = res.headers_mut();
    h.insert(LOCATION, hv(&format!("/v2/{repo}/blobs/{digest}")));
    h.insert(HDR_CONTENT_DIGEST, hv(digest.as_str()));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_ranges() {
        assert_eq!(progress_range(0), "0-0");
        assert_eq!(progress_range(1), "0-0");
        assert_eq!(progress_range(10), "0-9");
    }
}
