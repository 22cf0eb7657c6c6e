//! Running one dbt process: output line by line (bounded), stop signals forwarded, exit status.
//!
//! Stopping: dbt handles SIGINT (Python's KeyboardInterrupt) by cancelling the BigQuery jobs it
//! started and writing what it can, then exits 2. SIGTERM gets Python's default: immediate
//! death, leaving queries running (and billing) in BigQuery. So whichever signal we received,
//! dbt gets SIGINT, then `stop_timeout` to finish, then SIGKILL. dbt runs in its own process
//! group: a terminal's Ctrl-C reaches only us (dbt would otherwise see SIGINT twice, and its
//! second-SIGINT path skips the cleanup), and the final SIGKILL reaches anything dbt started.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::DbtError;
use crate::env::ChildEnv;

/// After dbt exits, how long to keep reading output that something it started may still hold
/// open, before giving up on it.
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

/// One line of dbt output, without its line ending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub stream: Stream,
    pub text: String,
    /// The line was longer than the limit and was cut.
    pub truncated: bool,
}

/// How dbt ended.
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

/// What happened to one dbt process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub pid: u32,
    pub termination: Termination,
    /// A stop was requested (the cancellation token fired) while dbt ran.
    pub stopped: bool,
    /// dbt outlived the stop timeout and was killed.
    pub killed: bool,
}

/// One dbt command line.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: &'a ChildEnv,
    pub stop_timeout: Duration,
    pub max_line_bytes: usize,
}

/// Runs the invocation to its end, handing every output line to `on_line` in arrival order.
/// When `cancel` fires, dbt gets SIGINT and, after `stop_timeout`, SIGKILL.
pub async fn run(
    invocation: &Invocation<'_>,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(Line),
) -> Result<Finished, DbtError> {
    let mut command = tokio::process::Command::new(&invocation.program);
    command
        .args(invocation.args.iter().map(OsString::from))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        // Any early return or panic below must not leave dbt running.
        .kill_on_drop(true);
    invocation.env.apply(&mut command);
    let mut child = command.spawn().map_err(|source| DbtError::Spawn {
        program: invocation.program.display().to_string(),
        source,
    })?;
    let pid = child.id().expect("a just-spawned child has a pid");

    // Two readers feed one channel so `on_line` sees lines in one sequence. The small bound
    // pushes back on dbt (its pipe fills, it blocks) rather than buffering without limit.
    let (tx, mut rx) = mpsc::channel::<Line>(64);
    let max = invocation.max_line_bytes;
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

    let mut status = None;
    let mut pipes_open = true;
    let mut stopped = false;
    let mut killed = false;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);

    loop {
        if status.is_some() && !pipes_open {
            break;
        }
        tokio::select! {
            line = rx.recv(), if pipes_open => match line {
                Some(line) => on_line(line),
                None => pipes_open = false,
            },
            result = child.wait(), if status.is_none() => {
                let exit = result.map_err(|source| DbtError::Supervise { pid, source })?;
                status = Some(exit);
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            () = cancel.cancelled(), if !stopped && status.is_none() => {
                stopped = true;
                tracing::warn!(
                    pid,
                    stop_timeout_s = invocation.stop_timeout.as_secs_f64(),
                    "stop requested: sending SIGINT to dbt so it cancels its BigQuery jobs"
                );
                signal_group(pid, libc::SIGINT);
                kill_at = Some(Instant::now() + invocation.stop_timeout);
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && !killed && status.is_none() => {
                killed = true;
                tracing::error!(
                    pid,
                    stop_timeout_s = invocation.stop_timeout.as_secs_f64(),
                    "dbt did not stop within the stop timeout; killing it (SIGKILL)"
                );
                signal_group(pid, libc::SIGKILL);
            }
            () = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() && pipes_open => {
                tracing::warn!(pid, "dbt exited but its output stayed open; no longer reading it");
                break;
            }
        }
    }
    for reader in readers.into_iter().flatten() {
        reader.abort();
    }
    // Whatever dbt started and left behind dies with it.
    signal_group(pid, libc::SIGKILL);

    let status = status.expect("the loop ends only after dbt exited");
    let termination = match (status.code(), status.signal()) {
        (Some(code), _) => Termination::Exited(code),
        (None, Some(signal)) => Termination::Signalled(signal),
        (None, None) => Termination::Signalled(0),
    };
    Ok(Finished {
        pid,
        termination,
        stopped,
        killed,
    })
}

/// Signals dbt's whole process group. A group that is already gone is fine.
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The negative pid
    // addresses the group dbt leads (process_group(0) made its pgid equal its pid).
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pid, signal, error = %err, "cannot signal dbt's process group");
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
                tracing::warn!(stream = stream.as_str(), error = %err, "cannot read dbt output");
                return;
            }
        }
    }
}

