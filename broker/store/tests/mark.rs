//! The high-water mark: a store that lost acknowledged writes refuses to open, and syncs are
//! shared between concurrent writers.
#![allow(clippy::unwrap_used, reason = "a test reports failure by panicking")]

mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::TempDir;
use ferry_store::{Kv, SledKv, Store, StoreError, Versioned};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Record {
    index: u32,
}

impl Versioned for Record {
    const KIND: &'static str = "record";
    const SCHEMA: u32 = 1;
}

/// Writes `count` records through a store opened on `folder`, in every way the store writes.
fn write_records(folder: &Path, count: u32) {
    let store = Store::open_sled(folder).unwrap();
    for index in 0..count {
        let key = format!("records/{index:04}");
        store.put(&key, &Record { index }).unwrap();
        store.delete(&format!("missing/{index}")).unwrap();
        assert!(
            store
                .batch()
                .absent(&format!("locks/{index}"))
                .put(&format!("locks/{index}"), &Record { index })
                .commit()
                .unwrap()
        );
    }
}

/// The highest count in the mark `store.mark` of `folder` (the checksums are the store's
/// business; its unit tests check them).
fn marked(folder: &Path) -> u64 {
    let mark = std::fs::read_to_string(folder.join("store.mark")).unwrap();
    mark.lines()
        .map(|line| {
            let count = line.split(' ').nth(1).unwrap_or_else(|| panic!("{mark:?}"));
            count.parse::<u64>().unwrap()
        })
        .max()
        .unwrap()
}

fn expect_missing_writes(error: StoreError, folder: &Path) {
    let text = error.to_string();
    let StoreError::MissingWrites { marked, found, .. } = error else {
        panic!("expected MissingWrites, got {error:?}");
    };
    assert!(found < marked, "{text}");
    let mark = format!("{}.mark", folder.display());
    for expected in [
        "missing acknowledged writes",
        &folder.display().to_string(),
        &mark,
        "Restore the folder from a backup",
        "docs/operations.md",
    ] {
        assert!(text.contains(expected), "{text:?} should say {expected:?}");
    }
}

#[test]
fn a_plain_reopen_keeps_everything_and_opens() {
    let dir = TempDir::new("mark-reopen");
    write_records(&dir.store(), 20);
    assert_eq!(marked(dir.path()), 60, "three writes per record");
    for _ in 0..3 {
        let store = Store::open_sled(&dir.store()).unwrap();
        assert_eq!(store.list::<Record>("records/").unwrap().len(), 20);
    }
}

/// The corruption the issue found: bytes 8–15 of `store/db` (a segment header) flipped, after
/// which sled opened without its newest writes and without a word.
#[test]
fn a_store_behind_its_mark_refuses_to_open() {
    let dir = TempDir::new("mark-flipped");
    write_records(&dir.store(), 20);
    let mut db = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.store().join("db"))
        .unwrap();
    db.seek(SeekFrom::Start(8)).unwrap();
    db.write_all(&[0xff; 8]).unwrap();
    drop(db);
    let error = Store::open_sled(&dir.store()).unwrap_err();
    expect_missing_writes(error, &dir.store());
    // Refused, and refused again: opening wrote nothing that would hide it next time.
    let error = Store::open_sled(&dir.store()).unwrap_err();
    expect_missing_writes(error, &dir.store());
}

#[test]
fn a_store_folder_deleted_as_a_whole_is_noticed() {
    let dir = TempDir::new("mark-deleted");
    write_records(&dir.store(), 2);
    std::fs::remove_dir_all(dir.store()).unwrap();
    let error = Store::open_sled(&dir.store()).unwrap_err();
    expect_missing_writes(error, &dir.store());
}

#[test]
fn deleting_the_mark_accepts_the_store_as_it_is() {
    let dir = TempDir::new("mark-accept");
    write_records(&dir.store(), 2);
    std::fs::remove_dir_all(dir.store()).unwrap();
    assert!(Store::open_sled(&dir.store()).is_err());
    std::fs::remove_file(dir.path().join("store.mark")).unwrap();
    let store = Store::open_sled(&dir.store()).unwrap();
    assert_eq!(store.list::<Record>("records/").unwrap(), []);
    store.put("records/new", &Record { index: 7 }).unwrap();
    drop(store);
    assert_eq!(marked(dir.path()), 1, "counted afresh");
    assert!(Store::open_sled(&dir.store()).is_ok());
}

#[test]
fn an_unreadable_mark_is_named() {
    let dir = TempDir::new("mark-unreadable");
    write_records(&dir.store(), 1);
    let mark = dir.path().join("store.mark");
    let torn = std::fs::read_to_string(&mark)
        .unwrap()
        .replace("000000", "999999");
    std::fs::write(&mark, torn).unwrap();
    let error = Store::open_sled(&dir.store()).unwrap_err();
    assert!(
        matches!(error, StoreError::UnreadableMark { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&mark.display().to_string()),
        "{error}"
    );
}

#[test]
fn writers_at_once_share_their_syncs() {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 25;
    let dir = TempDir::new("mark-group");
    let kv = SledKv::open(&dir.store()).unwrap();
    let syncs_before = kv.sync_count();
    std::thread::scope(|scope| {
        for writer in 0..WRITERS {
            let kv = &kv;
            scope.spawn(move || {
                for i in 0..PER_WRITER {
                    kv.put(&format!("w/{writer}/{i}"), b"value").unwrap();
                }
            });
        }
    });
    let syncs = kv.sync_count() - syncs_before;
    let writes = WRITERS * PER_WRITER;
    eprintln!("{writes} writes from {WRITERS} threads took {syncs} syncs");
    assert!(
        syncs < u64::try_from(writes).unwrap(),
        "{syncs} syncs for {writes} concurrent writes"
    );
    assert_eq!(kv.scan_prefix("w/").unwrap().len(), writes);
    drop(kv);
    assert_eq!(marked(dir.path()), u64::try_from(writes).unwrap());
}
