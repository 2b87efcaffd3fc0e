//! Placement engine behaviour, case by case. Each case is a small federation written as
//! resource YAML and the placements, unplaced reasons or moves it must produce.

use ferry_policies::engine::{
    BrokenRule, Mode, Plan, PlanError, Snapshot, hard_rule_against, plan,
};
use ferry_policies::resources::{ResourceSet, check_references};

/// A cluster document; `extra` is spliced into its spec.
fn cluster(name: &str, labels: &str, cpu_price: f64, capacity_cpu: &str, extra: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n\
         spec:\n  provider: sim\n  pricing: {{cpuCoreHour: {cpu_price}, memoryGiBHour: 0.0, egressGiB: 0.1}}\n  \
         capacity: {{cpu: \"{capacity_cpu}\", memory: 1Ti}}\n{extra}---\n"
    )
}

fn workload(namespace: &str, name: &str, replicas: u32, cpu: &str, extra: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}\n\
         spec:\n  replicas: {replicas}\n  resources: {{cpu: \"{cpu}\", memory: 1Gi}}\n{extra}---\n"
    )
}

fn plan_yaml(yaml: &str, mode: Mode) -> Result<Plan, PlanError> {
    let mut set = ResourceSet::default();
    let diagnostics = set.add_source("case.yaml", yaml);
    assert_eq!(diagnostics, vec![], "fixture must be valid:\n{yaml}");
    assert_eq!(check_references(&set), vec![]);
    let clusters: Vec<_> = set.clusters.into_iter().map(|c| c.value).collect();
    let workloads: Vec<_> = set.workloads.into_iter().map(|w| w.value).collect();
    let policies: Vec<_> = set.policies.into_iter().map(|p| p.value).collect();
    plan(
        &Snapshot {
            clusters: &clusters,
            workloads: &workloads,
            policies: &policies,
        },
        mode,
    )
}

/// As [`plan_yaml`], for fixtures that the checks across documents refuse (a policy
/// conflict), to see what the engine makes of them.
fn plan_unchecked(yaml: &str, mode: Mode) -> Result<Plan, PlanError> {
    let mut set = ResourceSet::default();
    assert_eq!(
        set.add_source("case.yaml", yaml),
        vec![],
        "fixture must be valid:\n{yaml}"
    );
    let clusters: Vec<_> = set.clusters.into_iter().map(|c| c.value).collect();
    let workloads: Vec<_> = set.workloads.into_iter().map(|w| w.value).collect();
    let policies: Vec<_> = set.policies.into_iter().map(|p| p.value).collect();
    plan(
        &Snapshot {
            clusters: &clusters,
            workloads: &workloads,
            policies: &policies,
        },
        mode,
    )
}

/// `workload -> cluster xreplicas`, one line per placement.
fn placements(plan: &Plan) -> Vec<String> {
    plan.placements
        .iter()
        .map(|p| format!("{} -> {} x{}", p.workload, p.cluster, p.replicas))
        .collect()
}

#[test]
fn cheapest_first_greedy_is_not_enough() {
    // The cheap cluster fits one of the two workloads. Greedy puts the big one there
    // (it saves the most per workload) only if it also saves the most overall: here the
    // two small ones together save more than the big one.
    let yaml = [
        cluster("cheap", "tier: a", 0.01, "8", ""),
        cluster("dear", "tier: b", 0.05, "64", ""),
        workload("w", "big", 1, "6", ""),
        workload("w", "small-a", 1, "4", ""),
        workload("w", "small-b", 1, "4", ""),
    ]
    .concat();
    let plan = plan_yaml(&yaml, Mode::Fresh).expect("plans");
    assert_eq!(
        placements(&plan),
        [
            "w/big -> dear x1",
            "w/small-a -> cheap x1",
            "w/small-b -> cheap x1"
        ]
    );
    // 8 cores on cheap and 6 on dear: (8 * 0.01 + 6 * 0.05) * 730.
    assert!(
        (plan.total_monthly_cost - 277.4).abs() < 0.01,
        "{}",
        plan.total_monthly_cost
    );
}

#[test]
fn hard_rules_exclude_clusters_with_the_first_failing_reason() {
    let yaml = [
        cluster("down", "residency: eu", 0.01, "64", "status: {health: Unreachable}\n"),
        cluster("tainted", "residency: eu", 0.01, "64", "  taints: [{key: gpu, value: \"yes\", effect: NoSchedule}]\n"),
        cluster("us", "residency: us", 0.01, "64", ""),
        cluster("small", "residency: eu", 0.01, "10", "  reserved: {cpu: \"6\"}\n"),
        workload("shop", "web", 2, "3", ""),
        "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {name: eu}\nspec:\n  clusterAffinity: {required: {matchLabels: {residency: eu}}}\n".to_owned(),
    ]
    .concat();
    let plan = plan_yaml(&yaml, Mode::Fresh).expect("plans");
    assert_eq!(placements(&plan), Vec::<String>::new());
    let reasons: Vec<String> = plan.unplaced[0]
        .reasons
        .iter()
        .map(|(c, r)| format!("{c}: {r}"))
        .collect();
    assert_eq!(
        reasons,
        [
            "down: health: cluster is Unreachable",
            "small: capacity: cpu 6 > 4 free",
            "tainted: taint: gpu=yes:NoSchedule not tolerated",
            "us: required affinity residency=eu",
        ]
    );
}

#[test]
fn a_move_is_judged_against_the_hard_rules_of_its_governing_policy() {
    let yaml = [
        cluster("down", "residency: eu", 0.01, "64", "status: {health: Unreachable}\n"),
        cluster("tainted", "residency: eu", 0.01, "64", "  taints: [{key: gpu, value: \"yes\", effect: NoSchedule}]\n"),
        cluster("us", "residency: us", 0.01, "64", ""),
        cluster("eu", "residency: eu", 0.01, "64", ""),
        workload("shop", "web", 2, "3", ""),
        workload("batch", "job", 1, "1", ""),
        "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {name: eu}\nspec:\n  workloadSelector: {namespaces: [shop]}\n  clusterAffinity: {required: {matchLabels: {residency: eu}}}\n".to_owned(),
    ]
    .concat();
    let mut set = ResourceSet::default();
    assert_eq!(set.add_source("case.yaml", &yaml), vec![]);
    let clusters: Vec<_> = set.clusters.into_iter().map(|c| c.value).collect();
    let workloads: Vec<_> = set.workloads.into_iter().map(|w| w.value).collect();
    let policies: Vec<_> = set.policies.into_iter().map(|p| p.value).collect();
    let snapshot = Snapshot {
        clusters: &clusters,
        workloads: &workloads,
        policies: &policies,
    };
    let broken = |workload: &str, cluster: &str| {
        hard_rule_against(&snapshot, workload, cluster)
            .expect("no conflict")
            .map(|BrokenRule { policy, rule }| format!("{policy}: {rule}"))
    };
    let cases = [
        ("shop/web", "eu", None),
        ("shop/web", "us", Some("eu: required affinity residency=eu")),
        (
            "shop/web",
            "tainted",
            Some("eu: taint: gpu=yes:NoSchedule not tolerated"),
        ),
        // Health is the move's own check, not a rule it breaks.
        ("shop/web", "down", None),
        ("batch/job", "us", None),
        (
            "batch/job",
            "tainted",
            Some("the built-in default: taint: gpu=yes:NoSchedule not tolerated"),
        ),
        ("shop/nothing", "us", None),
        ("shop/web", "nowhere", None),
    ];
    for (workload, cluster, expected) in cases {
        assert_eq!(
            broken(workload, cluster).as_deref(),
            expected,
            "{workload} -> {cluster}"
        );
    }
}

#[test]
fn a_placement_names_the_cheaper_clusters_a_hard_rule_excludes() {
    let yaml = [
        cluster(
            "down",
            "residency: eu",
            0.01,
            "64",
            "status: {health: Unreachable}\n",
        ),
        cluster(
            "tainted",
            "residency: eu",
            0.02,
            "64",
            "  taints: [{key: gpu, value: \"yes\", effect: NoSchedule}]\n",
        ),
        cluster("us", "residency: us", 0.03, "64", ""),
        cluster("eu", "residency: eu", 0.05, "64", ""),
        cluster("dearer", "residency: us", 0.09, "64", ""),
        workload("shop", "web", 1, "1", ""),
    ]
    .concat();
    let plan = plan_yaml(&yaml, Mode::Fresh).expect("plans");
    assert_eq!(placements(&plan), ["shop/web -> us x1"]);
    let reasons = &plan.placements[0].reasons;
    assert!(
        reasons.contains(&"cheaper down excluded: health: cluster is Unreachable".to_owned())
            && reasons.contains(
                &"cheaper tainted excluded: taint: gpu=yes:NoSchedule not tolerated".to_owned()
            ),
        "{reasons:?}"
    );

    // With residency required, three cheaper clusters are excluded: two named, one counted.
    let policy = "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {name: eu}\nspec:\n  clusterAffinity: {required: {matchLabels: {residency: eu}}}\n";
    let plan = plan_yaml(&format!("{yaml}{policy}"), Mode::Fresh).expect("plans");
    assert_eq!(placements(&plan), ["shop/web -> eu x1"]);
    let excluded: Vec<&String> = plan.placements[0]
        .reasons
        .iter()
        .filter(|r| r.contains("excluded"))
        .collect();
    assert_eq!(
        excluded,
        [
            "cheaper down excluded: health: cluster is Unreachable",
            "cheaper tainted excluded: taint: gpu=yes:NoSchedule not tolerated",
            "1 more cheaper cluster excluded by hard rules",
        ]
    );
}

#[test]
fn tolerations_open_tainted_clusters() {
    let yaml = [
        cluster(
            "tainted",
            "",
            0.01,
            "64",
            "  taints: [{key: gpu, value: \"yes\", effect: NoSchedule}]\n",
        ),
        cluster("plain", "", 0.05, "64", ""),
        workload(
            "ml",
            "train",
            1,
            "8",
            "  tolerations: [{key: gpu, operator: Equal, value: \"yes\", effect: NoSchedule}]\n",
        ),
        workload("ml", "serve", 1, "8", ""),
    ]
    .concat();
    let plan = plan_yaml(&yaml, Mode::Fresh).expect("plans");
    assert_eq!(
        placements(&plan),
        ["ml/serve -> plain x1", "ml/train -> tainted x1"]
    );
}

#[test]
fn budget_caps_what_a_policy_places() {
    // Each workload costs 0.05 * 4 * 730 = 146/month; the budget allows two of three.
    let policy = "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {name: capped}\nspec:\n  budget: {maxMonthlyCost: 300}\n";
    let yaml = [
        cluster("only", "", 0.05, "64", ""),
        workload("a", "one", 1, "4", ""),
        workload("a", "two", 1, "4", ""),
        workload("a", "three", 1, "4", ""),
        policy.to_owned(),
    ]
    .concat();
    let plan = plan_yaml(&yaml, Mode::Fresh).expect("plans");
    assert_eq!(plan.placements.len(), 2);
    assert_eq!(plan.unplaced.len(), 1);
    let reason = &plan.unplaced[0].reasons["only"];
    assert_eq!(
        reason,
        "budget: policy capped has 8.00 of 300.00 left, needs 146.00"
    );
}

#[test]
fn spread_divides_replicas_over_the_cheapest_allowed_number_of_clusters() {
    let spread = |min: u32, max: u32| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: spread}}\nspec:\n  spread: {{minClusters: {min}, maxClusters: {max}}}\n"
        )
    };
    let clusters = [
        cluster("a", "", 0.01, "64", ""),
        cluster("b", "", 0.02, "64", ""),
        cluster("c", "", 0.03, "64", ""),
    ]
    .concat();
    let even = format!(
        "{clusters}{}{}",
        workload("web", "front", 5, "1", ""),
        spread(2, 3)
    );
    let plan = plan_yaml(&even, Mode::Fresh).expect("plans");
    assert_eq!(
        placements(&plan),
        ["web/front -> a x3", "web/front -> b x2"]
    );

    // a and b have room for two replicas each. Two shares (3+2) cost 3c + 2a = 0.11 an
    // hour; three (2+2+1) cost 2a + 2b + 1c = 0.09: the wider spread is cheaper here.
    let tight = format!(
        "{}{}{}{}",
        cluster("a", "", 0.01, "2", ""),
        cluster("b", "", 0.02, "2", ""),
        cluster("c", "", 0.03, "64", ""),
        workload("web", "front", 5, "1", "")
    );
    let plan = plan_yaml(&format!("{tight}{}", spread(2, 3)), Mode::Fresh).expect("plans");
    assert_eq!(
        placements(&plan),
        [
            "web/front -> a x2",
            "web/front -> b x2",
            "web/front -> c x1"
        ]
    );

    let one_replica = format!(
        "{clusters}{}{}",
        workload("web", "solo", 1, "1", ""),
        spread(2, 2)
    );
    let plan = plan_yaml(&one_replica, Mode::Fresh).expect("plans");
    assert_eq!(
        plan.unplaced[0].reasons["a"],
        "spread: 1 replicas cannot be divided over 2 clusters"
    );
}

