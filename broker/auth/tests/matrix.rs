//! The auth matrix: one table of tokens, each with the verifier it is shown to and the
//! outcome expected, plus the key-configuration errors and the minter round trip.

#![allow(clippy::unwrap_used, reason = "a test reports failure by panicking")]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_auth::{AuthError, KeyError, Minter, Role, VerificationKey, Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const ISS: &str = "https://ferry.test";
const AUD: &str = "ferry-broker";
const NOW: u64 = 1_750_000_000;
const HS_KEY: &[u8] = b"ferry-test-hs256-key-0123456789!";
const OTHER_HS_KEY: &[u8] = b"another-test-hs256-key-987654321";

fn testdata(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn base_claims() -> Value {
    json!({
        "sub": "alice",
        "roles": ["viewer"],
        "iss": ISS,
        "aud": AUD,
        "iat": NOW,
        "exp": NOW + 3600,
    })
}

/// The base claims with some changed (`Value::Null` in `changes` removes a claim).
fn claims(changes: Value) -> Value {
    let mut claims = base_claims();
    let object = claims.as_object_mut().unwrap();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            object.remove(name);
        } else {
            object.insert(name.clone(), value.clone());
        }
    }
    claims
}

/// The base claims with `claim` set to JSON `null` (which `claims` would remove).
fn with_null(claim: &str) -> Value {
    let mut claims = base_claims();
    claims[claim] = Value::Null;
    claims
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sign_with(header: Header, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    sign_with(header, key, claims)
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(HS_KEY),
        claims,
    )
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(testdata("rsa-private.pem").as_bytes()).unwrap()
}

fn other_rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(testdata("rsa-other-private.pem").as_bytes()).unwrap()
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(testdata("ec-private.pem").as_bytes()).unwrap()
}

/// A token with a hand-written header and the given signature segment.
fn hand_built(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string()),
        b64(claims.to_string())
    )
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[derive(Clone, Copy, Debug)]
enum Key {
    Hs256,
    Rs256,
    Es256,
    Jwks,
}

fn verifier(key: Key) -> Verifier {
    let key = match key {
        Key::Hs256 => VerificationKey::Hs256(HS_KEY.to_vec()),
        Key::Rs256 => VerificationKey::Rs256PublicPem(testdata("rsa-public.pem")),
        Key::Es256 => VerificationKey::Es256PublicPem(testdata("ec-public.pem")),
        Key::Jwks => VerificationKey::Jwks(testdata("jwks.json")),
    };
    Verifier::new(key, ISS, AUD).unwrap()
}

#[derive(Debug)]
enum Expect {
    Ok {
        role: Role,
        namespaces: Option<&'static [&'static str]>,
    },
    Err(&'static str),
}

use Expect::Err as Rejected;

fn accepted(role: Role) -> Expect {
    Expect::Ok {
        role,
        namespaces: None,
    }
}

struct Case {
    name: &'static str,
    key: Key,
    authorization: Option<String>,
    expect: Expect,
}

fn case(name: &'static str, key: Key, authorization: Option<String>, expect: Expect) -> Case {
    Case {
        name,
        key,
        authorization,
        expect,
    }
}

