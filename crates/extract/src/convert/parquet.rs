//! CSV -> Parquet, streamed on two threads.
//!
//! The calling (blocking) thread reads CSV records, builds typed Arrow batches and deals with
//! bad rows; a second thread encodes and compresses Parquet and feeds the object sink, whose
//! upload task runs on the async runtime. The threads are joined by a channel of two batches,
//! so at most a couple of batches plus the open row group are in memory at any time.
//!
//! Why the synchronous `ArrowWriter` on its own thread rather than `AsyncArrowWriter` over an
//! async file writer: encoding is CPU work and would stall the async runtime's workers
//! (the uploads and downloads of every other item); on a thread of its own it also overlaps
//! with CSV parsing, which on two cores is what makes the conversion as fast as it is.
//!
//! Memory: Parquet keeps a row group's encoded pages until the group is closed, so row groups
//! are bounded in rows and in (estimated encoded) bytes, `ParquetOptions::row_group_bytes`.

use std::io::{BufRead, Cursor, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use serde_json::json;

use super::columns::{BatchBuilder, Column, NullMarkers, Problem};
use super::read_error;
use super::records::{Dialect, RecordReader, Records};
use super::schema::{SchemaOverride, apply_overrides, infer};
use crate::config::{BadRows, Compression, ParquetOptions};
use crate::error::{BadValue, ExtractError, Result};
use crate::sink::{Committed, ObjectSink};

/// Longest value quoted in an error message or reject line.
const MAX_VALUE_CHARS: usize = 200;

/// What the conversion needs besides the bytes.
pub struct CsvToParquet<'a> {
    /// The source (and member) as shown in messages: `https://h/a.zip!b.csv`.
    pub source_name: &'a str,
    pub dialect: Dialect,
    pub has_header: bool,
    pub null_values: &'a [String],
    pub infer_rows: usize,
    pub infer_bytes: usize,
    pub batch_rows: usize,
    pub soda_types: Option<&'a [(String, String)]>,
    pub schema_file: Option<&'a SchemaOverride>,
    pub parquet: &'a ParquetOptions,
    pub bad_rows: BadRows,
    pub max_bad_rows: Option<u64>,
    /// Written into the Parquet footer's key/value metadata.
    pub footer_metadata: Vec<(String, String)>,
    /// Rows converted so far (progress).
    pub rows_counter: &'a AtomicU64,
}

/// What one conversion produced.
#[derive(Debug)]
pub struct Converted {
    /// `None` when the input was completely empty (not even a header): nothing is written.
    pub object: Option<Committed>,
    pub rows: u64,
    pub rejected: u64,
    pub rejects: Option<Committed>,
    pub columns: Vec<Column>,
    pub row_groups: usize,
}

pub fn writer_properties(
    options: &ParquetOptions,
    footer: &[(String, String)],
) -> WriterProperties {
    let compression = match options.compression {
        Compression::Zstd(level) => {
            PqCompression::ZSTD(ZstdLevel::try_new(level).unwrap_or_default())
        }
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(options.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(options.row_group_bytes.max(1)))
        .set_created_by(format!(
            "sluice-extract {} (parquet-rs)",
            env!("CARGO_PKG_VERSION")
        ))
        .set_key_value_metadata(Some(
            footer
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect(),
        ))
        .build()
}

/// Reads the sample used for inference: up to `infer_rows` lines (plus the header) or
/// `infer_bytes`, whichever comes first. A leading UTF-8 byte order mark is dropped.
/// Returns the sample and whether it is the whole input.
fn read_sample(
    input: &mut dyn BufRead,
    rows: usize,
    max_bytes: usize,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut sample = Vec::new();
    let mut newlines = 0usize;
    let mut whole = false;
    while sample.len() < max_bytes && newlines <= rows {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            whole = true;
            break;
        }
        let take = buf.len().min(max_bytes - sample.len());
        newlines += memchr::memchr_iter(b'\n', &buf[..take]).count();
        sample.extend_from_slice(&buf[..take]);
        input.consume(take);
    }
    if sample.starts_with(b"\xef\xbb\xbf") {
        sample.drain(..3);
    }
    Ok((sample, whole))
}

enum Msg {
    Batch(RecordBatch),
    Finish,
}

