//! The Magnum client against a mock Magnum built from Magnum's api-ref (`ferry_testenv::magnum`), with
//! tokens from the real Keystone 22 of ferry-testenv: a cluster template found or made by
//! name, a cluster created (or adopted by name), followed with progress to
//! `CREATE_COMPLETE` and its credentials signed by its CA; a failed create with Magnum's
//! reason; a resize from 3 to 5 nodes through the Provisioner port; a delete followed to
//! 404; lists followed page by page; Magnum's error envelopes; a revoked token renewed
//! once; the endpoint from an override or an explicit URL; the microversion pin.
//!
//! One Keystone (with Heat, which these tests do not use: the harness starts both) serves
//! the tests of this file: the first test to need it starts it on a thread of its own, and
//! the last one to finish stops it ([`Lease`], as in `tests/heat.rs`). Each test has a mock
//! Magnum of its own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferry_adapter_openstack::magnum::{Cluster, SERVICE_TYPE};
use ferry_adapter_openstack::{
    Action, ApiError, CloudConfig, ClusterOutcome, ClusterProgress, Error, Follow, Keystone,
    Magnum, MagnumClusters, NewCluster, NewClusterTemplate, State,
};
use ferry_ports::{Operation, PortError, Provisioner};
use ferry_testenv::magnum::{MockMagnum, NEXT_HOST};
use ferry_testenv::{CLOUD, OpenStack};
use rcgen::PublicKeyData as _;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::AttributeTypeAndValue;

// ---------------------------------------------------------------------------------------
// The shared Keystone
// ---------------------------------------------------------------------------------------

struct Env {
    clouds_yaml: PathBuf,
    /// Keystone's v3 base, e.g. `http://127.0.0.1:40000/v3`.
    auth_url: String,
    dir: PathBuf,
}

type StopSender = std::sync::mpsc::Sender<std::sync::mpsc::Sender<()>>;

struct Shared {
    env: Option<Arc<Env>>,
    leases: usize,
    stop: Option<StopSender>,
}

static SHARED: Mutex<Shared> = Mutex::new(Shared {
    env: None,
    leases: 0,
    stop: None,
});

fn shared() -> std::sync::MutexGuard<'static, Shared> {
    SHARED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A test's hold on the services: the first lease starts them, the last one stops them
/// and waits until they are gone.
struct Lease;

impl Lease {
    fn take() -> Result<Lease> {
        let mut shared = shared();
        if shared.env.is_none() {
            let (env, stop) = start_services()?;
            shared.env = Some(Arc::new(env));
            shared.stop = Some(stop);
        }
        shared.leases += 1;
        Ok(Lease)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut shared = shared();
        shared.leases -= 1;
        if shared.leases == 0 {
            shared.env = None;
            if let Some(stop) = shared.stop.take() {
                let (done, stopped) = std::sync::mpsc::channel();
                if stop.send(done).is_ok() {
                    let _ = stopped.recv();
                }
            }
        }
    }
}

fn start_services() -> Result<(Env, StopSender)> {
    #[cfg(feature = "https")]
    ferry_adapter_openstack::install_crypto_provider();
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => {
                let _ = ready.send(Err(error.to_string()));
                return;
            }
        };
        // Not heat.rs's folder: the two test binaries may run at once.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openstack-magnum");
        let begun = Instant::now();
        let openstack = match runtime.block_on(OpenStack::start(Some(dir.clone()))) {
            Ok(openstack) => openstack,
            Err(error) => {
                let _ = ready.send(Err(error.to_string()));
                return;
            }
        };
        eprintln!("Keystone ready in {:.1} s", begun.elapsed().as_secs_f64());
        let env = Env {
            clouds_yaml: openstack.clouds_yaml().to_path_buf(),
            auth_url: openstack.credentials().auth_url.clone(),
            dir,
        };
        let (stop, stop_requests) = std::sync::mpsc::channel::<std::sync::mpsc::Sender<()>>();
        if ready.send(Ok((env, stop))).is_err() {
            return;
        }
        let done = stop_requests.recv();
        drop(openstack);
        if let Ok(done) = done {
            let _ = done.send(());
        }
    });
    match started.recv() {
        Ok(Ok(started)) => Ok(started),
        Ok(Err(error)) => bail!("Keystone did not start: {error}"),
        Err(_) => bail!("the OpenStack thread died while starting"),
    }
}

