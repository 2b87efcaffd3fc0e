//! What the end-to-end tests of `ferry serve` share: a broker process driven through
//! its REST API, and Deployments on the test clusters.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
/// Nodes labelled so select what `deployment(.., pinned)` asks for.
pub const SITE_LABEL: &str = "ferry-test/site";

pub async fn eventually<T, F, Fut>(what: &str, probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    eventually_within(Duration::from_secs(90), what, probe).await
}

/// [`eventually`] with another limit.
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if started.elapsed() > limit {
            bail!("{what}: not after {:?}", started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn object<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    Ok(serde_json::from_value(value)?)
}

pub async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name}}))?,
        )
        .await?;
    Ok(())
}

/// A Deployment of `replicas` pods requesting `cpu` each; with `pinned`, its pods only
/// fit on kube-a's nodes.
pub fn deployment(name: &str, replicas: u32, cpu: &str, pinned: bool) -> Value {
    let mut spec = json!({
        "containers": [{
            "name": "app", "image": "registry.invalid/app:1",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
        }],
    });
    if pinned {
        spec["nodeSelector"] = json!({SITE_LABEL: "a"});
    }
    json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    })
}

pub async fn create_deployment(client: &Client, namespace: &str, value: Value) -> Result<()> {
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object(value)?)
        .await?;
    Ok(())
}

/// `(spec.replicas, status.availableReplicas)` of a Deployment, `None` if absent.
pub async fn replicas(client: &Client, namespace: &str, name: &str) -> Result<Option<(i32, i32)>> {
    Ok(Api::<Deployment>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .map(|d| {
            (
                d.spec.and_then(|s| s.replicas).unwrap_or(1),
                d.status.and_then(|s| s.available_replicas).unwrap_or(0),
            )
        }))
}

pub async fn until_available(
    client: &Client,
    namespace: &str,
    name: &str,
    want: i32,
) -> Result<()> {
    eventually(&format!("{namespace}/{name} available {want}"), || async {
        Ok((replicas(client, namespace, name).await? == Some((want, want))).then_some(()))
    })
    .await
}

