//! Cluster health, debounced: a member that stops answering is *suspect* at once but
//! *down* (its workloads evacuated) only after it has stayed unhealthy for the failover
//! delay, as Karmada waits 30 s before it taints a cluster. A member that comes back is
//! *returning* until it has stayed healthy for the stable period; only then, and only if
//! its health has not changed within that period, is it a target again. The same delay
//! in both directions keeps a flapping cluster from pulling workloads to and fro.

use std::collections::BTreeMap;

use super::human_duration;

/// The delays, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// How long a member must stay unhealthy before its workloads are evacuated.
    pub failover_after: u64,
    /// How long a member must stay healthy after a change before it is a target again.
    pub stable_after: u64,
}

/// Where a member stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Healthy.
    Up,
    /// Unhealthy since `since`, not yet for the failover delay.
    Suspect { since: u64 },
    /// Unhealthy since `since`, for at least the failover delay: evacuated.
    Down { since: u64 },
    /// Healthy again since `since` after being down, not yet for the stable period.
    Returning { since: u64 },
}

impl Phase {
    /// The name in the API and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Up => "up",
            Phase::Suspect { .. } => "suspect",
            Phase::Down { .. } => "down",
            Phase::Returning { .. } => "returning",
        }
    }
}

/// A change of phase worth an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It stopped being healthy.
    Suspect,
    /// A suspect member is healthy again before the failover delay: nothing happens.
    Recovered,
    /// Unhealthy for the failover delay (or again while returning): evacuate it.
    Down,
    /// A down member answers again: scale its stale copies to zero.
    Back,
    /// A returning member has been healthy for the stable period.
    Stable,
}

impl Transition {
    /// The name in events and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Suspect => "suspect",
            Transition::Recovered => "recovered",
            Transition::Down => "down",
            Transition::Back => "back",
            Transition::Stable => "stable",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Track {
    phase: Phase,
    /// When its health last changed; `None`: not since it was first seen.
    changed_at: Option<u64>,
}

/// The phase of every member, fed one observation per member and tick.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    settings: HealthSettings,
    tracks: BTreeMap<String, Track>,
}

