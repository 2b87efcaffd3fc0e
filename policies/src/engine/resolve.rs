//! Resolution: each workload's governing policy, the hard filters that do not depend on
//! the rest of the plan (health, taints, required affinity, spread), and the per-replica
//! cost and value of every eligible cluster.

use std::collections::BTreeSet;

use super::{Held, Mode, PlanError, PolicyConflict, Snapshot};
use crate::model::{Cluster, Health, Objective, PlacementPolicy, Spread, TaintEffect, Workload};

/// Extra value per untolerated `PreferNoSchedule` taint, as a share of the workload's
/// reference cost: the engine pays up to 50% more to avoid such a cluster.
pub const PREFER_NO_SCHEDULE_PENALTY: f64 = 0.5;

/// Which cpu/memory index is which in demand and capacity arrays.
pub(crate) const CPU: usize = 0;
pub(crate) const MEMORY: usize = 1;

/// A cluster as the search sees it.
pub(crate) struct ClusterInfo<'a> {
    pub cluster: &'a Cluster,
    /// Capacity minus reserved, per resource; negative when reserved exceeds capacity.
    pub allocatable: [i64; 2],
}

/// A workload as the search sees it.
pub(crate) struct WorkloadInfo<'a> {
    pub workload: &'a Workload,
    pub key: String,
    /// Index into `Problem::policies`, or `None` for the built-in default.
    pub policy: Option<usize>,
    pub objective: Objective,
    /// Requests of one replica, per resource.
    pub unit: [u64; 2],
    /// Allowed numbers of clusters, `min..=max`; an empty range means unplaceable.
    pub min_clusters: u32,
    pub max_clusters: u32,
    /// Clusters that pass every plan-independent hard filter, best value first.
    pub candidates: Vec<u16>,
    /// Bitset over clusters of `candidates`, for constant-time membership.
    eligible: Vec<u64>,
    /// Cost of all replicas on the cheapest candidate; scales the soft terms.
    pub reference_cost: f64,
    /// Total demand as a fraction of the average cluster's allocatable (in billionths),
    /// the larger of cpu and memory: comparable across workloads, so that "small" means
    /// small in the scarcer dimension. Orders workloads for packing.
    pub size: u64,
    /// Where it runs now (rebalance input), if that cluster exists.
    pub current: Option<u16>,
    /// Every known cluster it runs on now, in share order: `current` alone, or the
    /// clusters of its shares when it runs spread.
    pub current_all: Vec<u16>,
}

/// The resolved planning problem.
pub(crate) struct Problem<'a> {
    pub mode: Mode,
    pub clusters: Vec<ClusterInfo<'a>>,
    pub workloads: Vec<WorkloadInfo<'a>>,
    pub policies: &'a [PlacementPolicy],
    /// Per policy, its budget (infinite when it has none).
    pub budgets: Vec<f64>,
    /// Per policy and cluster, the matched preferred weights / 100.
    preference: Vec<Vec<f64>>,
    /// Workloads left out of the plan, where they are, because of a policy conflict.
    pub held: Vec<Held>,
}