#[test]
fn preference_pays_up_to_its_weight() {
    // `preferred` is 20% dearer. A preference weight of 0.3 at full weight pays for it;
    // 0.1 does not.
    let policy = |weight: f64| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: p}}\nspec:\n  clusterAffinity:\n    preferred: [{{weight: 100, matchLabels: {{kind: preferred}}}}]\n  objective: {{preference: {weight}}}\n"
        )
    };
    let base = [
        cluster("cheap", "kind: other", 0.05, "64", ""),
        cluster("preferred", "kind: preferred", 0.06, "64", ""),
        workload("a", "app", 1, "1", ""),
    ]
    .concat();
    let strong = plan_yaml(&format!("{base}{}", policy(0.3)), Mode::Fresh).expect("plans");
    assert_eq!(placements(&strong), ["a/app -> preferred x1"]);
    assert!(
        strong.placements[0]
            .reasons
            .iter()
            .any(|r| r == "preferred over cheaper cheap"),
        "{:?}",
        strong.placements[0].reasons
    );
    let weak = plan_yaml(&format!("{base}{}", policy(0.1)), Mode::Fresh).expect("plans");
    assert_eq!(placements(&weak), ["a/app -> cheap x1"]);
}

#[test]
fn policy_priority_and_conflicts() {
    let policy = |name: &str, priority: i32| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: {name}}}\nspec:\n  priority: {priority}\n  workloadSelector: {{namespaces: [a]}}\n---\n"
        )
    };
    let base = [
        cluster("c", "", 0.05, "64", ""),
        workload("a", "app", 1, "1", ""),
    ]
    .concat();
    let plan = plan_unchecked(
        &format!(
            "{base}{}{}{}",
            policy("one", 5),
            policy("two", 5),
            policy("top", 9)
        ),
        Mode::Fresh,
    )
    .expect("top wins");
    assert_eq!(plan.placements[0].reasons[0], "policy top");
    assert_eq!(plan.held, vec![]);
}

