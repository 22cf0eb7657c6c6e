//! Running one child process under supervision: the one place Sluice starts, watches, signals
//! and kills processes (`sluice dbt`'s dbt, `sluice-trigger local`'s tasks).
//!
//! - The child runs in its **own process group**: a terminal's Ctrl-C reaches only us (we
//!   decide what the child gets, once), and the final SIGKILL reaches anything it started.
//! - Its stdout and stderr are read **line by line with a size cap** ([`Supervision::max_line_bytes`];
//!   longer lines are cut and marked), through one bounded channel, so a child that prints a
//!   whole SQL statement or a binary blob on one line cannot make us allocate without limit,
//!   and a child that prints faster than we re-emit blocks on its pipe instead.
//! - A **stop** (the cancellation token, i.e. SIGTERM/SIGINT to us, or the timeout) sends
//!   [`Supervision::stop_signal`] to the child's group or only its leader, then SIGKILL to the
//!   group once [`Supervision::grace`] has passed.
//! - When the child exits, the rest of its group is killed at once (as when a container's
//!   main process ends) and its output is read to the end for at most 2 s (a grandchild that
//!   escaped the group may hold the pipe open).
//!
//! All of Sluice's `unsafe` for processes is in this module: `kill(2)` and `atexit(3)`.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Mutex, Once};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest output line passed on whole; longer lines are cut (see [`Line::truncated`]).
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;

/// After the child exits, how long to keep reading output that something it started may
/// still hold open, before giving up on it.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of output, without its line ending; invalid UTF-8 is replaced (U+FFFD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
    /// The line was longer than the cap and was cut.
    pub truncated: bool,
}

/// A signal the supervisor sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: what dbt (Python) needs to cancel its BigQuery jobs.
    Interrupt,
    /// SIGTERM: what Cloud Run sends a container.
    Terminate,
}

impl Signal {
    fn raw(self) -> libc::c_int {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        }
    }
}

/// Who gets the stop signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopTarget {
    /// The child's whole process group.
    Group,
    /// Only the child itself (Cloud Run signals a container's PID 1, not its children).
    Leader,
    /// Nobody: the caller delivers the stop itself from [`Event::Stopping`] (e.g. `docker kill`
    /// for a container, whose client process would not forward it the same way).
    Caller,
}

/// How to supervise one child.
#[derive(Debug, Clone)]
pub struct Supervision {
    pub stop_signal: Signal,
    pub stop_target: StopTarget,
    /// Time between the stop signal and SIGKILL to the group.
    pub grace: Duration,
    /// Stop the child (as if cancelled) once it has run this long.
    pub timeout: Option<Duration>,
    pub max_line_bytes: usize,
    /// Kill the child's group if this process exits abruptly (`std::process::exit`, e.g. on a
    /// second Ctrl-C) while the child runs; nothing else would, since it has its own group.
    pub kill_on_exit: bool,
}

/// Why a stop was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The cancellation token fired.
    Cancelled,
    /// [`Supervision::timeout`] passed.
    TimedOut,
}

/// What happens while the child runs, in order, for the caller to log or act on.
#[derive(Debug)]
pub enum Event {
    /// The child runs, with this pid (which is also its process group id).
    Started {
        pid: u32,
    },
    Line(Line),
    /// The stop signal is about to be sent (or, with [`StopTarget::Caller`], is due).
    Stopping {
        pid: u32,
        reason: StopReason,
    },
    /// The grace period passed; the group is about to get SIGKILL.
    Killing {
        pid: u32,
    },
}

