//! The Cloud Storage backend (`gs://bucket`).
//!
//! Reads go through the official `google-cloud-storage` crate (ranged, resumed on transient
//! failures, crc32c-checked on full reads). Writes, listing, metadata and deletes are small
//! JSON-API calls over reqwest (see `docs/storage.md` for why): the crate's `StorageControl`
//! is gRPC-only, and its writer cannot give the atomicity/abort/precondition guarantees the
//! interface promises against both GCS and the emulator.

mod client;
mod upload;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use google_cloud_storage::client::Storage;
use google_cloud_storage::model_ext::ReadRange;
use sluice_runtime::RetryPolicy;
use tokio_util::sync::CancellationToken;

use crate::location::validate_gcs_name;
use crate::{
    ByteStream, ObjectMeta, ObjectStore, ObjectWriter, Result, StorageError, StoreConfig,
    WriteOptions,
};
use client::Client;
use upload::CHUNK_QUANTUM;
pub use upload::ChunkBufferStats;

/// Default resumable upload chunk: 16 MiB, as Google's Go and Java clients use (the Rust crate
/// uses 8 MiB, the Python client 100 MiB). Fewer, larger chunks mean fewer round trips; each
/// writer holds at most two chunks.
pub const DEFAULT_CHUNK_SIZE: usize = 16 * 1024 * 1024;

/// Production endpoint of the JSON API.
const GCS_ENDPOINT: &str = "https://storage.googleapis.com";

/// How to reach Cloud Storage, in full. [`crate::open`] derives it from [`StoreConfig`].
#[derive(Debug, Clone)]
pub struct GcsOptions {
    /// `None`: `https://storage.googleapis.com`.
    pub endpoint: Option<String>,
    /// Send no credentials (emulators). Otherwise Application Default Credentials.
    pub anonymous: bool,
    /// Resumable upload chunk: a positive multiple of 256 KiB. Objects no larger than this go
    /// in one request. At most two chunk buffers are alive per writer: the one being filled
    /// and the one on the wire (or waiting to go).
    pub chunk_size: usize,
    pub retry: RetryPolicy,
    pub cancel: CancellationToken,
    /// Per-request limit for metadata calls.
    pub json_timeout: Duration,
    /// Per-request limit for one chunk upload (sending it and getting the answer).
    pub upload_timeout: Duration,
}

impl Default for GcsOptions {
    fn default() -> Self {
        GcsOptions {
            endpoint: None,
            anonymous: false,
            chunk_size: DEFAULT_CHUNK_SIZE,
            retry: RetryPolicy::default(),
            cancel: CancellationToken::new(),
            json_timeout: Duration::from_secs(60),
            upload_timeout: Duration::from_secs(300),
        }
    }
}

impl GcsOptions {
    /// The emulator from `STORAGE_EMULATOR_HOST` (anonymous) or production with ADC.
    pub fn from_config(config: &StoreConfig) -> Self {
        GcsOptions {
            endpoint: config
                .gcs_emulator_host
                .as_deref()
                .map(sluice_runtime::endpoint::emulator_url),
            anonymous: config.gcs_emulator_host.is_some(),
            chunk_size: config.upload_chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE),
            cancel: config.cancel.clone(),
            ..GcsOptions::default()
        }
    }
}

/// A store over one bucket; keys are object names.
#[derive(Debug, Clone)]
pub struct GcsStore {
    client: Arc<Client>,
    reader: Storage,
    bucket: String,
    chunk_size: usize,
    buffers: Arc<upload::BufferCounter>,
    anonymous: bool,
}

