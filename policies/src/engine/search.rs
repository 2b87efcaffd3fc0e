//! The search for an assignment: most workloads placed first, lowest objective second.
//!
//! Construction is regret-ordered greedy (the workload that loses most by not getting
//! its best cluster goes first), followed by local search to a fixed point:
//! - *repair*: place unplaced workloads, relocating others out of the way (ejection);
//! - *trade*: unplace one workload when that lets two or more others in;
//! - *shift*: move one share to a better cluster with room;
//! - *swap*: exchange two shares between clusters when that lowers the objective.
//!
//! On small instances several construction orders are tried and the best result kept.
//! Every loop runs in index order and ties break by index, so the result is deterministic.

use super::exact;
use super::resolve::{CPU, MEMORY, Problem};

/// Improvements smaller than this are noise, not progress; it keeps loops finite.
const EPSILON: f64 = 1e-7;
/// Above this many workloads, the quadratic neighbourhoods are bounded.
const SMALL: usize = 400;

/// A complete decision: the clusters of each workload's shares.
#[derive(Clone)]
pub(crate) struct Assignment {
    /// Per workload, share `i` runs on `clusters[w][i]`; empty means unplaced.
    pub clusters: Vec<Vec<u16>>,
    /// Per workload, why the rebalancer kept or moved it, when it had a say.
    pub notes: Vec<Option<String>>,
}

/// Replicas of share `i` when `replicas` are divided over `k` clusters: the first
/// `replicas % k` shares take one more.
pub(crate) fn share_replicas(replicas: u32, k: usize, i: usize) -> u32 {
    let k = u32::try_from(k).unwrap_or(u32::MAX).max(1);
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    replicas / k + u32::from(i < replicas % k)
}

/// The mutable search state over a problem.
#[derive(Clone)]
pub(crate) struct State<'p, 'a> {
    pub problem: &'p Problem<'a>,
    /// Free capacity per cluster and resource; may be negative for a kept current placement.
    pub free: Vec<[i64; 2]>,
    /// Monthly cost placed so far per policy.
    pub spent: Vec<f64>,
    /// Per workload, the clusters of its shares.
    pub clusters: Vec<Vec<u16>>,
    /// Whether the search may place or move a workload.
    pub movable: Vec<bool>,
    /// During construction only: give each share the candidate with the most free cpu
    /// instead of the cheapest. Spreading load keeps room on every cluster, which places
    /// more workloads on tight instances; the local search then brings the cost down.
    most_room: bool,
}

impl<'p, 'a> State<'p, 'a> {
    pub fn new(problem: &'p Problem<'a>) -> State<'p, 'a> {
        State {
            problem,
            free: problem.clusters.iter().map(|c| c.allocatable).collect(),
            spent: vec![0.0; problem.policies.len()],
            clusters: vec![Vec::new(); problem.workloads.len()],
            movable: vec![true; problem.workloads.len()],
            most_room: false,
        }
    }

    pub(crate) fn demand(&self, w: usize, k: usize, i: usize) -> [i64; 2] {
        let r = i64::from(share_replicas(
            self.problem.workloads[w].workload.replicas,
            k,
            i,
        ));
        let unit = self.problem.workloads[w].unit;
        let scale = |x: u64| i64::try_from(x).unwrap_or(i64::MAX).saturating_mul(r);
        [scale(unit[CPU]), scale(unit[MEMORY])]
    }

    pub(crate) fn share_cost(&self, w: usize, k: usize, i: usize, c: u16) -> f64 {
        f64::from(share_replicas(
            self.problem.workloads[w].workload.replicas,
            k,
            i,
        )) * self.problem.unit_cost(w, c)
    }

    pub(crate) fn share_value(&self, w: usize, k: usize, i: usize, c: u16) -> f64 {
        f64::from(share_replicas(
            self.problem.workloads[w].workload.replicas,
            k,
            i,
        )) * self.problem.unit_value(w, c)
    }

    pub(crate) fn fits(&self, c: u16, demand: [i64; 2]) -> bool {
        let free = self.free[usize::from(c)];
        free[CPU] >= demand[CPU] && free[MEMORY] >= demand[MEMORY]
    }

