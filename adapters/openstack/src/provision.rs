//! Ferry's Kubernetes clusters on OpenStack, provisioned through Heat.
//!
//! The template is Ferry's own (`adapters/openstack/heat/`, embedded in the binary): a
//! network behind a router, a kubeadm control plane, a group of workers and an Octavia
//! load balancer in front of the API. Its infrastructure parts are `Ferry::…` types that
//! `environment.yaml` maps to nested templates, as Magnum maps `Magnum::Optional::…`;
//! a Cluster file may name one more environment, merged into Ferry's here (its mappings
//! and parameter defaults win), and sent as one. That is how an operator swaps a part (a
//! network that already exists, servers with volumes) and how the tests stand in
//! provider templates for Nova, Neutron and Octavia, which cannot run here.
//!
//! The merge is Ferry's, not Heat's: given Ferry's environment in `environment` and the
//! other in `environment_files`, Heat 19 (Zed) answered "The Resource Type
//! (Ferry::Network) could not be found" for a stack whose second environment mapped
//! other types only, i.e. the first environment's mappings were lost.
//!
//! Flow: [`ClusterRequest::new`] checks the parameters before anything is sent (Heat's
//! `/validate` does not enforce constraints); [`ClusterRequest::new_stack`] is the create
//! body; once the stack is complete, [`ClusterAccess::from_stack`] reads the API address
//! and the access the control plane signalled (the cluster CA and the token of a
//! ServiceAccount bound to `deploy/ferry-clusterrole.yaml`). Ferry keeps no copy of that
//! token: it reads it from the stack when it connects. [`HeatClusters`] is the
//! [`Provisioner`] (resize is a `worker_count` update).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::RwLock;

use async_trait::async_trait;
use base64::Engine as _;
use ferry_ports::{Operation, PortError, Provisioner};
use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlLoader};

use crate::error::{Error, Result};
use crate::heat::{Created, Heat, NewStack, Stack, StackId, check_stack_name};
use crate::secret::Secret;

/// The cluster template (`heat/cluster.yaml`).
pub const CLUSTER_TEMPLATE: &str = include_str!("../heat/cluster.yaml");
/// Ferry's mapping of the template's `Ferry::…` types to its nested templates.
pub const DEFAULT_ENVIRONMENT: &str = include_str!("../heat/environment.yaml");
/// Every file the template and its nested templates name, by the name they use.
pub const TEMPLATE_FILES: [(&str, &str); 8] = [
    ("network.yaml", include_str!("../heat/network.yaml")),
    ("api-lb.yaml", include_str!("../heat/api-lb.yaml")),
    ("master.yaml", include_str!("../heat/master.yaml")),
    ("worker.yaml", include_str!("../heat/worker.yaml")),
    ("node-prepare.sh", include_str!("../heat/node-prepare.sh")),
    (
        "master-bootstrap.sh",
        include_str!("../heat/master-bootstrap.sh"),
    ),
    (
        "worker-bootstrap.sh",
        include_str!("../heat/worker-bootstrap.sh"),
    ),
    // One ClusterRole for every cluster Ferry reaches, provisioned or not.
    (
        "ferry-clusterrole.yaml",
        include_str!("../../../deploy/ferry-clusterrole.yaml"),
    ),
];

/// What a template parameter accepts. The table below is the template's `parameters`
/// section (a unit test keeps them equal), checked here because Heat checks constraints
/// only at create, after a round trip, and `/validate` not at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rule {
    /// Required, not empty.
    Required,
    /// Optional text.
    Text,
    /// An integer in a range.
    Integer(i64, i64),
    /// `cluster_name`: `[a-z][a-z0-9-]{0,39}`.
    ClusterName,
}

const PARAMETERS: [(&str, Rule); 15] = [
    ("cluster_name", Rule::ClusterName),
    ("image", Rule::Required),
    ("master_flavor", Rule::Required),
    ("worker_flavor", Rule::Required),
    ("worker_count", Rule::Integer(1, 50)),
    ("key_name", Rule::Text),
    ("external_network", Rule::Required),
    ("cidr", Rule::Text),
    ("dns_nameservers", Rule::Text),
    ("admin_cidr", Rule::Text),
    ("api_port", Rule::Integer(1, 65535)),
    ("kubernetes_version", Rule::Text),
    ("pod_cidr", Rule::Text),
    ("cni_manifest_url", Rule::Text),
    ("bootstrap_timeout", Rule::Integer(60, 86_400)),
];

