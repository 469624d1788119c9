//! Chart archives: validation of an uploaded `.tgz` and its `Chart.yaml`,
//! and the chart metadata in the two forms Helm uses (the Chart.yaml
//! fields, and the same as the JSON object of an OCI chart config).
//!
//! Everything here treats its input as hostile: the gzip stream is read
//! through a byte budget, the tar entry count is capped, `Chart.yaml` has a
//! size cap and is parsed by serde_yaml (which refuses runaway alias
//! expansion), and nothing input-derived is unwrapped.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Deserializer, Serialize};

/// Bounds on what an uploaded chart may expand to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted chart archive (compressed), bytes.
    pub max_chart_bytes: usize,
    /// Largest total size of the decompressed tar stream, bytes.
    pub max_unpacked_bytes: u64,
    /// Most tar entries accepted.
    pub max_entries: usize,
    /// Largest `Chart.yaml`, bytes.
    pub max_chart_yaml_bytes: u64,
    /// Largest provenance file, bytes.
    pub max_prov_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_chart_bytes: 20 << 20,
            // Helm's own default cap on a decompressed chart.
            max_unpacked_bytes: 100 << 20,
            max_entries: 10_000,
            max_chart_yaml_bytes: 256 << 10,
            max_prov_bytes: 1 << 20,
        }
    }
}

/// Why a chart was refused (each a 400 with this message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PackageError {
    #[error("the chart is not a gzip-compressed tar archive (no gzip header)")]
    NotGzip,
    #[error("the chart archive is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the chart archive expands to more than {0} bytes")]
    UnpackedTooLarge(u64),
    #[error("the chart archive has more than {0} entries")]
    TooManyEntries(usize),
    #[error("the chart archive is corrupt: {0}")]
    Corrupt(String),
    #[error("the chart archive has an unsafe entry path {0:?}")]
    UnsafePath(String),
    #[error("the chart archive entry {0:?} is a link; charts may hold only files and directories")]
    Link(String),
    #[error("the chart archive holds more than one top-level directory ({0:?} and {1:?})")]
    TopLevel(String, String),
    #[error("the chart archive has no {0}/Chart.yaml")]
    NoChartYaml(String),
    #[error("Chart.yaml is larger than {0} bytes")]
    ChartYamlTooLarge(u64),
    #[error("Chart.yaml: {0}")]
    ChartYaml(String),
    #[error("Chart.yaml: {0}")]
    Invalid(String),
    #[error("the chart is named {name:?} but its archive's top-level directory is {dir:?}")]
    DirMismatch { name: String, dir: String },
}

/// A `Chart.yaml` maintainer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintainer {
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub email: String,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub url: String,
}

/// A `Chart.yaml` dependency (Helm's `chart.Dependency` JSON form).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dependency {
    #[serde(default, deserialize_with = "string_like")]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub version: String,
    #[serde(default, deserialize_with = "string_like")]
    pub repository: String,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub condition: String,
    #[serde(
        default,
        deserialize_with = "strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub enabled: bool,
    #[serde(
        default,
        rename = "import-values",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub import_values: Vec<serde_json::Value>,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub alias: String,
}

/// Chart metadata: the fields of Helm's `chart.Metadata`, in its
/// declaration order, so the JSON form is the OCI chart config as Helm
/// writes it (`json.Marshal(chart.Metadata)`: empty fields omitted).
/// Unknown Chart.yaml keys are dropped, as Helm drops them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub home: String,
    #[serde(
        default,
        deserialize_with = "strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub sources: Vec<String>,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub version: String,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub description: String,
    #[serde(
        default,
        deserialize_with = "strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub keywords: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub maintainers: Vec<Maintainer>,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub icon: String,
    #[serde(
        default,
        rename = "apiVersion",
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub condition: String,
    #[serde(
        default,
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub tags: String,
    #[serde(
        default,
        rename = "appVersion",
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub app_version: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub deprecated: bool,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(
        default,
        rename = "kubeVersion",
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub kube_version: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dependencies: Vec<Dependency>,
    #[serde(
        default,
        rename = "type",
        deserialize_with = "string_like",
        skip_serializing_if = "String::is_empty"
    )]
    pub chart_type: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A string field that YAML may have written as a number or boolean
/// (`appVersion: 1.10`), kept as written: a plain scalar is asked for as
/// a string, which gives its text (`1.10`, not the float `1.1`), as Helm's
/// own Chart.yaml loading keeps it. Null is empty; a number or boolean
/// from a deserializer that has no text for it is printed.
fn string_like<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl<'de> serde::de::Visitor<'de> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string, number, boolean or null")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
            Ok(v)
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<String, D2::Error> {
            d.deserialize_str(Text)
        }
    }
    d.deserialize_option(Text)
}