    /// Whether `w`'s policy can absorb `delta` more monthly cost.
    pub fn budget_allows(&self, w: usize, delta: f64) -> bool {
        match self.problem.workloads[w].policy {
            None => true,
            Some(p) => delta <= 0.0 || self.spent[p] + delta <= self.problem.budgets[p] + EPSILON,
        }
    }

    /// Takes `demand` out of cluster `c`'s free capacity (`sign` 1), or gives it back (-1).
    fn adjust_room(&mut self, c: u16, demand: [i64; 2], sign: i64) {
        let free = &mut self.free[usize::from(c)];
        free[CPU] -= sign * demand[CPU];
        free[MEMORY] -= sign * demand[MEMORY];
    }

    /// Places `w`'s shares on `clusters` without checking; callers checked.
    pub fn place(&mut self, w: usize, clusters: Vec<u16>) {
        let k = clusters.len();
        for (i, &c) in clusters.iter().enumerate() {
            self.adjust_room(c, self.demand(w, k, i), 1);
            let cost = self.share_cost(w, k, i, c);
            if let Some(p) = self.problem.workloads[w].policy {
                self.spent[p] += cost;
            }
        }
        self.clusters[w] = clusters;
    }

    /// Removes `w`'s placement, returning its clusters.
    pub fn unplace(&mut self, w: usize) -> Vec<u16> {
        let clusters = std::mem::take(&mut self.clusters[w]);
        let k = clusters.len();
        for (i, &c) in clusters.iter().enumerate() {
            self.adjust_room(c, self.demand(w, k, i), -1);
            if let Some(p) = self.problem.workloads[w].policy {
                self.spent[p] -= self.share_cost(w, k, i, c);
            }
        }
        clusters
    }

    /// Moves share `i` of `w` to `to`.
    fn move_share(&mut self, w: usize, i: usize, to: u16) {
        let mut clusters = self.unplace(w);
        clusters[i] = to;
        self.place(w, clusters);
    }

    /// Places `w` on the best clusters with room. With spread, every allowed number of
    /// clusters is tried and the lowest objective wins.
    pub fn try_place(&mut self, w: usize) -> bool {
        self.try_place_skipping(w, &mut || false)
    }

    /// [`State::try_place`], except that a fitting cluster is passed over whenever `skip`
    /// says so: the "blinks" that let ruin and recreate try a second-best choice.
    fn try_place_skipping(&mut self, w: usize, skip: &mut dyn FnMut() -> bool) -> bool {
        let info = &self.problem.workloads[w];
        let mut best: Option<(f64, Vec<u16>)> = None;
        for k in info.min_clusters..=info.max_clusters {
            let k = usize::try_from(k).unwrap_or(usize::MAX);
            let mut chosen: Vec<u16> = Vec::with_capacity(k);
            let (mut cost, mut value) = (0.0, 0.0);
            for i in 0..k {
                let demand = self.demand(w, k, i);
                // Candidates are in objective order already; only load spreading reorders.
                let by_room: Vec<u16>;
                let order: &[u16] = if self.most_room {
                    let mut sorted = info.candidates.clone();
                    sorted.sort_by_key(|&c| (std::cmp::Reverse(self.free[usize::from(c)][CPU]), c));
                    by_room = sorted;
                    &by_room
                } else {
                    &info.candidates
                };
                let fitting = order.iter().copied().filter(|&c| {
                    !chosen.contains(&c)
                        && self.fits(c, demand)
                        && self.budget_allows(w, cost + self.share_cost(w, k, i, c))
                });
                let mut last = None;
                let mut pick = None;
                for c in fitting {
                    last = Some(c);
                    if !skip() {
                        pick = Some(c);
                        break;
                    }
                }
                // Skipping every option would leave the workload out: take the last seen.
                let Some(c) = pick.or(last) else { break };
                cost += self.share_cost(w, k, i, c);
                value += self.share_value(w, k, i, c);
                // Shares go to distinct clusters, so each `fits` sees the others' room intact.
                chosen.push(c);
            }
            if chosen.len() == k && best.as_ref().is_none_or(|(v, _)| value < *v - EPSILON) {
                best = Some((value, chosen));
            }
        }
        match best {
            Some((_, clusters)) => {
                self.place(w, clusters);
                true
            }
            None => false,
        }
    }

