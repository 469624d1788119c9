//! [`S3Store`]: blobs as objects in an S3-compatible bucket (Ceph RGW,
//! MinIO, AWS S3), through the `object_store` crate.
//!
//! Object layout (this module is the only code that builds or parses these
//! keys; see `key`):
//!
//! ```text
//! <bucket>/<root>/<algorithm>/<first two hex chars>/<hex>
//! e.g. registry/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
//! ```
//!
//! Same tree as [`super::LocalStore`] below `<root>`, so a local store can be
//! copied into a bucket with any S3 tool.
//!
//! Writes:
//! - `put_bytes`, and `commit` of a staged blob below
//!   [`S3Config::multipart_threshold`]: one PutObject. `CreateOnly` sends
//!   `If-None-Match: *` (Ceph RGW, MinIO and AWS honour it; exactly one
//!   concurrent create wins).
//! - `commit` from the threshold up: a multipart upload straight to the
//!   final key, resumable across crashes. Its upload id and the ETag of every
//!   uploaded part are recorded durably in the store's staging area, in a
//!   sidecar of the staged id (`<staging>/<id>.s3mpu`); a `commit` of the
//!   same staged id after a crash uploads only the parts that are missing and
//!   completes the same upload; `abort` of the id aborts it.
//!   Staged blobs are local files: the store needs a staging directory
//!   ([`S3Store::with_staging_dir`]); the tiered store uses its local
//!   store's instead. `CreateOnly` is a HEAD first: S3
//!   CompleteMultipartUpload has no create-only form (RGW ignores
//!   `If-None-Match` there), so two concurrent multipart puts of one digest
//!   may both report `Stored` — harmless for content-addressed blobs, whose
//!   bytes are equal. See `docs/storage.md` for the protocol.
//!
//! Ceph RGW quirks handled (see `../shared/s3/README.md`): the ETag returned
//! by CompleteMultipartUpload is empty, so it is never used (the object is
//! HEAD-checked for its size instead); completing an upload that is already
//! complete gives 500 "already in progress", so a failed completion is
//! followed by a HEAD that decides whether the object is there. No code here
//! sends `If-Match` (blobs are immutable; nothing is compare-and-swapped).
//!
//! Reads are whole-object or ranged GETs held in memory
//! ([`BlobData::Shared`]); the engine's `s3` and `tiered` backends put a
//! local read cache in front (see [`super::TieredStore`]).
//!
//! Transport: `http://` or `https://`. One `ClientOptions` (built from
//! [`S3Config`]: timeouts, the extra CA certificates of
//! [`S3Config::ca_file`]) serves object_store's client and the bucket client
//! of [`bucket`], which makes the calls object_store has no API for
//! (CreateBucket, ListMultipartUploads) with object_store's own SigV4 signer
//! and HTTP client. No request to the bucket is signed, sent or parsed by
//! code of ours.
//!
//! Every call is blocking: the store owns a small tokio runtime and runs each
//! request on it, waiting on the calling thread without entering the runtime
//! (so it is safe from `spawn_blocking` threads and plain threads alike).

use std::fs::{self, File};
use std::future::Future;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, Certificate, ClientOptions, GetOptions, ObjectStore, PutMode as ObjPutMode,
    PutOptions, PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};

use super::fs::RealFs;
use super::staging::{Staged, StagingDir};
use super::{check_range, BlobData, BlobStore, PutMode, PutOutcome, StoreError};
use crate::digest::{Algorithm, Digest};
use crate::runtime::OwnedRuntime;

mod bucket;

/// Default size from which `commit` uses a multipart upload.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 << 20;
/// Default multipart part size (S3 requires at least 5 MiB for all but the last).
pub const DEFAULT_PART_SIZE: u64 = 8 << 20;
/// Multipart parts uploaded concurrently by one `commit`.
const PARTS_IN_FLIGHT: usize = 4;
/// Largest object CopyObject copies, and largest part UploadPartCopy makes.
pub const MAX_COPY: u64 = 5 << 30;
/// The directory under the root that holds shared upload segments.
const SEGMENTS_DIR: &str = "uploads";

/// Where and how to reach the bucket. The keys users know from Harbor and
/// registry:2 (`BERTH_S3_*` in the server, see `server/src/config.rs`).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `http(s)://host:port`; empty for AWS's default endpoint.
    pub endpoint: String,
    /// Region (Ceph RGW accepts any).
    pub region: String,
    /// Bucket name; it must exist.
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Key prefix of every object ("root directory"), without slashes at
    /// either end; empty for the bucket root.
    pub root: String,
    /// Path-style requests (`endpoint/bucket/key`), what Ceph RGW and MinIO
    /// on an IP address need. `false` = virtual-hosted style.
    pub path_style: bool,
    /// `commit` of at least this many bytes uses a multipart upload.
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (at least 5 MiB).
    pub part_size: u64,
    /// A PEM file of CA certificates trusted for an `https://` endpoint in
    /// addition to the system's (a private CA in front of Ceph RGW).
    pub ca_file: Option<PathBuf>,
}

impl S3Config {
    /// A config with the given connection settings and default root
    /// (empty), path-style on, default multipart sizes.
    pub fn new(
        endpoint: impl Into<String>,
        region: impl Into<String>,
        bucket: impl Into<String>,
        access_key: impl Into<String>,
        secret_key: impl Into<String>,
    ) -> S3Config {
        S3Config {
            endpoint: endpoint.into(),
            region: region.into(),
            bucket: bucket.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            root: String::new(),
            path_style: true,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
            ca_file: None,
        }
    }

    /// The config for tests: endpoint and credentials from `S3_ENDPOINT`,
    /// `S3_REGION`, `S3_ACCESS_KEY`, `S3_SECRET_KEY` (what
    /// `../shared/s3/ceph-rgw-start.sh` writes), and `bucket`, created if
    /// missing. Panics, naming the fix, when the variables are missing:
    /// S3 tests must fail, never pass silently, without a server.
    pub fn from_test_env(bucket: &str) -> S3Config {
        S3Config::from_test_env_over(TestTransport::Http, bucket)
    }

    /// [`S3Config::from_test_env`] over `transport`: for
    /// [`TestTransport::Https`] the endpoint is `S3_HTTPS_ENDPOINT` (the
    /// same RGW behind a TLS-terminating haproxy, `scripts/s3-tls-front.sh`)
    /// and the CA that signed its certificate is `S3_CA_FILE`.
    pub fn from_test_env_over(transport: TestTransport, bucket: &str) -> S3Config {
        let var = |k: &str| match std::env::var(k) {
            Ok(v) if !v.is_empty() => v,
            _ => panic!(
                "{k} is not set: the S3 tests need a running S3 server (Ceph RGW) and \
                 a TLS front for it; run them through scripts/test.sh, which starts \
                 one with ../shared/s3/ceph-rgw-start.sh and scripts/s3-tls-front.sh \
                 and exports S3_ENDPOINT, S3_HTTPS_ENDPOINT, S3_CA_FILE, S3_REGION, \
                 S3_ACCESS_KEY and S3_SECRET_KEY"
            ),
        };
        let region = std::env::var("S3_REGION").unwrap_or_else(|_| "us-east-1".into());
        let endpoint = match transport {
            TestTransport::Http => var("S3_ENDPOINT"),
            TestTransport::Https => var("S3_HTTPS_ENDPOINT"),
        };
        let mut c = S3Config::new(
            endpoint,
            region,
            bucket,
            var("S3_ACCESS_KEY"),
            var("S3_SECRET_KEY"),
        );
        if transport == TestTransport::Https {
            c.ca_file = Some(PathBuf::from(var("S3_CA_FILE")));
        }
        c.create_bucket()
            .unwrap_or_else(|e| panic!("create test bucket {bucket} at {}: {e}", c.endpoint));
        c
    }

