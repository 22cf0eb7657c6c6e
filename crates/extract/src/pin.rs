//! Pins: small JSON objects that the tasks of one execution share, written once (create if
//! absent, atomic on both stores) by the first task to get there and read by every other task
//! and retry. What `dt=today` means (`execution_date`) and each Socrata source's plan
//! (`source::socrata_pin`) are pinned this way, under `{prefix}_manifests/executions/`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sluice_storage::{ObjectStore, StorageError, WriteOptions};

use crate::error::{ExtractError, Result};

/// A pinned value: its `kind` tag, checked on every read.
pub(crate) trait Pin: Serialize + DeserializeOwned {
    /// The `kind` field's value.
    const KIND: &'static str;
    /// What it is, for messages (`execution date pin`).
    const WHAT: &'static str;
    /// Larger objects are not ours.
    const LIMIT: u64;
    fn kind(&self) -> &str;
}

/// The pin at `key`, if there is one. A malformed pin or one of another kind is an error that
/// says how to recover.
pub(crate) async fn read<T: Pin>(store: &dyn ObjectStore, key: &str) -> Result<Option<T>> {
    let url = store.url_of(key);
    let bytes = match sluice_storage::read_to_bytes(store, key, T::LIMIT).await {
        Ok(bytes) => bytes,
        Err(StorageError::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let pin: T = serde_json::from_slice(&bytes).map_err(|e| {
        ExtractError::Config(format!(
            "{url}: not a valid {} ({e}); delete it to let the execution pin it again",
            T::WHAT
        ))
    })?;
    if pin.kind() != T::KIND {
        return Err(ExtractError::Config(format!(
            "{url}: kind is {:?}, expected {:?}",
            pin.kind(),
            T::KIND
        )));
    }
    Ok(Some(pin))
}

/// Whose pin is in effect after [`create_or_read`].
pub(crate) enum Pinned<T> {
    /// Ours: this task wrote it.
    Ours(T),
    /// Another task of the execution wrote it between our read and our write: theirs wins.
    Theirs(T),
}

/// Writes `pin` at `key` unless a pin is there already, and returns the one in effect.
pub(crate) async fn create_or_read<T: Pin>(
    store: &dyn ObjectStore,
    key: &str,
    pin: T,
) -> Result<Pinned<T>> {
    let url = store.url_of(key);
    let mut body = serde_json::to_vec_pretty(&pin)
        .map_err(|e| ExtractError::internal_source(format!("serializing {url}"), e))?;
    body.push(b'\n');
    let options = WriteOptions {
        if_absent: true,
        metadata: Default::default(),
        content_type: Some("application/json".into()),
    };
    match sluice_storage::write_bytes(store, key, body.into(), options).await {
        Ok(_) => Ok(Pinned::Ours(pin)),
        Err(StorageError::AlreadyExists { .. }) => match read(store, key).await? {
            Some(theirs) => Ok(Pinned::Theirs(theirs)),
            None => Err(ExtractError::Internal(format!(
                "{url}: creating the {} failed because it exists, yet it cannot be read",
                T::WHAT
            ))),
        },
        Err(e) => Err(e.into()),
    }
}
