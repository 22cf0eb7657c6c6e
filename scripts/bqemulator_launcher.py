"""Starts bqemulator offline: the one place that knows its start-up quirks.

Used by scripts/stack and by crates/testkit. Arguments are bqemulator's own
(`start --rest-port N --grpc-port N --project P ...`); BQEMU_* env vars configure the rest
(BQEMU_GCS_LOCAL_ROOT: the directory `gs://bucket/object` is read from).

1. bqemulator 1.4 installs and loads DuckDB's `spatial` extension at start-up
   (DuckDBEngine._load_spatial) and refuses to start when that fails. DuckDB downloads the
   extension from extensions.duckdb.org, so offline (CI, these machines) it never starts.
   Sluice loads no GEOGRAPHY data: the loader is replaced with a no-op here, at runtime,
   instead of editing site-packages.
2. It also tries to download the `avro` extension at every start (best effort, but the failed
   download costs ~3 s offline and could hang where DNS does). Sluice loads no Avro:
   BQEMU_ENABLE_FORMAT_EXTENSIONS defaults to false (set it to true to override).
"""

import os
import sys

os.environ.setdefault("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")

from bqemulator.storage import engine  # noqa: E402  (after the env default on purpose)

if not hasattr(engine.DuckDBEngine, "_load_spatial"):
    # A bqemulator upgrade moved the hook: fail loudly rather than hang on a download.
    sys.exit(
        "bqemulator_launcher: DuckDBEngine._load_spatial not found; the pinned bqemulator "
        "changed, update scripts/bqemulator_launcher.py"
    )
engine.DuckDBEngine._load_spatial = lambda self: None

from bqemulator.cli import main  # noqa: E402  (after the patch on purpose)

sys.argv = ["bqemulator"] + sys.argv[1:]
sys.exit(main())