impl HealthTracker {
    pub fn new(settings: HealthSettings) -> HealthTracker {
        HealthTracker {
            settings,
            tracks: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> HealthSettings {
        self.settings
    }

    /// Records whether `cluster` is healthy at `now`, and says what changed.
    pub fn observe(&mut self, cluster: &str, healthy: bool, now: u64) -> Option<Transition> {
        let settings = self.settings;
        let track = self.tracks.entry(cluster.to_owned()).or_insert(Track {
            phase: Phase::Up,
            changed_at: None,
        });
        let (phase, transition) = match (track.phase, healthy) {
            (Phase::Up, true) | (Phase::Down { .. }, false) => return None,
            (Phase::Up, false) => (Phase::Suspect { since: now }, Transition::Suspect),
            (Phase::Suspect { .. }, true) => (Phase::Up, Transition::Recovered),
            (Phase::Suspect { since }, false) => {
                if now.saturating_sub(since) < settings.failover_after {
                    return None;
                }
                // Still counted from when it stopped answering: that is when it changed.
                track.phase = Phase::Down { since };
                return Some(Transition::Down);
            }
            (Phase::Down { .. }, true) => (Phase::Returning { since: now }, Transition::Back),
            (Phase::Returning { .. }, false) => (Phase::Down { since: now }, Transition::Down),
            (Phase::Returning { since }, true) => {
                if now.saturating_sub(since) < settings.stable_after {
                    return None;
                }
                track.phase = Phase::Up;
                return Some(Transition::Stable);
            }
        };
        track.phase = phase;
        track.changed_at = Some(now);
        Some(transition)
    }

    /// A member never observed counts as up.
    pub fn phase(&self, cluster: &str) -> Phase {
        self.tracks.get(cluster).map_or(Phase::Up, |t| t.phase)
    }

    /// Whether `cluster` may receive workloads at `now`; otherwise why not and, when it
    /// is a matter of time, from when it may (if it stays healthy).
    pub fn ready_as_target(&self, cluster: &str, now: u64) -> Result<(), (String, Option<u64>)> {
        let Some(track) = self.tracks.get(cluster) else {
            return Ok(());
        };
        let stable = self.settings.stable_after;
        match track.phase {
            Phase::Up => match track.changed_at {
                Some(at) if now.saturating_sub(at) < stable => Err((
                    format!(
                        "target {cluster}'s health changed {} ago; it is a target once stable for {}",
                        human_duration(now.saturating_sub(at)),
                        human_duration(stable)
                    ),
                    Some(at + stable),
                )),
                _ => Ok(()),
            },
            Phase::Suspect { since } => Err((
                format!(
                    "target {cluster} has been unhealthy for {}",
                    human_duration(now.saturating_sub(since))
                ),
                None,
            )),
            Phase::Down { since } => Err((
                format!(
                    "target {cluster} is down (for {})",
                    human_duration(now.saturating_sub(since))
                ),
                None,
            )),
            Phase::Returning { since } => Err((
                format!(
                    "target {cluster} came back {} ago; it is a target once stable for {}",
                    human_duration(now.saturating_sub(since)),
                    human_duration(stable)
                ),
                Some(since + stable),
            )),
        }
    }

    /// Forgets members that left the federation.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.tracks.retain(|name, _| keep(name));
    }

    /// Every tracked member with its phase, in name order.
    pub fn phases(&self) -> impl Iterator<Item = (&str, Phase)> {
        self.tracks.iter().map(|(name, t)| (name.as_str(), t.phase))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: HealthSettings = HealthSettings {
        failover_after: 30,
        stable_after: 120,
    };

    /// An observation `(second, healthy)` and the transition it must produce.
    type Step = (u64, bool, Option<Transition>);

    #[test]
    fn debounces_in_both_directions() {
        let cases: &[(&str, &[Step])] = &[
            (
                "a blip shorter than the failover delay changes nothing lasting",
                &[
                    (0, true, None),
                    (10, false, Some(Transition::Suspect)),
                    (39, false, None),
                    (40, true, Some(Transition::Recovered)),
                ],
            ),
            (
                "down after the delay, back, then stable",
                &[
                    (0, true, None),
                    (10, false, Some(Transition::Suspect)),
                    (39, false, None),
                    (40, false, Some(Transition::Down)),
                    (100, false, None),
                    (200, true, Some(Transition::Back)),
                    (319, true, None),
                    (320, true, Some(Transition::Stable)),
                    (400, true, None),
                ],
            ),
            (
                "failing again while returning is down at once",
                &[
                    (10, false, Some(Transition::Suspect)),
                    (40, false, Some(Transition::Down)),
                    (50, true, Some(Transition::Back)),
                    (60, false, Some(Transition::Down)),
                    (70, true, Some(Transition::Back)),
                    (189, true, None),
                    (190, true, Some(Transition::Stable)),
                ],
            ),
        ];
        for (name, observations) in cases {
            let mut tracker = HealthTracker::new(SETTINGS);
            for &(now, healthy, expected) in *observations {
                assert_eq!(
                    tracker.observe("c", healthy, now),
                    expected,
                    "{name}: at {now}"
                );
            }
        }
    }

    #[test]
    fn a_member_is_a_target_only_once_stable() {
        let mut tracker = HealthTracker::new(SETTINGS);
        assert_eq!(tracker.ready_as_target("never-seen", 0), Ok(()));
        tracker.observe("c", true, 0);
        assert_eq!(
            tracker.ready_as_target("c", 1),
            Ok(()),
            "stable since it was first seen"
        );
        tracker.observe("c", false, 10);
        assert!(tracker.ready_as_target("c", 11).is_err());
        tracker.observe("c", true, 20);
        let (why, from) = tracker
            .ready_as_target("c", 21)
            .expect_err("changed recently");
        assert_eq!(from, Some(140));
        assert!(why.contains("changed 1s ago"), "{why}");
        assert_eq!(tracker.ready_as_target("c", 140), Ok(()));

        tracker.observe("d", false, 0);
        tracker.observe("d", false, 30);
        assert_eq!(tracker.phase("d"), Phase::Down { since: 0 });
        tracker.observe("d", true, 50);
        assert_eq!(
            tracker.ready_as_target("d", 60).map_err(|e| e.1),
            Err(Some(170))
        );
        tracker.observe("d", true, 170);
        assert_eq!(tracker.ready_as_target("d", 170), Ok(()));
    }
}
