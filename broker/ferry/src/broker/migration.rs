//! The migration engine: a stored state machine, journaled before every side effect, so
//! that a broker killed at any instant resumes or rolls back on restart.
//!
//! Steps: **plan** (the workload serves on the source; the target is healthy and has
//! room; savings), **prepare** (export the object graph from the source, check the target
//! answers), **start** (apply on the target, marked with the migration id, and wait until
//! it is available), **drain** (scale the source to zero and mark it Ferry's). Then, after
//! the rollback window, the drained source is deleted. On failure, timeout or cancel the
//! steps are undone in reverse: the source is scaled back, the target's copy deleted.
//!
//! Invariants:
//! - a step is marked `running` in the store before its side effect, and `done` after;
//!   every step is idempotent, so resuming repeats the current step;
//! - the source keeps serving until the target is available (drain comes after start),
//!   and rollback restores the source before it deletes the target: never zero serving
//!   copies, and two only while a step is in flight;
//! - one migration per workload: a lock key in the store, taken in the same atomic write
//!   that stores the new record, and released in the same write that stores its final
//!   state, so that no lock ever names a migration that is missing or over (locks an
//!   older broker left so are released at start-up);
//! - Ferry only deletes what carries its mark.
//!
//! An **evacuation** (the failover controller's move off a cluster that is down) cannot
//! read or drain its source: it applies the objects last read from the source (kept in
//! memory, [`Engine::remember_export`]) and records the source as *fenced*. When the
//! source answers again, its stale copy is scaled to zero first, then deleted, so that
//! the workload is never served from two clusters by surprise.

use std::sync::Arc;
use std::time::Duration;

use ferry_ports::{
    ExistingClaim, ExportedWorkload, Mark, ObjectRef, PortError, Rollout, WorkloadFate, WorkloadKey,
};
use ferry_store::{Store, StoreError, Versioned};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use super::events::Events;
use super::world::{Census, World};
use super::{audit, clock};

pub const PREFIX: &str = "migrations/";
const LOCKS: &str = "locks/";
const CANCELS: &str = "cancels/";
/// The forward steps, in order.
pub const STEPS: [&str; 4] = ["plan", "prepare", "start", "drain"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    Pending,
    Running,
    Done,
    RollingBack,
    RolledBack,
    Failed,
    Cancelled,
}

impl State {
    /// The name in the API (the records' serialized form).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Done => "done",
            State::RollingBack => "rollingBack",
            State::RolledBack => "rolledBack",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Done | State::RolledBack | State::Failed | State::Cancelled
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
    Skipped,
    RollingBack,
    RolledBack,
}

impl StepState {
    /// The name in the API (the records' serialized form), for audit lines and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            StepState::RollingBack => "rollingBack",
            StepState::RolledBack => "rolledBack",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub name: String,
    pub state: StepState,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Migration {
    pub id: String,
    pub workload: String,
    pub namespace: String,
    pub from: String,
    pub to: String,
    pub dry_run: bool,
    pub state: State,
    pub steps: Vec<Step>,
    pub created_by: String,
    pub created_at: String,
    pub ended_at: Option<String>,
    /// Why it failed, rolled back or was cancelled.
    pub reason: Option<String>,
    /// Replicas on the source when planned: what a rollback restores.
    pub source_replicas: Option<u32>,
    pub monthly_savings: Option<f64>,
    /// The drained source has been deleted (after the rollback window).
    pub source_removed: bool,
    /// Who asked for it: a person, or which controller.
    #[serde(default)]
    pub trigger: Trigger,
    /// The source was down (an evacuation): it was not drained, and its stale copy is
    /// scaled to zero and deleted when it answers again.
    #[serde(default)]
    pub fenced: bool,
    /// The request accepted that the workload's claims stay behind and the target starts
    /// on new, empty ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_empty_volumes: bool,
    /// An admin moved it although its policy's hard rules forbid the target.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forced: bool,
    /// The workload's dependents (the objects of its graph beside itself, and its
    /// claims), recorded before the first apply: what a rollback removes from the target,
    /// what the drain adopts on the source and the removal deletes there with the
    /// drained copy. Names only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectRef>,
}

/// What a request asks of a move beside its workload and target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoveOptions {
    /// Move a workload whose pods use claims: the target gets new, empty claims (volume
    /// data does not move yet).
    pub accept_empty_volumes: bool,
    /// Move even where a hard rule of the governing policy forbids the target. The API
    /// grants it to admins only.
    pub force: bool,
}

/// The plan step's findings.
struct Planned {
    replicas: u32,
    monthly_savings: f64,
    message: String,
}

/// A dry run's answer: what the plan step would find, with nothing stored, locked or
/// published.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRun {
    /// Always true: tells this answer from a migration.
    pub dry_run: bool,
    pub workload: String,
    pub from: String,
    pub to: String,
    /// Whether the move would start (and pass its plan step) now.
    pub feasible: bool,
    /// The plan step's finding, or why the move would be refused.
    pub message: String,
    pub replicas: Option<u32>,
    pub monthly_savings: Option<f64>,
    /// Every claim the workload's pods use, and what a move does with it.
    pub claims: Vec<ClaimFate>,
}

/// A claim, and what a move does with it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimFate {
    pub name: String,
    pub size_bytes: Option<u64>,
    /// What becomes of it, in a sentence.
    pub fate: String,
    /// A claim of that name the target holds already (the move is then refused), with
    /// when it was created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_target: Option<ExistingClaim>,
}

impl ClaimFate {
    /// `data-db-0 (1.0 GiB): new, empty claim on kube-b; ...`
    fn line(&self) -> String {
        let claim = ferry_ports::Claim {
            name: self.name.clone(),
            size_bytes: self.size_bytes,
        };
        format!("{claim}: {}", self.fate)
    }
}

