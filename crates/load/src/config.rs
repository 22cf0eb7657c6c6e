//! Typed configuration for one `sluice load` task. The binary builds it from flags and env;
//! nothing here reads the process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use sluice_runtime::{ExitCode, ExitStatus, RetryPolicy, ShardStrategy};
use sluice_storage::StoreConfig;

use crate::client::ClientConfig;
use crate::schema::Field;
use crate::template::{TableTemplate, decorator_len};

/// Where the objects to load come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `gs://bucket/prefix/**.parquet`: every object the glob matches.
    Glob(String),
    /// `gs://bucket/prefix/_manifests/`: the objects listed in the task manifests `extract` wrote.
    Manifests(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceFormat {
    #[default]
    Parquet,
    Csv,
    /// Newline-delimited JSON.
    Json,
}

impl SourceFormat {
    /// The `sourceFormat` BigQuery expects.
    pub(crate) fn api_name(self) -> &'static str {
        match self {
            SourceFormat::Parquet => "PARQUET",
            SourceFormat::Csv => "CSV",
            SourceFormat::Json => "NEWLINE_DELIMITED_JSON",
        }
    }
}

/// CSV parsing options (BigQuery's defaults except `skip_leading_rows`, which assumes a header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvOptions {
    /// Header rows to skip.
    pub skip_leading_rows: u32,
    pub field_delimiter: String,
    pub quote: String,
    pub allow_quoted_newlines: bool,
    pub allow_jagged_rows: bool,
    pub null_marker: Option<String>,
    /// `UTF-8` (default) or `ISO-8859-1`, ...
    pub encoding: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            skip_leading_rows: 1,
            field_delimiter: ",".into(),
            quote: "\"".into(),
            allow_quoted_newlines: false,
            allow_jagged_rows: false,
            null_marker: None,
            encoding: None,
        }
    }
}

/// Where the table schema comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SchemaSource {
    /// Parquet: derived from every file's footer (the only choice for Parquet).
    #[default]
    FromFiles,
    /// CSV/JSON: a schema file the binary has parsed.
    Explicit(Vec<Field>),
    /// CSV/JSON: BigQuery infers it.
    Autodetect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteMode {
    #[default]
    Append,
    Truncate,
    Empty,
    /// Load into a staging table, then one `MERGE` into the destination on
    /// [`LoadConfig::merge_keys`] (see `execute/merge.rs`).
    Merge,
}

impl WriteMode {
    /// The load job's `writeDisposition`. A merge's load job replaces its staging table.
    pub(crate) fn api_name(self) -> &'static str {
        match self {
            WriteMode::Append => "WRITE_APPEND",
            WriteMode::Truncate | WriteMode::Merge => "WRITE_TRUNCATE",
            WriteMode::Empty => "WRITE_EMPTY",
        }
    }

    /// The flag's value (`append`, `merge`, ...): how lineage rows and messages name the mode.
    pub(crate) fn flag_name(self) -> &'static str {
        match self {
            WriteMode::Append => "append",
            WriteMode::Truncate => "truncate",
            WriteMode::Empty => "empty",
            WriteMode::Merge => "merge",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionType {
    Hour,
    #[default]
    Day,
    Month,
    Year,
}

impl PartitionType {
    pub(crate) fn api_name(self) -> &'static str {
        match self {
            PartitionType::Hour => "HOUR",
            PartitionType::Day => "DAY",
            PartitionType::Month => "MONTH",
            PartitionType::Year => "YEAR",
        }
    }
}

/// Time partitioning of the destination table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    /// The partitioning column; `None` partitions by ingestion time (`_PARTITIONTIME`).
    pub field: Option<String>,
    pub kind: PartitionType,
}

/// `schemaUpdateOptions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchemaUpdate {
    pub allow_field_addition: bool,
    pub allow_field_relaxation: bool,
}

impl SchemaUpdate {
    pub(crate) fn is_empty(self) -> bool {
        !self.allow_field_addition && !self.allow_field_relaxation
    }

    pub(crate) fn api_names(self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.allow_field_addition {
            out.push("ALLOW_FIELD_ADDITION");
        }
        if self.allow_field_relaxation {
            out.push("ALLOW_FIELD_RELAXATION");
        }
        out
    }
}

/// `--on-incomplete`: a table some of whose extract items did not commit (a failed item, a
/// task manifest never written) is never loaded; this says whether skipping it fails the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnIncomplete {
    /// Load the complete tables, then exit 1 naming each skipped one (Cloud Run retries the
    /// task; the execution shows as failed).
    #[default]
    Fail,
    /// Load the complete tables, warn about each skipped one, exit 0.
    Skip,
}

