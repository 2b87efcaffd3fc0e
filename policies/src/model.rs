//! The validated resource kinds: what a Cluster, a Workload and a PlacementPolicy mean
//! once their files have been checked. Values here always satisfy the rules of
//! `spec/resources.md`; the decoders in [`crate::resources`] are the only way in from text.

use std::collections::BTreeMap;

use crate::quantity::Resources;
use crate::selector::LabelSelector;
use crate::window::Window;

/// Labels, ordered so that everything derived from them is deterministic.
pub type Labels = BTreeMap<String, String>;

/// Where a cluster's Kubernetes comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Provider {
    /// A cluster that Ferry provisions on OpenStack (Heat or Magnum).
    Openstack,
    /// Google Kubernetes Engine.
    Gke,
    /// Any conformant cluster reached through a kubeconfig.
    Kubernetes,
    /// A simulated cluster, for the demo and scale tests.
    Sim,
}

impl Provider {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openstack => "openstack",
            Provider::Gke => "gke",
            Provider::Kubernetes => "kubernetes",
            Provider::Sim => "sim",
        }
    }
}

/// How the broker reaches a cluster. The planner never looks inside; adapters do.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    /// An OpenStack-hosted cluster.
    Openstack(OpenstackConnection),
    /// A GKE cluster.
    Gke(GkeConnection),
    /// A kubeconfig file and context.
    Kubernetes(KubeconfigRef),
    /// Simulated: nothing to connect to.
    Sim,
}

/// A kubeconfig file and the context to use in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigRef {
    /// Path of the kubeconfig file.
    pub kubeconfig: String,
    /// Context name; `None` means the file's current context.
    pub context: Option<String>,
}

/// The `spec.openstack` block. Credentials never live here: `cloud` names an entry of
/// `clouds.yaml`, which the operator controls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenstackConnection {
    /// The `clouds.yaml` entry to authenticate with.
    pub cloud: String,
    /// Region of the catalog endpoints; `None` means the cloud's only region.
    pub region: Option<String>,
    /// How the Kubernetes cluster is provisioned.
    pub provisioner: OpenstackProvisioner,
    /// Kubeconfig of an already provisioned cluster, if any.
    pub kubeconfig: Option<KubeconfigRef>,
}

/// Heat or Magnum, with the parameters each needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenstackProvisioner {
    /// Nothing to provision: the cluster exists and `kubeconfig` reaches it.
    None,
    /// Ferry's HOT template.
    Heat {
        /// Stack name.
        stack: String,
        /// Template parameters (flavor, image, worker count, external network...).
        parameters: BTreeMap<String, String>,
        /// One more Heat environment, merged after Ferry's, whose `resource_registry`
        /// may map the template's `Ferry::…` parts to other templates (a path read by
        /// the broker; relative to its config file).
        environment: Option<String>,
    },
    /// A Magnum cluster from a cluster template.
    Magnum {
        /// The cluster template.
        cluster_template: String,
        /// Worker count.
        node_count: u32,
    },
}

/// The `spec.gke` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GkeConnection {
    /// Google Cloud project id.
    pub project: String,
    /// Region or zone of the cluster, or `-` for every location of the project.
    pub location: String,
    /// One GKE cluster; `None` federates every cluster found in the project and location,
    /// each a member of its own name with this file's labels, scope and prices.
    pub cluster: Option<String>,
    /// Path of a service-account key file; `None` means application default credentials.
    pub credentials_file: Option<String>,
}

/// Prices of one cluster. Money is in `currency`; a month is [`HOURS_PER_MONTH`] hours.
#[derive(Debug, Clone, PartialEq)]
pub struct Pricing {
    /// ISO currency code.
    pub currency: String,
    /// One requested core for one hour.
    pub cpu_core_hour: f64,
    /// One requested GiB for one hour.
    pub memory_gib_hour: f64,
    /// One GiB leaving this cluster.
    pub egress_gib: f64,
}

/// The hours in a month, as the spec defines it.
pub const HOURS_PER_MONTH: f64 = 730.0;

