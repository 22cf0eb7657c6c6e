//! `--table`: a literal `project.dataset.table[$partition]` or a template filled per object.
//!
//! Placeholders (`{...}`), filled from each object:
//! - `{name}`: the object's file name up to its first dot (`part-0001.snappy.parquet` -> `part-0001`).
//! - `{dataset}`: the extract dataset the object belongs to (from the manifest; for `--source`,
//!   the first directory below the glob's literal prefix).
//! - `{dir}`: the object's nearest directory that is not a Hive `key=value` segment.
//! - `{KEY}` for any other name: the value of a Hive `KEY=value` directory (`{dt}` from `dt=2024-01-01`).
//!
//! Values filled into the dataset and table parts are sanitised to `[A-Za-z0-9_]` (what
//! BigQuery dataset ids allow); a value filled after `$` (the partition decorator) has `-`, `:`,
//! `T` and spaces removed, so `dt=2024-01-01` gives `table$20240101`, and must then be 4, 6, 8
//! or 10 digits (YEAR, MONTH, DAY, HOUR partitions).

use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Var(String),
}

/// A parsed `--table` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableTemplate {
    raw: String,
    project: Vec<Piece>,
    dataset: Vec<Piece>,
    table: Vec<Piece>,
    decorator: Option<Vec<Piece>>,
}

/// A concrete destination: `project.dataset.table` plus an optional partition decorator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TableRef {
    pub(crate) project: String,
    pub(crate) dataset: String,
    pub(crate) table: String,
    /// `20240101` for `table$20240101`.
    pub(crate) decorator: Option<String>,
}

impl TableRef {
    /// `table` or `table$20240101`: the `tableId` a load job sends.
    pub(crate) fn table_id(&self) -> String {
        match &self.decorator {
            Some(d) => format!("{}${d}", self.table),
            None => self.table.clone(),
        }
    }

    /// The table without its decorator.
    pub(crate) fn base(&self) -> TableRef {
        TableRef {
            decorator: None,
            ..self.clone()
        }
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.project, self.dataset, self.table_id())
    }
}

/// What a template can be filled from, for one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ObjectVars {
    pub(crate) name: String,
    pub(crate) dataset: Option<String>,
    pub(crate) dir: Option<String>,
    pub(crate) hive: BTreeMap<String, String>,
}

impl ObjectVars {
    /// Derives the variables from an object key. `base` is the key prefix the input was
    /// rooted at (the glob's literal prefix); `dataset` overrides the path-derived one (manifests
    /// know it).
    pub(crate) fn from_key(key: &str, base: &str, dataset: Option<String>) -> ObjectVars {
        let (dirs, file) = match key.rsplit_once('/') {
            Some((dirs, file)) => (dirs, file),
            None => ("", key),
        };
        let name = file.split('.').next().unwrap_or(file).to_string();
        let mut hive = BTreeMap::new();
        let mut dir = None;
        for segment in dirs.split('/').filter(|s| !s.is_empty()) {
            match segment.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    hive.insert(k.to_string(), v.to_string());
                }
                _ => dir = Some(segment.to_string()),
            }
        }
        let dataset = dataset.or_else(|| {
            let below = key.strip_prefix(base).unwrap_or(key);
            let below = below.trim_start_matches('/');
            let (first, rest) = below.split_once('/')?;
            // Only a directory counts, and not a Hive segment.
            (!rest.is_empty() && !first.contains('=') && !first.is_empty())
                .then(|| first.to_string())
        });
        ObjectVars {
            name,
            dataset,
            dir,
            hive,
        }
    }

    fn get(&self, var: &str) -> Option<&str> {
        match var {
            "name" => Some(self.name.as_str()),
            "dataset" => self.dataset.as_deref(),
            "dir" => self.dir.as_deref(),
            key => self.hive.get(key).map(String::as_str),
        }
    }
}

