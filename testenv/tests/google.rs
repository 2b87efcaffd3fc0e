//! The fake Google: assertions signed as a client signs them become tokens and bad ones
//! are refused; the Catalog pages; node-pool resizes run as operations that end `DONE`,
//! with or without an error; what fits the discovery documents leaves no violation and
//! what does not is caught; and a token it issues reaches a harness cluster's
//! kube-apiserver through the TokenReview webhook until it expires.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ferry_testenv::google::{
    CLOUD_PLATFORM, COMPUTE_ENGINE, JWT_BEARER, NodePoolSpec, ServiceAccount, ram_sku, vcpu_sku,
};
use ferry_testenv::{ClusterSpec, FakeGoogle, client_from, start_clusters};
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

const PROJECT: &str = "ferry-test";
const LOCATION: &str = "europe-west1";
const EMAIL: &str = "ferry@ferry-test.iam.gserviceaccount.com";
const USERINFO_EMAIL: &str = "https://www.googleapis.com/auth/userinfo.email";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The claims a client signs: `iat` a little in the past, as cloud-apis §6 advises.
fn claims(account: &ServiceAccount) -> Value {
    let iat = now() - 30;
    json!({
        "iss": account.email,
        "scope": format!("{CLOUD_PLATFORM} {USERINFO_EMAIL}"),
        "aud": account.token_uri,
        "iat": iat,
        "exp": iat + 3600,
    })
}

/// An RS256 assertion signed with the key file's private key, as the GKE adapter does.
fn sign(account: &ServiceAccount, claims: &Value) -> Result<String> {
    let key_file: Value = serde_json::from_str(&account.key_file_json())?;
    let pem = key_file["private_key"]
        .as_str()
        .context("the key file has a private_key")?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = key_file["private_key_id"].as_str().map(str::to_owned);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())?;
    Ok(jsonwebtoken::encode(&header, claims, &key)?)
}

/// Form encoding for the few characters a grant type and a JWT can hold.
fn form_encode(text: &str) -> String {
    text.replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
        .replace('+', "%2B")
        .replace('=', "%3D")
}