fn cases() -> Vec<Case> {
    use Key::{Es256, Hs256, Jwks, Rs256};
    let viewer = hs256(&base_claims());
    let [viewer_header, _, viewer_signature] = viewer.split('.').collect::<Vec<_>>()[..] else {
        unreachable!()
    };
    let admin_payload = b64(claims(json!({"roles": ["admin"]})).to_string());
    let rsa_public_pem = testdata("rsa-public.pem");
    let none_header = json!({"alg": "none", "typ": "JWT"});

    vec![
        // The three roles, and how a token's role is derived from its `roles`.
        case(
            "valid viewer",
            Hs256,
            bearer(&viewer),
            accepted(Role::Viewer),
        ),
        case(
            "valid operator",
            Hs256,
            bearer(&hs256(&claims(json!({"roles": ["operator"]})))),
            accepted(Role::Operator),
        ),
        case(
            "valid admin",
            Hs256,
            bearer(&hs256(&claims(json!({"roles": ["admin"]})))),
            accepted(Role::Admin),
        ),
        case(
            "highest of several roles counts",
            Hs256,
            bearer(&hs256(&claims(
                json!({"roles": ["viewer", "admin", "operator"]}),
            ))),
            accepted(Role::Admin),
        ),
        case(
            "unknown role names are ignored",
            Hs256,
            bearer(&hs256(&claims(
                json!({"roles": ["superuser", "operator", "devs"]}),
            ))),
            accepted(Role::Operator),
        ),
        case(
            "no known role",
            Hs256,
            bearer(&hs256(&claims(json!({"roles": ["superuser", "Admin"]})))),
            Rejected("no_known_role"),
        ),
        case(
            "empty roles",
            Hs256,
            bearer(&hs256(&claims(json!({"roles": []})))),
            Rejected("no_known_role"),
        ),
        case(
            "roles claim absent",
            Hs256,
            bearer(&hs256(&claims(json!({"roles": null})))),
            Rejected("claim_missing"),
        ),
        case(
            "roles is a string, not a list",
            Hs256,
            bearer(&hs256(&claims(json!({"roles": "admin"})))),
            Rejected("token_malformed"),
        ),
        case(
            "roles holds a non-string",
            Hs256,
            bearer(&hs256(&claims(json!({"roles": ["admin", 1]})))),
            Rejected("token_malformed"),
        ),
        // Namespace scopes.
        case(
            "namespaces present",
            Hs256,
            bearer(&hs256(&claims(
                json!({"roles": ["operator"], "namespaces": ["team-a", "team-b"]}),
            ))),
            Expect::Ok {
                role: Role::Operator,
                namespaces: Some(&["team-a", "team-b"]),
            },
        ),
        case(
            "namespaces empty means none",
            Hs256,
            bearer(&hs256(&claims(json!({"namespaces": []})))),
            Expect::Ok {
                role: Role::Viewer,
                namespaces: Some(&[]),
            },
        ),
        case(
            "namespaces null is refused, not read as all",
            Hs256,
            bearer(&hs256(&with_null("namespaces"))),
            Rejected("token_malformed"),
        ),
        case(
            "namespaces is a string",
            Hs256,
            bearer(&hs256(&claims(json!({"namespaces": "team-a"})))),
            Rejected("token_malformed"),
        ),
        // The Authorization header itself.
        case("no header", Hs256, None, Rejected("token_missing")),
        case(
            "empty header",
            Hs256,
            Some(String::new()),
            Rejected("token_missing"),
        ),
        case(
            "Bearer without a token",
            Hs256,
            Some("Bearer ".into()),
            Rejected("token_missing"),
        ),
        case(
            "Basic scheme",
            Hs256,
            Some("Basic YWxpY2U6c2VjcmV0".into()),
            Rejected("not_bearer"),
        ),
        case(
            "token without a scheme",
            Hs256,
            Some(viewer.clone()),
            Rejected("not_bearer"),
        ),
        case(
            "scheme name is case-insensitive",
            Hs256,
            Some(format!("bearer {viewer}")),
            accepted(Role::Viewer),
        ),
        // Malformed tokens.
        case(
            "garbage",
            Hs256,
            bearer("not-a-jwt"),
            Rejected("token_malformed"),
        ),
        case(
            "two segments",
            Hs256,
            bearer(&format!(
                "{viewer_header}.{}",
                b64(base_claims().to_string())
            )),
            Rejected("token_malformed"),
        ),
        case(
            "five segments (a JWE)",
            Hs256,
            bearer(&format!("{viewer}.a.b")),
            Rejected("token_malformed"),
        ),
        case(
            "bad base64 in the header",
            Hs256,
            bearer(&format!("!!!.{admin_payload}.{viewer_signature}")),
            Rejected("token_malformed"),
        ),
        case(
            "bad base64 in the claims",
            Hs256,
            bearer(&format!("{viewer_header}.@@@.{viewer_signature}")),
            Rejected("token_malformed"),
        ),
        case(
            "bad base64 in the signature",
            Hs256,
            bearer(&format!("{viewer_header}.{admin_payload}.%%%")),
            Rejected("token_malformed"),
        ),
        case(
            "header is not JSON",
            Hs256,
            bearer(&format!(
                "{}.{admin_payload}.{viewer_signature}",
                b64("hello")
            )),
            Rejected("token_malformed"),
        ),
        case(
            "header without alg",
            Hs256,
            bearer(&hand_built(
                &json!({"typ": "JWT"}),
                &base_claims(),
                viewer_signature,
            )),
            Rejected("token_malformed"),
        ),
        case(
            "header with critical extensions",
            Hs256,
            bearer(&sign_with(
                Header {
                    crit: Some(vec!["exp".into()]),
                    ..Header::new(Algorithm::HS256)
                },
                &EncodingKey::from_secret(HS_KEY),
                &base_claims(),
            )),
            Rejected("token_malformed"),
        ),
        // Signatures and algorithms.
        case(
            "signed with another HS256 key",
            Hs256,
            bearer(&sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(OTHER_HS_KEY),
                &base_claims(),
            )),
            Rejected("bad_signature"),
        ),
        case(
            "claims changed after signing",
            Hs256,
            bearer(&format!(
                "{viewer_header}.{admin_payload}.{viewer_signature}"
            )),
            Rejected("bad_signature"),
        ),
        case(
            "alg none with an empty signature",
            Hs256,
            bearer(&hand_built(
                &none_header,
                &claims(json!({"roles": ["admin"]})),
                "",
            )),
            Rejected("wrong_algorithm"),
        ),
        case(
            "alg None (other spelling)",
            Hs256,
            bearer(&hand_built(&json!({"alg": "None"}), &base_claims(), "")),
            Rejected("wrong_algorithm"),
        ),
        case(
            "HS512 with the right secret (pinned to HS256, not the family)",
            Hs256,
            bearer(&sign(
                Algorithm::HS512,
                None,
                &EncodingKey::from_secret(HS_KEY),
                &base_claims(),
            )),
            Rejected("wrong_algorithm"),
        ),
        case(
            "RS256 token to the HS256 verifier",
            Hs256,
            bearer(&sign(Algorithm::RS256, None, &rsa_key(), &base_claims())),
            Rejected("wrong_algorithm"),
        ),
        // Time.
        case(
            "expired beyond the leeway",
            Hs256,
            bearer(&hs256(&claims(json!({"iat": NOW - 3600, "exp": NOW - 61})))),
            Rejected("token_expired"),
        ),
        case(
            "expired within the leeway",
            Hs256,
            bearer(&hs256(&claims(json!({"iat": NOW - 3600, "exp": NOW - 60})))),
            accepted(Role::Viewer),
        ),
        case(
            "exp absent",
            Hs256,
            bearer(&hs256(&claims(json!({"exp": null})))),
            Rejected("claim_missing"),
        ),
        case(
            "exp is not a number",
            Hs256,
            bearer(&hs256(&claims(json!({"exp": "tomorrow"})))),
            Rejected("claim_missing"),
        ),
        case(
            "nbf beyond the leeway",
            Hs256,
            bearer(&hs256(&claims(json!({"nbf": NOW + 61})))),
            Rejected("token_not_yet_valid"),
        ),
        case(
            "nbf within the leeway",
            Hs256,
            bearer(&hs256(&claims(json!({"nbf": NOW + 60})))),
            accepted(Role::Viewer),
        ),
        case(
            "issued in the future",
            Hs256,
            bearer(&hs256(&claims(
                json!({"iat": NOW + 600, "exp": NOW + 4200}),
            ))),
            Rejected("token_not_yet_valid"),
        ),
        // Issuer, audience, subject.
        case(
            "wrong aud",
            Hs256,
            bearer(&hs256(&claims(json!({"aud": "some-other-service"})))),
            Rejected("wrong_audience"),
        ),
        case(
            "aud list that names the broker",
            Hs256,
            bearer(&hs256(&claims(json!({"aud": ["some-other-service", AUD]})))),
            accepted(Role::Viewer),
        ),
        case(
            "aud list that does not name the broker",
            Hs256,
            bearer(&hs256(&claims(json!({"aud": ["some-other-service"]})))),
            Rejected("wrong_audience"),
        ),
        case(
            "aud absent",
            Hs256,
            bearer(&hs256(&claims(json!({"aud": null})))),
            Rejected("claim_missing"),
        ),
        case(
            "wrong iss",
            Hs256,
            bearer(&hs256(&claims(json!({"iss": "https://evil.test"})))),
            Rejected("wrong_issuer"),
        ),
        case(
            "iss absent",
            Hs256,
            bearer(&hs256(&claims(json!({"iss": null})))),
            Rejected("claim_missing"),
        ),
        case(
            "sub absent",
            Hs256,
            bearer(&hs256(&claims(json!({"sub": null})))),
            Rejected("claim_missing"),
        ),
        case(
            "sub empty",
            Hs256,
            bearer(&hs256(&claims(json!({"sub": ""})))),
            Rejected("token_malformed"),
        ),
        // RS256 with a public PEM.
        case(
            "RS256 valid admin",
            Rs256,
            bearer(&sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &claims(json!({"roles": ["admin"]})),
            )),
            accepted(Role::Admin),
        ),
        case(
            "RS256 signed with another RSA key",
            Rs256,
            bearer(&sign(
                Algorithm::RS256,
                None,
                &other_rsa_key(),
                &base_claims(),
            )),
            Rejected("bad_signature"),
        ),
        case(
            "HS256 keyed with the RSA public key (algorithm confusion)",
            Rs256,
            bearer(&sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(rsa_public_pem.as_bytes()),
                &claims(json!({"roles": ["admin"]})),
            )),
            Rejected("wrong_algorithm"),
        ),
        case(
            "alg none to the RS256 verifier",
            Rs256,
            bearer(&hand_built(
                &none_header,
                &claims(json!({"roles": ["admin"]})),
                "",
            )),
            Rejected("wrong_algorithm"),
        ),
        case(
            "PS256 with the right RSA key (same family, other algorithm)",
            Rs256,
            bearer(&sign(Algorithm::PS256, None, &rsa_key(), &base_claims())),
            Rejected("wrong_algorithm"),
        ),
        case(
            "RS256 carrying its own key in the header (jwk is ignored)",
            Rs256,
            bearer(&sign_with(
                Header {
                    jwk: Some(
                        jsonwebtoken::jwk::Jwk::from_encoding_key(
                            &other_rsa_key(),
                            Algorithm::RS256,
                        )
                        .unwrap(),
                    ),
                    ..Header::new(Algorithm::RS256)
                },
                &other_rsa_key(),
                &claims(json!({"roles": ["admin"]})),
            )),
            Rejected("bad_signature"),
        ),
        case(
            "RS256 expired beyond the leeway",
            Rs256,
            bearer(&sign(
                Algorithm::RS256,
                None,
                &rsa_key(),
                &claims(json!({"exp": NOW - 61})),
            )),
            Rejected("token_expired"),
        ),
        // ES256 with a public PEM.
        case(
            "ES256 valid operator",
            Es256,
            bearer(&sign(
                Algorithm::ES256,
                None,
                &ec_key(),
                &claims(json!({"roles": ["operator"]})),
            )),
            accepted(Role::Operator),
        ),
        case(
            "RS256 token to the ES256 verifier",
            Es256,
            bearer(&sign(Algorithm::RS256, None, &rsa_key(), &base_claims())),
            Rejected("wrong_algorithm"),
        ),
        case(
            "ES256 with the signature's last byte changed",
            Es256,
            bearer(&{
                let token = sign(Algorithm::ES256, None, &ec_key(), &base_claims());
                let (signed, signature) = token.rsplit_once('.').unwrap();
                let mut raw = URL_SAFE_NO_PAD.decode(signature).unwrap();
                *raw.last_mut().unwrap() ^= 1;
                format!("{signed}.{}", b64(raw))
            }),
            Rejected("bad_signature"),
        ),
        case(
            "ES256 wrong issuer",
            Es256,
            bearer(&sign(
                Algorithm::ES256,
                None,
                &ec_key(),
                &claims(json!({"iss": "https://evil.test"})),
            )),
            Rejected("wrong_issuer"),
        ),
        // JWKS: the key is chosen by kid, and pins its own algorithm.
        case(
            "JWKS RSA key by kid",
            Jwks,
            bearer(&sign(
                Algorithm::RS256,
                Some("ferry-test-rsa"),
                &rsa_key(),
                &claims(json!({"roles": ["admin"]})),
            )),
            accepted(Role::Admin),
        ),
        case(
            "JWKS EC key by kid",
            Jwks,
            bearer(&sign(
                Algorithm::ES256,
                Some("ferry-test-ec"),
                &ec_key(),
                &base_claims(),
            )),
            accepted(Role::Viewer),
        ),
        case(
            "JWKS unknown kid",
            Jwks,
            bearer(&sign(
                Algorithm::RS256,
                Some("rotated-away"),
                &rsa_key(),
                &base_claims(),
            )),
            Rejected("unknown_key"),
        ),
        case(
            "JWKS no kid with several keys",
            Jwks,
            bearer(&sign(Algorithm::RS256, None, &rsa_key(), &base_claims())),
            Rejected("unknown_key"),
        ),
        case(
            "JWKS right kid, signed with another RSA key",
            Jwks,
            bearer(&sign(
                Algorithm::RS256,
                Some("ferry-test-rsa"),
                &other_rsa_key(),
                &base_claims(),
            )),
            Rejected("bad_signature"),
        ),
        case(
            "JWKS RSA kid on an ES256 token",
            Jwks,
            bearer(&sign(
                Algorithm::ES256,
                Some("ferry-test-rsa"),
                &ec_key(),
                &base_claims(),
            )),
            Rejected("wrong_algorithm"),
        ),
        case(
            "JWKS EC kid on an HS256 token keyed with the kid",
            Jwks,
            bearer(&sign(
                Algorithm::HS256,
                Some("ferry-test-ec"),
                &EncodingKey::from_secret(b"ferry-test-ec"),
                &base_claims(),
            )),
            Rejected("wrong_algorithm"),
        ),
        case(
            "JWKS alg none with a known kid",
            Jwks,
            bearer(&hand_built(
                &json!({"alg": "none", "typ": "JWT", "kid": "ferry-test-rsa"}),
                &claims(json!({"roles": ["admin"]})),
                "",
            )),
            Rejected("wrong_algorithm"),
        ),
        case(
            "JWKS kid that is not a string",
            Jwks,
            bearer(&hand_built(
                &json!({"alg": "RS256", "kid": 7}),
                &base_claims(),
                "",
            )),
            Rejected("token_malformed"),
        ),
    ]
}