#[test]
fn a_conflict_holds_only_its_workloads() {
    // `one` and `two` tie over namespace `a`; `b` has its own policy and `c` none. The
    // cheap cluster has room for 8 cores, 6 of which `a/app` uses now.
    let policy = |name: &str, namespace: &str| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: {name}}}\nspec:\n  priority: 5\n  workloadSelector: {{namespaces: [{namespace}]}}\n---\n"
        )
    };
    let yaml = [
        cluster("cheap", "", 0.01, "8", ""),
        cluster("dear", "", 0.05, "64", "status: {health: Unreachable}\n"),
        cluster("spare", "", 0.08, "64", ""),
        workload("a", "app", 1, "6", "status: {cluster: cheap}\n"),
        workload("b", "job", 1, "4", "status: {cluster: dear}\n"),
        workload("c", "web", 1, "1", ""),
        policy("one", "a"),
        policy("two", "a"),
        policy("bee", "b"),
    ]
    .concat();
    let plan = plan_unchecked(&yaml, Mode::Rebalance).expect("a conflict does not stop the plan");
    let reason = "policies `one` and `two` both select workload `a/app` with priority 5; give one a higher priority or narrow a selector";
    assert_eq!(
        plan.held
            .iter()
            .map(|h| (h.workload.as_str(), h.reason.as_str()))
            .collect::<Vec<_>>(),
        [("a/app", reason)]
    );
    assert_eq!(
        (
            plan.held[0].conflict.first.as_str(),
            plan.held[0].conflict.second.as_str()
        ),
        ("one", "two")
    );
    // The others are decided for: `b/job` is evacuated from the down cluster (to `spare`:
    // the 6 cores `a/app` holds on `cheap` stay its), `c/web` is placed new on `cheap`.
    assert_eq!(
        placements(&plan),
        ["b/job -> spare x1", "c/web -> cheap x1"]
    );
    assert_eq!(
        plan.moves
            .iter()
            .map(|m| format!("{} {} -> {}", m.workload, m.from, m.to))
            .collect::<Vec<_>>(),
        ["b/job dear -> spare"]
    );
    assert!(plan.unplaced.is_empty(), "{:?}", plan.unplaced);
    // The files say so with both policies' locations.
    let mut set = ResourceSet::default();
    assert_eq!(set.add_source("case.yaml", &yaml), vec![]);
    let errors: Vec<String> = check_references(&set)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "case.yaml:60:13: spec.priority: policy `two` and policy `one` (at case.yaml:53:13) both have priority 5 and both select workload `a/app`; give one a higher priority or narrow a selector"
        ]
    );
}