/// The token endpoint's status and body for `assertion`.
async fn exchange(
    http: &reqwest::Client,
    token_url: &str,
    assertion: &str,
) -> Result<(u16, Value)> {
    let body = format!(
        "grant_type={}&assertion={}",
        form_encode(JWT_BEARER),
        form_encode(assertion)
    );
    let answer = http
        .post(token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let status = answer.status().as_u16();
    Ok((status, answer.json().await?))
}

async fn access_token(http: &reqwest::Client, account: &ServiceAccount) -> Result<String> {
    let (status, body) =
        exchange(http, &account.token_uri, &sign(account, &claims(account))?).await?;
    ensure!(status == 200, "token endpoint answered {status}: {body}");
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("an access_token")
}

async fn get(http: &reqwest::Client, url: &str, token: &str) -> Result<(u16, Value)> {
    let answer = http.get(url).bearer_auth(token).send().await?;
    let status = answer.status().as_u16();
    Ok((status, answer.json().await?))
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> Result<(u16, Value)> {
    let answer = http.post(url).bearer_auth(token).json(body).send().await?;
    let status = answer.status().as_u16();
    Ok((status, answer.json().await?))
}

fn pool_url(fake: &FakeGoogle, cluster: &str, pool: &str) -> String {
    format!(
        "{}v1/projects/{PROJECT}/locations/{LOCATION}/clusters/{cluster}/nodePools/{pool}",
        fake.container_url()
    )
}

/// A fake with one service account and a token for it.
async fn signed_in() -> Result<(FakeGoogle, reqwest::Client, String)> {
    let fake = FakeGoogle::start().await?;
    let account = fake.add_service_account(EMAIL, PROJECT)?;
    let http = ferry_testenv::http_client();
    let token = access_token(&http, &account).await?;
    Ok((fake, http, token))
}

#[tokio::test]
async fn a_signed_assertion_becomes_a_token_that_opens_gke() -> Result<()> {
    let fake = FakeGoogle::start().await?;
    fake.set_token_lifetime(Duration::from_secs(20));
    let account = fake.add_service_account(EMAIL, PROJECT)?;
    let key_file: Value = serde_json::from_str(&account.key_file_json())?;
    assert_eq!(key_file["type"], "service_account");
    assert_eq!(key_file["client_email"], EMAIL);
    assert_eq!(key_file["project_id"], PROJECT);
    assert_eq!(key_file["token_uri"], fake.token_url().as_str());
    assert!(
        key_file["private_key"]
            .as_str()
            .is_some_and(|k| k.starts_with("-----BEGIN PRIVATE KEY-----"))
    );

    let http = ferry_testenv::http_client();
    let (status, body) = exchange(
        &http,
        &account.token_uri,
        &sign(&account, &claims(&account))?,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 20);
    let token = body["access_token"].as_str().context("access_token")?;

    let clusters = format!(
        "{}v1/projects/{PROJECT}/locations/-/clusters",
        fake.container_url()
    );
    let (status, body) = get(&http, &clusters, token).await?;
    assert_eq!((status, body), (200, json!({})));
    let (status, body) = get(&http, &clusters, "ya29.not-issued").await?;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
    fake.expire_tokens();
    let (status, _) = get(&http, &clusters, token).await?;
    assert_eq!(status, 401, "an expired token is refused");
    assert_eq!(fake.violations(), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn bad_assertions_are_invalid_grants() -> Result<()> {
    let fake = FakeGoogle::start().await?;
    let account = fake.add_service_account(EMAIL, PROJECT)?;
    let http = ferry_testenv::http_client();
    let refused = |(status, body): (u16, Value), error: &str| {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], error, "{body}");
        body["error_description"].as_str().unwrap_or("").to_owned()
    };

    let good = sign(&account, &claims(&account))?;
    let (head, signature) = good.rsplit_once('.').context("a JWT")?;
    let flipped = if signature.starts_with('A') { "B" } else { "A" };
    let tampered = format!("{head}.{flipped}{}", &signature[1..]);
    let description = refused(
        exchange(&http, &fake.token_url(), &tampered).await?,
        "invalid_grant",
    );
    assert_eq!(description, "Invalid JWT Signature.");

    // Signed by a key this Google never issued, under a known kid.
    let other = FakeGoogle::start().await?;
    let stranger = other.add_service_account(EMAIL, PROJECT)?;
    let mut forged = stranger.clone();
    forged.key_file["private_key_id"] = json!(account.private_key_id);
    forged.token_uri = account.token_uri.clone();
    let forged = sign(&forged, &claims(&account))?;
    refused(
        exchange(&http, &fake.token_url(), &forged).await?,
        "invalid_grant",
    );

    let mut late = claims(&account);
    late["exp"] = json!(late["iat"].as_i64().unwrap_or(0) + 7200);
    refused(
        exchange(&http, &fake.token_url(), &sign(&account, &late)?).await?,
        "invalid_grant",
    );
    let mut elsewhere = claims(&account);
    elsewhere["aud"] = json!("https://oauth2.googleapis.com/token");
    refused(
        exchange(&http, &fake.token_url(), &sign(&account, &elsewhere)?).await?,
        "invalid_grant",
    );
    let mut narrow = claims(&account);
    narrow["scope"] = json!(USERINFO_EMAIL);
    refused(
        exchange(&http, &fake.token_url(), &sign(&account, &narrow)?).await?,
        "invalid_scope",
    );

    let token = access_token(&http, &account).await?;
    fake.revoke(EMAIL);
    let description = refused(
        exchange(&http, &fake.token_url(), &good).await?,
        "invalid_grant",
    );
    assert_eq!(description, "Invalid JWT Signature.");
    // A revoked key's tokens live on until they expire, as with Google.
    let clusters = format!(
        "{}v1/projects/{PROJECT}/locations/-/clusters",
        fake.container_url()
    );
    assert_eq!(get(&http, &clusters, &token).await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn the_catalog_pages() -> Result<()> {
    let (fake, http, token) = signed_in().await?;
    let mut registered = Vec::new();
    for (family, region) in [
        ("N4A", "us-central1"),
        ("N2", "europe-west1"),
        ("E2", "europe-west4"),
    ] {
        registered.push(vcpu_sku(family, region, "OnDemand", 0, 26_460_000));
        registered.push(ram_sku(family, region, "OnDemand", 0, 3_010_000));
    }
    registered.push(vcpu_sku("N4A", "us-central1", "Preemptible", 0, 10_580_000));
    fake.add_skus(COMPUTE_ENGINE, registered.clone());

    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let url = format!(
            "{}v1/services/{COMPUTE_ENGINE}/skus?currencyCode=USD&pageSize=3&pageToken={page_token}",
            fake.billing_url()
        );
        let (status, body) = get(&http, &url, &token).await?;
        assert_eq!(status, 200, "{body}");
        pages += 1;
        seen.extend(body["skus"].as_array().cloned().unwrap_or_default());
        page_token = body["nextPageToken"].as_str().unwrap_or("").to_owned();
        if page_token.is_empty() {
            break;
        }
        ensure!(pages < 10, "the catalog does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, registered);
    let core = &seen[0];
    assert_eq!(core["description"], "N4A Instance Core running in Iowa");
    assert_eq!(
        core["pricingInfo"][0]["pricingExpression"]["tieredRates"][0]["unitPrice"],
        json!({"currencyCode": "USD", "units": "0", "nanos": 26_460_000})
    );
    assert_eq!(
        seen[6]["description"],
        "Spot Preemptible N4A Instance Core running in Iowa"
    );

    let (status, body) = get(&http, &format!("{}v1/services", fake.billing_url()), &token).await?;
    assert_eq!(status, 200);
    assert_eq!(body["services"][0]["serviceId"], COMPUTE_ENGINE);
    let bad_token = format!(
        "{}v1/services/{COMPUTE_ENGINE}/skus?pageToken=bogus",
        fake.billing_url()
    );
    assert_eq!(get(&http, &bad_token, &token).await?.0, 400);
    assert_eq!(fake.violations(), Vec::<String>::new());
    Ok(())
}

fn add_test_cluster(fake: &FakeGoogle) {
    fake.add_cluster(
        PROJECT,
        LOCATION,
        "alpha",
        "127.0.0.1:6443",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        vec![
            NodePoolSpec::new("default-pool", "n4-standard-8")
                .in_zone("europe-west1-b", 2)
                .in_zone("europe-west1-c", 2)
                .autoscaling(1, 5),
        ],
    );
}

/// Polls the operation until `DONE`, returning every status seen and the last answer.
async fn poll_until_done(
    fake: &FakeGoogle,
    http: &reqwest::Client,
    token: &str,
    operation: &Value,
) -> Result<(Vec<String>, Value)> {
    let name = operation["name"].as_str().context("an operation name")?;
    let url = format!(
        "{}v1/projects/{PROJECT}/locations/{LOCATION}/operations/{name}",
        fake.container_url()
    );
    let mut statuses = vec![operation["status"].as_str().unwrap_or("").to_owned()];
    for _ in 0..10 {
        let (status, body) = get(http, &url, token).await?;
        ensure!(status == 200, "operations.get answered {status}: {body}");
        statuses.push(body["status"].as_str().unwrap_or("").to_owned());
        if body["status"] == "DONE" {
            return Ok((statuses, body));
        }
    }
    bail!("not DONE after 10 polls: {statuses:?}")
}

#[tokio::test]
async fn set_size_runs_as_an_operation_to_done() -> Result<()> {
    let (fake, http, token) = signed_in().await?;
    add_test_cluster(&fake);
    fake.set_missing_zones(&["asia-east1-a"]);
    let url = format!("{}:setSize", pool_url(&fake, "alpha", "default-pool"));
    let (status, operation) = post(&http, &url, &token, &json!({"nodeCount": 3})).await?;
    assert_eq!(status, 200, "{operation}");
    assert_eq!(operation["operationType"], "SET_NODE_POOL_SIZE");

    let (status, busy) = post(&http, &url, &token, &json!({"nodeCount": 4})).await?;
    assert_eq!(status, 400);
    assert_eq!(busy["error"]["status"], "FAILED_PRECONDITION");

    let (statuses, done) = poll_until_done(&fake, &http, &token, &operation).await?;
    assert_eq!(statuses, ["PENDING", "RUNNING", "RUNNING", "DONE"]);
    assert!(done.get("error").is_none(), "{done}");
    assert_eq!(
        fake.pool_sizes(PROJECT, LOCATION, "alpha", "default-pool"),
        Some(vec![
            ("europe-west1-b".to_owned(), 3),
            ("europe-west1-c".to_owned(), 3)
        ])
    );
    let (status, cluster) = get(
        &http,
        &format!(
            "{}v1/projects/{PROJECT}/locations/{LOCATION}/clusters/alpha",
            fake.container_url()
        ),
        &token,
    )
    .await?;
    assert_eq!(status, 200);
    assert_eq!(cluster["currentNodeCount"], 6);
    assert_eq!(cluster["nodePools"][0]["autoscaling"]["maxNodeCount"], 5);
    let (_, list) = get(
        &http,
        &format!(
            "{}v1/projects/{PROJECT}/locations/-/clusters",
            fake.container_url()
        ),
        &token,
    )
    .await?;
    assert_eq!(list["clusters"][0]["name"], "alpha");
    assert_eq!(list["missingZones"], json!(["asia-east1-a"]));
    let (status, _) = get(&http, &pool_url(&fake, "alpha", "default-pool"), &token).await?;
    assert_eq!(status, 200);
    let (status, missing) = get(&http, &pool_url(&fake, "alpha", "gpu-pool"), &token).await?;
    assert_eq!(
        (status, &missing["error"]["status"]),
        (404, &json!("NOT_FOUND"))
    );

    // Free again once DONE.
    let (status, _) = post(&http, &url, &token, &json!({"nodeCount": 1})).await?;
    assert_eq!(status, 200);
    assert_eq!(fake.violations(), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn a_failing_set_size_ends_done_with_an_error() -> Result<()> {
    let (fake, http, token) = signed_in().await?;
    add_test_cluster(&fake);
    fake.fail_next_set_size("Insufficient regional quota to satisfy request: resource \"CPUS\"");
    let url = format!("{}:setSize", pool_url(&fake, "alpha", "default-pool"));
    let (status, operation) = post(&http, &url, &token, &json!({"nodeCount": 5})).await?;
    assert_eq!(status, 200);
    let (_, done) = poll_until_done(&fake, &http, &token, &operation).await?;
    assert_eq!(done["status"], "DONE");
    assert_eq!(done["error"]["code"], 8);
    assert!(
        done["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("quota"))
    );
    assert_eq!(
        fake.pool_sizes(PROJECT, LOCATION, "alpha", "default-pool"),
        Some(vec![
            ("europe-west1-b".to_owned(), 2),
            ("europe-west1-c".to_owned(), 2)
        ]),
        "a failed resize changes nothing"
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn what_the_discovery_documents_lack_is_a_violation() -> Result<()> {
    let (fake, http, token) = signed_in().await?;
    add_test_cluster(&fake);
    let url = format!("{}:setSize", pool_url(&fake, "alpha", "default-pool"));
    let (status, body) = post(&http, &url, &token, &json!({"nodeCount": 3, "nodes": 3})).await?;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    let violations = fake.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains("nodes: unknown property"),
        "{violations:?}"
    );

    let listing = format!(
        "{}v1/projects/{PROJECT}/locations/-/clusters?pageSize=10",
        fake.container_url()
    );
    assert_eq!(get(&http, &listing, &token).await?.0, 400);
    assert!(
        fake.violations()
            .iter()
            .any(|v| v.contains("unknown query parameter pageSize")),
        "GKE lists are not paged"
    );

    // A recorded price with int64 written as a JSON number.
    let discovery = fake.discovery();
    let mut sku = vcpu_sku("N2", "europe-west1", "OnDemand", 0, 31_611_000);
    assert_eq!(
        discovery.check_schema("cloudbilling", "Sku", &sku),
        Vec::<String>::new()
    );
    sku["pricingInfo"][0]["pricingExpression"]["tieredRates"][0]["unitPrice"]["units"] = json!(0);
    let found = discovery.check_schema("cloudbilling", "Sku", &sku);
    assert!(found.len() == 1 && found[0].contains("int64"), "{found:?}");

    let invented = json!({"name": "operation-1", "status": "FINISHED", "progress": {"stages": [{"extra": 1}]}});
    let found = discovery.check_schema("container", "Operation", &invented);
    assert_eq!(found.len(), 2, "{found:?}");

    // Facts the GKE adapter relies on.
    let properties = |api: &str, schema: &str| -> Vec<String> {
        discovery
            .schema(api, schema)
            .and_then(|s| s["properties"].as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        properties("container", "ListClustersResponse"),
        ["clusters", "missingZones"]
    );
    assert_eq!(
        properties("cloudbilling", "ListSkusResponse"),
        ["nextPageToken", "skus"]
    );
    assert_eq!(
        fake.discovery()
            .call_for(
                "POST",
                "/container/v1/projects/p/locations/l/clusters/c/nodePools/n:setSize"
            )
            .map(|c| c.id),
        Some("container.projects.locations.clusters.nodePools.setSize".to_owned())
    );
    Ok(())
}

/// A kubeconfig for a GKE cluster as Ferry builds it: `https://{endpoint}`, the
/// base64-decoded `clusterCaCertificate`, and the Google access token.
fn write_kubeconfig(
    dir: &std::path::Path,
    cluster: &Value,
    token: &str,
) -> Result<std::path::PathBuf> {
    let ca = STANDARD.decode(
        cluster["masterAuth"]["clusterCaCertificate"]
            .as_str()
            .context("a clusterCaCertificate")?,
    )?;
    let ca_file = dir.join("gke-ca.crt");
    std::fs::write(&ca_file, ca)?;
    let endpoint = cluster["endpoint"].as_str().context("an endpoint")?;
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "gke", "cluster": {
            "server": format!("https://{endpoint}"),
            "certificate-authority": ca_file.display().to_string(),
        }}],
        "users": [{"name": "google", "user": {"token": token}}],
        "contexts": [{"name": "gke", "context": {"cluster": "gke", "user": "google"}}],
        "current-context": "gke",
    });
    let path = dir.join("kubeconfig-google");
    std::fs::write(&path, serde_json::to_string(&kubeconfig)?)?;
    Ok(path)
}

fn object<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    Ok(serde_json::from_value(value)?)
}

#[tokio::test]
async fn an_issued_token_reaches_a_harness_cluster_until_it_expires() -> Result<()> {
    let lifetime = Duration::from_secs(20);
    let fake = FakeGoogle::start().await?;
    fake.set_token_lifetime(lifetime);
    let clusters = start_clusters(&[ClusterSpec::named("gke-a")
        .with_nodes(2, "4", "16Gi")
        .with_token_webhook(&fake.token_review_url())])
    .await?;
    let harness = &clusters[0];
    let endpoint = harness
        .server()
        .strip_prefix("https://")
        .context("an https server")?;
    let ca_pem = std::fs::read_to_string(harness.ca_file())?;
    fake.add_cluster(
        PROJECT,
        LOCATION,
        "gke-a",
        endpoint,
        &ca_pem,
        vec![NodePoolSpec::new("default-pool", "e2-standard-4").in_zone("europe-west1-b", 2)],
    );

    // As GKE's IAM would, through RBAC: the service account's e-mail may read nodes.
    let admin = harness.client().await?;
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "node-reader"},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}],
            }))?,
        )
        .await?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "ferry-node-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "node-reader"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": EMAIL}],
            }))?,
        )
        .await?;

    let account = fake.add_service_account(EMAIL, PROJECT)?;
    let http = ferry_testenv::http_client();
    let token = access_token(&http, &account).await?;
    let issued = Instant::now();
    let (status, cluster) = get(
        &http,
        &format!(
            "{}v1/projects/{PROJECT}/locations/{LOCATION}/clusters/gke-a",
            fake.container_url()
        ),
        &token,
    )
    .await?;
    assert_eq!(status, 200, "{cluster}");
    let kubeconfig = write_kubeconfig(harness.dir(), &cluster, &token)?;
    let client = client_from(&kubeconfig).await?;
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    assert_eq!(nodes.items.len(), 2);
    match Api::<Secret>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                status.code, 403,
                "the token is the service account, not admin"
            );
            assert!(status.message.contains(EMAIL), "{}", status.message);
        }
        other => bail!("secrets are not the service account's to list: {other:?}"),
    }

    tokio::time::sleep(lifetime.saturating_sub(issued.elapsed())).await;
    let refused_within = Duration::from_secs(5);
    let expired = Instant::now();
    loop {
        match Api::<Node>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 401 => break,
            outcome => ensure!(
                expired.elapsed() < refused_within,
                "the expired token still works {refused_within:?} after expiry: {outcome:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        fake.seen().iter().any(|s| s == "POST /tokenreview -> 200"),
        "the apiserver asked the webhook"
    );
    assert_eq!(fake.violations(), Vec::<String>::new());
    Ok(())
}
