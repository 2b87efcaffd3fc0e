//! Every failure of the adapter, classified in one place: an OpenStack error answer is
//! parsed from its envelope (Keystone's `{"error":{"code","title","message"}}`, Heat's
//! `{"code","title","explanation","error":{"type","message","traceback"}}`, Magnum's
//! `{"errors":[{"code","title","detail","request_id"}]}`) into an
//! [`ApiError`], and its HTTP status decides the [`Error`] variant, hence whether trying
//! again can help ([`Error::is_transient`]) and what the broker sees
//! ([`Error::to_port_error`]).
//!
//! What reaches a user is the envelope's message, its type and the request id. Heat's
//! `traceback` and unparsed bodies never do: a body that is not an envelope is described by
//! its size and content type only.

use std::fmt;
use std::time::Duration;

use ferry_ports::PortError;
use serde_json::Value;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The longest message kept from an envelope; longer ones are cut (JSON-schema messages of
/// a 400 can run to kilobytes).
const MESSAGE_LIMIT: usize = 600;

/// Said with a 403 when the token came from an application credential (cloud-apis §0.1).
pub(crate) const TRUST_HINT: &str = "Heat and Magnum create a Keystone trust for each stack or \
     cluster, and Keystone refuses trusts to application-credential tokens unless the operator \
     sets [security_compliance] allow_insecure_application_credential_trust_escalation = true \
     (insecure); sign in to Heat and Magnum as a service user with a password";

/// An error answer of an OpenStack API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The catalog's service type: `identity`, `orchestration`, …
    pub service: String,
    /// What was asked: method and path below the endpoint, e.g. `POST /stacks`.
    pub operation: String,
    pub status: u16,
    /// Heat's `error.type` (`StackValidationFailed`, `StackExists`, `EntityNotFound`, …).
    pub kind: Option<String>,
    /// The envelope's message, whitespace collapsed and cut to a readable length.
    pub message: String,
    /// `x-openstack-request-id`: the key to the service's own logs.
    pub request_id: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.operation, self.service, self.status)?;
        if let Some(kind) = &self.kind {
            write!(f, " {kind}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " [request {id}]")?;
        }
        Ok(())
    }
}

