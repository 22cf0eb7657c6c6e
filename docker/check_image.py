"""Static checks of the image's build files, run by tests/image/run (not by the image).

    python docker/check_image.py dockerfile             Dockerfile structure and COPY sources
    python docker/check_image.py context LIST_OUT       docker context + gcloud upload; writes
                                                        the effective build context to LIST_OUT
    python docker/check_image.py cloudbuild             cloudbuild.yaml substitutions + step dry run
    python docker/check_image.py requirements           requirements.txt pins requirements.in

Needs PyYAML and `docker` (docker-py: its .dockerignore matcher is the reference implementation
of Docker's rules) from the tools venv, and `gcloud` for `gcloud meta list-files-for-upload`.
Each failure prints one line; exit 1 if any.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAILURES: list[str] = []


def fail(msg: str) -> None:
    FAILURES.append(msg)
    print(f"  FAIL: {msg}")


def check(cond: bool, msg: str) -> bool:
    if not cond:
        fail(msg)
    return cond


# ---------------------------------------------------------------------------------------------
# Dockerfile


class Instr:
    def __init__(self, lineno: int, cmd: str, rest: str):
        self.lineno, self.cmd, self.rest = lineno, cmd.upper(), rest

    def flags_and_args(self) -> tuple[dict[str, str], list[str]]:
        words = shlex.split(self.rest)
        flags = {}
        while words and words[0].startswith("--"):
            key, _, value = words.pop(0)[2:].partition("=")
            flags[key] = value
        return flags, words

    def __repr__(self) -> str:
        return f"line {self.lineno}: {self.cmd} {self.rest[:60]}"


def parse_dockerfile(text: str) -> list[Instr]:
    instrs, buf, start = [], "", 0
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        cmd, _, rest = buf.partition(" ")
        instrs.append(Instr(start, cmd, rest.strip()))
        buf = ""
    return instrs


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def docker_context(root: Path) -> set[str]:
    """The files (and directories) Docker sends from root, by docker-py's walk over the tree,
    which skips excluded directories the way BuildKit does (a per-path match does not)."""
    from docker.utils.build import exclude_paths

    return {p for p in exclude_paths(str(root), dockerignore_patterns())
            if p not in ("Dockerfile", ".dockerignore")}


def check_dockerfile() -> None:
    instrs = parse_dockerfile((ROOT / "Dockerfile").read_text())
    global_args: dict[str, str] = {}
    stages: list[tuple[str, str, list[Instr]]] = []  # (name, base, instructions)
    for ins in instrs:
        if ins.cmd == "FROM":
            words = ins.rest.split()
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append((name, base, []))
        elif not stages:
            if ins.cmd == "ARG":
                key, _, value = ins.rest.partition("=")
                global_args[key] = value
        else:
            stages[-1][2].append(ins)
    names = [s[0] for s in stages]
    check(names == ["chef", "planner", "builder", "runtime"],
          f"stages are {names}, expected chef, planner, builder, runtime")
    by_name = {s[0]: s for s in stages}

    def resolve(base: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), base)

    bases = {name: resolve(base) for name, base, _ in stages}
    for name in ("chef", "runtime"):
        if name in bases:
            check("bookworm" in bases[name],
                  f"stage {name} base {bases[name]} is not Debian bookworm (builder and runtime "
                  "must share a glibc for the static binaries' NSS lookups)")
    check(bases.get("planner") == "chef" and bases.get("builder") == "chef",
          "planner and builder must build FROM chef")

    text = (ROOT / "Dockerfile").read_text()
    check("RUSTFLAGS" not in text and "cargo build" not in text,
          "the Dockerfile must not set RUSTFLAGS or run cargo build: scripts/build-static owns the flags")

    context = docker_context(ROOT)
    seen_stages: list[str] = []
    for name, _, body in stages:
        for ins in body:
            if ins.cmd not in ("COPY", "ADD"):
                continue
            check(ins.cmd == "COPY", f"{ins}: use COPY, not ADD")
            flags, args = ins.flags_and_args()
            srcs = args[:-1]
            check(bool(srcs), f"{ins}: COPY without a source")
            if "from" in flags:
                check(flags["from"] in seen_stages, f"{ins}: --from={flags['from']} is not an earlier stage")
                continue
            for src in srcs:
                rel = os.path.normpath(src.lstrip("/"))
                if rel == ".":
                    continue
                check((ROOT / rel).exists(), f"{ins}: COPY source {src} does not exist")
                check(rel in context, f"{ins}: COPY source {src} is excluded by .dockerignore")
        seen_stages.append(name)

    builder = by_name.get("builder")
    if builder:
        runs = [i for i in builder[2] if i.cmd == "RUN"]
        cook = [i for i in runs if "scripts/build-static" in i.rest and "--cook" in i.rest]
        build = [i for i in runs if "scripts/build-static" in i.rest and "--out" in i.rest]
        check(len(cook) == 1, "builder: one RUN scripts/build-static --cook (the cached dependency layer)")
        check(len(build) == 1, "builder: one RUN scripts/build-static --out (the binaries)")
        # The profile is the build arg CARGO_PROFILE, default release (the shipped image);
        # tests/image/run builds the CI image with static-check.
        profile_arg = [i for i in builder[2] if i.cmd == "ARG" and i.rest.startswith("CARGO_PROFILE")]
        check(len(profile_arg) == 1 and profile_arg[0].rest == "CARGO_PROFILE=release",
              "builder: ARG CARGO_PROFILE=release expected (the shipped image builds with release)")
        check(all('--profile "${CARGO_PROFILE}"' in i.rest for i in cook + build),
              'builder: cook and build must both use --profile "${CARGO_PROFILE}" (same flags)')
        sha_arg = [i for i in builder[2] if i.cmd == "ARG" and i.rest.startswith("SLUICE_GIT_SHA")]
        if check(len(sha_arg) == 1 and cook and build, "builder: ARG SLUICE_GIT_SHA declared once"):
            check(cook[0].lineno < sha_arg[0].lineno < build[0].lineno,
                  "builder: ARG SLUICE_GIT_SHA must come after the cook (cache) and before the build")
    runtime = by_name.get("runtime")
    if runtime:
        body = runtime[2]
        entry = [i for i in body if i.cmd == "ENTRYPOINT"]
        try:
            entry_args = json.loads(entry[-1].rest) if entry else None
        except ValueError:
            entry_args = None  # shell form
        check(len(entry) == 1 and entry_args == ["sluice"],
              'runtime: ENTRYPOINT ["sluice"] (exec form) expected')
        users = [i for i in body if i.cmd == "USER"]
        check(bool(users) and users[-1].rest.split(":")[0] not in ("root", "0"),
              "runtime: must end as a non-root USER")
        envs = " ".join(i.rest for i in body if i.cmd == "ENV")
        check("DBT_PROJECT_DIR=" in envs, "runtime: ENV DBT_PROJECT_DIR expected")
        pip = [i for i in body if i.cmd == "RUN" and "pip install" in i.rest]
        check(len(pip) == 1 and "--require-hashes" in pip[0].rest and "--no-deps" in pip[0].rest
              and "-r " in pip[0].rest, "runtime: one pip install --require-hashes --no-deps -r ...")
        check(any("docker/requirements.txt" in i.rest for i in body if i.cmd == "COPY"),
              "runtime: COPY docker/requirements.txt expected")
        check(any("ca-certificates" in i.rest for i in body if i.cmd == "RUN"),
              "runtime: ca-certificates must be installed")
        bins = [i for i in body if i.cmd == "COPY" and "--from=builder" in i.rest]
        check(bool(bins) and "sluice-trigger" in bins[0].rest and "/out/sluice " in bins[0].rest + " ",
              "runtime: COPY --from=builder of sluice and sluice-trigger expected")


# ---------------------------------------------------------------------------------------------
# Build context: what gcloud uploads, then what Docker keeps of it

# Paths that must never reach Cloud Build or the Docker context.
JUNK = [
    "target/debug/sluice",
    "target/x86_64-unknown-linux-gnu/release/sluice",
    ".venv/bin/python",
    ".venv-dbt/bin/python",
    ".git/HEAD",
    ".stack/gcs/bucket/object",
    ".stack/bq/data.duckdb",
    ".sluice/state.json",
    "bench/out/result.json",
    "crates/cli/target/debug/x",
    "examples/open-data/dbt/target/manifest.json",
    "examples/open-data/dbt/logs/dbt.log",
    "examples/open-data/dbt/dbt_packages/pkg/dbt_project.yml",
    "dbt/target/run_results.json",
    "dbt/logs/dbt.log",
    "dbt/dbt_packages/pkg/dbt_project.yml",
    "crates/extract/__pycache__/x.pyc",
    "scripts/stack",
    "docs/image.md",
    "README.md",
]
# Paths the Docker build reads (besides every tracked file under crates/).
NEEDED = [
    "Cargo.toml",
    "Cargo.lock",
    "scripts/build-static",
    "docker/requirements.txt",
    "dbt/dbt_project.yml",
    "dbt/models/m.sql",
    "examples/open-data/dbt/dbt_project.yml",
    "examples/open-data/dbt/models/staging/s.sql",
]


def gcloud_upload_list(root: Path) -> list[str]:
    out = subprocess.run(
        ["gcloud", "meta", "list-files-for-upload", str(root)],
        check=True, capture_output=True, text=True,
    ).stdout
    return sorted(os.path.relpath(line, root) if os.path.isabs(line) else line
                  for line in out.splitlines() if line.strip())


def tracked(prefix: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "--", prefix], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


def check_context(list_out: str | None) -> None:
    # 1. Probes in a scratch tree with the real ignore files: junk out, needed in.
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name in (".gcloudignore", ".dockerignore", "Dockerfile", "cloudbuild.yaml"):
            shutil.copy(ROOT / name, t / name)
        for rel in JUNK + NEEDED:
            (t / rel).parent.mkdir(parents=True, exist_ok=True)
            (t / rel).write_text("probe\n")
        uploaded = set(gcloud_upload_list(t))
        in_docker = docker_context(t)
        for name in ("Dockerfile", ".dockerignore"):
            check(name in uploaded, f".gcloudignore: {name} is not uploaded (Cloud Build needs it)")
        for rel in NEEDED:
            check(rel in uploaded, f".gcloudignore excludes {rel}, which the Docker build needs")
            check(rel in in_docker, f".dockerignore excludes {rel}, which the Docker build needs")
        for rel in JUNK:
            check(rel not in uploaded, f".gcloudignore uploads {rel}")
            check(rel not in in_docker, f".dockerignore lets {rel} into the build context")

    # 2. The real tree: every tracked crate file is in the context, nothing from target/, .git...
    uploaded = gcloud_upload_list(ROOT)
    up = set(uploaded)
    needed = tracked("crates") + ["Cargo.toml", "Cargo.lock", "scripts/build-static",
                                  "docker/requirements.txt", "Dockerfile", ".dockerignore"]
    for rel in needed:
        check(rel in up, f"not uploaded by gcloud: {rel}")
    in_docker = docker_context(ROOT)
    context = [p for p in uploaded if p in in_docker]
    ctx = set(context)
    for rel in needed:
        if rel not in ("Dockerfile", ".dockerignore"):
            check(rel in ctx, f"not in the Docker build context: {rel}")
    bad = [p for p in uploaded if re.match(r"(target|\.venv[^/]*|\.git|\.stack|\.sluice|bench/out)/", p)]
    check(not bad, f"gcloud would upload junk: {bad[:5]}")
    size = sum((ROOT / p).stat().st_size for p in uploaded)
    print(f"  gcloud upload: {len(uploaded)} files, {size / 1024:.0f} KiB; "
          f"Docker context: {len(context)} files")
    if list_out:
        Path(list_out).write_text("".join(p + "\n" for p in context))


# ---------------------------------------------------------------------------------------------
# cloudbuild.yaml

BUILTINS = {"PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION", "TRIGGER_NAME", "COMMIT_SHA",
            "REVISION_ID", "SHORT_SHA", "REPO_NAME", "REPO_FULL_NAME", "BRANCH_NAME", "TAG_NAME",
            "REF_NAME", "TRIGGER_BUILD_CONFIG_PATH", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT"}
SUBST_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def substitute(text: str, values: dict[str, str]) -> str:
    """Cloud Build's substitution: $$ -> $, $X / ${X} -> value."""
    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return values[m.group(1) or m.group(2)]
    return SUBST_RE.sub(repl, text)


