//! Clusters Ferry provisions itself: `POST /api/v1/clusters` with a Cluster document of
//! `provider: openstack` and a `heat` or `magnum` block creates the cluster (a Heat stack
//! from Ferry's template, or a Magnum cluster from a cluster template), follows it with
//! progress on the event stream, gets its access (from the stack's outputs: the CA and
//! the token its control plane signalled; from Magnum: the CA and a client certificate it
//! signs), and registers the cluster as a member; `resize` changes its worker count,
//! `delete` takes it out of the federation and deletes it.
//!
//! The record of each ([`Provisioned`], in the store under [`PREFIX`]) is the journal: it
//! is written before anything is created and again with the stack's id or the Magnum
//! cluster's uuid as soon as the cloud accepts the create, so that a restarted broker
//! follows what it left instead of creating one more (a create repeated without the
//! handle adopts the stack or cluster of that name). The record never holds credentials:
//! the broker asks the cloud for them each time it connects.
//!
//! One action runs per cluster at a time; asking for another meanwhile is a 409. A failed
//! action leaves the record (phase `failed`, with Heat's reason naming the failed
//! resource) for the operator to read, and a delete cleans up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_adapter_kubernetes::{BearerToken, Credentials, KubeCluster};
use ferry_adapter_openstack::{
    Action, CloudConfig, ClusterAccess, ClusterOutcome, ClusterRequest, Environment, Follow, Heat,
    HeatClusters, Keystone, Magnum, MagnumClusters, NewCluster, Outcome, Secret, StackId,
    check_worker_count,
};
use ferry_policies::model::{Cluster, Connection, OpenstackConnection, OpenstackProvisioner};
use ferry_policies::resources::ResourceSet;
use ferry_ports::{ClusterPort, Operation, PortError, Provisioner};
use ferry_store::Versioned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::api::{ApiError, AppState};
use super::clock;
use super::world::{Member, kube_port};

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

impl Phase {
    /// The name in the API (the journal's serialized form), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "creating",
            Phase::Ready => "ready",
            Phase::Resizing => "resizing",
            Phase::Deleting => "deleting",
            Phase::Failed => "failed",
        }
    }
}

/// A provisioned cluster's journal record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provisioned {
    pub cluster: String,
    /// The Cluster document as the client sent it (validated); no secrets in it.
    pub document: String,
    /// `heat` or `magnum`.
    pub provisioner: String,
    /// Once the cloud accepted the create: the Heat stack's `name/id`, or the Magnum
    /// cluster's uuid.
    pub handle: Option<String>,
    pub phase: Phase,
    /// The worker count asked for last.
    pub workers: u32,
    /// What the cloud is doing, e.g. `CREATE_IN_PROGRESS: 9 of 14 resources complete`.
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
            "provisioner": self.provisioner,
            "handle": self.handle,
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

/// One cloud's provisioners, which remember which cluster is which stack or Magnum
/// cluster. Magnum's is made when first needed: many clouds have no Magnum.
struct CloudClients {
    keystone: Arc<Keystone>,
    heat: Arc<HeatClusters>,
    magnum: Option<Arc<MagnumClusters>>,
}

/// The provisioner side of the broker: the clients of each cloud and region, and the
/// clusters with an action running.
pub struct Provisioning {
    config: ProvisioningConfig,
    clouds: tokio::sync::Mutex<BTreeMap<CloudKey, CloudClients>>,
    busy: Mutex<BTreeSet<String>>,
    /// Resizes of members Ferry did not provision (GKE node pools), in the record's
    /// shape: followed in memory only, since the cloud finishes them anyway.
    resizes: Mutex<BTreeMap<String, Value>>,
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

/// What a Cluster file asks to be provisioned, read from its `spec.openstack`.
enum Kind<'a> {
    Heat {
        stack: &'a str,
        parameters: &'a BTreeMap<String, String>,
        environment: Option<&'a str>,
    },
    Magnum {
        template: &'a str,
        node_count: u32,
    },
}

struct Spec<'a> {
    connection: &'a OpenstackConnection,
    kind: Kind<'a>,
}

/// What to create, checked before anything is sent.
enum Plan {
    Heat(ClusterRequest),
    /// A Magnum cluster named as the Ferry cluster, from the template of that name or
    /// uuid.
    Magnum {
        template: String,
        node_count: u32,
    },
}

