//! The one-line summary of a run, from `run_results.json`.

use std::path::Path;

use serde::Deserialize;

use crate::DbtError;

/// Counts by outcome, as dbt's own `Done. PASS=.. WARN=.. ERROR=.. SKIP=.. NO-OP=.. TOTAL=..`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunSummary {
    /// `args.which`: build, run, test, ...
    pub command: Option<String>,
    pub pass: u64,
    pub warn: u64,
    pub error: u64,
    pub skip: u64,
    pub no_op: u64,
    pub total: u64,
    pub elapsed_s: f64,
}

#[derive(Deserialize)]
struct RunResults {
    #[serde(default)]
    results: Vec<NodeResult>,
    #[serde(default)]
    elapsed_time: f64,
    #[serde(default)]
    args: Args,
}

#[derive(Deserialize)]
struct NodeResult {
    status: String,
}

#[derive(Deserialize, Default)]
struct Args {
    which: Option<String>,
}

impl RunSummary {
    /// Reads `path`; `Ok(None)` when dbt wrote none (it failed before running nodes, or the
    /// command writes none, like `deps` or `ls`).
    pub fn read(path: &Path) -> Result<Option<Self>, DbtError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(DbtError::io("read", path, err)),
        };
        Self::parse(&bytes)
            .map(Some)
            .map_err(|err| DbtError::Project {
                path: path.to_path_buf(),
                reason: format!("not a dbt run_results.json: {err}"),
            })
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let results: RunResults = serde_json::from_slice(bytes)?;
        let mut summary = RunSummary {
            command: results.args.which,
            elapsed_s: results.elapsed_time,
            total: results.results.len() as u64,
            ..RunSummary::default()
        };
        for result in &results.results {
            // dbt's statuses: models success/error/skipped/no-op, tests and freshness
            // pass/warn/fail/error/runtime error, microbatch partial success.
            match result.status.as_str() {
                "success" | "pass" => summary.pass += 1,
                "warn" => summary.warn += 1,
                "skipped" => summary.skip += 1,
                "no-op" => summary.no_op += 1,
                // error, fail, runtime error, partial success, and anything unknown: a status
                // we do not recognise must not be counted as a pass.
                _ => summary.error += 1,
            }
        }
        Ok(summary)
    }

    /// `PASS=2 WARN=0 ERROR=1 SKIP=0 NO-OP=0 TOTAL=3 in 0.58s`.
    pub fn counts_line(&self) -> String {
        format!(
            "PASS={} WARN={} ERROR={} SKIP={} NO-OP={} TOTAL={} in {:.2}s",
            self.pass, self.warn, self.error, self.skip, self.no_op, self.total, self.elapsed_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_dbt() {
        let json = br#"{"metadata": {}, "elapsed_time": 0.5809, "args": {"which": "build"},
            "results": [{"status": "success"}, {"status": "pass"}, {"status": "fail"},
                        {"status": "warn"}, {"status": "skipped"}, {"status": "error"},
                        {"status": "no-op"}, {"status": "runtime error"}]}"#;
        let s = RunSummary::parse(json).unwrap();
        assert_eq!(
            s,
            RunSummary {
                command: Some("build".into()),
                pass: 2,
                warn: 1,
                error: 3,
                skip: 1,
                no_op: 1,
                total: 8,
                elapsed_s: 0.5809,
            }
        );
        assert_eq!(
            s.counts_line(),
            "PASS=2 WARN=1 ERROR=3 SKIP=1 NO-OP=1 TOTAL=8 in 0.58s"
        );
    }

    #[test]
    fn absent_file_is_none_and_garbage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run_results.json");
        assert_eq!(RunSummary::read(&path).unwrap(), None);
        std::fs::write(&path, "{not json").unwrap();
        let err = RunSummary::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("run_results.json: not a dbt run_results.json"),
            "{err}"
        );
    }
}
