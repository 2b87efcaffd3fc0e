//! The broker's store: durable key-value storage for its records (migrations, their steps,
//! leases), behind the project's own [`Kv`] trait.
//!
//! Why our own trait: the embedded backend is sled 0.34, which is beta and does not promise
//! its on-disk format (garage had to migrate away from it). The broker codes against [`Store`]
//! and [`Kv`] only, so sled can be replaced (an etcd backend is planned) without touching it.
//!
//! # Layers
//!
//! - [`Kv`]: raw bytes under UTF-8 keys ordered bytewise, with compare-and-swap, prefix scans
//!   and a sequence that increases across restarts. Backends: [`SledKv`] (on disk) and
//!   [`MemoryKv`] (tests, throwaway runs).
//! - [`Store`]: typed values ([`Versioned`]) on top of any `Kv`, cheap to clone and share.
//!
//! # On-disk format
//!
//! Every value is a JSON envelope naming its kind and schema version:
//!
//! ```json
//! {"kind": "migration", "schema": 2, "value": {"workload": "web", "step": "copy"}}
//! ```
//!
//! Reading checks the envelope against the type asked for: another kind is
//! [`StoreError::KindMismatch`]; a schema above [`Versioned::SCHEMA`] is
//! [`StoreError::NewerSchema`] (a newer broker wrote it; this one must not guess); an older
//! schema goes through [`Versioned::upgrade`] first. Values are upgraded when read and
//! written back in the current schema only when the caller stores them again.
//!
//! ```
//! use ferry_store::{Store, StoreError, Versioned};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Migration { workload: String, step: String }
//!
//! impl Versioned for Migration {
//!     const KIND: &'static str = "migration";
//!     const SCHEMA: u32 = 2;
//!     fn upgrade(from: u32, mut value: serde_json::Value) -> Result<serde_json::Value, StoreError> {
//!         match from {
//!             // Schema 1 had no steps yet.
//!             1 => { value["step"] = "start".into(); Ok(value) }
//!             _ => Err(StoreError::NoUpgradePath { kind: Self::KIND, from, to: Self::SCHEMA }),
//!         }
//!     }
//! }
//!
//! let store = Store::in_memory();
//! let migration = Migration { workload: "web".into(), step: "copy".into() };
//! assert!(store.insert_new("migrations/web", &migration)?);
//! assert!(!store.insert_new("migrations/web", &migration)?); // taken: one migration per workload
//! assert_eq!(store.get::<Migration>("migrations/web")?, Some(migration));
//! # Ok::<(), StoreError>(())
//! ```
//!
//! # Atomic batches
//!
//! [`Store::batch`] gathers conditions and writes and commits them as one: either every write
//! happens, or (a condition failed) none does. The broker uses it where two records must not
//! be seen apart, such as a workload's lock and its migration record, so that a crash
//! between them cannot orphan one.
//!
//! ```
//! # use ferry_store::{Store, StoreError, Versioned};
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct Migration { workload: String }
//! # impl Versioned for Migration { const KIND: &'static str = "migration"; const SCHEMA: u32 = 1; }
//! let store = Store::in_memory();
//! let migration = Migration { workload: "web".into() };
//! let batch = || {
//!     store
//!         .batch()
//!         .absent("locks/shop/web")
//!         .put("locks/shop/web", &migration)
//!         .put("migrations/mig-1", &migration)
//!         .delete("cancels/mig-1")
//! };
//! assert!(batch().commit()?);
//! assert!(!batch().commit()?, "the lock is taken: nothing written");
//! # Ok::<(), StoreError>(())
//! ```
//!
//! # Durability
//!
//! A write that returned `Ok` (`put`, `delete`, a successful compare-and-swap, `append`,
//! `insert_new` returning `true`, a batch committed with `true`) is on disk. [`SledKv`] makes
//! sure of it after every such write: sled's `flush`, then an fsync of every file in its
//! folder, because sled's flush alone (`sync_file_range`) survives a crashed process but not
//! a power loss. Concurrent writers share syncs (group commit): a writer whose write is
//! covered by a sync that started after it waits for that sync instead of running its own.
//! `tests/durability.rs` checks the first part with real processes: it SIGKILLs a writer
//! (`ferry-store-writer`) at several points and reopens its folder, where every record it
//! acknowledged must be intact. Power loss cannot be tested here; the fsync covers it.
//!
//! # The high-water mark
//!
//! sled can lose writes without an error: a damaged segment header makes its recovery stop
//! there and open the store as it was before. So [`SledKv`] counts every write it makes (a
//! counter in its own sled tree, `ferry-meta`, written in the same transaction as the write)
//! and, once a write is synced and before it returns, records the count in a mark file
//! beside the folder: `<folder>.mark` (for the broker, `DATA/store.mark`). The mark is two
//! fixed-width text slots of a count and its checksum, updated in place alternately with one
//! data sync, so a torn update leaves the older slot.
//!
//! Opening compares the two. A counter below the mark means acknowledged writes are gone (the
//! store was damaged, rolled back, deleted or replaced by an older copy) and the open fails
//! with [`StoreError::MissingWrites`], naming both counts and what to do; a counter at or above
//! it is normal (a crash between a sync and its mark loses nothing acknowledged). Deleting the
//! mark file accepts the store as it is: the next open counts from there. Files sled cannot
//! read at all are [`StoreError::Damaged`]. `docs/operations.md` tells the operator what to
//! do about either.
//!
//! # Adding a backend
//!
//! Implement [`Kv`], then prove it with the shared suite in [`conformance`], as
//! `tests/conformance.rs` does for sled and memory:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use ferry_store::{conformance, Kv, MemoryKv};
//! // Each property gets a fresh, empty store from the closure.
//! conformance::run_all(&|| Arc::new(MemoryKv::new()) as Arc<dyn Kv>);
//! ```
//!
//! Backends that persist also run [`conformance::reopen_keeps_data_and_sequence`].

