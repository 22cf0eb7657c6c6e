//! A pass-through HTTP proxy in front of bqemulator that fails chosen calls, to stop a load
//! at an exact step (as a crashed task would) and then let the retry run against the same
//! emulator state. Every request is forwarded as is, except the first `times` requests that
//! match a [`Fault`]: those get BigQuery's 400 `invalid` error and never reach the emulator.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

/// Which requests fail: method, a piece of the path, and a piece of the body.
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: &'static str,
    pub path_contains: String,
    pub body_contains: String,
    pub times: usize,
}

#[derive(Default)]
struct State {
    faults: Vec<Fault>,
    /// `METHOD path body` of every request, in order.
    log: Vec<String>,
}

pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn injected(fault: &Fault) -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "error": {
            "code": 400,
            "message": format!("injected fault on {} {}", fault.method, fault.path_contains),
            "status": "INVALID_ARGUMENT",
            "errors": [{"reason": "invalid", "message": "injected fault (test crash)"}]
        }
    });
    Response::builder()
        .status(400)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let upstream = upstream.trim_end_matches('/').to_string();
        let client = reqwest::Client::new();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                let upstream = upstream.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        let upstream = upstream.clone();
                        let client = client.clone();
                        async move {
                            let method = req.method().clone();
                            let path_and_query = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default();
                            let content_type = req.headers().get("content-type").cloned();
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let text = String::from_utf8_lossy(&bytes).to_string();
                            let fault = {
                                let mut state = state.lock().unwrap();
                                state.log.push(format!("{method} {path_and_query} {text}"));
                                state
                                    .faults
                                    .iter_mut()
                                    .find(|f| {
                                        f.times > 0
                                            && f.method == method.as_str()
                                            && path_and_query.contains(&f.path_contains)
                                            && text.contains(&f.body_contains)
                                    })
                                    .map(|f| {
                                        f.times -= 1;
                                        f.clone()
                                    })
                            };
                            if let Some(fault) = fault {
                                return Ok::<_, Infallible>(injected(&fault));
                            }
                            let mut forward = client
                                .request(method, format!("{upstream}{path_and_query}"))
                                .body(bytes);
                            if let Some(ct) = content_type {
                                forward = forward.header("content-type", ct);
                            }
                            let response = match forward.send().await {
                                Ok(r) => r,
                                Err(e) => {
                                    return Ok(Response::builder()
                                        .status(502)
                                        .body(Full::new(Bytes::from(e.to_string())))
                                        .expect("response"));
                                }
                            };
                            let status = response.status().as_u16();
                            let ct = response.headers().get("content-type").cloned();
                            let body = response.bytes().await.unwrap_or_default();
                            let mut out = Response::builder().status(status);
                            if let Some(ct) = ct {
                                out = out.header("content-type", ct);
                            }
                            Ok(out.body(Full::new(body)).expect("response"))
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        FaultProxy { addr, state, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn fail(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
    }

    /// Requests seen since the last call (`METHOD path body`), and forget them.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.state.lock().unwrap().log)
    }
}
