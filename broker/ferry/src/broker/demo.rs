//! `ferry demo`: the broker on three simulated clusters (the on-prem OpenStack cluster and
//! two GKE regions of `examples/`, with their prices and capacity) running the example
//! workloads where their files say they run (and the new ones, which run nowhere yet,
//! where the files' plan puts them), under the example policies.
//!
//! The simulated clusters keep their state in the data folder, written before a call
//! returns, so that they outlive a broker that is killed — as real clusters would. That is
//! what lets the crash-safety test restart the broker and check the world it left.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use ferry_adapter_sim::SimCluster;
use ferry_policies::resources::ResourceSet;
use ferry_ports::{
    ClusterPort, Drained, ExistingClaim, ExportedWorkload, Inventory, Mark, ObjectRef, PortError,
    Removal, Resources, Rollout, WorkloadKey,
};
use serde::{Deserialize, Serialize};

use super::controllers::ControllerConfig;
use super::history::{self, HistoryConfig};
use super::migration::EngineConfig;
use super::run::{self, BrokerConfig};
use super::sims;
use super::world::{Member, World};

/// The example federation, built into the binary so that the demo runs from anywhere.
const EXAMPLES: [(&str, &str); 6] = [
    (
        "examples/clusters.yaml",
        include_str!("../../../../examples/clusters.yaml"),
    ),
    (
        "examples/policies.yaml",
        include_str!("../../../../examples/policies.yaml"),
    ),
    (
        "examples/workloads/analytics.yaml",
        include_str!("../../../../examples/workloads/analytics.yaml"),
    ),
    (
        "examples/workloads/batch.yaml",
        include_str!("../../../../examples/workloads/batch.yaml"),
    ),
    (
        "examples/workloads/payments.yaml",
        include_str!("../../../../examples/workloads/payments.yaml"),
    ),
    (
        "examples/workloads/shop.yaml",
        include_str!("../../../../examples/workloads/shop.yaml"),
    ),
];

/// What a simulated cluster runs, as saved in the data folder.
#[derive(Serialize, Deserialize)]
struct SavedWorkload {
    key: WorkloadKey,
    labels: std::collections::BTreeMap<String, String>,
    replicas: u32,
    requests: Resources,
    mark: Option<Mark>,
}

/// A simulated cluster whose state is saved to a file after every change.
struct Persisted {
    sim: SimCluster,
    file: PathBuf,
    /// Serializes saves, so that an older snapshot never overwrites a newer one.
    saving: Mutex<()>,
}

impl Persisted {
    async fn save(&self) -> Result<(), PortError> {
        let inventory = self.sim.inventory().await?;
        let saved: Vec<SavedWorkload> = inventory
            .workloads
            .into_iter()
            .map(|w| SavedWorkload {
                key: w.key,
                labels: w.labels,
                replicas: w.replicas,
                requests: w.requests,
                mark: w.mark,
            })
            .collect();
        let text = serde_json::to_vec_pretty(&saved).map_err(|e| self.failed(&e.to_string()))?;
        let _guard = self
            .saving
            .lock()
            .map_err(|_| self.failed("lock poisoned"))?;
        let temporary = self.file.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            std::io::Write::write_all(&mut file, &text)?;
            file.sync_all()?;
            std::fs::rename(&temporary, &self.file)?;
            if let Some(dir) = self.file.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.failed(&format!("saving {}: {e}", self.file.display())))
    }

    fn failed(&self, reason: &str) -> PortError {
        PortError::Unreachable {
            cluster: self.sim.name().to_owned(),
            reason: reason.to_owned(),
        }
    }
}

#[async_trait]
impl ClusterPort for Persisted {
    fn name(&self) -> &str {
        self.sim.name()
    }

    async fn inventory(&self) -> Result<Inventory, PortError> {
        self.sim.inventory().await
    }

    async fn export(&self, workload: &WorkloadKey) -> Result<ExportedWorkload, PortError> {
        self.sim.export(workload).await
    }

    async fn apply(&self, workload: &ExportedWorkload, mark: &Mark) -> Result<(), PortError> {
        self.sim.apply(workload, mark).await?;
        self.save().await
    }

    async fn rollout(&self, workload: &WorkloadKey) -> Result<Rollout, PortError> {
        self.sim.rollout(workload).await
    }

