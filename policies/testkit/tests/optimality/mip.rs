//! The exact optimum of a fresh plan, as a mixed-integer program solved by HiGHS.
//!
//! Each workload w has one "mode" per allowed cluster count k (1 without spread,
//! `minClusters..=min(maxClusters, R)` with it). With `q = R / k` and `m = R % k`, mode k
//! has a binary `y[w,k]` and, per cluster C that passes w's hard filters, binaries
//! `big[w,k,C]` (C takes a share of q + 1 replicas) and `small[w,k,C]` (q replicas):
//!
//! - `sum_k y[w,k] <= 1`: at most one mode, and w is placed iff one is chosen;
//! - `sum_C big[w,k,C] = m y[w,k]` and `sum_C small[w,k,C] = (k - m) y[w,k]`: the mode's
//!   shares, which larger share lands where being free;
//! - `big[w,k,C] + small[w,k,C] <= y[w,k]`: shares on distinct clusters;
//! - per cluster and resource, `sum (share x request) <= capacity - reserved`;
//! - per policy with a budget, `sum (share x replica cost) <= budget` over the
//!   workloads it governs.
//!
//! The objective is lexicographic, solved in two stages so that no big-M mixes a count
//! with money: first maximise `sum y`; then, with `sum y >= that optimum`, minimise the
//! value of the shares.

use std::time::Instant;

use good_lp::solvers::highs::HighsProblem;
use good_lp::{
    Constraint, Expression, ProblemVariables, Solution, SolutionStatus, SolverModel, Variable,
    highs, variable, variables,
};

use crate::reference::{Assignment, Reference, Totals, division, room};

/// A proven optimum.
pub struct Optimum {
    /// One optimal assignment.
    pub assignment: Assignment,
    /// Its totals, recomputed by the reference.
    pub totals: Totals,
    /// Wall time of both stages.
    pub seconds: f64,
}

/// Stop rule of the value stage: proven within this relative gap, far below the 1% the
/// suite tolerates from the engine.
const VALUE_REL_GAP: f32 = 1e-5;

struct Share {
    workload: usize,
    cluster: usize,
    replicas: u32,
    var: Variable,
}

