//! Where the metrics endpoint listens and how it is protected: the `--metrics-*`
//! and `--pod-ip` flags both binaries share, checked once at start-up into an
//! [`EndpointConfig`].
//!
//! By default the endpoint listens on the pod's own address only (for the
//! speaker, in the host network, that is the node's address), serves HTTPS and
//! answers `/metrics` only to callers the API server authenticates and allows
//! to `get` the non-resource path `/metrics`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;

use crate::http::HttpError;

/// The metrics endpoint's flags. Each binary adds its own `--metrics-port`.
#[derive(Debug, Clone, Args)]
pub struct MetricsFlags {
    /// Address serving /metrics, /healthz and /readyz: an IP (with --metrics-port)
    /// or IP:PORT, IPv6 in brackets with a port ([2001:db8::1]:7472). 0.0.0.0 or ::
    /// serves on every address. Default: --pod-ip.
    #[arg(long, env = "FERROLB_METRICS_BIND_ADDRESS")]
    pub metrics_bind_address: Option<BindAddress>,

    /// This pod's primary IP (the chart passes status.podIP; for a hostNetwork pod
    /// that is the node's address). The metrics endpoint listens on it unless
    /// --metrics-bind-address says otherwise. On a dual-stack cluster it is the
    /// address of the cluster's primary family.
    #[arg(long, env = "FERROLB_POD_IP")]
    pub pod_ip: Option<IpAddr>,

    /// Answer /metrics only to callers with a bearer token that the API server
    /// authenticates (TokenReview) and allows to get the non-resource URL /metrics
    /// (SubjectAccessReview). Needs --metrics-tls, so tokens never cross the
    /// network in clear text. /healthz and /readyz stay open to the kubelet.
    #[arg(long, env = "FERROLB_METRICS_AUTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_auth: bool,

    /// Serve HTTPS: with --metrics-cert-file and --metrics-key-file, or else with a
    /// self-signed certificate made at start-up.
    #[arg(long, env = "FERROLB_METRICS_TLS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_tls: bool,

    /// PEM certificate chain for HTTPS (e.g. tls.crt of a mounted cert-manager
    /// Secret); read again when it changes. Needs --metrics-key-file.
    #[arg(long, env = "FERROLB_METRICS_CERT_FILE", requires = "metrics_key_file")]
    pub metrics_cert_file: Option<PathBuf>,

    /// PEM private key for HTTPS (e.g. tls.key); read again when it changes. Needs
    /// --metrics-cert-file.
    #[arg(long, env = "FERROLB_METRICS_KEY_FILE", requires = "metrics_cert_file")]
    pub metrics_key_file: Option<PathBuf>,
}

/// `--metrics-bind-address`: an IP, with or without a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindAddress {
    /// The IP.
    pub ip: IpAddr,
    /// The port, when given; else `--metrics-port`.
    pub port: Option<u16>,
}

impl FromStr for BindAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(address) = s.parse::<SocketAddr>() {
            return Ok(Self {
                ip: address.ip(),
                port: Some(address.port()),
            });
        }
        let bare = s
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(s);
        bare.parse::<IpAddr>()
            .map(|ip| Self { ip, port: None })
            .map_err(|_| {
                format!(
                    "{s:?} is not an IP or IP:PORT (IPv6 with a port in brackets: [2001:db8::1]:7472)"
                )
            })
    }
}

impl fmt::Display for BindAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

/// Where the HTTPS certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Certificate {
    /// Made at start-up for these subject names (IPs or DNS names).
    SelfSigned(Vec<String>),
    /// Read from PEM files.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
}

/// The endpoint, as the flags describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The address to listen on.
    pub address: SocketAddr,
    /// HTTPS with this certificate, or plain HTTP.
    pub tls: Option<Certificate>,
    /// Whether `/metrics` needs an authorised bearer token.
    pub auth: bool,
}

