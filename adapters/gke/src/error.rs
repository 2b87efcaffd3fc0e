//! Every failure of the adapter, classified in one place.
//!
//! Google answers errors in two envelopes: the APIs (GKE, the Billing Catalog) with a
//! google.rpc.Status, `{"error":{"code":404,"message":"…","status":"NOT_FOUND",
//! "details":[…]}}`, and the OAuth2 token endpoint with `{"error":"invalid_grant",
//! "error_description":"…"}`. Both are parsed by [`ApiError::parse`]; the HTTP status and
//! the canonical status name decide the [`Error`] variant, hence whether trying again can
//! help ([`Error::is_transient`]) and what the broker sees ([`Error::to_port_error`]).
//!
//! What reaches a user is the envelope's message and status name. `details` and bodies
//! that are not an envelope (a proxy's HTML page) never do: the latter are described by
//! their size and content type. No error carries a private key, an assertion or a token.

use std::fmt;
use std::time::Duration;

use ferry_ports::PortError;
use serde_json::Value;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The longest message kept from an envelope; longer ones are cut.
const MESSAGE_LIMIT: usize = 600;

/// An error answer of a Google API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// `oauth2`, `container` or `cloudbilling`.
    pub service: String,
    /// What was asked: method and path, e.g. `GET v1/projects/p/locations/-/clusters`.
    pub operation: String,
    pub status: u16,
    /// The canonical status name (`NOT_FOUND`, `FAILED_PRECONDITION`, …) of a
    /// google.rpc.Status, or the OAuth2 `error` code (`invalid_grant`, …).
    pub reason: Option<String>,
    /// The envelope's message, whitespace collapsed and cut to a readable length.
    pub message: String,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.operation, self.service, self.status)?;
        if let Some(reason) = &self.reason {
            write!(f, " {reason}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ApiError {
    /// Parses an error answer; `body` may be anything.
    pub fn parse(
        service: &str,
        operation: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> ApiError {
        let envelope: Option<Value> = serde_json::from_slice(body).ok();
        let (reason, message) = envelope.as_ref().map(envelope_parts).unwrap_or_default();
        let message = message.unwrap_or_else(|| {
            let canonical = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error");
            if body.is_empty() {
                canonical.to_owned()
            } else {
                format!(
                    "{canonical} (a {} body of {} bytes, not shown)",
                    content_type.unwrap_or("untyped"),
                    body.len()
                )
            }
        });
        ApiError {
            service: service.to_owned(),
            operation: operation.to_owned(),
            status,
            reason,
            message,
        }
    }
}

/// `(reason, message)` of either envelope.
fn envelope_parts(value: &Value) -> (Option<String>, Option<String>) {
    match &value["error"] {
        // OAuth2: {"error":"invalid_grant","error_description":"…"}
        Value::String(code) => (
            Some(code.clone()),
            value["error_description"]
                .as_str()
                .map(clean_message)
                .filter(|m| !m.is_empty()),
        ),
        // google.rpc.Status: {"error":{"code","message","status","details"}}
        Value::Object(status) => (
            status
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_owned),
            status
                .get("message")
                .and_then(Value::as_str)
                .map(clean_message)
                .filter(|m| !m.is_empty()),
        ),
        _ => (None, None),
    }
}

/// Whitespace collapsed, cut at [`MESSAGE_LIMIT`] characters with an ellipsis.
pub(crate) fn clean_message(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= MESSAGE_LIMIT {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(MESSAGE_LIMIT).collect();
    cut.push('…');
    cut
}

/// Why a call of the adapter failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service-account key could not be read or is not a service-account key.
    #[error("service-account key {source_name}: {message}")]
    Credentials {
        source_name: String,
        message: String,
    },
    /// The assertion could not be signed (the private key is not an RSA PKCS#8 key).
    #[error("cannot sign the token request of {client_email}: {message}")]
    Signing {
        client_email: String,
        message: String,
    },
    /// The token endpoint refused the assertion. `invalid_grant` means a deleted or
    /// disabled key or service account, or a badly skewed clock: trying again changes
    /// nothing until someone fixes it.
    #[error(
        "Google refused a token to {client_email} at {token_uri}: {error}: {description}{hint}",
        hint = refusal_hint(error)
    )]
    TokenRefused {
        client_email: String,
        token_uri: String,
        error: String,
        description: String,
    },
    #[error("{0}")]
    Unauthorized(Box<ApiError>),
    #[error("{0}")]
    Forbidden(Box<ApiError>),
    #[error("{0}")]
    NotFound(Box<ApiError>),
    #[error("{0}")]
    Conflict(Box<ApiError>),
    /// GKE's 400 `FAILED_PRECONDITION`: another operation runs on the cluster.
    #[error("{0}")]
    Busy(Box<ApiError>),
    #[error("{0}")]
    BadRequest(Box<ApiError>),
    /// 429 or 5xx.
    #[error("{0}")]
    Unavailable(Box<ApiError>),
    #[error("{operation} ({service}): no answer: {message}")]
    Connection {
        service: String,
        operation: String,
        message: String,
        timed_out: bool,
    },
    #[error("{operation} ({service}): unexpected answer: {message}")]
    InvalidResponse {
        service: String,
        operation: String,
        message: String,
    },
    #[error("{what}: {message}")]
    InvalidInput { what: String, message: String },
    /// A GKE operation ended `DONE` with an `error`.
    #[error("GKE operation {operation} failed (google.rpc.Code {code}): {message}")]
    OperationFailed {
        operation: String,
        code: i32,
        message: String,
    },
    #[error("{what}: not over after {} s (last: {last})", waited.as_secs())]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },
    /// The Billing Catalog has no usable price for a machine family in a region.
    #[error("no Compute Engine price for {family} {usage} in {region}: {message}")]
    NoPrice {
        family: String,
        region: String,
        usage: String,
        message: String,
    },
}

