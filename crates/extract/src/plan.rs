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
use crate::naming::{
    identity_has_query, last_segment, sanitize, sanitize_dataset, split_extensions, url_identity,
    with_identity_hash,
};
use crate::redact::redact_url;
use crate::source::http::{HttpClient, HttpTarget};
use crate::source::manifest::{self, EntryKind, SourceEntry};
use crate::source::socrata::{self, SocrataResource};
use crate::source::socrata_pin::{PinScope, pinned_plan};
use crate::source::socrata_query::CURSOR_COLUMN;
use crate::source::{Origin, PageInfo, WorkItem};
use crate::state::{self, StateReader};

/// Largest manifest or schema file read into memory.
const SMALL_FILE: u64 = 16 * 1024 * 1024;

/// Reads a small text file from a local path, `file://`, `http(s)://` or `gs://`.
pub(crate) async fn fetch_text(
    location: &str,
    client: &HttpClient,
    store: &StoreConfig,
) -> Result<String> {
    let shown = redact_url(location);
    let bytes = if location.starts_with("http://") || location.starts_with("https://") {
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
            ExtractError::config_source(format!("cannot read {}", path.display()), e)
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
    if let Some(label) = &options.encoding {
        csv.encoding = Some(
            crate::config::parse_encoding(label)
                .map_err(|m| ExtractError::Config(format!("options.encoding: {m}")))?,
        );
    }
    Ok(csv)
}

/// Builds the full item list, planning every Socrata source afresh.
pub async fn plan(
    config: &ExtractConfig,
    client: &HttpClient,
    store: &StoreConfig,
) -> Result<Vec<WorkItem>> {
    plan_pinned(config, client, store, None).await
}

/// [`plan`], with Socrata plans pinned per execution in `pins` (`source::socrata_pin`).
pub(crate) async fn plan_pinned(
    config: &ExtractConfig,
    client: &HttpClient,
    store: &StoreConfig,
    pins: Option<&PinScope<'_>>,
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

    // `--since auto` without a literal `--since`: Socrata windows from the stored state.
    let mut states = (config.since_auto && config.socrata_options.since.is_none())
        .then(|| StateReader::new(&config.dest, store));
    let mut schemas: HashMap<String, Arc<SchemaOverride>> = HashMap::new();
    let mut items = Vec::new();
    // Names are settled per entry (all pages of a Socrata source share one); `owners[i]` is
    // the entry of `items[i]`.
    let mut names: Vec<EntryName> = Vec::new();
    let mut owners: Vec<usize> = Vec::new();
    for entry in &entries {
        let format = entry.format.unwrap_or(config.format);
        state::check_cursor(
            config,
            matches!(entry.kind, EntryKind::Socrata),
            format,
            &redact_url(&entry.url),
        )?;
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
                let (origin, display, identity) =
                    if url.starts_with("http://") || url.starts_with("https://") {
                        let target = HttpTarget::new(url)?;
                        let display = target.display().to_string();
                        (Origin::Http(Box::new(target)), display, url_identity(url))
                    } else {
                        let path = local_path(url)?;
                        let display = path.display().to_string();
                        (Origin::Local(path), display.clone(), display)
                    };
                owners.push(names.len());
                names.push(EntryName::new(
                    dataset_of(&name),
                    name.clone(),
                    identity,
                    entry.name.is_some(),
                    display.clone(),
                ));
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
                    cursor: None,
                    planning_error: None,
                    cursor_spec: None,
                });
            }
            EntryKind::Socrata => {
                let resource = SocrataResource::parse(&entry.url)?;
                let mut base = HttpTarget::new(&entry.url)?;
                if let Some(token) = &config.socrata_options.app_token {
                    base = base.with_secret_header("x-app-token", token)?;
                }
                let identity = url_identity(&format!(
                    "{}?{}",
                    resource.base,
                    resource.identity_query.join("&")
                ));
                let name = sanitize(entry.name.as_deref().unwrap_or(&resource.id));
                // The window's lower bound: `--since TS`, or with `--since auto` the stored
                // mark minus `--lag` (none stored: a full pull).
                let since = match &mut states {
                    Some(states) => {
                        let stored = states.entry(&dataset_of(&name), &name).await?;
                        state::since_from_mark(stored.as_ref(), config.lag)?
                    }
                    None => config.socrata_options.since.clone(),
                };
                let want_types = format == OutputFormat::Parquet;
                let plan = pinned_plan(
                    pins,
                    &identity,
                    config.socrata_options.page_size.max(1),
                    since.as_deref(),
                    socrata::plan(
                        client,
                        &base,
                        &resource,
                        &config.socrata_options,
                        since.as_deref(),
                        want_types,
                    ),
                )
                .await?;
                let plan = match plan {
                    Ok(plan) => plan,
                    Err(cause) => {
                        // One failed item for the whole source; the others go on.
                        owners.push(names.len());
                        names.push(EntryName::new(
                            dataset_of(&name),
                            name.clone(),
                            identity,
                            entry.name.is_some(),
                            redact_url(&entry.url),
                        ));
                        items.push(WorkItem {
                            dataset: dataset_of(&name),
                            name,
                            display: base.display().to_string(),
                            origin: Origin::Http(Box::new(base)),
                            data_ext: "csv".into(),
                            compression_ext: String::new(),
                            format,
                            page: None,
                            csv,
                            schema_override,
                            soda_types: None,
                            members: None,
                            decompress,
                            planned_version: None,
                            cursor: None,
                            planning_error: Some(format!("planning the Socrata pull: {cause}")),
                            cursor_spec: None,
                        });
                        continue;
                    }
                };
                let pages = plan.pages(&resource);
                let version = plan.version(&resource);
                tracing::info!(
                    resource = %redact_url(&resource.base),
                    rows = plan.rows,
                    pages = pages.len(),
                    upper = plan.upper.as_deref().unwrap_or(""),
                    typed = plan.types.is_some(),
                    "Socrata {}: {} rows in {} pages{}",
                    redact_url(&resource.base),
                    plan.rows,
                    pages.len(),
                    match (&plan.since, &plan.upper) {
                        (Some(s), Some(u)) => format!(", :updated_at in ({s}, {u}]"),
                        (None, Some(u)) => format!(", :updated_at up to {u}"),
                        _ => String::new(),
                    }
                );
                // Every page records the window; the state key is set once names settle.
                let cursor = plan
                    .upper
                    .as_ref()
                    .map(|upper| sluice_manifest::CursorRecord {
                        state_key: String::new(),
                        column: Some(CURSOR_COLUMN.to_string()),
                        from: plan.since.clone(),
                        to: Some(upper.clone()),
                        read_rows: None,
                        filtered_rows: None,
                    });
                let types = plan.types.map(Arc::new);
                let entry_index = names.len();
                names.push(EntryName::new(
                    dataset_of(&name),
                    name.clone(),
                    identity,
                    entry.name.is_some(),
                    redact_url(&entry.url),
                ));
                for page in &pages {
                    let target = base.derive(&page.url)?;
                    owners.push(entry_index);
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
                        planned_version: Some(version.clone()),
                        cursor: cursor.clone(),
                        planning_error: None,
                        cursor_spec: None,
                    });
                }
            }
        }
    }
    disambiguate(&mut names);
    for (item, &owner) in items.iter_mut().zip(&owners) {
        item.name = names[owner].name.clone();
        // The state key follows the final name. Files under `--since auto` are compared by
        // version only (no cursor column, no window).
        let key = state::state_key(&item.dataset, &item.name);
        match &mut item.cursor {
            Some(cursor) => cursor.state_key = key,
            None if config.since_auto && item.page.is_none() => {
                // `--cursor COL`: the stored mark the rows are filtered by (`convert::cursor`).
                if let (Some(column), Some(states)) = (&config.cursor, &mut states) {
                    let spec =
                        state::cursor_spec(states, &item.dataset, &item.name, column, config.lag)
                            .await?;
                    item.cursor_spec = Some(Arc::new(spec));
                }
                item.cursor = Some(sluice_manifest::CursorRecord {
                    state_key: key,
                    column: config.cursor.clone(),
                    from: None,
                    to: None,
                    read_rows: None,
                    filtered_rows: None,
                });
            }
            None => {}
        }
    }
    check_unique(&items, &owners, &names)?;
    Ok(items)
}

