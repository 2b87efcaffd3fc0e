//! The engine against the exact optimum. For seeded instances and a few hand-made ones,
//! an independent MIP (`optimality/mip.rs`, solved by HiGHS) finds the best fresh plan
//! under the semantics restated in `optimality/reference.rs`; the engine's plan must
//! keep every hard rule, place as many workloads, report the objective it reached, and
//! come within 1% of the optimal value. The whole table goes to stdout and to
//! `target/optimality-report.md` before anything is asserted, so that a failure shows
//! every instance.

// A crate root looks for modules beside itself; these live in a folder of their own so
// that `tests/` holds only test binaries.
#[path = "optimality/mip.rs"]
mod mip;
#[path = "optimality/reference.rs"]
mod reference;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use ferry_policies::engine::{Mode, Plan, plan};
use ferry_policies::model::{
    Cluster, Connection, Health, Objective, PlacementPolicy, PreferredTerm, Pricing, Provider,
    RebalanceRules, Spread, Taint, TaintEffect, Workload, WorkloadSelector,
};
use ferry_policies::quantity::Resources;
use ferry_policies::selector::LabelSelector;
use ferry_policies_testkit::{Instance, Shape, describe, random_instance};

use mip::Optimum;
use reference::{Assignment, Reference, monthly_cost};

/// Per MIP stage. The suite's instances solve in well under a second each; hitting this
/// means an instance is too large for the suite, not that the engine is wrong.
const MIP_TIME_LIMIT: f64 = 20.0;

/// Largest tolerated (engine value - optimal value) / optimal cost.
const MAX_GAP: f64 = 0.01;
/// Sizes (workloads, clusters), five seeds each: 60 instances.
const SIZES: [(usize, usize); 12] = [
    (5, 2),
    (6, 2),
    (8, 3),
    (10, 3),
    (12, 4),
    (15, 4),
    (18, 5),
    (20, 5),
    (25, 6),
    (30, 6),
    (35, 7),
    (40, 8),
];
const SEEDS_PER_SIZE: u64 = 5;

fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= relative * a.abs().max(b.abs()).max(1.0)
}

/// Money the plan reports may be rounded to cents for people; within half a cent of the
/// exact amount is right.
fn same_money(reported: f64, exact: f64) -> bool {
    (reported - exact).abs() <= 0.005 + 1e-9 * exact.abs()
}

/// The engine's plan as an assignment over the reference's indices, with every problem
/// of form found on the way (unknown names, wrong per-placement costs, workloads both
/// placed and unplaced or neither, totals that do not add up).
fn engine_assignment(
    instance: &Instance,
    reference: &Reference<'_>,
    plan: &Plan,
) -> (Assignment, Vec<String>) {
    let mut problems = Vec::new();
    let workload_index: HashMap<String, usize> = instance
        .workloads
        .iter()
        .enumerate()
        .map(|(i, w)| (w.key(), i))
        .collect();
    let cluster_index: HashMap<&str, usize> = instance
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let mut assignment: Assignment = vec![Vec::new(); instance.workloads.len()];
    let mut cost = 0.0;
    for placement in &plan.placements {
        let (Some(&w), Some(&c)) = (
            workload_index.get(&placement.workload),
            cluster_index.get(placement.cluster.as_str()),
        ) else {
            problems.push(format!(
                "placement of unknown {} on {}",
                placement.workload, placement.cluster
            ));
            continue;
        };
        let expected = monthly_cost(
            &instance.clusters[c],
            instance.workloads[w].resources,
            placement.replicas,
        );
        if !same_money(placement.monthly_cost, expected) {
            problems.push(format!(
                "{} on {}: monthly cost {} instead of {expected}",
                placement.workload, placement.cluster, placement.monthly_cost
            ));
        }
        cost += expected;
        assignment[w].push((c, placement.replicas));
    }
    let mut unplaced = vec![false; instance.workloads.len()];
    for entry in &plan.unplaced {
        match workload_index.get(&entry.workload) {
            Some(&w) => {
                if unplaced[w] {
                    problems.push(format!("{} listed twice as unplaced", entry.workload));
                }
                unplaced[w] = true;
            }
            None => problems.push(format!("unknown unplaced workload {}", entry.workload)),
        }
    }
    for (w, shares) in assignment.iter().enumerate() {
        match (shares.is_empty(), unplaced[w]) {
            (true, false) => problems.push(format!(
                "{} neither placed nor unplaced",
                reference.terms[w].key
            )),
            (false, true) => problems.push(format!(
                "{} both placed and unplaced",
                reference.terms[w].key
            )),
            _ => {}
        }
    }
    if !same_money(plan.total_monthly_cost, cost) {
        problems.push(format!(
            "total monthly cost {} but placements add up to {cost}",
            plan.total_monthly_cost
        ));
    }
    for shares in &mut assignment {
        shares.sort_unstable();
    }
    (assignment, problems)
}

