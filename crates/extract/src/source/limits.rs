//! Transfer limits: every item ends in bounded time, however its source misbehaves.
//!
//! - [`RateMeter`]: `--min-rate` over `--min-rate-window`. Time counts only while waiting for
//!   body bytes, so connecting, retry backoff and a slow downstream (the pump waiting for
//!   the converter) never make a source look slow. The window slides in tenths: a drip or a
//!   stall fails within the window plus a tenth of it.
//!   One meter serves all attempts of an item: a stall that ends each attempt on the read
//!   timeout cannot restart the window by being retried.
//! - [`ItemLimits`]: `--item-timeout`, a deadline from the item's first attempt that all its
//!   attempts, request retries and resumptions share, so a slow source cannot be retried or
//!   resumed forever.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ExtractError;
use crate::progress::human_bytes;

const SLICES: u32 = 10;

/// The minimum average rate over a sliding window of transfer time.
#[derive(Debug, Clone)]
pub(crate) struct RateMeter {
    min_rate: u64,
    window: Duration,
    slice: Duration,
    /// Bytes per completed slice, the newest last; at most `SLICES`.
    slices: VecDeque<u64>,
    current: u64,
    in_slice: Duration,
}

impl RateMeter {
    pub(crate) fn new(min_rate: u64, window: Duration) -> Self {
        let window = window.max(Duration::from_millis(10));
        RateMeter {
            min_rate,
            window,
            slice: window / SLICES,
            slices: VecDeque::with_capacity(SLICES as usize),
            current: 0,
            in_slice: Duration::ZERO,
        }
    }

    /// How long the next wait for bytes may last before the meter must look again.
    pub(crate) fn until_check(&self) -> Duration {
        self.slice
            .saturating_sub(self.in_slice)
            .max(Duration::from_millis(1))
    }

    /// Counts `waited` transfer time and `bytes` received. Once a whole window has passed,
    /// at each slice boundary: the bytes of the last window must reach the minimum; if not,
    /// the message says what was received.
    pub(crate) fn record(&mut self, waited: Duration, bytes: u64) -> Result<(), String> {
        // The bytes arrived at the end of the wait: a wait that spans slices leaves those
        // slices empty, as they were.
        self.in_slice += waited;
        while self.in_slice >= self.slice {
            self.in_slice -= self.slice;
            if self.slices.len() == SLICES as usize {
                self.slices.pop_front();
            }
            self.slices.push_back(std::mem::take(&mut self.current));
            if self.slices.len() == SLICES as usize {
                let received: u64 = self.slices.iter().sum();
                let needed = self.min_rate as f64 * self.window.as_secs_f64();
                if (received as f64) < needed {
                    let secs = self.window.as_secs_f64();
                    return Err(format!(
                        "--min-rate: received {received} bytes in the last {} of transfer \
                         ({}), below the minimum of {}/s over --min-rate-window {}; \
                         the source is too slow or stalled",
                        format_duration(self.window),
                        rate_text(received as f64 / secs),
                        human_bytes(self.min_rate),
                        format_duration(self.window),
                    ));
                }
            }
        }
        self.current += bytes;
        Ok(())
    }
}

/// `0.5 B/s`, `12.0 KiB/s`: a drip's rate is below one byte per second.
fn rate_text(bytes_per_sec: f64) -> String {
    if bytes_per_sec < 1024.0 {
        format!("{bytes_per_sec:.1} B/s")
    } else {
        format!("{}/s", human_bytes(bytes_per_sec as u64))
    }
}

/// `1.5s`, `60s`, `2h`, `90m`: short and exact enough for messages.
pub(crate) fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if d.subsec_nanos() == 0 && secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let text = format!("{:.1}", d.as_secs_f64());
        format!("{}s", text.trim_end_matches(".0"))
    }
}

/// A meter shared by the bodies of one item's attempts (locked only between awaits).
pub(crate) type SharedMeter = Arc<Mutex<RateMeter>>;

/// The limits of a task's items: when each started, and how fast it has been, across its
/// attempts.
#[derive(Debug, Clone)]
pub(crate) struct ItemLimits {
    item_timeout: Duration,
    min_rate: u64,
    min_rate_window: Duration,
    items: Arc<Mutex<HashMap<String, (Instant, SharedMeter)>>>,
}

