//! The HTTP client every call goes through, and what is kept of an answer.
//!
//! With the `https` feature, TLS is rustls with ring as its crypto provider (the provider
//! kube uses in this workspace), verifying against the system's trust store plus the
//! cloud's `cacert`, as reqwest's own rustls setup does; the config is handed to reqwest
//! whole, so these clients need no process-level provider. Without it, only `http://`
//! works, and an `https://` auth URL is refused when the client is built.
//!
//! Redirects are not followed: Heat answers a stack lookup by name with a 302 whose
//! `Location` holds the stack id, and a followed redirect would hide it (and resend the
//! token to wherever it points).

use std::error::Error as _;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{ApiError, Error, Result};

/// Longest wait for one call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client with Ferry's timeouts and TLS for a cloud whose Keystone is at `auth_url`;
/// `cacert` adds a PEM bundle of trusted CAs.
pub(crate) fn client(
    auth_url: &str,
    cacert: Option<&Path>,
    source: &str,
) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!(
            "ferry-adapter-openstack/",
            env!("CARGO_PKG_VERSION")
        ));
    tls(builder, auth_url, cacert, source)?
        .build()
        .map_err(|e| Error::Config {
            source_name: source.to_owned(),
            message: format!("HTTP client: {}", chain(&e)),
        })
}

#[cfg(not(feature = "https"))]
fn tls(
    builder: reqwest::ClientBuilder,
    auth_url: &str,
    cacert: Option<&Path>,
    source: &str,
) -> Result<reqwest::ClientBuilder> {
    if auth_url.starts_with("https://") || cacert.is_some() {
        return Err(Error::Config {
            source_name: source.to_owned(),
            message: "this build has no TLS: HTTPS and cacert need the `https` feature of \
                      ferry-adapter-openstack"
                .to_owned(),
        });
    }
    Ok(builder)
}

#[cfg(feature = "https")]
fn tls(
    builder: reqwest::ClientBuilder,
    _auth_url: &str,
    cacert: Option<&Path>,
    source: &str,
) -> Result<reqwest::ClientBuilder> {
    use std::sync::Arc;

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let config_error = |message: String| Error::Config {
        source_name: source.to_owned(),
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = match cacert {
        None => rustls_platform_verifier::Verifier::new(provider.clone()),
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| config_error(format!("cacert {}: {e}", path.display())))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| config_error(format!("cacert {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(config_error(format!(
                    "cacert {}: no PEM certificate in it",
                    path.display()
                )));
            }
            rustls_platform_verifier::Verifier::new_with_extra_roots(certs, provider.clone())
        }
    }
    .map_err(|e| config_error(format!("TLS trust store: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(builder.tls_backend_preconfigured(config))
}

/// With the `https` feature, makes ring the process-level rustls crypto provider unless
/// one is installed already. Call it first thing in `main` (and in test harnesses) of a
/// binary that enables the feature: reqwest's features are unified across a build, so its
/// other reqwest clients (and kube's) then find a provider instead of panicking. This
/// crate's own clients do not need it.
#[cfg(feature = "https")]
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // An error means another thread installed one in between, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// An error and its causes on one line (reqwest's own text stops at "error sending
/// request").
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub(crate) fn connection_error(service: &str, operation: &str, error: &reqwest::Error) -> Error {
    Error::Connection {
        service: service.to_owned(),
        operation: operation.to_owned(),
        message: chain(error),
        timed_out: error.is_timeout(),
    }
}

/// An answer, read whole. Bodies of the calls made here are small (the largest, a stack
/// with its outputs, is a few kilobytes).
pub(crate) struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub request_id: Option<String>,
    /// Keystone's `X-Subject-Token`, the token it issued.
    pub subject_token: Option<crate::Secret>,
    content_type: Option<String>,
    body: Vec<u8>,
    service: String,
    operation: String,
    /// The call carried a token issued to an application credential.
    pub via_application_credential: bool,
}

impl Reply {
    pub async fn read(
        response: reqwest::Response,
        service: &str,
        operation: &str,
        via_application_credential: bool,
    ) -> Result<Reply> {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let location = header("location");
        let request_id = header("x-openstack-request-id");
        let content_type = header("content-type");
        let subject_token = header("x-subject-token").map(crate::Secret::new);
        let body = response
            .bytes()
            .await
            .map_err(|e| connection_error(service, operation, &e))?
            .to_vec();
        Ok(Reply {
            status,
            location,
            request_id,
            subject_token,
            content_type,
            body,
            service: service.to_owned(),
            operation: operation.to_owned(),
            via_application_credential,
        })
    }

    pub fn api_error(&self) -> ApiError {
        ApiError::parse(
            &self.service,
            &self.operation,
            self.status,
            self.request_id.clone(),
            self.content_type.as_deref(),
            &self.body,
        )
    }

    /// The classified error of this answer.
    pub fn error(&self) -> Error {
        Error::from_status(self.api_error(), self.via_application_credential)
    }

    /// This answer if its status is one of `statuses`, else its error.
    pub fn require_status(self, statuses: &[u16]) -> Result<Reply> {
        if statuses.contains(&self.status) {
            Ok(self)
        } else {
            Err(self.error())
        }
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| self.invalid(format!("{e}")))
    }

    pub fn invalid(&self, message: String) -> Error {
        Error::InvalidResponse {
            service: self.service.clone(),
            operation: self.operation.clone(),
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "https"))]
    #[test]
    fn without_the_https_feature_an_https_cloud_is_refused_up_front() {
        let error = client("https://keystone.example/v3", None, "clouds.yaml cloud c")
            .expect_err("no TLS in this build");
        assert!(error.to_string().contains("`https` feature"), "{error}");
        let error = client(
            "http://keystone.example/v3",
            Some(Path::new("/etc/ca.pem")),
            "c",
        )
        .expect_err("cacert without TLS");
        assert!(error.to_string().contains("`https` feature"), "{error}");
        assert!(client("http://127.0.0.1:5000/v3", None, "c").is_ok());
    }

    #[cfg(feature = "https")]
    #[tokio::test]
    async fn with_the_https_feature_clients_speak_tls_and_read_cacert() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let cases: [(Option<&Path>, Option<&str>); 4] = [
            (None, None),
            (Some(&dir.join("test-ca.pem")), None),
            (
                Some(&dir.join("k8s-cluster.yaml")),
                Some("no PEM certificate"),
            ),
            (Some(&dir.join("absent.pem")), Some("absent.pem")),
        ];
        for (cacert, error) in cases {
            match (client("https://k.example/v3", cacert, "c"), error) {
                (Ok(_), None) => {}
                (Err(e), Some(words)) => assert!(e.to_string().contains(words), "{e}"),
                (got, expected) => panic!("{cacert:?}: {got:?} vs {expected:?}"),
            }
        }

        // A loopback server that is not TLS: the handshake fails, as a connection error.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            }
        });
        let http = client("https://k.example/v3", None, "c").expect("a client");
        let error = http
            .get(format!("https://{address}/v3"))
            .send()
            .await
            .expect_err("not TLS");
        let error = connection_error("identity", "GET /v3", &error);
        assert!(error.is_transient(), "{error}");
    }
}
