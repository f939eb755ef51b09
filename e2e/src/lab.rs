//! The lab as a whole: `up`, `down` and `status`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::control_plane::{self, ControlPlane};
use crate::lan::{self, Host};
use crate::pki::CLIENTS;
use crate::process::{self, Supervisor};
use crate::tools::{self, Tools};
use crate::{agent, command, ipvs, kube_proxy, nodes, podnet, topology};

/// The default number of node namespaces.
pub const DEFAULT_NODES: u8 = 3;

/// Where the lab keeps its state (pids, logs, PKI, kubeconfigs, etcd data):
/// `FERROLB_LAB_STATE`, by default `/run/ferrolb-lab` (tmpfs, gone on reboot).
pub fn state_dir() -> PathBuf {
    std::env::var_os("FERROLB_LAB_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/ferrolb-lab"))
}

/// Serialises `up` and `down` between processes (two test runs, a user and
/// a test): an exclusive lock on a file in the tools cache (which outlives
/// the lab anyway), released when the returned guard drops.
fn exclusive() -> Result<nix::fcntl::Flock<std::fs::File>> {
    let cache = tools::cache_dir();
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create {}", cache.display()))?;
    let path = cache.join("lab.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("cannot lock {}", path.display()))
}

/// What `up` records about the lab it made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabRecord {
    /// How many node namespaces there are.
    pub nodes: u8,
    /// The tools' directory.
    pub tools: PathBuf,
    /// Whether the emulated IPVS-mode kube-proxy has strictARP on.
    #[serde(default = "strict_arp_default")]
    pub strict_arp: bool,
}

fn strict_arp_default() -> bool {
    true
}

/// A lab that is up.
#[derive(Clone, Debug)]
pub struct Lab {
    /// Its state directory.
    pub state: PathBuf,
    /// What `up` recorded.
    pub record: LabRecord,
}

fn record_path(state: &Path) -> PathBuf {
    state.join("lab.json")
}

/// Fails unless the lab can run here: Linux, as root.
pub fn check_host() -> Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("the lab needs Linux (network namespaces)");
    }
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the lab needs root (network namespaces, a bridge): run as root");
    }
    Ok(())
}

impl Lab {
    /// The lab that is up, if any (its record exists and the API server runs).
    pub fn current() -> Option<Self> {
        let state = state_dir();
        let record = read_record(&state)?;
        Supervisor::new(&state)
            .running("kube-apiserver")
            .then_some(Self { state, record })
    }

    /// A lab whose API server is not running while etcd is: what a test
    /// interrupted during [`Lab::stop_apiserver`] leaves behind.
    fn without_apiserver() -> Option<Self> {
        let state = state_dir();
        let record = read_record(&state)?;
        let sup = Supervisor::new(&state);
        (sup.running("etcd") && !sup.running("kube-apiserver")).then_some(Self { state, record })
    }

    /// Brings the lab up with `nodes` node namespaces, building the tools
    /// first if needed. A lab already up with as many nodes is reused; debris
    /// of a crashed lab is removed first.
    pub async fn up(nodes: u8) -> Result<Self> {
        Self::up_with(nodes, true).await
    }

    /// Like [`Lab::up`], with strictARP on or off in the emulated IPVS mode
    /// (a lab already up keeps its setting: use `cargo lab strict-arp`).
    pub async fn up_with(nodes: u8, strict_arp: bool) -> Result<Self> {
        check_host()?;
        if !(1..=lan::MAX_NODES).contains(&nodes) {
            bail!("--nodes must be between 1 and {}", lan::MAX_NODES);
        }
        let _lock = exclusive()?;
        if let Some(lab) = Self::without_apiserver() {
            // Start it again rather than rebuilding a lab that otherwise runs.
            lab.control_plane()
                .start_apiserver(&Supervisor::new(&lab.state))?;
        }
        if let Some(lab) = Self::current() {
            if lab.record.nodes != nodes {
                bail!(
                    "the lab is up with {} nodes: run `cargo lab down` first",
                    lab.record.nodes
                );
            }
            lab.ensure_workloads_locked().await?;
            return Ok(lab);
        }
        remove_everything()?;
        let tools = tools::ensure_built()?;
        let state = state_dir();
        std::fs::create_dir_all(&state)
            .with_context(|| format!("cannot create {}", state.display()))?;
        let hosts = lan::hosts(nodes);
        lan::create(&hosts)?;
        let cp = ControlPlane::new(&state, tools.clone());
        let sup = Supervisor::new(&state);
        cp.start(&sup)?;
        let client = nodes::client(&cp.admin_kubeconfig()).await?;
        let node_hosts: Vec<&Host> = hosts.iter().filter(|h| h.name != "client").collect();
        nodes::register(&client, &node_hosts).await?;
        let record = LabRecord {
            nodes,
            tools: tools.dir().to_owned(),
            strict_arp,
        };
        let json = serde_json::to_vec_pretty(&record).context("cannot encode the lab record")?;
        std::fs::write(record_path(&state), json).context("cannot write the lab record")?;
        let lab = Self { state, record };
        lab.start_workloads(&client).await?;
        Ok(lab)
    }

