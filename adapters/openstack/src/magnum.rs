//! Magnum v1 (container-infra): cluster templates, clusters created idempotently by name,
//! followed to a terminal status, resized, deleted and listed page by page, and client
//! credentials for a cluster's Kubernetes API.
//!
//! Every request pins `OpenStack-API-Version: container-infra 1.7` ([`API_VERSION`]):
//! resize needs 1.7, Magnum answers a request without the header as 1.1, and `latest`
//! would change the answers under Ferry whenever Magnum adds a version (1.13 replaces
//! `stack_id` with `cluster_id`).
//!
//! A cluster's status is Heat's `{ACTION}_{STATE}` ([`Status`], shared with
//! [`crate::heat`]). Every operation Magnum accepts with 202 or 204 runs on after the
//! answer; [`Magnum::follow`] polls the cluster until the action is no longer
//! `IN_PROGRESS`, with a growing delay, a deadline and [`ClusterProgress`] reports, as
//! [`crate::heat::Heat::follow`] does (with the same [`Follow`] settings; its
//! `nested_depth` has no meaning here).
//!
//! Magnum's Heat driver is deprecated and gone from master; the Cluster API drivers that
//! replace it have no stack. `stack_id` is therefore optional and nothing here reads Heat:
//! a failure is Magnum's `status_reason`.
//!
//! Magnum does not keep cluster names unique, and a lookup by a name two clusters share is
//! a 409. [`Magnum::create`] looks the name up first and adopts a cluster that has it, so a
//! create repeated after a crash makes no second cluster. The uuid it returns is the handle
//! to journal and to follow: once the cluster is deleted, its name may come to mean
//! another one.
//!
//! [`Magnum::credentials`] does what `openstack coe cluster config` does: a new key and a
//! CSR for `CN=admin, O=system:masters`, the cluster CA from `GET /certificates/{uuid}`,
//! the CSR signed by `POST /certificates`. The key is ECDSA P-256, not RSA-2048 as the
//! client makes: rcgen on ring (the crypto of this workspace) cannot generate RSA keys,
//! and Kubernetes takes either. The key is a [`Secret`] and exists only in memory.
//!
//! The endpoint is the catalog's `container-infra` service, or a clouds.yaml
//! `container_infra_endpoint_override`, or the URL given to [`Magnum::with_endpoint`] (a
//! cloud whose catalog lacks Magnum, or a test's mock).
//!
//! Tokens come from the shared [`Keystone`]. This client sends its own requests, because
//! `Keystone::send` sets no microversion header. On a 401 it asks Keystone whether the token
//! still holds (`GET /auth/projects`, which any token may call; Keystone refusing it
//! makes the shared client sign in again, once), then retries once with the new token.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use ferry_ports::{Operation, PortError, Provisioner};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::heat::{Action, Follow, State, Status};
use crate::http::{Reply, client, connection_error};
use crate::keystone::{Keystone, Token};
use crate::secret::Secret;

/// The catalog's type for Magnum.
pub const SERVICE_TYPE: &str = "container-infra";
/// The microversion of every request: the lowest with resize.
pub const API_VERSION: &str = "container-infra 1.7";
/// Items asked for per page of a list.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The client certificate's subject: Magnum's Kubernetes clusters bind `system:masters`
/// to cluster-admin, and `openstack coe cluster config` asks for the same.
pub const CLIENT_COMMON_NAME: &str = "admin";
pub const CLIENT_ORGANIZATION: &str = "system:masters";
/// How long a resize or a delete may look not started before [`MagnumClusters`] calls it
/// failed: Magnum starts them after its answer, in its conductor.
const START_GRACE: Duration = Duration::from_secs(30);

/// Magnum's rule for cluster names (its API's `pattern` and `max_length`: 242, so that a
/// uuid fits after it in a Heat stack name). Checked before sending, which also keeps
/// names safe in URL paths.
pub fn check_cluster_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 242;
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what: format!("cluster name {name:?}"),
            message: "it must start with a letter and hold only letters, digits, '_', '.' and \
                      '-' (at most 242)"
                .to_owned(),
        })
    }
}

/// A cluster's uuid or name, as it goes into a path: only characters that need no
/// escaping, and not `.` or `..`.
fn check_ident(ident: &str) -> Result<()> {
    let valid = !ident.is_empty()
        && !ident.starts_with('.')
        && ident.len() <= 255
        && ident
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what: format!("cluster {ident:?}"),
            message: "not a Magnum cluster uuid or name".to_owned(),
        })
    }
}

/// A JSON scalar as text; `None` for null, lists and maps.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A cluster template to create. Ferry's templates are Kubernetes, private and with TLS
/// (credentials are client certificates, which Magnum signs only with TLS on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewClusterTemplate {
    pub name: String,
    /// Glance image name or id.
    pub image_id: String,
    /// Neutron network name or id for floating IPs and the load balancer.
    pub external_network_id: String,
    pub keypair_id: Option<String>,
    pub flavor_id: Option<String>,
    pub master_flavor_id: Option<String>,
    /// `flannel` or `calico`; Magnum's default when unset.
    pub network_driver: Option<String>,
    pub docker_volume_size: Option<u32>,
    pub master_lb_enabled: bool,
    pub floating_ip_enabled: bool,
    pub fixed_network: Option<String>,
    pub fixed_subnet: Option<String>,
    pub dns_nameserver: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl NewClusterTemplate {
    /// A Kubernetes template with a load balancer in front of the masters and floating
    /// IPs; set the other fields as needed.
    pub fn kubernetes(name: &str, image_id: &str, external_network_id: &str) -> NewClusterTemplate {
        NewClusterTemplate {
            name: name.to_owned(),
            image_id: image_id.to_owned(),
            external_network_id: external_network_id.to_owned(),
            keypair_id: None,
            flavor_id: None,
            master_flavor_id: None,
            network_driver: None,
            docker_volume_size: None,
            master_lb_enabled: true,
            floating_ip_enabled: true,
            fixed_network: None,
            fixed_subnet: None,
            dns_nameserver: None,
            labels: BTreeMap::new(),
        }
    }

    fn check(&self) -> Result<()> {
        let name_fits = !self.name.trim().is_empty() && self.name.len() <= 255;
        if name_fits {
            Ok(())
        } else {
            Err(Error::InvalidInput {
                what: format!("cluster template name {:?}", self.name),
                message: "it must not be empty and may have at most 255 bytes".to_owned(),
            })
        }
    }

    /// The body of `POST /clustertemplates`.
    fn body(&self) -> Value {
        let mut body = json!({
            "name": self.name,
            "coe": "kubernetes",
            "image_id": self.image_id,
            "external_network_id": self.external_network_id,
            "tls_disabled": false,
            "public": false,
            "master_lb_enabled": self.master_lb_enabled,
            "floating_ip_enabled": self.floating_ip_enabled,
            "labels": self.labels,
        });
        let optional = [
            ("keypair_id", self.keypair_id.as_deref()),
            ("flavor_id", self.flavor_id.as_deref()),
            ("master_flavor_id", self.master_flavor_id.as_deref()),
            ("network_driver", self.network_driver.as_deref()),
            ("fixed_network", self.fixed_network.as_deref()),
            ("fixed_subnet", self.fixed_subnet.as_deref()),
            ("dns_nameserver", self.dns_nameserver.as_deref()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                body[key] = json!(value);
            }
        }
        if let Some(size) = self.docker_volume_size {
            body["docker_volume_size"] = json!(size);
        }
        body
    }
}

