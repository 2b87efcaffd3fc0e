//! A Magnum for the tests, which cannot run the real one: the container-infra v1 API as
//! Magnum's api-ref and API code describe it (cloud-apis §3), over clusters kept in
//! memory.
//!
//! What it answers like Magnum:
//! - `GET|POST /v1/clustertemplates`, `GET /v1/clustertemplates/{uuid|name}`;
//! - `GET|POST /v1/clusters` (202 `{"uuid"}`), `GET|DELETE /v1/clusters/{uuid|name}`
//!   (DELETE is 204), `POST /v1/clusters/{uuid|name}/actions/resize` (202 `{"uuid"}`,
//!   microversion 1.7 and up);
//! - `GET /v1/certificates/{uuid|name}` (the cluster CA) and `POST /v1/certificates`
//!   (a CSR signed by that CA, 201);
//! - lists page with `limit` and `marker`, and a full page carries a top-level `next` URL;
//! - errors in ParsableErrorMiddleware's envelope
//!   `{"errors":[{"request_id","code","status","title","detail","links"}]}`: 400 for a bad
//!   body, 404 for an unknown cluster, 409 for a name two clusters share (Magnum keeps
//!   names unique no more than this mock does), and the microversion refusal's own shape;
//! - `X-Auth-Token` is checked with the real Keystone of the test (`GET /v3/auth/tokens`),
//!   once per token, as keystonemiddleware caches what it validated; no token or a
//!   refused one is Keystone's 401;
//! - the answer carries `x-openstack-request-id` and the `OpenStack-API-*-Version`
//!   headers.
//!
//! Where it differs, deliberately:
//! - A request without `OpenStack-API-Version` is refused with 406, where Magnum would
//!   serve it as 1.1: the tests must catch a client that forgets its pin on any call, not
//!   only on resize (which Magnum refuses below 1.7 with 406, as the mock does).
//! - Statuses advance by polls, not by time: every `GET` of a cluster counts, and a
//!   change becomes visible on the `GET` after the one that made it due. A create is
//!   `CREATE_IN_PROGRESS` for three polls; a resize still shows the previous status for
//!   one poll (Magnum's conductor starts it after the 202), then `UPDATE_IN_PROGRESS` for
//!   two; a delete is `DELETE_IN_PROGRESS` for two, then 404.
//! - The label `mock_fail` makes a create end in `CREATE_FAILED` with its value as the
//!   `status_reason`.
//! - Clusters have no `stack_id`, as with a Cluster API driver.
//! - A resize of a cluster that is not in a `*_COMPLETE` status is a 400 at once (in
//!   Magnum, the conductor refuses it after the 202).
//! - It signs only CSRs for `CN=admin, O=system:masters` (what `openstack coe cluster
//!   config` asks for), after checking the CSR's signature.
//! - `next` names the host `magnum-api.internal`, as Magnum behind a proxy without
//!   `enable_proxy_headers_parsing` does: a client must take the marker, not the URL.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::Result;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

/// The host of every `next` link.
pub const NEXT_HOST: &str = "http://magnum-api.internal:9511";
const MIN_MINOR: u32 = 1;
const MAX_MINOR: u32 = 14;
const RESIZE_MINOR: u32 = 7;
/// From 1.10, a cluster may be created with no workers.
const ZERO_NODES_MINOR: u32 = 10;
const CREATE_POLLS: u32 = 3;
const TIMESTAMP: &str = "2026-05-04T10:00:00+00:00";

/// One request as the mock saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// With the query.
    pub path: String,
    pub status: u16,
    /// `OpenStack-API-Version`, as sent.
    pub version: Option<String>,
}