    /// Starts what runs workloads and carries Service traffic, if a lab
    /// brought up by an older `up` lacks it: pod routes, kube-proxy and the
    /// node agents, and the emulated IPVS mode.
    pub async fn ensure_workloads(&self) -> Result<()> {
        let _lock = exclusive()?;
        self.ensure_workloads_locked().await
    }

    async fn ensure_workloads_locked(&self) -> Result<()> {
        let sup = Supervisor::new(&self.state);
        let all_running = self.nodes().iter().all(|n| {
            sup.running(&format!("agent-{}", n.name))
                && sup.running(&format!("kube-proxy-{}", n.name))
        });
        if !all_running {
            self.start_workloads(&self.client().await?).await?;
        }
        Ok(())
    }

    async fn start_workloads(&self, client: &kube::Client) -> Result<()> {
        let nodes = self.nodes();
        podnet::route_between_nodes(&nodes)?;
        ipvs::switch(client, &nodes, self.record.strict_arp).await?;
        let sup = Supervisor::new(&self.state);
        let kubeconfig = self.control_plane().kubeconfig_of(&CLIENTS[3]);
        let lab_binary = install_lab_binary(&self.state)?;
        for node in &nodes {
            let index = podnet::index_of(node)?;
            if !sup.running(&format!("kube-proxy-{}", node.name)) {
                let mode = kube_proxy::mode(node);
                sup.start(&kube_proxy::daemon(
                    &self.tools().path("kube-proxy"),
                    &kubeconfig,
                    node,
                    mode,
                ))?;
            }
            if !sup.running(&format!("agent-{}", node.name)) {
                sup.start(&agent::daemon(&self.state, &lab_binary, index))?;
            }
        }
        Ok(())
    }

    /// Switches strictARP of the emulated IPVS mode on a running lab.
    pub async fn set_strict_arp(&mut self, on: bool) -> Result<()> {
        ipvs::switch(&self.client().await?, &self.nodes(), on).await?;
        self.record.strict_arp = on;
        let json =
            serde_json::to_vec_pretty(&self.record).context("cannot encode the lab record")?;
        std::fs::write(record_path(&self.state), json).context("cannot write the lab record")
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.control_plane().admin_kubeconfig()
    }

    /// The control plane's files.
    pub fn control_plane(&self) -> ControlPlane {
        ControlPlane::new(&self.state, self.tools())
    }

    /// The tools the lab runs.
    pub fn tools(&self) -> Tools {
        Tools::at(&self.record.tools)
    }

    /// The node hosts.
    pub fn nodes(&self) -> Vec<Host> {
        (1..=self.record.nodes).map(Host::node).collect()
    }

    /// An admin client.
    pub async fn client(&self) -> Result<kube::Client> {
        nodes::client(&self.kubeconfig()).await
    }

    /// Stops the API server (the process, not just its traffic: connections
    /// are refused) until the returned guard drops or is
    /// [restarted](ApiServerStopped::restart). Everything else keeps running.
    /// Meanwhile the guard holds the lab's lock, so that an `up` elsewhere,
    /// which sees no API server, waits instead of replacing the lab.
    pub fn stop_apiserver(&self) -> Result<ApiServerStopped> {
        let lock = exclusive()?;
        // Built before stopping, so that even a failed stop is undone.
        let mut stopped = ApiServerStopped {
            lab: self.clone(),
            ran: None,
            restarted: false,
            _lock: lock,
        };
        stopped.ran = self
            .control_plane()
            .stop_apiserver(&Supervisor::new(&self.state))?;
        Ok(stopped)
    }
}

