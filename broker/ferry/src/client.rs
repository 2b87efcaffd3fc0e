//! The commands that talk to a running broker over its REST API: `ferry get ...`,
//! `ferry migrate ...` and `ferry cluster ...`. They use exactly what any script could use.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::{Value, json};

/// Why a broker command failed; `input` errors exit 2, the others 1.
pub struct ClientError {
    pub input: bool,
    pub message: String,
    /// The broker's HTTP status, when it answered with an error.
    pub status: Option<u16>,
}

impl ClientError {
    fn operation(message: String) -> ClientError {
        ClientError {
            input: false,
            message,
            status: None,
        }
    }
}

pub struct BrokerClient {
    base: String,
    token: String,
    timeout: Duration,
    http: reqwest::Client,
}

/// How much of a non-Ferry answer an error shows: enough to recognise the server.
const SNIPPET_CHARS: usize = 120;

impl BrokerClient {
    /// A client of the broker at `server` (`http://` or `https://`, as `--server` takes
    /// it); every call gives up after `timeout`.
    pub fn new(server: &str, token: &str, timeout: Duration) -> Result<BrokerClient, ClientError> {
        let base = server.trim_end_matches('/');
        check_server_url(base)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ClientError::operation(format!("HTTP client: {}", chain(&e))))?;
        Ok(BrokerClient {
            base: base.to_owned(),
            token: token.to_owned(),
            timeout,
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.answer(request, &url).await
    }

    /// Sends a document as it is (a Cluster file, YAML or JSON).
    async fn send_document(&self, path: &str, text: String) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/yaml")
            .body(text);
        self.answer(request, &url).await
    }

    /// Why a request got no answer, in words a person can act on: the timeout and the
    /// flag that sets it, or the cause reqwest keeps in its source chain ("connection
    /// refused", a DNS or TLS failure), which its own text leaves out.
    fn unanswered(&self, error: &reqwest::Error, url: &str) -> ClientError {
        let message = if error.is_timeout() {
            format!(
                "the broker at {} did not answer {url} within {} (set --timeout or FERRY_TIMEOUT to wait longer)",
                self.base,
                seconds(self.timeout)
            )
        } else {
            format!("cannot reach the broker at {}: {}", self.base, chain(error))
        };
        ClientError::operation(message)
    }

