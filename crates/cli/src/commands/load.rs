//! `sluice load`: flags/env -> typed config -> `sluice_load`.
//!
//! Every flag has a `SLUICE_...` twin. BigQuery is reached at `--bigquery-endpoint`, else at
//! `BIGQUERY_EMULATOR_HOST` (anonymous credentials), else at Google with Application Default
//! Credentials. Cloud Storage honours `STORAGE_EMULATOR_HOST` (see `Context::store_config`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use sluice_load::{
    ClientConfig, Credentials, CsvOptions, Input, LoadConfig, OnIncomplete, PartitionType,
    Partitioning, SchemaSource, SchemaUpdate, SourceFormat, TableTemplate, WriteMode,
};
use sluice_runtime::{ExitCode, ExitStatus, ShardStrategy};

use crate::context::{Context, UsageError};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Parquet,
    Csv,
    /// Newline-delimited JSON.
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Write {
    Append,
    Truncate,
    Empty,
    /// Stage, then one MERGE on --key (docs/load.md, Merge).
    Merge,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
enum PartitionKind {
    Hour,
    Day,
    Month,
    Year,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Incomplete {
    /// Load the complete tables, then exit 1 naming each skipped one.
    Fail,
    /// Load the complete tables, warn about each skipped one, exit 0.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SchemaUpdateOption {
    AllowFieldAddition,
    AllowFieldRelaxation,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["source", "manifests"])))]
pub struct Args {
    /// Objects to load: gs://bucket/prefix/**/*.parquet (`*` within a directory, `**` across).
    #[arg(long, env = "SLUICE_SOURCE", value_name = "GLOB")]
    source: Option<String>,

    /// The task manifests `sluice extract` wrote: gs://bucket/prefix/_manifests/.
    #[arg(long, env = "SLUICE_MANIFESTS", value_name = "PREFIX")]
    manifests: Option<String>,

    /// Destination: PROJECT.DATASET.TABLE, optionally with placeholders ({dataset}, {name},
    /// {dir}, {KEY} of a Hive KEY=value directory) and a $PARTITION decorator (`t${dt}`).
    #[arg(long, env = "SLUICE_TABLE", value_name = "TABLE")]
    table: String,

