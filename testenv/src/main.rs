//! `ferry-testenv up`: the test environment for people. Starts N Kubernetes clusters and
//! a Keystone with Heat on loopback, writes `kubeconfig-<i>` per cluster and a
//! `clouds.yaml`, prints what it started (each PID with its component), and keeps running
//! until interrupted; Ctrl-C (or SIGTERM) stops everything. Meanwhile it reads commands on
//! stdin, one a line: `kill CLUSTER COMPONENT` (SIGKILL, a crash), `start CLUSTER
//! COMPONENT` (again, with the same arguments and data), `restart CLUSTER COMPONENT` (both;
//! for the API server, until it answers again) and `pids`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferry_testenv::{CLOUD, Cluster, ClusterSpec, OpenStack, start_clusters};

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
            "{}: {} ({} nodes of {} cpu, {}), kubeconfig {}, pids {}",
            cluster.name(),
            cluster.server(),
            cluster.nodes().count,
            cluster.nodes().cpu,
            cluster.nodes().memory,
            link.display(),
            labelled(&cluster.components())
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
            "openstack: Keystone {} with Heat in its catalog, clouds.yaml {} (cloud {CLOUD}), pids {}",
            openstack.credentials().auth_url,
            clouds.display(),
            labelled(&openstack.components())
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
    println!(
        "commands on stdin: kill|start|restart CLUSTER COMPONENT (e.g. restart {} kube-apiserver), pids",
        running.first().map_or("testenv-1", Cluster::name)
    );
    let mut running = running;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Read on a thread of its own: a blocking read of stdin must not hold up the runtime.
    let (lines, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // Until stdin ends (started with </dev/null, say): then only the signals remain.
    let mut reading = true;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            line = commands.recv(), if reading => match line {
                None => reading = false,
                Some(line) => match obey(&line, &mut running).await {
                    Ok(Some(said)) => println!("{said}"),
                    Ok(None) => {}
                    Err(error) => eprintln!("ferry-testenv: {error}"),
                },
            },
        }
    }
    eprintln!("stopping ...");
    drop(openstack);
    drop(running);
    eprintln!("stopped");
    Ok(())
}

/// PIDs with what they are: `etcd=123 kube-apiserver=456`; a component not running shows
/// as `name=stopped`.
fn labelled(components: &[(String, Option<u32>)]) -> String {
    components
        .iter()
        .map(|(name, pid)| match pid {
            Some(pid) => format!("{name}={pid}"),
            None => format!("{name}=stopped"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A command read on stdin.
#[derive(Debug, PartialEq, Eq)]
enum Order {
    Kill { cluster: String, component: String },
    Start { cluster: String, component: String },
    Restart { cluster: String, component: String },
    Pids,
}

fn parse_order(line: &str) -> Result<Option<Order>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let usage = "expected kill|start|restart CLUSTER COMPONENT, or pids";
    Ok(Some(match words.as_slice() {
        [] => return Ok(None),
        ["pids"] => Order::Pids,
        [verb, cluster, component] => {
            let (cluster, component) = ((*cluster).to_owned(), (*component).to_owned());
            match *verb {
                "kill" => Order::Kill { cluster, component },
                "start" => Order::Start { cluster, component },
                "restart" => Order::Restart { cluster, component },
                other => return Err(format!("unknown command {other:?}: {usage}")),
            }
        }
        _ => return Err(format!("cannot read {line:?}: {usage}")),
    }))
}

/// Carries out one line read on stdin; says what it did.
async fn obey(line: &str, running: &mut [Cluster]) -> Result<Option<String>, String> {
    let Some(order) = parse_order(line)? else {
        return Ok(None);
    };
    let find = |running: &mut [Cluster], name: &str| -> Result<usize, String> {
        running
            .iter()
            .position(|c| c.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = running.iter().map(Cluster::name).collect();
                format!("no cluster {name}; the clusters are {}", names.join(", "))
            })
    };
    let said = match order {
        Order::Pids => running
            .iter()
            .map(|c| format!("{}: pids {}", c.name(), labelled(&c.components())))
            .collect::<Vec<_>>()
            .join("\n"),
        Order::Kill { cluster, component } => {
            let i = find(running, &cluster)?;
            running[i].kill(&component).map_err(|e| e.to_string())?;
            format!("{cluster}: {component} killed")
        }
        Order::Start { cluster, component } => {
            let i = find(running, &cluster)?;
            running[i]
                .restart(&component)
                .await
                .map_err(|e| e.to_string())?;
            format!(
                "{cluster}: {component} started, pids {}",
                labelled(&running[i].components())
            )
        }
        Order::Restart { cluster, component } => {
            let i = find(running, &cluster)?;
            running[i].kill(&component).map_err(|e| e.to_string())?;
            running[i]
                .restart(&component)
                .await
                .map_err(|e| e.to_string())?;
            format!(
                "{cluster}: {component} restarted, pids {}",
                labelled(&running[i].components())
            )
        }
    };
    Ok(Some(said))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_are_labelled_with_their_component() {
        let components = [
            ("etcd".to_owned(), Some(101)),
            ("kube-apiserver".to_owned(), None),
            ("kwok".to_owned(), Some(103)),
        ];
        assert_eq!(
            labelled(&components),
            "etcd=101 kube-apiserver=stopped kwok=103"
        );
    }

    #[test]
    fn commands_on_stdin_are_read_strictly() {
        let order =
            |verb: &str| parse_order(&format!("{verb} testenv-1 kube-apiserver")).expect("valid");
        let (cluster, component) = ("testenv-1".to_owned(), "kube-apiserver".to_owned());
        assert_eq!(
            order("restart"),
            Some(Order::Restart {
                cluster: cluster.clone(),
                component: component.clone()
            })
        );
        assert_eq!(
            order("kill"),
            Some(Order::Kill {
                cluster: cluster.clone(),
                component: component.clone()
            })
        );
        assert_eq!(order("start"), Some(Order::Start { cluster, component }));
        assert_eq!(parse_order("  pids "), Ok(Some(Order::Pids)));
        assert_eq!(parse_order("   "), Ok(None));
        for bad in ["restart testenv-1", "reboot testenv-1 etcd", "kill a b c"] {
            let error = parse_order(bad).expect_err(bad);
            assert!(error.contains("kill|start|restart"), "{error}");
        }
    }
}