/// One line of the report.
struct Row {
    seed: u64,
    workloads: usize,
    clusters: usize,
    engine_placed: Option<usize>,
    optimum: Option<Optimum>,
    engine_value: Option<f64>,
    gap: Option<f64>,
    engine_ms: f64,
    problems: Vec<String>,
    differences: Vec<String>,
}

/// What an instance says about the engine.
struct Evaluation {
    optimum: Option<Optimum>,
    /// Placed count and value of the engine's plan, when it keeps every rule.
    engine: Option<(usize, f64)>,
    engine_ms: f64,
    /// Everything that went wrong, gap aside.
    problems: Vec<String>,
    /// Per workload placed differently by the engine and the optimum, both sides.
    differences: Vec<String>,
}

fn evaluate(instance: &Instance) -> Evaluation {
    let reference = Reference::new(&instance.clusters, &instance.workloads, &instance.policies);
    let mut evaluation = Evaluation {
        optimum: None,
        engine: None,
        engine_ms: 0.0,
        problems: Vec::new(),
        differences: Vec::new(),
    };
    match mip::solve(&reference, MIP_TIME_LIMIT) {
        Ok(optimum) => evaluation.optimum = Some(optimum),
        Err(message) => evaluation.problems.push(format!("setup: {message}")),
    }
    let started = Instant::now();
    let planned = plan(&instance.snapshot(), Mode::Fresh);
    evaluation.engine_ms = started.elapsed().as_secs_f64() * 1e3;
    let plan = match planned {
        Ok(plan) => plan,
        Err(error) => {
            evaluation
                .problems
                .push(format!("engine refused the instance: {error}"));
            return evaluation;
        }
    };
    let problems = &mut evaluation.problems;
    if plan.mode != Mode::Fresh {
        problems.push(format!("plan in mode {}", plan.mode.as_str()));
    }
    if plan != plan_again(instance) {
        problems.push("two runs on the same input gave different plans".into());
    }
    let (assignment, form) = engine_assignment(instance, &reference, &plan);
    problems.extend(form);
    let totals = match reference.validate(&assignment) {
        Ok(totals) => totals,
        Err(broken) => {
            problems.extend(broken.into_iter().map(|p| format!("engine: {p}")));
            return evaluation;
        }
    };
    evaluation.engine = Some((totals.placed, totals.value));
    if !close(plan.objective, totals.value, 1e-6) {
        problems.push(format!(
            "engine reports objective {} but its placements are worth {}",
            plan.objective, totals.value
        ));
    }
    let Some(optimum) = &evaluation.optimum else {
        return evaluation;
    };
    let best = optimum.totals;
    if totals.placed < best.placed {
        problems.push(format!(
            "engine placed {} workloads, the optimum places {}",
            totals.placed, best.placed
        ));
    } else if totals.placed > best.placed {
        problems.push(format!(
            "engine placed {} valid workloads, more than the MIP's proven {} (MIP bug?)",
            totals.placed, best.placed
        ));
    } else if totals.value < best.value - 1e-6 * best.value.abs().max(best.cost).max(1.0) {
        problems.push(format!(
            "engine value {} beats the proven optimum {} (MIP bug?)",
            totals.value, best.value
        ));
    }
    evaluation.differences = differences(instance, &reference, &assignment, &optimum.assignment);
    evaluation
}