impl<'a> Problem<'a> {
    pub fn build(snapshot: &Snapshot<'a>, mode: Mode) -> Result<Problem<'a>, PlanError> {
        if snapshot.clusters.len() > usize::from(u16::MAX) {
            return Err(PlanError::TooManyClusters(snapshot.clusters.len()));
        }
        let mut names = BTreeSet::new();
        let mut clusters = Vec::with_capacity(snapshot.clusters.len());
        for cluster in snapshot.clusters {
            if !names.insert(cluster.name.as_str()) {
                return Err(PlanError::DuplicateCluster(cluster.name.clone()));
            }
            let capacity = cluster.capacity.ok_or_else(|| PlanError::MissingCapacity {
                cluster: cluster.name.clone(),
            })?;
            let allocatable = [
                to_i64(capacity.cpu_millis) - to_i64(cluster.reserved.cpu_millis),
                to_i64(capacity.memory_bytes) - to_i64(cluster.reserved.memory_bytes),
            ];
            clusters.push(ClusterInfo {
                cluster,
                allocatable,
            });
        }
        // Required affinity and preference depend only on (policy, cluster): compute once.
        let required: Vec<Vec<bool>> = snapshot
            .policies
            .iter()
            .map(|p| {
                clusters
                    .iter()
                    .map(|c| {
                        p.required
                            .as_ref()
                            .is_none_or(|r| r.matches(&c.cluster.labels))
                    })
                    .collect()
            })
            .collect();
        let preference: Vec<Vec<f64>> = snapshot
            .policies
            .iter()
            .map(|p| {
                clusters
                    .iter()
                    .map(|c| {
                        let weights: u32 = p
                            .preferred
                            .iter()
                            .filter(|t| t.selector.matches(&c.cluster.labels))
                            .map(|t| t.weight)
                            .sum();
                        f64::from(weights) / 100.0
                    })
                    .collect()
            })
            .collect();

        let average_allocatable: [f64; 2] = [CPU, MEMORY].map(|r| {
            let total: f64 = clusters
                .iter()
                .map(|c| c.allocatable[r].max(1) as f64)
                .sum();
            total / clusters.len().max(1) as f64
        });
        let mut keys = BTreeSet::new();
        let mut workloads = Vec::with_capacity(snapshot.workloads.len());
        let mut held = Vec::new();
        for workload in snapshot.workloads {
            let key = workload.key();
            if !keys.insert(key.clone()) {
                return Err(PlanError::DuplicateWorkload(key));
            }
            let policy = match governing_policy(snapshot.policies, workload) {
                Ok(policy) => policy,
                Err(conflict) => {
                    // Only this workload waits for the conflict to be resolved: it keeps
                    // its place, and in rebalance mode the room it takes there.
                    if mode == Mode::Rebalance {
                        hold_room(&mut clusters, workload);
                    }
                    held.push(Held {
                        workload: key,
                        reason: conflict.to_string(),
                        conflict,
                    });
                    continue;
                }
            };
            let rules = policy.map(|p| &snapshot.policies[p]);
            let objective = rules.map_or(
                Objective {
                    cost: 1.0,
                    preference: 0.0,
                    stickiness: 0.0,
                },
                |p| p.objective,
            );
            let spread = rules.and_then(|p| p.spread).unwrap_or(Spread {
                min_clusters: 1,
                max_clusters: 1,
            });
            let unit = [
                workload.resources.cpu_millis,
                workload.resources.memory_bytes,
            ];
            let current_all: Vec<u16> = workload
                .running_on()
                .into_iter()
                .filter_map(|name| clusters.iter().position(|c| c.cluster.name == name))
                .filter_map(|i| u16::try_from(i).ok())
                .collect();
            let current = current_all.first().copied();

            let mut candidates: Vec<u16> = (0..clusters.len())
                .filter(|&c| {
                    first_static_failure(&clusters[c], workload, policy.map(|p| required[p][c]))
                        .is_none()
                })
                .filter_map(|c| u16::try_from(c).ok())
                .collect();
            let unit_cost = |c: u16| {
                clusters[usize::from(c)]
                    .cluster
                    .pricing
                    .monthly_cost(workload.resources)
            };
            let replicas = f64::from(workload.replicas);
            let reference_cost = candidates
                .iter()
                .map(|&c| unit_cost(c) * replicas)
                .fold(f64::INFINITY, f64::min);
            let reference_cost = if reference_cost.is_finite() {
                reference_cost
            } else {
                0.0
            };
            let max_clusters = spread
                .max_clusters
                .min(workload.replicas)
                .min(u32::try_from(candidates.len()).unwrap_or(u32::MAX));
            let mut info = WorkloadInfo {
                workload,
                key,
                policy,
                objective,
                unit,
                min_clusters: spread.min_clusters,
                max_clusters,
                candidates: Vec::new(),
                eligible: vec![0; clusters.len().div_ceil(64)],
                reference_cost,
                size: size(workload, unit, average_allocatable),
                current,
                current_all,
            };
            let values: Vec<f64> = (0..clusters.len())
                .map(|c| {
                    let pref = policy.map_or(0.0, |p| preference[p][c]);
                    unit_value(&info, &clusters[c], c, pref, mode)
                })
                .collect();
            candidates.sort_by(|&a, &b| {
                values[usize::from(a)]
                    .total_cmp(&values[usize::from(b)])
                    .then(a.cmp(&b))
            });
            for &c in &candidates {
                info.eligible[usize::from(c) / 64] |= 1 << (c % 64);
            }
            info.candidates = candidates;
            workloads.push(info);
        }
        let budgets = snapshot
            .policies
            .iter()
            .map(|p| p.max_monthly_cost.unwrap_or(f64::INFINITY))
            .collect();
        Ok(Problem {
            mode,
            clusters,
            workloads,
            policies: snapshot.policies,
            budgets,
            preference,
            held,
        })
    }

    /// Monthly cost of one replica of workload `w` on cluster `c`.
    pub fn unit_cost(&self, w: usize, c: u16) -> f64 {
        self.clusters[usize::from(c)]
            .cluster
            .pricing
            .monthly_cost(self.workloads[w].workload.resources)
    }

    /// Objective value of one replica of workload `w` on cluster `c`.
    pub fn unit_value(&self, w: usize, c: u16) -> f64 {
        let info = &self.workloads[w];
        let pref = info
            .policy
            .map_or(0.0, |p| self.preference[p][usize::from(c)]);
        unit_value(
            info,
            &self.clusters[usize::from(c)],
            usize::from(c),
            pref,
            self.mode,
        )
    }
}

impl WorkloadInfo<'_> {
    /// Whether `cluster` passed the plan-independent filters.
    pub fn is_eligible(&self, cluster: u16) -> bool {
        self.eligible[usize::from(cluster) / 64] & (1 << (cluster % 64)) != 0
    }

