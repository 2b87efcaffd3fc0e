//! Which proposed moves start now. The rebalance plan and the failover and return checks
//! propose moves; this applies the rules that depend on time and on what already runs —
//! cooldown, windows, stable targets, hysteresis, concurrency caps, the broker's mode and
//! a policy's opt-out — and says, for every move, what happens and why.

use std::collections::BTreeMap;

use super::health::{HealthTracker, Phase};
use super::human_duration;
use super::prices::PriceMemory;
use super::retry::{self, Failures};
use crate::model::{PlacementPolicy, RebalanceRules};
use crate::quantity::Resources;
use crate::window;

/// The broker-wide mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Decide and show; start nothing.
    Recommend,
    /// Start what the rules allow.
    Auto,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "recommend" => Some(Mode::Recommend),
            "auto" => Some(Mode::Auto),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Recommend => "recommend",
            Mode::Auto => "auto",
        }
    }
}

/// Why a move is proposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Its cluster is down: restart it elsewhere (the source is fenced, not drained).
    Evacuate,
    /// It was evacuated, and its policy prefers the cluster it left, which is back.
    Return,
    /// Its cluster now fails a hard rule of its policy (affinity, taint, health).
    Policy,
    /// It is cheaper elsewhere.
    Cost,
}

impl Kind {
    /// The name in the API, events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Evacuate => "failover",
            Kind::Return => "return",
            Kind::Policy => "policy",
            Kind::Cost => "cost",
        }
    }
}

/// A move someone would make.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    /// `namespace/name`.
    pub workload: String,
    pub from: String,
    pub to: String,
    pub kind: Kind,
    /// Replicas that move, and whether that is all of them (the broker moves whole
    /// workloads; a share of a spread workload is only recommended).
    pub replicas: u32,
    pub whole: bool,
    /// Requests of the moving replicas together.
    pub requests: Resources,
    /// Monthly cost of the moving replicas where they run now.
    pub monthly_cost: f64,
    /// Monthly cost now minus after, at today's prices.
    pub monthly_savings: f64,
    /// The governing policy's name and rules (`None`: the built-in default).
    pub policy: Option<(String, RebalanceRules)>,
    /// The claims its pods use, on the source: volume data does not move yet, so the
    /// controllers never move such a workload by themselves.
    pub claims: Vec<String>,
}

impl Proposal {
    /// The rules of the governing policy, or the default's.
    fn rules(&self) -> RebalanceRules {
        self.policy
            .as_ref()
            .map_or_else(RebalanceRules::disabled, |(_, r)| r.clone())
    }
}

/// Policy name and rules, for a proposal.
pub fn policy_rules(policy: Option<&PlacementPolicy>) -> Option<(String, RebalanceRules)> {
    policy.map(|p| (p.name.clone(), p.rebalance.clone()))
}

/// What happens to a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Start it now.
    Start,
    /// Not now: a rule holds it (see the reason; `not_before` when time will lift it).
    Hold,
    /// Shown, never started by the controller: the broker is in recommend mode or the
    /// policy opted out.
    Recommend,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Start => "start",
            Verdict::Hold => "hold",
            Verdict::Recommend => "recommend",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub proposal: Proposal,
    pub verdict: Verdict,
    /// The rule that decided, as a stable name (`cooldown`, `window`, `hysteresis`, …):
    /// what tells one decision from the next while the reason's wording counts down.
    pub rule: &'static str,
    pub reason: String,
    /// The earliest time (Unix seconds) the move could start if nothing else changes.
    pub not_before: Option<u64>,
}

/// Broker-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub mode: Mode,
    /// Moves the controllers have running at once, all policies together (evacuations
    /// are not held by it: they count, but run regardless).
    pub max_concurrent_moves: u32,
}

/// What the rules look at besides the proposals.
#[derive(Debug, Clone, Copy)]
pub struct Situation<'a> {
    pub now: u64,
    pub limits: Limits,
    pub health: &'a HealthTracker,
    pub prices: &'a PriceMemory,
    /// When each workload's last move started.
    pub last_move: &'a BTreeMap<String, u64>,
    /// Migrations running now, in all and per policy.
    pub running: u32,
    pub running_by_policy: &'a BTreeMap<String, u32>,
    /// The failures of the controllers' moves since each last succeeded, by workload
    /// and target: a failed move waits before it is tried again (so that a failing
    /// evacuation is not retried on every pass), and one that keeps failing the same way
    /// waits for an operator.
    pub failures: &'a BTreeMap<(String, String), Failures>,
}

