//! Deferred directory fsyncs for the local backend ([`crate::ObjectStore::defer_directory_syncs`]).
//!
//! A commit renames the sidecar and the data file into their directory; the rename is durable
//! only once the directory is fsynced. A writer of many small objects in one directory (an
//! extract task) would fsync that directory once per object; deferred, each directory touched
//! since the last [`DeferredSyncs::sync`] is fsynced once there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by a store and its writers.
#[derive(Debug, Default)]
pub(crate) struct DeferredSyncs {
    on: AtomicBool,
    dirs: Mutex<BTreeSet<PathBuf>>,
}

impl DeferredSyncs {
    pub(crate) fn enable(&self) {
        self.on.store(true, Ordering::SeqCst);
    }

    /// After a rename in `dir`: fsync it now, or note it for the next [`Self::sync`].
    pub(crate) fn renamed_in(&self, dir: &Path) {
        if self.on.load(Ordering::SeqCst) {
            self.lock().insert(dir.to_path_buf());
        } else {
            sync_dir(dir);
        }
    }

    /// Blocking: fsyncs every noted directory once.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let dirs = std::mem::take(&mut *self.lock());
        for dir in &dirs {
            match std::fs::File::open(dir) {
                Ok(d) => d.sync_all()?,
                // Removed since (an emptied temp directory): nothing left to make durable.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Best-effort fsync of a directory so a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_directories_are_synced_once_then_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let deferred = DeferredSyncs::default();
        // Off: synced at once, nothing noted.
        deferred.renamed_in(&a);
        assert!(deferred.lock().is_empty());
        deferred.enable();
        for _ in 0..3 {
            deferred.renamed_in(&a);
        }
        deferred.renamed_in(dir.path());
        assert_eq!(deferred.lock().len(), 2, "one entry per directory");
        deferred.sync().unwrap();
        assert!(deferred.lock().is_empty());
        // A directory removed before the sync has nothing left to make durable.
        deferred.renamed_in(&a);
        std::fs::remove_dir(&a).unwrap();
        deferred.sync().unwrap();
    }
}
