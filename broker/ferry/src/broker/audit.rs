//! The audit log: who did what, when, from where, and how it ended; kept in the store,
//! one record per action and per migration step, readable by admins (`GET /api/v1/audit`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_store::{Store, StoreError, Versioned};
use serde::{Deserialize, Serialize};

use super::clock;

pub const PREFIX: &str = "audit/";

/// The `action` of a request the API refused; its `target` is the method and path.
pub const REQUEST: &str = "request";
/// The `who` of a refused request that carried no valid token.
pub const UNAUTHENTICATED: &str = "(unauthenticated)";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub at: String,
    /// The token's subject, or `broker` for what the broker does by itself.
    pub who: String,
    /// e.g. `migration.create`, `migration.step`, `policy.put`.
    pub action: String,
    pub target: String,
    /// The client's address, when a request caused it.
    pub from: Option<String>,
    /// `ok`, `denied`, `failed: ...`, or a step's outcome.
    pub outcome: String,
}

impl Versioned for AuditRecord {
    const KIND: &'static str = "audit";
    const SCHEMA: u32 = 1;
}

pub fn record(
    store: &Store,
    who: &str,
    action: &str,
    target: &str,
    from: Option<&str>,
    outcome: &str,
) -> Result<(), StoreError> {
    store
        .append(
            PREFIX,
            &AuditRecord {
                at: clock::now(),
                who: who.to_owned(),
                action: action.to_owned(),
                target: target.to_owned(),
                from: from.map(str::to_owned),
                outcome: outcome.to_owned(),
            },
        )
        .map(|_| ())
}

/// How much of the audit log is kept (`[audit]` of the config): the newest `max_records`,
/// none older than `max_age`. Pruned in the background every [`PRUNE_EVERY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_records: usize,
    pub max_age: Duration,
}

pub const DEFAULT_MAX_RECORDS: usize = 100_000;
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
pub const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_records: DEFAULT_MAX_RECORDS,
            max_age: DEFAULT_MAX_AGE,
        }
    }
}

/// Deletes the records beyond `retention` as of `now` (Unix seconds); how many went.
/// Keys are the store's sequence, so the oldest come first.
pub fn prune(store: &Store, retention: Retention, now: u64) -> Result<usize, StoreError> {
    let records = store.list::<AuditRecord>(PREFIX)?;
    let over = records.len().saturating_sub(retention.max_records);
    let oldest_kept = now.saturating_sub(retention.max_age.as_secs());
    let mut deleted = 0;
    for (index, (key, record)) in records.iter().enumerate() {
        // A record whose time cannot be read is kept: pruning must not guess.
        let too_old = clock::parse(&record.at).is_some_and(|at| at < oldest_kept);
        if index < over || too_old {
            store.delete(key)?;
            deleted += 1;
        } else {
            break;
        }
    }
    Ok(deleted)
}

/// Prunes now and then every [`PRUNE_EVERY`], on the blocking pool (it walks the log).
pub fn spawn_pruner(store: Store, retention: Retention) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(PRUNE_EVERY);
        loop {
            ticker.tick().await;
            let store = store.clone();
            let pruned =
                tokio::task::spawn_blocking(move || prune(&store, retention, clock::unix_now()))
                    .await;
            match pruned {
                Ok(Ok(0)) => {}
                Ok(Ok(deleted)) => tracing::info!(deleted, "audit records pruned"),
                Ok(Err(error)) => tracing::warn!(%error, "pruning the audit log failed"),
                Err(error) => tracing::warn!(%error, "the audit pruner stopped"),
            }
        }
    })
}

/// Unauthenticated requests refused: recorded, but at most one record per
/// [`UNAUTHENTICATED_WINDOW`], which counts the others. Anyone can send them, so one record
/// each would let a flood grow the store as fast as it can send; an authenticated denial
/// (403) has a subject to answer for and is recorded each time.
#[derive(Default)]
pub struct Unauthenticated {
    inner: Mutex<Coalesced>,
}

/// At most one record of unauthenticated denials per this period.
pub const UNAUTHENTICATED_WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Coalesced {
    /// When the last record was written.
    last_written: Option<Instant>,
    /// Denials since, not yet in a record.
    suppressed: u64,
}

impl Unauthenticated {
    /// Notes one denial; writes a record of it (and of those suppressed before it) unless
    /// one was written within the window. Whether a record was written.
    pub fn deny(&self, store: &Store, target: &str, from: Option<&str>, why: &str) -> bool {
        let suppressed = {
            let mut inner = self
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if inner
                .last_written
                .is_some_and(|at| now.duration_since(at) < UNAUTHENTICATED_WINDOW)
            {
                inner.suppressed += 1;
                return false;
            }
            inner.last_written = Some(now);
            std::mem::take(&mut inner.suppressed)
        };
        let outcome = if suppressed == 0 {
            format!("denied: {why}")
        } else {
            format!(
                "denied: {why} (and {suppressed} more unauthenticated requests denied since the last such record)"
            )
        };
        let _ = record(store, UNAUTHENTICATED, REQUEST, target, from, &outcome);
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test reports failure by panicking")]
mod tests {
    use super::*;

    fn at(unix: u64, n: usize) -> AuditRecord {
        AuditRecord {
            at: clock::rfc3339(unix),
            who: "x".into(),
            action: format!("a{n}"),
            target: String::new(),
            from: None,
            outcome: "ok".into(),
        }
    }

    #[test]
    fn pruning_keeps_the_newest_records_within_the_age() {
        let store = Store::in_memory();
        let now = 1_800_000_000;
        for n in 0..10 {
            // Five a day old, then five of the last hour.
            let when = if n < 5 { now - 86_400 } else { now - 60 };
            store.append(PREFIX, &at(when, n)).unwrap();
        }
        let retention = Retention {
            max_records: 8,
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(prune(&store, retention, now).unwrap(), 5);
        let kept: Vec<String> = store
            .list::<AuditRecord>(PREFIX)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r.action)
            .collect();
        assert_eq!(kept, ["a5", "a6", "a7", "a8", "a9"]);
        let count_only = Retention {
            max_records: 2,
            max_age: Duration::from_secs(365 * 86_400),
        };
        assert_eq!(prune(&store, count_only, now).unwrap(), 3);
        assert_eq!(store.list::<AuditRecord>(PREFIX).unwrap().len(), 2);
        assert_eq!(prune(&store, count_only, now).unwrap(), 0);
    }

    #[test]
    fn a_flood_of_unauthenticated_denials_makes_one_record_that_counts_them() {
        let store = Store::in_memory();
        let denials = Unauthenticated::default();
        assert!(denials.deny(
            &store,
            "GET /api/v1/clusters",
            Some("1.2.3.4:5"),
            "token_missing"
        ));
        for _ in 0..1000 {
            assert!(!denials.deny(&store, "GET /api/v1/clusters", None, "token_missing"));
        }
        let records = store.list::<AuditRecord>(PREFIX).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].1.outcome, "denied: token_missing");
        assert_eq!(records[0].1.from.as_deref(), Some("1.2.3.4:5"));
        // After the window, the next one is written with the count of those in between.
        denials.inner.lock().unwrap().last_written = Some(Instant::now() - UNAUTHENTICATED_WINDOW);
        assert!(denials.deny(&store, "POST /api/v1/plan", None, "bad_signature"));
        let records = store.list::<AuditRecord>(PREFIX).unwrap();
        assert_eq!(records.len(), 2);
        assert!(
            records[1].1.outcome.contains("and 1000 more"),
            "{}",
            records[1].1.outcome
        );
    }
}
