//! What the tests share: a checker of JSON against Google's discovery schemas, the test
//! key, and a scripted fake of Google's endpoints on a loopback port.

#![allow(dead_code)] // Each test binary uses a part of it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use ferry_testenv::google::Discovery;
use serde_json::Value;

pub fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(data(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The discovery documents, read once per use.
pub fn discovery(api: &str) -> Value {
    let path = format!(
        "{}/../../testenv/data/gcp/{api}.v1.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("a discovery document is JSON")
}

/// Every way `value` departs from the schema `name` of API `api` (`container` or
/// `cloudbilling`): the harness's discovery checker, the one its fake Google uses.
pub fn schema_errors(api: &str, name: &str, value: &Value) -> Vec<String> {
    static DISCOVERY: std::sync::OnceLock<Discovery> = std::sync::OnceLock::new();
    DISCOVERY
        .get_or_init(|| Discovery::load().expect("the discovery documents load"))
        .check_schema(api, name, value)
}

/// A request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub authorization: Option<String>,
    pub body: String,
}

/// A canned answer: status and body.
pub type Answer = (u16, String);

#[derive(Default)]
pub struct Script {
    /// `"METHOD /path"` (query left out) → answers in turn; the last one repeats.
    answers: BTreeMap<String, VecDeque<Answer>>,
    pub requests: Vec<Recorded>,
    /// Delay before each answer, for single-flight tests.
    pub delay_ms: u64,
}

#[derive(Clone, Default)]
pub struct Fake {
    pub script: Arc<Mutex<Script>>,
    pub addr: Option<SocketAddr>,
}

impl Fake {
    /// Starts the fake on a loopback port.
    pub async fn start() -> Fake {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the fake serves");
        });
        Fake {
            script,
            addr: Some(addr),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr.expect("started"))
    }

    /// Answers of `key` (`"GET /v1/…"`), in turn.
    pub fn on(&self, key: &str, answers: Vec<Answer>) {
        let mut script = self.script.lock().expect("not poisoned");
        script.answers.insert(key.to_owned(), answers.into());
    }

    pub fn set_delay_ms(&self, delay: u64) {
        self.script.lock().expect("not poisoned").delay_ms = delay;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.script.lock().expect("not poisoned").requests.clone()
    }

    pub fn count(&self, key: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| format!("{} {}", r.method, r.target.split('?').next().unwrap_or("")) == key)
            .count()
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let key = format!("{method} {}", uri.path());
    let (delay, (status, body)) = {
        let mut script = script.lock().expect("not poisoned");
        script.requests.push(Recorded {
            method: method.to_string(),
            target: uri.to_string(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let delay = script.delay_ms;
        let answer = match script.answers.get_mut(&key) {
            Some(queue) if queue.len() > 1 => queue.pop_front().expect("not empty"),
            Some(queue) if queue.len() == 1 => queue[0].clone(),
            _ => (
                404,
                format!(
                    r#"{{"error":{{"code":404,"message":"no script for {key}","status":"NOT_FOUND"}}}}"#
                ),
            ),
        };
        (delay, answer)
    };
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    (
        StatusCode::from_u16(status).expect("a status"),
        [("content-type", "application/json")],
        body,
    )
}

/// The test key, its token endpoint pointed at `fake`.
pub fn test_key(fake: &Fake) -> ferry_adapter_gke::ServiceAccountKey {
    ferry_adapter_gke::ServiceAccountKey::read(&data("testdata/test-service-account.json"))
        .expect("the test key")
        .with_token_uri(&fake.url("token"))
}

pub fn token_answer(token: &str, expires_in: u64) -> Answer {
    (
        200,
        format!(r#"{{"access_token":"{token}","expires_in":{expires_in},"token_type":"Bearer"}}"#),
    )
}
