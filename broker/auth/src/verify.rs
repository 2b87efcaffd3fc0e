//! Token verification: the configured key, the pinned algorithm, and the checks on claims.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::error::printable;
use crate::{
    AuthError, DEFAULT_MAX_LIFETIME_SECS, KeyError, LEEWAY_SECS, MIN_HS256_KEY_LEN, Principal,
    Role, now_unix,
};

/// Below this an RSA key is factorable with public effort; NIST has disallowed it since 2013.
const MIN_RSA_BITS: usize = 2048;

/// The key tokens are checked against, as configured.
#[derive(Clone)]
pub enum VerificationKey {
    /// The shared secret (usually from [`crate::load_or_create_hs256_key`]); pins HS256.
    Hs256(Vec<u8>),
    /// An RSA public key in PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`); pins RS256.
    Rs256PublicPem(String),
    /// A P-256 public key in PEM (`PUBLIC KEY`); pins ES256.
    Es256PublicPem(String),
    /// The text of a JWKS document, as fetched from an OIDC provider. Its RSA keys pin
    /// RS256 and its P-256 keys ES256, each for tokens naming that key's `kid`.
    Jwks(String),
}

impl fmt::Debug for VerificationKey {
    // The HS256 variant holds the secret; the others are public, but are kept out of logs too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            VerificationKey::Hs256(_) => "Hs256",
            VerificationKey::Rs256PublicPem(_) => "Rs256PublicPem",
            VerificationKey::Es256PublicPem(_) => "Es256PublicPem",
            VerificationKey::Jwks(_) => "Jwks",
        };
        f.debug_tuple(kind).field(&"[redacted]").finish()
    }
}

/// The algorithms this crate accepts, each tied to one kind of key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Hs256,
    Rs256,
    Es256,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Alg::Hs256 => jsonwebtoken::Algorithm::HS256,
            Alg::Rs256 => jsonwebtoken::Algorithm::RS256,
            Alg::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// One usable key and the algorithm it pins.
#[derive(Clone)]
struct PinnedKey {
    kid: Option<String>,
    alg: Alg,
    key: DecodingKey,
}

#[derive(Clone)]
enum Keys {
    Single(PinnedKey),
    Jwks(Vec<PinnedKey>),
}

/// Checks bearer tokens against one configured key, issuer and audience.
///
/// Build it once at startup (the keys are parsed and checked then) and share it; it is
/// cheap to clone. To take a refreshed JWKS, build a new one.
#[derive(Clone)]
pub struct Verifier {
    keys: Keys,
    issuer: String,
    audience: String,
    /// The longest lifetime a token may claim, in seconds.
    max_lifetime_secs: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithms: Vec<&str> = match &self.keys {
            Keys::Single(pinned) => vec![pinned.alg.name()],
            Keys::Jwks(keys) => keys.iter().map(|k| k.alg.name()).collect(),
        };
        f.debug_struct("Verifier")
            .field("algorithms", &algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("max_lifetime_secs", &self.max_lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Parses and checks `key` now, so that a bad key stops the broker at startup instead
    /// of failing every request.
    pub fn new(key: VerificationKey, issuer: &str, audience: &str) -> Result<Verifier, KeyError> {
        if issuer.is_empty() {
            return Err(KeyError::EmptySetting("issuer"));
        }
        if audience.is_empty() {
            return Err(KeyError::EmptySetting("audience"));
        }
        let keys = match key {
            VerificationKey::Hs256(secret) => {
                if secret.len() < MIN_HS256_KEY_LEN {
                    return Err(KeyError::WeakHs256Key { len: secret.len() });
                }
                Keys::Single(PinnedKey {
                    kid: None,
                    alg: Alg::Hs256,
                    key: DecodingKey::from_secret(&secret),
                })
            }
            VerificationKey::Rs256PublicPem(pem) => Keys::Single(rsa_from_pem(&pem)?),
            VerificationKey::Es256PublicPem(pem) => Keys::Single(ec_from_pem(&pem)?),
            VerificationKey::Jwks(text) => Keys::Jwks(parse_jwks(&text)?),
        };
        Ok(Verifier {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
        })
    }

    /// The same verifier, refusing tokens valid for longer than `max_lifetime_secs`
    /// (default [`DEFAULT_MAX_LIFETIME_SECS`]).
    #[must_use]
    pub fn with_max_lifetime(mut self, max_lifetime_secs: u64) -> Verifier {
        self.max_lifetime_secs = max_lifetime_secs;
        self
    }

    /// The longest lifetime a token may claim, in seconds.
    pub fn max_lifetime_secs(&self) -> u64 {
        self.max_lifetime_secs
    }

    /// Checks the raw `Authorization` header value (if the request had one) at the current
    /// time.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        self.verify_at(authorization, now_unix())
    }

    /// [`Verifier::verify`] at a given time (seconds since the Unix epoch), for tests and
    /// for callers with their own clock.
    pub fn verify_at(
        &self,
        authorization: Option<&str>,
        now_unix: u64,
    ) -> Result<Principal, AuthError> {
        let token = bearer_token(authorization)?;
        let header = read_structure(token)?;
        let pinned = self.select_key(&header)?;
        if header.alg != pinned.alg.name() {
            return Err(AuthError::WrongAlgorithm {
                expected: pinned.alg.name(),
                found: printable(&header.alg),
            });
        }

        // jsonwebtoken checks the signature (again refusing any algorithm but the pinned
        // one), the presence of the registered claims, `iss` and `aud`. Time is checked
        // below instead, against `now_unix`, because jsonwebtoken reads the system clock.
        let mut validation = Validation::new(pinned.alg.jwt());
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &pinned.key, &validation)
            .map_err(|error| from_jwt_error(error.into_kind(), pinned.alg, &header.alg))?
            .claims;

        check_time(&claims, now_unix, self.max_lifetime_secs)?;
        principal(&claims)
    }

