//! The Cloud Run Jobs task contract: `CLOUD_RUN_TASK_INDEX`, `CLOUD_RUN_TASK_COUNT`,
//! `CLOUD_RUN_TASK_ATTEMPT`, `CLOUD_RUN_JOB`, `CLOUD_RUN_EXECUTION`.
//!
//! Absent variables mean a single local task (index 0 of 1, attempt 0). An empty value counts
//! as absent: Cloud Run always sets real values, and an empty value in practice comes from a
//! shell or compose file that declared the name without a value (`CLOUD_RUN_TASK_INDEX=`), which
//! means "not set" far more often than it means a typo worth failing for.

/// Upper bound Cloud Run puts on tasks per execution.
pub(crate) const MAX_TASK_COUNT: u32 = 10_000;

/// Env var holding the 0-based task index.
pub(crate) const ENV_TASK_INDEX: &str = "CLOUD_RUN_TASK_INDEX";
/// Env var holding the number of tasks in the execution.
pub(crate) const ENV_TASK_COUNT: &str = "CLOUD_RUN_TASK_COUNT";
/// Env var holding the 0-based retry attempt.
pub(crate) const ENV_TASK_ATTEMPT: &str = "CLOUD_RUN_TASK_ATTEMPT";
/// Env var holding the Cloud Run job name.
pub(crate) const ENV_JOB: &str = "CLOUD_RUN_JOB";
/// Env var holding the Cloud Run execution name.
pub(crate) const ENV_EXECUTION: &str = "CLOUD_RUN_EXECUTION";

/// Which task of which execution this process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContext {
    /// 0-based task index, `< count`.
    pub index: u32,
    /// Number of tasks in the execution, `>= 1`.
    pub count: u32,
    /// 0-based retry attempt of this task.
    pub attempt: u32,
    /// Cloud Run job name, when running as a job.
    pub job: Option<String>,
    /// Cloud Run execution name, when running as a job.
    pub execution: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    #[error("{variable}={value:?} is not a non-negative integer")]
    NotANumber {
        variable: &'static str,
        value: String,
    },
    #[error("CLOUD_RUN_TASK_COUNT={value} must be between 1 and {MAX_TASK_COUNT}")]
    BadCount { value: u32 },
    #[error("CLOUD_RUN_TASK_INDEX={index} must be less than CLOUD_RUN_TASK_COUNT={count}")]
    IndexOutOfRange { index: u32, count: u32 },
}

impl TaskContext {
    /// A single local task: index 0 of 1, attempt 0, no job or execution.
    pub fn local() -> Self {
        TaskContext {
            index: 0,
            count: 1,
            attempt: 0,
            job: None,
            execution: None,
        }
    }

    /// Reads the contract from the process environment.
    pub fn from_env() -> Result<Self, ContractError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the contract through `lookup` (tests pass a map). Absent variables mean a single
    /// local task; present but malformed ones are errors naming the variable and its value.
    /// Empty (or all-whitespace) values count as absent.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ContractError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let number = |variable: &'static str, default: u32| -> Result<u32, ContractError> {
            match get(variable) {
                None => Ok(default),
                // Surrounding whitespace is tolerated (YAML/compose quoting leaves it); signs,
                // decimals and anything past u32 are not.
                Some(value) => match value.trim() {
                    t if t.bytes().all(|b| b.is_ascii_digit()) => {
                        t.parse().map_err(|_| ContractError::NotANumber {
                            variable,
                            value: value.clone(),
                        })
                    }
                    _ => Err(ContractError::NotANumber { variable, value }),
                },
            }
        };

        let index = number(ENV_TASK_INDEX, 0)?;
        let count = number(ENV_TASK_COUNT, 1)?;
        let attempt = number(ENV_TASK_ATTEMPT, 0)?;
        if count == 0 || count > MAX_TASK_COUNT {
            return Err(ContractError::BadCount { value: count });
        }
        if index >= count {
            return Err(ContractError::IndexOutOfRange { index, count });
        }
        Ok(TaskContext {
            index,
            count,
            attempt,
            job: get(ENV_JOB),
            execution: get(ENV_EXECUTION),
        })
    }

    /// `job/execution/task-00003/attempt-1`-style label used in logs and object metadata.
    ///
    /// Absent job or execution parts are left out (`task-00000/attempt-0` locally). The index is
    /// zero-padded to five digits, enough for [`MAX_TASK_COUNT`], so labels sort by index.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::with_capacity(4);
        parts.extend(self.job.iter().cloned());
        parts.extend(self.execution.iter().cloned());
        parts.push(format!("task-{:05}", self.index));
        parts.push(format!("attempt-{}", self.attempt));
        parts.join("/")
    }
}

