//! [`Retrying`]: a [`ClusterPort`] that tries a call again, with exponential backoff and
//! jitter, when the error is transient (the cluster did not answer or timed out).
//!
//! Every port method is idempotent by contract, so repeating one is always safe. What is
//! not transient (a refusal, a conflict, a missing permission) returns at once: trying
//! again would only hide it. `inventory` is not retried: adapters serve it from their
//! watches, so its error already says how the watches stand, and the broker's census
//! calls it often and must not stall on a cluster that is down.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    ClusterPort, Drained, ExistingClaim, ExportedWorkload, Inventory, Mark, ObjectRef, PortError,
    Removal, Rollout, WorkloadKey,
};

/// How often and how patiently to try again.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    /// Calls in all, the first included.
    pub attempts: u32,
    /// Wait before the second call; each later wait doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Backoff {
    /// Four calls over about three seconds: enough to ride out an API server restart's
    /// first moments or a dropped connection, short enough that a migration step notices
    /// a real outage quickly and starts its rollback.
    fn default() -> Self {
        Backoff {
            attempts: 4,
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The wait after failed attempt `attempt` (1-based): doubling from `first_delay`,
    /// capped, then spread by up to a quarter either way so that many callers who failed
    /// together do not come back together.
    pub fn delay(&self, attempt: u32, jitter_seed: u64) -> Duration {
        let doubled = self
            .first_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let base = doubled.min(self.max_delay);
        // jitter_seed % 51 is 0..=50, i.e. a factor of 0.75..=1.25 in steps of 1%.
        let percent = 75 + (jitter_seed % 51);
        base.saturating_mul(u32::try_from(percent).unwrap_or(100)) / 100
    }
}

/// Wraps a port so that transient failures are tried again; see the module docs.
pub struct Retrying {
    inner: Arc<dyn ClusterPort>,
    backoff: Backoff,
}

impl Retrying {
    pub fn new(inner: Arc<dyn ClusterPort>, backoff: Backoff) -> Retrying {
        Retrying { inner, backoff }
    }

    async fn with_retries<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, PortError>
    where
        F: FnMut() -> Fut + Send,
        Fut: std::future::Future<Output = Result<T, PortError>> + Send,
        T: Send,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Err(error) if error.is_transient() && attempt < self.backoff.attempts => {
                    let delay = self.backoff.delay(attempt, jitter_seed());
                    tracing::debug!(
                        cluster = self.inner.name(), what, attempt, %error,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "transient error; trying again"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A cheap varying number for the jitter: not for anything that must be unpredictable.
fn jitter_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()) / 1000)
}

#[async_trait]
impl ClusterPort for Retrying {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn inventory(&self) -> Result<Inventory, PortError> {
        self.inner.inventory().await
    }

    async fn export(&self, workload: &WorkloadKey) -> Result<ExportedWorkload, PortError> {
        self.with_retries("export", || self.inner.export(workload))
            .await
    }

    async fn apply(&self, workload: &ExportedWorkload, mark: &Mark) -> Result<(), PortError> {
        self.with_retries("apply", || self.inner.apply(workload, mark))
            .await
    }

    async fn rollout(&self, workload: &WorkloadKey) -> Result<Rollout, PortError> {
        self.with_retries("rollout", || self.inner.rollout(workload))
            .await
    }

    async fn scale(
        &self,
        workload: &WorkloadKey,
        replicas: u32,
        mark: Option<&Mark>,
    ) -> Result<(), PortError> {
        self.with_retries("scale", || self.inner.scale(workload, replicas, mark))
            .await
    }

    async fn drain(
        &self,
        workload: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Drained, PortError> {
        self.with_retries("drain", || self.inner.drain(workload, dependents, mark))
            .await
    }

    async fn delete(
        &self,
        workload: &WorkloadKey,
        dependents: &[ObjectRef],
        mark: &Mark,
    ) -> Result<Removal, PortError> {
        self.with_retries("delete", || self.inner.delete(workload, dependents, mark))
            .await
    }

    async fn claims(
        &self,
        namespace: &str,
        names: &[String],
    ) -> Result<Vec<ExistingClaim>, PortError> {
        self.with_retries("claims", || self.inner.claims(namespace, names))
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{Resources, WorkloadFate};

    /// Fails `export` with the queued errors, then succeeds; counts the calls.
    struct Flaky {
        errors: Mutex<Vec<PortError>>,
        calls: Mutex<u32>,
    }

    fn unreachable() -> PortError {
        PortError::Unreachable {
            cluster: "a".into(),
            reason: "connection refused".into(),
        }
    }

    #[async_trait]
    impl ClusterPort for Flaky {
        fn name(&self) -> &str {
            "a"
        }
        async fn inventory(&self) -> Result<Inventory, PortError> {
            *self.calls.lock().expect("lock") += 1;
            Err(unreachable())
        }
        async fn export(&self, key: &WorkloadKey) -> Result<ExportedWorkload, PortError> {
            *self.calls.lock().expect("lock") += 1;
            match self.errors.lock().expect("lock").pop() {
                Some(error) => Err(error),
                None => Ok(ExportedWorkload {
                    key: key.clone(),
                    replicas: 1,
                    requests: Resources::default(),
                    labels: Default::default(),
                    objects: Vec::new(),
                    claims: Vec::new(),
                }),
            }
        }
        async fn apply(&self, _: &ExportedWorkload, _: &Mark) -> Result<(), PortError> {
            Ok(())
        }
        async fn rollout(&self, _: &WorkloadKey) -> Result<Rollout, PortError> {
            Ok(Rollout::Available { replicas: 1 })
        }
        async fn scale(&self, _: &WorkloadKey, _: u32, _: Option<&Mark>) -> Result<(), PortError> {
            Ok(())
        }
        async fn drain(
            &self,
            _: &WorkloadKey,
            _: &[ObjectRef],
            _: &Mark,
        ) -> Result<Drained, PortError> {
            Ok(Drained::default())
        }
        async fn delete(
            &self,
            _: &WorkloadKey,
            _: &[ObjectRef],
            _: &Mark,
        ) -> Result<Removal, PortError> {
            Ok(Removal {
                workload: WorkloadFate::Absent,
                deleted: Vec::new(),
                kept: Vec::new(),
            })
        }
        async fn claims(&self, _: &str, _: &[String]) -> Result<Vec<ExistingClaim>, PortError> {
            Ok(Vec::new())
        }
    }

    fn quick() -> Backoff {
        Backoff {
            attempts: 3,
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    async fn export_with(errors: Vec<PortError>) -> (Result<ExportedWorkload, PortError>, u32) {
        let flaky = Arc::new(Flaky {
            errors: Mutex::new(errors),
            calls: Mutex::new(0),
        });
        let port = Retrying::new(flaky.clone(), quick());
        let result = port.export(&WorkloadKey::new("shop", "web")).await;
        let calls = *flaky.calls.lock().expect("lock");
        (result, calls)
    }

    #[tokio::test]
    async fn transient_errors_are_tried_again_up_to_the_limit() {
        let (result, calls) = export_with(vec![unreachable(), unreachable()]).await;
        assert!(result.is_ok());
        assert_eq!(calls, 3);

        let (result, calls) = export_with(vec![unreachable(), unreachable(), unreachable()]).await;
        assert!(matches!(result, Err(PortError::Unreachable { .. })));
        assert_eq!(calls, 3, "three attempts in all, then the error");
    }

    #[tokio::test]
    async fn other_errors_and_inventory_return_at_once() {
        let refused = PortError::Rejected {
            cluster: "a".into(),
            what: "patch deployments.apps".into(),
            reason: "forbidden".into(),
        };
        let (result, calls) = export_with(vec![refused]).await;
        assert!(matches!(result, Err(PortError::Rejected { .. })));
        assert_eq!(calls, 1);

        let flaky = Arc::new(Flaky {
            errors: Mutex::new(Vec::new()),
            calls: Mutex::new(0),
        });
        let port = Retrying::new(flaky.clone(), quick());
        assert!(port.inventory().await.is_err());
        assert_eq!(*flaky.calls.lock().expect("lock"), 1);
    }

    #[test]
    fn delays_double_are_capped_and_jittered_within_a_quarter() {
        let backoff = Backoff::default();
        let cases = [
            (1, 250),
            (2, 500),
            (3, 1000),
            (4, 2000),
            (5, 2000),
            (30, 2000),
        ];
        for (attempt, base_ms) in cases {
            for seed in [0, 25, 50, 51, 12_345] {
                let ms = backoff.delay(attempt, seed).as_millis();
                assert!(
                    ms >= base_ms * 3 / 4 && ms <= base_ms * 5 / 4,
                    "attempt {attempt} seed {seed}: {ms} ms, base {base_ms}"
                );
            }
        }
        assert_eq!(backoff.delay(1, 25), Duration::from_millis(250));
    }
}
