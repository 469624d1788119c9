//! `berthctl import distribution`: takes in the storage tree CNCF
//! distribution writes (and so Harbor, which runs it), from a filesystem
//! root. The layout, as distribution's `registry/storage/paths.go` defines
//! it, under `<root>/docker/registry/v2/`:
//!
//! ```text
//! blobs/<alg>/<first two hex>/<hex>/data                      every blob, manifests too
//! repositories/<name>/_layers/<alg>/<hex>/link                a blob linked in <name>
//! repositories/<name>/_manifests/revisions/<alg>/<hex>/link   a manifest in <name>
//! repositories/<name>/_manifests/tags/<tag>/current/link      what <tag> names
//! repositories/<name>/_uploads/…                              uploads in progress (ignored)
//! ```
//!
//! Each link file holds a digest. The import goes through the engine's
//! own operations, so every invariant a push keeps holds: a blob's bytes go
//! through an upload session (hashed while copied: a damaged blob fails its
//! digest and is reported), a blob already stored is mounted (metadata
//! only), each manifest is parsed by the server's parser and put with the
//! tags naming it, children before the indexes that list them. Everything
//! is idempotent, so an import killed halfway and started again skips what
//! is there and copies no byte twice. Problems (a damaged or missing blob, a
//! dangling tag, a corrupt link, a manifest berth refuses) are reported with
//! their paths and the import goes on; schema 1 manifests are counted and
//! skipped (berth stores schema 2 and OCI only).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_engine::{Digest, Engine, ManifestError, ManifestPut, RepoName, Tag, UploadError};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

/// Bytes read from a blob file per upload write.
const CHUNK: usize = 4 << 20;

/// Largest manifest read (the server's push limit).
const MAX_MANIFEST: u64 = berth_wire::manifest::MAX_MANIFEST_BYTES as u64;

/// One thing the import could not take in, and where it is.
#[derive(Debug)]
pub struct Problem {
    pub path: PathBuf,
    pub problem: String,
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Report {
    pub repositories: u64,
    pub tags: u64,
    pub manifests: u64,
    /// Blobs whose bytes were copied.
    pub blobs_copied: u64,
    pub bytes_copied: u64,
    /// Blob links that needed no bytes: the blob was already stored (by an
    /// earlier repository or an earlier run).
    pub blobs_mounted: u64,
    /// Links, manifests and tags already in place (an earlier run).
    pub already_present: u64,
    pub schema1_skipped: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "repositories": self.repositories,
            "tags": self.tags,
            "manifests": self.manifests,
            "blobs_copied": self.blobs_copied,
            "bytes_copied": self.bytes_copied,
            "blobs_mounted": self.blobs_mounted,
            "already_present": self.already_present,
            "schema1_skipped": self.schema1_skipped,
            "problems": problems_json(&self.problems),
        })
    }

    fn problem(&mut self, path: &Path, problem: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            problem: problem.into(),
        });
    }
}

/// A repository of the tree, as its links name it.
struct Repo {
    name: RepoName,
    dir: PathBuf,
    layers: Vec<(Digest, PathBuf)>,
    revisions: Vec<(Digest, PathBuf)>,
    /// Tag → (target, its link file).
    tags: BTreeMap<Tag, (Digest, PathBuf)>,
}

/// The distribution storage tree at `root` (the directory holding
/// `docker/`, distribution's `rootdirectory`).
pub struct Tree {
    v2: PathBuf,
}

