//! Runs the shared `Kv` conformance suite against the backends of this crate.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::TempDir;
use ferry_store::{Kv, MemoryKv, SledKv, conformance};

#[test]
fn memory_backend_conforms() {
    conformance::run_all(&|| Arc::new(MemoryKv::new()));
}

#[test]
fn sled_backend_conforms() {
    let dir = TempDir::new("conformance");
    let next = AtomicUsize::new(0);
    conformance::run_all(&|| {
        let folder = dir
            .path()
            .join(next.fetch_add(1, Ordering::Relaxed).to_string());
        Arc::new(SledKv::open(&folder).expect("open sled"))
    });
}

#[test]
fn sled_keeps_data_and_sequence_across_reopen() {
    let dir = TempDir::new("reopen");
    conformance::reopen_keeps_data_and_sequence(&|| {
        Ok(Arc::new(SledKv::open(&dir.store())?) as Arc<dyn Kv>)
    })
    .expect("backend error");
}
