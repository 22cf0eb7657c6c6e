//! Planning from what extract recorded instead of from the objects themselves.
//!
//! An extract task manifest lists, for every Parquet object it wrote, the columns with their
//! types and the row count. The object's identity (bucket, key, generation) is checked against
//! the bucket before anything loads (`prepare.rs`), so a listed generation pins exactly the bytes
//! extract described: reading the footer again would only repeat what the manifest says, at one
//! or two ranged GETs per object. Objects without a usable record (a plain object list, an
//! older manifest, a type this mapping does not know) fall back to the footer.

use sluice_manifest::ColumnRecord;

use crate::schema::{self, Field, Mode, ParquetSchema};

/// What extract recorded about one Parquet object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub(crate) columns: Vec<ColumnRecord>,
    pub(crate) rows: u64,
}

impl Recorded {
    /// The record of a manifest entry, when it has both columns and rows.
    pub(crate) fn of(columns: Option<Vec<ColumnRecord>>, rows: Option<u64>) -> Option<Recorded> {
        Some(Recorded {
            columns: columns.filter(|c| !c.is_empty())?,
            rows: rows?,
        })
    }

    /// The BigQuery schema a footer read of the object would give, or `None` when a column's
    /// type is not one extract writes (then the footer decides).
    pub(crate) fn schema(&self) -> Option<ParquetSchema> {
        let fields = self
            .columns
            .iter()
            .map(|c| {
                Some(Field::new(
                    &c.name,
                    bigquery_type(&c.column_type)?,
                    Mode::Nullable,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        let parsed = ParquetSchema {
            fields,
            decimal_targets: Default::default(),
            list_inference: false,
            enum_as_string: false,
        };
        schema::validate_names(&parsed.fields, "").ok()?;
        Some(parsed)
    }
}

/// Extract's column types (every column nullable, `convert/columns.rs`) as BigQuery maps their
/// Parquet form: Utf8 -> STRING, Int64 -> INTEGER, Float64 -> FLOAT, Boolean -> BOOLEAN,
/// Date32 -> DATE, Timestamp(us, UTC) -> TIMESTAMP.
fn bigquery_type(extract_type: &str) -> Option<&'static str> {
    Some(match extract_type {
        "STRING" => "STRING",
        "INT64" => "INTEGER",
        "FLOAT64" => "FLOAT",
        "BOOL" => "BOOLEAN",
        "DATE" => "DATE",
        "TIMESTAMP" => "TIMESTAMP",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, column_type: &str) -> ColumnRecord {
        ColumnRecord {
            name: name.into(),
            column_type: column_type.into(),
        }
    }

    #[test]
    fn extract_types_map_to_bigquery_types() {
        let recorded = Recorded::of(
            Some(vec![
                column("s", "STRING"),
                column("i", "INT64"),
                column("f", "FLOAT64"),
                column("b", "BOOL"),
                column("d", "DATE"),
                column("t", "TIMESTAMP"),
            ]),
            Some(7),
        )
        .unwrap();
        let schema = recorded.schema().unwrap();
        let types: Vec<&str> = schema
            .fields
            .iter()
            .map(|f| f.field_type.as_str())
            .collect();
        assert_eq!(
            types,
            ["STRING", "INTEGER", "FLOAT", "BOOLEAN", "DATE", "TIMESTAMP"]
        );
        assert!(schema.fields.iter().all(|f| f.mode == Mode::Nullable));
    }

    #[test]
    fn anything_unknown_falls_back_to_the_footer() {
        assert_eq!(Recorded::of(None, Some(1)), None);
        assert_eq!(Recorded::of(Some(vec![column("a", "STRING")]), None), None);
        assert_eq!(Recorded::of(Some(vec![]), Some(1)), None);
        let odd = Recorded::of(Some(vec![column("a", "DECIMAL(10,2)")]), Some(1)).unwrap();
        assert_eq!(odd.schema(), None);
        let bad_name = Recorded::of(Some(vec![column("_TABLE_x", "STRING")]), Some(1)).unwrap();
        assert_eq!(
            bad_name.schema(),
            None,
            "a name BigQuery refuses is the footer path's error to report"
        );
    }
}
