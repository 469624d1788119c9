//! `index.yaml`: rendering Helm's `repo.IndexFile` from the engine's chart
//! entries, and the per-project cache of rendered bytes.
//!
//! The document is what Helm's `pkg/repo` reads (it converts YAML to JSON
//! and decodes `IndexFile`/`ChartVersion` by their JSON names):
//!
//! ```yaml
//! apiVersion: v1
//! entries:
//!   nginx:                     # chart names in byte order
//!   - apiVersion: "v2"         # newest SemVer first; every Chart.yaml field
//!     created: "2026-11-26T07:33:27.123Z"
//!     digest: "<hex sha256 of the .tgz>"
//!     name: "nginx"
//!     urls:
//!     - "charts/nginx-1.2.3.tgz"   # relative to the repository URL
//!     version: "1.2.3"
//! generated: "2026-11-26T07:33:27.123Z"   # time of the last change
//! ```
//!
//! Keys are sorted (as Helm's own output is) and every string is a YAML
//! double-quoted scalar, so no value can be misread as a number, boolean
//! or YAML syntax.
//!
//! The cache: one rendered document per project, keyed by the project's
//! chart generation, which the engine bumps in the batch of every change.
//! A GET whose generation matches serves the cached bytes (and a gzip copy
//! made on first demand). A project's document is spliced from pieces: the
//! fixed head, one piece per chart (that chart's entry), and the tail
//! (`generated`). A change re-renders only the pieces of the charts it
//! touched (the engine's record names them, see
//! `Engine::chart_index_since`) and copies the others from the previous
//! generation's document; the gzip copy is spliced the same way, from each
//! piece's raw deflate stream (see [`Rendered::gzip`]). The cache is
//! bounded by a byte budget; least recently used projects are dropped
//! first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use berth_engine::{ChartIndexDelta, ChartRepoRecord, ChartVersion};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::body::Body;
use crate::time::rfc3339_ms;

/// Every `index.yaml` starts with this; the entries follow.
const HEAD: &str = "apiVersion: v1\nentries:";

/// One rendered `index.yaml`.
pub struct Rendered {
    /// The generation(s) it was rendered from: one project's, or for the
    /// global index every project's.
    pub key: Vec<(String, u64)>,
    /// The document as consecutive parts, served as they are (one frame
    /// each, written with vectored writes): a project's index is `HEAD`,
    /// one part per chart, then the tail, so a splice shares the unchanged
    /// charts' bytes with the previous generation instead of copying them
    /// into one buffer; the global index is one part.
    parts: Vec<Bytes>,
    /// The sum of the parts' lengths.
    len: usize,
    /// Gzip of the document, made on first demand.
    gzip: OnceLock<Bytes>,
    /// Strong validator: derived from `key` and the update time.
    pub etag: String,
    /// Time of the last change, for `Last-Modified`.
    pub modified_ms: u64,
    /// A project's index: the pieces its parts are, which the next
    /// generation's splice reuses (the global index has none).
    pieces: Option<Pieces>,
}

/// A project's `index.yaml` as `HEAD`, one piece per chart (in name
/// order), then the tail (`generated`, and ` {}` when there is no chart:
/// the last part).
struct Pieces {
    /// The project generation the pieces are the charts of.
    generation: u64,
    charts: BTreeMap<String, Piece>,
}

/// One chart's entry in a project's `index.yaml`.
struct Piece {
    /// The entry's bytes, shared by every generation's index in which the
    /// chart is unchanged.
    plain: Bytes,
    /// The entry as a raw deflate stream, made on first gzip demand and
    /// shared by every later generation's piece of the unchanged chart.
    deflated: SharedDeflate,
}

/// A piece's deflate stream, made once and shared across generations.
type SharedDeflate = Arc<OnceLock<Deflated>>;

/// A piece of a gzip member's deflate stream and the CRC-32 of its input.
struct Deflated {
    bytes: Vec<u8>,
    crc: flate2::Crc,
}