/// A cluster template as Magnum shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTemplate {
    pub uuid: String,
    pub name: String,
    pub coe: String,
    pub image_id: Option<String>,
    pub tls_disabled: bool,
    pub master_lb_enabled: bool,
    pub public: bool,
    /// Magnum's labels, numbers and booleans as their text.
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ClusterTemplateWire {
    uuid: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    coe: Option<String>,
    #[serde(default)]
    image_id: Option<String>,
    #[serde(default)]
    tls_disabled: Option<bool>,
    #[serde(default)]
    master_lb_enabled: Option<bool>,
    #[serde(default)]
    public: Option<bool>,
    #[serde(default)]
    labels: Option<BTreeMap<String, Value>>,
}

impl ClusterTemplate {
    /// Reads a cluster template object (`GET /clustertemplates/{id}`, a list item, or the
    /// answer to a create).
    pub fn from_json(value: &Value) -> Result<ClusterTemplate, String> {
        let wire = ClusterTemplateWire::deserialize(value).map_err(|e| e.to_string())?;
        Ok(ClusterTemplate {
            uuid: wire.uuid,
            name: wire.name.unwrap_or_default(),
            coe: wire.coe.unwrap_or_default(),
            image_id: wire.image_id,
            tls_disabled: wire.tls_disabled.unwrap_or(false),
            master_lb_enabled: wire.master_lb_enabled.unwrap_or(false),
            public: wire.public.unwrap_or(false),
            labels: wire
                .labels
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| (k.clone(), text_of(v).unwrap_or_else(|| v.to_string())))
                .collect(),
        })
    }
}

/// What [`Magnum::ensure_cluster_template`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateCreated {
    pub template: ClusterTemplate,
    /// A template of that name existed and is used as it is.
    pub adopted: bool,
}

/// A cluster to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCluster {
    pub name: String,
    pub cluster_template_id: String,
    pub master_count: u32,
    /// Workers.
    pub node_count: u32,
    /// A Nova keypair; the template's when unset.
    pub keypair: Option<String>,
    /// Magnum fails the cluster when it has not been created by then (rounded up to
    /// minutes); Magnum's default (60 minutes) when unset.
    pub create_timeout: Option<Duration>,
    pub flavor_id: Option<String>,
    pub master_flavor_id: Option<String>,
    /// Added to the template's labels.
    pub labels: BTreeMap<String, String>,
}

impl NewCluster {
    /// One master and `node_count` workers from the template.
    pub fn new(name: &str, cluster_template_id: &str, node_count: u32) -> NewCluster {
        NewCluster {
            name: name.to_owned(),
            cluster_template_id: cluster_template_id.to_owned(),
            master_count: 1,
            node_count,
            keypair: None,
            create_timeout: None,
            flavor_id: None,
            master_flavor_id: None,
            labels: BTreeMap::new(),
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> NewCluster {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The body of `POST /clusters`.
    fn body(&self) -> Value {
        let mut body = json!({
            "name": self.name,
            "cluster_template_id": self.cluster_template_id,
            "master_count": self.master_count,
            "node_count": self.node_count,
        });
        if !self.labels.is_empty() {
            body["labels"] = json!(self.labels);
            // Without it, a cluster's labels replace the template's (the network driver,
            // versions, …) instead of adding to them.
            body["merge_labels"] = json!(true);
        }
        let optional = [
            ("keypair", self.keypair.as_deref()),
            ("flavor_id", self.flavor_id.as_deref()),
            ("master_flavor_id", self.master_flavor_id.as_deref()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                body[key] = json!(value);
            }
        }
        if let Some(timeout) = self.create_timeout {
            body["create_timeout"] = json!(timeout.as_secs().div_ceil(60).max(1));
        }
        body
    }
}

/// What [`Magnum::create`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterCreated {
    /// Journal it before following: the cluster's handle.
    pub uuid: String,
    pub name: String,
    /// A cluster of that name existed and is now followed instead.
    pub adopted: bool,
}

/// A cluster as Magnum shows it. A list's items lack `status_reason`, `api_address` and
/// the addresses (empty or `None` here); `GET /clusters/{id}` has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    pub uuid: String,
    pub name: String,
    pub status: Status,
    pub status_reason: String,
    /// `HEALTHY`, `UNHEALTHY` or `UNKNOWN`, when Magnum's health monitor runs.
    pub health_status: Option<String>,
    /// The Kubernetes API, e.g. `https://172.24.4.6:6443`; set once the cluster is up.
    pub api_address: Option<String>,
    /// Workers of the default worker group (0 when Magnum has none to show).
    pub node_count: u32,
    pub master_count: u32,
    pub node_addresses: Vec<String>,
    pub master_addresses: Vec<String>,
    pub cluster_template_id: Option<String>,
    /// The Heat stack of the Heat driver; `None` with drivers that use none.
    pub stack_id: Option<String>,
    pub coe_version: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

#[derive(Deserialize)]
struct ClusterWire {
    uuid: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    status_reason: Option<String>,
    #[serde(default)]
    health_status: Option<String>,
    #[serde(default)]
    api_address: Option<String>,
    #[serde(default)]
    node_count: Option<u32>,
    #[serde(default)]
    master_count: Option<u32>,
    #[serde(default)]
    node_addresses: Option<Vec<Option<String>>>,
    #[serde(default)]
    master_addresses: Option<Vec<Option<String>>>,
    #[serde(default)]
    cluster_template_id: Option<String>,
    #[serde(default)]
    stack_id: Option<String>,
    #[serde(default)]
    coe_version: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
}

impl Cluster {
    /// Reads a `GET /clusters/{id}` body.
    pub fn parse(body: &[u8]) -> Result<Cluster, String> {
        let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        Cluster::from_json(&value)
    }

    /// Reads a cluster object (the body of `GET /clusters/{id}` or a list item).
    pub fn from_json(value: &Value) -> Result<Cluster, String> {
        let wire = ClusterWire::deserialize(value).map_err(|e| e.to_string())?;
        let status = wire
            .status
            .ok_or_else(|| format!("cluster {} has no status", wire.uuid))?
            .parse()?;
        let addresses =
            |list: Option<Vec<Option<String>>>| list.into_iter().flatten().flatten().collect();
        Ok(Cluster {
            name: wire.name.unwrap_or_default(),
            status,
            status_reason: wire.status_reason.unwrap_or_default(),
            health_status: wire.health_status,
            api_address: wire.api_address.filter(|a| !a.trim().is_empty()),
            node_count: wire.node_count.unwrap_or(0),
            master_count: wire.master_count.unwrap_or(0),
            node_addresses: addresses(wire.node_addresses),
            master_addresses: addresses(wire.master_addresses),
            cluster_template_id: wire.cluster_template_id,
            stack_id: wire.stack_id.filter(|s| !s.is_empty()),
            coe_version: wire.coe_version,
            created_at: wire.created_at,
            updated_at: wire.updated_at,
            uuid: wire.uuid,
        })
    }

    /// Its status for a user: name, uuid, status and Magnum's reason.
    pub fn reason(&self) -> String {
        let reason = if self.status_reason.is_empty() {
            "Magnum gives no reason"
        } else {
            &self.status_reason
        };
        format!(
            "cluster {} ({}) {}: {reason}",
            self.name, self.uuid, self.status
        )
    }
}

/// How far an action has come: what Magnum shows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterProgress {
    pub status: Status,
    pub status_reason: String,
    pub node_count: u32,
    pub master_count: u32,
    pub health_status: Option<String>,
}

impl ClusterProgress {
    pub fn of(cluster: &Cluster) -> ClusterProgress {
        ClusterProgress {
            status: cluster.status,
            status_reason: cluster.status_reason.clone(),
            node_count: cluster.node_count,
            master_count: cluster.master_count,
            health_status: cluster.health_status.clone(),
        }
    }
}

impl fmt::Display for ClusterProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} masters, {} nodes",
            self.status, self.master_count, self.node_count
        )?;
        if let Some(health) = &self.health_status {
            write!(f, ", {health}")?;
        }
        if !self.status_reason.is_empty() {
            write!(f, " ({})", self.status_reason)?;
        }
        Ok(())
    }
}

