//! Server configuration: flags and environment, an optional JSON file, and
//! defaults, in that order of precedence.
//!
//! The file (`--config FILE`, env `BERTH_CONFIG`) is a JSON object with any
//! of these keys:
//!
//! ```json
//! {"listen": "0.0.0.0:5000", "data_dir": "/var/lib/berth", "read_only": false,
//!  "delete_enabled": true, "upload_ttl_seconds": 86400,
//!  "gc_interval_seconds": 3600, "gc_grace_seconds": 3600}
//! ```
//!
//! Unknown keys are an error (a typo should not silently change nothing).
//! `read_only` is on if any source turns it on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
pub const DEFAULT_DATA_DIR: &str = "./berth-data";
pub const DEFAULT_UPLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(3600);

/// Everything `serve` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Address to listen on, `host:port`.
    pub listen: String,
    /// The engine's data directory.
    pub data_dir: PathBuf,
    /// Refuse every write with `405 UNSUPPORTED`.
    pub read_only: bool,
    /// Allow deleting manifests, tags and blobs (else `405 UNSUPPORTED`).
    pub delete_enabled: bool,
    /// Upload sessions untouched this long are expired.
    pub upload_ttl: Duration,
    /// Online GC runs this often (`None`, from 0: off).
    pub gc_interval: Option<Duration>,
    /// Unreferenced blobs touched within this window survive GC.
    pub gc_grace: Duration,
}

impl Config {
    /// Defaults with `data_dir`: what tests start from.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: DEFAULT_LISTEN.to_owned(),
            data_dir: data_dir.into(),
            read_only: false,
            delete_enabled: true,
            upload_ttl: DEFAULT_UPLOAD_TTL,
            gc_interval: None,
            gc_grace: DEFAULT_GC_GRACE,
        }
    }

    /// Resolves flags, the config file they name, and defaults.
    pub fn from_args(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let delete_enabled = if args.disable_delete {
            false
        } else {
            args.delete_enabled.or(file.delete_enabled).unwrap_or(true)
        };
        Ok(Config {
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            read_only: args.read_only || file.read_only.unwrap_or(false),
            delete_enabled,
            upload_ttl: args
                .upload_ttl_seconds
                .or(file.upload_ttl_seconds)
                .map_or(DEFAULT_UPLOAD_TTL, Duration::from_secs),
            gc_interval: args
                .gc_interval_seconds
                .or(file.gc_interval_seconds)
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            gc_grace: args
                .gc_grace_seconds
                .or(file.gc_grace_seconds)
                .map_or(DEFAULT_GC_GRACE, Duration::from_secs),
        })
    }
}

/// `berth serve` flags.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5000]
    #[arg(long, env = "BERTH_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory (index, blobs, uploads) [default: ./berth-data]
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// JSON config file (keys: listen, data_dir, read_only, delete_enabled,
    /// upload_ttl_seconds, gc_interval_seconds, gc_grace_seconds); flags and
    /// environment override it
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Refuse all writes (405 UNSUPPORTED)
    #[arg(long, env = "BERTH_READ_ONLY")]
    pub read_only: bool,
    /// Allow deleting manifests, tags and blobs [default: true]
    #[arg(long, env = "BERTH_DELETE_ENABLED", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub delete_enabled: Option<bool>,
    /// Same as --delete-enabled false
    #[arg(long, conflicts_with = "delete_enabled")]
    pub disable_delete: bool,
    /// Expire upload sessions untouched for this many seconds [default: 86400]
    #[arg(long, env = "BERTH_UPLOAD_TTL_SECONDS", value_name = "SECONDS")]
    pub upload_ttl_seconds: Option<u64>,
    /// Run online GC every this many seconds; 0 turns it off [default: 0]
    #[arg(long, env = "BERTH_GC_INTERVAL_SECONDS", value_name = "SECONDS")]
    pub gc_interval_seconds: Option<u64>,
    /// GC keeps unreferenced blobs touched within this many seconds [default: 3600]
    #[arg(long, env = "BERTH_GC_GRACE_SECONDS", value_name = "SECONDS")]
    pub gc_grace_seconds: Option<u64>,
}

/// The config file's contents; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    read_only: Option<bool>,
    delete_enabled: Option<bool>,
    upload_ttl_seconds: Option<u64>,
    gc_interval_seconds: Option<u64>,
    gc_grace_seconds: Option<u64>,
}

impl FileConfig {
    fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("berth: config {path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("berth: config {path}: {source} (expected a JSON object with keys listen, data_dir, read_only, delete_enabled, upload_ttl_seconds, gc_interval_seconds, gc_grace_seconds)", path = .path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_args(ServeArgs::default()).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(!c.read_only);
        assert!(c.delete_enabled);
        assert_eq!(c.upload_ttl, DEFAULT_UPLOAD_TTL);
        assert_eq!(c.gc_interval, None);
        assert_eq!(c.gc_grace, DEFAULT_GC_GRACE);
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.json");
        std::fs::write(
            &path,
            r#"{"listen":"0.0.0.0:1","data_dir":"/d","read_only":true,"delete_enabled":false,"upload_ttl_seconds":5,"gc_interval_seconds":7,"gc_grace_seconds":0}"#,
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(path.clone()),
            ..ServeArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.listen, "0.0.0.0:1");
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert!(c.read_only);
        assert!(!c.delete_enabled);
        assert_eq!(c.upload_ttl, Duration::from_secs(5));
        assert_eq!(c.gc_interval, Some(Duration::from_secs(7)));
        assert_eq!(c.gc_grace, Duration::ZERO);

        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:2".into()),
            delete_enabled: Some(true),
            gc_interval_seconds: Some(0),
            ..ServeArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.gc_interval, None, "0 turns GC off");
        assert_eq!(c.listen, "127.0.0.1:2");
        assert!(c.delete_enabled);
    }

    #[test]
    fn bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.json");
        std::fs::write(&path, r#"{"listn":"x"}"#).unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..ServeArgs::default()
        };
        let e = Config::from_args(args).unwrap_err();
        assert!(e.to_string().contains("listn"), "{e}");
        let args = ServeArgs {
            config: Some(dir.path().join("missing.json")),
            ..ServeArgs::default()
        };
        assert!(matches!(
            Config::from_args(args),
            Err(ConfigError::Read { .. })
        ));
    }
}
