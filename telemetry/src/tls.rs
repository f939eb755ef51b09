//! The endpoint's TLS server configuration: a mounted certificate, or a
//! self-signed one made at start-up (as controller-runtime's secure metrics
//! serving does). rustls with the ring provider, as kube's client uses.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::endpoint::Certificate;
use crate::http::HttpError;

/// The TLS configuration serving `certificate`; HTTP/1.1 only.
pub(crate) fn server_config(certificate: &Certificate) -> Result<Arc<ServerConfig>, HttpError> {
    let (chain, key) = match certificate {
        Certificate::SelfSigned(names) => self_signed(names)?,
        Certificate::Files { cert, key } => {
            let bad = |path: &std::path::Path, reason: String| HttpError::Certificate {
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
            (chain, private)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(HttpError::Tls)?;
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
