//! Heat v1: stacks, created idempotently by name, followed to a terminal status, read
//! (status, outputs, resources), updated by parameters and deleted.
//!
//! Heat's status is `{ACTION}_{STATE}` ([`Status`]); every operation Heat accepts with 201,
//! 202 or 204 runs on after the answer, and [`Heat::follow`] polls the stack (by id, never
//! by name) until the action asked for is no longer `IN_PROGRESS`, with a growing delay
//! and a deadline, reporting [`Progress`] (resources complete of all, nested stacks
//! included) as it changes. Polls ask Heat not to resolve outputs
//! (`?resolve_outputs=false`) and outputs are read once the action is over: resolving
//! them is the costly part of a show, and Heat stores every resource's attributes while it
//! does (a database write in `show_stack`), which should not race the engine mid-action.
//!
//! A failed action comes back as a [`Failure`] that names the resources that failed and
//! Heat's reason for each, found in the resource list with nested depth.
//!
//! Templates, environments and files are sent as text, untouched: a YAML round trip could
//! turn `heat_template_version: 2018-08-31` into a date. Heat returns parameters as strings
//! (`"worker_count": "3"`); [`Stack`]'s accessors parse them and the outputs into the types
//! asked for.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ferry_ports::Operation;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::error::{ApiError, Error, Result};
use crate::keystone::Keystone;

/// The catalog's type for Heat.
pub const SERVICE_TYPE: &str = "orchestration";
/// How deep resource lists look into nested stacks (a ResourceGroup's members, provider
/// templates) unless told otherwise.
pub const DEFAULT_NESTED_DEPTH: u32 = 5;

/// A stack's handle: name and id. Journal it before following, so that a restarted broker
/// resumes following instead of creating again.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StackId {
    pub name: String,
    pub id: String,
}

impl fmt::Display for StackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.id)
    }
}

impl StackId {
    /// Reads `name/id`, as [`Display`](fmt::Display) writes it (an [`Operation`] id).
    pub fn parse(text: &str) -> Option<StackId> {
        let (name, id) = text.split_once('/')?;
        (check_stack_name(name).is_ok() && !id.is_empty() && !id.contains('/')).then(|| StackId {
            name: name.to_owned(),
            id: id.to_owned(),
        })
    }

    fn path(&self) -> String {
        format!("/stacks/{}/{}", self.name, self.id)
    }
}

/// Heat's rule for stack names: a letter, then letters, digits, `_`, `.` or `-`, at most
/// 255 in all. Checked before sending, which also keeps names safe in URL paths.
pub fn check_stack_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255;
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what: format!("stack name {name:?}"),
            message: "it must start with a letter and hold only letters, digits, '_', '.' and \
                      '-' (at most 255)"
                .to_owned(),
        })
    }
}

/// What a stack is doing or last did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Resources not yet acted on (convergence engine), e.g. `INIT_COMPLETE`.
    Init,
    Create,
    Update,
    Delete,
    Rollback,
    Suspend,
    Resume,
    Adopt,
    Snapshot,
    Check,
    Restore,
}

/// How that action stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    InProgress,
    Complete,
    Failed,
}

/// A stack's or resource's `{ACTION}_{STATE}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Status {
    pub action: Action,
    pub state: State,
}

const ACTIONS: [(&str, Action); 11] = [
    ("INIT", Action::Init),
    ("CREATE", Action::Create),
    ("UPDATE", Action::Update),
    ("DELETE", Action::Delete),
    ("ROLLBACK", Action::Rollback),
    ("SUSPEND", Action::Suspend),
    ("RESUME", Action::Resume),
    ("ADOPT", Action::Adopt),
    ("SNAPSHOT", Action::Snapshot),
    ("CHECK", Action::Check),
    ("RESTORE", Action::Restore),
];

const STATES: [(&str, State); 3] = [
    ("IN_PROGRESS", State::InProgress),
    ("COMPLETE", State::Complete),
    ("FAILED", State::Failed),
];

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = ACTIONS
            .iter()
            .find(|(_, a)| a == self)
            .map_or("?", |(n, _)| *n);
        f.write_str(name)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = STATES
            .iter()
            .find(|(_, s)| *s == self.state)
            .map_or("?", |(n, _)| *n);
        write!(f, "{}_{state}", self.action)
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(text: &str) -> Result<Status, String> {
        let (action, rest) = text
            .split_once('_')
            .ok_or_else(|| format!("status {text:?} is not ACTION_STATE"))?;
        let action = ACTIONS
            .iter()
            .find(|(n, _)| *n == action)
            .map(|(_, a)| *a)
            .ok_or_else(|| format!("status {text:?}: unknown action {action}"))?;
        let state = STATES
            .iter()
            .find(|(n, _)| *n == rest)
            .map(|(_, s)| *s)
            .ok_or_else(|| format!("status {text:?}: unknown state {rest}"))?;
        Ok(Status { action, state })
    }
}

/// A stack to create.
#[derive(Clone, PartialEq)]
pub struct NewStack {
    pub name: String,
    /// The HOT template, as text.
    pub template: String,
    /// An environment (`resource_registry`, `parameter_defaults`), as text.
    pub environment: Option<String>,
    /// Files the template and environment name (provider templates, scripts): name → text.
    pub files: BTreeMap<String, String>,
    pub parameters: Map<String, Value>,
    /// Heat fails the stack when it has not finished by then (rounded up to minutes).
    pub timeout: Option<Duration>,
    /// Keep what was created when the create fails (the default), so that the failed
    /// resources can be read; the stack is deleted on request.
    pub disable_rollback: bool,
    pub tags: Vec<String>,
}