/// Whether the template accepts `workers` as its `worker_count`; the reason if not.
pub fn check_worker_count(workers: u32) -> std::result::Result<(), String> {
    match PARAMETERS.iter().find(|(n, _)| *n == "worker_count") {
        Some((_, Rule::Integer(min, max))) if !(*min..=*max).contains(&i64::from(workers)) => Err(
            format!("the worker count must be from {min} to {max}, not {workers}"),
        ),
        _ => Ok(()),
    }
}

/// The worker count when the Cluster file sets none (the template's default).
pub const DEFAULT_WORKERS: u32 = 3;

fn invalid(what: impl Into<String>, message: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: what.into(),
        message: message.into(),
    }
}

fn check_cluster_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 40
}

/// One more environment for the stack, with the files its `resource_registry` names
/// (read relative to the environment's own folder, sent under the names it uses).
#[derive(Clone, PartialEq, Eq)]
pub struct Environment {
    /// Its file name, for messages.
    pub name: String,
    /// Ferry's environment with this one merged in, as JSON (which Heat reads as YAML).
    pub merged_into_default: String,
    pub files: BTreeMap<String, String>,
}

impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Environment")
            .field("name", &self.name)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Environment {
    /// Reads an environment file and the provider templates its `resource_registry`
    /// maps types to. A mapping to another type (`OS::Heat::None`) needs no file.
    pub fn read(path: &Path) -> Result<Environment> {
        let what = || format!("environment {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| invalid(what(), e.to_string()))?;
        let mut environment =
            Environment::parse(&text, BTreeMap::new()).map_err(|m| invalid(what(), m))?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid(what(), "the path has no file name"))?
            .to_owned();
        let folder = path.parent().unwrap_or(Path::new("."));
        let mut files = BTreeMap::new();
        for reference in Environment::referenced_files(&text).map_err(|m| invalid(what(), m))? {
            if TEMPLATE_FILES.iter().any(|(n, _)| *n == reference) || reference == name {
                return Err(invalid(
                    what(),
                    format!("`{reference}` is the name of one of Ferry's own files; rename it"),
                ));
            }
            let file = folder.join(&reference);
            let content = std::fs::read_to_string(&file)
                .map_err(|e| invalid(what(), format!("{}: {e}", file.display())))?;
            files.insert(reference, content);
        }
        environment.name = name;
        environment.files = files;
        Ok(environment)
    }

    /// An environment from its text and the files it names, merged into Ferry's.
    pub fn parse(
        text: &str,
        files: BTreeMap<String, String>,
    ) -> std::result::Result<Environment, String> {
        let theirs = yaml_document(text)?;
        if !matches!(theirs, Value::Object(_) | Value::Null) {
            return Err("an environment is a mapping".to_owned());
        }
        let mut merged = yaml_document(DEFAULT_ENVIRONMENT)?;
        merge(&mut merged, theirs);
        Ok(Environment {
            name: "environment".to_owned(),
            merged_into_default: merged.to_string(),
            files,
        })
    }

    /// The file names among the `resource_registry`'s values.
    fn referenced_files(text: &str) -> std::result::Result<Vec<String>, String> {
        let documents = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
        let Some(document) = documents.first() else {
            return Ok(Vec::new());
        };
        let registry = match &document["resource_registry"] {
            Yaml::BadValue | Yaml::Null => return Ok(Vec::new()),
            Yaml::Hash(registry) => registry,
            _ => return Err("resource_registry is not a mapping".to_owned()),
        };
        let mut files = Vec::new();
        for (key, value) in registry {
            match value {
                // Type names have `::`; anything else is a template file.
                Yaml::String(target) if !target.contains("::") => files.push(target.clone()),
                Yaml::String(_) => {}
                // Per-resource mappings (`resources:`) are Heat's too, but Ferry reads
                // no files from them: say so rather than send a stack that cannot work.
                _ => {
                    return Err(format!(
                        "resource_registry entry {} is not a type or a file name; only those are supported",
                        key.as_str().unwrap_or("?")
                    ));
                }
            }
        }
        Ok(files)
    }
}