/// Refuses a move onto a target that holds claims of the workload's claims' names.
fn refuse_existing_claims(
    key: &WorkloadKey,
    to: &str,
    fates: &[ClaimFate],
) -> Result<(), SubmitError> {
    let existing: Vec<String> = fates
        .iter()
        .filter(|f| f.on_target.is_some())
        .map(|f| f.name.clone())
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    Err(SubmitError::ClaimsExist {
        workload: key.to_string(),
        namespace: key.namespace.clone(),
        target: to.to_owned(),
        them: if existing.len() == 1 { "it" } else { "them" },
        claims: format!(
            "claim{} {}",
            if existing.len() == 1 { "" } else { "s" },
            fates
                .iter()
                .filter_map(|f| f.on_target.as_ref().map(|t| (f, t)))
                .map(|(f, t)| format!("{} ({})", f.name, created_ago(t)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// `created 2026-12-08T04:10:00Z, 18 min ago` (or what the cluster said).
fn created_ago(claim: &ExistingClaim) -> String {
    let mark = claim
        .mark
        .as_ref()
        .map(|m| format!(", marked by migration {}", m.migration))
        .unwrap_or_default();
    let Some(created) = claim.created_at.as_deref() else {
        return format!("creation time unknown{mark}");
    };
    match clock::parse(created) {
        Some(at) => {
            let age = clock::unix_now().saturating_sub(at);
            let age = if age < 120 {
                format!("{age} s")
            } else if age < 7200 {
                format!("{} min", age / 60)
            } else {
                format!("{} h", age / 3600)
            };
            format!("created {created}, {age} ago{mark}")
        }
        None => format!("created {created}{mark}"),
    }
}

/// Why a migration was started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    /// A person, through the API, the CLI or the dashboard.
    #[default]
    Manual,
    /// The rebalance controller, for savings.
    Cost,
    /// The rebalance controller, because a policy's hard rule excludes the source now.
    Policy,
    /// The failover controller: the source is down.
    Failover,
    /// The failover controller: back to the recovered cluster the policy prefers.
    Return,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Cost => "cost",
            Trigger::Policy => "policy",
            Trigger::Failover => "failover",
            Trigger::Return => "return",
        }
    }

    pub const ALL: [Trigger; 5] = [
        Trigger::Manual,
        Trigger::Cost,
        Trigger::Policy,
        Trigger::Failover,
        Trigger::Return,
    ];
}

impl Versioned for Migration {
    const KIND: &'static str = "migration";
    const SCHEMA: u32 = 1;
}

/// Who holds a workload's migration lock.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lock {
    migration: String,
}

impl Versioned for Lock {
    const KIND: &'static str = "migration-lock";
    const SCHEMA: u32 = 1;
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CancelRequest {
    by: String,
}

impl Versioned for CancelRequest {
    const KIND: &'static str = "migration-cancel";
    const SCHEMA: u32 = 1;
}

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Longest time one step may take before the migration rolls back.
    pub step_deadline: Duration,
    /// How often a rollout is looked at.
    pub poll: Duration,
    /// How long a drained source is kept for a manual rollback before it is deleted.
    pub rollback_window: Duration,
    /// Migrations that run at once, broker-wide.
    pub max_concurrent: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            step_deadline: Duration::from_secs(600),
            poll: Duration::from_millis(500),
            rollback_window: Duration::from_secs(600),
            max_concurrent: 4,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cluster {0} is not a member of this federation")]
    UnknownCluster(String),
    #[error("workload {0} does not run on any reachable cluster")]
    UnknownWorkload(String),
    #[error("workload {workload} already runs on {cluster}")]
    AlreadyThere { workload: String, cluster: String },
    #[error("workload {workload} is being migrated by {migration}")]
    Busy { workload: String, migration: String },
    #[error("cannot read the claims on {cluster}: {reason}")]
    TargetUnreadable { cluster: String, reason: String },
    #[error("no copy of {workload}'s objects was read from {cluster} before it went down")]
    NothingToEvacuate { workload: String, cluster: String },
    #[error(
        "{cluster} still holds the stale copy of {workload} that {migration} fenced; it is scaled to zero and deleted once {cluster} answers"
    )]
    StaleCopy {
        workload: String,
        cluster: String,
        migration: String,
    },
    #[error(
        "the pods of {workload} use claims {claims}; Ferry does not move volume data yet, so {target} would start on new, empty volumes. Ask again with acceptEmptyVolumes (ferry migrate --accept-empty-volumes) if empty volumes will do"
    )]
    UsesClaims {
        workload: String,
        target: String,
        claims: String,
    },
    #[error(
        "moving {workload} to {cluster} breaks policy {policy}: {rule}; an admin can force it (force: true, ferry migrate --force)"
    )]
    BreaksPolicy {
        workload: String,
        cluster: String,
        policy: String,
        rule: String,
    },
    #[error(
        "{target} already holds {claims}: the move would reattach {them} with older data and lose what {workload} wrote since. Delete {them} on {target} (kubectl delete pvc -n {namespace} ...) and ask again"
    )]
    ClaimsExist {
        workload: String,
        namespace: String,
        target: String,
        claims: String,
        them: &'static str,
    },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl SubmitError {
    /// A refusal a dry run reports as its finding rather than as an error.
    fn is_finding(&self) -> bool {
        matches!(
            self,
            SubmitError::UsesClaims { .. }
                | SubmitError::ClaimsExist { .. }
                | SubmitError::BreaksPolicy { .. }
                | SubmitError::Busy { .. }
                | SubmitError::StaleCopy { .. }
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no migration {0}")]
    NotFound(String),
    #[error("migration {id} has already ended ({})", state.as_str())]
    Ended { id: String, state: State },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

/// Why a step did not complete.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("cancelled by {0}")]
    Cancelled(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

pub struct Engine {
    store: Store,
    world: Arc<World>,
    events: Events,
    permits: Arc<Semaphore>,
    config: EngineConfig,
    /// Test hook (`FERRY_TEST_PAUSE_AT=<step>:<before|after>`): stop at that boundary so
    /// that the crash-safety test can SIGKILL the broker exactly there.
    pause_at: Option<String>,
    /// The last thing a running step waited for, per migration: a step that runs out of
    /// time says why (e.g. the scheduler's reason for pods left Pending).
    waiting_for: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// Since when an undo has been refused, per migration (in memory: a restart grants
    /// a refused rollback another full period).
    undo_refused_since: std::sync::Mutex<std::collections::BTreeMap<String, std::time::Instant>>,
    /// The objects last read from each workload's serving copy, for evacuations. In
    /// memory only: they may hold Secrets, which the broker never stores.
    exports: std::sync::Mutex<std::collections::BTreeMap<WorkloadKey, RememberedExport>>,
}

/// A workload's objects as read from `cluster` at `at` (Unix seconds).
#[derive(Clone, Debug)]
pub struct RememberedExport {
    pub cluster: String,
    pub at: u64,
    pub workload: ExportedWorkload,
}

fn random_id() -> String {
    let mut bytes = [0u8; 6];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if read.is_err() {
        // No kernel randomness (not a Linux host?): the clock still makes ids unique
        // enough for one broker, and the lock keys, not ids, guard concurrency.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes.copy_from_slice(&nanos.to_le_bytes()[..6]);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("mig-{hex}")
}

impl Engine {
    pub fn new(store: Store, world: Arc<World>, events: Events, config: EngineConfig) -> Engine {
        Engine {
            store,
            world,
            events,
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
            pause_at: std::env::var("FERRY_TEST_PAUSE_AT").ok(),
            waiting_for: std::sync::Mutex::default(),
            undo_refused_since: std::sync::Mutex::default(),
            exports: std::sync::Mutex::default(),
        }
    }

    /// The kept objects, locked (nothing panics under this lock; if something did, the
    /// map is still whole).
    fn exports(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<WorkloadKey, RememberedExport>> {
        self.exports
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps the objects just read from a workload's serving copy (see [`Trigger::Failover`]).
    pub fn remember_export(&self, export: RememberedExport) {
        self.exports().insert(export.workload.key.clone(), export);
    }

    /// The objects last read from `key`'s serving copy.
    pub fn remembered_export(&self, key: &WorkloadKey) -> Option<RememberedExport> {
        self.exports().get(key).cloned()
    }

    /// Every workload whose objects are kept for an evacuation: `(workload, cluster,
    /// read at)`.
    pub fn remembered_exports(&self) -> Vec<(WorkloadKey, String, u64)> {
        self.exports()
            .values()
            .map(|e| (e.workload.key.clone(), e.cluster.clone(), e.at))
            .collect()
    }

    /// Keeps only the remembered objects `keep` wants (called under the lock: `keep`
    /// must not call back into the engine).
    pub fn forget_exports(&self, mut keep: impl FnMut(&RememberedExport) -> bool) {
        self.exports().retain(|_, export| keep(export));
    }

    pub fn get(&self, id: &str) -> Result<Option<Migration>, StoreError> {
        self.store.get(&format!("{PREFIX}{id}"))
    }

    /// Every migration, newest first.
    pub fn list(&self) -> Result<Vec<Migration>, StoreError> {
        let mut all: Vec<Migration> = self
            .store
            .list::<Migration>(PREFIX)?
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        Ok(all)
    }

    fn save(&self, migration: &Migration) -> Result<(), StoreError> {
        self.store
            .put(&format!("{PREFIX}{}", migration.id), migration)
    }

    /// Checks the request, takes the workload's lock, stores the migration and starts it.
    pub async fn submit(
        self: &Arc<Self>,
        workload: &WorkloadKey,
        to: &str,
        options: &MoveOptions,
        created_by: &str,
        client: Option<&str>,
    ) -> Result<Migration, SubmitError> {
        self.submit_as(workload, to, options, created_by, client, Trigger::Manual)
            .await
    }

    /// [`Engine::submit`] for a controller, which says why.
    pub async fn submit_as(
        self: &Arc<Self>,
        workload: &WorkloadKey,
        to: &str,
        options: &MoveOptions,
        created_by: &str,
        client: Option<&str>,
        trigger: Trigger,
    ) -> Result<Migration, SubmitError> {
        if self.world.member(to).is_none() {
            return Err(SubmitError::UnknownCluster(to.to_owned()));
        }
        let census = self.world.census().await;
        let (from, _) = census
            .locate(workload)
            .ok_or_else(|| SubmitError::UnknownWorkload(workload.to_string()))?;
        self.no_stale_copy_on(workload, to)?;
        self.admit(&census, workload, from, to, options, false)?;
        let fates = self
            .claim_fates(&census, workload, (from, to), options, false, None)
            .await?;
        refuse_existing_claims(workload, to, &fates)?;
        self.start(
            workload, from, to, options, created_by, client, trigger, false,
        )
    }

    /// What moving `workload` to `to` would do, found as the plan step finds it, with
    /// nothing changed: no record, no lock, no event, no audit line.
    pub async fn dry_run(
        &self,
        workload: &WorkloadKey,
        to: &str,
        options: &MoveOptions,
    ) -> Result<DryRun, SubmitError> {
        if self.world.member(to).is_none() {
            return Err(SubmitError::UnknownCluster(to.to_owned()));
        }
        let census = self.world.census().await;
        let (from, _) = census
            .locate(workload)
            .ok_or_else(|| SubmitError::UnknownWorkload(workload.to_string()))?;
        if from == to {
            return Err(SubmitError::AlreadyThere {
                workload: workload.to_string(),
                cluster: to.to_owned(),
            });
        }
        let claims = self
            .claim_fates(&census, workload, (from, to), options, false, None)
            .await?;
        let mut answer = DryRun {
            dry_run: true,
            workload: workload.to_string(),
            from: from.to_owned(),
            to: to.to_owned(),
            feasible: false,
            message: String::new(),
            replicas: None,
            monthly_savings: None,
            claims,
        };
        let admitted = self
            .admit(&census, workload, from, to, options, false)
            .and_then(|()| refuse_existing_claims(workload, to, &answer.claims))
            .and_then(|()| self.busy_or_stale(workload, to));
        match admitted {
            Ok(()) => {}
            Err(finding) if finding.is_finding() => {
                answer.message = finding.to_string();
                return Ok(answer);
            }
            Err(error) => return Err(error),
        }
        match self.plan_move(&census, workload, from, to, false, None, None) {
            Ok(planned) => {
                answer.feasible = true;
                answer.message = planned.message;
                answer.replicas = Some(planned.replicas);
                answer.monthly_savings = Some(planned.monthly_savings);
            }
            Err(StepError::Store(error)) => return Err(error.into()),
            Err(refused) => answer.message = refused.to_string(),
        }
        Ok(answer)
    }

    /// The checks a move must pass before anything is stored: its claims (volume data
    /// does not move yet) and the hard rules of its governing policy for the target.
    fn admit(
        &self,
        census: &Census,
        key: &WorkloadKey,
        from: &str,
        to: &str,
        options: &MoveOptions,
        fenced: bool,
    ) -> Result<(), SubmitError> {
        if !options.accept_empty_volumes {
            let claims: Vec<String> = if fenced {
                // Named as the census names them (with their sizes).
                self.remembered_export(key)
                    .map(|e| e.workload.claims.iter().map(ToString::to_string).collect())
                    .unwrap_or_default()
            } else {
                census.claims_on(key, from)
            };
            if !claims.is_empty() {
                return Err(SubmitError::UsesClaims {
                    workload: key.to_string(),
                    target: to.to_owned(),
                    claims: claims.join(", "),
                });
            }
        }
        if !options.force {
            let input = self.world.plan_input(census);
            // A conflict between policies is reported by the plan and the controllers;
            // it leaves nothing to check here.
            if let Ok(Some(broken)) =
                ferry_policies::engine::hard_rule_against(&input.snapshot(), &key.to_string(), to)
            {
                return Err(SubmitError::BreaksPolicy {
                    workload: key.to_string(),
                    cluster: to.to_owned(),
                    policy: broken.policy,
                    rule: broken.rule,
                });
            }
        }
        Ok(())
    }

    /// Another migration holds the workload, or `to` holds its fenced stale copy.
    fn busy_or_stale(&self, workload: &WorkloadKey, to: &str) -> Result<(), SubmitError> {
        self.no_stale_copy_on(workload, to)?;
        if let Some(lock) = self.store.get::<Lock>(&format!("{LOCKS}{workload}"))? {
            return Err(SubmitError::Busy {
                workload: workload.to_string(),
                migration: lock.migration,
            });
        }
        Ok(())
    }

    /// A copy applied beside a fenced stale one would be scaled to zero with it.
    fn no_stale_copy_on(&self, workload: &WorkloadKey, to: &str) -> Result<(), SubmitError> {
        let workload_name = workload.to_string();
        if let Some(stale) = self.list()?.into_iter().find(|m| {
            m.fenced
                && m.state == State::Done
                && !m.source_removed
                && m.from == to
                && m.workload == workload_name
        }) {
            return Err(SubmitError::StaleCopy {
                workload: workload_name,
                cluster: to.to_owned(),
                migration: stale.id,
            });
        }
        Ok(())
    }

    /// Every claim the workload's pods use, and what a move to `to` does with it: the
    /// target gets a new, empty claim (and the source's goes with the drained copy), or
    /// the target already holds one of that name, which refuses the move; without
    /// `accept_empty_volumes` each blocks the move. A claim on the target that carries
    /// `ours` (the migration's own copy made it: a resumed plan) is not an older one.
    async fn claim_fates(
        &self,
        census: &Census,
        key: &WorkloadKey,
        (from, to): (&str, &str),
        options: &MoveOptions,
        fenced: bool,
        ours: Option<&Mark>,
    ) -> Result<Vec<ClaimFate>, SubmitError> {
        let claims: Vec<ferry_ports::Claim> = if fenced {
            self.remembered_export(key)
                .map(|e| e.workload.claims)
                .unwrap_or_default()
        } else {
            census
                .copy_on(key, from)
                .map(|w| w.claims.clone())
                .unwrap_or_default()
        };
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = claims.iter().map(|c| c.name.clone()).collect();
        let existing = match self.world.member(to) {
            Some(member) => member
                .port
                .claims(&key.namespace, &names)
                .await
                .map_err(|error| SubmitError::TargetUnreadable {
                    cluster: to.to_owned(),
                    reason: error.to_string(),
                })?,
            None => return Err(SubmitError::UnknownCluster(to.to_owned())),
        };
        Ok(claims
            .into_iter()
            .map(|claim| {
                let on_target = existing
                    .iter()
                    .find(|e| e.name == claim.name && (ours.is_none() || e.mark.as_ref() != ours))
                    .cloned();
                let fate = match &on_target {
                    Some(held) => format!(
                        "{to} already holds a claim of that name ({}): refused, it would be reattached with older data",
                        created_ago(held)
                    ),
                    None if options.accept_empty_volumes => format!(
                        "new, empty claim on {to}; the one on {from} is deleted with the drained copy after the rollback window"
                    ),
                    None => "blocks the move: volume data does not move yet".to_owned(),
                };
                ClaimFate {
                    name: claim.name,
                    size_bytes: claim.size_bytes,
                    fate,
                    on_target,
                }
            })
            .collect())
    }

    /// The data `key`'s claims on `from` hold, in GiB.
    fn data_gib(&self, census: &Census, key: &WorkloadKey, from: &str) -> f64 {
        census
            .copy_on(key, from)
            .map_or(0.0, |w| ferry_ports::claims_gib(&w.claims))
    }

    /// Moves `workload` off `from`, which is down, onto `to`, from the objects last read
    /// from `from` (a fenced migration: see the module's comment).
    pub async fn evacuate(
        self: &Arc<Self>,
        workload: &WorkloadKey,
        from: &str,
        to: &str,
        created_by: &str,
    ) -> Result<Migration, SubmitError> {
        if self.world.member(to).is_none() {
            return Err(SubmitError::UnknownCluster(to.to_owned()));
        }
        if self
            .remembered_export(workload)
            .is_none_or(|e| e.cluster != from)
        {
            return Err(SubmitError::NothingToEvacuate {
                workload: workload.to_string(),
                cluster: from.to_owned(),
            });
        }
        let census = self.world.census().await;
        self.admit(&census, workload, from, to, &MoveOptions::default(), true)?;
        let fates = self
            .claim_fates(
                &census,
                workload,
                (from, to),
                &MoveOptions::default(),
                true,
                None,
            )
            .await?;
        refuse_existing_claims(workload, to, &fates)?;
        self.start(
            workload,
            from,
            to,
            &MoveOptions::default(),
            created_by,
            None,
            Trigger::Failover,
            true,
        )
    }

    #[allow(clippy::too_many_arguments)] // one private constructor of the record
    fn start(
        self: &Arc<Self>,
        workload: &WorkloadKey,
        from: &str,
        to: &str,
        options: &MoveOptions,
        created_by: &str,
        client: Option<&str>,
        trigger: Trigger,
        fenced: bool,
    ) -> Result<Migration, SubmitError> {
        self.no_stale_copy_on(workload, to)?;
        if from == to {
            return Err(SubmitError::AlreadyThere {
                workload: workload.to_string(),
                cluster: to.to_owned(),
            });
        }
        let id = random_id();
        let lock = format!("{LOCKS}{workload}");
        let migration = Migration {
            id: id.clone(),
            workload: workload.to_string(),
            namespace: workload.namespace.clone(),
            from: from.to_owned(),
            to: to.to_owned(),
            // Dry runs no longer make records (`Engine::dry_run`); older records may be.
            dry_run: false,
            state: State::Pending,
            steps: STEPS
                .iter()
                .map(|name| Step {
                    name: (*name).to_owned(),
                    state: StepState::Pending,
                    started_at: None,
                    ended_at: None,
                    message: None,
                })
                .collect(),
            created_by: created_by.to_owned(),
            created_at: clock::now(),
            ended_at: None,
            reason: None,
            source_replicas: None,
            monthly_savings: None,
            source_removed: false,
            trigger,
            fenced,
            accept_empty_volumes: options.accept_empty_volumes,
            forced: options.force,
            objects: Vec::new(),
        };
        // The lock and the record in one write: a broker killed around a submit leaves
        // both or neither, never a lock naming a migration that does not exist.
        let taken = self
            .store
            .batch()
            .absent(&lock)
            .put(
                &lock,
                &Lock {
                    migration: id.clone(),
                },
            )
            .put(&format!("{PREFIX}{id}"), &migration)
            .commit()?;
        if !taken {
            let holder = self
                .store
                .get::<Lock>(&lock)?
                .map_or_else(|| "another migration".to_owned(), |l| l.migration);
            return Err(SubmitError::Busy {
                workload: workload.to_string(),
                migration: holder,
            });
        }
        let _ = audit::record(
            &self.store,
            created_by,
            "migration.create",
            &format!(
                "{id} {workload} {from} -> {to}{}{}{}",
                if options.force { " (forced)" } else { "" },
                if options.accept_empty_volumes {
                    " (empty volumes accepted)"
                } else {
                    ""
                },
                match trigger {
                    Trigger::Manual => String::new(),
                    other => format!(" ({})", other.as_str()),
                }
            ),
            client,
            "accepted",
        );
        self.publish_state(&migration);
        let engine = Arc::clone(self);
        tokio::spawn(async move { engine.run(id).await });
        Ok(migration)
    }

    /// Asks a running migration to stop and roll back.
    pub fn cancel(
        &self,
        id: &str,
        by: &str,
        client: Option<&str>,
    ) -> Result<Migration, CancelError> {
        let migration = self
            .get(id)?
            .ok_or_else(|| CancelError::NotFound(id.to_owned()))?;
        if migration.state.is_final() {
            return Err(CancelError::Ended {
                id: id.to_owned(),
                state: migration.state,
            });
        }
        // A key of its own, so that the runner's saves cannot overwrite the request.
        self.store.put(
            &format!("{CANCELS}{id}"),
            &CancelRequest { by: by.to_owned() },
        )?;
        let _ = audit::record(&self.store, by, "migration.cancel", id, client, "requested");
        self.events.publish(
            "migration.cancelRequested",
            Some(&migration.namespace),
            json!({"id": id, "by": by}),
        );
        Ok(migration)
    }

    fn cancelled_by(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .get::<CancelRequest>(&format!("{CANCELS}{id}"))?
            .map(|c| c.by))
    }

    /// Picks up what a previous broker process left: unfinished migrations resume (the
    /// current step again, or the rollback), drained sources still to delete are deleted.
    pub fn resume_all(self: &Arc<Self>) -> Result<usize, StoreError> {
        self.release_orphaned_locks()?;
        let mut resumed = 0;
        for migration in self.list()? {
            if !migration.state.is_final()
                || (migration.state == State::Done
                    && !migration.dry_run
                    && !migration.source_removed)
            {
                resumed += 1;
                let engine = Arc::clone(self);
                let id = migration.id.clone();
                tokio::spawn(async move { engine.run(id).await });
            }
        }
        Ok(resumed)
    }

    /// Releases the locks that name a migration which does not exist or has ended: what
    /// a broker older than the one-write lock could leave when killed between taking a
    /// lock and storing its record, or between ending a migration and releasing it. Run
    /// at start-up, before any submit, so that nothing in flight is mistaken for one.
    fn release_orphaned_locks(&self) -> Result<(), StoreError> {
        for (key, lock) in self.store.list::<Lock>(LOCKS)? {
            let holder = self.get(&lock.migration)?;
            if holder.as_ref().is_some_and(|m| !m.state.is_final()) {
                continue;
            }
            self.store.delete(&key)?;
            {
                let why = match holder {
                    None => "it does not exist".to_owned(),
                    Some(m) => format!("it has ended ({})", m.state.as_str()),
                };
                tracing::warn!(%key, migration = %lock.migration, "released a lock whose migration {why}");
                let _ = audit::record(
                    &self.store,
                    "broker",
                    "migration.lockReleased",
                    &format!("{} {}", key.trim_start_matches(LOCKS), lock.migration),
                    None,
                    &format!("released: {} {why}", lock.migration),
                );
            }
        }
        Ok(())
    }

    fn publish_state(&self, migration: &Migration) {
        self.events.publish(
            "migration.state",
            Some(&migration.namespace),
            json!({
                "id": migration.id, "workload": migration.workload, "from": migration.from,
                "to": migration.to, "state": migration.state, "reason": migration.reason,
            }),
        );
    }

    fn publish_step(&self, migration: &Migration, step: usize) {
        let s = &migration.steps[step];
        self.events.publish(
            "migration.step",
            Some(&migration.namespace),
            json!({
                "id": migration.id, "workload": migration.workload, "step": s.name,
                "state": s.state, "message": s.message,
            }),
        );
        let _ = audit::record(
            &self.store,
            "broker",
            "migration.step",
            &format!("{} {}", migration.id, s.name),
            None,
            &format!(
                "{}{}",
                s.state.as_str(),
                s.message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        );
    }

    async fn pause_if_asked(&self, step: &str, boundary: &str) {
        if self.pause_at.as_deref() == Some(&format!("{step}:{boundary}")) {
            eprintln!("ferry: test hook: paused at {step}:{boundary}");
            std::future::pending::<()>().await;
        }
    }

    /// Drives one migration to a final state. Runs again from the store's record after a
    /// restart, so it never trusts what it held in memory across awaits.
    async fn run(self: Arc<Self>, id: String) {
        self.pause_if_asked("run", "begin").await;
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        loop {
            let migration = match self.get(&id) {
                Ok(Some(m)) => m,
                Ok(None) => return,
                Err(error) => {
                    tracing::error!(%id, %error, "cannot read migration; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let outcome = match migration.state {
                State::Pending => self.transition(migration, State::Running, None),
                State::Running => self.forward(migration).await,
                State::RollingBack => self.backward(migration).await,
                State::Done => {
                    self.pause_if_asked("end", "after").await;
                    // Waiting out the rollback window is not work: it must not hold one
                    // of the slots that cap running migrations.
                    drop(permit);
                    self.remove_drained_source(migration).await;
                    return;
                }
                State::RolledBack | State::Failed | State::Cancelled => return,
            };
            if let Err(error) = outcome {
                // The store failed under us: wait and read the record again.
                tracing::error!(%id, %error, "migration step could not be recorded; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    fn transition(
        &self,
        mut migration: Migration,
        state: State,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        migration.state = state;
        if reason.is_some() {
            migration.reason = reason;
        }
        if state.is_final() {
            migration.ended_at = Some(clock::now());
        }
        if state.is_final() {
            // The final state and the lock's release in one write (see `start`).
            self.store
                .batch()
                .put(&format!("{PREFIX}{}", migration.id), &migration)
                .delete(&format!("{LOCKS}{}", migration.workload))
                .commit()?;
            let _ = audit::record(
                &self.store,
                "broker",
                "migration.end",
                &migration.id,
                None,
                state.as_str(),
            );
        } else {
            self.save(&migration)?;
        }
        self.publish_state(&migration);
        Ok(())
    }

    /// Runs the first step that is not done.
    async fn forward(&self, mut migration: Migration) -> Result<(), StoreError> {
        if let Some(by) = self.cancelled_by(&migration.id)? {
            return self.transition(
                migration,
                State::RollingBack,
                Some(format!("cancelled by {by}")),
            );
        }
        let Some(index) = migration
            .steps
            .iter()
            .position(|s| !matches!(s.state, StepState::Done | StepState::Skipped))
        else {
            self.pause_if_asked("end", "before").await;
            return self.transition(migration, State::Done, None);
        };
        let name = migration.steps[index].name.clone();
        if migration.steps[index].state != StepState::Running {
            migration.steps[index].state = StepState::Running;
            migration.steps[index].started_at = Some(clock::now());
            migration.steps[index].message = None;
            self.save(&migration)?;
            self.publish_step(&migration, index);
        }
        self.pause_if_asked(&name, "before").await;
        let id = migration.id.clone();
        // A control-plane blip (an API server restarting, a dropped connection) is waited
        // out within the step's deadline: every step is idempotent, so it runs again.
        let attempts = async {
            loop {
                match self.execute(&name, &mut migration).await {
                    Err(StepError::Port(error)) if error.is_transient() => {
                        if let Some(by) = self.cancelled_by(&id)? {
                            return Err(StepError::Cancelled(by));
                        }
                        tracing::warn!(%id, step = %name, %error, "step waits for the cluster");
                        self.set_waiting_for(&id, Some(format!("{error} (trying again)")));
                        tokio::time::sleep(self.config.poll.max(Duration::from_secs(1))).await;
                    }
                    other => return other,
                }
            }
        };
        let result = match tokio::time::timeout(self.config.step_deadline, attempts).await {
            Ok(result) => result,
            Err(_) => Err(StepError::Refused(format!(
                "step {name} did not finish within {} s{}",
                self.config.step_deadline.as_secs(),
                self.waiting_for(&migration.id)
                    .map(|w| format!("; it was waiting for: {w}"))
                    .unwrap_or_default()
            ))),
        };
        self.set_waiting_for(&migration.id, None);
        self.pause_if_asked(&name, "after").await;
        let step = &mut migration.steps[index];
        step.ended_at = Some(clock::now());
        match result {
            Ok(message) => {
                step.state = StepState::Done;
                step.message = Some(message);
                if migration.dry_run && name == "plan" {
                    for later in &mut migration.steps[index + 1..] {
                        later.state = StepState::Skipped;
                    }
                }
                self.save(&migration)?;
                self.publish_step(&migration, index);
                Ok(())
            }
            Err(StepError::Store(error)) => Err(error),
            Err(error) => {
                step.state = StepState::Failed;
                step.message = Some(error.to_string());
                self.save(&migration)?;
                self.publish_step(&migration, index);
                let reason = format!("{name}: {error}");
                self.transition(migration, State::RollingBack, Some(reason))
            }
        }
    }

    /// One forward step's side effects. Idempotent.
    async fn execute(&self, step: &str, migration: &mut Migration) -> Result<String, StepError> {
        let key = WorkloadKey::parse(&migration.workload)
            .ok_or_else(|| StepError::Refused(format!("bad workload {}", migration.workload)))?;
        let mark = Mark {
            migration: migration.id.clone(),
        };
        let source = self.member(&migration.from)?;
        let target = self.member(&migration.to)?;
        match step {
            "plan" => {
                let census = self.world.census().await;
                let options = MoveOptions {
                    accept_empty_volumes: migration.accept_empty_volumes,
                    force: migration.forced,
                };
                // The world may have changed since the request was admitted.
                self.admit(
                    &census,
                    &key,
                    &migration.from,
                    &migration.to,
                    &options,
                    migration.fenced,
                )
                .map_err(|refusal| StepError::Refused(refusal.to_string()))?;
                let fates = self
                    .claim_fates(
                        &census,
                        &key,
                        (&migration.from, &migration.to),
                        &options,
                        migration.fenced,
                        Some(&mark),
                    )
                    .await
                    .map_err(|refusal| StepError::Refused(refusal.to_string()))?;
                refuse_existing_claims(&key, &migration.to, &fates)
                    .map_err(|refusal| StepError::Refused(refusal.to_string()))?;
                let planned = self.plan_move(
                    &census,
                    &key,
                    &migration.from,
                    &migration.to,
                    migration.fenced,
                    migration.source_replicas,
                    Some(&mark),
                )?;
                migration.source_replicas = Some(planned.replicas);
                migration.monthly_savings = Some(planned.monthly_savings);
                Ok(format!("{}{}", planned.message, claims_sentence(&fates)))
            }
            "prepare" if migration.fenced => {
                let export = self.fenced_export(&key, migration)?;
                target.inventory().await?;
                record_dependents(migration, &export.workload);
                Ok(format!(
                    "{} is down: {} objects as read from it at {}; {} answers{}",
                    migration.from,
                    export.workload.objects.len(),
                    clock::rfc3339(export.at),
                    migration.to,
                    claims_of_export(&export.workload)
                ))
            }
            "prepare" => {
                let exported = source.export(&key).await?;
                target.inventory().await?;
                record_dependents(migration, &exported);
                Ok(format!(
                    "{} objects exported from {}; {} answers{}",
                    exported.objects.len(),
                    migration.from,
                    migration.to,
                    claims_of_export(&exported)
                ))
            }
            "start" => {
                let mut exported = if migration.fenced {
                    self.fenced_export(&key, migration)?.workload
                } else {
                    source.export(&key).await?
                };
                if let Some(replicas) = migration.source_replicas {
                    // After a crash mid-drain the source may show fewer: apply what served.
                    exported.replicas = replicas;
                }
                // Journaled before the apply: whatever of it gets created, a rollback
                // finds in the record.
                if record_dependents(migration, &exported) {
                    self.save(migration)?;
                }
                target.apply(&exported, &mark).await?;
                // Published when it changes, not on every poll.
                let mut last_progress = None;
                loop {
                    if let Some(by) = self.cancelled_by(&migration.id)? {
                        return Err(StepError::Cancelled(by));
                    }
                    match target.rollout(&key).await? {
                        Rollout::Available { replicas } => {
                            return Ok(format!(
                                "{replicas} replicas available on {}",
                                migration.to
                            ));
                        }
                        Rollout::Failed { reason } => return Err(StepError::Refused(reason)),
                        Rollout::Progressing {
                            desired,
                            available,
                            message,
                        } => {
                            self.set_waiting_for(
                                &migration.id,
                                Some(format!("{available} of {desired} available; {message}")),
                            );
                            let progress = json!({"id": migration.id, "step": "start",
                                                  "desired": desired, "available": available,
                                                  "message": message});
                            if last_progress.as_ref() != Some(&progress) {
                                self.events.publish(
                                    "migration.progress",
                                    Some(&migration.namespace),
                                    progress.clone(),
                                );
                                last_progress = Some(progress);
                            }
                        }
                    }
                    tokio::time::sleep(self.config.poll).await;
                }
            }
            "drain" if migration.fenced => Ok(format!(
                "{} is down, so it is fenced rather than drained: its copy is scaled to zero, then deleted, when it answers again",
                migration.from
            )),
            "drain" => {
                let drained = source.drain(&key, &migration.objects, &mark).await?;
                let kept = drained
                    .kept
                    .iter()
                    .map(|k| format!("{} ({})", k.object, k.reason))
                    .collect::<Vec<_>>();
                Ok(format!(
                    "{} scaled to zero; kept {} s for a rollback, then deleted with the {} object{} it adopted{}",
                    migration.from,
                    self.config.rollback_window.as_secs(),
                    drained.adopted.len(),
                    if drained.adopted.len() == 1 { "" } else { "s" },
                    if kept.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; left in place, in use by other workloads: {}",
                            kept.join(", ")
                        )
                    }
                ))
            }
            other => Err(StepError::Refused(format!("unknown step {other}"))),
        }
    }

    /// The plan step's findings for moving `key` from `from` to `to`: the target answers,
    /// is Ready and has room; the replicas that move and what it saves. Changes nothing,
    /// so a dry run is this alone. `mark`: a copy of this migration's already on the
    /// target (a resumed plan) needs no new room.
    #[allow(clippy::too_many_arguments)] // the plan step's inputs, each needed
    fn plan_move(
        &self,
        census: &Census,
        key: &WorkloadKey,
        from: &str,
        to: &str,
        fenced: bool,
        source_replicas: Option<u32>,
        mark: Option<&Mark>,
    ) -> Result<Planned, StepError> {
        let (serving, requests) = if fenced {
            let export = self.fenced_export_of(key, from)?;
            (export.workload.replicas, export.workload.requests)
        } else {
            let running = census
                .copy_on(key, from)
                .ok_or_else(|| StepError::Refused(format!("{key} no longer runs on {from}")))?;
            (running.replicas, running.requests)
        };
        let inventory = match census.inventories.get(to) {
            Some(Ok(inventory)) => inventory.clone(),
            Some(Err(error)) => return Err(StepError::Refused(error.to_string())),
            None => return Err(StepError::Refused(format!("no cluster {}", to))),
        };
        if inventory.health != ferry_ports::Health::Ready {
            return Err(StepError::Refused(format!(
                "{} is {}",
                to,
                inventory.health.as_str()
            )));
        }
        let replicas = source_replicas.unwrap_or(serving);
        let needed = requests.times(replicas);
        // A copy of ours already there (a resumed plan) needs no new room.
        let ours = inventory
            .workloads
            .iter()
            .any(|w| &w.key == key && mark.is_some() && w.mark.as_ref() == mark);
        let free = inventory.allocatable.minus(inventory.requested);
        if !ours && !needed.fits_in(free) {
            return Err(StepError::Refused(format!(
                "{} has {} cpu and {} free, needs {} and {}",
                to,
                ferry_policies::quantity::Cpu(free.cpu_millis),
                ferry_policies::quantity::Memory(free.memory_bytes),
                ferry_policies::quantity::Cpu(needed.cpu_millis),
                ferry_policies::quantity::Memory(needed.memory_bytes),
            )));
        }
        let cost = |cluster: &str| {
            self.world.member(cluster).map(|m| {
                m.definition
                    .pricing
                    .monthly_cost(ferry_policies::quantity::Resources::new(
                        needed.cpu_millis,
                        needed.memory_bytes,
                    ))
            })
        };
        let savings = match (cost(from), cost(to)) {
            (Some(from), Some(to)) => super::world::cents(from - to),
            _ => 0.0,
        };
        let data_gib = self.data_gib(census, key, from);
        let data = if data_gib > 0.0 {
            format!("; its claims hold {data_gib:.1} GiB, whose data does not move")
        } else {
            String::new()
        };
        Ok(Planned {
            replicas,
            monthly_savings: savings,
            message: format!("{replicas} replicas fit on {to}; monthly savings {savings:.2}{data}"),
        })
    }

    /// The objects an evacuation applies: those last read from its source.
    fn fenced_export(
        &self,
        key: &WorkloadKey,
        migration: &Migration,
    ) -> Result<RememberedExport, StepError> {
        self.fenced_export_of(key, &migration.from)
    }

    fn fenced_export_of(
        &self,
        key: &WorkloadKey,
        from: &str,
    ) -> Result<RememberedExport, StepError> {
        self.remembered_export(key)
            .filter(|e| e.cluster == from)
            .ok_or_else(|| {
                StepError::Refused(format!(
                    "the objects of {key} read from {from} are no longer known (the broker restarted while {from} was down)"
                ))
            })
    }

    /// Whether a refused undo is still within its grace period (the step deadline) since
    /// the first refusal.
    fn keep_trying_undo(&self, id: &str) -> bool {
        let mut refused = self
            .undo_refused_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = *refused
            .entry(id.to_owned())
            .or_insert_with(std::time::Instant::now);
        since.elapsed() < self.config.step_deadline
    }

    fn forget_refusals(&self, id: &str) {
        self.undo_refused_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
    }

    /// What migration `id`'s running step waits for now (e.g. the scheduler's reason for
    /// pods left Pending), if it waits. In memory only: not part of the record.
    pub fn waiting_for(&self, id: &str) -> Option<String> {
        self.waiting_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn set_waiting_for(&self, id: &str, what: Option<String>) {
        let mut all = self
            .waiting_for
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match what {
            Some(what) => all.insert(id.to_owned(), what),
            None => all.remove(id),
        };
    }

    fn member(&self, name: &str) -> Result<Arc<dyn ferry_ports::ClusterPort>, StepError> {
        self.world
            .member(name)
            .map(|m| Arc::clone(&m.port))
            .ok_or_else(|| StepError::Refused(format!("cluster {name} is no longer a member")))
    }

    /// Undoes, newest first, the steps with side effects: drain (scale the source back)
    /// before start (delete the target's copy), so that a copy always serves.
    async fn backward(&self, mut migration: Migration) -> Result<(), StoreError> {
        let undoable = |s: &Step| {
            matches!(s.name.as_str(), "start" | "drain")
                && matches!(
                    s.state,
                    StepState::Done
                        | StepState::Running
                        | StepState::Failed
                        | StepState::RollingBack
                )
        };
        let Some(index) = migration.steps.iter().rposition(undoable) else {
            let cancelled = self.cancelled_by(&migration.id)?.is_some();
            let state = if cancelled {
                State::Cancelled
            } else {
                State::RolledBack
            };
            return self.transition(migration, state, None);
        };
        let name = migration.steps[index].name.clone();
        if migration.steps[index].state != StepState::RollingBack {
            migration.steps[index].state = StepState::RollingBack;
            self.save(&migration)?;
            self.publish_step(&migration, index);
        }
        self.pause_if_asked(&name, "undo").await;
        let result = self.undo(&name, &migration).await;
        if result.is_ok() {
            self.forget_refusals(&migration.id);
        }
        match result {
            Ok(message) => {
                let step = &mut migration.steps[index];
                step.state = StepState::RolledBack;
                step.message = Some(message);
                step.ended_at = Some(clock::now());
                self.save(&migration)?;
                self.publish_step(&migration, index);
                Ok(())
            }
            Err(StepError::Port(error)) if error.is_transient() => {
                // The cluster will come back; the undo is idempotent. Try again later.
                tracing::warn!(id = %migration.id, %error, "rollback waits for the cluster");
                tokio::time::sleep(self.config.poll.max(Duration::from_secs(1))).await;
                Ok(())
            }
            Err(StepError::Port(error)) if self.keep_trying_undo(&migration.id) => {
                // A refusal can pass too: an API server that has just restarted answers
                // 403 until its authorizer has loaded the role bindings again. Giving up
                // would leave the workload to an operator, so try again for a while.
                tracing::warn!(id = %migration.id, %error, "rollback refused; trying again");
                tokio::time::sleep(self.config.poll.max(Duration::from_secs(1))).await;
                Ok(())
            }
            Err(StepError::Store(error)) => Err(error),
            Err(error) => {
                self.forget_refusals(&migration.id);
                let reason = format!(
                    "rollback of {name} failed: {error}; the workload needs a look by an operator"
                );
                self.transition(migration, State::Failed, Some(reason))
            }
        }
    }

    async fn undo(&self, step: &str, migration: &Migration) -> Result<String, StepError> {
        let key = WorkloadKey::parse(&migration.workload)
            .ok_or_else(|| StepError::Refused(format!("bad workload {}", migration.workload)))?;
        let mark = Mark {
            migration: migration.id.clone(),
        };
        match step {
            "drain" if migration.fenced => Ok(format!(
                "nothing to restore: {} was fenced, not drained",
                migration.from
            )),
            "drain" => {
                let replicas = migration.source_replicas.unwrap_or(1);
                self.member(&migration.from)?
                    .scale(&key, replicas, None)
                    .await?;
                Ok(format!("{} scaled back to {replicas}", migration.from))
            }
            "start" => {
                let removal = self
                    .member(&migration.to)?
                    .delete(&key, &migration.objects, &mark)
                    .await?;
                let copy = match &removal.workload {
                    WorkloadFate::Deleted => {
                        format!("copy on {} scaled to zero and deleted", migration.to)
                    }
                    WorkloadFate::Absent => format!("no copy on {} was created", migration.to),
                    WorkloadFate::Left {
                        holder: Some(other),
                    } => format!(
                        "the copy on {} is migration {}'s, left in place",
                        migration.to, other.migration
                    ),
                    WorkloadFate::Left { holder: None } => format!(
                        "the copy on {} carries no Ferry mark (not this migration's), left in place",
                        migration.to
                    ),
                };
                let kept = removal
                    .kept
                    .iter()
                    .map(|k| format!("{} ({})", k.object, k.reason))
                    .collect::<Vec<_>>();
                Ok(format!(
                    "{copy}; {} of its objects removed{}",
                    removal.deleted.len(),
                    if kept.is_empty() {
                        String::new()
                    } else {
                        format!("; left: {}", kept.join(", "))
                    }
                ))
            }
            other => Err(StepError::Refused(format!("nothing to undo for {other}"))),
        }
    }

    /// After the rollback window, deletes the drained source (it carries our mark). A
    /// fenced source is instead waited for: its stale copy is scaled to zero as soon as it
    /// answers, then deleted (the workload serves on the target meanwhile).
    async fn remove_drained_source(&self, migration: Migration) {
        if migration.dry_run || migration.source_removed {
            return;
        }
        if migration.fenced {
            self.scale_down_stale_copy(&migration).await;
        } else {
            tokio::time::sleep(self.config.rollback_window).await;
        }
        let Some(key) = WorkloadKey::parse(&migration.workload) else {
            return;
        };
        let mark = Mark {
            migration: migration.id.clone(),
        };
        let handed_over = loop {
            let Ok(port) = self.member(&migration.from) else {
                return;
            };
            match port.delete(&key, &migration.objects, &mark).await {
                Ok(removal) => match removal.workload {
                    WorkloadFate::Deleted | WorkloadFate::Absent => break None,
                    // A later migration (a move back) took the drained copy over: it is
                    // that one's now, and nothing is left for this one to do.
                    WorkloadFate::Left {
                        holder: Some(owner),
                    } => break Some(owner.migration),
                    WorkloadFate::Left { holder: None } => {
                        tracing::warn!(id = %migration.id, "the drained copy lost its mark; left in place");
                        break Some("nobody (its mark was removed)".to_owned());
                    }
                },
                Err(PortError::NotFound { .. }) => break None,
                Err(error) => {
                    tracing::warn!(id = %migration.id, %error, "drained source not deleted yet");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        // Re-read: the record may have changed while we slept.
        if let Ok(Some(mut current)) = self.get(&migration.id) {
            current.source_removed = true;
            if self.save(&current).is_ok() {
                match handed_over {
                    None => self.events.publish(
                        "migration.sourceRemoved",
                        Some(&current.namespace),
                        json!({"id": current.id, "cluster": current.from}),
                    ),
                    Some(owner) => {
                        let _ = audit::record(
                            &self.store,
                            "broker",
                            "migration.sourceHandedOver",
                            &format!(
                                "{} {} on {}: now {owner}'s",
                                current.id, current.workload, current.from
                            ),
                            None,
                            "done",
                        );
                        self.events.publish(
                            "migration.sourceHandedOver",
                            Some(&current.namespace),
                            json!({"id": current.id, "cluster": current.from, "owner": owner}),
                        );
                    }
                }
            }
        }
    }

    /// Waits until a fenced source answers, then drains the stale copy (scaled to zero
    /// and marked Ferry's with what it uses, so that it can all be deleted next).
    async fn scale_down_stale_copy(&self, migration: &Migration) {
        let Some(key) = WorkloadKey::parse(&migration.workload) else {
            return;
        };
        let mark = Mark {
            migration: migration.id.clone(),
        };
        let mut wait = Duration::from_secs(1);
        loop {
            let Ok(port) = self.member(&migration.from) else {
                return;
            };
            // A drain, as a move's: scaled to zero, and its dependents adopted, so that
            // they are deleted with it and none blocks a later move back.
            match port.drain(&key, &migration.objects, &mark).await {
                Ok(_) => break,
                // Deleted there meanwhile: nothing stale remains.
                Err(PortError::NotFound { .. }) => break,
                Err(error) => {
                    tracing::debug!(id = %migration.id, %error, "fenced source still away");
                    // Every second at first, then less often while it stays away.
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
        let _ = audit::record(
            &self.store,
            "broker",
            "failover.staleScaledToZero",
            &format!(
                "{} {} on {}",
                migration.id, migration.workload, migration.from
            ),
            None,
            "done",
        );
        self.events.publish(
            "migration.staleScaledToZero",
            Some(&migration.namespace),
            json!({"id": migration.id, "workload": migration.workload, "cluster": migration.from}),
        );
    }
}

/// Adds the export's dependents to those the migration records; whether any was new.
fn record_dependents(migration: &mut Migration, exported: &ExportedWorkload) -> bool {
    let before = migration.objects.len();
    for object in exported.dependents() {
        if !migration.objects.contains(&object) {
            migration.objects.push(object);
        }
    }
    migration.objects.sort();
    migration.objects.len() != before
}

/// `; claims: data-db-0 (1.0 GiB): new, empty claim on kube-b; ...`, or nothing.
fn claims_sentence(fates: &[ClaimFate]) -> String {
    if fates.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = fates.iter().map(ClaimFate::line).collect();
    format!("; claims: {}", lines.join("; "))
}

/// `; claims, which start empty on the target: data-db-0 (1.0 GiB)`, or nothing.
fn claims_of_export(exported: &ExportedWorkload) -> String {
    if exported.claims.is_empty() {
        return String::new();
    }
    let names: Vec<String> = exported.claims.iter().map(ToString::to_string).collect();
    format!(
        "; claims, which start empty on the target: {}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_named_as_the_api_spells_them() {
        let states = [
            State::Pending,
            State::Running,
            State::Done,
            State::RollingBack,
            State::RolledBack,
            State::Failed,
            State::Cancelled,
        ];
        for state in states {
            assert_eq!(json!(state), json!(state.as_str()));
        }
        let steps = [
            StepState::Pending,
            StepState::Running,
            StepState::Done,
            StepState::Failed,
            StepState::Skipped,
            StepState::RollingBack,
            StepState::RolledBack,
        ];
        for step in steps {
            assert_eq!(json!(step), json!(step.as_str()));
        }
        let ended = CancelError::Ended {
            id: "mig-1".into(),
            state: State::RolledBack,
        };
        assert_eq!(
            ended.to_string(),
            "migration mig-1 has already ended (rolledBack)"
        );
    }
}