/// Spread workloads that run spread now, as the broker sees them on its clusters: their
/// shares stay where they are, and the plan says so without a move.
#[test]
fn a_workload_spread_now_keeps_its_shares() {
    let spread = "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {name: wide}\nspec:\n  workloadSelector: {namespaces: [w]}\n  spread: {minClusters: 2}\n---\n";
    let yaml = [
        cluster("x", "", 0.01, "64", ""),
        cluster("y", "", 0.02, "64", ""),
        cluster("z", "", 0.03, "64", ""),
        workload("w", "web", 3, "1", ""),
        spread.to_owned(),
    ]
    .concat();
    let mut set = ResourceSet::default();
    assert_eq!(set.add_source("case.yaml", &yaml), vec![]);
    let clusters: Vec<_> = set.clusters.into_iter().map(|c| c.value).collect();
    let mut workloads: Vec<_> = set.workloads.into_iter().map(|w| w.value).collect();
    let policies: Vec<_> = set.policies.into_iter().map(|p| p.value).collect();
    // Runs 2 on z and 1 on y: dearer than x and y, but its policy does not rebalance.
    workloads[0].current_cluster = Some("z".to_owned());
    workloads[0].current_clusters = vec!["z".to_owned(), "y".to_owned()];
    let snapshot = Snapshot {
        clusters: &clusters,
        workloads: &workloads,
        policies: &policies,
    };
    let kept = plan(&snapshot, Mode::Rebalance).expect("plans");
    assert_eq!(placements(&kept), ["w/web -> y x1", "w/web -> z x2"]);
    assert_eq!(kept.moves, vec![]);
    assert!(kept.placements.iter().all(|p| p.from.is_none()), "{kept:?}");
    // One of its clusters down: the share there moves, the other stays.
    let mut down = clusters.clone();
    down[2].health = Some(ferry_policies::model::Health::Unreachable);
    let snapshot = Snapshot {
        clusters: &down,
        ..snapshot
    };
    let evacuated = plan(&snapshot, Mode::Rebalance).expect("plans");
    assert!(
        evacuated.moves.iter().all(|m| m.from == "z" && m.to != "z"),
        "{:?}",
        evacuated.moves
    );
    assert!(!evacuated.moves.is_empty());
    assert!(evacuated.placements.iter().all(|p| p.cluster != "z"));
}

