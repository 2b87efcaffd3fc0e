//! Resource files: YAML documents of kind Cluster, Workload and PlacementPolicy, decoded
//! into the validated types of [`crate::model`] with every error located by file, line,
//! column and field path.
//!
//! Decoding is two-phase (as Vector's config compiler does): text is read into a
//! positioned tree ([`yaml`]), then each document is decoded by hand so that one bad field
//! does not hide the next. Checks across documents (unique names, references) follow in
//! [`check_references`].

mod fields;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;

use fields::{
    Ctx, Fields, boolean, cpu, dns_label, integer, is_dns_label, list, memory, number, scalar,
    string, string_list, string_map,
};
use yaml::{Node, Pos};

use crate::model::{
    Cluster, Connection, GkeConnection, Health, KubeconfigRef, Objective, OpenstackConnection,
    OpenstackProvisioner, Overrides, PlacementPolicy, PreferredTerm, Pricing, Provider,
    RebalanceRules, Spread, Taint, TaintEffect, Toleration, TolerationOperator, Workload,
    WorkloadScope, WorkloadSelector,
};
use crate::quantity::{Resources, parse_duration};
use crate::selector::{LabelExpression, LabelSelector, SelectorOperator};
use crate::window::Window;

/// The `apiVersion` of every Ferry resource.
pub const API_VERSION: &str = "ferry.dev/v1alpha1";

/// One problem in a resource file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// The file, as the user named it.
    pub file: String,
    /// Where the offending node starts.
    pub pos: Pos,
    /// The field path, such as `spec.pricing.cpuCoreHour`; empty for the document itself.
    pub path: String,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: ",
            Printable(&self.file),
            self.pos.line,
            self.pos.column
        )?;
        if !self.path.is_empty() {
            write!(f, "{}: ", Printable(&self.path))?;
        }
        write!(f, "{}", Printable(&self.message))
    }
}

/// Text from a file, safe to show on a terminal: control characters, bidirectional
/// overrides and invisible characters (which can hide or reorder what a user reads) are
/// shown as `\u{..}` escapes.
struct Printable<'a>(&'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            let hidden = c.is_control()
                || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}');
            if hidden {
                write!(f, "{}", c.escape_unicode())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// A decoded resource and where it was defined.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// The file.
    pub file: String,
    /// Where the document starts.
    pub pos: Pos,
    /// Where some of its fields are (`status.cluster`, `spec.priority`,
    /// `spec.clusterAffinity.required`), so that the checks across documents point at the
    /// field rather than at the document.
    pub fields: BTreeMap<String, Pos>,
    /// The resource.
    pub value: T,
}

impl<T> Located<T> {
    /// Where field `path` is, or the document's start when it was not marked.
    pub fn pos_of(&self, path: &str) -> Pos {
        self.fields.get(path).copied().unwrap_or(self.pos)
    }
}

/// The resource kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    /// A member cluster (boxed: it is several times the size of the other kinds).
    Cluster(Box<Cluster>),
    /// A workload (offline planning input).
    Workload(Workload),
    /// A placement policy.
    Policy(PlacementPolicy),
}

/// Everything read from a set of files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSet {
    /// Clusters, in file order.
    pub clusters: Vec<Located<Cluster>>,
    /// Workloads, in file order.
    pub workloads: Vec<Located<Workload>>,
    /// Policies, in file order.
    pub policies: Vec<Located<PlacementPolicy>>,
}

impl ResourceSet {
    /// Adds every document of one file, returning the file's diagnostics.
    pub fn add_source(&mut self, file: &str, text: &str) -> Vec<Diagnostic> {
        let (resources, diagnostics) = parse_source(file, text);
        for located in resources {
            let Located {
                file,
                pos,
                fields,
                value,
            } = located;
            match value {
                Resource::Cluster(value) => self.clusters.push(Located {
                    file,
                    pos,
                    fields,
                    value: *value,
                }),
                Resource::Workload(value) => self.workloads.push(Located {
                    file,
                    pos,
                    fields,
                    value,
                }),
                Resource::Policy(value) => self.policies.push(Located {
                    file,
                    pos,
                    fields,
                    value,
                }),
            }
        }
        diagnostics
    }
}

/// Decodes every document of one file. Documents with errors are left out of the
/// result; the diagnostics say why.
pub fn parse_source(file: &str, text: &str) -> (Vec<Located<Resource>>, Vec<Diagnostic>) {
    let mut ctx = Ctx::new(file);
    let documents = match yaml::parse_documents(text) {
        Ok(documents) => documents,
        Err(error) => {
            ctx.error(error.pos, "", format!("invalid YAML: {}", error.message));
            return (Vec::new(), ctx.diagnostics);
        }
    };
    let mut resources = Vec::new();
    for document in &documents {
        let before = ctx.diagnostics.len();
        let resource = decode_document(&mut ctx, document);
        let fields = std::mem::take(&mut ctx.marks);
        if let Some(resource) = resource.filter(|_| ctx.diagnostics.len() == before) {
            resources.push(Located {
                file: file.to_owned(),
                pos: document.pos,
                fields,
                value: resource,
            });
        }
    }
    ctx.diagnostics.sort();
    (resources, ctx.diagnostics)
}