impl ApiError {
    /// Parses an error answer. `body` may be anything: an envelope, HTML from a proxy, or
    /// nothing at all.
    pub fn parse(
        service: &str,
        operation: &str,
        status: u16,
        request_id: Option<String>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> ApiError {
        let envelope: Option<Value> = serde_json::from_slice(body).ok();
        let (kind, message) = match &envelope {
            Some(value) => envelope_message(value),
            None => (None, None),
        };
        // Magnum may put it in the envelope only.
        let request_id = request_id.or_else(|| envelope.as_ref().and_then(magnum_request_id));
        let message = message.unwrap_or_else(|| {
            let reason = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            if body.is_empty() {
                reason.to_owned()
            } else {
                format!(
                    "{reason} (a {} body of {} bytes, not shown)",
                    content_type.unwrap_or("untyped"),
                    body.len()
                )
            }
        });
        ApiError {
            service: service.to_owned(),
            operation: operation.to_owned(),
            status,
            kind,
            message,
            request_id,
        }
    }
}

/// `(error.type, message)` of an envelope. The message is the first non-empty of
/// `error.message`, `explanation`, `title`, a top-level `message`, `error.title`.
fn envelope_message(value: &Value) -> (Option<String>, Option<String>) {
    if let Some(errors) = value["errors"].as_array() {
        return magnum_message(errors);
    }
    let error = &value["error"];
    let kind = error["type"].as_str().map(str::to_owned);
    let candidates = [
        &error["message"],
        &value["explanation"],
        &value["title"],
        &value["message"],
        &error["title"],
        // Heat sends a bare string in `error` for a few webob faults.
        error,
    ];
    let message = candidates
        .iter()
        .filter_map(|v| v.as_str())
        .map(clean_message)
        .find(|m| !m.is_empty());
    (kind, message)
}

/// Magnum's `errors`: each error's `detail` (or webob's `message`, or `title`), and the
/// `code` when it says more than Magnum's generic `client` or `server`.
fn magnum_message(errors: &[Value]) -> (Option<String>, Option<String>) {
    let kind = errors
        .iter()
        .filter_map(|e| e["code"].as_str())
        .find(|code| !matches!(*code, "" | "client" | "server"))
        .map(str::to_owned);
    let messages: Vec<String> = errors
        .iter()
        .filter_map(|e| {
            [&e["detail"], &e["message"], &e["title"]]
                .into_iter()
                .filter_map(Value::as_str)
                .map(clean_message)
                .find(|m| !m.is_empty())
        })
        .collect();
    let message = (!messages.is_empty()).then(|| clean_message(&messages.join("; ")));
    (kind, message)
}

fn magnum_request_id(value: &Value) -> Option<String> {
    value["errors"][0]["request_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// Collapses whitespace, drops the `<br />` webob puts into messages, and cuts at
/// [`MESSAGE_LIMIT`] characters.
pub(crate) fn clean_message(text: &str) -> String {
    let text = text.replace("<br />", " ");
    let words: Vec<&str> = text.split_whitespace().collect();
    let joined = words.join(" ");
    if joined.chars().count() > MESSAGE_LIMIT {
        let cut: String = joined.chars().take(MESSAGE_LIMIT).collect();
        format!("{cut}…")
    } else {
        joined
    }
}

/// Why a call to OpenStack failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The credentials or settings are incomplete or malformed; nothing was sent.
    #[error("OpenStack settings ({source_name}): {message}")]
    Config {
        /// The clouds.yaml path and cloud, or "environment".
        source_name: String,
        message: String,
    },
    /// What the caller asked cannot be sent (a stack name Heat would refuse, …).
    #[error("invalid {what}: {message}")]
    InvalidInput { what: String, message: String },
    /// Keystone refused to issue a token: wrong password or secret, unknown user or
    /// project, disabled account. Not retried (an account lockout policy counts failures).
    #[error("Keystone at {auth_url} refused {method} authentication for {who}: {message}{}",
        request_suffix(.request_id))]
    AuthenticationFailed {
        auth_url: String,
        method: &'static str,
        who: String,
        message: String,
        request_id: Option<String>,
    },
    /// The token's catalog has no such service.
    #[error("the service catalog has no {service_type} service; it offers: {}", list(.offered))]
    NoService {
        service_type: String,
        offered: Vec<String>,
    },
    /// The service is there, but not with that interface in that region.
    #[error("the catalog has no {interface} endpoint of {service_type}{}; it has: {}",
        region_suffix(.region), list(.offered))]
    NoEndpoint {
        service_type: String,
        interface: String,
        region: Option<String>,
        /// `interface@region` of every endpoint of the service.
        offered: Vec<String>,
    },
    /// The service has endpoints of that interface in several regions, and none was set.
    #[error("the catalog has {interface} endpoints of {service_type} in several regions ({}); \
        set region_name", .regions.join(", "))]
    AmbiguousRegion {
        service_type: String,
        interface: String,
        regions: Vec<String>,
    },
    /// A 401 from a service even with a freshly issued token.
    #[error("not authorized: {0}")]
    Unauthorized(Box<ApiError>),
    /// A 403; with an application-credential token, `hint` says why Heat refuses it.
    #[error("forbidden: {api}{}", hint_suffix(.hint))]
    Forbidden {
        api: Box<ApiError>,
        hint: Option<&'static str>,
    },
    #[error("not found: {0}")]
    NotFound(Box<ApiError>),
    #[error("conflict: {0}")]
    Conflict(Box<ApiError>),
    /// A 400 (or another 4xx): the request is wrong and will stay wrong.
    #[error("refused: {0}")]
    BadRequest(Box<ApiError>),
    /// A 5xx or a 429: the service may answer later.
    #[error("service unavailable: {0}")]
    Unavailable(Box<ApiError>),
    /// No answer: connection refused or reset, DNS, TLS, or the call's timeout.
    #[error("{operation} ({service}): no answer: {message}")]
    Connection {
        service: String,
        operation: String,
        message: String,
        timed_out: bool,
    },
    /// A success status with a body that does not have the documented shape.
    #[error("{operation} ({service}): unexpected answer: {message}")]
    InvalidResponse {
        service: String,
        operation: String,
        message: String,
    },
    /// A stack output or parameter is missing or not of the type asked for.
    #[error("stack {stack}: {what}: {message}")]
    Value {
        stack: String,
        what: String,
        message: String,
    },
    /// Client credentials for a cluster cannot be made: Magnum shows no API address yet,
    /// its template disables TLS, or no key could be made.
    #[error("no credentials for cluster {cluster}: {message}")]
    Credentials { cluster: String, message: String },
    /// A followed operation did not reach a terminal status before its deadline.
    #[error("{what}: not finished after {} s (last: {last})", .waited.as_secs())]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },
}

