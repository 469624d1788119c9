//! Upstream registry endpoints (Harbor's `/api/v2.0/registries`) and the
//! proxy cache projects that pull through them.
//!
//! A registry is a name, a type, a URL and an optional credential. A
//! project created with a `registry_id` is a proxy cache of that registry
//! (`docs/proxy-cache.md`); the link is fixed for the project's life, and
//! a registry is not deleted while a project or a replication policy uses
//! it. Replication policies (Harbor's pull-based replication) copy from a
//! registry on a schedule or on demand (`docs/proxy-cache.md`,
//! "Replication"). Every change is one synced batch under the engine's
//! write lock, like every index write.

use crate::accounts::AccountError;
use crate::engine::Engine;
use crate::error::StorageError;
use crate::index::Batch;
use crate::keys::{IdKind, PolicyKey, ProjectKey, RegistryKey, WholeFamily};
use crate::records::{self, PolicyRecord, RegistryCredential, RegistryRecord};

/// The registry types berth pulls through: those that speak the OCI
/// distribution API with Basic or Docker token auth. Harbor's other types
/// (AWS ECR's signed tokens, Huawei SWR, …) are refused.
pub const REGISTRY_KINDS: [&str; 8] = [
    "docker-registry",
    "docker-hub",
    "harbor",
    "quay",
    "github-ghcr",
    "google-gcr",
    "azure-acr",
    "jfrog-artifactory",
];

/// Docker Hub's registry API, for `docker-hub` registries given the
/// web address Harbor's UI suggests (or none).
pub const DOCKER_HUB_API: &str = "https://registry-1.docker.io";

/// What a registry is, as created or updated (everything but its times).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrySpec {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub credential: Option<RegistryCredential>,
    pub insecure: bool,
    pub ca_certificate: String,
    pub description: String,
}

impl RegistrySpec {
    /// The spec of a stored record.
    pub fn of(rec: &RegistryRecord) -> RegistrySpec {
        RegistrySpec {
            name: rec.name.clone(),
            kind: rec.kind.clone(),
            url: rec.url.clone(),
            credential: rec.credential.clone(),
            insecure: rec.insecure,
            ca_certificate: rec.ca_certificate.clone(),
            description: rec.description.clone(),
        }
    }

    /// Checks the fields and puts the URL in its one spelling (no trailing
    /// slash; Docker Hub's web address becomes its registry API).
    pub fn validate(mut self) -> Result<RegistrySpec, AccountError> {
        let invalid = |what: &str, reason: &str| AccountError::Invalid {
            what: what.to_owned(),
            reason: reason.to_owned(),
        };
        if self.name.trim().is_empty()
            || self.name.len() > 255
            || self.name.chars().any(char::is_control)
        {
            return Err(invalid(
                "registry name",
                "give 1-255 characters, no control characters",
            ));
        }
        if !REGISTRY_KINDS.contains(&self.kind.as_str()) {
            return Err(invalid(
                &format!("registry type {:?}", self.kind),
                &format!("berth pulls through {}", REGISTRY_KINDS.join(", ")),
            ));
        }
        let url = self.url.trim().trim_end_matches('/');
        let url = match (self.kind.as_str(), url) {
            ("docker-hub", "" | "https://hub.docker.com" | "https://docker.io") => DOCKER_HUB_API,
            (_, url) => url,
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let host_ok = rest.is_some_and(|r| {
            let host = r.split('/').next().unwrap_or_default();
            !host.is_empty() && !host.contains('@')
        });
        if !host_ok
            || url.chars().any(|c| c.is_whitespace() || c.is_control())
            || url.contains(['?', '#'])
        {
            return Err(invalid(
                &format!("registry URL {:?}", self.url),
                "give http(s)://host[:port][/path], without credentials, query or fragment",
            ));
        }
        self.url = url.to_owned();
        if let Some(c) = &self.credential {
            if c.access_key.is_empty() || c.access_key.contains(':') {
                return Err(invalid(
                    "registry credential",
                    "access_key is a non-empty user name without ':'",
                ));
            }
        }
        Ok(self)
    }
}

impl Engine {
    /// Registers an upstream registry; its name must be new. Returns its id.
    pub fn create_registry(&self, spec: RegistrySpec) -> Result<u64, AccountError> {
        let spec = spec.validate()?;
        let inner = &self.inner;
        let g = inner.lock()?;
        self.check_registry_name(&spec.name, None)?;
        let now = records::now_ms();
        let mut batch = Batch::default();
        let id = inner.next_id(&mut batch, IdKind::Registry)?;
        batch.put(&RegistryKey(id), &spec.into_record(now, now));
        inner.commit(g, batch)?;
        Ok(id)
    }