/// The first document of a YAML text as JSON (keys as text).
fn yaml_document(text: &str) -> std::result::Result<Value, String> {
    let documents = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    documents.first().map_or(Ok(Value::Null), json_of)
}

fn json_of(yaml: &Yaml) -> std::result::Result<Value, String> {
    Ok(match yaml {
        Yaml::Null | Yaml::BadValue => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| Value::String(text.clone()), Value::Number),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(items) => Value::Array(
            items
                .iter()
                .map(json_of)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Yaml::Hash(map) => {
            let mut object = Map::new();
            for (key, value) in map {
                let key = match key {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => return Err(format!("a mapping key that is not text: {other:?}")),
                };
                object.insert(key, json_of(value)?);
            }
            Value::Object(object)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not supported in environments".to_owned()),
    })
}

/// Heat's own merge of environments: mappings merge key by key, anything else is
/// replaced by the later value.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                match into.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        into.insert(key, value);
                    }
                }
            }
        }
        (_, Value::Null) => {}
        (into, from) => *into = from,
    }
}

/// A cluster to create: the stack name, the template parameters and an optional extra
/// environment, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterRequest {
    pub stack: String,
    pub parameters: BTreeMap<String, String>,
    pub environment: Option<Environment>,
}

impl ClusterRequest {
    /// Checks the stack name and every parameter against the template; `cluster_name`
    /// defaults to the stack name. Every problem is reported, not only the first.
    pub fn new(
        stack: &str,
        parameters: &BTreeMap<String, String>,
        environment: Option<Environment>,
    ) -> Result<ClusterRequest> {
        check_stack_name(stack)?;
        let mut parameters = parameters.clone();
        parameters
            .entry("cluster_name".to_owned())
            .or_insert_with(|| stack.to_owned());
        let mut problems = Vec::new();
        for key in parameters.keys() {
            if !PARAMETERS.iter().any(|(name, _)| name == key) {
                problems.push(format!(
                    "unknown parameter `{key}`; the template has {}",
                    PARAMETERS.map(|(n, _)| n).join(", ")
                ));
            }
        }
        for (name, rule) in PARAMETERS {
            let value = parameters.get(name).map(String::as_str);
            match (rule, value) {
                (Rule::Required, None) => problems.push(format!("`{name}` is required")),
                (Rule::Required, Some(v)) if v.trim().is_empty() => {
                    problems.push(format!("`{name}` is empty"));
                }
                (Rule::Integer(min, max), Some(v)) => match v.trim().parse::<i64>() {
                    Ok(n) if (min..=max).contains(&n) => {}
                    _ => problems.push(format!(
                        "`{name}` must be an integer from {min} to {max}, not `{v}`"
                    )),
                },
                (Rule::ClusterName, Some(v)) if !check_cluster_name(v) => problems.push(format!(
                    "`{name}` must be a lowercase letter, then lowercase letters, digits or `-`, at most 40 (not `{v}`); set it when the stack name does not fit"
                )),
                _ => {}
            }
        }
        if problems.is_empty() {
            Ok(ClusterRequest {
                stack: stack.to_owned(),
                parameters,
                environment,
            })
        } else {
            Err(invalid(
                format!("parameters of stack {stack}"),
                problems.join("; "),
            ))
        }
    }

    /// The worker count asked for.
    pub fn workers(&self) -> u32 {
        self.parameters
            .get("worker_count")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_WORKERS)
    }

    /// The create body: Ferry's template and files, the environment (Ferry's, with the
    /// extra one merged in) and the extra environment's files.
    pub fn new_stack(&self) -> NewStack {
        let mut stack = NewStack::new(&self.stack, CLUSTER_TEMPLATE);
        for (name, text) in TEMPLATE_FILES {
            stack = stack.file(name, text);
        }
        stack = match &self.environment {
            Some(environment) => {
                for (name, text) in &environment.files {
                    stack = stack.file(name, text);
                }
                stack.environment(&environment.merged_into_default)
            }
            None => stack.environment(DEFAULT_ENVIRONMENT),
        };
        for (key, value) in &self.parameters {
            stack = stack.parameter(key, value.clone());
        }
        stack.tags.push("ferry".to_owned());
        stack
    }
}

