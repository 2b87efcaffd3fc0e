//! Moves that failed: when the controllers try a move again, and when they stop trying
//! and wait for a person. A move (a workload to a target) that failed waits before it is
//! tried again, twice as long after each failure in a row; one that failed the same way
//! [`NEEDS_OPERATOR_AFTER`] times in a row is not tried again until something changes.

use super::human_duration;

/// Failures in a row, the same way, after which a move waits for an operator.
pub const NEEDS_OPERATOR_AFTER: u32 = 3;
/// The wait after a first failure, in seconds; doubled after each further one.
pub const FIRST_BACKOFF: u64 = 60;
/// The longest wait between two attempts, in seconds.
pub const MAX_BACKOFF: u64 = 30 * 60;

/// How long to wait after `failures` failures in a row before trying again.
pub fn backoff(failures: u32) -> u64 {
    match failures {
        0 => 0,
        n => FIRST_BACKOFF
            .saturating_mul(1u64 << (n - 1).min(32))
            .min(MAX_BACKOFF),
    }
}

/// How one attempt to move a workload to a target ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It moved (or is moving): the failures before it no longer count.
    Succeeded,
    /// It was refused, failed, rolled back or was cancelled, for this reason.
    Failed(String),
}

/// An attempt, and when it ended (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at: u64,
    pub outcome: Outcome,
}

/// The failures of a move since it last succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failures {
    /// Failed attempts in a row.
    pub count: u32,
    /// How many of the latest of them failed the way the last did.
    pub identical: u32,
    /// Why the last failed.
    pub reason: String,
    /// When the last failed.
    pub last_at: u64,
}

impl Failures {
    /// When the move may be tried again (unless it needs an operator).
    pub fn retry_at(&self) -> u64 {
        self.last_at.saturating_add(backoff(self.count))
    }

    /// Whether it failed the same way often enough that trying again is pointless until
    /// something changes. It has been so since the last failure.
    pub fn needs_operator(&self) -> bool {
        self.identical >= NEEDS_OPERATOR_AFTER
    }
}

/// What `attempts` say: `None` when the latest succeeded or there is none. They may come
/// in any order of time; of two at the same second, the later in the slice is the later.
pub fn failures(attempts: &[Attempt]) -> Option<Failures> {
    let mut newest_first: Vec<(usize, &Attempt)> = attempts.iter().enumerate().collect();
    newest_first.sort_by(|(i, a), (j, b)| (b.at, j).cmp(&(a.at, i)));
    let newest_first = newest_first.into_iter().map(|(_, attempt)| attempt);
    let mut failed = newest_first
        .into_iter()
        .map_while(|attempt| match &attempt.outcome {
            Outcome::Failed(reason) => Some((attempt.at, reason)),
            Outcome::Succeeded => None,
        });
    let (last_at, reason) = failed.next()?;
    let mut count = 1;
    let mut identical = 1;
    let mut same_so_far = true;
    for (_, earlier) in failed {
        count += 1;
        same_so_far = same_so_far && same_failure(earlier, reason);
        if same_so_far {
            identical += 1;
        }
    }
    Some(Failures {
        count,
        identical,
        reason: reason.clone(),
        last_at,
    })
}

/// Whether two reasons say the same thing: alike once the numbers in them (seconds
/// waited, replicas, sizes) and migration ids are set aside.
pub fn same_failure(a: &str, b: &str) -> bool {
    shape(a) == shape(b)
}

