//! Storage settings: which backend holds blob bytes, the bucket, the local
//! cache budget. The one place their names, their parsing and their
//! defaults live, shared by the server (`berth serve`) and berthctl, so the
//! tools open the same store the server writes to without linking the
//! HTTP front.
//!
//! Each setting has one name per source, derived from one table
//! ([`KEYS`]):
//!
//! ```text
//! config file key          environment                   server flag
//! storage_backend          BERTH_STORAGE_BACKEND         --storage-backend
//! s3_endpoint              BERTH_S3_ENDPOINT             --s3-endpoint
//! s3_region                BERTH_S3_REGION               --s3-region
//! s3_bucket                BERTH_S3_BUCKET               --s3-bucket
//! s3_access_key            BERTH_S3_ACCESS_KEY           --s3-access-key
//! s3_secret_key            BERTH_S3_SECRET_KEY           --s3-secret-key
//! s3_root                  BERTH_S3_ROOT                 --s3-root
//! s3_path_style            BERTH_S3_PATH_STYLE           --s3-path-style
//! s3_multipart_threshold   BERTH_S3_MULTIPART_THRESHOLD  --s3-multipart-threshold
//! s3_ca_file               BERTH_S3_CA_FILE              --s3-ca-file
//! cache_max_bytes          BERTH_CACHE_MAX_BYTES         --cache-max-bytes
//! database_url             BERTH_DATABASE_URL            --database-url
//! database_ca_file         BERTH_DATABASE_CA_FILE        --database-ca-file
//! database_schema          BERTH_DATABASE_SCHEMA         --database-schema
//! ```
//!
//! `database_url` (a `postgres://` URL) turns on cluster mode: the index of
//! record lives in that PostgreSQL database (`docs/cluster.md`), which
//! needs the `s3` backend (write-through: a blob is acknowledged once it is
//! in the bucket). `tiered` is refused with it, because its write-back
//! would lose acknowledged blobs with a node; `local` too, because other
//! nodes could not read the blobs.
//!
//! Sources are layered ([`StorageSettings::or`]): flags over the
//! environment over the config file over the defaults; then
//! [`StorageSettings::resolve`] checks them and builds the [`Backend`].
//! A new setting is one field here, one row of [`KEYS`], one line in
//! `from_env_with` and one in `or`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Backend, BackendKind, S3Config, DEFAULT_CACHE_MAX_BYTES};
use crate::index::DatabaseConfig;

/// The storage settings of one source (flags, environment, config file).
/// Every setting is optional: an unset one falls through to the next
/// source, then to its default. `Debug` never shows the secret key.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// `local` (default), `s3` or `tiered`.
    pub storage_backend: Option<String>,
    pub s3_endpoint: Option<String>,
    /// Default `us-east-1` (Ceph RGW accepts any).
    pub s3_region: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_access_key: Option<String>,
    pub s3_secret_key: Option<String>,
    /// Key prefix of every object; default empty.
    pub s3_root: Option<String>,
    /// Default `true`.
    pub s3_path_style: Option<bool>,
    /// Default [`super::s3::DEFAULT_MULTIPART_THRESHOLD`].
    pub s3_multipart_threshold: Option<u64>,
    /// PEM file of CA certificates trusted for an `https://` endpoint,
    /// besides the system's (a private CA).
    pub s3_ca_file: Option<PathBuf>,
    /// Local cache budget of `s3` and `tiered`; default
    /// [`DEFAULT_CACHE_MAX_BYTES`].
    pub cache_max_bytes: Option<u64>,
    /// Cluster mode's PostgreSQL database (`postgres://…`).
    pub database_url: Option<String>,
    /// PEM file of CAs trusted for the database's TLS certificate.
    pub database_ca_file: Option<PathBuf>,
    /// Schema of berth's tables; default `berth`.
    pub database_schema: Option<String>,
}

/// The config file keys of the storage settings; the environment variable
/// of each is [`env_name`] of it.
pub const KEYS: &[&str] = &[
    "storage_backend",
    "s3_endpoint",
    "s3_region",
    "s3_bucket",
    "s3_access_key",
    "s3_secret_key",
    "s3_root",
    "s3_path_style",
    "s3_multipart_threshold",
    "s3_ca_file",
    "cache_max_bytes",
    "database_url",
    "database_ca_file",
    "database_schema",
];

/// The environment variable of config key `key`: `BERTH_` and the key in
/// upper case.
pub fn env_name(key: &str) -> String {
    format!("BERTH_{}", key.to_ascii_uppercase())
}

