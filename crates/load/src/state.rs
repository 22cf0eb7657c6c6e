//! After execute: advance the incremental state (`{dest}/_state/{dataset}.json`) of the
//! sources whose data this task just loaded (`docs/state.md`).
//!
//! The mark moves only when what it covers is in BigQuery: a source (`state_key`) advances
//! when every one of its items in the extract execution committed (none failed), its dataset
//! has all its planned items, and every object of its items was in a table whose load jobs
//! all succeeded in this task. The file is read with its generation and written
//! generation-matched (create-if-absent when missing); a concurrent writer makes the write
//! fail, and the task re-reads and tries again, so two loads racing both end in the max.
//! Marks never move backwards.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sluice_manifest::{
    AnyManifest, ItemStatus, SourceState, SourceVersion, StateFile, TaskManifest, compare_marks,
};
use sluice_runtime::TaskContext;
use sluice_storage::{ObjectStore, StorageError, WriteOptions};

use crate::config::LoadConfig;
use crate::errors::LoadError;
use crate::plan::WorkItem;
use crate::report::JobReport;

/// Manifests and state files are small; anything larger is not one.
const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Rounds of read-modify-write before giving up on a contended state file.
const MAX_ROUNDS: u32 = 20;

/// Per destination table: how many jobs it takes and which objects they load. Taken from
/// the prepared items before execute consumes them.
#[derive(Debug, Default)]
pub(crate) struct Expected {
    by_table: BTreeMap<String, (usize, Vec<String>)>,
}

impl Expected {
    pub(crate) fn of<'a>(items: impl Iterator<Item = &'a WorkItem>) -> Expected {
        let mut by_table: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
        for item in items {
            let entry = by_table.entry(item.destination.to_string()).or_default();
            entry.0 += 1;
            entry.1.extend(item.objects.iter().map(|o| o.url()));
        }
        Expected { by_table }
    }

    /// The objects of every table all of whose jobs succeeded.
    pub(crate) fn loaded(&self, results: &[Result<JobReport, LoadError>]) -> BTreeSet<String> {
        let mut succeeded: BTreeMap<&str, usize> = BTreeMap::new();
        for report in results.iter().flatten() {
            *succeeded.entry(report.table.as_str()).or_default() += 1;
        }
        self.by_table
            .iter()
            .filter(|(table, (jobs, _))| succeeded.get(table.as_str()) == Some(jobs))
            .flat_map(|(_, (_, objects))| objects.iter().cloned())
            .collect()
    }
}

/// What the manifests say about one source (`state_key`).
#[derive(Debug, Clone, Default, PartialEq)]
struct Source {
    dataset: String,
    /// The extract destination root (`gs://bucket/prefix`) the state file lives under.
    dest: String,
    column: Option<String>,
    /// Smallest lower bound its items used (`None`: a full pull).
    from: Option<String>,
    full_pull: bool,
    /// Largest upper bound of its items.
    to: Option<String>,
    version: Option<SourceVersion>,
    failed: bool,
    objects: Vec<String>,
    execution: Option<String>,
}

/// What a task advances, from the extract execution's task manifests.
#[derive(Debug, Default)]
struct Sources {
    by_key: BTreeMap<String, Source>,
    /// Datasets whose items are not all present (a missing task manifest): never advanced.
    incomplete: BTreeSet<String>,
}

