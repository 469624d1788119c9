//! `berthctl bench`: blob store throughput and latency, for comparing
//! storage backends (local disk, an S3/Ceph bucket, tiered).
//!
//! For each size, four timed phases over `count` distinct blobs, run by
//! `concurrency` threads: `put` (`commit` of a staged blob, as upload
//! completion does; staging is not timed), `get` (whole blob, every byte
//! touched), `stat`, `delete`. Digests are synthetic (stores do not re-hash,
//! see `BlobStore`), so hashing cost is not measured. Runs in its own store
//! (a fresh directory, and a fresh key prefix in the bucket) and deletes
//! what it wrote; it never touches a server's data directory.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_engine::store::{
    LocalStore, S3Config, S3Store, Staged, TierMode, TieredStore, DEFAULT_CACHE_MAX_BYTES,
};
use berth_engine::{Algorithm, BlobStore, Digest, PutMode};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `berthctl bench` arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Backend to measure: local (this disk), s3 (the bucket directly) or
    /// tiered (local + background copy to the bucket)
    #[arg(long, default_value = "local", value_parser = ["local", "s3", "tiered"])]
    backend: String,
    /// Blob sizes, comma-separated (B, KiB, MiB, GiB; K/M/G are binary too)
    #[arg(long, default_value = "4KiB,1MiB,64MiB", value_delimiter = ',')]
    sizes: Vec<String>,
    /// Threads issuing operations at once
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Blobs per size
    #[arg(long, default_value_t = 32)]
    count: usize,
    /// Directory for the local store (local, tiered) and staged files
    /// [default: the system temp dir]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// S3 endpoint URL
    #[arg(long, env = "BERTH_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// S3 region
    #[arg(long, env = "BERTH_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// S3 bucket
    #[arg(long, env = "BERTH_S3_BUCKET", value_name = "BUCKET")]
    s3_bucket: Option<String>,
    /// S3 access key
    #[arg(long, env = "BERTH_S3_ACCESS_KEY", value_name = "KEY")]
    s3_access_key: Option<String>,
    /// S3 secret key
    #[arg(
        long,
        env = "BERTH_S3_SECRET_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    s3_secret_key: Option<String>,
    /// Key prefix under which the bench's own prefix is created
    #[arg(long, env = "BERTH_S3_ROOT", default_value = "")]
    s3_root: String,
    /// PEM file of CA certificates trusted for an https:// endpoint
    #[arg(long, env = "BERTH_S3_CA_FILE", value_name = "FILE")]
    s3_ca_file: Option<PathBuf>,
    /// Create the bucket first if it is missing
    #[arg(long)]
    create_bucket: bool,
    /// Local budget of the tiered backend, bytes
    #[arg(long, env = "BERTH_CACHE_MAX_BYTES", default_value_t = DEFAULT_CACHE_MAX_BYTES)]
    cache_max_bytes: u64,
}

/// `berthctl s3-abort-uploads` arguments.
#[derive(Clone, Debug, clap::Args)]
pub struct SweepArgs {
    /// Abort multipart uploads started longer ago than this (keep it at
    /// least the server's upload TTL so live sessions are never hit)
    #[arg(long, default_value_t = 86_400)]
    older_than_seconds: u64,
    /// S3 endpoint URL (http:// or https://)
    #[arg(long, env = "BERTH_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: String,
    /// S3 region
    #[arg(long, env = "BERTH_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// S3 bucket
    #[arg(long, env = "BERTH_S3_BUCKET", value_name = "BUCKET")]
    s3_bucket: String,
    /// S3 access key
    #[arg(long, env = "BERTH_S3_ACCESS_KEY", value_name = "KEY")]
    s3_access_key: String,
    /// S3 secret key
    #[arg(
        long,
        env = "BERTH_S3_SECRET_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    s3_secret_key: String,
    /// Key prefix of the registry's objects
    #[arg(long, env = "BERTH_S3_ROOT", default_value = "")]
    s3_root: String,
    /// PEM file of CA certificates trusted for an https:// endpoint
    #[arg(long, env = "BERTH_S3_CA_FILE", value_name = "FILE")]
    s3_ca_file: Option<PathBuf>,
}

