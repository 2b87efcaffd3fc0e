//! `ferry`: the command line. Offline commands (`plan`, `validate`, `pricing`) work on
//! files with no broker and no network; `demo` runs the broker; `token` mints tokens
//! with a broker's key; `get`, `migrate` and `cluster` talk to a running broker's API.
//!
//! Exit status: 0 success, 1 a failed operation, 2 a usage or input error.

mod broker;
mod build_info;
mod client;
mod plan_output;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use ferry_policies::engine::{self, Mode, Snapshot};

#[derive(Parser)]
#[command(
    name = "ferry",
    version = build_info::long_version(),
    about = "Hybrid-cloud workload mobility broker: plan, place and move workloads by cost and policy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What-if planning over Cluster, Workload and PlacementPolicy files; no broker, no network.
    Plan {
        /// Files or directories (every *.yaml / *.yml inside, recursively).
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
        /// `fresh` ignores where workloads run; `rebalance` starts from it. Default:
        /// rebalance when some workload has status.cluster, fresh otherwise.
        #[arg(long)]
        mode: Option<ModeArg>,
        /// Output format.
        #[arg(short = 'o', long = "output", default_value = "table")]
        output: Output,
    },
    /// Checks resource files and prints every error with file:line:column.
    Validate {
        /// Files or directories (every *.yaml / *.yml inside, recursively).
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
    /// A Cluster file's `pricing` block from an on-prem rate table (docs/openstack-pricing.md).
    Pricing {
        /// The rate table (YAML), or with --opencost an OpenCost custom-pricing JSON file.
        #[arg(long)]
        rate_table: PathBuf,
        /// Read the file as OpenCost's custom pricing (hourly values).
        #[arg(long)]
        opencost: bool,
        /// The workers' flavor, for a table with per-flavor prices.
        #[arg(long, conflicts_with = "workers")]
        flavor: Option<String>,
        /// A mix of worker flavors, FLAVOR=COUNT (repeatable).
        #[arg(long = "workers")]
        workers: Vec<String>,
        /// Output format.
        #[arg(short = 'o', long = "output", default_value = "table")]
        output: Output,
    },
    /// The broker on three simulated clusters with the example workloads and policies.
    Demo {
        /// Where the API and dashboard listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Data folder (store, signing key, simulated clusters); a temporary one if absent.
        #[arg(long)]
        data: Option<PathBuf>,
        /// How long a drained source is kept before it is deleted (e.g. 30s, 10m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        rollback_window: std::time::Duration,
        /// How long a simulated rollout takes.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        rollout_time: std::time::Duration,
        /// Adds this many small generated workloads (namespace `synthetic`) to the
        /// examples' 20, spread over the clusters: for load tests and benchmarks.
        #[arg(long, default_value_t = 0)]
        synthetic_workloads: u32,
        /// What the controllers do with the moves the policies allow: `recommend` shows
        /// them, `auto` starts them (switch later with `ferry controller mode`).
        #[arg(long, default_value = "recommend", value_parser = parse_mode)]
        mode: ferry_policies::control::Mode,
        /// How long a new price must hold before a move it makes pay is started
        /// (hysteresis; `ferry serve` defaults to 1h).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        price_memory: std::time::Duration,
    },
    /// The broker over the resource files its config names (watched for changes).
    Serve {
        /// The config file (TOML): listen, data, resources, watch-interval, [migrations].
        #[arg(long)]
        config: PathBuf,
    },
    /// Tokens signed with a broker's key.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Reads from a running broker.
    Get {
        /// clusters, workloads, migrations or placements.
        what: String,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", default_value = "table")]
        output: Output,
    },
    /// Clusters Ferry provisions (OpenStack through Heat), through a running broker (admin).
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", default_value = "table", global = true)]
        output: Output,
    },
    /// The rebalance and failover controllers of a running broker.
    Controller {
        #[command(subcommand)]
        command: ControllerCommand,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", default_value = "table", global = true)]
        output: Output,
    },
    /// Asks a running broker to move a workload.
    Migrate {
        /// NAMESPACE/NAME.
        workload: String,
        /// The destination cluster.
        #[arg(long)]
        to: String,
        /// Plan only: check and price the move, print the findings, change nothing; exit 1
        /// when the move would not start (with --wait too: there is nothing to wait for).
        #[arg(long)]
        dry_run: bool,
        /// Wait until it ends, showing its progress; exit 1 unless it ends done.
        #[arg(long)]
        wait: bool,
        /// Move a workload whose pods use claims: the target starts on new, empty claims
        /// (volume data does not move yet).
        #[arg(long)]
        accept_empty_volumes: bool,
        /// Move although a hard rule of the workload's policy forbids the target (admins).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        broker: BrokerArgs,
        /// Output format.
        #[arg(short = 'o', long = "output", default_value = "table")]
        output: Output,
    },
}

