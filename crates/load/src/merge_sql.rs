//! `--write merge`, the pure half: which columns key and order a merge (checked against the
//! schema), and the SQL BigQuery runs for it. `execute/merge.rs` makes the calls.
//!
//! Every statement here was run on bqemulator 1.4 and is GoogleSQL as BigQuery documents it.
//! Where the two differ, the form both take was chosen:
//! - dedupe inside the batch with `ROW_NUMBER() OVER (PARTITION BY keys ORDER BY ...)` in a
//!   subquery (not `QUALIFY`, not `SELECT DISTINCT`, which BigQuery refuses on ARRAY/STRUCT
//!   columns); ties are broken by `TO_JSON_STRING` of the whole row, so equal keys with equal
//!   order values pick the same row on every run;
//! - one `ALTER TABLE ... ADD COLUMN IF NOT EXISTS` per new column: the emulator runs only the
//!   first clause of a multi-clause `ALTER` (silently), and its `tables.patch` changes the
//!   metadata but not the data.

use serde::Serialize;

use crate::errors::LoadError;
use crate::schema::{Field, Mode};

/// What a merge keys and orders on; part of the load's identity (`LoadSpec::merge`), so a
/// merge and a truncate of the same objects get different ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct MergeSpec {
    /// The key columns, spelled as in the schema when it is known.
    pub(crate) keys: Vec<String>,
    /// The column whose greatest value wins among rows of one key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) order_by: Option<String>,
}

/// Types `=` (the MERGE's `ON`) or `ORDER BY` cannot take, or that make no sense as a key.
fn comparable(field: &Field) -> bool {
    field.mode != Mode::Repeated
        && !matches!(
            field.field_type.as_str(),
            "RECORD" | "STRUCT" | "GEOGRAPHY" | "JSON"
        )
}