    #[arg(
        long,
        env = "SLUICE_LOAD_FORMAT",
        value_enum,
        default_value = "parquet"
    )]
    format: Format,

    /// append (WRITE_APPEND), truncate (WRITE_TRUNCATE: replace the table or decorated
    /// partition atomically), empty (WRITE_EMPTY: fail unless empty) or merge (load into a
    /// staging table, then one MERGE on --key: update matched rows, insert new ones).
    #[arg(long, env = "SLUICE_WRITE", value_enum, default_value = "append")]
    write: Write,

    /// --write merge: the columns that identify a row (comma-separated), for every table; or
    /// TABLE=COL[,COL] for one table (repeat the flag per table).
    #[arg(
        long = "key",
        env = "SLUICE_LOAD_KEY",
        value_name = "[TABLE=]COL[,COL]",
        value_delimiter = ','
    )]
    key: Vec<String>,

    /// --write merge: among rows of one key in the batch, the one with the greatest value of
    /// this column wins (default: the cursor column extract recorded in the manifests).
    #[arg(long, env = "SLUICE_LOAD_ORDER_BY", value_name = "COL")]
    order_by: Option<String>,

    /// Do not append a row per load to {dataset}._sluice_loads.
    #[arg(long, env = "SLUICE_LOAD_NO_LINEAGE")]
    no_lineage: bool,

    /// Create missing datasets (needs --location).
    #[arg(long, env = "SLUICE_CREATE_DATASET")]
    create_dataset: bool,

    /// Location of created datasets and of the load jobs (US, EU, europe-west1, ...).
    #[arg(long, env = "SLUICE_LOCATION", value_name = "LOC")]
    location: Option<String>,

    /// Time-partition the table by this DATE/TIMESTAMP/DATETIME column, or by ingestion time
    /// with _PARTITIONTIME.
    #[arg(long, env = "SLUICE_PARTITION_BY", value_name = "COL")]
    partition_by: Option<String>,

    /// Partition granularity (with --partition-by).
    #[arg(
        long,
        env = "SLUICE_PARTITION_TYPE",
        value_enum,
        requires = "partition_by"
    )]
    partition_type: Option<PartitionKind>,

    /// Cluster the table by up to 4 columns (comma-separated).
    #[arg(
        long,
        env = "SLUICE_CLUSTER_BY",
        value_name = "COLS",
        value_delimiter = ','
    )]
    cluster_by: Vec<String>,

    /// Schema changes an append (or decorated truncate) may make (comma-separated).
    #[arg(long, env = "SLUICE_SCHEMA_UPDATE", value_enum, value_delimiter = ',')]
    schema_update: Vec<SchemaUpdateOption>,

    /// Add the Hive key=value directories of the object paths as columns.
    #[arg(long, env = "SLUICE_HIVE_PARTITIONING")]
    hive_partitioning: bool,

    /// CSV/JSON: a BigQuery JSON schema file (the `bq` format).
    #[arg(
        long,
        env = "SLUICE_LOAD_SCHEMA",
        value_name = "FILE",
        conflicts_with = "autodetect"
    )]
    schema: Option<std::path::PathBuf>,

    /// CSV/JSON: let BigQuery infer the schema.
    #[arg(long, env = "SLUICE_AUTODETECT")]
    autodetect: bool,

    /// CSV: header rows to skip.
    #[arg(long, env = "SLUICE_SKIP_LEADING_ROWS", default_value_t = 1)]
    skip_leading_rows: u32,

    /// CSV: field delimiter (`\t` for tab).
    #[arg(long, env = "SLUICE_FIELD_DELIMITER", default_value = ",")]
    field_delimiter: String,

    /// CSV: quote character; empty for none.
    #[arg(long, env = "SLUICE_QUOTE", default_value = "\"")]
    quote: String,

    /// CSV: quoted fields may contain newlines.
    #[arg(long, env = "SLUICE_ALLOW_QUOTED_NEWLINES")]
    allow_quoted_newlines: bool,

    /// CSV: rows missing trailing optional columns are accepted.
    #[arg(long, env = "SLUICE_ALLOW_JAGGED_ROWS")]
    allow_jagged_rows: bool,

    /// CSV: the string that means NULL.
    #[arg(long, env = "SLUICE_NULL_MARKER")]
    null_marker: Option<String>,

    /// CSV: source encoding (UTF-8, ISO-8859-1, ...).
    #[arg(long, env = "SLUICE_LOAD_ENCODING")]
    encoding: Option<String>,

    /// CSV/JSON: bad rows BigQuery may skip before the job fails.
    #[arg(long, env = "SLUICE_MAX_BAD_RECORDS", value_name = "N")]
    max_bad_records: Option<u32>,

    /// CSV/JSON: ignore values that are not in the schema.
    #[arg(long, env = "SLUICE_IGNORE_UNKNOWN_VALUES")]
    ignore_unknown_values: bool,

    /// Load jobs in flight at once in this task.
    #[arg(long, env = "SLUICE_LOAD_CONCURRENCY", default_value_t = 4)]
    concurrency: usize,

    /// Storage reads in flight while planning: Parquet footers (glob input, or objects a
    /// manifest has no columns for), existence checks of manifest entries.
    #[arg(
        long,
        env = "SLUICE_LOAD_READ_CONCURRENCY",
        default_value_t = 16,
        value_name = "N"
    )]
    read_concurrency: usize,

    /// How work items (destinations) are dealt to tasks: contiguous, round-robin or hash.
    #[arg(long, env = "SLUICE_LOAD_SHARD_STRATEGY", default_value = "hash")]
    shard_strategy: ShardStrategy,

    /// Project that runs the jobs; default: each destination's project.
    #[arg(long, env = "SLUICE_JOB_PROJECT", value_name = "PROJECT")]
    job_project: Option<String>,

    /// Mixed into every job id: set a new value to load objects again that were loaded before.
    #[arg(long, env = "SLUICE_JOB_ID_SALT", value_name = "TEXT")]
    job_id_salt: Option<String>,

    /// Submissions per destination when jobs fail transiently (backendError, ...).
    #[arg(long, env = "SLUICE_MAX_JOB_ATTEMPTS", default_value_t = 3)]
    max_job_attempts: u32,

    /// Longest wait between two polls of a running job.
    #[arg(long, env = "SLUICE_POLL_MAX", default_value = "10s", value_parser = sluice_runtime::duration::parse)]
    poll_max: Duration,

    /// BigQuery API endpoint, e.g. http://127.0.0.1:9050 for an emulator (http:// endpoints get
    /// anonymous credentials). Default: BIGQUERY_EMULATOR_HOST, else Google.
    #[arg(long, env = "SLUICE_BIGQUERY_ENDPOINT", value_name = "URL")]
    bigquery_endpoint: Option<String>,

    /// Read footers and print the jobs (with their ids) without submitting anything.
    #[arg(long, env = "SLUICE_DRY_RUN")]
    dry_run: bool,

    /// Succeed when the input has no objects (default: that is an error, as it usually means a
    /// wrong glob or an extract that wrote nothing).
    #[arg(long, env = "SLUICE_ALLOW_EMPTY")]
    allow_empty: bool,

    /// --manifests: a table whose extract is incomplete (a failed item, a task that wrote no
    /// manifest) is never loaded; `fail` exits 1 naming it after loading the complete tables,
    /// `skip` warns and exits 0.
    #[arg(
        long,
        env = "SLUICE_LOAD_ON_INCOMPLETE",
        value_enum,
        default_value = "fail"
    )]
    on_incomplete: Incomplete,

    /// Append: one load job per object (its id depends on that object alone), so an input that
    /// grows between runs loads each object exactly once. Costs one job per object (BigQuery
    /// allows 1,500 load jobs per table per day).
    #[arg(long, env = "SLUICE_JOB_PER_OBJECT")]
    job_per_object: bool,

    /// With --manifests: do not advance the incremental state ({dest}/_state/{dataset}.json)
    /// after a successful load (docs/state.md).
    #[arg(long, env = "SLUICE_LOAD_NO_STATE")]
    no_state: bool,
}

fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Where BigQuery is: the flag, else `BIGQUERY_EMULATOR_HOST`, else Google with ADC.
fn bigquery_client(flag: Option<&str>) -> ClientConfig {
    match flag.filter(|f| !f.trim().is_empty()) {
        Some(url) if url.starts_with("http://") => ClientConfig::emulator(url),
        Some(url) => ClientConfig {
            endpoint: Some(url.trim_end_matches('/').to_string()),
            credentials: Credentials::Default,
        },
        None => match std::env::var("BIGQUERY_EMULATOR_HOST") {
            Ok(host) if !host.trim().is_empty() => ClientConfig::emulator(&host),
            _ => ClientConfig::default(),
        },
    }
}

fn build_config(args: Args, context: &Context) -> anyhow::Result<LoadConfig> {
    let input = match (args.source, args.manifests) {
        (Some(glob), None) => Input::Glob(glob),
        (None, Some(prefix)) => Input::Manifests(prefix),
        _ => return Err(usage("give exactly one of --source and --manifests")),
    };
    let table = TableTemplate::parse(&args.table).map_err(usage)?;
    let mut config = LoadConfig::new(input, table);
    config.format = match args.format {
        Format::Parquet => SourceFormat::Parquet,
        Format::Csv => SourceFormat::Csv,
        Format::Json => SourceFormat::Json,
    };
    config.schema = match (args.schema, args.autodetect) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("--schema {}: {e}", path.display())))?;
            let fields = sluice_load::parse_schema_file(&text)
                .map_err(|e| usage(format!("--schema {}: {e}", path.display())))?;
            SchemaSource::Explicit(fields)
        }
        (None, true) => SchemaSource::Autodetect,
        (None, false) => SchemaSource::FromFiles,
    };
    let delimiter = if args.field_delimiter == "\\t" {
        "\t".to_string()
    } else {
        args.field_delimiter
    };
    config.csv = CsvOptions {
        skip_leading_rows: args.skip_leading_rows,
        field_delimiter: delimiter,
        quote: args.quote,
        allow_quoted_newlines: args.allow_quoted_newlines,
        allow_jagged_rows: args.allow_jagged_rows,
        null_marker: args.null_marker,
        encoding: args.encoding,
    };
    config.max_bad_records = args.max_bad_records;
    config.ignore_unknown_values = args.ignore_unknown_values;
    config.hive_partitioning = args.hive_partitioning;
    config.write = match args.write {
        Write::Append => WriteMode::Append,
        Write::Truncate => WriteMode::Truncate,
        Write::Empty => WriteMode::Empty,
        Write::Merge => WriteMode::Merge,
    };
    (config.merge_keys, config.merge_keys_by_table) = merge_keys(args.key)?;
    config.order_by = args.order_by.filter(|c| !c.trim().is_empty());
    config.lineage = !args.no_lineage;
    config.create_dataset = args.create_dataset;
    config.location = args.location;
    config.partitioning = args.partition_by.map(|column| Partitioning {
        field: (!column.eq_ignore_ascii_case("_PARTITIONTIME")).then_some(column),
        kind: match args.partition_type.unwrap_or(PartitionKind::Day) {
            PartitionKind::Hour => PartitionType::Hour,
            PartitionKind::Day => PartitionType::Day,
            PartitionKind::Month => PartitionType::Month,
            PartitionKind::Year => PartitionType::Year,
        },
    });
    config.clustering = args
        .cluster_by
        .into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    config.schema_update = SchemaUpdate {
        allow_field_addition: args
            .schema_update
            .contains(&SchemaUpdateOption::AllowFieldAddition),
        allow_field_relaxation: args
            .schema_update
            .contains(&SchemaUpdateOption::AllowFieldRelaxation),
    };
    config.concurrency = args.concurrency;
    config.read_concurrency = args.read_concurrency;
    config.shard_strategy = args.shard_strategy;
    config.job_project = args.job_project;
    config.job_id_salt = args.job_id_salt;
    config.max_job_attempts = args.max_job_attempts;
    config.poll.max = args.poll_max;
    config.dry_run = args.dry_run;
    config.allow_empty = args.allow_empty;
    config.on_incomplete = match args.on_incomplete {
        Incomplete::Fail => OnIncomplete::Fail,
        Incomplete::Skip => OnIncomplete::Skip,
    };
    config.job_per_object = args.job_per_object;
    config.no_state = args.no_state;
    config.bigquery = bigquery_client(args.bigquery_endpoint.as_deref());
    config.store = context.store_config();
    config.labels = job_labels(context);
    config.validate().map_err(|e| usage(e.to_string()))?;
    Ok(config)
}

