//! One simulated cluster: nodes, a scheduler, Deployments that take time to become
//! available, and faults switched on and off at runtime.
//!
//! Time is evaluated lazily: nothing runs in the background. Every call first brings the
//! cluster to "now" (a resize that has completed takes effect at the instant it
//! completed), and availability is computed from each replica's ready instant. That is
//! what makes 500 clusters cost nothing while idle and a paused tokio clock drive every
//! transition in tests.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use ferry_ports::{
    Claim, ClusterPort, Drained, ExistingClaim, ExportedWorkload, Health, Inventory, Kept, Mark,
    ObjectRef, PortError, Removal, Resources, Rollout, RunningWorkload, WorkloadFate, WorkloadKey,
};
use serde_json::Value;
use tokio::time::Instant;

use crate::objects;
use crate::quantity::{format_cpu, format_memory};

/// Most nodes one simulated cluster has: every node is a slot in a vector, and a resize
/// to billions of nodes (a typo in a demo) would exhaust memory instead of failing.
pub const MAX_NODES: u32 = 10_000;

/// Most replicas of one simulated workload, for the same reason: every replica is tracked
/// on its own, so that it can be placed on a node.
pub const MAX_REPLICAS: u32 = 100_000;

/// The default progress deadline is this many rollout times...
const DEADLINE_ROLLOUT_TIMES: u32 = 10;
/// ...and at least this, so that a zero rollout time (scale tests) does not fail every
/// rollout that waits at all.
const MIN_DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// What a simulated cluster is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimClusterSpec {
    pub name: String,
    /// Worker count (at most [`MAX_NODES`]; more is cut to it).
    pub nodes: u32,
    /// Allocatable cpu and memory of each node; every node is the same.
    pub node_allocatable: Resources,
    /// How long a placed replica takes to become available after an apply, a scale-up or
    /// its placement once room appeared.
    pub rollout_time: Duration,
    /// Added to every port call (a real API server's round trip).
    pub api_latency: Duration,
    /// How long a rollout may go without progress before it is `Failed`, as a
    /// Deployment's `progressDeadlineSeconds`; `None` means 10 × `rollout_time`, at least
    /// 10 s.
    pub progress_deadline: Option<Duration>,
}

impl SimClusterSpec {
    /// A cluster of `nodes` identical nodes, with no API latency and the default progress
    /// deadline.
    pub fn new(
        name: impl Into<String>,
        nodes: u32,
        node_allocatable: Resources,
        rollout_time: Duration,
    ) -> SimClusterSpec {
        SimClusterSpec {
            name: name.into(),
            nodes,
            node_allocatable,
            rollout_time,
            api_latency: Duration::ZERO,
            progress_deadline: None,
        }
    }

    pub fn with_api_latency(mut self, api_latency: Duration) -> SimClusterSpec {
        self.api_latency = api_latency;
        self
    }

    pub fn with_progress_deadline(mut self, deadline: Duration) -> SimClusterSpec {
        self.progress_deadline = Some(deadline);
        self
    }

    /// The deadline in force: the configured one, or the default.
    pub fn effective_progress_deadline(&self) -> Duration {
        self.progress_deadline.unwrap_or_else(|| {
            self.rollout_time
                .saturating_mul(DEADLINE_ROLLOUT_TIMES)
                .max(MIN_DEFAULT_DEADLINE)
        })
    }
}

/// A failure to inject. Several can be on at once (one of each kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every port call fails with [`PortError::Unreachable`] (after its latency).
    Unreachable,
    /// `apply` fails with [`PortError::Rejected`] and this reason (an admission policy).
    RejectApply(String),
    /// Replicas not yet available stay not ready (a crash loop, a failing readiness
    /// probe); once the progress deadline passes, their rollout is `Failed`. Clearing the
    /// fault restarts them: they become available a rollout time later.
    RolloutNeverAvailable,
    /// Extra latency on every port call.
    SlowApi(Duration),
}

/// The kind of a [`Fault`], to clear it without repeating its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    Unreachable,
    RejectApply,
    RolloutNeverAvailable,
    SlowApi,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Unreachable,
        FaultKind::RejectApply,
        FaultKind::RolloutNeverAvailable,
        FaultKind::SlowApi,
    ];
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Unreachable => FaultKind::Unreachable,
            Fault::RejectApply(_) => FaultKind::RejectApply,
            Fault::RolloutNeverAvailable => FaultKind::RolloutNeverAvailable,
            Fault::SlowApi(_) => FaultKind::SlowApi,
        }
    }
}

