//! Starting the broker: the store and keys in the data folder, the migration engine (with
//! the migrations a previous process left), the API on its listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use ferry_auth::{Minter, Role, VerificationKey, Verifier};
use ferry_store::Store;

use super::api::{AppState, Planner, router};
use super::audit;
use super::controllers::{ControlClock, ControllerConfig, Controllers};
use super::events::Events;
use super::history::{self, HistoryConfig};
use super::listener::{self, ConnectionLimits};
use super::migration::{Engine, EngineConfig};
use super::provisioning::{self, Provisioning, ProvisioningConfig};
use super::world::World;

/// The `iss` and `aud` of the tokens this broker mints and accepts with its own key.
pub const ISSUER: &str = "ferry";
pub const AUDIENCE: &str = "ferry-api";

pub struct BrokerConfig {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub engine: EngineConfig,
    /// Who signs the tokens this broker accepts; `None` for its own HS256 key.
    pub auth: Option<ExternalAuth>,
    /// The cost history's sampler (the dashboard's chart).
    pub history: HistoryConfig,
    /// Clusters Ferry provisions (OpenStack Heat): where their files and clouds are.
    pub provisioning: ProvisioningConfig,
    /// The rebalance and failover loops.
    pub controllers: ControllerConfig,
    /// What bounds the broker's resources against its clients.
    pub bounds: Bounds,
}

/// The bounds on what clients can make the broker hold or do (`[http]`, `[audit]` and
/// `[tokens]` of the config; `docs/operations.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub connections: ConnectionLimits,
    pub max_concurrent_plans: usize,
    /// The largest what-if plan, in workloads × clusters.
    pub max_plan_size: usize,
    pub audit: audit::Retention,
    /// The longest lifetime of a token the broker accepts (and `ferry token create` mints).
    pub max_token_lifetime: std::time::Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            connections: ConnectionLimits::default(),
            max_concurrent_plans: super::api::DEFAULT_MAX_CONCURRENT_PLANS,
            max_plan_size: super::api::DEFAULT_MAX_PLAN_SIZE,
            audit: audit::Retention::default(),
            max_token_lifetime: std::time::Duration::from_secs(
                ferry_auth::DEFAULT_MAX_LIFETIME_SECS,
            ),
        }
    }
}

/// An identity provider's key (OIDC): tokens are then verified with it, not the broker's
/// own key.
pub struct ExternalAuth {
    pub key: VerificationKey,
    pub issuer: String,
    pub audience: String,
}

/// A running broker.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub minter: Minter,
}

pub fn minter(data: &Path) -> anyhow::Result<Minter> {
    let key = ferry_auth::load_or_create_hs256_key(data)
        .with_context(|| format!("the signing key in {}", data.display()))?;
    Ok(Minter::new(key, ISSUER, AUDIENCE))
}

/// The lock file in a data folder, held by the broker using it.
pub const LOCK_FILE: &str = "ferry.lock";

/// A broker's exclusive hold on its data folder; released when dropped or when the process
/// ends, however it ends (the OS drops the lock with the file handle).
#[derive(Debug)]
pub struct DataLock {
    _file: std::fs::File,
    /// The folder held nothing else when it was locked: a new data folder.
    pub new_folder: bool,
}

/// Creates the data folder if need be and locks it (`ferry.lock`, an exclusive advisory
/// lock), before anything else in it is read or written: a second broker on the same folder
/// would otherwise rewrite the first's files before failing on the store. Fails at once,
/// naming the folder and the holder's process id, if another process holds it.
pub fn lock_data_folder(data: &Path) -> anyhow::Result<DataLock> {
    use std::io::{Read, Seek, Write};
    std::fs::create_dir_all(data)
        .with_context(|| format!("create the data folder {}", data.display()))?;
    let path = data.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    match fs2::FileExt::try_lock_exclusive(&file) {
        Ok(()) => {}
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (process {pid})"),
            };
            anyhow::bail!(
                "the data folder {} is in use by another Ferry broker{holder}: it holds {}. \
                 Stop that broker first, or give this one another data folder",
                data.display(),
                path.display()
            );
        }
        Err(e) => return Err(e).with_context(|| format!("lock {}", path.display())),
    }
    let new_folder = std::fs::read_dir(data)
        .with_context(|| format!("read the data folder {}", data.display()))?
        .map(|entry| entry.map(|e| e.file_name() == LOCK_FILE))
        .collect::<std::io::Result<Vec<bool>>>()
        .with_context(|| format!("read the data folder {}", data.display()))?
        .into_iter()
        .all(|is_lock| is_lock);
    // Who holds it, for the message of the next broker that tries.
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("write {}", path.display()))?;
    Ok(DataLock {
        _file: file,
        new_folder,
    })
}

