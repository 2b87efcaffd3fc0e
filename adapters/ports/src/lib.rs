//! The ports: the small traits through which the broker sees the outside world.
//!
//! - [`ClusterPort`]: one member cluster — its inventory, and what a migration does to a
//!   workload there (export, apply, watch the rollout, scale, delete).
//! - [`Provisioner`]: capacity — create a cluster, resize it, follow the operation.
//! - [`PriceSource`]: what a core-hour and a GiB-hour cost on a cluster.
//!
//! Every adapter implements them: `kubernetes` (any conformant cluster, through kube-rs),
//! `openstack` (Heat or Magnum provisioning, on-prem rate tables), `gke` (node-pool resize,
//! the Cloud Billing Catalog) and `sim` (simulated clusters for the demo and scale tests).
//! Each adapter keeps its API's quirks — paging, "done" signals, error shapes — to itself
//! and answers in these types, so that the migration engine and the controllers are
//! written once.
//!
//! Objects cross the port as JSON documents (`serde_json::Value`): the broker never
//! interprets a Deployment's fields, it only carries them from one cluster to another,
//! and secret values are carried in memory, never stored or logged.

use std::fmt;

mod retry;
pub use retry::{Backoff, Retrying};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// `namespace/name` of a workload; the same on every cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkloadKey {
    pub namespace: String,
    pub name: String,
}

impl WorkloadKey {
    pub fn new(namespace: &str, name: &str) -> WorkloadKey {
        WorkloadKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Parses `namespace/name`; `None` unless both parts are non-empty and there is one `/`.
    pub fn parse(text: &str) -> Option<WorkloadKey> {
        let (namespace, name) = text.split_once('/')?;
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(WorkloadKey::new(namespace, name))
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Cpu and memory in integers, as Kubernetes counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    pub fn times(self, n: u32) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_mul(u64::from(n)),
            memory_bytes: self.memory_bytes.saturating_mul(u64::from(n)),
        }
    }

    pub fn plus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    pub fn fits_in(self, room: Resources) -> bool {
        self.cpu_millis <= room.cpu_millis && self.memory_bytes <= room.memory_bytes
    }

    pub fn minus(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
        }
    }
}

/// Whether the broker can use a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    Ready,
    /// Answers, but not every node is Ready.
    Degraded,
    Unreachable,
}

impl Health {
    /// The name in the API (the serialized form), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ready => "Ready",
            Health::Degraded => "Degraded",
            Health::Unreachable => "Unreachable",
        }
    }
}

/// The mark Ferry puts on what it creates or takes over, so that it only ever deletes
/// objects it owns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mark {
    pub migration: String,
}

/// A workload as it runs on one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningWorkload {
    pub key: WorkloadKey,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Desired replicas (0 once drained).
    pub replicas: u32,
    pub available_replicas: u32,
    /// Requests of one replica.
    pub requests: Resources,
    /// Set when a migration created it here or drained it.
    pub mark: Option<Mark>,
    /// The PersistentVolumeClaims its pods mount: a move does not carry their data (yet),
    /// so the broker refuses to move a workload that has any unless asked to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
}

/// A PersistentVolumeClaim a workload's pods use.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub name: String,
    /// Requested storage, when the cluster says (a StatefulSet's claim template, or the
    /// claim itself).
    pub size_bytes: Option<u64>,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.size_bytes {
            Some(bytes) => write!(f, "{} ({:.1} GiB)", self.name, bytes as f64 / GIB),
            None => write!(f, "{}", self.name),
        }
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// The data a workload's claims hold, in GiB (claims of unknown size count as zero).
pub fn claims_gib(claims: &[Claim]) -> f64 {
    claims.iter().filter_map(|c| c.size_bytes).sum::<u64>() as f64 / GIB
}

/// What a cluster has and runs now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub health: Health,
    pub nodes: u32,
    /// Sum over the nodes that are Ready and schedulable (not cordoned:
    /// `spec.unschedulable` unset) of their allocatable: the room new pods can have.
    pub allocatable: Resources,
    /// Sum of the requests of the pods placed on them.
    pub requested: Resources,
    pub workloads: Vec<RunningWorkload>,
}

