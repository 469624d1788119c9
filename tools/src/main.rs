//! berthctl: offline administration of a berth data directory.
//!
//! Thin: each subcommand validates its arguments, opens the engine on a
//! data directory no server holds (RocksDB's lock refuses otherwise), calls
//! one engine operation and prints the result.

mod bench;
mod import;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_engine::fsck::FsckOptions;
use berth_engine::store::{BackendKind, StorageSettings};
use berth_engine::{
    AccountError, Action, Actions, DatabaseConfig, Engine, EngineConfig, GcOptions, Role,
    StorageError,
};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "berthctl",
    version,
    about = "Offline administration of a berth data directory (online in cluster mode, against its database and bucket)"
)]
struct Cli {
    /// The data directory of a stopped berth server.
    #[arg(
        long,
        env = "BERTH_DATA_DIR",
        default_value = "./berth-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Open a data directory (or token key file) that other users of the
    /// host may read; refused otherwise.
    #[arg(long, env = "BERTH_ALLOW_OPEN_DATA_DIR", global = true)]
    allow_open_data_dir: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Counts the index's entries.
    Stats,
    /// Checks the index against itself and the blob store, every entry of
    /// every column family included (unknown or corrupt keys, values that
    /// do not decode); lists every finding and exits non-zero if there is
    /// any.
    Fsck {
        /// Also re-hash every blob (reads all data).
        #[arg(long)]
        verify_blobs: bool,
        /// Then fix what can be fixed safely: recomputed counts, the GC
        /// candidates index, reverse links, referrer entries, interrupted
        /// GC deletions, orphan store files, upload records without a file,
        /// and corrupt entries of the families that hold nothing live
        /// (gc_candidates, blob_repos, referrers, uploads); other corrupt
        /// entries are reported and kept. Exits non-zero if the check found
        /// anything (re-run to confirm the repair).
        #[arg(long)]
        repair: bool,
    },
    /// Garbage-collects unreferenced blobs (the same code as online GC).
    Gc {
        /// Report what would be deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete manifests with no tag, no parent index and no
        /// present subject (signatures and other accessories are kept).
        #[arg(long)]
        delete_untagged: bool,
        /// Keep unreferenced blobs touched within this many seconds.
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
    /// Expires upload sessions untouched for the given time.
    ExpireUploads {
        /// Age in seconds after which a session is abandoned.
        #[arg(long, default_value_t = 86_400)]
        older_than_seconds: u64,
    },
    /// Measures a blob store backend: put/get/stat/delete throughput and
    /// latency percentiles per blob size (does not use the data directory).
    Bench(Box<bench::BenchArgs>),
    /// Aborts multipart uploads in the S3 bucket abandoned for longer than
    /// the given age (crashed completions; does not use the data directory).
    S3AbortUploads(Box<bench::SweepArgs>),
    /// User accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Projects.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Project members.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Robot accounts.
    #[command(subcommand)]
    Robot(RobotCmd),
    /// Cluster mode (docs/cluster.md).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Takes in another registry's storage (docs/migration.md).
    #[command(subcommand)]
    Import(ImportCmd),
    /// Copies repositories from a registry that speaks the OCI
    /// distribution API (Docker Hub, Harbor, distribution, berth) into
    /// another, over that API: only what the destination lacks, multi-arch
    /// indexes with every child, referrers with their subjects
    /// (docs/migration.md). Passwords come from BERTH_SYNC_FROM_PASSWORD
    /// and BERTH_SYNC_TO_PASSWORD. Exits 1 if a tag failed. Does not use
    /// the data directory.
    Sync(Box<SyncArgs>),
    /// Backs up the data directory while `berth serve` may run on it
    /// (docs/backup.md): a consistent snapshot of the index and the blobs
    /// it references, hard-linked where the filesystem allows, else copied.
    /// Into an earlier backup's directory only new blobs are copied; the
    /// directory then holds the new snapshot. With the s3 backend only the
    /// index is kept, and the bucket named.
    Backup {
        /// The backup directory (created private).
        #[arg(long)]
        out: PathBuf,
    },
    /// Makes the data directory (new or empty) serve what a backup holds,
    /// then checks it as `fsck` does; exits 1 if the check finds anything.
    Restore {
        /// The backup directory.
        #[arg(long)]
        from: PathBuf,
        /// Also re-hash every blob.
        #[arg(long)]
        verify_blobs: bool,
    },
}

#[derive(clap::Args)]
struct SyncArgs {
    /// The source registry, `http(s)://host[:port]`.
    #[arg(long)]
    from: String,
    /// The destination registry.
    #[arg(long)]
    to: String,
    /// Repositories to copy (`*` within a path component, `**` across,
    /// `?`, `{a,b}`); default: every repository of the source's catalog.
    #[arg(long)]
    repos: Option<String>,
    /// Tags to copy, a pattern as for --repos; default: every tag.
    #[arg(long)]
    tags: Option<String>,
    /// The source's user (password: BERTH_SYNC_FROM_PASSWORD).
    #[arg(long)]
    from_user: Option<String>,
    /// The destination's user (password: BERTH_SYNC_TO_PASSWORD).
    #[arg(long)]
    to_user: Option<String>,
    /// Accept any TLS certificate from the source.
    #[arg(long)]
    from_insecure: bool,
    /// Accept any TLS certificate from the destination.
    #[arg(long)]
    to_insecure: bool,
    /// Tags copied at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

#[derive(Subcommand)]
enum ImportCmd {
    /// Imports the storage tree of CNCF distribution (or Harbor, which
    /// runs it) from a filesystem or a bucket: every repository, tag,
    /// manifest and blob, each blob's digest verified as it is copied.
    /// Problems (a damaged or missing blob, a dangling tag, a corrupt link)
    /// are listed with their paths and the import goes on; schema 1
    /// manifests are counted and skipped. Run again after an interruption:
    /// what is there is skipped. Exits 1 if there were problems.
    Distribution {
        /// distribution's storage root: a directory (its filesystem
        /// driver's `rootdirectory`, holding `docker/registry/v2`), or
        /// `s3://BUCKET/ROOT` (its S3 driver's `bucket` and
        /// `rootdirectory`), reached with the endpoint, region, credentials
        /// and CA of the usual BERTH_S3_* settings.
        #[arg(long)]
        from: String,
        /// Link files read, and blobs of a repository copied, at once.
        #[arg(long, default_value_t = import::DEFAULT_CONCURRENCY)]
        concurrency: usize,
        /// Where the JSON report goes (default: import-report.json in the
        /// data directory).
        #[arg(long)]
        report: Option<PathBuf>,
        /// Stream every blob through berthctl even when berth keeps its
        /// blobs in the tree's bucket (by default such blobs are read once
        /// to verify them and copied inside the bucket).
        #[arg(long)]
        no_server_copy: bool,
    },
    /// Imports ChartMuseum's chart storage (Harbor's chart repository):
    /// `<from>/<project>/<name>-<version>.tgz` with its `.prov`, each
    /// archive checked as a chart upload is. Run again after an
    /// interruption: versions stored with the same archive are skipped.
    /// Exits 1 if there were problems.
    Chartmuseum {
        /// ChartMuseum's storage directory (Harbor: its chart_storage).
        #[arg(long)]
        from: PathBuf,
        /// The project of archives directly in --from (a single-tenant
        /// ChartMuseum).
        #[arg(long)]
        project: Option<String>,
        /// Where the JSON report goes (default: import-report.json in the
        /// data directory).
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Copies the stopped single node's data directory (its index, and
    /// every blob the cluster's bucket lacks) into an empty cluster
    /// database and its bucket: the cluster's settings as `berth serve`
    /// reads them (`BERTH_DATABASE_URL`, `BERTH_STORAGE_BACKEND=s3`,
    /// `BERTH_S3_*`). A killed import commits nothing; run it again.
    Import {
        /// The cluster database (else `BERTH_DATABASE_URL`).
        #[arg(long)]
        database_url: Option<String>,
        /// Where the node kept its blobs: `local` (its data directory) or
        /// `s3` (the cluster's bucket already).
        #[arg(long, default_value = "local")]
        source_backend: String,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Creates a user; the password is read from the first line of stdin
    /// (so it never appears in `ps` or shell history).
    Add {
        name: String,
        /// A system administrator.
        #[arg(long)]
        admin: bool,
        #[arg(long, default_value = "")]
        email: String,
    },
}

#[derive(Subcommand)]
enum ProjectCmd {
    /// Creates a project (private unless --public).
    Add {
        name: String,
        #[arg(long)]
        public: bool,
        /// A user who becomes the project admin.
        #[arg(long)]
        owner: Option<String>,
        /// Makes it a proxy cache of the registry at this URL (Harbor's
        /// proxy cache project; docs/proxy-cache.md). The registry is
        /// registered under the project's name, or reused if one with
        /// this URL exists.
        #[arg(long, value_name = "URL")]
        proxy: Option<String>,
        /// The upstream's type: docker-registry, docker-hub, harbor, quay,
        /// github-ghcr, google-gcr, azure-acr, jfrog-artifactory.
        #[arg(long, default_value = "docker-registry", requires = "proxy")]
        proxy_type: String,
        /// The user name berth signs in upstream with (the password from
        /// BERTH_PROXY_PASSWORD).
        #[arg(long, requires = "proxy")]
        proxy_user: Option<String>,
        /// Skip verifying the upstream's TLS certificate.
        #[arg(long, requires = "proxy")]
        proxy_insecure: bool,
    },
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Gives a user a role in a project: guest, developer, maintainer,
    /// projectAdmin (or Harbor's role id 3, 2, 4, 1).
    Add {
        project: String,
        user: String,
        #[arg(long)]
        role: String,
    },
}

#[derive(Subcommand)]
enum RobotCmd {
    /// Creates robot robot$PROJECT+NAME and prints its secret, once.
    Add {
        project: String,
        name: String,
        /// Comma-separated: pull, push, delete.
        #[arg(long, default_value = "pull")]
        actions: String,
        /// Days until it expires (default: never).
        #[arg(long)]
        expires_days: Option<u64>,
    },
}

/// What a subcommand can fail with.
#[derive(Debug)]
enum CliError {
    Storage(StorageError),
    Account(AccountError),
    Usage(String),
}

impl From<StorageError> for CliError {
    fn from(e: StorageError) -> CliError {
        CliError::Storage(e)
    }
}

impl From<AccountError> for CliError {
    fn from(e: AccountError) -> CliError {
        match e {
            AccountError::Storage(s) => CliError::Storage(s),
            other => CliError::Account(other),
        }
    }
}

fn main() -> ExitCode {
    // Before anything creates a file: everything berthctl writes is the
    // owner's only (see berth_engine::host).
    berth_engine::host::private_umask();
    let cli = Cli::parse();
    let standalone = match &cli.command {
        Command::Bench(args) => Some(("bench", bench::run(args))),
        Command::S3AbortUploads(args) => Some(("s3-abort-uploads", bench::sweep(args))),
        _ => None,
    };
    if let Some((name, result)) = standalone {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("berthctl: {name}: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(&cli) {
        Ok(code) => code,
        Err(CliError::Account(e)) => {
            eprintln!("berthctl: {e}");
            ExitCode::from(1)
        }
        Err(CliError::Usage(e)) => {
            eprintln!("berthctl: {e}");
            ExitCode::from(2)
        }
        Err(CliError::Storage(e @ StorageError::OpenToOthers { .. })) => {
            // The error names the path.
            eprintln!("berthctl: {e}");
            ExitCode::from(2)
        }
        Err(CliError::Storage(e)) => {
            eprintln!("berthctl: {}: {e}", cli.data_dir.display());
            if matches!(e, StorageError::Locked { .. }) {
                eprintln!("hint: stop the berth server using this data directory first");
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, CliError> {
    if let Command::Cluster(ClusterCmd::Import {
        database_url,
        source_backend,
    }) = &cli.command
    {
        return cluster_import(cli, database_url.as_deref(), source_backend);
    }
    match &cli.command {
        Command::Sync(args) => return sync(args),
        Command::Backup { out } => return backup(cli, out),
        Command::Restore { from, verify_blobs } => return restore(cli, from, *verify_blobs),
        _ => {}
    }
    let creates = matches!(
        cli.command,
        Command::User(_) | Command::Project(_) | Command::Import(_)
    );
    let (backend, database) = storage_backend()?;
    if !creates && database.is_none() && !cli.data_dir.join("index").exists() {
        return Err(StorageError::Io {
            op: "open data directory",
            path: cli.data_dir.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no berth index here"),
        }
        .into());
    }
    let mut ec = EngineConfig::new(&cli.data_dir);
    ec.backend = backend;
    ec.database = database;
    ec.allow_open_data_dir = cli.allow_open_data_dir;
    let engine = Engine::open(ec)?;
    match &cli.command {
        Command::Stats => {
            let s = engine.stats()?;
            println!("blobs      {}", s.blobs);
            println!("links      {}", s.links);
            println!("manifests  {}", s.manifests);
            println!("tags       {}", s.tags);
            println!("repos      {}", s.repos);
            println!("uploads    {}", s.uploads);
            Ok(ExitCode::SUCCESS)
        }
        Command::Fsck {
            verify_blobs,
            repair,
        } => {
            let bar = spinner("fsck: checking the index and the store");
            let opts = FsckOptions {
                verify_blobs: *verify_blobs,
            };
            let (report, repaired) = if *repair {
                let (r, fixed) = engine.fsck_repair(opts)?;
                (r, Some(fixed))
            } else {
                (engine.fsck(opts)?, None)
            };
            bar.finish_and_clear();
            for f in &report.findings {
                println!("berthctl: {f}");
            }
            for d in &report.unindexed_blobs {
                println!("note: blob {d} is stored but not indexed (reclaimable: fsck --repair)");
            }
            for d in &report.interrupted_deletions {
                println!("note: blob {d}: a GC deletion was interrupted (finished by the next GC or fsck --repair)");
            }
            if let Some(fixed) = &repaired {
                for a in &fixed.actions {
                    println!("repaired: {a}");
                }
            }
            println!(
                "checked {} blobs and {} manifests: {} finding(s)",
                report.blobs,
                report.manifests,
                report.findings.len()
            );
            Ok(exit_code(report.findings.is_empty()))
        }
        Command::Bench(_) | Command::S3AbortUploads(_) => unreachable!("handled in main"),
        Command::Cluster(_)
        | Command::Sync(_)
        | Command::Backup { .. }
        | Command::Restore { .. } => {
            unreachable!("handled before the engine opens")
        }
        Command::Import(ImportCmd::Distribution {
            from,
            concurrency,
            report,
            no_server_copy,
        }) => {
            let tree = match from.strip_prefix("s3://") {
                Some(rest) => {
                    let (bucket, root) = rest.split_once('/').unwrap_or((rest, ""));
                    if bucket.is_empty() {
                        return Err(CliError::Usage(format!("--from {from}: no bucket named")));
                    }
                    let config = storage_settings()?
                        .s3_source(bucket, root)
                        .map_err(|e| CliError::Usage(format!("--from {from}: {e}")))?;
                    import::Tree::open_bucket(config)
                }
                None => import::Tree::open(std::path::Path::new(from)),
            }
            .map_err(CliError::Usage)?;
            let r = import::import_distribution(&engine, &tree, *concurrency, !no_server_copy)
                .map_err(|e| CliError::Usage(format!("import stopped: {e}")))?;
            let path = write_report(cli, report.as_deref(), &r.to_json(), &r.problems)?;
            println!(
                "imported {} repositories, {} tags, {} manifests; blobs: {} copied ({} bytes; {} inside the bucket), {} mounted; {} already present; {} schema 1 manifests skipped; {} problem(s); report: {}",
                r.repositories, r.tags, r.manifests, r.blobs_copied, r.bytes_copied, r.blobs_copied_in_bucket,
                r.blobs_mounted, r.already_present, r.schema1_skipped, r.problems.len(),
                path.display()
            );
            Ok(exit_code(r.problems.is_empty()))
        }
        Command::Import(ImportCmd::Chartmuseum {
            from,
            project,
            report,
        }) => {
            let project = project
                .as_deref()
                .map(berth_engine::RepoName::parse)
                .transpose()
                .map_err(|e| CliError::Usage(format!("--project: {e}")))?;
            let r = import::import_chartmuseum(&engine, from, project.as_ref())
                .map_err(|e| CliError::Usage(format!("import stopped: {e}")))?;
            let path = write_report(cli, report.as_deref(), &r.to_json(), &r.problems)?;
            println!(
                "imported {} chart versions in {} projects; {} already present; {} problem(s); report: {}",
                r.charts, r.projects, r.already_present, r.problems.len(), path.display()
            );
            Ok(exit_code(r.problems.is_empty()))
        }
        Command::Gc {
            dry_run,
            delete_untagged,
            grace_seconds,
        } => {
            let bar = spinner("gc");
            let opts = GcOptions {
                grace: Duration::from_secs(*grace_seconds),
                delete_untagged: *delete_untagged,
                dry_run: *dry_run,
                upload_ttl: Some(EngineConfig::new(&cli.data_dir).upload_ttl),
            };
            let r = engine.gc_with_progress(&opts, &|phase, n| {
                bar.set_message(format!("gc: {phase}"));
                bar.set_position(n);
            })?;
            bar.finish_and_clear();
            let verb = if r.dry_run { "would delete" } else { "deleted" };
            if *delete_untagged {
                println!("{verb} {} untagged manifest(s)", r.manifests_deleted);
            }
            println!(
                "{verb} {} blob(s), {} bytes, {} repository link(s); {} candidate(s) scanned, {} within the grace window",
                r.blobs_deleted, r.bytes_reclaimed, r.links_removed, r.candidates, r.in_grace
            );
            if !r.dry_run {
                println!("expired {} upload session(s)", r.uploads_expired);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ExpireUploads { older_than_seconds } => {
            let n = engine.expire_uploads(Duration::from_secs(*older_than_seconds))?;
            println!("expired {n} upload session(s)");
            Ok(ExitCode::SUCCESS)
        }
        Command::User(UserCmd::Add { name, admin, email }) => {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .map_err(|e| CliError::Usage(format!("reading the password from stdin: {e}")))?;
            let password = password.trim_end_matches(['\r', '\n']);
            let id = engine.create_user(name, password, *admin, email, "")?;
            println!(
                "created user {name} (id {id}{})",
                if *admin { ", admin" } else { "" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Project(ProjectCmd::Add {
            name,
            public,
            owner,
            proxy,
            proxy_type,
            proxy_user,
            proxy_insecure,
        }) => {
            let registry = match proxy {
                None => None,
                Some(url) => {
                    let credential =
                        proxy_user
                            .as_ref()
                            .map(|u| berth_engine::records::RegistryCredential {
                                access_key: u.clone(),
                                access_secret: std::env::var("BERTH_PROXY_PASSWORD")
                                    .unwrap_or_default(),
                            });
                    let spec = berth_engine::registries::RegistrySpec {
                        name: name.clone(),
                        kind: proxy_type.clone(),
                        url: url.clone(),
                        credential,
                        insecure: *proxy_insecure,
                        ca_certificate: String::new(),
                        description: format!("upstream of proxy cache project {name}"),
                    }
                    .validate()?;
                    let existing = engine.registries()?.into_iter().find(|(_, r)| {
                        r.url == spec.url && r.kind == spec.kind && r.credential == spec.credential
                    });
                    Some(match existing {
                        Some((id, _)) => id,
                        None => engine.create_registry(spec)?,
                    })
                }
            };
            let id = engine.create_project_with(name, *public, owner.as_deref(), registry, None)?;
            println!(
                "created {} project {name} (id {id}){}",
                if *public { "public" } else { "private" },
                match (registry, proxy) {
                    (Some(r), Some(url)) => format!(", a proxy cache of {url} (registry {r})"),
                    _ => String::new(),
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Member(MemberCmd::Add {
            project,
            user,
            role,
        }) => {
            let r = Role::parse(role).ok_or_else(|| {
                CliError::Usage(format!(
                    "role {role:?}: use guest, developer, maintainer or projectAdmin"
                ))
            })?;
            engine.set_member(project, user, r)?;
            println!("{user} is {} of {project}", r.name());
            Ok(ExitCode::SUCCESS)
        }
        Command::Robot(RobotCmd::Add {
            project,
            name,
            actions,
            expires_days,
        }) => {
            let mut set = Actions::NONE;
            for a in actions.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                match Action::parse(a) {
                    Some(x @ (Action::Pull | Action::Push | Action::Delete)) => {
                        set = set.union(Actions::of(&[x]))
                    }
                    _ => {
                        return Err(CliError::Usage(format!(
                            "action {a:?}: use pull, push or delete"
                        )))
                    }
                }
            }
            let expires_ms = expires_days
                .map(|d| berth_engine::records::now_ms() + d.saturating_mul(86_400_000));
            let robot = engine.create_robot(project, name, set, expires_ms, "")?;
            // The secret is printed once, here, and never stored.
            println!("name   {}", robot.name);
            println!("secret {}", robot.secret);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `berthctl cluster import` (see [`ClusterCmd::Import`]).
fn cluster_import(
    cli: &Cli,
    database_url: Option<&str>,
    source_backend: &str,
) -> Result<ExitCode, CliError> {
    let (backend, database) = storage_backend()?;
    let mut db = database.unwrap_or_else(|| DatabaseConfig::new(""));
    if let Some(url) = database_url {
        db.url = url.to_owned();
    }
    if db.url.is_empty() {
        return Err(CliError::Usage(
            "cluster import: the cluster database: --database-url or BERTH_DATABASE_URL".into(),
        ));
    }
    let Some(s3) = backend
        .s3
        .clone()
        .filter(|_| backend.kind == BackendKind::S3)
    else {
        return Err(CliError::Usage(
            "cluster import: the cluster's bucket: BERTH_STORAGE_BACKEND=s3 and BERTH_S3_*".into(),
        ));
    };
    if !cli.data_dir.join("index").exists() {
        return Err(CliError::Usage(format!(
            "cluster import: no berth index in {}",
            cli.data_dir.display()
        )));
    }
    let mut ec = EngineConfig::new(&cli.data_dir);
    ec.backend = match source_backend {
        "local" => berth_engine::store::Backend::local(),
        "s3" => backend.clone(),
        other => {
            return Err(CliError::Usage(format!(
                "cluster import: --source-backend {other:?}: local or s3"
            )))
        }
    };
    ec.allow_open_data_dir = cli.allow_open_data_dir;
    let engine = Engine::open(ec)?;
    let staging = cli.data_dir.join("cluster-import");
    let target = berth_engine::store::S3Store::open(s3)
        .and_then(|s| s.with_staging_dir(&staging))
        .map_err(StorageError::from)?;
    let bar = spinner("importing");
    let report = engine.import_into_cluster(&db, &target, &|phase, n| {
        bar.set_message(phase);
        bar.set_position(n);
    })?;
    bar.finish_and_clear();
    drop(target);
    let _ = std::fs::remove_dir_all(&staging);
    println!(
        "imported {} index entries into {} (schema {})",
        report.entries,
        db.redacted_url(),
        db.schema
    );
    println!(
        "blobs: {} copied ({} bytes), {} already in the bucket",
        report.blobs_copied, report.bytes_copied, report.blobs_present
    );
    if report.uploads_skipped > 0 {
        println!(
            "note: {} upload session(s) in progress were not imported (their clients upload again)",
            report.uploads_skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn sync(a: &SyncArgs) -> Result<ExitCode, CliError> {
    let side = |url: &str, user: &Option<String>, env: &str, insecure: bool| sync::Side {
        url: url.to_owned(),
        user: user.clone(),
        password: user.as_ref().and_then(|_| std::env::var(env).ok()),
        insecure,
    };
    let opts = sync::SyncOptions {
        from: side(
            &a.from,
            &a.from_user,
            "BERTH_SYNC_FROM_PASSWORD",
            a.from_insecure,
        ),
        to: side(&a.to, &a.to_user, "BERTH_SYNC_TO_PASSWORD", a.to_insecure),
        repos: a.repos.clone(),
        tags: a.tags.clone(),
        concurrency: a.concurrency,
    };
    let bar = spinner("sync");
    let progress = |r: &sync::SyncReport| {
        bar.set_message(format!(
            "sync: {} tags copied, {} present, {} blobs ({} bytes)",
            r.tags_copied, r.tags_present, r.blobs_copied, r.bytes_copied
        ))
    };
    let r = sync::sync(&opts, &progress).map_err(|e| CliError::Usage(format!("sync: {e}")))?;
    bar.finish_and_clear();
    for f in &r.failures {
        println!("failed: {f}");
    }
    println!(
        "synced {} repositories: {} tags copied, {} already present; {} manifests; blobs: {} copied ({} bytes), {} present; {} skipped (schema 1); {} failure(s)",
        r.repositories,
        r.tags_copied,
        r.tags_present,
        r.manifests_copied,
        r.blobs_copied,
        r.bytes_copied,
        r.blobs_present,
        r.skipped,
        r.failures.len()
    );
    Ok(exit_code(r.failures.is_empty()))
}

fn backup(cli: &Cli, out: &std::path::Path) -> Result<ExitCode, CliError> {
    let (backend, database) = storage_backend()?;
    if database.is_some() {
        return Err(CliError::Usage(
            "backup: in cluster mode the index is PostgreSQL's (pg_dump or its base backups) and the bytes are the bucket's".into(),
        ));
    }
    let bar = spinner("backup");
    let progress = |phase: &'static str, n: u64| bar.set_message(format!("backup: {phase}: {n}"));
    let r = berth_engine::backup::backup(&cli.data_dir, out, &backend, &progress)?;
    bar.finish_and_clear();
    let m = &r.manifest;
    println!(
        "backed up {} index entries and {} blobs ({} bytes): {} linked, {} copied ({} bytes), {} already present, {} pruned; {}",
        m.entries,
        m.blobs,
        m.bytes,
        r.blobs_linked,
        r.blobs_copied,
        r.bytes_copied,
        r.blobs_present,
        r.blobs_pruned,
        match &m.bucket {
            Some(b) => format!("the bytes stay in bucket {} at {} (root {:?})", b.bucket, b.endpoint, b.root),
            None => format!("into {}", out.display()),
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn restore(cli: &Cli, from: &std::path::Path, verify_blobs: bool) -> Result<ExitCode, CliError> {
    let (backend, database) = storage_backend()?;
    let manifest = berth_engine::backup::read_manifest(from)?;
    if database.is_some() || backend.kind.name() != manifest.backend {
        return Err(CliError::Usage(format!(
            "restore: the backup was taken with the {} backend; restore (and serve) with BERTH_STORAGE_BACKEND={} and no database URL{}",
            manifest.backend,
            manifest.backend,
            manifest.bucket.as_ref().map_or(String::new(), |b| format!(
                ", on bucket {} at {}",
                b.bucket, b.endpoint
            ))
        )));
    }
    let r = berth_engine::backup::restore(from, &cli.data_dir)?;
    let mut ec = EngineConfig::new(&cli.data_dir);
    ec.backend = backend;
    let engine = Engine::open(ec)?;
    let report = engine.fsck(FsckOptions { verify_blobs })?;
    for f in &report.findings {
        println!("berthctl: {f}");
    }
    println!(
        "restored the backup of {} ms since the epoch: {} index entries, {} blobs ({} linked, {} copied); fsck: {} blobs and {} manifests, {} finding(s)",
        r.manifest.taken_ms,
        r.manifest.entries,
        r.manifest.blobs,
        r.blobs_linked,
        r.blobs_copied,
        report.blobs,
        report.manifests,
        report.findings.len()
    );
    Ok(exit_code(report.findings.is_empty()))
}

/// 0 when a run found nothing wrong, else 1.
fn exit_code(clean: bool) -> ExitCode {
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Writes an import's JSON report (to `report`, else import-report.json in
/// the data directory) and prints its problems; returns where it went.
fn write_report(
    cli: &Cli,
    report: Option<&std::path::Path>,
    json: &serde_json::Value,
    problems: &[import::Problem],
) -> Result<PathBuf, CliError> {
    let path = report.map_or_else(|| cli.data_dir.join("import-report.json"), PathBuf::from);
    let bytes = serde_json::to_vec_pretty(json).unwrap_or_default();
    std::fs::write(&path, bytes)
        .map_err(|e| CliError::Usage(format!("write the report {}: {e}", path.display())))?;
    for p in problems {
        println!("problem: {}: {}", p.path.display(), p.problem);
    }
    Ok(path)
}

/// A spinner with a count on stderr; indicatif hides it when stderr is not
/// a terminal, so scripted runs print only results.
fn spinner(msg: &'static str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {pos} [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(msg);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The blob store of the data directory, from the storage settings the
/// server reads (`BERTH_STORAGE_BACKEND`, `BERTH_S3_*`,
/// `BERTH_CACHE_MAX_BYTES`, then the `BERTH_CONFIG` file; parsed by the
/// engine, `berth_engine::store::settings`), so `gc` and `fsck` see the
/// bucket the server writes to, not only the local cache.
///
/// With `BERTH_DATABASE_URL` (cluster mode) the index is the cluster's
/// database, shared with the running servers; the data directory is then
/// only this tool's cache (docs/cluster.md).
/// The storage settings: the environment's, then the config file's
/// (`BERTH_CONFIG`).
fn storage_settings() -> Result<StorageSettings, CliError> {
    let env = StorageSettings::from_env().map_err(CliError::Usage)?;
    let file = match std::env::var_os("BERTH_CONFIG").filter(|p| !p.is_empty()) {
        Some(path) => StorageSettings::from_config_file(std::path::Path::new(&path))
            .map_err(CliError::Usage)?,
        None => StorageSettings::default(),
    };
    Ok(env.or(file))
}

fn storage_backend() -> Result<(berth_engine::store::Backend, Option<DatabaseConfig>), CliError> {
    let settings = storage_settings()?;
    let usage = |e: String| CliError::Usage(format!("storage: {e}"));
    let database = settings.database().map_err(usage)?;
    let backend = settings.resolve().map_err(usage)?;
    Ok((backend, database))
}
