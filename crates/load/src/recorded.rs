//! Planning from what extract recorded instead of from the objects themselves.
//!
//! An extract task manifest lists, for every Parquet object it wrote, the columns with their
//! types and the row count. The object's identity (bucket, key, generation) is checked against
//! the bucket before anything loads (`prepare.rs`), so a listed generation pins exactly the bytes
//! extract described: reading the footer again would only repeat what the manifest says, at one
//! or two ranged GETs per object. Objects without a usable record (a plain object list, an
//! older manifest, a type this mapping does not know) fall back to the footer.

use crate::inputs::Recorded;
use crate::schema;
use crate::widen::{self, ObjectSchema};

impl Recorded {
    /// The BigQuery schema and column facts a footer read of the object would give, or `None`
    /// when the record cannot stand in for the footer: a column without its `values` (a manifest
    /// from before they were recorded: the footer's statistics have them), a type extract does
    /// not write, a name BigQuery refuses (the footer path reports it with the file).
    pub(crate) fn schema(&self) -> Option<ObjectSchema> {
        if self.columns.iter().any(|c| c.values.is_none()) {
            return None;
        }
        if self
            .columns
            .iter()
            .any(|c| !EXTRACT_TYPES.contains(&c.column_type.as_str()))
        {
            return None;
        }
        let object = widen::object_schema_from_manifest(&self.columns)?;
        schema::validate_names(&object.schema.fields, "").ok()?;
        Some(object)
    }
}

/// The column types extract writes (`convert/columns.rs`, every column nullable): Utf8, Int64,
/// Float64, Boolean, Date32, Timestamp(us, UTC), which the footer mapping reads as STRING,
/// INTEGER, FLOAT, BOOLEAN, DATE, TIMESTAMP -- as `widen::object_schema_from_manifest` maps
/// these names.
const EXTRACT_TYPES: [&str; 6] = ["STRING", "INT64", "FLOAT64", "BOOL", "DATE", "TIMESTAMP"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Mode;
    use sluice_manifest::{ColumnRecord, ColumnValues};

    fn column(name: &str, column_type: &str) -> ColumnRecord {
        ColumnRecord {
            name: name.into(),
            column_type: column_type.into(),
            values: Some(ColumnValues {
                none: false,
                int_range: None,
            }),
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
        let schema = recorded.schema().unwrap().schema;
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
        let mut old = column("a", "STRING");
        old.values = None;
        let old = Recorded::of(Some(vec![old]), Some(1)).unwrap();
        assert_eq!(old.schema(), None, "no facts recorded: the footer has them");
        let bad_name = Recorded::of(Some(vec![column("_TABLE_x", "STRING")]), Some(1)).unwrap();
        assert_eq!(
            bad_name.schema(),
            None,
            "a name BigQuery refuses is the footer path's error to report"
        );
    }
}