/// One replica.
#[derive(Clone, Copy, Debug)]
enum Pod {
    /// Fits on no node yet (the scheduler's `Unschedulable`).
    Pending,
    /// On `node`, available from `ready_at` on.
    Running { node: usize, ready_at: Instant },
    /// On `node`, never becoming ready while [`Fault::RolloutNeverAvailable`] is on.
    Stuck { node: usize },
}

impl Pod {
    fn node(self) -> Option<usize> {
        match self {
            Pod::Pending => None,
            Pod::Running { node, .. } | Pod::Stuck { node } => Some(node),
        }
    }

    fn available(self, now: Instant) -> bool {
        matches!(self, Pod::Running { ready_at, .. } if ready_at <= now)
    }

    /// Which replicas a scale-down keeps first: available ones, longest-ready first (the
    /// ReplicaSet controller deletes unscheduled, then not-ready, then newest pods).
    fn keep_rank(self) -> (u8, Option<Instant>) {
        match self {
            Pod::Running { ready_at, .. } => (0, Some(ready_at)),
            Pod::Stuck { .. } => (1, None),
            Pod::Pending => (2, None),
        }
    }
}

/// How replicas placed now start.
#[derive(Clone, Copy)]
enum Start {
    ReadyAt(Instant),
    Stuck,
}

impl Start {
    fn pod(self, node: usize) -> Pod {
        match self {
            Start::ReadyAt(ready_at) => Pod::Running { node, ready_at },
            Start::Stuck => Pod::Stuck { node },
        }
    }
}

#[derive(Debug)]
struct Workload {
    labels: BTreeMap<String, String>,
    /// Of one replica.
    requests: Resources,
    mark: Option<Mark>,
    /// The graph an apply brought, cleaned, which `export` returns with its Deployment's
    /// replicas following `pods.len()`. `None` for a seeded workload: its graph is
    /// synthesized when exported, because 50,000 stored graphs would cost most of a
    /// gigabyte for nothing.
    objects: Option<Vec<Value>>,
    pods: Vec<Pod>,
    /// Position in the scheduling queue while some replica is pending.
    queued: Option<u64>,
    /// When the rollout in progress started; `None` once it completed. As in Kubernetes,
    /// only a rollout in progress can exceed its deadline: a completed Deployment that
    /// later loses replicas (a node removed) waits for them without failing.
    rollout_since: Option<Instant>,
    /// The claims its pods mount: given when seeded, read from the graph when applied.
    claims: Vec<Claim>,
}

impl Workload {
    fn replicas(&self) -> u32 {
        // Never more than MAX_REPLICAS pods exist.
        u32::try_from(self.pods.len()).unwrap_or(u32::MAX)
    }

