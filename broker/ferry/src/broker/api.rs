//! The REST API of `spec/interfaces.md`, on axum. One place maps errors to HTTP
//! ([`ApiError`]); every handler authorizes first; bodies are parsed by us, so that a bad
//! body is a 400 in the spec's error shape, never a framework default or a 500.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use ferry_auth::{AuthError, Principal, Role, Verifier};
use ferry_policies::quantity::{Cpu, Memory};
use ferry_ports::WorkloadKey;
use ferry_store::{Store, StoreError};
use futures::Stream;
use serde::Deserialize;
use serde_json::{Value, json};

use super::events::Events;
use super::migration::{CancelError, Engine, Migration, MoveOptions, SubmitError};
use super::world::World;
use super::{audit, history, policies};

/// Largest request body: policies and what-if resources are text, a few hundred KiB at
/// most in practice.
const BODY_LIMIT: usize = 1024 * 1024;
/// Longest time a (non-streaming) request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct AppState {
    pub world: Arc<World>,
    pub engine: Arc<Engine>,
    pub store: Store,
    pub events: Events,
    pub verifier: Verifier,
    pub metrics: super::metrics::Metrics,
    pub provisioning: super::provisioning::Provisioning,
    pub controllers: super::controllers::Controllers,
}

type Shared = Arc<AppState>;

/// Every error a client can get, in the spec's shape `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(&'static str, String),
    Unauthorized(AuthError),
    Forbidden(String),
    NotFound(String),
    Conflict(String),
    /// The request is valid, and the state of things refuses it (409 with its own code:
    /// a move onto empty volumes, a move that breaks a policy).
    Refused(&'static str, String),
    /// A cloud the broker works with refused or did not answer (its message says which
    /// and why); never for anything wrong in the request itself.
    Upstream(String),
    /// A fault on our side (the store failed); never for anything a client sent.
    Internal(String),
}

impl ApiError {
    /// What the client is told, without the status.
    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthorized(error) => error.to_string(),
            ApiError::BadRequest(_, message)
            | ApiError::Forbidden(message)
            | ApiError::NotFound(message)
            | ApiError::Conflict(message)
            | ApiError::Refused(_, message)
            | ApiError::Upstream(message)
            | ApiError::Internal(message) => message.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(code, message) => (StatusCode::BAD_REQUEST, code, message),
            ApiError::Unauthorized(error) => {
                (StatusCode::UNAUTHORIZED, error.code(), error.to_string())
            }
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, "conflict", message),
            ApiError::Refused(code, message) => (StatusCode::CONFLICT, code, message),
            ApiError::Upstream(message) => (StatusCode::BAD_GATEWAY, "upstream", message),
            ApiError::Internal(message) => {
                tracing::error!(%message, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Internal(format!("store: {error}"))
    }
}

fn authorize(state: &AppState, headers: &HeaderMap, role: Role) -> Result<Principal, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let principal = state
        .verifier
        .verify(header)
        .map_err(ApiError::Unauthorized)?;
    if !principal.has(role) {
        return Err(ApiError::Forbidden(format!(
            "this needs the {role} role; the token has {}",
            principal.role
        )));
    }
    Ok(principal)
}

fn namespace_allowed(principal: &Principal, namespace: &str) -> Result<(), ApiError> {
    if principal.sees_namespace(namespace) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "the token is not allowed in namespace {namespace}"
        )))
    }
}

pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/api/v1/clusters", get(clusters).post(create_cluster))
        .route(
            "/api/v1/clusters/{name}",
            axum::routing::delete(delete_cluster),
        )
        .route("/api/v1/clusters/{name}/resize", post(resize_cluster))
        .route("/api/v1/clusters/{name}/pricing", put(set_pricing))
        .route("/api/v1/controllers", get(controllers))
        .route("/api/v1/controllers/mode", put(set_controller_mode))
        .route(
            "/api/v1/clusters/{name}/provisioning",
            get(get_provisioning),
        )
        .route("/api/v1/provisioning", get(list_provisioning))
        .route("/api/v1/workloads", get(workloads))
        .route("/api/v1/placements", get(placements))
        .route("/api/v1/plan", post(what_if))
        .route("/api/v1/policies", get(list_policies))
        .route(
            "/api/v1/policies/{name}",
            put(put_policy).delete(delete_policy).get(get_policy),
        )
        .route(
            "/api/v1/migrations",
            post(create_migration).get(list_migrations),
        )
        .route("/api/v1/migrations/{id}", get(get_migration))
        .route("/api/v1/migrations/{id}/cancel", post(cancel_migration))
        .route("/api/v1/audit", get(audit_log))
        .route("/api/v1/cost-history", get(cost_history))
        .route("/api/v1/openapi.json", get(openapi))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    Router::new()
        .merge(api)
        // Streams stay open for as long as the client watches: no request timeout.
        .route("/api/v1/events", get(events))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(super::metrics::readyz))
        .route("/metrics", get(metrics))
        .route("/", get(super::dashboard::index))
        .route("/assets/{file}", get(super::dashboard::asset))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                Json(json!({"error": {"code": "method_not_allowed", "message": "this route does not take that method"}})),
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), super::metrics::track))
        .with_state(state)
}

fn quantities(cpu_millis: u64, memory_bytes: u64) -> Value {
    json!({
        "cpu": Cpu(cpu_millis).to_string(), "memory": Memory(memory_bytes).to_string(),
        "cpuMillis": cpu_millis, "memoryBytes": memory_bytes,
    })
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

async fn clusters(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Role::Viewer)?;
    let census = state.world.census().await;
    let mut items = Vec::new();
    for member in state.world.members() {
        let d = &member.definition;
        let (health, capacity, used, count, cost, error) = match census.inventories.get(&d.name) {
            Some(Ok(inventory)) => {
                let capacity = d.capacity.map_or(
                    (
                        inventory.allocatable.cpu_millis,
                        inventory.allocatable.memory_bytes,
                    ),
                    |c| (c.cpu_millis, c.memory_bytes),
                );
                let serving = inventory
                    .workloads
                    .iter()
                    .filter(|w| w.replicas > 0)
                    .count();
                let cost = member.monthly_run_rate(inventory);
                (
                    format!("{:?}", inventory.health),
                    capacity,
                    (
                        inventory.requested.cpu_millis,
                        inventory.requested.memory_bytes,
                    ),
                    serving,
                    cost,
                    None,
                )
            }
            Some(Err(error)) => (
                "Unreachable".to_owned(),
                (0, 0),
                (0, 0),
                0,
                0.0,
                Some(error.to_string()),
            ),
            None => ("Unreachable".to_owned(), (0, 0), (0, 0), 0, 0.0, None),
        };
        items.push(json!({
            "name": d.name,
            "provider": d.provider.as_str(),
            "labels": d.labels,
            "health": health,
            "capacity": quantities(capacity.0, capacity.1),
            "used": quantities(used.0, used.1),
            "pricing": {
                "currency": d.pricing.currency, "cpuCoreHour": d.pricing.cpu_core_hour,
                "memoryGibHour": d.pricing.memory_gib_hour, "egressGib": d.pricing.egress_gib,
                "source": member.price_source.as_deref().unwrap_or("the Cluster file"),
            },
            "workloads": count,
            "monthlyCost": cents(cost),
            "error": error,
        }));
    }
    Ok(Json(json!({"items": items})))
}

