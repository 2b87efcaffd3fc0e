//! The behaviour every [`Kv`] backend must show, as one suite that any backend runs from its
//! tests: sled and memory here, etcd later. A backend that passes can stand in for another
//! without the broker noticing.
//!
//! Each property takes a fresh, empty store and returns `Err` for backend failures; it panics
//! (like `assert!`) when the backend misbehaves. [`run_all`] runs every property.

use std::sync::Arc;

use crate::{Kv, StoreError};

/// A property of the `Kv` contract, checked on a fresh, empty store.
pub type Property = fn(&dyn Kv) -> Result<(), StoreError>;

/// Every property, by name.
pub const PROPERTIES: &[(&str, Property)] = &[
    ("get_missing_key", get_missing_key),
    ("put_get_overwrite", put_get_overwrite),
    ("delete", delete),
    ("compare_and_swap_absent", compare_and_swap_absent),
    ("compare_and_swap_present", compare_and_swap_present),
    ("compare_and_swap_delete", compare_and_swap_delete),
    ("compare_and_swap_is_atomic", compare_and_swap_is_atomic),
    (
        "scan_prefix_order_and_boundaries",
        scan_prefix_order_and_boundaries,
    ),
    (
        "next_sequence_strictly_increasing",
        next_sequence_strictly_increasing,
    ),
    ("binary_safe_values", binary_safe_values),
    ("many_keys", many_keys),
    ("commit_applies_every_write", commit_applies_every_write),
    (
        "commit_failed_condition_writes_nothing",
        commit_failed_condition_writes_nothing,
    ),
    ("commit_one_winner", commit_one_winner),
];

/// Runs every property of [`PROPERTIES`], each on a new store from `make`; panics naming the
/// first property that fails.
pub fn run_all(make: &dyn Fn() -> Arc<dyn Kv>) {
    for (name, property) in PROPERTIES {
        // Printed first so that an assertion failing inside the property names it too (the
        // test harness shows a failed test's output).
        eprintln!("conformance property: {name}");
        if let Err(e) = property(&*make()) {
            panic!("conformance property {name}: backend error: {e}");
        }
    }
}

pub fn get_missing_key(kv: &dyn Kv) -> Result<(), StoreError> {
    assert_eq!(kv.get("missing")?, None);
    Ok(())
}

pub fn put_get_overwrite(kv: &dyn Kv) -> Result<(), StoreError> {
    kv.put("k", b"one")?;
    assert_eq!(kv.get("k")?.as_deref(), Some(&b"one"[..]));
    kv.put("k", b"two, longer than one")?;
    assert_eq!(kv.get("k")?.as_deref(), Some(&b"two, longer than one"[..]));
    kv.put("k", b"3")?;
    assert_eq!(
        kv.get("k")?.as_deref(),
        Some(&b"3"[..]),
        "a shorter overwrite"
    );
    assert_eq!(kv.get("k2")?, None, "a put touches only its key");
    Ok(())
}

pub fn delete(kv: &dyn Kv) -> Result<(), StoreError> {
    kv.put("k", b"v")?;
    kv.put("k2", b"v2")?;
    kv.delete("k")?;
    assert_eq!(kv.get("k")?, None);
    assert_eq!(
        kv.get("k2")?.as_deref(),
        Some(&b"v2"[..]),
        "a delete touches only its key"
    );
    kv.delete("k")?; // deleting a missing key is fine
    kv.delete("never-there")?;
    kv.put("k", b"again")?;
    assert_eq!(kv.get("k")?.as_deref(), Some(&b"again"[..]));
    Ok(())
}

pub fn compare_and_swap_absent(kv: &dyn Kv) -> Result<(), StoreError> {
    assert!(kv.compare_and_swap("lock", None, Some(b"first"))?);
    assert!(
        !kv.compare_and_swap("lock", None, Some(b"second"))?,
        "creating a key that exists must fail"
    );
    assert_eq!(kv.get("lock")?.as_deref(), Some(&b"first"[..]));
    assert!(
        !kv.compare_and_swap("other", Some(b"x"), Some(b"y"))?,
        "expecting a value on an absent key must fail"
    );
    assert_eq!(kv.get("other")?, None);
    Ok(())
}

