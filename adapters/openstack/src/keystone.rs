//! Keystone v3: tokens and the service catalog.
//!
//! [`Keystone`] signs in with a [`CloudConfig`]'s [`Auth`] (`POST /v3/auth/tokens`; the
//! token is the `X-Subject-Token` header), keeps the token, and signs in again a margin
//! before `expires_at` (tokens cannot be refreshed). The margin is measured on the local
//! clock from the token's own lifetime (`expires_at - issued_at`), so a skewed clock on
//! either side does not matter.
//!
//! One lock guards the token: concurrent callers that find it due wait for one renewal and
//! share its result. A service that answers 401 gets one new token and one retry
//! (`Keystone::send`); a second 401 is the caller's error. Keystone refusing the
//! credentials is never retried: the refusal is kept for a minute and returned to every
//! caller in that time without asking again, because an account-lockout policy counts
//! failed attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::{
    ApplicationCredentialRef, Auth, CloudConfig, DomainRef, Interface, ProjectRef, UserRef,
};
use crate::error::{Error, Result};
use crate::http::{Reply, client, connection_error};
use crate::secret::Secret;

/// How long before `expires_at` a token is replaced by default.
pub const DEFAULT_RENEWAL_MARGIN: Duration = Duration::from_secs(5 * 60);
/// How long a refusal of the credentials is returned without asking Keystone again.
const REFUSAL_HOLD: Duration = Duration::from_secs(60);
const SERVICE: &str = "identity";

/// A Keystone token with what came with it.
#[derive(Debug)]
pub struct Token {
    value: Secret,
    /// Tells tokens of one client apart, so that a 401 renews only the token it refused.
    serial: u64,
    expires_at: String,
    lifetime: Duration,
    renew_at: Instant,
    methods: Vec<String>,
    user_id: String,
    project_id: Option<String>,
    project_name: Option<String>,
    roles: Vec<String>,
    catalog: Catalog,
    application_credential: Option<ApplicationCredentialInfo>,
}

/// The application credential a token was issued to.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ApplicationCredentialInfo {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub restricted: Option<bool>,
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenWire,
}

#[derive(Deserialize)]
struct TokenWire {
    #[serde(default)]
    methods: Vec<String>,
    user: Named,
    expires_at: String,
    #[serde(default)]
    issued_at: Option<String>,
    #[serde(default)]
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
    #[serde(default)]
    catalog: Catalog,
    #[serde(default)]
    application_credential: Option<ApplicationCredentialInfo>,
    /// The older api-ref sample's spelling (cloud-apis §1).
    #[serde(default)]
    application_credential_restricted: Option<bool>,
}

#[derive(Deserialize)]
struct Named {
    id: String,
    #[serde(default)]
    name: Option<String>,
}

impl Token {
    /// Reads a token answer: `value` from `X-Subject-Token`, `body` the JSON. `received`
    /// and `margin` set when it is due for renewal.
    pub fn parse(
        value: Secret,
        body: &[u8],
        received: Instant,
        margin: Duration,
    ) -> Result<Token, String> {
        let wire: TokenBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let wire = wire.token;
        let expires = parse_utc(&wire.expires_at)
            .ok_or_else(|| format!("expires_at {:?} is not a UTC time", wire.expires_at))?;
        // The lifetime by Keystone's clock; without issued_at, by ours.
        let issued = match &wire.issued_at {
            Some(text) => {
                parse_utc(text).ok_or_else(|| format!("issued_at {text:?} is not a UTC time"))?
            }
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        };
        let lifetime = expires.saturating_sub(issued);
        let application_credential = wire.application_credential.or_else(|| {
            wire.application_credential_restricted
                .map(|restricted| ApplicationCredentialInfo {
                    id: String::new(),
                    name: None,
                    restricted: Some(restricted),
                })
        });
        Ok(Token {
            value,
            serial: 0,
            expires_at: wire.expires_at,
            lifetime,
            renew_at: received + lifetime.saturating_sub(margin),
            methods: wire.methods,
            user_id: wire.user.id,
            project_id: wire.project.as_ref().map(|p| p.id.clone()),
            project_name: wire.project.and_then(|p| p.name),
            roles: wire.roles.into_iter().filter_map(|r| r.name).collect(),
            catalog: wire.catalog,
            application_credential,
        })
    }

    /// The token itself, for the `X-Auth-Token` header.
    pub fn value(&self) -> &Secret {
        &self.value
    }