#[test]
fn the_same_input_gives_the_same_plan() {
    let mut yaml = String::new();
    for c in 0..6 {
        yaml += &cluster(
            &format!("c{c}"),
            "",
            0.01 + f64::from(c) * 0.007,
            &(8 + c * 3).to_string(),
            "",
        );
    }
    for w in 0..40 {
        yaml += &workload(
            "ns",
            &format!("w{w}"),
            1 + w % 3,
            &format!("{}m", 300 + (w * 137) % 2000),
            "",
        );
    }
    let first = plan_yaml(&yaml, Mode::Fresh).expect("plans");
    for _ in 0..3 {
        assert_eq!(plan_yaml(&yaml, Mode::Fresh).expect("plans"), first);
    }
}

fn rebalance_policy(rules: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: move}}\nspec:\n  rebalance: {{{rules}}}\n"
    )
}

#[test]
fn rebalance_moves_only_what_the_rules_allow() {
    let clusters = [
        cluster("cheap", "", 0.04, "64", ""),
        cluster("dear", "", 0.05, "64", ""),
    ]
    .concat();
    let running = workload(
        "a",
        "app",
        1,
        "4",
        "  dataGiB: 100\nstatus: {cluster: dear}\n",
    );
    // Savings are 20% of 146/month = 29.2/month; moving 100 GiB costs 10 (egress 0.1).
    let cases = [
        (
            "minSavingsPercent: 10, paybackHours: 500",
            Some("dear -> cheap"),
        ),
        ("minSavingsPercent: 25", None),
        ("minSavingsPercent: 10, paybackHours: 100", None),
        ("enabled: false", None),
    ];
    for (rules, expected) in cases {
        let plan = plan_yaml(
            &format!("{clusters}{running}{}", rebalance_policy(rules)),
            Mode::Rebalance,
        )
        .expect("plans");
        let moves: Vec<String> = plan
            .moves
            .iter()
            .map(|m| format!("{} -> {}", m.from, m.to))
            .collect();
        assert_eq!(
            moves,
            expected.into_iter().collect::<Vec<_>>(),
            "rules {rules}"
        );
        if let Some(m) = plan.moves.first() {
            assert_eq!((m.monthly_savings, m.migration_cost), (29.2, 10.0));
        }
    }
    let stays = plan_yaml(
        &format!(
            "{clusters}{running}{}",
            rebalance_policy("minSavingsPercent: 25")
        ),
        Mode::Rebalance,
    )
    .expect("plans");
    assert!(
        stays.placements[0]
            .reasons
            .iter()
            .any(|r| r == "stays: moving to cheap saves 20.0%, below minSavingsPercent 25"),
        "{:?}",
        stays.placements[0].reasons
    );
    // It stays because of the rules, not because the search left `cheap` to others.
    assert_eq!(
        stays.placements[0].reasons,
        [
            "policy move",
            "stays: moving to cheap saves 20.0%, below minSavingsPercent 25"
        ]
    );
}

