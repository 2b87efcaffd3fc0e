//! Hysteresis for cost moves: the prices each member had over a recent period. A move is
//! started only if it pays at the least favourable of them (the source at its cheapest,
//! the target at its dearest), so prices that swing to and fro — a spot market, a price
//! book updated every minute — never make a workload swing with them.

use std::collections::{BTreeMap, VecDeque};

use crate::model::{HOURS_PER_MONTH, Pricing};
use crate::quantity::Resources;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    /// Since when these rates were in force.
    at: u64,
    cpu_core_hour: f64,
    memory_gib_hour: f64,
}

impl Point {
    fn monthly_cost(&self, requests: Resources) -> f64 {
        (requests.cores() * self.cpu_core_hour + requests.gib() * self.memory_gib_hour)
            * HOURS_PER_MONTH
    }
}

/// The prices of every member over the last `window` seconds.
#[derive(Debug, Clone)]
pub struct PriceMemory {
    window: u64,
    series: BTreeMap<String, VecDeque<Point>>,
}

impl PriceMemory {
    pub fn new(window: u64) -> PriceMemory {
        PriceMemory {
            window,
            series: BTreeMap::new(),
        }
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    /// Records the prices `cluster` has at `now` (a change, or the same as before).
    pub fn record(&mut self, cluster: &str, pricing: &Pricing, now: u64) {
        let point = Point {
            at: now,
            cpu_core_hour: pricing.cpu_core_hour,
            memory_gib_hour: pricing.memory_gib_hour,
        };
        let series = self.series.entry(cluster.to_owned()).or_default();
        let changed = series.back().is_none_or(|last| {
            last.cpu_core_hour != point.cpu_core_hour
                || last.memory_gib_hour != point.memory_gib_hour
        });
        if changed {
            series.push_back(point);
        }
        // A point is forgotten once its successor took over before the window began.
        let start = now.saturating_sub(self.window);
        while series.len() > 1 && series[1].at <= start {
            series.pop_front();
        }
    }

    /// What moving `requests` (all moving replicas) from `from` to `to` saves a month at
    /// the least favourable prices seen in the window; `None` if either was never seen.
    pub fn worst_savings(&self, from: &str, to: &str, requests: Resources) -> Option<f64> {
        let cheapest_source = self
            .series
            .get(from)?
            .iter()
            .map(|p| p.monthly_cost(requests))
            .reduce(f64::min)?;
        let dearest_target = self
            .series
            .get(to)?
            .iter()
            .map(|p| p.monthly_cost(requests))
            .reduce(f64::max)?;
        Some(cheapest_source - dearest_target)
    }

    /// Whether `cluster`'s prices have been watched for a whole window by `now`; until
    /// then a recent swing could have gone unseen (a broker that has just started).
    /// Otherwise, from when they will have been.
    pub fn watched_long_enough(&self, cluster: &str, now: u64) -> Result<(), Option<u64>> {
        let first = self
            .series
            .get(cluster)
            .and_then(|s| s.front())
            .map(|p| p.at);
        match first {
            Some(at) if at + self.window <= now => Ok(()),
            Some(at) => Err(Some(at + self.window)),
            None => Err(None),
        }
    }

    /// When `cluster`'s older prices leave the window, if its prices stay as they are.
    pub fn settles_at(&self, cluster: &str) -> Option<u64> {
        let series = self.series.get(cluster)?;
        (series.len() > 1).then(|| series.back().map_or(0, |p| p.at) + self.window)
    }

    /// Forgets members that left the federation.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.series.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pricing(cpu: f64) -> Pricing {
        Pricing {
            currency: "EUR".into(),
            cpu_core_hour: cpu,
            memory_gib_hour: 0.0,
            egress_gib: 0.0,
        }
    }

    /// One core for a month at `cpu` per core-hour.
    fn month(cpu: f64) -> f64 {
        cpu * HOURS_PER_MONTH
    }

    #[test]
    fn a_move_must_pay_at_the_least_favourable_recent_prices() {
        let core = Resources::new(1000, 0);
        let mut memory = PriceMemory::new(3600);
        memory.record("a", &pricing(0.04), 0);
        memory.record("b", &pricing(0.03), 0);
        let saved = memory.worst_savings("a", "b", core).expect("both seen");
        assert!((saved - month(0.01)).abs() < 1e-9, "{saved}");

        // The target was dearer a minute ago: until that leaves the window, it counts.
        memory.record("b", &pricing(0.05), 60);
        memory.record("b", &pricing(0.03), 120);
        let saved = memory.worst_savings("a", "b", core).expect("both seen");
        assert!((saved - month(-0.01)).abs() < 1e-9, "{saved}");
        assert_eq!(memory.settles_at("b"), Some(120 + 3600));

        // An hour after the last change, only the prices in force since then count.
        memory.record("a", &pricing(0.04), 3721);
        memory.record("b", &pricing(0.03), 3721);
        let saved = memory.worst_savings("a", "b", core).expect("both seen");
        assert!((saved - month(0.01)).abs() < 1e-9, "{saved}");
        assert_eq!(memory.settles_at("b"), None);
        assert_eq!(memory.worst_savings("a", "unknown", core), None);
        assert_eq!(memory.watched_long_enough("a", 3721), Ok(()));
        assert_eq!(memory.watched_long_enough("unknown", 3721), Err(None));
        let mut fresh = PriceMemory::new(3600);
        fresh.record("a", &pricing(0.04), 100);
        assert_eq!(fresh.watched_long_enough("a", 200), Err(Some(3700)));
    }

    #[test]
    fn a_price_in_force_when_the_window_began_is_kept() {
        let mut memory = PriceMemory::new(100);
        memory.record("a", &pricing(0.10), 0);
        memory.record("a", &pricing(0.20), 50);
        memory.record("a", &pricing(0.20), 140);
        // 0.10 was replaced at 50, inside the window [40, 140]: still counted.
        let cost = memory
            .worst_savings("a", "a", Resources::new(1000, 0))
            .expect("seen");
        assert!((cost - month(0.10 - 0.20)).abs() < 1e-9, "{cost}");
        memory.record("a", &pricing(0.20), 151);
        let cost = memory
            .worst_savings("a", "a", Resources::new(1000, 0))
            .expect("seen");
        assert!(cost.abs() < 1e-9, "{cost}");
    }
}
