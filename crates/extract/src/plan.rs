//! From configuration to the full, ordered list of work items. Every task computes the same
//! list (same flags, same manifest, same Socrata counts), then takes its share of it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use globset::{Glob, GlobSetBuilder};
use sluice_storage::StoreConfig;

use crate::config::{CsvOptions, ExtractConfig, OutputFormat, SourceOptions};
use crate::convert::schema::SchemaOverride;
use crate::error::{ExtractError, Result};
use crate::naming::{last_segment, sanitize, sanitize_dataset, split_extensions};
use crate::redact::redact_url;
use crate::source::http::{HttpClient, HttpTarget};
use crate::source::manifest::{self, EntryKind, SourceEntry};
use crate::source::socrata::{self, SocrataResource};
use crate::source::{Origin, PageInfo, WorkItem};

/// Largest manifest or schema file read into memory.
const SMALL_FILE: u64 = 16 * 1024 * 1024;

/// Reads a small text file from a local path, `file://`, `http(s)://` or `gs://`.
pub async fn fetch_text(
    location: &str,
    client: &HttpClient,
    store: &StoreConfig,
) -> Result<String> {
    let shown = redact_url(location);
    let bytes =
        if location.starts_with("http://") || location.starts_with("https://") {
            let target = HttpTarget::new(location)?;
            client.get_small(&target, SMALL_FILE as usize).await?.0
        } else if location.starts_with("gs://") {
            let (dir, name) = location
                .rsplit_once('/')
                .filter(|(dir, name)| dir.len() > "gs:/".len() && !name.is_empty())
                .ok_or_else(|| ExtractError::Config(format!("{shown}: not an object URL")))?;
            let (store, prefix) = sluice_storage::open(dir, store).await?;
            let key = sluice_storage::join_key(&prefix, name);
            sluice_storage::read_to_bytes(store.as_ref(), &key, SMALL_FILE).await?
        } else {
            let path = local_path(location)?;
            bytes::Bytes::from(tokio::fs::read(&path).await.map_err(|e| {
                ExtractError::Config(format!("cannot read {}: {e}", path.display()))
            })?)
        };
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ExtractError::Config(format!("{shown}: not UTF-8 text")))
}

fn local_path(location: &str) -> Result<PathBuf> {
    if let Some(rest) = location.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(ExtractError::Config(format!(
                "{location}: file URLs must be absolute (file:///path)"
            )));
        }
        return Ok(PathBuf::from(rest));
    }
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(ExtractError::Config(format!(
            "{}: unsupported scheme {scheme:?} (expected http(s)://, file://, gs:// for manifests, or a path)",
            redact_url(location)
        )));
    }
    Ok(PathBuf::from(location))
}

fn single_byte(option: &str, value: &str) -> Result<u8> {
    let byte = match value {
        "\\t" | "tab" | "\t" => b'\t',
        v if v.len() == 1 => v.as_bytes()[0],
        _ => {
            return Err(ExtractError::Config(format!(
                "options.{option} must be a single ASCII character (or \"tab\"), not {value:?}"
            )));
        }
    };
    Ok(byte)
}

/// The CSV options of one source: the global ones with the entry's overrides.
fn csv_options(global: &CsvOptions, options: &SourceOptions) -> Result<CsvOptions> {
    let mut csv = global.clone();
    if let Some(d) = &options.delimiter {
        csv.delimiter = Some(single_byte("delimiter", d)?);
    }
    if let Some(q) = &options.quote {
        csv.quote = single_byte("quote", q)?;
    }
    if let Some(e) = &options.escape {
        csv.escape = Some(single_byte("escape", e)?);
    }
    if let Some(h) = options.header {
        csv.has_header = h;
    }
    if let Some(n) = &options.null_values {
        csv.null_values = n.clone();
    }
    if let Some(r) = options.infer_rows {
        csv.infer_rows = r.max(1);
    }
    if let Some(s) = &options.schema {
        csv.schema_file = Some(s.clone());
    }
    Ok(csv)
}