/// How job status is polled: exponential from `initial` to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSettings {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

/// Everything one load task needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub input: Input,
    pub table: TableTemplate,
    pub format: SourceFormat,
    pub csv: CsvOptions,
    pub schema: SchemaSource,
    /// CSV/JSON: rows BigQuery may skip as bad before the job fails.
    pub max_bad_records: Option<u32>,
    /// JSON/CSV: ignore values not in the schema instead of failing the row.
    pub ignore_unknown_values: bool,
    /// Add the Hive `key=value` directories of the object paths as columns
    /// (`hivePartitioningOptions`, mode AUTO): `.../dt=2024-01-01/x.parquet` gets a DATE column `dt`.
    pub hive_partitioning: bool,
    pub write: WriteMode,
    /// Create missing datasets in [`LoadConfig::location`].
    pub create_dataset: bool,
    /// Dataset location for `create_dataset`, and the location jobs run in.
    pub location: Option<String>,
    pub partitioning: Option<Partitioning>,
    pub clustering: Vec<String>,
    pub schema_update: SchemaUpdate,
    /// Project that runs (and pays for) the jobs; default: each destination's project.
    pub job_project: Option<String>,
    /// Mixed into every job id: set it to load objects again that a job already loaded.
    pub job_id_salt: Option<String>,
    /// Labels put on every load job (`sluice-task`, ...).
    pub labels: BTreeMap<String, String>,
    /// Jobs in flight at once per task.
    pub concurrency: usize,
    /// Storage reads in flight at once per task while planning (footers, `HEAD`s, listings).
    pub read_concurrency: usize,
    pub shard_strategy: ShardStrategy,
    /// New submissions per work item after jobs that failed transiently (the first included).
    pub max_job_attempts: u32,
    pub poll: PollSettings,
    /// Retries of single API calls (5xx, rate limits, connection errors).
    pub retry: RetryPolicy,
    pub bigquery: ClientConfig,
    pub store: StoreConfig,
    /// Plan and report the jobs without submitting any.
    pub dry_run: bool,
    /// An input with no objects is success (nothing to do) instead of an error.
    pub allow_empty: bool,
    /// `--manifests`: what a table whose extract did not finish does to the task's exit.
    pub on_incomplete: OnIncomplete,
    /// One load job per object instead of per destination (append only).
    pub job_per_object: bool,
    /// `--write merge`: the columns that identify a row, for every table without an entry in
    /// [`LoadConfig::merge_keys_by_table`].
    pub merge_keys: Vec<String>,
    /// `--write merge --key TABLE=COL[,COL]`: keys per table id (one load job filling
    /// `{dataset}` tables whose rows have different identities).
    pub merge_keys_by_table: std::collections::BTreeMap<String, Vec<String>>,
    /// `--write merge`: the column whose greatest value wins among rows of one key in a batch;
    /// default: the cursor column extract recorded in the manifests, if any.
    pub order_by: Option<String>,
    /// Append one row per load to `{dataset}._sluice_loads` (`--no-lineage` turns it off).
    pub lineage: bool,
    /// `--no-state`: do not advance `{dest}/_state/{dataset}.json` after a successful load
    /// (`docs/state.md`).
    pub no_state: bool,
}

impl LoadConfig {
    /// A configuration with defaults for everything but the input and destination.
    pub fn new(input: Input, table: TableTemplate) -> LoadConfig {
        LoadConfig {
            input,
            table,
            format: SourceFormat::Parquet,
            csv: CsvOptions::default(),
            schema: SchemaSource::FromFiles,
            max_bad_records: None,
            ignore_unknown_values: false,
            hive_partitioning: false,
            write: WriteMode::Append,
            create_dataset: false,
            location: None,
            partitioning: None,
            clustering: Vec::new(),
            schema_update: SchemaUpdate::default(),
            job_project: None,
            job_id_salt: None,
            labels: BTreeMap::new(),
            concurrency: 4,
            read_concurrency: 16,
            shard_strategy: ShardStrategy::Hash,
            max_job_attempts: 3,
            poll: PollSettings::default(),
            retry: RetryPolicy::default(),
            bigquery: ClientConfig::default(),
            store: StoreConfig::default(),
            dry_run: false,
            allow_empty: false,
            on_incomplete: OnIncomplete::Fail,
            job_per_object: false,
            merge_keys: Vec::new(),
            merge_keys_by_table: std::collections::BTreeMap::new(),
            order_by: None,
            lineage: true,
            no_state: false,
        }
    }

