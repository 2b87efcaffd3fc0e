//! Exact improvement of small assignments: the placement as a mixed-integer program,
//! solved by branch and bound (microlp, pure Rust), started from the heuristic's answer.
//!
//! The heuristic is fast and usually optimal, but a few tight instances need many
//! workloads rearranged at once (one expensive workload left out so that three others
//! can shift), which no local move reaches. On small instances the program finds them.
//!
//! Model, per movable workload w with R replicas: one binary `y[w,k]` per allowed
//! cluster count k; with `q = R / k` and `m = R % k`, per candidate cluster C binaries
//! `big[w,k,C]` (a share of q + 1 replicas) and `small[w,k,C]` (q replicas), with
//! `sum_k y <= 1`, `sum_C big = m y`, `sum_C small = (k - m) y`, `big + small <= y`;
//! per cluster and resource the shares fit the room left by fixed workloads; per
//! policy with a budget the shares' cost fits what fixed workloads left of it.
//!
//! Two stages keep the objective lexicographic without mixing a count with money:
//! first the most workloads placed, then the lowest objective with at least that many.
//! Both stages stop after a fixed number of branch-and-bound nodes, so the answer is
//! deterministic; and whatever the solver returns is replayed through the same checks
//! as every other move and kept only if it is valid and better.

use microlp::{ComparisonOp, OptimizationDirection, SolveOptions, Variable};

use super::resolve::{CPU, MEMORY};
use super::search::State;

/// Largest number of movable workloads the program is built for.
pub(crate) const MAX_WORKLOADS: usize = 64;
/// Largest program (binaries) worth solving; beyond, the heuristic's answer stands.
const MAX_VARIABLES: usize = 8_000;
/// Work per stage, in branch-and-bound nodes times share variables (a node's simplex
/// work grows with the program): a limit on work, not on time, keeps plans deterministic.
/// About a third of a second per stage on this project's benchmark machine.
const WORK_LIMIT: u64 = 400_000;
/// Nodes per stage, whatever the size: small programs stop here.
const NODE_LIMIT: (u64, u64) = (300, 5_000);

/// One share variable: `replicas` of workload `w` on cluster `cluster` in mode `k`.
struct ShareVar {
    w: usize,
    k: usize,
    big: bool,
    cluster: u16,
    var: Variable,
}

struct ModeVar {
    w: usize,
    k: usize,
    var: Variable,
}

/// Which stage is being solved.
#[derive(Clone, Copy)]
enum Stage {
    /// Maximise the number of placed workloads.
    Count,
    /// Minimise the objective with at least this many placed.
    Value { placed: usize },
}

struct Program {
    mip: microlp::Problem,
    /// Replicas per workload (all workloads, indexed like the state).
    replicas: Vec<u32>,
    modes: Vec<ModeVar>,
    shares: Vec<ShareVar>,
}

/// A better assignment than `heuristic`, if the program finds one within its limits.
pub(crate) fn improve<'p, 'a>(heuristic: &State<'p, 'a>) -> Option<State<'p, 'a>> {
    let problem = heuristic.problem;
    let movable: Vec<usize> = (0..problem.workloads.len())
        .filter(|&w| heuristic.movable[w] && problem.workloads[w].placeable())
        .collect();
    if movable.is_empty() || movable.len() > MAX_WORKLOADS {
        return None;
    }
    // The room and budget that fixed workloads leave.
    let mut base = heuristic.clone();
    for &w in &movable {
        if !base.clusters[w].is_empty() {
            base.unplace(w);
        }
    }
    if binaries(&base, &movable) > MAX_VARIABLES {
        return None;
    }
    let placed_now = movable
        .iter()
        .filter(|&&w| !heuristic.clusters[w].is_empty())
        .count();

    let mut placed = placed_now;
    let mut start: Vec<Vec<u16>> = heuristic.clusters.clone();
    if placed_now < movable.len() {
        let program = build(&base, &movable, Stage::Count);
        if let Some(found) = solve(&program, &start) {
            let count = movable.iter().filter(|&&w| !found[w].is_empty()).count();
            if count > placed {
                placed = count;
                start = found;
            }
        }
    }
    let program = build(&base, &movable, Stage::Value { placed });
    let found = solve(&program, &start).unwrap_or_else(|| start.clone());
    let candidate = replay(&base, &movable, &found)?;
    candidate.better_than(heuristic).then_some(candidate)
}

/// Clusters that can take a share at all: room may be negative where kept placements
/// overrun a cluster, and then nothing new fits there.
fn open(base: &State<'_, '_>, c: u16) -> bool {
    let free = base.free[usize::from(c)];
    free[CPU] >= 0 && free[MEMORY] >= 0
}