    fn select_key(&self, header: &Header) -> Result<&PinnedKey, AuthError> {
        match &self.keys {
            Keys::Single(pinned) => Ok(pinned),
            Keys::Jwks(keys) => {
                let found = match &header.kid {
                    Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid.as_str())),
                    // Without a `kid` only a lone key is unambiguous.
                    None if keys.len() == 1 => keys.first(),
                    None => None,
                };
                found.ok_or_else(|| AuthError::UnknownKey {
                    kid: header.kid.as_deref().map(printable),
                })
            }
        }
    }
}

/// The token from `Authorization: Bearer <token>`. The scheme name is case-insensitive
/// (RFC 7235 §2.1).
fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(AuthError::MissingToken);
    }
    let (scheme, rest) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::NotBearer);
    }
    let token = rest.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

/// What the broker reads from the header before choosing a key.
struct Header {
    alg: String,
    kid: Option<String>,
}

fn malformed(what: &str) -> AuthError {
    AuthError::Malformed(what.to_owned())
}

/// Checks the token's shape before any key is involved, so that a malformed token is
/// reported as malformed whatever the key, and returns the parts of the header that
/// choose the key.
fn read_structure(token: &str) -> Result<Header, AuthError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(AuthError::Malformed(format!(
            "a JWT has three dot-separated parts, this token has {}",
            parts.len()
        )));
    };
    let header = json_object(header, "header")?;
    json_object(payload, "claims")?;
    URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| malformed("the signature segment is not base64url"))?;

    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(malformed("the header has no `alg` string")),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(malformed("the header's `kid` is not a string")),
    };
    // RFC 7515 §4.1.11: a recipient must reject a token whose critical extensions it does
    // not implement, and this crate implements none.
    if header.contains_key("crit") {
        return Err(malformed(
            "the header lists critical extensions (`crit`) the broker does not support",
        ));
    }
    Ok(Header { alg, kid })
}

fn json_object(segment: &str, part: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed(format!("the {part} segment is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(object)) => Ok(object),
        _ => Err(AuthError::Malformed(format!(
            "the {part} segment is not a JSON object"
        ))),
    }
}

fn from_jwt_error(kind: ErrorKind, pinned: Alg, header_alg: &str) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm {
            expected: pinned.name(),
            found: printable(header_alg),
        },
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim_name(&claim)),
        ErrorKind::InvalidClaimFormat(claim) => AuthError::Malformed(format!(
            "the `{}` claim has the wrong type",
            claim_name(&claim)
        )),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => malformed("the token is not a valid JWS"),
        // Key problems were ruled out when the verifier was built; whatever else jsonwebtoken
        // may report, the token did not verify, and failing closed is the only safe answer.
        _ => AuthError::BadSignature,
    }
}

