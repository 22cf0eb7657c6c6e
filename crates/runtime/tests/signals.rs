//! Real signals. Signals go to the whole test process, so only `sigterm_cancels_the_token`
//! signals this process; every other scenario re-runs this test binary as a child (filtered to
//! `child_scenario`, selected by an env var) and signals only that child.

use sluice_runtime::Shutdown;
use sluice_runtime::StopSignal;
use std::process::Command;
use std::time::Duration;

const SCENARIO_VAR: &str = "SLUICE_RUNTIME_SIGNAL_SCENARIO";

fn raise(signal: libc::c_int) {
    // SAFETY: kill(2) on our own pid with a signal tokio has a handler registered for.
    let rc = unsafe { libc::kill(libc::getpid(), signal) };
    assert_eq!(rc, 0, "kill failed");
}

async fn wait_cancelled(shutdown: &Shutdown) {
    tokio::time::timeout(Duration::from_secs(5), shutdown.token().cancelled())
        .await
        .expect("token not cancelled within 5 s of the signal");
}

#[tokio::test]
async fn sigterm_cancels_the_token() {
    let shutdown = Shutdown::install();
    assert_eq!(shutdown.signal(), None);
    raise(libc::SIGTERM);
    wait_cancelled(&shutdown).await;
    assert_eq!(shutdown.signal(), Some(StopSignal::Terminate));
    assert_eq!(shutdown.exit_code().map(|c| c.code()), Some(143));
}

/// Runs one scenario in a child process; returns its exit code and stdout.
fn run_child(scenario: &str) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_scenario",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO_VAR, scenario)
        .output()
        .expect("spawn child test process");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn sigint_cancels_the_token_in_a_child() {
    let (code, stdout) = run_child("sigint-once");
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("SCENARIO-OK signal=Some(Interrupt)"),
        "{stdout}"
    );
}

#[test]
fn second_sigterm_exits_143_at_once() {
    let (code, stdout) = run_child("sigterm-twice");
    assert_eq!(code, Some(143), "{stdout}");
    assert!(!stdout.contains("SCENARIO-UNREACHED"), "{stdout}");
}

#[test]
fn sigterm_then_sigint_exits_130_at_once() {
    let (code, stdout) = run_child("sigterm-then-sigint");
    assert_eq!(code, Some(130), "{stdout}");
}

/// Does nothing unless started by `run_child`.
#[test]
fn child_scenario() {
    let Ok(scenario) = std::env::var(SCENARIO_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let shutdown = Shutdown::install();
        match scenario.as_str() {
            "sigint-once" => {
                raise(libc::SIGINT);
                wait_cancelled(&shutdown).await;
                println!("SCENARIO-OK signal={:?}", shutdown.signal());
            }
            "sigterm-twice" | "sigterm-then-sigint" => {
                raise(libc::SIGTERM);
                wait_cancelled(&shutdown).await;
                assert_eq!(shutdown.signal(), Some(StopSignal::Terminate));
                raise(if scenario == "sigterm-twice" {
                    libc::SIGTERM
                } else {
                    libc::SIGINT
                });
                // The handler exits the process; give it time, then fail loudly if it did not.
                tokio::time::sleep(Duration::from_secs(5)).await;
                println!("SCENARIO-UNREACHED");
                std::process::exit(99);
            }
            other => panic!("unknown scenario {other}"),
        }
    });
}