impl GcsStore {
    /// One upload of `key` (refused once the store is cancelled), optionally under
    /// `ifGenerationMatch`: the streaming writer and the one-request conditional write share it.
    fn upload_ctx(
        &self,
        key: &str,
        options: WriteOptions,
        if_generation_match: Option<i64>,
    ) -> Result<upload::UploadCtx> {
        let url = self.checked(key)?;
        if self.client.cancel.is_cancelled() {
            return Err(StorageError::Cancelled {
                url,
                operation: "write",
            });
        }
        Ok(upload::UploadCtx {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_string(),
            url,
            options,
            chunk_size: self.chunk_size,
            buffers: self.buffers.clone(),
            if_generation_match,
        })
    }

    /// Builds the clients (no request is made; credentials are resolved lazily).
    pub async fn connect(bucket: &str, options: GcsOptions) -> Result<Self> {
        let root = format!("gs://{bucket}");
        let bad = |reason: String| StorageError::InvalidLocation {
            url: root.clone(),
            reason,
        };
        if options.chunk_size == 0 || !options.chunk_size.is_multiple_of(CHUNK_QUANTUM) {
            return Err(bad(format!(
                "upload chunk size {} is not a positive multiple of 256 KiB",
                options.chunk_size
            )));
        }
        let connect_err = |what: &str, e: &dyn std::fmt::Display| StorageError::Io {
            url: root.clone(),
            operation: "connect",
            source: format!("{what}: {e}").into(),
        };
        let credentials = if options.anonymous {
            google_cloud_auth::credentials::anonymous::Builder::new().build()
        } else {
            // A key file that cannot be loaded is the user's to fix.
            crate::preflight::adc_credentials(&root, &crate::CredentialSetup::default())?
        };
        let endpoint = options
            .endpoint
            .as_deref()
            .unwrap_or(GCS_ENDPOINT)
            .trim_end_matches('/')
            .to_string();
        let reader = Storage::builder()
            .with_endpoint(endpoint.clone())
            .with_credentials(credentials.clone())
            .build()
            .await
            .map_err(|e| connect_err("building the Cloud Storage client", &e))?;
        // No client-wide read timeout: reqwest's runs from the start of the request, so it would
        // also bound the time to send a chunk. Per-request timeouts are set instead.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| connect_err("building the HTTP client", &e))?;
        Ok(GcsStore {
            client: Arc::new(Client {
                http,
                endpoint,
                credentials,
                retry: options.retry,
                cancel: options.cancel,
                json_timeout: options.json_timeout,
                upload_timeout: options.upload_timeout,
            }),
            reader,
            bucket: bucket.to_string(),
            chunk_size: options.chunk_size,
            buffers: Arc::default(),
            anonymous: options.anonymous,
        })
    }

    /// Checks the setup before any work: credentials can be had (unless anonymous) and the
    /// bucket exists. A missing bucket, or no credentials anywhere off Cloud Run, is
    /// [`StorageError::Setup`]; a metadata-server or server hiccup stays transient (`Io`).
    /// A bucket we may not read the metadata of (403: `storage.buckets.get` is not in
    /// `roles/storage.objectAdmin`) passes: object access is all Sluice needs.
    pub async fn preflight(&self, credentials: &crate::CredentialSetup) -> Result<()> {
        let root = self.root_url();
        if !self.anonymous {
            crate::preflight::probe_credentials(&self.client.credentials, &root, credentials)
                .await?;
        }
        self.client.check_bucket(&self.bucket, &root).await
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The resumable upload chunk size in bytes.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Upload chunk buffers of this store's writers alive now, and the most ever alive at
    /// once (a buffer counts from its allocation until its last byte is released, also by
    /// the HTTP client). For tests and diagnostics.
    pub fn chunk_buffer_stats(&self) -> ChunkBufferStats {
        self.buffers.stats()
    }

    fn checked(&self, key: &str) -> Result<String> {
        let url = self.url_of(key);
        validate_gcs_name(&url, key)?;
        Ok(url)
    }
}

fn read_error(url: &str, e: google_cloud_storage::Error) -> StorageError {
    match e.http_status_code() {
        Some(404) => StorageError::NotFound {
            url: url.to_string(),
        },
        Some(416) => StorageError::Io {
            url: url.to_string(),
            operation: "read",
            source: "the range starts at or past the end of the object".into(),
        },
        _ => StorageError::Io {
            url: url.to_string(),
            operation: "read",
            source: Box::new(e),
        },
    }
}

#[async_trait::async_trait]
impl ObjectStore for GcsStore {
    fn root_url(&self) -> String {
        format!("gs://{}", self.bucket)
    }

