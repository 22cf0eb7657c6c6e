//! Per-command env names for the flags that `sluice extract` and `sluice load` both have but
//! read differently (issue 15). They used to share one name: `SLUICE_SCHEMA` set for extract
//! in a jobs.toml `[defaults].env` reached load too, which read the TOML schema as a BigQuery
//! JSON schema and exited 2. Each command now has its own name; the old shared name still
//! works for a release (the command reads it only when its own name is unset, and warns).
//!
//! One table for the `sluice` binary (which falls back and warns) and `sluice-trigger` (which
//! warns about the old names in a jobs.toml), so the two cannot disagree.

/// A flag with its per-command env name and the shared name it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvTwin {
    /// The subcommand: `extract` or `load`.
    pub command: &'static str,
    /// The clap argument id (the field name).
    pub arg: &'static str,
    /// The flag as typed (`--format`).
    pub flag: &'static str,
    /// The per-command env name (`SLUICE_EXTRACT_FORMAT`).
    pub name: &'static str,
    /// The deprecated shared name (`SLUICE_FORMAT`).
    pub legacy: &'static str,
}

const fn twin(
    command: &'static str,
    arg: &'static str,
    flag: &'static str,
    name: &'static str,
    legacy: &'static str,
) -> EnvTwin {
    EnvTwin {
        command,
        arg,
        flag,
        name,
        legacy,
    }
}

/// Every flag whose env name used to be shared by commands that read it differently. Shared
/// settings that mean the same everywhere (`SLUICE_DEST`, `SLUICE_LOG_FORMAT`,
/// `SLUICE_UPLOAD_CHUNK_MIB`) are not here; dbt's names were prefixed from the start.
pub const ENV_TWINS: &[EnvTwin] = &[
    // passthrough|parquet vs parquet|csv|json|avro|orc
    twin(
        "extract",
        "format",
        "--format",
        "SLUICE_EXTRACT_FORMAT",
        "SLUICE_FORMAT",
    ),
    twin(
        "load",
        "format",
        "--format",
        "SLUICE_LOAD_FORMAT",
        "SLUICE_FORMAT",
    ),
    // a TOML/JSON column -> type override vs a BigQuery JSON schema file
    twin(
        "extract",
        "schema",
        "--schema",
        "SLUICE_EXTRACT_SCHEMA",
        "SLUICE_SCHEMA",
    ),
    twin(
        "load",
        "schema",
        "--schema",
        "SLUICE_LOAD_SCHEMA",
        "SLUICE_SCHEMA",
    ),
    // items in flight vs load jobs in flight
    twin(
        "extract",
        "concurrency",
        "--concurrency",
        "SLUICE_EXTRACT_CONCURRENCY",
        "SLUICE_CONCURRENCY",
    ),
    twin(
        "load",
        "concurrency",
        "--concurrency",
        "SLUICE_LOAD_CONCURRENCY",
        "SLUICE_CONCURRENCY",
    ),
    // defaults differ (round-robin vs hash) and so do the items dealt out
    twin(
        "extract",
        "shard_strategy",
        "--shard-strategy",
        "SLUICE_EXTRACT_SHARD_STRATEGY",
        "SLUICE_SHARD_STRATEGY",
    ),
    twin(
        "load",
        "shard_strategy",
        "--shard-strategy",
        "SLUICE_LOAD_SHARD_STRATEGY",
        "SLUICE_SHARD_STRATEGY",
    ),
    // a WHATWG label extract transcodes from vs BigQuery's CSV encoding (UTF-8, ISO-8859-1, ...)
    twin(
        "extract",
        "encoding",
        "--encoding",
        "SLUICE_EXTRACT_ENCODING",
        "SLUICE_ENCODING",
    ),
    twin(
        "load",
        "encoding",
        "--encoding",
        "SLUICE_LOAD_ENCODING",
        "SLUICE_ENCODING",
    ),
];

/// The twins that replace the shared name `legacy` (empty for any other name).
pub fn replacing(legacy: &str) -> impl Iterator<Item = &'static EnvTwin> + '_ {
    ENV_TWINS.iter().filter(move |t| t.legacy == legacy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_command_and_replace_one_shared_name_each() {
        for t in ENV_TWINS {
            let suffix = t.legacy.strip_prefix("SLUICE_").unwrap();
            assert_eq!(
                t.name,
                format!("SLUICE_{}_{suffix}", t.command.to_uppercase())
            );
            assert_eq!(t.flag, format!("--{}", t.arg.replace('_', "-")));
            // Every shared name is replaced for both commands that read it.
            assert_eq!(replacing(t.legacy).count(), 2, "{}", t.legacy);
        }
        assert_eq!(replacing("SLUICE_DEST").count(), 0);
    }
}