impl fmt::Debug for NewStack {
    // Parameters may hold secrets and files are long: names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewStack")
            .field("name", &self.name)
            .field("template_bytes", &self.template.len())
            .field("environment", &self.environment.is_some())
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("parameters", &self.parameters.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("disable_rollback", &self.disable_rollback)
            .field("tags", &self.tags)
            .finish()
    }
}

impl NewStack {
    pub fn new(name: &str, template: &str) -> NewStack {
        NewStack {
            name: name.to_owned(),
            template: template.to_owned(),
            environment: None,
            files: BTreeMap::new(),
            parameters: Map::new(),
            timeout: None,
            disable_rollback: true,
            tags: Vec::new(),
        }
    }

    pub fn environment(mut self, text: &str) -> NewStack {
        self.environment = Some(text.to_owned());
        self
    }

    pub fn file(mut self, name: &str, text: &str) -> NewStack {
        self.files.insert(name.to_owned(), text.to_owned());
        self
    }

    pub fn parameter(mut self, key: &str, value: impl Into<Value>) -> NewStack {
        self.parameters.insert(key.to_owned(), value.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> NewStack {
        self.timeout = Some(timeout);
        self
    }

    /// The body of `POST /stacks`.
    fn body(&self) -> Value {
        let mut body = json!({
            "stack_name": self.name,
            "template": self.template,
            "files": self.files,
            "parameters": self.parameters,
            "disable_rollback": self.disable_rollback,
        });
        if let Some(environment) = &self.environment {
            body["environment"] = Value::String(environment.clone());
        }
        if let Some(timeout) = self.timeout {
            body["timeout_mins"] = json!(timeout.as_secs().div_ceil(60).max(1));
        }
        if !self.tags.is_empty() {
            body["tags"] = Value::String(self.tags.join(","));
        }
        body
    }
}

/// What [`Heat::create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Created {
    pub stack: StackId,
    /// A stack of that name existed (409 `StackExists`) and is now followed instead.
    pub adopted: bool,
}

/// One output of a stack.
#[derive(Clone, PartialEq)]
pub struct Output {
    pub key: String,
    pub description: Option<String>,
    pub value: Value,
    /// Heat's `output_error`, when the output could not be resolved.
    pub error: Option<String>,
}

impl fmt::Debug for Output {
    // Outputs can be secrets (a join token, a kubeconfig): never their value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("key", &self.key)
            .field("value", &"<redacted>")
            .field("error", &self.error)
            .finish()
    }
}

/// A stack as `GET /stacks/{name}/{id}` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    pub id: StackId,
    pub status: Status,
    pub status_reason: String,
    /// As Heat returns them: text, numbers included (`"3"`), `OS::stack_id` and the like too.
    pub parameters: BTreeMap<String, String>,
    pub outputs: Vec<Output>,
    pub creation_time: Option<String>,
    pub updated_time: Option<String>,
    pub timeout_mins: Option<u32>,
}

#[derive(Deserialize)]
struct StackBody {
    stack: StackWire,
}

#[derive(Deserialize)]
struct StackWire {
    id: String,
    stack_name: String,
    stack_status: String,
    #[serde(default)]
    stack_status_reason: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    #[serde(default)]
    outputs: Option<Vec<OutputWire>>,
    #[serde(default)]
    creation_time: Option<String>,
    #[serde(default)]
    updated_time: Option<String>,
    #[serde(default)]
    timeout_mins: Option<Value>,
}

#[derive(Deserialize)]
struct OutputWire {
    output_key: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    output_value: Value,
    #[serde(default)]
    output_error: Option<String>,
}

/// A JSON scalar as text (`"3"` and `3` alike); `None` for null, lists and maps.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

