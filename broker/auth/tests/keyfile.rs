//! The broker's HS256 key file.

#![allow(clippy::unwrap_used, reason = "a test reports failure by panicking")]

use std::fs;

use ferry_auth::{HS256_KEY_FILE, KeyError, load_or_create_hs256_key};

#[test]
fn creates_the_key_once_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data"); // Not there yet: it is created.

    let key = load_or_create_hs256_key(&data_dir).unwrap();
    assert_eq!(key.len(), 32);
    let path = data_dir.join(HS256_KEY_FILE);
    assert_eq!(fs::read(&path).unwrap(), key);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
    }
    // Only the key: the temporary file was renamed, not copied.
    let names: Vec<_> = fs::read_dir(&data_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [HS256_KEY_FILE]);

    assert_eq!(load_or_create_hs256_key(&data_dir).unwrap(), key);
    assert_eq!(load_or_create_hs256_key(&data_dir).unwrap(), key);
}

#[test]
fn each_folder_gets_its_own_random_key() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (key_a, key_b) = (
        load_or_create_hs256_key(a.path()).unwrap(),
        load_or_create_hs256_key(b.path()).unwrap(),
    );
    assert_ne!(key_a, key_b);
    assert_ne!(key_a, vec![0; 32]);
}

#[test]
fn an_existing_longer_key_is_used_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let configured: Vec<u8> = (0..64).collect();
    fs::write(dir.path().join(HS256_KEY_FILE), &configured).unwrap();
    assert_eq!(load_or_create_hs256_key(dir.path()).unwrap(), configured);
}

#[test]
fn a_short_key_file_is_an_error_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(HS256_KEY_FILE);
    fs::write(&path, b"short").unwrap();
    match load_or_create_hs256_key(dir.path()) {
        Err(KeyError::BadKeyFile {
            path: reported,
            len: 5,
        }) => assert_eq!(reported, path),
        other => panic!("{other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), b"short");
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the data folder should be.
    let not_a_dir = dir.path().join("data");
    fs::write(&not_a_dir, b"").unwrap();
    let error = load_or_create_hs256_key(&not_a_dir).unwrap_err();
    assert!(matches!(error, KeyError::Io { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&*not_a_dir.to_string_lossy()),
        "{error}"
    );
}