async fn workloads(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Role::Viewer)?;
    let census = state.world.census().await;
    let mut items = Vec::new();
    for (key, copies) in census.workloads() {
        if !principal.sees_namespace(&key.namespace) {
            continue;
        }
        let Some((_, any)) = copies.first() else {
            continue;
        };
        let mut cost = 0.0;
        let mut placements = Vec::new();
        let mut replicas = 0;
        for (cluster, copy) in &copies {
            if copy.replicas == 0 {
                continue;
            }
            replicas += copy.replicas;
            if let Some(member) = state.world.member(cluster) {
                cost += member.monthly_cost(copy);
            }
            placements.push(json!({"cluster": cluster, "replicas": copy.replicas, "availableReplicas": copy.available_replicas}));
        }
        items.push(json!({
            "namespace": key.namespace,
            "name": key.name,
            "labels": any.labels,
            "replicas": replicas,
            "resources": quantities(any.requests.cpu_millis, any.requests.memory_bytes),
            "placements": placements,
            "monthlyCost": cents(cost),
        }));
    }
    Ok(Json(json!({"items": items})))
}

async fn placements(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Role::Viewer)?;
    let census = state.world.census().await;
    let plan = state
        .world
        .plan(&census)
        .map_err(|e| ApiError::Conflict(format!("the policies cannot be planned: {e}")))?;
    let mut value: Value = serde_json::from_str(
        &crate::plan_output::json(&plan).map_err(|e| ApiError::Internal(e.to_string()))?,
    )
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    // A namespace-scoped token sees only its namespaces' lines.
    let visible = |entry: &Value| {
        entry["workload"]
            .as_str()
            .and_then(|w| w.split_once('/'))
            .is_some_and(|(ns, _)| principal.sees_namespace(ns))
    };
    // `held` is there only when some are: `get_mut`, since indexing would add a null.
    for list in ["placements", "unplaced", "held", "moves"] {
        if let Some(items) = value.get_mut(list).and_then(Value::as_array_mut) {
            items.retain(|e| visible(e));
        }
    }
    // What the controllers make of each move: started, held (why, until when) or shown.
    let report = state.controllers.report();
    if let Some(moves) = value["moves"].as_array_mut() {
        for entry in moves {
            let decision = report.decisions.iter().find(|d| {
                entry["workload"] == d.proposal.workload.as_str()
                    && entry["to"] == d.proposal.to.as_str()
            });
            if let Some(decision) = decision {
                entry["decision"] = super::controllers::decision_json(
                    decision,
                    report.started.get(&decision.proposal.workload),
                );
            }
        }
    }
    let current: Vec<Value> = census
        .workloads()
        .into_iter()
        .filter(|(key, _)| principal.sees_namespace(&key.namespace))
        .flat_map(|(key, copies)| {
            copies
                .into_iter()
                .filter(|(_, c)| c.replicas > 0)
                .map(move |(cluster, c)| json!({"workload": key.to_string(), "cluster": cluster, "replicas": c.replicas}))
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(Json(json!({"current": current, "plan": value})))
}

async fn what_if(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, Role::Viewer)?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::BadRequest(
            "bad_body",
            "the body must be UTF-8 YAML resources".to_owned(),
        )
    })?;
    let mut set = ferry_policies::resources::ResourceSet::default();
    let diagnostics = set.add_source("request", text);
    if !diagnostics.is_empty() {
        let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
        return Err(ApiError::BadRequest("invalid_resources", lines.join("\n")));
    }
    let clusters: Vec<_> = set.clusters.iter().map(|c| c.value.clone()).collect();
    let workloads: Vec<_> = set.workloads.iter().map(|w| w.value.clone()).collect();
    let policies: Vec<_> = set.policies.iter().map(|p| p.value.clone()).collect();
    let mode = if workloads.iter().any(|w| w.current_cluster.is_some()) {
        ferry_policies::engine::Mode::Rebalance
    } else {
        ferry_policies::engine::Mode::Fresh
    };
    let plan = ferry_policies::engine::plan(
        &ferry_policies::engine::Snapshot {
            clusters: &clusters,
            workloads: &workloads,
            policies: &policies,
        },
        mode,
    )
    .map_err(|e| ApiError::BadRequest("unplannable", e.to_string()))?;
    let text = crate::plan_output::json(&plan).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

