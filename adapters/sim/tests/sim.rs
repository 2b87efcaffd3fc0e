//! The sim through its ports, with a paused clock wherever time matters.

use std::time::Duration;

use ferry_adapter_sim::{
    Fault, FaultKind, MAX_NODES, MAX_REPLICAS, SimCluster, SimClusterSpec, SimPrices,
    SimProvisioner,
};
use ferry_ports::{
    ClusterPort, ExportedWorkload, Health, Mark, Operation, PortError, PriceSource, Provisioner,
    Resources, Rollout, RunningWorkload, WorkloadFate, WorkloadKey,
};
use serde_json::{Value, json};
use tokio::time::{Instant, advance};

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const ROLLOUT: Duration = Duration::from_secs(10);
const MS: Duration = Duration::from_millis(1);

fn res(cpu_millis: u64, memory_bytes: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes,
    }
}

fn key(name: &str) -> WorkloadKey {
    WorkloadKey::new("shop", name)
}

fn mark(migration: &str) -> Mark {
    Mark {
        migration: migration.to_owned(),
    }
}

fn cluster(nodes: u32, node: Resources) -> SimCluster {
    SimCluster::new(SimClusterSpec::new("east", nodes, node, ROLLOUT))
}

/// A workload as another cluster exports it.
async fn exported(name: &str, replicas: u32, requests: Resources) -> ExportedWorkload {
    let source = SimCluster::new(SimClusterSpec::new(
        "source",
        1,
        res(u64::MAX, u64::MAX),
        Duration::ZERO,
    ));
    source
        .run(key(name), [("app", name)], replicas, requests)
        .expect("seeds");
    source.export(&key(name)).await.expect("exports")
}

fn running(cluster: &SimCluster, name: &str) -> Option<RunningWorkload> {
    cluster
        .snapshot()
        .workloads
        .into_iter()
        .find(|workload| workload.key == key(name))
}

async fn rollout(cluster: &SimCluster, name: &str) -> Rollout {
    cluster.rollout(&key(name)).await.expect("rollout")
}

fn progressing(desired: u32, available: u32, message: &str) -> Rollout {
    Rollout::Progressing {
        desired,
        available,
        message: message.to_owned(),
    }
}

/// The paused clock's timer wheel counts whole milliseconds.
fn took(started: Instant, expected: Duration, what: &str) {
    let elapsed = started.elapsed();
    assert!(
        elapsed >= expected && elapsed <= expected + MS,
        "{what}: took {elapsed:?}, not {expected:?}"
    );
}

// ---- packing ----