#[test]
fn rebalance_evacuates_unhealthy_clusters_regardless_of_rules() {
    let yaml = [
        cluster("cheap", "", 0.04, "64", "status: {health: Unreachable}\n"),
        cluster("dear", "", 0.05, "64", ""),
        workload("a", "app", 2, "1", "status: {cluster: cheap}\n"),
    ]
    .concat();
    let plan = plan_yaml(&yaml, Mode::Rebalance).expect("plans");
    assert_eq!(placements(&plan), ["a/app -> dear x2"]);
    assert_eq!(plan.moves.len(), 1);
    assert!(
        plan.placements[0]
            .reasons
            .iter()
            .any(|r| r == "evacuate cheap: health: cluster is Unreachable"),
        "{:?}",
        plan.placements[0].reasons
    );
}

#[test]
fn rebalance_caps_concurrent_moves_per_policy() {
    let mut yaml = [
        cluster("cheap", "", 0.01, "64", ""),
        cluster("dear", "", 0.05, "64", ""),
    ]
    .concat();
    for name in ["a", "b", "c"] {
        yaml += &workload("ns", name, 1, "2", "status: {cluster: dear}\n");
    }
    yaml += &rebalance_policy("maxConcurrentMigrations: 2");
    let plan = plan_yaml(&yaml, Mode::Rebalance).expect("plans");
    assert_eq!(plan.moves.len(), 2);
    let fresh = plan_yaml(&yaml, Mode::Fresh).expect("plans");
    assert_eq!(
        fresh.moves.len(),
        3,
        "fresh planning ignores the rebalance rules"
    );
}
