//! Stream open data (HTTP files, Socrata SODA pages) into object storage, optionally as Parquet.