impl Stack {
    /// Reads a `GET /stacks/{name}/{id}` body.
    pub fn parse(body: &[u8]) -> Result<Stack, String> {
        let wire: StackBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let wire = wire.stack;
        let status: Status = wire.stack_status.parse()?;
        Ok(Stack {
            id: StackId {
                name: wire.stack_name,
                id: wire.id,
            },
            status,
            status_reason: wire.stack_status_reason.unwrap_or_default(),
            parameters: wire
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), text_of(v).unwrap_or_else(|| v.to_string())))
                .collect(),
            outputs: wire
                .outputs
                .unwrap_or_default()
                .into_iter()
                .map(|o| Output {
                    key: o.output_key,
                    description: o.description,
                    value: o.output_value,
                    error: o.output_error,
                })
                .collect(),
            creation_time: wire.creation_time,
            updated_time: wire.updated_time,
            timeout_mins: wire
                .timeout_mins
                .as_ref()
                .and_then(text_of)
                .and_then(|t| t.parse().ok()),
        })
    }

    fn value_error(&self, what: String, message: String) -> Error {
        Error::Value {
            stack: self.id.to_string(),
            what,
            message,
        }
    }

    /// The output `key`, or why there is none (absent, or Heat's `output_error`).
    pub fn output(&self, key: &str) -> Result<&Output> {
        let output = self.outputs.iter().find(|o| o.key == key).ok_or_else(|| {
            let keys: Vec<&str> = self.outputs.iter().map(|o| o.key.as_str()).collect();
            self.value_error(
                format!("output {key}"),
                format!(
                    "absent; the stack ({}) has {}",
                    self.status,
                    if keys.is_empty() {
                        "no outputs".to_owned()
                    } else {
                        keys.join(", ")
                    }
                ),
            )
        })?;
        match &output.error {
            Some(error) => Err(self.value_error(format!("output {key}"), error.clone())),
            None => Ok(output),
        }
    }

    /// A text output; `None` when it is null (e.g. its resource is mapped to
    /// `OS::Heat::None`). Numbers and booleans come back as their text.
    pub fn output_text(&self, key: &str) -> Result<Option<String>> {
        let output = self.output(key)?;
        match &output.value {
            Value::Null => Ok(None),
            value => text_of(value).map(Some).ok_or_else(|| {
                self.value_error(
                    format!("output {key}"),
                    format!("{} where text was expected", kind_of(value)),
                )
            }),
        }
    }

    /// A list output of scalars (e.g. `worker_ips`); null items stay `None`, a null list is
    /// empty.
    pub fn output_texts(&self, key: &str) -> Result<Vec<Option<String>>> {
        let output = self.output(key)?;
        match &output.value {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Null => Ok(None),
                    item => text_of(item).map(Some).ok_or_else(|| {
                        self.value_error(
                            format!("output {key}"),
                            format!("item {i} is {} where text was expected", kind_of(item)),
                        )
                    }),
                })
                .collect(),
            value => Err(self.value_error(
                format!("output {key}"),
                format!("{} where a list was expected", kind_of(value)),
            )),
        }
    }

    /// An integer output, given as a number or as text.
    pub fn output_integer(&self, key: &str) -> Result<Option<i64>> {
        match self.output_text(key)? {
            None => Ok(None),
            Some(text) => text.trim().parse().map(Some).map_err(|_| {
                self.value_error(
                    format!("output {key}"),
                    format!("{text:?} is not an integer"),
                )
            }),
        }
    }

    pub fn parameter(&self, key: &str) -> Option<&str> {
        self.parameters.get(key).map(String::as_str)
    }

    /// An integer parameter; Heat returns them as text (`"3"`).
    pub fn parameter_integer(&self, key: &str) -> Result<i64> {
        let text = self
            .parameter(key)
            .ok_or_else(|| self.value_error(format!("parameter {key}"), "absent".to_owned()))?;
        text.trim().parse().map_err(|_| {
            self.value_error(
                format!("parameter {key}"),
                format!("{text:?} is not an integer"),
            )
        })
    }
}

/// A resource of a stack or of one of its nested stacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    pub resource_type: String,
    pub status: Status,
    pub status_reason: String,
    pub physical_id: Option<String>,
    /// The resource of the parent stack whose nested stack holds this one.
    pub parent: Option<String>,
    /// The name of the stack that holds it.
    pub stack_name: Option<String>,
}

#[derive(Deserialize)]
struct ResourcesBody {
    resources: Vec<ResourceWire>,
}

#[derive(Deserialize)]
struct ResourceWire {
    resource_name: String,
    #[serde(default)]
    resource_type: String,
    resource_status: String,
    #[serde(default)]
    resource_status_reason: Option<String>,
    #[serde(default)]
    physical_resource_id: Option<String>,
    #[serde(default)]
    parent_resource: Option<String>,
    #[serde(default)]
    links: Vec<Link>,
}

#[derive(Deserialize)]
struct Link {
    href: String,
    rel: String,
}

/// The stack name in a `…/stacks/{name}/{id}` link.
fn stack_name_in(href: &str) -> Option<String> {
    let after = href.split("/stacks/").nth(1)?;
    after
        .split('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

impl Resource {
    /// Reads a `GET …/resources` body.
    pub fn parse_list(body: &[u8]) -> Result<Vec<Resource>, String> {
        let wire: ResourcesBody = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        wire.resources
            .into_iter()
            .map(|r| {
                Ok(Resource {
                    status: r.resource_status.parse()?,
                    stack_name: r
                        .links
                        .iter()
                        .find(|l| l.rel == "stack")
                        .and_then(|l| stack_name_in(&l.href)),
                    name: r.resource_name,
                    resource_type: r.resource_type,
                    status_reason: r.resource_status_reason.unwrap_or_default(),
                    physical_id: r.physical_resource_id.filter(|id| !id.is_empty()),
                    parent: r.parent_resource,
                })
            })
            .collect()
    }
}

/// How far an action has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub status: Status,
    /// Resources in a `*_COMPLETE` state other than `INIT_COMPLETE` (not yet acted on).
    pub complete: usize,
    pub in_progress: usize,
    pub failed: usize,
    /// Resources listed, nested stacks' included.
    pub total: usize,
}

impl Progress {
    pub fn count(status: Status, resources: &[Resource]) -> Progress {
        let with = |state: State| {
            resources
                .iter()
                .filter(|r| r.status.state == state && r.status.action != Action::Init)
                .count()
        };
        Progress {
            status,
            complete: with(State::Complete),
            in_progress: with(State::InProgress),
            failed: with(State::Failed),
            total: resources.len(),
        }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of {} resources complete",
            self.status, self.complete, self.total
        )?;
        if self.in_progress > 0 {
            write!(f, ", {} in progress", self.in_progress)?;
        }
        if self.failed > 0 {
            write!(f, ", {} failed", self.failed)?;
        }
        Ok(())
    }
}

