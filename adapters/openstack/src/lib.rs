//! The OpenStack adapter: Keystone v3, Heat v1 and Magnum clients, Ferry's own Heat
//! template for a Kubernetes cluster, and on-prem pricing.
//!
//! [`CloudConfig`] reads one cloud from a `clouds.yaml` (the `openstack` client's format
//! and search path) or from the `OS_*` variables. [`Keystone`] signs in with a password
//! scoped to a project or with an application credential, keeps the token and renews it
//! before it expires, and picks service endpoints from the token's catalog by type,
//! interface and region. [`Heat`] creates a stack from template text (with an environment,
//! files such as provider templates, parameters and a timeout) — adopting a stack of the
//! same name instead of failing — validates, shows it with typed outputs, lists its
//! resources through nested stacks, changes parameters in place (`PATCH`, e.g.
//! `worker_count`), deletes it, and follows any of these to its end ([`Heat::follow`])
//! with progress, a deadline and, on failure, the failed resources and their reasons
//! ([`Failure`]). [`Heat::operation`] answers in the broker's [`ferry_ports::Operation`],
//! and [`Error::to_port_error`] in its [`ferry_ports::PortError`].
//!
//! [`provision`] is Ferry's cluster template (`heat/`: network, API load balancer,
//! kubeadm control plane and workers, as `Ferry::…` types mapped by an environment),
//! the checks of its parameters, the access read from a complete stack
//! ([`ClusterAccess`]) and [`HeatClusters`], the [`ferry_ports::Provisioner`] over
//! Heat. [`magnum`] does the same through Magnum (templates, clusters, resize, client
//! certificates signed through `/v1/certificates`). [`pricing`] turns an on-prem rate
//! table (or an OpenCost custom-pricing file) into rates per core-hour and GiB-hour.
//!
//! Invariants:
//! - Credentials come from clouds.yaml or `OS_*` variables, never from a Cluster file.
//!   Passwords, application-credential secrets and tokens are [`Secret`]s, which print as
//!   `<redacted>`; request bodies holding them are never logged, the `X-Auth-Token` header
//!   is marked sensitive, and stack outputs (which may hold join tokens) print without
//!   their values.
//! - Heat and Magnum need **password** authentication of a service user: they create a
//!   Keystone trust per stack or cluster, and Keystone refuses trusts to
//!   application-credential tokens unless an operator sets
//!   `[security_compliance] allow_insecure_application_credential_trust_escalation`
//!   (insecure, deprecated). A Heat 403 on such a token says so. Application credentials
//!   are fine for Keystone itself and for services that need no trust.
//! - One token per [`Keystone`], renewed [`DEFAULT_RENEWAL_MARGIN`] before `expires_at`
//!   (measured with the token's own lifetime, so clock skew does not matter); concurrent
//!   callers share one renewal. A 401 from a service means one new token and one retry,
//!   never more. Keystone refusing the credentials is returned at once and repeated
//!   without a request for a minute: one wrong password is one failed attempt, whatever
//!   the number of callers (account lockout policies count them).
//! - Errors are classified in [`error`]: the envelope's message, type and request id;
//!   never Heat's traceback or an unparsed body. 5xx, 429 and no answer are transient;
//!   400, 401 after the retry, 403 and 404 are not; a 409 on create is an adoption.
//! - Stacks are addressed by name and id once created (a [`StackId`], to be journaled
//!   before following); the 302 lookup by name happens only to adopt. Templates,
//!   environments and files are sent as text, never re-encoded.
//! - Heat's strings-for-numbers are parsed at this boundary ([`Stack::parameter_integer`],
//!   [`Stack::output_integer`], …); nothing downstream sees Heat's wire shapes.
//! - A follow never asks Heat to resolve outputs while the action runs (Heat writes
//!   attribute data when it does); outputs are read once, when the action is over.
//! - Redirects are not followed. Every call gives up after 30 s; retries of whole
//!   operations belong to the caller, transient errors while following are ridden out
//!   until the follow's deadline.
//!
//! TLS: HTTPS needs the crate feature `https` (rustls with ring, the system's trust store
//! plus a clouds.yaml `cacert`; `verify: false` is refused). Without it, only `http://`
//! clouds work (the test harness), and an `https://` auth URL is a configuration error. It
//! is off by default because reqwest's features are unified across a build: once any crate
//! of a binary (or of a `cargo test --workspace` run) enables it, every reqwest client there
//! uses rustls without a crypto provider and panics when built, unless the process
//! installed one first. A binary that enables `https` calls `install_crypto_provider` at
//! the top of `main`, and so do its test harnesses. reqwest's own `rustls` feature does not
//! avoid this: it adds aws-lc-rs next to kube's ring, and kube's `ClientConfig::builder()`
//! then panics for the same reason.
//!
//! Not built yet:
//! - A rate table becomes a Cluster file's `pricing` block through `ferry pricing`; the
//!   broker does not read rate tables itself.
//! - HTTPS by default: the `ferry` binary enables `https` only with its own `https` feature
//!   (`main` then installs the provider); no test talks TLS to a real endpoint yet (the
//!   harness is plain HTTP).
//! - Keystone version discovery (`auth_url` without `/v3` gets `/v3` appended), token or
//!   OIDC auth types, domain-scoped tokens, `secure.yaml`, a clouds.yaml `regions` list,
//!   paging through `GET /stacks`, and stack events.

pub mod config;
pub mod error;
pub mod heat;
mod http;
pub mod keystone;
pub mod magnum;
pub mod pricing;
pub mod provision;
mod secret;

pub use config::{
    ApplicationCredentialRef, Auth, CloudConfig, DomainRef, Interface, ProjectRef, UserRef, Vars,
};
pub use error::{ApiError, Error, Result};
pub use heat::{
    Action, Created, DEFAULT_NESTED_DEPTH, Failure, Follow, Heat, NewStack, Outcome, Output,
    Progress, Resource, Stack, StackId, State, Status, check_stack_name,
};
pub use keystone::{
    ApplicationCredentialInfo, Catalog, CatalogEndpoint, CatalogService, DEFAULT_RENEWAL_MARGIN,
    Keystone, Token,
};
pub use magnum::{
    ClusterCreated, ClusterOutcome, ClusterProgress, ClusterTemplate, Magnum, MagnumAccess,
    MagnumClusters, NewCluster, NewClusterTemplate, TemplateCreated,
};
pub use pricing::{FieldError, PricingError, RateTable, RateTablePrices, Workers};
pub use provision::{
    CLUSTER_TEMPLATE, ClusterAccess, ClusterRequest, DEFAULT_ENVIRONMENT, DEFAULT_WORKERS,
    Environment, HeatClusters, TEMPLATE_FILES, check_worker_count,
};
pub use secret::Secret;

#[cfg(feature = "https")]
pub use http::install_crypto_provider;