/// The lab's API server, stopped by [`Lab::stop_apiserver`]; started again
/// with the arguments it had (and awaited until `/readyz` is OK) when
/// dropped, also when a test fails.
#[derive(Debug)]
pub struct ApiServerStopped {
    lab: Lab,
    /// How it ran before the stop.
    ran: Option<process::Daemon>,
    restarted: bool,
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl ApiServerStopped {
    /// Starts the API server again and waits until it is ready.
    pub fn restart(mut self) -> Result<()> {
        self.restarted = true;
        self.start()
    }

    fn start(&self) -> Result<()> {
        let cp = self.lab.control_plane();
        let sup = Supervisor::new(&self.lab.state);
        if sup.running("kube-apiserver") {
            // The stop failed before stopping anything.
            return Ok(());
        }
        match &self.ran {
            Some(daemon) => cp.restart_apiserver(&sup, daemon),
            None => cp.start_apiserver(&sup),
        }
    }
}

impl Drop for ApiServerStopped {
    fn drop(&mut self) {
        if self.restarted {
            return;
        }
        if let Err(e) = self.start() {
            eprintln!("cannot start the lab's API server again: {e:#} (run `cargo lab up`)");
        }
    }
}

fn read_record(state: &Path) -> Option<LabRecord> {
    std::fs::read(record_path(state))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Removes everything the lab created: its processes (by pid file, then any
/// process of the lab's tools still using its state), the processes left in
/// its namespaces, the namespaces, the bridge and the state directory.
/// Idempotent, and works after a crash.
pub fn down() -> Result<()> {
    check_host()?;
    let _lock = exclusive()?;
    remove_everything()
}

fn remove_everything() -> Result<()> {
    let state = state_dir();
    let tools_root = tools::cache_dir().join("tools");
    let marker = state.display().to_string();
    let owned = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
    };
    Supervisor::new(&state).stop_all(owned)?;
    for pid in process::find(&tools_root, &marker) {
        process::stop(pid);
    }
    for ns in lan::existing_netns()? {
        let pids = command::run("ip", &["netns", "pids", &ns]).unwrap_or_default();
        for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            process::stop(pid);
        }
    }
    podnet::destroy_pod_netns(None)?;
    // The shapes topology's namespaces, bridges and uplink, if a test left them.
    topology::destroy()?;
    lan::destroy()?;
    if state.exists() {
        std::fs::remove_dir_all(&state)
            .with_context(|| format!("cannot remove {}", state.display()))?;
    }
    Ok(())
}

/// A human-readable report of what is running and which addresses exist.
pub fn status() -> Result<String> {
    use std::fmt::Write as _;
    let state = state_dir();
    let mut out = String::new();
    let lab = Lab::current();
    match &lab {
        Some(l) => writeln!(
            out,
            "lab: up, {} nodes, state in {}",
            l.record.nodes,
            state.display()
        ),
        None => writeln!(out, "lab: down"),
    }
    .context("formatting")?;
    let _ = writeln!(
        out,
        "tools: {}",
        if tools::built() { "built" } else { "not built" }
    );
    let daemons = Supervisor::new(&state).status();
    if !daemons.is_empty() {
        let _ = writeln!(out, "\nprocesses:");
        for d in daemons {
            let pid = d.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
            let state = if d.running { "running" } else { "STOPPED" };
            let _ = writeln!(
                out,
                "  {:<26} pid {:<8} {:<8} log {}",
                d.name,
                pid,
                state,
                d.log.display()
            );
        }
    }
    let mut netns = lan::existing_netns()?;
    netns.sort_by_key(|n| (n.len(), n.clone()));
    if !netns.is_empty() {
        let _ = writeln!(
            out,
            "\nLAN ({} {}/{}, {}/{}):",
            lan::BRIDGE,
            lan::GATEWAY_V4,
            lan::PREFIX_V4,
            lan::GATEWAY_V6,
            lan::PREFIX_V6
        );
        for ns in netns {
            let addrs = command::run("ip", &["-n", &ns, "-br", "addr", "show", lan::INNER_IFACE])
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:<12} {}",
                ns,
                addrs
                    .split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }
    if let Some(l) = lab {
        let kubectl = l.tools().path("kubectl");
        let nodes = command::run(
            &kubectl.to_string_lossy(),
            &[
                "--kubeconfig",
                &l.kubeconfig().to_string_lossy(),
                "get",
                "nodes",
                "-o",
                "wide",
            ],
        )
        .unwrap_or_else(|e| format!("{e:#}\n"));
        let _ = write!(out, "\nnodes:\n{nodes}");
        let _ = writeln!(
            out,
            "\nAPI server: {} (kubeconfig {})",
            control_plane::server_url(),
            l.kubeconfig().display()
        );
    }
    Ok(out)
}

/// Copies the `lab` binary (which also runs the node agents and the HTTP
/// stand-in) into the state directory, so rebuilding it does not touch the
/// running agents. Found next to the running executable (`cargo lab`) or one
/// level up (a test binary in `deps/`), else built.
fn install_lab_binary(state: &Path) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let candidates = [
        Some(exe.clone()).filter(|e| e.file_name().is_some_and(|n| n == "lab")),
        exe.parent().map(|d| d.join("lab")),
        exe.parent().and_then(Path::parent).map(|d| d.join("lab")),
    ];
    let source = match candidates.into_iter().flatten().find(|p| p.is_file()) {
        Some(p) => p,
        None => {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "-p", "ferrolb-e2e", "--bin", "lab"])
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
                .status()
                .context("cannot run cargo build")?;
            if !status.success() {
                bail!("cannot build the lab binary");
            }
            agent::target_dir().join("debug").join("lab")
        }
    };
    let dir = state.join("bin");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let target = dir.join("lab");
    let _ = std::fs::remove_file(&target);
    std::fs::copy(&source, &target)
        .with_context(|| format!("cannot copy {} to {}", source.display(), target.display()))?;
    Ok(target)
}
