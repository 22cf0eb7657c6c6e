//! One schema per dataset: the files of one table may differ only where type inference caused
//! it, and load widens them to one schema that holds every value exactly.
//!
//! Extract infers each file's schema on its own, so a column with no value in one file is
//! STRING there and INT64 in the others, and a column with `1.5` in one file is FLOAT64 there.
//! The footer says which columns hold no value at all (every row group's `null_count` equals
//! its row count), and for integer columns their range; with that, the join of two columns is:
//!
//! | one file | other file | joined | why it is exact |
//! |---|---|---|---|
//! | any type, no value in the file | T | T | there is nothing to convert |
//! | INTEGER within +-2^53 | FLOAT | FLOAT | every such integer is a FLOAT64 |
//! | DATE | TIMESTAMP | TIMESTAMP | midnight UTC of the day |
//! | INTEGER or DATE | STRING | STRING | their text is canonical (`-12`, `2024-01-31`): the cast gives back the text extract read |
//! | anything else (FLOAT or BOOLEAN or TIMESTAMP vs STRING, INTEGER beyond 2^53 vs FLOAT, RECORD, REPEATED) | | conflict | the cast would change text (`1.50` -> `1.5`, `TRUE` -> `true`) |
//!
//! A conflict stays the error it always was, naming both files and the column. Modes join as
//! before (REQUIRED and NULLABLE give NULLABLE). The same join applies against an existing
//! table ([`adopt_table_types`]): a column with no value in any file takes the table's type, and
//! the table's wider type wins over a narrower one the files inferred.
//!
//! Objects whose own types differ from the joined schema are "drifted": BigQuery cannot load a
//! Parquet STRING column into an INTEGER one, so `execute/widen.rs` loads each group of
//! drifted objects into a staging table with its own schema and inserts `CAST`s from there.

use std::collections::BTreeMap;

use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;

use crate::config::{LoadConfig, WriteMode};
use crate::errors::LoadError;
use crate::plan::WorkItem;
use crate::schema::{self, Disagreement, Field, Mode, ParquetSchema};
use crate::spec::LoadSpec;

/// 2^53: every integer of at most this magnitude is exactly a FLOAT64.
const EXACT_IN_FLOAT: i64 = 1 << 53;

/// What a footer says about one top-level column's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ColumnFacts {
    /// Every row group's statistics say every row is NULL (false when statistics are missing).
    pub(crate) no_value: bool,
    /// An integer column's smallest and largest value, when every row group records them.
    pub(crate) int_range: Option<(i64, i64)>,
}

impl ColumnFacts {
    fn join(self, other: ColumnFacts) -> ColumnFacts {
        let int_range = match (self.no_value, other.no_value) {
            (true, _) => other.int_range,
            (_, true) => self.int_range,
            _ => self
                .int_range
                .zip(other.int_range)
                .map(|((a, b), (c, d))| (a.min(c), b.max(d))),
        };
        ColumnFacts {
            no_value: self.no_value && other.no_value,
            int_range,
        }
    }

    fn exact_in_float(self) -> bool {
        self.no_value
            || self
                .int_range
                .is_some_and(|(lo, hi)| lo >= -EXACT_IN_FLOAT && hi <= EXACT_IN_FLOAT)
    }
}

/// Facts per top-level column name.
pub(crate) type Facts = BTreeMap<String, ColumnFacts>;