impl std::fmt::Debug for StorageSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSettings")
            .field("storage_backend", &self.storage_backend)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_access_key", &self.s3_access_key)
            .field(
                "s3_secret_key",
                &self.s3_secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("s3_root", &self.s3_root)
            .field("s3_path_style", &self.s3_path_style)
            .field("s3_multipart_threshold", &self.s3_multipart_threshold)
            .field("s3_ca_file", &self.s3_ca_file)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .field(
                "database_url",
                &self.database().ok().flatten().map(|d| d.redacted_url()),
            )
            .field("database_ca_file", &self.database_ca_file)
            .field("database_schema", &self.database_schema)
            .finish()
    }
}

impl StorageSettings {
    /// The settings in the process environment.
    pub fn from_env() -> Result<StorageSettings, String> {
        StorageSettings::from_env_with(|name| std::env::var(name).ok())
    }

    /// The settings in an environment `var` looks up. An empty variable is
    /// unset (as for the server's other variables). Booleans take
    /// `true/false`, `yes/no`, `on/off`, `1/0` (any case).
    pub fn from_env_with(var: impl Fn(&str) -> Option<String>) -> Result<StorageSettings, String> {
        let text = |key: &str| var(&env_name(key)).filter(|v| !v.is_empty());
        let number = |key: &str| -> Result<Option<u64>, String> {
            text(key)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|e| {
                        format!("{}: {v:?} is not a number of bytes: {e}", env_name(key))
                    })
                })
                .transpose()
        };
        let boolean = |key: &str| -> Result<Option<bool>, String> {
            text(key)
                .map(|v| {
                    parse_bool(&v).ok_or_else(|| {
                        format!("{}: {v:?} is not a boolean (true or false)", env_name(key))
                    })
                })
                .transpose()
        };
        Ok(StorageSettings {
            storage_backend: text("storage_backend"),
            s3_endpoint: text("s3_endpoint"),
            s3_region: text("s3_region"),
            s3_bucket: text("s3_bucket"),
            s3_access_key: text("s3_access_key"),
            s3_secret_key: text("s3_secret_key"),
            s3_root: text("s3_root"),
            s3_path_style: boolean("s3_path_style")?,
            s3_multipart_threshold: number("s3_multipart_threshold")?,
            s3_ca_file: text("s3_ca_file").map(PathBuf::from),
            cache_max_bytes: number("cache_max_bytes")?,
            database_url: text("database_url"),
            database_ca_file: text("database_ca_file").map(PathBuf::from),
            database_schema: text("database_schema"),
        })
    }

    /// Takes the storage keys ([`KEYS`]) out of a config file's JSON object
    /// and parses them; the caller parses what is left (the server refuses
    /// keys nobody knows).
    pub fn take_from(
        object: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<StorageSettings, serde_json::Error> {
        let mut mine = serde_json::Map::new();
        for key in KEYS {
            if let Some(v) = object.remove(*key) {
                mine.insert((*key).to_owned(), v);
            }
        }
        serde_json::from_value(serde_json::Value::Object(mine))
    }

    /// The storage settings of the server's config file at `path` (other
    /// keys are the server's, and ignored here).
    pub fn from_config_file(path: &Path) -> Result<StorageSettings, String> {
        let text = std::fs::read(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
        let serde_json::Value::Object(mut object) = value else {
            return Err(format!("config {}: expected a JSON object", path.display()));
        };
        StorageSettings::take_from(&mut object)
            .map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// These settings, with each unset one taken from `lower`.
    pub fn or(self, lower: StorageSettings) -> StorageSettings {
        StorageSettings {
            storage_backend: self.storage_backend.or(lower.storage_backend),
            s3_endpoint: self.s3_endpoint.or(lower.s3_endpoint),
            s3_region: self.s3_region.or(lower.s3_region),
            s3_bucket: self.s3_bucket.or(lower.s3_bucket),
            s3_access_key: self.s3_access_key.or(lower.s3_access_key),
            s3_secret_key: self.s3_secret_key.or(lower.s3_secret_key),
            s3_root: self.s3_root.or(lower.s3_root),
            s3_path_style: self.s3_path_style.or(lower.s3_path_style),
            s3_multipart_threshold: self.s3_multipart_threshold.or(lower.s3_multipart_threshold),
            s3_ca_file: self.s3_ca_file.or(lower.s3_ca_file),
            cache_max_bytes: self.cache_max_bytes.or(lower.cache_max_bytes),
            database_url: self.database_url.or(lower.database_url),
            database_ca_file: self.database_ca_file.or(lower.database_ca_file),
            database_schema: self.database_schema.or(lower.database_schema),
        }
    }

    /// Checks the settings and builds the backend they name, with defaults
    /// for what is unset. `s3` and `tiered` need the endpoint, bucket and
    /// both keys; the error names the missing one by its config key and
    /// variable.
    ///
    /// With `database_url` (cluster mode) the backend must be `s3`.
    pub fn resolve(self) -> Result<Backend, String> {
        let kind = match self.storage_backend.as_deref() {
            None => BackendKind::Local,
            Some(k) => k.parse()?,
        };
        if self.database_url.is_some() && kind != BackendKind::S3 {
            return Err(format!(
                "cluster mode (database_url, env BERTH_DATABASE_URL) needs storage backend s3, not {}: {}",
                kind.name(),
                match kind {
                    BackendKind::Tiered => "tiered keeps new blobs on one node's disk until they are copied, so losing that node would lose acknowledged blobs",
                    _ => "the other nodes must read every blob from the shared bucket",
                }
            ));
        }
        let cache_max_bytes = self.cache_max_bytes.unwrap_or(DEFAULT_CACHE_MAX_BYTES);
        if kind == BackendKind::Local {
            return Ok(Backend {
                kind,
                s3: None,
                cache_max_bytes,
            });
        }
        let need = |key: &str, v: Option<String>| {
            v.filter(|v| !v.is_empty()).ok_or_else(|| {
                format!(
                    "storage backend {} needs {key} (env {}, config key {key})",
                    kind.name(),
                    env_name(key),
                )
            })
        };
        let mut s3 = S3Config::new(
            need("s3_endpoint", self.s3_endpoint)?,
            self.s3_region.unwrap_or_else(|| "us-east-1".to_owned()),
            need("s3_bucket", self.s3_bucket)?,
            need("s3_access_key", self.s3_access_key)?,
            need("s3_secret_key", self.s3_secret_key)?,
        );
        s3.root = self.s3_root.unwrap_or_default();
        s3.path_style = self.s3_path_style.unwrap_or(true);
        if let Some(t) = self.s3_multipart_threshold {
            s3.multipart_threshold = t;
        }
        s3.ca_file = self.s3_ca_file;
        Ok(Backend {
            kind,
            s3: Some(s3),
            cache_max_bytes,
        })
    }
}

impl StorageSettings {
    /// How to reach `bucket` (objects under `root`) with these settings'
    /// endpoint, region, credentials, path style and CA, whatever the
    /// backend: a bucket another program wrote, which `berthctl import`
    /// reads.
    pub fn s3_source(&self, bucket: &str, root: &str) -> Result<S3Config, String> {
        let mut s = self.clone();
        s.storage_backend = Some(BackendKind::S3.name().to_owned());
        s.s3_bucket = Some(bucket.to_owned());
        s.s3_root = Some(root.to_owned());
        s.database_url = None;
        s.resolve()?
            .s3
            .ok_or_else(|| format!("no S3 settings for bucket {bucket}"))
    }

    /// Cluster mode's database, if `database_url` is set: a `postgres://`
    /// or `postgresql://` URL.
    pub fn database(&self) -> Result<Option<DatabaseConfig>, String> {
        let Some(url) = self.database_url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "database_url (env BERTH_DATABASE_URL) must be a postgres:// URL".to_owned(),
            );
        }
        let mut db = DatabaseConfig::new(url);
        db.ca_file = self.database_ca_file.clone();
        if let Some(schema) = &self.database_schema {
            db.schema = schema.clone();
        }
        Ok(Some(db))
    }
}

