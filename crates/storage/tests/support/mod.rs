//! Test peers: fixtures for both backends, and a tiny HTTP proxy that can corrupt or fail
//! requests on their way to fake-gcs-server.
#![allow(dead_code)]

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sluice_runtime::{CancellationToken, RetryPolicy};
use sluice_storage::{GcsOptions, GcsStore, LocalStore, ObjectStore};
pub use sluice_testkit::FakeGcs;

pub const BUCKET: &str = "sluice-test";
/// Small chunks so a few MiB exercise multi-chunk resumable uploads.
pub const CHUNK: usize = 256 * 1024;

/// One backend under test plus what keeps it alive.
pub struct Fixture {
    pub store: Arc<dyn ObjectStore>,
    pub cancel: CancellationToken,
    pub kind: Kind,
}

pub enum Kind {
    Local { dir: tempfile::TempDir },
    Gcs { server: FakeGcs },
}

impl Fixture {
    /// The local root, or fake-gcs-server's filesystem root for the bucket.
    pub fn disk_root(&self) -> PathBuf {
        match &self.kind {
            Kind::Local { dir } => dir.path().to_path_buf(),
            Kind::Gcs { server } => server.root().join(BUCKET),
        }
    }

    /// Another handle on the same data with its own (uncancelled) token, to look at what a
    /// cancelled store left behind.
    pub async fn fresh_store(&self) -> Arc<dyn ObjectStore> {
        match &self.kind {
            Kind::Local { dir } => Arc::new(LocalStore::new(
                dir.path().join("root"),
                CancellationToken::new(),
            )),
            Kind::Gcs { server } => {
                Arc::new(gcs_store(&server.endpoint(), CancellationToken::new()).await)
            }
        }
    }

    pub fn is_gcs(&self) -> bool {
        matches!(self.kind, Kind::Gcs { .. })
    }
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(50),
        multiplier: 2.0,
        max_attempts: 4,
        max_elapsed: std::time::Duration::from_secs(10),
    }
}

pub async fn local() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    let store = Arc::new(LocalStore::new(dir.path().join("root"), cancel.clone()));
    Fixture {
        store,
        cancel,
        kind: Kind::Local { dir },
    }
}

pub async fn gcs_store(endpoint: &str, cancel: CancellationToken) -> GcsStore {
    GcsStore::connect(
        BUCKET,
        GcsOptions {
            endpoint: Some(endpoint.to_string()),
            anonymous: true,
            chunk_size: CHUNK,
            retry: fast_retry(),
            cancel,
            ..GcsOptions::default()
        },
    )
    .await
    .unwrap()
}