/// `version` as Helm reads it (Masterminds' `semver.NewVersion`, which
/// Helm's chart validation uses): an optional leading `v`, one to three
/// numeric components (missing ones are 0), then SemVer's pre-release and
/// build parts. `v1.2` is 1.2.0. The string itself is kept as written.
pub fn lenient_version(text: &str) -> Result<semver::Version, String> {
    let bare = text.strip_prefix('v').unwrap_or(text);
    let split = bare.find(['-', '+']).unwrap_or(bare.len());
    let (core, rest) = bare.split_at(split);
    let parts: Vec<&str> = core.split('.').collect();
    let numeric =
        |p: &&str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
    if parts.is_empty() || parts.len() > 3 || !parts.iter().all(numeric) {
        return Err(format!(
            "{text:?} is not a version Helm accepts (v?MAJOR[.MINOR[.PATCH]][-PRE][+BUILD])"
        ));
    }
    let mut nums = [0u64; 3];
    for (n, p) in nums.iter_mut().zip(&parts) {
        *n = p.parse().map_err(|e| format!("{text:?}: {e}"))?;
    }
    semver::Version::parse(&format!("{}.{}.{}{rest}", nums[0], nums[1], nums[2]))
        .map_err(|e| format!("{text:?} is not a version Helm accepts: {e}"))
}

/// A list of strings; null is empty.
fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "string_like")] String);
    Ok(Option::<Vec<W>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.0)
        .collect())
}

/// Null is the default.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Metadata {
    /// The OCI chart config: this metadata as Helm's JSON.
    pub fn to_config_json(&self) -> String {
        // Plain strings, vectors and maps of them: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Checks what Helm and the chart repository require: a name that is
    /// a valid OCI repository component, a version Helm accepts
    /// ([`lenient_version`]), and a known `apiVersion`.
    pub fn validate(&self) -> Result<semver::Version, PackageError> {
        let invalid = |m: String| PackageError::Invalid(m);
        if self.name.is_empty() {
            return Err(invalid("name is required".into()));
        }
        if self.version.is_empty() {
            return Err(invalid("version is required".into()));
        }
        if !matches!(self.api_version.as_str(), "v1" | "v2") {
            return Err(invalid(format!(
                "apiVersion must be v1 or v2, not {:?}",
                self.api_version
            )));
        }
        let version =
            lenient_version(&self.version).map_err(|e| invalid(format!("version {e}")))?;
        berth_formats::names::ChartId::parse("p", &self.name, &self.version)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(version)
    }
}

/// A validated chart archive.
#[derive(Clone, Debug)]
pub struct Package {
    pub metadata: Metadata,
    pub version: semver::Version,
}

/// Counts bytes read through it and fails past a budget.
struct Budget<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Budget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(BudgetExceeded(self.limit)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
struct BudgetExceeded(u64);

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "decompressed size over {} bytes", self.0)
    }
}

impl std::error::Error for BudgetExceeded {}

fn io_error(e: std::io::Error) -> PackageError {
    if let Some(b) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<BudgetExceeded>())
    {
        return PackageError::UnpackedTooLarge(b.0);
    }
    PackageError::Corrupt(e.to_string())
}

