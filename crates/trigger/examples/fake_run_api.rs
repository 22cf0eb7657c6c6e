//! The fake Cloud Run Admin API v2 of the tests (`tests/support`) as a standalone server, for
//! tests outside Rust (`examples/prefect/test.sh`).
//!
//! ```sh
//! cargo run -p sluice-trigger --example fake_run_api -- [--port N] [--scenario JOB=SCENARIO]...
//! ```
//!
//! Prints `listening http://127.0.0.1:PORT` on its first stdout line, then serves until
//! SIGTERM/SIGINT. Scenarios: `succeed[:POLLS]`, `fail-task:INDEX:EXIT[:POLLS]`,
//! `retry-task:INDEX:FAILURES[:POLLS]`, `hang`; they can also be set while running with
//! `POST /__fake/scenario?job=JOB&scenario=SCENARIO`. `GET /__fake/summary` lists jobs,
//! executions, `jobs.run` calls and discovery-document violations (which must stay empty).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use support::fake::{FakeCloudRun, Scenario};

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut port = 0u16;
    let mut scenarios = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .ok_or("--port needs a number")?;
            }
            "--scenario" => {
                let v = args.next().ok_or("--scenario needs JOB=SCENARIO")?;
                let (job, s) = v.split_once('=').ok_or("--scenario needs JOB=SCENARIO")?;
                scenarios.push((job.to_string(), Scenario::parse(s)?));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let fake = FakeCloudRun::start_on(&format!("127.0.0.1:{port}")).await;
    for (job, s) in scenarios {
        fake.set_scenario(&job, s);
    }
    println!("listening {}", fake.endpoint());
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let v = fake.violations();
    if !v.is_empty() {
        eprintln!(
            "fake_run_api: requests broke run.v2.json:\n{}",
            v.join("\n")
        );
    }
    Ok(())
}