fn request_suffix(id: &Option<String>) -> String {
    id.as_ref()
        .map(|id| format!(" [request {id}]"))
        .unwrap_or_default()
}

fn region_suffix(region: &Option<String>) -> String {
    region
        .as_ref()
        .map(|r| format!(" in region {r}"))
        .unwrap_or_default()
}

fn hint_suffix(hint: &Option<&'static str>) -> String {
    hint.map(|h| format!(". {h}")).unwrap_or_default()
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".to_owned()
    } else {
        items.join(", ")
    }
}

impl Error {
    /// The error for a non-success answer of a service. `via_application_credential`:
    /// the token came from an application credential, which explains a Heat 403.
    pub(crate) fn from_status(api: ApiError, via_application_credential: bool) -> Error {
        let api = Box::new(api);
        match api.status {
            401 => Error::Unauthorized(api),
            403 => {
                let trusts = matches!(api.service.as_str(), "orchestration" | "container-infra")
                    || api.message.to_lowercase().contains("trust");
                let hint = (via_application_credential && trusts).then_some(TRUST_HINT);
                Error::Forbidden { api, hint }
            }
            404 => Error::NotFound(api),
            409 => Error::Conflict(api),
            429 | 500..=599 => Error::Unavailable(api),
            _ => Error::BadRequest(api),
        }
    }

