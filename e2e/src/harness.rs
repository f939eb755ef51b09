//! The end-to-end test harness: one lab per test run shared by every test, a
//! Kubernetes namespace per test, waits with clear timeout messages, probes
//! from the client namespace (ping, arping with the MACs that answered),
//! processes in node namespaces, and cutting a node's link.
//!
//! Everything a test creates is removed when its guard drops, also when the
//! test fails; `cargo lab down` removes whatever an interrupted run left.
//!
//! Without root or built tools the tests skip (with a message), unless
//! `FERROLB_E2E` is set, as `cargo lab test` does: then they must run.

use std::fs::File;
use std::future::Future;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::OnceCell;

use crate::command;
use crate::lab::{self, DEFAULT_NODES, Lab};
use crate::lan::{self, Host};
use crate::process;
use crate::tools;

/// Set to make the end-to-end tests mandatory (no skipping).
pub const MANDATORY_ENV: &str = "FERROLB_E2E";

static LAB: OnceCell<Lab> = OnceCell::const_new();

/// The shared lab, brought up on first use (and left up for the next test and
/// the next run; `cargo lab test` takes it down at the end). `None` means the
/// test should return early: it cannot run here and is not mandatory.
pub async fn lab() -> Result<Option<&'static Lab>> {
    if std::env::var_os(MANDATORY_ENV).is_none() {
        if let Err(e) = lab::check_host() {
            eprintln!("skipping end-to-end test: {e:#} (set {MANDATORY_ENV}=1 to require it)");
            return Ok(None);
        }
        if !tools::built() && Lab::current().is_none() {
            eprintln!(
                "skipping end-to-end test: the lab tools are not built \
                 (run `cargo lab test`, or set {MANDATORY_ENV}=1 to build them)"
            );
            return Ok(None);
        }
    }
    let lab = LAB
        .get_or_try_init(|| async {
            match Lab::current() {
                Some(l) => {
                    l.ensure_workloads().await?;
                    Ok(l)
                }
                None => Lab::up(DEFAULT_NODES).await,
            }
        })
        .await
        .context("cannot bring the lab up for the end-to-end tests")?;
    Ok(Some(lab))
}

/// A Kubernetes namespace for one test, deleted when dropped.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<unique suffix>`.
    pub async fn create(lab: &Lab, client: &Client, prefix: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "e2e-{prefix}-{:x}{:x}",
            std::process::id() & 0xfff,
            nanos & 0xfffff
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "ferrolb.io/e2e": "true" } }
        }))
        .context("cannot build a Namespace")?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("cannot create namespace {name}"))?;
        Ok(Self {
            name,
            kubectl: lab.tools().path("kubectl"),
            kubeconfig: lab.kubeconfig(),
        })
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Synchronous and not waited for: drop runs in async tests and on panics.
        let _ = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls `check` until it yields `Some`, failing after `timeout` with a
/// message that says what was awaited and what was last seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_owned(),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a command in a lab namespace and returns its output.
pub fn exec_in(host: &Host, program: &str, args: &[&str]) -> Result<std::process::Output> {
    let mut all = vec!["netns", "exec", host.netns.as_str(), program];
    all.extend_from_slice(args);
    command::output("ip", &all)
}

/// Whether one ping from `from` to `to` gets an answer within two seconds.
pub fn ping(from: &Host, to: IpAddr) -> Result<bool> {
    let out = exec_in(from, "ping", &["-c", "1", "-W", "2", "-n", &to.to_string()])?;
    Ok(out.status.success())
}