/// The facts of the top-level primitive columns of a footer (nested columns get none: they
/// are never widened).
pub(crate) fn facts(metadata: &ParquetMetaData) -> Facts {
    let mut out = Facts::new();
    let groups = metadata.row_groups();
    let Some(first) = groups.first() else {
        // No row group, no rows: no column holds a value.
        for field in metadata.file_metadata().schema().get_fields() {
            out.insert(
                field.name().to_string(),
                ColumnFacts {
                    no_value: true,
                    int_range: None,
                },
            );
        }
        return out;
    };
    for (i, column) in first.columns().iter().enumerate() {
        let parts = column.column_path().parts();
        let [name] = parts else {
            continue;
        };
        let mut no_value = true;
        let mut int_range: Option<(i64, i64)> = Some((i64::MAX, i64::MIN));
        for group in groups {
            let rows = group.num_rows().max(0) as u64;
            let stats = group.column(i).statistics();
            let nulls = stats.and_then(Statistics::null_count_opt);
            let all_null = nulls == Some(rows);
            no_value &= all_null;
            if all_null {
                continue;
            }
            let range = match stats {
                Some(Statistics::Int64(s)) => s.min_opt().copied().zip(s.max_opt().copied()),
                Some(Statistics::Int32(s)) => s
                    .min_opt()
                    .map(|v| i64::from(*v))
                    .zip(s.max_opt().map(|v| i64::from(*v))),
                _ => None,
            };
            int_range = int_range
                .zip(range)
                .map(|((a, b), (c, d))| (a.min(c), b.max(d)));
        }
        out.insert(
            name.clone(),
            ColumnFacts {
                no_value,
                int_range: int_range.filter(|(lo, hi)| lo <= hi),
            },
        );
    }
    out
}

/// An object's schema and facts from its manifest record, for planning without its footer:
/// extract writes every column NULLABLE with one of six types, which map as a footer's would
/// (`INT64` -> `INTEGER`, `FLOAT64` -> `FLOAT`, `BOOL` -> `BOOLEAN`, `DATE`, `TIMESTAMP`,
/// `STRING`). `None` when the record has no columns (passthrough) or an unknown type: read the
/// footer then. Columns without `values` (manifests from before it existed) get no facts, so
/// drift in them stays an error.
pub(crate) fn object_schema_from_manifest(
    columns: &[sluice_manifest::ColumnRecord],
) -> Option<ObjectSchema> {
    if columns.is_empty() {
        return None;
    }
    let mut fields = Vec::with_capacity(columns.len());
    let mut facts = Facts::new();
    for c in columns {
        let field_type = schema::canonical_type(&c.column_type)?;
        fields.push(Field::new(c.name.clone(), field_type, Mode::Nullable));
        if let Some(v) = c.values {
            facts.insert(
                c.name.clone(),
                ColumnFacts {
                    no_value: v.none,
                    int_range: v.int_range,
                },
            );
        }
    }
    Some(ObjectSchema {
        schema: ParquetSchema {
            fields,
            decimal_targets: Default::default(),
            list_inference: false,
            enum_as_string: false,
        },
        facts,
    })
}

/// One object's schema and facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectSchema {
    pub(crate) schema: ParquetSchema,
    pub(crate) facts: Facts,
}

/// Objects that share one schema: their positions in the item and their fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) fields: Vec<Field>,
    pub(crate) objects: Vec<usize>,
}

/// The item's joined schema, the joined facts, and its objects grouped by their own schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unified {
    pub(crate) schema: ParquetSchema,
    pub(crate) facts: Facts,
    pub(crate) groups: Vec<Group>,
}

/// Joins the schemas of an item's objects (in object order). The error names the position of
/// the object that conflicts with the ones before it, and how.
pub(crate) fn unify(objects: Vec<ObjectSchema>) -> Result<Unified, (usize, Disagreement)> {
    let mut groups: Vec<Group> = Vec::new();
    let mut joined: Option<(ParquetSchema, Facts)> = None;
    for (j, object) in objects.into_iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| same_types(&g.fields, &object.schema.fields))
        {
            Some(g) => {
                relax_modes(&mut g.fields, &object.schema.fields);
                g.objects.push(j);
            }
            None => groups.push(Group {
                fields: object.schema.fields.clone(),
                objects: vec![j],
            }),
        }
        match joined.as_mut() {
            None => joined = Some((object.schema, object.facts)),
            Some((schema, facts)) => {
                join_fields(
                    &mut schema.fields,
                    facts,
                    &object.schema.fields,
                    &object.facts,
                )
                .map_err(|d| (j, d))?;
                schema.decimal_targets.extend(object.schema.decimal_targets);
                schema.list_inference |= object.schema.list_inference;
                schema.enum_as_string |= object.schema.enum_as_string;
                for (name, theirs) in object.facts {
                    let mine = facts.entry(name).or_default();
                    *mine = mine.join(theirs);
                }
            }
        }
    }
    let (schema, facts) = joined.expect("a work item has at least one object");
    Ok(Unified {
        schema,
        facts,
        groups,
    })
}

