//! A Google for the tests, which cannot call the real one: the OAuth2 token endpoint
//! (JWT-bearer flow), GKE's `container` v1 API and the Cloud Billing Catalog, as
//! cloud-apis §6–8 and the discovery documents in `shared/data/gcp/` describe them, over
//! state kept in memory; and a TokenReview webhook through which the harness's
//! kube-apiservers accept the access tokens it issues, as a GKE control plane accepts
//! Google's (see [`crate::ClusterSpec::with_token_webhook`]).
//!
//! What it answers like Google:
//! - `POST /token` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an
//!   RS256 `assertion`: the signature is verified with the public half of the key named by
//!   `kid` (or, without `kid`, of a key of the account named by `iss`); `iss`, `aud` (this
//!   fake's token URL, the key file's `token_uri`), `iat`/`exp` (at most an hour apart,
//!   `iat` at most 60 s ahead) and a `scope` with `cloud-platform` are checked. The answer
//!   is `{"access_token","expires_in","token_type":"Bearer"}`, or 400 with
//!   `{"error":"invalid_grant","error_description":"Invalid JWT Signature."}` for a bad
//!   signature or an unknown or revoked key (Google says no more than that either);
//! - GKE under `/container/v1/projects/{p}/locations/{l}/`: `clusters` (list; location `-`
//!   lists every location; `missingZones` when armed), `clusters/{c}`,
//!   `clusters/{c}/nodePools[/{np}]`, `nodePools/{np}:setSize` (an `Operation`),
//!   `operations[/{op}]`;
//! - the Catalog under `/billing/v1/`: `services` and
//!   `services/{id}/skus?currencyCode&pageSize&pageToken`, paged with an opaque
//!   `nextPageToken` that is empty on the last page;
//! - every GKE and Catalog request needs `Authorization: Bearer` with a token this fake
//!   issued and that has not expired, else 401 with a google.rpc.Status;
//! - errors are google.rpc.Status envelopes, `{"error":{"code","message","status"}}`; a
//!   second change to a cluster while an operation runs is 400 `FAILED_PRECONDITION`; a
//!   body field or query parameter the method does not have is 400 `INVALID_ARGUMENT`, as
//!   Google's "Invalid JSON payload received. Unknown name" is.
//!
//! Every request to the GKE and Catalog paths is checked against the discovery documents
//! (the method by `httpMethod` and `flatPath`, its query parameters, the request body
//! against the request schema), and so is every 2xx answer against the response schema;
//! what does not fit is kept and returned by [`FakeGoogle::violations`], which a test
//! asserts empty. [`Discovery`] offers the same checks for recorded fixtures.
//!
//! Where it differs, deliberately:
//! - One host for the three APIs: `{url}/token`, `{url}/container/` (for
//!   `https://container.googleapis.com/`) and `{url}/billing/` (for
//!   `https://cloudbilling.googleapis.com/`): a client under test takes its base URLs.
//! - A cluster's `endpoint` is the `127.0.0.1:<port>` of a harness kube-apiserver, not a
//!   bare IP: clients use `https://{endpoint}` as for GKE.
//! - Operations advance by polls of `operations.get`, not by time: `setSize` answers
//!   `PENDING`, the first two polls show `RUNNING`, the third `DONE`, and the pool's size
//!   changes (or the armed failure shows as `error`) with that third poll.
//! - `setSize`'s `nodeCount` is per zone (each zone's group gets that many nodes), as in
//!   GKE; the sizes are kept per zone and readable with [`FakeGoogle::pool_sizes`].
//! - No IAM: any valid token may read and change any project. Revoking a key does not
//!   revoke the tokens issued with it (as deleting a key in Google does not).
//! - Prices are served in the currency they were registered in; `currencyCode` is checked
//!   against the discovery document only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{any, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::rand_core::{OsRng, RngCore};
use rsa::traits::PublicKeyParts;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

/// The grant type of the JWT-bearer flow.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The scope GKE and the Catalog need.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The Catalog's service id of Compute Engine (node vCPU and RAM).
pub const COMPUTE_ENGINE: &str = "6F81-5844-456A";
/// The Catalog's service id of Kubernetes Engine (management fee, Autopilot).
pub const KUBERNETES_ENGINE: &str = "CCD8-9BF1-090E";
/// Google's default `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);
/// How far ahead an assertion's `iat` may be (Google tolerates this much clock skew).
const CLOCK_SKEW: i64 = 60;
/// `operations.get` polls until an operation is `DONE`.
const POLLS_TO_DONE: u32 = 3;
const MAX_PAGE_SIZE: usize = 5000;
const GKE_VERSION: &str = "1.36.1-gke.1200000";
/// `effectiveTime` of every price.
const PRICE_TIME: &str = "2026-09-22T07:00:00Z";
/// google.rpc.Code of the error an armed `setSize` failure ends with (`RESOURCE_EXHAUSTED`,
/// what a zone without capacity gives).
const FAILED_SET_SIZE_CODE: i64 = 8;

// ---------------------------------------------------------------------------------------
// Discovery documents
// ---------------------------------------------------------------------------------------

/// The folder of the discovery documents: `testenv/data/gcp/`, unmodified copies of the
/// project's shared `data/gcp/` (see its README), kept in the repository so that a clean
/// clone tests on its own.
pub fn discovery_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/gcp"))
}

/// One API's discovery document, and where this fake serves it.
struct Api {
    /// `container` or `cloudbilling`: the prefix of its method ids.
    name: String,
    /// The path this fake serves it under, e.g. `/container/`.
    mount: &'static str,
    doc: Value,
    methods: Vec<MethodDoc>,
}

struct MethodDoc {
    id: String,
    http_method: String,
    /// `flatPath`'s segments, e.g. `v1`, `projects`, `{projectsId}`, `{nodePoolsId}:setSize`.
    segments: Vec<String>,
    parameters: Map<String, Value>,
    request: Option<String>,
    response: Option<String>,
}

/// The method a request calls, with the values of its path placeholders in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub id: String,
    pub params: Vec<String>,
}

/// Which way a body goes: what Google accepts differs a little from what it writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// The discovery documents of GKE and the Cloud Billing API, and the checks made with them.
/// Discovery schemas are not JSON Schema: `$ref` names a schema, `int64` is a decimal
/// string, `any` is anything, `additionalProperties` describes a map's values.
pub struct Discovery {
    apis: Vec<Api>,
}