    fn available(&self, now: Instant) -> u32 {
        let count = self.pods.iter().filter(|pod| pod.available(now)).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The object graph as `export` gives it.
    fn graph(&self, key: &WorkloadKey) -> Vec<Value> {
        match &self.objects {
            Some(objects) => objects.clone(),
            None => objects::synthesize(
                key,
                &self.labels,
                self.replicas(),
                self.requests,
                &self.claims,
            ),
        }
    }

    fn has_pending(&self) -> bool {
        self.pods.iter().any(|pod| matches!(pod, Pod::Pending))
    }

    /// Records that the rollout completed if every replica is available at `at`; called
    /// before anything takes replicas away, so that the completion is not missed.
    fn settle(&mut self, at: Instant) {
        if self.rollout_since.is_some() && self.pods.iter().all(|pod| pod.available(at)) {
            self.rollout_since = None;
        }
    }

    /// The last instant the rollout that started at `since` made progress: its start, or
    /// the latest replica that became available since.
    fn last_progress(&self, since: Instant, now: Instant) -> Instant {
        self.pods
            .iter()
            .filter_map(|pod| match *pod {
                Pod::Running { ready_at, .. } if ready_at <= now => Some(ready_at),
                _ => None,
            })
            .fold(since, Instant::max)
    }
}

#[derive(Debug)]
struct Node {
    free: Resources,
}

/// The node a replica needing `requests` goes to: among those where it fits, the one with
/// the most free resources (sum of the free fractions of cpu and memory; the lowest index
/// on a tie). That is kube-scheduler's default scoring (NodeResourcesFit with
/// LeastAllocated), so replicas spread as on a real cluster and the scheduler messages
/// read the same; best fit would pack tighter than any real cluster the demo stands for.
fn best_node(nodes: &[Node], allocatable: Resources, requests: Resources) -> Option<usize> {
    let mut best: Option<(u128, usize)> = None;
    for (index, node) in nodes.iter().enumerate() {
        if !requests.fits_in(node.free) {
            continue;
        }
        // Every node has the same allocatable, so comparing free_cpu/alloc_cpu +
        // free_mem/alloc_mem is comparing this cross-multiplied sum, exactly (each product
        // fits in u128; only their sum can overflow, with allocatables near u64::MAX).
        let score = (u128::from(node.free.cpu_millis) * u128::from(allocatable.memory_bytes))
            .saturating_add(
                u128::from(node.free.memory_bytes) * u128::from(allocatable.cpu_millis),
            );
        if best.is_none_or(|(top, _)| score > top) {
            best = Some((score, index));
        }
    }
    best.map(|(_, index)| index)
}

/// Places the workload's pending replicas one by one, each where [`best_node`] says.
fn place_pending(
    nodes: &mut [Node],
    allocatable: Resources,
    workload: &mut Workload,
    start: Start,
) {
    let requests = workload.requests;
    for pod in workload.pods.iter_mut() {
        if !matches!(pod, Pod::Pending) {
            continue;
        }
        // All replicas ask for the same, and room only shrinks in this loop: once one
        // does not fit, none of the rest does.
        let Some(node) = best_node(nodes, allocatable, requests) else {
            break;
        };
        nodes[node].free = nodes[node].free.minus(requests);
        *pod = start.pod(node);
    }
}

fn release(nodes: &mut [Node], requests: Resources, pod: Pod) {
    if let Some(node) = pod.node().and_then(|index| nodes.get_mut(index)) {
        node.free = node.free.plus(requests);
    }
}

/// `at + duration`, or as far as the clock can go: a duration too large to add (a test's
/// `Duration::MAX`) means "never" in practice, and must not panic.
pub(crate) fn after(at: Instant, duration: Duration) -> Instant {
    let mut duration = duration;
    loop {
        if let Some(instant) = at.checked_add(duration) {
            return instant;
        }
        duration /= 2;
    }
}

struct State {
    spec: SimClusterSpec,
    nodes: Vec<Node>,
    workloads: BTreeMap<WorkloadKey, Workload>,
    /// Workloads with pending replicas, first come first served (the scheduler's queue),
    /// by a sequence number taken when a workload starts waiting.
    queue: BTreeMap<u64, WorkloadKey>,
    next_seq: u64,
    /// Node counts that take effect at an instant (a provisioner's resize), in order.
    resizes: Vec<(Instant, u32)>,
    faults: BTreeMap<FaultKind, Fault>,
}

impl State {
    fn new(spec: SimClusterSpec) -> State {
        let count = spec.nodes.min(MAX_NODES);
        let nodes = (0..count)
            .map(|_| Node {
                free: spec.node_allocatable,
            })
            .collect();
        State {
            spec,
            nodes,
            workloads: BTreeMap::new(),
            queue: BTreeMap::new(),
            next_seq: 0,
            resizes: Vec::new(),
            faults: BTreeMap::new(),
        }
    }

    fn has(&self, kind: FaultKind) -> bool {
        self.faults.contains_key(&kind)
    }

    fn delay(&self) -> Duration {
        match self.faults.get(&FaultKind::SlowApi) {
            Some(Fault::SlowApi(extra)) => self.spec.api_latency.saturating_add(*extra),
            _ => self.spec.api_latency,
        }
    }

    fn node_count(&self) -> u32 {
        // Never more than MAX_NODES nodes exist.
        u32::try_from(self.nodes.len()).unwrap_or(u32::MAX)
    }

    fn start(&self, at: Instant) -> Start {
        if self.has(FaultKind::RolloutNeverAvailable) {
            Start::Stuck
        } else {
            Start::ReadyAt(after(at, self.spec.rollout_time))
        }
    }

