//! A real Keystone and Heat from Debian's packages, on loopback, with sqlite in WAL mode:
//! Keystone under uwsgi (processes, not threads), Heat as one `heat-all` process with the
//! in-process `fake://` transport, Heat registered in Keystone's catalog. The recipe and
//! the pitfalls behind each setting are in `docs/testing.md`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::Error;
use crate::pki::random_token;
use crate::ports::free_port;
use crate::process::{Supervised, tail};

const READY: Duration = Duration::from_secs(90);
const TAIL: usize = 25;
/// The region of every catalog entry.
pub const REGION: &str = "RegionOne";
/// The cloud's name in the `clouds.yaml` the harness writes.
pub const CLOUD: &str = "ferry-test";

/// How a client signs in: the admin user of the `admin` project, by password. (Heat needs
/// password auth: Keystone refuses trusts to application-credential tokens by default.)
#[derive(Clone, Debug)]
pub struct Credentials {
    pub auth_url: String,
    pub username: String,
    pub password: String,
    pub project_name: String,
    pub user_domain_name: String,
    pub project_domain_name: String,
    pub region: String,
}

/// Running Keystone and Heat. Dropping it stops both.
pub struct OpenStack {
    dir: PathBuf,
    remove_dir: bool,
    credentials: Credentials,
    heat_endpoint: String,
    clouds_yaml: PathBuf,
    /// In start order; stopped in reverse.
    processes: Vec<Supervised>,
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(io(format!("write {}", path.display())))
}

/// The path of a packaged command, or a clear error naming the install script.
fn command(name: &str) -> Result<PathBuf, Error> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    found.ok_or_else(|| Error::Missing {
        what: name.to_owned(),
        hint: "install Keystone and Heat with scripts/install-openstack".to_owned(),
    })
}

/// A file a package installed, found through dpkg (paths differ between releases).
fn packaged_file(package: &str, suffix: &str) -> Result<PathBuf, Error> {
    let output = Command::new("dpkg")
        .args(["-L", package])
        .output()
        .map_err(io(format!("dpkg -L {package}")))?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find(|line| line.ends_with(suffix))
        .map(PathBuf::from)
        .ok_or_else(|| Error::Missing {
            what: format!("{suffix} of package {package}"),
            hint: "install Keystone and Heat with scripts/install-openstack".to_owned(),
        })
}

/// Runs a set-up command to completion; its output goes into `log` and into the error.
fn run(program: &Path, args: &[&str], log: &Path) -> Result<(), Error> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(io(format!("run {}", program.display())))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::write(log, &text);
    if output.status.success() {
        Ok(())
    } else {
        let lines: Vec<&str> = text.lines().collect();
        Err(Error::Setup {
            command: format!("{} {}", program.display(), args.join(" ")),
            status: output.status.to_string(),
            output: lines[lines.len().saturating_sub(TAIL)..].join("\n"),
        })
    }
}

/// Switches a sqlite database to write-ahead logging: with the default rollback journal,
/// oslo.db's two connections per request deadlock for 5 s and then fail with "database
/// is locked". The setting persists in the file.
fn wal(database: &Path, log: &Path) -> Result<(), Error> {
    let path = database.display().to_string();
    run(
        &command("sqlite3")?,
        &[&path, "PRAGMA journal_mode=WAL;"],
        log,
    )
}

/// Rebuilds Heat's `resource_properties_data` table with `AUTOINCREMENT`, so that sqlite
/// never hands out the id of a deleted row again. Heat deletes and rewrites these rows by
/// ids it holds in memory; on MySQL (production) a stale id matches nothing, but sqlite
/// reuses the highest id after a delete, and a stale id then deletes or overwrites another
/// resource's properties. Seen as about one run in three of a stack update ending with an
/// output that failed for good ("ResourcePropertiesData with id 29 not found").
fn never_reuse_row_ids(database: &Path, log: &Path) -> Result<(), Error> {
    let path = database.display().to_string();
    let sql = "BEGIN;
        CREATE TABLE rpd_autoincrement (id INTEGER PRIMARY KEY AUTOINCREMENT, data TEXT,
            encrypted BOOLEAN, created_at DATETIME, updated_at DATETIME);
        INSERT INTO rpd_autoincrement SELECT id, data, encrypted, created_at, updated_at
            FROM resource_properties_data;
        DROP TABLE resource_properties_data;
        ALTER TABLE rpd_autoincrement RENAME TO resource_properties_data;
        COMMIT;";
    run(&command("sqlite3")?, &[&path, sql], log)
}

