//! `ferry serve --config FILE`: the broker over the Cluster, Workload and PlacementPolicy
//! files of the folders its config names, watched for changes.
//!
//! A changed, added or removed file takes effect without a restart; a set with an error
//! is rejected as a whole — its errors go to the event stream (`resources.rejected`) and
//! the log — and the last good set stays in force.
//!
//! Members are `provider: kubernetes` (a kubeconfig file and context, through the
//! Kubernetes adapter), `provider: openstack` with the kubeconfig of a cluster that exists
//! (`spec.openstack.kubernetes`), or `provider: sim`. Clusters Ferry provisions itself
//! come through the API instead (`ferry cluster create`, `provisioning.rs`) and are kept
//! in the store. `provider: gke` names one GKE cluster or a project and location whose
//! clusters are all members (`gke.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use ferry_adapter_kubernetes::KubeCluster;
use ferry_auth::VerificationKey;
use ferry_policies::control::Mode;
use ferry_policies::model::{Cluster, Connection, KubeconfigRef, Overrides, WorkloadScope};
use ferry_policies::resources::ResourceSet;
use ferry_ports::ClusterPort;
use serde::Deserialize;
use serde_json::json;

use super::api::AppState;
use super::controllers::ControllerConfig;
use super::gke::GkeSettings;
use super::history::{self, HistoryConfig};
use super::migration::EngineConfig;
use super::provisioning::ProvisioningConfig;
use super::run::{self, BrokerConfig};
use super::sims;
use super::world::{Member, World, kube_port};

/// The config file (TOML).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    pub listen: SocketAddr,
    /// Store, signing key.
    pub data: PathBuf,
    /// Files or folders of Cluster, Workload and PlacementPolicy documents.
    pub resources: Vec<PathBuf>,
    /// How often the files are looked at (default 2s).
    #[serde(default)]
    pub watch_interval: Option<String>,
    #[serde(default)]
    pub migrations: MigrationsConfig,
    /// The dashboard's cost history: how often it is sampled, how many points are kept.
    #[serde(default)]
    pub cost_history: CostHistoryConfig,
    /// An identity provider's key; without it the broker verifies its own HS256 tokens.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Clusters Ferry provisions on OpenStack.
    #[serde(default)]
    pub provisioning: ProvisioningSettings,
    /// Where Google's APIs are, for GKE members.
    #[serde(default)]
    pub gke: GkeSettings,
    /// The rebalance and failover loops (`docs/controllers.md`).
    #[serde(default)]
    pub controllers: ControllersSettings,
    /// Connections and plans: what a client can make the broker hold or compute.
    #[serde(default)]
    pub http: HttpSettings,
    /// How much of the audit log is kept.
    #[serde(default)]
    pub audit: AuditSettings,
    /// The tokens the broker accepts.
    #[serde(default)]
    pub tokens: TokenSettings,
}

/// `[http]`: every setting optional, with the defaults of `run::Bounds`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpSettings {
    pub max_connections: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_concurrent_plans: Option<usize>,
    /// Workloads × clusters of a what-if plan.
    pub max_plan_size: Option<usize>,
}

/// `[audit]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuditSettings {
    pub max_records: Option<usize>,
    pub max_age: Option<String>,
}

/// `[tokens]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TokenSettings {
    pub max_lifetime: Option<String>,
}

