//! Faults the fault lab injects, each a guard that undoes it when dropped
//! (also when a test fails): a process stopped (SIGSTOP, SIGCONT when
//! dropped), a process's CPU capped by a cgroup quota, nftables rules inside
//! a node's namespace dropping gossip, the node's peers or the API server,
//! and floods of ARP requests from the client. Links are cut from the root
//! namespace's side with [`crate::harness::CutLink`].

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::control_plane::APISERVER_PORT;
use crate::harness;
use crate::lan::{self, GATEWAY_V4, Host};

/// A process stopped with SIGSTOP (all its threads, as a starved or swapping
/// node would leave it); continued with SIGCONT when resumed or dropped.
#[derive(Debug)]
pub struct Stopped {
    pid: i32,
    resumed: bool,
}

impl Stopped {
    /// Stops `pid`.
    pub fn stop(pid: i32) -> Result<Self> {
        kill(Pid::from_raw(pid), Signal::SIGSTOP)
            .with_context(|| format!("cannot stop pid {pid}"))?;
        Ok(Self {
            pid,
            resumed: false,
        })
    }

    /// Continues it.
    pub fn resume(mut self) -> Result<()> {
        self.resumed = true;
        kill(Pid::from_raw(self.pid), Signal::SIGCONT)
            .with_context(|| format!("cannot continue pid {}", self.pid))
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.resumed {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGCONT);
        }
    }
}

/// A process confined to a share of one CPU by a CPU cgroup of its own
/// (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`); put back in its previous
/// cgroup and the cgroup removed when dropped.
#[derive(Debug)]
pub struct CpuQuota {
    pid: i32,
    group: PathBuf,
    previous: PathBuf,
}