impl Discovery {
    /// Reads `container.v1.json` and `cloudbilling.v1.json` from [`discovery_dir`].
    pub fn load() -> Result<Discovery> {
        let mut apis = Vec::new();
        for (file, mount) in [
            ("container.v1.json", "/container/"),
            ("cloudbilling.v1.json", "/billing/"),
        ] {
            let path = discovery_dir().join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("read {}", path.display()))?;
            let doc: Value =
                serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
            let name = doc["name"]
                .as_str()
                .ok_or_else(|| anyhow!("{} has no name", path.display()))?
                .to_owned();
            let mut methods = Vec::new();
            collect_methods(&doc, &mut methods);
            apis.push(Api {
                name,
                mount,
                doc,
                methods,
            });
        }
        Ok(Discovery { apis })
    }

    fn api(&self, method_id: &str) -> Option<&Api> {
        let prefix = method_id.split('.').next()?;
        self.apis.iter().find(|api| api.name == prefix)
    }

    fn method(&self, method_id: &str) -> Option<(&Api, &MethodDoc)> {
        let api = self.api(method_id)?;
        let method = api.methods.iter().find(|m| m.id == method_id)?;
        Some((api, method))
    }

    /// The method `http_method path` calls, `path` as this fake serves it (e.g.
    /// `/container/v1/projects/p/locations/-/clusters`).
    pub fn call_for(&self, http_method: &str, path: &str) -> Option<Call> {
        let (api, rest) = self
            .apis
            .iter()
            .find_map(|api| Some((api, path.strip_prefix(api.mount)?)))?;
        let actual: Vec<&str> = rest.split('/').collect();
        api.methods
            .iter()
            .filter(|m| m.http_method.eq_ignore_ascii_case(http_method))
            .find_map(|m| {
                let params = match_segments(&m.segments, &actual)?;
                Some(Call {
                    id: m.id.clone(),
                    params,
                })
            })
    }

    /// Violations of the method's query parameters: undeclared names and values that do
    /// not parse as the declared type.
    pub fn check_query(&self, method_id: &str, query: &[(String, String)]) -> Vec<String> {
        let Some((api, method)) = self.method(method_id) else {
            return vec![format!("{method_id}: no such method")];
        };
        let mut out = Vec::new();
        for (name, value) in query {
            let declared = method
                .parameters
                .get(name)
                .filter(|p| p["location"] == "query")
                .or_else(|| api.doc["parameters"].get(name));
            let Some(declared) = declared else {
                out.push(format!("{method_id}: unknown query parameter {name}"));
                continue;
            };
            let fits = match declared["type"].as_str() {
                Some("integer") => value.parse::<i64>().is_ok(),
                Some("boolean") => matches!(value.as_str(), "true" | "false"),
                _ => match declared["enum"].as_array() {
                    Some(values) => values.iter().any(|v| v == value.as_str()),
                    None => true,
                },
            };
            if !fits {
                out.push(format!(
                    "{method_id}: query parameter {name}={value:?} is not a {}",
                    declared["type"].as_str().unwrap_or("valid value")
                ));
            }
        }
        out
    }

    /// Violations of a request body against the method's request schema; a body for a
    /// method that takes none is one too.
    pub fn check_request(&self, method_id: &str, body: Option<&Value>) -> Vec<String> {
        let Some((api, method)) = self.method(method_id) else {
            return vec![format!("{method_id}: no such method")];
        };
        let mut out = Vec::new();
        match (&method.request, body) {
            (Some(schema), Some(body)) => check_against(
                api,
                schema,
                body,
                &format!("{method_id} request"),
                Direction::Request,
                &mut out,
            ),
            (Some(schema), None) => {
                out.push(format!("{method_id}: no request body ({schema} expected)"));
            }
            (None, Some(_)) => out.push(format!("{method_id}: takes no request body")),
            (None, None) => {}
        }
        out
    }

    /// Violations of a successful answer against the method's response schema.
    pub fn check_response(&self, method_id: &str, body: &Value) -> Vec<String> {
        let Some((api, method)) = self.method(method_id) else {
            return vec![format!("{method_id}: no such method")];
        };
        let mut out = Vec::new();
        match &method.response {
            Some(schema) => check_against(
                api,
                schema,
                body,
                &format!("{method_id} response"),
                Direction::Response,
                &mut out,
            ),
            None => out.push(format!("{method_id}: has no response body")),
        }
        out
    }

    /// Violations of `value` against schema `schema` of API `api` (`container` or
    /// `cloudbilling`), as Google would write it: e.g. a recorded `Sku`.
    pub fn check_schema(&self, api: &str, schema: &str, value: &Value) -> Vec<String> {
        let Some(api) = self.apis.iter().find(|a| a.name == api) else {
            return vec![format!("no discovery document for API {api}")];
        };
        let mut out = Vec::new();
        check_against(api, schema, value, schema, Direction::Response, &mut out);
        out
    }

    /// A schema of API `api` as the document has it, for tests that assert facts the
    /// adapter relies on.
    pub fn schema(&self, api: &str, schema: &str) -> Option<&Value> {
        self.apis
            .iter()
            .find(|a| a.name == api)?
            .doc
            .get("schemas")?
            .get(schema)
    }
}

