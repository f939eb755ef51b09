//! End-to-end tests of `ferrolb-speaker` in the lab, from the client's point
//! of view: the built binary runs in every node namespace with a token of the
//! chart's speaker ServiceAccount, so with exactly the chart's RBAC, Services
//! get their status IPs through the API (so these tests
//! do not depend on the controller), and the client namespace asks with
//! `arping` who answers for each IP.
//!
//! Each test uses a load-balancer class, a pool, ports and IPs of its own, so
//! leftovers of other tests cannot interfere. They skip without root or built
//! tools unless `FERROLB_E2E` is set (as `cargo lab test` does).
//!
//! The failover benchmark is ignored by default:
//! `cargo test -p ferrolb-e2e --test speaker -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use ferrolb_e2e::checker::{self, Window};
use ferrolb_e2e::faults::NodeFilter;
use ferrolb_e2e::harness::kubectl;
use ferrolb_e2e::harness::{self, CutLink, NodeProcess, StrictArp, wait_for};
use ferrolb_e2e::lan::{self, Host};
use ferrolb_e2e::speakers::{
    NodeLabel, Setup, client_neighbor, dynamic, flush_client_neighbor, speaker_metric, vip,
    wait_for_ping_via, wait_for_quiet_owner, wait_for_single_mac,
};
use futures::StreamExt as _;
use kube::Client;
use serde_json::{Value, json};
use tokio::sync::Mutex;

mod common;
use common::expected_owner;

/// One speaker test at a time: they share the node namespaces.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// One answer (or its absence) per 10 ms ARP request, in order.
fn arping_sequence(output: &str) -> Vec<Option<String>> {
    output
        .lines()
        .filter_map(|line| {
            if line.starts_with("Timeout") {
                Some(None)
            } else if line.contains("bytes from") {
                Some(harness::parse_arping(line).into_iter().next())
            } else {
                None
            }
        })
        .collect()
}

/// The outage seen by a client sending an ARP request every 10 ms while
/// `disrupt` runs: from the last answer of `old` to the first of `new`.
/// Fails if anyone else answers after the disruption.
fn measure_takeover(
    client: &Host,
    ip: Ipv4Addr,
    old: &str,
    new: &str,
    disrupt: impl FnOnce() -> Result<()>,
) -> Result<Duration> {
    const INTERVAL_MS: u64 = 10;
    const OVERLAP_REQUESTS: usize = 10;
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &client.netns,
            "arping",
            "-i",
            lan::INNER_IFACE,
            "-W",
            "0.01",
            "-c",
            "400",
            &ip.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start arping")?;
    std::thread::sleep(Duration::from_millis(500));
    disrupt()?;
    let out = child.wait_with_output().context("arping failed")?;
    let seq = arping_sequence(&String::from_utf8_lossy(&out.stdout));
    let last_old = seq
        .iter()
        .rposition(|a| a.as_deref() == Some(old))
        .context("the old owner never answered")?;
    let first_new = seq
        .iter()
        .position(|a| a.as_deref() == Some(new))
        .with_context(|| format!("{new} never answered; answers: {:?}", summarize(&seq)))?;
    // A graceful leave releases the IPs shortly after the successor took
    // over, so no request falls into a gap: allow up to 100 ms of overlap
    // (the successor's gratuitous replies count as answers too), and nobody
    // but the new owner after it.
    let settled = (first_new + OVERLAP_REQUESTS).min(seq.len());
    if let Some(intruder) = seq[settled..].iter().flatten().find(|m| m.as_str() != new) {
        bail!(
            "{intruder} answered after the takeover: {:?}",
            summarize(&seq)
        );
    }
    let gap = first_new.saturating_sub(last_old) as u64;
    Ok(Duration::from_millis(gap * INTERVAL_MS))
}