/// Decides every proposal: evacuations first, then returns, moves a policy requires and
/// cost moves, each group largest savings first (then by workload, for determinism).
pub fn decide(mut proposals: Vec<Proposal>, situation: &Situation<'_>) -> Vec<Decision> {
    proposals.sort_by(|a, b| {
        a.kind
            .cmp(&b.kind)
            .then(b.monthly_savings.total_cmp(&a.monthly_savings))
            .then(a.workload.cmp(&b.workload))
            .then(a.to.cmp(&b.to))
    });
    let mut started = 0u32;
    let mut started_by_policy: BTreeMap<String, u32> = BTreeMap::new();
    proposals
        .into_iter()
        .map(|proposal| {
            let judged = judge(&proposal, situation, started, &started_by_policy);
            let (verdict, rule, reason, not_before) = match judged {
                Judgement::Go(rule, why) => match situation.limits.mode {
                    Mode::Recommend => (
                        Verdict::Recommend,
                        "mode",
                        format!("would start now ({why}); the broker is in recommend mode"),
                        None,
                    ),
                    Mode::Auto => {
                        started += 1;
                        if let Some((name, _)) = &proposal.policy {
                            *started_by_policy.entry(name.clone()).or_default() += 1;
                        }
                        (Verdict::Start, rule, why, None)
                    }
                },
                Judgement::Wait(rule, why, when) => (Verdict::Hold, rule, why, when),
                Judgement::Manual(rule, why) => (Verdict::Recommend, rule, why, None),
            };
            Decision {
                proposal,
                verdict,
                rule,
                reason,
                not_before,
            }
        })
        .collect()
}

