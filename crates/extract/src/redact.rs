//! Keeping secrets out of logs, errors, object metadata and manifests.
//!
//! Open-data URLs often carry credentials in the query (`$$app_token=...` for Socrata,
//! `X-Amz-Signature` / `X-Goog-Signature` for signed URLs, `key=` for API keys). Every URL
//! that leaves this crate in text goes through [`redact_url`]; server-provided text goes
//! through [`scrub`] with the secrets we know. The rules are `sluice_runtime::redact`'s, shared
//! with every crate (one list of secret names, one masking rule: values of 4+ bytes become
//! `REDACTED`).

pub(crate) use sluice_runtime::redact::{is_secret_query_param, redact_url, scrub, url_secrets};
