//! [`GkeNodePools`]: the [`Provisioner`] over GKE node pools. The broker knows a cluster
//! by its own name; each is mapped to one node pool of one GKE cluster
//! ([`PoolRef`]), whose size is what a resize changes.
//!
//! The broker asks for a number of nodes in all. GKE's `setSize` counts nodes per zone of
//! the pool, so a pool across three zones can only have a multiple of three: any other
//! number is refused with the nearest sizes that are possible, never rounded silently (a
//! rounded-up pool costs more than the plan says, a rounded-down one has less room).
//!
//! Operation ids are [`OperationRef`]'s text, `projects/{p}/locations/{l}/operations/{name}`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use ferry_ports::{Operation, PortError, Provisioner};

use crate::error::{Error, Result};
use crate::gke::{Gke, GkeOperation, OperationRef};
use crate::http::check_segment;

/// One node pool of one GKE cluster of the client's project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolRef {
    /// The GKE cluster's location (region or zone).
    pub location: String,
    /// The GKE cluster's name.
    pub cluster: String,
    pub node_pool: String,
}

impl PoolRef {
    pub fn new(location: &str, cluster: &str, node_pool: &str) -> Result<PoolRef> {
        check_segment("location", location)?;
        check_segment("cluster", cluster)?;
        check_segment("node pool", node_pool)?;
        Ok(PoolRef {
            location: location.to_owned(),
            cluster: cluster.to_owned(),
            node_pool: node_pool.to_owned(),
        })
    }
}

/// The broker's GKE clusters: which node pool each resizes, and the [`Provisioner`].
#[derive(Debug)]
pub struct GkeNodePools {
    gke: Arc<Gke>,
    pools: RwLock<BTreeMap<String, PoolRef>>,
}

impl GkeNodePools {
    pub fn new(gke: Arc<Gke>) -> GkeNodePools {
        GkeNodePools {
            gke,
            pools: RwLock::new(BTreeMap::new()),
        }
    }

    /// Resizes of `cluster` (the broker's name) go to `pool`.
    pub fn register(&self, cluster: &str, pool: PoolRef) {
        let mut pools = self.pools.write().unwrap_or_else(|p| p.into_inner());
        pools.insert(cluster.to_owned(), pool);
    }

    pub fn pool(&self, cluster: &str) -> Option<PoolRef> {
        let pools = self.pools.read().unwrap_or_else(|p| p.into_inner());
        pools.get(cluster).cloned()
    }

    fn known(&self, cluster: &str) -> Result<PoolRef> {
        self.pool(cluster).ok_or_else(|| Error::InvalidInput {
            what: format!("cluster {cluster}"),
            message: "no GKE node pool is registered for it".to_owned(),
        })
    }
}

/// `nodes` in all as nodes per zone of a pool across `zones` zones.
pub fn per_zone(nodes: u32, zones: u32) -> std::result::Result<u32, String> {
    let zones = zones.max(1);
    if nodes.is_multiple_of(zones) {
        return Ok(nodes / zones);
    }
    let below = nodes / zones * zones;
    Err(format!(
        "the pool spans {zones} zones and GKE sizes it per zone, so it can have {below} or {} \
         nodes, not {nodes}",
        below.saturating_add(zones)
    ))
}

/// The broker's view of an operation.
pub fn to_port_operation(operation: &GkeOperation) -> Operation {
    let id = operation.id.to_string();
    match (&operation.error, operation.is_done()) {
        (Some(error), true) => Operation::Failed {
            id,
            reason: format!("{} (google.rpc.Code {})", error.message, error.code),
        },
        (None, true) => Operation::Done { id },
        (_, false) => Operation::Running {
            id,
            progress: operation.progress(),
        },
    }
}

#[async_trait]
impl Provisioner for GkeNodePools {
    /// Reads the pool to learn its zones, then `setSize` per zone.
    async fn resize(&self, cluster: &str, nodes: u32) -> std::result::Result<Operation, PortError> {
        let port = |e: Error| e.to_port_error(cluster);
        let pool = self.known(cluster).map_err(port)?;
        let current = self
            .gke
            .node_pool(&pool.location, &pool.cluster, &pool.node_pool)
            .await
            .map_err(port)?;
        let zones = u32::try_from(current.zones.len()).unwrap_or(u32::MAX);
        let per_zone = per_zone(nodes, zones).map_err(|message| {
            port(Error::InvalidInput {
                what: format!("resize of node pool {}", pool.node_pool),
                message,
            })
        })?;
        let operation = self
            .gke
            .set_size(&pool.location, &pool.cluster, &pool.node_pool, per_zone)
            .await
            .map_err(port)?;
        Ok(to_port_operation(&operation))
    }

    async fn operation(&self, id: &str) -> std::result::Result<Operation, PortError> {
        let parsed = OperationRef::parse(id).ok_or_else(|| {
            Error::InvalidInput {
                what: "operation id".to_owned(),
                message: format!("`{id}` is not projects/…/locations/…/operations/…"),
            }
            .to_port_error(id)
        })?;
        let operation = self
            .gke
            .operation(&parsed)
            .await
            .map_err(|e| e.to_port_error(&parsed.location))?;
        Ok(to_port_operation(&operation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_become_per_zone_counts_or_a_clear_refusal() {
        let cases: [(u32, u32, std::result::Result<u32, &str>); 6] = [
            (6, 3, Ok(2)),
            (0, 3, Ok(0)),
            (5, 1, Ok(5)),
            (5, 0, Ok(5)),
            (4, 3, Err("3 or 6 nodes, not 4")),
            (1, 2, Err("0 or 2 nodes, not 1")),
        ];
        for (nodes, zones, expected) in cases {
            match (per_zone(nodes, zones), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(words)) => assert!(got.contains(words), "{got}"),
                (got, want) => panic!("{nodes}/{zones}: {got:?} vs {want:?}"),
            }
        }
    }
}
