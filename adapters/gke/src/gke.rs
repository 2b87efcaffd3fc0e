//! GKE API v1 (`container`, cloud-apis §7): clusters, node pools, `setSize` and
//! operations, in the `projects.locations` form.
//!
//! Wire shapes stay here. A cluster becomes a [`GkeCluster`] (its endpoint as a URL, its
//! CA as given, its status as a [`Health`], its node pools with machine type, size per
//! zone and autoscaling bounds); an operation becomes a [`GkeOperation`] addressed by an
//! [`OperationRef`], whose text (`projects/{p}/locations/{l}/operations/{name}`) is what
//! the broker journals before following it.
//!
//! Lists are not paginated in this API; a non-empty `missingZones` makes a
//! [`ClusterList`] partial, and a partial list must never be read as deletions.
//!
//! Changes are serialised per cluster: [`Gke::set_size`] first waits for the last
//! operation it started on the same cluster to be `DONE`, then sends the change, and when
//! GKE still answers 400 `FAILED_PRECONDITION` (an operation that someone else started
//! runs) it waits and sends it again, until [`Gke::with_change_wait`] runs out.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_adapter_kubernetes::{BearerToken, Credentials};
use ferry_ports::Health;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::http::{Reply, check_segment, client, connection_error, trim_base};
use crate::token::TokenSource;

/// Google's GKE endpoint.
pub const DEFAULT_GKE_URL: &str = "https://container.googleapis.com/";
/// How long a change waits for the cluster's running operations by default.
pub const DEFAULT_CHANGE_WAIT: Duration = Duration::from_secs(15 * 60);
const SERVICE: &str = "container";
/// The waits between tries of a change refused because another operation runs.
const BUSY_FIRST_DELAY: Duration = Duration::from_secs(5);
const BUSY_MAX_DELAY: Duration = Duration::from_secs(30);

