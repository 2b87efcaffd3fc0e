//! Clusters Ferry provisions itself: `POST /api/v1/clusters` with a Cluster document of
//! `provider: openstack` and a `heat` block creates the cluster's Heat stack from Ferry's
//! template, follows it with progress on the event stream, reads the access the control
//! plane signalled from the stack's outputs, and registers the cluster as a member;
//! `resize` changes its worker count, `delete` takes it out of the federation and deletes
//! the stack.
//!
//! The record of each ([`Provisioned`], in the store under [`PREFIX`]) is the journal: it
//! is written before the stack is created and again with the stack's id as soon as Heat
//! accepts it, so that a restarted broker follows the stack it left instead of creating
//! one more (a create repeated without the id adopts the stack of that name). The record
//! never holds the cluster's token: the broker reads it from the stack each time it
//! connects.
//!
//! One action runs per cluster at a time; asking for another meanwhile is a 409. A failed
//! action leaves the record (phase `failed`, with Heat's reason naming the failed
//! resource) for the operator to read, and a delete cleans up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_adapter_kubernetes::{BearerToken, Credentials, KubeCluster, TargetOverrides};
use ferry_adapter_openstack::{
    Action, CloudConfig, ClusterAccess, ClusterRequest, Environment, Follow, Heat, HeatClusters,
    Keystone, Outcome, Secret, StackId, check_worker_count,
};
use ferry_policies::model::{Cluster, Connection, OpenstackConnection, OpenstackProvisioner};
use ferry_policies::resources::ResourceSet;
use ferry_ports::{Backoff, ClusterPort, PortError, Provisioner, Retrying};
use ferry_store::Versioned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{ApiError, AppState};
use super::clock;
use super::world::Member;

pub const PREFIX: &str = "provisioned/";

/// Where a provisioned cluster stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    Creating,
    Ready,
    Resizing,
    Deleting,
    Failed,
}

/// A provisioned cluster's journal record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provisioned {
    pub cluster: String,
    /// The Cluster document as the client sent it (validated); no secrets in it.
    pub document: String,
    /// `name/id` of the Heat stack once Heat accepted the create.
    pub stack: Option<String>,
    pub phase: Phase,
    /// The worker count asked for last.
    pub workers: u32,
    /// What the stack is doing, e.g. `CREATE_IN_PROGRESS: 9 of 14 resources complete`.
    pub progress: Option<String>,
    /// Why the last action failed.
    pub reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl Versioned for Provisioned {
    const KIND: &'static str = "provisioned-cluster";
    const SCHEMA: u32 = 1;
}

impl Provisioned {
    /// What the API shows: everything but the document.
    pub fn view(&self) -> Value {
        json!({
            "cluster": self.cluster,
            "provider": "openstack",
            "provisioner": "heat",
            "stack": self.stack,
            "phase": self.phase,
            "workers": self.workers,
            "progress": self.progress,
            "reason": self.reason,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        })
    }
}

/// The `[provisioning]` settings of `ferry serve`.
#[derive(Clone, Debug)]
pub struct ProvisioningConfig {
    /// Relative paths of Cluster files (a `heat.environment`) are read from here.
    pub base: PathBuf,
    /// The clouds.yaml to read; `None` searches where the `openstack` client does.
    pub clouds_yaml: Option<PathBuf>,
    /// How long a stack action may take, and how often it is looked at.
    pub follow: Follow,
}

impl ProvisioningConfig {
    /// A real cloud's stacks take many minutes: poll every 5 s to 30 s, for an hour.
    pub fn new(base: PathBuf) -> ProvisioningConfig {
        ProvisioningConfig {
            base,
            clouds_yaml: None,
            follow: Follow {
                first_delay: Duration::from_secs(5),
                max_delay: Duration::from_secs(30),
                ..Follow::within(Duration::from_secs(3600))
            },
        }
    }
}

/// A cloud of clouds.yaml and a region of it.
type CloudKey = (String, Option<String>);

