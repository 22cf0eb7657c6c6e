//! `sluice extract` into fake-gcs-server, read back by Google's own clients (`gcloud storage`,
//! and `gsutil` through its `gcloud storage` shim, since gsutil's native JSON client speaks
//! HTTPS only); three tasks of one execution share the work; SIGTERM leaves no object.

mod extract_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use extract_support::{csv_of_size, sigterm, sluice, spawn, text, wait_for};
use sluice_testkit::FakeGcs;
use sluice_testkit::{ServedFile, SocrataDataset, TestServer, gzip, read_parquet, zip};

const BUCKET: &str = "lake";

struct Clients {
    env: Vec<(String, String)>,
    config: tempfile::TempDir,
}

impl Clients {
    fn new(gcs: &FakeGcs) -> Self {
        let config = tempfile::tempdir().unwrap();
        // gsutil hands its commands to `gcloud storage` (which honours the endpoint override).
        std::fs::write(
            config.path().join("boto.cfg"),
            "[GSUtil]\nuse_gcloud_storage = True\ndefault_project_id = test\n",
        )
        .unwrap();
        Clients {
            env: gcs.gcloud_env(),
            config,
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new(program)
            .args(args)
            .env("CLOUDSDK_CONFIG", self.config.path())
            .env("BOTO_CONFIG", self.config.path().join("boto.cfg"))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap_or_else(|e| panic!("{program} is installed (docs/local-stack.md): {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn list(&self, program: &str, pattern: &str) -> BTreeSet<String> {
        let args: Vec<&str> = if program == "gsutil" {
            vec!["ls", pattern]
        } else {
            vec!["storage", "ls", pattern]
        };
        String::from_utf8(self.run(program, &args))
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("gs://"))
            .map(str::to_string)
            .collect()
    }
}

fn gcs() -> FakeGcs {
    let gcs = FakeGcs::start().unwrap();
    gcs.create_bucket(BUCKET).unwrap();
    gcs
}

fn extract(gcs: &FakeGcs, index: u32, count: u32, args: &[&str]) -> std::process::Output {
    sluice()
        .arg("extract")
        .args(args)
        .env("STORAGE_EMULATOR_HOST", gcs.endpoint())
        .env("CLOUD_RUN_JOB", "extract")
        .env("CLOUD_RUN_EXECUTION", "extract-e1")
        .env("CLOUD_RUN_TASK_INDEX", index.to_string())
        .env("CLOUD_RUN_TASK_COUNT", count.to_string())
        .output()
        .unwrap()
}

#[test]
fn three_tasks_write_what_gcloud_and_gsutil_list_and_read() {
    let server = TestServer::start();
    let plain = csv_of_size(300_000);
    let a = server.serve("src/a.csv", ServedFile::new(plain.clone()));
    let b = server.serve("src/b.csv.gz", ServedFile::new(gzip(&plain)));
    let c = server.serve(
        "src/c.zip",
        ServedFile::new(zip(&[
            ("one.csv", whole_lines(&plain, 50_000), true, false),
            ("two.csv", whole_lines(&plain, 70_000), true, true),
        ])),
    );
    let resource = server.socrata(
        "perm-its1",
        SocrataDataset {
            fields: vec![
                ("id".into(), "number".into()),
                ("note".into(), "text".into()),
            ],
            rows: (0..45)
                .map(|i| vec![i.to_string(), format!("n {i}")])
                .collect(),
            updated_at: vec!["2026-01-01T00:00:00.000".into(); 45],
            app_token: None,
            last_modified: "Wed, 04 Sep 2024 17:25:46 GMT".into(),
        },
    );
    let gcs = gcs();
    let dest = format!("gs://{BUCKET}/raw");
    for index in 0..3 {
        let out = extract(
            &gcs,
            index,
            3,
            &[
                "--url",
                &a,
                "--url",
                &b,
                "--url",
                &c,
                "--socrata",
                &resource,
                "--socrata-page-size",
                "10",
                "--dest",
                &dest,
                "--format",
                "parquet",
                "--partition",
                "dt=2026-11-28",
                "--dataset",
                "city",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "task {index}: {}", text(&out));
    }

    let clients = Clients::new(&gcs);
    let data = |names: &[&str]| -> BTreeSet<String> {
        names
            .iter()
            .map(|n| format!("gs://{BUCKET}/raw/city/dt=2026-11-28/{n}"))
            .collect()
    };
    let mut expected = data(&[
        "a-00000.parquet",
        "b-00000.parquet",
        "c.one-00000.parquet",
        "c.two-00000.parquet",
    ]);
    expected.extend(data(
        &(0..5)
            .map(|p| format!("perm-its1-{p:05}.parquet"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    // gcloud takes seconds per call: a handful of calls check everything.
    let pattern = format!("gs://{BUCKET}/raw/**");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&clients.run(
        "gcloud",
        &["storage", "objects", "list", &pattern, "--format=json"],
    ))
    .unwrap();
    let by_url: BTreeMap<String, &serde_json::Value> = listed
        .iter()
        .map(|o| {
            // `gs://bucket/name#generation`
            let url = o["storage_url"].as_str().unwrap_or_default();
            (url.split('#').next().unwrap_or_default().to_string(), o)
        })
        .collect();
    let data_urls: BTreeSet<String> = by_url
        .keys()
        .filter(|u| u.contains("/raw/city/"))
        .cloned()
        .collect();
    assert_eq!(data_urls, expected);
    let manifest_urls: Vec<String> = by_url
        .keys()
        .filter(|u| u.contains("/raw/_manifests/task-"))
        .cloned()
        .collect();
    assert_eq!(manifest_urls.len(), 3, "{manifest_urls:?}");
    assert_eq!(
        clients.list("gsutil", &format!("gs://{BUCKET}/raw/city/**")),
        expected
    );

    // The manifests (read with gcloud) match the objects' generations, sizes and metadata.
    let mut cat = vec!["storage", "cat"];
    cat.extend(manifest_urls.iter().map(String::as_str));
    let manifests = clients.run("gcloud", &cat);
    let mut objects = 0;
    for manifest in
        serde_json::Deserializer::from_slice(&manifests).into_iter::<serde_json::Value>()
    {
        let manifest = manifest.unwrap();
        assert_eq!(manifest["complete"], true);
        assert_eq!(manifest["execution"], "extract-e1");
        for item in manifest["items"].as_array().unwrap() {
            for object in item["objects"].as_array().unwrap() {
                objects += 1;
                let listed = by_url[object["url"].as_str().unwrap()];
                assert_eq!(
                    listed["generation"].as_str().map(str::to_string),
                    object["generation"].as_i64().map(|g| g.to_string()),
                    "{listed}"
                );
                assert_eq!(listed["size"].as_i64(), object["size"].as_i64(), "{listed}");
                assert_eq!(
                    listed["custom_fields"]["sluice-dataset"], "city",
                    "{listed}"
                );
                assert_eq!(listed["content_type"], "application/vnd.apache.parquet");
            }
        }
    }
    assert_eq!(objects, expected.len());

    // Parquet objects read back through gcloud and gsutil have every row.
    let plain_rows = plain.iter().filter(|&&b| b == b'\n').count() - 1;
    let b_parquet = clients.run(
        "gcloud",
        &[
            "storage",
            "cat",
            &format!("gs://{BUCKET}/raw/city/dt=2026-11-28/b-00000.parquet"),
        ],
    );
    let rows: usize = read_parquet(b_parquet).1.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, plain_rows);
    let page = clients.run(
        "gsutil",
        &[
            "cat",
            &format!("gs://{BUCKET}/raw/city/dt=2026-11-28/perm-its1-00004.parquet"),
        ],
    );
    assert_eq!(
        read_parquet(page)
            .1
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        5
    );
}

#[test]
fn sigterm_during_a_gcs_upload_leaves_no_object() {
    let server = TestServer::start();
    let body = csv_of_size(4 * 1024 * 1024);
    let url = server.serve(
        "slow.csv",
        ServedFile::new(body.clone()).slow(64 * 1024, Duration::from_millis(20)),
    );
    let gcs = gcs();
    let dest = format!("gs://{BUCKET}/raw");
    let child = spawn(
        sluice()
            .args(["extract", "--url", &url, "--dest", &dest])
            .env("STORAGE_EMULATOR_HOST", gcs.endpoint()),
    );
    // Passthrough streams straight into a resumable upload: wait until chunks have gone up.
    assert!(wait_for(Duration::from_secs(10), || !server
        .requests_to("slow.csv")
        .is_empty()));
    std::thread::sleep(Duration::from_millis(700));
    sigterm(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    let stored = files_in_bucket(&gcs.root());
    assert!(stored.is_empty(), "visible after SIGTERM: {stored:?}");

    // The rerun writes the whole object.
    let out = sluice()
        .args(["extract", "--url", &url, "--dest", &dest])
        .env("STORAGE_EMULATOR_HOST", gcs.endpoint())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let clients = Clients::new(&gcs);
    let read = clients.run(
        "gcloud",
        &["storage", "cat", &format!("{dest}/slow/slow-00000.csv")],
    );
    assert!(read == body, "the rerun's object differs from the source");
}

/// Rows, bytes and SHA-256 are on every object, whatever way it was uploaded: read back with
/// `gcloud storage objects describe` and `gsutil stat` for objects sent in one request and for
/// multi-chunk resumable uploads (`--upload-chunk-mib 1`, objects of 2-3 MiB), passthrough and
/// Parquet. The values are the ones the task manifest records.
#[test]
fn commit_metadata_is_on_small_and_multi_chunk_objects() {
    let server = TestServer::start();
    let small = csv_of_size(20_000);
    let large = csv_of_size(2_500_000);
    // Hex-like values compress poorly, so this one's Parquet spans more than one 1 MiB chunk.
    let mut wide = b"id,digest\n".to_vec();
    for i in 0u64..60_000 {
        let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let digest = format!("{x:016x}{:016x}", x.rotate_left(17) ^ 0x5bd1_e995);
        wide.extend_from_slice(format!("{i},{digest}\n").as_bytes());
    }
    let urls = [
        server.serve("src/small.csv", ServedFile::new(small.clone())),
        server.serve("src/large.csv", ServedFile::new(large.clone())),
        server.serve("src/wide.csv", ServedFile::new(wide)),
    ];
    let gcs = gcs();
    for format in ["passthrough", "parquet"] {
        let mut args = vec![
            "--upload-chunk-mib",
            "1",
            "--dataset",
            format,
            "--format",
            format,
        ];
        for url in &urls {
            args.extend(["--url", url.as_str()]);
        }
        let dest = format!("gs://{BUCKET}/meta");
        args.extend(["--dest", dest.as_str()]);
        let out = extract(&gcs, 0, 1, &args);
        assert_eq!(out.status.code(), Some(0), "{format}: {}", text(&out));
    }
    let manifest: serde_json::Value = serde_json::from_slice(
        &gcs.download(BUCKET, "meta/_manifests/task-00000.json")
            .unwrap(),
    )
    .unwrap();
    let recorded: BTreeMap<String, serde_json::Value> = manifest["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["objects"].as_array().unwrap().clone())
        .map(|o| (o["name"].as_str().unwrap().to_string(), o))
        .collect();
    // The second run (parquet) wrote the manifest; passthrough objects come from the first.
    assert_eq!(recorded.len(), 3, "{manifest}");
    let mut sizes = BTreeMap::new();
    for name in [
        "meta/passthrough/small-00000.csv",
        "meta/passthrough/large-00000.csv",
        "meta/parquet/small-00000.parquet",
        "meta/parquet/wide-00000.parquet",
    ] {
        sizes.insert(name, gcs.download(BUCKET, name).unwrap().len());
    }
    assert!(sizes["meta/passthrough/small-00000.csv"] < 1024 * 1024);
    assert!(sizes["meta/passthrough/large-00000.csv"] > 2 * 1024 * 1024);
    assert!(sizes["meta/parquet/small-00000.parquet"] < 1024 * 1024);
    assert!(
        sizes["meta/parquet/wide-00000.parquet"] > 1024 * 1024,
        "the Parquet object must span chunks: {sizes:?}"
    );

    let clients = Clients::new(&gcs);
    let url = |name: &str| format!("gs://{BUCKET}/{name}");
    // gcloud: the Parquet objects, against what the manifest records.
    for name in [
        "meta/parquet/small-00000.parquet",
        "meta/parquet/wide-00000.parquet",
    ] {
        let described: serde_json::Value = serde_json::from_slice(&clients.run(
            "gcloud",
            &[
                "storage",
                "objects",
                "describe",
                &url(name),
                "--format=json",
            ],
        ))
        .unwrap();
        let fields = &described["custom_fields"];
        let o = &recorded[name];
        assert_eq!(fields["sluice-rows"], o["rows"].to_string(), "{described}");
        assert_eq!(
            fields["sluice-bytes"],
            sizes[name].to_string(),
            "{described}"
        );
        assert_eq!(fields["sluice-bytes"], o["size"].to_string(), "{described}");
        assert_eq!(fields["sluice-sha256"], o["sha256"], "{described}");
        assert_eq!(fields["sluice-format"], "parquet", "{described}");
        assert!(
            fields["sluice-source"].as_str().unwrap().ends_with(".csv"),
            "{described}"
        );
    }
    let wide_rows = &recorded["meta/parquet/wide-00000.parquet"]["rows"];
    assert_eq!(wide_rows, 60_000);

    // gsutil stat: the passthrough objects (no row count), bytes and SHA-256 of the source.
    for (name, body) in [
        ("meta/passthrough/small-00000.csv", &small),
        ("meta/passthrough/large-00000.csv", &large),
    ] {
        let stat = String::from_utf8(clients.run("gsutil", &["stat", &url(name)])).unwrap();
        let field = |key: &str| {
            stat.lines()
                .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("{key} missing from gsutil stat: {stat}"))
        };
        assert_eq!(field("sluice-bytes"), body.len().to_string(), "{stat}");
        assert_eq!(field("sluice-sha256").len(), 64, "{stat}");
        assert!(!stat.contains("sluice-rows"), "{stat}");
        assert_eq!(field("sluice-format"), "passthrough", "{stat}");
    }
}

/// The first lines of `csv` that fit in `max` bytes.
fn whole_lines(csv: &[u8], max: usize) -> &[u8] {
    let end = csv[..max].iter().rposition(|&b| b == b'\n').unwrap() + 1;
    &csv[..end]
}

/// Objects fake-gcs-server holds for the bucket (its filesystem backend).
fn files_in_bucket(root: &Path) -> Vec<String> {
    extract_support::visible_files(&root.join(BUCKET))
}