// ---- wire shapes (container.v1.json) ----

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ClusterWire {
    name: String,
    location: String,
    locations: Vec<String>,
    zone: Option<String>,
    status: Option<String>,
    status_message: Option<String>,
    endpoint: Option<String>,
    master_auth: Option<MasterAuthWire>,
    node_pools: Vec<NodePoolWire>,
    current_master_version: Option<String>,
    autopilot: Option<AutopilotWire>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct MasterAuthWire {
    cluster_ca_certificate: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AutopilotWire {
    enabled: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NodePoolWire {
    name: String,
    status: Option<String>,
    config: Option<NodeConfigWire>,
    initial_node_count: Option<u32>,
    locations: Vec<String>,
    autoscaling: Option<AutoscalingWire>,
    version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct NodeConfigWire {
    machine_type: Option<String>,
    spot: bool,
    preemptible: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct AutoscalingWire {
    enabled: bool,
    min_node_count: Option<u32>,
    max_node_count: Option<u32>,
    total_min_node_count: Option<u32>,
    total_max_node_count: Option<u32>,
    location_policy: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ListClustersWire {
    clusters: Vec<ClusterWire>,
    missing_zones: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct ListNodePoolsWire {
    node_pools: Vec<NodePoolWire>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct OperationWire {
    name: String,
    operation_type: Option<String>,
    status: Option<String>,
    status_message: Option<String>,
    detail: Option<String>,
    location: Option<String>,
    zone: Option<String>,
    target_link: Option<String>,
    error: Option<StatusWire>,
    progress: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StatusWire {
    code: Option<i32>,
    message: Option<String>,
}

// ---- typed values ----

/// `Cluster.status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterStatus {
    Provisioning,
    Running,
    Reconciling,
    Stopping,
    Error,
    Degraded,
    /// `STATUS_UNSPECIFIED`, absent, or a value this adapter does not know.
    Other(String),
}

impl ClusterStatus {
    fn parse(text: Option<&str>) -> ClusterStatus {
        match text.unwrap_or("") {
            "PROVISIONING" => ClusterStatus::Provisioning,
            "RUNNING" => ClusterStatus::Running,
            "RECONCILING" => ClusterStatus::Reconciling,
            "STOPPING" => ClusterStatus::Stopping,
            "ERROR" => ClusterStatus::Error,
            "DEGRADED" => ClusterStatus::Degraded,
            other => ClusterStatus::Other(other.to_owned()),
        }
    }

    /// Running is ready; reconciling (an upgrade, a resize) or degraded still serves; a
    /// cluster being created, deleted, in error or in an unknown state is not usable.
    pub fn health(&self) -> Health {
        match self {
            ClusterStatus::Running => Health::Ready,
            ClusterStatus::Reconciling | ClusterStatus::Degraded => Health::Degraded,
            _ => Health::Unreachable,
        }
    }
}

/// A node pool's autoscaling bounds. `min`/`max` are per zone; the `total_` ones, when
/// set, are for the whole pool (and GKE then ignores the per-zone ones).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Autoscaling {
    pub enabled: bool,
    pub min_per_zone: Option<u32>,
    pub max_per_zone: Option<u32>,
    pub total_min: Option<u32>,
    pub total_max: Option<u32>,
    /// `BALANCED` or `ANY`.
    pub location_policy: Option<String>,
}

/// A node pool, as Ferry reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePool {
    pub name: String,
    pub status: String,
    /// E.g. `e2-standard-4`.
    pub machine_type: String,
    /// Spot or preemptible VMs (priced by the `Preemptible` SKUs).
    pub spot: bool,
    /// `initialNodeCount`, which GKE counts per zone.
    pub nodes_per_zone: u32,
    /// The pool's zones (the cluster's when the pool names none).
    pub zones: Vec<String>,
    pub autoscaling: Option<Autoscaling>,
    pub version: Option<String>,
}

impl NodePool {
    /// The machine family: the machine type up to its first `-` (`e2`, `n2d`, `c3`).
    pub fn family(&self) -> &str {
        machine_family(&self.machine_type)
    }

    /// Nodes in all zones: `initialNodeCount` × zones. The pool's actual size (its
    /// instance groups, moved by the autoscaler) is not in this API; the cluster's
    /// Kubernetes API has the nodes themselves.
    pub fn node_count(&self) -> u32 {
        let zones = u32::try_from(self.zones.len().max(1)).unwrap_or(u32::MAX);
        self.nodes_per_zone.saturating_mul(zones)
    }

    fn from_wire(wire: NodePoolWire, cluster_zones: &[String]) -> NodePool {
        let config = wire.config.unwrap_or_default();
        let zones = if wire.locations.is_empty() {
            cluster_zones.to_vec()
        } else {
            wire.locations
        };
        NodePool {
            name: wire.name,
            status: wire.status.unwrap_or_default(),
            machine_type: config.machine_type.unwrap_or_default(),
            spot: config.spot || config.preemptible,
            nodes_per_zone: wire.initial_node_count.unwrap_or(0),
            zones,
            autoscaling: wire.autoscaling.map(|a| Autoscaling {
                enabled: a.enabled,
                min_per_zone: a.min_node_count,
                max_per_zone: a.max_node_count,
                total_min: a.total_min_node_count,
                total_max: a.total_max_node_count,
                location_policy: a.location_policy,
            }),
            version: wire.version,
        }
    }
}

/// The machine family of a machine type: up to the first `-` (`n2d-standard-8` → `n2d`).
pub fn machine_family(machine_type: &str) -> &str {
    machine_type.split('-').next().unwrap_or(machine_type)
}

/// The region of a location: a zone (`us-central1-a`) loses its last part, a region
/// (`us-central1`) stays.
pub fn region_of(location: &str) -> &str {
    match location.rsplit_once('-') {
        Some((region, zone)) if zone.len() == 1 && zone.chars().all(|c| c.is_ascii_lowercase()) => {
            region
        }
        _ => location,
    }
}

/// A GKE cluster, as Ferry reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GkeCluster {
    pub name: String,
    /// A region or a zone.
    pub location: String,
    /// The zones of its nodes.
    pub locations: Vec<String>,
    pub status: ClusterStatus,
    pub status_message: Option<String>,
    pub health: Health,
    /// `https://{endpoint}`, once the control plane has an address.
    pub endpoint_url: Option<String>,
    /// `masterAuth.clusterCaCertificate`: a base64-encoded PEM, kept as given.
    pub ca_base64: Option<String>,
    pub node_pools: Vec<NodePool>,
    pub autopilot: bool,
    pub master_version: Option<String>,
}

impl GkeCluster {
    /// Parses a `Cluster` document.
    pub fn parse(body: &[u8]) -> std::result::Result<GkeCluster, String> {
        let wire: ClusterWire = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        GkeCluster::from_wire(wire)
    }

    fn from_wire(wire: ClusterWire) -> std::result::Result<GkeCluster, String> {
        if wire.name.is_empty() {
            return Err("a cluster without a name".to_owned());
        }
        // `zone` is the deprecated spelling of a zonal cluster's location.
        let location = if wire.location.is_empty() {
            wire.zone.unwrap_or_default()
        } else {
            wire.location
        };
        let status = ClusterStatus::parse(wire.status.as_deref());
        let node_pools = wire
            .node_pools
            .into_iter()
            .map(|p| NodePool::from_wire(p, &wire.locations))
            .collect();
        Ok(GkeCluster {
            name: wire.name,
            location,
            locations: wire.locations,
            health: status.health(),
            status,
            status_message: wire.status_message.filter(|m| !m.is_empty()),
            endpoint_url: wire
                .endpoint
                .filter(|e| !e.is_empty())
                .map(|e| format!("https://{e}")),
            ca_base64: wire
                .master_auth
                .and_then(|m| m.cluster_ca_certificate)
                .filter(|c| !c.is_empty()),
            node_pools,
            autopilot: wire.autopilot.is_some_and(|a| a.enabled),
            master_version: wire.current_master_version,
        })
    }

    pub fn region(&self) -> &str {
        region_of(&self.location)
    }

    pub fn node_pool(&self, name: &str) -> Option<&NodePool> {
        self.node_pools.iter().find(|p| p.name == name)
    }

    /// How the Kubernetes adapter reaches this cluster's API server with `token` (a
    /// [`crate::BackgroundToken`]); `None` while it has no endpoint or CA yet.
    pub fn credentials(&self, token: Arc<dyn BearerToken>) -> Option<Credentials> {
        Some(Credentials::Endpoint {
            server: self.endpoint_url.clone()?,
            ca_base64: self.ca_base64.clone()?,
            token,
        })
    }
}

/// The clusters of a project, and whether the list is whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterList {
    pub clusters: Vec<GkeCluster>,
    /// Zones that did not answer: clusters there may exist but are not listed.
    pub missing_zones: Vec<String>,
}

impl ClusterList {
    /// Parses a `ListClustersResponse`.
    pub fn parse(body: &[u8]) -> std::result::Result<ClusterList, String> {
        let wire: ListClustersWire = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Ok(ClusterList {
            clusters: wire
                .clusters
                .into_iter()
                .map(GkeCluster::from_wire)
                .collect::<std::result::Result<_, _>>()?,
            missing_zones: wire.missing_zones,
        })
    }

    /// Some zones did not answer: absent clusters may still exist.
    pub fn is_partial(&self) -> bool {
        !self.missing_zones.is_empty()
    }
}

/// Where an operation is: the handle to journal before following it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OperationRef {
    pub project: String,
    pub location: String,
    pub name: String,
}

impl fmt::Display for OperationRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "projects/{}/locations/{}/operations/{}",
            self.project, self.location, self.name
        )
    }
}

