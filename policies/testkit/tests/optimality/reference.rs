//! The semantics of a fresh plan, restated from `spec/resources.md` and the engine's
//! contract without using any of the engine's code, so that the MIP and the checks of
//! the engine's plans stand on their own. Only the model's own predicates
//! (`WorkloadSelector::selects`, `Toleration::tolerates`, `LabelSelector::matches`) are
//! shared: they define what the resource files mean, not how a plan is searched.

use ferry_policies::model::{
    Cluster, Health, Objective, PlacementPolicy, PreferredTerm, Spread, TaintEffect, Workload,
};
use ferry_policies::quantity::Resources;
use ferry_policies::selector::LabelSelector;

/// Weight of one untolerated `PreferNoSchedule` taint, in units of the workload's
/// reference cost.
pub const PREFER_NO_SCHEDULE_WEIGHT: f64 = 0.5;

/// Relative slack on budgets: the MIP's budget rows hold to HiGHS's feasibility
/// tolerance, not exactly.
const BUDGET_SLACK: f64 = 1e-7;

/// Per workload, the clusters and replica counts of its shares; empty means unplaced.
pub type Assignment = Vec<Vec<(usize, u32)>>;

/// What a workload's governing policy (or the default) asks for.
pub struct Terms {
    /// `namespace/name`.
    pub key: String,
    /// Replica count R.
    pub replicas: u32,
    /// Requests of one replica.
    pub requests: Resources,
    /// Index of the governing policy; `None` for the default.
    pub policy: Option<usize>,
    /// Per cluster, the hard rule that excludes it (capacity aside), or `None`.
    pub excluded: Vec<Option<String>>,
    /// Per cluster, the monthly cost of one replica.
    pub replica_cost: Vec<f64>,
    /// Per cluster, the objective value of one replica: cost, minus preference, plus the
    /// `PreferNoSchedule` penalty.
    pub replica_value: Vec<f64>,
    /// Smallest and largest number of clusters k (both inclusive; empty when min > max).
    pub clusters: (u32, u32),
}

/// A snapshot with its semantics worked out.
pub struct Reference<'a> {
    /// The clusters.
    pub clusters: &'a [Cluster],
    /// Per workload, what applies to it.
    pub terms: Vec<Terms>,
    /// Policies with a budget: (policy index, limit).
    pub budgets: Vec<(usize, f64)>,
    /// Policy names, for messages.
    pub policy_names: Vec<String>,
}

/// Totals of a valid assignment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    /// Workloads placed.
    pub placed: usize,
    /// Monthly cost.
    pub cost: f64,
    /// Objective value.
    pub value: f64,
}

/// Monthly cost of `replicas` replicas of `requests` on `cluster`, from the spec:
/// cores x cpuCoreHour + GiB x memoryGiBHour, times 730 hours.
pub fn monthly_cost(cluster: &Cluster, requests: Resources, replicas: u32) -> f64 {
    let cores = requests.cpu_millis as f64 / 1000.0;
    let gib = requests.memory_bytes as f64 / (1u64 << 30) as f64;
    f64::from(replicas)
        * (cores * cluster.pricing.cpu_core_hour + gib * cluster.pricing.memory_gib_hour)
        * 730.0
}

/// Shares of R replicas over k clusters, as evenly as possible: `(R / k, R % k)`, that is
/// the small share and how many shares get one replica more.
pub fn division(replicas: u32, clusters: u32) -> (u32, u32) {
    (replicas / clusters, replicas % clusters)
}

fn ready(cluster: &Cluster) -> bool {
    matches!(cluster.health, None | Some(Health::Ready))
}

/// Capacity left for placements: capacity minus reserved, per resource; negative when
/// reserved already exceeds capacity.
pub fn room(cluster: &Cluster) -> (i128, i128) {
    let capacity = cluster
        .capacity
        .expect("the reference only plans over clusters with a capacity");
    (
        i128::from(capacity.cpu_millis) - i128::from(cluster.reserved.cpu_millis),
        i128::from(capacity.memory_bytes) - i128::from(cluster.reserved.memory_bytes),
    )
}

