//! The REST API of `spec/interfaces.md`, on axum. One place maps errors to HTTP
//! ([`ApiError`]); bodies are parsed by us, so that a bad body is a 400 in the spec's error
//! shape, never a framework default or a 500.
//!
//! Every API route is authorized by [`authenticate`] from the request's headers alone,
//! before any handler runs: an unauthenticated or under-privileged request is refused
//! without its body being read (300 unauthenticated 1 MiB bodies once cost 292 MB), and
//! handlers take the caller from [`Caller`]. A namespace-scoped token acts only within its
//! namespaces: what concerns the whole federation needs an unscoped one
//! ([`federation_wide`]). Refusals are audited (`audit.rs`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Path, RawQuery, Request, State,
};
use axum::http::{HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::Next;
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
use tokio::sync::Semaphore;

use super::events::Events;
use super::migration::{CancelError, Engine, Migration, MoveOptions, SubmitError};
use super::world::{World, cents};
use super::{audit, history, policies};

/// Largest request body: policies and what-if resources are text, a few hundred KiB at
/// most in practice.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Longest time a (non-streaming) request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest request target (path and query) answered; longer is a 414. hyper refuses
/// targets of 64 KiB and more itself, with an empty 414.
const MAX_URI_LEN: usize = 8 * 1024;
/// Largest request head (the headers' names and values) answered; larger is a 431. hyper
/// refuses heads beyond its buffer (about 400 KiB) itself, with an empty 431.
const MAX_HEADERS_LEN: usize = 32 * 1024;

pub struct AppState {
    pub world: Arc<World>,
    pub engine: Arc<Engine>,
    pub store: Store,
    pub events: Events,
    pub verifier: Verifier,
    pub metrics: super::metrics::Metrics,
    pub provisioning: super::provisioning::Provisioning,
    pub controllers: super::controllers::Controllers,
    /// Where plans run, and how many at once.
    pub planner: Planner,
    /// Unauthenticated refusals, recorded coalesced.
    pub unauthenticated: audit::Unauthenticated,
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
    /// The request is larger than a limit of the broker (the message names the limit).
    TooLarge(&'static str, String),
    /// The broker is busy with as much of this kind of work as it takes at once: try
    /// again after the given number of seconds.
    Busy {
        message: String,
        retry_after: u64,
    },
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
            ApiError::Busy { message, .. }
            | ApiError::TooLarge(_, message)
            | ApiError::BadRequest(_, message)
            | ApiError::Forbidden(message)
            | ApiError::NotFound(message)
            | ApiError::Conflict(message)
            | ApiError::Refused(_, message)
            | ApiError::Upstream(message)
            | ApiError::Internal(message) => message.clone(),
        }
    }
}

/// The code and message of an error answer, kept on the response so that the
/// authorization layer can audit a refusal without parsing the body.
#[derive(Clone, Debug)]
struct Refusal {
    code: &'static str,
    message: String,
}