/// Same names, order, types and nesting; modes may differ between REQUIRED and NULLABLE.
fn same_types(a: &[Field], b: &[Field]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.field_type == y.field_type
                && (x.mode == Mode::Repeated) == (y.mode == Mode::Repeated)
                && same_types(&x.fields, &y.fields)
        })
}

fn relax_modes(into: &mut [Field], other: &[Field]) {
    for (mine, theirs) in into.iter_mut().zip(other) {
        if mine.mode != theirs.mode && mine.mode != Mode::Repeated {
            mine.mode = Mode::Nullable;
        }
        relax_modes(&mut mine.fields, &theirs.fields);
    }
}

/// The lattice's join of two top-level scalar types, or `None` for a conflict.
fn join_type(a: &str, fa: ColumnFacts, b: &str, fb: ColumnFacts) -> Option<&'static str> {
    let canonical = |t: &str| schema::canonical_type(t);
    let (a, b) = (canonical(a)?, canonical(b)?);
    if a == b {
        return Some(a);
    }
    if fb.no_value && b != "RECORD" {
        return Some(a);
    }
    if fa.no_value && a != "RECORD" {
        return Some(b);
    }
    match (a, b) {
        ("INTEGER", "FLOAT") if fa.exact_in_float() => Some("FLOAT"),
        ("FLOAT", "INTEGER") if fb.exact_in_float() => Some("FLOAT"),
        ("DATE", "TIMESTAMP") | ("TIMESTAMP", "DATE") => Some("TIMESTAMP"),
        ("INTEGER" | "DATE", "STRING") | ("STRING", "INTEGER" | "DATE") => Some("STRING"),
        _ => None,
    }
}

/// Joins `other` into `merged`: the top level by the lattice, nested fields exactly.
fn join_fields(
    merged: &mut [Field],
    merged_facts: &Facts,
    other: &[Field],
    other_facts: &Facts,
) -> Result<(), Disagreement> {
    // Names and order (and the nested fields) first: a missing or moved column is no drift
    // inference causes.
    let shape = |fields: &[Field]| -> Vec<Field> {
        fields
            .iter()
            .map(|f| Field {
                field_type: if f.fields.is_empty() {
                    "SCALAR".into()
                } else {
                    f.field_type.clone()
                },
                mode: if f.mode == Mode::Repeated {
                    Mode::Repeated
                } else {
                    Mode::Nullable
                },
                ..f.clone()
            })
            .collect()
    };
    schema::merge_fields(&mut shape(merged), &shape(other), "")?;
    for (mine, theirs) in merged.iter_mut().zip(other) {
        let nested = !mine.fields.is_empty()
            || !theirs.fields.is_empty()
            || mine.mode == Mode::Repeated
            || theirs.mode == Mode::Repeated;
        if nested {
            schema::merge_fields(std::slice::from_mut(mine), std::slice::from_ref(theirs), "")?;
            continue;
        }
        let fa = merged_facts.get(&mine.name).copied().unwrap_or_default();
        let fb = other_facts.get(&theirs.name).copied().unwrap_or_default();
        let Some(joined) = join_type(&mine.field_type, fa, &theirs.field_type, fb) else {
            return Err(Disagreement {
                column: mine.name.clone(),
                detail: format!(
                    "type {} differs from {}, and no type holds both without changing a value",
                    theirs.describe_type(),
                    mine.describe_type()
                ),
            });
        };
        mine.field_type = joined.to_string();
        if mine.mode != theirs.mode {
            mine.mode = Mode::Nullable;
        }
    }
    Ok(())
}

