//! Ferry provisions its on-prem cluster through a real Keystone and Heat, connects to it
//! and migrates a workload onto it, driven through the CLI and the REST API of
//! `ferry serve`.
//!
//! No Nova, Neutron or Octavia can run here, so the test's Heat environment stands in
//! provider templates for Ferry's `Ferry::Network`, `Ferry::ApiLoadBalancer`,
//! `Ferry::Master` and `Ferry::Worker` (`adapters/openstack/testdata/standin/`). Heat runs
//! Ferry's real cluster template with them; the stand-in load balancer's address is
//! 127.0.0.1 and the stand-in control plane signals, as a real one would, the CA of one
//! of the harness's real kube-apiservers and the token of a ServiceAccount bound to
//! `deploy/ferry-clusterrole.yaml` there. Everything after the stack is real: Ferry reads
//! the outputs, builds its client, and the workload runs on that apiserver's nodes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferry_adapter_openstack::{CloudConfig, Heat, Keystone, StackId};
use ferry_testenv::{
    CLOUD, ClusterSpec, OpenStack, client_from, manifest_documents, start_clusters,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

use support::*;

const NAMESPACE: &str = "shop";
const STANDIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../adapters/openstack/testdata/standin"
);

/// The stand-in environment, in `dir`, pointing at `server` (`https://127.0.0.1:PORT`)
/// with `ca_pem` and `token`.
fn standin_environment(dir: &Path, ca_pem: &[u8], token: &str) -> Result<PathBuf> {
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
    let path = dir.join("standin-environment.yaml");
    let mut text = std::fs::read_to_string(&path)?;
    text.push_str(&format!(
        "parameter_defaults:\n  standin_api_host: 127.0.0.1\n  standin_cluster_access: {}\n",
        serde_json::to_string(&access.to_string())?
    ));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn cluster_document(api_port: u16, environment: &Path) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1
kind: Cluster
metadata:
  name: openstack-dc1
  labels: {{provider: openstack, residency: eu}}
spec:
  provider: openstack
  openstack:
    cloud: {CLOUD}
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
  workloads: {{namespaces: [{NAMESPACE}]}}
  overrides: {{labels: {{ferry-test/arrived-on: openstack-dc1}}}}
  pricing: {{currency: USD, cpuCoreHour: 0.01, memoryGiBHour: 0.001, egressGiB: 0.01}}
"
    )
}