impl Tree {
    pub fn open(root: &Path) -> Result<Tree, String> {
        let v2 = root.join("docker/registry/v2");
        if !v2.join("repositories").is_dir() {
            return Err(format!(
                "{} is not a distribution storage root (no docker/registry/v2/repositories)",
                root.display()
            ));
        }
        Ok(Tree { v2 })
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.v2
            .join("blobs")
            .join(d.algorithm().name())
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Every repository, by name; a directory whose name is not a valid
    /// repository name is a problem.
    fn repos(&self, report: &mut Report) -> Vec<Repo> {
        let mut out = Vec::new();
        let base = self.v2.join("repositories");
        let mut dirs = vec![base.clone()];
        while let Some(dir) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                report.problem(&dir, "cannot be read");
                continue;
            };
            let mut is_repo = false;
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name == "_manifests" || name == "_layers" {
                    is_repo = true;
                } else if !name.starts_with('_') && e.path().is_dir() {
                    dirs.push(e.path());
                }
            }
            if !is_repo {
                continue;
            }
            let rel = dir.strip_prefix(&base).unwrap_or(&dir).to_string_lossy();
            match RepoName::parse(&rel) {
                Ok(name) => out.push(self.repo(name, dir, report)),
                Err(e) => report.problem(&dir, format!("not a repository name berth accepts: {e}")),
            }
        }
        out.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        out
    }

    fn repo(&self, name: RepoName, dir: PathBuf, report: &mut Report) -> Repo {
        let layers = links_under(&dir.join("_layers"), report);
        let revisions = links_under(&dir.join("_manifests/revisions"), report);
        let mut tags = BTreeMap::new();
        let tags_dir = dir.join("_manifests/tags");
        for e in read_dir_sorted(&tags_dir) {
            let link = e.join("current/link");
            let tag_name = e.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(Ok(tag)) = tag_name.as_deref().map(Tag::parse) else {
                report.problem(&e, "not a tag name berth accepts");
                continue;
            };
            match read_link(&link) {
                Ok(d) => {
                    tags.insert(tag, (d, link));
                }
                Err(p) => report.problem(&link, p),
            }
        }
        Repo {
            name,
            dir,
            layers,
            revisions,
            tags,
        }
    }
}

/// The link files `<dir>/<alg>/<hex>/link`, each checked against its path.
fn links_under(dir: &Path, report: &mut Report) -> Vec<(Digest, PathBuf)> {
    let mut out = Vec::new();
    for alg in read_dir_sorted(dir) {
        for entry in read_dir_sorted(&alg) {
            let link = entry.join("link");
            let named = format!(
                "{}:{}",
                alg.file_name().unwrap_or_default().to_string_lossy(),
                entry.file_name().unwrap_or_default().to_string_lossy()
            );
            match read_link(&link) {
                Ok(d) if d.as_str() == named => out.push((d, link)),
                Ok(d) => report.problem(&link, format!("holds {d}, but its path names {named}")),
                Err(p) => report.problem(&link, p),
            }
        }
    }
    out
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The digest a link file holds.
fn read_link(path: &Path) -> Result<Digest, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("corrupt link: {e}"))?;
    Digest::parse(text.trim()).map_err(|e| format!("corrupt link: {e}"))
}

/// Progress on stderr: bars for items and bytes on a terminal, a plain
/// line every few seconds otherwise.
struct Progress {
    items: ProgressBar,
    bytes: ProgressBar,
    plain: bool,
    last: Instant,
}

