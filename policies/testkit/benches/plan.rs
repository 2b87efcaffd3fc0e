//! Planning speed: 1,000 workloads over 20 clusters, 10,000 over 100 and 50,000 over
//! 200, fresh and rebalance. Run with `cargo bench -p ferry-policies-testkit --bench plan`;
//! figures and the machine are recorded in `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ferry_policies::engine::{Mode, plan};
use ferry_policies_testkit::{Instance, Shape, random_instance};

const SIZES: [(usize, usize); 3] = [(1_000, 20), (10_000, 100), (50_000, 200)];

/// A running federation: every workload where a fresh plan put it, except that every
/// fifth one runs on the next cluster over, so rebalancing has moves to weigh.
fn running(instance: &Instance) -> Instance {
    let mut running = Instance {
        clusters: instance.clusters.clone(),
        workloads: instance.workloads.clone(),
        policies: instance.policies.clone(),
    };
    let fresh = plan(&instance.snapshot(), Mode::Fresh).expect("generated instances plan");
    let names: Vec<&str> = instance.clusters.iter().map(|c| c.name.as_str()).collect();
    for (index, workload) in running.workloads.iter_mut().enumerate() {
        let key = workload.key();
        let Some(placement) = fresh.placements.iter().find(|p| p.workload == key) else {
            continue;
        };
        let mut cluster = names
            .iter()
            .position(|n| *n == placement.cluster)
            .unwrap_or(0);
        if index % 5 == 0 {
            cluster = (cluster + 1) % names.len();
        }
        workload.current_cluster = Some(names[cluster].to_owned());
    }
    running
}

fn planning(c: &mut Criterion) {
    let mut group = c.benchmark_group("plan");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(1));
    for (workloads, clusters) in SIZES {
        let instance = random_instance(7, &Shape::scale(workloads, clusters));
        let label = format!("{workloads}x{clusters}");
        group.bench_with_input(
            BenchmarkId::new("fresh", &label),
            &instance,
            |b, instance| {
                b.iter(|| plan(black_box(&instance.snapshot()), Mode::Fresh).expect("plans"))
            },
        );
        let running = running(&instance);
        group.bench_with_input(
            BenchmarkId::new("rebalance", &label),
            &running,
            |b, running| {
                b.iter(|| plan(black_box(&running.snapshot()), Mode::Rebalance).expect("plans"))
            },
        );
    }
    group.finish();
}

criterion_group!(benches, planning);
criterion_main!(benches);
