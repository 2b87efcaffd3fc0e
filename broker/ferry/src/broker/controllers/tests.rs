//! The controllers over simulated clusters, with tokio's clock paused: every pass is run
//! by the test at a time it chooses, and rollouts take simulated seconds.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_adapter_sim::{Fault, FaultKind, SimCluster, SimClusterSpec, SimProvisioner};
use ferry_auth::{VerificationKey, Verifier};
use ferry_policies::control::{Kind, Mode, Verdict};
use ferry_policies::resources::ResourceSet;
use ferry_ports::{ClusterPort, Resources, WorkloadKey};
use ferry_store::Store;

use super::{ControlClock, ControllerConfig, Controllers};
use crate::broker::api::AppState;
use crate::broker::events::Events;
use crate::broker::migration::{Engine, EngineConfig, State, Trigger};
use crate::broker::provisioning::{Provisioning, ProvisioningConfig};
use crate::broker::sims;
use crate::broker::world::{Member, World};

const ROLLOUT: Duration = Duration::from_secs(5);
const NODE: Resources = Resources {
    cpu_millis: 8_000,
    memory_bytes: 32 << 30,
};

/// A Monday 12:00 UTC at least a week after the wall clock, so that migration records
/// (stamped with the wall clock) are always older than the controllers' time.
fn monday_noon() -> u64 {
    let week_later = crate::broker::clock::unix_now() + 7 * 86_400;
    let day = week_later / 86_400;
    // Day 0 (1970-01-01) was a Thursday: Monday is (day + 3) % 7 == 0.
    let to_monday = (7 - (day + 3) % 7) % 7;
    (day + to_monday) * 86_400 + 12 * 3600
}

fn cluster(name: &str, cpu_price: f64, labels: &str, capacity: bool) -> String {
    let capacity = if capacity {
        "  capacity: {cpu: \"64\", memory: 256Gi}\n"
    } else {
        ""
    };
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  provider: sim\n  pricing: {{currency: EUR, cpuCoreHour: {cpu_price}, memoryGiBHour: 0, egressGiB: 0}}\n{capacity}---\n"
    )
}

fn workload(namespace: &str, name: &str, replicas: u32, cpu: &str, on: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}}}}}\nspec:\n  replicas: {replicas}\n  resources: {{cpu: \"{cpu}\", memory: 1Gi}}\nstatus: {{cluster: {on}}}\n---\n"
    )
}

fn policy(name: &str, namespace: &str, spec: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: {name}}}\nspec:\n  priority: 100\n  workloadSelector: {{namespaces: [{namespace}]}}\n{spec}---\n"
    )
}

struct Federation {
    state: Arc<AppState>,
    sims: BTreeMap<String, SimCluster>,
    dir: PathBuf,
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Simulated members from `yaml`; `small` names a member built with two nodes and no
/// stated capacity, resizable through a simulated provisioner (capacity on demand).
fn federation(yaml: &str, config: ControllerConfig, start: u64, small: Option<&str>) -> Federation {
    let mut set = ResourceSet::default();
    let diagnostics = set.add_source("test.yaml", yaml);
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let mut sims = BTreeMap::new();
    for c in &set.clusters {
        let sim = if small == Some(c.value.name.as_str()) {
            SimCluster::new(SimClusterSpec::new(c.value.name.clone(), 2, NODE, ROLLOUT))
        } else {
            sims::from_definition(&c.value, ROLLOUT, Duration::ZERO)
        };
        sims::seed(&sim, &c.value.name, set.workloads.iter().map(|w| &w.value)).expect("seed");
        sims.insert(c.value.name.clone(), sim);
    }
    let provisioner = Arc::new(SimProvisioner::new(
        sims.values().cloned(),
        Duration::from_secs(20),
    ));
    let members = set
        .clusters
        .iter()
        .map(|c| {
            let port: Arc<dyn ClusterPort> = Arc::new(sims[&c.value.name].clone());
            Arc::new(Member {
                definition: c.value.clone(),
                port,
                price_source: None,
                provisioner: (small == Some(c.value.name.as_str()))
                    .then(|| Arc::clone(&provisioner) as Arc<dyn ferry_ports::Provisioner>),
            })
        })
        .collect();
    let world = Arc::new(World::new(
        members,
        set.workloads.iter().map(|w| w.value.clone()).collect(),
        set.policies.iter().map(|p| p.value.clone()).collect(),
    ));
    let dir = std::env::temp_dir().join(format!(
        "ferry-controllers-{}-{}",
        std::process::id(),
        crate::broker::clock::unix_now() ^ u64::from(rand_bits())
    ));
    let store = Store::open_sled(&dir.join("store")).expect("store");
    let events = Events::new();
    let engine = Arc::new(Engine::new(
        store.clone(),
        Arc::clone(&world),
        events.clone(),
        EngineConfig {
            step_deadline: Duration::from_secs(120),
            poll: Duration::from_secs(1),
            rollback_window: Duration::from_secs(60),
            max_concurrent: 8,
        },
    ));
    let state = Arc::new(AppState {
        world,
        engine,
        store,
        events,
        verifier: Verifier::new(VerificationKey::Hs256(vec![7; 32]), "ferry", "ferry-api")
            .expect("verifier"),
        metrics: crate::broker::metrics::Metrics::default(),
        provisioning: Provisioning::new(ProvisioningConfig::new(dir.clone())),
        controllers: Controllers::new(config, ControlClock::starting_at(start)),
        planner: crate::broker::api::Planner::default(),
        unauthenticated: crate::broker::audit::Unauthenticated::default(),
    });
    Federation { state, sims, dir }
}

/// Distinct folders for tests that start within the same second.
fn rand_bits() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed) << 20
}