/// A running mock; stopped when dropped.
pub struct MockMagnum {
    endpoint: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockMagnum {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    /// Keystone's v3 URL, which validates tokens.
    keystone: String,
    http: reqwest::Client,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    valid_tokens: HashSet<String>,
    templates: Vec<Value>,
    clusters: Vec<MockCluster>,
    requests: Vec<Seen>,
    /// Subjects of the CSRs signed, e.g. `CN=admin,O=system:masters`.
    signed: Vec<String>,
    serial: u64,
    seed: u64,
    /// A real cluster the clusters made from now on stand for (see
    /// [`MockMagnum::stand_for`]).
    backing: Option<Backing>,
}

/// A real Kubernetes API and its CA, which created clusters answer with: their
/// `api_address` is the API's, and their certificates are signed with its CA's key, so
/// that the API accepts them.
#[derive(Clone)]
struct Backing {
    api_address: String,
    ca_pem: String,
    ca_key_pem: String,
}

/// What a new cluster is made of.
struct Spec {
    name: String,
    template_id: String,
    status: String,
    node_count: u32,
    master_count: u32,
    labels: Map<String, Value>,
    keypair: Option<String>,
    create_timeout: u64,
}

/// A change due after `polls` more `GET`s of the cluster.
struct Step {
    polls: u32,
    status: &'static str,
    reason: Option<String>,
    node_count: Option<u32>,
    /// The cluster is gone afterwards (a delete's end).
    remove: bool,
}

struct MockCluster {
    uuid: String,
    name: String,
    template_id: String,
    status: String,
    status_reason: Option<String>,
    node_count: u32,
    master_count: u32,
    labels: Map<String, Value>,
    keypair: Option<String>,
    create_timeout: u64,
    api_address: Option<String>,
    steps: VecDeque<Step>,
    ca_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The real API this cluster stands for, if any.
    backing_api: Option<String>,
}

impl MockCluster {
    fn summary(&self) -> Value {
        json!({
            "uuid": self.uuid,
            "name": self.name,
            "cluster_template_id": self.template_id,
            "keypair": self.keypair,
            "docker_volume_size": null,
            "labels": self.labels,
            "node_count": self.node_count,
            "master_count": self.master_count,
            "status": self.status,
            "master_flavor_id": null,
            "flavor_id": null,
            "create_timeout": self.create_timeout,
            "health_status": null,
            "stack_id": null,
            "links": links("clusters", &self.uuid),
        })
    }

    fn detail(&self) -> Value {
        let mut detail = self.summary();
        let complete = self.api_address.is_some();
        let addresses = |count: u32, base: u32| -> Vec<String> {
            if complete {
                (0..count).map(|i| format!("10.0.0.{}", base + i)).collect()
            } else {
                Vec::new()
            }
        };
        let extra = json!({
            "status_reason": self.status_reason,
            "api_address": self.api_address,
            "master_addresses": addresses(self.master_count, 10),
            "node_addresses": addresses(self.node_count, 100),
            "coe_version": if complete { json!("v1.30.1") } else { Value::Null },
            "container_version": null,
            "discovery_url": null,
            "fixed_network": null,
            "fixed_subnet": null,
            "floating_ip_enabled": true,
            "master_lb_enabled": true,
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "health_status_reason": {},
        });
        if let (Value::Object(detail), Value::Object(extra)) = (&mut detail, extra) {
            detail.extend(extra);
        }
        detail
    }

