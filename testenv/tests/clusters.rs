//! Smoke tests proving the test clusters are real Kubernetes: in each of three clusters a
//! Deployment becomes available on kwok nodes and its Service gets endpoints, a pod that
//! fits no node stays Pending with the scheduler's reason, a restricted identity gets
//! exactly what its ClusterRole grants, and every process is gone after the clusters drop.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_testenv::{Cluster, ClusterSpec, client_from, start_clusters};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
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
            bail!("{what}: not within {WAIT:?} (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("test objects are valid")
}

async fn deployment_becomes_available_with_endpoints(cluster: &Cluster) -> Result<()> {
    let client = cluster.client().await?;
    let namespace = "smoke";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": namespace}})),
        )
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    deployments
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{
                            "name": "web",
                            "image": "registry.invalid/web:1",
                            "ports": [{"containerPort": 8080}],
                            "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
                        }]},
                    },
                },
            })),
        )
        .await?;
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
            })),
        )
        .await?;
    eventually(&format!("{}: 3 available replicas", cluster.name()), || {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("web").await?;
            let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
            Ok((available == 3).then_some(()))
        }
    })
    .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let ready = eventually(&format!("{}: 3 ready endpoints", cluster.name()), || {
        let slices = slices.clone();
        async move {
            let listed = slices
                .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                .await?;
            let addresses: Vec<String> = listed
                .items
                .iter()
                .flat_map(|s| s.endpoints.iter().flatten())
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
            Ok((addresses.len() == 3).then_some(addresses))
        }
    })
    .await?;
    // kwok gives pods addresses from the harness's pod range, not the service range.
    assert!(ready.iter().all(|a| a.starts_with("10.244.")), "{ready:?}");
    Ok(())
}

async fn oversized_pod_stays_pending_with_the_schedulers_reason(cluster: &Cluster) -> Result<()> {
    let client = cluster.client().await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(
        &PostParams::default(),
        &object(json!({
            "metadata": {"name": "too-big"},
            "spec": {"containers": [{
                "name": "big",
                "image": "registry.invalid/big:1",
                "resources": {"requests": {"cpu": "100"}},
            }]},
        })),
    )
    .await?;
    let message = eventually(
        &format!("{}: Unschedulable condition", cluster.name()),
        || {
            let pods = pods.clone();
            async move {
                let pod = pods.get("too-big").await?;
                let status = pod.status.unwrap_or_default();
                let condition = status
                    .conditions
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "PodScheduled" && c.status == "False");
                Ok(condition.and_then(|c| {
                    (c.reason.as_deref() == Some("Unschedulable"))
                        .then_some(c.message.unwrap_or_default())
                }))
            }
        },
    )
    .await?;
    let nodes = cluster.nodes().count;
    assert!(
        message.contains(&format!("0/{nodes} nodes are available"))
            && message.contains("Insufficient cpu"),
        "{message}"
    );
    let phase = pods.get("too-big").await?.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Pending"));
    Ok(())
}

async fn restricted_identity_gets_only_its_role(cluster: &Cluster) -> Result<()> {
    let admin = cluster.client().await?;
    Api::<ClusterRole>::all(admin)
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
            })),
        )
        .await?;
    let identity = cluster.identity("reader", "pod-reader").await?;
    let client: Client = client_from(&identity.kubeconfig).await?;
    let pods: Api<Pod> = Api::all(client.clone());
    // RBAC bindings take effect through the authorizer's informer: allow it a moment.
    eventually("reader can list pods", || {
        let pods = pods.clone();
        async move { Ok(pods.list(&ListParams::default()).await.ok().map(|_| ())) }
    })
    .await?;
    let denied = Api::<Deployment>::namespaced(client, "default")
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "not-allowed"},
                "spec": {
                    "selector": {"matchLabels": {"app": "x"}},
                    "template": {"metadata": {"labels": {"app": "x"}},
                                 "spec": {"containers": [{"name": "x", "image": "x"}]}},
                },
            })),
        )
        .await;
    match denied {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(()),
        other => bail!("a pod reader created a Deployment: {other:?}"),
    }
}

fn running(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_real_clusters_side_by_side() -> Result<()> {
    let specs: Vec<ClusterSpec> = ["smoke-a", "smoke-b", "smoke-c"]
        .iter()
        .map(|name| ClusterSpec::named(name).with_nodes(2, "4", "16Gi"))
        .collect();
    let started = Instant::now();
    let clusters = start_clusters(&specs)
        .await
        .context("start three clusters")?;
    eprintln!(
        "three clusters ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let outcome = exercise(&clusters).await;
    if outcome.is_err() {
        // A failed check is not a panic, so the clusters' drop would not show the logs.
        for cluster in &clusters {
            eprintln!("{}", cluster.logs());
        }
    }
    outcome?;

    let pids: Vec<u32> = clusters.iter().flat_map(Cluster::pids).collect();
    let dirs: Vec<std::path::PathBuf> = clusters.iter().map(|c| c.dir().to_path_buf()).collect();
    assert_eq!(pids.len(), 15, "five processes per cluster");
    assert!(pids.iter().all(|&pid| running(pid)));
    drop(clusters);
    let left: Vec<u32> = pids.into_iter().filter(|&pid| running(pid)).collect();
    assert!(left.is_empty(), "still running after drop: {left:?}");
    assert!(
        dirs.iter().all(|d| !Path::new(d).exists()),
        "folders removed"
    );
    Ok(())
}

async fn exercise(clusters: &[Cluster]) -> Result<()> {
    let servers: Vec<&str> = clusters.iter().map(Cluster::server).collect();
    assert_eq!(
        servers
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3,
        "independent apiservers: {servers:?}"
    );
    for cluster in clusters {
        deployment_becomes_available_with_endpoints(cluster)
            .await
            .with_context(|| format!("cluster {}", cluster.name()))?;
        oversized_pod_stays_pending_with_the_schedulers_reason(cluster)
            .await
            .with_context(|| format!("cluster {}", cluster.name()))?;
    }
    restricted_identity_gets_only_its_role(&clusters[0]).await
}
