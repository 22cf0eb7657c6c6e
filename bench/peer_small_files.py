"""Many small CSVs: the generator and the per-file CSV -> Parquet peers of bench/small_files_cpu.sh.

  gen DIR N            writes N taxi-trip-like CSVs of about 2 KB (the columns and value forms of
                       bench/gen_csv.py; values vary per file, deterministic) as DIR/f000000.csv...
                       and DIR/list.txt (their paths, one a line)
  pyarrow LIST OUTDIR  per file: pyarrow.csv.read_csv + pyarrow.parquet.write_table (zstd)
  duckdb LIST OUTDIR   per file: COPY (SELECT * FROM read_csv(...)) TO ... (FORMAT parquet,
                       COMPRESSION zstd), one connection for the whole loop

Both peers read from local disk (page cache) and write to local disk, in one process for the
whole loop, as sluice runs one task for all files: their best case.
"""
import os
import random
import sys

VENDORS = ["CMT", "VTS", "DDS", "CURB"]
PAYMENTS = ["card", "cash", "no charge", "dispute"]
ZONES = ["Upper East Side", "JFK Airport", "Midtown, Center", 'SoHo "Cast Iron"', "Astoria", "Harlem"]
HEADER = (
    "trip_id,vendor,pickup_at,dropoff_at,pickup_date,passengers,distance_mi,fare,tip,payment,"
    "store_and_forward,zone\n"
)
TARGET_BYTES = 2048


def small_csv(rng, first_id):
    """One ~2 KB CSV: the header and rows until the target size is reached."""
    out = [HEADER]
    size = len(HEADER)
    i = first_id
    while size < TARGET_BYTES:
        day = 1 + i % 28
        hour = (i // 28) % 24
        minute = i % 60
        second = (i * 7) % 60
        dur = rng.randint(60, 3600)
        end_s = second + dur
        end_m = minute + end_s // 60
        end_h = min(hour + end_m // 60, 23)
        zone = rng.choice(ZONES)
        zone = '"' + zone.replace('"', '""') + '"' if ("," in zone or '"' in zone) else zone
        tip = "" if i % 9 == 0 else f"{rng.random() * 10:.2f}"
        line = (
            f"{i},{rng.choice(VENDORS)},2024-03-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}Z,"
            f"2024-03-{day:02d}T{end_h:02d}:{end_m % 60:02d}:{end_s % 60:02d}Z,2024-03-{day:02d},"
            f"{rng.randint(1, 6)},{rng.random() * 30:.3f},{rng.random() * 80:.2f},{tip},"
            f"{rng.choice(PAYMENTS)},{'true' if i % 13 == 0 else 'false'},{zone}\n"
        )
        out.append(line)
        size += len(line)
        i += 1
    return "".join(out)


def gen(directory, n):
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(42)
    paths = []
    for k in range(n):
        path = os.path.join(directory, f"f{k:06d}.csv")
        with open(path, "w", newline="") as f:
            f.write(small_csv(rng, k * 100))
        paths.append(path)
    with open(os.path.join(directory, "list.txt"), "w") as f:
        f.write("\n".join(paths) + "\n")
    print(f"{directory}: {n} files")


def files(list_path):
    with open(list_path) as f:
        return [line.strip() for line in f if line.strip()]


def pyarrow_loop(list_path, outdir):
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    convert = pcsv.ConvertOptions(null_values=["", "NA", "NULL"], strings_can_be_null=True)
    os.makedirs(outdir, exist_ok=True)
    rows = 0
    for path in files(list_path):
        table = pcsv.read_csv(path, convert_options=convert)
        name = os.path.splitext(os.path.basename(path))[0]
        pq.write_table(table, os.path.join(outdir, name + ".parquet"), compression="zstd")
        rows += table.num_rows
    print(f"pyarrow: {rows} rows")


def duckdb_loop(list_path, outdir):
    import duckdb

    con = duckdb.connect()
    os.makedirs(outdir, exist_ok=True)
    n = 0
    for path in files(list_path):
        name = os.path.splitext(os.path.basename(path))[0]
        dst = os.path.join(outdir, name + ".parquet")
        con.execute(
            f"COPY (SELECT * FROM read_csv('{path}', nullstr=['', 'NA', 'NULL'])) "
            f"TO '{dst}' (FORMAT parquet, COMPRESSION zstd)"
        )
        n += 1
    print(f"duckdb: {n} files")


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "gen":
        gen(sys.argv[2], int(sys.argv[3]))
    elif mode == "pyarrow":
        pyarrow_loop(sys.argv[2], sys.argv[3])
    elif mode == "duckdb":
        duckdb_loop(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown mode {mode!r}: gen, pyarrow or duckdb")
