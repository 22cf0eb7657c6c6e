//! One schema per dataset (issue 18) through the real binaries, on fake-gcs-server +
//! bqemulator: 40 small CSVs of one dataset over 4 extract tasks (every task run, one twice),
//! each file's schema inferred on its own. Some files have `dep_time` entirely empty (STRING
//! there, INT64 elsewhere) and one has `delay` `2.5` where the others have integers (FLOAT64
//! there). Load by manifest widens to one schema and the table equals the source value for
//! value; on day 2 `dep_time` is empty in every file and the append keeps the table's schema.
//! A column that is text in one file ("N/A") and integers elsewhere becomes STRING with every
//! value's exact text; text against floats is a real conflict, refused naming both objects.

mod process_support;

use std::path::Path;

use process_support::{sluice, task_env, text};

use sluice_testkit::{BigQueryEmulator, FakeGcs};

const BUCKET: &str = "lake";
const PROJECT: &str = "demo-project";

struct Stack {
    gcs: FakeGcs,
    bq: BigQueryEmulator,
    src: tempfile::TempDir,
}

impl Stack {
    fn start() -> Self {
        let gcs = FakeGcs::start().expect("fake-gcs-server");
        gcs.create_bucket(BUCKET).expect("bucket");
        let bq = BigQueryEmulator::start(PROJECT, &gcs.root()).expect("bqemulator");
        Stack {
            gcs,
            bq,
            src: tempfile::tempdir().unwrap(),
        }
    }

    fn env(&self, job: &str, day: &str, task: (u32, u32, u32)) -> Vec<(&'static str, String)> {
        task_env(&self.gcs.endpoint(), &self.bq.endpoint(), job, day, task)
    }

    /// Writes `files` (name, CSV text) under `day/` and returns their paths.
    fn write(&self, day: &str, files: &[(String, String)]) -> Vec<String> {
        let dir = self.src.path().join(day);
        std::fs::create_dir_all(&dir).unwrap();
        files
            .iter()
            .map(|(name, body)| {
                let path = dir.join(name);
                std::fs::write(&path, body).unwrap();
                path_str(&path)
            })
            .collect()
    }

    /// Extract `sources` into dataset `dataset` with `tasks` tasks; task 1 runs twice (Cloud
    /// Run's retry).
    fn extract(&self, day: &str, dataset: &str, sources: &[String], tasks: u32) {
        let partition = format!("dt={day}");
        let dest = format!("gs://{BUCKET}/{dataset}-src");
        let mut args = vec![
            "extract",
            "--dataset",
            dataset,
            "--dest",
            &dest,
            "--format",
            "parquet",
            "--partition",
            &partition,
        ];
        for s in sources {
            args.extend(["--url", s.as_str()]);
        }
        let job = format!("extract-{dataset}");
        let runs = (0..tasks).map(|i| (i, 0)).chain([(1, 1)]);
        for (index, attempt) in runs {
            let out = sluice(&args, &self.env(&job, day, (index, tasks, attempt)));
            assert!(
                out.status.success(),
                "{day} extract task {index} attempt {attempt}: {}",
                text(&out)
            );
        }
    }

    /// One load task by manifest, appending into `raw.{dataset}`.
    fn load(&self, day: &str, dataset: &str) -> std::process::Output {
        self.load_with(day, dataset, &[])
    }

    fn load_with(&self, day: &str, dataset: &str, extra: &[&str]) -> std::process::Output {
        let manifests = format!("gs://{BUCKET}/{dataset}-src/_manifests/");
        let table = format!("{PROJECT}.raw.{{dataset}}");
        let mut args = vec![
            "load",
            "--manifests",
            &manifests,
            "--table",
            &table,
            "--hive-partitioning",
            "--create-dataset",
            "--location",
            "US",
        ];
        args.extend(extra);
        sluice(&args, &self.env(&format!("load-{dataset}"), day, (0, 1, 0)))
    }