impl Progress {
    fn new(items: u64, bytes: u64) -> Progress {
        let plain = !std::io::stderr().is_terminal();
        let multi = MultiProgress::new();
        let style = |t: &str| {
            ProgressStyle::with_template(t).unwrap_or_else(|_| ProgressStyle::default_bar())
        };
        let i = multi.add(ProgressBar::new(items));
        i.set_style(style("items {bar:40} {pos}/{len} {msg}"));
        let b = multi.add(ProgressBar::new(bytes));
        b.set_style(style(
            "bytes {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ));
        if plain {
            i.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            b.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        Progress {
            items: i,
            bytes: b,
            plain,
            last: Instant::now(),
        }
    }

    fn item(&mut self, what: &str) {
        self.items.inc(1);
        self.items.set_message(what.to_owned());
        self.tick();
    }

    fn bytes(&mut self, n: u64) {
        self.bytes.inc(n);
        self.tick();
    }

    fn tick(&mut self) {
        if self.plain && self.last.elapsed() >= Duration::from_secs(5) {
            self.last = Instant::now();
            self.line();
        }
    }

    fn line(&self) {
        eprintln!(
            "import: {}/{} items, {}/{} bytes",
            self.items.position(),
            self.items.length().unwrap_or(0),
            self.bytes.position(),
            self.bytes.length().unwrap_or(0)
        );
    }

    fn finish(&self) {
        self.items.finish_and_clear();
        self.bytes.finish_and_clear();
        if self.plain {
            self.line();
        }
    }
}

/// Why an import stopped: the engine failed, not the source (whose
/// problems are reported and skipped).
#[derive(Debug)]
pub struct Fatal(pub String);

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Fatal {
    fn from(e: E) -> Fatal {
        Fatal(e.to_string())
    }
}

/// Imports every repository of `tree` into `engine`.
pub fn import_distribution(engine: &Engine, tree: &Tree) -> Result<Report, Fatal> {
    let mut report = Report::default();
    let repos = tree.repos(&mut report);
    let items: u64 = repos
        .iter()
        .map(|r| (r.layers.len() + r.revisions.len()) as u64)
        .sum();
    let mut distinct = BTreeSet::new();
    let bytes: u64 = repos
        .iter()
        .flat_map(|r| r.layers.iter())
        .filter(|(d, _)| distinct.insert(d.clone()))
        .filter_map(|(d, _)| std::fs::metadata(tree.blob_path(d)).ok())
        .map(|m| m.len())
        .sum();
    let mut progress = Progress::new(items, bytes);
    for repo in &repos {
        report.repositories += 1;
        import_repo(engine, tree, repo, &mut report, &mut progress)?;
    }
    progress.finish();
    Ok(report)
}

fn import_repo(
    engine: &Engine,
    tree: &Tree,
    repo: &Repo,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), Fatal> {
    for (d, link) in &repo.layers {
        progress.item(repo.name.as_str());
        import_blob(engine, tree, &repo.name, d, link, report, progress)?;
    }
    // Read and parse every revision; schema 1 and refused ones drop out.
    let mut pending: BTreeMap<Digest, ManifestPut> = BTreeMap::new();
    for (d, link) in &repo.revisions {
        progress.item(repo.name.as_str());
        if let Some(put) = read_manifest(tree, d, link, report) {
            pending.insert(d.clone(), put);
        }
    }
    let mut tagged: BTreeMap<Digest, Vec<Tag>> = BTreeMap::new();
    for (tag, (d, link)) in &repo.tags {
        if pending.contains_key(d) {
            tagged.entry(d.clone()).or_default().push(tag.clone());
        } else if !repo.revisions.iter().any(|(r, _)| r == d) {
            report.problem(
                link,
                format!("dangling tag {tag}: {d} is not a manifest of {}", repo.name),
            );
        } else {
            report.problem(
                link,
                format!("tag {tag} not imported: its manifest {d} was not"),
            );
        }
    }
    // Children before the indexes listing them: put what is ready, pass
    // after pass, until nothing more can go in.
    let mut done: BTreeSet<Digest> = BTreeSet::new();
    loop {
        let ready: Vec<Digest> = pending
            .iter()
            .filter(|(_, p)| {
                p.manifests
                    .iter()
                    .all(|c| done.contains(c) || !pending.contains_key(c))
            })
            .map(|(d, _)| d.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for d in ready {
            let Some(mut put) = pending.remove(&d) else {
                continue;
            };
            put.tags = tagged.remove(&d).unwrap_or_default();
            let ntags = put.tags.len() as u64;
            let path = revision_link(repo, &d);
            match engine.put_manifest(&repo.name, put) {
                Ok(_) => {
                    report.manifests += 1;
                    report.tags += ntags;
                    done.insert(d);
                }
                Err(ManifestError::Storage(e)) => return Err(e.into()),
                Err(e) => report.problem(&path, format!("manifest {d} not imported: {e}")),
            }
        }
    }
    for (d, _) in pending {
        let path = revision_link(repo, &d);
        report.problem(
            &path,
            format!("manifest {d} not imported: it lists itself through its children"),
        );
    }
    Ok(())
}

fn revision_link(repo: &Repo, d: &Digest) -> PathBuf {
    repo.revisions
        .iter()
        .find(|(r, _)| r == d)
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| repo.dir.clone())
}

/// The manifest `d` as the server would take it, or `None` (a problem or
/// a schema 1 manifest, counted).
fn read_manifest(tree: &Tree, d: &Digest, link: &Path, report: &mut Report) -> Option<ManifestPut> {
    let path = tree.blob_path(d);
    let body = match std::fs::metadata(&path) {
        Ok(m) if m.len() > MAX_MANIFEST => {
            report.problem(
                &path,
                format!("manifest {d} is {} bytes, over berth's limit", m.len()),
            );
            return None;
        }
        Ok(_) => match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                report.problem(&path, format!("manifest {d} cannot be read: {e}"));
                return None;
            }
        },
        Err(_) => {
            report.problem(
                link,
                format!(
                    "manifest {d} is linked but its blob is missing ({})",
                    path.display()
                ),
            );
            return None;
        }
    };
    if Digest::of(d.algorithm(), &body) != *d {
        report.problem(
            &path,
            format!("manifest {d} is damaged: its bytes do not hash to its digest"),
        );
        return None;
    }
    if serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("schemaVersion").and_then(|s| s.as_u64()))
        == Some(1)
    {
        report.schema1_skipped += 1;
        return None;
    }
    match berth_wire::manifest::parse(None, body) {
        Ok(p) => Some(ManifestPut {
            media_type: p.media_type,
            body: p.body,
            blobs: p.blobs,
            blob_sizes: p.blob_sizes,
            manifests: p.manifests,
            subject: p.subject,
            artifact_type: p.artifact_type,
            annotations: p.annotations,
            ..ManifestPut::default()
        }),
        Err(e) => {
            report.problem(&path, format!("manifest {d} refused: {e}"));
            None
        }
    }
}