impl Federation {
    async fn pass(&self) -> Vec<(String, String, Verdict, String)> {
        self.state.controllers.pass(&self.state).await;
        let report = self.state.controllers.report();
        assert_eq!(report.error, None);
        report
            .decisions
            .iter()
            .map(|d| {
                (
                    d.proposal.workload.clone(),
                    d.proposal.to.clone(),
                    d.verdict,
                    d.reason.clone(),
                )
            })
            .collect()
    }

    fn set_cpu_price(&self, cluster: &str, price: f64) {
        let mut pricing = self
            .state
            .world
            .member(cluster)
            .expect("member")
            .definition
            .pricing
            .clone();
        pricing.cpu_core_hour = price;
        assert!(
            self.state
                .world
                .set_pricing(cluster, pricing, "test".into())
        );
    }

    /// Migrations as `(workload, from, to, trigger)`, oldest first.
    fn migrations(&self) -> Vec<(String, String, String, Trigger)> {
        let mut all = self.state.engine.list().expect("list");
        all.reverse();
        all.into_iter()
            .map(|m| (m.workload, m.from, m.to, m.trigger))
            .collect()
    }

    /// Waits (simulated time) until no migration runs.
    async fn settle(&self) {
        for _ in 0..600 {
            let list = self.state.engine.list().expect("list");
            if list.iter().all(|m| m.state.is_final()) {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        panic!("migrations did not end: {:?}", self.state.engine.list());
    }

    /// Where each workload serves: `workload -> cluster`.
    async fn serving(&self) -> BTreeMap<String, String> {
        let census = self.state.world.census().await;
        census
            .workloads()
            .into_iter()
            .filter_map(|(key, copies)| {
                let on = copies.iter().find(|(_, w)| w.replicas > 0)?.0;
                Some((key.to_string(), on.to_owned()))
            })
            .collect()
    }
}

fn auto(price_memory: u64) -> ControllerConfig {
    ControllerConfig {
        mode: Mode::Auto,
        interval: Duration::from_secs(10),
        failover_after: Duration::from_secs(30),
        stable_after: Duration::from_secs(60),
        price_memory: Duration::from_secs(price_memory),
        max_concurrent_moves: 4,
        export_refresh: Duration::from_secs(300),
        max_nodes: 0,
    }
}

/// Two members, onprem cheaper at first; shop/a and shop/b may move for savings,
/// batch/c may not.
fn cost_federation(extra_policy_spec: &str) -> String {
    cluster("onprem", 0.03, "site: onprem", true)
        + &cluster("gke", 0.04, "site: gke", true)
        + &workload("shop", "a", 2, "1", "onprem")
        + &workload("shop", "b", 1, "2", "onprem")
        + &workload("batch", "c", 1, "1", "onprem")
        + &policy(
            "shop-cost",
            "shop",
            &format!(
                "  rebalance:\n    minSavingsPercent: 10\n    cooldown: 1h\n    maxConcurrentMigrations: 5\n{extra_policy_spec}"
            ),
        )
        + &policy("batch-stays", "batch", "")
}

#[tokio::test(start_paused = true)]
async fn a_price_rise_starts_exactly_the_moves_that_pay_once_the_price_has_held() {
    let fed = federation(&cost_federation(""), auto(600), monday_noon(), None);
    assert!(
        fed.pass().await.is_empty(),
        "onprem is cheapest: nothing to do"
    );

    fed.set_cpu_price("onprem", 0.06);
    let decided = fed.pass().await;
    assert_eq!(decided.len(), 2, "{decided:?}");
    for (workload, to, verdict, reason) in &decided {
        assert_eq!(
            (to.as_str(), *verdict),
            ("gke", Verdict::Hold),
            "{workload}"
        );
        assert!(reason.starts_with("hysteresis"), "{reason}");
    }
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert!(fed.pass().await.iter().all(|d| d.2 == Verdict::Hold));
    assert!(fed.migrations().is_empty());

    tokio::time::sleep(Duration::from_secs(301)).await;
    let decided = fed.pass().await;
    let started: Vec<(&str, Verdict)> = decided.iter().map(|d| (d.0.as_str(), d.2)).collect();
    assert_eq!(
        started,
        [("shop/a", Verdict::Start), ("shop/b", Verdict::Start)]
    );
    fed.settle().await;
    let mut moved = fed.migrations();
    moved.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        moved,
        [
            (
                "shop/a".into(),
                "onprem".into(),
                "gke".into(),
                Trigger::Cost
            ),
            (
                "shop/b".into(),
                "onprem".into(),
                "gke".into(),
                Trigger::Cost
            ),
        ]
    );
    let serving = fed.serving().await;
    assert_eq!(serving["shop/a"], "gke");
    assert_eq!(serving["shop/b"], "gke");
    assert_eq!(serving["batch/c"], "onprem");
    let done = fed.state.engine.list().expect("list");
    assert!(done.iter().all(|m| m.state == State::Done), "{done:?}");
    // The next pass has nothing left to do.
    assert!(fed.pass().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn prices_that_swing_every_minute_move_nothing() {
    let fed = federation(&cost_federation(""), auto(3600), monday_noon(), None);
    // The broker has watched steady prices for a while before they start to swing.
    fed.pass().await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    for minute in 0..90 {
        fed.set_cpu_price("onprem", if minute % 2 == 0 { 0.06 } else { 0.02 });
        for _ in 0..6 {
            let decided = fed.pass().await;
            assert!(
                decided.iter().all(|d| d.2 != Verdict::Start),
                "minute {minute}: {decided:?}"
            );
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
    assert!(fed.migrations().is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_hysteresis_the_cooldown_still_forbids_moving_back() {
    // A one-second price memory: every swing looks real, so only the cooldown stands
    // between the workloads and a move every minute.
    let fed = federation(&cost_federation(""), auto(1), monday_noon(), None);
    let started_at = fed.state.controllers.clock.now();
    let mut starts: Vec<(u64, String, String)> = Vec::new();
    for minute in 0..50 {
        fed.set_cpu_price("onprem", if minute % 2 == 0 { 0.06 } else { 0.02 });
        for _ in 0..6 {
            fed.pass().await;
            let now = fed.state.controllers.clock.now();
            for d in fed.state.controllers.report().decisions {
                if d.verdict == Verdict::Start {
                    starts.push((now - started_at, d.proposal.workload, d.proposal.to));
                }
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    }
    // Each workload moved once (to gke, on the first expensive minute), and not back
    // within its one-hour cooldown although onprem was cheaper every other minute.
    let moved: Vec<(&str, &str)> = starts
        .iter()
        .map(|s| (s.1.as_str(), s.2.as_str()))
        .collect();
    assert_eq!(moved, [("shop/a", "gke"), ("shop/b", "gke")], "{starts:?}");
    let held = fed.state.controllers.report().decisions;
    assert!(
        held.iter()
            .any(|d| d.verdict == Verdict::Hold && d.reason.starts_with("cooldown")),
        "{held:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn windows_and_caps_hold_moves_until_they_allow_them() {
    let yaml = cluster("onprem", 0.06, "site: onprem", true)
        + &cluster("gke", 0.04, "site: gke", true)
        + &workload("shop", "a", 2, "1", "onprem")
        + &workload("shop", "b", 1, "2", "onprem")
        + &workload("batch", "d", 1, "1", "onprem")
        + &workload("batch", "e", 1, "1", "onprem")
        + &policy(
            "shop-cost",
            "shop",
            "  rebalance:\n    cooldown: 1h\n    maxConcurrentMigrations: 1\n    windows: [\"Mon-Fri 22:00-06:00\"]\n",
        )
        + &policy(
            "batch-cost",
            "batch",
            "  rebalance:\n    maxConcurrentMigrations: 3\n",
        );
    let mut config = auto(600);
    config.max_concurrent_moves = 1;
    // Monday 20:50: the first pass watches prices; none has been watched for 10 minutes.
    let fed = federation(&yaml, config, monday_noon() + 8 * 3600 + 50 * 60, None);
    let decided = fed.pass().await;
    assert!(decided.iter().all(|d| d.2 == Verdict::Hold), "{decided:?}");
    assert!(
        decided[2].3.contains("watched for less than 10m"),
        "{}",
        decided[2].3
    );
    tokio::time::sleep(Duration::from_secs(600)).await;

    // 21:00: shop's window is closed; batch moves, one at a time (the broker-wide cap).
    let decided = fed.pass().await;
    let verdicts: Vec<(&str, Verdict)> = decided.iter().map(|d| (d.0.as_str(), d.2)).collect();
    // The plan proposes one move per policy's maxConcurrentMigrations: shop/a only.
    assert_eq!(
        verdicts,
        [
            ("shop/a", Verdict::Hold),
            ("batch/d", Verdict::Start),
            ("batch/e", Verdict::Hold)
        ]
    );
    assert!(
        decided[0]
            .3
            .starts_with("outside the windows of policy shop-cost"),
        "{}",
        decided[0].3
    );
    assert!(
        decided[2].3.contains("max-concurrent-moves 1"),
        "{}",
        decided[2].3
    );
    let report = fed.state.controllers.report();
    let opens = report.decisions[0].not_before.expect("a time");
    assert_eq!(opens, monday_noon() + 10 * 3600);
    fed.settle().await;
    let decided = fed.pass().await;
    assert_eq!(
        decided.iter().map(|d| d.2).collect::<Vec<_>>(),
        [Verdict::Hold, Verdict::Start]
    );
    fed.settle().await;

    // 22:00: the window opens; shop's policy moves one workload at a time.
    tokio::time::sleep(Duration::from_secs(
        opens - fed.state.controllers.clock.now(),
    ))
    .await;
    let decided = fed.pass().await;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(
        (decided[0].0.as_str(), decided[0].2),
        ("shop/a", Verdict::Start)
    );
    // While it moves, the plan still sees it on onprem: the move is not started twice.
    let decided = fed.pass().await;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(decided[0].2, Verdict::Hold);
    assert!(
        decided[0].3.starts_with("cooldown: moved 0s ago"),
        "{}",
        decided[0].3
    );
    fed.settle().await;
    let decided = fed.pass().await;
    assert_eq!(
        (decided[0].0.as_str(), decided[0].2),
        ("shop/b", Verdict::Start),
        "{decided:?}"
    );
    fed.settle().await;
    // (Records are stamped with the wall clock, which a paused test does not move: their
    // order is not the order of the moves, which the verdicts above showed.)
    let mut moved: Vec<String> = fed.migrations().into_iter().map(|m| m.0).collect();
    moved.sort();
    assert_eq!(moved, ["batch/d", "batch/e", "shop/a", "shop/b"]);
}

#[tokio::test(start_paused = true)]
async fn recommend_mode_starts_nothing_until_switched_to_auto() {
    let mut config = auto(60);
    config.mode = Mode::Recommend;
    let fed = federation(&cost_federation(""), config, monday_noon(), None);
    fed.set_cpu_price("onprem", 0.06);
    for _ in 0..20 {
        let decided = fed.pass().await;
        assert!(decided.iter().all(|d| d.2 != Verdict::Start), "{decided:?}");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let decided = fed.pass().await;
    assert!(
        decided
            .iter()
            .all(|d| d.2 == Verdict::Recommend && d.3.contains("recommend mode")),
        "{decided:?}"
    );
    assert!(fed.migrations().is_empty());

    fed.state.controllers.set_mode(Mode::Auto);
    let decided = fed.pass().await;
    assert!(decided.iter().all(|d| d.2 == Verdict::Start), "{decided:?}");
    fed.settle().await;
    assert_eq!(fed.migrations().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_policy_can_opt_out_of_automatic_moves() {
    let fed = federation(
        &cost_federation("    automatic: false\n"),
        auto(1),
        monday_noon(),
        None,
    );
    fed.set_cpu_price("onprem", 0.06);
    tokio::time::sleep(Duration::from_secs(5)).await;
    fed.pass().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let decided = fed.pass().await;
    assert_eq!(decided.len(), 2);
    assert!(
        decided
            .iter()
            .all(|d| d.2 == Verdict::Recommend && d.3.contains("opts out"))
    );
    assert!(fed.migrations().is_empty());
}

/// onprem is preferred by shop's policy; gke is the other place to run.
fn failover_federation(cooldown: &str) -> String {
    cluster("onprem", 0.04, "site: onprem", true)
        + &cluster("gke", 0.04, "site: gke", true)
        + &workload("shop", "web", 2, "1", "onprem")
        + &workload("batch", "job", 1, "1", "onprem")
        + &policy(
            "shop-home",
            "shop",
            &format!(
                "  clusterAffinity:\n    preferred: [{{weight: 100, matchLabels: {{site: onprem}}}}]\n  rebalance:\n    cooldown: {cooldown}\n"
            ),
        )
}

#[tokio::test(start_paused = true)]
async fn a_down_cluster_is_evacuated_after_the_debounce_and_its_stale_copies_removed() {
    let fed = federation(&failover_federation("1m"), auto(600), monday_noon(), None);
    assert!(fed.pass().await.is_empty());
    let onprem = &fed.sims["onprem"];
    onprem.set_fault(Fault::Unreachable);
    // Unreachable for 0, 10, 20 s: suspect, nothing moves.
    for _ in 0..3 {
        assert!(fed.pass().await.is_empty(), "debounce");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let decided = fed.pass().await;
    let verdicts: Vec<(&str, &str, Verdict)> = decided
        .iter()
        .map(|d| (d.0.as_str(), d.1.as_str(), d.2))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("batch/job", "gke", Verdict::Start),
            ("shop/web", "gke", Verdict::Start)
        ]
    );
    assert_eq!(decided[0].3, "onprem has been down for 30s");
    fed.settle().await;
    let serving = fed.serving().await;
    assert_eq!(serving["shop/web"], "gke");
    assert_eq!(serving["batch/job"], "gke");
    let records = fed.state.engine.list().expect("list");
    assert!(
        records.iter().all(|m| m.fenced
            && m.trigger == Trigger::Failover
            && m.state == State::Done
            && !m.source_removed),
        "{records:?}"
    );
    // Nothing may be moved onto onprem while it holds a stale copy of the workload.
    let refused = fed
        .state
        .engine
        .submit(
            &WorkloadKey::new("shop", "web"),
            "onprem",
            &crate::broker::migration::MoveOptions::default(),
            "test",
            None,
        )
        .await;
    assert!(
        matches!(
            refused,
            Err(crate::broker::migration::SubmitError::StaleCopy { .. })
        ),
        "{refused:?}"
    );
    // Stale copies still run on onprem, which cannot be reached to stop them.
    onprem.clear_fault(FaultKind::Unreachable);
    let key = WorkloadKey::new("shop", "web");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let inventory = onprem.inventory().await.expect("back");
    assert!(
        inventory.workloads.iter().all(|w| w.key != key),
        "the stale copy is scaled to zero and deleted: {:?}",
        inventory.workloads
    );
    let records = fed.state.engine.list().expect("list");
    assert!(records.iter().all(|m| m.source_removed), "{records:?}");

    // onprem is back but not yet stable: the preferred workload waits, then returns;
    // batch/job has no preference and stays.
    let decided = fed.pass().await;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(
        (decided[0].0.as_str(), decided[0].2),
        ("shop/web", Verdict::Hold)
    );
    assert!(
        decided[0].3.contains("once stable for 1m"),
        "{}",
        decided[0].3
    );
    let report = fed.state.controllers.report();
    assert_eq!(report.decisions[0].proposal.kind, Kind::Return);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let decided = fed.pass().await;
    assert_eq!(
        (decided[0].0.as_str(), decided[0].2),
        ("shop/web", Verdict::Start),
        "{decided:?}"
    );
    fed.settle().await;
    let serving = fed.serving().await;
    assert_eq!(serving["shop/web"], "onprem");
    assert_eq!(serving["batch/job"], "gke");
    let mut triggers: Vec<(String, Trigger)> =
        fed.migrations().into_iter().map(|m| (m.0, m.3)).collect();
    triggers.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.as_str().cmp(b.1.as_str())));
    assert_eq!(
        triggers,
        [
            ("batch/job".into(), Trigger::Failover),
            ("shop/web".into(), Trigger::Failover),
            ("shop/web".into(), Trigger::Return)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_evacuation_without_room_grows_a_cluster_first() {
    let yaml = cluster("onprem", 0.04, "site: onprem", true)
        + &cluster("small", 0.04, "site: small", false)
        + &workload("shop", "big", 3, "6", "onprem")
        + &policy("shop-grow", "shop", "  capacityOnDemand: true\n");
    let mut config = auto(600);
    config.max_nodes = 4;
    let fed = federation(&yaml, config, monday_noon(), Some("small"));
    assert!(fed.pass().await.is_empty());
    fed.sims["onprem"].set_fault(Fault::Unreachable);
    fed.pass().await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Down now, but three 6-core replicas do not fit on two 8-core nodes.
    assert!(fed.pass().await.is_empty());
    let report = fed.state.controllers.report();
    assert_eq!(report.growth.len(), 1, "{:?}", report.growth);
    assert_eq!(report.growth[0]["state"], "requested");
    assert_eq!(report.growth[0]["request"]["toNodes"], 3);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(fed.pass().await.is_empty(), "the resize takes 20 s");
    tokio::time::sleep(Duration::from_secs(15)).await;
    let decided = fed.pass().await;
    assert_eq!(decided.len(), 1, "{decided:?}");
    assert_eq!(
        (decided[0].1.as_str(), decided[0].2),
        ("small", Verdict::Start)
    );
    fed.settle().await;
    assert_eq!(fed.serving().await["shop/big"], "small");
    assert_eq!(fed.sims["small"].inventory().await.expect("up").nodes, 3);
}

/// A conflict that arises after the policies were accepted (here set directly, as a
/// workload that appears later would make it) holds only the workloads it concerns:
/// the other workloads of the down member are still evacuated, and the pass says which
/// one it held and why.
#[tokio::test(start_paused = true)]
async fn a_late_policy_conflict_holds_only_its_workloads_and_failover_goes_on() {
    let fed = federation(&failover_federation("1m"), auto(600), monday_noon(), None);
    assert!(fed.pass().await.is_empty());
    let mut policies = fed.state.world.policies();
    let mut twin = policies[0].clone();
    twin.name = "shop-twin".to_owned();
    policies.push(twin);
    fed.state.world.set_policies(policies);
    fed.sims["onprem"].set_fault(Fault::Unreachable);
    for _ in 0..3 {
        assert!(fed.pass().await.is_empty(), "debounce");
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let decided = fed.pass().await;
    let verdicts: Vec<(&str, &str, Verdict)> = decided
        .iter()
        .map(|d| (d.0.as_str(), d.1.as_str(), d.2))
        .collect();
    assert_eq!(verdicts, [("batch/job", "gke", Verdict::Start)]);
    let report = fed.state.controllers.report();
    let held: Vec<(&str, &str)> = report
        .held
        .iter()
        .map(|h| (h.workload.as_str(), h.reason.as_str()))
        .collect();
    assert_eq!(
        held,
        [(
            "shop/web",
            "policies `shop-home` and `shop-twin` both select workload `shop/web` with priority 100; give one a higher priority or narrow a selector"
        )]
    );
    let status = fed.state.controllers.status(&fed.state, |_| true);
    assert_eq!(status["held"][0]["workload"], "shop/web", "{status}");
    assert_eq!(
        status["held"][0]["policies"],
        serde_json::json!(["shop-home", "shop-twin"])
    );
    fed.settle().await;
    let serving = fed.serving().await;
    assert_eq!(serving["batch/job"], "gke");
    // Nothing was decided for the held workload: it waits on the down member.
    let moved: Vec<String> = fed.migrations().into_iter().map(|m| m.0).collect();
    assert_eq!(moved, ["batch/job"]);
    assert!(!serving.contains_key("shop/web"), "{serving:?}");
}

#[tokio::test(start_paused = true)]
async fn a_member_that_answers_slowly_does_not_hold_up_the_pass() {
    let fed = federation(&failover_federation("1m"), auto(600), monday_noon(), None);
    // A member whose inventory takes a minute (a Kubernetes member whose watches have
    // not listed yet waits 30 s).
    fed.sims["onprem"].set_fault(Fault::SlowApi(Duration::from_secs(60)));
    let began = tokio::time::Instant::now();
    fed.pass().await;
    let took = began.elapsed();
    assert!(
        took <= crate::broker::world::CENSUS_WAIT + Duration::from_secs(1),
        "the pass took {took:?}"
    );
    let phases: Vec<(String, &str)> = fed
        .state
        .controllers
        .report()
        .clusters
        .iter()
        .map(|(name, phase, _)| (name.clone(), phase.as_str()))
        .collect();
    assert_eq!(
        phases,
        [("gke".to_owned(), "up"), ("onprem".to_owned(), "suspect")]
    );
}

/// The decision for `workload` as `(verdict, rule, reason)`.
fn decision_of(fed: &Federation, workload: &str) -> (Verdict, &'static str, String) {
    let report = fed.state.controllers.report();
    let d = report
        .decisions
        .iter()
        .find(|d| d.proposal.workload == workload)
        .unwrap_or_else(|| panic!("no decision for {workload}: {:?}", report.decisions));
    (d.verdict, d.rule, d.reason.clone())
}

#[tokio::test(start_paused = true)]
async fn a_move_that_keeps_failing_backs_off_then_waits_for_an_operator_until_something_changes() {
    let yaml = cluster("onprem", 0.03, "site: onprem", true)
        + &cluster("gke", 0.04, "site: gke", true)
        + &workload("shop", "a", 1, "1", "onprem")
        + &policy(
            "shop-cost",
            "shop",
            "  rebalance:\n    minSavingsPercent: 10\n    cooldown: 1h\n",
        );
    let fed = federation(&yaml, auto(1), monday_noon(), None);
    fed.sims["gke"].set_fault(Fault::RejectApply("quota exceeded".into()));
    fed.set_cpu_price("onprem", 0.06);
    fed.pass().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = || {
        fed.state
            .engine
            .list()
            .expect("list")
            .iter()
            .filter(|m| m.workload == "shop/a")
            .count()
    };
    // Three attempts, each failing the same way, 1 min then 2 min apart: a failed
    // attempt does not start the policy's one-hour cooldown.
    for (attempt, wait) in [(1, 60), (2, 120), (3, 240)] {
        let (verdict, _, reason) = {
            fed.pass().await;
            decision_of(&fed, "shop/a")
        };
        assert_eq!(verdict, Verdict::Start, "attempt {attempt}: {reason}");
        fed.settle().await;
        assert_eq!(attempts(), attempt);
        let last = fed.state.engine.list().expect("list").remove(0);
        assert_eq!(last.state, State::RolledBack, "{last:?}");
        fed.pass().await;
        let (verdict, rule, reason) = decision_of(&fed, "shop/a");
        if attempt < 3 {
            assert_eq!((verdict, rule), (Verdict::Hold, "retry"), "{reason}");
            assert!(reason.contains("quota exceeded"), "{reason}");
            tokio::time::sleep(Duration::from_secs(wait)).await;
        } else {
            assert_eq!((verdict, rule), (Verdict::Hold, "operator"), "{reason}");
            assert!(
                reason.starts_with(
                    "needs an operator: 3 attempts to move it to gke failed the same way"
                ),
                "{reason}"
            );
        }
    }
    // Held: an hour of passes tries nothing more, and the status says why and since when.
    for _ in 0..360 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        fed.pass().await;
    }
    assert_eq!(attempts(), 3);
    let status = fed.state.controllers.status(&fed.state, |_| true);
    let failed = &status["failedMoves"][0];
    assert_eq!(failed["workload"], "shop/a", "{status}");
    assert_eq!(failed["to"], "gke", "{status}");
    assert_eq!(failed["failures"], 3, "{status}");
    assert_eq!(failed["needsOperator"], true, "{status}");
    assert!(failed["needsOperatorSince"].is_string(), "{status}");
    assert!(
        failed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("quota exceeded")),
        "{status}"
    );

    // The target's prices change: tried once more, and its failure counts afresh.
    fed.set_cpu_price("gke", 0.041);
    fed.pass().await;
    let (verdict, rule, reason) = decision_of(&fed, "shop/a");
    assert_ne!(rule, "operator", "{reason}");
    if verdict != Verdict::Start {
        // Held by hysteresis while the new price is younger than the price memory.
        tokio::time::sleep(Duration::from_secs(2)).await;
        fed.pass().await;
    }
    assert_eq!(decision_of(&fed, "shop/a").0, Verdict::Start);
    fed.settle().await;
    assert_eq!(attempts(), 4);
    fed.pass().await;
    assert_eq!(decision_of(&fed, "shop/a").1, "retry");

    // An operator clears it: the next pass tries again, and this time it works.
    fed.sims["gke"].clear_fault(FaultKind::RejectApply);
    assert_eq!(fed.state.controllers.clear("shop/a", None), ["gke"]);
    assert!(fed.state.controllers.clear("shop/b", None).is_empty());
    fed.pass().await;
    assert_eq!(decision_of(&fed, "shop/a").0, Verdict::Start);
    fed.settle().await;
    assert_eq!(fed.serving().await["shop/a"], "gke");
    fed.pass().await;
    assert!(
        fed.state.controllers.report().failing.is_empty(),
        "{:?}",
        fed.state.controllers.report().failing
    );
}

#[tokio::test(start_paused = true)]
async fn pods_left_pending_are_shown_as_the_current_wait_and_progress_is_published_on_change() {
    // Three 5-core replicas fit the target's 16 free cores, but only one per 8-core node.
    let yaml = cluster("onprem", 0.04, "site: onprem", true)
        + &cluster("small", 0.04, "site: small", false)
        + &workload("shop", "big", 3, "5", "onprem");
    let fed = federation(
        &yaml,
        ControllerConfig::default(),
        monday_noon(),
        Some("small"),
    );
    let mut events = fed.state.events.subscribe();
    let migration = fed
        .state
        .engine
        .submit(
            &WorkloadKey::new("shop", "big"),
            "small",
            &crate::broker::migration::MoveOptions::default(),
            "test",
            None,
        )
        .await
        .expect("submitted");
    // Twenty polls of the rollout (one a second) while a replica stays Pending.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let waiting = fed
        .state
        .engine
        .waiting_for(&migration.id)
        .expect("the start step waits");
    assert!(
        waiting.contains("2 of 3 available") && waiting.contains("1 of 3 replicas pending"),
        "{waiting}"
    );
    let record = fed
        .state
        .engine
        .get(&migration.id)
        .expect("get")
        .expect("there");
    let body = crate::broker::api::migration_body(&fed.state, &record).expect("body");
    assert_eq!(body["waitingFor"], waiting.as_str(), "{body}");
    assert_eq!(body["state"], "running", "{body}");
    // Not in the stored record.
    assert!(
        !serde_json::to_string(&record)
            .expect("json")
            .contains("waitingFor")
    );
    let mut progress = Vec::new();
    while let Ok(event) = events.try_recv() {
        if event.kind == "migration.progress" {
            progress.push(event.data);
        }
    }
    assert!(!progress.is_empty());
    for pair in progress.windows(2) {
        assert_ne!(pair[0], pair[1], "published twice unchanged: {progress:?}");
    }
    assert!(progress.len() <= 4, "{progress:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_persons_move_that_succeeds_ends_a_run_of_failures() {
    let yaml = cluster("onprem", 0.03, "site: onprem", true)
        + &cluster("gke", 0.04, "site: gke", true)
        + &workload("shop", "a", 1, "1", "onprem")
        + &policy(
            "shop-cost",
            "shop",
            "  rebalance:\n    minSavingsPercent: 10\n    cooldown: 1m\n",
        );
    let fed = federation(&yaml, auto(1), monday_noon(), None);
    fed.sims["gke"].set_fault(Fault::RejectApply("quota exceeded".into()));
    fed.set_cpu_price("onprem", 0.06);
    fed.pass().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    fed.pass().await;
    fed.settle().await;
    fed.pass().await;
    assert_eq!(decision_of(&fed, "shop/a").1, "retry");
    // A person moves it there once the quota allows, and back.
    fed.sims["gke"].clear_fault(FaultKind::RejectApply);
    let key = WorkloadKey::new("shop", "a");
    let options = crate::broker::migration::MoveOptions::default();
    for to in ["gke", "onprem"] {
        fed.state
            .engine
            .submit(&key, to, &options, "test", None)
            .await
            .expect("submitted");
        fed.settle().await;
    }
    assert_eq!(fed.serving().await["shop/a"], "onprem");
    fed.pass().await;
    assert!(
        fed.state.controllers.report().failing.is_empty(),
        "{:?}",
        fed.state.controllers.report().failing
    );
}
