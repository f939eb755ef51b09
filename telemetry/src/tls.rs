//! The endpoint's TLS server configuration: a mounted certificate, or a
//! self-signed one made at start-up (as controller-runtime's secure metrics
//! serving does). rustls with the ring provider, as kube's client uses.
//!
//! A mounted certificate is read again when its files change, so a renewed
//! cert-manager Secret is served without a restart (like controller-runtime's
//! certwatcher); a renewal that cannot be read keeps the previous certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::endpoint::Certificate;
use crate::http::HttpError;

/// The TLS configuration serving `certificate`; HTTP/1.1 only.
pub(crate) fn server_config(certificate: &Certificate) -> Result<Arc<ServerConfig>, HttpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(HttpError::Tls)?
        .with_no_client_auth();
    let mut config = match certificate {
        Certificate::SelfSigned(names) => {
            let (chain, key) = self_signed(names)?;
            builder
                .with_single_cert(chain, key)
                .map_err(HttpError::Tls)?
        }
        Certificate::Files { cert, key } => builder.with_cert_resolver(Arc::new(
            MountedCertificate::load(cert.clone(), key.clone(), provider)?,
        )),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn self_signed(
    names: &[String],
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), HttpError> {
    let certified =
        rcgen::generate_simple_self_signed(names.to_vec()).map_err(HttpError::SelfSigned)?;
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    Ok((vec![certified.cert.der().clone()], key.into()))
}

/// A certificate and key from PEM files, read again when their modification
/// times change (a Secret volume swaps both files at once).
#[derive(Debug)]
struct MountedCertificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    served: Mutex<Served>,
}

#[derive(Debug)]
struct Served {
    /// The files' modification times when last read.
    stamp: Stamp,
    key: Arc<CertifiedKey>,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

impl MountedCertificate {
    fn load(cert: PathBuf, key: PathBuf, provider: Arc<CryptoProvider>) -> Result<Self, HttpError> {
        let stamp = stamp(&cert, &key);
        let certified = read(&cert, &key, &provider)?;
        Ok(Self {
            served: Mutex::new(Served {
                stamp,
                key: Arc::new(certified),
            }),
            cert,
            key,
            provider,
        })
    }

    /// The certificate to serve now, read again if the files changed.
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        let now = stamp(&self.cert, &self.key);
        let mut served = self.served.lock().ok()?;
        if now != served.stamp {
            // Whatever the outcome, not again until the files change again.
            served.stamp = now;
            match read(&self.cert, &self.key, &self.provider) {
                Ok(certified) => {
                    served.key = Arc::new(certified);
                    tracing::info!(cert = %self.cert.display(), "metrics endpoint: serving the renewed certificate");
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: keeping the previous certificate");
                }
            }
        }
        Some(served.key.clone())
    }
}

impl ResolvesServerCert for MountedCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (modified(cert), modified(key))
}

/// The certificate chain and matching key in two PEM files.
fn read(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, HttpError> {
    let bad = |path: &Path, reason: String| HttpError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no CERTIFICATE in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        bad(
            key,
            format!(
                "not a usable key for the certificate in {}: {e}",
                cert.display()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_serves() {
        let names = vec!["198.18.0.10".to_owned()];
        let config = server_config(&Certificate::SelfSigned(names)).unwrap();
        assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
    }

    #[test]
    fn mounted_pem_files_are_read_and_bad_ones_named() {
        let dir = std::env::temp_dir().join(format!("ferrolb-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let files = Certificate::Files {
            cert: cert.clone(),
            key: key.clone(),
        };
        assert!(server_config(&files).is_ok());

        // A key where the certificate should be.
        let swapped = Certificate::Files {
            cert: key.clone(),
            key: key.clone(),
        };
        let error = server_config(&swapped).unwrap_err().to_string();
        assert!(
            error.contains("tls.key") && error.contains("no CERTIFICATE"),
            "{error}"
        );
        let missing = Certificate::Files {
            cert: dir.join("absent.crt"),
            key,
        };
        let error = server_config(&missing).unwrap_err().to_string();
        assert!(error.contains("absent.crt"), "{error}");
        // A key that belongs to another certificate.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other_key = dir.join("other.key");
        std::fs::write(&other_key, other.signing_key.serialize_pem()).unwrap();
        let mismatched = Certificate::Files {
            cert: cert.clone(),
            key: other_key,
        };
        let error = server_config(&mismatched).unwrap_err().to_string();
        assert!(
            error.contains("not a usable key for the certificate"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_renewed_certificate_is_served_and_a_broken_renewal_is_not() {
        let dir = std::env::temp_dir().join(format!("ferrolb-tls-renew-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        // Each write gets its own modification time, as a Secret volume's swap does.
        let write = |path: &Path, text: String, second: u64| {
            std::fs::write(path, text).unwrap();
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + second);
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        let first = rcgen::generate_simple_self_signed(vec!["first.example".to_owned()]).unwrap();
        write(&cert, first.cert.pem(), 1);
        write(&key, first.signing_key.serialize_pem(), 1);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mounted = MountedCertificate::load(cert.clone(), key.clone(), provider).unwrap();
        let served = |m: &MountedCertificate| m.current().unwrap().cert[0].clone();
        assert_eq!(&served(&mounted), first.cert.der());

        let renewed =
            rcgen::generate_simple_self_signed(vec!["renewed.example".to_owned()]).unwrap();
        write(&cert, renewed.cert.pem(), 2);
        write(&key, renewed.signing_key.serialize_pem(), 2);
        assert_eq!(&served(&mounted), renewed.cert.der());

        write(&cert, "not a certificate".to_owned(), 3);
        assert_eq!(&served(&mounted), renewed.cert.der());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