/// Runs of equal answers, for failure messages.
fn summarize(seq: &[Option<String>]) -> Vec<(String, usize)> {
    let mut runs: Vec<(String, usize)> = Vec::new();
    for a in seq {
        let label = a.clone().unwrap_or_else(|| "timeout".to_owned());
        match runs.last_mut() {
            Some((l, n)) if *l == label => *n += 1,
            _ => runs.push((label, 1)),
        }
    }
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owner_per_ip_failover_handover_and_refusal() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut setup = Setup::new(
        lab,
        "spk",
        &["198.18.0.220-198.18.0.231"],
        (17946, 17473),
        true,
    )
    .await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let macs = setup.macs.clone();
    let mac_of = |node: &str| -> String {
        all.iter()
            .position(|n| *n == node)
            .map(|i| macs[i].clone())
            .unwrap_or_default()
    };

    // Ten Services, one IP each, endpoints ready.
    let ips: Vec<Ipv4Addr> = (220..230).map(vip).collect();
    for (i, ip) in ips.iter().enumerate() {
        setup
            .service(&format!("web-{i}"), *ip, &names[0], true)
            .await?;
    }
    let mut owners = std::collections::BTreeMap::new();
    for (i, ip) in ips.iter().enumerate() {
        let owner = expected_owner([*ip], &all);
        wait_for_single_mac(&client_host, *ip, &mac_of(&owner), Duration::from_secs(20)).await?;
        let name = format!("web-{i}");
        let status = wait_for(
            &format!("ServiceL2Status {name} to name {owner}"),
            Duration::from_secs(10),
            || async {
                let s = setup.l2_status(&name).await?;
                Ok(s.filter(|s| s["node"] == owner.as_str()))
            },
        )
        .await?;
        ensure!(status["ips"] == json!([ip.to_string()]), "status {status}");
        *owners.entry(owner).or_insert(0) += 1;
    }
    eprintln!("owners of 10 IPs over {} nodes: {owners:?}", all.len());
    ensure!(owners.len() >= 2, "owners do not spread: {owners:?}");

    // The lab binds LoadBalancer IPs to kube-ipvs0 on every node, as IPVS
    // kube-proxy does, so the owner answers ping.
    wait_for(
        &format!("{} to answer ping", ips[0]),
        Duration::from_secs(20),
        || async { Ok(harness::ping(&client_host, IpAddr::V4(ips[0]))?.then_some(())) },
    )
    .await?;

    // The exclude label moves the IP to the runner-up, which keeps it when
    // the label goes: ownership moves only when the owner stops being a
    // candidate.
    let ip = ips[2];
    let owner_now = expected_owner([ip], &all);
    let rest: Vec<&str> = all.iter().copied().filter(|n| *n != owner_now).collect();
    let label = NodeLabel::set(
        lab,
        &owner_now,
        "node.kubernetes.io/exclude-from-external-load-balancers",
    )?;
    let runner_up = expected_owner([ip], &rest);
    wait_for_single_mac(
        &client_host,
        ip,
        &mac_of(&runner_up),
        Duration::from_secs(20),
    )
    .await?;
    drop(label);
    stays_with(&client_host, ip, &mac_of(&runner_up)).await?;

    // externalTrafficPolicy: Local: the node with the endpoint announces,
    // even where the hash alone would pick another.
    let local_ip = vip(231);
    let natural = expected_owner([local_ip], &all);
    let others: Vec<&str> = all.iter().copied().filter(|n| *n != natural).collect();
    let endpoint_node = expected_owner([local_ip], &others);
    setup
        .service_with_policy("local", local_ip, &endpoint_node, true, "Local")
        .await?;
    wait_for_single_mac(
        &client_host,
        local_ip,
        &mac_of(&endpoint_node),
        Duration::from_secs(20),
    )
    .await?;

    // SIGKILL the owner of the first IP and cut its link: the runner-up
    // takes over, and nobody else answers.
    let ip = ips[0];
    let old = expected_owner([ip], &all);
    let rest: Vec<&str> = all.iter().copied().filter(|n| *n != old).collect();
    let new = expected_owner([ip], &rest);
    let index = setup.node_index(&old).context("owner is not a lab node")?;
    let mut cut = None;
    let outage = measure_takeover(&client_host, ip, &mac_of(&old), &mac_of(&new), || {
        setup.kill(index);
        cut = Some(CutLink::cut(&setup.nodes[index])?);
        Ok(())
    })?;
    eprintln!("crash of {old}: {new} answers for {ip} after {outage:?}");
    ensure!(outage < Duration::from_secs(2), "failover took {outage:?}");
    // The crashed node comes back and takes nothing back.
    drop(cut);
    setup.start(index)?;
    stays_with(&client_host, ip, &mac_of(&new)).await?;

    // SIGTERM: a graceful leave hands over at once. The owner of the
    // second IP is whoever holds it now (the crash may have moved it).
    let ip = ips[1];
    let old = setup
        .l2_status("web-1")
        .await?
        .and_then(|s| s["node"].as_str().map(str::to_owned))
        .context("web-1 has no owner")?;
    let rest: Vec<&str> = all.iter().copied().filter(|n| *n != old).collect();
    let new = expected_owner([ip], &rest);
    let index = setup.node_index(&old).context("owner is not a lab node")?;
    let outage = measure_takeover(&client_host, ip, &mac_of(&old), &mac_of(&new), || {
        setup.terminate(index);
        Ok(())
    })?;
    eprintln!("SIGTERM of {old}: {new} answers for {ip} after {outage:?}");
    ensure!(
        outage < Duration::from_secs(1),
        "graceful handover took {outage:?}"
    );
    setup.start(index)?;
    stays_with(&client_host, ip, &mac_of(&new)).await?;

    // No ready endpoint: nobody answers, and the status says why.
    let idle = vip(230);
    setup.service("idle", idle, &names[0], false).await?;
    let status = wait_for(
        "ServiceL2Status idle to say NoReadyEndpoints",
        Duration::from_secs(10),
        || async {
            let s = setup.l2_status("idle").await?;
            Ok(s.filter(|s| s["reason"] == "NoReadyEndpoints"))
        },
    )
    .await?;
    ensure!(status.get("node").is_none(), "status {status}");
    let answers = harness::arping(&client_host, idle, 3)?;
    ensure!(answers.is_empty(), "{idle} is answered by {answers:?}");
    Ok(())
}

/// Checks that `mac` alone answers for `ip` now and still does 3 s later
/// (a speaker that came back, or a candidate that returned, took nothing).
async fn stays_with(client: &Host, ip: Ipv4Addr, mac: &str) -> Result<()> {
    wait_for_single_mac(client, ip, mac, Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answers = harness::arping(client, ip, 3)?;
    ensure!(
        answers.iter().all(|a| a == mac) && !answers.is_empty(),
        "{ip} moved away from {mac}: answered by {answers:?}"
    );
    Ok(())
}

/// With the API server unreachable, speakers keep announcing what they own,
/// and a node failure still fails over: membership does not need the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_outage_keeps_announcing_and_failing_over() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut setup = Setup::new(
        lab,
        "spkapi",
        &["198.18.0.236-198.18.0.239"],
        (17948, 17475),
        true,
    )
    .await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let macs = setup.macs.clone();
    let ip = vip(236);
    setup.service("web", ip, &names[0], true).await?;
    let old = expected_owner([ip], &all);
    let index = setup.node_index(&old).context("owner is not a lab node")?;
    wait_for_single_mac(&client_host, ip, &macs[index], Duration::from_secs(20)).await?;

    // nftables in every node namespace drops its traffic with the API
    // server, which breaks the watches of the speakers there.
    let outage = setup
        .nodes
        .iter()
        .map(NodeFilter::cut_from_api_server)
        .collect::<Result<Vec<_>>>()?;
    // Long enough for every watch to notice and start retrying.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let answers = harness::arping(&client_host, ip, 3)?;
    ensure!(
        answers == [macs[index].clone()],
        "during the API outage {ip} is answered by {answers:?}"
    );

    let rest: Vec<&str> = all.iter().copied().filter(|n| *n != old).collect();
    let new = expected_owner([ip], &rest);
    let new_index = setup
        .node_index(&new)
        .context("successor is not a lab node")?;
    let mut cut = None;
    let took = measure_takeover(&client_host, ip, &macs[index], &macs[new_index], || {
        setup.kill(index);
        cut = Some(CutLink::cut(&setup.nodes[index])?);
        Ok(())
    })?;
    eprintln!("during an API outage, crash of {old}: {new} answers for {ip} after {took:?}");
    drop(outage);
    drop(cut);
    Ok(())
}