async fn list_policies(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Role::Viewer)?;
    Ok(Json(json!({"items": policies::list(&state)?})))
}

async fn get_policy(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Role::Viewer)?;
    policies::list(&state)?
        .into_iter()
        .find(|p| p["name"] == name.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no policy {name}")))
}

async fn put_policy(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Role::Admin)?;
    let saved = policies::put(&state, &name, &body).await?;
    let _ = audit::record(
        &state.store,
        &principal.subject,
        "policy.put",
        &name,
        Some(&client.to_string()),
        "ok",
    );
    Ok(Json(saved))
}

async fn delete_policy(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let principal = authorize(&state, &headers, Role::Admin)?;
    policies::delete(&state, &name)?;
    let _ = audit::record(
        &state.store,
        &principal.subject,
        "policy.delete",
        &name,
        Some(&client.to_string()),
        "ok",
    );
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MigrationRequest {
    workload: String,
    to: String,
    /// Check and price the move, change nothing: answered 200 with the findings.
    #[serde(default)]
    dry_run: bool,
    /// Move a workload whose pods use claims onto new, empty claims.
    #[serde(default)]
    accept_empty_volumes: bool,
    /// Move although a hard rule of the governing policy forbids the target (admins).
    #[serde(default)]
    force: bool,
}

async fn create_migration(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, Role::Operator)?;
    let request: MigrationRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(
            "bad_body",
            format!("expected {{\"workload\": \"ns/name\", \"to\": \"cluster\", \"dryRun\": false, \"acceptEmptyVolumes\": false, \"force\": false}}: {e}"),
        )
    })?;
    let key = WorkloadKey::parse(&request.workload).ok_or_else(|| {
        ApiError::BadRequest(
            "bad_workload",
            format!("`{}` is not namespace/name", request.workload),
        )
    })?;
    namespace_allowed(&principal, &key.namespace)?;
    if request.force && !principal.has(Role::Admin) {
        return Err(ApiError::Forbidden(format!(
            "forcing a move past its policy needs the admin role; the token has {}",
            principal.role
        )));
    }
    let options = MoveOptions {
        accept_empty_volumes: request.accept_empty_volumes,
        force: request.force,
    };
    if request.dry_run {
        let answer = state
            .engine
            .dry_run(&key, &request.to, &options)
            .await
            .map_err(submit_error)?;
        return Ok((StatusCode::OK, Json(answer)).into_response());
    }
    let migration = state
        .engine
        .submit(
            &key,
            &request.to,
            &options,
            &principal.subject,
            Some(&client.to_string()),
        )
        .await
        .map_err(submit_error)?;
    Ok((StatusCode::ACCEPTED, Json(migration)).into_response())
}

fn submit_error(error: SubmitError) -> ApiError {
    match error {
        SubmitError::UnknownCluster(_)
        | SubmitError::UnknownWorkload(_)
        | SubmitError::NothingToEvacuate { .. } => ApiError::NotFound(error.to_string()),
        SubmitError::AlreadyThere { .. } => {
            ApiError::BadRequest("already_there", error.to_string())
        }
        SubmitError::UsesClaims { .. } => ApiError::Refused("uses_claims", error.to_string()),
        SubmitError::BreaksPolicy { .. } => ApiError::Refused("breaks_policy", error.to_string()),
        SubmitError::Busy { .. } | SubmitError::StaleCopy { .. } => {
            ApiError::Conflict(error.to_string())
        }
        SubmitError::Store(error) => error.into(),
    }
}

async fn list_migrations(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Role::Viewer)?;
    let items: Vec<Migration> = state
        .engine
        .list()?
        .into_iter()
        .filter(|m| principal.sees_namespace(&m.namespace))
        .collect();
    Ok(Json(json!({"items": items})))
}