fn collect_methods(node: &Value, out: &mut Vec<MethodDoc>) {
    if let Some(methods) = node.get("methods").and_then(Value::as_object) {
        for method in methods.values() {
            let (Some(id), Some(http_method), Some(path)) = (
                method["id"].as_str(),
                method["httpMethod"].as_str(),
                method["flatPath"]
                    .as_str()
                    .or_else(|| method["path"].as_str()),
            ) else {
                continue;
            };
            let reference = |key: &str| method[key]["$ref"].as_str().map(str::to_owned);
            out.push(MethodDoc {
                id: id.to_owned(),
                http_method: http_method.to_owned(),
                segments: path.split('/').map(str::to_owned).collect(),
                parameters: method["parameters"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                request: reference("request"),
                response: reference("response"),
            });
        }
    }
    if let Some(resources) = node.get("resources").and_then(Value::as_object) {
        for resource in resources.values() {
            collect_methods(resource, out);
        }
    }
}

/// The placeholder values if `actual` fits the `flatPath` segments. A placeholder may carry
/// a custom verb (`{nodePoolsId}:setSize`); a bare one never takes a `:`, so that
/// `clusters/{c}` does not swallow `clusters/{c}:setSize`.
fn match_segments(template: &[String], actual: &[&str]) -> Option<Vec<String>> {
    if template.len() != actual.len() {
        return None;
    }
    let mut params = Vec::new();
    for (pattern, value) in template.iter().zip(actual) {
        if let Some(open) = pattern.find('{') {
            let close = pattern.find('}')?;
            let (prefix, suffix) = (&pattern[..open], &pattern[close + 1..]);
            let inner = value.strip_prefix(prefix)?.strip_suffix(suffix)?;
            if inner.is_empty() || (suffix.is_empty() && inner.contains(':')) {
                return None;
            }
            params.push(inner.to_owned());
        } else if pattern != value {
            return None;
        }
    }
    Some(params)
}

fn check_against(
    api: &Api,
    schema: &str,
    value: &Value,
    at: &str,
    direction: Direction,
    out: &mut Vec<String>,
) {
    let reference = json!({ "$ref": schema });
    check_value(api, &reference, value, at, direction, out);
}

/// A recursive walk of `value` along `schema`. Recursion follows the value, which is
/// finite, so self-referring schemas (`OperationProgress.stages`) need no guard.
fn check_value(
    api: &Api,
    schema: &Value,
    value: &Value,
    at: &str,
    direction: Direction,
    out: &mut Vec<String>,
) {
    if let Some(name) = schema["$ref"].as_str() {
        match api.doc["schemas"].get(name) {
            Some(resolved) => check_value(api, resolved, value, at, direction, out),
            None => out.push(format!("{at}: unknown schema {name}")),
        }
        return;
    }
    if value.is_null() {
        // Google's JSON parser takes null as "unset"; its own answers omit unset fields.
        if direction == Direction::Response {
            out.push(format!("{at}: null (Google omits unset fields)"));
        }
        return;
    }
    let kind = schema["type"].as_str().unwrap_or("any");
    let format = schema["format"].as_str();
    match kind {
        "any" => {}
        "object" => {
            let Some(object) = value.as_object() else {
                out.push(format!("{at}: {value} is not an object"));
                return;
            };
            let properties = schema["properties"].as_object();
            let additional = schema.get("additionalProperties");
            for (key, item) in object {
                let at = format!("{at}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(property), _) | (None, Some(property)) => {
                        check_value(api, property, item, &at, direction, out);
                    }
                    (None, None) if properties.is_some() => {
                        out.push(format!("{at}: unknown property"));
                    }
                    // An object with neither is free-form.
                    (None, None) => {}
                }
            }
        }
        "array" => {
            let Some(items) = value.as_array() else {
                out.push(format!("{at}: {value} is not an array"));
                return;
            };
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_value(
                        api,
                        item_schema,
                        item,
                        &format!("{at}[{i}]"),
                        direction,
                        out,
                    );
                }
            }
        }
        "string" => {
            let Some(text) = value.as_str() else {
                let hint = if matches!(format, Some("int64" | "uint64")) {
                    " (int64 is a decimal string in JSON)"
                } else {
                    ""
                };
                out.push(format!("{at}: {value} is not a string{hint}"));
                return;
            };
            let fits = match format {
                Some("int64") => text.parse::<i64>().is_ok(),
                Some("uint64") => text.parse::<u64>().is_ok(),
                Some("byte") => {
                    STANDARD.decode(text).is_ok() || URL_SAFE_NO_PAD.decode(text).is_ok()
                }
                Some("google-datetime") => is_rfc3339(text),
                Some("google-duration") => text
                    .strip_suffix('s')
                    .is_some_and(|n| n.parse::<f64>().is_ok()),
                _ => true,
            };
            if !fits {
                out.push(format!(
                    "{at}: {text:?} is not a valid {}",
                    format.unwrap_or("string")
                ));
            }
            if let Some(values) = schema["enum"].as_array()
                && !values.iter().any(|v| v.as_str() == Some(text))
            {
                out.push(format!("{at}: {text:?} is not one of the enum's values"));
            }
        }
        "integer" => {
            let fits = match format {
                Some("int32") => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                Some("uint32") => value.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
                _ => value.is_i64() || value.is_u64(),
            };
            if !fits {
                out.push(format!(
                    "{at}: {value} is not an {}",
                    format.unwrap_or("integer")
                ));
            }
        }
        "number" => {
            if !value.is_number() {
                out.push(format!("{at}: {value} is not a number"));
            }
        }
        "boolean" => {
            if !value.is_boolean() {
                out.push(format!("{at}: {value} is not a boolean"));
            }
        }
        other => out.push(format!("{at}: the document has an unknown type {other}")),
    }
}

/// `2026-05-04T10:00:00Z`, with optional fractions and an offset instead of `Z`.
fn is_rfc3339(text: &str) -> bool {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    let fixed = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && bytes[10] == b'T'
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19);
    if !fixed {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return false;
        }
        rest = &fraction[end..];
    }
    rest == "Z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':')
}

/// RFC 3339 in UTC, as Google writes times.
fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buffer);
    buffer.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Service accounts and tokens
// ---------------------------------------------------------------------------------------

/// A service account's key, as the test registered it: `key_file` is the JSON key file a
/// client loads (cloud-apis §6).
#[derive(Clone, Debug)]
pub struct ServiceAccount {
    pub email: String,
    pub project: String,
    pub private_key_id: String,
    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). A throwaway key made for the test.
    pub private_key_pem: String,
    pub client_id: String,
    /// This fake's token URL, the assertion's `aud`.
    pub token_uri: String,
    pub key_file: Value,
}

impl ServiceAccount {
    /// The key file's text, as `gcloud iam service-accounts keys create` writes it.
    pub fn key_file_json(&self) -> String {
        // A `Value` always serializes.
        serde_json::to_string_pretty(&self.key_file).unwrap_or_default()
    }
}

struct Key {
    email: String,
    key_id: String,
    client_id: String,
    /// The public half, big-endian modulus and exponent.
    modulus: Vec<u8>,
    exponent: Vec<u8>,
    revoked: bool,
}

struct Issued {
    email: String,
    client_id: String,
    expires: Instant,
}

/// The OAuth2 error answer (400).
struct OAuthError {
    error: &'static str,
    description: String,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    }
}

fn oauth_error(error: &'static str, description: &str) -> OAuthError {
    OAuthError {
        error,
        description: description.to_owned(),
    }
}

fn invalid_grant(description: &str) -> OAuthError {
    oauth_error("invalid_grant", description)
}

const BAD_SIGNATURE: &str = "Invalid JWT Signature.";
const BAD_TIMES: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a \
                         reasonable timeframe. Check your iat and exp values in the JWT claim.";

// ---------------------------------------------------------------------------------------
// GKE and Catalog state
// ---------------------------------------------------------------------------------------