    /// Applies every scheduled resize due by `now`, each at its own instant.
    fn advance(&mut self, now: Instant) {
        while let Some(&(at, count)) = self.resizes.first() {
            if at > now {
                break;
            }
            self.resizes.remove(0);
            self.set_node_count(count, at);
        }
    }

    /// New nodes are empty; removed nodes are the newest, and their replicas go back to
    /// the scheduler (as after a drain), which places them wherever there is room.
    fn set_node_count(&mut self, count: u32, at: Instant) {
        let count = count.min(MAX_NODES) as usize;
        let allocatable = self.spec.node_allocatable;
        if count > self.nodes.len() {
            self.nodes.resize_with(count, || Node { free: allocatable });
        } else if count < self.nodes.len() {
            let mut evicted = Vec::new();
            for (key, workload) in &mut self.workloads {
                workload.settle(at);
                let mut hit = false;
                for pod in &mut workload.pods {
                    if pod.node().is_some_and(|node| node >= count) {
                        *pod = Pod::Pending;
                        hit = true;
                    }
                }
                if hit {
                    evicted.push(key.clone());
                }
            }
            self.nodes.truncate(count);
            for key in &evicted {
                self.requeue(key);
            }
        }
        self.schedule(at);
    }

    /// Keeps the workload's place in the scheduling queue in step with whether it has
    /// pending replicas.
    fn requeue(&mut self, key: &WorkloadKey) {
        let Some(workload) = self.workloads.get_mut(key) else {
            return;
        };
        match (workload.has_pending(), workload.queued) {
            (true, None) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                workload.queued = Some(seq);
                self.queue.insert(seq, key.clone());
            }
            (false, Some(seq)) => {
                workload.queued = None;
                self.queue.remove(&seq);
            }
            _ => {}
        }
    }

    /// Places what waits, in queue order. A workload that does not fit does not block
    /// smaller ones behind it, as with kube-scheduler.
    fn schedule(&mut self, at: Instant) {
        if self.queue.is_empty() {
            return;
        }
        let start = self.start(at);
        let allocatable = self.spec.node_allocatable;
        let waiting: Vec<WorkloadKey> = self.queue.values().cloned().collect();
        for key in waiting {
            if let Some(workload) = self.workloads.get_mut(&key) {
                place_pending(&mut self.nodes, allocatable, workload, start);
            }
            self.requeue(&key);
        }
    }

    fn remove(&mut self, key: &WorkloadKey) -> Option<Workload> {
        let workload = self.workloads.remove(key)?;
        for pod in &workload.pods {
            release(&mut self.nodes, workload.requests, *pod);
        }
        if let Some(seq) = workload.queued {
            self.queue.remove(&seq);
        }
        Some(workload)
    }

    /// Scales to `replicas`: added replicas start a rollout (they must be placed and become
    /// ready); removed ones free their nodes for whatever waits.
    fn set_replicas(&mut self, key: &WorkloadKey, replicas: u32, now: Instant) {
        let Some(workload) = self.workloads.get_mut(key) else {
            return;
        };
        workload.settle(now);
        let target = replicas as usize;
        if target > workload.pods.len() {
            workload.pods.resize(target, Pod::Pending);
            workload.rollout_since = Some(now);
        } else if target < workload.pods.len() {
            workload.pods.sort_by_key(|pod| pod.keep_rank());
            for pod in workload.pods.drain(target..) {
                release(&mut self.nodes, workload.requests, pod);
            }
        }
        if let Some(objects) = &mut workload.objects {
            objects::set_replicas(key, objects, replicas);
        }
        self.requeue(key);
        self.schedule(now);
    }

    fn run(
        &mut self,
        key: WorkloadKey,
        labels: BTreeMap<String, String>,
        replicas: u32,
        requests: Resources,
        claims: Vec<Claim>,
        now: Instant,
    ) -> Result<(), PortError> {
        self.check_replicas(&key, "seeding", replicas)?;
        self.remove(&key);
        let mut workload = Workload {
            objects: None,
            labels,
            requests,
            mark: None,
            pods: vec![Pod::Pending; replicas as usize],
            queued: None,
            rollout_since: None,
            claims,
        };
        // Seeded replicas that fit were deployed "before": available now, fault or not.
        place_pending(
            &mut self.nodes,
            self.spec.node_allocatable,
            &mut workload,
            Start::ReadyAt(now),
        );
        if workload.has_pending() {
            workload.rollout_since = Some(now);
        }
        self.workloads.insert(key.clone(), workload);
        self.requeue(&key);
        self.schedule(now);
        Ok(())
    }