fn visible_migration(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Migration, ApiError> {
    let migration = state
        .engine
        .get(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no migration {id}")))?;
    // Out of scope looks the same as absent: a scoped token learns nothing of others.
    if !principal.sees_namespace(&migration.namespace) {
        return Err(ApiError::NotFound(format!("no migration {id}")));
    }
    Ok(migration)
}

async fn get_migration(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Migration>, ApiError> {
    let principal = authorize(&state, &headers, Role::Viewer)?;
    visible_migration(&state, &principal, &id).map(Json)
}

async fn cancel_migration(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, Role::Operator)?;
    visible_migration(&state, &principal, &id)?;
    let migration = state
        .engine
        .cancel(&id, &principal.subject, Some(&client.to_string()))
        .map_err(|error| match error {
            CancelError::NotFound(_) => ApiError::NotFound(error.to_string()),
            CancelError::Ended { .. } => ApiError::Conflict(error.to_string()),
            CancelError::Store(error) => error.into(),
        })?;
    Ok((StatusCode::ACCEPTED, Json(migration)).into_response())
}

async fn audit_log(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Role::Admin)?;
    let limit = limit_param(query.as_deref())?.unwrap_or(500).min(10_000);
    let records = state.store.list::<audit::AuditRecord>(audit::PREFIX)?;
    let items: Vec<_> = records
        .into_iter()
        .rev()
        .take(limit)
        .map(|(_, r)| r)
        .collect();
    Ok(Json(json!({"items": items})))
}

/// `?limit=N` of a list. Parsed here rather than by axum's `Query`, so that a bad value is
/// a 400 in the API's error shape, and only after the caller is authorized.
fn limit_param(query: Option<&str>) -> Result<Option<usize>, ApiError> {
    let mut limit = None;
    for pair in query.unwrap_or("").split('&') {
        if let Some(value) = pair.strip_prefix("limit=") {
            limit = Some(value.parse::<usize>().map_err(|_| {
                ApiError::BadRequest(
                    "bad_query",
                    format!("limit must be a whole number, not `{value}`"),
                )
            })?);
        }
    }
    Ok(limit)
}

/// The cost history, oldest first: `?limit=N` keeps the newest N points.
async fn cost_history(
    State(state): State<Shared>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Role::Viewer)?;
    let limit = limit_param(query.as_deref())?;
    let items: Vec<Value> = history::points(&state, limit)?
        .iter()
        .map(history::dto)
        .collect();
    Ok(Json(json!({"items": items})))
}