/// An error answer in the API's shape.
fn error_response(status: StatusCode, code: &'static str, message: String) -> Response {
    let mut response = (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    response.extensions_mut().insert(Refusal { code, message });
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut retry_after = None;
        let (status, code, message) = match self {
            ApiError::BadRequest(code, message) => (StatusCode::BAD_REQUEST, code, message),
            ApiError::Unauthorized(error) => {
                (StatusCode::UNAUTHORIZED, error.code(), error.to_string())
            }
            ApiError::Forbidden(message) => (StatusCode::FORBIDDEN, "forbidden", message),
            ApiError::NotFound(message) => (StatusCode::NOT_FOUND, "not_found", message),
            ApiError::Conflict(message) => (StatusCode::CONFLICT, "conflict", message),
            ApiError::Refused(code, message) => (StatusCode::CONFLICT, code, message),
            ApiError::TooLarge(code, message) => (StatusCode::PAYLOAD_TOO_LARGE, code, message),
            ApiError::Busy {
                message,
                retry_after: seconds,
            } => {
                retry_after = Some(seconds);
                (StatusCode::TOO_MANY_REQUESTS, "busy", message)
            }
            ApiError::Upstream(message) => (StatusCode::BAD_GATEWAY, "upstream", message),
            ApiError::Internal(message) => {
                tracing::error!(%message, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        };
        let mut response = error_response(status, code, message);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError::Internal(format!("store: {error}"))
    }
}

// ---------------------------------------------------------------------------------------
// Planning: on the blocking pool, a few at a time, instances of a bounded size.
// ---------------------------------------------------------------------------------------

/// The defaults of `[http] max-concurrent-plans` and `max-plan-size`.
pub const DEFAULT_MAX_CONCURRENT_PLANS: usize = 2;
pub const DEFAULT_MAX_PLAN_SIZE: usize = 20_000;
/// How long a plan request waits for a free planner before it is answered 429.
const PLAN_QUEUE_WAIT: Duration = Duration::from_millis(500);
/// What a 429 tells the client to wait.
const PLAN_RETRY_AFTER_SECS: u64 = 2;

/// Runs the planner, which is CPU-bound for seconds on a large instance: on the async
/// workers two concurrent plans once froze `/healthz` for 3.6 s. Plans run on the blocking
/// pool, at most `max_concurrent` at once (the controllers' passes included); a request
/// beyond that waits [`PLAN_QUEUE_WAIT`], then gets a 429 with `Retry-After`.
pub struct Planner {
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    /// The largest what-if instance, in workloads × clusters.
    pub max_size: usize,
}

impl Default for Planner {
    fn default() -> Self {
        Planner::new(DEFAULT_MAX_CONCURRENT_PLANS, DEFAULT_MAX_PLAN_SIZE)
    }
}

impl Planner {
    pub fn new(max_concurrent: usize, max_size: usize) -> Planner {
        Planner {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_size,
        }
    }

    /// Runs `work` for a request: 429 if the planners stay busy for [`PLAN_QUEUE_WAIT`].
    pub async fn for_request<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = match tokio::time::timeout(
            PLAN_QUEUE_WAIT,
            Arc::clone(&self.permits).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => permit,
            // Timed out; or closed, which this code never does.
            _ => {
                return Err(ApiError::Busy {
                    message: format!(
                        "the broker is already computing {} plans, as many as it runs at once; try again in {PLAN_RETRY_AFTER_SECS} s",
                        self.max_concurrent
                    ),
                    retry_after: PLAN_RETRY_AFTER_SECS,
                });
            }
        };
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|error| ApiError::Internal(format!("the planner stopped: {error}")))
    }

    /// Runs `work` for the controllers: they wait for their turn, however long.
    pub async fn in_turn<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let permit = Arc::clone(&self.permits).acquire_owned().await;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------
// Authorization, from the headers, before any body is read.
// ---------------------------------------------------------------------------------------

/// The role a route needs. Reads are for viewers (the audit log for admins), a what-if
/// plan too; migrations for operators; everything else changes the federation's
/// configuration and is for admins, including any route added without a line here.
fn required_role(method: &Method, route: &str) -> Role {
    match (method.as_str(), route) {
        ("GET", "/api/v1/audit") => Role::Admin,
        ("GET", _) | ("POST", "/api/v1/plan") => Role::Viewer,
        (
            "POST",
            "/api/v1/migrations" | "/api/v1/migrations/{id}/cancel" | "/api/v1/controllers/clear",
        ) => Role::Operator,
        _ => Role::Admin,
    }
}

/// The caller, as [`authenticate`] verified it.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Absent only on a route outside the authorization layer, a programming error that
        // must fail closed.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| ApiError::Internal("this route has no authorization".to_owned()))
    }
}

fn client_of(request: &Request) -> Option<String> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(client)| client.to_string())
}

/// Verifies the bearer token and the route's role from the headers, then runs the handler;
/// audits what it refuses (and what the handler refuses: a 403, a rejected body).
async fn authenticate(State(state): State<Shared>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let what = format!("{} {}", request.method(), request.uri().path());
    let client = client_of(&request);
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let principal = match state.verifier.verify(header) {
        Ok(principal) => principal,
        Err(error) => {
            state
                .unauthenticated
                .deny(&state.store, &what, client.as_deref(), error.code());
            return ApiError::Unauthorized(error).into_response();
        }
    };
    let role = required_role(request.method(), &route);
    if !principal.has(role) {
        let refusal = ApiError::Forbidden(format!(
            "this needs the {role} role; the token has {}",
            principal.role
        ));
        audit_denied(
            &state,
            &principal.subject,
            &what,
            client.as_deref(),
            "forbidden",
            &refusal.message(),
        );
        return refusal.into_response();
    }
    let subject = principal.subject.clone();
    let mutates = request.method() != Method::GET;
    request.extensions_mut().insert(principal);
    let response = next.run(request).await;
    let status = response.status();
    if status == StatusCode::FORBIDDEN
        || (mutates
            && matches!(
                status,
                StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE
            ))
    {
        let (code, message) = response
            .extensions()
            .get::<Refusal>()
            .map_or(("refused", String::new()), |r| (r.code, r.message.clone()));
        audit_denied(&state, &subject, &what, client.as_deref(), code, &message);
    }
    response
}