pub async fn gcs() -> Fixture {
    let server = FakeGcs::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let cancel = CancellationToken::new();
    let store = Arc::new(gcs_store(&server.endpoint(), cancel.clone()).await);
    Fixture {
        store,
        cancel,
        kind: Kind::Gcs { server },
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub async fn read_all(
    store: &dyn ObjectStore,
    key: &str,
    range: Option<std::ops::Range<u64>>,
) -> Vec<u8> {
    let mut stream = store.read(key, range).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// Every file below `dir`, relative, sorted (hidden ones included).
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// What the proxy does with one request.
pub enum Action {
    Forward,
    /// Answer with this status without forwarding.
    Respond(u16),
    /// Answer with this status and JSON error message without forwarding.
    RespondWith(u16, String),
    /// Forward, and flip one byte in the middle of the answer's body.
    ForwardCorruptingResponse,
    /// Never answer (a stalled server).
    Hang,
    /// Forward, then throw the answer away and reply with this status (a lost response).
    ForwardThenRespond(u16),
    /// Wait this long, then forward (a slow server).
    DelayThenForward(std::time::Duration),
}

/// One request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub content_range: Option<String>,
    pub body_len: usize,
    /// `x-goog-meta-*` headers (name lowercased, value).
    pub meta_headers: Vec<(String, String)>,
}

type Hook = dyn Fn(&Seen, &mut Vec<u8>) -> Action + Send + Sync;

/// An HTTP/1 proxy in front of fake-gcs-server. The hook sees each request (and may rewrite its
/// body) before it is forwarded. Upload session URIs in `Location` headers are rewritten to
/// point back at the proxy. It also answers resumable status queries (`bytes */*`) itself from
/// what it saw the server confirm, because fake-gcs-server finalises the object on them.
pub struct Proxy {
    pub endpoint: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(
        upstream: String,
        hook: impl Fn(&Seen, &mut Vec<u8>) -> Action + Send + Sync + 'static,
    ) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoint = format!("http://{addr}");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(ProxyState {
            upstream,
            endpoint: endpoint.clone(),
            client: reqwest::Client::new(),
            hook: Box::new(hook),
            seen: seen.clone(),
            persisted: Mutex::new(std::collections::HashMap::new()),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy {
            endpoint,
            seen,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

struct ProxyState {
    upstream: String,
    endpoint: String,
    client: reqwest::Client,
    hook: Box<Hook>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Session URI (path+query) -> bytes the server confirmed.
    persisted: Mutex<std::collections::HashMap<String, u64>>,
}

fn respond(status: u16, headers: Vec<(String, String)>, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(k, v);
    }
    r.body(Full::new(body)).unwrap()
}

impl ProxyState {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let mut body = body.collect().await.unwrap().to_bytes().to_vec();
        let uri = parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let content_range = parts
            .headers
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let seen = Seen {
            method: parts.method.to_string(),
            uri: uri.clone(),
            content_range: content_range.clone(),
            body_len: body.len(),
            meta_headers: parts
                .headers
                .iter()
                .filter(|(name, _)| name.as_str().starts_with("x-goog-meta-"))
                .map(|(name, value)| {
                    (
                        name.as_str().to_string(),
                        value.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        };
        self.seen.lock().unwrap().push(seen.clone());

        if parts.method == hyper::Method::PUT
            && content_range
                .as_deref()
                .is_some_and(|r| r.starts_with("bytes */"))
        {
            let n = self
                .persisted
                .lock()
                .unwrap()
                .get(&uri)
                .copied()
                .unwrap_or(0);
            let mut headers = Vec::new();
            if n > 0 {
                headers.push(("range".to_string(), format!("bytes=0-{}", n - 1)));
            }
            return respond(308, headers, Bytes::new());
        }

        let action = (self.hook)(&seen, &mut body);
        if let Action::Hang = action {
            std::future::pending::<()>().await;
        }
        if let Action::DelayThenForward(delay) = action {
            tokio::time::sleep(delay).await;
        }
        if let Action::RespondWith(status, message) = &action {
            let body = serde_json::json!({"error": {"code": status, "message": message}});
            return respond(*status, vec![], Bytes::from(body.to_string()));
        }
        if let Action::Respond(status) = action {
            return respond(
                status,
                vec![],
                Bytes::from_static(
                    b"{\"error\":{\"code\":503,\"message\":\"injected by the test proxy\"}}",
                ),
            );
        }
        let mut forward = self
            .client
            .request(parts.method.clone(), format!("{}{uri}", self.upstream))
            .body(body);
        for (name, value) in &parts.headers {
            if name != hyper::header::HOST
                && name != hyper::header::CONTENT_LENGTH
                && name != hyper::header::TRANSFER_ENCODING
            {
                forward = forward.header(name.as_str(), value.as_bytes());
            }
        }
        let response = forward.send().await.unwrap();
        let status = response.status().as_u16();
        let mut headers = Vec::new();
        for (name, value) in response.headers() {
            let value = value.to_str().unwrap_or_default().to_string();
            if name == "location" {
                headers.push((
                    name.to_string(),
                    value.replace(&self.upstream, &self.endpoint),
                ));
            } else if name != "content-length" && name != "transfer-encoding" {
                if name == "range"
                    && status == 308
                    && let Some(n) = value
                        .strip_prefix("bytes=0-")
                        .and_then(|n| n.parse::<u64>().ok())
                {
                    self.persisted.lock().unwrap().insert(uri.clone(), n + 1);
                }
                headers.push((name.to_string(), value));
            }
        }
        let mut body = response.bytes().await.unwrap();
        if let Action::ForwardCorruptingResponse = action {
            let mut flipped = body.to_vec();
            let at = flipped.len() / 2;
            flipped[at] ^= 0x01;
            body = Bytes::from(flipped);
        }
        if let Action::ForwardThenRespond(status) = action {
            return respond(
                status,
                vec![],
                Bytes::from_static(
                    b"{\"error\":{\"code\":503,\"message\":\"response lost by the test proxy\"}}",
                ),
            );
        }
        respond(status, headers, body)
    }
}