struct Formulation {
    vars: ProblemVariables,
    constraints: Vec<Constraint>,
    count: Expression,
    value: Expression,
    shares: Vec<Share>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn formulate(reference: &Reference<'_>) -> Formulation {
    let mut vars = variables!();
    let mut constraints = Vec::new();
    let mut count = Expression::from(0.0);
    let mut value = Expression::from(0.0);
    let mut shares = Vec::new();
    let clusters = reference.clusters.len();
    let room: Vec<(i128, i128)> = reference.clusters.iter().map(room).collect();

    // Dividing capacity rows by the gcd of their integers keeps coefficients small and
    // exact, which HiGHS's tolerances prefer to byte counts around 1e11.
    let mut cpu_unit = 0;
    let mut memory_unit = 0;
    for terms in &reference.terms {
        cpu_unit = gcd(cpu_unit, terms.requests.cpu_millis);
        memory_unit = gcd(memory_unit, terms.requests.memory_bytes);
    }
    for &(cpu, memory) in &room {
        cpu_unit = gcd(cpu_unit, u64::try_from(cpu.max(0)).unwrap_or(0));
        memory_unit = gcd(memory_unit, u64::try_from(memory.max(0)).unwrap_or(0));
    }
    let cpu_unit = cpu_unit.max(1) as f64;
    let memory_unit = memory_unit.max(1) as f64;

    let mut cpu_rows: Vec<Expression> = vec![Expression::from(0.0); clusters];
    let mut memory_rows: Vec<Expression> = vec![Expression::from(0.0); clusters];
    let mut budget_rows: Vec<Expression> =
        vec![Expression::from(0.0); reference.policy_names.len()];

    for (w, terms) in reference.terms.iter().enumerate() {
        let eligible: Vec<usize> = (0..clusters)
            .filter(|&c| terms.excluded[c].is_none() && room[c].0 >= 0 && room[c].1 >= 0)
            .collect();
        let mut modes = Expression::from(0.0);
        for k in terms.clusters.0..=terms.clusters.1 {
            if k == 0 || k as usize > eligible.len() {
                continue;
            }
            let (small, larger) = division(terms.replicas, k);
            let y = vars.add(variable().binary());
            modes += y;
            count += y;
            let mut big_sum = Expression::from(0.0);
            let mut small_sum = Expression::from(0.0);
            for &c in &eligible {
                let mut here = Expression::from(0.0);
                for (size, wanted, sum) in [
                    (small + 1, larger, &mut big_sum),
                    (small, k - larger, &mut small_sum),
                ] {
                    if wanted == 0 {
                        continue;
                    }
                    let x = vars.add(variable().binary());
                    *sum += x;
                    here += x;
                    let replicas = f64::from(size);
                    cpu_rows[c].add_mul(replicas * terms.requests.cpu_millis as f64 / cpu_unit, x);
                    memory_rows[c].add_mul(
                        replicas * terms.requests.memory_bytes as f64 / memory_unit,
                        x,
                    );
                    value.add_mul(replicas * terms.replica_value[c], x);
                    if let Some(policy) = terms.policy {
                        budget_rows[policy].add_mul(replicas * terms.replica_cost[c], x);
                    }
                    shares.push(Share {
                        workload: w,
                        cluster: c,
                        replicas: size,
                        var: x,
                    });
                }
                constraints.push(here.leq(y));
            }
            constraints.push(big_sum.eq(f64::from(larger) * y));
            constraints.push(small_sum.eq(f64::from(k - larger) * y));
        }
        constraints.push(modes.leq(1.0));
    }
    for (c, (cpu, memory)) in cpu_rows.into_iter().zip(memory_rows).enumerate() {
        constraints.push(cpu.leq(room[c].0.max(0) as f64 / cpu_unit));
        constraints.push(memory.leq(room[c].1.max(0) as f64 / memory_unit));
    }
    for &(policy, limit) in &reference.budgets {
        constraints.push(budget_rows[policy].clone().leq(limit));
    }
    Formulation {
        vars,
        constraints,
        count,
        value,
        shares,
    }
}

fn configure(mut model: HighsProblem, time_limit: f64, rel_gap: f32, abs_gap: f32) -> HighsProblem {
    model.set_verbose(std::env::var_os("MIP_VERBOSE").is_some());
    model
        .set_time_limit(time_limit)
        .set_mip_rel_gap(rel_gap)
        .expect("a finite positive gap")
        .set_mip_abs_gap(abs_gap)
        .expect("a finite positive gap")
}

fn proven(status: SolutionStatus, stage: &str, time_limit: f64) -> Result<(), String> {
    match status {
        // GapLimit is HiGHS's "optimal" with a non-zero gap within the tolerances set
        // here: proven.
        SolutionStatus::Optimal | SolutionStatus::GapLimit => Ok(()),
        SolutionStatus::TimeLimit => Err(format!(
            "MIP {stage} stage not proven optimal within {time_limit}s: shrink the instance"
        )),
    }
}

/// Solves `reference` to proven optimality, or says why not.
pub fn solve(reference: &Reference<'_>, time_limit: f64) -> Result<Optimum, String> {
    let started = Instant::now();
    let first = formulate(reference);
    if first.shares.is_empty() {
        // Nothing can be placed anywhere; HiGHS refuses an empty model.
        let assignment = vec![Vec::new(); reference.terms.len()];
        let totals = reference.validate(&assignment).map_err(|p| p.join("; "))?;
        return Ok(Optimum {
            assignment,
            totals,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    // Stage 1: how many workloads can be placed. The count is integral, so a gap below
    // one half proves it.
    let mut model = configure(
        first.vars.maximise(first.count.clone()).using(highs),
        time_limit,
        0.0,
        0.5,
    );
    for constraint in first.constraints {
        model.add_constraint(constraint);
    }
    let solution = model
        .solve()
        .map_err(|e| format!("MIP count stage failed: {e}"))?;
    proven(solution.status(), "count", time_limit)?;
    let best_count = first.count.eval_with(&solution).round();

    // Stage 2: the least value among assignments placing that many.
    let second = formulate(reference);
    let mut model = configure(
        second.vars.minimise(second.value.clone()).using(highs),
        time_limit,
        VALUE_REL_GAP,
        1e-6,
    );
    for constraint in second.constraints {
        model.add_constraint(constraint);
    }
    model.add_constraint(second.count.clone().geq(best_count - 0.5));
    let solution = model
        .solve()
        .map_err(|e| format!("MIP value stage failed: {e}"))?;
    proven(solution.status(), "value", time_limit)?;

    let mut assignment: Assignment = vec![Vec::new(); reference.terms.len()];
    for share in &second.shares {
        if solution.value(share.var) > 0.5 {
            assignment[share.workload].push((share.cluster, share.replicas));
        }
    }
    for shares in &mut assignment {
        shares.sort_unstable();
    }
    let seconds = started.elapsed().as_secs_f64();
    let totals = reference.validate(&assignment).map_err(|problems| {
        format!(
            "the MIP's own solution breaks the rules (formulation bug): {}",
            problems.join("; ")
        )
    })?;
    if totals.placed as f64 != best_count {
        return Err(format!(
            "MIP stages disagree: count stage {best_count}, value stage placed {}",
            totals.placed
        ));
    }
    let solver_value = second.value.eval_with(&solution);
    if (solver_value - totals.value).abs() > 1e-6 * totals.value.abs().max(1.0) {
        return Err(format!(
            "MIP objective {solver_value} differs from its recomputed value {}",
            totals.value
        ));
    }
    Ok(Optimum {
        assignment,
        totals,
        seconds,
    })
}
