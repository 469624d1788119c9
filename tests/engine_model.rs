//! Model test: random sequences of engine operations checked against a
//! simple in-memory model after every step, including reopening the engine.
//! Failing seeds are persisted in `proptest-regressions/engine_model.txt`.

use std::collections::{BTreeMap, BTreeSet};

use berth_engine::{Digest, Engine, ManifestError, ManifestPut, Reference, RepoName, Tag};
use berth_testkit::{content, open_engine, sha256};
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

    #[test]
    fn engine_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut engine = open_engine(dir.path());
        let mut model = Model::default();
        for op in &ops {
            if let Op::Reopen = op {
                drop(engine);
                engine = open_engine(dir.path());
            } else {
                apply(&engine, &mut model, op);
            }
            check(&engine, &model);
        }
    }
}
