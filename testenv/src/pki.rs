//! Certificates and secrets of one test cluster: a CA, the apiserver's serving certificate
//! (for 127.0.0.1 and the in-cluster names), the service-account signing key, and random
//! bearer tokens. All generated fresh per cluster; nothing is shared between clusters.

use std::io::Read;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

/// PEM files of a cluster.
pub struct Pki {
    pub ca_cert: String,
    /// The CA's key: tests sign client certificates with it (as Magnum does for its
    /// clusters), which the apiserver accepts through `--client-ca-file`.
    pub ca_key: String,
    pub serving_cert: String,
    pub serving_key: String,
    pub service_account_key: String,
    pub service_account_public: String,
}

fn pki_error(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |source| Error::Pki {
        what: what.to_owned(),
        message: source.to_string(),
    }
}

impl Pki {
    pub fn generate(cluster: &str) -> Result<Pki, Error> {
        let ca_key = KeyPair::generate().map_err(pki_error("CA key"))?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(pki_error("CA"))?;
        ca.distinguished_name
            .push(DnType::CommonName, format!("ferry-testenv {cluster} CA"));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).map_err(pki_error("CA"))?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);

        let serving_key = KeyPair::generate().map_err(pki_error("serving key"))?;
        // rustls (under kube-rs) checks names strictly: 127.0.0.1 is what clients dial.
        let names: Vec<String> = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.0.0.1",
        ]
        .map(str::to_owned)
        .into();
        let mut serving = CertificateParams::new(names).map_err(pki_error("serving"))?;
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let serving_cert = serving
            .signed_by(&serving_key, &issuer)
            .map_err(pki_error("serving certificate"))?;

        let service_account = KeyPair::generate().map_err(pki_error("service-account key"))?;
        Ok(Pki {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key_pem,
            serving_cert: serving_cert.pem(),
            serving_key: serving_key.serialize_pem(),
            service_account_key: service_account.serialize_pem(),
            service_account_public: service_account.public_key_pem(),
        })
    }
}

/// A random bearer token: 32 hex digits from the kernel's generator.
pub fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::Io {
            what: "read /dev/urandom".to_owned(),
            source,
        })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
