//! The speaker tests' fixture: FerroLB's speaker run as a process in every
//! node namespace with a token of the chart's speaker ServiceAccount (so with
//! exactly the chart's RBAC), a pool, an L2Advertisement and a gossip Secret of
//! the test's own, Services whose status IPs the test sets itself (so the
//! speaker tests do not depend on the controller), and what the client sees
//! of them. The fault lab adds to it what faults need: the speaker's own pid
//! to stop, a CPU quota, a gossip key rotation, and a [`Observer`] of the
//! test's VIPs with the `ServiceL2Status` of each recorded next to it.
//!
//! Shared by `e2e/tests/speaker.rs` and `e2e/tests/faults.rs`; the election
//! the tests expect is computed in the tests (`e2e/tests/common`), so the lab
//! binary does not depend on the speaker crate.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use crate::chart::{self, ChartRbac, Component};
use crate::checker::{self, Observer, Stamp};
use crate::faults::{CpuQuota, Stopped};
use crate::harness::{self, NodeProcess, StrictArp, TestNamespace, kubectl, repo_root, wait_for};
use crate::lab::Lab;
use crate::lan::{self, Host};

/// The field manager of the fixture's server-side applies.
pub const MANAGER: &str = "ferrolb-e2e-speaker";

/// The speaker binary: `FERROLB_SPEAKER_BIN` when set (e.g. a release build for
/// the benchmarks), else the debug build, built when missing.
pub fn speaker_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("FERROLB_SPEAKER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug/ferrolb-speaker");
    if !bin.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", "ferrolb-speaker", "--bin", "ferrolb-speaker"])
            .current_dir(repo_root())
            .status()
            .context("cannot run cargo build")?;
        ensure!(status.success(), "cargo build -p ferrolb-speaker failed");
    }
    Ok(bin)
}

/// Applies `crds/ferrolb.io.crds.yaml` exactly as committed: the API server must
/// accept its CEL rules, so the tests run with the validation users get.
pub fn install_crds(lab: &Lab) -> Result<()> {
    let file = repo_root().join("crds/ferrolb.io.crds.yaml");
    let file = file.to_string_lossy().into_owned();
    kubectl(
        lab,
        &["apply", "--server-side", "--force-conflicts", "-f", &file],
        None,
    )
    .context("the API server refused the CRDs")?;
    for crd in [
        "ipaddresspools",
        "l2advertisements",
        "servicel2statuses",
        "speakerstatuses",
    ] {
        kubectl(
            lab,
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}.ferrolb.io"),
                "--timeout=30s",
            ],
            None,
        )?;
    }
    Ok(())
}

