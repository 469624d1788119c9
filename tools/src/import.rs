//! `berthctl import distribution`: takes in the storage tree CNCF
//! distribution writes (and so Harbor, which runs it), from a filesystem
//! root or a bucket's key prefix (its S3 driver). The layout, as distribution's `registry/storage/paths.go` defines
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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_engine::store::s3::MAX_COPY;
use berth_engine::store::{S3Config, S3Store, StoreError};
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
    /// Of those, blobs copied inside the bucket (berth's bucket is the
    /// tree's): read once to verify, never uploaded.
    pub blobs_copied_in_bucket: u64,
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
            "blobs_copied_in_bucket": self.blobs_copied_in_bucket,
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

/// A repository of the tree, as its links name it (paths below the
/// tree's `docker/registry/v2`).
#[derive(Default)]
struct Repo {
    layers: Vec<(Digest, String)>,
    revisions: Vec<(Digest, String)>,
    /// Tag → (target, its link file).
    tags: BTreeMap<Tag, (Digest, String)>,
}

/// Where a tree is read from.
enum Source {
    /// A filesystem directory: `<root>/docker/registry/v2`.
    Dir(PathBuf),
    /// A bucket, objects below `<root>/docker/registry/v2`; `url` names
    /// that prefix (`s3://bucket/root/docker/registry/v2`) in reports;
    /// `repositories` lists the files below `repositories/`, read once.
    Bucket {
        store: Box<S3Store>,
        url: String,
        repositories: Vec<String>,
    },
}

/// Why a file of the tree could not be read.
enum Unread {
    Missing,
    TooLarge(u64),
    Failed(String),
}

/// The distribution storage tree at a root (distribution's
/// `rootdirectory`, holding `docker/`): a filesystem directory or a
/// bucket's key prefix.
pub struct Tree {
    source: Source,
}

/// The components of a repository's files that end its name.
const REPO_PARTS: [&str; 3] = ["_layers", "_manifests", "_uploads"];

impl Tree {
    /// The tree below the directory `root`.
    pub fn open(root: &Path) -> Result<Tree, String> {
        let v2 = root.join("docker/registry/v2");
        if !v2.join("repositories").is_dir() {
            return Err(format!(
                "{} is not a distribution storage root (no docker/registry/v2/repositories)",
                root.display()
            ));
        }
        Ok(Tree {
            source: Source::Dir(v2),
        })
    }

