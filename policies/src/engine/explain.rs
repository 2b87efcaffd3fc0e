//! Turns an assignment into the plan users read: placements with reasons, unplaced
//! workloads with the rule that excluded each cluster, and the moves from now.

use std::collections::BTreeMap;

use super::resolve::{CPU, ClusterInfo, MEMORY, Problem, first_static_failure};
use super::search::{Assignment, share_replicas};
use super::{Mode, Move, Placement, Plan, Unplaced};
use crate::quantity::{Cpu, Memory};

/// Money in plans is rounded to cents.
fn cents(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

pub(crate) fn plan(problem: &Problem<'_>, assignment: &Assignment, mode: Mode) -> Plan {
    let free = free_capacity(problem, assignment);
    let spent = spent_per_policy(problem, assignment);
    let mut placements = Vec::new();
    let mut unplaced = Vec::new();
    let mut moves = Vec::new();
    let mut total = 0.0;
    let mut objective = 0.0;
    for (w, clusters) in assignment.clusters.iter().enumerate() {
        let info = &problem.workloads[w];
        if clusters.is_empty() {
            unplaced.push(Unplaced {
                workload: info.key.clone(),
                reasons: exclusion_reasons(problem, w, &free, &spent),
            });
            continue;
        }
        let k = clusters.len();
        // A share that moves comes from a cluster the workload leaves, if it leaves one.
        let current = info
            .current_all
            .iter()
            .copied()
            .find(|now| !clusters.contains(now))
            .or(info.current);
        for (i, &c) in clusters.iter().enumerate() {
            let replicas = share_replicas(info.workload.replicas, k, i);
            let cost = f64::from(replicas) * problem.unit_cost(w, c);
            total += cost;
            objective += f64::from(replicas) * problem.unit_value(w, c);
            let from = current.filter(|_| !info.current_all.contains(&c));
            let cluster_name = problem.clusters[usize::from(c)].cluster.name.clone();
            if let Some(now) = from {
                let source = &problem.clusters[usize::from(now)].cluster;
                let share = f64::from(replicas) / f64::from(info.workload.replicas);
                let reason = assignment.notes[w].clone().unwrap_or_else(|| match mode {
                    Mode::Fresh => format!("fresh plan places these replicas on {cluster_name}"),
                    Mode::Rebalance => "new placement".to_owned(),
                });
                moves.push(Move {
                    workload: info.key.clone(),
                    from: source.name.clone(),
                    to: cluster_name.clone(),
                    replicas,
                    monthly_savings: cents(
                        f64::from(replicas) * (problem.unit_cost(w, now) - problem.unit_cost(w, c)),
                    ),
                    migration_cost: cents(
                        info.workload.data_gib * share * source.pricing.egress_gib,
                    ),
                    reason,
                });
            }
            placements.push(Placement {
                workload: info.key.clone(),
                cluster: cluster_name,
                replicas,
                monthly_cost: cents(cost),
                from: from.map(|now| problem.clusters[usize::from(now)].cluster.name.clone()),
                reasons: placement_reasons(problem, assignment, w, c, &free),
            });
        }
    }
    placements.sort_by(|a, b| (&a.workload, &a.cluster).cmp(&(&b.workload, &b.cluster)));
    unplaced.sort_by(|a, b| a.workload.cmp(&b.workload));
    moves.sort_by(|a, b| (&a.workload, &a.to).cmp(&(&b.workload, &b.to)));
    let mut held = problem.held.clone();
    held.sort_by(|a, b| a.workload.cmp(&b.workload));
    Plan {
        mode,
        placements,
        unplaced,
        held,
        moves,
        total_monthly_cost: cents(total),
        objective,
    }
}

fn free_capacity(problem: &Problem<'_>, assignment: &Assignment) -> Vec<[i64; 2]> {
    let mut free: Vec<[i64; 2]> = problem.clusters.iter().map(|c| c.allocatable).collect();
    for (w, clusters) in assignment.clusters.iter().enumerate() {
        for (i, &c) in clusters.iter().enumerate() {
            let demand = share_demand(problem, w, clusters.len(), i);
            free[usize::from(c)][CPU] -= demand[CPU];
            free[usize::from(c)][MEMORY] -= demand[MEMORY];
        }
    }
    free
}

fn spent_per_policy(problem: &Problem<'_>, assignment: &Assignment) -> Vec<f64> {
    let mut spent = vec![0.0; problem.policies.len()];
    for (w, clusters) in assignment.clusters.iter().enumerate() {
        if let Some(p) = problem.workloads[w].policy {
            for (i, &c) in clusters.iter().enumerate() {
                spent[p] += f64::from(share_replicas(
                    problem.workloads[w].workload.replicas,
                    clusters.len(),
                    i,
                )) * problem.unit_cost(w, c);
            }
        }
    }
    spent
}

fn share_demand(problem: &Problem<'_>, w: usize, k: usize, i: usize) -> [i64; 2] {
    let r = i64::from(share_replicas(problem.workloads[w].workload.replicas, k, i));
    problem.workloads[w]
        .unit
        .map(|x| i64::try_from(x).unwrap_or(i64::MAX).saturating_mul(r))
}

fn policy_name(problem: &Problem<'_>, w: usize) -> String {
    match problem.workloads[w].policy {
        Some(p) => format!("policy {}", problem.policies[p].name),
        None => "default policy: cost only".to_owned(),
    }
}

fn placement_reasons(
    problem: &Problem<'_>,
    assignment: &Assignment,
    w: usize,
    c: u16,
    free: &[[i64; 2]],
) -> Vec<String> {
    let info = &problem.workloads[w];
    let cluster = problem.clusters[usize::from(c)].cluster;
    let mut reasons = vec![policy_name(problem, w)];
    if let Some(p) = info.policy {
        let policy = &problem.policies[p];
        if let Some(required) = policy.required.as_ref().filter(|r| !r.is_empty()) {
            reasons.push(format!("matches required {required}"));
        }
        for term in policy
            .preferred
            .iter()
            .filter(|t| t.selector.matches(&cluster.labels))
        {
            reasons.push(format!(
                "preferred {} (weight {})",
                term.selector, term.weight
            ));
        }
    }
    let k = assignment.clusters[w].len();
    if info.min_clusters > 1 || k > 1 {
        reasons.push(format!(
            "spread: {} of {} replicas, over {k} clusters",
            share_replicas(
                info.workload.replicas,
                k,
                assignment.clusters[w]
                    .iter()
                    .position(|&x| x == c)
                    .unwrap_or(0)
            ),
            info.workload.replicas
        ));
    }
    reasons.extend(cheaper_excluded(problem, w, c));
    // Compare with the cheapest eligible cluster that is not used by this workload.
    let my_cost = problem.unit_cost(w, c);
    let cheaper = info
        .candidates
        .iter()
        .copied()
        .filter(|&d| {
            !assignment.clusters[w].contains(&d) && problem.unit_cost(w, d) < my_cost - 1e-12
        })
        .min_by(|&a, &b| {
            problem
                .unit_cost(w, a)
                .total_cmp(&problem.unit_cost(w, b))
                .then(a.cmp(&b))
        });
    match cheaper {
        None => reasons.push(if k > 1 {
            "cheapest eligible clusters".to_owned()
        } else {
            "cheapest eligible cluster".to_owned()
        }),
        Some(d) => {
            let name = &problem.clusters[usize::from(d)].cluster.name;
            let position = assignment.clusters[w]
                .iter()
                .position(|&x| x == c)
                .unwrap_or(0);
            let demand = share_demand(problem, w, k, position);
            let room = free[usize::from(d)];
            if problem.unit_value(w, c) < problem.unit_value(w, d) {
                reasons.push(format!("preferred over cheaper {name}"));
            } else if room[CPU] < demand[CPU] {
                reasons.push(format!(
                    "cheaper {name} is full: cpu {} free, needs {}",
                    Cpu(room[CPU].max(0).unsigned_abs()),
                    Cpu(demand[CPU].unsigned_abs())
                ));
            } else if room[MEMORY] < demand[MEMORY] {
                reasons.push(format!(
                    "cheaper {name} is full: memory {} free, needs {}",
                    Memory(room[MEMORY].max(0).unsigned_abs()),
                    Memory(demand[MEMORY].unsigned_abs())
                ));
            } else if !(problem.mode == Mode::Rebalance && info.current_all.contains(&c)) {
                // A workload that stays where it runs was not placed by the search: the
                // rebalance note below says why it stays, not this comparison.
                reasons.push(format!(
                    "cheaper {name} is left to workloads with fewer options"
                ));
            }
        }
    }
    if let Some(note) = &assignment.notes[w] {
        reasons.push(note.clone());
    } else if info.current_all.contains(&c) && problem.mode == Mode::Rebalance {
        reasons.push("runs here now".to_owned());
    }
    reasons
}

fn exclusion_reasons(
    problem: &Problem<'_>,
    w: usize,
    free: &[[i64; 2]],
    spent: &[f64],
) -> BTreeMap<String, String> {
    let info = &problem.workloads[w];
    let mut reasons = BTreeMap::new();
    let k = usize::try_from(info.min_clusters).unwrap_or(usize::MAX);
    let demand = share_demand(problem, w, k.max(1), 0);
    for (index, cluster) in problem.clusters.iter().enumerate() {
        let Ok(c) = u16::try_from(index) else {
            continue;
        };
        let reason = if let Some(failure) = static_exclusion(problem, w, cluster) {
            failure
        } else if info.workload.replicas < info.min_clusters {
            format!(
                "spread: {} replicas cannot be divided over {} clusters",
                info.workload.replicas, info.min_clusters
            )
        } else if info.candidates.len() < k {
            format!(
                "spread: needs {k} eligible clusters, {} found",
                info.candidates.len()
            )
        } else if free[index][CPU] < demand[CPU] {
            format!(
                "capacity: cpu {} > {} free",
                Cpu(demand[CPU].unsigned_abs()),
                Cpu(free[index][CPU].max(0).unsigned_abs())
            )
        } else if free[index][MEMORY] < demand[MEMORY] {
            format!(
                "capacity: memory {} > {} free",
                Memory(demand[MEMORY].unsigned_abs()),
                Memory(free[index][MEMORY].max(0).unsigned_abs())
            )
        } else if let Some(p) = info.policy.filter(|&p| problem.budgets[p].is_finite()) {
            let cost = f64::from(share_replicas(info.workload.replicas, k.max(1), 0))
                * problem.unit_cost(w, c);
            if spent[p] + cost > problem.budgets[p] {
                format!(
                    "budget: policy {} has {:.2} of {:.2} left, needs {:.2}",
                    problem.policies[p].name,
                    (problem.budgets[p] - spent[p]).max(0.0),
                    problem.budgets[p],
                    cost
                )
            } else {
                "spread: too few clusters with room for every share".to_owned()
            }
        } else {
            "spread: too few clusters with room for every share".to_owned()
        };
        reasons.insert(cluster.cluster.name.clone(), reason);
    }
    reasons
}

/// The plan-independent hard rule that excludes `cluster` for workload `w`, if any, in
/// the words the plan uses.
pub(crate) fn static_exclusion(
    problem: &Problem<'_>,
    w: usize,
    cluster: &ClusterInfo<'_>,
) -> Option<String> {
    let info = &problem.workloads[w];
    let selector = info
        .policy
        .and_then(|p| problem.policies[p].required.as_ref());
    let required = info
        .policy
        .map(|_| selector.is_none_or(|r| r.matches(&cluster.cluster.labels)));
    let failure = first_static_failure(cluster, info.workload, required)?;
    Some(match failure.as_str() {
        "required affinity" => {
            let term = selector
                .and_then(|s| s.first_mismatch(&cluster.cluster.labels))
                .unwrap_or_default();
            format!("required affinity {term}")
        }
        _ => failure,
    })
}

/// Cheaper clusters that a hard rule excludes, named up to this many per placement; the
/// rest are counted, so that a plan over hundreds of clusters stays readable and small.
const EXCLUDED_NAMED: usize = 2;

/// "cheaper C excluded: rule" for clusters cheaper than `c` that `w` may not use.
fn cheaper_excluded(problem: &Problem<'_>, w: usize, c: u16) -> Vec<String> {
    let info = &problem.workloads[w];
    let my_cost = problem.unit_cost(w, c);
    let mut cheaper: Vec<(f64, usize)> = (0..problem.clusters.len())
        .filter_map(|d| {
            let index = u16::try_from(d).ok()?;
            let cost = problem.unit_cost(w, index);
            (!info.is_eligible(index) && cost < my_cost - 1e-12).then_some((cost, d))
        })
        .collect();
    cheaper.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut reasons: Vec<String> = cheaper
        .iter()
        .take(EXCLUDED_NAMED)
        .filter_map(|&(_, d)| {
            let cluster = &problem.clusters[d];
            let why = static_exclusion(problem, w, cluster)?;
            Some(format!("cheaper {} excluded: {why}", cluster.cluster.name))
        })
        .collect();
    match cheaper.len().saturating_sub(EXCLUDED_NAMED) {
        0 => {}
        1 => reasons.push("1 more cheaper cluster excluded by hard rules".to_owned()),
        more => reasons.push(format!(
            "{more} more cheaper clusters excluded by hard rules"
        )),
    }
    reasons
}
