//! Seeded instances for the placement engine: clusters, workloads and placement
//! policies, generated from a `u64` seed and a [`Shape`], with no dependency beyond
//! `ferry-policies` (the PRNG is a small splitmix64, [`Rng`]).
//!
//! The same seed and shape always give the same [`Instance`], on every platform, so a
//! failing seed printed by the optimality suite or a benchmark can be replayed exactly.
//!
//! What an instance mixes, and why:
//! - **Capacity** that often binds: the total demand is drawn between
//!   [`Shape::tightness`] of the usable capacity (capacity minus `reserved`) of the
//!   `Ready` clusters, and cluster sizes differ by up to 16x, with their own cpu to
//!   memory ratio. With large shares in small clusters, which workload goes where is a
//!   bin-packing question, so a cheapest-first greedy is not optimal. With
//!   [`Shape::fit_to_policies`] (as in [`Shape::scale`]) each cluster is sized instead by
//!   the demand that may reach it, so that everything could be placed if shares were
//!   divisible and budgets allowed it.
//! - **Prices** whose cpu and memory parts vary independently per cluster, and workloads
//!   that are cpu-heavy, memory-heavy or balanced: the cheapest cluster differs from one
//!   workload to the next.
//! - **Labels** `provider`, `region`, `residency` (sometimes absent) and `accelerator`
//!   (sometimes present), which required and preferred affinities select on with
//!   `matchLabels` and every `matchExpressions` operator.
//! - **Health**: some clusters are `Degraded` or `Unreachable`, some state no health
//!   (which counts as `Ready`); at least half are placeable.
//! - **Taints**: `NoSchedule` and `PreferNoSchedule`, with some workloads tolerating
//!   them (by value, by key, or everything).
//! - **Policies**: one per "policy namespace", all at priority 100, which is legal
//!   because their namespaces are disjoint; some narrow their namespace further by
//!   workload labels, leaving the rest to the default. Override policies select across
//!   namespaces by label with distinct higher priorities, so the highest-priority rule
//!   matters. Policies carry required affinity, weighted preferred terms, `spread`
//!   bounds, objective weights other than the default, and budgets.
//! - **Budgets** only on policies that govern every workload they select. The budget of a
//!   policy whose workloads are partly taken by a higher-priority policy would depend on
//!   whether "what it selects" means selected or governed; instances stay clear of that
//!   question so that a comparison against them tests the engine, not a reading of the
//!   spec. A budget is drawn around the cheapest possible cost of its workloads, so it
//!   sometimes binds.
//! - **Current placement** on some workloads, which fresh planning must ignore.
//!
//! Quantities are multiples of 50 millicores and 64 MiB, capacities of 500 millicores
//! and 1 GiB, so that instances read like real ones and exact solvers can scale them.

#![warn(missing_docs)]

use std::collections::BTreeMap;