    /// Counts a poll; applies the change that is due. `false`: the cluster is gone.
    fn advance(&mut self) -> bool {
        let Some(step) = self.steps.front_mut() else {
            return true;
        };
        step.polls = step.polls.saturating_sub(1);
        if step.polls > 0 {
            return true;
        }
        let Some(step) = self.steps.pop_front() else {
            return true;
        };
        if step.remove {
            return false;
        }
        self.status = step.status.to_owned();
        self.status_reason = step.reason;
        if let Some(count) = step.node_count {
            self.node_count = count;
        }
        if self.status == "CREATE_COMPLETE" {
            let host = 10 + self.uuid.len() % 200;
            self.api_address = Some(
                self.backing_api
                    .clone()
                    .unwrap_or_else(|| format!("https://192.0.2.{host}:6443")),
            );
        }
        true
    }
}

fn links(collection: &str, uuid: &str) -> Value {
    json!([
        {"href": format!("{NEXT_HOST}/v1/{collection}/{uuid}"), "rel": "self"},
        {"href": format!("{NEXT_HOST}/{collection}/{uuid}"), "rel": "bookmark"},
    ])
}

fn is_uuid_like(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// An error answer. Boxed: a `Response` is too large an `Err`.
struct Refusal(Box<Response>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// Magnum's envelope (ParsableErrorMiddleware): the title is the detail's first sentence.
fn fault(status: StatusCode, detail: &str) -> Refusal {
    let title = detail.split('.').next().unwrap_or(detail);
    let code = if status.is_server_error() {
        "server"
    } else {
        "client"
    };
    let body = json!({"errors": [{
        "request_id": "", "code": code, "status": status.as_u16(), "title": title,
        "detail": detail, "links": [],
    }]});
    Refusal(Box::new((status, Json(body)).into_response()))
}

/// The refusal of a microversion (`HTTPNotAcceptableAPIVersion`), which keeps webob's
/// `message` and adds the supported range.
fn version_refused(message: &str) -> Refusal {
    let body = json!({"errors": [{
        "code": "magnum.microversion-unsupported",
        "title": "Requested microversion is unsupported",
        "message": message,
        "max_version": format!("1.{MAX_MINOR}"),
        "min_version": format!("1.{MIN_MINOR}"),
        "links": [{"rel": "help", "href": "http://docs.openstack.org/api-guide/compute/microversions.html"}],
    }]});
    Refusal(Box::new(
        (StatusCode::NOT_ACCEPTABLE, Json(body)).into_response(),
    ))
}

/// keystonemiddleware's refusal.
fn unauthorized() -> Response {
    let body = json!({"error": {"code": 401, "title": "Unauthorized",
        "message": "The request you have made requires authentication."}});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// The requested minor version, for handlers that depend on it.
#[derive(Clone, Copy)]
struct Minor(u32);

/// The minor version of an `OpenStack-API-Version` header, or Magnum's refusal.
fn parse_version(header: Option<&str>) -> Result<u32, Refusal> {
    let not_acceptable = |detail: &str| fault(StatusCode::NOT_ACCEPTABLE, detail);
    let Some(header) = header else {
        return Err(not_acceptable(
            "OpenStack-API-Version is required by this mock (Magnum would serve 1.1)",
        ));
    };
    let parts: Vec<&str> = header.split_whitespace().collect();
    let [service, version] = parts[..] else {
        return Err(not_acceptable(
            "Invalid service type for OpenStack-API-Version header",
        ));
    };
    if !matches!(
        service,
        "container-infra" | "container-infrastructure" | "container-infrastructure-management"
    ) {
        return Err(not_acceptable(
            "Invalid service type for OpenStack-API-Version header",
        ));
    }
    if version.eq_ignore_ascii_case("latest") {
        return Ok(MAX_MINOR);
    }
    let numbers: Vec<Option<u32>> = version.split('.').map(|n| n.parse().ok()).collect();
    let [Some(major), Some(minor)] = numbers[..] else {
        return Err(not_acceptable(
            "Invalid value for OpenStack-API-Version header",
        ));
    };
    let range = format!("[container-infra 1.{MIN_MINOR}, container-infra 1.{MAX_MINOR}]");
    if major != 1 {
        return Err(version_refused(&format!(
            "Mutually exclusive versions requested. Version {major}.{minor} requested but not \
             supported by this service.The supported version range is: {range}."
        )));
    }
    if !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
        return Err(version_refused(&format!(
            "Version {major}.{minor} was requested but the minor version is not supported by \
             this service. The supported version range is: {range}."
        )));
    }
    Ok(minor)
}

type Mock = Arc<Shared>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether Keystone takes `token` (asked once per token).
    async fn token_is_valid(&self, token: &str) -> bool {
        if self.lock().valid_tokens.contains(token) {
            return true;
        }
        let answer = self
            .http
            .get(format!("{}/auth/tokens", self.keystone))
            .header("X-Auth-Token", token)
            .header("X-Subject-Token", token)
            .send()
            .await;
        let valid = answer.is_ok_and(|a| a.status().is_success());
        if valid {
            self.lock().valid_tokens.insert(token.to_owned());
        }
        valid
    }
}

impl Inner {
    fn new_uuid(&mut self) -> String {
        self.serial += 1;
        let n = self.serial;
        format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            self.seed & 0xffff_ffff,
            (self.seed >> 32) & 0xffff,
            (n >> 12) & 0xfff,
            n & 0xfff,
            (self.seed >> 16) ^ n
        )
    }

    /// The cluster `ident` names: Magnum's 404, or its 409 for a shared name.
    fn cluster_index(&self, ident: &str) -> Result<usize, Refusal> {
        let matches: Vec<usize> = self
            .clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                if is_uuid_like(ident) {
                    c.uuid == ident
                } else {
                    c.name == ident
                }
            })
            .map(|(i, _)| i)
            .collect();
        match matches[..] {
            [index] => Ok(index),
            [] => Err(fault(
                StatusCode::NOT_FOUND,
                &format!("Cluster {ident} could not be found."),
            )),
            _ => Err(fault(
                StatusCode::CONFLICT,
                "Multiple clusters exist with same name. Please use the cluster uuid instead.",
            )),
        }
    }

    fn template(&self, ident: &str) -> Result<&Value, Refusal> {
        let matches: Vec<&Value> = self
            .templates
            .iter()
            .filter(|t| {
                let key = if is_uuid_like(ident) { "uuid" } else { "name" };
                t[key].as_str() == Some(ident)
            })
            .collect();
        match matches[..] {
            [template] => Ok(template),
            [] => Err(fault(
                StatusCode::NOT_FOUND,
                &format!("ClusterTemplate {ident} could not be found."),
            )),
            _ => Err(fault(
                StatusCode::CONFLICT,
                "Multiple cluster templates exist with same name. Please use the cluster \
                 template uuid instead.",
            )),
        }
    }

    /// A new cluster with a CA of its own.
    fn add_cluster(&mut self, spec: Spec) -> Result<String> {
        let uuid = self.new_uuid();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{} CA", spec.name));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let (ca_pem, ca) = match &self.backing {
            Some(backing) => (
                backing.ca_pem.clone(),
                rcgen::Issuer::from_ca_cert_pem(
                    &backing.ca_pem,
                    rcgen::KeyPair::from_pem(&backing.ca_key_pem)?,
                )?,
            ),
            None => {
                let key = rcgen::KeyPair::generate()?;
                let ca_pem = params.self_signed(&key)?.pem();
                (ca_pem, rcgen::Issuer::new(params, key))
            }
        };
        self.clusters.push(MockCluster {
            uuid: uuid.clone(),
            name: spec.name,
            template_id: spec.template_id,
            status: spec.status,
            status_reason: None,
            node_count: spec.node_count,
            master_count: spec.master_count,
            labels: spec.labels,
            keypair: spec.keypair,
            create_timeout: spec.create_timeout,
            api_address: None,
            steps: VecDeque::new(),
            ca_pem,
            ca,
            backing_api: self.backing.as_ref().map(|b| b.api_address.clone()),
        });
        Ok(uuid)
    }
}

