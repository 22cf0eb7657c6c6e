"""The Python peer of `sluice load`'s planning: list the objects under a prefix with
google-cloud-storage, read every Parquet footer with pyarrow (ranged reads through the blob's
file interface), map nothing, sum the rows; 16 threads, like sluice's default read concurrency.

usage: peer_load_plan.py BUCKET PREFIX
(STORAGE_EMULATOR_HOST points google-cloud-storage at fake-gcs-server)
"""
import sys
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage


def main():
    bucket_name, prefix = sys.argv[1:3]
    client = storage.Client(project="bench", credentials=AnonymousCredentials())
    bucket = client.bucket(bucket_name)
    blobs = [b for b in client.list_blobs(bucket_name, prefix=prefix) if b.name.endswith(".parquet")]

    def footer(blob):
        with blob.open("rb") as f:
            meta = pq.ParquetFile(f).metadata
        return meta.num_rows, meta.num_columns

    with ThreadPoolExecutor(16) as pool:
        footers = list(pool.map(footer, blobs))
    print(f"{len(footers)} objects, {sum(r for r, _ in footers)} rows, bucket {bucket.name}")


if __name__ == "__main__":
    main()
