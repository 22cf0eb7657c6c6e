//! A `MakeWriter` that keeps everything written in memory, for tests that assert on logs.

use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard};

/// Collects log output; clones share the buffer. Pass a clone to
/// [`cloud_logging_layer`](super::cloud_logging_layer) and read it back afterwards.
#[derive(Debug, Clone, Default)]
pub struct LogCapture {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl LogCapture {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A test that panicked while logging poisons the lock; the bytes are still good.
        self.buffer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything written so far.
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    /// Each non-empty line parsed as JSON.
    pub fn json_lines(&self) -> Result<Vec<serde_json::Value>, serde_json::Error> {
        self.contents()
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(serde_json::from_str)
            .collect()
    }
}

/// The writer [`LogCapture`] hands out per event.
#[derive(Debug)]
pub struct CaptureWriter {
    buffer: LogCapture,
}

impl Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buffer.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = CaptureWriter;

    fn make_writer(&'a self) -> Self::Writer {
        CaptureWriter {
            buffer: self.clone(),
        }
    }
}