/// Reads one line into `buf` (without `\n` or `\r\n`), keeping at most `max` bytes of it and
/// discarding the rest. `None` at end of input; `Some(truncated)` otherwise.
pub async fn read_line_bounded<R: AsyncBufRead + Unpin>(
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

    fn invocation<'a>(env: &'a ChildEnv, script: &str, stop_timeout: Duration) -> Invocation<'a> {
        Invocation {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env,
            stop_timeout,
            max_line_bytes: 1024,
        }
    }

    #[tokio::test]
    async fn reports_exit_code_and_both_streams() {
        let env = ChildEnv::default();
        let inv = invocation(
            &env,
            "echo out1; echo err1 >&2; echo out2; exit 3",
            Duration::from_secs(5),
        );
        let mut seen = Vec::new();
        let finished = run(&inv, &CancellationToken::new(), |l| seen.push(l))
            .await
            .unwrap();
        assert_eq!(finished.termination, Termination::Exited(3));
        assert!(!finished.stopped && !finished.killed);
        let stdout: Vec<&str> = seen
            .iter()
            .filter(|l| l.stream == Stream::Stdout)
            .map(|l| l.text.as_str())
            .collect();
        assert_eq!(stdout, ["out1", "out2"]);
        assert!(
            seen.iter()
                .any(|l| l.stream == Stream::Stderr && l.text == "err1")
        );
    }

    #[tokio::test]
    async fn missing_program_is_a_spawn_error() {
        let env = ChildEnv::default();
        let mut inv = invocation(&env, "", Duration::from_secs(1));
        inv.program = "/definitely/not/dbt".into();
        let err = run(&inv, &CancellationToken::new(), |_| {})
            .await
            .unwrap_err();
        assert!(err.is_usage(), "{err}");
        assert!(err.to_string().contains("/definitely/not/dbt"), "{err}");
    }

    #[tokio::test]
    async fn stop_sends_sigint_and_waits_for_cleanup() {
        // Like dbt: on SIGINT, clean up (print), then exit 2.
        let env = ChildEnv::default();
        let script =
            "trap 'echo cleaning up; exit 2' INT; echo ready; while :; do sleep 0.05; done";
        let inv = invocation(&env, script, Duration::from_secs(5));
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let mut seen = Vec::new();
        let finished = run(&inv, &cancel, |l| {
            if l.text == "ready" {
                trigger.cancel();
            }
            seen.push(l.text);
        })
        .await
        .unwrap();
        assert_eq!(finished.termination, Termination::Exited(2));
        assert!(finished.stopped && !finished.killed);
        assert_eq!(seen, ["ready", "cleaning up"]);
    }

    #[tokio::test]
    async fn stop_kills_after_the_timeout() {
        let env = ChildEnv::default();
        // Ignores SIGINT, like a dbt stuck waiting on a query cancel that never returns.
        let script = "trap '' INT; echo ready; while :; do sleep 0.05; done";
        let inv = invocation(&env, script, Duration::from_millis(300));
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let started = std::time::Instant::now();
        let finished = run(&inv, &cancel, |l| {
            if l.text == "ready" {
                trigger.cancel();
            }
        })
        .await
        .unwrap();
        assert_eq!(finished.termination, Termination::Signalled(libc::SIGKILL));
        assert!(finished.stopped && finished.killed);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // The group is gone: soon nothing answers signal 0 (killed members linger as zombies
        // until their new parent reaps them).
        let group_alive = || unsafe { libc::kill(-(finished.pid as libc::pid_t), 0) } == 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while group_alive() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!group_alive(), "dbt's process group outlived the kill");
    }

    #[tokio::test]
    async fn grandchild_holding_the_pipe_does_not_hang_us() {
        let env = ChildEnv::default();
        let inv = invocation(&env, "sleep 30 & echo bye", Duration::from_secs(1));
        let started = std::time::Instant::now();
        let finished = run(&inv, &CancellationToken::new(), |_| {}).await.unwrap();
        assert_eq!(finished.termination, Termination::Exited(0));
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
}