    /// Registry `id`.
    pub fn registry(&self, id: u64) -> Result<Option<RegistryRecord>, StorageError> {
        self.inner.index.get(&RegistryKey(id))
    }

    /// Every registry, by id.
    pub fn registries(&self) -> Result<Vec<(u64, RegistryRecord)>, StorageError> {
        self.inner
            .index
            .scan(RegistryKey::all())
            .map(|r| r.map(|(RegistryKey(id), rec)| (id, rec)))
            .collect()
    }

    /// Changes registry `id` by `change` (applied to its current spec
    /// under the write lock; an error from it changes nothing); the result
    /// is validated and its name must stay unique.
    pub fn update_registry(
        &self,
        id: u64,
        change: impl FnOnce(&mut RegistrySpec) -> Result<(), AccountError>,
    ) -> Result<RegistryRecord, AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let Some(old) = inner.index.get(&RegistryKey(id))? else {
            return Err(not_found(id));
        };
        let mut spec = RegistrySpec::of(&old);
        change(&mut spec)?;
        let spec = spec.validate()?;
        if spec.name != old.name {
            self.check_registry_name(&spec.name, Some(id))?;
        }
        let rec = spec.into_record(old.created_ms, records::now_ms());
        let mut batch = Batch::default();
        batch.put(&RegistryKey(id), &rec);
        inner.commit(g, batch)?;
        Ok(rec)
    }

    /// Deletes registry `id`; refused ([`AccountError::InUse`]) while a
    /// proxy cache project pulls through it.
    pub fn delete_registry(&self, id: u64) -> Result<(), AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        if !inner.index.contains(&RegistryKey(id))? {
            return Err(not_found(id));
        }
        for entry in inner.index.scan(ProjectKey::all()) {
            let (ProjectKey(project), rec) = entry?;
            if rec.registry_id == Some(id) {
                return Err(AccountError::InUse {
                    what: format!("registry {id}"),
                    by: format!("proxy cache project {project}"),
                });
            }
        }
        for entry in inner.index.scan(PolicyKey::all()) {
            let (PolicyKey(policy), rec) = entry?;
            if rec.registry_id == id {
                return Err(AccountError::InUse {
                    what: format!("registry {id}"),
                    by: format!("replication policy {policy} ({})", rec.name),
                });
            }
        }
        let mut batch = Batch::default();
        batch.delete(&RegistryKey(id));
        inner.commit(g, batch)?;
        Ok(())
    }

    /// Under the write lock: no registry but `except` is named `name`.
    fn check_registry_name(&self, name: &str, except: Option<u64>) -> Result<(), AccountError> {
        for entry in self.inner.index.scan(RegistryKey::all()) {
            let (RegistryKey(id), rec) = entry?;
            if rec.name == name && Some(id) != except {
                return Err(AccountError::Exists {
                    what: format!("registry {name}"),
                });
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Creates a replication policy (its times are set here); its name
    /// must be new and its registry exist. Returns its id.
    pub fn create_policy(&self, mut policy: PolicyRecord) -> Result<u64, AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        self.check_policy(&policy, None)?;
        let now = records::now_ms();
        (policy.created_ms, policy.updated_ms) = (now, now);
        let mut batch = Batch::default();
        let id = inner.next_id(&mut batch, IdKind::Policy)?;
        batch.put(&PolicyKey(id), &policy);
        inner.commit(g, batch)?;
        Ok(id)
    }

    /// Replication policy `id`.
    pub fn policy(&self, id: u64) -> Result<Option<PolicyRecord>, StorageError> {
        self.inner.index.get(&PolicyKey(id))
    }

    /// Every replication policy, by id.
    pub fn policies(&self) -> Result<Vec<(u64, PolicyRecord)>, StorageError> {
        self.inner
            .index
            .scan(PolicyKey::all())
            .map(|r| r.map(|(PolicyKey(id), rec)| (id, rec)))
            .collect()
    }

    /// Changes policy `id` by `change` under the write lock (an error from
    /// it changes nothing); the result is checked as at creation.
    pub fn update_policy(
        &self,
        id: u64,
        change: impl FnOnce(&mut PolicyRecord) -> Result<(), AccountError>,
    ) -> Result<PolicyRecord, AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        let Some(mut rec) = inner.index.get(&PolicyKey(id))? else {
            return Err(AccountError::NotFound {
                what: format!("replication policy {id}"),
            });
        };
        change(&mut rec)?;
        self.check_policy(&rec, Some(id))?;
        rec.updated_ms = records::now_ms();
        let mut batch = Batch::default();
        batch.put(&PolicyKey(id), &rec);
        inner.commit(g, batch)?;
        Ok(rec)
    }

    /// Deletes policy `id`; false if there was none.
    pub fn delete_policy(&self, id: u64) -> Result<bool, AccountError> {
        let inner = &self.inner;
        let g = inner.lock()?;
        if !inner.index.contains(&PolicyKey(id))? {
            return Ok(false);
        }
        let mut batch = Batch::default();
        batch.delete(&PolicyKey(id));
        inner.commit(g, batch)?;
        Ok(true)
    }

    /// Under the write lock: a name no other policy has, a registry that
    /// exists.
    fn check_policy(&self, p: &PolicyRecord, except: Option<u64>) -> Result<(), AccountError> {
        if p.name.trim().is_empty() || p.name.len() > 255 {
            return Err(AccountError::Invalid {
                what: "replication policy name".into(),
                reason: "give 1-255 characters".into(),
            });
        }
        if !self.inner.index.contains(&RegistryKey(p.registry_id))? {
            return Err(AccountError::Invalid {
                what: format!("src_registry {}", p.registry_id),
                reason: "no registry has this id".into(),
            });
        }
        for entry in self.inner.index.scan(PolicyKey::all()) {
            let (PolicyKey(id), rec) = entry?;
            if rec.name == p.name && Some(id) != except {
                return Err(AccountError::Exists {
                    what: format!("replication policy {}", p.name),
                });
            }
        }
        Ok(())
    }
}

