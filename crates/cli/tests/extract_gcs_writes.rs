//! Object writes per data object into GCS, counted on the wire: `sluice extract` talks to
//! fake-gcs-server through a counting TCP relay. Many small files cost one upload each (the
//! data with all its metadata, sha256 and rows included, in one multipart request: no patch,
//! no receipt) plus O(1) per task (one journal part, the manifest).

mod extract_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use extract_support::{sluice, text};
use sluice_testkit::{FakeGcs, ServedFile, TestServer};

const BUCKET: &str = "lake";
const FILES: usize = 40;

/// What clients sent over one connection.
type Sent = Arc<Mutex<Vec<u8>>>;

/// Relays loopback TCP to `upstream` and keeps every byte clients sent, per connection.
struct CountingRelay {
    port: u16,
    sent: Arc<Mutex<Vec<Sent>>>,
}

impl CountingRelay {
    fn start(upstream: u16) -> CountingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let all = sent.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let record = Arc::new(Mutex::new(Vec::new()));
                all.lock().unwrap().push(record.clone());
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    while let Ok(n) = c_read.read(&mut buf) {
                        if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingRelay { port, sent }
    }

    /// `METHOD /path?query` of every request sent so far (request lines: they end in
    /// ` HTTP/1.1`, which no CSV or Parquet body here does).
    fn requests(&self) -> Vec<String> {
        let mut out = Vec::new();
        for record in self.sent.lock().unwrap().iter() {
            let bytes = record.lock().unwrap().clone();
            for line in bytes.split(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(line);
                let line = line.trim_end_matches('\r');
                let Some(request) = line.strip_suffix(" HTTP/1.1") else {
                    continue;
                };
                if ["GET ", "POST ", "PUT ", "PATCH ", "DELETE "]
                    .iter()
                    .any(|m| request.starts_with(m))
                {
                    out.push(request.to_string());
                }
            }
        }
        out
    }
}

#[test]
fn many_small_files_cost_one_upload_each_plus_a_part_and_the_manifest() {
    let gcs = FakeGcs::start().expect("fake-gcs-server");
    gcs.create_bucket(BUCKET).expect("bucket");
    let relay = CountingRelay::start(gcs.port());
    let server = TestServer::start();
    let mut urls = String::new();
    for i in 0..FILES {
        let body = format!("id,label\n{i},a\n{},b\n", i + 1000);
        urls.push_str(&server.serve(&format!("f{i:02}.csv"), ServedFile::new(body)));
        urls.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("sources.txt");
    std::fs::write(&list, urls).unwrap();
    for (format, prefix) in [("parquet", "pq"), ("passthrough", "pt")] {
        let before = relay.requests().len();
        let dest = format!("gs://{BUCKET}/{prefix}");
        let out = sluice()
            .args([
                "extract",
                "--manifest",
                list.to_str().unwrap(),
                "--dest",
                &dest,
            ])
            .args(["--dataset", "small", "--format", format])
            .env(
                "STORAGE_EMULATOR_HOST",
                format!("http://127.0.0.1:{}", relay.port),
            )
            .env("CLOUD_RUN_JOB", "extract")
            .env("CLOUD_RUN_EXECUTION", "extract-w1")
            .env("CLOUD_RUN_TASK_ATTEMPT", "0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let requests: Vec<String> = relay.requests().split_off(before);
        let count = |prefix: &str| requests.iter().filter(|r| r.starts_with(prefix)).count();
        let uploads = count("POST /upload/");
        // Data objects, one journal part, the task manifest: nothing per item besides the data.
        assert_eq!(uploads, FILES + 2, "{format}: {requests:#?}");
        assert!(
            requests
                .iter()
                .filter(|r| r.starts_with("POST /upload/"))
                .all(|r| r.contains("uploadType=multipart")),
            "{format}: small objects go in one request each: {requests:#?}"
        );
        assert_eq!(
            count("PATCH "),
            0,
            "{format}: no metadata patch: {requests:#?}"
        );
        assert_eq!(
            count("PUT "),
            0,
            "{format}: no resumable upload: {requests:#?}"
        );

        let names = gcs.list(BUCKET, &format!("{prefix}/")).unwrap();
        let data = names.iter().filter(|n| !n.contains("/_manifests/")).count();
        assert_eq!(data, FILES, "{names:#?}");
        assert!(
            !names.iter().any(|n| n.contains("/_manifests/items/")),
            "{names:#?}"
        );
        assert!(names.contains(&format!("{prefix}/_manifests/task-00000.json")));
        assert!(names.contains(&format!(
            "{prefix}/_manifests/executions/extract-w1/task-00000/a000-00000.json"
        )));
    }
}
