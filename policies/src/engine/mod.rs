//! The placement engine: given clusters, workloads and policies, decide where each
//! workload (or each share of its replicas) runs, and say why.
//!
//! The pipeline, in the manner of the Kubernetes scheduler framework:
//! 1. [`resolve`]: pick each workload's governing policy and run the hard filters
//!    (health, taints, required affinity, spread) once per workload and cluster;
//! 2. [`search`]: choose an assignment that places as many workloads as possible at the
//!    lowest objective, subject to capacity and budgets;
//! 3. [`rebalance`]: in rebalance mode, start from the current placement and keep only
//!    the moves the policies' `rebalance` rules allow;
//! 4. [`explain`]: turn the assignment into the plan, with reasons.
//!
//! Everything is deterministic: iteration follows input order and ties break by index.

mod exact;
mod explain;
mod rebalance;
mod resolve;
mod search;

use std::collections::BTreeMap;

use thiserror::Error;

use crate::model::{Cluster, PlacementPolicy, Workload};

pub use resolve::{PREFER_NO_SCHEDULE_PENALTY, conflicts, governing_policy};

/// What the engine decides over. Borrowed, so that the broker can plan over its
/// snapshot without copying it.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// Member clusters. Each needs a capacity; a missing health counts as `Ready`.
    pub clusters: &'a [Cluster],
    /// Workloads, with where they run now.
    pub workloads: &'a [Workload],
    /// Placement policies.
    pub policies: &'a [PlacementPolicy],
}

/// Fresh planning ignores where workloads run; rebalance starts from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Place everything from scratch.
    Fresh,
    /// Keep the current placement and propose only the moves the rules allow.
    Rebalance,
}

impl Mode {
    /// The mode `ferry plan` takes when none is given: rebalance when some workload runs
    /// somewhere, fresh when none does.
    pub fn default_for(workloads: &[Workload]) -> Mode {
        if workloads.iter().any(|w| w.current_cluster.is_some()) {
            Mode::Rebalance
        } else {
            Mode::Fresh
        }
    }

    /// The name used on the command line and in plan JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fresh => "fresh",
            Mode::Rebalance => "rebalance",
        }
    }
}

/// A decided plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The mode it was made in.
    pub mode: Mode,
    /// One entry per workload and cluster, sorted by workload then cluster.
    pub placements: Vec<Placement>,
    /// Workloads that could not be placed, sorted by workload.
    pub unplaced: Vec<Unplaced>,
    /// Workloads the plan leaves where they are because policies of equal priority both
    /// select them, sorted by workload; the rest of the plan goes on without them.
    pub held: Vec<Held>,
    /// Changes from the current placement, sorted by workload then destination.
    pub moves: Vec<Move>,
    /// Monthly cost of all placements.
    pub total_monthly_cost: f64,
    /// The objective the engine minimised (cost minus preference and stickiness terms),
    /// for comparing plans; see `docs/policies.md`.
    pub objective: f64,
}

/// Some replicas of a workload on one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// `namespace/name`.
    pub workload: String,
    /// The cluster.
    pub cluster: String,
    /// How many replicas run there.
    pub replicas: u32,
    /// Their monthly cost there.
    pub monthly_cost: f64,
    /// Where these replicas run now, when that is elsewhere.
    pub from: Option<String>,
    /// Why this cluster.
    pub reasons: Vec<String>,
}

/// A workload the plan could not place.
#[derive(Debug, Clone, PartialEq)]
pub struct Unplaced {
    /// `namespace/name`.
    pub workload: String,
    /// For every cluster, the first hard rule that excluded it.
    pub reasons: BTreeMap<String, String>,
}

/// A workload the plan does not decide for, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// `namespace/name`.
    pub workload: String,
    /// The conflict, as people read it.
    pub reason: String,
    /// The policies in conflict.
    pub conflict: PolicyConflict,
}

/// Two policies of equal priority, the highest of those that select a workload, both
/// select it: neither can govern it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "policies `{first}` and `{second}` both select workload `{workload}` with priority {priority}; give one a higher priority or narrow a selector"
)]
pub struct PolicyConflict {
    /// The workload.
    pub workload: String,
    /// One policy (the first by name).
    pub first: String,
    /// The other.
    pub second: String,
    /// Their shared priority.
    pub priority: i32,
}