/// Validates a chart archive and returns its metadata: gzip, then tar with
/// every entry under one top-level directory named like the chart, at most
/// `limits.max_entries` entries and `limits.max_unpacked_bytes` bytes, no
/// links, no absolute or `..` paths, and a valid `<dir>/Chart.yaml`.
pub fn inspect(tgz: &[u8], limits: &Limits) -> Result<Package, PackageError> {
    if tgz.len() > limits.max_chart_bytes {
        return Err(PackageError::TooLarge(limits.max_chart_bytes));
    }
    if tgz.len() < 2 || tgz[0] != 0x1f || tgz[1] != 0x8b {
        return Err(PackageError::NotGzip);
    }
    let gz = flate2::read::MultiGzDecoder::new(tgz);
    let stream = Budget {
        inner: gz,
        left: limits.max_unpacked_bytes,
        limit: limits.max_unpacked_bytes,
    };
    let mut archive = tar::Archive::new(stream);
    let mut top: Option<String> = None;
    let mut chart_yaml: Option<Vec<u8>> = None;
    let mut count = 0usize;
    for entry in archive.entries().map_err(io_error)? {
        let mut entry = entry.map_err(io_error)?;
        count += 1;
        if count > limits.max_entries {
            return Err(PackageError::TooManyEntries(limits.max_entries));
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let path = entry.path().map_err(io_error)?;
        let path = path.to_string_lossy().into_owned();
        if kind.is_symlink() || kind.is_hard_link() {
            return Err(PackageError::Link(path));
        }
        let mut comps = Vec::new();
        for c in path.split('/') {
            match c {
                "" | "." => {}
                ".." => return Err(PackageError::UnsafePath(path)),
                c => comps.push(c),
            }
        }
        if path.starts_with('/') || path.contains('\\') || comps.is_empty() {
            return Err(PackageError::UnsafePath(path));
        }
        let first = comps[0].to_owned();
        match &top {
            None => top = Some(first.clone()),
            Some(t) if *t != first => return Err(PackageError::TopLevel(t.clone(), first)),
            Some(_) => {}
        }
        if comps.len() == 2 && comps[1] == "Chart.yaml" && kind.is_file() {
            if entry.header().size().unwrap_or(u64::MAX) > limits.max_chart_yaml_bytes {
                return Err(PackageError::ChartYamlTooLarge(limits.max_chart_yaml_bytes));
            }
            let mut buf = Vec::new();
            (&mut entry)
                .take(limits.max_chart_yaml_bytes + 1)
                .read_to_end(&mut buf)
                .map_err(io_error)?;
            if buf.len() as u64 > limits.max_chart_yaml_bytes {
                return Err(PackageError::ChartYamlTooLarge(limits.max_chart_yaml_bytes));
            }
            chart_yaml = Some(buf);
        }
        // Other entries' bytes are skipped (still decompressed, so still
        // counted against the budget) when the iterator moves on.
    }
    let Some(dir) = top else {
        return Err(PackageError::Corrupt("the archive is empty".into()));
    };
    let Some(yaml) = chart_yaml else {
        return Err(PackageError::NoChartYaml(dir));
    };
    let metadata = parse_chart_yaml(&yaml, limits)?;
    let version = metadata.validate()?;
    if metadata.name != dir {
        return Err(PackageError::DirMismatch {
            name: metadata.name.clone(),
            dir,
        });
    }
    Ok(Package { metadata, version })
}

/// Parses `Chart.yaml`. serde_yaml 0.9 bounds alias expansion (a "billion
/// laughs" document fails with a repetition-limit error), and the input
/// size is capped before parsing.
pub fn parse_chart_yaml(yaml: &[u8], limits: &Limits) -> Result<Metadata, PackageError> {
    if yaml.len() as u64 > limits.max_chart_yaml_bytes {
        return Err(PackageError::ChartYamlTooLarge(limits.max_chart_yaml_bytes));
    }
    serde_yaml::from_slice::<Metadata>(yaml).map_err(|e| PackageError::ChartYaml(e.to_string()))
}

/// What a provenance file says about the chart it signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    pub name: String,
    pub version: String,
    /// `sha256:<hex>` of `name-version.tgz` from the `files:` section.
    pub digest: Option<String>,
}