fn parse_pieces(text: &str, whole: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                pieces.push(Piece::Literal(rest.to_string()));
                break;
            }
            Some(i) if rest.as_bytes()[i] == b'}' => {
                return Err(format!("table template {whole:?}: unmatched `}}`"));
            }
            Some(i) => {
                if i > 0 {
                    pieces.push(Piece::Literal(rest[..i].to_string()));
                }
                let after = &rest[i + 1..];
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("table template {whole:?}: unclosed `{{`"))?;
                let var = &after[..end];
                let valid = var
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(format!(
                        "table template {whole:?}: `{{{var}}}` is not a placeholder name (letters, digits, _)"
                    ));
                }
                pieces.push(Piece::Var(var.to_string()));
                rest = &after[end + 1..];
            }
        }
    }
    Ok(pieces)
}

impl TableTemplate {
    /// Parses `project.dataset.table[$partition]`, any part possibly holding placeholders.
    /// The project may itself contain dots (domain-scoped `example.com:project`): the table and
    /// dataset are the last two dot-separated parts.
    pub fn parse(raw: &str) -> Result<TableTemplate, String> {
        let text = raw.trim();
        // BigQuery allows spaces in table names, but in a flag they are nearly always a quoting
        // mistake (`--table "p.ds.t extra"`), and a name with spaces is awkward everywhere else.
        if text.chars().any(char::is_whitespace) {
            return Err(format!(
                "table {raw:?} contains whitespace; expected PROJECT.DATASET.TABLE"
            ));
        }
        let (path, decorator) = match text.split_once('$') {
            Some((path, decorator)) => (path, Some(decorator)),
            None => (text, None),
        };
        let mut parts = path.rsplitn(3, '.');
        let (Some(table), Some(dataset), Some(project)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!(
                "table {raw:?} must be PROJECT.DATASET.TABLE (optionally with placeholders and a $PARTITION decorator)"
            ));
        };
        for (what, part) in [("project", project), ("dataset", dataset), ("table", table)] {
            if part.is_empty() {
                return Err(format!("table {raw:?}: empty {what}"));
            }
        }
        // Only a domain-scoped project (`example.com:project`) holds dots, all before its `:`.
        let dotted = match project.split_once(':') {
            Some((_, name)) => name.contains('.'),
            None => project.contains('.'),
        };
        if dotted {
            return Err(format!(
                "table {raw:?} has {} dot-separated parts; expected PROJECT.DATASET.TABLE \
                 (only a domain-scoped project like example.com:project may contain dots)",
                path.split('.').count()
            ));
        }
        if decorator.is_some_and(str::is_empty) {
            return Err(format!(
                "table {raw:?}: empty partition decorator after `$`"
            ));
        }
        let template = TableTemplate {
            raw: text.to_string(),
            project: parse_pieces(project, raw)?,
            dataset: parse_pieces(dataset, raw)?,
            table: parse_pieces(table, raw)?,
            decorator: decorator.map(|d| parse_pieces(d, raw)).transpose()?,
        };
        if template.is_literal() {
            // Catch a malformed literal now rather than per object.
            template
                .render(&ObjectVars::default())
                .map_err(|e| format!("table {raw:?}: {e}"))?;
        }
        Ok(template)
    }

    /// No placeholders: every object goes to one table.
    pub(crate) fn is_literal(&self) -> bool {
        self.all_pieces().all(|p| matches!(p, Piece::Literal(_)))
    }

    /// Whether `var` is filled into the table's path (project, dataset or table; the decorator
    /// does not count): then objects with different values of it never share a table.
    pub(crate) fn table_uses(&self, var: &str) -> bool {
        self.project
            .iter()
            .chain(&self.dataset)
            .chain(&self.table)
            .any(|p| matches!(p, Piece::Var(v) if v == var))
    }

    /// The destination names a partition (`$...`).
    pub(crate) fn has_decorator(&self) -> bool {
        self.decorator.is_some()
    }

    /// The decorator when it has no placeholders (`t$20240101` -> `20240101`).
    pub(crate) fn decorator_literal(&self) -> Option<&str> {
        match self.decorator.as_deref() {
            Some([Piece::Literal(d)]) => Some(d),
            _ => None,
        }
    }

    fn all_pieces(&self) -> impl Iterator<Item = &Piece> {
        self.project
            .iter()
            .chain(&self.dataset)
            .chain(&self.table)
            .chain(self.decorator.iter().flatten())
    }

    fn fill(
        &self,
        pieces: &[Piece],
        vars: &ObjectVars,
        clean: fn(&str) -> String,
    ) -> Result<String, String> {
        let mut out = String::new();
        for piece in pieces {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::Var(v) => {
                    let value = vars.get(v).ok_or_else(|| missing(v))?;
                    out.push_str(&clean(value));
                }
            }
        }
        Ok(out)
    }

    /// The destination for an object with `vars`. Errors say which placeholder had no value.
    pub(crate) fn render(&self, vars: &ObjectVars) -> Result<TableRef, String> {
        let project = self.fill(&self.project, vars, |v| v.to_string())?;
        let dataset = self.fill(&self.dataset, vars, sanitise_id)?;
        let table = self.fill(&self.table, vars, sanitise_id)?;
        let decorator = self
            .decorator
            .as_ref()
            .map(|d| self.fill(d, vars, normalise_decorator))
            .transpose()?;
        validate_project(&project)?;
        if !dataset
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || dataset.len() > 1024
        {
            return Err(format!(
                "dataset {dataset:?}: dataset ids are letters, digits and underscores"
            ));
        }
        // BigQuery table ids: letters, marks, numbers, connectors and dashes (and spaces, which
        // Sluice refuses), at most 1024 bytes. Anything else (`;`, quotes, `.`, `$`) is a typo
        // or an injection attempt, refused before any API call.
        if table.is_empty()
            || table.len() > 1024
            || !table
                .chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "table id {table:?} is not valid: letters, digits, `_` and `-` only"
            ));
        }
        if let Some(d) = &decorator {
            validate_decorator(d)?;
        }
        Ok(TableRef {
            project,
            dataset,
            table,
            decorator,
        })
    }
}