    /// Whether all of single-cluster workload `w` fits on `c` now, budget included.
    pub fn whole_fits(&self, w: usize, c: u16) -> bool {
        let from_cost = self.clusters[w]
            .first()
            .map_or(0.0, |&f| self.share_cost(w, 1, 0, f));
        let counted_here = self.clusters[w].first() == Some(&c);
        counted_here
            || (self.fits(c, self.demand(w, 1, 0))
                && self.budget_allows(w, self.share_cost(w, 1, 0, c) - from_cost))
    }

    /// Places unplaced single-cluster workload `w` on `c` if it fits.
    pub fn try_place_on(&mut self, w: usize, c: u16) -> bool {
        if self.whole_fits(w, c) {
            self.place(w, vec![c]);
            true
        } else {
            false
        }
    }

    /// The best cluster with room for all of single-cluster workload `w`, other than `from`.
    pub fn best_destination_for_whole(&self, w: usize, from: u16) -> Option<u16> {
        self.best_destination(w, 0, from)
    }

    pub fn placed_count(&self) -> usize {
        self.clusters.iter().filter(|c| !c.is_empty()).count()
    }

    /// The objective value of each of `w`'s shares.
    fn share_values(&self, w: usize) -> impl Iterator<Item = f64> + '_ {
        let clusters = &self.clusters[w];
        clusters
            .iter()
            .enumerate()
            .map(move |(i, &c)| self.share_value(w, clusters.len(), i, c))
    }

    /// Objective value of `w`'s placement (0 when unplaced).
    fn workload_value(&self, w: usize) -> f64 {
        self.share_values(w).sum()
    }

    /// The objective of the whole assignment: one sum over every share, in order.
    pub fn objective(&self) -> f64 {
        (0..self.clusters.len())
            .flat_map(|w| self.share_values(w))
            .sum()
    }

    /// Lexicographic: more placed, then lower objective.
    pub(crate) fn better_than(&self, other: &State<'_, '_>) -> bool {
        let (mine, theirs) = (self.placed_count(), other.placed_count());
        mine > theirs || (mine == theirs && self.objective() < other.objective() - EPSILON)
    }

    /// Runs the local search to a fixed point (bounded in rounds).
    pub fn improve(&mut self) {
        let large = self.problem.workloads.len() > SMALL;
        for round in 0..(if large { 8 } else { 50 }) {
            // Ejection is the costly neighbourhood: on large instances it runs once.
            let mut improved = self.repair(!large || round == 0);
            if !large {
                improved |= self.trade();
            }
            improved |= self.shift();
            improved |= self.swap();
            if !large {
                improved |= self.refill();
            }
            if !improved {
                break;
            }
        }
    }

    /// Unplaced movable workloads, smallest first: placing small ones maximises the count.
    fn unplaced_by_size(&self) -> Vec<usize> {
        let mut unplaced: Vec<usize> = (0..self.clusters.len())
            .filter(|&w| {
                self.clusters[w].is_empty()
                    && self.movable[w]
                    && self.problem.workloads[w].placeable()
            })
            .collect();
        unplaced.sort_by_key(|&w| (self.problem.workloads[w].size, w));
        unplaced
    }

    /// Places what it can of the unplaced, relocating others out of the way if needed.
    fn repair(&mut self, eject: bool) -> bool {
        let unplaced = self.unplaced_by_size();
        if unplaced.is_empty() {
            return false;
        }
        let mut on_cluster = self.shares_by_cluster();
        let mut improved = false;
        for w in unplaced {
            if self.try_place(w) || (eject && self.eject_for(w, &mut on_cluster)) {
                improved = true;
            }
        }
        improved
    }

    /// Which movable shares sit on each cluster. Kept as a superset as shares move
    /// (callers push the new position) and checked on use.
    fn shares_by_cluster(&self) -> Vec<Vec<(usize, usize)>> {
        let mut on_cluster: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.free.len()];
        for (w, clusters) in self.clusters.iter().enumerate() {
            for (i, &c) in clusters.iter().enumerate() {
                if self.movable[w] {
                    on_cluster[usize::from(c)].push((w, i));
                }
            }
        }
        on_cluster
    }

    /// Makes room for workload `w` by relocating shares that can go elsewhere: for each of
    /// its shares (over `minClusters` clusters), a cluster with room is taken, or room is
    /// made on a candidate by ejection. Nothing changes on failure. On large instances
    /// only the best few candidates and shares are tried.
    fn eject_for(&mut self, w: usize, on_cluster: &mut [Vec<(usize, usize)>]) -> bool {
        let info = &self.problem.workloads[w];
        let k = usize::try_from(info.min_clusters).unwrap_or(usize::MAX);
        if k == 0 || k > info.candidates.len() {
            return false;
        }
        let large = self.problem.workloads.len() > SMALL;
        let (tries, scan) = if large {
            (4, 16)
        } else {
            (usize::MAX, usize::MAX)
        };
        let mut chosen: Vec<u16> = Vec::with_capacity(k);
        let mut moved: Vec<(usize, usize, u16, u16)> = Vec::new();
        let mut cost = 0.0;
        for i in 0..k {
            let demand = self.demand(w, k, i);
            let affordable =
                |state: &Self, c: u16| state.budget_allows(w, cost + state.share_cost(w, k, i, c));
            let mut pick = info
                .candidates
                .iter()
                .copied()
                .find(|&c| !chosen.contains(&c) && self.fits(c, demand) && affordable(self, c));
            if pick.is_none() {
                for &c in info
                    .candidates
                    .iter()
                    .filter(|&&c| !chosen.contains(&c))
                    .take(tries)
                {
                    if !affordable(self, c) {
                        continue;
                    }
                    let here = &on_cluster[usize::from(c)];
                    let mut relocations = self.relocation_options(c, w, here, scan);
                    relocations.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                    let mark = moved.len();
                    for &(_, w2, i2) in &relocations {
                        if self.fits(c, demand) {
                            break;
                        }
                        if let Some(to) = self.best_destination(w2, i2, c) {
                            self.move_share(w2, i2, to);
                            moved.push((w2, i2, c, to));
                        }
                    }
                    // Relocations of the same policy's shares spend its budget too:
                    // check affordability again after making room.
                    if self.fits(c, demand) && affordable(self, c) {
                        pick = Some(c);
                        break;
                    }
                    for (w2, i2, from, _) in moved.drain(mark..).rev() {
                        self.move_share(w2, i2, from);
                    }
                }
            }
            let Some(c) = pick else { break };
            cost += self.share_cost(w, k, i, c);
            // Hold the room for this share while the next ones look for theirs.
            self.adjust_room(c, demand, 1);
            chosen.push(c);
        }
        for (i, &c) in chosen.iter().enumerate() {
            self.adjust_room(c, self.demand(w, k, i), -1);
        }
        if chosen.len() == k && self.budget_allows(w, cost) {
            for &(w2, i2, _, to) in &moved {
                on_cluster[usize::from(to)].push((w2, i2));
            }
            for (i, &c) in chosen.iter().enumerate() {
                on_cluster[usize::from(c)].push((w, i));
            }
            self.place(w, chosen);
            return true;
        }
        for (w2, i2, from, _) in moved.into_iter().rev() {
            self.move_share(w2, i2, from);
        }
        false
    }

    /// Shares on cluster `c` (other than `w`'s) that could move elsewhere, with the
    /// objective increase of their best move; at most `limit` shares are looked at.
    fn relocation_options(
        &self,
        c: u16,
        w: usize,
        here: &[(usize, usize)],
        limit: usize,
    ) -> Vec<(f64, usize, usize)> {
        let mut options = Vec::new();
        for &(w2, i2) in here
            .iter()
            .filter(|&&(w2, i2)| w2 != w && self.clusters[w2].get(i2) == Some(&c))
            .take(limit)
        {
            if let Some(to) = self.best_destination(w2, i2, c) {
                let k = self.clusters[w2].len();
                options.push((
                    self.share_value(w2, k, i2, to) - self.share_value(w2, k, i2, c),
                    w2,
                    i2,
                ));
            }
        }
        options
    }

    /// The best cluster other than `from` (and `w`'s other shares) with room for share `i`.
    fn best_destination(&self, w: usize, i: usize, from: u16) -> Option<u16> {
        let k = self.clusters[w].len();
        let demand = self.demand(w, k, i);
        let delta_base = self.share_cost(w, k, i, from);
        self.problem.workloads[w]
            .candidates
            .iter()
            .copied()
            .find(|&d| {
                d != from
                    && !self.clusters[w].contains(&d)
                    && self.fits(d, demand)
                    && self.budget_allows(w, self.share_cost(w, k, i, d) - delta_base)
            })
    }

    /// Tries unplacing one workload to let others in: kept when more workloads end up
    /// placed, or as many at a lower objective. The second matters because the plan's
    /// objective is over the placed workloads: which ones stay out is part of the choice.
    fn trade(&mut self) -> bool {
        if self.unplaced_by_size().is_empty() {
            return false;
        }
        let mut improved = false;
        for w in 0..self.clusters.len() {
            if self.clusters[w].is_empty() || !self.movable[w] {
                continue;
            }
            let before = self.clone();
            self.unplace(w);
            for u in self.unplaced_by_size() {
                if u != w {
                    self.try_place(u);
                }
            }
            self.try_place(w);
            if self.better_than(&before) {
                improved = true;
            } else {
                *self = before;
            }
        }
        improved
    }

    /// A compound move that single shifts and swaps cannot make: move one share off its
    /// cluster (even at a loss), then fill the room it left with the shares that gain most
    /// from it. Kept only when the whole change lowers the objective.
    fn refill(&mut self) -> bool {
        let mut improved = false;
        for w in 0..self.clusters.len() {
            if !self.movable[w] {
                continue;
            }
            for i in 0..self.clusters[w].len() {
                let c = self.clusters[w][i];
                let Some(to) = self.best_destination(w, i, c) else {
                    continue;
                };
                let before = self.clone();
                let objective_before = self.objective();
                self.move_share(w, i, to);
                self.fill(c, w);
                if self.objective() < objective_before - EPSILON {
                    improved = true;
                } else {
                    *self = before;
                }
            }
        }
        improved
    }

    /// Moves onto `c` the shares (other than `w`'s) that gain most from it, while they fit.
    fn fill(&mut self, c: u16, w: usize) {
        let mut gains: Vec<(f64, usize, usize)> = Vec::new();
        for (w2, clusters) in self.clusters.iter().enumerate() {
            if w2 == w
                || !self.movable[w2]
                || clusters.contains(&c)
                || !self.problem.workloads[w2].is_eligible(c)
            {
                continue;
            }
            let k = clusters.len();
            for (i2, &d) in clusters.iter().enumerate() {
                let gain = self.share_value(w2, k, i2, d) - self.share_value(w2, k, i2, c);
                if gain > EPSILON {
                    gains.push((gain, w2, i2));
                }
            }
        }
        gains.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        for (_, w2, i2) in gains {
            let k = self.clusters[w2].len();
            if self.clusters[w2].contains(&c) {
                continue;
            }
            let d = self.clusters[w2][i2];
            let demand = self.demand(w2, k, i2);
            if self.fits(c, demand)
                && self.budget_allows(
                    w2,
                    self.share_cost(w2, k, i2, c) - self.share_cost(w2, k, i2, d),
                )
            {
                self.move_share(w2, i2, c);
            }
        }
    }

    /// Moves single shares to better clusters with room.
    pub fn shift(&mut self) -> bool {
        let mut improved = false;
        for w in 0..self.clusters.len() {
            if !self.movable[w] {
                continue;
            }
            for i in 0..self.clusters[w].len() {
                let c = self.clusters[w][i];
                let k = self.clusters[w].len();
                let current = self.problem.unit_value(w, c);
                let demand = self.demand(w, k, i);
                let cost_now = self.share_cost(w, k, i, c);
                let target = self.problem.workloads[w]
                    .candidates
                    .iter()
                    .copied()
                    .take_while(|&d| self.problem.unit_value(w, d) < current - EPSILON)
                    .find(|&d| {
                        !self.clusters[w].contains(&d)
                            && self.fits(d, demand)
                            && self.budget_allows(w, self.share_cost(w, k, i, d) - cost_now)
                    });
                if let Some(d) = target {
                    self.move_share(w, i, d);
                    improved = true;
                }
            }
        }
        improved
    }

    /// Exchanges two shares on different clusters when that lowers the objective.
    fn swap(&mut self) -> bool {
        let large = self.problem.workloads.len() > SMALL;
        let mut on_cluster = self.shares_by_cluster();
        let mut improved = false;
        for w in 0..self.clusters.len() {
            if !self.movable[w] {
                continue;
            }
            for i in 0..self.clusters[w].len() {
                let Some((w2, i2, d)) = self.find_swap(w, i, &on_cluster, large) else {
                    continue;
                };
                let c = self.clusters[w][i];
                // Take both out first so that neither move sees the other's old demand.
                let mut first = self.unplace(w);
                let mut second = self.unplace(w2);
                first[i] = d;
                second[i2] = c;
                self.place(w, first);
                self.place(w2, second);
                on_cluster[usize::from(d)].push((w, i));
                on_cluster[usize::from(c)].push((w2, i2));
                improved = true;
            }
        }
        improved
    }

    fn find_swap(
        &self,
        w: usize,
        i: usize,
        on_cluster: &[Vec<(usize, usize)>],
        large: bool,
    ) -> Option<(usize, usize, u16)> {
        let c = self.clusters[w][i];
        let k = self.clusters[w].len();
        let value_here = self.share_value(w, k, i, c);
        let demand = self.demand(w, k, i);
        let better = self.problem.workloads[w]
            .candidates
            .iter()
            .copied()
            .filter(|&d| d != c && !self.clusters[w].contains(&d));
        let limit = if large { 3 } else { usize::MAX };
        for d in better.take(limit) {
            let gain = self.share_value(w, k, i, d) - value_here;
            if gain >= -EPSILON {
                break;
            }
            let scan = if large { 64 } else { usize::MAX };
            for &(w2, i2) in on_cluster[usize::from(d)].iter().take(scan) {
                if w2 == w || self.clusters[w2].get(i2) != Some(&d) {
                    continue;
                }
                let info2 = &self.problem.workloads[w2];
                if !info2.is_eligible(c) || self.clusters[w2].contains(&c) {
                    continue;
                }
                let k2 = self.clusters[w2].len();
                let delta =
                    gain + self.share_value(w2, k2, i2, c) - self.share_value(w2, k2, i2, d);
                if delta >= -EPSILON {
                    continue;
                }
                let demand2 = self.demand(w2, k2, i2);
                let (free_c, free_d) = (self.free[usize::from(c)], self.free[usize::from(d)]);
                let fits = (0..2).all(|r| {
                    free_d[r] + demand2[r] - demand[r] >= 0
                        && free_c[r] + demand[r] - demand2[r] >= 0
                });
                if !fits {
                    continue;
                }
                let cost1 = self.share_cost(w, k, i, d) - self.share_cost(w, k, i, c);
                let cost2 = self.share_cost(w2, k2, i2, c) - self.share_cost(w2, k2, i2, d);
                let budgets_ok = match (self.problem.workloads[w].policy, info2.policy) {
                    (Some(p1), Some(p2)) if p1 == p2 => self.budget_allows(w, cost1 + cost2),
                    _ => self.budget_allows(w, cost1) && self.budget_allows(w2, cost2),
                };
                if budgets_ok {
                    return Some((w2, i2, d));
                }
            }
        }
        None
    }
}

