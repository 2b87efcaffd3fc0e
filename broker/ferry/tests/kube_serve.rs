//! `ferry serve` on two real Kubernetes clusters of the test harness, driven through the
//! REST API: a realistic app migrates from A to B with every object, its Secret intact on
//! B and absent from the broker's store, events and logs; the source is drained and then
//! deleted after the rollback window.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_testenv::{ClusterSpec, start_clusters};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const SECRET_VALUE: &str = "s3cr3t-value-that-must-not-leak";

struct Served {
    child: Child,
    url: String,
    logs: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("test objects are valid")
}

async fn create_app(client: kube::Client) -> Result<()> {
    let ns = "shop";
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": ns}})),
        )
        .await?;
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web-config"}, "data": {"MODE": "production"}})),
        )
        .await?;
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(
                json!({"metadata": {"name": "web-secret"}, "stringData": {"TOKEN": SECRET_VALUE}}),
            ),
        )
        .await?;
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "web"}})),
        )
        .await?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "web", "labels": {"app": "web"}},
                "spec": {
                    "replicas": 3,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {
                            "serviceAccountName": "web",
                            "containers": [{
                                "name": "web", "image": "registry.invalid/web:1",
                                "envFrom": [{"configMapRef": {"name": "web-config"}}],
                                "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "web-secret", "key": "TOKEN"}}}],
                                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                            }],
                        },
                    },
                },
            })),
        )
        .await?;
    Api::<Service>::namespaced(client, ns)
        .create(&PostParams::default(), &object(json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})))
        .await?;
    Ok(())
}

fn cluster_file(name: &str, kubeconfig: &Path, cpu_price: f64) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  provider: kubernetes\n  kubernetes: {{kubeconfig: \"{}\"}}\n  pricing: {{currency: USD, cpuCoreHour: {cpu_price}, memoryGiBHour: 0.004, egressGiB: 0.01}}\n---\n",
        kubeconfig.display()
    )
}

fn serve(dir: &Path) -> Served {
    let mut child = Command::new(FERRY)
        .args(["serve", "--config"])
        .arg(dir.join("ferry.toml"))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry serve");
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr");
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut all) = sink.lock() {
                all.push_str(&line);
                all.push('\n');
            }
        }
    });
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("ferry serve printed its address")
            .expect("utf-8");
        if let Some(rest) = line.strip_prefix("ferry serve: listening on ") {
            break rest.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Served { child, url, logs }
}

async fn call(
    served: &Served,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value)> {
    let client = reqwest::Client::new();
    let mut request = client
        .request(method, format!("{}{path}", served.url))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_migrate_realistic_app() -> Result<()> {
    let clusters = start_clusters(&[
        ClusterSpec::named("kube-a").with_nodes(2, "4", "16Gi"),
        ClusterSpec::named("kube-b").with_nodes(2, "4", "16Gi"),
    ])
    .await
    .context("two clusters")?;
    create_app(clusters[0].client().await?).await?;

    let dir = std::env::temp_dir().join(format!("ferry-kube-serve-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("resources"))?;
    std::fs::write(
        dir.join("resources/clusters.yaml"),
        cluster_file("kube-a", clusters[0].kubeconfig(), 0.05)
            + &cluster_file("kube-b", clusters[1].kubeconfig(), 0.02),
    )?;
    std::fs::write(
        dir.join("ferry.toml"),
        "listen = \"127.0.0.1:0\"\ndata = \"data\"\nresources = [\"resources\"]\n[migrations]\nrollback-window = \"2s\"\nstep-deadline = \"90s\"\n",
    )?;
    let served = serve(&dir);
    let token = {
        let output = Command::new(FERRY)
            .args(["token", "create", "--role", "admin", "--data"])
            .arg(dir.join("data"))
            .output()?;
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };

    // The broker sees the app on A through the adapter's watches.
    let started = Instant::now();
    loop {
        let (status, workloads) = call(
            &served,
            &token,
            reqwest::Method::GET,
            "/api/v1/workloads",
            None,
        )
        .await?;
        let found = workloads["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| {
                w["namespace"] == "shop"
                    && w["name"] == "web"
                    && w["placements"][0]["cluster"] == "kube-a"
            });
        if status == 200 && found {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the broker never saw shop/web on kube-a: {status} {workloads}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    let (status, created) = call(
        &served,
        &token,
        reqwest::Method::POST,
        "/api/v1/migrations",
        Some(json!({"workload": "shop/web", "to": "kube-b"})),
    )
    .await?;
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().context("id")?.to_owned();
    let started = Instant::now();
    let done = loop {
        let (_, m) = call(
            &served,
            &token,
            reqwest::Method::GET,
            &format!("/api/v1/migrations/{id}"),
            None,
        )
        .await?;
        match m["state"].as_str() {
            Some("done") => break m,
            Some("rolledBack" | "failed" | "cancelled") => bail!(
                "migration ended {m}\nbroker log:\n{}",
                served.logs.lock().map(|l| l.clone()).unwrap_or_default()
            ),
            _ => {}
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("migration did not end: {m}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(done["from"], "kube-a");

    // Every object is on B, available, the Secret intact.
    let b = clusters[1].client().await?;
    let deployment = Api::<Deployment>::namespaced(b.clone(), "shop")
        .get("web")
        .await?;
    assert_eq!(
        deployment.status.and_then(|s| s.available_replicas),
        Some(3)
    );
    Api::<ConfigMap>::namespaced(b.clone(), "shop")
        .get("web-config")
        .await?;
    Api::<ServiceAccount>::namespaced(b.clone(), "shop")
        .get("web")
        .await?;
    Api::<Service>::namespaced(b.clone(), "shop")
        .get("web")
        .await?;
    let secret = Api::<Secret>::namespaced(b, "shop")
        .get("web-secret")
        .await?;
    let value = secret
        .data
        .and_then(|d| d.get("TOKEN").cloned())
        .context("TOKEN")?;
    assert_eq!(value.0, SECRET_VALUE.as_bytes());

    // The source: drained, then deleted after the rollback window.
    let a = Api::<Deployment>::namespaced(clusters[0].client().await?, "shop");
    let started = Instant::now();
    while a.get_opt("web").await?.is_some() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the drained source was never deleted");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The Secret's value is nowhere in the broker's store, events or logs.
    let (_, events_like) =
        call(&served, &token, reqwest::Method::GET, "/api/v1/audit", None).await?;
    assert!(!events_like.to_string().contains(SECRET_VALUE));
    let logs = served.logs.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        !logs.contains(SECRET_VALUE),
        "the secret value is in the broker's log"
    );
    let encoded = "czNjcjN0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw"; // base64 of the value, unpadded prefix
    let mut stack = vec![dir.join("data")];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path)?.filter_map(|e| e.ok().map(|e| e.path())));
        } else {
            let bytes = std::fs::read(&path)?;
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains(SECRET_VALUE) && !text.contains(encoded),
                "{} holds the secret",
                path.display()
            );
        }
    }
    Ok(())
}
