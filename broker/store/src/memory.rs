//! The in-memory backend: for tests and for runs that need no persistence (`Store::in_memory`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::{Kv, StoreError};

/// A `BTreeMap` behind a mutex. `String`'s order is bytewise, as the `Kv` contract wants.
/// Nothing here survives the process.
#[derive(Default)]
pub struct MemoryKv {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
    last_sequence: AtomicU64,
}

impl MemoryKv {
    pub fn new() -> MemoryKv {
        MemoryKv::default()
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while the lock was held cannot leave the map half-changed (each operation
        // is a single map call, and a batch checks everything before its first write), so a poisoned lock is still safe to use.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.entries().get(key).cloned())
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.entries().insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.entries().remove(key);
        Ok(())
    }

    fn compare_and_swap(
        &self,
        key: &str,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let mut entries = self.entries();
        if entries.get(key).map(Vec::as_slice) != old {
            return Ok(false);
        }
        match new {
            Some(new) => entries.insert(key.to_string(), new.to_vec()),
            None => entries.remove(key),
        };
        Ok(true)
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .entries()
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn next_sequence(&self) -> Result<u64, StoreError> {
        // A u64 counted up one at a time does not overflow in practice.
        Ok(self.last_sequence.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn commit(
        &self,
        conditions: &[(String, Option<Vec<u8>>)],
        writes: &[(String, Option<Vec<u8>>)],
    ) -> Result<bool, StoreError> {
        // One lock for the checks and the writes: nobody sees a half-applied batch.
        let mut entries = self.entries();
        let holds = |(key, expected): &(String, Option<Vec<u8>>)| {
            entries.get(key.as_str()) == expected.as_ref()
        };
        if !conditions.iter().all(holds) {
            return Ok(false);
        }
        for (key, value) in writes {
            match value {
                Some(value) => entries.insert(key.clone(), value.clone()),
                None => entries.remove(key.as_str()),
            };
        }
        Ok(true)
    }
}