impl OperationRef {
    /// Parses `projects/{p}/locations/{l}/operations/{name}`, its own text.
    pub fn parse(text: &str) -> Option<OperationRef> {
        let parts: Vec<&str> = text.split('/').collect();
        match parts.as_slice() {
            [
                "projects",
                project,
                "locations",
                location,
                "operations",
                name,
            ] if [project, location, name]
                .iter()
                .all(|p| check_segment("", p).is_ok()) =>
            {
                Some(OperationRef {
                    project: (*project).to_owned(),
                    location: (*location).to_owned(),
                    name: (*name).to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// `Operation.status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OperationStatus {
    Pending,
    Running,
    Done,
    Aborting,
    /// `STATUS_UNSPECIFIED`, absent or unknown: treated as still running.
    Other(String),
}

impl OperationStatus {
    fn parse(text: Option<&str>) -> OperationStatus {
        match text.unwrap_or("") {
            "PENDING" => OperationStatus::Pending,
            "RUNNING" => OperationStatus::Running,
            "DONE" => OperationStatus::Done,
            "ABORTING" => OperationStatus::Aborting,
            other => OperationStatus::Other(other.to_owned()),
        }
    }
}

/// An operation's `error`: a google.rpc.Status whose code is a google.rpc.Code number, not
/// an HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperationError {
    pub code: i32,
    pub message: String,
}

/// A GKE operation, as Ferry reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GkeOperation {
    pub id: OperationRef,
    /// E.g. `SET_NODE_POOL_SIZE`.
    pub operation_type: String,
    pub status: OperationStatus,
    pub status_message: Option<String>,
    pub detail: Option<String>,
    pub target_link: Option<String>,
    pub error: Option<OperationError>,
    /// The progress metrics as `name=value`, e.g. `NODES_DONE=2`.
    pub metrics: Vec<String>,
}

impl GkeOperation {
    /// Parses an `Operation` of `project`. Its location comes from the document (`location`
    /// or the deprecated `zone`), or is `fallback_location` (where it was asked for).
    pub fn parse(
        body: &[u8],
        project: &str,
        fallback_location: &str,
    ) -> std::result::Result<GkeOperation, String> {
        let wire: OperationWire = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if wire.name.is_empty() {
            return Err("an operation without a name".to_owned());
        }
        let location = wire
            .location
            .filter(|l| !l.is_empty())
            .or(wire.zone.filter(|z| !z.is_empty()))
            .unwrap_or_else(|| fallback_location.to_owned());
        Ok(GkeOperation {
            id: OperationRef {
                project: project.to_owned(),
                location,
                name: wire.name,
            },
            operation_type: wire.operation_type.unwrap_or_default(),
            status: OperationStatus::parse(wire.status.as_deref()),
            status_message: wire.status_message.filter(|m| !m.is_empty()),
            detail: wire.detail.filter(|m| !m.is_empty()),
            target_link: wire.target_link,
            // DONE with an `error` is a failure even when its code is 0 (OK): the
            // field's presence is what GKE documents as failure.
            error: wire.error.map(|e| OperationError {
                code: e.code.unwrap_or(0),
                message: e
                    .message
                    .map(|m| crate::error::clean_message(&m))
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "no message".to_owned()),
            }),
            metrics: wire.progress.as_ref().map(metrics).unwrap_or_default(),
        })
    }

    pub fn is_done(&self) -> bool {
        self.status == OperationStatus::Done
    }

    /// One line for the broker: status, message and metrics.
    pub fn progress(&self) -> String {
        let status = match &self.status {
            OperationStatus::Pending => "PENDING",
            OperationStatus::Running => "RUNNING",
            OperationStatus::Done => "DONE",
            OperationStatus::Aborting => "ABORTING",
            OperationStatus::Other(other) if other.is_empty() => "STATUS_UNSPECIFIED",
            OperationStatus::Other(other) => other,
        };
        let mut text = format!("{} {status}", self.operation_type);
        if let Some(message) = self.status_message.as_ref().or(self.detail.as_ref()) {
            text.push_str(": ");
            text.push_str(message);
        }
        if !self.metrics.is_empty() {
            text.push_str(&format!(" ({})", self.metrics.join(", ")));
        }
        text
    }
}

/// `OperationProgress.metrics` as `name=value` (`intValue` is an int64, hence a string).
fn metrics(progress: &Value) -> Vec<String> {
    let Some(metrics) = progress["metrics"].as_array() else {
        return Vec::new();
    };
    metrics
        .iter()
        .filter_map(|m| {
            let name = m["name"].as_str()?;
            let value = [&m["intValue"], &m["doubleValue"], &m["stringValue"]]
                .into_iter()
                .find(|v| !v.is_null())?;
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some(format!("{name}={value}"))
        })
        .collect()
}

/// How patiently to follow an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follow {
    /// Give up (with [`Error::Timeout`]) after this long.
    pub deadline: Duration,
    /// The first wait between polls; each next one is half as long again, up to
    /// `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Follow {
    /// Polls from every 2 s up to every 15 s, until `deadline`.
    pub fn within(deadline: Duration) -> Follow {
        Follow {
            deadline,
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15),
        }
    }
}