/// Against an existing table: where the files' joined type differs from the table's and the
/// lattice says the table's type holds the files' values exactly (no value in any file, INTEGER
/// into FLOAT, INTEGER or DATE into STRING, DATE into TIMESTAMP), the sent column takes the
/// table's type. Anything else is left for `compat::check` to refuse. Returns whether a type
/// changed.
pub(crate) fn adopt_table_types(sent: &mut [Field], facts: &Facts, table: &[Field]) -> bool {
    let mut changed = false;
    for s in sent.iter_mut() {
        if !s.fields.is_empty() || s.mode == Mode::Repeated {
            continue;
        }
        let Some(t) = table.iter().find(|t| t.name.eq_ignore_ascii_case(&s.name)) else {
            continue;
        };
        if !t.fields.is_empty() || t.mode == Mode::Repeated {
            continue;
        }
        let (Some(have), Some(want)) = (
            schema::canonical_type(&s.field_type),
            schema::canonical_type(&t.field_type),
        ) else {
            continue;
        };
        if have == want {
            continue;
        }
        let f = facts.get(&s.name).copied().unwrap_or_default();
        let table_facts = ColumnFacts::default();
        if join_type(have, f, want, table_facts) == Some(want) {
            s.field_type = want.to_string();
            changed = true;
        }
    }
    changed
}

/// The groups that must go through staging: none when every group loads as it is into
/// `target`, else all of them (one INSERT then writes the item, atomically).
pub(crate) fn drifted<'a>(groups: &'a [Group], target: &[Field], hive: bool) -> Vec<&'a Group> {
    if groups.iter().all(|g| loads_as_is(&g.fields, target, hive)) {
        Vec::new()
    } else {
        groups.iter().collect()
    }
}

/// Refuses drifted objects where an INSERT cannot stand in for the load job: anything but
/// `--write append` into a base table (`execute/widen.rs`). Prepare calls it, so the refusal
/// comes before any job, naming the groups' differing columns and the fix.
pub(crate) fn refuse_unsupported(
    config: &LoadConfig,
    item: &WorkItem,
    spec: &LoadSpec,
    drifted: &[&Group],
) -> Result<(), LoadError> {
    if drifted.is_empty() {
        return Ok(());
    }
    let why = if config.write != WriteMode::Append {
        format!("--write {}", config.write.flag_name())
    } else if item.destination.decorator.is_some() {
        "a `$` partition destination".to_string()
    } else {
        return Ok(());
    };
    let target = spec.schema.as_deref().unwrap_or_default();
    let groups: Vec<String> = drifted
        .iter()
        .filter_map(|g| {
            let differing: Vec<String> = g
                .fields
                .iter()
                .zip(target)
                .filter(|(a, b)| a.field_type != b.field_type)
                .map(|(a, b)| format!("`{}` {} not {}", a.name, a.field_type, b.field_type))
                .collect();
            (!differing.is_empty()).then(|| {
                format!(
                    "{} object(s) like {}: {}",
                    g.objects.len(),
                    item.objects[g.objects[0]].url(),
                    differing.join(", ")
                )
            })
        })
        .collect();
    Err(LoadError::Table {
        table: item.destination.to_string(),
        reason: format!(
            "its files' inferred schemas differ ({}); load widens them only with --write append \
             into a base table, not with {why}: re-extract with a schema file (--schema) or \
             load with --write append",
            groups.join("; ")
        ),
    })
}

