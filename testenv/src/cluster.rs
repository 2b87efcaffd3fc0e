//! One Kubernetes test cluster: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok as processes on loopback, fake nodes of declared capacity,
//! an admin kubeconfig and restricted identities on demand.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Error;
use crate::binaries::Binaries;
use crate::pki::{Pki, random_token};
use crate::ports::free_port;
use crate::process::Supervised;

/// How long an apiserver gets to become ready. Its post-start hooks (RBAC bootstrap,
/// OpenAPI) take tens of CPU-seconds, and on two cores three start at once.
const APISERVER_READY: Duration = Duration::from_secs(240);
/// How long the controllers and kwok get to make the default ServiceAccount and the nodes.
const CLUSTER_READY: Duration = Duration::from_secs(180);
/// kwok applies its documented defaults only to flags, not to a configuration file's
/// options: without these its lease controller refuses to start ("parallelism must be
/// greater than 0").
const KWOK_CONFIGURATION: &str = "apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  podPlayStageParallelism: 4
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 4
  podsOnNodeSyncParallelism: 1
  enablePodsOnNodeSyncListPager: true
  enablePodsOnNodeSyncStreamWatch: false
";
const POLL: Duration = Duration::from_millis(250);
/// Log lines shown per component when something fails.
const TAIL: usize = 25;

/// Fake nodes of one cluster: `count` nodes, each with this capacity.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub count: usize,
    /// A Kubernetes quantity, e.g. `8` cores.
    pub cpu: String,
    /// A Kubernetes quantity, e.g. `32Gi`.
    pub memory: String,
    pub pods: u32,
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            count: 4,
            cpu: "8".to_owned(),
            memory: "32Gi".to_owned(),
            pods: 110,
        }
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Used for the kubeconfig's cluster and context names, node names and logs.
    pub name: String,
    pub nodes: NodeSpec,
    /// Where to keep its files (emptied first, kept after); a fresh folder under the
    /// system temp folder (removed on drop) when `None`.
    pub dir: Option<PathBuf>,
    /// A TokenReview webhook (plain HTTP on loopback) that kube-apiserver asks about bearer
    /// tokens it does not know, as GKE's control planes ask Google: see
    /// [`ClusterSpec::with_token_webhook`].
    pub token_webhook: Option<String>,
}

impl ClusterSpec {
    pub fn named(name: &str) -> ClusterSpec {
        ClusterSpec {
            name: name.to_owned(),
            nodes: NodeSpec::default(),
            dir: None,
            token_webhook: None,
        }
    }

    pub fn with_nodes(mut self, count: usize, cpu: &str, memory: &str) -> ClusterSpec {
        self.nodes = NodeSpec {
            count,
            cpu: cpu.to_owned(),
            memory: memory.to_owned(),
            ..NodeSpec::default()
        };
        self
    }

    pub fn in_dir(mut self, dir: PathBuf) -> ClusterSpec {
        self.dir = Some(dir);
        self
    }

    /// Bearer tokens the apiserver does not know are checked with the TokenReview webhook
    /// at `url` (e.g. [`crate::FakeGoogle::token_review_url`]). Answers are cached for one
    /// second only, so that a token's expiry shows at once.
    pub fn with_token_webhook(mut self, url: &str) -> ClusterSpec {
        self.token_webhook = Some(url.to_owned());
        self
    }
}

/// A restricted identity: a ServiceAccount bound to a ClusterRole, with a token.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: String,
    pub token: String,
    /// A kubeconfig that uses the token.
    pub kubeconfig: PathBuf,
}

/// A running test cluster. Dropping it stops every process it started.
pub struct Cluster {
    name: String,
    dir: PathBuf,
    remove_dir: bool,
    server: String,
    ca_file: PathBuf,
    kubeconfig: PathBuf,
    nodes: NodeSpec,
    /// In start order; stopped in reverse.
    processes: Vec<Supervised>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(io(format!("write {}", path.display())))
}

