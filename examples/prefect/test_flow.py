"""The Prefect flow against the fake Cloud Run Admin API (crates/trigger/examples/fake_run_api).

Run by test.sh, which builds the binaries and exports SLUICE_TRIGGER and FAKE_RUN_API.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness

import flow

HERE = Path(__file__).resolve().parent
SPEC = str(HERE / "jobs.toml")


def admin(endpoint: str, path: str, method: str = "GET") -> dict:
    req = urllib.request.Request(endpoint + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


@pytest.fixture(scope="session")
def fake_api():
    proc = subprocess.Popen([os.environ["FAKE_RUN_API"]], stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline().split()
        assert first[:1] == ["listening"], first
        endpoint = first[1]
        env = {
            "CLOUD_RUN_ENDPOINT": endpoint,
            "SLUICE_TRIGGER_POLL_INTERVAL": "20ms",
            "SLUICE_TRIGGER_POLL_MAX_INTERVAL": "100ms",
        }
        os.environ.update(env)
        deployed = subprocess.run(
            [os.environ["SLUICE_TRIGGER"], "deploy", SPEC], capture_output=True, text=True, check=False
        )
        assert deployed.returncode == 0, deployed.stderr
        yield endpoint
        # Every request the flow made must have honoured Google's discovery document.
        assert admin(endpoint, "/__fake/summary")["violations"] == []
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session", autouse=True)
def prefect_backend():
    # A throwaway Prefect API with a temporary database: nothing touches ~/.prefect.
    with prefect_test_harness():
        yield


def runs(endpoint: str) -> list[str]:
    return [path.rsplit("/", 1)[-1].removesuffix(":run") for path in admin(endpoint, "/__fake/summary")["runs"]]


def test_pipeline_runs_extract_load_dbt_in_order(fake_api):
    before = len(runs(fake_api))
    summary = flow.pipeline(spec=SPEC)
    assert list(summary) == ["extract", "load", "dbt"]
    assert all(s["state"] == "SUCCEEDED" for s in summary.values()), summary
    assert summary["extract"]["tasks"] == 3
    assert runs(fake_api)[before:] == ["extract", "load", "dbt"]


def test_a_failed_job_fails_the_flow_and_stops_it(fake_api):
    admin(fake_api, "/__fake/scenario?job=load&scenario=fail-task:1:3", method="POST")
    try:
        before = len(runs(fake_api))
        state = flow.pipeline(spec=SPEC, return_state=True)
        assert state.is_failed()
        with pytest.raises(flow.JobFailed) as failure:
            state.result()
        message = str(failure.value)
        assert "job load" in message and "FAILED" in message, message
        assert "task 1 FAILED (exit 3" in message, message
        assert "logs: https://" in message, message
        assert runs(fake_api)[before:] == ["extract", "load"], "dbt must not run after load failed"
    finally:
        admin(fake_api, "/__fake/scenario?job=load&scenario=succeed", method="POST")


def test_trigger_errors_are_reported_without_a_report(fake_api):
    state = flow.pipeline(spec=SPEC, jobs=["missing-job"], return_state=True)
    assert state.is_failed()
    with pytest.raises(flow.JobFailed) as failure:
        state.result()
    assert "missing-job" in str(failure.value)
    assert "not found" in str(failure.value)
