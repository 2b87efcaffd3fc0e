//! `ferry serve` on three real Kubernetes clusters of the test harness (kube-apiserver,
//! controller manager, scheduler, etcd, kwok nodes), driven through the REST API. The
//! broker acts on each cluster as a ServiceAccount bound to `deploy/ferry-clusterrole.yaml`,
//! never as cluster admin; the tests look at the clusters as admin.
//!
//! The three clusters are started once for the whole file and shared: each test works in
//! namespaces of its own, runs its own broker (with its own store and settings) scoped to
//! them, and the tests take turns, so that the one that kills an API server disturbs no
//! other. Nodes of `kube-a` carry the label `ferry-test/site=a`: a workload that selects it
//! runs on A and stays Pending elsewhere, which is how these tests make a rollout that does
//! not finish.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod support;

use anyhow::{Context, Result, bail, ensure};
use ferry_testenv::{ClusterSpec, client_from, start_clusters};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use support::*;

const SECRET_VALUE: &str = "s3cr3t-value-that-must-not-leak";
const CLUSTERS: [&str; 3] = ["kube-a", "kube-b", "kube-c"];
/// Monthly price per core on A, B and C: B is the cheapest, A the dearest.
const CPU_PRICES: [f64; 3] = [0.05, 0.02, 0.03];

// ---------------------------------------------------------------------------------------
// The shared clusters
// ---------------------------------------------------------------------------------------

/// What a test may ask of the clusters' processes.
enum Action {
    Kill(&'static str),
    Restart(&'static str),
}

type Request = (usize, Action, oneshot::Sender<Result<(), String>>);

struct Fixture {
    /// Admin kubeconfigs, for the tests' own looks.
    admin: Vec<PathBuf>,
    /// Kubeconfigs of the restricted `ferry-broker` ServiceAccount, for the broker.
    broker: Vec<PathBuf>,
    control: mpsc::UnboundedSender<Request>,
}

/// The tests take turns on the shared clusters.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts the three clusters on first use, on a thread of their own that keeps them (and
/// their processes, which die with that thread) for the life of the test binary.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the clusters");
            runtime.block_on(async move {
                let (control, mut requests) = mpsc::unbounded_channel::<Request>();
                let mut clusters = match setup().await {
                    Ok((clusters, admin, broker)) => {
                        let _ = ready.send(Ok(Fixture {
                            admin,
                            broker,
                            control,
                        }));
                        clusters
                    }
                    Err(error) => {
                        let _ = ready.send(Err(format!("{error:#}")));
                        return;
                    }
                };
                while let Some((index, action, reply)) = requests.recv().await {
                    let cluster = &mut clusters[index];
                    let result = match action {
                        Action::Kill(component) => cluster.kill(component),
                        Action::Restart(component) => cluster.restart(component).await,
                    };
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                }
            });
        });
        match started.recv() {
            Ok(Ok(fixture)) => fixture,
            Ok(Err(error)) => panic!("the test clusters did not start: {error}"),
            Err(_) => panic!("the test clusters' thread died while starting"),
        }
    })
}

async fn setup() -> Result<(Vec<ferry_testenv::Cluster>, Vec<PathBuf>, Vec<PathBuf>)> {
    // A fixed folder per cluster: a run leaves at most one copy behind, wiped by the next.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kube-e2e");
    let specs: Vec<ClusterSpec> = CLUSTERS
        .iter()
        .map(|name| {
            let spec = ClusterSpec::named(name).in_dir(root.join(name));
            // C is small: a target without room for the big workload.
            if *name == "kube-c" {
                spec.with_nodes(2, "2", "8Gi")
            } else {
                spec.with_nodes(2, "8", "32Gi")
            }
        })
        .collect();
    let clusters = start_clusters(&specs)
        .await
        .context("start three clusters")?;
    let mut admin = Vec::new();
    let mut broker = Vec::new();
    for cluster in &clusters {
        let client = cluster.client().await?;
        let identity = ferry_identity(cluster, "ferry-broker").await?;
        if cluster.name() == "kube-a" {
            let nodes: Api<Node> = Api::all(client.clone());
            for node in nodes.list(&ListParams::default()).await? {
                let name = node.metadata.name.context("node name")?;
                nodes
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"metadata": {"labels": {SITE_LABEL: "a"}}})),
                    )
                    .await?;
            }
        }
        admin.push(cluster.kubeconfig().to_path_buf());
        broker.push(identity.kubeconfig);
    }
    Ok((clusters, admin, broker))
}

async fn control(cluster: usize, action: Action) -> Result<()> {
    let (reply, answer) = oneshot::channel();
    fixture()
        .control
        .send((cluster, action, reply))
        .map_err(|_| anyhow::anyhow!("the clusters' thread is gone"))?;
    answer
        .await
        .context("the clusters' thread did not answer")?
        .map_err(|e| anyhow::anyhow!(e))
}

async fn admin(cluster: usize) -> Result<Client> {
    Ok(client_from(&fixture().admin[cluster]).await?)
}

// ---------------------------------------------------------------------------------------
// A broker
// ---------------------------------------------------------------------------------------

