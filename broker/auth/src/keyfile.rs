//! The broker's own HS256 key, kept in its data folder.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::{KeyError, MIN_HS256_KEY_LEN};

/// The key file's name inside the data folder.
pub const HS256_KEY_FILE: &str = "jwt-hs256.key";

/// The length of a generated key: the output size of SHA-256, as RFC 7518 §3.2 advises.
const GENERATED_KEY_LEN: usize = 32;

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> KeyError {
    let path = path.to_path_buf();
    move |source| KeyError::Io {
        action,
        path,
        source,
    }
}

/// Reads `<data_dir>/jwt-hs256.key`, or creates it with 32 random bytes. Returns the key.
///
/// A new key goes to a temporary file (mode 0600, synced) that is then renamed over the
/// final name, so a crash leaves either no key or a whole one, never a short key that
/// would later sign tokens. The data folder is created if missing.
///
/// An existing file shorter than 32 bytes is an error rather than replaced: replacing it
/// would silently invalidate every token issued so far, which is the operator's call.
pub fn load_or_create_hs256_key(data_dir: &Path) -> Result<Vec<u8>, KeyError> {
    let path = data_dir.join(HS256_KEY_FILE);
    match fs::read(&path) {
        Ok(key) if key.len() >= MIN_HS256_KEY_LEN => return Ok(key),
        Ok(key) => {
            return Err(KeyError::BadKeyFile {
                path,
                len: key.len(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("cannot read", &path)(e)),
    }

    fs::create_dir_all(data_dir).map_err(io_error("cannot create", data_dir))?;
    let key = random_bytes(GENERATED_KEY_LEN)?;
    // The process id keeps two brokers that share a folder by mistake from writing into
    // each other's temporary file.
    let temp = data_dir.join(format!(".{HS256_KEY_FILE}.{}.tmp", std::process::id()));
    if let Err(error) = write_private(&temp, &key) {
        // Best effort: the temporary file holds nothing anyone relies on.
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    if let Err(source) = fs::rename(&temp, &path) {
        let _ = fs::remove_file(&temp);
        return Err(KeyError::Io {
            action: "cannot move the new key to",
            path,
            source,
        });
    }
    // Makes the rename itself durable. Best effort: some filesystems refuse to sync a
    // directory, and the key is already complete under its final name.
    if let Ok(dir) = File::open(data_dir) {
        let _ = dir.sync_all();
    }
    Ok(key)
}

fn random_bytes(len: usize) -> Result<Vec<u8>, KeyError> {
    let source = PathBuf::from("/dev/urandom");
    let mut bytes = vec![0; len];
    File::open(&source)
        .and_then(|mut file| file.read_exact(&mut bytes))
        .map_err(io_error("cannot read", &source))?;
    Ok(bytes)
}

fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    // A leftover from an earlier crash may have other permissions; `create_new` below then
    // guarantees the file written is one this call created with mode 0600.
    let _ = fs::remove_file(path);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(io_error("cannot create", path))?;
    // The umask may have cleared bits of 0600 at creation; set the mode exactly.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_error("cannot set permissions on", path))?;
    }
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error("cannot write", path))
}