async fn events(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let principal = authorize(&state, &headers, Role::Viewer)?;
    let mut receiver = state.events.subscribe();
    let stream = async_stream(move |mut yield_event| async move {
        yield_event(SseEvent::default().event("hello").data("{}")).await;
        loop {
            match receiver.recv().await {
                Ok(event) => {
                    if event
                        .namespace
                        .as_deref()
                        .is_some_and(|ns| !principal.sees_namespace(ns))
                    {
                        continue;
                    }
                    let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
                    let sse = SseEvent::default()
                        .event(event.kind.clone())
                        .id(event.seq.to_string())
                        .data(data);
                    if !yield_event(sse).await {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                    let sse = SseEvent::default()
                        .event("lagged")
                        .data(format!("{{\"missed\": {missed}}}"));
                    if !yield_event(sse).await {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// A stream fed by a producer task through a bounded channel; the producer learns that
/// the client left when a send fails.
fn async_stream<F, Fut>(producer: F) -> impl Stream<Item = Result<SseEvent, Infallible>>
where
    F: FnOnce(
        Box<
            dyn FnMut(SseEvent) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
                + Send,
        >,
    ) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = tokio::sync::mpsc::channel::<SseEvent>(64);
    let send = Box::new(move |event: SseEvent| {
        let sender = sender.clone();
        Box::pin(async move { sender.send(event).await.is_ok() })
            as std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
    });
    tokio::spawn(producer(send));
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    })
}

async fn metrics(State(state): State<Shared>) -> Response {
    let text = super::metrics::render(&state).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn openapi(State(state): State<Shared>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Role::Viewer)?;
    Ok(Json(super::openapi::document()))
}

// ---------------------------------------------------------------------------------------
// Clusters Ferry provisions (admin); `provisioning.rs` does the work.
// ---------------------------------------------------------------------------------------

fn audit_ok(state: &AppState, subject: &str, action: &str, target: &str, client: SocketAddr) {
    let _ = audit::record(
        &state.store,
        subject,
        action,
        target,
        Some(&client.to_string()),
        "ok",
    );
}

/// `POST /api/v1/clusters`: the body is one Cluster document (YAML or JSON) of provider
/// `openstack` with a `heat` block; 202 with the provisioning record.
async fn create_cluster(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, Role::Admin)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("bad_body", "the body is not UTF-8 text".to_owned()))?;
    let record = super::provisioning::create(&state, text)?;
    let name = record["cluster"].as_str().unwrap_or_default().to_owned();
    audit_ok(&state, &principal.subject, "cluster.create", &name, client);
    Ok((StatusCode::ACCEPTED, Json(record)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResizeRequest {
    workers: u32,
}

/// `POST /api/v1/clusters/{name}/resize` with `{"workers": N}`; 202 with the record.
async fn resize_cluster(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, Role::Admin)?;
    let request: ResizeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest("bad_body", format!("expected {{\"workers\": N}}: {e}"))
    })?;
    let record = super::provisioning::resize(&state, &name, request.workers).await?;
    audit_ok(&state, &principal.subject, "cluster.resize", &name, client);
    Ok((StatusCode::ACCEPTED, Json(record)).into_response())
}

/// `DELETE /api/v1/clusters/{name}[?force=true]`; 202 with the record.
async fn delete_cluster(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let principal = authorize(&state, &headers, Role::Admin)?;
    let mut force = false;
    for pair in query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        force = match pair {
            "force=true" => true,
            "force=false" => false,
            other => {
                return Err(ApiError::BadRequest(
                    "bad_query",
                    format!("unknown query `{other}`; expected force=true or force=false"),
                ));
            }
        };
    }
    let record = super::provisioning::delete(&state, &name, force).await?;
    audit_ok(&state, &principal.subject, "cluster.delete", &name, client);
    Ok((StatusCode::ACCEPTED, Json(record)).into_response())
}

async fn get_provisioning(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Role::Viewer)?;
    match super::provisioning::get(&state, &name) {
        Ok(record) => Ok(Json(record.view())),
        Err(ApiError::NotFound(message)) => super::provisioning::member_resize(&state, &name)
            .map(Json)
            .ok_or(ApiError::NotFound(message)),
        Err(other) => Err(other),
    }
}

async fn list_provisioning(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Role::Viewer)?;
    Ok(Json(json!({"items": super::provisioning::list(&state)?})))
}

/// `GET /api/v1/controllers`: the mode, settings, each member's health phase and the
/// last pass's decisions.
async fn controllers(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Role::Viewer)?;
    Ok(Json(state.controllers.status(&state, |namespace| {
        principal.sees_namespace(namespace)
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeRequest {
    mode: String,
}

/// `PUT /api/v1/controllers/mode` with `{"mode": "auto"|"recommend"}` (admin). Not kept
/// across restarts: the config file says what a broker starts with.
async fn set_controller_mode(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Role::Admin)?;
    let request: ModeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(
            "bad_body",
            format!("expected {{\"mode\": \"auto\" or \"recommend\"}}: {e}"),
        )
    })?;
    let mode = ferry_policies::control::Mode::parse(&request.mode).ok_or_else(|| {
        ApiError::BadRequest(
            "bad_mode",
            format!("`{}` is neither auto nor recommend", request.mode),
        )
    })?;
    state.controllers.set_mode(mode);
    audit_ok(
        &state,
        &principal.subject,
        "controllers.mode",
        mode.as_str(),
        client,
    );
    state.events.publish(
        "controller.mode",
        None,
        json!({"mode": mode.as_str(), "by": principal.subject}),
    );
    Ok(Json(json!({"mode": mode.as_str()})))
}

/// The highest hourly rate the API accepts for a core, a GiB or a GiB of egress.
const MAX_HOURLY_RATE: f64 = 1_000_000.0;

/// The body of `PUT …/pricing`. The fields take the spelling of Cluster files and of this
/// answer (`memoryGiBHour`) and that of `GET /clusters` (`memoryGibHour`), so that a
/// cluster's `pricing` as read can be sent back; its read-only `source` is accepted and
/// ignored, and `currency`, when given, must be the cluster's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PricingRequest {
    cpu_core_hour: f64,
    #[serde(rename = "memoryGiBHour", alias = "memoryGibHour")]
    memory_gib_hour: f64,
    #[serde(default, rename = "egressGiB", alias = "egressGib")]
    egress_gib: Option<f64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default, rename = "source")]
    _source: Option<Value>,
}

