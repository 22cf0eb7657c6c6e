//! A real HTTP/1.1 server on loopback for tests of HTTP sources: it serves files with
//! `ETag`/`Last-Modified`/`Range`/`If-Range`, injects faults (error statuses with
//! `Retry-After`, connections dropped mid-body, delays), streams slowly on request, serves
//! SODA datasets (`soda.rs`), and records every request. Used by `sluice-extract`'s and
//! `sluice-cli`'s tests (it lived in `sluice-extract` behind a feature until issue 14).
//!
//! The server runs on a thread of its own with its own runtime, so synchronous tests (which
//! spawn the `sluice` binary) and async tests can both use it.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::soda::Soda;

/// What to do to the next request for a path (consumed in order).
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and an optional `Retry-After`).
    Status(u16, Option<String>),
    /// Serve normally but cut the connection after this many body bytes.
    DropAfter(usize),
    /// Wait before answering.
    Delay(Duration),
}

/// A file the server serves.
#[derive(Debug, Clone)]
pub struct ServedFile {
    pub body: Bytes,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Advertise and honour `Range`.
    pub ranges: bool,
    pub content_type: String,
    /// Body chunk size and the pause after each chunk (slow servers).
    pub chunk: usize,
    pub chunk_delay: Duration,
}

impl ServedFile {
    pub fn new(body: impl Into<Bytes>) -> Self {
        let body = body.into();
        // Any digest of the content will do: a strong validator only has to change with it.
        let etag = format!("\"{:08x}\"", crc32fast::hash(&body));
        ServedFile {
            body,
            etag: Some(etag),
            last_modified: Some("Wed, 04 Sep 2024 17:25:46 GMT".into()),
            ranges: true,
            content_type: "text/csv".into(),
            chunk: 64 * 1024,
            chunk_delay: Duration::ZERO,
        }
    }

    pub fn without_ranges(mut self) -> Self {
        self.ranges = false;
        self
    }

    /// Served with this `Content-Type` (a maintenance page as `text/html`, an API's JSON).
    pub fn with_content_type(mut self, content_type: &str) -> Self {
        self.content_type = content_type.to_string();
        self
    }

    pub fn slow(mut self, chunk: usize, delay: Duration) -> Self {
        self.chunk = chunk.max(1);
        self.chunk_delay = delay;
        self
    }
}

/// A fixed Socrata dataset, served as a [`Soda`] dataset (kept for the older tests; new ones
/// build a [`Soda`] and mount it with [`TestServer::soda`]).
#[derive(Debug, Clone)]
pub struct SocrataDataset {
    /// (field name, SODA type)
    pub fields: Vec<(String, String)>,
    pub rows: Vec<Vec<String>>,
    /// `:updated_at` per row (ISO text, compared as strings).
    pub updated_at: Vec<String>,
    /// When set, requests without this `X-App-Token` get 403.
    pub app_token: Option<String>,
    /// Unused: `X-SODA2-Truth-Last-Modified` now follows the data.
    pub last_modified: String,
}

