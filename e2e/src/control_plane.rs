//! The control plane: etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler, as daemons of the lab's [`Supervisor`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::command;
use crate::kubeconfig;
use crate::lan::{GATEWAY_V4, GATEWAY_V6};
use crate::pki::{CLIENTS, ClientIdentity, Pki};
use crate::process::{Daemon, Supervisor};
use crate::tools::Tools;

/// The API server's port on the LAN gateway.
pub const APISERVER_PORT: u16 = 6443;
/// Service ClusterIP ranges (dual stack), inside the lab's address blocks; the
/// IPv4 /16 leaves room for the controller's 10,000-Service benchmark.
pub const SERVICE_CIDRS: [&str; 2] = ["198.19.0.0/16", "2001:db8:19::/112"];
/// The `kubernetes` Service's ClusterIP: the first address of the range.
pub const KUBERNETES_SERVICE_IP: [u8; 4] = [198, 19, 0, 1];
/// The NodePort range (Kubernetes' default).
pub const NODE_PORT_RANGE: &str = "30000-32767";
/// The service-account token issuer.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// etcd's client port on loopback (off the default to avoid a host etcd).
const ETCD_CLIENT_PORT: u16 = 12379;
const ETCD_PEER_PORT: u16 = 12380;

/// The controllers kube-controller-manager runs: those that make sense
/// without a kubelet. Node lifecycle, pod GC and taint eviction are off, so
/// nothing evicts pods or marks nodes NotReady behind the lab's back.
pub const CONTROLLERS: &[&str] = &[
    "endpoints-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "daemonset-controller",
    "statefulset-controller",
    "job-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "service-cidr-controller",
];

/// The API server's URL, reachable from the root and every node namespace.
pub fn server_url() -> String {
    format!("https://{GATEWAY_V4}:{APISERVER_PORT}")
}

/// File layout of the control plane under the state directory.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    state: PathBuf,
    tools: Tools,
}

impl ControlPlane {
    /// The control plane with state under `state`.
    pub fn new(state: &Path, tools: Tools) -> Self {
        Self {
            state: state.to_owned(),
            tools,
        }
    }

    /// The PKI.
    pub fn pki(&self) -> Pki {
        Pki::at(&self.state.join("pki"))
    }

    /// The kubeconfig of a client identity (`admin`, `kube-scheduler`, …).
    pub fn kubeconfig_of(&self, client: &ClientIdentity) -> PathBuf {
        self.state.join(format!("{}.kubeconfig", client.file))
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.state.join("admin.kubeconfig")
    }

