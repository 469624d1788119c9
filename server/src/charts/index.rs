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
//! made on first demand); any change makes the next GET re-render from the
//! index. The cache is bounded by a byte budget; least recently used
//! projects are dropped first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use berth_engine::{ChartRepoRecord, ChartVersion};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::time::rfc3339_ms;

/// One rendered `index.yaml`.
pub struct Rendered {
    /// The generation(s) it was rendered from: one project's, or for the
    /// global index every project's.
    pub key: Vec<(String, u64)>,
    pub body: Bytes,
    /// Gzip of `body`, made on first demand.
    gzip: OnceLock<Bytes>,
    /// Strong validator: derived from `key` and the update time.
    pub etag: String,
    /// Time of the last change, for `Last-Modified`.
    pub modified_ms: u64,
}

impl Rendered {
    pub fn new(key: Vec<(String, u64)>, body: Bytes, modified_ms: u64) -> Rendered {
        let mut tag = String::from("\"i");
        for (_, g) in &key {
            tag.push_str(&format!("-{g:x}"));
        }
        tag.push_str(&format!("-{modified_ms:x}-{:x}\"", body.len()));
        Rendered {
            key,
            body,
            gzip: OnceLock::new(),
            etag: tag,
            modified_ms,
        }
    }

    /// The gzip-compressed body (compressed once, then shared).
    pub fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                use std::io::Write;
                let mut enc = flate2::write::GzEncoder::new(
                    Vec::with_capacity(self.body.len() / 8),
                    flate2::Compression::fast(),
                );
                // Writing to a Vec cannot fail.
                let _ = enc.write_all(&self.body);
                Bytes::from(enc.finish().unwrap_or_default())
            })
            .clone()
    }

    fn cost(&self) -> usize {
        self.body.len() + self.gzip.get().map_or(0, Bytes::len) + 256
    }
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
    let mut by_name: BTreeMap<String, Vec<(Option<semver::Version>, &ChartVersion)>> =
        BTreeMap::new();
    for v in versions {
        by_name
            .entry(format!("{key_prefix}{}", v.name))
            .or_default()
            .push((
                berth_wire::charts::package::lenient_version(&v.version).ok(),
                v,
            ));
    }
    by_name
        .into_iter()
        .map(|(k, mut vs)| {
            vs.sort_by(|(a, av), (b, bv)| match (a, b) {
                (Some(a), Some(b)) => b.cmp(a),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => bv.version.cmp(&av.version),
            });
            (k, vs.into_iter().map(|(_, v)| v).collect())
        })
        .collect()
}

/// Renders an `index.yaml` of `projects` (each: name, state, versions).
/// With one project, entries are chart names and URLs are relative to that
/// project's repository; with `global`, entries are `project/name` and
/// URLs `project/charts/…`, relative to `/chartrepo/` (Harbor's layout).
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
    out.push_str("apiVersion: v1\nentries:");
    let mut any = false;
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
        any = true;
        out.push_str("\n  ");
        write_key(&mut out, key);
        out.push(':');
        for v in versions {
            out.push_str("\n  - ");
            let m = entry_value(v, url_prefix);
            write_map(&mut out, &m, 4, true);
            // write_map ends with a newline; entries are joined by "\n  - ".
            out.pop();
        }
    }
    if !any {
        out.push_str(" {}");
    }
    let updated = projects
        .iter()
        .map(|(_, r, _)| r.updated_ms)
        .max()
        .unwrap_or(0);
    out.push_str("\ngenerated: ");
    write_str(&mut out, &rfc3339_ms(updated));
    out.push('\n');
    Bytes::from(out)
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
}
