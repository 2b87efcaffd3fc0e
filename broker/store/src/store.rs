//! Typed values on top of any [`Kv`], in schema-versioned envelopes.

use std::cmp::Ordering;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Kv, MemoryKv, SledKv, StoreError, Versioned};

/// The store the broker codes against: typed values in envelopes over a shared [`Kv`].
#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn Kv>,
}

/// How a value is written: borrowed, so storing does not clone it.
#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    kind: &'static str,
    schema: u32,
    value: &'a T,
}

/// How a value is read: the body stays JSON until the kind and schema are checked.
#[derive(Deserialize)]
struct EnvelopeIn {
    kind: String,
    schema: u32,
    value: serde_json::Value,
}

impl Store {
    pub fn new(kv: Arc<dyn Kv>) -> Store {
        Store { kv }
    }

    /// Opens (or creates) a sled store in the folder `path`.
    pub fn open_sled(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::new(Arc::new(SledKv::open(path)?)))
    }

    /// A store that lives as long as the process.
    pub fn in_memory() -> Store {
        Store::new(Arc::new(MemoryKv::new()))
    }

    /// The value under `key`, upgraded to the current schema; None if the key is absent.
    pub fn get<T: Versioned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.kv.get(key)? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Stores `value` in the current schema, replacing what was there. Durable when it returns.
    pub fn put<T: Versioned>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.kv.put(key, &encode(key, value)?)
    }

    /// Stores `value` only if `key` is absent; Ok(false) if the key exists already (used as a
    /// lock: one migration per workload). Durable when it returns true.
    pub fn insert_new<T: Versioned>(&self, key: &str, value: &T) -> Result<bool, StoreError> {
        self.kv
            .compare_and_swap(key, None, Some(&encode(key, value)?))
    }

    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.kv.delete(key)
    }

    /// Every value under `prefix`, in key order. One unreadable value fails the whole list:
    /// skipping it would hide a record the broker may depend on.
    pub fn list<T: Versioned>(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        self.kv
            .scan_prefix(prefix)?
            .into_iter()
            .map(|(key, bytes)| {
                let value = decode(&key, &bytes)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Stores `value` under `prefix` + a zero-padded (20 digits) sequence number, so that keys
    /// sort in append order across restarts; returns the key. The numbers are not contiguous
    /// (sled skips ahead after a restart), only increasing.
    pub fn append<T: Versioned>(&self, prefix: &str, value: &T) -> Result<String, StoreError> {
        // 20 digits hold every u64, so the string order of the keys is their numeric order.
        let key = format!("{prefix}{:020}", self.kv.next_sequence()?);
        self.put(&key, value)?;
        Ok(key)
    }

    /// An empty atomic batch: add conditions and writes, then [`Batch::commit`] them as one.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            conditions: Vec::new(),
            writes: Vec::new(),
            encode_error: None,
        }
    }
}

/// Conditions and writes committed as one (see [`Store::batch`]): if every condition holds,
/// every write happens; otherwise none does. Writes apply in the order they were added, so
/// a later write to the same key wins.
#[must_use = "a batch does nothing until it is committed"]
pub struct Batch<'a> {
    store: &'a Store,
    conditions: Vec<(String, Option<Vec<u8>>)>,
    writes: Vec<(String, Option<Vec<u8>>)>,
    /// The first value that could not be encoded; [`Batch::commit`] returns it and writes
    /// nothing. Kept until then so that the builder chains without a `?` at every step.
    encode_error: Option<StoreError>,
}

impl Batch<'_> {
    /// Condition: `key` is absent.
    pub fn absent(mut self, key: &str) -> Self {
        self.conditions.push((key.to_string(), None));
        self
    }

    /// Condition: `key` holds `value` as this broker would store it now. A value stored in an
    /// older schema, or by another encoding, does not match even if it reads back equal.
    pub fn holds<T: Versioned>(mut self, key: &str, value: &T) -> Self {
        match encode(key, value) {
            Ok(bytes) => self.conditions.push((key.to_string(), Some(bytes))),
            Err(e) => self.defer(e),
        }
        self
    }

    /// Write: stores `value` under `key` in the current schema.
    pub fn put<T: Versioned>(mut self, key: &str, value: &T) -> Self {
        match encode(key, value) {
            Ok(bytes) => self.writes.push((key.to_string(), Some(bytes))),
            Err(e) => self.defer(e),
        }
        self
    }

    /// Write: deletes `key` (deleting a missing key is not an error).
    pub fn delete(mut self, key: &str) -> Self {
        self.writes.push((key.to_string(), None));
        self
    }

    /// Ok(true) if every condition held and every write is now on disk; Ok(false) if one did
    /// not hold, and nothing was written. A value that could not be encoded is an error here,
    /// and nothing is written either.
    pub fn commit(self) -> Result<bool, StoreError> {
        if let Some(e) = self.encode_error {
            return Err(e);
        }
        self.store.kv.commit(&self.conditions, &self.writes)
    }

    fn defer(&mut self, error: StoreError) {
        self.encode_error.get_or_insert(error);
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn encode<T: Versioned>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    let envelope = EnvelopeOut {
        kind: T::KIND,
        schema: T::SCHEMA,
        value,
    };
    serde_json::to_vec(&envelope).map_err(|source| StoreError::Serialize {
        key: key.to_string(),
        kind: T::KIND,
        source,
    })
}

fn decode<T: Versioned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let envelope: EnvelopeIn =
        serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptEnvelope {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
    if envelope.kind != T::KIND {
        return Err(StoreError::KindMismatch {
            key: key.to_string(),
            expected: T::KIND,
            found: envelope.kind,
        });
    }
    let value = match envelope.schema.cmp(&T::SCHEMA) {
        Ordering::Equal => envelope.value,
        Ordering::Less => {
            T::upgrade(envelope.schema, envelope.value).map_err(|e| StoreError::Upgrade {
                key: key.to_string(),
                kind: T::KIND,
                from: envelope.schema,
                source: Box::new(e),
            })?
        }
        // Guessing at a newer shape could lose fields a newer broker relies on.
        Ordering::Greater => {
            return Err(StoreError::NewerSchema {
                key: key.to_string(),
                kind: T::KIND,
                found: envelope.schema,
                supported: T::SCHEMA,
            });
        }
    };
    // Deserialized as the current schema whether it was stored so or just upgraded: a faulty
    // upgrade shows up here, naming the key.
    serde_json::from_value(value).map_err(|source| StoreError::Deserialize {
        key: key.to_string(),
        kind: T::KIND,
        schema: T::SCHEMA,
        source,
    })
}