pub fn compare_and_swap_present(kv: &dyn Kv) -> Result<(), StoreError> {
    kv.put("k", b"old")?;
    assert!(kv.compare_and_swap("k", Some(b"old"), Some(b"new"))?);
    assert_eq!(kv.get("k")?.as_deref(), Some(&b"new"[..]));
    assert!(
        !kv.compare_and_swap("k", Some(b"old"), Some(b"newer"))?,
        "a stale expected value must fail"
    );
    assert!(
        !kv.compare_and_swap("k", Some(b"ne"), Some(b"newer"))?,
        "a prefix of the value is not the value"
    );
    assert_eq!(
        kv.get("k")?.as_deref(),
        Some(&b"new"[..]),
        "a failed swap changes nothing"
    );
    Ok(())
}

pub fn compare_and_swap_delete(kv: &dyn Kv) -> Result<(), StoreError> {
    kv.put("k", b"v")?;
    assert!(!kv.compare_and_swap("k", Some(b"other"), None)?);
    assert_eq!(kv.get("k")?.as_deref(), Some(&b"v"[..]));
    assert!(kv.compare_and_swap("k", Some(b"v"), None)?);
    assert_eq!(kv.get("k")?, None);
    assert!(
        !kv.compare_and_swap("k", Some(b"v"), None)?,
        "deleting again with the old value must fail"
    );
    assert!(
        kv.compare_and_swap("k", None, Some(b"back"))?,
        "a deleted key is absent"
    );
    Ok(())
}

/// Threads incrementing one counter by compare-and-swap lose no increment. The broker's locks
/// (`Store::insert_new`) rely on this.
pub fn compare_and_swap_is_atomic(kv: &dyn Kv) -> Result<(), StoreError> {
    const THREADS: u64 = 4;
    const INCREMENTS: u64 = 25;
    kv.put("counter", b"0")?;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| -> Result<(), StoreError> {
                    for _ in 0..INCREMENTS {
                        while !increment(kv, "counter")? {}
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|worker| {
            worker
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    })?;
    let total = (THREADS * INCREMENTS).to_string();
    assert_eq!(kv.get("counter")?.as_deref(), Some(total.as_bytes()));
    Ok(())
}

/// One attempt at adding 1 to the decimal counter under `key`.
fn increment(kv: &dyn Kv, key: &str) -> Result<bool, StoreError> {
    let current = kv.get(key)?;
    let number: u64 = current
        .as_deref()
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| panic!("counter {key} holds {current:?}, not a number"));
    let next = (number + 1).to_string();
    kv.compare_and_swap(key, current.as_deref(), Some(next.as_bytes()))
}

pub fn scan_prefix_order_and_boundaries(kv: &dyn Kv) -> Result<(), StoreError> {
    // Inserted out of order; "a" and "ab" share the letter but not the "a/" prefix.
    for key in [
        "b", "a/é", "ab", "a/10", "a/", "a", "a/2", "a/Z", "a/1", "a0", "a/z",
    ] {
        kv.put(key, key.as_bytes())?;
    }
    let keys = |prefix: &str| -> Result<Vec<String>, StoreError> {
        let entries = kv.scan_prefix(prefix)?;
        for (key, value) in &entries {
            assert_eq!(
                value,
                key.as_bytes(),
                "scan_prefix pairs each key with its value"
            );
        }
        Ok(entries.into_iter().map(|(key, _)| key).collect())
    };
    // Bytewise: "/" < "0" < "Z" < "b" < "z" < "é" (0xC3 0xA9), and "10" < "2".
    assert_eq!(
        keys("a/")?,
        ["a/", "a/1", "a/10", "a/2", "a/Z", "a/z", "a/é"]
    );
    assert_eq!(
        keys("a")?,
        [
            "a", "a/", "a/1", "a/10", "a/2", "a/Z", "a/z", "a/é", "a0", "ab"
        ]
    );
    assert_eq!(keys("a/1")?, ["a/1", "a/10"]);
    assert_eq!(keys("ab")?, ["ab"]);
    assert_eq!(keys("a/é")?, ["a/é"]);
    assert_eq!(keys("c")?, Vec::<String>::new());
    assert_eq!(keys("")?.len(), 11, "the empty prefix matches every key");
    Ok(())
}

