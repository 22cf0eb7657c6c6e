"""The DuckDB peer: COPY (SELECT * FROM read_csv(...)) TO ... (FORMAT parquet).

DuckDB's HTTP reader is the httpfs extension, which DuckDB downloads at run time; offline it
is unavailable, so DuckDB reads the CSV from local disk (page cache) and writes Parquet to
local disk: no network on either side, its best case.
Usage: python peer_duckdb.py CSV_PATH PARQUET_PATH
"""
import sys

import duckdb

src, dst = sys.argv[1:3]
con = duckdb.connect()
con.execute(
    f"COPY (SELECT * FROM read_csv('{src}', nullstr=['', 'NA', 'NULL'])) "
    f"TO '{dst}' (FORMAT parquet, COMPRESSION zstd)"
)
print("duckdb rows:", con.execute(f"SELECT count(*) FROM read_parquet('{dst}')").fetchone()[0])