/// jsonwebtoken names claims with strings; the error keeps static ones.
fn claim_name(claim: &str) -> &'static str {
    match claim {
        "exp" => "exp",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        "nbf" => "nbf",
        _ => "a registered",
    }
}

/// A JSON number as whole seconds; fractions are allowed by RFC 7519's NumericDate.
fn seconds(claims: &Map<String, Value>, claim: &'static str) -> Result<Option<u64>, AuthError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    if let Some(whole) = value.as_u64() {
        return Ok(Some(whole));
    }
    match value.as_f64() {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(fraction) if fraction >= 0.0 && fraction < u64::MAX as f64 => {
            Ok(Some(fraction as u64))
        }
        _ => Err(AuthError::Malformed(format!(
            "the `{claim}` claim is not a non-negative number of seconds"
        ))),
    }
}

/// The leeway absorbs clock drift between the token's issuer and the broker, in both
/// directions.
///
/// The lifetime is `exp - iat` when the token says when it was issued, `exp - now`
/// otherwise; both are checked when `iat` is present, so that a backdated `iat` does not
/// stretch a token beyond the maximum from now. The leeway is granted once on top of the
/// maximum, for the same drift.
fn check_time(claims: &Map<String, Value>, now: u64, max_lifetime: u64) -> Result<(), AuthError> {
    let exp = seconds(claims, "exp")?.ok_or(AuthError::MissingClaim("exp"))?;
    if exp.saturating_add(LEEWAY_SECS) < now {
        return Err(AuthError::Expired);
    }
    for claim in ["nbf", "iat"] {
        if let Some(start) = seconds(claims, claim)?
            && start > now.saturating_add(LEEWAY_SECS)
        {
            return Err(AuthError::NotYetValid);
        }
    }
    let allowed = max_lifetime.saturating_add(LEEWAY_SECS);
    let from_issue = seconds(claims, "iat")?.map(|iat| exp.saturating_sub(iat));
    let from_now = exp.saturating_sub(now);
    let lifetime = from_issue.map_or(from_now, |from_issue| from_issue.max(from_now));
    if lifetime > allowed {
        return Err(AuthError::LifetimeTooLong {
            lifetime_secs: lifetime,
            max_secs: max_lifetime,
        });
    }
    Ok(())
}

fn string_list(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<Vec<String>>, AuthError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let wrong_type =
        || AuthError::Malformed(format!("the `{claim}` claim must be a list of strings"));
    let items = value.as_array().ok_or_else(wrong_type)?;
    items
        .iter()
        .map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong_type))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn principal(claims: &Map<String, Value>) -> Result<Principal, AuthError> {
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        Some(Value::String(_)) => return Err(malformed("the `sub` claim is empty")),
        _ => return Err(AuthError::MissingClaim("sub")),
    };

    // Unknown names are skipped rather than refused: OIDC providers put every group the
    // user belongs to in such a claim, and most of them mean nothing to the broker.
    let role = string_list(claims, "roles")?
        .ok_or(AuthError::MissingClaim("roles"))?
        .iter()
        .filter_map(|name| name.parse::<Role>().ok())
        .max()
        .ok_or(AuthError::NoKnownRole)?;

    // An explicit `null` is refused rather than read as "absent": absent grants every
    // namespace, and a value that looks like "nothing" must not do that.
    if claims.get("namespaces") == Some(&Value::Null) {
        return Err(malformed(
            "the `namespaces` claim must be a list of strings (leave it out for all namespaces)",
        ));
    }
    let namespaces =
        string_list(claims, "namespaces")?.map(|list| list.into_iter().collect::<BTreeSet<_>>());

    Ok(Principal {
        subject,
        role,
        namespaces,
    })
}

