//! Pure functions over JSON objects: what a pod template refers to, which Services belong
//! to a workload, label selectors, and cleaning an object for another cluster. Kept apart
//! from the API calls so that they are unit-tested without a cluster.

use std::collections::{BTreeMap, BTreeSet};

use ferry_ports::Resources;
use serde_json::Value;

use crate::quantity;

/// The annotation that carries a migration's id: Ferry's proof of ownership.
pub const MARK_ANNOTATION: &str = "ferry.dev/migration";

/// Annotations that describe the source cluster's history, not the workload: the
/// revision counter is the Deployment controller's, and the last-applied blob would make
/// a later `kubectl apply` on the target compute a wrong three-way diff.
const SOURCE_ONLY_ANNOTATIONS: [&str; 2] = [
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
];

/// Annotations the source's volume controllers put on a claim to record how it was bound
/// or provisioned there. On the target they would claim a binding that never happened (the
/// PV controller would wait for a volume that does not exist) or pin provisioning to a
/// source node.
const CLAIM_BINDING_ANNOTATIONS: [&str; 5] = [
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// Metadata the API server assigns; another cluster rejects or ignores it, and an
/// ownerReference to a uid that does not exist there would get the object collected.
const SERVER_METADATA: [&str; 7] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "ownerReferences",
];

/// Names a pod template refers to in its own namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// Claims named in `volumes[].persistentVolumeClaim.claimName` (not a StatefulSet's
    /// `volumeClaimTemplates`, whose claims its controller makes per replica).
    pub persistent_volume_claims: BTreeSet<String>,
    /// `None` for the namespace's `default` account, which every namespace has.
    pub service_account: Option<String>,
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

fn array_at<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// ConfigMaps and Secrets from env, envFrom, volumes (projected too) and image pull
/// secrets, PersistentVolumeClaims from volumes, and the ServiceAccount, of a pod spec
/// (`spec.template.spec` of a Deployment or a StatefulSet).
pub fn references(pod_spec: &Value) -> References {
    let mut refs = References::default();
    let add = |set: &mut BTreeSet<String>, name: Option<&str>| {
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            set.insert(name.to_owned());
        }
    };
    let containers = array_at(pod_spec, "/containers")
        .iter()
        .chain(array_at(pod_spec, "/initContainers"))
        .chain(array_at(pod_spec, "/ephemeralContainers"));
    for container in containers {
        for env in array_at(container, "/env") {
            add(
                &mut refs.config_maps,
                str_at(env, "/valueFrom/configMapKeyRef/name"),
            );
            add(
                &mut refs.secrets,
                str_at(env, "/valueFrom/secretKeyRef/name"),
            );
        }
        for source in array_at(container, "/envFrom") {
            add(&mut refs.config_maps, str_at(source, "/configMapRef/name"));
            add(&mut refs.secrets, str_at(source, "/secretRef/name"));
        }
    }
    for volume in array_at(pod_spec, "/volumes") {
        add(&mut refs.config_maps, str_at(volume, "/configMap/name"));
        add(&mut refs.secrets, str_at(volume, "/secret/secretName"));
        for source in array_at(volume, "/projected/sources") {
            add(&mut refs.config_maps, str_at(source, "/configMap/name"));
            add(&mut refs.secrets, str_at(source, "/secret/name"));
        }
        add(
            &mut refs.persistent_volume_claims,
            str_at(volume, "/persistentVolumeClaim/claimName"),
        );
    }
    for pull in array_at(pod_spec, "/imagePullSecrets") {
        add(&mut refs.secrets, str_at(pull, "/name"));
    }
    refs.service_account = str_at(pod_spec, "/serviceAccountName")
        .or_else(|| str_at(pod_spec, "/serviceAccount"))
        .filter(|name| !name.is_empty() && *name != "default")
        .map(str::to_owned);
    refs
}

/// Requests of one replica: the sum over its containers' `resources.requests`.
///
/// Init containers and pod overhead are left out on purpose: the broker compares this
/// with other clusters' free room per replica, and the issue defines it as the containers'
/// sum. A quantity that does not parse counts as zero and is logged (by name only).
pub fn template_requests(pod_spec: &Value) -> Resources {
    let mut total = Resources::default();
    for container in array_at(pod_spec, "/containers") {
        total = total.plus(container_requests(container));
    }
    total
}

