//! Progress: a log line per active item every few seconds (bytes, rows, rate, ETA when the
//! size is known), or indicatif bars on a terminal, and one summary line per finished item.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sluice_runtime::CancellationToken;

use crate::config::{ProgressMode, ProgressOptions};

/// Counters of one item, updated by the pump (bytes) and the converter (rows).
#[derive(Debug)]
pub(crate) struct ItemProgress {
    pub label: String,
    pub bytes: Arc<AtomicU64>,
    pub rows: Arc<AtomicU64>,
    /// Size as served; `u64::MAX` = unknown.
    total: AtomicU64,
    started: Instant,
    bar: Mutex<Option<ProgressBar>>,
}

impl ItemProgress {
    pub(crate) fn set_total(&self, total: Option<u64>) {
        self.total
            .store(total.unwrap_or(u64::MAX), Ordering::Relaxed);
        if let (Some(total), Some(bar)) = (total, self.bar.lock().ok().and_then(|b| b.clone())) {
            bar.set_length(total);
        }
    }

    pub(crate) fn total(&self) -> Option<u64> {
        match self.total.load(Ordering::Relaxed) {
            u64::MAX => None,
            t => Some(t),
        }
    }

    /// Counters restart when an item is redone from scratch.
    pub(crate) fn restart(&self) {
        self.bytes.store(0, Ordering::Relaxed);
        self.rows.store(0, Ordering::Relaxed);
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Human-readable bytes (binary units).
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Tracks the active items and reports on them.
pub(crate) struct ProgressHub {
    options: ProgressOptions,
    active: Mutex<Vec<Arc<ItemProgress>>>,
    bars: Option<MultiProgress>,
}

impl ProgressHub {
    pub(crate) fn new(options: ProgressOptions) -> Arc<Self> {
        let bars = (options.mode == ProgressMode::Bar)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4)));
        Arc::new(ProgressHub {
            options,
            active: Mutex::new(Vec::new()),
            bars,
        })
    }

    pub(crate) fn start(&self, label: &str) -> Arc<ItemProgress> {
        let bar = self.bars.as_ref().map(|multi| {
            let bar = multi.add(ProgressBar::no_length());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:30!} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_message(label.to_string());
            bar
        });
        let item = Arc::new(ItemProgress {
            label: label.to_string(),
            bytes: Arc::new(AtomicU64::new(0)),
            rows: Arc::new(AtomicU64::new(0)),
            total: AtomicU64::new(u64::MAX),
            started: Instant::now(),
            bar: Mutex::new(bar),
        });
        if let Ok(mut active) = self.active.lock() {
            active.push(item.clone());
        }
        item
    }

    pub(crate) fn finish(&self, item: &Arc<ItemProgress>) {
        if let Ok(mut active) = self.active.lock() {
            active.retain(|i| !Arc::ptr_eq(i, item));
        }
        if let Some(bar) = item.bar.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
            if let Some(multi) = &self.bars {
                multi.remove(&bar);
            }
        }
    }

    /// Reports until `stop` fires: log lines every `interval`, or bar refreshes.
    pub(crate) fn spawn_reporter(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            let period = match hub.options.mode {
                ProgressMode::Bar => Duration::from_millis(250),
                _ => hub.options.interval.max(Duration::from_millis(100)),
            };
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = ticker.tick() => hub.report(),
                }
            }
        })
    }

    fn report(&self) {
        let active: Vec<Arc<ItemProgress>> = match self.active.lock() {
            Ok(a) => a.clone(),
            Err(_) => return,
        };
        for item in active {
            let bytes = item.bytes.load(Ordering::Relaxed);
            let rows = item.rows.load(Ordering::Relaxed);
            let secs = item.elapsed().as_secs_f64().max(1e-3);
            let rate = bytes as f64 / secs;
            match self.options.mode {
                ProgressMode::Bar => {
                    if let Some(bar) = item.bar.lock().ok().and_then(|b| b.clone()) {
                        bar.set_position(bytes);
                    }
                }
                ProgressMode::Log if bytes == 0 => {
                    // Connecting, or backing off between retries (each retry logs its own
                    // warning): a rate of 0 B/s would read like a stalled transfer.
                    tracing::info!(
                        item = %item.label,
                        waiting_secs = secs.round() as u64,
                        "{}: waiting for the source ({:.0} s)",
                        item.label,
                        secs
                    );
                }
                ProgressMode::Log => {
                    let total = item.total();
                    let eta = total.and_then(|t| {
                        (rate > 0.0 && t >= bytes)
                            .then(|| ((t - bytes) as f64 / rate).round() as u64)
                    });
                    let of = total
                        .map(|t| {
                            format!(
                                " of {} ({:.0}%)",
                                human_bytes(t),
                                bytes as f64 * 100.0 / t.max(1) as f64
                            )
                        })
                        .unwrap_or_default();
                    let eta_text = eta.map(|e| format!(", ETA {e}s")).unwrap_or_default();
                    tracing::info!(
                        item = %item.label,
                        bytes,
                        total_bytes = total,
                        rows,
                        rate_bytes_per_sec = rate.round() as u64,
                        eta_secs = eta,
                        "{}: {}{of}, {rows} rows, {}/s{eta_text}",
                        item.label,
                        human_bytes(bytes),
                        human_bytes(rate.round() as u64),
                    );
                }
                ProgressMode::Off => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(300 * 1024 * 1024), "300.0 MiB");
    }
}