/// Failover figures for docs/benchmarks.md: `trials` crashes (SIGKILL and
/// link cut) and `trials` graceful leaves of the owner, outage seen by a
/// client sending an ARP request every 10 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn failover_benchmark() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let trials: usize = std::env::var("FERROLB_FAILOVER_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    let mut setup =
        // The advertisement covers every pool: the figures must not depend on
        // the pool annotation, which a controller of another test running in
        // the same lab may rewrite.
        Setup::new(
            lab,
            "spkbench",
            &["198.18.0.232-198.18.0.235"],
            (17947, 17474),
            false,
        )
        .await?;
    let names = setup.names.clone();
    let macs = setup.macs.clone();
    let ip = vip(232);
    let vip_ip = IpAddr::V4(ip);
    setup.service("bench", ip, &names[0], true).await?;
    // The client pings every 10 ms (`ping -D`): the outage is the longest
    // wall-clock gap between two replies, not lost replies × interval (in
    // this lab `ping -i 0.01` really sends about every 16 ms).
    let observer = setup.observe(&[vip_ip])?;
    let mut results = Vec::new();
    // What the speakers report of the same takeovers, summed over the nodes that
    // stay up: one `ferrolb_speaker_takeover_seconds` observation per trial.
    let takeover = |setup: &Setup, except: usize| -> Result<(f64, f64)> {
        let mut total = (0.0, 0.0);
        for (i, host) in setup.nodes.iter().enumerate() {
            if i == except {
                continue;
            }
            total.0 += speaker_metric(
                host,
                setup.metrics_port,
                "ferrolb_speaker_takeover_seconds_sum",
            )?;
            total.1 += speaker_metric(
                host,
                setup.metrics_port,
                "ferrolb_speaker_takeover_seconds_count",
            )?;
        }
        Ok(total)
    };
    for graceful in [false, true] {
        let mut outages = Vec::new();
        let mut takeovers = Vec::new();
        for trial in 0..trials {
            // Whoever owns the IP now is the victim: ownership is sticky, so
            // after each trial the successor keeps it.
            let owner = wait_for(
                "ServiceL2Status bench to name an owner",
                Duration::from_secs(20),
                || async {
                    Ok(setup
                        .l2_status("bench")
                        .await?
                        .and_then(|s| s["node"].as_str().map(str::to_owned)))
                },
            )
            .await?;
            let index = setup
                .node_index(&owner)
                .context("owner is not a lab node")?;
            wait_for_quiet_owner(&observer, vip_ip, &macs[index], Duration::from_secs(20)).await?;
            let before = takeover(&setup, index)?;
            let start = checker::now();
            let mut cut = None;
            if graceful {
                setup.terminate(index);
            } else {
                setup.kill(index);
                cut = Some(CutLink::cut(&setup.nodes[index])?);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            let report = observer.report(
                vip_ip,
                Window {
                    start,
                    end: start,
                    until: checker::now(),
                },
            );
            eprintln!(
                "{} trial {trial}: {}",
                if graceful { "SIGTERM" } else { "crash" },
                report.describe(&names_by_mac(&names, &macs))
            );
            ensure!(
                report.settle.last_answers.len() == 1
                    && !report.settle.last_answers.contains(&macs[index]),
                "after the {} of {owner}, {ip} is answered by {:?}",
                if graceful { "SIGTERM" } else { "crash" },
                report.settle.last_answers
            );
            outages.push(report.longest_outage);
            let after = takeover(&setup, index)?;
            // One observation when the successor's election loop saw the owner
            // leave; none when the successor was still in its join window (it
            // then never saw the owner as a peer) and elected without it.
            ensure!(
                after.1 - before.1 <= 1.0,
                "the speakers observed {} takeovers of {ip} after the {} of {owner}",
                after.1 - before.1,
                if graceful { "SIGTERM" } else { "crash" },
            );
            if after.1 - before.1 == 1.0 {
                takeovers.push(Duration::from_secs_f64(after.0 - before.0));
            }
            drop(cut);
            setup.start(index)?;
        }
        outages.sort();
        takeovers.sort();
        let line = format!(
            "{}: {} trials, outage seen by a 10 ms pinger: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; \
             ferrolb_speaker_takeover_seconds ({} observed): p50 {:?}, p99 {:?}, max {:?}",
            if graceful {
                "graceful (SIGTERM)"
            } else {
                "crash (SIGKILL + link cut)"
            },
            outages.len(),
            harness::quantile(&outages, 0.5),
            harness::quantile(&outages, 0.9),
            harness::quantile(&outages, 0.99),
            outages.last().copied().unwrap_or_default(),
            takeovers.len(),
            harness::quantile(&takeovers, 0.5),
            harness::quantile(&takeovers, 0.99),
            takeovers.last().copied().unwrap_or_default(),
        );
        eprintln!("{line}");
        results.push(line);
    }
    eprintln!("{}", results.join("\n"));
    Ok(())
}

/// Node names by MAC, for reports.
fn names_by_mac(names: &[String], macs: &[String]) -> BTreeMap<String, String> {
    macs.iter().cloned().zip(names.iter().cloned()).collect()
}

/// Puts each node's own `eth0` ARP sysctls back to the kernel default (0) when
/// dropped, undoing what `--enforce-strict-arp` set.
struct ResetInterfaceSysctls(Vec<Host>);

impl Drop for ResetInterfaceSysctls {
    fn drop(&mut self) {
        for host in &self.0 {
            let _ = Command::new("ip")
                .args(["netns", "exec", &host.netns, "sysctl", "-q", "-w"])
                .args([
                    "net.ipv4.conf.eth0.arp_ignore=0",
                    "net.ipv4.conf.eth0.arp_announce=0",
                ])
                .status();
        }
    }
}