/// Per workload that the two assignments place differently: where each puts it and
/// what that is worth.
fn differences(
    instance: &Instance,
    reference: &Reference<'_>,
    engine: &Assignment,
    optimum: &Assignment,
) -> Vec<String> {
    let show = |terms: &reference::Terms, shares: &[(usize, u32)]| {
        if shares.is_empty() {
            return "unplaced".to_string();
        }
        let worth: f64 = shares
            .iter()
            .map(|&(c, r)| f64::from(r) * terms.replica_value[c])
            .sum();
        let places: Vec<String> = shares
            .iter()
            .map(|&(c, r)| format!("{}:{r}", instance.clusters[c].name))
            .collect();
        format!("{} (value {worth:.2})", places.join("+"))
    };
    reference
        .terms
        .iter()
        .zip(engine.iter().zip(optimum))
        .filter(|(_, (e, o))| e != o)
        .map(|(terms, (e, o))| {
            let governed = terms
                .policy
                .map_or("default".to_string(), |p| reference.policy_names[p].clone());
            let requests = terms.requests;
            format!(
                "{} [{governed}, {}x {}m/{}Mi]: engine {} / optimum {}",
                terms.key,
                terms.replicas,
                requests.cpu_millis,
                requests.memory_bytes >> 20,
                show(terms, e),
                show(terms, o)
            )
        })
        .collect()
}

fn plan_again(instance: &Instance) -> Plan {
    plan(&instance.snapshot(), Mode::Fresh).expect("the first run succeeded")
}

fn report_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("optimality-report.md")
}

fn cell<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "-".to_string(), show)
}