    fn check_replicas(
        &self,
        key: &WorkloadKey,
        what: &str,
        replicas: u32,
    ) -> Result<(), PortError> {
        if replicas > MAX_REPLICAS {
            return Err(PortError::Rejected {
                cluster: self.spec.name.clone(),
                what: format!("{what} of {key}"),
                reason: format!(
                    "{replicas} replicas: a simulated workload has at most {MAX_REPLICAS}"
                ),
            });
        }
        Ok(())
    }

    fn not_found(&self, key: &WorkloadKey) -> PortError {
        PortError::NotFound {
            cluster: self.spec.name.clone(),
            what: format!("workload {key}"),
        }
    }

    fn apply(
        &mut self,
        exported: &ExportedWorkload,
        mark: &Mark,
        now: Instant,
    ) -> Result<(), PortError> {
        let key = &exported.key;
        let rejected = |reason: String| PortError::Rejected {
            cluster: self.spec.name.clone(),
            what: format!("apply of {key}"),
            reason,
        };
        if let Some(Fault::RejectApply(reason)) = self.faults.get(&FaultKind::RejectApply) {
            return Err(rejected(reason.clone()));
        }
        objects::check(key, &exported.objects).map_err(rejected)?;
        self.check_replicas(key, "apply", exported.replicas)?;
        let mut objects = exported.objects.clone();
        objects::set_replicas(key, &mut objects, exported.replicas);
        let claims = objects::claims(key, &objects);

        let Some(workload) = self.workloads.get_mut(key) else {
            self.workloads.insert(
                key.clone(),
                Workload {
                    labels: exported.labels.clone(),
                    requests: exported.requests,
                    mark: Some(mark.clone()),
                    objects: Some(objects),
                    pods: vec![Pod::Pending; exported.replicas as usize],
                    queued: None,
                    rollout_since: Some(now),
                    claims,
                },
            );
            self.requeue(key);
            self.schedule(now);
            return Ok(());
        };
        if workload.mark.is_none() {
            // Someone else's workload under the same name: overwriting it would destroy
            // what Ferry does not own, so the engine hears about it.
            return Err(PortError::Conflict {
                cluster: self.spec.name.clone(),
                reason: format!(
                    "{key} already runs here without a Ferry mark; it is not Ferry's to overwrite"
                ),
            });
        }
        let template_changed = workload.requests != exported.requests
            || objects::pod_template(key, &workload.graph(key))
                != objects::pod_template(key, &objects);
        workload.labels = exported.labels.clone();
        workload.objects = Some(objects);
        workload.claims = claims;
        workload.mark = Some(mark.clone());
        if template_changed {
            // Every replica is replaced (the Recreate strategy; a rolling update's surge
            // is not modelled), with the new requests.
            for pod in workload.pods.drain(..) {
                release(&mut self.nodes, workload.requests, pod);
            }
            workload.requests = exported.requests;
            workload.pods = vec![Pod::Pending; exported.replicas as usize];
            workload.rollout_since = Some(now);
            self.requeue(key);
            self.schedule(now);
        } else {
            self.set_replicas(key, exported.replicas, now);
        }
        Ok(())
    }

    fn scale(
        &mut self,
        key: &WorkloadKey,
        replicas: u32,
        mark: Option<&Mark>,
        now: Instant,
    ) -> Result<(), PortError> {
        self.check_replicas(key, "scale", replicas)?;
        let Some(workload) = self.workloads.get_mut(key) else {
            return Err(self.not_found(key));
        };
        if let Some(mark) = mark {
            workload.mark = Some(mark.clone());
        }
        self.set_replicas(key, replicas, now);
        Ok(())
    }

