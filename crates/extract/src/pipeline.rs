//! The blocking half of an item: decode (plain, gzip, zip members), check that each member
//! is data, decode its text (`--encoding`, BOM) and convert it into one object. Runs on a
//! blocking thread fed by the source pump.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use flate2::bufread::MultiGzDecoder;

use crate::config::{BadRows, OutputFormat, ParquetOptions};
use crate::convert::cursor::CursorTracker;
use crate::convert::parquet::{CsvToParquet, csv_to_parquet};
use crate::convert::records::Dialect;
use crate::convert::{passthrough, passthrough_chunks, read_error};
use crate::decode::content::{Expect, SNIFF_BYTES, not_data};
use crate::decode::encoding::TextReader;
use crate::decode::zip::ZipStream;
use crate::decode::{ChannelReader, Container};
use crate::decode::{default_delimiter, is_csv_like};
use crate::error::{ExtractError, Result};
use crate::naming::{KeyClaims, Layout, member_stem, split_extensions};
use crate::receipt::{ColumnRecord, ObjectRecord, RejectsRecord, crc_hex};
use crate::sink::{Committed, RowCount, SinkFactory};
use crate::source::WorkItem;
use crate::source::socrata_page::PageReader;

/// Buffer between a decompressor and the CSV reader.
const DECODED_BUFFER: usize = 256 * 1024;

/// Everything the blocking half needs.
pub(crate) struct PipelineCtx {
    pub item: Arc<WorkItem>,
    pub layout: Layout,
    pub sinks: SinkFactory,
    /// Metadata put on every object of the item (source, version, task...).
    pub metadata: BTreeMap<String, String>,
    pub bad_rows: BadRows,
    pub max_bad_rows: Option<u64>,
    pub parquet: ParquetOptions,
    pub rows: Arc<AtomicU64>,
    /// The keys this task writes: a key another source has claimed fails the item.
    pub claims: Arc<KeyClaims>,
    /// `--cursor COL`: the filter's spec, and what the item's members read (`cursor.to`).
    pub cursor: Option<Arc<CursorTracker>>,
}

/// One member on its way to becoming an object.
struct Member<'a> {
    /// Path inside a zip, if any.
    path: Option<&'a str>,
    stem: String,
    data_ext: String,
    /// The source encoding, when the text stage changed the bytes (recorded in metadata).
    encoding: Option<&'static str>,
}