fn container_requests(container: &Value) -> Resources {
    let read = |key: &str, parse: fn(&str) -> Result<u64, quantity::QuantityError>| {
        let text = container
            .pointer("/resources/requests")
            .and_then(|r| r.get(key))
            .and_then(Value::as_str)?;
        match parse(text) {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(%error, "ignoring a request the adapter cannot read");
                None
            }
        }
    };
    Resources {
        cpu_millis: read("cpu", quantity::cpu_millis).unwrap_or(0),
        memory_bytes: read("memory", quantity::memory_bytes).unwrap_or(0),
    }
}

/// What a scheduled pod occupies on its node, as the scheduler counts it: the larger of
/// the containers' sum and the largest init container, plus the pod overhead.
pub fn pod_requests(pod_spec: &Value) -> Resources {
    let containers = template_requests(pod_spec);
    let init = array_at(pod_spec, "/initContainers")
        .iter()
        .map(container_requests)
        .fold(Resources::default(), |max, r| Resources {
            cpu_millis: max.cpu_millis.max(r.cpu_millis),
            memory_bytes: max.memory_bytes.max(r.memory_bytes),
        });
    let overhead = container_requests(&serde_json::json!({
        "resources": {"requests": pod_spec.get("overhead").cloned().unwrap_or(Value::Null)}
    }));
    Resources {
        cpu_millis: containers.cpu_millis.max(init.cpu_millis),
        memory_bytes: containers.memory_bytes.max(init.memory_bytes),
    }
    .plus(overhead)
}

/// Whether a Service's `spec.selector` (a plain map) picks pods labelled `labels`. An
/// empty or absent selector picks nothing here: such a Service's endpoints are managed by
/// hand and belong to no workload.
pub fn service_selects(selector: Option<&Value>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector.and_then(Value::as_object) else {
        return false;
    };
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| value.as_str() == labels.get(key).map(String::as_str))
}

/// The Services of a workload, in `services`' order and each once: those selecting its pods
/// (`template_labels`) and, for a StatefulSet, its governing Service (`spec.serviceName`),
/// which gives the pods their DNS names even when it selects nothing (endpoints managed by
/// hand).
pub fn workload_services(
    services: Vec<Value>,
    template_labels: &BTreeMap<String, String>,
    governing: Option<&str>,
) -> Vec<Value> {
    services
        .into_iter()
        .filter(|service| {
            let named =
                governing.is_some_and(|name| str_at(service, "/metadata/name") == Some(name));
            named || service_selects(service.pointer("/spec/selector"), template_labels)
        })
        .collect()
}

/// Whether a `LabelSelector` (matchLabels and matchExpressions) picks `labels`. An empty
/// selector picks nothing here, for the same reason as above: a PDB over everything in
/// the namespace is not this workload's.
pub fn label_selector_selects(selector: Option<&Value>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector.filter(|s| s.is_object()) else {
        return false;
    };
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let expressions = array_at(selector, "/matchExpressions");
    if match_labels.is_none_or(|m| m.is_empty()) && expressions.is_empty() {
        return false;
    }
    let labels_ok = match_labels.is_none_or(|m| {
        m.iter()
            .all(|(key, value)| value.as_str() == labels.get(key).map(String::as_str))
    });
    labels_ok
        && expressions.iter().all(|expression| {
            let key = str_at(expression, "/key").unwrap_or("");
            let values: Vec<&str> = array_at(expression, "/values")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let actual = labels.get(key).map(String::as_str);
            match str_at(expression, "/operator") {
                Some("In") => actual.is_some_and(|a| values.contains(&a)),
                Some("NotIn") => actual.is_none_or(|a| !values.contains(&a)),
                Some("Exists") => actual.is_some(),
                Some("DoesNotExist") => actual.is_none(),
                // An operator this code does not know: claim nothing rather than guess.
                _ => false,
            }
        })
}

/// Removes what belongs to the source cluster: server-assigned metadata, status, the
/// source-only annotations, a Service's allocated addresses and node ports (they are
/// allocated per cluster, and the same number may be taken on the target), and a claim's
/// binding (see [`clean_claim`]), StatefulSets' claim templates included.
pub fn clean(object: &mut Value) {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_METADATA {
            metadata.remove(field);
        }
    }
    remove_annotations(object, &SOURCE_ONLY_ANNOTATIONS);
    match kind.as_str() {
        "Service" => clean_service(object),
        "PersistentVolumeClaim" => clean_claim(object),
        "StatefulSet" => {
            if let Some(templates) = object
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for template in templates {
                    clean_claim(template);
                }
            }
        }
        _ => {}
    }
}

