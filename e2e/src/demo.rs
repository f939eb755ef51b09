//! `cargo lab demo`: FerroLB as a user meets it, in one command.
//!
//! Brings the lab up, builds FerroLB, installs the Helm chart (so the controller and the
//! speakers run as the chart's pods, with the chart's RBAC), creates a pool, an
//! L2Advertisement and a web Deployment exposed as a LoadBalancer Service, then checks
//! the result from the client namespace, outside the cluster: ping the external IP,
//! fetch a page and show which pod answered. Every step prints what it does.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::chart;
use crate::lab::{self, DEFAULT_NODES, Lab};
use crate::lan::Host;
use crate::tools;

/// The chart's release name.
pub const RELEASE: &str = "ferrolb";
/// The namespace the chart is installed in.
pub const RELEASE_NAMESPACE: &str = "ferrolb-system";
/// The namespace of the demo workload.
pub const DEMO_NAMESPACE: &str = "demo";
/// The demo pool: on the LAN's own subnet, so the client resolves the IPs with ARP and
/// neighbor discovery, as a laptop on a real LAN would.
const POOL_ADDRESSES: [&str; 2] = [
    "198.18.0.200-198.18.0.219",
    "2001:db8:18::200-2001:db8:18::21f",
];

/// What the demo found, for the summary.
#[derive(Debug)]
struct Outcome {
    ip: String,
    node: String,
    ping: String,
    page: String,
}

/// Runs the demo; fails with the step that went wrong.
pub async fn run() -> Result<()> {
    lab::check_host()?;
    let started = Instant::now();
    if !tools::built() {
        step(
            "Building Kubernetes, etcd and helm from source (first run only: about 16 minutes on 2 cores; progress below)",
        )?;
    } else {
        step("Checking the lab's tools (cached)")?;
    }
    tools::ensure_built()?;
    step("Building ferrolb-controller and ferrolb-speaker")?;
    build_ferrolb()?;
    step("Bringing the lab up: control plane, LAN, nodes, kube-proxy")?;
    let lab = match Lab::current() {
        Some(lab) => lab,
        None => Lab::up(DEFAULT_NODES).await?,
    };
    let demo = Demo { lab };
    step("Installing the FerroLB Helm chart (controller Deployment, speaker DaemonSet)")?;
    demo.helm_install()?;
    step("Creating an IPAddressPool and an L2Advertisement")?;
    demo.kubectl_apply(&pool_manifest())?;
    step("Creating a web Deployment (3 replicas) and exposing it as a LoadBalancer Service")?;
    demo.create_workload()?;
    step("Waiting for EXTERNAL-IP")?;
    let ip = demo.wait_for_external_ip(Duration::from_secs(60))?;
    detail(&format!("web got {ip}"))?;
    demo.kubectl_show(&["get", "svc", "web", "-n", DEMO_NAMESPACE, "-o", "wide"])?;
    let node = demo.wait_for_announcer(Duration::from_secs(30))?;
    detail(&format!("{ip} is announced by {node}"))?;
    step(&format!(
        "Pinging {ip} from the client namespace (outside the cluster)"
    ))?;
    let ping = demo.ping(&ip)?;
    detail(&ping)?;
    step(&format!("Fetching http://{ip}/ from the client"))?;
    let page = demo.curl(&ip)?;
    detail(&format!("answered by pod {page}"))?;
    let outcome = Outcome {
        ip,
        node,
        ping,
        page,
    };
    summary(&outcome, started.elapsed())
}

struct Demo {
    lab: Lab,
}