impl MockMagnum {
    /// Starts the mock on a loopback port; tokens are checked with the Keystone at
    /// `keystone` (its v3 URL).
    pub async fn start(keystone: &str) -> Result<MockMagnum> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        let shared = Arc::new(Shared {
            keystone: keystone.trim_end_matches('/').to_owned(),
            http: crate::http_client(),
            inner: Mutex::new(Inner {
                seed,
                ..Inner::default()
            }),
        });
        let router = Router::new()
            .route(
                "/v1/clustertemplates",
                get(list_templates).post(create_template),
            )
            .route("/v1/clustertemplates/{ident}", get(get_template))
            .route("/v1/clusters", get(list_clusters).post(create_cluster))
            .route(
                "/v1/clusters/{ident}",
                get(get_cluster).delete(delete_cluster),
            )
            .route("/v1/clusters/{ident}/actions/resize", post(resize_cluster))
            .route("/v1/certificates", post(sign_certificate))
            .route("/v1/certificates/{ident}", get(get_ca))
            .fallback(|| async { fault(StatusCode::NOT_FOUND, "The resource could not be found.") })
            .layer(middleware::from_fn_with_state(shared.clone(), gate))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}/v1", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(MockMagnum {
            endpoint,
            shared,
            task,
        })
    }

    /// Magnum's `/v1` URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.shared.lock().requests.clone()
    }

    /// `METHOD /path -> status` of each request.
    pub fn seen(&self) -> Vec<String> {
        self.requests()
            .iter()
            .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
            .collect()
    }

    /// Subjects of the CSRs it signed.
    pub fn signed(&self) -> Vec<String> {
        self.shared.lock().signed.clone()
    }

    /// Clusters created from now on stand for a real Kubernetes API: `api_address` is
    /// `server`, and the CA and the certificates it signs are the cluster CA's (`ca_pem`,
    /// `ca_key_pem`), so that the API accepts them (its `--client-ca-file`).
    pub fn stand_for(&self, server: &str, ca_pem: &str, ca_key_pem: &str) {
        self.shared.lock().backing = Some(Backing {
            api_address: server.to_owned(),
            ca_pem: ca_pem.to_owned(),
            ca_key_pem: ca_key_pem.to_owned(),
        });
    }

    /// Adds a cluster directly, as another Magnum user might have made it.
    pub fn insert_cluster(&self, name: &str, template_id: &str, status: &str) -> Result<String> {
        self.shared.lock().add_cluster(Spec {
            name: name.to_owned(),
            template_id: template_id.to_owned(),
            status: status.to_owned(),
            node_count: 1,
            master_count: 1,
            labels: Map::new(),
            keypair: None,
            create_timeout: 60,
        })
    }
}