    /// A simulated workload holds its dependents inside it: they go, or stay, with it.
    fn delete(
        &mut self,
        key: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
        now: Instant,
    ) -> Result<Removal, PortError> {
        let Some(workload) = self.workloads.get(key) else {
            return Ok(Removal {
                workload: WorkloadFate::Absent,
                deleted: dependents.to_vec(),
                kept: Vec::new(),
            });
        };
        if workload.mark.as_ref() != Some(mark) {
            let holder = workload.mark.clone();
            let reason = match &holder {
                None => "it carries no Ferry mark".to_owned(),
                Some(other) => format!("it is migration {}'s", other.migration),
            };
            return Ok(Removal {
                workload: WorkloadFate::Left { holder },
                deleted: Vec::new(),
                kept: dependents
                    .iter()
                    .map(|object| Kept {
                        object: object.clone(),
                        reason: reason.clone(),
                    })
                    .collect(),
            });
        }
        self.remove(key);
        self.schedule(now);
        Ok(Removal {
            workload: WorkloadFate::Deleted,
            deleted: dependents.to_vec(),
            kept: Vec::new(),
        })
    }

    fn rollout(&self, key: &WorkloadKey, now: Instant) -> Result<Rollout, PortError> {
        let Some(workload) = self.workloads.get(key) else {
            return Err(self.not_found(key));
        };
        let desired = workload.replicas();
        let available = workload.available(now);
        if available == desired {
            return Ok(Rollout::Available { replicas: desired });
        }
        let message = self.progress_message(workload, now);
        if let Some(since) = workload.rollout_since {
            let deadline = self.spec.effective_progress_deadline();
            let stalled = now.saturating_duration_since(workload.last_progress(since, now));
            if stalled > deadline {
                return Ok(Rollout::Failed {
                    reason: format!(
                        "progress deadline exceeded (no progress for {deadline:?}): {message}"
                    ),
                });
            }
        }
        Ok(Rollout::Progressing {
            desired,
            available,
            message,
        })
    }

    /// What a rollout waits for, most telling first: the scheduler's reason for pending
    /// replicas, replicas that do not become ready, replicas still starting.
    fn progress_message(&self, workload: &Workload, now: Instant) -> String {
        let desired = workload.pods.len();
        let (mut available, mut starting, mut stuck, mut pending) = (0, 0, 0, 0);
        for pod in &workload.pods {
            match *pod {
                Pod::Running { ready_at, .. } if ready_at <= now => available += 1,
                Pod::Running { .. } => starting += 1,
                Pod::Stuck { .. } => stuck += 1,
                Pod::Pending => pending += 1,
            }
        }
        let mut parts = Vec::new();
        if pending > 0 {
            parts.push(format!(
                "{pending} of {desired} replicas pending: {}",
                self.unschedulable(workload.requests)
            ));
        }
        if stuck > 0 {
            parts.push(format!(
                "{stuck} of {desired} replicas not ready (failing readiness probe)"
            ));
        }
        if starting > 0 {
            parts.push(format!("{starting} of {desired} replicas starting"));
        }
        parts.push(format!("{available} of {desired} available"));
        parts.join("; ")
    }

    /// The scheduler's view of one replica that does not fit: how many nodes have room for
    /// it, and which resource each of the others lacks.
    fn unschedulable(&self, requests: Resources) -> String {
        let total = self.nodes.len();
        let fitting = self
            .nodes
            .iter()
            .filter(|node| requests.fits_in(node.free))
            .count();
        let short_cpu = self
            .nodes
            .iter()
            .filter(|node| node.free.cpu_millis < requests.cpu_millis)
            .count();
        let short_memory = self
            .nodes
            .iter()
            .filter(|node| node.free.memory_bytes < requests.memory_bytes)
            .count();
        let mut reasons = Vec::new();
        if total == 0 {
            reasons.push("no nodes".to_owned());
        }
        if short_cpu > 0 {
            reasons.push(format!("{short_cpu} insufficient cpu"));
        }
        if short_memory > 0 {
            reasons.push(format!("{short_memory} insufficient memory"));
        }
        let mut text = format!(
            "{fitting}/{total} nodes have {} cpu and {} memory free",
            format_cpu(requests.cpu_millis),
            format_memory(requests.memory_bytes)
        );
        if !reasons.is_empty() {
            text.push_str(&format!(" ({})", reasons.join(", ")));
        }
        text
    }

    fn export(&self, key: &WorkloadKey) -> Result<ExportedWorkload, PortError> {
        let Some(workload) = self.workloads.get(key) else {
            return Err(self.not_found(key));
        };
        let objects = workload.graph(key);
        Ok(ExportedWorkload {
            key: key.clone(),
            replicas: workload.replicas(),
            requests: workload.requests,
            labels: workload.labels.clone(),
            claims: workload.claims.clone(),
            objects,
        })
    }