/// Where the CPU controller is mounted and whether it is cgroup v2.
fn cpu_hierarchy() -> Result<(PathBuf, bool)> {
    let v2 = Path::new("/sys/fs/cgroup");
    if std::fs::read_to_string(v2.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
    {
        return Ok((v2.to_path_buf(), true));
    }
    let v1 = v2.join("cpu");
    if v1.join("cpu.cfs_quota_us").exists() {
        return Ok((v1, false));
    }
    bail!("no cgroup CPU controller on this host (neither cgroup v2 cpu nor v1 cpu)")
}

/// `pid`'s cgroup in the CPU hierarchy, relative to its mount.
fn cgroup_of(pid: i32, v2: bool) -> Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("cannot read /proc/{pid}/cgroup"))?;
    text.lines()
        .find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = if v2 {
                controllers.is_empty()
            } else {
                controllers.split(',').any(|c| c == "cpu")
            };
            matches.then(|| path.trim_start_matches('/').to_owned())
        })
        .with_context(|| format!("pid {pid} is in no CPU cgroup"))
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call, for cgroups and nftables tables.
fn unique(what: &str) -> String {
    format!(
        "ferrolb_e2e_{what}_{}_{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

impl CpuQuota {
    /// Confines `pid` (every thread) to `percent` of one CPU, enforced every
    /// `period`: it runs at most `period × percent / 100` per period.
    pub fn limit(pid: i32, percent: u32, period: Duration) -> Result<Self> {
        ensure!((1..=100).contains(&percent), "a CPU share is 1–100 %");
        let (root, v2) = cpu_hierarchy()?;
        let previous = root.join(cgroup_of(pid, v2)?);
        let group = root.join(unique("cpu"));
        std::fs::create_dir(&group)
            .with_context(|| format!("cannot create cgroup {}", group.display()))?;
        let quota = Self {
            pid,
            group,
            previous,
        };
        let period_us = period.as_micros().max(1000);
        let quota_us = (period_us * u128::from(percent) / 100).max(1000);
        let written = if v2 {
            std::fs::write(
                quota.group.join("cpu.max"),
                format!("{quota_us} {period_us}"),
            )
        } else {
            std::fs::write(quota.group.join("cpu.cfs_period_us"), period_us.to_string()).and_then(
                |()| std::fs::write(quota.group.join("cpu.cfs_quota_us"), quota_us.to_string()),
            )
        };
        written
            .with_context(|| format!("cannot set the CPU quota of {}", quota.group.display()))?;
        std::fs::write(quota.group.join("cgroup.procs"), pid.to_string())
            .with_context(|| format!("cannot move pid {pid} into {}", quota.group.display()))?;
        Ok(quota)
    }
}

impl Drop for CpuQuota {
    fn drop(&mut self) {
        let _ = std::fs::write(self.previous.join("cgroup.procs"), self.pid.to_string());
        let _ = std::fs::remove_dir(&self.group);
    }
}

/// Which way gossip is lost at a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The node hears nobody; others hear it.
    Inbound,
    /// Nobody hears the node; it hears others.
    Outbound,
    /// Both.
    Both,
}

/// An nftables table inside a node's namespace whose rules drop some of its
/// traffic; deleted when dropped.
#[derive(Debug)]
pub struct NodeFilter {
    host: Host,
    table: String,
}

impl NodeFilter {
    /// Drops the node's gossip (UDP to `port`) in `direction`.
    pub fn gossip_loss(node: &Host, port: u16, direction: Direction) -> Result<Self> {
        let rule = format!("udp dport {port} drop");
        let (input, output) = match direction {
            Direction::Inbound => (vec![rule], vec![]),
            Direction::Outbound => (vec![], vec![rule]),
            Direction::Both => (vec![rule.clone()], vec![rule]),
        };
        Self::install(node, "gossip", &input, &output)
    }

    /// Drops gossip (UDP to `port`) between the node and `peer` only, both ways.
    pub fn gossip_loss_between(node: &Host, peer: &Host, port: u16) -> Result<Self> {
        let input = vec![
            format!("ip saddr {} udp dport {port} drop", peer.ipv4),
            format!("ip6 saddr {} udp dport {port} drop", peer.ipv6),
        ];
        let output = vec![
            format!("ip daddr {} udp dport {port} drop", peer.ipv4),
            format!("ip6 daddr {} udp dport {port} drop", peer.ipv6),
        ];
        Self::install(node, "gossip_pair", &input, &output)
    }

    /// Drops all IP traffic between the node and `peers` (every other node);
    /// the client, the gateway and the API server stay reachable.
    pub fn cut_from_peers(node: &Host, peers: &[Host]) -> Result<Self> {
        ensure!(!peers.is_empty(), "no peers to cut {} from", node.name);
        let v4: Vec<String> = peers.iter().map(|p| p.ipv4.to_string()).collect();
        let v6: Vec<String> = peers.iter().map(|p| p.ipv6.to_string()).collect();
        let (v4, v6) = (v4.join(", "), v6.join(", "));
        let input = vec![
            format!("ip saddr {{ {v4} }} drop"),
            format!("ip6 saddr {{ {v6} }} drop"),
        ];
        let output = vec![
            format!("ip daddr {{ {v4} }} drop"),
            format!("ip6 daddr {{ {v6} }} drop"),
        ];
        Self::install(node, "peers", &input, &output)
    }

    /// Drops the node's traffic with the API server (its address and port),
    /// both ways; its peers and the client stay reachable.
    pub fn cut_from_api_server(node: &Host) -> Result<Self> {
        let input = vec![format!(
            "ip saddr {GATEWAY_V4} tcp sport {APISERVER_PORT} drop"
        )];
        let output = vec![format!(
            "ip daddr {GATEWAY_V4} tcp dport {APISERVER_PORT} drop"
        )];
        Self::install(node, "api", &input, &output)
    }

    /// A table with `input` and `output` rules (nftables syntax, `inet`
    /// family), ahead of every other filter.
    pub fn install(node: &Host, what: &str, input: &[String], output: &[String]) -> Result<Self> {
        let table = unique(what);
        let chain = |name: &str, hook: &str, rules: &[String]| {
            let mut body = format!("chain {name} {{ type filter hook {hook} priority -10; ");
            for rule in rules {
                body.push_str(rule);
                body.push_str("; ");
            }
            body.push('}');
            body
        };
        let script = format!(
            "table inet {table} {{ {}; {}; }}",
            chain("input", "input", input),
            chain("output", "output", output)
        );
        let out = harness::exec_in(node, "nft", &[&script])?;
        ensure!(
            out.status.success(),
            "nft in {}: {} ({script})",
            node.netns,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Self {
            host: node.clone(),
            table,
        })
    }
}

impl Drop for NodeFilter {
    fn drop(&mut self) {
        let _ = harness::exec_in(&self.host, "nft", &["delete", "table", "inet", &self.table]);
    }
}

/// Sends `count` broadcast ARP requests for `target` from `from`'s LAN
/// interface, one every `interval`, as the host `sender_ip`/`sender_mac`
/// (not `from`'s own address, so the checker tells them from its probes).
/// Blocks until they are sent; returns how long that took.
pub fn arp_flood(
    from: &Host,
    target: IpAddr,
    count: u32,
    interval: Duration,
    sender_ip: IpAddr,
    sender_mac: &str,
) -> Result<Duration> {
    let started = std::time::Instant::now();
    let out = harness::exec_in(
        from,
        "arping",
        &[
            "-q",
            "-c",
            &count.to_string(),
            "-W",
            &format!("{:.6}", interval.as_secs_f64()),
            "-S",
            &sender_ip.to_string(),
            "-s",
            sender_mac,
            "-i",
            lan::INNER_IFACE,
            &target.to_string(),
        ],
    )?;
    // arping exits 1 when nothing answered: the flood is sent all the same.
    ensure!(
        out.status.code().is_some_and(|c| c <= 1),
        "arping flood from {}: {}",
        from.netns,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid_nft_identifiers() {
        let (a, b) = (unique("gossip"), unique("gossip"));
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }

    #[test]
    fn finds_the_cpu_cgroup_of_this_process() {
        let pid = i32::try_from(std::process::id()).unwrap();
        if let Ok((_, v2)) = cpu_hierarchy() {
            assert!(cgroup_of(pid, v2).is_ok());
        }
    }
}