/// Labels on every load job, so BigQuery's job list shows which task submitted it. Values are
/// lowercased and cut to BigQuery's label rules.
/// `--key` values, split at commas by clap: `COL` tokens before any `TABLE=COL` are the keys of
/// every table; a `TABLE=COL` token starts that table's list and the bare tokens after it
/// continue it (`--key airports=iata --key iowa=year,source`).
type MergeKeys = (Vec<String>, BTreeMap<String, Vec<String>>);

fn merge_keys(tokens: Vec<String>) -> anyhow::Result<MergeKeys> {
    let mut every = Vec::new();
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for token in tokens.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        match token.split_once('=') {
            Some((table, column)) => {
                let table = table.trim();
                if table.is_empty() {
                    return Err(usage(format!("--key {token}: no table before `=`")));
                }
                if by_table.contains_key(table) {
                    return Err(usage(format!("--key names table `{table}` twice")));
                }
                let column = column.trim();
                by_table.insert(
                    table.to_string(),
                    (!column.is_empty())
                        .then(|| column.to_string())
                        .into_iter()
                        .collect(),
                );
                current = Some(table.to_string());
            }
            None => match &current {
                Some(table) => by_table
                    .get_mut(table)
                    .expect("inserted above")
                    .push(token.to_string()),
                None => every.push(token.to_string()),
            },
        }
    }
    Ok((every, by_table))
}

fn job_labels(context: &Context) -> BTreeMap<String, String> {
    let clean = |v: &str| -> String {
        v.to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(63)
            .collect()
    };
    let mut labels = BTreeMap::from([("sluice".to_string(), "load".to_string())]);
    if let Some(job) = &context.task.job {
        labels.insert("cloud-run-job".into(), clean(job));
    }
    if let Some(execution) = &context.task.execution {
        labels.insert("cloud-run-execution".into(), clean(execution));
    }
    labels
}