    async fn answer(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Value, ClientError> {
        let response = request.send().await.map_err(|e| self.unanswered(&e, url))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("no content type")
            .to_owned();
        let text = response.text().await.map_err(|e| {
            if e.is_timeout() {
                self.unanswered(&e, url)
            } else {
                ClientError::operation(format!("reading the answer of {url}: {}", chain(&e)))
            }
        })?;
        let parsed: Option<Value> = if text.trim().is_empty() {
            Some(Value::Null)
        } else {
            serde_json::from_str(&text).ok()
        };
        // Every answer of a Ferry broker is JSON, and every error is {"error": {"message"}}:
        // anything else is another server at that address (or a proxy in front of it).
        let message = match &parsed {
            Some(value) if status.is_success() => return Ok(value.clone()),
            Some(value) => value["error"]["message"].as_str().map(str::to_owned),
            None => None,
        };
        let Some(message) = message else {
            return Err(ClientError::operation(format!(
                "{} does not answer like a Ferry broker (is --server right?): {url} answered {status} ({content_type}): {}",
                self.base,
                snippet(&text)
            )));
        };
        Err(ClientError {
            // What the user asked for is wrong (bad input, unknown names): exit 2.
            input: matches!(status.as_u16(), 400 | 404),
            message: format!("{} ({})", message, status.as_u16()),
            status: Some(status.as_u16()),
        })
    }

    pub async fn get(&self, what: &str, json_output: bool) -> Result<(), ClientError> {
        let path = match what {
            "clusters" | "workloads" | "migrations" | "placements" => format!("/api/v1/{what}"),
            other => {
                return Err(ClientError {
                    input: true,
                    message: format!(
                        "cannot get {other}: clusters, workloads, migrations or placements"
                    ),
                    status: None,
                });
            }
        };
        let value = self.call(reqwest::Method::GET, &path, None).await?;
        let mut out = std::io::stdout().lock();
        if json_output {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            return Ok(());
        }
        let s = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        let money = |v: &Value| {
            v.as_f64()
                // Plus zero: an older broker's -0.0 for nothing prints as 0.00.
                .map_or_else(|| "-".to_owned(), |x| format!("{:.2}", x + 0.0))
        };
        let items = value["items"].as_array().cloned().unwrap_or_default();
        let rows: Vec<Vec<String>> = match what {
            "clusters" => std::iter::once(
                [
                    "CLUSTER",
                    "PROVIDER",
                    "HEALTH",
                    "CPU USED/CAPACITY",
                    "MEMORY USED/CAPACITY",
                    "WORKLOADS",
                    "MONTHLY",
                    "CORE-HOUR",
                    "GIB-HOUR",
                    "PRICES FROM",
                ]
                .map(str::to_owned)
                .to_vec(),
            )
            .chain(items.iter().map(|c| {
                let rate = |v: &Value| {
                    v.as_f64()
                        .map_or_else(|| "-".to_owned(), |r| format!("{r:.6}"))
                };
                vec![
                    s(&c["name"]),
                    s(&c["provider"]),
                    s(&c["health"]),
                    format!("{}/{}", s(&c["used"]["cpu"]), s(&c["capacity"]["cpu"])),
                    format!(
                        "{}/{}",
                        s(&c["used"]["memory"]),
                        s(&c["capacity"]["memory"])
                    ),
                    s(&c["workloads"]),
                    money(&c["monthlyCost"]),
                    rate(&c["pricing"]["cpuCoreHour"]),
                    rate(&c["pricing"]["memoryGibHour"]),
                    s(&c["pricing"]["source"]),
                ]
            }))
            .collect(),
            "workloads" => std::iter::once(
                [
                    "WORKLOAD", "REPLICAS", "CPU", "MEMORY", "CLUSTERS", "MONTHLY",
                ]
                .map(str::to_owned)
                .to_vec(),
            )
            .chain(items.iter().map(|w| {
                let clusters: Vec<String> = w["placements"]
                    .as_array()
                    .map(|p| {
                        p.iter()
                            .map(|p| format!("{} x{}", s(&p["cluster"]), s(&p["replicas"])))
                            .collect()
                    })
                    .unwrap_or_default();
                vec![
                    format!("{}/{}", s(&w["namespace"]), s(&w["name"])),
                    s(&w["replicas"]),
                    s(&w["resources"]["cpu"]),
                    s(&w["resources"]["memory"]),
                    clusters.join(", "),
                    money(&w["monthlyCost"]),
                ]
            }))
            .collect(),
            "migrations" => std::iter::once(
                ["ID", "WORKLOAD", "FROM", "TO", "STATE", "STEPS", "CREATED"]
                    .map(str::to_owned)
                    .to_vec(),
            )
            .chain(items.iter().map(|m| {
                vec![
                    s(&m["id"]),
                    s(&m["workload"]),
                    s(&m["from"]),
                    s(&m["to"]),
                    format!(
                        "{}{}",
                        s(&m["state"]),
                        if m["dryRun"] == true {
                            " (dry run)"
                        } else {
                            ""
                        }
                    ),
                    steps_line(m),
                    s(&m["createdAt"]),
                ]
            }))
            .collect(),
            _ => {
                let mut rows = vec![
                    ["WORKLOAD", "CLUSTER", "REPLICAS"]
                        .map(str::to_owned)
                        .to_vec(),
                ];
                for p in value["current"].as_array().cloned().unwrap_or_default() {
                    rows.push(vec![s(&p["workload"]), s(&p["cluster"]), s(&p["replicas"])]);
                }
                let _ = write!(out, "{}", crate::plan_output::columns(&rows));
                let moves = value["plan"]["moves"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let _ = writeln!(out, "\nmoves the policies want now: {}", moves.len());
                let mut rows = vec![
                    ["WORKLOAD", "FROM", "TO", "SAVINGS/MONTH", "CONTROLLERS"]
                        .map(str::to_owned)
                        .to_vec(),
                ];
                for m in moves {
                    let decision = &m["decision"];
                    let controllers =
                        match (decision["verdict"].as_str(), decision["notBefore"].as_str()) {
                            (None, _) => "-".to_owned(),
                            (Some("hold"), Some(at)) => format!("hold until {at}"),
                            (Some(verdict), _) => verdict.to_owned(),
                        };
                    rows.push(vec![
                        s(&m["workload"]),
                        s(&m["from"]),
                        s(&m["to"]),
                        money(&m["monthlySavings"]),
                        controllers,
                    ]);
                }
                rows
            }
        };
        let _ = write!(out, "{}", crate::plan_output::columns(&rows));
        Ok(())
    }

    pub async fn migrate(
        &self,
        workload: &str,
        to: &str,
        request: &MigrateRequest,
        json_output: bool,
    ) -> Result<(), ClientError> {
        let created = self
            .call(
                reqwest::Method::POST,
                "/api/v1/migrations",
                Some(json!({
                    "workload": workload,
                    "to": to,
                    "dryRun": request.dry_run,
                    "acceptEmptyVolumes": request.accept_empty_volumes,
                    "force": request.force,
                })),
            )
            .await?;
        if request.dry_run {
            // The broker answered with its findings; nothing was started, so there is
            // nothing to wait for.
            return print_dry_run(&created, json_output);
        }
        let wait = request.wait;
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        if !wait {
            if json_output {
                print_json(&created);
            } else {
                println!(
                    "migration {id} accepted: {workload} {} -> {to}",
                    created["from"].as_str().unwrap_or("?")
                );
            }
            return Ok(());
        }
        let mut progress = ProgressLine::new();
        let migration = loop {
            let migration = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/migrations/{id}"),
                    None,
                )
                .await?;
            progress.show(&format!(
                "{id} {} [{}]{}",
                migration["state"].as_str().unwrap_or("?"),
                steps_line(&migration),
                migration["waitingFor"]
                    .as_str()
                    .map(|w| format!(" waiting for: {w}"))
                    .unwrap_or_default(),
            ));
            let state = migration["state"].as_str().unwrap_or_default();
            if matches!(state, "done" | "rolledBack" | "failed" | "cancelled") {
                progress.finish();
                break migration;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        if json_output {
            print_json(&migration);
        }
        match migration["state"].as_str() {
            Some("done") => {
                if !json_output {
                    println!(
                        "{workload} now runs on {to}{}",
                        migration["monthlySavings"]
                            .as_f64()
                            .map(|s| format!("; monthly savings {s:.2}"))
                            .unwrap_or_default()
                    );
                }
                Ok(())
            }
            state => Err(ClientError::operation(format!(
                "migration {id} ended {}: {}",
                state.unwrap_or("?"),
                migration["reason"].as_str().unwrap_or("no reason given")
            ))),
        }
    }
}

/// What `ferry migrate` asks for besides the workload and the target.
#[derive(Clone, Debug, Default)]
pub struct MigrateRequest {
    pub dry_run: bool,
    pub wait: bool,
    pub accept_empty_volumes: bool,
    pub force: bool,
}

/// A dry run's findings; exit 1 when the move would not start or fail its plan.
fn print_dry_run(answer: &Value, json_output: bool) -> Result<(), ClientError> {
    if json_output {
        print_json(answer);
    } else {
        let verdict = if answer["feasible"] == true {
            "would start"
        } else {
            "would not start"
        };
        println!(
            "dry run, nothing changed: {} {} -> {} {verdict}: {}",
            answer["workload"].as_str().unwrap_or("?"),
            answer["from"].as_str().unwrap_or("?"),
            answer["to"].as_str().unwrap_or("?"),
            answer["message"].as_str().unwrap_or("")
        );
        for claim in answer["claims"].as_array().into_iter().flatten() {
            let size = claim["sizeBytes"]
                .as_u64()
                .map(|b| format!(" ({:.1} GiB)", b as f64 / f64::from(1u32 << 30)))
                .unwrap_or_default();
            println!(
                "  claim {}{size}: {}",
                claim["name"].as_str().unwrap_or("?"),
                claim["fate"].as_str().unwrap_or("?")
            );
        }
    }
    if answer["feasible"] == true {
        Ok(())
    } else {
        Err(ClientError::operation(
            "the move would not start (see above)".to_owned(),
        ))
    }
}

/// What `--wait` shows on stderr while it waits: one line with the time waited, written
/// again in place on a terminal as the time goes by; otherwise (logs) a new line only when
/// something other than the time changed.
struct ProgressLine {
    interactive: bool,
    /// The text last shown, without the time.
    last: String,
    started: std::time::Instant,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        ProgressLine {
            interactive: std::io::stderr().is_terminal(),
            last: String::new(),
            started: std::time::Instant::now(),
        }
    }

    fn show(&mut self, text: &str) {
        let elapsed = self.started.elapsed().as_secs();
        if let Some(line) = self.next(text, elapsed) {
            if self.interactive {
                eprint!("\r\x1b[2K{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }

    /// The line to write for `text` after `elapsed` seconds, if any.
    fn next(&mut self, text: &str, elapsed: u64) -> Option<String> {
        let changed = text != self.last;
        if !changed && !self.interactive {
            return None;
        }
        self.last = text.to_owned();
        Some(format!("{text} {elapsed}s"))
    }

    /// Ends the line written in place.
    fn finish(&self) {
        if self.interactive {
            eprintln!();
        }
    }
}

fn steps_line(migration: &Value) -> String {
    migration["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    format!(
                        "{}:{}",
                        s["name"].as_str().unwrap_or("?"),
                        s["state"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// What `ferry cluster ...` waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ClusterWait {
    /// The create or resize to end (phase ready, or failed).
    Settled,
    /// The cluster to be gone (or the delete to fail).
    Gone,
}

impl BrokerClient {
    /// `ferry cluster create -f FILE`: provisions the cluster the file describes.
    pub async fn cluster_create(
        &self,
        path: &std::path::Path,
        wait: bool,
        json_output: bool,
    ) -> Result<(), ClientError> {
        let text = std::fs::read_to_string(path).map_err(|e| ClientError {
            input: true,
            message: format!("{}: {e}", path.display()),
            status: None,
        })?;
        let record = self.send_document("/api/v1/clusters", text).await?;
        let name = record["cluster"].as_str().unwrap_or_default().to_owned();
        self.after_cluster_action(
            &name,
            record,
            "provisioning",
            wait,
            ClusterWait::Settled,
            json_output,
        )
        .await
    }

    /// `ferry cluster resize NAME --workers N`.
    pub async fn cluster_resize(
        &self,
        name: &str,
        workers: u32,
        wait: bool,
        json_output: bool,
    ) -> Result<(), ClientError> {
        let record = self
            .call(
                reqwest::Method::POST,
                &format!("/api/v1/clusters/{name}/resize"),
                Some(json!({"workers": workers})),
            )
            .await?;
        self.after_cluster_action(
            name,
            record,
            "resize",
            wait,
            ClusterWait::Settled,
            json_output,
        )
        .await
    }

    /// `ferry cluster delete NAME [--force]`.
    pub async fn cluster_delete(
        &self,
        name: &str,
        force: bool,
        wait: bool,
        json_output: bool,
    ) -> Result<(), ClientError> {
        let query = if force { "?force=true" } else { "" };
        let record = self
            .call(
                reqwest::Method::DELETE,
                &format!("/api/v1/clusters/{name}{query}"),
                None,
            )
            .await?;
        self.after_cluster_action(name, record, "delete", wait, ClusterWait::Gone, json_output)
            .await
    }

    /// `ferry cluster price NAME --cpu-core-hour X --memory-gib-hour Y`.
    pub async fn cluster_price(
        &self,
        name: &str,
        cpu_core_hour: f64,
        memory_gib_hour: f64,
        egress_gib: Option<f64>,
        json_output: bool,
    ) -> Result<(), ClientError> {
        let mut body = json!({"cpuCoreHour": cpu_core_hour, "memoryGiBHour": memory_gib_hour});
        if let Some(egress) = egress_gib {
            body["egressGiB"] = json!(egress);
        }
        let answer = self
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/clusters/{name}/pricing"),
                Some(body),
            )
            .await?;
        if json_output {
            print_json(&answer);
        } else {
            let p = &answer["pricing"];
            println!(
                "cluster {name}: {} {} a core-hour, {} a GiB-hour, {} a GiB of egress",
                p["currency"].as_str().unwrap_or(""),
                p["cpuCoreHour"],
                p["memoryGiBHour"],
                p["egressGiB"]
            );
        }
        Ok(())
    }

    /// `ferry controller status`.
    pub async fn controller_status(&self, json_output: bool) -> Result<(), ClientError> {
        let status = self
            .call(reqwest::Method::GET, "/api/v1/controllers", None)
            .await?;
        if json_output {
            print_json(&status);
            return Ok(());
        }
        let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        println!(
            "mode: {}   last pass: {}",
            text(&status["mode"]),
            text(&status["lastPass"])
        );
        if let Some(error) = status["error"].as_str() {
            println!("error: {error}");
        }
        let mut clusters = vec![vec![
            "CLUSTER".to_owned(),
            "PHASE".to_owned(),
            "SINCE".to_owned(),
            "TARGET".to_owned(),
        ]];
        for c in status["clusters"].as_array().into_iter().flatten() {
            clusters.push(vec![
                text(&c["name"]),
                text(&c["phase"]),
                text(&c["since"]),
                if c["target"] == true {
                    "yes".to_owned()
                } else {
                    text(&c["notTargetBecause"])
                },
            ]);
        }
        print!("{}", crate::plan_output::columns(&clusters));
        let mut decisions = vec![vec![
            "WORKLOAD".to_owned(),
            "MOVE".to_owned(),
            "KIND".to_owned(),
            "VERDICT".to_owned(),
            "NOT BEFORE".to_owned(),
            "WHY".to_owned(),
        ]];
        for d in status["decisions"].as_array().into_iter().flatten() {
            decisions.push(vec![
                text(&d["workload"]),
                format!("{} -> {}", text(&d["from"]), text(&d["to"])),
                text(&d["kind"]),
                match d["migration"].as_str() {
                    Some(id) => format!("start ({id})"),
                    None => text(&d["verdict"]),
                },
                text(&d["notBefore"]),
                text(&d["reason"]),
            ]);
        }
        if decisions.len() == 1 {
            println!("\nno moves proposed");
        } else {
            println!();
            print!("{}", crate::plan_output::columns(&decisions));
        }
        let failed = status["failedMoves"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !failed.is_empty() {
            let mut rows = vec![vec![
                "FAILED MOVE".to_owned(),
                "FAILURES".to_owned(),
                "HELD".to_owned(),
                "LAST REASON".to_owned(),
            ]];
            for f in &failed {
                rows.push(vec![
                    format!("{} -> {}", text(&f["workload"]), text(&f["to"])),
                    f["failures"].to_string(),
                    if f["needsOperator"] == true {
                        format!("needs an operator since {}", text(&f["needsOperatorSince"]))
                    } else {
                        format!("retry at {}", text(&f["retryAt"]))
                    },
                    text(&f["reason"]),
                ]);
            }
            println!();
            print!("{}", crate::plan_output::columns(&rows));
            if failed.iter().any(|f| f["needsOperator"] == true) {
                println!(
                    "A move that needs an operator is tried again when its policy or its clusters' prices change, or after `ferry controller clear WORKLOAD`."
                );
            }
        }
        Ok(())
    }

    /// `ferry controller clear WORKLOAD [--to CLUSTER]`.
    pub async fn controller_clear(
        &self,
        workload: &str,
        to: Option<&str>,
        json_output: bool,
    ) -> Result<(), ClientError> {
        let mut body = json!({"workload": workload});
        if let Some(to) = to {
            body["to"] = json!(to);
        }
        let answer = self
            .call(
                reqwest::Method::POST,
                "/api/v1/controllers/clear",
                Some(body),
            )
            .await?;
        if json_output {
            print_json(&answer);
        } else {
            let cleared: Vec<&str> = answer["cleared"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "{workload}: failures set aside for its moves to {}; the next pass may try again",
                cleared.join(", ")
            );
        }
        Ok(())
    }

    /// `ferry controller mode auto|recommend`.
    pub async fn controller_mode(&self, mode: &str, json_output: bool) -> Result<(), ClientError> {
        let answer = self
            .call(
                reqwest::Method::PUT,
                "/api/v1/controllers/mode",
                Some(json!({"mode": mode})),
            )
            .await?;
        if json_output {
            print_json(&answer);
        } else {
            println!(
                "controllers: {} mode",
                answer["mode"].as_str().unwrap_or(mode)
            );
        }
        Ok(())
    }

    /// `ferry cluster status NAME`.
    pub async fn cluster_status(&self, name: &str, json_output: bool) -> Result<(), ClientError> {
        let record = self
            .call(
                reqwest::Method::GET,
                &format!("/api/v1/clusters/{name}/provisioning"),
                None,
            )
            .await?;
        if json_output {
            print_json(&record);
        } else {
            println!("{}", provisioning_line(&record));
            if let Some(reason) = record["reason"].as_str() {
                println!("reason: {reason}");
            }
        }
        Ok(())
    }

    async fn after_cluster_action(
        &self,
        name: &str,
        record: Value,
        what: &str,
        wait: bool,
        until: ClusterWait,
        json_output: bool,
    ) -> Result<(), ClientError> {
        if !wait {
            if json_output {
                print_json(&record);
            } else {
                println!(
                    "cluster {name}: {what} accepted ({})",
                    provisioning_line(&record)
                );
            }
            return Ok(());
        }
        let mut progress = ProgressLine::new();
        let path = format!("/api/v1/clusters/{name}/provisioning");
        let outcome = loop {
            let record = match self.call(reqwest::Method::GET, &path, None).await {
                Ok(record) => record,
                // The record goes when the delete is over.
                Err(error) if until == ClusterWait::Gone && error.status == Some(404) => {
                    break json!({"cluster": name, "phase": "deleted"});
                }
                Err(error) => return Err(error),
            };
            progress.show(&provisioning_line(&record));
            match record["phase"].as_str() {
                Some("failed") => break record,
                Some("ready") if until == ClusterWait::Settled => break record,
                _ => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        progress.finish();
        if json_output {
            print_json(&outcome);
        }
        match (outcome["phase"].as_str(), outcome["reason"].as_str()) {
            (Some("failed"), reason) => Err(ClientError::operation(format!(
                "cluster {name}: {what} failed: {}",
                reason.unwrap_or("no reason given")
            ))),
            // A resize that failed leaves the cluster ready, with the reason.
            (_, Some(reason)) if what == "resize" => {
                Err(ClientError::operation(format!("cluster {name}: {reason}")))
            }
            (phase, _) => {
                if !json_output {
                    println!("cluster {name} is {}", phase.unwrap_or("?"));
                }
                Ok(())
            }
        }
    }
}

fn provisioning_line(record: &Value) -> String {
    format!(
        "{} {} workers={} stack={} {}",
        record["cluster"].as_str().unwrap_or("?"),
        record["phase"].as_str().unwrap_or("?"),
        record["workers"],
        record["stack"].as_str().unwrap_or("-"),
        record["progress"].as_str().unwrap_or("")
    )
    .trim_end()
    .to_owned()
}

/// `-o json` output: the broker's answer, indented.
fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `--server` must be an absolute http(s) URL: reqwest's own word for anything else is
/// "builder error", and `localhost:8080` even parses, as a URL of scheme `localhost`.
fn check_server_url(server: &str) -> Result<(), ClientError> {
    let input = |message: String| ClientError {
        input: true,
        message,
        status: None,
    };
    let hint = if server.contains("://") {
        String::new()
    } else {
        format!(" (did you mean http://{server}?)")
    };
    match reqwest::Url::parse(server) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(url) if matches!(url.scheme(), "http" | "https") => {
            Err(input(format!("--server {server}: the URL names no host")))
        }
        Ok(url) if server.contains("://") => Err(input(format!(
            "--server {server}: the scheme must be http or https, not {}",
            url.scheme()
        ))),
        Ok(_) => Err(input(format!(
            "--server {server}: not a URL with http:// or https://{hint}"
        ))),
        Err(error) => Err(input(format!(
            "--server {server}: not a URL with http:// or https:// ({error}){hint}"
        ))),
    }
}

/// An error and its causes on one line (reqwest's own text stops at "error sending
/// request"; the cause a person can act on is further down).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The start of an answer, on one line.
fn snippet(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return "an empty body".to_owned();
    }
    match flat.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{:?}…", &flat[..cut]),
        None => format!("{flat:?}"),
    }
}

fn seconds(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{} s", millis / 1000)
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::ProgressLine;

    fn progress(interactive: bool) -> ProgressLine {
        ProgressLine {
            interactive,
            last: String::new(),
            started: std::time::Instant::now(),
        }
    }

    #[test]
    fn a_log_gets_a_line_only_when_the_progress_changes() {
        let mut log = progress(false);
        let shown: Vec<Option<String>> = [
            ("m running [plan:running]", 0),
            ("m running [plan:running]", 1),
            ("m running [plan:running]", 2),
            (
                "m running [plan:done start:running] waiting for: 0 of 3 available",
                3,
            ),
            (
                "m running [plan:done start:running] waiting for: 0 of 3 available",
                4,
            ),
            ("m done [plan:done start:done]", 9),
        ]
        .into_iter()
        .map(|(text, at)| log.next(text, at))
        .collect();
        assert_eq!(
            shown,
            [
                Some("m running [plan:running] 0s".to_owned()),
                None,
                None,
                Some(
                    "m running [plan:done start:running] waiting for: 0 of 3 available 3s"
                        .to_owned()
                ),
                None,
                Some("m done [plan:done start:done] 9s".to_owned()),
            ]
        );
        // On a terminal the same line is written again in place, with the time.
        let mut terminal = progress(true);
        assert!(terminal.next("m running", 0).is_some());
        assert_eq!(
            terminal.next("m running", 1),
            Some("m running 1s".to_owned())
        );
    }
}
