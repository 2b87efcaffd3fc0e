//! [`KubeCluster`]: the [`ClusterPort`] of one member cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use ferry_ports::{
    Claim, ClusterPort, Drained, ExistingClaim, ExportedWorkload, Health, Inventory, Kept, Mark,
    ObjectRef, PortError, Removal, Resources, Rollout, RunningWorkload, WorkloadFate, WorkloadKey,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, PersistentVolumeClaim, Pod, PodSpec, Secret, Service,
    ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::connection::{self, CALL_TIMEOUT, Credentials};
use crate::errors::{Call, port_error};
use crate::objects::{self, MARK_ANNOTATION};
use crate::overrides::{TargetOverrides, apply_overrides, apply_recorded, undo_recorded};
use crate::quantity;

/// The field manager of every write: the API server then tells Ferry's fields from a
/// user's, and a conflict names the other manager.
pub const FIELD_MANAGER: &str = "ferry";

/// How long a delete waits for a workload's pods to stop, and then for the object to go,
/// before it reports a transient error (the engine tries again).
const REMOVAL_WAIT: Duration = Duration::from_secs(60);
const REMOVAL_POLL: Duration = Duration::from_millis(250);

/// How long `inventory()` waits for the first full list of every watch.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a watch may fail before its first list, its own retries included, before
/// `inventory()` reports that failure rather than waiting on.
const FAILING_BEFORE_LISTED: Duration = Duration::from_secs(2);

/// A kind Ferry carries, with the names RBAC and the REST paths use.
struct Kind {
    kind: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    /// `plural.group`, as a ClusterRole and `kubectl auth can-i` name it.
    resource: &'static str,
}

const DEPLOYMENT: Kind = Kind {
    kind: "Deployment",
    group: "apps",
    version: "v1",
    plural: "deployments",
    resource: "deployments.apps",
};

const STATEFUL_SET: Kind = Kind {
    kind: "StatefulSet",
    group: "apps",
    version: "v1",
    plural: "statefulsets",
    resource: "statefulsets.apps",
};

/// The kinds that are workloads, in the order a key is looked up: a Deployment and a
/// StatefulSet may share a name, and the Deployment is then the workload.
const WORKLOAD_KINDS: [&Kind; 2] = [&DEPLOYMENT, &STATEFUL_SET];

const KINDS: [Kind; 10] = [
    Kind {
        kind: "Namespace",
        group: "",
        version: "v1",
        plural: "namespaces",
        resource: "namespaces",
    },
    Kind {
        kind: "ServiceAccount",
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        resource: "serviceaccounts",
    },
    Kind {
        kind: "ConfigMap",
        group: "",
        version: "v1",
        plural: "configmaps",
        resource: "configmaps",
    },
    Kind {
        kind: "Secret",
        group: "",
        version: "v1",
        plural: "secrets",
        resource: "secrets",
    },
    Kind {
        kind: "PersistentVolumeClaim",
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        resource: "persistentvolumeclaims",
    },
    DEPLOYMENT,
    STATEFUL_SET,
    Kind {
        kind: "Service",
        group: "",
        version: "v1",
        plural: "services",
        resource: "services",
    },
    Kind {
        kind: "HorizontalPodAutoscaler",
        group: "autoscaling",
        version: "v2",
        plural: "horizontalpodautoscalers",
        resource: "horizontalpodautoscalers.autoscaling",
    },
    Kind {
        kind: "PodDisruptionBudget",
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        resource: "poddisruptionbudgets.policy",
    },
];

fn kind_of(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == name)
}

impl Kind {
    fn is_workload(&self) -> bool {
        WORKLOAD_KINDS.iter().any(|k| k.kind == self.kind)
    }

    fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.kind),
            self.plural,
        )
    }
}

/// Why a watch cannot keep its store current.
#[derive(Clone, Debug)]
struct WatchFault {
    forbidden: bool,
    reason: String,
}

type Faults = Arc<Mutex<BTreeMap<String, WatchFault>>>;

fn lock(faults: &Faults) -> std::sync::MutexGuard<'_, BTreeMap<String, WatchFault>> {
    faults.lock().unwrap_or_else(PoisonError::into_inner)
}

fn watch_fault(resource: &str, error: &watcher::Error) -> WatchFault {
    let status_code = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    };
    if status_code == Some(403) {
        WatchFault {
            forbidden: true,
            reason: format!(
                "permission missing: the identity may not list and watch {resource}; grant verbs \
                 \"list\" and \"watch\" on resource {resource:?} (see deploy/ferry-clusterrole.yaml). \
                 The API server said: {error}"
            ),
        }
    } else {
        WatchFault {
            forbidden: false,
            reason: format!("watch of {resource}: {error}"),
        }
    }
}

/// How long a watch may go on failing (since its first error, with no success between)
/// before it is started afresh: longer than the watcher's longest backoff (30 s) plus a
/// connect timeout, so that one more attempt of its own fits in.
const STUCK_WATCH: Duration = Duration::from_secs(45);

/// Starts a reflector for `api`: a task that keeps the returned store current and records
/// in `faults` under `label` whether the watch currently fails.
fn spawn_reflector<K>(
    api: Api<K>,
    label: String,
    resource: &'static str,
    faults: Faults,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, mut writer) = reflector::store();
    let task = tokio::spawn(async move {
        // A watch that keeps failing is started afresh (a new list, a new request) after
        // STUCK_WATCH: after an API server restart, a watch was seen to stay on its last
        // error for minutes while every other request to that server succeeded.
        loop {
            let config = watcher::Config::default().timeout(crate::connection::WATCH_SECONDS);
            // Managed fields are about half of every object and never read here.
            let stream = watcher(api.clone(), config)
                .default_backoff()
                .map_ok(|event| event.modify(|object| object.managed_fields_mut().clear()));
            let mut stream = std::pin::pin!(stream);
            // When the watch began failing, if it is failing.
            let mut failing: Option<tokio::time::Instant> = None;
            loop {
                let next = if let Some(since) = failing {
                    match tokio::time::timeout_at(since + STUCK_WATCH, stream.next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::info!(watch = %label, "watch failing for {STUCK_WATCH:?}: starting it afresh");
                            break;
                        }
                    }
                } else {
                    stream.next().await
                };
                match next {
                    Some(Ok(event)) => {
                        writer.apply_watcher_event(&event);
                        lock(&faults).remove(&label);
                        failing = None;
                    }
                    Some(Err(error)) => {
                        let fault = watch_fault(resource, &error);
                        tracing::debug!(watch = %label, reason = %fault.reason, "watch failing");
                        lock(&faults).insert(label.clone(), fault);
                        failing.get_or_insert_with(tokio::time::Instant::now);
                    }
                    None => return,
                }
            }
        }
    });
    (reader, task)
}

