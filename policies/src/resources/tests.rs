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
            "c.yaml:1:1: status.cluster: no Cluster named `nowhere` in the given files",
        ]
    );
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
