//! Offline commands of the `ferry` binary that need no broker: `ferry pricing`.

use std::process::Command;

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
