//! The adapter against real Kubernetes control planes (ferry-testenv): a realistic app is
//! inventoried and exported from cluster A, applied to cluster B, rolled out, drained and
//! deleted; ownership and field conflicts are refused; an unfit workload reports the
//! scheduler's reason; the shipped ClusterRole suffices and a missing verb is named. A
//! StatefulSet moves the same way with its governing Service and claim templates; claims a
//! Deployment names arrive cleaned; a target's overrides are applied there; the inventory
//! follows a namespace label.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_adapter_kubernetes::{
    CLUSTER_ROLE_YAML, KubeCluster, MARK_ANNOTATION, OVERRIDDEN_ANNOTATION, TargetOverrides,
};
use ferry_ports::{
    ClusterPort, Health, Mark, PortError, Resources, Rollout, WorkloadFate, WorkloadKey,
};
use ferry_testenv::{Cluster, ClusterSpec, client_from, manifest_documents, start_clusters};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);
const NS: &str = "shop";

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    let mut last = String::from("nothing observed yet");
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last = format!("{error:#}"),
        }
        if started.elapsed() > WAIT {
            bail!("{what}: not within {WAIT:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test objects are valid")
}

fn mark(id: &str) -> Mark {
    Mark {
        migration: id.to_owned(),
    }
}

fn key(name: &str) -> WorkloadKey {
    WorkloadKey::new(NS, name)
}

async fn create<K>(client: &Client, namespace: Option<&str>, value: Value) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace.unwrap_or(NS));
    api.create(&PostParams::default(), &object(value)).await?;
    Ok(())
}

/// A realistic app on `client`'s cluster, created as a user would (not by Ferry), with
/// neighbours that are not the app's: an unreferenced ConfigMap and another Service.
async fn create_app(client: &Client) -> Result<()> {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": NS}})),
        )
        .await?;
    let ns = Some(NS);
    create::<ConfigMap>(
        client,
        ns,
        json!({"metadata": {"name": "web-config"}, "data": {"MODE": "prod"}}),
    )
    .await?;
    create::<ConfigMap>(
        client,
        ns,
        json!({"metadata": {"name": "unrelated"}, "data": {"x": "y"}}),
    )
    .await?;
    create::<Secret>(
        client,
        ns,
        json!({"metadata": {"name": "web-secret"}, "stringData": {"PASSWORD": "hunter2"}}),
    )
    .await?;
    create::<ServiceAccount>(client, ns, json!({"metadata": {"name": "web"}})).await?;
    create::<Deployment>(client, ns, json!({
        "metadata": {"name": "web", "labels": {"app": "web", "team": "shop"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "serviceAccountName": "web",
                    "containers": [{
                        "name": "web",
                        "image": "registry.invalid/web:1",
                        "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "web-config", "key": "MODE"}}}],
                        "envFrom": [{"secretRef": {"name": "web-secret"}}],
                        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": "web-config"}}],
                },
            },
        },
    })).await?;
    create::<Service>(client, ns, json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    })).await?;
    create::<Service>(
        client,
        ns,
        json!({
            "metadata": {"name": "db"},
            "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]},
        }),
    )
    .await?;
    create::<HorizontalPodAutoscaler>(client, ns, json!({
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 5,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
        },
    })).await?;
    create::<PodDisruptionBudget>(
        client,
        ns,
        json!({
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        }),
    )
    .await?;
    Ok(())
}

