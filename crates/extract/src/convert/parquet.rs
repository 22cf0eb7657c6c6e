//! CSV -> Parquet, streamed on two threads (small inputs: on one, [`super::inline`]).
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

use sluice_manifest::ColumnValues;
use std::collections::BTreeMap;
use std::io::{BufRead, Cursor, Read};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::batches::{ENCODER_GONE, Handler, Msg, Output, encode_error, finish_writer};
use super::columns::{BatchBuilder, Built, Column, NullMarkers};
use super::cursor::{CursorFilter, CursorOutcome, CursorSpec};
use super::inline::{self, Inline};
use super::read_error;
use super::records::{Dialect, RecordReader, Records, utf8_bom_len};
use super::schema::{SchemaOverride, apply_overrides, describe, infer};
use crate::config::{BadRows, Compression, ParquetOptions};
use crate::error::{ExtractError, Result};
use crate::sink::{Committed, ObjectSink};

/// What the conversion needs besides the bytes.
pub(crate) struct CsvToParquet<'a> {
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
    /// `--cursor COL`: write only the rows after the stored mark (`super::cursor`).
    pub cursor: Option<&'a CursorSpec>,
}

/// What one conversion produced.
#[derive(Debug)]
pub(crate) struct Converted {
    /// `None` when the input was completely empty (not even a header): nothing is written.
    pub object: Option<Committed>,
    pub rows: u64,
    pub rejected: u64,
    pub rejects: Option<Committed>,
    pub columns: Vec<Column>,
    pub row_groups: usize,
    /// Per column: whether it holds a value, integer ranges (`super::values`).
    pub values: Vec<ColumnValues>,
    /// What `--cursor` kept and dropped (`rows` counts only the rows written).
    pub cursor: Option<CursorOutcome>,
}

pub(crate) fn writer_properties(
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
/// `infer_bytes`, whichever comes first. Returns the sample and whether it is the whole input.
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
    Ok((sample, whole))
}

/// Converts the CSV in `input` to Parquet in `sink`; `open_rejects` opens the rejects object
/// the first time a row is quarantined.
pub(crate) fn csv_to_parquet(
    input: &mut dyn BufRead,
    job: &CsvToParquet<'_>,
    sink: ObjectSink,
    open_rejects: &mut dyn FnMut() -> ObjectSink,
) -> Result<Converted> {
    convert(
        input,
        job,
        sink,
        open_rejects,
        typing_workers(),
        INLINE_MAX_BYTES,
    )
}

/// Inputs up to this size (read whole into the inference sample) convert on the calling
/// thread alone ([`super::inline`]): no encoder or typing threads, no channels, one record
/// buffer. Starting and joining those threads and their buffers costs about as much CPU as
/// converting a few KB (issue 18: ~2 ms per 2 KB file), while at this size the conversion
/// itself takes a few ms, so what parallelism would save is small. Many small files still use
/// every core: `--concurrency` items run at once.
const INLINE_MAX_BYTES: usize = 256 * 1024;