impl fmt::Display for TableTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn missing(var: &str) -> String {
    match var {
        "dataset" => {
            "`{dataset}` has no value: the object is not in a manifest entry with a dataset \
                      and has no directory below the source prefix"
                .to_string()
        }
        "dir" => "`{dir}` has no value: the object has no directory".to_string(),
        key => format!("`{{{key}}}` has no value: the object's path has no `{key}=...` directory"),
    }
}

/// Project ids: `[a-z0-9-]` (Sluice also lets uppercase through: BigQuery reports those
/// itself), optionally domain-scoped (`example.com:project`).
fn validate_project(project: &str) -> Result<(), String> {
    let (domain, name) = match project.split_once(':') {
        Some((domain, name)) => (Some(domain), name),
        None => (None, project),
    };
    let name_ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let domain_ok = domain.is_none_or(|d| {
        !d.is_empty()
            && d.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    });
    if name_ok && domain_ok {
        Ok(())
    } else {
        Err(format!(
            "project {project:?} is not a valid project id: letters, digits and `-` (with an \
             optional `domain:` prefix)"
        ))
    }
}

/// `[A-Za-z0-9_]`, other runs become `_` (so `my-data.v2` -> `my_data_v2`).
fn sanitise_id(value: &str) -> String {
    crate::job_id::sanitise(value)
}

/// `2024-01-01` -> `20240101`, `2024-01-01T05` -> `2024010105`.
fn normalise_decorator(value: &str) -> String {
    value
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | 'T' | ' ' | '/'))
        .collect()
}

/// The decorators a time-partitioned table takes, plus BigQuery's two special partitions.
fn validate_decorator(d: &str) -> Result<(), String> {
    if d == "__NULL__" || d == "__UNPARTITIONED__" {
        return Ok(());
    }
    if d.bytes().all(|b| b.is_ascii_digit()) && matches!(d.len(), 4 | 6 | 8 | 10) {
        return Ok(());
    }
    Err(format!(
        "partition decorator ${d} is not YYYY, YYYYMM, YYYYMMDD or YYYYMMDDHH"
    ))
}

