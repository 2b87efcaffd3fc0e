//! Capacity on demand: for workloads that fit on no cluster, which cluster to grow (a GKE
//! node pool, the worker count of a Heat stack) and by how many nodes. Only clusters that
//! were excluded by capacity alone qualify — growing a cluster a policy forbids would not
//! help — and never beyond the limit the broker's configuration sets.

use std::collections::BTreeMap;

use crate::model::Pricing;
use crate::quantity::Resources;

/// A cluster that can be grown.
#[derive(Debug, Clone, PartialEq)]
pub struct Growable {
    pub cluster: String,
    /// Nodes it has now.
    pub nodes: u32,
    /// What one more node adds.
    pub node: Resources,
    /// Allocatable minus requested now.
    pub free: Resources,
    /// Never more nodes than this.
    pub max_nodes: u32,
    pub pricing: Pricing,
}

/// A workload that needs room.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// `namespace/name`.
    pub workload: String,
    /// One replica's requests.
    pub replica: Resources,
    pub replicas: u32,
    /// Per cluster, the first hard rule that excluded it (the plan's unplaced reasons).
    pub exclusions: BTreeMap<String, String>,
}

/// Grow `cluster` from `from_nodes` to `to_nodes` for `workloads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    pub cluster: String,
    pub from_nodes: u32,
    pub to_nodes: u32,
    pub workloads: Vec<String>,
}