/// How Ferry reaches a provisioned cluster's API: from the stack's outputs.
#[derive(Clone)]
pub struct ClusterAccess {
    /// `https://host:port`.
    pub api_url: String,
    /// The cluster CA's PEM, base64-encoded (kubeconfig's `certificate-authority-data`).
    pub ca_base64: String,
    /// The ServiceAccount token the control plane made for Ferry.
    pub token: Secret,
}

impl fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("api_url", &self.api_url)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl ClusterAccess {
    /// Reads `api_host`, `api_port` and `cluster_access` from a complete stack. Each
    /// missing or malformed part is an error that names it; the token's value never
    /// appears in one.
    pub fn from_stack(stack: &Stack) -> Result<ClusterAccess> {
        let what = || format!("outputs of stack {}", stack.id);
        let host = stack
            .output_text("api_host")?
            .filter(|h| !h.trim().is_empty())
            .ok_or_else(|| {
                invalid(
                    what(),
                    "api_host is empty (is the load balancer mapped to OS::Heat::None?)",
                )
            })?;
        let port = stack
            .output_integer("api_port")?
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(|| invalid(what(), "api_port is not a port number"))?;
        let access = match &stack.output("cluster_access")?.value {
            // Heat's WaitCondition `data` is a JSON document in a string.
            Value::String(text) => serde_json::from_str::<Value>(text)
                .map_err(|_| invalid(what(), "cluster_access is not a JSON object"))?,
            Value::Null => {
                return Err(invalid(
                    what(),
                    "cluster_access is empty: the control plane signalled nothing",
                ));
            }
            other => other.clone(),
        };
        let ca_base64 = access["ca"]
            .as_str()
            .map(str::trim)
            .filter(|ca| !ca.is_empty())
            .ok_or_else(|| invalid(what(), "cluster_access has no `ca`"))?
            .to_owned();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(&ca_base64)
            .map_err(|_| invalid(what(), "cluster_access `ca` is not base64"))?;
        if !pem.starts_with(b"-----BEGIN CERTIFICATE-----") {
            return Err(invalid(
                what(),
                "cluster_access `ca` is not a PEM certificate",
            ));
        }
        let token = access["token"]
            .as_str()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid(what(), "cluster_access has no `token`"))?;
        // An IPv6 address needs brackets in a URL.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(ClusterAccess {
            api_url: format!("https://{host}:{port}"),
            ca_base64,
            token: Secret::new(token),
        })
    }
}

/// Ferry's Heat-provisioned clusters of one cloud: which stack each is, and the
/// [`Provisioner`] over them.
#[derive(Debug)]
pub struct HeatClusters {
    heat: Heat,
    stacks: RwLock<BTreeMap<String, StackId>>,
}