/// Checks `spec` against the schema of the rows being merged and spells the columns as the
/// schema does. A key that is missing or not comparable is a usage error (exit 2); so is an
/// `--order-by` column. An order column that came from the manifests (`from_flag == false`)
/// and is not in the data is dropped with a warning: the merge then requires equal keys to
/// carry equal rows, which is safe.
pub(crate) fn resolve(
    spec: &MergeSpec,
    order_from_flag: bool,
    fields: &[Field],
    table: &str,
) -> Result<MergeSpec, LoadError> {
    let find = |name: &str| fields.iter().find(|f| f.name.eq_ignore_ascii_case(name));
    let columns = || {
        fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut keys = Vec::with_capacity(spec.keys.len());
    for key in &spec.keys {
        let Some(field) = find(key) else {
            return Err(LoadError::MergeColumn {
                table: table.to_string(),
                reason: format!(
                    "--key column `{key}` is not in the data (columns: {})",
                    columns()
                ),
            });
        };
        if !comparable(field) {
            return Err(LoadError::MergeColumn {
                table: table.to_string(),
                reason: format!(
                    "--key column `{}` is {}; a key must be a scalar that `=` can compare",
                    field.name,
                    field.describe_type()
                ),
            });
        }
        keys.push(field.name.clone());
    }
    let order_by = match &spec.order_by {
        None => None,
        Some(order) => match find(order) {
            Some(field) if comparable(field) => Some(field.name.clone()),
            Some(field) => {
                return Err(LoadError::MergeColumn {
                    table: table.to_string(),
                    reason: format!(
                        "order column `{}` is {}; it must be a scalar that ORDER BY can sort",
                        field.name,
                        field.describe_type()
                    ),
                });
            }
            None if order_from_flag => {
                return Err(LoadError::MergeColumn {
                    table: table.to_string(),
                    reason: format!(
                        "--order-by column `{order}` is not in the data (columns: {})",
                        columns()
                    ),
                });
            }
            None => {
                tracing::warn!(
                    table,
                    column = %order,
                    "the manifests name cursor column `{order}`, which is not in the data of {table}; \
                     merging without an order column (rows with equal keys must be identical)"
                );
                None
            }
        },
    };
    Ok(MergeSpec { keys, order_by })
}

/// `` `name` ``: a quoted GoogleSQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

/// `` `project.dataset.table` ``.
pub(crate) fn table_path(project: &str, dataset: &str, table: &str) -> String {
    ident(&format!("{project}.{dataset}.{table}"))
}

/// The staged rows, one per key: the greatest order value wins, ties (and batches without an
/// order column, whose duplicates `duplicate_check` proved identical) broken by the row's JSON.
fn deduplicated_source(spec: &MergeSpec, staging: &str) -> String {
    let partition = spec
        .keys
        .iter()
        .map(|k| ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    let mut order = Vec::new();
    if let Some(column) = &spec.order_by {
        order.push(format!("{} DESC NULLS LAST", ident(column)));
    }
    order.push("TO_JSON_STRING(_sluice_staged) DESC".to_string());
    format!(
        "SELECT * EXCEPT (_sluice_row) FROM (\n    \
           SELECT *, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {}) AS _sluice_row\n    \
           FROM {staging} AS _sluice_staged\n  \
         )\n  WHERE _sluice_row = 1",
        order.join(", ")
    )
}

/// The one MERGE: update every non-key column of matched rows whose values changed, insert
/// the others. "Changed" leaves out `unchanged_by` (the time-partitioning column: a row that
/// is the same but for the day it was pulled keeps its partition, so a partition holds the
/// rows that changed that day). Rows of types `IS DISTINCT FROM` cannot compare (RECORD,
/// REPEATED, JSON, GEOGRAPHY) make every matched row an update, as before.
pub(crate) fn merge_statement(
    spec: &MergeSpec,
    target: &str,
    staging: &str,
    fields: &[Field],
    unchanged_by: Option<&str>,
) -> String {
    let columns: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
    let is_key = |c: &String| spec.keys.iter().any(|k| k.eq_ignore_ascii_case(c));
    let on = spec
        .keys
        .iter()
        .map(|k| format!("T.{0} = S.{0}", ident(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let updates: Vec<String> = columns
        .iter()
        .filter(|c| !is_key(c))
        .map(|c| format!("{0} = S.{0}", ident(c)))
        .collect();
    let compared: Vec<&Field> = fields
        .iter()
        .filter(|f| !is_key(&f.name))
        .filter(|f| unchanged_by.is_none_or(|p| !p.eq_ignore_ascii_case(&f.name)))
        .collect();
    let changed = (!compared.is_empty() && compared.iter().all(|f| comparable(f))).then(|| {
        compared
            .iter()
            .map(|f| format!("T.{0} IS DISTINCT FROM S.{0}", ident(&f.name)))
            .collect::<Vec<_>>()
            .join(" OR ")
    });
    let names: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    let values: Vec<String> = columns.iter().map(|c| format!("S.{}", ident(c))).collect();
    let mut sql = format!(
        "MERGE {target} AS T\nUSING (\n  {}\n) AS S\nON {on}\n",
        deduplicated_source(spec, staging)
    );
    // All columns are keys: a matched row is already what the batch holds.
    if !updates.is_empty() {
        sql.push_str(&format!(
            "WHEN MATCHED{} THEN UPDATE SET {}\n",
            changed.map(|c| format!(" AND ({c})")).unwrap_or_default(),
            updates.join(", ")
        ));
    }
    sql.push_str(&format!(
        "WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        names.join(", "),
        values.join(", ")
    ));
    sql
}

/// Staged rows whose key has a NULL: `ON T.k = S.k` never matches NULL, so every run would
/// insert them again. Returns one column, `n`.
pub(crate) fn null_key_check(spec: &MergeSpec, staging: &str) -> String {
    let any_null = spec
        .keys
        .iter()
        .map(|k| format!("{} IS NULL", ident(k)))
        .collect::<Vec<_>>()
        .join(" OR ");
    format!("SELECT COUNT(*) AS n FROM {staging} WHERE {any_null}")
}

/// Without an order column: the key columns of one key whose staged rows differ, if any.
/// Identical duplicates (the same row extracted twice) pass.
pub(crate) fn duplicate_check(spec: &MergeSpec, staging: &str) -> String {
    let keys = spec
        .keys
        .iter()
        .map(|k| ident(k))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT {keys} FROM {staging} AS _sluice_staged GROUP BY {keys} \
         HAVING COUNT(DISTINCT TO_JSON_STRING(_sluice_staged)) > 1 LIMIT 1"
    )
}

/// `region="eu", id="2"`: a key as [`duplicate_check`] returns it, for messages.
pub(crate) fn describe_key(keys: &[String], values: &[Option<String>]) -> String {
    keys.iter()
        .zip(values)
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v:?}"),
            None => format!("{k}=NULL"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The GoogleSQL type of `field` for `ALTER TABLE ... ADD COLUMN`.
pub(crate) fn ddl_type(field: &Field) -> String {
    let scalar = if field.fields.is_empty() {
        match field.field_type.as_str() {
            "INTEGER" => "INT64".to_string(),
            "FLOAT" => "FLOAT64".to_string(),
            "BOOLEAN" => "BOOL".to_string(),
            "RECORD" => "STRUCT<>".to_string(),
            other => other.to_string(),
        }
    } else {
        let inner: Vec<String> = field
            .fields
            .iter()
            .map(|f| format!("{} {}", ident(&f.name), ddl_type(f)))
            .collect();
        format!("STRUCT<{}>", inner.join(", "))
    };
    match field.mode {
        Mode::Repeated => format!("ARRAY<{scalar}>"),
        _ => scalar,
    }
}

/// `ALTER TABLE target ADD COLUMN IF NOT EXISTS name TYPE`: BigQuery adds it NULLABLE (or
/// REPEATED), as a load's ALLOW_FIELD_ADDITION would.
pub(crate) fn add_column(target: &str, field: &Field) -> String {
    format!(
        "ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {} {}",
        ident(&field.name),
        ddl_type(field)
    )
}

/// `ALTER TABLE target ALTER COLUMN name DROP NOT NULL` (ALLOW_FIELD_RELAXATION).
pub(crate) fn relax_column(target: &str, name: &str) -> String {
    format!(
        "ALTER TABLE {target} ALTER COLUMN {} DROP NOT NULL",
        ident(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> Vec<Field> {
        let mut tags = Field::new("tags", "STRING", Mode::Repeated);
        tags.description = None;
        vec![
            Field::new("ID", "INTEGER", Mode::Required),
            Field::new("region", "STRING", Mode::Nullable),
            Field::new("updated", "TIMESTAMP", Mode::Nullable),
            tags,
        ]
    }

    fn spec(keys: &[&str], order: Option<&str>) -> MergeSpec {
        MergeSpec {
            keys: keys.iter().map(|k| k.to_string()).collect(),
            order_by: order.map(str::to_string),
        }
    }

    #[test]
    fn resolve_spells_columns_as_the_schema_and_refuses_missing_ones() {
        let r = resolve(&spec(&["id"], Some("UPDATED")), true, &fields(), "p.d.t").unwrap();
        assert_eq!(r, spec(&["ID"], Some("updated")));
        let err = resolve(&spec(&["id", "nope"], None), true, &fields(), "p.d.t").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("p.d.t") && text.contains("`nope` is not in the data"),
            "{text}"
        );
        assert_eq!(
            sluice_runtime::ExitStatus::exit_code(&err),
            sluice_runtime::ExitCode::Usage
        );
        let err = resolve(&spec(&["tags"], None), true, &fields(), "p.d.t").unwrap_err();
        assert!(err.to_string().contains("REPEATED STRING"), "{err}");
        let err = resolve(&spec(&["id"], Some("gone")), true, &fields(), "t").unwrap_err();
        assert!(
            err.to_string().contains("--order-by column `gone`"),
            "{err}"
        );
        // A cursor column from the manifests that the data lacks: no order column.
        let r = resolve(&spec(&["id"], Some("gone")), false, &fields(), "t").unwrap();
        assert_eq!(r.order_by, None);
    }

    fn scalar_fields(names: &[&str]) -> Vec<Field> {
        names
            .iter()
            .map(|n| Field::new(*n, "STRING", Mode::Nullable))
            .collect()
    }

    #[test]
    fn merge_updates_changed_rows_and_inserts_all_columns() {
        let sql = merge_statement(
            &spec(&["ID"], Some("updated")),
            "`p.d.t`",
            "`p.d._sluice_stage_t_x`",
            &fields()[..3],
            None,
        );
        assert!(sql.starts_with("MERGE `p.d.t` AS T\nUSING ("), "{sql}");
        assert!(
            sql.contains("PARTITION BY `ID` ORDER BY `updated` DESC NULLS LAST, TO_JSON_STRING(_sluice_staged) DESC"),
            "{sql}"
        );
        assert!(sql.contains("ON T.`ID` = S.`ID`\n"), "{sql}");
        assert!(
            sql.contains(
                "WHEN MATCHED AND (T.`region` IS DISTINCT FROM S.`region` OR T.`updated` IS DISTINCT FROM S.`updated`) \
                 THEN UPDATE SET `region` = S.`region`, `updated` = S.`updated`\n"
            ),
            "{sql}"
        );
        assert!(
            sql.ends_with(
                "WHEN NOT MATCHED THEN INSERT (`ID`, `region`, `updated`) VALUES (S.`ID`, S.`region`, S.`updated`)"
            ),
            "{sql}"
        );
        // Only keys: nothing to update.
        let sql = merge_statement(
            &spec(&["a", "b"], None),
            "`t`",
            "`s`",
            &scalar_fields(&["a", "b"]),
            None,
        );
        assert!(!sql.contains("WHEN MATCHED"), "{sql}");
        assert!(sql.contains("ON T.`a` = S.`a` AND T.`b` = S.`b`"), "{sql}");
        assert!(
            sql.contains("ORDER BY TO_JSON_STRING(_sluice_staged) DESC"),
            "{sql}"
        );
    }

    #[test]
    fn the_partition_column_alone_is_no_change_and_arrays_update_always() {
        let sql = merge_statement(
            &spec(&["k"], None),
            "`t`",
            "`s`",
            &scalar_fields(&["k", "v", "dt"]),
            Some("DT"),
        );
        assert!(
            sql.contains(
                "WHEN MATCHED AND (T.`v` IS DISTINCT FROM S.`v`) THEN UPDATE SET `v` = S.`v`, `dt` = S.`dt`\n"
            ),
            "{sql}"
        );
        // A REPEATED column cannot be compared: every matched row is updated.
        let sql = merge_statement(&spec(&["ID"], None), "`t`", "`s`", &fields(), None);
        assert!(sql.contains("WHEN MATCHED THEN UPDATE SET"), "{sql}");
    }

    #[test]
    fn identifiers_are_quoted_and_escaped() {
        assert_eq!(ident("a`b"), "`a\\`b`");
        assert_eq!(table_path("example.com:p", "d", "t"), "`example.com:p.d.t`");
        let check = duplicate_check(&spec(&["a", "b"], None), "`s`");
        assert!(
            check.starts_with("SELECT `a`, `b` FROM `s` AS _sluice_staged GROUP BY `a`, `b`"),
            "{check}"
        );
        assert_eq!(
            describe_key(
                &["a".to_string(), "b".to_string()],
                &[Some("eu".into()), None]
            ),
            r#"a="eu", b=NULL"#
        );
        assert_eq!(
            null_key_check(&spec(&["a", "b"], None), "`s`"),
            "SELECT COUNT(*) AS n FROM `s` WHERE `a` IS NULL OR `b` IS NULL"
        );
    }

    #[test]
    fn ddl_types_are_googlesql_names() {
        let mut rec = Field::new("r", "RECORD", Mode::Nullable);
        rec.fields = vec![
            Field::new("a", "INTEGER", Mode::Nullable),
            Field::new("b", "FLOAT", Mode::Repeated),
        ];
        assert_eq!(ddl_type(&rec), "STRUCT<`a` INT64, `b` ARRAY<FLOAT64>>");
        assert_eq!(
            ddl_type(&Field::new("x", "BOOLEAN", Mode::Repeated)),
            "ARRAY<BOOL>"
        );
        assert_eq!(
            add_column("`p.d.t`", &Field::new("n", "NUMERIC", Mode::Nullable)),
            "ALTER TABLE `p.d.t` ADD COLUMN IF NOT EXISTS `n` NUMERIC"
        );
        assert_eq!(
            relax_column("`t`", "id"),
            "ALTER TABLE `t` ALTER COLUMN `id` DROP NOT NULL"
        );
    }
}
