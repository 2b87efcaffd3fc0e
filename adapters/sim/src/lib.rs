//! Simulated clusters: the `sim` adapter of the ports ([`ClusterPort`], [`Provisioner`],
//! [`PriceSource`]).
//!
//! # What it is for
//!
//! - `ferry demo`: a newcomer's first run, on a laptop with no cluster, has to behave like
//!   the real thing — rollouts take time, replicas that do not fit stay pending with the
//!   scheduler's reason, clusters fail in the ways real ones do.
//! - Scale tests of the broker: 500 clusters and 50,000 workloads in one process, cheap
//!   enough to run often (`cargo run --release -p ferry-adapter-sim --example scale`).
//!
//! It is never a stand-in where a real component can run in a test: adapters are proven
//! against real API servers (`docs/testing.md`). The sim imitates, for the broker's sake,
//! what those servers do; it proves nothing about them.
//!
//! # The model
//!
//! - **Nodes and packing.** A cluster has identical nodes. Each replica needs its requests
//!   on one node and goes, among the nodes where it fits, to the one with the most free
//!   cpu and memory (kube-scheduler's default, LeastAllocated), so load spreads as on a
//!   real cluster. A replica that fits nowhere stays pending, and `rollout` says why the
//!   way the scheduler does (`"2 of 3 replicas pending: 0/4 nodes have 2 cpu and 1Gi
//!   memory free (4 insufficient cpu)"`). Pending replicas are placed, first come first
//!   served, as soon as room appears (a scale-down, a delete, a resize that adds nodes).
//! - **Workloads** are Deployments: `export` returns a cleaned Namespace, Deployment and
//!   Service; `apply` stores what it is given (checked as an API server would) and runs
//!   it with the replicas, requests and labels of the [`ExportedWorkload`].
//! - **Time.** A placed replica becomes available `rollout_time` after the apply, the
//!   scale-up or its late placement. Nothing runs in the background: every call computes
//!   the state at `tokio::time::Instant::now()`, so a paused test clock drives it and idle
//!   clusters cost nothing. A rollout that makes no progress for its progress deadline
//!   is `Failed` ("progress deadline exceeded"), as a Deployment would be; that includes
//!   replicas pending for that long, as on a real cluster.
//! - **Ownership.** `apply` and `scale` with a mark make the workload Ferry's; `delete`
//!   removes only a workload carrying exactly its mark, and refuses any other with
//!   [`PortError::Conflict`] rather than succeeding silently: a delete of what Ferry does
//!   not own is a bug upstream. `apply` over a workload without a mark (a user's, under
//!   the same name) is a `Conflict` too.
//! - **Faults**, switched at runtime ([`Fault`]): unreachable, apply rejected, rollouts
//!   that never become available, slow API.
//! - **Determinism.** Every collection is ordered (maps by key, queues by arrival), so the
//!   same calls give the same answers, in the same order, every run.
//!
//! [`ClusterPort`]: ferry_ports::ClusterPort
//! [`Provisioner`]: ferry_ports::Provisioner
//! [`PriceSource`]: ferry_ports::PriceSource
//! [`ExportedWorkload`]: ferry_ports::ExportedWorkload
//! [`PortError::Conflict`]: ferry_ports::PortError::Conflict

mod cluster;
mod objects;
mod prices;
mod provisioner;
mod quantity;

pub use cluster::{Fault, FaultKind, MAX_NODES, MAX_REPLICAS, SimCluster, SimClusterSpec};
pub use prices::SimPrices;
pub use provisioner::SimProvisioner;
pub use quantity::{format_cpu, format_memory};
