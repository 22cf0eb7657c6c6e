//! Load objects from Cloud Storage into BigQuery with idempotent load jobs.