fn modes(base: &State<'_, '_>, w: usize) -> std::ops::RangeInclusive<usize> {
    let info = &base.problem.workloads[w];
    let low = usize::try_from(info.min_clusters.max(1)).unwrap_or(usize::MAX);
    let high = usize::try_from(info.max_clusters).unwrap_or(0);
    low..=high
}

fn binaries(base: &State<'_, '_>, movable: &[usize]) -> usize {
    movable
        .iter()
        .map(|&w| {
            let candidates = base.problem.workloads[w].candidates.len();
            modes(base, w).count() * (1 + 2 * candidates)
        })
        .sum()
}

fn build(base: &State<'_, '_>, movable: &[usize], stage: Stage) -> Program {
    let problem = base.problem;
    let direction = match stage {
        Stage::Count => OptimizationDirection::Maximize,
        Stage::Value { .. } => OptimizationDirection::Minimize,
    };
    let mut mip = microlp::Problem::new(direction);
    let mut modes_out = Vec::new();
    let mut shares = Vec::new();
    let mut count_row: Vec<(Variable, f64)> = Vec::new();
    for &w in movable {
        let info = &problem.workloads[w];
        let replicas = info.workload.replicas;
        let mut one_mode: Vec<(Variable, f64)> = Vec::new();
        for k in modes(base, w) {
            let y = mip.add_binary_var(match stage {
                Stage::Count => 1.0,
                Stage::Value { .. } => 0.0,
            });
            one_mode.push((y, 1.0));
            count_row.push((y, 1.0));
            modes_out.push(ModeVar { w, k, var: y });
            let big_shares = usize::try_from(replicas).unwrap_or(0) % k;
            let mut bigs: Vec<(Variable, f64)> = vec![(y, -(big_shares as f64))];
            let mut smalls: Vec<(Variable, f64)> = vec![(y, -((k - big_shares) as f64))];
            for &c in &info.candidates {
                if !open(base, c) {
                    continue;
                }
                let mut pair: Vec<(Variable, f64)> = vec![(y, -1.0)];
                // Share index 0 is a big share when there are any, the last a small one.
                let kinds: &[(bool, usize)] = if big_shares > 0 {
                    &[(true, 0), (false, k - 1)]
                } else {
                    &[(false, k - 1)]
                };
                for &(big, index) in kinds {
                    let demand = base.demand(w, k, index);
                    let free = base.free[usize::from(c)];
                    if demand[CPU] > free[CPU] || demand[MEMORY] > free[MEMORY] {
                        continue;
                    }
                    let objective = match stage {
                        Stage::Count => 0.0,
                        Stage::Value { .. } => base.share_value(w, k, index, c),
                    };
                    let var = mip.add_binary_var(objective);
                    pair.push((var, 1.0));
                    if big {
                        bigs.push((var, 1.0));
                    } else {
                        smalls.push((var, 1.0));
                    }
                    shares.push(ShareVar {
                        w,
                        k,
                        big,
                        cluster: c,
                        var,
                    });
                }
                if pair.len() > 2 {
                    mip.add_constraint(pair.as_slice(), ComparisonOp::Le, 0.0);
                }
            }
            mip.add_constraint(bigs.as_slice(), ComparisonOp::Eq, 0.0);
            mip.add_constraint(smalls.as_slice(), ComparisonOp::Eq, 0.0);
        }
        if one_mode.len() > 1 {
            mip.add_constraint(one_mode.as_slice(), ComparisonOp::Le, 1.0);
        }
    }
    if let Stage::Value { placed } = stage {
        mip.add_constraint(count_row.as_slice(), ComparisonOp::Ge, placed as f64);
    }

    // Capacity rows, divided by the gcd of their integers: exact, and small coefficients
    // suit the simplex better than byte counts around 1e11.
    let clusters = problem.clusters.len();
    let mut rows: Vec<[Vec<(Variable, i64)>; 2]> = vec![[Vec::new(), Vec::new()]; clusters];
    for share in &shares {
        let index = share_index(share);
        let demand = base.demand(share.w, share.k, index);
        for r in [CPU, MEMORY] {
            if demand[r] > 0 {
                rows[usize::from(share.cluster)][r].push((share.var, demand[r]));
            }
        }
    }
    for (c, per_resource) in rows.iter().enumerate() {
        for r in [CPU, MEMORY] {
            let row = &per_resource[r];
            let free = base.free[c][r];
            let total: i64 = row.iter().map(|&(_, d)| d).sum();
            if row.is_empty() || total <= free {
                continue;
            }
            let unit = row.iter().fold(0, |g, &(_, d)| gcd(g, d)).max(1);
            let terms: Vec<(Variable, f64)> =
                row.iter().map(|&(v, d)| (v, (d / unit) as f64)).collect();
            mip.add_constraint(terms.as_slice(), ComparisonOp::Le, (free / unit) as f64);
        }
    }

    // Budget rows, with the same tolerance as `State::budget_allows`.
    for (p, &budget) in problem.budgets.iter().enumerate() {
        if !budget.is_finite() {
            continue;
        }
        let terms: Vec<(Variable, f64)> = shares
            .iter()
            .filter(|s| problem.workloads[s.w].policy == Some(p))
            .map(|s| {
                let index = share_index(s);
                (s.var, base.share_cost(s.w, s.k, index, s.cluster))
            })
            .collect();
        if !terms.is_empty() {
            let left = budget - base.spent[p] + 1e-7;
            mip.add_constraint(terms.as_slice(), ComparisonOp::Le, left);
        }
    }
    Program {
        mip,
        replicas: problem
            .workloads
            .iter()
            .map(|info| info.workload.replicas)
            .collect(),
        modes: modes_out,
        shares,
    }
}

