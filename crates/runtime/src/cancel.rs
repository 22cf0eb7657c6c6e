//! SIGTERM/SIGINT -> one cancellation token every long operation observes.

use tokio_util::sync::CancellationToken;

/// Which signal, if any, asked us to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Interrupt,
    Terminate,
}

/// Owns the process-wide cancellation token and remembers which signal fired.
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// Installs SIGTERM and SIGINT handlers (must be called inside a tokio runtime).
    pub fn install() -> Self {
        todo!()
    }

    /// A token that is cancelled when a stop signal arrives.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// The signal that fired, if any.
    pub fn signal(&self) -> Option<StopSignal> {
        todo!()
    }
}