/// A change from where a workload runs now.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// `namespace/name`.
    pub workload: String,
    /// Where it runs now.
    pub from: String,
    /// Where the plan puts it (or some of its replicas).
    pub to: String,
    /// Replicas that move.
    pub replicas: u32,
    /// Monthly cost now minus monthly cost after, for the replicas that move.
    pub monthly_savings: f64,
    /// Egress of the data that moves with them, priced at the source.
    pub migration_cost: f64,
    /// Why it moves.
    pub reason: String,
}

/// Input the engine refuses to plan over.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// A cluster whose capacity is unknown cannot take placements.
    #[error("cluster `{cluster}` has no capacity; give spec.capacity for offline planning")]
    MissingCapacity {
        /// The cluster.
        cluster: String,
    },
    /// Two clusters share a name.
    #[error("cluster `{0}` is defined twice")]
    DuplicateCluster(String),
    /// Two workloads share a namespace and name.
    #[error("workload `{0}` is defined twice")]
    DuplicateWorkload(String),
    /// More than 65,535 clusters: beyond what a plan indexes.
    #[error("{0} clusters is more than the engine plans over (65535)")]
    TooManyClusters(usize),
}

/// Plans `snapshot` in `mode`.
pub fn plan(snapshot: &Snapshot<'_>, mode: Mode) -> Result<Plan, PlanError> {
    let problem = resolve::Problem::build(snapshot, mode)?;
    let assignment = match mode {
        Mode::Fresh => search::solve(&problem),
        Mode::Rebalance => rebalance::solve(&problem),
    };
    Ok(explain::plan(&problem, &assignment, mode))
}

/// A hard rule that forbids a workload a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenRule {
    /// The governing policy's name, or `the built-in default`.
    pub policy: String,
    /// The rule, in the plan's words (e.g. `required affinity residency=eu`).
    pub rule: String,
}

/// The plan-independent hard rule (a taint, required affinity) that forbids `workload`
/// (`namespace/name`) the cluster `cluster`, if any: what a move there would break.
/// `None` also when the workload or the cluster is unknown, or the cluster is not
/// healthy: health is no rule a move breaks, and a move checks it for itself.
pub fn hard_rule_against(
    snapshot: &Snapshot<'_>,
    workload: &str,
    cluster: &str,
) -> Result<Option<BrokenRule>, PlanError> {
    let problem = resolve::Problem::build(snapshot, Mode::Rebalance)?;
    let (Some(w), Some(target)) = (
        problem.workloads.iter().position(|w| w.key == workload),
        problem.clusters.iter().find(|c| c.cluster.name == cluster),
    ) else {
        return Ok(None);
    };
    if target
        .cluster
        .health
        .is_some_and(|h| h != crate::model::Health::Ready)
    {
        return Ok(None);
    }
    Ok(
        explain::static_exclusion(&problem, w, target).map(|rule| BrokenRule {
            policy: problem.workloads[w].policy.map_or_else(
                || "the built-in default".to_owned(),
                |p| problem.policies[p].name.clone(),
            ),
            rule,
        }),
    )
}

/// Whether the rules governing `workload` (`namespace/name`) would rather run it on
/// `candidate` than on `current`, where it runs now: `candidate` passes the hard filters
/// and has the lower objective per replica (cost minus preference and stickiness, as
/// rebalance planning weighs them). `None` when the workload or a cluster is unknown.
/// Capacity is not considered: the move itself checks for room.
pub fn prefers(
    snapshot: &Snapshot<'_>,
    workload: &str,
    candidate: &str,
    current: &str,
) -> Result<Option<bool>, PlanError> {
    let problem = resolve::Problem::build(snapshot, Mode::Rebalance)?;
    let index = |name: &str| {
        problem
            .clusters
            .iter()
            .position(|c| c.cluster.name == name)
            .and_then(|i| u16::try_from(i).ok())
    };
    let (Some(w), Some(to), Some(now)) = (
        problem.workloads.iter().position(|w| w.key == workload),
        index(candidate),
        index(current),
    ) else {
        return Ok(None);
    };
    let info = &problem.workloads[w];
    Ok(Some(
        info.is_eligible(to) && problem.unit_value(w, to) < problem.unit_value(w, now),
    ))
}
