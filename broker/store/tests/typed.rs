//! The typed layer: envelopes, schema checks and upgrades, locks, and append order.
#![allow(clippy::unwrap_used, reason = "a test reports failure by panicking")]

mod common;

use std::sync::Arc;

use common::TempDir;
use ferry_store::{Kv, MemoryKv, Store, StoreError, Versioned};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The current shape of a migration record.
#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Migration {
    workload: String,
    target: String,
    attempts: u32,
}

impl Versioned for Migration {
    const KIND: &'static str = "migration";
    const SCHEMA: u32 = 2;

    fn upgrade(from: u32, value: serde_json::Value) -> Result<serde_json::Value, StoreError> {
        match from {
            // Schema 1 called the target `cluster` and did not count attempts.
            1 => Ok(json!({
                "workload": value["workload"],
                "target": value["cluster"],
                "attempts": 0,
            })),
            _ => Err(StoreError::NoUpgradePath {
                kind: Self::KIND,
                from,
                to: Self::SCHEMA,
            }),
        }
    }
}

/// What an older broker wrote: same kind, schema 1.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct MigrationV1 {
    workload: String,
    cluster: String,
}

impl Versioned for MigrationV1 {
    const KIND: &'static str = "migration";
    const SCHEMA: u32 = 1;
}

/// A newer broker's shape: same kind, schema 3.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct MigrationV3 {
    workload: String,
    targets: Vec<String>,
}

impl Versioned for MigrationV3 {
    const KIND: &'static str = "migration";
    const SCHEMA: u32 = 3;
}

/// Another kind, with the default `upgrade`.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Lease {
    holder: String,
}

impl Versioned for Lease {
    const KIND: &'static str = "lease";
    const SCHEMA: u32 = 2;
}

fn migration(workload: &str) -> Migration {
    Migration {
        workload: workload.to_string(),
        target: "cloud-a".to_string(),
        attempts: 1,
    }
}

/// A store whose raw bytes the test can read and write.
fn store_with_raw_access() -> (Store, Arc<dyn Kv>) {
    let kv: Arc<dyn Kv> = Arc::new(MemoryKv::new());
    (Store::new(kv.clone()), kv)
}

#[test]
fn round_trip_and_envelope_format() {
    let (store, kv) = store_with_raw_access();
    let value = migration("web");
    store.put("migrations/web", &value).unwrap();
    assert_eq!(
        store.get::<Migration>("migrations/web").unwrap(),
        Some(value)
    );
    assert_eq!(store.get::<Migration>("migrations/db").unwrap(), None);

    let raw: serde_json::Value =
        serde_json::from_slice(&kv.get("migrations/web").unwrap().unwrap()).unwrap();
    assert_eq!(
        raw,
        json!({
            "kind": "migration",
            "schema": 2,
            "value": {"workload": "web", "target": "cloud-a", "attempts": 1},
        })
    );

    store.delete("migrations/web").unwrap();
    assert_eq!(store.get::<Migration>("migrations/web").unwrap(), None);
}

#[test]
fn list_returns_typed_values_in_key_order() {
    let store = Store::in_memory();
    for name in ["c", "a", "b"] {
        store
            .put(&format!("migrations/{name}"), &migration(name))
            .unwrap();
    }
    store.put("migrationsX", &migration("outside")).unwrap();
    store
        .put("leases/a", &Lease { holder: "x".into() })
        .unwrap();

    let listed = store.list::<Migration>("migrations/").unwrap();
    let expected: Vec<_> = ["a", "b", "c"]
        .map(|name| (format!("migrations/{name}"), migration(name)))
        .into();
    assert_eq!(listed, expected);
}

#[test]
fn list_fails_on_a_value_of_another_kind() {
    let store = Store::in_memory();
    store.put("records/1", &migration("web")).unwrap();
    store
        .put("records/2", &Lease { holder: "x".into() })
        .unwrap();
    let error = store.list::<Migration>("records/").unwrap_err();
    assert!(
        matches!(&error, StoreError::KindMismatch { key, .. } if key == "records/2"),
        "{error:?}"
    );
}

#[test]
fn kind_mismatch_is_an_error() {
    let store = Store::in_memory();
    store
        .put(
            "k",
            &Lease {
                holder: "broker-1".into(),
            },
        )
        .unwrap();
    let error = store.get::<Migration>("k").unwrap_err();
    match &error {
        StoreError::KindMismatch {
            key,
            expected,
            found,
        } => {
            assert_eq!(
                (key.as_str(), *expected, found.as_str()),
                ("k", "migration", "lease")
            );
        }
        other => panic!("expected KindMismatch, got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        r#"key "k" holds a "lease" value, not a "migration""#
    );
}

#[test]
fn newer_schema_is_an_error() {
    let store = Store::in_memory();
    let newer = MigrationV3 {
        workload: "web".into(),
        targets: vec!["a".into(), "b".into()],
    };
    store.put("migrations/web", &newer).unwrap();
    let error = store.get::<Migration>("migrations/web").unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::NewerSchema { ref key, kind: "migration", found: 3, supported: 2 }
                if key == "migrations/web"
        ),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("written by a newer broker"),
        "{error}"
    );
}