/// Whether a PEM block is a private key: a useful hint, since a private key pasted where
/// the public one belongs would otherwise only be reported as "not a public key".
fn is_private_pem(pem: &str) -> bool {
    pem.contains("PRIVATE KEY-----")
}

fn rsa_from_pem(pem: &str) -> Result<PinnedKey, KeyError> {
    let bad = |reason: &str| KeyError::BadPem {
        expected: "RSA",
        reason: reason.to_owned(),
    };
    if is_private_pem(pem) {
        return Err(bad(
            "it is a private key; configure the public key (`openssl pkey -pubout`)",
        ));
    }
    let key = DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|e| bad(&format!("not an RSA public key in PEM form ({e})")))?;
    let der = key
        .try_get_as_bytes()
        .map_err(|_| bad("not an RSA public key in PEM form"))?;
    // The same parse jsonwebtoken's rust_crypto backend performs for every token.
    let public = <rsa::RsaPublicKey as rsa::pkcs1::DecodeRsaPublicKey>::from_pkcs1_der(der)
        .map_err(|e| bad(&format!("not an RSA public key ({e})")))?;
    check_rsa_size(&public).map_err(|reason| bad(&reason))?;
    Ok(PinnedKey {
        kid: None,
        alg: Alg::Rs256,
        key,
    })
}

fn check_rsa_size(public: &rsa::RsaPublicKey) -> Result<(), String> {
    let bits = rsa::traits::PublicKeyParts::n(public).bits();
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the modulus has {bits} bits, fewer than {MIN_RSA_BITS}"
        ));
    }
    Ok(())
}

fn ec_from_pem(pem: &str) -> Result<PinnedKey, KeyError> {
    let bad = |reason: &str| KeyError::BadPem {
        expected: "P-256 (ES256)",
        reason: reason.to_owned(),
    };
    if is_private_pem(pem) {
        return Err(bad(
            "it is a private key; configure the public key (`openssl pkey -pubout`)",
        ));
    }
    let key = DecodingKey::from_ec_pem(pem.as_bytes())
        .map_err(|e| bad(&format!("not an EC public key in PEM form ({e})")))?;
    let point = key
        .try_get_as_bytes()
        .map_err(|_| bad("not an EC public key in PEM form"))?;
    // The same parse jsonwebtoken's rust_crypto backend performs for every token; it also
    // refuses points of other curves (P-384 and so on).
    p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
        .map_err(|_| bad("not a point on the P-256 curve"))?;
    Ok(PinnedKey {
        kid: None,
        alg: Alg::Es256,
        key,
    })
}