fn decode_document(ctx: &mut Ctx<'_>, node: &Node) -> Option<Resource> {
    let mut doc = Fields::of(ctx, node, "")?;
    let api_version = doc
        .required(ctx, "apiVersion")
        .and_then(|n| string(ctx, n, "apiVersion").map(|v| (n, v)));
    if let Some((node, version)) = &api_version
        && version != API_VERSION
    {
        ctx.error(
            node.pos,
            "apiVersion",
            format!("expected `{API_VERSION}`, found `{version}`"),
        );
    }
    let kind_node = doc.required(ctx, "kind");
    let kind = kind_node.and_then(|n| string(ctx, n, "kind"));
    let metadata = doc.required(ctx, "metadata");
    let spec = doc.required(ctx, "spec");
    let status = doc.optional("status");
    doc.finish(ctx, &["apiVersion", "kind", "metadata", "spec", "status"]);
    let (kind, kind_node) = (kind?, kind_node?);
    match kind.as_str() {
        "Cluster" => {
            decode_cluster(ctx, metadata?, spec?, status).map(|c| Resource::Cluster(Box::new(c)))
        }
        "Workload" => decode_workload(ctx, metadata?, spec?, status).map(Resource::Workload),
        "PlacementPolicy" => {
            if let Some(status) = status {
                ctx.error(status.pos, "status", "a PlacementPolicy has no status");
            }
            decode_policy(ctx, metadata?, spec?).map(Resource::Policy)
        }
        other => {
            ctx.error(
                kind_node.pos,
                "kind",
                format!("unknown kind `{other}`; expected Cluster, Workload or PlacementPolicy"),
            );
            None
        }
    }
}

struct Metadata {
    name: String,
    namespace: Option<String>,
    labels: BTreeMap<String, String>,
}

fn decode_metadata(ctx: &mut Ctx<'_>, node: &Node, namespaced: bool) -> Option<Metadata> {
    let mut fields = Fields::of(ctx, node, "metadata")?;
    let name = fields
        .required(ctx, "name")
        .and_then(|n| dns_label(ctx, n, "metadata.name"));
    let namespace = if namespaced {
        Some(
            fields
                .optional("namespace")
                .map_or(Some("default".to_owned()), |n| {
                    dns_label(ctx, n, "metadata.namespace")
                }),
        )
    } else {
        None
    };
    let labels = fields
        .optional("labels")
        .map_or(Some(BTreeMap::new()), |n| labels(ctx, n, "metadata.labels"));
    let annotations = fields
        .optional("annotations")
        .map(|n| string_map(ctx, n, "metadata.annotations"));
    let known: &[&str] = if namespaced {
        &["name", "namespace", "labels", "annotations"]
    } else {
        &["name", "labels", "annotations"]
    };
    fields.finish(ctx, known);
    annotations.unwrap_or(Some(BTreeMap::new()))?;
    Some(Metadata {
        name: name?,
        namespace: namespace.flatten(),
        labels: labels?,
    })
}

