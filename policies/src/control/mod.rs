//! What the controllers decide, free of I/O: the broker's loops observe the clusters and
//! prices, then ask these functions what to do, and carry it out (decide purely, then
//! apply). Time is a parameter (Unix seconds), so tests drive it.
//!
//! - [`health`]: a member's health debounced into phases (up, suspect, down, returning),
//!   and whether it has been stable long enough to be a target;
//! - [`prices`]: the prices seen recently, for hysteresis (a move must pay at the least
//!   favourable of them);
//! - [`decide`]: which proposed moves start now, and why the others wait;
//! - [`retry`]: when a move that failed is tried again, and when it waits for an
//!   operator;
//! - [`capacity`]: which clusters to grow, and by how many nodes, for workloads that fit
//!   nowhere.

pub mod capacity;
pub mod decide;
pub mod health;
pub mod prices;
pub mod retry;

pub use decide::{Decision, Kind, Limits, Mode, Proposal, Situation, Verdict, decide};
pub use health::{HealthSettings, HealthTracker, Phase, Transition};
pub use prices::PriceMemory;

/// A duration in seconds as people write it: `45s`, `5m`, `2h`, `1h30m`.
pub fn human_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}