impl Demo {
    fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.lab.tools().path("kubectl"));
        cmd.arg("--kubeconfig").arg(self.lab.kubeconfig());
        cmd
    }

    fn helm_install(&self) -> Result<()> {
        // CRDs applied earlier with kubectl (the tests do) or left by another
        // release are taken over instead of failing the install.
        chart::adopt_crds(&self.lab, RELEASE, RELEASE_NAMESPACE)?;
        let chart = chart::dir().to_string_lossy().into_owned();
        let output = chart::helm(
            &self.lab,
            &[
                "upgrade",
                "--install",
                RELEASE,
                &chart,
                "--namespace",
                RELEASE_NAMESPACE,
                "--create-namespace",
                "--wait",
                "--timeout",
                "3m",
            ],
        )?;
        check("helm upgrade --install", &output)
    }

    fn kubectl_apply(&self, manifest: &str) -> Result<()> {
        let mut child = self
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run kubectl apply")?;
        child
            .stdin
            .take()
            .context("kubectl has no stdin")?
            .write_all(manifest.as_bytes())
            .context("cannot write the manifest to kubectl")?;
        let output = child.wait_with_output().context("kubectl apply failed")?;
        check("kubectl apply", &output)
    }

    fn kubectl_run(&self, args: &[&str]) -> Result<String> {
        let output = self
            .kubectl()
            .args(args)
            .output()
            .context("cannot run kubectl")?;
        check(&format!("kubectl {}", args.join(" ")), &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    fn kubectl_show(&self, args: &[&str]) -> Result<()> {
        let text = self.kubectl_run(args)?;
        for line in text.lines() {
            detail(line)?;
        }
        Ok(())
    }

    fn create_workload(&self) -> Result<()> {
        self.kubectl_apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {DEMO_NAMESPACE}\n"
        ))?;
        let exists = |kind: &str| {
            self.kubectl()
                .args(["get", kind, "web", "-n", DEMO_NAMESPACE])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !exists("deployment") {
            self.kubectl_run(&[
                "create",
                "deployment",
                "web",
                "--image=nginx",
                "--replicas=3",
                "--port=80",
                "-n",
                DEMO_NAMESPACE,
            ])?;
        }
        if !exists("service") {
            self.kubectl_run(&[
                "expose",
                "deployment",
                "web",
                "--type=LoadBalancer",
                "--port=80",
                "-n",
                DEMO_NAMESPACE,
            ])?;
        }
        self.kubectl_run(&[
            "rollout",
            "status",
            "deployment/web",
            "-n",
            DEMO_NAMESPACE,
            "--timeout=120s",
        ])?;
        Ok(())
    }

    fn wait_for_external_ip(&self, timeout: Duration) -> Result<String> {
        poll("the Service's EXTERNAL-IP", timeout, || {
            let ip = self.kubectl_run(&[
                "get",
                "svc",
                "web",
                "-n",
                DEMO_NAMESPACE,
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ])?;
            Ok((!ip.is_empty()).then_some(ip))
        })
    }

    fn wait_for_announcer(&self, timeout: Duration) -> Result<String> {
        poll(
            "a node to announce the IP (ServiceL2Status)",
            timeout,
            || {
                let node = self.kubectl_run(&[
                    "get",
                    "servicel2status",
                    "web",
                    "-n",
                    DEMO_NAMESPACE,
                    "-o",
                    "jsonpath={.status.node}",
                ]);
                Ok(node.ok().filter(|n| !n.is_empty()))
            },
        )
    }

    fn ping(&self, ip: &str) -> Result<String> {
        let output = in_client(&["ping", "-c", "3", "-i", "0.2", "-W", "2", ip])?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("no ping statistics")
            .to_owned();
        if !output.status.success() {
            bail!("ping {ip} from the client failed: {line}");
        }
        Ok(line)
    }

    fn curl(&self, ip: &str) -> Result<String> {
        let output = in_client(&["curl", "-sS", "--max-time", "5", &format!("http://{ip}/")])?;
        check(&format!("curl http://{ip}/"), &output)?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

fn build_ferrolb() -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "ferrolb-controller",
            "-p",
            "ferrolb-speaker",
        ])
        .current_dir(repo_root())
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building ferrolb-controller and ferrolb-speaker failed");
    }
    Ok(())
}

fn in_client(args: &[&str]) -> Result<Output> {
    let netns = Host::client().netns;
    Command::new("ip")
        .args(["netns", "exec", &netns])
        .args(args)
        .output()
        .with_context(|| format!("cannot run {} in {netns}", args.join(" ")))
}

fn pool_manifest() -> String {
    let addresses: String = POOL_ADDRESSES
        .iter()
        .map(|a| format!("    - {a}\n"))
        .collect();
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata:\n  name: demo\nspec:\n  addresses:\n{addresses}---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata:\n  name: demo\nspec:\n  ipAddressPools: [demo]\n"
    )
}

fn poll<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn check(what: &str, output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stderr).trim(),
        String::from_utf8_lossy(&output.stdout).trim()
    )
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn step(text: &str) -> Result<()> {
    writeln!(std::io::stdout(), "==> {text}").context("cannot write to stdout")
}

fn detail(text: &str) -> Result<()> {
    writeln!(std::io::stdout(), "    {text}").context("cannot write to stdout")
}

fn summary(outcome: &Outcome, took: Duration) -> Result<()> {
    let Outcome {
        ip,
        node,
        ping,
        page,
    } = outcome;
    let client = Host::client();
    let text = format!(
        "
FerroLB works: a LoadBalancer IP answered from outside the cluster ({:.0?}).

  what ran     kube-apiserver, kube-controller-manager, kube-scheduler, etcd, kube-proxy
               and {DEFAULT_NODES} nodes as network namespaces; FerroLB from its Helm chart
               (controller Deployment, speaker DaemonSet) in namespace {RELEASE_NAMESPACE}
  Service      {DEMO_NAMESPACE}/web, type LoadBalancer, 3 pods
  external IP  {ip}
  announced by {node} (gratuitous ARP, then answering ARP for it)
  ping         from the client ({client_ip}): {ping}
  curl         http://{ip}/ answered by pod {page}

Explore:
  cargo lab kubectl -- get svc,ipp,l2a -A
  cargo lab kubectl -- get servicel2statuses,speakerstatuses -A
  cargo lab exec client -- ping -c 3 {ip}
  cargo lab exec client -- curl -s http://{ip}/
  cargo lab exec client -- arping -c 3 {ip}
  cargo lab kubectl -- -n {RELEASE_NAMESPACE} get pods -o wide

Tear down:
  cargo lab down
",
        took,
        client_ip = client.ipv4,
    );
    writeln!(std::io::stdout(), "{text}").context("cannot write to stdout")
}