/// Links blob `d` into `repo`: nothing if it is there, a mount if the blob
/// is stored, else its bytes copied through an upload session (hashed as
/// they go; a mismatch cancels the session and is a problem).
fn import_blob(
    engine: &Engine,
    tree: &Tree,
    repo: &RepoName,
    d: &Digest,
    link: &Path,
    report: &mut Report,
    progress: &mut Progress,
) -> Result<(), Fatal> {
    if engine.stat_blob(repo, d)?.is_some() {
        report.already_present += 1;
        return Ok(());
    }
    if let Some(info) = engine.mount_blob(repo, d, None)? {
        report.blobs_mounted += 1;
        progress.bytes(info.size);
        return Ok(());
    }
    let path = tree.blob_path(d);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(_) => {
            report.problem(
                link,
                format!("blob {d} is linked but missing ({})", path.display()),
            );
            return Ok(());
        }
    };
    let status = engine.begin_upload(repo, d.algorithm())?;
    let mut w = engine.upload_writer(repo, &status.id, Some(0))?;
    let mut buf = vec![0u8; CHUNK];
    let mut copied = 0u64;
    loop {
        let n = match read_full(&mut file, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                drop(w);
                let _ = engine.cancel_upload(repo, &status.id);
                report.problem(&path, format!("blob {d} cannot be read: {e}"));
                return Ok(());
            }
        };
        if n == 0 {
            break;
        }
        w.write(&buf[..n])?;
        copied += n as u64;
        progress.bytes(n as u64);
    }
    match w.complete(d, None) {
        Ok(_) => {
            report.blobs_copied += 1;
            report.bytes_copied += copied;
        }
        Err(UploadError::DigestMismatch { actual, .. }) => {
            let _ = engine.cancel_upload(repo, &status.id);
            report.problem(
                &path,
                format!("blob {d} is damaged: its bytes hash to {actual}"),
            );
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Fills `buf` from `r` as far as it goes; the count read (0 at the end).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What `berthctl import chartmuseum` did.
#[derive(Debug, Default)]
pub struct ChartReport {
    pub projects: u64,
    pub charts: u64,
    /// Versions already stored with the same archive (an earlier run).
    pub already_present: u64,
    pub problems: Vec<Problem>,
}

impl ChartReport {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "projects": self.projects,
            "charts": self.charts,
            "already_present": self.already_present,
            "problems": problems_json(&self.problems),
        })
    }
}

