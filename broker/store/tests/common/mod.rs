//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh folder under Cargo's per-target temp dir (on disk, so fsync is real), removed on
/// drop. Named by process and counter so parallel tests and test binaries never share one.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "ferry-store-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover from an earlier run with the same process id would not be fresh.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    #[allow(dead_code, reason = "some test binaries use only `store`")]
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A store folder inside, so that its mark (`store.mark`, beside it) is inside too.
    #[allow(dead_code, reason = "not every test binary opens a store here")]
    pub fn store(&self) -> PathBuf {
        self.0.join("store")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
