//! Exponential backoff with full jitter, bounded by attempts and elapsed time, honouring
//! `Retry-After`. Shared by all network code.
//!
//! Rules [`RetryPolicy::run`] follows:
//! - Attempts are numbered from 0; at least one is always made, even if `max_attempts` is 0.
//! - An attempt is never started after the token is cancelled, and the wait between attempts
//!   ends as soon as it is (the attempt itself is the operation's business: it should observe
//!   the same token).
//! - A backoff wait is clamped to what is left of `max_elapsed`, so the budget is used up to
//!   its end; once nothing is left, the last error is returned.
//! - A server's `Retry-After` is honoured in full, never shortened: if it would end past
//!   `max_elapsed`, the last error is returned at once rather than retrying early.

use std::time::{Duration, SystemTime};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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
        RetryPolicy {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            max_attempts: 8,
            max_elapsed: Duration::from_secs(5 * 60),
        }
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

impl<E> RetryError<E> {
    /// How many attempts were made.
    pub fn attempts(&self) -> u32 {
        match self {
            RetryError::Exhausted { attempts, .. } | RetryError::Cancelled { attempts, .. } => {
                *attempts
            }
        }
    }

    /// The last error the operation returned, if any attempt was made.
    pub fn into_last_error(self) -> Option<E> {
        match self {
            RetryError::Exhausted { source, .. } => Some(source),
            RetryError::Cancelled { last, .. } => last,
        }
    }

    pub fn is_cancelled(&self) -> bool {
        matches!(self, RetryError::Cancelled { .. })
    }
}