    /// As Keystone wrote it, e.g. `2026-11-25T23:23:33.000000Z`.
    pub fn expires_at(&self) -> &str {
        &self.expires_at
    }

    /// `expires_at - issued_at`.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Whether the renewal margin has been reached at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.renew_at
    }

    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }

    pub fn project_name(&self) -> Option<&str> {
        self.project_name.as_deref()
    }

    /// Role names.
    pub fn roles(&self) -> &[String] {
        &self.roles
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn application_credential(&self) -> Option<&ApplicationCredentialInfo> {
        self.application_credential.as_ref()
    }

    /// Issued to an application credential: Heat and Magnum will refuse it (trusts).
    pub fn is_application_credential(&self) -> bool {
        self.application_credential.is_some()
            || self.methods.iter().any(|m| m == "application_credential")
    }
}

/// The service catalog of a token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Catalog {
    pub services: Vec<CatalogService>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CatalogService {
    #[serde(rename = "type")]
    pub service_type: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<CatalogEndpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct CatalogEndpoint {
    pub interface: String,
    #[serde(default)]
    pub region_id: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    pub url: String,
}

impl CatalogEndpoint {
    fn region_name(&self) -> Option<&str> {
        self.region_id.as_deref().or(self.region.as_deref())
    }
}

impl Catalog {
    /// The URL (no trailing `/`) of `service_type`'s endpoint with `interface` in `region`;
    /// with no region, the one region that has such an endpoint.
    pub fn endpoint(
        &self,
        service_type: &str,
        interface: Interface,
        region: Option<&str>,
    ) -> Result<String> {
        let endpoints: Vec<&CatalogEndpoint> = self
            .services
            .iter()
            .filter(|s| s.service_type == service_type)
            .flat_map(|s| &s.endpoints)
            .collect();
        if endpoints.is_empty() && !self.services.iter().any(|s| s.service_type == service_type) {
            let mut offered: Vec<String> = self
                .services
                .iter()
                .map(|s| s.service_type.clone())
                .collect();
            offered.sort();
            offered.dedup();
            return Err(Error::NoService {
                service_type: service_type.to_owned(),
                offered,
            });
        }
        let wanted: Vec<&&CatalogEndpoint> = endpoints
            .iter()
            .filter(|e| e.interface == interface.as_str())
            .filter(|e| region.is_none_or(|r| e.region_name() == Some(r)))
            .collect();
        let mut regions: Vec<String> = wanted
            .iter()
            .map(|e| e.region_name().unwrap_or("(none)").to_owned())
            .collect();
        regions.sort();
        regions.dedup();
        match wanted.first() {
            Some(endpoint) if regions.len() == 1 => {
                Ok(endpoint.url.trim_end_matches('/').to_owned())
            }
            Some(_) => Err(Error::AmbiguousRegion {
                service_type: service_type.to_owned(),
                interface: interface.to_string(),
                regions,
            }),
            None => Err(Error::NoEndpoint {
                service_type: service_type.to_owned(),
                interface: interface.to_string(),
                region: region.map(str::to_owned),
                offered: endpoints
                    .iter()
                    .map(|e| format!("{}@{}", e.interface, e.region_name().unwrap_or("(none)")))
                    .collect(),
            }),
        }
    }

    /// The service types it lists.
    pub fn service_types(&self) -> Vec<&str> {
        self.services
            .iter()
            .map(|s| s.service_type.as_str())
            .collect()
    }
}

/// Seconds (and nanoseconds) since the epoch of an ISO-8601 UTC time such as
/// `2026-11-25T23:23:33.000000Z` (Keystone's form); `Z`, `+00:00` or nothing after it.
pub(crate) fn parse_utc(text: &str) -> Option<Duration> {
    let text = text.trim();
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))
        .unwrap_or(text);
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: i64 = date_parts.next()?.parse().ok()?;
    let day: i64 = date_parts.next()?.parse().ok()?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time_parts = hms.split(':');
    let hour: i64 = time_parts.next()?.parse().ok()?;
    let minute: i64 = time_parts.next()?.parse().ok()?;
    let second: i64 = time_parts.next()?.parse().ok()?;
    let valid = date_parts.next().is_none()
        && time_parts.next().is_none()
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0..=60).contains(&second)
        && fraction.chars().all(|c| c.is_ascii_digit());
    if !valid {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()?;
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let nanos: u32 = digits.parse().ok()?;
    Some(Duration::new(seconds, nanos))
}

