//! Prometheus metrics (`GET /metrics`): API latency and status per request, and, computed
//! when scraped, per-cluster capacity used and monthly cost, workloads per cluster and
//! migrations by state, moves by what started them, evacuations and savings realised.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::api::AppState;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

#[derive(Default)]
pub struct Metrics {
    /// Per bucket, then +Inf.
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_micros_sum: AtomicU64,
    /// 2xx, 3xx, 4xx, 5xx.
    by_class: [AtomicU64; 4],
}

pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    let m = &state.metrics;
    let bucket = BUCKETS
        .iter()
        .position(|&b| seconds <= b)
        .unwrap_or(BUCKETS.len());
    m.latency[bucket].fetch_add(1, Ordering::Relaxed);
    m.latency_micros_sum
        .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    let class = usize::from(response.status().as_u16() / 100).clamp(2, 5) - 2;
    m.by_class[class].fetch_add(1, Ordering::Relaxed);
    response
}

pub async fn render(state: &AppState) -> String {
    let m = &state.metrics;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ferry_api_request_duration_seconds API request latency."
    );
    let _ = writeln!(out, "# TYPE ferry_api_request_duration_seconds histogram");
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += m.latency[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "ferry_api_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    cumulative += m.latency[BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "ferry_api_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "ferry_api_request_duration_seconds_sum {}",
        m.latency_micros_sum.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "ferry_api_request_duration_seconds_count {cumulative}");
    let _ = writeln!(out, "# TYPE ferry_api_requests_total counter");
    for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let _ = writeln!(
            out,
            "ferry_api_requests_total{{code=\"{class}\"}} {}",
            m.by_class[i].load(Ordering::Relaxed)
        );
    }

    let census = state.world.census().await;
    let _ = writeln!(out, "# TYPE ferry_cluster_cpu_used_millis gauge");
    let _ = writeln!(out, "# TYPE ferry_cluster_memory_used_bytes gauge");
    let _ = writeln!(out, "# TYPE ferry_cluster_workloads gauge");
    let _ = writeln!(out, "# TYPE ferry_cluster_monthly_cost gauge");
    let _ = writeln!(out, "# TYPE ferry_cluster_up gauge");
    for member in state.world.members() {
        let name = &member.definition.name;
        match census.inventories.get(name) {
            Some(Ok(inventory)) => {
                let serving = inventory
                    .workloads
                    .iter()
                    .filter(|w| w.replicas > 0)
                    .count();
                let cost = member.monthly_run_rate(inventory);
                let _ = writeln!(out, "ferry_cluster_up{{cluster=\"{name}\"}} 1");
                let _ = writeln!(
                    out,
                    "ferry_cluster_cpu_used_millis{{cluster=\"{name}\"}} {}",
                    inventory.requested.cpu_millis
                );
                let _ = writeln!(
                    out,
                    "ferry_cluster_memory_used_bytes{{cluster=\"{name}\"}} {}",
                    inventory.requested.memory_bytes
                );
                let _ = writeln!(
                    out,
                    "ferry_cluster_workloads{{cluster=\"{name}\"}} {}",
                    serving
                );
                let _ = writeln!(
                    out,
                    "ferry_cluster_monthly_cost{{cluster=\"{name}\"}} {cost:.2}"
                );
            }
            _ => {
                let _ = writeln!(out, "ferry_cluster_up{{cluster=\"{name}\"}} 0");
            }
        }
    }
    let _ = writeln!(out, "# TYPE ferry_migrations gauge");
    let _ = writeln!(
        out,
        "# HELP ferry_migration_step_seconds Durations of finished migration steps (whole seconds, from the journal)."
    );
    let _ = writeln!(out, "# TYPE ferry_migration_step_seconds summary");
    if let Ok(migrations) = state.engine.list() {
        let mut by_state = std::collections::BTreeMap::new();
        let mut steps: std::collections::BTreeMap<String, (u64, u64)> =
            std::collections::BTreeMap::new();
        for m in &migrations {
            *by_state.entry(format!("{:?}", m.state)).or_insert(0u64) += 1;
            for step in &m.steps {
                if let (Some(start), Some(end)) = (&step.started_at, &step.ended_at) {
                    let (Some(start), Some(end)) =
                        (super::clock::parse(start), super::clock::parse(end))
                    else {
                        continue;
                    };
                    let entry = steps.entry(step.name.clone()).or_default();
                    entry.0 += end.saturating_sub(start);
                    entry.1 += 1;
                }
            }
        }
        for (state, count) in by_state {
            let _ = writeln!(out, "ferry_migrations{{state=\"{state}\"}} {count}");
        }
        for (step, (sum, count)) in steps {
            let _ = writeln!(
                out,
                "ferry_migration_step_seconds_sum{{step=\"{step}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "ferry_migration_step_seconds_count{{step=\"{step}\"}} {count}"
            );
        }
        super::controllers::metrics(&state.controllers.report(), &migrations, &mut out);
    }
    out
}