/// Labels: keys and values as Kubernetes allows them (values at most 63 characters).
fn labels(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<BTreeMap<String, String>> {
    let map = string_map(ctx, node, path)?;
    let valid_value = |v: &str| {
        v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let mut ok = true;
    for (key, value) in &map {
        let name = key.rsplit('/').next().unwrap_or(key);
        if name.is_empty() || name.len() > 63 || !valid_value(name) || !valid_value(value) {
            ctx.error(
                node.pos,
                &format!("{path}.{key}"),
                format!("`{key}: {value}` is not a valid label"),
            );
            ok = false;
        }
    }
    ok.then_some(map)
}

fn decode_cluster(
    ctx: &mut Ctx<'_>,
    metadata: &Node,
    spec: &Node,
    status: Option<&Node>,
) -> Option<Cluster> {
    let metadata = decode_metadata(ctx, metadata, false);
    let mut fields = Fields::of(ctx, spec, "spec")?;
    let provider_node = fields.required(ctx, "provider");
    let provider = provider_node.and_then(|n| {
        let text = string(ctx, n, "spec.provider")?;
        let provider = match text.as_str() {
            "openstack" => Provider::Openstack,
            "gke" => Provider::Gke,
            "kubernetes" => Provider::Kubernetes,
            "sim" => Provider::Sim,
            _ => {
                ctx.error(
                    n.pos,
                    "spec.provider",
                    format!(
                        "unknown provider `{text}`; expected openstack, gke, kubernetes or sim"
                    ),
                );
                return None;
            }
        };
        Some(provider)
    });
    let openstack = fields
        .optional("openstack")
        .map(|n| decode_openstack(ctx, n));
    let gke = fields.optional("gke").map(|n| decode_gke(ctx, n));
    let kubernetes = fields
        .optional("kubernetes")
        .map(|n| decode_kubeconfig(ctx, n, "spec.kubernetes"));
    let pricing = fields
        .required(ctx, "pricing")
        .and_then(|n| decode_pricing(ctx, n));
    let capacity = fields
        .optional("capacity")
        .map(|n| decode_resources(ctx, n, "spec.capacity", true));
    let reserved = fields
        .optional("reserved")
        .map(|n| decode_resources(ctx, n, "spec.reserved", false));
    let taints = fields
        .optional("taints")
        .map(|n| list(ctx, n, "spec.taints", decode_taint));
    let scope = fields.optional("workloads").map(|n| decode_scope(ctx, n));
    let overrides = fields
        .optional("overrides")
        .map(|n| decode_overrides(ctx, n));
    let spec_pos = fields.pos();
    fields.finish(
        ctx,
        &[
            "provider",
            "openstack",
            "gke",
            "kubernetes",
            "pricing",
            "capacity",
            "reserved",
            "taints",
            "workloads",
            "overrides",
        ],
    );

    let health = match status {
        None => Some(None),
        Some(status) => decode_cluster_status(ctx, status).map(Some),
    };

    // Exactly one connection block, matching the provider.
    let blocks = [
        ("openstack", openstack.is_some()),
        ("gke", gke.is_some()),
        ("kubernetes", kubernetes.is_some()),
    ];
    let present: Vec<&str> = blocks
        .iter()
        .filter(|(_, p)| *p)
        .map(|(name, _)| *name)
        .collect();
    let provider = provider?;
    let connection = match provider {
        Provider::Sim if present.is_empty() => Some(Connection::Sim),
        Provider::Sim => {
            ctx.error(
                spec_pos,
                &format!("spec.{}", present[0]),
                "a `sim` cluster takes no connection block",
            );
            None
        }
        _ if present != [provider.as_str()] => {
            let found = if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            };
            ctx.error(
                spec_pos,
                "spec",
                format!(
                    "provider `{}` needs exactly one connection block `{}`; found {found}",
                    provider.as_str(),
                    provider.as_str()
                ),
            );
            None
        }
        Provider::Openstack => openstack.flatten().map(Connection::Openstack),
        Provider::Gke => gke.flatten().map(Connection::Gke),
        Provider::Kubernetes => kubernetes.flatten().map(Connection::Kubernetes),
    };
    let capacity = capacity.map_or(Some(None), |c| c.map(Some));
    let reserved = reserved.unwrap_or(Some(Resources::default()));
    let taints = taints.unwrap_or(Some(Vec::new()));
    let metadata = metadata?;
    Some(Cluster {
        name: metadata.name,
        labels: metadata.labels,
        provider,
        connection: connection?,
        pricing: pricing?,
        capacity: capacity?,
        reserved: reserved?,
        taints: taints?,
        health: health?,
        scope: scope.unwrap_or_else(|| Some(WorkloadScope::default()))?,
        overrides: overrides.unwrap_or_else(|| Some(Overrides::default()))?,
    })
}

/// `spec.workloads`: the namespaces listed and those carrying one label.
fn decode_scope(ctx: &mut Ctx<'_>, node: &Node) -> Option<WorkloadScope> {
    let path = "spec.workloads";
    let mut fields = Fields::of(ctx, node, path)?;
    let namespaces = fields.optional("namespaces").map(|n| {
        let names = string_list(ctx, n, "spec.workloads.namespaces")?;
        let bad: Vec<&String> = names.iter().filter(|name| !is_dns_label(name)).collect();
        if let Some(name) = bad.first() {
            ctx.error(
                n.pos,
                "spec.workloads.namespaces",
                format!("`{name}` is not a valid namespace name (a DNS-1123 label)"),
            );
            return None;
        }
        Some(names)
    });
    let label = fields.optional("namespaceLabel").map(|n| {
        let map = labels(ctx, n, "spec.workloads.namespaceLabel")?;
        if map.len() != 1 {
            ctx.error(
                n.pos,
                "spec.workloads.namespaceLabel",
                format!("one label `key: value` is expected; found {}", map.len()),
            );
            return None;
        }
        map.into_iter().next()
    });
    fields.finish(ctx, &["namespaces", "namespaceLabel"]);
    Some(WorkloadScope {
        namespaces: namespaces.unwrap_or_else(|| Some(Vec::new()))?,
        namespace_label: label.map_or(Some(None), |l| l.map(Some))?,
    })
}

/// `spec.overrides`: rewrites of what Ferry applies on this cluster.
fn decode_overrides(ctx: &mut Ctx<'_>, node: &Node) -> Option<Overrides> {
    let path = "spec.overrides";
    let mut fields = Fields::of(ctx, node, path)?;
    let mut map = |ctx: &mut Ctx<'_>, name: &str, as_labels: bool| {
        fields.optional(name).map(|n| {
            let field = format!("{path}.{name}");
            if as_labels {
                labels(ctx, n, &field)
            } else {
                string_map(ctx, n, &field)
            }
        })
    };
    let image_registries = map(ctx, "imageRegistries", false);
    let storage_classes = map(ctx, "storageClasses", false);
    let extra_labels = map(ctx, "labels", true);
    let annotations = map(ctx, "annotations", false);
    fields.finish(
        ctx,
        &["imageRegistries", "storageClasses", "labels", "annotations"],
    );
    let or_empty =
        |m: Option<Option<BTreeMap<String, String>>>| m.unwrap_or_else(|| Some(BTreeMap::new()));
    Some(Overrides {
        image_registries: or_empty(image_registries)?,
        storage_classes: or_empty(storage_classes)?,
        labels: or_empty(extra_labels)?,
        annotations: or_empty(annotations)?,
    })
}

fn decode_cluster_status(ctx: &mut Ctx<'_>, node: &Node) -> Option<Health> {
    let mut fields = Fields::of(ctx, node, "status")?;
    let health = fields.required(ctx, "health").and_then(|n| {
        let text = string(ctx, n, "status.health")?;
        match text.as_str() {
            "Ready" => Some(Health::Ready),
            "Degraded" => Some(Health::Degraded),
            "Unreachable" => Some(Health::Unreachable),
            _ => {
                ctx.error(
                    n.pos,
                    "status.health",
                    format!("unknown health `{text}`; expected Ready, Degraded or Unreachable"),
                );
                None
            }
        }
    });
    fields.finish(ctx, &["health"]);
    health
}