/// An API of one of FerroLB's kinds (`ferrolb.io/v1beta1`), namespaced or not.
pub fn dynamic(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("ferrolb.io", "v1beta1", kind);
    let resource = ApiResource::from_gvk(&gvk);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A cluster-scoped object deleted when dropped.
#[derive(Debug)]
struct Cleanup {
    what: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", &self.what, "--wait=false", "--ignore-not-found"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A label on a Node, removed when dropped.
#[derive(Debug)]
pub struct NodeLabel {
    node: String,
    key: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl NodeLabel {
    /// Sets `key=true` on `node`.
    pub fn set(lab: &Lab, node: &str, key: &str) -> Result<Self> {
        kubectl(
            lab,
            &["label", "node", node, &format!("{key}=true"), "--overwrite"],
            None,
        )?;
        Ok(Self {
            node: node.to_owned(),
            key: key.to_owned(),
            kubectl: lab.tools().path("kubectl"),
            kubeconfig: lab.kubeconfig(),
        })
    }
}

impl Drop for NodeLabel {
    fn drop(&mut self) {
        let _ = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["label", "node", &self.node, &format!("{}-", self.key)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The objects and processes of one test: a pool, an advertisement, a
/// gossip Secret, and one speaker per node.
pub struct Setup {
    /// The lab the test runs in.
    pub lab: &'static Lab,
    /// An admin client of the lab's API server.
    pub client: Client,
    /// The test's namespace: Services, the gossip Secret, the RBAC release.
    pub ns: TestNamespace,
    /// The test's load-balancer class (the speakers announce only it).
    pub class: String,
    /// The test's pool (and L2Advertisement) name.
    pub pool: String,
    /// The nodes the speakers run on: the lab's, unless [`Setup::on_hosts`].
    pub nodes: Vec<Host>,
    /// The nodes' names, in the order of `nodes`.
    pub names: Vec<String>,
    /// The nodes' LAN MACs (lowercase), in the order of `nodes`.
    pub macs: Vec<String>,
    /// The speaker process of each node, when running.
    pub speakers: Vec<Option<NodeProcess>>,
    /// The speakers' gossip (UDP) port.
    pub gossip_port: u16,
    /// The speakers' metrics port.
    pub metrics_port: u16,
    /// Start speakers with `--enforce-strict-arp`.
    pub enforce_strict_arp: bool,
    /// More flags for speakers started from now on.
    pub extra_args: Vec<String>,
    /// The speakers' credentials: a token of the chart's speaker ServiceAccount.
    kubeconfig: PathBuf,
    _rbac: ChartRbac,
    _cleanup: Vec<Cleanup>,
    // The lab binds every LoadBalancer IP to kube-ipvs0 on every node, as
    // IPVS kube-proxy does: only with strictARP on do the kernels stay quiet
    // and the speakers alone answer.
    _strict_arp: StrictArp,
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup")
            .field("ns", &self.ns.name())
            .field("class", &self.class)
            .field("nodes", &self.names)
            .field("gossip_port", &self.gossip_port)
            .finish_non_exhaustive()
    }
}

impl Setup {
    /// Creates the test's namespace, gossip Secret, chart RBAC, pool
    /// (`addresses`) and L2Advertisement (for the pool only when
    /// `by_pool_name`, else for every pool), and starts a speaker on every
    /// node with gossip and metrics on `ports`.
    pub async fn new(
        lab: &'static Lab,
        prefix: &str,
        addresses: &[&str],
        ports: (u16, u16),
        by_pool_name: bool,
    ) -> Result<Self> {
        let nodes = lab.nodes();
        let macs = nodes.iter().map(lan::mac_of).collect::<Result<_>>()?;
        Self::on_hosts(lab, prefix, addresses, ports, by_pool_name, nodes, macs).await
    }

    /// [`Setup::new`] with speakers on `nodes` instead of the lab's nodes
    /// (e.g. those of [`crate::topology`]), whose answering MACs are `macs`.
    pub async fn on_hosts(
        lab: &'static Lab,
        prefix: &str,
        addresses: &[&str],
        ports: (u16, u16),
        by_pool_name: bool,
        nodes: Vec<Host>,
        macs: Vec<String>,
    ) -> Result<Self> {
        ensure!(nodes.len() == macs.len(), "one MAC per node");
        let client = lab.client().await?;
        let strict_arp = StrictArp::set(lab, true).await?;
        install_crds(lab)?;
        let ns = TestNamespace::create(lab, &client, prefix).await?;
        let name = ns.name().to_owned();
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "gossip"},
            // 32 bytes, base64.
            "data": {"key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
        }))?;
        Api::<Secret>::namespaced(client.clone(), &name)
            .create(&PostParams::default(), &secret)
            .await
            .context("cannot create the gossip Secret")?;
        // The chart's RBAC as a release in the test's namespace; its Role
        // grants the gossip Secret by name.
        let rbac = ChartRbac::install(lab, &name, &name, &["speaker.gossipSecretName=gossip"])?;
        let kubeconfig = rbac.kubeconfig(Component::Speaker).await?;
        ensure!(
            chart::can_i(lab, &kubeconfig, "list", "nodes")?
                && !chart::can_i(lab, &kubeconfig, "patch", "services/status")?,
            "the speakers' credentials are not the chart's speaker ServiceAccount"
        );
        let params = PatchParams::apply(MANAGER).force();
        let class = format!("e2e.ferrolb.io/{name}");
        dynamic(&client, "IPAddressPool", None)
            .patch(
                &name,
                &params,
                &Patch::Apply(json!({
                    "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                    "metadata": {"name": name},
                    // A pool of the speakers' class: they ignore any other.
                    "spec": {"addresses": addresses, "autoAssign": false, "loadBalancerClass": class},
                })),
            )
            .await
            .context("cannot create the pool")?;
        dynamic(&client, "L2Advertisement", None)
            .patch(
                &name,
                &params,
                &Patch::Apply(json!({
                    "apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
                    "metadata": {"name": name},
                    "spec": if by_pool_name { json!({"ipAddressPools": [name]}) } else { json!({}) },
                })),
            )
            .await
            .context("cannot create the L2Advertisement")?;
        let cleanup = ["ipaddresspool", "l2advertisement"]
            .iter()
            .map(|kind| Cleanup {
                what: format!("{kind}.ferrolb.io/{name}"),
                kubectl: lab.tools().path("kubectl"),
                kubeconfig: lab.kubeconfig(),
            })
            .collect();
        let names = nodes.iter().map(|h| h.name.clone()).collect();
        let mut setup = Self {
            lab,
            client,
            class,
            pool: name,
            ns,
            speakers: nodes.iter().map(|_| None).collect(),
            nodes,
            names,
            macs,
            gossip_port: ports.0,
            metrics_port: ports.1,
            enforce_strict_arp: false,
            extra_args: Vec::new(),
            kubeconfig,
            _rbac: rbac,
            _cleanup: cleanup,
            _strict_arp: strict_arp,
        };
        for i in 0..setup.nodes.len() {
            setup.start(i)?;
        }
        Ok(setup)
    }

    /// Starts the speaker of node `i`.
    pub fn start(&mut self, i: usize) -> Result<()> {
        let bin = speaker_binary()?;
        let host = &self.nodes[i];
        let kubeconfig = format!("KUBECONFIG={}", self.kubeconfig.display());
        let args = [
            kubeconfig.as_str(),
            "FERROLB_LOG=info,ferrolb_speaker=debug",
            &bin.to_string_lossy(),
            "--node-name",
            &host.name,
            "--host-ip",
            &host.ipv4.to_string(),
            "--namespace",
            self.ns.name(),
            "--gossip-secret",
            "gossip",
            "--gossip-port",
            &self.gossip_port.to_string(),
            "--metrics-bind-address",
            &format!("{}:{}", host.ipv4, self.metrics_port),
            // The tests' own processes, scraped with plain curl (the chart's
            // authenticated HTTPS endpoint is tested in tests/metrics.rs).
            "--metrics-auth=false",
            "--metrics-tls=false",
            "--load-balancer-class",
            &self.class,
        ]
        .map(str::to_owned);
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        if self.enforce_strict_arp {
            args.push("--enforce-strict-arp");
        }
        args.extend(self.extra_args.iter().map(String::as_str));
        self.speakers[i] = Some(NodeProcess::start(self.lab, host, "env", &args)?);
        Ok(())
    }

    /// Kills the speaker of node `i` at once (SIGKILL), as a crash would.
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.speakers[i].take() {
            p.kill();
        }
    }

    /// Stops the speaker of node `i` gracefully (SIGTERM).
    pub fn terminate(&mut self, i: usize) {
        if let Some(p) = self.speakers[i].take() {
            p.stop();
        }
    }

    /// The index of node `name` in `nodes`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Replaces the spec of the test's L2Advertisement: it announces the
    /// test's pool, with `extra` fields (e.g. `nodeSelectors`) added.
    pub async fn advertise(&self, extra: Value) -> Result<()> {
        let mut spec = json!({"ipAddressPools": [self.pool]});
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
            spec.extend(extra);
        }
        dynamic(&self.client, "L2Advertisement", None)
            .patch(
                &self.pool,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(json!({
                    "apiVersion": "ferrolb.io/v1beta1", "kind": "L2Advertisement",
                    "metadata": {"name": self.pool},
                    "spec": spec,
                })),
            )
            .await
            .context("cannot update the L2Advertisement")?;
        Ok(())
    }

    /// Creates a LoadBalancer Service with `ip` in its status and an
    /// EndpointSlice whose one endpoint, on `node`, is `ready`.
    pub async fn service(&self, name: &str, ip: Ipv4Addr, node: &str, ready: bool) -> Result<()> {
        self.service_with_policy(name, ip, node, ready, "Cluster")
            .await
    }

    /// [`Setup::service`] with an `externalTrafficPolicy`.
    pub async fn service_with_policy(
        &self,
        name: &str,
        ip: Ipv4Addr,
        node: &str,
        ready: bool,
        policy: &str,
    ) -> Result<()> {
        self.service_with_ips(name, &[IpAddr::V4(ip)], node, ready, policy)
            .await
    }

    /// A Service with `ips` (at most one per family) in its status; its
    /// `ipFamilies` follow them (two IPs: `RequireDualStack`).
    pub async fn service_with_ips(
        &self,
        name: &str,
        ips: &[IpAddr],
        node: &str,
        ready: bool,
        policy: &str,
    ) -> Result<()> {
        let ns = self.ns.name();
        let families: Vec<&str> = ips
            .iter()
            .map(|ip| if ip.is_ipv4() { "IPv4" } else { "IPv6" })
            .collect();
        let family_policy = if ips.len() > 1 {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {"ferrolb.io/ip-allocated-from-pool": self.pool}},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": self.class,
                "externalTrafficPolicy": policy,
                "ipFamilies": families,
                "ipFamilyPolicy": family_policy,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        }))?;
        let ingress: Vec<Value> = ips
            .iter()
            .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
            .collect();
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        services
            .create(&PostParams::default(), &svc)
            .await
            .with_context(|| format!("cannot create Service {name}"))?;
        services
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}})),
            )
            .await
            .with_context(|| format!("cannot set the status of Service {name}"))?;
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-1"), "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "e2e.ferrolb.io",
            }},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.19.100.5"], "conditions": {"ready": ready}, "nodeName": node}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))?;
        Api::<EndpointSlice>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &slice)
            .await
            .with_context(|| format!("cannot create the EndpointSlice of {name}"))?;
        Ok(())
    }

    /// The ServiceL2Status of `name`, once it exists.
    pub async fn l2_status(&self, name: &str) -> Result<Option<Value>> {
        let api = dynamic(&self.client, "ServiceL2Status", Some(self.ns.name()));
        Ok(api
            .get_opt(name)
            .await?
            .and_then(|o| o.data.get("status").cloned()))
    }

    /// The node the ServiceL2Status of `name` names, if any.
    pub async fn status_node(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .l2_status(name)
            .await?
            .and_then(|s| s["node"].as_str().map(str::to_owned)))
    }

    /// The LAN MAC of node `node`.
    pub fn mac_of(&self, node: &str) -> Option<&str> {
        self.node_index(node).map(|i| self.macs[i].as_str())
    }

    /// Each node's MAC with the node's name, to show MACs in reports.
    pub fn names_by_mac(&self) -> BTreeMap<String, String> {
        self.macs.iter().cloned().zip(self.names.clone()).collect()
    }

    /// The pid of node `i`'s speaker process itself. The fixture starts it as
    /// `ip netns exec … env … ferrolb-speaker`, and both `ip` and `env` exec
    /// the next program without forking, so the child's pid becomes the
    /// speaker's once they have: this waits for that (a signal sent earlier
    /// would reach `ip` or `env`, not the speaker).
    pub fn speaker_pid(&self, i: usize) -> Result<i32> {
        let pid = self.speakers[i]
            .as_ref()
            .map(NodeProcess::pid)
            .with_context(|| format!("the speaker on {} is not running", self.names[i]))?;
        let binary = speaker_binary()?;
        let binary = binary.canonicalize().unwrap_or(binary);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .with_context(|| format!("the speaker on {} exited", self.names[i]))?;
            if exe == binary {
                return Ok(pid);
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "pid {pid} on {} runs {}, not the speaker {}",
                self.names[i],
                exe.display(),
                binary.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops node `i`'s speaker (SIGSTOP) until the guard is resumed or dropped.
    pub fn stop_speaker(&self, i: usize) -> Result<Stopped> {
        Stopped::stop(self.speaker_pid(i)?)
    }

    /// Stops node `i`'s speaker for `pause`; returns when it was stopped and
    /// when it was continued.
    pub async fn stall_speaker(&self, i: usize, pause: Duration) -> Result<(Stamp, Stamp)> {
        let pid = self.speaker_pid(i)?;
        let stopped = Stopped::stop(pid)?;
        let start = checker::now();
        tokio::time::sleep(pause).await;
        stopped.resume()?;
        Ok((start, checker::now()))
    }

    /// Confines node `i`'s speaker to `percent` of a CPU, enforced every
    /// `period`, until the guard is dropped.
    pub fn starve_speaker(&self, i: usize, percent: u32, period: Duration) -> Result<CpuQuota> {
        CpuQuota::limit(self.speaker_pid(i)?, percent, period)
    }

    /// Writes `key` (32 bytes) into the test's gossip Secret, as a user
    /// rotating the key does; the speakers pick it up on their own.
    pub async fn rotate_gossip_key(&self, key: &[u8]) -> Result<()> {
        let secret = Secret {
            data: Some(BTreeMap::from([(
                "key".to_owned(),
                ByteString(key.to_vec()),
            )])),
            ..Secret::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), self.ns.name())
            .patch(
                "gossip",
                &PatchParams::default(),
                &Patch::Merge(serde_json::to_value(&secret)?),
            )
            .await
            .context("cannot rotate the gossip key")?;
        Ok(())
    }

    /// Starts observing `vips` from the client: every ARP and neighbor
    /// advertisement frame, a ping every 10 ms and an ARP request every
    /// 100 ms per VIP, the client's neighbour entries.
    pub fn observe(&self, vips: &[IpAddr]) -> Result<Observer> {
        Observer::start(&Host::client(), vips, Duration::from_millis(100))
    }

    /// Records into `observer`, every 100 ms until `until`, the MAC of the
    /// node the ServiceL2Status of each of `services` (name, VIP) names. A
    /// read that fails is skipped, not recorded.
    pub async fn record_statuses(
        &self,
        observer: &Observer,
        services: &[(&str, IpAddr)],
        until: Stamp,
    ) {
        while checker::now() < until {
            for (name, vip) in services {
                if let Ok(node) = self.status_node(name).await {
                    let mac = node.and_then(|n| self.mac_of(&n).map(str::to_owned));
                    observer.record_status(*vip, mac);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Waits until, in the probe rounds of the last second, exactly `mac`
/// answered for `vip` every time: the VIP is quiet and owned before a fault.
pub async fn wait_for_quiet_owner(
    observer: &Observer,
    vip: IpAddr,
    mac: &str,
    timeout: Duration,
) -> Result<()> {
    wait_for(
        &format!("only {mac} to answer for {vip} for a second"),
        timeout,
        || async move {
            let rounds = observer.recent_answers(vip, Duration::from_secs(1));
            if rounds.len() < 5 {
                bail!("{} probe rounds in the last second", rounds.len());
            }
            Ok(rounds.iter().all(|r| r == &[mac]).then_some(()))
        },
    )
    .await
}

/// Waits until exactly `mac` answers ARP for `ip` from the client.
pub async fn wait_for_single_mac(
    client: &Host,
    ip: Ipv4Addr,
    mac: &str,
    timeout: Duration,
) -> Result<()> {
    wait_for(
        &format!("only {mac} to answer for {ip}"),
        timeout,
        || async move {
            let macs = harness::arping(client, ip, 2)?;
            Ok((macs == [mac.to_owned()]).then_some(()).or_else(|| {
                if !macs.is_empty() && macs.len() > 1 {
                    eprintln!("{ip}: several MACs answer: {macs:?}");
                }
                None
            }))
        },
    )
    .await
}

/// 198.18.0.`last`: an address on the lab's LAN.
pub fn vip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

/// The MAC the client's neighbor table holds for `ip` on its LAN interface
/// (lowercase), if it has a usable entry (not INCOMPLETE or FAILED).
pub fn client_neighbor(client: &Host, ip: IpAddr) -> Result<Option<String>> {
    let out = harness::exec_in(
        client,
        "ip",
        &[
            "-j",
            "neigh",
            "show",
            &ip.to_string(),
            "dev",
            lan::INNER_IFACE,
        ],
    )?;
    ensure!(
        out.status.success(),
        "ip neigh show {ip}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Value =
        serde_json::from_slice(&out.stdout).context("cannot parse `ip -j neigh` output")?;
    Ok(entries
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["dst"].as_str().and_then(|d| d.parse().ok()) == Some(ip))
        .find_map(|e| e["lladdr"].as_str().map(str::to_lowercase)))
}

/// Forgets the client's neighbor entry for `ip`, so the next packet resolves
/// it afresh.
pub fn flush_client_neighbor(client: &Host, ip: IpAddr) -> Result<()> {
    let out = harness::exec_in(
        client,
        "ip",
        &[
            "neigh",
            "flush",
            "to",
            &ip.to_string(),
            "dev",
            lan::INNER_IFACE,
        ],
    )?;
    ensure!(
        out.status.success(),
        "ip neigh flush {ip}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Waits until the client pings `ip` and its neighbor entry for `ip` is
/// `mac`: the packets really go to that node.
pub async fn wait_for_ping_via(
    client: &Host,
    ip: Ipv6Addr,
    mac: &str,
    timeout: Duration,
) -> Result<()> {
    let ip = IpAddr::V6(ip);
    wait_for(
        &format!("ping -6 {ip} to be answered through {mac}"),
        timeout,
        || async move {
            let answered = harness::ping(client, ip)?;
            let neighbor = client_neighbor(client, ip)?;
            if answered && neighbor.as_deref() == Some(mac) {
                return Ok(Some(()));
            }
            bail!("ping answered: {answered}, neighbor entry: {neighbor:?}")
        },
    )
    .await
}

/// A metric's value summed over its series, from a speaker's `/metrics`.
pub fn speaker_metric(host: &Host, port: u16, name: &str) -> Result<f64> {
    let url = format!("http://{}:{port}/metrics", host.ipv4);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", &url])
        .output()
        .context("cannot run curl")?;
    ensure!(out.status.success(), "GET {url} failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}