/// A workload's object graph, cleaned for another cluster, in apply order (namespace,
/// ServiceAccounts, ConfigMaps, Secrets, PVCs, then the workload, Services, HPAs, PDBs).
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedWorkload {
    pub key: WorkloadKey,
    pub replicas: u32,
    pub requests: Resources,
    pub labels: std::collections::BTreeMap<String, String>,
    pub objects: Vec<serde_json::Value>,
    /// The claims its pods use, with their sizes (as in [`RunningWorkload::claims`]),
    /// those a StatefulSet's controller makes from its templates included.
    pub claims: Vec<Claim>,
}

impl ExportedWorkload {
    /// What belongs to the workload beside its own object, in its namespace (see
    /// [`dependents_of`]). A migration records them, so that whatever it created can be
    /// removed, and drains and deletes them with the workload.
    pub fn dependents(&self) -> Vec<ObjectRef> {
        dependents_of(&self.key, &self.objects, &self.claims)
    }
}

/// The objects of a graph other than its namespace and the workload's own Deployment or
/// StatefulSet, and every claim in `claims`, by kind and name, sorted and without repeats.
pub fn dependents_of(
    key: &WorkloadKey,
    objects: &[serde_json::Value],
    claims: &[Claim],
) -> Vec<ObjectRef> {
    let mut refs = std::collections::BTreeSet::new();
    for object in objects {
        let kind = object
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default();
        let name = object
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default();
        let is_the_workload = matches!(kind, "Deployment" | "StatefulSet") && name == key.name;
        if kind.is_empty() || name.is_empty() || kind == "Namespace" || is_the_workload {
            continue;
        }
        refs.insert(ObjectRef {
            kind: kind.to_owned(),
            name: name.to_owned(),
        });
    }
    refs.extend(claims.iter().map(|claim| ObjectRef {
        kind: "PersistentVolumeClaim".to_owned(),
        name: claim.name.clone(),
    }));
    refs.into_iter().collect()
}

/// One object in a workload's namespace, by kind and name. Names only: never values, so
/// that a record of them may be stored.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// An object a drain or a delete left as it was, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub object: ObjectRef,
    pub reason: String,
}

/// What [`ClusterPort::drain`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Now carry the migration's mark, and go with the drained copy.
    pub adopted: Vec<ObjectRef>,
    /// Stay as they are: another workload here uses them. (Those not there are in
    /// neither list.)
    pub kept: Vec<Kept>,
}

/// What became of the workload's own object in [`ClusterPort::delete`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadFate {
    /// It was this migration's: scaled to zero, deleted, and gone.
    Deleted,
    /// There was none.
    Absent,
    /// It is not this migration's and stays: another migration's (it took the copy over),
    /// or nobody's (`None`: a user's).
    Left { holder: Option<Mark> },
}

/// What [`ClusterPort::delete`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    pub workload: WorkloadFate,
    /// Dependents deleted (or already gone).
    pub deleted: Vec<ObjectRef>,
    /// Dependents left in place: they carry no mark, or another migration's.
    pub kept: Vec<Kept>,
}

/// A claim that exists on a cluster, as a move's plan looks for it on the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExistingClaim {
    pub name: String,
    /// When it was created (RFC 3339), if the cluster says.
    pub created_at: Option<String>,
    pub mark: Option<Mark>,
}

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum Rollout {
    /// Not yet available; `message` says what it waits for (e.g. the scheduler's reason).
    Progressing {
        desired: u32,
        available: u32,
        message: String,
    },
    Available {
        replicas: u32,
    },
    /// It will not become available without a change (e.g. progress deadline exceeded).
    Failed {
        reason: String,
    },
}

/// Why a port call failed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cluster {cluster} is unreachable: {reason}")]
    Unreachable { cluster: String, reason: String },
    #[error("{what} not found on cluster {cluster}")]
    NotFound { cluster: String, what: String },
    #[error("cluster {cluster} rejected {what}: {reason}")]
    Rejected {
        cluster: String,
        what: String,
        reason: String,
    },
    /// Another field manager or owner holds what we would change.
    #[error("conflict on cluster {cluster}: {reason}")]
    Conflict { cluster: String, reason: String },
    #[error("cluster {cluster} did not answer within {seconds} s")]
    Timeout { cluster: String, seconds: u64 },
}

impl PortError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PortError::Unreachable { .. } | PortError::Timeout { .. }
        )
    }
}

/// One member cluster, as the broker sees it. Every method is idempotent: a migration
/// resumed after a crash repeats its current step.
#[async_trait]
pub trait ClusterPort: Send + Sync {
    fn name(&self) -> &str;

    async fn inventory(&self) -> Result<Inventory, PortError>;

