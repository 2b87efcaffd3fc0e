//! Decoding tests: each case is a file and the exact diagnostics it must produce.

use super::*;

const CLUSTER: &str = "\
apiVersion: ferry.dev/v1alpha1
kind: Cluster
metadata:
  name: openstack-dc1
  labels: { provider: openstack, residency: eu }
spec:
  provider: sim
  pricing: { cpuCoreHour: 0.031, memoryGiBHour: 0.004, egressGiB: 0.01 }
  capacity: { cpu: \"64\", memory: 256Gi }
  reserved: { cpu: \"4\", memory: 8Gi }
  taints:
    - { key: maintenance, value: \"true\", effect: NoSchedule }
status:
  health: Ready
";

fn diagnostics(text: &str) -> Vec<String> {
    parse_source("f.yaml", text)
        .1
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn a_valid_cluster_decodes_completely() {
    let (resources, diagnostics) = parse_source("f.yaml", CLUSTER);
    assert_eq!(diagnostics, vec![]);
    let [
        Located {
            value: Resource::Cluster(cluster),
            pos,
            ..
        },
    ] = resources.as_slice()
    else {
        panic!("expected one cluster, got {resources:?}")
    };
    assert_eq!(*pos, Pos { line: 1, column: 1 });
    assert_eq!(cluster.name, "openstack-dc1");
    assert_eq!(cluster.capacity, Some(Resources::new(64_000, 256 << 30)));
    assert_eq!(cluster.reserved, Resources::new(4_000, 8 << 30));
    assert_eq!(cluster.taints[0].effect, TaintEffect::NoSchedule);
    assert_eq!(cluster.health, Some(Health::Ready));
    assert_eq!(cluster.pricing.currency, "USD");
}

#[test]
fn workload_scope_and_overrides_decode_and_bad_ones_are_named() {
    let text = CLUSTER.replace(
        "status:",
        "  workloads: { namespaces: [shop, batch], namespaceLabel: { ferry.dev/federated: \"true\" } }
  overrides:
    imageRegistries: { docker.io: mirror.dc1.example }
    storageClasses: { standard: ceph-rbd }
    labels: { site: dc1 }
    annotations: { owner: platform }
status:",
    );
    let (resources, found) = parse_source("f.yaml", &text);
    assert_eq!(found, vec![]);
    let Some(Resource::Cluster(cluster)) = resources.first().map(|r| &r.value) else {
        panic!("expected a cluster, got {resources:?}")
    };
    assert_eq!(cluster.scope.namespaces, ["shop", "batch"]);
    assert_eq!(
        cluster.scope.namespace_label,
        Some(("ferry.dev/federated".to_owned(), "true".to_owned()))
    );
    assert_eq!(
        cluster.overrides.image_registries["docker.io"],
        "mirror.dc1.example"
    );
    assert_eq!(cluster.overrides.storage_classes["standard"], "ceph-rbd");
    assert_eq!(cluster.overrides.labels["site"], "dc1");
    assert_eq!(cluster.overrides.annotations["owner"], "platform");

    let cases = [
        (
            "  workloads: { namespaces: [Shop_1] }\nstatus:",
            "spec.workloads.namespaces: `Shop_1` is not a valid namespace name (a DNS-1123 label)",
        ),
        (
            "  workloads: { namespaceLabel: { a: b, c: d } }\nstatus:",
            "spec.workloads.namespaceLabel: one label `key: value` is expected; found 2",
        ),
        (
            "  overrides: { imageRegistry: { a: b } }\nstatus:",
            "spec.overrides.imageRegistry: unknown field `imageRegistry`; expected one of: imageRegistries, storageClasses, labels, annotations",
        ),
        (
            "  overrides: { labels: { site: \"not valid!\" } }\nstatus:",
            "spec.overrides.labels.site: `site: not valid!` is not a valid label",
        ),
    ];
    for (replacement, expected) in cases {
        let found = diagnostics(&CLUSTER.replace("status:", replacement));
        assert!(
            found.len() == 1 && found[0].ends_with(expected),
            "{replacement}: {found:?}"
        );
    }
}

#[test]
fn typo_wrong_type_and_bad_quantity_are_all_reported() {
    let text = CLUSTER
        .replace("cpuCoreHour: 0.031", "cpuCoreHuor: 0.031")
        .replace("egressGiB: 0.01", "egressGiB: cheap")
        .replace("memory: 256Gi", "memory: 256GB");
    assert_eq!(
        diagnostics(&text),
        vec![
            "f.yaml:8:12: spec.pricing.cpuCoreHour: missing required field",
            "f.yaml:8:14: spec.pricing.cpuCoreHuor: unknown field `cpuCoreHuor`; did you mean `cpuCoreHour`?",
            "f.yaml:8:67: spec.pricing.egressGiB: expected a number, found `cheap`",
            "f.yaml:9:34: spec.capacity.memory: `256GB` is not a memory quantity (like 512Mi, 4Gi, 1G or bytes)",
        ]
    );
}

#[test]
fn document_level_errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            "kind: Cluster\n",
            &[
                "f.yaml:1:1: apiVersion: missing required field",
                "f.yaml:1:1: metadata: missing required field",
                "f.yaml:1:1: spec: missing required field",
            ],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {}\n",
            &[
                "f.yaml:1:13: apiVersion: expected `ferry.dev/v1alpha1`, found `v1`",
                "f.yaml:2:7: kind: unknown kind `Pod`; expected Cluster, Workload or PlacementPolicy",
            ],
        ),
        (
            "- a\n- b\n",
            &["f.yaml:1:1: expected a mapping, found a sequence"],
        ),
        (
            "a: [\n",
            &["f.yaml:2:1: invalid YAML: while parsing a node, did not find expected node content"],
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(diagnostics(text), *expected, "input:\n{text}");
    }
}

#[test]
fn workload_and_policy_errors_carry_field_paths() {
    let text = "\
apiVersion: ferry.dev/v1alpha1
kind: Workload
metadata: { name: Checkout, namespace: shop }
spec:
  replicas: 0
  resources: { cpu: 500x, memory: 1Gi }
  tolerations:
    - { key: a, operator: Exists, value: b }
status: { cluster: dc1 }
---
apiVersion: ferry.dev/v1alpha1
kind: PlacementPolicy
metadata: { name: eu-web }
spec:
  priority: high
  spread: { minClusters: 3, maxClusters: 2 }
  clusterAffinity:
    required:
      matchExpressions:
        - { key: provider, operator: In }
    preferred:
      - { weight: 500, matchLabels: { provider: openstack } }
  rebalance: { cooldown: soon, windows: [\"Mon-Fri 22:00-06:00\", \"Someday\"] }
";
    assert_eq!(
        diagnostics(text),
        vec![
            "f.yaml:3:19: metadata.name: `Checkout` is not a DNS-1123 label (lowercase letters, digits and '-', at most 63)",
            "f.yaml:5:13: spec.replicas: expected an integer from 1 to 100000, found `0`",
            "f.yaml:6:21: spec.resources.cpu: `500x` is not a cpu quantity (like 500m, 2 or 1.5)",
            "f.yaml:8:7: spec.tolerations[0].value: a toleration with operator Exists takes no value",
            "f.yaml:15:13: spec.priority: expected an integer, found `high`",
            "f.yaml:16:42: spec.spread.maxClusters: maxClusters (2) is less than minClusters (3)",
            "f.yaml:20:38: spec.clusterAffinity.required.matchExpressions[0].values: operator In needs a non-empty `values` list",
            "f.yaml:22:19: spec.clusterAffinity.preferred[0].weight: expected an integer from 1 to 100, found `500`",
            "f.yaml:23:26: spec.rebalance.cooldown: `soon` is not a duration (like 90s, 30m, 1h or 1h30m)",
            "f.yaml:23:65: spec.rebalance.windows[1]: `Someday` is not a window (like \"Mon-Fri 22:00-06:00\")",
        ]
    );
}

#[test]
fn connection_blocks_must_match_the_provider() {
    let gke = CLUSTER.replace("provider: sim", "provider: gke");
    assert_eq!(
        diagnostics(&gke),
        vec![
            "f.yaml:7:3: spec: provider `gke` needs exactly one connection block `gke`; found none"
        ]
    );
    let kube = CLUSTER.replace(
        "provider: sim",
        "provider: kubernetes\n  kubernetes: { kubeconfig: /k, context: c }",
    );
    assert_eq!(diagnostics(&kube), Vec::<String>::new());
}

#[test]
fn references_across_documents() {
    let mut set = ResourceSet::default();
    assert!(set.add_source("a.yaml", CLUSTER).is_empty());
    assert!(set.add_source("b.yaml", CLUSTER).is_empty());
    let workload = "apiVersion: ferry.dev/v1alpha1\nkind: Workload\nmetadata: {name: w}\nspec: {replicas: 1, resources: {cpu: 1}}\nstatus: {cluster: nowhere}\n";
    assert!(set.add_source("c.yaml", workload).is_empty());
    let found: Vec<String> = check_references(&set)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        vec![
            "b.yaml:1:1: metadata.name: duplicate cluster `openstack-dc1`, first defined at a.yaml:1:1",
            "c.yaml:5:19: status.cluster: no Cluster named `nowhere` in the given files (known: openstack-dc1)",
        ]
    );
}

/// A policy document with `spec` as given.
fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

/// A workload document in namespace `shop`, optionally with `status.cluster`.
fn workload(name: &str, labels: &str, cluster: Option<&str>) -> String {
    let status = cluster.map_or(String::new(), |c| format!("status:\n  cluster: {c}\n"));
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: shop, labels: {{{labels}}}}}\nspec: {{replicas: 1, resources: {{cpu: 1}}}}\n{status}"
    )
}