#[tokio::test(start_paused = true)]
async fn replicas_are_packed_onto_nodes_and_the_rest_pend() {
    // (case, nodes, per node, replicas, requests, placed)
    let cases = [
        ("all fit", 4, res(4000, 8 * GI), 3, res(1000, GI), 3),
        ("cpu bound", 2, res(2000, 8 * GI), 5, res(1000, GI), 4),
        ("memory bound", 2, res(8000, 2 * GI), 5, res(500, GI), 4),
        ("exact fit", 1, res(1000, GI), 1, res(1000, GI), 1),
        (
            "bigger than any node",
            4,
            res(1000, 8 * GI),
            2,
            res(2000, GI),
            0,
        ),
        ("no nodes", 0, res(4000, 8 * GI), 2, res(100, MI), 0),
        ("no requests", 1, res(1000, GI), 50, res(0, 0), 50),
    ];
    for (case, nodes, node, replicas, requests, placed) in cases {
        let sim = cluster(nodes, node);
        sim.run(key("web"), [("app", "web")], replicas, requests)
            .expect("seeds");
        let inventory = sim.snapshot();
        assert_eq!(inventory.health, Health::Ready, "{case}");
        assert_eq!(inventory.nodes, nodes, "{case}");
        assert_eq!(inventory.allocatable, node.times(nodes), "{case}");
        assert_eq!(inventory.requested, requests.times(placed), "{case}");
        let web = &inventory.workloads[0];
        assert_eq!(
            (web.replicas, web.available_replicas),
            (replicas, placed),
            "{case}"
        );
        match rollout(&sim, "web").await {
            Rollout::Available { replicas: count } => {
                assert_eq!((count, placed), (replicas, replicas), "{case}")
            }
            Rollout::Progressing { available, .. } => assert_eq!(available, placed, "{case}"),
            other => panic!("{case}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn replicas_spread_to_the_node_with_most_room_like_kube_scheduler() {
    // Best fit would put both 2-cpu replicas on one node and leave 4 cpu for the third
    // workload; spreading (LeastAllocated) leaves 2 cpu on each node, as a real cluster
    // would.
    let sim = cluster(2, res(4000, 16 * GI));
    sim.run(key("a"), [("app", "a")], 2, res(2000, GI))
        .expect("seeds");
    sim.run(key("b"), [("app", "b")], 1, res(3000, GI))
        .expect("seeds");
    assert_eq!(
        rollout(&sim, "b").await,
        progressing(
            1,
            0,
            "1 of 1 replicas pending: 0/2 nodes have 3 cpu and 1Gi memory free (2 insufficient cpu); 0 of 1 available"
        )
    );
}

#[tokio::test(start_paused = true)]
async fn a_pending_rollout_says_which_resource_is_short() {
    struct Case {
        case: &'static str,
        nodes: u32,
        node: Resources,
        /// Seeded first: (replicas, requests) of each.
        fillers: Vec<(u32, Resources)>,
        replicas: u32,
        requests: Resources,
        message: &'static str,
    }
    let cases = [
        Case {
            case: "cpu",
            nodes: 4,
            node: res(1000, 8 * GI),
            fillers: vec![],
            replicas: 3,
            requests: res(2000, GI),
            message: "3 of 3 replicas pending: 0/4 nodes have 2 cpu and 1Gi memory free (4 insufficient cpu); 0 of 3 available",
        },
        Case {
            case: "memory",
            nodes: 4,
            node: res(8000, 512 * MI),
            fillers: vec![],
            replicas: 1,
            requests: res(500, GI),
            message: "1 of 1 replicas pending: 0/4 nodes have 500m cpu and 1Gi memory free (4 insufficient memory); 0 of 1 available",
        },
        Case {
            case: "cpu on one node, memory on the other",
            nodes: 2,
            node: res(2000, 2 * GI),
            fillers: vec![(1, res(1500, 256 * MI)), (1, res(100, 1792 * MI))],
            replicas: 1,
            requests: res(1000, GI),
            message: "1 of 1 replicas pending: 0/2 nodes have 1 cpu and 1Gi memory free (1 insufficient cpu, 1 insufficient memory); 0 of 1 available",
        },
        Case {
            case: "some placed",
            nodes: 1,
            node: res(3000, 8 * GI),
            fillers: vec![],
            replicas: 4,
            requests: res(1000, GI),
            message: "1 of 4 replicas pending: 0/1 nodes have 1 cpu and 1Gi memory free (1 insufficient cpu); 3 of 4 available",
        },
        Case {
            case: "no nodes",
            nodes: 0,
            node: res(3000, 8 * GI),
            fillers: vec![],
            replicas: 1,
            requests: res(100, 64 * MI),
            message: "1 of 1 replicas pending: 0/0 nodes have 100m cpu and 64Mi memory free (no nodes); 0 of 1 available",
        },
    ];
    for Case {
        case,
        nodes,
        node,
        fillers,
        replicas,
        requests,
        message,
    } in cases
    {
        let sim = cluster(nodes, node);
        for (index, &(count, need)) in fillers.iter().enumerate() {
            let name = format!("filler-{index}");
            sim.run(key(&name), [("app", name.as_str())], count, need)
                .expect("seeds");
        }
        sim.run(key("web"), [("app", "web")], replicas, requests)
            .expect("seeds");
        let Rollout::Progressing {
            desired,
            message: got,
            ..
        } = rollout(&sim, "web").await
        else {
            panic!("{case}: not progressing");
        };
        assert_eq!(desired, replicas, "{case}");
        assert_eq!(got, message, "{case}");
    }
}

#[tokio::test(start_paused = true)]
async fn pending_replicas_are_placed_when_a_scale_down_frees_room() {
    let sim = cluster(1, res(4000, 8 * GI));
    sim.run(key("big"), [("app", "big")], 3, res(1000, GI))
        .expect("seeds");
    let start = Instant::now();
    sim.apply(&exported("new", 2, res(1000, GI)).await, &mark("m1"))
        .await
        .expect("applies");
    assert_eq!(
        rollout(&sim, "new").await,
        progressing(
            2,
            0,
            "1 of 2 replicas pending: 0/1 nodes have 1 cpu and 1Gi memory free (1 insufficient cpu); 1 of 2 replicas starting; 0 of 2 available"
        )
    );
    advance(Duration::from_secs(5)).await;
    sim.scale(&key("big"), 1, None).await.expect("scales");
    advance(Duration::from_secs(5)).await;
    assert_eq!(
        rollout(&sim, "new").await,
        progressing(2, 1, "1 of 2 replicas starting; 1 of 2 available"),
        "the late replica was placed 5 s after the apply"
    );
    advance(Duration::from_secs(5)).await;
    assert_eq!(
        rollout(&sim, "new").await,
        Rollout::Available { replicas: 2 }
    );
    assert_eq!(start.elapsed(), Duration::from_secs(15));
    assert_eq!(sim.snapshot().requested, res(3000, 3 * GI));
}

#[tokio::test(start_paused = true)]
async fn pending_replicas_are_placed_when_a_delete_frees_room() {
    let sim = cluster(1, res(2000, 8 * GI));
    sim.apply(&exported("old", 2, res(1000, GI)).await, &mark("m1"))
        .await
        .expect("applies");
    sim.apply(&exported("new", 1, res(1000, GI)).await, &mark("m2"))
        .await
        .expect("applies");
    assert_eq!(running(&sim, "new").map(|w| w.replicas), Some(1));
    advance(ROLLOUT).await;
    assert!(matches!(
        rollout(&sim, "new").await,
        Rollout::Progressing { available: 0, .. }
    ));
    sim.delete(&key("old"), &[], &mark("m1"))
        .await
        .expect("deletes");
    advance(ROLLOUT).await;
    assert_eq!(
        rollout(&sim, "new").await,
        Rollout::Available { replicas: 1 }
    );
}

#[tokio::test(start_paused = true)]
async fn the_scheduler_serves_first_come_first_and_small_ones_pass_a_stuck_big_one() {
    let sim = cluster(1, res(3000, 8 * GI));
    sim.run(key("filler"), [("app", "filler")], 3, res(1000, GI))
        .expect("seeds");
    // Arrival order differs from key order, so that first come first served shows.
    for (name, cpu) in [("a-big", 1500), ("z-first", 600), ("m-second", 600)] {
        sim.apply(&exported(name, 1, res(cpu, GI)).await, &mark("m"))
            .await
            .expect("applies");
    }
    // 1 cpu frees: the big one still does not fit, the first small one that came goes,
    // and there is no room left for the second.
    sim.scale(&key("filler"), 2, None).await.expect("scales");
    advance(ROLLOUT).await;
    let available = |name: &str| running(&sim, name).map(|w| w.available_replicas);
    assert_eq!(
        [
            available("a-big"),
            available("z-first"),
            available("m-second")
        ],
        [Some(0), Some(1), Some(0)]
    );
    sim.scale(&key("filler"), 0, None).await.expect("scales");
    advance(ROLLOUT).await;
    assert_eq!(
        [
            available("a-big"),
            available("z-first"),
            available("m-second")
        ],
        [Some(1), Some(1), Some(1)]
    );
}

// ---- apply and rollout timing ----

#[tokio::test(start_paused = true)]
async fn a_rollout_becomes_available_rollout_time_after_the_apply() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.apply(&exported("web", 2, res(500, 256 * MI)).await, &mark("m1"))
        .await
        .expect("applies");
    assert_eq!(
        rollout(&sim, "web").await,
        progressing(2, 0, "2 of 2 replicas starting; 0 of 2 available")
    );
    advance(ROLLOUT - MS).await;
    assert!(matches!(
        rollout(&sim, "web").await,
        Rollout::Progressing { available: 0, .. }
    ));
    advance(MS).await;
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 2 }
    );
    let web = running(&sim, "web").expect("runs");
    assert_eq!(web.mark, Some(mark("m1")));
    assert_eq!(web.available_replicas, 2);
}