/// A node pool to register with [`FakeGoogle::add_cluster`].
#[derive(Clone, Debug)]
pub struct NodePoolSpec {
    pub name: String,
    /// e.g. `n4-standard-8`.
    pub machine_type: String,
    /// Zone and node count, one per zone the pool spans.
    pub zones: Vec<(String, u32)>,
    /// Per-zone `minNodeCount` and `maxNodeCount`, when autoscaling is on.
    pub autoscaling: Option<(u32, u32)>,
}

impl NodePoolSpec {
    pub fn new(name: &str, machine_type: &str) -> NodePoolSpec {
        NodePoolSpec {
            name: name.to_owned(),
            machine_type: machine_type.to_owned(),
            zones: Vec::new(),
            autoscaling: None,
        }
    }

    pub fn in_zone(mut self, zone: &str, count: u32) -> NodePoolSpec {
        self.zones.push((zone.to_owned(), count));
        self
    }

    pub fn autoscaling(mut self, min: u32, max: u32) -> NodePoolSpec {
        self.autoscaling = Some((min, max));
        self
    }
}

struct FakeCluster {
    project: String,
    location: String,
    name: String,
    id: String,
    endpoint: String,
    ca_pem: String,
    created: String,
    pools: Vec<NodePoolSpec>,
    /// The initial per-zone count of each pool (GKE's `initialNodeCount` keeps it).
    initial: HashMap<String, u32>,
}

struct Operation {
    name: String,
    project: String,
    location: String,
    cluster: String,
    pool: String,
    node_count: u32,
    polls: u32,
    failure: Option<String>,
    start: String,
    end: Option<String>,
}

impl Operation {
    fn done(&self) -> bool {
        self.polls >= POLLS_TO_DONE
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// With the query.
    pub path: String,
    /// The discovery method id, for GKE and Catalog requests that matched one.
    pub method_id: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    keys: Vec<Key>,
    tokens: HashMap<String, Issued>,
    token_lifetime: Option<Duration>,
    clusters: Vec<FakeCluster>,
    operations: Vec<Operation>,
    /// SKUs by service id, in registration order.
    skus: BTreeMap<String, Vec<Value>>,
    missing_zones: Vec<String>,
    fail_next_set_size: Option<String>,
    violations: Vec<String>,
    requests: Vec<Seen>,
}

struct Shared {
    url: String,
    discovery: Discovery,
    inner: Mutex<Inner>,
}

type Fake = Arc<Shared>;

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn token_url(&self) -> String {
        format!("{}/token", self.url)
    }
}

/// A running fake Google; stopped when dropped.
pub struct FakeGoogle {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGoogle {
    /// Starts the fake on a loopback port, with the discovery documents loaded.
    pub async fn start() -> Result<FakeGoogle> {
        let discovery = Discovery::load()?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            url,
            discovery,
            inner: Mutex::new(Inner::default()),
        });
        let router = Router::new()
            .route("/token", post(token))
            .route("/tokenreview", post(token_review))
            .route("/container/{*rest}", any(api))
            .route("/billing/{*rest}", any(api))
            .fallback(|| async {
                rpc_error(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    "The requested URL was not found.",
                )
            })
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakeGoogle { shared, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// The OAuth2 token endpoint (for `https://oauth2.googleapis.com/token`).
    pub fn token_url(&self) -> String {
        self.shared.token_url()
    }

    /// The GKE base URL (for `https://container.googleapis.com/`), ending in `/`.
    pub fn container_url(&self) -> String {
        format!("{}/container/", self.shared.url)
    }

    /// The Cloud Billing base URL (for `https://cloudbilling.googleapis.com/`), ending in `/`.
    pub fn billing_url(&self) -> String {
        format!("{}/billing/", self.shared.url)
    }

    /// The TokenReview webhook for [`crate::ClusterSpec::with_token_webhook`].
    pub fn token_review_url(&self) -> String {
        format!("{}/tokenreview", self.shared.url)
    }

    /// The discovery documents the fake checks with.
    pub fn discovery(&self) -> &Discovery {
        &self.shared.discovery
    }

    /// Makes a service account with a new 2048-bit RSA key (a few hundred milliseconds of
    /// CPU). Calling it again for the same e-mail adds a second key, as a rotation does.
    pub fn add_service_account(&self, email: &str, project: &str) -> Result<ServiceAccount> {
        let private = rsa::RsaPrivateKey::new(&mut OsRng, 2048).context("generate an RSA key")?;
        let pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .context("encode the RSA key as PKCS#8")?
            .to_string();
        let key_id = random_hex(20);
        let mut inner = self.shared.lock();
        // Google's client ids are 21 decimal digits; one per account, kept across keys.
        let client_id = match inner.keys.iter().find(|k| k.email == email) {
            Some(key) => key.client_id.clone(),
            None => {
                let mut bytes = [0u8; 8];
                OsRng.fill_bytes(&mut bytes);
                format!("1{:020}", u64::from_le_bytes(bytes))
            }
        };
        inner.keys.push(Key {
            email: email.to_owned(),
            key_id: key_id.clone(),
            client_id: client_id.clone(),
            modulus: private.n().to_bytes_be(),
            exponent: private.e().to_bytes_be(),
            revoked: false,
        });
        let token_uri = self.shared.token_url();
        let key_file = json!({
            "type": "service_account",
            "project_id": project,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": client_id,
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                email.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com",
        });
        Ok(ServiceAccount {
            email: email.to_owned(),
            project: project.to_owned(),
            private_key_id: key_id,
            private_key_pem: pem,
            client_id,
            token_uri,
            key_file,
        })
    }

    /// Revokes every key of the account: assertions signed with them are refused from now
    /// on. Tokens already issued stay valid until they expire.
    pub fn revoke(&self, email: &str) {
        for key in self.shared.lock().keys.iter_mut() {
            if key.email == email {
                key.revoked = true;
            }
        }
    }

    /// The `expires_in` of tokens issued from now on (Google's is 3599 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = Some(lifetime);
    }

