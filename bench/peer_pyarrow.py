"""The Python peer: HTTP CSV -> pyarrow -> Parquet (zstd) -> google-cloud-storage upload.

Modes:
  stream  pyarrow.csv.open_csv over the HTTP response, ParquetWriter into blob.open("wb"):
          bounded memory, the same shape as `sluice extract --format parquet`.
  table   pyarrow.csv.read_csv (whole table in memory, all threads), write_table into the blob:
          pyarrow's fastest path, memory grows with the input.
STORAGE_EMULATOR_HOST points google-cloud-storage at fake-gcs-server.
Usage: python peer_pyarrow.py MODE URL BUCKET OBJECT
"""
import sys
import urllib.request

import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

mode, url, bucket_name, object_name = sys.argv[1:5]
client = storage.Client(project="test", credentials=AnonymousCredentials())
blob = client.bucket(bucket_name).blob(object_name)
convert = pcsv.ConvertOptions(null_values=["", "NA", "NULL"], strings_can_be_null=True)
rows = 0
with urllib.request.urlopen(url) as response:
    with blob.open("wb", chunk_size=16 * 1024 * 1024, ignore_flush=True) as out:
        if mode == "stream":
            reader = pcsv.open_csv(
                response,
                read_options=pcsv.ReadOptions(block_size=4 * 1024 * 1024),
                convert_options=convert,
            )
            writer = pq.ParquetWriter(out, reader.schema, compression="zstd")
            for batch in reader:
                writer.write_batch(batch)
                rows += batch.num_rows
            writer.close()
        else:
            table = pcsv.read_csv(response, convert_options=convert)
            rows = table.num_rows
            pq.write_table(table, out, compression="zstd")
print(f"pyarrow {mode}: {rows} rows -> gs://{bucket_name}/{object_name}")