/// `PUT /api/v1/clusters/{name}/pricing` (admin): new hourly rates for a member, as a
/// price feed would set them; they stand until the next change or reload of its file.
async fn set_pricing(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let principal = authorize(&state, &headers, Role::Admin)?;
    let request: PricingRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(
            "bad_body",
            format!(
                "expected {{\"cpuCoreHour\": N, \"memoryGiBHour\": N[, \"egressGiB\": N]}}: {e}"
            ),
        )
    })?;
    for (field, value) in [
        ("cpuCoreHour", Some(request.cpu_core_hour)),
        ("memoryGiBHour", Some(request.memory_gib_hour)),
        ("egressGiB", request.egress_gib),
    ] {
        // A bound far above any real rate, so that monthly costs stay finite.
        if let Some(value) = value
            && !(value.is_finite() && (0.0..=MAX_HOURLY_RATE).contains(&value))
        {
            return Err(ApiError::BadRequest(
                "bad_pricing",
                format!("{field} must be a number from 0 to {MAX_HOURLY_RATE}, found {value}"),
            ));
        }
    }
    let member = state.world.member(&name).ok_or_else(|| {
        ApiError::NotFound(format!("cluster {name} is not a member of this federation"))
    })?;
    let mut pricing = member.definition.pricing.clone();
    if let Some(currency) = &request.currency
        && *currency != pricing.currency
    {
        return Err(ApiError::BadRequest(
            "bad_pricing",
            format!(
                "cluster {name} is priced in {}; the API changes rates, not the currency (that is the Cluster file's)",
                pricing.currency
            ),
        ));
    }
    pricing.cpu_core_hour = request.cpu_core_hour;
    pricing.memory_gib_hour = request.memory_gib_hour;
    if let Some(egress) = request.egress_gib {
        pricing.egress_gib = egress;
    }
    let source = format!(
        "set through the API by {} at {}",
        principal.subject,
        super::clock::now()
    );
    if !state.world.set_pricing(&name, pricing.clone(), source) {
        // Taken out of the federation meanwhile.
        return Err(ApiError::NotFound(format!(
            "cluster {name} is not a member of this federation"
        )));
    }
    audit_ok(
        &state,
        &principal.subject,
        "cluster.pricing",
        &format!(
            "{name} cpuCoreHour={} memoryGiBHour={} egressGiB={}",
            pricing.cpu_core_hour, pricing.memory_gib_hour, pricing.egress_gib
        ),
        client,
    );
    state.events.publish(
        "cluster.pricing",
        None,
        json!({"cluster": name, "cpuCoreHour": pricing.cpu_core_hour,
               "memoryGiBHour": pricing.memory_gib_hour, "egressGiB": pricing.egress_gib}),
    );
    state.controllers.poke();
    Ok(Json(json!({"cluster": name, "pricing": {
        "currency": pricing.currency, "cpuCoreHour": pricing.cpu_core_hour,
        "memoryGiBHour": pricing.memory_gib_hour, "egressGiB": pricing.egress_gib}})))
}