pub fn next_sequence_strictly_increasing(kv: &dyn Kv) -> Result<(), StoreError> {
    let mut last = kv.next_sequence()?;
    for _ in 0..1000 {
        let next = kv.next_sequence()?;
        assert!(next > last, "next_sequence returned {next} after {last}");
        last = next;
    }
    Ok(())
}

pub fn binary_safe_values(kv: &dyn Kv) -> Result<(), StoreError> {
    let every_byte: Vec<u8> = (0..=255).collect();
    let not_utf8 = [0xff, 0xfe, 0x00, 0xc3];
    let cases: [(&str, &[u8]); 4] = [
        ("every-byte", &every_byte),
        ("not-utf8", &not_utf8),
        ("nul", b"\0"),
        ("empty", b""),
    ];
    for (key, value) in cases {
        kv.put(key, value)?;
    }
    for (key, value) in cases {
        assert_eq!(kv.get(key)?.as_deref(), Some(value), "value of {key}");
    }
    // An empty value is present, not absent.
    assert!(!kv.compare_and_swap("empty", None, Some(b"x"))?);
    assert!(kv.compare_and_swap("empty", Some(b""), Some(&every_byte))?);
    assert_eq!(kv.get("empty")?.as_deref(), Some(&every_byte[..]));
    let large: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    kv.put("large", &large)?;
    assert_eq!(
        kv.get("large")?.as_deref(),
        Some(&large[..]),
        "a 256 KiB value"
    );
    Ok(())
}

pub fn many_keys(kv: &dyn Kv) -> Result<(), StoreError> {
    const COUNT: usize = 500;
    let key = |i: usize| format!("many/{i:05}");
    // Written in reverse so that order comes from the backend, not from insertion.
    for i in (0..COUNT).rev() {
        kv.put(&key(i), format!("value {i}").as_bytes())?;
    }
    let entries = kv.scan_prefix("many/")?;
    assert_eq!(entries.len(), COUNT);
    for (i, (k, v)) in entries.iter().enumerate() {
        assert_eq!(*k, key(i));
        assert_eq!(*v, format!("value {i}").into_bytes());
    }
    for i in [0, 1, COUNT / 2, COUNT - 1] {
        assert_eq!(kv.get(&key(i))?, Some(format!("value {i}").into_bytes()));
    }
    Ok(())
}

/// A condition or write of [`Kv::commit`].
type Entry = (String, Option<Vec<u8>>);

/// `(key, Some(value))` for the conditions and writes of [`Kv::commit`].
fn some(key: &str, value: &[u8]) -> Entry {
    (key.to_string(), Some(value.to_vec()))
}

/// `(key, None)`: absent as a condition, a delete as a write.
fn none(key: &str) -> Entry {
    (key.to_string(), None)
}

/// A batch whose conditions hold applies all its puts and deletes, in order.
pub fn commit_applies_every_write(kv: &dyn Kv) -> Result<(), StoreError> {
    kv.put("held", b"v")?;
    kv.put("doomed", b"v")?;
    let conditions = [none("lock"), some("held", b"v")];
    let writes = [
        some("lock", b"mig-1"),
        some("record", b"first"),
        none("doomed"),
        none("never-there"),
        some("record", b"second"),
    ];
    assert!(kv.commit(&conditions, &writes)?);
    assert_eq!(kv.get("lock")?.as_deref(), Some(&b"mig-1"[..]));
    assert_eq!(
        kv.get("record")?.as_deref(),
        Some(&b"second"[..]),
        "the later write to a key wins"
    );
    assert_eq!(kv.get("doomed")?, None, "a delete in a batch");
    assert_eq!(kv.get("held")?.as_deref(), Some(&b"v"[..]));
    assert!(kv.commit(&[], &[])?, "an empty batch commits");
    assert!(
        kv.commit(&[], &[none("lock"), some("free", b"x")])?,
        "a batch without conditions commits"
    );
    assert_eq!(kv.get("lock")?, None);
    assert_eq!(kv.get("free")?.as_deref(), Some(&b"x"[..]));
    Ok(())
}

