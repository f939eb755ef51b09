//! `/metrics` (OpenMetrics text), `/healthz` (the process serves) and `/readyz` (the
//! process has what it needs to do its job: watches synced, membership joined).
//!
//! One port serves all three, over HTTPS by default. `/metrics` may require an
//! authorised bearer token ([`crate::auth`]); the probes never do: the kubelet's
//! probes carry no token (and skip certificate verification with `scheme:
//! HTTPS`), and they reveal only whether the process is up and ready. A second,
//! plain port for them would be one more listener to secure and document for no
//! gain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::{ApiReviewer, Authorizer, Decision, Reviewer};
use crate::endpoint::EndpointConfig;

/// Longest a client may take to complete the TLS handshake or send its request
/// headers, so idle connections do not pile up.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint could not be served.
#[derive(Debug, Error)]
pub enum HttpError {
    /// Neither `--metrics-bind-address` nor `--pod-ip` is set.
    #[error(
        "no address to serve /metrics, /healthz and /readyz on: set --pod-ip (FERROLB_POD_IP; the chart passes status.podIP) or --metrics-bind-address (e.g. 127.0.0.1, or 0.0.0.0 / :: for every address)"
    )]
    NoAddress,
    /// Authentication without TLS, off loopback.
    #[error(
        "--metrics-auth needs --metrics-tls on {address}: bearer tokens would cross the network in clear text (turn --metrics-auth off too, or bind 127.0.0.1)"
    )]
    AuthWithoutTls {
        /// The address.
        address: SocketAddr,
    },
    /// Certificate files with `--metrics-tls=false`.
    #[error("--metrics-cert-file and --metrics-key-file are given but --metrics-tls=false")]
    CertificateWithoutTls,
    /// Only one of the certificate and the key.
    #[error("--metrics-cert-file and --metrics-key-file go together")]
    HalfCertificate,
    /// A certificate or key file cannot be used.
    #[error("cannot use {path} for TLS (--metrics-cert-file / --metrics-key-file): {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The self-signed certificate cannot be made.
    #[error("cannot make a self-signed certificate for /metrics: {0}")]
    SelfSigned(rcgen::Error),
    /// The certificate and key do not make a TLS configuration.
    #[error("cannot serve TLS with the certificate and key given: {0}")]
    Tls(rustls::Error),
    /// The address cannot be bound (in use, or not local).
    #[error(
        "cannot listen on {address} (--metrics-bind-address, --pod-ip, --metrics-port): {source}"
    )]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct Health {
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// Set once the process is ready; `/readyz` answers 503 until then.
    pub ready: Arc<AtomicBool>,
    /// What `/readyz` says while not ready, e.g. "watches not synced yet".
    pub not_ready: &'static str,
}

/// The endpoint, bound and ready to serve.
pub struct MetricsEndpoint {
    listener: TcpListener,
    address: SocketAddr,
    tls: Option<TlsAcceptor>,
    auth: Option<Arc<Authorizer<ApiReviewer>>>,
}

impl std::fmt::Debug for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEndpoint")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

impl MetricsEndpoint {
    /// Prepares TLS and binds `config.address`; `client` reviews tokens when
    /// `config.auth` is on. Fails at once, so the process can exit with the reason;
    /// on success, logs where and how it serves.
    pub async fn bind(config: &EndpointConfig, client: kube::Client) -> Result<Self, HttpError> {
        let tls = match &config.tls {
            Some(certificate) => Some(TlsAcceptor::from(crate::tls::server_config(certificate)?)),
            None => None,
        };
        let address = config.address;
        let listener = TcpListener::bind(address)
            .await
            .map_err(|source| HttpError::Bind { address, source })?;
        let endpoint = Self {
            listener,
            address,
            tls,
            auth: config
                .auth
                .then(|| Arc::new(Authorizer::new(ApiReviewer::new(client)))),
        };
        tracing::info!(
            address = %endpoint.address,
            scheme = endpoint.scheme(),
            auth = endpoint.authenticates(),
            "serving /metrics, /healthz and /readyz"
        );
        Ok(endpoint)
    }

    /// The address listened on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Whether `/metrics` needs an authorised token.
    pub fn authenticates(&self) -> bool {
        self.auth.is_some()
    }