/// One reflector per managed namespace, or one over all namespaces when none are named.
fn spawn_workload_reflectors<K>(
    client: &Client,
    namespaces: &[String],
    resource: &'static str,
    faults: &Faults,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Vec<Store<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let apis: Vec<(String, Api<K>)> = if namespaces.is_empty() {
        vec![(resource.to_owned(), Api::all(client.clone()))]
    } else {
        namespaces
            .iter()
            .map(|ns| {
                (
                    format!("{resource} in {ns}"),
                    Api::namespaced(client.clone(), ns),
                )
            })
            .collect()
    };
    let mut stores = Vec::with_capacity(apis.len());
    for (label, api) in apis {
        let (store, task) = spawn_reflector(api, label, resource, faults.clone());
        stores.push(store);
        tasks.push(task);
    }
    stores
}

/// The inventory's namespace label: a reflector over all namespaces, read for the label
/// here rather than with a label selector, so that any key and value are matched exactly
/// (no selector syntax to escape).
struct NamespaceLabel {
    key: String,
    value: String,
    namespaces: Store<Namespace>,
    task: JoinHandle<()>,
}

impl Drop for NamespaceLabel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NamespaceLabel {
    /// The names of the namespaces that carry the label now.
    fn labelled(&self) -> BTreeSet<String> {
        self.namespaces
            .state()
            .iter()
            .filter(|ns| ns.labels().get(&self.key) == Some(&self.value))
            .map(|ns| ns.name_any())
            .collect()
    }
}

