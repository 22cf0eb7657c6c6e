"""Seeds fake-gcs-server for bench/load_plan.sh: N copies of one Parquet object that `sluice
extract` wrote, and a task manifest listing them as extract would (one item per object, the
item and object records of the real extract run cloned with new names and generations).

usage: load_plan_seed.py ENDPOINT BUCKET SOURCE_PREFIX DEST_PREFIX N
  SOURCE_PREFIX  where `sluice extract` wrote one Parquet object and its task manifest
  DEST_PREFIX    where the N objects and `_manifests/task-00000.json` go
"""
import json
import sys
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def get(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def main():
    endpoint, bucket, source, dest, n = sys.argv[1:6]
    n = int(n)
    api = f"{endpoint}/storage/v1/b/{bucket}/o"
    upload = f"{endpoint}/upload/storage/v1/b/{bucket}/o"
    manifest = json.loads(get(f"{api}/{urllib.parse.quote(source + '_manifests/task-00000.json', safe='')}?alt=media"))
    [item] = manifest["items"]
    [obj] = item["objects"]
    body = get(f"{api}/{urllib.parse.quote(obj['name'], safe='')}?alt=media")
    dataset = "planned"

    def put(i):
        name = f"{dest}{dataset}/f{i:06d}-00000.parquet"
        req = urllib.request.Request(
            f"{upload}?uploadType=media&name={urllib.parse.quote(name, safe='')}",
            data=body,
            method="POST",
            headers={"Content-Type": "application/vnd.apache.parquet"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            meta = json.loads(r.read())
        return i, name, int(meta["generation"])

    with ThreadPoolExecutor(32) as pool:
        written = sorted(pool.map(put, range(n)))
    items = []
    for i, name, generation in written:
        it = json.loads(json.dumps(item))
        it["key"] = f"{dataset}/f{i:06d}"
        it["name"] = f"f{i:06d}"
        it["dataset"] = dataset
        o = it["objects"][0]
        o.update(name=name, url=f"gs://{bucket}/{name}", dataset=dataset, generation=generation)
        items.append(it)
    manifest.update(dest=f"gs://{bucket}/{dest.rstrip('/')}", items=items, planned_items={dataset: n})
    manifest["totals"]["items"] = manifest["totals"]["extracted"] = manifest["totals"]["objects"] = n
    data = json.dumps(manifest).encode()
    name = f"{dest}_manifests/task-00000.json"
    req = urllib.request.Request(
        f"{upload}?uploadType=media&name={urllib.parse.quote(name, safe='')}",
        data=data,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=60).read()
    print(f"seeded {n} objects under gs://{bucket}/{dest}{dataset}/ and {len(data)} bytes of manifest")


if __name__ == "__main__":
    main()
