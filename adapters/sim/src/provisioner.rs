//! Capacity for simulated clusters: node-count changes that take time, like a node-pool
//! resize or a Heat stack update.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use ferry_ports::{ClusterPort, Operation, PortError, Provisioner};
use tokio::time::Instant;

use crate::cluster::{MAX_NODES, SimCluster, after};

/// The name errors about operations give as their "cluster": operations belong to the
/// provider, not to one cluster.
const PROVIDER: &str = "sim provider";

#[derive(Debug)]
struct Resize {
    cluster: String,
    from: u32,
    to: u32,
    started: Instant,
    done_at: Instant,
}

#[derive(Debug, Default)]
struct Operations {
    next: u64,
    by_id: BTreeMap<String, Resize>,
}

/// Resizes a fixed set of [`SimCluster`]s. A resize is `Running` for the configured delay,
/// then `Done`, and the cluster has its new node count from that instant on (new nodes
/// join when the operation completes, as with a real node pool). Clones share the
/// operations.
#[derive(Clone, Debug)]
pub struct SimProvisioner {
    clusters: Arc<BTreeMap<String, SimCluster>>,
    delay: Duration,
    operations: Arc<Mutex<Operations>>,
}

impl SimProvisioner {
    /// `delay`: how long every resize takes.
    pub fn new(clusters: impl IntoIterator<Item = SimCluster>, delay: Duration) -> SimProvisioner {
        SimProvisioner {
            clusters: Arc::new(
                clusters
                    .into_iter()
                    .map(|cluster| (cluster.name().to_owned(), cluster))
                    .collect(),
            ),
            delay,
            operations: Arc::new(Mutex::new(Operations::default())),
        }
    }

    fn state(resize: &Resize, id: &str, now: Instant) -> Operation {
        if now >= resize.done_at {
            return Operation::Done { id: id.to_owned() };
        }
        let elapsed = now.saturating_duration_since(resize.started);
        let total = resize.done_at.saturating_duration_since(resize.started);
        Operation::Running {
            id: id.to_owned(),
            progress: format!(
                "resizing {} from {} to {} nodes ({elapsed:?} of {total:?})",
                resize.cluster, resize.from, resize.to
            ),
        }
    }

    fn operations(&self) -> MutexGuard<'_, Operations> {
        // Nothing panics under this lock; if something did, the records are still valid.
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Provisioner for SimProvisioner {
    async fn resize(&self, cluster: &str, nodes: u32) -> Result<Operation, PortError> {
        let Some(sim) = self.clusters.get(cluster) else {
            return Err(PortError::NotFound {
                cluster: cluster.to_owned(),
                what: "cluster".to_owned(),
            });
        };
        if nodes > MAX_NODES {
            return Err(PortError::Rejected {
                cluster: cluster.to_owned(),
                what: format!("resize to {nodes} nodes"),
                reason: format!("a simulated cluster has at most {MAX_NODES} nodes"),
            });
        }
        let started = Instant::now();
        let done_at = after(started, self.delay);
        let from = sim.schedule_resize(nodes, done_at);
        let mut operations = self.operations();
        operations.next += 1;
        let id = format!("resize-{cluster}-{}", operations.next);
        let resize = Resize {
            cluster: cluster.to_owned(),
            from,
            to: nodes,
            started,
            done_at,
        };
        let state = SimProvisioner::state(&resize, &id, started);
        operations.by_id.insert(id, resize);
        Ok(state)
    }

    async fn operation(&self, id: &str) -> Result<Operation, PortError> {
        let operations = self.operations();
        let Some(resize) = operations.by_id.get(id) else {
            return Err(PortError::NotFound {
                cluster: PROVIDER.to_owned(),
                what: format!("operation {id}"),
            });
        };
        Ok(SimProvisioner::state(resize, id, Instant::now()))
    }
}
