//! Where the control-plane binaries are: built once per pinned version by
//! `scripts/build-testbins` into a cache outside the source tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::Error;

/// Paths of the binaries one test cluster runs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    /// The binaries of the pinned versions, built first if the cache lacks them (the
    /// script is a no-op when they exist). `FERRY_TESTBINS` names a folder to use instead.
    pub fn locate() -> Result<Binaries, Error> {
        static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let found = FOUND.get_or_init(|| {
            if let Some(dir) = std::env::var_os("FERRY_TESTBINS") {
                return Ok(PathBuf::from(dir));
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-testbins");
            let output = Command::new(&script)
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|e| format!("{}: {e}", script.display()))?;
            if !output.status.success() {
                return Err(format!(
                    "{} exited with {}",
                    script.display(),
                    output.status
                ));
            }
            let stdout = String::from_utf8_lossy(&output.stdout);
            stdout
                .lines()
                .last()
                .map(|line| PathBuf::from(line.trim()))
                .ok_or_else(|| "the script printed no folder".to_owned())
        });
        let dir = found.clone().map_err(Error::Build)?;
        let binaries = Binaries { dir };
        for name in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ] {
            if !binaries.path(name).is_file() {
                return Err(Error::Build(format!(
                    "{} is missing",
                    binaries.path(name).display()
                )));
            }
        }
        Ok(binaries)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