/// The boolean spellings clap's `BoolishValueParser` takes, which the
/// server's other boolean variables use.
fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "t" | "true" | "on" | "1" => Some(true),
        "n" | "no" | "f" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn names_of_each_source() {
        let names: Vec<String> = KEYS.iter().map(|k| env_name(k)).collect();
        assert_eq!(
            names,
            [
                "BERTH_STORAGE_BACKEND",
                "BERTH_S3_ENDPOINT",
                "BERTH_S3_REGION",
                "BERTH_S3_BUCKET",
                "BERTH_S3_ACCESS_KEY",
                "BERTH_S3_SECRET_KEY",
                "BERTH_S3_ROOT",
                "BERTH_S3_PATH_STYLE",
                "BERTH_S3_MULTIPART_THRESHOLD",
                "BERTH_S3_CA_FILE",
                "BERTH_CACHE_MAX_BYTES",
                "BERTH_DATABASE_URL",
                "BERTH_DATABASE_CA_FILE",
                "BERTH_DATABASE_SCHEMA",
            ]
        );
        // Every key of the table is a field, and every field a key.
        let mut object = serde_json::Map::new();
        for k in KEYS {
            object.insert((*k).to_owned(), serde_json::Value::Null);
        }
        object.insert("listen".into(), serde_json::Value::Null);
        StorageSettings::take_from(&mut object).expect("every key parses");
        assert_eq!(object.keys().collect::<Vec<_>>(), ["listen"]);
    }

    #[test]
    fn environment_then_file_then_defaults() {
        let from_env = StorageSettings::from_env_with(env(&[
            ("BERTH_STORAGE_BACKEND", "tiered"),
            ("BERTH_S3_ENDPOINT", "http://127.0.0.1:1"),
            ("BERTH_S3_BUCKET", ""),
            ("BERTH_S3_PATH_STYLE", "off"),
            ("BERTH_CACHE_MAX_BYTES", "1000"),
        ]))
        .expect("env");
        let mut object = serde_json::json!({
            "s3_bucket": "b", "s3_endpoint": "http://elsewhere", "s3_access_key": "ak",
            "s3_secret_key": "s3cr3t", "s3_root": "r", "listen": "0.0.0.0:1"
        });
        let file =
            StorageSettings::take_from(object.as_object_mut().expect("object")).expect("file");
        let settings = from_env.or(file);
        assert!(!format!("{settings:?}").contains("s3cr3t"), "{settings:?}");
        let b = settings.resolve().expect("resolve");
        assert_eq!(b.kind, BackendKind::Tiered);
        assert_eq!(b.cache_max_bytes, 1000);
        let s3 = b.s3.expect("s3");
        assert_eq!(s3.endpoint, "http://127.0.0.1:1", "env over file");
        assert_eq!(s3.bucket, "b", "an empty variable is unset");
        assert_eq!((s3.region.as_str(), s3.root.as_str()), ("us-east-1", "r"));
        assert!(!s3.path_style);

        let local = StorageSettings::default().resolve().expect("defaults");
        assert_eq!(local, Backend::local());
    }

    #[test]
    fn errors_name_the_setting() {
        let e = StorageSettings {
            storage_backend: Some("s3".into()),
            ..StorageSettings::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(
            e,
            "storage backend s3 needs s3_endpoint (env BERTH_S3_ENDPOINT, config key s3_endpoint)"
        );
        let e = StorageSettings {
            storage_backend: Some("ceph".into()),
            ..StorageSettings::default()
        }
        .resolve()
        .unwrap_err();
        assert!(e.contains("unknown storage backend"), "{e}");
        let e =
            StorageSettings::from_env_with(env(&[("BERTH_S3_PATH_STYLE", "maybe")])).unwrap_err();
        assert!(e.contains("BERTH_S3_PATH_STYLE"), "{e}");
        let e =
            StorageSettings::from_env_with(env(&[("BERTH_CACHE_MAX_BYTES", "-1")])).unwrap_err();
        assert!(e.contains("BERTH_CACHE_MAX_BYTES"), "{e}");
        let mut object = serde_json::json!({"s3_path_style": "yes"});
        assert!(StorageSettings::take_from(object.as_object_mut().expect("object")).is_err());
    }

    #[test]
    fn cluster_mode_needs_the_s3_backend_and_a_postgres_url() {
        let s3 = |backend: &str| {
            StorageSettings::from_env_with(env(&[
                ("BERTH_STORAGE_BACKEND", backend),
                ("BERTH_S3_ENDPOINT", "http://127.0.0.1:1"),
                ("BERTH_S3_BUCKET", "b"),
                ("BERTH_S3_ACCESS_KEY", "ak"),
                ("BERTH_S3_SECRET_KEY", "sk"),
                ("BERTH_DATABASE_URL", "postgres://berth:pw@db/berth"),
            ]))
            .expect("env")
        };
        let ok = s3("s3");
        assert!(!format!("{ok:?}").contains(":pw@"), "{ok:?}");
        let db = ok.database().expect("url").expect("cluster mode");
        assert_eq!(db.url, "postgres://berth:pw@db/berth");
        assert_eq!(ok.resolve().expect("s3").kind, BackendKind::S3);
        let e = s3("tiered").resolve().unwrap_err();
        assert!(
            e.contains("needs storage backend s3") && e.contains("acknowledged"),
            "{e}"
        );
        let e = s3("local").resolve().unwrap_err();
        assert!(e.contains("needs storage backend s3"), "{e}");
        let e = StorageSettings {
            database_url: Some("mysql://x".into()),
            ..StorageSettings::default()
        }
        .database()
        .unwrap_err();
        assert!(e.contains("postgres://"), "{e}");
        assert_eq!(StorageSettings::default().database(), Ok(None));
    }
}