/// How a construction fills an empty (or partly fixed) state.
struct Construction {
    /// The order in which workloads are placed.
    order: Vec<usize>,
    /// Whether each share goes to the candidate with the most free cpu, not the cheapest.
    most_room: bool,
}

/// The constructions to try. On small instances: cheapest-cluster greedy by regret (what
/// a workload loses if it misses its best cluster), by size (largest first, which packs
/// tight capacity better) and by fewest options, plus largest-first with load spreading.
/// On large instances only the last: it places the most workloads, which is the first
/// criterion, and a single construction keeps 10,000 workloads within a second.
fn constructions(problem: &Problem<'_>) -> Vec<Construction> {
    let n = problem.workloads.len();
    let size = |w: usize| problem.workloads[w].size;
    let mut by_size: Vec<usize> = (0..n).collect();
    by_size.sort_by_key(|&w| (std::cmp::Reverse(size(w)), w));
    let spreading = Construction {
        order: by_size.clone(),
        most_room: true,
    };
    if n > SMALL {
        return vec![spreading];
    }
    let regret = |w: usize| -> f64 {
        let info = &problem.workloads[w];
        match info.candidates.as_slice() {
            [] => 0.0,
            [_] => f64::INFINITY,
            [first, second, ..] => {
                (problem.unit_value(w, *second) - problem.unit_value(w, *first))
                    * f64::from(info.workload.replicas)
            }
        }
    };
    let regrets: Vec<f64> = (0..n).map(regret).collect();
    // Workloads that need several distinct clusters go first: placed late, they find the
    // capacity fragmented and no single ejection can make room for all their shares.
    let needs_many = |w: usize| std::cmp::Reverse(problem.workloads[w].min_clusters);
    let mut by_regret: Vec<usize> = (0..n).collect();
    by_regret.sort_by(|&a, &b| {
        needs_many(a)
            .cmp(&needs_many(b))
            .then(regrets[b].total_cmp(&regrets[a]))
            .then(size(b).cmp(&size(a)))
            .then(a.cmp(&b))
    });
    let mut by_fewest_options: Vec<usize> = (0..n).collect();
    by_fewest_options.sort_by(|&a, &b| {
        problem.workloads[a]
            .candidates
            .len()
            .cmp(&problem.workloads[b].candidates.len())
            .then(regrets[b].total_cmp(&regrets[a]))
            .then(a.cmp(&b))
    });
    [by_regret, by_size, by_fewest_options]
        .into_iter()
        .map(|order| Construction {
            order,
            most_room: false,
        })
        .chain([spreading])
        .collect()
}