fn audit_denied(
    state: &AppState,
    who: &str,
    what: &str,
    client: Option<&str>,
    code: &str,
    why: &str,
) {
    let _ = audit::record(
        &state.store,
        who,
        audit::REQUEST,
        what,
        client,
        &format!("denied: {code}: {why}"),
    );
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

/// Refuses a namespace-scoped token what concerns the whole federation (`what`).
fn federation_wide(principal: &Principal, what: &str) -> Result<(), ApiError> {
    match &principal.namespaces {
        None => Ok(()),
        Some(namespaces) => Err(ApiError::Forbidden(format!(
            "{what} concerns the whole federation and needs a token without a namespace limit; this one is limited to {}",
            scope_list(namespaces)
        ))),
    }
}

fn scope_list(namespaces: &std::collections::BTreeSet<String>) -> String {
    if namespaces.is_empty() {
        "no namespace".to_owned()
    } else {
        namespaces.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

// ---------------------------------------------------------------------------------------
// Errors the framework and hyper would answer in their own shapes.
// ---------------------------------------------------------------------------------------

/// Refuses over-long targets (414) and heads (431) in the API's shape, and puts the
/// answers axum and tower-http give in their own shape (413 body too large, 408 timeout)
/// into it.
async fn api_shaped_errors(request: Request, next: Next) -> Response {
    let target_len = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if target_len > MAX_URI_LEN {
        return error_response(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is {target_len} bytes, longer than the limit of {MAX_URI_LEN}"
            ),
        );
    }
    let head_len: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if head_len > MAX_HEADERS_LEN {
        return error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request headers take {head_len} bytes, more than the limit of {MAX_HEADERS_LEN}"
            ),
        );
    }
    let response = next.run(request).await;
    let status = response.status();
    if response.extensions().get::<Refusal>().is_some() || !status.is_client_error() {
        return response;
    }
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => error_response(
            status,
            "body_too_large",
            format!("the request body is larger than the limit of {BODY_LIMIT} bytes (1 MiB)"),
        ),
        StatusCode::REQUEST_TIMEOUT => error_response(
            status,
            "timeout",
            format!(
                "the request took longer than {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
        ),
        StatusCode::BAD_REQUEST => error_response(
            status,
            "bad_request",
            "the request could not be read".to_owned(),
        ),
        _ => response,
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
        .route("/api/v1/controllers/clear", post(clear_controller_failures))
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
        ))
        // Streams stay open for as long as the client watches: no request timeout.
        .route("/api/v1/events", get(events))
        // After routing (the route's role is known), before any handler reads a body.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(super::metrics::readyz))
        .route("/metrics", get(metrics))
        .route("/", get(super::dashboard::index))
        .route("/assets/{file}", get(super::dashboard::asset))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .method_not_allowed_fallback(|| async {
            error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method".to_owned(),
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(api_shaped_errors))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::metrics::track,
        ))
        .with_state(state)
}

fn quantities(cpu_millis: u64, memory_bytes: u64) -> Value {
    json!({
        "cpu": Cpu(cpu_millis).to_string(), "memory": Memory(memory_bytes).to_string(),
        "cpuMillis": cpu_millis, "memoryBytes": memory_bytes,
    })
}

async fn clusters(
    State(state): State<Shared>,
    Caller(_principal): Caller,
) -> Result<Json<Value>, ApiError> {
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
                    inventory.health.as_str().to_owned(),
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
    Caller(principal): Caller,
) -> Result<Json<Value>, ApiError> {
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
    Caller(principal): Caller,
) -> Result<Json<Value>, ApiError> {
    let census = state.world.census().await;
    let input = state.world.plan_input(&census);
    let plan = state
        .planner
        .for_request(move || input.plan())
        .await?
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
    Caller(_principal): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let max_size = state.planner.max_size;
    // Parsing a large body is CPU work too: it runs on the blocking pool with the plan.
    let text = state
        .planner
        .for_request(move || what_if_plan(&body, max_size))
        .await??;
    Ok(([(header::CONTENT_TYPE, "application/json")], text).into_response())
}

