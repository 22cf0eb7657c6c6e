//! What happens to a typed batch once it is its turn, in input order: its bad rows fail the
//! item or go to the rejects object, `--cursor` filters it, and it goes on to the Parquet
//! encoder. Shared by the threaded pipeline ([`super::parquet`]) and the one-thread path for
//! small inputs ([`super::inline`]), so both treat every row exactly alike.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use serde_json::json;
use sluice_manifest::ColumnValues;

use super::columns::{BatchBuilder, Built, Column, Problem};
use super::cursor::CursorFilter;
use super::parquet::CsvToParquet;
use super::records::{Flaw, Records};
use crate::config::BadRows;
use crate::error::{BadValue, ExtractError, Result};
use crate::sink::{Committed, ObjectSink};

/// Longest value quoted in an error message or reject line.
const MAX_VALUE_CHARS: usize = 200;

/// What the parsing thread sends the encoder thread.
pub(super) enum Msg {
    Batch(RecordBatch),
    Finish,
}

/// The error a failed send to the encoder thread becomes (the encoder's own error wins).
pub(super) const ENCODER_GONE: &str = "parquet encoder stopped";

/// Where batches go: the encoder thread, or a writer on this thread (small inputs).
pub(super) enum Output<'a> {
    Thread(&'a SyncSender<Msg>),
    Inline(&'a mut ArrowWriter<ObjectSink>),
}

/// Handles typed batches in input order (see the module docs) and counts what it wrote.
pub(super) struct Handler<'a, 'j> {
    pub builder: &'a BatchBuilder,
    pub job: &'a CsvToParquet<'j>,
    pub output: Output<'a>,
    pub open_rejects: &'a mut dyn FnMut() -> ObjectSink,
    pub rows: u64,
    pub rejected: u64,
    pub rejects: Option<ObjectSink>,
    pub filter: Option<CursorFilter>,
}

impl Handler<'_, '_> {
    pub(super) fn handle(&mut self, built: Built, records: &Records, skip: usize) -> Result<()> {
        let job = self.job;
        let src = job.source_name;
        let builder = self.builder;
        if let Some(fatal) = built.problems.iter().find(|p| p.fails_item()) {
            return Err(problem_error(fatal, records, skip, builder, src));
        }
        if !built.problems.is_empty() {
            match job.bad_rows {
                BadRows::Fail => {
                    return Err(problem_error(
                        &built.problems[0],
                        records,
                        skip,
                        builder,
                        src,
                    ));
                }
                BadRows::Quarantine => {
                    let sink = self.rejects.get_or_insert_with(&mut *self.open_rejects);
                    self.rejected +=
                        write_rejects(sink, &built.problems, records, skip, builder, src)?;
                    if let Some(limit) = job.max_bad_rows
                        && self.rejected > limit
                    {
                        return Err(ExtractError::TooManyBadRows {
                            source_name: src.to_string(),
                            rejected: self.rejected,
                            limit,
                        });
                    }
                }
            }
        }
        // `--cursor`: only rows after the mark go on (and count as written).
        let batch = match &mut self.filter {
            Some(filter) => filter.apply(built.batch, src)?,
            None => built.batch,
        };
        let batch_rows = batch.num_rows() as u64;
        if batch_rows > 0 {
            match &mut self.output {
                Output::Thread(encoder) => encoder
                    .send(Msg::Batch(batch))
                    .map_err(|_| ExtractError::Internal(ENCODER_GONE.into()))?,
                Output::Inline(writer) => {
                    writer.write(&batch).map_err(|e| encode_error(e, src))?;
                }
            }
        }
        self.rows += batch_rows;
        job.rows_counter.fetch_add(batch_rows, Ordering::Relaxed);
        Ok(())
    }
}

/// Closes a Parquet writer and commits its object: the object, its row groups, and what the
/// footer says of each column's values (`values.rs`). Shared by the threaded encoder and the
/// inline path, so both commit the same way.
pub(super) fn finish_writer(
    mut writer: ArrowWriter<ObjectSink>,
    src: &str,
) -> Result<(Committed, usize, Vec<ColumnValues>)> {
    let metadata = writer.finish().map_err(|e| encode_error(e, src))?;
    let committed = writer.inner_mut().commit()?;
    Ok((
        committed,
        metadata.num_row_groups(),
        super::values::column_values(&metadata),
    ))
}

/// A Parquet writer's error, named after the source. An I/O error inside the writer may be
/// the sink's (upload) error, which keeps its own kind (cancelled, transient...).
pub(super) fn encode_error(e: parquet::errors::ParquetError, src: &str) -> ExtractError {
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
}

fn truncate(value: &str) -> String {
    if value.chars().count() <= MAX_VALUE_CHARS {
        value.to_string()
    } else {
        let cut: String = value.chars().take(MAX_VALUE_CHARS).collect();
        format!("{cut}...")
    }
}

/// `column 2 (comment)`, also for a field beyond the header's columns.
fn column_label(columns: &[Column], col: usize) -> String {
    match columns.get(col) {
        Some(c) => format!("column {} ({})", col + 1, c.name),
        None => format!("column {}", col + 1),
    }
}

/// What is wrong with a record whose quoting is broken.
fn flaw_detail(flaw: Flaw, line: u64, columns: &[Column]) -> String {
    match flaw {
        Flaw::TextAfterQuote { field } => format!(
            "text follows the closing quote of {}; a quote inside a quoted value must be \
             doubled (\"\")",
            column_label(columns, field)
        ),
        Flaw::UnterminatedQuote {
            field,
            last_line,
            swallowed_lines: true,
        } => format!(
            "the quote opened in {} is never closed: the value runs to the end of input, \
             swallowing lines {}-{last_line}, which are most likely rows of their own; fix the \
             quoting at the source (this fails the item even with --bad-rows quarantine)",
            column_label(columns, field),
            line + 1
        ),
        Flaw::UnterminatedQuote { field, .. } => format!(
            "the quote opened in {} is never closed before the end of input",
            column_label(columns, field)
        ),
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
    let offset = records.offset(row);
    let columns = builder.columns();
    let bad_record = |detail: String| ExtractError::BadRecord {
        source_name: src.to_string(),
        line,
        offset,
        detail,
    };
    match *problem {
        Problem::BadValue { col, .. } => {
            let column = &columns[col];
            ExtractError::BadValue(Box::new(BadValue {
                source_name: src.to_string(),
                line,
                offset,
                column: column.name.clone(),
                column_index: col + 1,
                value: truncate(&String::from_utf8_lossy(records.field(row, col))),
                expected: column.column_type.name().to_string(),
                hint: Some(if column.lossless {
                    format!(
                        "expected {}, written so that nothing is lost; the type was inferred \
                         from the sampled rows: declare the column's type with a schema file, \
                         sample more rows with --infer-rows, or use --bad-rows quarantine",
                        column.column_type.expected_form()
                    )
                } else {
                    format!(
                        "expected {}; fix the type with a schema file or use --bad-rows \
                         quarantine",
                        column.column_type.expected_form()
                    )
                }),
            }))
        }
        Problem::InvalidUtf8 { col, .. } => {
            bad_record(format!("{} is not valid UTF-8", column_label(columns, col)))
        }
        Problem::NulByte { col, .. } => bad_record(format!(
            "{} holds a NUL byte (binary or UTF-16 data?)",
            column_label(columns, col)
        )),
        Problem::Malformed { flaw, .. } => bad_record(flaw_detail(flaw, line, columns)),
        Problem::FieldCount { found, .. } => bad_record(format!(
            "expected {} fields (as in the header), found {found}",
            columns.len()
        )),
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
                Problem::NulByte { col, .. } => json!({
                    "column": columns[col].name,
                    "column_index": col + 1,
                    "error": "NUL byte",
                }),
                Problem::Malformed { flaw, .. } => json!({
                    "error": flaw_detail(flaw, records.line(row + skip), columns),
                }),
                Problem::FieldCount { found, .. } => json!({
                    "error": format!("expected {} fields, found {found}", columns.len()),
                }),
            });
            i += 1;
        }
        let mut line = json!({
            "source": src,
            "line": records.line(row + skip),
            "offset": records.offset(row + skip),
            "errors": errors,
            "fields": records.record_strings(row + skip),
        });
        // `fields` is text: bytes that are not UTF-8 show as U+FFFD there, so the exact bytes
        // go along too, or the quarantined row could not be recovered.
        let raw: Vec<&[u8]> = (0..records.fields(row + skip))
            .map(|c| records.field(row + skip, c))
            .collect();
        if raw.iter().any(|f| std::str::from_utf8(f).is_err()) {
            use base64::Engine;
            let engine = base64::engine::general_purpose::STANDARD;
            line["fields_base64"] = raw.iter().map(|f| engine.encode(f)).collect();
        }
        let mut text = serde_json::to_vec(&line)
            .map_err(|e| ExtractError::Internal(format!("rejects JSON: {e}")))?;
        text.push(b'\n');
        sink.write_all_bytes(&text)?;
        count += 1;
    }
    Ok(count)
}
