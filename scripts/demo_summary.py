"""Summarises a `scripts/demo` run and checks it against the source data.

Reads what the pipeline left behind — objects in fake-gcs-server, tables in bqemulator, the
`sluice-trigger local --output json` reports and dbt's run_results.json artifact — prints a
short report, and exits 1 when the loaded row counts differ from the CSV row counts or dbt
did not pass, so CI can run the demo as a test.
"""

import argparse
import json
import sys
import urllib.parse
import urllib.request
from pathlib import Path


def http_json(url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def list_objects(gcs, bucket, prefix):
    items, token = [], None
    while True:
        query = {"prefix": prefix}
        if token:
            query["pageToken"] = token
        page = http_json(f"{gcs}/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}")
        items += page.get("items", [])
        token = page.get("nextPageToken")
        if not token:
            return items


def scalar(bigquery, project, sql):
    result = http_json(
        f"{bigquery}/bigquery/v2/projects/{project}/queries",
        {"query": sql, "useLegacySql": False},
    )
    return int(result["rows"][0]["f"][0]["v"])


def csv_rows(path):
    with open(path, "rb") as handle:
        return sum(1 for _ in handle) - 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--gcs", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--bigquery", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--files", nargs="+", required=True)
    args = parser.parse_args()
    problems = []

    objects = [o for o in list_objects(args.gcs, args.bucket, "raw/") if o["name"].endswith(".parquet")]
    size = sum(int(o["size"]) for o in objects)
    print(f"extracted   {len(objects)} Parquet objects, {size / 1024:.1f} KiB in gs://{args.bucket}/raw/")

    print("loaded      table                              rows  (CSV rows)")
    for dataset, name in zip(args.datasets, args.files):
        expected = csv_rows(args.state / "www" / f"{name}.csv")
        table = f"{args.project}.raw.{dataset}"
        try:
            rows = scalar(args.bigquery, args.project, f"select count(*) from `{table}`")
        except Exception as error:  # noqa: BLE001 - reported, then counted as a failure
            rows = f"error: {error}"
        mark = "ok" if rows == expected else "MISMATCH"
        if rows != expected:
            problems.append(f"{table}: {rows} rows, the CSV has {expected}")
        print(f"            {table:<34} {rows:>6}  ({expected}) {mark}")

    results = sorted(
        (o for o in list_objects(args.gcs, args.bucket, "dbt-artifacts/") if o["name"].endswith("run_results.json")),
        key=lambda o: o["updated"],
    )
    if results:
        latest = results[-1]["name"]
        quoted = urllib.parse.quote(latest, safe="")
        run = http_json(f"{args.gcs}/storage/v1/b/{args.bucket}/o/{quoted}?alt=media")
        counts = {}
        for result in run.get("results", []):
            counts[result["status"]] = counts.get(result["status"], 0) + 1
        print("dbt         " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"  (gs://{args.bucket}/{latest})")
        failed = {s: n for s, n in counts.items() if s not in ("success", "pass")}
        if failed:
            problems.append(f"dbt results not all passing: {failed}")
    else:
        problems.append("no dbt run_results.json artifact found")

    timings = []
    for job in ("extract", "load", "dbt"):
        report = args.state / f"{job}.json"
        if report.exists():
            data = json.loads(report.read_text())
            counts = data.get("counts", {})
            retried = f", {counts['retried']} retried" if counts.get("retried") else ""
            timings.append(
                f"{job} {data.get('duration_seconds', 0):.1f} s "
                f"({counts.get('succeeded', '?')}/{data.get('task_count', '?')} tasks{retried})"
            )
    print("wall time   " + ", ".join(timings))
    print(f"look at     gcloud storage ls gs://{args.bucket}/raw/**  (with CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE={args.gcs}/storage/v1/)")
    print(f"            curl -s {args.bigquery}/bigquery/v2/projects/{args.project}/queries -d "
          f"'{{\"query\": \"select * from {args.project}.analytics.weather_monthly order by weather_month limit 5\", \"useLegacySql\": false}}'")

    if problems:
        print("\nDEMO CHECK FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("\nall row counts match the source CSVs; dbt build passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