    async fn scale(
        &self,
        workload: &WorkloadKey,
        replicas: u32,
        mark: Option<&Mark>,
    ) -> Result<(), PortError> {
        self.sim.scale(workload, replicas, mark).await?;
        self.save().await
    }

    async fn drain(
        &self,
        workload: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Drained, PortError> {
        let drained = self.sim.drain(workload, dependents, mark).await?;
        self.save().await?;
        Ok(drained)
    }

    async fn delete(
        &self,
        workload: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Removal, PortError> {
        let removal = self.sim.delete(workload, dependents, mark).await?;
        self.save().await?;
        Ok(removal)
    }

    async fn claims(
        &self,
        namespace: &str,
        names: &[String],
    ) -> Result<Vec<ExistingClaim>, PortError> {
        self.sim.claims(namespace, names).await
    }
}

/// The example files, parsed (they are part of the binary, so an error is a bug).
fn examples() -> anyhow::Result<ResourceSet> {
    let mut set = ResourceSet::default();
    for (file, text) in EXAMPLES {
        let diagnostics = set.add_source(file, text);
        if let Some(first) = diagnostics.first() {
            anyhow::bail!("the built-in example {file} does not parse: {first}");
        }
    }
    Ok(set)
}

/// Builds the three simulated clusters: from the data folder if a previous run left
/// them, from the example files otherwise.
/// The simulated clusters, seeded from the examples in a `new_folder`, else restored from
/// their files in `sim/`.
async fn federation(
    data: &Path,
    new_folder: bool,
    rollout_time: Duration,
    synthetic: u32,
) -> anyhow::Result<World> {
    let set = examples()?;
    let sim_dir = data.join("sim");
    std::fs::create_dir_all(&sim_dir).with_context(|| format!("create {}", sim_dir.display()))?;
    let mut built = Vec::new();
    for cluster in set.clusters.iter().map(|c| &c.value) {
        let sim = sims::from_definition(cluster, rollout_time, Duration::from_millis(5));
        let file = sim_dir.join(format!("{}.json", cluster.name));
        let seeded = !file.is_file();
        if !seeded {
            let text = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let saved: Vec<SavedWorkload> = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a saved simulated cluster", file.display()))?;
            for w in saved {
                sim.run(w.key.clone(), w.labels, w.replicas, w.requests)
                    .with_context(|| format!("restore {} on {}", w.key, cluster.name))?;
                if let Some(mark) = &w.mark {
                    sim.scale(&w.key, w.replicas, Some(mark))
                        .await
                        .with_context(|| format!("restore {} on {}", w.key, cluster.name))?;
                }
            }
        } else if !new_folder {
            // Seeding it afresh would put workloads where the store's migrations and the
            // other clusters' files do not expect them: some on two clusters, some nowhere.
            anyhow::bail!(
                "{} is missing, but {} is an existing data folder: the simulated cluster \
                 {:?} would be seeded again from the examples and disagree with the store \
                 and the other clusters. Restore the file, or start the demo on a new, empty \
                 data folder",
                file.display(),
                data.display(),
                cluster.name
            );
        } else {
            // Small generated workloads, dealt round-robin over the clusters.
            let index = set
                .clusters
                .iter()
                .position(|c| c.value.name == cluster.name)
                .unwrap_or(0);
            let count = set.clusters.len().max(1);
            for n in (0..synthetic).filter(|n| usize::try_from(*n).unwrap_or(0) % count == index) {
                let key = WorkloadKey::new("synthetic", &format!("load-{n:05}"));
                let labels = [("app".to_owned(), format!("load-{n:05}"))];
                let requests = Resources {
                    cpu_millis: 10,
                    memory_bytes: 16 << 20,
                };
                sim.run(key.clone(), labels, 1, requests)
                    .with_context(|| format!("seed {key} on {}", cluster.name))?;
            }
            sims::seed(&sim, &cluster.name, set.workloads.iter().map(|w| &w.value))?;
        }
        built.push((cluster, sim, file, seeded));
    }
    // A first start: what the files define but run nowhere (the shop's web tier, a new
    // release) is deployed where the files' plan puts it, so that every example runs and
    // the broker's first plan is the one `ferry plan -f examples/` shows.
    if built.iter().all(|(_, _, _, seeded)| *seeded) {
        let sims: Vec<(&str, &SimCluster)> = built
            .iter()
            .map(|(cluster, sim, _, _)| (cluster.name.as_str(), sim))
            .collect();
        for line in sims::place_new(&set, &sims)? {
            tracing::info!("deployed the new workload {line}, as the files' plan places it");
        }
    }
    let mut members = Vec::new();
    for (cluster, sim, file, _) in built {
        let port = Arc::new(Persisted {
            sim,
            file,
            saving: Mutex::new(()),
        });
        port.save().await.context("save the simulated cluster")?;
        members.push(Arc::new(Member {
            definition: cluster.clone(),
            port,
            price_source: None,
            provisioner: None,
        }));
    }
    let definitions = set.workloads.iter().map(|w| w.value.clone()).collect();
    let policies = set.policies.iter().map(|p| p.value.clone()).collect();
    Ok(World::new(members, definitions, policies))
}

/// How the demo runs.
pub struct Options {
    pub rollback_window: Duration,
    pub rollout_time: Duration,
    /// Generated workloads added to the examples' (for load tests).
    pub synthetic_workloads: u32,
    /// The controllers' mode.
    pub mode: ferry_policies::control::Mode,
    /// Hysteresis: how long a new price must hold.
    pub price_memory: Duration,
}

pub async fn run(
    listen: SocketAddr,
    data: Option<PathBuf>,
    options: Options,
) -> anyhow::Result<()> {
    let Options {
        rollback_window,
        rollout_time,
        synthetic_workloads,
        mode,
        price_memory,
    } = options;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (data, temporary) = match data {
        Some(data) => (data, false),
        None => {
            let dir = std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id()));
            (dir, true)
        }
    };
    // Before anything in the folder is read or written; held until the demo stops.
    let data_lock = run::lock_data_folder(&data)?;
    let world = federation(
        &data,
        data_lock.new_folder,
        rollout_time,
        synthetic_workloads,
    )
    .await?;
    let (stop_sender, stop_receiver) = tokio::sync::oneshot::channel::<()>();
    let (running, server) = run::start(
        world,
        BrokerConfig {
            listen,
            data: data.clone(),
            engine: EngineConfig {
                step_deadline: Duration::from_secs(120),
                poll: Duration::from_millis(250),
                rollback_window,
                max_concurrent: 4,
            },
            // The demo's clusters are simulated; a Cluster posted to it is checked, and
            // provisioning fails without a clouds.yaml, saying so.
            provisioning: super::provisioning::ProvisioningConfig::new(data.clone()),
            auth: None,
            // Every 10 s: a visitor sees the chart move within a minute.
            history: HistoryConfig {
                interval: Duration::from_secs(10),
                max_points: history::DEFAULT_MAX_POINTS,
            },
            // Short periods, so that a visitor sees the loops act within a minute.
            controllers: ControllerConfig {
                mode,
                interval: Duration::from_secs(5),
                stable_after: Duration::from_secs(60),
                price_memory,
                ..ControllerConfig::default()
            },
            bounds: run::Bounds::default(),
        },
        async move {
            let _ = stop_receiver.await;
        },
    )
    .await?;
    let token = run::admin_token(&running.minter, Duration::from_secs(24 * 3600))?;
    let url = format!("http://{}", running.addr);
    println!("ferry demo: listening on {url}");
    println!(
        "  data folder:  {}{}",
        data.display(),
        if temporary { " (temporary)" } else { "" }
    );
    println!("  dashboard:    {url}/#token={token}");
    println!("  admin token:  {token}");
    println!("  try:          export FERRY_SERVER={url} FERRY_TOKEN={token}");
    println!("                ferry get clusters; ferry get workloads");
    println!("                ferry migrate batch/render --to openstack-dc1 --dry-run");
    println!(
        "                ferry migrate batch/render --to openstack-dc1 --accept-empty-volumes --wait"
    );
    println!("Ctrl-C (or SIGTERM) stops it.");
    let mut server = server;
    tokio::select! {
        signal = run::stop_signal() => {
            run::stop("ferry demo", signal, &running.state, stop_sender, server).await;
        }
        result = &mut server => {
            result.context("the server task")?.context("the server")?;
        }
    }
    eprintln!("ferry demo: stopped");
    if temporary {
        drop(data_lock);
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(())
}