/// Records every request; checks the token with Keystone and the microversion header.
async fn gate(State(mock): State<Mock>, mut request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    // In a block: a closure borrowing the request must not live across an await (the
    // body is not Sync).
    let (version, token) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (header("openstack-api-version"), header("x-auth-token"))
    };
    let token_is_valid = match &token {
        Some(token) => mock.token_is_valid(token).await,
        None => false,
    };
    let mut response = if !token_is_valid {
        unauthorized()
    } else {
        match parse_version(version.as_deref()) {
            Err(refusal) => refusal.into_response(),
            Ok(minor) => {
                request.extensions_mut().insert(Minor(minor));
                let mut response = next.run(request).await;
                if let Ok(value) = HeaderValue::from_str(&format!("container-infra 1.{minor}")) {
                    response
                        .headers_mut()
                        .insert("OpenStack-API-Version", value);
                }
                response
            }
        }
    };
    let mut inner = mock.lock();
    let serial = inner.new_uuid();
    if let Ok(value) = HeaderValue::from_str(&format!("req-{serial}")) {
        response
            .headers_mut()
            .insert("x-openstack-request-id", value);
    }
    for (name, value) in [
        ("OpenStack-API-Minimum-Version", MIN_MINOR),
        ("OpenStack-API-Maximum-Version", MAX_MINOR),
    ] {
        if let Ok(value) = HeaderValue::from_str(&format!("container-infra 1.{value}")) {
            response.headers_mut().insert(name, value);
        }
    }
    inner.requests.push(Seen {
        method,
        path,
        status: response.status().as_u16(),
        version,
    });
    response
}

/// A JSON object body, or Magnum's 400.
fn object_of(body: &Bytes) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(fault(
            StatusCode::BAD_REQUEST,
            "The request body is not a JSON object.",
        )),
    }
}

