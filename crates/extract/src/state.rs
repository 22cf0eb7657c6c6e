//! `--since auto`: what the stored state (`{dest}/_state/{dataset}.json`, written by `load`
//! after a successful load) says about each source, and what that means for this pull.
//! Extract only reads the state; it never writes it (`docs/state.md`).
//!
//! - Socrata: pull rows with `:updated_at` after `mark - lag`; no entry = full pull.
//! - Files (HTTP, local): skip the source when its current version (HEAD / file metadata)
//!   matches the stored one (`SourceVersion::matches`, as `--skip-existing` compares).
//! - Files with `--cursor COL`: the same skip; a changed file is pulled and only its rows with
//!   COL after `mark - lag` are written (`convert::cursor`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_manifest::{SourceState, SourceVersion, StateFile};
use sluice_storage::{ObjectStore, StoreConfig};

use crate::config::{ExtractConfig, OutputFormat};
use crate::convert::cursor::CursorSpec;
use crate::error::{ExtractError, Result};

/// State files are small; a larger one is not ours.
const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

/// The state files of one destination, each read once (on first use) per process.
pub(crate) struct StateReader {
    dest: String,
    store_config: StoreConfig,
    opened: Option<(Arc<dyn ObjectStore>, String)>,
    by_dataset: HashMap<String, StateFile>,
}

impl StateReader {
    /// A reader for `dest` (the extract `--dest`); nothing is read yet.
    pub(crate) fn new(dest: &str, store_config: &StoreConfig) -> StateReader {
        StateReader {
            dest: dest.to_string(),
            store_config: store_config.clone(),
            opened: None,
            by_dataset: HashMap::new(),
        }
    }

    /// A reader over an already opened store (`prefix` as `sluice_storage::open` returned).
    pub(crate) fn with_store(store: Arc<dyn ObjectStore>, prefix: &str) -> StateReader {
        StateReader {
            dest: store.url_of(prefix),
            store_config: StoreConfig::default(),
            opened: Some((store, prefix.to_string())),
            by_dataset: HashMap::new(),
        }
    }

    /// The stored entry of `dataset/name`, if any.
    pub(crate) async fn entry(&mut self, dataset: &str, name: &str) -> Result<Option<SourceState>> {
        let state = self.dataset(dataset).await?;
        Ok(state.sources.get(&state_key(dataset, name)).cloned())
    }

    /// The state file of `dataset`, for messages.
    pub(crate) fn file_url(&self, dataset: &str) -> String {
        match &self.opened {
            Some((store, prefix)) => store.url_of(&sluice_storage::join_key(
                prefix,
                &format!("_state/{dataset}.json"),
            )),
            None => format!("{}/_state/{dataset}.json", self.dest.trim_end_matches('/')),
        }
    }

    /// Reads `dataset`'s state now, so a broken file stops the task (exit 2) before any work.
    pub(crate) async fn preload(&mut self, dataset: &str) -> Result<()> {
        self.dataset(dataset).await.map(|_| ())
    }

    async fn dataset(&mut self, dataset: &str) -> Result<&StateFile> {
        if !self.by_dataset.contains_key(dataset) {
            let state = self.read(dataset).await?;
            self.by_dataset.insert(dataset.to_string(), state);
        }
        Ok(&self.by_dataset[dataset])
    }

    async fn read(&mut self, dataset: &str) -> Result<StateFile> {
        if self.opened.is_none() {
            self.opened = Some(sluice_storage::open(&self.dest, &self.store_config).await?);
        }
        let (store, prefix) = self.opened.as_ref().expect("opened above");
        let key = sluice_storage::join_key(prefix, &format!("_state/{dataset}.json"));
        let url = store.url_of(&key);
        if store.head(&key).await?.is_none() {
            tracing::info!(state = %url, "no state for dataset {dataset} yet ({url}): full pull");
            return Ok(StateFile::new(dataset));
        }
        let bytes = sluice_storage::read_to_bytes(store.as_ref(), &key, MAX_STATE_BYTES).await?;
        let state = StateFile::parse(&bytes, &url)
            .map_err(|e| ExtractError::Config(format!("{e} (fix or delete it; docs/state.md)")))?;
        if state.dataset != dataset {
            return Err(ExtractError::Config(format!(
                "state {url}: holds dataset {:?}, expected {dataset:?}",
                state.dataset
            )));
        }
        Ok(state)
    }
}

/// The key of a source in its dataset's state file (`CursorRecord::state_key`).
pub(crate) fn state_key(dataset: &str, name: &str) -> String {
    format!("{dataset}/{name}")
}