/// How one configured source is named (see `naming`'s module docs for the rules).
struct EntryName {
    /// Sanitized; the directory and the `load` table.
    dataset: String,
    /// The stem of its objects: readable, plus the identity's hash where that is ambiguous.
    name: String,
    /// What it reads (URL with query, no secrets; or path).
    identity: String,
    /// From a manifest `name`, kept as given.
    explicit: bool,
    /// Already carries the identity's hash.
    hashed: bool,
    /// For messages (URL redacted).
    display: String,
}

impl EntryName {
    /// A derived name whose identity has a query gets the hash at once: the readable name
    /// never shows the query, so two queries of one file would otherwise share it.
    fn new(
        dataset: String,
        readable: String,
        identity: String,
        explicit: bool,
        display: String,
    ) -> Self {
        let hashed = !explicit && identity_has_query(&identity);
        let name = if hashed {
            with_identity_hash(&readable, &identity)
        } else {
            readable
        };
        EntryName {
            dataset,
            name,
            identity,
            explicit,
            hashed,
            display,
        }
    }
}

/// The group rule: derived names still bare that more than one source shares in one dataset
/// all get the hash of their identity (with a warning: a manifest `name` pins a key).
/// Explicit names are never changed; what still collides is refused by [`check_unique`].
fn disambiguate(names: &mut [EntryName]) {
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, entry) in names.iter().enumerate() {
        groups
            .entry((entry.dataset.clone(), entry.name.clone()))
            .or_default()
            .push(i);
    }
    for ((dataset, name), members) in groups {
        if members.len() < 2 {
            continue;
        }
        let renamed: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| !names[i].explicit && !names[i].hashed)
            .collect();
        if renamed.is_empty() {
            continue;
        }
        let sources: Vec<&str> = members.iter().map(|&i| names[i].display.as_str()).collect();
        tracing::warn!(
            dataset = %dataset,
            name = %name,
            "sources {} all map to {dataset}/{name}; appending a hash of the URL to the derived \
             names (give them distinct `name`s in a manifest to choose)",
            sources.join(", ")
        );
        for i in renamed {
            let entry = &mut names[i];
            entry.name = with_identity_hash(&entry.name, &entry.identity);
            entry.hashed = true;
        }
    }
}