/// The provisioner side of the broker: one Heat client per cloud and region, and the
/// clusters with an action running.
pub struct Provisioning {
    config: ProvisioningConfig,
    clouds: tokio::sync::Mutex<BTreeMap<CloudKey, Arc<HeatClusters>>>,
    busy: Mutex<BTreeSet<String>>,
}

/// A token that does not change: the ServiceAccount token the control plane made for
/// Ferry lives as long as its Secret.
struct FixedToken(Secret);

impl BearerToken for FixedToken {
    fn current(&self) -> Result<String, String> {
        Ok(self.0.expose().to_owned())
    }
}

/// Clears a cluster's busy mark when its action ends, however it ends.
struct BusyGuard {
    state: Arc<AppState>,
    cluster: String,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut busy = self
            .state
            .provisioning
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        busy.remove(&self.cluster);
    }
}

impl Provisioning {
    pub fn new(config: ProvisioningConfig) -> Provisioning {
        Provisioning {
            config,
            clouds: tokio::sync::Mutex::new(BTreeMap::new()),
            busy: Mutex::new(BTreeSet::new()),
        }
    }

    /// The Heat clusters of `connection`'s cloud and region, signing in once per cloud.
    pub async fn clusters_of(
        &self,
        connection: &OpenstackConnection,
    ) -> Result<Arc<HeatClusters>, String> {
        let key = (connection.cloud.clone(), connection.region.clone());
        let mut clouds = self.clouds.lock().await;
        if let Some(clusters) = clouds.get(&key) {
            return Ok(Arc::clone(clusters));
        }
        let cloud = self.cloud_config(connection)?;
        let keystone = Keystone::new(cloud).map_err(|e| e.to_string())?;
        let clusters = Arc::new(HeatClusters::new(Heat::new(Arc::new(keystone))));
        clouds.insert(key, Arc::clone(&clusters));
        Ok(clusters)
    }

    /// The settings of the connection's cloud from the clouds.yaml; why not, if they
    /// cannot be read (no such cloud, no file, an incomplete entry).
    fn cloud_config(&self, connection: &OpenstackConnection) -> Result<CloudConfig, String> {
        let mut cloud =
            CloudConfig::from_clouds_yaml(&connection.cloud, self.config.clouds_yaml.as_deref())
                .map_err(|e| e.to_string())?;
        if connection.region.is_some() {
            cloud.region.clone_from(&connection.region);
        }
        Ok(cloud)
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.config.base.join(path)
        }
    }

    /// Marks `cluster` busy, or says which action holds it.
    fn claim(state: &Arc<AppState>, cluster: &str) -> Result<BusyGuard, ApiError> {
        let mut busy = state
            .provisioning
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !busy.insert(cluster.to_owned()) {
            return Err(ApiError::Conflict(format!(
                "cluster {cluster} has a provisioning action running; wait for it to end"
            )));
        }
        Ok(BusyGuard {
            state: Arc::clone(state),
            cluster: cluster.to_owned(),
        })
    }
}

/// The Heat block of a Cluster, or why the cluster cannot be provisioned.
struct HeatSpec<'a> {
    connection: &'a OpenstackConnection,
    stack: &'a str,
    parameters: &'a BTreeMap<String, String>,
    environment: Option<&'a str>,
}

fn heat_spec(cluster: &Cluster) -> Result<HeatSpec<'_>, String> {
    let Connection::Openstack(connection) = &cluster.connection else {
        return Err(format!(
            "cluster {} has provider {}; Ferry provisions clusters of provider openstack",
            cluster.name,
            cluster.provider.as_str()
        ));
    };
    match &connection.provisioner {
        OpenstackProvisioner::Heat {
            stack,
            parameters,
            environment,
        } => Ok(HeatSpec {
            connection,
            stack,
            parameters,
            environment: environment.as_deref(),
        }),
        OpenstackProvisioner::Magnum { .. } => Err(format!(
            "cluster {}: provisioning through Magnum is not served by the broker yet; use a `heat` block",
            cluster.name
        )),
        OpenstackProvisioner::None => Err(format!(
            "cluster {} has no `heat` block in spec.openstack: nothing to provision",
            cluster.name
        )),
    }
}