/// Writes a broker's folder: the three clusters (reached as the restricted identity,
/// scoped to `namespaces`) and `ferry.toml` with `migrations` settings.
fn broker_dir(test: &str, namespaces: &[&str], migrations: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("kube-e2e-brokers")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("resources"))?;
    let mut clusters = String::new();
    for (i, name) in CLUSTERS.iter().enumerate() {
        clusters.push_str(&format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  provider: kubernetes\n  kubernetes: {{kubeconfig: {:?}}}\n  workloads: {{namespaces: {namespaces:?}}}\n  overrides: {{labels: {{ferry-test/arrived-on: {name}}}, imageRegistries: {{registry.invalid: mirror-{name}.invalid}}}}\n  pricing: {{currency: USD, cpuCoreHour: {}, memoryGiBHour: 0.004, egressGiB: 0.01}}\n---\n",
            fixture().broker[i].display(),
            CPU_PRICES[i],
        ));
    }
    std::fs::write(dir.join("resources/clusters.yaml"), clusters)?;
    std::fs::write(
        dir.join("ferry.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndata = \"data\"\nresources = [\"resources\"]\n[migrations]\n{migrations}\n"
        ),
    )?;
    Ok(dir)
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// Deployment (3 replicas), Service, ConfigMap, Secret, ServiceAccount, HPA and PDB.
async fn create_realistic_app(client: &Client, ns: &str) -> Result<()> {
    create_namespace(client, ns).await?;
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web-config"}, "data": {"MODE": "production"}}))?,
        )
        .await?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(
                json!({"metadata": {"name": "web-secret"}, "stringData": {"TOKEN": SECRET_VALUE}}),
            )?,
        )
        .await?;
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web"}}))?,
        )
        .await?;
    let mut web = deployment("web", 3, "100m", false);
    web["spec"]["template"]["spec"]["serviceAccountName"] = json!("web");
    web["spec"]["template"]["spec"]["containers"][0]["envFrom"] =
        json!([{"configMapRef": {"name": "web-config"}}]);
    web["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "TOKEN"}}}
    ]);
    create_deployment(client, ns, web).await?;
    Api::<Service>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}))?,
        )
        .await?;
    // minReplicas = replicas: without a metrics server the autoscaler changes nothing.
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "web"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 3, "maxReplicas": 6,
                    "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80}}}],
                },
            }))?,
        )
        .await?;
    Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "web"},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}},
            }))?,
        )
        .await?;
    until_available(client, ns, "web", 3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_migrate_realistic_app() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "shop";
    let (a, b) = (admin(0).await?, admin(1).await?);
    create_realistic_app(&a, ns).await?;
    let dir = broker_dir(
        "realistic",
        &[ns],
        "rollback-window = \"2s\"\nstep-deadline = \"90s\"",
    )?;
    let broker = Broker::start(&dir, &[])?;
    broker.until_sees("shop/web", "kube-a").await?;

    // Everything the event stream says during the migration, kept to look for the secret.
    // reqwest has rustls (the default `https` feature): it needs a provider.
    ferry_testenv::install_crypto_provider();
    let mut stream = reqwest::Client::new()
        .get(format!("{}/api/v1/events", broker.url))
        .bearer_auth(&broker.token)
        .send()
        .await?;
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let events = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = stream.chunk().await {
                if let Ok(mut all) = seen.lock() {
                    all.extend_from_slice(&chunk);
                }
            }
        })
    };

    let id = broker.migrate("shop/web", "kube-b", false).await?;
    let done = broker.until_final(&id).await?;
    assert_eq!(state(&done), "done", "{done}\n{}", broker.logs());
    assert_eq!(done["from"], "kube-a");

    // Every object is on B, the Deployment available, the Secret intact; B's overrides
    // (a label, a registry mirror) are in what was applied there.
    until_available(&b, ns, "web", 3).await?;
    let web = Api::<Deployment>::namespaced(b.clone(), ns)
        .get("web")
        .await?;
    assert_eq!(
        web.metadata
            .labels
            .unwrap_or_default()
            .get("ferry-test/arrived-on"),
        Some(&"kube-b".to_owned())
    );
    let image = web
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].image.clone());
    assert_eq!(image, Some(Some("mirror-kube-b.invalid/app:1".to_owned())));
    Api::<ConfigMap>::namespaced(b.clone(), ns)
        .get("web-config")
        .await?;
    Api::<ServiceAccount>::namespaced(b.clone(), ns)
        .get("web")
        .await?;
    Api::<Service>::namespaced(b.clone(), ns).get("web").await?;
    let hpa = Api::<HorizontalPodAutoscaler>::namespaced(b.clone(), ns)
        .get("web")
        .await?;
    assert_eq!(hpa.spec.min_replicas, Some(3));
    Api::<PodDisruptionBudget>::namespaced(b.clone(), ns)
        .get("web")
        .await?;
    let secret = Api::<Secret>::namespaced(b.clone(), ns)
        .get("web-secret")
        .await?;
    let value = secret
        .data
        .and_then(|d| d.get("TOKEN").cloned())
        .context("TOKEN")?;
    assert_eq!(value.0, SECRET_VALUE.as_bytes());

    // The source: drained, then deleted after the rollback window.
    eventually("the drained source is deleted", || async {
        Ok(replicas(&a, ns, "web").await?.is_none().then_some(()))
    })
    .await?;

    // The Secret's value is nowhere in the broker's events, audit log, log or store.
    events.abort();
    let events = seen
        .lock()
        .map(|all| String::from_utf8_lossy(&all).into_owned())
        .unwrap_or_default();
    assert!(
        events.contains("migration.step") && events.contains(&id),
        "the event stream showed nothing of the migration: {events}"
    );
    assert!(
        !events.contains(SECRET_VALUE),
        "the secret value is in the event stream"
    );
    let (_, audit) = broker.call("GET", "/api/v1/audit", None).await?;
    assert!(!audit.to_string().contains(SECRET_VALUE));
    assert!(
        !broker.logs().contains(SECRET_VALUE),
        "the secret value is in the broker's log"
    );
    let encoded = "czNjcjN0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw"; // base64 of the value, unpadded prefix
    let mut stack = vec![broker.dir.join("data")];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path)?.filter_map(|e| e.ok().map(|e| e.path())));
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path)?).into_owned();
            assert!(
                !text.contains(SECRET_VALUE) && !text.contains(encoded),
                "{} holds the secret",
                path.display()
            );
        }
    }
    Ok(())
}

/// The common start of a test: namespace `ns` on kube-a with one Deployment `name`
/// available there, and a broker scoped to `ns` (its `[migrations]` settings given) that
/// sees it. Returns kube-a's admin client and the broker.
async fn one_app_on_a(
    ns: &str,
    name: &str,
    replicas: u32,
    cpu: &str,
    pinned: bool,
    migrations: &str,
) -> Result<(Client, Broker)> {
    let a = admin(0).await?;
    create_namespace(&a, ns).await?;
    create_deployment(&a, ns, deployment(name, replicas, cpu, pinned)).await?;
    let want = i32::try_from(replicas)?;
    until_available(&a, ns, name, want).await?;
    let broker = Broker::start(&broker_dir(ns, &[ns], migrations)?, &[])?;
    broker.until_sees(&format!("{ns}/{name}"), "kube-a").await?;
    Ok((a, broker))
}