/// Builds the full item list.
pub async fn plan(
    config: &ExtractConfig,
    client: &HttpClient,
    store: &StoreConfig,
) -> Result<Vec<WorkItem>> {
    let mut entries: Vec<SourceEntry> = config.urls.iter().map(SourceEntry::url).collect();
    entries.extend(config.socrata.iter().map(SourceEntry::socrata));
    if let Some(location) = &config.manifest {
        let text = fetch_text(location, client, store).await?;
        entries.extend(manifest::parse(&text, &redact_url(location))?);
    }
    if entries.is_empty() {
        return Err(ExtractError::Config(
            "nothing to extract: give --url, --manifest or --socrata".into(),
        ));
    }

    let mut schemas: HashMap<String, Arc<SchemaOverride>> = HashMap::new();
    let mut items = Vec::new();
    for entry in &entries {
        let format = entry.format.unwrap_or(config.format);
        let csv = csv_options(&config.csv, &entry.options)?;
        let schema_override = match &csv.schema_file {
            Some(location) if format == OutputFormat::Parquet => {
                if let Some(parsed) = schemas.get(location) {
                    Some(parsed.clone())
                } else {
                    let text = fetch_text(location, client, store).await?;
                    let parsed = Arc::new(SchemaOverride::parse(&text, &redact_url(location))?);
                    schemas.insert(location.clone(), parsed.clone());
                    Some(parsed)
                }
            }
            _ => None,
        };
        let members = match &entry.options.members {
            Some(patterns) if !patterns.is_empty() => {
                let mut builder = GlobSetBuilder::new();
                for p in patterns {
                    builder.add(Glob::new(p).map_err(|e| {
                        ExtractError::Config(format!("options.members: bad glob {p:?}: {e}"))
                    })?);
                }
                let set = builder
                    .build()
                    .map_err(|e| ExtractError::Config(format!("options.members: {e}")))?;
                Some((Arc::new(set), patterns.clone()))
            }
            _ => None,
        };
        let decompress = entry.options.decompress.unwrap_or(config.decompress);
        let dataset_of = |name: &str| {
            sanitize_dataset(
                entry
                    .dataset
                    .as_deref()
                    .or(config.dataset.as_deref())
                    .unwrap_or(name),
            )
        };
        match entry.kind {
            EntryKind::Url => {
                let url = entry.url.trim();
                let file_name = last_segment(url);
                let (stem, data_ext, compression_ext) = split_extensions(&file_name);
                let name = sanitize(entry.name.as_deref().unwrap_or(&stem));
                let (origin, display) = if url.starts_with("http://") || url.starts_with("https://")
                {
                    let target = HttpTarget::new(url)?;
                    let display = target.display().to_string();
                    (Origin::Http(Box::new(target)), display)
                } else {
                    let path = local_path(url)?;
                    let display = path.display().to_string();
                    (Origin::Local(path), display)
                };
                items.push(WorkItem {
                    dataset: dataset_of(&name),
                    name,
                    origin,
                    display,
                    data_ext,
                    compression_ext,
                    format,
                    page: None,
                    csv,
                    schema_override,
                    soda_types: None,
                    members,
                    decompress,
                    planned_version: None,
                });
            }
            EntryKind::Socrata => {
                let resource = SocrataResource::parse(&entry.url)?;
                let mut base = HttpTarget::new(&entry.url)?;
                if let Some(token) = &config.socrata_options.app_token {
                    base = base.with_secret_header("x-app-token", token)?;
                }
                let plan = socrata::plan(
                    client,
                    &base,
                    &resource,
                    &config.socrata_options,
                    format == OutputFormat::Parquet,
                )
                .await?;
                let name = sanitize(entry.name.as_deref().unwrap_or(&resource.id));
                tracing::info!(
                    resource = %redact_url(&resource.base),
                    rows = plan.rows,
                    pages = plan.pages.len(),
                    typed = plan.types.is_some(),
                    "Socrata {}: {} rows in {} pages",
                    redact_url(&resource.base),
                    plan.rows,
                    plan.pages.len()
                );
                let types = plan.types.map(Arc::new);
                for page in &plan.pages {
                    let target = base.derive(&page.url)?;
                    items.push(WorkItem {
                        dataset: dataset_of(&name),
                        name: name.clone(),
                        display: target.display().to_string(),
                        origin: Origin::Http(Box::new(target)),
                        data_ext: "csv".into(),
                        compression_ext: String::new(),
                        format,
                        page: Some(PageInfo {
                            number: page.number,
                            offset: page.offset,
                            limit: page.limit,
                            dataset_rows: plan.rows,
                        }),
                        csv: csv.clone(),
                        schema_override: schema_override.clone(),
                        soda_types: types.clone(),
                        members: None,
                        decompress,
                        planned_version: Some(plan.version.clone()),
                    });
                }
            }
        }
    }
    disambiguate(&mut items);
    Ok(items)
}