/// Parses exactly one Cluster document; every problem is a 400 naming line and field.
fn parse(text: &str) -> Result<Cluster, ApiError> {
    let mut set = ResourceSet::default();
    let diagnostics = set.add_source("request", text);
    if !diagnostics.is_empty() {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        return Err(ApiError::BadRequest("invalid_cluster", lines.join("\n")));
    }
    if set.clusters.len() != 1 || !set.workloads.is_empty() || !set.policies.is_empty() {
        return Err(ApiError::BadRequest(
            "invalid_cluster",
            "the body must be exactly one Cluster document".to_owned(),
        ));
    }
    Ok(set.clusters.remove(0).value)
}

fn key(cluster: &str) -> String {
    format!("{PREFIX}{cluster}")
}

fn save(state: &AppState, record: &mut Provisioned) {
    record.updated_at = clock::now();
    if let Err(error) = state.store.put(&key(&record.cluster), record) {
        tracing::error!(cluster = %record.cluster, %error, "cannot journal the provisioned cluster");
    }
    state
        .events
        .publish("cluster.provisioning", None, record.view());
}

fn fail(state: &AppState, record: &mut Provisioned, reason: String) {
    tracing::warn!(cluster = %record.cluster, %reason, "provisioning action failed");
    record.phase = Phase::Failed;
    record.reason = Some(reason);
    save(state, record);
}

/// Every record, for `GET /api/v1/provisioning`.
pub fn list(state: &AppState) -> Result<Vec<Value>, ApiError> {
    Ok(state
        .store
        .list::<Provisioned>(PREFIX)?
        .into_iter()
        .map(|(_, record)| record.view())
        .collect())
}

pub fn get(state: &AppState, cluster: &str) -> Result<Provisioned, ApiError> {
    state
        .store
        .get::<Provisioned>(&key(cluster))?
        .ok_or_else(|| ApiError::NotFound(format!("Ferry provisioned no cluster {cluster}")))
}

/// Checks the document and starts the create; the answer is the record (phase
/// `creating`). A cluster of that name in the federation is a 409; a failed one is
/// created again (Heat adopts the stack of that name).
pub fn create(state: &Arc<AppState>, text: &str) -> Result<Value, ApiError> {
    let cluster = parse(text)?;
    let spec = heat_spec(&cluster).map_err(|m| ApiError::BadRequest("not_provisionable", m))?;
    let environment = spec
        .environment
        .map(|path| Environment::read(&state.provisioning.resolve(path)))
        .transpose()
        .map_err(|e| ApiError::BadRequest("invalid_cluster", e.to_string()))?;
    let request = ClusterRequest::new(spec.stack, spec.parameters, environment)
        .map_err(|e| ApiError::BadRequest("invalid_cluster", e.to_string()))?;
    // A cloud the broker has no settings for is said now, not after a 202.
    state
        .provisioning
        .cloud_config(spec.connection)
        .map_err(|m| ApiError::BadRequest("unknown_cloud", m))?;
    let existing = state.store.get::<Provisioned>(&key(&cluster.name))?;
    // A failed create may be asked again (Heat adopts the stack of that name); anything
    // else of that name is taken.
    let taken = match &existing {
        Some(record) => record.phase != Phase::Failed,
        None => state.world.member(&cluster.name).is_some(),
    };
    if taken {
        return Err(ApiError::Conflict(format!(
            "cluster {} already exists in the federation",
            cluster.name
        )));
    }
    let guard = Provisioning::claim(state, &cluster.name)?;
    let now = clock::now();
    let mut record = Provisioned {
        cluster: cluster.name.clone(),
        document: text.to_owned(),
        stack: existing.and_then(|r| r.stack),
        phase: Phase::Creating,
        workers: request.workers(),
        progress: None,
        reason: None,
        created_at: now.clone(),
        updated_at: now,
    };
    save(state, &mut record);
    let view = record.view();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _guard = guard;
        run_create(&state, &cluster, request, record).await;
    });
    Ok(view)
}

