//! The HTTP boundary for errors: one error type ([`ApiError`]: a [`Code`],
//! what failed on what, headers), the one table of codes, the one mapping
//! from engine errors to codes, and one renderer per API surface
//! ([`Surface`], declared by every route in `router.rs`):
//!
//! ```text
//! Registry  /v2, /service/token  {"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"…"}]}
//! Harbor    /api/v2.0/…          {"errors":[{"code":"NOT_FOUND","message":"project p not found"}]}
//! Charts    chart repository     {"error":"chart demo-9.9.9 not found in project lib"}
//! ```
//!
//! `code` and the generic `message` come from [`Code::info`], `detail` says
//! what failed on what (usually the engine error's message); the Harbor and
//! ChartMuseum bodies carry the detail as their message. The status is the
//! code's on every surface. Only real storage failures become `500`; they
//! are logged with the request id and their detail is kept out of the body
//! (it names server paths).

use std::borrow::Cow;

use berth_engine::{
    AccountError, BlobError, DigestError, ManifestError, NameError, StorageError, UploadError,
};
use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::http::{Body, HDR_API_VERSION, REGISTRY_2_0};

/// An error code as berth uses it. Several codes share a wire name and
/// differ in status (e.g. [`Code::Unsupported`] is `405`,
/// [`Code::UnsupportedMediaType`] is `415`, both `UNSUPPORTED` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    /// A tag (in a manifest PUT's reference or `tag` parameter) that is not
    /// a valid tag.
    TagInvalid,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    /// `DENIED` for a push over a project's quota. Its detail is the
    /// message on every surface (Harbor's), so `docker push` shows it.
    QuotaExceeded,
    /// The operation is not supported here: wrong method, read-only mode,
    /// deletes disabled.
    Unsupported,
    /// A manifest media type berth does not store.
    UnsupportedMediaType,
    TooManyRequests,
    RangeInvalid,
    /// A manifest body over the size limit (the spec answers `413`).
    ManifestTooLarge,
    /// Another request body over its limit (chart uploads, API bodies).
    TooLarge,
    /// Another request is writing the same upload session.
    UploadBusy,
    /// `n` of a tag or catalog listing is not a non-negative integer
    /// (distribution's code; not in the spec's table).
    PaginationInvalid,
    /// No endpoint has this path.
    RouteUnknown,
    /// A malformed API or token request (Harbor's `BAD_REQUEST`).
    BadRequest,
    /// An API object (user, project, member) that does not exist.
    NotFound,
    /// An API object that already exists.
    Conflict,
    /// An API object something still depends on (Harbor's `412`).
    PreconditionFailed,
    /// The index of record (cluster mode's database) did not answer:
    /// distribution's `UNAVAILABLE`, `503`; the client retries.
    Unavailable,
    /// A storage failure: the only source of `500`.
    Internal,
}

/// What a [`Code`] looks like on the wire.
#[derive(Clone, Copy, Debug)]
pub struct CodeInfo {
    /// The `code` field: uppercase letters and underscores.
    pub wire: &'static str,
    /// The `message` field.
    pub message: &'static str,
    pub status: StatusCode,
}

impl Code {
    /// Every code, for tests and documentation.
    pub const ALL: [Code; 29] = [
        Code::BlobUnknown,
        Code::BlobUploadInvalid,
        Code::BlobUploadUnknown,
        Code::DigestInvalid,
        Code::ManifestBlobUnknown,
        Code::ManifestInvalid,
        Code::ManifestUnknown,
        Code::TagInvalid,
        Code::NameInvalid,
        Code::NameUnknown,
        Code::SizeInvalid,
        Code::Unauthorized,
        Code::Denied,
        Code::QuotaExceeded,
        Code::Unsupported,
        Code::UnsupportedMediaType,
        Code::TooManyRequests,
        Code::RangeInvalid,
        Code::ManifestTooLarge,
        Code::TooLarge,
        Code::UploadBusy,
        Code::PaginationInvalid,
        Code::RouteUnknown,
        Code::BadRequest,
        Code::NotFound,
        Code::Conflict,
        Code::PreconditionFailed,
        Code::Unavailable,
        Code::Internal,
    ];