/// Every object of the kinds Ferry carries in `namespace`, with its resourceVersion.
async fn snapshot(client: &Client, namespace: &str) -> Result<BTreeMap<String, String>> {
    async fn kind<K>(client: &Client, ns: &str, out: &mut BTreeMap<String, String>) -> Result<()>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        for item in Api::<K>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await?
        {
            let meta = item.meta();
            out.insert(
                format!(
                    "{} {}",
                    K::kind(&K::DynamicType::default()),
                    meta.name.clone().unwrap_or_default()
                ),
                meta.resource_version.clone().unwrap_or_default(),
            );
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    if let Some(ns) = Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await?
    {
        out.insert(
            "Namespace".to_owned(),
            ns.metadata.resource_version.unwrap_or_default(),
        );
        kind::<Deployment>(client, namespace, &mut out).await?;
        kind::<ConfigMap>(client, namespace, &mut out).await?;
        kind::<Secret>(client, namespace, &mut out).await?;
        kind::<Service>(client, namespace, &mut out).await?;
        kind::<ServiceAccount>(client, namespace, &mut out).await?;
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_dry_run_returns_the_plan_and_changes_nothing() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "dry";
    let (_a, broker) =
        one_app_on_a(ns, "report", 2, "200m", false, "rollback-window = \"1s\"").await?;

    let mut before = Vec::new();
    for cluster in 0..3 {
        before.push(snapshot(&admin(cluster).await?, ns).await?);
    }
    let answer = broker.dry_run("dry/report", "kube-b").await?;
    assert_eq!(answer["dryRun"], true, "{answer}");
    assert_eq!(answer["feasible"], true, "{answer}");
    let message = answer["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("2 replicas fit on kube-b") && message.contains("monthly savings"),
        "{answer}"
    );
    // Nothing recorded, so nothing holds the workload.
    let (status, listed) = broker.call("GET", "/api/v1/migrations", None).await?;
    assert_eq!(status, 200, "{listed}");
    assert!(
        !listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["workload"] == "dry/report"),
        "{listed}"
    );
    // Give a wrongly started step time to show, then compare every cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (cluster, before) in before.iter().enumerate() {
        let after = snapshot(&admin(cluster).await?, ns).await?;
        assert_eq!(&after, before, "{} changed", CLUSTERS[cluster]);
    }
    assert!(before[1].is_empty() && before[2].is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_target_without_room_is_refused_at_planning() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "room";
    // 3 × 1.5 cores: fits on A (16 cores), not on C (4 cores in all).
    let (a, broker) = one_app_on_a(ns, "big", 3, "1500m", false, "").await?;

    let id = broker.migrate("room/big", "kube-c", false).await?;
    let end = broker.until_final(&id).await?;
    assert_eq!(state(&end), "rolledBack", "{end}");
    let reason = end["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("plan: kube-c has") && reason.contains("needs 4.5 "),
        "{reason}"
    );
    assert_eq!(end["steps"][1]["state"], "pending", "{end}");
    assert!(snapshot(&admin(2).await?, ns).await?.is_empty());
    assert_eq!(replicas(&a, ns, "big").await?, Some((3, 3)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_pending_past_the_deadline_rolls_back_and_the_source_serves() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "pending";
    let b = admin(1).await?;
    let (a, broker) = one_app_on_a(ns, "pinned", 2, "100m", true, "step-deadline = \"8s\"").await?;

    let id = broker.migrate("pending/pinned", "kube-b", false).await?;
    let end = broker.until_final(&id).await?;
    assert_eq!(state(&end), "rolledBack", "{end}");
    let reason = end["reason"].as_str().unwrap_or_default();
    // The scheduler's own words for why the pods stayed Pending.
    assert!(
        reason.contains("start: step start did not finish within 8 s")
            && reason.contains("0 of 2 available")
            && reason.contains("didn't match Pod's node affinity/selector"),
        "{reason}"
    );
    assert_eq!(end["steps"][2]["state"], "rolledBack", "{end}");
    eventually("the target's copy is deleted", || async {
        Ok(replicas(&b, ns, "pinned").await?.is_none().then_some(()))
    })
    .await?;
    assert_eq!(replicas(&a, ns, "pinned").await?, Some((2, 2)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_cancel_during_start_rolls_back() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "cancel";
    let b = admin(1).await?;
    let (a, broker) =
        one_app_on_a(ns, "pinned", 2, "100m", true, "step-deadline = \"120s\"").await?;

    let id = broker.migrate("cancel/pinned", "kube-b", false).await?;
    broker.until_step_running(&id, "start").await?;
    // The copy exists on B (its pods Pending) when the cancel arrives.
    eventually("the copy on B", || async {
        Ok(replicas(&b, ns, "pinned").await?.map(|_| ()))
    })
    .await?;
    let (status, answer) = broker
        .call("POST", &format!("/api/v1/migrations/{id}/cancel"), None)
        .await?;
    assert_eq!(status, 202, "{answer}");
    let end = broker.until_final(&id).await?;
    assert_eq!(state(&end), "cancelled", "{end}");
    assert!(
        end["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cancelled by")),
        "{end}"
    );
    // Deleted with foreground propagation: gone once its pods are.
    eventually("the target's copy is deleted", || async {
        Ok(replicas(&b, ns, "pinned").await?.is_none().then_some(()))
    })
    .await?;
    assert_eq!(replicas(&a, ns, "pinned").await?, Some((2, 2)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_target_apiserver_killed_during_start_rolls_back_when_it_returns() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "outage";
    let c = 2;
    let (a, broker) =
        one_app_on_a(ns, "pinned", 2, "100m", true, "step-deadline = \"20s\"").await?;

    // The source is looked at every 100 ms for the whole test.
    let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let source_watch = {
        let (a, watching) = (a.clone(), watching.clone());
        tokio::spawn(async move {
            let mut worst = (i32::MAX, i32::MAX);
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(Some((desired, available))) = replicas(&a, ns, "pinned").await {
                    worst = (worst.0.min(desired), worst.1.min(available));
                } else {
                    worst = (0, 0);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            worst
        })
    };

    let id = broker.migrate("outage/pinned", "kube-c", false).await?;
    broker.until_step_running(&id, "start").await?;
    let c_client = admin(c).await?;
    eventually("the copy on C", || async {
        Ok(replicas(&c_client, ns, "pinned").await?.map(|_| ()))
    })
    .await?;
    control(c, Action::Kill("kube-apiserver")).await?;
    // A blip is waited out within the step's deadline: the migration goes on running.
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = broker.migration(&id).await?;
    assert_eq!(state(&during), "running", "{during}");
    // Down past the step's deadline: the start step fails, and the rollback waits for C,
    // which cannot delete its copy while C is gone.
    eventually("the start step fails", || async {
        let migration = broker.migration(&id).await?;
        Ok((migration["state"] == "rollingBack").then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state(&broker.migration(&id).await?), "rollingBack");
    control(c, Action::Restart("kube-apiserver")).await?;
    eprintln!("kube-c's API server was down {:?}", down.elapsed());

    let end = broker.until_final(&id).await?;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let worst = source_watch.await?;
    assert_eq!(state(&end), "rolledBack", "{end}");
    let reason = end["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("kube-c"), "{reason}");
    assert_eq!(worst, (2, 2), "the source stopped serving at some point");
    let c_client = admin(c).await?;
    eventually("the copy on C is deleted", || async {
        Ok(replicas(&c_client, ns, "pinned")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_crash_at_every_step() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "crash";
    let (a, b) = (admin(0).await?, admin(1).await?);
    create_namespace(&a, ns).await?;
    let boundaries: Vec<String> = ["plan", "prepare", "start", "drain"]
        .iter()
        .flat_map(|step| ["before", "after"].map(|b| format!("{step}:{b}")))
        .collect();
    for i in 0..boundaries.len() {
        create_deployment(&a, ns, deployment(&format!("w{i}"), 2, "50m", false)).await?;
    }
    for i in 0..boundaries.len() {
        until_available(&a, ns, &format!("w{i}"), 2).await?;
    }
    for (i, at) in boundaries.iter().enumerate() {
        let workload = format!("{ns}/w{i}");
        let name = format!("w{i}");
        let dir = broker_dir(
            &format!("crash-{i}"),
            &[ns],
            "rollback-window = \"1s\"\nstep-deadline = \"60s\"",
        )?;
        let id = {
            let broker = Broker::start(&dir, &[("FERRY_TEST_PAUSE_AT", at)])?;
            broker.until_sees(&workload, "kube-a").await?;
            let id = broker.migrate(&workload, "kube-b", false).await?;
            broker.until_log(&format!("paused at {at}")).await?;
            id
            // Dropped here: SIGKILL, no shutdown code runs.
        };
        let broker = Broker::start(&dir, &[])?;
        let end = broker.until_final(&id).await?;
        let outcome = state(&end).to_owned();
        assert!(
            outcome == "done" || outcome == "rolledBack",
            "{at}: {end}\n{}",
            broker.logs()
        );
        // Exactly one serving copy, where the outcome says; the other is gone.
        let (home, away) = if outcome == "done" {
            (&b, &a)
        } else {
            (&a, &b)
        };
        until_available(home, ns, &name, 2).await?;
        eventually(&format!("{at}: the other copy is gone"), || async {
            Ok(replicas(away, ns, &name).await?.is_none().then_some(()))
        })
        .await?;
        eprintln!("{at}: {outcome}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_twenty_migrations_under_a_cap_of_five() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "many";
    let (a, b) = (admin(0).await?, admin(1).await?);
    create_namespace(&a, ns).await?;
    let names: Vec<String> = (0..20).map(|i| format!("w{i:02}")).collect();
    for name in &names {
        create_deployment(&a, ns, deployment(name, 1, "50m", false)).await?;
    }
    for name in &names {
        until_available(&a, ns, name, 1).await?;
    }
    let broker = Broker::start(
        &broker_dir(
            "many",
            &[ns],
            "max-concurrent = 5\nrollback-window = \"1s\"\nstep-deadline = \"120s\"",
        )?,
        &[],
    )?;
    for name in &names {
        broker.until_sees(&format!("{ns}/{name}"), "kube-a").await?;
    }

    let started = Instant::now();
    let submitted = futures::future::join_all(
        names
            .iter()
            .map(|name| broker.migrate_owned(format!("{ns}/{name}"))),
    )
    .await;
    let ids: Vec<String> = submitted.into_iter().collect::<Result<_>>()?;
    let mut most_running = 0;
    loop {
        let (_, all) = broker.call("GET", "/api/v1/migrations", None).await?;
        let ours: Vec<&Value> = all["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| {
                m["id"]
                    .as_str()
                    .is_some_and(|id| ids.iter().any(|i| i == id))
            })
            .collect();
        let running = ours.iter().filter(|m| m["state"] == "running").count();
        assert!(running <= 5, "{running} migrations running at once");
        most_running = most_running.max(running);
        let ended: Vec<&&Value> = ours
            .iter()
            .filter(|m| state(m) != "running" && state(m) != "pending")
            .collect();
        if ended.len() == ids.len() {
            for m in ended {
                assert_eq!(state(m), "done", "{m}");
            }
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(300),
            "not all ended: {}",
            Value::Array(ours.into_iter().cloned().collect())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "20 migrations under a cap of 5 took {elapsed:?}; at most {most_running} ran at once"
    );
    assert_eq!(most_running, 5, "the cap was never reached");
    for name in &names {
        until_available(&b, ns, name, 1).await?;
    }
    Ok(())
}

impl Broker {
    /// [`Broker::migrate`] to kube-b, owning its argument (for `join_all`).
    async fn migrate_owned(&self, workload: String) -> Result<String> {
        self.migrate(&workload, "kube-b", false).await
    }
}

// ---------------------------------------------------------------------------------------
// The failover controller
// ---------------------------------------------------------------------------------------

/// Debounce, stable period and pass interval of the failover test's broker.
const FAILOVER_AFTER: Duration = Duration::from_secs(10);
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// kube-a's API server stops: after the debounce, both workloads on it are started on
/// other clusters from the objects the broker read before (fenced migrations). It comes
/// back: the stale copies there are scaled to zero, then deleted; after the stable period
/// the workload whose policy prefers kube-a returns, the other stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_evacuates_and_returns() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "failover";
    let a = admin(0).await?;
    create_namespace(&a, ns).await?;
    for name in ["homebody", "nomad"] {
        create_deployment(&a, ns, deployment(name, 2, "100m", false)).await?;
    }
    for name in ["homebody", "nomad"] {
        until_available(&a, ns, name, 2).await?;
    }
    let dir = broker_dir(
        ns,
        &[ns],
        "step-deadline = \"60s\"\nrollback-window = \"5s\"",
    )?;
    // Equal prices: preferences alone decide where each workload would rather be.
    let clusters = std::fs::read_to_string(dir.join("resources/clusters.yaml"))?;
    let mut equal = clusters.clone();
    for price in CPU_PRICES {
        equal = equal.replace(&format!("cpuCoreHour: {price},"), "cpuCoreHour: 0.03,");
    }
    std::fs::write(dir.join("resources/clusters.yaml"), equal)?;
    let prefers = |name: &str, site: &str| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: {name}}}\nspec:\n  priority: 100\n  workloadSelector: {{matchLabels: {{app: {name}}}}}\n  clusterAffinity:\n    preferred: [{{weight: 100, matchLabels: {{site: {site}}}}}]\n  rebalance: {{enabled: false, cooldown: 5s}}\n---\n"
        )
    };
    std::fs::write(
        dir.join("resources/policies.yaml"),
        prefers("homebody", "a") + &prefers("nomad", "b"),
    )?;
    // Members carry the site label the policies prefer.
    let labelled = std::fs::read_to_string(dir.join("resources/clusters.yaml"))?
        .replace(
            "metadata: {name: kube-a}",
            "metadata: {name: kube-a, labels: {site: a}}",
        )
        .replace(
            "metadata: {name: kube-b}",
            "metadata: {name: kube-b, labels: {site: b}}",
        )
        .replace(
            "metadata: {name: kube-c}",
            "metadata: {name: kube-c, labels: {site: c}}",
        );
    std::fs::write(dir.join("resources/clusters.yaml"), labelled)?;
    let mut config = std::fs::read_to_string(dir.join("ferry.toml"))?;
    config.push_str(&format!(
        "[controllers]\nmode = \"auto\"\ninterval = \"2s\"\nfailover-after = \"{}s\"\nstable-after = \"{}s\"\n",
        FAILOVER_AFTER.as_secs(),
        STABLE_AFTER.as_secs()
    ));
    std::fs::write(dir.join("ferry.toml"), config)?;
    let broker = Broker::start(&dir, &[])?;
    for name in ["homebody", "nomad"] {
        broker.until_sees(&format!("{ns}/{name}"), "kube-a").await?;
    }
    // Nothing moves while everything is healthy (equal prices; nomad prefers kube-b but
    // a preference alone is no saving), and the broker keeps both workloads' objects.
    eventually("the objects kept for evacuations", || async {
        let (_, status) = broker.call("GET", "/api/v1/controllers", None).await?;
        let kept = status["evacuationCopies"].as_array().map_or(0, Vec::len);
        Ok((kept == 2).then_some(status))
    })
    .await?;

    control(0, Action::Kill("kube-apiserver")).await?;
    let down = Instant::now();
    let evacuated = eventually("both workloads evacuated", || async {
        let (_, list) = broker.call("GET", "/api/v1/migrations", None).await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let done = items
            .iter()
            .filter(|m| m["trigger"] == "failover" && m["state"] == "done")
            .count();
        Ok((done == 2).then_some(items))
    })
    .await?;
    let evacuated_after = down.elapsed();
    let mut targets = BTreeMap::new();
    for m in &evacuated {
        assert_eq!(m["fenced"], true, "{m}");
        assert_eq!(m["from"], "kube-a", "{m}");
        assert_eq!(m["createdBy"], "controller:failover", "{m}");
        let drain = &m["steps"][3]["message"];
        assert!(drain.as_str().is_some_and(|t| t.contains("fenced")), "{m}");
        targets.insert(
            m["workload"].as_str().unwrap_or_default().to_owned(),
            m["to"].as_str().unwrap_or_default().to_owned(),
        );
    }
    assert_eq!(
        targets[&format!("{ns}/nomad")],
        "kube-b",
        "nomad prefers kube-b"
    );
    for (workload, to) in &targets {
        let index = CLUSTERS.iter().position(|c| c == to).context("a member")?;
        let name = workload.rsplit('/').next().unwrap_or_default();
        until_available(&admin(index).await?, ns, name, 2).await?;
    }
    let available_after = down.elapsed();
    eprintln!(
        "failover: evacuations done {evacuated_after:?} and available {available_after:?} after kube-a's API server stopped (debounce {FAILOVER_AFTER:?})"
    );
    // Not before the debounce: a blip is not an outage.
    assert!(evacuated_after >= FAILOVER_AFTER, "{evacuated_after:?}");
    let (_, status) = broker.call("GET", "/api/v1/controllers", None).await?;
    let phase_of = |status: &Value, cluster: &str| {
        status["clusters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == cluster)
            .map(|c| c["phase"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        phase_of(&status, "kube-a").as_deref(),
        Some("down"),
        "{status}"
    );

    // kube-a returns with the stale copies still running there.
    control(0, Action::Restart("kube-apiserver")).await?;
    let back = Instant::now();
    let a = admin(0).await?;
    for name in ["homebody", "nomad"] {
        eventually(&format!("the stale {name} on kube-a deleted"), || async {
            Ok(replicas(&a, ns, name).await?.is_none().then_some(()))
        })
        .await?;
    }
    let (_, audit) = broker.call("GET", "/api/v1/audit?limit=500", None).await?;
    let scaled = audit["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["action"] == "failover.staleScaledToZero")
        .count();
    assert_eq!(scaled, 2, "{audit}");

    // After the stable period, homebody returns to kube-a; nomad stays on kube-b.
    // A watch of the broker's that was on a connection to the killed API server may take
    // up to its read timeout (60 s) and a backoff to notice: kube-a is then unreachable.
    let returned = eventually_within(
        Duration::from_secs(180),
        "homebody returned home",
        || async {
            if back.elapsed() > STABLE_AFTER + Duration::from_secs(150) {
                let (_, status) = broker.call("GET", "/api/v1/controllers", None).await?;
                let (_, clusters) = broker.call("GET", "/api/v1/clusters", None).await?;
                let logs = broker.logs();
                let watches: Vec<&str> = logs.lines().filter(|l| l.contains("watch")).collect();
                let tail = watches[watches.len().saturating_sub(20)..].join("\n");
                bail!("no return: {status}\n{clusters}\n{tail}");
            }
            let (_, list) = broker.call("GET", "/api/v1/migrations", None).await?;
            let back = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["trigger"] == "return" && m["state"] == "done")
                .cloned();
            Ok(back)
        },
    )
    .await?;
    eprintln!(
        "failover: homebody returned {:?} after kube-a's API server restarted (stable period {STABLE_AFTER:?})",
        back.elapsed()
    );
    assert_eq!(returned["workload"], format!("{ns}/homebody"), "{returned}");
    assert_eq!(returned["to"], "kube-a", "{returned}");
    assert_eq!(returned["createdBy"], "controller:return", "{returned}");
    until_available(&a, ns, "homebody", 2).await?;
    broker.until_sees(&format!("{ns}/nomad"), "kube-b").await?;
    let (_, list) = broker.call("GET", "/api/v1/migrations", None).await?;
    assert_eq!(
        list["items"].as_array().map_or(0, Vec::len),
        3,
        "two evacuations and one return, nothing else: {list}"
    );
    let (_, status) = broker.call("GET", "/api/v1/controllers", None).await?;
    assert_eq!(
        phase_of(&status, "kube-a").as_deref(),
        Some("up"),
        "{status}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// There and back again
// ---------------------------------------------------------------------------------------

/// The objects of the trip's app, by kind and name, as a user created them.
const WEB_OBJECTS: [(&str, &str); 7] = [
    ("Deployment", "web"),
    ("ConfigMap", "web-config"),
    ("Secret", "web-secret"),
    ("ServiceAccount", "web"),
    ("Service", "web"),
    ("HorizontalPodAutoscaler", "web"),
    ("PodDisruptionBudget", "web"),
];
const DB_OBJECTS: [(&str, &str); 4] = [
    ("StatefulSet", "db"),
    ("Secret", "db-password"),
    ("Service", "db"),
    ("PersistentVolumeClaim", "data-db-0"),
];
const TRIP_CLASS: &str = "ferry-trip";

fn dynamic_api(client: &Client, ns: &str, kind: &str) -> Api<kube::api::DynamicObject> {
    let (group, version) = match kind {
        "Deployment" | "StatefulSet" => ("apps", "v1"),
        "HorizontalPodAutoscaler" => ("autoscaling", "v2"),
        "PodDisruptionBudget" => ("policy", "v1"),
        _ => ("", "v1"),
    };
    let resource =
        kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), ns, &resource)
}

/// Which of `objects` exist in `ns` on cluster `index` (one being deleted counts).
async fn present(index: usize, ns: &str, objects: &[(&str, &str)]) -> Result<Vec<String>> {
    let client = admin(index).await?;
    let mut found = Vec::new();
    for (kind, name) in objects {
        if dynamic_api(&client, ns, kind)
            .get_opt(name)
            .await?
            .is_some()
        {
            found.push(format!("{kind}/{name}"));
        }
    }
    Ok(found)
}

/// After a move of `name` to `home` is done: it serves there and only there, and once
/// the rollback window has passed no object of it is left on any other cluster.
async fn only_on(home: usize, ns: &str, name: &str, objects: &[(&str, &str)]) -> Result<()> {
    let kind = objects[0].0;
    eventually(
        &format!("{name} serves on {} alone", CLUSTERS[home]),
        || async {
            for index in 0..CLUSTERS.len() {
                let object = dynamic_api(&admin(index).await?, ns, kind)
                    .get_opt(name)
                    .await?;
                let available = object
                    .as_ref()
                    .and_then(|o| o.data.pointer("/status/availableReplicas"))
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if (index == home) != (available > 0) {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .await?;
    for index in (0..CLUSTERS.len()).filter(|i| *i != home) {
        let gone = eventually(
            &format!("nothing of {name} left on {}", CLUSTERS[index]),
            || async { Ok(present(index, ns, objects).await?.is_empty().then_some(())) },
        )
        .await;
        if let Err(error) = gone {
            bail!("{error}; left: {:?}", present(index, ns, objects).await?);
        }
    }
    Ok(())
}

/// The target's overrides and no other cluster's, on a copy's workload object.
async fn carries_overrides_of(
    index: usize,
    ns: &str,
    (kind, name): (&str, &str),
    image_path: &str,
) -> Result<()> {
    let object = dynamic_api(&admin(index).await?, ns, kind)
        .get(name)
        .await?;
    let object = serde_json::to_value(&object)?;
    let arrived = object.pointer("/metadata/labels/ferry-test~1arrived-on");
    ensure!(
        arrived == Some(&json!(CLUSTERS[index])),
        "{kind} {name} on {} carries arrived-on {arrived:?}",
        CLUSTERS[index]
    );
    let image = object
        .pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ensure!(
        image == format!("mirror-{}.invalid/{image_path}", CLUSTERS[index]),
        "{kind} {name} on {} runs {image}",
        CLUSTERS[index]
    );
    Ok(())
}

async fn create_volume(index: usize, name: &str) -> Result<()> {
    Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(admin(index).await?)
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": name},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": TRIP_CLASS,
                         "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": format!("/tmp/{name}")}},
            }))?,
        )
        .await?;
    Ok(())
}

/// The app, created on kube-a as a user would, none of it marked by Ferry: `web` (a
/// Deployment with its ConfigMap, Secret, ServiceAccount, Service, HPA and PDB) and `db`
/// (a StatefulSet with a claim template, its headless Service and its Secret).
async fn create_trip_app(ns: &str) -> Result<()> {
    let a = admin(0).await?;
    create_app_objects(&a, ns).await?;
    create_volume(0, "trip-a").await?;
    create_volume(1, "trip-b").await?;
    Ok(())
}

async fn create_app_objects(a: &Client, ns: &str) -> Result<()> {
    create_realistic_app(a, ns).await?;
    let post = |kind: &str, value: Value| {
        let api = dynamic_api(a, ns, kind);
        async move {
            api.create(&PostParams::default(), &object(value)?).await?;
            Ok::<(), anyhow::Error>(())
        }
    };
    post(
        "Secret",
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-password"}, "stringData": {"PASSWORD": SECRET_VALUE}}),
    )
    .await?;
    post(
        "Service",
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
    )
    .await?;
    post("StatefulSet", json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "labels": {"app": "db"}},
        "spec": {
            "replicas": 1, "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{
                "name": "db", "image": "registry.invalid/db:1",
                "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db-password", "key": "PASSWORD"}}}],
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": TRIP_CLASS,
                         "resources": {"requests": {"storage": "1Gi"}}}}],
        }}))
    .await?;
    Ok(())
}

/// Patches the broker's ClusterRole on cluster `index`: with `allowed` false, it may not
/// patch Deployments (the apply of one is refused with 403).
async fn deployments_patchable(index: usize, allowed: bool) -> Result<()> {
    let (mut role, _) = ferry_cluster_role()?;
    if !allowed {
        for rule in role.rules.iter_mut().flatten() {
            if rule.resources.as_deref() == Some(&["deployments".to_owned()][..]) {
                rule.verbs.retain(|v| v != "patch");
            }
        }
    }
    let name = role.metadata.name.clone().context("role name")?;
    role.metadata.managed_fields = None;
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(admin(index).await?)
        .patch(
            &name,
            &PatchParams::apply("ferry-e2e").force(),
            &Patch::Apply(&role),
        )
        .await?;
    Ok(())
}

/// `POST /api/v1/migrations` with `body`: the status and the answer.
async fn post_move(broker: &Broker, body: Value) -> Result<(u16, Value)> {
    broker.call("POST", "/api/v1/migrations", Some(body)).await
}

/// A migration's step message, by step name.
fn step_message<'a>(migration: &'a Value, step: &str) -> &'a str {
    migration["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == step)
        .and_then(|s| s["message"].as_str())
        .unwrap_or_default()
}

