//! The controllers: the loops that make the broker act on its policies by itself.
//!
//! Every tick (an interval, or sooner when prices or policies change) one pass:
//! 1. **observe**: every member's inventory; health debounced into phases
//!    (`ferry_policies::control::health`); prices remembered for hysteresis; the objects
//!    of every serving workload read again when stale, so that a workload whose cluster
//!    goes down can be started elsewhere from them;
//! 2. **plan**: the rebalance plan over what runs, where a down member's workloads are
//!    taken from what it last reported (and its evacuated ones left out);
//! 3. **propose**: evacuations (the source is down), returns (an evacuated workload whose
//!    policy prefers its recovered cluster), policy moves and cost moves; workloads that
//!    fit nowhere become capacity requests;
//! 4. **decide** (pure: `ferry_policies::control::decide`) and **apply**: start what the
//!    rules allow in `auto` mode; record every decision that changed as an event and an
//!    audit line; keep the last pass for the API and the dashboard.
//!
//! Time comes from [`ControlClock`], which tests drive through tokio's paused clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use ferry_policies::control::capacity::{self, Growable, Need};
use ferry_policies::control::decide::policy_rules;
use ferry_policies::control::retry::{self, Attempt, Failures, Outcome};
use ferry_policies::control::{
    Decision, HealthSettings, HealthTracker, Kind, Limits, Mode, Phase, PriceMemory, Proposal,
    Situation, Verdict, decide, human_duration,
};
use ferry_policies::engine;
use ferry_policies::model::{Cluster, PlacementPolicy, RebalanceRules, Workload};
use ferry_policies::quantity::Resources as PlanResources;
use ferry_ports::{ExportedWorkload, Health, Inventory, Operation, PortError, WorkloadKey};
use futures::StreamExt;
use serde_json::{Value, json};

use super::api::AppState;
use super::migration::{Migration, MoveOptions, RememberedExport, State, SubmitError, Trigger};
use super::world::{Census, PlanInput};
use super::{audit, clock};

/// Workloads whose objects are read at once when the kept copies are refreshed.
const EXPORTS_AT_ONCE: usize = 8;

/// The controllers' settings (`[controllers]` in ferry.toml).
#[derive(Clone, Debug, PartialEq)]
pub struct ControllerConfig {
    pub mode: Mode,
    /// Time between passes when nothing pokes the loop.
    pub interval: Duration,
    /// How long a member must stay unhealthy before its workloads are evacuated.
    pub failover_after: Duration,
    /// How long a member must stay healthy after a change before it is a target again.
    pub stable_after: Duration,
    /// How far back prices count for hysteresis.
    pub price_memory: Duration,
    /// Moves started by the controllers running at once, broker-wide.
    pub max_concurrent_moves: u32,
    /// How old the objects kept for an evacuation may grow before they are read again.
    pub export_refresh: Duration,
    /// Capacity on demand: never grow a member past this many nodes (0: never grow).
    pub max_nodes: u32,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            mode: Mode::Recommend,
            interval: Duration::from_secs(10),
            failover_after: Duration::from_secs(30),
            stable_after: Duration::from_secs(300),
            price_memory: Duration::from_secs(3600),
            max_concurrent_moves: 2,
            export_refresh: Duration::from_secs(300),
            max_nodes: 0,
        }
    }
}

/// Unix seconds for the controllers: the wall clock when they started, advanced by
/// tokio's monotonic clock (which a test can pause and drive).
#[derive(Clone, Copy, Debug)]
pub struct ControlClock {
    base_unix: u64,
    base: tokio::time::Instant,
}

impl ControlClock {
    pub fn wall() -> ControlClock {
        ControlClock::starting_at(clock::unix_now())
    }