impl Default for TaskContext {
    fn default() -> Self {
        Self::local()
    }
}

impl std::fmt::Display for TaskContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn ctx(vars: &[(&str, &str)]) -> Result<TaskContext, ContractError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TaskContext::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn absent_means_single_local_task() {
        assert_eq!(ctx(&[]).unwrap(), TaskContext::local());
        assert_eq!(TaskContext::local().index, 0);
        assert_eq!(TaskContext::local().count, 1);
        assert_eq!(TaskContext::local().attempt, 0);
    }

    #[test]
    fn full_contract_is_read() {
        let c = ctx(&[
            (ENV_TASK_INDEX, "3"),
            (ENV_TASK_COUNT, "10"),
            (ENV_TASK_ATTEMPT, "2"),
            (ENV_JOB, "extract-nyc"),
            (ENV_EXECUTION, "extract-nyc-abc12"),
        ])
        .unwrap();
        assert_eq!(
            c,
            TaskContext {
                index: 3,
                count: 10,
                attempt: 2,
                job: Some("extract-nyc".into()),
                execution: Some("extract-nyc-abc12".into()),
            }
        );
        assert_eq!(
            c.describe(),
            "extract-nyc/extract-nyc-abc12/task-00003/attempt-2"
        );
        assert_eq!(c.to_string(), c.describe());
    }

    #[test]
    fn describe_without_job() {
        let c = ctx(&[(ENV_TASK_INDEX, "9999"), (ENV_TASK_COUNT, "10000")]).unwrap();
        assert_eq!(c.describe(), "task-09999/attempt-0");
        assert_eq!(TaskContext::local().describe(), "task-00000/attempt-0");
    }

    #[test]
    fn empty_values_count_as_absent() {
        let c = ctx(&[
            (ENV_TASK_INDEX, ""),
            (ENV_TASK_COUNT, " "),
            (ENV_TASK_ATTEMPT, ""),
            (ENV_JOB, ""),
            (ENV_EXECUTION, ""),
        ])
        .unwrap();
        assert_eq!(c, TaskContext::local());
    }

    #[test]
    fn surrounding_whitespace_is_tolerated() {
        let c = ctx(&[(ENV_TASK_INDEX, " 1\n"), (ENV_TASK_COUNT, "2 ")]).unwrap();
        assert_eq!((c.index, c.count), (1, 2));
    }

    #[test]
    fn non_number_names_variable_and_value() {
        for (var, value) in [
            (ENV_TASK_INDEX, "one"),
            (ENV_TASK_INDEX, "-1"),
            (ENV_TASK_INDEX, "+1"),
            (ENV_TASK_COUNT, "1.5"),
            (ENV_TASK_COUNT, "99999999999"),
            (ENV_TASK_ATTEMPT, "0x1"),
        ] {
            let err = ctx(&[(var, value)]).unwrap_err();
            assert_eq!(
                err,
                ContractError::NotANumber {
                    variable: var,
                    value: value.to_string()
                },
                "{var}={value}"
            );
            let msg = err.to_string();
            assert!(msg.contains(var) && msg.contains(value), "{msg}");
        }
    }

    #[test]
    fn count_zero_is_rejected() {
        let err = ctx(&[(ENV_TASK_COUNT, "0")]).unwrap_err();
        assert_eq!(err, ContractError::BadCount { value: 0 });
        assert_eq!(
            err.to_string(),
            "CLOUD_RUN_TASK_COUNT=0 must be between 1 and 10000"
        );
    }

    #[test]
    fn count_above_max_is_rejected() {
        assert_eq!(
            ctx(&[(ENV_TASK_COUNT, "10001")]).unwrap_err(),
            ContractError::BadCount { value: 10_001 }
        );
        // The edge itself is fine.
        let c = ctx(&[(ENV_TASK_COUNT, "10000")]).unwrap();
        assert_eq!(c.count, MAX_TASK_COUNT);
    }

    #[test]
    fn index_at_or_past_count_is_rejected() {
        let err = ctx(&[(ENV_TASK_INDEX, "4"), (ENV_TASK_COUNT, "4")]).unwrap_err();
        assert_eq!(err, ContractError::IndexOutOfRange { index: 4, count: 4 });
        assert_eq!(
            err.to_string(),
            "CLOUD_RUN_TASK_INDEX=4 must be less than CLOUD_RUN_TASK_COUNT=4"
        );
        // Index without count: count defaults to 1, so any index > 0 is out of range.
        assert_eq!(
            ctx(&[(ENV_TASK_INDEX, "1")]).unwrap_err(),
            ContractError::IndexOutOfRange { index: 1, count: 1 }
        );
    }
}