/// The gzip member header: deflate, no flags, no time, unknown OS (as
/// flate2's `GzEncoder` writes it).
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Compresses `data` as a raw deflate stream that can be concatenated: a
/// piece ends with a sync flush (byte-aligned, no final block), so another
/// piece can follow; the `last` one ends the stream. Each piece starts a
/// fresh stream (no back-references before its own start), so pieces
/// compressed at different times splice into one valid stream.
fn deflate_piece(data: &[u8], last: bool) -> Deflated {
    use flate2::{Compress, Compression, FlushCompress, Status};
    let mut c = Compress::new(Compression::fast(), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 4 + 64);
    loop {
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let consumed = usize::try_from(c.total_in()).unwrap_or(data.len());
        let status = c.compress_vec(&data[consumed.min(data.len())..], &mut out, flush);
        let done = match status {
            Ok(Status::StreamEnd) => true,
            // A sync flush is complete once all input is in and the
            // compressor left output space unused.
            Ok(_) => {
                !last && c.total_in() as usize == data.len() && out.capacity() - out.len() >= 64
            }
            // A stream error: not possible for a fresh compressor whose
            // output keeps growing; stop rather than spin.
            Err(_) => true,
        };
        if done {
            break;
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    Deflated { bytes: out, crc }
}

impl Rendered {
    /// A document of one part (the global index).
    pub fn new(key: Vec<(String, u64)>, body: Bytes, modified_ms: u64) -> Rendered {
        Rendered::of_parts(key, vec![body], modified_ms)
    }

    fn of_parts(key: Vec<(String, u64)>, parts: Vec<Bytes>, modified_ms: u64) -> Rendered {
        let len = parts.iter().map(Bytes::len).sum::<usize>();
        let mut tag = String::from("\"i");
        for (_, g) in &key {
            tag.push_str(&format!("-{g:x}"));
        }
        tag.push_str(&format!("-{modified_ms:x}-{len:x}\""));
        Rendered {
            key,
            parts,
            len,
            gzip: OnceLock::new(),
            etag: tag,
            modified_ms,
            pieces: None,
        }
    }

    /// The document's length in bytes.
    pub fn size(&self) -> usize {
        self.len
    }

    /// The document as a response body: its parts, uncopied.
    pub fn body(&self) -> Body {
        Body::chunks(self.parts.clone().into_iter(), self.len as u64)
    }

    /// The gzip-compressed body (compressed once, then shared). A
    /// project's index is one gzip member spliced from its pieces' deflate
    /// streams (each compressed once, on the first demand after it
    /// changed): head, pieces, tail, then the CRC-32 combined from theirs.
    pub fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| match &self.pieces {
                Some(p) => self.splice_gzip(p),
                None => {
                    use std::io::Write;
                    let mut enc = flate2::write::GzEncoder::new(
                        Vec::with_capacity(self.len / 8),
                        flate2::Compression::fast(),
                    );
                    // Writing to a Vec cannot fail.
                    for part in &self.parts {
                        let _ = enc.write_all(part);
                    }
                    Bytes::from(enc.finish().unwrap_or_default())
                }
            })
            .clone()
    }

    fn splice_gzip(&self, pieces: &Pieces) -> Bytes {
        let head = deflate_piece(HEAD.as_bytes(), false);
        let tail = deflate_piece(self.parts.last().map_or(&[][..], |t| &t[..]), true);
        let deflated: Vec<&Deflated> = pieces
            .charts
            .values()
            .map(|p| p.deflated.get_or_init(|| deflate_piece(&p.plain, false)))
            .collect();
        let len = GZIP_HEADER.len()
            + head.bytes.len()
            + deflated.iter().map(|d| d.bytes.len()).sum::<usize>()
            + tail.bytes.len()
            + 8;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&GZIP_HEADER);
        let mut crc = head.crc;
        out.extend_from_slice(&head.bytes);
        for d in deflated {
            out.extend_from_slice(&d.bytes);
            crc.combine(&d.crc);
        }
        out.extend_from_slice(&tail.bytes);
        crc.combine(&tail.crc);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE: the input length modulo 2^32 (RFC 1952).
        out.extend_from_slice(&(crc.amount()).to_le_bytes());
        Bytes::from(out)
    }

    fn cost(&self) -> usize {
        let pieces = self.pieces.as_ref().map_or(0, |p| {
            p.charts
                .values()
                .map(|c| 96 + c.deflated.get().map_or(0, |d| d.bytes.len()))
                .sum()
        });
        self.len + self.gzip.get().map_or(0, Bytes::len) + pieces + 256
    }

    /// The generation a splice can start from: a project's index's.
    fn pieces_generation(&self) -> Option<u64> {
        self.pieces.as_ref().map(|p| p.generation)
    }
}

