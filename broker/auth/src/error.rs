//! The two error types: [`AuthError`] for a request that is not authenticated, [`KeyError`]
//! for configuration, key files and minting.

use std::path::PathBuf;

/// Why a request is not authenticated.
///
/// The broker answers every variant with HTTP 401. The messages are meant for the caller:
/// they say precisely what is wrong but never repeat the token, a claim value or key
/// material. The only token-supplied text they may contain is an algorithm name or key
/// id, and only when it is short and made of name-like characters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header, or one with nothing in it.
    #[error("no bearer token: send `Authorization: Bearer <token>`")]
    MissingToken,
    /// An `Authorization` header with another scheme (Basic, a bare token, ...).
    #[error("the Authorization header must use the Bearer scheme: `Authorization: Bearer <token>`")]
    NotBearer,
    /// Not a well-formed JWS compact token; the text says which part is wrong.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not verify with the configured key.
    #[error("the token's signature does not verify with the broker's key")]
    BadSignature,
    /// The header names an algorithm other than the one pinned by the configured key.
    #[error(
        "the token is signed with {found}, but this broker accepts only {expected} for its key"
    )]
    WrongAlgorithm {
        /// The algorithm the configured key pins.
        expected: &'static str,
        /// The header's `alg` if it looks like a name, a placeholder otherwise.
        found: String,
    },
    /// `exp` lies in the past by more than the leeway.
    #[error("the token has expired")]
    Expired,
    /// `nbf` or `iat` lies in the future by more than the leeway.
    #[error("the token is not valid yet (its `nbf` or `iat` lies in the future)")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// `aud` does not name the configured audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// A claim the broker needs is absent, or of a JSON type that cannot be it (a string
    /// `exp`, say).
    #[error("the token lacks a usable `{0}` claim")]
    MissingClaim(&'static str),
    /// `roles` names none of viewer, operator, admin.
    #[error("the token carries no known role (viewer, operator or admin)")]
    NoKnownRole,
    /// The JWKS holds no key for the token. The broker may refetch the JWKS once: the
    /// provider may have rotated its keys.
    #[error("{}", unknown_key_message(.kid.as_deref()))]
    UnknownKey {
        /// The header's `kid` (a placeholder unless it looks like a name), or `None` when
        /// the header has none.
        kid: Option<String>,
    },
    /// The token is valid for longer than the broker allows (`exp - iat`, or `exp - now`
    /// for a token without `iat`): a token that never expires cannot be contained once it
    /// leaks.
    #[error(
        "the token is valid for {lifetime_secs} s, longer than the {max_secs} s this broker \
         accepts; mint one with a shorter lifetime"
    )]
    LifetimeTooLong {
        /// The lifetime the token claims, in seconds.
        lifetime_secs: u64,
        /// The broker's maximum, in seconds.
        max_secs: u64,
    },
}

fn unknown_key_message(kid: Option<&str>) -> String {
    match kid {
        Some(kid) => format!("no key in the broker's JWKS has the token's key id `{kid}`"),
        None => {
            "the token names no key id (`kid`) and the broker's JWKS holds several keys".to_owned()
        }
    }
}

impl AuthError {
    /// A short, stable machine code for the JSON error body and for logs.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "token_missing",
            AuthError::NotBearer => "not_bearer",
            AuthError::Malformed(_) => "token_malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::WrongAlgorithm { .. } => "wrong_algorithm",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::MissingClaim(_) => "claim_missing",
            AuthError::NoKnownRole => "no_known_role",
            AuthError::UnknownKey { .. } => "unknown_key",
            AuthError::LifetimeTooLong { .. } => "token_lifetime_too_long",
        }
    }

    /// The value for the 401 response's `WWW-Authenticate` header (RFC 6750 §3).
    ///
    /// A request without credentials gets the bare challenge, as §3.1 asks; everything
    /// else is `invalid_token` with this error's message as the description.
    pub fn www_authenticate(&self) -> String {
        match self {
            AuthError::MissingToken | AuthError::NotBearer => "Bearer".to_owned(),
            other => {
                // RFC 6750 allows only %x20-21 / %x23-5B / %x5D-7E in error_description.
                let description: String = other
                    .to_string()
                    .chars()
                    .filter(|c| matches!(c, ' '..='~') && *c != '"' && *c != '\\')
                    .collect();
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\"")
            }
        }
    }
}

/// Token-supplied text (an `alg` or `kid`) made fit for an error message: kept when it is
/// short and made of characters such names use, replaced otherwise, so that a crafted
/// header cannot smuggle a long blob or control characters into logs and responses.
pub(crate) fn printable(text: &str) -> String {
    let plain = text.len() <= 64
        && text.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '+' | '/' | '=')
        });
    if plain && !text.is_empty() {
        text.to_owned()
    } else {
        "(an unprintable name)".to_owned()
    }
}

/// A problem with keys or settings: a bad PEM or JWKS, the key file, or a token that cannot
/// be minted. These surface when the broker starts or when `ferry token create` runs, never
/// per request.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a key file (or `/dev/urandom`) failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done, e.g. "cannot read".
        action: &'static str,
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The HS256 key file exists but is too short to be a key this crate wrote.
    #[error(
        "{} holds {len} bytes, fewer than the 32 of an HS256 key; remove it to have a new key \
         generated (tokens signed with the old key then stop working)",
        .path.display()
    )]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// An HS256 key shorter than the hash output, which RFC 7518 §3.2 forbids.
    #[error("an HS256 key needs at least 32 bytes (RFC 7518 §3.2); this one has {len}")]
    WeakHs256Key {
        /// The key's length in bytes.
        len: usize,
    },
    /// The configured PEM is not a usable public key of the expected kind.
    #[error("the configured {expected} public key is unusable: {reason}")]
    BadPem {
        /// "RSA" or "P-256 (ES256)".
        expected: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The JWKS document cannot be used.
    #[error("the JWKS is unusable: {0}")]
    BadJwks(String),
    /// A setting that must not be empty is (the issuer, the audience, a token's subject).
    #[error("the {0} must not be empty")]
    EmptySetting(&'static str),
    /// A token was to be minted without any role; the verifier would reject it.
    #[error("a token needs at least one role")]
    NoRoles,
    /// The token would live longer than the maximum lifetime the verifier accepts.
    #[error(
        "a token may live at most {max_secs} s (the broker's maximum token lifetime); \
         {ttl_secs} s were asked"
    )]
    LifetimeTooLong {
        /// The lifetime asked for, in seconds.
        ttl_secs: u64,
        /// The maximum, in seconds.
        max_secs: u64,
    },
    /// jsonwebtoken could not sign the token.
    #[error("cannot sign the token: {0}")]
    Signing(String),
}