fn mandatory<'a>(object: &'a Map<String, Value>, field: &str) -> Result<&'a str, Refusal> {
    object
        .get(field)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            fault(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Invalid input for field/attribute {field}. Value: None. Mandatory field \
                     missing."
                ),
            )
        })
}

#[derive(serde::Deserialize)]
struct Paging {
    limit: Option<usize>,
    marker: Option<String>,
}

/// A page of `items` (each with its `uuid`) after `marker`, with `next` when it is full.
fn page(
    collection: &str,
    items: Vec<Value>,
    paging: &Paging,
    marker_missing: &str,
) -> Result<Value, Refusal> {
    let limit = paging.limit.unwrap_or(1000).clamp(1, 1000);
    let start = match &paging.marker {
        None => 0,
        Some(marker) => {
            items
                .iter()
                .position(|item| item["uuid"].as_str() == Some(marker))
                .ok_or_else(|| {
                    fault(
                        StatusCode::NOT_FOUND,
                        &format!("{marker_missing} {marker} could not be found."),
                    )
                })?
                + 1
        }
    };
    let slice: Vec<Value> = items.into_iter().skip(start).take(limit).collect();
    let mut body = json!({ collection: slice });
    if slice.len() == limit
        && let Some(last) = slice.last().and_then(|item| item["uuid"].as_str())
    {
        body["next"] = json!(format!(
            "{NEXT_HOST}/v1/{collection}?limit={limit}&marker={last}"
        ));
    }
    Ok(body)
}

async fn list_templates(
    State(mock): State<Mock>,
    Query(paging): Query<Paging>,
) -> Result<Response, Refusal> {
    let templates = mock.lock().templates.clone();
    let body = page("clustertemplates", templates, &paging, "ClusterTemplate")?;
    Ok(Json(body).into_response())
}

async fn create_template(State(mock): State<Mock>, body: Bytes) -> Result<Response, Refusal> {
    let object = object_of(&body)?;
    for field in ["image_id", "coe", "external_network_id"] {
        mandatory(&object, field)?;
    }
    let mut inner = mock.lock();
    let uuid = inner.new_uuid();
    let mut template = json!({
        "uuid": uuid, "name": null, "labels": {}, "tls_disabled": false, "public": false,
        "master_lb_enabled": false, "floating_ip_enabled": true, "server_type": "vm",
        "network_driver": "flannel", "cluster_distro": "fedora-coreos", "apiserver_port": null,
        "created_at": TIMESTAMP, "updated_at": null, "links": links("clustertemplates", &uuid),
    });
    for (key, value) in object {
        template[key] = value;
    }
    inner.templates.push(template.clone());
    Ok((StatusCode::CREATED, Json(template)).into_response())
}

async fn get_template(
    State(mock): State<Mock>,
    Path(ident): Path<String>,
) -> Result<Response, Refusal> {
    let template = mock.lock().template(&ident)?.clone();
    Ok(Json(template).into_response())
}

async fn list_clusters(
    State(mock): State<Mock>,
    Query(paging): Query<Paging>,
) -> Result<Response, Refusal> {
    let clusters = mock
        .lock()
        .clusters
        .iter()
        .map(MockCluster::summary)
        .collect();
    let body = page("clusters", clusters, &paging, "Cluster")?;
    Ok(Json(body).into_response())
}

/// A count field of a create body: 1 when absent, else at least `minimum`.
fn count(object: &Map<String, Value>, field: &str, minimum: u64) -> Result<u32, Refusal> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(1),
        Some(value) => value
            .as_u64()
            .filter(|n| *n >= minimum)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                fault(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Invalid input for field/attribute {field}. Value: '{value}'. Value \
                         should be greater or equal to {minimum}"
                    ),
                )
            }),
    }
}

