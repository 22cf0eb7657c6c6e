//! Process exit codes, the same for every Sluice subcommand and `sluice-trigger`.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | the task's whole share succeeded |
//! | 1    | the task failed (Cloud Run retries it up to maxRetries) |
//! | 2    | usage or configuration error (bad flag, bad env contract, not built yet) |
//! | 130  | interrupted by SIGINT |
//! | 143  | interrupted by SIGTERM |

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok,
    TaskFailed,
    Usage,
    Interrupted,
    Terminated,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Ok => 0,
            ExitCode::TaskFailed => 1,
            ExitCode::Usage => 2,
            ExitCode::Interrupted => 130,
            ExitCode::Terminated => 143,
        }
    }
}

/// The one rule that turns a failure into an exit code: every library error type implements
/// it (usage/configuration problems are [`ExitCode::Usage`], everything else that failed the
/// task is [`ExitCode::TaskFailed`]), delegating to the error it wraps where the wrapped error
/// decides (a storage setup problem inside an extract error is still a usage error). Binaries
/// ask the first error in a chain that implements it; nothing else decides exit codes.
pub trait ExitStatus {
    fn exit_code(&self) -> ExitCode;
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code() as u8)
    }
}
