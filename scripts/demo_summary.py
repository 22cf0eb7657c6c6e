"""Summarises one day of a `scripts/demo` run and checks it against the source data.

Reads what the pipeline left behind: the extract task manifests and objects in fake-gcs-server,
the tables and the lineage table `raw._sluice_loads` in bqemulator, the `sluice-trigger local
--output json` reports and dbt's run_results.json artifact. Prints a short report and exits 1
when a table differs from the file the portal serves that day (every row and every value, as
a multiset, after normalising number and date spellings; extract's default NULL markers `NA`,
`NULL` and the empty field count as NULL) or dbt did not pass, so CI can run
the demo as a test.
"""

import argparse
import collections
import csv
import json
import re
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


def query(bigquery, project, sql):
    """(column names, rows as lists of strings or None)."""
    result = http_json(
        f"{bigquery}/bigquery/v2/projects/{project}/queries",
        {"query": sql, "useLegacySql": False, "maxResults": 1_000_000},
    )
    names = [f["name"] for f in result["schema"]["fields"]]
    return names, [[cell["v"] for cell in row["f"]] for row in result.get("rows", [])]


def scalar(bigquery, project, sql):
    return int(query(bigquery, project, sql)[1][0][0])


SLASH_DATE = re.compile(r"^(\d{4})/(\d{2})/(\d{2})$")


# `sluice extract`'s default NULL markers (--null-values: "", NA, NULL).
NULL_MARKERS = {"", "NA", "NULL"}


def normal(value):
    """One spelling per value: numbers as floats, dates with dashes, NULL markers as NULL."""
    if value is None or value in NULL_MARKERS:
        return None
    match = SLASH_DATE.match(value)
    if match:
        return "-".join(match.groups())
    try:
        return round(float(value), 9)
    except ValueError:
        return value


def csv_table(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def compare(header, source_rows, bigquery, project, table):
    """Problems between the CSV and the table: rows missing, extra or altered (first 3 shown)."""
    columns = ", ".join(f"`{c}`" for c in header)
    _, rows = query(bigquery, project, f"select {columns} from `{table}`")
    want = collections.Counter(tuple(normal(v) for v in row) for row in source_rows)
    have = collections.Counter(tuple(normal(v) for v in row) for row in rows)
    missing, extra = want - have, have - want
    if not missing and not extra:
        return len(rows), []
    problems = [f"{table}: {sum(missing.values())} source row(s) missing or altered, {sum(extra.values())} row(s) not in the source"]
    problems += [f"  missing {dict(zip(header, row))}" for row in list(missing)[:3]]
    problems += [f"  extra   {dict(zip(header, row))}" for row in list(extra)[:3]]
    return len(rows), problems


def extract_items(gcs, bucket):
    """Item statuses of the extract execution whose task manifests are in raw/_manifests/."""
    statuses = collections.Counter()
    for obj in list_objects(gcs, bucket, "raw/_manifests/task-"):
        quoted = urllib.parse.quote(obj["name"], safe="")
        manifest = http_json(f"{gcs}/storage/v1/b/{bucket}/o/{quoted}?alt=media")
        statuses.update(item["status"] for item in manifest.get("items", []))
    return statuses


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--day", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--gcs", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--bigquery", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--files", nargs="+", required=True)
    args = parser.parse_args()
    problems = []
    reports = {}
    for job in ("extract", "load", "dbt"):
        path = args.state / f"day{args.day}-{job}.json"
        reports[job] = json.loads(path.read_text()) if path.exists() else {}

    statuses = extract_items(args.gcs, args.bucket)
    pulled = statuses.get("extracted", 0) + statuses.get("reused", 0)
    print(
        f"extracted   {pulled} of {sum(statuses.values())} files pulled, "
        f"{statuses.get('skipped', 0)} unchanged since the last load (skipped), "
        f"{statuses.get('failed', 0)} failed"
    )
    if statuses.get("failed"):
        problems.append(f"{statuses['failed']} extract item(s) failed")
    objects = [o for o in list_objects(args.gcs, args.bucket, "raw/") if o["name"].endswith(".parquet")]
    size = sum(int(o["size"]) for o in objects)
    print(f"            {len(objects)} Parquet objects, {size / 1024:.1f} KiB in gs://{args.bucket}/raw/")

    execution = reports["load"].get("execution")
    merged = {}
    if execution:
        try:
            _, rows = query(
                args.bigquery,
                args.project,
                "select target_table, sum(merged_rows) from `raw._sluice_loads` "
                f"where execution = '{execution}' group by target_table",
            )
            merged = {table.split(".")[-1].split("$")[0]: int(n or 0) for table, n in rows}
        except Exception as error:  # noqa: BLE001 - shown; the table check below decides
            print(f"            (lineage not readable: {error})")

    print("loaded      table                              rows  merged  equals its source file")
    for dataset, name in zip(args.datasets, args.files):
        header, source_rows = csv_table(args.state / "www" / f"{name}.csv")
        table = f"{args.project}.raw.{dataset}"
        try:
            rows, mismatches = compare(header, source_rows, args.bigquery, args.project, table)
        except Exception as error:  # noqa: BLE001 - reported, then counted as a failure
            rows, mismatches = "error", [f"{table}: {error}"]
        problems += mismatches
        mark = "yes" if not mismatches else "NO"
        print(f"            {table:<34} {rows:>6}  {merged.get(dataset, 0):>6}  {mark} ({len(source_rows)} rows)")

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
        data = reports[job]
        if data:
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
        print(f"\nDEMO CHECK FAILED (day {args.day}):\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"\nday {args.day}: every table equals the file its portal serves, row for row and value for value; dbt build passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