#[tokio::test(start_paused = true)]
async fn applying_the_same_again_changes_nothing() {
    let sim = cluster(2, res(4000, 8 * GI));
    let web = exported("web", 2, res(500, 256 * MI)).await;
    sim.apply(&web, &mark("m1")).await.expect("applies");
    advance(ROLLOUT / 2).await;
    let before = sim.snapshot();
    sim.apply(&web, &mark("m1")).await.expect("applies again");
    assert_eq!(sim.snapshot(), before);
    advance(ROLLOUT / 2).await;
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 2 },
        "the rollout clock was not restarted"
    );
    assert_eq!(sim.export(&key("web")).await.expect("exports"), web);

    // Another migration taking it over with the same content restarts nothing either.
    sim.apply(&web, &mark("m2")).await.expect("applies");
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 2 }
    );
    assert_eq!(running(&sim, "web").and_then(|w| w.mark), Some(mark("m2")));
}

#[tokio::test(start_paused = true)]
async fn applying_more_replicas_starts_only_the_added_ones() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.apply(&exported("web", 2, res(500, 256 * MI)).await, &mark("m1"))
        .await
        .expect("applies");
    advance(ROLLOUT).await;
    sim.apply(&exported("web", 3, res(500, 256 * MI)).await, &mark("m1"))
        .await
        .expect("applies");
    assert_eq!(
        rollout(&sim, "web").await,
        progressing(3, 2, "1 of 3 replicas starting; 2 of 3 available")
    );
    advance(ROLLOUT).await;
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 3 }
    );
}

#[tokio::test(start_paused = true)]
async fn a_changed_pod_template_replaces_every_replica() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.apply(&exported("web", 2, res(500, 256 * MI)).await, &mark("m1"))
        .await
        .expect("applies");
    advance(ROLLOUT).await;
    sim.apply(&exported("web", 2, res(1000, 512 * MI)).await, &mark("m1"))
        .await
        .expect("applies");
    assert_eq!(
        rollout(&sim, "web").await,
        progressing(2, 0, "2 of 2 replicas starting; 0 of 2 available")
    );
    assert_eq!(sim.snapshot().requested, res(2000, GI));
    advance(ROLLOUT).await;
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 2 }
    );
}

