//! Server configuration: flags and environment, an optional JSON file, and
//! defaults, in that order of precedence.
//!
//! The file (`--config FILE`, env `BERTH_CONFIG`) is a JSON object with any
//! of these keys:
//!
//! ```json
//! {"listen": "0.0.0.0:5000", "data_dir": "/var/lib/berth", "read_only": false,
//!  "delete_enabled": true, "upload_ttl_seconds": 86400,
//!  "chart_allow_overwrite": false}
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
/// Memory budget of the rendered `index.yaml` cache.
pub const DEFAULT_CHART_INDEX_CACHE_BYTES: usize = 256 << 20;

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
    /// Re-uploading an existing chart version through the chart API
    /// replaces it (else `409` unless the request says `?force`).
    pub chart_allow_overwrite: bool,
    /// Bounds on uploaded chart archives (not configurable from the
    /// command line; tests lower them).
    pub chart_limits: crate::charts::Limits,
    /// Memory budget of the rendered `index.yaml` cache.
    pub chart_index_cache_bytes: usize,
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
            chart_allow_overwrite: false,
            chart_limits: crate::charts::Limits::default(),
            chart_index_cache_bytes: DEFAULT_CHART_INDEX_CACHE_BYTES,
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
            chart_allow_overwrite: args
                .chart_allow_overwrite
                .or(file.chart_allow_overwrite)
                .unwrap_or(false),
            chart_limits: crate::charts::Limits::default(),
            chart_index_cache_bytes: DEFAULT_CHART_INDEX_CACHE_BYTES,
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
    /// upload_ttl_seconds, chart_allow_overwrite); flags and environment
    /// override it
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
    /// Let chart uploads replace an existing chart version (else 409 unless
    /// the request says ?force) [default: false]
    #[arg(long, env = "BERTH_CHART_ALLOW_OVERWRITE", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    pub chart_allow_overwrite: Option<bool>,
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
    chart_allow_overwrite: Option<bool>,
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
    #[error("berth: config {path}: {source} (expected a JSON object with keys listen, data_dir, read_only, delete_enabled, upload_ttl_seconds, chart_allow_overwrite)", path = .path.display())]
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
        assert!(!c.chart_allow_overwrite);
    }

    #[test]
    fn file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.json");
        std::fs::write(
            &path,
            r#"{"listen":"0.0.0.0:1","data_dir":"/d","read_only":true,"delete_enabled":false,"upload_ttl_seconds":5,"chart_allow_overwrite":true}"#,
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
        assert!(c.chart_allow_overwrite);

        let args = ServeArgs {
            config: Some(path),
            listen: Some("127.0.0.1:2".into()),
            delete_enabled: Some(true),
            chart_allow_overwrite: Some(false),
            ..ServeArgs::default()
        };
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.listen, "127.0.0.1:2");
        assert!(c.delete_enabled);
        assert!(!c.chart_allow_overwrite);
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
