//! The S3 calls object_store has no API for: CreateBucket,
//! ListMultipartUploads, UploadPartCopy, and CopyObject on the condition
//! that the source is still the version read (`x-amz-copy-source-if-match`).
//! (Other object calls,
//! AbortMultipartUpload included, go through object_store's `ObjectStore`
//! and `MultipartStore`.)
//!
//! Nothing here speaks a protocol by hand; each layer is object_store's or
//! a maintained crate's:
//! - signing: object_store's [`AwsAuthorizer`] (AWS Signature V4), the
//!   signer its own S3 client uses;
//! - HTTP: object_store's [`HttpClient`] built by its [`ReqwestConnector`]
//!   from the same [`ClientOptions`] as the object client, so both share one
//!   TLS stack (rustls), the same root certificates (the system's plus
//!   `S3Config::ca_file`), the same `allow_http` and proxy settings;
//! - query encoding: `percent-encoding` with SigV4's unreserved set, so the
//!   query on the wire is already the canonical one the signature covers;
//! - response bodies: `quick-xml`'s serde deserializer into the typed
//!   structs below; times with `chrono`'s RFC 3339 parser.
//!
//! Every failure is a [`StoreError::Remote`] naming the operation, the
//! bucket URL and, for an HTTP error, the status and S3 error code.

use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpRequestBody, ReqwestConnector};
use object_store::ClientOptions;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::S3Config;
use crate::store::StoreError;

/// How long one bucket-level request may take, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Pages of ListMultipartUploads followed before giving up (1000 uploads
/// each): a server whose markers never end cannot loop the sweep forever.
const MAX_LIST_PAGES: usize = 10_000;

/// Characters SigV4 leaves unencoded in a query (RFC 3986 unreserved).
const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// One multipart upload in progress, from ListMultipartUploads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Upload {
    /// Bucket-relative object key.
    pub key: String,
    pub upload_id: String,
    /// When it was created, Unix seconds.
    pub initiated: u64,
}

/// A signed-request client for one bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct BucketClient {
    http: HttpClient,
    credential: std::sync::Arc<AwsCredential>,
    region: String,
    bucket: String,
    /// `https://host:port/bucket` (path-style) or `https://bucket.host:port/`
    /// (virtual-hosted), without a query.
    url: url::Url,
}

impl BucketClient {
    /// A client for `config`'s bucket over `options` (those of the object
    /// client; the timeout is shortened to [`REQUEST_TIMEOUT`]).
    pub(super) fn new(config: &S3Config, options: &ClientOptions) -> Result<Self, StoreError> {
        let err = |message: String| StoreError::Remote {
            op: "configure S3 bucket client",
            key: format!("s3://{}", config.bucket),
            message,
        };
        let url = bucket_url(config).map_err(err)?;
        let http = ReqwestConnector::default()
            .connect(&options.clone().with_timeout(REQUEST_TIMEOUT))
            .map_err(|e| err(e.to_string()))?;
        Ok(BucketClient {
            http,
            credential: std::sync::Arc::new(AwsCredential {
                key_id: config.access_key.clone(),
                secret_key: config.secret_key.clone(),
                token: None,
            }),
            region: config.region.clone(),
            bucket: config.bucket.clone(),
            url,
        })
    }

    /// CreateBucket; an existing bucket of ours is success.
    pub(super) async fn create_bucket(&self) -> Result<(), StoreError> {
        const OP: &str = "create bucket";
        let (status, body) = self.send(OP, http::Method::PUT, &[]).await?;
        if status.is_success() {
            return Ok(());
        }
        let e = S3Error::parse(&body);
        if e.code == "BucketAlreadyOwnedByYou" {
            return Ok(());
        }
        Err(self.http_error(OP, status, &e))
    }

    /// ListMultipartUploads under `prefix`, every page.
    pub(super) async fn list_multipart_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<Upload>, StoreError> {
        const OP: &str = "list multipart uploads";
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_LIST_PAGES {
            let mut query = vec![("prefix", prefix), ("uploads", "")];
            if let Some((key, id)) = &markers {
                query.push(("key-marker", key));
                query.push(("upload-id-marker", id));
            }
            let (status, body) = self.send(OP, http::Method::GET, &query).await?;
            if !status.is_success() {
                return Err(self.http_error(OP, status, &S3Error::parse(&body)));
            }
            let page: ListMultipartUploadsResult = quick_xml::de::from_reader(body.as_ref())
                .map_err(|e| self.error(OP, format!("unreadable response: {e}")))?;
            for u in page.uploads {
                let initiated = chrono::DateTime::parse_from_rfc3339(&u.initiated)
                    .ok()
                    .and_then(|t| u64::try_from(t.timestamp()).ok())
                    .ok_or_else(|| {
                        self.error(
                            OP,
                            format!(
                                "upload {} of {}: bad Initiated {:?}",
                                u.upload_id, u.key, u.initiated
                            ),
                        )
                    })?;
                out.push(Upload {
                    key: u.key,
                    upload_id: u.upload_id,
                    initiated,
                });
            }
            let next = match (page.next_key_marker, page.next_upload_id_marker) {
                (Some(k), Some(i)) if page.is_truncated && !k.is_empty() => (k, i),
                _ => return Ok(out),
            };
            if markers.as_ref() == Some(&next) {
                return Err(self.error(OP, "the server repeated its page markers".to_owned()));
            }
            markers = Some(next);
        }
        Err(self.error(OP, format!("more than {MAX_LIST_PAGES} pages")))
    }

