//! SIGTERM/SIGINT -> one cancellation token every long operation observes.
//!
//! The first SIGTERM or SIGINT cancels the token and is remembered, so the binary can exit
//! 143 or 130 once in-flight work has been aborted cleanly (no partial object made visible,
//! logs flushed). Cloud Run sends SIGTERM once and SIGKILL about 10 s later, so that path
//! never sees a second signal. A *second* stop signal of either kind is a person insisting
//! (Ctrl-C twice): the process exits at once with that signal's code (130 for SIGINT, 143
//! for SIGTERM) without waiting for cleanup, the usual CLI convention.

use crate::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio_util::sync::CancellationToken;

/// Which signal, if any, asked us to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    /// The conventional name, as logged.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The exit code a process stopped by this signal reports (128 + signal number).
    pub fn exit_code(self) -> ExitCode {
        match self {
            StopSignal::Interrupt => ExitCode::Interrupted,
            StopSignal::Terminate => ExitCode::Terminated,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            StopSignal::Interrupt => 1,
            StopSignal::Terminate => 2,
        }
    }

    fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(StopSignal::Interrupt),
            2 => Some(StopSignal::Terminate),
            _ => None,
        }
    }
}

const NO_SIGNAL: u8 = 0;

/// Owns the process-wide cancellation token and remembers which signal fired.
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
    /// The first stop signal (`StopSignal::to_u8`), or `NO_SIGNAL`. Shared by clones.
    signal: Arc<AtomicU8>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new_unsignalled()
    }
}

impl Shutdown {
    /// Installs SIGTERM and SIGINT handlers (must be called inside a tokio runtime).
    ///
    /// Panics if the handlers cannot be registered (only possible outside a tokio runtime with
    /// signal support enabled); use [`Shutdown::try_install`] to handle that instead.
    pub fn install() -> Self {
        Self::try_install().expect("cannot install SIGTERM/SIGINT handlers")
    }

    /// Like [`Shutdown::install`], returning the registration error instead of panicking.
    pub fn try_install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        // Register both synchronously so a signal arriving right after this returns is caught.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = Self::new_unsignalled();
        let handle = shutdown.clone();
        tokio::spawn(async move {
            let mut received = 0u32;
            loop {
                let which = tokio::select! {
                    Some(()) = term.recv() => StopSignal::Terminate,
                    Some(()) = int.recv() => StopSignal::Interrupt,
                    else => return,
                };
                received += 1;
                if received == 1 {
                    tracing::warn!(signal = which.name(), "received {}, stopping", which.name());
                    handle.request(which);
                } else {
                    // Logs may not get flushed on this path: say it on stderr directly.
                    eprintln!(
                        "sluice: received {} again, exiting immediately without cleanup",
                        which.name()
                    );
                    std::process::exit(which.exit_code().code());
                }
            }
        });
        Ok(shutdown)
    }

    /// A shutdown that no signal triggers: for library tests and embedders that manage signals
    /// themselves. [`Shutdown::request`] stops it.
    pub fn new_unsignalled() -> Self {
        Shutdown {
            token: CancellationToken::new(),
            signal: Arc::new(AtomicU8::new(NO_SIGNAL)),
        }
    }

    /// Records `signal` (unless one was recorded already) and cancels the token, exactly as if
    /// the signal had arrived. What the installed handler does on the first signal.
    pub fn request(&self, signal: StopSignal) {
        // First signal wins: a later one must not change the exit code we report.
        let _ = self.signal.compare_exchange(
            NO_SIGNAL,
            signal.to_u8(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.token.cancel();
    }

    /// A token that is cancelled when a stop signal arrives.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The signal that fired, if any.
    pub fn signal(&self) -> Option<StopSignal> {
        StopSignal::from_u8(self.signal.load(Ordering::SeqCst))
    }

    /// Whether the token has been cancelled (by a signal or by anyone holding it).
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The exit code a signal calls for, if a signal fired.
    pub fn exit_code(&self) -> Option<ExitCode> {
        self.signal().map(StopSignal::exit_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsignalled_starts_clear() {
        let s = Shutdown::new_unsignalled();
        assert_eq!(s.signal(), None);
        assert!(!s.is_cancelled());
        assert_eq!(s.exit_code(), None);
    }

    #[test]
    fn request_cancels_and_first_signal_wins() {
        let s = Shutdown::new_unsignalled();
        let clone = s.clone();
        let token = s.token();
        s.request(StopSignal::Interrupt);
        clone.request(StopSignal::Terminate);
        assert!(token.is_cancelled());
        assert_eq!(clone.signal(), Some(StopSignal::Interrupt));
        assert_eq!(s.exit_code(), Some(ExitCode::Interrupted));
    }

    #[test]
    fn cancelling_the_token_directly_records_no_signal() {
        let s = Shutdown::new_unsignalled();
        s.token().cancel();
        assert!(s.is_cancelled());
        assert_eq!(s.signal(), None);
    }

    #[test]
    fn exit_codes_are_128_plus_signal_number() {
        assert_eq!(StopSignal::Interrupt.exit_code().code(), 128 + 2);
        assert_eq!(StopSignal::Terminate.exit_code().code(), 128 + 15);
    }
}