/// Two different sources with the same (dataset, name) would write the same objects. The
/// colliding ones get a short stable hash of their URL appended (a name in the manifest is
/// the better fix, and the warning says so).
fn disambiguate(items: &mut [WorkItem]) {
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if item.page.is_none() || item.page.as_ref().is_some_and(|p| p.number == 0) {
            groups
                .entry((item.dataset.clone(), item.name.clone()))
                .or_default()
                .push(i);
        }
    }
    for ((dataset, name), members) in groups {
        if members.len() < 2 {
            continue;
        }
        let sources: Vec<String> = members.iter().map(|&i| items[i].display.clone()).collect();
        tracing::warn!(
            dataset = %dataset,
            name = %name,
            "sources {} all map to {dataset}/{name}; appending a URL hash to their names \
             (give them distinct `name`s in a manifest to choose)",
            sources.join(", ")
        );
        for &i in &members {
            let hash = sluice_runtime::shard::fnv1a64(items[i].display.as_bytes());
            let old = items[i].name.clone();
            let new = format!("{old}-{:08x}", hash as u32);
            // All pages of a Socrata source get the same new name.
            let display_base = items[i].display.split('?').next().unwrap_or("").to_string();
            for item in items.iter_mut() {
                if item.name == old
                    && item.dataset == dataset
                    && item.display.split('?').next().unwrap_or("") == display_base
                {
                    item.name = new.clone();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plans_urls_and_local_files_with_names_and_datasets() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.toml");
        std::fs::write(
            &manifest,
            "[[source]]\nname = \"Trips 2024\"\nurl = \"https://h/x/data.csv\"\ndataset = \"mobility\"\n\
             [[source]]\nurl = \"https://h/y/data.csv\"\noptions = { delimiter = \";\" }\n",
        )
        .unwrap();
        let mut config = ExtractConfig::new("/tmp/out");
        config.urls = vec![
            "https://h/a/rides.csv.gz?$$app_token=SECRET".into(),
            format!("file://{}", dir.path().join("local.tsv").display()),
        ];
        config.manifest = Some(manifest.display().to_string());
        let client = HttpClient::new(&Default::default(), Default::default()).unwrap();
        let items = plan(&config, &client, &StoreConfig::default())
            .await
            .unwrap();
        let summary: Vec<(String, String, String)> = items
            .iter()
            .map(|i| (i.shard_key(), i.data_ext.clone(), i.display.clone()))
            .collect();
        assert_eq!(summary[0].0, "rides/rides");
        assert_eq!(summary[0].1, "csv");
        assert!(
            summary[0].2.ends_with("$$app_token=REDACTED"),
            "{}",
            summary[0].2
        );
        assert_eq!(summary[1].0, "local/local");
        assert_eq!(summary[1].1, "tsv");
        assert_eq!(summary[2].0, "mobility/Trips_2024");
        assert_eq!(summary[3].0, "data/data");
        assert_eq!(items[3].csv.delimiter, Some(b';'));
    }

    #[tokio::test]
    async fn colliding_names_get_stable_suffixes() {
        let mut config = ExtractConfig::new("/tmp/out");
        config.dataset = Some("d".into());
        config.urls = vec![
            "https://h/2023/data.csv".into(),
            "https://h/2024/data.csv".into(),
        ];
        let client = HttpClient::new(&Default::default(), Default::default()).unwrap();
        let a = plan(&config, &client, &StoreConfig::default())
            .await
            .unwrap();
        let b = plan(&config, &client, &StoreConfig::default())
            .await
            .unwrap();
        assert_ne!(a[0].name, a[1].name);
        assert!(a[0].name.starts_with("data-"));
        assert_eq!(a[0].name, b[0].name);
    }

    #[tokio::test]
    async fn config_errors_are_config_errors() {
        let client = HttpClient::new(&Default::default(), Default::default()).unwrap();
        let config = ExtractConfig::new("/tmp/out");
        assert!(
            plan(&config, &client, &StoreConfig::default())
                .await
                .unwrap_err()
                .is_config()
        );
        let mut config = ExtractConfig::new("/tmp/out");
        config.urls = vec!["ftp://h/a.csv".into()];
        assert!(
            plan(&config, &client, &StoreConfig::default())
                .await
                .unwrap_err()
                .is_config()
        );
        config.urls = vec![];
        config.manifest = Some("/definitely/not/here.toml".into());
        assert!(
            plan(&config, &client, &StoreConfig::default())
                .await
                .unwrap_err()
                .is_config()
        );
    }
}
