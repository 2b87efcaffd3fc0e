//! The event stream: what happened, in order, to every subscriber (`GET /api/v1/events`).
//! Events are for watching live; the durable record is the audit log and the migrations.
//!
//! Kinds: `migration.state`, `migration.step`, `migration.progress`,
//! `migration.cancelRequested`, `migration.sourceRemoved` (the engine);
//! `resources.reloaded`, `resources.rejected` (serve's file watch); `cost.sampled` and
//! `cluster.health` (the cost-history sampler); `hello` and `lagged` (the stream itself).

use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use super::clock;

/// One event, as sent on the stream.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Increases by one per event of this broker process.
    pub seq: u64,
    /// `migration.step`, `migration.state`, `cluster.health`, `policies.rejected`, ...
    pub kind: String,
    pub at: String,
    /// The namespace the event concerns, if any: namespace-scoped tokens see only theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub data: Value,
}

#[derive(Clone)]
pub struct Events {
    sender: broadcast::Sender<Event>,
    seq: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Events {
    pub fn new() -> Events {
        // A subscriber more than this many events behind is told it lagged.
        let (sender, _) = broadcast::channel(1024);
        Events {
            sender,
            seq: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    pub fn publish(&self, kind: &str, namespace: Option<&str>, data: Value) {
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(event = kind, seq, %data, "event");
        // No subscriber is not an error: events are for whoever watches now.
        let _ = self.sender.send(Event {
            seq,
            kind: kind.to_owned(),
            at: clock::now(),
            namespace: namespace.map(str::to_owned),
            data,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }
}