    /// The workload's objects, cleaned for another cluster.
    async fn export(&self, workload: &WorkloadKey) -> Result<ExportedWorkload, PortError>;

    /// Creates or updates the workload's objects here, marked with `mark`. Applying what
    /// is already there with the same mark changes nothing.
    async fn apply(&self, workload: &ExportedWorkload, mark: &Mark) -> Result<(), PortError>;

    async fn rollout(&self, workload: &WorkloadKey) -> Result<Rollout, PortError>;

    /// Sets the desired replicas. With `mark`, the workload becomes Ferry's to delete later
    /// (a drained source); without, ownership does not change (a rollback's restore).
    async fn scale(
        &self,
        workload: &WorkloadKey,
        replicas: u32,
        mark: Option<&Mark>,
    ) -> Result<(), PortError>;

    /// Drains the serving copy here for a move away: scales it to zero, marks it `mark`'s,
    /// and *adopts* the `dependents` (marks them too), so that they are deleted with it
    /// later and nothing of the workload stays behind. A dependent another workload here
    /// still uses is kept as it is. Idempotent.
    async fn drain(
        &self,
        workload: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Drained, PortError>;

    /// Deletes what of the workload carries `mark`: its own object (scaled to zero first,
    /// and only reported deleted once it is gone) and the `dependents` (with those the
    /// adapter finds from the workload itself). What Ferry does not own, or another
    /// migration now owns, stays and is reported. Deleting what is not there succeeds.
    async fn delete(
        &self,
        workload: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Removal, PortError>;

    /// The claims of these names in `namespace` that exist here: a move's target must not
    /// reattach one silently (it holds older data).
    async fn claims(
        &self,
        namespace: &str,
        names: &[String],
    ) -> Result<Vec<ExistingClaim>, PortError>;
}

/// A long-running provider operation (a Heat stack update, a GKE node-pool resize).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Operation {
    Running { id: String, progress: String },
    Done { id: String },
    Failed { id: String, reason: String },
}

/// Capacity: create a cluster or change how many nodes it has.
#[async_trait]
pub trait Provisioner: Send + Sync {
    /// Sets the worker count of `cluster` (a node pool, a Heat parameter).
    async fn resize(&self, cluster: &str, nodes: u32) -> Result<Operation, PortError>;

    /// Where an operation stands now.
    async fn operation(&self, id: &str) -> Result<Operation, PortError>;

    /// The worker count [`Provisioner::resize`] sets now, when the provisioner knows it
    /// better than the cluster's node list does (a control-plane node is a node, not a
    /// worker); `None` by default.
    async fn workers(&self, _cluster: &str) -> Result<Option<u32>, PortError> {
        Ok(None)
    }
}

/// Hourly rates of one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quote {
    pub cpu_core_hour: f64,
    pub memory_gib_hour: f64,
    pub currency: String,
    /// Where the numbers come from, e.g. "static", "billing catalog", "rate table".
    pub source: String,
    /// Set when the source could not be reached and older or static rates stand in.
    pub fallback_reason: Option<String>,
}

#[async_trait]
pub trait PriceSource: Send + Sync {
    async fn quote(&self, cluster: &str) -> Result<Quote, PortError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_names_are_the_serialized_ones() {
        for health in [Health::Ready, Health::Degraded, Health::Unreachable] {
            assert_eq!(
                serde_json::to_value(health).expect("serializes"),
                serde_json::Value::from(health.as_str())
            );
        }
    }

    #[test]
    fn workload_keys_parse_strictly() {
        assert_eq!(
            WorkloadKey::parse("shop/web"),
            Some(WorkloadKey::new("shop", "web"))
        );
        for bad in ["shop", "/web", "shop/", "a/b/c", ""] {
            assert_eq!(WorkloadKey::parse(bad), None, "{bad}");
        }
        assert_eq!(WorkloadKey::new("shop", "web").to_string(), "shop/web");
    }

    #[test]
    fn resources_arithmetic_saturates() {
        let r = Resources {
            cpu_millis: 500,
            memory_bytes: 1 << 30,
        };
        assert_eq!(r.times(3).cpu_millis, 1500);
        assert!(r.fits_in(r.times(2)));
        assert!(!r.times(2).fits_in(r));
        assert_eq!(r.minus(r.times(2)), Resources::default());
        assert_eq!(
            Resources {
                cpu_millis: u64::MAX,
                memory_bytes: 0
            }
            .times(2)
            .cpu_millis,
            u64::MAX
        );
    }
}
