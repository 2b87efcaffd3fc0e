//! Where Ferry's OpenStack credentials come from: an entry of a `clouds.yaml`, in the format
//! of the `openstack` client, or the `OS_*` environment variables that the client's
//! `openrc` files set. Never from a Cluster file: that names a cloud, and the secrets stay
//! in files and variables that the operator already protects.
//!
//! Both sources are read into the same flat keys (`auth_url`, `username`, `password`,
//! `project_name`, …, `region_name`, `interface`, `auth_type`) and checked together, so that
//! one message lists everything that is missing or wrong.
//!
//! `clouds.yaml` is looked up as the `openstack` client does: the file named by
//! `OS_CLIENT_CONFIG_FILE`, then `./clouds.yaml`, `~/.config/openstack/clouds.yaml` (or under
//! `$XDG_CONFIG_HOME`), `/etc/openstack/clouds.yaml`; the first file that exists is read.
//! With `OS_CLOUD` set, [`CloudConfig::from_env`] reads that cloud and lets the `OS_*`
//! variables that are set override its keys, as the client does (`OS_PASSWORD` with a
//! clouds.yaml that holds no password).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use yaml_rust2::{Yaml, YamlLoader};

use crate::error::{Error, Result};
use crate::secret::Secret;

/// Which endpoint of a service to use, as the catalog names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    Public,
    Internal,
    Admin,
}

impl Interface {
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Public => "public",
            Interface::Internal => "internal",
            Interface::Admin => "admin",
        }
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interface {
    type Err = String;

    /// `public`, `internal`, `admin`, and the v2-era `publicURL`, `internalURL`, `adminURL`.
    fn from_str(text: &str) -> Result<Interface, String> {
        match text.trim_end_matches("URL") {
            "public" => Ok(Interface::Public),
            "internal" => Ok(Interface::Internal),
            "admin" => Ok(Interface::Admin),
            _ => Err(format!(
                "interface {text:?} is not public, internal or admin"
            )),
        }
    }
}

/// A Keystone domain, by id or by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainRef {
    Id(String),
    Name(String),
}

/// A user, by id, or by name within a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// A project, by id, or by name within a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProjectRef {
    Id(String),
    Name { name: String, domain: DomainRef },
}

/// An application credential, by id, or by name together with its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplicationCredentialRef {
    Id(String),
    Name { name: String, user: UserRef },
}

/// How Ferry signs in to Keystone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// A user's password, scoped to a project. Heat and Magnum need this: they create a
    /// Keystone trust per stack or cluster, which Keystone refuses to application-credential
    /// tokens by default.
    Password {
        user: UserRef,
        password: Secret,
        project: ProjectRef,
    },
    /// An application credential; its token is bound to the credential's project (no
    /// scope is sent: Keystone refuses one).
    ApplicationCredential {
        credential: ApplicationCredentialRef,
        secret: Secret,
    },
}

impl Auth {
    /// Keystone's name of the method.
    pub fn method(&self) -> &'static str {
        match self {
            Auth::Password { .. } => "password",
            Auth::ApplicationCredential { .. } => "application_credential",
        }
    }

    /// Who signs in, for messages (no secret).
    pub fn describe(&self) -> String {
        fn user(user: &UserRef) -> String {
            match user {
                UserRef::Id(id) => format!("user id {id}"),
                UserRef::Name { name, domain } => format!("user {name} ({})", domain_text(domain)),
            }
        }
        match self {
            Auth::Password {
                user: u, project, ..
            } => {
                let project = match project {
                    ProjectRef::Id(id) => format!("project id {id}"),
                    ProjectRef::Name { name, domain } => {
                        format!("project {name} ({})", domain_text(domain))
                    }
                };
                format!("{} in {project}", user(u))
            }
            Auth::ApplicationCredential { credential, .. } => match credential {
                ApplicationCredentialRef::Id(id) => format!("application credential {id}"),
                ApplicationCredentialRef::Name { name, user: u } => {
                    format!("application credential {name} of {}", user(u))
                }
            },
        }
    }
}

fn domain_text(domain: &DomainRef) -> String {
    match domain {
        DomainRef::Id(id) => format!("domain id {id}"),
        DomainRef::Name(name) => format!("domain {name}"),
    }
}