/// A stack whose action failed, and the resources that failed, the innermost first.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub stack: Stack,
    pub resources: Vec<Resource>,
}

impl Failure {
    /// Orders the failed resources of `resources`: those that hold no other failed
    /// resource (the causes) first, the nested stacks that failed because of them after.
    pub fn new(stack: Stack, resources: &[Resource]) -> Failure {
        let failed: Vec<&Resource> = resources
            .iter()
            .filter(|r| r.status.state == State::Failed)
            .collect();
        let holds_a_failure = |r: &Resource| {
            failed
                .iter()
                .any(|o| o.parent.as_deref() == Some(r.name.as_str()))
        };
        let (containers, causes): (Vec<&Resource>, Vec<&Resource>) =
            failed.iter().partition(|r| holds_a_failure(r));
        Failure {
            stack,
            resources: causes.into_iter().chain(containers).cloned().collect(),
        }
    }

    /// What failed, for a user: the stack's status and reason, then each cause.
    pub fn reason(&self) -> String {
        let mut text = format!(
            "stack {} {}: {}",
            self.stack.id.name, self.stack.status, self.stack.status_reason
        );
        let causes: Vec<String> = self
            .resources
            .iter()
            .filter(|r| {
                !self
                    .resources
                    .iter()
                    .any(|o| o.parent.as_deref() == Some(r.name.as_str()))
            })
            .map(|r| {
                let place = match (&r.parent, &r.stack_name) {
                    (Some(_), Some(stack)) => format!(" in nested stack {stack}"),
                    _ => String::new(),
                };
                format!(
                    "resource {} ({}){place} {}: {}",
                    r.name, r.resource_type, r.status, r.status_reason
                )
            })
            .collect();
        if !causes.is_empty() {
            text.push_str("; failed: ");
            text.push_str(&causes.join("; "));
        }
        text
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason())
    }
}

/// How a followed action ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Complete(Stack),
    Failed(Failure),
    /// The stack is no longer there (a delete that finished and was purged).
    Gone,
}

/// How patiently to follow an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follow {
    /// Give up (with [`Error::Timeout`]) after this long.
    pub deadline: Duration,
    /// The first wait between polls; each next one is half as long again, up to
    /// `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    pub nested_depth: u32,
    /// How long a stack may still show the previous action's terminal status (the new
    /// action has not started yet) before that counts as an error.
    pub start_grace: Duration,
}

impl Follow {
    /// Polls from every 2 s up to every 15 s, until `deadline`.
    pub fn within(deadline: Duration) -> Follow {
        Follow {
            deadline,
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(15),
            nested_depth: DEFAULT_NESTED_DEPTH,
            start_grace: Duration::from_secs(30),
        }
    }
}

enum Poll {
    Running(Progress),
    Done(Outcome),
}

#[derive(Deserialize)]
struct CreatedBody {
    stack: CreatedWire,
}

#[derive(Deserialize)]
struct CreatedWire {
    id: String,
}

/// The stack id at the end of a `Location` (`…/stacks/{name}/{id}`).
fn id_in_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?;
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// A Heat client of one cloud, signing in through a shared [`Keystone`].
#[derive(Clone, Debug)]
pub struct Heat {
    keystone: Arc<Keystone>,
}

