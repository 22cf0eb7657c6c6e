"""Starts bqemulator without its DuckDB spatial extension.

bqemulator loads DuckDB's `spatial` extension at start-up, which DuckDB downloads from the
internet; offline (CI, these machines) that fails and the emulator never starts. Sluice loads
no GEOGRAPHY data, so the launcher replaces the loader with a no-op instead of editing
site-packages. Arguments are bqemulator's own (`start --rest-port N ...`).
"""

import sys

from bqemulator.storage import engine

engine.DuckDBEngine._load_spatial = lambda self: None

from bqemulator.cli import main  # noqa: E402  (after the patch on purpose)

sys.argv = ["bqemulator"] + sys.argv[1:]
sys.exit(main())