    /// A simulated workload holds its dependents inside it: draining it adopts them all.
    fn drain(
        &mut self,
        key: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
        now: Instant,
    ) -> Result<Drained, PortError> {
        self.scale(key, 0, Some(mark), now)?;
        Ok(Drained {
            adopted: dependents.to_vec(),
            kept: Vec::new(),
        })
    }

    fn existing_claims(&self, namespace: &str, names: &[String]) -> Vec<ExistingClaim> {
        self.workloads
            .iter()
            .filter(|(key, _)| key.namespace == namespace)
            .flat_map(|(_, workload)| {
                workload
                    .claims
                    .iter()
                    .filter(|claim| names.contains(&claim.name))
                    .map(|claim| ExistingClaim {
                        name: claim.name.clone(),
                        created_at: None,
                        mark: workload.mark.clone(),
                    })
            })
            .collect()
    }

    fn inventory(&self, now: Instant, health: Health) -> Inventory {
        let allocatable = self.spec.node_allocatable;
        let requested = self.nodes.iter().fold(Resources::default(), |sum, node| {
            sum.plus(allocatable.minus(node.free))
        });
        Inventory {
            health,
            nodes: self.node_count(),
            allocatable: allocatable.times(self.node_count()),
            requested,
            workloads: self
                .workloads
                .iter()
                .map(|(key, workload)| RunningWorkload {
                    key: key.clone(),
                    labels: workload.labels.clone(),
                    replicas: workload.replicas(),
                    available_replicas: workload.available(now),
                    requests: workload.requests,
                    mark: workload.mark.clone(),
                    claims: workload.claims.clone(),
                })
                .collect(),
        }
    }

    fn set_fault(&mut self, fault: Fault, now: Instant) {
        if fault.kind() == FaultKind::RolloutNeverAvailable
            && !self.has(FaultKind::RolloutNeverAvailable)
        {
            for workload in self.workloads.values_mut() {
                for pod in &mut workload.pods {
                    if let Pod::Running { node, ready_at } = *pod
                        && ready_at > now
                    {
                        *pod = Pod::Stuck { node };
                    }
                }
            }
        }
        self.faults.insert(fault.kind(), fault);
    }

    fn clear_fault(&mut self, kind: FaultKind, now: Instant) {
        if self.faults.remove(&kind).is_some() && kind == FaultKind::RolloutNeverAvailable {
            let ready_at = after(now, self.spec.rollout_time);
            for workload in self.workloads.values_mut() {
                for pod in &mut workload.pods {
                    if let Pod::Stuck { node } = *pod {
                        *pod = Pod::Running { node, ready_at };
                    }
                }
            }
        }
    }
}