    /// THE table: wire name, message and HTTP status of every code.
    pub const fn info(self) -> CodeInfo {
        const fn i(wire: &'static str, message: &'static str, status: StatusCode) -> CodeInfo {
            CodeInfo {
                wire,
                message,
                status,
            }
        }
        use StatusCode as S;
        match self {
            Code::BlobUnknown => i("BLOB_UNKNOWN", "blob unknown to registry", S::NOT_FOUND),
            Code::BlobUploadInvalid => {
                i("BLOB_UPLOAD_INVALID", "blob upload invalid", S::BAD_REQUEST)
            }
            Code::BlobUploadUnknown => i(
                "BLOB_UPLOAD_UNKNOWN",
                "blob upload unknown to registry",
                S::NOT_FOUND,
            ),
            Code::DigestInvalid => i(
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                S::BAD_REQUEST,
            ),
            Code::ManifestBlobUnknown => i(
                "MANIFEST_BLOB_UNKNOWN",
                "manifest references a manifest or blob unknown to registry",
                S::BAD_REQUEST,
            ),
            Code::ManifestInvalid => i("MANIFEST_INVALID", "manifest invalid", S::BAD_REQUEST),
            Code::ManifestUnknown => i(
                "MANIFEST_UNKNOWN",
                "manifest unknown to registry",
                S::NOT_FOUND,
            ),
            Code::TagInvalid => i(
                "TAG_INVALID",
                "manifest tag did not match URI",
                S::BAD_REQUEST,
            ),
            Code::NameInvalid => i("NAME_INVALID", "invalid repository name", S::BAD_REQUEST),
            Code::NameUnknown => i(
                "NAME_UNKNOWN",
                "repository name not known to registry",
                S::NOT_FOUND,
            ),
            Code::SizeInvalid => i(
                "SIZE_INVALID",
                "provided length did not match content length",
                S::BAD_REQUEST,
            ),
            Code::Unauthorized => i("UNAUTHORIZED", "authentication required", S::UNAUTHORIZED),
            Code::Denied => i(
                "DENIED",
                "requested access to the resource is denied",
                S::FORBIDDEN,
            ),
            Code::QuotaExceeded => i("DENIED", "quota exceeded", S::FORBIDDEN),
            Code::Unsupported => i(
                "UNSUPPORTED",
                "the operation is unsupported",
                S::METHOD_NOT_ALLOWED,
            ),
            Code::UnsupportedMediaType => i(
                "UNSUPPORTED",
                "the manifest media type is unsupported",
                S::UNSUPPORTED_MEDIA_TYPE,
            ),
            Code::TooManyRequests => {
                i("TOOMANYREQUESTS", "too many requests", S::TOO_MANY_REQUESTS)
            }
            Code::RangeInvalid => i(
                "RANGE_INVALID",
                "invalid content range",
                S::RANGE_NOT_SATISFIABLE,
            ),
            Code::ManifestTooLarge => i("SIZE_INVALID", "manifest too large", S::PAYLOAD_TOO_LARGE),
            Code::TooLarge => i(
                "SIZE_INVALID",
                "request body too large",
                S::PAYLOAD_TOO_LARGE,
            ),
            Code::UploadBusy => i(
                "BLOB_UPLOAD_INVALID",
                "the upload is being written by another request",
                S::CONFLICT,
            ),
            Code::PaginationInvalid => i(
                "PAGINATION_NUMBER_INVALID",
                "invalid number of results requested",
                S::BAD_REQUEST,
            ),
            Code::RouteUnknown => i("UNSUPPORTED", "no such endpoint", S::NOT_FOUND),
            Code::BadRequest => i("BAD_REQUEST", "bad request", S::BAD_REQUEST),
            Code::NotFound => i("NOT_FOUND", "not found", S::NOT_FOUND),
            Code::Conflict => i("CONFLICT", "already exists", S::CONFLICT),
            Code::PreconditionFailed => i("PRECONDITION", "still in use", S::PRECONDITION_FAILED),
            Code::Unavailable => i("UNAVAILABLE", "service unavailable", S::SERVICE_UNAVAILABLE),
            Code::Internal => i(
                "UNKNOWN",
                "internal storage error",
                S::INTERNAL_SERVER_ERROR,
            ),
        }
    }
}