/// Opens the store, resumes unfinished migrations and binds the listener; the returned
/// future serves until `shutdown` resolves.
pub async fn start(
    world: World,
    config: BrokerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(Running, tokio::task::JoinHandle<std::io::Result<()>>)> {
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("create the data folder {}", config.data.display()))?;
    let sled = ferry_store::SledKv::open(&config.data.join("store"))
        .with_context(|| format!("open the store in {}", config.data.display()))?;
    let store = Store::new(Arc::new(super::blocking_kv::OffTheRuntime::new(sled)));
    let key = ferry_auth::load_or_create_hs256_key(&config.data)
        .with_context(|| format!("the signing key in {}", config.data.display()))?;
    let verifier = match config.auth {
        None => Verifier::new(VerificationKey::Hs256(key.clone()), ISSUER, AUDIENCE),
        Some(external) => Verifier::new(external.key, &external.issuer, &external.audience),
    }
    .context("the token verifier")?
    .with_max_lifetime(config.bounds.max_token_lifetime.as_secs());
    let events = Events::new();
    let world = Arc::new(world);
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::clone(&world),
        events.clone(),
        config.engine,
    ));
    let state = Arc::new(AppState {
        world,
        engine: Arc::clone(&engine),
        store,
        events,
        verifier,
        metrics: super::metrics::Metrics::default(),
        provisioning: Provisioning::new(config.provisioning),
        controllers: Controllers::new(config.controllers, control_clock()),
        planner: Planner::new(
            config.bounds.max_concurrent_plans,
            config.bounds.max_plan_size,
        ),
        unauthenticated: audit::Unauthenticated::default(),
    });
    super::policies::refresh(&state)
        .map_err(|e| anyhow::anyhow!("the policies kept in the store: {e:?}"))?;
    let resumed = engine.resume_all().context("read unfinished migrations")?;
    if resumed > 0 {
        tracing::info!(resumed, "resuming migrations a previous broker left");
    }
    let journaled = provisioning::resume(&state)
        .map_err(|e| anyhow::anyhow!("read the provisioned clusters: {e:?}"))?;
    if journaled > 0 {
        tracing::info!(journaled, "reconnecting the clusters Ferry provisioned");
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listen on {}", config.listen))?;
    let addr = listener.local_addr().context("the bound address")?;
    history::spawn(Arc::clone(&state), config.history);
    audit::spawn_pruner(state.store.clone(), config.bounds.audit);
    Controllers::spawn(Arc::clone(&state));
    let app = router(Arc::clone(&state));
    let server = tokio::spawn(listener::serve(
        listener,
        app,
        config.bounds.connections,
        shutdown,
    ));
    Ok((
        Running {
            addr,
            state: Arc::clone(&state),
            minter: Minter::new(key, ISSUER, AUDIENCE)
                .with_max_lifetime(config.bounds.max_token_lifetime.as_secs()),
        },
        server,
    ))
}

/// An admin token for the person who started the broker.
pub fn admin_token(minter: &Minter, ttl: std::time::Duration) -> anyhow::Result<String> {
    minter
        .mint("demo-admin", &[Role::Admin], None, ttl)
        .context("mint the admin token")
}

/// Resolves when the process is asked to stop: Ctrl-C (SIGINT) or SIGTERM (what service
/// managers and `kill` send), which are handled the same way. Says which it was.
pub async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            },
            Err(error) => {
                // Without the handler SIGTERM keeps its default action (exit 143): say so.
                tracing::warn!(%error, "cannot watch for SIGTERM; only Ctrl-C stops cleanly");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Longest wait for open connections (an event stream, a slow client) once the listener
/// has stopped accepting: a stop must not hang on a dashboard left open.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The clean stop of `serve` and `demo`: no new connections, the open ones get
/// [`DRAIN_LIMIT`] to finish, and migrations under way are left as their journal has
/// them, for the next start to resume (each step is idempotent, so one cut short is run
/// again).
pub async fn stop(
    who: &str,
    signal: &str,
    state: &AppState,
    stop_server: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) {
    eprintln!("{who}: stopping ({signal})");
    tracing::info!(signal, "stopping");
    let _ = stop_server.send(());
    match tokio::time::timeout(DRAIN_LIMIT, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::warn!(%error, "the server ended with an error"),
        Ok(Err(error)) => tracing::warn!(%error, "the server task failed"),
        Err(_) => tracing::info!(
            limit = ?DRAIN_LIMIT,
            "connections still open after the drain limit are closed"
        ),
    }
    let unfinished = state
        .engine
        .list()
        .map(|all| all.iter().filter(|m| !m.state.is_final()).count())
        .unwrap_or(0);
    if unfinished > 0 {
        eprintln!(
            "{who}: {unfinished} migration(s) under way are kept; the next start resumes them"
        );
    }
}

/// The controllers' clock: the wall clock, unless the test hook
/// `FERRY_TEST_CONTROL_CLOCK=<unix seconds>` starts it at a chosen instant, so that a test
/// of rules that depend on the time of day (a policy's windows) does not depend on when it
/// runs.
fn control_clock() -> ControlClock {
    match std::env::var("FERRY_TEST_CONTROL_CLOCK")
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
    {
        Some(unix) => {
            tracing::warn!(
                unix,
                "test hook: the controllers' clock starts at {}",
                super::clock::rfc3339(unix)
            );
            ControlClock::starting_at(unix)
        }
        None => ControlClock::wall(),
    }
}
