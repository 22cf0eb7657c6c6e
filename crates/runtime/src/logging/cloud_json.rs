//! The Cloud Logging JSON layer: one `LogEntry`-shaped object per line.
//!
//! Cloud Run's logging agent turns each stdout line that is a JSON object into a LogEntry: the
//! special keys below become LogEntry fields, everything else stays in `jsonPayload`.
//!
//! - `severity`: DEBUG (for TRACE and DEBUG), INFO, WARNING, ERROR.
//! - `message`, `timestamp` (RFC 3339, UTC, nanoseconds), `target`.
//! - `logging.googleapis.com/labels`: job, execution, task_index, task_attempt. Label values
//!   must be strings, so numbers are written as strings; absent job/execution are left out.
//! - `logging.googleapis.com/sourceLocation`: file, line (a string: the proto's int64 maps to a
//!   JSON string), function (the event's module path).
//! - the fields of every enclosing span, outermost first, then the event's own fields, as
//!   top-level keys (inner wins on a name clash); `spans` lists the span names.
//!
//! The special keys come first in each line (easier to read raw) and replace same-named fields,
//! so an event field called e.g. `severity` cannot forge them.

use crate::TaskContext;
use serde_json::{Map, Value};
use std::io::Write;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

pub const KEY_LABELS: &str = "logging.googleapis.com/labels";
pub const KEY_SOURCE_LOCATION: &str = "logging.googleapis.com/sourceLocation";

/// Cloud Logging's severity name for a `tracing` level.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::TRACE | Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARNING",
        Level::ERROR => "ERROR",
    }
}

/// The `logging.googleapis.com/labels` object for a task: every value a string.
pub fn labels(task: &TaskContext) -> Map<String, Value> {
    let mut labels = Map::new();
    if let Some(job) = &task.job {
        labels.insert("job".into(), job.clone().into());
    }
    if let Some(execution) = &task.execution {
        labels.insert("execution".into(), execution.clone().into());
    }
    labels.insert("task_index".into(), task.index.to_string().into());
    labels.insert("task_attempt".into(), task.attempt.to_string().into());
    labels
}

pub(crate) struct CloudLoggingLayer<W> {
    labels: Value,
    make_writer: W,
}

impl<W> CloudLoggingLayer<W> {
    pub(crate) fn new(task: &TaskContext, make_writer: W) -> Self {
        CloudLoggingLayer {
            labels: Value::Object(labels(task)),
            make_writer,
        }
    }
}

/// A span's fields as JSON, kept in the span's extensions.
struct SpanFields(Map<String, Value>);

impl<S, W> Layer<S> for CloudLoggingLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Map::new();
        attrs.record(&mut JsonVisitor(&mut fields));
        // `replace`, not `insert`: insert panics if another instance of this layer got there first.
        span.extensions_mut().replace(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(fields)) = extensions.get_mut::<SpanFields>() {
            values.record(&mut JsonVisitor(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut entry = Map::new();
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                spans.push(Value::from(span.name()));
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    entry.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut event_fields = Map::new();
        event.record(&mut JsonVisitor(&mut event_fields));
        let message = match event_fields.remove("message") {
            Some(Value::String(s)) => s,
            Some(other) => other.to_string(),
            None => String::new(),
        };
        entry.extend(event_fields);
        if !spans.is_empty() {
            entry.insert("spans".into(), Value::Array(spans));
        }

        let mut head: Vec<(&'static str, Value)> = vec![
            ("severity", severity(meta.level()).into()),
            ("message", message.into()),
            (
                "timestamp",
                chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                    .into(),
            ),
            ("target", meta.target().into()),
            (KEY_LABELS, self.labels.clone()),
        ];
        if let Some(file) = meta.file() {
            let mut location = Map::new();
            location.insert("file".into(), file.into());
            if let Some(line) = meta.line() {
                location.insert("line".into(), line.to_string().into());
            }
            location.insert(
                "function".into(),
                meta.module_path().unwrap_or(meta.target()).into(),
            );
            head.push((KEY_SOURCE_LOCATION, Value::Object(location)));
        }
        // The special keys win over same-named fields.
        for (key, _) in &head {
            entry.remove(*key);
        }

        let Ok(mut line) = serde_json::to_vec(&Entry {
            head,
            fields: entry,
        }) else {
            return;
        };
        line.push(b'\n');
        // One write per line so concurrent events never interleave within a line. Errors are
        // dropped: there is nowhere left to report a failure to log.
        let mut writer = self.make_writer.make_writer_for(meta);
        let _ = writer.write_all(&line);
        let _ = writer.flush();
    }
}

/// A LogEntry line: the special keys first, in a fixed order, so raw lines read well in a
/// terminal too (a plain `Map` would sort them in among the fields), then the fields.
struct Entry {
    head: Vec<(&'static str, Value)>,
    fields: Map<String, Value>,
}

impl serde::Serialize for Entry {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.head.len() + self.fields.len()))?;
        for (key, value) in &self.head {
            map.serialize_entry(key, value)?;
        }
        for (key, value) in &self.fields {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Records `tracing` field values as JSON values, keeping numbers and booleans typed.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_string(), value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number form.
        let json = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field, json);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        // The whole cause chain, like anyhow's `{:#}`: the top message alone is often "request
        // failed" with the useful part in a source.
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.put(field, text.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // For `message` this is the formatted `fmt::Arguments`, which Debug prints unquoted.
        self.put(field, format!("{value:?}").into());
    }
}