/// The objects named `Kind/name` that exist in `NS` on a cluster: → (mark,
/// resourceVersion).
async fn objects_on(
    client: &Client,
    names: &[&str],
) -> Result<BTreeMap<String, (Option<String>, String)>> {
    let mut seen = BTreeMap::new();
    for kind_name in names {
        let (kind, name) = kind_name.split_once('/').context("Kind/name")?;
        let (group, version) = match kind {
            "Deployment" | "StatefulSet" => ("apps", "v1"),
            "HorizontalPodAutoscaler" => ("autoscaling", "v2"),
            "PodDisruptionBudget" => ("policy", "v1"),
            _ => ("", "v1"),
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
        if let Some(o) = api.get_opt(name).await? {
            seen.insert(
                (*kind_name).to_owned(),
                (
                    o.annotations().get(MARK_ANNOTATION).cloned(),
                    o.resource_version().unwrap_or_default(),
                ),
            );
        }
    }
    Ok(seen)
}

/// Every object of the app on a cluster: kind/name → (mark, resourceVersion).
async fn app_objects(client: &Client) -> Result<BTreeMap<String, (Option<String>, String)>> {
    objects_on(client, &APP_KINDS).await
}

const APP_KINDS: [&str; 7] = [
    "ServiceAccount/web",
    "ConfigMap/web-config",
    "Secret/web-secret",
    "Deployment/web",
    "Service/web",
    "HorizontalPodAutoscaler/web",
    "PodDisruptionBudget/web",
];

async fn until_available(port: &KubeCluster, name: &str, replicas: u32) -> Result<()> {
    eventually(&format!("{}: {name} available", port.name()), || async {
        match port.rollout(&key(name)).await? {
            Rollout::Available { replicas: r } if r == replicas => Ok(Some(())),
            Rollout::Failed { reason } => bail!("rollout failed: {reason}"),
            _ => Ok(None),
        }
    })
    .await
}

async fn until_gone(client: &Client, names: &[&str]) -> Result<()> {
    eventually(&format!("{names:?} are gone"), || async {
        Ok(objects_on(client, names).await?.is_empty().then_some(()))
    })
    .await
}

fn with_logs(result: Result<()>, clusters: &[Cluster]) -> Result<()> {
    if result.is_err() {
        for cluster in clusters {
            eprintln!("{}", cluster.logs());
        }
    }
    result
}

async fn two_clusters(names: [&str; 2]) -> Result<Vec<Cluster>> {
    let specs: Vec<ClusterSpec> = names
        .iter()
        .map(|name| ClusterSpec::named(name).with_nodes(2, "4", "16Gi"))
        .collect();
    start_clusters(&specs).await.context("start two clusters")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrates_an_app_between_two_real_clusters() -> Result<()> {
    let clusters = two_clusters(["kube-a", "kube-b"]).await?;
    let result = migrate(&clusters).await;
    with_logs(result, &clusters)
}

async fn migrate(clusters: &[Cluster]) -> Result<()> {
    let (admin_a, admin_b) = (clusters[0].client().await?, clusters[1].client().await?);
    create_app(&admin_a).await?;
    let a = KubeCluster::from_kubeconfig("a", clusters[0].kubeconfig(), None, vec![]).await?;
    let b = KubeCluster::from_kubeconfig("b", clusters[1].kubeconfig(), None, vec![NS.to_owned()])
        .await?;

    // Inventory, from the watches: the app once its replicas run.
    let inventory = eventually("a: web has 3 available replicas", || async {
        let inventory = a.inventory().await?;
        let done = inventory
            .workloads
            .iter()
            .any(|w| w.key == key("web") && w.available_replicas == 3);
        Ok(done.then_some(inventory))
    })
    .await?;
    assert_eq!(inventory.health, Health::Ready);
    assert_eq!(inventory.nodes, 2);
    assert_eq!(
        inventory.allocatable,
        Resources {
            cpu_millis: 8000,
            memory_bytes: 32 << 30
        }
    );
    assert!(
        inventory.requested.cpu_millis >= 1500
            && inventory.requested.memory_bytes >= 3 * (256 << 20),
        "{:?}",
        inventory.requested
    );
    let web = inventory
        .workloads
        .iter()
        .find(|w| w.key == key("web"))
        .context("web in the inventory")?;
    assert_eq!(web.replicas, 3);
    assert_eq!(
        web.requests,
        Resources {
            cpu_millis: 500,
            memory_bytes: 256 << 20
        }
    );
    assert_eq!(web.labels.get("team").map(String::as_str), Some("shop"));
    assert_eq!(web.mark, None);

    // Export: the graph in apply order, cleaned, and nothing of the neighbours.
    let exported = a.export(&key("web")).await?;
    let names: Vec<String> = exported
        .objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let mut want = vec![format!("Namespace/{NS}")];
    want.extend(APP_KINDS.iter().map(|s| (*s).to_owned()));
    assert_eq!(names, want);
    assert_eq!(exported.replicas, 3);
    for o in &exported.objects {
        for field in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
            "generation",
            "ownerReferences",
        ] {
            assert!(o["metadata"].get(field).is_none(), "{field} left in {o}");
        }
        assert!(o.get("status").is_none(), "status left in {o}");
        let annotations = o["metadata"]["annotations"].as_object();
        for a in [
            "deployment.kubernetes.io/revision",
            "kubectl.kubernetes.io/last-applied-configuration",
        ] {
            assert!(
                annotations.is_none_or(|m| !m.contains_key(a)),
                "{a} left in {o}"
            );
        }
    }
    let service = &exported.objects[5];
    assert!(
        service["spec"].get("clusterIP").is_none() && service["spec"].get("clusterIPs").is_none()
    );
    assert!(
        service["spec"]["ports"][0].get("nodePort").is_none(),
        "{service}"
    );
    assert!(matches!(
        a.export(&key("absent")).await,
        Err(PortError::NotFound { .. })
    ));

    // Apply to B: every object there, marked; the secret's bytes equal.
    b.apply(&exported, &mark("m1")).await?;
    let on_b = app_objects(&admin_b).await?;
    assert_eq!(on_b.keys().map(String::as_str).collect::<Vec<_>>(), {
        let mut sorted = APP_KINDS.to_vec();
        sorted.sort();
        sorted
    });
    for (name, (m, _)) in &on_b {
        assert_eq!(m.as_deref(), Some("m1"), "{name}");
    }
    let secret_a = Api::<Secret>::namespaced(admin_a.clone(), NS)
        .get("web-secret")
        .await?;
    let secret_b = Api::<Secret>::namespaced(admin_b.clone(), NS)
        .get("web-secret")
        .await?;
    assert_eq!(secret_a.data, secret_b.data);
    until_available(&b, "web", 3).await?;

    // Applying again changes nothing.
    let before = app_objects(&admin_b).await?;
    b.apply(&exported, &mark("m1")).await?;
    assert_eq!(
        app_objects(&admin_b).await?,
        before,
        "a repeated apply wrote"
    );

    // Another manager's field is theirs: never forced, reported as a conflict.
    Api::<Deployment>::namespaced(admin_b.clone(), NS)
        .patch(
            "web",
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                 "metadata": {"name": "web"}, "spec": {"replicas": 4}})),
        )
        .await?;
    match b.apply(&exported, &mark("m1")).await {
        Err(PortError::Conflict { reason, .. }) => {
            assert!(reason.contains("someone-else"), "{reason}")
        }
        other => bail!("apply over another manager's field: {other:?}"),
    }

    // Drain the source: it becomes Ferry's (the mark), replicas 0.
    a.scale(&key("web"), 0, Some(&mark("m1"))).await?;
    let drained = Api::<Deployment>::namespaced(admin_a.clone(), NS)
        .get("web")
        .await?;
    assert_eq!(drained.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(
        drained
            .annotations()
            .get(MARK_ANNOTATION)
            .map(String::as_str),
        Some("m1")
    );
    assert!(matches!(
        a.scale(&key("absent"), 1, None).await,
        Err(PortError::NotFound { .. })
    ));

    // Delete on B: a wrong mark deletes nothing (and says whose the copy is); the right
    // one deletes the graph, and only returns once the Deployment is gone.
    let removal = b
        .delete(&key("web"), &exported.dependents(), &mark("m2"))
        .await?;
    assert_eq!(
        removal.workload,
        WorkloadFate::Left {
            holder: Some(mark("m1"))
        }
    );
    assert!(removal.deleted.is_empty(), "{removal:?}");
    assert_eq!(app_objects(&admin_b).await?.len(), APP_KINDS.len());
    let removal = b.delete(&key("web"), &[], &mark("m1")).await?;
    assert_eq!(removal.workload, WorkloadFate::Deleted);
    assert!(
        Api::<Deployment>::namespaced(admin_b.clone(), NS)
            .get_opt("web")
            .await?
            .is_none(),
        "reported deleted while still there"
    );
    until_gone(&admin_b, &APP_KINDS).await?;
    let again = b.delete(&key("web"), &[], &mark("m1")).await?;
    assert_eq!(again.workload, WorkloadFate::Absent);
    assert!(
        Api::<Namespace>::all(admin_b.clone())
            .get_opt(NS)
            .await?
            .is_some(),
        "namespace stays"
    );
    eventually("b: web leaves the inventory", || async {
        let inventory = b.inventory().await?;
        Ok(inventory
            .workloads
            .iter()
            .all(|w| w.key != key("web"))
            .then_some(()))
    })
    .await?;

    // A user's Deployment of the same name is never taken over.
    create::<Deployment>(&admin_b, Some(NS), json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "mine"}},
                 "template": {"metadata": {"labels": {"app": "mine"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.invalid/mine:1"}]}}},
    })).await?;
    match b.apply(&exported, &mark("m3")).await {
        Err(PortError::Conflict { reason, .. }) => {
            assert!(reason.contains("without a Ferry mark"), "{reason}")
        }
        other => bail!("apply over a user's Deployment: {other:?}"),
    }
    let users = Api::<Deployment>::namespaced(admin_b.clone(), NS)
        .get("web")
        .await?;
    assert!(users.annotations().get(MARK_ANNOTATION).is_none());
    assert_eq!(
        b.delete(&key("web"), &exported.dependents(), &mark("m3"))
            .await?
            .workload,
        WorkloadFate::Left { holder: None }
    );
    assert!(
        Api::<Deployment>::namespaced(admin_b.clone(), NS)
            .get_opt("web")
            .await?
            .is_some(),
        "a user's Deployment stays"
    );

    // A workload that fits no node waits with the scheduler's reason.
    create::<Deployment>(&admin_a, Some(NS), json!({
        "metadata": {"name": "huge"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "huge"}},
                 "template": {"metadata": {"labels": {"app": "huge"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.invalid/huge:1",
                                                       "resources": {"requests": {"cpu": "100"}}}]}}},
    })).await?;
    let message = eventually("a: huge reports the scheduler's reason", || async {
        match a.rollout(&key("huge")).await? {
            Rollout::Progressing {
                message,
                available: 0,
                desired: 1,
            } if message.contains("Insufficient cpu") => Ok(Some(message)),
            Rollout::Progressing { .. } => Ok(None),
            other => bail!("huge: {other:?}"),
        }
    })
    .await?;
    assert!(message.contains("0/2 nodes are available"), "{message}");
    Ok(())
}

