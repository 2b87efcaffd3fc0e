//! The broker's view of the federation: each member cluster's definition (its Cluster
//! file: provider, labels, prices) with the port that reaches it, the workload
//! definitions and the placement policies. What runs where comes from the clusters
//! themselves (their inventories), never from a cache that could disagree with them.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ferry_adapter_kubernetes::{KubeCluster, TargetOverrides};
use ferry_policies::engine::{self, Mode, Plan, Snapshot};
use ferry_policies::model::{Cluster, Health, PlacementPolicy, Pricing, Workload};
use ferry_policies::quantity::Resources as PlanResources;
use ferry_ports::{
    Backoff, ClusterPort, Inventory, PortError, Retrying, RunningWorkload, WorkloadKey,
};

/// How long a census waits for one member's inventory. Reading it is a read of the
/// member's watched state once its watches have listed; only a member that is starting or
/// does not answer takes longer.
pub const CENSUS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// One member: what its file says, and how to reach it.
pub struct Member {
    pub definition: Cluster,
    pub port: Arc<dyn ClusterPort>,
    /// Where the prices in `definition` come from when not from its file (the Billing
    /// Catalog for a GKE member, or why the file's stand in).
    pub price_source: Option<String>,
    /// What resizes this member when Ferry did not provision it (a GKE node pool).
    pub provisioner: Option<Arc<dyn ferry_ports::Provisioner>>,
}

/// The port of a Kubernetes member, whatever reached it (a kubeconfig, a stack's outputs,
/// Magnum's certificate, a GKE endpoint): the adapter with the Cluster file's overrides and
/// scope label, retried, since port calls are idempotent and a dropped connection or an
/// API server restart is ridden out before a migration step gives up.
pub fn kube_port(kube: KubeCluster, cluster: &Cluster) -> Arc<dyn ClusterPort> {
    let overrides = &cluster.overrides;
    let mut kube = kube.with_overrides(TargetOverrides {
        image_registries: overrides.image_registries.clone(),
        storage_classes: overrides.storage_classes.clone(),
        labels: overrides.labels.clone(),
        annotations: overrides.annotations.clone(),
    });
    if let Some((key, value)) = &cluster.scope.namespace_label {
        kube = kube.with_namespace_label(key.clone(), value.clone());
    }
    Arc::new(Retrying::new(Arc::new(kube), Backoff::default()))
}

/// Shared, and changed as a whole when files change (`ferry serve` reloads them), so a
/// reader always sees one consistent version of each part.
impl Member {
    /// What `workload`'s replicas here cost a month at this cluster's prices.
    pub fn monthly_cost(&self, workload: &RunningWorkload) -> f64 {
        let requests =
            PlanResources::new(workload.requests.cpu_millis, workload.requests.memory_bytes);
        self.definition.pricing.monthly_cost(requests) * f64::from(workload.replicas)
    }

    /// What everything serving here costs a month (drained copies cost nothing).
    pub fn monthly_run_rate(&self, inventory: &ferry_ports::Inventory) -> f64 {
        total(
            inventory
                .workloads
                .iter()
                .filter(|w| w.replicas > 0)
                .map(|w| self.monthly_cost(w)),
        )
    }
}

/// A sum of amounts of money. Not `Iterator::sum`: `f64`'s sum starts from -0.0, so that
/// nothing (an empty cluster's cost) would print as `-0.00`.
pub fn total(amounts: impl IntoIterator<Item = f64>) -> f64 {
    amounts.into_iter().fold(0.0, |sum, amount| sum + amount)
}

/// An amount rounded to cents. Plus zero: a small negative amount rounds to -0.0, which
/// would print as `-0.00` (and serialize as `-0.0`).
pub fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0 + 0.0
}