    /// Makes every token issued so far expire now.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for issued in self.shared.lock().tokens.values_mut() {
            issued.expires = now;
        }
    }

    /// Registers a GKE cluster whose Kubernetes API is `endpoint` (`127.0.0.1:<port>` of a
    /// harness cluster) with the CA `ca_pem`.
    pub fn add_cluster(
        &self,
        project: &str,
        location: &str,
        name: &str,
        endpoint: &str,
        ca_pem: &str,
        node_pools: Vec<NodePoolSpec>,
    ) {
        let initial = node_pools
            .iter()
            .map(|p| (p.name.clone(), p.zones.first().map_or(0, |z| z.1)))
            .collect();
        self.shared.lock().clusters.push(FakeCluster {
            project: project.to_owned(),
            location: location.to_owned(),
            name: name.to_owned(),
            id: random_hex(32),
            endpoint: endpoint.to_owned(),
            ca_pem: ca_pem.to_owned(),
            created: rfc3339(SystemTime::now()),
            pools: node_pools,
            initial,
        });
    }

    /// The node count per zone of a pool, as its instance groups have it now.
    pub fn pool_sizes(
        &self,
        project: &str,
        location: &str,
        cluster: &str,
        pool: &str,
    ) -> Option<Vec<(String, u32)>> {
        let inner = self.shared.lock();
        let cluster = inner
            .clusters
            .iter()
            .find(|c| c.project == project && c.location == location && c.name == cluster)?;
        let pool = cluster.pools.iter().find(|p| p.name == pool)?;
        Some(pool.zones.clone())
    }

    /// The next `setSize` ends `DONE` with `error` {code 8, `message`}, the size unchanged.
    pub fn fail_next_set_size(&self, message: &str) {
        self.shared.lock().fail_next_set_size = Some(message.to_owned());
    }

    /// Zones that list answers name in `missingZones` (empty: none).
    pub fn set_missing_zones(&self, zones: &[&str]) {
        self.shared.lock().missing_zones = zones.iter().map(|z| (*z).to_owned()).collect();
    }

    /// Adds SKUs (e.g. from [`vcpu_sku`] and [`ram_sku`]) to the Catalog of `service_id`.
    pub fn add_skus(&self, service_id: &str, skus: Vec<Value>) {
        self.shared
            .lock()
            .skus
            .entry(service_id.to_owned())
            .or_default()
            .extend(skus);
    }

    /// Every departure from the discovery documents seen so far, in requests and answers.
    pub fn violations(&self) -> Vec<String> {
        self.shared.lock().violations.clone()
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
}

// ---------------------------------------------------------------------------------------
// The token endpoint and the TokenReview webhook
// ---------------------------------------------------------------------------------------

async fn token(
    State(fake): State<Fake>,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let response = match form {
        Ok(Form(form)) => exchange(&fake, &form),
        Err(rejection) => oauth_error("invalid_request", &rejection.body_text()).into_response(),
    };
    let mut inner = fake.lock();
    inner.requests.push(Seen {
        method: "POST".to_owned(),
        path: "/token".to_owned(),
        method_id: None,
        status: response.status().as_u16(),
    });
    response
}

/// The JWT-bearer exchange: an access token for a valid assertion.
fn exchange(fake: &Shared, form: &HashMap<String, String>) -> Response {
    let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
    if grant_type != JWT_BEARER {
        return oauth_error(
            "unsupported_grant_type",
            &format!("Invalid grant_type: {grant_type}"),
        )
        .into_response();
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion")
            .into_response();
    };
    let (email, client_id) = match verify(fake, assertion) {
        Ok(account) => account,
        Err(refusal) => return refusal.into_response(),
    };
    let mut inner = fake.lock();
    let lifetime = inner.token_lifetime.unwrap_or(DEFAULT_TOKEN_LIFETIME);
    let access_token = format!("ya29.fake-{}", random_hex(32));
    inner.tokens.insert(
        access_token.clone(),
        Issued {
            email,
            client_id,
            expires: Instant::now() + lifetime,
        },
    );
    Json(json!({
        "access_token": access_token,
        "expires_in": lifetime.as_secs(),
        "token_type": "Bearer",
    }))
    .into_response()
}

/// The e-mail and client id of the account whose key signed `assertion`, once its
/// signature and claims pass.
fn verify(fake: &Shared, assertion: &str) -> Result<(String, String), OAuthError> {
    let Ok(header) = jsonwebtoken::decode_header(assertion) else {
        return Err(invalid_grant("Invalid JWT: malformed header."));
    };
    if header.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(invalid_grant(BAD_SIGNATURE));
    }
    // Unverified: only to find the key when there is no `kid`; the claims checked below
    // are the verified ones.
    let Some(unverified) = assertion
        .split('.')
        .nth(1)
        .and_then(|claims| URL_SAFE_NO_PAD.decode(claims).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
    else {
        return Err(invalid_grant("Invalid JWT: malformed claims."));
    };
    let candidates: Vec<(String, String, jsonwebtoken::DecodingKey)> = fake
        .lock()
        .keys
        .iter()
        .filter(|k| !k.revoked)
        .filter(|k| match &header.kid {
            Some(kid) => &k.key_id == kid,
            None => unverified["iss"].as_str() == Some(k.email.as_str()),
        })
        .map(|k| {
            let key = jsonwebtoken::DecodingKey::from_rsa_raw_components(&k.modulus, &k.exponent);
            (k.email.clone(), k.client_id.clone(), key)
        })
        .collect();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    // The claims are checked below, with Google's answers.
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let Some((email, client_id, claims)) = candidates.into_iter().find_map(|(email, id, key)| {
        let data = jsonwebtoken::decode::<Value>(assertion, &key, &validation).ok()?;
        Some((email, id, data.claims))
    }) else {
        return Err(invalid_grant(BAD_SIGNATURE));
    };
    if claims["iss"].as_str() != Some(email.as_str()) {
        return Err(invalid_grant(
            "Invalid JWT: iss does not name the key's service account.",
        ));
    }
    let token_url = fake.token_url();
    if claims["aud"].as_str() != Some(token_url.as_str()) {
        return Err(invalid_grant(&format!(
            "Invalid JWT: Failed audience check. The right audience is {token_url}"
        )));
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(invalid_grant(BAD_TIMES));
    };
    let now = unix_now();
    if exp <= iat || exp - iat > 3600 || iat > now + CLOCK_SKEW || exp < now - CLOCK_SKEW {
        return Err(invalid_grant(BAD_TIMES));
    }
    let scopes = claims["scope"].as_str().unwrap_or("");
    if !scopes.split_whitespace().any(|s| s == CLOUD_PLATFORM) {
        return Err(oauth_error(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    Ok((email, client_id))
}

impl Inner {
    /// The service account a token was issued to, if it is valid now.
    fn token_owner(&self, token: &str) -> Option<&Issued> {
        self.tokens
            .get(token)
            .filter(|issued| issued.expires > Instant::now())
    }
}

/// authentication.k8s.io TokenReview, as a kube-apiserver's token webhook sends it: a
/// token this fake issued and that has not expired is the service account's e-mail.
async fn token_review(State(fake): State<Fake>, body: Bytes) -> Response {
    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let api_version = review["apiVersion"]
        .as_str()
        .unwrap_or("authentication.k8s.io/v1")
        .to_owned();
    let token = review["spec"]["token"].as_str().unwrap_or("");
    let mut inner = fake.lock();
    let status = match inner.token_owner(token) {
        Some(issued) => json!({
            "authenticated": true,
            "user": {
                "username": issued.email,
                "uid": issued.client_id,
                "groups": ["system:authenticated"],
            },
        }),
        None => json!({
            "authenticated": false,
            "error": "the token is unknown or has expired",
        }),
    };
    inner.requests.push(Seen {
        method: "POST".to_owned(),
        path: "/tokenreview".to_owned(),
        method_id: None,
        status: 200,
    });
    Json(json!({
        "apiVersion": api_version,
        "kind": "TokenReview",
        "status": status,
    }))
    .into_response()
}

// ---------------------------------------------------------------------------------------
// GKE and the Catalog
// ---------------------------------------------------------------------------------------

/// A google.rpc.Status answer; `code` in it is the HTTP status, `status` the canonical name.
struct RpcError {
    status: StatusCode,
    canonical: &'static str,
    message: String,
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.status.as_u16(), "message": self.message, "status": self.canonical,
        }});
        (self.status, Json(body)).into_response()
    }
}

