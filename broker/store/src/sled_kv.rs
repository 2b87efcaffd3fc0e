//! The sled backend. sled 0.34 is beta and its on-disk format is not promised, which is why
//! nothing outside this file knows it is sled.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use sled::Transactional;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};

use crate::mark::Mark;
use crate::{Kv, StoreError};

/// The tree beside the data that counts acknowledged writes; never seen through [`Kv`].
const META_TREE: &str = "ferry-meta";
/// Its key holding the count, a big-endian u64.
const WRITES_KEY: &str = "writes";

/// A sled database in one folder. Every acknowledged write is on disk before it returns,
/// trading write throughput for durability: the broker writes a few records per migration
/// step and must not forget one it acted on.
///
/// Every write also adds one to a counter kept in sled in the same transaction, and once the
/// write is synced the count goes to the mark file beside the folder ([`Mark`]). Opening
/// compares them: a store whose counter is below its mark lost acknowledged writes and
/// refuses to open ([`StoreError::MissingWrites`]).
///
/// Syncs are shared between concurrent writers (group commit): a writer whose write is
/// already covered by a sync that started after it waits for that one instead of running
/// its own, and one mark update covers every write synced before it. Syncs that do not
/// cover each other may overlap: the file system joins concurrent fsyncs into one journal
/// commit, which serialising them here would undo (it halved the throughput of 8 writers).
pub struct SledKv {
    db: sled::Db,
    meta: sled::Tree,
    path: PathBuf,
    mark: Mark,
    /// How far sled's files are synced, and how far running syncs will take them.
    sync: Mutex<SyncState>,
    /// Signalled whenever a sync ends, successfully or not.
    sync_ended: Condvar,
    /// Every write counted up to this is in the mark too. Held while the mark is updated,
    /// which is one at a time: writers queued behind an update usually find it covered them.
    marked: Mutex<u64>,
    /// Syncs run so far (for tests and figures).
    syncs: AtomicU64,
}

/// Why a write's transaction stopped without writing.
enum Abort {
    /// A condition of a compare-and-swap or a batch does not hold: Ok(false).
    ConditionFailed,
    /// The write counter is not a number: the store is damaged.
    BadCounter,
}

/// Under `SledKv::sync`.
struct SyncState {
    /// Every write counted up to this is in sled's files on disk.
    synced: u64,
    /// The highest count a running sync covers (or `synced` when none runs): a writer at or
    /// below it waits for the syncs running rather than start another.
    promised: u64,
}

