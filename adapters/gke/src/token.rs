//! Google access tokens for a service account: [`TokenSource`] keeps one, renews it a
//! margin before it expires, and makes concurrent callers share one renewal;
//! [`BackgroundToken`] hands the Kubernetes adapter a token it can read on every request
//! without waiting, kept fresh by a tokio task.
//!
//! Expiry is measured on the local monotonic clock from `expires_in` (tokio's `Instant`,
//! so tests can pause time), never from wall-clock times, so clock skew does not matter
//! after the assertion was accepted. A refusal of the token endpoint (`invalid_grant`: a
//! deleted or disabled key) is returned at once, and for [`REFUSAL_HOLD`] every caller
//! gets it again without a request; the background task tries again only every
//! [`BACKGROUND_REFUSAL_RETRY`]. A key that Google refuses is a configuration problem, and
//! asking again in a loop would only flood Google's audit log.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use ferry_adapter_kubernetes::BearerToken;
use serde::Deserialize;
use tokio::time::Instant;

use crate::credentials::{DEFAULT_SCOPES, ServiceAccountKey};
use crate::error::{ApiError, Error, Result};
use crate::http::{Reply, client, connection_error, form_encode};
use crate::secret::Secret;

/// How long before its expiry a token is replaced by default (cloud-apis §6).
pub const DEFAULT_RENEWAL_MARGIN: Duration = Duration::from_secs(5 * 60);
/// How long a refusal is returned to callers without asking again.
pub const REFUSAL_HOLD: Duration = Duration::from_secs(60);
/// How long the background task waits after a refusal before it asks again (a disabled
/// service account may be enabled again).
pub const BACKGROUND_REFUSAL_RETRY: Duration = Duration::from_secs(5 * 60);
/// The background task's waits after transient failures: doubling from the first, up to
/// the last.
const BACKGROUND_FIRST_RETRY: Duration = Duration::from_secs(2);
const BACKGROUND_MAX_RETRY: Duration = Duration::from_secs(60);
/// The background task never asks more often than this, whatever the lifetime.
const BACKGROUND_MIN_WAIT: Duration = Duration::from_secs(1);
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const SERVICE: &str = "oauth2";

/// An access token and when it is due.
pub struct AccessToken {
    value: Secret,
    expires_at: Instant,
    renew_at: Instant,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &self.value)
            .field(
                "expires_in",
                &self.expires_at.saturating_duration_since(Instant::now()),
            )
            .finish()
    }
}

impl AccessToken {
    /// A token received at `received`, valid for `lifetime`, renewed `margin` before it
    /// expires; a margin of more than half the lifetime renews at half-life, so that a
    /// short-lived token is not asked for again on every call.
    fn new(value: Secret, received: Instant, lifetime: Duration, margin: Duration) -> AccessToken {
        let early = lifetime.saturating_sub(margin).max(lifetime / 2);
        AccessToken {
            value,
            expires_at: received + lifetime,
            renew_at: received + early,
        }
    }

    /// For the `Authorization: Bearer` header.
    pub fn value(&self) -> &Secret {
        &self.value
    }

    pub fn is_due(&self, now: Instant) -> bool {
        now >= self.renew_at
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires_at
    }

    pub fn renew_at(&self) -> Instant {
        self.renew_at
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: u64,
    #[serde(default)]
    token_type: Option<String>,
}

/// What [`TokenSource::current`] reads without waiting.
#[derive(Default)]
struct Cached {
    token: Option<Arc<AccessToken>>,
    /// Why the last renewal failed, until one succeeds.
    last_error: Option<String>,
}

/// The last refusal: when, `error` and `error_description`.
struct Refusal {
    at: Instant,
    error: String,
    description: String,
}

/// Access tokens of one service account for one set of scopes. Share it (`Arc`) between
/// the GKE client, the Billing Catalog and the clusters' API clients, so that they share
/// its token.
pub struct TokenSource {
    http: reqwest::Client,
    key: ServiceAccountKey,
    scopes: String,
    margin: Duration,
    cached: RwLock<Cached>,
    /// Held while a token is requested, so that concurrent callers share one request.
    renewal: tokio::sync::Mutex<Option<Refusal>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("key", &self.key)
            .field("scopes", &self.scopes)
            .field("margin", &self.margin)
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    /// Tokens for `key` with [`DEFAULT_SCOPES`] from the key's `token_uri`; nothing is sent
    /// until a token is needed.
    pub fn new(key: ServiceAccountKey) -> Result<TokenSource> {
        let http = client(key.token_uri(), &format!("token_uri of {}", key.source()))?;
        Ok(TokenSource {
            http,
            key,
            scopes: DEFAULT_SCOPES.to_owned(),
            margin: DEFAULT_RENEWAL_MARGIN,
            cached: RwLock::new(Cached::default()),
            renewal: tokio::sync::Mutex::new(None),
        })
    }