#[tokio::test(start_paused = true)]
async fn apply_refuses_to_overwrite_a_workload_ferry_does_not_own() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.run(key("web"), [("app", "web")], 1, res(100, MI))
        .expect("seeds");
    let before = sim.snapshot();
    let error = sim
        .apply(&exported("web", 2, res(500, 256 * MI)).await, &mark("m1"))
        .await
        .expect_err("conflicts");
    assert!(
        matches!(&error, PortError::Conflict { reason, .. } if reason.contains("without a Ferry mark")),
        "{error}"
    );
    assert_eq!(sim.snapshot(), before);
}

#[tokio::test(start_paused = true)]
async fn apply_rejects_what_an_api_server_would() {
    let web = exported("web", 1, res(500, 256 * MI)).await;
    type Edit = fn(&mut Vec<Value>);
    let cases: [(&str, Edit, &str); 6] = [
        (
            "no Deployment",
            |objects| objects.retain(|o| o["kind"] != "Deployment"),
            "no Deployment shop/web among the objects",
        ),
        (
            "uid left in",
            |objects| objects[1]["metadata"]["uid"] = json!("3f1c"),
            "Deployment web was not cleaned: metadata.uid",
        ),
        (
            "resourceVersion left in",
            |objects| objects[2]["metadata"]["resourceVersion"] = json!("812"),
            "Service web was not cleaned: metadata.resourceVersion",
        ),
        (
            "another namespace",
            |objects| objects[2]["metadata"]["namespace"] = json!("bank"),
            "Service bank/web is outside the workload's namespace shop",
        ),
        (
            "no kind",
            |objects| {
                if let Some(fields) = objects[0].as_object_mut() {
                    fields.remove("kind");
                }
            },
            "object 0 has no kind",
        ),
        (
            "not an object",
            |objects| objects.push(json!("text")),
            "object 3 is not a JSON object",
        ),
    ];
    for (case, edit, reason) in cases {
        let sim = cluster(2, res(4000, 8 * GI));
        let mut bad = web.clone();
        edit(&mut bad.objects);
        let error = sim.apply(&bad, &mark("m1")).await.expect_err(case);
        assert!(
            matches!(&error, PortError::Rejected { reason: got, .. } if got.starts_with(reason)),
            "{case}: {error}"
        );
        assert!(sim.snapshot().workloads.is_empty(), "{case}");
    }
}

// ---- faults ----

#[tokio::test(start_paused = true)]
async fn an_unreachable_cluster_fails_every_call_until_cleared() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.run(key("web"), [("app", "web")], 1, res(100, MI))
        .expect("seeds");
    let web = sim.export(&key("web")).await.expect("exports");
    sim.set_fault(Fault::Unreachable);
    let results: [(&str, Result<(), PortError>); 6] = [
        ("inventory", sim.inventory().await.map(drop)),
        ("export", sim.export(&key("web")).await.map(drop)),
        ("apply", sim.apply(&web, &mark("m1")).await),
        ("rollout", sim.rollout(&key("web")).await.map(drop)),
        ("scale", sim.scale(&key("web"), 2, None).await),
        (
            "delete",
            sim.delete(&key("web"), &[], &mark("m1")).await.map(drop),
        ),
    ];
    for (call, result) in results {
        let error = result.expect_err(call);
        assert!(
            matches!(&error, PortError::Unreachable { cluster, .. } if cluster == "east"),
            "{call}: {error}"
        );
        assert!(error.is_transient(), "{call}");
    }
    let seen = sim.snapshot();
    assert_eq!(seen.health, Health::Unreachable);
    assert_eq!(seen.workloads.len(), 1, "nothing changed behind the fault");
    sim.clear_fault(FaultKind::Unreachable);
    assert_eq!(
        sim.inventory().await.expect("answers").health,
        Health::Ready
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejecting_cluster_refuses_apply_only() {
    let sim = cluster(2, res(4000, 8 * GI));
    let web = exported("web", 1, res(100, MI)).await;
    sim.set_fault(Fault::RejectApply(
        "admission webhook \"policy\" denied the request".to_owned(),
    ));
    let error = sim.apply(&web, &mark("m1")).await.expect_err("rejected");
    assert!(
        matches!(&error, PortError::Rejected { what, reason, .. }
            if what == "apply of shop/web" && reason.contains("denied the request")),
        "{error}"
    );
    assert!(!error.is_transient());
    assert!(sim.inventory().await.expect("answers").workloads.is_empty());
    sim.clear_faults();
    assert!(sim.faults().is_empty());
    sim.apply(&web, &mark("m1")).await.expect("applies");
}

#[tokio::test(start_paused = true)]
async fn a_rollout_that_never_becomes_available_fails_at_its_deadline() {
    let sim = SimCluster::new(
        SimClusterSpec::new("east", 2, res(4000, 8 * GI), ROLLOUT)
            .with_progress_deadline(Duration::from_secs(30)),
    );
    sim.run(key("seeded"), [("app", "seeded")], 1, res(100, MI))
        .expect("seeds");
    sim.set_fault(Fault::RolloutNeverAvailable);
    sim.apply(&exported("web", 2, res(500, MI)).await, &mark("m1"))
        .await
        .expect("applies");
    advance(Duration::from_secs(30)).await;
    assert_eq!(
        rollout(&sim, "web").await,
        progressing(
            2,
            0,
            "2 of 2 replicas not ready (failing readiness probe); 0 of 2 available"
        )
    );
    advance(MS).await;
    let Rollout::Failed { reason } = rollout(&sim, "web").await else {
        panic!("not failed");
    };
    assert_eq!(
        reason,
        "progress deadline exceeded (no progress for 30s): 2 of 2 replicas not ready (failing readiness probe); 0 of 2 available"
    );
    assert_eq!(
        rollout(&sim, "seeded").await,
        Rollout::Available { replicas: 1 },
        "what already ran is not affected"
    );

    // Fixed: the replicas restart and become available a rollout time later.
    sim.clear_fault(FaultKind::RolloutNeverAvailable);
    advance(ROLLOUT - MS).await;
    assert!(matches!(rollout(&sim, "web").await, Rollout::Failed { .. }));
    advance(MS).await;
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 2 }
    );
}