/// One member cluster through the Kubernetes API. Dropping it stops its watches.
pub struct KubeCluster {
    name: String,
    client: Client,
    namespaces: Vec<String>,
    namespace_label: Option<NamespaceLabel>,
    overrides: TargetOverrides,
    ready_timeout: Duration,
    nodes: Store<Node>,
    pods: Store<Pod>,
    deployments: Vec<Store<Deployment>>,
    stateful_sets: Vec<Store<StatefulSet>>,
    faults: Faults,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl KubeCluster {
    /// A cluster from a kubeconfig file and one of its contexts (its current context when
    /// `None`); see [`KubeCluster::connect`].
    pub async fn from_kubeconfig(
        name: &str,
        path: &Path,
        context: Option<&str>,
        namespaces: Vec<String>,
    ) -> Result<KubeCluster, PortError> {
        let credentials = Credentials::Kubeconfig {
            path: path.to_path_buf(),
            context: context.map(str::to_owned),
        };
        KubeCluster::connect(name, &credentials, namespaces).await
    }

    /// A cluster reached with `credentials`. Nothing is read from the environment or the
    /// in-cluster service account: a broker that silently used its own pod's identity
    /// would act on the wrong cluster.
    ///
    /// `namespaces` are the ones whose workloads the inventory reports; empty means all.
    /// Must be called inside a tokio runtime (the watches start here).
    pub async fn connect(
        name: &str,
        credentials: &Credentials,
        namespaces: Vec<String>,
    ) -> Result<KubeCluster, PortError> {
        let client = connection::client(name, credentials).await?;
        Ok(KubeCluster::from_client(name, client, namespaces))
    }

    /// A cluster from a client built elsewhere (tests). Its timeouts are the caller's;
    /// every call still gives up after 30 s. Must be called inside a tokio runtime.
    pub fn from_client(name: &str, client: Client, namespaces: Vec<String>) -> KubeCluster {
        let faults: Faults = Arc::default();
        let mut tasks = Vec::new();
        let (nodes, task) = spawn_reflector(
            Api::<Node>::all(client.clone()),
            "nodes".to_owned(),
            "nodes",
            faults.clone(),
        );
        tasks.push(task);
        // Pods of every namespace: what other tenants request takes room on the nodes too.
        let (pods, task) = spawn_reflector(
            Api::<Pod>::all(client.clone()),
            "pods".to_owned(),
            "pods",
            faults.clone(),
        );
        tasks.push(task);
        let deployments = spawn_workload_reflectors(
            &client,
            &namespaces,
            "deployments.apps",
            &faults,
            &mut tasks,
        );
        let stateful_sets = spawn_workload_reflectors(
            &client,
            &namespaces,
            "statefulsets.apps",
            &faults,
            &mut tasks,
        );
        KubeCluster {
            name: name.to_owned(),
            client,
            namespaces,
            namespace_label: None,
            overrides: TargetOverrides::default(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
            nodes,
            pods,
            deployments,
            stateful_sets,
            faults,
            tasks,
        }
    }

    /// How long the first `inventory()` waits for the watches' first lists.
    pub fn with_ready_timeout(mut self, timeout: Duration) -> KubeCluster {
        self.ready_timeout = timeout;
        self
    }

    /// Limits the inventory to workloads in namespaces labelled `key: value` (the label's
    /// presence and value are followed as they change). Together with a non-empty
    /// namespace list, a workload must be in a listed namespace *and* carry the label: each
    /// limit only narrows, so adding a label can never bring in a namespace the list left
    /// out. Like the list, it limits the inventory only, not export, apply or delete.
    ///
    /// Watches all namespaces (verbs `list` and `watch` on `namespaces`); must be called
    /// inside a tokio runtime. A second call replaces the label.
    pub fn with_namespace_label(mut self, key: String, value: String) -> KubeCluster {
        let (namespaces, task) = spawn_reflector(
            Api::<Namespace>::all(self.client.clone()),
            "namespaces".to_owned(),
            "namespaces",
            self.faults.clone(),
        );
        // The replaced label's watch stops as it is dropped here.
        self.namespace_label = Some(NamespaceLabel {
            key,
            value,
            namespaces,
            task,
        });
        self
    }

    /// What `apply` changes in every object before it is sent to this cluster (a registry
    /// mirror, storage classes, labels and annotations); see [`TargetOverrides`].
    pub fn with_overrides(mut self, overrides: TargetOverrides) -> KubeCluster {
        self.overrides = overrides;
        self
    }

    /// The namespaces whose workloads the inventory reports (empty: all, or all carrying
    /// the label of [`KubeCluster::with_namespace_label`]).
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The first failing watch as a port error: a missing permission is not transient.
    fn watch_error(&self) -> Option<PortError> {
        let faults = lock(&self.faults);
        let fault = faults
            .values()
            .find(|f| f.forbidden)
            .or_else(|| faults.values().next())?;
        Some(if fault.forbidden {
            PortError::Rejected {
                cluster: self.name.clone(),
                what: "the inventory's watches".to_owned(),
                reason: fault.reason.clone(),
            }
        } else {
            PortError::Unreachable {
                cluster: self.name.clone(),
                reason: fault.reason.clone(),
            }
        })
    }

    async fn wait_ready(&self) -> Result<(), PortError> {
        let all = async {
            self.nodes.wait_until_ready().await?;
            self.pods.wait_until_ready().await?;
            for store in &self.deployments {
                store.wait_until_ready().await?;
            }
            for store in &self.stateful_sets {
                store.wait_until_ready().await?;
            }
            if let Some(label) = &self.namespace_label {
                label.namespaces.wait_until_ready().await?;
            }
            Ok::<(), reflector::store::WriterDropped>(())
        };
        // A watch that fails before its first list (a member that refuses connections, a
        // permission missing) is reported without waiting out the timeout, which held up
        // every census, and so every member's health and the controllers' first pass: a
        // missing permission at once, anything else once the watch's own retry has not
        // cured it within FAILING_BEFORE_LISTED (a blip at start is ridden out).
        let failed = async {
            let mut failing_since = None;
            loop {
                if let Some(error) = self.watch_error() {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if matches!(error, PortError::Rejected { .. })
                        || since.elapsed() >= FAILING_BEFORE_LISTED
                    {
                        return error;
                    }
                } else {
                    failing_since = None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let ready = tokio::select! {
            ready = tokio::time::timeout(self.ready_timeout, all) => ready,
            error = failed => return Err(error),
        };
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(PortError::Unreachable {
                cluster: self.name.clone(),
                reason: "the inventory's watches stopped".to_owned(),
            }),
            Err(_) => Err(self
                .watch_error()
                .unwrap_or_else(|| PortError::Unreachable {
                    cluster: self.name.clone(),
                    reason: format!(
                        "the watches did not complete their first list within {:?}",
                        self.ready_timeout
                    ),
                })),
        }
    }

    /// Runs one request with [`CALL_TIMEOUT`], its error in the port's words.
    async fn call<T>(
        &self,
        call: Call,
        request: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, PortError> {
        match tokio::time::timeout(CALL_TIMEOUT, request).await {
            Ok(result) => result.map_err(|error| port_error(&self.name, &call, error)),
            Err(_) => Err(PortError::Timeout {
                cluster: self.name.clone(),
                seconds: CALL_TIMEOUT.as_secs(),
            }),
        }
    }

    fn not_found(&self, key: &WorkloadKey) -> PortError {
        PortError::NotFound {
            cluster: self.name.clone(),
            what: format!("Deployment or StatefulSet {key}"),
        }
    }

    /// The workload of `key`: its Deployment, or else its StatefulSet. When both kinds
    /// have that name the Deployment is the workload (here and in the inventory), so that
    /// a StatefulSet added beside a Deployment Ferry already moves does not change what a
    /// key means.
    async fn workload(&self, key: &WorkloadKey) -> Result<Option<Workload>, PortError> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let deployment = self
            .call(
                Call::new("get", DEPLOYMENT.resource, key.to_string()),
                deployments.get_opt(&key.name),
            )
            .await?;
        if let Some(deployment) = deployment {
            return Ok(Some(Workload::Deployment(deployment)));
        }
        let stateful_sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let stateful_set = self
            .call(
                Call::new("get", STATEFUL_SET.resource, key.to_string()),
                stateful_sets.get_opt(&key.name),
            )
            .await?;
        Ok(stateful_set.map(Workload::StatefulSet))
    }

    async fn get_value<K>(
        &self,
        resource: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Value>, PortError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let object = self
            .call(
                Call::new("get", resource, format!("{namespace}/{name}")),
                api.get_opt(name),
            )
            .await?;
        object.map(|o| to_value(&self.name, &o)).transpose()
    }

    async fn list_values<K>(
        &self,
        resource: &'static str,
        namespace: &str,
    ) -> Result<Vec<Value>, PortError>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let list = self
            .call(
                Call::new("list", resource, format!("in namespace {namespace}")),
                api.list(&ListParams::default()),
            )
            .await?;
        list.items.iter().map(|o| to_value(&self.name, o)).collect()
    }

    /// The objects a workload (a Deployment or a StatefulSet, as JSON) uses in its
    /// namespace, uncleaned, in apply order: those before it (ServiceAccount, ConfigMaps,
    /// Secrets, the PersistentVolumeClaims its pods name) and those after it (Services
    /// selecting it or governing it, HPAs, PDBs). A referenced object that does not exist
    /// is skipped (pods mark such a reference `optional`, or fail on the source as well).
    async fn dependents(
        &self,
        key: &WorkloadKey,
        workload: &Value,
    ) -> Result<(Vec<Value>, Vec<Value>), PortError> {
        let namespace = key.namespace.as_str();
        let workload_kind = workload.get("kind").and_then(Value::as_str);
        let pod_spec = workload
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(Value::Null);
        let template_labels: BTreeMap<String, String> = workload
            .pointer("/spec/template/metadata/labels")
            .cloned()
            .and_then(|labels| serde_json::from_value(labels).ok())
            .unwrap_or_default();
        let refs = objects::references(&pod_spec);
        let mut before = Vec::new();
        let missing = |kind: &str, name: &str| {
            tracing::warn!(workload = %key, kind, name, "referenced object not found; not carried");
        };
        if let Some(account) = &refs.service_account {
            match self
                .get_value::<ServiceAccount>("serviceaccounts", namespace, account)
                .await?
            {
                Some(object) => before.push(object),
                None => missing("ServiceAccount", account),
            }
        }
        for name in &refs.config_maps {
            match self
                .get_value::<ConfigMap>("configmaps", namespace, name)
                .await?
            {
                Some(object) => before.push(object),
                None => missing("ConfigMap", name),
            }
        }
        for name in &refs.secrets {
            match self.get_value::<Secret>("secrets", namespace, name).await? {
                Some(object) => before.push(object),
                None => missing("Secret", name),
            }
        }
        for name in &refs.persistent_volume_claims {
            match self
                .get_value::<PersistentVolumeClaim>("persistentvolumeclaims", namespace, name)
                .await?
            {
                Some(object) => before.push(object),
                None => missing("PersistentVolumeClaim", name),
            }
        }
        let services = self.list_values::<Service>("services", namespace).await?;
        let governing = workload
            .pointer("/spec/serviceName")
            .and_then(Value::as_str);
        let mut after = objects::workload_services(services, &template_labels, governing);
        for hpa in self
            .list_values::<HorizontalPodAutoscaler>(
                "horizontalpodautoscalers.autoscaling",
                namespace,
            )
            .await?
        {
            let target = hpa.pointer("/spec/scaleTargetRef");
            let kind = target.and_then(|t| t.get("kind")).and_then(Value::as_str);
            let name = target.and_then(|t| t.get("name")).and_then(Value::as_str);
            if kind.is_some() && kind == workload_kind && name == Some(key.name.as_str()) {
                after.push(hpa);
            }
        }
        for pdb in self
            .list_values::<PodDisruptionBudget>("poddisruptionbudgets.policy", namespace)
            .await?
        {
            if objects::label_selector_selects(pdb.pointer("/spec/selector"), &template_labels) {
                after.push(pdb);
            }
        }
        Ok((before, after))
    }

    fn dynamic(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = kind.api_resource();
        match namespace {
            Some(namespace) => Api::namespaced_with(self.client.clone(), namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// Server-side apply of one object. Not forced unless `force` (an object another
    /// migration marked, which Ferry takes over): a field another manager holds is
    /// theirs, and the conflict goes back to the engine.
    async fn server_side_apply(
        &self,
        kind: &Kind,
        namespace: Option<&str>,
        object: &Value,
        force: bool,
    ) -> Result<(), PortError> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if force {
            params = params.force();
        }
        let api = self.dynamic(kind, namespace);
        let what = match namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.to_owned(),
        };
        self.call(
            Call::new("patch", kind.resource, what),
            api.patch(name, &params, &Patch::Apply(object)),
        )
        .await?;
        Ok(())
    }

    async fn delete_object(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
    ) -> Result<(), PortError> {
        let api = self.dynamic(kind, Some(namespace));
        match self
            .call(
                Call::new("delete", kind.resource, format!("{namespace}/{name}")),
                // Background: a dependent has nothing of its own to wait for, and goes at
                // once (a claim waits for its finalizer, which its pods hold).
                api.delete(name, &DeleteParams::background()),
            )
            .await
        {
            Ok(_) | Err(PortError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The Deployments and StatefulSets of `key`'s namespace other than its workload
    /// (`workload_kind`, the kind of the one `key` names).
    async fn other_workloads(
        &self,
        key: &WorkloadKey,
        workload_kind: Option<&'static str>,
    ) -> Result<Vec<OtherWorkload>, PortError> {
        let call = |resource: &'static str| {
            Call::new("list", resource, format!("in namespace {}", key.namespace))
        };
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let stateful_sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &key.namespace);
        let deployments = self
            .call(
                call(DEPLOYMENT.resource),
                deployments.list(&ListParams::default()),
            )
            .await?;
        let stateful_sets = self
            .call(
                call(STATEFUL_SET.resource),
                stateful_sets.list(&ListParams::default()),
            )
            .await?;
        let all = deployments
            .items
            .into_iter()
            .map(Workload::Deployment)
            .chain(stateful_sets.items.into_iter().map(Workload::StatefulSet));
        Ok(all
            .filter(|w| {
                !(Some(w.kind().kind) == workload_kind
                    && w.metadata().name.as_deref() == Some(key.name.as_str()))
            })
            .filter_map(|w| OtherWorkload::of(&w))
            .collect())
    }

    /// Scales the workload to zero, waits until none of its pods is left, deletes it and
    /// waits until it is gone: "deleted" then means nothing of it can serve. A wait that
    /// runs out (a controller manager that does not act) is a transient error, so that the
    /// caller tries again.
    async fn remove_workload(
        &self,
        key: &WorkloadKey,
        workload: &Workload,
    ) -> Result<(), PortError> {
        let kind = workload.kind();
        if workload.current_replicas() > 0 || workload.desired_replicas() > 0 {
            self.scale(key, 0, None).await?;
            let deadline = tokio::time::Instant::now() + REMOVAL_WAIT;
            loop {
                match self.workload(key).await? {
                    Some(now) if now.kind().kind == kind.kind && now.current_replicas() > 0 => {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(PortError::Unreachable {
                                cluster: self.name.clone(),
                                reason: format!(
                                    "{key} still has {} pods {} s after it was scaled to zero (is the controller manager running?)",
                                    now.current_replicas(),
                                    REMOVAL_WAIT.as_secs()
                                ),
                            });
                        }
                        tokio::time::sleep(REMOVAL_POLL).await;
                    }
                    _ => break,
                }
            }
        }
        // Background: with no pod left the object goes at once; its ReplicaSets (empty)
        // are the garbage collector's.
        let api = self.dynamic(kind, Some(&key.namespace));
        match self
            .call(
                Call::new("delete", kind.resource, key.to_string()),
                api.delete(&key.name, &DeleteParams::background()),
            )
            .await
        {
            Ok(_) | Err(PortError::NotFound { .. }) => {}
            Err(error) => return Err(error),
        }
        let deadline = tokio::time::Instant::now() + REMOVAL_WAIT;
        while let Some(now) = self.workload(key).await? {
            if now.kind().kind != kind.kind {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PortError::Unreachable {
                    cluster: self.name.clone(),
                    reason: format!(
                        "{key} is still there {} s after its deletion (finalizers: {:?})",
                        REMOVAL_WAIT.as_secs(),
                        now.metadata().finalizers.clone().unwrap_or_default()
                    ),
                });
            }
            tokio::time::sleep(REMOVAL_POLL).await;
        }
        Ok(())
    }

    /// The scheduler's message for the first pending pod `selector` picks.
    async fn pending_reason(
        &self,
        key: &WorkloadKey,
        selector: &LabelSelector,
    ) -> Result<Option<String>, PortError> {
        let selector_value = serde_json::to_value(selector).unwrap_or(Value::Null);
        let label_query = selector
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let pods = self
            .call(
                Call::new("list", "pods", format!("in namespace {}", key.namespace)),
                api.list(&ListParams::default().labels(&label_query)),
            )
            .await?;
        let reason = pods
            .items
            .iter()
            .filter(|pod| {
                let labels: BTreeMap<String, String> = pod.labels().clone();
                objects::label_selector_selects(Some(&selector_value), &labels)
            })
            .filter_map(|pod| pod.status.as_ref())
            .filter(|status| status.phase.as_deref() == Some("Pending"))
            .flat_map(|status| status.conditions.iter().flatten())
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
            .and_then(|c| c.message.clone().or_else(|| c.reason.clone()));
        Ok(reason)
    }
}

fn to_value<T: serde::Serialize>(cluster: &str, object: &T) -> Result<Value, PortError> {
    serde_json::to_value(object).map_err(|error| PortError::Rejected {
        cluster: cluster.to_owned(),
        what: "an object read from the API".to_owned(),
        reason: error.to_string(),
    })
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Not cordoned (`kubectl cordon` sets `spec.unschedulable`).
fn node_schedulable(node: &Node) -> bool {
    !node
        .spec
        .as_ref()
        .and_then(|spec| spec.unschedulable)
        .unwrap_or(false)
}

fn node_allocatable(node: &Node) -> Resources {
    let allocatable = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let read = |key: &str, parse: fn(&str) -> Result<u64, quantity::QuantityError>| {
        allocatable
            .and_then(|a| a.get(key))
            .and_then(|q| parse(&q.0).ok())
            .unwrap_or(0)
    };
    Resources {
        cpu_millis: read("cpu", quantity::cpu_millis),
        memory_bytes: read("memory", quantity::memory_bytes),
    }
}

fn pod_occupies_node(pod: &Pod) -> bool {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    scheduled && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn mark_of_meta(annotations: Option<&BTreeMap<String, String>>) -> Option<Mark> {
    annotations
        .and_then(|a| a.get(MARK_ANNOTATION))
        .map(|migration| Mark {
            migration: migration.clone(),
        })
}

/// A workload as read from the API.
enum Workload {
    Deployment(Deployment),
    StatefulSet(StatefulSet),
}

/// Where a workload's rollout stands by its status, in the same terms for both kinds.
struct Progress {
    desired: u32,
    generation: i64,
    observed: i64,
    available: u32,
    updated: u32,
    /// Whether as many replicas run the current template as the update strategy will make.
    updated_enough: bool,
    /// Why it will not become available without a change.
    failed: Option<String>,
}

impl Progress {
    fn done(&self) -> bool {
        self.failed.is_none()
            && self.observed >= self.generation
            && self.updated_enough
            && self.available == self.desired
    }
}

impl Workload {
    fn kind(&self) -> &'static Kind {
        match self {
            Workload::Deployment(_) => &DEPLOYMENT,
            Workload::StatefulSet(_) => &STATEFUL_SET,
        }
    }

    fn metadata(&self) -> &ObjectMeta {
        match self {
            Workload::Deployment(d) => &d.metadata,
            Workload::StatefulSet(s) => &s.metadata,
        }
    }

    /// Pods it has now (`status.replicas`), whatever their state.
    fn current_replicas(&self) -> u32 {
        let replicas = match self {
            Workload::Deployment(d) => d.status.as_ref().and_then(|s| s.replicas),
            Workload::StatefulSet(s) => s.status.as_ref().map(|s| s.replicas),
        };
        replicas_u32(replicas.unwrap_or(0))
    }

    fn desired_replicas(&self) -> u32 {
        let replicas = match self {
            Workload::Deployment(d) => d.spec.as_ref().and_then(|s| s.replicas),
            Workload::StatefulSet(s) => s.spec.as_ref().and_then(|s| s.replicas),
        };
        replicas_u32(replicas.unwrap_or(1))
    }

    fn selector(&self) -> Option<&LabelSelector> {
        match self {
            Workload::Deployment(d) => d.spec.as_ref().map(|s| &s.selector),
            Workload::StatefulSet(s) => s.spec.as_ref().map(|s| &s.selector),
        }
    }

    fn to_value(&self, cluster: &str) -> Result<Value, PortError> {
        match self {
            Workload::Deployment(d) => to_value(cluster, d),
            Workload::StatefulSet(s) => to_value(cluster, s),
        }
    }

    fn running(&self) -> Option<RunningWorkload> {
        match self {
            Workload::Deployment(d) => running_deployment(d),
            Workload::StatefulSet(s) => running_stateful_set(s),
        }
    }

    fn progress(&self) -> Progress {
        match self {
            Workload::Deployment(d) => deployment_progress(d),
            Workload::StatefulSet(s) => stateful_set_progress(s),
        }
    }
}

fn running_deployment(deployment: &Deployment) -> Option<RunningWorkload> {
    let spec = deployment.spec.as_ref();
    running_workload(
        &deployment.metadata,
        spec.and_then(|s| s.template.spec.as_ref()),
        spec.and_then(|s| s.replicas),
        deployment
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0),
        Vec::new(),
    )
}

fn running_stateful_set(stateful_set: &StatefulSet) -> Option<RunningWorkload> {
    let spec = stateful_set.spec.as_ref();
    running_workload(
        &stateful_set.metadata,
        spec.and_then(|s| s.template.spec.as_ref()),
        spec.and_then(|s| s.replicas),
        stateful_set_available(stateful_set),
        stateful_set_claims(stateful_set),
    )
}

/// The claims a StatefulSet's controller makes from its templates, one per template and
/// replica (`<template>-<set>-<ordinal>`), with the templates' requested storage.
fn stateful_set_claims(stateful_set: &StatefulSet) -> Vec<Claim> {
    let Some(spec) = stateful_set.spec.as_ref() else {
        return Vec::new();
    };
    let set = stateful_set.metadata.name.as_deref().unwrap_or_default();
    let replicas = replicas_u32(spec.replicas.unwrap_or(1));
    let mut claims = Vec::new();
    for template in spec.volume_claim_templates.iter().flatten() {
        let Some(name) = template.metadata.name.as_deref() else {
            continue;
        };
        let size_bytes = template
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| crate::quantity::memory_bytes(&q.0).ok());
        for ordinal in 0..replicas {
            claims.push(Claim {
                name: format!("{name}-{set}-{ordinal}"),
                size_bytes,
            });
        }
    }
    claims
}

fn running_workload(
    metadata: &ObjectMeta,
    pod_spec: Option<&PodSpec>,
    replicas: Option<i32>,
    available: i32,
    mut claims: Vec<Claim>,
) -> Option<RunningWorkload> {
    let namespace = metadata.namespace.as_deref()?;
    let name = metadata.name.as_deref()?;
    let pod_spec = pod_spec
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    // Claims mounted by name (a Deployment's, or a StatefulSet's shared one); their size
    // would take a read of each claim, which the census does not make.
    for claim in objects::references(&pod_spec).persistent_volume_claims {
        if !claims.iter().any(|c| c.name == claim) {
            claims.push(Claim {
                name: claim,
                size_bytes: None,
            });
        }
    }
    Some(RunningWorkload {
        key: WorkloadKey::new(namespace, name),
        labels: metadata.labels.clone().unwrap_or_default(),
        replicas: replicas_u32(replicas.unwrap_or(1)),
        available_replicas: replicas_u32(available),
        requests: objects::template_requests(&pod_spec),
        mark: mark_of_meta(metadata.annotations.as_ref()),
        claims,
    })
}

/// Ready replicas that have also been ready for `minReadySeconds`; `availableReplicas`
/// alone where the API server reports it (every supported version does), ready ones
/// otherwise.
fn stateful_set_available(stateful_set: &StatefulSet) -> i32 {
    let status = stateful_set.status.as_ref();
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    status
        .and_then(|s| s.available_replicas)
        .map_or(ready, |available| available.min(ready))
}

fn deployment_progress(deployment: &Deployment) -> Progress {
    let desired = replicas_u32(
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1),
    );
    let status = deployment.status.as_ref();
    let updated = replicas_u32(status.and_then(|s| s.updated_replicas).unwrap_or(0));
    let failed = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
        .map(|c| {
            c.message
                .clone()
                .unwrap_or_else(|| "progress deadline exceeded".to_owned())
        });
    Progress {
        desired,
        generation: deployment.metadata.generation.unwrap_or(0),
        observed: status.and_then(|s| s.observed_generation).unwrap_or(0),
        available: replicas_u32(status.and_then(|s| s.available_replicas).unwrap_or(0)),
        updated,
        updated_enough: updated == desired,
        failed,
    }
}

/// A StatefulSet has no progress deadline, so its rollout never reports `Failed`.
fn stateful_set_progress(stateful_set: &StatefulSet) -> Progress {
    let spec = stateful_set.spec.as_ref();
    let desired = replicas_u32(spec.and_then(|s| s.replicas).unwrap_or(1));
    let status = stateful_set.status.as_ref();
    let updated = replicas_u32(status.and_then(|s| s.updated_replicas).unwrap_or(0));
    // As `kubectl rollout status` counts it: a partitioned rolling update replaces only the
    // replicas at or above the partition, and `OnDelete` replaces none until someone
    // deletes their pods. Waiting for all of them would never end.
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let to_update = match strategy.and_then(|s| s.type_.as_deref()) {
        Some("OnDelete") => 0,
        _ => {
            let partition = strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0);
            desired.saturating_sub(replicas_u32(partition))
        }
    };
    Progress {
        desired,
        generation: stateful_set.metadata.generation.unwrap_or(0),
        observed: status.and_then(|s| s.observed_generation).unwrap_or(0),
        available: replicas_u32(stateful_set_available(stateful_set)),
        updated,
        updated_enough: updated >= to_update,
        failed: None,
    }
}