    pub fn starting_at(unix: u64) -> ControlClock {
        ControlClock {
            base_unix: unix,
            base: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> u64 {
        self.base_unix + self.base.elapsed().as_secs()
    }
}

/// What the loop remembers between passes.
struct Memory {
    health: HealthTracker,
    prices: PriceMemory,
    /// Each member's last inventory: what a down member ran.
    last_seen: BTreeMap<String, Inventory>,
    /// When this broker's controllers last started a move of each workload, and its id.
    started: BTreeMap<String, (u64, String)>,
    /// Each move's last verdict and deciding rule, to record only changes.
    announced: BTreeMap<(String, String), (Verdict, &'static str)>,
    /// Capacity requests in flight: member → (operation id, its node count then).
    growing: BTreeMap<String, (String, u32)>,
    /// Members whose growth is done but whose new nodes may not have joined yet:
    /// member → (node count before, when the growth was done). Not grown again until
    /// more nodes show or [`Controllers::settle`] passes, lest the same shortage be asked
    /// for twice.
    settling: BTreeMap<String, (u32, u64)>,
    /// The controllers' moves the engine refused to start (no migration records them),
    /// by workload and target: failed attempts, as the retry rule counts them.
    refused: BTreeMap<(String, String), Vec<Attempt>>,
    /// Moves held for an operator, by workload and target, with what their situation
    /// was (prices, policy) when the hold began: the hold lasts until that changes.
    holds: BTreeMap<(String, String), String>,
    /// When (by [`ControlClock`]) a pass first saw each of the controllers' migrations
    /// end: the time the retry rule counts from. Records are stamped with the wall clock,
    /// which a test's paused clock does not follow; after a restart, a failure counts
    /// from when this broker first saw it.
    ended_seen: BTreeMap<String, u64>,
}

/// Refusals kept per move: enough to tell a run of identical ones.
const REFUSALS_KEPT: usize = 8;

/// The last pass, as the API shows it (read without waiting for a pass in progress).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub at: u64,
    /// Each member's phase, and why it is not a target if it is not.
    pub clusters: Vec<(String, Phase, Option<String>)>,
    pub decisions: Vec<Decision>,
    /// Migration ids of the moves the pass started, per workload.
    pub started: BTreeMap<String, String>,
    /// Capacity requested, and workloads no growth could serve.
    pub growth: Vec<Value>,
    /// Why the pass could not plan, if it could not.
    pub error: Option<String>,
    /// Workloads the pass did not decide for (policies in conflict over them), and why;
    /// it decided for every other.
    pub held: Vec<engine::Held>,
    /// How long the pass took.
    pub took: Duration,
    /// The controllers' moves that failed since they last succeeded, by workload and
    /// target.
    pub failing: Vec<(String, String, Failures)>,
}

pub struct Controllers {
    config: ControllerConfig,
    mode: Mutex<Mode>,
    clock: ControlClock,
    memory: tokio::sync::Mutex<Memory>,
    report: RwLock<Report>,
    wake: tokio::sync::Notify,
    /// When the failures of each move (workload, target) were last set aside: by an
    /// operator, or because its situation changed. Earlier failures no longer count.
    cleared: Mutex<BTreeMap<(String, String), u64>>,
}

impl Controllers {
    pub fn new(config: ControllerConfig, clock: ControlClock) -> Controllers {
        let settings = HealthSettings {
            failover_after: config.failover_after.as_secs(),
            stable_after: config.stable_after.as_secs(),
        };
        Controllers {
            mode: Mutex::new(config.mode),
            memory: tokio::sync::Mutex::new(Memory {
                health: HealthTracker::new(settings),
                prices: PriceMemory::new(config.price_memory.as_secs()),
                last_seen: BTreeMap::new(),
                started: BTreeMap::new(),
                announced: BTreeMap::new(),
                growing: BTreeMap::new(),
                settling: BTreeMap::new(),
                refused: BTreeMap::new(),
                holds: BTreeMap::new(),
                ended_seen: BTreeMap::new(),
            }),
            config,
            clock,
            report: RwLock::new(Report::default()),
            wake: tokio::sync::Notify::new(),
            cleared: Mutex::new(BTreeMap::new()),
        }
    }

    /// Sets aside the failures of `workload`'s moves (to `to`, or to any target) that
    /// the last pass counted, so that the next pass may try again; says the targets.
    pub fn clear(&self, workload: &str, to: Option<&str>) -> Vec<String> {
        let now = self.clock.now();
        let targets: Vec<String> = self
            .report()
            .failing
            .iter()
            .filter(|(w, t, _)| w == workload && to.is_none_or(|to| to == t))
            .map(|(_, t, _)| t.clone())
            .collect();
        let mut cleared = self.cleared.lock().unwrap_or_else(PoisonError::into_inner);
        for target in &targets {
            cleared.insert((workload.to_owned(), target.clone()), now);
        }
        drop(cleared);
        if !targets.is_empty() {
            self.poke();
        }
        targets
    }

    pub fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
        self.poke();
    }

    /// How long a member just grown may take to show its new nodes: six passes (a
    /// minute by default), from 20 s to 5 min.
    fn settle(&self) -> u64 {
        (self.config.interval.as_secs() * 6).clamp(20, 300)
    }

    /// Asks for a pass now (prices, policies or the mode changed).
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    pub fn report(&self) -> Report {
        self.report
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs passes until the process ends.
    pub fn spawn(state: Arc<AppState>) {
        tokio::spawn(async move {
            loop {
                state.controllers.pass(&state).await;
                tokio::select! {
                    () = tokio::time::sleep(state.controllers.config.interval) => {}
                    () = state.controllers.wake.notified() => {}
                }
            }
        });
    }

    /// One pass: observe, plan, propose, decide, apply.
    pub async fn pass(&self, state: &AppState) {
        let now = self.clock.now();
        let began = tokio::time::Instant::now();
        let census = state.world.census().await;
        let mut memory = self.memory.lock().await;
        self.observe(state, &census, &mut memory, now).await;
        let migrations = state.engine.list().unwrap_or_default();
        let seen = controller_census(&census, &memory, &migrations);
        let world = &state.world;
        let phases: Vec<(String, Phase, Option<String>)> = memory
            .health
            .phases()
            .map(|(name, phase)| {
                let why_not = memory.health.ready_as_target(name, now).err().map(|e| e.0);
                (name.to_owned(), phase, why_not)
            })
            .collect();
        // Built once: the plan, the proposals and the rules all look at the same input.
        let input = world.plan_input(&seen);
        // On the blocking pool, in turn with the API's plans: the planner is CPU-bound.
        let planned = state
            .planner
            .in_turn(move || {
                let plan = input.plan();
                (input, plan)
            })
            .await;
        let planned = planned
            .map_err(|error| format!("the planner stopped: {error}"))
            .and_then(|(input, plan)| {
                plan.map(|plan| (input, plan))
                    .map_err(|error| format!("the policies cannot be planned: {error}"))
            });
        let (input, plan) = match planned {
            Ok(planned) => planned,
            Err(error) => {
                self.publish_report(Report {
                    at: now,
                    clusters: phases,
                    error: Some(error),
                    took: began.elapsed(),
                    ..Report::default()
                });
                return;
            }
        };
        let PlanInput {
            clusters,
            workloads,
            policies,
        } = &input;
        let snapshot = input.snapshot();
        let by_key: BTreeMap<String, &Workload> = workloads.iter().map(|w| (w.key(), w)).collect();
        let governing: BTreeMap<String, &PlacementPolicy> = workloads
            .iter()
            .filter_map(|w| {
                let p = engine::governing_policy(policies, w).ok().flatten()?;
                Some((w.key(), &policies[p]))
            })
            .collect();
        let policy_of = |workload: &str| governing.get(workload).copied();
        let price_of = |cluster: &str, requests: PlanResources| {
            clusters
                .iter()
                .find(|c| c.name == cluster)
                .map_or(0.0, |c| c.pricing.monthly_cost(requests))
        };

        // Proposals: returns first, so that a cost move of the same workload gives way.
        let mut proposals = Vec::new();
        let mut returning = BTreeSet::new();
        for (workload, home, now_on) in returns(&migrations, &seen) {
            // From a member that is not up, the plan's evacuation goes first.
            if memory.health.phase(&now_on) != Phase::Up {
                continue;
            }
            let Some(w) = by_key.get(&workload).copied() else {
                continue;
            };
            if engine::prefers(&snapshot, &workload, &home, &now_on) != Ok(Some(true)) {
                continue;
            }
            let requests = w.resources.times(u64::from(w.replicas));
            returning.insert(workload.clone());
            proposals.push(Proposal {
                workload: workload.clone(),
                from: now_on.clone(),
                to: home.clone(),
                kind: Kind::Return,
                replicas: w.replicas,
                whole: true,
                requests,
                monthly_cost: price_of(&now_on, requests),
                monthly_savings: price_of(&now_on, requests) - price_of(&home, requests),
                policy: policy_rules(policy_of(&workload)),
                claims: claims_on(&seen, &workload, &now_on),
            });
        }
        for step in &plan.moves {
            if returning.contains(&step.workload) {
                continue;
            }
            let Some(w) = by_key.get(&step.workload) else {
                continue;
            };
            let kind = if matches!(memory.health.phase(&step.from), Phase::Down { .. }) {
                Kind::Evacuate
            } else if step.reason.starts_with("evacuate") {
                Kind::Policy
            } else {
                Kind::Cost
            };
            let requests = w.resources.times(u64::from(step.replicas));
            proposals.push(Proposal {
                workload: step.workload.clone(),
                from: step.from.clone(),
                to: step.to.clone(),
                kind,
                replicas: step.replicas,
                whole: step.replicas == w.replicas,
                requests,
                monthly_cost: price_of(&step.from, requests),
                monthly_savings: step.monthly_savings,
                policy: policy_rules(policy_of(&step.workload)),
                claims: claims_on(&seen, &step.workload, &step.from),
            });
        }

        // What runs now, for cooldowns and caps.
        let longest_cooldown = policies
            .iter()
            .map(|p| p.rebalance.cooldown_seconds)
            .max()
            .unwrap_or(0)
            .max(RebalanceRules::disabled().cooldown_seconds);
        memory
            .started
            .retain(|_, (at, _)| now.saturating_sub(*at) < longest_cooldown);
        let undone = |m: &Migration| {
            matches!(
                m.state,
                State::RolledBack | State::Failed | State::Cancelled
            )
        };
        // A move that did not complete moved nothing: it does not start the cooldown
        // (the retry rule holds it instead).
        let failed_ids: BTreeSet<&str> = migrations
            .iter()
            .filter(|m| undone(m))
            .map(|m| m.id.as_str())
            .collect();
        let mut last_move: BTreeMap<String, u64> = memory
            .started
            .iter()
            .filter(|(_, (_, id))| !failed_ids.contains(id.as_str()))
            .map(|(workload, (at, _))| (workload.clone(), *at))
            .collect();
        let mut attempts = memory.refused.clone();
        let mut running = 0;
        let mut running_by_policy: BTreeMap<String, u32> = BTreeMap::new();
        let ids: BTreeSet<&str> = migrations.iter().map(|m| m.id.as_str()).collect();
        memory.ended_seen.retain(|id, _| ids.contains(id.as_str()));
        // Oldest first (the list is newest first): attempts that end up at the same
        // second stay in the order they happened.
        for m in migrations.iter().rev() {
            if m.dry_run {
                continue;
            }
            if !undone(m)
                && let Some(at) = clock::parse(&m.created_at)
            {
                let last = last_move.entry(m.workload.clone()).or_insert(at);
                *last = (*last).max(at);
            }
            // The controllers' attempts, for the retry rule; a person's failures are
            // their own, but a person's move that succeeded shows the move can work.
            if m.trigger != Trigger::Manual || m.state == State::Done {
                let at = if m.state.is_final() {
                    *memory.ended_seen.entry(m.id.clone()).or_insert(now)
                } else {
                    now
                };
                let outcome = if undone(m) {
                    Outcome::Failed(
                        m.reason
                            .clone()
                            .unwrap_or_else(|| m.state.as_str().to_owned()),
                    )
                } else {
                    Outcome::Succeeded
                };
                attempts
                    .entry((m.workload.clone(), m.to.clone()))
                    .or_default()
                    .push(Attempt { at, outcome });
            }
            if !m.state.is_final() {
                running += 1;
                if let Some(p) = policy_of(&m.workload) {
                    *running_by_policy.entry(p.name.clone()).or_default() += 1;
                }
            }
        }
        let cleared = self
            .cleared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut failures: BTreeMap<(String, String), Failures> = attempts
            .into_iter()
            .filter_map(|(key, attempts)| {
                let since = cleared.get(&key).copied();
                let counted: Vec<Attempt> = attempts
                    .into_iter()
                    .filter(|a| since.is_none_or(|since| a.at > since))
                    .collect();
                retry::failures(&counted).map(|f| (key, f))
            })
            .collect();
        // A move held for an operator is tried again once its situation changed.
        for p in &proposals {
            let key = (p.workload.clone(), p.to.clone());
            if !failures.get(&key).is_some_and(Failures::needs_operator) {
                continue;
            }
            let situation = situation_of(p, clusters, policy_of(&p.workload));
            match memory.holds.get(&key) {
                None => {
                    memory.holds.insert(key, situation);
                }
                Some(held) if *held != situation => {
                    memory.holds.remove(&key);
                    failures.remove(&key);
                    self.cleared
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(key, now);
                    let what = format!("{} {} -> {}", p.workload, p.from, p.to);
                    let _ = audit::record(
                        &state.store,
                        "controller",
                        "controller.released",
                        &what,
                        None,
                        "its policy or its clusters' prices changed: tried again",
                    );
                }
                Some(_) => {}
            }
        }
        memory
            .holds
            .retain(|key, _| failures.get(key).is_some_and(Failures::needs_operator));
        let mode = self.mode();
        let decisions = decide(
            proposals,
            &Situation {
                now,
                limits: Limits {
                    mode,
                    max_concurrent_moves: self.config.max_concurrent_moves,
                },
                health: &memory.health,
                prices: &memory.prices,
                last_move: &last_move,
                running,
                running_by_policy: &running_by_policy,
                failures: &failures,
            },
        );
        memory.announced.retain(|(workload, to), _| {
            decisions
                .iter()
                .any(|d| d.proposal.workload == *workload && d.proposal.to == *to)
        });

        let mut started = BTreeMap::new();
        for decision in &decisions {
            self.announce(state, &mut memory, decision);
            if decision.verdict != Verdict::Start {
                continue;
            }
            let p = &decision.proposal;
            let Some(key) = WorkloadKey::parse(&p.workload) else {
                continue;
            };
            let by = format!("controller:{}", p.kind.as_str());
            let result = match p.kind {
                Kind::Evacuate => state.engine.evacuate(&key, &p.from, &p.to, &by).await,
                Kind::Return => {
                    state
                        .engine
                        .submit_as(
                            &key,
                            &p.to,
                            &MoveOptions::default(),
                            &by,
                            None,
                            Trigger::Return,
                        )
                        .await
                }
                Kind::Policy => {
                    state
                        .engine
                        .submit_as(
                            &key,
                            &p.to,
                            &MoveOptions::default(),
                            &by,
                            None,
                            Trigger::Policy,
                        )
                        .await
                }
                Kind::Cost => {
                    state
                        .engine
                        .submit_as(
                            &key,
                            &p.to,
                            &MoveOptions::default(),
                            &by,
                            None,
                            Trigger::Cost,
                        )
                        .await
                }
            };
            match result {
                Ok(migration) => {
                    memory
                        .started
                        .insert(p.workload.clone(), (now, migration.id.clone()));
                    memory.refused.remove(&(p.workload.clone(), p.to.clone()));
                    started.insert(p.workload.clone(), migration.id);
                }
                // Someone (or an earlier pass) moves it already.
                Err(SubmitError::Busy { .. }) => {}
                Err(error) => {
                    let refusals = memory
                        .refused
                        .entry((p.workload.clone(), p.to.clone()))
                        .or_default();
                    refusals.push(Attempt {
                        at: now,
                        outcome: Outcome::Failed(error.to_string()),
                    });
                    if refusals.len() > REFUSALS_KEPT {
                        refusals.remove(0);
                    }
                    tracing::warn!(workload = %p.workload, %error, "controller move not started");
                    state.events.publish(
                        "controller.error",
                        Some(&key.namespace),
                        json!({"workload": p.workload, "to": p.to, "kind": p.kind.as_str(),
                               "message": error.to_string()}),
                    );
                }
            }
        }

        let growth = self
            .grow(state, &mut memory, &plan, &by_key, &seen, &governing, mode)
            .await;
        self.publish_report(Report {
            at: now,
            clusters: phases,
            decisions,
            started,
            growth,
            error: None,
            held: plan.held.clone(),
            took: began.elapsed(),
            failing: failures
                .into_iter()
                .map(|((workload, to), f)| (workload, to, f))
                .collect(),
        });
    }

    fn publish_report(&self, report: Report) {
        *self.report.write().unwrap_or_else(PoisonError::into_inner) = report;
    }

    /// Health phases, prices, last inventories and the objects kept for evacuations.
    async fn observe(&self, state: &AppState, census: &Census, memory: &mut Memory, now: u64) {
        let members = state.world.members();
        let names: BTreeSet<String> = members.iter().map(|m| m.definition.name.clone()).collect();
        memory.health.retain(|n| names.contains(n));
        memory.prices.retain(|n| names.contains(n));
        memory.last_seen.retain(|n, _| names.contains(n));
        for member in &members {
            let name = &member.definition.name;
            let inventory = census.inventories.get(name).and_then(|i| i.as_ref().ok());
            let healthy = inventory.is_some_and(|i| i.health == Health::Ready);
            if let Some(transition) = memory.health.observe(name, healthy, now) {
                let phase = memory.health.phase(name);
                tracing::info!(cluster = %name, phase = phase.as_str(), "cluster health changed");
                state.events.publish(
                    "controller.health",
                    None,
                    json!({"cluster": name, "phase": phase.as_str(),
                           "transition": transition.as_str()}),
                );
                let _ = audit::record(
                    &state.store,
                    "controller",
                    &format!("cluster.{}", transition.as_str()),
                    name,
                    None,
                    phase.as_str(),
                );
            }
            if let Some(inventory) = inventory {
                memory.last_seen.insert(name.clone(), inventory.clone());
            }
            memory.prices.record(name, &member.definition.pricing, now);
        }
        // Read again the objects of serving workloads whose kept copy is missing, from
        // another cluster, of another size, or old.
        let refresh = self.config.export_refresh.as_secs();
        // One serving copy per workload, the first by member name (as `Census::locate`
        // picks): a workload spread over two members, or served by a stale copy and its
        // evacuated one, is not read from each in turn, pass after pass.
        let mut serving: BTreeMap<WorkloadKey, (String, u32)> = BTreeMap::new();
        for (cluster, inventory) in &census.inventories {
            let Ok(inventory) = inventory else { continue };
            for workload in inventory.workloads.iter().filter(|w| w.replicas > 0) {
                serving
                    .entry(workload.key.clone())
                    .or_insert_with(|| (cluster.clone(), workload.replicas));
            }
        }
        let mut stale = Vec::new();
        for (key, (cluster, replicas)) in &serving {
            let Some(member) = state.world.member(cluster) else {
                continue;
            };
            let fresh = state.engine.remembered_export(key).is_some_and(|k| {
                k.cluster == *cluster
                    && k.workload.replicas == *replicas
                    && now.saturating_sub(k.at) < refresh
            });
            if !fresh {
                stale.push((cluster.clone(), Arc::clone(&member.port), key.clone()));
            }
        }
        // A few at a time: a broker that starts reads every workload once. Boxed as Send
        // futures: unboxed, the compiler cannot show the spawned loop's future Send.
        type Read = std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = (String, WorkloadKey, Result<ExportedWorkload, PortError>),
                    > + Send,
            >,
        >;
        let reads: Vec<Read> = stale
            .into_iter()
            .map(|(cluster, port, key)| -> Read {
                Box::pin(async move {
                    let result = port.export(&key).await;
                    (cluster, key, result)
                })
            })
            .collect();
        let reads: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(EXPORTS_AT_ONCE)
            .collect()
            .await;
        for (cluster, key, result) in reads {
            match result {
                Ok(exported) => state.engine.remember_export(RememberedExport {
                    cluster,
                    at: now,
                    workload: exported,
                }),
                Err(error) => {
                    tracing::debug!(%cluster, workload = %key, %error, "export for failover not refreshed");
                }
            }
        }
        // Keep the objects of workloads on down members: they are what an evacuation needs.
        let away: BTreeSet<&str> = census
            .inventories
            .iter()
            .filter(|(_, i)| i.is_err())
            .map(|(n, _)| n.as_str())
            .collect();
        state.engine.forget_exports(|export| {
            serving.contains_key(&export.workload.key) || away.contains(export.cluster.as_str())
        });
    }

    /// Records a decision as an event and an audit line when it differs from the last
    /// pass's for the same move.
    fn announce(&self, state: &AppState, memory: &mut Memory, decision: &Decision) {
        let p = &decision.proposal;
        let key = (p.workload.clone(), p.to.clone());
        let seen = (decision.verdict, decision.rule);
        if memory.announced.get(&key) == Some(&seen) {
            return;
        }
        memory.announced.insert(key, seen);
        let namespace = p.workload.split_once('/').map(|(ns, _)| ns);
        state.events.publish(
            "controller.decision",
            namespace,
            decision_json(decision, None),
        );
        let _ = audit::record(
            &state.store,
            "controller",
            &format!("controller.{}", decision.verdict.as_str()),
            &format!(
                "{} {} -> {} ({})",
                p.workload,
                p.from,
                p.to,
                p.kind.as_str()
            ),
            None,
            &decision.reason,
        );
    }

    /// Capacity on demand: follows the resizes in flight and asks for new ones for
    /// workloads that fit nowhere and whose policy allows it.
    #[allow(clippy::too_many_arguments)] // the pass's context, borrowed
    async fn grow(
        &self,
        state: &AppState,
        memory: &mut Memory,
        plan: &engine::Plan,
        by_key: &BTreeMap<String, &Workload>,
        seen: &Census,
        governing: &BTreeMap<String, &PlacementPolicy>,
        mode: Mode,
    ) -> Vec<Value> {
        let mut report = Vec::new();
        // Follow what is in flight.
        let now = self.clock.now();
        let growing: Vec<(String, String, u32)> = memory
            .growing
            .iter()
            .map(|(c, (id, nodes))| (c.clone(), id.clone(), *nodes))
            .collect();
        for (cluster, id, nodes_before) in growing {
            let Some(provisioner) = state
                .world
                .member(&cluster)
                .and_then(|m| m.provisioner.clone())
            else {
                memory.growing.remove(&cluster);
                continue;
            };
            match provisioner.operation(&id).await {
                Ok(Operation::Running { progress, .. }) => {
                    report.push(json!({"cluster": cluster, "state": "running", "operation": id, "message": progress}));
                }
                Ok(Operation::Done { .. }) => {
                    memory.growing.remove(&cluster);
                    memory.settling.insert(cluster.clone(), (nodes_before, now));
                    state.events.publish(
                        "controller.capacity",
                        None,
                        json!({"cluster": cluster, "operation": id, "state": "done"}),
                    );
                }
                Ok(Operation::Failed { reason, .. }) => {
                    memory.growing.remove(&cluster);
                    state.events.publish("controller.capacity", None, json!({"cluster": cluster, "operation": id, "state": "failed", "message": reason}));
                    let _ = audit::record(
                        &state.store,
                        "controller",
                        "capacity.failed",
                        &cluster,
                        None,
                        &reason,
                    );
                }
                Err(error) => {
                    tracing::warn!(%cluster, %error, "capacity request not followed this pass");
                }
            }
        }
        if self.config.max_nodes == 0 {
            return report;
        }
        let needs: Vec<Need> = plan
            .unplaced
            .iter()
            .filter(|u| {
                governing
                    .get(&u.workload)
                    .is_some_and(|p| p.capacity_on_demand)
            })
            .filter_map(|u| {
                let w = by_key.get(&u.workload)?;
                Some(Need {
                    workload: u.workload.clone(),
                    replica: w.resources,
                    replicas: w.replicas,
                    exclusions: u.reasons.clone(),
                })
            })
            .collect();
        if needs.is_empty() {
            return report;
        }
        let mut growable: Vec<Growable> = Vec::new();
        for m in state.world.members() {
            let Some(provisioner) = m.provisioner.clone() else {
                continue;
            };
            if memory.growing.contains_key(&m.definition.name) {
                continue;
            }
            let Some(Ok(inventory)) = seen.inventories.get(&m.definition.name) else {
                continue;
            };
            if let Some(&(before, done)) = memory.settling.get(&m.definition.name) {
                if inventory.nodes <= before && now.saturating_sub(done) < self.settle() {
                    continue;
                }
                memory.settling.remove(&m.definition.name);
            }
            // Workers, as the provisioner counts them (the node list includes control
            // planes); the node size from the nodes the cluster reports.
            let workers = match provisioner.workers(&m.definition.name).await {
                Ok(Some(workers)) => workers,
                _ => inventory.nodes,
            };
            let nodes = inventory.nodes.max(1);
            growable.push(Growable {
                cluster: m.definition.name.clone(),
                nodes: workers,
                node: PlanResources::new(
                    inventory.allocatable.cpu_millis / u64::from(nodes),
                    inventory.allocatable.memory_bytes / u64::from(nodes),
                ),
                free: PlanResources::new(
                    inventory
                        .allocatable
                        .cpu_millis
                        .saturating_sub(inventory.requested.cpu_millis),
                    inventory
                        .allocatable
                        .memory_bytes
                        .saturating_sub(inventory.requested.memory_bytes),
                ),
                max_nodes: self.config.max_nodes,
                pricing: m.definition.pricing.clone(),
            });
        }
        let (growth, unserved) = capacity::plan_growth(&needs, &growable);
        for (workload, reason) in unserved {
            report.push(json!({"workload": workload, "state": "unserved", "message": reason}));
        }
        for g in growth {
            let entry = json!({"cluster": g.cluster, "fromNodes": g.from_nodes, "toNodes": g.to_nodes, "workloads": g.workloads});
            if mode == Mode::Recommend {
                report.push(json!({"state": "recommended", "message": "the broker is in recommend mode", "request": entry}));
                continue;
            }
            let Some(provisioner) = state
                .world
                .member(&g.cluster)
                .and_then(|m| m.provisioner.clone())
            else {
                continue;
            };
            match provisioner.resize(&g.cluster, g.to_nodes).await {
                Ok(operation) => {
                    let id = match &operation {
                        Operation::Running { id, .. }
                        | Operation::Done { id }
                        | Operation::Failed { id, .. } => id.clone(),
                    };
                    let nodes_now = seen
                        .inventories
                        .get(&g.cluster)
                        .and_then(|i| i.as_ref().ok())
                        .map_or(0, |i| i.nodes);
                    memory
                        .growing
                        .insert(g.cluster.clone(), (id.clone(), nodes_now));
                    let _ = audit::record(
                        &state.store,
                        "controller",
                        "capacity.request",
                        &format!("{} {} -> {} nodes", g.cluster, g.from_nodes, g.to_nodes),
                        None,
                        &format!("for {}", g.workloads.join(", ")),
                    );
                    state.events.publish("controller.capacity", None, json!({"cluster": g.cluster, "operation": id, "state": "requested", "fromNodes": g.from_nodes, "toNodes": g.to_nodes}));
                    report.push(json!({"state": "requested", "operation": id, "request": entry}));
                }
                Err(error) => {
                    report.push(
                        json!({"state": "refused", "message": error.to_string(), "request": entry}),
                    );
                }
            }
        }
        report
    }

    /// The controllers as `GET /api/v1/controllers` shows them; `visible` filters
    /// workloads by namespace.
    pub fn status(&self, state: &AppState, visible: impl Fn(&str) -> bool) -> Value {
        let kept: Vec<Value> = state
            .engine
            .remembered_exports()
            .into_iter()
            .filter(|(key, _, _)| visible(&key.namespace))
            .map(|(key, cluster, at)| {
                json!({"workload": key.to_string(), "cluster": cluster, "readAt": clock::rfc3339(at)})
            })
            .collect();
        let report = self.report();
        let clusters: Vec<Value> = report
            .clusters
            .iter()
            .map(|(name, phase, why_not)| {
                let since = match *phase {
                    Phase::Up => None,
                    Phase::Suspect { since }
                    | Phase::Down { since }
                    | Phase::Returning { since } => Some(clock::rfc3339(since)),
                };
                json!({"name": name, "phase": phase.as_str(), "since": since,
                       "target": why_not.is_none(), "notTargetBecause": why_not})
            })
            .collect();
        let c = &self.config;
        json!({
            "mode": self.mode().as_str(),
            "settings": {
                "interval": human_duration(c.interval.as_secs()),
                "failoverAfter": human_duration(c.failover_after.as_secs()),
                "stableAfter": human_duration(c.stable_after.as_secs()),
                "priceMemory": human_duration(c.price_memory.as_secs()),
                "maxConcurrentMoves": c.max_concurrent_moves,
                "maxNodes": c.max_nodes,
            },
            "lastPass": (report.at > 0).then(|| clock::rfc3339(report.at)),
            "error": report.error,
            "held": report.held.iter()
                .filter(|h| h.workload.split_once('/').is_some_and(|(ns, _)| visible(ns)))
                .map(|h| json!({"workload": h.workload, "reason": h.reason,
                                "policies": [h.conflict.first, h.conflict.second]}))
                .collect::<Vec<_>>(),
            "clusters": clusters,
            "failedMoves": report.failing.iter()
                .filter(|(w, _, _)| w.split_once('/').is_some_and(|(ns, _)| visible(ns)))
                .map(|(workload, to, f)| {
                    let needs_operator = f.needs_operator();
                    json!({"workload": workload, "to": to, "failures": f.count,
                           "sameWay": f.identical, "reason": f.reason,
                           "lastFailed": clock::rfc3339(f.last_at),
                           "retryAt": (!needs_operator).then(|| clock::rfc3339(f.retry_at())),
                           "needsOperator": needs_operator,
                           "needsOperatorSince": needs_operator.then(|| clock::rfc3339(f.last_at))})
                })
                .collect::<Vec<_>>(),
            "decisions": report.decisions.iter()
                .filter(|d| d.proposal.workload.split_once('/').is_some_and(|(ns, _)| visible(ns)))
                .map(|d| decision_json(d, report.started.get(&d.proposal.workload)))
                .collect::<Vec<_>>(),
            "capacity": report.growth.iter().filter(|entry| {
                // Entries name workloads: a scoped token sees those of its namespaces.
                let named = entry["workload"].as_str().into_iter().chain(
                    entry["request"]["workloads"].as_array().into_iter().flatten().filter_map(Value::as_str),
                );
                named.into_iter().all(|w| w.split_once('/').is_some_and(|(ns, _)| visible(ns)))
            }).collect::<Vec<_>>(),
            "evacuationCopies": kept,
        })
    }
}

/// What a move held for an operator waits to change: the prices of its source and
/// target, and its governing policy.
fn situation_of(p: &Proposal, clusters: &[Cluster], policy: Option<&PlacementPolicy>) -> String {
    let pricing = |name: &str| clusters.iter().find(|c| c.name == name).map(|c| &c.pricing);
    format!("{:?}", (pricing(&p.from), pricing(&p.to), policy))
}

/// A decision as the API, events and dashboard show it.
pub fn decision_json(decision: &Decision, migration: Option<&String>) -> Value {
    let p = &decision.proposal;
    json!({
        "workload": p.workload,
        "from": p.from,
        "to": p.to,
        "kind": p.kind.as_str(),
        "replicas": p.replicas,
        "monthlySavings": super::world::cents(p.monthly_savings),
        "verdict": decision.verdict.as_str(),
        "reason": decision.reason,
        "notBefore": decision.not_before.map(clock::rfc3339),
        "migration": migration,
    })
}

/// What the controllers plan over: the census, with each down member's workloads as it
/// last reported them (those serving elsewhere now left out), a suspect member taken as it
/// last was, and stale copies of evacuated workloads left out everywhere.
fn controller_census(census: &Census, memory: &Memory, migrations: &[Migration]) -> Census {
    // A workload that serves on a member that answers is not also on one that does not.
    let serving: BTreeSet<&WorkloadKey> = census
        .inventories
        .values()
        .filter_map(|i| i.as_ref().ok())
        .flat_map(|i| {
            i.workloads
                .iter()
                .filter(|w| w.replicas > 0)
                .map(|w| &w.key)
        })
        .collect();
    let stale: BTreeSet<(&str, &str)> = migrations
        .iter()
        .filter(|m| m.fenced && m.state == State::Done && !m.source_removed)
        .map(|m| (m.from.as_str(), m.workload.as_str()))
        .collect();
    let inventories = census
        .inventories
        .iter()
        .map(|(name, result)| {
            let phase = memory.health.phase(name);
            let remembered = |last: &Inventory| {
                let mut last = last.clone();
                last.workloads.retain(|w| !serving.contains(&w.key));
                last
            };
            let inventory = match (result, phase) {
                (Ok(inventory), _) => Ok(inventory.clone()),
                (Err(_), Phase::Down { .. }) => memory
                    .last_seen
                    .get(name)
                    .map(|last| Inventory {
                        health: Health::Unreachable,
                        ..remembered(last)
                    })
                    .ok_or_else(|| unreachable(name)),
                // Suspect: not yet acted on, so planned as it last was.
                (Err(_), _) => memory
                    .last_seen
                    .get(name)
                    .map(remembered)
                    .ok_or_else(|| unreachable(name)),
            };
            let inventory = inventory.map(|mut i| {
                i.workloads
                    .retain(|w| !stale.contains(&(name.as_str(), w.key.to_string().as_str())));
                i
            });
            (name.clone(), inventory)
        })
        .collect();
    Census { inventories }
}

fn unreachable(cluster: &str) -> PortError {
    PortError::Unreachable {
        cluster: cluster.to_owned(),
        reason: "no inventory yet".to_owned(),
    }
}

/// Evacuated workloads that could go home: `(workload, home, where it runs now)` for each
/// workload whose latest migration is a completed evacuation whose stale copy is gone.
fn returns(migrations: &[Migration], seen: &Census) -> Vec<(String, String, String)> {
    // `migrations` is newest first: the first seen per workload is its latest.
    let mut latest: BTreeMap<&str, &Migration> = BTreeMap::new();
    for m in migrations.iter().filter(|m| !m.dry_run) {
        latest.entry(m.workload.as_str()).or_insert(m);
    }
    latest
        .into_values()
        .filter(|m| m.trigger == Trigger::Failover && m.state == State::Done && m.source_removed)
        .filter_map(|m| {
            let key = WorkloadKey::parse(&m.workload)?;
            let (now_on, _) = seen.locate(&key)?;
            (now_on == m.to).then(|| (m.workload.clone(), m.from.clone(), m.to.clone()))
        })
        .collect()
}

/// Prometheus lines: the last pass's duration, moves by reason, evacuations, savings
/// realised.
pub fn metrics(report: &Report, migrations: &[Migration], out: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "# HELP ferry_controller_pass_seconds How long the controllers' last pass took."
    );
    let _ = writeln!(out, "# TYPE ferry_controller_pass_seconds gauge");
    let _ = writeln!(
        out,
        "ferry_controller_pass_seconds {:.6}",
        report.took.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "# HELP ferry_moves_total Migrations that completed, by what started them."
    );
    let _ = writeln!(out, "# TYPE ferry_moves_total counter");
    for trigger in Trigger::ALL {
        let count = migrations
            .iter()
            .filter(|m| !m.dry_run && m.trigger == trigger && m.state == State::Done)
            .count();
        let _ = writeln!(
            out,
            "ferry_moves_total{{reason=\"{}\"}} {count}",
            trigger.as_str()
        );
    }
    let evacuations = migrations
        .iter()
        .filter(|m| m.fenced && m.state == State::Done)
        .count();
    let _ = writeln!(
        out,
        "# HELP ferry_evacuations_total Workloads restarted elsewhere because their cluster was down."
    );
    let _ = writeln!(out, "# TYPE ferry_evacuations_total counter");
    let _ = writeln!(out, "ferry_evacuations_total {evacuations}");
    let _ = writeln!(
        out,
        "# HELP ferry_savings_realised_monthly Monthly savings of the completed moves (negative: moves that cost more, such as evacuations)."
    );
    let _ = writeln!(out, "# TYPE ferry_savings_realised_monthly gauge");
    for trigger in Trigger::ALL {
        let saved = super::world::total(
            migrations
                .iter()
                .filter(|m| !m.dry_run && m.trigger == trigger && m.state == State::Done)
                .filter_map(|m| m.monthly_savings),
        );
        let _ = writeln!(
            out,
            "ferry_savings_realised_monthly{{reason=\"{}\"}} {saved:.2}",
            trigger.as_str()
        );
    }
}

#[cfg(test)]
mod tests;

/// The claims `workload`'s pods use on `cluster`, as the census saw them (a down member's
/// from its last inventory), for the rule that keeps stateful workloads where they are.
fn claims_on(census: &Census, workload: &str, cluster: &str) -> Vec<String> {
    let Some(key) = WorkloadKey::parse(workload) else {
        return Vec::new();
    };
    census.claims_on(&key, cluster)
}
