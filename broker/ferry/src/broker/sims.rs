//! Simulated members built from Cluster files, for `ferry demo` and for `provider: sim`
//! members of `ferry serve`.

use std::time::Duration;

use anyhow::Context;
use ferry_adapter_sim::{SimCluster, SimClusterSpec};
use ferry_policies::engine::{self, Mode, Snapshot};
use ferry_policies::model::{Cluster, Workload};
use ferry_policies::resources::ResourceSet;
use ferry_ports::{Claim, Resources, WorkloadKey};

/// Node size, about: a simulated member's capacity is cut into nodes of about this size.
/// Large, so that a demo cluster's room is not lost to fragmentation the planner, which
/// counts a cluster's room as a whole, cannot see (a 4-core replica found no node on a
/// dc1 of 8-core nodes with 23 cores free).
const NODE: Resources = Resources {
    cpu_millis: 48_000,
    memory_bytes: 192 << 30,
};
/// A large cloud quota becomes many nodes; this keeps a simulated member light.
const MAX_NODES: u64 = 256;

/// An empty simulated cluster with the file's capacity (minus `reserved`) as whole nodes.
pub fn from_definition(
    cluster: &Cluster,
    rollout_time: Duration,
    api_latency: Duration,
) -> SimCluster {
    let capacity = cluster.capacity.map_or(NODE, |c| Resources {
        cpu_millis: c.cpu_millis.saturating_sub(cluster.reserved.cpu_millis),
        memory_bytes: c.memory_bytes.saturating_sub(cluster.reserved.memory_bytes),
    });
    // Whole nodes of about NODE's cpu that together hold the file's capacity, so that
    // the room the planner counts (the file's) is the room the simulated scheduler has: a
    // floor of capacity / NODE lost up to a node's worth, and the plan recommended moves
    // the cluster could not take.
    let count = capacity
        .cpu_millis
        .div_ceil(NODE.cpu_millis)
        .clamp(1, MAX_NODES);
    let node = if cluster.capacity.is_some() {
        Resources {
            cpu_millis: capacity.cpu_millis / count,
            memory_bytes: capacity.memory_bytes / count,
        }
    } else {
        NODE
    };
    let nodes = u32::try_from(count).unwrap_or(1);
    SimCluster::new(
        SimClusterSpec::new(cluster.name.clone(), nodes, node, rollout_time)
            .with_api_latency(api_latency),
    )
}

/// A workload file's `dataGiB` as the claim its simulated pods mount (`data-<name>`),
/// so that the demo's stateful workloads look like a real cluster's.
fn data_claims(workload: &Workload) -> Vec<Claim> {
    if workload.data_gib <= 0.0 {
        return Vec::new();
    }
    // A float of GiB to whole bytes; `as` saturates on absurd sizes.
    let bytes = (workload.data_gib * f64::from(1u32 << 30)).round() as u64;
    vec![Claim {
        name: format!("data-{}", workload.name),
        size_bytes: Some(bytes),
    }]
}

/// Runs on `sim` the workloads whose files say they run on it (`status.cluster`).
pub fn seed<'a>(
    sim: &SimCluster,
    cluster: &str,
    workloads: impl IntoIterator<Item = &'a Workload>,
) -> anyhow::Result<()> {
    for workload in workloads {
        if workload.current_cluster.as_deref() == Some(cluster) {
            let key = WorkloadKey::new(&workload.namespace, &workload.name);
            let requests = Resources {
                cpu_millis: workload.resources.cpu_millis,
                memory_bytes: workload.resources.memory_bytes,
            };
            sim.run_with_claims(
                key.clone(),
                workload.labels.clone(),
                workload.replicas,
                requests,
                data_claims(workload),
            )
            .with_context(|| format!("seed {key} on {cluster}"))?;
        }
    }
    Ok(())
}

/// Deploys the workloads of `set` that run nowhere (no `status.cluster`: a new release)
/// where the files' own plan puts them, each share on its cluster: the plan
/// `ferry plan -f` makes over the same files, so that the broker starts from it. Returns
/// what it deployed, as `workload -> cluster xN`.
pub fn place_new(set: &ResourceSet, sims: &[(&str, &SimCluster)]) -> anyhow::Result<Vec<String>> {
    let clusters: Vec<Cluster> = set.clusters.iter().map(|c| c.value.clone()).collect();
    let workloads: Vec<Workload> = set.workloads.iter().map(|w| w.value.clone()).collect();
    let policies: Vec<_> = set.policies.iter().map(|p| p.value.clone()).collect();
    let snapshot = Snapshot {
        clusters: &clusters,
        workloads: &workloads,
        policies: &policies,
    };
    let plan = engine::plan(&snapshot, Mode::default_for(&workloads))
        .context("planning the new workloads of the files")?;
    let mut deployed = Vec::new();
    for placement in &plan.placements {
        let Some(workload) = workloads
            .iter()
            .find(|w| w.key() == placement.workload && w.current_cluster.is_none())
        else {
            continue;
        };
        let Some((_, sim)) = sims.iter().find(|(name, _)| *name == placement.cluster) else {
            continue;
        };
        let key = WorkloadKey::new(&workload.namespace, &workload.name);
        let requests = Resources {
            cpu_millis: workload.resources.cpu_millis,
            memory_bytes: workload.resources.memory_bytes,
        };
        sim.run_with_claims(
            key.clone(),
            workload.labels.clone(),
            placement.replicas,
            requests,
            data_claims(workload),
        )
        .with_context(|| format!("deploy {key} on {}", placement.cluster))?;
        deployed.push(format!(
            "{} -> {} x{}",
            placement.workload, placement.cluster, placement.replicas
        ));
    }
    Ok(deployed)
}
