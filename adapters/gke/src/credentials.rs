//! A service account's JSON key and the signed assertion of Google's JWT-bearer flow
//! (cloud-apis §6).
//!
//! The key is named explicitly or by `GOOGLE_APPLICATION_CREDENTIALS`; nothing else is
//! searched (no gcloud configuration, no metadata server): a broker that silently used
//! whatever identity its machine has would act in the wrong project. The private key is
//! parsed once, when the key is read, so that a broken key is an error at start-up; it is
//! a [`Secret`] and never printed.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::secret::Secret;

/// The variable that names a key file when none is named explicitly.
pub const CREDENTIALS_VARIABLE: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// GKE and the Billing Catalog need `cloud-platform`; `userinfo.email` makes a cluster's
/// API server see the service account's e-mail rather than its numeric id, which is what
/// RBAC bindings name (cloud-apis §7, "Access to a GKE cluster's Kubernetes API").
pub const DEFAULT_SCOPES: &str =
    "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email";

/// How far in the past `iat` is set: Google refuses assertions "in the future", and a few
/// seconds of skew between this machine and Google are common.
const ISSUED_AT_BACKDATE: Duration = Duration::from_secs(30);
/// The longest lifetime Google accepts for an assertion.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    client_email: Option<String>,
    client_id: Option<String>,
    token_uri: Option<String>,
}

/// A service account's key, as Google's JSON key file holds it.
#[derive(Clone)]
pub struct ServiceAccountKey {
    project_id: String,
    private_key_id: String,
    private_key: Secret,
    signing_key: EncodingKey,
    client_email: String,
    client_id: Option<String>,
    token_uri: String,
    /// Where the key was read from, for messages.
    source: String,
}

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("project_id", &self.project_id)
            .field("private_key_id", &self.private_key_id)
            .field("private_key", &self.private_key)
            .field("token_uri", &self.token_uri)
            .field("source", &self.source)
            .finish()
    }
}

impl std::fmt::Display for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (key {}, from {})",
            self.client_email, self.private_key_id, self.source
        )
    }
}

/// The claims of the assertion (cloud-apis §6).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AssertionClaims {
    pub iss: String,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

impl ServiceAccountKey {
    /// Reads the key named by `explicit`, or else by `GOOGLE_APPLICATION_CREDENTIALS`.
    pub fn load(explicit: Option<&Path>) -> Result<ServiceAccountKey> {
        ServiceAccountKey::load_with(explicit, std::env::var_os(CREDENTIALS_VARIABLE))
    }

    /// [`ServiceAccountKey::load`] with the variable's value given, so that tests need no
    /// process environment.
    pub fn load_with(
        explicit: Option<&Path>,
        variable: Option<std::ffi::OsString>,
    ) -> Result<ServiceAccountKey> {
        match (explicit, variable) {
            (Some(path), _) => ServiceAccountKey::read(path),
            (None, Some(value)) if !value.is_empty() => ServiceAccountKey::read(Path::new(&value)),
            _ => Err(Error::Credentials {
                source_name: "(none)".to_owned(),
                message: format!(
                    "no key file named, and {CREDENTIALS_VARIABLE} is not set; name a \
                     service account's JSON key"
                ),
            }),
        }
    }