/// How a followed action ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterOutcome {
    Complete(Cluster),
    /// The action failed or was rolled back; [`Cluster::reason`] says why.
    Failed(Cluster),
    /// The cluster is no longer there (a delete that finished).
    Gone,
}

/// What a follow waits for.
#[derive(Clone, Copy, Debug)]
struct Target {
    action: Action,
    /// A resize's node count: until the cluster shows it, the resize has not happened.
    node_count: Option<u32>,
}

enum Poll {
    Running(ClusterProgress),
    /// Boxed: a cluster is five times the size of a progress report.
    Done(Box<ClusterOutcome>),
}

/// How to reach a cluster's Kubernetes API as cluster-admin.
#[derive(Clone, Debug)]
pub struct MagnumAccess {
    /// `https://host:port`.
    pub api_url: String,
    /// The cluster CA (kubeconfig's `certificate-authority-data`, before base64).
    pub ca_pem: String,
    /// Signed by the cluster CA, for `CN=admin, O=system:masters`.
    pub client_cert_pem: String,
    /// PKCS #8 PEM of the key (ECDSA P-256).
    pub client_key_pem: Secret,
}

/// The API URL of an `api_address`: Magnum's Kubernetes drivers give
/// `https://host:port`; a bare host (the API's own sample) gets `https://`.
fn api_url_of(address: &str) -> String {
    let address = address.trim().trim_end_matches('/');
    if address.contains("://") {
        address.to_owned()
    } else if !address.starts_with('[') && address.matches(':').count() > 1 {
        format!("https://[{address}]")
    } else {
        format!("https://{address}")
    }
}

fn is_pem_certificate(text: &str) -> bool {
    let text = text.trim();
    text.starts_with("-----BEGIN CERTIFICATE-----") && text.ends_with("-----END CERTIFICATE-----")
}

/// A new key and a CSR for [`CLIENT_COMMON_NAME`] in [`CLIENT_ORGANIZATION`], both PEM.
fn client_request() -> std::result::Result<(Secret, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, CLIENT_COMMON_NAME);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, CLIENT_ORGANIZATION);
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((Secret::new(key.serialize_pem()), csr))
}

