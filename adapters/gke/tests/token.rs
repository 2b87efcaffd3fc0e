//! The JWT-bearer exchange against a fake token endpoint: the form sent, caching, one
//! request for many callers, renewal before expiry, refusals, and the background token.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fake, test_key, token_answer};
use ferry_adapter_gke::{AssertionClaims, DEFAULT_SCOPES, Error, TokenSource};
use ferry_adapter_kubernetes::BearerToken;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

const TOKEN: &str = "POST /token";

#[tokio::test]
async fn the_assertion_is_exchanged_once_and_the_token_cached() {
    let fake = Fake::start().await;
    fake.on(TOKEN, vec![token_answer("ya29.first", 3600)]);
    let source = TokenSource::new(test_key(&fake)).expect("a source");
    let token = source.token().await.expect("a token");
    assert_eq!(token.value().expose(), "ya29.first");
    source.token().await.expect("cached");
    assert_eq!(fake.count(TOKEN), 1);

    let request = &fake.requests()[0];
    let (grant, assertion) = request.body.split_once('&').expect("two form fields");
    assert_eq!(
        grant,
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    );
    let assertion = assertion.strip_prefix("assertion=").expect("the assertion");
    let public = std::fs::read(common::data("testdata/test-service-account.pub.pem"))
        .expect("the public half");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[fake.url("token")]);
    let decoded = jsonwebtoken::decode::<AssertionClaims>(
        assertion,
        &DecodingKey::from_rsa_pem(&public).expect("a public key"),
        &validation,
    )
    .expect("signed by the test key, for this token_uri");
    assert_eq!(decoded.claims.scope, DEFAULT_SCOPES);
    assert_eq!(
        decoded.claims.iss,
        "ferry-test@ferry-test-project.iam.gserviceaccount.com"
    );
    assert!(!format!("{source:?}").contains("ya29"));
}

#[tokio::test]
async fn concurrent_callers_share_one_request() {
    let fake = Fake::start().await;
    fake.on(TOKEN, vec![token_answer("ya29.shared", 3600)]);
    fake.set_delay_ms(200);
    let source = Arc::new(TokenSource::new(test_key(&fake)).expect("a source"));
    let callers: Vec<_> = (0..16)
        .map(|_| {
            let source = source.clone();
            tokio::spawn(async move { source.token().await.map(|t| t.value().expose().to_owned()) })
        })
        .collect();
    for caller in callers {
        let token = caller.await.expect("joined").expect("a token");
        assert_eq!(token, "ya29.shared");
    }
    assert_eq!(fake.count(TOKEN), 1);
}

#[tokio::test]
async fn a_token_is_renewed_a_margin_before_it_expires() {
    let fake = Fake::start().await;
    fake.on(
        TOKEN,
        vec![token_answer("ya29.one", 4), token_answer("ya29.two", 4)],
    );
    // Renew 3 s before expiry, but never before half-life: at 2 s.
    let source = TokenSource::new(test_key(&fake))
        .expect("a source")
        .with_renewal_margin(Duration::from_secs(3));
    assert_eq!(
        source.token().await.expect("first").value().expose(),
        "ya29.one"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        source.token().await.expect("cached").value().expose(),
        "ya29.one"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        source.token().await.expect("renewed").value().expose(),
        "ya29.two"
    );
    assert_eq!(fake.count(TOKEN), 2);
}

/// A revoked or disabled key: a clear error, not asked again while it is held.
#[tokio::test]
async fn a_refused_grant_is_a_clear_error_and_not_retried() {
    let fake = Fake::start().await;
    fake.on(
        TOKEN,
        vec![(
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#.to_owned(),
        )],
    );
    let source = Arc::new(TokenSource::new(test_key(&fake)).expect("a source"));
    for _ in 0..3 {
        let error = source.token().await.expect_err("refused");
        assert!(matches!(error, Error::TokenRefused { .. }), "{error:?}");
        let shown = error.to_string();
        assert!(shown.contains("invalid_grant") && shown.contains("Invalid JWT Signature."));
        assert!(shown.contains("not retried"), "{shown}");
        assert!(!error.is_transient());
    }
    assert_eq!(fake.count(TOKEN), 1);
    let error = source.bearer().await.expect_err("no first token");
    assert!(matches!(error, Error::TokenRefused { .. }));
    assert_eq!(fake.count(TOKEN), 1);

    // A token endpoint that is down is transient, and asked again.
    let down = Fake::start().await;
    down.on(TOKEN, vec![(503, String::new())]);
    let source = TokenSource::new(test_key(&down)).expect("a source");
    for _ in 0..2 {
        assert!(source.token().await.expect_err("down").is_transient());
    }
    assert_eq!(down.count(TOKEN), 2);
}

/// The Kubernetes adapter's view: `current()` never waits, and the token in it changes
/// before the old one expires, with no caller asking.
#[tokio::test]
async fn the_background_token_is_renewed_without_callers() {
    let fake = Fake::start().await;
    fake.on(
        TOKEN,
        vec![
            token_answer("ya29.one", 2),
            token_answer("ya29.two", 2),
            token_answer("ya29.three", 3600),
        ],
    );
    let source = Arc::new(
        TokenSource::new(test_key(&fake))
            .expect("a source")
            .with_renewal_margin(Duration::from_secs(1)),
    );
    let bearer = source.bearer().await.expect("a first token");
    let as_port: Arc<dyn BearerToken> = bearer.clone();
    assert_eq!(as_port.current().as_deref(), Ok("ya29.one"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(as_port.current().as_deref(), Ok("ya29.two"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(as_port.current().as_deref(), Ok("ya29.three"));
    assert_eq!(fake.count(TOKEN), 3);
    assert!(!format!("{bearer:?}").contains("ya29"));

    // Dropped: the renewal stops.
    drop(as_port);
    drop(bearer);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(fake.count(TOKEN), 3);
}
