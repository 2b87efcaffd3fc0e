//! The cost history behind the dashboard's chart (`GET /api/v1/cost-history`): the
//! monthly run-rate of each cluster, taken from the census at an interval and right after
//! each migration ends, so that a chart shows what a move saved.
//!
//! Points are kept in the store under [`PREFIX`] in append order, at most
//! [`HistoryConfig::max_points`] of them (the oldest are dropped). Each new point also goes
//! to the event stream (`cost.sampled`), and a cluster whose health changed between two
//! samples is announced there (`cluster.health`): the sampler takes the census anyway.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ferry_store::{StoreError, Versioned};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::api::AppState;
use super::clock;
use super::migration::State;
use super::world::cents;

pub const PREFIX: &str = "history/";
/// Points kept when the config names no other bound: 5.5 hours at the demo's 10 s, 33
/// hours at `serve`'s 60 s.
pub const DEFAULT_MAX_POINTS: usize = 2_000;
/// `ferry serve`'s sampling interval when its config names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// How the sampler runs.
#[derive(Clone, Debug)]
pub struct HistoryConfig {
    /// Time between two periodic samples.
    pub interval: Duration,
    /// Points kept; beyond it the oldest are deleted.
    pub max_points: usize,
}

/// One sample, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostPoint {
    pub at: String,
    /// Monthly run-rate of what serves on each cluster that answered, rounded to cents;
    /// a cluster that did not answer has no entry.
    pub clusters: BTreeMap<String, f64>,
    /// The sum of `clusters`.
    pub total: f64,
    /// The migration whose end this point follows; `None` for a periodic sample.
    pub migration: Option<String>,
    /// The cluster whose prices changed just before this point (`PUT …/pricing`, a price
    /// feed): the chart marks it, so that a step it makes is not taken for a move's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<String>,
}

impl Versioned for CostPoint {
    const KIND: &'static str = "cost-point";
    const SCHEMA: u32 = 1;
}

/// A point as the API and the event stream show it.
pub fn dto(point: &CostPoint) -> Value {
    let mut value = json!({"at": point.at, "clusters": point.clusters, "total": point.total});
    if let Some(migration) = &point.migration {
        value["migration"] = json!(migration);
    }
    if let Some(cluster) = &point.pricing {
        value["pricing"] = json!(cluster);
    }
    value
}

/// The stored points, oldest first; the last `limit` of them if given.
pub fn points(state: &AppState, limit: Option<usize>) -> Result<Vec<CostPoint>, StoreError> {
    let all = state.store.list::<CostPoint>(PREFIX)?;
    let skip = all.len().saturating_sub(limit.unwrap_or(usize::MAX));
    Ok(all.into_iter().skip(skip).map(|(_, p)| p).collect())
}

/// Starts the sampler; it runs as long as the runtime does.
pub fn spawn(state: Arc<AppState>, config: HistoryConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(sample(state, config))
}

/// What the sampler remembers between two samples.
struct Sampler {
    /// The stored points' keys, oldest first: what to delete when over the bound.
    keys: VecDeque<String>,
    max_points: usize,
    /// Each cluster's health at the last sample.
    health: BTreeMap<String, String>,
}

async fn sample(state: Arc<AppState>, config: HistoryConfig) {
    // Subscribed before the first sample, so that no migration's end is missed.
    let mut events = state.events.subscribe();
    let keys = match state.store.list::<CostPoint>(PREFIX) {
        Ok(points) => points.into_iter().map(|(key, _)| key).collect(),
        Err(error) => {
            tracing::warn!(%error, "cost history unreadable; new points are still recorded");
            VecDeque::new()
        }
    };
    let mut sampler = Sampler {
        keys,
        max_points: config.max_points.max(1),
        health: BTreeMap::new(),
    };
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (migration, pricing) = tokio::select! {
            _ = ticker.tick() => (None, None),
            event = events.recv() => match event {
                Ok(event) if event.kind == "cluster.pricing" => {
                    (None, event.data["cluster"].as_str().map(str::to_owned))
                }
                Ok(event) => match ended_migration(&state, &event.kind, &event.data) {
                    Some(id) => (Some(id), None),
                    None => continue,
                },
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
        };
        if let Err(error) = sampler.record(&state, migration, pricing).await {
            tracing::warn!(%error, "cost history point not recorded");
        }
    }
}