/// The `marker` of a `next` URL. Only the marker is taken: the URL's host is Magnum's idea
/// of itself (behind a proxy, often an internal name), and the token must not go there.
fn marker_in(next: &str) -> Option<String> {
    let (_, query) = next.split_once('?')?;
    let query = query.split('#').next()?;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("marker="))
        .filter(|m| {
            !m.is_empty()
                && m.len() <= 255
                && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .map(str::to_owned)
}

/// A Magnum client of one cloud, signing in through a shared [`Keystone`].
#[derive(Clone, Debug)]
pub struct Magnum {
    keystone: Arc<Keystone>,
    http: reqwest::Client,
    /// Set by [`Magnum::with_endpoint`]; otherwise the catalog's (or the override's).
    endpoint: Option<String>,
    page_size: u32,
}

impl Magnum {
    /// A client for the cloud's `container-infra` endpoint (catalog or clouds.yaml
    /// override); nothing is sent until a call.
    pub fn new(keystone: Arc<Keystone>) -> Result<Magnum> {
        let config = keystone.config();
        let http = client(&config.auth_url, config.cacert.as_deref(), &config.source)?;
        Ok(Magnum {
            keystone,
            http,
            endpoint: None,
            page_size: DEFAULT_PAGE_SIZE,
        })
    }

    /// A client for Magnum at `endpoint` (its `/v1` URL, e.g.
    /// `https://magnum.example:9511/v1`), for a cloud whose catalog does not list Magnum.
    /// A clouds.yaml `container_infra_endpoint_override` does the same through
    /// [`Magnum::new`]. Tokens still come from `keystone`.
    pub fn with_endpoint(keystone: Arc<Keystone>, endpoint: &str) -> Result<Magnum> {
        let config = keystone.config();
        // The endpoint decides whether TLS is needed, not the auth URL.
        let http = client(endpoint, config.cacert.as_deref(), &config.source)?;
        Ok(Magnum {
            keystone,
            http,
            endpoint: Some(endpoint.trim_end_matches('/').to_owned()),
            page_size: DEFAULT_PAGE_SIZE,
        })
    }

    /// Lists `page_size` items per request instead of [`DEFAULT_PAGE_SIZE`] (Magnum caps
    /// it at its `max_limit`, 1000 by default).
    pub fn with_page_size(mut self, page_size: u32) -> Magnum {
        self.page_size = page_size.max(1);
        self
    }

    /// `method {endpoint}{path}` with the current token; on a 401, once more with a new
    /// one. Any answer is returned: the caller classifies it.
    async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply> {
        let operation = format!("{method} {path}");
        let token = self.keystone.token().await?;
        let reply = self
            .send_with(&token, &method, path, body, &operation)
            .await?;
        if reply.status != 401 {
            return Ok(reply);
        }
        tracing::info!(service = SERVICE_TYPE, operation = %operation,
            request_id = reply.request_id.as_deref().unwrap_or(""),
            "Magnum refused the token; checking it with Keystone");
        let fresh = self.renew(&token).await?;
        if fresh.value() == token.value() {
            // Keystone still takes the token: a new one would fare no better.
            return Ok(reply);
        }
        self.send_with(&fresh, &method, path, body, &operation)
            .await
    }

    /// A token to replace `rejected`: a newer one if another caller renewed it, else
    /// whatever Keystone makes of it. `Keystone::send` renews a token that Keystone itself
    /// refuses, and then retries; `GET /auth/projects` is open to every token.
    async fn renew(&self, rejected: &Token) -> Result<Arc<Token>> {
        let current = self.keystone.token().await?;
        if current.value() != rejected.value() {
            return Ok(current);
        }
        let probe = self
            .keystone
            .send("identity", Method::GET, "/auth/projects", None)
            .await?;
        tracing::debug!(
            status = probe.status,
            "Keystone's view of the refused token"
        );
        self.keystone.token().await
    }

    async fn send_with(
        &self,
        token: &Token,
        method: &Method,
        path: &str,
        body: Option<&Value>,
        operation: &str,
    ) -> Result<Reply> {
        let base = match &self.endpoint {
            Some(endpoint) => endpoint.clone(),
            None => self.keystone.endpoint(SERVICE_TYPE).await?,
        };
        let mut header =
            reqwest::header::HeaderValue::from_str(token.value().expose()).map_err(|_| {
                Error::InvalidResponse {
                    service: "identity".to_owned(),
                    operation: "POST /auth/tokens".to_owned(),
                    message: "the token is not a valid header value".to_owned(),
                }
            })?;
        header.set_sensitive(true);
        let mut request = self
            .http
            .request(method.clone(), format!("{base}{path}"))
            .header("X-Auth-Token", header)
            .header("Accept", "application/json")
            .header("OpenStack-API-Version", API_VERSION);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| connection_error(SERVICE_TYPE, operation, &e))?;
        Reply::read(
            response,
            SERVICE_TYPE,
            operation,
            token.is_application_credential(),
        )
        .await
    }

    /// Every item of `collection` (`clusters`, `clustertemplates`), page by page.
    async fn list(&self, collection: &str) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut marker: Option<String> = None;
        let mut markers = BTreeSet::new();
        loop {
            let mut path = format!("/{collection}?limit={}", self.page_size);
            if let Some(marker) = &marker {
                path.push_str("&marker=");
                path.push_str(marker);
            }
            let reply = self
                .send(Method::GET, &path, None)
                .await?
                .require_status(&[200])?;
            let page: Value = reply.json()?;
            let list = page[collection]
                .as_array()
                .ok_or_else(|| reply.invalid(format!("no `{collection}` list")))?;
            items.extend(list.iter().cloned());
            // Magnum sends `next` whenever a page is full, so the last page may be empty.
            let Some(next) = page["next"].as_str().filter(|_| !list.is_empty()) else {
                return Ok(items);
            };
            let next_marker = marker_in(next)
                .ok_or_else(|| reply.invalid(format!("`next` has no usable marker: {next}")))?;
            if !markers.insert(next_marker.clone()) {
                return Err(reply.invalid(format!("`next` repeats marker {next_marker}")));
            }
            marker = Some(next_marker);
        }
    }

    /// Every cluster template the project sees (its own and public ones).
    pub async fn cluster_templates(&self) -> Result<Vec<ClusterTemplate>> {
        self.list("clustertemplates")
            .await?
            .iter()
            .map(|item| {
                ClusterTemplate::from_json(item).map_err(|message| Error::InvalidResponse {
                    service: SERVICE_TYPE.to_owned(),
                    operation: "GET /clustertemplates".to_owned(),
                    message,
                })
            })
            .collect()
    }

    /// One cluster template by uuid or name.
    pub async fn cluster_template(&self, ident: &str) -> Result<ClusterTemplate> {
        check_ident(ident)?;
        let reply = self
            .send(Method::GET, &format!("/clustertemplates/{ident}"), None)
            .await?
            .require_status(&[200])?;
        ClusterTemplate::from_json(&reply.json()?).map_err(|m| reply.invalid(m))
    }

    /// The template named `template.name` if there is one (used as it is, even if its
    /// settings differ), else a new one. Two templates of that name are an error: Magnum
    /// does not keep names unique, and Ferry will not pick one.
    pub async fn ensure_cluster_template(
        &self,
        template: &NewClusterTemplate,
    ) -> Result<TemplateCreated> {
        template.check()?;
        let mut named: Vec<ClusterTemplate> = self
            .cluster_templates()
            .await?
            .into_iter()
            .filter(|t| t.name == template.name)
            .collect();
        if named.len() > 1 {
            let uuids: Vec<&str> = named.iter().map(|t| t.uuid.as_str()).collect();
            return Err(Error::InvalidInput {
                what: format!("cluster template name {:?}", template.name),
                message: format!(
                    "{} templates have it ({}); delete the extra ones or choose another name",
                    named.len(),
                    uuids.join(", ")
                ),
            });
        }
        if let Some(existing) = named.pop() {
            tracing::info!(template = %existing.name, uuid = %existing.uuid,
                "a cluster template of that name exists; using it");
            return Ok(TemplateCreated {
                template: existing,
                adopted: true,
            });
        }
        let reply = self
            .send(Method::POST, "/clustertemplates", Some(&template.body()))
            .await?
            .require_status(&[201, 200])?;
        let created = ClusterTemplate::from_json(&reply.json()?).map_err(|m| reply.invalid(m))?;
        tracing::info!(template = %created.name, uuid = %created.uuid,
            request_id = reply.request_id.as_deref().unwrap_or(""), "cluster template created");
        Ok(TemplateCreated {
            template: created,
            adopted: false,
        })
    }

    /// The cluster named `name`, or `None`. Two clusters of that name are Magnum's 409
    /// ([`Error::Conflict`]).
    pub async fn find(&self, name: &str) -> Result<Option<Cluster>> {
        check_cluster_name(name)?;
        match self.cluster(name).await {
            Ok(cluster) => Ok(Some(cluster)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates the cluster, or adopts the cluster of that name that already exists, so
    /// that repeating a create after a crash is safe. A cluster of that name that is being
    /// deleted is refused ([`Error::InvalidInput`]); create it again once it is gone.
    pub async fn create(&self, cluster: &NewCluster) -> Result<ClusterCreated> {
        check_cluster_name(&cluster.name)?;
        check_ident(&cluster.cluster_template_id)?;
        if let Some(existing) = self.find(&cluster.name).await? {
            if existing.status.action == Action::Delete {
                return Err(Error::InvalidInput {
                    what: format!("create of cluster {}", cluster.name),
                    message: format!(
                        "cluster {} of that name exists and is {}; create it again once it \
                         is gone",
                        existing.uuid, existing.status
                    ),
                });
            }
            if existing.cluster_template_id.as_deref() != Some(cluster.cluster_template_id.as_str())
            {
                tracing::warn!(cluster = %existing.name, uuid = %existing.uuid,
                    template = existing.cluster_template_id.as_deref().unwrap_or(""),
                    asked = %cluster.cluster_template_id,
                    "the cluster to adopt was made from another template");
            }
            tracing::info!(cluster = %existing.name, uuid = %existing.uuid,
                status = %existing.status, "a cluster of that name exists; adopting it");
            return Ok(ClusterCreated {
                uuid: existing.uuid,
                name: existing.name,
                adopted: true,
            });
        }
        let reply = self
            .send(Method::POST, "/clusters", Some(&cluster.body()))
            .await?
            .require_status(&[202, 201])?;
        let uuid = uuid_of(&reply)?;
        tracing::info!(cluster = %cluster.name, %uuid,
            request_id = reply.request_id.as_deref().unwrap_or(""), "Magnum cluster create accepted");
        Ok(ClusterCreated {
            uuid,
            name: cluster.name.clone(),
            adopted: false,
        })
    }

    /// The cluster, by uuid or name.
    pub async fn cluster(&self, ident: &str) -> Result<Cluster> {
        check_ident(ident)?;
        let reply = self
            .send(Method::GET, &format!("/clusters/{ident}"), None)
            .await?
            .require_status(&[200])?;
        Cluster::parse(reply.body()).map_err(|m| reply.invalid(m))
    }

    /// Every cluster of the project, page by page (as a list shows them: see [`Cluster`]).
    pub async fn clusters(&self) -> Result<Vec<Cluster>> {
        self.list("clusters")
            .await?
            .iter()
            .map(|item| {
                Cluster::from_json(item).map_err(|message| Error::InvalidResponse {
                    service: SERVICE_TYPE.to_owned(),
                    operation: "GET /clusters".to_owned(),
                    message,
                })
            })
            .collect()
    }

    /// Sets the worker count of the default worker group; the cluster's uuid. Follow it
    /// with [`Magnum::follow_resize`].
    pub async fn resize(&self, ident: &str, node_count: u32) -> Result<String> {
        check_ident(ident)?;
        let body = json!({ "node_count": node_count });
        let reply = self
            .send(
                Method::POST,
                &format!("/clusters/{ident}/actions/resize"),
                Some(&body),
            )
            .await?
            .require_status(&[202, 200])?;
        let uuid = uuid_of(&reply)?;
        tracing::info!(cluster = %ident, %uuid, node_count,
            request_id = reply.request_id.as_deref().unwrap_or(""), "Magnum resize accepted");
        Ok(uuid)
    }

    /// Asks Magnum to delete the cluster; `false` when it was already gone (404). Follow
    /// it, by uuid, with [`Action::Delete`]: it ends in [`ClusterOutcome::Gone`].
    pub async fn delete(&self, ident: &str) -> Result<bool> {
        check_ident(ident)?;
        let reply = self
            .send(Method::DELETE, &format!("/clusters/{ident}"), None)
            .await?;
        match reply.status {
            204 | 202 | 200 => {
                tracing::info!(cluster = %ident,
                    request_id = reply.request_id.as_deref().unwrap_or(""),
                    "Magnum cluster delete accepted");
                Ok(true)
            }
            404 => Ok(false),
            _ => Err(reply.error()),
        }
    }

    /// Polls the cluster until `action` is done, calling `on_progress` whenever what
    /// Magnum shows changes. Follow by uuid. For [`Action::Create`], a later action
    /// (the cluster was created and then resized) counts as the create being over.
    /// Transient errors are ridden out until the deadline; others end the follow.
    pub async fn follow(
        &self,
        ident: &str,
        action: Action,
        follow: &Follow,
        on_progress: impl FnMut(&ClusterProgress),
    ) -> Result<ClusterOutcome> {
        let target = Target {
            action,
            node_count: None,
        };
        self.follow_target(ident, target, follow, on_progress).await
    }

    /// [`Magnum::follow`] for a resize to `node_count`: until the cluster shows that many
    /// nodes, the resize has not started (Magnum starts it after its 202), for up to
    /// `follow.start_grace`.
    pub async fn follow_resize(
        &self,
        ident: &str,
        node_count: u32,
        follow: &Follow,
        on_progress: impl FnMut(&ClusterProgress),
    ) -> Result<ClusterOutcome> {
        let target = Target {
            action: Action::Update,
            node_count: Some(node_count),
        };
        self.follow_target(ident, target, follow, on_progress).await
    }

    async fn follow_target(
        &self,
        ident: &str,
        target: Target,
        follow: &Follow,
        mut on_progress: impl FnMut(&ClusterProgress),
    ) -> Result<ClusterOutcome> {
        let started = Instant::now();
        let deadline = started + follow.deadline;
        let mut delay = follow.first_delay;
        let mut last: Option<ClusterProgress> = None;
        let mut last_text: String;
        loop {
            match self.poll(ident, target, follow, started).await {
                Ok(Poll::Done(outcome)) => return Ok(*outcome),
                Ok(Poll::Running(progress)) => {
                    if last.as_ref() != Some(&progress) {
                        tracing::debug!(cluster = %ident, progress = %progress, "cluster progress");
                        on_progress(&progress);
                    }
                    last_text = progress.to_string();
                    last = Some(progress);
                }
                Err(error) if error.is_transient() => {
                    tracing::warn!(cluster = %ident, %error,
                        "polling the cluster failed; trying again");
                    last_text = error.to_string();
                }
                Err(error) => return Err(error),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!("cluster {ident} {}", target.action),
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
        ident: &str,
        target: Target,
        follow: &Follow,
        started: Instant,
    ) -> Result<Poll> {
        let cluster = match self.cluster(ident).await {
            Err(Error::NotFound(_)) if target.action == Action::Delete => {
                return Ok(Poll::Done(Box::new(ClusterOutcome::Gone)));
            }
            other => other?,
        };
        let status = cluster.status;
        let ours = status.action == target.action
            || status.action == Action::Rollback
            || (target.action == Action::Create && status.action != Action::Delete);
        let sized = target.node_count.is_none_or(|n| cluster.node_count == n);
        let not_started = !ours || (!sized && status.state == State::Complete);
        if status.state == State::InProgress
            || (not_started && started.elapsed() < follow.start_grace)
        {
            return Ok(Poll::Running(ClusterProgress::of(&cluster)));
        }
        let did_not_start = |what: String| Error::InvalidResponse {
            service: SERVICE_TYPE.to_owned(),
            operation: format!("GET /clusters/{ident}"),
            message: format!(
                "{what} after {} s: the {} did not start",
                follow.start_grace.as_secs(),
                target.action
            ),
        };
        if !ours {
            return Err(did_not_start(format!("the cluster is {status}")));
        }
        Ok(Poll::Done(Box::new(match status.state {
            State::Complete if status.action == Action::Rollback => ClusterOutcome::Failed(cluster),
            State::Complete if !sized => {
                return Err(did_not_start(format!(
                    "the cluster is {status} with {} nodes, not {}",
                    cluster.node_count,
                    target.node_count.unwrap_or_default()
                )));
            }
            State::Complete => ClusterOutcome::Complete(cluster),
            State::Failed | State::InProgress => ClusterOutcome::Failed(cluster),
        })))
    }

    /// The cluster's last action as the broker's [`Operation`], its id the cluster's
    /// uuid: running (with what Magnum shows), done, or failed (with Magnum's reason).
    pub async fn operation(&self, ident: &str) -> Result<Operation> {
        let cluster = self.cluster(ident).await?;
        Ok(operation_of(&cluster))
    }

    /// Client credentials for the cluster's Kubernetes API as cluster-admin: a new key,
    /// its certificate signed by the cluster CA, the CA and the API URL. Each call makes a
    /// new key; nothing is stored.
    pub async fn credentials(&self, ident: &str) -> Result<MagnumAccess> {
        let cluster = self.cluster(ident).await?;
        let refused = |message: String| Error::Credentials {
            cluster: format!("{} ({})", cluster.name, cluster.uuid),
            message,
        };
        if cluster.status.action == Action::Delete {
            return Err(refused(format!("it is {}", cluster.status)));
        }
        let address = cluster.api_address.as_deref().ok_or_else(|| {
            refused(format!(
                "Magnum shows no API address yet (the cluster is {})",
                cluster.status
            ))
        })?;
        let template_id = cluster
            .cluster_template_id
            .as_deref()
            .ok_or_else(|| refused("Magnum shows no cluster template".to_owned()))?;
        let template = self.cluster_template(template_id).await?;
        if template.coe != "kubernetes" {
            return Err(refused(format!(
                "its template {} is for {:?}, not Kubernetes",
                template.name, template.coe
            )));
        }
        if template.tls_disabled {
            return Err(refused(format!(
                "its template {} disables TLS: Magnum signs no client certificates then",
                template.name
            )));
        }
        let (key, csr) = client_request()
            .map_err(|e| refused(format!("making a client key and request: {e}")))?;

        let path = format!("/certificates/{}", cluster.uuid);
        let reply = self
            .send(Method::GET, &path, None)
            .await?
            .require_status(&[200])?;
        let ca_pem = pem_field(&reply)?;
        let body = json!({ "cluster_uuid": cluster.uuid, "csr": csr });
        let reply = self
            .send(Method::POST, "/certificates", Some(&body))
            .await?
            .require_status(&[201, 200])?;
        let client_cert_pem = pem_field(&reply)?;
        tracing::info!(cluster = %cluster.name, uuid = %cluster.uuid,
            request_id = reply.request_id.as_deref().unwrap_or(""),
            "Magnum signed a client certificate");
        Ok(MagnumAccess {
            api_url: api_url_of(address),
            ca_pem,
            client_cert_pem,
            client_key_pem: key,
        })
    }
}

/// The `uuid` of a 202 `{"uuid": …}`.
fn uuid_of(reply: &Reply) -> Result<String> {
    let body: Value = reply.json()?;
    body["uuid"]
        .as_str()
        .filter(|u| check_ident(u).is_ok())
        .map(str::to_owned)
        .ok_or_else(|| reply.invalid("no cluster uuid".to_owned()))
}

/// The `pem` of a certificate answer, checked to be one certificate.
fn pem_field(reply: &Reply) -> Result<String> {
    let body: Value = reply.json()?;
    body["pem"]
        .as_str()
        .filter(|pem| is_pem_certificate(pem))
        .map(str::to_owned)
        .ok_or_else(|| reply.invalid("`pem` is not a PEM certificate".to_owned()))
}

fn operation_of(cluster: &Cluster) -> Operation {
    let id = cluster.uuid.clone();
    match cluster.status.state {
        State::InProgress => Operation::Running {
            id,
            progress: ClusterProgress::of(cluster).to_string(),
        },
        State::Complete if cluster.status.action != Action::Rollback => Operation::Done { id },
        _ => Operation::Failed {
            id,
            reason: cluster.reason(),
        },
    }
}

/// What [`MagnumClusters`] asked of a cluster and has not yet seen happen.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Resize { node_count: u32, since: Instant },
    Delete { since: Instant },
}

/// Ferry's Magnum clusters of one cloud: which cluster each is, and the [`Provisioner`]
/// over them. Operation ids are cluster uuids.
///
/// A resize or a delete asked for here is remembered until it is seen to happen: right
/// after Magnum's 202 the cluster still shows the previous action's `*_COMPLETE`, which
/// must not read as the new operation being done. After a restart, [`Provisioner::operation`]
/// goes by the status alone.
#[derive(Debug)]
pub struct MagnumClusters {
    magnum: Magnum,
    clusters: RwLock<BTreeMap<String, String>>,
    pending: Mutex<BTreeMap<String, Pending>>,
}

impl MagnumClusters {
    pub fn new(magnum: Magnum) -> MagnumClusters {
        MagnumClusters {
            magnum,
            clusters: RwLock::new(BTreeMap::new()),
            pending: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn magnum(&self) -> &Magnum {
        &self.magnum
    }

    /// Creates (or adopts) the Magnum cluster of `cluster` and remembers it. Journal the
    /// uuid before following it, so that a restart resumes instead of creating.
    pub async fn create(&self, cluster: &str, new: &NewCluster) -> Result<ClusterCreated> {
        let created = self.magnum.create(new).await?;
        self.register(cluster, &created.uuid);
        Ok(created)
    }

    /// Remembers that `cluster` is the Magnum cluster `uuid` (after a restart, from the
    /// journal).
    pub fn register(&self, cluster: &str, uuid: &str) {
        let mut clusters = self.clusters.write().unwrap_or_else(|p| p.into_inner());
        clusters.insert(cluster.to_owned(), uuid.to_owned());
    }

    pub fn forget(&self, cluster: &str) {
        let mut clusters = self.clusters.write().unwrap_or_else(|p| p.into_inner());
        clusters.remove(cluster);
    }

    /// The Magnum cluster of `cluster`.
    pub fn uuid(&self, cluster: &str) -> Option<String> {
        let clusters = self.clusters.read().unwrap_or_else(|p| p.into_inner());
        clusters.get(cluster).cloned()
    }

    fn known(&self, cluster: &str) -> Result<String> {
        self.uuid(cluster).ok_or_else(|| Error::InvalidInput {
            what: format!("cluster {cluster}"),
            message: "Ferry provisioned no Magnum cluster for it".to_owned(),
        })
    }

    fn expect(&self, uuid: &str, pending: Pending) {
        let mut all = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(uuid.to_owned(), pending);
    }

    fn pending(&self, uuid: &str) -> Option<Pending> {
        let all = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        all.get(uuid).copied()
    }

    fn settle(&self, uuid: &str) {
        let mut all = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(uuid);
    }

    /// Credentials for the cluster's Kubernetes API (see [`Magnum::credentials`]).
    pub async fn access(&self, cluster: &str) -> Result<MagnumAccess> {
        self.magnum.credentials(&self.known(cluster)?).await
    }

    /// Asks Magnum to delete the cluster; the operation to follow, done once Magnum no
    /// longer knows the cluster.
    pub async fn delete(&self, cluster: &str) -> Result<Operation> {
        let uuid = self.known(cluster)?;
        self.magnum.delete(&uuid).await?;
        self.expect(
            &uuid,
            Pending::Delete {
                since: Instant::now(),
            },
        );
        Ok(Operation::Running {
            id: uuid,
            progress: "delete requested".to_owned(),
        })
    }

    async fn operation_of_uuid(&self, uuid: &str) -> Result<Operation> {
        let pending = self.pending(uuid);
        let cluster = match self.magnum.cluster(uuid).await {
            Err(Error::NotFound(_)) if matches!(pending, Some(Pending::Delete { .. })) => {
                self.settle(uuid);
                return Ok(Operation::Done {
                    id: uuid.to_owned(),
                });
            }
            other => other?,
        };
        let operation = operation_of(&cluster);
        let Some(pending) = pending else {
            return Ok(operation);
        };
        let (started, since, what) = match pending {
            Pending::Delete { since } => (
                cluster.status.action == Action::Delete,
                since,
                "delete".to_owned(),
            ),
            // A failure counts: the resize may have failed before it changed the count.
            Pending::Resize { node_count, since } => (
                cluster.status.state != State::Complete || cluster.node_count == node_count,
                since,
                format!("resize to {node_count} nodes"),
            ),
        };
        if started {
            if !matches!(operation, Operation::Running { .. }) {
                self.settle(uuid);
            }
            return Ok(operation);
        }
        if since.elapsed() < START_GRACE {
            return Ok(Operation::Running {
                id: uuid.to_owned(),
                progress: format!(
                    "{what} requested; Magnum shows {}",
                    ClusterProgress::of(&cluster)
                ),
            });
        }
        self.settle(uuid);
        Ok(Operation::Failed {
            id: uuid.to_owned(),
            reason: format!(
                "the {what} did not start within {} s; {}",
                START_GRACE.as_secs(),
                cluster.reason()
            ),
        })
    }
}

#[async_trait]
impl Provisioner for MagnumClusters {
    /// `POST /clusters/{uuid}/actions/resize` of the default worker group.
    async fn resize(&self, cluster: &str, nodes: u32) -> std::result::Result<Operation, PortError> {
        let uuid = self.known(cluster).map_err(|e| e.to_port_error(cluster))?;
        self.magnum
            .resize(&uuid, nodes)
            .await
            .map_err(|e| e.to_port_error(cluster))?;
        self.expect(
            &uuid,
            Pending::Resize {
                node_count: nodes,
                since: Instant::now(),
            },
        );
        Ok(Operation::Running {
            id: uuid,
            progress: format!("node_count → {nodes} requested"),
        })
    }

    async fn operation(&self, id: &str) -> std::result::Result<Operation, PortError> {
        self.operation_of_uuid(id)
            .await
            .map_err(|e| e.to_port_error(id))
    }
}

#[cfg(test)]
mod tests {
    use rcgen::PublicKeyData as _;

    use super::*;
    use crate::error::ApiError;

    /// `cluster-get-one-resp.json` of Magnum's api-ref.
    const GET_ONE: &str = r#"{
       "status":"CREATE_COMPLETE",
       "uuid":"746e779a-751a-456b-a3e9-c883d734946f",
       "links":[
          {"href":"http://10.164.180.104:9511/v1/clusters/746e779a-751a-456b-a3e9-c883d734946f","rel":"self"},
          {"href":"http://10.164.180.104:9511/clusters/746e779a-751a-456b-a3e9-c883d734946f","rel":"bookmark"}
       ],
       "stack_id":"9c6f1169-7300-4d08-a444-d2be38758719",
       "created_at":"2016-08-29T06:51:31+00:00",
       "api_address":"https://172.24.4.6:6443",
       "discovery_url":"https://discovery.etcd.io/cbeb580da58915809d59ee69348a84f3",
       "updated_at":"2016-08-29T06:53:24+00:00",
       "master_count":1,
       "coe_version": "v1.2.0",
       "keypair":"my_keypair",
       "cluster_template_id":"0562d357-8641-4759-8fed-8173f02c9633",
       "master_addresses":["172.24.4.6"],
       "node_count":1,
       "node_addresses":["172.24.4.13"],
       "status_reason":"Stack CREATE completed successfully",
       "create_timeout":60,
       "name":"k8s"
    }"#;

    /// `cluster-get-all-resp.json` of Magnum's api-ref, with a second cluster as a Cluster
    /// API driver shows it (no stack) and a `next` link.
    const GET_ALL: &str = r#"{
       "clusters":[
          {
             "status":"CREATE_IN_PROGRESS",
             "cluster_template_id":"0562d357-8641-4759-8fed-8173f02c9633",
             "uuid":"731387cf-a92b-4c36-981e-3271d63e5597",
             "links":[{"href":"http://10.164.180.104:9511/v1/clusters/731387cf-a92b-4c36-981e-3271d63e5597","rel":"self"}],
             "stack_id":"31c1ee6c-081e-4f39-9f0f-f1d87a7defa1",
             "keypair":"my_keypair",
             "master_count":1,
             "create_timeout":60,
             "node_count":1,
             "name":"k8s"
          },
          {
             "status":"UPDATE_FAILED",
             "uuid":"0b4b766f-1500-44b3-9804-5a6e12fe6df4",
             "stack_id":null,
             "master_count":3,
             "node_count":5,
             "health_status":"UNHEALTHY",
             "name":"capi"
          }
       ],
       "next":"http://10.164.180.104:9511/v1/clusters?limit=2&marker=0b4b766f-1500-44b3-9804-5a6e12fe6df4"
    }"#;

    #[test]
    fn the_api_refs_cluster_shapes_parse_and_stack_id_is_optional() {
        let cluster = Cluster::parse(GET_ONE.as_bytes()).expect("the sample parses");
        assert_eq!(cluster.uuid, "746e779a-751a-456b-a3e9-c883d734946f");
        assert_eq!(cluster.name, "k8s");
        assert_eq!(
            cluster.status,
            Status {
                action: Action::Create,
                state: State::Complete
            }
        );
        assert_eq!(cluster.status_reason, "Stack CREATE completed successfully");
        assert_eq!(
            cluster.api_address.as_deref(),
            Some("https://172.24.4.6:6443")
        );
        assert_eq!((cluster.master_count, cluster.node_count), (1, 1));
        assert_eq!(cluster.node_addresses, ["172.24.4.13"]);
        assert_eq!(cluster.master_addresses, ["172.24.4.6"]);
        assert_eq!(
            cluster.stack_id.as_deref(),
            Some("9c6f1169-7300-4d08-a444-d2be38758719")
        );
        assert_eq!(
            operation_of(&cluster),
            Operation::Done {
                id: cluster.uuid.clone()
            }
        );

        let page: Value = serde_json::from_str(GET_ALL).expect("JSON");
        let items: Vec<Cluster> = page["clusters"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|item| Cluster::from_json(item).expect("an item parses"))
            .collect();
        assert_eq!(items[0].status.to_string(), "CREATE_IN_PROGRESS");
        assert_eq!(items[0].status_reason, "", "lists carry no reason");
        assert_eq!(items[0].api_address, None);
        assert_eq!(items[1].stack_id, None, "a driver without Heat");
        assert_eq!(items[1].health_status.as_deref(), Some("UNHEALTHY"));
        assert_eq!((items[1].master_count, items[1].node_count), (3, 5));
        assert!(matches!(
            operation_of(&items[0]),
            Operation::Running { progress, .. } if progress == "CREATE_IN_PROGRESS: 1 masters, 1 nodes"
        ));
        match operation_of(&items[1]) {
            Operation::Failed { reason, .. } => assert_eq!(
                reason,
                "cluster capi (0b4b766f-1500-44b3-9804-5a6e12fe6df4) UPDATE_FAILED: Magnum gives no reason"
            ),
            other => panic!("not failed: {other:?}"),
        }
        assert_eq!(
            marker_in(page["next"].as_str().expect("a next link")).as_deref(),
            Some("0b4b766f-1500-44b3-9804-5a6e12fe6df4")
        );
    }

    /// Every status of Magnum's `fields.ClusterStatus`, and what a follow and an
    /// operation make of it.
    #[test]
    fn every_magnum_status_parses_into_action_and_state() {
        let all = [
            ("CREATE_IN_PROGRESS", Action::Create, State::InProgress),
            ("CREATE_FAILED", Action::Create, State::Failed),
            ("CREATE_COMPLETE", Action::Create, State::Complete),
            ("UPDATE_IN_PROGRESS", Action::Update, State::InProgress),
            ("UPDATE_FAILED", Action::Update, State::Failed),
            ("UPDATE_COMPLETE", Action::Update, State::Complete),
            ("DELETE_IN_PROGRESS", Action::Delete, State::InProgress),
            ("DELETE_FAILED", Action::Delete, State::Failed),
            ("DELETE_COMPLETE", Action::Delete, State::Complete),
            ("RESUME_COMPLETE", Action::Resume, State::Complete),
            ("RESUME_FAILED", Action::Resume, State::Failed),
            ("RESTORE_COMPLETE", Action::Restore, State::Complete),
            ("ROLLBACK_IN_PROGRESS", Action::Rollback, State::InProgress),
            ("ROLLBACK_FAILED", Action::Rollback, State::Failed),
            ("ROLLBACK_COMPLETE", Action::Rollback, State::Complete),
            ("SNAPSHOT_COMPLETE", Action::Snapshot, State::Complete),
            ("CHECK_COMPLETE", Action::Check, State::Complete),
            ("ADOPT_COMPLETE", Action::Adopt, State::Complete),
        ];
        for (text, action, state) in all {
            let body = json!({"uuid": "u", "name": "k8s", "status": text, "status_reason": "why"});
            let cluster = Cluster::from_json(&body).expect(text);
            assert_eq!(cluster.status, Status { action, state }, "{text}");
            assert_eq!(cluster.status.to_string(), text);
            let expected_kind = match (state, action) {
                (State::InProgress, _) => "running",
                (State::Complete, Action::Rollback) => "failed",
                (State::Complete, _) => "done",
                (State::Failed, _) => "failed",
            };
            let kind = match operation_of(&cluster) {
                Operation::Running { .. } => "running",
                Operation::Done { .. } => "done",
                Operation::Failed { reason, .. } => {
                    assert!(reason.contains("why"), "{reason}");
                    "failed"
                }
            };
            assert_eq!(kind, expected_kind, "{text}");
        }
        for bad in [
            json!({"uuid": "u", "status": "GROWING"}),
            json!({"uuid": "u"}),
        ] {
            assert!(Cluster::from_json(&bad).is_err(), "{bad}");
        }
    }

    /// Magnum's envelopes (ParsableErrorMiddleware, and the microversion refusal, which
    /// keeps webob's `message`): the detail, the code when it says something, and the
    /// request id from the header or else the envelope.
    #[test]
    fn magnums_error_envelopes_give_their_detail() {
        /// (status, body, header request id, kind, message, request id, variant)
        type Case = (
            u16,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
            Option<&'static str>,
            fn(&Error) -> bool,
        );
        let cases: [Case; 5] = [
            (
                404,
                r#"{"errors":[{"request_id":"","code":"client","status":404,"title":"Cluster k8s could not be found","detail":"Cluster k8s could not be found.","links":[]}]}"#,
                Some("req-4f1c"),
                None,
                "Cluster k8s could not be found.",
                Some("req-4f1c"),
                |e| matches!(e, Error::NotFound(_)),
            ),
            (
                409,
                r#"{"errors":[{"request_id":"req-in-body","code":"client","status":409,"title":"Multiple clusters exist with same name","detail":"Multiple clusters exist with same name. Please use the cluster uuid instead.","links":[]}]}"#,
                None,
                None,
                "Multiple clusters exist with same name. Please use the cluster uuid instead.",
                Some("req-in-body"),
                |e| matches!(e, Error::Conflict(_)),
            ),
            (
                400,
                r#"{"errors":[{"request_id":"","code":"client","status":400,"title":"Invalid input for field/attribute node_count","detail":"Invalid input for field/attribute node_count. Value: '0'. Value should be greater or equal to 1","links":[]}]}"#,
                None,
                None,
                "Invalid input for field/attribute node_count. Value: '0'. Value should be greater or equal to 1",
                None,
                |e| matches!(e, Error::BadRequest(_)),
            ),
            (
                406,
                r#"{"errors":[{"code":"magnum.microversion-unsupported","title":"Requested microversion is unsupported","message":"Version 1.1 was requested but the requested API resize is not supported for this version.","max_version":"1.14","min_version":"1.1","links":[{"rel":"help","href":"http://docs.openstack.org/api-guide/compute/microversions.html"}]}]}"#,
                None,
                Some("magnum.microversion-unsupported"),
                "Version 1.1 was requested but the requested API resize is not supported for this version.",
                None,
                |e| matches!(e, Error::BadRequest(_)),
            ),
            (
                500,
                r#"{"errors":[{"request_id":"","code":"server","status":500,"title":"","detail":"","links":[]}]}"#,
                None,
                None,
                "Internal Server Error",
                None,
                |e| matches!(e, Error::Unavailable(_)),
            ),
        ];
        for (status, body, header_id, kind, message, request_id, variant) in cases {
            let api = ApiError::parse(
                SERVICE_TYPE,
                "GET /clusters/k8s",
                status,
                header_id.map(str::to_owned),
                Some("application/json"),
                body.as_bytes(),
            );
            // A 500 with an empty detail falls back to the status and the body's size.
            assert!(
                api.message.starts_with(message),
                "{status}: {}",
                api.message
            );
            assert_eq!(api.kind.as_deref(), kind, "{status}");
            assert_eq!(api.request_id.as_deref(), request_id, "{status}");
            let error = Error::from_status(api, false);
            assert!(variant(&error), "{status}: {error:?}");
            let shown = error.to_string();
            for raw in ["\"errors\"", "{", "links"] {
                assert!(!shown.contains(raw), "{status} shows {raw}: {shown}");
            }
        }
    }

    #[test]
    fn a_key_and_a_csr_for_admin_in_system_masters() {
        let (key, csr) = client_request().expect("a key and a CSR");
        assert!(key.expose().starts_with("-----BEGIN PRIVATE KEY-----"));
        assert_eq!(format!("{key:?}"), "<redacted>");
        // The mock's own parser (rcgen with x509-parser, a dev-dependency) checks the
        // signature and reads the subject back.
        let parsed =
            rcgen::CertificateSigningRequestParams::from_pem(&csr).expect("a valid, signed CSR");
        let name = &parsed.params.distinguished_name;
        let text = |ty| match name.get(&ty) {
            Some(rcgen::DnValue::Utf8String(s)) => Some(s.clone()),
            other => panic!("{other:?}"),
        };
        assert_eq!(text(rcgen::DnType::CommonName).as_deref(), Some("admin"));
        assert_eq!(
            text(rcgen::DnType::OrganizationName).as_deref(),
            Some("system:masters")
        );
        let key = rcgen::KeyPair::from_pem(key.expose()).expect("PKCS #8");
        assert_eq!(parsed.public_key.der_bytes(), key.public_key_raw());
        let (again, _) = client_request().expect("a second key");
        assert_ne!(
            again.expose(),
            rcgen::KeyPair::serialize_pem(&key),
            "fresh each time"
        );
    }

    #[test]
    fn request_bodies_hold_what_was_asked_and_nothing_unset() {
        let mut template = NewClusterTemplate::kubernetes("ferry-k8s", "fcos-40", "public");
        template.flavor_id = Some("m1.large".into());
        template.labels.insert("kube_tag".into(), "v1.30.1".into());
        let body = template.body();
        assert_eq!(body["coe"], "kubernetes");
        assert_eq!(body["tls_disabled"], false);
        assert_eq!(body["public"], false);
        assert_eq!(body["flavor_id"], "m1.large");
        assert_eq!(body["labels"]["kube_tag"], "v1.30.1");
        assert!(body.get("keypair_id").is_none(), "{body}");
        assert!(body.get("docker_volume_size").is_none(), "{body}");

        let mut cluster = NewCluster::new("k8s", "0562d357-8641-4759-8fed-8173f02c9633", 3)
            .label("auto_healing_enabled", "true");
        cluster.create_timeout = Some(Duration::from_secs(90));
        let body = cluster.body();
        assert_eq!(body["node_count"], 3);
        assert_eq!(body["master_count"], 1);
        assert_eq!(body["create_timeout"], 2, "minutes, rounded up");
        assert_eq!(body["labels"], json!({"auto_healing_enabled": "true"}));
        assert_eq!(body["merge_labels"], true);
        assert!(body.get("keypair").is_none(), "{body}");
        let plain = NewCluster::new("k8s", "t", 1).body();
        assert!(plain.get("labels").is_none() && plain.get("merge_labels").is_none());
    }

    #[test]
    fn names_idents_markers_and_addresses() {
        for good in ["k8s", "Ferry.dc-1_a", &"a".repeat(242)] {
            assert!(check_cluster_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1k8s", "k8s/x", "k 8s", "-k", &"a".repeat(243)] {
            assert!(check_cluster_name(bad).is_err(), "{bad}");
        }
        assert!(check_ident("746e779a-751a-456b-a3e9-c883d734946f").is_ok());
        for bad in ["", "..", ".", "a/b", "a?b", "a%2F"] {
            assert!(check_ident(bad).is_err(), "{bad}");
        }
        let cases = [
            (
                "http://m:9511/v1/clusters?limit=3&marker=abc-1",
                Some("abc-1"),
            ),
            ("http://m/v1/clusters?marker=abc&limit=3", Some("abc")),
            ("http://m/v1/clusters?limit=3", None),
            ("http://m/v1/clusters?marker=a/../b", None),
            ("http://m/v1/clusters", None),
        ];
        for (next, marker) in cases {
            assert_eq!(marker_in(next).as_deref(), marker, "{next}");
        }
        let addresses = [
            ("https://172.24.4.6:6443", "https://172.24.4.6:6443"),
            ("https://172.24.4.6:6443/", "https://172.24.4.6:6443"),
            ("172.24.4.3", "https://172.24.4.3"),
            ("172.24.4.3:6443", "https://172.24.4.3:6443"),
            ("2001:db8::7", "https://[2001:db8::7]"),
        ];
        for (address, url) in addresses {
            assert_eq!(api_url_of(address), url, "{address}");
        }
        assert!(is_pem_certificate(
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        ));
        assert!(!is_pem_certificate("MIIB"));
    }

    #[test]
    fn progress_reads_like_magnums_status() {
        let cluster = Cluster::from_json(&json!({
            "uuid": "u", "name": "k8s", "status": "UPDATE_IN_PROGRESS", "node_count": 5,
            "master_count": 1, "health_status": "HEALTHY", "status_reason": "scaling"
        }))
        .expect("parses");
        assert_eq!(
            ClusterProgress::of(&cluster).to_string(),
            "UPDATE_IN_PROGRESS: 1 masters, 5 nodes, HEALTHY (scaling)"
        );
    }
}