fn http_error(what: &str) -> impl FnOnce(reqwest::Error) -> Error + '_ {
    move |e| Error::Http {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// Keystone's admin API, for registering Heat.
struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    async fn sign_in(http: reqwest::Client, credentials: &Credentials) -> Result<Admin, Error> {
        let response = http
            .post(format!("{}/auth/tokens", credentials.auth_url))
            .json(&password_auth(credentials))
            .send()
            .await
            .map_err(http_error("sign in to Keystone"))?;
        let status = response.status();
        let token = response
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match token {
            Some(token) if status.is_success() => Ok(Admin {
                http,
                base: credentials.auth_url.clone(),
                token,
            }),
            _ => Err(Error::Http {
                what: "sign in to Keystone".to_owned(),
                message: format!("{status}: {}", response.text().await.unwrap_or_default()),
            }),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let what = format!("{method} {path}");
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("X-Auth-Token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(http_error(&what))?;
        let status = response.status();
        let text = response.text().await.map_err(http_error(&what))?;
        if !status.is_success() {
            return Err(Error::Http {
                what,
                message: format!("{status}: {text}"),
            });
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The id of the object a create call returned under `key`.
    async fn create(&self, path: &str, key: &str, body: Value) -> Result<String, Error> {
        let created = self.call(reqwest::Method::POST, path, Some(body)).await?;
        created[key]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Http {
                what: format!("POST {path}"),
                message: format!("no {key}.id in {created}"),
            })
    }

    async fn find(&self, path: &str, key: &str) -> Result<String, Error> {
        let listed = self.call(reqwest::Method::GET, path, None).await?;
        listed[key][0]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Http {
                what: format!("GET {path}"),
                message: format!("nothing in {listed}"),
            })
    }
}

/// The body of `POST /v3/auth/tokens` for a password scoped to a project.
pub fn password_auth(credentials: &Credentials) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": credentials.username,
            "domain": {"name": credentials.user_domain_name},
            "password": credentials.password,
        }}},
        "scope": {"project": {
            "name": credentials.project_name,
            "domain": {"name": credentials.project_domain_name},
        }},
    }})
}