    /// Creates the bucket if it does not exist (a signed `PUT /<bucket>`),
    /// over HTTP or HTTPS. For tests and benchmarks; in production the
    /// operator creates the bucket.
    pub fn create_bucket(&self) -> Result<(), StoreError> {
        S3Store::open(self.clone())?.create_bucket()
    }

    /// The HTTP client options of both the object client and the bucket
    /// client: timeouts, `allow_http` for an `http://` endpoint, and the
    /// certificates of [`S3Config::ca_file`] as extra roots.
    fn client_options(&self) -> Result<ClientOptions, StoreError> {
        let mut options = ClientOptions::new()
            .with_allow_http(self.endpoint.starts_with("http://"))
            .with_connect_timeout(Duration::from_secs(10))
            .with_timeout(Duration::from_secs(300));
        if let Some(path) = &self.ca_file {
            let pem = fs::read(path).map_err(|e| StoreError::io("read S3 CA file", path, e))?;
            let bad = |message: String| StoreError::Remote {
                op: "load S3 CA file",
                key: path.display().to_string(),
                message,
            };
            let certs = Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in it".to_owned()));
            }
            for cert in certs {
                options = options.with_root_certificate(cert);
            }
        }
        Ok(options)
    }

    /// The access key and region go into a header of every request (the
    /// SigV4 `Authorization`); the signers expect visible ASCII there and
    /// panic on anything else, so anything else is refused here.
    fn check_header_values(&self) -> Result<(), StoreError> {
        for (what, v) in [("access key", &self.access_key), ("region", &self.region)] {
            if !v.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(StoreError::Remote {
                    op: "configure S3 client",
                    key: format!("s3://{}", self.bucket),
                    message: format!(
                        "the {what} may hold only visible ASCII characters (no spaces or controls)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Logs a warning when the secret key's signatures (and every blob) go
    /// over plain HTTP to a host other than this one.
    fn warn_if_plain_http(&self) {
        if self.plain_http_to_remote() {
            tracing::warn!(endpoint = %self.endpoint, bucket = %self.bucket,
                "S3: signed requests and blob bytes go over plain HTTP to a remote host; \
                 use an https:// endpoint (BERTH_S3_CA_FILE for a private CA)");
        }
    }

    /// Whether the endpoint is `http://` on a host other than loopback.
    fn plain_http_to_remote(&self) -> bool {
        let Ok(url) = url::Url::parse(&self.endpoint) else {
            return false;
        };
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        url.scheme() == "http" && !loopback
    }

    /// The object key prefix with a trailing slash, or empty.
    fn prefix(&self) -> String {
        let root = self.root.trim_matches('/');
        if root.is_empty() {
            String::new()
        } else {
            format!("{root}/")
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret key.
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("root", &self.root)
            .field("path_style", &self.path_style)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("part_size", &self.part_size)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Which endpoint of the test S3 server [`S3Config::from_test_env_over`]
/// names: its plain one, or the TLS front before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestTransport {
    Http,
    Https,
}

/// A blob store in an S3 bucket. See the module docs.
pub struct S3Store {
    s3: Arc<AmazonS3>,
    /// The bucket-level calls object_store lacks, over the same HTTP
    /// options (TLS roots, timeouts).
    bucket: bucket::BucketClient,
    config: S3Config,
    /// `config.prefix()`, computed once.
    prefix: String,
    /// Runs the object_store futures. Owned by the store, two worker
    /// threads; callers wait on this thread, never inside the runtime.
    rt: OwnedRuntime,
    /// Local files of staged blobs and their multipart sidecars; `None`
    /// until [`S3Store::with_staging_dir`] (staging is then refused).
    staging: Option<StagingDir>,
}

/// Sidecar suffix of a staged blob's multipart state.
pub(crate) const MULTIPART_SUFFIX: &str = "s3mpu";

/// What a multipart sidecar file records (JSON). Written durably before the
/// first part is uploaded and after every batch of parts.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct MultipartRecord {
    /// Bucket-relative object key of the upload.
    key: String,
    /// The S3 upload id.
    upload_id: String,
    /// Size of the source file; a mismatch means a different source.
    size: u64,
    /// Part size used to split it.
    part_size: u64,
    /// ETag of part `i`, once uploaded.
    parts: Vec<Option<String>>,
}

/// One version of an object: what [`S3Store::read_version`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ObjectVersion {
    pub size: u64,
    pub etag: String,
}

impl S3Store {
    /// Connects to the bucket (no request is made until first use).
    pub fn open(config: S3Config) -> Result<S3Store, StoreError> {
        let remote = |e: object_store::Error| StoreError::Remote {
            op: "configure S3 client",
            key: config.bucket.clone(),
            message: e.to_string(),
        };
        config.check_header_values()?;
        config.warn_if_plain_http();
        let options = config.client_options()?;
        let bucket = bucket::BucketClient::new(&config, &options)?;
        let mut b = AmazonS3Builder::new()
            .with_region(&config.region)
            .with_bucket_name(&config.bucket)
            .with_access_key_id(&config.access_key)
            .with_secret_access_key(&config.secret_key)
            .with_virtual_hosted_style_request(!config.path_style)
            .with_client_options(options)
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 3,
                retry_timeout: Duration::from_secs(30),
            });
        if !config.endpoint.is_empty() {
            b = b.with_endpoint(&config.endpoint);
        }
        let s3 = b.build().map_err(remote)?;
        let rt = OwnedRuntime::start("berth-s3", 2)
            .map_err(|e| StoreError::io("start S3 client runtime", Path::new("-"), e))?;
        Ok(S3Store {
            s3: Arc::new(s3),
            bucket,
            prefix: config.prefix(),
            config,
            rt,
            staging: None,
        })
    }

    /// Keeps staged blobs (and their multipart state) in `dir`, created
    /// durably if missing; its contents survive restarts.
    pub fn with_staging_dir(mut self, dir: &Path) -> Result<S3Store, StoreError> {
        self.staging = Some(StagingDir::open(dir.to_path_buf(), Arc::new(RealFs))?);
        Ok(self)
    }

    fn staging(&self) -> Result<&StagingDir, StoreError> {
        self.staging.as_ref().ok_or_else(|| StoreError::Remote {
            op: "stage blob",
            key: format!("s3://{}/{}", self.config.bucket, self.prefix),
            message: "this S3 store has no staging directory".to_owned(),
        })
    }

    /// The configuration this store was opened with.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The object key of `digest` — the only place keys are built.
    fn key(&self, digest: &Digest) -> ObjPath {
        let hex = digest.hex();
        ObjPath::from(format!(
            "{}{}/{}/{}",
            self.prefix,
            digest.algorithm().name(),
            &hex[..2],
            hex
        ))
    }

    /// Runs `fut` on the store's runtime and waits for it on this thread.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        self.rt.run(fut)
    }

    fn remote(&self, op: &'static str, key: &ObjPath, e: object_store::Error) -> StoreError {
        StoreError::Remote {
            op,
            key: format!("s3://{}/{key}", self.config.bucket),
            message: e.to_string(),
        }
    }

    /// The object key of segment `name` of upload `upload` (shared
    /// staging, see [`BlobStore::put_segment`]).
    fn segment_key(&self, upload: &str, name: &str) -> Result<ObjPath, StoreError> {
        super::segment_id(upload, name)?;
        Ok(ObjPath::from(format!(
            "{}{SEGMENTS_DIR}/{upload}/{name}",
            self.prefix
        )))
    }

    /// Uploads the local file `src` as segment `name` of upload `upload`
    /// (multipart from the threshold up, resumable from `sidecar`).
    pub(crate) fn put_segment_file(
        &self,
        upload: &str,
        name: &str,
        src: &Path,
        sidecar: &Path,
    ) -> Result<(), StoreError> {
        let key = self.segment_key(upload, name)?;
        self.upload_file_to(key, src, sidecar, PutMode::Overwrite)
            .map(drop)
    }

    /// The local file of `staged`, if this store staged it.
    fn staged_file(&self, staged: &Staged) -> Result<PathBuf, StoreError> {
        let staging = self.staging()?;
        staged
            .path()
            .filter(|p| p.parent() == Some(staging.dir()))
            .map(Path::to_path_buf)
            .ok_or_else(|| StoreError::Remote {
                op: "use staged blob",
                key: staged.id().to_owned(),
                message: "not staged by this store".to_owned(),
            })
    }

    /// Composes `segments` of `upload` into the object of `digest` inside
    /// the bucket ([`S3Store::copy_into`]; every segment but the last must
    /// be at least [`super::MIN_SEGMENT`] bytes, as S3 requires of parts).
    fn compose_segments(
        &self,
        upload: &str,
        segments: &[super::Segment],
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let key = self.key(digest);
        let segments: Vec<&super::Segment> = segments.iter().filter(|s| s.size() > 0).collect();
        let short = segments
            .iter()
            .rev()
            .skip(1)
            .any(|s| s.size() < super::MIN_SEGMENT);
        if short {
            return Err(StoreError::Remote {
                op: "compose upload segments",
                key: key.to_string(),
                message: format!(
                    "a segment before the last is under {} bytes",
                    super::MIN_SEGMENT
                ),
            });
        }
        let sources = segments
            .iter()
            .map(|s| Ok((self.segment_key(upload, &s.name)?, s.size())))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.copy_into(&key, &sources)
    }

    /// Makes object `key` of `sources` (keys and sizes), in order, inside
    /// the bucket: one CopyObject for a single source up to 5 GiB, else a
    /// multipart upload whose parts are UploadPartCopy ranges of the
    /// sources (each at most 5 GiB). The object is HEAD-checked for the
    /// total size, as multipart completions are.
    fn copy_into(&self, key: &ObjPath, sources: &[(ObjPath, u64)]) -> Result<(), StoreError> {
        let total: u64 = sources.iter().map(|(_, n)| n).sum();
        match sources {
            [] => {
                self.put_single(key.clone(), PutPayload::default(), PutMode::Overwrite)?;
            }
            [(from, n)] if *n <= MAX_COPY => {
                let (s3, f, t) = (self.s3.clone(), from.clone(), key.clone());
                self.run(async move { s3.copy(&f, &t).await })
                    .map_err(|e| self.remote("copy object", key, e))?;
            }
            _ => {
                let (s3, k) = (self.s3.clone(), key.clone());
                let upload_id = self
                    .run(async move { s3.create_multipart(&k).await })
                    .map_err(|e| self.remote("create multipart upload", key, e))?;
                let rec = MultipartRecord {
                    key: key.to_string(),
                    upload_id: upload_id.clone(),
                    size: total,
                    part_size: 0,
                    parts: Vec::new(),
                };
                let copied = self.copy_parts(sources, key, &upload_id);
                let completed = copied.and_then(|parts| {
                    let (s3, k, id) = (self.s3.clone(), key.clone(), upload_id.clone());
                    self.run(async move { s3.complete_multipart(&k, &id, parts).await })
                        .map(drop)
                        .map_err(|e| self.remote("complete multipart upload", key, e))
                });
                if let Err(e) = completed {
                    self.abort(&rec);
                    return Err(e);
                }
            }
        }
        match self.head_key(key)? {
            Some(n) if n == total => Ok(()),
            other => Err(StoreError::Remote {
                op: "check copied object",
                key: format!("s3://{}/{key}", self.config.bucket),
                message: format!("object has size {other:?}, expected {total}"),
            }),
        }
    }

    /// The parts of multipart upload `upload_id` of `key`, copied from
    /// `sources` in order, each split into ranges of at most [`MAX_COPY`].
    fn copy_parts(
        &self,
        sources: &[(ObjPath, u64)],
        key: &ObjPath,
        upload_id: &str,
    ) -> Result<Vec<PartId>, StoreError> {
        let mut parts = Vec::new();
        for (source, size) in sources {
            let size = *size;
            let n = size.div_ceil(MAX_COPY);
            let step = size.div_ceil(n);
            let mut at = 0;
            while at < size {
                let end = (at + step).min(size);
                let (b, k, id, src) = (
                    self.bucket.clone(),
                    key.to_string(),
                    upload_id.to_owned(),
                    source.to_string(),
                );
                let part = parts.len() + 1;
                let etag = self.run(async move {
                    b.upload_part_copy(&k, &id, part, &src, (at, end - 1)).await
                })?;
                parts.push(PartId { content_id: etag });
                at = end;
            }
        }
        Ok(parts)
    }

    /// Streams object `key` of the bucket (a key from the bucket's root,
    /// not below this store's root) to `on_chunk`: the version a HEAD
    /// finds, read with `If-Match` on its ETag, so the bytes streamed are
    /// that version's whole. `None` if there is no such object; an object
    /// over `max` bytes is refused unread.
    pub(crate) fn read_version(
        &self,
        key: &str,
        max: u64,
        on_chunk: impl FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<Option<ObjectVersion>, StoreError> {
        let path = ObjPath::from(key);
        let (s3, k) = (self.s3.clone(), path.clone());
        let meta = match self.run(async move { s3.head(&k).await }) {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.remote("head object", &path, e)),
        };
        let etag = meta.e_tag.ok_or_else(|| StoreError::Remote {
            op: "head object",
            key: format!("s3://{}/{path}", self.config.bucket),
            message: "the server sent no ETag".to_owned(),
        })?;
        if meta.size > max {
            return Err(StoreError::Remote {
                op: "read object",
                key: format!("s3://{}/{path}", self.config.bucket),
                message: format!("{} bytes, over the {max} this read takes", meta.size),
            });
        }
        let options = GetOptions {
            if_match: Some(etag.clone()),
            ..GetOptions::default()
        };
        let size = match self.download_key_with(path, options, on_chunk) {
            Ok(n) => n,
            Err(None) => return Ok(None),
            Err(Some(e)) => return Err(e),
        };
        Ok(Some(ObjectVersion { size, etag }))
    }

    /// Copies `version` of object `source` (read by
    /// [`S3Store::read_version`], so a key from the bucket's root) as blob
    /// `digest`, inside the bucket, in one CopyObject (at most
    /// [`MAX_COPY`] bytes): nothing crosses the network but the request.
    /// Refused by the bucket if the source's ETag changed since. The copy
    /// is checked by a HEAD: its size, and its ETag where the source's is
    /// the MD5 of its bytes (not a multipart ETag, `…-N`), which a copy of
    /// the same bytes keeps; a copy that fails the check is deleted.
    pub(crate) fn copy_version(
        &self,
        source: &str,
        version: &ObjectVersion,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let key = self.key(digest);
        let failed = |message: String| StoreError::Remote {
            op: "copy object",
            key: format!("s3://{}/{key}", self.config.bucket),
            message,
        };
        if version.size > MAX_COPY {
            return Err(failed(format!(
                "{} bytes: more than one CopyObject copies",
                version.size
            )));
        }
        let (b, f, t, e) = (
            self.bucket.clone(),
            source.to_owned(),
            key.to_string(),
            version.etag.clone(),
        );
        self.run(async move { b.copy_object(&t, &f, &e).await })?;
        let (s3, k) = (self.s3.clone(), key.clone());
        let meta = self
            .run(async move { s3.head(&k).await })
            .map_err(|e| self.remote("head copied object", &key, e))?;
        let plain_md5 = !version.etag.contains('-');
        let same = meta.size == version.size
            && (!plain_md5 || meta.e_tag.as_deref() == Some(version.etag.as_str()));
        if same {
            return Ok(());
        }
        let (s3, k) = (self.s3.clone(), key.clone());
        if let Err(e) = self.run(async move { s3.delete(&k).await }) {
            tracing::warn!(key = %key, error = %e, "S3: deleting a copy that failed its check");
        }
        Err(failed(format!(
            "the copy has size {} and ETag {:?}; the object read had {} and {:?}",
            meta.size, meta.e_tag, version.size, version.etag
        )))
    }

    /// HEAD: the object's size, or `None`.
    pub(crate) fn head(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.head_key(&self.key(digest))
    }

    fn head_key(&self, key: &ObjPath) -> Result<Option<u64>, StoreError> {
        let (s3, k) = (self.s3.clone(), key.clone());
        match self.run(async move { s3.head(&k).await }) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.remote("head object", key, e)),
        }
    }

    /// One PutObject; `AlreadyPresent` if `CreateOnly` lost to an existing object.
    fn put_single(
        &self,
        key: ObjPath,
        payload: PutPayload,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let opts = PutOptions {
            mode: match mode {
                PutMode::CreateOnly => ObjPutMode::Create,
                PutMode::Overwrite => ObjPutMode::Overwrite,
            },
            ..PutOptions::default()
        };
        let (s3, k) = (self.s3.clone(), key.clone());
        match self.run(async move { s3.put_opts(&k, payload, opts).await }) {
            Ok(_) => Ok(PutOutcome::Stored),
            Err(object_store::Error::AlreadyExists { .. }) if mode == PutMode::CreateOnly => {
                Ok(PutOutcome::AlreadyPresent)
            }
            Err(e) => Err(self.remote("put object", &key, e)),
        }
    }

    /// Uploads the file at `src` as blob `digest` without removing it;
    /// multipart from the threshold up, resumable from the state kept in
    /// `sidecar` (removed once the upload is complete or abandoned).
    pub(crate) fn upload_file(
        &self,
        digest: &Digest,
        src: &Path,
        sidecar: &Path,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        self.upload_file_to(self.key(digest), src, sidecar, mode)
    }

    /// [`S3Store::upload_file`] to any key of the store's.
    fn upload_file_to(
        &self,
        key: ObjPath,
        src: &Path,
        sidecar: &Path,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let size = fs::metadata(src)
            .map_err(|e| StoreError::io("stat source file", src, e))?
            .len();
        if size < self.config.multipart_threshold {
            let data = fs::read(src).map_err(|e| StoreError::io("read source file", src, e))?;
            return self.put_single(key, PutPayload::from(data), mode);
        }
        if mode == PutMode::CreateOnly && self.head_key(&key)?.is_some() {
            self.abort_recorded(sidecar)?;
            return Ok(PutOutcome::AlreadyPresent);
        }
        self.multipart(key, src, sidecar, size)?;
        Ok(PutOutcome::Stored)
    }

    /// Aborts the multipart upload recorded in `sidecar`, if any, and
    /// removes the sidecar.
    pub(crate) fn abort_recorded(&self, sidecar: &Path) -> Result<(), StoreError> {
        if let Some(rec) = read_sidecar(sidecar)? {
            self.abort(&rec);
        }
        fs::remove_file(sidecar)
            .or_else(ignore_not_found)
            .map_err(|e| StoreError::io("remove multipart sidecar", sidecar, e))
    }

    /// The resumable multipart upload of `src` to `digest`'s key. See the
    /// module docs and `docs/storage.md` ("Multipart resume protocol").
    fn multipart(
        &self,
        key: ObjPath,
        src: &Path,
        sidecar: &Path,
        size: u64,
    ) -> Result<(), StoreError> {
        let part_size = self.config.part_size.max(5 << 20);
        let nparts = size.div_ceil(part_size) as usize;

        // 1. Resume the recorded upload if it is for this key and source.
        let mut rec = match read_sidecar(sidecar)? {
            Some(r) if r.key == key.as_ref() && r.size == size && r.part_size == part_size => {
                let done = r.parts.iter().filter(|p| p.is_some()).count();
                tracing::info!(key = %key, upload_id = %r.upload_id, done, parts = nparts,
                    "S3: resuming multipart upload");
                r
            }
            other => {
                if let Some(stale) = other {
                    self.abort(&stale);
                }
                // IMPORTANT: the upload id is durable before any part is
                // sent, so a crash leaves an upload we can resume or abort.
                let (s3, k) = (self.s3.clone(), key.clone());
                let upload_id = self
                    .run(async move { s3.create_multipart(&k).await })
                    .map_err(|e| self.remote("create multipart upload", &key, e))?;
                let r = MultipartRecord {
                    key: key.to_string(),
                    upload_id,
                    size,
                    part_size,
                    parts: vec![None; nparts],
                };
                write_sidecar(sidecar, &r)?;
                r
            }
        };

        // 2. Upload missing parts, a few at a time; record each batch durably.
        let file = File::open(src).map_err(|e| StoreError::io("open source file", src, e))?;
        let missing: Vec<usize> = (0..nparts).filter(|i| rec.parts[*i].is_none()).collect();
        for batch in missing.chunks(PARTS_IN_FLIGHT) {
            let mut handles = Vec::with_capacity(batch.len());
            for &i in batch {
                let start = i as u64 * part_size;
                let len = part_size.min(size - start) as usize;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, start)
                    .map_err(|e| StoreError::io("read source file", src, e))?;
                let (s3, k, id) = (self.s3.clone(), key.clone(), rec.upload_id.clone());
                handles.push((
                    i,
                    self.rt
                        .handle()
                        .spawn(async move { s3.put_part(&k, &id, i, PutPayload::from(buf)).await }),
                ));
            }
            let mut first_err = None;
            for (i, h) in handles {
                match futures::executor::block_on(h) {
                    Ok(Ok(part)) => rec.parts[i] = Some(part.content_id),
                    Ok(Err(e)) => {
                        first_err.get_or_insert(self.remote("upload part", &key, e));
                    }
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
            write_sidecar(sidecar, &rec)?;
            if let Some(e) = first_err {
                // The sidecar keeps the parts that made it; a retry resumes.
                return Err(e);
            }
        }

        // 3. Complete. Ceph returns an empty ETag here: ignore it and HEAD.
        let parts: Vec<PartId> = rec
            .parts
            .iter()
            .map(|p| PartId {
                content_id: p.clone().unwrap_or_default(),
            })
            .collect();
        let (s3, k, id) = (self.s3.clone(), key.clone(), rec.upload_id.clone());
        let completed = self.run(async move { s3.complete_multipart(&k, &id, parts).await });
        let stored = self.head_key(&key)?;
        match (completed, stored) {
            (_, Some(n)) if n == size => {}
            (Ok(_), other) => {
                return Err(StoreError::Remote {
                    op: "check completed multipart upload",
                    key: format!("s3://{}/{key}", self.config.bucket),
                    message: format!("object has size {other:?}, expected {size}"),
                })
            }
            (Err(e), _) => {
                // The upload is gone or broken (RGW: 500 "already in
                // progress" for an upload completed or aborted before):
                // forget it, so the next attempt starts afresh.
                self.abort(&rec);
                let _ = fs::remove_file(sidecar);
                return Err(self.remote("complete multipart upload", &key, e));
            }
        }
        fs::remove_file(sidecar)
            .or_else(ignore_not_found)
            .map_err(|e| StoreError::io("remove multipart sidecar", sidecar, e))?;
        Ok(())
    }

    /// Aborts the upload `rec` names (best effort: logged, not returned).
    fn abort(&self, rec: &MultipartRecord) {
        let (s3, k, id) = (
            self.s3.clone(),
            ObjPath::from(rec.key.as_str()),
            rec.upload_id.clone(),
        );
        match self.run(async move { s3.abort_multipart(&k, &id).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                tracing::info!(key = %rec.key, upload_id = %rec.upload_id, "S3: aborted multipart upload")
            }
            Err(e) => {
                tracing::warn!(key = %rec.key, upload_id = %rec.upload_id, error = %e, "S3: abort multipart upload failed")
            }
        }
    }

    /// Aborts every multipart upload under the root started more than
    /// `older_than` ago, and returns their keys. Uploads of live sessions
    /// are younger than the upload TTL (sessions expire after it), so an
    /// `older_than` of at least the TTL only hits abandoned ones: crashed
    /// completions whose sidecar was lost, or uploads whose id never reached
    /// a sidecar (`berthctl s3-abort-uploads`). ListMultipartUploads goes
    /// through [`bucket::BucketClient`] (object_store has no call for it).
    pub fn abort_stale_multipart(&self, older_than: Duration) -> Result<Vec<String>, StoreError> {
        let uploads = self.list_multipart_uploads()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut aborted = Vec::new();
        for bucket::Upload {
            key,
            upload_id,
            initiated,
        } in uploads
        {
            if now.saturating_sub(initiated) < older_than.as_secs() {
                continue;
            }
            let (s3, k, id) = (
                self.s3.clone(),
                ObjPath::from(key.as_str()),
                upload_id.clone(),
            );
            match self.run(async move { s3.abort_multipart(&k, &id).await }) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    tracing::info!(key = %key, upload_id = %upload_id, "S3: aborted stale multipart upload");
                    aborted.push(key);
                }
                Err(e) => {
                    return Err(self.remote(
                        "abort multipart upload",
                        &ObjPath::from(key.as_str()),
                        e,
                    ))
                }
            }
        }
        Ok(aborted)
    }

    /// The multipart uploads in progress under the root: (key, upload id).
    pub fn multipart_uploads(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self
            .list_multipart_uploads()?
            .into_iter()
            .map(|u| (u.key, u.upload_id))
            .collect())
    }

    fn list_multipart_uploads(&self) -> Result<Vec<bucket::Upload>, StoreError> {
        let (b, prefix) = (self.bucket.clone(), self.prefix.clone());
        self.run(async move { b.list_multipart_uploads(&prefix).await })
    }

    /// Creates the bucket if it does not exist (see [`S3Config::create_bucket`]).
    pub fn create_bucket(&self) -> Result<(), StoreError> {
        let b = self.bucket.clone();
        self.run(async move { b.create_bucket().await })
    }

    /// Every upload segment in the bucket (keys below the root), for tools
    /// and tests: what no session names is garbage.
    pub fn segment_keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects_under(SEGMENTS_DIR)?
            .into_iter()
            .map(|(key, _)| key)
            .collect())
    }

    /// Every object below `dir` (a key prefix below the root, without
    /// slashes at either end) as its key below the root and its size, in
    /// the bucket's order. For tools reading what another program wrote
    /// (`berthctl import distribution --from s3://…`) and for tests.
    pub fn objects_under(&self, dir: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let dir = ObjPath::from(format!("{}{dir}", self.prefix));
        let (s3, d) = (self.s3.clone(), dir.clone());
        let listed = self.run(async move { s3.list(Some(&d)).collect::<Vec<_>>().await });
        let mut out = Vec::new();
        for m in listed {
            let m = m.map_err(|e| self.remote("list objects", &dir, e))?;
            let key = m.location.as_ref();
            let rel = key.strip_prefix(&self.prefix).unwrap_or(key).to_owned();
            out.push((rel, m.size));
        }
        Ok(out)
    }

    /// The size of object `key` (below the root), or `None` if there is
    /// none.
    pub fn object_size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.head_key(&ObjPath::from(format!("{}{key}", self.prefix)))
    }

    /// Streams object `key` (below the root) to `on_chunk` as it arrives;
    /// its size, or `None` if there is no such object. Stops at
    /// `on_chunk`'s error.
    pub fn read_object(
        &self,
        key: &str,
        on_chunk: impl FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<Option<u64>, StoreError> {
        match self.download_key(ObjPath::from(format!("{}{key}", self.prefix)), on_chunk) {
            Ok(n) => Ok(Some(n)),
            Err(None) => Ok(None),
            Err(Some(e)) => Err(e),
        }
    }

    /// Lists every object under the root with its size (for tools).
    pub fn list_sizes(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let prefix = self.prefix.trim_end_matches('/').to_owned();
        let s3 = self.s3.clone();
        let metas = self.run(async move {
            let p = (!prefix.is_empty()).then(|| ObjPath::from(prefix));
            s3.list(p.as_ref()).collect::<Vec<_>>().await
        });
        let mut out = Vec::new();
        for m in metas {
            let m = m.map_err(|e| {
                self.remote("list objects", &ObjPath::from(self.prefix.as_str()), e)
            })?;
            let rel = m.location.as_ref().strip_prefix(&self.prefix).unwrap_or("");
            match parse_key(rel) {
                Some(d) => out.push((d, m.size)),
                // Shared upload segments (`put_segment`), not blobs.
                None if rel.starts_with(&format!("{SEGMENTS_DIR}/")) => {}
                None => tracing::warn!(key = %m.location, "S3: skipping unexpected object"),
            }
        }
        out.sort();
        Ok(out)
    }

    /// Downloads blob `digest` into the local file `dst` (created, fsync'd);
    /// returns its size. For the read cache.
    pub(crate) fn download_to(&self, digest: &Digest, dst: &Path) -> Result<u64, StoreError> {
        use std::io::Write;
        let mut file =
            File::create(dst).map_err(|e| StoreError::io("create cache file", dst, e))?;
        let n = self.download_with(digest, |chunk| {
            file.write_all(chunk)
                .map_err(|e| StoreError::io("write cache file", dst, e))
        })?;
        crate::durable::fsync_file(&file, dst)
            .map_err(|e| StoreError::io("write cache file", dst, e))?;
        Ok(n)
    }

    /// Streams blob `digest` to `on_chunk` on the calling thread, chunk by
    /// chunk as it arrives; returns its size. Stops at `on_chunk`'s error.
    pub(crate) fn download_with(
        &self,
        digest: &Digest,
        on_chunk: impl FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        self.download_key(self.key(digest), on_chunk)
            .map_err(|e| match e {
                None => StoreError::NotFound {
                    digest: digest.clone(),
                },
                Some(e) => e,
            })
    }

    /// [`S3Store::download_with`] of any key of the store's; `Err(None)`
    /// if there is no such object.
    fn download_key(
        &self,
        key: ObjPath,
        on_chunk: impl FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, Option<StoreError>> {
        self.download_key_with(key, GetOptions::default(), on_chunk)
    }

    /// [`S3Store::download_key`] with `options` (conditions) on the GET.
    fn download_key_with(
        &self,
        key: ObjPath,
        options: GetOptions,
        mut on_chunk: impl FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, Option<StoreError>> {
        let (s3, k) = (self.s3.clone(), key.clone());
        // The runtime task reads the response; this thread writes. The
        // channel bounds what is buffered between them.
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<Result<bytes::Bytes, object_store::Error>>(4);
        self.rt.handle().spawn(async move {
            match s3.get_opts(&k, options).await {
                Ok(r) => {
                    let mut stream = r.into_stream();
                    while let Some(chunk) = stream.next().await {
                        let stop = chunk.is_err();
                        if tx.send(chunk).await.is_err() || stop {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        let mut n = 0u64;
        while let Some(chunk) = futures::executor::block_on(rx.recv()) {
            let chunk = match chunk {
                Ok(c) => c,
                Err(object_store::Error::NotFound { .. }) => return Err(None),
                Err(e) => return Err(Some(self.remote("get object", &key, e))),
            };
            on_chunk(&chunk).map_err(Some)?;
            n += chunk.len() as u64;
        }
        Ok(n)
    }
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BlobStore for S3Store {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn stage(&self, id: &str) -> Result<Staged, StoreError> {
        self.staging()?.create(id)
    }

    fn open_staged(&self, id: &str) -> Result<Option<Staged>, StoreError> {
        self.staging()?.open_existing(id)
    }

    fn staged_ids(&self) -> Result<Vec<String>, StoreError> {
        match &self.staging {
            Some(s) => s.ids(),
            None => Ok(Vec::new()),
        }
    }

    /// Uploads the staged file (resumable, see the module docs), then
    /// removes the staged id.
    fn commit(
        &self,
        staged: Staged,
        digest: &Digest,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        let staging = self.staging()?;
        let id = staged.id().to_owned();
        let src = self.staged_file(&staged)?;
        staged.sync()?;
        drop(staged);
        let sidecar = staging.sidecar(&id, MULTIPART_SUFFIX)?;
        let outcome = self.upload_file(digest, &src, &sidecar, mode)?;
        staging.remove(&id)?;
        Ok(outcome)
    }

    fn abort(&self, id: &str) -> Result<(), StoreError> {
        let Some(staging) = &self.staging else {
            return Ok(());
        };
        self.abort_recorded(&staging.sidecar(id, MULTIPART_SUFFIX)?)?;
        staging.remove(id)
    }

    fn put_bytes(
        &self,
        digest: &Digest,
        data: &[u8],
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        self.put_single(self.key(digest), PutPayload::from(data.to_vec()), mode)
    }

    fn put_segment(&self, upload: &str, name: &str, staged: Staged) -> Result<(), StoreError> {
        let staging = self.staging()?;
        let id = staged.id().to_owned();
        let src = self.staged_file(&staged)?;
        staged.sync()?;
        drop(staged);
        self.put_segment_file(upload, name, &src, &staging.sidecar(&id, MULTIPART_SUFFIX)?)?;
        staging.remove(&id)
    }

    fn read_segment(
        &self,
        upload: &str,
        name: &str,
        on_chunk: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<u64, StoreError> {
        let key = self.segment_key(upload, name)?;
        self.download_key(key.clone(), on_chunk).map_err(|e| {
            e.unwrap_or_else(|| StoreError::Remote {
                op: "read upload segment",
                key: format!("s3://{}/{key}", self.config.bucket),
                message: "no such segment".to_owned(),
            })
        })
    }

    fn compose(
        &self,
        upload: &str,
        segments: &[super::Segment],
        digest: &Digest,
        mode: PutMode,
    ) -> Result<PutOutcome, StoreError> {
        if mode == PutMode::CreateOnly && self.head(digest)?.is_some() {
            return Ok(PutOutcome::AlreadyPresent);
        }
        self.compose_segments(upload, segments, digest)?;
        Ok(PutOutcome::Stored)
    }

    fn segment_uploads(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self
            .segment_keys()?
            .iter()
            .filter_map(|k| k.split('/').nth(1).map(str::to_owned))
            .collect();
        ids.dedup();
        Ok(ids)
    }

    fn drop_segments(&self, upload: &str, name: Option<&str>) -> Result<(), StoreError> {
        let keys = match name {
            Some(name) => vec![self.segment_key(upload, name)?],
            None => {
                super::segment_id(upload, "all")?;
                let dir = ObjPath::from(format!("{}{SEGMENTS_DIR}/{upload}", self.prefix));
                let (s3, d) = (self.s3.clone(), dir.clone());
                let listed = self.run(async move { s3.list(Some(&d)).collect::<Vec<_>>().await });
                let mut keys = Vec::new();
                for m in listed {
                    keys.push(
                        m.map_err(|e| self.remote("list upload segments", &dir, e))?
                            .location,
                    );
                }
                keys
            }
        };
        for key in keys {
            let (s3, k) = (self.s3.clone(), key.clone());
            match self.run(async move { s3.delete(&k).await }) {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.remote("delete upload segment", &key, e)),
            }
        }
        Ok(())
    }

    fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BlobData, StoreError> {
        let key = self.key(digest);
        let not_found = || StoreError::NotFound {
            digest: digest.clone(),
        };
        let (s3, k) = (self.s3.clone(), key.clone());
        let Some(r) = range else {
            let got = self.run(async move {
                let r = s3.get(&k).await?;
                r.bytes().await
            });
            return match got {
                Ok(b) => {
                    let end = b.len();
                    Ok(BlobData::Shared {
                        buf: Arc::from(b.to_vec()),
                        start: 0,
                        end,
                    })
                }
                Err(object_store::Error::NotFound { .. }) => Err(not_found()),
                Err(e) => Err(self.remote("get object", &key, e)),
            };
        };
        // A ranged GET past the end is a 416 that object_store reports as
        // a generic error, and an empty range cannot be requested at all:
        // check the range against the size first.
        let size = self.head(digest)?.ok_or_else(not_found)?;
        let in_bounds = r.start <= r.end && r.end <= size;
        if !in_bounds {
            return Err(StoreError::RangeNotSatisfiable {
                digest: digest.clone(),
                size,
            });
        }
        if r.start == r.end {
            let (start, end) = check_range(digest, 0, Some(0..0))?;
            return Ok(BlobData::Shared {
                buf: Arc::from(Vec::new()),
                start,
                end,
            });
        }
        match self.run(async move { s3.get_range(&k, r).await }) {
            Ok(b) => {
                let end = b.len();
                Ok(BlobData::Shared {
                    buf: Arc::from(b.to_vec()),
                    start: 0,
                    end,
                })
            }
            Err(object_store::Error::NotFound { .. }) => Err(not_found()),
            Err(e) => Err(self.remote("get object range", &key, e)),
        }
    }

    fn stat(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        self.head(digest)
    }

    fn bucket(&self) -> Option<&S3Store> {
        Some(self)
    }

    fn locate(&self, digest: &Digest) -> Result<Option<super::Located>, StoreError> {
        Ok(self.head(digest)?.map(|size| super::Located {
            tier: super::Tier::Remote,
            size,
        }))
    }

    fn delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        // S3 DELETE of a missing key succeeds: HEAD first to answer "existed".
        let existed = self.head(digest)?.is_some();
        let key = self.key(digest);
        let (s3, k) = (self.s3.clone(), key.clone());
        match self.run(async move { s3.delete(&k).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(existed),
            Err(e) => Err(self.remote("delete object", &key, e)),
        }
    }

    fn list(&self) -> Result<Vec<Digest>, StoreError> {
        Ok(self.list_sizes()?.into_iter().map(|(d, _)| d).collect())
    }
}

/// `<alg>/<shard>/<hex>` → digest, if it is one.
fn parse_key(rel: &str) -> Option<Digest> {
    let mut it = rel.split('/');
    let (alg, shard, hex) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    let alg: Algorithm = alg.parse().ok()?;
    Digest::from_parts(alg, hex)
        .ok()
        .filter(|d| d.hex().starts_with(shard) && shard.len() == 2)
}

fn read_sidecar(path: &Path) -> Result<Option<MultipartRecord>, StoreError> {
    match fs::read(path) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                // Written with write_file_durable, so never torn; a corrupt
                // one is ignored (the upload starts afresh) and logged.
                tracing::warn!(path = %path.display(), error = %e, "S3: ignoring unreadable multipart sidecar");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("read multipart sidecar", path, e)),
    }
}

fn write_sidecar(path: &Path, rec: &MultipartRecord) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(rec).expect("multipart record serializes");
    crate::durable::write_file_durable(path, &bytes)
        .map_err(|e| StoreError::io("write multipart sidecar", path, e))
}

fn ignore_not_found(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testsuite;

    use crate::store::{open_backend, Backend, BackendKind};
    use TestTransport::{Http, Https};

    /// The config of a fresh root prefix in the shared test bucket, reached
    /// over `transport`, with small multipart sizes.
    fn test_config(transport: TestTransport, label: &str) -> S3Config {
        let mut c = S3Config::from_test_env_over(transport, "berth-test");
        c.root = format!(
            "{label}-{}",
            crate::durable::random_hex(6).expect("random root")
        );
        // Small parts so multipart is exercised without huge blobs.
        c.multipart_threshold = 6 << 20;
        c.part_size = 5 << 20;
        c
    }

    /// A store on a fresh root prefix in the shared test bucket, reached
    /// over `transport`, staging in `staging`.
    fn test_store(transport: TestTransport, label: &str, staging: &Path) -> S3Store {
        S3Store::open(test_config(transport, label))
            .and_then(|s| s.with_staging_dir(staging))
            .expect("open S3 store")
    }

    /// Starts a multipart upload of `digest` by hand, as a crash right after
    /// CreateMultipartUpload leaves it; its upload id.
    fn create_upload(store: &S3Store, digest: &Digest) -> String {
        let (s3, k) = (store.s3.clone(), store.key(digest));
        store
            .run(async move { s3.create_multipart(&k).await })
            .expect("create multipart upload")
    }

    /// Whether a part can still be uploaded to `upload_id` (an aborted
    /// upload refuses parts).
    fn upload_alive(store: &S3Store, digest: &Digest, upload_id: &str) -> bool {
        let (s3, k, id) = (store.s3.clone(), store.key(digest), upload_id.to_owned());
        store
            .run(async move { s3.put_part(&k, &id, 0, PutPayload::from(vec![1u8])).await })
            .is_ok()
    }

    #[test]
    fn s3_shared_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = test_store(Http, "suite", dir.path());
        testsuite::run_all(&store);
    }

    /// The same suite through a TLS-terminating proxy whose certificate a
    /// private CA signed (`S3_CA_FILE`): object_store's client trusts it
    /// through `S3Config::ca_file`.
    #[test]
    fn s3_shared_suite_over_https() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = test_store(Https, "suite-tls", dir.path());
        assert!(store.config().endpoint.starts_with("https://"));
        testsuite::run_all(&store);
    }

    /// Without the private CA the endpoint's certificate is refused, by the
    /// object client and the bucket client alike; a CA file that is missing
    /// or holds no certificate is refused at open, naming the file.
    #[test]
    fn https_endpoint_needs_its_ca() {
        let mut c = test_config(Https, "noca");
        c.ca_file = None;
        let store = S3Store::open(c.clone()).expect("open");
        let d = Digest::of(Algorithm::Sha256, b"tls");
        let e = store.stat(&d).expect_err("HEAD without the CA").to_string();
        assert!(e.contains("head object"), "{e}");
        let e = store
            .create_bucket()
            .expect_err("PUT without the CA")
            .to_string();
        assert!(
            e.contains("create bucket")
                && e.contains("https://127.0.0.1")
                && e.contains("certificate"),
            "the error names the operation, the endpoint and the cause: {e}"
        );
        assert!(store.abort_stale_multipart(Duration::ZERO).is_err());

        let dir = tempfile::tempdir().expect("tempdir");
        c.ca_file = Some(dir.path().join("missing.pem"));
        let e = S3Store::open(c.clone())
            .expect_err("missing CA file")
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        fs::write(&empty, b"no certificate here\n").expect("write");
        c.ca_file = Some(empty);
        let e = S3Store::open(c).expect_err("empty CA file").to_string();
        assert!(
            e.contains("empty.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    #[test]
    fn s3_multipart_resumes_from_staged_state() {
        multipart_resumes_from_staged_state(Http);
    }

    #[test]
    fn s3_multipart_resumes_from_staged_state_over_https() {
        multipart_resumes_from_staged_state(Https);
    }

    fn multipart_resumes_from_staged_state(transport: TestTransport) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = test_store(transport, "mpu", dir.path());
        let data: Vec<u8> = (0..(16u32 << 20) + 3).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(Algorithm::Sha256, &data);
        let staged = store.stage("upload1").expect("stage");
        staged.write_at(&data, 0).expect("write");
        staged.sync().expect("sync");
        drop(staged);
        let key = store.key(&d);
        let sidecar = dir.path().join("upload1.s3mpu");

        // Simulate a crash after part 0 of 4: create the upload and send one
        // part by hand, recording it as the store would.
        let part_size = store.config.part_size;
        let (s3, k) = (store.s3.clone(), key.clone());
        let upload_id = store
            .run(async move { s3.create_multipart(&k).await })
            .expect("create");
        let (s3, k, id) = (store.s3.clone(), key.clone(), upload_id.clone());
        let part0 = data[..part_size as usize].to_vec();
        let p0 = store
            .run(async move { s3.put_part(&k, &id, 0, PutPayload::from(part0)).await })
            .expect("part 0");
        let nparts = (data.len() as u64).div_ceil(part_size) as usize;
        let mut parts = vec![None; nparts];
        parts[0] = Some(p0.content_id);
        let rec = MultipartRecord {
            key: key.to_string(),
            upload_id: upload_id.clone(),
            size: data.len() as u64,
            part_size,
            parts,
        };
        write_sidecar(&sidecar, &rec).expect("sidecar");

        // A fresh store (as after restart) resumes the same upload.
        let store2 = S3Store::open(store.config.clone())
            .and_then(|s| s.with_staging_dir(dir.path()))
            .expect("reopen");
        assert_eq!(
            store2.staged_ids().expect("ids"),
            vec!["upload1".to_owned()]
        );
        let staged = store2
            .open_staged("upload1")
            .expect("open staged")
            .expect("still staged");
        assert_eq!(
            store2
                .commit(staged, &d, PutMode::CreateOnly)
                .expect("resumed commit"),
            PutOutcome::Stored
        );
        assert!(
            store2.staged_ids().expect("ids").is_empty(),
            "staged id removed"
        );
        assert!(!sidecar.exists(), "sidecar removed");
        let got = store2.get(&d, None).expect("get");
        assert!(got.as_ref() == data.as_slice(), "resumed blob bytes differ");
        assert_eq!(store2.stat(&d).expect("stat"), Some(data.len() as u64));
        let mid = store2.get(&d, Some(5_000_000..6_000_000)).expect("range");
        assert!(mid.as_ref() == &data[5_000_000..6_000_000]);

        // CreateOnly of existing content: AlreadyPresent, staged id and
        // sidecar gone.
        let staged = store2.stage("upload2").expect("stage");
        staged.write_at(&data, 0).expect("write");
        write_sidecar(&dir.path().join("upload2.s3mpu"), &rec).expect("stale sidecar");
        assert_eq!(
            store2.commit(staged, &d, PutMode::CreateOnly).expect("put"),
            PutOutcome::AlreadyPresent
        );
        assert!(store2.staged_ids().expect("ids").is_empty());
        assert!(!dir.path().join("upload2.s3mpu").exists());
        assert!(store2.delete(&d).expect("delete"));
    }

    #[test]
    fn s3_abort_aborts_the_multipart_upload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = test_store(Http, "abort", dir.path());
        let d = Digest::of(Algorithm::Sha256, b"abort me");
        let key = store.key(&d);
        let staged = store.stage("gone").expect("stage");
        staged.write_at(b"abort me", 0).expect("write");
        let (s3, k) = (store.s3.clone(), key.clone());
        let upload_id = store
            .run(async move { s3.create_multipart(&k).await })
            .expect("create");
        let rec = MultipartRecord {
            key: key.to_string(),
            upload_id: upload_id.clone(),
            size: 1,
            part_size: 5 << 20,
            parts: vec![None],
        };
        let sidecar = dir.path().join("gone.s3mpu");
        write_sidecar(&sidecar, &rec).expect("sidecar");
        BlobStore::abort(&store, "gone").expect("abort");
        assert!(!sidecar.exists());
        assert!(store.staged_ids().expect("ids").is_empty());
        // The upload is gone: a part upload now fails.
        let (s3, k, id) = (store.s3.clone(), key.clone(), upload_id);
        let r =
            store.run(async move { s3.put_part(&k, &id, 0, PutPayload::from(vec![1u8])).await });
        assert!(r.is_err(), "part upload after abort succeeded");
    }

    #[test]
    fn s3_sweep_aborts_stale_multipart_uploads() {
        sweep_aborts_stale_multipart_uploads(Http);
    }

    /// ListMultipartUploads (the bucket client: object_store's signer and
    /// HTTP client, quick-xml) over HTTPS with a private CA.
    #[test]
    fn s3_sweep_aborts_stale_multipart_uploads_over_https() {
        sweep_aborts_stale_multipart_uploads(Https);
    }

    fn sweep_aborts_stale_multipart_uploads(transport: TestTransport) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = test_store(transport, "sweep", dir.path());
        // Keys that need escaping in XML and in the query do not exist
        // under a digest layout; a root with a space and `&` does.
        let mut c = store.config().clone();
        c.root = format!("{} a&b+c", c.root);
        let odd = S3Store::open(c).expect("open");
        let d = Digest::of(Algorithm::Sha256, b"sweep me");
        let upload_id = create_upload(&store, &d);
        let odd_id = create_upload(&odd, &d);
        assert_eq!(
            store.multipart_uploads().expect("list"),
            vec![(store.key(&d).to_string(), upload_id.clone())]
        );
        assert_eq!(
            odd.multipart_uploads().expect("list"),
            vec![(odd.key(&d).to_string(), odd_id.clone())]
        );
        // Young uploads are left alone.
        assert_eq!(
            store
                .abort_stale_multipart(Duration::from_secs(3600))
                .expect("sweep"),
            Vec::<String>::new()
        );
        assert!(upload_alive(&store, &d, &upload_id));
        let aborted = store.abort_stale_multipart(Duration::ZERO).expect("sweep");
        assert_eq!(aborted, vec![store.key(&d).to_string()]);
        assert!(
            !upload_alive(&store, &d, &upload_id),
            "part upload after the sweep succeeded"
        );
        assert!(store.multipart_uploads().expect("list").is_empty());
        // Only under its own root: the other prefix's upload is untouched.
        assert!(upload_alive(&odd, &d, &odd_id));
        assert_eq!(
            odd.abort_stale_multipart(Duration::ZERO).expect("sweep"),
            vec![odd.key(&d).to_string()]
        );
    }

    /// Pagination of ListMultipartUploads: more uploads than one page.
    #[test]
    fn s3_sweep_follows_pages_over_https() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = test_store(Https, "pages", dir.path());
        // RGW and AWS answer at most 1000 uploads a page.
        let n = 1003;
        let mut want: Vec<(String, String)> = (0..n)
            .map(|i| {
                let d = Digest::of(Algorithm::Sha256, format!("page {i}").as_bytes());
                (store.key(&d).to_string(), create_upload(&store, &d))
            })
            .collect();
        want.sort();
        let mut got = store.multipart_uploads().expect("list");
        got.sort();
        assert_eq!(got.len(), n);
        assert!(got == want, "listed uploads differ from the created ones");
        assert_eq!(
            store
                .abort_stale_multipart(Duration::ZERO)
                .expect("sweep")
                .len(),
            n
        );
        assert!(store.multipart_uploads().expect("list").is_empty());
    }

    /// The recovery path over HTTPS: a write-through commit interrupted
    /// after its multipart upload began (staged bytes, upload id and one
    /// part in the durable sidecar, no upload session) is found when the
    /// engine opens and its upload is aborted.
    #[test]
    fn interrupted_multipart_is_aborted_at_open_over_https() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = test_config(Https, "recover");
        let backend = Backend {
            kind: BackendKind::S3,
            s3: Some(c.clone()),
            cache_max_bytes: 1 << 30,
        };
        let data: Vec<u8> = (0..(7u32 << 20)).map(|i| (i % 249) as u8).collect();
        let d = Digest::of(Algorithm::Sha256, &data);
        let remote = S3Store::open(c).expect("open");
        let upload_id = {
            let store = open_backend(dir.path(), &backend).expect("open backend");
            let staged = store.stage("crashed").expect("stage");
            staged.write_at(&data, 0).expect("write");
            staged.sync().expect("sync");
            drop(staged);
            // What the commit had done when the process died.
            let upload_id = create_upload(&remote, &d);
            let (s3, k, id) = (remote.s3.clone(), remote.key(&d), upload_id.clone());
            let part0 = data[..5 << 20].to_vec();
            let p0 = remote
                .run(async move { s3.put_part(&k, &id, 0, PutPayload::from(part0)).await })
                .expect("part 0");
            let rec = MultipartRecord {
                key: remote.key(&d).to_string(),
                upload_id: upload_id.clone(),
                size: data.len() as u64,
                part_size: 5 << 20,
                parts: vec![Some(p0.content_id), None],
            };
            write_sidecar(
                &dir.path()
                    .join("blobs/staging")
                    .join(format!("crashed.{MULTIPART_SUFFIX}")),
                &rec,
            )
            .expect("sidecar");
            upload_id
        };
        assert_eq!(
            remote.multipart_uploads().expect("list"),
            vec![(remote.key(&d).to_string(), upload_id.clone())]
        );

        let mut ec = crate::EngineConfig::new(dir.path());
        ec.backend = backend;
        let engine = crate::Engine::open(ec).expect("open engine");
        assert!(
            remote.multipart_uploads().expect("list").is_empty(),
            "the interrupted upload is still in the bucket"
        );
        assert!(!upload_alive(&remote, &d, &upload_id));
        assert!(engine.store().staged_ids().expect("ids").is_empty());
        assert!(!dir.path().join("blobs/staging/crashed.s3mpu").exists());
        assert_eq!(
            remote.stat(&d).expect("stat"),
            None,
            "nothing was published"
        );
    }

    /// Settings that would make the SigV4 signer panic are refused at open;
    /// no request is made (no server needed).
    #[test]
    fn header_unsafe_settings_are_refused() {
        let ok = S3Config::new("https://127.0.0.1:1", "eu-1", "b", "AK", "sk");
        assert!(S3Store::open(ok.clone()).is_ok());
        for (ak, region) in [("A\nK", "eu-1"), ("AK", "eu 1"), ("AK\u{e9}", "eu-1")] {
            let mut c = ok.clone();
            c.access_key = ak.into();
            c.region = region.into();
            let e = S3Store::open(c).expect_err("refused").to_string();
            assert!(e.contains("visible ASCII"), "{e}");
        }
        let mut c = ok;
        c.endpoint = "rgw:7480".into();
        assert!(S3Store::open(c).is_err(), "an endpoint without a scheme");
    }

    #[test]
    fn plain_http_to_a_remote_host_is_flagged() {
        let flagged =
            |endpoint: &str| S3Config::new(endpoint, "r", "b", "ak", "sk").plain_http_to_remote();
        for remote in ["http://rgw.example:7480", "http://10.0.0.5", "HTTP://Rgw/"] {
            assert!(flagged(remote), "{remote}");
        }
        for fine in [
            "https://rgw.example",
            "http://127.0.0.1:7480",
            "http://127.9.9.9",
            "http://[::1]:80",
            "http://localhost:7480",
            "",
        ] {
            assert!(!flagged(fine), "{fine}");
        }
    }

    #[test]
    fn keys_round_trip() {
        let d = Digest::of(Algorithm::Blake3, b"k");
        let rel = format!("blake3/{}/{}", &d.hex()[..2], d.hex());
        assert_eq!(parse_key(&rel), Some(d.clone()));
        assert_eq!(parse_key(&format!("x/{rel}")), None);
        assert_eq!(parse_key("sha256/zz/abc"), None);
    }
}