/// The `StrictARP` condition status in a node's SpeakerStatus, if written.
async fn strict_arp_status(client: &Client, node: &str) -> Result<Option<String>> {
    let status = dynamic(client, "SpeakerStatus", None)
        .get_opt(node)
        .await?
        .and_then(|o| o.data["status"]["conditions"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .find(|c| c["type"] == "StrictARP")
        .and_then(|c| c["status"].as_str().map(str::to_owned));
    Ok(status)
}

/// SPEC §5 from the client's point of view. With IPVS kube-proxy emulated (every
/// Service IP on every node's kube-ipvs0) and strictARP off, several nodes' kernels
/// answer ARP for the IP and every speaker reports `StrictARP: False`. With
/// `--enforce-strict-arp` the speakers make their interfaces strict: exactly the
/// elected owner's MAC answers, the condition turns True, and ping works.
#[tokio::test]
async fn strict_arp_off_is_reported_and_enforcement_leaves_one_owner() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut setup = Setup::new(
        lab,
        "spk-sarp",
        &["198.18.0.248-198.18.0.251"],
        (17949, 17476),
        true,
    )
    .await?;
    let _reset = ResetInterfaceSysctls(setup.nodes.clone());
    let _off = StrictArp::set(lab, false).await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let ip = vip(248);
    setup.service("web", ip, &names[0], true).await?;

    // Broken: the kernels of several nodes answer for the IP.
    let macs = wait_for(
        &format!("several MACs to answer ARP for {ip} with strictARP off"),
        Duration::from_secs(30),
        || async {
            let mut macs = harness::arping(&client_host, ip, 3)?;
            macs.sort();
            macs.dedup();
            Ok((macs.len() >= 2).then_some(macs))
        },
    )
    .await?;
    eprintln!(
        "strictARP off: {} MACs answer for {ip}: {macs:?}",
        macs.len()
    );
    for node in &all {
        wait_for(
            &format!("{node}'s SpeakerStatus to report StrictARP False"),
            Duration::from_secs(30),
            || async {
                let status = strict_arp_status(&setup.client, node).await?;
                Ok((status.as_deref() == Some("False")).then_some(()))
            },
        )
        .await?;
    }

    // The metric and a Warning Event on the Node say the same.
    for (host, node) in setup.nodes.iter().zip(&all) {
        let url = format!("http://{}:{}/metrics", host.ipv4, setup.metrics_port);
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", &url])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = format!("ferrolb_speaker_strict_arp_ok{{node=\"{node}\"}} 0");
        ensure!(text.contains(&line), "{url} lacks {line:?}");
    }
    let events = kubectl(
        lab,
        &[
            "get",
            "events.events.k8s.io",
            "-A",
            "--field-selector",
            "reason=StrictARP,type=Warning",
            "-o",
            "jsonpath={.items[*].regarding.name}",
        ],
        None,
    )?;
    for node in &all {
        ensure!(
            events.split_whitespace().any(|n| n == *node),
            "no StrictARP Warning Event for {node}: {events:?}"
        );
    }

    // Fixed by enforcement: one MAC, the owner's that the status names
    // (restarting every speaker may move the IP: each comes back as a new
    // incarnation).
    setup.enforce_strict_arp = true;
    for i in 0..setup.nodes.len() {
        setup.kill(i);
        setup.start(i)?;
    }
    let macs = setup.macs.clone();
    let names = setup.names.clone();
    wait_for(
        &format!("one MAC, the one ServiceL2Status names, to answer for {ip}"),
        Duration::from_secs(30),
        || async {
            let owner = setup
                .l2_status("web")
                .await?
                .and_then(|s| s["node"].as_str().map(str::to_owned));
            let Some(i) = owner.and_then(|o| names.iter().position(|n| *n == o)) else {
                return Ok(None);
            };
            let answers = harness::arping(&client_host, ip, 3)?;
            Ok((answers == [macs[i].clone()]).then_some(()))
        },
    )
    .await?;
    ensure!(
        harness::ping(&client_host, IpAddr::V4(ip))?,
        "ping {ip} failed with enforcement on"
    );
    for node in &all {
        wait_for(
            &format!("{node}'s SpeakerStatus to report StrictARP True"),
            Duration::from_secs(30),
            || async {
                let status = strict_arp_status(&setup.client, node).await?;
                Ok((status.as_deref() == Some("True")).then_some(()))
            },
        )
        .await?;
    }
    Ok(())
}

/// Whether `ip` is bound to `kube-ipvs0` in `node`'s namespace.
fn on_kube_ipvs0(node: &Host, ip: IpAddr) -> Result<bool> {
    let out = harness::exec_in(
        node,
        "ip",
        &["-j", "addr", "show", "dev", ferrolb_e2e::ipvs::DEVICE],
    )?;
    let links: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    Ok(links[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|a| a["local"].as_str().and_then(|l| l.parse().ok()) == Some(ip)))
}

/// IPv6 end to end: the lab binds IPv6 LoadBalancer IPs to every node's
/// kube-ipvs0 as IPVS kube-proxy does, the elected owner answers neighbor
/// solicitations, so `ping` from the client reaches the VIP through the
/// owner's MAC; a dual-stack Service's two IPs are announced by one node;
/// and when the owner crashes, its successor's unsolicited NAs move the
/// client's neighbor entry and ping resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_vip_answers_ping_through_its_owner_and_fails_over() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut setup = Setup::new(
        lab,
        "spk-v6",
        &[
            "198.18.0.180-198.18.0.183",
            "2001:db8:18::f0-2001:db8:18::f7",
        ],
        (17950, 17477),
        true,
    )
    .await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    ensure!(all.len() >= 2, "failover needs at least two nodes");
    let macs = setup.macs.clone();
    let mac_of = |node: &str| -> String {
        all.iter()
            .position(|n| *n == node)
            .map(|i| macs[i].clone())
            .unwrap_or_default()
    };

    // A single-stack IPv6 Service and a dual-stack one.
    let v6: Ipv6Addr = "2001:db8:18::f0".parse()?;
    let dual_v4 = vip(180);
    let dual_v6: Ipv6Addr = "2001:db8:18::f1".parse()?;
    let dual = [IpAddr::V4(dual_v4), IpAddr::V6(dual_v6)];
    for ip in [IpAddr::V6(v6), IpAddr::V6(dual_v6), IpAddr::V4(dual_v4)] {
        flush_client_neighbor(&client_host, ip)?;
    }
    setup
        .service_with_ips("web6", &[IpAddr::V6(v6)], &names[0], true, "Cluster")
        .await?;
    setup
        .service_with_ips("dual", &dual, &names[0], true, "Cluster")
        .await?;

    // Every node holds the IPv6 VIPs on kube-ipvs0, as IPVS kube-proxy does.
    for node in &setup.nodes {
        for ip in [IpAddr::V6(v6), IpAddr::V6(dual_v6)] {
            wait_for(
                &format!("{ip} on kube-ipvs0 of {}", node.name),
                Duration::from_secs(20),
                || async move { Ok(on_kube_ipvs0(node, ip)?.then_some(())) },
            )
            .await?;
        }
    }

    let owner6 = expected_owner([IpAddr::V6(v6)], &all);
    let owner_dual = expected_owner(dual, &all);
    eprintln!("elected: {v6} -> {owner6}, {dual:?} -> {owner_dual}");
    wait_for_ping_via(&client_host, v6, &mac_of(&owner6), Duration::from_secs(30)).await?;
    // Both IPs of the dual-stack Service on one node: the owner's MAC
    // answers ARP for the IPv4 one and NDP for the IPv6 one.
    wait_for_ping_via(
        &client_host,
        dual_v6,
        &mac_of(&owner_dual),
        Duration::from_secs(30),
    )
    .await?;
    wait_for_single_mac(
        &client_host,
        dual_v4,
        &mac_of(&owner_dual),
        Duration::from_secs(20),
    )
    .await?;
    let status = wait_for(
        &format!("ServiceL2Status dual to name {owner_dual}"),
        Duration::from_secs(10),
        || async {
            let s = setup.l2_status("dual").await?;
            Ok(s.filter(|s| s["node"] == owner_dual.as_str()))
        },
    )
    .await?;
    let mut status_ips: Vec<String> = status["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    status_ips.sort();
    ensure!(
        status_ips == [dual_v4.to_string(), dual_v6.to_string()],
        "status {status}"
    );

    // Crash the IPv6 Service's owner (SIGKILL, link cut): the successor's
    // unsolicited NA (override set) moves the client's entry, ping resumes.
    let index = setup
        .node_index(&owner6)
        .context("owner is not a lab node")?;
    let rest: Vec<&str> = all.iter().copied().filter(|n| *n != owner6).collect();
    let successor = expected_owner([IpAddr::V6(v6)], &rest);
    let successor_dual = expected_owner(dual, &rest);
    setup.kill(index);
    let _cut = CutLink::cut(&setup.nodes[index])?;
    let started = Instant::now();
    // No packet from the client asks for it: only an unsolicited NA that
    // overrides the cached entry changes it.
    let successor_mac = mac_of(&successor);
    wait_for(
        &format!("the client's neighbor entry for {v6} to become {successor}'s {successor_mac}"),
        Duration::from_secs(20),
        || async {
            let neighbor = client_neighbor(&client_host, IpAddr::V6(v6))?;
            Ok((neighbor.as_deref() == Some(successor_mac.as_str())).then_some(()))
        },
    )
    .await?;
    eprintln!(
        "crash of {owner6}: the client's entry for {v6} is {successor}'s MAC after {:?}",
        started.elapsed()
    );
    wait_for_ping_via(&client_host, v6, &successor_mac, Duration::from_secs(30)).await?;
    eprintln!(
        "ping -6 {v6} answered through {successor} {:?} after the crash",
        started.elapsed()
    );
    wait_for_ping_via(
        &client_host,
        dual_v6,
        &mac_of(&successor_dual),
        Duration::from_secs(30),
    )
    .await?;
    wait_for_single_mac(
        &client_host,
        dual_v4,
        &mac_of(&successor_dual),
        Duration::from_secs(20),
    )
    .await?;
    Ok(())
}

/// `nodeSelectors` of an L2Advertisement: only the selected nodes are
/// candidates, so exactly one MAC answers and it is the one elected among
/// them; relabelling the Nodes moves the announcement; with no node
/// selected nobody answers and the status says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selectors_choose_the_announcing_node() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let setup = Setup::new(
        lab,
        "spk-nsel",
        &["198.18.0.184-198.18.0.187"],
        (17951, 17478),
        true,
    )
    .await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    ensure!(all.len() >= 2, "node selection needs at least two nodes");
    let macs = setup.macs.clone();
    let mac_of = |node: &str| -> String {
        all.iter()
            .position(|n| *n == node)
            .map(|i| macs[i].clone())
            .unwrap_or_default()
    };
    // A label of this test's own; every guard removes it from its Node.
    let key = format!("e2e.ferrolb.io/{}", setup.ns.name());
    setup
        .advertise(json!({"nodeSelectors": [{"matchLabels": {key.as_str(): "true"}}]}))
        .await?;
    let mut labels: std::collections::BTreeMap<String, NodeLabel> = Default::default();
    // Newly selected nodes are labelled before the others are unlabelled,
    // as a careful operator would: ownership is sticky, so a moment with a
    // single candidate would leave the IP there.
    let mut select = |nodes: &[&str]| -> Result<()> {
        for node in nodes {
            if !labels.contains_key(*node) {
                labels.insert((*node).to_owned(), NodeLabel::set(lab, node, &key)?);
            }
        }
        labels.retain(|n, _| nodes.contains(&n.as_str()));
        Ok(())
    };

    // Select every node but the one the election would pick among all.
    let ip = vip(184);
    let natural = expected_owner([ip], &all);
    let first: Vec<&str> = all.iter().copied().filter(|n| *n != natural).collect();
    let first_owner = expected_owner([ip], &first);
    select(&first)?;
    setup.service("web", ip, &names[0], true).await?;
    eprintln!("selected {first:?}: {first_owner} (unrestricted it would be {natural})");
    wait_for_single_mac(
        &client_host,
        ip,
        &mac_of(&first_owner),
        Duration::from_secs(20),
    )
    .await?;
    wait_for(
        &format!("ServiceL2Status web to name {first_owner}"),
        Duration::from_secs(10),
        || async {
            let s = setup.l2_status("web").await?;
            Ok(s.filter(|s| s["node"] == first_owner.as_str()))
        },
    )
    .await?;
    let answers = harness::arping(&client_host, ip, 5)?;
    ensure!(
        answers == [mac_of(&first_owner)],
        "with {first:?} selected, {ip} is answered by {answers:?}"
    );

    // Relabel: every node but that owner. The owner is no candidate any
    // more: the election among the new set moves the IP.
    let second: Vec<&str> = all.iter().copied().filter(|n| *n != first_owner).collect();
    let second_owner = expected_owner([ip], &second);
    select(&second)?;
    eprintln!("selected {second:?}: {second_owner}");
    wait_for_single_mac(
        &client_host,
        ip,
        &mac_of(&second_owner),
        Duration::from_secs(20),
    )
    .await?;
    let answers = harness::arping(&client_host, ip, 5)?;
    ensure!(
        answers == [mac_of(&second_owner)],
        "with {second:?} selected, {ip} is answered by {answers:?}"
    );

    // No node selected: nobody answers, and the status says why.
    select(&[])?;
    let status = wait_for(
        "ServiceL2Status web to say NoEligibleNode",
        Duration::from_secs(20),
        || async {
            let s = setup.l2_status("web").await?;
            Ok(s.filter(|s| s["reason"] == "NoEligibleNode"))
        },
    )
    .await?;
    ensure!(status.get("node").is_none(), "status {status}");
    wait_for(
        &format!("nobody to answer ARP for {ip}"),
        Duration::from_secs(20),
        || async {
            Ok(harness::arping(&client_host, ip, 2)?
                .is_empty()
                .then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// An IP that no pool of ours holds, written into a Service's status by
/// someone else (another controller, a migration, a typo), is never claimed
/// on the LAN: nobody answers ARP for it, and the ServiceL2Status and a
/// Warning Event say why. A Service of the same class with an IP of the pool
/// is announced as usual, so the speakers are working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_outside_every_pool_is_never_announced() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let setup = Setup::new(
        lab,
        "spk-foreign",
        &["198.18.0.170-198.18.0.171"],
        (17954, 17481),
        true,
    )
    .await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let ours = vip(170);
    let foreign = vip(172);
    setup.service("ours", ours, &names[0], true).await?;
    setup.service("foreign", foreign, &names[0], true).await?;
    let owner = expected_owner([ours], &all);
    let owner_mac = setup
        .node_index(&owner)
        .map(|i| setup.macs[i].clone())
        .context("the owner is not a lab node")?;
    wait_for_single_mac(&client_host, ours, &owner_mac, Duration::from_secs(20)).await?;
    let status = wait_for(
        "ServiceL2Status foreign to say NotInPool",
        Duration::from_secs(20),
        || async {
            let s = setup.l2_status("foreign").await?;
            Ok(s.filter(|s| s["reason"] == "NotInPool"))
        },
    )
    .await?;
    ensure!(status.get("node").is_none(), "status {status}");
    let answers = harness::arping(&client_host, foreign, 5)?;
    ensure!(answers.is_empty(), "{foreign} is answered by {answers:?}");
    let ns = setup.ns.name().to_owned();
    wait_for(
        "an AnnounceFailed Event on foreign naming NotInPool",
        Duration::from_secs(20),
        || async {
            let events = kubectl(
                lab,
                &[
                    "get",
                    "events.events.k8s.io",
                    "-n",
                    &ns,
                    "--field-selector",
                    "reason=AnnounceFailed",
                    "-o",
                    "jsonpath={range .items[*]}{.regarding.name}={.note}{\"\\n\"}{end}",
                ],
                None,
            )?;
            Ok(events
                .lines()
                .any(|l| l.starts_with("foreign=") && l.contains("NotInPool"))
                .then_some(()))
        },
    )
    .await?;
    Ok(())
}

/// Eligibility knows the network (SPEC §4). Every speaker publishes the
/// interfaces it can announce on with their addresses. An L2Advertisement
/// naming an interface no node has elects nobody, instead of a node that
/// announces nowhere, and the ServiceL2Status says why; a name pattern
/// the nodes' interfaces match restores the election. An IP on no node's
/// subnet is refused the same way until the advertisement disables the
/// subnet check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eligibility_follows_interfaces_and_subnets() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let off_lan: IpAddr = "198.18.3.174".parse()?;
    let setup = Setup::new(
        lab,
        "spk-ifnet",
        &["198.18.0.174-198.18.0.175", "198.18.3.174"],
        (17955, 17482),
        true,
    )
    .await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();

    // Each SpeakerStatus publishes eth0 with the node's LAN address.
    for host in &setup.nodes {
        let want = format!("{}/{}", host.ipv4, lan::PREFIX_V4);
        wait_for(
            &format!("{}'s SpeakerStatus to publish eth0 {want}", host.name),
            Duration::from_secs(20),
            || async {
                let published = dynamic(&setup.client, "SpeakerStatus", None)
                    .get_opt(&host.name)
                    .await?
                    .and_then(|o| o.data["status"]["interfaceAddresses"].as_array().cloned())
                    .unwrap_or_default();
                Ok(published
                    .iter()
                    .any(|i| {
                        i["name"] == lan::INNER_IFACE
                            && i["addresses"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|a| a == want.as_str()))
                    })
                    .then_some(()))
            },
        )
        .await?;
    }

    // An interface no node has: nobody is elected, and the status says why.
    setup
        .advertise(json!({"interfaces": ["flb-none0"]}))
        .await?;
    let ip = vip(174);
    setup.service("web", ip, &names[0], true).await?;
    let status = wait_for(
        "ServiceL2Status web to say NoEligibleNode for the missing interface",
        Duration::from_secs(20),
        || async {
            let s = setup.l2_status("web").await?;
            Ok(s.filter(|s| {
                s["reason"] == "NoEligibleNode"
                    && s["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("has none of the interfaces flb-none0"))
            }))
        },
    )
    .await?;
    ensure!(status.get("node").is_none(), "status {status}");
    let answers = harness::arping(&client_host, ip, 3)?;
    ensure!(answers.is_empty(), "{ip} is answered by {answers:?}");

    // A pattern matching eth0: the usual election, announced on eth0.
    setup.advertise(json!({"interfaces": ["eth*"]})).await?;
    let owner = expected_owner([ip], &all);
    let owner_mac = setup
        .mac_of(&owner)
        .context("the owner is not a lab node")?
        .to_owned();
    wait_for_single_mac(&client_host, ip, &owner_mac, Duration::from_secs(20)).await?;
    let status = wait_for(
        &format!("ServiceL2Status web to name {owner} on eth0"),
        Duration::from_secs(20),
        || async {
            let s = setup.l2_status("web").await?;
            Ok(s.filter(|s| s["node"] == owner.as_str() && s["interfaces"] == json!(["eth0"])))
        },
    )
    .await?;
    ensure!(status.get("reason").is_none(), "status {status}");

    // An IP on no node's subnet: refused, naming the subnets the nodes have.
    setup
        .service_with_ips("off", &[off_lan], &names[0], true, "Cluster")
        .await?;
    wait_for(
        "ServiceL2Status off to say no node is on its subnet",
        Duration::from_secs(20),
        || async {
            let s = setup.l2_status("off").await?;
            Ok(s.filter(|s| {
                s["reason"] == "NoEligibleNode"
                    && s["message"].as_str().is_some_and(|m| {
                        m.contains(&format!(
                            "no selected interface on a subnet containing {off_lan}"
                        ))
                    })
            }))
        },
    )
    .await?;
    // The user vouches for the routing: the election takes place.
    setup
        .advertise(json!({"interfaces": ["eth*"], "subnetCheck": "Disabled"}))
        .await?;
    let off_owner = expected_owner([off_lan], &all);
    wait_for(
        &format!("ServiceL2Status off to name {off_owner}"),
        Duration::from_secs(20),
        || async {
            let s = setup.l2_status("off").await?;
            Ok(s.filter(|s| s["node"] == off_owner.as_str()))
        },
    )
    .await?;
    Ok(())
}

