//! Rebalance planning: start from where workloads run, move what must move (its cluster
//! now fails a hard rule), place what is new, and propose savings moves only where the
//! governing policy's `rebalance` rules allow them.

use super::resolve::{Problem, first_static_failure};
use super::search::{self, Assignment, State};
use crate::model::HOURS_PER_MONTH;

/// A savings move that passed the rules.
struct Candidate {
    savings: f64,
    workload: usize,
    to: u16,
    note: String,
}

pub(crate) fn solve(problem: &Problem<'_>) -> Assignment {
    let n = problem.workloads.len();
    let mut state = State::new(problem);
    let mut notes: Vec<Option<String>> = vec![None; n];
    for (w, info) in problem.workloads.iter().enumerate() {
        let Some(c) = info.current else { continue };
        let cluster = &problem.clusters[usize::from(c)];
        let shares = u32::try_from(info.current_all.len()).unwrap_or(u32::MAX);
        if shares > 1
            && info.current_all.iter().all(|&c| info.is_eligible(c))
            && (info.min_clusters..=info.max_clusters).contains(&shares)
        {
            // Spread now as its policy allows: its shares stay where they run.
            state.place(w, info.current_all.clone());
            state.movable[w] = false;
        } else if info.is_eligible(c) && info.min_clusters <= 1 {
            // What runs stays counted, even over capacity: that is the cluster's reality.
            state.place(w, vec![c]);
            state.movable[w] = false;
        } else {
            let required = info.policy.map(|p| {
                problem.policies[p]
                    .required
                    .as_ref()
                    .is_none_or(|r| r.matches(&cluster.cluster.labels))
            });
            let why = first_static_failure(cluster, info.workload, required).unwrap_or_else(|| {
                format!("spread: needs at least {} clusters", info.min_clusters)
            });
            notes[w] = Some(format!("evacuate {}: {why}", cluster.cluster.name));
        }
    }
    let mut state = search::search_from(&state);

    // Where a fresh plan would put each workload: the first destination to consider.
    let target = search::solve(problem);
    let mut moves_per_policy = vec![0u32; problem.policies.len()];
    let mut moved = vec![false; n];
    loop {
        let mut candidates = Vec::new();
        let kept = (0..n).filter(|&w| !state.movable[w] && !moved[w]);
        let candidates_now: Vec<Candidate> = kept
            .filter_map(|w| savings_move(&state, &target, w, &moves_per_policy, &mut notes))
            .collect();
        candidates.extend(candidates_now);
        candidates.sort_by(|a, b| {
            b.savings
                .total_cmp(&a.savings)
                .then(a.workload.cmp(&b.workload))
        });
        let mut accepted = false;
        for candidate in candidates {
            let w = candidate.workload;
            let Some(p) = problem.workloads[w].policy else {
                continue;
            };
            let from = state.clusters[w][0];
            if moves_per_policy[p] >= problem.policies[p].rebalance.max_concurrent_migrations {
                notes[w] = Some(format!(
                    "stays: policy {} already moves {} workloads (maxConcurrentMigrations)",
                    problem.policies[p].name, moves_per_policy[p]
                ));
                continue;
            }
            state.unplace(w);
            if state.try_place_on(w, candidate.to) {
                moves_per_policy[p] += 1;
                moved[w] = true;
                notes[w] = Some(candidate.note);
                accepted = true;
            } else {
                state.place(w, vec![from]);
            }
        }
        if !accepted {
            break;
        }
    }
    Assignment {
        clusters: state.clusters,
        notes,
    }
}

/// The best move of kept workload `w` that its policy's rules allow, if any; records
/// why it stays otherwise.
fn savings_move(
    state: &State<'_, '_>,
    target: &Assignment,
    w: usize,
    moves_per_policy: &[u32],
    notes: &mut [Option<String>],
) -> Option<Candidate> {
    let problem = state.problem;
    let info = &problem.workloads[w];
    let from = *state.clusters[w].first()?;
    let fresh_choice = target.clusters[w]
        .first()
        .copied()
        .filter(|&d| d != from && target.clusters[w].len() == 1);
    let Some(p) = info.policy else {
        if let Some(d) = fresh_choice {
            notes[w] = Some(format!(
                "stays: no policy enables rebalancing (a fresh plan would use {})",
                problem.clusters[usize::from(d)].cluster.name
            ));
        }
        return None;
    };
    let policy = &problem.policies[p];
    let rules = &policy.rebalance;
    if !rules.enabled {
        if let Some(d) = fresh_choice {
            notes[w] = Some(format!(
                "stays: policy {} does not enable rebalancing (a fresh plan would use {})",
                policy.name,
                problem.clusters[usize::from(d)].cluster.name
            ));
        }
        return None;
    }
    if moves_per_policy[p] >= rules.max_concurrent_migrations {
        return None;
    }
    let replicas = f64::from(info.workload.replicas);
    let cost_now = replicas * problem.unit_cost(w, from);
    let value_now = problem.unit_value(w, from);
    let room_now = state.best_destination_for_whole(w, from);
    let mut rejection: Option<String> = None;
    let mut best: Option<Candidate> = None;
    for d in [fresh_choice, room_now].into_iter().flatten() {
        if problem.unit_value(w, d) >= value_now {
            continue;
        }
        let savings = cost_now - replicas * problem.unit_cost(w, d);
        let percent = if cost_now > 0.0 {
            savings / cost_now * 100.0
        } else {
            0.0
        };
        let name = &problem.clusters[usize::from(d)].cluster.name;
        if savings <= 0.0 || percent < rules.min_savings_percent {
            rejection.get_or_insert(format!(
                "stays: moving to {name} saves {percent:.1}%, below minSavingsPercent {}",
                rules.min_savings_percent
            ));
            continue;
        }
        let migration = info.workload.data_gib
            * problem.clusters[usize::from(from)]
                .cluster
                .pricing
                .egress_gib;
        let payback = migration / (savings / HOURS_PER_MONTH);
        if payback > rules.payback_hours {
            rejection.get_or_insert(format!(
                "stays: moving to {name} pays back in {payback:.0}h, more than paybackHours {}",
                rules.payback_hours
            ));
            continue;
        }
        if !state.whole_fits(w, d) {
            rejection.get_or_insert(format!("stays: {name} has no room now"));
            continue;
        }
        if best.as_ref().is_none_or(|b| savings > b.savings) {
            let note = format!(
                "saves {savings:.2}/month ({percent:.0}%); migration pays back in {payback:.0}h"
            );
            best = Some(Candidate {
                savings,
                workload: w,
                to: d,
                note,
            });
        }
    }
    if best.is_none()
        && let Some(rejection) = rejection
    {
        notes[w] = Some(rejection);
    }
    best
}