/// A failed request: a code, what failed on what, and headers the answer
/// must carry (`Range` and `Location` on a `416` upload answer, `Allow` on a
/// `405`, `Content-Range` on a `416` blob answer).
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub detail: Option<Cow<'static, str>>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// For [`Code::Internal`]: the full error, logged but not sent.
    pub internal: Option<String>,
}

impl ApiError {
    pub fn new(code: Code, detail: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError {
            code,
            detail: Some(detail.into()),
            headers: Vec::new(),
            internal: None,
        }
    }

    pub fn bare(code: Code) -> ApiError {
        ApiError {
            code,
            detail: None,
            headers: Vec::new(),
            internal: None,
        }
    }

    /// A storage failure: `500`, details logged only.
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError {
            code: Code::Internal,
            detail: None,
            headers: Vec::new(),
            internal: Some(e.to_string()),
        }
    }

    /// The index of record did not answer: `503`, details logged only,
    /// with `Retry-After`.
    pub fn unavailable(e: impl std::fmt::Display) -> ApiError {
        ApiError {
            code: Code::Unavailable,
            detail: None,
            headers: vec![(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"))],
            internal: Some(e.to_string()),
        }
    }

    /// `405 UNSUPPORTED` with an `Allow` header.
    pub fn method_not_allowed(allow: &'static str) -> ApiError {
        ApiError::new(Code::Unsupported, "method not allowed on this endpoint")
            .with_header(ALLOW, HeaderValue::from_static(allow))
    }

    /// The status this error answers with.
    pub fn status(&self) -> hyper::StatusCode {
        self.code.info().status
    }

    /// What the answer says (an internal error's details are only logged).
    pub fn public_message(&self) -> String {
        self.detail
            .as_deref()
            .unwrap_or(self.code.info().message)
            .to_owned()
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// Renders the error as `surface` answers errors (see the module docs).
    pub fn into_response(self, surface: Surface, request_id: &str) -> Response<Body> {
        let info = self.code.info();
        if let Some(internal) = &self.internal {
            tracing::error!(request_id, error = %internal, "storage failure");
        }
        let said = self.detail.as_deref().unwrap_or(info.message);
        let body = match surface {
            Surface::Registry => serde_json::json!({
                "errors": [{
                    "code": info.wire,
                    "message": if self.code == Code::QuotaExceeded { said } else { info.message },
                    "detail": self.detail.as_deref(),
                }]
            }),
            Surface::Harbor => serde_json::json!({
                "errors": [{"code": info.wire, "message": said}]
            }),
            Surface::Charts => serde_json::json!({ "error": said }),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = Response::new(Body::new(Bytes::from(bytes)));
        *res.status_mut() = info.status;
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(HDR_API_VERSION, REGISTRY_2_0);
        for (name, value) in self.headers {
            h.append(name, value);
        }
        res
    }
}

/// An API surface: how its errors look on the wire. Every route declares
/// its surface in the route table (`router.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    /// The OCI distribution API (`/v2`) and the token service: the
    /// distribution spec's error JSON.
    Registry,
    /// The Harbor-shaped API (`/api/v2.0/…`, GC included): Harbor's
    /// `Errors` JSON (`{"errors":[{"code","message"}]}`).
    Harbor,
    /// The chart repository (Harbor's `chartrepo` and ChartMuseum's
    /// paths): ChartMuseum's `{"error": "…"}`.
    Charts,
}

// ---- engine errors → codes -------------------------------------------------

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::Database { .. } | StorageError::Busy(_) => ApiError::unavailable(e),
            StorageError::Unsupported(why) => ApiError::new(Code::Unsupported, why),
            StorageError::Conflict(why) => ApiError::new(Code::Conflict, why),
            e @ StorageError::QuotaExceeded { .. } => {
                ApiError::new(Code::QuotaExceeded, e.to_string())
            }
            e => ApiError::internal(e),
        }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> ApiError {
        let code = match &e {
            NameError::Repository { .. } => Code::NameInvalid,
            NameError::Tag { .. } => Code::TagInvalid,
            NameError::Reference { .. } => Code::DigestInvalid,
            NameError::Chart { .. } => Code::NameInvalid,
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<DigestError> for ApiError {
    fn from(e: DigestError) -> ApiError {
        // Malformed and unsupported digests are both DIGEST_INVALID (400):
        // the spec's answer to `?digest-algorithm=` berth cannot honour.
        ApiError::new(Code::DigestInvalid, e.to_string())
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> ApiError {
        match e {
            BlobError::NotFound { .. } => ApiError::new(Code::BlobUnknown, e.to_string()),
            BlobError::RangeNotSatisfiable { size, .. } => {
                ApiError::new(Code::RangeInvalid, e.to_string())
                    .with_header(hyper::header::CONTENT_RANGE, unsatisfied_range(size))
            }
            BlobError::Storage(s) => ApiError::from(s),
        }
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> ApiError {
        let e = match e {
            UploadError::Storage(s) => return ApiError::from(s),
            e => e,
        };
        let code = match &e {
            UploadError::NotFound { .. } => Code::BlobUploadUnknown,
            // Callers that can say where the upload stands add `Range` and
            // `Location` (see `uploads.rs`); this is the bare fallback.
            UploadError::OffsetMismatch { .. } => Code::RangeInvalid,
            UploadError::Busy { .. } => Code::UploadBusy,
            UploadError::TooMany { .. } => Code::TooManyRequests,
            UploadError::DigestMismatch { .. } | UploadError::Digest { .. } => Code::DigestInvalid,
            UploadError::SizeMismatch { .. } => Code::SizeInvalid,
            UploadError::Storage(_) => Code::Internal, // returned above
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<ManifestError> for ApiError {
    fn from(e: ManifestError) -> ApiError {
        let e = match e {
            ManifestError::Storage(s) => return ApiError::from(s),
            e => e,
        };
        let code = match &e {
            ManifestError::NotFound { .. } => Code::ManifestUnknown,
            ManifestError::BlobUnknown { .. } | ManifestError::ChildUnknown { .. } => {
                Code::ManifestBlobUnknown
            }
            ManifestError::DigestMismatch { .. } => Code::DigestInvalid,
            ManifestError::SizeMismatch { .. } | ManifestError::MediaTypeConflict { .. } => {
                Code::ManifestInvalid
            }
            // A chart version that exists (the chart API without
            // overwrite; OCI puts follow tags and never get it).
            ManifestError::ChartExists { .. } => Code::Conflict,
            // Harbor answers a push over, or a delete of, an immutable tag
            // with 412.
            ManifestError::TagImmutable { .. } => Code::PreconditionFailed,
            // A chart that does not fit its repository.
            ManifestError::ChartInvalid { .. } => Code::ManifestInvalid,
            ManifestError::Storage(_) => Code::Internal, // returned above
        };
        ApiError::new(code, e.to_string())
    }
}

impl std::fmt::Display for ApiError {
    /// The code's wire name and the detail (or the code's message).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let info = self.code.info();
        let detail = self.detail.as_deref().unwrap_or(info.message);
        write!(f, "{}: {detail}", info.wire)
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> ApiError {
        let e = match e {
            AccountError::Storage(s) => return ApiError::from(s),
            e => e,
        };
        let code = match &e {
            AccountError::Invalid { .. } => Code::BadRequest,
            AccountError::Exists { .. } => Code::Conflict,
            AccountError::NotFound { .. } => Code::NotFound,
            // Harbor answers a project limit with 403 too; the detail names it.
            AccountError::Limit { .. } => Code::Denied,
            AccountError::InUse { .. } => Code::PreconditionFailed,
            AccountError::Storage(_) => Code::Internal, // returned above
        };
        ApiError::new(code, e.to_string())
    }
}

impl From<crate::charts::package::PackageError> for ApiError {
    fn from(e: crate::charts::package::PackageError) -> ApiError {
        ApiError::new(Code::BadRequest, e.to_string())
    }
}

/// `Content-Range: bytes */SIZE`, the answer to an unsatisfiable range.
pub fn unsatisfied_range(size: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes */{size}"))
        .unwrap_or(HeaderValue::from_static("bytes */0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_follow_the_spec_grammar() {
        for code in Code::ALL {
            let info = code.info();
            assert!(
                !info.wire.is_empty()
                    && info
                        .wire
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{code:?}: {}",
                info.wire
            );
            assert!(!info.message.is_empty(), "{code:?}");
        }
    }

    #[test]
    fn statuses_of_the_spec_codes() {
        let expect = [
            (Code::BlobUnknown, 404),
            (Code::BlobUploadInvalid, 400),
            (Code::BlobUploadUnknown, 404),
            (Code::DigestInvalid, 400),
            (Code::ManifestBlobUnknown, 400),
            (Code::ManifestInvalid, 400),
            (Code::ManifestUnknown, 404),
            (Code::TagInvalid, 400),
            (Code::NameInvalid, 400),
            (Code::NameUnknown, 404),
            (Code::SizeInvalid, 400),
            (Code::Unauthorized, 401),
            (Code::Denied, 403),
            (Code::QuotaExceeded, 403),
            (Code::Unsupported, 405),
            (Code::UnsupportedMediaType, 415),
            (Code::TooManyRequests, 429),
            (Code::RangeInvalid, 416),
            (Code::ManifestTooLarge, 413),
            (Code::Unavailable, 503),
            (Code::Internal, 500),
        ];
        for (code, status) in expect {
            assert_eq!(code.info().status.as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn only_storage_failures_are_500() {
        for code in Code::ALL {
            assert_eq!(
                code.info().status == StatusCode::INTERNAL_SERVER_ERROR,
                code == Code::Internal,
                "{code:?}"
            );
        }
    }

    /// One error, three bodies: each surface's shape, the same status and
    /// headers everywhere, and a 500's detail on none of them.
    #[test]
    fn each_surface_renders_its_own_body() {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let body = |res: Response<Body>| {
            let collected = rt.block_on(res.into_body().collect());
            let bytes = collected.map(|c| c.to_bytes()).unwrap_or_default();
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()
        };
        let err = || ApiError::method_not_allowed("GET");
        for surface in [Surface::Registry, Surface::Harbor, Surface::Charts] {
            let res = err().into_response(surface, "r");
            assert_eq!(res.status(), 405);
            assert_eq!(res.headers()[ALLOW], "GET");
            let v = body(res);
            let said = "method not allowed on this endpoint";
            match surface {
                Surface::Registry => {
                    assert_eq!(v["errors"][0]["code"], "UNSUPPORTED");
                    assert_eq!(v["errors"][0]["message"], "the operation is unsupported");
                    assert_eq!(v["errors"][0]["detail"], said);
                }
                Surface::Harbor => {
                    assert_eq!(v["errors"][0]["code"], "UNSUPPORTED");
                    assert_eq!(v["errors"][0]["message"], said);
                    assert!(v["errors"][0].get("detail").is_none(), "{v}");
                }
                Surface::Charts => assert_eq!(v, serde_json::json!({ "error": said })),
            }
            let v = body(ApiError::internal("/data/x: disk on fire").into_response(surface, "r"));
            assert!(!v.to_string().contains("disk on fire"), "{v}");
        }
    }
}