/// One cloud: where Keystone is, who Ferry is there, and which endpoints to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudConfig {
    /// Where the settings came from (a clouds.yaml and cloud, or the environment).
    pub source: String,
    /// Keystone's v3 base, e.g. `https://keystone.example.com:5000/v3`: the configured
    /// `auth_url`, with `/v3` added when it names no version.
    pub auth_url: String,
    pub auth: Auth,
    /// Picks endpoints of this region; `None` accepts the one region the catalog has.
    pub region: Option<String>,
    pub interface: Interface,
    /// Service type → URL, used instead of the catalog (`<service>_endpoint_override` keys,
    /// `_` standing for `-`). `%(project_id)s`, `%(tenant_id)s`, `$(project_id)s` and
    /// `$(tenant_id)s` are replaced by the token's project id.
    pub endpoint_overrides: BTreeMap<String, String>,
    /// Extra CA certificates (PEM) trusted besides the system's.
    pub cacert: Option<PathBuf>,
}

/// The variables the adapter reads, by name; `std::env::vars()` in production and a list
/// in tests (the environment is never written).
pub type Vars = BTreeMap<String, String>;

impl CloudConfig {
    /// Cloud `cloud` of the clouds.yaml at `path`, or of the first one found where the
    /// `openstack` client looks (module docs).
    pub fn from_clouds_yaml(cloud: &str, path: Option<&Path>) -> Result<CloudConfig> {
        let vars: Vars = std::env::vars().collect();
        let (text, file) = read_clouds_yaml(path, &vars)?;
        let keys = cloud_keys(&text, cloud, &file)?;
        build(&keys, &format!("{} cloud {cloud}", file.display()))
    }

    /// Cloud `cloud` of a clouds.yaml's text; `source` names it in messages.
    pub fn parse_clouds_yaml(text: &str, cloud: &str, source: &str) -> Result<CloudConfig> {
        let keys = cloud_keys(text, cloud, Path::new(source))?;
        build(&keys, &format!("{source} cloud {cloud}"))
    }

    /// From the process environment: `OS_CLOUD` (with the `OS_*` variables overriding its
    /// keys), or the `OS_*` variables alone.
    pub fn from_env() -> Result<CloudConfig> {
        CloudConfig::from_vars(&std::env::vars().collect())
    }

    /// [`CloudConfig::from_env`] over the variables given.
    pub fn from_vars(vars: &Vars) -> Result<CloudConfig> {
        let mut keys = BTreeMap::new();
        let mut source = "environment (OS_*)".to_owned();
        if let Some(cloud) = vars.get("OS_CLOUD").filter(|c| !c.is_empty()) {
            let (text, file) = read_clouds_yaml(None, vars)?;
            keys = cloud_keys(&text, cloud, &file)?;
            source = format!(
                "{} cloud {cloud} (OS_CLOUD), OS_* overriding",
                file.display()
            );
        }
        for (name, value) in vars {
            let Some(key) = name.strip_prefix("OS_") else {
                continue;
            };
            if matches!(key, "CLOUD" | "CLIENT_CONFIG_FILE") || value.is_empty() {
                continue;
            }
            keys.insert(key.to_lowercase(), value.clone());
        }
        build(&keys, &source)
    }

    /// Where a clouds.yaml is looked for, in order (module docs).
    pub fn clouds_yaml_candidates(vars: &Vars) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let Some(file) = vars.get("OS_CLIENT_CONFIG_FILE").filter(|f| !f.is_empty()) {
            paths.push(PathBuf::from(file));
        }
        paths.push(PathBuf::from("clouds.yaml"));
        let config_home = vars
            .get("XDG_CONFIG_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| vars.get("HOME").map(|home| Path::new(home).join(".config")));
        if let Some(dir) = config_home {
            paths.push(dir.join("openstack/clouds.yaml"));
        }
        paths.push(PathBuf::from("/etc/openstack/clouds.yaml"));
        paths
    }
}

fn config_error(source: &str, message: String) -> Error {
    Error::Config {
        source_name: source.to_owned(),
        message,
    }
}

