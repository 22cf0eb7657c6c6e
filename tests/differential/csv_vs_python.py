#!/usr/bin/env python3
"""Differential test: Sluice's CSV -> Parquet against Python's csv module.

Generates random valid CSV with Python's `csv` writer (quotes, embedded LF and CRLF, delimiters
inside values, unicode, empty fields, leading-zero codes, integers beyond INT64, floats a double
cannot hold, booleans, dates, timestamps), converts each file with the real `sluice extract
--format parquet` into a local directory, reads the Parquet back with pyarrow and checks that it
holds exactly what Python's csv reader sees, after the documented typing:

- every row arrives, in order, with the header's column names, and the task exits 0 with no
  rejected rows;
- NULL markers ("", NA, NULL, the defaults) are NULL;
- STRING values equal the text; INT64 values equal int(text) and render back to the text;
  FLOAT64 values equal the decimal number written (Decimal(text) == Decimal(repr(value)));
  BOOL values are the word written; DATE values render to the text; TIMESTAMP values are the
  instant written (UTC, up to microseconds).

Run with the worktree's venv (it has pyarrow):
    cargo build -p sluice-cli
    .venv/bin/python tests/differential/csv_vs_python.py [--seed N] [--seconds S] [--sluice PATH]
Prints `N passed, 0 failed` and exits 0, or prints the seed, the case and the mismatch and
exits 1 (the failing CSV is kept and its path printed).
"""

import argparse
import csv
import datetime as dt
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from decimal import Decimal, InvalidOperation

import pyarrow as pa
import pyarrow.parquet as pq

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NULLS = {"", "NA", "NULL"}
INT64 = (-(2**63), 2**63 - 1)


def find_sluice(explicit):
    candidates = [explicit, os.environ.get("SLUICE_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    candidates += [os.path.join(target, p, "sluice") for p in ("debug", "release")]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    sys.exit("sluice binary not found: run `cargo build -p sluice-cli` or pass --sluice PATH")


# ---- random values -------------------------------------------------------------------------

WORDS = ["alpha", "Zürich", "naïve", "東京", "emoji 😀", "tab\there", "semi;colon", "pipe|bar",
         "comma, inside", 'quote "q"', "line\nbreak", "crlf\r\nbreak", "trailing ", " leading",
         "NA", "null", "-", "0x1F", "1,5", "#hash", "\\back\\slash", "ünïcödé ✓"]


def text_value(r):
    k = r.random()
    if k < 0.1:
        return ""
    if k < 0.6:
        return r.choice(WORDS)
    n = r.randint(1, 12)
    alphabet = "abcXYZ019 ,;|\t\"'\n\r\\é€😀"
    return "".join(r.choice(alphabet) for _ in range(n))


def code_value(r):
    # ZIP / FIPS style: fixed width with leading zeros.
    return str(r.randint(0, 99999)).zfill(5)


def int_value(r):
    k = r.random()
    if k < 0.05:
        return str(r.choice([2**63 - 1, -(2**63), 0, -1]))
    if k < 0.1:
        return str(r.randint(2**63, 2**70) * r.choice([1, -1]))  # beyond INT64
    return str(r.randint(-10**12, 10**12))


def float_value(r):
    k = r.random()
    x = r.uniform(-1e6, 1e6)
    if k < 0.3:
        return repr(x)
    if k < 0.5:
        return f"{x:.2f}"
    if k < 0.6:
        return f"{x:e}"
    if k < 0.7:
        return r.choice(["0.1", "2.50", "-0.0", "1e-5", "6.02e23", ".5", "5.", "1E+3"])
    if k < 0.75:
        return r.choice(["0.30000000000000001", "1e400", "NaN", "inf", "-Infinity",
                         "9007199254740993.0", "+1.5", "01.5"])  # lossy or ambiguous: text
    return str(r.randint(-1000, 1000))


def bool_value(r):
    if r.random() < 0.05:
        return r.choice(["1", "0", "yes", "t"])  # not booleans: the column stays text
    return r.choice(["true", "false", "TRUE", "FALSE", "True", "False"])


def date_value(r):
    d = dt.date(1900, 1, 1) + dt.timedelta(days=r.randint(0, 80000))
    return d.isoformat()


def timestamp_value(r):
    d = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=r.randint(0, 2_000_000_000))
    text = d.strftime("%Y-%m-%d") + r.choice(["T", " "]) + d.strftime("%H:%M:%S")
    k = r.random()
    if k < 0.3:
        text += "." + str(r.randint(0, 999999)).zfill(r.choice([3, 6]))[:6]
    text += r.choice(["", "", "Z", "+00:00"])
    if r.random() < 0.03:
        text += "+02:00" if not text.endswith(("Z", "+00:00")) else ""  # offset: text
    return text


KINDS = [text_value, code_value, int_value, float_value, bool_value, date_value, timestamp_value]


def random_table(r):
    ncols = r.randint(1, 6)
    kinds = [r.choice(KINDS) for _ in range(ncols)]
    header = [f"c{i}_{kinds[i].__name__.split('_')[0]}" for i in range(ncols)]
    rows = []
    for _ in range(r.choice([0, 1, 2, 5, 20, 100, 300])):
        row = []
        for kind in kinds:
            k = r.random()
            if k < 0.08:
                row.append("")
            elif k < 0.1:
                row.append(text_value(r))  # a stray value of another kind
            else:
                row.append(kind(r))
        rows.append(row)
    return header, rows


def write_csv(r, header, rows):
    delimiter = r.choice([",", ",", ";", "\t", "|"])
    terminator = r.choice(["\r\n", "\n"])
    quoting = r.choice([csv.QUOTE_MINIMAL, csv.QUOTE_MINIMAL, csv.QUOTE_ALL])

    def write(quoting):
        buf = io.StringIO(newline="")
        w = csv.writer(buf, delimiter=delimiter, lineterminator=terminator, quoting=quoting)
        w.writerow(header)
        w.writerows(rows)
        return buf.getvalue()

    text = write(quoting)
    # Python's writer leaves a lone CR unquoted when the terminator is LF, which its own
    # reader (and every other) splits: not valid CSV, so quote everything then.
    if list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)) != [header] + rows:
        text = write(csv.QUOTE_ALL)
    data = text.encode("utf-8")
    if r.random() < 0.1:
        data = b"\xef\xbb\xbf" + data
    return delimiter, data


