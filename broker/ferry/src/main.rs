//! `ferry`: the command line. Offline commands (`plan`, `validate`) work on resource
//! files with no broker and no network; the broker's commands join them as it grows.
//!
//! Exit status: 0 success, 1 a failed operation, 2 a usage or input error.

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
    version,
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

fn validate(paths: &[PathBuf]) -> Result<(), Failure> {
    let loaded = load(paths)?;
    let set = &loaded.resources;
    // Policy conflicts depend on the workloads a policy selects: check them as `plan` would.
    let workloads: Vec<_> = set.workloads.iter().map(|w| w.value.clone()).collect();
    let policies: Vec<_> = set.policies.iter().map(|p| p.value.clone()).collect();
    if let Err(error @ engine::PlanError::PolicyConflict { .. }) = engine::plan(
        &Snapshot {
            clusters: &[],
            workloads: &workloads,
            policies: &policies,
        },
        Mode::Fresh,
    ) {
        return Err(Failure::Input(vec![format!("error: {error}")]));
    }
    println!(
        "{} file(s) valid: {} cluster(s), {} workload(s), {} placement polic(ies)",
        loaded.files.len(),
        set.clusters.len(),
        set.workloads.len(),
        set.policies.len()
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
        None if workloads.iter().any(|w| w.current_cluster.is_some()) => Mode::Rebalance,
        None => Mode::Fresh,
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