/// ARP-requests `target` `count` times from `from` and returns the distinct
/// MAC addresses that answered (lowercase), in the order first seen.
pub fn arping(from: &Host, target: std::net::Ipv4Addr, count: u32) -> Result<Vec<String>> {
    let out = exec_in(
        from,
        "arping",
        &[
            "-c",
            &count.to_string(),
            "-w",
            &(count + 2).to_string(),
            "-i",
            lan::INNER_IFACE,
            &target.to_string(),
        ],
    )?;
    Ok(parse_arping(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `arping` output (Habets' "60 bytes from MAC (IP)" and iputils'
/// "Unicast reply from IP [MAC]") into the distinct answering MACs.
pub fn parse_arping(output: &str) -> Vec<String> {
    let mut macs: Vec<String> = Vec::new();
    for line in output.lines() {
        if !(line.contains("bytes from") || line.contains("reply from")) {
            continue;
        }
        let found = line
            .split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '(' || c == ')')
            .find(|t| is_mac(t));
        if let Some(mac) = found.map(str::to_lowercase)
            && !macs.contains(&mac)
        {
            macs.push(mac);
        }
    }
    macs
}

fn is_mac(token: &str) -> bool {
    let parts: Vec<&str> = token.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Reply round trips from `arping` output (Habets' `time=… usec|msec` and
/// iputils' `… ms` forms), in the order received.
pub fn arping_round_trips(output: &str) -> Vec<Duration> {
    let mut out = Vec::new();
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            let micros = if let Some(value) = word.strip_prefix("time=") {
                let Ok(value) = value.parse::<f64>() else {
                    continue;
                };
                match words.get(i + 1) {
                    Some(&"usec") => value,
                    Some(&"msec") => value * 1000.0,
                    _ => continue,
                }
            } else if let Some(value) = word.strip_suffix("ms")
                && line.contains("reply from")
                && let Ok(value) = value.parse::<f64>()
            {
                value * 1000.0
            } else {
                continue;
            };
            out.push(Duration::from_secs_f64(micros / 1e6));
        }
    }
    out
}

/// The `q` quantile (0 < q ≤ 1) of ascending `sorted` by nearest rank: the
/// smallest value with at least `q` of the values at or below it.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (sorted.len() as f64 * q).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or_default()
}

/// Sends UDP datagrams from `from`'s namespace to `to` at about `rate` per
/// second for `duration` (from a thread that enters the namespace); returns
/// how many were sent. Traffic for load tests: `to` must be a lab address.
pub fn udp_flood(
    from: &Host,
    to: std::net::SocketAddr,
    rate: u32,
    duration: Duration,
) -> Result<u64> {
    let path = format!("/var/run/netns/{}", from.netns);
    let worker = std::thread::spawn(move || -> Result<u64> {
        let ns = File::open(&path).with_context(|| format!("cannot open {path}"))?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter {path}"))?;
        let socket = std::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
            .context("cannot open a UDP socket")?;
        let per_ms = u64::from(rate / 1000);
        let start = Instant::now();
        let (mut sent, mut slot) = (0_u64, 0_u32);
        while start.elapsed() < duration {
            slot += 1;
            for _ in 0..per_ms {
                if socket.send_to(b"unrelated traffic", to).is_ok() {
                    sent += 1;
                }
            }
            let next = start + Duration::from_millis(u64::from(slot));
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        Ok(sent)
    });
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the traffic thread panicked"))?
}

/// CPU time (user + system, all threads) a process has used so far.
pub fn cpu_time(pid: i32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is field 3,
    // utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .context("malformed /proc/<pid>/stat")
    };
    let total = ticks(11)? + ticks(12)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100);
    Ok(Duration::from_secs_f64(total as f64 / hz as f64))
}

/// A process's resident memory now and at its peak (VmRSS, VmHWM), in MiB.
pub fn memory_mib(pid: i32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<f64> {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// A process running in a lab namespace; killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl NodeProcess {
    /// Starts `program args…` inside `host`'s namespace, output to a log file
    /// under the lab's state directory.
    pub fn start(lab: &Lab, host: &Host, program: &str, args: &[&str]) -> Result<Self> {
        let dir = lab.state.join("logs");
        std::fs::create_dir_all(&dir).context("cannot create the log directory")?;
        let log = dir.join(format!(
            "test-{}-{}-{}.log",
            host.name,
            program.rsplit('/').next().unwrap_or(program),
            std::process::id()
        ));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot duplicate a log file")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &host.netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {program} in {}", host.netns))?;
        Ok(Self { child, log })
    }

    /// Its pid.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops it gracefully (SIGTERM, SIGKILL after five seconds).
    pub fn stop(mut self) {
        process::stop(self.pid());
        let _ = self.child.wait();
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        process::kill_now(self.pid());
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            process::kill_now(self.pid());
            let _ = self.child.wait();
        }
    }
}

/// A node whose LAN link is cut; reconnected when dropped.
#[derive(Debug)]
pub struct CutLink {
    host: Host,
}

impl CutLink {
    /// Cuts `host`'s link to the bridge.
    pub fn cut(host: &Host) -> Result<Self> {
        lan::set_link(host, false)?;
        Ok(Self { host: host.clone() })
    }
}

impl Drop for CutLink {
    fn drop(&mut self) {
        let _ = lan::set_link(&self.host, true);
    }
}

/// One HTTP GET from `from` (curl, two-second timeout): the body, or `None`
/// when nothing answered.
pub fn curl(from: &Host, url: &str) -> Result<Option<String>> {
    let out = exec_in(from, "curl", &["-s", "-m", "2", "-g", url])?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// One HTTP GET from `from` to a pod's HTTP stand-in: the body (the pod's
/// name) and the client address the pod saw, or `None` when nothing answered.
pub fn curl_with_client(from: &Host, url: &str) -> Result<Option<(String, String)>> {
    let out = exec_in(from, "curl", &["-s", "-m", "2", "-g", "-i", url])?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let header = format!("{}:", crate::agent::server::CLIENT_HEADER.to_lowercase());
    let client = head
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .starts_with(&header)
                .then(|| l[header.len()..].trim().to_owned())
        })
        .unwrap_or_default();
    Ok(Some((body.trim().to_owned(), client)))
}

