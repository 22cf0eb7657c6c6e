//! Which tables of an extract execution are whole, so `load --manifests` loads those and never
//! one with a missing item (issue 15: one dead source must not block the whole day).
//!
//! Completeness is decided per extract *dataset*: a dataset is complete when every item of it
//! in the execution's plan committed. An item is missing when a present task manifest records
//! it `failed`, or when a task manifest was never written (its task died) and the present ones
//! do not account for all of the dataset's `planned_items`. Manifests from an older sluice have
//! no `planned_items`; then a missing task manifest could hold any dataset's items, and every
//! dataset is incomplete (the rule before issue 15).
//!
//! A destination (a work item's table or partition) is blocked when any object bound for it
//! belongs to an incomplete dataset. When the `--table` template does not put `{dataset}` in
//! the table's path, the missing items could have gone to any table, so one incomplete dataset
//! blocks every destination. Every task computes the same answer from the same listing.

use std::collections::{BTreeMap, BTreeSet};

use sluice_runtime::{ShardStrategy, TaskContext, shard};

use crate::template::{ObjectVars, TableRef, TableTemplate};

/// Reasons quoted per dataset (a dead portal can fail thousands of pages; the task manifests
/// have every one).
const MAX_REASONS_PER_DATASET: usize = 5;

/// A table (or partition) this task did not load because its extract is incomplete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedTable {
    /// `project.dataset.table[$decorator]`, or a description when no object names it (every
    /// item of its dataset failed).
    pub table: String,
    /// Why, each naming the dataset and the failed item keys or missing task manifests.
    pub reasons: Vec<String>,
}

/// What one task manifest says about its share, gathered while `inputs` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestFacts {
    pub(crate) url: String,
    pub(crate) task_index: u32,
    pub(crate) complete: bool,
    pub(crate) planned_items: Option<BTreeMap<String, usize>>,
    /// Items it records per dataset, whatever their status.
    pub(crate) items: BTreeMap<String, usize>,
    /// `(dataset, key, cause)` of every item it records as failed.
    pub(crate) failed: Vec<(String, String, String)>,
}

/// The verdict on one execution's manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Completeness {
    /// Incomplete datasets and why.
    datasets: BTreeMap<String, Vec<String>>,
    /// Reasons no dataset can be shown complete.
    everything: Vec<String>,
}

impl Completeness {
    /// Judges one execution's task manifests: `task_count` tasks, `facts` from those present
    /// (one execution, one task count: `inputs` refused a mixed set before this).
    pub(crate) fn judge(task_count: u32, facts: &[ManifestFacts]) -> Completeness {
        let mut verdict = Completeness::default();
        let present: BTreeSet<u32> = facts.iter().map(|f| f.task_index).collect();
        let missing: Vec<String> = (0..task_count)
            .filter(|i| !present.contains(i))
            .map(|i| format!("task-{i:05}.json"))
            .collect();

        let mut failed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for fact in facts {
            for (dataset, key, cause) in &fact.failed {
                failed
                    .entry(dataset)
                    .or_default()
                    .push(format!("item {key} failed ({}): {cause}", fact.url));
            }
            if !fact.complete && fact.failed.is_empty() {
                verdict.everything.push(format!(
                    "{} is marked incomplete but records no failed item, so the missing part \
                     cannot be placed",
                    fact.url
                ));
            }
        }
        for (dataset, reasons) in failed {
            let count = reasons.len();
            let mut quoted: Vec<String> =
                reasons.into_iter().take(MAX_REASONS_PER_DATASET).collect();
            if count > quoted.len() {
                quoted.push(format!(
                    "and {} more failed item(s) (see the task manifests)",
                    count - quoted.len()
                ));
            }
            verdict.datasets.insert(dataset.to_string(), quoted);
        }

        let plans: BTreeSet<&BTreeMap<String, usize>> = facts
            .iter()
            .filter_map(|f| f.planned_items.as_ref())
            .collect();
        let all_planned = facts.iter().all(|f| f.planned_items.is_some());
        if !all_planned || facts.is_empty() {
            if !missing.is_empty() {
                verdict.everything.push(format!(
                    "extract ran {task_count} task(s) but {} never wrote its manifest ({}), and \
                     the manifests present have no planned_items (written by an older sluice) to \
                     tell which tables that task held",
                    missing.len(),
                    missing.join(", ")
                ));
            }
            return verdict;
        }
        let mut plans = plans.into_iter();
        let (Some(plan), None) = (plans.next(), plans.next()) else {
            verdict.everything.push(
                "the task manifests disagree on the execution's planned_items (the sources \
                 changed while its tasks planned), so no table can be shown whole"
                    .to_string(),
            );
            return verdict;
        };
        let mut accounted: BTreeMap<&str, usize> = BTreeMap::new();
        for fact in facts {
            for (dataset, count) in &fact.items {
                *accounted.entry(dataset).or_insert(0) += count;
            }
        }
        let datasets: BTreeSet<&str> = plan
            .keys()
            .map(String::as_str)
            .chain(accounted.keys().copied())
            .collect();
        for dataset in datasets {
            let planned = plan.get(dataset).copied().unwrap_or(0);
            let listed = accounted.get(dataset).copied().unwrap_or(0);
            let reason = match listed.cmp(&planned) {
                std::cmp::Ordering::Equal => continue,
                std::cmp::Ordering::Less if !missing.is_empty() => format!(
                    "{} of its {planned} planned item(s) were in task manifest(s) never written \
                     ({})",
                    planned - listed,
                    missing.join(", ")
                ),
                _ => {
                    format!("the task manifests record {listed} item(s) but the plan has {planned}")
                }
            };
            verdict
                .datasets
                .entry(dataset.to_string())
                .or_default()
                .push(reason);
        }
        verdict
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.datasets.is_empty() && self.everything.is_empty()
    }