/// A share index with the variable's replica count: in the engine's division the first
/// `replicas % k` shares are the big ones, so 0 is big when there are any and the last
/// share is small.
fn share_index(share: &ShareVar) -> usize {
    if share.big { 0 } else { share.k - 1 }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a.abs() } else { gcd(b, a % b) }
}

/// Solves `program` from `start`; the clusters of each workload's shares, big ones first.
fn solve(program: &Program, start: &[Vec<u16>]) -> Option<Vec<Vec<u16>>> {
    let mut hint = Vec::with_capacity(program.modes.len() + program.shares.len());
    for mode in &program.modes {
        let on = start[mode.w].len() == mode.k;
        hint.push((mode.var, if on { 1.0 } else { 0.0 }));
    }
    for share in &program.shares {
        let clusters = &start[share.w];
        // In the engine's division the first `replicas % k` shares are the big ones.
        let big_shares = usize::try_from(program.replicas[share.w]).unwrap_or(0) % share.k;
        let on = clusters.len() == share.k
            && clusters
                .iter()
                .enumerate()
                .any(|(i, &c)| c == share.cluster && (i < big_shares) == share.big);
        hint.push((share.var, if on { 1.0 } else { 0.0 }));
    }
    let mut options = SolveOptions::default();
    let size = u64::try_from(program.shares.len())
        .unwrap_or(u64::MAX)
        .max(1);
    options.node_limit = Some((WORK_LIMIT / size).clamp(NODE_LIMIT.0, NODE_LIMIT.1));
    options.mip_gap = 1e-3;
    options.warm_start = Some(hint);
    // An error (numbers the solver refuses) or no solution within the limit leaves the
    // heuristic's answer in place.
    let solution = program.mip.solve_with(options).ok()?.into_solution().ok()?;
    let mut clusters: Vec<Vec<u16>> = start.to_vec();
    for mode in &program.modes {
        clusters[mode.w].clear();
    }
    let mut bigs: Vec<Vec<u16>> = vec![Vec::new(); start.len()];
    let mut smalls: Vec<Vec<u16>> = vec![Vec::new(); start.len()];
    for share in &program.shares {
        if solution.var_value(share.var) > 0.5 {
            if share.big {
                bigs[share.w].push(share.cluster);
            } else {
                smalls[share.w].push(share.cluster);
            }
        }
    }
    for mode in &program.modes {
        if solution.var_value(mode.var) > 0.5 {
            let mut chosen = std::mem::take(&mut bigs[mode.w]);
            chosen.append(&mut smalls[mode.w]);
            clusters[mode.w] = chosen;
        }
    }
    Some(clusters)
}

/// Rebuilds the assignment from the room fixed workloads leave, with the checks every
/// move makes; `None` if any share does not fit or breaks a budget.
fn replay<'p, 'a>(
    base: &State<'p, 'a>,
    movable: &[usize],
    clusters: &[Vec<u16>],
) -> Option<State<'p, 'a>> {
    let mut state = base.clone();
    for &w in movable {
        let chosen = &clusters[w];
        if chosen.is_empty() {
            continue;
        }
        let k = chosen.len();
        if !modes(base, w).contains(&k) {
            return None;
        }
        let mut cost = 0.0;
        for (i, &c) in chosen.iter().enumerate() {
            let info = &base.problem.workloads[w];
            let distinct = !chosen[..i].contains(&c);
            if !distinct || !info.is_eligible(c) || !state.fits(c, state.demand(w, k, i)) {
                return None;
            }
            cost += state.share_cost(w, k, i, c);
        }
        if !state.budget_allows(w, cost) {
            return None;
        }
        state.place(w, chosen.clone());
    }
    Some(state)
}
