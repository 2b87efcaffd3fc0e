//! The sled backend. sled 0.34 is beta and its on-disk format is not promised, which is why
//! nothing outside this file knows it is sled.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
};

use crate::{Kv, StoreError};

/// A sled database in one folder. Every acknowledged write is on disk before it returns,
/// trading write throughput for durability: the broker writes a few records per migration
/// step and must not forget one it acted on.
pub struct SledKv {
    db: sled::Db,
    path: PathBuf,
}

impl SledKv {
    /// Opens (or creates) the database in `path`. sled locks the folder, so a second open of
    /// the same folder fails until the first is dropped or its process has exited.
    pub fn open(path: &Path) -> Result<SledKv, StoreError> {
        let db = sled::open(path).map_err(|e| io_error(path, e))?;
        let kv = SledKv {
            db,
            path: path.to_path_buf(),
        };
        // sled writes its config file without syncing it, and a folder created just now must
        // itself survive a power loss.
        kv.sync()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync(parent).map_err(|e| io_error(parent, e))?;
        }
        Ok(kv)
    }

    fn fail(&self, error: sled::Error) -> StoreError {
        io_error(&self.path, error)
    }

    /// Makes every write so far durable. sled's own `flush` is not enough on Linux: it uses
    /// `sync_file_range`, which flushes neither the disk's write cache nor the file size, and
    /// it never syncs the blob files where it keeps items over ~128 KiB (sled issue #1452).
    /// So once sled has written everything out, every file in its folder gets a real fsync.
    /// Most are clean, which makes their fsync cheap.
    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.fail(e))?;
        fsync_tree(&self.path).map_err(|(path, e)| io_error(&path, e))
    }
}

impl Kv for SledKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.db.get(key).map_err(|e| self.fail(e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.db.insert(key, value).map_err(|e| self.fail(e))?;
        self.sync()
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.db.remove(key).map_err(|e| self.fail(e))?;
        self.sync()
    }

    fn compare_and_swap(
        &self,
        key: &str,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        match self.db.compare_and_swap(key, old, new) {
            Ok(Ok(())) => self.sync().map(|()| true),
            Ok(Err(sled::CompareAndSwapError { .. })) => Ok(false),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.db
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry.map_err(|e| self.fail(e))?;
                // Only `&str` keys are ever written, so this means the folder was tampered with.
                let key =
                    String::from_utf8(key.to_vec()).map_err(|e| StoreError::CorruptEnvelope {
                        key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                        reason: "the key is not UTF-8".to_string(),
                    })?;
                Ok((key, value.to_vec()))
            })
            .collect()
    }

    fn next_sequence(&self) -> Result<u64, StoreError> {
        // sled persists its id counter ahead of use and skips past it on recovery, so ids keep
        // increasing across restarts and crashes even if the caller writes nothing.
        self.db.generate_id().map_err(|e| self.fail(e))
    }

    fn commit(
        &self,
        conditions: &[(String, Option<Vec<u8>>)],
        writes: &[(String, Option<Vec<u8>>)],
    ) -> Result<bool, StoreError> {
        // A sled transaction holds its global write lock while it checks and stages, and
        // its writes reach the log as one batch that recovery applies whole or not at all.
        // sled may run the closure again on a conflict, which is why it only reads and stages.
        let outcome = self
            .db
            .transaction(|tx| -> ConflictableTransactionResult<(), ()> {
                for (key, expected) in conditions {
                    if tx.get(key.as_str())?.as_deref() != expected.as_deref() {
                        return Err(ConflictableTransactionError::Abort(()));
                    }
                }
                for (key, value) in writes {
                    match value {
                        Some(value) => tx.insert(key.as_str(), value.as_slice())?,
                        None => tx.remove(key.as_str())?,
                    };
                }
                Ok(())
            });
        match outcome {
            Ok(()) => self.sync().map(|()| true),
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(self.fail(e)),
        }
    }
}

/// fsyncs every file under `folder`, then the folder itself, so that the names last too.
/// An error comes with the path it happened at.
fn fsync_tree(folder: &Path) -> Result<(), (PathBuf, io::Error)> {
    let in_folder = |e| (folder.to_path_buf(), e);
    for entry in std::fs::read_dir(folder).map_err(in_folder)? {
        let entry = entry.map_err(in_folder)?;
        let path = entry.path();
        let synced = match entry.file_type() {
            Ok(kind) if kind.is_dir() => fsync_tree(&path),
            Ok(_) => fsync(&path).map_err(|e| (path, e)),
            Err(e) => Err((path, e)),
        };
        match synced {
            // sled deletes blobs and snapshots it no longer needs, also while we list them.
            Err((_, e)) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    fsync(folder).map_err(in_folder)
}

/// fsync of a file or folder (Linux syncs a folder's entries through a read-only handle).
fn fsync(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn io_error(path: &Path, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError::backend(path.display().to_string(), error)
}