/// A project's index for `repo`'s generation, from what the engine read
/// (`Engine::chart_index_since` with [`since`]'s generation): every chart
/// rendered (`ChartIndexDelta::All`), or `prev`'s pieces with those of
/// the changed charts re-rendered (`ChartIndexDelta::Charts`; `prev` must
/// then be the render [`since`] was taken from). The parts, joined, are
/// byte for byte what [`render`] makes of the same versions; no unchanged
/// chart's bytes are copied.
pub fn splice(
    prev: Option<&Rendered>,
    project: &str,
    repo: ChartRepoRecord,
    delta: ChartIndexDelta,
) -> Rendered {
    /// A chart's entry: the previous generation's bytes, or new ones.
    enum Src<'a> {
        Kept(&'a Piece),
        New(String),
    }
    let mut charts: BTreeMap<String, Src<'_>> = BTreeMap::new();
    match delta {
        ChartIndexDelta::All(versions) => {
            for (name, vs) in sorted_entries(&versions, "") {
                let mut out = String::with_capacity(vs.len() * 1024);
                write_entry(&mut out, &name, "", &vs);
                charts.insert(name, Src::New(out));
            }
        }
        ChartIndexDelta::Charts(changed) => {
            if let Some(p) = prev.and_then(|r| r.pieces.as_ref()) {
                for (name, piece) in &p.charts {
                    charts.insert(name.clone(), Src::Kept(piece));
                }
            }
            for (name, versions) in changed {
                if versions.is_empty() {
                    charts.remove(&name);
                    continue;
                }
                let vs = newest_first(versions.iter());
                let mut out = String::with_capacity(vs.len() * 1024);
                write_entry(&mut out, &name, "", &vs);
                charts.insert(name, Src::New(out));
            }
        }
    }
    let mut tail = String::new();
    write_tail(&mut tail, !charts.is_empty(), repo.updated_ms);
    let mut parts = Vec::with_capacity(charts.len() + 2);
    parts.push(Bytes::from_static(HEAD.as_bytes()));
    let charts = charts
        .into_iter()
        .map(|(name, c)| {
            let piece = match c {
                Src::Kept(p) => Piece {
                    plain: p.plain.clone(),
                    deflated: p.deflated.clone(),
                },
                Src::New(mut s) => {
                    s.shrink_to_fit();
                    Piece {
                        plain: Bytes::from(s),
                        deflated: SharedDeflate::default(),
                    }
                }
            };
            parts.push(piece.plain.clone());
            (name, piece)
        })
        .collect();
    parts.push(Bytes::from(tail));
    let generation = repo.generation;
    let mut r = Rendered::of_parts(
        vec![(project.to_owned(), generation)],
        parts,
        repo.updated_ms,
    );
    r.pieces = Some(Pieces { generation, charts });
    r
}

/// The generation to ask the engine for changes since
/// (`Engine::chart_index_since`): that of `prev`'s pieces, if it has any.
pub fn since(prev: Option<&Rendered>) -> Option<u64> {
    prev.and_then(Rendered::pieces_generation)
}