impl Plan {
    fn workers(&self) -> u32 {
        match self {
            Plan::Heat(request) => request.workers(),
            Plan::Magnum { node_count, .. } => *node_count,
        }
    }
}

fn spec_of(cluster: &Cluster) -> Result<Spec<'_>, String> {
    let Connection::Openstack(connection) = &cluster.connection else {
        return Err(format!(
            "cluster {} has provider {}; Ferry provisions clusters of provider openstack",
            cluster.name,
            cluster.provider.as_str()
        ));
    };
    let kind = match &connection.provisioner {
        OpenstackProvisioner::Heat {
            stack,
            parameters,
            environment,
        } => Kind::Heat {
            stack,
            parameters,
            environment: environment.as_deref(),
        },
        OpenstackProvisioner::Magnum {
            cluster_template,
            node_count,
        } => Kind::Magnum {
            template: cluster_template,
            node_count: *node_count,
        },
        OpenstackProvisioner::None => {
            return Err(format!(
                "cluster {} has neither a `heat` nor a `magnum` block in spec.openstack: nothing to provision",
                cluster.name
            ));
        }
    };
    Ok(Spec { connection, kind })
}

fn kind_name(spec: &Spec<'_>) -> &'static str {
    match spec.kind {
        Kind::Heat { .. } => "heat",
        Kind::Magnum { .. } => "magnum",
    }
}

/// A provisioned cluster's provisioner, Heat or Magnum, behind one face.
#[derive(Clone)]
enum Backend {
    Heat(Arc<HeatClusters>),
    Magnum(Arc<MagnumClusters>),
}

impl Provisioning {
    pub fn new(config: ProvisioningConfig) -> Provisioning {
        Provisioning {
            config,
            clouds: tokio::sync::Mutex::new(BTreeMap::new()),
            busy: Mutex::new(BTreeSet::new()),
            resizes: Mutex::new(BTreeMap::new()),
        }
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

    /// The provisioner of `spec`'s kind in its cloud and region, signing in once per
    /// cloud.
    async fn backend(&self, spec: &Spec<'_>) -> Result<Backend, String> {
        let key = (
            spec.connection.cloud.clone(),
            spec.connection.region.clone(),
        );
        let mut clouds = self.clouds.lock().await;
        if !clouds.contains_key(&key) {
            let keystone = Arc::new(
                Keystone::new(self.cloud_config(spec.connection)?).map_err(|e| e.to_string())?,
            );
            let heat = Arc::new(HeatClusters::new(Heat::new(Arc::clone(&keystone))));
            clouds.insert(
                key.clone(),
                CloudClients {
                    keystone,
                    heat,
                    magnum: None,
                },
            );
        }
        let Some(clients) = clouds.get_mut(&key) else {
            return Err("the cloud's clients went missing".to_owned());
        };
        Ok(match spec.kind {
            Kind::Heat { .. } => Backend::Heat(Arc::clone(&clients.heat)),
            Kind::Magnum { .. } => {
                if clients.magnum.is_none() {
                    let magnum =
                        Magnum::new(Arc::clone(&clients.keystone)).map_err(|e| e.to_string())?;
                    clients.magnum = Some(Arc::new(MagnumClusters::new(magnum)));
                }
                match &clients.magnum {
                    Some(magnum) => Backend::Magnum(Arc::clone(magnum)),
                    None => return Err("the cloud's Magnum client went missing".to_owned()),
                }
            }
        })
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.config.base.join(path)
        }
    }

    /// What to create for `cluster`; a message for the client if it cannot be.
    fn plan(&self, cluster: &Cluster, spec: &Spec<'_>) -> Result<Plan, String> {
        match spec.kind {
            Kind::Heat {
                stack,
                parameters,
                environment,
            } => {
                let environment = environment
                    .map(|path| Environment::read(&self.resolve(path)))
                    .transpose()
                    .map_err(|e| e.to_string())?;
                ClusterRequest::new(stack, parameters, environment)
                    .map(Plan::Heat)
                    .map_err(|e| e.to_string())
            }
            Kind::Magnum {
                template,
                node_count,
            } => {
                ferry_adapter_openstack::magnum::check_cluster_name(&cluster.name)
                    .map_err(|e| e.to_string())?;
                Ok(Plan::Magnum {
                    template: template.to_owned(),
                    node_count,
                })
            }
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

impl Backend {
    /// Remembers that `cluster` is `handle` (from the journal).
    fn register(&self, cluster: &str, handle: &str) {
        match self {
            Backend::Heat(heat) => {
                if let Some(stack) = StackId::parse(handle) {
                    heat.register(cluster, stack);
                }
            }
            Backend::Magnum(magnum) => magnum.register(cluster, handle),
        }
    }

    fn forget(&self, cluster: &str) {
        match self {
            Backend::Heat(heat) => heat.forget(cluster),
            Backend::Magnum(magnum) => magnum.forget(cluster),
        }
    }

    /// Creates (or adopts) the cluster; its handle, and whether it existed.
    async fn create(&self, cluster: &str, plan: &Plan) -> Result<(String, bool), String> {
        match (self, plan) {
            (Backend::Heat(heat), Plan::Heat(request)) => heat
                .create(cluster, request)
                .await
                .map(|created| (created.stack.to_string(), created.adopted))
                .map_err(|e| e.to_string()),
            (
                Backend::Magnum(magnum),
                Plan::Magnum {
                    template,
                    node_count,
                },
            ) => {
                let template = magnum
                    .magnum()
                    .cluster_template(template)
                    .await
                    .map_err(|e| format!("cluster template {template}: {e}"))?;
                let new = NewCluster::new(cluster, &template.uuid, *node_count);
                magnum
                    .create(cluster, &new)
                    .await
                    .map(|created| (created.uuid, created.adopted))
                    .map_err(|e| e.to_string())
            }
            _ => Err("the plan does not match the provisioner".to_owned()),
        }
    }

    /// Follows an action to its end, journaling its progress; the reason when it did not
    /// complete. `workers` is the count a resize waits for.
    async fn follow(
        &self,
        state: &Arc<AppState>,
        handle: &str,
        action: Action,
        workers: Option<u32>,
        record: &mut Provisioned,
    ) -> Result<(), String> {
        let follow = state.provisioning.config.follow.clone();
        match self {
            Backend::Heat(heat) => {
                let stack = StackId::parse(handle)
                    .ok_or_else(|| format!("the journal's stack `{handle}` is not name/id"))?;
                let mut on_progress = |progress: &ferry_adapter_openstack::Progress| {
                    record.progress = Some(progress.to_string());
                    save(state, record);
                };
                let outcome = heat
                    .heat()
                    .follow(&stack, action, &follow, &mut on_progress)
                    .await;
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
            Backend::Magnum(magnum) => {
                let mut on_progress = |progress: &ferry_adapter_openstack::ClusterProgress| {
                    record.progress = Some(progress.to_string());
                    save(state, record);
                };
                let outcome = match (action, workers) {
                    (Action::Update, Some(workers)) => {
                        magnum
                            .magnum()
                            .follow_resize(handle, workers, &follow, &mut on_progress)
                            .await
                    }
                    _ => {
                        magnum
                            .magnum()
                            .follow(handle, action, &follow, &mut on_progress)
                            .await
                    }
                };
                match outcome {
                    Ok(ClusterOutcome::Complete(cluster)) => {
                        record.progress = Some(cluster.status.to_string());
                        Ok(())
                    }
                    Ok(ClusterOutcome::Gone) => Ok(()),
                    Ok(ClusterOutcome::Failed(cluster)) => Err(cluster.reason()),
                    Err(error) => Err(format!("following the Magnum cluster: {error}")),
                }
            }
        }
    }

    /// A member port for the cluster, with the Cluster file's scope and overrides.
    async fn connect(&self, cluster: &Cluster) -> Result<Arc<dyn ClusterPort>, String> {
        let credentials = match self {
            Backend::Heat(heat) => {
                let access: ClusterAccess = heat
                    .access(&cluster.name)
                    .await
                    .map_err(|e| format!("reading the cluster's access from its stack: {e}"))?;
                Credentials::Endpoint {
                    server: access.api_url.clone(),
                    ca_base64: access.ca_base64.clone(),
                    token: Arc::new(FixedToken(access.token.clone())),
                }
            }
            Backend::Magnum(magnum) => {
                use base64::Engine as _;
                let access = magnum
                    .access(&cluster.name)
                    .await
                    .map_err(|e| format!("getting the cluster's credentials from Magnum: {e}"))?;
                Credentials::ClientCertificate {
                    server: access.api_url.clone(),
                    ca_base64: base64::engine::general_purpose::STANDARD.encode(&access.ca_pem),
                    certificate_pem: access.client_cert_pem.clone(),
                    key_pem: access.client_key_pem.expose().to_owned(),
                }
            }
        };
        let server = match &credentials {
            Credentials::Endpoint { server, .. }
            | Credentials::ClientCertificate { server, .. } => server.clone(),
            Credentials::Kubeconfig { path, .. } => path.display().to_string(),
        };
        let kube = KubeCluster::connect(
            &cluster.name,
            &credentials,
            cluster.scope.namespaces.clone(),
        )
        .await
        .map_err(|e| format!("connecting to {server}: {e}"))?;
        Ok(kube_port(kube, cluster))
    }

    fn provisioner(&self) -> &dyn Provisioner {
        match self {
            Backend::Heat(heat) => heat.as_ref(),
            Backend::Magnum(magnum) => magnum.as_ref(),
        }
    }

    /// Asks the cloud to delete the cluster.
    async fn delete(&self, cluster: &str) -> Result<(), String> {
        match self {
            Backend::Heat(heat) => heat.delete(cluster).await.map(drop),
            Backend::Magnum(magnum) => magnum.delete(cluster).await.map(drop),
        }
        .map_err(|e| e.to_string())
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
/// created again (the cloud's stack or cluster of that name is adopted).
pub fn create(state: &Arc<AppState>, text: &str) -> Result<Value, ApiError> {
    let cluster = parse(text)?;
    let spec = spec_of(&cluster).map_err(|m| ApiError::BadRequest("not_provisionable", m))?;
    let plan = state
        .provisioning
        .plan(&cluster, &spec)
        .map_err(|m| ApiError::BadRequest("invalid_cluster", m))?;
    // A cloud the broker has no settings for is said now, not after a 202.
    state
        .provisioning
        .cloud_config(spec.connection)
        .map_err(|m| ApiError::BadRequest("unknown_cloud", m))?;
    let existing = state.store.get::<Provisioned>(&key(&cluster.name))?;
    // A failed create may be asked again; anything else of that name is taken.
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
    let provisioner = kind_name(&spec).to_owned();
    let mut record = Provisioned {
        cluster: cluster.name.clone(),
        document: text.to_owned(),
        // A failed create of the same kind keeps its handle: the retry follows it.
        handle: existing
            .filter(|r| r.provisioner == provisioner)
            .and_then(|r| r.handle),
        provisioner,
        phase: Phase::Creating,
        workers: plan.workers(),
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
        run_create(&state, &cluster, plan, record).await;
    });
    Ok(view)
}

async fn run_create(state: &Arc<AppState>, cluster: &Cluster, plan: Plan, mut record: Provisioned) {
    let Ok(spec) = spec_of(cluster) else {
        return;
    };
    let backend = match state.provisioning.backend(&spec).await {
        Ok(backend) => backend,
        Err(reason) => return fail(state, &mut record, reason),
    };
    let handle = match record.handle.clone() {
        // A restart after the cloud accepted the create: follow what it made.
        Some(handle) => {
            backend.register(&cluster.name, &handle);
            handle
        }
        None => match backend.create(&cluster.name, &plan).await {
            Ok((handle, adopted)) => {
                record.handle = Some(handle.clone());
                record.progress = Some(if adopted {
                    "adopted the existing one of that name".to_owned()
                } else {
                    "create accepted".to_owned()
                });
                save(state, &mut record);
                handle
            }
            Err(error) => return fail(state, &mut record, format!("create: {error}")),
        },
    };
    match backend
        .follow(state, &handle, Action::Create, None, &mut record)
        .await
    {
        Ok(()) => connect_and_register(state, cluster, &backend, &mut record).await,
        Err(reason) => fail(state, &mut record, reason),
    }
}

/// Gets the access, connects, and adds the member.
async fn connect_and_register(
    state: &Arc<AppState>,
    cluster: &Cluster,
    backend: &Backend,
    record: &mut Provisioned,
) {
    match backend.connect(cluster).await {
        Ok(port) => {
            join(state, cluster, port);
            record.phase = Phase::Ready;
            record.reason = None;
            save(state, record);
            tracing::info!(cluster = %cluster.name, "provisioned cluster joined the federation");
        }
        Err(reason) => fail(state, record, reason),
    }
}

/// The record's cluster, its spec and its provisioner, for resize and delete.
async fn backend_of(
    state: &AppState,
    record: &Provisioned,
) -> Result<(Cluster, Backend), ApiError> {
    let cluster = parse(&record.document)?;
    let spec = spec_of(&cluster).map_err(ApiError::Internal)?;
    let backend =
        state.provisioning.backend(&spec).await.map_err(|m| {
            ApiError::Upstream(format!("the cloud of cluster {}: {m}", record.cluster))
        })?;
    if let Some(handle) = &record.handle {
        backend.register(&record.cluster, handle);
    }
    Ok((cluster, backend))
}

/// Changes the worker count: the cloud's answer to the request comes back at once (a
/// refusal is an error here), the change is followed in the background.
pub async fn resize(state: &Arc<AppState>, name: &str, workers: u32) -> Result<Value, ApiError> {
    let mut record = match get(state, name) {
        Ok(record) => record,
        Err(ApiError::NotFound(message)) => {
            return match state.world.member(name).and_then(|m| m.provisioner.clone()) {
                Some(provisioner) => resize_member(state, name, provisioner, workers).await,
                None => Err(ApiError::NotFound(format!(
                    "{message}, and no member of that name has a node pool Ferry may resize"
                ))),
            };
        }
        Err(other) => return Err(other),
    };
    if record.provisioner == "heat" {
        check_worker_count(workers).map_err(|m| ApiError::BadRequest("invalid_resize", m))?;
    } else if workers == 0 {
        return Err(ApiError::BadRequest(
            "invalid_resize",
            "the worker count must be at least 1".to_owned(),
        ));
    }
    let guard = Provisioning::claim(state, name)?;
    let Some(handle) = record
        .handle
        .clone()
        .filter(|_| matches!(record.phase, Phase::Ready | Phase::Failed))
    else {
        return Err(ApiError::Conflict(format!(
            "cluster {name} is {}; it can be resized once it is ready",
            record.phase.as_str()
        )));
    };
    let (_, backend) = backend_of(state, &record).await?;
    backend
        .provisioner()
        .resize(name, workers)
        .await
        .map_err(|e| match e {
            PortError::Conflict { .. } => ApiError::Conflict(e.to_string()),
            other => ApiError::Upstream(other.to_string()),
        })?;
    let previous = record.workers;
    record.phase = Phase::Resizing;
    record.workers = workers;
    record.reason = None;
    record.progress = Some(format!("{workers} workers requested"));
    save(state, &mut record);
    let view = record.view();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _guard = guard;
        finish_resize(&state, &backend, &handle, &mut record, Some(previous)).await;
    });
    Ok(view)
}

/// The resize of a member Ferry did not provision (a GKE node pool): asked at once (a
/// refusal is an error here), its operation followed in the background.
async fn resize_member(
    state: &Arc<AppState>,
    name: &str,
    provisioner: Arc<dyn Provisioner>,
    workers: u32,
) -> Result<Value, ApiError> {
    let guard = Provisioning::claim(state, name)?;
    let operation = provisioner
        .resize(name, workers)
        .await
        .map_err(|e| match e {
            PortError::Rejected { reason, .. } => ApiError::BadRequest("invalid_resize", reason),
            PortError::Conflict { .. } => ApiError::Conflict(e.to_string()),
            other => ApiError::Upstream(other.to_string()),
        })?;
    let id = match &operation {
        Operation::Running { id, .. } | Operation::Done { id } | Operation::Failed { id, .. } => {
            id.clone()
        }
    };
    let now = clock::now();
    let mut view = json!({
        "cluster": name, "provisioner": "node pool", "handle": id, "phase": "resizing",
        "workers": workers, "progress": format!("{workers} nodes requested"), "reason": null,
        "createdAt": now, "updatedAt": now,
    });
    set_member_resize(state, name, &view);
    let answer = view.clone();
    let state = Arc::clone(state);
    let name = name.to_owned();
    tokio::spawn(async move {
        let _guard = guard;
        let follow = state.provisioning.config.follow.clone();
        let deadline = tokio::time::Instant::now() + follow.deadline;
        let mut delay = follow.first_delay;
        let mut current = operation;
        loop {
            match current {
                Operation::Done { .. } => break,
                Operation::Failed { reason, .. } => {
                    view["reason"] = json!(format!("resize to {workers} nodes failed: {reason}"));
                    break;
                }
                Operation::Running { progress, .. } => {
                    view["progress"] = json!(progress);
                    set_member_resize(&state, &name, &view);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                view["reason"] = json!(format!(
                    "resize to {workers} nodes: not done after {} s",
                    follow.deadline.as_secs()
                ));
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 3 / 2).min(follow.max_delay);
            current = match provisioner.operation(&id).await {
                Ok(operation) => operation,
                Err(error) if error.is_transient() => Operation::Running {
                    id: id.clone(),
                    progress: error.to_string(),
                },
                Err(error) => Operation::Failed {
                    id: id.clone(),
                    reason: error.to_string(),
                },
            };
        }
        view["phase"] = json!("ready");
        set_member_resize(&state, &name, &view);
    });
    Ok(answer)
}

fn set_member_resize(state: &AppState, name: &str, view: &Value) {
    let mut view = view.clone();
    view["updatedAt"] = json!(clock::now());
    state
        .provisioning
        .resizes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_owned(), view.clone());
    state.events.publish("cluster.provisioning", None, view);
}

/// The last resize of a member Ferry did not provision, if any.
pub fn member_resize(state: &AppState, name: &str) -> Option<Value> {
    state
        .provisioning
        .resizes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .cloned()
}

/// A resize that fails leaves the cluster serving with the workers it has: the record
/// goes back to ready, with the reason and, when known, the worker count from before.
async fn finish_resize(
    state: &Arc<AppState>,
    backend: &Backend,
    handle: &str,
    record: &mut Provisioned,
    previous: Option<u32>,
) {
    let workers = record.workers;
    if let Err(reason) = backend
        .follow(state, handle, Action::Update, Some(workers), record)
        .await
    {
        tracing::warn!(cluster = %record.cluster, %reason, "resize failed");
        record.reason = Some(format!(
            "{RESIZE_FAILED} {workers} workers failed: {reason}"
        ));
        if let Some(previous) = previous {
            record.workers = previous;
        }
    }
    record.phase = Phase::Ready;
    save(state, record);
}

/// Takes the cluster out of the federation and deletes it. Workloads still serving
/// there are named and the delete refused, unless `force`.
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
    let (_, backend) = backend_of(state, &record).await?;
    state.world.remove_provisioned(name);
    record.phase = Phase::Deleting;
    record.reason = None;
    record.progress = Some("delete requested".to_owned());
    save(state, &mut record);
    let view = record.view();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _guard = guard;
        run_delete(&state, &backend, record).await;
    });
    Ok(view)
}

async fn run_delete(state: &Arc<AppState>, backend: &Backend, mut record: Provisioned) {
    let name = record.cluster.clone();
    if let Some(handle) = record.handle.clone() {
        backend.register(&name, &handle);
        if let Err(error) = backend.delete(&name).await {
            return fail(state, &mut record, format!("delete: {error}"));
        }
        if let Err(reason) = backend
            .follow(state, &handle, Action::Delete, None, &mut record)
            .await
        {
            return fail(state, &mut record, reason);
        }
    }
    backend.forget(&name);
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
    let Ok(spec) = spec_of(cluster) else {
        return;
    };
    let backend = match state.provisioning.backend(&spec).await {
        Ok(backend) => backend,
        Err(reason) => return fail(state, &mut record, reason),
    };
    if let Some(handle) = &record.handle {
        backend.register(&cluster.name, handle);
    }
    match (record.phase, record.handle.clone()) {
        (Phase::Creating, None) => match state.provisioning.plan(cluster, &spec) {
            Ok(plan) => run_create(state, cluster, plan, record).await,
            Err(reason) => fail(state, &mut record, reason),
        },
        (Phase::Creating, Some(handle)) => {
            match backend
                .follow(state, &handle, Action::Create, None, &mut record)
                .await
            {
                Ok(()) => connect_and_register(state, cluster, &backend, &mut record).await,
                Err(reason) => fail(state, &mut record, reason),
            }
        }
        (Phase::Resizing, Some(handle)) => {
            finish_resize(state, &backend, &handle, &mut record, None).await;
            reconnect(state, cluster, &backend).await;
        }
        (Phase::Ready, Some(_)) => reconnect(state, cluster, &backend).await,
        (Phase::Deleting, _) => run_delete(state, &backend, record).await,
        _ => {}
    }
}

/// Adds a provisioned cluster to the federation; the controllers resize it through its
/// journaled record, as `ferry cluster resize` does.
fn join(state: &Arc<AppState>, cluster: &Cluster, port: Arc<dyn ClusterPort>) {
    state.world.add_provisioned(Arc::new(Member {
        definition: cluster.clone(),
        port,
        price_source: None,
        provisioner: Some(Arc::new(RecordedResizes {
            state: Arc::downgrade(state),
        })),
    }));
}

/// How the reason of a failed resize begins (what [`RecordedResizes`] looks for).
const RESIZE_FAILED: &str = "resize to";

/// The [`Provisioner`] of the clusters Ferry provisioned: a resize is [`resize`] (a
/// journaled Heat stack update or Magnum resize, followed, resumed after a restart), and
/// an operation's id is the cluster's name, whose record says where it stands.
struct RecordedResizes {
    /// Weak: the state holds the world, which holds this.
    state: std::sync::Weak<AppState>,
}

impl RecordedResizes {
    fn state(&self, cluster: &str) -> Result<Arc<AppState>, PortError> {
        self.state.upgrade().ok_or_else(|| PortError::Unreachable {
            cluster: cluster.to_owned(),
            reason: "the broker is stopping".to_owned(),
        })
    }
}

#[async_trait::async_trait]
impl Provisioner for RecordedResizes {
    async fn resize(&self, cluster: &str, nodes: u32) -> Result<Operation, PortError> {
        let state = self.state(cluster)?;
        resize(&state, cluster, nodes)
            .await
            .map_err(|error| PortError::Rejected {
                cluster: cluster.to_owned(),
                what: format!("a resize to {nodes} workers"),
                reason: error.message(),
            })?;
        Ok(Operation::Running {
            id: cluster.to_owned(),
            progress: format!("resizing to {nodes} workers"),
        })
    }

    async fn operation(&self, id: &str) -> Result<Operation, PortError> {
        let state = self.state(id)?;
        let record = get(&state, id).map_err(|error| PortError::NotFound {
            cluster: id.to_owned(),
            what: error.message(),
        })?;
        Ok(match record.phase {
            Phase::Resizing | Phase::Creating => Operation::Running {
                id: id.to_owned(),
                progress: record.progress.unwrap_or_else(|| "resizing".to_owned()),
            },
            Phase::Ready => match record.reason {
                Some(reason) if reason.starts_with(RESIZE_FAILED) => Operation::Failed {
                    id: id.to_owned(),
                    reason,
                },
                _ => Operation::Done { id: id.to_owned() },
            },
            Phase::Failed | Phase::Deleting => Operation::Failed {
                id: id.to_owned(),
                reason: record
                    .reason
                    .unwrap_or_else(|| format!("the cluster is {}", record.phase.as_str())),
            },
        })
    }

    async fn workers(&self, cluster: &str) -> Result<Option<u32>, PortError> {
        let state = self.state(cluster)?;
        Ok(get(&state, cluster).ok().map(|record| record.workers))
    }
}

/// A ready cluster after a restart: the cloud or the cluster may still be starting, so
/// connecting is tried until it works, as an unreachable member would be.
async fn reconnect(state: &Arc<AppState>, cluster: &Cluster, backend: &Backend) {
    let mut delay = Duration::from_secs(2);
    loop {
        match backend.connect(cluster).await {
            Ok(port) => {
                join(state, cluster, port);
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

#[cfg(test)]
mod tests {
    use super::Phase;

    #[test]
    fn phases_are_named_as_the_api_spells_them() {
        for phase in [
            Phase::Creating,
            Phase::Ready,
            Phase::Resizing,
            Phase::Deleting,
            Phase::Failed,
        ] {
            assert_eq!(
                serde_json::to_value(phase).expect("serializes"),
                serde_json::Value::from(phase.as_str())
            );
        }
    }
}