/// The bounds of `[http]`, `[audit]` and `[tokens]`, each checked.
pub fn bounds(config: &Config) -> anyhow::Result<run::Bounds> {
    let defaults = run::Bounds::default();
    let http = &config.http;
    let positive = |value: Option<usize>, default: usize, what: &str| match value {
        Some(0) => anyhow::bail!("config {what}: must be at least 1"),
        Some(value) => Ok(value),
        None => Ok(default),
    };
    let connections = super::listener::ConnectionLimits {
        max_connections: positive(
            http.max_connections,
            defaults.connections.max_connections,
            "[http] max-connections",
        )?,
        header_read_timeout: duration(
            http.header_read_timeout.as_deref(),
            defaults.connections.header_read_timeout,
            "[http] header-read-timeout",
        )?,
        idle_timeout: duration(
            http.idle_timeout.as_deref(),
            defaults.connections.idle_timeout,
            "[http] idle-timeout",
        )?,
    };
    if connections.header_read_timeout.is_zero() {
        anyhow::bail!("config [http] header-read-timeout: must be above zero");
    }
    // A request may take 30 s without moving a byte (a large plan): it must not be cut.
    if connections.idle_timeout < Duration::from_secs(31) {
        anyhow::bail!(
            "config [http] idle-timeout: must be longer than the 30 s a request may take"
        );
    }
    let max_lifetime = duration(
        config.tokens.max_lifetime.as_deref(),
        defaults.max_token_lifetime,
        "[tokens] max-lifetime",
    )?;
    if max_lifetime.is_zero() {
        anyhow::bail!("config [tokens] max-lifetime: must be above zero");
    }
    Ok(run::Bounds {
        connections,
        max_concurrent_plans: positive(
            http.max_concurrent_plans,
            defaults.max_concurrent_plans,
            "[http] max-concurrent-plans",
        )?,
        max_plan_size: positive(
            http.max_plan_size,
            defaults.max_plan_size,
            "[http] max-plan-size",
        )?,
        audit: super::audit::Retention {
            max_records: positive(
                config.audit.max_records,
                defaults.audit.max_records,
                "[audit] max-records",
            )?,
            max_age: duration(
                config.audit.max_age.as_deref(),
                defaults.audit.max_age,
                "[audit] max-age",
            )?,
        },
        max_token_lifetime: max_lifetime,
    })
}

/// `[controllers]`: every setting optional, with the defaults of `ControllerConfig`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ControllersSettings {
    /// `recommend` (default: moves are shown, not started) or `auto`.
    pub mode: Option<String>,
    pub interval: Option<String>,
    pub failover_after: Option<String>,
    pub stable_after: Option<String>,
    pub price_memory: Option<String>,
    pub max_concurrent_moves: Option<u32>,
    pub export_refresh: Option<String>,
    /// Capacity on demand: the most nodes a member may be grown to (default 0: never).
    pub max_nodes: Option<u32>,
}

impl ControllersSettings {
    pub fn config(&self) -> anyhow::Result<ControllerConfig> {
        let defaults = ControllerConfig::default();
        let mode = match self.mode.as_deref() {
            None => defaults.mode,
            Some(text) => Mode::parse(text).ok_or_else(|| {
                anyhow::anyhow!("config [controllers] mode: `{text}` is neither recommend nor auto")
            })?,
        };
        let at_least_a_second = |d: Duration, what: &str| {
            if d < Duration::from_secs(1) {
                anyhow::bail!("config [controllers] {what}: must be at least 1s");
            }
            Ok(d)
        };
        let config = ControllerConfig {
            mode,
            interval: at_least_a_second(
                duration(
                    self.interval.as_deref(),
                    defaults.interval,
                    "[controllers] interval",
                )?,
                "interval",
            )?,
            failover_after: duration(
                self.failover_after.as_deref(),
                defaults.failover_after,
                "[controllers] failover-after",
            )?,
            stable_after: duration(
                self.stable_after.as_deref(),
                defaults.stable_after,
                "[controllers] stable-after",
            )?,
            price_memory: duration(
                self.price_memory.as_deref(),
                defaults.price_memory,
                "[controllers] price-memory",
            )?,
            max_concurrent_moves: self
                .max_concurrent_moves
                .unwrap_or(defaults.max_concurrent_moves),
            export_refresh: at_least_a_second(
                duration(
                    self.export_refresh.as_deref(),
                    defaults.export_refresh,
                    "[controllers] export-refresh",
                )?,
                "export-refresh",
            )?,
            max_nodes: self.max_nodes.unwrap_or(defaults.max_nodes),
        };
        Ok(config)
    }
}

