//! The Kubernetes adapter: one member cluster behind [`ferry_ports::ClusterPort`], through
//! kube-rs.
//!
//! [`KubeCluster`] keeps an inventory from watches (kube-runtime reflectors over Nodes,
//! Pods and the managed namespaces' Deployments, started on construction and stopped on
//! drop), exports a Deployment with the objects it uses in its namespace (ServiceAccount,
//! ConfigMaps, Secrets, Services selecting it, HPAs and PDBs targeting it) cleaned for
//! another cluster, applies such a graph by server-side apply, reads a rollout from the
//! Deployment's status and its pending pods' scheduler message, scales, and deletes what
//! Ferry owns. [`CLUSTER_ROLE_YAML`] (`rbac/ferry-clusterrole.yaml`) lists exactly the
//! verbs it uses.
//!
//! Invariants:
//! - The client comes from a named kubeconfig file (and context), never from
//!   `Client::try_default()`: a broker running in a pod must not act on its own cluster
//!   by accident.
//! - Every write uses the field manager [`FIELD_MANAGER`] (`ferry`) and is never forced:
//!   a field another manager holds yields [`ferry_ports::PortError::Conflict`] with the
//!   API server's message.
//! - Ferry marks what it creates or drains with the annotation [`MARK_ANNOTATION`]
//!   (`ferry.dev/migration: <id>`). It never applies over an object of the same name that
//!   carries no mark (a user's), and deletes only objects carrying exactly the mark given.
//!   Namespaces are created when missing but never changed or deleted.
//! - Secret values cross the port in memory only; nothing here logs object contents (logs
//!   name objects, never their data).
//! - Every request gives up after 30 s; a 403 names the verb and resource to grant.
//!
//! Not built yet:
//! - Only Deployments are workloads (no StatefulSets, Jobs, DaemonSets); PVCs are
//!   accepted by `apply` but not exported (their data would not move anyway).
//! - Objects referenced from outside the namespace, Ingresses, NetworkPolicies, Roles and
//!   RoleBindings are not carried.
//! - Per-replica requests sum the containers only (no init containers, no overhead), as
//!   the issue defines them; `requested` on the nodes does count both.
//! - `scale` marks only the Deployment, so deleting a drained source leaves its unmarked
//!   ConfigMaps, Secrets, Services, HPAs and PDBs in place.
//! - `apply` sets `spec.replicas`; when an HPA on the target has since changed it, the
//!   next apply is a Conflict rather than a hand-over to the HPA.
//! - The managed-namespace list limits the inventory only, not export/apply/delete.
//! - A failed apply is not rolled back: the objects applied before the failure stay,
//!   marked, and a repeated apply (or delete with the mark) takes them up.

mod cluster;
mod errors;
pub mod objects;
pub mod quantity;

pub use cluster::{FIELD_MANAGER, KubeCluster};
pub use objects::MARK_ANNOTATION;

/// The ClusterRole the adapter needs, with exactly the verbs it uses.
pub const CLUSTER_ROLE_YAML: &str = include_str!("../rbac/ferry-clusterrole.yaml");
