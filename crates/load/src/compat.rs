//! The files' schema against an existing table's, before any job is created.
//!
//! Sluice always sends an explicit schema (Parquet: from the footers). For a load that keeps the
//! table's schema (append, WRITE_EMPTY, truncate of a `$` partition), BigQuery compares the sent
//! schema with the table's and refuses "Provided Schema does not match Table" on a type change,
//! a stricter mode, a missing column or an unannounced new one: no implicit widening applies to
//! a supplied schema. The BigQuery emulator refuses none of it (it loads mismatched types), so
//! Sluice checks first and fails naming column, file type and table type. What passes:
//!
//! | files vs table | outcome |
//! |---|---|
//! | same type and mode | loads |
//! | file REQUIRED, table NULLABLE | loads: the column is sent NULLABLE (the table's mode) |
//! | file NULLABLE, table REQUIRED | only with `--schema-update allow-field-relaxation` (the table column becomes NULLABLE) |
//! | column only in the files | only with `--schema-update allow-field-addition`, added NULLABLE |
//! | column only in the table | refused (BigQuery: "Field is missing in new schema") |
//! | other type (INTEGER vs FLOAT, STRING vs INTEGER, ...) or REPEATED vs not | refused |
//!
//! Names compare case-insensitively, as BigQuery's do; RECORD fields are checked recursively.

use crate::config::SchemaUpdate;
use crate::schema::{Field, Mode, canonical_type};

/// Where the files and the table disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Incompatibility {
    /// `a` or `rec.a`.
    pub(crate) column: String,
    /// `INTEGER`, `REPEATED STRING`, or `absent`.
    pub(crate) file_type: String,
    pub(crate) table_type: String,
    /// What would make it load, when something would.
    pub(crate) hint: String,
}

