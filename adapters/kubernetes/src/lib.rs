//! The Kubernetes adapter: one member cluster behind [`ferry_ports::ClusterPort`], through
//! kube-rs.
//!
//! [`KubeCluster`] keeps an inventory from watches (kube-runtime reflectors over Nodes,
//! Pods and the managed namespaces' Deployments and StatefulSets, started on construction
//! and stopped on drop), exports a workload — a Deployment, or a StatefulSet when no
//! Deployment has that `namespace/name` — with the objects it uses in its namespace
//! (ServiceAccount, ConfigMaps, Secrets, the PersistentVolumeClaims its pods name,
//! Services selecting it and a StatefulSet's governing Service, HPAs targeting it, PDBs
//! selecting it) cleaned for another cluster, applies such a graph by server-side apply
//! with the target's [`TargetOverrides`], reads a rollout from the workload's status and
//! its pending pods' scheduler message, scales, drains (scale to zero, and adopt the
//! dependents no other workload uses), and deletes what Ferry owns.
//! [`CLUSTER_ROLE_YAML`] (`deploy/ferry-clusterrole.yaml` at the repository root) lists
//! exactly the verbs it uses.
//!
//! Invariants:
//! - The client comes from [`Credentials`]: a named kubeconfig file (and context), or an
//!   endpoint with its CA and a [`BearerToken`] read on every request (so a refreshed
//!   token takes effect without a new client, watches included) — never from
//!   `Client::try_default()`: a broker running in a pod must not act on its own cluster
//!   by accident. Credentials print without their token.
//! - Every write uses the field manager [`FIELD_MANAGER`] (`ferry`) and is forced only
//!   over an object another migration marked (a drained copy a move back takes over):
//!   anywhere else a field another manager holds yields
//!   [`ferry_ports::PortError::Conflict`] with the API server's message.
//! - Ferry marks what it creates or drains with the annotation [`MARK_ANNOTATION`]
//!   (`ferry.dev/migration: <id>`). It never applies over an object of the same name that
//!   carries no mark (a user's) — every such object is named at once, before any write —
//!   except a user's ConfigMap, Secret or ServiceAccount with the same content, used as
//!   it is. It deletes only objects carrying exactly the mark given; a workload is scaled
//!   to zero first, and `delete` returns once it is gone. Namespaces are created when
//!   missing but never changed or deleted.
//! - A key names the Deployment when a Deployment and a StatefulSet share it, in the
//!   inventory, `export`, `rollout`, `scale` and `delete` alike.
//! - Data does not move: a claim is exported as a new request for storage (without the
//!   source's volume, status and binding annotations), and the target provisions or binds
//!   an empty volume for it. A StatefulSet's `volumeClaimTemplates` stay inside it, marked,
//!   so that the claims its controller makes on the target carry the mark; the claims it
//!   made on the source are not carried, and the drain adopts them.
//! - Overrides belong to the target: `apply` rewrites each object with the target's
//!   [`TargetOverrides`] (registries, storage classes, metadata labels and annotations),
//!   records what it changed in the object ([`OVERRIDDEN_ANNOTATION`]), then sets the
//!   mark, which no override can replace; `export` undoes the record, so the next target
//!   gets the workload in its own form. Selectors and pod templates keep their labels.
//! - Secret values cross the port in memory only; nothing here logs object contents (logs
//!   name objects, never their data).
//! - Every request gives up after 30 s; a 403 names the verb and resource to grant.
//!   Retries belong to the caller ([`ferry_ports::Retrying`] in the broker), so that a
//!   migration step decides how long an outage may last.
//!
//! Not built yet:
//! - Deployments and StatefulSets are the only workloads (no Jobs, CronJobs, DaemonSets).
//! - Objects referenced from outside the namespace, Ingresses, NetworkPolicies, Roles,
//!   RoleBindings and StorageClasses are not carried; a claim's class must exist on the
//!   target (or be mapped there by [`TargetOverrides::storage_classes`]).
//! - Per-replica requests sum the containers only (no init containers, no overhead), as
//!   the issue defines them; `requested` on the nodes does count both.
//! - A dependent another workload uses is kept on the source by the drain (and stays
//!   there, the user's); only a ConfigMap, Secret or ServiceAccount with the same content
//!   is then reused by a move back, any other kind refuses it.
//! - `apply` sets `spec.replicas`; when an HPA on the target has since changed it, the
//!   next apply is a Conflict rather than a hand-over to the HPA.
//! - The managed-namespace list and the namespace label
//!   ([`KubeCluster::with_namespace_label`]; both together mean both must hold) limit the
//!   inventory only, not export/apply/delete.
//! - A failed apply is not rolled back by the adapter: the objects applied before the
//!   failure stay, marked, and a repeated apply (or a delete with the mark and the
//!   migration's record of them) takes them up.

mod cluster;
mod connection;
mod errors;
pub mod objects;
mod overrides;
pub mod quantity;

pub use cluster::{FIELD_MANAGER, KubeCluster};
pub use connection::{BearerToken, Credentials};
pub use objects::MARK_ANNOTATION;
pub use overrides::{OVERRIDDEN_ANNOTATION, TargetOverrides, apply_overrides};

/// The ClusterRole the adapter needs, with exactly the verbs it uses.
pub const CLUSTER_ROLE_YAML: &str = include_str!("../../../deploy/ferry-clusterrole.yaml");
