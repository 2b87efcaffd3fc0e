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

use anyhow::{Context, Result, ensure};
use ferry_adapter_openstack::{CloudConfig, Heat, Keystone, Magnum, NewClusterTemplate, StackId};
use ferry_testenv::{CLOUD, ClusterSpec, MockMagnum, OpenStack, start_clusters};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::{Value, json};

use support::*;

const NAMESPACE: &str = "shop";
fn cluster_document(api_port: u16, environment: &Path) -> String {
    heat_cluster_document(api_port, environment, NAMESPACE)
}

/// What both tests start: Keystone and Heat, two real clusters (where the app runs, and
/// the apiserver the provisioned cluster turns out to be), the restricted identity on
/// each, the app on the source, and a broker with the source from a file.
struct Setup {
    root: PathBuf,
    openstack: OpenStack,
    clusters: Vec<ferry_testenv::Cluster>,
    identities: Vec<ferry_testenv::Identity>,
    source_admin: kube::Client,
    target_admin: kube::Client,
}

/// The tests take turns: each starts Keystone, Heat and two clusters of its own, which
/// side by side would crowd two cores.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn setup(test: &str) -> Result<Setup> {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
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
    let mut identities = Vec::new();
    for cluster in &clusters {
        identities.push(ferry_identity(cluster, "ferry").await?);
    }
    let source_admin = clusters[0].client().await?;
    let target_admin = clusters[1].client().await?;
    create_namespace(&source_admin, NAMESPACE).await?;
    create_deployment(
        &source_admin,
        NAMESPACE,
        deployment("web", 3, "250m", false),
    )
    .await?;
    until_available(&source_admin, NAMESPACE, "web", 3).await?;
    create_namespace(&target_admin, NAMESPACE).await?;
    Ok(Setup {
        root,
        openstack,
        clusters,
        identities,
        source_admin,
        target_admin,
    })
}

impl Setup {
    /// `ferry serve` with the source cluster from a file and `clouds_yaml`.
    fn broker(&self, clouds_yaml: &Path) -> Result<Broker> {
        let dir = self.root.join("broker");
        std::fs::create_dir_all(dir.join("resources"))?;
        std::fs::write(
            dir.join("resources/kube-src.yaml"),
            format!(
                "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: kube-src}}\nspec:\n  provider: kubernetes\n  kubernetes: {{kubeconfig: {:?}}}\n  workloads: {{namespaces: [{NAMESPACE}]}}\n  pricing: {{currency: USD, cpuCoreHour: 0.05, memoryGiBHour: 0.004, egressGiB: 0.01}}\n",
                self.identities[0].kubeconfig
            ),
        )?;
        std::fs::write(
            dir.join("ferry.toml"),
            format!(
                "listen = \"127.0.0.1:0\"\ndata = \"data\"\nresources = [\"resources\"]\n[migrations]\nrollback-window = \"2s\"\nstep-deadline = \"60s\"\n[provisioning]\nclouds-yaml = {clouds_yaml:?}\npoll = \"1s\"\ndeadline = \"5m\"\n[controllers]\nmode = \"auto\"\ninterval = \"1s\"\nmax-nodes = 8\n",
            ),
        )?;
        Broker::start(&dir, &[])
    }

    /// `ferry cluster ARGS` against `broker`; its stderr (the progress), or why it failed.
    fn cli(&self, broker: &Broker, args: &[&str]) -> Result<String> {
        let begun = std::time::Instant::now();
        let output = Command::new(FERRY)
            .arg("cluster")
            .args(args)
            .env("FERRY_SERVER", &broker.url)
            .env("FERRY_TOKEN", &broker.token)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        eprintln!(
            "ferry cluster {} took {:.1} s:\n{stderr}",
            args.join(" "),
            begun.elapsed().as_secs_f64()
        );
        ensure!(
            output.status.success(),
            "ferry cluster {args:?} failed: {stderr}\n{}",
            broker.logs()
        );
        Ok(stderr)
    }

