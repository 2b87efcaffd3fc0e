//! One process the harness started: its log, and the guarantee that it stops with us.
//!
//! Three layers make sure no component outlives a test run:
//! - [`Supervised`] stops its process on drop (SIGTERM, then SIGKILL after a grace period),
//!   which covers normal ends and panics;
//! - every process is started through `setpriv --pdeathsig KILL`, so the kernel kills it
//!   when the thread that started it dies, which covers a harness killed outright and
//!   fixtures that live until the test binary exits (no drop runs then). KILL, not a
//!   polite signal: a kube-apiserver whose etcd got SIGTERM at the same moment could hang
//!   in its shutdown, and heat-all ignores SIGTERM; orphans of both were seen;
//! - processes are never found by name: only the PIDs we started are ever signalled.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;

/// How long a component gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// A running component with its log file.
pub struct Supervised {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// What asks this program to stop: SIGTERM for most; uwsgi and heat-all stop cleanly
    /// only on SIGINT.
    stop_signal: Signal,
    /// How it was started, to start it again after a test killed it.
    launch: Launch,
}

#[derive(Clone)]
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, PathBuf)>,
    dir: PathBuf,
}

impl Launch {
    /// Starts the program through `setpriv --pdeathsig KILL`, output to `log` (appended).
    fn spawn(&self, name: &str, log: &Path) -> Result<Child, Error> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| Error::Io {
                what: format!("open {}", log.display()),
                source,
            })?;
        let err = out.try_clone().map_err(|source| Error::Io {
            what: format!("open {}", log.display()),
            source,
        })?;
        let mut command = Command::new("setpriv");
        command
            .arg("--pdeathsig")
            .arg("KILL")
            .arg("--")
            .arg(&self.program)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command.spawn().map_err(|source| Error::Spawn {
            component: name.to_owned(),
            program: self.program.clone(),
            source,
        })
    }
}

impl Supervised {
    /// Starts `program` with `args`, stdout and stderr to `log`, in `dir`, with `env` added.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        dir: &Path,
        log: PathBuf,
    ) -> Result<Supervised, Error> {
        Supervised::start_stopped_by(Signal::SIGTERM, name, program, args, env, dir, log)
    }

    /// [`Supervised::start`] for a program that stops cleanly on `signal` (a harness that
    /// dies kills it outright instead).
    pub fn start_stopped_by(
        signal: Signal,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        dir: &Path,
        log: PathBuf,
    ) -> Result<Supervised, Error> {
        // A fresh log per start of the harness; restarts append to it.
        File::create(&log).map_err(|source| Error::Io {
            what: format!("create {}", log.display()),
            source,
        })?;
        let launch = Launch {
            program: program.to_path_buf(),
            args: args.to_vec(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_path_buf()))
                .collect(),
            dir: dir.to_path_buf(),
        };
        let child = launch.spawn(name, &log)?;
        Ok(Supervised {
            name: name.to_owned(),
            child: Some(child),
            log,
            stop_signal: signal,
            launch,
        })
    }

    /// Kills the process outright (SIGKILL), as a crash or a lost machine would, and
    /// reaps it. Nothing happens if it has already exited.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the program again with the same arguments, after [`Supervised::kill`] or
    /// [`Supervised::stop`]; a running process is left as it is.
    pub fn start_again(&mut self) -> Result<(), Error> {
        if self.child.is_some() && self.exited().is_none() {
            return Ok(());
        }
        self.child = Some(self.launch.spawn(&self.name, &self.log)?);
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` if the process has exited.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(error) => Some(format!("unknown ({error})")),
        }
    }

    /// The last `lines` lines of the log.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Stops the process: its stop signal, then SIGKILL if it is still there after the
    /// grace period.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            // Already gone between the check and the signal: nothing to do.
            let _ = kill(Pid::from_raw(pid), self.stop_signal);
        }
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Past the grace period: SIGKILL, and reap it so that no zombie stays behind.
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a file (at most its last 64 KiB), or why it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}