    pub fn read(path: &Path) -> Result<ServiceAccountKey> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Credentials {
            source_name: source.clone(),
            message: e.to_string(),
        })?;
        ServiceAccountKey::parse(&text, &source)
    }

    /// Parses the JSON of a key file; `source` names it in messages.
    pub fn parse(text: &str, source: &str) -> Result<ServiceAccountKey> {
        let invalid = |message: String| Error::Credentials {
            source_name: source.to_owned(),
            message,
        };
        // serde_json's own messages quote no values, so the private key cannot leak
        // through them; they give line and column only.
        let file: KeyFile =
            serde_json::from_str(text).map_err(|e| invalid(format!("not a JSON key: {e}")))?;
        match file.kind.as_deref() {
            Some("service_account") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "type is {other:?}; only service-account keys are supported \
                     (not user credentials or workload identity federation)"
                )));
            }
            None => return Err(invalid("no `type`".to_owned())),
        }
        let required = |value: Option<String>, field: &str| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| invalid(format!("no `{field}`")))
        };
        let private_key = Secret::new(required(file.private_key, "private_key")?);
        let client_email = required(file.client_email, "client_email")?;
        let signing_key =
            EncodingKey::from_rsa_pem(private_key.expose().as_bytes()).map_err(|e| {
                invalid(format!(
                    "private_key is not an RSA key in PEM (PKCS#8 or PKCS#1): {e}"
                ))
            })?;
        Ok(ServiceAccountKey {
            project_id: required(file.project_id, "project_id")?,
            private_key_id: required(file.private_key_id, "private_key_id")?,
            private_key,
            signing_key,
            client_email,
            client_id: file.client_id,
            token_uri: required(file.token_uri, "token_uri")?,
            source: source.to_owned(),
        })
    }

    /// The same key with another token endpoint (a test server, or a private endpoint).
    pub fn with_token_uri(mut self, token_uri: &str) -> ServiceAccountKey {
        token_uri.clone_into(&mut self.token_uri);
        self
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    pub fn private_key_id(&self) -> &str {
        &self.private_key_id
    }

    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The claims of an assertion for `scopes` made at `now`.
    pub fn claims(&self, scopes: &str, now: SystemTime) -> AssertionClaims {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let iat = now.saturating_sub(ISSUED_AT_BACKDATE).as_secs();
        AssertionClaims {
            iss: self.client_email.clone(),
            scope: scopes.to_owned(),
            aud: self.token_uri.clone(),
            iat,
            exp: iat + ASSERTION_LIFETIME.as_secs(),
        }
    }

    /// The signed assertion (RS256, `kid` = `private_key_id`) for `scopes` at `now`. It is
    /// as good as a token for an hour, so it is a [`Secret`] too.
    pub fn assertion(&self, scopes: &str, now: SystemTime) -> Result<Secret> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.private_key_id.clone());
        jsonwebtoken::encode(&header, &self.claims(scopes, now), &self.signing_key)
            .map(Secret::new)
            .map_err(|e| Error::Signing {
                client_email: self.client_email.clone(),
                message: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use jsonwebtoken::{DecodingKey, Validation};

    const KEY: &str = include_str!("../testdata/test-service-account.json");
    const PUBLIC: &str = include_str!("../testdata/test-service-account.pub.pem");

    fn key() -> ServiceAccountKey {
        ServiceAccountKey::parse(KEY, "test-service-account.json").expect("the test key parses")
    }

    #[test]
    fn the_assertion_verifies_with_the_public_half() {
        let key = key();
        let now = SystemTime::now();
        let assertion = key.assertion(DEFAULT_SCOPES, now).expect("signed");
        let decoding = DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).expect("a public key");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["https://oauth2.googleapis.com/token"]);
        validation.set_issuer(&["ferry-test@ferry-test-project.iam.gserviceaccount.com"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let decoded =
            jsonwebtoken::decode::<AssertionClaims>(assertion.expose(), &decoding, &validation)
                .expect("a valid RS256 signature");
        assert_eq!(decoded.header.alg, Algorithm::RS256);
        assert_eq!(
            decoded.header.kid.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert_eq!(decoded.header.typ.as_deref(), Some("JWT"));
        let claims = decoded.claims;
        assert_eq!(claims.scope, DEFAULT_SCOPES);
        let unix = now
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        assert_eq!(claims.iat, unix - 30);
        assert_eq!(claims.exp, claims.iat + 3600);

        // Another key's public half does not verify it.
        let mut tampered = assertion.expose().to_owned();
        tampered.push('A');
        assert!(
            jsonwebtoken::decode::<AssertionClaims>(&tampered, &decoding, &validation).is_err()
        );
    }

    #[test]
    fn neither_debug_nor_display_shows_the_private_key() {
        let key = key();
        for shown in [format!("{key:?}"), format!("{key}"), format!("{key:#?}")] {
            assert!(!shown.contains("PRIVATE KEY"), "{shown}");
            assert!(!shown.contains("MII"), "{shown}");
            assert!(shown.contains("ferry-test@"), "{shown}");
        }
        assert_eq!(key.project_id(), "ferry-test-project");
        assert_eq!(key.token_uri(), "https://oauth2.googleapis.com/token");
    }

    /// Broken key files: each error names the problem and never quotes the key.
    #[test]
    fn broken_key_files_are_refused_with_a_reason() {
        let valid: serde_json::Value = serde_json::from_str(KEY).expect("JSON");
        let with = |field: &str, value: serde_json::Value| {
            let mut changed = valid.clone();
            changed[field] = value;
            changed.to_string()
        };
        let without = |field: &str| {
            let mut changed = valid.clone();
            changed.as_object_mut().expect("an object").remove(field);
            changed.to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            ("not json".to_owned(), "not a JSON key"),
            (
                with("type", "authorized_user".into()),
                "only service-account keys",
            ),
            (without("type"), "no `type`"),
            (without("client_email"), "no `client_email`"),
            (without("token_uri"), "no `token_uri`"),
            (with("private_key_id", "".into()), "no `private_key_id`"),
            (
                with(
                    "private_key",
                    "-----BEGIN PRIVATE KEY-----\nMIIBroken\n-----END PRIVATE KEY-----\n".into(),
                ),
                "not an RSA key",
            ),
        ];
        for (text, expected) in cases {
            let error = ServiceAccountKey::parse(&text, "k.json").expect_err(expected);
            let shown = error.to_string();
            assert!(shown.contains(expected), "{shown}");
            assert!(shown.contains("k.json"), "{shown}");
            assert!(!shown.contains("MII"), "{shown}");
        }
    }

    #[test]
    fn the_key_file_is_named_explicitly_or_by_the_variable() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/test-service-account.json");
        let explicit = ServiceAccountKey::load_with(Some(&path), Some("/nonexistent".into()))
            .expect("the explicit file wins");
        assert_eq!(explicit.client_email(), key().client_email());
        let by_variable =
            ServiceAccountKey::load_with(None, Some(path.into_os_string())).expect("by variable");
        assert_eq!(by_variable.private_key_id(), key().private_key_id());
        let none = ServiceAccountKey::load_with(None, None).expect_err("nothing named");
        assert!(none.to_string().contains(CREDENTIALS_VARIABLE), "{none}");
        let missing = ServiceAccountKey::load_with(None, Some("/nonexistent/key.json".into()))
            .expect_err("no such file");
        assert!(
            missing.to_string().contains("/nonexistent/key.json"),
            "{missing}"
        );
    }
}