async fn until_phase(broker: &Broker, cluster: &str, phase: &str) -> Result<Value> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_heat_provision_then_migrate() -> Result<()> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openstack-e2e");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;

    // Keystone and Heat, and two real clusters: where the app runs, and the apiserver
    // the provisioned cluster turns out to be.
    let specs = [
        ClusterSpec::named("kube-src")
            .in_dir(root.join("kube-src"))
            .with_nodes(2, "8", "32Gi"),
        ClusterSpec::named("kube-dc1")
            .in_dir(root.join("kube-dc1"))
            .with_nodes(2, "8", "32Gi"),
    ];
    let (openstack, clusters) = tokio::join!(
        OpenStack::start(Some(root.join("openstack"))),
        start_clusters(&specs),
    );
    let openstack = openstack.context("start Keystone and Heat")?;
    let clusters = clusters.context("start two clusters")?;
    let role: ClusterRole = serde_json::from_value(
        manifest_documents(ferry_adapter_kubernetes::CLUSTER_ROLE_YAML)?
            .into_iter()
            .next()
            .context("a ClusterRole")?,
    )?;
    let role_name = role.metadata.name.clone().context("its name")?;
    let mut identities = Vec::new();
    for cluster in &clusters {
        let admin = cluster.client().await?;
        Api::<ClusterRole>::all(admin)
            .create(&PostParams::default(), &role)
            .await?;
        let identity = cluster.identity("ferry", &role_name).await?;
        let restricted = client_from(&identity.kubeconfig).await?;
        eventually("the restricted identity may list nodes", || {
            let nodes: Api<Node> = Api::all(restricted.clone());
            async move {
                Ok(nodes
                    .list(&ListParams::default())
                    .await
                    .is_ok()
                    .then_some(()))
            }
        })
        .await?;
        identities.push(identity);
    }
    let (source, dc1) = (&clusters[0], &clusters[1]);
    let source_admin = source.client().await?;
    let dc1_admin = dc1.client().await?;

    // The broker: the source cluster from a file; the OpenStack cloud in its settings.
    let dir = root.join("broker");
    std::fs::create_dir_all(dir.join("resources"))?;
    std::fs::write(
        dir.join("resources/kube-src.yaml"),
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: kube-src}}\nspec:\n  provider: kubernetes\n  kubernetes: {{kubeconfig: {:?}}}\n  workloads: {{namespaces: [{NAMESPACE}]}}\n  pricing: {{currency: USD, cpuCoreHour: 0.05, memoryGiBHour: 0.004, egressGiB: 0.01}}\n",
            identities[0].kubeconfig
        ),
    )?;
    std::fs::write(
        dir.join("ferry.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndata = \"data\"\nresources = [\"resources\"]\n[migrations]\nrollback-window = \"2s\"\nstep-deadline = \"60s\"\n[provisioning]\nclouds-yaml = {:?}\npoll = \"1s\"\ndeadline = \"5m\"\n",
            openstack.clouds_yaml()
        ),
    )?;
    let broker = Broker::start(&dir, &[])?;

    // The app on the source.
    create_namespace(&source_admin, NAMESPACE).await?;
    create_deployment(
        &source_admin,
        NAMESPACE,
        deployment("web", 3, "250m", false),
    )
    .await?;
    until_available(&source_admin, NAMESPACE, "web", 3).await?;
    create_namespace(&dc1_admin, NAMESPACE).await?;

    // `ferry cluster create -f`, waiting with progress.
    let api_port: u16 = dc1
        .server()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("the apiserver's port")?;
    let environment = standin_environment(
        &root.join("standin"),
        &std::fs::read(dc1.ca_file())?,
        &identities[1].token,
    )?;
    // Bad input changes nothing.
    let (status, answer) = broker
        .post_text("/api/v1/clusters", "kind: Nonsense\n")
        .await?;
    ensure!(status == 400, "a bad document: {status} {answer}");
    let (status, answer) = broker
        .call(
            "POST",
            "/api/v1/clusters/nope/resize",
            Some(json!({"workers": 4})),
        )
        .await?;
    ensure!(
        status == 404,
        "resize of an unknown cluster: {status} {answer}"
    );

    let file = root.join("openstack-dc1.yaml");
    std::fs::write(&file, cluster_document(api_port, &environment))?;
    let begun = std::time::Instant::now();
    let output = Command::new(FERRY)
        .args(["cluster", "create", "--wait", "-f"])
        .arg(&file)
        .env("FERRY_SERVER", &broker.url)
        .env("FERRY_TOKEN", &broker.token)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "ferry cluster create took {:.1} s:\n{stderr}",
        begun.elapsed().as_secs_f64()
    );
    ensure!(
        output.status.success(),
        "ferry cluster create failed: {stderr}\n{}",
        broker.logs()
    );
    ensure!(
        stderr.contains("CREATE_IN_PROGRESS") && stderr.contains("resources complete"),
        "progress was shown: {stderr}"
    );
    let record = until_phase(&broker, "openstack-dc1", "ready").await?;
    let stack =
        StackId::parse(record["stack"].as_str().context("a stack id")?).context("name/id")?;
    ensure!(stack.name == "ferry-dc1", "{stack}");

    // Asked again while it exists: a conflict, nothing changes.
    let (status, answer) = broker
        .post_text("/api/v1/clusters", &std::fs::read_to_string(&file)?)
        .await?;
    ensure!(status == 409, "a second create: {status} {answer}");

    // A member like any other: ready, with the nodes of the apiserver behind the stack.
    eventually("openstack-dc1 is a Ready member", || async {
        let (_, clusters) = broker.call("GET", "/api/v1/clusters", None).await?;
        Ok(clusters["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "openstack-dc1" && c["health"] == "Ready")
            .then_some(()))
    })
    .await?;

    // The migration onto it.
    broker
        .until_sees(&format!("{NAMESPACE}/web"), "kube-src")
        .await?;
    let id = broker
        .migrate(&format!("{NAMESPACE}/web"), "openstack-dc1", false)
        .await?;
    let migration = broker.until_final(&id).await?;
    ensure!(
        state(&migration) == "done",
        "migration onto the provisioned cluster: {migration}\n{}",
        broker.logs()
    );
    until_available(&dc1_admin, NAMESPACE, "web", 3).await?;
    ensure!(
        replicas(&source_admin, NAMESPACE, "web")
            .await?
            .is_none_or(|(spec, _)| spec == 0),
        "the source was drained"
    );

    // Resize 3 → 5 through the API; Heat's stack says 5 afterwards.
    let (status, answer) = broker
        .call(
            "POST",
            "/api/v1/clusters/openstack-dc1/resize",
            Some(json!({"workers": 0})),
        )
        .await?;
    ensure!(status == 400, "0 workers: {status} {answer}");
    let (status, answer) = broker
        .call(
            "POST",
            "/api/v1/clusters/openstack-dc1/resize",
            Some(json!({"workers": 5})),
        )
        .await?;
    ensure!(status == 202, "resize: {status} {answer}");
    eventually("the resize ends", || async {
        let (_, record) = broker
            .call("GET", "/api/v1/clusters/openstack-dc1/provisioning", None)
            .await?;
        Ok((record["phase"] == "ready" && record["workers"] == 5).then_some(record))
    })
    .await
    .and_then(|record| {
        ensure!(record["reason"].is_null(), "{record}");
        Ok(())
    })?;
    let heat = Heat::new(Arc::new(Keystone::new(CloudConfig::from_clouds_yaml(
        CLOUD,
        Some(openstack.clouds_yaml()),
    )?)?));
    let shown = heat.show(&stack).await?;
    ensure!(
        shown.parameter_integer("worker_count")? == 5,
        "{:?}",
        shown.status
    );
    ensure!(shown.output_texts("worker_addresses")?.len() == 5);

    // The cluster's token is never in the broker's store.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(dir.join("data/store"))? {
        let path = entry?.path();
        if path.is_file() {
            stored.extend(std::fs::read(&path)?);
        }
    }
    let token = identities[1].token.as_bytes();
    ensure!(
        !stored.windows(token.len()).any(|w| w == token),
        "the cluster's token was written to the store"
    );
    ensure!(
        !broker.logs().contains(&identities[1].token),
        "the cluster's token was logged"
    );

    // Delete: refused while the workload serves there, then forced; the stack goes.
    let (status, answer) = broker
        .call("DELETE", "/api/v1/clusters/openstack-dc1", None)
        .await?;
    ensure!(
        status == 409 && answer.to_string().contains(&format!("{NAMESPACE}/web")),
        "delete with a workload serving: {status} {answer}"
    );
    let output = Command::new(FERRY)
        .args(["cluster", "delete", "openstack-dc1", "--force", "--wait"])
        .env("FERRY_SERVER", &broker.url)
        .env("FERRY_TOKEN", &broker.token)
        .output()?;
    ensure!(
        output.status.success(),
        "ferry cluster delete: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        broker.logs()
    );
    // Heat can still find a just-deleted stack by name for a moment.
    let gone_by = std::time::Instant::now() + Duration::from_secs(15);
    while heat.find("ferry-dc1").await?.is_some() {
        ensure!(
            std::time::Instant::now() < gone_by,
            "the stack is still there"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, clusters_now) = broker.call("GET", "/api/v1/clusters", None).await?;
    ensure!(
        !clusters_now.to_string().contains("openstack-dc1"),
        "the deleted cluster left the federation: {clusters_now}"
    );
    let (status, _) = broker
        .call("GET", "/api/v1/clusters/openstack-dc1/provisioning", None)
        .await?;
    ensure!(status == 404, "its record is gone: {status}");
    drop(broker);
    drop(openstack);
    Ok(())
}