fn env() -> Arc<Env> {
    shared()
        .env
        .clone()
        .expect("a test holds a lease (with_logs takes one)")
}

/// Runs a test body once Keystone is up; on failure, prints Keystone's log and what the
/// mock saw.
async fn with_logs(name: &str, body: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    let lease = tokio::task::spawn_blocking(Lease::take).await??;
    let begun = Instant::now();
    let outcome = body.await;
    eprintln!("{name}: {:.1} s", begun.elapsed().as_secs_f64());
    if let Err(error) = &outcome {
        let log = ferry_testenv::tail(&env().dir.join("keystone/keystone.log"), 30);
        eprintln!("{error:#}\n--- keystone.log ---\n{log}");
    }
    tokio::task::spawn_blocking(move || drop(lease)).await?;
    outcome
}

fn harness_config() -> Result<CloudConfig> {
    Ok(CloudConfig::from_clouds_yaml(
        CLOUD,
        Some(&env().clouds_yaml),
    )?)
}

/// A mock Magnum, and a client of it signing in to the real Keystone.
struct Setup {
    mock: MockMagnum,
    keystone: Arc<Keystone>,
    magnum: Magnum,
}

async fn setup() -> Result<Setup> {
    let mock = MockMagnum::start(&env().auth_url).await?;
    let keystone = Arc::new(Keystone::new(harness_config()?)?);
    let magnum = Magnum::with_endpoint(keystone.clone(), mock.endpoint())?;
    Ok(Setup {
        mock,
        keystone,
        magnum,
    })
}

/// Polls quickly: the mock moves on by polls, not by time.
fn quick() -> Follow {
    Follow {
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(100),
        start_grace: Duration::from_secs(5),
        ..Follow::within(Duration::from_secs(30))
    }
}

fn template() -> NewClusterTemplate {
    let mut template = NewClusterTemplate::kubernetes("ferry-k8s", "fedora-coreos-40", "public");
    template.flavor_id = Some("m1.large".into());
    template.master_flavor_id = Some("m1.medium".into());
    template.network_driver = Some("calico".into());
    template
        .labels
        .insert("kube_tag".into(), "v1.30.1-rancher1".into());
    template
}

async fn template_uuid(magnum: &Magnum) -> Result<String> {
    Ok(magnum
        .ensure_cluster_template(&template())
        .await?
        .template
        .uuid)
}

/// Creates `name` and follows it to its end, with every progress report.
async fn create_and_follow(
    magnum: &Magnum,
    new: &NewCluster,
) -> Result<(String, ClusterOutcome, Vec<ClusterProgress>)> {
    let created = magnum.create(new).await?;
    ensure!(!created.adopted, "{created:?}");
    let mut progress = Vec::new();
    let outcome = magnum
        .follow(&created.uuid, Action::Create, &quick(), |p| {
            progress.push(p.clone())
        })
        .await?;
    Ok((created.uuid, outcome, progress))
}

fn complete(outcome: ClusterOutcome) -> Result<Cluster> {
    match outcome {
        ClusterOutcome::Complete(cluster) => Ok(cluster),
        other => bail!("not complete: {other:?}"),
    }
}

/// An error's Display shows Magnum's message and none of its JSON.
fn no_raw_body(error: &Error) -> Result<()> {
    let shown = error.to_string();
    for raw in ["{", "\"errors\"", "\"detail\"", "links"] {
        ensure!(!shown.contains(raw), "{raw} in {shown}");
    }
    Ok(())
}

fn first_pem(text: &str) -> Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("not PEM: {e}"))?;
    ensure!(pem.label == "CERTIFICATE", "{}", pem.label);
    Ok(pem.contents)
}