/// Aborts stale multipart uploads under the root; prints each key.
pub fn sweep(args: &SweepArgs) -> Result<(), String> {
    let mut c = S3Config::new(
        args.s3_endpoint.clone(),
        args.s3_region.clone(),
        args.s3_bucket.clone(),
        args.s3_access_key.clone(),
        args.s3_secret_key.clone(),
    );
    c.root = args.s3_root.clone();
    c.ca_file = args.s3_ca_file.clone();
    let store = S3Store::open(c).map_err(|e| e.to_string())?;
    let aborted = store
        .abort_stale_multipart(Duration::from_secs(args.older_than_seconds))
        .map_err(|e| e.to_string())?;
    for key in &aborted {
        println!("aborted multipart upload of {key}");
    }
    println!("aborted {} stale multipart upload(s)", aborted.len());
    Ok(())
}

/// Runs the benchmark; prints a table on stdout.
pub fn run(args: &BenchArgs) -> Result<(), String> {
    let sizes = args
        .sizes
        .iter()
        .map(|s| parse_size(s).map(|n| (s.trim().to_owned(), n)))
        .collect::<Result<Vec<_>, _>>()?;
    if args.concurrency == 0 || args.count == 0 {
        return Err("--concurrency and --count must be at least 1".into());
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let tag = format!("berth-bench-{}-{nanos:x}", std::process::id());
    let work = base.join(&tag);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let result = (|| {
        let store = open_store(args, &work, &tag)?;
        println!(
            "# berthctl bench --backend {} --concurrency {} --count {} ({} store)",
            args.backend,
            args.concurrency,
            args.count,
            store.name()
        );
        println!(
            "{:<8} {:<6} {:>9} {:>10} {:>9} {:>9} {:>9}",
            "size", "op", "ops/s", "MB/s", "p50 ms", "p90 ms", "p99 ms"
        );
        for (label, size) in &sizes {
            bench_size(store.as_ref(), args, label, *size)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn open_store(args: &BenchArgs, work: &Path, tag: &str) -> Result<Arc<dyn BlobStore>, String> {
    let local = || LocalStore::open(&work.join("blobs")).map_err(|e| e.to_string());
    if args.backend == "local" {
        return Ok(Arc::new(local()?));
    }
    let need = |name: &str, v: &Option<String>| {
        v.clone().ok_or_else(|| {
            format!(
                "--backend {} needs --{name} (or BERTH_{})",
                args.backend,
                name.replace('-', "_").to_uppercase()
            )
        })
    };
    let mut c = S3Config::new(
        need("s3-endpoint", &args.s3_endpoint)?,
        args.s3_region.clone(),
        need("s3-bucket", &args.s3_bucket)?,
        need("s3-access-key", &args.s3_access_key)?,
        need("s3-secret-key", &args.s3_secret_key)?,
    );
    c.ca_file = args.s3_ca_file.clone();
    let root = args.s3_root.trim_matches('/');
    c.root = if root.is_empty() {
        tag.to_owned()
    } else {
        format!("{root}/{tag}")
    };
    if args.create_bucket {
        c.create_bucket()
            .map_err(|e| format!("create bucket {}: {e}", c.bucket))?;
    }
    let remote = S3Store::open(c).map_err(|e| e.to_string())?;
    if args.backend == "s3" {
        let remote = remote
            .with_staging_dir(&work.join("staging"))
            .map_err(|e| e.to_string())?;
        return Ok(Arc::new(remote));
    }
    let t = TieredStore::open(
        local()?,
        remote,
        TierMode::WriteBack,
        &work.join("tier"),
        args.cache_max_bytes,
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(t))
}

fn bench_size(
    store: &dyn BlobStore,
    args: &BenchArgs,
    label: &str,
    size: u64,
) -> Result<(), String> {
    // Distinct content per blob: a shared pseudo-random body, blob index in
    // the first 8 bytes.
    let mut body = vec![0u8; size as usize];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size;
    for chunk in body.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let digests: Vec<Digest> = (0..args.count)
        .map(|i| Digest::of(Algorithm::Blake3, format!("bench {size} {i}").as_bytes()))
        .collect();
    let stage = |i: usize| -> Result<Option<Staged>, String> {
        let id = format!("bench-{size}-{i}");
        let n = body.len().min(8);
        let mut data = body.clone();
        data[..n].copy_from_slice(&(i as u64).to_le_bytes()[..n]);
        let s = store.stage(&id).map_err(|e| e.to_string())?;
        s.write_at(&data, 0)
            .and_then(|()| s.sync())
            .map_err(|e| e.to_string())?;
        Ok(Some(s))
    };
    // Each put takes its staged blob out of its slot.
    let staged: Vec<Mutex<Option<Staged>>> = (0..args.count)
        .map(|i| stage(i).map(Mutex::new))
        .collect::<Result<_, _>>()?;
    drop(body);

    let ops: [(&str, Box<Op<'_>>); 4] = [
        (
            "put",
            Box::new(|i| {
                let s = staged[i]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .ok_or_else(|| format!("blob {i} already put"))?;
                store
                    .commit(s, &digests[i], PutMode::CreateOnly)
                    .map(|_| size)
                    .map_err(|e| e.to_string())
            }),
        ),
        (
            "get",
            Box::new(|i| {
                let data = store.get(&digests[i], None).map_err(|e| e.to_string())?;
                // Touch every page so mapped reads are really read.
                let sum = data
                    .as_ref()
                    .iter()
                    .step_by(4096)
                    .fold(0u8, |a, b| a.wrapping_add(*b));
                std::hint::black_box(sum);
                if data.len() as u64 != size {
                    return Err(format!(
                        "get {}: {} bytes, want {size}",
                        digests[i],
                        data.len()
                    ));
                }
                Ok(size)
            }),
        ),
        (
            "stat",
            Box::new(|i| match store.stat(&digests[i]) {
                Ok(Some(n)) if n == size => Ok(0),
                Ok(other) => Err(format!("stat {}: {other:?}, want {size}", digests[i])),
                Err(e) => Err(e.to_string()),
            }),
        ),
        (
            "delete",
            Box::new(|i| {
                store
                    .delete(&digests[i])
                    .map(|_| 0)
                    .map_err(|e| e.to_string())
            }),
        ),
    ];
    for (name, op) in &ops {
        let (elapsed, mut lat, bytes) = run_phase(args, &format!("{label} {name}"), op.as_ref())?;
        lat.sort();
        let pct = |p: f64| {
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i].as_secs_f64() * 1e3
        };
        let secs = elapsed.as_secs_f64().max(1e-9);
        let mbs = if bytes > 0 {
            format!("{:.1}", bytes as f64 / secs / 1e6)
        } else {
            "-".to_owned()
        };
        println!(
            "{:<8} {:<6} {:>9.1} {:>10} {:>9.2} {:>9.2} {:>9.2}",
            label,
            name,
            args.count as f64 / secs,
            mbs,
            pct(0.50),
            pct(0.90),
            pct(0.99)
        );
    }
    for i in 0..args.count {
        let _ = store.abort(&format!("bench-{size}-{i}"));
    }
    Ok(())
}

/// One benchmarked operation on blob `i`; returns the bytes it moved.
type Op<'a> = dyn Fn(usize) -> Result<u64, String> + Sync + 'a;

/// Runs `op` for every index on `concurrency` threads; returns wall time,
/// per-op latencies and bytes moved.
fn run_phase(
    args: &BenchArgs,
    label: &str,
    op: &Op<'_>,
) -> Result<(Duration, Vec<Duration>, u64), String> {
    let bar = ProgressBar::new(args.count as u64);
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>14} [{bar:40}] {pos}/{len} {per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_owned());
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let next = AtomicUsize::new(0);
    let lat = Mutex::new(Vec::with_capacity(args.count));
    let bytes = AtomicUsize::new(0);
    let err: Mutex<Option<String>> = Mutex::new(None);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..args.concurrency.min(args.count) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.count {
                    return;
                }
                let t = Instant::now();
                match op(i) {
                    Ok(n) => {
                        let d = t.elapsed();
                        lat.lock().unwrap_or_else(|p| p.into_inner()).push(d);
                        bytes.fetch_add(n as usize, Ordering::Relaxed);
                        bar.inc(1);
                    }
                    Err(e) => {
                        err.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        next.store(args.count, Ordering::Relaxed);
                        return;
                    }
                }
            });
        }
    });
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    if let Some(e) = err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(format!("{label}: {e}"));
    }
    let lat = lat.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok((elapsed, lat, bytes.load(Ordering::Relaxed) as u64))
}

/// `4KiB`, `1MiB`, `64M`, `512` → bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?}: expected a number with an optional unit, like 4KiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => {
            return Err(format!(
                "size {s:?}: unknown unit {other:?} (B, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size(" 64M "), Ok(64 << 20));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("4XB").is_err());
        assert!(parse_size("KiB").is_err());
    }
}