fn collect(manifests: &[TaskManifest]) -> Sources {
    let mut sources = Sources::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut planned: Option<&BTreeMap<String, usize>> = None;
    for manifest in manifests {
        planned = planned.or(manifest.planned_items.as_ref());
        for item in &manifest.items {
            *seen.entry(item.dataset.clone()).or_default() += 1;
            let Some(cursor) = &item.source.cursor else {
                continue;
            };
            let source = sources
                .by_key
                .entry(cursor.state_key.clone())
                .or_insert_with(|| Source {
                    dataset: item.dataset.clone(),
                    dest: manifest.dest.clone(),
                    column: cursor.column.clone(),
                    execution: manifest.execution.clone(),
                    ..Source::default()
                });
            source.failed |= item.status == ItemStatus::Failed;
            match &cursor.from {
                None => source.full_pull = true,
                Some(from) => {
                    let lower = match &source.from {
                        Some(f) if compare_marks(f, from).is_le() => f.clone(),
                        _ => from.clone(),
                    };
                    source.from = Some(lower);
                }
            }
            if let Some(to) = &cursor.to
                && source
                    .to
                    .as_ref()
                    .is_none_or(|t| compare_marks(t, to).is_lt())
            {
                source.to = Some(to.clone());
            }
            // Files (with or without a cursor column) store their version: an unchanged file
            // is skipped by it, a changed one filtered by the mark. Socrata pages do not.
            if item.source.page.is_none() && item.source.version.is_known() {
                source.version = Some(item.source.version.clone());
            }
            source
                .objects
                .extend(item.objects.iter().map(|o| o.url.clone()));
        }
    }
    // Without `planned_items` (older extract), every task manifest must be there.
    let task_count = manifests.first().map_or(0, |m| m.task_count as usize);
    let all_tasks = manifests
        .iter()
        .map(|m| m.task_index)
        .collect::<BTreeSet<_>>()
        .len()
        == task_count;
    for source in sources.by_key.values() {
        let complete = match planned {
            Some(planned) => planned.get(&source.dataset) == seen.get(&source.dataset),
            None => all_tasks,
        };
        if !complete {
            sources.incomplete.insert(source.dataset.clone());
        }
    }
    sources
}

/// One change to a state file, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Advance {
    key: String,
    old: String,
    new: String,
}

fn describe(entry: Option<&SourceState>) -> String {
    match entry {
        None => "(none)".into(),
        Some(e) => match (&e.mark, &e.source_version) {
            (Some(mark), _) => mark.clone(),
            (None, Some(v)) => describe_version(v),
            (None, None) => "(none)".into(),
        },
    }
}

fn describe_version(v: &SourceVersion) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &v.etag {
        parts.push(format!("etag {e}"));
    }
    if let Some(l) = &v.last_modified {
        parts.push(format!("last-modified {l}"));
    }
    if let Some(s) = v.size {
        parts.push(format!("{s} bytes"));
    }
    parts.join(", ")
}

/// Applies `sources` (all of one dataset) to `state`; returns what changed. Marks only move
/// forward; a pull whose lower bound lies past the stored mark (a `--since` later than what
/// was loaded) would leave a gap and does not move it.
fn apply(
    state: &mut StateFile,
    sources: &[(&String, &Source)],
    execution: Option<&str>,
    now: &str,
) -> Vec<Advance> {
    let mut changes = Vec::new();
    for (key, source) in sources {
        let old = state.sources.get(*key).cloned();
        let old_mark = old.as_ref().and_then(|o| o.mark.clone());
        let mark = match (&old_mark, &source.to) {
            (Some(old), Some(to)) if compare_marks(to, old).is_le() => Some(old.clone()),
            (Some(old), Some(_))
                if !source.full_pull
                    && source
                        .from
                        .as_ref()
                        .is_some_and(|from| compare_marks(from, old).is_gt()) =>
            {
                tracing::warn!(
                    source = %key,
                    "state {key}: not advanced: this pull started after the stored mark {old} \
                     (from {}), so rows in between were never loaded",
                    source.from.as_deref().unwrap_or_default()
                );
                Some(old.clone())
            }
            (_, Some(to)) => Some(to.clone()),
            (old, None) => old.clone(),
        };
        let version = match &source.version {
            Some(v) => Some(v.clone()),
            None => old.as_ref().and_then(|o| o.source_version.clone()),
        };
        if mark.is_none() && version.is_none() {
            continue;
        }
        let unchanged = old
            .as_ref()
            .is_some_and(|o| o.mark == mark && o.source_version == version);
        if unchanged {
            continue;
        }
        let new = SourceState {
            column: source.column.clone().or(old.and_then(|o| o.column)),
            mark,
            source_version: version,
            extracted_by: source.execution.clone(),
            advanced_by: execution.map(str::to_string),
            advanced_at: now.to_string(),
        };
        changes.push(Advance {
            key: (*key).clone(),
            old: describe(state.sources.get(*key)),
            new: describe(Some(&new)),
        });
        state.sources.insert((*key).clone(), new);
    }
    changes
}

/// The state file of `dataset` under the extract destination `dest`.
fn state_key(prefix: &str, dataset: &str) -> String {
    sluice_storage::join_key(prefix, &format!("_state/{dataset}.json"))
}

