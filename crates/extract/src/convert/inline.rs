//! CSV -> Parquet for a small input, on the calling thread alone.
//!
//! When the inference sample holds the whole input and it is small
//! (`super::parquet::INLINE_MAX_BYTES`), the input is already in memory and converting it takes
//! less CPU than setting up the threaded pipeline of [`super::parquet`] (an encoder thread, a
//! typing thread, their channels and record buffers). This path reads the same batches
//! (`batch_rows` records, the header in the first), types them with the same
//! [`BatchBuilder`], handles them with the same [`Handler`] and writes them with the same
//! `ArrowWriter` properties, in the same order: the output is byte-identical to the threaded
//! path's (tested in `super::parquet`).

use std::panic::AssertUnwindSafe;

use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use super::batches::{Handler, Output, encode_error, finish_writer};
use super::columns::BatchBuilder;
use super::cursor::CursorFilter;
use super::parquet::{Converted, CsvToParquet};
use super::read_error;
use super::records::{RecordReader, Records};
use crate::error::{ExtractError, Result};
use crate::sink::ObjectSink;

/// The whole input, as the converter read it for inference.
pub(super) struct Inline<'a> {
    /// Every byte of the input after the BOM.
    pub sample: &'a [u8],
    /// Length of the BOM dropped from `sample` (offsets in messages count it).
    pub bom: usize,
    /// A record buffer to reuse (the inference sample's).
    pub records: Records,
}

pub(super) fn convert(
    input: Inline<'_>,
    job: &CsvToParquet<'_>,
    builder: &BatchBuilder,
    sink: ObjectSink,
    props: WriterProperties,
    open_rejects: &mut dyn FnMut() -> ObjectSink,
    filter: Option<CursorFilter>,
) -> Result<Converted> {
    let src = job.source_name;
    let Inline {
        sample,
        bom,
        mut records,
    } = input;
    // On an error from here on, dropping the writer drops the sink, which aborts the upload.
    let mut writer = ArrowWriter::try_new(sink, builder.schema().clone(), Some(props))
        .map_err(|e| encode_error(e, src))?;
    let mut handler = Handler {
        builder,
        job,
        output: Output::Inline(&mut writer),
        open_rejects,
        rows: 0,
        rejected: 0,
        rejects: None,
        filter,
    };
    let mut reader = RecordReader::new(sample, job.dialect).starting_at(bom as u64);
    let mut header_pending = job.has_header;
    loop {
        let n = reader
            .read_batch(&mut records, job.batch_rows.max(1))
            .map_err(|e| read_error(e, src))?;
        if n == 0 {
            break;
        }
        let skip = usize::from(header_pending);
        header_pending = false;
        if records.len() <= skip {
            continue;
        }
        // A panic while typing fails the item, as it does on a typing thread.
        let built = std::panic::catch_unwind(AssertUnwindSafe(|| builder.build(&records, skip)))
            .map_err(|_| ExtractError::Internal("CSV typing panicked".into()))?;
        handler.handle(built, &records, skip)?;
    }
    if reader.blank_lines() > 0 {
        tracing::info!(source = %src, "{src}: skipped {} empty lines", reader.blank_lines());
    }
    let Handler {
        rows,
        rejected,
        rejects,
        filter,
        ..
    } = handler;
    // The rejects object first: once the data object is visible, its rejects are too.
    let rejects = match rejects {
        Some(mut r) => Some(r.commit()?),
        None => None,
    };
    let (object, row_groups, values) = finish_writer(writer, src)?;
    let cursor = match (filter, job.cursor) {
        (Some(filter), Some(spec)) => Some(filter.finish(spec, src)),
        _ => None,
    };
    Ok(Converted {
        object: Some(object),
        rows,
        rejected,
        rejects,
        columns: builder.columns().to_vec(),
        row_groups,
        values,
        cursor,
    })
}
