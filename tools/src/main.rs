//! berthctl: offline administration of a berth data directory.
//!
//! Thin: each subcommand validates its arguments, opens the engine on a
//! data directory no server holds (RocksDB's lock refuses otherwise), calls
//! one engine operation and prints the result.

mod bench;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use berth_engine::fsck::FsckOptions;
use berth_engine::{Engine, EngineConfig, StorageError};
use clap::{Parser, Subcommand};

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
}

fn main() -> ExitCode {
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
        Command::Fsck { verify_blobs } => {
            let report = engine.fsck(FsckOptions {
                verify_blobs: *verify_blobs,
            })?;
            for f in &report.findings {
                println!("berthctl: {f}");
            }
            for d in &report.unindexed_blobs {
                println!("note: blob {d} is stored but not indexed (reclaimable)");
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
        Command::Bench(_) | Command::S3AbortUploads(_) => unreachable!("handled in main"),
        Command::ExpireUploads { older_than_seconds } => {
            let n = engine.expire_uploads(Duration::from_secs(*older_than_seconds))?;
            println!("expired {n} upload session(s)");
            Ok(ExitCode::SUCCESS)
        }
    }
}
