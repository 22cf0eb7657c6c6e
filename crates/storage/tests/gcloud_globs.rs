//! `list_glob` against Google's own client: the same objects in fake-gcs-server, the same
//! patterns given to `gcloud storage ls`, the same lists required (issue 15: users type the
//! gcloud form, `gs://b/raw/**.parquet`). A local directory holding the same keys must give
//! the same lists too. Where gcloud is odd, the test pins both what gcloud does and what
//! Sluice does instead (`docs/storage.md`, "Globs").

mod support;

use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use sluice_runtime::CancellationToken;
use sluice_storage::{LocalStore, ObjectStore, StorageError, WriteOptions, list_glob};
use support::{BUCKET, FakeGcs, gcs_store};

/// Nested directories, names that share prefixes, dots, dashes, a dot file, and characters
/// other glob dialects treat specially (`[`, `{`, `^`, `\`).
const KEYS: &[&str] = &[
    "a.parquet",
    "raw/.hidden.parquet",
    "raw/[x",
    "raw/^x",
    "raw/a.parquet",
    "raw/a/b/ab.txt",
    "raw/ab/cb",
    "raw/abcb",
    "raw/b.csv",
    "raw/back\\slash",
    "raw/d.e.f/g.parquet",
    "raw/data-1.csv",
    "raw/data-10.csv",
    "raw/data-2.csv",
    "raw/sub-dir/a.txt",
    "raw/x.parquet",
    "raw/x/a.parquet",
    "raw/x/part-1/y.parquet",
    "raw/x/part-2.parquet",
    "raw/x/y/c.parquet",
    "raw/x/y/z/d.parquet",
    "raw/xa.parquet",
    "raw/{a,b}.csv",
    "raw2/a/b.parquet",
    "rawx/a.parquet",
    "top.csv",
    "x/ab/c",
];

/// Patterns on which Sluice and gcloud must agree exactly.
const SAME_AS_GCLOUD: &[&str] = &[
    // `**` across directories, wherever it stands
    "raw/**.parquet",
    "**.parquet",
    "**a.parquet",
    "raw/x**",
    "raw/x**/c.parquet",
    "raw/a**b",
    "raw/**",
    "**",
    // `**/` also matches zero directories, at the start too
    "**/a.parquet",
    "raw/**/a.parquet",
    "raw/x/**/d.parquet",
    "raw/**/y/**.parquet",
    "raw/**/?.parquet",
    // `*` within one directory
    "*.parquet",
    "raw/*.parquet",
    "raw/*/*.parquet",
    "raw/*/**",
    "raw*/**.parquet",
    // ls also lists the directories `raw/*` matches; the objects it names are compared
    "raw/*",
    // `?` and classes
    "raw/data-?.csv",
    "raw/data-[12].csv",
    "raw/data-[!1].csv",
    "raw/[a-b].*",
    "raw/[]a]*",
    "raw/[^a]x",
    // literal: an unclosed `[` (`raw/[x`), braces, backslashes; three stars are one
    "raw/[x",
    "raw/{a,b}.csv",
    "raw/back\\s*",
    "***.parquet",
    // no wildcard: exactly that object
    "raw/x.parquet",
];

/// Where gcloud is odd: (pattern, what gcloud lists, what Sluice lists).
const ODD_IN_GCLOUD: &[(&str, &[&str], &[&str])] = &[
    // Once a pattern has `**`, gcloud's `*` (and `?`, `[..]`) also cross `/`, against its
    // own documentation ("within the current directory level").
    (
        "raw/**/x*.parquet",
        &[
            "raw/x.parquet",
            "raw/x/a.parquet",
            "raw/x/part-1/y.parquet",
            "raw/x/part-2.parquet",
            "raw/x/y/c.parquet",
            "raw/x/y/z/d.parquet",
            "raw/xa.parquet",
        ],
        &["raw/x.parquet", "raw/xa.parquet"],
    ),
    (
        "raw/**/part-*.parquet",
        &["raw/x/part-1/y.parquet", "raw/x/part-2.parquet"],
        &["raw/x/part-2.parquet"],
    ),
    // gcloud lets `/**/` match zero directories only all at once (it tries the pattern with
    // every `/**/` replaced by `/`), so a match needing one empty and one non-empty `**` is
    // missed.
    ("raw/**/x/**/d.parquet", &[], &["raw/x/y/z/d.parquet"]),
];

/// The objects `gcloud storage ls PATTERN` names as matches: the URL lines before the first
/// `gs://.../:` header (after it, ls lists the contents of matched directories), without
/// directory lines (ending in `/`). "matched no objects" is an empty list.
fn gcloud_ls(server: &FakeGcs, pattern: &str) -> Vec<String> {
    let url = format!("gs://{BUCKET}/{pattern}");
    let out = server
        .gcloud()
        .args(["storage", "ls", &url])
        .output()
        .expect("gcloud runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(
            stderr.contains("matched no objects"),
            "gcloud storage ls {url} failed: {stderr}"
        );
        return Vec::new();
    }
    let prefix = format!("gs://{BUCKET}/");
    let mut names = Vec::new();
    for line in stdout.lines() {
        if line.ends_with("/:") {
            break;
        }
        if let Some(name) = line.strip_prefix(&prefix) {
            if !name.ends_with('/') {
                names.push(name.to_string());
            }
        } else {
            assert!(line.is_empty(), "unexpected gcloud line {line:?} for {url}");
        }
    }
    names.sort();
    names
}