/// The rendered-index cache. Owned by `App`; lives as long as the server.
/// A plain mutex: it is held only to look up, insert or evict (never while
/// rendering), and renders of one project race harmlessly (the same bytes,
/// last insert wins).
pub struct IndexCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

struct CacheInner {
    /// Cache key ("p:<project>" or "*" for the global index) → entry and
    /// its last use (a logical clock).
    map: HashMap<String, (Arc<Rendered>, u64)>,
    clock: u64,
}

impl IndexCache {
    /// A cache holding at most about `budget` bytes of rendered indexes.
    pub fn new(budget: usize) -> IndexCache {
        IndexCache {
            budget,
            inner: Mutex::new(CacheInner {
                map: HashMap::new(),
                clock: 0,
            }),
        }
    }

    /// The cached index for `slot` if it was rendered from `key`.
    pub fn get(&self, slot: &str, key: &[(String, u64)]) -> Option<Arc<Rendered>> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.clock += 1;
        let now = c.clock;
        let (r, used) = c.map.get_mut(slot)?;
        if r.key != key {
            return None;
        }
        *used = now;
        Some(r.clone())
    }

    /// Whatever is cached for `slot`, of any generation: the base of the
    /// next splice.
    pub fn latest(&self, slot: &str) -> Option<Arc<Rendered>> {
        let c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.map.get(slot).map(|(r, _)| r.clone())
    }

    /// Caches `r` for `slot`, evicting least recently used entries past the
    /// budget (an index larger than the whole budget is served uncached).
    pub fn put(&self, slot: &str, r: Arc<Rendered>) {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.clock += 1;
        let now = c.clock;
        c.map.insert(slot.to_owned(), (r, now));
        loop {
            let total: usize = c.map.values().map(|(r, _)| r.cost()).sum();
            if total <= self.budget {
                break;
            }
            let Some(oldest) = c
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            c.map.remove(&oldest);
        }
    }
}

/// `Last-Modified` form of a millisecond timestamp.
pub fn http_date(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

/// One chart version as Helm's `ChartVersion` JSON: the metadata object
/// plus `urls`, `created` and `digest`. `url_prefix` is prepended to
/// `charts/<name>-<version>.tgz` (empty for a project's own index).
pub fn entry_value(v: &ChartVersion, url_prefix: &str) -> Map<String, Value> {
    let mut m = match serde_json::from_str::<Value>(&v.record.metadata) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    // The key facts come from the index, whatever the metadata says.
    m.insert("name".into(), Value::String(v.name.clone()));
    m.insert("version".into(), Value::String(v.version.clone()));
    m.insert(
        "urls".into(),
        Value::Array(vec![Value::String(format!(
            "{url_prefix}charts/{}-{}.tgz",
            v.name, v.version
        ))]),
    );
    m.insert(
        "created".into(),
        Value::String(rfc3339_ms(v.record.created_ms)),
    );
    m.insert(
        "digest".into(),
        Value::String(v.record.chart.digest.hex().to_owned()),
    );
    m
}

/// Groups versions by chart name (entry key: `key_prefix` + name) with
/// the newest SemVer first, as Helm's `IndexFile.SortEntries` does.
/// Versions that are not SemVer (only possible for OCI pushes of old
/// charts) sort after the others, by bytes.
pub fn sorted_entries<'a>(
    versions: &'a [ChartVersion],
    key_prefix: &str,
) -> BTreeMap<String, Vec<&'a ChartVersion>> {
    let mut by_name: BTreeMap<String, Vec<&ChartVersion>> = BTreeMap::new();
    for v in versions {
        by_name
            .entry(format!("{key_prefix}{}", v.name))
            .or_default()
            .push(v);
    }
    by_name
        .into_iter()
        .map(|(k, vs)| (k, newest_first(vs.into_iter())))
        .collect()
}

