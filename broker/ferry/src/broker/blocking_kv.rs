//! Store writes off the runtime's workers. Every acknowledged write of the sled store is
//! fsynced before it returns (milliseconds, more on a busy disk), and the broker writes
//! from async code: a handler, a migration step, a controller pass. Run on an async worker,
//! that wait stalls every other task queued there (`/healthz` p99 went to 73 ms at 1,500
//! writes/s). [`OffTheRuntime`] runs each write under `tokio::task::block_in_place`, which
//! hands the worker's other tasks to another thread first; durability is unchanged (the
//! write still returns only once it is on disk).

use ferry_store::{Kv, StoreError};

/// A [`Kv`] whose writes do not hold up the tasks of the worker they run on. Reads stay
/// as they are: sled serves them from memory.
pub struct OffTheRuntime<K> {
    inner: K,
}

impl<K: Kv> OffTheRuntime<K> {
    pub fn new(inner: K) -> OffTheRuntime<K> {
        OffTheRuntime { inner }
    }
}

/// Runs `write` where it blocks no other task: under `block_in_place` on a multi-threaded
/// runtime's worker; directly elsewhere (a plain thread, the blocking pool, or a
/// current-thread runtime, where `block_in_place` is not allowed and there is no other
/// worker to hand tasks to).
fn off_the_runtime<T>(write: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(write)
        }
        _ => write(),
    }
}

impl<K: Kv> Kv for OffTheRuntime<K> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        off_the_runtime(|| self.inner.put(key, value))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        off_the_runtime(|| self.inner.delete(key))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        off_the_runtime(|| self.inner.compare_and_swap(key, old, new))
    }

    fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_prefix(prefix)
    }

    fn next_sequence(&self) -> Result<u64, StoreError> {
        // sled persists its id counter ahead of use: now and then this writes too.
        off_the_runtime(|| self.inner.next_sequence())
    }

    fn commit(
        &self,
        conditions: &[(String, Option<Vec<u8>>)],
        writes: &[(String, Option<Vec<u8>>)],
    ) -> Result<bool, StoreError> {
        off_the_runtime(|| self.inner.commit(conditions, writes))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use ferry_store::MemoryKv;

    use super::*;

    /// A store whose writes take as long as a slow disk's fsync.
    struct SlowDisk(MemoryKv);

    const FSYNC: Duration = Duration::from_millis(400);

    impl Kv for SlowDisk {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get(key)
        }
        fn put(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            std::thread::sleep(FSYNC);
            self.0.put(key, value)
        }
        fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.0.delete(key)
        }
        fn compare_and_swap(
            &self,
            key: &str,
            old: Option<&[u8]>,
            new: Option<&[u8]>,
        ) -> Result<bool, StoreError> {
            self.0.compare_and_swap(key, old, new)
        }
        fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.0.scan_prefix(prefix)
        }
        fn next_sequence(&self) -> Result<u64, StoreError> {
            self.0.next_sequence()
        }
        fn commit(
            &self,
            conditions: &[(String, Option<Vec<u8>>)],
            writes: &[(String, Option<Vec<u8>>)],
        ) -> Result<bool, StoreError> {
            self.0.commit(conditions, writes)
        }
    }

    /// How often a task that wants to run every 10 ms ran while a write on the runtime's
    /// only worker waited for the disk.
    async fn ticks_during_a_write(kv: Arc<dyn Kv>) -> u32 {
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = {
            let ticks = Arc::clone(&ticks);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        let before = ticks.load(Ordering::Relaxed);
        tokio::spawn(async move { kv.put("k", b"v") })
            .await
            .expect("the write task")
            .expect("the write");
        let during = ticks.load(Ordering::Relaxed) - before;
        ticker.abort();
        during
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_slow_write_holds_up_no_other_task() {
        // 400 ms at one tick per 10 ms: about 40 when the worker is handed on; none when
        // the write holds the runtime's only worker (checked below, without the decorator).
        let handed_on =
            ticks_during_a_write(Arc::new(OffTheRuntime::new(SlowDisk(MemoryKv::new())))).await;
        assert!(handed_on >= 10, "{handed_on} ticks during the write");
        let held = ticks_during_a_write(Arc::new(SlowDisk(MemoryKv::new()))).await;
        assert!(held <= 2, "{held} ticks while the worker was blocked");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn on_a_current_thread_runtime_writes_run_in_place() {
        let kv = OffTheRuntime::new(MemoryKv::new());
        kv.put("k", b"v").expect("put");
        assert_eq!(kv.get("k").expect("get"), Some(b"v".to_vec()));
    }
}
