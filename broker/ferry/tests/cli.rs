//! The `ferry` binary on its own: offline commands (`ferry pricing`), `--version`, and
//! what the broker commands say when what answers at `--server` is no working broker.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use ferry_adapter_openstack::RateTable;

const FERRY: &str = env!("CARGO_BIN_EXE_ferry");
const RATES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../adapters/openstack/testdata/rates.yaml"
);

fn ferry(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(FERRY).args(args).output().expect("ferry runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The numbers printed are the table's own quote for the workers asked for.
#[test]
fn pricing_prints_a_clusters_pricing_block_from_a_rate_table() {
    let table = RateTable::parse_yaml(&std::fs::read_to_string(RATES).expect("sample"), RATES)
        .expect("the sample parses");
    for (args, quote) in [
        (vec![], table.quote(None)),
        (vec!["--flavor", "m1.large"], table.quote(Some("m1.large"))),
        (
            vec!["--workers", "m1.large=3", "--workers", "r1.large=2"],
            table.quote_mix(&[("m1.large", 3), ("r1.large", 2)]),
        ),
    ] {
        let quote = quote.expect("a quote");
        let mut all = vec!["pricing", "--rate-table", RATES, "-o", "json"];
        all.extend(&args);
        let (code, stdout, stderr) = ferry(&all);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let printed: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
        assert_eq!(printed["currency"], "EUR");
        // serde_json reads the last digit of a float approximately.
        let close = |key: &str, want: f64| {
            let got = printed[key].as_f64().expect("a number");
            assert!((got - want).abs() <= want * 1e-12, "{key}: {got} vs {want}");
        };
        close("cpuCoreHour", quote.cpu_core_hour);
        close("memoryGiBHour", quote.memory_gib_hour);
        assert_eq!(printed["egressGiB"].as_f64(), Some(0.01));
        assert_eq!(printed["source"], quote.source.as_str());

        let mut table_args = vec!["pricing", "--rate-table", RATES];
        table_args.extend(&args);
        let (code, stdout, _) = ferry(&table_args);
        assert_eq!(code, 0);
        let line = stdout.lines().nth(1).expect("the pricing line");
        let expected = format!("cpuCoreHour: {:.8}", quote.cpu_core_hour);
        assert!(
            line.starts_with("pricing: { currency: EUR, ")
                && line.contains(expected.trim_end_matches('0')),
            "{line} lacks {expected}"
        );
    }
}

#[test]
fn pricing_says_what_is_wrong_with_its_input_and_exits_2() {
    for (args, message) in [
        (
            vec!["--flavor", "nope"],
            "no flavor \"nope\"; it prices m1.large, m1.xlarge, r1.large",
        ),
        (vec!["--workers", "m1.large"], "expected FLAVOR=COUNT"),
        (vec!["--opencost"], "rates.yaml"),
    ] {
        let mut all = vec!["pricing", "--rate-table", RATES];
        all.extend(&args);
        let (code, stdout, stderr) = ferry(&all);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "nothing printed on failure: {stdout}");
    }
    let (code, _, stderr) = ferry(&["pricing", "--rate-table", "/no/such/rates.yaml"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/no/such/rates.yaml"), "{stderr}");
}

/// `ferry validate` succeeds on files with warnings, and prints them with their place;
/// an equal-priority overlap is an error naming both policies' places.
#[test]
fn validate_prints_warnings_and_locates_policy_overlaps() {
    let dir = std::env::temp_dir().join(format!("ferry-cli-validate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");
    let policy = |name: &str, priority: i32, namespace: &str, required: &str| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: PlacementPolicy\nmetadata: {{name: {name}}}\nspec:\n  priority: {priority}\n  workloadSelector: {{namespaces: [{namespace}]}}\n  clusterAffinity: {{required: {{matchLabels: {{residency: {required}}}}}}}\n"
        )
    };
    let extra = dir.join("extra.yaml");
    std::fs::write(&extra, policy("typo", 10, "shpo", "europe")).expect("write");
    let (code, stdout, stderr) = ferry(&[
        "validate",
        "-f",
        examples,
        "-f",
        extra.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let shown = extra.display();
    assert_eq!(
        stderr,
        format!(
            "warning: {shown}:6:21: spec.workloadSelector: policy `typo` selects no workload in the given files\n\
             warning: {shown}:7:31: spec.clusterAffinity.required: matches no Cluster in the given files, so policy `typo` can place nothing; known values of `residency`: eu, us\n"
        )
    );
    assert!(stdout.ends_with("; 2 warning(s)\n"), "{stdout}");

    // `batch-cost-first` has priority 100 over namespace batch in the examples.
    std::fs::write(&extra, policy("batch-twin", 100, "batch", "eu")).expect("write");
    let (code, stdout, stderr) = ferry(&[
        "validate",
        "-f",
        examples,
        "-f",
        extra.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{shown}:5:13: spec.priority: policy `batch-twin` and policy `batch-cost-first` (at "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("both have priority 100 and both select workloads `batch/etl-nightly`"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_names_the_commit_and_the_features() {
    let (code, stdout, stderr) = ferry(&["--version"]);
    assert_eq!(code, 0, "{stderr}");
    let line = stdout.trim();
    let rest = line
        .strip_prefix(&format!("ferry {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, features) = rest.split_once(", features: ").expect("features");
    assert!(!commit.is_empty() && !commit.contains(' '), "{line}");
    // HTTPS is the default build: real clouds and HTTPS brokers need it.
    assert_eq!(features, "https)", "{line}");
}

/// `ferry get clusters` against `server`, with a short timeout.
fn get_clusters(server: &str) -> (i32, String, String) {
    ferry(&[
        "get",
        "clusters",
        "--server",
        server,
        "--token",
        "t",
        "--timeout",
        "500ms",
    ])
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

#[test]
fn an_unreachable_broker_is_named_with_the_cause_for_http_and_https() {
    let port = closed_port();
    for scheme in ["http", "https"] {
        let server = format!("{scheme}://127.0.0.1:{port}");
        let (code, stdout, stderr) = get_clusters(&server);
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(
            stderr.contains(&format!("cannot reach the broker at {server}: "))
                && stderr.to_lowercase().contains("connection refused"),
            "{stderr}"
        );
        // The default build speaks TLS: an https URL is tried, not refused up front.
        assert!(!stderr.contains("scheme"), "{stderr}");
    }
}

#[test]
fn a_broker_that_never_answers_is_a_timeout_that_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // Accepts and reads, never answers; the sockets stay open until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let (code, stdout, stderr) = get_clusters(&format!("http://127.0.0.1:{port}"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("did not answer")
            && stderr.contains("within 0.5 s")
            && stderr.contains("--timeout"),
        "{stderr}"
    );
}

#[test]
fn a_server_that_is_not_a_ferry_broker_is_named_with_its_status_and_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = "<html><body><h1>Not Found</h1><p>nginx</p></body></html>";
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let (code, stdout, stderr) = get_clusters(&format!("http://127.0.0.1:{port}"));
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("does not answer like a Ferry broker")
            && stderr.contains("404 Not Found")
            && stderr.contains("text/html")
            && stderr.contains("<h1>Not Found</h1>"),
        "{stderr}"
    );
}

#[test]
fn a_server_url_without_http_or_https_is_an_input_error_that_says_so() {
    for (server, words) in [
        ("127.0.0.1:8080", "did you mean http://127.0.0.1:8080?"),
        ("localhost:8080", "did you mean http://localhost:8080?"),
        (
            "ftp://broker.example",
            "the scheme must be http or https, not ftp",
        ),
        ("broker.example", "not a URL with http:// or https://"),
    ] {
        let (code, stdout, stderr) = get_clusters(server);
        assert_eq!(code, 2, "{server}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!("--server {server}: ")) && stderr.contains(words),
            "{server}: {stderr}"
        );
        assert!(!stderr.contains("builder error"), "{stderr}");
    }
}
