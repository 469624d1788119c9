//! The console's stylesheet and script, compiled into the binary.
//!
//! Pages link them as `/console/assets/<name>?v=<hash>`: the hash is of
//! the bytes, so a new build's pages name new URLs and the answers can be
//! cached for a year (`immutable`); the `ETag` is the same hash, for a
//! revalidation. Each is gzip-compressed once, on first demand.

use std::sync::OnceLock;

use bytes::Bytes;
use hyper::header::{
    HeaderMap, ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    VARY,
};
use hyper::{Method, Response, StatusCode};

use crate::http::{empty, hv, set_content_length, Body};

/// One embedded file.
pub struct Asset {
    pub name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    hash: OnceLock<String>,
    gzip: OnceLock<Bytes>,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, bytes: &'static [u8]) -> Asset {
        Asset {
            name,
            content_type,
            bytes,
            hash: OnceLock::new(),
            gzip: OnceLock::new(),
        }
    }

    /// The first 16 hex digits of the BLAKE3 hash of the bytes.
    pub fn hash(&self) -> &str {
        self.hash
            .get_or_init(|| blake3::hash(self.bytes).to_hex()[..16].to_owned())
    }

    fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                use std::io::Write;
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                // Writing to a Vec cannot fail.
                let _ = enc.write_all(self.bytes);
                Bytes::from(enc.finish().unwrap_or_default())
            })
            .clone()
    }
}

pub static CSS: Asset = Asset::new(
    "console.css",
    "text/css; charset=utf-8",
    include_bytes!("assets/console.css"),
);
pub static JS: Asset = Asset::new(
    "console.js",
    "text/javascript; charset=utf-8",
    include_bytes!("assets/console.js"),
);

/// `GET|HEAD /console/assets/{name}`.
pub fn serve(name: &str, method: &Method, headers: &HeaderMap) -> Response<Body> {
    let Some(asset) = [&CSS, &JS].into_iter().find(|a| a.name == name) else {
        return empty(StatusCode::NOT_FOUND);
    };
    if !matches!(*method, Method::GET | Method::HEAD) {
        let mut res = empty(StatusCode::METHOD_NOT_ALLOWED);
        res.headers_mut().insert("allow", hv("GET, HEAD"));
        return res;
    }
    let etag = format!("\"{}\"", asset.hash());
    let matches = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let gzip = headers
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut res = if matches {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        let body = if gzip {
            asset.gzip()
        } else {
            Bytes::from_static(asset.bytes)
        };
        if *method == Method::HEAD {
            let mut res = empty(StatusCode::OK);
            set_content_length(&mut res, body.len() as u64);
            res
        } else {
            Response::new(Body::new(body))
        }
    };
    let h = res.headers_mut();
    h.insert(ETAG, hv(&etag));
    h.insert(CACHE_CONTROL, hv("public, max-age=31536000, immutable"));
    h.insert(VARY, hv("Accept-Encoding"));
    if !matches {
        h.insert(CONTENT_TYPE, hv(asset.content_type));
        if gzip {
            h.insert(CONTENT_ENCODING, hv("gzip"));
        }
    }
    res
}