    /// The migration of the app onto `cluster`, once it is a Ready member: done, 3
    /// available there, the source drained.
    async fn migrate_onto(&self, broker: &Broker, cluster: &str) -> Result<()> {
        eventually(&format!("{cluster} is a Ready member"), || async {
            let (_, clusters) = broker.call("GET", "/api/v1/clusters", None).await?;
            Ok(clusters["items"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"] == cluster && c["health"] == "Ready")
                .then_some(()))
        })
        .await?;
        broker
            .until_sees(&format!("{NAMESPACE}/web"), "kube-src")
            .await?;
        let id = broker
            .migrate(&format!("{NAMESPACE}/web"), cluster, false)
            .await?;
        let migration = broker.until_final(&id).await?;
        ensure!(
            state(&migration) == "done",
            "migration onto the provisioned cluster: {migration}\n{}",
            broker.logs()
        );
        until_available(&self.target_admin, NAMESPACE, "web", 3).await?;
        ensure!(
            replicas(&self.source_admin, NAMESPACE, "web")
                .await?
                .is_none_or(|(spec, _)| spec == 0),
            "the source was drained"
        );
        Ok(())
    }

    /// Neither `secret` nor anything of `marker` in the store's files or the broker's log.
    fn never_stored_or_logged(broker: &Broker, secret: &str) -> Result<()> {
        let mut stored = Vec::new();
        for entry in std::fs::read_dir(broker.dir.join("data/store"))? {
            let path = entry?.path();
            if path.is_file() {
                stored.extend(std::fs::read(&path)?);
            }
        }
        ensure!(
            !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a credential was written to the store"
        );
        ensure!(!broker.logs().contains(secret), "a credential was logged");
        Ok(())
    }

    /// A delete refused while the app serves there, then forced and waited for: the
    /// cluster leaves the federation and its record goes.
    async fn delete(&self, broker: &Broker, cluster: &str) -> Result<()> {
        let (status, answer) = broker
            .call("DELETE", &format!("/api/v1/clusters/{cluster}"), None)
            .await?;
        ensure!(
            status == 409 && answer.to_string().contains(&format!("{NAMESPACE}/web")),
            "delete with a workload serving: {status} {answer}"
        );
        self.cli(broker, &["delete", cluster, "--force", "--wait"])?;
        let (_, clusters_now) = broker.call("GET", "/api/v1/clusters", None).await?;
        ensure!(
            !clusters_now.to_string().contains(cluster),
            "the deleted cluster left the federation: {clusters_now}"
        );
        let (status, _) = broker
            .call(
                "GET",
                &format!("/api/v1/clusters/{cluster}/provisioning"),
                None,
            )
            .await?;
        ensure!(status == 404, "its record is gone: {status}");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_heat_provision_then_migrate() -> Result<()> {
    let _turn = TURN.lock().await;
    let env = setup("openstack-heat-e2e").await?;
    let (root, openstack) = (&env.root, &env.openstack);
    let dc1 = &env.clusters[1];
    let identities = &env.identities;
    // The harness's cloud, and the same with a wrong password.
    let clouds_yaml = root.join("clouds.yaml");
    let harness = std::fs::read_to_string(openstack.clouds_yaml())?;
    let password = &openstack.credentials().password;
    let wrong = harness
        .replacen("clouds:\n", "", 1)
        .replace(&format!("  {CLOUD}:"), "  ferry-wrong-password:")
        .replace(password.as_str(), "not-the-password");
    std::fs::write(&clouds_yaml, format!("{harness}{wrong}"))?;
    let broker = env.broker(&clouds_yaml)?;

    // `ferry cluster create -f`, waiting with progress.
    let api_port = api_port(dc1.server())?;
    let environment = standin_environment(
        &root.join("standin"),
        &std::fs::read(dc1.ca_file())?,
        &identities[1].token,
        false,
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

    // A cloud that refuses the password: the create fails at once, saying so.
    let (status, answer) = broker
        .post_text(
            "/api/v1/clusters",
            &cluster_document(api_port, &environment)
                .replace(&format!("cloud: {CLOUD}"), "cloud: ferry-wrong-password")
                .replace("openstack-dc1", "openstack-nopw"),
        )
        .await?;
    ensure!(status == 202, "{status} {answer}");
    let failed = until_phase(&broker, "openstack-nopw", "failed").await?;
    ensure!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("refused password authentication")),
        "the reason is Keystone's refusal: {failed}"
    );
    ensure!(failed["handle"].is_null(), "nothing was created: {failed}");

    // A failing control plane: the stack fails, the record names the resource and Heat's
    // reason, and a delete cleans the stack up.
    let failing = standin_environment(
        &root.join("standin-failing"),
        &std::fs::read(dc1.ca_file())?,
        &identities[1].token,
        true,
    )?;
    let (status, answer) = broker
        .post_text(
            "/api/v1/clusters",
            &cluster_document(api_port, &failing)
                .replace("openstack-dc1", "openstack-bad")
                .replace("ferry-dc1", "ferry-bad"),
        )
        .await?;
    ensure!(status == 202, "{status} {answer}");
    let failed = until_phase(&broker, "openstack-bad", "failed").await?;
    let reason = failed["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.contains("server") && reason.contains("Test Resource failed"),
        "the reason names the failed resource and Heat's reason: {failed}"
    );
    ensure!(
        failed["handle"]
            .as_str()
            .is_some_and(|h| h.starts_with("ferry-bad/")),
        "the failed stack is kept for inspection: {failed}"
    );
    env.cli(&broker, &["delete", "openstack-bad", "--wait"])?;
    let (status, _) = broker
        .call("GET", "/api/v1/clusters/openstack-bad/provisioning", None)
        .await?;
    ensure!(
        status == 404,
        "the failed cluster's record is gone: {status}"
    );

    let file = root.join("openstack-dc1.yaml");
    std::fs::write(&file, cluster_document(api_port, &environment))?;
    let file_arg = file.display().to_string();
    let progress = env.cli(&broker, &["create", "--wait", "-f", &file_arg])?;
    ensure!(
        progress.contains("CREATE_IN_PROGRESS") && progress.contains("resources complete"),
        "progress was shown: {progress}"
    );
    let record = until_phase(&broker, "openstack-dc1", "ready").await?;
    ensure!(record["provisioner"] == "heat", "{record}");
    let stack =
        StackId::parse(record["handle"].as_str().context("a stack id")?).context("name/id")?;
    ensure!(stack.name == "ferry-dc1", "{stack}");

    // Asked again while it exists: a conflict, nothing changes.
    let (status, answer) = broker
        .post_text("/api/v1/clusters", &std::fs::read_to_string(&file)?)
        .await?;
    ensure!(status == 409, "a second create: {status} {answer}");

    // A member like any other, with the nodes of the apiserver behind the stack.
    env.migrate_onto(&broker, "openstack-dc1").await?;

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
    let record = until_resized(&broker, "openstack-dc1", 5).await?;
    ensure!(record["reason"].is_null(), "{record}");
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

    // Capacity on demand: a workload that may run only on OpenStack (required affinity)
    // and fits there nowhere makes the controllers grow the stack, through the same
    // journaled resize, within [controllers] max-nodes.
    let policy = "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {name: grow}\nspec:\n  priority: 10\n  workloadSelector: {matchLabels: {app: big}}\n  clusterAffinity:\n    required: {matchLabels: {provider: openstack}}\n  capacityOnDemand: true\n";
    let (status, answer) = broker.put_text("/api/v1/policies/grow", policy).await?;
    ensure!(status == 200, "the policy: {status} {answer}");
    let src = env.source_admin.clone();
    // Four 6-core replicas: on 8-core nodes one fits per node; they stay Pending on the
    // source, which the policy does not allow anyway.
    create_deployment(&src, NAMESPACE, deployment("big", 4, "6", false)).await?;
    let grown = eventually("the controllers grow openstack-dc1", || async {
        let (_, record) = broker
            .call("GET", "/api/v1/clusters/openstack-dc1/provisioning", None)
            .await?;
        Ok((record["phase"] == "ready" && record["workers"].as_u64() > Some(5)).then_some(record))
    })
    .await?;
    let workers = grown["workers"].as_u64().context("workers")?;
    let shown = heat.show(&stack).await?;
    ensure!(
        u64::try_from(shown.parameter_integer("worker_count")?)? == workers,
        "Heat's stack has the workers the controllers asked for: {:?}",
        shown.status
    );
    // The stand-in's nodes do not grow, so the workload still fits nowhere: the next
    // request would pass the limit, and the controllers say so instead of asking.
    // (After the growth, the member settles for six passes, at least 20 s, waiting for
    // new nodes that the stand-in never shows.)
    let refused = eventually_within(Duration::from_secs(150), "the limit holds", || async {
        let (_, status) = broker.call("GET", "/api/v1/controllers", None).await?;
        let unserved = status["capacity"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                c["state"] == "unserved"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("more than its limit of 8"))
            });
        Ok(unserved.cloned())
    })
    .await?;
    eprintln!("capacity on demand: grown to {workers} workers; then {refused}");
    let (_, record) = broker
        .call("GET", "/api/v1/clusters/openstack-dc1/provisioning", None)
        .await?;
    ensure!(
        record["workers"].as_u64() == Some(workers),
        "no growth past the limit: {record}"
    );
    let (_, audit) = broker.call("GET", "/api/v1/audit?limit=500", None).await?;
    ensure!(
        audit["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["action"] == "capacity.request"
                && e["target"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("openstack-dc1 5 -> "))),
        "{audit}"
    );
    Api::<Deployment>::namespaced(src, NAMESPACE)
        .delete("big", &Default::default())
        .await?;