/// [`csv_to_parquet`] with `workers` typing threads, converting inputs of at most
/// `inline_max` bytes on the calling thread.
fn convert(
    input: &mut dyn BufRead,
    job: &CsvToParquet<'_>,
    sink: ObjectSink,
    open_rejects: &mut dyn FnMut() -> ObjectSink,
    workers: usize,
    inline_max: usize,
) -> Result<Converted> {
    let src = job.source_name;
    let (mut sample, whole) =
        read_sample(input, job.infer_rows, job.infer_bytes).map_err(|e| read_error(e, src))?;
    // A UTF-8 byte order mark is not part of the first column's name. Offsets in messages
    // still count it, so they match the bytes as served.
    let bom = utf8_bom_len(&sample);
    sample.drain(..bom);

    // The first `infer_rows` complete records (and the header). Unless the sample is the whole
    // input, its last record may be cut off and is left out.
    let sampled = {
        let mut reader = RecordReader::new(&sample[..], job.dialect).starting_at(bom as u64);
        let mut records = Records::default();
        let max = job.infer_rows.max(1) + usize::from(job.has_header);
        if whole {
            reader.read_batch(&mut records, max)
        } else {
            reader.read_sample_batch(&mut records, max)
        }
        .map_err(|e| read_error(e, src))?;
        records
    };
    if sampled.is_empty() {
        if whole {
            // No record at all: empty, or only empty lines (or a BOM).
            sink.abort();
            return Ok(Converted {
                object: None,
                rows: 0,
                rejected: 0,
                rejects: None,
                columns: Vec::new(),
                row_groups: 0,
                values: Vec::new(),
                cursor: None,
            });
        }
        return Err(ExtractError::BadRecord {
            source_name: src.to_string(),
            line: 1,
            offset: bom as u64,
            detail: format!(
                "the first record is longer than the {} MiB inference sample; most likely a \
                 quote that is never closed",
                job.infer_bytes >> 20
            ),
        });
    }
    let inferred = infer(
        &sampled,
        job.has_header,
        &NullMarkers::new(job.null_values),
        src,
    )?;
    let columns = apply_overrides(inferred, job.soda_types, job.schema_file)?;
    let data_rows = sampled.len().saturating_sub(usize::from(job.has_header));
    tracing::info!(
        source = %src,
        schema = %describe(&columns),
        "{src}: schema from {data_rows} sampled rows: {}",
        describe(&columns)
    );
    let filter = job
        .cursor
        .map(|spec| CursorFilter::new(spec, &columns, src))
        .transpose()?;
    let builder = BatchBuilder::new(columns.clone(), NullMarkers::new(job.null_values));
    let schema = builder.schema().clone();
    let props = writer_properties(job.parquet, &job.footer_metadata);
    if whole && sample.len() <= inline_max {
        // The sample's record buffer is reused for the batches.
        let input = Inline {
            sample: &sample,
            bom,
            records: sampled,
        };
        return inline::convert(input, job, &builder, sink, props, open_rejects, filter);
    }
    drop(sampled);

    let mut reader =
        RecordReader::new(Cursor::new(sample).chain(input), job.dialect).starting_at(bom as u64);
    // One batch queued for the encoder: typed batches already wait in order upstream.
    let (tx, rx) = mpsc::sync_channel::<Msg>(1);
    let workers = workers.max(1);

    std::thread::scope(|scope| {
        let encoder = scope.spawn(move || encode(rx, sink, schema, props, src));
        // Typing workers: records in, typed batches out, tagged with their place in the input.
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<Job>(workers + SPARE_BUFFERS);
        let (typed_tx, typed_rx) = mpsc::sync_channel::<Typed>(workers + SPARE_BUFFERS);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let typers: Vec<_> = (0..workers)
            .map(|_| {
                let jobs = jobs_rx.clone();
                let typed = typed_tx.clone();
                let builder = &builder;
                scope.spawn(move || type_loop(&jobs, builder, &typed))
            })
            .collect();
        drop((jobs_rx, typed_tx));
        let parsed = parse_loop(
            &mut reader,
            &builder,
            job,
            Stages {
                jobs: jobs_tx,
                typed: typed_rx,
                buffers: workers + SPARE_BUFFERS,
                encoder: &tx,
            },
            open_rejects,
            filter,
        );
        if reader.blank_lines() > 0 {
            tracing::info!(source = %src, "{src}: skipped {} empty lines", reader.blank_lines());
        }
        // `parse_loop` has dropped its ends of the typing channels, so the workers finish.
        let typers_ok = typers.into_iter().all(|t| t.join().is_ok());
        match parsed {
            Ok(_) if !typers_ok => {
                drop(tx);
                let _ = join(encoder);
                Err(ExtractError::Internal("CSV typing thread panicked".into()))
            }
            Ok((rows, rejected, rejects, filter)) => {
                // The rejects object first: once the data object is visible, its rejects are too.
                let rejects = match rejects {
                    Some(mut r) => Some(r.commit()?),
                    None => None,
                };
                if tx.send(Msg::Finish).is_err() {
                    // The encoder stopped early; its error is the one to report.
                }
                drop(tx);
                let (object, row_groups, values) = join(encoder)?;
                let cursor = match (filter, job.cursor) {
                    (Some(filter), Some(spec)) => Some(filter.finish(spec, src)),
                    _ => None,
                };
                Ok(Converted {
                    object: Some(object),
                    rows,
                    rejected,
                    rejects,
                    columns,
                    row_groups,
                    values,
                    cursor,
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

/// Record buffers beyond one per typing worker: the one being filled by the reader while the
/// workers are busy. (Each holds a batch of records, about 2 MiB at 8192 rows of 12 columns.)
const SPARE_BUFFERS: usize = 1;

/// Threads that turn records into typed Arrow batches. Splitting records is sequential (a
/// quote changes the meaning of everything after it) and so is encoding, but typing is per
/// batch, so it can be spread: one thread fewer than the task has cores (Cloud Run's vCPUs, as
/// the cgroup quota says), at least one, at most 3 (beyond that the reader or the encoder is
/// the limit). On 2 cores that is one typing thread: the three stages (about 25%, 33% and 35%
/// of the CPU time) fill both cores, and every extra thread costs a record buffer and an
/// allocator arena of memory.
///
/// Computed once per process: `available_parallelism` reads the cgroup files (about 18 system
/// calls), which per item is a measurable share of a small file's cost.
fn typing_workers() -> usize {
    static WORKERS: OnceLock<usize> = OnceLock::new();
    *WORKERS.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).clamp(1, 3))
    })
}

fn join(
    handle: std::thread::ScopedJoinHandle<'_, Result<(Committed, usize, Vec<ColumnValues>)>>,
) -> Result<(Committed, usize, Vec<ColumnValues>)> {
    handle
        .join()
        .map_err(|_| ExtractError::Internal("parquet encoder thread panicked".into()))?
}

type Parsed = (u64, u64, Option<ObjectSink>, Option<CursorFilter>);

/// Records for a typing worker: batch number `seq` of the input, `skip` leading records
/// (the header) not data.
struct Job {
    seq: u64,
    skip: usize,
    records: Records,
}

/// A typed batch (or `None` if building it panicked), with its records for bad-row messages.
struct Typed {
    seq: u64,
    skip: usize,
    records: Records,
    built: Option<Built>,
}

fn type_loop(jobs: &Mutex<mpsc::Receiver<Job>>, builder: &BatchBuilder, out: &SyncSender<Typed>) {
    loop {
        // One worker waits on the channel, the others on the lock.
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(job) = next else { return };
        let built =
            std::panic::catch_unwind(AssertUnwindSafe(|| builder.build(&job.records, job.skip)))
                .ok();
        let typed = Typed {
            seq: job.seq,
            skip: job.skip,
            records: job.records,
            built,
        };
        if out.send(typed).is_err() {
            return;
        }
    }
}

/// The channels `parse_loop` works with.
struct Stages<'a> {
    jobs: SyncSender<Job>,
    typed: mpsc::Receiver<Typed>,
    /// Record buffers in circulation (bounds the records read ahead).
    buffers: usize,
    encoder: &'a SyncSender<Msg>,
}

/// The calling thread: splits records (`csv-core`) into batches for the typing workers, takes
/// the typed batches back in input order, deals with bad rows and passes the batches on to the
/// encoder. Record buffers go round: reader -> worker -> back here -> reader, so a fixed
/// number of them exist and nothing is allocated per batch for them.
fn parse_loop(
    reader: &mut RecordReader<impl BufRead>,
    builder: &BatchBuilder,
    job: &CsvToParquet<'_>,
    stages: Stages<'_>,
    open_rejects: &mut dyn FnMut() -> ObjectSink,
    filter: Option<CursorFilter>,
) -> Result<Parsed> {
    let src = job.source_name;
    let Stages {
        jobs,
        typed,
        buffers,
        encoder,
    } = stages;
    let mut order = InOrder {
        handler: Handler {
            builder,
            job,
            output: Output::Thread(encoder),
            open_rejects,
            rows: 0,
            rejected: 0,
            rejects: None,
            filter,
        },
        next: 0,
        waiting: BTreeMap::new(),
        free: (0..buffers).map(|_| Records::default()).collect(),
    };
    let mut sent = 0u64;
    let mut header_pending = job.has_header;
    let read_result = loop {
        // A free buffer, or wait for the oldest batch in flight to come back.
        let mut records = loop {
            if let Some(r) = order.free.pop() {
                break r;
            }
            let t = typed
                .recv()
                .map_err(|_| ExtractError::Internal("CSV typing threads stopped".into()))?;
            order.take(t)?;
        };
        let n = match reader.read_batch(&mut records, job.batch_rows.max(1)) {
            Ok(n) => n,
            Err(e) => break Err(read_error(e, src)),
        };
        if n == 0 {
            break Ok(());
        }
        let skip = usize::from(header_pending);
        header_pending = false;
        if records.len() <= skip {
            order.free.push(records);
            continue;
        }
        let job = Job {
            seq: sent,
            skip,
            records,
        };
        // Never blocks: the channel holds as many jobs as there are buffers.
        jobs.send(job)
            .map_err(|_| ExtractError::Internal("CSV typing threads stopped".into()))?;
        sent += 1;
        while let Ok(t) = typed.try_recv() {
            order.take(t)?;
        }
    };
    drop(jobs);
    // Batches read before the end (or before a read error) are dealt with first, in order: a
    // bad row in them is reported as it would have been without read-ahead.
    while order.next < sent {
        let t = typed
            .recv()
            .map_err(|_| ExtractError::Internal("CSV typing threads stopped".into()))?;
        order.take(t)?;
    }
    read_result?;
    let h = order.handler;
    Ok((h.rows, h.rejected, h.rejects, h.filter))
}

/// Puts typed batches back in input order and hands each to the [`Handler`].
struct InOrder<'a, 'j> {
    handler: Handler<'a, 'j>,
    /// Sequence number of the next batch to hand on.
    next: u64,
    waiting: BTreeMap<u64, Typed>,
    free: Vec<Records>,
}

impl InOrder<'_, '_> {
    fn take(&mut self, typed: Typed) -> Result<()> {
        self.waiting.insert(typed.seq, typed);
        while let Some(t) = self.waiting.remove(&self.next) {
            self.next += 1;
            let Typed {
                skip,
                records,
                built,
                ..
            } = t;
            let built =
                built.ok_or_else(|| ExtractError::Internal("CSV typing thread panicked".into()))?;
            self.handler.handle(built, &records, skip)?;
            self.free.push(records);
        }
        Ok(())
    }
}

/// The encoder thread: Arrow batches in, Parquet bytes out to the sink.
fn encode(
    rx: mpsc::Receiver<Msg>,
    sink: ObjectSink,
    schema: arrow::datatypes::SchemaRef,
    props: WriterProperties,
    src: &str,
) -> Result<(Committed, usize, Vec<ColumnValues>)> {
    let encode_err = |e| encode_error(e, src);
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
    finish_writer(writer, src)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use sluice_runtime::CancellationToken;
    use sluice_storage::LocalStore;

    use super::*;
    use crate::sink::SinkFactory;

    struct Harness {
        runtime: tokio::runtime::Runtime,
        dir: tempfile::TempDir,
        sinks: SinkFactory,
    }

    impl Harness {
        fn new() -> Self {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let cancel = CancellationToken::new();
            let store = Arc::new(LocalStore::new(dir.path(), cancel.clone()));
            let sinks = SinkFactory::new(store, runtime.handle().clone(), cancel);
            Harness {
                runtime,
                dir,
                sinks,
            }
        }

        /// Converts `input` with small batches (many of them in flight at once).
        fn convert(
            &self,
            input: &mut dyn BufRead,
            bad_rows: BadRows,
            batch_rows: usize,
        ) -> Result<Converted> {
            self.convert_with(input, bad_rows, batch_rows, Path::Threads)
        }

        /// [`Self::convert`] on the given path; `Path::Inline` samples the whole input.
        fn convert_with(
            &self,
            input: &mut dyn BufRead,
            bad_rows: BadRows,
            batch_rows: usize,
            path: Path,
        ) -> Result<Converted> {
            let _guard = self.runtime.enter();
            let options = ParquetOptions::default();
            let counter = AtomicU64::new(0);
            let nulls = vec![String::new()];
            let job = CsvToParquet {
                source_name: "test.csv",
                dialect: Dialect {
                    delimiter: b',',
                    quote: b'"',
                    escape: None,
                },
                has_header: true,
                null_values: &nulls,
                infer_rows: if path == Path::Threads { 20 } else { 1_000_000 },
                infer_bytes: if path == Path::Threads { 4096 } else { 8 << 20 },
                batch_rows,
                soda_types: None,
                schema_file: None,
                parquet: &options,
                bad_rows,
                max_bad_rows: None,
                footer_metadata: vec![("sluice.source".into(), "test.csv".into())],
                rows_counter: &counter,
                cursor: None,
            };
            let sink = self.sinks.open("out.parquet", Default::default(), "x");
            let mut open_rejects = || {
                self.sinks
                    .open("out.rejects.jsonl", Default::default(), "x")
            };
            // Three typing threads, whatever the machine: batches finish out of order.
            let inline_max = if path == Path::Inline { usize::MAX } else { 0 };
            let converted = convert(input, &job, sink, &mut open_rejects, 3, inline_max);
            if let Ok(c) = &converted {
                assert_eq!(counter.load(Ordering::Relaxed), c.rows);
            }
            converted
        }

        fn ids(&self) -> Vec<i64> {
            let data = Bytes::from(std::fs::read(self.dir.path().join("out.parquet")).unwrap());
            ParquetRecordBatchReaderBuilder::try_new(data)
                .unwrap()
                .build()
                .unwrap()
                .flat_map(|b| {
                    b.unwrap()
                        .column(0)
                        .as_primitive::<Int64Type>()
                        .values()
                        .to_vec()
                })
                .collect()
        }

        fn rejects(&self) -> Vec<serde_json::Value> {
            std::fs::read_to_string(self.dir.path().join("out.rejects.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    }

    /// Which way [`Harness::convert_with`] converts.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Path {
        /// The threaded pipeline, three typing threads, whatever the machine; 20 rows sampled.
        Threads,
        /// The threaded pipeline, every row sampled (as `Inline`).
        ThreadsWholeSample,
        /// On the calling thread (the whole input is the inference sample).
        Inline,
    }

    /// `id,amount,note` rows 0..n; `bad` ids get an amount that is not a number.
    fn csv(n: usize, bad: &[usize]) -> String {
        let mut text = String::from("id,amount,note\n");
        for i in 0..n {
            if bad.contains(&i) {
                text.push_str(&format!("{i},bad{i},x\n"));
            } else if i % 5 == 0 {
                // A quoted newline: lines and records differ from here on.
                text.push_str(&format!("{i},{}.5,\"two\nlines\"\n", i * 2));
            } else {
                text.push_str(&format!("{i},{}.5,plain\n", i * 2));
            }
        }
        text
    }

    /// The line record `id` starts on in [`csv`]'s text.
    fn line_of(text: &str, id: usize) -> u64 {
        let at = text.find(&format!("\n{id},")).unwrap();
        text[..at].matches('\n').count() as u64 + 2
    }

    #[test]
    fn many_batches_in_flight_keep_input_order() {
        let h = Harness::new();
        let text = csv(5000, &[]);
        let converted = h.convert(&mut text.as_bytes(), BadRows::Fail, 7).unwrap();
        assert_eq!(converted.rows, 5000);
        assert_eq!(h.ids(), (0..5000).collect::<Vec<i64>>());
    }

    #[test]
    fn quarantined_rows_come_out_in_input_order_across_batches() {
        let h = Harness::new();
        let bad = [100, 101, 555, 2048, 2049, 4999];
        let text = csv(5000, &bad);
        let converted = h
            .convert(&mut text.as_bytes(), BadRows::Quarantine, 13)
            .unwrap();
        assert_eq!(converted.rows, 5000 - bad.len() as u64);
        assert_eq!(converted.rejected, bad.len() as u64);
        let lines: Vec<(u64, String)> = h
            .rejects()
            .iter()
            .map(|r| {
                (
                    r["line"].as_u64().unwrap(),
                    r["errors"][0]["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected: Vec<(u64, String)> = bad
            .iter()
            .map(|&i| (line_of(&text, i), format!("bad{i}")))
            .collect();
        assert_eq!(lines, expected);
        let kept: Vec<i64> = (0..5000)
            .filter(|i| !bad.contains(i))
            .map(|i| i as i64)
            .collect();
        assert_eq!(h.ids(), kept);
    }

    #[test]
    fn the_first_bad_row_in_the_input_is_the_one_reported() {
        for _ in 0..20 {
            let h = Harness::new();
            let text = csv(3000, &[1500, 2500, 2999]);
            let err = h
                .convert(&mut text.as_bytes(), BadRows::Fail, 11)
                .unwrap_err()
                .to_string();
            let line = line_of(&text, 1500);
            let offset = text.find("\n1500,").unwrap() + 1;
            assert!(
                err.contains(&format!(
                    "line {line} (byte offset {offset}), column 2 (amount)"
                )),
                "{err}"
            );
            assert!(err.contains("\"bad1500\""), "{err}");
            assert!(!h.dir.path().join("out.parquet").exists());
        }
    }

    /// `id,amount,note` rows 0..n; `ragged` ids get a fourth field (a bad row that does not
    /// change what inference finds).
    fn ragged_csv(n: usize, ragged: &[usize]) -> String {
        let mut text = String::from("id,amount,note\n");
        for i in 0..n {
            let extra = if ragged.contains(&i) { ",extra" } else { "" };
            text.push_str(&format!("{i},{}.5,\"a, \"\"b\"\"\"{extra}\n", i * 2));
        }
        text
    }

    #[test]
    fn small_inputs_convert_on_the_calling_thread_to_the_same_bytes() {
        let cases = [
            ("many batches", csv(3000, &[]), BadRows::Fail, 7),
            ("one batch", csv(12, &[]), BadRows::Fail, 8192),
            (
                "header only",
                "id,amount,note\n".to_string(),
                BadRows::Fail,
                8192,
            ),
            (
                "quarantine",
                ragged_csv(500, &[0, 6, 7, 499]),
                BadRows::Quarantine,
                6,
            ),
            (
                "blank lines",
                "\n\na,b\n\n1,x\n\n2,y\n".to_string(),
                BadRows::Fail,
                1,
            ),
        ];
        for (name, text, bad_rows, batch) in cases {
            let mut outputs = Vec::new();
            for path in [Path::ThreadsWholeSample, Path::Inline] {
                let h = Harness::new();
                let c = h
                    .convert_with(&mut text.as_bytes(), bad_rows, batch, path)
                    .unwrap();
                let read = |file: &str| std::fs::read(h.dir.path().join(file)).ok();
                outputs.push((
                    c.rows,
                    c.rejected,
                    c.row_groups,
                    read("out.parquet").expect("the data object"),
                    read("out.rejects.jsonl"),
                ));
            }
            assert_eq!(outputs[0], outputs[1], "{name}: threaded and inline differ");
        }
        // The cases exercise what they say.
        let h = Harness::new();
        let text = ragged_csv(500, &[0, 6, 7, 499]);
        let c = h
            .convert_with(&mut text.as_bytes(), BadRows::Quarantine, 6, Path::Inline)
            .unwrap();
        assert_eq!((c.rows, c.rejected), (496, 4));
        assert_eq!(h.rejects().len(), 4);
        assert_eq!(
            h.ids(),
            (1..499)
                .filter(|i| ![6, 7].contains(i))
                .collect::<Vec<i64>>()
        );
    }

    #[test]
    fn an_inline_conversion_that_fails_commits_nothing() {
        let h = Harness::new();
        let text = ragged_csv(50, &[20]);
        let err = h
            .convert_with(&mut text.as_bytes(), BadRows::Fail, 8192, Path::Inline)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("expected 3 fields (as in the header), found 4"),
            "{err}"
        );
        assert!(err.contains("line 22"), "{err}");
        assert!(!h.dir.path().join("out.parquet").exists());
    }

    /// Input that breaks off after its bytes (a dropped connection).
    struct Broken<'a>(&'a [u8]);

    impl Read for Broken<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("connection reset"));
            }
            let n = self.0.len().min(buf.len()).min(1000);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_read_error_fails_the_conversion_and_commits_nothing() {
        let h = Harness::new();
        let text = csv(3000, &[]);
        let mut input = std::io::BufReader::new(Broken(text.as_bytes()));
        let err = h
            .convert(&mut input, BadRows::Fail, 11)
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection reset"), "{err}");
        assert!(!h.dir.path().join("out.parquet").exists());

        // A bad row before the break is reported as it would be without read-ahead.
        let h = Harness::new();
        let text = csv(3000, &[2900]);
        let mut input = std::io::BufReader::new(Broken(text.as_bytes()));
        let err = h
            .convert(&mut input, BadRows::Fail, 11)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"bad2900\""), "{err}");
    }
}