/// The pid of a container of a pod the lab's node agent runs, if it runs.
pub fn container_pid(lab: &Lab, namespace: &str, pod: &str, container: &str) -> Option<i32> {
    let dir = crate::agent::pod::pod_dir(&lab.state, namespace, pod);
    std::fs::read_to_string(dir.join(format!("{container}.pid")))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .filter(|p| process::alive(*p))
}

/// strictARP of the emulated IPVS mode switched for one test; the lab's
/// setting is restored when dropped.
#[derive(Debug)]
pub struct StrictArp {
    lab: Lab,
}

impl StrictArp {
    /// Switches strictARP on or off (node sysctls and the kube-proxy ConfigMap).
    pub async fn set(lab: &Lab, on: bool) -> Result<Self> {
        crate::ipvs::switch(&lab.client().await?, &lab.nodes(), on).await?;
        Ok(Self { lab: lab.clone() })
    }
}

impl Drop for StrictArp {
    fn drop(&mut self) {
        let on = self.lab.record.strict_arp;
        let _ = crate::ipvs::set_strict_arp(&self.lab.nodes(), on);
        let patch =
            serde_json::json!({ "data": { "config.conf": crate::ipvs::kube_proxy_config(on) } });
        let _ = Command::new(self.lab.tools().path("kubectl"))
            .arg("--kubeconfig")
            .arg(self.lab.kubeconfig())
            .args([
                "-n",
                "kube-system",
                "patch",
                "configmap",
                "kube-proxy",
                "--type=merge",
                "-p",
            ])
            .arg(patch.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The repository root (the workspace holding `e2e/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs the lab's kubectl with the lab's admin kubeconfig, feeding `input` on its
/// standard input; returns its standard output, or an error with its standard error.
pub fn kubectl(lab: &Lab, args: &[&str], input: Option<&str>) -> Result<String> {
    let mut child = Command::new(lab.tools().path("kubectl"))
        .arg("--kubeconfig")
        .arg(lab.kubeconfig())
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run kubectl")?;
    if let Some(input) = input {
        child
            .stdin
            .take()
            .context("kubectl has no stdin")?
            .write_all(input.as_bytes())
            .context("cannot write to kubectl")?;
    }
    let out = child.wait_with_output().context("kubectl failed")?;
    ensure!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_habets_arping() {
        let out = "ARPING 198.18.0.11\n\
            60 bytes from 0a:58:c6:12:00:0b (198.18.0.11): index=0 time=1.1 msec\n\
            60 bytes from 0A:58:C6:12:00:0C (198.18.0.11): index=1 time=1.2 msec\n\
            60 bytes from 0a:58:c6:12:00:0b (198.18.0.11): index=2 time=1.0 msec\n\
            \n--- 198.18.0.11 statistics ---\n3 packets transmitted, 3 packets received\n";
        assert_eq!(
            parse_arping(out),
            vec!["0a:58:c6:12:00:0b", "0a:58:c6:12:00:0c"]
        );
    }

    #[test]
    fn parses_iputils_arping() {
        let out = "ARPING 198.18.0.11 from 198.18.0.100 eth0\n\
            Unicast reply from 198.18.0.11 [0A:58:C6:12:00:0B]  0.611ms\n\
            Sent 1 probes (1 broadcast(s))\nReceived 1 response(s)\n";
        assert_eq!(parse_arping(out), vec!["0a:58:c6:12:00:0b"]);
    }

    #[test]
    fn reads_round_trips_of_both_arpings() {
        let habets = "60 bytes from 0a:58:c6:12:00:0b (198.18.0.11): index=0 time=93.2 usec\n\
            60 bytes from 0a:58:c6:12:00:0b (198.18.0.11): index=1 time=1.250 msec\n";
        let iputils = "Unicast reply from 198.18.0.11 [0A:58:C6:12:00:0B]  0.611ms\n";
        let micros = |o: &str| -> Vec<u128> {
            arping_round_trips(o)
                .iter()
                .map(Duration::as_micros)
                .collect()
        };
        assert_eq!(micros(habets), [93, 1250]);
        assert_eq!(micros(iputils), [611]);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let ms: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(quantile(&ms, 0.5), Duration::from_millis(10));
        assert_eq!(quantile(&ms, 0.99), Duration::from_millis(20));
        assert_eq!(quantile(&ms, 1.0), Duration::from_millis(20));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn reads_own_cpu_time_and_memory() {
        let pid = i32::try_from(std::process::id()).unwrap();
        assert!(cpu_time(pid).is_ok());
        let (rss, peak) = memory_mib(pid).unwrap();
        assert!(rss > 0.0 && peak >= rss);
    }

    #[test]
    fn no_answer_is_empty() {
        assert!(parse_arping("ARPING 198.18.0.99\nTimeout\n").is_empty());
    }
}