/// The text and path of the clouds.yaml to use: `explicit`, or the first candidate that
/// exists.
fn read_clouds_yaml(explicit: Option<&Path>, vars: &Vars) -> Result<(String, PathBuf)> {
    let candidates = match explicit {
        Some(path) => vec![path.to_path_buf()],
        None => CloudConfig::clouds_yaml_candidates(vars),
    };
    for path in &candidates {
        match std::fs::read_to_string(path) {
            Ok(text) => return Ok((text, path.clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {}
            Err(e) => {
                return Err(config_error(
                    &path.display().to_string(),
                    format!("cannot read it: {e}"),
                ));
            }
        }
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(config_error(
        "clouds.yaml",
        format!("no clouds.yaml found; looked in {}", looked.join(", ")),
    ))
}

/// A YAML scalar as text: numbers and booleans as written (YAML reads an unquoted
/// `project_id: 1234` or `password: 12345` as a number).
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The flat keys of one cloud: its top-level scalars and those under `auth`.
fn cloud_keys(text: &str, cloud: &str, file: &Path) -> Result<BTreeMap<String, String>> {
    let source = file.display().to_string();
    let documents = YamlLoader::load_from_str(text)
        .map_err(|e| config_error(&source, format!("not YAML: {e}")))?;
    let root = documents.into_iter().next().unwrap_or(Yaml::Null);
    let clouds = &root["clouds"];
    let Some(clouds) = clouds.as_hash() else {
        return Err(config_error(&source, "has no `clouds:` mapping".to_owned()));
    };
    let Some(entry) = clouds
        .get(&Yaml::String(cloud.to_owned()))
        .and_then(Yaml::as_hash)
    else {
        let names: Vec<String> = clouds.keys().filter_map(scalar).collect();
        return Err(config_error(
            &source,
            format!(
                "no cloud {cloud:?}; it has: {}",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        ));
    };
    let mut keys = BTreeMap::new();
    for (key, value) in entry {
        let Some(key) = scalar(key) else { continue };
        if key == "auth" {
            for (auth_key, auth_value) in value.as_hash().into_iter().flatten() {
                if let (Some(k), Some(v)) = (scalar(auth_key), scalar(auth_value)) {
                    keys.insert(k, v);
                }
            }
        } else if let Some(v) = scalar(value) {
            keys.insert(key, v);
        }
    }
    Ok(keys)
}

/// Keystone's v3 base from a configured `auth_url`.
fn identity_base(auth_url: &str) -> Result<String, String> {
    let trimmed = auth_url.trim_end_matches('/');
    if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) {
        return Err(format!("auth_url {auth_url:?} is not an http(s) URL"));
    }
    if trimmed.ends_with("/v3") {
        Ok(trimmed.to_owned())
    } else if trimmed.ends_with("/v2.0") {
        Err(format!(
            "auth_url {auth_url:?} names Keystone v2.0; Ferry speaks v3 only"
        ))
    } else {
        Ok(format!("{trimmed}/v3"))
    }
}

/// Checks the flat keys together and builds the config, or one error listing every
/// problem.
fn build(keys: &BTreeMap<String, String>, source: &str) -> Result<CloudConfig> {
    let get = |key: &str| keys.get(key).filter(|v| !v.is_empty()).cloned();
    let mut missing: Vec<&str> = Vec::new();
    let mut problems: Vec<String> = Vec::new();

    if let Some(version) = get("identity_api_version")
        && version != "3"
        && !version.starts_with("3.")
    {
        problems.push(format!(
            "identity_api_version {version} (Ferry speaks Keystone v3 only)"
        ));
    }
    let auth_url = match get("auth_url") {
        Some(url) => identity_base(&url).map_err(|p| problems.push(p)).ok(),
        None => {
            missing.push("auth_url");
            None
        }
    };

    let application_credential = match get("auth_type").as_deref() {
        None => {
            get("application_credential_secret").is_some()
                || get("application_credential_id").is_some()
        }
        Some("password" | "v3password") => false,
        Some("v3applicationcredential" | "applicationcredential" | "application_credential") => {
            true
        }
        Some(other) => {
            problems.push(format!(
                "auth_type {other} is not supported (password, v3password or \
                 v3applicationcredential)"
            ));
            false
        }
    };

    // Domains as the client defaults them: the specific key, then domain_id/domain_name,
    // then default_domain (an id), then the domain with id `default`.
    let fallback_domain = get("domain_id")
        .map(DomainRef::Id)
        .or_else(|| get("domain_name").map(DomainRef::Name))
        .or_else(|| get("default_domain").map(DomainRef::Id))
        .unwrap_or_else(|| DomainRef::Id("default".to_owned()));
    let domain = |id: &str, name: &str| {
        get(id)
            .map(DomainRef::Id)
            .or_else(|| get(name).map(DomainRef::Name))
            .unwrap_or_else(|| fallback_domain.clone())
    };
    let user = get("user_id").map(UserRef::Id).or_else(|| {
        get("username").map(|name| UserRef::Name {
            name,
            domain: domain("user_domain_id", "user_domain_name"),
        })
    });

    let auth = if application_credential {
        let secret = get("application_credential_secret").map(Secret::new);
        if secret.is_none() {
            missing.push("application_credential_secret");
        }
        let credential = match (
            get("application_credential_id"),
            get("application_credential_name"),
        ) {
            (Some(id), _) => Some(ApplicationCredentialRef::Id(id)),
            (None, Some(name)) => match user.clone() {
                Some(user) => Some(ApplicationCredentialRef::Name { name, user }),
                None => {
                    problems.push(
                        "application_credential_name needs its owner (username or user_id)"
                            .to_owned(),
                    );
                    None
                }
            },
            (None, None) => {
                missing.push("application_credential_id (or application_credential_name)");
                None
            }
        };
        credential
            .zip(secret)
            .map(|(credential, secret)| Auth::ApplicationCredential { credential, secret })
    } else {
        if user.is_none() {
            missing.push("username (or user_id)");
        }
        let password = get("password").map(Secret::new);
        if password.is_none() {
            missing.push("password");
        }
        let project = get("project_id")
            .or_else(|| get("tenant_id"))
            .map(ProjectRef::Id)
            .or_else(|| {
                get("project_name")
                    .or_else(|| get("tenant_name"))
                    .map(|name| ProjectRef::Name {
                        name,
                        domain: domain("project_domain_id", "project_domain_name"),
                    })
            });
        if project.is_none() {
            missing.push("project_name (or project_id): Heat needs a project-scoped token");
        }
        match (user, password, project) {
            (Some(user), Some(password), Some(project)) => Some(Auth::Password {
                user,
                password,
                project,
            }),
            _ => None,
        }
    };

    let interface = match get("interface").or_else(|| get("endpoint_type")) {
        None => Interface::Public,
        Some(text) => text.parse().unwrap_or_else(|p| {
            problems.push(p);
            Interface::Public
        }),
    };
    if let Some(verify) = get("verify")
        && matches!(verify.to_lowercase().as_str(), "false" | "no" | "0")
    {
        problems.push(
            "verify: false is not supported; give the cloud's CA certificate as cacert".to_owned(),
        );
    }
    let endpoint_overrides = keys
        .iter()
        .filter_map(|(key, url)| {
            let service = key.strip_suffix("_endpoint_override")?;
            Some((
                service.replace('_', "-"),
                url.trim_end_matches('/').to_owned(),
            ))
        })
        .collect();

    if !missing.is_empty() {
        problems.insert(0, format!("missing {}", missing.join(", ")));
    }
    match (auth_url, auth) {
        (Some(auth_url), Some(auth)) if problems.is_empty() => Ok(CloudConfig {
            source: source.to_owned(),
            auth_url,
            auth,
            region: get("region_name"),
            interface,
            endpoint_overrides,
            cacert: get("cacert").map(PathBuf::from),
        }),
        _ => Err(config_error(source, problems.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness's clouds.yaml, as `ferry_testenv::OpenStack` writes it.
    const HARNESS: &str = r#"clouds:
  ferry-test:
    auth:
      auth_url: "http://127.0.0.1:35357/v3"
      username: "admin"
      password: "s3cret-pw"
      project_name: "admin"
      user_domain_name: "Default"
      project_domain_name: "Default"
    region_name: "RegionOne"
    interface: public
    identity_api_version: 3
"#;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_harness_clouds_yaml_gives_password_auth_scoped_to_a_project() {
        let config = CloudConfig::parse_clouds_yaml(HARNESS, "ferry-test", "clouds.yaml")
            .expect("a valid cloud");
        assert_eq!(config.auth_url, "http://127.0.0.1:35357/v3");
        assert_eq!(config.region.as_deref(), Some("RegionOne"));
        assert_eq!(config.interface, Interface::Public);
        assert_eq!(
            config.auth,
            Auth::Password {
                user: UserRef::Name {
                    name: "admin".into(),
                    domain: DomainRef::Name("Default".into())
                },
                password: Secret::new("s3cret-pw"),
                project: ProjectRef::Name {
                    name: "admin".into(),
                    domain: DomainRef::Name("Default".into())
                },
            }
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    /// Table: clouds.yaml entries and the auth they give, or the words of their error.
    #[test]
    fn clouds_yaml_entries() {
        let cases: [(&str, Result<Auth, &str>); 9] = [
            (
                "auth: {auth_url: 'https://k.example/', application_credential_id: ac1, application_credential_secret: sec}",
                Ok(Auth::ApplicationCredential {
                    credential: ApplicationCredentialRef::Id("ac1".into()),
                    secret: Secret::new("sec"),
                }),
            ),
            (
                "auth_type: v3applicationcredential\n    auth: {auth_url: 'https://k.example/identity', application_credential_name: ferry, username: svc, user_domain_id: d1, application_credential_secret: sec}",
                Ok(Auth::ApplicationCredential {
                    credential: ApplicationCredentialRef::Name {
                        name: "ferry".into(),
                        user: UserRef::Name {
                            name: "svc".into(),
                            domain: DomainRef::Id("d1".into()),
                        },
                    },
                    secret: Secret::new("sec"),
                }),
            ),
            (
                "auth: {auth_url: 'https://k.example/v3', user_id: u1, password: 12345, project_id: 42}",
                Ok(Auth::Password {
                    user: UserRef::Id("u1".into()),
                    password: Secret::new("12345"),
                    project: ProjectRef::Id("42".into()),
                }),
            ),
            (
                "auth: {auth_url: 'https://k.example/v3', username: u, password: p, project_name: pr, domain_name: corp}",
                Ok(Auth::Password {
                    user: UserRef::Name {
                        name: "u".into(),
                        domain: DomainRef::Name("corp".into()),
                    },
                    password: Secret::new("p"),
                    project: ProjectRef::Name {
                        name: "pr".into(),
                        domain: DomainRef::Name("corp".into()),
                    },
                }),
            ),
            (
                "auth: {auth_url: 'https://k.example/v3', username: u, password: p, tenant_name: pr}",
                Ok(Auth::Password {
                    user: UserRef::Name {
                        name: "u".into(),
                        domain: DomainRef::Id("default".into()),
                    },
                    password: Secret::new("p"),
                    project: ProjectRef::Name {
                        name: "pr".into(),
                        domain: DomainRef::Id("default".into()),
                    },
                }),
            ),
            (
                "auth: {auth_url: 'https://k.example/v3', username: u}",
                Err("missing password, project_name (or project_id)"),
            ),
            (
                "auth_type: v3oidcpassword\n    auth: {auth_url: 'https://k.example/v3', username: u, password: p, project_id: x}",
                Err("auth_type v3oidcpassword is not supported"),
            ),
            (
                "auth: {auth_url: 'https://k.example/v2.0', application_credential_name: n, application_credential_secret: s}",
                Err(
                    "Keystone v2.0; Ferry speaks v3 only; application_credential_name needs its owner",
                ),
            ),
            (
                "verify: false\n    interface: sideways\n    auth: {auth_url: 'https://k.example', application_credential_id: i, application_credential_secret: s}",
                Err(
                    "interface \"sideways\" is not public, internal or admin; verify: false is not supported",
                ),
            ),
        ];
        for (entry, expected) in cases {
            let text = format!("clouds:\n  c:\n    {entry}\n");
            let got = CloudConfig::parse_clouds_yaml(&text, "c", "clouds.yaml");
            match (got, expected) {
                (Ok(config), Ok(auth)) => assert_eq!(config.auth, auth, "{entry}"),
                (Err(error), Err(words)) => {
                    let shown = error.to_string();
                    for word in words.split("; ") {
                        assert!(shown.contains(word), "{entry}: {shown:?} lacks {word:?}");
                    }
                }
                (got, expected) => panic!("{entry}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn auth_urls_get_v3_and_overrides_their_service_types() {
        let text = "clouds:\n  c:\n    orchestration_endpoint_override: http://heat:8004/v1/%(project_id)s/\n    container_infra_endpoint_override: http://magnum:9511/v1\n    interface: internalURL\n    auth: {auth_url: 'http://k:5000/', application_credential_id: i, application_credential_secret: s}\n";
        let config = CloudConfig::parse_clouds_yaml(text, "c", "f").expect("valid");
        assert_eq!(config.auth_url, "http://k:5000/v3");
        assert_eq!(config.interface, Interface::Internal);
        assert_eq!(
            config
                .endpoint_overrides
                .get("orchestration")
                .map(String::as_str),
            Some("http://heat:8004/v1/%(project_id)s")
        );
        assert_eq!(
            config
                .endpoint_overrides
                .get("container-infra")
                .map(String::as_str),
            Some("http://magnum:9511/v1")
        );
    }

    #[test]
    fn a_missing_cloud_names_those_the_file_has() {
        let error = CloudConfig::parse_clouds_yaml(HARNESS, "prod", "/etc/openstack/clouds.yaml")
            .expect_err("no such cloud");
        let shown = error.to_string();
        assert!(
            shown.contains("no cloud \"prod\"; it has: ferry-test"),
            "{shown}"
        );
        assert!(shown.contains("/etc/openstack/clouds.yaml"), "{shown}");
    }

    #[test]
    fn environment_variables_alone() {
        let config = CloudConfig::from_vars(&vars(&[
            ("OS_AUTH_URL", "https://keystone.example:5000/v3"),
            ("OS_USERNAME", "ferry"),
            ("OS_PASSWORD", "pw"),
            ("OS_PROJECT_NAME", "clusters"),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_ID", "default"),
            ("OS_REGION_NAME", "RegionTwo"),
            ("OS_INTERFACE", "internal"),
            ("OS_CACERT", "/etc/ssl/cloud-ca.pem"),
            ("PATH", "/usr/bin"),
        ]))
        .expect("valid");
        assert_eq!(config.source, "environment (OS_*)");
        assert_eq!(config.region.as_deref(), Some("RegionTwo"));
        assert_eq!(config.interface, Interface::Internal);
        assert_eq!(config.cacert, Some(PathBuf::from("/etc/ssl/cloud-ca.pem")));
        assert_eq!(
            config.auth,
            Auth::Password {
                user: UserRef::Name {
                    name: "ferry".into(),
                    domain: DomainRef::Name("Default".into())
                },
                password: Secret::new("pw"),
                project: ProjectRef::Name {
                    name: "clusters".into(),
                    domain: DomainRef::Id("default".into())
                },
            }
        );

        let error =
            CloudConfig::from_vars(&vars(&[("OS_USERNAME", "ferry")])).expect_err("incomplete");
        let shown = error.to_string();
        assert!(
            shown.contains("missing auth_url, password, project_name"),
            "{shown}"
        );
    }

    #[test]
    fn os_cloud_reads_the_clouds_yaml_of_os_client_config_file_and_env_overrides_it() {
        let dir =
            std::env::temp_dir().join(format!("ferry-openstack-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("clouds.yaml");
        let without_password = HARNESS.replace("      password: \"s3cret-pw\"\n", "");
        std::fs::write(&file, without_password).expect("write");
        let path = file.display().to_string();

        let config = CloudConfig::from_vars(&vars(&[
            ("OS_CLOUD", "ferry-test"),
            ("OS_CLIENT_CONFIG_FILE", &path),
            ("OS_PASSWORD", "from-env"),
        ]))
        .expect("valid");
        assert!(
            matches!(&config.auth, Auth::Password { password, .. } if password.expose() == "from-env")
        );
        assert!(config.source.contains(&path), "{}", config.source);

        let error = CloudConfig::from_vars(&vars(&[
            ("OS_CLOUD", "ferry-test"),
            ("OS_CLIENT_CONFIG_FILE", &path),
        ]))
        .expect_err("no password anywhere");
        assert!(error.to_string().contains("missing password"), "{error}");

        let explicit = CloudConfig::from_clouds_yaml("ferry-test", Some(&dir.join("absent.yaml")))
            .expect_err("an explicit path must exist");
        assert!(explicit.to_string().contains("absent.yaml"), "{explicit}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn clouds_yaml_is_looked_for_where_the_openstack_client_looks() {
        let paths = CloudConfig::clouds_yaml_candidates(&vars(&[
            ("OS_CLIENT_CONFIG_FILE", "/srv/c.yaml"),
            ("HOME", "/home/op"),
        ]));
        let expected = [
            "/srv/c.yaml",
            "clouds.yaml",
            "/home/op/.config/openstack/clouds.yaml",
            "/etc/openstack/clouds.yaml",
        ];
        assert_eq!(paths, expected.map(PathBuf::from));
        let paths = CloudConfig::clouds_yaml_candidates(&vars(&[("XDG_CONFIG_HOME", "/x")]));
        assert_eq!(paths[1], PathBuf::from("/x/openstack/clouds.yaml"));
    }
}