fn clean_service(service: &mut Value) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    // `None` is not an allocated address but what makes the Service headless (a
    // StatefulSet's governing Service): dropping it would give the target a cluster IP.
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        spec.remove("clusterIP");
    }
    spec.remove("clusterIPs");
    spec.remove("healthCheckNodePort");
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            if let Some(port) = port.as_object_mut() {
                port.remove("nodePort");
            }
        }
    }
}

/// Makes a claim (or a claim template) a new request for storage on the target: without
/// the source's volume (`spec.volumeName` names a PersistentVolume of the source), status
/// or binding annotations. The data in the source's volume does not move.
pub fn clean_claim(claim: &mut Value) {
    if let Some(map) = claim.as_object_mut() {
        map.remove("status");
    }
    if let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("volumeName");
    }
    remove_annotations(claim, &CLAIM_BINDING_ANNOTATIONS);
}

/// Removes `names` from an object's annotations, and the annotations map if that empties it.
fn remove_annotations(object: &mut Value, names: &[&str]) {
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for name in names {
        annotations.remove(*name);
    }
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
}

/// The mark an object carries, if any.
pub fn mark_of(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MARK_ANNOTATION))
        .and_then(Value::as_str)
}

/// Whether `ours` (a ConfigMap, Secret or ServiceAccount about to be applied) says what
/// `theirs` (the object of that name on the cluster) says: the same data, type, image
/// pull secrets and token mounting. Always false for other kinds, whose specs a
/// cluster defaults and allocates.
pub fn same_content(ours: &Value, theirs: &Value) -> bool {
    let fields: &[&str] = match ours.get("kind").and_then(Value::as_str) {
        Some("ConfigMap") => &["data", "binaryData"],
        Some("Secret") => &["data", "type"],
        Some("ServiceAccount") => &["imagePullSecrets", "automountServiceAccountToken"],
        _ => return false,
    };
    // An empty map is no map.
    let field = |object: &Value, name: &str| -> Option<Value> {
        object
            .get(name)
            .filter(|v| !v.is_null() && v.as_object().is_none_or(|m| !m.is_empty()))
            .filter(|v| v.as_array().is_none_or(|a| !a.is_empty()))
            .cloned()
    };
    fields
        .iter()
        .all(|name| field(ours, name) == field(theirs, name))
}

/// Sets the mark annotation on each of a StatefulSet's claim templates: its controller
/// copies a template's metadata into the claims it makes, so they carry the mark too.
pub fn mark_claim_templates(stateful_set: &mut Value, migration: &str) {
    if let Some(templates) = stateful_set
        .pointer_mut("/spec/volumeClaimTemplates")
        .and_then(Value::as_array_mut)
    {
        for template in templates {
            set_mark(template, migration);
        }
    }
}

