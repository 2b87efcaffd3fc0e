//! Write throughput of the sled backend, one writer and several at once. Not a check (the
//! figures depend on the disk): run it by hand and compare before and after a change,
//!
//! ```text
//! cargo bench -p ferry-store --bench throughput
//! ```
//!
//! docs/benchmarks.md keeps the figures.

#[path = "../tests/common/mod.rs"]
#[allow(dead_code, reason = "the helpers the tests share; this uses some")]
mod common;

use std::time::Instant;

use common::TempDir;
use ferry_store::{Kv, SledKv};

/// Puts `per_writer` small values from each of `writers` threads; returns puts per second.
fn puts_per_second(writers: usize, per_writer: usize) -> f64 {
    let dir = TempDir::new("throughput");
    let kv = SledKv::open(&dir.store()).expect("open sled");
    let value = vec![b'x'; 300]; // about the size of a migration record
    let started = Instant::now();
    std::thread::scope(|scope| {
        for writer in 0..writers {
            let (kv, value) = (&kv, &value);
            scope.spawn(move || {
                for i in 0..per_writer {
                    kv.put(&format!("bench/{writer}/{i:06}"), value)
                        .expect("put");
                }
            });
        }
    });
    let total = writers * per_writer;
    #[allow(clippy::cast_precision_loss, reason = "a few thousand writes")]
    let rate = total as f64 / started.elapsed().as_secs_f64();
    rate
}

fn main() {
    for (writers, per_writer) in [(1, 400), (8, 100), (32, 50)] {
        let rate = puts_per_second(writers, per_writer);
        eprintln!("sled put throughput: {writers:>2} writer(s): {rate:>7.0} puts/s");
    }
}
