//! One timed plan at a given scale, for quick looks and profiling:
//! `cargo run --release -p ferry-policies-testkit --example scale -- 10000 100 [fresh|rebalance]`.

use std::time::Instant;

use ferry_policies::engine::{Mode, plan};
use ferry_policies_testkit::{Shape, random_instance};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let workloads: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let clusters: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100);
    let mode = if args.get(3).map(String::as_str) == Some("rebalance") {
        Mode::Rebalance
    } else {
        Mode::Fresh
    };
    let instance = random_instance(7, &Shape::scale(workloads, clusters));
    let started = Instant::now();
    let result = plan(&instance.snapshot(), mode).expect("generated instances plan");
    let elapsed = started.elapsed();
    println!(
        "{workloads} workloads x {clusters} clusters ({}): {:.1} ms; {} placements, {} unplaced, total {:.2}/month",
        mode.as_str(),
        elapsed.as_secs_f64() * 1000.0,
        result.placements.len(),
        result.unplaced.len(),
        result.total_monthly_cost
    );
    // Why the unplaced are unplaced: the kinds of reason across their eligible clusters.
    let mut kinds = std::collections::BTreeMap::new();
    for unplaced in &result.unplaced {
        let mut seen: Vec<&str> = unplaced
            .reasons
            .values()
            .map(|r| r.split(':').next().unwrap_or(""))
            .filter(|k| matches!(*k, "capacity" | "budget" | "spread"))
            .collect();
        seen.sort_unstable();
        seen.dedup();
        *kinds.entry(seen.join("+")).or_insert(0) += 1;
    }
    println!("unplaced by reason: {kinds:?}");
}