def check_cloudbuild() -> None:
    import yaml

    raw = (ROOT / "cloudbuild.yaml").read_text()
    doc = yaml.safe_load(raw)
    subs = doc.get("substitutions") or {}
    for key in ("_LOCATION", "_REPOSITORY", "_IMAGE"):
        check(bool(subs.get(key)), f"substitution {key} must be declared with a default")
    check("_TAG" in subs, "substitution _TAG must be declared")
    for key in subs:
        check(re.fullmatch(r"_[A-Z0-9_]+", key) is not None, f"substitution {key}: must match _[A-Z0-9_]+")
    # Every reference, in all fields (comments dropped: yaml.dump of the parsed document).
    used = set()
    body = yaml.safe_dump({k: v for k, v in doc.items() if k != "substitutions"})
    for m in SUBST_RE.finditer(body):
        name = m.group(1) or m.group(2)
        if name:
            used.add(name)
            check(name in subs or name in BUILTINS,
                  f"${name} is neither a declared substitution nor a Cloud Build built-in "
                  "(bash variables must be written $$name)")
    for key in subs:
        check(key in used, f"substitution {key} is declared but never used")
    opts = doc.get("options") or {}
    check("DOCKER_BUILDKIT=1" in (opts.get("env") or []), "options.env must set DOCKER_BUILDKIT=1")
    check(str(doc.get("timeout", "")).rstrip("s").isdigit() and int(str(doc["timeout"]).rstrip("s")) >= 1800,
          "timeout must be explicit and >= 1800s (a cold release build is long)")
    scripts = [s["args"][-1] for s in doc["steps"] if s.get("entrypoint") == "bash"]
    check(len(scripts) == len(doc["steps"]), "every step is a bash script (checked below)")
    joined = "\n".join(scripts)
    check("${_LOCATION}-docker.pkg.dev/$PROJECT_ID/${_REPOSITORY}/${_IMAGE}" in joined,
          "image path must be ${_LOCATION}-docker.pkg.dev/$PROJECT_ID/${_REPOSITORY}/${_IMAGE}")
    check("--cache-from" in joined and "BUILDKIT_INLINE_CACHE=1" in joined,
          "builds must use --cache-from with BuildKit inline cache")

    # Run the steps as Cloud Build would (after substitution) with a fake docker, for the tag
    # fallbacks: _TAG, else SHORT_SHA (trigger), else build-<BUILD_ID> (gcloud builds submit).
    cases = [
        ({"_TAG": "v1.2", "SHORT_SHA": "", "COMMIT_SHA": "", "_GIT_SHA": "abc123def456"}, "v1.2", "abc123def456"),
        ({"_TAG": "", "SHORT_SHA": "1a2b3c4", "COMMIT_SHA": "1a2b3c4d5e6f7", "_GIT_SHA": ""}, "1a2b3c4", "1a2b3c4d5e6f7"),
        ({"_TAG": "", "SHORT_SHA": "", "COMMIT_SHA": "", "_GIT_SHA": ""}, "build-0f1e2d3c", "unknown"),
    ]
    shellcheck = shutil.which("shellcheck")
    for overrides, want_tag, want_sha in cases:
        values = {k: "" for k in BUILTINS} | {k: str(v) for k, v in subs.items()}
        values |= {"PROJECT_ID": "proj-1", "BUILD_ID": "0f1e2d3c-aaaa-bbbb-cccc-000000000000"}
        values |= overrides
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            (t / "bin").mkdir()
            log = t / "docker.log"
            (t / "bin" / "docker").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
            (t / "bin" / "docker").chmod(0o755)
            env = dict(os.environ, PATH=f"{t / 'bin'}:{os.environ['PATH']}")
            for i, script in enumerate(scripts):
                rendered = substitute(script, values).replace("/workspace/", f"{t}/")
                (t / f"step{i}.sh").write_text("#!/usr/bin/env bash\n" + rendered)
                if shellcheck and i == 0 and overrides is cases[0][0]:
                    sc = subprocess.run([shellcheck, "-s", "bash", str(t / f"step{i}.sh")],
                                        capture_output=True, text=True)
                    check(sc.returncode == 0, f"step {i} script fails shellcheck:\n{sc.stdout}")
                r = subprocess.run(["bash", str(t / f"step{i}.sh")], cwd=t, env=env,
                                   capture_output=True, text=True)
                check(r.returncode == 0, f"step {i} failed: {r.stderr.strip()}")
            calls = log.read_text().splitlines() if log.exists() else []
            image = f"{values['_LOCATION']}-docker.pkg.dev/proj-1/{values['_REPOSITORY']}/{values['_IMAGE']}"
            want = [
                f"push {image}:{want_tag}",
                f"push {image}:latest",
                f"push {image}:cache-builder",
            ]
            for w in want:
                check(w in calls, f"case {overrides}: expected `docker {w}`; got {calls}")
            builds = [c for c in calls if c.startswith("build ")]
            check(len(builds) == 2 and all(f"SLUICE_GIT_SHA={want_sha}" in b for b in builds),
                  f"case {overrides}: two builds with SLUICE_GIT_SHA={want_sha}; got {builds}")
            check(any(f"--tag {image}:{want_tag} --tag {image}:latest" in b for b in builds),
                  f"case {overrides}: final build must tag :{want_tag} and :latest")
            check(any(f"--cache-from {image}:latest" in b for b in builds),
                  f"case {overrides}: final build must use --cache-from :latest")


