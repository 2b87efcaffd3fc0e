//! The broker as users meet it: the real `ferry` binary running `ferry demo` on a loopback
//! port, called over HTTP. The API end to end, the auth matrix, conflicts and bad input,
//! and the crash-safety of migrations (SIGKILL at every step boundary, then a restart on
//! the same data folder).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A `ferry demo` process; killed on drop.
struct Broker {
    child: Child,
    url: String,
    admin: String,
    data: PathBuf,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl Broker {
    fn start(data: &Path, pause_at: Option<&str>) -> Broker {
        Broker::start_with(data, pause_at, &[])
    }

    /// `ferry demo` with more arguments (a `--rollback-window` among them replaces the
    /// default of 0 s).
    fn start_with(data: &Path, pause_at: Option<&str>, extra: &[&str]) -> Broker {
        Broker::start_env(data, pause_at, extra, &[])
    }

    /// [`Broker::start_with`] with extra environment (test hooks).
    fn start_env(
        data: &Path,
        pause_at: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Broker {
        let mut command = Command::new(FERRY);
        command.envs(env.iter().copied());
        command.args(["demo", "--listen", "127.0.0.1:0"]);
        if !extra.contains(&"--rollout-time") {
            command.args(["--rollout-time", "1s"]);
        }
        if !extra.contains(&"--rollback-window") {
            command.args(["--rollback-window", "0s"]);
        }
        command
            .args(extra)
            .arg("--data")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(boundary) = pause_at {
            command.env("FERRY_TEST_PAUSE_AT", boundary);
        }
        let mut child = command.spawn().expect("start ferry demo");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (sender, stderr_lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut url = None;
        let mut admin = None;
        let mut lines = BufReader::new(stdout).lines();
        while url.is_none() || admin.is_none() {
            let line = lines
                .next()
                .expect("ferry demo printed its address and token")
                .expect("utf-8");
            if let Some(rest) = line.strip_prefix("ferry demo: listening on ") {
                url = Some(rest.trim().to_owned());
            }
            if let Some(rest) = line.trim().strip_prefix("admin token:") {
                admin = Some(rest.trim().to_owned());
            }
        }
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Broker {
            child,
            url: url.unwrap_or_default(),
            admin: admin.unwrap_or_default(),
            data: data.to_path_buf(),
            stderr: stderr_lines,
        }
    }

    fn viewer_token(&self) -> String {
        self.token("viewer", &[])
    }

    fn token(&self, role: &str, namespaces: &[&str]) -> String {
        let mut command = Command::new(FERRY);
        command.args([
            "token",
            "create",
            "--role",
            role,
            "--subject",
            &format!("test-{role}"),
        ]);
        command.arg("--data").arg(&self.data);
        for ns in namespaces {
            command.args(["--namespace", ns]);
        }
        let output = command.output().expect("ferry token create");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        // reqwest has rustls (the default `https` feature): it needs a provider.
        ferry_testenv::install_crypto_provider();
        let client = reqwest::blocking::Client::new();
        let mut request = client.request(
            method.parse().expect("method"),
            format!("{}{path}", self.url),
        );
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("the broker answers");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Like `call`, with a text body (YAML) sent as it is.
    fn call_text(&self, method: &str, path: &str, token: &str, text: &str) -> (u16, Value) {
        let response = reqwest::blocking::Client::new()
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.url),
            )
            .header("Authorization", format!("Bearer {token}"))
            .body(text.to_owned())
            .send()
            .expect("the broker answers");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, Some(&self.admin), None);
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    fn wait_for_final(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let m = self.get(&format!("/api/v1/migrations/{id}"));
            if matches!(
                m["state"].as_str(),
                Some("done" | "rolledBack" | "failed" | "cancelled")
            ) {
                return m;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "migration {id} did not end: {m}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_for_stderr(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(200))
                && line.contains(needle)
            {
                return;
            }
        }
        panic!("the broker never logged `{needle}`");
    }
}

/// Every copy of `workload` the simulated clusters hold (read from their saved state):
/// cluster, replicas, whether Ferry marked it.
fn copies(data: &Path, workload: &str) -> Vec<(String, u64, bool)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(data.join("sim")).expect("sim folder") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let cluster = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let saved: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        for w in saved.as_array().into_iter().flatten() {
            let key = format!(
                "{}/{}",
                w["key"]["namespace"].as_str().unwrap_or(""),
                w["key"]["name"].as_str().unwrap_or("")
            );
            if key == workload {
                found.push((
                    cluster.clone(),
                    w["replicas"].as_u64().unwrap_or(0),
                    !w["mark"].is_null(),
                ));
            }
        }
    }
    found.sort();
    found
}

/// Where a workload serves now, from the API.
fn serving(broker: &Broker, workload: &str) -> Vec<String> {
    let workloads = broker.get("/api/v1/workloads");
    workloads["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| {
            format!(
                "{}/{}",
                w["namespace"].as_str().unwrap_or(""),
                w["name"].as_str().unwrap_or("")
            ) == workload
        })
        .flat_map(|w| w["placements"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["cluster"].as_str().map(str::to_owned))
        .collect()
}