    /// Checks combinations BigQuery would reject (or silently ignore), before any work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let url = match &self.input {
            Input::Glob(u) | Input::Manifests(u) => u,
        };
        if !url.starts_with("gs://") {
            return err(format!(
                "{url}: BigQuery loads only from Cloud Storage; give a gs:// URL"
            ));
        }
        self.validate_merge()?;
        if !self.schema_update.is_empty() {
            let allowed = matches!(self.write, WriteMode::Append | WriteMode::Merge)
                || (self.write == WriteMode::Truncate && self.table.has_decorator());
            if !allowed {
                return err(format!(
                    "--schema-update needs --write append or merge, or --write truncate with a \
                     partition decorator in --table (BigQuery accepts schemaUpdateOptions only \
                     there); got --write {} and table {}",
                    self.write.flag_name(),
                    self.table
                ));
            }
        }
        match (self.format, &self.schema) {
            (SourceFormat::Parquet, SchemaSource::FromFiles) => {}
            (SourceFormat::Parquet, _) => {
                return err("Parquet loads take their schema from the files' footers; \
                     --schema and --autodetect apply to CSV and JSON"
                    .into());
            }
            (_, SchemaSource::FromFiles) => {
                return err(format!(
                    "{} loads need --schema FILE or --autodetect",
                    self.format.api_name()
                ));
            }
            _ => {}
        }
        if self.format == SourceFormat::Parquet && self.max_bad_records.is_some() {
            return err(
                "--max-bad-records applies to CSV and JSON only (BigQuery ignores it for Parquet)"
                    .into(),
            );
        }
        if self.format == SourceFormat::Csv {
            if self.csv.field_delimiter.is_empty() {
                return err("--field-delimiter must not be empty".into());
            }
            if self.csv.quote.chars().count() > 1 {
                return err("--quote must be one character (or empty for no quoting)".into());
            }
        }
        if self.clustering.len() > 4 {
            return err(format!(
                "--cluster-by takes at most 4 columns, got {}",
                self.clustering.len()
            ));
        }
        if self.create_dataset && self.location.is_none() {
            return err(
                "--create-dataset needs --location: a dataset must share its location with the \
                 bucket, so Sluice does not guess"
                    .into(),
            );
        }
        if let (Some(p), Some(d)) = (&self.partitioning, self.table.decorator_literal()) {
            let want = decorator_len(p.kind.api_name());
            if want.is_some() && want != Some(d.len()) {
                return err(format!(
                    "table {}: decorator ${d} does not match --partition-type {}",
                    self.table,
                    p.kind.api_name()
                ));
            }
        }
        if self.job_per_object && self.write != WriteMode::Append {
            return err(format!(
                "--job-per-object needs --write append: with {} each object's job would replace \
                 what the previous one loaded",
                self.write.api_name()
            ));
        }
        if self.concurrency == 0 {
            return err("--concurrency must be at least 1".into());
        }
        if self.read_concurrency == 0 {
            return err("--read-concurrency must be at least 1".into());
        }
        if self.max_job_attempts == 0 {
            return err("--max-job-attempts must be at least 1".into());
        }
        Ok(())
    }
}

impl LoadConfig {
    /// The merge keys of one table (its id without project, dataset or decorator): its own
    /// `--key TABLE=...` entry, else the keys for every table (empty: none given).
    pub(crate) fn merge_keys_for(&self, table: &str) -> &[String] {
        self.merge_keys_by_table
            .get(table)
            .unwrap_or(&self.merge_keys)
    }