impl Pricing {
    /// Monthly cost of running `requests` (all replicas together) on this cluster.
    pub fn monthly_cost(&self, requests: Resources) -> f64 {
        (requests.cores() * self.cpu_core_hour + requests.gib() * self.memory_gib_hour)
            * HOURS_PER_MONTH
    }
}

/// Whether a cluster can take new placements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// Serving and reachable.
    Ready,
    /// Reachable but impaired.
    Degraded,
    /// Not reachable.
    Unreachable,
}

impl Health {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ready => "Ready",
            Health::Degraded => "Degraded",
            Health::Unreachable => "Unreachable",
        }
    }
}

/// Taint effects Ferry honours, as on Kubernetes nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaintEffect {
    /// Hard: workloads without a matching toleration are not placed here.
    NoSchedule,
    /// Soft: the cluster is avoided unless tolerated.
    PreferNoSchedule,
}

impl TaintEffect {
    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        }
    }
}

/// A cluster taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value; may be empty.
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

/// A workload's toleration, with Kubernetes semantics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    /// Key; `None` with `Exists` tolerates every taint.
    pub key: Option<String>,
    /// `Equal` compares values; `Exists` ignores them.
    pub operator: TolerationOperator,
    /// Compared with the taint's value under `Equal`.
    pub value: String,
    /// `None` tolerates every effect.
    pub effect: Option<TaintEffect>,
}

/// How a toleration matches a taint's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TolerationOperator {
    /// Key and value must be equal.
    Equal,
    /// Only the key must match.
    Exists,
}

impl Toleration {
    /// Kubernetes' rule: effects, keys and (under `Equal`) values must match.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|effect| effect != taint.effect) {
            return false;
        }
        match (&self.key, self.operator) {
            (None, TolerationOperator::Exists) => true,
            (None, TolerationOperator::Equal) => false,
            (Some(key), TolerationOperator::Exists) => *key == taint.key,
            (Some(key), TolerationOperator::Equal) => {
                *key == taint.key && self.value == taint.value
            }
        }
    }
}

/// A member cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// Unique DNS-1123 label.
    pub name: String,
    /// Free-form labels that policies select on.
    pub labels: Labels,
    /// Provider.
    pub provider: Provider,
    /// How to reach it.
    pub connection: Connection,
    /// Prices.
    pub pricing: Pricing,
    /// Capacity, when the file states it (it overrides what the adapter reports).
    pub capacity: Option<Resources>,
    /// Capacity used by things Ferry does not manage.
    pub reserved: Resources,
    /// Taints.
    pub taints: Vec<Taint>,
    /// Health, when the file states it (offline planning); live clusters report it.
    pub health: Option<Health>,
    /// Where the adapter looks for workloads on this cluster.
    pub scope: WorkloadScope,
    /// What changes in the objects Ferry applies on this cluster.
    pub overrides: Overrides,
}

/// The namespaces whose workloads a member reports: those listed, those carrying the
/// label, or (both set) those listed that carry it. Neither set means every namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadScope {
    pub namespaces: Vec<String>,
    /// One label `(key, value)` that marks a namespace as federated.
    pub namespace_label: Option<(String, String)>,
}

/// Rewrites of what Ferry applies on one (target) cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Image registry host (e.g. `docker.io`) to the registry to pull from instead.
    pub image_registries: BTreeMap<String, String>,
    /// Storage class on the source to the storage class here.
    pub storage_classes: BTreeMap<String, String>,
    /// Added to every applied object's metadata.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A Deployment or StatefulSet, as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Labels that policies select on.
    pub labels: Labels,
    /// Replica count.
    pub replicas: u32,
    /// Requests of one replica.
    pub resources: Resources,
    /// Persistent data that moves with it, in GiB.
    pub data_gib: f64,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// The cluster it runs on now, if any.
    pub current_cluster: Option<String>,
    /// When it runs spread over several clusters now: each of them, the larger shares
    /// first (as plans divide replicas), starting with `current_cluster`. Empty when it
    /// runs on `current_cluster` alone or nowhere. Resource files cannot say this; the
    /// broker sees it on the clusters.
    pub current_clusters: Vec<String>,
}