/// Reads the keys of a JWKS that can verify RS256 or ES256 signatures.
///
/// Keys for other uses or algorithms (encryption keys, `oct`, Ed25519, P-384, PS256, ...)
/// are skipped: providers publish them side by side with the signing keys. A key of a
/// supported kind that is broken, by contrast, is an error, since silently dropping it
/// would only resurface as unexplained `unknown_key` rejections.
fn parse_jwks(text: &str) -> Result<Vec<PinnedKey>, KeyError> {
    let bad = |reason: String| KeyError::BadJwks(reason);
    let document: Value = serde_json::from_str(text).map_err(|e| bad(format!("not JSON ({e})")))?;
    let entries = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no `keys` array".to_owned()))?;

    let mut keys: Vec<PinnedKey> = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let at = |reason: &str| bad(format!("key #{index}: {reason}"));
        let jwk = entry.as_object().ok_or_else(|| at("not a JSON object"))?;
        let text_field = |name: &str| -> Result<Option<&str>, KeyError> {
            match jwk.get(name) {
                None => Ok(None),
                Some(Value::String(value)) => Ok(Some(value.as_str())),
                Some(_) => Err(at(&format!("`{name}` is not a string"))),
            }
        };
        let required = |name: &str| -> Result<&str, KeyError> {
            text_field(name)?.ok_or_else(|| at(&format!("`{name}` is missing")))
        };

        if text_field("use")?.is_some_and(|usage| usage != "sig") {
            continue;
        }
        let kid = text_field("kid")?.map(str::to_owned);
        let alg = text_field("alg")?;
        let pinned = match required("kty")? {
            "RSA" if alg.is_none_or(|alg| alg == "RS256") => {
                let n = base64url(required("n")?).map_err(|()| at("`n` is not base64url"))?;
                let e = base64url(required("e")?).map_err(|()| at("`e` is not base64url"))?;
                let public = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(&n),
                    rsa::BigUint::from_bytes_be(&e),
                )
                .map_err(|e| at(&format!("not a valid RSA public key ({e})")))?;
                check_rsa_size(&public).map_err(|reason| at(&reason))?;
                PinnedKey {
                    kid,
                    alg: Alg::Rs256,
                    key: DecodingKey::from_rsa_raw_components(&n, &e),
                }
            }
            "EC" if text_field("crv")? == Some("P-256") && alg.is_none_or(|alg| alg == "ES256") => {
                let x = base64url(required("x")?).map_err(|()| at("`x` is not base64url"))?;
                let y = base64url(required("y")?).map_err(|()| at("`y` is not base64url"))?;
                // RFC 7518 §6.2.1.2: the coordinates are full-length, 32 bytes for P-256.
                if x.len() != 32 || y.len() != 32 {
                    return Err(at("`x` and `y` must be 32 bytes each for P-256"));
                }
                let point: Vec<u8> = [&[0x04][..], &x, &y].concat();
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
                    .map_err(|_| at("not a point on the P-256 curve"))?;
                PinnedKey {
                    kid,
                    alg: Alg::Es256,
                    key: DecodingKey::from_ec_der(&point),
                }
            }
            _ => continue,
        };
        if let Some(kid) = &pinned.kid
            && keys.iter().any(|k| k.kid.as_ref() == Some(kid))
        {
            // Either key could be meant; picking one would make verification depend on order.
            return Err(at(&format!(
                "another key has the same kid `{}`",
                printable(kid)
            )));
        }
        keys.push(pinned);
    }
    if keys.is_empty() {
        return Err(bad("it holds no RS256 or ES256 signing key".to_owned()));
    }
    Ok(keys)
}

fn base64url(text: &str) -> Result<Vec<u8>, ()> {
    URL_SAFE_NO_PAD.decode(text).map_err(|_| ())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test reports failure by panicking")]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_tolerates_extra_spaces() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("BEARER   abc  ")), Ok("abc"));
        assert_eq!(bearer_token(Some("Bearer\tabc")), Ok("abc"));
    }

    #[test]
    fn bearer_rejects_other_schemes_and_empty_values() {
        assert_eq!(bearer_token(None), Err(AuthError::MissingToken));
        assert_eq!(bearer_token(Some("   ")), Err(AuthError::MissingToken));
        assert_eq!(bearer_token(Some("Bearer")), Err(AuthError::MissingToken));
        assert_eq!(
            bearer_token(Some("Bearer   ")),
            Err(AuthError::MissingToken)
        );
        assert_eq!(
            bearer_token(Some("Basic dXNlcjpwYXNz")),
            Err(AuthError::NotBearer)
        );
        assert_eq!(bearer_token(Some("Bearerabc")), Err(AuthError::NotBearer));
        assert_eq!(bearer_token(Some("abc.def.ghi")), Err(AuthError::NotBearer));
    }

    #[test]
    fn printable_keeps_names_and_hides_anything_else() {
        assert_eq!(printable("none"), "none");
        assert_eq!(printable("RS256"), "RS256");
        assert_eq!(printable("key-2024_01:a/b+c="), "key-2024_01:a/b+c=");
        for hostile in ["", "a\"b", "a\nb", "é", &"x".repeat(65)] {
            assert_eq!(printable(hostile), "(an unprintable name)", "{hostile:?}");
        }
    }

    #[test]
    fn fractional_times_are_whole_seconds_and_negative_ones_are_malformed() {
        let claims: Map<String, Value> =
            serde_json::from_str(r#"{"exp": 100.7, "nbf": -1}"#).unwrap();
        assert_eq!(seconds(&claims, "exp"), Ok(Some(100)));
        assert_eq!(seconds(&claims, "iat"), Ok(None));
        assert!(matches!(
            seconds(&claims, "nbf"),
            Err(AuthError::Malformed(_))
        ));
    }
}