pub struct Broker {
    pub child: Child,
    pub url: String,
    pub logs: Arc<Mutex<String>>,
    pub dir: PathBuf,
    pub token: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SIGKILL: what the crash test needs, and enough for the others.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    /// `ferry serve` on `dir`, with extra environment (the crash test's pause hook).
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Result<Broker> {
        let mut child = Command::new(FERRY)
            .args(["serve", "--config"])
            .arg(dir.join("ferry.toml"))
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start ferry serve")?;
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().context("stderr")?;
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut all) = sink.lock() {
                    all.push_str(&line);
                    all.push('\n');
                }
            }
        });
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let url = loop {
            let Some(line) = lines.next() else {
                let logs = logs.lock().map(|l| l.clone()).unwrap_or_default();
                bail!("ferry serve ended before it listened:\n{logs}");
            };
            if let Some(rest) = line?.strip_prefix("ferry serve: listening on ") {
                break rest.trim().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let output = Command::new(FERRY)
            .args(["token", "create", "--role", "admin", "--data"])
            .arg(dir.join("data"))
            .output()?;
        ensure!(output.status.success(), "token create failed");
        Ok(Broker {
            child,
            url,
            logs,
            dir: dir.to_path_buf(),
            token: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        })
    }

    pub fn logs(&self) -> String {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        // reqwest has rustls (the default `https` feature): it needs a provider.
        ferry_testenv::install_crypto_provider();
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Sends `text` as the body, as it is (a YAML document).
    pub async fn post_text(&self, path: &str, text: &str) -> Result<(u16, Value)> {
        self.send_text(reqwest::Method::POST, path, text).await
    }

    pub async fn put_text(&self, path: &str, text: &str) -> Result<(u16, Value)> {
        self.send_text(reqwest::Method::PUT, path, text).await
    }

    /// Sends `text` (a YAML document) as the body, as it is.
    async fn send_text(
        &self,
        method: reqwest::Method,
        path: &str,
        text: &str,
    ) -> Result<(u16, Value)> {
        // reqwest has rustls (the default `https` feature): it needs a provider.
        ferry_testenv::install_crypto_provider();
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/yaml")
            .body(text.to_owned())
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    pub async fn migration(&self, id: &str) -> Result<Value> {
        Ok(self
            .call("GET", &format!("/api/v1/migrations/{id}"), None)
            .await?
            .1)
    }

    /// Waits until the broker reports `workload` on `cluster` (its watches have synced).
    pub async fn until_sees(&self, workload: &str, cluster: &str) -> Result<()> {
        let (namespace, name) = workload.split_once('/').context("ns/name")?;
        eventually(
            &format!("the broker sees {workload} on {cluster}"),
            || async {
                let (status, workloads) = self.call("GET", "/api/v1/workloads", None).await?;
                let found = workloads["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|w| {
                        w["namespace"] == namespace
                            && w["name"] == name
                            && w["placements"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .any(|p| p["cluster"] == cluster)
                    });
                Ok((status == 200 && found).then_some(()))
            },
        )
        .await
    }

    /// A dry run's findings (nothing is stored).
    pub async fn dry_run(&self, workload: &str, to: &str) -> Result<Value> {
        let (status, answer) = self
            .call(
                "POST",
                "/api/v1/migrations",
                Some(json!({"workload": workload, "to": to, "dryRun": true})),
            )
            .await?;
        ensure!(
            status == 200,
            "POST /migrations (dry run) answered {status}: {answer}"
        );
        Ok(answer)
    }

    /// Submits a migration; returns its id.
    pub async fn migrate(&self, workload: &str, to: &str, dry_run: bool) -> Result<String> {
        ensure!(!dry_run, "a dry run has no id: use dry_run");
        let (status, created) = self
            .call(
                "POST",
                "/api/v1/migrations",
                Some(json!({"workload": workload, "to": to, "dryRun": false})),
            )
            .await?;
        ensure!(
            status == 202,
            "POST /migrations answered {status}: {created}"
        );
        Ok(created["id"].as_str().context("id")?.to_owned())
    }

    pub async fn until_final(&self, id: &str) -> Result<Value> {
        let started = Instant::now();
        loop {
            let migration = self.migration(id).await?;
            if let Some("done" | "rolledBack" | "failed" | "cancelled") =
                migration["state"].as_str()
            {
                return Ok(migration);
            }
            if started.elapsed() > Duration::from_secs(180) {
                bail!("migration {id} did not end: {migration}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn until_step_running(&self, id: &str, step: &str) -> Result<()> {
        eventually(&format!("step {step} of {id} running"), || async {
            let migration = self.migration(id).await?;
            let running = migration["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["name"] == step && s["state"] == "running");
            Ok(running.then_some(()))
        })
        .await
    }

    pub async fn until_log(&self, text: &str) -> Result<()> {
        eventually(&format!("broker log line {text:?}"), || async {
            Ok(self.logs().contains(text).then_some(()))
        })
        .await
    }
}

pub fn state(migration: &Value) -> &str {
    migration["state"].as_str().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// OpenStack: Ferry's cluster template with the test stand-ins
// ---------------------------------------------------------------------------------------

pub const STANDIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../adapters/openstack/testdata/standin"
);

/// The stand-in environment, in `dir`, pointing at `server` (`https://127.0.0.1:PORT`)
/// with `ca_pem` and `token`.
pub fn standin_environment(dir: &Path, ca_pem: &[u8], token: &str, fail: bool) -> Result<PathBuf> {
    use base64::Engine as _;
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(STANDIN)? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.join(entry.file_name()))?;
    }
    let access = json!({
        "ca": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        "token": token,
    });
    let mut text = std::fs::read_to_string(dir.join("standin-environment.yaml"))?;
    text.push_str(&format!(
        "parameter_defaults:\n  standin_api_host: 127.0.0.1\n  standin_fail: {fail}\n  standin_cluster_access: {}\n",
        serde_json::to_string(&access.to_string())?
    ));
    let path = dir.join(if fail {
        "standin-failing.yaml"
    } else {
        "standin-environment.yaml"
    });
    std::fs::write(&path, text)?;
    Ok(path)
}

/// A Cluster document of `openstack-dc1`, provisioned through Heat (stack `ferry-dc1`)
/// with the stand-in `environment` (see [`standin_environment`]), scoped to `namespace`.
pub fn heat_cluster_document(api_port: u16, environment: &Path, namespace: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1
kind: Cluster
metadata:
  name: openstack-dc1
  labels: {{provider: openstack, residency: eu}}
spec:
  provider: openstack
  openstack:
    cloud: {cloud}
    heat:
      stack: ferry-dc1
      parameters:
        image: ubuntu-24.04
        master_flavor: m1.medium
        worker_flavor: m1.large
        external_network: public
        worker_count: \"3\"
        api_port: \"{api_port}\"
      environment: {environment:?}
  workloads: {{namespaces: [{namespace}]}}
  overrides: {{labels: {{ferry-test/arrived-on: openstack-dc1}}}}
  pricing: {{currency: USD, cpuCoreHour: 0.01, memoryGiBHour: 0.001, egressGiB: 0.01}}
",
        cloud = ferry_testenv::CLOUD
    )
}

/// Waits until the provisioning record of `cluster` is in `phase` (a failure meanwhile
/// ends the wait with the record).
pub async fn until_phase(broker: &Broker, cluster: &str, phase: &str) -> Result<Value> {
    eventually(&format!("{cluster} {phase}"), || async {
        let (status, record) = broker
            .call(
                "GET",
                &format!("/api/v1/clusters/{cluster}/provisioning"),
                None,
            )
            .await?;
        ensure!(status == 200, "provisioning record: {status} {record}");
        if record["phase"] == "failed" && phase != "failed" {
            bail!("provisioning failed: {record}\n{}", broker.logs());
        }
        Ok((record["phase"] == phase).then_some(record))
    })
    .await
}

/// The port of an `https://127.0.0.1:PORT` server.
pub fn api_port(server: &str) -> Result<u16> {
    server
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("the apiserver's port")
}

// ---------------------------------------------------------------------------------------
// Ferry's least-privilege identity on a harness cluster
// ---------------------------------------------------------------------------------------

/// `deploy/ferry-clusterrole.yaml` as an object, and its name.
pub fn ferry_cluster_role() -> Result<(k8s_openapi::api::rbac::v1::ClusterRole, String)> {
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(
        ferry_testenv::manifest_documents(ferry_adapter_kubernetes::CLUSTER_ROLE_YAML)?
            .into_iter()
            .next()
            .context("deploy/ferry-clusterrole.yaml has a document")?,
    )?;
    let name = role.metadata.name.clone().context("the role has a name")?;
    Ok((role, name))
}

/// Creates Ferry's ClusterRole on `cluster` and a ServiceAccount `name` bound to it, and
/// waits until the authorizer knows the binding (it learns of it through an informer).
pub async fn ferry_identity(
    cluster: &ferry_testenv::Cluster,
    name: &str,
) -> Result<ferry_testenv::Identity> {
    let (role, role_name) = ferry_cluster_role()?;
    Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(cluster.client().await?)
        .create(&PostParams::default(), &role)
        .await?;
    let identity = cluster.identity(name, &role_name).await?;
    let restricted = ferry_testenv::client_from(&identity.kubeconfig).await?;
    eventually("the restricted identity may list nodes", || {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(restricted.clone());
        async move {
            Ok(nodes
                .list(&kube::api::ListParams::default())
                .await
                .is_ok()
                .then_some(()))
        }
    })
    .await?;
    Ok(identity)
}