/// A table column as `tables.get` returns it, in Sluice's terms.
pub(crate) fn table_field(f: &google_cloud_bigquery_v2::model::TableFieldSchema) -> Field {
    let mode = match f.mode.to_ascii_uppercase().as_str() {
        "REQUIRED" => Mode::Required,
        "REPEATED" => Mode::Repeated,
        _ => Mode::Nullable,
    };
    let field_type = canonical_type(&f.r#type)
        .map(str::to_string)
        .unwrap_or_else(|| f.r#type.to_ascii_uppercase());
    let mut field = Field::new(f.name.clone(), &field_type, mode);
    field.fields = f.fields.iter().map(table_field).collect();
    field
}

/// Checks `sent` (the job's schema) against `table` and adapts `sent` where that is lossless
/// (REQUIRED -> NULLABLE to match the table, added columns NULLABLE). Returns whether `sent`
/// changed.
pub(crate) fn check(
    sent: &mut [Field],
    table: &[Field],
    update: SchemaUpdate,
) -> Result<bool, Incompatibility> {
    check_level(sent, table, update, "")
}

fn check_level(
    sent: &mut [Field],
    table: &[Field],
    update: SchemaUpdate,
    parent: &str,
) -> Result<bool, Incompatibility> {
    let path = |name: &str| {
        if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}.{name}")
        }
    };
    let mut changed = false;
    for t in table {
        let Some(s) = sent
            .iter_mut()
            .find(|s| s.name.eq_ignore_ascii_case(&t.name))
        else {
            return Err(Incompatibility {
                column: path(&t.name),
                file_type: "absent".into(),
                table_type: t.describe_type(),
                hint: "BigQuery does not drop columns on load; add the column to the files or \
                       drop it from the table"
                    .into(),
            });
        };
        let column = path(&t.name);
        let mismatch = |hint: &str, s: &Field| Incompatibility {
            column: column.clone(),
            file_type: s.describe_type(),
            table_type: t.describe_type(),
            hint: hint.to_string(),
        };
        let same_type = canonical_type(&s.field_type).unwrap_or(&s.field_type)
            == canonical_type(&t.field_type).unwrap_or(&t.field_type);
        let repeated_differs = (s.mode == Mode::Repeated) != (t.mode == Mode::Repeated);
        if !same_type || repeated_differs {
            return Err(mismatch(
                "BigQuery cannot change a column's type on load; convert the files, or load \
                 them into another table",
                s,
            ));
        }
        match (s.mode, t.mode) {
            (Mode::Required, Mode::Nullable) => {
                s.mode = Mode::Nullable;
                changed = true;
            }
            (Mode::Nullable, Mode::Required) if !update.allow_field_relaxation => {
                return Err(mismatch(
                    "the files may hold NULLs the table's REQUIRED column cannot take; pass \
                     --schema-update allow-field-relaxation to make it NULLABLE",
                    s,
                ));
            }
            _ => {}
        }
        if !t.fields.is_empty() || !s.fields.is_empty() {
            changed |= check_level(&mut s.fields, &t.fields, update, &column)?;
        }
    }
    for s in sent.iter_mut() {
        if table.iter().any(|t| t.name.eq_ignore_ascii_case(&s.name)) {
            continue;
        }
        if !update.allow_field_addition {
            return Err(Incompatibility {
                column: path(&s.name),
                file_type: s.describe_type(),
                table_type: "absent".into(),
                hint: "pass --schema-update allow-field-addition to add it".into(),
            });
        }
        // BigQuery adds only NULLABLE (or REPEATED) columns to an existing table.
        if s.mode == Mode::Required {
            s.mode = Mode::Nullable;
            changed = true;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, ty: &str, mode: Mode) -> Field {
        Field::new(name, ty, mode)
    }

    #[test]
    fn same_schema_passes_and_required_is_sent_nullable_for_a_nullable_table() {
        let table = [
            f("id", "INTEGER", Mode::Nullable),
            f("name", "STRING", Mode::Nullable),
        ];
        let mut sent = vec![
            f("ID", "INTEGER", Mode::Required),
            f("name", "STRING", Mode::Nullable),
        ];
        assert_eq!(check(&mut sent, &table, SchemaUpdate::default()), Ok(true));
        assert_eq!(sent[0].mode, Mode::Nullable);
        let mut same = table.to_vec();
        assert_eq!(check(&mut same, &table, SchemaUpdate::default()), Ok(false));
    }

    #[test]
    fn type_changes_are_refused_naming_both_types() {
        let table = [f("zip", "STRING", Mode::Nullable)];
        let mut sent = vec![f("zip", "INTEGER", Mode::Nullable)];
        let err = check(&mut sent, &table, SchemaUpdate::default()).unwrap_err();
        assert_eq!(
            (
                err.column.as_str(),
                err.file_type.as_str(),
                err.table_type.as_str()
            ),
            ("zip", "INTEGER", "STRING")
        );
        // No widening for a supplied schema either.
        let table = [f("x", "FLOAT", Mode::Nullable)];
        let mut sent = vec![f("x", "INTEGER", Mode::Nullable)];
        assert!(check(&mut sent, &table, SchemaUpdate::default()).is_err());
        let table = [f("x", "STRING", Mode::Repeated)];
        let mut sent = vec![f("x", "STRING", Mode::Nullable)];
        assert!(check(&mut sent, &table, SchemaUpdate::default()).is_err());
    }

    #[test]
    fn relaxation_and_addition_need_their_options() {
        let table = [f("a", "INTEGER", Mode::Required)];
        let mut sent = vec![f("a", "INTEGER", Mode::Nullable)];
        let err = check(&mut sent, &table, SchemaUpdate::default()).unwrap_err();
        assert!(err.hint.contains("allow-field-relaxation"), "{err:?}");
        let relax = SchemaUpdate {
            allow_field_relaxation: true,
            ..SchemaUpdate::default()
        };
        assert_eq!(check(&mut sent, &table, relax), Ok(false));

        let table = [f("a", "INTEGER", Mode::Nullable)];
        let mut sent = vec![
            f("a", "INTEGER", Mode::Nullable),
            f("b", "STRING", Mode::Required),
        ];
        let err = check(&mut sent, &table, SchemaUpdate::default()).unwrap_err();
        assert_eq!(
            (err.column.as_str(), err.table_type.as_str()),
            ("b", "absent")
        );
        let add = SchemaUpdate {
            allow_field_addition: true,
            ..SchemaUpdate::default()
        };
        assert_eq!(check(&mut sent, &table, add), Ok(true));
        assert_eq!(sent[1].mode, Mode::Nullable);

        let table = [
            f("a", "INTEGER", Mode::Nullable),
            f("b", "STRING", Mode::Nullable),
        ];
        let mut sent = vec![f("a", "INTEGER", Mode::Nullable)];
        let err = check(&mut sent, &table, add).unwrap_err();
        assert_eq!(
            (err.column.as_str(), err.file_type.as_str()),
            ("b", "absent")
        );
    }

    #[test]
    fn records_are_checked_inside() {
        let mut t = f("r", "RECORD", Mode::Nullable);
        t.fields = vec![f("x", "STRING", Mode::Nullable)];
        let mut s = f("r", "RECORD", Mode::Nullable);
        s.fields = vec![f("x", "INTEGER", Mode::Nullable)];
        let err = check(&mut [s], &[t], SchemaUpdate::default()).unwrap_err();
        assert_eq!(err.column, "r.x");
    }
}
