//! The GKE adapter: Google service-account tokens, the GKE API v1 (clusters, node pools,
//! `setSize`, operations), the [`ferry_ports::Provisioner`] over node pools, and Compute
//! Engine prices from the Cloud Billing Catalog as a [`ferry_ports::PriceSource`].
//!
//! [`ServiceAccountKey`] reads a service account's JSON key, named explicitly or by
//! `GOOGLE_APPLICATION_CREDENTIALS`, and signs the RS256 assertion of Google's
//! JWT-bearer flow (`kid` = `private_key_id`; `iss`, `scope`, `aud` = `token_uri`, `iat`
//! 30 s in the past, `exp` an hour later). [`TokenSource`] exchanges it at the key's
//! `token_uri` for an access token, keeps it, and renews it [`DEFAULT_RENEWAL_MARGIN`]
//! before it expires; [`TokenSource::bearer`] gives the Kubernetes adapter a
//! [`BackgroundToken`] (its `BearerToken`) whose `current()` returns the cached token
//! while a tokio task renews it, so that long-lived watches keep a valid token.
//! [`GkeCluster::credentials`] builds the `Credentials::Endpoint` that reaches a cluster.
//!
//! [`Gke`] lists clusters (a location or `-`; `missingZones` makes the [`ClusterList`]
//! partial), reads clusters and node pools as typed values, resizes a node pool
//! ([`Gke::set_size`]) and follows an operation to `DONE` ([`Gke::follow`]) with a
//! deadline, a growing poll delay and a progress callback. [`GkeNodePools`] is the
//! broker's [`ferry_ports::Provisioner`]: a cluster name maps to one node pool
//! ([`PoolRef`]); operation ids are [`OperationRef`]'s text. [`BillingCatalog`] reads the
//! Compute Engine SKUs page by page, and [`CatalogPrices`] quotes a cluster by its region
//! and node pools' machine families.
//!
//! Invariants:
//! - Credentials come from a key file, never from gcloud's configuration or a metadata
//!   server. The private key, assertions and access tokens are [`Secret`]s, which print
//!   as `<redacted>`; `Authorization` headers are marked sensitive; no error carries one.
//!   A Billing Catalog API key is sent as a header, never in a URL.
//! - One token per [`TokenSource`]; concurrent callers that find it due share one
//!   request. Expiry is measured on the monotonic clock from `expires_in`. A refusal of
//!   the token endpoint (`invalid_grant`: a deleted or disabled key, or a badly skewed
//!   clock) is a [`Error::TokenRefused`] that says so, returned to every caller for
//!   [`REFUSAL_HOLD`] without asking again; the background task asks again only every
//!   [`BACKGROUND_REFUSAL_RETRY`].
//! - Errors are classified in [`error`]: google.rpc.Status and OAuth2 envelopes, the
//!   message and status name only, never `details` or an unparsed body. 5xx, 429 and no
//!   answer are transient; 400, 401, 403 and 404 are not; a 400 `FAILED_PRECONDITION` is
//!   a busy cluster.
//! - A `DONE` operation with an `error` is a failure, its message surfaced; `DONE` alone
//!   does not mean success.
//! - Changes are serialised per cluster: a resize waits for Ferry's previous operation on
//!   the cluster, and a `FAILED_PRECONDITION` (someone else's operation) is retried after
//!   waiting, until the change wait runs out.
//! - A list with `missingZones` is partial; nothing is concluded about clusters it does not
//!   show.
//! - `setSize` counts nodes per zone; the broker's total is divided by the pool's zones,
//!   and a total that does not divide is refused, never rounded.
//! - Prices are integer nano-units until they become a [`ferry_ports::Quote`]; a price
//!   whose unit is not `h` (cores) or `GiBy.h` (memory) is an error. A quote that is not
//!   from a fresh catalog says why in `fallback_reason`.
//! - Redirects are not followed. Every call gives up after 30 s.
//!
//! TLS: HTTPS needs the crate feature `https` (rustls with ring and the system's trust
//! store), as in the OpenStack adapter and for the same reason: reqwest's features are
//! unified across a build, so a binary that enables it installs a process-level crypto
//! provider first (the OpenStack adapter's `install_crypto_provider` does that). Without
//! it only `http://` URLs work (the tests), and Google's `https://` defaults are refused
//! when a client is built.
//!
//! Not built yet:
//! - A 401 from GKE is not answered with a new token and one retry (Keystone's pattern);
//!   it is returned as [`Error::Unauthorized`].
//! - Node-pool create, delete, `setAutoscaling` and `update`; cluster create and delete;
//!   `operations.list` and `operations.cancel`; Autopilot pricing; the GKE management fee
//!   (service `CCD8-9BF1-090E`); GPUs, local SSDs and disks in quotes; commitments.
//! - Families whose SKUs do not name the family ("Compute optimized Core" for C2,
//!   "Memory-optimized" for M1/M2) are not matched: their quotes fall back to the Cluster
//!   file's rates, saying so. [`region_display_name`] knows a subset of regions; the others
//!   are matched by `serviceRegions` alone.
//! - The price book lives in memory; it is not written to the broker's store with its
//!   fetch time, so a restart fetches it again.
//! - Workload identity federation, user credentials and the metadata server.

pub mod catalog;
pub mod credentials;
pub mod error;
pub mod gke;
mod http;
pub mod provision;
mod secret;
pub mod token;

pub use catalog::{
    BillingCatalog, Book, COMPUTE_ENGINE_SERVICE, CatalogAuth, CatalogPrices, DEFAULT_CATALOG_TTL,
    DEFAULT_CATALOG_URL, DEFAULT_PAGE_SIZE, FamilyRates, Money, PoolShape, PriceBook, SkuPrice,
    StaticRates, Tier, Usage, region_display_name,
};
pub use credentials::{AssertionClaims, CREDENTIALS_VARIABLE, DEFAULT_SCOPES, ServiceAccountKey};
pub use error::{ApiError, Error, Result};
pub use gke::{
    Autoscaling, ClusterList, ClusterStatus, DEFAULT_CHANGE_WAIT, DEFAULT_GKE_URL, Follow, Gke,
    GkeCluster, GkeOperation, NodePool, OperationError, OperationRef, OperationStatus,
    machine_family, region_of,
};
pub use provision::{GkeNodePools, PoolRef, per_zone, to_port_operation};
pub use secret::Secret;
pub use token::{
    AccessToken, BACKGROUND_REFUSAL_RETRY, BackgroundToken, DEFAULT_RENEWAL_MARGIN, REFUSAL_HOLD,
    TokenSource,
};