/// The token cache and the last refusal, behind one lock.
#[derive(Default)]
struct State {
    token: Option<Arc<Token>>,
    refusal: Option<(Instant, String, Option<String>)>,
}

/// A Keystone client for one cloud and one identity; share it (`Arc`) between the clients
/// of the cloud's services, so that they share its token.
pub struct Keystone {
    http: reqwest::Client,
    config: CloudConfig,
    renewal_margin: Duration,
    state: tokio::sync::Mutex<State>,
    serial: AtomicU64,
}

impl std::fmt::Debug for Keystone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keystone")
            .field("config", &self.config)
            .field("renewal_margin", &self.renewal_margin)
            .finish_non_exhaustive()
    }
}

impl Keystone {
    /// A client for `config`; nothing is sent until a token is needed.
    pub fn new(config: CloudConfig) -> Result<Keystone> {
        let http = client(&config.auth_url, config.cacert.as_deref(), &config.source)?;
        Ok(Keystone {
            http,
            config,
            renewal_margin: DEFAULT_RENEWAL_MARGIN,
            state: tokio::sync::Mutex::new(State::default()),
            serial: AtomicU64::new(0),
        })
    }

    /// Renews tokens `margin` before they expire instead of [`DEFAULT_RENEWAL_MARGIN`].
    /// A margin longer than the tokens' lifetime makes every call sign in again.
    pub fn with_renewal_margin(mut self, margin: Duration) -> Keystone {
        self.renewal_margin = margin;
        self
    }

    pub fn config(&self) -> &CloudConfig {
        &self.config
    }

    /// The current token: the cached one until its renewal margin, then a new one.
    pub async fn token(&self) -> Result<Arc<Token>> {
        let mut state = self.state.lock().await;
        if let Some(token) = &state.token
            && !token.is_due(Instant::now())
        {
            return Ok(token.clone());
        }
        self.issue(&mut state).await
    }

    /// A token to replace `rejected`, which a service refused: a newer cached one if
    /// another caller already renewed it, else a new one.
    async fn renew_after_rejection(&self, rejected: &Token) -> Result<Arc<Token>> {
        let mut state = self.state.lock().await;
        if let Some(token) = &state.token
            && token.serial != rejected.serial
            && !token.is_due(Instant::now())
        {
            return Ok(token.clone());
        }
        state.token = None;
        self.issue(&mut state).await
    }

    /// Signs in; called with the lock held, so that callers share one attempt.
    async fn issue(&self, state: &mut State) -> Result<Arc<Token>> {
        let auth = &self.config.auth;
        let refused = |message: String, request_id: Option<String>| Error::AuthenticationFailed {
            auth_url: self.config.auth_url.clone(),
            method: auth.method(),
            who: auth.describe(),
            message,
            request_id,
        };
        if let Some((at, message, request_id)) = &state.refusal
            && at.elapsed() < REFUSAL_HOLD
        {
            return Err(refused(message.clone(), request_id.clone()));
        }
        let operation = "POST /auth/tokens";
        tracing::debug!(auth_url = %self.config.auth_url, method = auth.method(),
            who = %auth.describe(), "requesting a Keystone token");
        let response = self
            .http
            .post(format!("{}/auth/tokens", self.config.auth_url))
            .header("Accept", "application/json")
            .json(&auth_request(auth))
            .send()
            .await
            .map_err(|e| connection_error(SERVICE, operation, &e))?;
        let received = Instant::now();
        let reply = Reply::read(response, SERVICE, operation, false).await?;
        if reply.status == 401 {
            let api = reply.api_error();
            tracing::warn!(auth_url = %self.config.auth_url, who = %auth.describe(),
                request_id = api.request_id.as_deref().unwrap_or(""), message = %api.message,
                "Keystone refused the credentials");
            state.refusal = Some((received, api.message.clone(), api.request_id.clone()));
            state.token = None;
            return Err(refused(api.message, api.request_id));
        }
        let reply = reply.require_status(&[200, 201])?;
        let Some(value) = reply.subject_token.clone() else {
            return Err(reply.invalid("no X-Subject-Token header".to_owned()));
        };
        let mut token = Token::parse(value, reply.body(), received, self.renewal_margin)
            .map_err(|message| reply.invalid(message))?;
        token.serial = self.serial.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(auth_url = %self.config.auth_url, method = auth.method(),
            project = token.project_name().or(token.project_id()).unwrap_or(""),
            expires_at = %token.expires_at, request_id = reply.request_id.as_deref().unwrap_or(""),
            "Keystone token issued");
        let token = Arc::new(token);
        state.refusal = None;
        state.token = Some(token.clone());
        Ok(token)
    }