#[derive(clap::Args)]
struct BrokerArgs {
    /// The broker's URL.
    #[arg(long, env = "FERRY_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// A token (see `ferry token create`).
    #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
    token: String,
    /// How long one call to the broker may take (e.g. 10s, 2m).
    #[arg(long, env = "FERRY_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    timeout: std::time::Duration,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Provisions the cluster a Cluster file describes (provider openstack, a `heat`
    /// block) and adds it to the federation once it is up.
    Create {
        #[arg(short = 'f', long = "filename")]
        path: PathBuf,
        /// Wait until it is ready, showing the stack's progress; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
    },
    /// Sets the worker count of a cluster Ferry provisioned.
    Resize {
        name: String,
        #[arg(long)]
        workers: u32,
        /// Wait until the update ends.
        #[arg(long)]
        wait: bool,
    },
    /// Takes a provisioned cluster out of the federation and deletes its stack; refused
    /// while workloads serve there, unless --force.
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
        /// Wait until the stack is gone.
        #[arg(long)]
        wait: bool,
    },
    /// Where a provisioned cluster stands (phase, stack, progress, the last failure).
    Status { name: String },
    /// Sets a member's hourly prices (as a price feed would); the controllers act on them.
    Price {
        name: String,
        #[arg(long)]
        cpu_core_hour: f64,
        #[arg(long = "memory-gib-hour")]
        memory_gib_hour: f64,
        /// The price of a GiB leaving the cluster (unchanged when absent).
        #[arg(long = "egress-gib")]
        egress_gib: Option<f64>,
    },
}

#[derive(Subcommand)]
enum ControllerCommand {
    /// The mode, each member's health phase and what the controllers decided, and why.
    Status,
    /// Switches the mode: `auto` starts the moves the policies allow, `recommend` only
    /// shows them (admin; until the broker restarts).
    Mode {
        #[arg(value_parser = parse_mode)]
        mode: ferry_policies::control::Mode,
    },
    /// Sets aside the failures of the controllers' moves of a workload (`namespace/name`),
    /// so that a move held for an operator is tried again (operator).
    Clear {
        workload: String,
        /// Only its move to this cluster.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mints a JWT signed with the key in the broker's data folder.
    Create {
        /// The broker's data folder (where its signing key is).
        #[arg(long)]
        data: PathBuf,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Limit the token to these namespaces (repeatable); all when absent.
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Lifetime, e.g. 1h, 30m, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: std::time::Duration,
        /// The token's subject (who it stands for).
        #[arg(long, default_value = "cli")]
        subject: String,
        /// The longest lifetime allowed: the broker's `[tokens] max-lifetime` (90d unless
        /// its config raises it); the broker refuses longer-lived tokens.
        #[arg(long, default_value = "90d", value_parser = parse_duration)]
        max_ttl: std::time::Duration,
    },
}

/// `recommend` or `auto`.
fn parse_mode(text: &str) -> Result<ferry_policies::control::Mode, String> {
    ferry_policies::control::Mode::parse(text)
        .ok_or_else(|| format!("`{text}` is neither recommend nor auto"))
}

/// `90s`, `30m`, `1h`, `7d`, or combinations like `1h30m`: the same syntax as durations
/// in resource files.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    ferry_policies::quantity::parse_duration(text).map(std::time::Duration::from_secs)
}