    // The cluster's token is never in the broker's store or log.
    Setup::never_stored_or_logged(&broker, &identities[1].token)?;

    env.delete(&broker, "openstack-dc1").await?;
    // Heat can still find a just-deleted stack by name for a moment.
    let gone_by = std::time::Instant::now() + Duration::from_secs(15);
    while heat.find("ferry-dc1").await?.is_some() {
        ensure!(
            std::time::Instant::now() < gone_by,
            "the stack is still there"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

async fn until_resized(broker: &Broker, cluster: &str, workers: u32) -> Result<Value> {
    eventually(&format!("{cluster} resized to {workers}"), || async {
        let (_, record) = broker
            .call(
                "GET",
                &format!("/api/v1/clusters/{cluster}/provisioning"),
                None,
            )
            .await?;
        Ok((record["phase"] == "ready" && record["workers"] == workers).then_some(record))
    })
    .await
}

/// Magnum cannot run here: a mock built from its API reference stands in
/// (`adapters/openstack/tests/support/magnum_mock.rs`), with the real Keystone checking
/// the tokens. Its clusters stand for the second real apiserver: their `api_address` is
/// that apiserver's, and the client certificates it signs for Ferry's CSR are signed with
/// that cluster's CA, which the apiserver trusts (`--client-ca-file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_magnum_provision_then_migrate() -> Result<()> {
    let _turn = TURN.lock().await;
    let env = setup("openstack-magnum-e2e").await?;
    let target = &env.clusters[1];
    let keystone = env.openstack.credentials().auth_url.clone();
    let mock = MockMagnum::start(&keystone).await?;
    mock.stand_for(
        target.server(),
        &std::fs::read_to_string(target.ca_file())?,
        &std::fs::read_to_string(target.ca_key_file())?,
    );
    // The harness's catalog has no Magnum: the cloud's entry names the endpoint, as
    // clouds.yaml allows.
    let clouds_yaml = env.root.join("clouds.yaml");
    let mut text = std::fs::read_to_string(env.openstack.clouds_yaml())?;
    text.push_str(&format!(
        "    container_infra_endpoint_override: {}\n",
        mock.endpoint()
    ));
    std::fs::write(&clouds_yaml, text)?;
    let magnum = Magnum::new(Arc::new(Keystone::new(CloudConfig::from_clouds_yaml(
        CLOUD,
        Some(&clouds_yaml),
    )?)?))?;
    magnum
        .ensure_cluster_template(&NewClusterTemplate::kubernetes(
            "k8s-ferry",
            "fedora-coreos-40",
            "public",
        ))
        .await?;
    let broker = env.broker(&clouds_yaml)?;

    let file = env.root.join("openstack-dc2.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: ferry.dev/v1alpha1
kind: Cluster
metadata:
  name: openstack-dc2
  labels: {{provider: openstack}}
spec:
  provider: openstack
  openstack:
    cloud: {CLOUD}
    magnum: {{clusterTemplate: k8s-ferry, nodeCount: 3}}
  workloads: {{namespaces: [{NAMESPACE}]}}
  pricing: {{currency: USD, cpuCoreHour: 0.01, memoryGiBHour: 0.001, egressGiB: 0.01}}
"
        ),
    )?;
    // A template Magnum does not have: the create fails with Magnum's word for it.
    let missing = env.root.join("missing-template.yaml");
    std::fs::write(
        &missing,
        std::fs::read_to_string(&file)?
            .replace("k8s-ferry", "no-such-template")
            .replace("openstack-dc2", "openstack-dc3"),
    )?;
    let (status, answer) = broker
        .post_text("/api/v1/clusters", &std::fs::read_to_string(&missing)?)
        .await?;
    ensure!(status == 202, "{status} {answer}");
    let failed = until_phase(&broker, "openstack-dc3", "failed").await?;
    ensure!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no-such-template")),
        "the reason names the template: {failed}"
    );

