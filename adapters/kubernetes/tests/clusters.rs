//! The adapter against real Kubernetes control planes (ferry-testenv): a realistic app is
//! inventoried and exported from cluster A, applied to cluster B, rolled out, drained and
//! deleted; ownership and field conflicts are refused; an unfit workload reports the
//! scheduler's reason; the shipped ClusterRole suffices and a missing verb is named.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_adapter_kubernetes::{CLUSTER_ROLE_YAML, KubeCluster, MARK_ANNOTATION};
use ferry_ports::{ClusterPort, Health, Mark, PortError, Resources, Rollout, WorkloadKey};
use ferry_testenv::{Cluster, ClusterSpec, client_from, start_clusters};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

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

/// Every object of the app on a cluster: kind/name → (mark, resourceVersion).
async fn app_objects(client: &Client) -> Result<BTreeMap<String, (Option<String>, String)>> {
    let mut seen = BTreeMap::new();
    macro_rules! record {
        ($kind:ty, $name:expr) => {
            let api: Api<$kind> = Api::namespaced(client.clone(), NS);
            if let Some(o) = api.get_opt($name).await? {
                seen.insert(
                    format!("{}/{}", <$kind as Resource>::kind(&()), $name),
                    (
                        o.annotations().get(MARK_ANNOTATION).cloned(),
                        o.resource_version().unwrap_or_default(),
                    ),
                );
            }
        };
    }
    record!(ServiceAccount, "web");
    record!(ConfigMap, "web-config");
    record!(Secret, "web-secret");
    record!(Deployment, "web");
    record!(Service, "web");
    record!(HorizontalPodAutoscaler, "web");
    record!(PodDisruptionBudget, "web");
    Ok(seen)
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

async fn until_gone(client: &Client) -> Result<()> {
    eventually("the app's marked objects are gone", || async {
        Ok(app_objects(client).await?.is_empty().then_some(()))
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

    // Delete on B: a wrong mark deletes nothing; the right one deletes the graph.
    match b.delete(&key("web"), &mark("m2")).await {
        Err(PortError::Conflict { .. }) => {}
        other => bail!("delete with a wrong mark: {other:?}"),
    }
    assert_eq!(app_objects(&admin_b).await?.len(), APP_KINDS.len());
    b.delete(&key("web"), &mark("m1")).await?;
    until_gone(&admin_b).await?;
    b.delete(&key("web"), &mark("m1")).await?;
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
    assert!(matches!(
        b.delete(&key("web"), &mark("m3")).await,
        Err(PortError::Conflict { .. })
    ));

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

/// A YAML document as JSON (the manifest is plain maps, lists and strings).
fn yaml_to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), yaml_to_json(v))))
                .collect(),
        ),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::String(s) | Yaml::Real(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Boolean(b) => Value::Bool(*b),
        _ => Value::Null,
    }
}

fn cluster_role(name: &str, drop_deployment_patch: bool) -> Result<ClusterRole> {
    let docs = YamlLoader::load_from_str(CLUSTER_ROLE_YAML)?;
    let mut role = yaml_to_json(docs.first().context("one document")?);
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
    a.scale(&key("web"), 0, Some(&mark("m1"))).await?;
    b.delete(&key("web"), &mark("m1")).await?;
    until_gone(&admin_b).await?;
    // On the drained source only the Deployment carries the mark (the scale put it
    // there): the user's ConfigMaps and Secrets stay.
    a.delete(&key("web"), &mark("m1")).await?;
    let admin_a = clusters[0].client().await?;
    let left = eventually("a: the drained Deployment is gone", || async {
        let left = app_objects(&admin_a).await?;
        Ok((!left.contains_key("Deployment/web")).then_some(left))
    })
    .await?;
    assert_eq!(left.len(), APP_KINDS.len() - 1, "{left:?}");
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
    let port = KubeCluster::from_kubeconfig("gone", &path, None, vec![])
        .await?
        .with_ready_timeout(Duration::from_secs(3));
    let error = port.inventory().await.expect_err("nothing answers");
    assert!(
        matches!(error, PortError::Unreachable { .. }) && error.is_transient(),
        "{error}"
    );
    let error = port.export(&key("web")).await.expect_err("nothing answers");
    assert!(error.is_transient(), "{error}");
    let missing = KubeCluster::from_kubeconfig("x", &dir.join("absent"), None, vec![]).await;
    assert!(matches!(missing, Err(PortError::Rejected { .. })));
    let wrong_context = KubeCluster::from_kubeconfig("x", &path, Some("nope"), vec![]).await;
    assert!(matches!(wrong_context, Err(PortError::Rejected { .. })));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