# ---- checking -------------------------------------------------------------------------------

TS = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|\+00:00)?$")


def parse_ts(text):
    m = TS.match(text)
    if not m:
        return None
    date, h, mi, s, frac, _ = m.groups()
    frac = (frac or "").ljust(6, "0")
    if len(frac) > 6 and set(frac[6:]) != {"0"}:
        return None
    base = dt.datetime.fromisoformat(f"{date}T{h}:{mi}:{s}").replace(tzinfo=dt.timezone.utc)
    return base + dt.timedelta(microseconds=int(frac[:6]))


def check_value(arrow_type, text, value):
    """None when `value` (from Parquet) is exactly what `text` says, else why not."""
    if text in NULLS:
        return None if value is None else f"NULL marker {text!r} came out as {value!r}"
    if value is None:
        return f"{text!r} came out NULL"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        ok = value == text
    elif pa.types.is_int64(arrow_type):
        ok = str(value) == text and int(text) == value
    elif pa.types.is_float64(arrow_type):
        try:
            ok = Decimal(text) == Decimal(repr(value)) and float(text) == value
        except InvalidOperation:
            ok = False
    elif pa.types.is_boolean(arrow_type):
        ok = text in ("true", "True", "TRUE", "false", "False", "FALSE") and (
            text.lower() == "true") == value
    elif pa.types.is_date32(arrow_type):
        ok = value.isoformat() == text
    elif pa.types.is_timestamp(arrow_type):
        ok = parse_ts(text) == value
    else:
        return f"unexpected Arrow type {arrow_type}"
    return None if ok else f"{text!r} came out as {value!r} ({arrow_type})"


TYPES_SEEN = {}


def run_case(sluice, r, case, work):
    header, rows = random_table(r)
    delimiter, data = write_csv(r, header, rows)
    src = os.path.join(work, f"case{case}.csv")
    with open(src, "wb") as f:
        f.write(data)
    # What Python's reader sees is the truth (BOM removed as utf-8-sig does).
    with open(src, newline="", encoding="utf-8-sig") as f:
        seen = list(csv.reader(f, delimiter=delimiter))
    assert seen[0] == header and seen[1:] == rows, "Python's own round trip"
    dest = os.path.join(work, f"out{case}")
    cmd = [sluice, "extract", "--url", src, "--dest", dest, "--format", "parquet",
           "--dataset", "d", "--delimiter", delimiter, "--progress", "off"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        return src, f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    manifest = json.load(open(os.path.join(dest, "_manifests", "task-00000.json")))
    obj = manifest["items"][0]["objects"][0]
    if obj["rejected_rows"]:
        return src, f"{obj['rejected_rows']} rows rejected"
    table = pq.read_table(os.path.join(dest, obj["name"]))
    if table.column_names != header:
        return src, f"columns {table.column_names} != header {header}"
    if table.num_rows != len(rows):
        return src, f"{table.num_rows} rows in Parquet, Python read {len(rows)}"
    for c, name in enumerate(header):
        column = table.column(c)
        TYPES_SEEN[str(column.type)] = TYPES_SEEN.get(str(column.type), 0) + 1
        values = column.to_pylist()
        for i, (text, value) in enumerate(zip((row[c] for row in rows), values)):
            problem = check_value(column.type, text, value)
            if problem:
                return src, f"row {i + 1} column {name}: {problem}"
    shutil.rmtree(dest)
    os.remove(src)
    return None, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--max-cases", type=int, default=100000)
    ap.add_argument("--sluice", default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    sluice = find_sluice(args.sluice)
    r = random.Random(seed)
    work = tempfile.mkdtemp(prefix="sluice-differential-")
    deadline = time.monotonic() + args.seconds
    passed = 0
    print(f"differential: seed {seed}, {args.seconds:g} s, {sluice}", flush=True)
    while time.monotonic() < deadline and passed < args.max_cases:
        case = passed
        src, problem = run_case(sluice, r, case, work)
        if problem:
            print(f"FAILED case {case} (seed {seed}): {problem}")
            print(f"input kept at {src}")
            print(f"reproduce: {sys.executable} {sys.argv[0]} --seed {seed} --max-cases {case + 1}")
            print(f"{passed} passed, 1 failed")
            sys.exit(1)
        passed += 1
    shutil.rmtree(work, ignore_errors=True)
    print("column types checked: " + ", ".join(f"{t} {n}" for t, n in sorted(TYPES_SEEN.items())))
    print(f"{passed} passed, 0 failed")


if __name__ == "__main__":
    main()