impl Heat {
    pub fn new(keystone: Arc<Keystone>) -> Heat {
        Heat { keystone }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<crate::http::Reply> {
        self.keystone.send(SERVICE_TYPE, method, path, body).await
    }

    /// Creates the stack, or adopts the stack of that name that already exists (Heat's 409
    /// `StackExists`), so that repeating a create after a crash is safe. A stack of that
    /// name that is being deleted is a [`Error::Conflict`].
    pub async fn create(&self, stack: &NewStack) -> Result<Created> {
        check_stack_name(&stack.name)?;
        let reply = self
            .send(Method::POST, "/stacks", Some(&stack.body()))
            .await?;
        match reply.status {
            201 => {
                let created: CreatedBody = reply.json()?;
                let id = StackId {
                    name: stack.name.clone(),
                    id: created.stack.id,
                };
                tracing::info!(stack = %id, request_id = reply.request_id.as_deref().unwrap_or(""),
                    "Heat stack create accepted");
                Ok(Created {
                    stack: id,
                    adopted: false,
                })
            }
            409 => {
                let api = reply.api_error();
                if api.kind.as_deref().is_some_and(|k| k != "StackExists") {
                    return Err(Error::Conflict(Box::new(api)));
                }
                let Some(id) = self.find(&stack.name).await? else {
                    return Err(Error::Conflict(Box::new(api)));
                };
                let existing = self.show_with(&id, false).await?;
                if existing.status.action == Action::Delete {
                    return Err(Error::Conflict(Box::new(ApiError {
                        message: format!(
                            "stack {id} exists and is {}; create it again once it is gone",
                            existing.status
                        ),
                        ..api
                    })));
                }
                tracing::info!(stack = %id, status = %existing.status,
                    "a stack of that name exists; adopting it");
                Ok(Created {
                    stack: id,
                    adopted: true,
                })
            }
            _ => Err(reply.error()),
        }
    }

    /// Asks Heat to check a stack's template, environments, files and parameters without
    /// creating anything (`POST /validate`, nested templates included). It does not check
    /// parameter constraints (Heat enforces those only on create).
    pub async fn validate(&self, stack: &NewStack) -> Result<()> {
        let mut body = stack.body();
        if let Some(fields) = body.as_object_mut() {
            for create_only in ["stack_name", "disable_rollback", "timeout_mins", "tags"] {
                fields.remove(create_only);
            }
        }
        self.send(Method::POST, "/validate", Some(&body))
            .await?
            .require_status(&[200])?;
        Ok(())
    }

    /// The id of the live stack named `name` (Heat's 302 to `…/stacks/{name}/{id}`), or
    /// `None` (404, e.g. deleted).
    pub async fn find(&self, name: &str) -> Result<Option<StackId>> {
        check_stack_name(name)?;
        let reply = self
            .send(Method::GET, &format!("/stacks/{name}"), None)
            .await?;
        let id = match reply.status {
            404 => return Ok(None),
            301 | 302 | 303 | 307 => reply
                .location
                .as_deref()
                .and_then(id_in_location)
                .ok_or_else(|| reply.invalid("a redirect without a stack id".to_owned()))?,
            200 => {
                Stack::parse(reply.body())
                    .map_err(|m| reply.invalid(m))?
                    .id
                    .id
            }
            _ => return Err(reply.error()),
        };
        Ok(Some(StackId {
            name: name.to_owned(),
            id,
        }))
    }

    /// The stack with its outputs resolved.
    pub async fn show(&self, stack: &StackId) -> Result<Stack> {
        self.show_with(stack, true).await
    }

    /// Without `outputs`, Heat skips resolving them (`resolve_outputs=false`): what polling
    /// asks for, since outputs are read once the action is over.
    async fn show_with(&self, stack: &StackId, outputs: bool) -> Result<Stack> {
        let path = if outputs {
            stack.path()
        } else {
            format!("{}?resolve_outputs=false", stack.path())
        };
        let reply = self
            .send(Method::GET, &path, None)
            .await?
            .require_status(&[200])?;
        Stack::parse(reply.body()).map_err(|m| reply.invalid(m))
    }

    /// The stack's resources and those of its nested stacks down to `nested_depth`.
    pub async fn resources(&self, stack: &StackId, nested_depth: u32) -> Result<Vec<Resource>> {
        let path = format!("{}/resources?nested_depth={nested_depth}", stack.path());
        let reply = self
            .send(Method::GET, &path, None)
            .await?
            .require_status(&[200])?;
        Resource::parse_list(reply.body()).map_err(|m| reply.invalid(m))
    }

    /// Changes parameters and keeps the template and the other parameters (`PATCH`), e.g.
    /// `worker_count`. Follow the stack with [`Action::Update`].
    pub async fn update_parameters(
        &self,
        stack: &StackId,
        parameters: &Map<String, Value>,
    ) -> Result<()> {
        let body = json!({ "parameters": parameters });
        let reply = self
            .send(Method::PATCH, &stack.path(), Some(&body))
            .await?
            .require_status(&[202])?;
        tracing::info!(stack = %stack, parameters = ?parameters.keys().collect::<Vec<_>>(),
            request_id = reply.request_id.as_deref().unwrap_or(""), "Heat stack update accepted");
        Ok(())
    }

    /// Asks Heat to delete the stack; `false` when it was already gone (404). Follow it
    /// with [`Action::Delete`].
    pub async fn delete(&self, stack: &StackId) -> Result<bool> {
        let reply = self.send(Method::DELETE, &stack.path(), None).await?;
        match reply.status {
            204 | 202 | 200 => {
                let request_id = reply.request_id.as_deref().unwrap_or("");
                tracing::info!(stack = %stack, request_id, "Heat stack delete accepted");
                Ok(true)
            }
            404 => Ok(false),
            _ => Err(reply.error()),
        }
    }

    /// The failed resources of a stack whose action failed. When they cannot be listed,
    /// the failure has the stack's own reason only.
    pub async fn failure(&self, stack: Stack, nested_depth: u32) -> Failure {
        match self.resources(&stack.id, nested_depth).await {
            Ok(resources) => Failure::new(stack, &resources),
            Err(error) => {
                tracing::warn!(stack = %stack.id, %error,
                    "cannot list the resources of a failed stack");
                Failure::new(stack, &[])
            }
        }
    }

    /// Polls `stack` until `action` is done, calling `on_progress` whenever the progress
    /// changes. Transient errors (5xx, no answer) are ridden out until the deadline; others
    /// end the follow.
    pub async fn follow(
        &self,
        stack: &StackId,
        action: Action,
        follow: &Follow,
        mut on_progress: impl FnMut(&Progress),
    ) -> Result<Outcome> {
        let started = Instant::now();
        let deadline = started + follow.deadline;
        let mut delay = follow.first_delay;
        let mut last: Option<Progress> = None;
        let mut last_text: String;
        loop {
            match self.poll(stack, action, follow, started).await {
                Ok(Poll::Done(outcome)) => return Ok(outcome),
                Ok(Poll::Running(progress)) => {
                    if last.as_ref() != Some(&progress) {
                        tracing::debug!(stack = %stack, progress = %progress, "stack progress");
                        on_progress(&progress);
                    }
                    last_text = progress.to_string();
                    last = Some(progress);
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(stack = %stack, %error,
                        "polling the stack failed; trying again");
                    last_text = error.to_string();
                }
                Err(error) => return Err(error),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!("stack {stack} {action}"),
                    waited: now - started,
                    last: last_text,
                });
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 3 / 2).min(follow.max_delay);
        }
    }

    async fn poll(
        &self,
        stack: &StackId,
        action: Action,
        follow: &Follow,
        started: Instant,
    ) -> Result<Poll> {
        let shown = match self.show_with(stack, false).await {
            Err(Error::NotFound(_)) if action == Action::Delete => {
                return Ok(Poll::Done(Outcome::Gone));
            }
            other => other?,
        };
        let status = shown.status;
        let running = status.state == State::InProgress
            || (status.action != action
                && status.action != Action::Rollback
                && started.elapsed() < follow.start_grace);
        if running {
            let resources = match self.resources(stack, follow.nested_depth).await {
                Ok(resources) => resources,
                Err(Error::NotFound(_)) if action == Action::Delete => Vec::new(),
                Err(error) => return Err(error),
            };
            return Ok(Poll::Running(Progress::count(status, &resources)));
        }
        if status.action != action && status.action != Action::Rollback {
            return Err(Error::InvalidResponse {
                service: SERVICE_TYPE.to_owned(),
                operation: format!("GET {}", stack.path()),
                message: format!(
                    "the stack is {status} after {} s: the {action} did not start",
                    follow.start_grace.as_secs()
                ),
            });
        }
        // Over: read it once more, outputs resolved (a deleted stack has none).
        let shown = if action == Action::Delete {
            shown
        } else {
            self.show(stack).await?
        };
        if shown.status.state == State::Complete && shown.status.action == action {
            return Ok(Poll::Done(Outcome::Complete(shown)));
        }
        // The action failed, or was rolled back after failing.
        Ok(Poll::Done(Outcome::Failed(
            self.failure(shown, follow.nested_depth).await,
        )))
    }

    /// The stack's last action as the broker's [`Operation`], its id the [`StackId`]'s
    /// text: running (with progress), done, or failed (with the failed resources named).
    pub async fn operation(&self, stack: &StackId) -> Result<Operation> {
        let shown = self.show_with(stack, false).await?;
        let id = stack.to_string();
        Ok(match shown.status.state {
            State::InProgress => {
                let progress = match self.resources(stack, DEFAULT_NESTED_DEPTH).await {
                    Ok(resources) => Progress::count(shown.status, &resources).to_string(),
                    Err(_) => shown.status.to_string(),
                };
                Operation::Running { id, progress }
            }
            State::Complete if shown.status.action != Action::Rollback => Operation::Done { id },
            _ => Operation::Failed {
                id,
                reason: self.failure(shown, DEFAULT_NESTED_DEPTH).await.reason(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(fixture: &str) -> Vec<u8> {
        let recorded: Value = serde_json::from_str(fixture).expect("fixtures are JSON");
        serde_json::to_vec(&recorded["body"]).expect("serialisable")
    }

    fn ips(texts: &[&str]) -> Vec<Option<String>> {
        texts.iter().map(|t| Some((*t).to_owned())).collect()
    }

    /// Every recorded stack body: status, reason, typed outputs and parameters.
    #[test]
    fn recorded_stacks_parse_to_typed_values() {
        struct Case {
            fixture: &'static str,
            status: &'static str,
            reason: &'static str,
            api_address: Option<Option<&'static str>>,
            workers: Option<Vec<Option<String>>>,
            worker_count: Option<i64>,
        }
        let cases = [
            Case {
                fixture: include_str!("../testdata/fixtures/heat/stack-show-create-complete.json"),
                status: "CREATE_COMPLETE",
                reason: "Stack CREATE completed successfully",
                api_address: Some(Some("192.0.2.10")),
                workers: Some(ips(&["10.0.0.29", "10.0.0.00", "10.0.0.47"])),
                worker_count: Some(3),
            },
            Case {
                fixture: include_str!("../testdata/fixtures/heat/stack-show-update-complete.json"),
                status: "UPDATE_COMPLETE",
                reason: "Stack UPDATE completed successfully",
                api_address: Some(Some("192.0.2.10")),
                workers: Some(ips(&[
                    "10.0.0.29",
                    "10.0.0.00",
                    "10.0.0.47",
                    "10.0.0.23",
                    "10.0.0.06",
                ])),
                worker_count: Some(5),
            },
            Case {
                fixture: include_str!(
                    "../testdata/fixtures/heat/stack-show-create-complete-none-mapping.json"
                ),
                status: "CREATE_COMPLETE",
                reason: "Stack CREATE completed successfully",
                api_address: Some(None),
                workers: Some(vec![None, None]),
                worker_count: None,
            },
            Case {
                fixture: include_str!("../testdata/fixtures/heat/stack-show-create-failed.json"),
                status: "CREATE_FAILED",
                reason: "Resource CREATE failed: ValueError: resources.boom: Test Resource failed boom",
                api_address: None,
                workers: None,
                worker_count: None,
            },
            Case {
                fixture: include_str!("../testdata/fixtures/heat/stack-show-delete-complete.json"),
                status: "DELETE_COMPLETE",
                reason: "Stack DELETE completed successfully",
                api_address: None,
                workers: None,
                worker_count: Some(5),
            },
        ];
        for case in cases {
            let stack = Stack::parse(&body_of(case.fixture)).expect("parses");
            assert_eq!(stack.status.to_string(), case.status);
            assert_eq!(stack.status_reason, case.reason);
            assert_eq!(stack.timeout_mins, Some(10));
            match case.api_address {
                Some(expected) => assert_eq!(
                    stack
                        .output_text("api_address")
                        .expect("an output")
                        .as_deref(),
                    expected
                ),
                None => {
                    let error = stack.output_text("api_address").expect_err("no outputs");
                    assert!(error.to_string().contains("absent"), "{error}");
                }
            }
            if let Some(workers) = case.workers {
                assert_eq!(stack.output_texts("worker_ips").expect("a list"), workers);
            }
            match case.worker_count {
                Some(n) => assert_eq!(
                    stack.parameter_integer("worker_count").expect("a number"),
                    n
                ),
                None if case.status == "CREATE_COMPLETE" => {
                    // k8s-none keeps the template's default (no worker_count given): "2".
                    assert_eq!(
                        stack.parameter_integer("worker_count").expect("a number"),
                        2
                    );
                }
                None => assert!(stack.parameter_integer("worker_count").is_err()),
            }
            assert!(
                !format!("{stack:?}").contains("redacted:random-string"),
                "output values stay out of Debug"
            );
        }
    }

    #[test]
    fn typed_accessors_say_what_they_found() {
        let body = json!({"stack": {
            "id": "1", "stack_name": "s", "stack_status": "CREATE_COMPLETE",
            "parameters": {"worker_count": "three", "flag": true},
            "outputs": [
                {"output_key": "list", "output_value": ["a", {"x": 1}]},
                {"output_key": "number", "output_value": 7},
                {"output_key": "numeric_text", "output_value": " 8 "},
                {"output_key": "map", "output_value": {"k": "v"}},
                {"output_key": "broken", "output_value": null, "output_error": "The Referenced Attribute (x y) is incorrect."},
            ],
        }});
        let stack = Stack::parse(&serde_json::to_vec(&body).expect("json")).expect("parses");
        assert_eq!(stack.output_integer("number").expect("number"), Some(7));
        assert_eq!(
            stack.output_integer("numeric_text").expect("number"),
            Some(8)
        );
        assert_eq!(stack.parameter("flag"), Some("true"));
        let cases = [
            (
                stack.output_texts("list").map(|_| ()),
                "output list: item 1 is a map where text was expected",
            ),
            (
                stack.output_text("map").map(|_| ()),
                "output map: a map where text was expected",
            ),
            (
                stack.output_texts("number").map(|_| ()),
                "a number where a list was expected",
            ),
            (
                stack.output_text("broken").map(|_| ()),
                "The Referenced Attribute (x y) is incorrect.",
            ),
            (
                stack.parameter_integer("worker_count").map(|_| ()),
                "parameter worker_count: \"three\" is not an integer",
            ),
            (
                stack.output_text("nope").map(|_| ()),
                "absent; the stack (CREATE_COMPLETE) has list, number",
            ),
        ];
        for (got, words) in cases {
            let error = got.expect_err(words);
            assert!(error.to_string().contains(words), "{error} lacks {words}");
            assert!(error.to_string().starts_with("stack s/1: "), "{error}");
        }
    }

    #[test]
    fn statuses() {
        let cases = [
            (
                "CREATE_IN_PROGRESS",
                Ok((Action::Create, State::InProgress)),
            ),
            ("UPDATE_COMPLETE", Ok((Action::Update, State::Complete))),
            ("ROLLBACK_FAILED", Ok((Action::Rollback, State::Failed))),
            ("INIT_COMPLETE", Ok((Action::Init, State::Complete))),
            ("DELETE_COMPLETE", Ok((Action::Delete, State::Complete))),
            ("CREATE", Err("not ACTION_STATE")),
            ("EXPLODE_COMPLETE", Err("unknown action EXPLODE")),
            ("CREATE_DONE", Err("unknown state DONE")),
        ];
        for (text, expected) in cases {
            match (text.parse::<Status>(), expected) {
                (Ok(status), Ok((action, state))) => {
                    assert_eq!((status.action, status.state), (action, state));
                    assert_eq!(status.to_string(), text);
                }
                (Err(error), Err(words)) => assert!(error.contains(words), "{error}"),
                (got, expected) => panic!("{text}: {got:?} vs {expected:?}"),
            }
        }
    }

    #[test]
    fn recorded_resource_list_counts_as_complete() {
        let resources = Resource::parse_list(&body_of(include_str!(
            "../testdata/fixtures/heat/stack-resources-list.json"
        )))
        .expect("parses");
        assert_eq!(resources.len(), 12);
        let workers = resources
            .iter()
            .find(|r| r.name == "workers")
            .expect("workers");
        assert_eq!(workers.resource_type, "OS::Heat::ResourceGroup");
        assert_eq!(
            workers.physical_id.as_deref(),
            Some("8f486065-127e-4b96-9a89-67a6c406b611")
        );
        assert_eq!(workers.stack_name.as_deref(), Some("k8s-prov"));
        assert_eq!(workers.parent, None);
        let status: Status = "CREATE_COMPLETE".parse().expect("a status");
        let progress = Progress::count(status, &resources);
        assert_eq!(
            progress.to_string(),
            "CREATE_COMPLETE: 12 of 12 resources complete"
        );
        let failure = Failure::new(
            Stack::parse(&body_of(include_str!(
                "../testdata/fixtures/heat/stack-show-create-complete.json"
            )))
            .expect("parses"),
            &resources,
        );
        assert!(failure.resources.is_empty());
    }

    fn resource(
        name: &str,
        status: &str,
        parent: Option<&str>,
        stack: &str,
        reason: &str,
    ) -> Resource {
        Resource {
            name: name.into(),
            resource_type: if parent.is_some() {
                "OS::Heat::TestResource"
            } else {
                "OS::Heat::ResourceGroup"
            }
            .into(),
            status: status.parse().expect("a status"),
            status_reason: reason.into(),
            physical_id: None,
            parent: parent.map(str::to_owned),
            stack_name: Some(stack.into()),
        }
    }

    /// Shapes of `?nested_depth=2` (documented: `parent_resource` on nested ones): a group
    /// whose member failed lists the member first, and the reason names it.
    #[test]
    fn failures_name_the_innermost_failed_resource() {
        let stack = Stack::parse(&body_of(include_str!(
            "../testdata/fixtures/heat/stack-show-create-failed.json"
        )))
        .expect("parses");
        let resources = [
            resource(
                "workers",
                "CREATE_FAILED",
                None,
                "failing",
                "ValueError: resources.workers.resources[1]: Test Resource failed 1",
            ),
            resource(
                "0",
                "CREATE_COMPLETE",
                Some("workers"),
                "failing-workers-x",
                "state changed",
            ),
            resource(
                "1",
                "CREATE_FAILED",
                Some("workers"),
                "failing-workers-x",
                "ValueError: Test Resource failed 1",
            ),
            resource(
                "2",
                "INIT_COMPLETE",
                Some("workers"),
                "failing-workers-x",
                "",
            ),
        ];
        let failure = Failure::new(stack, &resources);
        let names: Vec<&str> = failure.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["1", "workers"]);
        assert_eq!(
            failure.reason(),
            "stack failing CREATE_FAILED: Resource CREATE failed: ValueError: resources.boom: \
             Test Resource failed boom; failed: resource 1 (OS::Heat::TestResource) in nested \
             stack failing-workers-x CREATE_FAILED: ValueError: Test Resource failed 1"
        );
        let progress = Progress::count(failure.stack.status, &resources);
        assert_eq!(
            progress.to_string(),
            "CREATE_FAILED: 1 of 4 resources complete, 2 failed"
        );
    }

    #[test]
    fn stack_names_and_ids() {
        let cases = [
            ("k8s-prov", true),
            ("a", true),
            ("ferry.cluster_1-b", true),
            ("1abc", false),
            ("", false),
            ("a/b", false),
            ("a b", false),
            ("a?b", false),
            ("ünïcode", false),
        ];
        for (name, valid) in cases {
            assert_eq!(check_stack_name(name).is_ok(), valid, "{name}");
        }
        assert!(check_stack_name(&"a".repeat(256)).is_err());
        let id = StackId {
            name: "k8s-prov".into(),
            id: "3febeebd-de71-4800-8700-fb7a39f65a40".into(),
        };
        assert_eq!(StackId::parse(&id.to_string()), Some(id));
        assert_eq!(StackId::parse("k8s-prov"), None);
        assert_eq!(StackId::parse("k8s/a/b"), None);
    }

    #[test]
    fn recorded_create_and_lookup_answers_give_the_stack_id() {
        let created: CreatedBody = serde_json::from_slice(&body_of(include_str!(
            "../testdata/fixtures/heat/stack-create-201.json"
        )))
        .expect("parses");
        assert_eq!(created.stack.id, "3febeebd-de71-4800-8700-fb7a39f65a40");
        let found: Value = serde_json::from_str(include_str!(
            "../testdata/fixtures/heat/stack-show-by-name-302.json"
        ))
        .expect("JSON");
        let location = found["headers"]["Location"].as_str().expect("a Location");
        assert_eq!(
            id_in_location(location).as_deref(),
            Some("3febeebd-de71-4800-8700-fb7a39f65a40")
        );
        assert_eq!(
            id_in_location("http://h/v1/p/stacks/n/abc/?x=1").as_deref(),
            Some("abc")
        );
        assert_eq!(
            stack_name_in("http://h/v1/p/stacks/k8s-prov-workers-zzz/1234/resources/0").as_deref(),
            Some("k8s-prov-workers-zzz")
        );
    }

    #[test]
    fn the_create_body_sends_templates_as_text() {
        let template = include_str!("../testdata/k8s-cluster.yaml");
        let environment = include_str!("../testdata/env-provider.yaml");
        let new = NewStack::new("k8s", template)
            .environment(environment)
            .file("fake_server.yaml", "x")
            .parameter("worker_count", 3)
            .timeout(Duration::from_secs(61));
        let body = new.body();
        assert_eq!(body["template"], template, "untouched");
        assert!(template.starts_with("heat_template_version: 2018-08-31\n"));
        assert_eq!(body["environment"], environment);
        assert_eq!(body["files"], json!({"fake_server.yaml": "x"}));
        assert_eq!(body["parameters"], json!({"worker_count": 3}));
        assert_eq!(body["timeout_mins"], 2, "rounded up");
        assert_eq!(body["disable_rollback"], true);
        assert!(body.get("tags").is_none());
        let shown = format!("{new:?}");
        assert!(
            shown.contains("worker_count") && !shown.contains("OS::Nova::Server"),
            "{shown}"
        );
    }
}