fn kubeconfig_text(cluster: &str, server: &str, ca_file: &Path, user: &str, token: &str) -> String {
    // Names and paths are ours (no quoting needed beyond the JSON-style strings below).
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {user}\ncurrent-context: {cluster}\n",
        ca = serde_json::Value::String(ca_file.display().to_string()),
    )
}

/// The kubeconfig of a token webhook: the server only, as it is plain HTTP on loopback.
fn webhook_kubeconfig_text(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: token-webhook\n  cluster:\n    server: {server}\nusers:\n- name: kube-apiserver\n  user: {{}}\ncontexts:\n- name: token-webhook\n  context:\n    cluster: token-webhook\n    user: kube-apiserver\ncurrent-context: token-webhook\n",
        server = serde_json::Value::String(url.to_owned()),
    )
}

/// kube-apiserver's flags for the spec's token webhook, if any, with its kubeconfig written.
fn token_webhook_args(spec: &ClusterSpec, dir: &Path) -> Result<Vec<String>, Error> {
    let Some(url) = &spec.token_webhook else {
        return Ok(Vec::new());
    };
    let config = dir.join("token-webhook.kubeconfig");
    write(&config, &webhook_kubeconfig_text(url))?;
    Ok(vec![
        format!(
            "--authentication-token-webhook-config-file={}",
            config.display()
        ),
        // v1beta1 is still the flag's default.
        "--authentication-token-webhook-version=v1".to_owned(),
        "--authentication-token-webhook-cache-ttl=1s".to_owned(),
    ])
}

