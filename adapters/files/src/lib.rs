//! Resource files on disk: expands the paths a user gives (files and directories) into
//! every `*.yaml` / `*.yml` file, reads them, and decodes them into a
//! [`ResourceSet`] with every diagnostic. This is the snapshot source of offline
//! planning (`ferry plan`, `ferry validate`), and later of the broker's policy folders.

use std::fs;
use std::path::{Path, PathBuf};

use ferry_policies::resources::{Diagnostic, ResourceSet, check_references};
use thiserror::Error;

/// Files larger than this are refused rather than read: no resource set needs them.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A path that could not be read.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The path does not exist or cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The path as the user gave it (or as found in a directory).
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file too large to be a resource file.
    #[error(
        "{path}: {size} bytes is larger than the {MAX_FILE_BYTES}-byte limit for a resource file"
    )]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// A directory with no resource files in it.
    #[error("{0}: no *.yaml or *.yml files found")]
    Empty(String),
}

/// What a set of paths held.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The decoded resources.
    pub resources: ResourceSet,
    /// Every problem found, sorted by file, line and column.
    pub diagnostics: Vec<Diagnostic>,
    /// The files read, in the order read.
    pub files: Vec<String>,
}

/// Reads every resource file under `paths`. I/O problems are errors; problems inside
/// files are diagnostics, so that all of them can be reported at once.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    let mut files = Vec::new();
    for path in paths {
        expand(path, &mut files)?;
    }
    let mut loaded = Loaded::default();
    for file in files {
        let name = file.display().to_string();
        let io = |source| LoadError::Io {
            path: name.clone(),
            source,
        };
        let size = fs::metadata(&file).map_err(io)?.len();
        if size > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge { path: name, size });
        }
        let bytes = fs::read(&file).map_err(io)?;
        // Invalid UTF-8 is a diagnostic like any other, not a reason to stop.
        let text = String::from_utf8_lossy(&bytes);
        loaded
            .diagnostics
            .extend(loaded.resources.add_source(&name, &text));
        loaded.files.push(name);
    }
    loaded
        .diagnostics
        .extend(check_references(&loaded.resources));
    loaded.diagnostics.sort();
    Ok(loaded)
}

/// A file stays as given (whatever its extension: the user named it); a directory
/// contributes its `*.yaml` / `*.yml` files, recursively, in name order.
fn expand(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let metadata = fs::metadata(path).map_err(io)?;
    if !metadata.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let before = files.len();
    let mut entries: Vec<PathBuf> = fs::read_dir(path)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            expand(&entry, files)?;
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(entry);
        }
    }
    if files.len() == before {
        return Err(LoadError::Empty(path.display().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ferry-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("nested")).expect("temp dir");
        dir
    }

    #[test]
    fn directories_expand_recursively_in_name_order() {
        let dir = scratch("expand");
        let doc = "apiVersion: ferry.dev/v1alpha1\nkind: Workload\nmetadata: {name: NAME}\nspec: {replicas: 1, resources: {cpu: 1}}\n";
        fs::write(dir.join("b.yaml"), doc.replace("NAME", "b")).expect("write");
        fs::write(dir.join("a.yml"), doc.replace("NAME", "a")).expect("write");
        fs::write(dir.join("notes.txt"), "not yaml").expect("write");
        fs::write(dir.join("nested/c.yaml"), doc.replace("NAME", "c")).expect("write");
        let loaded = load(std::slice::from_ref(&dir)).expect("loads");
        assert_eq!(loaded.diagnostics, vec![]);
        let names: Vec<&str> = loaded
            .resources
            .workloads
            .iter()
            .map(|w| w.value.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_paths_and_empty_directories_are_errors() {
        let missing = load(&[PathBuf::from("/nonexistent/ferry")]).expect_err("missing");
        assert!(
            missing.to_string().starts_with("/nonexistent/ferry: "),
            "{missing}"
        );
        let dir = scratch("empty");
        let empty = load(std::slice::from_ref(&dir)).expect_err("empty");
        assert!(matches!(empty, LoadError::Empty(_)), "{empty}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_utf8_is_a_diagnostic() {
        let dir = scratch("utf8");
        fs::write(dir.join("bad.yaml"), b"kind: \xff\xfe\n").expect("write");
        let loaded = load(&[dir.join("bad.yaml")]).expect("loads");
        assert!(!loaded.diagnostics.is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}
