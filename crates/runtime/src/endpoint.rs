//! Emulator endpoints as users write them (`STORAGE_EMULATOR_HOST`, `BIGQUERY_EMULATOR_HOST`,
//! `--bigquery-endpoint`) and as HTTP clients need them.

/// `127.0.0.1:4443`, `http://127.0.0.1:4443/`, or with the JSON API root Google's client
/// libraries also accept (`.../storage/v1`) -> `http://127.0.0.1:4443`: a URL with a scheme
/// (`http://` when none is given: emulators speak plain HTTP) and no trailing slash. The same
/// form for Cloud Storage and BigQuery emulators, so every crate reaches the same place.
pub fn emulator_url(value: &str) -> String {
    let value = value.trim().trim_end_matches('/');
    let value = value.strip_suffix("/storage/v1").unwrap_or(value);
    if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::emulator_url;

    #[test]
    fn every_form_becomes_one_url() {
        for (given, want) in [
            ("127.0.0.1:4443", "http://127.0.0.1:4443"),
            (" localhost:9050 ", "http://localhost:9050"),
            ("http://localhost:4443/", "http://localhost:4443"),
            ("http://localhost:4443//", "http://localhost:4443"),
            ("http://localhost:4443/storage/v1/", "http://localhost:4443"),
            ("https://bq.example/", "https://bq.example"),
            ("http://127.0.0.1:9050", "http://127.0.0.1:9050"),
        ] {
            assert_eq!(emulator_url(given), want, "{given}");
        }
    }
}
