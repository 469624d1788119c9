//! A small, bounded `multipart/form-data` parser (RFC 7578) for chart
//! uploads: the whole body is already in memory (its size was capped while
//! reading), so parsing is a scan for boundaries over a byte slice.

use std::collections::BTreeMap;

use bytes::Bytes;

/// Most parts accepted in one form.
const MAX_PARTS: usize = 16;
/// Largest header block of one part.
const MAX_PART_HEADERS: usize = 8 << 10;

/// The boundary of a `Content-Type: multipart/form-data; boundary=…`
/// value, or None if the type is not multipart/form-data.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim().trim_matches('"');
        (!v.is_empty() && v.len() <= 70).then(|| v.to_owned())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Parses a form into field name → content (the first part of each name
/// wins). Parts are slices of `body` (no copy).
pub fn parse(body: &Bytes, boundary: &str) -> Result<BTreeMap<String, Bytes>, String> {
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    let mut fields = BTreeMap::new();
    let mut pos = find(body, delim, 0).ok_or("multipart body has no boundary")?;
    let mut parts = 0;
    loop {
        pos += delim.len();
        let rest = body.get(pos..).unwrap_or_default();
        if rest.starts_with(b"--") {
            return Ok(fields); // closing delimiter
        }
        if !rest.starts_with(b"\r\n") {
            return Err("malformed multipart boundary line".into());
        }
        pos += 2;
        parts += 1;
        if parts > MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} multipart parts"));
        }
        let head_end = find(body, b"\r\n\r\n", pos).ok_or("multipart part without headers")?;
        if head_end - pos > MAX_PART_HEADERS {
            return Err("multipart part headers too large".into());
        }
        let headers = std::str::from_utf8(&body[pos..head_end])
            .map_err(|_| "multipart part headers are not UTF-8")?;
        let name = headers
            .split("\r\n")
            .filter_map(|h| h.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-disposition"))
            .and_then(|(_, v)| disposition_name(v));
        let start = head_end + 4;
        let mut end_delim = Vec::with_capacity(delim.len() + 2);
        end_delim.extend_from_slice(b"\r\n");
        end_delim.extend_from_slice(delim);
        let end = find(body, &end_delim, start).ok_or("multipart part is not terminated")?;
        if let Some(name) = name {
            fields.entry(name).or_insert_with(|| body.slice(start..end));
        }
        pos = end + 2;
    }
}

/// The `name` parameter of a `Content-Disposition: form-data; name="x"`.
fn disposition_name(v: &str) -> Option<String> {
    v.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("name")).then(|| v.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"abc\"").as_deref(),
            Some("abc")
        );
        assert_eq!(boundary("application/gzip"), None);
        let body = Bytes::from_static(
            b"--abc\r\nContent-Disposition: form-data; name=\"chart\"; filename=\"c.tgz\"\r\nContent-Type: application/gzip\r\n\r\n\x1f\x8bdata\r\n--abc\r\nContent-Disposition: form-data; name=\"prov\"\r\n\r\nsig\r\n--abc--\r\n",
        );
        let f = parse(&body, "abc").unwrap();
        assert_eq!(&f["chart"][..], b"\x1f\x8bdata");
        assert_eq!(&f["prov"][..], b"sig");
        for bad in [
            &b"no boundary"[..],
            b"--abc\r\nContent-Disposition: form-data; name=\"chart\"\r\n\r\nunterminated",
            b"--abcX",
        ] {
            assert!(parse(&Bytes::copy_from_slice(bad), "abc").is_err());
        }
    }
}