/// Every error of checks across documents over `files`, as printed.
fn across(files: &[(&str, &str)]) -> Vec<String> {
    let mut set = ResourceSet::default();
    for (file, text) in files {
        assert_eq!(set.add_source(file, text), vec![], "{file}");
    }
    check_references(&set)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn warnings_of(files: &[(&str, &str)]) -> Vec<String> {
    let mut set = ResourceSet::default();
    for (file, text) in files {
        assert_eq!(set.add_source(file, text), vec![], "{file}");
    }
    super::warnings(&set)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn an_unknown_status_cluster_points_at_the_field_and_suggests_the_nearest() {
    let other = CLUSTER.replace("name: openstack-dc1", "name: gke-europe-west1");
    for (cluster, expected) in [
        (
            "openstack-dc2",
            "w.yaml:6:12: status.cluster: no Cluster named `openstack-dc2` in the given files; did you mean `openstack-dc1`? (known: gke-europe-west1, openstack-dc1)",
        ),
        (
            "aws-east",
            "w.yaml:6:12: status.cluster: no Cluster named `aws-east` in the given files (known: gke-europe-west1, openstack-dc1)",
        ),
    ] {
        let w = workload("web", "", Some(cluster));
        assert_eq!(
            across(&[("a.yaml", CLUSTER), ("b.yaml", &other), ("w.yaml", &w)]),
            vec![expected]
        );
    }
}

#[test]
fn a_quoted_number_says_it_is_quoted() {
    let cases = [
        (
            "  priority: \"420\"\n",
            "f.yaml:5:13: spec.priority: expected an integer, found the string \"420\"; remove the quotes",
        ),
        (
            "  priority: high\n",
            "f.yaml:5:13: spec.priority: expected an integer, found `high`",
        ),
        (
            "  budget: { maxMonthlyCost: \"1200.5\" }\n",
            "f.yaml:5:29: spec.budget.maxMonthlyCost: expected a number, found the string \"1200.5\"; remove the quotes",
        ),
    ];
    for (spec, expected) in cases {
        assert_eq!(diagnostics(&policy("p", spec)), vec![expected], "{spec}");
    }
}

#[test]
fn equal_priority_overlap_names_both_policies_where_they_are() {
    let web = policy(
        "web",
        "  priority: 5\n  workloadSelector: { namespaces: [shop], matchLabels: { tier: web } }\n",
    );
    let shop = policy(
        "shop",
        "  priority: 5\n  workloadSelector: { namespaces: [shop] }\n",
    );
    let workloads = [
        workload("frontend", "tier: web", None),
        workload("cart", "tier: web", None),
        workload("db", "tier: data", None),
    ]
    .join("---\n");
    assert_eq!(
        across(&[
            ("p1.yaml", &web),
            ("p2.yaml", &shop),
            ("w.yaml", &workloads)
        ]),
        vec![
            "p2.yaml:5:13: spec.priority: policy `shop` and policy `web` (at p1.yaml:5:13) both have priority 5 and both select workloads `shop/cart`, `shop/frontend`; give one a higher priority or narrow a selector"
        ]
    );
    // A higher priority on either resolves it; so does a selector that no longer overlaps.
    let higher = web.replace("priority: 5", "priority: 6");
    assert_eq!(
        across(&[
            ("p1.yaml", &higher),
            ("p2.yaml", &shop),
            ("w.yaml", &workloads)
        ]),
        Vec::<String>::new()
    );
    // A policy defined twice is reported as a duplicate, not also as a conflict.
    assert_eq!(
        across(&[
            ("p1.yaml", &shop),
            ("p2.yaml", &shop),
            ("w.yaml", &workloads)
        ]),
        vec!["p2.yaml:1:1: metadata.name: duplicate policy `shop`, first defined at p1.yaml:1:1"]
    );
}

#[test]
fn warnings_for_a_policy_that_selects_nothing_or_affinity_that_matches_no_cluster() {
    let other = CLUSTER
        .replace("name: openstack-dc1", "name: gke-us")
        .replace("residency: eu", "residency: us");
    let w = workload("web", "tier: web", Some("openstack-dc1"));
    let typo = policy(
        "typo",
        "  workloadSelector:\n    namespaces: [shpo]\n  clusterAffinity:\n    required:\n      matchLabels: { residency: europe }\n",
    );
    assert_eq!(
        warnings_of(&[
            ("a.yaml", CLUSTER),
            ("b.yaml", &other),
            ("w.yaml", &w),
            ("p.yaml", &typo)
        ]),
        vec![
            "p.yaml:6:5: spec.workloadSelector: policy `typo` selects no workload in the given files",
            "p.yaml:9:7: spec.clusterAffinity.required: matches no Cluster in the given files, so policy `typo` can place nothing; known values of `residency`: eu, us",
        ]
    );
    let tier = policy(
        "tier",
        "  clusterAffinity:\n    required:\n      matchExpressions: [{ key: tier, operator: Exists }]\n",
    );
    assert_eq!(
        warnings_of(&[("a.yaml", CLUSTER), ("w.yaml", &w), ("p.yaml", &tier)]),
        vec![
            "p.yaml:7:7: spec.clusterAffinity.required: matches no Cluster in the given files, so policy `tier` can place nothing; no cluster has label `tier`"
        ]
    );
    // Valid and meant: no warning. Policies alone (no workloads, no clusters in the
    // files, as a broker's policy folder) are not warned about either.
    let fine = policy(
        "fine",
        "  workloadSelector: { namespaces: [shop] }\n  clusterAffinity: { required: { matchLabels: { residency: eu } } }\n",
    );
    assert_eq!(
        warnings_of(&[("a.yaml", CLUSTER), ("w.yaml", &w), ("p.yaml", &fine)]),
        Vec::<String>::new()
    );
    assert_eq!(warnings_of(&[("p.yaml", &typo)]), Vec::<String>::new());
}

#[test]
fn a_duplicate_key_is_reported_once() {
    let text = CLUSTER.replace("kind: Cluster\n", "kind: Cluster\nkind: Cluster\n");
    assert_eq!(diagnostics(&text), vec!["f.yaml:3:1: kind: duplicate key"]);
}

#[test]
fn hidden_characters_are_escaped_in_messages() {
    let text = CLUSTER.replace("cpuCoreHour: 0.031", "cpu\u{202e}CoreHour: 0.031");
    let found = diagnostics(&text);
    assert!(
        found
            .iter()
            .any(|d| d.contains("unknown field `cpu\\u{202e}CoreHour`")),
        "{found:?}"
    );
    assert!(found.iter().all(|d| !d.contains('\u{202e}')), "{found:?}");
}

#[test]
fn openstack_heat_blocks_decode_and_bad_ones_are_named() {
    let heat = CLUSTER.replace(
        "provider: sim",
        "provider: openstack
  openstack:
    cloud: dc1
    heat:
      stack: ferry-dc1
      parameters: { image: ubuntu-24.04, worker_count: \"3\" }
      environment: env/standin.yaml",
    );
    let (resources, found) = parse_source("f.yaml", &heat);
    assert_eq!(found, vec![]);
    let Some(Resource::Cluster(cluster)) = resources.first().map(|r| &r.value) else {
        panic!("expected a cluster, got {resources:?}")
    };
    let Connection::Openstack(connection) = &cluster.connection else {
        panic!("an openstack connection: {:?}", cluster.connection)
    };
    assert_eq!(connection.cloud, "dc1");
    assert_eq!(
        connection.provisioner,
        OpenstackProvisioner::Heat {
            stack: "ferry-dc1".to_owned(),
            parameters: BTreeMap::from([
                ("image".to_owned(), "ubuntu-24.04".to_owned()),
                ("worker_count".to_owned(), "3".to_owned()),
            ]),
            environment: Some("env/standin.yaml".to_owned()),
        }
    );
    let typo = heat.replace("environment:", "enviroment:");
    assert_eq!(
        diagnostics(&typo),
        vec![
            "f.yaml:13:7: spec.openstack.heat.enviroment: unknown field `enviroment`; did you mean `environment`?"
        ]
    );
}