/// The id of the migration a `migration.state` event says has ended, unless it was a dry
/// run (which changes no cost).
fn ended_migration(state: &AppState, kind: &str, data: &Value) -> Option<String> {
    if kind != "migration.state" {
        return None;
    }
    let ended = serde_json::from_value::<State>(data["state"].clone()).is_ok_and(State::is_final);
    let id = data["id"].as_str().filter(|_| ended)?;
    match state.engine.get(id) {
        Ok(Some(migration)) if migration.dry_run => None,
        _ => Some(id.to_owned()),
    }
}

impl Sampler {
    async fn record(
        &mut self,
        state: &AppState,
        migration: Option<String>,
        pricing: Option<String>,
    ) -> Result<(), StoreError> {
        let census = state.world.census().await;
        let mut clusters = BTreeMap::new();
        let mut health = BTreeMap::new();
        for member in state.world.members() {
            let name = member.definition.name.clone();
            match census.inventories.get(&name) {
                Some(Ok(inventory)) => {
                    let cost = member.monthly_run_rate(inventory);
                    clusters.insert(name.clone(), cents(cost));
                    health.insert(name, inventory.health.as_str().to_owned());
                }
                _ => {
                    health.insert(name, "Unreachable".to_owned());
                }
            }
        }
        self.announce_health(state, health);
        let point = CostPoint {
            at: clock::now(),
            total: cents(super::world::total(clusters.values().copied())),
            clusters,
            migration,
            pricing,
        };
        let key = state.store.append(PREFIX, &point)?;
        self.keys.push_back(key);
        while self.keys.len() > self.max_points {
            let Some(oldest) = self.keys.pop_front() else {
                break;
            };
            if let Err(error) = state.store.delete(&oldest) {
                self.keys.push_front(oldest);
                return Err(error);
            }
        }
        state.events.publish("cost.sampled", None, dto(&point));
        Ok(())
    }

    /// Publishes `cluster.health` for each cluster whose health differs from the last
    /// sample's (not on the first sample: there is nothing to compare with).
    fn announce_health(&mut self, state: &AppState, health: BTreeMap<String, String>) {
        if !self.health.is_empty() {
            for (cluster, now) in &health {
                let was = self.health.get(cluster);
                if was.is_some_and(|was| was != now) {
                    state.events.publish(
                        "cluster.health",
                        None,
                        json!({"cluster": cluster, "health": now, "was": was}),
                    );
                }
            }
        }
        self.health = health;
    }
}

#[cfg(test)]
mod tests {
    use super::{CostPoint, dto};

    #[test]
    fn a_sample_shows_no_migration_field() {
        let point = CostPoint {
            at: "2026-11-26T01:00:00Z".to_owned(),
            clusters: [("a".to_owned(), 1.5)].into_iter().collect(),
            total: 1.5,
            migration: None,
            pricing: None,
        };
        assert_eq!(
            dto(&point).to_string(),
            r#"{"at":"2026-11-26T01:00:00Z","clusters":{"a":1.5},"total":1.5}"#
        );
        let after = CostPoint {
            migration: Some("mig-1".to_owned()),
            ..point
        };
        assert_eq!(dto(&after)["migration"], "mig-1");
        assert!(dto(&after).get("pricing").is_none());
    }

    #[test]
    fn a_point_after_a_price_change_names_the_cluster_and_old_points_still_read() {
        let point = CostPoint {
            at: "2026-11-26T01:00:00Z".to_owned(),
            clusters: [("a".to_owned(), 1.5)].into_iter().collect(),
            total: 1.5,
            migration: None,
            pricing: Some("a".to_owned()),
        };
        assert_eq!(dto(&point)["pricing"], "a");
        // Points stored before the field existed.
        let old: CostPoint = serde_json::from_str(
            r#"{"at":"2026-11-26T01:00:00Z","clusters":{},"total":0,"migration":null}"#,
        )
        .expect("an old point reads");
        assert_eq!(old.pricing, None);
    }
}