# ---------------------------------------------------------------------------------------------
# requirements


def check_requirements() -> None:
    lines = (ROOT / "docker/requirements.txt").read_text().splitlines()
    pins = {}
    for ln in lines:
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", ln)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    hashes = sum(1 for ln in lines if "--hash=sha256:" in ln)
    check(hashes >= len(pins) > 0, "every pin needs --hash lines")
    for ln in (ROOT / "docker/requirements.in").read_text().splitlines():
        ln = ln.split("#")[0].strip()
        if not ln:
            continue
        m = re.match(r"^([A-Za-z0-9_.-]+)\s*~=\s*(\d+)\.(\d+)\.\d+$", ln)
        if not check(m is not None, f"requirements.in: unexpected line {ln!r}"):
            continue
        name, major, minor = m.group(1).lower(), m.group(2), m.group(3)
        got = pins.get(name)
        check(got is not None and got.startswith(f"{major}.{minor}."),
              f"requirements.txt pins {name}=={got}, requirements.in wants ~={major}.{minor}: "
              "run docker/compile-requirements")
    print(f"  {len(pins)} packages pinned, {hashes} hashes")
    # The local stack's dbt (scripts/requirements-stack.txt, used by the emulator tests) must be
    # the image's dbt, or the tests exercise a dbt that does not ship.
    stack = ROOT / "scripts/requirements-stack.txt"
    if stack.exists():
        stack_pins = {}
        for ln in stack.read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_.-]+)==([^ \\;]+)", ln)
            if m:
                stack_pins[m.group(1).lower().replace("_", "-")] = m.group(2)
        for name in sorted(p for p in pins if p.startswith("dbt-")):
            if name in stack_pins:
                check(stack_pins[name] == pins[name],
                      f"{name}: image pins {pins[name]}, scripts/requirements-stack.txt {stack_pins[name]}")
        print("  dbt pins match scripts/requirements-stack.txt")


def main() -> int:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "dockerfile":
        check_dockerfile()
    elif what == "context":
        check_context(sys.argv[2] if len(sys.argv) > 2 else None)
    elif what == "cloudbuild":
        check_cloudbuild()
    elif what == "requirements":
        check_requirements()
    else:
        print(__doc__)
        return 2
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