pub async fn run(args: Args, context: &Context) -> anyhow::Result<ExitCode> {
    let config = build_config(args, context)?;
    let cancel = context.cancel();
    let report = match sluice_load::run(&config, &context.task, &cancel).await {
        Ok(report) => report,
        // A usage error is its own message (no "sluice load:" prefix); either way the error
        // keeps its type, so `classify_failure` applies the one exit rule.
        Err(e) if e.exit_code() == ExitCode::Usage => return Err(anyhow::Error::new(e)),
        Err(e) => return Err(anyhow::Error::new(e)).context("sluice load"),
    };
    let rows: i64 = report.jobs.iter().filter_map(|j| j.rows).sum();
    let loaded = report
        .jobs
        .iter()
        .filter(|j| j.outcome == sluice_load::Outcome::Loaded)
        .count();
    let already = report
        .jobs
        .iter()
        .filter(|j| j.outcome == sluice_load::Outcome::AlreadyLoaded)
        .count();
    let skipped: Vec<&str> = report.skipped.iter().map(|s| s.table.as_str()).collect();
    tracing::info!(
        jobs = report.jobs.len(),
        loaded,
        already_loaded = already,
        rows,
        items_total = report.items_total,
        objects_total = report.objects_total,
        loaded_tables = ?report.loaded_tables(),
        skipped_tables = ?skipped,
        "load task done: {} job(s) ({loaded} loaded, {already} already loaded), {rows} rows{}",
        report.jobs.len(),
        match skipped.is_empty() {
            true => String::new(),
            false => format!(
                "; {} incomplete table(s) skipped (--on-incomplete skip): {}",
                skipped.len(),
                skipped.join(", ")
            ),
        }
    );
    Ok(ExitCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_max_takes_humantime_durations() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let poll_max = |value: &str| {
            Cli::try_parse_from([
                "sluice-load".to_string(),
                "--source=gs://b/*.parquet".into(),
                "--table=p.d.t".into(),
                format!("--poll-max={value}"),
            ])
            .map(|c| c.args.poll_max)
        };
        assert_eq!(poll_max("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(poll_max("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(poll_max("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(poll_max("3").unwrap(), Duration::from_secs(3));
        // `h` was refused before the parsers were merged (issue 14).
        assert_eq!(poll_max("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(poll_max("1m 30s").unwrap(), Duration::from_secs(90));
        let err = poll_max("x").unwrap_err().to_string();
        assert!(err.contains("--poll-max"), "{err}");
    }

    #[test]
    fn merge_flags_reach_the_config() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let build = |extra: &[&str]| {
            let mut argv = vec![
                "sluice-load",
                "--source=gs://b/*.parquet",
                "--table=p.d.t",
                "--bigquery-endpoint=http://127.0.0.1:1",
            ];
            argv.extend_from_slice(extra);
            let cli = Cli::try_parse_from(argv).expect("parse");
            let context = Context::new(
                sluice_runtime::TaskContext::local(),
                sluice_runtime::Shutdown::new_unsignalled(),
            );
            build_config(cli.args, &context)
        };
        let c = build(&[
            "--write=merge",
            "--key=id, region",
            "--order-by=_socrata_updated_at",
            "--no-lineage",
        ])
        .unwrap();
        assert_eq!(c.write, WriteMode::Merge);
        assert_eq!(c.merge_keys, ["id", "region"]);
        assert_eq!(c.order_by.as_deref(), Some("_socrata_updated_at"));
        assert!(!c.lineage);
        assert!(build(&[]).unwrap().lineage, "lineage is on by default");
        // Usage errors (exit 2) from the config's checks.
        let err = build(&["--write=merge"]).unwrap_err().to_string();
        assert!(err.contains("--write merge needs --key"), "{err}");
        let err = build(&["--key=id"]).unwrap_err().to_string();
        assert!(err.contains("--write merge only"), "{err}");

        // Keys per table: a `TABLE=` token starts a table's list, bare tokens continue it.
        let c = build(&[
            "--write=merge",
            "--key=id",
            "--key=airports=iata",
            "--key",
            "iowa=year,source",
        ])
        .unwrap();
        assert_eq!(c.merge_keys, ["id"]);
        assert_eq!(c.merge_keys_by_table["airports"], ["iata"]);
        assert_eq!(c.merge_keys_by_table["iowa"], ["year", "source"]);
        let c = build(&["--write=merge", "--key=airports=iata"]).unwrap();
        assert!(c.merge_keys.is_empty());
        let err = build(&["--write=merge", "--key=a=x", "--key=a=y"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("names table `a` twice"), "{err}");
        let err = build(&["--write=merge", "--key==x"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no table before"), "{err}");
        let err = build(&["--write=merge", "--key=a="])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no columns for table `a`"), "{err}");
    }

    #[test]
    fn endpoints() {
        let c = bigquery_client(Some("http://127.0.0.1:9050"));
        assert_eq!(c.credentials, Credentials::Anonymous);
        let c = bigquery_client(Some("https://bigquery.europe-west1.rep.googleapis.com/"));
        assert_eq!(c.credentials, Credentials::Default);
        assert_eq!(
            c.endpoint.as_deref(),
            Some("https://bigquery.europe-west1.rep.googleapis.com")
        );
    }
}