    /// The tree below `config.root` in `config.bucket` (distribution's S3
    /// driver: its `bucket` and `rootdirectory`).
    pub fn open_bucket(mut config: S3Config) -> Result<Tree, String> {
        let root = config.root.trim_matches('/').to_owned();
        let origin = format!("s3://{}/{root}", config.bucket);
        config.root = [root.as_str(), "docker/registry/v2"]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        let url = format!("s3://{}/{}", config.bucket, config.root);
        let store = S3Store::open(config).map_err(|e| e.to_string())?;
        // One listing finds every repository file (distribution's uploads
        // in progress left out).
        let mut repositories: Vec<String> = store
            .objects_under("repositories")
            .map_err(|e| format!("{origin}: {e}"))?
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| !key.contains("/_uploads/"))
            .collect();
        if repositories.is_empty() {
            return Err(format!(
                "{origin} is not a distribution storage root (no docker/registry/v2/repositories)"
            ));
        }
        repositories.sort();
        Ok(Tree {
            source: Source::Bucket {
                store: Box::new(store),
                url,
                repositories,
            },
        })
    }

    /// Where `rel` (a path below `docker/registry/v2`) is, for reports.
    fn display(&self, rel: &str) -> PathBuf {
        match &self.source {
            Source::Dir(v2) => v2.join(rel),
            Source::Bucket { url, .. } => PathBuf::from(format!("{url}/{rel}")),
        }
    }

    /// Whether the tree is in `bucket` (the same endpoint and bucket):
    /// then its blobs can be copied inside the bucket.
    pub fn in_bucket(&self, bucket: Option<&S3Config>) -> bool {
        let endpoint = |c: &S3Config| c.endpoint.trim_end_matches('/').to_owned();
        match (&self.source, bucket) {
            (Source::Bucket { store, .. }, Some(b)) => {
                let c = store.config();
                c.bucket == b.bucket && endpoint(c) == endpoint(b)
            }
            _ => false,
        }
    }

    /// The key of `rel` from the bucket's root (a bucket tree).
    fn bucket_key(&self, rel: &str) -> Option<String> {
        match &self.source {
            Source::Bucket { store, .. } => Some(format!("{}/{rel}", store.config().root)),
            Source::Dir(_) => None,
        }
    }

    fn blob_path(d: &Digest) -> String {
        let hex = d.hex();
        format!("blobs/{}/{}/{hex}/data", d.algorithm().name(), &hex[..2])
    }

    /// Every file below `repositories/`, as paths below
    /// `docker/registry/v2`, sorted; uploads in progress (`_uploads`) left
    /// out. A directory that cannot be read is a problem, and the walk goes
    /// on.
    fn repository_files(&self, report: &mut Report) -> Vec<String> {
        let v2 = match &self.source {
            Source::Bucket { repositories, .. } => return repositories.clone(),
            Source::Dir(v2) => v2,
        };
        let mut out = Vec::new();
        let mut dirs = vec![v2.join("repositories")];
        while let Some(d) = dirs.pop() {
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) => {
                    report.problem(&d, format!("cannot be read: {e}"));
                    continue;
                }
            };
            for e in rd.flatten() {
                let path = e.path();
                if path.is_dir() {
                    if e.file_name() != "_uploads" {
                        dirs.push(path);
                    }
                } else if let Ok(rel) = path.strip_prefix(v2) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    /// The size of `rel`, if it is there.
    fn size(&self, rel: &str) -> Option<u64> {
        match &self.source {
            Source::Dir(v2) => std::fs::metadata(v2.join(rel)).ok().map(|m| m.len()),
            Source::Bucket { store, .. } => store.object_size(rel).ok().flatten(),
        }
    }

    /// The bytes of `rel`, at most `max` of them (a bucket's object in one
    /// GET).
    fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, Unread> {
        if let Source::Dir(v2) = &self.source {
            let path = v2.join(rel);
            let len = std::fs::metadata(&path).map_err(|_| Unread::Missing)?.len();
            if len > max {
                return Err(Unread::TooLarge(len));
            }
            return std::fs::read(&path).map_err(|e| Unread::Failed(e.to_string()));
        }
        let mut out = Vec::new();
        let mut over = false;
        self.stream(rel, &mut |chunk: &[u8]| {
            over = (out.len() + chunk.len()) as u64 > max;
            if !over {
                out.extend_from_slice(chunk);
            }
            !over
        })?;
        if over {
            return Err(Unread::TooLarge(self.size(rel).unwrap_or(max + 1)));
        }
        Ok(out)
    }

    /// Streams `rel` to `on_chunk` (which returns false to stop); the
    /// bytes read.
    fn stream(&self, rel: &str, on_chunk: &mut dyn FnMut(&[u8]) -> bool) -> Result<u64, Unread> {
        match &self.source {
            Source::Dir(v2) => {
                let mut file = File::open(v2.join(rel)).map_err(|_| Unread::Missing)?;
                let mut buf = vec![0u8; CHUNK];
                let mut total = 0u64;
                loop {
                    let n = read_full(&mut file, &mut buf)
                        .map_err(|e| Unread::Failed(e.to_string()))?;
                    if n == 0 {
                        return Ok(total);
                    }
                    total += n as u64;
                    if !on_chunk(&buf[..n]) {
                        return Ok(total);
                    }
                }
            }
            Source::Bucket { store, .. } => {
                let stopped = || StoreError::Remote {
                    op: "read object",
                    key: rel.to_owned(),
                    message: "stopped by the reader".to_owned(),
                };
                let mut stop = false;
                let r = store.read_object(rel, |chunk| {
                    if on_chunk(chunk) {
                        Ok(())
                    } else {
                        stop = true;
                        Err(stopped())
                    }
                });
                match r {
                    Ok(Some(n)) => Ok(n),
                    Ok(None) => Err(Unread::Missing),
                    Err(_) if stop => Ok(0),
                    Err(e) => Err(Unread::Failed(e.to_string())),
                }
            }
        }
    }

    /// The digest a link file holds.
    fn read_link(&self, rel: &str) -> Result<Digest, String> {
        let bytes = self.read(rel, 1024).map_err(|e| match e {
            Unread::Missing => "corrupt link: missing".to_owned(),
            Unread::TooLarge(n) => format!("corrupt link: {n} bytes"),
            Unread::Failed(e) => format!("corrupt link: {e}"),
        })?;
        let text = String::from_utf8_lossy(&bytes);
        Digest::parse(text.trim()).map_err(|e| format!("corrupt link: {e}"))
    }

    /// Every repository, by name, from the link files below
    /// `repositories/` (distribution's `paths.go`: a repository's name
    /// ends where `_layers`, `_manifests` or `_uploads` begins); a name
    /// berth does not accept is a problem.
    fn repos(&self, report: &mut Report, concurrency: usize) -> Vec<(RepoName, Repo)> {
        /// A link file: its repository, what it links, where it is.
        enum Link<'a> {
            Layer(&'a str, &'a str),
            Revision(&'a str, &'a str),
            Tag(Tag),
        }
        let files = self.repository_files(report);
        let mut links: Vec<(String, Link<'_>, &str)> = Vec::new();
        for rel in &files {
            let parts: Vec<&str> = rel.split('/').skip(1).collect();
            let Some(at) = parts.iter().position(|p| REPO_PARTS.contains(p)) else {
                continue;
            };
            let name = parts[..at].join("/");
            let link = match parts[at..] {
                ["_layers", alg, hex, "link"] => Link::Layer(alg, hex),
                ["_manifests", "revisions", alg, hex, "link"] => Link::Revision(alg, hex),
                ["_manifests", "tags", tag, "current", "link"] => match Tag::parse(tag) {
                    Ok(tag) => Link::Tag(tag),
                    Err(_) => {
                        let dir = rel.trim_end_matches("/current/link");
                        report.problem(&self.display(dir), "not a tag name berth accepts");
                        continue;
                    }
                },
                _ => continue,
            };
            links.push((name, link, rel));
        }
        // One read per link file, `concurrency` at once (a GET each from a
        // bucket).
        let read = in_parallel(&links, concurrency, |(_, _, rel)| self.read_link(rel));
        let mut repos: BTreeMap<String, Repo> = BTreeMap::new();
        for ((name, link, rel), digest) in links.into_iter().zip(read) {
            let repo = repos.entry(name).or_default();
            let digest = match (&link, digest) {
                (_, Err(p)) => {
                    report.problem(&self.display(rel), p);
                    continue;
                }
                (Link::Layer(alg, hex) | Link::Revision(alg, hex), Ok(d)) => {
                    let named = format!("{alg}:{hex}");
                    if d.as_str() != named {
                        report.problem(
                            &self.display(rel),
                            format!("holds {d}, but its path names {named}"),
                        );
                        continue;
                    }
                    d
                }
                (Link::Tag(_), Ok(d)) => d,
            };
            match link {
                Link::Layer(..) => repo.layers.push((digest, rel.to_owned())),
                Link::Revision(..) => repo.revisions.push((digest, rel.to_owned())),
                Link::Tag(tag) => {
                    repo.tags.insert(tag, (digest, rel.to_owned()));
                }
            }
        }
        let mut out = Vec::new();
        for (name, repo) in repos {
            match RepoName::parse(&name) {
                Ok(n) => out.push((n, repo)),
                Err(e) => report.problem(
                    &self.display(&format!("repositories/{name}")),
                    format!("not a repository name berth accepts: {e}"),
                ),
            }
        }
        out
    }
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
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

/// Blobs of a repository copied at once, by default.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// Imports every repository of `tree` into `engine`, copying up to
/// `concurrency` blobs of a repository at once. With `server_copy`, when
/// the tree is in the bucket berth keeps its blobs in, each blob is copied
/// inside the bucket ([`Engine::copy_from_bucket`]) instead of streamed
/// through berth.
pub fn import_distribution(
    engine: &Engine,
    tree: &Tree,
    concurrency: usize,
    server_copy: bool,
) -> Result<Report, Fatal> {
    let mut report = Report::default();
    let in_bucket = server_copy && tree.in_bucket(engine.bucket());
    let repos = tree.repos(&mut report, concurrency);
    let items: u64 = repos
        .iter()
        .map(|(_, r)| (r.layers.len() + r.revisions.len()) as u64)
        .sum();
    let mut distinct = BTreeSet::new();
    let bytes: u64 = repos
        .iter()
        .flat_map(|(_, r)| r.layers.iter())
        .filter(|(d, _)| distinct.insert(d.clone()))
        .filter_map(|(d, _)| tree.size(&Tree::blob_path(d)))
        .sum();
    let progress = Mutex::new(Progress::new(items, bytes));
    for (name, repo) in &repos {
        report.repositories += 1;
        import_layers(
            engine,
            tree,
            (name, repo),
            concurrency,
            in_bucket,
            &mut report,
            &progress,
        )?;
        import_repo(engine, tree, name, repo, &mut report, &progress)?;
    }
    lock(&progress).finish();
    Ok(report)
}

fn lock<'a>(progress: &'a Mutex<Progress>) -> std::sync::MutexGuard<'a, Progress> {
    progress.lock().unwrap_or_else(|p| p.into_inner())
}

