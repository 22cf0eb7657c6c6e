//! Load planning from the manifests' records: for the objects extract wrote, `sluice load
//! --manifests` takes each Parquet object's schema and rows from the task manifest instead of
//! reading its footer, and must plan exactly what the footers plan. The job id hashes the whole
//! spec (schema included) and the objects with their generations, so equal ids across the two
//! input paths prove equal plans.

mod process_support;

use std::collections::BTreeSet;

use process_support::{lines_with, sluice, text};
use sluice_testkit::FakeGcs;

const BUCKET: &str = "lake";

/// Every type extract writes, an empty value in each typed column, and a text column that
/// looks like numbers in places.
fn csv(file: usize) -> String {
    let mut out = String::from("name,count,ratio,flag,day,seen_at,code\n");
    for row in 0..30 {
        let n = file * 100 + row;
        let empty = row % 7 == 3;
        let v = |s: String| if empty { String::new() } else { s };
        out.push_str(&format!(
            "\"row, {n}\",{},{},{},{},{},{}\n",
            v(n.to_string()),
            v(format!("{}.25", n)),
            v(n.is_multiple_of(2).to_string()),
            v(format!("2026-11-{:02}", 1 + n % 28)),
            v(format!("2026-11-{:02}T10:{:02}:00Z", 1 + n % 28, n % 60)),
            if row == 0 {
                "x-1".to_string()
            } else {
                format!("{n}")
            },
        ));
    }
    out
}

#[test]
fn manifest_records_plan_what_the_footers_plan() {
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    gcs.create_bucket(BUCKET).expect("bucket");
    let dir = tempfile::tempdir().unwrap();
    // 20 files of one dataset in one directory: the existence check lists it once.
    let mut urls = Vec::new();
    for file in 0..20 {
        let path = dir.path().join(format!("part{file:02}.csv"));
        std::fs::write(&path, csv(file)).unwrap();
        urls.push(format!("file://{}", path.display()));
    }
    // And one file alone under another destination: checked with a HEAD.
    let single = dir.path().join("single.csv");
    std::fs::write(&single, csv(99)).unwrap();
    let env = vec![("STORAGE_EMULATOR_HOST", gcs.endpoint())];

    let mut args = vec!["extract", "--dest", "gs://lake/raw", "--format", "parquet"];
    args.extend(["--dataset", "mixed"]);
    for url in &urls {
        args.extend(["--url", url.as_str()]);
    }
    let extract = sluice(&args, &env);
    assert!(extract.status.success(), "extract: {}", text(&extract));
    let single_url = format!("file://{}", single.display());
    let extract = sluice(
        &[
            "extract",
            "--url",
            &single_url,
            "--dest",
            "gs://lake/raw2",
            "--format",
            "parquet",
            "--dataset",
            "single",
        ],
        &env,
    );
    assert!(extract.status.success(), "extract: {}", text(&extract));

    let plan = |input: &[&str]| {
        let mut args = vec!["load", "--table", "p.raw.{dataset}", "--dry-run"];
        args.extend_from_slice(input);
        let out = sluice(&args, &env);
        assert!(out.status.success(), "load {input:?}: {}", text(&out));
        let ids: BTreeSet<String> = lines_with(&out, "job_id")
            .iter()
            .map(|l| l["job_id"].as_str().unwrap().to_string())
            .collect();
        let schemas = lines_with(&out, "footers_read");
        assert_eq!(schemas.len(), 1, "{}", text(&out));
        (ids, schemas[0].clone())
    };
    let (from_manifests, counts) = plan(&["--manifests", "gs://lake/raw/_manifests/"]);
    assert_eq!(counts["objects"], 20, "{counts}");
    assert_eq!(
        counts["recorded"], 20,
        "no footer read for extract's objects: {counts}"
    );
    assert_eq!(counts["footers_read"], 0, "{counts}");
    let (from_footers, counts) = plan(&["--source", "gs://lake/raw/*/*.parquet"]);
    assert_eq!(counts["footers_read"], 20, "{counts}");
    assert_eq!(from_manifests.len(), 1, "one job for the dataset");
    assert_eq!(
        from_manifests, from_footers,
        "the records and the footers must give the same spec"
    );
    let (from_manifests, counts) = plan(&["--manifests", "gs://lake/raw2/_manifests/"]);
    assert_eq!(counts["recorded"], 1, "{counts}");
    let (from_footers, _) = plan(&["--source", "gs://lake/raw2/*/*.parquet"]);
    assert_eq!(from_manifests, from_footers);
}