fn problems_json(problems: &[Problem]) -> Vec<serde_json::Value> {
    problems
        .iter()
        .map(|p| json!({"path": p.path.display().to_string(), "problem": p.problem}))
        .collect()
}

/// Imports ChartMuseum's storage (what Harbor's chart repository keeps):
/// `<from>/<project>/<name>-<version>.tgz`, each with its `.tgz.prov` if
/// there is one; archives directly in `<from>` (a single-tenant
/// ChartMuseum) go to `default_project`. Each archive is checked and stored
/// exactly as a chart upload through the API is
/// ([`berth_server::charts::save_chart`]); a version already stored with
/// the same archive is skipped, so a second run resumes the first.
pub fn import_chartmuseum(
    engine: &Engine,
    from: &Path,
    default_project: Option<&RepoName>,
) -> Result<ChartReport, Fatal> {
    let mut report = ChartReport::default();
    let mut dirs: Vec<(Option<RepoName>, PathBuf)> =
        vec![(default_project.cloned(), from.to_owned())];
    for d in read_dir_sorted(from).into_iter().filter(|p| p.is_dir()) {
        let name = d
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        match RepoName::parse(&name) {
            Ok(p) if !name.contains('/') => dirs.push((Some(p), d)),
            _ => report.problems.push(Problem {
                path: d.clone(),
                problem: "not a project name berth accepts".into(),
            }),
        }
    }
    let limits = berth_wire::charts::package::Limits::default();
    for (project, dir) in dirs {
        let archives: Vec<PathBuf> = read_dir_sorted(&dir)
            .into_iter()
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "tgz"))
            .collect();
        if archives.is_empty() {
            continue;
        }
        let Some(project) = project else {
            for a in archives {
                report.problems.push(Problem {
                    path: a,
                    problem: "a chart outside any project directory (give --project)".into(),
                });
            }
            continue;
        };
        report.projects += 1;
        for path in archives {
            import_chart(engine, &project, &path, &limits, &mut report)?;
        }
    }
    Ok(report)
}

fn import_chart(
    engine: &Engine,
    project: &RepoName,
    path: &Path,
    limits: &berth_wire::charts::package::Limits,
    report: &mut ChartReport,
) -> Result<(), Fatal> {
    let mut problem = |p: String| {
        report.problems.push(Problem {
            path: path.to_owned(),
            problem: p,
        })
    };
    let chart = match std::fs::read(path) {
        Ok(c) => c,
        Err(e) => {
            problem(format!("cannot be read: {e}"));
            return Ok(());
        }
    };
    let prov_path = PathBuf::from(format!("{}.prov", path.display()));
    let prov = std::fs::read(&prov_path).ok();
    let meta = match berth_wire::charts::package::inspect(&chart, limits) {
        Ok(p) => p.metadata,
        Err(e) => {
            problem(format!("not a chart berth accepts: {e}"));
            return Ok(());
        }
    };
    let stored = berth_engine::ChartId::parse(project.as_str(), &meta.name, &meta.version)
        .ok()
        .map(|id| engine.get_chart(&id))
        .transpose()?
        .flatten();
    if let Some(rec) = stored {
        if rec.chart.digest == Digest::of(berth_engine::Algorithm::Sha256, &chart) {
            report.already_present += 1;
        } else {
            problem(format!(
                "{} {} is stored with another archive; not replaced",
                meta.name, meta.version
            ));
        }
        return Ok(());
    }
    let write = berth_engine::ChartWrite::Create;
    match berth_server::charts::save_chart(engine, project, &chart, prov.as_deref(), write, limits)
    {
        Ok(()) => report.charts += 1,
        Err(e) if e.code == berth_server::errors::Code::Internal => {
            return Err(Fatal(e.internal.unwrap_or_default()));
        }
        Err(e) => problem(format!(
            "refused: {}",
            e.detail.as_deref().unwrap_or("not a valid chart")
        )),
    }
    Ok(())
}
