//! `ferry-testenv up`: the test environment for people. Starts N Kubernetes clusters and
//! a Keystone with Heat on loopback, writes `kubeconfig-<i>` per cluster and a
//! `clouds.yaml`, prints what it started, and keeps running until interrupted; Ctrl-C (or
//! SIGTERM) stops everything.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferry_testenv::{CLOUD, ClusterSpec, OpenStack, start_clusters};

#[derive(Parser)]
#[command(
    name = "ferry-testenv",
    about = "Real components for Ferry's tests, on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start clusters and keep them running until interrupted.
    Up {
        /// How many Kubernetes clusters.
        #[arg(long, default_value_t = 3)]
        clusters: usize,
        /// Where to write kubeconfig-<i> and keep each cluster's files and logs.
        #[arg(long)]
        dir: PathBuf,
        /// Fake nodes per cluster.
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// Cpu of each node (a Kubernetes quantity).
        #[arg(long, default_value = "8")]
        node_cpu: String,
        /// Memory of each node (a Kubernetes quantity).
        #[arg(long, default_value = "32Gi")]
        node_memory: String,
        /// Start only the Kubernetes clusters, without Keystone and Heat.
        #[arg(long)]
        no_openstack: bool,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ferry-testenv: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let Command::Up {
        clusters,
        dir,
        nodes,
        node_cpu,
        node_memory,
        no_openstack,
    } = cli.command;
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let specs: Vec<ClusterSpec> = (1..=clusters)
        .map(|i| {
            ClusterSpec::named(&format!("testenv-{i}"))
                .with_nodes(nodes, &node_cpu, &node_memory)
                .in_dir(dir.join(format!("cluster-{i}")))
        })
        .collect();
    eprintln!("starting {clusters} clusters in {} ...", dir.display());
    let started = std::time::Instant::now();
    let running = start_clusters(&specs).await?;
    for (i, cluster) in running.iter().enumerate() {
        let link = dir.join(format!("kubeconfig-{}", i + 1));
        std::fs::copy(cluster.kubeconfig(), &link)?;
        println!(
            "{}: {} ({} nodes of {} cpu, {}), kubeconfig {}, pids {:?}",
            cluster.name(),
            cluster.server(),
            cluster.nodes().count,
            cluster.nodes().cpu,
            cluster.nodes().memory,
            link.display(),
            cluster.pids()
        );
    }
    let openstack = if no_openstack {
        None
    } else {
        eprintln!("starting Keystone and Heat ...");
        let openstack = OpenStack::start(Some(dir.join("openstack"))).await?;
        let clouds = dir.join("clouds.yaml");
        std::fs::copy(openstack.clouds_yaml(), &clouds)?;
        println!(
            "openstack: Keystone {} with Heat in its catalog, clouds.yaml {} (cloud {CLOUD}), pids {:?}",
            openstack.credentials().auth_url,
            clouds.display(),
            openstack.pids()
        );
        println!(
            "  try: OS_CLIENT_CONFIG_FILE={} openstack --os-cloud {CLOUD} stack list",
            clouds.display()
        );
        Some(openstack)
    };
    println!(
        "ready in {:.1} s; try: kubectl --kubeconfig {}/kubeconfig-1 get nodes. Ctrl-C stops everything.",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("stopping ...");
    drop(openstack);
    drop(running);
    eprintln!("stopped");
    Ok(())
}