async fn run_create(
    state: &Arc<AppState>,
    cluster: &Cluster,
    request: ClusterRequest,
    mut record: Provisioned,
) {
    let Ok(spec) = heat_spec(cluster) else {
        return;
    };
    let clusters = match state.provisioning.clusters_of(spec.connection).await {
        Ok(clusters) => clusters,
        Err(reason) => return fail(state, &mut record, reason),
    };
    let stack = match record.stack.as_deref().and_then(StackId::parse) {
        // A restart after Heat accepted the create: follow that stack.
        Some(stack) => {
            clusters.register(&cluster.name, stack.clone());
            stack
        }
        None => match clusters.create(&cluster.name, &request).await {
            Ok(created) => {
                record.stack = Some(created.stack.to_string());
                record.progress = Some(if created.adopted {
                    "adopted the existing stack of that name".to_owned()
                } else {
                    "create accepted".to_owned()
                });
                save(state, &mut record);
                created.stack
            }
            Err(error) => return fail(state, &mut record, format!("create: {error}")),
        },
    };
    match follow(state, &clusters, &stack, Action::Create, &mut record).await {
        Ok(()) => connect_and_register(state, cluster, &clusters, &mut record).await,
        Err(reason) => fail(state, &mut record, reason),
    }
}

/// Follows a stack action, journaling its progress; the reason when it did not complete.
async fn follow(
    state: &Arc<AppState>,
    clusters: &HeatClusters,
    stack: &StackId,
    action: Action,
    record: &mut Provisioned,
) -> Result<(), String> {
    let follow = state.provisioning.config.follow.clone();
    let outcome = {
        let mut on_progress = |progress: &ferry_adapter_openstack::Progress| {
            record.progress = Some(progress.to_string());
            save(state, record);
        };
        clusters
            .heat()
            .follow(stack, action, &follow, &mut on_progress)
            .await
    };
    match outcome {
        Ok(Outcome::Complete(stack)) => {
            record.progress = Some(stack.status.to_string());
            Ok(())
        }
        Ok(Outcome::Gone) => Ok(()),
        Ok(Outcome::Failed(failure)) => Err(failure.reason()),
        Err(error) => Err(format!("following the stack: {error}")),
    }
}

/// Reads the access from the stack's outputs, connects, and adds the member.
async fn connect_and_register(
    state: &Arc<AppState>,
    cluster: &Cluster,
    clusters: &HeatClusters,
    record: &mut Provisioned,
) {
    match connect(cluster, clusters).await {
        Ok(port) => {
            state.world.add_provisioned(Arc::new(Member {
                definition: cluster.clone(),
                port,
            }));
            record.phase = Phase::Ready;
            record.reason = None;
            save(state, record);
            tracing::info!(cluster = %cluster.name, "provisioned cluster joined the federation");
        }
        Err(reason) => fail(state, record, reason),
    }
}

/// A member port for a cluster whose stack Ferry knows: its API address, CA and token
/// from the outputs, with the Cluster file's scope and overrides.
pub async fn connect(
    cluster: &Cluster,
    clusters: &HeatClusters,
) -> Result<Arc<dyn ClusterPort>, String> {
    let access: ClusterAccess = clusters
        .access(&cluster.name)
        .await
        .map_err(|e| format!("reading the cluster's access from its stack: {e}"))?;
    let credentials = Credentials::Endpoint {
        server: access.api_url.clone(),
        ca_base64: access.ca_base64.clone(),
        token: Arc::new(FixedToken(access.token.clone())),
    };
    let kube = KubeCluster::connect(
        &cluster.name,
        &credentials,
        cluster.scope.namespaces.clone(),
    )
    .await
    .map_err(|e| format!("connecting to {}: {e}", access.api_url))?;
    let overrides = &cluster.overrides;
    let mut kube = kube.with_overrides(TargetOverrides {
        image_registries: overrides.image_registries.clone(),
        storage_classes: overrides.storage_classes.clone(),
        labels: overrides.labels.clone(),
        annotations: overrides.annotations.clone(),
    });
    if let Some((key, value)) = &cluster.scope.namespace_label {
        kube = kube.with_namespace_label(key.clone(), value.clone());
    }
    Ok(Arc::new(Retrying::new(Arc::new(kube), Backoff::default())))
}