#[tokio::test(start_paused = true)]
async fn the_fault_stops_replicas_that_are_still_starting_but_not_available_ones() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.apply(&exported("web", 2, res(500, MI)).await, &mark("m1"))
        .await
        .expect("applies");
    advance(ROLLOUT).await;
    sim.scale(&key("web"), 4, None).await.expect("scales");
    sim.set_fault(Fault::RolloutNeverAvailable);
    advance(ROLLOUT * 2).await;
    assert_eq!(
        rollout(&sim, "web").await,
        progressing(
            4,
            2,
            "2 of 4 replicas not ready (failing readiness probe); 2 of 4 available"
        )
    );
    // Default deadline: 10 × rollout time since the scale-up.
    advance(ROLLOUT * 8).await;
    assert!(matches!(
        rollout(&sim, "web").await,
        Rollout::Progressing { .. }
    ));
    advance(MS).await;
    assert!(matches!(rollout(&sim, "web").await, Rollout::Failed { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_slow_api_adds_its_latency_to_every_call() {
    let latency = Duration::from_millis(20);
    let sim = SimCluster::new(
        SimClusterSpec::new("east", 2, res(4000, 8 * GI), ROLLOUT).with_api_latency(latency),
    );
    sim.run(key("web"), [("app", "web")], 1, res(100, MI))
        .expect("seeds");
    let slow = Duration::from_millis(300);
    for (fault, expected) in [(None, latency), (Some(slow), latency + slow)] {
        sim.clear_faults();
        if let Some(extra) = fault {
            sim.set_fault(Fault::SlowApi(extra));
            assert_eq!(sim.faults(), vec![Fault::SlowApi(extra)]);
        }
        let started = Instant::now();
        sim.inventory().await.expect("answers");
        took(started, expected, "inventory");
        let started = Instant::now();
        sim.rollout(&key("web")).await.expect("answers");
        took(started, expected, "rollout");
        let started = Instant::now();
        sim.scale(&key("web"), 1, None).await.expect("answers");
        took(started, expected, "scale");
    }
}

#[tokio::test(start_paused = true)]
async fn faults_combine_and_clear_one_kind_at_a_time() {
    let sim = cluster(1, res(1000, GI));
    sim.set_fault(Fault::SlowApi(Duration::from_secs(1)));
    sim.set_fault(Fault::Unreachable);
    sim.set_fault(Fault::SlowApi(Duration::from_secs(2)));
    assert_eq!(
        sim.faults(),
        vec![Fault::Unreachable, Fault::SlowApi(Duration::from_secs(2))]
    );
    let started = Instant::now();
    assert!(sim.inventory().await.is_err());
    took(started, Duration::from_secs(2), "slow, then refused");
    sim.clear_fault(FaultKind::Unreachable);
    assert_eq!(sim.faults(), vec![Fault::SlowApi(Duration::from_secs(2))]);
    assert!(sim.inventory().await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn replicas_pending_past_the_deadline_fail_the_rollout_too() {
    // As on a real cluster: an unschedulable rollout exceeds its progress deadline.
    let sim = cluster(1, res(1000, 8 * GI));
    sim.apply(&exported("web", 1, res(2000, GI)).await, &mark("m1"))
        .await
        .expect("applies");
    advance(ROLLOUT * 10 + MS).await;
    let Rollout::Failed { reason } = rollout(&sim, "web").await else {
        panic!("not failed");
    };
    assert_eq!(
        reason,
        "progress deadline exceeded (no progress for 100s): 1 of 1 replicas pending: 0/1 nodes have 2 cpu and 1Gi memory free (1 insufficient cpu); 0 of 1 available"
    );
}

// ---- ownership: delete and scale ----

#[tokio::test(start_paused = true)]
async fn delete_removes_only_what_carries_the_mark() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.run(key("users"), [("app", "users")], 1, res(100, MI))
        .expect("seeds");
    sim.apply(&exported("web", 2, res(500, MI)).await, &mark("m1"))
        .await
        .expect("applies");
    let cases = [
        ("users", "m1", WorkloadFate::Left { holder: None }),
        (
            "web",
            "m2",
            WorkloadFate::Left {
                holder: Some(mark("m1")),
            },
        ),
        ("web", "m1", WorkloadFate::Deleted),
        ("web", "m1", WorkloadFate::Absent),
        ("absent", "m1", WorkloadFate::Absent),
    ];
    for (name, migration, fate) in cases {
        let removal = sim
            .delete(&key(name), &[], &mark(migration))
            .await
            .expect(name);
        let stays = matches!(fate, WorkloadFate::Left { .. });
        assert_eq!(removal.workload, fate, "{name} {migration}");
        assert_eq!(running(&sim, name).is_some(), stays, "{name} {migration}");
    }
    assert_eq!(sim.snapshot().requested, res(100, MI));
}

#[tokio::test(start_paused = true)]
async fn a_drain_marks_the_workload_and_makes_it_ferrys_to_delete() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.run(key("web"), [("app", "web")], 3, res(500, MI))
        .expect("seeds");
    sim.scale(&key("web"), 0, Some(&mark("m1")))
        .await
        .expect("drains");
    let web = running(&sim, "web").expect("stays");
    assert_eq!(
        (web.replicas, web.available_replicas, web.mark),
        (0, 0, Some(mark("m1")))
    );
    assert_eq!(sim.snapshot().requested, Resources::default());
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 0 }
    );
    let export = sim.export(&key("web")).await.expect("exports");
    assert_eq!(export.objects[1]["spec"]["replicas"], json!(0));
    sim.delete(&key("web"), &[], &mark("m1"))
        .await
        .expect("deletes");
    assert!(running(&sim, "web").is_none());
}

#[tokio::test(start_paused = true)]
async fn scaling_up_restarts_timing_for_the_added_replicas_only_and_keeps_ownership() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.run(key("web"), [("app", "web")], 2, res(500, MI))
        .expect("seeds");
    sim.scale(&key("web"), 0, Some(&mark("m1")))
        .await
        .expect("drains");
    // A rollback restores the replicas without changing who owns the workload.
    sim.scale(&key("web"), 4, None).await.expect("restores");
    assert_eq!(
        rollout(&sim, "web").await,
        progressing(4, 0, "4 of 4 replicas starting; 0 of 4 available")
    );
    advance(ROLLOUT).await;
    sim.scale(&key("web"), 6, None).await.expect("scales");
    assert_eq!(
        rollout(&sim, "web").await,
        progressing(6, 4, "2 of 6 replicas starting; 4 of 6 available")
    );
    // Scaling down removes the replicas that are not available yet first.
    sim.scale(&key("web"), 4, None).await.expect("scales");
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 4 }
    );
    let web = running(&sim, "web").expect("runs");
    assert_eq!(web.mark, Some(mark("m1")));
    assert_eq!(sim.snapshot().requested, res(2000, 4 * MI));
    let export = sim.export(&key("web")).await.expect("exports");
    assert_eq!(export.replicas, 4);
    assert_eq!(export.objects[1]["spec"]["replicas"], json!(4));
}