/// How the child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Signalled(i32),
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Termination::Exited(code) => write!(f, "exit code {code}"),
            Termination::Signalled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// What happened to one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub pid: u32,
    pub termination: Termination,
    /// A stop was requested (the cancellation token fired) while the child ran.
    pub stopped: bool,
    /// The timeout fired while the child ran.
    pub timed_out: bool,
    /// The child outlived the grace period and was killed.
    pub killed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for {program} (pid {pid}): {source}")]
    Wait {
        program: String,
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `command` to its end under `supervision`, handing every output line and stop step to
/// `on_event` in order. stdin, stdout, stderr and the process group of `command` are set here;
/// everything else (args, env, working directory) is the caller's.
pub async fn run(
    mut command: tokio::process::Command,
    supervision: &Supervision,
    cancel: &CancellationToken,
    mut on_event: impl FnMut(Event),
) -> Result<Finished, SuperviseError> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Any early return or panic below must not leave the child running.
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| SuperviseError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id().expect("a just-spawned child has a pid");
    let _registered = supervision
        .kill_on_exit
        .then(|| live_groups::Registered::new(pid));
    on_event(Event::Started { pid });

    // Two readers feed one channel so `on_event` sees lines in one sequence. The small bound
    // pushes back on the child (its pipe fills, it blocks) rather than buffering without limit.
    let (tx, mut rx) = mpsc::channel::<Line>(64);
    let max = supervision.max_line_bytes;
    let readers = [
        child
            .stdout
            .take()
            .map(|out| tokio::spawn(read_lines(out, Stream::Stdout, max, tx.clone()))),
        child
            .stderr
            .take()
            .map(|err| tokio::spawn(read_lines(err, Stream::Stderr, max, tx.clone()))),
    ];
    drop(tx);

    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let deadline = supervision.timeout.map(|t| Instant::now() + t);
    let mut status = None;
    let mut pipes_open = true;
    let mut stopping = false;
    let mut stopped = false;
    let mut timed_out = false;
    let mut killed = false;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;

    loop {
        if status.is_some() && !pipes_open {
            break;
        }
        let reason = tokio::select! {
            line = rx.recv(), if pipes_open => {
                match line {
                    Some(line) => on_event(Event::Line(line)),
                    None => pipes_open = false,
                }
                None
            }
            result = child.wait(), if status.is_none() => {
                let exit = result.map_err(|source| SuperviseError::Wait {
                    program: program.clone(),
                    pid,
                    source,
                })?;
                status = Some(exit);
                // Whatever the child left behind in its group goes with it, as when a
                // container stops; that also closes the pipes they held.
                signal(pid, StopTarget::Group, libc::SIGKILL);
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                None
            }
            () = cancel.cancelled(), if !stopping && status.is_none() => Some(StopReason::Cancelled),
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && !stopping && status.is_none() => {
                Some(StopReason::TimedOut)
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && !killed && status.is_none() => {
                killed = true;
                on_event(Event::Killing { pid });
                signal(pid, StopTarget::Group, libc::SIGKILL);
                None
            }
            () = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() && pipes_open => {
                tracing::warn!(pid, program, "the process exited but its output stayed open; no longer reading it");
                break;
            }
        };
        if let Some(reason) = reason {
            stopping = true;
            match reason {
                StopReason::Cancelled => stopped = true,
                StopReason::TimedOut => timed_out = true,
            }
            on_event(Event::Stopping { pid, reason });
            signal(pid, supervision.stop_target, supervision.stop_signal.raw());
            kill_at = Some(Instant::now() + supervision.grace);
        }
    }
    for reader in readers.into_iter().flatten() {
        reader.abort();
    }
    signal(pid, StopTarget::Group, libc::SIGKILL);

    let status = status.expect("the loop ends only after the child exited");
    let termination = match (status.code(), status.signal()) {
        (Some(code), _) => Termination::Exited(code),
        (None, Some(signal)) => Termination::Signalled(signal),
        (None, None) => Termination::Signalled(0),
    };
    Ok(Finished {
        pid,
        termination,
        stopped,
        timed_out,
        killed,
    })
}

/// Signals the child or its group. A child or group that is already gone is fine.
fn signal(pid: u32, target: StopTarget, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    let id = match target {
        // The negative id addresses the group the child leads (process_group(0) made its
        // pgid equal its pid).
        StopTarget::Group => -pid,
        StopTarget::Leader => pid,
        StopTarget::Caller => return,
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; `pid` is positive,
    // so `id` names exactly our child or its group, never "every process" (-1) or our own
    // group (0).
    let rc = unsafe { libc::kill(id, signal) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pid, signal, error = %err, "cannot signal the child process");
        }
    }
}

/// Process groups of running children, killed if this process exits abruptly (a second
/// Ctrl-C makes [`crate::Shutdown`] call `exit` at once): children live in their own process
/// groups, so nothing else would stop them.
mod live_groups {
    use super::*;