/// Changes the worker count: Heat's answer to the update comes back at once (a refusal
/// is a 400), the update is followed in the background.
pub async fn resize(state: &Arc<AppState>, name: &str, workers: u32) -> Result<Value, ApiError> {
    let mut record = get(state, name)?;
    check_worker_count(workers).map_err(|m| ApiError::BadRequest("invalid_resize", m))?;
    let guard = Provisioning::claim(state, name)?;
    if !matches!(record.phase, Phase::Ready | Phase::Failed) || record.stack.is_none() {
        return Err(ApiError::Conflict(format!(
            "cluster {name} is {:?}; it can be resized once it is ready",
            record.phase
        )));
    }
    let cluster = parse(&record.document)?;
    let spec = heat_spec(&cluster).map_err(ApiError::Internal)?;
    let clusters = state
        .provisioning
        .clusters_of(spec.connection)
        .await
        .map_err(|m| ApiError::Upstream(format!("the cloud of cluster {name}: {m}")))?;
    let stack = record
        .stack
        .as_deref()
        .and_then(StackId::parse)
        .ok_or_else(|| ApiError::Internal(format!("the journal of {name} has no stack id")))?;
    clusters.register(name, stack.clone());
    clusters.resize(name, workers).await.map_err(|e| match e {
        PortError::Rejected { reason, .. } => ApiError::BadRequest("invalid_resize", reason),
        other => ApiError::Conflict(other.to_string()),
    })?;
    record.phase = Phase::Resizing;
    record.workers = workers;
    record.reason = None;
    record.progress = Some(format!("worker_count → {workers} requested"));
    save(state, &mut record);
    let view = record.view();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _guard = guard;
        finish_resize(&state, &clusters, &stack, &mut record).await;
    });
    Ok(view)
}

/// Takes the cluster out of the federation and deletes its stack. Workloads still
/// serving there are named and the delete refused, unless `force`.
pub async fn delete(state: &Arc<AppState>, name: &str, force: bool) -> Result<Value, ApiError> {
    let mut record = get(state, name)?;
    let guard = Provisioning::claim(state, name)?;
    if !force {
        let census = state.world.census().await;
        let serving: Vec<String> = match census.inventories.get(name) {
            Some(Ok(inventory)) => inventory
                .workloads
                .iter()
                .filter(|w| w.replicas > 0)
                .map(|w| w.key.to_string())
                .collect(),
            _ => Vec::new(),
        };
        if !serving.is_empty() {
            return Err(ApiError::Conflict(format!(
                "workloads still serve on cluster {name}: {}; migrate them first, or delete with force",
                serving.join(", ")
            )));
        }
    }
    let cluster = parse(&record.document)?;
    let spec = heat_spec(&cluster).map_err(ApiError::Internal)?;
    let clusters = state
        .provisioning
        .clusters_of(spec.connection)
        .await
        .map_err(|m| ApiError::Upstream(format!("the cloud of cluster {name}: {m}")))?;
    state.world.remove_provisioned(name);
    record.phase = Phase::Deleting;
    record.reason = None;
    record.progress = Some("delete requested".to_owned());
    save(state, &mut record);
    let view = record.view();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _guard = guard;
        run_delete(&state, &clusters, record).await;
    });
    Ok(view)
}

/// A resize that fails leaves the cluster serving with the workers it has: the record
/// goes back to ready, with the reason.
async fn finish_resize(
    state: &Arc<AppState>,
    clusters: &HeatClusters,
    stack: &StackId,
    record: &mut Provisioned,
) {
    if let Err(reason) = follow(state, clusters, stack, Action::Update, record).await {
        tracing::warn!(cluster = %record.cluster, %reason, "resize failed");
        record.reason = Some(format!(
            "resize to {} workers failed: {reason}",
            record.workers
        ));
    }
    record.phase = Phase::Ready;
    save(state, record);
}

