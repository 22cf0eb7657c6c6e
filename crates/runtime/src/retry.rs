//! Exponential backoff with full jitter, bounded by attempts and elapsed time, honouring
//! `Retry-After`. Shared by all network code.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub multiplier: f64,
    /// Total attempts including the first.
    pub max_attempts: u32,
    pub max_elapsed: Duration,
}

/// What the caller's classifier says about one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Permanent: give up now.
    Stop,
    /// Transient: back off by the policy.
    Retry,
    /// Transient and the server said when (`Retry-After`).
    RetryAfter(Duration),
}

impl Default for RetryPolicy {
    /// 0.5 s initial, x2, capped at 30 s per wait, 8 attempts, 5 minutes in all.
    fn default() -> Self {
        todo!()
    }
}

/// Why a retried operation finally failed.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    #[error("{source} (gave up after {attempts} attempt(s))")]
    Exhausted { source: E, attempts: u32 },
    #[error("cancelled after {attempts} attempt(s)")]
    Cancelled { last: Option<E>, attempts: u32 },
}

impl RetryPolicy {
    /// The full-jitter delay before attempt `attempt + 1` (uniform in `[0, min(max, initial*mult^attempt)]`).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let _ = attempt;
        todo!()
    }

    /// Runs `op(attempt)` until it succeeds, `classify` says stop, attempts or elapsed time run
    /// out, or `cancel` fires (the wait between attempts is cancellable). Logs each retry at WARN
    /// with `what` naming the operation.
    pub async fn run<T, E, Fut>(
        &self,
        what: &str,
        cancel: &tokio_util::sync::CancellationToken,
        mut op: impl FnMut(u32) -> Fut,
        classify: impl Fn(&E) -> RetryDecision,
    ) -> Result<T, RetryError<E>>
    where
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let _ = (what, cancel, &mut op, classify);
        todo!()
    }
}

/// Parses an HTTP `Retry-After` value (delta-seconds or an HTTP date).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let _ = value;
    todo!()
}
