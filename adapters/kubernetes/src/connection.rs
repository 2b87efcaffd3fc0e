//! How the adapter reaches a member's API server: a kubeconfig file and context, or an
//! endpoint with its CA and a bearer token that its issuer replaces before it expires
//! (the GKE adapter's short-lived Google access tokens).
//!
//! Every client has the same timeouts. A refreshable token is read on every request, so
//! a new token takes effect with the next request, also when a watch re-connects: the API
//! server checks a token when a request starts, and an open watch keeps going.

use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ferry_ports::PortError;
use http::{HeaderValue, Request, header::AUTHORIZATION};
use kube::client::{Body, ClientBuilder};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

/// Longest wait for one request (not a watch).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Watches hold a request open for up to [`WATCH_SECONDS`] (their server-side timeout), so
/// the read timeout must be longer, or every idle watch would be cut as if the API were
/// gone. It is also how long a watch on a dead connection can go unnoticed: after an API
/// server restart, a watch sent on a pooled connection to the old process was seen to
/// hang, and the member to look unreachable, until this ran out.
const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(WATCH_SECONDS as u64 + 10);
/// The server ends each watch after this many seconds; the watcher then resumes from the
/// last resourceVersion (one cheap request per watch and period).
pub(crate) const WATCH_SECONDS: u32 = 50;

/// A bearer token that its issuer keeps fresh. `current` is called on every request, so
/// it must be cheap: the issuer refreshes in the background (or on its own schedule) and
/// hands out the token it holds.
pub trait BearerToken: Send + Sync {
    /// The token to send now, or why there is none (e.g. the key was revoked).
    fn current(&self) -> Result<String, String>;
}

/// Where a member's API server is and who Ferry is there.
#[derive(Clone)]
pub enum Credentials {
    /// A kubeconfig file and one of its contexts (its current context when `None`).
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
    /// An API server URL, its CA (PEM, base64-encoded as kubeconfig and GKE carry it),
    /// and a token source.
    Endpoint {
        server: String,
        ca_base64: String,
        token: Arc<dyn BearerToken>,
    },
    /// An API server URL, its CA, and a client certificate with its key (PEM), as
    /// Magnum signs them.
    ClientCertificate {
        server: String,
        ca_base64: String,
        certificate_pem: String,
        key_pem: String,
    },
}

impl std::fmt::Debug for Credentials {
    // Never prints a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Kubeconfig { path, context } => f
                .debug_struct("Kubeconfig")
                .field("path", path)
                .field("context", context)
                .finish(),
            Credentials::Endpoint { server, .. } => f
                .debug_struct("Endpoint")
                .field("server", server)
                .finish_non_exhaustive(),
            Credentials::ClientCertificate { server, .. } => f
                .debug_struct("ClientCertificate")
                .field("server", server)
                .finish_non_exhaustive(),
        }
    }
}

impl Credentials {
    /// What the credentials point at, for error messages.
    fn describe(&self) -> String {
        match self {
            Credentials::Kubeconfig { path, .. } => format!("kubeconfig {}", path.display()),
            Credentials::Endpoint { server, .. }
            | Credentials::ClientCertificate { server, .. } => format!("endpoint {server}"),
        }
    }
}

/// A client for `credentials`. Nothing is read from the environment or an in-cluster
/// service account: a broker that silently used its own pod's identity would act on the
/// wrong cluster.
pub(crate) async fn client(cluster: &str, credentials: &Credentials) -> Result<Client, PortError> {
    let rejected = |reason: String| PortError::Rejected {
        cluster: cluster.to_owned(),
        what: credentials.describe(),
        reason,
    };
    let (kubeconfig, context, token) = match credentials {
        Credentials::Kubeconfig { path, context } => (
            Kubeconfig::read_from(path).map_err(|e| rejected(e.to_string()))?,
            context.clone(),
            None,
        ),
        Credentials::Endpoint {
            server,
            ca_base64,
            token,
        } => {
            // The same document a kubeconfig file would hold, minus the user's secret:
            // the token is added per request by `BearerLayer`.
            let document = json!({
                "clusters": [{"name": cluster, "cluster": {
                    "server": server, "certificate-authority-data": ca_base64,
                }}],
                "users": [{"name": "ferry", "user": {}}],
                "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "ferry"}}],
                "current-context": cluster,
            });
            let kubeconfig: Kubeconfig =
                serde_json::from_value(document).map_err(|e| rejected(e.to_string()))?;
            (kubeconfig, None, Some(Arc::clone(token)))
        }
        Credentials::ClientCertificate {
            server,
            ca_base64,
            certificate_pem,
            key_pem,
        } => {
            let document = json!({
                "clusters": [{"name": cluster, "cluster": {
                    "server": server, "certificate-authority-data": ca_base64,
                }}],
                "users": [{"name": "ferry", "user": {
                    "client-certificate-data": BASE64.encode(certificate_pem),
                    "client-key-data": BASE64.encode(key_pem),
                }}],
                "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": "ferry"}}],
                "current-context": cluster,
            });
            let kubeconfig: Kubeconfig =
                serde_json::from_value(document).map_err(|e| rejected(e.to_string()))?;
            (kubeconfig, None, None)
        }
    };
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| rejected(e.to_string()))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(WATCH_READ_TIMEOUT);
    config.write_timeout = Some(CALL_TIMEOUT);
    let builder = ClientBuilder::try_from(config).map_err(|e| rejected(e.to_string()))?;
    Ok(match token {
        None => builder.build(),
        Some(token) => builder.with_layer(&BearerLayer { token }).build(),
    })
}

/// Sets `Authorization: Bearer <token>` on every request from a [`BearerToken`].
#[derive(Clone)]
struct BearerLayer {
    token: Arc<dyn BearerToken>,
}

impl<S> tower::Layer<S> for BearerLayer {
    type Service = Bearer<S>;

    fn layer(&self, inner: S) -> Bearer<S> {
        Bearer {
            inner,
            token: Arc::clone(&self.token),
        }
    }
}

#[derive(Clone)]
struct Bearer<S> {
    inner: S,
    token: Arc<dyn BearerToken>,
}

/// Why a request left without a token; the client reports it as a service error.
#[derive(Debug, thiserror::Error)]
#[error("no bearer token: {0}")]
struct NoToken(String);

impl<S> tower::Service<Request<Body>> for Bearer<S>
where
    S: tower::Service<Request<Body>>,
    S::Error: Into<tower::BoxError>,
    S::Future: Send + 'static,
    S::Response: 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let header = self.token.current().map_err(NoToken).and_then(|token| {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| NoToken("the token is not a valid header value".to_owned()))?;
            value.set_sensitive(true);
            Ok(value)
        });
        match header {
            Ok(value) => {
                request.headers_mut().insert(AUTHORIZATION, value);
                let future = self.inner.call(request);
                Box::pin(async move { future.await.map_err(Into::into) })
            }
            Err(error) => Box::pin(async move { Err(error.into()) }),
        }
    }
}