fn decode_kubeconfig(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<KubeconfigRef> {
    let mut fields = Fields::of(ctx, node, path)?;
    let kubeconfig = fields
        .required(ctx, "kubeconfig")
        .and_then(|n| string(ctx, n, &format!("{path}.kubeconfig")));
    let context = fields
        .optional("context")
        .map(|n| string(ctx, n, &format!("{path}.context")));
    fields.finish(ctx, &["kubeconfig", "context"]);
    Some(KubeconfigRef {
        kubeconfig: kubeconfig?,
        context: context.map_or(Some(None), |c| c.map(Some))?,
    })
}

fn decode_openstack(ctx: &mut Ctx<'_>, node: &Node) -> Option<OpenstackConnection> {
    let path = "spec.openstack";
    let mut fields = Fields::of(ctx, node, path)?;
    let cloud = fields
        .required(ctx, "cloud")
        .and_then(|n| string(ctx, n, "spec.openstack.cloud"));
    let region = fields
        .optional("region")
        .map(|n| string(ctx, n, "spec.openstack.region"));
    let kubeconfig = fields
        .optional("kubernetes")
        .map(|n| decode_kubeconfig(ctx, n, "spec.openstack.kubernetes"));
    let heat = fields.optional("heat").map(|n| {
        let mut heat = Fields::of(ctx, n, "spec.openstack.heat")?;
        let stack = heat
            .required(ctx, "stack")
            .and_then(|n| dns_label(ctx, n, "spec.openstack.heat.stack"));
        let parameters = heat
            .optional("parameters")
            .map_or(Some(BTreeMap::new()), |n| {
                string_map(ctx, n, "spec.openstack.heat.parameters")
            });
        let environment = heat
            .optional("environment")
            .map(|n| string(ctx, n, "spec.openstack.heat.environment"));
        heat.finish(ctx, &["stack", "parameters", "environment"]);
        Some(OpenstackProvisioner::Heat {
            stack: stack?,
            parameters: parameters?,
            environment: environment.map_or(Some(None), |e| e.map(Some))?,
        })
    });
    let magnum = fields.optional("magnum").map(|n| {
        let mut magnum = Fields::of(ctx, n, "spec.openstack.magnum")?;
        let template = magnum
            .required(ctx, "clusterTemplate")
            .and_then(|n| string(ctx, n, "spec.openstack.magnum.clusterTemplate"));
        let count = magnum
            .required(ctx, "nodeCount")
            .and_then(|n| integer(ctx, n, "spec.openstack.magnum.nodeCount", 1, 1000));
        magnum.finish(ctx, &["clusterTemplate", "nodeCount"]);
        Some(OpenstackProvisioner::Magnum {
            cluster_template: template?,
            node_count: u32::try_from(count?).ok()?,
        })
    });
    let pos = fields.pos();
    fields.finish(ctx, &["cloud", "region", "kubernetes", "heat", "magnum"]);
    let provisioner = match (heat, magnum) {
        (Some(_), Some(_)) => {
            ctx.error(pos, path, "give either `heat` or `magnum`, not both");
            return None;
        }
        (Some(heat), None) => heat?,
        (None, Some(magnum)) => magnum?,
        (None, None) => OpenstackProvisioner::None,
    };
    let kubeconfig = kubeconfig.map_or(Some(None), |k| k.map(Some))?;
    if provisioner == OpenstackProvisioner::None && kubeconfig.is_none() {
        ctx.error(pos, path, "needs `heat` or `magnum` to provision the cluster, or `kubernetes` to reach an existing one");
        return None;
    }
    Some(OpenstackConnection {
        cloud: cloud?,
        region: region.map_or(Some(None), |r| r.map(Some))?,
        provisioner,
        kubeconfig,
    })
}

fn decode_gke(ctx: &mut Ctx<'_>, node: &Node) -> Option<GkeConnection> {
    let mut fields = Fields::of(ctx, node, "spec.gke")?;
    let project = fields
        .required(ctx, "project")
        .and_then(|n| string(ctx, n, "spec.gke.project"));
    let location = fields
        .required(ctx, "location")
        .and_then(|n| string(ctx, n, "spec.gke.location"));
    let cluster = fields
        .optional("cluster")
        .map(|n| string(ctx, n, "spec.gke.cluster"));
    let credentials = fields
        .optional("credentialsFile")
        .map(|n| string(ctx, n, "spec.gke.credentialsFile"));
    fields.finish(ctx, &["project", "location", "cluster", "credentialsFile"]);
    Some(GkeConnection {
        project: project?,
        location: location?,
        cluster: cluster.map_or(Some(None), |c| c.map(Some))?,
        credentials_file: credentials.map_or(Some(None), |c| c.map(Some))?,
    })
}

fn decode_pricing(ctx: &mut Ctx<'_>, node: &Node) -> Option<Pricing> {
    let mut fields = Fields::of(ctx, node, "spec.pricing")?;
    let currency = fields
        .optional("currency")
        .map_or(Some("USD".to_owned()), |n| {
            let text = string(ctx, n, "spec.pricing.currency")?;
            if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) {
                Some(text)
            } else {
                ctx.error(
                    n.pos,
                    "spec.pricing.currency",
                    format!("`{text}` is not an ISO 4217 currency code (like USD or EUR)"),
                );
                None
            }
        });
    let cpu = fields
        .required(ctx, "cpuCoreHour")
        .and_then(|n| number(ctx, n, "spec.pricing.cpuCoreHour"));
    let memory = fields
        .required(ctx, "memoryGiBHour")
        .and_then(|n| number(ctx, n, "spec.pricing.memoryGiBHour"));
    let egress = fields
        .optional("egressGiB")
        .map_or(Some(0.0), |n| number(ctx, n, "spec.pricing.egressGiB"));
    fields.finish(
        ctx,
        &["currency", "cpuCoreHour", "memoryGiBHour", "egressGiB"],
    );
    Some(Pricing {
        currency: currency?,
        cpu_core_hour: cpu?,
        memory_gib_hour: memory?,
        egress_gib: egress?,
    })
}

fn decode_resources(
    ctx: &mut Ctx<'_>,
    node: &Node,
    path: &str,
    both_required: bool,
) -> Option<Resources> {
    let mut fields = Fields::of(ctx, node, path)?;
    let (cpu_node, memory_node) = if both_required {
        (fields.required(ctx, "cpu"), fields.required(ctx, "memory"))
    } else {
        (fields.optional("cpu"), fields.optional("memory"))
    };
    let cpu = cpu_node.map_or(Some(0), |n| cpu(ctx, n, &format!("{path}.cpu")));
    let memory = memory_node.map_or(Some(0), |n| memory(ctx, n, &format!("{path}.memory")));
    fields.finish(ctx, &["cpu", "memory"]);
    if both_required && (cpu_node.is_none() || memory_node.is_none()) {
        return None;
    }
    Some(Resources::new(cpu?, memory?))
}

