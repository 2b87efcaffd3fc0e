//! `ferry serve --config FILE`: files as the source of truth. A changed file takes effect
//! without a restart; an invalid one is rejected with its errors on the event stream and
//! the last good set stays in force; bad files at start are an input error (exit 2).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-serve-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("resources")).expect("temp dir");
    dir
}

fn cluster(name: &str, cpu_price: f64) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\n  labels: {{residency: eu}}\nspec:\n  provider: sim\n  pricing: {{currency: USD, cpuCoreHour: {cpu_price}, memoryGiBHour: 0.004, egressGiB: 0.01}}\n  capacity: {{cpu: \"32\", memory: 128Gi}}\n---\n"
    )
}

const WORKLOAD: &str = "apiVersion: ferry.dev/v1alpha1\nkind: Workload\nmetadata: {name: api, namespace: shop, labels: {app: api}}\nspec:\n  replicas: 2\n  resources: {cpu: \"1\", memory: 1Gi}\nstatus: {cluster: one}\n";

fn policy(priority: i32) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: shop}}\nspec:\n  priority: {priority}\n  workloadSelector: {{namespaces: [shop]}}\n"
    )
}

fn write_config(dir: &Path) -> PathBuf {
    let config = dir.join("ferry.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\ndata = \"data\"\nresources = [\"resources\"]\nwatch-interval = \"1s\"\n",
    )
    .expect("config");
    config
}

