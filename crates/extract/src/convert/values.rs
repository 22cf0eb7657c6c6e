//! What a written Parquet object's footer says about each column's values, recorded in the
//! manifest's `ColumnRecord.values` so `load` can join one dataset's drifted inferences (a
//! column with no value typed STRING here, INT64 elsewhere) without reading footers. The same
//! reading as `load`'s from a footer (`crates/load/src/widen.rs`): every row group's
//! `null_count` equal to its rows means no value; integer columns carry their range.

use parquet::basic::LogicalType;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use sluice_manifest::ColumnValues;

/// One entry per column of the (flat) schema, in order.
pub(crate) fn column_values(metadata: &ParquetMetaData) -> Vec<ColumnValues> {
    let groups = metadata.row_groups();
    let descr = metadata.file_metadata().schema_descr();
    (0..descr.num_columns())
        .map(|i| {
            // TIMESTAMP is an INT64 too; only plain integers get a range.
            let integer = matches!(
                descr.column(i).logical_type_ref(),
                None | Some(LogicalType::Integer(_))
            );
            let mut none = true;
            let mut range: Option<(i64, i64)> = Some((i64::MAX, i64::MIN));
            for group in groups {
                let rows = group.num_rows().max(0) as u64;
                let stats = group.column(i).statistics();
                if stats.and_then(Statistics::null_count_opt) == Some(rows) {
                    continue;
                }
                none = false;
                let own = match stats {
                    Some(Statistics::Int64(s)) if integer => {
                        s.min_opt().copied().zip(s.max_opt().copied())
                    }
                    _ => None,
                };
                range = range.zip(own).map(|((a, b), (c, d))| (a.min(c), b.max(d)));
            }
            ColumnValues {
                none,
                int_range: range.filter(|(lo, hi)| !none && lo <= hi),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;

    use super::*;

    #[test]
    fn records_columns_without_values_and_integer_ranges() {
        let batch = RecordBatch::try_from_iter([
            (
                "n",
                Arc::new(Int64Array::from(vec![Some(-3), None, Some(9)])) as ArrayRef,
            ),
            (
                "at",
                Arc::new(TimestampMicrosecondArray::from(vec![1, 2, 3]).with_timezone("UTC"))
                    as ArrayRef,
            ),
            (
                "empty",
                Arc::new(StringArray::from(vec![None::<&str>; 3])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), None, None])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut writer = ArrowWriter::try_new(Vec::new(), batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        let metadata = writer.finish().unwrap();
        let got = column_values(&metadata);
        assert_eq!(
            got,
            [
                ColumnValues {
                    none: false,
                    int_range: Some((-3, 9))
                },
                ColumnValues {
                    none: false,
                    int_range: None
                },
                ColumnValues {
                    none: true,
                    int_range: None
                },
                ColumnValues {
                    none: false,
                    int_range: None
                },
            ]
        );
    }
}