/// A verdict before the mode applies: the rule's name and the reason (and, for a hold,
/// when time lifts it).
enum Judgement {
    Go(&'static str, String),
    Wait(&'static str, String, Option<u64>),
    Manual(&'static str, String),
}

fn judge(
    p: &Proposal,
    s: &Situation<'_>,
    started: u32,
    started_by_policy: &BTreeMap<String, u32>,
) -> Judgement {
    use Judgement::{Go, Manual, Wait};
    let now = s.now;
    if let Some(failures) = s.failures.get(&(p.workload.clone(), p.to.clone())) {
        if failures.needs_operator() {
            return Wait(
                "operator",
                retry::needs_operator_reason(failures, &p.to, &p.workload, now),
                None,
            );
        }
        let when = failures.retry_at();
        if now < when {
            let attempts = match failures.count {
                1 => "its last move by the controllers".to_owned(),
                n => format!("{n} moves by the controllers in a row"),
            };
            return Wait(
                "retry",
                format!(
                    "{attempts} to {} did not complete ({}); trying again in {}",
                    p.to,
                    failures.reason,
                    human_duration(when - now)
                ),
                Some(when),
            );
        }
    }
    if let Err((why, when)) = s.health.ready_as_target(&p.to, now) {
        return Wait("target", why, when);
    }
    if !p.whole {
        return Manual(
            "spread",
            format!(
                "moves {} replicas of a spread workload; the broker moves whole workloads, so start it by hand",
                p.replicas
            ),
        );
    }
    if !p.claims.is_empty() {
        return Manual(
            "volumes",
            format!(
                "its pods use claims {}; volume data does not move yet, so only a person can move it, accepting empty volumes",
                p.claims.join(", ")
            ),
        );
    }
    if p.kind == Kind::Evacuate {
        let since = match s.health.phase(&p.from) {
            Phase::Down { since } => human_duration(now.saturating_sub(since)),
            _ => "a while".to_owned(),
        };
        return Go("failover", format!("{} has been down for {since}", p.from));
    }
    let rules = p.rules();
    let policy_name = p.policy.as_ref().map_or("the default", |(n, _)| n.as_str());
    if !rules.automatic {
        return Manual(
            "opt-out",
            format!(
                "policy {policy_name} opts out of automatic moves (rebalance.automatic: false)"
            ),
        );
    }
    // The cooldown keeps savings from flapping; a move that restores a hard rule of the
    // policy is a correction, not a saving, and waits for nothing.
    if let Some(&last) = s
        .last_move
        .get(&p.workload)
        .filter(|_| p.kind != Kind::Policy)
    {
        let until = last + rules.cooldown_seconds;
        if now < until {
            return Wait(
                "cooldown",
                format!(
                    "cooldown: moved {} ago, policy {policy_name} allows one move per {}",
                    human_duration(now.saturating_sub(last)),
                    human_duration(rules.cooldown_seconds)
                ),
                Some(until),
            );
        }
    }
    if !window::is_open(&rules.windows, now) {
        let names: Vec<String> = rules.windows.iter().map(ToString::to_string).collect();
        return Wait(
            "window",
            format!(
                "outside the windows of policy {policy_name}: {}",
                names.join(", ")
            ),
            window::next_open(&rules.windows, now),
        );
    }
    match s.health.phase(&p.from) {
        Phase::Up => {}
        other => {
            return Wait(
                "source",
                format!("source {} is {}", p.from, other.as_str()),
                None,
            );
        }
    }
    if p.kind == Kind::Cost {
        for cluster in [&p.from, &p.to] {
            if let Err(when) = s.prices.watched_long_enough(cluster, now) {
                return Wait(
                    "hysteresis",
                    format!(
                        "hysteresis: {cluster}'s prices have been watched for less than {}",
                        human_duration(s.prices.window())
                    ),
                    when,
                );
            }
        }
        let Some(worst) = s.prices.worst_savings(&p.from, &p.to, p.requests) else {
            return Wait(
                "hysteresis",
                "no prices recorded yet for both clusters".into(),
                None,
            );
        };
        let percent = if p.monthly_cost > 0.0 {
            worst / p.monthly_cost * 100.0
        } else {
            0.0
        };
        // Written so that a NaN (absurd prices) holds the move rather than starts it.
        if !(worst > 0.0 && percent >= rules.min_savings_percent) {
            let settles = [s.prices.settles_at(&p.from), s.prices.settles_at(&p.to)]
                .into_iter()
                .flatten()
                .max();
            return Wait(
                "hysteresis",
                format!(
                    "hysteresis: at the prices seen in the last {} it would save {worst:.2} a month ({percent:.1}%), below minSavingsPercent {}",
                    human_duration(s.prices.window()),
                    rules.min_savings_percent
                ),
                settles,
            );
        }
    }
    if let Some((name, _)) = &p.policy {
        let running = s.running_by_policy.get(name).copied().unwrap_or(0)
            + started_by_policy.get(name).copied().unwrap_or(0);
        if running >= rules.max_concurrent_migrations {
            return Wait(
                "policy-cap",
                format!(
                    "policy {name} has {running} moves running (maxConcurrentMigrations {})",
                    rules.max_concurrent_migrations
                ),
                None,
            );
        }
    }
    let running = s.running + started;
    if running >= s.limits.max_concurrent_moves {
        return Wait(
            "broker-cap",
            format!(
                "{running} moves running broker-wide (max-concurrent-moves {})",
                s.limits.max_concurrent_moves
            ),
            None,
        );
    }
    let why = match p.kind {
        Kind::Return => format!("{} is back and its policy prefers it", p.to),
        Kind::Policy => format!("{} no longer satisfies policy {policy_name}", p.from),
        _ => format!("saves {:.2} a month", p.monthly_savings),
    };
    Go(p.kind.as_str(), why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::health::HealthSettings;
    use crate::model::Pricing;
    use crate::window::Window;

    /// 2026-11-23, a Monday, 12:00 UTC.
    const NOON: u64 = 1_795_392_000 + 12 * 3600;

    fn rules() -> RebalanceRules {
        RebalanceRules {
            enabled: true,
            min_savings_percent: 10.0,
            payback_hours: 168.0,
            cooldown_seconds: 3600,
            max_concurrent_migrations: 2,
            windows: Vec::new(),
            automatic: true,
        }
    }

    /// A cost move of one core from `a` (0.10 a core-hour) to `b` (0.05).
    fn cost(workload: &str, savings: f64, rules: &RebalanceRules) -> Proposal {
        Proposal {
            workload: workload.into(),
            from: "a".into(),
            to: "b".into(),
            kind: Kind::Cost,
            replicas: 1,
            whole: true,
            requests: Resources::new(1000, 0),
            monthly_cost: 73.0,
            monthly_savings: savings,
            policy: Some(("web".into(), rules.clone())),
            claims: Vec::new(),
        }
    }

    fn pricing(cpu: f64) -> Pricing {
        Pricing {
            currency: "EUR".into(),
            cpu_core_hour: cpu,
            memory_gib_hour: 0.0,
            egress_gib: 0.0,
        }
    }

    struct World {
        health: HealthTracker,
        prices: PriceMemory,
        last_move: BTreeMap<String, u64>,
        running_by_policy: BTreeMap<String, u32>,
        running: u32,
        limits: Limits,
        failures: BTreeMap<(String, String), Failures>,
    }

    impl World {
        fn new() -> World {
            let mut prices = PriceMemory::new(3600);
            prices.record("a", &pricing(0.10), NOON - 7200);
            prices.record("b", &pricing(0.05), NOON - 7200);
            prices.record("c", &pricing(0.05), NOON - 7200);
            World {
                health: HealthTracker::new(HealthSettings {
                    failover_after: 30,
                    stable_after: 300,
                }),
                prices,
                last_move: BTreeMap::new(),
                running_by_policy: BTreeMap::new(),
                running: 0,
                failures: BTreeMap::new(),
                limits: Limits {
                    mode: Mode::Auto,
                    max_concurrent_moves: 10,
                },
            }
        }

        fn decide(
            &self,
            proposals: Vec<Proposal>,
            now: u64,
        ) -> Vec<(String, Verdict, String, Option<u64>)> {
            let situation = Situation {
                now,
                limits: self.limits,
                health: &self.health,
                prices: &self.prices,
                last_move: &self.last_move,
                running: self.running,
                running_by_policy: &self.running_by_policy,
                failures: &self.failures,
            };
            decide(proposals, &situation)
                .into_iter()
                .map(|d| (d.proposal.workload, d.verdict, d.reason, d.not_before))
                .collect()
        }
    }

    fn verdicts(decided: &[(String, Verdict, String, Option<u64>)]) -> Vec<(&str, Verdict)> {
        decided
            .iter()
            .map(|(w, v, _, _)| (w.as_str(), *v))
            .collect()
    }

    #[test]
    fn a_move_that_pays_starts_in_auto_mode_and_is_only_shown_in_recommend_mode() {
        let mut world = World::new();
        let decided = world.decide(vec![cost("shop/web", 36.5, &rules())], NOON);
        assert_eq!(verdicts(&decided), [("shop/web", Verdict::Start)]);
        assert_eq!(decided[0].2, "saves 36.50 a month");

        world.limits.mode = Mode::Recommend;
        let decided = world.decide(vec![cost("shop/web", 36.5, &rules())], NOON);
        assert_eq!(verdicts(&decided), [("shop/web", Verdict::Recommend)]);
        assert!(decided[0].2.contains("recommend mode"), "{}", decided[0].2);

        let mut opted_out = rules();
        opted_out.automatic = false;
        world.limits.mode = Mode::Auto;
        let decided = world.decide(vec![cost("shop/web", 36.5, &opted_out)], NOON);
        assert_eq!(verdicts(&decided), [("shop/web", Verdict::Recommend)]);
        assert!(decided[0].2.contains("opts out"), "{}", decided[0].2);
    }

    #[test]
    fn a_move_a_policy_requires_is_not_held_by_the_savings_cooldown() {
        let mut world = World::new();
        world.last_move.insert("payments/api".into(), NOON - 60);
        let corrective = Proposal {
            kind: Kind::Policy,
            ..cost("payments/api", -10.0, &rules())
        };
        let decided = world.decide(vec![corrective.clone()], NOON);
        assert_eq!(decided[0].1, Verdict::Start, "{}", decided[0].2);
        // The same workload's cost move is held by it.
        let decided = world.decide(vec![cost("payments/api", 36.5, &rules())], NOON);
        assert_eq!(decided[0].1, Verdict::Hold, "{}", decided[0].2);
        assert!(decided[0].2.starts_with("cooldown"), "{}", decided[0].2);
    }

    #[test]
    fn workloads_with_claims_are_never_moved_by_the_controllers() {
        let world = World::new();
        for kind in [Kind::Cost, Kind::Policy, Kind::Return, Kind::Evacuate] {
            let stateful = Proposal {
                kind,
                claims: vec!["data-catalog-db (200.0 GiB)".into()],
                ..cost("shop/catalog-db", 36.5, &rules())
            };
            let decided = world.decide(vec![stateful], NOON);
            assert_eq!(
                decided[0].1,
                Verdict::Recommend,
                "{kind:?}: {}",
                decided[0].2
            );
            assert!(
                decided[0].2.contains("data-catalog-db (200.0 GiB)"),
                "{}",
                decided[0].2
            );
        }
    }

    #[test]
    fn cooldown_windows_and_stable_targets_hold_moves_until_a_known_time() {
        let mut world = World::new();
        world.last_move.insert("shop/web".into(), NOON - 600);
        let decided = world.decide(vec![cost("shop/web", 36.5, &rules())], NOON);
        assert_eq!(decided[0].1, Verdict::Hold);
        assert_eq!(decided[0].3, Some(NOON - 600 + 3600), "{}", decided[0].2);
        assert!(
            decided[0].2.starts_with("cooldown: moved 10m ago"),
            "{}",
            decided[0].2
        );

        let mut nightly = rules();
        nightly.windows = vec![Window::parse("Mon-Fri 22:00-06:00").expect("valid")];
        let decided = world.decide(vec![cost("shop/db", 36.5, &nightly)], NOON);
        assert_eq!(decided[0].1, Verdict::Hold);
        assert_eq!(decided[0].3, Some(NOON + 10 * 3600), "{}", decided[0].2);
        let decided = world.decide(vec![cost("shop/db", 36.5, &nightly)], NOON + 10 * 3600);
        assert_eq!(decided[0].1, Verdict::Start, "{}", decided[0].2);

        world.health.observe("b", false, NOON - 100);
        world.health.observe("b", true, NOON - 50);
        let decided = world.decide(vec![cost("shop/db", 36.5, &rules())], NOON);
        assert_eq!(decided[0].1, Verdict::Hold);
        assert_eq!(decided[0].3, Some(NOON - 50 + 300), "{}", decided[0].2);
    }

    #[test]
    fn caps_per_policy_and_broker_wide_start_the_largest_savings_first() {
        let mut world = World::new();
        world.running_by_policy.insert("web".into(), 1);
        world.running = 1;
        let proposals = vec![
            cost("shop/small", 10.0, &rules()),
            cost("shop/large", 36.5, &rules()),
            cost("shop/medium", 20.0, &rules()),
        ];
        let decided = world.decide(proposals.clone(), NOON);
        // maxConcurrentMigrations 2, one running: only the largest starts.
        assert_eq!(
            verdicts(&decided),
            [
                ("shop/large", Verdict::Start),
                ("shop/medium", Verdict::Hold),
                ("shop/small", Verdict::Hold)
            ]
        );
        assert!(
            decided[1].2.contains("maxConcurrentMigrations 2"),
            "{}",
            decided[1].2
        );

        world.running_by_policy.clear();
        world.limits.max_concurrent_moves = 2;
        let decided = world.decide(proposals, NOON);
        assert_eq!(
            verdicts(&decided),
            [
                ("shop/large", Verdict::Start),
                ("shop/medium", Verdict::Hold),
                ("shop/small", Verdict::Hold)
            ]
        );
        assert!(
            decided[1].2.contains("max-concurrent-moves 2"),
            "{}",
            decided[1].2
        );
    }

    #[test]
    fn prices_that_just_swung_hold_a_move_until_they_settle() {
        let mut world = World::new();
        // b was dearer than a until a minute ago.
        world.prices.record("b", &pricing(0.12), NOON - 120);
        world.prices.record("b", &pricing(0.05), NOON - 60);
        let decided = world.decide(vec![cost("shop/web", 36.5, &rules())], NOON);
        assert_eq!(decided[0].1, Verdict::Hold);
        assert!(decided[0].2.starts_with("hysteresis"), "{}", decided[0].2);
        assert_eq!(decided[0].3, Some(NOON - 60 + 3600));
    }

    #[test]
    fn evacuations_ignore_cost_rules_but_not_unstable_targets() {
        let mut world = World::new();
        world.health.observe("a", false, NOON - 100);
        world.health.observe("a", false, NOON - 60);
        let mut nightly = rules();
        nightly.windows = vec![Window::parse("Sat 01:00-02:00").expect("valid")];
        let evacuate = |workload: &str, to: &str| Proposal {
            kind: Kind::Evacuate,
            to: to.into(),
            ..cost(workload, -5.0, &nightly)
        };
        world.last_move.insert("shop/web".into(), NOON - 10);
        world.running = 50;
        world.health.observe("c", false, NOON - 20);
        world.health.observe("c", true, NOON - 10);
        let decided = world.decide(
            vec![evacuate("shop/web", "b"), evacuate("shop/db", "c")],
            NOON,
        );
        assert_eq!(
            verdicts(&decided),
            [("shop/db", Verdict::Hold), ("shop/web", Verdict::Start)]
        );
        assert_eq!(decided[1].2, "a has been down for 1m40s");
        // An evacuation that failed a moment ago waits before it is tried again; to
        // another target it does not.
        world.failures.insert(
            ("shop/web".into(), "b".into()),
            Failures {
                count: 1,
                identical: 1,
                reason: "start: b rejected it".into(),
                last_at: NOON,
            },
        );
        let decided = world.decide(vec![evacuate("shop/web", "b")], NOON);
        assert_eq!(
            (decided[0].1, decided[0].3),
            (Verdict::Hold, Some(NOON + 60))
        );
        assert!(
            decided[0]
                .2
                .contains("(start: b rejected it); trying again in 1m"),
            "{}",
            decided[0].2
        );
        let decided = world.decide(vec![evacuate("shop/web", "d")], NOON);
        assert_eq!(decided[0].1, Verdict::Start, "{}", decided[0].2);
        // A cost move from a down source waits.
        let decided = world.decide(vec![cost("shop/api", 36.5, &rules())], NOON);
        assert_eq!(decided[0].1, Verdict::Hold);
    }

    #[test]
    fn a_move_that_keeps_failing_backs_off_then_waits_for_an_operator() {
        let mut world = World::new();
        let key = ("shop/web".to_owned(), "b".to_owned());
        let failing = |count, identical| Failures {
            count,
            identical,
            reason: "start: cluster b rejected apply of shop/web: forbidden".into(),
            last_at: NOON,
        };
        // (failures in a row, of which identical, now) -> (verdict, rule, not before)
        let cases = [
            ((1, 1), NOON + 59, (Verdict::Hold, "retry", Some(NOON + 60))),
            ((1, 1), NOON + 60, (Verdict::Start, "cost", None)),
            (
                (2, 2),
                NOON + 60,
                (Verdict::Hold, "retry", Some(NOON + 120)),
            ),
            ((2, 1), NOON + 120, (Verdict::Start, "cost", None)),
            (
                (5, 2),
                NOON + 900,
                (Verdict::Hold, "retry", Some(NOON + 960)),
            ),
            ((3, 3), NOON + 86_400, (Verdict::Hold, "operator", None)),
        ];
        for ((count, identical), now, expected) in cases {
            world
                .failures
                .insert(key.clone(), failing(count, identical));
            let situation = Situation {
                now,
                limits: world.limits,
                health: &world.health,
                prices: &world.prices,
                last_move: &world.last_move,
                running: 0,
                running_by_policy: &world.running_by_policy,
                failures: &world.failures,
            };
            let decided = decide(vec![cost("shop/web", 36.5, &rules())], &situation);
            let d = &decided[0];
            assert_eq!(
                (d.verdict, d.rule, d.not_before),
                expected,
                "{count} {identical}: {}",
                d.reason
            );
            if d.rule == "operator" {
                assert!(
                    d.reason.starts_with("needs an operator: 3 attempts to move it to b failed the same way, the last 24h ago: start: cluster b rejected")
                        && d.reason.ends_with("(ferry controller clear shop/web)"),
                    "{}",
                    d.reason
                );
            }
        }
    }
}