fn replicas_u32(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

#[async_trait]
impl ClusterPort for KubeCluster {
    fn name(&self) -> &str {
        &self.name
    }

    async fn inventory(&self) -> Result<Inventory, PortError> {
        self.wait_ready().await?;
        // A store keeps its last contents while its watch fails: answering from it would
        // present stale capacity as current.
        if let Some(error) = self.watch_error() {
            return Err(error);
        }
        let nodes = self.nodes.state();
        let ready: Vec<_> = nodes.iter().filter(|n| node_ready(n)).collect();
        // A cordoned node takes no new pods: it is no room for a workload moving here
        // (though it still counts as healthy).
        let allocatable = ready
            .iter()
            .filter(|n| node_schedulable(n))
            .map(|n| node_allocatable(n))
            .fold(Resources::default(), Resources::plus);
        let requested = self
            .pods
            .state()
            .iter()
            .filter(|pod| pod_occupies_node(pod))
            .filter_map(|pod| pod.spec.as_ref())
            .filter_map(|spec| serde_json::to_value(spec).ok())
            .map(|spec| objects::pod_requests(&spec))
            .fold(Resources::default(), Resources::plus);
        // One being deleted is on its way out; its pods still count in `requested`.
        let deployments: Vec<RunningWorkload> = self
            .deployments
            .iter()
            .flat_map(Store::state)
            .filter(|d| d.metadata.deletion_timestamp.is_none())
            .filter_map(|d| running_deployment(&d))
            .collect();
        // A key names the Deployment when both kinds have it, as in `export`.
        let taken: BTreeSet<WorkloadKey> = deployments.iter().map(|w| w.key.clone()).collect();
        let stateful_sets = self
            .stateful_sets
            .iter()
            .flat_map(Store::state)
            .filter(|s| s.metadata.deletion_timestamp.is_none())
            .filter_map(|s| running_stateful_set(&s))
            .filter(|w| !taken.contains(&w.key));
        let labelled = self.namespace_label.as_ref().map(NamespaceLabel::labelled);
        let mut workloads: Vec<RunningWorkload> = deployments
            .into_iter()
            .chain(stateful_sets)
            .filter(|w| {
                labelled
                    .as_ref()
                    .is_none_or(|names| names.contains(&w.key.namespace))
            })
            .collect();
        workloads.sort_by(|a, b| a.key.cmp(&b.key));
        let health = if ready.len() == nodes.len() {
            Health::Ready
        } else {
            Health::Degraded
        };
        Ok(Inventory {
            health,
            nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            allocatable,
            requested,
            workloads,
        })
    }

    /// The Deployment of `key`, or else its StatefulSet (a Deployment of the same name
    /// wins), with its dependents. A StatefulSet keeps its `volumeClaimTemplates`; the
    /// claims its controller made from them are not carried, and no claim's data moves.
    async fn export(&self, key: &WorkloadKey) -> Result<ExportedWorkload, PortError> {
        let workload = self
            .workload(key)
            .await?
            .ok_or_else(|| self.not_found(key))?;
        let running = workload.running().ok_or_else(|| self.not_found(key))?;
        let workload = workload.to_value(&self.name)?;
        let namespace: Api<Namespace> = Api::all(self.client.clone());
        let namespace = self
            .call(
                Call::new("get", "namespaces", key.namespace.clone()),
                namespace.get(&key.namespace),
            )
            .await?;
        let (before, after) = self.dependents(key, &workload).await?;
        let mut objects = Vec::with_capacity(before.len() + after.len() + 2);
        objects.push(to_value(&self.name, &namespace)?);
        objects.extend(before);
        objects.push(workload);
        objects.extend(after);
        for object in &mut objects {
            // This cluster's overrides stay here: the next target gets the workload as it
            // was before them, and its own.
            undo_recorded(object);
            objects::clean(object);
        }
        Ok(ExportedWorkload {
            key: key.clone(),
            replicas: running.replicas,
            requests: running.requests,
            labels: running.labels,
            objects,
            claims: running.claims,
        })
    }

    /// Each object gets this cluster's [`TargetOverrides`], then the mark, before it is
    /// sent.
    async fn apply(&self, exported: &ExportedWorkload, mark: &Mark) -> Result<(), PortError> {
        let key = &exported.key;
        let rejected = |reason: String| PortError::Rejected {
            cluster: self.name.clone(),
            what: format!("apply of {key}"),
            reason,
        };
        // Checked before anything is written, so that a refused apply leaves no half of
        // the graph behind.
        let mut plan: Vec<(&'static Kind, Value)> = Vec::new();
        for object in &exported.objects {
            let kind_name = object
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let kind = kind_of(kind_name)
                .ok_or_else(|| rejected(format!("kind {kind_name:?} is not one Ferry carries")))?;
            let name = object.pointer("/metadata/name").and_then(Value::as_str);
            if name.is_none_or(str::is_empty) {
                return Err(rejected(format!("a {kind_name} without a name")));
            }
            let mut object = object.clone();
            if kind.kind == "Namespace" {
                if name != Some(key.namespace.as_str()) {
                    return Err(rejected(format!(
                        "namespace {name:?} is not the workload's"
                    )));
                }
            } else {
                match object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                {
                    None => {
                        if let Some(metadata) =
                            object.get_mut("metadata").and_then(Value::as_object_mut)
                        {
                            metadata.insert(
                                "namespace".to_owned(),
                                Value::String(key.namespace.clone()),
                            );
                        }
                    }
                    Some(namespace) if namespace == key.namespace => {}
                    Some(other) => {
                        return Err(rejected(format!(
                            "{kind_name} {name:?} is in namespace {other}, not the workload's"
                        )));
                    }
                }
            }
            if kind.is_workload()
                && name == Some(key.name.as_str())
                && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
            {
                spec.insert("replicas".to_owned(), Value::from(exported.replicas));
            }
            apply_recorded(&self.overrides, &mut object);
            objects::set_mark(&mut object, &mark.migration);
            if kind.kind == "StatefulSet" {
                // The claims its controller makes here carry the mark too, so that a
                // rollback removes them (they are billed disks on a real cloud).
                objects::mark_claim_templates(&mut object, &mark.migration);
            }
            plan.push((kind, object));
        }
        if !plan.iter().any(|(kind, o)| {
            kind.is_workload()
                && o.pointer("/metadata/name").and_then(Value::as_str) == Some(key.name.as_str())
        }) {
            return Err(rejected(
                "the objects hold no Deployment or StatefulSet of that name".to_owned(),
            ));
        }

        // Ownership: an object of the same name that carries no mark is a user's, and
        // Ferry never takes one over by itself (a shared ConfigMap included). Every such
        // object is named at once, before anything is written.
        let mut namespace_exists = false;
        let mut unmarked = Vec::new();
        // Objects another migration marked (a drained copy a move back takes over): the
        // apply is forced on them, since every field Ferry sends is Ferry's to set there.
        let mut taken_over = BTreeSet::new();
        let mut as_they_are = BTreeSet::new();
        for (index, (kind, object)) in plan.iter_mut().enumerate() {
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let namespace = (kind.kind != "Namespace").then_some(key.namespace.as_str());
            let api = self.dynamic(kind, namespace);
            let what = format!("{}/{name}", namespace.unwrap_or(""));
            let existing = self
                .call(Call::new("get", kind.resource, what), api.get_opt(&name))
                .await?;
            let Some(existing) = existing else { continue };
            if kind.kind == "Namespace" {
                namespace_exists = true;
                continue;
            }
            match existing.annotations().get(MARK_ANNOTATION) {
                // A user's ConfigMap, Secret or ServiceAccount that says the same (one a
                // drain left because another workload uses it) is used as it is.
                None if objects::same_content(object, &existing.data) => {
                    as_they_are.insert(index);
                }
                None => unmarked.push(format!("{} {name}", kind.kind)),
                Some(holder) if holder != &mark.migration => {
                    taken_over.insert(index);
                    if kind.kind == "StatefulSet" {
                        // A StatefulSet's claim templates cannot change once it exists:
                        // the one taken over keeps its templates' metadata (and mark).
                        keep_template_metadata(object, &existing.data);
                    }
                }
                Some(_) => {}
            }
        }
        if !unmarked.is_empty() {
            return Err(PortError::Conflict {
                cluster: self.name.clone(),
                reason: format!(
                    "in namespace {}, {} already exist{} here without a Ferry mark: {}. Ferry does not overwrite what it does not own; delete {} on {} (or move them out of the way) and ask again",
                    key.namespace,
                    unmarked.len(),
                    if unmarked.len() == 1 { "s" } else { "" },
                    unmarked.join(", "),
                    if unmarked.len() == 1 { "it" } else { "them" },
                    self.name,
                ),
            });
        }

        for (index, (kind, object)) in plan.iter().enumerate() {
            if kind.kind == "Namespace" {
                // An existing namespace is left alone: it may hold other tenants, and it is
                // never Ferry's to change or delete.
                if !namespace_exists {
                    self.server_side_apply(kind, None, object, false).await?;
                }
                continue;
            }
            if as_they_are.contains(&index) {
                continue;
            }
            let force = taken_over.contains(&index);
            self.server_side_apply(kind, Some(&key.namespace), object, force)
                .await?;
        }
        if !plan.iter().any(|(kind, _)| kind.kind == "Namespace") {
            // Exports always carry it, but a hand-made graph may not: create it anyway.
            let api: Api<Namespace> = Api::all(self.client.clone());
            let exists = self
                .call(
                    Call::new("get", "namespaces", key.namespace.clone()),
                    api.get_opt(&key.namespace),
                )
                .await?
                .is_some();
            if !exists {
                let mut namespace = serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": key.namespace},
                });
                apply_overrides(&self.overrides, &mut namespace);
                objects::set_mark(&mut namespace, &mark.migration);
                if let Some(kind) = kind_of("Namespace") {
                    self.server_side_apply(kind, None, &namespace, false)
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn rollout(&self, key: &WorkloadKey) -> Result<Rollout, PortError> {
        let workload = self
            .workload(key)
            .await?
            .ok_or_else(|| self.not_found(key))?;
        let progress = workload.progress();
        if progress.done() {
            return Ok(Rollout::Available {
                replicas: progress.desired,
            });
        }
        let Progress {
            desired,
            generation,
            observed,
            available,
            updated,
            failed,
            ..
        } = progress;
        if let Some(reason) = failed {
            return Ok(Rollout::Failed { reason });
        }
        let mut message = if observed < generation {
            format!(
                "waiting for the {} controller to observe generation {generation}",
                workload.kind().kind
            )
        } else {
            format!("{available} of {desired} replicas available, {updated} updated")
        };
        if let Some(selector) = workload.selector()
            && let Some(reason) = self.pending_reason(key, selector).await?
        {
            message.push_str("; pods pending: ");
            message.push_str(&reason);
        }
        Ok(Rollout::Progressing {
            desired,
            available,
            message,
        })
    }

    /// Patches the Deployment of `key`, or else its StatefulSet (the same choice as
    /// `export`), without reading it first.
    async fn scale(
        &self,
        key: &WorkloadKey,
        replicas: u32,
        mark: Option<&Mark>,
    ) -> Result<(), PortError> {
        let mut patch = serde_json::json!({"spec": {"replicas": replicas}});
        if let Some(mark) = mark {
            objects::set_mark(&mut patch, &mark.migration);
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        for kind in WORKLOAD_KINDS {
            let api = self.dynamic(kind, Some(&key.namespace));
            match self
                .call(
                    Call::new("patch", kind.resource, key.to_string()),
                    api.patch(&key.name, &params, &Patch::Merge(&patch)),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(PortError::NotFound { .. }) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(self.not_found(key))
    }

    /// Scales to zero with the mark (as `scale`), then adopts each dependent that is
    /// there, carries no mark of this migration, and no other workload in the namespace
    /// uses (its pods name it, a Service or PDB selects them, an HPA scales it).
    async fn drain(
        &self,
        key: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Drained, PortError> {
        self.scale(key, 0, Some(mark)).await?;
        let kind = self.workload(key).await?.map(|w| w.kind().kind);
        let users = self.other_workloads(key, kind).await?;
        let mut drained = Drained::default();
        for object in dependents {
            let Some(kind) = kind_of(&object.kind) else {
                drained.kept.push(Kept {
                    object: object.clone(),
                    reason: "not a kind Ferry carries".to_owned(),
                });
                continue;
            };
            let api = self.dynamic(kind, Some(&key.namespace));
            let what = format!("{}/{}", key.namespace, object.name);
            let Some(existing) = self
                .call(
                    Call::new("get", kind.resource, what.clone()),
                    api.get_opt(&object.name),
                )
                .await?
            else {
                continue;
            };
            if let Some(user) = users
                .iter()
                .find(|other| other.uses(kind.kind, &object.name, &existing.data))
            {
                drained.kept.push(Kept {
                    object: object.clone(),
                    reason: format!("{} also uses it", user.name),
                });
                continue;
            }
            if existing.annotations().get(MARK_ANNOTATION) != Some(&mark.migration) {
                let mut patch = json!({});
                objects::set_mark(&mut patch, &mark.migration);
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_owned()),
                    ..PatchParams::default()
                };
                self.call(
                    Call::new("patch", kind.resource, what),
                    api.patch(&object.name, &params, &Patch::Merge(&patch)),
                )
                .await?;
            }
            drained.adopted.push(object.clone());
        }
        Ok(drained)
    }

    async fn delete(
        &self,
        key: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Removal, PortError> {
        let mut refs: BTreeSet<ObjectRef> = dependents.iter().cloned().collect();
        let workload = self.workload(key).await?;
        let fate = match &workload {
            None => WorkloadFate::Absent,
            Some(workload) => {
                let held = mark_of_meta(workload.metadata().annotations.as_ref());
                if held.as_ref() == Some(mark) {
                    // What the workload names now counts too (a record from before
                    // migrations listed their dependents names none).
                    let value = workload.to_value(&self.name)?;
                    let (before, after) = self.dependents(key, &value).await?;
                    let running = workload.running().map(|r| r.claims).unwrap_or_default();
                    let found: Vec<Value> = before.into_iter().chain(after).collect();
                    refs.extend(ferry_ports::dependents_of(key, &found, &running));
                    self.remove_workload(key, workload).await?;
                    WorkloadFate::Deleted
                } else {
                    WorkloadFate::Left { holder: held }
                }
            }
        };
        let mut removal = Removal {
            workload: fate,
            deleted: Vec::new(),
            kept: Vec::new(),
        };
        // Claims last: they hold data, and a pod that still mounts one keeps it anyway.
        let mut ordered: Vec<ObjectRef> = refs.into_iter().collect();
        ordered.sort_by_key(|r| r.kind == "PersistentVolumeClaim");
        for object in ordered {
            let Some(kind) = kind_of(&object.kind) else {
                removal.kept.push(Kept {
                    object,
                    reason: "not a kind Ferry carries".to_owned(),
                });
                continue;
            };
            let api = self.dynamic(kind, Some(&key.namespace));
            let what = format!("{}/{}", key.namespace, object.name);
            let existing = self
                .call(
                    Call::new("get", kind.resource, what),
                    api.get_opt(&object.name),
                )
                .await?;
            match existing {
                None => removal.deleted.push(object),
                Some(existing) => match existing.annotations().get(MARK_ANNOTATION) {
                    Some(holder) if holder == &mark.migration => {
                        self.delete_object(kind, &key.namespace, &object.name)
                            .await?;
                        removal.deleted.push(object);
                    }
                    Some(other) => removal.kept.push(Kept {
                        object,
                        reason: format!("migration {other}'s now"),
                    }),
                    None => removal.kept.push(Kept {
                        object,
                        reason: "it carries no Ferry mark".to_owned(),
                    }),
                },
            }
        }
        Ok(removal)
    }

    async fn claims(
        &self,
        namespace: &str,
        names: &[String],
    ) -> Result<Vec<ExistingClaim>, PortError> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let mut existing = Vec::new();
        for name in names {
            let claim = self
                .call(
                    Call::new(
                        "get",
                        "persistentvolumeclaims",
                        format!("{namespace}/{name}"),
                    ),
                    api.get_opt(name),
                )
                .await?;
            if let Some(claim) = claim {
                existing.push(ExistingClaim {
                    name: name.clone(),
                    created_at: claim.metadata.creation_timestamp.map(|t| t.0.to_string()),
                    mark: mark_of_meta(claim.metadata.annotations.as_ref()),
                });
            }
        }
        Ok(existing)
    }
}

/// Gives each claim template of `object` the metadata of the template of the same name in
/// `existing` (a StatefulSet already on the cluster), whose templates cannot change.
fn keep_template_metadata(object: &mut Value, existing: &Value) {
    let Some(theirs) = existing
        .pointer("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
    else {
        return;
    };
    let Some(ours) = object
        .pointer_mut("/spec/volumeClaimTemplates")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for template in ours {
        let name = template.pointer("/metadata/name").and_then(Value::as_str);
        let metadata = theirs
            .iter()
            .find(|t| t.pointer("/metadata/name").and_then(Value::as_str) == name)
            .and_then(|t| t.get("metadata"))
            .cloned();
        if let (Some(metadata), Some(template)) = (metadata, template.as_object_mut()) {
            template.insert("metadata".to_owned(), metadata);
        }
    }
}

/// Another workload in a namespace, as far as whether it uses an object goes.
struct OtherWorkload {
    /// `Deployment shop/api`, for messages.
    name: String,
    kind: &'static str,
    workload_name: String,
    references: objects::References,
    claims: BTreeSet<String>,
    template_labels: BTreeMap<String, String>,
}

impl OtherWorkload {
    /// What a workload read from the API uses: its pod template's references, and its
    /// claims as the inventory names them (a StatefulSet's per replica).
    fn of(workload: &Workload) -> Option<OtherWorkload> {
        let running = workload.running()?;
        let value = workload.to_value("").ok()?;
        let pod_spec = value
            .pointer("/spec/template/spec")
            .cloned()
            .unwrap_or(Value::Null);
        Some(OtherWorkload {
            name: format!("{} {}", workload.kind().kind, running.key),
            kind: workload.kind().kind,
            workload_name: running.key.name,
            references: objects::references(&pod_spec),
            claims: running.claims.into_iter().map(|c| c.name).collect(),
            template_labels: value
                .pointer("/spec/template/metadata/labels")
                .cloned()
                .and_then(|l| serde_json::from_value(l).ok())
                .unwrap_or_default(),
        })
    }

    /// Whether this workload uses the object `kind` `name` (its current state `object`).
    fn uses(&self, kind: &str, name: &str, object: &Value) -> bool {
        match kind {
            "ServiceAccount" => self.references.service_account.as_deref() == Some(name),
            "ConfigMap" => self.references.config_maps.contains(name),
            "Secret" => self.references.secrets.contains(name),
            "PersistentVolumeClaim" => self.claims.contains(name),
            "Service" => {
                objects::service_selects(object.pointer("/spec/selector"), &self.template_labels)
            }
            "PodDisruptionBudget" => objects::label_selector_selects(
                object.pointer("/spec/selector"),
                &self.template_labels,
            ),
            "HorizontalPodAutoscaler" => {
                let target = object.pointer("/spec/scaleTargetRef");
                target.and_then(|t| t.get("kind")).and_then(Value::as_str) == Some(self.kind)
                    && target.and_then(|t| t.get("name")).and_then(Value::as_str)
                        == Some(self.workload_name.as_str())
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stateful_sets_rollout_is_done_when_its_strategy_has_updated_what_it_will() {
        let stateful_set = |strategy: &Value, status: &Value| -> StatefulSet {
            serde_json::from_value(json!({
                "metadata": {"name": "pg", "namespace": "shop", "generation": 2},
                "spec": {"replicas": 3, "serviceName": "pg", "updateStrategy": strategy,
                         "selector": {"matchLabels": {"app": "pg"}},
                         "template": {"metadata": {"labels": {"app": "pg"}}}},
                "status": status,
            }))
            .expect("a valid StatefulSet")
        };
        let rolling = json!({"type": "RollingUpdate"});
        let partitioned = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}});
        let on_delete = json!({"type": "OnDelete"});
        let status = |observed: i64, ready: i32, available: Option<i32>, updated: i32| {
            json!({"replicas": 3, "observedGeneration": observed, "readyReplicas": ready,
                   "availableReplicas": available, "updatedReplicas": updated})
        };
        // (strategy, status at generation 2, done)
        let cases = [
            (&rolling, status(2, 3, Some(3), 3), true),
            (&rolling, status(1, 3, Some(3), 3), false),
            (&rolling, status(2, 3, Some(3), 2), false),
            (&rolling, status(2, 2, Some(2), 3), false),
            // Ready, but not yet for `minReadySeconds`.
            (&rolling, status(2, 3, Some(2), 3), false),
            // An API server that does not report availableReplicas: ready ones count.
            (&rolling, status(2, 3, None, 3), true),
            // Only the ordinals at or above the partition are replaced.
            (&partitioned, status(2, 3, Some(3), 1), true),
            (&partitioned, status(2, 3, Some(3), 0), false),
            // OnDelete replaces nothing by itself.
            (&on_delete, status(2, 3, Some(3), 0), true),
            (&on_delete, status(2, 1, Some(1), 0), false),
        ];
        for (strategy, status, done) in cases {
            let progress = stateful_set_progress(&stateful_set(strategy, &status));
            assert_eq!(progress.done(), done, "{strategy} {status}");
        }
    }
}
