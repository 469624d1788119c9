//! Model test: random sequences of engine operations checked against a
//! simple in-memory model after every step, including reopening the engine.
//! A second model puts and deletes the same bytes under different media
//! types across repositories (the refcount invariant of the attack suite).
//! Failing seeds are persisted in `proptest-regressions/engine_model.txt`.

use std::collections::{BTreeMap, BTreeSet};

use berth_engine::fsck::FsckOptions;
use berth_engine::{Digest, Engine, ManifestError, ManifestPut, Reference, RepoName, Tag};
use berth_testkit::{content, index_backends, open_engine_on, sha256};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};

const REPOS: [&str; 2] = ["m/a", "m/b"];
const CONTENTS: usize = 5;
const TAGS: [&str; 3] = ["latest", "v1", "v2"];

#[derive(Clone, Debug)]
enum Op {
    Upload {
        repo: usize,
        c: usize,
    },
    Mount {
        from: usize,
        to: usize,
        c: usize,
    },
    Unlink {
        repo: usize,
        c: usize,
    },
    PutManifest {
        repo: usize,
        mask: u8,
        tag: Option<usize>,
    },
    Untag {
        repo: usize,
        tag: usize,
    },
    DeleteManifest {
        repo: usize,
        mask: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..REPOS.len();
    let c = 0..CONTENTS;
    let mask = 1u8..(1 << CONTENTS);
    prop_oneof![
        3 => (r.clone(), c.clone()).prop_map(|(repo, c)| Op::Upload { repo, c }),
        1 => (r.clone(), r.clone(), c.clone()).prop_map(|(from, to, c)| Op::Mount { from, to, c }),
        1 => (r.clone(), c).prop_map(|(repo, c)| Op::Unlink { repo, c }),
        3 => (r.clone(), mask.clone(), proptest::option::of(0..TAGS.len()))
            .prop_map(|(repo, mask, tag)| Op::PutManifest { repo, mask, tag }),
        1 => (r.clone(), 0..TAGS.len()).prop_map(|(repo, tag)| Op::Untag { repo, tag }),
        1 => (r, mask).prop_map(|(repo, mask)| Op::DeleteManifest { repo, mask }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    links: [BTreeSet<usize>; 2],
    manifests: [BTreeSet<u8>; 2],
    tags: [BTreeMap<&'static str, u8>; 2],
}

fn blob(c: usize) -> (Vec<u8>, Digest) {
    let data = content(&format!("model-{c}"), 10 + c * 1000);
    let d = sha256(&data);
    (data, d)
}

fn manifest_body(mask: u8) -> Vec<u8> {
    format!("{{\"schemaVersion\":2,\"mask\":{mask}}}").into_bytes()
}

fn members(mask: u8) -> Vec<usize> {
    (0..CONTENTS).filter(|c| mask & (1 << c) != 0).collect()
}

fn repo(i: usize) -> RepoName {
    RepoName::parse(REPOS[i]).expect("repo name")
}

fn apply(engine: &Engine, model: &mut Model, op: &Op) {
    match *op {
        Op::Upload { repo: r, c } => {
            let (data, d) = blob(c);
            engine.put_blob(&repo(r), &d, &data).expect("put_blob");
            model.links[r].insert(c);
        }
        Op::Mount { from, to, c } => {
            let (_, d) = blob(c);
            let got = engine
                .mount_blob(&repo(to), &d, Some(&repo(from)))
                .expect("mount");
            assert_eq!(
                got.is_some(),
                model.links[from].contains(&c),
                "mount result"
            );
            if got.is_some() {
                model.links[to].insert(c);
            }
        }
        Op::Unlink { repo: r, c } => {
            let (_, d) = blob(c);
            let got = engine.unlink_blob(&repo(r), &d).expect("unlink");
            assert_eq!(got, model.links[r].remove(&c), "unlink result");
        }
        Op::PutManifest { repo: r, mask, tag } => {
            let put = ManifestPut {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body: manifest_body(mask),
                blobs: members(mask).into_iter().map(|c| blob(c).1).collect(),
                tags: tag
                    .map(|t| Tag::parse(TAGS[t]).expect("tag"))
                    .into_iter()
                    .collect(),
                ..Default::default()
            };
            let res = engine.put_manifest(&repo(r), put);
            let all_linked = members(mask).iter().all(|c| model.links[r].contains(c));
            // A manifest already present is only re-tagged, even if a blob
            // was unlinked since.
            if all_linked || model.manifests[r].contains(&mask) {
                let d = res.expect("put_manifest");
                assert_eq!(d, sha256(&manifest_body(mask)));
                model.manifests[r].insert(mask);
                if let Some(t) = tag {
                    model.tags[r].insert(TAGS[t], mask);
                }
            } else {
                assert!(
                    matches!(res, Err(ManifestError::BlobUnknown { .. })),
                    "expected BlobUnknown, got {res:?}"
                );
            }
        }
        Op::Untag { repo: r, tag } => {
            let got = engine
                .delete_tag(&repo(r), &Tag::parse(TAGS[tag]).expect("tag"))
                .expect("delete_tag");
            assert_eq!(
                got,
                model.tags[r].remove(TAGS[tag]).is_some(),
                "untag result"
            );
        }
        Op::DeleteManifest { repo: r, mask } => {
            let d = sha256(&manifest_body(mask));
            let got = engine
                .delete_manifest(&repo(r), &d)
                .expect("delete_manifest");
            assert_eq!(got, model.manifests[r].remove(&mask), "delete result");
            model.tags[r].retain(|_, m| *m != mask);
        }
        Op::Reopen => unreachable!("handled by the runner"),
    }
}

fn check(engine: &Engine, model: &Model) {
    for (r, name) in REPOS.iter().enumerate() {
        let rn = repo(r);
        for c in 0..CONTENTS {
            let (data, d) = blob(c);
            let seen = engine.stat_blob(&rn, &d).expect("stat");
            assert_eq!(
                seen.is_some(),
                model.links[r].contains(&c),
                "{name}: blob {c} visibility"
            );
            if seen.is_some() {
                let (_, bytes) = engine.read_blob(&rn, &d, None).expect("read");
                assert_eq!(bytes.as_ref(), &data[..], "{name}: blob {c} bytes");
            }
        }
        let tags = engine.list_tags(&rn, None, 100).expect("tags");
        let want: Vec<String> = model.tags[r].keys().map(|t| t.to_string()).collect();
        assert_eq!(tags.items, want, "{name}: tag list");
        for (t, mask) in &model.tags[r] {
            let m = engine
                .get_manifest(&rn, &Reference::Tag(Tag::parse(t).expect("tag")))
                .expect("get")
                .expect("tagged manifest present");
            assert_eq!(&*m.body, &manifest_body(*mask)[..], "{name}:{t}");
        }
        for mask in 1u8..(1 << CONTENTS) {
            let d = sha256(&manifest_body(mask));
            let present = engine
                .get_manifest(&rn, &Reference::Digest(d.clone()))
                .expect("get")
                .is_some();
            assert_eq!(
                present,
                model.manifests[r].contains(&mask),
                "{name}: manifest {mask}"
            );
            if present {
                let rec = engine
                    .repo_manifest_record(&rn, &d)
                    .expect("record")
                    .expect("present");
                let tags = model.tags[r].values().filter(|m| **m == mask).count() as u64;
                assert_eq!(rec.tags, tags, "{name}: tag count of manifest {mask}");
            }
        }
    }
    // Reference counts: one per (repository, manifest) referencing the blob.
    for c in 0..CONTENTS {
        let (_, d) = blob(c);
        let want: u64 = (0..REPOS.len())
            .map(|r| {
                model.manifests[r]
                    .iter()
                    .filter(|m| *m & (1 << c) != 0)
                    .count() as u64
            })
            .sum();
        let links: u64 = (0..REPOS.len())
            .filter(|r| model.links[*r].contains(&c))
            .count() as u64;
        match engine.blob_record(&d).expect("blob record") {
            Some(rec) => {
                assert_eq!(rec.refcount, want, "refcount of blob {c}");
                assert_eq!(rec.links, links, "link count of blob {c}");
            }
            None => assert_eq!(want + links, 0, "blob {c} has no record but is referenced"),
        }
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/engine_model.txt",
        ))),
        ..Config::default()
    })]

    /// On every index backend ([`index_backends`]): one core, one model.
    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        for db in index_backends() {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut engine = open_engine_on(dir.path(), db.as_ref());
            let mut model = Model::default();
            for op in &ops {
                if let Op::Reopen = op {
                    drop(engine);
                    engine = open_engine_on(dir.path(), db.as_ref());
                } else {
                    apply(&engine, &mut model, op);
                }
                check(&engine, &model);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The same bytes under different media types (finding 1 of the security
// review, the standing attack suite's refcount invariant): bodies that read
// as an image manifest (config + layers) or as an index (manifests) depending
// on the type they are pushed with, put and deleted in random order across
// repositories. One digest keeps one record: a put under another type than
// the stored one is refused, and every count equals the model's and fsck is
// clean after every step.

const TYPE_REPOS: [&str; 3] = ["t/a", "t/b", "t/c"];
const BODIES: usize = 3;
/// Media types a body may be pushed as: two image types (same reading),
/// one index type.
const TYPES: [&str; 3] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
];
const INDEX_TYPE: usize = 2;
/// Children every index reading references (present in every repository).
const CHILDREN: usize = 2;

#[derive(Clone, Debug)]
enum TypedOp {
    Put { repo: usize, body: usize, ty: usize },
    Delete { repo: usize, body: usize },
    Reopen,
}

fn typed_op() -> impl Strategy<Value = TypedOp> {
    let r = 0..TYPE_REPOS.len();
    let b = 0..BODIES;
    prop_oneof![
        4 => (r.clone(), b.clone(), 0..TYPES.len())
            .prop_map(|(repo, body, ty)| TypedOp::Put { repo, body, ty }),
        3 => (r, b).prop_map(|(repo, body)| TypedOp::Delete { repo, body }),
        1 => Just(TypedOp::Reopen),
    ]
}

fn typed_repo(i: usize) -> RepoName {
    RepoName::parse(TYPE_REPOS[i]).expect("repo name")
}

/// Blob `c` of the typed test (config/layers of the image readings; the
/// last one is what the children reference).
fn typed_blob(c: usize) -> (Vec<u8>, Digest) {
    let data = content(&format!("typed-{c}"), 100 + c);
    let d = sha256(&data);
    (data, d)
}

/// Blobs the image reading of `body` references: blob `body` and blob
/// `body + 1` (mod BODIES), so bodies share blobs.
fn body_blobs(body: usize) -> [usize; 2] {
    [body, (body + 1) % BODIES]
}

/// The child manifests' blob.
const CHILD_BLOB: usize = BODIES;

fn child_body(c: usize) -> Vec<u8> {
    format!("{{\"schemaVersion\":2,\"child\":{c}}}").into_bytes()
}

fn ambiguous_body(body: usize) -> Vec<u8> {
    format!("{{\"schemaVersion\":2,\"ambiguous\":{body}}}").into_bytes()
}

/// What the server's parser makes of `body` pushed as `TYPES[ty]`.
fn typed_put(body: usize, ty: usize) -> ManifestPut {
    let mut put = ManifestPut {
        media_type: TYPES[ty].into(),
        body: ambiguous_body(body),
        ..Default::default()
    };
    if ty == INDEX_TYPE {
        put.manifests = (0..CHILDREN).map(|c| sha256(&child_body(c))).collect();
    } else {
        put.blobs = body_blobs(body).iter().map(|&c| typed_blob(c).1).collect();
    }
    put
}

#[derive(Default)]
struct TypedModel {
    /// The stored media type of each body while some repository holds it.
    stored: [Option<usize>; BODIES],
    /// Which repositories hold each body.
    held: [BTreeSet<usize>; BODIES],
}

fn typed_setup(engine: &Engine) {
    for r in 0..TYPE_REPOS.len() {
        for c in 0..=CHILD_BLOB {
            let (data, d) = typed_blob(c);
            engine
                .put_blob(&typed_repo(r), &d, &data)
                .expect("put_blob");
        }
        for c in 0..CHILDREN {
            let put = ManifestPut {
                media_type: TYPES[0].into(),
                body: child_body(c),
                blobs: vec![typed_blob(CHILD_BLOB).1],
                ..Default::default()
            };
            engine.put_manifest(&typed_repo(r), put).expect("child");
        }
    }
}

fn typed_apply(engine: &Engine, model: &mut TypedModel, op: &TypedOp) {
    match *op {
        TypedOp::Put { repo: r, body, ty } => {
            let res = engine.put_manifest(&typed_repo(r), typed_put(body, ty));
            match model.stored[body] {
                Some(stored) if stored != ty => assert!(
                    matches!(res, Err(ManifestError::MediaTypeConflict { .. })),
                    "body {body} stored as {} pushed as {}: {res:?}",
                    TYPES[stored],
                    TYPES[ty]
                ),
                _ => {
                    let d = res.expect("put_manifest");
                    assert_eq!(d, sha256(&ambiguous_body(body)));
                    model.stored[body] = Some(ty);
                    model.held[body].insert(r);
                }
            }
        }
        TypedOp::Delete { repo: r, body } => {
            let d = sha256(&ambiguous_body(body));
            let got = engine
                .delete_manifest(&typed_repo(r), &d)
                .expect("delete_manifest");
            assert_eq!(got, model.held[body].remove(&r), "delete result");
            if model.held[body].is_empty() {
                model.stored[body] = None;
            }
        }
        TypedOp::Reopen => unreachable!("handled by the runner"),
    }
}

fn typed_check(engine: &Engine, model: &TypedModel) {
    let report = engine.fsck(FsckOptions::default()).expect("fsck");
    assert!(report.findings.is_empty(), "fsck: {:?}", report.findings);
    for c in 0..=CHILD_BLOB {
        let (_, d) = typed_blob(c);
        let mut want = 0u64;
        for body in 0..BODIES {
            if model.stored[body].is_some_and(|t| t != INDEX_TYPE) && body_blobs(body).contains(&c)
            {
                want += model.held[body].len() as u64;
            }
        }
        if c == CHILD_BLOB {
            want += (TYPE_REPOS.len() * CHILDREN) as u64;
        }
        let rec = engine.blob_record(&d).expect("blob record").expect("blob");
        assert_eq!(rec.refcount, want, "refcount of blob {c}");
    }
    for (r, name) in TYPE_REPOS.iter().enumerate() {
        let parents = (0..BODIES)
            .filter(|&b| model.stored[b] == Some(INDEX_TYPE) && model.held[b].contains(&r))
            .count() as u64;
        for c in 0..CHILDREN {
            let rec = engine
                .repo_manifest_record(&typed_repo(r), &sha256(&child_body(c)))
                .expect("record")
                .expect("child present");
            assert_eq!(rec.parents, parents, "{name}: parents of child {c}");
        }
    }
    for body in 0..BODIES {
        let d = sha256(&ambiguous_body(body));
        let rec = engine.manifest_record(&d).expect("manifest record");
        assert_eq!(
            rec.as_ref().map(|m| m.media_type.as_str()),
            model.stored[body].map(|t| TYPES[t]),
            "stored media type of body {body}"
        );
        if let Some(m) = rec {
            assert_eq!(
                m.repos,
                model.held[body].len() as u64,
                "repos of body {body}"
            );
        }
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 32,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/engine_model.txt",
        ))),
        ..Config::default()
    })]

    #[test]
    fn same_bytes_under_other_media_types_keep_counts(
        ops in proptest::collection::vec(typed_op(), 1..30)
    ) {
        for db in index_backends() {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut engine = open_engine_on(dir.path(), db.as_ref());
            typed_setup(&engine);
            let mut model = TypedModel::default();
            typed_check(&engine, &model);
            for op in &ops {
                if let TypedOp::Reopen = op {
                    drop(engine);
                    engine = open_engine_on(dir.path(), db.as_ref());
                } else {
                    typed_apply(&engine, &mut model, op);
                }
                typed_check(&engine, &model);
            }
        }
    }
}