fn kind_names(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn create_namespace(client: &Client, name: &str, labels: Value) -> Result<()> {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name, "labels": labels}})),
        )
        .await?;
    Ok(())
}

/// PersistentVolumes of `class` for the PV controller to bind claims to: no provisioner
/// runs in these clusters, and kwok never mounts the hostPath.
async fn create_volumes(client: &Client, class: &str, count: usize) -> Result<()> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    for i in 0..count {
        let volume = json!({
            "metadata": {"name": format!("{class}-{i}")},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": class,
                     "hostPath": {"path": format!("/tmp/{class}-{i}")}},
        });
        api.create(&PostParams::default(), &object(volume)).await?;
    }
    Ok(())
}

/// The objects of the database [`create_stateful_app`] makes, besides the StatefulSet's
/// claims.
const PG_KINDS: [&str; 4] = [
    "ConfigMap/pg-config",
    "StatefulSet/pg",
    "Service/pg",
    "PodDisruptionBudget/pg",
];

/// A database in `NS` (which must exist) as a user would create it: a StatefulSet `pg`
/// with its headless governing Service, a ConfigMap and a PDB, and with `claim_class` a
/// claim template of that storage class.
async fn create_stateful_app(
    client: &Client,
    replicas: u32,
    claim_class: Option<&str>,
) -> Result<()> {
    let ns = Some(NS);
    create::<ConfigMap>(
        client,
        ns,
        json!({"metadata": {"name": "pg-config"}, "data": {"POSTGRES_DB": "shop"}}),
    )
    .await?;
    create::<Service>(
        client,
        ns,
        json!({
            "metadata": {"name": "pg"},
            "spec": {"clusterIP": "None", "selector": {"app": "pg"}, "ports": [{"port": 5432}]},
        }),
    )
    .await?;
    let (mounts, templates) = match claim_class {
        Some(class) => (
            json!([{"name": "data", "mountPath": "/var/lib/postgresql"}]),
            json!([{
                "metadata": {"name": "data"},
                "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                         "resources": {"requests": {"storage": "1Gi"}}},
            }]),
        ),
        None => (json!([]), json!([])),
    };
    create::<StatefulSet>(
        client,
        ns,
        json!({
            "metadata": {"name": "pg", "labels": {"app": "pg", "team": "data"}},
            "spec": {
                "replicas": replicas,
                "serviceName": "pg",
                "selector": {"matchLabels": {"app": "pg"}},
                "template": {
                    "metadata": {"labels": {"app": "pg"}},
                    "spec": {
                        "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                        "containers": [{
                            "name": "db",
                            "image": "postgres:17",
                            "envFrom": [{"configMapRef": {"name": "pg-config"}}],
                            "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}},
                            "volumeMounts": mounts,
                        }],
                    },
                },
                "volumeClaimTemplates": templates,
            },
        }),
    )
    .await?;
    create::<PodDisruptionBudget>(
        client,
        ns,
        json!({
            "metadata": {"name": "pg"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "pg"}}},
        }),
    )
    .await?;
    Ok(())
}

/// A Deployment `name` in `namespace` with no replicas (the inventory lists it all the
/// same).
fn idle_deployment(name: &str) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "registry.invalid/idle:1"}]}}},
    })
}

fn idle_stateful_set(name: &str) -> Value {
    let mut stateful_set = idle_deployment(name);
    stateful_set["spec"]["serviceName"] = json!(name);
    stateful_set
}

