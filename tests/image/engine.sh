# shellcheck shell=bash
# The image suite's checks on a real Docker engine; sourced by tests/image/run, which provides
# run(), $WORK, $ROOT and in_ci(). The engine is scripts/dockerd's private one (layer cache in
# $HOME/.cache/sluice/docker, kept between runs); it is stopped at the end unless it was
# already running. On a fresh private emulator stack ($WORK/stack):
#
#   engine     scripts/dockerd start (installs docker.io/debootstrap with apt when missing)
#   build      scripts/image-build: stand-in bases, then the repository's Dockerfile with
#              CARGO_PROFILE=static-check (release with --release) and the demo's dbt project;
#              times and layer sizes
#   container  `--version` shows the git sha; the configured user and `id` are uid 10001;
#              start-up times of --version and `sluice dbt -- --version`
#   demo       scripts/demo --docker: the open-data pipeline, day 1 and day 2, through
#              `sluice-trigger local --docker`; demo_summary.py checks every table equals its
#              source file and dbt passed, and day 2 pulls only the two changed files (the
#              same checks tests/pipeline makes for process mode)
#   readonly   extract -> load -> dbt, each `docker run --read-only --tmpfs /tmp` as uid 10001:
#              exact row count in the emulator, dbt build passes and uploads its artifacts
#   stop       `docker stop` mid-extract (slow source): exit code 143, no object under the
#              destination prefix
#   adc        `sluice-trigger local --docker --adc`: a 0600 credentials file owned by another
#              uid is readable in the container at GOOGLE_APPLICATION_CREDENTIALS, which runs
#              as that uid

IMAGE_TAG="${SLUICE_IMAGE_TAG:-sluice:test}"
ENGINE_STARTED_HERE=false

# The EXIT trap of tests/image/run: the checks run in subshells, so what they started is
# found by its fixed place ($WORK/stack), not by variables they set.
engine_stop() {
  if [ -d "$WORK/stack" ]; then SLUICE_STACK_DIR="$WORK/stack" "$ROOT/scripts/stack" stop >/dev/null 2>&1 || true; fi
  if $ENGINE_STARTED_HERE; then "$ROOT/scripts/dockerd" stop || true; fi
}

check_engine() {
  "$ROOT/scripts/dockerd" start
  eval "$("$ROOT/scripts/dockerd" env)"
  docker version --format 'client {{.Client.Version}}, engine {{.Server.Version}} (API {{.Server.APIVersion}})'
  echo "layer cache: $("$ROOT/scripts/dockerd" du) in ${SLUICE_DOCKER_DIR:-$HOME/.cache/sluice/docker}"
}

check_build() {
  local start=$SECONDS
  SLUICE_IMAGE_TAG="$IMAGE_TAG" "$ROOT/scripts/image-build" --profile "${profile:-static-check}" \
    --dbt-project examples/open-data/dbt > "$WORK/build.out" 2> "$WORK/build.log" ||
    { tail -60 "$WORK/build.log"; echo "scripts/image-build failed"; return 1; }
  grep -E '^Step [0-9]+/|Using cache|scripts/image-(bases|build):' "$WORK/build.log" |
    grep -v 'Using cache' | tail -40
  echo "cached steps: $(grep -c 'Using cache' "$WORK/build.log" || true)"
  echo "build: $((SECONDS - start)) s"
  echo "image $IMAGE_TAG: $(docker image inspect --format '{{.Size}}' "$IMAGE_TAG" | numfmt --to=iec)"
  echo "layers over 1 MB (docker history):"
  docker history --no-trunc --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE_TAG" |
    awk -F'\t' '$1 ~ /MB|GB/ { printf "  %8s  %s\n", $1, substr($2, 1, 110) }'
}

