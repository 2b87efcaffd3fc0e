//! Kubernetes errors in the port's words.

use std::error::Error as _;

use ferry_ports::PortError;

/// One API call, named the way RBAC names it, so that a 403 says what to grant.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub verb: &'static str,
    /// `resource.group` as in `kubectl auth can-i`, e.g. `deployments.apps`.
    pub resource: &'static str,
    /// `namespace/name`, or what the call covers (`all namespaces`).
    pub object: String,
}

impl Call {
    pub fn new(verb: &'static str, resource: &'static str, object: impl Into<String>) -> Call {
        Call {
            verb,
            resource,
            object: object.into(),
        }
    }

    fn what(&self) -> String {
        format!("{} {} {}", self.verb, self.resource, self.object)
    }
}

/// Whether a transport error is a timeout rather than a refused or broken connection.
fn is_timeout(error: &kube::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.source();
    if error.to_string().contains("timed out") {
        return true;
    }
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if cause.to_string().contains("timed out") {
            return true;
        }
        source = cause.source();
    }
    false
}

pub(crate) fn port_error(cluster: &str, call: &Call, error: kube::Error) -> PortError {
    let cluster = cluster.to_owned();
    match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            match status.code {
                404 => PortError::NotFound {
                    cluster,
                    what: format!("{} {}", call.resource, call.object),
                },
                409 => PortError::Conflict {
                    cluster,
                    reason: format!("{}: {message}", call.what()),
                },
                403 => PortError::Rejected {
                    cluster,
                    what: call.what(),
                    reason: format!(
                        "permission missing: the identity may not {} {}; grant verb {:?} on \
                         resource {:?} (see deploy/ferry-clusterrole.yaml). The API server said: {message}",
                        call.verb, call.resource, call.verb, call.resource
                    ),
                },
                401 => PortError::Rejected {
                    cluster,
                    what: call.what(),
                    reason: format!("credentials refused (expired token?): {message}"),
                },
                504 => PortError::Timeout {
                    cluster,
                    seconds: crate::connection::CALL_TIMEOUT.as_secs(),
                },
                429 | 500..=599 => PortError::Unreachable {
                    cluster,
                    reason: format!("{}: {} {message}", call.what(), status.code),
                },
                _ => PortError::Rejected {
                    cluster,
                    what: call.what(),
                    reason: message,
                },
            }
        }
        // The body did not decode, or the request could not be built: retrying the
        // same call would fail the same way.
        error @ (kube::Error::SerdeError(_) | kube::Error::BuildRequest(_)) => {
            PortError::Rejected {
                cluster,
                what: call.what(),
                reason: error.to_string(),
            }
        }
        error if is_timeout(&error) => PortError::Timeout {
            cluster,
            seconds: crate::connection::CALL_TIMEOUT.as_secs(),
        },
        error => PortError::Unreachable {
            cluster,
            reason: format!("{}: {error}", call.what()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, message: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "code": code, "message": message, "reason": "x",
        }))
        .expect("a status");
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn status_codes_map_to_port_errors() {
        let call = Call::new("patch", "deployments.apps", "shop/web");
        type Check = fn(&PortError) -> bool;
        let cases: Vec<(u16, Check)> = vec![
            (404, |e| matches!(e, PortError::NotFound { .. })),
            (409, |e| matches!(e, PortError::Conflict { .. })),
            (403, |e| matches!(e, PortError::Rejected { .. })),
            (422, |e| matches!(e, PortError::Rejected { .. })),
            (400, |e| matches!(e, PortError::Rejected { .. })),
            (503, |e| matches!(e, PortError::Unreachable { .. })),
            (504, |e| matches!(e, PortError::Timeout { .. })),
        ];
        for (code, check) in cases {
            let error = port_error("a", &call, api(code, "boom"));
            assert!(check(&error), "{code}: {error:?}");
        }
        let forbidden = port_error("a", &call, api(403, "cannot patch")).to_string();
        assert!(
            forbidden.contains("patch") && forbidden.contains("deployments.apps"),
            "{forbidden}"
        );
        let conflict = port_error("a", &call, api(409, "conflict with \"kubectl\"")).to_string();
        assert!(conflict.contains("conflict with \"kubectl\""), "{conflict}");
    }
}