#[tokio::test(start_paused = true)]
async fn scale_and_rollout_of_an_absent_workload_are_not_found() {
    let sim = cluster(1, res(1000, GI));
    let scale = sim.scale(&key("ghost"), 1, None).await;
    assert!(
        matches!(&scale, Err(PortError::NotFound { what, .. }) if what == "workload shop/ghost"),
        "{scale:?}"
    );
    assert!(matches!(
        sim.rollout(&key("ghost")).await,
        Err(PortError::NotFound { .. })
    ));
    assert!(matches!(
        sim.export(&key("ghost")).await,
        Err(PortError::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn replica_counts_beyond_the_model_are_rejected() {
    let sim = cluster(1, res(1000, GI));
    assert!(matches!(
        sim.run(key("web"), [("app", "web")], MAX_REPLICAS + 1, res(0, 0)),
        Err(PortError::Rejected { .. })
    ));
    sim.run(key("web"), [("app", "web")], 1, res(0, 0))
        .expect("seeds");
    assert!(matches!(
        sim.scale(&key("web"), u32::MAX, None).await,
        Err(PortError::Rejected { .. })
    ));
}

// ---- export ----

fn keys_anywhere(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (name, inner) in fields {
                found.push(name.clone());
                keys_anywhere(inner, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| keys_anywhere(item, found)),
        _ => {}
    }
}

#[tokio::test(start_paused = true)]
async fn export_is_a_cleaned_namespace_deployment_and_service() {
    let sim = cluster(2, res(4000, 8 * GI));
    sim.run(
        key("web"),
        [("app", "storefront"), ("tier", "frontend")],
        3,
        res(500, 256 * MI),
    )
    .expect("seeds");
    let export = sim.export(&key("web")).await.expect("exports");
    assert_eq!(export.key, key("web"));
    assert_eq!(export.replicas, 3);
    assert_eq!(export.requests, res(500, 256 * MI));
    assert_eq!(export.labels.len(), 2);
    let kinds: Vec<(&str, &str)> = export
        .objects
        .iter()
        .map(|o| {
            (
                o["apiVersion"].as_str().unwrap_or_default(),
                o["kind"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("v1", "Namespace"),
            ("apps/v1", "Deployment"),
            ("v1", "Service")
        ]
    );
    let [namespace, deployment, service] = &export.objects[..] else {
        panic!("three objects");
    };
    assert_eq!(namespace["metadata"], json!({ "name": "shop" }));
    assert_eq!(
        deployment["metadata"],
        json!({
            "name": "web",
            "namespace": "shop",
            "labels": { "app": "storefront", "tier": "frontend" },
        })
    );
    assert_eq!(deployment["spec"]["replicas"], json!(3));
    assert_eq!(
        deployment["spec"]["selector"],
        json!({ "matchLabels": { "app": "storefront" } })
    );
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"],
        json!({ "app": "storefront", "tier": "frontend" })
    );
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1);
    assert_eq!(
        containers[0]["resources"],
        json!({ "requests": { "cpu": "500m", "memory": "256Mi" } })
    );
    assert_eq!(service["metadata"]["namespace"], json!("shop"));
    assert_eq!(service["spec"]["selector"], json!({ "app": "storefront" }));
    let mut keys = Vec::new();
    for object in &export.objects {
        keys_anywhere(object, &mut keys);
    }
    for assigned in [
        "uid",
        "resourceVersion",
        "status",
        "creationTimestamp",
        "managedFields",
        "generation",
        "clusterIP",
    ] {
        assert!(!keys.iter().any(|k| k == assigned), "{assigned} is cleaned");
    }
}

#[tokio::test(start_paused = true)]
async fn export_writes_requests_as_kubernetes_quantities() {
    let cases = [
        (res(500, 256 * MI), "500m", "256Mi"),
        (res(1500, 1536 * MI), "1500m", "1536Mi"),
        (res(2000, GI), "2", "1Gi"),
        (res(250, 64 * 1024), "250m", "64Ki"),
        (res(1, 1000), "1m", "1000"),
    ];
    for (requests, cpu, memory) in cases {
        let export = exported("web", 1, requests).await;
        let deployment = &export.objects[1];
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"],
            json!({ "cpu": cpu, "memory": memory }),
            "{requests:?}"
        );
        // Without an `app` label, the selector uses the workload's name.
        assert_eq!(
            deployment["spec"]["selector"]["matchLabels"],
            json!({ "app": "web" })
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_workload_moves_between_sims_unchanged() {
    let west = SimCluster::new(SimClusterSpec::new("west", 2, res(4000, 8 * GI), ROLLOUT));
    let east = cluster(2, res(4000, 8 * GI));
    west.run(
        key("web"),
        [("app", "web"), ("tier", "fe")],
        2,
        res(500, MI),
    )
    .expect("seeds");
    let export = west.export(&key("web")).await.expect("exports");
    east.apply(&export, &mark("m1")).await.expect("applies");
    assert_eq!(east.export(&key("web")).await.expect("exports"), export);
    let moved = running(&east, "web").expect("runs");
    assert_eq!(moved.labels, export.labels);
    assert_eq!(moved.requests, export.requests);
}

// ---- inventory ----

#[tokio::test(start_paused = true)]
async fn inventory_lists_workloads_in_key_order_and_clones_share_the_cluster() {
    let sim = cluster(4, res(4000, 8 * GI));
    let other_handle = sim.clone();
    for name in ["zeta", "alpha", "mid"] {
        other_handle
            .run(key(name), [("app", name)], 1, res(100, MI))
            .expect("seeds");
    }
    let inventory = sim.inventory().await.expect("answers");
    let names: Vec<&str> = inventory
        .workloads
        .iter()
        .map(|w| w.key.name.as_str())
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    assert_eq!(inventory.requested, res(300, 3 * MI));
    assert_eq!(inventory.allocatable, res(16_000, 32 * GI));
    assert_eq!(sim.name(), "east");
}

// ---- provisioner ----

#[tokio::test(start_paused = true)]
async fn a_resize_runs_for_its_delay_then_the_new_nodes_take_pending_replicas() {
    let sim = cluster(1, res(2000, 4 * GI));
    let provider = SimProvisioner::new([sim.clone()], Duration::from_secs(60));
    sim.run(key("filler"), [("app", "filler")], 2, res(1000, GI))
        .expect("seeds");
    sim.apply(&exported("web", 2, res(1000, GI)).await, &mark("m1"))
        .await
        .expect("applies");
    let operation = provider.resize("east", 3).await.expect("starts");
    assert_eq!(
        operation,
        Operation::Running {
            id: "resize-east-1".to_owned(),
            progress: "resizing east from 1 to 3 nodes (0ns of 60s)".to_owned(),
        }
    );
    advance(Duration::from_secs(30)).await;
    assert_eq!(
        provider.operation("resize-east-1").await.expect("known"),
        Operation::Running {
            id: "resize-east-1".to_owned(),
            progress: "resizing east from 1 to 3 nodes (30s of 60s)".to_owned(),
        }
    );
    assert_eq!(
        sim.snapshot().nodes,
        1,
        "nodes join when the operation is done"
    );
    advance(Duration::from_secs(30)).await;
    assert_eq!(
        provider.operation("resize-east-1").await.expect("known"),
        Operation::Done {
            id: "resize-east-1".to_owned()
        }
    );
    let inventory = sim.snapshot();
    assert_eq!(inventory.nodes, 3);
    assert_eq!(inventory.allocatable, res(6000, 12 * GI));
    assert_eq!(inventory.requested, res(4000, 4 * GI));
    advance(ROLLOUT - MS).await;
    assert!(matches!(
        rollout(&sim, "web").await,
        Rollout::Progressing { available: 0, .. }
    ));
    advance(MS).await;
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 2 }
    );
}

#[tokio::test(start_paused = true)]
async fn removing_nodes_reschedules_their_replicas_and_a_finished_rollout_does_not_fail() {
    let sim = cluster(3, res(2000, 4 * GI));
    let provider = SimProvisioner::new([sim.clone()], Duration::ZERO);
    sim.run(key("web"), [("app", "web")], 3, res(1500, GI))
        .expect("seeds");
    let operation = provider.resize("east", 1).await.expect("resizes");
    assert!(matches!(operation, Operation::Done { .. }));
    let inventory = sim.snapshot();
    assert_eq!(inventory.nodes, 1);
    assert_eq!(inventory.requested, res(1500, GI));
    assert_eq!(inventory.workloads[0].available_replicas, 1);
    advance(ROLLOUT * 100).await;
    assert_eq!(
        rollout(&sim, "web").await,
        progressing(
            3,
            1,
            "2 of 3 replicas pending: 0/1 nodes have 1500m cpu and 1Gi memory free (1 insufficient cpu); 1 of 3 available"
        )
    );
    provider.resize("east", 3).await.expect("resizes");
    advance(ROLLOUT).await;
    assert_eq!(
        rollout(&sim, "web").await,
        Rollout::Available { replicas: 3 }
    );
}

#[tokio::test(start_paused = true)]
async fn the_provisioner_knows_only_its_clusters_and_operations() {
    let sim = cluster(1, res(1000, GI));
    let provider = SimProvisioner::new([sim], Duration::from_secs(5));
    assert!(matches!(
        provider.resize("nowhere", 2).await,
        Err(PortError::NotFound { cluster, .. }) if cluster == "nowhere"
    ));
    assert!(matches!(
        provider.operation("resize-east-9").await,
        Err(PortError::NotFound { .. })
    ));
    assert!(matches!(
        provider.resize("east", MAX_NODES + 1).await,
        Err(PortError::Rejected { .. })
    ));
    let ids: Vec<String> = [
        provider.resize("east", 2).await,
        provider.resize("east", 4).await,
    ]
    .into_iter()
    .map(|operation| match operation.expect("starts") {
        Operation::Running { id, .. } | Operation::Done { id } | Operation::Failed { id, .. } => id,
    })
    .collect();
    assert_eq!(ids, ["resize-east-1", "resize-east-2"]);
    advance(Duration::from_secs(5)).await;
    assert_eq!(
        provider.operation("resize-east-2").await.ok(),
        Some(Operation::Done {
            id: "resize-east-2".to_owned()
        })
    );
}

// ---- prices ----

#[tokio::test]
async fn prices_are_static_per_cluster() {
    let prices = SimPrices::new("EUR")
        .with_rate("east", 0.031, 0.004)
        .with_rate("west", 0.042, 0.0055);
    for (cluster, cpu, memory) in [("east", 0.031, 0.004), ("west", 0.042, 0.0055)] {
        let quote = prices.quote(cluster).await.expect("quoted");
        assert_eq!(quote.cpu_core_hour, cpu, "{cluster}");
        assert_eq!(quote.memory_gib_hour, memory, "{cluster}");
        assert_eq!(quote.currency, "EUR");
        assert_eq!(quote.source, "static");
        assert_eq!(quote.fallback_reason, None);
    }
    assert!(matches!(
        prices.quote("north").await,
        Err(PortError::NotFound { cluster, .. }) if cluster == "north"
    ));
}

#[test]
fn the_default_progress_deadline_is_ten_rollout_times_and_at_least_ten_seconds() {
    let node = res(1000, GI);
    for (rollout_time, configured, expected) in [
        (Duration::from_secs(30), None, Duration::from_secs(300)),
        (Duration::from_secs(2), None, Duration::from_secs(20)),
        (Duration::ZERO, None, Duration::from_secs(10)),
        (
            Duration::from_secs(30),
            Some(Duration::from_secs(5)),
            Duration::from_secs(5),
        ),
    ] {
        let mut spec = SimClusterSpec::new("east", 1, node, rollout_time);
        if let Some(deadline) = configured {
            spec = spec.with_progress_deadline(deadline);
        }
        assert_eq!(
            spec.effective_progress_deadline(),
            expected,
            "{rollout_time:?}"
        );
    }
}