    let file_arg = file.display().to_string();
    let progress = env.cli(&broker, &["create", "--wait", "-f", &file_arg])?;
    ensure!(
        progress.contains("CREATE_IN_PROGRESS"),
        "progress was shown: {progress}"
    );
    let record = until_phase(&broker, "openstack-dc2", "ready").await?;
    ensure!(record["provisioner"] == "magnum", "{record}");
    let uuid = record["handle"].as_str().context("a uuid")?.to_owned();
    ensure!(
        mock.signed() == ["CN=admin,O=system:masters"],
        "one CSR signed: {:?}",
        mock.signed()
    );
    ensure!(
        mock.requests()
            .iter()
            .all(|r| r.version.as_deref() == Some("container-infra 1.7")),
        "every request pinned the microversion: {:?}",
        mock.seen()
    );

    env.migrate_onto(&broker, "openstack-dc2").await?;

    // Resize 3 → 5 through the CLI; Magnum's cluster says 5 afterwards.
    env.cli(
        &broker,
        &["resize", "openstack-dc2", "--workers", "5", "--wait"],
    )?;
    let record = until_resized(&broker, "openstack-dc2", 5).await?;
    ensure!(record["reason"].is_null(), "{record}");
    ensure!(magnum.cluster(&uuid).await?.node_count == 5);

    // The client key Magnum's certificate goes with is never stored or logged.
    for marker in ["PRIVATE KEY", "BEGIN CERTIFICATE"] {
        Setup::never_stored_or_logged(&broker, marker)?;
    }

    env.delete(&broker, "openstack-dc2").await?;
    ensure!(
        matches!(
            magnum.cluster(&uuid).await,
            Err(ferry_adapter_openstack::Error::NotFound(_))
        ),
        "the Magnum cluster is gone"
    );
    Ok(())
}
