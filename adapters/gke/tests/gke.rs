//! GKE against the discovery document and a fake: fixtures checked against the schemas,
//! the typed values read from them, resize through the Provisioner, and following.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fake, discovery, json, schema_errors, test_key, token_answer};
use ferry_adapter_gke::{
    ClusterList, Error, Follow, Gke, GkeCluster, GkeNodePools, GkeOperation, OperationRef, PoolRef,
    TokenSource,
};
use ferry_ports::{Health, Operation, PortError, Provisioner};

const CLUSTER: &str = "v1/projects/ferry-test-project/locations/europe-west4/clusters/ferry-gke-a";

#[test]
fn fixtures_follow_the_discovery_schemas() {
    let container = discovery("container");
    let billing = discovery("cloudbilling");
    let cases = [
        ("container", "Cluster", "testdata/gke/cluster-regional.json"),
        (
            "container",
            "Cluster",
            "testdata/gke/cluster-provisioning.json",
        ),
        (
            "container",
            "ListClustersResponse",
            "testdata/gke/list-clusters-missing-zones.json",
        ),
        (
            "container",
            "Operation",
            "testdata/gke/operation-running.json",
        ),
        ("container", "Operation", "testdata/gke/operation-done.json"),
        (
            "container",
            "Operation",
            "testdata/gke/operation-done-error.json",
        ),
        (
            "cloudbilling",
            "ListSkusResponse",
            "testdata/catalog/skus-page-1.json",
        ),
        (
            "cloudbilling",
            "ListSkusResponse",
            "testdata/catalog/skus-page-2.json",
        ),
    ];
    for (api, schema, path) in cases {
        let errors = schema_errors(api, schema, &json(path));
        assert!(errors.is_empty(), "{path}: {errors:#?}");
    }
    // The checker catches what it is for.
    let bad = serde_json::json!({"clusters": [], "nextPageToken": "x"});
    assert_eq!(
        schema_errors("container", "ListClustersResponse", &bad).len(),
        1
    );
    let bad = serde_json::json!({"units": 0, "nanos": 1});
    assert_eq!(schema_errors("cloudbilling", "Money", &bad).len(), 1);

    // Facts the adapter relies on (data/gcp/README.md).
    let props = |doc: &serde_json::Value, name: &str| -> Vec<String> {
        let mut keys: Vec<String> = doc["schemas"][name]["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(
        props(&container, "ListClustersResponse"),
        ["clusters", "missingZones"]
    );
    assert_eq!(
        props(&container, "ListOperationsResponse"),
        ["missingZones", "operations"]
    );
    assert_eq!(
        props(&billing, "ListSkusResponse"),
        ["nextPageToken", "skus"]
    );
    assert_eq!(
        billing["schemas"]["Money"]["properties"]["units"]["format"],
        "int64"
    );
    assert_eq!(
        container["schemas"]["Operation"]["properties"]["status"]["enum"],
        serde_json::json!([
            "STATUS_UNSPECIFIED",
            "PENDING",
            "RUNNING",
            "DONE",
            "ABORTING"
        ])
    );
}

#[test]
fn clusters_become_typed_values() {
    let regional = GkeCluster::parse(common::read("testdata/gke/cluster-regional.json").as_bytes())
        .expect("a cluster");
    assert_eq!(regional.health, Health::Ready);
    assert_eq!(
        regional.endpoint_url.as_deref(),
        Some("https://34.90.12.34")
    );
    assert!(
        regional
            .ca_base64
            .as_deref()
            .is_some_and(|c| c.starts_with("LS0tLS1CRUdJTi"))
    );
    assert_eq!(regional.region(), "europe-west4");
    // (pool, machine type, family, spot, per zone, zones, nodes, autoscaling bounds)
    let pools = [
        (
            "general",
            "e2-standard-4",
            "e2",
            false,
            2,
            3,
            6,
            (Some(1), Some(5), None, None),
        ),
        (
            "batch-spot",
            "n2d-standard-8",
            "n2d",
            true,
            1,
            3,
            3,
            (None, None, Some(0), Some(12)),
        ),
    ];
    for (name, machine, family, spot, per_zone, zones, nodes, bounds) in pools {
        let pool = regional.node_pool(name).expect(name);
        assert_eq!(pool.machine_type, machine);
        assert_eq!(pool.family(), family);
        assert_eq!(pool.spot, spot, "{name}");
        assert_eq!(pool.nodes_per_zone, per_zone, "{name}");
        assert_eq!(pool.zones.len(), zones, "{name}");
        assert_eq!(pool.node_count(), nodes, "{name}");
        let a = pool.autoscaling.as_ref().expect("autoscaling");
        assert_eq!(
            (a.min_per_zone, a.max_per_zone, a.total_min, a.total_max),
            bounds,
            "{name}"
        );
    }
    struct Token;
    impl ferry_adapter_kubernetes::BearerToken for Token {
        fn current(&self) -> Result<String, String> {
            Ok("t".into())
        }
    }
    assert!(regional.credentials(Arc::new(Token)).is_some());

    let provisioning =
        GkeCluster::parse(common::read("testdata/gke/cluster-provisioning.json").as_bytes())
            .expect("a cluster");
    assert_eq!(provisioning.health, Health::Unreachable);
    assert_eq!(provisioning.region(), "us-central1");
    assert_eq!(provisioning.endpoint_url, None);
    assert!(provisioning.credentials(Arc::new(Token)).is_none());
    assert_eq!(provisioning.node_pools[0].node_count(), 3);

    let list = ClusterList::parse(
        common::read("testdata/gke/list-clusters-missing-zones.json").as_bytes(),
    )
    .expect("a list");
    assert!(list.is_partial());
    assert_eq!(list.missing_zones, ["asia-east1-a"]);
    let health: Vec<Health> = list.clusters.iter().map(|c| c.health).collect();
    assert_eq!(health, [Health::Degraded, Health::Degraded]);
}

#[test]
fn operations_become_typed_values() {
    let cases = [
        (
            "operation-running.json",
            false,
            None,
            "SET_NODE_POOL_SIZE RUNNING (NODES_DONE=2, NODES_TOTAL=9)",
        ),
        ("operation-done.json", true, None, "SET_NODE_POOL_SIZE DONE"),
        (
            "operation-done-error.json",
            true,
            Some(8),
            "SET_NODE_POOL_SIZE DONE",
        ),
    ];
    for (file, done, code, progress) in cases {
        let text = common::read(&format!("testdata/gke/{file}"));
        let op = GkeOperation::parse(text.as_bytes(), "p", "fallback").expect(file);
        assert_eq!(op.is_done(), done, "{file}");
        assert_eq!(op.error.as_ref().map(|e| e.code), code, "{file}");
        assert_eq!(op.progress(), progress, "{file}");
        assert_eq!(op.id.location, "europe-west4");
        let port = ferry_adapter_gke::to_port_operation(&op);
        match (code, done) {
            (Some(_), _) => assert!(
                matches!(&port, Operation::Failed { reason, .. } if reason.contains("Insufficient regional quota")),
                "{port:?}"
            ),
            (None, true) => assert!(matches!(port, Operation::Done { .. })),
            (None, false) => assert!(matches!(port, Operation::Running { .. })),
        }
    }
}

async fn client(fake: &Fake) -> Arc<Gke> {
    fake.on("POST /token", vec![token_answer("ya29.gke", 3600)]);
    let tokens = Arc::new(TokenSource::new(test_key(fake)).expect("tokens"));
    Arc::new(
        Gke::with_base_url(tokens, &fake.url(""))
            .expect("a client")
            .with_busy_delays(Duration::from_millis(50), Duration::from_millis(100))
            .with_change_wait(Duration::from_secs(5)),
    )
}

fn pool_json() -> String {
    json("testdata/gke/cluster-regional.json")["nodePools"][0].to_string()
}

#[tokio::test]
async fn a_resize_waits_out_a_busy_cluster_and_sends_nodes_per_zone() {
    let fake = Fake::start().await;
    let gke = client(&fake).await;
    fake.on(
        &format!("GET /{CLUSTER}/nodePools/general"),
        vec![(200, pool_json())],
    );
    let set_size = format!("POST /{CLUSTER}/nodePools/general:setSize");
    fake.on(
        &set_size,
        vec![
            (400, r#"{"error":{"code":400,"message":"Cluster is running incompatible operation operation-0.","status":"FAILED_PRECONDITION"}}"#.to_owned()),
            (200, common::read("testdata/gke/operation-running.json")),
        ],
    );
    let pools = GkeNodePools::new(gke.clone());
    pools.register(
        "gke-a",
        PoolRef::new("europe-west4", "ferry-gke-a", "general").expect("names"),
    );
    let operation = pools.resize("gke-a", 6).await.expect("accepted");
    let Operation::Running { id, .. } = &operation else {
        panic!("{operation:?}");
    };
    assert_eq!(
        id,
        "projects/ferry-test-project/locations/europe-west4/operations/operation-1761900000000-5f1a2b3c"
    );
    assert_eq!(fake.count(&set_size), 2);
    let sent: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.target.ends_with(":setSize"))
        .collect();
    let container = discovery("container");
    for request in &sent {
        let body: serde_json::Value = serde_json::from_str(&request.body).expect("JSON");
        assert_eq!(body, serde_json::json!({"nodeCount": 2}));
        assert!(schema_errors("container", "SetNodePoolSizeRequest", &body).is_empty());
        assert_eq!(request.authorization.as_deref(), Some("Bearer ya29.gke"));
    }
    // The path is the method's flatPath with the names filled in.
    let flat = container["resources"]["projects"]["resources"]["locations"]["resources"]["clusters"]
        ["resources"]["nodePools"]["methods"]["setSize"]["flatPath"]
        .as_str()
        .expect("flatPath")
        .replace("{projectsId}", "ferry-test-project")
        .replace("{locationsId}", "europe-west4")
        .replace("{clustersId}", "ferry-gke-a")
        .replace("{nodePoolsId}", "general");
    assert_eq!(sent[0].target, format!("/{flat}"));

    // 4 nodes do not divide over 3 zones: refused, nothing sent.
    let error = pools
        .resize("gke-a", 4)
        .await
        .expect_err("not a multiple of 3");
    assert!(
        matches!(&error, PortError::Rejected { reason, .. } if reason.contains("3 or 6 nodes")),
        "{error}"
    );
    assert_eq!(fake.count(&set_size), 2);
    let error = pools
        .resize("unknown", 3)
        .await
        .expect_err("not registered");
    assert!(matches!(error, PortError::Rejected { .. }));
}

#[tokio::test]
async fn following_ends_at_done_and_a_done_error_is_a_failure() {
    let fake = Fake::start().await;
    let gke = client(&fake).await;
    let id =
        OperationRef::parse("projects/ferry-test-project/locations/europe-west4/operations/op-1")
            .expect("an id");
    let path = "GET /v1/projects/ferry-test-project/locations/europe-west4/operations/op-1";
    let running = common::read("testdata/gke/operation-running.json");
    let follow = Follow {
        deadline: Duration::from_secs(5),
        first_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(50),
    };

    fake.on(
        path,
        vec![
            (200, running.clone()),
            (503, String::new()),
            (200, running.clone()),
            (200, common::read("testdata/gke/operation-done.json")),
        ],
    );
    let mut seen = Vec::new();
    let done = gke
        .follow(&id, &follow, |op| seen.push(op.progress()))
        .await
        .expect("done");
    assert!(done.is_done());
    assert_eq!(seen.len(), 2, "progress reported on change only: {seen:?}");

    fake.on(
        path,
        vec![
            (200, running.clone()),
            (200, common::read("testdata/gke/operation-done-error.json")),
        ],
    );
    let error = gke.follow(&id, &follow, |_| {}).await.expect_err("failed");
    assert!(
        matches!(&error, Error::OperationFailed { code: 8, message, .. } if message.contains("Insufficient regional quota")),
        "{error}"
    );

    fake.on(path, vec![(200, running)]);
    let short = Follow {
        deadline: Duration::from_millis(150),
        ..follow
    };
    let error = gke
        .follow(&id, &short, |_| {})
        .await
        .expect_err("times out");
    assert!(
        matches!(&error, Error::Timeout { last, .. } if last.contains("NODES_DONE=2")),
        "{error}"
    );

    let pools = GkeNodePools::new(gke.clone());
    fake.on(
        path,
        vec![(
            404,
            r#"{"error":{"code":404,"message":"Not found: op-1.","status":"NOT_FOUND"}}"#
                .to_owned(),
        )],
    );
    let error = pools.operation(&id.to_string()).await.expect_err("gone");
    assert!(matches!(error, PortError::NotFound { .. }), "{error}");
    assert!(pools.operation("europe-west4/op-1").await.is_err());
}

#[tokio::test]
async fn a_partial_list_says_so() {
    let fake = Fake::start().await;
    let gke = client(&fake).await;
    fake.on(
        "GET /v1/projects/ferry-test-project/locations/-/clusters",
        vec![(
            200,
            common::read("testdata/gke/list-clusters-missing-zones.json"),
        )],
    );
    let list = gke.list_clusters("-").await.expect("a list");
    assert!(list.is_partial());
    assert_eq!(list.clusters.len(), 2);
    let error = gke
        .cluster("europe-west4", "absent")
        .await
        .expect_err("404");
    assert!(matches!(error, Error::NotFound(_)), "{error}");
    assert!(gke.cluster("europe-west4", "../x").await.is_err());
}
