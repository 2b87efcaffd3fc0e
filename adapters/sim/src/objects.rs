//! The object graph of a simulated workload: what `export` hands out and what `apply`
//! accepts. The sim models a workload as one Deployment; the other objects are carried
//! as given, the way a real cluster stores what it does not act on.

use std::collections::BTreeMap;

use ferry_ports::{Claim, Resources, WorkloadKey};
use serde_json::{Value, json};

use crate::quantity::{format_cpu, format_memory, parse_memory};

/// The container port of a synthesized workload and the Service port in front of it.
const CONTAINER_PORT: u16 = 8080;
const SERVICE_PORT: u16 = 80;

/// A cleaned graph for a workload seeded with `SimCluster::run`: Namespace, Deployment,
/// Service, in apply order, with nothing a cluster assigns (uid, resourceVersion, status).
pub(crate) fn synthesize(
    key: &WorkloadKey,
    labels: &BTreeMap<String, String>,
    replicas: u32,
    requests: Resources,
    claims: &[Claim],
) -> Vec<Value> {
    // The selector must be a subset of the pod labels; `app` is the convention, and a
    // workload that already has one keeps its value.
    let app = labels
        .get("app")
        .cloned()
        .unwrap_or_else(|| key.name.clone());
    let selector = json!({ "app": app });
    let mut pod_labels = labels.clone();
    pod_labels.entry("app".to_owned()).or_insert(app);
    // A stateful workload mounts its claims by name, as a Deployment with volumes does.
    let volumes: Vec<Value> = claims
        .iter()
        .map(|c| json!({ "name": c.name, "persistentVolumeClaim": { "claimName": c.name } }))
        .collect();
    let claim_objects = claims.iter().map(|c| {
        json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": { "name": c.name, "namespace": key.namespace },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": format_memory(c.size_bytes.unwrap_or(0)) } },
            },
        })
    });
    let mut graph = vec![json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": key.namespace },
    })];
    graph.extend(claim_objects);
    graph.extend([
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": key.name, "namespace": key.namespace, "labels": labels },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": selector },
                "template": {
                    "metadata": { "labels": pod_labels },
                    "spec": {
                        "containers": [{
                            "name": key.name,
                            // `.invalid` cannot resolve: nothing ever pulls a sim image.
                            "image": format!("registry.sim.invalid/{}/{}:1.0", key.namespace, key.name),
                            "ports": [{ "name": "http", "containerPort": CONTAINER_PORT }],
                            "resources": {
                                "requests": {
                                    "cpu": format_cpu(requests.cpu_millis),
                                    "memory": format_memory(requests.memory_bytes),
                                },
                            },
                        }],
                        "volumes": volumes,
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": key.name, "namespace": key.namespace, "labels": labels },
            "spec": {
                "selector": selector,
                "ports": [{
                    "name": "http",
                    "port": SERVICE_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                }],
            },
        }),
    ]);
    graph
}

/// The claims the workload's Deployment mounts, sized from the PersistentVolumeClaims
/// of the graph (a claim that is not in the graph has no known size).
pub(crate) fn claims(key: &WorkloadKey, objects: &[Value]) -> Vec<Claim> {
    let Some(deployment) = objects.iter().find(|object| is_deployment(key, object)) else {
        return Vec::new();
    };
    let mounted = deployment
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.pointer("/persistentVolumeClaim/claimName")
                .and_then(Value::as_str)
        });
    let mut claims: Vec<Claim> = mounted
        .map(|name| Claim {
            name: name.to_owned(),
            size_bytes: objects
                .iter()
                .find(|o| {
                    o.get("kind").and_then(Value::as_str) == Some("PersistentVolumeClaim")
                        && o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                })
                .and_then(|o| o.pointer("/spec/resources/requests/storage"))
                .and_then(Value::as_str)
                .and_then(parse_memory),
        })
        .collect();
    claims.sort();
    claims.dedup();
    claims
}

/// What an API server would refuse, and what the sim cannot represent: a document that
/// is not an object with apiVersion, kind and metadata.name; a namespaced object outside
/// the workload's namespace; an object still carrying another cluster's uid or
/// resourceVersion (an uncleaned export); a graph without exactly one Deployment for the
/// workload. Returns the reason for a `Rejected` error.
pub(crate) fn check(key: &WorkloadKey, objects: &[Value]) -> Result<(), String> {
    let mut deployments = 0;
    for (index, object) in objects.iter().enumerate() {
        let Some(fields) = object.as_object() else {
            return Err(format!("object {index} is not a JSON object"));
        };
        let Some(kind) = fields.get("kind").and_then(Value::as_str) else {
            return Err(format!("object {index} has no kind"));
        };
        if fields
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(format!("object {index} ({kind}) has no apiVersion"));
        }
        let Some(metadata) = fields.get("metadata").and_then(Value::as_object) else {
            return Err(format!("object {index} ({kind}) has no metadata"));
        };
        let Some(name) = metadata
            .get("name")
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
        else {
            return Err(format!("object {index} ({kind}) has no metadata.name"));
        };
        for assigned in ["uid", "resourceVersion"] {
            if metadata.contains_key(assigned) {
                return Err(format!(
                    "{kind} {name} was not cleaned: metadata.{assigned} belongs to the cluster it came from"
                ));
            }
        }
        if let Some(namespace) = metadata.get("namespace").and_then(Value::as_str)
            && namespace != key.namespace
        {
            return Err(format!(
                "{kind} {namespace}/{name} is outside the workload's namespace {}",
                key.namespace
            ));
        }
        if kind == "Deployment" && name == key.name {
            if !fields.get("spec").is_some_and(Value::is_object) {
                return Err(format!("Deployment {key} has no spec"));
            }
            deployments += 1;
        }
    }
    match deployments {
        1 => Ok(()),
        0 => Err(format!("no Deployment {key} among the objects")),
        _ => Err(format!("more than one Deployment {key} among the objects")),
    }
}

fn deployment_mut<'a>(key: &WorkloadKey, objects: &'a mut [Value]) -> Option<&'a mut Value> {
    objects.iter_mut().find(|object| is_deployment(key, object))
}

fn is_deployment(key: &WorkloadKey, object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("Deployment")
        && object.pointer("/metadata/name").and_then(Value::as_str) == Some(key.name.as_str())
}

/// Keeps the stored Deployment's `spec.replicas` equal to the workload's replicas, so
/// that an export after a scale carries the count the cluster runs.
pub(crate) fn set_replicas(key: &WorkloadKey, objects: &mut [Value], replicas: u32) {
    if let Some(spec) = deployment_mut(key, objects)
        .and_then(|deployment| deployment.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        spec.insert("replicas".to_owned(), json!(replicas));
    }
}

/// The Deployment's pod template: a change to it replaces the pods, as on a real cluster;
/// a change elsewhere (labels of the Deployment, a Service) does not.
pub(crate) fn pod_template<'a>(key: &WorkloadKey, objects: &'a [Value]) -> Option<&'a Value> {
    objects
        .iter()
        .find(|object| is_deployment(key, object))
        .and_then(|deployment| deployment.pointer("/spec/template"))
}