/// `f` of every item, in the items' order, `workers` items at once.
fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let work = || {
        let mut mine = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = items.get(i) else {
                return mine;
            };
            mine.push((i, f(item)));
        }
    };
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.clamp(1, items.len().max(1)))
            .map(|_| s.spawn(work))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// Links every blob of `repo` ([`import_blob`]), `concurrency` at once.
/// A repository's links name distinct blobs, so no two workers copy the
/// same one.
fn import_layers(
    engine: &Engine,
    tree: &Tree,
    (name, repo): (&RepoName, &Repo),
    concurrency: usize,
    in_bucket: bool,
    report: &mut Report,
    progress: &Mutex<Progress>,
) -> Result<(), Fatal> {
    let done = in_parallel(&repo.layers, concurrency, |(d, link)| {
        let mut mine = Report::default();
        lock(progress).item(name.as_str());
        let key = in_bucket.then(|| tree.bucket_key(&Tree::blob_path(d)));
        match key.flatten() {
            Some(key) => copy_in_bucket(engine, tree, name, (d, link), &key, &mut mine, progress),
            None => import_blob(engine, tree, name, d, link, &mut mine, progress),
        }
        .map(|()| mine)
    });
    for r in done {
        let r = r?;
        report.blobs_copied += r.blobs_copied;
        report.bytes_copied += r.bytes_copied;
        report.blobs_copied_in_bucket += r.blobs_copied_in_bucket;
        report.blobs_mounted += r.blobs_mounted;
        report.already_present += r.already_present;
        report.problems.extend(r.problems);
    }
    Ok(())
}