impl Workload {
    /// `namespace/name`, the workload's identity everywhere.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Every cluster it runs on now, in share order.
    pub fn running_on(&self) -> Vec<&str> {
        if self.current_clusters.is_empty() {
            self.current_cluster.as_deref().into_iter().collect()
        } else {
            self.current_clusters.iter().map(String::as_str).collect()
        }
    }

    /// Requests of all replicas together.
    pub fn total_requests(&self) -> Resources {
        self.resources.times(u64::from(self.replicas))
    }
}

/// Which workloads a policy governs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkloadSelector {
    /// Namespaces; empty means all.
    pub namespaces: Vec<String>,
    /// Labels the workload must match.
    pub labels: LabelSelector,
}

impl WorkloadSelector {
    /// Whether `workload` is selected.
    pub fn selects(&self, workload: &Workload) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(&workload.namespace))
            && self.labels.matches(&workload.labels)
    }
}

/// A soft cluster preference.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferredTerm {
    /// 1..=100.
    pub weight: u32,
    /// The clusters it prefers.
    pub selector: LabelSelector,
}

/// How replicas are divided over clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// At least this many clusters (>= 1).
    pub min_clusters: u32,
    /// At most this many clusters (>= min).
    pub max_clusters: u32,
}

/// Weights of the soft terms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    /// Weight of monthly cost.
    pub cost: f64,
    /// Weight of `clusterAffinity.preferred`.
    pub preference: f64,
    /// Reward for staying where the workload runs.
    pub stickiness: f64,
}

impl Objective {
    /// Cost dominates by default.
    pub const DEFAULT: Objective = Objective {
        cost: 1.0,
        preference: 0.1,
        stickiness: 0.0,
    };
}

/// When and how the rebalancer may move workloads.
#[derive(Debug, Clone, PartialEq)]
pub struct RebalanceRules {
    /// Whether moves for savings are allowed at all.
    pub enabled: bool,
    /// Move only when monthly savings exceed this share (percent) of the current cost.
    pub min_savings_percent: f64,
    /// The migration cost must be earned back within this many hours.
    pub payback_hours: f64,
    /// No second move of the same workload within this many seconds.
    pub cooldown_seconds: u64,
    /// At most this many moves of this policy's workloads at once.
    pub max_concurrent_migrations: u32,
    /// When automatic moves may start (UTC); empty means any time.
    pub windows: Vec<Window>,
    /// Whether the rebalance controller may start these moves by itself (`auto` mode);
    /// `false` keeps them recommendations that a person starts.
    pub automatic: bool,
}

impl RebalanceRules {
    /// What a policy without a `rebalance` block gets: no moves for savings.
    pub fn disabled() -> RebalanceRules {
        RebalanceRules {
            enabled: false,
            min_savings_percent: 10.0,
            payback_hours: 168.0,
            cooldown_seconds: 3600,
            max_concurrent_migrations: 1,
            windows: Vec::new(),
            automatic: true,
        }
    }
}

/// A placement policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementPolicy {
    /// Name.
    pub name: String,
    /// Higher wins when several policies select a workload.
    pub priority: i32,
    /// The workloads it governs.
    pub workload_selector: WorkloadSelector,
    /// Hard affinity: clusters must match.
    pub required: Option<LabelSelector>,
    /// Soft affinity.
    pub preferred: Vec<PreferredTerm>,
    /// Replica division; `None` keeps all replicas in one cluster.
    pub spread: Option<Spread>,
    /// Hard cap on the monthly cost of everything it selects.
    pub max_monthly_cost: Option<f64>,
    /// Weights of the soft terms.
    pub objective: Objective,
    /// Rebalancing rules.
    pub rebalance: RebalanceRules,
    /// Whether the controllers may grow a cluster (a node pool, a Heat stack) to make
    /// room for these workloads when no cluster has it.
    pub capacity_on_demand: bool,
}