/// A simulated cluster. Clones share the cluster.
#[derive(Clone)]
pub struct SimCluster {
    name: Arc<str>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimCluster")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SimCluster {
    pub fn new(spec: SimClusterSpec) -> SimCluster {
        SimCluster {
            name: Arc::from(spec.name.as_str()),
            state: Arc::new(Mutex::new(State::new(spec))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock could only be a bug here; the state is still the best
        // account of the cluster, so later calls go on rather than all failing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state brought to now, for calls that no fault affects.
    fn now(&self) -> (MutexGuard<'_, State>, Instant) {
        let now = Instant::now();
        let mut state = self.lock();
        state.advance(now);
        (state, now)
    }

    /// Seeds a workload as if a user had deployed it earlier: no mark, its replicas that
    /// fit are available at once (faults do not apply), the rest pending until room
    /// appears. Replaces a workload of the same key. Rejected above [`MAX_REPLICAS`].
    pub fn run<K: Into<String>, V: Into<String>>(
        &self,
        key: WorkloadKey,
        labels: impl IntoIterator<Item = (K, V)>,
        replicas: u32,
        requests: Resources,
    ) -> Result<(), PortError> {
        self.run_with_claims(key, labels, replicas, requests, Vec::new())
    }

    /// [`SimCluster::run`] for a stateful workload whose pods mount `claims` (each a
    /// PersistentVolumeClaim of its graph).
    pub fn run_with_claims<K: Into<String>, V: Into<String>>(
        &self,
        key: WorkloadKey,
        labels: impl IntoIterator<Item = (K, V)>,
        replicas: u32,
        requests: Resources,
        claims: Vec<Claim>,
    ) -> Result<(), PortError> {
        let labels = labels
            .into_iter()
            .map(|(name, value)| (name.into(), value.into()))
            .collect();
        let (mut state, now) = self.now();
        state.run(key, labels, replicas, requests, claims, now)
    }

    /// Switches a fault on, replacing one of the same kind.
    pub fn set_fault(&self, fault: Fault) {
        let (mut state, now) = self.now();
        state.set_fault(fault, now);
    }

    pub fn clear_fault(&self, kind: FaultKind) {
        let (mut state, now) = self.now();
        state.clear_fault(kind, now);
    }

    pub fn clear_faults(&self) {
        let (mut state, now) = self.now();
        for kind in FaultKind::ALL {
            state.clear_fault(kind, now);
        }
    }

    /// The faults on, in [`FaultKind`] order.
    pub fn faults(&self) -> Vec<Fault> {
        self.lock().faults.values().cloned().collect()
    }

    /// The cluster as it is, seen from inside: no latency, no fault on the call, and
    /// `health` says `Unreachable` while that fault is on (for the demo's display and
    /// for tests).
    pub fn snapshot(&self) -> Inventory {
        let (state, now) = self.now();
        let health = if state.has(FaultKind::Unreachable) {
            Health::Unreachable
        } else {
            Health::Ready
        };
        state.inventory(now, health)
    }

    /// Makes the cluster have `nodes` nodes from `at` on; returns the count it would
    /// have had at `at` otherwise, for the operation's progress message.
    pub(crate) fn schedule_resize(&self, nodes: u32, at: Instant) -> u32 {
        let (mut state, now) = self.now();
        let before = state
            .resizes
            .last()
            .map_or_else(|| state.node_count(), |&(_, count)| count);
        state.resizes.push((at, nodes));
        // Stable: resizes due at the same instant keep their order.
        state.resizes.sort_by_key(|&(when, _)| when);
        state.advance(now);
        before
    }

    async fn latency(&self) {
        let delay = self.lock().delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// The state for a port call, once its latency has passed, unless the cluster is
    /// unreachable.
    fn enter(&self) -> Result<(MutexGuard<'_, State>, Instant), PortError> {
        let (state, now) = self.now();
        if state.has(FaultKind::Unreachable) {
            return Err(PortError::Unreachable {
                cluster: self.name.to_string(),
                reason: "connection refused (sim fault Unreachable)".to_owned(),
            });
        }
        Ok((state, now))
    }
}

#[async_trait]
impl ClusterPort for SimCluster {
    fn name(&self) -> &str {
        &self.name
    }

    async fn inventory(&self) -> Result<Inventory, PortError> {
        self.latency().await;
        let (state, now) = self.enter()?;
        Ok(state.inventory(now, Health::Ready))
    }

    async fn export(&self, workload: &WorkloadKey) -> Result<ExportedWorkload, PortError> {
        self.latency().await;
        let (state, _) = self.enter()?;
        state.export(workload)
    }

    async fn apply(&self, workload: &ExportedWorkload, mark: &Mark) -> Result<(), PortError> {
        self.latency().await;
        let (mut state, now) = self.enter()?;
        state.apply(workload, mark, now)
    }

    async fn rollout(&self, workload: &WorkloadKey) -> Result<Rollout, PortError> {
        self.latency().await;
        let (state, now) = self.enter()?;
        state.rollout(workload, now)
    }

    async fn scale(
        &self,
        workload: &WorkloadKey,
        replicas: u32,
        mark: Option<&Mark>,
    ) -> Result<(), PortError> {
        self.latency().await;
        let (mut state, now) = self.enter()?;
        state.scale(workload, replicas, mark, now)
    }

    async fn drain(
        &self,
        workload: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Drained, PortError> {
        self.latency().await;
        let (mut state, now) = self.enter()?;
        state.drain(workload, dependents, mark, now)
    }

    async fn delete(
        &self,
        workload: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Removal, PortError> {
        self.latency().await;
        let (mut state, now) = self.enter()?;
        state.delete(workload, dependents, mark, now)
    }

    async fn claims(
        &self,
        namespace: &str,
        names: &[String],
    ) -> Result<Vec<ExistingClaim>, PortError> {
        self.latency().await;
        let (state, _) = self.enter()?;
        Ok(state.existing_claims(namespace, names))
    }
}