fn refusal_hint(error: &str) -> &'static str {
    if error == "invalid_grant" {
        ". The key or its service account was deleted or disabled, or this machine's clock \
         is off; create a new key or fix the clock (not retried)"
    } else {
        ""
    }
}

impl Error {
    /// The error for a non-success answer of an API.
    pub(crate) fn from_status(api: ApiError) -> Error {
        let api = Box::new(api);
        match api.status {
            401 => Error::Unauthorized(api),
            403 => Error::Forbidden(api),
            404 => Error::NotFound(api),
            409 => Error::Conflict(api),
            400 if api.reason.as_deref() == Some("FAILED_PRECONDITION") => Error::Busy(api),
            429 | 500..=599 => Error::Unavailable(api),
            _ => Error::BadRequest(api),
        }
    }

    /// Whether the same call may succeed later without any change: a 5xx or 429, no
    /// answer, or a deadline passed. A busy cluster ([`Error::Busy`]) is waited out by
    /// the change itself and is not counted here.
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
            | Error::Forbidden(api)
            | Error::NotFound(api)
            | Error::Conflict(api)
            | Error::Busy(api)
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
            Error::Conflict(api) | Error::Busy(api) => PortError::Conflict {
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
            Error::Credentials { .. }
            | Error::Signing { .. }
            | Error::TokenRefused { .. }
            | Error::Unauthorized(_)
            | Error::Forbidden(_)
            | Error::BadRequest(_)
            | Error::InvalidResponse { .. }
            | Error::InvalidInput { .. }
            | Error::OperationFailed { .. }
            | Error::NoPrice { .. } => PortError::Rejected {
                cluster,
                what: self.what(),
                reason: self.to_string(),
            },
        }
    }

    /// What the failed call was about, for [`PortError::Rejected`].
    fn what(&self) -> String {
        match self {
            Error::Credentials { source_name, .. } => format!("service-account key {source_name}"),
            Error::Signing { .. } | Error::TokenRefused { .. } => "Google sign-in".to_owned(),
            Error::InvalidResponse { operation, .. } | Error::Connection { operation, .. } => {
                operation.clone()
            }
            Error::InvalidInput { what, .. } | Error::Timeout { what, .. } => what.clone(),
            Error::OperationFailed { operation, .. } => format!("GKE operation {operation}"),
            Error::NoPrice { family, region, .. } => format!("prices of {family} in {region}"),
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

    /// (status, body, content type, reason, message, transient, variant)
    type Case = (
        u16,
        &'static [u8],
        Option<&'static str>,
        Option<&'static str>,
        &'static str,
        bool,
        fn(&Error) -> bool,
    );

    /// The envelopes of cloud-apis §6, §7 and §10, and what is not an envelope.
    #[test]
    fn answers_are_classified_by_status_and_reason() {
        let cases: [Case; 8] = [
            (
                404,
                br#"{"error":{"code":404,"message":"Not found: projects/p/locations/us-central1/clusters/x.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.rpc.RequestInfo","requestId":"0xabc"}]}}"#,
                Some("application/json"),
                Some("NOT_FOUND"),
                "Not found: projects/p/locations/us-central1/clusters/x.",
                false,
                |e| matches!(e, Error::NotFound(_)),
            ),
            (
                400,
                br#"{"error":{"code":400,"message":"Cluster is running incompatible operation operation-1.","status":"FAILED_PRECONDITION"}}"#,
                Some("application/json"),
                Some("FAILED_PRECONDITION"),
                "Cluster is running incompatible operation operation-1.",
                false,
                |e| matches!(e, Error::Busy(_)),
            ),
            (
                400,
                br#"{"error":{"code":400,"message":"Invalid node count.","status":"INVALID_ARGUMENT"}}"#,
                None,
                Some("INVALID_ARGUMENT"),
                "Invalid node count.",
                false,
                |e| matches!(e, Error::BadRequest(_)),
            ),
            (
                403,
                br#"{"error":{"code":403,"message":"Required 'container.clusters.list' permission.","status":"PERMISSION_DENIED"}}"#,
                None,
                Some("PERMISSION_DENIED"),
                "Required 'container.clusters.list' permission.",
                false,
                |e| matches!(e, Error::Forbidden(_)),
            ),
            (
                400,
                br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
                None,
                Some("invalid_grant"),
                "Invalid JWT Signature.",
                false,
                |e| matches!(e, Error::BadRequest(_)),
            ),
            (
                502,
                b"<html><body><h1>502 Bad Gateway</h1></body></html>",
                Some("text/html"),
                None,
                "Bad Gateway (a text/html body of 50 bytes, not shown)",
                true,
                |e| matches!(e, Error::Unavailable(_)),
            ),
            (
                429,
                br#"{"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED"}}"#,
                None,
                Some("RESOURCE_EXHAUSTED"),
                "Quota exceeded.",
                true,
                |e| matches!(e, Error::Unavailable(_)),
            ),
            (
                503,
                b"",
                None,
                None,
                "Service Unavailable",
                true,
                |e| matches!(e, Error::Unavailable(_)),
            ),
        ];
        for (status, body, content_type, reason, message, transient, variant) in cases {
            let api = ApiError::parse("container", "GET v1/x", status, content_type, body);
            assert_eq!(api.reason.as_deref(), reason, "{status} {message}");
            assert_eq!(api.message, message, "{status}");
            let error = Error::from_status(api);
            assert!(variant(&error), "{error:?}");
            assert_eq!(error.is_transient(), transient, "{error}");
            let shown = error.to_string();
            assert!(
                !shown.contains("<h1>") && !shown.contains("requestId"),
                "{shown}"
            );
            assert_eq!(
                error.to_port_error("gke-a").is_transient(),
                transient,
                "{error}"
            );
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let body = format!(
            r#"{{"error":{{"code":400,"message":"{}","status":"INVALID_ARGUMENT"}}}}"#,
            "x ".repeat(2000)
        );
        let api = ApiError::parse("container", "POST v1/x", 400, None, body.as_bytes());
        assert_eq!(api.message.chars().count(), MESSAGE_LIMIT + 1);
    }

    #[test]
    fn a_refused_grant_says_what_to_do() {
        let error = Error::TokenRefused {
            client_email: "sa@p.iam.gserviceaccount.com".into(),
            token_uri: "https://oauth2.googleapis.com/token".into(),
            error: "invalid_grant".into(),
            description: "Invalid JWT Signature.".into(),
        };
        let shown = error.to_string();
        assert!(shown.contains("not retried"), "{shown}");
        assert!(shown.contains("sa@p.iam.gserviceaccount.com"), "{shown}");
        assert!(!error.is_transient());
        assert!(matches!(
            error.to_port_error("gke-a"),
            PortError::Rejected { .. }
        ));
    }
}