/// Builds from `start` (fixed and already placed workloads) with every construction,
/// improves each by local search and, on small instances, by ruin and recreate, and
/// keeps the best.
pub(crate) fn search_from<'p, 'a>(start: &State<'p, 'a>) -> State<'p, 'a> {
    let mut best: Option<State<'p, 'a>> = None;
    for (restart, construction) in constructions(start.problem).into_iter().enumerate() {
        let mut state = start.clone();
        state.most_room = construction.most_room;
        for &w in &construction.order {
            if state.movable[w]
                && state.clusters[w].is_empty()
                && state.problem.workloads[w].placeable()
            {
                state.try_place(w);
            }
        }
        state.most_room = false;
        state.improve();
        // Ruin and recreate is path-dependent: refining every construction, each with its
        // own seed, is steadier than refining only the best start.
        if start.problem.workloads.len() <= SMALL {
            state = ruin_and_recreate(state, restart);
        }
        if best.as_ref().is_none_or(|b| state.better_than(b)) {
            best = Some(state);
        }
    }
    let best = best.unwrap_or_else(|| start.clone());
    // Small enough to solve exactly: the heuristic's answer is the starting incumbent.
    exact::improve(&best).unwrap_or(best)
}

/// splitmix64: a small, well-mixed generator. Seeded from the problem's size so that the
/// same input always walks the same path.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        // n is small (workload and cluster counts), so the modulo bias is negligible.
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Large-neighbourhood search: remove a group of workloads (random ones, or everything
/// on one cluster), put them and the unplaced back in a perturbed largest-first order,
/// and keep the result under threshold acceptance (slightly worse plans are accepted
/// early on, never later), remembering the best. This reaches what single moves cannot:
/// which workloads stay out, and exact packings of tight clusters. The iteration count
/// is fixed, so the result is deterministic.
fn ruin_and_recreate<'p, 'a>(start: State<'p, 'a>, restart: usize) -> State<'p, 'a> {
    let problem = start.problem;
    let n = problem.workloads.len();
    let m = problem.clusters.len().max(1);
    let movable: Vec<usize> = (0..n)
        .filter(|&w| start.movable[w] && problem.workloads[w].placeable())
        .collect();
    if movable.len() < 2 {
        return start;
    }
    let iterations = (2_000_000 / (n * m).max(1)).clamp(300, 10_000);
    let mut rng =
        SplitMix(0x0f3e_77a1_u64 ^ ((n as u64) << 20) ^ m as u64 ^ ((restart as u64) << 40));
    let mut current = start.clone();
    let mut current_objective = current.objective();
    let mut best = start;
    let scale = best.objective().abs().max(1.0);
    for iteration in 0..iterations {
        let mut candidate = current.clone();
        if rng.below(2) == 0 {
            let count = 1 + rng.below((movable.len() / 4).max(2));
            for _ in 0..count {
                let w = movable[rng.below(movable.len())];
                if !candidate.clusters[w].is_empty() {
                    candidate.unplace(w);
                }
            }
        } else {
            let c = u16::try_from(rng.below(m)).unwrap_or(0);
            for &w in &movable {
                if candidate.clusters[w].contains(&c) {
                    candidate.unplace(w);
                }
            }
            let w = movable[rng.below(movable.len())];
            if !candidate.clusters[w].is_empty() {
                candidate.unplace(w);
            }
        }
        if rng.below(2) == 0 {
            // Worst removal: the most expensive placements are what the optimum most often
            // leaves out when capacity is short. Rank-biased so that it is not always the same.
            let mut by_value: Vec<(f64, usize)> = movable
                .iter()
                .filter(|&&w| !candidate.clusters[w].is_empty())
                .map(|&w| (candidate.workload_value(w), w))
                .collect();
            by_value.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for _ in 0..1 + rng.below(2) {
                if by_value.is_empty() {
                    break;
                }
                let index = (rng.unit().powi(3) * by_value.len() as f64) as usize;
                let (_, w) = by_value.remove(index.min(by_value.len() - 1));
                candidate.unplace(w);
            }
        }
        let uniform = rng.below(2) == 0;
        let mut order: Vec<(f64, usize)> = movable
            .iter()
            .filter(|&&w| candidate.clusters[w].is_empty())
            .map(|&w| {
                // Half the time largest-first with noise; half the time any order, which is
                // what lets a different set of workloads claim tight room.
                let key = if uniform {
                    rng.unit()
                } else {
                    problem.workloads[w].size as f64 * (0.7 + 0.6 * rng.unit())
                };
                (key, w)
            })
            .collect();
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let blink = [0.0, 0.05, 0.15][rng.below(3)];
        for (_, w) in order {
            candidate.try_place_skipping(w, &mut || blink > 0.0 && rng.unit() < blink);
        }
        candidate.shift();
        let objective = candidate.objective();
        let threshold = 0.01 * scale * (1.0 - iteration as f64 / iterations as f64);
        let (placed, placed_now) = (candidate.placed_count(), current.placed_count());
        if placed > placed_now
            || (placed == placed_now && objective < current_objective + threshold)
        {
            if candidate.better_than(&best) {
                best = candidate.clone();
            }
            current = candidate;
            current_objective = objective;
        }
    }
    best.improve();
    best
}

/// Fresh planning: the best assignment found from scratch.
pub(crate) fn solve(problem: &Problem<'_>) -> Assignment {
    let state = search_from(&State::new(problem));
    Assignment {
        notes: vec![None; problem.workloads.len()],
        clusters: state.clusters,
    }
}
