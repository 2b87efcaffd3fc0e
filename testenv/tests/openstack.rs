//! Smoke test proving the OpenStack side is real: Keystone issues a token whose catalog
//! lists Heat, and Heat runs a stack whose servers are provider templates through
//! create (with outputs) and delete; afterwards no process of it is left.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferry_testenv::{OpenStack, password_auth};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(120);

async fn stack_status(http: &reqwest::Client, url: &str, token: &str) -> Result<Value> {
    let response = http.get(url).header("X-Auth-Token", token).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("GET {url}: {status} {body}");
    }
    Ok(body["stack"].clone())
}

async fn wait_for(http: &reqwest::Client, url: &str, token: &str, wanted: &str) -> Result<Value> {
    let started = Instant::now();
    loop {
        let stack = stack_status(http, url, token).await?;
        let status = stack["stack_status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if status == wanted {
            return Ok(stack);
        }
        if status.ends_with("_FAILED") {
            bail!("stack {status}: {}", stack["stack_status_reason"]);
        }
        if started.elapsed() > WAIT {
            bail!("stack still {status} after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_catalog_lists_heat_and_heat_runs_a_stack() -> Result<()> {
    let started = Instant::now();
    let openstack = OpenStack::start(None)
        .await
        .context("start Keystone and Heat")?;
    eprintln!(
        "Keystone and Heat ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let outcome = exercise(&openstack).await;
    if outcome.is_err() {
        // A failed check is not a panic, so the drop would not show the logs.
        eprintln!("{}", openstack.logs());
    }
    outcome?;

    let pids = openstack.pids();
    assert_eq!(pids.len(), 2, "uwsgi master and heat-all");
    drop(openstack);
    let left: Vec<u32> = pids.into_iter().filter(|&pid| running(pid)).collect();
    assert!(left.is_empty(), "still running after drop: {left:?}");
    Ok(())
}

async fn exercise(openstack: &OpenStack) -> Result<()> {
    let http = ferry_testenv::http_client();
    let credentials = openstack.credentials();

    let response = http
        .post(format!("{}/auth/tokens", credentials.auth_url))
        .json(&password_auth(credentials))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 201);
    let token = response
        .headers()
        .get("X-Subject-Token")
        .context("a token header")?
        .to_str()?
        .to_owned();
    let body: Value = response.json().await?;
    let heat = body["token"]["catalog"]
        .as_array()
        .context("a catalog")?
        .iter()
        .find(|service| service["type"] == "orchestration")
        .context("Heat in the catalog")?;
    let heat_url = heat["endpoints"]
        .as_array()
        .context("endpoints")?
        .iter()
        .find(|e| e["interface"] == "public" && e["region_id"] == credentials.region)
        .and_then(|e| e["url"].as_str())
        .context("a public Heat endpoint in the region")?
        .to_owned();
    let project = body["token"]["project"]["id"]
        .as_str()
        .context("a project")?;
    assert!(heat_url.ends_with(&format!("/v1/{project}")), "{heat_url}");

    let name = "smoke-cluster";
    let created = http
        .post(format!("{heat_url}/stacks"))
        .header("X-Auth-Token", &token)
        .json(&json!({
            "stack_name": name,
            // Sent as text: a YAML round trip could turn the template version into a date.
            "template": include_str!("../data/heat/cluster.yaml"),
            "environment": include_str!("../data/heat/env-fake-servers.yaml"),
            "files": {"fake_server.yaml": include_str!("../data/heat/fake_server.yaml")},
            "parameters": {"worker_count": 3},
            "timeout_mins": 5,
        }))
        .send()
        .await?;
    let status = created.status();
    let created: Value = created.json().await?;
    assert_eq!(status.as_u16(), 201, "{created}");
    let id = created["stack"]["id"].as_str().context("a stack id")?;
    let url = format!("{heat_url}/stacks/{name}/{id}");
    let stack = wait_for(&http, &url, &token, "CREATE_COMPLETE").await?;
    let outputs: Vec<(String, Value)> = stack["outputs"]
        .as_array()
        .context("outputs")?
        .iter()
        .map(|o| {
            (
                o["output_key"].as_str().unwrap_or_default().to_owned(),
                o["output_value"].clone(),
            )
        })
        .collect();
    let output = |key: &str| {
        outputs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let control_plane = output("control_plane_ip").context("control_plane_ip")?;
    assert!(
        control_plane
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.0.0.")),
        "{control_plane}"
    );
    let workers = output("worker_ips").context("worker_ips")?;
    assert_eq!(workers.as_array().map(Vec::len), Some(3), "{workers}");
    assert_eq!(
        output("join_token").and_then(|t| t.as_str().map(str::len)),
        Some(16)
    );

    let deleted = http
        .delete(&url)
        .header("X-Auth-Token", &token)
        .send()
        .await?;
    assert_eq!(deleted.status().as_u16(), 204);
    wait_for(&http, &url, &token, "DELETE_COMPLETE").await?;
    Ok(())
}
