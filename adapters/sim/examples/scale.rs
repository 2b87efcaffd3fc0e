//! Scale check of the sim: 500 clusters × 100 workloads (50,000), then one inventory of
//! every cluster and 1,000 migrations (export, apply, rollout, drain, delete).
//!
//! `cargo run --release -p ferry-adapter-sim --example scale`
//!
//! It prints figures and asserts nothing about them: timings depend on the machine.

use std::error::Error;
use std::time::{Duration, Instant};

use ferry_adapter_sim::{SimCluster, SimClusterSpec};
use ferry_ports::{ClusterPort, Mark, Resources, Rollout, WorkloadKey};

const CLUSTERS: usize = 500;
const WORKLOADS_PER_CLUSTER: usize = 100;
const NODES: u32 = 20;
const CYCLES: usize = 1_000;
const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;

/// splitmix64: the same workloads on every run, without a dependency.
struct Seq(u64);

impl Seq {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn key(cluster: usize, workload: usize) -> WorkloadKey {
    WorkloadKey::new(&format!("team-{cluster:03}"), &format!("app-{workload:03}"))
}

fn per(total: Duration, count: usize) -> Duration {
    total / u32::try_from(count.max(1)).unwrap_or(u32::MAX)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let node = Resources {
        cpu_millis: 16_000,
        memory_bytes: 64 * GI,
    };
    let mut seq = Seq(2024);

    let started = Instant::now();
    let clusters: Vec<SimCluster> = (0..CLUSTERS)
        .map(|index| {
            SimCluster::new(SimClusterSpec::new(
                format!("sim-{index:03}"),
                NODES,
                node,
                Duration::ZERO,
            ))
        })
        .collect();
    for (index, cluster) in clusters.iter().enumerate() {
        for workload in 0..WORKLOADS_PER_CLUSTER {
            let requests = Resources {
                cpu_millis: 100 + 50 * seq.below(19),
                memory_bytes: 128 * MI * (1 + seq.below(16)),
            };
            let replicas = 1 + u32::try_from(seq.below(4))?;
            let tier = ["web", "api", "batch", "cache"][workload % 4];
            cluster.run(
                key(index, workload),
                [
                    ("app", format!("app-{workload:03}")),
                    ("tier", tier.to_owned()),
                ],
                replicas,
                requests,
            )?;
        }
    }
    let seeding = started.elapsed();

    let started = Instant::now();
    let (mut workloads, mut replicas, mut available) = (0, 0u64, 0u64);
    let mut requested_cpu = 0u64;
    for cluster in &clusters {
        let inventory = cluster.inventory().await?;
        workloads += inventory.workloads.len();
        requested_cpu += inventory.requested.cpu_millis;
        for workload in &inventory.workloads {
            replicas += u64::from(workload.replicas);
            available += u64::from(workload.available_replicas);
        }
    }
    let inventories = started.elapsed();

    let started = Instant::now();
    let mut outcomes = [0usize; 3];
    for cycle in 0..CYCLES {
        let from = cycle % CLUSTERS;
        // 6·cycle + 3 is odd, never a multiple of 500: the target is another cluster.
        let to = (cycle * 7 + 3) % CLUSTERS;
        let workload = key(from, cycle / CLUSTERS);
        let mark = Mark {
            migration: format!("m-{cycle:04}"),
        };
        let exported = clusters[from].export(&workload).await?;
        clusters[to].apply(&exported, &mark).await?;
        let outcome = match clusters[to].rollout(&workload).await? {
            Rollout::Available { .. } => 0,
            Rollout::Progressing { .. } => 1,
            Rollout::Failed { .. } => 2,
        };
        outcomes[outcome] += 1;
        clusters[from].scale(&workload, 0, Some(&mark)).await?;
        clusters[from].delete(&workload, &[], &mark).await?;
    }
    let cycles = started.elapsed();

    println!(
        "{CLUSTERS} clusters × {NODES} nodes × {WORKLOADS_PER_CLUSTER} workloads = {workloads} workloads, {replicas} replicas ({available} available), {} cores requested",
        requested_cpu / 1000
    );
    println!(
        "seeding:      {seeding:>12.3?}  ({:?} per workload)",
        per(seeding, CLUSTERS * WORKLOADS_PER_CLUSTER)
    );
    println!(
        "inventory:    {inventories:>12.3?}  for all {CLUSTERS} clusters ({:?} per cluster)",
        per(inventories, CLUSTERS)
    );
    println!(
        "migrations:   {cycles:>12.3?}  for {CYCLES} export+apply+rollout+drain+delete ({:?} per cycle)",
        per(cycles, CYCLES)
    );
    println!(
        "rollouts:     {} available at once, {} progressing, {} failed",
        outcomes[0], outcomes[1], outcomes[2]
    );
    Ok(())
}