    /// Every reason, each dataset's prefixed with its name.
    fn all_reasons(&self) -> Vec<String> {
        let mut out = self.everything.clone();
        for (dataset, reasons) in &self.datasets {
            out.extend(reasons.iter().map(|r| format!("dataset {dataset}: {r}")));
        }
        out
    }

    /// The destinations the objects (given by their template variables) must not be loaded
    /// into, and the incomplete datasets no object stands for.
    pub(crate) fn block<'a>(
        &self,
        objects: impl Iterator<Item = &'a ObjectVars>,
        template: &TableTemplate,
    ) -> Blocked {
        let mut blocked = Blocked::default();
        if self.is_complete() {
            return blocked;
        }
        let separated = self.everything.is_empty() && template.table_uses("dataset");
        let all = self.all_reasons();
        let mut with_objects: BTreeSet<&str> = BTreeSet::new();
        let mut any_destination = false;
        for vars in objects {
            // An object the template cannot place fails the plan, which names it.
            let Ok(destination) = template.render(vars) else {
                continue;
            };
            let dataset = vars.dataset.as_deref();
            if let Some(d) = dataset {
                with_objects.insert(d);
            }
            let reasons: Vec<String> = match dataset.and_then(|d| self.datasets.get_key_value(d)) {
                _ if !separated => all.clone(),
                Some((d, reasons)) => reasons
                    .iter()
                    .map(|r| format!("dataset {d}: {r}"))
                    .collect(),
                None => {
                    blocked.loadable.insert(destination);
                    continue;
                }
            };
            any_destination = true;
            let entry = blocked.destinations.entry(destination).or_default();
            for reason in reasons {
                if !entry.contains(&reason) {
                    entry.push(reason);
                }
            }
        }
        // A table with a complete dataset's objects and an incomplete one's is blocked.
        blocked
            .loadable
            .retain(|d| !blocked.destinations.contains_key(d));

        if separated {
            for (dataset, reasons) in &self.datasets {
                if with_objects.contains(dataset.as_str()) {
                    continue;
                }
                let vars = ObjectVars {
                    dataset: Some(dataset.clone()),
                    ..ObjectVars::default()
                };
                let table = match template.render(&vars) {
                    Ok(t) => t.to_string(),
                    Err(_) => format!("the table(s) of dataset {dataset} (--table {template})"),
                };
                blocked.orphans.push(SkippedTable {
                    table,
                    reasons: reasons
                        .iter()
                        .map(|r| format!("dataset {dataset}: {r}"))
                        .collect(),
                });
            }
        } else if !any_destination {
            let table = match template.is_literal() {
                true => template.to_string(),
                false => format!("every table of --table {template}"),
            };
            blocked.orphans.push(SkippedTable {
                table,
                reasons: all,
            });
        }
        blocked
    }
}

/// What an incomplete execution keeps out of BigQuery.
#[derive(Debug, Default)]
pub(crate) struct Blocked {
    /// Destinations some incomplete dataset's objects are bound for, with the reasons.
    destinations: BTreeMap<TableRef, Vec<String>>,
    /// Destinations that can be loaded (across all tasks).
    loadable: BTreeSet<TableRef>,
    /// Incomplete datasets without a single object: nothing in the plan stands for them.
    orphans: Vec<SkippedTable>,
}

/// The skipped tables of this task's share, and whether the execution had anything to load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Skipped {
    pub(crate) tables: Vec<SkippedTable>,
    /// No destination of the whole input could be loaded (every task sees the same).
    pub(crate) nothing_loadable: bool,
}