    /// Renews tokens `margin` before they expire instead of [`DEFAULT_RENEWAL_MARGIN`].
    pub fn with_renewal_margin(mut self, margin: Duration) -> TokenSource {
        self.margin = margin;
        self
    }

    /// Space-separated scopes instead of [`DEFAULT_SCOPES`].
    pub fn with_scopes(mut self, scopes: &str) -> TokenSource {
        scopes.clone_into(&mut self.scopes);
        self
    }

    pub fn key(&self) -> &ServiceAccountKey {
        &self.key
    }

    fn cached(&self) -> Option<Arc<AccessToken>> {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        cached.token.clone()
    }

    /// The current token: the cached one until its renewal margin, then a new one. Callers
    /// that find it due together wait for one request and share its answer.
    pub async fn token(&self) -> Result<Arc<AccessToken>> {
        if let Some(token) = self.cached()
            && !token.is_due(Instant::now())
        {
            return Ok(token);
        }
        let mut refusal = self.renewal.lock().await;
        // Another caller may have renewed it while this one waited for the lock.
        if let Some(token) = self.cached()
            && !token.is_due(Instant::now())
        {
            return Ok(token);
        }
        if let Some(held) = refusal.as_ref()
            && held.at.elapsed() < REFUSAL_HOLD
        {
            return Err(self.refused(&held.error, &held.description));
        }
        let result = self.request().await;
        let mut cached = self.cached.write().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(token) => {
                *refusal = None;
                cached.token = Some(token.clone());
                cached.last_error = None;
                Ok(token)
            }
            Err(error) => {
                if let Error::TokenRefused {
                    error: code,
                    description,
                    ..
                } = &error
                {
                    *refusal = Some(Refusal {
                        at: Instant::now(),
                        error: code.clone(),
                        description: description.clone(),
                    });
                }
                cached.last_error = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// The cached token if it has not expired, without waiting or asking: what a request
    /// that must not block sends. Renewal is someone else's job ([`BackgroundToken`]).
    pub fn current(&self) -> std::result::Result<Secret, String> {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        match &cached.token {
            Some(token) if !token.is_expired(Instant::now()) => Ok(token.value.clone()),
            _ => Err(cached.last_error.clone().unwrap_or_else(|| {
                format!(
                    "no current Google access token for {}",
                    self.key.client_email()
                )
            })),
        }
    }

    fn refused(&self, error: &str, description: &str) -> Error {
        Error::TokenRefused {
            client_email: self.key.client_email().to_owned(),
            token_uri: self.key.token_uri().to_owned(),
            error: error.to_owned(),
            description: description.to_owned(),
        }
    }

    /// One exchange of a fresh assertion for a token.
    async fn request(&self) -> Result<Arc<AccessToken>> {
        let operation = "POST token";
        let assertion = self.key.assertion(&self.scopes, SystemTime::now())?;
        let body = format!(
            "grant_type={}&assertion={}",
            form_encode(GRANT_TYPE),
            form_encode(assertion.expose())
        );
        tracing::debug!(
            client_email = self.key.client_email(),
            token_uri = self.key.token_uri(),
            "requesting a Google access token"
        );
        let response = self
            .http
            .post(self.key.token_uri())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| connection_error(SERVICE, operation, &e))?;
        let received = Instant::now();
        let reply = Reply::read(response, SERVICE, operation).await?;
        if reply.status != 200 {
            let api = reply.api_error();
            return Err(self.classify(api));
        }
        let answer: TokenAnswer = reply.json()?;
        if answer
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(reply.invalid(format!(
                "token_type {:?}, not Bearer",
                answer.token_type.unwrap_or_default()
            )));
        }
        if answer.access_token.is_empty() {
            return Err(reply.invalid("an empty access_token".to_owned()));
        }
        let lifetime = Duration::from_secs(answer.expires_in);
        tracing::info!(
            client_email = self.key.client_email(),
            expires_in = answer.expires_in,
            "Google access token issued"
        );
        Ok(Arc::new(AccessToken::new(
            Secret::new(answer.access_token),
            received,
            lifetime,
            self.margin,
        )))
    }

