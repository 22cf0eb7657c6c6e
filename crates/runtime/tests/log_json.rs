//! Golden test of the Cloud Logging JSON layer: capture its output, parse every line, check
//! every field Cloud Logging reads.

use serde_json::Value;
use sluice_runtime::TaskContext;
use sluice_runtime::logging::{LogCapture, cloud_logging_layer};
use tracing_subscriber::layer::SubscriberExt;

const LABELS: &str = "logging.googleapis.com/labels";
const SOURCE: &str = "logging.googleapis.com/sourceLocation";

fn task() -> TaskContext {
    TaskContext {
        index: 3,
        count: 8,
        attempt: 1,
        job: Some("extract-nyc".into()),
        execution: Some("extract-nyc-x7k2p".into()),
    }
}

/// Runs `emit` under a subscriber with only the JSON layer and returns the parsed lines.
fn capture(task: &TaskContext, emit: impl FnOnce()) -> Vec<Value> {
    let logs = LogCapture::new();
    let subscriber = tracing_subscriber::registry().with(cloud_logging_layer(task, logs.clone()));
    tracing::subscriber::with_default(subscriber, emit);
    let raw = logs.contents();
    assert!(
        raw.ends_with('\n'),
        "every line is newline-terminated: {raw:?}"
    );
    for line in raw.lines() {
        assert!(line.ends_with('}'), "{line}");
        // Special keys lead, so raw lines read well in a terminal.
        assert!(line.starts_with(r#"{"severity":"#), "{line}");
    }
    logs.json_lines().expect("every line is one JSON object")
}

fn check_common(line: &Value, severity: &str, message: &str) {
    assert_eq!(line["severity"], severity, "{line}");
    assert_eq!(line["message"], message, "{line}");
    assert_eq!(line["target"], "log_json", "{line}");

    let ts = line["timestamp"].as_str().expect("timestamp is a string");
    let parsed = chrono::DateTime::parse_from_rfc3339(ts).expect("timestamp is RFC 3339");
    assert_eq!(parsed.offset().local_minus_utc(), 0, "UTC: {ts}");
    assert!(ts.ends_with('Z'), "{ts}");
    // Nanosecond precision: 9 fractional digits.
    let fraction = ts.rsplit('.').next().unwrap().trim_end_matches('Z');
    assert_eq!(fraction.len(), 9, "{ts}");
    let age = chrono::Utc::now().signed_duration_since(parsed);
    assert!(age.num_seconds().abs() < 60, "timestamp is now-ish: {ts}");

    let labels = line[LABELS].as_object().expect("labels object");
    assert_eq!(labels["job"], "extract-nyc");
    assert_eq!(labels["execution"], "extract-nyc-x7k2p");
    assert_eq!(labels["task_index"], "3");
    assert_eq!(labels["task_attempt"], "1");
    assert!(
        labels.values().all(Value::is_string),
        "label values are strings: {labels:?}"
    );

    let source = line[SOURCE].as_object().expect("sourceLocation object");
    let file = source["file"].as_str().unwrap();
    assert!(file.ends_with("log_json.rs"), "{file}");
    let line_no = source["line"].as_str().expect("line is a string");
    assert!(line_no.parse::<u32>().unwrap() > 0, "{line_no}");
    assert_eq!(source["function"], "log_json");
}

#[test]
fn golden_fields() {
    let lines = capture(&task(), || {
        let run = tracing::info_span!("run", source = "nyc-311");
        let _run = run.enter();
        let item = tracing::info_span!(
            "item",
            url = "https://data.example/a.csv",
            bytes = tracing::field::Empty
        );
        let _item = item.enter();
        tracing::info!(rows = 42u64, ratio = 0.5, ok = true, "fetched {}", "a.csv");
        item.record("bytes", 1024u64);
        tracing::warn!(status = 429, "throttled");
        tracing::error!(error = "boom \"quoted\"\nnext line ☃", "failed");
    });
    assert_eq!(lines.len(), 3);

    check_common(&lines[0], "INFO", "fetched a.csv");
    check_common(&lines[1], "WARNING", "throttled");
    check_common(&lines[2], "ERROR", "failed");

    // Event fields are top-level and keep their JSON types.
    assert_eq!(lines[0]["rows"], 42);
    assert_eq!(lines[0]["ratio"], 0.5);
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(lines[1]["status"], 429);
    // Span fields (outer and inner) are top-level too; values recorded later show up later.
    for line in &lines {
        assert_eq!(line["source"], "nyc-311");
        assert_eq!(line["url"], "https://data.example/a.csv");
        assert_eq!(line["spans"], serde_json::json!(["run", "item"]));
    }
    assert!(lines[0].get("bytes").is_none(), "{}", lines[0]);
    assert_eq!(lines[1]["bytes"], 1024);
    // Quotes, newlines and non-ASCII survive escaping.
    assert_eq!(lines[2]["error"], "boom \"quoted\"\nnext line ☃");

    // Distinct source lines for distinct events.
    let l0 = lines[0][SOURCE]["line"].as_str().unwrap();
    let l1 = lines[1][SOURCE]["line"].as_str().unwrap();
    assert_ne!(l0, l1);
}

#[test]
fn trace_and_debug_map_to_debug() {
    let lines = capture(&task(), || {
        tracing::trace!("t");
        tracing::debug!("d");
    });
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["severity"], "DEBUG");
    assert_eq!(lines[1]["severity"], "DEBUG");
}

#[test]
fn local_task_omits_job_and_execution_labels() {
    let lines = capture(&TaskContext::local(), || tracing::info!("hello"));
    let labels = lines[0][LABELS].as_object().unwrap();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert_eq!(labels["task_index"], "0");
    assert_eq!(labels["task_attempt"], "0");
    assert!(lines[0].get("spans").is_none());
}

#[test]
fn event_fields_cannot_forge_special_keys() {
    let lines = capture(&task(), || {
        tracing::info!(severity = "ERROR", timestamp = "yesterday", "real");
    });
    assert_eq!(lines[0]["severity"], "INFO");
    assert_ne!(lines[0]["timestamp"], "yesterday");
}

#[test]
fn errors_carry_their_cause_chain() {
    #[derive(Debug, thiserror::Error)]
    #[error("upload failed")]
    struct Outer(#[source] std::io::Error);
    let err = Outer(std::io::Error::other("connection reset"));
    let lines = capture(&task(), || {
        tracing::error!(
            error = &err as &(dyn std::error::Error + 'static),
            "gave up"
        );
    });
    assert_eq!(lines[0]["error"], "upload failed: connection reset");
}

#[test]
fn retry_warnings_carry_what_attempt_delay_and_error() {
    use sluice_runtime::{CancellationToken, RetryDecision, RetryPolicy};
    use std::time::Duration;
    let policy = RetryPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(1),
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let lines = capture(&task(), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let result: Result<(), _> = rt.block_on(policy.run(
            "GET https://data.example/a.csv",
            &CancellationToken::new(),
            |_| async { Err("HTTP 503") },
            |_| RetryDecision::RetryAfter(Duration::from_secs(2)),
        ));
        assert!(result.is_err());
    });
    assert_eq!(lines.len(), 1, "one retry between two attempts: {lines:?}");
    let warn = &lines[0];
    assert_eq!(warn["severity"], "WARNING");
    assert_eq!(warn["what"], "GET https://data.example/a.csv");
    assert_eq!(warn["attempt"], 1);
    assert_eq!(warn["delay_ms"], 2000);
    assert_eq!(warn["error"], "HTTP 503");
    assert_eq!(warn["target"], "sluice_runtime::retry");
}