#[test]
fn auth_matrix() {
    let verifiers = [Key::Hs256, Key::Rs256, Key::Es256, Key::Jwks].map(verifier);
    let mut failures = Vec::new();
    let all = cases();
    for case in &all {
        let result = verifiers[case.key as usize].verify_at(case.authorization.as_deref(), NOW);
        let outcome = match (&case.expect, &result) {
            (Expect::Ok { role, namespaces }, Ok(principal)) => {
                let namespaces = namespaces.map(|list| {
                    list.iter()
                        .map(|ns| (*ns).to_owned())
                        .collect::<BTreeSet<_>>()
                });
                if principal.subject == "alice"
                    && principal.role == *role
                    && principal.namespaces == namespaces
                {
                    Ok(())
                } else {
                    Err(format!("accepted as {principal:?}"))
                }
            }
            (Expect::Err(code), Err(error)) if error.code() == *code => check_message(case, error),
            (_, result) => Err(format!("got {result:?}")),
        };
        if let Err(problem) = outcome {
            failures.push(format!(
                "{} ({:?}): expected {:?}, {problem}",
                case.name, case.key, case.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// The message must not echo the token: no segment of it longer than a few characters.
fn check_message(case: &Case, error: &AuthError) -> Result<(), String> {
    let message = error.to_string();
    let header = error.www_authenticate();
    let token = case.authorization.as_deref().unwrap_or_default();
    for piece in token.split(['.', ' ']).filter(|piece| piece.len() > 8) {
        if message.contains(piece) || header.contains(piece) {
            return Err(format!("message {message:?} repeats part of the token"));
        }
    }
    if !header.starts_with("Bearer") {
        return Err(format!("WWW-Authenticate {header:?}"));
    }
    Ok(())
}

#[test]
fn jwks_with_one_key_matches_tokens_without_kid() {
    let jwks: Value = serde_json::from_str(&testdata("jwks.json")).unwrap();
    let mut rsa = jwks["keys"][0].clone();
    rsa.as_object_mut().unwrap().remove("kid");
    let verifier = Verifier::new(
        VerificationKey::Jwks(json!({"keys": [rsa]}).to_string()),
        ISS,
        AUD,
    )
    .unwrap();

    let token = sign(Algorithm::RS256, None, &rsa_key(), &base_claims());
    assert_eq!(
        verifier
            .verify_at(bearer(&token).as_deref(), NOW)
            .unwrap()
            .role,
        Role::Viewer
    );
    // A kid the JWKS does not list still finds nothing: kids are matched, not guessed.
    let token = sign(
        Algorithm::RS256,
        Some("some-kid"),
        &rsa_key(),
        &base_claims(),
    );
    let error = verifier
        .verify_at(bearer(&token).as_deref(), NOW)
        .unwrap_err();
    assert_eq!(
        error,
        AuthError::UnknownKey {
            kid: Some("some-kid".into())
        }
    );
}

#[test]
fn jwks_skips_keys_it_cannot_use() {
    let jwks: Value = serde_json::from_str(&testdata("jwks.json")).unwrap();
    let rsa = &jwks["keys"][0];
    let as_kid = |kid: &str, changes: Value| {
        let mut key = rsa.clone();
        key["kid"] = kid.into();
        for (name, value) in changes.as_object().unwrap() {
            key[name] = value.clone();
        }
        key
    };
    let document = json!({"keys": [
        as_kid("encryption", json!({"use": "enc", "alg": "RSA-OAEP"})),
        as_kid("pss", json!({"alg": "PS256"})),
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
        {"kty": "EC", "kid": "p384", "crv": "P-384", "x": "AA", "y": "AA"},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AA"},
        rsa,
    ]});
    let verifier = Verifier::new(VerificationKey::Jwks(document.to_string()), ISS, AUD).unwrap();
    let good = sign(
        Algorithm::RS256,
        Some("ferry-test-rsa"),
        &rsa_key(),
        &base_claims(),
    );
    assert!(verifier.verify_at(bearer(&good).as_deref(), NOW).is_ok());
    for skipped in ["encryption", "pss", "secret", "p384", "ed"] {
        let token = sign(Algorithm::RS256, Some(skipped), &rsa_key(), &base_claims());
        let error = verifier
            .verify_at(bearer(&token).as_deref(), NOW)
            .unwrap_err();
        assert_eq!(error.code(), "unknown_key", "{skipped}");
    }
}

#[test]
fn unknown_kid_is_named_only_when_printable() {
    let verifier = verifier(Key::Jwks);
    let hostile = "k\"ey\n".repeat(3);
    let token = sign(Algorithm::RS256, Some(&hostile), &rsa_key(), &base_claims());
    let error = verifier
        .verify_at(bearer(&token).as_deref(), NOW)
        .unwrap_err();
    assert_eq!(
        error,
        AuthError::UnknownKey {
            kid: Some("(an unprintable name)".into())
        }
    );
    assert!(!error.www_authenticate().contains('\n'));
}

#[test]
fn bad_configurations_fail_when_the_verifier_is_built() {
    let rsa_public = testdata("rsa-public.pem");
    let ec_public = testdata("ec-public.pem");
    let jwks: Value = serde_json::from_str(&testdata("jwks.json")).unwrap();
    let rsa_jwk = jwks["keys"][0].clone();
    let ec_jwk = jwks["keys"][1].clone();
    // `Value::Null` removes the member.
    let with = |key: &Value, name: &str, value: Value| {
        let mut key = key.clone();
        if value.is_null() {
            key.as_object_mut().unwrap().remove(name);
        } else {
            key[name] = value;
        }
        key
    };
    let jwks_of = |keys: Vec<Value>| VerificationKey::Jwks(json!({"keys": keys}).to_string());

    type Check = fn(&KeyError) -> bool;
    let bad_pem: Check = |e| matches!(e, KeyError::BadPem { .. });
    let bad_jwks: Check = |e| matches!(e, KeyError::BadJwks(_));
    let table: Vec<(&str, VerificationKey, &str, Check)> = vec![
        (
            "HS256 key of 31 bytes",
            VerificationKey::Hs256(vec![7; 31]),
            AUD,
            |e| matches!(e, KeyError::WeakHs256Key { len: 31 }),
        ),
        (
            "RS256 garbage",
            VerificationKey::Rs256PublicPem("not a pem".into()),
            AUD,
            bad_pem,
        ),
        (
            "RS256 given the EC key",
            VerificationKey::Rs256PublicPem(ec_public.clone()),
            AUD,
            bad_pem,
        ),
        (
            "RS256 given the private key",
            VerificationKey::Rs256PublicPem(testdata("rsa-private.pem")),
            AUD,
            bad_pem,
        ),
        (
            "ES256 given the RSA key",
            VerificationKey::Es256PublicPem(rsa_public.clone()),
            AUD,
            bad_pem,
        ),
        (
            "ES256 given the private key",
            VerificationKey::Es256PublicPem(testdata("ec-private.pem")),
            AUD,
            bad_pem,
        ),
        (
            "JWKS not JSON",
            VerificationKey::Jwks("{keys".into()),
            AUD,
            bad_jwks,
        ),
        (
            "JWKS without keys",
            VerificationKey::Jwks("{}".into()),
            AUD,
            bad_jwks,
        ),
        (
            "JWKS with only a secret",
            jwks_of(vec![json!({"kty": "oct", "k": "c2VjcmV0"})]),
            AUD,
            bad_jwks,
        ),
        (
            "JWKS duplicate kid",
            jwks_of(vec![rsa_jwk.clone(), rsa_jwk.clone()]),
            AUD,
            bad_jwks,
        ),
        (
            "JWKS RSA n not base64url",
            jwks_of(vec![with(&rsa_jwk, "n", "a+b/".into())]),
            AUD,
            bad_jwks,
        ),
        (
            "JWKS RSA without e",
            jwks_of(vec![with(&rsa_jwk, "e", Value::Null)]),
            AUD,
            bad_jwks,
        ),
        (
            "JWKS RSA 1024-bit modulus",
            jwks_of(vec![with(&rsa_jwk, "n", b64([0xC7; 128]).into())]),
            AUD,
            bad_jwks,
        ),
        (
            "JWKS EC short x",
            jwks_of(vec![with(&ec_jwk, "x", b64([1; 31]).into())]),
            AUD,
            bad_jwks,
        ),
        (
            "JWKS EC point off the curve",
            jwks_of(vec![with(&ec_jwk, "y", b64([1; 32]).into())]),
            AUD,
            bad_jwks,
        ),
        (
            "empty audience",
            VerificationKey::Hs256(HS_KEY.to_vec()),
            "",
            |e| matches!(e, KeyError::EmptySetting("audience")),
        ),
    ];
    for (name, key, audience, check) in table {
        match Verifier::new(key, ISS, audience) {
            Ok(_) => panic!("{name}: accepted"),
            Err(error) => assert!(check(&error), "{name}: {error:?}"),
        }
    }
    assert!(matches!(
        Verifier::new(VerificationKey::Hs256(HS_KEY.to_vec()), "", AUD),
        Err(KeyError::EmptySetting("issuer"))
    ));
}

#[test]
fn private_key_errors_do_not_repeat_the_key() {
    let private = testdata("rsa-private.pem");
    let error =
        Verifier::new(VerificationKey::Rs256PublicPem(private.clone()), ISS, AUD).unwrap_err();
    let body: String = private.lines().nth(1).unwrap().to_owned();
    assert!(!error.to_string().contains(&body), "{error}");
    assert!(error.to_string().contains("private key"), "{error}");
}

#[test]
fn debug_output_hides_keys() {
    let shown = format!(
        "{:?} {:?} {:?}",
        verifier(Key::Hs256),
        VerificationKey::Hs256(HS_KEY.to_vec()),
        Minter::new(HS_KEY.to_vec(), ISS, AUD)
    );
    assert!(!shown.contains("ferry-test-hs256"), "{shown}");
    assert!(!shown.contains(&format!("{:?}", &HS_KEY[..4])), "{shown}");
}

#[test]
fn minted_tokens_verify_and_carry_the_contract_claims() {
    let minter = Minter::new(HS_KEY.to_vec(), ISS, AUD);
    let verifier = verifier(Key::Hs256);
    let namespaces = ["team-a".to_owned(), "team-b".to_owned()];
    let ttl = Duration::from_secs(900);
    let token = minter
        .mint_at(
            "ci-bot",
            &[Role::Viewer, Role::Operator, Role::Viewer],
            Some(&namespaces),
            ttl,
            NOW,
        )
        .unwrap();

    let principal = verifier.verify_at(bearer(&token).as_deref(), NOW).unwrap();
    assert_eq!(principal.subject, "ci-bot");
    assert_eq!(principal.role, Role::Operator);
    assert!(principal.sees_namespace("team-b") && !principal.sees_namespace("team-c"));

    let payload = token.split('.').nth(1).unwrap();
    let claims: ferry_auth::Claims =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(
        claims,
        ferry_auth::Claims {
            sub: "ci-bot".into(),
            roles: vec!["operator".into(), "viewer".into()],
            namespaces: Some(namespaces.to_vec()),
            iss: ISS.into(),
            aud: AUD.into(),
            iat: NOW,
            exp: NOW + 900,
        }
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));

    // The lifetime ends at exp plus the leeway.
    assert!(
        verifier
            .verify_at(bearer(&token).as_deref(), NOW + 900 + 60)
            .is_ok()
    );
    assert_eq!(
        verifier
            .verify_at(bearer(&token).as_deref(), NOW + 900 + 61)
            .unwrap_err(),
        AuthError::Expired
    );
}

#[test]
fn minted_tokens_without_namespaces_see_everything() {
    let minter = Minter::new(HS_KEY.to_vec(), ISS, AUD);
    let token = minter
        .mint("admin", &[Role::Admin], None, Duration::from_secs(60))
        .unwrap();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(payload.get("namespaces").is_none(), "{payload}");
    // Real clock on both sides.
    let principal = verifier(Key::Hs256)
        .verify(bearer(&token).as_deref())
        .unwrap();
    assert!(principal.has(Role::Admin) && principal.sees_namespace("anything"));
}

#[test]
fn minting_refuses_tokens_the_verifier_would_reject() {
    let ttl = Duration::from_secs(60);
    let minter = Minter::new(HS_KEY.to_vec(), ISS, AUD);
    assert!(matches!(
        minter.mint("alice", &[], None, ttl),
        Err(KeyError::NoRoles)
    ));
    assert!(matches!(
        minter.mint("", &[Role::Admin], None, ttl),
        Err(KeyError::EmptySetting("subject"))
    ));
    let weak = Minter::new(b"secret".to_vec(), ISS, AUD);
    assert!(matches!(
        weak.mint("alice", &[Role::Admin], None, ttl),
        Err(KeyError::WeakHs256Key { len: 6 })
    ));
}

#[test]
fn tokens_for_another_broker_are_refused() {
    let token = Minter::new(HS_KEY.to_vec(), ISS, "other-broker")
        .mint_at("alice", &[Role::Admin], None, Duration::from_secs(60), NOW)
        .unwrap();
    let error = verifier(Key::Hs256)
        .verify_at(bearer(&token).as_deref(), NOW)
        .unwrap_err();
    assert_eq!(error, AuthError::WrongAudience);
}

#[test]
fn error_codes_are_distinct_and_challenges_follow_rfc_6750() {
    let errors = [
        AuthError::MissingToken,
        AuthError::NotBearer,
        AuthError::Malformed("x".into()),
        AuthError::BadSignature,
        AuthError::WrongAlgorithm {
            expected: "HS256",
            found: "none".into(),
        },
        AuthError::Expired,
        AuthError::NotYetValid,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::MissingClaim("exp"),
        AuthError::NoKnownRole,
        AuthError::UnknownKey { kid: None },
        AuthError::LifetimeTooLong {
            lifetime_secs: 2,
            max_secs: 1,
        },
    ];
    let codes: BTreeSet<&str> = errors.iter().map(AuthError::code).collect();
    assert_eq!(codes.len(), errors.len());
    assert_eq!(AuthError::MissingToken.www_authenticate(), "Bearer");
    assert_eq!(
        AuthError::Expired.www_authenticate(),
        "Bearer error=\"invalid_token\", error_description=\"the token has expired\""
    );
    for error in &errors {
        let challenge = error.www_authenticate();
        let inner = challenge.trim_start_matches("Bearer").replace("\\\"", "");
        // Only the quotes that delimit the two parameter values.
        assert!(inner.matches('"').count() <= 4, "{challenge}");
    }
}

#[test]
fn verifier_and_minter_can_be_shared_across_request_tasks() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Verifier>();
    shareable::<Minter>();
}

#[test]
fn token_lifetimes_beyond_the_maximum_are_refused_when_verified() {
    let day = 24 * 3600;
    let verifier = verifier(Key::Hs256).with_max_lifetime(30 * day);
    let at = |token: &str| verifier.verify_at(bearer(token).as_deref(), NOW);
    // At the maximum (and within the leeway above it): accepted.
    assert!(at(&hs256(&claims(json!({"exp": NOW + 30 * day + 60})))).is_ok());
    // exp - iat beyond it.
    assert_eq!(
        at(&hs256(&claims(json!({"exp": NOW + 30 * day + 61})))).unwrap_err(),
        AuthError::LifetimeTooLong {
            lifetime_secs: 30 * day + 61,
            max_secs: 30 * day
        }
    );
    // The case: exp = 2^64-1, with and without iat.
    let forever = claims(json!({"exp": u64::MAX}));
    assert!(matches!(
        at(&hs256(&forever)).unwrap_err(),
        AuthError::LifetimeTooLong { max_secs, .. } if max_secs == 30 * day
    ));
    let no_iat = claims(json!({"exp": u64::MAX, "iat": null}));
    assert!(matches!(
        at(&hs256(&no_iat)).unwrap_err(),
        AuthError::LifetimeTooLong { .. }
    ));
    // Without iat, exp - now counts.
    assert!(at(&hs256(&claims(json!({"iat": null, "exp": NOW + day})))).is_ok());
    // A backdated iat does not stretch a token beyond the maximum from now.
    let backdated = claims(json!({"iat": NOW - 30 * day, "exp": NOW + 31 * day}));
    assert!(matches!(
        at(&hs256(&backdated)).unwrap_err(),
        AuthError::LifetimeTooLong { .. }
    ));
    // The message says what the limit is.
    let message = at(&hs256(&forever)).unwrap_err().to_string();
    assert!(message.contains("2592000 s"), "{message}");
    // The default maximum is 90 days.
    let default = verifier_default_max();
    assert!(
        default
            .verify_at(
                bearer(&hs256(&claims(json!({"exp": NOW + 90 * day})))).as_deref(),
                NOW
            )
            .is_ok()
    );
    assert!(
        default
            .verify_at(
                bearer(&hs256(&claims(json!({"exp": NOW + 91 * day})))).as_deref(),
                NOW
            )
            .is_err()
    );
}

fn verifier_default_max() -> Verifier {
    verifier(Key::Hs256)
}

#[test]
fn minting_refuses_lifetimes_beyond_the_maximum() {
    let day = 24 * 3600;
    let minter = Minter::new(HS_KEY.to_vec(), ISS, AUD);
    // `ferry token create --ttl 100000d`.
    let error = minter
        .mint(
            "alice",
            &[Role::Admin],
            None,
            Duration::from_secs(100_000 * day),
        )
        .unwrap_err();
    assert!(
        matches!(error, KeyError::LifetimeTooLong { ttl_secs, max_secs }
            if ttl_secs == 100_000 * day && max_secs == ferry_auth::DEFAULT_MAX_LIFETIME_SECS),
        "{error}"
    );
    assert!(
        minter
            .mint("alice", &[Role::Admin], None, Duration::from_secs(90 * day))
            .is_ok()
    );
    let strict = Minter::new(HS_KEY.to_vec(), ISS, AUD).with_max_lifetime(3600);
    assert!(
        strict
            .mint("alice", &[Role::Admin], None, Duration::from_secs(3601))
            .is_err()
    );
    assert!(
        strict
            .mint("alice", &[Role::Admin], None, Duration::from_secs(3600))
            .is_ok()
    );
}