async fn until_pending_because(port: &KubeCluster, name: &str, reason: &str) -> Result<String> {
    eventually(
        &format!("{}: {name} waits because {reason}", port.name()),
        || async {
            match port.rollout(&key(name)).await? {
                Rollout::Progressing { message, .. } if message.contains(reason) => {
                    Ok(Some(message))
                }
                Rollout::Progressing { .. } => Ok(None),
                other => bail!("{name}: {other:?}"),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrates_a_statefulset_with_its_claim_templates_between_two_real_clusters() -> Result<()> {
    let clusters = two_clusters(["sts-a", "sts-b"]).await?;
    let result = migrate_stateful_set(&clusters).await;
    with_logs(result, &clusters)
}

async fn migrate_stateful_set(clusters: &[Cluster]) -> Result<()> {
    let (admin_a, admin_b) = (clusters[0].client().await?, clusters[1].client().await?);
    create_namespace(&admin_a, NS, json!({})).await?;
    create_volumes(&admin_a, "standard", 2).await?;
    create_stateful_app(&admin_a, 2, Some("standard")).await?;
    // Both kinds named `twin`: the key means the Deployment.
    create::<Deployment>(&admin_a, Some(NS), idle_deployment("twin")).await?;
    create::<StatefulSet>(&admin_a, Some(NS), idle_stateful_set("twin")).await?;
    let a = KubeCluster::from_kubeconfig("a", clusters[0].kubeconfig(), None, vec![]).await?;
    // B names its storage class and its registry mirror differently.
    let b = KubeCluster::from_kubeconfig("b", clusters[1].kubeconfig(), None, vec![NS.to_owned()])
        .await?
        .with_overrides(TargetOverrides {
            storage_classes: string_map(&[("standard", "fast")]),
            image_registries: string_map(&[("docker.io", "mirror.dc1.example")]),
            ..TargetOverrides::default()
        });

    let inventory = eventually("a: pg has 2 available replicas", || async {
        let inventory = a.inventory().await?;
        let done = inventory
            .workloads
            .iter()
            .any(|w| w.key == key("pg") && w.available_replicas == 2);
        Ok(done.then_some(inventory))
    })
    .await?;
    let pg = inventory
        .workloads
        .iter()
        .find(|w| w.key == key("pg"))
        .context("pg in the inventory")?;
    assert_eq!(pg.replicas, 2);
    assert_eq!(
        pg.requests,
        Resources {
            cpu_millis: 250,
            memory_bytes: 128 << 20
        }
    );
    assert_eq!(pg.labels.get("team").map(String::as_str), Some("data"));
    assert_eq!(pg.mark, None);
    // The claims its controller makes from the template, one per replica, with its size:
    // what the broker refuses to leave behind silently.
    assert_eq!(
        pg.claims,
        ["data-pg-0", "data-pg-1"].map(|name| ferry_ports::Claim {
            name: name.to_owned(),
            size_bytes: Some(1 << 30),
        })
    );
    assert_eq!(
        inventory
            .workloads
            .iter()
            .filter(|w| w.key == key("twin"))
            .count(),
        1
    );
    let twin = a.export(&key("twin")).await?;
    assert_eq!(
        kind_names(&twin.objects),
        [format!("Namespace/{NS}"), "Deployment/twin".to_owned()]
    );

    // Export: the governing Service stays headless, the claim templates stay in the
    // StatefulSet, and the claims made from them (data-pg-0, data-pg-1) are not carried.
    let exported = a.export(&key("pg")).await?;
    let mut want = vec![format!("Namespace/{NS}")];
    want.extend(PG_KINDS.iter().map(|s| (*s).to_owned()));
    assert_eq!(kind_names(&exported.objects), want);
    assert_eq!(exported.replicas, 2);
    let stateful_set = &exported.objects[2];
    assert!(stateful_set.get("status").is_none(), "{stateful_set}");
    let template = &stateful_set["spec"]["volumeClaimTemplates"][0];
    assert_eq!(template["spec"]["storageClassName"], "standard");
    assert!(template.get("status").is_none(), "{template}");
    assert_eq!(exported.objects[3]["spec"]["clusterIP"], "None");

    // Apply to B: marked, with B's storage class and registry.
    b.apply(&exported, &mark("m1")).await?;
    for (name, (m, _)) in objects_on(&admin_b, &PG_KINDS).await? {
        assert_eq!(m.as_deref(), Some("m1"), "{name}");
    }
    assert_eq!(objects_on(&admin_b, &PG_KINDS).await?.len(), PG_KINDS.len());
    let on_b = serde_json::to_value(
        Api::<StatefulSet>::namespaced(admin_b.clone(), NS)
            .get("pg")
            .await?,
    )?;
    assert_eq!(
        on_b["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
        "fast"
    );
    let pod_spec = &on_b["spec"]["template"]["spec"];
    assert_eq!(
        pod_spec["containers"][0]["image"],
        "mirror.dc1.example/library/postgres:17"
    );
    assert_eq!(
        pod_spec["initContainers"][0]["image"],
        "mirror.dc1.example/library/busybox:1.36"
    );
    let service_b = Api::<Service>::namespaced(admin_b.clone(), NS)
        .get("pg")
        .await?;
    assert_eq!(
        service_b.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some("None")
    );

    // No volume of B's class yet: the first pod waits for its claim, and says so.
    until_pending_because(&b, "pg", "unbound immediate PersistentVolumeClaims").await?;
    create_volumes(&admin_b, "fast", 2).await?;
    until_available(&b, "pg", 2).await?;

    // Applying again changes nothing.
    let before = objects_on(&admin_b, &PG_KINDS).await?;
    b.apply(&exported, &mark("m1")).await?;
    assert_eq!(
        objects_on(&admin_b, &PG_KINDS).await?,
        before,
        "a repeated apply wrote"
    );

    // Drain the source: marked, no replicas, and its rollout to zero completes.
    a.scale(&key("pg"), 0, Some(&mark("m1"))).await?;
    let drained = Api::<StatefulSet>::namespaced(admin_a.clone(), NS)
        .get("pg")
        .await?;
    assert_eq!(drained.spec.as_ref().and_then(|s| s.replicas), Some(0));
    assert_eq!(
        drained
            .annotations()
            .get(MARK_ANNOTATION)
            .map(String::as_str),
        Some("m1")
    );
    until_available(&a, "pg", 0).await?;

    // Delete on B: a wrong mark deletes nothing; the right one deletes the graph, and
    // the claims the StatefulSet controller made from the templates applied there (they
    // carry the mark, copied from the templates).
    let claim_b = Api::<PersistentVolumeClaim>::namespaced(admin_b.clone(), NS)
        .get("data-pg-0")
        .await?;
    assert_eq!(
        claim_b
            .annotations()
            .get(MARK_ANNOTATION)
            .map(String::as_str),
        Some("m1")
    );
    let removal = b
        .delete(&key("pg"), &exported.dependents(), &mark("m2"))
        .await?;
    assert!(matches!(removal.workload, WorkloadFate::Left { .. }));
    assert_eq!(objects_on(&admin_b, &PG_KINDS).await?.len(), PG_KINDS.len());
    b.delete(&key("pg"), &exported.dependents(), &mark("m1"))
        .await?;
    until_gone(&admin_b, &PG_KINDS).await?;
    eventually("b: the controller's claims are gone", || async {
        let claims = Api::<PersistentVolumeClaim>::namespaced(admin_b.clone(), NS)
            .list(&ListParams::default())
            .await?;
        Ok(claims
            .items
            .iter()
            .all(|c| c.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await?;
    eventually("b: pg leaves the inventory", || async {
        let inventory = b.inventory().await?;
        Ok(inventory
            .workloads
            .iter()
            .all(|w| w.key != key("pg"))
            .then_some(()))
    })
    .await?;
    Ok(())
}

/// What the source's volume controllers write on a claim they bind.
const BINDING_ANNOTATIONS: [&str; 5] = [
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployments_claims_and_the_targets_overrides_arrive_on_the_target() -> Result<()> {
    let clusters = two_clusters(["pvc-a", "pvc-b"]).await?;
    let result = claims_and_overrides(&clusters).await;
    with_logs(result, &clusters)
}

async fn claims_and_overrides(clusters: &[Cluster]) -> Result<()> {
    let (admin_a, admin_b) = (clusters[0].client().await?, clusters[1].client().await?);
    create_namespace(&admin_a, NS, json!({})).await?;
    create_volumes(&admin_a, "standard", 1).await?;
    create::<PersistentVolumeClaim>(
        &admin_a,
        Some(NS),
        json!({
            "metadata": {"name": "uploads", "labels": {"app": "files"}},
            "spec": {"storageClassName": "standard", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}},
        }),
    )
    .await?;
    create::<Deployment>(&admin_a, Some(NS), json!({
        "metadata": {"name": "files", "labels": {"app": "files"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "files"}},
            "template": {
                "metadata": {"labels": {"app": "files"}},
                "spec": {
                    "initContainers": [{"name": "init", "image": "busybox:1.36"}],
                    "containers": [
                        {"name": "web", "image": "nginx:1.27",
                         "volumeMounts": [{"name": "uploads", "mountPath": "/srv"}]},
                        {"name": "sidecar", "image": "registry.invalid/sidecar:1"},
                    ],
                    "volumes": [{"name": "uploads", "persistentVolumeClaim": {"claimName": "uploads"}}],
                },
            },
        },
    })).await?;
    // Bound on the source: the volume name and annotations that cleaning must take away.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin_a.clone(), NS);
    let bound = eventually("a: uploads is bound", || async {
        let claim = claims.get("uploads").await?;
        let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
        Ok((phase == Some("Bound")).then_some(claim))
    })
    .await?;
    assert!(
        bound
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .is_some()
    );
    assert!(
        bound
            .annotations()
            .contains_key("pv.kubernetes.io/bind-completed"),
        "{:?}",
        bound.annotations()
    );

    let a = KubeCluster::from_kubeconfig("a", clusters[0].kubeconfig(), None, vec![]).await?;
    let exported = a.export(&key("files")).await?;
    assert_eq!(
        kind_names(&exported.objects),
        [
            format!("Namespace/{NS}"),
            "PersistentVolumeClaim/uploads".to_owned(),
            "Deployment/files".to_owned()
        ]
    );
    let claim = &exported.objects[1];
    assert!(claim["spec"].get("volumeName").is_none(), "{claim}");
    assert!(claim.get("status").is_none(), "{claim}");
    for annotation in BINDING_ANNOTATIONS {
        assert!(
            claim["metadata"]["annotations"].get(annotation).is_none(),
            "{annotation} left in {claim}"
        );
    }
    assert_eq!(claim["spec"]["storageClassName"], "standard");

    let b = KubeCluster::from_kubeconfig("b", clusters[1].kubeconfig(), None, vec![])
        .await?
        .with_overrides(TargetOverrides {
            image_registries: string_map(&[("docker.io", "mirror.dc1.example")]),
            storage_classes: string_map(&[("standard", "fast")]),
            labels: string_map(&[("dc", "dc1")]),
            annotations: string_map(&[("example.com/owner", "dc1-platform")]),
        });
    b.apply(&exported, &mark("m1")).await?;

    // Read back on B: the overrides are in the metadata and the specs they name, and
    // nowhere else.
    let claim_b = serde_json::to_value(
        Api::<PersistentVolumeClaim>::namespaced(admin_b.clone(), NS)
            .get("uploads")
            .await?,
    )?;
    assert_eq!(claim_b["spec"]["storageClassName"], "fast", "{claim_b}");
    assert!(claim_b["spec"].get("volumeName").is_none(), "{claim_b}");
    assert_eq!(claim_b["status"]["phase"], "Pending", "{claim_b}");
    assert_eq!(
        claim_b["metadata"]["labels"],
        json!({"app": "files", "dc": "dc1"})
    );
    let mut annotations = claim_b["metadata"]["annotations"].clone();
    let overridden = annotations
        .as_object_mut()
        .and_then(|a| a.remove(OVERRIDDEN_ANNOTATION))
        .context("what the overrides changed is recorded")?;
    assert_eq!(
        annotations,
        json!({"example.com/owner": "dc1-platform", MARK_ANNOTATION: "m1"})
    );
    assert!(
        overridden
            .as_str()
            .is_some_and(|r| r.contains("\"was\":\"standard\"")),
        "{overridden}"
    );
    let files_b = serde_json::to_value(
        Api::<Deployment>::namespaced(admin_b.clone(), NS)
            .get("files")
            .await?,
    )?;
    let metadata = &files_b["metadata"];
    assert_eq!(metadata["labels"], json!({"app": "files", "dc": "dc1"}));
    assert_eq!(
        metadata["annotations"]["example.com/owner"], "dc1-platform",
        "{metadata}"
    );
    assert_eq!(
        files_b["spec"]["selector"],
        json!({"matchLabels": {"app": "files"}})
    );
    let template = &files_b["spec"]["template"];
    assert_eq!(template["metadata"], json!({"labels": {"app": "files"}}));
    let images = |field: &str| -> Vec<Value> {
        template["spec"][field]
            .as_array()
            .map(|cs| cs.iter().map(|c| c["image"].clone()).collect())
            .unwrap_or_default()
    };
    assert_eq!(
        images("containers"),
        [
            json!("mirror.dc1.example/library/nginx:1.27"),
            json!("registry.invalid/sidecar:1")
        ]
    );
    assert_eq!(
        images("initContainers"),
        [json!("mirror.dc1.example/library/busybox:1.36")]
    );
    let namespace_b = Api::<Namespace>::all(admin_b.clone()).get(NS).await?;
    assert_eq!(
        namespace_b.labels().get("dc").map(String::as_str),
        Some("dc1")
    );

    // Exported from B, the objects are as they were on A: B's overrides stay with B, so
    // that the next cluster gets its own on the original, never on top of B's.
    let back = b.export(&key("files")).await?;
    for (on_a, from_b) in exported.objects.iter().zip(&back.objects) {
        let mut from_b = from_b.clone();
        let mut on_a = on_a.clone();
        for object in [&mut from_b, &mut on_a] {
            // The mark (B's copy is m1's) and the namespace B kept are not the overrides'.
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                if let Some(a) = metadata
                    .get_mut("annotations")
                    .and_then(Value::as_object_mut)
                {
                    a.remove(MARK_ANNOTATION);
                }
                if metadata
                    .get("annotations")
                    .and_then(Value::as_object)
                    .is_some_and(|a| a.is_empty())
                {
                    metadata.remove("annotations");
                }
            }
            if object["kind"] == "Namespace" {
                *object = json!(null);
            }
        }
        assert_eq!(from_b, on_a, "exported from B");
    }

    // Nothing binds the claim on B (no volume of class `fast`): the pod waits, and says
    // why. Moving the data is not the adapter's to do.
    until_pending_because(&b, "files", "unbound immediate PersistentVolumeClaims").await?;

    // Delete on B takes the claim too (it carries the mark); the source's stays bound.
    b.delete(&key("files"), &exported.dependents(), &mark("m1"))
        .await?;
    until_gone(
        &admin_b,
        &["Deployment/files", "PersistentVolumeClaim/uploads"],
    )
    .await?;
    assert_eq!(
        objects_on(&admin_a, &["PersistentVolumeClaim/uploads"])
            .await?
            .len(),
        1
    );
    Ok(())
}

const MANAGED: (&str, &str) = ("ferry.dev/managed", "yes");

/// Waits until the inventory reports exactly the workloads `want` (`namespace/name`,
/// sorted).
async fn until_workloads(port: &KubeCluster, want: &[&str]) -> Result<()> {
    eventually(&format!("{}: workloads {want:?}", port.name()), || async {
        let keys: Vec<String> = port
            .inventory()
            .await?
            .workloads
            .iter()
            .map(|w| w.key.to_string())
            .collect();
        ensure!(keys == want, "reported {keys:?}");
        Ok(Some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_follows_a_namespace_label() -> Result<()> {
    let clusters = start_clusters(&[ClusterSpec::named("label").with_nodes(1, "4", "16Gi")])
        .await
        .context("start a cluster")?;
    let result = namespace_label(&clusters).await;
    with_logs(result, &clusters)
}

async fn namespace_label(clusters: &[Cluster]) -> Result<()> {
    let admin = clusters[0].client().await?;
    let (label, value) = MANAGED;
    for (namespace, labels) in [
        ("shop", json!({label: value})),
        ("lab", json!({})),
        ("ops", json!({label: value})),
    ] {
        create_namespace(&admin, namespace, labels).await?;
        create::<Deployment>(&admin, Some(namespace), idle_deployment("web")).await?;
    }
    create::<StatefulSet>(&admin, Some("ops"), idle_stateful_set("cache")).await?;
    let path = clusters[0].kubeconfig();
    let connect = |name: &'static str, namespaces: &[&str]| {
        let namespaces = namespaces.iter().map(|n| (*n).to_owned()).collect();
        KubeCluster::from_kubeconfig(name, path, None, namespaces)
    };
    let everything = connect("everything", &[]).await?;
    let labelled = connect("labelled", &[])
        .await?
        .with_namespace_label(label.to_owned(), value.to_owned());
    let listed_and_labelled = connect("listed-and-labelled", &["shop", "lab"])
        .await?
        .with_namespace_label(label.to_owned(), value.to_owned());

    // (cluster, the workloads it reports): the label alone, and the label within the list.
    let cases = [
        (
            &everything,
            ["lab/web", "ops/cache", "ops/web", "shop/web"].as_slice(),
        ),
        (&labelled, &["ops/cache", "ops/web", "shop/web"]),
        (&listed_and_labelled, &["shop/web"]),
    ];
    for (port, want) in cases {
        until_workloads(port, want).await?;
    }

    // The label moves (lab gains it, shop loses it), and the inventories follow.
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for (namespace, labels) in [
        ("lab", json!({label: value})),
        ("shop", json!({label: null})),
    ] {
        namespaces
            .patch(
                namespace,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": labels}})),
            )
            .await?;
    }
    let cases = [
        (
            &everything,
            ["lab/web", "ops/cache", "ops/web", "shop/web"].as_slice(),
        ),
        (&labelled, &["lab/web", "ops/cache", "ops/web"]),
        (&listed_and_labelled, &["lab/web"]),
    ];
    for (port, want) in cases {
        until_workloads(port, want).await?;
    }
    Ok(())
}

fn cluster_role(name: &str, drop_deployment_patch: bool) -> Result<ClusterRole> {
    let mut role = manifest_documents(CLUSTER_ROLE_YAML)?
        .into_iter()
        .next()
        .context("one document")?;
    role["metadata"]["name"] = json!(name);
    if drop_deployment_patch {
        for rule in role["rules"].as_array_mut().context("rules")? {
            if rule["resources"] == json!(["deployments"]) {
                rule["verbs"]
                    .as_array_mut()
                    .context("verbs")?
                    .retain(|v| v != "patch");
            }
        }
    }
    Ok(serde_json::from_value(role)?)
}

/// An adapter acting as a ServiceAccount bound to `role`, once the binding is in force.
async fn as_identity(cluster: &Cluster, account: &str, role: &str) -> Result<KubeCluster> {
    let identity = cluster.identity(account, role).await?;
    let client = client_from(&identity.kubeconfig).await?;
    // RBAC bindings take effect through the authorizer's informer: allow it a moment.
    eventually(&format!("{account} can list nodes"), || {
        let nodes: Api<Node> = Api::all(client.clone());
        async move { Ok(nodes.list(&ListParams::default()).await.ok().map(|_| ())) }
    })
    .await?;
    KubeCluster::from_kubeconfig(cluster.name(), &identity.kubeconfig, None, vec![])
        .await
        .map_err(Into::into)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_role_suffices_and_a_missing_verb_is_named() -> Result<()> {
    let clusters = two_clusters(["rbac-a", "rbac-b"]).await?;
    let result = least_privilege(&clusters).await;
    with_logs(result, &clusters)
}

async fn least_privilege(clusters: &[Cluster]) -> Result<()> {
    for cluster in clusters {
        let roles: Api<ClusterRole> = Api::all(cluster.client().await?);
        roles
            .create(
                &PostParams::default(),
                &cluster_role("ferry-adapter", false)?,
            )
            .await?;
        roles
            .create(
                &PostParams::default(),
                &cluster_role("ferry-no-patch", true)?,
            )
            .await?;
    }
    let admin_b = clusters[1].client().await?;
    create_app(&clusters[0].client().await?).await?;
    let a = as_identity(&clusters[0], "ferry", "ferry-adapter").await?;
    let b = as_identity(&clusters[1], "ferry", "ferry-adapter").await?;
    let weak_b = as_identity(&clusters[1], "ferry-weak", "ferry-no-patch").await?;

    eventually("a: web available, seen with the role", || async {
        let inventory = a.inventory().await?;
        Ok(inventory
            .workloads
            .iter()
            .any(|w| w.key == key("web") && w.available_replicas == 3)
            .then_some(()))
    })
    .await?;
    let exported = a.export(&key("web")).await?;
    assert_eq!(exported.objects.len(), 8);

    // Without `patch` on deployments, the error names what to grant.
    match weak_b.apply(&exported, &mark("m1")).await {
        Err(PortError::Rejected { what, reason, .. }) => {
            ensure!(what.contains("patch deployments.apps"), "{what}");
            ensure!(
                reason.contains("permission missing") && reason.contains("\"patch\""),
                "{reason}"
            );
        }
        other => bail!("apply without patch on deployments: {other:?}"),
    }
    weak_b
        .inventory()
        .await
        .context("the weak role still reads")?;

    // The shipped role does the whole migration (and resumes the refused apply).
    b.apply(&exported, &mark("m1")).await?;
    until_available(&b, "web", 3).await?;
    match weak_b.scale(&key("web"), 1, None).await {
        Err(PortError::Rejected { what, .. }) => {
            ensure!(what.contains("patch deployments.apps"), "{what}")
        }
        other => bail!("scale without patch on deployments: {other:?}"),
    }
    // The drain adopts what was exported (the role may patch each of those kinds),
    // so that the source's delete takes it all: nothing of the app stays on A.
    let drained = a
        .drain(&key("web"), &exported.dependents(), &mark("m1"))
        .await?;
    assert_eq!(
        drained.adopted.len(),
        exported.dependents().len(),
        "{drained:?}"
    );
    b.delete(&key("web"), &exported.dependents(), &mark("m1"))
        .await?;
    until_gone(&admin_b, &APP_KINDS).await?;
    a.delete(&key("web"), &exported.dependents(), &mark("m1"))
        .await?;
    let admin_a = clusters[0].client().await?;
    until_gone(&admin_a, &APP_KINDS).await?;

    // A StatefulSet moves with the same role.
    create_stateful_app(&admin_a, 1, None).await?;
    eventually("a: pg available, seen with the role", || async {
        let inventory = a.inventory().await?;
        Ok(inventory
            .workloads
            .iter()
            .any(|w| w.key == key("pg") && w.available_replicas == 1)
            .then_some(()))
    })
    .await?;
    let exported = a.export(&key("pg")).await?;
    b.apply(&exported, &mark("m2")).await?;
    until_available(&b, "pg", 1).await?;
    a.scale(&key("pg"), 0, Some(&mark("m2"))).await?;
    b.delete(&key("pg"), &exported.dependents(), &mark("m2"))
        .await?;
    until_gone(&admin_b, &PG_KINDS).await?;

    // An inventory limited by a namespace label watches namespaces, which the role allows.
    let labelled = as_identity(&clusters[0], "ferry-labelled", "ferry-adapter")
        .await?
        .with_namespace_label(MANAGED.0.to_owned(), MANAGED.1.to_owned());
    let inventory = labelled
        .inventory()
        .await
        .context("the role lets the inventory watch namespaces")?;
    assert_eq!(inventory.workloads, [], "no namespace carries the label");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_that_does_not_answer_is_unreachable() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("ferry-kube-unreachable-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("kubeconfig");
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\n\
         clusters: [{name: gone, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
         users: [{name: u, user: {token: t}}]\n\
         contexts: [{name: gone, context: {cluster: gone, user: u}}]\n",
    )?;
    // With the default wait for the watches' first lists (30 s): a watch that failed is
    // reported at once, rather than holding up every census for 30 s.
    let port = KubeCluster::from_kubeconfig("gone", &path, None, vec![]).await?;
    let asked = Instant::now();
    let error = port.inventory().await.expect_err("nothing answers");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        asked.elapsed()
    );
    assert!(
        matches!(error, PortError::Unreachable { .. }) && error.is_transient(),
        "{error}"
    );
    let port = port.with_ready_timeout(Duration::from_secs(3));
    let error = port.export(&key("web")).await.expect_err("nothing answers");
    assert!(error.is_transient(), "{error}");
    let missing = KubeCluster::from_kubeconfig("x", &dir.join("absent"), None, vec![]).await;
    assert!(matches!(missing, Err(PortError::Rejected { .. })));
    let wrong_context = KubeCluster::from_kubeconfig("x", &path, Some("nope"), vec![]).await;
    assert!(matches!(wrong_context, Err(PortError::Rejected { .. })));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A token source the test turns: none, a wrong one, then a real one.
struct TurnedToken(std::sync::Mutex<Result<String, String>>);

impl ferry_adapter_kubernetes::BearerToken for TurnedToken {
    fn current(&self) -> Result<String, String> {
        self.0
            .lock()
            .map_or_else(|_| Err("lock poisoned".to_owned()), |t| t.clone())
    }
}

impl TurnedToken {
    fn set(&self, token: Result<String, String>) {
        if let Ok(mut current) = self.0.lock() {
            *current = token;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_token_takes_effect_without_a_new_client() -> Result<()> {
    use base64::Engine as _;
    let clusters = start_clusters(&[ClusterSpec::named("token-a").with_nodes(2, "4", "8Gi")])
        .await
        .context("one cluster")?;
    let cluster = &clusters[0];
    let identity = cluster.identity("rotated", "cluster-admin").await?;
    let token = std::sync::Arc::new(TurnedToken(std::sync::Mutex::new(Err(
        "the issuer has no token yet".to_owned(),
    ))));
    let credentials = ferry_adapter_kubernetes::Credentials::Endpoint {
        server: cluster.server().to_owned(),
        ca_base64: base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(cluster.ca_file())?),
        token: token.clone(),
    };
    // The Debug form of credentials never shows the token.
    assert!(!format!("{credentials:?}").contains(&identity.token));
    let port = KubeCluster::connect("token-a", &credentials, vec![])
        .await?
        .with_ready_timeout(Duration::from_secs(3));

    let error = port.inventory().await.expect_err("no token");
    assert!(
        error.to_string().contains("the issuer has no token yet"),
        "{error}"
    );
    token.set(Ok("not-a-valid-token".to_owned()));
    let error = port.export(&key("web")).await.expect_err("a wrong token");
    assert!(error.to_string().contains("Unauthorized"), "{error}");

    // The issuer refreshes: the same client's next requests, and its watches' next
    // connections, carry the new token.
    token.set(Ok(identity.token.clone()));
    let inventory = eventually("an inventory with the refreshed token", || async {
        Ok(port.inventory().await.ok())
    })
    .await?;
    assert_eq!(inventory.nodes, 2);
    assert_eq!(inventory.health, Health::Ready);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn there_and_back_leaves_nothing_behind_and_a_rollback_removes_what_it_created() -> Result<()>
{
    let clusters = two_clusters(["trip-a", "trip-b"]).await?;
    let result = there_and_back(&clusters).await;
    with_logs(result, &clusters)
}

/// A user's app on A (created as a user would, unmarked) moves to B and back to A, with
/// each cluster's overrides; a refused apply on B is rolled back; and a neighbour on A
/// that shares the app's ConfigMap keeps it.
async fn there_and_back(clusters: &[Cluster]) -> Result<()> {
    let (admin_a, admin_b) = (clusters[0].client().await?, clusters[1].client().await?);
    create_app(&admin_a).await?;
    // A neighbour that reads the app's ConfigMap: the drain must not take it over.
    create::<Deployment>(&admin_a, Some(NS), json!({
        "metadata": {"name": "api"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "api"}},
                 "template": {"metadata": {"labels": {"app": "api"}},
                              "spec": {"containers": [{"name": "api", "image": "registry.invalid/api:1",
                                  "envFrom": [{"configMapRef": {"name": "web-config"}}]}]}}},
    })).await?;
    for cluster in clusters {
        Api::<ClusterRole>::all(cluster.client().await?)
            .create(
                &PostParams::default(),
                &cluster_role("ferry-adapter", false)?,
            )
            .await?;
    }
    let overrides = |site: &str| TargetOverrides {
        image_registries: string_map(&[("registry.invalid", &format!("mirror-{site}.invalid"))]),
        labels: string_map(&[("arrived-on", site)]),
        ..TargetOverrides::default()
    };
    let a = as_identity(&clusters[0], "ferry", "ferry-adapter")
        .await?
        .with_overrides(overrides("a"));
    let b = as_identity(&clusters[1], "ferry", "ferry-adapter")
        .await?
        .with_overrides(overrides("b"));
    until_available(&a, "web", 3).await?;

    // 1. A refused apply on B (the identity may not patch Deployments there) is rolled
    //    back: the ServiceAccount, ConfigMap and Secret it had created go, although the
    //    Deployment never existed there.
    Api::<ClusterRole>::all(admin_b.clone())
        .create(&PostParams::default(), &cluster_role("ferry-weak", true)?)
        .await?;
    let weak_b = as_identity(&clusters[1], "ferry-weak", "ferry-weak").await?;
    let exported = a.export(&key("web")).await?;
    let mut recorded: Vec<String> = exported
        .dependents()
        .iter()
        .map(|d| format!("{}/{}", d.kind, d.name))
        .collect();
    recorded.sort();
    let mut expected: Vec<String> = APP_KINDS
        .iter()
        .filter(|k| **k != "Deployment/web")
        .map(|k| (*k).to_owned())
        .collect();
    expected.sort();
    assert_eq!(recorded, expected, "the dependents a migration records");
    match weak_b.apply(&exported, &mark("m0")).await {
        Err(PortError::Rejected { .. }) => {}
        other => bail!("apply without patch on deployments: {other:?}"),
    }
    let half = objects_on(&admin_b, &APP_KINDS).await?;
    ensure!(
        half.contains_key("Secret/web-secret") && !half.contains_key("Deployment/web"),
        "the refused apply left {half:?}"
    );
    let removal = weak_b
        .delete(&key("web"), &exported.dependents(), &mark("m0"))
        .await?;
    assert_eq!(removal.workload, WorkloadFate::Absent);
    until_gone(&admin_b, &APP_KINDS).await?;

    // 2. Objects of the same name on B that are not Ferry's are all named at once, before
    //    anything is written.
    create::<ConfigMap>(
        &admin_b,
        Some(NS),
        json!({"metadata": {"name": "web-config"}, "data": {"MODE": "other"}}),
    )
    .await?;
    create::<Secret>(
        &admin_b,
        Some(NS),
        json!({"metadata": {"name": "web-secret"}, "stringData": {"PASSWORD": "other"}}),
    )
    .await?;
    match b.apply(&exported, &mark("m1")).await {
        Err(PortError::Conflict { reason, .. }) => ensure!(
            reason.contains("ConfigMap web-config") && reason.contains("Secret web-secret"),
            "{reason}"
        ),
        other => bail!("apply over two of a user's objects: {other:?}"),
    }
    assert_eq!(
        objects_on(&admin_b, &APP_KINDS).await?.len(),
        2,
        "nothing was written"
    );
    for (kind, name) in [("ConfigMap", "web-config"), ("Secret", "web-secret")] {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", kind));
        Api::<DynamicObject>::namespaced_with(admin_b.clone(), NS, &resource)
            .delete(name, &Default::default())
            .await?;
    }
    until_gone(&admin_b, &["ConfigMap/web-config", "Secret/web-secret"]).await?;

    // 3. A to B: applied with B's overrides, the source drained and its objects adopted
    //    but the shared ConfigMap; the source's delete then leaves nothing of web on A.
    b.apply(&exported, &mark("m1")).await?;
    until_available(&b, "web", 3).await?;
    let drained = a
        .drain(&key("web"), &exported.dependents(), &mark("m1"))
        .await?;
    let kept: Vec<String> = drained.kept.iter().map(|k| k.object.to_string()).collect();
    assert_eq!(kept, ["ConfigMap web-config"], "{drained:?}");
    assert!(drained.kept[0].reason.contains("api"), "{drained:?}");
    let removal = a
        .delete(&key("web"), &exported.dependents(), &mark("m1"))
        .await?;
    assert_eq!(removal.workload, WorkloadFate::Deleted, "{removal:?}");
    assert!(
        Api::<Deployment>::namespaced(admin_a.clone(), NS)
            .get_opt("web")
            .await?
            .is_none(),
        "reported deleted while still there"
    );
    let left = objects_on(&admin_a, &APP_KINDS).await?;
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        ["ConfigMap/web-config"],
        "only the shared ConfigMap stays on A"
    );

    // 4. B back to A: not blocked by the shared ConfigMap (the same data), applied with
    //    A's overrides and none of B's.
    let back = b.export(&key("web")).await?;
    a.apply(&back, &mark("m2")).await?;
    until_available(&a, "web", 3).await?;
    let web = Api::<Deployment>::namespaced(admin_a.clone(), NS)
        .get("web")
        .await?;
    assert_eq!(
        web.labels().get("arrived-on").map(String::as_str),
        Some("a")
    );
    let image = web
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].image.clone());
    assert_eq!(image, Some(Some("mirror-a.invalid/web:1".to_owned())));
    let shared = Api::<ConfigMap>::namespaced(admin_a.clone(), NS)
        .get("web-config")
        .await?;
    assert!(
        shared.annotations().get(MARK_ANNOTATION).is_none(),
        "the shared ConfigMap is still the user's"
    );
    b.drain(&key("web"), &back.dependents(), &mark("m2"))
        .await?;
    b.delete(&key("web"), &back.dependents(), &mark("m2"))
        .await?;
    until_gone(&admin_b, &APP_KINDS).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordoned_nodes_are_no_room() -> Result<()> {
    let clusters = start_clusters(&[ClusterSpec::named("cordon").with_nodes(2, "4", "16Gi")])
        .await
        .context("start a cluster")?;
    let result = cordoned(&clusters).await;
    with_logs(result, &clusters)
}

async fn cordoned(clusters: &[Cluster]) -> Result<()> {
    let admin = clusters[0].client().await?;
    let port = KubeCluster::from_client("cordon", admin.clone(), vec![]);
    let nodes: Api<Node> = Api::all(admin);
    let names: Vec<String> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    ensure!(names.len() == 2, "nodes: {names:?}");
    let whole = eventually("both nodes counted", || async {
        let inventory = port.inventory().await?;
        Ok((inventory.allocatable.cpu_millis == 8_000).then_some(inventory.allocatable))
    })
    .await?;
    // `kubectl cordon` on each node in turn.
    let cordon = |name: String, unschedulable: bool| {
        let nodes = nodes.clone();
        async move {
            nodes
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"unschedulable": unschedulable}})),
                )
                .await
                .with_context(|| format!("cordon {name}"))
        }
    };
    cordon(names[0].clone(), true).await?;
    let half = eventually("one cordoned node no longer counted", || async {
        let inventory = port.inventory().await?;
        Ok((inventory.allocatable.cpu_millis == 4_000).then_some(inventory))
    })
    .await?;
    ensure!(
        half.allocatable.memory_bytes * 2 == whole.memory_bytes,
        "{half:?} of {whole:?}"
    );
    cordon(names[1].clone(), true).await?;
    let none = eventually("no room with every node cordoned", || async {
        let inventory = port.inventory().await?;
        Ok((inventory.allocatable == Resources::default()).then_some(inventory))
    })
    .await?;
    // Cordoned nodes are still Ready: the member is healthy, it only has no room.
    ensure!(none.health == Health::Ready && none.nodes == 2, "{none:?}");
    cordon(names[0].clone(), false).await?;
    eventually("an uncordoned node counted again", || async {
        let inventory = port.inventory().await?;
        Ok((inventory.allocatable.cpu_millis == 4_000).then_some(()))
    })
    .await
}