impl HeatClusters {
    pub fn new(heat: Heat) -> HeatClusters {
        HeatClusters {
            heat,
            stacks: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn heat(&self) -> &Heat {
        &self.heat
    }

    /// Creates (or adopts) the cluster's stack and remembers it. Journal the returned
    /// [`StackId`] before following it, so that a restart resumes instead of creating.
    pub async fn create(&self, cluster: &str, request: &ClusterRequest) -> Result<Created> {
        let created = self.heat.create(&request.new_stack()).await?;
        self.register(cluster, created.stack.clone());
        Ok(created)
    }

    /// Remembers that `cluster` is `stack` (after a restart, from the journal).
    pub fn register(&self, cluster: &str, stack: StackId) {
        let mut stacks = self.stacks.write().unwrap_or_else(|p| p.into_inner());
        stacks.insert(cluster.to_owned(), stack);
    }

    pub fn forget(&self, cluster: &str) {
        let mut stacks = self.stacks.write().unwrap_or_else(|p| p.into_inner());
        stacks.remove(cluster);
    }

    pub fn stack(&self, cluster: &str) -> Option<StackId> {
        let stacks = self.stacks.read().unwrap_or_else(|p| p.into_inner());
        stacks.get(cluster).cloned()
    }

    fn known(&self, cluster: &str) -> Result<StackId> {
        self.stack(cluster).ok_or_else(|| {
            invalid(
                format!("cluster {cluster}"),
                "Ferry provisioned no Heat stack for it",
            )
        })
    }

    /// The API address and access of a provisioned cluster, read from its stack.
    pub async fn access(&self, cluster: &str) -> Result<ClusterAccess> {
        let stack = self.heat.show(&self.known(cluster)?).await?;
        ClusterAccess::from_stack(&stack)
    }

    /// Asks Heat to delete the cluster's stack; the operation to follow.
    pub async fn delete(&self, cluster: &str) -> Result<Operation> {
        let stack = self.known(cluster)?;
        self.heat.delete(&stack).await?;
        Ok(Operation::Running {
            id: stack.to_string(),
            progress: "delete requested".to_owned(),
        })
    }
}

#[async_trait]
impl Provisioner for HeatClusters {
    /// A `PATCH` of `worker_count`: Heat's ResourceGroup adds or removes workers, and
    /// every other parameter stays as it was.
    async fn resize(&self, cluster: &str, nodes: u32) -> std::result::Result<Operation, PortError> {
        let stack = self.known(cluster).map_err(|e| e.to_port_error(cluster))?;
        check_worker_count(nodes).map_err(|e| {
            invalid(format!("resize of cluster {cluster}"), e).to_port_error(cluster)
        })?;
        let mut parameters = Map::new();
        parameters.insert("worker_count".to_owned(), Value::from(nodes));
        self.heat
            .update_parameters(&stack, &parameters)
            .await
            .map_err(|e| e.to_port_error(cluster))?;
        Ok(Operation::Running {
            id: stack.to_string(),
            progress: format!("worker_count → {nodes} requested"),
        })
    }

    async fn operation(&self, id: &str) -> std::result::Result<Operation, PortError> {
        let stack = StackId::parse(id).ok_or_else(|| {
            invalid("operation id", format!("`{id}` is not a stack's name/id")).to_port_error(id)
        })?;
        // The stack's name is the closest thing to a cluster name an operation id has.
        self.heat
            .operation(&stack)
            .await
            .map_err(|e| e.to_port_error(&stack.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const MINIMAL: [(&str, &str); 4] = [
        ("image", "ubuntu-24.04"),
        ("master_flavor", "m1.medium"),
        ("worker_flavor", "m1.large"),
        ("external_network", "public"),
    ];

    /// The rule table is the template's parameter list: same names, and exactly the
    /// ones without a default are required.
    #[test]
    fn the_rules_are_the_templates_parameters() {
        let template =
            &YamlLoader::load_from_str(CLUSTER_TEMPLATE).expect("the template is YAML")[0];
        let declared = template["parameters"]
            .as_hash()
            .expect("parameters is a mapping");
        let names: Vec<&str> = declared.keys().filter_map(Yaml::as_str).collect();
        assert_eq!(names, PARAMETERS.map(|(n, _)| n).to_vec());
        for (name, rule) in PARAMETERS {
            let spec = &template["parameters"][name];
            let has_default = !matches!(spec["default"], Yaml::BadValue);
            let required = matches!(rule, Rule::Required | Rule::ClusterName);
            assert_eq!(has_default, !required, "{name}");
        }
        // The ranges match the template's constraints where it has them.
        assert_eq!(
            template["parameters"]["worker_count"]["constraints"][0]["range"]["max"].as_i64(),
            Some(50)
        );
    }

    /// Every file a template names with get_file or the environment maps is sent.
    #[test]
    fn every_file_the_templates_name_is_sent() {
        let mut texts = vec![CLUSTER_TEMPLATE, DEFAULT_ENVIRONMENT];
        texts.extend(TEMPLATE_FILES.iter().map(|(_, t)| *t));
        for text in texts {
            for part in text.split("get_file: ").skip(1) {
                let name = part.split(['}', ']', '\n']).next().unwrap_or("").trim();
                assert!(
                    TEMPLATE_FILES.iter().any(|(n, _)| *n == name),
                    "get_file {name} is not sent"
                );
            }
        }
        for name in Environment::referenced_files(DEFAULT_ENVIRONMENT).expect("parses") {
            assert!(TEMPLATE_FILES.iter().any(|(n, _)| *n == name), "{name}");
        }
    }

    #[test]
    fn requests_are_checked_before_anything_is_sent() {
        struct Case {
            extra: &'static [(&'static str, &'static str)],
            drop: Option<&'static str>,
            stack: &'static str,
            error: Option<&'static str>,
        }
        let cases = [
            Case {
                extra: &[],
                drop: None,
                stack: "dc1",
                error: None,
            },
            Case {
                extra: &[("worker_count", "5")],
                drop: None,
                stack: "dc1",
                error: None,
            },
            Case {
                extra: &[("worker_count", "51")],
                drop: None,
                stack: "dc1",
                error: Some("`worker_count` must be an integer from 1 to 50, not `51`"),
            },
            Case {
                extra: &[("worker_count", "three")],
                drop: None,
                stack: "dc1",
                error: Some("not `three`"),
            },
            Case {
                extra: &[],
                drop: Some("image"),
                stack: "dc1",
                error: Some("`image` is required"),
            },
            Case {
                extra: &[("image", " ")],
                drop: None,
                stack: "dc1",
                error: Some("`image` is empty"),
            },
            Case {
                extra: &[("flavour", "m1.large")],
                drop: None,
                stack: "dc1",
                error: Some("unknown parameter `flavour`; the template has cluster_name, image"),
            },
            Case {
                extra: &[],
                drop: None,
                stack: "Upper.Case",
                error: Some("`cluster_name` must be a lowercase letter"),
            },
            Case {
                extra: &[("cluster_name", "dc1")],
                drop: None,
                stack: "Upper.Case",
                error: None,
            },
            Case {
                extra: &[],
                drop: None,
                stack: "1bad",
                error: Some("invalid stack name"),
            },
        ];
        for case in cases {
            let mut parameters = params(&MINIMAL);
            parameters.extend(params(case.extra));
            if let Some(key) = case.drop {
                parameters.remove(key);
            }
            let result = ClusterRequest::new(case.stack, &parameters, None);
            match (case.error, result) {
                (None, Ok(request)) => {
                    assert!(request.parameters.contains_key("cluster_name"));
                }
                (Some(expected), Err(error)) => {
                    let text = error.to_string();
                    assert!(text.contains(expected), "{text} lacks {expected}");
                }
                (expected, result) => {
                    panic!("{:?}: expected {expected:?}, got {result:?}", case.extra)
                }
            }
        }
    }

    #[test]
    fn the_create_body_carries_the_template_files_and_the_extra_environment_merged() {
        let environment = Environment::parse(
            "resource_registry: {\"Ferry::Master\": standin-master.yaml}\nparameter_defaults: {a: 1}\n",
            BTreeMap::from([("standin-master.yaml".to_owned(), "x".to_owned())]),
        )
        .expect("an environment");
        let request = ClusterRequest::new(
            "dc1",
            &params(&[MINIMAL.as_slice(), &[("worker_count", "4")]].concat()),
            Some(environment),
        )
        .expect("valid");
        assert_eq!(request.workers(), 4);
        let stack = request.new_stack();
        let sent: Value =
            serde_json::from_str(stack.environment.as_deref().expect("an environment"))
                .expect("JSON");
        // Ferry's mappings stay, the extra one replaces Master's, its defaults are added.
        assert_eq!(
            sent["resource_registry"]["Ferry::Master"],
            "standin-master.yaml"
        );
        assert_eq!(sent["resource_registry"]["Ferry::Network"], "network.yaml");
        assert_eq!(sent["parameter_defaults"]["a"], 1);
        for name in [
            "master.yaml",
            "ferry-clusterrole.yaml",
            "standin-master.yaml",
        ] {
            assert!(stack.files.contains_key(name), "{name}");
        }
        assert_eq!(stack.parameters["cluster_name"], "dc1");
        assert_eq!(stack.parameters["worker_count"], "4");
    }

    #[test]
    fn environments_name_their_files_and_may_not_shadow_ferrys() {
        let registry = "resource_registry:\n  \"Ferry::Master\": my-master.yaml\n  \"Ferry::ApiLoadBalancer\": \"OS::Heat::None\"\n";
        assert_eq!(
            Environment::referenced_files(registry).expect("parses"),
            vec!["my-master.yaml".to_owned()]
        );
        assert!(Environment::referenced_files("resource_registry: [a]\n").is_err());
        assert!(
            Environment::referenced_files("parameter_defaults: {a: 1}\n")
                .expect("parses")
                .is_empty()
        );
        let folder = std::env::temp_dir().join(format!("ferry-env-{}", std::process::id()));
        std::fs::create_dir_all(&folder).expect("temp folder");
        let path = folder.join("env.yaml");
        std::fs::write(
            &path,
            "resource_registry:\n  \"Ferry::Master\": master.yaml\n",
        )
        .expect("write");
        let error = Environment::read(&path).expect_err("shadows Ferry's master.yaml");
        assert!(
            error.to_string().contains("one of Ferry's own files"),
            "{error}"
        );
        std::fs::write(
            &path,
            "resource_registry:\n  \"Ferry::Master\": missing.yaml\n",
        )
        .expect("write");
        let error = Environment::read(&path).expect_err("missing file");
        assert!(error.to_string().contains("missing.yaml"), "{error}");
        std::fs::write(folder.join("mine.yaml"), "heat_template_version: queens\n").expect("write");
        std::fs::write(
            &path,
            "resource_registry:\n  \"Ferry::Master\": mine.yaml\n",
        )
        .expect("write");
        let environment = Environment::read(&path).expect("reads");
        assert_eq!(environment.name, "env.yaml");
        assert!(
            environment
                .merged_into_default
                .contains("\"Ferry::Master\":\"mine.yaml\"")
        );
        assert_eq!(
            environment.files.keys().collect::<Vec<_>>(),
            vec!["mine.yaml"]
        );
        let _ = std::fs::remove_dir_all(&folder);
    }

    fn stack_with(outputs: Value) -> Stack {
        let body = serde_json::json!({"stack": {
            "id": "3feb", "stack_name": "dc1", "stack_status": "CREATE_COMPLETE",
            "stack_status_reason": "Stack CREATE completed successfully",
            "parameters": {}, "outputs": outputs,
        }});
        Stack::parse(&serde_json::to_vec(&body).expect("json")).expect("a stack")
    }

    fn outputs(host: Value, port: Value, access: Value) -> Value {
        serde_json::json!([
            {"output_key": "api_host", "output_value": host},
            {"output_key": "api_port", "output_value": port},
            {"output_key": "cluster_access", "output_value": access},
        ])
    }

    #[test]
    fn access_is_read_from_the_outputs_and_each_bad_part_is_named() {
        let ca = base64::engine::general_purpose::STANDARD
            .encode("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
        let signalled = serde_json::json!({"ca": ca, "token": "tok-123"}).to_string();
        let access = ClusterAccess::from_stack(&stack_with(outputs(
            "203.0.113.7".into(),
            "6443".into(),
            signalled.clone().into(),
        )))
        .expect("complete outputs");
        assert_eq!(access.api_url, "https://203.0.113.7:6443");
        assert_eq!(access.ca_base64, ca);
        assert_eq!(access.token.expose(), "tok-123");
        assert!(!format!("{access:?}").contains("tok-123"));
        let v6 = ClusterAccess::from_stack(&stack_with(outputs(
            "2001:db8::7".into(),
            6443.into(),
            signalled.clone().into(),
        )))
        .expect("v6");
        assert_eq!(v6.api_url, "https://[2001:db8::7]:6443");
        let bad = [
            (
                outputs(Value::Null, "6443".into(), signalled.clone().into()),
                "api_host is empty",
            ),
            (
                outputs("h".into(), "0".into(), signalled.clone().into()),
                "api_port",
            ),
            (
                outputs("h".into(), "6443".into(), Value::Null),
                "signalled nothing",
            ),
            (
                outputs("h".into(), "6443".into(), "{".into()),
                "not a JSON object",
            ),
            (
                outputs(
                    "h".into(),
                    "6443".into(),
                    serde_json::json!({"token": "t"}).to_string().into(),
                ),
                "no `ca`",
            ),
            (
                outputs(
                    "h".into(),
                    "6443".into(),
                    serde_json::json!({"ca": "%%%", "token": "t"})
                        .to_string()
                        .into(),
                ),
                "not base64",
            ),
            (
                outputs(
                    "h".into(),
                    "6443".into(),
                    serde_json::json!({"ca": "aGVsbG8=", "token": "t"})
                        .to_string()
                        .into(),
                ),
                "not a PEM",
            ),
            (
                outputs(
                    "h".into(),
                    "6443".into(),
                    serde_json::json!({"ca": ca, "token": ""})
                        .to_string()
                        .into(),
                ),
                "no `token`",
            ),
        ];
        for (outputs, expected) in bad {
            let error = ClusterAccess::from_stack(&stack_with(outputs)).expect_err(expected);
            assert!(
                error.to_string().contains(expected),
                "{error} lacks {expected}"
            );
        }
    }
}