    /// Whether any placement is possible at all.
    pub fn placeable(&self) -> bool {
        self.min_clusters <= self.max_clusters
    }
}

/// Takes what a held workload uses out of the clusters it runs on, so that the plan does
/// not give its room to others.
fn hold_room(clusters: &mut [ClusterInfo<'_>], workload: &Workload) {
    let running = workload.running_on();
    let k = running.len();
    for (i, name) in running.iter().enumerate() {
        let Some(cluster) = clusters.iter_mut().find(|c| &c.cluster.name == name) else {
            continue;
        };
        let replicas = u64::from(super::search::share_replicas(workload.replicas, k, i));
        cluster.allocatable[CPU] -= to_i64(workload.resources.cpu_millis.saturating_mul(replicas));
        cluster.allocatable[MEMORY] -=
            to_i64(workload.resources.memory_bytes.saturating_mul(replicas));
    }
}

/// See [`WorkloadInfo::size`].
fn size(workload: &Workload, unit: [u64; 2], average_allocatable: [f64; 2]) -> u64 {
    let replicas = f64::from(workload.replicas);
    let share = (unit[CPU] as f64 * replicas / average_allocatable[CPU])
        .max(unit[MEMORY] as f64 * replicas / average_allocatable[MEMORY]);
    // Scaled to an integer so that ordering is total and deterministic.
    (share * 1e9) as u64
}

/// The first plan-independent hard rule that excludes `cluster` for `workload`, checked in
/// the documented order: health, taints, required affinity.
pub(crate) fn first_static_failure(
    cluster: &ClusterInfo<'_>,
    workload: &Workload,
    required_matches: Option<bool>,
) -> Option<String> {
    let health = cluster.cluster.health.unwrap_or(Health::Ready);
    if health != Health::Ready {
        return Some(format!("health: cluster is {}", health.as_str()));
    }
    if let Some(taint) = cluster.cluster.taints.iter().find(|t| {
        t.effect == TaintEffect::NoSchedule
            && !workload.tolerations.iter().any(|tol| tol.tolerates(t))
    }) {
        return Some(format!(
            "taint: {}={}:NoSchedule not tolerated",
            taint.key, taint.value
        ));
    }
    if required_matches == Some(false) {
        return Some("required affinity".to_owned());
    }
    None
}

/// Value of one replica of `info` on `cluster`, per the objective in `docs/policies.md`.
fn unit_value(
    info: &WorkloadInfo<'_>,
    cluster: &ClusterInfo<'_>,
    index: usize,
    preference: f64,
    mode: Mode,
) -> f64 {
    let workload = info.workload;
    let cost = cluster.cluster.pricing.monthly_cost(workload.resources);
    let share = info.reference_cost / f64::from(workload.replicas);
    let staying =
        mode == Mode::Rebalance && info.current_all.iter().any(|&c| usize::from(c) == index);
    let bonus = info.objective.preference * preference
        + if staying {
            info.objective.stickiness
        } else {
            0.0
        };
    let untolerated = cluster
        .cluster
        .taints
        .iter()
        .filter(|t| {
            t.effect == TaintEffect::PreferNoSchedule
                && !workload.tolerations.iter().any(|tol| tol.tolerates(t))
        })
        .count();
    info.objective.cost * cost - bonus * share
        + PREFER_NO_SCHEDULE_PENALTY * untolerated as f64 * share
}

/// The highest-priority policy selecting `workload`; a tie at the top is a conflict.
pub fn governing_policy(
    policies: &[PlacementPolicy],
    workload: &Workload,
) -> Result<Option<usize>, PolicyConflict> {
    let selecting: Vec<usize> = (0..policies.len())
        .filter(|&i| policies[i].workload_selector.selects(workload))
        .collect();
    let Some(top) = selecting.iter().map(|&i| policies[i].priority).max() else {
        return Ok(None);
    };
    let mut winners: Vec<usize> = selecting
        .into_iter()
        .filter(|&i| policies[i].priority == top)
        .collect();
    if winners.len() > 1 {
        winners.sort_by(|&a, &b| policies[a].name.cmp(&policies[b].name));
        return Err(PolicyConflict {
            workload: workload.key(),
            first: policies[winners[0]].name.clone(),
            second: policies[winners[1]].name.clone(),
            priority: top,
        });
    }
    Ok(winners.first().copied())
}

/// Every workload that two policies of equal, highest priority both select, in
/// workload order: what [`super::plan`] holds, and what a new policy must not cause.
pub fn conflicts(policies: &[PlacementPolicy], workloads: &[Workload]) -> Vec<PolicyConflict> {
    let mut found: Vec<PolicyConflict> = workloads
        .iter()
        .filter_map(|w| governing_policy(policies, w).err())
        .collect();
    found.sort_by(|a, b| a.workload.cmp(&b.workload));
    found.dedup_by(|a, b| a.workload == b.workload);
    found
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