fn decode_taint_effect(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<TaintEffect> {
    let text = string(ctx, node, path)?;
    match text.as_str() {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        _ => {
            ctx.error(
                node.pos,
                path,
                format!("unknown effect `{text}`; expected NoSchedule or PreferNoSchedule"),
            );
            None
        }
    }
}

fn decode_taint(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Taint> {
    let mut fields = Fields::of(ctx, node, path)?;
    let key = fields
        .required(ctx, "key")
        .and_then(|n| string(ctx, n, &format!("{path}.key")));
    let value = fields.optional("value").map_or(Some(String::new()), |n| {
        string(ctx, n, &format!("{path}.value"))
    });
    let effect = fields
        .required(ctx, "effect")
        .and_then(|n| decode_taint_effect(ctx, n, &format!("{path}.effect")));
    fields.finish(ctx, &["key", "value", "effect"]);
    Some(Taint {
        key: key?,
        value: value?,
        effect: effect?,
    })
}

fn decode_toleration(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<Toleration> {
    let mut fields = Fields::of(ctx, node, path)?;
    let key = fields
        .optional("key")
        .map(|n| string(ctx, n, &format!("{path}.key")));
    let operator_node = fields.optional("operator");
    let operator = operator_node.map_or(Some(TolerationOperator::Equal), |n| {
        let text = string(ctx, n, &format!("{path}.operator"))?;
        match text.as_str() {
            "Equal" => Some(TolerationOperator::Equal),
            "Exists" => Some(TolerationOperator::Exists),
            _ => {
                ctx.error(
                    n.pos,
                    &format!("{path}.operator"),
                    format!("unknown operator `{text}`; expected Equal or Exists"),
                );
                None
            }
        }
    });
    let value_node = fields.optional("value");
    let value = value_node.map_or(Some(String::new()), |n| {
        string(ctx, n, &format!("{path}.value"))
    });
    let effect = fields
        .optional("effect")
        .map(|n| decode_taint_effect(ctx, n, &format!("{path}.effect")));
    let pos = fields.pos();
    fields.finish(ctx, &["key", "operator", "value", "effect"]);
    let (key, operator) = (key.map_or(Some(None), |k| k.map(Some))?, operator?);
    if operator == TolerationOperator::Exists && value_node.is_some() {
        ctx.error(
            pos,
            &format!("{path}.value"),
            "a toleration with operator Exists takes no value",
        );
        return None;
    }
    if operator == TolerationOperator::Equal && key.is_none() {
        ctx.error(
            pos,
            &format!("{path}.key"),
            "a toleration with operator Equal needs a key",
        );
        return None;
    }
    Some(Toleration {
        key,
        operator,
        value: value?,
        effect: effect.map_or(Some(None), |e| e.map(Some))?,
    })
}

fn decode_workload(
    ctx: &mut Ctx<'_>,
    metadata: &Node,
    spec: &Node,
    status: Option<&Node>,
) -> Option<Workload> {
    let metadata = decode_metadata(ctx, metadata, true);
    let mut fields = Fields::of(ctx, spec, "spec")?;
    let replicas = fields
        .required(ctx, "replicas")
        .and_then(|n| integer(ctx, n, "spec.replicas", 1, 100_000));
    let resources = fields
        .required(ctx, "resources")
        .and_then(|n| decode_resources(ctx, n, "spec.resources", false));
    let data = fields
        .optional("dataGiB")
        .map_or(Some(0.0), |n| number(ctx, n, "spec.dataGiB"));
    let tolerations = fields
        .optional("tolerations")
        .map_or(Some(Vec::new()), |n| {
            list(ctx, n, "spec.tolerations", decode_toleration)
        });
    fields.finish(ctx, &["replicas", "resources", "dataGiB", "tolerations"]);
    let current = match status {
        None => Some(None),
        Some(status) => {
            let mut fields = Fields::of(ctx, status, "status")?;
            let cluster = fields.optional("cluster").map(|n| {
                ctx.mark("status.cluster", n.pos);
                dns_label(ctx, n, "status.cluster")
            });
            fields.finish(ctx, &["cluster"]);
            cluster.map_or(Some(None), |c| c.map(Some))
        }
    };
    let metadata = metadata?;
    Some(Workload {
        namespace: metadata.namespace?,
        name: metadata.name,
        labels: metadata.labels,
        replicas: u32::try_from(replicas?).ok()?,
        resources: resources?,
        data_gib: data?,
        tolerations: tolerations?,
        current_cluster: current?,
        current_clusters: Vec::new(),
    })
}

fn decode_selector(ctx: &mut Ctx<'_>, fields: &mut Fields<'_>) -> Option<LabelSelector> {
    let match_labels = fields
        .optional("matchLabels")
        .map_or(Some(BTreeMap::new()), |n| {
            let path = fields.path_of("matchLabels");
            labels(ctx, n, &path)
        });
    let expressions_path = fields.path_of("matchExpressions");
    let match_expressions = fields
        .optional("matchExpressions")
        .map_or(Some(Vec::new()), |n| {
            list(ctx, n, &expressions_path, decode_expression)
        });
    Some(LabelSelector {
        match_labels: match_labels?,
        match_expressions: match_expressions?,
    })
}

fn decode_expression(ctx: &mut Ctx<'_>, node: &Node, path: &str) -> Option<LabelExpression> {
    let mut fields = Fields::of(ctx, node, path)?;
    let key = fields
        .required(ctx, "key")
        .and_then(|n| string(ctx, n, &format!("{path}.key")));
    let operator_node = fields.required(ctx, "operator");
    let operator = operator_node.and_then(|n| string(ctx, n, &format!("{path}.operator")));
    let values_node = fields.optional("values");
    let values = values_node.map(|n| string_list(ctx, n, &format!("{path}.values")));
    fields.finish(ctx, &["key", "operator", "values"]);
    let (operator, operator_node) = (operator?, operator_node?);
    let values_path = format!("{path}.values");
    let operator = match operator.as_str() {
        "In" | "NotIn" => {
            let Some(values) = values.flatten().filter(|v| !v.is_empty()) else {
                ctx.error(
                    operator_node.pos,
                    &values_path,
                    format!("operator {operator} needs a non-empty `values` list"),
                );
                return None;
            };
            if operator == "In" {
                SelectorOperator::In(values)
            } else {
                SelectorOperator::NotIn(values)
            }
        }
        "Exists" | "DoesNotExist" => {
            if let Some(node) = values_node {
                ctx.error(
                    node.pos,
                    &values_path,
                    format!("operator {operator} takes no values"),
                );
                return None;
            }
            if operator == "Exists" {
                SelectorOperator::Exists
            } else {
                SelectorOperator::DoesNotExist
            }
        }
        _ => {
            ctx.error(
                operator_node.pos,
                &format!("{path}.operator"),
                format!(
                    "unknown operator `{operator}`; expected In, NotIn, Exists or DoesNotExist"
                ),
            );
            return None;
        }
    };
    Some(LabelExpression {
        key: key?,
        operator,
    })
}

fn decode_policy(ctx: &mut Ctx<'_>, metadata: &Node, spec: &Node) -> Option<PlacementPolicy> {
    let metadata = decode_metadata(ctx, metadata, false);
    let mut fields = Fields::of(ctx, spec, "spec")?;
    let priority = fields.optional("priority").map_or(Some(0), |n| {
        ctx.mark("spec.priority", n.pos);
        integer(ctx, n, "spec.priority", -1_000_000, 1_000_000)
    });
    let selector =
        fields
            .optional("workloadSelector")
            .map_or(Some(WorkloadSelector::default()), |n| {
                ctx.mark("spec.workloadSelector", n.pos);
                let mut selector = Fields::of(ctx, n, "spec.workloadSelector")?;
                let namespaces = selector
                    .optional("namespaces")
                    .map_or(Some(Vec::new()), |n| {
                        string_list(ctx, n, "spec.workloadSelector.namespaces")
                    });
                let labels = decode_selector(ctx, &mut selector);
                selector.finish(ctx, &["namespaces", "matchLabels", "matchExpressions"]);
                Some(WorkloadSelector {
                    namespaces: namespaces?,
                    labels: labels?,
                })
            });
    let affinity = fields
        .optional("clusterAffinity")
        .map_or(Some((None, Vec::new())), |n| {
            let mut affinity = Fields::of(ctx, n, "spec.clusterAffinity")?;
            let required = affinity.optional("required").map(|n| {
                ctx.mark("spec.clusterAffinity.required", n.pos);
                let mut required = Fields::of(ctx, n, "spec.clusterAffinity.required")?;
                let selector = decode_selector(ctx, &mut required);
                required.finish(ctx, &["matchLabels", "matchExpressions"]);
                selector
            });
            let preferred = affinity
                .optional("preferred")
                .map_or(Some(Vec::new()), |n| {
                    list(
                        ctx,
                        n,
                        "spec.clusterAffinity.preferred",
                        |ctx, node, path| {
                            let mut term = Fields::of(ctx, node, path)?;
                            let weight = term
                                .required(ctx, "weight")
                                .and_then(|n| integer(ctx, n, &format!("{path}.weight"), 1, 100));
                            let selector = decode_selector(ctx, &mut term);
                            term.finish(ctx, &["weight", "matchLabels", "matchExpressions"]);
                            Some(PreferredTerm {
                                weight: u32::try_from(weight?).ok()?,
                                selector: selector?,
                            })
                        },
                    )
                });
            affinity.finish(ctx, &["required", "preferred"]);
            Some((required.map_or(Some(None), |r| r.map(Some))?, preferred?))
        });
    let spread = fields.optional("spread").map(|n| {
        let mut spread = Fields::of(ctx, n, "spec.spread")?;
        let min = spread
            .required(ctx, "minClusters")
            .and_then(|n| integer(ctx, n, "spec.spread.minClusters", 1, 1000));
        let max_node = spread.optional("maxClusters");
        let max = max_node.map(|n| integer(ctx, n, "spec.spread.maxClusters", 1, 1000));
        spread.finish(ctx, &["minClusters", "maxClusters"]);
        let min = u32::try_from(min?).ok()?;
        let max = match max {
            None => min,
            Some(max) => u32::try_from(max?).ok()?,
        };
        if max < min {
            ctx.error(
                max_node.map_or(n.pos, |n| n.pos),
                "spec.spread.maxClusters",
                format!("maxClusters ({max}) is less than minClusters ({min})"),
            );
            return None;
        }
        Some(Spread {
            min_clusters: min,
            max_clusters: max,
        })
    });
    let budget = fields.optional("budget").map(|n| {
        let mut budget = Fields::of(ctx, n, "spec.budget")?;
        let max = budget
            .required(ctx, "maxMonthlyCost")
            .and_then(|n| number(ctx, n, "spec.budget.maxMonthlyCost"));
        budget.finish(ctx, &["maxMonthlyCost"]);
        max
    });
    let objective = fields
        .optional("objective")
        .map_or(Some(Objective::DEFAULT), |n| {
            let mut objective = Fields::of(ctx, n, "spec.objective")?;
            let mut weight = |key: &str, default: f64| {
                objective.optional(key).map_or(Some(default), |n| {
                    number(ctx, n, &format!("spec.objective.{key}"))
                })
            };
            let cost = weight("cost", Objective::DEFAULT.cost);
            let preference = weight("preference", Objective::DEFAULT.preference);
            let stickiness = weight("stickiness", Objective::DEFAULT.stickiness);
            objective.finish(ctx, &["cost", "preference", "stickiness"]);
            Some(Objective {
                cost: cost?,
                preference: preference?,
                stickiness: stickiness?,
            })
        });
    let rebalance = fields
        .optional("rebalance")
        .map_or(Some(RebalanceRules::disabled()), |n| {
            decode_rebalance(ctx, n)
        });
    let capacity_on_demand = fields
        .optional("capacityOnDemand")
        .map_or(Some(false), |n| boolean(ctx, n, "spec.capacityOnDemand"));
    fields.finish(
        ctx,
        &[
            "priority",
            "workloadSelector",
            "clusterAffinity",
            "spread",
            "budget",
            "objective",
            "rebalance",
            "capacityOnDemand",
        ],
    );
    let (required, preferred) = affinity?;
    Some(PlacementPolicy {
        name: metadata?.name,
        priority: i32::try_from(priority?).ok()?,
        workload_selector: selector?,
        required,
        preferred,
        spread: spread.map_or(Some(None), |s| s.map(Some))?,
        max_monthly_cost: budget.map_or(Some(None), |b| b.map(Some))?,
        objective: objective?,
        rebalance: rebalance?,
        capacity_on_demand: capacity_on_demand?,
    })
}

fn decode_rebalance(ctx: &mut Ctx<'_>, node: &Node) -> Option<RebalanceRules> {
    let defaults = RebalanceRules::disabled();
    let mut fields = Fields::of(ctx, node, "spec.rebalance")?;
    let enabled = fields
        .optional("enabled")
        .map_or(Some(true), |n| boolean(ctx, n, "spec.rebalance.enabled"));
    let min_savings =
        fields
            .optional("minSavingsPercent")
            .map_or(Some(defaults.min_savings_percent), |n| {
                let value = number(ctx, n, "spec.rebalance.minSavingsPercent")?;
                if value > 100.0 {
                    ctx.error(
                        n.pos,
                        "spec.rebalance.minSavingsPercent",
                        format!("expected a percentage from 0 to 100, found {value}"),
                    );
                    return None;
                }
                Some(value)
            });
    let payback = fields
        .optional("paybackHours")
        .map_or(Some(defaults.payback_hours), |n| {
            number(ctx, n, "spec.rebalance.paybackHours")
        });
    let cooldown = fields
        .optional("cooldown")
        .map_or(Some(defaults.cooldown_seconds), |n| {
            let (text, _) = scalar(ctx, n, "spec.rebalance.cooldown", "a duration")?;
            parse_duration(text)
                .map_err(|message| ctx.error(n.pos, "spec.rebalance.cooldown", message))
                .ok()
        });
    let concurrent = fields
        .optional("maxConcurrentMigrations")
        .map_or(Some(i64::from(defaults.max_concurrent_migrations)), |n| {
            integer(ctx, n, "spec.rebalance.maxConcurrentMigrations", 1, 1000)
        });
    let automatic = fields
        .optional("automatic")
        .map_or(Some(true), |n| boolean(ctx, n, "spec.rebalance.automatic"));
    let windows = fields.optional("windows").map_or(Some(Vec::new()), |n| {
        list(ctx, n, "spec.rebalance.windows", |ctx, node, path| {
            let (text, _) = scalar(ctx, node, path, "a window")?;
            Window::parse(text)
                .map_err(|message| ctx.error(node.pos, path, message))
                .ok()
        })
    });
    fields.finish(
        ctx,
        &[
            "enabled",
            "minSavingsPercent",
            "paybackHours",
            "cooldown",
            "maxConcurrentMigrations",
            "windows",
            "automatic",
        ],
    );
    Some(RebalanceRules {
        enabled: enabled?,
        min_savings_percent: min_savings?,
        payback_hours: payback?,
        cooldown_seconds: cooldown?,
        max_concurrent_migrations: u32::try_from(concurrent?).ok()?,
        windows: windows?,
        automatic: automatic?,
    })
}

/// Checks that span documents: unique names, workloads that name a cluster that exists,
/// and no two policies of equal priority over a workload. Run after every file of a set
/// was added.
pub fn check_references(set: &ResourceSet) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    let mut duplicate = |kind: &str, name: &str, first: (&str, Pos), again: (&str, Pos)| {
        diagnostics.push(Diagnostic {
            file: again.0.to_owned(),
            pos: again.1,
            path: "metadata.name".to_owned(),
            message: format!(
                "duplicate {kind} `{name}`, first defined at {}:{}:{}",
                first.0, first.1.line, first.1.column
            ),
        });
    };
    let mut clusters: BTreeMap<&str, (&str, Pos)> = BTreeMap::new();
    for c in &set.clusters {
        if let Some(first) = clusters.insert(&c.value.name, (&c.file, c.pos)) {
            duplicate("cluster", &c.value.name, first, (&c.file, c.pos));
        }
    }
    let mut workloads: BTreeMap<String, (&str, Pos)> = BTreeMap::new();
    for w in &set.workloads {
        if let Some(first) = workloads.insert(w.value.key(), (&w.file, w.pos)) {
            duplicate("workload", &w.value.key(), first, (&w.file, w.pos));
        }
    }
    let mut policies: BTreeMap<&str, (&str, Pos)> = BTreeMap::new();
    for p in &set.policies {
        if let Some(first) = policies.insert(&p.value.name, (&p.file, p.pos)) {
            duplicate("policy", &p.value.name, first, (&p.file, p.pos));
        }
    }
    if !set.clusters.is_empty() {
        let known: Vec<&str> = clusters.keys().copied().collect();
        for w in &set.workloads {
            if let Some(cluster) = &w.value.current_cluster
                && !clusters.contains_key(cluster.as_str())
                && is_dns_label(cluster)
            {
                let hint = fields::closest(cluster, &known)
                    .map(|k| format!("; did you mean `{k}`?"))
                    .unwrap_or_default();
                diagnostics.push(Diagnostic {
                    file: w.file.clone(),
                    pos: w.pos_of("status.cluster"),
                    path: "status.cluster".to_owned(),
                    message: format!(
                        "no Cluster named `{cluster}` in the given files{hint} (known: {})",
                        known.join(", ")
                    ),
                });
            }
        }
    }
    diagnostics.extend(policy_conflicts(set));
    diagnostics.sort();
    diagnostics
}

/// The first definition of each name: later ones are reported as duplicates already, and
/// checking them again would only repeat that.
fn first_definitions<T>(items: &[Located<T>], name: impl Fn(&T) -> String) -> Vec<&Located<T>> {
    let mut seen = std::collections::BTreeSet::new();
    items
        .iter()
        .filter(|item| seen.insert(name(&item.value)))
        .collect()
}

/// Policies of equal priority that both select a workload of the files, reported at the
/// one defined later with both locations, once per pair.
fn policy_conflicts(set: &ResourceSet) -> Vec<Diagnostic> {
    let policies = first_definitions(&set.policies, |p| p.name.clone());
    let values: Vec<PlacementPolicy> = policies.iter().map(|p| p.value.clone()).collect();
    let workloads: Vec<Workload> = first_definitions(&set.workloads, Workload::key)
        .into_iter()
        .map(|w| w.value.clone())
        .collect();
    let mut pairs: BTreeMap<(String, String), (i32, Vec<String>)> = BTreeMap::new();
    for conflict in crate::engine::conflicts(&values, &workloads) {
        pairs
            .entry((conflict.first, conflict.second))
            .or_insert((conflict.priority, Vec::new()))
            .1
            .push(conflict.workload);
    }
    let located = |name: &str| {
        policies
            .iter()
            .enumerate()
            .find(|(_, p)| p.value.name == name)
    };
    let mut diagnostics = Vec::new();
    for ((first, second), (priority, selected)) in pairs {
        let (Some((i, a)), Some((j, b))) = (located(&first), located(&second)) else {
            continue;
        };
        let ((earlier, earlier_at), (later, later_at)) = if i < j {
            ((a, &first), (b, &second))
        } else {
            ((b, &second), (a, &first))
        };
        let at = |p: &Located<PlacementPolicy>| {
            let pos = p.pos_of("spec.priority");
            format!("{}:{}:{}", p.file, pos.line, pos.column)
        };
        diagnostics.push(Diagnostic {
            file: later.file.clone(),
            pos: later.pos_of("spec.priority"),
            path: "spec.priority".to_owned(),
            message: format!(
                "policy `{later_at}` and policy `{earlier_at}` (at {}) both have priority {priority} and both select {}; give one a higher priority or narrow a selector",
                at(earlier),
                workload_list(&selected)
            ),
        });
    }
    diagnostics
}

/// `workload `a/b``, or `workloads `a/b`, `a/c` and 3 more`.
pub fn workload_list(keys: &[String]) -> String {
    const SHOWN: usize = 5;
    let named: Vec<String> = keys.iter().take(SHOWN).map(|k| format!("`{k}`")).collect();
    let more = keys.len().saturating_sub(SHOWN);
    let noun = if keys.len() == 1 {
        "workload"
    } else {
        "workloads"
    };
    if more > 0 {
        format!("{noun} {} and {more} more", named.join(", "))
    } else {
        format!("{noun} {}", named.join(", "))
    }
}

/// What is valid but probably not meant: a policy that selects no workload of the files,
/// and a required affinity that no Cluster of the files matches (with the values the
/// clusters do carry). `ferry validate` prints them and still succeeds. Checked only
/// against the kinds the files define: files of policies alone select nothing yet.
pub fn warnings(set: &ResourceSet) -> Vec<Diagnostic> {
    let mut warnings = Vec::new();
    for p in first_definitions(&set.policies, |p| p.name.clone()) {
        let policy = &p.value;
        if !set.workloads.is_empty()
            && !set
                .workloads
                .iter()
                .any(|w| policy.workload_selector.selects(&w.value))
        {
            warnings.push(Diagnostic {
                file: p.file.clone(),
                pos: p.pos_of("spec.workloadSelector"),
                path: "spec.workloadSelector".to_owned(),
                message: format!(
                    "policy `{}` selects no workload in the given files",
                    policy.name
                ),
            });
        }
        if let Some(required) = &policy.required
            && !set.clusters.is_empty()
            && !set
                .clusters
                .iter()
                .any(|c| required.matches(&c.value.labels))
        {
            let mut keys: Vec<&str> = required.match_labels.keys().map(String::as_str).collect();
            keys.extend(required.match_expressions.iter().map(|e| e.key.as_str()));
            keys.sort_unstable();
            keys.dedup();
            let known: Vec<String> = keys
                .iter()
                .map(|key| {
                    let values: std::collections::BTreeSet<&str> = set
                        .clusters
                        .iter()
                        .filter_map(|c| c.value.labels.get(*key).map(String::as_str))
                        .collect();
                    if values.is_empty() {
                        format!("no cluster has label `{key}`")
                    } else {
                        let values: Vec<&str> = values.into_iter().collect();
                        format!("known values of `{key}`: {}", values.join(", "))
                    }
                })
                .collect();
            warnings.push(Diagnostic {
                file: p.file.clone(),
                pos: p.pos_of("spec.clusterAffinity.required"),
                path: "spec.clusterAffinity.required".to_owned(),
                message: format!(
                    "matches no Cluster in the given files, so policy `{}` can place nothing; {}",
                    policy.name,
                    known.join("; ")
                ),
            });
        }
    }
    warnings.sort();
    warnings
}

#[cfg(test)]
mod tests;
