//! The files under `examples/` are what a new user reads first: they must decode without
//! a single diagnostic and describe the federation the docs talk about.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use ferry_policies::resources::{ResourceSet, check_references};

/// Every `*.yaml` / `*.yml` file under `dir`, recursively, in a stable order.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn examples_decode_without_diagnostics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let files = yaml_files(&dir);
    assert!(!files.is_empty(), "no YAML files under {}", dir.display());

    let mut set = ResourceSet::default();
    let mut diagnostics = Vec::new();
    for path in &files {
        let text =
            fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let name = path
            .strip_prefix(&dir)
            .unwrap_or(path)
            .display()
            .to_string();
        diagnostics.extend(set.add_source(&name, &text));
    }
    diagnostics.extend(check_references(&set));
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut set = ResourceSet::default();
    for path in yaml_files(&dir) {
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        set.add_source(&path.display().to_string(), &text);
    }
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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut set = ResourceSet::default();
    for path in yaml_files(&dir) {
        let text =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        set.add_source(&path.display().to_string(), &text);
    }
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