/// Converts the CSV in `input` to Parquet in `sink`; `open_rejects` opens the rejects object
/// the first time a row is quarantined.
pub fn csv_to_parquet(
    input: &mut dyn BufRead,
    job: &CsvToParquet<'_>,
    sink: ObjectSink,
    open_rejects: &mut dyn FnMut() -> ObjectSink,
) -> Result<Converted> {
    let src = job.source_name;
    let (sample, whole) =
        read_sample(input, job.infer_rows, job.infer_bytes).map_err(|e| read_error(e, src))?;

    // How many complete records the sample holds. Unless it is the whole input, its last
    // record may be cut off and must not be counted.
    let complete = {
        let mut counter = RecordReader::new(&sample[..], job.dialect);
        let mut scratch = Records::default();
        let mut total = 0;
        loop {
            let n = if whole {
                counter.read_batch(&mut scratch, 4096)
            } else {
                counter.read_sample_batch(&mut scratch, 4096)
            }
            .map_err(|e| read_error(e, src))?;
            total += n;
            if n == 0 || counter.at_end() {
                break;
            }
        }
        total
    };
    if complete == 0 && sample.is_empty() {
        sink.abort();
        return Ok(Converted {
            object: None,
            rows: 0,
            rejected: 0,
            rejects: None,
            columns: Vec::new(),
            row_groups: 0,
        });
    }
    // Only the first `infer_rows` records are sampled, even when more were buffered.
    let sampled = complete.min(job.infer_rows + usize::from(job.has_header));
    let inferred = infer(
        &sample,
        sampled.max(1),
        job.dialect,
        job.has_header,
        job.null_values,
    )
    .map_err(|e| match e {
        ExtractError::Decode { detail, .. } => ExtractError::Decode {
            source_name: src.to_string(),
            detail,
        },
        other => other,
    })?;
    let columns = apply_overrides(inferred, job.soda_types, job.schema_file)?;
    let builder = BatchBuilder::new(columns.clone(), NullMarkers::new(job.null_values));
    let schema = builder.schema().clone();
    let props = writer_properties(job.parquet, &job.footer_metadata);

    let mut reader = RecordReader::new(Cursor::new(sample).chain(input), job.dialect);
    let (tx, rx) = mpsc::sync_channel::<Msg>(2);

    std::thread::scope(|scope| {
        let encoder = scope.spawn(move || encode(rx, sink, schema, props, src));
        let parsed = parse_loop(&mut reader, &builder, job, &tx, open_rejects);
        match parsed {
            Ok((rows, rejected, rejects)) => {
                // The rejects object first: once the data object is visible, its rejects are too.
                let rejects = match rejects {
                    Some(mut r) => Some(r.commit()?),
                    None => None,
                };
                if tx.send(Msg::Finish).is_err() {
                    // The encoder stopped early; its error is the one to report.
                }
                drop(tx);
                let (object, row_groups) = join(encoder)?;
                Ok(Converted {
                    object: Some(object),
                    rows,
                    rejected,
                    rejects,
                    columns,
                    row_groups,
                })
            }
            Err(e) => {
                drop(tx);
                // The encoder sees the channel close without `Finish` and aborts the upload.
                let encoder_result = join(encoder);
                match (e, encoder_result) {
                    // A send failed because the encoder failed: report the encoder's error.
                    (ExtractError::Internal(msg), Err(enc)) if msg == ENCODER_GONE => Err(enc),
                    (e, _) => Err(e),
                }
            }
        }
    })
}

const ENCODER_GONE: &str = "parquet encoder stopped";

fn join(
    handle: std::thread::ScopedJoinHandle<'_, Result<(Committed, usize)>>,
) -> Result<(Committed, usize)> {
    handle
        .join()
        .map_err(|_| ExtractError::Internal("parquet encoder thread panicked".into()))?
}

type Parsed = (u64, u64, Option<ObjectSink>);

fn parse_loop(
    reader: &mut RecordReader<impl BufRead>,
    builder: &BatchBuilder,
    job: &CsvToParquet<'_>,
    tx: &mpsc::SyncSender<Msg>,
    open_rejects: &mut dyn FnMut() -> ObjectSink,
) -> Result<Parsed> {
    let src = job.source_name;
    let mut records = Records::default();
    let mut rows = 0u64;
    let mut rejected = 0u64;
    let mut rejects: Option<ObjectSink> = None;
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
        let built = builder.build(&records, skip);
        if !built.problems.is_empty() {
            match job.bad_rows {
                BadRows::Fail => {
                    return Err(problem_error(
                        &built.problems[0],
                        &records,
                        skip,
                        builder,
                        src,
                    ));
                }
                BadRows::Quarantine => {
                    let sink = rejects.get_or_insert_with(&mut *open_rejects);
                    rejected += write_rejects(sink, &built.problems, &records, skip, builder, src)?;
                    if let Some(limit) = job.max_bad_rows
                        && rejected > limit
                    {
                        return Err(ExtractError::TooManyBadRows {
                            source_name: src.to_string(),
                            rejected,
                            limit,
                        });
                    }
                }
            }
        }
        let batch_rows = built.batch.num_rows() as u64;
        if batch_rows > 0 {
            tx.send(Msg::Batch(built.batch))
                .map_err(|_| ExtractError::Internal(ENCODER_GONE.into()))?;
        }
        rows += batch_rows;
        job.rows_counter.fetch_add(batch_rows, Ordering::Relaxed);
    }
    Ok((rows, rejected, rejects))
}

fn truncate(value: &str) -> String {
    if value.chars().count() <= MAX_VALUE_CHARS {
        value.to_string()
    } else {
        let cut: String = value.chars().take(MAX_VALUE_CHARS).collect();
        format!("{cut}...")
    }
}