fn other_cluster(broker: &Broker, workload: &str) -> (String, String) {
    let from = serving(broker, workload)
        .pop()
        .expect("the workload serves somewhere");
    let clusters = broker.get("/api/v1/clusters");
    let to = clusters["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .find(|name| *name != from && !name.contains("us-"))
        .expect("another cluster")
        .to_owned();
    (from, to)
}

#[test]
fn api_end_to_end() {
    let data = temp_dir("e2e");
    let broker = Broker::start(&data, None);
    let clusters = broker.get("/api/v1/clusters");
    let names: Vec<&str> = clusters["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{clusters}");
    assert!(
        clusters["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|c| c["health"] == "Ready" && c["monthlyCost"].as_f64().is_some())
    );
    let workloads = broker.get("/api/v1/workloads");
    assert!(
        workloads["items"].as_array().expect("items").len() >= 15,
        "{workloads}"
    );
    let placements = broker.get("/api/v1/placements");
    assert!(
        placements["plan"]["placements"].is_array() && placements["current"].is_array(),
        "{placements}"
    );
    let openapi = broker.get("/api/v1/openapi.json");
    assert_eq!(openapi["openapi"], "3.0.3");
    // Every route of the spec's table is in the document...
    for (method, path) in [
        ("get", "/api/v1/clusters"),
        ("get", "/api/v1/workloads"),
        ("get", "/api/v1/placements"),
        ("post", "/api/v1/plan"),
        ("get", "/api/v1/policies"),
        ("put", "/api/v1/policies/{name}"),
        ("delete", "/api/v1/policies/{name}"),
        ("post", "/api/v1/migrations"),
        ("get", "/api/v1/migrations"),
        ("get", "/api/v1/migrations/{id}"),
        ("post", "/api/v1/migrations/{id}/cancel"),
        ("get", "/api/v1/events"),
        ("get", "/api/v1/audit"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ] {
        assert!(
            openapi["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    // ...and every route in the document is served (none falls through to "no such route").
    for (path, operations) in openapi["paths"].as_object().expect("paths") {
        for method in operations.as_object().expect("operations").keys() {
            if path == "/api/v1/events" {
                continue; // a stream: checked below
            }
            let concrete = path
                .replace("{name}", "no-such-policy")
                .replace("{id}", "no-such-migration");
            let body = (method != "get").then(|| json!({}));
            let (status, answer) = broker.call(
                &method.to_uppercase(),
                &concrete,
                Some(&broker.viewer_token()),
                body,
            );
            assert!(
                status != 405 && answer["error"]["message"] != "no such route",
                "{method} {path}: {status} {answer}"
            );
            assert!(status < 500, "{method} {path}: {status} {answer}");
        }
    }

    // Watch the event stream while a migration runs.
    let (events_sender, events) = mpsc::channel::<String>();
    let (url, admin) = (broker.url.clone(), broker.admin.clone());
    std::thread::spawn(move || {
        // reqwest has rustls (the default `https` feature): it needs a provider.
        ferry_testenv::install_crypto_provider();
        let response = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .expect("client")
            .get(format!("{url}/api/v1/events"))
            .header("Authorization", format!("Bearer {admin}"))
            .send()
            .expect("events");
        for line in BufReader::new(response).lines().map_while(Result::ok) {
            if events_sender.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    let workload = "shop/recommendations";
    let (from, to) = other_cluster(&broker, workload);
    let (status, created) = broker.call(
        "POST",
        "/api/v1/migrations",
        Some(&broker.admin),
        Some(json!({"workload": workload, "to": to, "dryRun": false})),
    );
    assert_eq!(status, 202, "{created}");
    assert_eq!(created["from"], from.as_str());
    let id = created["id"].as_str().expect("id").to_owned();
    let done = broker.wait_for_final(&id);
    assert_eq!(done["state"], "done", "{done}");
    let steps: Vec<(&str, &str)> = done["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("plan", "done"),
            ("prepare", "done"),
            ("start", "done"),
            ("drain", "done")
        ]
    );
    assert_eq!(serving(&broker, workload), std::slice::from_ref(&to));

    // The stream carried the steps and the end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline
        && !seen.iter().any(|l: &String| {
            l.contains(&id) && l.contains("\"done\"") && l.contains("migration.state")
        })
    {
        if let Ok(line) = events.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("migration.step") && l.contains(&id)),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("migration.state") && l.contains(&id) && l.contains("\"done\"")),
        "{seen:?}"
    );

    let listed = broker.get("/api/v1/migrations");
    assert_eq!(listed["items"][0]["id"], id.as_str());
    let audit = broker.get("/api/v1/audit");
    assert!(
        audit["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|r| r["action"] == "migration.create" && r["who"] == "demo-admin")
    );
    // States in the audit log as the API spells them, not as Rust names them.
    let outcomes: Vec<(String, String)> = broker.get("/api/v1/audit?limit=1000")["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| r["target"].as_str().is_some_and(|t| t.starts_with(&id)))
        .filter(|r| {
            matches!(
                r["action"].as_str(),
                Some("migration.step" | "migration.end")
            )
        })
        .map(|r| {
            (
                r["action"].as_str().unwrap_or("").to_owned(),
                r["outcome"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&("migration.end".into(), "done".into())),
        "{outcomes:?}"
    );
    assert!(
        outcomes
            .iter()
            .filter(|(action, _)| action == "migration.step")
            .all(|(_, outcome)| outcome.starts_with("running") || outcome.starts_with("done: ")),
        "{outcomes:?}"
    );

    // Dry run: planned and priced, nothing moves and nothing is recorded.
    let migrations_before = broker.get("/api/v1/migrations");
    let (status, dry) = broker.call(
        "POST",
        "/api/v1/migrations",
        Some(&broker.admin),
        Some(json!({"workload": workload, "to": from, "dryRun": true})),
    );
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["dryRun"], true, "{dry}");
    assert_eq!(dry["feasible"], true, "{dry}");
    assert!(dry.get("id").is_none(), "{dry}");
    assert!(
        dry["message"]
            .as_str()
            .is_some_and(|m| m.contains("replicas fit on") && m.contains("monthly savings")),
        "{dry}"
    );
    assert_eq!(broker.get("/api/v1/migrations"), migrations_before);
    assert_eq!(serving(&broker, workload), [to]);
    let metrics = reqwest::blocking::get(format!("{}/metrics", broker.url))
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("ferry_cluster_monthly_cost{cluster=")
            && metrics.contains("ferry_api_request_duration_seconds_count")
            && metrics.contains("ferry_migration_step_seconds_count{step=\"start\"}")
            && metrics.contains("ferry_migrations{state=\"done\"} 1"),
        "{metrics}"
    );
    // Nothing saved by the triggers that moved nothing, and no negative zero for it.
    assert!(
        metrics.contains("ferry_savings_realised_monthly{reason=\"failover\"} 0.00")
            && !metrics.contains("-0.00"),
        "{metrics}"
    );
}

#[test]
fn auth_matrix_and_bad_input_change_nothing() {
    let data = temp_dir("auth");
    let broker = Broker::start(&data, None);
    let viewer = broker.token("viewer", &[]);
    let shop_operator = broker.token("operator", &["shop"]);
    let other = temp_dir("auth-other-key");
    let foreign = {
        // A token signed with another broker's key.
        let _other = Broker::start(&other, None);
        _other.token("admin", &[])
    };
    let key = std::fs::read(data.join("jwt-hs256.key")).expect("key");
    let craft = |claims: Value, header_alg: &str| -> String {
        use base64_engine::encode;
        let header = encode(
            json!({"alg": header_alg, "typ": "JWT"})
                .to_string()
                .as_bytes(),
        );
        let payload = encode(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{payload}");
        let signature = if header_alg == "none" {
            String::new()
        } else {
            encode(&hmac_sha256(&key, signing_input.as_bytes()))
        };
        format!("{signing_input}.{signature}")
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = |iss: &str, aud: &str, exp: u64| json!({"sub": "x", "roles": ["admin"], "iss": iss, "aud": aud, "iat": now, "exp": exp});
    let valid_crafted = craft(claims("ferry", "ferry-api", now + 600), "HS256");
    let migrate = json!({"workload": "payments/api", "to": "gke-europe-west1"});
    // (what, token, method, path, body, expected status)
    type Case<'a> = (
        &'a str,
        Option<String>,
        &'a str,
        &'a str,
        Option<Value>,
        u16,
    );
    let cases: Vec<Case> = vec![
        (
            "crafted token with the right key works",
            Some(valid_crafted),
            "GET",
            "/api/v1/clusters",
            None,
            200,
        ),
        ("no token", None, "GET", "/api/v1/clusters", None, 401),
        (
            "malformed token",
            Some("not.a.jwt".to_owned()),
            "GET",
            "/api/v1/clusters",
            None,
            401,
        ),
        (
            "wrong signature",
            Some(foreign),
            "GET",
            "/api/v1/clusters",
            None,
            401,
        ),
        (
            "alg none",
            Some(craft(claims("ferry", "ferry-api", now + 600), "none")),
            "GET",
            "/api/v1/clusters",
            None,
            401,
        ),
        (
            "expired",
            Some(craft(claims("ferry", "ferry-api", now - 3600), "HS256")),
            "GET",
            "/api/v1/clusters",
            None,
            401,
        ),
        (
            "wrong audience",
            Some(craft(claims("ferry", "someone-else", now + 600), "HS256")),
            "GET",
            "/api/v1/clusters",
            None,
            401,
        ),
        (
            "wrong issuer",
            Some(craft(claims("evil", "ferry-api", now + 600), "HS256")),
            "GET",
            "/api/v1/clusters",
            None,
            401,
        ),
        (
            "viewer cannot migrate",
            Some(viewer.clone()),
            "POST",
            "/api/v1/migrations",
            Some(migrate.clone()),
            403,
        ),
        (
            "viewer cannot read the audit log",
            Some(viewer.clone()),
            "GET",
            "/api/v1/audit",
            None,
            403,
        ),
        (
            "a bad limit on the audit log is a 400 in the API's shape",
            Some(broker.admin.clone()),
            "GET",
            "/api/v1/audit?limit=lots",
            None,
            400,
        ),
        (
            "a bad limit from a viewer is refused for the role first",
            Some(viewer.clone()),
            "GET",
            "/api/v1/audit?limit=lots",
            None,
            403,
        ),
        (
            "operator of shop cannot move payments",
            Some(shop_operator.clone()),
            "POST",
            "/api/v1/migrations",
            Some(migrate.clone()),
            403,
        ),
        (
            "bad body",
            Some(broker.admin.clone()),
            "POST",
            "/api/v1/migrations",
            Some(json!({"workload": 5})),
            400,
        ),
        (
            "viewer cannot clear a controller's failures",
            Some(viewer.clone()),
            "POST",
            "/api/v1/controllers/clear",
            Some(json!({"workload": "shop/recommendations"})),
            403,
        ),
        (
            "clearing failures needs namespace/name",
            Some(broker.admin.clone()),
            "POST",
            "/api/v1/controllers/clear",
            Some(json!({"workload": "recommendations"})),
            400,
        ),
        (
            "clearing failures takes no unknown field",
            Some(broker.admin.clone()),
            "POST",
            "/api/v1/controllers/clear",
            Some(json!({"workload": "shop/recommendations", "force": true})),
            400,
        ),
        (
            "clearing failures needs a token",
            None,
            "POST",
            "/api/v1/controllers/clear",
            Some(json!({"workload": "shop/recommendations"})),
            401,
        ),
        (
            "a token scoped to shop clears nothing in batch",
            Some(shop_operator.clone()),
            "POST",
            "/api/v1/controllers/clear",
            Some(json!({"workload": "batch/render"})),
            404,
        ),
        (
            "no failed move to clear",
            Some(shop_operator.clone()),
            "POST",
            "/api/v1/controllers/clear",
            Some(json!({"workload": "shop/recommendations"})),
            404,
        ),
        (
            "unknown field",
            Some(broker.admin.clone()),
            "POST",
            "/api/v1/migrations",
            Some(json!({"workload": "shop/recommendations", "to": "x", "extra": 1})),
            400,
        ),
        (
            "not namespace/name",
            Some(broker.admin.clone()),
            "POST",
            "/api/v1/migrations",
            Some(json!({"workload": "web", "to": "gke-europe-west1"})),
            400,
        ),
        (
            "unknown cluster",
            Some(broker.admin.clone()),
            "POST",
            "/api/v1/migrations",
            Some(json!({"workload": "shop/recommendations", "to": "mars-1"})),
            404,
        ),
        (
            "unknown workload",
            Some(broker.admin.clone()),
            "POST",
            "/api/v1/migrations",
            Some(json!({"workload": "shop/nothing", "to": "gke-europe-west1"})),
            404,
        ),
        (
            "unknown migration",
            Some(broker.admin.clone()),
            "GET",
            "/api/v1/migrations/mig-000000000000",
            None,
            404,
        ),
        (
            "unknown route",
            Some(broker.admin.clone()),
            "GET",
            "/api/v1/nothing",
            None,
            404,
        ),
        (
            "invalid policy",
            Some(broker.admin.clone()),
            "PUT",
            "/api/v1/policies/x",
            Some(json!("kind: PlacementPolicy")),
            400,
        ),
    ];
    for (name, token, method, path, body, expected) in cases {
        let (status, answer) = broker.call(method, path, token.as_deref(), body);
        assert_eq!(status, expected, "{name}: {answer}");
        if status >= 400 {
            assert!(
                answer["error"]["code"].is_string() && answer["error"]["message"].is_string(),
                "{name}: {answer}"
            );
        }
    }
    // Nothing was started by any of them.
    assert_eq!(
        broker.get("/api/v1/migrations")["items"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );

    // A namespace-scoped token sees only its namespace.
    let (status, workloads) = broker.call("GET", "/api/v1/workloads", Some(&shop_operator), None);
    assert_eq!(status, 200);
    let namespaces: Vec<&str> = workloads["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|w| w["namespace"].as_str())
        .collect();
    assert!(
        !namespaces.is_empty() && namespaces.iter().all(|ns| *ns == "shop"),
        "{namespaces:?}"
    );

    // One migration per workload: a second one while the first runs gets 409.
    let (from, to) = other_cluster(&broker, "shop/recommendations");
    let (status, first) = broker.call(
        "POST",
        "/api/v1/migrations",
        Some(&shop_operator),
        Some(json!({"workload": "shop/recommendations", "to": to})),
    );
    assert_eq!(status, 202, "{first}");
    let (status, second) = broker.call(
        "POST",
        "/api/v1/migrations",
        Some(&shop_operator),
        Some(json!({"workload": "shop/recommendations", "to": to})),
    );
    assert_eq!(status, 409, "{second}");
    let first = broker.wait_for_final(first["id"].as_str().expect("id"));
    assert_eq!(first["state"], "done", "{first}");
    assert_ne!(from, to);
}

/// POST /api/v1/migrations with `body` as the admin.
fn post_migration(broker: &Broker, body: Value) -> (u16, Value) {
    broker.call(
        "POST",
        "/api/v1/migrations",
        Some(&broker.admin),
        Some(body),
    )
}

#[test]
fn stateful_workloads_are_not_moved_onto_empty_volumes_unless_asked() {
    let data = temp_dir("claims");
    let broker = Broker::start(&data, None);
    let workload = "shop/catalog-db";
    let to = "gke-europe-west1";
    assert_eq!(serving(&broker, workload), ["openstack-dc1"]);
    let before = broker.get("/api/v1/migrations");

    // Its dry run names the claim and what a move would do with it.
    let (status, dry) = post_migration(
        &broker,
        json!({"workload": workload, "to": to, "dryRun": true}),
    );
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["feasible"], false, "{dry}");
    assert_eq!(dry["claims"][0]["name"], "data-catalog-db", "{dry}");
    assert_eq!(dry["claims"][0]["sizeBytes"], 200u64 << 30, "{dry}");
    assert!(
        dry["claims"][0]["fate"]
            .as_str()
            .is_some_and(|f| f.contains("blocks the move")),
        "{dry}"
    );

    // A plain request is refused, naming the claim, and changes nothing.
    let (status, refused) = post_migration(&broker, json!({"workload": workload, "to": to}));
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "uses_claims", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("data-catalog-db (200.0 GiB)") && message.contains("acceptEmptyVolumes"),
        "{refused}"
    );
    assert_eq!(broker.get("/api/v1/migrations"), before);
    assert_eq!(serving(&broker, workload), ["openstack-dc1"]);

    // Accepting empty volumes, it moves, and the record says so.
    let (status, created) = post_migration(
        &broker,
        json!({"workload": workload, "to": to, "acceptEmptyVolumes": true}),
    );
    assert_eq!(status, 202, "{created}");
    let end = broker.wait_for_final(created["id"].as_str().expect("id"));
    assert_eq!(end["state"], "done", "{end}");
    assert_eq!(end["acceptEmptyVolumes"], true, "{end}");
    assert!(
        end["steps"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("200.0 GiB, whose data does not move")
                && m.contains(&format!(": new, empty claim on {to}"))),
        "{end}"
    );
    assert_eq!(serving(&broker, workload), [to]);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_move_that_breaks_its_policy_is_refused_unless_an_admin_forces_it() {
    let data = temp_dir("hard-rule");
    let broker = Broker::start(&data, None);
    // payments/api must stay in the EU (policy payments-eu, required residency=eu).
    let workload = "payments/api";
    let home = serving(&broker, workload);
    let before = broker.get("/api/v1/migrations");
    let body = json!({"workload": workload, "to": "gke-us-central1"});
    let (status, refused) = post_migration(&broker, body.clone());
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "breaks_policy", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("required affinity") && message.contains("residency"),
        "{refused}"
    );
    let (status, dry) = post_migration(
        &broker,
        json!({"workload": workload, "to": "gke-us-central1", "dryRun": true}),
    );
    assert_eq!((status, &dry["feasible"]), (200, &json!(false)), "{dry}");
    assert!(
        dry["message"]
            .as_str()
            .is_some_and(|m| m.contains("breaks policy")),
        "{dry}"
    );
    // Forcing is for admins only.
    let operator = broker.token("operator", &[]);
    let mut forced = body.clone();
    forced["force"] = json!(true);
    let (status, answer) = broker.call(
        "POST",
        "/api/v1/migrations",
        Some(&operator),
        Some(forced.clone()),
    );
    assert_eq!(status, 403, "{answer}");
    assert_eq!(broker.get("/api/v1/migrations"), before);
    assert_eq!(serving(&broker, workload), home);
    let (status, created) = post_migration(&broker, forced);
    assert_eq!(status, 202, "{created}");
    let end = broker.wait_for_final(created["id"].as_str().expect("id"));
    assert_eq!(
        (&end["state"], &end["forced"]),
        (&json!("done"), &json!(true)),
        "{end}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_dry_run_answers_with_its_plan_and_changes_nothing() {
    let data = temp_dir("dry-run");
    let broker = Broker::start(&data, None);
    let workload = "shop/recommendations";
    let (from, to) = other_cluster(&broker, workload);
    let audit_before = broker.get("/api/v1/audit?limit=1000")["items"]
        .as_array()
        .map_or(0, Vec::len);
    // Twice: a dry run holds no lock, so the second is answered like the first.
    for _ in 0..2 {
        let (status, dry) = post_migration(
            &broker,
            json!({"workload": workload, "to": to, "dryRun": true}),
        );
        assert_eq!(status, 200, "{dry}");
        assert_eq!(dry["feasible"], true, "{dry}");
        assert_eq!(
            (&dry["from"], &dry["to"]),
            (&json!(from), &json!(to)),
            "{dry}"
        );
        assert!(dry["replicas"].as_u64().is_some_and(|r| r > 0), "{dry}");
    }
    assert_eq!(broker.get("/api/v1/migrations")["items"], json!([]));
    let audit_after = broker.get("/api/v1/audit?limit=1000")["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(audit_after, audit_before, "a dry run wrote audit records");
    assert_eq!(serving(&broker, workload), std::slice::from_ref(&from));

    // The CLI prints the findings, with --wait too, and never claims a move.
    let output = Command::new(FERRY)
        .args(["migrate", workload, "--to", &to, "--dry-run", "--wait"])
        .env("FERRY_SERVER", &broker.url)
        .env("FERRY_TOKEN", &broker.admin)
        .output()
        .expect("ferry migrate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("dry run, nothing changed") && stdout.contains("replicas fit on"),
        "{stdout}"
    );
    assert!(!stdout.contains("now runs on"), "{stdout}");
    // A move that cannot start says so and exits 1.
    let output = Command::new(FERRY)
        .args([
            "migrate",
            "shop/catalog-db",
            "--to",
            "gke-europe-west1",
            "--dry-run",
        ])
        .env("FERRY_SERVER", &broker.url)
        .env("FERRY_TOKEN", &broker.admin)
        .output()
        .expect("ferry migrate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("would not start") && stdout.contains("claim data-catalog-db (200.0 GiB)"),
        "{stdout}"
    );
    assert_eq!(broker.get("/api/v1/migrations")["items"], json!([]));
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn migrate_wait_writes_a_line_to_a_log_only_when_the_progress_changes() {
    let data = temp_dir("wait-lines");
    // A rollout of some seconds: long enough for the time waited to change many times.
    let broker = Broker::start_with(&data, None, &["--rollout-time", "4s"]);
    let workload = "shop/recommendations";
    let (_, to) = other_cluster(&broker, workload);
    let output = Command::new(FERRY)
        .args(["migrate", workload, "--to", &to, "--wait"])
        .env("FERRY_SERVER", &broker.url)
        .env("FERRY_TOKEN", &broker.admin)
        .output()
        .expect("ferry migrate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // Each line ends with the time waited; the rest differs from the line before.
    let lines: Vec<&str> = stderr
        .lines()
        .map(|line| line.rsplit_once(' ').map_or(line, |(text, _)| text))
        .collect();
    assert!(lines.len() >= 2, "{stderr}");
    for pair in lines.windows(2) {
        assert_ne!(pair[0], pair[1], "{stderr}");
    }
    // While the rollout runs, what the start step waits for.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("start:running") && l.contains(" waiting for: ")),
        "{stderr}"
    );
    // Nothing failed: nothing to clear, and the CLI says so.
    let output = Command::new(FERRY)
        .args(["controller", "clear", workload])
        .env("FERRY_SERVER", &broker.url)
        .env("FERRY_TOKEN", &broker.admin)
        .output()
        .expect("ferry controller clear");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("no failed move of shop/recommendations by the controllers"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_move_back_within_the_rollback_window_lets_the_first_migration_finish() {
    let data = temp_dir("there-and-back");
    let broker = Broker::start_with(&data, None, &["--rollback-window", "4s"]);
    let workload = "shop/recommendations";
    let (home, away) = other_cluster(&broker, workload);
    let (status, first) = post_migration(&broker, json!({"workload": workload, "to": away}));
    assert_eq!(status, 202, "{first}");
    let first = first["id"].as_str().expect("id").to_owned();
    assert_eq!(broker.wait_for_final(&first)["state"], "done");
    // Back home while the first migration still keeps the drained copy there: the move
    // back takes that copy over.
    let (status, back) = post_migration(&broker, json!({"workload": workload, "to": home}));
    assert_eq!(status, 202, "{back}");
    let back = back["id"].as_str().expect("id").to_owned();
    assert_eq!(broker.wait_for_final(&back)["state"], "done");
    // Each finishes: the first sees its drained copy is the second's now, the second
    // deletes the copy it drained away.
    until(30, "both migrations' sources dealt with", || {
        let first = broker.get(&format!("/api/v1/migrations/{first}"));
        let back = broker.get(&format!("/api/v1/migrations/{back}"));
        (first["sourceRemoved"] == true && back["sourceRemoved"] == true).then_some(())
    });
    assert_eq!(serving(&broker, workload), std::slice::from_ref(&home));
    let copies = copies(&data, workload);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].0, home, "{copies:?}");
    let audit = broker.get("/api/v1/audit?limit=1000");
    assert!(
        audit["items"].as_array().expect("items").iter().any(|r| {
            r["action"] == "migration.sourceHandedOver"
                && r["target"].as_str().is_some_and(|t| t.contains(&back))
        }),
        "{audit}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn migrations_survive_sigkill_at_every_step_boundary() {
    let workload = "shop/recommendations";
    for step in ["plan", "prepare", "start", "drain"] {
        for boundary in ["before", "after"] {
            let at = format!("{step}:{boundary}");
            let data = temp_dir(&format!("crash-{step}-{boundary}"));
            let (id, from, to) = {
                let broker = Broker::start(&data, Some(&at));
                let (from, to) = other_cluster(&broker, workload);
                let (status, created) = broker.call(
                    "POST",
                    "/api/v1/migrations",
                    Some(&broker.admin),
                    Some(json!({"workload": workload, "to": to})),
                );
                assert_eq!(status, 202, "{at}: {created}");
                broker.wait_for_stderr(&format!("paused at {at}"));
                // Drop sends SIGKILL: no shutdown code runs.
                (created["id"].as_str().expect("id").to_owned(), from, to)
            };
            let broker = Broker::start(&data, None);
            let end = broker.wait_for_final(&id);
            let state = end["state"].as_str().unwrap_or_default();
            assert!(state == "done" || state == "rolledBack", "{at}: {end}");
            let home = if state == "done" { &to } else { &from };
            // Exactly one serving copy, where the outcome says; the drained or rolled-back
            // copy is gone once cleanup ran (rollback window 0 s).
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let copies = copies(&data, workload);
                if copies.len() == 1 {
                    assert_eq!(copies[0].0, *home, "{at}: {copies:?}");
                    assert!(copies[0].1 > 0, "{at}: {copies:?}");
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{at}: copies left {copies:?} after {state}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            assert_eq!(
                serving(&broker, workload),
                std::slice::from_ref(home),
                "{at}"
            );
            eprintln!("{at}: {state}");
        }
    }
}

/// The lock record as the broker stores it (`migration.rs`), written here the way a
/// broker killed between taking a lock and storing its migration left it.
#[derive(serde::Serialize, serde::Deserialize)]
struct LockRecord {
    migration: String,
}

impl ferry_store::Versioned for LockRecord {
    const KIND: &'static str = "migration-lock";
    const SCHEMA: u32 = 1;
}

#[test]
fn a_broker_killed_around_a_submit_or_the_end_of_a_migration_leaves_no_workload_stuck() {
    let workload = "shop/recommendations";
    // Right after the submit (record and lock stored, nothing run yet), just before the
    // final write (state done and the lock's release) and just after it.
    for at in ["run:begin", "end:before", "end:after"] {
        let data = temp_dir(&format!("lock-{}", at.replace(':', "-")));
        let (id, from, to) = {
            let broker = Broker::start(&data, Some(at));
            let (from, to) = other_cluster(&broker, workload);
            let (status, created) =
                post_migration(&broker, json!({"workload": workload, "to": to}));
            assert_eq!(status, 202, "{at}: {created}");
            broker.wait_for_stderr(&format!("paused at {at}"));
            (created["id"].as_str().expect("id").to_owned(), from, to)
        };
        let broker = Broker::start(&data, None);
        let end = broker.wait_for_final(&id);
        assert!(
            matches!(end["state"].as_str(), Some("done" | "rolledBack")),
            "{at}: {end}"
        );
        // The workload takes a new migration at once: back where it came from.
        let home = if end["state"] == "done" { &to } else { &from };
        let back = if home == &to { &from } else { &to };
        let (status, again) = post_migration(&broker, json!({"workload": workload, "to": back}));
        assert_eq!(status, 202, "{at}: the workload is stuck: {again}");
        let again = broker.wait_for_final(again["id"].as_str().expect("id"));
        assert_eq!(again["state"], "done", "{at}: {again}");
        assert_eq!(
            serving(&broker, workload),
            std::slice::from_ref(back),
            "{at}"
        );
        let _ = std::fs::remove_dir_all(&data);
    }
}

#[test]
fn locks_left_by_an_older_broker_are_released_at_start() {
    let data = temp_dir("orphaned-locks");
    let workload = "shop/recommendations";
    let (from, to) = {
        let broker = Broker::start(&data, None);
        other_cluster(&broker, workload)
    };
    // What a broker that took the lock and the record in two writes left when killed
    // between them: a lock naming a migration that does not exist.
    {
        let store = ferry_store::Store::open_sled(&data.join("store")).expect("the store opens");
        let lock = LockRecord {
            migration: "mig-000000000000".to_owned(),
        };
        assert!(
            store
                .insert_new(&format!("locks/{workload}"), &lock)
                .expect("write")
        );
    }
    let broker = Broker::start(&data, None);
    let (status, created) = post_migration(&broker, json!({"workload": workload, "to": to}));
    assert_eq!(
        status, 202,
        "the orphaned lock still holds the workload: {created}"
    );
    let end = broker.wait_for_final(created["id"].as_str().expect("id"));
    assert_eq!(end["state"], "done", "{end}");
    assert_ne!(serving(&broker, workload), [from]);
    let audit = broker.get("/api/v1/audit?limit=1000");
    assert!(
        audit["items"].as_array().expect("items").iter().any(|r| {
            r["action"] == "migration.lockReleased"
                && r["outcome"]
                    .as_str()
                    .is_some_and(|o| o.contains("mig-000000000000") && o.contains("does not exist"))
        }),
        "{audit}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn cancel_rolls_back_even_when_the_broker_dies_mid_rollback() {
    let workload = "shop/recommendations";
    let data = temp_dir("cancel");
    let (id, from) = {
        let broker = Broker::start(&data, Some("start:undo"));
        let (from, to) = other_cluster(&broker, workload);
        let (status, created) = broker.call(
            "POST",
            "/api/v1/migrations",
            Some(&broker.admin),
            Some(json!({"workload": workload, "to": to})),
        );
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().expect("id").to_owned();
        // Cancel while the target's copy rolls out, so that there is something to undo.
        let deadline = Instant::now() + Duration::from_secs(20);
        while broker.get(&format!("/api/v1/migrations/{id}"))["steps"][2]["state"] != "running" {
            assert!(Instant::now() < deadline, "start never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, cancelled) = broker.call(
            "POST",
            &format!("/api/v1/migrations/{id}/cancel"),
            Some(&broker.admin),
            None,
        );
        assert_eq!(status, 202, "{cancelled}");
        broker.wait_for_stderr("paused at start:undo");
        (id, from)
    };
    let broker = Broker::start(&data, None);
    let end = broker.wait_for_final(&id);
    assert_eq!(end["state"], "cancelled", "{end}");
    assert!(
        end["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cancelled by")),
        "{end}"
    );
    assert_eq!(
        copies(&data, workload)
            .iter()
            .map(|c| (c.0.clone(), c.1 > 0, c.2))
            .collect::<Vec<_>>(),
        [(from.clone(), true, false)]
    );
    assert_eq!(serving(&broker, workload), [from]);
    // Cancelling what has ended is a conflict, not a change.
    let (status, _) = broker.call(
        "POST",
        &format!("/api/v1/migrations/{id}/cancel"),
        Some(&broker.admin),
        None,
    );
    assert_eq!(status, 409);
}

#[test]
fn cost_history_answers_viewers_and_gains_a_point_after_a_migration() {
    let data = temp_dir("cost-history");
    let broker = Broker::start(&data, None);
    let viewer = broker.viewer_token();
    let (status, refused) = broker.call("GET", "/api/v1/cost-history", None, None);
    assert_eq!(status, 401, "{refused}");
    assert_eq!(refused["error"]["code"], "token_missing", "{refused}");
    let (status, bad) = broker.call(
        "GET",
        "/api/v1/cost-history?limit=many",
        Some(&viewer),
        None,
    );
    assert_eq!(status, 400, "{bad}");
    let openapi = broker.get("/api/v1/openapi.json");
    assert!(
        openapi["paths"]["/api/v1/cost-history"]["get"]["x-ferry-role"] == "viewer",
        "{openapi}"
    );

    // The sampler takes a first point as the broker starts.
    let history = |query: &str| -> Vec<Value> {
        let (status, body) = broker.call(
            "GET",
            &format!("/api/v1/cost-history{query}"),
            Some(&viewer),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().cloned().expect("items")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while history("").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no cost history point after 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let first = history("").remove(0);
    let clusters = first["clusters"].as_object().expect("clusters");
    assert_eq!(clusters.len(), 3, "{first}");
    let sum: f64 = clusters.values().filter_map(Value::as_f64).sum();
    let total = first["total"].as_f64().expect("total");
    assert!((sum - total).abs() < 0.02, "{first}");
    assert!(
        first["at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{first}"
    );
    assert!(first.get("migration").is_none(), "{first}");
    assert_eq!(history("?limit=1").len(), 1);

    // A migration's end adds a point that names it, with the move's cost in it.
    let workload = "shop/recommendations";
    let (from, to) = other_cluster(&broker, workload);
    let (status, created) = broker.call(
        "POST",
        "/api/v1/migrations",
        Some(&broker.admin),
        Some(json!({"workload": workload, "to": to})),
    );
    assert_eq!(status, 202, "{created}");
    let id = created["id"].as_str().expect("id").to_owned();
    assert_eq!(broker.wait_for_final(&id)["state"], "done");
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        if let Some(point) = history("")
            .into_iter()
            .find(|p| p["migration"] == id.as_str())
        {
            break point;
        }
        assert!(Instant::now() < deadline, "no cost history point for {id}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let cost = |point: &Value, cluster: &str| point["clusters"][cluster].as_f64().expect("cost");
    assert!(cost(&after, &from) < cost(&first, &from), "{first} {after}");
    assert!(cost(&after, &to) > cost(&first, &to), "{first} {after}");
}

#[test]
fn the_dashboard_and_its_assets_are_served_from_the_binary() {
    let data = temp_dir("dashboard");
    let broker = Broker::start(&data, None);
    // reqwest has rustls (the default `https` feature): it needs a provider.
    ferry_testenv::install_crypto_provider();
    let client = reqwest::blocking::Client::new();
    let page = client.get(&broker.url).send().expect("the page");
    assert_eq!(page.status().as_u16(), 200);
    let header = |response: &reqwest::blocking::Response, name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(header(&page, "content-type").starts_with("text/html"));
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = page.text().expect("html");
    // No inline script: the strict policy would block it.
    assert!(!html.contains("<script>"), "{html}");
    let mut assets = Vec::new();
    for part in html.split(['"', '\'']) {
        if part.starts_with("/assets/") && !assets.contains(&part.to_owned()) {
            assets.push(part.to_owned());
        }
    }
    assert!(
        assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")),
        "{assets:?}"
    );
    for (asset, kind) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/live.js", "text/javascript"),
        ("/assets/chart.js", "text/javascript"),
        ("/assets/style.css", "text/css"),
        ("/assets/icon.svg", "image/svg+xml"),
    ] {
        let response = client
            .get(format!("{}{asset}", broker.url))
            .send()
            .expect("asset");
        assert_eq!(response.status().as_u16(), 200, "{asset}");
        assert!(
            header(&response, "content-type").starts_with(kind),
            "{asset}"
        );
        assert_eq!(header(&response, "cache-control"), "no-cache", "{asset}");
        let etag = header(&response, "etag");
        assert!(etag.starts_with('"'), "{asset}: {etag}");
        // Unchanged since the browser's copy: 304, no body.
        let again = client
            .get(format!("{}{asset}", broker.url))
            .header("If-None-Match", &etag)
            .send()
            .expect("asset");
        assert_eq!(again.status().as_u16(), 304, "{asset}");
    }
    let (status, missing) = broker.call("GET", "/assets/nothing.js", None, None);
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["code"], "not_found", "{missing}");
}

/// HMAC-SHA256, for crafting tokens the CLI would never mint (expired, wrong iss/aud).
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

mod base64_engine {
    use base64::Engine as _;
    pub fn encode(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }
}

/// Polls `probe` every 200 ms for up to `seconds`.
fn until<T>(seconds: u64, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(seconds),
            "{what}: not after {seconds} s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The issue's "done when": in `ferry demo`, raising a cluster's price through the API makes
/// the controllers propose moves, start nothing in recommend mode, and carry them out once
/// switched to auto; bad requests to the new routes change nothing.
#[test]
fn a_price_rise_in_the_demo_is_proposed_then_carried_out_in_auto_mode() {
    let data = temp_dir("controllers");
    // The controllers' clock on a Saturday noon (2026-12-05T12:00:00Z): inside every
    // window of the example policies, so that the test does not depend on the hour it runs
    // at (batch/reports may move only on weeknights and weekends).
    let broker = Broker::start_env(
        &data,
        None,
        &["--price-memory", "2s"],
        &[("FERRY_TEST_CONTROL_CLOCK", "1796472000")],
    );
    let viewer = broker.viewer_token();
    let operator = broker.token("operator", &[]);
    until(30, "a first pass", || {
        let status = broker.get("/api/v1/controllers");
        (status["lastPass"].is_string()).then_some(())
    });
    let status = broker.get("/api/v1/controllers");
    assert_eq!(status["mode"], "recommend", "{status}");
    let pricing = |broker: &Broker| {
        let clusters = broker.get("/api/v1/clusters");
        clusters["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|c| c["name"] == "openstack-dc1")
            .expect("openstack-dc1")["pricing"]
            .clone()
    };
    let before = pricing(&broker);

    let path = "/api/v1/clusters/openstack-dc1/pricing";
    let refusals = [
        (
            "PUT",
            path,
            viewer.as_str(),
            json!({"cpuCoreHour": 0.2, "memoryGiBHour": 0.02}),
            403,
            "forbidden",
        ),
        (
            "PUT",
            path,
            broker.admin.as_str(),
            json!({"cpuCoreHour": -0.2, "memoryGiBHour": 0.02}),
            400,
            "bad_pricing",
        ),
        (
            "PUT",
            path,
            broker.admin.as_str(),
            json!({"cpuCoreHour": 0.2}),
            400,
            "bad_body",
        ),
        (
            "PUT",
            path,
            broker.admin.as_str(),
            json!({"cpuCoreHour": 1e300, "memoryGiBHour": 0.02}),
            400,
            "bad_pricing",
        ),
        (
            "PUT",
            path,
            broker.admin.as_str(),
            json!({"cpuCoreHour": 0.2, "memoryGiBHour": 0.02, "gpuHour": 1}),
            400,
            "bad_body",
        ),
        (
            "PUT",
            path,
            broker.admin.as_str(),
            json!({"cpuCoreHour": "cheap", "memoryGiBHour": 0.02}),
            400,
            "bad_body",
        ),
        (
            "PUT",
            "/api/v1/clusters/no-such-cluster/pricing",
            broker.admin.as_str(),
            json!({"cpuCoreHour": 0.2, "memoryGiBHour": 0.02}),
            404,
            "not_found",
        ),
        (
            "PUT",
            "/api/v1/controllers/mode",
            operator.as_str(),
            json!({"mode": "auto"}),
            403,
            "forbidden",
        ),
        (
            "PUT",
            "/api/v1/controllers/mode",
            broker.admin.as_str(),
            json!({"mode": "sometimes"}),
            400,
            "bad_mode",
        ),
        (
            "PUT",
            "/api/v1/controllers/mode",
            broker.admin.as_str(),
            json!({}),
            400,
            "bad_body",
        ),
    ];
    for (method, path, token, body, status, code) in refusals {
        let (got, answer) = broker.call(method, path, Some(token), Some(body.clone()));
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {answer}"
        );
    }
    assert_eq!(pricing(&broker), before, "refused requests changed nothing");
    assert_eq!(broker.get("/api/v1/controllers")["mode"], "recommend");

    // On-prem becomes dear: the controllers propose moving what it runs to GKE (the batch
    // reports, in their policy's window; the EU personal data, which has claims, only as a
    // recommendation), and start nothing in recommend mode.
    let (status, answer) = broker.call(
        "PUT",
        path,
        Some(&broker.admin),
        Some(json!({"cpuCoreHour": 0.2, "memoryGiBHour": 0.02})),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(pricing(&broker)["cpuCoreHour"], 0.2);
    let proposed = until(30, "cost moves proposed and shown, not started", || {
        let status = broker.get("/api/v1/controllers");
        let decisions = status["decisions"].as_array()?.clone();
        let ready = decisions.iter().any(|d| {
            d["kind"] == "cost" && d["from"] == "openstack-dc1" && d["verdict"] == "recommend"
        });
        ready.then_some(decisions)
    });
    assert!(
        proposed.iter().all(|d| d["verdict"] != "start"),
        "{proposed:?}"
    );
    let placements = broker.get("/api/v1/placements");
    let shown = placements["plan"]["moves"]
        .as_array()
        .expect("moves")
        .iter()
        .filter(|m| m["decision"]["verdict"].is_string())
        .count();
    assert!(
        shown > 0,
        "the plan's moves carry the controllers' decisions: {placements}"
    );
    let migrations = broker.get("/api/v1/migrations");
    assert_eq!(
        migrations["items"].as_array().map(Vec::len),
        Some(0),
        "{migrations}"
    );

    let (status, answer) = broker.call(
        "PUT",
        "/api/v1/controllers/mode",
        Some(&broker.admin),
        Some(json!({"mode": "auto"})),
    );
    assert_eq!(
        (status, answer["mode"].as_str()),
        (200, Some("auto")),
        "{answer}"
    );
    let moved = until(60, "a cost move carried out", || {
        let migrations = broker.get("/api/v1/migrations");
        migrations["items"]
            .as_array()?
            .iter()
            .find(|m| m["trigger"] == "cost" && m["state"] == "done")
            .cloned()
    });
    assert_eq!(moved["from"], "openstack-dc1", "{moved}");
    assert_eq!(moved["createdBy"], "controller:cost", "{moved}");
    assert!(
        moved["monthlySavings"].as_f64().unwrap_or(0.0) > 0.0,
        "{moved}"
    );
    // The Postgres with its 200 GiB claim is cheaper on GKE too, and stays: volume data
    // does not move, so the controllers only recommend it, saying why.
    let status = broker.get("/api/v1/controllers");
    let db = status["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .find(|d| d["workload"] == "shop/catalog-db")
        .cloned()
        .unwrap_or_default();
    assert_eq!(db["verdict"], "recommend", "{status}");
    assert!(
        db["reason"]
            .as_str()
            .is_some_and(|r| r.contains("data-catalog-db (200.0 GiB)")),
        "{db}"
    );
    assert!(
        !broker.get("/api/v1/migrations")["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|m| m["workload"] == "shop/catalog-db"),
        "the controllers moved a workload with claims"
    );
    let audit = broker.get("/api/v1/audit?limit=1000");
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    for wanted in [
        "cluster.pricing",
        "controllers.mode",
        "controller.recommend",
        "controller.start",
    ] {
        assert!(
            actions.contains(&wanted),
            "{wanted} missing from {actions:?}"
        );
    }
    let metrics = reqwest::blocking::get(format!("{}/metrics", broker.url))
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("ferry_moves_total{reason=\"cost\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );
    let _ = std::fs::remove_dir_all(&data);
}

/// A policy that would tie with another over workloads that only the clusters run (the
/// demo's generated ones, in no file) is refused with 409 naming both policies and the
/// workloads, and nothing changes: the plan still answers for everyone.
#[test]
fn a_policy_tying_with_another_over_live_workloads_is_refused() {
    let data = temp_dir("policy-conflict");
    let broker = Broker::start_with(&data, None, &["--synthetic-workloads", "3"]);
    let policy = |name: &str, priority: i32, labels: Value| {
        json!({
            "apiVersion": "ferry.dev/v1alpha1", "kind": "PlacementPolicy",
            "metadata": {"name": name},
            "spec": {"priority": priority,
                     "workloadSelector": {"namespaces": ["synthetic"], "matchLabels": labels}},
        })
    };
    let put = |name: &str, body: Value| {
        broker.call(
            "PUT",
            &format!("/api/v1/policies/{name}"),
            Some(&broker.admin),
            Some(body),
        )
    };
    let (status, answer) = put("synthetic-a", policy("synthetic-a", 7, json!({})));
    assert_eq!(status, 200, "{answer}");
    let before = broker.get("/api/v1/policies");
    let (status, answer) = put(
        "synthetic-b",
        policy("synthetic-b", 7, json!({"app": "load-00001"})),
    );
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "conflict", "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "policy `synthetic-b` and policy `synthetic-a` both have priority 7 and both select workload `synthetic/load-00001`; give one a higher priority or narrow a selector"
    );
    assert_eq!(broker.get("/api/v1/policies"), before);
    let placements = broker.get("/api/v1/placements");
    assert!(placements["plan"].get("held").is_none(), "{placements}");
    // A distinct priority is no conflict.
    let (status, answer) = put(
        "synthetic-b",
        policy("synthetic-b", 8, json!({"app": "load-00001"})),
    );
    assert_eq!(status, 200, "{answer}");
}

/// Every example workload runs in the demo, the new ones (no `status.cluster`) where the
/// files' plan puts them, so the broker's first plan is `ferry plan -f examples/`.
#[test]
fn the_demo_starts_from_the_plan_of_the_examples() {
    let data = temp_dir("demo-plan");
    let broker = Broker::start(&data, None);
    let workloads = broker.get("/api/v1/workloads");
    let running: Vec<&str> = workloads["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|w| w["replicas"].as_u64() > Some(0))
        .filter_map(|w| w["name"].as_str())
        .collect();
    assert_eq!(running.len(), 20, "{running:?}");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let output = Command::new(FERRY)
        .args(["plan", "-f", examples, "-o", "json"])
        .output()
        .expect("ferry plan");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let offline: Value = serde_json::from_slice(&output.stdout).expect("plan JSON");
    let live = broker.get("/api/v1/placements")["plan"].clone();
    let placements = |plan: &Value| {
        let mut lines: Vec<String> = plan["placements"]
            .as_array()
            .expect("placements")
            .iter()
            .map(|p| format!("{} -> {} x{}", p["workload"], p["cluster"], p["replicas"]))
            .collect();
        lines.sort();
        lines
    };
    let moves = |plan: &Value| {
        let mut lines: Vec<String> = plan["moves"]
            .as_array()
            .expect("moves")
            .iter()
            .map(|m| format!("{} {} -> {}", m["workload"], m["from"], m["to"]))
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(placements(&live), placements(&offline));
    assert_eq!(moves(&live), moves(&offline));
    assert_eq!(live["totalMonthlyCost"], offline["totalMonthlyCost"]);
    // The spread example governs the web tier: its shares run on both EU clusters.
    assert_eq!(
        copies(&data, "shop/search")
            .into_iter()
            .map(|(cluster, replicas, _)| (cluster, replicas))
            .collect::<std::collections::BTreeSet<_>>(),
        [
            ("gke-europe-west1".to_owned(), 1),
            ("openstack-dc1".to_owned(), 2)
        ]
        .into()
    );
}

/// A what-if body: `clusters` simulated clusters and `workloads` workloads.
fn what_if_body(workloads: usize, clusters: usize) -> String {
    let mut text = String::new();
    for c in 0..clusters {
        text.push_str(&format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c{c}\n  labels: {{ region: r{} }}\nspec:\n  provider: sim\n  pricing: {{ currency: USD, cpuCoreHour: 0.0{}, memoryGiBHour: 0.004, egressGiB: 0.01 }}\n  capacity: {{ cpu: \"100000\", memory: 400000Gi }}\nstatus:\n  health: Ready\n---\n",
            c % 3,
            c % 9 + 1
        ));
    }
    for w in 0..workloads {
        text.push_str(&format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: w{w}\n  namespace: ns{}\n  labels: {{ app: w{w} }}\nspec:\n  replicas: {}\n  resources: {{ cpu: \"{}\", memory: 1Gi }}\n---\n",
            w % 7,
            w % 3 + 1,
            w % 4 + 1
        ));
    }
    text
}

/// A raw HTTP/1.1 exchange: sends `request`, reads until the server closes or `within`
/// passes; the answer so far.
fn raw(url: &str, request: &[u8], within: Duration) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(within)).expect("timeout");
    stream.write_all(request).expect("send");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
        if String::from_utf8_lossy(&answer).contains("\r\n\r\n{") && answer.ends_with(b"}") {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn scoped_tokens_cannot_act_federation_wide_and_refusals_are_audited() {
    let data = temp_dir("scoped");
    let broker = Broker::start(&data, None);
    let shop_admin = broker.token("admin", &["shop"]);
    let policy = |name: &str, namespaces: &str| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata:\n  name: {name}\nspec:\n  priority: 977\n  workloadSelector:\n    namespaces: {namespaces}\n"
        )
    };
    let before = |broker: &Broker| {
        (
            broker.get("/api/v1/controllers")["mode"].clone(),
            broker.get("/api/v1/clusters")["items"].clone(),
            broker.get("/api/v1/policies")["items"].clone(),
            broker.get("/api/v1/provisioning")["items"].clone(),
        )
    };
    let unchanged = before(&broker);
    let pricing = json!({"cpuCoreHour": 9.0, "memoryGiBHour": 9.0});
    let cluster_file = "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: x\nspec:\n  provider: openstack\n".to_owned();
    // (what, method, path, body)
    let refused: Vec<(&str, &str, &str, String)> = vec![
        (
            "controllers to auto",
            "PUT",
            "/api/v1/controllers/mode",
            json!({"mode": "auto"}).to_string(),
        ),
        (
            "cluster pricing",
            "PUT",
            "/api/v1/clusters/gke-europe-west1/pricing",
            pricing.to_string(),
        ),
        ("cluster create", "POST", "/api/v1/clusters", cluster_file),
        (
            "cluster resize",
            "POST",
            "/api/v1/clusters/openstack-dc1/resize",
            json!({"workers": 9}).to_string(),
        ),
        (
            "cluster delete",
            "DELETE",
            "/api/v1/clusters/openstack-dc1",
            String::new(),
        ),
        ("the audit log", "GET", "/api/v1/audit", String::new()),
        (
            "a policy selecting batch",
            "PUT",
            "/api/v1/policies/grab-batch",
            policy("grab-batch", "[batch]"),
        ),
        (
            "a policy selecting shop and batch",
            "PUT",
            "/api/v1/policies/grab-more",
            policy("grab-more", "[shop, batch]"),
        ),
        (
            "a policy selecting every namespace",
            "PUT",
            "/api/v1/policies/grab-all",
            policy("grab-all", "[]"),
        ),
        (
            "replacing a policy over payments",
            "PUT",
            "/api/v1/policies/payments-eu",
            policy("payments-eu", "[shop]"),
        ),
        (
            "deleting a policy over payments",
            "DELETE",
            "/api/v1/policies/payments-eu",
            String::new(),
        ),
    ];
    for (what, method, path, body) in &refused {
        let (status, answer) = broker.call_text(method, path, &shop_admin, body);
        assert_eq!(status, 403, "{what}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("namespace limit") && message.contains("shop"),
            "{what}: {message}"
        );
        assert_eq!(before(&broker), unchanged, "{what} changed something");
    }
    // Within its namespace it may act.
    let (status, answer) = broker.call_text(
        "PUT",
        "/api/v1/policies/shop-only",
        &shop_admin,
        &policy("shop-only", "[shop]"),
    );
    assert_eq!(status, 200, "{answer}");
    // Reads show no other namespace's workloads.
    let foreign = |value: &Value| -> Vec<String> {
        let text = value.to_string();
        ["payments/", "batch/", "analytics/"]
            .iter()
            .filter(|ns| text.contains(*ns))
            .map(|ns| (*ns).to_owned())
            .collect()
    };
    for path in [
        "/api/v1/workloads",
        "/api/v1/placements",
        "/api/v1/controllers",
        "/api/v1/cost-history",
        "/api/v1/migrations",
        "/api/v1/provisioning",
    ] {
        let (status, answer) = broker.call("GET", path, Some(&shop_admin), None);
        assert_eq!(status, 200, "{path}: {answer}");
        assert!(
            foreign(&answer).is_empty(),
            "{path} shows {:?}",
            foreign(&answer)
        );
    }
    // Every refusal is in the audit log, with who, what, from where and why; the
    // unauthenticated ones too.
    for _ in 0..50 {
        let (status, _) = broker.call("GET", "/api/v1/clusters", None, None);
        assert_eq!(status, 401);
    }
    let audit = broker.get("/api/v1/audit?limit=1000");
    let denied: Vec<&Value> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|r| {
            r["outcome"]
                .as_str()
                .is_some_and(|o| o.starts_with("denied"))
        })
        .collect();
    for (what, method, path, _) in &refused {
        assert!(
            denied.iter().any(|r| r["who"] == "test-admin"
                && r["target"] == format!("{method} {path}")
                && r["from"]
                    .as_str()
                    .is_some_and(|f| f.starts_with("127.0.0.1:"))
                && r["outcome"]
                    .as_str()
                    .is_some_and(|o| o.contains("namespace limit"))),
            "no denied record for {what}: {denied:?}"
        );
    }
    // 50 unauthenticated refusals within seconds: one record, not 50.
    let unauthenticated = denied
        .iter()
        .filter(|r| r["who"] == "(unauthenticated)")
        .count();
    assert_eq!(unauthenticated, 1, "{denied:?}");
}

#[test]
fn bodies_are_not_read_before_the_token_and_limits_answer_in_the_api_shape() {
    let data = temp_dir("limits");
    let broker = Broker::start(&data, None);
    // A 1 MiB body announced and never sent: refused at once for the missing token.
    let began = Instant::now();
    let answer = raw(
        &broker.url,
        b"POST /api/v1/plan HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("token_missing"), "{answer}");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    // The same for a viewer on an admin route: the role is checked first.
    let viewer = broker.viewer_token();
    let request = format!(
        "PUT /api/v1/policies/x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {viewer}\r\ncontent-length: 1048576\r\n\r\n"
    );
    let answer = raw(&broker.url, request.as_bytes(), Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // reqwest has rustls (the default `https` feature): it needs a provider, which no
    // other test may have installed yet when this one runs alone.
    ferry_testenv::install_crypto_provider();
    let client = reqwest::blocking::Client::new();
    let admin = format!("Bearer {}", broker.admin);
    let check = |response: reqwest::blocking::Response, status: u16, code: &str| {
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().expect("a JSON error");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    };
    // 413: a body over 1 MiB.
    let response = client
        .post(format!("{}/api/v1/plan", broker.url))
        .header("Authorization", &admin)
        .body(vec![b'#'; 1024 * 1024 + 10])
        .send()
        .expect("answer");
    check(response, 413, "body_too_large");
    let response = client
        .post(format!("{}/api/v1/controllers/clear", broker.url))
        .header("Authorization", &admin)
        .body(vec![b'{'; 1024 * 1024 + 10])
        .send()
        .expect("answer");
    check(response, 413, "body_too_large");
    // 414: a request target over 8 KiB.
    let response = client
        .get(format!(
            "{}/api/v1/clusters?x={}",
            broker.url,
            "a".repeat(9000)
        ))
        .header("Authorization", &admin)
        .send()
        .expect("answer");
    check(response, 414, "uri_too_long");
    // 431: headers over 32 KiB.
    let response = client
        .get(format!("{}/api/v1/clusters", broker.url))
        .header("Authorization", &admin)
        .header("x-padding", "p".repeat(40 * 1024))
        .send()
        .expect("answer");
    check(response, 431, "headers_too_large");
    // A what-if beyond the size cap names the limit.
    let response = client
        .post(format!("{}/api/v1/plan", broker.url))
        .header("Authorization", &admin)
        .body(what_if_body(2001, 11))
        .send()
        .expect("answer");
    assert_eq!(response.status().as_u16(), 413);
    let body: Value = response.json().expect("json");
    assert_eq!(body["error"]["code"], "plan_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("20000") && message.contains("22011"),
        "{message}"
    );
}

#[test]
fn concurrent_plans_are_answered_or_refused_with_429_and_healthz_answers_meanwhile() {
    let data = temp_dir("plans");
    let broker = Broker::start(&data, None);
    let viewer = broker.viewer_token();
    let body = what_if_body(1800, 11);
    let url = broker.url.clone();
    let started = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (url, viewer, body) = (url.clone(), viewer.clone(), body.clone());
            std::thread::spawn(move || {
                let response = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .expect("client")
                    .post(format!("{url}/api/v1/plan"))
                    .header("Authorization", format!("Bearer {viewer}"))
                    .body(body)
                    .send()
                    .expect("answer");
                let status = response.status().as_u16();
                let retry = response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or_default().to_owned());
                let body: Value = response.json().unwrap_or(Value::Null);
                (status, retry, body, Instant::now())
            })
        })
        .collect();
    // /healthz while they run (figures printed, not asserted: timing-based).
    let mut worst = Duration::ZERO;
    while handles.iter().any(|h| !h.is_finished()) && started.elapsed() < Duration::from_secs(60) {
        let asked = Instant::now();
        let (status, _) = broker.call("GET", "/healthz", None, None);
        assert_eq!(status, 200);
        worst = worst.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    let answers: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let last = answers.iter().map(|a| a.3).max().unwrap_or(started);
    eprintln!(
        "8 concurrent what-ifs of 1800x11: statuses {:?}, done in {:?}; /healthz worst {worst:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>(),
        last - started
    );
    // Whether any is refused depends on how long each takes (the limiter itself is tested
    // deterministically in api.rs): every answer is a plan or a 429 in the API's shape.
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let busy: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(ok + busy.len(), answers.len(), "{statuses:?}");
    assert!(ok >= 1, "{statuses:?}");
    for (status, _, body, _) in &answers {
        if *status == 200 {
            assert_eq!(body["placements"].as_array().map(Vec::len), Some(1800));
        }
    }
    for (_, retry, body, _) in &busy {
        assert_eq!(retry.as_deref(), Some("2"));
        assert_eq!(body["error"]["code"], "busy", "{body}");
    }
}

#[test]
fn token_lifetimes_beyond_the_maximum_are_not_minted_nor_accepted() {
    let data = temp_dir("token-ttl");
    let broker = Broker::start(&data, None);
    let output = Command::new(FERRY)
        .args([
            "token", "create", "--role", "admin", "--ttl", "100000d", "--data",
        ])
        .arg(&data)
        .output()
        .expect("ferry token create");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("maximum token lifetime of 7776000 s"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    // A token with exp = 2^64-1, signed with the broker's key: refused, saying why.
    let key = std::fs::read(data.join("jwt-hs256.key")).expect("key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    use base64_engine::encode;
    let header = encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = json!({"sub": "x", "roles": ["admin"], "iss": "ferry", "aud": "ferry-api", "iat": now, "exp": u64::MAX});
    let payload = encode(claims.to_string().as_bytes());
    let input = format!("{header}.{payload}");
    let token = format!("{input}.{}", encode(&hmac_sha256(&key, input.as_bytes())));
    let (status, answer) = broker.call("GET", "/api/v1/clusters", Some(&token), None);
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        answer["error"]["code"], "token_lifetime_too_long",
        "{answer}"
    );
}

/// Runs `ferry demo` on `data`, expecting it to refuse to start; returns its exit status and
/// the lines it printed on stderr. Fails the test if the broker starts instead.
fn demo_refuses(data: &Path) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new(FERRY)
        .args(["demo", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferry demo");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for ferry demo") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ferry demo on {} started instead of refusing",
                data.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    let lines = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    (status.code(), lines)
}

/// Each simulated cluster's file and when it was last written.
fn sim_files(data: &Path) -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(data.join("sim"))
        .expect("sim folder")
        .map(|entry| {
            let path = entry.expect("sim entry").path();
            let written = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .expect("mtime");
            (path, written)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_second_broker_on_one_folder_touches_nothing_and_names_the_holder() {
    let data = temp_dir("two-brokers");
    let first = Broker::start(&data, None);
    let before = sim_files(&data);
    assert!(before.len() >= 2, "{before:?}");
    let (status, lines) = demo_refuses(&data);
    assert_eq!(status, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    for expected in [
        &format!("the data folder {} is in use", data.display()),
        &format!("process {}", first.child.id()),
    ] {
        assert!(
            lines[0].contains(expected),
            "{lines:?} should say {expected}"
        );
    }
    assert_eq!(
        sim_files(&data),
        before,
        "the second broker wrote a sim file"
    );
    // The first one still answers.
    first.get("/api/v1/clusters");
    drop(first);
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_missing_sim_file_is_not_seeded_again() {
    let data = temp_dir("missing-sim");
    drop(Broker::start(&data, None));
    let (missing, _) = sim_files(&data).remove(0);
    std::fs::remove_file(&missing).expect("remove a sim file");
    let (status, lines) = demo_refuses(&data);
    assert_eq!(status, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].contains(&format!("{} is missing", missing.display()))
            && lines[0].contains("existing data folder"),
        "{lines:?}"
    );
    assert!(!missing.exists(), "seeded again");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_damaged_store_is_reported_once_and_readably() {
    let data = temp_dir("damaged-store");
    // Two runs: the second open of the store writes a snapshot, which then refers to the
    // log file the test deletes.
    drop(Broker::start(&data, None));
    drop(Broker::start(&data, None));
    let db = data.join("store").join("db");
    std::fs::remove_file(&db).expect("remove store/db");
    let (status, lines) = demo_refuses(&data);
    assert_eq!(status, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    for expected in [
        "is damaged",
        &db.display().to_string(),
        "Restore the folder from a backup",
        "docs/operations.md",
    ] {
        assert!(
            lines[0].contains(expected),
            "{lines:?} should say {expected}"
        );
    }
    assert!(!lines[0].contains("Inline("), "{lines:?}");
    let _ = std::fs::remove_dir_all(&data);
}

/// The issue's corruption: bytes 8–15 of `store/db` flipped. sled then opened what it could
/// read without a word; the broker must refuse, because acknowledged writes are gone.
#[test]
fn a_store_that_lost_acknowledged_writes_refuses_to_start() {
    use std::io::{Seek, SeekFrom, Write};
    let data = temp_dir("rolled-back-store");
    {
        // A migration: acknowledged writes (its record, its lock) for the flip to lose.
        let broker = Broker::start(&data, None);
        let workload = "shop/recommendations";
        let (_, to) = other_cluster(&broker, workload);
        let (status, created) = broker.call(
            "POST",
            "/api/v1/migrations",
            Some(&broker.admin),
            Some(json!({"workload": workload, "to": to})),
        );
        assert_eq!(status, 202, "{created}");
        broker.wait_for_final(created["id"].as_str().expect("id"));
    }
    let mut db = std::fs::OpenOptions::new()
        .write(true)
        .open(data.join("store").join("db"))
        .expect("open store/db");
    db.seek(SeekFrom::Start(8)).expect("seek");
    db.write_all(&[0xff; 8]).expect("flip bytes 8-15");
    drop(db);
    let (status, lines) = demo_refuses(&data);
    assert_eq!(status, Some(1), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    for expected in [
        "missing acknowledged writes",
        "store.mark",
        "docs/operations.md",
    ] {
        assert!(
            lines[0].contains(expected),
            "{lines:?} should say {expected}"
        );
    }
    let _ = std::fs::remove_dir_all(&data);
}