    /// `--write merge` needs `--key`; `--key`/`--order-by` mean nothing without it.
    fn validate_merge(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.write != WriteMode::Merge {
            if !self.merge_keys.is_empty()
                || !self.merge_keys_by_table.is_empty()
                || self.order_by.is_some()
            {
                return err(format!(
                    "--key and --order-by apply to --write merge only; got --write {}",
                    self.write.flag_name()
                ));
            }
            return Ok(());
        }
        if self.merge_keys.is_empty() && self.merge_keys_by_table.is_empty() {
            return err(
                "--write merge needs --key COL[,COL] (or --key TABLE=COL[,COL] per table): the \
                 columns that identify a row"
                    .into(),
            );
        }
        let lists = std::iter::once(("", &self.merge_keys)).chain(
            self.merge_keys_by_table
                .iter()
                .map(|(t, k)| (t.as_str(), k)),
        );
        for (table, keys) in lists {
            let label = if table.is_empty() {
                "--key".to_string()
            } else {
                format!("--key {table}=")
            };
            if !table.is_empty() && keys.is_empty() {
                return err(format!("{label}: no columns for table `{table}`"));
            }
            let mut seen = std::collections::BTreeSet::new();
            for key in keys {
                if key.trim().is_empty() {
                    return err(format!("{label}: empty column name"));
                }
                if !seen.insert(key.to_ascii_lowercase()) {
                    return err(format!("{label} names column `{key}` twice"));
                }
            }
            if let Some(order) = &self.order_by
                && keys.iter().any(|k| k.eq_ignore_ascii_case(order))
            {
                return err(format!(
                    "--order-by `{order}` is a --key column; rows of one key all share it, so it \
                     cannot pick the latest"
                ));
            }
        }
        if self.table.has_decorator() {
            return err(format!(
                "table {}: --write merge cannot take a $ partition decorator: a MERGE updates \
                 rows wherever their key lives, in any partition, so it always targets the whole \
                 table (drop the decorator; --partition-by still partitions the table)",
                self.table
            ));
        }
        if self.job_per_object {
            return err(
                "--job-per-object needs --write append; --write merge runs one staging load and \
                 one MERGE per table"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A configuration problem: the binary exits 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ExitStatus for ConfigError {
    /// Always a usage error: the flags (or their env twins) ask for something that cannot work.
    fn exit_code(&self) -> ExitCode {
        ExitCode::Usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(table: &str) -> LoadConfig {
        LoadConfig::new(
            Input::Glob("gs://b/raw/**.parquet".into()),
            TableTemplate::parse(table).unwrap(),
        )
    }

    fn rejects(c: &LoadConfig, needle: &str) {
        let e = c.validate().unwrap_err().0;
        assert!(e.contains(needle), "{e}");
    }

    #[test]
    fn defaults_are_valid() {
        config("p.ds.t").validate().unwrap();
    }

    #[test]
    fn schema_update_only_with_append_or_decorated_truncate() {
        let mut c = config("p.ds.t");
        c.schema_update.allow_field_addition = true;
        c.validate().unwrap();
        c.write = WriteMode::Truncate;
        rejects(&c, "--schema-update needs --write append");
        c.write = WriteMode::Empty;
        rejects(&c, "got --write empty");
        c.write = WriteMode::Merge;
        c.merge_keys = vec!["id".into()];
        c.validate().unwrap();
        let mut d = config("p.ds.t${dt}");
        d.schema_update.allow_field_relaxation = true;
        d.write = WriteMode::Truncate;
        d.validate().unwrap();
        d.write = WriteMode::Empty;
        rejects(&d, "--schema-update");
    }

    #[test]
    fn merge_needs_keys_and_a_whole_table() {
        let mut c = config("p.ds.t");
        c.write = WriteMode::Merge;
        rejects(&c, "--write merge needs --key");
        c.merge_keys = vec!["id".into(), "region".into()];
        c.validate().unwrap();
        c.order_by = Some("updated_at".into());
        c.validate().unwrap();
        c.merge_keys.push("ID".into());
        rejects(&c, "names column `ID` twice");
        c.merge_keys = vec!["id".into()];
        c.order_by = Some("Id".into());
        rejects(&c, "--order-by `Id` is a --key column");
        c.order_by = None;
        c.job_per_object = true;
        rejects(&c, "--job-per-object needs --write append");
        let mut d = config("p.ds.t${dt}");
        d.write = WriteMode::Merge;
        d.merge_keys = vec!["id".into()];
        rejects(&d, "cannot take a $ partition decorator");
        // Keys without merge mean nothing.
        let mut a = config("p.ds.t");
        a.merge_keys = vec!["id".into()];
        rejects(&a, "--key and --order-by apply to --write merge only");
        a.merge_keys.clear();
        a.order_by = Some("x".into());
        rejects(&a, "got --write append");
    }

    #[test]
    fn format_and_schema_combinations() {
        let mut c = config("p.ds.t");
        c.schema = SchemaSource::Autodetect;
        rejects(&c, "footers");
        c.format = SourceFormat::Csv;
        c.validate().unwrap();
        c.schema = SchemaSource::FromFiles;
        rejects(&c, "need --schema FILE or --autodetect");
        let mut p = config("p.ds.t");
        p.max_bad_records = Some(3);
        rejects(&p, "CSV and JSON only");
    }

    #[test]
    fn other_rules() {
        let mut c = config("p.ds.t");
        c.input = Input::Glob("/tmp/x/*.parquet".into());
        rejects(&c, "gs://");
        let mut c = config("p.ds.t");
        c.create_dataset = true;
        rejects(&c, "--location");
        let mut c = config("p.ds.t");
        c.clustering = vec!["a".into(); 5];
        rejects(&c, "at most 4");
        let mut c = config("p.ds.t$2024010100");
        c.partitioning = Some(Partitioning {
            field: None,
            kind: PartitionType::Day,
        });
        rejects(&c, "does not match --partition-type DAY");
    }
}