    /// Whether the same call may succeed later without any change: a 5xx or 429, no
    /// answer, or a deadline passed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Connection { .. } | Error::Timeout { .. }
        )
    }

    /// The API's error answer, when there was one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Unauthorized(api)
            | Error::Forbidden { api, .. }
            | Error::NotFound(api)
            | Error::Conflict(api)
            | Error::BadRequest(api)
            | Error::Unavailable(api) => Some(api.as_ref()),
            _ => None,
        }
    }

    /// The broker's view, for `cluster` (the name the broker knows the cluster by).
    pub fn to_port_error(&self, cluster: &str) -> PortError {
        let cluster = cluster.to_owned();
        match self {
            Error::NotFound(api) => PortError::NotFound {
                cluster,
                what: api.operation.clone(),
            },
            Error::Conflict(api) => PortError::Conflict {
                cluster,
                reason: api.to_string(),
            },
            Error::Unavailable(_)
            | Error::Connection {
                timed_out: false, ..
            } => PortError::Unreachable {
                cluster,
                reason: self.to_string(),
            },
            Error::Connection {
                timed_out: true, ..
            } => PortError::Timeout {
                cluster,
                seconds: crate::http::CALL_TIMEOUT.as_secs(),
            },
            Error::Timeout { waited, .. } => PortError::Timeout {
                cluster,
                seconds: waited.as_secs(),
            },
            Error::Config { .. }
            | Error::InvalidInput { .. }
            | Error::AuthenticationFailed { .. }
            | Error::NoService { .. }
            | Error::NoEndpoint { .. }
            | Error::AmbiguousRegion { .. }
            | Error::Unauthorized(_)
            | Error::Forbidden { .. }
            | Error::BadRequest(_)
            | Error::InvalidResponse { .. }
            | Error::Value { .. }
            | Error::Credentials { .. } => PortError::Rejected {
                cluster,
                what: self.what(),
                reason: self.to_string(),
            },
        }
    }

    /// What the failed call was about, for [`PortError::Rejected`].
    fn what(&self) -> String {
        match self {
            Error::Config { source_name, .. } => format!("OpenStack settings {source_name}"),
            Error::InvalidInput { what, .. } => what.clone(),
            Error::AuthenticationFailed { .. } => "Keystone authentication".to_owned(),
            Error::NoService { service_type, .. }
            | Error::NoEndpoint { service_type, .. }
            | Error::AmbiguousRegion { service_type, .. } => {
                format!("{service_type} endpoint")
            }
            Error::InvalidResponse { operation, .. } | Error::Connection { operation, .. } => {
                operation.clone()
            }
            Error::Value { stack, what, .. } => format!("{what} of stack {stack}"),
            Error::Credentials { cluster, .. } => format!("credentials of cluster {cluster}"),
            Error::Timeout { what, .. } => what.clone(),
            other => other
                .api()
                .map(|api| api.operation.clone())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(text: &str) -> (u16, Option<String>, Vec<u8>) {
        let recorded: Value = serde_json::from_str(text).expect("fixtures are JSON");
        let status = u16::try_from(recorded["status"].as_u64().expect("a status")).expect("u16");
        let headers = &recorded["headers"];
        let request_id = headers["X-Openstack-Request-Id"]
            .as_str()
            .or(headers["x-openstack-request-id"].as_str())
            .map(str::to_owned);
        let body = serde_json::to_vec(&recorded["body"]).expect("serialisable");
        (status, request_id, body)
    }

    /// Every recorded error answer: its variant, kind and message, and no traceback.
    #[test]
    fn recorded_error_envelopes_are_classified_without_their_traceback() {
        /// (fixture, operation, service, kind, message, expected variant)
        type Case = (
            &'static str,
            &'static str,
            &'static str,
            Option<&'static str>,
            &'static str,
            fn(&Error) -> bool,
        );
        let cases: [Case; 4] = [
            (
                include_str!("../testdata/fixtures/heat/error-409-stack-exists.json"),
                "POST /stacks",
                "orchestration",
                Some("StackExists"),
                "The Stack (k8s-none) already exists.",
                |e| matches!(e, Error::Conflict(_)),
            ),
            (
                include_str!("../testdata/fixtures/heat/error-404-entity-not-found.json"),
                "GET /stacks/nope",
                "orchestration",
                Some("EntityNotFound"),
                "The Stack (nope) could not be found.",
                |e| matches!(e, Error::NotFound(_)),
            ),
            (
                include_str!("../testdata/fixtures/heat/error-401-no-token.json"),
                "GET /stacks",
                "orchestration",
                None,
                "The request you have made requires authentication.",
                |e| matches!(e, Error::Unauthorized(_)),
            ),
            (
                include_str!(
                    "../testdata/fixtures/heat/validate-error-resource-type-unavailable.json"
                ),
                "POST /validate",
                "orchestration",
                Some("ResourceTypeUnavailable"),
                "HEAT-E99001 Service neutron is not available for resource type \
                 OS::Neutron::Net, reason: neutron network endpoint is not in service catalog.",
                |e| matches!(e, Error::BadRequest(_)),
            ),
        ];
        for (text, operation, service, kind, message, variant) in cases {
            let (status, request_id, body) = fixture(text);
            let api = ApiError::parse(
                service,
                operation,
                status,
                request_id.clone(),
                Some("application/json"),
                &body,
            );
            assert_eq!(api.kind.as_deref(), kind, "{operation}");
            assert_eq!(api.message, message, "{operation}");
            assert!(
                request_id.is_some(),
                "{operation}: the fixture has a request id"
            );
            let error = Error::from_status(api, false);
            assert!(variant(&error), "{operation}: {error:?}");
            let shown = error.to_string();
            assert!(shown.contains(message), "{shown}");
            assert!(shown.contains(&request_id.unwrap_or_default()), "{shown}");
            for leak in ["Traceback", "dist-packages", "File \""] {
                assert!(!shown.contains(leak), "{operation} shows {leak}: {shown}");
            }
            assert!(!error.is_transient(), "{operation}");
        }
    }

    /// Shapes with no recording, from cloud-apis §1, §2 and §10: Keystone's envelope, a 403,
    /// 5xx and 429, a proxy's HTML page, an empty body, a huge message.
    #[test]
    fn other_answers_are_classified_by_status() {
        let keystone_401 = br#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#;
        let heat_403 = br#"{"code":403,"title":"Forbidden","explanation":"Access was denied to this resource.","error":{"type":"Forbidden","message":"Delegated tokens cannot manage trusts.","traceback":"Traceback (most recent call last): ..."}}"#;
        let html = b"<html><body><h1>502 Bad Gateway</h1></body></html>";
        let long = format!(
            r#"{{"error":{{"code":400,"title":"Bad Request","message":"{}"}}}}"#,
            "x ".repeat(2000)
        );
        /// (status, body, content type, message, transient)
        type Case<'a> = (u16, &'a [u8], Option<&'a str>, &'a str, bool);
        let cases: Vec<Case> = vec![
            (
                401,
                keystone_401,
                Some("application/json"),
                "The request you have made requires authentication.",
                false,
            ),
            (
                403,
                heat_403,
                Some("application/json"),
                "Delegated tokens cannot manage trusts.",
                false,
            ),
            (
                502,
                html,
                Some("text/html"),
                "Bad Gateway (a text/html body of 50 bytes, not shown)",
                true,
            ),
            (503, b"", None, "Service Unavailable", true),
            (429, b"", None, "Too Many Requests", true),
        ];
        for (status, body, content_type, message, transient) in cases {
            let api = ApiError::parse(
                "orchestration",
                "GET /stacks",
                status,
                None,
                content_type,
                body,
            );
            assert_eq!(api.message, message, "{status}");
            let error = Error::from_status(api, false);
            assert_eq!(error.is_transient(), transient, "{status}");
            assert!(!error.to_string().contains("<h1>"), "{error}");
            assert!(!error.to_string().contains("Traceback"), "{error}");
        }
        let api = ApiError::parse(
            "identity",
            "POST /auth/tokens",
            400,
            None,
            None,
            long.as_bytes(),
        );
        assert_eq!(
            api.message.chars().count(),
            MESSAGE_LIMIT + 1,
            "cut, with an ellipsis"
        );
    }

    #[test]
    fn a_heat_403_explains_trusts_only_for_application_credential_tokens() {
        let body = br#"{"code":403,"title":"Forbidden","error":{"type":"Forbidden","message":"Delegated tokens cannot manage trusts."}}"#;
        let parse = || ApiError::parse("orchestration", "POST /stacks", 403, None, None, body);
        let with = Error::from_status(parse(), true).to_string();
        assert!(
            with.contains("allow_insecure_application_credential_trust_escalation"),
            "{with}"
        );
        assert!(with.contains("password"), "{with}");
        let without = Error::from_status(parse(), false).to_string();
        assert!(!without.contains("trust escalation"), "{without}");
        assert!(!without.contains("allow_insecure"), "{without}");
        // A 403 of another service with an application credential is not about trusts.
        let other = ApiError::parse(
            "network",
            "POST /ports",
            403,
            None,
            None,
            br#"{"error":{"message":"policy"}}"#,
        );
        assert!(
            !Error::from_status(other, true)
                .to_string()
                .contains("allow_insecure")
        );
    }

    #[test]
    fn port_errors_keep_transience_and_meaning() {
        let api = |status| ApiError {
            service: "orchestration".into(),
            operation: "GET /stacks/k8s".into(),
            status,
            kind: None,
            message: "m".into(),
            request_id: Some("req-1".into()),
        };
        type Expected = fn(&PortError) -> bool;
        let cases: Vec<(Error, Expected)> = vec![
            (Error::from_status(api(404), false), |p| {
                matches!(p, PortError::NotFound { .. })
            }),
            (Error::from_status(api(409), false), |p| {
                matches!(p, PortError::Conflict { .. })
            }),
            (Error::from_status(api(503), false), |p| {
                matches!(p, PortError::Unreachable { .. })
            }),
            (Error::from_status(api(400), false), |p| {
                matches!(p, PortError::Rejected { .. })
            }),
            (Error::from_status(api(403), true), |p| {
                matches!(p, PortError::Rejected { .. })
            }),
            (
                Error::Connection {
                    service: "identity".into(),
                    operation: "POST /auth/tokens".into(),
                    message: "connection refused".into(),
                    timed_out: false,
                },
                |p| matches!(p, PortError::Unreachable { .. }),
            ),
            (
                Error::Timeout {
                    what: "stack k8s/1 CREATE".into(),
                    waited: Duration::from_secs(600),
                    last: "CREATE_IN_PROGRESS".into(),
                },
                |p| matches!(p, PortError::Timeout { seconds: 600, .. }),
            ),
            (
                Error::AuthenticationFailed {
                    auth_url: "http://k/v3".into(),
                    method: "password",
                    who: "user admin".into(),
                    message: "no".into(),
                    request_id: None,
                },
                |p| matches!(p, PortError::Rejected { .. }),
            ),
        ];
        for (error, expected) in cases {
            let port = error.to_port_error("onprem");
            assert!(expected(&port), "{error:?} → {port:?}");
            assert_eq!(port.is_transient(), error.is_transient(), "{error:?}");
        }
    }
}