impl Blocked {
    /// Removes the blocked items from this task's share and returns them as skipped tables,
    /// plus this task's share of the orphans (dealt like items, so one task reports each).
    pub(crate) fn take<T>(
        self,
        mine: &mut Vec<T>,
        destination: impl Fn(&T) -> &TableRef,
        task: &TaskContext,
        strategy: ShardStrategy,
    ) -> Skipped {
        let mut skipped: BTreeMap<String, Vec<String>> = BTreeMap::new();
        mine.retain(|item| match self.destinations.get(destination(item)) {
            Some(reasons) => {
                skipped.insert(destination(item).to_string(), reasons.clone());
                false
            }
            None => true,
        });
        let mut tables: Vec<SkippedTable> = skipped
            .into_iter()
            .map(|(table, reasons)| SkippedTable { table, reasons })
            .collect();
        let nothing_loadable =
            self.loadable.is_empty() && (!self.destinations.is_empty() || !self.orphans.is_empty());
        tables.extend(shard::take_share(
            self.orphans,
            |o: &SkippedTable| o.table.clone(),
            task.index,
            task.count,
            strategy,
        ));
        Skipped {
            tables,
            nothing_loadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(index: u32, items: &[(&str, usize)], failed: &[(&str, &str)]) -> ManifestFacts {
        ManifestFacts {
            url: format!("gs://b/raw/_manifests/task-{index:05}.json"),
            task_index: index,
            complete: failed.is_empty(),
            planned_items: Some(
                [("a", 2), ("b", 1), ("c", 3)]
                    .into_iter()
                    .map(|(d, n)| (d.to_string(), n))
                    .collect(),
            ),
            items: items.iter().map(|(d, n)| (d.to_string(), *n)).collect(),
            failed: failed
                .iter()
                .map(|(d, k)| (d.to_string(), k.to_string(), "https://h/x: HTTP 404".into()))
                .collect(),
        }
    }

    fn vars(dataset: &str) -> ObjectVars {
        ObjectVars {
            name: "part-00000".into(),
            dataset: Some(dataset.into()),
            ..ObjectVars::default()
        }
    }

    fn template(t: &str) -> TableTemplate {
        TableTemplate::parse(t).unwrap()
    }

    fn task(index: u32, count: u32) -> TaskContext {
        TaskContext {
            index,
            count,
            ..TaskContext::local()
        }
    }

    /// Blocks `datasets`' objects (one per dataset) and returns (skipped tables, kept tables).
    fn outcome(
        verdict: &Completeness,
        datasets: &[&str],
        table: &str,
    ) -> (Vec<SkippedTable>, Vec<String>, bool) {
        let t = template(table);
        let objects: Vec<ObjectVars> = datasets.iter().map(|d| vars(d)).collect();
        let blocked = verdict.block(objects.iter(), &t);
        let mut mine: Vec<TableRef> = objects
            .iter()
            .map(|v| t.render(v).unwrap())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let skipped = blocked.take(&mut mine, |d| d, &task(0, 1), ShardStrategy::Hash);
        let kept = mine.iter().map(ToString::to_string).collect();
        (skipped.tables, kept, skipped.nothing_loadable)
    }

    #[test]
    fn all_manifests_present_and_nothing_failed_is_complete() {
        let verdict = Completeness::judge(
            2,
            &[
                fact(0, &[("a", 2), ("b", 1)], &[]),
                fact(1, &[("c", 3)], &[]),
            ],
        );
        assert!(verdict.is_complete(), "{verdict:?}");
        let (skipped, kept, none) = outcome(&verdict, &["a", "b", "c"], "p.raw.{dataset}");
        assert!(skipped.is_empty());
        assert_eq!(kept, ["p.raw.a", "p.raw.b", "p.raw.c"]);
        assert!(!none);
    }

    #[test]
    fn a_failed_item_blocks_its_dataset_only() {
        // Task 1's item of dataset c failed; a and b (task 0) are whole.
        let verdict = Completeness::judge(
            2,
            &[
                fact(0, &[("a", 2), ("b", 1)], &[]),
                fact(1, &[("c", 3)], &[("c", "c/page/000002")]),
            ],
        );
        let (skipped, kept, none) = outcome(&verdict, &["a", "b", "c"], "p.raw.{dataset}");
        assert_eq!(kept, ["p.raw.a", "p.raw.b"]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].table, "p.raw.c");
        assert_eq!(
            skipped[0].reasons,
            [
                "dataset c: item c/page/000002 failed (gs://b/raw/_manifests/task-00001.json): \
              https://h/x: HTTP 404"
            ]
        );
        assert!(!none);
    }

    #[test]
    fn a_missing_manifest_blocks_only_the_datasets_it_held() {
        // Task 1 never wrote its manifest. It held all of c, so a and b are still whole.
        let verdict = Completeness::judge(2, &[fact(0, &[("a", 2), ("b", 1)], &[])]);
        let (skipped, kept, _) = outcome(&verdict, &["a", "b"], "p.raw.{dataset}");
        assert_eq!(kept, ["p.raw.a", "p.raw.b"]);
        // c has no object at all: reported by name from the template.
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].table, "p.raw.c");
        assert_eq!(
            skipped[0].reasons,
            [
                "dataset c: 3 of its 3 planned item(s) were in task manifest(s) never written \
              (task-00001.json)"
            ]
        );