    /// Writes the PKI and kubeconfigs, starts every component and waits until
    /// the API server is ready.
    pub fn start(&self, sup: &Supervisor) -> Result<()> {
        let pki = self.pki();
        let service_ip = IpAddr::from(KUBERNETES_SERVICE_IP);
        pki.generate(
            &[
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::V4(GATEWAY_V4),
                IpAddr::V6(GATEWAY_V6),
                service_ip,
            ],
            &[
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )?;
        for client in &CLIENTS {
            kubeconfig::write(&self.kubeconfig_of(client), &server_url(), &pki, client)?;
        }

        sup.start(&self.etcd())?;
        wait_for("etcd", Duration::from_secs(30), || {
            Ok(command::succeeds(
                "bash",
                &[
                    "-c",
                    &format!("exec 3<>/dev/tcp/127.0.0.1/{ETCD_CLIENT_PORT}"),
                ],
            ))
        })?;
        self.start_apiserver(sup)?;
        sup.start(&self.controller_manager())?;
        sup.start(&self.scheduler())?;
        Ok(())
    }

    /// Starts kube-apiserver (etcd must run) and waits until `/readyz` is OK.
    pub fn start_apiserver(&self, sup: &Supervisor) -> Result<()> {
        self.restart_apiserver(sup, &self.apiserver())
    }

    /// Stops kube-apiserver (SIGTERM, SIGKILL after five seconds); everything
    /// else keeps running. Returns how it ran (`None` if it did not), for
    /// [`ControlPlane::restart_apiserver`].
    pub fn stop_apiserver(&self, sup: &Supervisor) -> Result<Option<Daemon>> {
        sup.stop("kube-apiserver", &self.tools.path("kube-apiserver"))
    }

    /// Starts kube-apiserver as `daemon` says (what
    /// [`ControlPlane::stop_apiserver`] returned: the same arguments as
    /// before, whatever this code would pass now) and waits until `/readyz`
    /// is OK.
    pub fn restart_apiserver(&self, sup: &Supervisor, daemon: &Daemon) -> Result<()> {
        sup.start(daemon)?;
        let kubectl = self.tools.path("kubectl");
        let admin = self.admin_kubeconfig();
        wait_for("kube-apiserver /readyz", Duration::from_secs(90), || {
            Ok(command::succeeds(
                &kubectl.to_string_lossy(),
                &[
                    "--kubeconfig",
                    &admin.to_string_lossy(),
                    "get",
                    "--raw=/readyz",
                ],
            ))
        })
        .with_context(|| format!("see {}", sup.log_of("kube-apiserver").display()))
    }

    fn daemon(&self, name: &str, args: Vec<String>) -> Daemon {
        Daemon {
            name: name.to_owned(),
            program: self.tools.path(name),
            args,
            netns: None,
        }
    }

    fn etcd(&self) -> Daemon {
        let data = self.state.join("etcd");
        let client = format!("http://127.0.0.1:{ETCD_CLIENT_PORT}");
        let peer = format!("http://127.0.0.1:{ETCD_PEER_PORT}");
        self.daemon(
            "etcd",
            vec![
                "--name=lab".into(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=lab={peer}"),
                "--listen-metrics-urls=".into(),
                // A throwaway cluster on tmpfs: no need to fsync every write.
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )
    }

    fn apiserver(&self) -> Daemon {
        let pki = self.pki();
        let p = |path: PathBuf| path.display().to_string();
        self.daemon(
            "kube-apiserver",
            vec![
                format!("--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}"),
                format!("--bind-address={GATEWAY_V4}"),
                format!("--advertise-address={GATEWAY_V4}"),
                format!("--secure-port={APISERVER_PORT}"),
                format!("--tls-cert-file={}", p(pki.apiserver_cert())),
                format!("--tls-private-key-file={}", p(pki.apiserver_key())),
                format!("--client-ca-file={}", p(pki.ca_cert())),
                format!("--service-account-issuer={SA_ISSUER}"),
                format!("--service-account-key-file={}", p(pki.sa_pub())),
                format!("--service-account-signing-key-file={}", p(pki.sa_key())),
                "--authorization-mode=Node,RBAC".into(),
                // No aggregated API servers, but components expect the
                // request-header CA to be published; no certificate carries
                // the allowed name, so nobody can use it.
                format!("--requestheader-client-ca-file={}", p(pki.ca_cert())),
                "--requestheader-allowed-names=front-proxy-client".into(),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!("--service-cluster-ip-range={}", SERVICE_CIDRS.join(",")),
                format!("--service-node-port-range={NODE_PORT_RANGE}"),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )
    }

    fn component_args(&self, client: &ClientIdentity, port: u16) -> Vec<String> {
        let kc = self.kubeconfig_of(client).display().to_string();
        vec![
            format!("--kubeconfig={kc}"),
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--leader-elect=false".into(),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--v=1".into(),
        ]
    }

    fn controller_manager(&self) -> Daemon {
        let pki = self.pki();
        let mut args = self.component_args(&CLIENTS[1], 10257);
        args.extend([
            format!("--controllers={}", CONTROLLERS.join(",")),
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                pki.sa_key().display()
            ),
            format!("--root-ca-file={}", pki.ca_cert().display()),
            format!("--service-cluster-ip-range={}", SERVICE_CIDRS.join(",")),
        ]);
        self.daemon("kube-controller-manager", args)
    }

    fn scheduler(&self) -> Daemon {
        self.daemon("kube-scheduler", self.component_args(&CLIENTS[2], 10259))
    }
}

/// Polls `ready` every 250 ms until it returns true, failing after `timeout`
/// with a message naming what was awaited.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if ready()? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
