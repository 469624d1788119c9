//! berthctl: offline administration of a berth data directory.
//!
//! Thin: each subcommand validates its arguments, opens the engine on a
//! data directory no server holds (RocksDB's lock refuses otherwise), calls
//! one engine operation and prints the result.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_engine::fsck::FsckOptions;
use berth_engine::{Engine, EngineConfig, GcOptions, StorageError};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "berthctl",
    version,
    about = "Offline administration of a berth data directory"
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Counts the index's entries.
    Stats,
    /// Checks the index against itself and the blob store; lists every
    /// finding and exits non-zero if there is any.
    Fsck {
        /// Also re-hash every blob (reads all data).
        #[arg(long)]
        verify_blobs: bool,
        /// Then fix what can be fixed safely: recomputed counts, the GC
        /// candidates index, interrupted GC deletions, orphan store files,
        /// upload records without a file. Exits non-zero if the check found
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berthctl: {}: {e}", cli.data_dir.display());
            if matches!(e, StorageError::Locked { .. }) {
                eprintln!("hint: stop the berth server using this data directory first");
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: &Cli) -> Result<ExitCode, StorageError> {
    if !cli.data_dir.join("index").exists() {
        return Err(StorageError::Io {
            op: "open data directory",
            path: cli.data_dir.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no berth index here"),
        });
    }
    let engine = Engine::open(EngineConfig::new(&cli.data_dir))?;
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
            Ok(if report.findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
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
    }
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