    /// UploadPartCopy: bytes `range` (inclusive end, as S3 has it) of
    /// object `source` become part `part` of multipart upload `upload_id`
    /// of `key`, inside the bucket; the part's ETag.
    pub(super) async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        part: usize,
        source: &str,
        range: (u64, u64),
    ) -> Result<String, StoreError> {
        const OP: &str = "upload part copy";
        let part = part.to_string();
        let query = [("partNumber", part.as_str()), ("uploadId", upload_id)];
        let copy_range = format!("bytes={}-{}", range.0, range.1);
        let body = self
            .copy(OP, key, source, &query, Some(&copy_range), None)
            .await?;
        let result: CopyPartResult = quick_xml::de::from_reader(body.as_ref())
            .map_err(|e| self.error(OP, format!("unreadable response: {e}")))?;
        Ok(result.e_tag)
    }

    /// CopyObject: object `source` becomes object `key`, inside the
    /// bucket, only while the source's ETag is `if_match` (a source
    /// rewritten since it was read fails with `412 PreconditionFailed`).
    /// The condition goes by both names servers read it by: S3's
    /// `x-amz-copy-source-if-match`, and `x-amz-copy-if-match`, which Ceph
    /// RGW reads for CopyObject (`RGWCopyObj_ObjStore_S3::get_params`).
    pub(super) async fn copy_object(
        &self,
        key: &str,
        source: &str,
        if_match: &str,
    ) -> Result<(), StoreError> {
        self.copy("copy object", key, source, &[], None, Some(if_match))
            .await
            .map(drop)
    }

    /// A copy request (CopyObject, or UploadPartCopy with its `query`):
    /// the response body of a success.
    async fn copy(
        &self,
        op: &'static str,
        key: &str,
        source: &str,
        query: &[(&str, &str)],
        range: Option<&str>,
        if_match: Option<&str>,
    ) -> Result<Bytes, StoreError> {
        let copy_source = format!("/{}/{}", self.bucket, encode_key(source));
        let mut headers = vec![("x-amz-copy-source", copy_source.as_str())];
        if let Some(range) = range {
            headers.push(("x-amz-copy-source-range", range));
        }
        if let Some(etag) = if_match {
            headers.push(("x-amz-copy-source-if-match", etag));
            headers.push(("x-amz-copy-if-match", etag));
        }
        let (status, body) = self
            .send_to(op, http::Method::PUT, Some(key), query, &headers)
            .await?;
        // A copy can fail after its 200 was sent: the body is then an
        // <Error>, not the copy's result.
        let e = S3Error::parse(&body);
        if !status.is_success() || !e.code.is_empty() {
            return Err(self.http_error(op, status, &e));
        }
        Ok(body)
    }

    /// A signed request on the bucket with an empty body; its status and body.
    async fn send(
        &self,
        op: &'static str,
        method: http::Method,
        query: &[(&str, &str)],
    ) -> Result<(http::StatusCode, Bytes), StoreError> {
        self.send_to(op, method, None, query, &[]).await
    }

    /// A signed request on the bucket, or on its object `key`, with an
    /// empty body and `headers`; its status and body.
    async fn send_to(
        &self,
        op: &'static str,
        method: http::Method,
        key: Option<&str>,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Result<(http::StatusCode, Bytes), StoreError> {
        let mut url = self.url.clone();
        if let Some(key) = key {
            let path = format!("{}/{}", url.path().trim_end_matches('/'), encode_key(key));
            url.set_path(&path);
        }
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        utf8_percent_encode(k, QUERY_ENCODE),
                        utf8_percent_encode(v, QUERY_ENCODE)
                    )
                })
                .collect();
            url.set_query(Some(&q.join("&")));
        }
        // RGW refuses a PUT without a length (411), empty body or not.
        let put = method == http::Method::PUT;
        let mut request = http::Request::builder().method(method).uri(url.as_str());
        if put {
            request = request.header(http::header::CONTENT_LENGTH, "0");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request
            .body(HttpRequestBody::empty())
            .map_err(|e| self.error(op, format!("cannot build request: {e}")))?;
        AwsAuthorizer::new(&self.credential, "s3", &self.region).authorize(&mut request, None);
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| self.error(op, error_chain(&e)))?;
        let status = response.status();
        let body = response.into_body().bytes().await.map_err(|e| {
            self.error(
                op,
                format!("HTTP {status}, reading the body: {}", error_chain(&e)),
            )
        })?;
        Ok((status, body))
    }

    fn error(&self, op: &'static str, message: String) -> StoreError {
        StoreError::Remote {
            op,
            key: self.url.to_string(),
            message,
        }
    }

    fn http_error(&self, op: &'static str, status: http::StatusCode, e: &S3Error) -> StoreError {
        self.error(op, format!("HTTP {status}: {} {}", e.code, e.message))
    }
}