pub mod conformance;
mod error;
mod mark;
mod memory;
mod sled_kv;
mod store;

pub use error::StoreError;
pub use memory::MemoryKv;
pub use sled_kv::SledKv;
pub use store::{Batch, Store};

/// Raw, durable key-value storage. Keys are UTF-8 strings ordered bytewise.
pub trait Kv: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Durable when it returns (flushed to disk for sled).
    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Deleting a missing key is not an error. Durable when it returns.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Atomically replaces `old` (None = absent) with `new` (None = delete); Ok(false) if the
    /// current value differs. Durable when it returns true.
    fn compare_and_swap(
        &self,
        key: &str,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError>;
    /// Every key starting with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// A number greater than every number returned before by this store, also across restarts.
    fn next_sequence(&self) -> Result<u64, StoreError>;
    /// Atomically: if every key of `conditions` holds exactly the value given with it (None =
    /// absent), applies every write (Some = put, None = delete), in order, and returns
    /// Ok(true), durable when it returns; otherwise writes nothing and returns Ok(false).
    /// Nobody sees some of the writes without the others, also after a crash.
    fn commit(
        &self,
        conditions: &[(String, Option<Vec<u8>>)],
        writes: &[(String, Option<Vec<u8>>)],
    ) -> Result<bool, StoreError>;
}

/// A value type the store keeps, with its schema version.
pub trait Versioned: serde::Serialize + serde::de::DeserializeOwned {
    /// Stable name of the kind, stored with the value (e.g. "migration").
    const KIND: &'static str;
    /// Current schema version; bump it when the serialized shape changes.
    const SCHEMA: u32;
    /// Turns a stored value of an older schema `from` into the current shape. Default: refuses
    /// ([`StoreError::NoUpgradePath`]), which is right until the first schema bump.
    fn upgrade(from: u32, value: serde_json::Value) -> Result<serde_json::Value, StoreError> {
        let _ = value;
        Err(StoreError::NoUpgradePath {
            kind: Self::KIND,
            from,
            to: Self::SCHEMA,
        })
    }
}
