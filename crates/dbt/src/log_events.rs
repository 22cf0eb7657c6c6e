//! dbt's JSON log lines (`--log-format json`) re-emitted as Sluice `tracing` events, so one
//! Cloud Logging stream carries both, with dbt's level as the severity and node/status facts as
//! queryable `jsonPayload` fields.
//!
//! A dbt line looks like `{"info": {"level": "error", "msg": "...", "name": "LogTestResult",
//! "code": "Q007", "invocation_id": ..., "ts": ...}, "data": {"node_info": {"unique_id": ...,
//! "node_status": "fail", "resource_type": "test", ...}, "execution_time": 0.18, ...}}`.
//! Only the fields below are read; anything else in a line is ignored, so newer dbt versions
//! that add fields keep working.

use serde::Deserialize;
use tracing::Level;

use sluice_runtime::redact::Redactor;
use sluice_runtime::supervise::{Line, Stream};

/// The `tracing` target of re-emitted dbt events (`RUST_LOG=dbt=warn` quiets dbt alone).
pub(crate) const TARGET: &str = "dbt";

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct DbtEvent {
    pub info: Info,
    #[serde(default)]
    pub data: Data,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct Info {
    pub level: String,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub invocation_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct Data {
    #[serde(default)]
    pub node_info: Option<NodeInfo>,
    #[serde(default)]
    pub execution_time: Option<f64>,
    /// A result's status text, e.g. `CREATE VIEW (0 processed)`, `fail`.
    #[serde(default)]
    pub status: Option<serde_json::Value>,
    #[serde(default)]
    pub num_failures: Option<i64>,
    /// `PrintEvent`'s payload (what `dbt ls` prints).
    #[serde(default)]
    pub msg: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct NodeInfo {
    #[serde(default)]
    pub unique_id: Option<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub node_status: Option<String>,
    #[serde(default)]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub materialized: Option<String>,
    #[serde(default)]
    pub node_relation: Option<NodeRelation>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub(crate) struct NodeRelation {
    #[serde(default)]
    pub relation_name: Option<String>,
}

impl DbtEvent {
    /// Parses one line; `None` for anything that is not a dbt JSON event.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('{') {
            return None;
        }
        serde_json::from_str(trimmed).ok()
    }

    /// The `tracing` level for dbt's `info.level`.
    pub(crate) fn level(&self) -> Level {
        match self.info.level.to_ascii_lowercase().as_str() {
            "debug" => Level::DEBUG,
            "warn" | "warning" => Level::WARN,
            "error" => Level::ERROR,
            // "info", "test" and anything a future dbt invents.
            _ => Level::INFO,
        }
    }
}

/// Emits one line of dbt output as a `tracing` event, secrets masked.
pub(crate) fn emit(line: &Line, redactor: &Redactor) {
    let text = redactor.redact(&line.text);
    match DbtEvent::parse(&text) {
        Some(event) => emit_event(&event, line),
        None => emit_plain(&text, line),
    }
}

/// A dbt JSON event: dbt's message and level, its node facts as fields.
pub(crate) fn emit_event(event: &DbtEvent, line: &Line) {
    let node = event.data.node_info.as_ref();
    let status = event.data.status.as_ref().map(|s| match s {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    // One arm per level: `tracing` needs the level as a constant at each call site.
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(
                target: TARGET,
                $level,
                dbt_event = event.info.name.as_str(),
                dbt_code = event.info.code.as_str(),
                dbt_level = event.info.level.as_str(),
                dbt_invocation_id = event.info.invocation_id.as_deref(),
                node_id = node.and_then(|n| n.unique_id.as_deref()),
                node_name = node.and_then(|n| n.node_name.as_deref()),
                node_status = node.and_then(|n| n.node_status.as_deref()),
                resource_type = node.and_then(|n| n.resource_type.as_deref()),
                materialized = node.and_then(|n| n.materialized.as_deref()),
                relation = node
                    .and_then(|n| n.node_relation.as_ref())
                    .and_then(|r| r.relation_name.as_deref())
                    .filter(|r| !r.is_empty()),
                status = status.as_deref(),
                execution_time_s = event.data.execution_time,
                num_failures = event.data.num_failures,
                truncated = line.truncated.then_some(true),
                "{}",
                event.info.msg
            )
        };
    }
    // dbt prints empty `Formatting` events as spacer lines for a terminal; in a log stream they
    // are noise, so they go to DEBUG.
    let level = if event.info.msg.trim().is_empty() {
        Level::DEBUG
    } else {
        event.level()
    };
    match level {
        Level::DEBUG | Level::TRACE => at!(Level::DEBUG),
        Level::INFO => at!(Level::INFO),
        Level::WARN => at!(Level::WARN),
        Level::ERROR => at!(Level::ERROR),
    }
}

/// A line that is not a dbt event: stdout as INFO; stderr as WARNING, because with JSON logs
/// dbt itself writes nothing there, so whatever arrives (Python warnings, a crash's traceback)
/// is unexpected.
pub(crate) fn emit_plain(text: &str, line: &Line) {
    let stream = line.stream.as_str();
    let truncated = line.truncated.then_some(true);
    match line.stream {
        Stream::Stdout => {
            tracing::info!(target: TARGET, stream, truncated, "{text}")
        }
        Stream::Stderr => {
            tracing::warn!(target: TARGET, stream, truncated, "{text}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_runtime::TaskContext;
    use sluice_runtime::logging::{LogCapture, cloud_logging_layer};
    use tracing_subscriber::layer::SubscriberExt;

    const TEST_FAIL: &str = r#"{"data": {"attached_node": "model.p.stg", "execution_time": 0.18, "index": 2, "name": "fail_hp", "node_info": {"materialized": "test", "meta": {}, "node_checksum": "", "node_name": "fail_hp", "node_path": "fail_hp.sql", "node_relation": {"alias": "fail_hp", "database": "proj", "relation_name": "", "schema": "a"}, "node_status": "fail", "resource_type": "test", "unique_id": "test.p.fail_hp"}, "num_failures": 1, "num_models": 2, "status": "fail"}, "info": {"category": "", "code": "Q007", "extra": {}, "invocation_id": "809577ea", "level": "error", "msg": "2 of 3 FAIL 1 fail_hp .... [FAIL 1 in 0.18s]", "name": "LogTestResult", "pid": 1, "thread": "Thread-1", "ts": "2026-11-28T05:12:02Z"}}"#;

    fn capture(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let logs = LogCapture::new();
        let subscriber = tracing_subscriber::registry()
            .with(cloud_logging_layer(&TaskContext::local(), logs.clone()));
        tracing::subscriber::with_default(subscriber, f);
        logs.json_lines().unwrap()
    }

    fn line(stream: Stream, text: &str) -> Line {
        Line {
            stream,
            text: text.to_string(),
            truncated: false,
        }
    }

    #[test]
    fn parses_and_maps_levels() {
        let event = DbtEvent::parse(TEST_FAIL).unwrap();
        assert_eq!(event.level(), Level::ERROR);
        assert_eq!(event.info.name, "LogTestResult");
        let node = event.data.node_info.unwrap();
        assert_eq!(node.unique_id.as_deref(), Some("test.p.fail_hp"));
        for (level, expected) in [
            ("debug", Level::DEBUG),
            ("info", Level::INFO),
            ("warn", Level::WARN),
            ("error", Level::ERROR),
            ("mystery", Level::INFO),
        ] {
            let text = format!(r#"{{"info": {{"level": "{level}", "msg": "m"}}}}"#);
            assert_eq!(DbtEvent::parse(&text).unwrap().level(), expected, "{level}");
        }
        assert!(DbtEvent::parse("Running with dbt=1.11").is_none());
        assert!(DbtEvent::parse("{\"not\": \"dbt\"}").is_none());
        assert!(DbtEvent::parse("{truncated").is_none());
    }

    #[test]
    fn failing_test_becomes_an_error_with_node_fields() {
        let lines = capture(|| emit(&line(Stream::Stdout, TEST_FAIL), &Redactor::default()));
        assert_eq!(lines.len(), 1);
        let e = &lines[0];
        assert_eq!(e["severity"], "ERROR");
        assert_eq!(e["message"], "2 of 3 FAIL 1 fail_hp .... [FAIL 1 in 0.18s]");
        assert_eq!(e["target"], "dbt");
        assert_eq!(e["dbt_event"], "LogTestResult");
        assert_eq!(e["dbt_code"], "Q007");
        assert_eq!(e["node_id"], "test.p.fail_hp");
        assert_eq!(e["node_status"], "fail");
        assert_eq!(e["resource_type"], "test");
        assert_eq!(e["status"], "fail");
        assert_eq!(e["num_failures"], 1);
        assert_eq!(e["execution_time_s"], 0.18);
        // Empty or absent facts are left out rather than written as "".
        assert!(e.get("relation").is_none(), "{e}");
        assert!(e.get("truncated").is_none(), "{e}");
    }

    #[test]
    fn empty_spacer_events_are_debug() {
        let spacer = r#"{"data": {"msg": ""}, "info": {"level": "info", "msg": "", "name": "Formatting", "code": "Z017"}}"#;
        let lines = capture(|| emit(&line(Stream::Stdout, spacer), &Redactor::default()));
        assert_eq!(lines[0]["severity"], "DEBUG");
    }

    #[test]
    fn plain_lines_pass_through_by_stream() {
        let lines = capture(|| {
            emit(
                &line(Stream::Stdout, "plain progress"),
                &Redactor::default(),
            );
            emit(
                &line(Stream::Stderr, "DeprecationWarning: x"),
                &Redactor::default(),
            );
        });
        assert_eq!(lines[0]["severity"], "INFO");
        assert_eq!(lines[0]["message"], "plain progress");
        assert_eq!(lines[0]["stream"], "stdout");
        assert_eq!(lines[1]["severity"], "WARNING");
        assert_eq!(lines[1]["stream"], "stderr");
    }

    #[test]
    fn secrets_are_masked_before_parsing() {
        let redactor = Redactor::new(["tok-0123456789"]);
        let text = r#"{"info": {"level": "warn", "msg": "auth with tok-0123456789 failed"}}"#;
        let lines = capture(|| {
            emit(&line(Stream::Stdout, text), &redactor);
            emit(
                &line(Stream::Stderr, "Traceback: token=tok-0123456789"),
                &redactor,
            );
        });
        let all = serde_json::to_string(&lines).unwrap();
        assert!(!all.contains("tok-0123456789"), "{all}");
        assert_eq!(lines[0]["message"], "auth with REDACTED failed");
        assert_eq!(lines[0]["severity"], "WARNING");
    }
}