    /// A 400 or 401 with an OAuth2 `error` code is a refusal of the key; everything else
    /// is classified as any API answer.
    fn classify(&self, api: ApiError) -> Error {
        match (&api.reason, api.status) {
            (Some(code), 400 | 401) => {
                tracing::warn!(client_email = self.key.client_email(),
                    token_uri = self.key.token_uri(), error = %code, message = %api.message,
                    "Google refused the service account's assertion");
                self.refused(code, &api.message)
            }
            _ => Error::from_status(api),
        }
    }

    /// A [`BearerToken`] for the Kubernetes adapter, with a first token already in it, kept
    /// fresh by a tokio task until the returned value is dropped. Fails when no first
    /// token can be had.
    pub async fn bearer(self: &Arc<Self>) -> Result<Arc<BackgroundToken>> {
        self.token().await?;
        let source = Arc::clone(self);
        let task = tokio::spawn(refresh_forever(Arc::clone(&source)));
        Ok(Arc::new(BackgroundToken {
            source,
            task: task.abort_handle(),
        }))
    }
}

/// Renews the token before each renewal time; after a failure, waits (doubling) and tries
/// again, and after a refusal waits [`BACKGROUND_REFUSAL_RETRY`].
async fn refresh_forever(source: Arc<TokenSource>) {
    let mut retry = BACKGROUND_FIRST_RETRY;
    loop {
        let wait_until = match source.token().await {
            Ok(token) => {
                retry = BACKGROUND_FIRST_RETRY;
                token.renew_at()
            }
            Err(error) => {
                let wait = if matches!(error, Error::TokenRefused { .. }) {
                    BACKGROUND_REFUSAL_RETRY
                } else {
                    let wait = retry;
                    retry = (retry * 2).min(BACKGROUND_MAX_RETRY);
                    wait
                };
                tracing::warn!(client_email = source.key.client_email(), %error,
                    retry_in_s = wait.as_secs(), "renewing the Google access token failed");
                Instant::now() + wait
            }
        };
        tokio::time::sleep_until(wait_until.max(Instant::now() + BACKGROUND_MIN_WAIT)).await;
    }
}

/// The cached token of a [`TokenSource`], renewed in the background; what
/// `ferry_adapter_kubernetes::Credentials::Endpoint` takes. Dropping it stops the renewal.
pub struct BackgroundToken {
    source: Arc<TokenSource>,
    task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for BackgroundToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackgroundToken")
            .field("client_email", &self.source.key.client_email())
            .finish_non_exhaustive()
    }
}

impl Drop for BackgroundToken {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BearerToken for BackgroundToken {
    fn current(&self) -> std::result::Result<String, String> {
        self.source.current().map(|s| s.expose().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_a_margin_before_expiry_but_never_before_half_life() {
        let now = Instant::now();
        let hour = Duration::from_secs(3600);
        let cases = [
            (hour, DEFAULT_RENEWAL_MARGIN, Duration::from_secs(3300)),
            (hour, Duration::ZERO, hour),
            (
                Duration::from_secs(600),
                Duration::from_secs(500),
                Duration::from_secs(300),
            ),
            (Duration::ZERO, DEFAULT_RENEWAL_MARGIN, Duration::ZERO),
        ];
        for (lifetime, margin, renew_after) in cases {
            let token = AccessToken::new(Secret::new("t"), now, lifetime, margin);
            assert_eq!(token.renew_at - now, renew_after, "{lifetime:?} {margin:?}");
            assert_eq!(token.expires_at - now, lifetime);
        }
        let token = AccessToken::new(Secret::new("ya29.secret"), now, hour, Duration::ZERO);
        assert!(!format!("{token:?}").contains("ya29"));
    }
}