impl RetryPolicy {
    /// The upper bound of the wait after attempt `attempt`: `min(max_delay,
    /// initial_delay * multiplier^attempt)`.
    pub fn backoff_cap(&self, attempt: u32) -> Duration {
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exp);
        let max = self.max_delay.as_secs_f64();
        // NaN (0 * inf) or overflow must not escape into Duration::from_secs_f64, which panics.
        if secs.is_nan() || secs >= max {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// The full-jitter delay before attempt `attempt + 1` (uniform in `[0, min(max, initial*mult^attempt)]`).
    pub fn backoff(&self, attempt: u32) -> Duration {
        use rand::Rng;
        let cap = self.backoff_cap(attempt);
        if cap.is_zero() {
            return cap;
        }
        let nanos = rand::rng().random_range(0..=cap.as_nanos().min(u128::from(u64::MAX)) as u64);
        Duration::from_nanos(nanos)
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
        let started = Instant::now();
        let max_attempts = self.max_attempts.max(1);
        let mut last: Option<E> = None;
        let mut attempt: u32 = 0;
        loop {
            if cancel.is_cancelled() {
                return Err(RetryError::Cancelled {
                    last,
                    attempts: attempt,
                });
            }
            let error = match op(attempt).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let attempts = attempt + 1;
            let exhausted = |source| Err(RetryError::Exhausted { source, attempts });
            if attempts >= max_attempts {
                return exhausted(error);
            }
            let remaining = self.max_elapsed.saturating_sub(started.elapsed());
            let delay = match classify(&error) {
                RetryDecision::Stop => return exhausted(error),
                RetryDecision::RetryAfter(wait) if wait > remaining => return exhausted(error),
                RetryDecision::RetryAfter(wait) => wait,
                RetryDecision::Retry if remaining.is_zero() => return exhausted(error),
                RetryDecision::Retry => self.backoff(attempt).min(remaining),
            };
            tracing::warn!(
                what,
                attempt = attempts,
                max_attempts,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "{what} failed (attempt {attempts}/{max_attempts}), retrying in {} ms: {error}",
                delay.as_millis()
            );
            last = Some(error);
            if !wait(cancel, delay).await {
                return Err(RetryError::Cancelled { last, attempts });
            }
            attempt = attempts;
        }
    }
}

/// Sleeps for `delay`; false if `cancel` fired first.
async fn wait(cancel: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// Parses an HTTP `Retry-After` value (delta-seconds or an HTTP date).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

/// [`parse_retry_after`] against a given "now": a date in the past means "retry now" (zero).
pub fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Absurdly long digit strings overflow u64: treat as "a very long time".
        return Some(
            value
                .parse::<u64>()
                .map_or(Duration::MAX, Duration::from_secs),
        );
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The retry decision for an HTTP response status, shared by every client in the workspace.
///
/// Retried: 408 Request Timeout, 429 Too Many Requests, and 5xx except 501 Not Implemented and
/// 505 HTTP Version Not Supported (those do not change on retry). 429 and 503 honour a
/// parseable `Retry-After`. Everything else (other 4xx, and non-error statuses should a caller
/// pass one) stops.
pub fn classify_http_status(status: u16, retry_after: Option<&str>) -> RetryDecision {
    match status {
        429 | 503 => match retry_after.and_then(parse_retry_after) {
            Some(wait) => RetryDecision::RetryAfter(wait),
            None => RetryDecision::Retry,
        },
        408 => RetryDecision::Retry,
        501 | 505 => RetryDecision::Stop,
        500..=599 => RetryDecision::Retry,
        _ => RetryDecision::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn fast() -> RetryPolicy {
        RetryPolicy {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            multiplier: 2.0,
            max_attempts: 5,
            max_elapsed: Duration::from_secs(600),
        }
    }

    #[test]
    fn defaults() {
        let p = RetryPolicy::default();
        assert_eq!(p.initial_delay, Duration::from_millis(500));
        assert_eq!(p.max_delay, Duration::from_secs(30));
        assert_eq!(p.multiplier, 2.0);
        assert_eq!(p.max_attempts, 8);
        assert_eq!(p.max_elapsed, Duration::from_secs(300));
    }

    #[test]
    fn backoff_cap_grows_then_saturates() {
        let p = RetryPolicy::default();
        let caps: Vec<u128> = (0..9).map(|a| p.backoff_cap(a).as_millis()).collect();
        assert_eq!(
            caps,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        // Huge attempts and degenerate multipliers stay finite.
        assert_eq!(p.backoff_cap(u32::MAX), p.max_delay);
        let zero = RetryPolicy {
            initial_delay: Duration::ZERO,
            multiplier: f64::INFINITY,
            ..RetryPolicy::default()
        };
        assert_eq!(zero.backoff_cap(3), zero.max_delay);
        assert_eq!(zero.backoff(0), Duration::ZERO);
    }

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let p = RetryPolicy::default();
        for attempt in [0, 1, 3, 6, 20] {
            let cap = p.backoff_cap(attempt);
            let samples: Vec<Duration> = (0..2000).map(|_| p.backoff(attempt)).collect();
            assert!(samples.iter().all(|d| *d <= cap), "attempt {attempt}");
            // Full jitter: both halves of [0, cap] are hit (fails with probability ~2^-1999).
            assert!(samples.iter().any(|d| *d < cap / 2));
            assert!(samples.iter().any(|d| *d > cap / 2));
        }
    }

    #[test]
    fn parses_delta_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after_at("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after_at(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date in the past means now.
        assert_eq!(
            parse_retry_after_at("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after_at("99999999999999999999999", now),
            Some(Duration::MAX)
        );
        for bad in ["", "-5", "1.5", "soon", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after_at(bad, now), None, "{bad:?}");
        }
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
    }

    #[test]
    fn http_status_classification() {
        use RetryDecision::*;
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify_http_status(s, None), Retry, "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 409, 412, 501, 505] {
            assert_eq!(classify_http_status(s, None), Stop, "{s}");
        }
        assert_eq!(
            classify_http_status(429, Some("7")),
            RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            classify_http_status(503, Some("2")),
            RetryAfter(Duration::from_secs(2))
        );
        // Only 429 and 503 carry a meaningful Retry-After; junk falls back to backoff.
        assert_eq!(classify_http_status(500, Some("7")), Retry);
        assert_eq!(classify_http_status(429, Some("later")), Retry);
        assert_eq!(classify_http_status(404, Some("7")), Stop);
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_failures_passing_attempt_numbers() {
        let seen = Cell::new(Vec::new());
        let result = fast()
            .run(
                "fetch",
                &CancellationToken::new(),
                |attempt| {
                    let mut v = seen.take();
                    v.push(attempt);
                    seen.set(v);
                    async move {
                        if attempt < 2 {
                            Err("flaky")
                        } else {
                            Ok(attempt)
                        }
                    }
                },
                |_| RetryDecision::Retry,
            )
            .await;
        assert_eq!(result.unwrap(), 2);
        assert_eq!(seen.take(), [0, 1, 2]);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let calls = Cell::new(0u32);
        let start = Instant::now();
        let err = fast()
            .run(
                "fetch",
                &CancellationToken::new(),
                |_| {
                    calls.set(calls.get() + 1);
                    async { Err::<(), _>("boom") }
                },
                |_| RetryDecision::Retry,
            )
            .await
            .unwrap_err();
        assert_eq!(calls.get(), 5);
        assert!(matches!(
            err,
            RetryError::Exhausted {
                source: "boom",
                attempts: 5
            }
        ));
        assert_eq!(err.to_string(), "boom (gave up after 5 attempt(s))");
        // Four waits, each at most its cap: 1 + 2 + 4 + 8.
        assert!(start.elapsed() <= Duration::from_secs(15));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_gives_up_at_once() {
        let start = Instant::now();
        let err = fast()
            .run(
                "fetch",
                &CancellationToken::new(),
                |_| async { Err::<(), _>("404") },
                |_| RetryDecision::Stop,
            )
            .await
            .unwrap_err();
        assert_eq!(err.attempts(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn elapsed_time_is_bounded() {
        let policy = RetryPolicy {
            initial_delay: Duration::from_secs(4),
            max_delay: Duration::from_secs(4),
            multiplier: 1.0,
            max_attempts: u32::MAX,
            max_elapsed: Duration::from_secs(60),
        };
        let calls = Cell::new(0u32);
        let start = Instant::now();
        let err = policy
            .run(
                "fetch",
                &CancellationToken::new(),
                |_| {
                    calls.set(calls.get() + 1);
                    async {
                        // Each attempt itself takes a second of (virtual) time.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Err::<(), _>("slow")
                    }
                },
                |_| RetryDecision::Retry,
            )
            .await
            .unwrap_err();
        let elapsed = start.elapsed();
        // Waits are clamped to the budget, so the last attempt starts by 60 s and ends 1 s later.
        assert!(elapsed <= Duration::from_secs(61), "{elapsed:?}");
        assert!(elapsed >= Duration::from_secs(60), "{elapsed:?}");
        // At least 60 / (1 + 4) attempts fit.
        assert!(calls.get() >= 12, "{}", calls.get());
        assert_eq!(err.attempts(), calls.get());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured_exactly() {
        let start = Instant::now();
        let at = Cell::new(Vec::new());
        let result = fast()
            .run(
                "fetch",
                &CancellationToken::new(),
                |attempt| {
                    let mut v = at.take();
                    v.push(start.elapsed());
                    at.set(v);
                    async move { if attempt == 0 { Err("429") } else { Ok(()) } }
                },
                // Longer than max_delay: Retry-After wins over the backoff cap.
                |_| RetryDecision::RetryAfter(Duration::from_secs(17)),
            )
            .await;
        assert!(result.is_ok());
        assert_eq!(at.take(), [Duration::ZERO, Duration::from_secs(17)]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_past_the_budget_gives_up_without_waiting() {
        let policy = RetryPolicy {
            max_elapsed: Duration::from_secs(30),
            ..fast()
        };
        let start = Instant::now();
        let err = policy
            .run(
                "fetch",
                &CancellationToken::new(),
                |_| async { Err::<(), _>("429") },
                |_| RetryDecision::RetryAfter(Duration::from_secs(31)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, RetryError::Exhausted { attempts: 1, .. }));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_during_a_wait_returns_promptly() {
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            canceller.cancel();
        });
        let start = Instant::now();
        let err = fast()
            .run(
                "fetch",
                &cancel,
                |_| async { Err::<(), _>("503") },
                |_| RetryDecision::RetryAfter(Duration::from_secs(100)),
            )
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        match err {
            RetryError::Cancelled { last, attempts } => {
                assert_eq!(last, Some("503"));
                assert_eq!(attempts, 1);
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_attempt_after_cancellation() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let calls = Cell::new(0u32);
        let err = fast()
            .run(
                "fetch",
                &cancel,
                |_| {
                    calls.set(calls.get() + 1);
                    async { Ok::<(), &str>(()) }
                },
                |_| RetryDecision::Retry,
            )
            .await
            .unwrap_err();
        assert_eq!(calls.get(), 0);
        assert!(matches!(
            err,
            RetryError::Cancelled {
                last: None,
                attempts: 0
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_max_attempts_still_tries_once() {
        let policy = RetryPolicy {
            max_attempts: 0,
            ..fast()
        };
        let result = policy
            .run(
                "fetch",
                &CancellationToken::new(),
                |_| async { Ok::<_, &str>(1) },
                |_| RetryDecision::Retry,
            )
            .await;
        assert_eq!(result.unwrap(), 1);
    }
}
