//! What operators rely on, on the real `ferry demo` binary: a clean stop on SIGTERM,
//! `/metrics` in the strict text exposition format with the figures a dashboard graphs,
//! and the pricing a cluster shows accepted back by `PUT …/pricing`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// A `ferry demo` process on a loopback port; killed on drop unless it already ended.
struct Demo {
    child: Child,
    url: String,
    admin: String,
    stderr: mpsc::Receiver<String>,
    data: PathBuf,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

impl Demo {
    fn start(name: &str) -> Demo {
        let data =
            std::env::temp_dir().join(format!("ferry-ops-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data);
        let mut child = Command::new(FERRY)
            .args(["demo", "--listen", "127.0.0.1:0", "--rollback-window", "0s"])
            .args(["--rollout-time", "1s", "--data"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferry demo");
        let (sender, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut url, mut admin) = (None, None);
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
        std::thread::spawn(move || for _ in lines {});
        Demo {
            child,
            url: url.unwrap_or_default(),
            admin: admin.unwrap_or_default(),
            stderr,
            data,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        // reqwest has rustls (the default `https` feature): it needs a provider.
        ferry_testenv::install_crypto_provider();
        let mut request = reqwest::blocking::Client::new()
            .request(
                method.parse().expect("method"),
                format!("{}{path}", self.url),
            )
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("an answer");
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    }

    fn metrics(&self) -> String {
        ferry_testenv::install_crypto_provider();
        let response = reqwest::blocking::get(format!("{}/metrics", self.url)).expect("an answer");
        assert_eq!(response.status().as_u16(), 200);
        response.text().expect("text")
    }

    /// Moves `workload` to `to` and waits until the migration is done.
    fn migrate(&self, workload: &str, to: &str) {
        let (status, created) = self.call(
            "POST",
            "/api/v1/migrations",
            Some(json!({"workload": workload, "to": to})),
        );
        assert_eq!(status, 202, "{created}");
        let id = created["id"].as_str().expect("an id").to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, migration) = self.call("GET", &format!("/api/v1/migrations/{id}"), None);
            match migration["state"].as_str() {
                Some("done") => return,
                Some("failed" | "rolledBack" | "cancelled") => panic!("{migration}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "not done: {migration}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn sigterm_stops_the_demo_cleanly_with_exit_0() {
    let mut demo = Demo::start("sigterm");
    assert_eq!(demo.call("GET", "/api/v1/clusters", None).0, 200);
    let status = Command::new("kill")
        .args(["-TERM", &demo.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = demo.child.try_wait().expect("wait") {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let logs: Vec<String> = demo.stderr.try_iter().collect();
    // Killed by the signal, it would have no code (143 in a shell).
    assert_eq!(exit.code(), Some(0), "{exit:?}: {logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.contains("ferry demo: stopping (SIGTERM)")),
        "{logs:?}"
    );
    assert!(logs.iter().any(|l| l == "ferry demo: stopped"), "{logs:?}");
}

#[test]
fn metrics_pass_a_strict_exposition_parser_with_capacity_build_and_api_spellings() {
    let demo = Demo::start("metrics");
    demo.migrate("batch/reports", "gke-europe-west1");
    let text = demo.metrics();
    let families = match strict::parse(&text) {
        Ok(families) => families,
        Err(error) => panic!("{error}\n{text}"),
    };
    let family = |name: &str| {
        families
            .get(name)
            .unwrap_or_else(|| panic!("no family {name}:\n{text}"))
    };
    // Every member's capacity, so that utilisation can be graphed.
    let clusters: BTreeSet<String> = demo.call("GET", "/api/v1/clusters", None).1["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(clusters.len(), 3);
    let per_cluster = |name: &str| -> BTreeMap<String, f64> {
        let f = family(name);
        assert_eq!(f.kind, "gauge", "{name}");
        f.samples
            .iter()
            .map(|s| (s.labels["cluster"].clone(), s.value))
            .collect()
    };
    for resource in ["cpu", "memory"] {
        let unit = if resource == "cpu" { "cores" } else { "bytes" };
        let allocatable = per_cluster(&format!("ferry_cluster_{resource}_allocatable_{unit}"));
        let requested = per_cluster(&format!("ferry_cluster_{resource}_requested_{unit}"));
        assert_eq!(
            allocatable.keys().cloned().collect::<BTreeSet<_>>(),
            clusters
        );
        assert_eq!(requested.keys().cloned().collect::<BTreeSet<_>>(), clusters);
        assert!(requested.values().sum::<f64>() > 0.0, "{requested:?}");
        for (cluster, used) in &requested {
            assert!(
                *used <= allocatable[cluster],
                "{resource} on {cluster}: {used} of {}",
                allocatable[cluster]
            );
        }
    }
    assert_eq!(per_cluster("ferry_cluster_up").len(), 3);

    // The build, as `ferry --version` names it.
    let build = &family("ferry_build_info").samples;
    assert_eq!(build.len(), 1);
    assert_eq!(build[0].value, 1.0);
    assert_eq!(build[0].labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(!build[0].labels["commit"].is_empty());
    let version = Command::new(FERRY).arg("--version").output().expect("runs");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.contains(&format!("features: {}", build[0].labels["features"])),
        "{version} vs {:?}",
        build[0].labels
    );

    // States as the API spells them.
    let migrations = family("ferry_migrations");
    let states: BTreeMap<&str, f64> = migrations
        .samples
        .iter()
        .map(|s| (s.labels["state"].as_str(), s.value))
        .collect();
    assert_eq!(states.get("done"), Some(&1.0), "{states:?}");
    // The step summary stays typed, with its four steps.
    let steps = family("ferry_migration_step_seconds");
    assert_eq!(steps.kind, "summary");
    let counted: BTreeSet<&str> = steps
        .samples
        .iter()
        .filter(|s| s.name.ends_with("_count"))
        .map(|s| s.labels["step"].as_str())
        .collect();
    assert_eq!(
        counted,
        BTreeSet::from(["drain", "plan", "prepare", "start"])
    );
    // The demo reloads no files: nothing rejected.
    assert_eq!(
        family("ferry_config_reload_failures_total").samples[0].value,
        0.0
    );
    assert_eq!(
        family("ferry_config_last_reload_success").samples[0].value,
        1.0
    );
}

/// The checker fails on what `/metrics` used to answer, so a pass above means something.
#[test]
fn the_strict_parser_refuses_interleaved_families_and_bad_lines() {
    let interleaved = "# TYPE ferry_cluster_up gauge\n# TYPE ferry_cluster_workloads gauge\n\
        ferry_cluster_up{cluster=\"a\"} 1\nferry_cluster_workloads{cluster=\"a\"} 3\n\
        ferry_cluster_up{cluster=\"b\"} 1\n";
    let error = strict::parse(interleaved).expect_err("interleaved");
    assert!(error.contains("ferry_cluster_up"), "{error}");
    for (bad, why) in [
        ("ferry_x 1\n", "no TYPE"),
        (
            "# TYPE ferry_x gauge\n# TYPE ferry_x gauge\nferry_x 1\n",
            "twice",
        ),
        ("# TYPE ferry_x gauge\nferry_x{a=\"b\\q\"} 1\n", "escape"),
        (
            "# TYPE ferry_x gauge\nferry_x{a=\"1\",a=\"2\"} 1\n",
            "twice",
        ),
        ("# TYPE ferry_x gauge\nferry_x one\n", "value"),
        ("# TYPE ferry_x counter\nferry_x 1\n", "_total"),
        ("# TYPE ferry_s summary\nferry_s_sum 1\n", "_count"),
        (
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "cumulative",
        ),
        ("# TYPE ferry_x gauge\nferry_x 1", "newline"),
        ("# TYPE 1x gauge\n", "name"),
    ] {
        let error = strict::parse(bad).expect_err(bad);
        assert!(error.contains(why), "{bad:?}: {error}");
    }
}

#[test]
fn the_pricing_get_shows_is_accepted_back_by_put() {
    let demo = Demo::start("pricing");
    let (_, clusters) = demo.call("GET", "/api/v1/clusters", None);
    let cluster = &clusters["items"][0];
    let name = cluster["name"].as_str().expect("a name");
    let mut pricing = cluster["pricing"].clone();
    assert!(pricing["memoryGibHour"].is_number(), "{pricing}");
    let memory = pricing["memoryGibHour"].as_f64().expect("a rate") * 2.0;
    pricing["memoryGibHour"] = json!(memory);
    let path = format!("/api/v1/clusters/{name}/pricing");
    // GET's object as it is (currency, source and all), one rate changed.
    let (status, answer) = demo.call("PUT", &path, Some(pricing.clone()));
    assert_eq!(status, 200, "{answer}");
    let (_, after) = demo.call("GET", "/api/v1/clusters", None);
    let shown = after["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["name"] == name)
        .expect("the cluster")["pricing"]
        .clone();
    assert_eq!(shown["memoryGibHour"].as_f64(), Some(memory), "{shown}");
    assert_eq!(shown["egressGib"], pricing["egressGib"]);

    // The files' spelling still works; both at once, or another currency, do not.
    let (status, answer) = demo.call(
        "PUT",
        &path,
        Some(json!({"cpuCoreHour": 0.04, "memoryGiBHour": 0.005, "egressGiB": 0.02})),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = demo.call(
        "PUT",
        &path,
        Some(json!({"cpuCoreHour": 0.04, "memoryGiBHour": 0.005, "memoryGibHour": 0.005})),
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("duplicate"),
        "{answer}"
    );
    pricing["currency"] = json!("XTS");
    let (status, answer) = demo.call("PUT", &path, Some(pricing));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("currency"),
        "{answer}"
    );
}

/// A strict reader of the Prometheus text exposition format (0.0.4), stricter than
/// Prometheus itself where Ferry's output should be: every family typed, HELP and TYPE at
/// most once and before its samples, a family's samples together, no series twice, names
/// and label escapes valid, counters named `_total`, summaries and histograms complete.
mod strict {
    use std::collections::{BTreeMap, BTreeSet};

    #[derive(Debug)]
    pub struct Sample {
        pub name: String,
        pub labels: BTreeMap<String, String>,
        pub value: f64,
    }

    #[derive(Debug, Default)]
    pub struct Family {
        pub kind: String,
        pub help: Option<String>,
        pub samples: Vec<Sample>,
    }

    fn metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn label_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with("__")
    }

    /// The family a sample name belongs to, given the declared types.
    fn family_of(name: &str, types: &BTreeMap<String, Family>) -> Option<String> {
        if types.contains_key(name) {
            return Some(name.to_owned());
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && let Some(family) = types.get(base)
                && (family.kind == "histogram" || (family.kind == "summary" && suffix != "_bucket"))
            {
                return Some(base.to_owned());
            }
        }
        None
    }

    fn labels(text: &str, line: &str) -> Result<BTreeMap<String, String>, String> {
        let mut labels = BTreeMap::new();
        let mut rest = text;
        while !rest.is_empty() {
            let (name, after) = rest
                .split_once("=\"")
                .ok_or_else(|| format!("label without =\"value\": {line}"))?;
            if !label_name(name) {
                return Err(format!("bad label name {name:?}: {line}"));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated label value: {line}")),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => {
                            return Err(format!("bad escape {other:?} in label value: {line}"));
                        }
                    },
                    Some((_, '\n')) => return Err(format!("raw newline in label value: {line}")),
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.insert(name.to_owned(), value).is_some() {
                return Err(format!("label {name} twice: {line}"));
            }
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        Ok(labels)
    }

    fn value(text: &str, line: &str) -> Result<f64, String> {
        match text {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => text
                .parse::<f64>()
                .map_err(|_| format!("bad sample value {text:?}: {line}")),
        }
    }

    pub fn parse(text: &str) -> Result<BTreeMap<String, Family>, String> {
        if !text.ends_with('\n') {
            return Err("the exposition does not end with a newline".to_owned());
        }
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        let mut closed: BTreeSet<String> = BTreeSet::new();
        let mut current: Option<String> = None;
        let mut series: BTreeSet<String> = BTreeSet::new();
        let mut enter = |name: &str, current: &mut Option<String>| -> Result<(), String> {
            if current.as_deref() == Some(name) {
                return Ok(());
            }
            if let Some(previous) = current.take() {
                closed.insert(previous);
            }
            if closed.contains(name) {
                return Err(format!("family {name} appears again after another family"));
            }
            *current = Some(name.to_owned());
            Ok(())
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                if !metric_name(name) {
                    return Err(format!("bad metric name {name:?}: {line}"));
                }
                enter(name, &mut current)?;
                let family = families.entry(name.to_owned()).or_default();
                if family.help.replace(help.to_owned()).is_some() {
                    return Err(format!("HELP of {name} twice"));
                }
                if !family.samples.is_empty() {
                    return Err(format!("HELP of {name} after its samples"));
                }
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| format!("TYPE without a type: {line}"))?;
                if !metric_name(name) {
                    return Err(format!("bad metric name {name:?}: {line}"));
                }
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(format!("unknown type {kind}: {line}"));
                }
                if kind == "untyped" {
                    return Err(format!("{name} is untyped"));
                }
                if kind == "counter" && !name.ends_with("_total") {
                    return Err(format!("counter {name} is not named _total"));
                }
                enter(name, &mut current)?;
                let family = families.entry(name.to_owned()).or_default();
                if !family.kind.is_empty() {
                    return Err(format!("TYPE of {name} twice"));
                }
                if !family.samples.is_empty() {
                    return Err(format!("TYPE of {name} after its samples"));
                }
                family.kind = kind.to_owned();
            } else if line.starts_with('#') || line.trim().is_empty() {
                // Comments and blank lines carry nothing.
            } else {
                let (series_text, value_text) = match line.find('{') {
                    Some(_) => {
                        let close = line
                            .rfind('}')
                            .ok_or_else(|| format!("unclosed labels: {line}"))?;
                        (&line[..=close], line[close + 1..].trim_start())
                    }
                    None => line
                        .split_once(' ')
                        .ok_or_else(|| format!("sample without a value: {line}"))?,
                };
                let (name, label_text) = match series_text.split_once('{') {
                    Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or(rest)),
                    None => (series_text, ""),
                };
                if !metric_name(name) {
                    return Err(format!("bad metric name {name:?}: {line}"));
                }
                let mut parts = value_text.split(' ');
                let value = value(parts.next().unwrap_or(""), line)?;
                if let Some(timestamp) = parts.next()
                    && timestamp.parse::<i64>().is_err()
                {
                    return Err(format!("bad timestamp: {line}"));
                }
                let labels = labels(label_text, line)?;
                let family_name = family_of(name, &families)
                    .ok_or_else(|| format!("sample {name} has no TYPE before it"))?;
                enter(&family_name, &mut current)?;
                if !series.insert(format!("{name}{labels:?}")) {
                    return Err(format!("series twice: {line}"));
                }
                let family = families.get_mut(&family_name).ok_or("family")?;
                if family.kind == "summary"
                    && name == family_name
                    && !labels.contains_key("quantile")
                {
                    return Err(format!("summary sample without quantile: {line}"));
                }
                if family.kind == "histogram"
                    && name.ends_with("_bucket")
                    && !labels.contains_key("le")
                {
                    return Err(format!("bucket without le: {line}"));
                }
                family.samples.push(Sample {
                    name: name.to_owned(),
                    labels,
                    value,
                });
            }
        }
        for (name, family) in &families {
            if family.kind.is_empty() {
                return Err(format!("{name} has HELP but no TYPE"));
            }
            check_complete(name, family)?;
        }
        Ok(families)
    }

    /// Summaries and histograms: `_sum` and `_count` for each label set; buckets
    /// cumulative, ending at `+Inf` equal to `_count`.
    fn check_complete(name: &str, family: &Family) -> Result<(), String> {
        if family.kind != "summary" && family.kind != "histogram" {
            return Ok(());
        }
        let mut groups: BTreeMap<String, BTreeMap<String, Vec<(f64, f64)>>> = BTreeMap::new();
        for sample in &family.samples {
            let mut key = sample.labels.clone();
            let le = key.remove("le");
            key.remove("quantile");
            let suffix = sample.name.strip_prefix(name).unwrap_or("").to_owned();
            let bound = match le.as_deref() {
                Some("+Inf") => f64::INFINITY,
                Some(text) => text.parse().map_err(|_| format!("bad le {text}"))?,
                None => 0.0,
            };
            groups
                .entry(format!("{key:?}"))
                .or_default()
                .entry(suffix)
                .or_default()
                .push((bound, sample.value));
        }
        for (key, parts) in groups {
            let count = parts.get("_count").and_then(|c| c.first()).map(|c| c.1);
            let Some(count) = count else {
                return Err(format!("{name}{key} has no _count"));
            };
            if !parts.contains_key("_sum") {
                return Err(format!("{name}{key} has no _sum"));
            }
            if family.kind == "histogram" {
                let buckets = parts.get("_bucket").cloned().unwrap_or_default();
                let mut previous = (f64::NEG_INFINITY, 0.0);
                for (bound, value) in &buckets {
                    if *bound <= previous.0 || *value < previous.1 {
                        return Err(format!("{name}{key}: buckets not cumulative"));
                    }
                    previous = (*bound, *value);
                }
                if previous.0 != f64::INFINITY || previous.1 != count {
                    return Err(format!(
                        "{name}{key}: +Inf bucket missing or not _count (cumulative)"
                    ));
                }
            }
        }
        Ok(())
    }
}