fn serve(config: &Path) -> Served {
    let mut child = Command::new(FERRY)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferry serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("ferry serve printed its address")
            .expect("utf-8");
        if let Some(rest) = line.strip_prefix("ferry serve: listening on ") {
            break rest.trim().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Served { child, url }
}

fn admin_token(data: &Path) -> String {
    let output = Command::new(FERRY)
        .args(["token", "create", "--role", "admin", "--data"])
        .arg(data)
        .output()
        .expect("token");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn get(served: &Served, token: &str, path: &str) -> Value {
    // reqwest has rustls (the default `https` feature): it needs a provider.
    ferry_testenv::install_crypto_provider();
    reqwest::blocking::Client::new()
        .get(format!("{}{path}", served.url))
        .bearer_auth(token)
        .send()
        .expect("answer")
        .json()
        .expect("json")
}

/// Status and body of an unauthenticated GET (/readyz, /metrics).
fn text(served: &Served, path: &str) -> (u16, String) {
    ferry_testenv::install_crypto_provider();
    let response = reqwest::blocking::get(format!("{}{path}", served.url)).expect("answer");
    let status = response.status().as_u16();
    (status, response.text().expect("text"))
}

/// The value of an unlabelled sample in /metrics.
fn sample(metrics: &str, name: &str) -> Option<String> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ').map(str::to_owned))
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn changed_files_take_effect_and_bad_ones_are_rejected_keeping_the_last_good_set() {
    let dir = temp_dir("watch");
    let resources = dir.join("resources");
    std::fs::write(
        resources.join("clusters.yaml"),
        cluster("one", 0.02) + &cluster("two", 0.03),
    )
    .expect("write");
    std::fs::write(resources.join("workloads.yaml"), WORKLOAD).expect("write");
    std::fs::write(resources.join("policies.yaml"), policy(10)).expect("write");
    let config = write_config(&dir);
    let served = serve(&config);
    let token = admin_token(&dir.join("data"));

    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        names(&get(&served, &token, "/api/v1/clusters")),
        ["one", "two"]
    );
    let workloads = get(&served, &token, "/api/v1/workloads");
    assert_eq!(
        workloads["items"][0]["placements"][0]["cluster"], "one",
        "{workloads}"
    );

    let (status, body) = text(&served, "/readyz");
    assert_eq!((status, body.as_str()), (200, "ok"));
    let metrics = text(&served, "/metrics").1;
    assert_eq!(
        sample(&metrics, "ferry_config_reload_failures_total").as_deref(),
        Some("0")
    );
    assert_eq!(
        sample(&metrics, "ferry_config_last_reload_success").as_deref(),
        Some("1")
    );

    // Events: listen for the reloads and rejections.
    let (sender, events) = std::sync::mpsc::channel::<String>();
    let (url, t) = (served.url.clone(), token.clone());
    std::thread::spawn(move || {
        // reqwest has rustls (the default `https` feature): it needs a provider.
        ferry_testenv::install_crypto_provider();
        let response = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .expect("client")
            .get(format!("{url}/api/v1/events"))
            .bearer_auth(t)
            .send()
            .expect("events");
        for line in BufReader::new(response).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));

    // A changed policy and an added cluster take effect without a restart.
    std::fs::write(resources.join("policies.yaml"), policy(20)).expect("write");
    std::fs::write(
        resources.join("clusters.yaml"),
        cluster("one", 0.02) + &cluster("two", 0.03) + &cluster("three", 0.01),
    )
    .expect("write");
    eventually("the new cluster and policy priority are in force", || {
        names(&get(&served, &token, "/api/v1/clusters")) == ["one", "three", "two"]
            && get(&served, &token, "/api/v1/policies")["items"][0]["priority"] == 20
    });
    // The running workload kept its simulated state across the reload.
    assert_eq!(
        get(&served, &token, "/api/v1/workloads")["items"][0]["placements"][0]["cluster"],
        "one"
    );

    // An invalid file is rejected as a whole, with its errors; the last good set stays.
    std::fs::write(
        resources.join("policies.yaml"),
        policy(30).replace("priority", "priorty"),
    )
    .expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    let rejected = loop {
        let line = events.recv_timeout(Duration::from_millis(200)).ok();
        if let Some(line) =
            line.filter(|l| l.starts_with("data:") && l.contains("resources.rejected"))
        {
            break line;
        }
        assert!(Instant::now() < deadline, "no resources.rejected event");
    };
    assert!(
        rejected.contains("policies.yaml") && rejected.contains("priorty"),
        "{rejected}"
    );
    assert_eq!(
        get(&served, &token, "/api/v1/policies")["items"][0]["priority"],
        20
    );
    assert_eq!(
        names(&get(&served, &token, "/api/v1/clusters")),
        ["one", "three", "two"]
    );
    // The rejection shows where a deployment looks: /readyz and the metrics.
    let (status, body) = text(&served, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("rejected") && body.contains("policies.yaml"),
        "{body}"
    );
    let metrics = text(&served, "/metrics").1;
    assert_eq!(
        sample(&metrics, "ferry_config_reload_failures_total").as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(&metrics, "ferry_config_last_reload_success").as_deref(),
        Some("0")
    );

    // Removing a file removes what it defined.
    std::fs::write(resources.join("policies.yaml"), policy(40)).expect("write");
    std::fs::write(
        resources.join("clusters.yaml"),
        cluster("one", 0.02) + &cluster("two", 0.03),
    )
    .expect("write");
    eventually("the cluster removed from the file is gone", || {
        names(&get(&served, &token, "/api/v1/clusters")) == ["one", "two"]
            && get(&served, &token, "/api/v1/policies")["items"][0]["priority"] == 40
    });
    assert_eq!(text(&served, "/readyz"), (200, "ok".to_owned()));
    let metrics = text(&served, "/metrics").1;
    assert_eq!(
        sample(&metrics, "ferry_config_reload_failures_total").as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(&metrics, "ferry_config_last_reload_success").as_deref(),
        Some("1")
    );

    // SIGTERM (what a service manager sends) stops it cleanly, as Ctrl-C does.
    let mut served = served;
    let status = Command::new("kill")
        .args(["-TERM", &served.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = served.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "ferry serve still runs 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(exit.code(), Some(0), "{exit:?}");
}

#[test]
fn bad_files_or_config_at_start_are_input_errors() {
    let dir = temp_dir("bad");
    let resources = dir.join("resources");
    std::fs::write(
        resources.join("clusters.yaml"),
        cluster("one", 0.02).replace("provider: sim", "provider: gke"),
    )
    .expect("write");
    let config = write_config(&dir);
    let output = Command::new(FERRY)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("clusters.yaml") && stderr.contains("gke"),
        "{stderr}"
    );

    std::fs::write(&config, "listen = \"nowhere\"\n").expect("config");
    let output = Command::new(FERRY)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("ferry.toml"));
}

#[test]
fn an_identity_providers_rs256_key_replaces_the_brokers_own() {
    let dir = temp_dir("oidc");
    std::fs::write(
        dir.join("resources").join("clusters.yaml"),
        cluster("one", 0.02),
    )
    .expect("write");
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../auth/testdata");
    let config = dir.join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata = \"data\"\nresources = [\"resources\"]\n[auth]\nissuer = \"https://idp.example\"\naudience = \"ferry\"\nrs256-public-key = \"{}\"\n",
            keys.join("rsa-public.pem").display()
        ),
    )
    .expect("config");
    let served = serve(&config);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let private = std::fs::read(keys.join("rsa-private.pem")).expect("test key");
    let sign = |aud: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &serde_json::json!({"sub": "alice@idp", "roles": ["viewer"], "iss": "https://idp.example", "aud": aud, "iat": now, "exp": now + 600}),
            &jsonwebtoken::EncodingKey::from_rsa_pem(&private).expect("pem"),
        )
        .expect("sign")
    };
    let status = |token: &str| {
        // reqwest has rustls (the default `https` feature): it needs a provider.
        ferry_testenv::install_crypto_provider();
        reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/clusters", served.url))
            .bearer_auth(token)
            .send()
            .expect("answer")
            .status()
            .as_u16()
    };
    assert_eq!(status(&sign("ferry")), 200);
    assert_eq!(status(&sign("someone-else")), 401);
    // The broker's own HS256 tokens are not accepted when a provider signs them.
    assert_eq!(status(&admin_token(&dir.join("data"))), 401);
}