/// Reads the what-if resources and plans them: the plan as JSON text.
fn what_if_plan(body: &[u8], max_size: usize) -> Result<String, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| {
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
    let size = workloads.len().saturating_mul(clusters.len());
    if size > max_size {
        return Err(ApiError::TooLarge(
            "plan_too_large",
            format!(
                "the what-if has {} workloads on {} clusters ({size} pairs); this broker plans at most {max_size} (workloads × clusters)",
                workloads.len(),
                clusters.len(),
            ),
        ));
    }
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
    crate::plan_output::json(&plan).map_err(|e| ApiError::Internal(e.to_string()))
}

async fn list_policies(
    State(state): State<Shared>,
    Caller(_principal): Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"items": policies::list(&state)?})))
}

async fn get_policy(
    State(state): State<Shared>,
    Caller(_principal): Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    policies::list(&state)?
        .into_iter()
        .find(|p| p["name"] == name.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no policy {name}")))
}

async fn put_policy(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Caller(principal): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let saved = policies::put(&state, &name, &body, &principal).await?;
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
    Caller(principal): Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    policies::delete(&state, &name, &principal)?;
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
    Caller(principal): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
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
        SubmitError::ClaimsExist { .. } => ApiError::Refused("claims_exist", error.to_string()),
        SubmitError::TargetUnreadable { .. } => ApiError::Upstream(error.to_string()),
        SubmitError::Busy { .. } | SubmitError::StaleCopy { .. } => {
            ApiError::Conflict(error.to_string())
        }
        SubmitError::Store(error) => error.into(),
    }
}

