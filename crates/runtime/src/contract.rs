//! The Cloud Run Jobs task contract: `CLOUD_RUN_TASK_INDEX`, `CLOUD_RUN_TASK_COUNT`,
//! `CLOUD_RUN_TASK_ATTEMPT`, `CLOUD_RUN_JOB`, `CLOUD_RUN_EXECUTION`.

/// Upper bound Cloud Run puts on tasks per execution.
pub const MAX_TASK_COUNT: u32 = 10_000;

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
        todo!()
    }

    /// Reads the contract from the process environment.
    pub fn from_env() -> Result<Self, ContractError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the contract through `lookup` (tests pass a map). Absent variables mean a single
    /// local task; present but malformed ones are errors naming the variable and its value.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ContractError> {
        let _ = lookup;
        todo!()
    }

    /// `job/execution/task-00003/attempt-1`-style label used in logs and object metadata.
    pub fn describe(&self) -> String {
        todo!()
    }
}
