"""A Prefect flow that runs a Sluice pipeline on Cloud Run: extract -> load -> dbt.

Each step is one `sluice-trigger run JOB --wait --output json` call. sluice-trigger starts the
Cloud Run execution exactly once, follows it to the end, and prints one JSON report on stdout
(schema `sluice-trigger/execution/v1`, see docs/trigger.md); its logs go to stderr and are
forwarded to Prefect's logger here. A non-zero exit fails the Prefect task, which fails the
flow before the next step starts.

Cloud Run already retries failed *tasks* (maxRetries in jobs.toml), so the Prefect tasks here
do not retry whole executions by default.

    python flow.py --spec ../open-data/jobs.toml            # project/region from the spec
    SLUICE_TRIGGER=/path/to/sluice-trigger python flow.py --project p --region europe-west1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from typing import Any

from prefect import flow, get_run_logger, task

DEFAULT_JOBS = ("extract", "load", "dbt")


class JobFailed(RuntimeError):
    """A Cloud Run execution did not succeed (or sluice-trigger could not run it)."""


def trigger_command(job: str, spec: str | None, project: str | None, region: str | None) -> list[str]:
    cmd = [os.environ.get("SLUICE_TRIGGER", "sluice-trigger"), "run", job, "--wait", "--output", "json"]
    if spec:
        cmd += ["--spec", spec]
    if project:
        cmd += ["--project", project]
    if region:
        cmd += ["--region", region]
    return cmd


def describe_failure(job: str, code: int, report: dict[str, Any] | None, stderr_tail: list[str]) -> str:
    if report is None:
        detail = "; ".join(stderr_tail[-3:]) or "no output"
        return f"job {job}: sluice-trigger exited {code} without a report: {detail}"
    failed = [
        f"task {t['index']} {t['state']} (exit {t.get('exit_code')}, {t.get('attempts')} attempt(s))"
        for t in report.get("tasks", [])
        if t.get("state") != "SUCCEEDED"
    ]
    parts = [f"job {job}: execution {report.get('execution_id')} {report.get('state')} (exit {code})"]
    if report.get("message"):
        parts.append(report["message"])
    if failed:
        parts.append("; ".join(failed[:10]) + (f"; and {len(failed) - 10} more" if len(failed) > 10 else ""))
    if report.get("log_uri"):
        parts.append(f"logs: {report['log_uri']}")
    return " — ".join(parts)


@task(name="sluice-trigger run", task_run_name="run {job}", retries=0)
def run_job(job: str, spec: str | None = None, project: str | None = None, region: str | None = None) -> dict[str, Any]:
    """Runs one Cloud Run job to completion and returns its execution report."""
    logger = get_run_logger()
    cmd = trigger_command(job, spec, project, region)
    logger.info("running %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout_chunks: list[str] = []
    # Read stdout on a thread so a large report can never block the process while we
    # stream its logs from stderr.
    reader = threading.Thread(target=lambda: stdout_chunks.append(proc.stdout.read()), daemon=True)
    reader.start()
    stderr_tail: list[str] = []
    for line in proc.stderr:
        line = line.rstrip("\n")
        stderr_tail = (stderr_tail + [line])[-20:]
        logger.info("%s", line)
    code = proc.wait()
    reader.join()
    out = "".join(stdout_chunks).strip()
    try:
        report = json.loads(out) if out else None
    except json.JSONDecodeError:
        report = None
    if code != 0 or report is None or report.get("state") != "SUCCEEDED":
        raise JobFailed(describe_failure(job, code, report, stderr_tail))
    logger.info(
        "job %s: execution %s succeeded in %.1fs (%d task(s), %d retried)",
        job,
        report["execution_id"],
        report.get("duration_seconds") or 0.0,
        report["task_count"],
        report["counts"]["retried"],
    )
    return report


@flow(name="sluice-pipeline")
def pipeline(
    spec: str | None = None,
    project: str | None = None,
    region: str | None = None,
    jobs: list[str] = list(DEFAULT_JOBS),
) -> dict[str, dict[str, Any]]:
    """Runs `jobs` in order, each only after the previous one succeeded."""
    summary: dict[str, dict[str, Any]] = {}
    for job in jobs:
        report = run_job(job, spec=spec, project=project, region=region)
        summary[job] = {
            "execution": report["execution"],
            "state": report["state"],
            "duration_seconds": report.get("duration_seconds"),
            "tasks": report["task_count"],
            "retried": report["counts"]["retried"],
        }
    return summary


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", help="jobs.toml to take project/region from")
    p.add_argument("--project")
    p.add_argument("--region")
    p.add_argument("--jobs", nargs="+", default=list(DEFAULT_JOBS))
    a = p.parse_args(argv)
    summary = pipeline(spec=a.spec, project=a.project, region=a.region, jobs=a.jobs)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