/// An item's deadline, and what to say when it passes.
#[derive(Debug, Clone)]
pub struct Deadline {
    pub at: Instant,
    started: Instant,
    limit: Duration,
}

impl ItemLimits {
    pub(crate) fn new(item_timeout: Duration, min_rate: u64, min_rate_window: Duration) -> Self {
        ItemLimits {
            item_timeout,
            min_rate,
            min_rate_window,
            items: Arc::default(),
        }
    }

    /// A meter for a request that belongs to no item (manifests, counts).
    pub(crate) fn new_meter(&self) -> SharedMeter {
        Arc::new(Mutex::new(RateMeter::new(
            self.min_rate,
            self.min_rate_window,
        )))
    }

    /// The deadline of the item `key`; the first call for an item starts its clock.
    pub(crate) fn deadline(&self, key: &str) -> Deadline {
        let started = self.entry(key).0;
        Deadline {
            at: started + self.item_timeout,
            started,
            limit: self.item_timeout,
        }
    }

    /// The rate meter all attempts of the item `key` share.
    pub(crate) fn meter(&self, key: &str) -> SharedMeter {
        self.entry(key).1
    }

    fn entry(&self, key: &str) -> (Instant, SharedMeter) {
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items
            .entry(key.to_string())
            .or_insert_with(|| (Instant::now(), self.new_meter()))
            .clone()
    }
}

impl Deadline {
    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The error for an item whose deadline passed; `received`: source bytes of the attempt.
    pub fn error(&self, source_name: &str, received: u64) -> ExtractError {
        ExtractError::TooSlow {
            source_name: source_name.to_string(),
            limit: "--item-timeout",
            detail: format!(
                "--item-timeout {} reached: the item has run {} over all its attempts and \
                 retries ({} received in the current attempt)",
                format_duration(self.limit),
                format_duration(Duration::from_millis(
                    self.started.elapsed().as_millis() as u64
                )),
                human_bytes(received),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_source_passes_and_a_drip_fails_after_one_window() {
        let window = Duration::from_secs(10);
        let mut fast = RateMeter::new(1024, window);
        for _ in 0..1000 {
            fast.record(Duration::from_millis(100), 2048).unwrap();
        }
        // A drip: 1 byte per half second. Nothing is judged before a whole window.
        let mut drip = RateMeter::new(1024, window);
        let mut elapsed = Duration::ZERO;
        let err = loop {
            let step = drip.until_check().min(Duration::from_millis(500));
            elapsed += step;
            if let Err(e) = drip.record(step, 1) {
                break e;
            }
            assert!(elapsed < window * 2, "never fired");
        };
        assert_eq!(elapsed, window);
        assert!(
            err.contains("--min-rate: received 19 bytes in the last 10s"),
            "{err}"
        );
        assert!(
            err.contains("(1.9 B/s), below the minimum of 1.0 KiB/s"),
            "{err}"
        );
    }

    #[test]
    fn a_stall_after_a_fast_start_fails_within_window_plus_a_slice() {
        let window = Duration::from_secs(10);
        let mut meter = RateMeter::new(1024, window);
        for _ in 0..30 {
            meter.record(Duration::from_secs(1), 1 << 20).unwrap();
        }
        let mut stalled = Duration::ZERO;
        while meter.record(meter.until_check(), 0).is_ok() {
            stalled += Duration::from_secs(1);
            assert!(stalled <= window + window / SLICES, "stall not detected");
        }
    }

    #[test]
    fn deadlines_hold_across_attempts() {
        let limits = ItemLimits::new(Duration::from_secs(60), 1024, Duration::from_secs(10));
        let first = limits.deadline("d/a");
        std::thread::sleep(Duration::from_millis(5));
        let again = limits.deadline("d/a");
        assert_eq!(first.at, again.at);
        assert!(limits.deadline("d/b").at > first.at);
        // One meter per item, whatever the attempt.
        assert!(Arc::ptr_eq(&limits.meter("d/a"), &limits.meter("d/a")));
        assert!(!Arc::ptr_eq(&limits.meter("d/a"), &limits.meter("d/b")));
        assert!(!first.passed());
        let msg = first.error("https://h/a.csv", 5).to_string();
        assert!(
            msg.starts_with("https://h/a.csv: --item-timeout 1m reached: the item has run"),
            "{msg}"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(3)), "3s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