        // Task 1 held one of a's two items: a is short, b whole, c absent.
        let verdict = Completeness::judge(
            3,
            &[
                fact(0, &[("a", 1), ("b", 1)], &[]),
                fact(2, &[("c", 3)], &[]),
            ],
        );
        let (skipped, kept, _) = outcome(&verdict, &["a", "b", "c"], "p.raw.{dataset}");
        assert_eq!(kept, ["p.raw.b", "p.raw.c"]);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].table, "p.raw.a");
        assert!(
            skipped[0].reasons[0].contains("1 of its 2 planned item(s)")
                && skipped[0].reasons[0].contains("task-00001.json"),
            "{skipped:?}"
        );
    }

    #[test]
    fn without_planned_items_a_missing_manifest_blocks_everything() {
        let mut old = fact(0, &[("a", 2), ("b", 1)], &[]);
        old.planned_items = None;
        let verdict = Completeness::judge(2, std::slice::from_ref(&old));
        let (skipped, kept, none) = outcome(&verdict, &["a", "b"], "p.raw.{dataset}");
        assert!(kept.is_empty(), "{kept:?}");
        assert!(none);
        let tables: Vec<&str> = skipped.iter().map(|s| s.table.as_str()).collect();
        assert_eq!(tables, ["p.raw.a", "p.raw.b"]);
        assert!(
            skipped[0].reasons[0].contains("task-00001.json")
                && skipped[0].reasons[0].contains("no planned_items"),
            "{skipped:?}"
        );
        // All of an older execution's manifests present: nothing to hold against it.
        let verdict = Completeness::judge(1, &[old]);
        assert!(verdict.is_complete(), "{verdict:?}");
    }

    #[test]
    fn a_template_without_dataset_is_blocked_by_any_incomplete_dataset() {
        let verdict = Completeness::judge(
            2,
            &[
                fact(0, &[("a", 2), ("b", 1)], &[]),
                fact(1, &[("c", 3)], &[("c", "c/x")]),
            ],
        );
        // One table for everything: c's missing rows would have gone into it.
        let (skipped, kept, none) = outcome(&verdict, &["a", "b", "c"], "p.raw.all");
        assert!(kept.is_empty());
        assert!(none);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].table, "p.raw.all");
        assert!(skipped[0].reasons[0].starts_with("dataset c: item c/x failed"));
        // With no object at all the literal table is still named.
        let (skipped, _, none) = outcome(&verdict, &[], "p.raw.all");
        assert!(none);
        assert_eq!(skipped[0].table, "p.raw.all");
    }

    #[test]
    fn disagreeing_plans_and_unexplained_incomplete_manifests_block_everything() {
        let mut other = fact(1, &[("c", 3)], &[]);
        other.planned_items = Some([("c".to_string(), 4)].into_iter().collect());
        let verdict = Completeness::judge(2, &[fact(0, &[("a", 2), ("b", 1)], &[]), other]);
        let (_, kept, none) = outcome(&verdict, &["a", "b", "c"], "p.raw.{dataset}");
        assert!(kept.is_empty() && none);

        let mut odd = fact(1, &[("c", 3)], &[]);
        odd.complete = false;
        let verdict = Completeness::judge(2, &[fact(0, &[("a", 2), ("b", 1)], &[]), odd]);
        let (skipped, kept, _) = outcome(&verdict, &["a", "b", "c"], "p.raw.{dataset}");
        assert!(kept.is_empty());
        assert!(
            skipped[0].reasons[0].contains("marked incomplete but records no failed item"),
            "{skipped:?}"
        );
    }

    #[test]
    fn orphans_are_dealt_to_one_task() {
        let verdict = Completeness::judge(2, &[fact(0, &[("a", 2), ("b", 1)], &[])]);
        let t = template("p.raw.{dataset}");
        let reported: usize = (0..3)
            .map(|index| {
                let blocked = verdict.block(std::iter::empty(), &t);
                let mut mine: Vec<TableRef> = Vec::new();
                blocked
                    .take(&mut mine, |d| d, &task(index, 3), ShardStrategy::Hash)
                    .tables
                    .len()
            })
            .sum();
        assert_eq!(reported, 1);
    }
}