    static GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
    static REGISTER: Once = Once::new();

    extern "C" fn kill_all() {
        // try_lock: never block inside exit(3); a child being registered right now is the
        // only thing that can hold the lock.
        if let Ok(groups) = GROUPS.try_lock() {
            for pid in groups.iter() {
                signal(*pid, StopTarget::Group, libc::SIGKILL);
            }
        }
    }

    /// Registered while alive.
    pub(super) struct Registered(u32);

    impl Registered {
        pub(super) fn new(pid: u32) -> Self {
            REGISTER.call_once(|| {
                // SAFETY: registers a plain extern "C" function that takes no arguments and
                // unwinds never (it only locks without blocking and calls kill(2)).
                unsafe {
                    libc::atexit(kill_all);
                }
            });
            if let Ok(mut groups) = GROUPS.lock() {
                groups.insert(pid);
            }
            Registered(pid)
        }
    }

    impl Drop for Registered {
        fn drop(&mut self) {
            if let Ok(mut groups) = GROUPS.lock() {
                groups.remove(&self.0);
            }
        }
    }
}

async fn read_lines(
    pipe: impl AsyncRead + Unpin,
    stream: Stream,
    max_line_bytes: usize,
    tx: mpsc::Sender<Line>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        match read_line_bounded(&mut reader, &mut buf, max_line_bytes).await {
            Ok(Some(truncated)) => {
                let line = Line {
                    stream,
                    text: String::from_utf8_lossy(&buf).into_owned(),
                    truncated,
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(stream = stream.as_str(), error = %err, "cannot read the child's output");
                return;
            }
        }
    }
}

