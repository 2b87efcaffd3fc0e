//! `ferry serve` federates GKE clusters it discovers, and moves a workload onto one and
//! back, driven through the REST API.
//!
//! Google cannot be called here: the harness's fake Google (`ferry_testenv::google`)
//! answers the token, GKE and Billing Catalog calls, checks each against Google's
//! discovery documents, and verifies the JWT assertion with the key's public half. The
//! two GKE clusters it lists are real kube-apiservers of the harness, which accept the
//! access tokens it issues through a TokenReview webhook (as GKE's control planes accept
//! Google's) and know the service account by its e-mail, bound by RBAC to
//! `deploy/ferry-clusterrole.yaml`. The workload starts on the on-prem cluster that Ferry
//! provisions first through the real Keystone and Heat, with the OpenStack test's
//! stand-ins for Nova, Neutron and Octavia (`openstack_e2e.rs`): a third real apiserver.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ferry_testenv::google::{COMPUTE_ENGINE, NodePoolSpec, ram_sku, vcpu_sku};
use ferry_testenv::{ClusterSpec, FakeGoogle, OpenStack, start_clusters};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use support::*;

const PROJECT: &str = "ferry-e2e";
const LOCATION: &str = "europe-west4";
const EMAIL: &str = "ferry-broker@ferry-e2e.iam.gserviceaccount.com";
const NAMESPACE: &str = "shop";