/// Decides the growth for `needs`, in their order; returns it and, for each need that no
/// growth serves, why.
pub fn plan_growth(needs: &[Need], growable: &[Growable]) -> (Vec<Growth>, Vec<(String, String)>) {
    /// Nodes added to a cluster so far, and what the needs served there take.
    #[derive(Default)]
    struct Planned {
        nodes: u32,
        cpu_millis: u64,
        memory_bytes: u64,
        workloads: Vec<String>,
    }
    let mut planned: BTreeMap<&str, Planned> = BTreeMap::new();
    let mut unserved = Vec::new();
    for need in needs {
        let total = need.replica.times(u64::from(need.replicas));
        let mut candidates: Vec<&Growable> = growable
            .iter()
            .filter(|g| {
                need.exclusions
                    .get(&g.cluster)
                    .is_some_and(|why| why.starts_with("capacity:"))
            })
            .collect();
        if candidates.is_empty() {
            unserved.push((
                need.workload.clone(),
                "no cluster that could be grown is excluded by capacity alone".to_owned(),
            ));
            continue;
        }
        candidates.sort_by(|a, b| {
            a.pricing
                .monthly_cost(total)
                .total_cmp(&b.pricing.monthly_cost(total))
                .then(a.cluster.cmp(&b.cluster))
        });
        let mut why_not = Vec::new();
        let mut grown = false;
        for g in candidates {
            // How many replicas fit in a given room (0 requests fit without limit).
            let fit = |cpu: u64, memory: u64| -> u64 {
                let by = |room: u64, one: u64| room.checked_div(one).unwrap_or(u64::MAX);
                by(cpu, need.replica.cpu_millis).min(by(memory, need.replica.memory_bytes))
            };
            let per_node = fit(g.node.cpu_millis, g.node.memory_bytes);
            if per_node == 0 {
                why_not.push(format!(
                    "one replica is larger than a node of {}",
                    g.cluster
                ));
                continue;
            }
            let so_far = planned.get(g.cluster.as_str());
            let extra = so_far.map_or(0, |p| p.nodes);
            let free_cpu = (g.free.cpu_millis + g.node.cpu_millis * u64::from(extra))
                .saturating_sub(so_far.map_or(0, |p| p.cpu_millis));
            let free_memory = (g.free.memory_bytes + g.node.memory_bytes * u64::from(extra))
                .saturating_sub(so_far.map_or(0, |p| p.memory_bytes));
            let remaining = u64::from(need.replicas).saturating_sub(fit(free_cpu, free_memory));
            let nodes = u32::try_from(remaining.div_ceil(per_node)).unwrap_or(u32::MAX);
            let to = g.nodes.saturating_add(extra).saturating_add(nodes);
            if to > g.max_nodes {
                why_not.push(format!(
                    "{} would need {to} nodes, more than its limit of {}",
                    g.cluster, g.max_nodes
                ));
                continue;
            }
            let entry = planned.entry(g.cluster.as_str()).or_default();
            entry.nodes += nodes;
            entry.cpu_millis += total.cpu_millis;
            entry.memory_bytes += total.memory_bytes;
            entry.workloads.push(need.workload.clone());
            grown = true;
            break;
        }
        if !grown {
            unserved.push((need.workload.clone(), why_not.join("; ")));
        }
    }
    let growth = growable
        .iter()
        .filter_map(|g| {
            let p = planned.remove(g.cluster.as_str())?;
            (p.nodes > 0).then(|| Growth {
                cluster: g.cluster.clone(),
                from_nodes: g.nodes,
                to_nodes: g.nodes + p.nodes,
                workloads: p.workloads,
            })
        })
        .collect();
    (growth, unserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn growable(
        cluster: &str,
        cpu_price: f64,
        nodes: u32,
        free_cpu: u64,
        max_nodes: u32,
    ) -> Growable {
        Growable {
            cluster: cluster.into(),
            nodes,
            node: Resources::new(4000, 16 * GIB),
            free: Resources::new(free_cpu, 64 * GIB),
            max_nodes,
            pricing: Pricing {
                currency: "EUR".into(),
                cpu_core_hour: cpu_price,
                memory_gib_hour: 0.0,
                egress_gib: 0.0,
            },
        }
    }

    fn need(workload: &str, cpu: u64, replicas: u32, exclusions: &[(&str, &str)]) -> Need {
        Need {
            workload: workload.into(),
            replica: Resources::new(cpu, GIB),
            replicas,
            exclusions: exclusions
                .iter()
                .map(|(c, why)| ((*c).to_owned(), (*why).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn grows_the_cheapest_cluster_excluded_by_capacity_alone_within_its_limit() {
        let clusters = [
            growable("cheap", 0.02, 3, 1000, 4),
            growable("dear", 0.05, 3, 1000, 10),
            growable("forbidden", 0.01, 3, 0, 10),
        ];
        let capacity = "capacity: cpu 6 > 1 free";
        let needs = [
            // 3 cores, 1 free on "cheap": one more node (its limit) holds the other two.
            need(
                "shop/a",
                1000,
                3,
                &[
                    ("cheap", capacity),
                    ("dear", capacity),
                    ("forbidden", "required affinity residency=eu"),
                ],
            ),
            // "cheap" is at its limit with 2 cores left: "dear" grows by two nodes.
            need(
                "shop/b",
                2000,
                4,
                &[("cheap", capacity), ("dear", capacity)],
            ),
            need("shop/c", 8000, 1, &[("cheap", capacity)]),
            need(
                "shop/d",
                1000,
                1,
                &[("forbidden", "taint gpu=true:NoSchedule")],
            ),
        ];
        let (growth, unserved) = plan_growth(&needs, &clusters);
        assert_eq!(
            growth,
            [
                Growth {
                    cluster: "cheap".into(),
                    from_nodes: 3,
                    to_nodes: 4,
                    workloads: vec!["shop/a".into()]
                },
                Growth {
                    cluster: "dear".into(),
                    from_nodes: 3,
                    to_nodes: 5,
                    workloads: vec!["shop/b".into()]
                },
            ]
        );
        assert_eq!(
            unserved,
            [
                (
                    "shop/c".to_owned(),
                    "one replica is larger than a node of cheap".to_owned()
                ),
                (
                    "shop/d".to_owned(),
                    "no cluster that could be grown is excluded by capacity alone".to_owned()
                ),
            ]
        );
    }
}