/// No two items of a plan may share an object stem or a receipt: a usage error naming both
/// sources, before anything is written.
fn check_unique(items: &[WorkItem], owners: &[usize], names: &[EntryName]) -> Result<()> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let chunk = format!("{:05}", item.chunk());
        let receipt = match &item.page {
            Some(_) => format!("{}-{chunk}", item.name),
            None => item.name.clone(),
        };
        let keys = [
            format!("objects {}/{}-{chunk}.*", item.dataset, item.name),
            format!("receipt _manifests/items/{}/{receipt}.json", item.dataset),
        ];
        for key in keys {
            let Some(&j) = seen.get(&key) else {
                seen.insert(key, i);
                continue;
            };
            let (a, b) = (&names[owners[j]], &names[owners[i]]);
            if owners[i] == owners[j] {
                // One entry's own items (Socrata pages) are distinct by construction.
                continue;
            }
            let what = key.split_once(' ').map_or(key.as_str(), |(_, k)| k);
            return Err(ExtractError::Config(if a.identity == b.identity {
                format!(
                    "{} is listed twice for dataset {}: both would write {what}; list it once",
                    b.display, b.dataset
                )
            } else {
                format!(
                    "{} and {} would both write {what}: give them distinct `name`s (or datasets) \
                     in a manifest",
                    a.display, b.display
                )
            }));
        }
    }
    Ok(())
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
    async fn a_manifest_entry_can_name_its_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("m.toml");
        let client = HttpClient::new(&Default::default(), Default::default()).unwrap();
        std::fs::write(
            &manifest,
            "[[source]]\nurl = \"https://h/a.csv\"\noptions = { encoding = \"latin1\" }\n\
             [[source]]\nurl = \"https://h/b.csv\"\n",
        )
        .unwrap();
        let mut config = ExtractConfig::new("/tmp/out");
        config.manifest = Some(manifest.display().to_string());
        let items = plan(&config, &client, &StoreConfig::default())
            .await
            .unwrap();
        assert_eq!(items[0].csv.encoding, Some(encoding_rs::WINDOWS_1252));
        assert_eq!(items[1].csv.encoding, None);

        std::fs::write(
            &manifest,
            "[[source]]\nurl = \"https://h/a.csv\"\noptions = { encoding = \"klingon\" }\n",
        )
        .unwrap();
        let error = plan(&config, &client, &StoreConfig::default())
            .await
            .unwrap_err();
        assert!(error.is_config());
        assert!(error.to_string().contains("options.encoding"), "{error}");
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