/// `preferredNodes`: an eligible preferred node always wins, whatever
/// rendezvous hashing would pick; without it the IP falls back to the usual
/// owner, and it goes back to the preferred node when that node's speaker
/// returns (preference outranks "ownership stays where it is").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferred_node_wins_and_takes_its_ip_back() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut setup = Setup::new(
        lab,
        "spk-prefer",
        &["198.18.0.176-198.18.0.177"],
        (17956, 17483),
        true,
    )
    .await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let ip = vip(176);
    // Prefer a node hashing would not pick, so the preference is what decides.
    let natural = expected_owner([ip], &all);
    let preferred = names
        .iter()
        .find(|n| **n != natural)
        .context("the lab has a single node")?
        .clone();
    setup
        .advertise(json!({"preferredNodes": [{
            "weight": 50,
            "selector": {"matchLabels": {"kubernetes.io/hostname": preferred}},
        }]}))
        .await?;
    setup.service("web", ip, &names[0], true).await?;
    owned_by(&setup, &client_host, ip, &preferred)
        .await
        .with_context(|| format!("{preferred} is preferred over {natural}, hashing's pick"))?;

    // Without the preferred node, the usual owner among the rest.
    let i = setup
        .node_index(&preferred)
        .context("the preferred node has no speaker")?;
    setup.kill(i);
    let rest: Vec<&str> = all.iter().copied().filter(|n| *n != preferred).collect();
    let fallback = expected_owner([ip], &rest);
    owned_by(&setup, &client_host, ip, &fallback)
        .await
        .with_context(|| format!("with {preferred} gone the IP should fall back to {fallback}"))?;

    // Back: the preferred node takes its IP back.
    setup.start(i)?;
    owned_by(&setup, &client_host, ip, &preferred)
        .await
        .with_context(|| format!("{preferred} came back but did not take its IP back"))?;
    Ok(())
}