async fn create_cluster(
    State(mock): State<Mock>,
    Extension(Minor(minor)): Extension<Minor>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let object = object_of(&body)?;
    let template_id = mandatory(&object, "cluster_template_id")?.to_owned();
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("generated-name")
        .to_owned();
    let mut chars = name.chars();
    let name_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 242;
    if !name_ok {
        return Err(fault(
            StatusCode::BAD_REQUEST,
            &format!(
                "Invalid input for field/attribute name. Value: '{name}'. Value should match \
                 the pattern ^[a-zA-Z][a-zA-Z0-9_.-]*$"
            ),
        ));
    }
    let node_count = count(&object, "node_count", 0)?;
    if node_count == 0 && minor < ZERO_NODES_MINOR {
        return Err(fault(
            StatusCode::BAD_REQUEST,
            "Resizing a nodegroup to zero is not supported in the provided microversion.",
        ));
    }
    let master_count = count(&object, "master_count", 1)?;
    let mut inner = mock.lock();
    let template_labels = match inner.template(&template_id) {
        Ok(template) => template["labels"].as_object().cloned().unwrap_or_default(),
        // Magnum turns the template's 404 into a 400 for a POST.
        Err(_) => {
            return Err(fault(
                StatusCode::BAD_REQUEST,
                &format!("ClusterTemplate {template_id} could not be found."),
            ));
        }
    };
    let asked = object
        .get("labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let merge = object.get("merge_labels").and_then(Value::as_bool) == Some(true);
    let labels = if asked.is_empty() {
        template_labels
    } else if merge {
        let mut merged = template_labels;
        merged.extend(asked.clone());
        merged
    } else {
        asked.clone()
    };
    let uuid = inner
        .add_cluster(Spec {
            name,
            template_id,
            status: "CREATE_IN_PROGRESS".to_owned(),
            node_count,
            master_count,
            labels,
            keypair: object
                .get("keypair")
                .and_then(Value::as_str)
                .map(str::to_owned),
            create_timeout: object
                .get("create_timeout")
                .and_then(Value::as_u64)
                .unwrap_or(60),
        })
        .map_err(|e| fault(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    let (status, reason) = match asked.get("mock_fail").and_then(Value::as_str) {
        Some(reason) => ("CREATE_FAILED", reason.to_owned()),
        None => (
            "CREATE_COMPLETE",
            "Stack CREATE completed successfully".to_owned(),
        ),
    };
    if let Some(cluster) = inner.clusters.last_mut() {
        cluster.steps.push_back(Step {
            polls: CREATE_POLLS,
            status,
            reason: Some(reason),
            node_count: None,
            remove: false,
        });
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "uuid": uuid }))).into_response())
}

async fn get_cluster(
    State(mock): State<Mock>,
    Path(ident): Path<String>,
) -> Result<Response, Refusal> {
    let mut inner = mock.lock();
    let index = inner.cluster_index(&ident)?;
    let cluster = &mut inner.clusters[index];
    let body = cluster.detail();
    if !cluster.advance() {
        inner.clusters.remove(index);
    }
    Ok(Json(body).into_response())
}