/// One condition that does not hold, among others that do, and nothing is written.
pub fn commit_failed_condition_writes_nothing(kv: &dyn Kv) -> Result<(), StoreError> {
    kv.put("lock", b"mig-0")?;
    kv.put("kept", b"v")?;
    kv.put("empty", b"")?;
    let writes = [some("record", b"new"), none("kept"), some("lock", b"mig-1")];
    let failing: [&[Entry]; 5] = [
        &[none("lock")],
        &[some("kept", b"v"), none("lock")],
        &[some("lock", b"mig-")], // a prefix of the value is not the value
        &[some("missing", b"")],  // absent is not empty
        &[none("empty")],         // empty is not absent
    ];
    for conditions in failing {
        assert!(
            !kv.commit(conditions, &writes)?,
            "conditions {conditions:?} do not hold"
        );
        assert_eq!(kv.get("record")?, None, "after {conditions:?}");
        assert_eq!(kv.get("kept")?.as_deref(), Some(&b"v"[..]));
        assert_eq!(kv.get("lock")?.as_deref(), Some(&b"mig-0"[..]));
    }
    Ok(())
}

/// Threads racing to take one lock with a batch: exactly one wins, and its record is the
/// one written with the lock.
pub fn commit_one_winner(kv: &dyn Kv) -> Result<(), StoreError> {
    const THREADS: usize = 4;
    let wins = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                scope.spawn(move || {
                    let name = format!("mig-{thread}");
                    let writes = [
                        some("lock", name.as_bytes()),
                        some("record", name.as_bytes()),
                    ];
                    kv.commit(&[none("lock")], &writes)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
            .collect::<Result<Vec<bool>, StoreError>>()
    })?;
    assert_eq!(wins.iter().filter(|won| **won).count(), 1, "{wins:?}");
    let winner = wins.iter().position(|won| *won).map(|t| format!("mig-{t}"));
    let winner = winner.map(String::into_bytes);
    assert_eq!(kv.get("lock")?, winner);
    assert_eq!(
        kv.get("record")?,
        winner,
        "the record of the batch that won"
    );
    Ok(())
}

/// For backends that persist: writes through one handle, drops it, and checks through a new
/// one from `open` (same storage) that the data and the sequence survived. `open` is called
/// twice, and the first handle is dropped before the second call (sled locks its folder).
pub fn reopen_keeps_data_and_sequence(
    open: &dyn Fn() -> Result<Arc<dyn Kv>, StoreError>,
) -> Result<(), StoreError> {
    let kv = open()?;
    kv.put("kept", b"value")?;
    kv.put("deleted", b"value")?;
    kv.delete("deleted")?;
    assert!(kv.compare_and_swap("swapped", None, Some(b"by cas"))?);
    assert!(kv.commit(
        &[none("batch/lock")],
        &[
            some("batch/lock", b"mig-1"),
            some("batch/record", b"r"),
            none("never-there"),
        ],
    )?);
    kv.put("deleted-by-batch", b"value")?;
    assert!(kv.commit(&[], &[none("deleted-by-batch")])?);
    let last = (0..10).map(|_| kv.next_sequence()).try_fold(0, |_, s| s)?;
    drop(kv);

    let kv = open()?;
    assert_eq!(kv.get("kept")?.as_deref(), Some(&b"value"[..]));
    assert_eq!(kv.get("deleted")?, None);
    assert_eq!(kv.get("swapped")?.as_deref(), Some(&b"by cas"[..]));
    assert_eq!(kv.get("batch/lock")?.as_deref(), Some(&b"mig-1"[..]));
    assert_eq!(kv.get("batch/record")?.as_deref(), Some(&b"r"[..]));
    assert_eq!(kv.get("deleted-by-batch")?, None, "a batch's delete lasts");
    let next = kv.next_sequence()?;
    assert!(
        next > last,
        "after reopening, next_sequence returned {next} after {last}"
    );
    Ok(())
}