fn rpc_error(status: StatusCode, canonical: &'static str, message: &str) -> RpcError {
    RpcError {
        status,
        canonical,
        message: message.to_owned(),
    }
}

/// What a handler answers: a body for the response schema, or a google.rpc.Status.
type Answer = Result<Value, RpcError>;

fn not_found(what: &str) -> RpcError {
    rpc_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("Not found: {what}."),
    )
}

fn invalid_argument(message: &str) -> RpcError {
    rpc_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// Every GKE and Catalog request: matched to its discovery method, checked, authenticated,
/// answered, and the answer checked.
async fn api(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let query = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let discovery = &fake.discovery;
    let call = discovery.call_for(method.as_str(), uri.path());
    let parsed: Result<Option<Value>, String> = if body.is_empty() {
        Ok(None)
    } else {
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| e.to_string())
    };
    let mut violations = match &call {
        Some(call) => request_violations(discovery, call, &query, &parsed),
        None => vec![format!(
            "{method} {}: no method of the discovery documents",
            uri.path()
        )],
    };
    let mut inner = fake.lock();
    let authenticated = bearer.is_some_and(|t| inner.token_owner(&t).is_some());
    let response = match (&call, authenticated) {
        (None, _) => rpc_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested URL was not found on this server.",
        )
        .into_response(),
        (Some(_), false) => rpc_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, \
             login cookie or other valid authentication credential. See \
             https://developers.google.com/identity/sign-in/web/devconsole-project.",
        )
        .into_response(),
        (Some(_), true) if !violations.is_empty() => invalid_argument(&format!(
            "Invalid JSON payload received. {}",
            violations.join("; ")
        ))
        .into_response(),
        (Some(call), true) => {
            let body = parsed.ok().flatten().unwrap_or(Value::Null);
            match inner.answer(&fake.url, call, &query, &body) {
                Ok(answer) => {
                    violations.extend(discovery.check_response(&call.id, &answer));
                    Json(answer).into_response()
                }
                Err(refusal) => refusal.into_response(),
            }
        }
    };
    inner.violations.extend(violations);
    inner.requests.push(Seen {
        method: method.to_string(),
        path: path_and_query,
        method_id: call.map(|c| c.id),
        status: response.status().as_u16(),
    });
    response
}

fn request_violations(
    discovery: &Discovery,
    call: &Call,
    query: &[(String, String)],
    body: &Result<Option<Value>, String>,
) -> Vec<String> {
    let mut violations = discovery.check_query(&call.id, query);
    match body {
        Ok(body) => violations.extend(discovery.check_request(&call.id, body.as_ref())),
        Err(error) => violations.push(format!("{}: the body is not JSON: {error}", call.id)),
    }
    violations
}

impl Inner {
    fn answer(
        &mut self,
        base: &str,
        call: &Call,
        query: &[(String, String)],
        body: &Value,
    ) -> Answer {
        let p = |i: usize| call.params.get(i).map(String::as_str).unwrap_or("");
        let id = call
            .id
            .strip_prefix("container.projects.locations.")
            .or_else(|| call.id.strip_prefix("cloudbilling."))
            .unwrap_or(&call.id);
        match id {
            "clusters.list" => Ok(self.list_clusters(base, p(0), p(1))),
            "clusters.get" => {
                let cluster = self.cluster(p(0), p(1), p(2))?;
                Ok(cluster_json(base, cluster))
            }
            "clusters.nodePools.list" => {
                let cluster = self.cluster(p(0), p(1), p(2))?;
                let pools: Vec<Value> = cluster
                    .pools
                    .iter()
                    .map(|pool| pool_json(base, cluster, pool))
                    .collect();
                Ok(json!({ "nodePools": pools }))
            }
            "clusters.nodePools.get" => {
                let cluster = self.cluster(p(0), p(1), p(2))?;
                let pool = cluster
                    .pools
                    .iter()
                    .find(|pool| pool.name == p(3))
                    .ok_or_else(|| not_found(&format!("node pool \"{}\"", p(3))))?;
                Ok(pool_json(base, cluster, pool))
            }
            "clusters.nodePools.setSize" => self.set_size(base, [p(0), p(1), p(2), p(3)], body),
            "operations.get" => self.poll_operation(base, p(0), p(1), p(2)),
            "operations.list" => {
                let operations: Vec<Value> = self
                    .operations
                    .iter()
                    .filter(|op| op.project == p(0) && (p(1) == "-" || op.location == p(1)))
                    .map(|op| operation_json(base, op))
                    .collect();
                let mut answer = json!({ "operations": operations });
                if !self.missing_zones.is_empty() {
                    answer["missingZones"] = json!(self.missing_zones);
                }
                Ok(answer)
            }
            "services.list" => Ok(self.list_services()),
            "services.skus.list" => self.list_skus(p(0), query),
            _ => Err(rpc_error(
                StatusCode::NOT_IMPLEMENTED,
                "UNIMPLEMENTED",
                &format!("{} is not implemented by the fake Google.", call.id),
            )),
        }
    }

    fn cluster(&self, project: &str, location: &str, name: &str) -> Result<&FakeCluster, RpcError> {
        self.clusters
            .iter()
            .find(|c| c.project == project && c.location == location && c.name == name)
            .ok_or_else(|| {
                not_found(&format!(
                    "projects/{project}/locations/{location}/clusters/{name}"
                ))
            })
    }

