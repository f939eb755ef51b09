//! The lab's PKI: a CA, the API server's serving certificate, client
//! certificates for the admin and the control-plane components, and the
//! service-account signing key pair. Generated fresh by every `up`.

use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A client identity: the certificate's CN is the user, O the group.
#[derive(Clone, Copy, Debug)]
pub struct ClientIdentity {
    /// File stem under `pki/` (`admin`, `kube-controller-manager`, …).
    pub file: &'static str,
    /// Common name: the Kubernetes user name.
    pub user: &'static str,
    /// Organisation: the Kubernetes group, if any.
    pub group: Option<&'static str>,
}

/// The clients the lab issues certificates to.
pub const CLIENTS: [ClientIdentity; 4] = [
    ClientIdentity {
        file: "admin",
        user: "ferrolb-lab-admin",
        group: Some("system:masters"),
    },
    ClientIdentity {
        file: "kube-controller-manager",
        user: "system:kube-controller-manager",
        group: None,
    },
    ClientIdentity {
        file: "kube-scheduler",
        user: "system:kube-scheduler",
        group: None,
    },
    ClientIdentity {
        file: "kube-proxy",
        user: "system:kube-proxy",
        group: None,
    },
];

/// Where the PKI files are.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// The PKI under `dir` (written or not).
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The CA certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// The API server's serving certificate.
    pub fn apiserver_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    /// The API server's serving key.
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    /// A client's certificate.
    pub fn client_cert(&self, c: &ClientIdentity) -> PathBuf {
        self.dir.join(format!("{}.crt", c.file))
    }
    /// A client's key.
    pub fn client_key(&self, c: &ClientIdentity) -> PathBuf {
        self.dir.join(format!("{}.key", c.file))
    }
    /// The service-account signing key (private).
    pub fn sa_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    /// The service-account verification key (public).
    pub fn sa_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }

    /// Generates everything. `server_ips` and `server_names` go into the API
    /// server's certificate as SANs.
    pub fn generate(&self, server_ips: &[IpAddr], server_names: &[&str]) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;

        let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = name("ferrolb-lab-ca", None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).context("cannot sign the CA")?;
        write(&self.ca_cert(), &ca_cert.pem())?;
        let issuer = Issuer::new(ca, ca_key);

        let mut server = CertificateParams::default();
        server.distinguished_name = name("kube-apiserver", None);
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.subject_alt_names = server_ips
            .iter()
            .map(|ip| SanType::IpAddress(*ip))
            .collect();
        for n in server_names {
            server.subject_alt_names.push(SanType::DnsName(
                (*n).try_into()
                    .with_context(|| format!("bad DNS name {n}"))?,
            ));
        }
        self.issue(
            &server,
            &issuer,
            &self.apiserver_cert(),
            &self.apiserver_key(),
        )?;

        for client in &CLIENTS {
            let mut params = CertificateParams::default();
            params.distinguished_name = name(client.user, client.group);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            self.issue(
                &params,
                &issuer,
                &self.client_cert(client),
                &self.client_key(client),
            )?;
        }

        let sa = KeyPair::generate().context("cannot generate the service-account key")?;
        write_secret(&self.sa_key(), &sa.serialize_pem())?;
        write(&self.sa_pub(), &sa.public_key_pem())?;
        Ok(())
    }

    fn issue(
        &self,
        params: &CertificateParams,
        issuer: &Issuer<'_, KeyPair>,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<()> {
        let key = KeyPair::generate().context("cannot generate a key")?;
        let cert = params
            .signed_by(&key, issuer)
            .with_context(|| format!("cannot sign {}", cert_path.display()))?;
        write(cert_path, &cert.pem())?;
        write_secret(key_path, &key.serialize_pem())
    }
}

fn name(common_name: &str, organisation: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organisation {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// Writes a private key, readable by its owner only.
fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))
}