    /// Serves until the process ends; each connection runs in its own task.
    pub async fn serve(self, health: Health) {
        let app = router(health, self.auth);
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "metrics endpoint cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let app = app.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_connection(stream, app).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => serve_connection(stream, app).await,
                            Ok(Err(error)) => {
                                tracing::debug!(%peer, %error, "metrics endpoint: TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "metrics endpoint: TLS handshake timed out");
                            }
                        }
                    }
                }
            });
        }
    }
}

async fn serve_connection<S>(stream: S, app: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
        .await;
    if let Err(error) = served {
        tracing::debug!(%error, "metrics endpoint: connection ended with an error");
    }
}

#[derive(Debug)]
struct Endpoints<R> {
    health: Health,
    auth: Option<Arc<Authorizer<R>>>,
}

impl<R> Clone for Endpoints<R> {
    fn clone(&self) -> Self {
        Self {
            health: self.health.clone(),
            auth: self.auth.clone(),
        }
    }
}

fn router<R: Reviewer>(health: Health, auth: Option<Arc<Authorizer<R>>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<R>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<R>))
        .with_state(Endpoints { health, auth })
}

async fn metrics<R: Reviewer>(State(state): State<Endpoints<R>>, headers: HeaderMap) -> Response {
    if let Some(auth) = &state.auth {
        match auth.decide(&headers).await {
            Ok(Decision::Allowed) => {}
            Ok(Decision::Unauthenticated) => {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
                    "Unauthorized: /metrics needs a bearer token the Kubernetes API server accepts (Authorization: Bearer <ServiceAccount token>)\n",
                )
                    .into_response();
            }
            Ok(Decision::Forbidden { user }) => {
                return (
                    StatusCode::FORBIDDEN,
                    format!(
                        "Forbidden: {user} may not get /metrics; bind it to a ClusterRole allowing nonResourceURLs [\"/metrics\"] verbs [\"get\"] (the chart's <release>-metrics-reader)\n"
                    ),
                )
                    .into_response();
            }
            Err(error) => {
                tracing::warn!(%error, "cannot decide who may read /metrics");
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("Service Unavailable: {error}\n"),
                )
                    .into_response();
            }
        }
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.health.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz<R: Reviewer>(State(state): State<Endpoints<R>>) -> Response {
    if state.health.ready.load(Ordering::Relaxed) {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, state.health.not_ready).into_response()
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use prometheus_client::metrics::gauge::Gauge;
    use tower::ServiceExt as _;

    use super::*;
    use crate::auth::tests::FakeApi;

    fn health(ready: bool) -> Health {
        let mut registry = Registry::default();
        let gauge: Gauge = Gauge::default();
        gauge.set(3);
        registry.register("ferrolb_example", "An example", gauge);
        Health {
            registry: Arc::new(registry),
            ready: Arc::new(AtomicBool::new(ready)),
            not_ready: "watches not synced yet",
        }
    }

    /// GETs `path` with an optional bearer token: status and body.
    async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn metrics_need_an_authorised_token_and_probes_do_not() {
        let app = router(
            health(true),
            Some(Arc::new(Authorizer::new(FakeApi::new()))),
        );
        let (status, body) = get(&app, "/metrics", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(!body.contains("ferrolb_example"), "{body}");
        assert_eq!(
            get(&app, "/metrics", Some("made-up")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = get(&app, "/metrics", Some("other-token")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(
            body.contains("system:serviceaccount:default:other may not get /metrics"),
            "{body}"
        );
        assert!(!body.contains("ferrolb_example"), "{body}");
        let (status, body) = get(&app, "/metrics", Some("prometheus-token")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("ferrolb_example 3"), "{body}");
        assert_eq!(
            get(&app, "/healthz", None).await,
            (StatusCode::OK, "ok".into())
        );
        assert_eq!(
            get(&app, "/readyz", None).await,
            (StatusCode::OK, "ok".into())
        );
    }

    #[tokio::test]
    async fn without_auth_metrics_are_open() {
        let app = router::<FakeApi>(health(false), None);
        let (status, body) = get(&app, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("ferrolb_example 3"), "{body}");
        assert_eq!(
            get(&app, "/readyz", None).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "watches not synced yet".into()
            )
        );
    }

    #[tokio::test]
    async fn an_unreachable_api_server_answers_503() {
        let mut api = FakeApi::new();
        api.down = true;
        let app = router(health(true), Some(Arc::new(Authorizer::new(api))));
        let (status, body) = get(&app, "/metrics", Some("prometheus-token")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("cannot review the token"), "{body}");
        assert_eq!(get(&app, "/healthz", None).await.0, StatusCode::OK);
    }
}