/// `[provisioning]`: where the OpenStack credentials are, and how stacks are followed.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ProvisioningSettings {
    /// The clouds.yaml with the clouds Cluster files name (default: where the `openstack`
    /// client looks: OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack, /etc/openstack).
    pub clouds_yaml: Option<PathBuf>,
    /// How long a stack create, update or delete may take (default 60m).
    pub deadline: Option<String>,
    /// The longest wait between two looks at a stack (default 30s).
    pub poll: Option<String>,
}

/// Tokens signed by an OIDC provider: exactly one of the key settings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    /// A PEM public key for RS256 tokens.
    pub rs256_public_key: Option<PathBuf>,
    /// A PEM public key for ES256 tokens.
    pub es256_public_key: Option<PathBuf>,
    /// A JWKS document (the provider's `jwks_uri`, saved to a file), keys chosen by `kid`.
    pub jwks_file: Option<PathBuf>,
}

impl AuthConfig {
    fn external(&self, base: &Path) -> anyhow::Result<run::ExternalAuth> {
        let read = |p: &PathBuf| {
            let path = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            std::fs::read_to_string(&path)
                .with_context(|| format!("auth key file {}", path.display()))
        };
        let key = match (
            &self.rs256_public_key,
            &self.es256_public_key,
            &self.jwks_file,
        ) {
            (Some(p), None, None) => VerificationKey::Rs256PublicPem(read(p)?),
            (None, Some(p), None) => VerificationKey::Es256PublicPem(read(p)?),
            (None, None, Some(p)) => VerificationKey::Jwks(read(p)?),
            _ => anyhow::bail!(
                "[auth] needs exactly one of rs256-public-key, es256-public-key, jwks-file"
            ),
        };
        Ok(run::ExternalAuth {
            key,
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MigrationsConfig {
    pub step_deadline: Option<String>,
    pub rollback_window: Option<String>,
    pub max_concurrent: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CostHistoryConfig {
    /// Time between two samples (default 60s).
    pub interval: Option<String>,
    /// Points kept, the oldest dropped beyond it (default 2000).
    pub max_points: Option<usize>,
}

/// The files' state: modification time and size per file, to notice any change.
fn fingerprint(paths: &[PathBuf]) -> BTreeMap<PathBuf, (Option<SystemTime>, u64)> {
    let mut seen = BTreeMap::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            seen.insert(path, (None, 0));
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(Result::ok).map(|e| e.path()));
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml")
        {
            seen.insert(path, (meta.modified().ok(), meta.len()));
        }
    }
    seen
}

/// Reads and checks the resource files; every problem, in one list.
fn load(paths: &[PathBuf]) -> Result<ResourceSet, Vec<String>> {
    let loaded = ferry_adapter_files::load(paths).map_err(|e| vec![e.to_string()])?;
    let mut problems: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    for cluster in &loaded.resources.clusters {
        let refusal = match &cluster.value.connection {
            Connection::Sim | Connection::Kubernetes(_) | Connection::Gke(_) => None,
            Connection::Openstack(openstack) if openstack.kubeconfig.is_some() => None,
            Connection::Openstack(_) => Some(
                "an openstack cluster in a file needs spec.openstack.kubernetes (the kubeconfig of a cluster that exists); to have Ferry provision it, send the file with `ferry cluster create -f`",
            ),
        };
        if let Some(refusal) = refusal {
            problems.push(format!(
                "{}:{}: cluster {}: {refusal}",
                cluster.file, cluster.pos.line, cluster.value.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(loaded.resources)
    } else {
        Err(problems)
    }
}

/// The members' ports, kept across reloads (a simulated cluster's state, a Kubernetes
/// member's watches, a GKE member's token renewal), with what they were made from.
#[derive(Default)]
struct Ports {
    /// The port of each kubernetes, openstack and sim file, by member name.
    single: BTreeMap<String, (PortSpec, Arc<dyn ClusterPort>)>,
    /// The members each GKE file stands for, by the file's cluster name: found again only
    /// when the file changes, not on every reload of the others (each finding asks Google
    /// for a token, the cluster list and the catalog, and opens new watches).
    gke: BTreeMap<String, (Cluster, Vec<Arc<Member>>)>,
}

/// What a member's port is built from: a change to any of it builds a new port (the
/// adapter takes the scope and overrides at construction).
type PortSpec = (Connection, WorkloadScope, Overrides);

fn port_spec(cluster: &Cluster) -> PortSpec {
    (
        cluster.connection.clone(),
        cluster.scope.clone(),
        cluster.overrides.clone(),
    )
}

/// Members for the loaded set: a member whose connection, scope and overrides did not
/// change keeps its port (a simulated cluster its state, a Kubernetes member its
/// watches); a new simulated one starts with the workloads whose files say they run there.
async fn members(
    set: &ResourceSet,
    running: &Ports,
    base: &Path,
    gke: &GkeSettings,
) -> anyhow::Result<(Vec<Arc<Member>>, Ports)> {
    let mut members = Vec::new();
    let mut ports = Ports::default();
    for cluster in set.clusters.iter().map(|c| &c.value) {
        // A GKE file may stand for several clusters.
        if let Connection::Gke(connection) = &cluster.connection {
            let found = match running.gke.get(&cluster.name) {
                Some((file, found)) if file == cluster => found.clone(),
                _ => super::gke::members(cluster, connection, gke, base)
                    .await?
                    .into_iter()
                    .map(|found| {
                        Arc::new(Member {
                            definition: found.definition,
                            port: found.port,
                            price_source: Some(found.price_source),
                            provisioner: Some(found.provisioner),
                        })
                    })
                    .collect(),
            };
            members.extend(found.iter().cloned());
            ports
                .gke
                .insert(cluster.name.clone(), (cluster.clone(), found));
            continue;
        }
        let port: Arc<dyn ClusterPort> = match running.single.get(&cluster.name) {
            Some((spec, port)) if *spec == port_spec(cluster) => Arc::clone(port),
            _ => match kubeconfig_of(&cluster.connection) {
                Some(reference) => {
                    let path = Path::new(&reference.kubeconfig);
                    let path = if path.is_absolute() {
                        path.to_path_buf()
                    } else {
                        base.join(path)
                    };
                    // The port's error names the cluster already ("cluster kube-9
                    // rejected ..."): no second prefix.
                    let kube = KubeCluster::from_kubeconfig(
                        &cluster.name,
                        &path,
                        reference.context.as_deref(),
                        cluster.scope.namespaces.clone(),
                    )
                    .await?;
                    kube_port(kube, cluster)
                }
                None => {
                    let sim =
                        sims::from_definition(cluster, Duration::from_secs(2), Duration::ZERO);
                    sims::seed(&sim, &cluster.name, set.workloads.iter().map(|w| &w.value))?;
                    Arc::new(sim)
                }
            },
        };
        ports.single.insert(
            cluster.name.clone(),
            (port_spec(cluster), Arc::clone(&port)),
        );
        members.push(Arc::new(Member {
            definition: cluster.clone(),
            port,
            price_source: None,
            provisioner: None,
        }));
    }
    Ok((members, ports))
}

/// The kubeconfig that reaches a member: a kubernetes cluster's, or an existing
/// OpenStack-hosted cluster's (`load` refuses an openstack file without one).
fn kubeconfig_of(connection: &Connection) -> Option<&KubeconfigRef> {
    match connection {
        Connection::Kubernetes(reference) => Some(reference),
        Connection::Openstack(openstack) => openstack.kubeconfig.as_ref(),
        Connection::Gke(_) | Connection::Sim => None,
    }
}

fn duration(text: Option<&str>, default: Duration, what: &str) -> anyhow::Result<Duration> {
    text.map_or(Ok(default), |t| {
        crate::parse_duration(t).map_err(|e| anyhow::anyhow!("config {what}: {e}"))
    })
}

/// Reads the config; an error names the file and what is wrong.
pub fn read_config(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The resource paths, relative ones taken from the config file's folder.
fn resource_paths(config: &Config, config_path: &Path) -> Vec<PathBuf> {
    let base = config_path.parent().unwrap_or(Path::new("."));
    config
        .resources
        .iter()
        .map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        })
        .collect()
}

/// Checks the resource files before anything starts: bad input is reported as such.
pub fn check(config: &Config, config_path: &Path) -> Result<(), Vec<String>> {
    let mut problems = load(&resource_paths(config, config_path))
        .err()
        .unwrap_or_default();
    if let Err(problem) = history_config(&config.cost_history) {
        problems.push(format!("error: {}: {problem}", config_path.display()));
    }
    if let Err(problem) = config.controllers.config() {
        problems.push(format!("error: {}: {problem}", config_path.display()));
    }
    if let Err(problem) = bounds(config) {
        problems.push(format!("error: {}: {problem}", config_path.display()));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// `[provisioning]` with its defaults; relative paths from the config file's folder.
fn provisioning_config(
    settings: &ProvisioningSettings,
    base: &Path,
) -> anyhow::Result<ProvisioningConfig> {
    let mut config = ProvisioningConfig::new(base.to_path_buf());
    config.clouds_yaml = settings.clouds_yaml.as_ref().map(|p| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    });
    config.follow.deadline = duration(
        settings.deadline.as_deref(),
        config.follow.deadline,
        "[provisioning] deadline",
    )?;
    config.follow.max_delay = duration(
        settings.poll.as_deref(),
        config.follow.max_delay,
        "[provisioning] poll",
    )?;
    config.follow.first_delay = config.follow.first_delay.min(config.follow.max_delay);
    Ok(config)
}

/// The sampler's settings from `[cost-history]`, with their defaults.
fn history_config(config: &CostHistoryConfig) -> Result<HistoryConfig, String> {
    let interval = duration(
        config.interval.as_deref(),
        history::DEFAULT_INTERVAL,
        "[cost-history] interval",
    )
    .map_err(|e| e.to_string())?;
    let max_points = config.max_points.unwrap_or(history::DEFAULT_MAX_POINTS);
    if interval.is_zero() || max_points == 0 {
        return Err("[cost-history] interval and max-points must be above zero".to_owned());
    }
    Ok(HistoryConfig {
        interval,
        max_points,
    })
}

pub async fn run(config: Config, config_path: &Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Relative paths in the config are relative to the config file.
    let base = config_path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let paths = resource_paths(&config, config_path);
    let data = resolve(&config.data);
    // Held until the broker stops: no second broker on this folder meanwhile.
    let _data_lock = run::lock_data_folder(&data)?;
    let watch = duration(
        config.watch_interval.as_deref(),
        Duration::from_secs(2),
        "watch-interval",
    )?;
    let engine = EngineConfig {
        step_deadline: duration(
            config.migrations.step_deadline.as_deref(),
            Duration::from_secs(600),
            "step-deadline",
        )?,
        // One GET of the workload per running migration: cheap for the API server, and
        // it bounds what the broker adds to a rollout's end at a quarter second.
        poll: Duration::from_millis(250),
        rollback_window: duration(
            config.migrations.rollback_window.as_deref(),
            Duration::from_secs(600),
            "rollback-window",
        )?,
        max_concurrent: config.migrations.max_concurrent.unwrap_or(4),
    };
    let history = history_config(&config.cost_history).map_err(|e| anyhow::anyhow!(e))?;
    let controllers = config.controllers.config()?;
    let bounds = bounds(&config)?;
    let provisioning = provisioning_config(&config.provisioning, base)?;
    let gke = config.gke.clone();
    let auth = match &config.auth {
        Some(auth) => Some(auth.external(config_path.parent().unwrap_or(Path::new(".")))?),
        None => None,
    };
    let set = load(&paths).map_err(|problems| {
        anyhow::anyhow!("the resource files have errors:\n{}", problems.join("\n"))
    })?;
    let base = config_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let (members, mut ports) = members(&set, &Ports::default(), &base, &gke).await?;
    let world = World::new(
        members,
        set.workloads.iter().map(|w| w.value.clone()).collect(),
        set.policies.iter().map(|p| p.value.clone()).collect(),
    );
    let (stop_sender, stop_receiver) = tokio::sync::oneshot::channel::<()>();
    let (running, server) = run::start(
        world,
        BrokerConfig {
            listen: config.listen,
            data: data.clone(),
            engine,
            auth,
            history,
            provisioning,
            controllers,
            bounds,
        },
        async move {
            let _ = stop_receiver.await;
        },
    )
    .await?;
    println!("ferry serve: listening on http://{}", running.addr);
    println!("  data folder: {}", data.display());
    println!(
        "  watching:    {}",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let state = running.state.clone();
    let mut last = fingerprint(&paths);
    let mut ticker = tokio::time::interval(watch);
    let mut server = server;
    // Pinned once: a signal that arrives between two ticks is not lost.
    let stop = run::stop_signal();
    tokio::pin!(stop);
    let signal = loop {
        tokio::select! {
            signal = &mut stop => break signal,
            result = &mut server => {
                result.context("the server task")?.context("the server")?;
                eprintln!("ferry serve: stopped");
                return Ok(());
            }
            _ = ticker.tick() => {
                let now = fingerprint(&paths);
                if now != last {
                    last = now;
                    ports = reload(&state, &paths, ports, &base, &gke).await;
                }
            }
        }
    };
    run::stop("ferry serve", signal, &state, stop_sender, server).await;
    eprintln!("ferry serve: stopped");
    Ok(())
}

/// Applies the files as they are now, or keeps the last good set and says why.
async fn reload(
    state: &AppState,
    paths: &[PathBuf],
    ports: Ports,
    base: &Path,
    gke: &GkeSettings,
) -> Ports {
    let set = match load(paths) {
        Ok(set) => set,
        Err(problems) => {
            tracing::warn!(
                errors = problems.len(),
                "resource files rejected; the last good set stays in force"
            );
            for problem in &problems {
                tracing::warn!("{problem}");
            }
            state.metrics.reload_rejected(format!(
                "a change of the resource files was rejected at {} with {} error(s), the first: {}",
                super::clock::now(),
                problems.len(),
                problems.first().map_or("", String::as_str)
            ));
            state
                .events
                .publish("resources.rejected", None, json!({"errors": problems}));
            return ports;
        }
    };
    let (members, new_ports) = match members(&set, &ports, base, gke).await {
        Ok(built) => built,
        Err(error) => {
            tracing::warn!("resource files rejected; the last good set stays in force: {error:#}");
            state.metrics.reload_rejected(format!(
                "a change of the resource files was rejected at {}: {error:#}",
                super::clock::now()
            ));
            state.events.publish(
                "resources.rejected",
                None,
                json!({"errors": [format!("{error:#}")]}),
            );
            return ports;
        }
    };
    state.world.replace_from_files(
        members,
        set.workloads.iter().map(|w| w.value.clone()).collect(),
        set.policies.iter().map(|p| p.value.clone()).collect(),
    );
    state.metrics.reload_applied();
    if let Err(error) = super::policies::refresh(state) {
        tracing::warn!(?error, "policies kept in the store no longer fit the files");
    }
    let clusters: Vec<&str> = set.clusters.iter().map(|c| c.value.name.as_str()).collect();
    tracing::info!(
        clusters = clusters.len(),
        policies = set.policies.len(),
        "resource files reloaded"
    );
    state.events.publish(
        "resources.reloaded",
        None,
        json!({"clusters": clusters, "policies": set.policies.len(), "workloads": set.workloads.len()}),
    );
    new_ports
}