    /// The URL of `service_type` for this cloud: its override, or the catalog's endpoint
    /// with the configured interface and region.
    pub async fn endpoint(&self, service_type: &str) -> Result<String> {
        let token = self.token().await?;
        self.endpoint_for(&token, service_type)
    }

    fn endpoint_for(&self, token: &Token, service_type: &str) -> Result<String> {
        if let Some(url) = self.config.endpoint_overrides.get(service_type) {
            let project = token.project_id().unwrap_or_default();
            let mut url = url.clone();
            for template in [
                "%(project_id)s",
                "%(tenant_id)s",
                "$(project_id)s",
                "$(tenant_id)s",
            ] {
                url = url.replace(template, project);
            }
            return Ok(url);
        }
        token.catalog.endpoint(
            service_type,
            self.config.interface,
            self.config.region.as_deref(),
        )
    }

    /// Calls `method {endpoint}{path}` of `service_type` with the current token; on a 401,
    /// once more with a new token. Any answer is returned: the caller classifies it.
    pub(crate) async fn send(
        &self,
        service_type: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let operation = format!("{method} {path}");
        let token = self.token().await?;
        let reply = self
            .send_with(&token, service_type, &method, path, body, &operation)
            .await?;
        if reply.status != 401 {
            return Ok(reply);
        }
        tracing::info!(service = service_type, operation = %operation,
            request_id = reply.request_id.as_deref().unwrap_or(""),
            "the service refused the token; signing in again and retrying once");
        let fresh = self.renew_after_rejection(&token).await?;
        self.send_with(&fresh, service_type, &method, path, body, &operation)
            .await
    }

    async fn send_with(
        &self,
        token: &Token,
        service_type: &str,
        method: &reqwest::Method,
        path: &str,
        body: Option<&Value>,
        operation: &str,
    ) -> Result<Reply> {
        let base = self.endpoint_for(token, service_type)?;
        let mut header =
            reqwest::header::HeaderValue::from_str(token.value().expose()).map_err(|_| {
                Error::InvalidResponse {
                    service: SERVICE.to_owned(),
                    operation: "POST /auth/tokens".to_owned(),
                    message: "the token is not a valid header value".to_owned(),
                }
            })?;
        header.set_sensitive(true);
        let mut request = self
            .http
            .request(method.clone(), format!("{base}{path}"))
            .header("X-Auth-Token", header)
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| connection_error(service_type, operation, &e))?;
        Reply::read(
            response,
            service_type,
            operation,
            token.is_application_credential(),
        )
        .await
    }
}

fn domain_json(domain: &DomainRef) -> Value {
    match domain {
        DomainRef::Id(id) => json!({"id": id}),
        DomainRef::Name(name) => json!({"name": name}),
    }
}

fn user_json(user: &UserRef) -> Value {
    match user {
        UserRef::Id(id) => json!({"id": id}),
        UserRef::Name { name, domain } => json!({"name": name, "domain": domain_json(domain)}),
    }
}