/// Waits until only `node`'s MAC answers ARP for `ip` and the Service `web`'s
/// ServiceL2Status names `node`.
async fn owned_by(setup: &Setup, client: &Host, ip: Ipv4Addr, node: &str) -> Result<()> {
    let mac = setup.mac_of(node).context("not a lab node")?.to_owned();
    wait_for_single_mac(client, ip, &mac, Duration::from_secs(20)).await?;
    wait_for(
        &format!("ServiceL2Status web to name {node}"),
        Duration::from_secs(20),
        || async { Ok(setup.status_node("web").await?.filter(|n| n == node)) },
    )
    .await?;
    Ok(())
}

/// The API server process really stopped (connections refused, not just
/// dropped as in `api_outage_keeps_announcing_and_failing_over`): the
/// speakers keep answering ARP for what they own and the VIP keeps
/// answering ping; once it runs again they resync, and a Service created
/// afterwards is announced by its elected owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_stopped_keeps_announcing_and_resyncs() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut setup = Setup::new(
        lab,
        "spk-apistop",
        &["198.18.0.188-198.18.0.191"],
        (17952, 17479),
        true,
    )
    .await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let macs = setup.macs.clone();
    let mac_of = |node: &str| -> String {
        all.iter()
            .position(|n| *n == node)
            .map(|i| macs[i].clone())
            .unwrap_or_default()
    };
    let ip = vip(188);
    setup.service("web", ip, &names[0], true).await?;
    let owner = expected_owner([ip], &all);
    wait_for_single_mac(&client_host, ip, &mac_of(&owner), Duration::from_secs(20)).await?;
    wait_for(
        &format!("{ip} to answer ping"),
        Duration::from_secs(20),
        || async { Ok(harness::ping(&client_host, IpAddr::V4(ip))?.then_some(())) },
    )
    .await?;

    // Restarted when dropped, also if anything below fails.
    let stopped = lab.stop_apiserver()?;
    let down = Instant::now();
    ensure!(
        kubectl(lab, &["get", "--raw=/readyz", "--request-timeout=2s"], None).is_err(),
        "the API server still answers after being stopped"
    );
    let mut rounds = 0;
    while down.elapsed() < Duration::from_secs(10) {
        let answers = harness::arping(&client_host, ip, 1)?;
        ensure!(
            answers == [mac_of(&owner)],
            "{:?} into the API server outage, {ip} is answered by {answers:?}",
            down.elapsed()
        );
        ensure!(
            harness::ping(&client_host, IpAddr::V4(ip))?,
            "{:?} into the API server outage, ping {ip} failed",
            down.elapsed()
        );
        rounds += 1;
    }
    for (i, speaker) in setup.speakers.iter_mut().enumerate() {
        ensure!(
            speaker.as_mut().is_some_and(NodeProcess::running),
            "the speaker on {} exited while the API server was down",
            names[i]
        );
    }
    eprintln!(
        "API server stopped for {:?}: {rounds} rounds of arping and ping all answered by {owner}",
        down.elapsed()
    );
    stopped.restart()?;
    eprintln!("API server ready again {:?} after the stop", down.elapsed());

    // The speakers' watches resume (after their retry backoff, which grew
    // during the outage): a new Service is announced by its owner, and the
    // first one still by its own.
    let ready = Instant::now();
    let after = vip(189);
    setup.service("after", after, &names[0], true).await?;
    let after_owner = expected_owner([after], &all);
    wait_for_single_mac(
        &client_host,
        after,
        &mac_of(&after_owner),
        Duration::from_secs(90),
    )
    .await?;
    eprintln!(
        "a Service created after the restart is announced by {after_owner} after {:?}",
        ready.elapsed()
    );
    wait_for(
        &format!("ServiceL2Status after to name {after_owner}"),
        Duration::from_secs(30),
        || async {
            let s = setup.l2_status("after").await?;
            Ok(s.filter(|s| s["node"] == after_owner.as_str()))
        },
    )
    .await?;
    wait_for_single_mac(&client_host, ip, &mac_of(&owner), Duration::from_secs(20)).await?;
    Ok(())
}