fn shape(reason: &str) -> String {
    reason
        .split_whitespace()
        .map(|word| {
            if word.starts_with("mig-") {
                return "mig-#".to_owned();
            }
            let mut shaped = String::with_capacity(word.len());
            for c in word.chars() {
                if c.is_ascii_digit() {
                    if !shaped.ends_with('#') {
                        shaped.push('#');
                    }
                } else {
                    shaped.push(c);
                }
            }
            shaped
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reason of a hold for an operator, as the decisions show it.
pub fn needs_operator_reason(failures: &Failures, to: &str, workload: &str, now: u64) -> String {
    format!(
        "needs an operator: {} attempts to move it to {to} failed the same way, the last {} ago: {}; \
         not tried again until its policy or the prices of its clusters change, or an operator clears it \
         (ferry controller clear {workload})",
        failures.identical,
        human_duration(now.saturating_sub(failures.last_at)),
        failures.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(at: u64, reason: &str) -> Attempt {
        Attempt {
            at,
            outcome: Outcome::Failed(reason.into()),
        }
    }

    fn succeeded(at: u64) -> Attempt {
        Attempt {
            at,
            outcome: Outcome::Succeeded,
        }
    }

    #[test]
    fn the_wait_doubles_after_each_failure_up_to_a_cap() {
        let waits: Vec<u64> = (0..9).map(backoff).collect();
        assert_eq!(waits, [0, 60, 120, 240, 480, 960, 1800, 1800, 1800]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn failures_count_back_to_the_last_success_and_the_same_way_from_the_latest() {
        let start = "start: cluster b rejected apply of shop/web: ConfigMap web already exists here without a Ferry mark";
        let timeout = "start: step start did not finish within 600 s; it was waiting for: 0 of 3 available; 3 of 3 replicas pending: 0/2 nodes are available";
        // Expected: (count, identical, reason, last_at), or None.
        type Expected<'a> = Option<(u32, u32, &'a str, u64)>;
        let cases: Vec<(Vec<Attempt>, Expected)> = vec![
            (vec![], None),
            (vec![succeeded(10)], None),
            (vec![failed(10, start), succeeded(20)], None),
            (vec![failed(10, start)], Some((1, 1, start, 10))),
            // In any order; older failures before a success do not count.
            (
                vec![
                    failed(30, start),
                    failed(5, start),
                    succeeded(7),
                    failed(20, start),
                ],
                Some((2, 2, start, 30)),
            ),
            (
                vec![failed(10, start), failed(20, start), failed(30, start)],
                Some((3, 3, start, 30)),
            ),
            // Only the latest run of identical ones counts as identical.
            (
                vec![failed(10, start), failed(20, timeout), failed(30, start)],
                Some((3, 1, start, 30)),
            ),
            (
                vec![failed(10, timeout), failed(20, start), failed(30, start)],
                Some((3, 2, start, 30)),
            ),
            // At the same second, the later in the list is the later.
            (
                vec![failed(10, start), succeeded(10), failed(10, timeout)],
                Some((1, 1, timeout, 10)),
            ),
            (
                vec![failed(10, start), failed(10, timeout), succeeded(10)],
                None,
            ),
            // Numbers differ from one attempt to the next; the failure is the same.
            (
                vec![
                    failed(10, &timeout.replace("600", "540")),
                    failed(20, &timeout.replace("0 of 3", "1 of 3")),
                    failed(30, timeout),
                ],
                Some((3, 3, timeout, 30)),
            ),
        ];
        for (attempts, expected) in cases {
            let found = failures(&attempts);
            let found = found
                .as_ref()
                .map(|f| (f.count, f.identical, f.reason.as_str(), f.last_at));
            assert_eq!(found, expected, "{attempts:?}");
        }
    }

    #[test]
    fn three_identical_failures_need_an_operator_and_other_failures_back_off() {
        let f = |count, identical| Failures {
            count,
            identical,
            reason: "x".into(),
            last_at: 1000,
        };
        assert!(!f(2, 2).needs_operator());
        assert!(f(3, 3).needs_operator());
        assert!(!f(5, 2).needs_operator());
        assert_eq!(f(1, 1).retry_at(), 1060);
        assert_eq!(f(4, 1).retry_at(), 1480);
    }

    #[test]
    fn migration_ids_and_numbers_do_not_tell_failures_apart() {
        assert!(same_failure(
            "cancelled by controller: mig-0a1b2c3d4e5f took 12 s",
            "cancelled by controller: mig-ffeeddccbbaa took 7 s"
        ));
        assert!(!same_failure(
            "cluster b rejected apply of shop/web: forbidden",
            "cluster c rejected apply of shop/web: forbidden"
        ));
    }
}
