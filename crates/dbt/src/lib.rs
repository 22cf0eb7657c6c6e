//! Run dbt-bigquery under supervision: profiles, logs, signals, artifacts.