fn render(rows: &[Row], mix: &BTreeMap<&'static str, usize>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Engine vs exact optimum (fresh plans)\n");
    let _ = writeln!(
        out,
        "gap = (engine value - optimal value) / optimal monthly cost; placed = engine / optimum.\n"
    );
    let _ = writeln!(out, "Instance mix over the suite:");
    for (feature, count) in mix {
        let _ = writeln!(out, "- {feature}: {count}");
    }
    let _ = writeln!(
        out,
        "\n| seed | size | placed | optimal value | engine value | gap | MIP s | engine ms | problems |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        let optimum = row.optimum.as_ref();
        let _ = writeln!(
            out,
            "| {} | {}x{} | {} / {} | {} | {} | {} | {} | {:.1} | {} |",
            row.seed,
            row.workloads,
            row.clusters,
            cell(row.engine_placed, |p| p.to_string()),
            cell(optimum, |o| o.totals.placed.to_string()),
            cell(optimum, |o| format!("{:.2}", o.totals.value)),
            cell(row.engine_value, |v| format!("{v:.2}")),
            cell(row.gap, |g| format!("{:.3}%", g * 100.0)),
            cell(optimum, |o| format!("{:.2}", o.seconds)),
            row.engine_ms,
            row.problems.join("; ")
        );
    }
    let poor: Vec<&Row> = rows
        .iter()
        .filter(|r| r.gap.is_some_and(|g| g > MAX_GAP) || !r.problems.is_empty())
        .filter(|r| !r.differences.is_empty())
        .collect();
    if !poor.is_empty() {
        let _ = writeln!(
            out,
            "\n## Where the engine differs from the optimum\n\nOn the instances above with a gap over {}% or with problems, per workload placed differently (policy, replicas x per-replica requests):",
            MAX_GAP * 100.0
        );
        for row in poor {
            let _ = writeln!(
                out,
                "\nSeed {} ({}x{}):",
                row.seed, row.workloads, row.clusters
            );
            for line in &row.differences {
                let _ = writeln!(out, "- {line}");
            }
        }
    }
    let worst = rows
        .iter()
        .filter_map(|r| r.gap.map(|g| (g, r.seed)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mip_seconds: f64 = rows
        .iter()
        .filter_map(|r| r.optimum.as_ref().map(|o| o.seconds))
        .sum();
    let _ = writeln!(
        out,
        "\nWorst gap: {}; instances with problems: {}; MIP time in total: {mip_seconds:.1}s.",
        cell(worst, |(g, seed)| format!(
            "{:.3}% (seed {seed})",
            g * 100.0
        )),
        rows.iter().filter(|r| !r.problems.is_empty()).count()
    );
    out
}

#[test]
fn engine_is_within_one_percent_of_the_optimum() {
    let mut rows = Vec::new();
    let mut mix = BTreeMap::new();
    let mut seed = 1000;
    for (workloads, clusters) in SIZES {
        for _ in 0..SEEDS_PER_SIZE {
            seed += 1;
            let instance = random_instance(seed, &Shape::optimality(workloads, clusters));
            for (feature, count) in describe(&instance) {
                *mix.entry(feature).or_insert(0) += count;
            }
            let Evaluation {
                optimum,
                engine,
                engine_ms,
                problems,
                differences,
            } = evaluate(&instance);
            let gap = match (&optimum, engine) {
                (Some(optimum), Some((placed, value))) if placed == optimum.totals.placed => {
                    Some((value - optimum.totals.value) / optimum.totals.cost.max(1e-9))
                }
                _ => None,
            };
            rows.push(Row {
                seed,
                workloads,
                clusters,
                engine_placed: engine.map(|(placed, _)| placed),
                optimum,
                engine_value: engine.map(|(_, value)| value),
                gap,
                engine_ms,
                problems,
                differences,
            });
        }
    }
    let report = render(&rows, &mix);
    println!("{report}");
    let path = report_path();
    if let Err(error) = std::fs::write(&path, &report) {
        println!("could not write {}: {error}", path.display());
    }

    // Every instance must meet the target: the hard rules hold, as many workloads are
    // placed as in the optimum, and the gap is at most MAX_GAP. The one exception is named
    // below with the gap it has today, so that it cannot get worse unnoticed and its
    // entry goes as soon as the engine reaches the target there too.
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            let size = format!("seed {} ({}x{})", row.seed, row.workloads, row.clusters);
            let over = row
                .gap
                .filter(|&g| g > MAX_GAP)
                .map(|g| format!("{size}: gap {:.3}% over {:.3}%", g * 100.0, MAX_GAP * 100.0));
            row.problems
                .iter()
                .map(move |p| format!("{size}: {p}"))
                .chain(over)
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// Hand-made instances whose optimum follows from reasoning. Each is checked against both
// the MIP (which validates the formulation) and the engine.

fn cluster(name: &str, cpu_core_hour: f64, cores: u64) -> Cluster {
    Cluster {
        name: name.into(),
        labels: [("name".to_string(), name.to_string())].into(),
        provider: Provider::Sim,
        connection: Connection::Sim,
        pricing: Pricing {
            currency: "USD".into(),
            cpu_core_hour,
            // Free memory keeps the arithmetic of the expected costs to cpu.
            memory_gib_hour: 0.0,
            egress_gib: 0.0,
        },
        capacity: Some(Resources::new(cores * 1000, 64 << 30)),
        reserved: Resources::default(),
        taints: Vec::new(),
        health: Some(Health::Ready),
        scope: Default::default(),
        overrides: Default::default(),
    }
}

fn workload(namespace: &str, name: &str, replicas: u32, cores: u64) -> Workload {
    Workload {
        namespace: namespace.into(),
        name: name.into(),
        labels: Default::default(),
        replicas,
        resources: Resources::new(cores * 1000, 1 << 30),
        data_gib: 0.0,
        tolerations: Vec::new(),
        current_cluster: None,
        current_clusters: Vec::new(),
    }
}

fn policy(name: &str, namespace: &str) -> PlacementPolicy {
    PlacementPolicy {
        name: name.into(),
        priority: 100,
        workload_selector: WorkloadSelector {
            namespaces: vec![namespace.into()],
            labels: LabelSelector::default(),
        },
        required: None,
        preferred: Vec::new(),
        spread: None,
        max_monthly_cost: None,
        objective: Objective::DEFAULT,
        rebalance: RebalanceRules::disabled(),
        capacity_on_demand: false,
    }
}

/// Checks that the MIP and the engine both find `expected` (per workload, in input
/// order: the clusters and replica counts of its shares), worth `value`.
fn check_known(instance: &Instance, expected: &[&[(&str, u32)]], value: f64) {
    let reference = Reference::new(&instance.clusters, &instance.workloads, &instance.policies);
    let index = |name: &str| {
        instance
            .clusters
            .iter()
            .position(|c| c.name == name)
            .expect("a cluster of the instance")
    };
    let mut expected: Assignment = expected
        .iter()
        .map(|shares| shares.iter().map(|&(c, r)| (index(c), r)).collect())
        .collect();
    for shares in &mut expected {
        shares.sort_unstable();
    }
    let totals = reference
        .validate(&expected)
        .expect("the expected assignment keeps every rule");
    assert!(
        close(totals.value, value, 1e-9),
        "expected assignment is worth {}, not {value}",
        totals.value
    );

    let optimum = mip::solve(&reference, MIP_TIME_LIMIT).expect("the MIP solves");
    assert_eq!(optimum.assignment, expected, "MIP assignment");
    assert!(
        close(optimum.totals.value, value, 1e-6),
        "MIP value {}, expected {value}",
        optimum.totals.value
    );

    let plan = plan(&instance.snapshot(), Mode::Fresh).expect("the engine plans");
    let (assignment, problems) = engine_assignment(instance, &reference, &plan);
    assert!(problems.is_empty(), "engine plan: {problems:?}");
    assert_eq!(assignment, expected, "engine assignment");
    assert!(
        close(plan.objective, value, 1e-6),
        "engine objective {}, expected {value}",
        plan.objective
    );
}

/// 730 hours times cores times price: the monthly cost of the hand-made workloads.
fn month(cores: f64, price: f64) -> f64 {
    cores * price * 730.0
}

#[test]
fn cheapest_first_greedy_is_not_optimal() {
    // `cheap` holds one of the two, not both. Taking `small` there first (input order,
    // cheapest cluster) leaves `big` on `pricey`; the optimum gives `cheap` to `big`,
    // whose saving there is larger.
    let instance = Instance {
        clusters: vec![cluster("cheap", 0.02, 3), cluster("pricey", 0.03, 5)],
        workloads: vec![workload("a", "small", 1, 2), workload("a", "big", 1, 3)],
        policies: Vec::new(),
    };
    let value = month(3.0, 0.02) + month(2.0, 0.03);
    check_known(&instance, &[&[("pricey", 1)], &[("cheap", 1)]], value);
}

#[test]
fn budget_forces_the_pricier_option() {
    // Without the budget, `big` takes `cheap` (saving 29.2 against 14.6) and `capped`
    // goes to `pricey`. But `capped` on `pricey` costs 43.8, over its budget of 30: the
    // only way to place both is `capped` on `cheap` and `big` on the pricier cluster.
    let mut capped = policy("capped", "capped");
    capped.max_monthly_cost = Some(30.0);
    let mut instance = Instance {
        clusters: vec![cluster("cheap", 0.02, 4), cluster("pricey", 0.03, 10)],
        workloads: vec![
            workload("capped", "job", 1, 2),
            workload("free", "big", 1, 4),
        ],
        policies: vec![capped],
    };
    let value = month(2.0, 0.02) + month(4.0, 0.03);
    check_known(&instance, &[&[("cheap", 1)], &[("pricey", 1)]], value);

    instance.policies[0].max_monthly_cost = None;
    let value = month(2.0, 0.03) + month(4.0, 0.02);
    check_known(&instance, &[&[("pricey", 1)], &[("cheap", 1)]], value);
}

#[test]
fn capacity_forces_the_widest_spread() {
    // Six replicas of one core, spread over 1 to 3 clusters; no cluster holds more than
    // two, so only k = 3 with 2 + 2 + 2 fits, even though one cluster would be cheaper.
    let mut spread = policy("spread", "s");
    spread.spread = Some(Spread {
        min_clusters: 1,
        max_clusters: 3,
    });
    let instance = Instance {
        clusters: vec![
            cluster("one", 0.01, 2),
            cluster("two", 0.02, 2),
            cluster("three", 0.03, 2),
            // Untolerated NoSchedule: excluded, though it is the only cluster that
            // would hold everything.
            Cluster {
                taints: vec![Taint {
                    key: "dedicated".into(),
                    value: "gpu".into(),
                    effect: TaintEffect::NoSchedule,
                }],
                ..cluster("tainted", 0.001, 100)
            },
        ],
        workloads: vec![workload("s", "web", 6, 1)],
        policies: vec![spread],
    };
    let value = month(2.0, 0.01) + month(2.0, 0.02) + month(2.0, 0.03);
    check_known(&instance, &[&[("one", 2), ("two", 2), ("three", 2)]], value);
}

#[test]
fn uneven_spread_puts_the_larger_share_on_the_cheaper_cluster() {
    // Five replicas over exactly two clusters: shares 3 and 2, and the 3 goes where it
    // is cheaper.
    let mut spread = policy("spread", "s");
    spread.spread = Some(Spread {
        min_clusters: 2,
        max_clusters: 2,
    });
    let instance = Instance {
        clusters: vec![
            cluster("dear", 0.03, 10),
            cluster("cheap", 0.01, 10),
            Cluster {
                health: Some(Health::Unreachable),
                ..cluster("down", 0.001, 10)
            },
        ],
        workloads: vec![workload("s", "api", 5, 1)],
        policies: vec![spread],
    };
    let value = month(3.0, 0.01) + month(2.0, 0.03);
    check_known(&instance, &[&[("dear", 2), ("cheap", 3)]], value);
}

#[test]
fn soft_terms_move_the_choice() {
    // `spotty` is 20% cheaper but has an untolerated PreferNoSchedule taint, which costs
    // half the reference (the cheapest cost): 29.2 + 14.6 against 36.5 elsewhere.
    let spotty = Cluster {
        taints: vec![Taint {
            key: "spot".into(),
            value: "true".into(),
            effect: TaintEffect::PreferNoSchedule,
        }],
        ..cluster("spotty", 0.02, 8)
    };
    let mut instance = Instance {
        clusters: vec![spotty, cluster("steady", 0.025, 8)],
        workloads: vec![workload("p", "app", 1, 2)],
        policies: vec![policy("prefers-spot", "p")],
    };
    let reference_cost = month(2.0, 0.02);
    check_known(&instance, &[&[("steady", 1)]], month(2.0, 0.025));

    // A full-weight preference for `spotty` at objective weight 1 takes back a whole
    // reference cost: 29.2 + 14.6 - 29.2 against 36.5.
    instance.policies[0].preferred = vec![PreferredTerm {
        weight: 100,
        selector: LabelSelector {
            match_labels: [("name".to_string(), "spotty".to_string())].into(),
            match_expressions: Vec::new(),
        },
    }];
    instance.policies[0].objective.preference = 1.0;
    check_known(
        &instance,
        &[&[("spotty", 1)]],
        reference_cost + 0.5 * reference_cost - reference_cost,
    );
}
