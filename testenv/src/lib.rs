//! Real components for Ferry's integration tests, started on loopback and stopped with the
//! test: Kubernetes control planes (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, and kwok playing the kubelet for fake nodes), and a Keystone with Heat
//! from Debian's packages; and, for what cannot run here, a mock Magnum built from its API
//! reference ([`magnum`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), ferry_testenv::Error> {
//! let clusters = ferry_testenv::start_clusters(&[ferry_testenv::ClusterSpec::named("a")]).await?;
//! let client = clusters[0].client().await?;
//! # Ok(()) }
//! ```
//!
//! Each cluster has its own folder (certificates, kubeconfig, data, one log per component).
//! Dropping a [`Cluster`] stops its processes; when a test panics, the tail of every
//! component's log is printed first. See `docs/testing.md` for the figures and the design.

mod binaries;
mod cluster;
pub mod google;
pub mod magnum;
mod manifest;
mod openstack;
mod pki;
mod ports;
mod process;

use std::path::PathBuf;
use std::time::Duration;

pub use binaries::Binaries;
pub use cluster::{Cluster, ClusterSpec, Identity, NodeSpec, client_from, start_clusters};
pub use google::FakeGoogle;
pub use magnum::MockMagnum;
pub use manifest::manifest_documents;
pub use openstack::{CLOUD, Credentials, OpenStack, REGION, password_auth};
pub use process::{Supervised, tail};

/// Makes ring the process-level rustls crypto provider unless one is installed. Call it
/// before building a reqwest client in a test: in a build where any crate enables
/// reqwest's rustls (the `ferry` binary does by default), reqwest panics on a client built
/// with no provider installed. Harmless when reqwest has no TLS.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An error means another thread installed one in between, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A reqwest client with default settings, after [`install_crypto_provider`].
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::new()
}

/// What can go wrong while starting or using the test environment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the test binaries failed (scripts/build-testbins): {0}")]
    Build(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {component} ({}): {source}", program.display())]
    Spawn {
        component: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificates ({what}): {message}")]
    Pki { what: String, message: String },
    #[error("cluster {cluster}: {component} exited ({status}); last lines of its log:\n{log}")]
    Exited {
        cluster: String,
        component: String,
        status: String,
        log: String,
    },
    #[error("cluster {cluster}: {what} not ready after {waited:?}; last lines of the logs:\n{log}")]
    NotReady {
        cluster: String,
        what: String,
        waited: Duration,
        log: String,
    },
    #[error("cluster {cluster}: {what}: {source}")]
    Kube {
        cluster: String,
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} is missing: {hint}")]
    Missing { what: String, hint: String },
    #[error("{command} exited ({status}):\n{output}")]
    Setup {
        command: String,
        status: String,
        output: String,
    },
    #[error("{what}: {message}")]
    Http { what: String, message: String },
    #[error("kubeconfig {}: {message}", path.display())]
    Kubeconfig { path: PathBuf, message: String },
}