/// Decorator length for a partition granularity (`DAY` -> 8).
pub(crate) fn decorator_len(partition_type: &str) -> Option<usize> {
    match partition_type {
        "YEAR" => Some(4),
        "MONTH" => Some(6),
        "DAY" => Some(8),
        "HOUR" => Some(10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(key: &str) -> ObjectVars {
        ObjectVars::from_key(key, "raw/", None)
    }

    #[test]
    fn literal_tables() {
        let t = TableTemplate::parse("proj.ds.events").unwrap();
        assert!(t.is_literal() && !t.has_decorator());
        let r = t.render(&ObjectVars::default()).unwrap();
        assert_eq!(r.to_string(), "proj.ds.events");
        let t = TableTemplate::parse("example.com:proj.ds.events$20240101").unwrap();
        let r = t.render(&ObjectVars::default()).unwrap();
        assert_eq!(r.project, "example.com:proj");
        assert_eq!(r.table_id(), "events$20240101");
        assert_eq!(r.base().to_string(), "example.com:proj.ds.events");
    }

    #[test]
    fn object_vars_from_paths() {
        let v = vars("raw/trips/dt=2024-01-01/hour=05/part-0001.snappy.parquet");
        assert_eq!(v.name, "part-0001");
        assert_eq!(v.dataset.as_deref(), Some("trips"));
        assert_eq!(v.dir.as_deref(), Some("trips"));
        assert_eq!(v.hive.get("dt").map(String::as_str), Some("2024-01-01"));
        assert_eq!(v.hive.get("hour").map(String::as_str), Some("05"));
        let flat = vars("raw/a.csv");
        assert_eq!(flat.dataset, None);
        assert_eq!(flat.dir.as_deref(), Some("raw"));
        let hive_first = vars("raw/dt=2024-01-01/a.parquet");
        assert_eq!(hive_first.dataset, None);
        let from_manifest = ObjectVars::from_key("raw/x/a.parquet", "raw/", Some("city".into()));
        assert_eq!(from_manifest.dataset.as_deref(), Some("city"));
    }

    #[test]
    fn templates_fill_sanitise_and_decorate() {
        let t = TableTemplate::parse("p.raw_{dataset}.{name}${dt}").unwrap();
        assert!(!t.is_literal() && t.has_decorator());
        let r = t
            .render(&vars("raw/city-data/dt=2024-01-31/trips.v2.parquet"))
            .unwrap();
        assert_eq!(r.to_string(), "p.raw_city_data.trips$20240131");
        let hourly = TableTemplate::parse("p.ds.t${dt}{hour}").unwrap();
        let r = hourly
            .render(&vars("raw/x/dt=2024-01-31/hour=07/a.parquet"))
            .unwrap();
        assert_eq!(r.decorator.as_deref(), Some("2024013107"));
    }

    #[test]
    fn errors_name_the_problem() {
        for (raw, needle) in [
            ("ds.table", "PROJECT.DATASET.TABLE"),
            ("p..t", "empty dataset"),
            ("p.ds.t$", "empty partition decorator"),
            ("p.ds.{na-me}", "not a placeholder name"),
            ("p.ds.{name", "unclosed"),
            ("p.ds.name}", "unmatched"),
            ("p.ds.t$2024-1", "not YYYY"),
            ("p.my-ds.t", "dataset ids"),
            ("p.ds.my table", "whitespace"),
            (" p.ds .t", "whitespace"),
            ("p.ds.t;drop", "not valid"),
            ("p.ds.t'x", "not valid"),
            ("p;x.ds.t", "not a valid project id"),
            ("a.b.c.d", "4 dot-separated parts"),
            ("a..c.d", "dot-separated parts"),
            ("p.ds.", "empty table"),
            (".ds.t", "empty project"),
        ] {
            let err = TableTemplate::parse(raw).unwrap_err();
            assert!(err.contains(needle), "{raw}: {err}");
        }
        let t = TableTemplate::parse("p.ds.t${dt}").unwrap();
        let err = t.render(&vars("raw/x/a.parquet")).unwrap_err();
        assert!(err.contains("`dt=...`"), "{err}");
        let t = TableTemplate::parse("p.{dataset}.t").unwrap();
        let err = t.render(&vars("raw/a.parquet")).unwrap_err();
        assert!(err.contains("{dataset}"), "{err}");
        let t = TableTemplate::parse("p.ds.t${dt}").unwrap();
        let err = t.render(&vars("raw/x/dt=latest/a.parquet")).unwrap_err();
        assert!(err.contains("$latest"), "{err}");
    }

    #[test]
    fn decorator_lengths() {
        assert_eq!(decorator_len("DAY"), Some(8));
        assert_eq!(decorator_len("HOUR"), Some(10));
        assert_eq!(decorator_len("WEEK"), None);
    }
}