#[test]
fn older_schema_is_upgraded() {
    let store = Store::in_memory();
    let old = MigrationV1 {
        workload: "web".into(),
        cluster: "cloud-b".into(),
    };
    store.put("migrations/web", &old).unwrap();
    let expected = Migration {
        workload: "web".into(),
        target: "cloud-b".into(),
        attempts: 0,
    };
    assert_eq!(
        store.get::<Migration>("migrations/web").unwrap(),
        Some(expected.clone())
    );
    assert_eq!(
        store.list::<Migration>("migrations/").unwrap(),
        [("migrations/web".to_string(), expected)]
    );
}

#[test]
fn no_upgrade_path_by_default() {
    #[derive(Serialize, Deserialize)]
    struct LeaseV1 {
        holder: String,
    }
    impl Versioned for LeaseV1 {
        const KIND: &'static str = "lease";
        const SCHEMA: u32 = 1;
    }

    let store = Store::in_memory();
    store
        .put("leases/a", &LeaseV1 { holder: "x".into() })
        .unwrap();
    let error = store.get::<Lease>("leases/a").unwrap_err();
    match &error {
        StoreError::Upgrade {
            key,
            from: 1,
            source,
            ..
        } if key == "leases/a" => assert!(
            matches!(
                **source,
                StoreError::NoUpgradePath {
                    kind: "lease",
                    from: 1,
                    to: 2
                }
            ),
            "{source:?}"
        ),
        other => panic!("expected Upgrade(NoUpgradePath), got {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        r#"upgrading the "lease" value at key "leases/a" from schema 1: no upgrade path for "lease" values from schema 1 to 2"#
    );
}

#[test]
fn a_value_not_fitting_the_current_shape_is_an_error() {
    let (store, kv) = store_with_raw_access();
    let wrong_body = json!({"kind": "migration", "schema": 2, "value": {"workload": 7}});
    kv.put("migrations/web", wrong_body.to_string().as_bytes())
        .unwrap();
    let error = store.get::<Migration>("migrations/web").unwrap_err();
    assert!(
        matches!(error, StoreError::Deserialize { ref key, kind: "migration", schema: 2, .. } if key == "migrations/web"),
        "{error:?}"
    );
}

#[test]
fn corrupt_envelope_names_the_key() {
    let (store, kv) = store_with_raw_access();
    kv.put("migrations/web", b"\x00not json").unwrap();
    kv.put("migrations/db", br#"{"value": {}}"#).unwrap();
    for key in ["migrations/web", "migrations/db"] {
        let error = store.get::<Migration>(key).unwrap_err();
        assert!(
            matches!(error, StoreError::CorruptEnvelope { key: ref k, .. } if k == key),
            "{error:?}"
        );
        assert!(error.to_string().contains(key), "{error}");
    }
}

#[test]
fn insert_new_is_a_lock() {
    let store = Store::in_memory();
    assert!(store.insert_new("locks/web", &migration("web")).unwrap());
    let other = Migration {
        target: "cloud-z".into(),
        ..migration("web")
    };
    assert!(!store.insert_new("locks/web", &other).unwrap(), "taken");
    assert_eq!(
        store.get::<Migration>("locks/web").unwrap(),
        Some(migration("web")),
        "the loser changes nothing"
    );
    store.delete("locks/web").unwrap();
    assert!(store.insert_new("locks/web", &other).unwrap(), "free again");
}

#[test]
fn insert_new_has_one_winner_among_racing_threads() {
    let dir = TempDir::new("lock-race");
    let store = Store::open_sled(&dir.store()).unwrap();
    let winners: Vec<u32> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8u32)
            .map(|attempts| {
                let store = store.clone();
                scope.spawn(move || {
                    let value = Migration {
                        attempts,
                        ..migration("web")
                    };
                    store
                        .insert_new("locks/web", &value)
                        .unwrap()
                        .then_some(attempts)
                })
            })
            .collect();
        racers
            .into_iter()
            .filter_map(|r| r.join().unwrap())
            .collect()
    });
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let held = store.get::<Migration>("locks/web").unwrap().unwrap();
    assert_eq!(
        held.attempts, winners[0],
        "the stored value is the winner's"
    );
}