pub(crate) fn content_type(ext: &str) -> &'static str {
    match ext {
        "csv" => "text/csv",
        "tsv" | "tab" => "text/tab-separated-values",
        "txt" => "text/plain",
        "json" | "geojson" => "application/json",
        "jsonl" | "ndjson" | "rejects.jsonl" => "application/x-ndjson",
        "xml" => "application/xml",
        "parquet" => "application/vnd.apache.parquet",
        "gz" => "application/gzip",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// Decodes and converts everything the reader yields; returns the objects committed.
pub(crate) fn run(mut reader: ChannelReader, ctx: &PipelineCtx) -> Result<Vec<ObjectRecord>> {
    let item = &ctx.item;
    // One peek serves the container sniff and the not-data check.
    let head = reader
        .peek(SNIFF_BYTES)
        .map_err(|e| read_error(e, &item.display))?;
    let container = if item.decompress {
        Container::sniff(head, &item.compression_ext)
    } else {
        Container::Plain
    };
    let plain_member = || Member {
        path: None,
        stem: item.name.clone(),
        data_ext: item.data_ext.clone(),
        encoding: None,
    };
    if let Some(page) = &item.page {
        // A Socrata page: plain CSV whose header names the system fields SODA's way.
        let pages = PageReader::new(reader, page.limit, &item.display);
        let mut input = BufReader::with_capacity(DECODED_BUFFER, pages);
        return Ok(convert_member(ctx, &mut input, &plain_member())?
            .into_iter()
            .collect());
    }
    match container {
        Container::Plain => {
            if item.format == OutputFormat::Passthrough && !transcodes(ctx, &item.data_ext) {
                check_data(ctx, &plain_member(), &item.display, head)?;
                let member = plain_member();
                let (key, sink) = open_passthrough(ctx, &member)?;
                let committed = passthrough_chunks(&mut reader, sink, &item.display)?;
                return Ok(vec![record(ctx, &member, key, committed, None)]);
            }
            Ok(convert_member(ctx, &mut reader, &plain_member())?
                .into_iter()
                .collect())
        }
        Container::Gzip => {
            let mut decoded = BufReader::with_capacity(DECODED_BUFFER, MultiGzDecoder::new(reader));
            Ok(convert_member(ctx, &mut decoded, &plain_member())?
                .into_iter()
                .collect())
        }
        Container::Zip => convert_zip(ctx, reader),
    }
}

fn convert_zip(ctx: &PipelineCtx, reader: ChannelReader) -> Result<Vec<ObjectRecord>> {
    let item = &ctx.item;
    let mut zip = ZipStream::new(reader);
    let mut objects = Vec::new();
    let mut seen = Vec::new();
    while let Some(header) = zip
        .next_member()
        .map_err(|e| read_error(e, &item.display))?
    {
        if header.is_dir() {
            continue;
        }
        seen.push(header.name.clone());
        if let Some((globs, _)) = &item.members
            && !globs.is_match(&header.name)
        {
            continue;
        }
        let (_, data_ext, _) = split_extensions(header.name.rsplit('/').next().unwrap_or(""));
        let member = Member {
            path: Some(&header.name),
            stem: member_stem(&item.name, &header.name, item.format),
            data_ext,
            encoding: None,
        };
        let raw = zip.reader().map_err(|e| read_error(e, &item.display))?;
        let mut buffered = BufReader::with_capacity(DECODED_BUFFER, raw);
        // A gzip inside the zip is decoded too.
        let is_gzip = buffered
            .fill_buf()
            .map_err(|e| read_error(e, &item.display))?
            .starts_with(&[0x1f, 0x8b]);
        let produced = if is_gzip {
            let mut inner = BufReader::with_capacity(DECODED_BUFFER, MultiGzDecoder::new(buffered));
            convert_member(ctx, &mut inner, &member)?
        } else {
            let out = convert_member(ctx, &mut buffered, &member)?;
            // Read the member to its end so its CRC is checked even if the converter stopped.
            std::io::copy(&mut buffered, &mut std::io::sink())
                .map_err(|e| read_error(e, &item.display))?;
            out
        };
        objects.extend(produced);
    }
    if objects.is_empty() {
        let wanted = item
            .members
            .as_ref()
            .map(|(_, patterns)| format!(" matching {}", patterns.join(", ")))
            .unwrap_or_default();
        return Err(ExtractError::Decode {
            source_name: item.display.clone(),
            detail: format!(
                "zip archive has no file members{wanted} (members: {})",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ),
        });
    }
    Ok(objects)
}

fn source_name(ctx: &PipelineCtx, member: &Member<'_>) -> String {
    match member.path {
        Some(path) => format!("{}!{path}", ctx.item.display),
        None => ctx.item.display.clone(),
    }
}

fn metadata_for(ctx: &PipelineCtx, member: &Member<'_>) -> BTreeMap<String, String> {
    let mut metadata = ctx.metadata.clone();
    if let Some(path) = member.path {
        metadata.insert("sluice-member".into(), path.to_string());
    }
    if let Some(encoding) = member.encoding {
        metadata.insert("sluice-source-encoding".into(), encoding.to_string());
    }
    metadata
}

/// Whether passthrough output goes through the text stage: only with `--encoding`, and only
/// for text formats (a `.pdf` member of a zip is never "transcoded").
fn transcodes(ctx: &PipelineCtx, data_ext: &str) -> bool {
    ctx.item.csv.encoding.is_some()
        && (is_csv_like(data_ext)
            || matches!(
                data_ext,
                "json" | "geojson" | "jsonl" | "ndjson" | "xml" | "html" | "htm"
            ))
}

/// The not-data check on a member's first bytes (after decompression and decoding). For a
/// plain HTTP body [`crate::source::http::HttpClient::get_data`] already checked (with the
/// content type, and retries); this catches local files and what was inside a gzip or zip,
/// which retrying cannot change.
fn check_data(ctx: &PipelineCtx, member: &Member<'_>, src: &str, prefix: &[u8]) -> Result<()> {
    let item = &ctx.item;
    let expect = Expect::new(&member.data_ext, item.format, item.csv.accept_any_content);
    let prefix = &prefix[..prefix.len().min(SNIFF_BYTES)];
    match not_data(expect, &member.data_ext, None, prefix) {
        None => Ok(()),
        Some(detail) => Err(ExtractError::NotData {
            source_name: src.to_string(),
            detail,
            transient: false,
        }),
    }
}

fn open_passthrough(
    ctx: &PipelineCtx,
    member: &Member<'_>,
) -> Result<(String, crate::sink::ObjectSink)> {
    let item = &ctx.item;
    let mut ext = if member.data_ext.is_empty() {
        "bin".to_string()
    } else {
        member.data_ext.clone()
    };
    if !item.decompress && !item.compression_ext.is_empty() {
        ext = format!("{ext}.{}", item.compression_ext);
    }
    let key = ctx
        .layout
        .object_key(&item.dataset, &member.stem, item.chunk(), &ext);
    ctx.claims.claim(&key, &source_name(ctx, member))?;
    let content_type = if !item.decompress && !item.compression_ext.is_empty() {
        content_type(&item.compression_ext)
    } else {
        content_type(&member.data_ext)
    };
    let sink = ctx
        .sinks
        .open(&key, metadata_for(ctx, member), content_type);
    Ok((key, sink))
}

fn convert_member(
    ctx: &PipelineCtx,
    input: &mut dyn BufRead,
    member: &Member<'_>,
) -> Result<Option<ObjectRecord>> {
    let item = &ctx.item;
    let src = source_name(ctx, member);
    let text_stage = match item.format {
        // Not CSV: `convert_text` refuses it as a usage error, before anything is read.
        OutputFormat::Parquet if !is_csv_like(&member.data_ext) => {
            return convert_text(ctx, input, member);
        }
        OutputFormat::Parquet => true,
        OutputFormat::Passthrough => transcodes(ctx, &member.data_ext),
    };
    if !text_stage {
        let prefix = input.fill_buf().map_err(|e| read_error(e, &src))?;
        check_data(ctx, member, &src, prefix)?;
        return convert_text(ctx, input, member);
    }
    // Parquet always reads through the text stage (a BOM may say UTF-16); passthrough only
    // with `--encoding`, so that by default it stays a byte-exact copy.
    let mut text =
        TextReader::new(input, item.csv.encoding, &src).map_err(|e| read_error(e, &src))?;
    let prefix = text.fill_buf().map_err(|e| read_error(e, &src))?;
    check_data(ctx, member, &src, prefix)?;
    let recorded =
        (text.transforms() || item.csv.encoding.is_some()).then(|| text.encoding().name());
    let member = Member {
        path: member.path,
        stem: member.stem.clone(),
        data_ext: member.data_ext.clone(),
        encoding: recorded,
    };
    convert_text(ctx, &mut text, &member)
}

/// Converts a member whose bytes are ready (decompressed, UTF-8 where it matters).
fn convert_text(
    ctx: &PipelineCtx,
    input: &mut dyn BufRead,
    member: &Member<'_>,
) -> Result<Option<ObjectRecord>> {
    let item = &ctx.item;
    let src = source_name(ctx, member);
    match item.format {
        OutputFormat::Passthrough => {
            let (key, sink) = open_passthrough(ctx, member)?;
            let committed = passthrough(input as &mut dyn Read, sink, &src)?;
            Ok(Some(record(ctx, member, key, committed, None)))
        }
        OutputFormat::Parquet => {
            if !is_csv_like(&member.data_ext) {
                return Err(ExtractError::Config(format!(
                    "{src}: --format parquet converts CSV, and .{} does not look like CSV; \
                     use passthrough for it (or select members with options.members)",
                    member.data_ext
                )));
            }
            let csv = &item.csv;
            let dialect = Dialect {
                delimiter: csv
                    .delimiter
                    .unwrap_or_else(|| default_delimiter(&member.data_ext)),
                quote: csv.quote,
                escape: csv.escape,
            };
            let key = ctx
                .layout
                .object_key(&item.dataset, &member.stem, item.chunk(), "parquet");
            let rejects_key = ctx
                .layout
                .rejects_key(&item.dataset, &member.stem, item.chunk());
            // The rejects key is reserved too, though only bad rows would create it.
            ctx.claims.claim(&key, &src)?;
            ctx.claims.claim(&rejects_key, &src)?;
            let metadata = metadata_for(ctx, member);
            let mut footer: Vec<(String, String)> = metadata
                .iter()
                .map(|(k, v)| (k.replace('-', "."), v.clone()))
                .collect();
            footer.sort();
            let job = CsvToParquet {
                source_name: &src,
                dialect,
                has_header: csv.has_header,
                null_values: &csv.null_values,
                infer_rows: csv.infer_rows,
                infer_bytes: csv.infer_bytes,
                batch_rows: csv.batch_rows,
                soda_types: item.soda_types.as_deref().map(Vec::as_slice),
                schema_file: item.schema_override.as_deref(),
                parquet: &ctx.parquet,
                bad_rows: ctx.bad_rows,
                max_bad_rows: ctx.max_bad_rows,
                footer_metadata: footer,
                rows_counter: &ctx.rows,
                cursor: ctx.cursor.as_ref().map(|t| t.spec.as_ref()),
            };
            // `sluice-rows`: the converter counts every row into `ctx.rows` before it commits.
            let sink = ctx
                .sinks
                .open(&key, metadata.clone(), content_type("parquet"))
                .with_rows(RowCount::Counter(ctx.rows.clone()));
            let mut open_rejects = || {
                ctx.sinks
                    .open(
                        &rejects_key,
                        metadata.clone(),
                        content_type("rejects.jsonl"),
                    )
                    .with_rows(RowCount::Lines)
            };
            let converted = csv_to_parquet(input, &job, sink, &mut open_rejects)?;
            if let (Some(tracker), Some(outcome)) = (&ctx.cursor, &converted.cursor) {
                tracker.add(outcome);
                tracing::info!(
                    source = %src,
                    column = %tracker.spec.column,
                    read = outcome.read,
                    written = converted.rows,
                    filtered = outcome.filtered,
                    "{src}: --cursor {}: {} of {} rows after {}",
                    tracker.spec.column,
                    converted.rows,
                    outcome.read,
                    outcome.from.as_deref().unwrap_or("(full pull)")
                );
            }
            let Some(object) = converted.object else {
                tracing::warn!(source = %src, "{src}: empty input (not even a header); nothing written");
                return Ok(None);
            };
            // The objects' `sluice-rows` must say what the receipt will; an object that
            // disagrees is not recorded (and not reused: its receipt never gets written).
            check_rows(&key, object.rows, converted.rows)?;
            if let Some(r) = &converted.rejects {
                check_rows(&rejects_key, r.rows, converted.rejected)?;
            }
            let rejects = converted.rejects.map(|r| RejectsRecord {
                url: ctx.sinks.store().url_of(&r.meta.key),
                name: r.meta.key.clone(),
                size: r.meta.size,
                generation: r.meta.generation,
                crc32c: crc_hex(r.meta.crc32c),
                sha256: r.sha256,
                rows: converted.rejected,
            });
            let mut rec = record(ctx, member, key, object, Some(converted.rows));
            rec.rejected_rows = converted.rejected;
            rec.rejects = rejects;
            rec.row_groups = Some(converted.row_groups);
            rec.columns = Some(
                converted
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| ColumnRecord {
                        name: c.name.clone(),
                        column_type: c.column_type.name().to_string(),
                        values: converted.values.get(i).copied(),
                    })
                    .collect(),
            );
            Ok(Some(rec))
        }
    }
}

fn check_rows(key: &str, recorded: Option<u64>, counted: u64) -> Result<()> {
    if recorded == Some(counted) {
        return Ok(());
    }
    Err(ExtractError::Internal(format!(
        "{key}: committed with sluice-rows {recorded:?}, but the converter counted {counted} rows"
    )))
}

fn record(
    ctx: &PipelineCtx,
    member: &Member<'_>,
    key: String,
    committed: Committed,
    rows: Option<u64>,
) -> ObjectRecord {
    let item = &ctx.item;
    ObjectRecord {
        url: ctx.sinks.store().url_of(&key),
        name: key,
        dataset: item.dataset.clone(),
        partition: ctx.layout.partition.clone(),
        format: item.format.as_str().to_string(),
        content_type: committed
            .meta
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into()),
        size: committed.meta.size,
        generation: committed.meta.generation,
        crc32c: crc_hex(committed.meta.crc32c),
        sha256: committed.sha256,
        rows,
        rejected_rows: 0,
        member: member.path.map(str::to_string),
        page: item.page.as_ref().map(|p| p.number),
        columns: None,
        row_groups: None,
        rejects: None,
    }
}