/// The last operation Ferry started on a cluster, behind the cluster's change lock.
type ChangeLock = Arc<tokio::sync::Mutex<Option<OperationRef>>>;

/// A GKE client for one project.
pub struct Gke {
    http: reqwest::Client,
    base: String,
    project: String,
    tokens: Arc<TokenSource>,
    change_wait: Duration,
    busy_delays: (Duration, Duration),
    changes: Mutex<BTreeMap<String, ChangeLock>>,
}

impl fmt::Debug for Gke {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gke")
            .field("base", &self.base)
            .field("project", &self.project)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl Gke {
    /// A client for the key's project at [`DEFAULT_GKE_URL`].
    pub fn new(tokens: Arc<TokenSource>) -> Result<Gke> {
        Gke::with_base_url(tokens, DEFAULT_GKE_URL)
    }

    /// A client for the key's project at `base` (a test server).
    pub fn with_base_url(tokens: Arc<TokenSource>, base: &str) -> Result<Gke> {
        let project = tokens.key().project_id().to_owned();
        check_segment("project", &project)?;
        Ok(Gke {
            http: client(base, "GKE base URL")?,
            base: trim_base(base),
            project,
            tokens,
            change_wait: DEFAULT_CHANGE_WAIT,
            busy_delays: (BUSY_FIRST_DELAY, BUSY_MAX_DELAY),
            changes: Mutex::new(BTreeMap::new()),
        })
    }

    /// Another project than the key's.
    pub fn for_project(mut self, project: &str) -> Result<Gke> {
        check_segment("project", project)?;
        project.clone_into(&mut self.project);
        Ok(self)
    }

    /// How long a change waits for other operations on its cluster, instead of
    /// [`DEFAULT_CHANGE_WAIT`].
    pub fn with_change_wait(mut self, wait: Duration) -> Gke {
        self.change_wait = wait;
        self
    }

    /// The waits between tries of a change GKE refuses because another operation runs:
    /// the first, doubling up to the second (5 s and 30 s by default).
    pub fn with_busy_delays(mut self, first: Duration, max: Duration) -> Gke {
        self.busy_delays = (first, max);
        self
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    fn cluster_path(&self, location: &str, cluster: &str) -> Result<String> {
        check_segment("location", location)?;
        check_segment("cluster", cluster)?;
        Ok(format!(
            "v1/projects/{}/locations/{location}/clusters/{cluster}",
            self.project
        ))
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let operation = format!("{method} {path}");
        let token = self.tokens.token().await?;
        let mut header =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.value().expose()))
                .map_err(|_| Error::InvalidResponse {
                service: "oauth2".to_owned(),
                operation: "POST token".to_owned(),
                message: "the access token is not a valid header value".to_owned(),
            })?;
        header.set_sensitive(true);
        let mut request = self
            .http
            .request(method, format!("{}/{path}", self.base))
            .header("Authorization", header)
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| connection_error(SERVICE, &operation, &e))?;
        Reply::read(response, SERVICE, &operation).await
    }

    /// The clusters in `location` (a region, a zone, or `-` for all).
    pub async fn list_clusters(&self, location: &str) -> Result<ClusterList> {
        check_segment("location", location)?;
        let path = format!("v1/projects/{}/locations/{location}/clusters", self.project);
        let reply = self.send(reqwest::Method::GET, &path, None).await?.ok()?;
        let list = ClusterList::parse(reply.body()).map_err(|m| reply.invalid(m))?;
        if list.is_partial() {
            tracing::warn!(project = %self.project, location, missing_zones = ?list.missing_zones,
                "GKE listed clusters without some zones; the list is partial");
        }
        Ok(list)
    }

    pub async fn cluster(&self, location: &str, cluster: &str) -> Result<GkeCluster> {
        let path = self.cluster_path(location, cluster)?;
        let reply = self.send(reqwest::Method::GET, &path, None).await?.ok()?;
        GkeCluster::parse(reply.body()).map_err(|m| reply.invalid(m))
    }

    /// The cluster's node pools; a pool without zones of its own gets the cluster's.
    pub async fn node_pools(&self, location: &str, cluster: &str) -> Result<Vec<NodePool>> {
        Ok(self.cluster(location, cluster).await?.node_pools)
    }

    /// One node pool, read on its own (`nodePools.get`); GKE names its zones.
    pub async fn node_pool(&self, location: &str, cluster: &str, pool: &str) -> Result<NodePool> {
        check_segment("node pool", pool)?;
        let path = format!("{}/nodePools/{pool}", self.cluster_path(location, cluster)?);
        let reply = self.send(reqwest::Method::GET, &path, None).await?.ok()?;
        let wire: NodePoolWire = reply.json()?;
        Ok(NodePool::from_wire(wire, &[]))
    }

    /// `nodePools.list`, for callers that want the pools without the cluster.
    pub async fn list_node_pools(&self, location: &str, cluster: &str) -> Result<Vec<NodePool>> {
        let path = format!("{}/nodePools", self.cluster_path(location, cluster)?);
        let reply = self.send(reqwest::Method::GET, &path, None).await?.ok()?;
        let wire: ListNodePoolsWire = reply.json()?;
        Ok(wire
            .node_pools
            .into_iter()
            .map(|p| NodePool::from_wire(p, &[]))
            .collect())
    }

    pub async fn operation(&self, id: &OperationRef) -> Result<GkeOperation> {
        for (what, value) in [
            ("project", &id.project),
            ("location", &id.location),
            ("operation", &id.name),
        ] {
            check_segment(what, value)?;
        }
        let path = format!(
            "v1/projects/{}/locations/{}/operations/{}",
            id.project, id.location, id.name
        );
        let reply = self.send(reqwest::Method::GET, &path, None).await?.ok()?;
        GkeOperation::parse(reply.body(), &id.project, &id.location).map_err(|m| reply.invalid(m))
    }

    fn change_lock(&self, location: &str, cluster: &str) -> ChangeLock {
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        changes
            .entry(format!("{}/{location}/{cluster}", self.project))
            .or_default()
            .clone()
    }

    /// Sets the pool's size **per zone** (`nodePools.setSize`; absolute, so repeating it is
    /// harmless). Serialised per cluster; see the module docs.
    pub async fn set_size(
        &self,
        location: &str,
        cluster: &str,
        pool: &str,
        nodes_per_zone: u32,
    ) -> Result<GkeOperation> {
        check_segment("node pool", pool)?;
        let path = format!(
            "{}/nodePools/{pool}:setSize",
            self.cluster_path(location, cluster)?
        );
        let node_count = i32::try_from(nodes_per_zone).map_err(|_| Error::InvalidInput {
            what: format!("size of node pool {pool}"),
            message: format!("{nodes_per_zone} is more than GKE's int32"),
        })?;
        let body = json!({ "nodeCount": node_count });
        let started = Instant::now();
        let lock = self.change_lock(location, cluster);
        let mut last = lock.lock().await;
        if let Some(previous) = last.take() {
            self.wait_for(&previous, started).await;
        }
        let (mut delay, max_delay) = self.busy_delays;
        loop {
            let reply = self.send(reqwest::Method::POST, &path, Some(&body)).await?;
            match reply.ok() {
                Ok(reply) => {
                    let operation = GkeOperation::parse(reply.body(), &self.project, location)
                        .map_err(|m| reply.invalid(m))?;
                    tracing::info!(operation = %operation.id, cluster, pool, nodes_per_zone,
                        "GKE node pool resize accepted");
                    *last = Some(operation.id.clone());
                    return Ok(operation);
                }
                Err(Error::Busy(api)) if started.elapsed() + delay < self.change_wait => {
                    tracing::info!(cluster, pool, message = %api.message,
                        retry_in_s = delay.as_secs(),
                        "another operation runs on the cluster; waiting to resize");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(max_delay);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Waits until `previous` (Ferry's last change on the cluster) is over, or the change
    /// wait since `started` runs out; its outcome is not this change's business.
    async fn wait_for(&self, previous: &OperationRef, started: Instant) {
        let remaining = self.change_wait.saturating_sub(started.elapsed());
        let follow = Follow {
            deadline: remaining,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
        };
        if let Err(error) = self.follow(previous, &follow, |_| {}).await
            && !matches!(error, Error::OperationFailed { .. })
        {
            tracing::debug!(operation = %previous, %error,
                "waiting for the previous change did not end cleanly; sending anyway");
        }
    }

    /// Polls `id` until it is `DONE`, calling `on_progress` whenever its progress line
    /// changes. `DONE` with an `error` is [`Error::OperationFailed`] with GKE's message.
    /// Transient errors (5xx, no answer) are ridden out until the deadline; others end the
    /// follow.
    pub async fn follow(
        &self,
        id: &OperationRef,
        follow: &Follow,
        mut on_progress: impl FnMut(&GkeOperation),
    ) -> Result<GkeOperation> {
        let started = Instant::now();
        let deadline = started + follow.deadline;
        let mut delay = follow.first_delay;
        let mut last_progress: Option<String> = None;
        let mut last_text: String;
        loop {
            match self.operation(id).await {
                Ok(operation) if operation.is_done() => {
                    on_progress(&operation);
                    return match &operation.error {
                        Some(error) => Err(Error::OperationFailed {
                            operation: id.to_string(),
                            code: error.code,
                            message: error.message.clone(),
                        }),
                        None => Ok(operation),
                    };
                }
                Ok(operation) => {
                    let progress = operation.progress();
                    if last_progress.as_ref() != Some(&progress) {
                        tracing::debug!(operation = %id, progress = %progress, "GKE operation progress");
                        on_progress(&operation);
                        last_progress = Some(progress.clone());
                    }
                    last_text = progress;
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(operation = %id, %error, "polling the operation failed; trying again");
                    last_text = error.to_string();
                }
                Err(error) => return Err(error),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!("GKE operation {id}"),
                    waited: now - started,
                    last: last_text,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 3 / 2).min(follow.max_delay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_regions() {
        let cases = [
            ("e2-standard-4", "e2"),
            ("n2d-highmem-8", "n2d"),
            ("c3-standard-22", "c3"),
            ("n1-standard-1", "n1"),
            ("custom", "custom"),
        ];
        for (machine_type, family) in cases {
            assert_eq!(machine_family(machine_type), family);
        }
        let regions = [
            ("us-central1-a", "us-central1"),
            ("us-central1", "us-central1"),
            ("europe-west4-b", "europe-west4"),
            ("northamerica-northeast1-c", "northamerica-northeast1"),
            ("northamerica-northeast1", "northamerica-northeast1"),
        ];
        for (location, region) in regions {
            assert_eq!(region_of(location), region, "{location}");
        }
    }

    #[test]
    fn status_to_health() {
        let cases = [
            ("RUNNING", Health::Ready),
            ("RECONCILING", Health::Degraded),
            ("DEGRADED", Health::Degraded),
            ("PROVISIONING", Health::Unreachable),
            ("STOPPING", Health::Unreachable),
            ("ERROR", Health::Unreachable),
            ("STATUS_UNSPECIFIED", Health::Unreachable),
            ("", Health::Unreachable),
        ];
        for (status, health) in cases {
            assert_eq!(
                ClusterStatus::parse(Some(status)).health(),
                health,
                "{status}"
            );
        }
    }

    #[test]
    fn operation_ids_round_trip_and_parse_strictly() {
        let id = OperationRef {
            project: "p".into(),
            location: "us-central1".into(),
            name: "operation-1700000000000-abcd".into(),
        };
        let text = id.to_string();
        assert_eq!(
            text,
            "projects/p/locations/us-central1/operations/operation-1700000000000-abcd"
        );
        assert_eq!(OperationRef::parse(&text), Some(id));
        for bad in [
            "",
            "us-central1/op",
            "projects/p/locations/l/operations/",
            "projects/p/locations/l/operations/a/b",
            "projects/p/zones/l/operations/a",
            "projects/p/locations/l?x/operations/a",
        ] {
            assert_eq!(OperationRef::parse(bad), None, "{bad}");
        }
    }
}
