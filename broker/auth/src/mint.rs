//! Minting HS256 tokens, for `ferry token create` and `ferry demo`.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};

use crate::{DEFAULT_MAX_LIFETIME_SECS, KeyError, MIN_HS256_KEY_LEN, Role, now_unix};

/// The claims of a Ferry token, as minted. (Verification reads tokens more leniently,
/// e.g. an `aud` list from an OIDC provider; see [`crate::Verifier`].)
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    /// Who the token is for.
    pub sub: String,
    /// Role names; the highest known one counts.
    pub roles: Vec<String>,
    /// The namespaces the holder is limited to; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Vec<String>>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Issued at (seconds since the Unix epoch).
    pub iat: u64,
    /// Expires at (seconds since the Unix epoch).
    pub exp: u64,
}

/// Signs HS256 tokens with the broker's own key.
///
/// Only HS256: with RS256/ES256 the broker holds public keys only, and tokens come from
/// the identity provider.
#[derive(Clone)]
pub struct Minter {
    key: EncodingKey,
    key_len: usize,
    issuer: String,
    audience: String,
    /// The longest lifetime it mints, in seconds: that of the verifier that will check them.
    max_lifetime_secs: u64,
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Minter {
    /// A minter for tokens that a [`crate::Verifier`] built from the same key, issuer and
    /// audience accepts. The key is checked when minting, so that this cannot fail.
    pub fn new(hs256_key: Vec<u8>, issuer: &str, audience: &str) -> Minter {
        Minter {
            key: EncodingKey::from_secret(&hs256_key),
            key_len: hs256_key.len(),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
        }
    }

    /// The same minter, refusing lifetimes above `max_lifetime_secs` (default
    /// [`DEFAULT_MAX_LIFETIME_SECS`]); set it to the verifier's maximum.
    #[must_use]
    pub fn with_max_lifetime(mut self, max_lifetime_secs: u64) -> Minter {
        self.max_lifetime_secs = max_lifetime_secs;
        self
    }

    /// A token for `subject` with `roles`, limited to `namespaces` if given, valid for `ttl`
    /// from now.
    pub fn mint(
        &self,
        subject: &str,
        roles: &[Role],
        namespaces: Option<&[String]>,
        ttl: Duration,
    ) -> Result<String, KeyError> {
        self.mint_at(subject, roles, namespaces, ttl, now_unix())
    }

    /// [`Minter::mint`] as if the time were `now_unix` (seconds since the Unix epoch): for
    /// tests that need tokens that are already expired or not valid yet.
    pub fn mint_at(
        &self,
        subject: &str,
        roles: &[Role],
        namespaces: Option<&[String]>,
        ttl: Duration,
        now_unix: u64,
    ) -> Result<String, KeyError> {
        // The verifier would refuse all of these; better to say so now than to hand out a
        // token that never works.
        if self.key_len < MIN_HS256_KEY_LEN {
            return Err(KeyError::WeakHs256Key { len: self.key_len });
        }
        if self.issuer.is_empty() {
            return Err(KeyError::EmptySetting("issuer"));
        }
        if self.audience.is_empty() {
            return Err(KeyError::EmptySetting("audience"));
        }
        if subject.is_empty() {
            return Err(KeyError::EmptySetting("subject"));
        }
        if roles.is_empty() {
            return Err(KeyError::NoRoles);
        }
        if ttl.as_secs() > self.max_lifetime_secs {
            return Err(KeyError::LifetimeTooLong {
                ttl_secs: ttl.as_secs(),
                max_secs: self.max_lifetime_secs,
            });
        }
        let mut role_names: Vec<String> = roles.iter().map(|r| r.as_str().to_owned()).collect();
        role_names.sort();
        role_names.dedup();

        let claims = Claims {
            sub: subject.to_owned(),
            roles: role_names,
            namespaces: namespaces.map(<[String]>::to_vec),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now_unix,
            exp: now_unix.saturating_add(ttl.as_secs()),
        };
        jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.key,
        )
        .map_err(|e| KeyError::Signing(e.to_string()))
    }
}