impl SocrataDataset {
    fn into_soda(self) -> Soda {
        let columns: Vec<(&str, &str)> = self
            .fields
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let mut soda = Soda::new(&columns);
        if let Some(token) = &self.app_token {
            soda = soda.require_app_token(token);
        }
        soda.update(|d| {
            for (i, row) in self.rows.iter().enumerate() {
                let values: Vec<&str> = row.iter().map(String::as_str).collect();
                match self.updated_at.get(i) {
                    Some(at) => d.insert_at(at, &values),
                    None => d.insert(&values),
                };
            }
        });
        soda
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub uri: String,
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
}

#[derive(Default)]
struct State {
    files: HashMap<String, ServedFile>,
    faults: HashMap<String, VecDeque<Fault>>,
    soda: HashMap<String, Soda>,
    requests: Vec<Recorded>,
}

/// See the module docs. Stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let state = Arc::new(Mutex::new(State::default()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("test-http-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("test server runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind test server");
                    addr_tx
                        .send(listener.local_addr().expect("local addr"))
                        .expect("report address");
                    let mut stop_rx = stop_rx;
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let state = server_state.clone();
                                tokio::spawn(async move {
                                    let service = hyper::service::service_fn(move |req| {
                                        handle(req, state.clone())
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })
            .expect("spawn test server thread");
        let addr = addr_rx.recv().expect("test server address");
        TestServer {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base(), path.trim_start_matches('/'))
    }

    pub fn serve(&self, path: &str, file: ServedFile) -> String {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.lock().files.insert(path.clone(), file);
        self.url(&path)
    }

    /// Queues faults for the next requests to `path`.
    pub fn fail(&self, path: &str, faults: impl IntoIterator<Item = Fault>) {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.lock().faults.entry(path).or_default().extend(faults);
    }

    /// Serves a fixed Socrata dataset; returns `http://.../resource/{id}`.
    pub fn socrata(&self, id: &str, dataset: SocrataDataset) -> String {
        self.soda(id, &dataset.into_soda())
    }

    /// Serves `soda` at `/resource/{id}.csv|json` (the test keeps its clone to change the
    /// data and read the requests); returns `http://.../resource/{id}`.
    pub fn soda(&self, id: &str, soda: &Soda) -> String {
        self.lock().soda.insert(id.to_string(), soda.clone());
        self.url(&format!("resource/{id}"))
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        let path = format!("/{}", path.trim_start_matches('/'));
        self.requests()
            .into_iter()
            .filter(|r| r.path() == path)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Body>, Infallible> {
    let recorded = Recorded {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    };
    let path = req.uri().path().to_string();
    let (fault, file, socrata) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.requests.push(recorded.clone());
        let fault = s.faults.get_mut(&path).and_then(VecDeque::pop_front);
        let socrata = path
            .strip_prefix("/resource/")
            .and_then(|rest| rest.rsplit_once('.'))
            .and_then(|(id, ext)| s.soda.get(id).map(|d| (d.clone(), ext.to_string())));
        // A file served at `path?query` answers that query only; `path` answers any.
        let file = req
            .uri()
            .path_and_query()
            .and_then(|pq| s.files.get(pq.as_str()))
            .or_else(|| s.files.get(&path))
            .cloned();
        (fault, file, socrata)
    };
    let mut drop_after = None;
    match fault {
        Some(Fault::Status(code, retry_after)) => {
            let mut response = full(code, format!("injected {code}"));
            if let Some(ra) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", ra.parse().expect("retry-after value"));
            }
            return Ok(response);
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::DropAfter(n)) => drop_after = Some(n),
        None => {}
    }
    if let Some((soda, ext)) = socrata {
        let (status, headers, body) =
            soda.respond(&ext, &recorded.uri, recorded.header("x-app-token"));
        let mut response = full(status, body);
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (
                hyper::header::HeaderName::from_bytes(name.as_bytes()),
                hyper::header::HeaderValue::from_str(&value),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        return Ok(response);
    }
    let Some(file) = file else {
        return Ok(full(404, "not found"));
    };
    Ok(file_response(&file, &recorded, drop_after))
}

fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end: u64 = if end.is_empty() {
        len.checked_sub(1)?
    } else {
        end.parse::<u64>().ok()?.min(len.checked_sub(1)?)
    };
    (start <= end).then_some((start, end))
}

fn file_response(file: &ServedFile, req: &Recorded, drop_after: Option<usize>) -> Response<Body> {
    let len = file.body.len() as u64;
    let mut status = 200;
    let mut start = 0u64;
    let mut end = len.saturating_sub(1);
    if file.ranges
        && let Some(range) = req.header("range")
    {
        let validator_ok = match req.header("if-range") {
            None => true,
            Some(v) => file.etag.as_deref() == Some(v) || file.last_modified.as_deref() == Some(v),
        };
        if validator_ok {
            match parse_range(range, len) {
                Some((s, e)) => {
                    status = 206;
                    start = s;
                    end = e;
                }
                None => {
                    let mut r = full(416, "bad range");
                    r.headers_mut()
                        .insert("content-range", format!("bytes */{len}").parse().unwrap());
                    return r;
                }
            }
        }
    }
    let slice = if len == 0 {
        Bytes::new()
    } else {
        file.body.slice(start as usize..=end as usize)
    };
    let body_len = slice.len();
    let head_only = req.method == "HEAD";
    let chunk = file.chunk;
    let delay = file.chunk_delay;
    let stream = futures::stream::unfold((slice, 0usize), move |(data, sent)| async move {
        if head_only || sent >= data.len() {
            return None;
        }
        if let Some(limit) = drop_after
            && sent >= limit
        {
            // Let hyper flush what was sent (it writes when the body is pending), so the
            // client really receives `limit` bytes before the connection dies.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected drop",
                )),
                (data, usize::MAX),
            ));
        }
        let mut take = chunk.min(data.len() - sent);
        if let Some(limit) = drop_after {
            take = take.min(limit - sent);
        }
        if !delay.is_zero() && sent > 0 {
            tokio::time::sleep(delay).await;
        }
        let piece = data.slice(sent..sent + take);
        Some((Ok(Frame::data(piece)), (data, sent + take)))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    let headers = response.headers_mut();
    headers.insert("content-length", body_len.to_string().parse().unwrap());
    headers.insert("content-type", file.content_type.parse().unwrap());
    if file.ranges {
        headers.insert("accept-ranges", "bytes".parse().unwrap());
    }
    if let Some(etag) = &file.etag {
        headers.insert("etag", etag.parse().unwrap());
    }
    if let Some(lm) = &file.last_modified {
        headers.insert("last-modified", lm.parse().unwrap());
    }
    if status == 206 {
        headers.insert(
            "content-range",
            format!("bytes {start}-{end}/{len}").parse().unwrap(),
        );
    }
    response
}