    fn list_clusters(&self, base: &str, project: &str, location: &str) -> Value {
        let clusters: Vec<Value> = self
            .clusters
            .iter()
            .filter(|c| c.project == project && (location == "-" || c.location == location))
            .map(|c| cluster_json(base, c))
            .collect();
        let mut answer = json!({});
        // Google omits empty lists.
        if !clusters.is_empty() {
            answer["clusters"] = json!(clusters);
        }
        if !self.missing_zones.is_empty() {
            answer["missingZones"] = json!(self.missing_zones);
        }
        answer
    }

    fn set_size(
        &mut self,
        base: &str,
        [project, location, cluster, pool]: [&str; 4],
        body: &Value,
    ) -> Answer {
        let Some(node_count) = body["nodeCount"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
        else {
            return Err(invalid_argument(
                "Invalid value for field 'nodeCount': must be a non-negative integer.",
            ));
        };
        let found = self.cluster(project, location, cluster)?;
        if !found.pools.iter().any(|p| p.name == pool) {
            return Err(not_found(&format!("node pool \"{pool}\"")));
        }
        if let Some(running) = self.operations.iter().find(|op| {
            op.project == project && op.location == location && op.cluster == cluster && !op.done()
        }) {
            return Err(rpc_error(
                StatusCode::BAD_REQUEST,
                "FAILED_PRECONDITION",
                &format!(
                    "Cluster is running incompatible operation {}.",
                    running.name
                ),
            ));
        }
        let now = SystemTime::now();
        let millis = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let operation = Operation {
            name: format!("operation-{millis}-{}", random_hex(4)),
            project: project.to_owned(),
            location: location.to_owned(),
            cluster: cluster.to_owned(),
            pool: pool.to_owned(),
            node_count,
            polls: 0,
            failure: self.fail_next_set_size.take(),
            start: rfc3339(now),
            end: None,
        };
        let answer = operation_json(base, &operation);
        self.operations.push(operation);
        Ok(answer)
    }

    fn poll_operation(&mut self, base: &str, project: &str, location: &str, name: &str) -> Answer {
        let index = self
            .operations
            .iter()
            .position(|op| op.project == project && op.location == location && op.name == name)
            .ok_or_else(|| {
                not_found(&format!(
                    "projects/{project}/locations/{location}/operations/{name}"
                ))
            })?;
        let operation = &mut self.operations[index];
        if !operation.done() {
            operation.polls += 1;
            if operation.done() {
                operation.end = Some(rfc3339(SystemTime::now()));
                if operation.failure.is_none() {
                    let (cluster, pool, count) = (
                        operation.cluster.clone(),
                        operation.pool.clone(),
                        operation.node_count,
                    );
                    if let Some(pool) = self
                        .clusters
                        .iter_mut()
                        .find(|c| {
                            c.project == project && c.location == location && c.name == cluster
                        })
                        .and_then(|c| c.pools.iter_mut().find(|p| p.name == pool))
                    {
                        for zone in &mut pool.zones {
                            zone.1 = count;
                        }
                    }
                }
            }
        }
        Ok(operation_json(base, &self.operations[index]))
    }

    fn list_services(&self) -> Value {
        let services: Vec<Value> = self
            .skus
            .keys()
            .map(|id| {
                let display = match id.as_str() {
                    COMPUTE_ENGINE => "Compute Engine",
                    KUBERNETES_ENGINE => "Kubernetes Engine",
                    other => other,
                };
                json!({
                    "name": format!("services/{id}"),
                    "serviceId": id,
                    "displayName": display,
                    "businessEntityName": "businessEntities/GCP",
                })
            })
            .collect();
        json!({ "services": services, "nextPageToken": "" })
    }

    fn list_skus(&self, service: &str, query: &[(String, String)]) -> Answer {
        let param = |name: &str| {
            query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let skus = self
            .skus
            .get(service)
            .ok_or_else(|| not_found(&format!("services/{service}")))?;
        let page_size = match param("pageSize").map(str::parse::<usize>) {
            None | Some(Ok(0)) => MAX_PAGE_SIZE,
            Some(Ok(n)) => n.min(MAX_PAGE_SIZE),
            Some(Err(_)) => return Err(invalid_argument("Invalid page size.")),
        };
        let start = match param("pageToken").filter(|t| !t.is_empty()) {
            None => 0,
            Some(token) => URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| {
                    let offset = text.strip_prefix(&format!("skus/{service}/"))?;
                    offset.parse::<usize>().ok()
                })
                .filter(|offset| *offset <= skus.len())
                .ok_or_else(|| invalid_argument("Invalid page token."))?,
        };
        let end = (start + page_size).min(skus.len());
        let next = if end < skus.len() {
            URL_SAFE_NO_PAD.encode(format!("skus/{service}/{end}"))
        } else {
            String::new()
        };
        Ok(json!({ "skus": &skus[start..end], "nextPageToken": next }))
    }
}

fn self_link(base: &str, path: &str) -> String {
    format!("{base}/container/v1/{path}")
}

fn cluster_path(cluster: &FakeCluster) -> String {
    format!(
        "projects/{}/locations/{}/clusters/{}",
        cluster.project, cluster.location, cluster.name
    )
}

fn cluster_json(base: &str, cluster: &FakeCluster) -> Value {
    let mut zones: Vec<&str> = Vec::new();
    for pool in &cluster.pools {
        for (zone, _) in &pool.zones {
            if !zones.contains(&zone.as_str()) {
                zones.push(zone);
            }
        }
    }
    let total: u32 = cluster
        .pools
        .iter()
        .flat_map(|p| p.zones.iter().map(|z| z.1))
        .sum();
    let pools: Vec<Value> = cluster
        .pools
        .iter()
        .map(|pool| pool_json(base, cluster, pool))
        .collect();
    json!({
        "name": cluster.name,
        "id": cluster.id,
        "location": cluster.location,
        "locations": zones,
        "status": "RUNNING",
        "endpoint": cluster.endpoint,
        "masterAuth": { "clusterCaCertificate": STANDARD.encode(&cluster.ca_pem) },
        "controlPlaneEndpointsConfig": {
            "ipEndpointsConfig": {
                "enabled": true,
                "enablePublicEndpoint": true,
                "publicEndpoint": cluster.endpoint,
            },
        },
        "initialClusterVersion": GKE_VERSION,
        "currentMasterVersion": GKE_VERSION,
        "currentNodeVersion": GKE_VERSION,
        "currentNodeCount": total,
        "network": "default",
        "subnetwork": "default",
        "clusterIpv4Cidr": "10.4.0.0/14",
        "servicesIpv4Cidr": "34.118.224.0/20",
        "autopilot": { "enabled": false },
        "releaseChannel": { "channel": "REGULAR" },
        "nodePools": pools,
        "selfLink": self_link(base, &cluster_path(cluster)),
        "createTime": cluster.created,
    })
}

fn pool_json(base: &str, cluster: &FakeCluster, pool: &NodePoolSpec) -> Value {
    let zones: Vec<&str> = pool.zones.iter().map(|z| z.0.as_str()).collect();
    let groups: Vec<String> = zones
        .iter()
        .map(|zone| {
            format!(
                "https://www.googleapis.com/compute/v1/projects/{}/zones/{zone}/instanceGroupManagers/gke-{}-{}-grp",
                cluster.project, cluster.name, pool.name
            )
        })
        .collect();
    let mut json = json!({
        "name": pool.name,
        "config": {
            "machineType": pool.machine_type,
            "diskSizeGb": 100,
            "diskType": "pd-balanced",
            "imageType": "COS_CONTAINERD",
            "oauthScopes": [CLOUD_PLATFORM],
            "serviceAccount": "default",
        },
        "initialNodeCount": cluster.initial.get(&pool.name).copied().unwrap_or(0),
        "locations": zones,
        "instanceGroupUrls": groups,
        "status": "RUNNING",
        "version": GKE_VERSION,
        "management": { "autoUpgrade": true, "autoRepair": true },
        "podIpv4CidrSize": 24,
        "selfLink": self_link(base, &format!("{}/nodePools/{}", cluster_path(cluster), pool.name)),
    });
    if let Some((min, max)) = pool.autoscaling {
        json["autoscaling"] = json!({
            "enabled": true,
            "minNodeCount": min,
            "maxNodeCount": max,
            "locationPolicy": "BALANCED",
        });
    }
    json
}

fn operation_json(base: &str, op: &Operation) -> Value {
    let status = match op.polls {
        0 => "PENDING",
        n if n < POLLS_TO_DONE => "RUNNING",
        _ => "DONE",
    };
    let mut json = json!({
        "name": op.name,
        "location": op.location,
        "operationType": "SET_NODE_POOL_SIZE",
        "status": status,
        "selfLink": self_link(base, &format!(
            "projects/{}/locations/{}/operations/{}",
            op.project, op.location, op.name
        )),
        "targetLink": self_link(base, &format!(
            "projects/{}/locations/{}/clusters/{}/nodePools/{}",
            op.project, op.location, op.cluster, op.pool
        )),
        "startTime": op.start,
    });
    if let Some(end) = &op.end {
        json["endTime"] = json!(end);
    }
    if op.done()
        && let Some(message) = &op.failure
    {
        json["error"] = json!({ "code": FAILED_SET_SIZE_CODE, "message": message });
    }
    json
}

// ---------------------------------------------------------------------------------------
// SKUs
// ---------------------------------------------------------------------------------------

/// The display name the Catalog's descriptions use for a region.
pub fn region_display_name(region: &str) -> &str {
    match region {
        "us-central1" => "Iowa",
        "us-east1" => "South Carolina",
        "us-east4" => "Northern Virginia",
        "us-west1" => "Oregon",
        "europe-west1" => "Belgium",
        "europe-west2" => "London",
        "europe-west3" => "Frankfurt",
        "europe-west4" => "Netherlands",
        "europe-north1" => "Finland",
        "asia-east1" => "Taiwan",
        "asia-northeast1" => "Tokyo",
        "asia-southeast1" => "Singapore",
        "australia-southeast1" => "Sydney",
        other => other,
    }
}

/// A Compute Engine SKU for one vCPU-hour of machine family `family` (e.g. `N4A`) in
/// `region`, priced `units` + `nanos`/10⁹ USD; `usage_type` is `OnDemand` or `Preemptible`
/// (described as "Spot Preemptible …", as the Catalog does).
pub fn vcpu_sku(family: &str, region: &str, usage_type: &str, units: i64, nanos: i32) -> Value {
    instance_sku(family, "Core", region, usage_type, units, nanos)
}

/// The RAM SKU (one GiB-hour) to go with [`vcpu_sku`].
pub fn ram_sku(family: &str, region: &str, usage_type: &str, units: i64, nanos: i32) -> Value {
    instance_sku(family, "Ram", region, usage_type, units, nanos)
}

fn instance_sku(
    family: &str,
    resource: &str,
    region: &str,
    usage_type: &str,
    units: i64,
    nanos: i32,
) -> Value {
    let spot = if usage_type == "Preemptible" {
        "Spot Preemptible "
    } else {
        ""
    };
    let description = format!(
        "{spot}{family} Instance {resource} running in {}",
        region_display_name(region)
    );
    // A stable id per description: FNV-1a, shown as Google's `XXXX-XXXX-XXXX`.
    let hash = description.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let hex = format!("{:012X}", hash & 0xffff_ffff_ffff);
    let sku_id = format!("{}-{}-{}", &hex[0..4], &hex[4..8], &hex[8..12]);
    let (group, unit, unit_description, base_unit, base_description, factor) = if resource == "Core"
    {
        ("CPU", "h", "hour", "s", "second", 3600.0)
    } else {
        (
            "RAM",
            "GiBy.h",
            "gibibyte hour",
            "By.s",
            "byte second",
            3_865_470_566_400.0,
        )
    };
    json!({
        "name": format!("services/{COMPUTE_ENGINE}/skus/{sku_id}"),
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": "Compute",
            "resourceGroup": group,
            "usageType": usage_type,
        },
        "serviceRegions": [region],
        "pricingInfo": [{
            "summary": "",
            "pricingExpression": {
                "usageUnit": unit,
                "usageUnitDescription": unit_description,
                "baseUnit": base_unit,
                "baseUnitDescription": base_description,
                "baseUnitConversionFactor": factor,
                "displayQuantity": 1,
                "tieredRates": [{
                    "startUsageAmount": 0,
                    "unitPrice": {
                        "currencyCode": "USD",
                        "units": units.to_string(),
                        "nanos": nanos,
                    },
                }],
            },
            "aggregationInfo": {
                "aggregationLevel": "ACCOUNT",
                "aggregationInterval": "DAILY",
                "aggregationCount": 1,
            },
            "currencyConversionRate": 1,
            "effectiveTime": PRICE_TIME,
        }],
        "serviceProviderName": "Google",
        "geoTaxonomy": { "type": "REGIONAL", "regions": [region] },
    })
}