/// Starts every cluster, side by side: all control planes first, then the readiness
/// waits, so that the slow apiserver start-ups overlap.
pub async fn start_clusters(specs: &[ClusterSpec]) -> Result<Vec<Cluster>, Error> {
    let binaries = tokio::task::spawn_blocking(Binaries::locate)
        .await
        .map_err(|e| Error::Build(e.to_string()))??;
    let mut clusters = Vec::with_capacity(specs.len());
    for spec in specs {
        clusters.push(Cluster::launch(spec, &binaries)?);
    }
    for cluster in &mut clusters {
        cluster.wait_for_apiserver().await?;
    }
    for cluster in &mut clusters {
        cluster.launch_controllers(&binaries)?;
    }
    for cluster in &mut clusters {
        cluster.add_nodes_and_wait().await?;
    }
    Ok(clusters)
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

impl Cluster {
    /// Writes the certificates and configuration, and starts etcd and the apiserver.
    fn launch(spec: &ClusterSpec, binaries: &Binaries) -> Result<Cluster, Error> {
        let (dir, remove_dir) = match &spec.dir {
            Some(dir) => (dir.clone(), false),
            None => {
                let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
                let dir = std::env::temp_dir().join(format!(
                    "ferry-testenv-{}-{}-{serial}",
                    std::process::id(),
                    spec.name
                ));
                (dir, true)
            }
        };
        // The folder is the cluster's own: a leftover of an earlier run (old data, old
        // tokens) would make a different cluster, so start clean.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etcd"))
            .map_err(io(format!("create {}", dir.display())))?;
        let pki = Pki::generate(&spec.name)?;
        let ca_file = dir.join("ca.crt");
        write(&ca_file, &pki.ca_cert)?;
        write(&dir.join("ca.key"), &pki.ca_key)?;
        write(&dir.join("apiserver.crt"), &pki.serving_cert)?;
        write(&dir.join("apiserver.key"), &pki.serving_key)?;
        write(&dir.join("sa.key"), &pki.service_account_key)?;
        write(&dir.join("sa.pub"), &pki.service_account_public)?;
        let admin_token = random_token()?;
        // One static admin identity for the components and the tests, like kwokctl's single
        // admin certificate; restricted identities are ServiceAccounts (see `identity`).
        write(
            &dir.join("tokens.csv"),
            &format!("{admin_token},admin,admin,system:masters\n"),
        )?;
        let apiserver_port = free_port()?;
        let server = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig = dir.join("kubeconfig");
        write(
            &kubeconfig,
            &kubeconfig_text(&spec.name, &server, &ca_file, "admin", &admin_token),
        )?;

        let mut cluster = Cluster {
            name: spec.name.clone(),
            dir: dir.clone(),
            remove_dir,
            server,
            ca_file,
            kubeconfig,
            nodes: spec.nodes.clone(),
            processes: Vec::new(),
        };
        let (etcd_client, etcd_peer) = (free_port()?, free_port()?);
        let d = |name: &str| dir.join(name).display().to_string();
        cluster.spawn(
            binaries,
            "etcd",
            vec![
                "--name=node0".to_owned(),
                format!("--data-dir={}", d("etcd")),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=node0=http://127.0.0.1:{etcd_peer}"),
                // Test data: durability across a power cut is not worth the fsyncs.
                "--unsafe-no-fsync=true".to_owned(),
                "--auto-compaction-retention=1".to_owned(),
                "--quota-backend-bytes=2147483648".to_owned(),
                "--log-level=warn".to_owned(),
            ],
        )?;
        cluster.spawn(
            binaries,
            "kube-apiserver",
            vec![
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={apiserver_port}"),
                // Loopback cannot be written into the `kubernetes` Endpoints; `none` avoids
                // the reconciler in every version.
                "--advertise-address=127.0.0.1".to_owned(),
                "--endpoint-reconciler-type=none".to_owned(),
                format!("--tls-cert-file={}", d("apiserver.crt")),
                format!("--tls-private-key-file={}", d("apiserver.key")),
                format!("--cert-dir={}", d("kas")),
                format!("--token-auth-file={}", d("tokens.csv")),
                // Client certificates signed by the cluster CA, as Magnum issues them.
                format!("--client-ca-file={}", d("ca.crt")),
                "--authorization-mode=RBAC".to_owned(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
                format!("--service-account-key-file={}", d("sa.pub")),
                format!("--service-account-signing-key-file={}", d("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
                "--allow-privileged=true".to_owned(),
                "--enable-priority-and-fairness=false".to_owned(),
                "--profiling=false".to_owned(),
            ]
            .into_iter()
            .chain(token_webhook_args(spec, &dir)?)
            .collect(),
        )?;
        Ok(cluster)
    }

    fn spawn(
        &mut self,
        binaries: &Binaries,
        component: &str,
        args: Vec<String>,
    ) -> Result<(), Error> {
        let log = self.dir.join(format!("{component}.log"));
        let home = self.dir.clone();
        // kwok reads ~/.kwok/kwok.yaml first if it exists: a private HOME keeps a
        // developer's file out of the tests.
        let env: Vec<(&str, &Path)> = vec![("HOME", home.as_path())];
        let process = Supervised::start(
            component,
            &binaries.path(component),
            &args,
            &env,
            &self.dir,
            log,
        )?;
        self.processes.push(process);
        Ok(())
    }

    /// Starts the controller manager, the scheduler and kwok, once the apiserver is ready.
    fn launch_controllers(&mut self, binaries: &Binaries) -> Result<(), Error> {
        let kubeconfig = self.kubeconfig.display().to_string();
        let (kcm_port, scheduler_port) = (free_port()?, free_port()?);
        let d = |name: &str| self.dir.join(name).display().to_string();
        let kcm_args = vec![
            format!("--kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={kcm_port}"),
            // No lease wait after a restart: one controller manager per cluster.
            "--leader-elect=false".to_owned(),
            format!("--root-ca-file={}", d("ca.crt")),
            format!("--service-account-private-key-file={}", d("sa.key")),
            "--controllers=*".to_owned(),
        ];
        let scheduler_args = vec![
            format!("--kubeconfig={kubeconfig}"),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={scheduler_port}"),
            "--leader-elect=false".to_owned(),
        ];
        let kwok_config = self.dir.join("kwok.yaml");
        write(
            &kwok_config,
            &format!(
                "{KWOK_CONFIGURATION}---\n{}",
                include_str!("../data/kwok-stages.yaml")
            ),
        )?;
        let kwok_args = vec![
            format!("--kubeconfig={kubeconfig}"),
            format!("--config={}", kwok_config.display()),
            "--manage-all-nodes=true".to_owned(),
            "--node-lease-duration-seconds=40".to_owned(),
            // Pod IPs apart from the service range, so that they cannot be confused.
            "--cidr=10.244.0.1/16".to_owned(),
        ];
        self.spawn(binaries, "kube-controller-manager", kcm_args)?;
        self.spawn(binaries, "kube-scheduler", scheduler_args)?;
        self.spawn(binaries, "kwok", kwok_args)?;
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The apiserver's URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The cluster's CA certificate (PEM file).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The cluster CA's key (PEM file), for tests that issue client certificates.
    pub fn ca_key_file(&self) -> PathBuf {
        self.ca_file.with_file_name("ca.key")
    }

    /// An admin kubeconfig (`system:masters`), usable by kubectl and by kube-rs.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn nodes(&self) -> &NodeSpec {
        &self.nodes
    }

    /// PIDs of every process of this cluster.
    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().filter_map(Supervised::pid).collect()
    }

    /// Each component (`etcd`, `kube-apiserver`, ...) with its PID (`None` once killed).
    pub fn components(&self) -> Vec<(String, Option<u32>)> {
        self.processes
            .iter()
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect()
    }

    /// A client for the admin identity, built from the kubeconfig file.
    pub async fn client(&self) -> Result<Client, Error> {
        client_from(&self.kubeconfig).await
    }

    fn kube_error(&self, what: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
        let what = what.to_owned();
        move |source| Error::Kube {
            cluster: self.name.clone(),
            what,
            source,
        }
    }

    /// The tail of every component's log.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|p| format!("--- {} ({}) ---\n{}", self.name, p.name(), p.tail(TAIL)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An error if any component has exited.
    pub fn check_alive(&mut self) -> Result<(), Error> {
        for process in &mut self.processes {
            if let Some(status) = process.exited() {
                return Err(Error::Exited {
                    cluster: self.name.clone(),
                    component: process.name().to_owned(),
                    status,
                    log: process.tail(TAIL),
                });
            }
        }
        Ok(())
    }

    fn not_ready(&self, what: &str, waited: Duration) -> Error {
        Error::NotReady {
            cluster: self.name.clone(),
            what: what.to_owned(),
            waited,
            log: self.logs(),
        }
    }

    async fn wait_for_apiserver(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        let client = self.client().await?;
        loop {
            self.check_alive()?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Build(e.to_string()))?;
            if let Ok(text) = client.request_text(request).await
                && text.trim() == "ok"
            {
                return Ok(());
            }
            if started.elapsed() > APISERVER_READY {
                return Err(self.not_ready("kube-apiserver /readyz", started.elapsed()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates the fake nodes with their capacity, then waits until kwok has made them
    /// Ready and the controller manager has made the `default` ServiceAccount.
    async fn add_nodes_and_wait(&mut self) -> Result<(), Error> {
        let client = self.client().await?;
        let nodes: Api<Node> = Api::all(client.clone());
        for i in 0..self.nodes.count {
            let name = format!("{}-node-{i}", self.name);
            let resources = serde_json::json!({
                "cpu": self.nodes.cpu, "memory": self.nodes.memory, "pods": self.nodes.pods.to_string(),
            });
            let node: Node = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "type": "kwok",
                    },
                    "annotations": { "kwok.x-k8s.io/node": "fake" },
                },
                // kwok's node-initialize stage keeps capacity and allocatable from the object.
                "status": { "capacity": resources, "allocatable": resources },
            }))
            .map_err(|e| Error::Build(format!("node object: {e}")))?;
            nodes
                .create(&PostParams::default(), &node)
                .await
                .map_err(self.kube_error("create node"))?;
        }
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let started = Instant::now();
        loop {
            self.check_alive()?;
            let listed = nodes
                .list(&ListParams::default())
                .await
                .map_err(self.kube_error("list nodes"))?;
            let ready = listed
                .items
                .iter()
                .filter(|node| {
                    node.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|conditions| {
                            conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .count();
            let account = accounts
                .get_opt("default")
                .await
                .map_err(self.kube_error("get ServiceAccount default"))?;
            if ready == self.nodes.count && account.is_some() {
                return Ok(());
            }
            if started.elapsed() > CLUSTER_READY {
                let what = format!(
                    "{ready} of {} nodes Ready, default ServiceAccount {}",
                    self.nodes.count,
                    if account.is_some() {
                        "present"
                    } else {
                        "missing"
                    }
                );
                return Err(self.not_ready(&what, started.elapsed()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A ServiceAccount `name` in `default`, bound to `cluster_role` by a
    /// ClusterRoleBinding of the same name, with a one-day token and a kubeconfig for it.
    pub async fn identity(&self, name: &str, cluster_role: &str) -> Result<Identity, Error> {
        let client = self.client().await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        let account: ServiceAccount = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "default" },
        }))
        .map_err(|e| Error::Build(format!("ServiceAccount object: {e}")))?;
        accounts
            .create(&PostParams::default(), &account)
            .await
            .map_err(self.kube_error("create ServiceAccount"))?;
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": "default" }],
        }))
        .map_err(|e| Error::Build(format!("ClusterRoleBinding object: {e}")))?;
        Api::<ClusterRoleBinding>::all(client.clone())
            .create(&PostParams::default(), &binding)
            .await
            .map_err(self.kube_error("create ClusterRoleBinding"))?;
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(24 * 3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let issued = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(self.kube_error("request a ServiceAccount token"))?;
        let token = issued
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Build("TokenRequest answered without a token".to_owned()))?;
        let kubeconfig = self.dir.join(format!("kubeconfig-{name}"));
        write(
            &kubeconfig,
            &kubeconfig_text(&self.name, &self.server, &self.ca_file, name, &token),
        )?;
        Ok(Identity {
            name: name.to_owned(),
            token,
            kubeconfig,
        })
    }

    /// Kills one component (`kube-apiserver`, `etcd`, `kwok`, ...) with SIGKILL: a crash,
    /// for tests of what Ferry does while a member's API is gone.
    pub fn kill(&mut self, component: &str) -> Result<(), Error> {
        self.component(component)?.kill();
        Ok(())
    }

    /// Starts a killed component again with its arguments (the same port and data); for
    /// the API server, returns once it answers `/readyz` again.
    pub async fn restart(&mut self, component: &str) -> Result<(), Error> {
        self.component(component)?.start_again()?;
        if component == "kube-apiserver" {
            self.wait_for_apiserver().await?;
        }
        Ok(())
    }

    fn component(&mut self, component: &str) -> Result<&mut Supervised, Error> {
        let cluster = self.name.clone();
        self.processes
            .iter_mut()
            .find(|p| p.name() == component)
            .ok_or_else(|| Error::Build(format!("cluster {cluster} has no component {component}")))
    }

    /// Stops every process (newest first) and removes the folder unless it was given.
    pub fn stop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.stop();
        }
        if self.remove_dir && std::env::var_os("FERRY_TESTENV_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.stop();
    }
}

/// A client from a kubeconfig file and its current context, never from the environment.
pub async fn client_from(path: &Path) -> Result<Client, Error> {
    let error = |message: String| Error::Kubeconfig {
        path: path.to_path_buf(),
        message,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| error(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| error(e.to_string()))?;
    Client::try_from(config).map_err(|e| error(e.to_string()))
}