    fn url_of(&self, key: &str) -> String {
        format!("gs://{}/{key}", self.bucket)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let url = self.url_of(prefix);
        let mut out: Vec<ObjectMeta> = self
            .client
            .list_objects(&self.bucket, prefix, &url)
            .await?
            .into_iter()
            .map(client::ObjectResource::into_meta)
            .collect();
        // GCS lists in UTF-8 byte order already; sort anyway so the contract does not depend
        // on the server.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let url = self.checked(key)?;
        Ok(self
            .client
            .get_object(&self.bucket, key, &url, &self.client.cancel)
            .await?
            .map(client::ObjectResource::into_meta))
    }

    async fn read(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let url = self.checked(key)?;
        let cancel = self.client.cancel.clone();
        let mut request = self
            .reader
            .read_object(format!("projects/_/buckets/{}", self.bucket), key);
        if let Some(range) = range {
            if range.start > range.end {
                return Err(crate::bad_range(&url, &range));
            }
            if range.start == range.end {
                // Nothing to fetch, but the object must exist and the range must fit.
                let meta = self
                    .head(key)
                    .await?
                    .ok_or(StorageError::NotFound { url: url.clone() })?;
                crate::resolve_range(&url, Some(range), meta.size)?;
                return Ok(Box::pin(futures::stream::empty()));
            }
            request =
                request.set_read_range(ReadRange::segment(range.start, range.end - range.start));
        }
        let response = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                return Err(StorageError::Cancelled { url, operation: "read" });
            }
            response = request.send() => response.map_err(|e| read_error(&url, e))?,
        };
        let err_url = url.clone();
        let stream = futures::stream::unfold(Some(response), |state| async move {
            let mut response = state?;
            let item = response.next().await?;
            Some((item, Some(response)))
        })
        .map(move |item| item.map_err(|e| read_error(&err_url, e)));
        Ok(crate::local::cancellable(Box::pin(stream), cancel, url))
    }

    async fn writer(&self, key: &str, options: WriteOptions) -> Result<Box<dyn ObjectWriter>> {
        let ctx = self.upload_ctx(key, options, None)?;
        Ok(Box::new(upload::GcsWriter::new(ctx, &self.client.cancel)))
    }

    async fn write_if_generation(
        &self,
        key: &str,
        data: Bytes,
        generation: i64,
        options: WriteOptions,
    ) -> Result<ObjectMeta> {
        let ctx = self.upload_ctx(key, options, Some(generation))?;
        let mut crc = crate::crc::Crc32c::new();
        crc.update(&data);
        // One multipart request: the precondition is checked atomically with the write (and
        // fake-gcs-server honours `ifGenerationMatch` on multipart uploads only).
        upload::upload_small(
            &ctx,
            data,
            crc.value(),
            &std::collections::BTreeMap::new(),
            &self.client.cancel,
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let url = self.checked(key)?;
        self.client
            .delete_object(&self.bucket, key, None, &url, &self.client.cancel)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_host_becomes_an_anonymous_endpoint() {
        let config = StoreConfig {
            gcs_emulator_host: Some("127.0.0.1:4443/storage/v1/".into()),
            ..StoreConfig::default()
        };
        let options = GcsOptions::from_config(&config);
        assert_eq!(options.endpoint.as_deref(), Some("http://127.0.0.1:4443"));
        assert!(options.anonymous);
        let production = GcsOptions::from_config(&StoreConfig::default());
        assert_eq!(production.endpoint, None);
        assert!(!production.anonymous);
    }
}