/// A duration as [`parse_duration`] reads it, or milliseconds (`500ms`) for the tests'
/// unanswering servers; never zero, which reqwest would take as "give up at once".
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let duration = match text.strip_suffix("ms") {
        Some(millis) => millis
            .parse::<u64>()
            .map(std::time::Duration::from_millis)
            .map_err(|_| format!("`{text}` is not a duration like 500ms, 10s or 2m"))?,
        None => parse_duration(text)?,
    };
    if duration.is_zero() {
        return Err("the timeout must be more than zero".to_owned());
    }
    Ok(duration)
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Fresh,
    Rebalance,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

/// Why a command did not succeed, and the exit status that says so.
enum Failure {
    /// Bad input: the user must change something. Exit 2.
    Input(Vec<String>),
    /// An operation failed. Exit 1.
    Operation(anyhow::Error),
}

fn main() -> ExitCode {
    // rustls (with ring, as kube uses) for every HTTPS client of the process, before any
    // is made: see the `https` feature in Cargo.toml.
    #[cfg(feature = "https")]
    ferry_adapter_openstack::install_crypto_provider();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            // clap's own exit code: 0 for --help/--version, 2 for usage errors.
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let result = match cli.command {
        Command::Plan {
            paths,
            mode,
            output,
        } => plan(&paths, mode, output),
        Command::Validate { paths } => validate(&paths),
        Command::Pricing {
            rate_table,
            opencost,
            flavor,
            workers,
            output,
        } => pricing(&rate_table, opencost, flavor.as_deref(), &workers, output),
        Command::Demo {
            listen,
            data,
            rollback_window,
            rollout_time,
            synthetic_workloads,
            mode,
            price_memory,
        } => in_runtime(broker::demo::run(
            listen,
            data,
            broker::demo::Options {
                rollback_window,
                rollout_time,
                synthetic_workloads,
                mode,
                price_memory,
            },
        )),
        Command::Serve { config } => match broker::serve::read_config(&config) {
            Ok(parsed) => match broker::serve::check(&parsed, &config) {
                Ok(()) => in_runtime(broker::serve::run(parsed, &config)),
                Err(problems) => Err(Failure::Input(problems)),
            },
            Err(error) => Err(Failure::Input(vec![format!("error: {error}")])),
        },
        Command::Token {
            command:
                TokenCommand::Create {
                    data,
                    role,
                    namespaces,
                    ttl,
                    subject,
                    max_ttl,
                },
        } => token_create(&data, &role, &namespaces, (ttl, max_ttl), &subject),
        Command::Get {
            what,
            broker,
            output,
        } => in_runtime_client(async move {
            client::BrokerClient::new(&broker.server, &broker.token, broker.timeout)?
                .get(&what, matches!(output, Output::Json))
                .await
        }),
        Command::Cluster {
            command,
            broker,
            output,
        } => in_runtime_client(async move {
            let client = client::BrokerClient::new(&broker.server, &broker.token, broker.timeout)?;
            let json_output = matches!(output, Output::Json);
            match command {
                ClusterCommand::Create { path, wait } => {
                    client.cluster_create(&path, wait, json_output).await
                }
                ClusterCommand::Resize {
                    name,
                    workers,
                    wait,
                } => {
                    client
                        .cluster_resize(&name, workers, wait, json_output)
                        .await
                }
                ClusterCommand::Delete { name, force, wait } => {
                    client.cluster_delete(&name, force, wait, json_output).await
                }
                ClusterCommand::Status { name } => client.cluster_status(&name, json_output).await,
                ClusterCommand::Price {
                    name,
                    cpu_core_hour,
                    memory_gib_hour,
                    egress_gib,
                } => {
                    client
                        .cluster_price(
                            &name,
                            cpu_core_hour,
                            memory_gib_hour,
                            egress_gib,
                            json_output,
                        )
                        .await
                }
            }
        }),
        Command::Controller {
            command,
            broker,
            output,
        } => in_runtime_client(async move {
            let client = client::BrokerClient::new(&broker.server, &broker.token, broker.timeout)?;
            let json_output = matches!(output, Output::Json);
            match command {
                ControllerCommand::Status => client.controller_status(json_output).await,
                ControllerCommand::Mode { mode } => {
                    client.controller_mode(mode.as_str(), json_output).await
                }
                ControllerCommand::Clear { workload, to } => {
                    client
                        .controller_clear(&workload, to.as_deref(), json_output)
                        .await
                }
            }
        }),
        Command::Migrate {
            workload,
            to,
            dry_run,
            wait,
            accept_empty_volumes,
            force,
            broker,
            output,
        } => in_runtime_client(async move {
            let request = client::MigrateRequest {
                dry_run,
                wait,
                accept_empty_volumes,
                force,
            };
            client::BrokerClient::new(&broker.server, &broker.token, broker.timeout)?
                .migrate(&workload, &to, &request, matches!(output, Output::Json))
                .await
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(lines)) => {
            let mut stderr = io::stderr().lock();
            for line in lines {
                let _ = writeln!(stderr, "{line}");
            }
            ExitCode::from(2)
        }
        Err(Failure::Operation(error)) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
        .map_err(Failure::Operation)
}

fn in_runtime(
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> Result<(), Failure> {
    runtime()?.block_on(future).map_err(Failure::Operation)
}

fn in_runtime_client(
    future: impl std::future::Future<Output = Result<(), client::ClientError>>,
) -> Result<(), Failure> {
    runtime()?.block_on(future).map_err(|error| {
        if error.input {
            Failure::Input(vec![format!("error: {}", error.message)])
        } else {
            Failure::Operation(anyhow::anyhow!(error.message))
        }
    })
}

fn token_create(
    data: &std::path::Path,
    role: &str,
    namespaces: &[String],
    (ttl, max_ttl): (std::time::Duration, std::time::Duration),
    subject: &str,
) -> Result<(), Failure> {
    if ttl > max_ttl {
        return Err(Failure::Input(vec![format!(
            "error: --ttl {} s is longer than the maximum token lifetime of {} s (the broker refuses such tokens); ask for less, or pass --max-ttl if the broker's [tokens] max-lifetime is longer",
            ttl.as_secs(),
            max_ttl.as_secs()
        )]));
    }
    let role: ferry_auth::Role = role.parse().map_err(|_| {
        Failure::Input(vec![format!(
            "error: unknown role `{role}`: viewer, operator or admin"
        )])
    })?;
    if !data.join("jwt-hs256.key").is_file() {
        return Err(Failure::Input(vec![format!(
            "error: {} holds no broker signing key (jwt-hs256.key); is it a broker's data folder?",
            data.display()
        )]));
    }
    let minter = broker::run::minter(data)
        .map_err(Failure::Operation)?
        .with_max_lifetime(max_ttl.as_secs());
    let namespaces = (!namespaces.is_empty()).then_some(namespaces);
    let token = minter
        .mint(subject, &[role], namespaces, ttl)
        .context("mint the token")
        .map_err(Failure::Operation)?;
    println!("{token}");
    Ok(())
}

/// Loads resource files; any diagnostic is an input failure listing all of them.
fn load(paths: &[PathBuf]) -> Result<ferry_adapter_files::Loaded, Failure> {
    let loaded = ferry_adapter_files::load(paths)
        .map_err(|error| Failure::Input(vec![format!("error: {error}")]))?;
    if !loaded.diagnostics.is_empty() {
        let mut lines: Vec<String> = loaded.diagnostics.iter().map(|d| format!("{d}")).collect();
        lines.push(format!(
            "{} error(s) in {} file(s)",
            loaded.diagnostics.len(),
            loaded.files.len()
        ));
        return Err(Failure::Input(lines));
    }
    Ok(loaded)
}

/// `ferry pricing`: the rates of a table for the workers given, as a Cluster file's
/// `pricing` block (or JSON), with where they come from.
fn pricing(
    path: &std::path::Path,
    opencost: bool,
    flavor: Option<&str>,
    workers: &[String],
    output: Output,
) -> Result<(), Failure> {
    use ferry_adapter_openstack::RateTable;
    let input = |message: String| Failure::Input(vec![message]);
    let text =
        std::fs::read_to_string(path).map_err(|e| input(format!("{}: {e}", path.display())))?;
    let name = path.display().to_string();
    let table = if opencost {
        RateTable::import_opencost_hourly(&text, &name)
    } else {
        RateTable::parse_yaml(&text, &name)
    }
    .map_err(|e| input(e.to_string()))?;
    let mut mix = Vec::new();
    for pair in workers {
        let parsed = pair
            .split_once('=')
            .and_then(|(f, n)| Some((f, n.parse::<u32>().ok()?)));
        let Some(entry) = parsed else {
            return Err(input(format!(
                "--workers {pair}: expected FLAVOR=COUNT, e.g. m1.large=3"
            )));
        };
        mix.push(entry);
    }
    let quote = if mix.is_empty() {
        table.quote(flavor)
    } else {
        table.quote_mix(&mix)
    }
    .map_err(|e| input(e.to_string()))?;
    let egress = table.egress_gib();
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "currency": quote.currency,
                "cpuCoreHour": quote.cpu_core_hour,
                "memoryGiBHour": quote.memory_gib_hour,
                "egressGiB": egress,
                "source": quote.source,
            })
        ),
        Output::Table => {
            // Eight decimals: a millionth of a cent per core-hour is far below what a
            // rate table can claim to know, and the block stays readable.
            let rate = |value: f64| {
                let text = format!("{value:.8}");
                text.trim_end_matches('0').trim_end_matches('.').to_owned()
            };
            println!("# {}", quote.source);
            println!(
                "pricing: {{ currency: {}, cpuCoreHour: {}, memoryGiBHour: {}, egressGiB: {} }}",
                quote.currency,
                rate(quote.cpu_core_hour),
                rate(quote.memory_gib_hour),
                rate(egress)
            );
        }
    }
    Ok(())
}

