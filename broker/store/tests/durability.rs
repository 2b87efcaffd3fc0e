//! Acknowledged writes survive SIGKILL: runs `ferry-store-writer`, kills it at several points
//! while it writes, and checks every record it acknowledged in the reopened folder.

mod common;

#[path = "../src/bin/ferry-store-writer/record.rs"]
mod record;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::TempDir;
use ferry_store::Store;
use record::WriterRecord;

/// Kills the writer also when the test panics, so no writer outlives it.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a writer for `round` until it acknowledged `acks` keys, SIGKILLs it (most likely in the
/// middle of its next write), and returns the acknowledged keys.
fn write_until_killed(folder: &Path, round: u32, acks: usize) -> Vec<String> {
    let mut writer = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ferry-store-writer"))
            .arg(folder)
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferry-store-writer"),
    );
    let mut lines = BufReader::new(writer.0.stdout.take().expect("piped stdout")).lines();
    let mut acked = Vec::with_capacity(acks);
    while acked.len() < acks {
        match lines.next() {
            Some(line) => {
                let line = line.expect("read writer output");
                let key = line.strip_prefix("ack ").expect("an `ack KEY` line");
                acked.push(key.to_string());
            }
            None => {
                let mut stderr = String::new();
                let _ = writer
                    .0
                    .stderr
                    .take()
                    .map(|mut e| e.read_to_string(&mut stderr));
                panic!("writer ended after {} acks: {stderr}", acked.len());
            }
        }
    }
    // Child::kill sends SIGKILL: no destructor, no flush on the way out.
    writer.0.kill().expect("kill writer");
    writer.0.wait().expect("reap writer");
    acked
}

/// Checks every acknowledged key of every round so far; returns how many it checked.
fn check_acknowledged(folder: &Path, rounds: &[(u32, Vec<String>)]) -> usize {
    let store = Store::open_sled(folder).expect("reopen after kill");
    let mut checked = 0;
    for (round, keys) in rounds {
        for key in keys {
            let record = store
                .get::<WriterRecord>(key)
                .unwrap_or_else(|e| panic!("round {round}: {e}"))
                .unwrap_or_else(|| panic!("round {round}: acknowledged {key} is gone"));
            assert!(record.is_intact(), "round {round}: {key} holds {record:?}");
            assert_eq!(record.round, *round, "{key}");
            if let Some(index) = key.strip_prefix(&format!("by-index/{round:03}/")) {
                assert_eq!(record.index, index.parse::<u64>().expect("index"), "{key}");
            }
            checked += 1;
        }
    }
    // Appends sort in the order they were written, across the kills and restarts.
    let log = store.list::<WriterRecord>("log/").expect("list log");
    let order: Vec<(u32, u64)> = log.iter().map(|(_, r)| (r.round, r.index)).collect();
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "log out of append order: {order:?}"
    );
    checked
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = TempDir::new("durability");
    let mut rounds = Vec::new();
    let mut checked = 0;
    for (round, acks) in [1, 17, 200, 2, 75, 400].into_iter().enumerate() {
        let round = u32::try_from(round).expect("few rounds");
        rounds.push((round, write_until_killed(&dir.store(), round, acks)));
        checked = check_acknowledged(&dir.store(), &rounds);
    }
    let acked: usize = rounds.iter().map(|(_, keys)| keys.len()).sum();
    assert_eq!(checked, acked);
    eprintln!(
        "durability: {acked} acknowledged records intact after {} SIGKILLs",
        rounds.len()
    );
}