#[test]
fn append_keys_sort_in_append_order() {
    let store = Store::in_memory();
    let keys: Vec<String> = (0..12)
        .map(|i| {
            store
                .append(
                    "events/",
                    &Lease {
                        holder: i.to_string(),
                    },
                )
                .unwrap()
        })
        .collect();
    for key in &keys {
        let suffix = key.strip_prefix("events/").unwrap();
        assert_eq!(suffix.len(), 20, "{key}");
        assert!(suffix.bytes().all(|b| b.is_ascii_digit()), "{key}");
    }
    let listed = store.list::<Lease>("events/").unwrap();
    let holders: Vec<String> = listed.into_iter().map(|(_, lease)| lease.holder).collect();
    let expected: Vec<String> = (0..12).map(|i: i32| i.to_string()).collect();
    assert_eq!(holders, expected);
}

#[test]
fn append_order_survives_reopening_sled() {
    let dir = TempDir::new("append-reopen");
    let mut appended = Vec::new();
    for session in 0..3 {
        let store = Store::open_sled(&dir.store()).unwrap();
        for i in 0..4 {
            let holder = format!("{session}.{i}");
            appended.push((
                store
                    .append(
                        "log/",
                        &Lease {
                            holder: holder.clone(),
                        },
                    )
                    .unwrap(),
                holder,
            ));
        }
        // Dropped here: the next session opens the folder anew, as after a restart.
    }
    let store = Store::open_sled(&dir.store()).unwrap();
    let listed: Vec<(String, String)> = store
        .list::<Lease>("log/")
        .unwrap()
        .into_iter()
        .map(|(key, lease)| (key, lease.holder))
        .collect();
    assert_eq!(
        listed, appended,
        "list order is append order, across reopens"
    );
}

#[test]
fn a_sled_folder_is_open_once() {
    let dir = TempDir::new("open-once");
    let _first = Store::open_sled(&dir.store()).unwrap();
    let error = Store::open_sled(&dir.store()).unwrap_err();
    assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
    let path = dir.store().display().to_string();
    assert!(
        error.to_string().contains(&path),
        "{error} should name {path}"
    );
}

#[test]
fn store_errors_name_the_path() {
    let dir = TempDir::new("not-a-folder");
    let file = dir.path().join("file");
    std::fs::write(&file, b"not a database").unwrap();
    let error = Store::open_sled(&file.join("db")).unwrap_err();
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_batch_takes_a_lock_and_writes_its_record_as_one() {
    let store = Store::in_memory();
    store.put("cancels/mig-0", &migration("old")).unwrap();
    let start = |id: &str| {
        store
            .batch()
            .absent("locks/web")
            .put("locks/web", &migration("web"))
            .put(&format!("migrations/{id}"), &migration("web"))
            .delete("cancels/mig-0")
    };
    assert!(start("mig-1").commit().unwrap());
    assert!(!start("mig-2").commit().unwrap(), "the lock is taken");
    assert_eq!(store.get::<Migration>("migrations/mig-2").unwrap(), None);
    assert_eq!(
        store.get::<Migration>("migrations/mig-1").unwrap(),
        Some(migration("web"))
    );
    assert_eq!(store.get::<Migration>("cancels/mig-0").unwrap(), None);

    // Finishing: the lock goes only if it is still the one this migration took.
    let other = Migration {
        target: "cloud-z".into(),
        ..migration("web")
    };
    let finish = |lock: &Migration| {
        store
            .batch()
            .holds("locks/web", lock)
            .put("migrations/mig-1", &other)
            .delete("locks/web")
    };
    assert!(!finish(&other).commit().unwrap(), "not the lock it holds");
    assert!(store.get::<Migration>("locks/web").unwrap().is_some());
    assert!(finish(&migration("web")).commit().unwrap());
    assert_eq!(store.get::<Migration>("locks/web").unwrap(), None);
    assert_eq!(
        store.get::<Migration>("migrations/mig-1").unwrap(),
        Some(other)
    );
}

/// serde_json refuses maps whose keys are not strings.
#[derive(Serialize, Deserialize, Debug)]
struct Unencodable {
    by_pair: std::collections::BTreeMap<(u8, u8), u8>,
}

impl Versioned for Unencodable {
    const KIND: &'static str = "unencodable";
    const SCHEMA: u32 = 1;
}

#[test]
fn a_batch_with_a_value_it_cannot_encode_writes_nothing() {
    let store = Store::in_memory();
    let unencodable = Unencodable {
        by_pair: [((1, 2), 3)].into(),
    };
    let error = store
        .batch()
        .put("first", &migration("web"))
        .put("bad", &unencodable)
        .delete("other")
        .commit()
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Serialize { key, .. } if key == "bad"),
        "{error:?}"
    );
    assert_eq!(store.get::<Migration>("first").unwrap(), None);
}