/// Puts the manifests of `repo` with their tags, its blobs linked already.
fn import_repo(
    engine: &Engine,
    tree: &Tree,
    name: &RepoName,
    repo: &Repo,
    report: &mut Report,
    progress: &Mutex<Progress>,
) -> Result<(), Fatal> {
    // Read and parse every revision; schema 1 and refused ones drop out.
    let mut pending: BTreeMap<Digest, ManifestPut> = BTreeMap::new();
    for (d, link) in &repo.revisions {
        lock(progress).item(name.as_str());
        if let Some(put) = read_manifest(tree, d, link, report) {
            pending.insert(d.clone(), put);
        }
    }
    let mut tagged: BTreeMap<Digest, Vec<Tag>> = BTreeMap::new();
    for (tag, (d, link)) in &repo.tags {
        let link = tree.display(link);
        if pending.contains_key(d) {
            tagged.entry(d.clone()).or_default().push(tag.clone());
        } else if !repo.revisions.iter().any(|(r, _)| r == d) {
            report.problem(
                &link,
                format!("dangling tag {tag}: {d} is not a manifest of {name}"),
            );
        } else {
            report.problem(
                &link,
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
            let path = revision_link(tree, name, repo, &d);
            match engine.put_manifest(name, put) {
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
        let path = revision_link(tree, name, repo, &d);
        report.problem(
            &path,
            format!("manifest {d} not imported: it lists itself through its children"),
        );
    }
    Ok(())
}

fn revision_link(tree: &Tree, name: &RepoName, repo: &Repo, d: &Digest) -> PathBuf {
    let rel = repo
        .revisions
        .iter()
        .find(|(r, _)| r == d)
        .map_or_else(|| format!("repositories/{name}"), |(_, p)| p.clone());
    tree.display(&rel)
}

/// The manifest `d` as the server would take it, or `None` (a problem or
/// a schema 1 manifest, counted).
fn read_manifest(tree: &Tree, d: &Digest, link: &str, report: &mut Report) -> Option<ManifestPut> {
    let rel = Tree::blob_path(d);
    let path = tree.display(&rel);
    let body = match tree.read(&rel, MAX_MANIFEST) {
        Ok(b) => b,
        Err(Unread::TooLarge(n)) => {
            report.problem(
                &path,
                format!("manifest {d} is {n} bytes, over berth's limit"),
            );
            return None;
        }
        Err(Unread::Failed(e)) => {
            report.problem(&path, format!("manifest {d} cannot be read: {e}"));
            return None;
        }
        Err(Unread::Missing) => {
            report.problem(
                &tree.display(link),
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

/// Links blob `d` into `repo` if no bytes need copying: true if it was
/// there, or stored already and now mounted.
fn link_held(
    engine: &Engine,
    repo: &RepoName,
    d: &Digest,
    report: &mut Report,
    progress: &Mutex<Progress>,
) -> Result<bool, Fatal> {
    if engine.stat_blob(repo, d)?.is_some() {
        report.already_present += 1;
        return Ok(true);
    }
    if let Some(info) = engine.mount_blob(repo, d, None)? {
        report.blobs_mounted += 1;
        lock(progress).bytes(info.size);
        return Ok(true);
    }
    Ok(false)
}

/// The problem of blob `d`, linked at `link`, missing from the tree.
fn missing_blob(tree: &Tree, d: &Digest, link: &str, report: &mut Report) {
    let path = tree.display(&Tree::blob_path(d));
    report.problem(
        &tree.display(link),
        format!("blob {d} is linked but missing ({})", path.display()),
    );
}

/// The problem of blob `d` whose bytes hash to `actual`.
fn damaged_blob(tree: &Tree, d: &Digest, actual: &Digest, report: &mut Report) {
    report.problem(
        &tree.display(&Tree::blob_path(d)),
        format!("blob {d} is damaged: its bytes hash to {actual}"),
    );
}

/// [`import_blob`] for a tree in berth's own bucket: the blob object at
/// `key` copied inside the bucket, verified by one read.
fn copy_in_bucket(
    engine: &Engine,
    tree: &Tree,
    repo: &RepoName,
    (d, link): (&Digest, &str),
    key: &str,
    report: &mut Report,
    progress: &Mutex<Progress>,
) -> Result<(), Fatal> {
    if link_held(engine, repo, d, report, progress)? {
        return Ok(());
    }
    if tree.size(&Tree::blob_path(d)).is_some_and(|n| n > MAX_COPY) {
        // Over one CopyObject's limit: streamed as from anywhere else.
        return import_blob(engine, tree, repo, d, link, report, progress);
    }
    match engine.copy_from_bucket(repo, d, key) {
        Ok(Some(info)) => {
            report.blobs_copied += 1;
            report.blobs_copied_in_bucket += 1;
            report.bytes_copied += info.size;
            lock(progress).bytes(info.size);
        }
        Ok(None) => missing_blob(tree, d, link, report),
        Err(UploadError::DigestMismatch { actual, .. }) => damaged_blob(tree, d, &actual, report),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Links blob `d` into `repo`: nothing if it is there, a mount if the blob
/// is stored, else its bytes copied through an upload session (hashed as
/// they go; a mismatch cancels the session and is a problem).
fn import_blob(
    engine: &Engine,
    tree: &Tree,
    repo: &RepoName,
    d: &Digest,
    link: &str,
    report: &mut Report,
    progress: &Mutex<Progress>,
) -> Result<(), Fatal> {
    if link_held(engine, repo, d, report, progress)? {
        return Ok(());
    }
    let rel = Tree::blob_path(d);
    let path = tree.display(&rel);
    let status = engine.begin_upload(repo, d.algorithm())?;
    let mut w = engine.upload_writer(repo, &status.id, Some(0))?;
    // Written in pieces of CHUNK bytes, whatever size the source's reads.
    let mut buf = Vec::with_capacity(CHUNK);
    let mut failed = None;
    let mut copied = 0u64;
    let read = tree.stream(&rel, &mut |chunk: &[u8]| {
        buf.extend_from_slice(chunk);
        lock(progress).bytes(chunk.len() as u64);
        copied += chunk.len() as u64;
        if buf.len() >= CHUNK {
            if let Err(e) = w.write(&buf) {
                failed = Some(e);
                return false;
            }
            buf.clear();
        }
        true
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    let unread = match read {
        Ok(_) | Err(Unread::TooLarge(_)) => None,
        Err(e) => Some(e),
    };
    if let Some(e) = unread {
        drop(w);
        let _ = engine.cancel_upload(repo, &status.id);
        match e {
            Unread::Failed(e) => report.problem(&path, format!("blob {d} cannot be read: {e}")),
            _ => missing_blob(tree, d, link, report),
        }
        return Ok(());
    }
    if !buf.is_empty() {
        w.write(&buf)?;
    }
    match w.complete(d, None) {
        Ok(_) => {
            report.blobs_copied += 1;
            report.bytes_copied += copied;
        }
        Err(UploadError::DigestMismatch { actual, .. }) => {
            let _ = engine.cancel_upload(repo, &status.id);
            damaged_blob(tree, d, &actual, report);
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