/// The error `--bad-rows fail` reports for a problem.
fn problem_error(
    problem: &Problem,
    records: &Records,
    skip: usize,
    builder: &BatchBuilder,
    src: &str,
) -> ExtractError {
    let row = problem.row() + skip;
    let line = records.line(row);
    let columns = builder.columns();
    match *problem {
        Problem::BadValue { col, .. } => {
            let column = &columns[col];
            ExtractError::BadValue(Box::new(BadValue {
                source_name: src.to_string(),
                line,
                column: column.name.clone(),
                column_index: col + 1,
                value: truncate(&String::from_utf8_lossy(records.field(row, col))),
                expected: column.column_type.name().to_string(),
                hint: Some(format!(
                    "expected {}; fix the type with a schema file or use --bad-rows quarantine",
                    column.column_type.expected_form()
                )),
            }))
        }
        Problem::InvalidUtf8 { col, .. } => ExtractError::BadRecord {
            source_name: src.to_string(),
            line,
            detail: format!(
                "column {} ({}) is not valid UTF-8",
                col + 1,
                columns[col].name
            ),
        },
        Problem::FieldCount { found, .. } => ExtractError::BadRecord {
            source_name: src.to_string(),
            line,
            detail: format!(
                "expected {} fields (as in the header), found {found}",
                columns.len()
            ),
        },
    }
}

/// Writes one JSON line per bad row; returns the number of rows.
fn write_rejects(
    sink: &mut ObjectSink,
    problems: &[Problem],
    records: &Records,
    skip: usize,
    builder: &BatchBuilder,
    src: &str,
) -> Result<u64> {
    let columns = builder.columns();
    let mut count = 0;
    let mut i = 0;
    while i < problems.len() {
        let row = problems[i].row();
        let mut errors = Vec::new();
        while i < problems.len() && problems[i].row() == row {
            errors.push(match problems[i] {
                Problem::BadValue { col, .. } => json!({
                    "column": columns[col].name,
                    "column_index": col + 1,
                    "value": truncate(&String::from_utf8_lossy(records.field(row + skip, col))),
                    "expected": columns[col].column_type.name(),
                }),
                Problem::InvalidUtf8 { col, .. } => json!({
                    "column": columns[col].name,
                    "column_index": col + 1,
                    "error": "invalid UTF-8",
                }),
                Problem::FieldCount { found, .. } => json!({
                    "error": format!("expected {} fields, found {found}", columns.len()),
                }),
            });
            i += 1;
        }
        let line = json!({
            "source": src,
            "line": records.line(row + skip),
            "errors": errors,
            "fields": records.record_strings(row + skip),
        });
        let mut text = serde_json::to_vec(&line)
            .map_err(|e| ExtractError::Internal(format!("rejects JSON: {e}")))?;
        text.push(b'\n');
        sink.write_all_bytes(&text)?;
        count += 1;
    }
    Ok(count)
}

/// The encoder thread: Arrow batches in, Parquet bytes out to the sink.
fn encode(
    rx: mpsc::Receiver<Msg>,
    sink: ObjectSink,
    schema: arrow::datatypes::SchemaRef,
    props: WriterProperties,
    src: &str,
) -> Result<(Committed, usize)> {
    let encode_err = |e: parquet::errors::ParquetError| {
        // An I/O error inside Parquet's writer may be the sink's (upload) error.
        match e {
            parquet::errors::ParquetError::External(inner) => {
                match inner.downcast::<std::io::Error>() {
                    Ok(io) => ExtractError::from_io(*io, |io| ExtractError::Encode {
                        source_name: src.to_string(),
                        detail: io.to_string(),
                    }),
                    Err(other) => ExtractError::Encode {
                        source_name: src.to_string(),
                        detail: other.to_string(),
                    },
                }
            }
            other => ExtractError::Encode {
                source_name: src.to_string(),
                detail: other.to_string(),
            },
        }
    };
    let mut writer = ArrowWriter::try_new(sink, schema, Some(props)).map_err(encode_err)?;
    loop {
        match rx.recv() {
            Ok(Msg::Batch(batch)) => writer.write(&batch).map_err(encode_err)?,
            Ok(Msg::Finish) => break,
            // The parser gave up: dropping the writer drops the sink, which aborts the upload.
            Err(_) => {
                return Err(ExtractError::Internal(
                    "conversion abandoned before the end of input".into(),
                ));
            }
        }
    }
    let metadata = writer.finish().map_err(encode_err)?;
    let committed = writer.inner_mut().commit()?;
    Ok((committed, metadata.num_row_groups()))
}

/// Whether a file extension looks like delimited text that can be converted.
pub fn is_csv_like(ext: &str) -> bool {
    matches!(ext, "" | "csv" | "tsv" | "txt" | "dat" | "psv" | "tab")
}

/// The default delimiter for an extension.
pub fn default_delimiter(ext: &str) -> u8 {
    match ext {
        "tsv" | "tab" => b'\t',
        "psv" => b'|',
        _ => b',',
    }
}