/// Whether the group's objects load as they are into `target` (same types, top level). With
/// `hive`, `target` ends with the `key=value` directories' columns, which the files lack.
pub(crate) fn loads_as_is(group: &[Field], target: &[Field], hive: bool) -> bool {
    (group.len() == target.len() || (hive && group.len() < target.len()))
        && group.iter().zip(target).all(|(g, t)| {
            g.name.eq_ignore_ascii_case(&t.name)
                && schema::canonical_type(&g.field_type) == schema::canonical_type(&t.field_type)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn object(columns: &[(&str, &str, ColumnFacts)]) -> ObjectSchema {
        ObjectSchema {
            schema: ParquetSchema {
                fields: columns
                    .iter()
                    .map(|(n, t, _)| Field::new(*n, t, Mode::Nullable))
                    .collect(),
                decimal_targets: BTreeSet::new(),
                list_inference: false,
                enum_as_string: false,
            },
            facts: columns
                .iter()
                .map(|(n, _, f)| ((*n).to_string(), *f))
                .collect(),
        }
    }

    const VALUES: ColumnFacts = ColumnFacts {
        no_value: false,
        int_range: None,
    };
    const EMPTY: ColumnFacts = ColumnFacts {
        no_value: true,
        int_range: None,
    };

    fn ints(lo: i64, hi: i64) -> ColumnFacts {
        ColumnFacts {
            no_value: false,
            int_range: Some((lo, hi)),
        }
    }

    fn types(u: &Unified) -> Vec<String> {
        u.schema
            .fields
            .iter()
            .map(|f| format!("{} {}", f.name, f.field_type))
            .collect()
    }

    #[test]
    fn a_column_with_no_value_takes_the_type_others_establish() {
        let a = object(&[("id", "INTEGER", ints(1, 9)), ("dep", "STRING", EMPTY)]);
        let b = object(&[
            ("id", "INTEGER", ints(3, 4)),
            ("dep", "INTEGER", ints(5, 7)),
        ]);
        let u = unify(vec![a.clone(), b.clone()]).unwrap();
        assert_eq!(types(&u), ["id INTEGER", "dep INTEGER"]);
        assert_eq!(u.groups.len(), 2);
        assert_eq!(u.groups[0].objects, [0]);
        assert!(!loads_as_is(&u.groups[0].fields, &u.schema.fields, false));
        assert!(loads_as_is(&u.groups[1].fields, &u.schema.fields, false));
        // Order does not matter, and facts join: the column holds values.
        let u = unify(vec![b, a]).unwrap();
        assert_eq!(types(&u), ["id INTEGER", "dep INTEGER"]);
        assert_eq!(u.facts["dep"], ints(5, 7));
        assert_eq!(u.facts["id"], ints(1, 9));
    }

    #[test]
    fn widens_only_where_every_value_survives() {
        let pair = |a: (&str, ColumnFacts), b: (&str, ColumnFacts)| {
            unify(vec![object(&[("x", a.0, a.1)]), object(&[("x", b.0, b.1)])])
                .map(|u| u.schema.fields[0].field_type.clone())
                .map_err(|(j, d)| (j, d.column, d.detail))
        };
        let big = 1 << 53;
        assert_eq!(
            pair(("INTEGER", ints(-3, 7)), ("FLOAT", VALUES)),
            Ok("FLOAT".into())
        );
        assert_eq!(
            pair(("FLOAT", VALUES), ("INTEGER", ints(-big, big))),
            Ok("FLOAT".into())
        );
        // 2^53 + 1 has no FLOAT64; without a recorded range nothing is known.
        assert!(pair(("INTEGER", ints(0, big + 1)), ("FLOAT", VALUES)).is_err());
        assert!(pair(("INTEGER", VALUES), ("FLOAT", VALUES)).is_err());
        assert_eq!(
            pair(("DATE", VALUES), ("TIMESTAMP", VALUES)),
            Ok("TIMESTAMP".into())
        );
        assert_eq!(
            pair(("INTEGER", ints(1, 2)), ("STRING", VALUES)),
            Ok("STRING".into())
        );
        assert_eq!(
            pair(("STRING", VALUES), ("DATE", VALUES)),
            Ok("STRING".into())
        );
        assert_eq!(
            pair(("BOOLEAN", EMPTY), ("DATE", VALUES)),
            Ok("DATE".into())
        );
        for (a, b) in [
            ("FLOAT", "STRING"),
            ("BOOLEAN", "STRING"),
            ("TIMESTAMP", "STRING"),
            ("BOOLEAN", "INTEGER"),
            ("DATE", "INTEGER"),
        ] {
            let err = pair((a, VALUES), (b, VALUES)).unwrap_err();
            assert_eq!((err.0, err.1.as_str()), (1, "x"), "{a} {b}");
            assert!(
                err.2.contains(&format!("type {b} differs from {a}")),
                "{}",
                err.2
            );
        }
    }

    #[test]
    fn widening_carries_on_across_many_objects() {
        let objects = vec![
            object(&[("x", "STRING", EMPTY)]),
            object(&[("x", "INTEGER", ints(1, 2))]),
            object(&[("x", "STRING", EMPTY)]),
            object(&[("x", "FLOAT", VALUES)]),
            object(&[("x", "INTEGER", ints(4, 5))]),
        ];
        let u = unify(objects).unwrap();
        assert_eq!(types(&u), ["x FLOAT"]);
        let groups: Vec<(String, Vec<usize>)> = u
            .groups
            .iter()
            .map(|g| (g.fields[0].field_type.clone(), g.objects.clone()))
            .collect();
        assert_eq!(
            groups,
            [
                ("STRING".into(), vec![0, 2]),
                ("INTEGER".into(), vec![1, 4]),
                ("FLOAT".into(), vec![3])
            ]
        );
    }

    #[test]
    fn structure_changes_and_nested_types_stay_errors() {
        let a = object(&[("a", "INTEGER", EMPTY), ("b", "STRING", VALUES)]);
        let b = object(&[("b", "STRING", VALUES), ("a", "INTEGER", EMPTY)]);
        let (j, d) = unify(vec![a.clone(), b]).unwrap_err();
        assert_eq!((j, d.column.as_str()), (1, "a"));
        assert!(d.detail.contains("different order"), "{}", d.detail);
        let c = object(&[("a", "INTEGER", EMPTY)]);
        let (_, d) = unify(vec![a, c]).unwrap_err();
        assert_eq!(d.column, "b");
        let mut rec = Field::new("r", "RECORD", Mode::Nullable);
        rec.fields = vec![Field::new("x", "INTEGER", Mode::Nullable)];
        let mut rec2 = rec.clone();
        rec2.fields[0].field_type = "STRING".into();
        let mut one = object(&[]);
        one.schema.fields = vec![rec];
        let mut two = object(&[]);
        two.schema.fields = vec![rec2];
        let (_, d) = unify(vec![one, two]).unwrap_err();
        assert_eq!(d.column, "r.x");
    }

    #[test]
    fn manifest_records_read_as_footers() {
        let record = |name: &str, t: &str, values| sluice_manifest::ColumnRecord {
            name: name.into(),
            column_type: t.into(),
            values,
        };
        let a = object_schema_from_manifest(&[
            record(
                "id",
                "INT64",
                Some(sluice_manifest::ColumnValues {
                    none: false,
                    int_range: Some((1, 5)),
                }),
            ),
            record(
                "dep",
                "STRING",
                Some(sluice_manifest::ColumnValues {
                    none: true,
                    int_range: None,
                }),
            ),
            record("old", "BOOL", None),
        ])
        .unwrap();
        assert_eq!(a.facts.get("id"), Some(&ints(1, 5)));
        assert_eq!(a.facts.get("dep"), Some(&EMPTY));
        assert_eq!(a.facts.get("old"), None);
        let b = object_schema_from_manifest(&[
            record("id", "INT64", None),
            record("dep", "INT64", None),
            record("old", "BOOL", None),
        ])
        .unwrap();
        let u = unify(vec![a, b]).unwrap();
        assert_eq!(types(&u), ["id INTEGER", "dep INTEGER", "old BOOLEAN"]);
        assert!(object_schema_from_manifest(&[]).is_none());
        assert!(object_schema_from_manifest(&[record("x", "DECIMAL(3)", None)]).is_none());
    }

    #[test]
    fn the_tables_type_wins_where_it_holds_the_values() {
        let table = [
            Field::new("empty", "INTEGER", Mode::Nullable),
            Field::new("n", "FLOAT", Mode::Nullable),
            Field::new("s", "STRING", Mode::Nullable),
            Field::new("t", "INTEGER", Mode::Nullable),
        ];
        let mut sent = vec![
            Field::new("empty", "STRING", Mode::Nullable),
            Field::new("n", "INTEGER", Mode::Nullable),
            Field::new("s", "INTEGER", Mode::Nullable),
            Field::new("t", "STRING", Mode::Nullable),
        ];
        let facts: Facts = [
            ("empty".to_string(), EMPTY),
            ("n".to_string(), ints(0, 10)),
            ("s".to_string(), ints(0, 10)),
            ("t".to_string(), VALUES),
        ]
        .into();
        assert!(adopt_table_types(&mut sent, &facts, &table));
        let got: Vec<&str> = sent.iter().map(|f| f.field_type.as_str()).collect();
        // Text with values stays STRING: compat refuses it against the INTEGER column.
        assert_eq!(got, ["INTEGER", "FLOAT", "STRING", "STRING"]);
        assert!(!adopt_table_types(&mut sent, &facts, &table));
    }
}