impl MetricsFlags {
    /// The endpoint these flags describe, `port` being `--metrics-port`; an error
    /// names the flags to fix.
    pub fn endpoint(&self, port: u16) -> Result<EndpointConfig, HttpError> {
        let address = match (self.metrics_bind_address, self.pod_ip) {
            (Some(bind), _) => SocketAddr::new(bind.ip, bind.port.unwrap_or(port)),
            (None, Some(ip)) => SocketAddr::new(ip, port),
            (None, None) => return Err(HttpError::NoAddress),
        };
        // Bearer tokens are credentials: only loopback may see them in clear text.
        if self.metrics_auth && !self.metrics_tls && !address.ip().is_loopback() {
            return Err(HttpError::AuthWithoutTls { address });
        }
        let tls = match (&self.metrics_cert_file, &self.metrics_key_file) {
            _ if !self.metrics_tls => {
                if self.metrics_cert_file.is_some() || self.metrics_key_file.is_some() {
                    return Err(HttpError::CertificateWithoutTls);
                }
                None
            }
            (Some(cert), Some(key)) => Some(Certificate::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => Some(Certificate::SelfSigned(subject_names(address.ip()))),
            _ => return Err(HttpError::HalfCertificate),
        };
        Ok(EndpointConfig {
            address,
            tls,
            auth: self.metrics_auth,
        })
    }
}

/// The self-signed certificate's names: the address served, when it is one.
/// Clients of a self-signed certificate skip verification anyway; the names
/// only make the certificate say what it is for.
fn subject_names(ip: IpAddr) -> Vec<String> {
    if ip.is_unspecified() {
        vec!["localhost".to_owned()]
    } else {
        vec![ip.to_string()]
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        metrics: MetricsFlags,
    }

    fn endpoint(args: &[&str]) -> Result<EndpointConfig, String> {
        let mut all = vec!["x"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        cli.metrics.endpoint(7472).map_err(|e| e.to_string())
    }

    #[test]
    fn bind_addresses_parse_with_and_without_ports() {
        let parse = |s: &str| s.parse::<BindAddress>();
        let v4: IpAddr = "198.18.0.10".parse().unwrap();
        let v6: IpAddr = "2001:db8::a".parse().unwrap();
        assert_eq!(parse("198.18.0.10"), Ok(BindAddress { ip: v4, port: None }));
        assert_eq!(
            parse("198.18.0.10:9000"),
            Ok(BindAddress {
                ip: v4,
                port: Some(9000)
            })
        );
        assert_eq!(parse("2001:db8::a"), Ok(BindAddress { ip: v6, port: None }));
        assert_eq!(
            parse("[2001:db8::a]"),
            Ok(BindAddress { ip: v6, port: None })
        );
        assert_eq!(
            parse("[2001:db8::a]:9000"),
            Ok(BindAddress {
                ip: v6,
                port: Some(9000)
            })
        );
        assert_eq!(parse("[::]:9000").unwrap().to_string(), "[::]:9000");
        for bad in [
            "",
            "localhost",
            "198.18.0.10:",
            ":9000",
            "198.18.0.300",
            "[198.18.0.10",
        ] {
            assert!(parse(bad).unwrap_err().contains("is not an IP"), "{bad}");
        }
    }

    #[test]
    fn the_pod_address_is_the_secure_default() {
        let config = endpoint(&["--pod-ip=2001:db8::a"]).unwrap();
        assert_eq!(config.address.to_string(), "[2001:db8::a]:7472");
        assert!(config.auth);
        assert_eq!(
            config.tls,
            Some(Certificate::SelfSigned(vec!["2001:db8::a".into()]))
        );
        // An explicit address wins over the pod's; without a port it takes --metrics-port.
        let config = endpoint(&["--pod-ip=198.18.0.10", "--metrics-bind-address=::"]).unwrap();
        assert_eq!(config.address.to_string(), "[::]:7472");
        assert_eq!(
            config.tls,
            Some(Certificate::SelfSigned(vec!["localhost".into()]))
        );
        let config = endpoint(&["--metrics-bind-address=198.18.0.10:9000"]).unwrap();
        assert_eq!(config.address.to_string(), "198.18.0.10:9000");
    }

    #[test]
    fn without_an_address_the_error_names_the_flags() {
        let error = endpoint(&[]).unwrap_err();
        assert!(
            error.contains("--pod-ip") && error.contains("--metrics-bind-address"),
            "{error}"
        );
    }

    #[test]
    fn tokens_never_travel_in_clear_text_off_loopback() {
        let error = endpoint(&["--pod-ip=198.18.0.10", "--metrics-tls=false"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("--metrics-tls"), "{error}");
        let config = endpoint(&[
            "--metrics-bind-address=127.0.0.1:9000",
            "--metrics-tls=false",
        ])
        .unwrap();
        assert_eq!((config.tls, config.auth), (None, true));
        let config = endpoint(&[
            "--pod-ip=198.18.0.10",
            "--metrics-tls=false",
            "--metrics-auth=false",
        ])
        .unwrap();
        assert_eq!((config.tls, config.auth), (None, false));
    }

    #[test]
    fn certificate_files_come_in_pairs_and_need_tls() {
        let config = endpoint(&[
            "--pod-ip=198.18.0.10",
            "--metrics-cert-file=/tls/tls.crt",
            "--metrics-key-file=/tls/tls.key",
        ])
        .unwrap();
        assert_eq!(
            config.tls,
            Some(Certificate::Files {
                cert: "/tls/tls.crt".into(),
                key: "/tls/tls.key".into()
            })
        );
        assert!(endpoint(&["--pod-ip=198.18.0.10", "--metrics-cert-file=/tls/tls.crt"]).is_err());
        let error = endpoint(&[
            "--pod-ip=198.18.0.10",
            "--metrics-tls=false",
            "--metrics-auth=false",
            "--metrics-cert-file=/tls/tls.crt",
            "--metrics-key-file=/tls/tls.key",
        ])
        .unwrap_err();
        assert!(error.contains("--metrics-tls=false"), "{error}");
    }
}