impl OpenStack {
    /// Starts Keystone and Heat in `dir` (emptied first, kept after), or in a fresh
    /// folder under the system temp folder (removed on drop).
    pub async fn start(dir: Option<PathBuf>) -> Result<OpenStack, Error> {
        let (dir, remove_dir) = match dir {
            Some(dir) => (dir, false),
            None => {
                let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
                let name = format!("ferry-openstack-{}-{serial}", std::process::id());
                (std::env::temp_dir().join(name), true)
            }
        };
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["keystone", "heat/environment.d", "heat/plugins"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("create {}", dir.join(sub).display())))?;
        }
        let keystone_port = free_port()?;
        let heat_port = free_port()?;
        let credentials = Credentials {
            auth_url: format!("http://127.0.0.1:{keystone_port}/v3"),
            username: "admin".to_owned(),
            password: random_token()?,
            project_name: "admin".to_owned(),
            user_domain_name: "Default".to_owned(),
            project_domain_name: "Default".to_owned(),
            region: REGION.to_owned(),
        };
        let mut openstack = OpenStack {
            clouds_yaml: dir.join("clouds.yaml"),
            dir,
            remove_dir,
            heat_endpoint: format!("http://127.0.0.1:{heat_port}/v1/%(tenant_id)s"),
            credentials,
            processes: Vec::new(),
        };
        openstack.start_keystone(keystone_port)?;
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(http_error("HTTP client"))?;
        openstack
            .wait_until_answering(
                "keystone",
                &format!("http://127.0.0.1:{keystone_port}/v3"),
                &http,
            )
            .await?;
        let heat_password = random_token()?;
        openstack.register_heat(&http, &heat_password).await?;
        openstack.start_heat(keystone_port, heat_port, &heat_password)?;
        openstack
            .wait_until_answering("heat", &format!("http://127.0.0.1:{heat_port}/"), &http)
            .await?;
        openstack.write_clouds_yaml()?;
        Ok(openstack)
    }

    fn start_keystone(&mut self, port: u16) -> Result<(), Error> {
        let dir = self.dir.join("keystone");
        let d = |name: &str| dir.join(name).display().to_string();
        let conf = dir.join("keystone.conf");
        let policy = packaged_file("keystone", "/policy.d")?;
        write(
            &conf,
            &format!(
                "[DEFAULT]\ndebug = false\nlog_file = {log}\n\
                 [database]\nconnection = sqlite:///{db}\n\
                 [token]\nprovider = fernet\nexpiration = 3600\n\
                 [fernet_tokens]\nkey_repository = {keys}\n\
                 [fernet_receipts]\nkey_repository = {keys}\n\
                 [credential]\nkey_repository = {credential_keys}\n\
                 [oslo_policy]\npolicy_dirs = {policy}\n",
                log = d("keystone.log"),
                db = d("keystone.db"),
                keys = d("fernet-keys"),
                credential_keys = d("credential-keys"),
                policy = policy.display(),
            ),
        )?;
        let manage = command("keystone-manage")?;
        let conf_arg = conf.display().to_string();
        let user = run_text("id", &["-un"])?;
        let group = run_text("id", &["-gn"])?;
        let owner = [
            "--keystone-user",
            user.as_str(),
            "--keystone-group",
            group.as_str(),
        ];
        let url = format!("http://127.0.0.1:{port}/v3/");
        let setup_log = dir.join("setup.log");
        run(
            &manage,
            &["--config-file", &conf_arg, "db_sync"],
            &setup_log,
        )?;
        let mut fernet = vec!["--config-file", conf_arg.as_str(), "fernet_setup"];
        fernet.extend(owner);
        run(&manage, &fernet, &setup_log)?;
        let mut credential = vec!["--config-file", conf_arg.as_str(), "credential_setup"];
        credential.extend(owner);
        run(&manage, &credential, &setup_log)?;
        run(
            &manage,
            &[
                "--config-file",
                &conf_arg,
                "bootstrap",
                "--bootstrap-password",
                &self.credentials.password,
                "--bootstrap-username",
                "admin",
                "--bootstrap-project-name",
                "admin",
                "--bootstrap-role-name",
                "admin",
                "--bootstrap-service-name",
                "keystone",
                "--bootstrap-region-id",
                REGION,
                "--bootstrap-admin-url",
                &url,
                "--bootstrap-internal-url",
                &url,
                "--bootstrap-public-url",
                &url,
            ],
            &setup_log,
        )?;
        wal(&dir.join("keystone.db"), &setup_log)?;
        let wsgi = command("keystone-wsgi-public")?;
        let args = vec![
            "--http-socket".to_owned(),
            format!("127.0.0.1:{port}"),
            "--wsgi-file".to_owned(),
            wsgi.display().to_string(),
            "--master".to_owned(),
            // Processes, not threads: sqlite objects cannot cross threads.
            "--processes".to_owned(),
            "4".to_owned(),
            "--threads".to_owned(),
            "1".to_owned(),
            "--die-on-term".to_owned(),
            "--buffer-size".to_owned(),
            "65535".to_owned(),
            // uwsgi's http-socket closes idle connections that clients then reuse and
            // see reset: telling clients to close keeps pooled clients honest.
            "--add-header".to_owned(),
            "Connection: close".to_owned(),
            "--env".to_owned(),
            format!("OS_KEYSTONE_CONFIG_FILES={}", conf.display()),
        ];
        let process = Supervised::start_stopped_by(
            Signal::SIGINT,
            "keystone",
            &command("uwsgi_python3")?,
            &args,
            &[],
            &dir,
            dir.join("uwsgi.log"),
        )?;
        self.processes.push(process);
        Ok(())
    }

    /// The `heat` service user, the orchestration service and its endpoints, and the
    /// roles Heat expects.
    async fn register_heat(
        &self,
        http: &reqwest::Client,
        heat_password: &str,
    ) -> Result<(), Error> {
        let admin = Admin::sign_in(http.clone(), &self.credentials).await?;
        let domain = "default";
        let service_project = admin
            .create(
                "/projects",
                "project",
                json!({"project": {"name": "service", "domain_id": domain}}),
            )
            .await?;
        let heat_user = admin
            .create(
                "/users",
                "user",
                json!({"user": {"name": "heat", "domain_id": domain, "password": heat_password}}),
            )
            .await?;
        let admin_role = admin.find("/roles?name=admin", "roles").await?;
        admin
            .call(
                reqwest::Method::PUT,
                &format!("/projects/{service_project}/users/{heat_user}/roles/{admin_role}"),
                None,
            )
            .await?;
        let service = admin
            .create(
                "/services",
                "service",
                json!({"service": {"name": "heat", "type": "orchestration", "description": "Orchestration"}}),
            )
            .await?;
        for interface in ["public", "internal", "admin"] {
            admin
                .create(
                    "/endpoints",
                    "endpoint",
                    json!({"endpoint": {
                        "service_id": service, "interface": interface,
                        "url": self.heat_endpoint, "region_id": REGION,
                    }}),
                )
                .await?;
        }
        for role in ["heat_stack_owner", "heat_stack_user"] {
            admin
                .create("/roles", "role", json!({"role": {"name": role}}))
                .await?;
        }
        Ok(())
    }

    fn start_heat(
        &mut self,
        keystone_port: u16,
        heat_port: u16,
        heat_password: &str,
    ) -> Result<(), Error> {
        let dir = self.dir.join("heat");
        let d = |name: &str| dir.join(name).display().to_string();
        let keystone = format!("http://127.0.0.1:{keystone_port}");
        let paste = packaged_file("heat-common", "api-paste.ini")?;
        let environment = packaged_file("heat-common", "environment.d/default.yaml")?;
        std::fs::copy(&environment, dir.join("environment.d/default.yaml"))
            .map_err(io(format!("copy {}", environment.display())))?;
        let conf = dir.join("heat.conf");
        write(
            &conf,
            &format!(
                "[DEFAULT]\ndebug = false\nlog_file = {log}\n\
                 # API and engine share one process (heat-all), so no message broker is needed.\n\
                 transport_url = fake://\nnum_engine_workers = 1\nhost = heat-local\n\
                 region_name_for_services = {REGION}\ndeferred_auth_method = trusts\n\
                 environment_dir = {environments}\nplugin_dirs = {plugins}\nconvergence_engine = true\n\
                 [heat_all]\nenabled_services = engine,api\n\
                 # One worker: forked workers would not share the in-process fake transport.\n\
                 [heat_api]\nbind_host = 127.0.0.1\nbind_port = {heat_port}\nworkers = 1\n\
                 [paste_deploy]\napi_paste_config = {paste}\n\
                 [database]\nconnection = sqlite:///{db}\n\
                 [keystone_authtoken]\nwww_authenticate_uri = {keystone}\nauth_url = {keystone}\n\
                 auth_type = password\nusername = heat\npassword = {heat_password}\n\
                 project_name = service\nuser_domain_name = Default\nproject_domain_name = Default\n\
                 [trustee]\nauth_type = password\nauth_url = {keystone}\nusername = heat\n\
                 password = {heat_password}\nuser_domain_name = Default\n\
                 [clients_keystone]\nauth_uri = {keystone}\n\
                 [ec2authtoken]\nauth_uri = {keystone}/v3\n\
                 [oslo_messaging_notifications]\ndriver = noop\n",
                log = d("heat.log"),
                environments = d("environment.d"),
                plugins = d("plugins"),
                paste = paste.display(),
                db = d("heat.db"),
            ),
        )?;
        let conf_arg = conf.display().to_string();
        let setup_log = dir.join("setup.log");
        run(
            &command("heat-manage")?,
            &["--config-file", &conf_arg, "db_sync"],
            &setup_log,
        )?;
        wal(&dir.join("heat.db"), &setup_log)?;
        never_reuse_row_ids(&dir.join("heat.db"), &setup_log)?;
        let process = Supervised::start_stopped_by(
            Signal::SIGINT,
            "heat-all",
            &command("heat-all")?,
            &["--config-file".to_owned(), conf_arg],
            &[],
            &dir,
            dir.join("heat-all.log"),
        )?;
        self.processes.push(process);
        Ok(())
    }

    async fn wait_until_answering(
        &mut self,
        what: &str,
        url: &str,
        http: &reqwest::Client,
    ) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            self.check_alive()?;
            if let Ok(response) = http.get(url).send().await
                && (response.status().is_success()
                    || response.status().is_redirection()
                    || response.status() == 300)
            {
                return Ok(());
            }
            if started.elapsed() > READY {
                return Err(Error::NotReady {
                    cluster: "openstack".to_owned(),
                    what: format!("{what} at {url}"),
                    waited: started.elapsed(),
                    log: self.logs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn write_clouds_yaml(&self) -> Result<(), Error> {
        let c = &self.credentials;
        // Values are JSON strings, which YAML reads as the same strings.
        let q = |s: &str| Value::String(s.to_owned()).to_string();
        write(
            &self.clouds_yaml,
            &format!(
                "clouds:\n  {CLOUD}:\n    auth:\n      auth_url: {}\n      username: {}\n      password: {}\n      project_name: {}\n      user_domain_name: {}\n      project_domain_name: {}\n    region_name: {}\n    interface: public\n    identity_api_version: 3\n",
                q(&c.auth_url),
                q(&c.username),
                q(&c.password),
                q(&c.project_name),
                q(&c.user_domain_name),
                q(&c.project_domain_name),
                q(&c.region),
            ),
        )
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A `clouds.yaml` with one cloud, [`CLOUD`], for the `openstack` client and for Ferry.
    pub fn clouds_yaml(&self) -> &Path {
        &self.clouds_yaml
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pids(&self) -> Vec<u32> {
        self.processes.iter().filter_map(Supervised::pid).collect()
    }

    /// Each service with its PID (`None` once stopped).
    pub fn components(&self) -> Vec<(String, Option<u32>)> {
        self.processes
            .iter()
            .map(|p| (p.name().to_owned(), p.pid()))
            .collect()
    }

    /// The tail of every service's log (the services' own log files included).
    pub fn logs(&self) -> String {
        let mut out: Vec<String> = self
            .processes
            .iter()
            .map(|p| format!("--- openstack ({}) ---\n{}", p.name(), p.tail(TAIL)))
            .collect();
        for file in ["keystone/keystone.log", "heat/heat.log"] {
            let path = self.dir.join(file);
            if path.exists() {
                out.push(format!("--- openstack ({file}) ---\n{}", tail(&path, TAIL)));
            }
        }
        out.join("\n")
    }

    pub fn check_alive(&mut self) -> Result<(), Error> {
        for process in &mut self.processes {
            if let Some(status) = process.exited() {
                return Err(Error::Exited {
                    cluster: "openstack".to_owned(),
                    component: process.name().to_owned(),
                    status,
                    log: process.tail(TAIL),
                });
            }
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        while let Some(mut process) = self.processes.pop() {
            process.stop();
        }
        if self.remove_dir && std::env::var_os("FERRY_TESTENV_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for OpenStack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.stop();
    }
}

fn run_text(program: &str, args: &[&str]) -> Result<String, Error> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(io(format!("run {program}")))?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