check_container() {
  local out sha user uid t0
  sha="$(git rev-parse --short=12 HEAD)"
  t0=$(date +%s%N)
  out="$(docker run --rm "$IMAGE_TAG" --version)"
  echo "docker run $IMAGE_TAG --version: $out ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
  grep -qE "^sluice [0-9]+\.[0-9]+\.[0-9]+.* \($sha(-dirty)?\)$" <<<"$out" ||
    { echo "expected 'sluice X.Y.Z ($sha)'"; return 1; }
  user="$(docker image inspect --format '{{.Config.User}}' "$IMAGE_TAG")"
  echo "configured user: $user"
  [ "$user" = "10001:10001" ] || { echo "expected USER 10001:10001"; return 1; }
  uid="$(docker run --rm --entrypoint id "$IMAGE_TAG" -u)"
  echo "id -u in the container: $uid"
  [ "$uid" = 10001 ] || { echo "the container runs as uid $uid, not 10001"; return 1; }
  t0=$(date +%s%N)
  # A profile is generated from these (any values: --version connects nowhere).
  out="$(docker run --rm --read-only --tmpfs /tmp -e SLUICE_DBT_BIGQUERY_PROJECT=p \
    -e SLUICE_DBT_BIGQUERY_DATASET=d "$IMAGE_TAG" dbt -- --version 2>&1)" ||
    { echo "$out"; echo "sluice dbt -- --version failed"; return 1; }
  echo "docker run $IMAGE_TAG dbt -- --version: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  grep -E 'installed:|bigquery:' <<<"$out"
  grep -qE 'bigquery: +1\.11\.' <<<"$out" || { echo "$out"; echo "bigquery adapter 1.11 not reported"; return 1; }
}

# A private stack for the demo and the checks after it; the demo starts it (idempotent).
stack_env() {
  export SLUICE_STACK_DIR="$WORK/stack"
  eval "$("$ROOT/scripts/stack" env)"
  [ -n "${STORAGE_EMULATOR_HOST:-}" ] && [ -n "${BIGQUERY_EMULATOR_HOST:-}" ] ||
    { echo "the stack is not running (the demo check starts it)"; return 1; }
}

