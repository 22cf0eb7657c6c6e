"""The demo's open-data "portal" over two days, and a fresh start.

    demo_data.py serve DAY WWW DAY1      make WWW serve day DAY's files
    demo_data.py reset --gcs URL --bucket B --bigquery URL --project P --datasets D [D ...]

Day 1 is the CSVs of the vega_datasets wheel as published (DAY1 holds them). Day 2 is what a
portal does overnight: seattle-weather.csv gains a week of new days and corrects three old ones,
airports.csv renames one airport; the other files do not change. `serve` copies into WWW only
the files whose content differs from what WWW serves, stamped with the day's publication time
(their Last-Modified): unchanged files keep their stamp, so `sluice extract --since auto` skips
them on day 2, exactly as it would a portal's unchanged file.
"""

import argparse
import csv
import io
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# When each day's changes were "published" (UTC): the served files' Last-Modified.
PUBLISHED = {1: 1_796_018_400, 2: 1_796_104_800}  # 2026-11-30 06:00, 2026-12-01 06:00

# Day 2: seattle-weather corrections (date -> column -> value) and new days.
WEATHER_FIXES = {
    "2015/12/29": {"precipitation": "1.3", "weather": "rain"},
    "2015/12/30": {"temp_max": "6.1"},
    "2015/12/31": {"wind": "4.1"},
}
WEATHER_NEW = [
    ("2016/01/01", "0.0", "5.0", "-2.8", "2.5", "sun"),
    ("2016/01/02", "2.3", "6.7", "0.6", "3.1", "rain"),
    ("2016/01/03", "0.0", "7.2", "1.1", "1.9", "fog"),
    ("2016/01/04", "5.1", "8.3", "3.3", "4.0", "rain"),
    ("2016/01/05", "0.0", "9.4", "2.2", "2.2", "sun"),
    ("2016/01/06", "0.3", "8.9", "4.4", "3.6", "drizzle"),
    ("2016/01/07", "12.7", "7.8", "3.9", "5.2", "rain"),
]
AIRPORT_RENAMES = {"00M": "Thigpen Field"}


def rewrite(text, change):
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    body = change(header, body)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *body])
    return out.getvalue()


def weather_day2(header, body):
    at = {name: i for i, name in enumerate(header)}
    for row in body:
        for column, value in WEATHER_FIXES.get(row[0], {}).items():
            row[at[column]] = value
    return body + [list(r) for r in WEATHER_NEW]


def airports_day2(header, body):
    at = {name: i for i, name in enumerate(header)}
    for row in body:
        if row[at["iata"]] in AIRPORT_RENAMES:
            row[at["name"]] = AIRPORT_RENAMES[row[at["iata"]]]
    return body


DAY2_CHANGES = {"seattle-weather.csv": weather_day2, "airports.csv": airports_day2}


def day_files(day, day1):
    for path in sorted(Path(day1).glob("*.csv")):
        text = path.read_text()
        if day >= 2 and path.name in DAY2_CHANGES:
            text = rewrite(text, DAY2_CHANGES[path.name])
        yield path.name, text


def serve(args):
    www = Path(args.www)
    www.mkdir(parents=True, exist_ok=True)
    stamp = PUBLISHED[args.day]
    for name, text in day_files(args.day, args.day1):
        target = www / name
        if target.exists() and target.read_text() == text:
            print(f"  {name:<22} {text.count(chr(10)) - 1:>6} rows  unchanged")
            continue
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        os.utime(tmp, (stamp, stamp))
        tmp.replace(target)
        print(f"  {name:<22} {text.count(chr(10)) - 1:>6} rows  published for day {args.day}")
    return 0


def request(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            raw = response.read()
            return json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def reset(args):
    """Deletes every object of the demo bucket and the demo's BigQuery datasets."""
    deleted, token = 0, None
    while True:
        query = {"pageToken": token} if token else {}
        page = request("GET", f"{args.gcs}/storage/v1/b/{args.bucket}/o?{urllib.parse.urlencode(query)}") or {}
        for item in page.get("items", []):
            name = urllib.parse.quote(item["name"], safe="")
            request("DELETE", f"{args.gcs}/storage/v1/b/{args.bucket}/o/{name}")
            deleted += 1
        token = page.get("nextPageToken")
        if not token:
            break
    for dataset in args.datasets:
        request(
            "DELETE",
            f"{args.bigquery}/bigquery/v2/projects/{args.project}/datasets/{dataset}?deleteContents=true",
        )
    print(f"  fresh start: deleted {deleted} object(s) in gs://{args.bucket} and datasets {', '.join(args.datasets)}")
    return 0


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("serve")
    p.add_argument("day", type=int, choices=sorted(PUBLISHED))
    p.add_argument("www")
    p.add_argument("day1")
    p = commands.add_parser("reset")
    for flag in ("--gcs", "--bucket", "--bigquery", "--project"):
        p.add_argument(flag, required=True)
    p.add_argument("--datasets", nargs="+", required=True)
    args = parser.parse_args()
    return {"serve": serve, "reset": reset}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
