//! The record the writer stores; `tests/durability.rs` includes this file to check them.
#![allow(dead_code, reason = "the writer and the test each use part of it")]

use ferry_store::Versioned;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct WriterRecord {
    pub round: u32,
    pub index: u64,
    pub payload: String,
}

impl Versioned for WriterRecord {
    const KIND: &'static str = "ferry-store-writer-record";
    const SCHEMA: u32 = 1;
}

impl WriterRecord {
    pub fn new(round: u32, index: u64) -> WriterRecord {
        WriterRecord {
            round,
            index,
            payload: payload(round, index),
        }
    }

    /// The payload follows from round and index, so a torn or mixed-up record shows.
    pub fn is_intact(&self) -> bool {
        self.payload == payload(self.round, self.index)
    }
}

/// Between a few bytes and a few KiB, and every 40th about 200 KiB (which sled keeps in a
/// separate blob file), so records of different sizes and paths get cut by the kills.
fn payload(round: u32, index: u64) -> String {
    let repeats = if index % 40 == 39 {
        40_000
    } else {
        usize::try_from(index % 97).unwrap_or(0) * 7 + 1
    };
    format!("{round}:{index};").repeat(repeats)
}