    fn column_types(&self, table: &str) -> Vec<(String, String)> {
        let info = self
            .bq
            .bq_json(&["show", "--format=json", &format!("{PROJECT}:raw.{table}")])
            .expect("bq show");
        info["schema"]["fields"]
            .as_array()
            .unwrap_or_else(|| panic!("{info}"))
            .iter()
            .map(|f| {
                (
                    f["name"].as_str().unwrap().to_string(),
                    f["type"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

/// Numbers as the source wrote them: BigQuery renders FLOAT64 7 as `7.0` on the emulator.
fn as_written(value: Option<String>) -> Option<String> {
    value.map(|v| v.strip_suffix(".0").map(str::to_string).unwrap_or(v))
}

/// `(id, dep_time, delay)` of the source rows of `files`, sorted by id.
fn source_rows(files: &[(String, String)]) -> Vec<Vec<Option<String>>> {
    let mut rows: Vec<Vec<Option<String>>> = files
        .iter()
        .flat_map(|(_, body)| body.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .map(|line| {
            line.split(',')
                .map(|v| (!v.is_empty()).then(|| v.to_string()))
                .collect()
        })
        .collect();
    rows.sort_by_key(|r| r[0].as_ref().unwrap().parse::<i64>().unwrap());
    rows
}

fn table_rows(bq: &BigQueryEmulator, table: &str, columns: &str) -> Vec<Vec<Option<String>>> {
    bq.query_rows(&format!("select {columns} from raw.{table} order by id"))
        .expect("query the table")
        .into_iter()
        .map(|row| row.into_iter().map(as_written).collect())
        .collect()
}

/// 40 files of 3 rows `id,dep_time,delay`: `dep_time` empty in files 5, 17 and 30 (and
/// in every file with `all_empty`), `delay` 2.5 in one row of file 8.
fn flights(first_id: usize, count: usize, all_empty: bool) -> Vec<(String, String)> {
    (0..count)
        .map(|f| {
            let mut body = String::from("id,dep_time,delay\n");
            for r in 0..3 {
                let id = first_id + f * 3 + r;
                let dep = if all_empty || [5, 17, 30].contains(&f) {
                    String::new()
                } else {
                    (600 + id).to_string()
                };
                let delay = if f == 8 && r == 1 {
                    "2.5".to_string()
                } else {
                    (id % 13).to_string()
                };
                body.push_str(&format!("{id},{dep},{delay}\n"));
            }
            (format!("f{f:03}.csv"), body)
        })
        .collect()
}

#[test]
fn drifted_inferences_load_as_one_schema_and_day_two_keeps_it() {
    let stack = Stack::start();
    let day1 = flights(0, 40, false);
    let sources = stack.write("2026-12-01", &day1);
    stack.extract("2026-12-01", "flights", &sources, 4);
    let load = stack.load("2026-12-01", "flights");
    let out = text(&load);
    assert!(load.status.success(), "day 1 load: {out}");
    assert!(
        out.contains("widening INSERT"),
        "the drifted files go through the widening path: {out}"
    );
    assert_eq!(
        stack.column_types("flights"),
        [
            ("id".to_string(), "INTEGER".to_string()),
            ("dep_time".into(), "INTEGER".into()),
            ("delay".into(), "FLOAT".into()),
            ("dt".into(), "DATE".into()),
        ]
    );
    let columns = "cast(id as string), cast(dep_time as string), cast(delay as string)";
    assert_eq!(
        table_rows(&stack.bq, "flights", columns),
        source_rows(&day1),
        "day 1 table = source"
    );
    // No staging table is left behind.
    let tables = stack
        .bq
        .bq_json(&["ls", "--format=json", &format!("{PROJECT}:raw")])
        .expect("bq ls");
    let names: Vec<&str> = tables
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["tableReference"]["tableId"].as_str())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("_sluice_stage")),
        "{names:?}"
    );

    // Day 2: dep_time is empty in every file (STRING in each), delay integers only (INT64
    // in each): the table's INTEGER and FLOAT win and the append changes no type.
    let day2 = flights(1000, 10, true);
    let sources = stack.write("2026-12-02", &day2);
    stack.extract("2026-12-02", "flights", &sources, 4);
    let load = stack.load("2026-12-02", "flights");
    assert!(load.status.success(), "day 2 load: {}", text(&load));
    assert_eq!(
        stack.column_types("flights"),
        [
            ("id".to_string(), "INTEGER".to_string()),
            ("dep_time".into(), "INTEGER".into()),
            ("delay".into(), "FLOAT".into()),
            ("dt".into(), "DATE".into()),
        ],
        "day 2 changes no column's type"
    );
    let mut both = day1.clone();
    both.extend(day2);
    assert_eq!(
        table_rows(&stack.bq, "flights", columns),
        source_rows(&both),
        "day 2 table = source"
    );

    // The same load again (a retried task) loads nothing twice.
    let again = stack.load("2026-12-02", "flights");
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        stack
            .bq
            .query_scalar_i64("select count(*) from raw.flights")
            .unwrap(),
        150
    );
}

#[test]
fn text_widens_integers_exactly_and_text_against_floats_is_refused() {
    let stack = Stack::start();
    // "N/A" is no NULL marker: that file's column is STRING, the others' INT64.
    let codes: Vec<(String, String)> = (0..6)
        .map(|f| {
            let code = if f == 2 {
                "N/A".to_string()
            } else {
                (-(f * 10 + 7)).to_string()
            };
            (format!("c{f}.csv"), format!("id,code\n{f},{code}\n"))
        })
        .collect();
    let sources = stack.write("codes", &codes);
    stack.extract("2026-12-01", "codes", &sources, 2);
    // An INSERT cannot stand in for a truncating load: refused before any job, naming the
    // drifted files' columns and the fix.
    let truncate = stack.load_with("2026-12-01", "codes", &["--write", "truncate"]);
    let out = text(&truncate);
    assert!(!truncate.status.success(), "{out}");
    assert!(
        out.contains("5 object(s) like gs://lake/codes-src/codes/dt=2026-12-01/c0-00000.parquet: `code` INTEGER not STRING")
            && out.contains("not with --write truncate"),
        "{out}"
    );
    assert_eq!(
        stack
            .bq
            .rest(
                "GET",
                &format!("/bigquery/v2/projects/{PROJECT}/datasets/raw/tables/codes"),
                None
            )
            .map(|(status, _)| status)
            .unwrap_or(0),
        404,
        "no table before the append"
    );
    let load = stack.load("2026-12-01", "codes");
    assert!(load.status.success(), "{}", text(&load));
    assert_eq!(
        stack.column_types("codes"),
        [
            ("id".to_string(), "INTEGER".to_string()),
            ("code".into(), "STRING".into()),
            ("dt".into(), "DATE".into()),
        ]
    );
    assert_eq!(
        table_rows(&stack.bq, "codes", "cast(id as string), code"),
        source_rows(&codes),
        "every integer keeps its exact text"
    );

    // Floats' text is not canonical (`1.50` reads back as `1.5`): text against FLOAT64 stays
    // the error it was, naming both objects and the column.
    let ratios: Vec<(String, String)> = (0..4)
        .map(|f| {
            let ratio = if f == 3 { "x" } else { "1.50" };
            (format!("r{f}.csv"), format!("id,ratio\n{f},{ratio}\n"))
        })
        .collect();
    let sources = stack.write("ratios", &ratios);
    stack.extract("2026-12-01", "ratios", &sources, 2);
    let load = stack.load("2026-12-01", "ratios");
    let out = text(&load);
    assert!(!load.status.success(), "{out}");
    assert!(
        out.contains("at column `ratio`")
            && out.contains("r3-00000.parquet differs from")
            && out.contains("differs from")
            && out.contains("no type holds both"),
        "{out}"
    );
}