/// Reads a Helm provenance file: a PGP clear-signed message whose body is
/// the chart's Chart.yaml, `...`, and a `files:` map of archive name to
/// `sha256:<hex>`. The signature itself is not checked (Helm verifies it
/// client side against the user's keyring).
pub fn inspect_prov(prov: &[u8], limits: &Limits) -> Result<Provenance, PackageError> {
    let bad = |m: &str| PackageError::Invalid(format!("provenance file: {m}"));
    if prov.len() > limits.max_prov_bytes {
        return Err(bad(&format!("larger than {} bytes", limits.max_prov_bytes)));
    }
    let text = std::str::from_utf8(prov).map_err(|_| bad("not UTF-8 text"))?;
    let body = text
        .split_once("-----BEGIN PGP SIGNED MESSAGE-----")
        .map(|(_, rest)| rest)
        .ok_or_else(|| bad("not a PGP clear-signed message"))?;
    let body = body
        .split_once("-----BEGIN PGP SIGNATURE-----")
        .map(|(b, _)| b)
        .ok_or_else(|| bad("no PGP signature"))?;
    // Armor headers ("Hash: SHA512") end at the first empty line.
    let body = body
        .trim_start_matches(['\r', '\n'])
        .split_once("\n\n")
        .map(|(_, b)| b)
        .ok_or_else(|| bad("no message body"))?;
    let mut docs = body.split("\n...\n");
    let chart = docs.next().unwrap_or_default();
    let metadata = parse_chart_yaml(chart.as_bytes(), limits)?;
    if metadata.name.is_empty() || metadata.version.is_empty() {
        return Err(bad("the signed Chart.yaml has no name or version"));
    }
    #[derive(Deserialize)]
    struct Files {
        #[serde(default)]
        files: BTreeMap<String, String>,
    }
    let file = format!("{}-{}.tgz", metadata.name, metadata.version);
    let digest = match docs.next() {
        Some(f) => serde_yaml::from_str::<Files>(f)
            .map_err(|e| bad(&format!("files section: {e}")))?
            .files
            .get(&file)
            .cloned(),
        None => None,
    };
    Ok(Provenance {
        name: metadata.name,
        version: metadata.version,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    const CHART: &[u8] =
        b"apiVersion: v2\nname: demo\nversion: 1.2.3\nappVersion: 1.10\ndescription: d\n";

    #[test]
    fn versions_as_helm_reads_them() {
        for (text, want) in [
            ("1.2.3", "1.2.3"),
            ("v1.2", "1.2.0"),
            ("1.2", "1.2.0"),
            ("2", "2.0.0"),
            ("v1.2.3-rc.1+b5", "1.2.3-rc.1+b5"),
            ("1.2-beta", "1.2.0-beta"),
        ] {
            assert_eq!(lenient_version(text).unwrap().to_string(), want, "{text}");
        }
        for bad in ["", "v", "1.2.3.4", "x1.2", "1..2", "1.2.3-", "1.a", "V1.2"] {
            assert!(lenient_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unquoted_numbers_keep_their_digits() {
        let yaml = b"apiVersion: v2\nname: demo\nversion: v1.2\nappVersion: 1.10\nkubeVersion: 1.20\ndeprecated: false\ncondition: true\ntags: ~\n";
        let m = parse_chart_yaml(yaml, &Limits::default()).unwrap();
        assert_eq!(m.app_version, "1.10");
        assert_eq!(m.kube_version, "1.20");
        assert_eq!(m.condition, "true");
        assert_eq!(m.tags, "");
        assert_eq!(m.version, "v1.2");
        assert_eq!(m.validate().unwrap(), semver::Version::new(1, 2, 0));
    }

    #[test]
    fn good_chart_and_config_json() {
        let p = inspect(
            &tgz(&[("demo/Chart.yaml", CHART), ("demo/values.yaml", b"a: 1\n")]),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(p.version, semver::Version::new(1, 2, 3));
        assert_eq!(
            p.metadata.to_config_json(),
            r#"{"name":"demo","version":"1.2.3","description":"d","apiVersion":"v2","appVersion":"1.10"}"#
        );
    }

    #[test]
    fn bad_charts() {
        let l = Limits::default();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"plain text".to_vec(), "gzip"),
            (tgz(&[("demo/values.yaml", b"a: 1")]), "no demo/Chart.yaml"),
            (tgz(&[("other/Chart.yaml", CHART)]), "top-level directory"),
            (
                tgz(&[(
                    "demo/Chart.yaml",
                    b"apiVersion: v2\nname: demo\nversion: 1.2.3.4\n",
                )]),
                "not a version Helm accepts",
            ),
            (
                tgz(&[(
                    "demo/Chart.yaml",
                    b"apiVersion: v2\nname: Demo_X\nversion: 1.2.0\n",
                )]),
                "name",
            ),
            (
                tgz(&[("demo/Chart.yaml", CHART), ("x/y", b"")]),
                "more than one",
            ),
            (tgz(&[("demo/Chart.yaml", b": : :\n\t-")]), "Chart.yaml"),
        ];
        for (data, want) in cases {
            let e = inspect(&data, &l).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
        let small = Limits {
            max_unpacked_bytes: 4096,
            ..Limits::default()
        };
        let big = vec![0u8; 64 << 10];
        let e = inspect(
            &tgz(&[("demo/Chart.yaml", CHART), ("demo/big", &big)]),
            &small,
        );
        assert_eq!(e.unwrap_err(), PackageError::UnpackedTooLarge(4096));
        let few = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let e = inspect(
            &tgz(&[("demo/Chart.yaml", CHART), ("demo/a", b""), ("demo/b", b"")]),
            &few,
        );
        assert_eq!(e.unwrap_err(), PackageError::TooManyEntries(2));
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut y = String::from(
            "apiVersion: v2\nname: demo\nversion: 1.0.0\na0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
        );
        for i in 1..10 {
            let p = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        // Unknown keys are skipped without expansion; where a value is
        // used, expansion hits serde_yaml's repetition limit.
        y.push_str("keywords: *a9\ndependencies:\n- name: d\n  import-values: *a9\n");
        let e = parse_chart_yaml(y.as_bytes(), &Limits::default()).unwrap_err();
        assert!(matches!(e, PackageError::ChartYaml(_)), "{e}");
    }

    #[test]
    fn provenance() {
        let prov = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\napiVersion: v2\nname: demo\nversion: 1.2.3\n\n...\nfiles:\n  demo-1.2.3.tgz: sha256:abc\n-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n";
        let p = inspect_prov(prov.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(p.name, "demo");
        assert_eq!(p.version, "1.2.3");
        assert_eq!(p.digest.as_deref(), Some("sha256:abc"));
        assert!(inspect_prov(b"hello", &Limits::default()).is_err());
    }
}