/// The body of `POST /v3/auth/tokens`. It holds the secret: never log it.
fn auth_request(auth: &Auth) -> Value {
    match auth {
        Auth::Password {
            user,
            password,
            project,
        } => {
            let mut user = user_json(user);
            user["password"] = Value::String(password.expose().to_owned());
            let project = match project {
                ProjectRef::Id(id) => json!({"id": id}),
                ProjectRef::Name { name, domain } => {
                    json!({"name": name, "domain": domain_json(domain)})
                }
            };
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": user}},
                "scope": {"project": project},
            }})
        }
        Auth::ApplicationCredential { credential, secret } => {
            let mut credential = match credential {
                ApplicationCredentialRef::Id(id) => json!({"id": id}),
                ApplicationCredentialRef::Name { name, user } => {
                    json!({"name": name, "user": user_json(user)})
                }
            };
            credential["secret"] = Value::String(secret.expose().to_owned());
            // No scope: Keystone refuses one for an application credential.
            json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": credential,
            }}})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(text: &str) -> (Value, Vec<u8>) {
        let fixture: Value = serde_json::from_str(text).expect("fixtures are JSON");
        let body = serde_json::to_vec(&fixture["body"]).expect("serialisable");
        (fixture, body)
    }

    const PASSWORD: &str =
        include_str!("../testdata/fixtures/keystone/auth-tokens-password-201.json");
    const APPLICATION_CREDENTIAL: &str =
        include_str!("../testdata/fixtures/keystone/auth-tokens-application-credential-201.json");

    /// Both recorded token answers: who, which project, how long, which method.
    #[test]
    fn recorded_token_answers_parse() {
        let cases = [
            (PASSWORD, vec!["password"], 3, false),
            (
                APPLICATION_CREDENTIAL,
                vec!["application_credential"],
                1,
                true,
            ),
        ];
        for (text, methods, roles, application_credential) in cases {
            let (fixture, body) = recorded(text);
            let header = fixture["headers"]["X-Subject-Token"]
                .as_str()
                .expect("a token");
            let now = Instant::now();
            let token = Token::parse(Secret::new(header), &body, now, DEFAULT_RENEWAL_MARGIN)
                .expect("parses");
            assert_eq!(token.methods(), methods);
            assert_eq!(token.user_id(), "5a92ce09d20c4010887d46f02fe20927");
            assert_eq!(token.project_id(), Some("191356ecb30e458d8b90508be9795d36"));
            assert_eq!(token.project_name(), Some("admin"));
            assert_eq!(token.roles().len(), roles);
            assert_eq!(token.lifetime(), Duration::from_secs(3600));
            assert_eq!(token.is_application_credential(), application_credential);
            assert_eq!(token.catalog().service_types(), ["identity"]);
            assert!(!token.is_due(now + Duration::from_secs(3600 - 301)));
            assert!(token.is_due(now + Duration::from_secs(3600 - 300)));
            assert!(
                !format!("{token:?}").contains(header),
                "the token is redacted"
            );
        }
        let (_, body) = recorded(APPLICATION_CREDENTIAL);
        let token =
            Token::parse(Secret::new("t"), &body, Instant::now(), Duration::ZERO).expect("parses");
        assert_eq!(
            token.application_credential(),
            Some(&ApplicationCredentialInfo {
                id: "11454f5e3b154e8ab2668b95892f4f53".into(),
                name: Some("broker".into()),
                restricted: Some(true),
            })
        );
    }

    #[test]
    fn a_margin_beyond_the_lifetime_makes_a_token_due_at_once() {
        let (_, body) = recorded(PASSWORD);
        let now = Instant::now();
        let token =
            Token::parse(Secret::new("t"), &body, now, Duration::from_secs(3601)).expect("parses");
        assert!(token.is_due(now));
    }

    #[test]
    fn the_older_restricted_flag_also_marks_an_application_credential_token() {
        let body = br#"{"token":{"methods":["application_credential"],"user":{"id":"u"},
            "expires_at":"2026-11-25T23:24:28.000000Z","issued_at":"2026-11-25T22:24:28.000000Z",
            "application_credential_restricted":true}}"#;
        let token =
            Token::parse(Secret::new("t"), body, Instant::now(), Duration::ZERO).expect("parses");
        assert!(token.is_application_credential());
        assert_eq!(token.catalog(), &Catalog::default());
        assert_eq!(token.project_id(), None);
    }

    #[test]
    fn utc_times() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some((0, 0))),
            ("2026-11-25T23:23:33.000000Z", Some((1_795_649_013, 0))),
            ("2026-11-25T23:23:33.5Z", Some((1_795_649_013, 500_000_000))),
            ("2000-02-29T12:00:00+00:00", Some((951_825_600, 0))),
            ("2026-11-25T23:23:33", Some((1_795_649_013, 0))),
            ("2026-13-01T00:00:00Z", None),
            ("2026-11-25 23:23:33Z", None),
            ("2026-11-25T23:23Z", None),
            ("1969-12-31T23:59:59Z", None),
            ("yesterday", None),
        ];
        for (text, expected) in cases {
            let got = parse_utc(text).map(|d| (d.as_secs(), d.subsec_nanos()));
            assert_eq!(got, expected, "{text}");
        }
    }

    fn harness_catalog() -> Catalog {
        serde_json::from_value(json!([
            {"type": "identity", "name": "keystone", "id": "k", "endpoints": [
                {"id": "1", "interface": "public", "region_id": "RegionOne", "region": "RegionOne", "url": "http://127.0.0.1:5000/v3/"},
                {"id": "2", "interface": "internal", "region_id": "RegionOne", "region": "RegionOne", "url": "http://10.0.0.1:5000/v3/"},
            ]},
            {"type": "orchestration", "name": "heat", "id": "h", "endpoints": [
                {"id": "3", "interface": "public", "region_id": "RegionOne", "url": "http://127.0.0.1:8004/v1/p1"},
                {"id": "4", "interface": "public", "region_id": "RegionTwo", "url": "http://heat.two:8004/v1/p1"},
                {"id": "5", "interface": "admin", "region_id": "RegionOne", "url": "http://heat.admin:8004/v1/p1"},
            ]},
        ]))
        .expect("a catalog")
    }

    /// Table: (service, interface, region) → URL, or the words of the error.
    #[test]
    fn catalog_endpoints_by_type_interface_and_region() {
        let catalog = harness_catalog();
        /// (service type, interface, region, URL or the words of the error)
        type Case = (
            &'static str,
            Interface,
            Option<&'static str>,
            Result<&'static str, &'static str>,
        );
        let cases: [Case; 7] = [
            (
                "identity",
                Interface::Public,
                None,
                Ok("http://127.0.0.1:5000/v3"),
            ),
            (
                "identity",
                Interface::Internal,
                Some("RegionOne"),
                Ok("http://10.0.0.1:5000/v3"),
            ),
            (
                "orchestration",
                Interface::Public,
                Some("RegionTwo"),
                Ok("http://heat.two:8004/v1/p1"),
            ),
            (
                "orchestration",
                Interface::Admin,
                None,
                Ok("http://heat.admin:8004/v1/p1"),
            ),
            (
                "orchestration",
                Interface::Public,
                None,
                Err(
                    "public endpoints of orchestration in several regions (RegionOne, RegionTwo); set region_name",
                ),
            ),
            (
                "orchestration",
                Interface::Internal,
                Some("RegionOne"),
                Err(
                    "no internal endpoint of orchestration in region RegionOne; it has: public@RegionOne, public@RegionTwo, admin@RegionOne",
                ),
            ),
            (
                "container-infra",
                Interface::Public,
                None,
                Err("no container-infra service; it offers: identity, orchestration"),
            ),
        ];
        for (service, interface, region, expected) in cases {
            let got = catalog.endpoint(service, interface, region);
            match (got, expected) {
                (Ok(url), Ok(expected)) => assert_eq!(url, expected, "{service} {interface}"),
                (Err(error), Err(words)) => {
                    let shown = error.to_string();
                    assert!(shown.contains(words), "{service} {interface}: {shown}");
                }
                (got, expected) => panic!("{service} {interface}: {got:?} vs {expected:?}"),
            }
        }
    }

    #[test]
    fn the_recorded_password_request_is_what_is_sent() {
        let fixture: Value = serde_json::from_str(PASSWORD).expect("JSON");
        let auth = Auth::Password {
            user: UserRef::Name {
                name: "admin".into(),
                domain: DomainRef::Id("default".into()),
            },
            password: Secret::new("<redacted:password>"),
            project: ProjectRef::Name {
                name: "admin".into(),
                domain: DomainRef::Id("default".into()),
            },
        };
        assert_eq!(auth_request(&auth), fixture["request"]["body"]);
    }

    #[test]
    fn application_credential_requests_send_no_scope() {
        let cases = [
            (
                ApplicationCredentialRef::Id("1145".into()),
                json!({"id": "1145", "secret": "s"}),
            ),
            (
                ApplicationCredentialRef::Name {
                    name: "ferry".into(),
                    user: UserRef::Name {
                        name: "admin".into(),
                        domain: DomainRef::Id("default".into()),
                    },
                },
                json!({"name": "ferry", "user": {"name": "admin", "domain": {"id": "default"}}, "secret": "s"}),
            ),
            (
                ApplicationCredentialRef::Name {
                    name: "ferry".into(),
                    user: UserRef::Id("u1".into()),
                },
                json!({"name": "ferry", "user": {"id": "u1"}, "secret": "s"}),
            ),
        ];
        for (credential, expected) in cases {
            let body = auth_request(&Auth::ApplicationCredential {
                credential,
                secret: Secret::new("s"),
            });
            assert_eq!(body["auth"]["identity"]["application_credential"], expected);
            assert_eq!(
                body["auth"]["identity"]["methods"],
                json!(["application_credential"])
            );
            assert!(body["auth"].get("scope").is_none(), "{body}");
        }
    }
}
