//! The files under `examples/` are what a new user reads first: they must decode without
//! a single diagnostic and describe the federation the docs talk about.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ferry_adapter_files::{Loaded, load};

/// `examples/` at the root of the repository.
fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// The example files, read the way `ferry plan -f examples/` reads them.
fn load_examples() -> Loaded {
    let dir = examples_dir();
    load(std::slice::from_ref(&dir)).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

#[test]
fn examples_decode_without_diagnostics() {
    let Loaded {
        resources: set,
        diagnostics,
        files,
    } = load_examples();
    assert!(
        !files.is_empty(),
        "no YAML files under {}",
        examples_dir().display()
    );
    let shown: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        shown.is_empty(),
        "diagnostics in examples/:\n{}",
        shown.join("\n")
    );

    assert_eq!(set.clusters.len(), 3, "clusters");
    assert_eq!(set.workloads.len(), 20, "workloads");
    assert_eq!(set.policies.len(), 5, "policies");
    let namespaces: BTreeSet<&str> = set
        .workloads
        .iter()
        .map(|w| w.value.namespace.as_str())
        .collect();
    assert_eq!(
        namespaces,
        BTreeSet::from(["analytics", "batch", "payments", "shop"])
    );
}

#[test]
fn no_two_policies_of_equal_priority_select_the_same_workload() {
    let set = load_examples().resources;
    for workload in &set.workloads {
        let selecting: Vec<_> = set
            .policies
            .iter()
            .map(|p| &p.value)
            .filter(|p| p.workload_selector.selects(&workload.value))
            .collect();
        for (i, a) in selecting.iter().enumerate() {
            for b in &selecting[i + 1..] {
                assert_ne!(
                    a.priority,
                    b.priority,
                    "`{}` and `{}` both select {} with priority {}",
                    a.name,
                    b.name,
                    workload.value.key(),
                    a.priority
                );
            }
        }
    }
}

/// The story the examples and `docs/policies.md` tell: everything can be placed, and a
/// rebalance plan moves `batch/render` out of the most expensive cluster.
#[test]
fn examples_place_everything_and_rebalance_moves_render() {
    use ferry_policies::engine::{Mode, Snapshot, plan};
    let set = load_examples().resources;
    let clusters: Vec<_> = set.clusters.iter().map(|c| c.value.clone()).collect();
    let workloads: Vec<_> = set.workloads.iter().map(|w| w.value.clone()).collect();
    let policies: Vec<_> = set.policies.iter().map(|p| p.value.clone()).collect();
    let snapshot = Snapshot {
        clusters: &clusters,
        workloads: &workloads,
        policies: &policies,
    };
    for mode in [Mode::Fresh, Mode::Rebalance] {
        let plan = plan(&snapshot, mode).unwrap_or_else(|e| panic!("{} plan: {e}", mode.as_str()));
        assert_eq!(
            plan.unplaced,
            vec![],
            "{} plan leaves workloads unplaced",
            mode.as_str()
        );
        if mode == Mode::Rebalance {
            assert!(
                plan.moves.iter().any(|m| m.workload == "batch/render"
                    && m.from == "gke-europe-west1"
                    && m.to == "openstack-dc1"),
                "rebalance moves: {:?}",
                plan.moves
            );
        }
    }
}