// ---------------------------------------------------------------------------------------
// Create, follow, credentials
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_from_a_template_is_followed_to_create_complete_and_gets_signed_credentials()
-> Result<()> {
    with_logs(
        "a_cluster_from_a_template_is_followed_to_create_complete_and_gets_signed_credentials",
        async {
            let Setup { mock, magnum, .. } = setup().await?;

            let made = magnum.ensure_cluster_template(&template()).await?;
            ensure!(!made.adopted, "{made:?}");
            ensure!(made.template.coe == "kubernetes" && !made.template.tls_disabled);
            ensure!(made.template.labels["kube_tag"] == "v1.30.1-rancher1");
            let again = magnum.ensure_cluster_template(&template()).await?;
            ensure!(
                again.adopted && again.template == made.template,
                "{again:?}"
            );
            ensure!(
                mock.seen()
                    .iter()
                    .filter(|r| r.starts_with("POST /v1/clustertemplates"))
                    .count()
                    == 1,
                "one template: {:?}",
                mock.seen()
            );

            let new = NewCluster::new("dc1", &made.template.uuid, 3);
            let (uuid, outcome, progress) = create_and_follow(&magnum, &new).await?;
            let cluster = complete(outcome)?;
            ensure!(cluster.uuid == uuid && cluster.name == "dc1");
            ensure!(cluster.status.to_string() == "CREATE_COMPLETE");
            ensure!(cluster.status_reason == "Stack CREATE completed successfully");
            ensure!((cluster.master_count, cluster.node_count) == (1, 3));
            ensure!(cluster.node_addresses.len() == 3, "{cluster:?}");
            ensure!(cluster.stack_id.is_none(), "the mock has no Heat stack");
            let api_address = cluster.api_address.clone().context("an API address")?;
            ensure!(
                progress.iter().any(|p| p.status.state == State::InProgress),
                "progress on the way: {progress:?}"
            );
            eprintln!("progress: {progress:?}");
            ensure!(magnum.operation(&uuid).await? == Operation::Done { id: uuid.clone() });

            let access = magnum.credentials(&uuid).await?;
            ensure!(access.api_url == api_address, "{}", access.api_url);
            let shown = format!("{access:?}");
            ensure!(
                !shown.contains(access.client_key_pem.expose()) && shown.contains("<redacted>"),
                "the key stays out of Debug"
            );
            ensure!(
                mock.signed() == ["CN=admin,O=system:masters"],
                "the mock checked the CSR's subject before signing: {:?}",
                mock.signed()
            );

            // The certificate is the CA's, for admin in system:masters, and for our key.
            let ca_der = first_pem(&access.ca_pem)?;
            let cert_der = first_pem(&access.client_cert_pem)?;
            let (_, ca) = X509Certificate::from_der(&ca_der)?;
            let (_, cert) = X509Certificate::from_der(&cert_der)?;
            cert.verify_signature(Some(ca.public_key()))
                .map_err(|e| anyhow::anyhow!("not signed by the CA: {e}"))?;
            ensure!(
                cert.verify_signature(None).is_err(),
                "not self-signed: the check above means something"
            );
            ensure!(cert.issuer().to_string() == ca.subject().to_string());
            let texts = |attributes: Vec<&AttributeTypeAndValue<'_>>| -> Vec<String> {
                attributes
                    .into_iter()
                    .filter_map(|a| a.as_str().ok().map(str::to_owned))
                    .collect()
            };
            let common_names = texts(cert.subject().iter_common_name().collect());
            let organizations = texts(cert.subject().iter_organization().collect());
            ensure!(common_names == ["admin"], "{common_names:?}");
            ensure!(organizations == ["system:masters"], "{organizations:?}");
            let key = rcgen::KeyPair::from_pem(access.client_key_pem.expose())?;
            ensure!(
                cert.public_key().raw == key.subject_public_key_info().as_slice(),
                "the certificate is for the key returned"
            );

            let versions: Vec<Option<String>> =
                mock.requests().into_iter().map(|r| r.version).collect();
            ensure!(
                versions
                    .iter()
                    .all(|v| v.as_deref() == Some("container-infra 1.7")),
                "every request is pinned to 1.7: {versions:?}"
            );
            Ok(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_create_ends_in_create_failed_with_magnums_reason() -> Result<()> {
    with_logs(
        "a_failed_create_ends_in_create_failed_with_magnums_reason",
        async {
            // Bound, not `..`: the mock stops when dropped.
            let Setup {
                mock: _mock,
                magnum,
                ..
            } = setup().await?;
            let template = template_uuid(&magnum).await?;
            let reason = "Resource CREATE failed: OverQuotaClient: resources.kube_masters: \
                          Quota exceeded for cores: Requested 8, but already used 20 of 20 cores";
            let new = NewCluster::new("dc-broken", &template, 2).label("mock_fail", reason);
            let (uuid, outcome, progress) = create_and_follow(&magnum, &new).await?;
            let ClusterOutcome::Failed(cluster) = outcome else {
                bail!("not failed: {outcome:?}");
            };
            ensure!(cluster.status.to_string() == "CREATE_FAILED");
            ensure!(cluster.status_reason == reason, "{}", cluster.status_reason);
            ensure!(cluster.reason().contains("Quota exceeded for cores"));
            ensure!(!progress.is_empty(), "it was in progress first");
            match magnum.operation(&uuid).await? {
                Operation::Failed { id, reason } => {
                    ensure!(id == uuid);
                    ensure!(
                        reason.contains("CREATE_FAILED") && reason.contains("Quota exceeded"),
                        "{reason}"
                    );
                }
                other => bail!("not a failed operation: {other:?}"),
            }
            let error = magnum.credentials(&uuid).await.expect_err("no API address");
            ensure!(matches!(error, Error::Credentials { .. }), "{error:?}");
            ensure!(error.to_string().contains("no API address"), "{error}");
            Ok(())
        },
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Resize, delete, adoption
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_from_3_to_5_nodes_runs_through_the_provisioner_port() -> Result<()> {
    with_logs(
        "a_resize_from_3_to_5_nodes_runs_through_the_provisioner_port",
        async {
            let Setup { mock, magnum, .. } = setup().await?;
            let template = template_uuid(&magnum).await?;
            let (uuid, outcome, _) =
                create_and_follow(&magnum, &NewCluster::new("dc-grow", &template, 3)).await?;
            ensure!(complete(outcome)?.node_count == 3);

            let clusters = MagnumClusters::new(magnum.clone());
            let port: &dyn Provisioner = &clusters;
            match port.resize("onprem", 5).await {
                Err(PortError::Rejected { reason, .. }) => {
                    ensure!(reason.contains("no Magnum cluster"), "{reason}")
                }
                other => bail!("an unknown cluster is refused, not {other:?}"),
            }
            clusters.register("onprem", &uuid);
            let operation = port.resize("onprem", 5).await?;
            let Operation::Running { id, .. } = &operation else {
                bail!("not running: {operation:?}");
            };
            ensure!(*id == uuid, "the operation id is the cluster uuid");
            // Magnum still shows CREATE_COMPLETE with 3 nodes: that is not the resize done.
            match port.operation(&uuid).await? {
                Operation::Running { progress, .. } => {
                    ensure!(
                        progress.contains("resize to 5 nodes requested"),
                        "{progress}"
                    )
                }
                other => bail!("a resize not yet started reads as {other:?}"),
            }

            let mut progress = Vec::new();
            let outcome = magnum
                .follow_resize(&uuid, 5, &quick(), |p| progress.push(p.clone()))
                .await?;
            let cluster = complete(outcome)?;
            ensure!(cluster.status.to_string() == "UPDATE_COMPLETE");
            ensure!(cluster.node_count == 5 && cluster.node_addresses.len() == 5);
            ensure!(
                progress
                    .iter()
                    .any(|p| p.status.to_string() == "UPDATE_IN_PROGRESS"),
                "{progress:?}"
            );
            ensure!(port.operation(&uuid).await? == Operation::Done { id: uuid.clone() });
            let resizes: Vec<String> = mock
                .seen()
                .into_iter()
                .filter(|r| r.contains("/actions/resize"))
                .collect();
            ensure!(
                resizes == [format!("POST /v1/clusters/{uuid}/actions/resize -> 202")],
                "{resizes:?}"
            );
            Ok(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_cluster_is_followed_until_magnum_answers_404() -> Result<()> {
    with_logs(
        "a_deleted_cluster_is_followed_until_magnum_answers_404",
        async {
            // Bound, not `..`: the mock stops when dropped.
            let Setup {
                mock: _mock,
                magnum,
                ..
            } = setup().await?;
            let template = template_uuid(&magnum).await?;
            let mut uuids = Vec::new();
            for name in ["dc-gone", "dc-gone-port"] {
                let (uuid, outcome, _) =
                    create_and_follow(&magnum, &NewCluster::new(name, &template, 1)).await?;
                complete(outcome)?;
                uuids.push(uuid);
            }

            // The client itself: 204, DELETE_IN_PROGRESS, then 404.
            ensure!(magnum.delete(&uuids[0]).await?, "deleted");
            let mut progress = Vec::new();
            let outcome = magnum
                .follow(&uuids[0], Action::Delete, &quick(), |p| {
                    progress.push(p.clone())
                })
                .await?;
            ensure!(outcome == ClusterOutcome::Gone, "{outcome:?}");
            ensure!(
                progress
                    .iter()
                    .any(|p| p.status.to_string() == "DELETE_IN_PROGRESS"),
                "{progress:?}"
            );
            let error = magnum.cluster(&uuids[0]).await.expect_err("gone");
            ensure!(matches!(error, Error::NotFound(_)), "{error:?}");
            ensure!(
                !magnum.delete(&uuids[0]).await?,
                "deleting a deleted cluster is a 404, i.e. nothing to do"
            );

            // Through MagnumClusters: the operation is done once Magnum no longer knows it.
            let clusters = MagnumClusters::new(magnum.clone());
            clusters.register("onprem", &uuids[1]);
            let operation = clusters.delete("onprem").await?;
            ensure!(
                matches!(&operation, Operation::Running { id, .. } if *id == uuids[1]),
                "{operation:?}"
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match clusters.operation(&uuids[1]).await? {
                    Operation::Done { id } if id == uuids[1] => break,
                    Operation::Running { .. } => {}
                    other => bail!("{other:?}"),
                }
                ensure!(Instant::now() < deadline, "not done in 30 s");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_name_that_exists_adopts_that_cluster() -> Result<()> {
    with_logs("creating_a_name_that_exists_adopts_that_cluster", async {
        let Setup { mock, magnum, .. } = setup().await?;
        let template = template_uuid(&magnum).await?;
        let new = NewCluster::new("dc-again", &template, 2);
        let first = magnum.create(&new).await?;
        ensure!(!first.adopted);
        // Again, as after a crash before the uuid was journaled, while it is being created.
        let second = magnum.create(&new).await?;
        ensure!(second.adopted && second.uuid == first.uuid, "{second:?}");
        let posts = mock
            .seen()
            .into_iter()
            .filter(|r| r.starts_with("POST /v1/clusters "))
            .count();
        ensure!(posts == 1, "one create: {:?}", mock.seen());
        let outcome = magnum
            .follow(&second.uuid, Action::Create, &quick(), |_| {})
            .await?;
        complete(outcome)?;
        // And once it is complete.
        let third = magnum.create(&new).await?;
        ensure!(third.adopted && third.uuid == first.uuid, "{third:?}");

        // A cluster of that name being deleted is no cluster to adopt.
        ensure!(magnum.delete(&first.uuid).await?);
        let error = magnum
            .create(&new)
            .await
            .expect_err("the name is being deleted");
        ensure!(matches!(error, Error::InvalidInput { .. }), "{error:?}");
        ensure!(error.to_string().contains("DELETE_IN_PROGRESS"), "{error}");
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Lists, errors, tokens, endpoints, microversion
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_followed_page_by_page_through_next() -> Result<()> {
    with_logs("lists_are_followed_page_by_page_through_next", async {
        let Setup { mock, magnum, .. } = setup().await?;
        let template_id = template_uuid(&magnum).await?;
        let mut uuids = Vec::new();
        for i in 0..7 {
            let created = magnum
                .create(&NewCluster::new(&format!("dc-{i}"), &template_id, 1))
                .await?;
            uuids.push(created.uuid);
        }
        let paged = magnum.clone().with_page_size(3);
        let before = mock.requests().len();
        let listed = paged.clusters().await?;
        let listed_uuids: Vec<&str> = listed.iter().map(|c| c.uuid.as_str()).collect();
        ensure!(listed_uuids == uuids, "all 7, in order: {listed_uuids:?}");
        ensure!(listed.iter().all(|c| c.status.state == State::InProgress));
        let pages: Vec<String> = mock.seen()[before..].to_vec();
        ensure!(
            pages
                == [
                    "GET /v1/clusters?limit=3 -> 200".to_owned(),
                    format!("GET /v1/clusters?limit=3&marker={} -> 200", uuids[2]),
                    format!("GET /v1/clusters?limit=3&marker={} -> 200", uuids[5]),
                ],
            "three pages, on the mock and not on {NEXT_HOST}: {pages:?}"
        );

        // Six fill two pages exactly; Magnum's `next` then leads to an empty third.
        ensure!(magnum.delete(&uuids[6]).await?);
        let outcome = magnum
            .follow(&uuids[6], Action::Delete, &quick(), |_| {})
            .await?;
        ensure!(outcome == ClusterOutcome::Gone);
        ensure!(paged.clusters().await?.len() == 6);

        // Templates page the same way; the one named is found on the second page.
        let mut other = template();
        other.name = "ferry-other".into();
        let made = paged.ensure_cluster_template(&other).await?;
        ensure!(!made.adopted);
        let small = magnum.clone().with_page_size(1);
        let found = small.ensure_cluster_template(&other).await?;
        ensure!(found.adopted && found.template.uuid == made.template.uuid);
        ensure!(small.cluster_templates().await?.len() == 2);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magnums_error_envelopes_reach_the_caller_as_their_message() -> Result<()> {
    with_logs(
        "magnums_error_envelopes_reach_the_caller_as_their_message",
        async {
            let Setup { mock, magnum, .. } = setup().await?;
            let template = template_uuid(&magnum).await?;

            let error = magnum.cluster("ferry-none").await.expect_err("no such cluster");
            let Error::NotFound(api) = &error else {
                bail!("not a 404: {error:?}");
            };
            ensure!(api.message == "Cluster ferry-none could not be found.", "{api:?}");
            ensure!(api.service == SERVICE_TYPE);
            ensure!(
                api.request_id.as_deref().is_some_and(|id| id.starts_with("req-")),
                "{api:?}"
            );
            no_raw_body(&error)?;
            ensure!(matches!(
                error.to_port_error("onprem"),
                PortError::NotFound { .. }
            ));
            ensure!(magnum.find("ferry-none").await?.is_none());

            // Magnum keeps names no more unique than this: a lookup by a shared name is 409.
            for _ in 0..2 {
                mock.insert_cluster("twin", &template, "CREATE_COMPLETE")?;
            }
            let error = magnum
                .create(&NewCluster::new("twin", &template, 1))
                .await
                .expect_err("two clusters have that name");
            let Error::Conflict(api) = &error else {
                bail!("not a 409: {error:?}");
            };
            ensure!(
                api.message
                    == "Multiple clusters exist with same name. Please use the cluster uuid instead.",
                "{api:?}"
            );
            no_raw_body(&error)?;
            ensure!(matches!(
                error.to_port_error("onprem"),
                PortError::Conflict { .. }
            ));

            let (uuid, outcome, _) =
                create_and_follow(&magnum, &NewCluster::new("dc-small", &template, 1)).await?;
            complete(outcome)?;
            let error = magnum.resize(&uuid, 0).await.expect_err("no zero workers");
            let Error::BadRequest(api) = &error else {
                bail!("not a 400: {error:?}");
            };
            ensure!(
                api.message.contains("node_count")
                    && api.message.contains("Value should be greater or equal to 1"),
                "{api:?}"
            );
            no_raw_body(&error)?;
            ensure!(!error.is_transient());

            let error = magnum
                .create(&NewCluster::new(
                    "dc-orphan",
                    "00000000-0000-4000-a000-000000000000",
                    1,
                ))
                .await
                .expect_err("no such template");
            ensure!(
                matches!(&error, Error::BadRequest(api)
                    if api.message == "ClusterTemplate 00000000-0000-4000-a000-000000000000 could not be found."),
                "{error:?}"
            );

            let error = magnum
                .create(&NewCluster::new("9-lives", &template, 1))
                .await
                .expect_err("Magnum would refuse the name");
            ensure!(matches!(error, Error::InvalidInput { .. }), "{error:?}");
            Ok(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_renewed_once_and_the_call_retried() -> Result<()> {
    with_logs(
        "a_revoked_token_is_renewed_once_and_the_call_retried",
        async {
            let Setup {
                mock,
                keystone,
                magnum,
            } = setup().await?;
            // Revoked before the mock ever saw it (it caches what it validated).
            let first = keystone.token().await?;
            let revoked = reqwest::Client::new()
                .delete(format!("{}/auth/tokens", env().auth_url))
                .header("X-Auth-Token", first.value().expose())
                .header("X-Subject-Token", first.value().expose())
                .send()
                .await?;
            ensure!(revoked.status().as_u16() == 204, "{}", revoked.status());

            ensure!(magnum.clusters().await?.is_empty());
            let list = "GET /v1/clusters?limit=100";
            ensure!(
                mock.seen() == [format!("{list} -> 401"), format!("{list} -> 200")],
                "refused once, then retried once: {:?}",
                mock.seen()
            );
            ensure!(keystone.token().await?.value() != first.value(), "renewed");
            Ok(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn magnum_is_found_through_the_catalog_an_override_or_an_explicit_url() -> Result<()> {
    with_logs(
        "magnum_is_found_through_the_catalog_an_override_or_an_explicit_url",
        async {
            let mock = MockMagnum::start(&env().auth_url).await?;

            // The harness's catalog has no Magnum.
            let keystone = Arc::new(Keystone::new(harness_config()?)?);
            let error = Magnum::new(keystone.clone())?
                .clusters()
                .await
                .expect_err("no container-infra in the catalog");
            ensure!(
                matches!(&error, Error::NoService { service_type, .. } if service_type == SERVICE_TYPE),
                "{error:?}"
            );

            // clouds.yaml's container_infra_endpoint_override.
            let mut config = harness_config()?;
            config
                .endpoint_overrides
                .insert(SERVICE_TYPE.into(), mock.endpoint().to_owned());
            let overridden = Magnum::new(Arc::new(Keystone::new(config)?))?;
            ensure!(overridden.clusters().await?.is_empty());

            let explicit = Magnum::with_endpoint(keystone, &format!("{}/", mock.endpoint()))?;
            ensure!(explicit.clusters().await?.is_empty());
            ensure!(
                mock.seen() == ["GET /v1/clusters?limit=100 -> 200"; 2],
                "{:?}",
                mock.seen()
            );

            // Without the `https` feature, an HTTPS Magnum is refused when the client is made.
            #[cfg(not(feature = "https"))]
            {
                let keystone = Arc::new(Keystone::new(harness_config()?)?);
                let error = Magnum::with_endpoint(keystone, "https://magnum.example:9511/v1")
                    .expect_err("no TLS in this build");
                ensure!(matches!(error, Error::Config { .. }), "{error:?}");
            }
            Ok(())
        },
    )
    .await
}

/// The mock holds clients to a microversion, so that "every request was 1.7" above means
/// something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_refuses_requests_without_the_pinned_microversion() -> Result<()> {
    with_logs(
        "the_mock_refuses_requests_without_the_pinned_microversion",
        async {
            let Setup {
                mock,
                keystone,
                magnum,
            } = setup().await?;
            let template = template_uuid(&magnum).await?;
            let (uuid, outcome, _) =
                create_and_follow(&magnum, &NewCluster::new("dc-pin", &template, 1)).await?;
            complete(outcome)?;
            let token = keystone.token().await?;
            let http = reqwest::Client::new();
            let resize = format!("{}/clusters/{uuid}/actions/resize", mock.endpoint());
            let cases = [
                (None, "OpenStack-API-Version is required by this mock"),
                (Some("compute 2.1"), "Invalid service type"),
                (
                    Some("container-infra 1.99"),
                    "the minor version is not supported",
                ),
                (
                    Some("container-infra 1.6"),
                    "the requested API resize is not supported for this version",
                ),
            ];
            for (version, words) in cases {
                let mut request = http
                    .post(&resize)
                    .header("X-Auth-Token", token.value().expose())
                    .json(&serde_json::json!({"node_count": 2}));
                if let Some(version) = version {
                    request = request.header("OpenStack-API-Version", version);
                }
                let response = request.send().await?;
                let status = response.status().as_u16();
                let body = response.bytes().await?;
                ensure!(status == 406, "{version:?}: {status}");
                let api = ApiError::parse(
                    SERVICE_TYPE,
                    "POST /clusters/{id}/actions/resize",
                    status,
                    None,
                    Some("application/json"),
                    &body,
                );
                ensure!(api.message.contains(words), "{version:?}: {api:?}");
            }
            let response = http
                .get(format!("{}/clusters", mock.endpoint()))
                .header("OpenStack-API-Version", "container-infra 1.7")
                .send()
                .await?;
            ensure!(
                response.status().as_u16() == 401,
                "no token: {}",
                response.status()
            );
            Ok(())
        },
    )
    .await
}