/// Reads one line into `buf` (without `\n` or `\r\n`), keeping at most `max` bytes of it and
/// discarding the rest. `None` at end of input; `Some(truncated)` otherwise.
async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut truncated = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            break;
        }
        read_any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let content = &available[..newline.unwrap_or(available.len())];
        let room = max.saturating_sub(buf.len());
        if content.len() > room {
            truncated = true;
        }
        buf.extend_from_slice(&content[..content.len().min(room)]);
        let used = newline.map_or(available.len(), |pos| pos + 1);
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if !read_any {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(truncated))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<(String, bool)> {
        // A tiny buffer makes lines span many fill_buf calls.
        let mut reader = BufReader::with_capacity(3, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(truncated) = read_line_bounded(&mut reader, &mut buf, max).await.unwrap() {
            out.push((String::from_utf8(buf.clone()).unwrap(), truncated));
        }
        out
    }

    #[tokio::test]
    async fn splits_lines_and_bounds_them() {
        let got = lines(b"one\r\ntwo\n\nthree-long-line\nlast", 5).await;
        assert_eq!(
            got,
            [
                ("one".to_string(), false),
                ("two".to_string(), false),
                (String::new(), false),
                ("three".to_string(), true),
                ("last".to_string(), false),
            ]
        );
        assert!(lines(b"", 5).await.is_empty());
    }

    fn sh(script: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("/bin/sh");
        command.args(["-c", script]);
        command
    }

    fn supervision(signal: Signal, target: StopTarget, grace: Duration) -> Supervision {
        Supervision {
            stop_signal: signal,
            stop_target: target,
            grace,
            timeout: None,
            max_line_bytes: 1024,
            kill_on_exit: true,
        }
    }

    fn lines_of(events: &[Event]) -> Vec<&Line> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Line(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn reports_exit_code_both_streams_and_caps_lines() {
        let s = supervision(Signal::Interrupt, StopTarget::Group, Duration::from_secs(5));
        let mut seen = Vec::new();
        let finished = run(
            sh("echo out1; echo err1 >&2; head -c 5000 /dev/zero | tr '\\0' x; echo; echo out2; exit 3"),
            &s,
            &CancellationToken::new(),
            |e| seen.push(e),
        )
        .await
        .unwrap();
        assert_eq!(finished.termination, Termination::Exited(3));
        assert!(!finished.stopped && !finished.killed && !finished.timed_out);
        let lines = lines_of(&seen);
        let stdout: Vec<&Line> = lines
            .iter()
            .copied()
            .filter(|l| l.stream == Stream::Stdout)
            .collect();
        assert_eq!(stdout.len(), 3, "{stdout:?}");
        assert_eq!(stdout[0].text, "out1");
        assert_eq!(stdout[1].text.len(), 1024);
        assert!(stdout[1].truncated);
        assert_eq!(stdout[2].text, "out2");
        assert!(
            lines
                .iter()
                .any(|l| l.stream == Stream::Stderr && l.text == "err1")
        );
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error_naming_it() {
        let s = supervision(Signal::Interrupt, StopTarget::Group, Duration::from_secs(1));
        let err = run(
            tokio::process::Command::new("/definitely/not/there"),
            &s,
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, SuperviseError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err}"
        );
        assert!(err.to_string().contains("/definitely/not/there"), "{err}");
    }

    #[tokio::test]
    async fn stop_sends_the_signal_and_waits_for_cleanup() {
        // Like dbt: on SIGINT, clean up (print), then exit 2.
        let s = supervision(Signal::Interrupt, StopTarget::Group, Duration::from_secs(5));
        let script =
            "trap 'echo cleaning up; exit 2' INT; echo ready; while :; do sleep 0.05; done";
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let mut seen = Vec::new();
        let finished = run(sh(script), &s, &cancel, |e| {
            match &e {
                Event::Line(l) if l.text == "ready" => trigger.cancel(),
                _ => {}
            }
            seen.push(e);
        })
        .await
        .unwrap();
        assert_eq!(finished.termination, Termination::Exited(2));
        assert!(finished.stopped && !finished.killed && !finished.timed_out);
        let texts: Vec<&str> = lines_of(&seen).iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["ready", "cleaning up"]);
        assert!(seen.iter().any(|e| matches!(
            e,
            Event::Stopping {
                reason: StopReason::Cancelled,
                ..
            }
        )));
    }

    #[tokio::test]
    async fn timeout_terminates_the_leader_then_kills_the_group() {
        // The leader ignores SIGTERM, like a task stuck in cleanup.
        let s = Supervision {
            timeout: Some(Duration::from_millis(200)),
            ..supervision(
                Signal::Terminate,
                StopTarget::Leader,
                Duration::from_millis(300),
            )
        };
        let script = "trap '' TERM; echo ready; while :; do sleep 0.05; done";
        let started = std::time::Instant::now();
        let mut seen = Vec::new();
        let finished = run(sh(script), &s, &CancellationToken::new(), |e| seen.push(e))
            .await
            .unwrap();
        assert_eq!(finished.termination, Termination::Signalled(libc::SIGKILL));
        assert!(finished.timed_out && finished.killed && !finished.stopped);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let order: Vec<&str> = seen
            .iter()
            .map(|e| match e {
                Event::Started { .. } => "started",
                Event::Line(_) => "line",
                Event::Stopping { .. } => "stopping",
                Event::Killing { .. } => "killing",
            })
            .collect();
        assert_eq!(order, ["started", "line", "stopping", "killing"]);
        // The group is gone: soon nothing answers signal 0 (killed members linger as zombies
        // until their new parent reaps them).
        let group_alive = || unsafe { libc::kill(-(finished.pid as libc::pid_t), 0) } == 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while group_alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!group_alive(), "the process group outlived the kill");
    }

    #[tokio::test]
    async fn caller_target_sends_nothing_itself() {
        // With StopTarget::Caller the stop is the caller's job: here it never comes, so the
        // child (which would die of SIGINT) lives until the grace period's SIGKILL.
        let s = supervision(
            Signal::Interrupt,
            StopTarget::Caller,
            Duration::from_millis(300),
        );
        let cancel = CancellationToken::new();
        cancel.cancel();
        let finished = run(sh("sleep 30"), &s, &cancel, |_| {}).await.unwrap();
        assert_eq!(finished.termination, Termination::Signalled(libc::SIGKILL));
        assert!(finished.stopped && finished.killed);
    }

    #[tokio::test]
    async fn grandchild_holding_the_pipe_does_not_hang_us() {
        let s = supervision(Signal::Interrupt, StopTarget::Group, Duration::from_secs(1));
        let started = std::time::Instant::now();
        let finished = run(
            sh("sleep 30 & echo bye"),
            &s,
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(finished.termination, Termination::Exited(0));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