async fn run_delete(state: &Arc<AppState>, clusters: &HeatClusters, mut record: Provisioned) {
    let name = record.cluster.clone();
    if let Some(stack) = record.stack.as_deref().and_then(StackId::parse) {
        clusters.register(&name, stack.clone());
        if let Err(error) = clusters.delete(&name).await {
            return fail(state, &mut record, format!("delete: {error}"));
        }
        if let Err(reason) = follow(state, clusters, &stack, Action::Delete, &mut record).await {
            return fail(state, &mut record, reason);
        }
    }
    clusters.forget(&name);
    if let Err(error) = state.store.delete(&key(&name)) {
        tracing::error!(cluster = %name, %error, "cannot remove the journal of a deleted cluster");
    }
    state.events.publish(
        "cluster.provisioning",
        None,
        json!({"cluster": name, "phase": "deleted"}),
    );
    tracing::info!(cluster = %name, "provisioned cluster deleted");
}

/// After a restart: every journaled cluster picks up where the last broker left it.
pub fn resume(state: &Arc<AppState>) -> Result<usize, ApiError> {
    let records = state.store.list::<Provisioned>(PREFIX)?;
    let count = records.len();
    for (_, record) in records {
        let Ok(cluster) = parse(&record.document) else {
            tracing::error!(cluster = %record.cluster, "a journaled cluster no longer parses; left alone");
            continue;
        };
        let Ok(guard) = Provisioning::claim(state, &record.cluster) else {
            continue;
        };
        let state = Arc::clone(state);
        tokio::spawn(async move {
            let _guard = guard;
            resume_one(&state, &cluster, record).await;
        });
    }
    Ok(count)
}

async fn resume_one(state: &Arc<AppState>, cluster: &Cluster, mut record: Provisioned) {
    let Ok(spec) = heat_spec(cluster) else {
        return;
    };
    let clusters = match state.provisioning.clusters_of(spec.connection).await {
        Ok(clusters) => clusters,
        Err(reason) => return fail(state, &mut record, reason),
    };
    let stack = record.stack.as_deref().and_then(StackId::parse);
    if let Some(stack) = &stack {
        clusters.register(&cluster.name, stack.clone());
    }
    match (record.phase, stack) {
        (Phase::Creating, None) => {
            let environment = spec
                .environment
                .map(|path| Environment::read(&state.provisioning.resolve(path)))
                .transpose();
            let request = environment.and_then(|environment| {
                ClusterRequest::new(spec.stack, spec.parameters, environment)
            });
            match request {
                Ok(request) => run_create(state, cluster, request, record).await,
                Err(error) => fail(state, &mut record, error.to_string()),
            }
        }
        (Phase::Creating, Some(stack)) => {
            match follow(state, &clusters, &stack, Action::Create, &mut record).await {
                Ok(()) => connect_and_register(state, cluster, &clusters, &mut record).await,
                Err(reason) => fail(state, &mut record, reason),
            }
        }
        (Phase::Resizing, Some(stack)) => {
            finish_resize(state, &clusters, &stack, &mut record).await;
            reconnect(state, cluster, &clusters).await;
        }
        (Phase::Ready, Some(_)) => reconnect(state, cluster, &clusters).await,
        (Phase::Deleting, _) => run_delete(state, &clusters, record).await,
        _ => {}
    }
}

/// A ready cluster after a restart: the cloud or the cluster may still be starting, so
/// connecting is tried until it works, as an unreachable member would be.
async fn reconnect(state: &Arc<AppState>, cluster: &Cluster, clusters: &HeatClusters) {
    let mut delay = Duration::from_secs(2);
    loop {
        match connect(cluster, clusters).await {
            Ok(port) => {
                state.world.add_provisioned(Arc::new(Member {
                    definition: cluster.clone(),
                    port,
                }));
                return;
            }
            Err(reason) => {
                tracing::warn!(cluster = %cluster.name, %reason, "reconnecting a provisioned cluster");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}