struct Rules<'a> {
    objective: Objective,
    required: Option<&'a LabelSelector>,
    preferred: &'a [PreferredTerm],
    spread: Option<Spread>,
}

impl<'a> Reference<'a> {
    /// Works out the semantics of a snapshot. Panics when two policies of equal priority
    /// select the same workload: such input has no plan, only an error.
    pub fn new(
        clusters: &'a [Cluster],
        workloads: &[Workload],
        policies: &[PlacementPolicy],
    ) -> Reference<'a> {
        let terms = workloads
            .iter()
            .map(|workload| {
                let policy = governing(policies, workload);
                let rules = match policy {
                    Some(index) => {
                        let p = &policies[index];
                        Rules {
                            objective: p.objective,
                            required: p.required.as_ref(),
                            preferred: &p.preferred,
                            spread: p.spread,
                        }
                    }
                    None => Rules {
                        objective: Objective {
                            cost: 1.0,
                            preference: 0.1,
                            stickiness: 0.0,
                        },
                        required: None,
                        preferred: &[],
                        spread: None,
                    },
                };
                terms(clusters, workload, policy, &rules)
            })
            .collect();
        let budgets = policies
            .iter()
            .enumerate()
            .filter_map(|(index, p)| p.max_monthly_cost.map(|limit| (index, limit)))
            .collect();
        Reference {
            clusters,
            terms,
            budgets,
            policy_names: policies.iter().map(|p| p.name.clone()).collect(),
        }
    }

    /// Checks every hard rule of `assignment` and returns its totals, or every violation.
    pub fn validate(&self, assignment: &Assignment) -> Result<Totals, Vec<String>> {
        let mut problems = Vec::new();
        let mut used = vec![(0i128, 0i128); self.clusters.len()];
        let mut spent = vec![0.0; self.policy_names.len()];
        let mut totals = Totals {
            placed: 0,
            cost: 0.0,
            value: 0.0,
        };
        for (terms, shares) in self.terms.iter().zip(assignment) {
            if shares.is_empty() {
                continue;
            }
            totals.placed += 1;
            let key = &terms.key;
            let k = shares.len() as u32;
            if k < terms.clusters.0 || k > terms.clusters.1 {
                problems.push(format!(
                    "{key}: {k} clusters, outside {}..={}",
                    terms.clusters.0, terms.clusters.1
                ));
            }
            let (small, _) = division(terms.replicas, k);
            let total: u32 = shares.iter().map(|&(_, r)| r).sum();
            if total != terms.replicas {
                problems.push(format!(
                    "{key}: {total} replicas placed, not {}",
                    terms.replicas
                ));
            }
            // With the sum right, shares all in {R/k, R/k + 1} is exactly "as evenly as
            // possible".
            if shares.iter().any(|&(_, r)| r != small && r != small + 1) {
                problems.push(format!(
                    "{key}: shares {:?} are not an even division of {} over {k}",
                    shares.iter().map(|&(_, r)| r).collect::<Vec<_>>(),
                    terms.replicas
                ));
            }
            for (i, &(cluster, replicas)) in shares.iter().enumerate() {
                let name = &self.clusters[cluster].name;
                if shares[..i].iter().any(|&(c, _)| c == cluster) {
                    problems.push(format!("{key}: two shares on {name}"));
                }
                if replicas == 0 {
                    problems.push(format!("{key}: empty share on {name}"));
                }
                if let Some(rule) = &terms.excluded[cluster] {
                    problems.push(format!("{key}: placed on {name}, which {rule}"));
                }
                used[cluster].0 += i128::from(replicas) * i128::from(terms.requests.cpu_millis);
                used[cluster].1 += i128::from(replicas) * i128::from(terms.requests.memory_bytes);
                let cost = f64::from(replicas) * terms.replica_cost[cluster];
                totals.cost += cost;
                totals.value += f64::from(replicas) * terms.replica_value[cluster];
                if let Some(policy) = terms.policy {
                    spent[policy] += cost;
                }
            }
        }
        for (cluster, &(cpu, memory)) in self.clusters.iter().zip(&used) {
            if cpu == 0 && memory == 0 {
                continue;
            }
            let (room_cpu, room_memory) = room(cluster);
            if cpu > room_cpu || memory > room_memory {
                problems.push(format!(
                    "{}: over capacity: {cpu}m of {room_cpu}m cpu, {memory} of {room_memory} bytes",
                    cluster.name
                ));
            }
        }
        for &(policy, limit) in &self.budgets {
            if spent[policy] > limit + BUDGET_SLACK * limit.abs().max(1.0) {
                problems.push(format!(
                    "policy {}: spends {:.6} over its budget {limit}",
                    self.policy_names[policy], spent[policy]
                ));
            }
        }
        if problems.is_empty() {
            Ok(totals)
        } else {
            Err(problems)
        }
    }
}