/// One chart's versions, newest SemVer first (see [`sorted_entries`]).
fn newest_first<'a>(versions: impl Iterator<Item = &'a ChartVersion>) -> Vec<&'a ChartVersion> {
    let mut vs: Vec<(Option<semver::Version>, &ChartVersion)> = versions
        .map(|v| {
            (
                berth_wire::charts::package::lenient_version(&v.version).ok(),
                v,
            )
        })
        .collect();
    vs.sort_by(|(a, av), (b, bv)| match (a, b) {
        (Some(a), Some(b)) => b.cmp(a),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => bv.version.cmp(&av.version),
    });
    vs.into_iter().map(|(_, v)| v).collect()
}

/// Renders an `index.yaml` of `projects` (each: name, state, versions)
/// in one go (the global index; a project's own is [`splice`]d, to the
/// same bytes). With one project, entries are chart names and URLs are
/// relative to that project's repository; with `global`, entries are
/// `project/name` and URLs `project/charts/…`, relative to `/chartrepo/`
/// (Harbor's layout).
pub fn render(projects: &[(String, ChartRepoRecord, Vec<ChartVersion>)], global: bool) -> Bytes {
    let total: usize = projects
        .iter()
        .map(|(_, _, v)| {
            v.iter()
                .map(|v| v.record.metadata.len() + 200)
                .sum::<usize>()
        })
        .sum();
    let mut out = String::with_capacity(total + 128);
    out.push_str(HEAD);
    let mut merged: BTreeMap<String, (String, Vec<&ChartVersion>)> = BTreeMap::new();
    for (project, _, versions) in projects {
        let prefix = if global {
            format!("{project}/")
        } else {
            String::new()
        };
        for (k, vs) in sorted_entries(versions, &prefix) {
            merged.insert(k, (prefix.clone(), vs));
        }
    }
    for (key, (url_prefix, versions)) in &merged {
        write_entry(&mut out, key, url_prefix, versions);
    }
    let updated = projects
        .iter()
        .map(|(_, r, _)| r.updated_ms)
        .max()
        .unwrap_or(0);
    write_tail(&mut out, !merged.is_empty(), updated);
    Bytes::from(out)
}

/// One entry of `entries`: `key` and its versions (newest first).
fn write_entry(out: &mut String, key: &str, url_prefix: &str, versions: &[&ChartVersion]) {
    out.push_str("\n  ");
    write_key(out, key);
    out.push(':');
    for v in versions {
        out.push_str("\n  - ");
        let m = entry_value(v, url_prefix);
        write_map(out, &m, 4, true);
        // write_map ends with a newline; entries are joined by "\n  - ".
        out.pop();
    }
}

/// What follows the entries: `{}` if there are none, and `generated`.
fn write_tail(out: &mut String, any: bool, updated_ms: u64) {
    if !any {
        out.push_str(" {}");
    }
    out.push_str("\ngenerated: ");
    write_str(out, &rfc3339_ms(updated_ms));
    out.push('\n');
}

fn write_map(out: &mut String, m: &Map<String, Value>, indent: usize, first_inline: bool) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !first_inline {
            out.extend(std::iter::repeat_n(' ', indent));
        }
        write_key(out, k);
        out.push(':');
        write_value(out, v, indent);
    }
}

/// A value after `key:`.
fn write_value(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if m.is_empty() => out.push_str(" {}\n"),
        Value::Object(m) => {
            out.push('\n');
            write_map(out, m, indent + 2, false);
        }
        Value::Array(a) if a.is_empty() => out.push_str(" []\n"),
        Value::Array(a) => {
            out.push('\n');
            for item in a {
                out.extend(std::iter::repeat_n(' ', indent));
                out.push_str("- ");
                write_item(out, item, indent + 2);
            }
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar);
            out.push('\n');
        }
    }
}