use ferry_policies::engine::Snapshot;
use ferry_policies::model::{
    Cluster, Connection, Health, Labels, Objective, PlacementPolicy, PreferredTerm, Pricing,
    Provider, RebalanceRules, Spread, Taint, TaintEffect, Toleration, TolerationOperator, Workload,
    WorkloadSelector,
};
use ferry_policies::quantity::Resources;
use ferry_policies::selector::{LabelExpression, LabelSelector, SelectorOperator};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A small deterministic PRNG (splitmix64). Not for cryptography; its only job is to
/// make instances reproducible from a seed without depending on `rand`.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose whole output is determined by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        // Multiply-high (Lemire) instead of `%`: no modulo bias worth mentioning, and no
        // division.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform integer in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "Rng::range({low}, {high})");
        low + self.below(high - low + 1)
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform float in `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The size of an instance and the knobs of its mix. Start from [`Shape::optimality`] or
/// [`Shape::scale`] and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    /// Number of workloads.
    pub workloads: usize,
    /// Number of clusters.
    pub clusters: usize,
    /// Total demand over the usable capacity of the `Ready` clusters, drawn uniformly in
    /// this range for each instance, cpu and memory alike. Above about 0.7 capacity binds
    /// once affinity and taints narrow where each workload may go.
    pub tightness: (f64, f64),
    /// Replicas per workload are drawn in `1..=max_replicas`, small counts more often.
    pub max_replicas: u32,
    /// Share of workloads placed in namespaces that a policy governs; the rest, and the
    /// workloads a policy's label selector leaves out, fall to the default.
    pub policy_share: f64,
    /// Number of namespaces that get a policy of their own (at least one).
    pub policy_namespaces: usize,
    /// Up to this many override policies, which select by labels across namespaces at
    /// distinct priorities above the namespace policies.
    pub max_overrides: usize,
    /// Share of policies with a required cluster affinity.
    pub required_share: f64,
    /// Share of policies with `spread`.
    pub spread_share: f64,
    /// Largest `spread.maxClusters` drawn.
    pub max_spread: u32,
    /// Share of eligible policies (see the crate documentation) with a budget.
    pub budget_share: f64,
    /// A budget is the cheapest its workloads could cost with unlimited capacity, times a
    /// factor drawn in this range: below 1 it always binds.
    pub budget_slack: (f64, f64),
    /// Share of clusters that are `Degraded` or `Unreachable` (never more than half).
    pub unhealthy_share: f64,
    /// Share of clusters with a taint.
    pub taint_share: f64,
    /// Share of workloads with a toleration.
    pub toleration_share: f64,
    /// Share of clusters with `reserved` capacity.
    pub reserved_share: f64,
    /// Fit the instance to its policies once they are drawn: raise each workload's
    /// replicas to its policy's `spread.minClusters`, and size each `Ready` cluster by the
    /// demand that can reach it (health, `NoSchedule` taints and required affinity
    /// allowing), so that [`Shape::tightness`] holds where workloads can actually go.
    /// Off, capacity follows cluster sizes alone: a workload confined to a few clusters
    /// then meets more contention than `tightness` says, and a spread minimum above the
    /// replica count leaves its workload unplaceable.
    pub fit_to_policies: bool,
}

impl Shape {
    /// Instances small enough for an exact MIP to prove the optimum in seconds: few
    /// replicas, `maxClusters` up to 3, and capacity between 70% and 110% used.
    pub fn optimality(workloads: usize, clusters: usize) -> Shape {
        Shape {
            workloads,
            clusters,
            tightness: (0.7, 1.1),
            max_replicas: 6,
            policy_share: 0.75,
            policy_namespaces: (workloads / 6).clamp(1, 4),
            max_overrides: 2,
            required_share: 0.6,
            spread_share: 0.35,
            max_spread: 3,
            budget_share: 0.5,
            budget_slack: (0.85, 1.4),
            unhealthy_share: 0.12,
            taint_share: 0.35,
            toleration_share: 0.4,
            reserved_share: 0.4,
            // Off: the suite's seeds keep the instances its recorded results are about, and
            // fitted instances, binding on every cluster at once, take HiGHS minutes to
            // prove at 40 x 8 (11 of 30 seeds over 20 s, against 3 of 30 unfitted).
            fit_to_policies: false,
        }
    }

    /// Instances for benchmarks and scale tests: more replicas and wider spread, capacity
    /// fitted to where each workload may go and budgets that bind less often, so that
    /// most workloads place and the engine's time goes to choosing, not to rejecting.
    pub fn scale(workloads: usize, clusters: usize) -> Shape {
        Shape {
            workloads,
            clusters,
            tightness: (0.6, 0.95),
            max_replicas: 24,
            policy_share: 0.8,
            policy_namespaces: (workloads / 25).clamp(1, 12),
            max_overrides: 4,
            required_share: 0.5,
            spread_share: 0.4,
            max_spread: 5,
            budget_share: 0.3,
            budget_slack: (1.0, 1.5),
            unhealthy_share: 0.08,
            taint_share: 0.3,
            toleration_share: 0.35,
            reserved_share: 0.5,
            fit_to_policies: true,
        }
    }
}

/// A generated planning input, owning what a [`Snapshot`] borrows.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Member clusters, each with a capacity.
    pub clusters: Vec<Cluster>,
    /// Workloads; some state a current cluster.
    pub workloads: Vec<Workload>,
    /// Placement policies; no two of equal priority select the same workload.
    pub policies: Vec<PlacementPolicy>,
}

impl Instance {
    /// The engine's view of this instance.
    pub fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            clusters: &self.clusters,
            workloads: &self.workloads,
            policies: &self.policies,
        }
    }
}

const REGIONS: [(&str, &str); 5] = [
    ("eu-west", "eu"),
    ("eu-central", "eu"),
    ("us-east", "us"),
    ("us-west", "us"),
    ("ap-south", "ap"),
];
const PROVIDERS: [&str; 3] = ["openstack", "gke", "kubernetes"];
const POLICY_NAMESPACES: [&str; 12] = [
    "shop",
    "payments",
    "analytics",
    "search",
    "ml",
    "media",
    "identity",
    "ledger",
    "catalog",
    "maps",
    "mail",
    "video",
];
const FREE_NAMESPACES: [&str; 2] = ["internal", "sandbox"];
const TIERS: [&str; 3] = ["web", "batch", "db"];

/// Generates the instance of `seed` and `shape`.
pub fn random_instance(seed: u64, shape: &Shape) -> Instance {
    // Mixing the shape into the seed keeps instances of different sizes from sharing
    // their first draws, which would correlate them.
    let mut rng = Rng::new(
        seed ^ (shape.workloads as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)
            ^ (shape.clusters as u64).rotate_left(32),
    );
    let mut clusters = generate_clusters(&mut rng, shape);
    let mut workloads = generate_workloads(&mut rng, shape, &clusters);
    let mut policies;
    if shape.fit_to_policies {
        policies = generate_policies(&mut rng, shape, &clusters);
        let governors: Vec<Option<usize>> =
            workloads.iter().map(|w| governing(&policies, w)).collect();
        for (workload, governor) in workloads.iter_mut().zip(&governors) {
            if let Some(spread) = governor.and_then(|p| policies[p].spread) {
                workload.replicas = workload.replicas.max(spread.min_clusters);
            }
        }
        let reach = |cluster: &Cluster, w: usize| {
            let policy = governors[w].map(|p| &policies[p]);
            passes_hard_filters(cluster, &workloads[w], policy)
        };
        size_clusters(&mut rng, shape, &mut clusters, &workloads, Some(&reach));
    } else {
        // The original order of draws, which the optimality suite's seeds depend on.
        size_clusters(&mut rng, shape, &mut clusters, &workloads, None);
        policies = generate_policies(&mut rng, shape, &clusters);
    }
    assign_budgets(&mut rng, shape, &clusters, &workloads, &mut policies);
    Instance {
        clusters,
        workloads,
        policies,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(ToString::to_string).collect()
}

fn round_to(value: f64, step: f64) -> f64 {
    (value / step).round() * step
}

fn generate_clusters(rng: &mut Rng, shape: &Shape) -> Vec<Cluster> {
    let max_unhealthy = shape.clusters / 2;
    let mut unhealthy = 0;
    (0..shape.clusters)
        .map(|index| {
            let (region, residency) = *rng.pick(&REGIONS);
            let provider = *rng.pick(&PROVIDERS);
            let mut cluster_labels = labels(&[("provider", provider), ("region", region)]);
            if !rng.chance(0.15) {
                cluster_labels.insert("residency".into(), residency.into());
            }
            if rng.chance(0.25) {
                cluster_labels.insert("accelerator".into(), "gpu".into());
            }
            let health = if unhealthy < max_unhealthy && rng.chance(shape.unhealthy_share) {
                unhealthy += 1;
                Some(if rng.chance(0.6) {
                    Health::Degraded
                } else {
                    Health::Unreachable
                })
            } else if rng.chance(0.3) {
                None
            } else {
                Some(Health::Ready)
            };
            let mut taints = Vec::new();
            if rng.chance(shape.taint_share) {
                taints.push(random_taint(rng));
                if rng.chance(0.25) {
                    let second = random_taint(rng);
                    if second.key != taints[0].key {
                        taints.push(second);
                    }
                }
            }
            Cluster {
                name: format!("{region}-{provider}-{index}"),
                labels: cluster_labels,
                // Simulated clusters: the `provider` label is what policies see, and sim
                // needs no connection block.
                provider: Provider::Sim,
                connection: Connection::Sim,
                pricing: Pricing {
                    currency: "USD".into(),
                    cpu_core_hour: round_to(rng.uniform(0.012, 0.048), 0.0001),
                    memory_gib_hour: round_to(rng.uniform(0.0015, 0.0075), 0.00005),
                    egress_gib: round_to(rng.uniform(0.01, 0.12), 0.01),
                },
                // Sized once the workloads are known.
                capacity: None,
                reserved: Resources::default(),
                taints,
                health,
                scope: Default::default(),
                overrides: Default::default(),
            }
        })
        .collect()
}

fn random_taint(rng: &mut Rng) -> Taint {
    let (key, value, effect) = *rng.pick(&[
        ("dedicated", "batch", TaintEffect::NoSchedule),
        ("maintenance", "true", TaintEffect::NoSchedule),
        ("spot", "true", TaintEffect::PreferNoSchedule),
        ("legacy-network", "", TaintEffect::PreferNoSchedule),
        ("spot", "true", TaintEffect::PreferNoSchedule),
    ]);
    Taint {
        key: key.into(),
        value: value.into(),
        effect,
    }
}

fn random_toleration(rng: &mut Rng, tier: &str) -> Toleration {
    let toleration = |key: Option<&str>, operator, value: &str, effect| Toleration {
        key: key.map(Into::into),
        operator,
        value: value.into(),
        effect,
    };
    // Batch work is what dedicated and spot capacity exist for.
    if tier == "batch" && rng.chance(0.6) {
        return if rng.chance(0.5) {
            toleration(
                Some("dedicated"),
                TolerationOperator::Equal,
                "batch",
                Some(TaintEffect::NoSchedule),
            )
        } else {
            toleration(
                Some("spot"),
                TolerationOperator::Exists,
                "",
                Some(TaintEffect::PreferNoSchedule),
            )
        };
    }
    match rng.below(6) {
        0 => toleration(Some("maintenance"), TolerationOperator::Exists, "", None),
        1 => toleration(
            Some("spot"),
            TolerationOperator::Equal,
            "true",
            Some(TaintEffect::PreferNoSchedule),
        ),
        2 => toleration(
            Some("legacy-network"),
            TolerationOperator::Exists,
            "",
            Some(TaintEffect::PreferNoSchedule),
        ),
        // A value that matches no taint: tolerates nothing.
        3 => toleration(
            Some("dedicated"),
            TolerationOperator::Equal,
            "web",
            Some(TaintEffect::NoSchedule),
        ),
        4 => toleration(None, TolerationOperator::Exists, "", None),
        _ => toleration(Some("dedicated"), TolerationOperator::Equal, "batch", None),
    }
}

fn generate_workloads(rng: &mut Rng, shape: &Shape, clusters: &[Cluster]) -> Vec<Workload> {
    let policy_namespaces = policy_namespace_count(shape);
    (0..shape.workloads)
        .map(|index| {
            let namespace = if rng.chance(shape.policy_share) {
                POLICY_NAMESPACES[rng.below(policy_namespaces as u64) as usize]
            } else {
                *rng.pick(&FREE_NAMESPACES)
            };
            let tier = *rng.pick(&TIERS);
            let name = format!("{tier}-{index}");
            // Cpu-heavy, memory-heavy or balanced: with independently varying prices the
            // cheapest cluster depends on which.
            let (cpu_millis, memory_bytes) = match rng.below(3) {
                0 => (rng.range(20, 80) * 50, rng.range(8, 32) * 64 * MIB),
                1 => (rng.range(2, 10) * 50, rng.range(64, 256) * 64 * MIB),
                _ => (rng.range(5, 40) * 50, rng.range(16, 64) * 64 * MIB),
            };
            // Small counts more often, as in real deployments.
            let replicas = if rng.chance(0.5) {
                rng.range(1, u64::from(shape.max_replicas.min(3))) as u32
            } else {
                rng.range(1, u64::from(shape.max_replicas)) as u32
            };
            let mut tolerations = Vec::new();
            if rng.chance(shape.toleration_share) {
                tolerations.push(random_toleration(rng, tier));
            }
            let mut workload_labels = labels(&[("tier", tier), ("app", &name)]);
            if rng.chance(0.3) {
                workload_labels.insert("team".into(), rng.pick(&["red", "blue"]).to_string());
            }
            Workload {
                namespace: namespace.into(),
                name,
                labels: workload_labels,
                replicas,
                resources: Resources::new(cpu_millis, memory_bytes),
                data_gib: if tier == "db" {
                    round_to(rng.uniform(1.0, 200.0), 1.0)
                } else {
                    0.0
                },
                tolerations,
                current_cluster: if rng.chance(0.3) {
                    Some(rng.pick(clusters).name.clone())
                } else {
                    None
                },
                current_clusters: Vec::new(),
            }
        })
        .collect()
}

fn policy_namespace_count(shape: &Shape) -> usize {
    shape.policy_namespaces.clamp(1, POLICY_NAMESPACES.len())
}

fn is_ready(cluster: &Cluster) -> bool {
    matches!(cluster.health, None | Some(Health::Ready))
}

/// Whether workload `w` (an index) may be placed on a cluster, capacity aside.
type Reach<'a> = dyn Fn(&Cluster, usize) -> bool + 'a;

/// Gives every cluster a capacity so that the demand is the drawn share of the usable
/// capacity of the `Ready` clusters. With `reach`, each `Ready` cluster's share is the
/// demand that can reach it: every workload's requests spread over the clusters it may
/// use, in proportion to their sizes.
fn size_clusters(
    rng: &mut Rng,
    shape: &Shape,
    clusters: &mut [Cluster],
    workloads: &[Workload],
    reach: Option<&Reach<'_>>,
) {
    let demand_cpu: f64 = workloads
        .iter()
        .map(|w| w.total_requests().cpu_millis as f64)
        .sum();
    let demand_memory: f64 = workloads
        .iter()
        .map(|w| w.total_requests().memory_bytes as f64)
        .sum();
    let tightness = rng.uniform(shape.tightness.0, shape.tightness.1);
    // Up to 16x between sizes, and up to 2x either way between the cpu and memory
    // proportions, so that a cluster can be roomy in one and tight in the other.
    let weights: Vec<(f64, f64)> = clusters
        .iter()
        .map(|_| {
            let size = 2f64.powf(rng.uniform(0.0, 4.0));
            (size, size * 2f64.powf(rng.uniform(-1.0, 1.0)))
        })
        .collect();
    let ready = |i: usize| is_ready(&clusters[i]);
    let ready_cpu_weight: f64 = (0..clusters.len())
        .filter(|&i| ready(i))
        .map(|i| weights[i].0)
        .sum();
    let ready_memory_weight: f64 = (0..clusters.len())
        .filter(|&i| ready(i))
        .map(|i| weights[i].1)
        .sum();
    // Per cluster, the (cpu, memory) demand that can reach it, when asked for.
    let mut reached: Vec<Option<(f64, f64)>> = vec![None; clusters.len()];
    if let Some(reach) = reach {
        let mut reaching = vec![(0.0, 0.0); clusters.len()];
        for (w, workload) in workloads.iter().enumerate() {
            let targets: Vec<usize> = (0..clusters.len())
                .filter(|&c| reach(&clusters[c], w))
                .collect();
            let cpu_weight: f64 = targets.iter().map(|&c| weights[c].0).sum();
            let memory_weight: f64 = targets.iter().map(|&c| weights[c].1).sum();
            let requests = workload.total_requests();
            for &c in &targets {
                reaching[c].0 += requests.cpu_millis as f64 * weights[c].0 / cpu_weight;
                reaching[c].1 += requests.memory_bytes as f64 * weights[c].1 / memory_weight;
            }
        }
        for (c, demand) in reached.iter_mut().enumerate() {
            // A Ready cluster that nothing can reach keeps its size-based capacity.
            if ready(c) && reaching[c].0 > 0.0 {
                *demand = Some(reaching[c]);
            }
        }
    }
    let mut usable = Vec::with_capacity(clusters.len());
    for ((cpu_weight, memory_weight), reached) in weights.iter().zip(reached) {
        let (cpu, memory) = match reached {
            Some((cpu, memory)) => (cpu / tightness, memory / tightness),
            None => (
                demand_cpu / tightness * cpu_weight / ready_cpu_weight.max(1e-9),
                demand_memory / tightness * memory_weight / ready_memory_weight.max(1e-9),
            ),
        };
        // Rounding down keeps the drawn tightness a lower bound.
        usable.push((
            ((cpu / 500.0).floor() as u64).max(1) * 500,
            ((memory / GIB as f64).floor() as u64).max(1) * GIB,
        ));
    }
    for (cluster, (cpu, memory)) in clusters.iter_mut().zip(usable) {
        let reserved = if rng.chance(shape.reserved_share) {
            let share = rng.uniform(0.05, 0.25);
            Resources::new(
                round_to(cpu as f64 * share, 500.0) as u64,
                round_to(memory as f64 * share, GIB as f64) as u64,
            )
        } else {
            Resources::default()
        };
        cluster.reserved = reserved;
        cluster.capacity = Some(Resources::new(
            cpu + reserved.cpu_millis,
            memory + reserved.memory_bytes,
        ));
    }
}

fn expression(key: &str, operator: SelectorOperator) -> LabelExpression {
    LabelExpression {
        key: key.into(),
        operator,
    }
}

fn random_required(rng: &mut Rng) -> LabelSelector {
    let mut selector = LabelSelector::default();
    match rng.below(7) {
        0 => {
            selector.match_labels = labels(&[("residency", "eu")]);
        }
        1 => selector.match_expressions.push(expression(
            "provider",
            SelectorOperator::In(strings(&["openstack", "gke"])),
        )),
        2 => selector.match_expressions.push(expression(
            "region",
            SelectorOperator::NotIn(strings(&["us-west", "ap-south"])),
        )),
        3 => selector
            .match_expressions
            .push(expression("accelerator", SelectorOperator::Exists)),
        4 => {
            selector.match_labels = labels(&[("residency", "us")]);
            selector.match_expressions.push(expression(
                "provider",
                SelectorOperator::NotIn(strings(&["kubernetes"])),
            ));
        }
        5 => selector
            .match_expressions
            .push(expression("accelerator", SelectorOperator::DoesNotExist)),
        _ => {
            selector.match_expressions.push(expression(
                "residency",
                SelectorOperator::In(strings(&["eu", "us"])),
            ));
            selector.match_expressions.push(expression(
                "provider",
                SelectorOperator::NotIn(strings(&["openstack"])),
            ));
        }
    }
    selector
}

fn random_preferred(rng: &mut Rng) -> PreferredTerm {
    let mut selector = LabelSelector::default();
    match rng.below(4) {
        0 => selector.match_labels = labels(&[("provider", *rng.pick(&PROVIDERS))]),
        1 => selector.match_expressions.push(expression(
            "region",
            SelectorOperator::In(strings(&[rng.pick(&REGIONS).0, rng.pick(&REGIONS).0])),
        )),
        2 => selector.match_labels = labels(&[("residency", "eu")]),
        _ => selector
            .match_expressions
            .push(expression("accelerator", SelectorOperator::DoesNotExist)),
    }
    PreferredTerm {
        weight: rng.range(1, 100) as u32,
        selector,
    }
}

fn random_workload_selector(rng: &mut Rng, namespaces: Vec<String>) -> WorkloadSelector {
    let mut selector = WorkloadSelector {
        namespaces,
        labels: LabelSelector::default(),
    };
    match rng.below(6) {
        0 => selector.labels.match_expressions.push(expression(
            "tier",
            SelectorOperator::NotIn(strings(&["db"])),
        )),
        1 => selector
            .labels
            .match_expressions
            .push(expression("team", SelectorOperator::DoesNotExist)),
        _ => {}
    }
    selector
}

fn random_policy(
    rng: &mut Rng,
    shape: &Shape,
    clusters: &[Cluster],
    name: String,
    priority: i32,
    workload_selector: WorkloadSelector,
) -> PlacementPolicy {
    let required = if rng.chance(shape.required_share) {
        // A requirement no placeable cluster meets only makes the policy's workloads
        // unplaceable; allow that sometimes, not as a rule.
        (0..4)
            .map(|_| random_required(rng))
            .find(|s| clusters.iter().any(|c| is_ready(c) && s.matches(&c.labels)))
    } else {
        None
    };
    let preferred = (0..rng.below(3)).map(|_| random_preferred(rng)).collect();
    let spread = if rng.chance(shape.spread_share) {
        let min_clusters = rng.range(1, 2) as u32;
        let max_clusters = rng.range(
            u64::from(min_clusters.max(2)),
            u64::from(shape.max_spread.max(2)),
        ) as u32;
        Some(Spread {
            min_clusters,
            max_clusters,
        })
    } else {
        None
    };
    let objective = Objective {
        cost: if rng.chance(0.8) {
            1.0
        } else {
            *rng.pick(&[0.5, 2.0])
        },
        preference: *rng.pick(&[0.1, 0.1, 0.25, 0.5, 1.0]),
        stickiness: *rng.pick(&[0.0, 0.2]),
    };
    let rebalance = if rng.chance(0.5) {
        RebalanceRules::disabled()
    } else {
        RebalanceRules {
            enabled: true,
            min_savings_percent: *rng.pick(&[5.0, 10.0, 20.0]),
            payback_hours: *rng.pick(&[24.0, 168.0, 720.0]),
            cooldown_seconds: 3600,
            max_concurrent_migrations: rng.range(1, 3) as u32,
            windows: Vec::new(),
            automatic: true,
        }
    };
    PlacementPolicy {
        name,
        priority,
        workload_selector,
        required,
        preferred,
        spread,
        max_monthly_cost: None,
        objective,
        rebalance,
        capacity_on_demand: false,
    }
}

/// Policies without budgets: those depend on the workloads each one ends up governing.
fn generate_policies(rng: &mut Rng, shape: &Shape, clusters: &[Cluster]) -> Vec<PlacementPolicy> {
    let mut policies = Vec::new();
    for namespace in &POLICY_NAMESPACES[..policy_namespace_count(shape)] {
        let selector = random_workload_selector(rng, vec![namespace.to_string()]);
        // Equal priorities on purpose: namespaces are disjoint, which the spec allows.
        policies.push(random_policy(
            rng,
            shape,
            clusters,
            format!("ns-{namespace}"),
            100,
            selector,
        ));
    }
    let overrides = rng.range(0, shape.max_overrides as u64) as usize;
    for index in 0..overrides {
        let tier = *rng.pick(&TIERS);
        let namespaces = if rng.chance(0.5) {
            Vec::new()
        } else {
            let count = policy_namespace_count(shape);
            let mut chosen = vec![POLICY_NAMESPACES[rng.below(count as u64) as usize].to_string()];
            chosen.push(rng.pick(&FREE_NAMESPACES).to_string());
            chosen
        };
        let mut selector = WorkloadSelector {
            namespaces,
            labels: LabelSelector::default(),
        };
        if rng.chance(0.5) {
            selector.labels.match_labels = labels(&[("tier", tier)]);
        } else {
            selector.labels.match_expressions.push(expression(
                "tier",
                SelectorOperator::In(strings(&[tier, *rng.pick(&TIERS)])),
            ));
        }
        // Distinct priorities: overrides may overlap each other and the namespace
        // policies.
        policies.push(random_policy(
            rng,
            shape,
            clusters,
            format!("override-{tier}-{index}"),
            200 + 10 * index as i32,
            selector,
        ));
    }
    policies
}

/// The index of the policy that governs `workload`: the highest priority among those
/// that select it, the first on a tie (ties only happen between disjoint selectors).
fn governing(policies: &[PlacementPolicy], workload: &Workload) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (index, policy) in policies.iter().enumerate() {
        if policy.workload_selector.selects(workload)
            && best.is_none_or(|b| policy.priority > policies[b].priority)
        {
            best = Some(index);
        }
    }
    best
}

fn assign_budgets(
    rng: &mut Rng,
    shape: &Shape,
    clusters: &[Cluster],
    workloads: &[Workload],
    policies: &mut [PlacementPolicy],
) {
    let governor: Vec<Option<usize>> = workloads.iter().map(|w| governing(policies, w)).collect();
    // By index: the body reads the policy, then writes its budget back.
    #[allow(clippy::needless_range_loop)]
    for index in 0..policies.len() {
        let policy = &policies[index];
        let selected: Vec<usize> = (0..workloads.len())
            .filter(|&w| policy.workload_selector.selects(&workloads[w]))
            .collect();
        let governs_all = selected.iter().all(|&w| governor[w] == Some(index));
        if selected.is_empty() || !governs_all || !rng.chance(shape.budget_share) {
            continue;
        }
        // The cheapest the policy's workloads could cost if capacity were unlimited:
        // a budget around it sometimes forces pricier or fewer placements.
        let cheapest: f64 = selected
            .iter()
            .filter_map(|&w| {
                let workload = &workloads[w];
                clusters
                    .iter()
                    .filter(|c| passes_hard_filters(c, workload, Some(policy)))
                    .map(|c| c.pricing.monthly_cost(workload.total_requests()))
                    .min_by(f64::total_cmp)
            })
            .sum();
        if cheapest > 0.0 {
            policies[index].max_monthly_cost = Some(round_to(
                cheapest * rng.uniform(shape.budget_slack.0, shape.budget_slack.1),
                0.01,
            ));
        }
    }
}

/// The hard filters, capacity aside; `policy` is the governing one, `None` the default.
fn passes_hard_filters(
    cluster: &Cluster,
    workload: &Workload,
    policy: Option<&PlacementPolicy>,
) -> bool {
    is_ready(cluster)
        && cluster
            .taints
            .iter()
            .filter(|t| t.effect == TaintEffect::NoSchedule)
            .all(|t| workload.tolerations.iter().any(|tol| tol.tolerates(t)))
        && policy
            .and_then(|p| p.required.as_ref())
            .is_none_or(|required| required.matches(&cluster.labels))
}

/// How many clusters, workloads and policies of `instance` have each notable feature,
/// for summaries of what a suite covered.
pub fn describe(instance: &Instance) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::new();
    let mut bump = |key: &'static str, yes: bool| {
        *counts.entry(key).or_insert(0) += usize::from(yes);
    };
    for cluster in &instance.clusters {
        bump("clusters not ready", !is_ready(cluster));
        bump(
            "clusters with reserved",
            cluster.reserved != Resources::default(),
        );
        bump(
            "clusters with NoSchedule",
            cluster
                .taints
                .iter()
                .any(|t| t.effect == TaintEffect::NoSchedule),
        );
        bump(
            "clusters with PreferNoSchedule",
            cluster
                .taints
                .iter()
                .any(|t| t.effect == TaintEffect::PreferNoSchedule),
        );
    }
    for workload in &instance.workloads {
        bump(
            "workloads governed by a policy",
            governing(&instance.policies, workload).is_some(),
        );
        bump(
            "workloads with tolerations",
            !workload.tolerations.is_empty(),
        );
    }
    for policy in &instance.policies {
        bump("policies with required", policy.required.is_some());
        bump("policies with preferred", !policy.preferred.is_empty());
        bump("policies with spread", policy.spread.is_some());
        bump("policies with budget", policy.max_monthly_cost.is_some());
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shapes() -> Vec<Shape> {
        vec![
            Shape::optimality(5, 2),
            Shape::optimality(40, 8),
            Shape::scale(300, 12),
        ]
    }

    #[test]
    fn same_seed_same_instance() {
        for shape in shapes() {
            assert_eq!(random_instance(3, &shape), random_instance(3, &shape));
            assert_ne!(random_instance(3, &shape), random_instance(4, &shape));
        }
    }

    #[test]
    fn instances_keep_their_promises() {
        for shape in shapes() {
            for seed in 0..40 {
                let instance = random_instance(seed, &shape);
                assert_eq!(instance.workloads.len(), shape.workloads);
                assert_eq!(instance.clusters.len(), shape.clusters);
                let ready = instance.clusters.iter().filter(|c| is_ready(c)).count();
                assert!(2 * ready >= shape.clusters, "seed {seed}: {ready} ready");
                for cluster in &instance.clusters {
                    let capacity = cluster.capacity.expect("every cluster is sized");
                    assert!(cluster.reserved.cpu_millis < capacity.cpu_millis);
                    assert!(cluster.reserved.memory_bytes < capacity.memory_bytes);
                }
                let policies = &instance.policies;
                for workload in &instance.workloads {
                    assert!(workload.replicas >= 1);
                    // Equal priorities never overlap: the engine would refuse the input.
                    let selecting: Vec<i32> = policies
                        .iter()
                        .filter(|p| p.workload_selector.selects(workload))
                        .map(|p| p.priority)
                        .collect();
                    let mut distinct = selecting.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(distinct.len(), selecting.len(), "seed {seed}");
                }
                for (index, policy) in policies.iter().enumerate() {
                    if policy.max_monthly_cost.is_some() {
                        assert!(
                            instance
                                .workloads
                                .iter()
                                .filter(|w| policy.workload_selector.selects(w))
                                .all(|w| governing(policies, w) == Some(index)),
                            "seed {seed}: budget on {}, which shares its workloads",
                            policy.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fitted_instances_meet_spread_minimums() {
        let shape = Shape::scale(300, 12);
        for seed in 0..20 {
            let instance = random_instance(seed, &shape);
            for workload in &instance.workloads {
                if let Some(spread) = governing(&instance.policies, workload)
                    .and_then(|p| instance.policies[p].spread)
                {
                    assert!(workload.replicas >= spread.min_clusters, "seed {seed}");
                }
            }
        }
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut rng = Rng::new(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[rng.below(10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{counts:?}"
        );
        assert!((0..1000).all(|_| (0.0..1.0).contains(&rng.unit())));
    }
}