/// The highest-priority policy that selects `workload`.
fn governing(policies: &[PlacementPolicy], workload: &Workload) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, policy) in policies.iter().enumerate() {
        if !policy.workload_selector.selects(workload) {
            continue;
        }
        match best {
            Some(b) if policies[b].priority == policy.priority => panic!(
                "policies {} and {} both select {} at priority {}: no plan exists",
                policies[b].name,
                policy.name,
                workload.key(),
                policy.priority
            ),
            Some(b) if policies[b].priority > policy.priority => {}
            _ => best = Some(index),
        }
    }
    best
}

fn terms(
    clusters: &[Cluster],
    workload: &Workload,
    policy: Option<usize>,
    rules: &Rules<'_>,
) -> Terms {
    let replicas = workload.replicas;
    let tolerated = |taint| workload.tolerations.iter().any(|t| t.tolerates(taint));
    let excluded: Vec<Option<String>> = clusters
        .iter()
        .map(|cluster| {
            if !ready(cluster) {
                return Some("is not Ready".to_string());
            }
            if let Some(taint) = cluster
                .taints
                .iter()
                .find(|t| t.effect == TaintEffect::NoSchedule && !tolerated(t))
            {
                return Some(format!("has untolerated NoSchedule taint {}", taint.key));
            }
            if let Some(required) = rules.required
                && !required.matches(&cluster.labels)
            {
                return Some("fails required affinity".to_string());
            }
            None
        })
        .collect();
    let replica_cost: Vec<f64> = clusters
        .iter()
        .map(|c| monthly_cost(c, workload.resources, 1))
        .collect();
    // ref(w): all R replicas on the cheapest cluster that passes the hard filters.
    let reference = clusters
        .iter()
        .zip(&excluded)
        .filter(|(_, rule)| rule.is_none())
        .map(|(c, _)| monthly_cost(c, workload.resources, replicas))
        .min_by(f64::total_cmp)
        .unwrap_or(0.0);
    let per_replica_reference = if replicas == 0 {
        0.0
    } else {
        reference / f64::from(replicas)
    };
    let replica_value = clusters
        .iter()
        .zip(&replica_cost)
        .map(|(cluster, &cost)| {
            let preference: f64 = rules
                .preferred
                .iter()
                .filter(|term| term.selector.matches(&cluster.labels))
                .map(|term| f64::from(term.weight))
                .sum::<f64>()
                / 100.0;
            let untolerated = cluster
                .taints
                .iter()
                .filter(|t| t.effect == TaintEffect::PreferNoSchedule && !tolerated(t))
                .count() as f64;
            rules.objective.cost * cost
                - rules.objective.preference * preference * per_replica_reference
                + PREFER_NO_SCHEDULE_WEIGHT * untolerated * per_replica_reference
        })
        .collect();
    let (low, high) = match rules.spread {
        Some(spread) => (spread.min_clusters, spread.max_clusters.min(replicas)),
        None => (1, 1),
    };
    Terms {
        key: workload.key(),
        replicas,
        requests: workload.resources,
        policy,
        excluded,
        replica_cost,
        replica_value,
        clusters: (low, high),
    }
}
