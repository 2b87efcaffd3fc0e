//! Test tool, not part of the broker: `tests/durability.rs` runs it and SIGKILLs it to check
//! that the store keeps every write it acknowledged.
//!
//! Usage: `ferry-store-writer FOLDER ROUND`. Opens a sled store in FOLDER and writes records
//! (see `record.rs`) for ROUND until killed: each `WriterRecord` is appended under `log/` and
//! put under `by-index/ROUND/INDEX`. After each write returns it prints `ack KEY` (flushed),
//! so every key printed is one the store has promised to keep.

mod record;

use std::error::Error;
use std::io::{self, Write};
use std::path::PathBuf;

use ferry_store::Store;
use record::WriterRecord;

/// A bound in case nobody kills it; the test needs a few hundred.
const MAX_RECORDS: u64 = 10_000;

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(folder), Some(round)) = (args.next(), args.next()) else {
        return Err("usage: ferry-store-writer FOLDER ROUND".into());
    };
    let round: u32 = round.to_str().ok_or("ROUND is not UTF-8")?.parse()?;
    let store = Store::open_sled(&PathBuf::from(folder))?;
    let mut out = io::stdout().lock();
    for index in 0..MAX_RECORDS {
        let record = WriterRecord::new(round, index);
        let appended = store.append("log/", &record)?;
        if !ack(&mut out, &appended)? {
            break;
        }
        let by_index = format!("by-index/{round:03}/{index:06}");
        store.put(&by_index, &record)?;
        if !ack(&mut out, &by_index)? {
            break;
        }
    }
    Ok(())
}

/// Prints `ack KEY` and flushes it; Ok(false) once nobody reads the acks any more.
fn ack(out: &mut impl Write, key: &str) -> io::Result<bool> {
    match writeln!(out, "ack {key}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}