/// CPU use of `pid` over `window`, in percent of one core.
async fn cpu_percent(pid: i32, window: Duration) -> Result<f64> {
    let before = harness::cpu_time(pid)?;
    tokio::time::sleep(window).await;
    let used = harness::cpu_time(pid)? - before;
    Ok(100.0 * used.as_secs_f64() / window.as_secs_f64())
}

/// Speaker resources on a lab node, for docs/benchmarks.md: CPU and memory
/// idle and with `FERROLB_BENCH_VIPS` (default 1,000) Service IPs, CPU while
/// 100,000 packets/s of unrelated UDP traffic from the client cross the
/// owner node's interface, and the ARP reply round trip for a VIP seen from
/// the client (2,000 requests, one every 5 ms). Set `FERROLB_SPEAKER_BIN` to
/// measure a release build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn speaker_resources_benchmark() -> Result<()> {
    const WINDOW: Duration = Duration::from_secs(10);
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let extra: usize = std::env::var("FERROLB_BENCH_VIPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .min(1024);
    // One VIP on the LAN for the client's ARP requests; the others in a /22
    // off the LAN: announced all the same (the subnet check is off for
    // them), never asked for.
    let setup = Setup::new(
        lab,
        "spkres",
        &["198.18.0.232-198.18.0.235", "198.18.192.0/22"],
        (17953, 17480),
        false,
    )
    .await?;
    setup.advertise(json!({"subnetCheck": "Disabled"})).await?;
    let client_host = Host::client();
    let names = setup.names.clone();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let macs = setup.macs.clone();
    let ip = vip(232);
    setup.service("lan", ip, &names[0], true).await?;
    let owner = expected_owner([ip], &all);
    let index = setup
        .node_index(&owner)
        .context("owner is not a lab node")?;
    wait_for_single_mac(&client_host, ip, &macs[index], Duration::from_secs(20)).await?;
    let pids: Vec<i32> = setup
        .speakers
        .iter()
        .map(|s| {
            s.as_ref()
                .map(NodeProcess::pid)
                .context("a speaker is not running")
        })
        .collect::<Result<_>>()?;
    let port = setup.metrics_port;
    let announced = |setup: &Setup| -> Result<f64> {
        setup
            .nodes
            .iter()
            .map(|h| speaker_metric(h, port, "ferrolb_speaker_announced_ips"))
            .sum()
    };

    let mut rows: Vec<String> = Vec::new();
    let mut row = |what: &str, cpu: Vec<f64>, rss: Vec<f64>| {
        let cpu: Vec<String> = cpu.iter().map(|c| format!("{c:.2} %")).collect();
        let rss: Vec<String> = rss.iter().map(|r| format!("{r:.1}")).collect();
        rows.push(format!(
            "| {what} | {} | {} |",
            cpu.join(" / "),
            rss.join(" / ")
        ));
    };
    let rss_all = |pids: &[i32]| -> Result<Vec<f64>> {
        pids.iter()
            .map(|p| harness::memory_mib(*p).map(|m| m.0))
            .collect()
    };

    // Idle: one VIP.
    let mut cpu = Vec::new();
    for pid in &pids {
        cpu.push(cpu_percent(*pid, WINDOW).await?);
    }
    row("idle, 1 VIP", cpu, rss_all(&pids)?);

    // Unrelated traffic crossing the owner's interface.
    let target = std::net::SocketAddr::from((setup.nodes[index].ipv4, 9));
    let frames_before =
        speaker_metric(&setup.nodes[index], port, "ferrolb_speaker_frames_received")?;
    let cpu_before = harness::cpu_time(pids[index])?;
    let started = Instant::now();
    let flood_host = client_host.clone();
    let sent = tokio::task::spawn_blocking(move || {
        harness::udp_flood(&flood_host, target, 100_000, WINDOW)
    })
    .await
    .context("the flood task failed")??;
    let elapsed = started.elapsed();
    let flood_cpu = 100.0 * (harness::cpu_time(pids[index])? - cpu_before).as_secs_f64()
        / elapsed.as_secs_f64();
    let frames_after =
        speaker_metric(&setup.nodes[index], port, "ferrolb_speaker_frames_received")?;
    let pps = sent as f64 / elapsed.as_secs_f64();

    // ARP reply round trip.
    let out = harness::exec_in(
        &client_host,
        "arping",
        &[
            "-c",
            "2000",
            "-W",
            "0.005",
            "-w",
            "60",
            "-i",
            lan::INNER_IFACE,
            &ip.to_string(),
        ],
    )?;
    let mut trips = harness::arping_round_trips(&String::from_utf8_lossy(&out.stdout));
    trips.sort();
    ensure!(!trips.is_empty(), "arping got no reply from {ip}");

    // Many VIPs.
    let created = futures::stream::iter(0..extra)
        .map(|i| {
            let setup = &setup;
            let names = &names;
            async move {
                let octets = [198, 18, 192 + (i / 256) as u8, (i % 256) as u8];
                let node = &names[i % names.len()];
                setup
                    .service(&format!("v{i:04}"), Ipv4Addr::from(octets), node, true)
                    .await
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<Result<()>>>()
        .await;
    created.into_iter().collect::<Result<Vec<()>>>()?;
    let want = (extra + 1) as f64;
    wait_for(
        &format!("{want} IPs announced in all"),
        Duration::from_secs(300),
        || async {
            let now = announced(&setup)?;
            ensure!(now == want, "{now} announced");
            Ok(Some(()))
        },
    )
    .await?;
    // Let the announcement repeats, the status writes and the lab's own work
    // for the new Services (kube-proxy, the IPVS emulation) finish first.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut cpu = Vec::new();
    for pid in &pids {
        cpu.push(cpu_percent(*pid, WINDOW).await?);
    }
    row(&format!("idle, {} VIPs", extra + 1), cpu, rss_all(&pids)?);
    let peaks: Vec<f64> = pids
        .iter()
        .map(|p| harness::memory_mib(*p).map(|m| m.1))
        .collect::<Result<_>>()?;

    println!(
        "\nspeaker resources, {} nodes ({owner} owns {ip}), {WINDOW:?} windows\n",
        pids.len()
    );
    println!(
        "| state | CPU per node ({}) | RSS MiB per node |",
        all.join(" / ")
    );
    println!("|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    let peaks: Vec<String> = peaks.iter().map(|p| format!("{p:.1}")).collect();
    println!("\npeak RSS (VmHWM) per node: {} MiB", peaks.join(" / "));
    println!(
        "\nunrelated traffic: {sent} UDP datagrams in {:.1} s ({pps:.0}/s) from the client to \
         {}:9; {owner}'s speaker used {flood_cpu:.2} % of a core; frames reaching its \
         sockets: {} (ARP requests and NS only)",
        elapsed.as_secs_f64(),
        setup.nodes[index].ipv4,
        frames_after - frames_before
    );
    println!(
        "\nARP reply round trip from the client, {} replies: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        trips.len(),
        harness::quantile(&trips, 0.50),
        harness::quantile(&trips, 0.90),
        harness::quantile(&trips, 0.99),
        harness::quantile(&trips, 1.0)
    );
    Ok(())
}