/// The everyday round trip on real clusters, as a platform engineer makes it: an app
/// deployed on kube-a with plain API calls moves to kube-b and back, a refused attempt to
/// kube-c is rolled back, a StatefulSet's move to kube-c is cancelled, and a controller
/// then moves the app to kube-c. After each step: one serving copy, nothing of it left
/// elsewhere (Secrets and claims included), the target's overrides and no other's, and
/// every claim's fate said before the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_there_and_back_again() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "trip";
    create_trip_app(ns).await?;
    until_available(&admin(0).await?, ns, "web", 3).await?;
    let dir = broker_dir(
        ns,
        &[ns],
        "rollback-window = \"3s\"\nstep-deadline = \"60s\"",
    )?;
    std::fs::write(
        dir.join("resources/policies.yaml"),
        "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {name: web}\nspec:\n  priority: 100\n  workloadSelector: {matchLabels: {app: web}}\n  rebalance: {cooldown: 1s, minSavingsPercent: 10}\n",
    )?;
    let mut config = std::fs::read_to_string(dir.join("ferry.toml"))?;
    config.push_str(
        "[controllers]\nmode = \"recommend\"\ninterval = \"1s\"\nstable-after = \"1s\"\nprice-memory = \"1s\"\n",
    );
    std::fs::write(dir.join("ferry.toml"), config)?;
    let broker = Broker::start(&dir, &[])?;
    broker.until_sees("trip/web", "kube-a").await?;
    broker.until_sees("trip/db", "kube-a").await?;

    // 1. web, kube-a -> kube-b. Its user-made objects go with the drained copy.
    let id = broker.migrate("trip/web", "kube-b", false).await?;
    let done = broker.until_final(&id).await?;
    assert_eq!(state(&done), "done", "{done}\n{}", broker.logs());
    assert!(
        step_message(&done, "drain").contains("6 objects it adopted"),
        "{done}"
    );
    only_on(1, ns, "web", &WEB_OBJECTS).await?;
    carries_overrides_of(1, ns, ("Deployment", "web"), "app:1").await?;

    // 2. db, kube-a -> kube-b: each claim's fate is said before the move, and the move
    //    needs the user's word that the target starts empty.
    let (status, refused) =
        post_move(&broker, json!({"workload": "trip/db", "to": "kube-b"})).await?;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("uses_claims")),
        "{refused}"
    );
    let (status, dry) = post_move(
        &broker,
        json!({"workload": "trip/db", "to": "kube-b", "dryRun": true, "acceptEmptyVolumes": true}),
    )
    .await?;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["feasible"], true, "{dry}");
    assert_eq!(dry["claims"][0]["name"], "data-db-0", "{dry}");
    let fate = dry["claims"][0]["fate"].as_str().unwrap_or_default();
    assert!(
        fate.contains("new, empty claim on kube-b")
            && fate.contains("deleted with the drained copy"),
        "{dry}"
    );
    let (status, created) = post_move(
        &broker,
        json!({"workload": "trip/db", "to": "kube-b", "acceptEmptyVolumes": true}),
    )
    .await?;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().context("id")?.to_owned();
    let done = broker.until_final(&id).await?;
    assert_eq!(state(&done), "done", "{done}\n{}", broker.logs());
    assert!(
        step_message(&done, "plan").contains("data-db-0 (1.0 GiB): new, empty claim on kube-b"),
        "{done}"
    );
    assert!(
        step_message(&done, "prepare").contains("data-db-0"),
        "{done}"
    );
    only_on(1, ns, "db", &DB_OBJECTS).await?;
    carries_overrides_of(1, ns, ("StatefulSet", "db"), "db:1").await?;

    // 3. web back to kube-a, where it was first deployed: nothing of the first copy is
    //    in the way, and it arrives with kube-a's overrides, none of kube-b's.
    let id = broker.migrate("trip/web", "kube-a", false).await?;
    let done = broker.until_final(&id).await?;
    assert_eq!(state(&done), "done", "{done}\n{}", broker.logs());
    only_on(0, ns, "web", &WEB_OBJECTS).await?;
    carries_overrides_of(0, ns, ("Deployment", "web"), "app:1").await?;

    // 4. A refused attempt to kube-c (the broker may not patch Deployments there): the
    //    rollback removes the ServiceAccount, ConfigMap and Secret it had applied, though
    //    the Deployment never existed there.
    deployments_patchable(2, false).await?;
    let id = broker.migrate("trip/web", "kube-c", false).await?;
    let end = broker.until_final(&id).await?;
    assert_eq!(state(&end), "rolledBack", "{end}\n{}", broker.logs());
    assert!(
        step_message(&end, "start").contains("no copy on kube-c was created"),
        "{end}"
    );
    assert_eq!(present(2, ns, &WEB_OBJECTS).await?, Vec::<String>::new());
    deployments_patchable(2, true).await?;
    only_on(0, ns, "web", &WEB_OBJECTS).await?;

    // 5. A claim of db's claim's name already on kube-c (someone's older one) is never
    //    reattached silently: the move is refused, naming it and its age.
    dynamic_api(&admin(2).await?, ns, "PersistentVolumeClaim")
        .create(
            &PostParams::default(),
            &object(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data-db-0"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": TRIP_CLASS,
                         "resources": {"requests": {"storage": "1Gi"}}}}))?,
        )
        .await?;
    let (status, refused) = post_move(
        &broker,
        json!({"workload": "trip/db", "to": "kube-c", "acceptEmptyVolumes": true}),
    )
    .await?;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (409, Some("claims_exist")),
        "{refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("kube-c already holds claim data-db-0 (created ")
            && message.contains(" s ago"),
        "{refused}"
    );
    dynamic_api(&admin(2).await?, ns, "PersistentVolumeClaim")
        .delete("data-db-0", &Default::default())
        .await?;
    eventually("the older claim on kube-c is gone", || async {
        Ok(present(2, ns, &[("PersistentVolumeClaim", "data-db-0")])
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;

    //    Without it, db goes to kube-c, where no volume binds its claim: cancelled while
    //    it waits, the rollback removes the StatefulSet and the claim its controller
    //    made there.
    let (status, created) = post_move(
        &broker,
        json!({"workload": "trip/db", "to": "kube-c", "acceptEmptyVolumes": true}),
    )
    .await?;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().context("id")?.to_owned();
    broker.until_step_running(&id, "start").await?;
    eventually("db's claim on kube-c", || async {
        Ok(present(2, ns, &[("PersistentVolumeClaim", "data-db-0")])
            .await?
            .first()
            .map(|_| ()))
    })
    .await?;
    let (status, answer) = broker
        .call("POST", &format!("/api/v1/migrations/{id}/cancel"), None)
        .await?;
    assert_eq!(status, 202, "{answer}");
    let end = broker.until_final(&id).await?;
    assert_eq!(state(&end), "cancelled", "{end}");
    only_on(1, ns, "db", &DB_OBJECTS).await?;

    // 6. kube-c gets cheap, and the rebalance controller moves web there by itself.
    let (status, answer) = broker
        .call(
            "PUT",
            "/api/v1/clusters/kube-c/pricing",
            Some(json!({"cpuCoreHour": 0.001, "memoryGiBHour": 0.0001})),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = broker
        .call(
            "PUT",
            "/api/v1/controllers/mode",
            Some(json!({"mode": "auto"})),
        )
        .await?;
    assert_eq!(status, 200, "{answer}");
    let moved = eventually("the controller moves web to kube-c", || async {
        let (_, list) = broker.call("GET", "/api/v1/migrations", None).await?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["workload"] == "trip/web" && m["to"] == "kube-c" && m["trigger"] == "cost")
            .cloned())
    })
    .await?;
    let id = moved["id"].as_str().context("id")?.to_owned();
    let done = broker.until_final(&id).await?;
    assert_eq!(state(&done), "done", "{done}\n{}", broker.logs());
    only_on(2, ns, "web", &WEB_OBJECTS).await?;
    carries_overrides_of(2, ns, ("Deployment", "web"), "app:1").await?;
    // db has claims: the controllers leave its move to a person, and it stays.
    only_on(1, ns, "db", &DB_OBJECTS).await?;
    assert!(!broker.logs().contains(SECRET_VALUE));
    Ok(())
}

/// A move back within the first move's rollback window takes the drained copy over; when
/// it fails, its rollback leaves that copy (still the first migration's) in place at once
/// instead of trying to delete it until the first migration's window ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_a_move_back_within_the_window_and_its_rollback() -> Result<()> {
    let _turn = TURN.lock().await;
    let ns = "back";
    let (a, broker) = one_app_on_a(
        ns,
        "web",
        2,
        "100m",
        false,
        "rollback-window = \"600s\"\nstep-deadline = \"60s\"",
    )
    .await?;
    let b = admin(1).await?;
    let first = broker.migrate("back/web", "kube-b", false).await?;
    let done = broker.until_final(&first).await?;
    assert_eq!(state(&done), "done", "{done}");
    assert_eq!(replicas(&a, ns, "web").await?.map(|r| r.0), Some(0));

    // The move back is refused on kube-a (no patch on Deployments): rolled back at once.
    deployments_patchable(0, false).await?;
    let started = Instant::now();
    let back = broker.migrate("back/web", "kube-a", false).await?;
    let end = broker.until_final(&back).await;
    deployments_patchable(0, true).await?;
    let end = end?;
    let took = started.elapsed();
    assert_eq!(state(&end), "rolledBack", "{end}\n{}", broker.logs());
    assert!(
        took < Duration::from_secs(30),
        "the rollback took {took:?}: {end}"
    );
    let message = step_message(&end, "start");
    assert!(
        message.contains(&format!("is migration {first}'s, left in place")),
        "{end}"
    );
    until_available(&b, ns, "web", 2).await?;
    let drained = Api::<Deployment>::namespaced(a.clone(), ns)
        .get("web")
        .await?;
    assert_eq!(drained.spec.and_then(|s| s.replicas), Some(0));
    assert_eq!(
        drained
            .metadata
            .annotations
            .unwrap_or_default()
            .get(ferry_adapter_kubernetes::MARK_ANNOTATION),
        Some(&first)
    );

    // Asked again, the move back takes the drained copy over (a forced apply on the
    // fields the user's kubectl had set), and the first migration hands it over.
    let again = broker.migrate("back/web", "kube-a", false).await?;
    let done = broker.until_final(&again).await?;
    assert_eq!(state(&done), "done", "{done}\n{}", broker.logs());
    until_available(&a, ns, "web", 2).await?;
    let web = Api::<Deployment>::namespaced(a.clone(), ns)
        .get("web")
        .await?;
    assert_eq!(
        web.metadata
            .annotations
            .unwrap_or_default()
            .get(ferry_adapter_kubernetes::MARK_ANNOTATION),
        Some(&again)
    );
    Ok(())
}
