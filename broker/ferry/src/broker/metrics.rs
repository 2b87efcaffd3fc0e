//! Prometheus metrics (`GET /metrics`): API latency and status per request, the build,
//! the last reload of the resource files, and, computed when scraped, per-cluster
//! capacity (allocatable and requested CPU and memory) and monthly cost, workloads per
//! cluster and migrations by state, moves by what started them, evacuations and savings
//! realised. Text exposition format 0.0.4: each family once, with its HELP and TYPE
//! first and all its samples together (a strict parser takes a family seen again for a
//! new, untyped one).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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
    reloads: Reloads,
}

/// How the reloads of the resource files went (`ferry serve` watches them).
#[derive(Default)]
struct Reloads {
    failures: AtomicU64,
    /// The last change of the files was rejected: the broker runs on an older set.
    last_failed: AtomicBool,
    /// What /readyz says while `last_failed`.
    problem: Mutex<Option<String>>,
}

impl Metrics {
    /// A change of the resource files was rejected; `summary` says why, for /readyz.
    pub fn reload_rejected(&self, summary: String) {
        self.reloads.failures.fetch_add(1, Ordering::Relaxed);
        self.reloads.last_failed.store(true, Ordering::Relaxed);
        if let Ok(mut problem) = self.reloads.problem.lock() {
            *problem = Some(summary);
        }
    }

    /// The resource files as they are now are in force.
    pub fn reload_applied(&self) {
        self.reloads.last_failed.store(false, Ordering::Relaxed);
        if let Ok(mut problem) = self.reloads.problem.lock() {
            *problem = None;
        }
    }

    fn reload_problem(&self) -> Option<String> {
        if !self.reloads.last_failed.load(Ordering::Relaxed) {
            return None;
        }
        let summary = self.reloads.problem.lock().ok().and_then(|p| p.clone());
        Some(
            summary
                .unwrap_or_else(|| "the last change of the resource files was rejected".to_owned()),
        )
    }
}

/// `GET /readyz`: 200 "ok" while the broker runs on the resource files as they are; 503
/// with the reason once a change of them was rejected (the broker keeps serving the last
/// good set, but not what the files say: a deployment should notice), until a change is
/// accepted.
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.reload_problem() {
        None => "ok".into_response(),
        Some(problem) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {problem}; the last good set of resource files stays in force\n"),
        )
            .into_response(),
    }
}