check_demo() {
  export SLUICE_STACK_DIR="$WORK/stack"
  local since job want got
  since=$(date +%s)
  SLUICE_IMAGE_TAG="$IMAGE_TAG" "$ROOT/scripts/demo" --docker > "$WORK/demo.log" 2>&1 ||
    { tail -80 "$WORK/demo.log"; echo "scripts/demo --docker failed"; return 1; }
  sed -n '/day 1: summary/,$p' "$WORK/demo.log" | grep -v '^\s*$'
  for day in 1 2; do
    grep -q "day $day: every table equals the file its portal serves" "$WORK/demo.log" ||
      { echo "demo summary of day $day did not confirm the tables"; return 1; }
  done
  # Day 2 in containers skips the two unchanged files, as in process mode (tests/pipeline).
  grep -q 'extracted   2 of 4 files pulled, 2 unchanged since the last load' "$WORK/demo.log" ||
    { echo "day 2 did not pull exactly the two changed files"; return 1; }
  # Every task really ran in a container: the engine started sluice-JOB-xxxxx-TASK-ATTEMPT
  # containers of the image, one per task and day (3 extract, 2 load, 1 dbt; no retries).
  docker events --since "$since" --until "$(date +%s)" --filter type=container --filter event=start \
    --filter "image=$IMAGE_TAG" --format '{{.Actor.Attributes.name}}' > "$WORK/containers"
  for job in extract:6 load:4 dbt:2; do
    want=${job#*:}; job=${job%:*}
    got=$(grep -c "^sluice-$job-[a-z0-9]*-[0-9]*-0$" "$WORK/containers" || true)
    echo "containers started for $job: $got (tasks: $want)"
    [ "$got" = "$want" ] || { cat "$WORK/containers"; echo "expected $want $job containers"; return 1; }
  done
}

# serve DIR DELAY: demo_http.py on a free port; sets http_port.
serve() {
  http_port=$("$ROOT/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$ROOT/.venv/bin/python" "$ROOT/scripts/demo_http.py" "$http_port" "$1" --delay-per-chunk "$2" \
    > "$WORK/http-$http_port.log" 2>&1 &
  http_pid=$!
  # The checks run in subshells: the server ends with the check.
  trap 'kill "$http_pid" 2>/dev/null || true' EXIT
  local _
  for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$http_port/" 2>/dev/null && return 0; sleep 0.1; done
  echo "demo_http.py did not start on $http_port"; return 1
}

objects() { # PREFIX: object names under gs://sluice-demo/PREFIX
  curl -fsS "$STORAGE_EMULATOR_HOST/storage/v1/b/sluice-demo/o?prefix=$1" |
    "$ROOT/.venv/bin/python" -c 'import json,sys; [print(o["name"]) for o in json.load(sys.stdin).get("items", [])]'
}

# ro ARGS...: the image as a Cloud Run job runs it, with a read-only root and /tmp in memory.
ro() {
  docker run --rm --network host --read-only --tmpfs /tmp \
    -e STORAGE_EMULATOR_HOST -e BIGQUERY_EMULATOR_HOST -e RUST_LOG=info "$@"
}

check_readonly() {
  stack_env
  local www="$SLUICE_STACK_DIR/demo/www" csv=seattle-weather.csv expected rows
  [ -f "$www/$csv" ] || { echo "no $www/$csv: the demo check did not run"; return 1; }
  expected=$(($(wc -l < "$www/$csv") - 1))
  serve "$www" 0
  ro "$IMAGE_TAG" extract --log-format text --url "http://127.0.0.1:$http_port/$csv" \
    --dest gs://sluice-demo/readonly --dataset ro_weather --format parquet 2>&1 | tail -5
  echo "objects: $(objects readonly/ | tr '\n' ' ')"
  objects readonly/ | grep -q '\.parquet$' || { echo "extract wrote no Parquet object"; return 1; }
  ro "$IMAGE_TAG" load --log-format text --manifests gs://sluice-demo/readonly/_manifests/ \
    --table "$SLUICE_STACK_PROJECT.readonly.{dataset}" --create-dataset --location US 2>&1 | tail -5
  rows="$(curl -fsS "$BIGQUERY_EMULATOR_HOST/bigquery/v2/projects/$SLUICE_STACK_PROJECT/queries" \
    -H 'Content-Type: application/json' \
    -d "{\"query\": \"select count(*) from \`$SLUICE_STACK_PROJECT.readonly.ro_weather\`\", \"useLegacySql\": false}" |
    "$ROOT/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["f"][0]["v"])')"
  echo "readonly.ro_weather: $rows rows (CSV: $expected)"
  [ "$rows" = "$expected" ] || { echo "row count mismatch"; return 1; }
  # dbt with the project baked into the image (DBT_PROJECT_DIR, read-only), on the tables the
  # demo loaded; the env is the demo spec's dbt job env.
  local out
  out="$(ro -e SLUICE_DBT_ARTIFACTS=gs://sluice-demo/readonly-dbt -e SLUICE_DBT_BIGQUERY_PROJECT="$SLUICE_STACK_PROJECT" \
    -e SLUICE_DBT_BIGQUERY_DATASET=analytics -e SLUICE_DBT_BIGQUERY_LOCATION=US -e SLUICE_DBT_THREADS=2 \
    "$IMAGE_TAG" dbt --log-format text -- build 2>&1)" || { echo "$out" | tail -40; echo "sluice dbt -- build failed"; return 1; }
  grep -E 'Done\. PASS=' <<<"$out" || true
  grep -qE 'Done\. PASS=[1-9][0-9]* WARN=[0-9]+ ERROR=0' <<<"$out" || { echo "$out" | tail -30; echo "dbt build did not pass"; return 1; }
  objects readonly-dbt/ | grep -q 'run_results.json' || { echo "no dbt artifacts uploaded"; return 1; }
  echo "dbt artifacts: $(objects readonly-dbt/ | wc -l) objects"
}

check_adc() {
  local dir="$WORK/adc" trigger out owner="12345:12346"
  mkdir -p "$dir"
  trigger="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
    "$ROOT/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/sluice-trigger"
  (cd "$ROOT" && cargo build --quiet --bin sluice-trigger) || { echo "building sluice-trigger failed"; return 1; }
  printf '{"type": "authorized_user", "marker": "adc-%s"}\n' "$$" > "$dir/adc.json"
  chmod 0600 "$dir/adc.json"
  # As root (CI), give the file to another uid, as gcloud leaves it: only its owner reads it.
  if [ "$(id -u)" = 0 ]; then chown "$owner" "$dir/adc.json"; else owner="$(id -u):$(id -g)"; fi
  # shellcheck disable=SC2016 # expanded by the container's shell, not here
  printf '%s\n' '[[jobs]]' 'name = "whoami"' "image = \"$IMAGE_TAG\"" 'command = ["sh"]' \
    'args = ["-c", "echo uid=$(id -u); cat $GOOGLE_APPLICATION_CREDENTIALS"]' > "$dir/jobs.toml"
  out="$(GOOGLE_APPLICATION_CREDENTIALS="$dir/adc.json" "$trigger" local "$dir/jobs.toml" whoami \
    --docker --adc --log-format text 2>&1)" || { echo "$out" | tail -20; echo "local --docker --adc failed"; return 1; }
  grep -E 'uid=|marker' <<<"$out" | head -3
  grep -q "uid=${owner%%:*}" <<<"$out" || { echo "$out" | tail -20; echo "the container did not run as the file's owner"; return 1; }
  grep -q "adc-$$" <<<"$out" || { echo "$out" | tail -20; echo "the credentials file was not readable in the container"; return 1; }
}

check_stop() {
  # Self-contained (runs alone with --only engine,stop): the stack is started if the demo did not.
  export SLUICE_STACK_DIR="$WORK/stack"
  "$ROOT/scripts/stack" start gcs >/dev/null
  eval "$("$ROOT/scripts/stack" env)"
  [ -n "${STORAGE_EMULATOR_HOST:-}" ] || { echo "fake-gcs-server is not running"; return 1; }
  curl -fsS -o /dev/null -X POST "$STORAGE_EMULATOR_HOST/storage/v1/b?project=sluice-local" \
    -H 'Content-Type: application/json' -d '{"name":"sluice-demo"}' 2>/dev/null || true
  local www="$WORK/slow" name="sluice-stop-$$" code running left
  mkdir -p "$www"
  # ~600 KiB served 16 KiB per 0.2 s: ~8 s of download, stopped after the first rows arrive.
  "$ROOT/.venv/bin/python" -c 'import sys
print("id,city,temp")
for i in range(20000): print(f"{i},city-{i % 97},{i % 40 - 5}.25")' > "$www/big.csv"
  serve "$www" 0.2
  docker run -d --name "$name" --network host --read-only --tmpfs /tmp -e STORAGE_EMULATOR_HOST \
    "$IMAGE_TAG" extract --log-format text --url "http://127.0.0.1:$http_port/big.csv" \
    --dest gs://sluice-demo/stopped --dataset stopped --format parquet > /dev/null
  for _ in $(seq 50); do docker logs "$name" 2>&1 | grep -q 'writing to' && break; sleep 0.2; done
  sleep 1
  running="$(docker inspect --format '{{.State.Running}}' "$name")"
  echo "running when stopped: $running"
  docker stop --time 10 "$name" > /dev/null
  code="$(docker inspect --format '{{.State.ExitCode}}' "$name")"
  docker logs "$name" 2>&1 | tail -5
  docker rm "$name" > /dev/null
  kill "$http_pid" 2>/dev/null || true
  [ "$running" = true ] || { echo "extract was not running when stopped (finished too early)"; return 1; }
  echo "exit code after docker stop: $code"
  [ "$code" = 143 ] || { echo "expected exit code 143 (SIGTERM)"; return 1; }
  left="$(objects stopped/)"
  echo "objects under gs://sluice-demo/stopped/: ${left:-none}"
  [ -z "$left" ] || { echo "docker stop left objects behind"; return 1; }
}