/// A sequence item after `- `.
fn write_item(out: &mut String, v: &Value, indent: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => write_map(out, m, indent, true),
        // Nested sequences and empty collections: JSON flow style, which
        // is valid YAML (only `import-values` can hold these).
        Value::Object(_) | Value::Array(_) => {
            out.push_str(&serde_json::to_string(v).unwrap_or_default());
            out.push('\n');
        }
        scalar => {
            write_scalar(out, scalar);
            out.push('\n');
        }
    }
}

fn write_scalar(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => write_str(out, s),
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Object(_) | Value::Array(_) => {
            out.push_str(&serde_json::to_string(v).unwrap_or_default())
        }
    }
}

/// A key: plain when it is unambiguous, else double-quoted.
fn write_key(out: &mut String, k: &str) {
    let plain = k.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
        );
    if plain {
        out.push_str(k);
    } else {
        write_str(out, k);
    }
}

/// A YAML double-quoted scalar: escapes quotes, backslashes and every
/// character YAML does not allow raw.
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20
                || (0x7f..=0x9f).contains(&(c as u32))
                || c == '\u{feff}'
                || c == '\u{fffe}'
                || c == '\u{ffff}' =>
            {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_engine::{ChartBlob, ChartRecord, Digest};

    fn version(name: &str, v: &str, meta: &str) -> ChartVersion {
        let d = Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap();
        ChartVersion {
            name: name.into(),
            version: v.into(),
            record: ChartRecord {
                metadata: meta.into(),
                chart: ChartBlob {
                    digest: d.clone(),
                    size: 1,
                },
                prov: None,
                manifest: d,
                created_ms: 0,
            },
        }
    }

    #[test]
    fn renders_yaml_that_round_trips() {
        let meta = r#"{"name":"a","version":"1.0.0","apiVersion":"v2","description":"x: \"y\"\n- z\u0001","keywords":["yes","1.0"],"annotations":{"true":"on","a/b":"c"},"maintainers":[{"name":"n","email":"e"}],"dependencies":[{"name":"d","repository":"","import-values":[["x"],{"a":1}]}]}"#;
        let versions = vec![
            version("a", "1.0.0", meta),
            version("a", "10.0.0-rc.1", "{}"),
            version("a", "2.0.0", "{}"),
            version("b", "0.1.0", "{}"),
        ];
        let rec = ChartRepoRecord {
            generation: 1,
            updated_ms: 0,
            versions: 4,
            ..ChartRepoRecord::default()
        };
        let body = render(&[("p".into(), rec, versions)], false);
        let doc: serde_json::Value = serde_yaml::from_slice(&body).expect("valid YAML");
        let a = &doc["entries"]["a"];
        let order: Vec<_> = a
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(order, ["10.0.0-rc.1", "2.0.0", "1.0.0"]);
        let first = &a[2];
        let want: serde_json::Value = serde_json::from_str(meta).unwrap();
        for (k, v) in want.as_object().unwrap() {
            assert_eq!(&first[k], v, "{k}");
        }
        assert_eq!(first["urls"][0], "charts/a-1.0.0.tgz");
        assert_eq!(first["digest"], "a".repeat(64));
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["generated"], "1970-01-01T00:00:00.000Z");
        let empty = render(&[], false);
        let doc: serde_json::Value = serde_yaml::from_slice(&empty).unwrap();
        assert_eq!(doc["entries"], serde_json::json!({}));
    }

    /// A project's chart repository in a real engine, changed by chart
    /// puts, replaces and deletes the way the chart API and `helm push`
    /// change it.
    struct Repo {
        _dir: tempfile::TempDir,
        engine: berth_engine::Engine,
        project: berth_engine::RepoName,
    }

    const NAMES: [&str; 4] = ["alpha", "beta-x", "yes", "z1"];
    const VERSIONS: [&str; 7] = [
        "0.1.0",
        "1.0.0",
        "1.0.0-rc.1",
        "1.2",
        "v2.0.0",
        "10.0.0",
        "1.0.0+b1",
    ];

    impl Repo {
        fn new() -> Repo {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = berth_engine::Engine::open(berth_engine::EngineConfig::new(dir.path()))
                .expect("open engine");
            Repo {
                _dir: dir,
                engine,
                project: berth_engine::RepoName::parse("p").expect("project"),
            }
        }

        /// Puts version `v` of chart `name` (`variant` changes its
        /// metadata, so a replace changes its entry).
        fn put(&self, name: &str, v: &str, variant: u8, write: berth_engine::ChartWrite) {
            use berth_engine::{Algorithm, ChartEntry, ManifestPut, RepoName};
            let repo = RepoName::parse(&format!("p/{name}")).expect("repo");
            let tgz = format!("archive of {name} {v} #{variant}").into_bytes();
            let tgz_d = Digest::of(Algorithm::Sha256, &tgz);
            let config = serde_json::json!({
                "name": name, "version": v, "apiVersion": "v2",
                "description": format!("variant {variant}: \"x\"\n- y"),
                "keywords": ["a", "1.0"],
                "maintainers": [{"name": "m", "email": "e"}],
            })
            .to_string();
            let cfg_d = Digest::of(Algorithm::Sha256, config.as_bytes());
            self.engine.put_blob(&repo, &tgz_d, &tgz).expect("put tgz");
            self.engine
                .put_blob(&repo, &cfg_d, config.as_bytes())
                .expect("put config");
            let body = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json",
                           "digest": cfg_d.as_str(), "size": config.len()},
                "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
                            "digest": tgz_d.as_str(), "size": tgz.len()}],
            });
            let put = ManifestPut {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body: serde_json::to_vec(&body).expect("json"),
                blobs: vec![cfg_d, tgz_d.clone()],
                artifact_type: Some("application/vnd.cncf.helm.config.v1+json".into()),
                chart: Some(ChartEntry {
                    name: name.into(),
                    version: v.into(),
                    metadata: config,
                    chart: ChartBlob {
                        digest: tgz_d,
                        size: tgz.len() as u64,
                    },
                    prov: None,
                    write,
                }),
                ..ManifestPut::default()
            };
            match self.engine.put_manifest(&repo, put) {
                Ok(_) | Err(berth_engine::ManifestError::ChartExists { .. }) => {}
                Err(e) => panic!("put {name} {v}: {e}"),
            }
        }

        /// The full render of the current state: the reference.
        fn full(&self) -> (u64, Bytes) {
            let (rec, versions) = self.engine.chart_index(&self.project).expect("chart index");
            let g = rec.generation;
            (g, render(&[("p".into(), rec, versions)], false))
        }

        /// The handler's path: a splice from `prev` (or a full build).
        fn splice(&self, prev: Option<&Rendered>) -> (Rendered, bool) {
            let (rec, delta) = self
                .engine
                .chart_index_since(&self.project, since(prev))
                .expect("chart index since");
            let spliced = matches!(delta, ChartIndexDelta::Charts(_));
            (splice(prev, "p", rec, delta), spliced)
        }
    }

    fn gunzip(b: &[u8]) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    /// The spliced document (and its spliced gzip) against a full render
    /// of the same generation.
    fn check(repo: &Repo, r: &Rendered) {
        let (g, full) = repo.full();
        assert_eq!(r.key, vec![("p".to_owned(), g)]);
        let body = r.parts.concat();
        assert_eq!(r.size(), body.len());
        assert_eq!(
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&full),
            "splice differs from the full render at generation {g}"
        );
        assert_eq!(body, full.to_vec());
        assert_eq!(gunzip(&r.gzip()), full.to_vec(), "spliced gzip");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Create(usize, usize),
        Replace(usize, usize, u8),
        DeleteVersion(usize, usize),
        DeleteChart(usize),
        /// The version's tag deleted over the OCI API.
        Untag(usize, usize),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let n = 0..NAMES.len();
        let v = 0..VERSIONS.len();
        prop_oneof![
            4 => (n.clone(), v.clone()).prop_map(|(n, v)| Op::Create(n, v)),
            3 => (n.clone(), v.clone(), any::<u8>()).prop_map(|(n, v, x)| Op::Replace(n, v, x)),
            2 => (n.clone(), v.clone()).prop_map(|(n, v)| Op::DeleteVersion(n, v)),
            1 => n.clone().prop_map(Op::DeleteChart),
            1 => (n, v).prop_map(|(n, v)| Op::Untag(n, v)),
        ]
    }

    fn apply(repo: &Repo, op: &Op) {
        use berth_engine::ChartWrite;
        match *op {
            Op::Create(n, v) => repo.put(NAMES[n], VERSIONS[v], 0, ChartWrite::Create),
            Op::Replace(n, v, x) => repo.put(NAMES[n], VERSIONS[v], x, ChartWrite::Replace),
            Op::DeleteVersion(n, v) => {
                repo.engine
                    .delete_charts(&repo.project, NAMES[n], Some(VERSIONS[v]))
                    .expect("delete version");
            }
            Op::DeleteChart(n) => {
                repo.engine
                    .delete_charts(&repo.project, NAMES[n], None)
                    .expect("delete chart");
            }
            Op::Untag(n, v) => {
                let r = berth_engine::RepoName::parse(&format!("p/{}", NAMES[n])).expect("repo");
                let tag = berth_engine::Tag::parse(&VERSIONS[v].replace('+', "_")).expect("tag");
                repo.engine.delete_tag(&r, &tag).expect("delete tag");
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 24,
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../proptest-regressions/chart_index_splice.txt"
                )),
            )),
            ..proptest::test_runner::Config::default()
        })]

        /// After every change, the index spliced from the last render a
        /// reader kept (`keep`: whether this step's render becomes the
        /// base, so a splice may span several changes) is byte for byte
        /// the full render, and its gzip decodes to it.
        #[test]
        fn splice_matches_full_render(
            steps in proptest::collection::vec((op(), proptest::bool::weighted(0.7)), 1..30)
        ) {
            let repo = Repo::new();
            let (first, spliced) = repo.splice(None);
            proptest::prop_assert!(!spliced, "no base: a full build");
            check(&repo, &first);
            let mut base = first;
            for (op, keep) in &steps {
                apply(&repo, op);
                let (r, spliced) = repo.splice(Some(&base));
                proptest::prop_assert!(spliced, "a base within the record's changes splices");
                check(&repo, &r);
                if *keep {
                    base = r;
                }
            }
        }
    }

    /// More changes between two reads than the record remembers: the
    /// reader cannot tell which charts changed and rebuilds them all;
    /// then splices again.
    #[test]
    fn too_many_changes_rebuild_then_splice() {
        use berth_engine::ChartWrite;
        let repo = Repo::new();
        repo.put("alpha", "1.0.0", 0, ChartWrite::Create);
        let (base, _) = repo.splice(None);
        for i in 0..=berth_engine::CHART_CHANGES_KEPT {
            repo.put("beta-x", "1.0.0", i as u8, ChartWrite::Replace);
        }
        let (r, spliced) = repo.splice(Some(&base));
        assert!(!spliced, "the changes since the base are not all known");
        check(&repo, &r);
        repo.put("z1", "0.1.0", 0, ChartWrite::Create);
        let (r2, spliced) = repo.splice(Some(&r));
        assert!(spliced);
        // The unchanged charts' bytes were copied, not re-rendered: their
        // deflate streams are shared with the previous generation's.
        r.gzip();
        let (a, b) = (
            &r.pieces.as_ref().unwrap().charts,
            &r2.pieces.as_ref().unwrap().charts,
        );
        assert!(Arc::ptr_eq(&a["alpha"].deflated, &b["alpha"].deflated));
        assert!(b["z1"].deflated.get().is_none());
        check(&repo, &r2);
    }
}
