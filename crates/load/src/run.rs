//! One load task, end to end, as a one-way pipeline; each stage takes the previous one's
//! output and none calls back into an earlier one:
//!
//! ```text
//! discover (inputs.rs)  input -> objects
//! plan (plan.rs)        objects -> work items (one per destination) -> this task's share
//! prepare (prepare.rs)  items -> specs: manifest claims checked, footers read and merged,
//!                       deterministic job ids, existing tables compared
//! execute (execute/)    datasets, tables, one load job per item (or a dry run's list)
//! report (report.rs)    the task's LoadReport and its log lines; tables whose extract is
//!                       incomplete (completeness.rs) are skipped, an error under
//!                       --on-incomplete fail
//! ```

use sluice_runtime::{CancellationToken, TaskContext};

use crate::api::Api;
use crate::client::Credentials;
use crate::config::{Input, LoadConfig};
use crate::errors::LoadError;
use crate::report::{self, LoadReport};
use crate::{execute, inputs, plan, prepare, state};

/// Runs this task's share of the load.
pub async fn run(
    config: &LoadConfig,
    task: &TaskContext,
    cancel: &CancellationToken,
) -> Result<LoadReport, LoadError> {
    config.validate()?;
    if !config.dry_run {
        probe_bigquery_credentials(config).await?;
    }

    let discovered = inputs::discover(config).await?;
    // Tables whose extract is incomplete (`--manifests`) are planned like the rest, so tasks
    // agree on the split, and then taken out of this task's share (completeness.rs).
    let blocked = discovered
        .completeness
        .block(discovered.objects.iter().map(|o| &o.vars), &config.table);
    if discovered.objects.is_empty() && discovered.completeness.is_complete() {
        let (Input::Glob(input) | Input::Manifests(input)) = &config.input;
        match discovered.unchanged_items {
            Some(items) => report::log_nothing_new(input, items),
            None => report::log_nothing_to_do(input),
        }
        return Ok(LoadReport::default());
    }

    let mut plan = plan::plan(discovered.objects, config, task)?;
    let skipped = blocked.take(
        &mut plan.mine,
        |item| &item.destination,
        task,
        config.shard_strategy,
    );
    report::log_share(plan.objects_total, plan.items_total, plan.mine.len(), task);
    if plan.mine.is_empty() {
        let report = report::finish(plan.objects_total, plan.items_total, Vec::new());
        return report::conclude(report, skipped, config.on_incomplete);
    }

    let api = match config.dry_run {
        true => None,
        false => Some(Api::connect(config, cancel).await?),
    };
    let mut stores = discovered.stores;
    let prepared = prepare::prepare(
        config,
        &mut stores,
        plan.mine,
        discovered.from_manifests,
        api.as_ref(),
    )
    .await?;

    let expected = state::Expected::of(prepared.iter().map(|p| &p.item));
    let results = match &api {
        None => execute::dry_run(config, &prepared),
        Some(api) => execute::execute(config, api, prepared, task).await?,
    };
    // The state moves only after the loads it covers succeeded (never for a skipped table: its
    // objects were not loaded); a failure to write it fails the task (exit 1), and Cloud Run's
    // retry redoes the idempotent loads, then the write.
    let advanced = advance_state(config, &expected, &results, task).await;
    let report = report::finish(plan.objects_total, plan.items_total, results);
    let done = report::conclude(report, skipped, config.on_incomplete)?;
    advanced?;
    Ok(done)
}

/// `docs/state.md`: with `--manifests` input and without `--no-state` / `--dry-run`.
async fn advance_state(
    config: &LoadConfig,
    expected: &state::Expected,
    results: &[Result<report::JobReport, LoadError>],
    task: &TaskContext,
) -> Result<(), LoadError> {
    let Input::Manifests(manifests) = &config.input else {
        return Ok(());
    };
    if config.no_state || config.dry_run {
        return Ok(());
    }
    state::advance(config, manifests, &expected.loaded(results), task)
        .await
        .map(|_| ())
}

/// With Application Default Credentials, makes sure a token can be had before any work, so
/// "no credentials" is a setup error in seconds (see `sluice_storage::preflight`).
async fn probe_bigquery_credentials(config: &LoadConfig) -> Result<(), LoadError> {
    if config.bigquery.credentials != Credentials::Default {
        return Ok(());
    }
    let setup = &config.store.credentials;
    let credentials = sluice_storage::preflight::adc_credentials("BigQuery", setup)?;
    sluice_storage::preflight::probe_credentials(&credentials, "BigQuery", setup).await?;
    Ok(())
}
