//! The HTTP client every call goes through, what is kept of an answer, and the encoding of
//! form bodies, query values and path segments.
//!
//! With the `https` feature, TLS is rustls with ring (kube's crypto provider in this
//! workspace) verifying against the system's trust store; the config is handed to reqwest
//! whole, so these clients need no process-level provider. Without it only `http://`
//! works (the test servers), and an `https://` URL is refused when the client is built.
//! Redirects are not followed: a followed redirect would resend the bearer token to
//! wherever it points.

use std::error::Error as _;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{ApiError, Error, Result};

/// Longest wait for one call.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client with Ferry's timeouts, able to reach `url` (its scheme decides whether TLS is
/// needed); `what` names the setting the URL came from, for the error.
pub(crate) fn client(url: &str, what: &str) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CALL_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("ferry-adapter-gke/", env!("CARGO_PKG_VERSION")));
    tls(builder, url, what)?
        .build()
        .map_err(|e| Error::InvalidInput {
            what: what.to_owned(),
            message: format!("HTTP client: {}", chain(&e)),
        })
}

#[cfg(not(feature = "https"))]
fn tls(builder: reqwest::ClientBuilder, url: &str, what: &str) -> Result<reqwest::ClientBuilder> {
    if url.starts_with("https://") {
        return Err(Error::InvalidInput {
            what: what.to_owned(),
            message: format!(
                "{url}: this build has no TLS; HTTPS needs the `https` feature of \
                 ferry-adapter-gke"
            ),
        });
    }
    Ok(builder)
}

#[cfg(feature = "https")]
fn tls(builder: reqwest::ClientBuilder, _url: &str, what: &str) -> Result<reqwest::ClientBuilder> {
    use std::sync::Arc;

    let config_error = |message: String| Error::InvalidInput {
        what: what.to_owned(),
        message,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| config_error(format!("TLS trust store: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(builder.tls_backend_preconfigured(config))
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

/// An answer, read whole.
pub(crate) struct Reply {
    pub status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
    service: &'static str,
    operation: String,
}

impl Reply {
    pub async fn read(
        response: reqwest::Response,
        service: &'static str,
        operation: &str,
    ) -> Result<Reply> {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .bytes()
            .await
            .map_err(|e| connection_error(service, operation, &e))?
            .to_vec();
        Ok(Reply {
            status,
            content_type,
            body,
            service,
            operation: operation.to_owned(),
        })
    }

    pub fn api_error(&self) -> ApiError {
        ApiError::parse(
            self.service,
            &self.operation,
            self.status,
            self.content_type.as_deref(),
            &self.body,
        )
    }

    /// This answer if it is a 200, else its classified error.
    pub fn ok(self) -> Result<Reply> {
        if self.status == 200 {
            Ok(self)
        } else {
            Err(Error::from_status(self.api_error()))
        }
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| self.invalid(e.to_string()))
    }

    pub fn invalid(&self, message: String) -> Error {
        Error::InvalidResponse {
            service: self.service.to_owned(),
            operation: self.operation.clone(),
            message,
        }
    }
}

/// `application/x-www-form-urlencoded` (and query) encoding of one value: everything but
/// RFC 3986's unreserved characters is percent-encoded.
pub(crate) fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Checks one path segment of a Google resource name (project, location, cluster, node
/// pool, operation): a name from a configuration must not be able to add path segments
/// or a query.
pub(crate) fn check_segment(what: &str, value: &str) -> Result<()> {
    let valid = !value.is_empty()
        && value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value != "."
        && value != "..";
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what: what.to_owned(),
            message: format!("{value:?} is not a valid name (letters, digits, -, _ and .)"),
        })
    }
}

/// `base` without its trailing `/`, so that paths can be appended with one.
pub(crate) fn trim_base(base: &str) -> String {
    base.trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_percent_encoded() {
        assert_eq!(
            form_encode("urn:ietf:params:oauth:grant-type:jwt-bearer"),
            "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
        );
        assert_eq!(form_encode("a.b-c_d~e"), "a.b-c_d~e");
        assert_eq!(form_encode("a b/+=&é"), "a%20b%2F%2B%3D%26%C3%A9");
    }

    #[test]
    fn path_segments_are_names_only() {
        for good in [
            "my-project",
            "us-central1",
            "-",
            "operation-1700000000-abc",
            "pool_1",
        ] {
            assert!(check_segment("name", good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "..", "a?b", "a b", "x#y", "%2F"] {
            assert!(check_segment("name", bad).is_err(), "{bad}");
        }
    }

    #[cfg(not(feature = "https"))]
    #[test]
    fn without_the_https_feature_https_urls_are_refused_up_front() {
        let error = client("https://container.googleapis.com/", "GKE base URL")
            .expect_err("no TLS in this build");
        assert!(error.to_string().contains("`https` feature"), "{error}");
        assert!(client("http://127.0.0.1:1/", "GKE base URL").is_ok());
    }
}