async fn sluice_ls(store: &dyn ObjectStore, pattern: &str) -> Vec<String> {
    let mut names: Vec<String> = list_glob(store, pattern)
        .await
        .unwrap_or_else(|e| panic!("{pattern}: {e}"))
        .into_iter()
        .map(|m| m.key)
        .collect();
    names.sort();
    names
}

/// Runs `gcloud storage ls` for every pattern, four at a time (each call starts Python).
fn gcloud_lists(server: &FakeGcs, patterns: &[&str]) -> Vec<Vec<String>> {
    let mut lists = Vec::with_capacity(patterns.len());
    for batch in patterns.chunks(4) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = batch
                .iter()
                .map(|p| scope.spawn(move || gcloud_ls(server, p)))
                .collect();
            lists.extend(handles.into_iter().map(|h| h.join().unwrap()));
        });
    }
    lists
}

fn gcloud_installed() -> bool {
    Command::new("gcloud")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn put_all(store: &dyn ObjectStore) {
    for key in KEYS {
        let mut w = store.writer(key, WriteOptions::default()).await.unwrap();
        w.write(Bytes::from_static(b"x")).await.unwrap();
        w.commit().await.unwrap();
    }
}

#[tokio::test]
async fn globs_list_what_gcloud_storage_ls_lists() {
    if !gcloud_installed() {
        sluice_testkit::skip_unless_ci(
            "globs_list_what_gcloud_storage_ls_lists",
            "gcloud is not installed (docs/local-stack.md)",
        );
        return;
    }
    let server = FakeGcs::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let gcs = gcs_store(&server.endpoint(), CancellationToken::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(
        dir.path().to_path_buf(),
        CancellationToken::new(),
    ));
    put_all(&gcs).await;
    put_all(local.as_ref()).await;
    // Both stores hold exactly KEYS (so a difference below is the matching, not the data).
    assert_eq!(sluice_ls(&gcs, "**").await, KEYS);
    assert_eq!(sluice_ls(local.as_ref(), "**").await, KEYS);

    // One call alone first: it sets up gcloud's private config dir, which parallel first
    // calls would race on.
    assert_eq!(gcloud_ls(&server, "**"), KEYS);
    let expected = gcloud_lists(&server, SAME_AS_GCLOUD);
    let mut differences = Vec::new();
    for (pattern, from_gcloud) in SAME_AS_GCLOUD.iter().zip(&expected) {
        let on_gcs = sluice_ls(&gcs, pattern).await;
        let on_local = sluice_ls(local.as_ref(), pattern).await;
        if &on_gcs != from_gcloud || &on_local != from_gcloud {
            differences.push(format!(
                "{pattern}\n  gcloud: {from_gcloud:?}\n  sluice gs://: {on_gcs:?}\n  sluice local: {on_local:?}"
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "lists differ from gcloud storage ls:\n{}",
        differences.join("\n")
    );
    // The table is not vacuous: every pattern matches something.
    assert!(expected.iter().all(|l| !l.is_empty()), "{expected:?}");
    assert_eq!(
        sluice_ls(&gcs, "raw/**.parquet").await,
        [
            "raw/.hidden.parquet",
            "raw/a.parquet",
            "raw/d.e.f/g.parquet",
            "raw/x.parquet",
            "raw/x/a.parquet",
            "raw/x/part-1/y.parquet",
            "raw/x/part-2.parquet",
            "raw/x/y/c.parquet",
            "raw/x/y/z/d.parquet",
            "raw/xa.parquet",
        ]
    );

    let odd: Vec<&str> = ODD_IN_GCLOUD.iter().map(|(p, _, _)| *p).collect();
    let from_gcloud = gcloud_lists(&server, &odd);
    for ((pattern, gcloud_does, sluice_does), listed) in ODD_IN_GCLOUD.iter().zip(&from_gcloud) {
        // If gcloud changes here, docs/storage.md's list of its oddities needs updating.
        assert_eq!(listed, gcloud_does, "gcloud storage ls {pattern}");
        assert_eq!(&sluice_ls(&gcs, pattern).await, sluice_does, "{pattern}");
        assert_eq!(
            &sluice_ls(local.as_ref(), pattern).await,
            sluice_does,
            "{pattern}"
        );
    }
}

/// A pattern ending in `/` (or an empty one) names directories: gcloud ls lists their
/// contents, which is a listing, not a match. Sluice refuses it with a hint instead of
/// reading nothing.
#[tokio::test]
async fn patterns_naming_directories_are_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::new(dir.path().to_path_buf(), CancellationToken::new());
    put_all(&local).await;
    for pattern in ["raw/", "raw/**/", "raw/*/", ""] {
        match list_glob(&local, pattern).await {
            Err(StorageError::InvalidLocation { url, reason }) => {
                assert!(url.starts_with("file://"), "{url}");
                assert!(reason.contains("**"), "{pattern}: {reason}");
            }
            other => panic!("{pattern:?}: {other:?}"),
        }
    }
}
