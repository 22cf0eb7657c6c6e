//! A child service in its own process group, killed (with its children) on drop, and also
//! when the test process dies without dropping it.
//!
//! Drop covers normal ends and panics (unwinding runs destructors). It does not cover a test
//! process that is killed (nextest timeout, Ctrl-C, SIGKILL) or a handle kept in a `static`
//! (never dropped). For those the service runs under a small `sh` watchdog whose stdin is a
//! pipe from the test process: when the test process is gone, the kernel closes the pipe, the
//! watchdog reads EOF and kills the service's process group. `PR_SET_PDEATHSIG` is not used
//! because it fires when the spawning *thread* exits, and test threads exit early.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a service may take to answer its readiness probe.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs "$@" with stdin from /dev/null and kills the whole process group when our own stdin
/// (the pipe from the test process) reaches EOF. Exits with the service's status if the
/// service exits first, so start-up failures are still seen by `try_wait`.
const WATCHDOG: &str = r#"exec 3<&0 </dev/null
"$@" 3<&- &
service=$!
( read -r _ <&3; kill -KILL 0 ) &
watcher=$!
exec 3<&-
wait "$service"
status=$?
kill "$watcher" 2>/dev/null
exit "$status"
"#;

pub struct ServiceProcess {
    name: &'static str,
    child: Child,
    // Held only to be closed when we go away: EOF is the watchdog's signal.
    _lifeline: ChildStdin,
    log: PathBuf,
}

impl ServiceProcess {
    /// Spawns `command` (program, args, env and working dir are taken from it) under the
    /// watchdog, in a new process group, with stdout and stderr written to `log`.
    pub fn spawn(name: &'static str, command: Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut wrapped = Command::new("sh");
        wrapped
            .arg("-c")
            .arg(WATCHDOG)
            .arg(format!("sluice-testkit-{name}"))
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            wrapped.current_dir(dir);
        }
        // Own process group: drop kills the group, so the watchdog and the service's own
        // children (if any) die together, and a Ctrl-C aimed at `cargo test` does not race us.
        std::os::unix::process::CommandExt::process_group(&mut wrapped, 0);
        let mut child = wrapped
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {}", describe(&command)))?;
        let lifeline = child.stdin.take().expect("stdin is piped");
        Ok(Self {
            name,
            child,
            _lifeline: lifeline,
            log: log.to_path_buf(),
        })
    }

    /// Waits until `GET path` on 127.0.0.1:port answers 2xx. Fails early, with the log's tail,
    /// if the service exits; fails after 60 s otherwise.
    pub fn wait_http_ok(&mut self, port: u16, path: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        loop {
            if let Ok(response) = crate::http::send(
                port,
                "GET",
                path,
                "application/json",
                b"",
                Duration::from_secs(5),
            ) && response.ok()
            {
                // Answered, but make sure it was our process and not a neighbour that took
                // the port we were handed (free_port() races by design).
                if let Some(status) = self.child.try_wait()? {
                    bail!(
                        "{} exited ({status}) while something else answers on port {port}; log:\n{}",
                        self.name,
                        self.log_tail(30)
                    );
                }
                return Ok(started.elapsed());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}); log ({}):\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} not ready on 127.0.0.1:{port}{path} after {READY_TIMEOUT:?}; log ({}):\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The last `lines` lines of the service's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The path of the service's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process group id (= the watchdog's pid).
    pub fn pgid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's process group; no memory is touched.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// True when a failed start looks like a lost race for the port we picked.
pub(crate) fn port_taken(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}").to_ascii_lowercase();
    text.contains("address already in use") || text.contains("something else answers")
}

fn describe(command: &Command) -> String {
    let mut parts = vec![command.get_program().to_string_lossy().into_owned()];
    parts.extend(
        command
            .get_args()
            .map(OsStr::to_string_lossy)
            .map(Into::into),
    );
    parts.join(" ")
}
