//! Load objects from Cloud Storage into BigQuery with idempotent load jobs.

pub mod job_id;
pub mod schema;
pub mod template;