async fn delete_cluster(
    State(mock): State<Mock>,
    Path(ident): Path<String>,
) -> Result<Response, Refusal> {
    let mut inner = mock.lock();
    let index = inner.cluster_index(&ident)?;
    let cluster = &mut inner.clusters[index];
    cluster.status = "DELETE_IN_PROGRESS".to_owned();
    cluster.status_reason = None;
    cluster.steps = VecDeque::from([Step {
        polls: 2,
        status: "DELETE_COMPLETE",
        reason: None,
        node_count: None,
        remove: true,
    }]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn resize_cluster(
    State(mock): State<Mock>,
    Extension(Minor(minor)): Extension<Minor>,
    Path(ident): Path<String>,
    body: Bytes,
) -> Result<Response, Refusal> {
    if minor < RESIZE_MINOR {
        return Err(version_refused(&format!(
            "Version 1.{minor} was requested but the requested API resize is not supported for \
             this version."
        )));
    }
    let object = object_of(&body)?;
    let Some(value) = object.get("node_count") else {
        return Err(fault(
            StatusCode::BAD_REQUEST,
            "Invalid input for field/attribute node_count. Value: None. Mandatory field missing.",
        ));
    };
    let node_count = value
        .as_u64()
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            fault(
                StatusCode::BAD_REQUEST,
                &format!(
                    "Invalid input for field/attribute node_count. Value: '{value}'. Value \
                     should be greater or equal to 1"
                ),
            )
        })?;
    let mut inner = mock.lock();
    let index = inner.cluster_index(&ident)?;
    let cluster = &mut inner.clusters[index];
    if !cluster.status.ends_with("_COMPLETE") || cluster.status.starts_with("DELETE") {
        return Err(fault(
            StatusCode::BAD_REQUEST,
            &format!(
                "Updating a cluster when status is \"{}\" is not supported.",
                cluster.status
            ),
        ));
    }
    cluster.steps = VecDeque::from([
        Step {
            polls: 1,
            status: "UPDATE_IN_PROGRESS",
            reason: None,
            node_count: None,
            remove: false,
        },
        Step {
            polls: 2,
            status: "UPDATE_COMPLETE",
            reason: Some("Stack UPDATE completed successfully".to_owned()),
            node_count: Some(node_count),
            remove: false,
        },
    ]);
    let uuid = cluster.uuid.clone();
    Ok((StatusCode::ACCEPTED, Json(json!({ "uuid": uuid }))).into_response())
}

async fn get_ca(State(mock): State<Mock>, Path(ident): Path<String>) -> Result<Response, Refusal> {
    let inner = mock.lock();
    let cluster = &inner.clusters[inner.cluster_index(&ident)?];
    Ok(Json(json!({
        "cluster_uuid": cluster.uuid,
        "pem": cluster.ca_pem,
        "links": links("certificates", &cluster.uuid),
    }))
    .into_response())
}

/// A distinguished name's value as text.
fn dn_text(value: &rcgen::DnValue) -> Option<String> {
    match value {
        rcgen::DnValue::Utf8String(text) => Some(text.clone()),
        rcgen::DnValue::PrintableString(text) => Some(text.as_str().to_owned()),
        rcgen::DnValue::Ia5String(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

async fn sign_certificate(State(mock): State<Mock>, body: Bytes) -> Result<Response, Refusal> {
    let object = object_of(&body)?;
    let ident = mandatory(&object, "cluster_uuid")?.to_owned();
    let csr_pem = mandatory(&object, "csr")?.to_owned();
    // Parsing checks the CSR's signature too.
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(&csr_pem)
        .map_err(|e| fault(StatusCode::BAD_REQUEST, &format!("Invalid CSR: {e}.")))?;
    let name = &csr.params.distinguished_name;
    let common_name = name.get(&rcgen::DnType::CommonName).and_then(dn_text);
    let organization = name.get(&rcgen::DnType::OrganizationName).and_then(dn_text);
    let subject = format!(
        "CN={},O={}",
        common_name.as_deref().unwrap_or(""),
        organization.as_deref().unwrap_or("")
    );
    if subject != "CN=admin,O=system:masters" {
        return Err(fault(
            StatusCode::BAD_REQUEST,
            &format!("This mock signs only CN=admin,O=system:masters, not {subject}."),
        ));
    }
    let mut inner = mock.lock();
    // Magnum turns the cluster's 404 into a 400 for a POST.
    let index = inner.cluster_index(&ident).map_err(|_| {
        fault(
            StatusCode::BAD_REQUEST,
            &format!("Cluster {ident} could not be found."),
        )
    })?;
    csr.params.is_ca = rcgen::IsCa::NoCa;
    csr.params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    csr.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    csr.params.use_authority_key_identifier_extension = true;
    let cluster = &inner.clusters[index];
    let signed = csr
        .signed_by(&cluster.ca)
        .map_err(|e| fault(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?
        .pem();
    let uuid = cluster.uuid.clone();
    inner.signed.push(subject);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "pem": signed,
            "cluster_uuid": uuid,
            "csr": csr_pem,
            "links": links("certificates", &uuid),
        })),
    )
        .into_response())
}