/// Held while a replication run of one policy goes on: in cluster mode
/// the policy runs on one node at a time (a session advisory lock); on a
/// single node there is nothing to hold.
pub struct RunLock(#[allow(dead_code)] crate::index::Exclusive);

impl Engine {
    /// The run lock of policy `id`, unless another node holds it.
    pub fn try_run_lock(&self, id: u64) -> Result<Option<RunLock>, StorageError> {
        Ok(self
            .inner
            .index
            .try_exclusive(&format!("replication {id}"))?
            .map(RunLock))
    }
}

impl RegistrySpec {
    /// The record of this spec, with its times.
    pub fn into_record(self, created_ms: u64, updated_ms: u64) -> RegistryRecord {
        RegistryRecord {
            name: self.name,
            kind: self.kind,
            url: self.url,
            credential: self.credential,
            insecure: self.insecure,
            ca_certificate: self.ca_certificate,
            description: self.description,
            created_ms,
            updated_ms,
        }
    }
}

fn not_found(id: u64) -> AccountError {
    AccountError::NotFound {
        what: format!("registry {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, url: &str) -> RegistrySpec {
        RegistrySpec {
            name: "up".into(),
            kind: kind.into(),
            url: url.into(),
            credential: None,
            insecure: false,
            ca_certificate: String::new(),
            description: String::new(),
        }
    }

    /// Names stay unique, a registry in use is not deleted, a project's
    /// registry must exist, and fsck sees all of it as sound.
    #[test]
    fn registries_live_as_projects_need_them() {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(crate::EngineConfig::new(dir.path())).unwrap();
        let a = e
            .create_registry(spec("docker-registry", "http://a:5000/"))
            .unwrap();
        let mut other = spec("harbor", "https://b");
        other.name = "b".into();
        let b = e.create_registry(other).unwrap();
        assert_ne!(a, b);
        assert!(matches!(
            e.create_registry(spec("docker-registry", "http://c")),
            Err(AccountError::Exists { .. })
        ));
        assert!(matches!(
            e.update_registry(b, |s| {
                s.name = "up".into();
                Ok(())
            }),
            Err(AccountError::Exists { .. })
        ));
        // A failing change changes nothing.
        let refused = e.update_registry(b, |s| {
            s.url = "http://elsewhere".into();
            Err(AccountError::Invalid {
                what: "x".into(),
                reason: "y".into(),
            })
        });
        assert!(refused.is_err());
        assert_eq!(e.registry(b).unwrap().unwrap().url, "https://b");
        let rec = e
            .update_registry(b, |s| {
                s.description = "mirror".into();
                Ok(())
            })
            .unwrap();
        assert_eq!(rec.description, "mirror");
        assert_eq!(e.registry(a).unwrap().unwrap().url, "http://a:5000");

        assert!(matches!(
            e.create_project_with("p", true, None, Some(999), None),
            Err(AccountError::Invalid { .. })
        ));
        e.create_project_with("p", true, None, Some(a), None)
            .unwrap();
        assert_eq!(e.project("p").unwrap().unwrap().registry_id, Some(a));
        assert!(matches!(
            e.delete_registry(a),
            Err(AccountError::InUse { .. })
        ));
        e.delete_registry(b).unwrap();
        assert!(matches!(
            e.delete_registry(b),
            Err(AccountError::NotFound { .. })
        ));
        assert_eq!(
            e.registries()
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect::<Vec<_>>(),
            vec![a]
        );
        let policy = PolicyRecord {
            name: "mirror".into(),
            description: String::new(),
            registry_id: a,
            repos: "team/**".into(),
            tags: String::new(),
            dest_namespace: "mirror".into(),
            dest_namespace_replace_count: 1,
            cron: String::new(),
            overwrite: false,
            enabled: true,
            created_ms: 0,
            updated_ms: 0,
        };
        let pid = e.create_policy(policy.clone()).unwrap();
        assert!(matches!(
            e.create_policy(policy.clone()),
            Err(AccountError::Exists { .. })
        ));
        let orphan = PolicyRecord {
            name: "orphan".into(),
            registry_id: 999,
            ..policy
        };
        assert!(matches!(
            e.create_policy(orphan.clone()),
            Err(AccountError::Invalid { .. })
        ));
        let renamed = e
            .update_policy(pid, |p| {
                p.tags = "v*".into();
                Ok(())
            })
            .unwrap();
        assert_eq!((renamed.tags.as_str(), renamed.registry_id), ("v*", a));
        let report = e.fsck(crate::fsck::FsckOptions::default()).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);

        // A policy naming a registry that is gone is a finding.
        let g = e.inner.lock().unwrap();
        let mut batch = Batch::default();
        batch.put(&PolicyKey(77), &orphan);
        e.inner.commit(g, batch).unwrap();
        let report = e.fsck(crate::fsck::FsckOptions::default()).unwrap();
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert!(report.findings[0].problem.contains("registry 999"));
        assert!(e.delete_policy(77).unwrap());
        assert!(!e.delete_policy(77).unwrap());
    }

    #[test]
    fn urls_are_checked_and_spelled_one_way() {
        let ok = |k: &str, u: &str| spec(k, u).validate().map(|s| s.url);
        assert_eq!(
            ok("docker-registry", "http://127.0.0.1:5000/").unwrap(),
            "http://127.0.0.1:5000"
        );
        assert_eq!(
            ok("docker-hub", "https://hub.docker.com").unwrap(),
            DOCKER_HUB_API
        );
        assert_eq!(ok("docker-hub", "").unwrap(), DOCKER_HUB_API);
        assert_eq!(
            ok("harbor", "https://h.example/sub").unwrap(),
            "https://h.example/sub"
        );
        for bad in [
            "",
            "ftp://x",
            "http://",
            "https://u:p@x",
            "http://x?y",
            "http://a b",
            "x",
        ] {
            assert!(ok("docker-registry", bad).is_err(), "{bad:?}");
        }
        assert!(ok("aws-ecr", "https://x").is_err());
        let mut s = spec("docker-registry", "http://x");
        s.credential = Some(RegistryCredential {
            access_key: "a:b".into(),
            access_secret: "s".into(),
        });
        assert!(s.validate().is_err());
    }
}