async fn list_migrations(
    State(state): State<Shared>,
    Caller(principal): Caller,
) -> Result<Json<Value>, ApiError> {
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

/// `GET /api/v1/migrations/{id}`: the record, with `waitingFor` while a step waits for
/// something (the scheduler's reason while pods are Pending), which the record does not
/// keep.
async fn get_migration(
    State(state): State<Shared>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let migration = visible_migration(&state, &principal, &id)?;
    migration_body(&state, &migration).map(Json)
}

/// A migration as `GET /api/v1/migrations/{id}` shows it.
pub fn migration_body(state: &AppState, migration: &Migration) -> Result<Value, ApiError> {
    let waiting_for = state.engine.waiting_for(&migration.id);
    let mut body = serde_json::to_value(migration)
        .map_err(|e| ApiError::Internal(format!("migration {}: {e}", migration.id)))?;
    if let (Some(waiting_for), Some(fields)) = (waiting_for, body.as_object_mut()) {
        fields.insert("waitingFor".to_owned(), Value::String(waiting_for));
    }
    Ok(body)
}

async fn cancel_migration(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Caller(principal): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
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
    Caller(principal): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    // Records name workloads, clusters and subjects of every namespace.
    federation_wide(&principal, "the audit log")?;
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
    Caller(principal): Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_param(query.as_deref())?;
    let mut points = history::points(&state, limit)?;
    if principal.namespaces.is_some() {
        // The per-cluster totals are the federation's; which migration a point follows
        // is shown only when the token may see that migration.
        for point in &mut points {
            if let Some(id) = &point.migration
                && visible_migration(&state, &principal, id).is_err()
            {
                point.migration = None;
            }
        }
    }
    let items: Vec<Value> = points.iter().map(history::dto).collect();
    Ok(Json(json!({"items": items})))
}

async fn events(
    State(state): State<Shared>,
    Caller(principal): Caller,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let mut receiver = state.events.subscribe();
    let stream = async_stream(move |mut yield_event| async move {
        yield_event(SseEvent::default().event("hello").data("{}")).await;
        loop {
            match receiver.recv().await {
                Ok(event) => {
                    if !event_visible(&principal, event.namespace.as_deref(), &event.kind) {
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

/// Events of federation-level kinds that name no workload: a scoped token sees them.
/// Others without a namespace (`resources.rejected`, whose errors name any file's
/// workloads; kinds added later) only an unscoped token sees.
const FEDERATION_EVENTS: [&str; 9] = [
    "cluster.health",
    "cluster.pricing",
    "cluster.provisioning",
    "controller.capacity",
    "controller.health",
    "controller.mode",
    "cost.sampled",
    "policies.changed",
    "resources.reloaded",
];

fn event_visible(principal: &Principal, namespace: Option<&str>, kind: &str) -> bool {
    match namespace {
        Some(namespace) => principal.sees_namespace(namespace),
        None => principal.namespaces.is_none() || FEDERATION_EVENTS.contains(&kind),
    }
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

async fn openapi(Caller(_principal): Caller) -> Result<Json<Value>, ApiError> {
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
    Caller(principal): Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    federation_wide(&principal, "creating a cluster")?;
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
    Caller(principal): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    federation_wide(&principal, "resizing a cluster")?;
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
    Caller(principal): Caller,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    federation_wide(&principal, "deleting a cluster")?;
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
    Caller(_principal): Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
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
    Caller(_principal): Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"items": super::provisioning::list(&state)?})))
}

/// `GET /api/v1/controllers`: the mode, settings, each member's health phase and the
/// last pass's decisions.
async fn controllers(
    State(state): State<Shared>,
    Caller(principal): Caller,
) -> Result<Json<Value>, ApiError> {
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
    Caller(principal): Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    federation_wide(&principal, "the controllers' mode")?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearRequest {
    workload: String,
    #[serde(default)]
    to: Option<String>,
}

/// `POST /api/v1/controllers/clear` with `{"workload": "ns/name"[, "to": "cluster"]}`
/// (operator): sets aside the failures of the controllers' moves of a workload (to one
/// target, or to any), so that a move held for an operator, or waiting after a failure, is
/// tried again by the next pass. 404 when none of its moves has failed.
async fn clear_controller_failures(
    State(state): State<Shared>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Caller(principal): Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: ClearRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(
            "bad_body",
            format!(
                "expected {{\"workload\": \"namespace/name\", \"to\": \"cluster\" (optional)}}: {e}"
            ),
        )
    })?;
    let key = WorkloadKey::parse(&request.workload).ok_or_else(|| {
        ApiError::BadRequest(
            "bad_workload",
            format!("`{}` is not namespace/name", request.workload),
        )
    })?;
    let none = || {
        ApiError::NotFound(format!(
            "no failed move of {key}{} by the controllers",
            request
                .to
                .as_deref()
                .map(|to| format!(" to {to}"))
                .unwrap_or_default()
        ))
    };
    // Out of scope looks the same as nothing to clear.
    if !principal.sees_namespace(&key.namespace) {
        return Err(none());
    }
    let cleared = state
        .controllers
        .clear(&key.to_string(), request.to.as_deref());
    if cleared.is_empty() {
        return Err(none());
    }
    for to in &cleared {
        audit_ok(
            &state,
            &principal.subject,
            "controllers.clear",
            &format!("{key} -> {to}"),
            client,
        );
    }
    Ok(Json(
        json!({"workload": key.to_string(), "cleared": cleared}),
    ))
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
    Caller(principal): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    federation_wide(&principal, "a cluster's pricing")?;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test reports failure by panicking")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn plans_beyond_the_limit_wait_briefly_then_get_429_with_retry_after() {
        let planner = Planner::new(2, 100);
        // Two plans running (their permits held), as a slow instance would.
        let first = Arc::clone(&planner.permits).acquire_owned().await.unwrap();
        let _second = Arc::clone(&planner.permits).acquire_owned().await.unwrap();
        let began = std::time::Instant::now();
        let refused = planner.for_request(|| 42).await.unwrap_err();
        assert!(began.elapsed() >= PLAN_QUEUE_WAIT, "{:?}", began.elapsed());
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let refusal = response.extensions().get::<Refusal>().unwrap();
        assert_eq!(refusal.code, "busy");
        assert!(refusal.message.contains("2 plans"), "{}", refusal.message);
        // A slot that frees up within the wait is taken.
        let waiting = tokio::spawn(async move { planner.for_request(|| 42).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        assert_eq!(waiting.await.unwrap(), 42);
    }

    #[test]
    fn routes_need_the_role_of_what_they_do() {
        assert_eq!(
            required_role(&Method::GET, "/api/v1/clusters"),
            Role::Viewer
        );
        assert_eq!(required_role(&Method::POST, "/api/v1/plan"), Role::Viewer);
        assert_eq!(required_role(&Method::GET, "/api/v1/audit"), Role::Admin);
        assert_eq!(
            required_role(&Method::POST, "/api/v1/migrations"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/migrations/{id}/cancel"),
            Role::Operator
        );
        assert_eq!(
            required_role(&Method::POST, "/api/v1/controllers/clear"),
            Role::Operator
        );
        for (method, route) in [
            (Method::PUT, "/api/v1/policies/{name}"),
            (Method::DELETE, "/api/v1/policies/{name}"),
            (Method::PUT, "/api/v1/controllers/mode"),
            (Method::POST, "/api/v1/clusters"),
            (Method::POST, "/api/v1/some-new-route"),
        ] {
            assert_eq!(
                required_role(&method, route),
                Role::Admin,
                "{method} {route}"
            );
        }
    }
}