/// Socrata's lower bound for `--since auto`: the stored mark minus `lag` (a SoQL floating
/// timestamp, millisecond precision), or `None` (full pull) without a mark.
pub(crate) fn since_from_mark(
    entry: Option<&SourceState>,
    lag: Duration,
) -> Result<Option<String>> {
    let Some(mark) = entry.and_then(|e| e.mark.as_deref()) else {
        return Ok(None);
    };
    if lag.is_zero() {
        return Ok(Some(mark.to_string()));
    }
    let trimmed = mark.trim_end_matches('Z');
    let parsed = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ]
    .iter()
    .find_map(|f| chrono::NaiveDateTime::parse_from_str(trimmed, f).ok())
    .ok_or_else(|| {
        ExtractError::Config(format!(
            "--lag: the stored mark {mark:?} is not a timestamp, so no lag can be taken \
                 from it"
        ))
    })?;
    let lag = chrono::Duration::from_std(lag)
        .map_err(|_| ExtractError::Config(format!("--lag {lag:?} is too large")))?;
    let since = parsed
        .checked_sub_signed(lag)
        .ok_or_else(|| ExtractError::Config(format!("--lag reaches before year 1 from {mark}")))?;
    Ok(Some(since.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()))
}

/// `--cursor COL` is for CSV files converted to Parquet under `--since auto`: anything else
/// is a usage error naming the flag (exit 2).
pub(crate) fn check_cursor(
    config: &ExtractConfig,
    socrata: bool,
    format: OutputFormat,
    source: &str,
) -> Result<()> {
    let Some(column) = &config.cursor else {
        return Ok(());
    };
    let refuse = |why: String| Err(ExtractError::Config(format!("--cursor {column}: {why}")));
    if column.trim().is_empty() {
        return refuse("empty column name".into());
    }
    if !config.since_auto {
        return refuse("needs --since auto (the mark it filters by is the stored state)".into());
    }
    if socrata {
        return refuse(format!(
            "applies to CSV files; the Socrata source {source} is incremental by its \
             :updated_at already (extract it in a run without --cursor)"
        ));
    }
    if format != OutputFormat::Parquet {
        return refuse(format!(
            "filters rows while converting to Parquet, and {source} is extracted as \
             {format} (use --format parquet)"
        ));
    }
    Ok(())
}

/// The cursor of file `dataset/name` under `--cursor column`: the stored mark, if any. A mark
/// stored for another column is refused (exit 2): it cannot be compared with this one.
pub(crate) async fn cursor_spec(
    reader: &mut StateReader,
    dataset: &str,
    name: &str,
    column: &str,
    lag: Duration,
) -> Result<CursorSpec> {
    let key = state_key(dataset, name);
    let entry = reader.entry(dataset, name).await?;
    let state_url = reader.file_url(dataset);
    if let Some(stored) = entry.as_ref().and_then(|e| e.column.as_deref())
        && stored != column
        && entry.as_ref().is_some_and(|e| e.mark.is_some())
    {
        return Err(ExtractError::Config(format!(
            "state {state_url}: source {key}: the stored mark is for column {stored:?}, not \
             --cursor {column}; delete the entry (a full pull follows) or use --cursor {stored}"
        )));
    }
    Ok(CursorSpec {
        column: column.to_string(),
        mark: entry.and_then(|e| e.mark),
        lag,
        state_url,
        state_key: key,
    })
}

/// For a file source: the stored version when the current one still matches it (skip).
pub(crate) fn unchanged(entry: Option<&SourceState>, current: &SourceVersion) -> bool {
    entry
        .and_then(|e| e.source_version.as_ref())
        .is_some_and(|stored| stored.matches(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mark: Option<&str>, version: Option<SourceVersion>) -> SourceState {
        SourceState {
            column: None,
            mark: mark.map(str::to_string),
            source_version: version,
            extracted_by: None,
            advanced_by: None,
            advanced_at: "2026-12-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn since_is_mark_minus_lag() {
        assert_eq!(
            since_from_mark(None, Duration::from_secs(60)).unwrap(),
            None
        );
        let e = entry(Some("2026-11-30T12:00:00.000"), None);
        assert_eq!(
            since_from_mark(Some(&e), Duration::ZERO)
                .unwrap()
                .as_deref(),
            Some("2026-11-30T12:00:00.000")
        );
        assert_eq!(
            since_from_mark(Some(&e), Duration::from_secs(3 * 3600))
                .unwrap()
                .as_deref(),
            Some("2026-11-30T09:00:00.000")
        );
        let z = entry(Some("2026-11-30T00:30:00Z"), None);
        assert_eq!(
            since_from_mark(Some(&z), Duration::from_secs(3600))
                .unwrap()
                .as_deref(),
            Some("2026-11-29T23:30:00.000")
        );
        let words = entry(Some("batch 17"), None);
        let err = since_from_mark(Some(&words), Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("\"batch 17\""), "{err}");
    }

    #[test]
    fn files_skip_only_on_a_matching_version() {
        let v = |etag: &str| SourceVersion {
            etag: Some(etag.into()),
            last_modified: None,
            size: None,
        };
        assert!(!unchanged(None, &v("a")));
        assert!(unchanged(Some(&entry(None, Some(v("a")))), &v("a")));
        assert!(!unchanged(Some(&entry(None, Some(v("a")))), &v("b")));
        assert!(!unchanged(Some(&entry(Some("x"), None)), &v("a")));
    }
}