/// A Cluster file for a Kubernetes member reached through `kubeconfig` (relative to the
/// config's folder).
fn kube_cluster(name: &str, kubeconfig: &str) -> String {
    format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: {name}\nspec:\n  provider: kubernetes\n  kubernetes: {{kubeconfig: {kubeconfig}}}\n  pricing: {{currency: USD, cpuCoreHour: 0.03, memoryGiBHour: 0.004, egressGiB: 0.01}}\n---\n"
    )
}

#[test]
fn a_member_that_cannot_be_reached_is_named_once_in_the_error() {
    let dir = temp_dir("kube-9");
    std::fs::write(
        dir.join("resources").join("clusters.yaml"),
        kube_cluster("kube-9", "missing-kubeconfig.yaml"),
    )
    .expect("write");
    let config = write_config(&dir);
    let output = Command::new(FERRY)
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cluster kube-9 rejected"), "{stderr}");
    assert!(!stderr.contains("kube-9: cluster kube-9"), "{stderr}");
}

/// A member whose API server does not answer must not hold up the others: the first
/// pass of the controllers, with every other member's health, comes at once rather than
/// after the adapter's 30 s wait for its watches' first lists.
#[test]
fn the_first_controller_pass_does_not_wait_for_a_member_that_does_not_answer() {
    let dir = temp_dir("first-pass");
    // Port 1 on the loopback: nothing listens there, every connection is refused.
    std::fs::write(
        dir.join("kube-9.yaml"),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-9\n  cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: true}\nusers:\n- name: ferry\n  user: {token: not-a-token}\ncontexts:\n- name: kube-9\n  context: {cluster: kube-9, user: ferry}\ncurrent-context: kube-9\n",
    )
    .expect("kubeconfig");
    std::fs::write(
        dir.join("resources").join("clusters.yaml"),
        format!(
            "{}{}",
            cluster("one", 0.02),
            kube_cluster("kube-9", "kube-9.yaml")
        ),
    )
    .expect("write");
    std::fs::write(dir.join("resources").join("workloads.yaml"), WORKLOAD).expect("write");
    let config = write_config(&dir);
    let started = Instant::now();
    let served = serve(&config);
    let token = admin_token(&dir.join("data"));
    let status = loop {
        let status = get(&served, &token, "/api/v1/controllers");
        if !status["lastPass"].is_null() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no controller pass within 15 s of the start: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let phases: Vec<(String, String)> = status["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                c["phase"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        phases,
        [
            ("kube-9".to_owned(), "suspect".to_owned()),
            ("one".to_owned(), "up".to_owned())
        ],
        "{status}"
    );
}