impl SledKv {
    /// Opens (or creates) the database in `path`. sled locks the folder, so a second open of
    /// the same folder fails until the first is dropped or its process has exited.
    ///
    /// Refuses a damaged folder ([`StoreError::Damaged`]) and one holding fewer writes than
    /// its mark `<path>.mark` recorded ([`StoreError::MissingWrites`]).
    pub fn open(path: &Path) -> Result<SledKv, StoreError> {
        let db = sled::open(path).map_err(|e| open_error(path, e))?;
        let meta = db.open_tree(META_TREE).map_err(|e| open_error(path, e))?;
        let mut mark = Mark::beside(path)?;
        let found = decode_count(
            meta.get(WRITES_KEY)
                .map_err(|e| io_error(path, e))?
                .as_deref(),
        )
        .ok_or_else(|| bad_counter(path))?;
        if let Some(marked) = mark.read()?
            && marked > found
        {
            return Err(StoreError::MissingWrites {
                store: path.display().to_string(),
                mark: mark.path().display().to_string(),
                marked,
                found,
            });
        }
        // The mark is below the count when the broker stopped between a sync and the mark's
        // update (that write was never acknowledged), and missing for a new store or one
        // written before marks existed; either way the store's count is the mark from now on.
        mark.open(found)?;
        let kv = SledKv {
            db,
            meta,
            path: path.to_path_buf(),
            mark,
            sync: Mutex::new(SyncState {
                synced: found,
                promised: found,
            }),
            sync_ended: Condvar::new(),
            marked: Mutex::new(found),
            syncs: AtomicU64::new(0),
        };
        // sled writes its config file without syncing it, and a folder created just now must
        // itself survive a power loss.
        kv.sync_files()?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync(parent).map_err(|e| io_error(parent, e))?;
        }
        Ok(kv)
    }

    /// How many syncs this handle has run; with concurrent writers, fewer than writes.
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    fn fail(&self, error: sled::Error) -> StoreError {
        io_error(&self.path, error)
    }

    /// The acknowledged-or-about-to-be writes counted in sled.
    fn write_count(&self) -> Result<u64, StoreError> {
        let stored = self.meta.get(WRITES_KEY).map_err(|e| self.fail(e))?;
        decode_count(stored.as_deref()).ok_or_else(|| bad_counter(&self.path))
    }

    /// Applies `stage` to the data and counts it, in one transaction, then returns once it is
    /// durable. Ok(false), and nothing written, if `stage` aborts (a condition failed).
    /// sled may run `stage` again on a conflict, which is why it must only read and stage.
    fn write(
        &self,
        stage: impl Fn(&TransactionalTree) -> ConflictableTransactionResult<(), Abort>,
    ) -> Result<bool, StoreError> {
        let outcome = (&*self.db, &self.meta).transaction(
            |(data, meta)| -> ConflictableTransactionResult<u64, Abort> {
                stage(data)?;
                let count = decode_count(meta.get(WRITES_KEY)?.as_deref())
                    .ok_or(ConflictableTransactionError::Abort(Abort::BadCounter))?
                    + 1;
                meta.insert(WRITES_KEY, &count.to_be_bytes())?;
                Ok(count)
            },
        );
        match outcome {
            Ok(count) => self.sync_through(count).map(|()| true),
            Err(TransactionError::Abort(Abort::ConditionFailed)) => Ok(false),
            Err(TransactionError::Abort(Abort::BadCounter)) => Err(bad_counter(&self.path)),
            Err(TransactionError::Storage(e)) => Err(self.fail(e)),
        }
    }

    /// Returns once the write counted `count` is on disk and in the mark, syncing and
    /// marking only what others have not already.
    fn sync_through(&self, count: u64) -> Result<(), StoreError> {
        let mut state = self.lock_sync();
        while state.synced < count {
            if state.promised >= count {
                state = self
                    .sync_ended
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Read after this sync began: every write counted up to here is in sled already,
            // so this sync covers them all, and their writers can wait for it.
            let covered = self.write_count()?;
            state.promised = state.promised.max(covered);
            drop(state);
            let outcome = self.sync_files();
            state = self.lock_sync();
            match outcome {
                Ok(()) => state.synced = state.synced.max(covered),
                // Its waiters must not wait for it: each tries again, with a sync of its own
                // if no other running one covers it.
                Err(_) => state.promised = state.synced,
            }
            self.sync_ended.notify_all();
            outcome?;
        }
        let synced = state.synced;
        drop(state);
        // The count is only read and written under the lock; a panic cannot leave it
        // half-changed, and a mark update that failed left the mark at most lower, which
        // only weakens the check, so a poisoned lock is still safe to use.
        let mut marked = self.marked.lock().unwrap_or_else(PoisonError::into_inner);
        if *marked >= count {
            return Ok(());
        }
        // Everything synced by now, which may be more than this writer's own sync covered.
        let synced = synced.max(self.lock_sync().synced);
        self.mark.update(synced)?;
        *marked = synced;
        Ok(())
    }

    fn lock_sync(&self) -> MutexGuard<'_, SyncState> {
        // Two counts, each only raised or lowered whole under the lock: a poisoned lock is
        // still consistent.
        self.sync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes every write so far durable. sled's own `flush` is not enough on Linux: it uses
    /// `sync_file_range`, which flushes neither the disk's write cache nor the file size, and
    /// it never syncs the blob files where it keeps items over ~128 KiB (sled issue #1452).
    /// So once sled has written everything out, every file in its folder gets a real fsync.
    /// Most are clean, which makes their fsync cheap.
    fn sync_files(&self) -> Result<(), StoreError> {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.db.flush().map_err(|e| self.fail(e))?;
        fsync_tree(&self.path).map_err(|(path, e)| io_error(&path, e))
    }
}

/// The write counter as stored: absent is 0 (no write yet, or a store from before the
/// counter); None if it is not 8 bytes.
fn decode_count(stored: Option<&[u8]>) -> Option<u64> {
    match stored {
        None => Some(0),
        Some(bytes) => Some(u64::from_be_bytes(bytes.try_into().ok()?)),
    }
}

impl Kv for SledKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let value = self.db.get(key).map_err(|e| self.fail(e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|data| {
            data.insert(key, value)?;
            Ok(())
        })
        .map(drop)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.write(|data| {
            data.remove(key)?;
            Ok(())
        })
        .map(drop)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        self.write(|data| {
            if data.get(key)?.as_deref() != old {
                return Err(ConflictableTransactionError::Abort(Abort::ConditionFailed));
            }
            match new {
                Some(new) => data.insert(key, new)?,
                None => data.remove(key)?,
            };
            Ok(())
        })
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
        // The transaction holds sled's global write lock while it checks and stages, and its
        // writes reach the log as one batch that recovery applies whole or not at all.
        self.write(|data| {
            for (key, expected) in conditions {
                if data.get(key.as_str())?.as_deref() != expected.as_deref() {
                    return Err(ConflictableTransactionError::Abort(Abort::ConditionFailed));
                }
            }
            for (key, value) in writes {
                match value {
                    Some(value) => data.insert(key.as_str(), value.as_slice())?,
                    None => data.remove(key.as_str())?,
                };
            }
            Ok(())
        })
    }
}

fn bad_counter(store: &Path) -> StoreError {
    StoreError::Damaged {
        store: store.display().to_string(),
        detail: format!("its write counter (tree {META_TREE:?}) is not a number"),
    }
}

/// An error of `sled::open`: damaged data becomes [`StoreError::Damaged`], saying where.
fn open_error(path: &Path, error: sled::Error) -> StoreError {
    let store = path.display().to_string();
    match error {
        sled::Error::Corruption { at, .. } => {
            let detail = match at {
                Some(sled::DiskPtr::Inline(offset)) => {
                    format!("unreadable data at byte {offset} of {store}/db")
                }
                Some(sled::DiskPtr::Blob(_, blob)) => {
                    format!("unreadable blob {store}/blobs/{blob}")
                }
                None => format!("unreadable data in {store}/db"),
            };
            StoreError::Damaged { store, detail }
        }
        other => io_error(path, other),
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