/// The bucket's URL: `endpoint/bucket` path-style, else the bucket as the
/// first label of the endpoint's host. No endpoint means AWS's regional one.
fn bucket_url(config: &S3Config) -> Result<url::Url, String> {
    let endpoint = if config.endpoint.is_empty() {
        format!("https://s3.{}.amazonaws.com", config.region)
    } else {
        config.endpoint.clone()
    };
    let mut url =
        url::Url::parse(&endpoint).map_err(|e| format!("bad endpoint {endpoint:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
        return Err(format!(
            "bad endpoint {endpoint:?}: expected http(s)://host[:port][/path]"
        ));
    }
    if config.path_style {
        url.path_segments_mut()
            .map_err(|()| format!("bad endpoint {endpoint:?}"))?
            .pop_if_empty()
            .push(&config.bucket);
    } else {
        let host = url
            .host_str()
            .ok_or_else(|| format!("bad endpoint {endpoint:?}: no host"))?;
        let host = format!("{}.{host}", config.bucket);
        url.set_host(Some(&host))
            .map_err(|e| format!("bad bucket host {host:?}: {e}"))?;
    }
    Ok(url)
}

/// `key` with each of its `/`-separated parts percent-encoded as SigV4
/// canonicalizes S3 paths (once, unreserved characters kept).
fn encode_key(key: &str) -> String {
    key.split('/')
        .map(|part| utf8_percent_encode(part, QUERY_ENCODE).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// An error and its sources, one line (reqwest's "error sending request"
/// alone does not say that the certificate was refused).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// `<ListMultipartUploadsResult>`; only what the sweep reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListMultipartUploadsResult {
    #[serde(default)]
    is_truncated: bool,
    next_key_marker: Option<String>,
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<UploadXml>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UploadXml {
    key: String,
    upload_id: String,
    initiated: String,
}

/// `<CopyPartResult>`; only its ETag.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CopyPartResult {
    #[serde(rename = "ETag")]
    e_tag: String,
}

/// An S3 `<Error>` body; empty fields when the body is not one.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3Error {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl S3Error {
    fn parse(body: &[u8]) -> S3Error {
        quick_xml::de::from_reader(body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls() {
        let mut c = S3Config::new("https://rgw.example:7480/", "eu", "b-1", "ak", "sk");
        assert_eq!(
            bucket_url(&c).expect("url").as_str(),
            "https://rgw.example:7480/b-1"
        );
        c.path_style = false;
        assert_eq!(
            bucket_url(&c).expect("url").as_str(),
            "https://b-1.rgw.example:7480/"
        );
        c.endpoint = String::new();
        assert_eq!(
            bucket_url(&c).expect("url").as_str(),
            "https://b-1.s3.eu.amazonaws.com/"
        );
        c.endpoint = "ftp://x".into();
        assert!(bucket_url(&c).is_err());
    }

    #[test]
    fn list_multipart_uploads_response_parses() {
        // The shape Ceph RGW 16 and AWS return (trimmed).
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>r/sha256/ab/x&amp;y</NextKeyMarker><NextUploadIdMarker>2~id</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>r/sha256/ab/one</Key><UploadId>1~id</UploadId>
    <Initiator><ID>t</ID><DisplayName>t</DisplayName></Initiator>
    <Owner><ID>t</ID><DisplayName>t</DisplayName></Owner>
    <StorageClass>STANDARD</StorageClass><Initiated>2015-08-30T12:36:00.000Z</Initiated></Upload>
  <Upload><Key>r/sha256/ab/x&amp;y</Key><UploadId>2~id</UploadId>
    <Initiated>2015-08-30T12:36:01.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page: ListMultipartUploadsResult =
            quick_xml::de::from_reader(xml.as_ref()).expect("parses");
        assert!(page.is_truncated);
        assert_eq!(page.next_key_marker.as_deref(), Some("r/sha256/ab/x&y"));
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[1].key, "r/sha256/ab/x&y");
        assert_eq!(page.uploads[0].initiated, "2015-08-30T12:36:00.000Z");
        let empty: ListMultipartUploadsResult = quick_xml::de::from_reader(
            br#"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"#
                .as_ref(),
        )
        .expect("parses");
        assert!(empty.uploads.is_empty() && !empty.is_truncated);
        let e = S3Error::parse(
            b"<Error><Code>AccessDenied</Code><Message>no</Message><RequestId>r</RequestId></Error>",
        );
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("AccessDenied", "no")
        );
        assert_eq!(S3Error::parse(b"not xml").code, "");
    }
}