/// Sets the mark annotation on an object.
pub fn set_mark(object: &mut Value, migration: &str) {
    let Some(object) = object.as_object_mut() else {
        return;
    };
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(
            MARK_ANNOTATION.to_owned(),
            Value::String(migration.to_owned()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_configmaps_secrets_and_accounts_that_say_the_same_are_the_same() {
        let config =
            |data: Value| json!({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": data});
        let cases = [
            (config(json!({"A": "1"})), config(json!({"A": "1"})), true),
            (config(json!({"A": "1"})), config(json!({"A": "2"})), false),
            (config(json!({})), json!({"kind": "ConfigMap"}), true),
            (
                json!({"kind": "Secret", "data": {"P": "aA=="}, "type": "Opaque"}),
                json!({"kind": "Secret", "data": {"P": "aA=="}, "type": "Opaque"}),
                true,
            ),
            (
                json!({"kind": "Secret", "data": {"P": "aA=="}, "type": "Opaque"}),
                json!({"kind": "Secret", "data": {"P": "aQ=="}, "type": "Opaque"}),
                false,
            ),
            (
                json!({"kind": "ServiceAccount", "metadata": {"name": "web"}}),
                json!({"kind": "ServiceAccount", "secrets": [], "metadata": {"name": "web", "uid": "x"}}),
                true,
            ),
            (
                json!({"kind": "Service", "spec": {}}),
                json!({"kind": "Service", "spec": {}}),
                false,
            ),
        ];
        for (ours, theirs, same) in cases {
            assert_eq!(same_content(&ours, &theirs), same, "{ours} vs {theirs}");
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn references_come_from_every_place_a_pod_names_them() {
        let spec = json!({
            "serviceAccountName": "web-sa",
            "imagePullSecrets": [{"name": "pull"}],
            "initContainers": [{"name": "i", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "init-secret", "key": "k"}}}]}],
            "containers": [{
                "name": "c",
                "env": [
                    {"name": "PLAIN", "value": "x"},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}},
                    {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "envFrom": [{"configMapRef": {"name": "from-cm"}}, {"secretRef": {"name": "from-secret"}}],
            }],
            "volumes": [
                {"name": "v1", "configMap": {"name": "vol-cm"}},
                {"name": "v2", "secret": {"secretName": "vol-secret"}},
                {"name": "v3", "projected": {"sources": [
                    {"configMap": {"name": "proj-cm"}},
                    {"secret": {"name": "proj-secret"}},
                    {"serviceAccountToken": {"path": "token"}},
                ]}},
                {"name": "v4", "emptyDir": {}},
                {"name": "v5", "persistentVolumeClaim": {"claimName": "uploads"}},
                {"name": "v6", "persistentVolumeClaim": {"claimName": "cache", "readOnly": true}},
            ],
        });
        let refs = references(&spec);
        let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        assert_eq!(
            refs.config_maps,
            set(&["env-cm", "from-cm", "proj-cm", "vol-cm"])
        );
        assert_eq!(
            refs.secrets,
            set(&[
                "from-secret",
                "init-secret",
                "proj-secret",
                "pull",
                "vol-secret"
            ])
        );
        assert_eq!(refs.persistent_volume_claims, set(&["cache", "uploads"]));
        assert_eq!(refs.service_account.as_deref(), Some("web-sa"));
        assert_eq!(
            references(&json!({"serviceAccountName": "default"})).service_account,
            None
        );
    }

    #[test]
    fn requests_sum_containers_and_pods_count_init_and_overhead() {
        let spec = json!({
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}}],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "0.25"}}},
                {"name": "c"},
            ],
            "overhead": {"cpu": "10m"},
        });
        assert_eq!(
            template_requests(&spec),
            Resources {
                cpu_millis: 750,
                memory_bytes: 256 << 20
            }
        );
        assert_eq!(
            pod_requests(&spec),
            Resources {
                cpu_millis: 2010,
                memory_bytes: 256 << 20
            }
        );
    }

    #[test]
    fn selectors() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        let cases = [
            (json!({"app": "web"}), true),
            (json!({"app": "web", "tier": "front"}), true),
            (json!({"app": "db"}), false),
            (json!({"app": "web", "zone": "a"}), false),
            (json!({}), false),
        ];
        for (selector, want) in cases {
            assert_eq!(service_selects(Some(&selector), &pod), want, "{selector}");
        }
        assert!(!service_selects(None, &pod));
        let cases = [
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "x"]}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}),
                false,
            ),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}),
                true,
            ),
            (
                json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}),
                false,
            ),
            (
                json!({"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}),
                false,
            ),
            (json!({}), false),
        ];
        for (selector, want) in cases {
            assert_eq!(
                label_selector_selects(Some(&selector), &pod),
                want,
                "{selector}"
            );
        }
    }

    #[test]
    fn cleaning_drops_what_belongs_to_the_source() {
        let mut service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "7",
                "generation": 1, "creationTimestamp": "t", "managedFields": [], "selfLink": "s",
                "ownerReferences": [{"uid": "x"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "labels": {"app": "web"},
            },
            "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "type": "NodePort",
                     "ports": [{"port": 80, "nodePort": 30080}], "selector": {"app": "web"}},
            "status": {"loadBalancer": {}},
        });
        clean(&mut service);
        assert_eq!(
            service,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
                "spec": {"type": "NodePort", "ports": [{"port": 80}], "selector": {"app": "web"}},
            })
        );
        let mut deployment = json!({
            "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {"deployment.kubernetes.io/revision": "3", "keep": "me"}},
            "spec": {"replicas": 3},
            "status": {"replicas": 3},
        });
        clean(&mut deployment);
        assert_eq!(
            deployment,
            json!({"kind": "Deployment", "metadata": {"name": "web", "annotations": {"keep": "me"}}, "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn a_workloads_services_are_those_selecting_it_and_its_governing_one() {
        let service = |name: &str, selector: Value| json!({"kind": "Service", "metadata": {"name": name}, "spec": {"selector": selector}});
        let services = vec![
            service("web", json!({"app": "db"})),
            service("db-peers", json!({"app": "db"})),
            service("db-manual", Value::Null),
            service("other", json!({"app": "cache"})),
        ];
        let pods = labels(&[("app", "db")]);
        // (governing Service, the names carried): a governing Service that also selects
        // the pods is carried once, one without a selector only because it is named.
        let cases: [(Option<&str>, &[&str]); 4] = [
            (None, &["web", "db-peers"]),
            (Some("db-peers"), &["web", "db-peers"]),
            (Some("db-manual"), &["web", "db-peers", "db-manual"]),
            (Some("absent"), &["web", "db-peers"]),
        ];
        for (governing, want) in cases {
            let names: Vec<String> = workload_services(services.clone(), &pods, governing)
                .iter()
                .filter_map(|s| str_at(s, "/metadata/name").map(str::to_owned))
                .collect();
            assert_eq!(names, want, "governing {governing:?}");
        }
    }

    #[test]
    fn cleaning_makes_claims_new_requests_and_keeps_headless_services_headless() {
        let binding_annotations = json!({
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.beta.kubernetes.io/storage-provisioner": "rancher.io/local-path",
            "volume.kubernetes.io/storage-provisioner": "rancher.io/local-path",
            "volume.kubernetes.io/selected-node": "node-1",
        });
        let mut with_keep = binding_annotations.clone();
        with_keep["keep"] = json!("me");
        let claim_spec = json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "standard",
                                "resources": {"requests": {"storage": "1Gi"}}});
        let mut bound_spec = claim_spec.clone();
        bound_spec["volumeName"] = json!("pvc-0d1e");
        let bound_status = json!({"phase": "Bound", "capacity": {"storage": "1Gi"}});
        // (object as read on the source, as exported)
        let cases = [
            (
                json!({"kind": "PersistentVolumeClaim",
                       "metadata": {"name": "uploads", "uid": "u", "annotations": with_keep},
                       "spec": bound_spec, "status": bound_status}),
                json!({"kind": "PersistentVolumeClaim",
                       "metadata": {"name": "uploads", "annotations": {"keep": "me"}},
                       "spec": claim_spec}),
            ),
            (
                json!({"kind": "PersistentVolumeClaim",
                       "metadata": {"name": "uploads", "annotations": binding_annotations},
                       "spec": bound_spec, "status": bound_status}),
                json!({"kind": "PersistentVolumeClaim", "metadata": {"name": "uploads"},
                       "spec": claim_spec}),
            ),
            (
                json!({"kind": "StatefulSet", "metadata": {"name": "db", "generation": 2},
                       "spec": {"serviceName": "db", "volumeClaimTemplates": [
                           {"metadata": {"name": "data"}, "spec": claim_spec, "status": {"phase": "Pending"}},
                       ]},
                       "status": {"replicas": 2}}),
                json!({"kind": "StatefulSet", "metadata": {"name": "db"},
                "spec": {"serviceName": "db", "volumeClaimTemplates": [
                    {"metadata": {"name": "data"}, "spec": claim_spec},
                ]}}),
            ),
            (
                json!({"kind": "Service", "metadata": {"name": "db"},
                       "spec": {"clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"}}}),
                json!({"kind": "Service", "metadata": {"name": "db"},
                       "spec": {"clusterIP": "None", "selector": {"app": "db"}}}),
            ),
        ];
        for (mut object, want) in cases {
            clean(&mut object);
            assert_eq!(object, want);
        }
    }

    #[test]
    fn marks() {
        let mut object = json!({"metadata": {"name": "x"}});
        assert_eq!(mark_of(&object), None);
        set_mark(&mut object, "m1");
        assert_eq!(mark_of(&object), Some("m1"));
        set_mark(&mut object, "m2");
        assert_eq!(mark_of(&object), Some("m2"));
    }
}