/// Reads the state with its generation (0: absent), applies, writes generation-matched;
/// on a precondition failure, again from the read.
async fn advance_file(
    store: &dyn ObjectStore,
    key: &str,
    dataset: &str,
    sources: &[(&String, &Source)],
    execution: Option<&str>,
) -> Result<Vec<Advance>, LoadError> {
    let url = store.url_of(key);
    let state_error = |reason: String| LoadError::State {
        url: url.clone(),
        reason,
    };
    for round in 0..MAX_ROUNDS {
        let (mut state, generation) = match store.head(key).await? {
            None => (StateFile::new(dataset), 0),
            Some(meta) => {
                let generation = meta.generation.ok_or_else(|| {
                    state_error(
                        "the store reports no generation for it (a local file written by \
                         another tool?), so it cannot be updated safely"
                            .into(),
                    )
                })?;
                let bytes = sluice_storage::read_to_bytes(store, key, MAX_BYTES).await?;
                (StateFile::parse(&bytes, &url)?, generation)
            }
        };
        if state.dataset != dataset {
            return Err(state_error(format!(
                "holds dataset {:?}, expected {dataset:?}",
                state.dataset
            )));
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let changes = apply(&mut state, sources, execution, &now);
        if changes.is_empty() {
            return Ok(changes);
        }
        let options = WriteOptions {
            content_type: Some("application/json".into()),
            ..WriteOptions::default()
        };
        match store
            .write_if_generation(key, state.to_bytes().into(), generation, options)
            .await
        {
            Ok(_) => return Ok(changes),
            Err(StorageError::PreconditionFailed { .. }) => {
                tracing::info!(state = %url, round, "state file changed since it was read; reading it again");
                // Spread racing writers out a little.
                let pause = rand::random::<u64>() % (50 * u64::from(round + 1));
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(state_error(format!(
        "changed by other writers {MAX_ROUNDS} times in a row while this task tried to update it"
    )))
}

async fn read_manifests(
    config: &LoadConfig,
    prefix_url: &str,
) -> Result<Vec<TaskManifest>, LoadError> {
    let (store, prefix) = sluice_storage::open(prefix_url, &config.store).await?;
    let mut manifests = Vec::new();
    for meta in store.list(&prefix).await? {
        let name = meta.key.strip_prefix(&prefix).unwrap_or(&meta.key);
        let name = name.trim_start_matches('/');
        if name.contains('/') || !name.starts_with("task-") || !name.ends_with(".json") {
            continue;
        }
        let url = store.url_of(&meta.key);
        let bytes = sluice_storage::read_to_bytes(store.as_ref(), &meta.key, MAX_BYTES).await?;
        if let AnyManifest::Task(task) = sluice_manifest::parse_any(&bytes, &url)? {
            manifests.push(*task);
        }
    }
    Ok(manifests)
}

/// Advances the state of every source whose data `loaded` (object URLs of this task's
/// successful tables) covers, reading the extract manifests under `manifests_url`. One log
/// line per advanced source. Errors name the state file.
pub(crate) async fn advance(
    config: &LoadConfig,
    manifests_url: &str,
    loaded: &BTreeSet<String>,
    task: &TaskContext,
) -> Result<usize, LoadError> {
    let manifests = read_manifests(config, manifests_url).await?;
    let sources = collect(&manifests);
    let mut by_file: BTreeMap<(String, String), Vec<(&String, &Source)>> = BTreeMap::new();
    for (key, source) in &sources.by_key {
        let why_not = if source.failed {
            Some("an item of it failed")
        } else if sources.incomplete.contains(&source.dataset) {
            Some("its dataset is missing items (a task manifest?)")
        } else if !source.objects.iter().all(|o| loaded.contains(o)) {
            if !source.objects.iter().any(|o| loaded.contains(o)) {
                // Another task's table, or a table whose load failed (reported as such).
                continue;
            }
            Some("some of its objects were not loaded (a failed job, or another task's table)")
        } else {
            None
        };
        if let Some(why) = why_not {
            tracing::warn!(source = %key, "state {key}: not advanced: {why}");
            continue;
        }
        by_file
            .entry((source.dest.clone(), source.dataset.clone()))
            .or_default()
            .push((key, source));
    }
    let mut advanced = 0;
    for ((dest, dataset), sources) in by_file {
        let (store, prefix) = sluice_storage::open(&dest, &config.store).await?;
        let key = state_key(&prefix, &dataset);
        let changes = advance_file(
            store.as_ref(),
            &key,
            &dataset,
            &sources,
            task.execution.as_deref(),
        )
        .await?;
        for change in &changes {
            tracing::info!(
                source = %change.key,
                old = %change.old,
                new = %change.new,
                state = %store.url_of(&key),
                "state {}: {} -> {}",
                change.key,
                change.old,
                change.new
            );
        }
        advanced += changes.len();
    }
    Ok(advanced)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(from: Option<&str>, to: &str) -> Source {
        Source {
            dataset: "d".into(),
            dest: "gs://b/raw".into(),
            column: Some("_socrata_updated_at".into()),
            from: from.map(str::to_string),
            full_pull: from.is_none(),
            to: Some(to.into()),
            ..Source::default()
        }
    }

    #[test]
    fn marks_move_forward_only_and_never_over_a_gap() {
        let key = "d/s".to_string();
        let mut state = StateFile::new("d");
        let first = source(None, "2026-11-30T00:00:00");
        let changes = apply(
            &mut state,
            &[(&key, &first)],
            Some("l1"),
            "2026-12-01T00:00:00Z",
        );
        assert_eq!(changes[0].old, "(none)");
        assert_eq!(changes[0].new, "2026-11-30T00:00:00");
        // Older data (a late retry of an old load) never moves it back.
        let older = source(Some("2026-11-01T00:00:00"), "2026-11-15T00:00:00");
        assert!(apply(&mut state, &[(&key, &older)], None, "2026-12-01T00:00:00Z").is_empty());
        // The same again is a no-op.
        assert!(apply(&mut state, &[(&key, &first)], None, "2026-12-01T00:00:00Z").is_empty());
        // A pull starting after the mark would skip rows: kept.
        let gap = source(Some("2026-12-10T00:00:00"), "2026-12-11T00:00:00");
        assert!(apply(&mut state, &[(&key, &gap)], None, "2026-12-01T00:00:00Z").is_empty());
        // A pull from at or before the mark (lag) moves it.
        let next = source(Some("2026-11-29T23:00:00"), "2026-12-01T00:00:00");
        let changes = apply(
            &mut state,
            &[(&key, &next)],
            Some("l2"),
            "2026-12-02T00:00:00Z",
        );
        assert_eq!(changes.len(), 1);
        let entry = &state.sources["d/s"];
        assert_eq!(entry.mark.as_deref(), Some("2026-12-01T00:00:00"));
        assert_eq!(entry.advanced_by.as_deref(), Some("l2"));
    }

    /// `--cursor COL` files: the entry holds the file's version and the column's mark.
    #[test]
    fn a_file_with_a_cursor_keeps_its_version_and_its_mark() {
        let key = "d/orders".to_string();
        let version = |etag: &str| SourceVersion {
            etag: Some(etag.into()),
            last_modified: None,
            size: None,
        };
        let file = |from: Option<&str>, to: &str, etag: &str| Source {
            column: Some("updated_at".into()),
            version: Some(version(etag)),
            ..source(from, to)
        };
        let mut state = StateFile::new("d");
        let day1 = file(None, "2026-11-29T10:00:00.000000Z", "a");
        apply(&mut state, &[(&key, &day1)], None, "2026-12-01T00:00:00Z");
        let entry = &state.sources["d/orders"];
        assert_eq!(entry.column.as_deref(), Some("updated_at"));
        assert_eq!(entry.mark.as_deref(), Some("2026-11-29T10:00:00.000000Z"));
        assert_eq!(entry.source_version, Some(version("a")));
        // Changed, nothing after the mark (`to` = the mark): the version moves, the mark stays.
        let mark = "2026-11-29T10:00:00.000000Z";
        let same = file(Some(mark), mark, "b");
        let changes = apply(&mut state, &[(&key, &same)], None, "2026-12-02T00:00:00Z");
        assert_eq!(changes.len(), 1);
        let entry = &state.sources["d/orders"];
        assert_eq!(entry.mark.as_deref(), Some(mark));
        assert_eq!(entry.source_version, Some(version("b")));
    }
}
