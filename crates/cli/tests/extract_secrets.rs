//! An app token in a URL or in the `X-App-Token` header never appears in logs (JSON or text,
//! even at debug level), error messages, object metadata, receipts or manifests.

mod extract_support;

use extract_support::{all_files, sluice, text};
use sluice_testkit::{Fault, ServedFile, SocrataDataset, TestServer};

const HEADER_TOKEN: &str = "tok-SEKRIT-42";
const URL_TOKEN: &str = "URLSECRET99";
const URL_KEY: &str = "KEYSECRET77";

#[test]
fn tokens_never_reach_logs_or_outputs() {
    let server = TestServer::start();
    let resource = server.socrata(
        "perm-its1",
        SocrataDataset {
            fields: vec![
                ("id".into(), "number".into()),
                ("name".into(), "text".into()),
            ],
            rows: (0..25)
                .map(|i| vec![i.to_string(), format!("n{i}")])
                .collect(),
            updated_at: vec!["2026-01-01T00:00:00.000".into(); 25],
            app_token: Some(HEADER_TOKEN.into()),
            last_modified: "Wed, 04 Sep 2024 17:25:46 GMT".into(),
        },
    );
    let body = "a,b\n".to_string() + &"1,2\n".repeat(50_000);
    server.serve("data.csv", ServedFile::new(body));
    let for_run = |n: usize| {
        // Each run: retries (logged with the URL), a resumed drop, then a permanent failure.
        server.fail(
            "data.csv",
            [
                Fault::Status(503, None),
                Fault::Status(429, Some("0".into())),
                Fault::DropAfter(100_000),
            ],
        );
        format!(
            "{}?$$app_token={URL_TOKEN}&api_key={URL_KEY}&run={n}",
            server.url("data.csv")
        )
    };
    let missing = server.url(&format!("missing.csv?$$app_token={URL_TOKEN}"));

    for (n, format) in ["json", "text"].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let out = sluice()
            .args([
                "extract",
                "--url",
                &for_run(n),
                "--url",
                &missing,
                "--socrata",
                &resource,
                "--socrata-page-size",
                "10",
                "--dest",
                dir.path().to_str().unwrap(),
                "--format",
                "parquet",
                "--progress-interval",
                "50ms",
                "--log-format",
                format,
            ])
            .env("SLUICE_SOCRATA_APP_TOKEN", HEADER_TOKEN)
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let logs = text(&out);
        // The missing file fails the task, after everything else was extracted.
        assert_eq!(out.status.code(), Some(1), "{logs}");
        assert!(logs.contains("HTTP 404"), "{logs}");
        // URLs were logged (retries, resume, failure), just never their secrets.
        assert!(logs.contains("$$app_token=REDACTED"), "{logs}");
        assert!(logs.contains("api_key=REDACTED"), "{logs}");
        for secret in [HEADER_TOKEN, URL_TOKEN, URL_KEY] {
            assert!(
                !logs.contains(secret),
                "{format} logs leak {secret}:\n{logs}"
            );
            for file in all_files(dir.path()) {
                let content = std::fs::read(dir.path().join(&file)).unwrap();
                let found = content
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes());
                assert!(!found, "{file} leaks {secret}");
            }
        }
        // The Socrata pages were fetched with the token (and never without).
        let socrata: Vec<_> = server
            .requests()
            .into_iter()
            .filter(|r| r.path().starts_with("/resource/"))
            .collect();
        assert!(!socrata.is_empty());
        assert!(
            socrata
                .iter()
                .all(|r| r.header("x-app-token") == Some(HEADER_TOKEN))
        );
    }
}
