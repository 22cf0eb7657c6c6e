"""The store's ingest ceiling: google-cloud-storage uploading a local file (resumable, 16 MiB
chunks) to the same fake-gcs-server. Passthrough cannot be faster than this.
Usage: python peer_upload.py PATH BUCKET OBJECT
"""
import sys

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

path, bucket_name, object_name = sys.argv[1:4]
client = storage.Client(project="test", credentials=AnonymousCredentials())
blob = client.bucket(bucket_name).blob(object_name, chunk_size=16 * 1024 * 1024)
blob.upload_from_filename(path)
print(f"uploaded {path} -> gs://{bucket_name}/{object_name}")