pub struct World {
    /// Members from the Cluster files, replaced as a whole on reload.
    members: RwLock<BTreeMap<String, Arc<Member>>>,
    /// Members Ferry provisioned (`provisioning.rs`), added and removed one by one; a
    /// file member of the same name is shadowed by it.
    provisioned: RwLock<BTreeMap<String, Arc<Member>>>,
    /// Workload definitions from files (tolerations, data size); running workloads
    /// without one are planned from what the cluster reports.
    definitions: RwLock<Vec<Workload>>,
    /// Policies from files; the ones in force may also come from the API (`policies.rs`).
    file_policies: RwLock<Vec<PlacementPolicy>>,
    policies: RwLock<Vec<PlacementPolicy>>,
}

/// Reads a lock; a poisoned one only means a writer panicked mid-replace, and every
/// writer replaces whole values, so the value is whole.
fn read<T: Clone>(lock: &RwLock<T>) -> T {
    lock.read()
        .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
}

fn write<T>(lock: &RwLock<T>, value: T) {
    match lock.write() {
        Ok(mut guard) => *guard = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

/// Every member's inventory at one moment (an error for the unreachable ones).
pub struct Census {
    pub inventories: BTreeMap<String, Result<Inventory, PortError>>,
}

impl Census {
    /// Where a workload serves now: the cluster with replicas of it, preferring one that
    /// Ferry did not drain.
    pub fn locate(&self, key: &WorkloadKey) -> Option<(&str, &RunningWorkload)> {
        self.inventories.iter().find_map(|(name, inventory)| {
            let inventory = inventory.as_ref().ok()?;
            inventory
                .workloads
                .iter()
                .find(|w| &w.key == key && w.replicas > 0)
                .map(|w| (name.as_str(), w))
        })
    }

    /// The copy of a workload on `cluster`, serving or drained.
    pub fn copy_on(&self, key: &WorkloadKey, cluster: &str) -> Option<&RunningWorkload> {
        let inventory = self.inventories.get(cluster)?.as_ref().ok()?;
        inventory.workloads.iter().find(|w| &w.key == key)
    }

    /// The claims a workload's pods use on `cluster`, each as `name (size)`.
    pub fn claims_on(&self, key: &WorkloadKey, cluster: &str) -> Vec<String> {
        self.copy_on(key, cluster)
            .map(|w| w.claims.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    /// Every distinct workload seen, in key order, with the cluster it serves on.
    pub fn workloads(&self) -> BTreeMap<WorkloadKey, Vec<(&str, &RunningWorkload)>> {
        let mut all: BTreeMap<WorkloadKey, Vec<(&str, &RunningWorkload)>> = BTreeMap::new();
        for (name, inventory) in &self.inventories {
            if let Ok(inventory) = inventory {
                for workload in &inventory.workloads {
                    all.entry(workload.key.clone())
                        .or_default()
                        .push((name.as_str(), workload));
                }
            }
        }
        all
    }
}

impl World {
    pub fn new(
        members: Vec<Arc<Member>>,
        definitions: Vec<Workload>,
        policies: Vec<PlacementPolicy>,
    ) -> World {
        World {
            members: RwLock::new(
                members
                    .into_iter()
                    .map(|m| (m.definition.name.clone(), m))
                    .collect(),
            ),
            provisioned: RwLock::new(BTreeMap::new()),
            definitions: RwLock::new(definitions),
            file_policies: RwLock::new(policies.clone()),
            policies: RwLock::new(policies),
        }
    }

    pub fn member(&self, name: &str) -> Option<Arc<Member>> {
        read(&self.provisioned)
            .get(name)
            .or(read(&self.members).get(name))
            .cloned()
    }

    /// Every member, in name order.
    pub fn members(&self) -> Vec<Arc<Member>> {
        let mut all = read(&self.members);
        all.extend(read(&self.provisioned));
        all.into_values().collect()
    }

    /// Adds (or replaces) a member Ferry provisioned.
    pub fn add_provisioned(&self, member: Arc<Member>) {
        // In place, under the lock: two clusters may be provisioned at once.
        let mut provisioned = self.provisioned.write().unwrap_or_else(|p| p.into_inner());
        provisioned.insert(member.definition.name.clone(), member);
    }

    /// New prices for a member (the API's price feed); `false` if there is no such
    /// member. A file member gets its file's prices again when its file is reloaded.
    pub fn set_pricing(&self, name: &str, pricing: Pricing, source: String) -> bool {
        let reprice = |member: &Arc<Member>| {
            let mut definition = member.definition.clone();
            definition.pricing = pricing.clone();
            Arc::new(Member {
                definition,
                port: Arc::clone(&member.port),
                price_source: Some(source.clone()),
                provisioner: member.provisioner.clone(),
            })
        };
        for lock in [&self.provisioned, &self.members] {
            let mut members = lock.write().unwrap_or_else(|p| p.into_inner());
            if let Some(member) = members.get_mut(name) {
                *member = reprice(member);
                return true;
            }
        }
        false
    }

    /// Takes a provisioned member out of the federation.
    pub fn remove_provisioned(&self, name: &str) {
        let mut provisioned = self.provisioned.write().unwrap_or_else(|p| p.into_inner());
        provisioned.remove(name);
    }

    /// Replaces the members, workload definitions and file policies (a reload of the
    /// files); the caller then recomputes the policies in force.
    pub fn replace_from_files(
        &self,
        members: Vec<Arc<Member>>,
        definitions: Vec<Workload>,
        file_policies: Vec<PlacementPolicy>,
    ) {
        write(
            &self.members,
            members
                .into_iter()
                .map(|m| (m.definition.name.clone(), m))
                .collect(),
        );
        write(&self.definitions, definitions);
        write(&self.file_policies, file_policies);
    }

    pub fn file_policies(&self) -> Vec<PlacementPolicy> {
        read(&self.file_policies)
    }

    pub fn definitions(&self) -> Vec<Workload> {
        read(&self.definitions)
    }

    pub fn policies(&self) -> Vec<PlacementPolicy> {
        read(&self.policies)
    }

    pub fn set_policies(&self, policies: Vec<PlacementPolicy>) {
        write(&self.policies, policies);
    }

    /// Every member's inventory, asked concurrently; a member that has not answered
    /// within [`CENSUS_WAIT`] is unreachable for this census, so that one slow member (a
    /// Kubernetes member whose watches have not listed yet waits up to 30 s) does not
    /// hold up what every other member says.
    pub async fn census(&self) -> Census {
        let asks = self.members().into_iter().map(|member| {
            let port = member.port.clone();
            let name = member.definition.name.clone();
            async move {
                let inventory = tokio::time::timeout(CENSUS_WAIT, port.inventory())
                    .await
                    .unwrap_or_else(|_| {
                        Err(PortError::Unreachable {
                            cluster: name.clone(),
                            reason: format!("no inventory within {} s", CENSUS_WAIT.as_secs()),
                        })
                    });
                (name, inventory)
            }
        });
        Census {
            inventories: futures::future::join_all(asks).await.into_iter().collect(),
        }
    }

    /// The clusters as the planner sees them: file definitions with the health and, when
    /// the file states none, the capacity the cluster reports.
    pub fn plan_clusters(&self, census: &Census) -> Vec<Cluster> {
        self.members()
            .iter()
            .map(|member| {
                let mut cluster = member.definition.clone();
                match census.inventories.get(&cluster.name) {
                    Some(Ok(inventory)) => {
                        cluster.health = Some(match inventory.health {
                            ferry_ports::Health::Ready => Health::Ready,
                            ferry_ports::Health::Degraded => Health::Degraded,
                            ferry_ports::Health::Unreachable => Health::Unreachable,
                        });
                        if cluster.capacity.is_none() {
                            cluster.capacity = Some(PlanResources::new(
                                inventory.allocatable.cpu_millis,
                                inventory.allocatable.memory_bytes,
                            ));
                        }
                    }
                    _ => cluster.health = Some(Health::Unreachable),
                }
                cluster
            })
            .collect()
    }

    /// The workloads as the planner sees them: where each serves now, with its
    /// definition's extra fields when a file defines it.
    pub fn plan_workloads(&self, census: &Census) -> Vec<Workload> {
        let definitions = self.definitions();
        let policies = self.policies();
        census
            .workloads()
            .into_iter()
            .filter_map(|(key, copies)| {
                let (cluster, running) = copies
                    .iter()
                    .find(|(_, w)| w.replicas > 0)
                    .or(copies.first())?;
                let definition = definitions
                    .iter()
                    .find(|d| d.namespace == key.namespace && d.name == key.name);
                let mut workload = definition.cloned().unwrap_or_else(|| Workload {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    labels: running.labels.clone(),
                    replicas: running.replicas,
                    resources: PlanResources::new(0, 0),
                    data_gib: 0.0,
                    tolerations: Vec::new(),
                    current_cluster: None,
                    current_clusters: Vec::new(),
                });
                // The claims the cluster reports are the data a move carries: priced
                // at their real size rather than a file's estimate (or nothing).
                let claims_gib = ferry_ports::claims_gib(&running.claims);
                if claims_gib > 0.0 {
                    workload.data_gib = claims_gib;
                }
                workload.replicas = running.replicas.max(1);
                workload.resources =
                    PlanResources::new(running.requests.cpu_millis, running.requests.memory_bytes);
                workload.current_cluster = (running.replicas > 0).then(|| (*cluster).to_owned());
                workload.current_clusters = Vec::new();
                // Serving on several clusters: shares of a spread workload when its policy
                // spreads it that wide (the larger shares first, as plans divide them);
                // otherwise a move under way, planned from its first copy as before.
                let mut serving: Vec<(&str, &RunningWorkload)> = copies
                    .iter()
                    .filter(|(_, w)| w.replicas > 0)
                    .copied()
                    .collect();
                let spread_wide = engine::governing_policy(&policies, &workload)
                    .ok()
                    .flatten()
                    .and_then(|p| policies[p].spread)
                    .is_some_and(|s| {
                        usize::try_from(s.max_clusters).unwrap_or(usize::MAX) >= serving.len()
                    });
                if serving.len() > 1 && spread_wide {
                    serving.sort_by(|a, b| b.1.replicas.cmp(&a.1.replicas).then(a.0.cmp(b.0)));
                    workload.replicas = serving.iter().map(|(_, w)| w.replicas).sum();
                    workload.current_cluster = Some(serving[0].0.to_owned());
                    workload.current_clusters =
                        serving.iter().map(|(c, _)| (*c).to_owned()).collect();
                }
                Some(workload)
            })
            .collect()
    }

    /// What the planner needs from `census`: clusters, workloads and the policies in
    /// force, for [`PlanInput::snapshot`].
    pub fn plan_input(&self, census: &Census) -> PlanInput {
        PlanInput {
            clusters: self.plan_clusters(census),
            workloads: self.plan_workloads(census),
            policies: self.policies(),
        }
    }
}

/// The planner's input, owned, so that a caller can plan and look further at the same
/// clusters and workloads (the controllers) without building them twice.
pub struct PlanInput {
    pub clusters: Vec<Cluster>,
    pub workloads: Vec<Workload>,
    pub policies: Vec<PlacementPolicy>,
}

impl PlanInput {
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            clusters: &self.clusters,
            workloads: &self.workloads,
            policies: &self.policies,
        }
    }

    /// The rebalance plan from where things run.
    pub fn plan(&self) -> Result<Plan, engine::PlanError> {
        engine::plan(&self.snapshot(), Mode::Rebalance)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nothing_costs_zero_not_negative_zero() {
        let empty = std::iter::empty::<f64>();
        assert_eq!(format!("{:.2}", super::total(empty)), "0.00");
        assert_eq!(format!("{:.2}", super::total([1.5, 2.25])), "3.75");
        assert_eq!(format!("{:.2}", super::cents(-0.001)), "0.00");
        assert_eq!(serde_json::json!(super::cents(-0.001)).to_string(), "0.0");
        assert_eq!(super::cents(-1.234), -1.23);
    }
}