/// A copy of a broker folder with a data folder of its own (a second broker beside the
/// first).
fn dir_with_new_data(dir: &Path) -> Result<std::path::PathBuf> {
    let copy = dir.with_file_name("broker-2");
    let _ = std::fs::remove_dir_all(&copy);
    std::fs::create_dir_all(copy.join("resources"))?;
    for name in ["ferry.toml", "google-key.json", "resources/clusters.yaml"] {
        std::fs::copy(dir.join(name), copy.join(name))?;
    }
    Ok(copy)
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    Ok(serde_json::from_value(value)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gke_discover_then_migrate() -> Result<()> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("gke-e2e");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("broker/resources"))?;

    let fake = FakeGoogle::start().await?;
    // Tokens that live 10 s: the broker renews them in the background while it works, and
    // every call after the first 10 s needs a renewed one.
    fake.set_token_lifetime(Duration::from_secs(10));
    let specs = [
        ClusterSpec::named("kube-dc1")
            .in_dir(root.join("kube-dc1"))
            .with_nodes(2, "8", "32Gi"),
        ClusterSpec::named("gke-a")
            .in_dir(root.join("gke-a"))
            .with_nodes(2, "8", "32Gi")
            .with_token_webhook(&fake.token_review_url()),
        ClusterSpec::named("gke-b")
            .in_dir(root.join("gke-b"))
            .with_nodes(2, "8", "32Gi")
            .with_token_webhook(&fake.token_review_url()),
    ];
    let (openstack, clusters) = tokio::join!(
        OpenStack::start(Some(root.join("openstack"))),
        start_clusters(&specs)
    );
    let openstack = openstack.context("Keystone and Heat")?;
    let mut clusters = clusters.context("three clusters")?;
    let (role, role_name) = ferry_cluster_role()?;

    // The source: a restricted ServiceAccount, as in the other end-to-end tests.
    let source = &clusters[0];
    let source_admin = source.client().await?;
    let identity = ferry_identity(source, "ferry").await?;

    // The GKE clusters: Google's service account bound to Ferry's role by its e-mail, and
    // listed by the fake with their endpoints, CAs and node pools.
    for (cluster, zone) in [
        (&clusters[1], "europe-west4-a"),
        (&clusters[2], "europe-west4-b"),
    ] {
        let admin = cluster.client().await?;
        Api::<ClusterRole>::all(admin.clone())
            .create(&PostParams::default(), &role)
            .await?;
        Api::<ClusterRoleBinding>::all(admin)
            .create(
                &PostParams::default(),
                &object(json!({
                    "metadata": {"name": "ferry-google"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": EMAIL}],
                }))?,
            )
            .await?;
        fake.add_cluster(
            PROJECT,
            LOCATION,
            cluster.name(),
            cluster
                .server()
                .strip_prefix("https://")
                .context("an https server")?,
            &std::fs::read_to_string(cluster.ca_file())?,
            vec![NodePoolSpec::new("default-pool", "e2-standard-8").in_zone(zone, 2)],
        );
    }
    // E2 in the Netherlands: 0.021 per vCPU-hour and 0.0028 per GiB-hour.
    fake.add_skus(
        COMPUTE_ENGINE,
        vec![
            vcpu_sku("E2", LOCATION, "OnDemand", 0, 21_000_000),
            ram_sku("E2", LOCATION, "OnDemand", 0, 2_800_000),
            vcpu_sku("N2", LOCATION, "OnDemand", 0, 31_611_000),
        ],
    );
    let account = fake.add_service_account(EMAIL, PROJECT)?;
    let key = root.join("broker/google-key.json");
    std::fs::write(&key, account.key_file_json())?;

    // The broker: the source from a file, and one GKE file for the project's location,
    // whose clusters are all members. Its static rates are the catalog's fallback.
    std::fs::write(
        root.join("broker/resources/clusters.yaml"),
        format!(
            "apiVersion: ferry.dev/v1alpha1
kind: Cluster
metadata:
  name: gke-europe
  labels: {{provider: gke, region: {LOCATION}}}
spec:
  provider: gke
  gke: {{project: {PROJECT}, location: {LOCATION}, credentialsFile: google-key.json}}
  workloads: {{namespaces: [{NAMESPACE}]}}
  pricing: {{currency: USD, cpuCoreHour: 0.9, memoryGiBHour: 0.9, egressGiB: 0.12}}
"
        ),
    )?;
    let dir = root.join("broker");
    std::fs::write(
        dir.join("ferry.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\ndata = \"data\"\nresources = [\"resources\"]\n[migrations]\nrollback-window = \"2s\"\nstep-deadline = \"60s\"\n[provisioning]\nclouds-yaml = {:?}\npoll = \"1s\"\n[gke]\napi-url = {:?}\nbilling-url = {:?}\n",
            openstack.clouds_yaml(),
            fake.container_url(),
            fake.billing_url()
        ),
    )?;
    let broker = Broker::start(&dir, &[])?;

    // The on-prem cluster, provisioned through Heat: its stack's outputs lead to the
    // first apiserver, reached as its restricted ServiceAccount.
    let environment = standin_environment(
        &root.join("standin"),
        &std::fs::read(source.ca_file())?,
        &identity.token,
        false,
    )?;
    let (status, answer) = broker
        .post_text(
            "/api/v1/clusters",
            &heat_cluster_document(api_port(source.server())?, &environment, NAMESPACE),
        )
        .await?;
    ensure!(status == 202, "{status} {answer}");
    until_phase(&broker, "openstack-dc1", "ready").await?;

    // Both GKE clusters are Ready members, priced from the catalog.
    let found = eventually("the two GKE clusters are Ready members", || async {
        let (_, clusters) = broker.call("GET", "/api/v1/clusters", None).await?;
        let gke: Vec<Value> = clusters["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["provider"] == "gke")
            .cloned()
            .collect();
        Ok((gke.len() == 2 && gke.iter().all(|c| c["health"] == "Ready")).then_some(gke))
    })
    .await?;
    let names: Vec<&str> = found.iter().filter_map(|c| c["name"].as_str()).collect();
    ensure!(names == ["gke-a", "gke-b"], "{names:?}");
    for cluster in &found {
        let pricing = &cluster["pricing"];
        ensure!(
            pricing["cpuCoreHour"].as_f64() == Some(0.021)
                && pricing["memoryGibHour"].as_f64() == Some(0.0028),
            "catalog prices: {cluster}"
        );
        ensure!(
            pricing["source"]
                .as_str()
                .is_some_and(|s| s.contains("atalog")),
            "the source of the prices is said: {pricing}"
        );
        ensure!(
            cluster["capacity"]["cpuMillis"].as_i64() == Some(16_000),
            "capacity from the cluster's nodes: {cluster}"
        );
    }
    // The CLI shows the same.
    let output = std::process::Command::new(FERRY)
        .args(["get", "clusters"])
        .env("FERRY_SERVER", &broker.url)
        .env("FERRY_TOKEN", &broker.token)
        .output()?;
    let table = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && table.contains("gke-a") && table.contains("0.021000"),
        "ferry get clusters: {table}"
    );

    // Capacity: gke-a's node pool from 2 to 4 nodes, through the CLI; then a resize whose
    // operation fails, with Google's error said.
    let resize = |workers: &str| {
        std::process::Command::new(FERRY)
            .args(["cluster", "resize", "gke-a", "--workers", workers, "--wait"])
            .env("FERRY_SERVER", &broker.url)
            .env("FERRY_TOKEN", &broker.token)
            .output()
    };
    let output = resize("4")?;
    ensure!(
        output.status.success(),
        "resize: {}{}",
        String::from_utf8_lossy(&output.stderr),
        broker.logs()
    );
    ensure!(
        fake.pool_sizes(PROJECT, LOCATION, "gke-a", "default-pool")
            == Some(vec![("europe-west4-a".to_owned(), 4)]),
        "the pool has 4 nodes: {:?}",
        fake.pool_sizes(PROJECT, LOCATION, "gke-a", "default-pool")
    );
    fake.fail_next_set_size("ZONE_RESOURCE_POOL_EXHAUSTED in europe-west4-a");
    let output = resize("6")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("ZONE_RESOURCE_POOL_EXHAUSTED"),
        "a failed resize is an error with Google's reason: {stderr}"
    );

    // The app moves onto GKE and back.
    create_namespace(&source_admin, NAMESPACE).await?;
    create_deployment(
        &source_admin,
        NAMESPACE,
        deployment("web", 3, "250m", false),
    )
    .await?;
    until_available(&source_admin, NAMESPACE, "web", 3).await?;
    let gke_a = clusters[1].client().await?;
    create_namespace(&gke_a, NAMESPACE).await?;
    broker
        .until_sees(&format!("{NAMESPACE}/web"), "openstack-dc1")
        .await?;
    for (to, client) in [("gke-a", &gke_a), ("openstack-dc1", &source_admin)] {
        let id = broker
            .migrate(&format!("{NAMESPACE}/web"), to, false)
            .await?;
        let migration = broker.until_final(&id).await?;
        ensure!(
            state(&migration) == "done",
            "migration to {to}: {migration}\n{}",
            broker.logs()
        );
        until_available(client, NAMESPACE, "web", 3).await?;
        broker.until_sees(&format!("{NAMESPACE}/web"), to).await?;
        // The way back waits for the drained copy to go (after the rollback window):
        // applying over a drained copy still there is refused (see docs/kubernetes.md).
        eventually(&format!("the source of {id} removed"), || async {
            Ok((broker.migration(&id).await?["sourceRemoved"] == true).then_some(()))
        })
        .await?;
    }

    // A token that expires under a watch: with every token issued so far expired, gke-b's
    // apiserver restarts, which ends the broker's watches there; they come back with a
    // renewed token, and what happens on gke-b afterwards reaches the broker.
    fake.expire_tokens();
    clusters[2].kill("kube-apiserver")?;
    clusters[2].restart("kube-apiserver").await?;
    let gke_b = clusters[2].client().await?;
    create_namespace(&gke_b, NAMESPACE).await?;
    create_deployment(
        &gke_b,
        NAMESPACE,
        deployment("after-restart", 1, "100m", false),
    )
    .await?;
    broker
        .until_sees(&format!("{NAMESPACE}/after-restart"), "gke-b")
        .await?;

    // Tokens were renewed on the way (the test outlives the first one).
    let issued = fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with("/token") && r.status == 200)
        .count();
    ensure!(issued >= 2, "the broker renewed its token: {issued} issued");

    // A revoked key: a broker given it refuses to start, saying why, and asks Google once.
    fake.revoke(EMAIL);
    let before = fake.requests().len();
    let refused = Broker::start(&dir_with_new_data(&dir)?, &[]);
    let Err(error) = refused else {
        anyhow::bail!("a broker started with a revoked key");
    };
    let text = format!("{error:#}");
    ensure!(
        text.contains("invalid_grant") || text.contains("refused"),
        "the refusal says why: {text}"
    );
    let asked = fake.requests()[before..]
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .count();
    ensure!(asked == 1, "one token request, not a retry storm: {asked}");

    // Every call the broker made was one Google's documents describe, with a token the
    // fake issued; the key never reached the broker's log.
    let violations = fake.violations();
    ensure!(violations.is_empty(), "{violations:#?}");
    ensure!(
        !broker.logs().contains("PRIVATE KEY"),
        "the key reached the log"
    );
    Ok(())
}