fn validate(paths: &[PathBuf]) -> Result<(), Failure> {
    // Errors, policy conflicts among them, fail the load with every one located.
    let loaded = load(paths)?;
    let set = &loaded.resources;
    // Warnings do not fail validation: they point at what is valid but probably not meant.
    let warnings = ferry_policies::resources::warnings(set);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    println!(
        "{} file(s) valid: {} cluster(s), {} workload(s), {} placement polic(ies){}",
        loaded.files.len(),
        set.clusters.len(),
        set.workloads.len(),
        set.policies.len(),
        match warnings.len() {
            0 => String::new(),
            n => format!("; {n} warning(s)"),
        }
    );
    Ok(())
}

fn plan(paths: &[PathBuf], mode: Option<ModeArg>, output: Output) -> Result<(), Failure> {
    let loaded = load(paths)?;
    let set = loaded.resources;
    let clusters: Vec<_> = set.clusters.into_iter().map(|c| c.value).collect();
    let workloads: Vec<_> = set.workloads.into_iter().map(|w| w.value).collect();
    let policies: Vec<_> = set.policies.into_iter().map(|p| p.value).collect();
    let mode = match mode {
        Some(ModeArg::Fresh) => Mode::Fresh,
        Some(ModeArg::Rebalance) => Mode::Rebalance,
        None => Mode::default_for(&workloads),
    };
    let snapshot = Snapshot {
        clusters: &clusters,
        workloads: &workloads,
        policies: &policies,
    };
    let plan = engine::plan(&snapshot, mode)
        .map_err(|error| Failure::Input(vec![format!("error: {error}")]))?;
    let text = match output {
        Output::Json => plan_output::json(&plan)
            .context("rendering the plan as JSON")
            .map_err(Failure::Operation)?,
        Output::Table => plan_output::table(&plan, &clusters),
    };
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // The reader went away (`ferry plan ... | head`): nothing failed on our side.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result
            .context("writing the plan")
            .map_err(Failure::Operation),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_parse_like_people_write_them() {
        for (text, seconds) in [
            ("90s", 90),
            ("30m", 1800),
            ("1h", 3600),
            ("1h30m", 5400),
            ("7d", 604_800),
            ("0s", 0),
        ] {
            assert_eq!(
                super::parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
        for bad in ["", "10", "1x", "h", "1.5h", "-1s"] {
            assert!(super::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
