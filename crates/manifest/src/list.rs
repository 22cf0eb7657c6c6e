//! The plain object list `load` accepts besides extract's task manifest, for inputs written by
//! something else: `{"objects": [{"url", "generation", "size", "dataset"}], "dataset": ...}`.
//! It is lenient on purpose (other writers' spellings: `uri`, `key`/`name`, `bytes`, numbers as
//! strings, `outputs` for `objects`), but a value that is there must make sense.

use serde::Deserialize;

use crate::ManifestError;

/// One object of an [`ObjectList`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// `gs://bucket/key`, or a key relative to the directory above the manifest prefix.
    pub url: String,
    pub generation: Option<i64>,
    pub size: Option<u64>,
    /// The object's `dataset`, else the list's.
    pub dataset: Option<String>,
}

/// A plain list of objects to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectList {
    pub objects: Vec<ListedObject>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(i64),
    Text(String),
}

#[derive(Deserialize)]
struct RawObject {
    #[serde(alias = "uri")]
    url: Option<String>,
    #[serde(alias = "name")]
    key: Option<String>,
    generation: Option<Number>,
    #[serde(alias = "bytes")]
    size: Option<Number>,
    dataset: Option<String>,
}

#[derive(Deserialize)]
struct RawList {
    #[serde(default, alias = "outputs")]
    objects: Vec<RawObject>,
    dataset: Option<String>,
}

impl ObjectList {
    pub fn parse(bytes: &[u8], url: &str) -> Result<ObjectList, ManifestError> {
        let raw: RawList = serde_json::from_slice(bytes).map_err(|source| ManifestError::Json {
            url: url.to_string(),
            what: "object list",
            source,
        })?;
        let objects = raw
            .objects
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                let field = |name: &str| format!("objects[{i}].{name}");
                let object_url = o.url.or(o.key).ok_or_else(|| {
                    ManifestError::field(
                        url,
                        format!("objects[{i}]"),
                        "has neither `url` nor `key`",
                    )
                })?;
                let generation = number(o.generation, url, &field("generation"))?;
                let size = number(o.size, url, &field("size"))?
                    .map(|s| {
                        u64::try_from(s)
                            .map_err(|_| ManifestError::field(url, field("size"), "negative"))
                    })
                    .transpose()?;
                Ok(ListedObject {
                    url: object_url,
                    generation,
                    size,
                    dataset: o.dataset.or_else(|| raw.dataset.clone()),
                })
            })
            .collect::<Result<_, ManifestError>>()?;
        Ok(ObjectList { objects })
    }
}

fn number(n: Option<Number>, url: &str, field: &str) -> Result<Option<i64>, ManifestError> {
    match n {
        None => Ok(None),
        Some(Number::Int(i)) => Ok(Some(i)),
        Some(Number::Text(t)) => t
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ManifestError::field(url, field, format!("{t:?} is not an integer"))),
    }
}