/// A label value in the exposition format's escaping (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric family: HELP and TYPE, then its samples (`suffix{labels} value`), together.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// `{cluster="…"}`.
fn cluster_label(name: &str) -> String {
    format!("{{cluster=\"{}\"}}", label(name))
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
    let name = "ferry_api_request_duration_seconds";
    let _ = writeln!(out, "# HELP {name} API request latency.");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += m.latency[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += m.latency[BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        out,
        "{name}_sum {}",
        m.latency_micros_sum.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "{name}_count {cumulative}");
    let by_class: Vec<(String, String)> = ["2xx", "3xx", "4xx", "5xx"]
        .iter()
        .enumerate()
        .map(|(i, class)| {
            (
                format!("{{code=\"{class}\"}}"),
                m.by_class[i].load(Ordering::Relaxed).to_string(),
            )
        })
        .collect();
    family(
        &mut out,
        "ferry_api_requests_total",
        "counter",
        "API requests answered, by status class.",
        &by_class,
    );
    family(
        &mut out,
        "ferry_build_info",
        "gauge",
        "The running binary: version, commit and cargo features (always 1).",
        &[(
            format!(
                "{{version=\"{}\",commit=\"{}\",features=\"{}\"}}",
                label(crate::build_info::VERSION),
                label(crate::build_info::COMMIT),
                label(crate::build_info::features())
            ),
            "1".to_owned(),
        )],
    );
    family(
        &mut out,
        "ferry_config_reload_failures_total",
        "counter",
        "Changes of the resource files that were rejected (the last good set stayed in force).",
        &[(
            String::new(),
            m.reloads.failures.load(Ordering::Relaxed).to_string(),
        )],
    );
    family(
        &mut out,
        "ferry_config_last_reload_success",
        "gauge",
        "1 while the resource files as they are now are in force, 0 after a change was rejected.",
        &[(
            String::new(),
            if m.reloads.last_failed.load(Ordering::Relaxed) {
                "0"
            } else {
                "1"
            }
            .to_owned(),
        )],
    );

    let census = state.world.census().await;
    let mut up = Vec::new();
    let mut cpu_allocatable = Vec::new();
    let mut cpu_requested = Vec::new();
    let mut memory_allocatable = Vec::new();
    let mut memory_requested = Vec::new();
    let mut workloads = Vec::new();
    let mut cost = Vec::new();
    for member in state.world.members() {
        let definition = &member.definition;
        let labels = cluster_label(&definition.name);
        let Some(Ok(inventory)) = census.inventories.get(&definition.name) else {
            up.push((labels, "0".to_owned()));
            continue;
        };
        up.push((labels.clone(), "1".to_owned()));
        // The capacity the planner counts, as `GET /clusters` shows it: the Cluster
        // file's when it sets one, else what the nodes report.
        let (cpu, memory) = definition.capacity.map_or(
            (
                inventory.allocatable.cpu_millis,
                inventory.allocatable.memory_bytes,
            ),
            |c| (c.cpu_millis, c.memory_bytes),
        );
        cpu_allocatable.push((labels.clone(), cores(cpu)));
        memory_allocatable.push((labels.clone(), memory.to_string()));
        cpu_requested.push((labels.clone(), cores(inventory.requested.cpu_millis)));
        memory_requested.push((labels.clone(), inventory.requested.memory_bytes.to_string()));
        let serving = inventory
            .workloads
            .iter()
            .filter(|w| w.replicas > 0)
            .count();
        workloads.push((labels.clone(), serving.to_string()));
        cost.push((labels, format!("{:.2}", member.monthly_run_rate(inventory))));
    }
    for (name, kind, help, samples) in [
        (
            "ferry_cluster_up",
            "gauge",
            "1 when the member answered its last inventory, 0 when it did not.",
            &up,
        ),
        (
            "ferry_cluster_cpu_allocatable_cores",
            "gauge",
            "CPU the member offers to workloads (its Cluster file's capacity, else its nodes' allocatable).",
            &cpu_allocatable,
        ),
        (
            "ferry_cluster_cpu_requested_cores",
            "gauge",
            "CPU requested by the pods running on the member.",
            &cpu_requested,
        ),
        (
            "ferry_cluster_memory_allocatable_bytes",
            "gauge",
            "Memory the member offers to workloads (its Cluster file's capacity, else its nodes' allocatable).",
            &memory_allocatable,
        ),
        (
            "ferry_cluster_memory_requested_bytes",
            "gauge",
            "Memory requested by the pods running on the member.",
            &memory_requested,
        ),
        (
            "ferry_cluster_workloads",
            "gauge",
            "Workloads with at least one replica on the member.",
            &workloads,
        ),
        (
            "ferry_cluster_monthly_cost",
            "gauge",
            "The member's monthly run-rate at its current prices.",
            &cost,
        ),
    ] {
        family(&mut out, name, kind, help, samples);
    }

    let migrations = match state.engine.list() {
        Ok(migrations) => migrations,
        Err(error) => {
            tracing::warn!(%error, "metrics: the migrations could not be read");
            return out;
        }
    };
    let mut by_state = std::collections::BTreeMap::new();
    let mut steps: std::collections::BTreeMap<String, (u64, u64)> =
        std::collections::BTreeMap::new();
    for m in &migrations {
        // The API's spelling of the state (`done`, `rolledBack`), not Rust's.
        let state_name = serde_json::to_value(m.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("{:?}", m.state));
        *by_state.entry(state_name).or_insert(0u64) += 1;
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
    let by_state: Vec<(String, String)> = by_state
        .into_iter()
        .map(|(state, count)| {
            (
                format!("{{state=\"{}\"}}", label(&state)),
                count.to_string(),
            )
        })
        .collect();
    family(
        &mut out,
        "ferry_migrations",
        "gauge",
        "Migrations in the store, by state as the API spells it.",
        &by_state,
    );
    let name = "ferry_migration_step_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Durations of finished migration steps (whole seconds, from the journal)."
    );
    let _ = writeln!(out, "# TYPE {name} summary");
    for (step, (sum, count)) in steps {
        let step = label(&step);
        let _ = writeln!(out, "{name}_sum{{step=\"{step}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{step=\"{step}\"}} {count}");
    }
    super::controllers::metrics(&state.controllers.report(), &migrations, &mut out);
    out
}

/// Millicores as cores, exactly (`1500` is `1.5`).
fn cores(millis: u64) -> String {
    format!("{}", millis as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_format_says() {
        assert_eq!(label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(label("two\nlines"), "two\\nlines");
        assert_eq!(cores(1500), "1.5");
        assert_eq!(cores(0), "0");
    }
}
