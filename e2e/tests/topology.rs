//! End-to-end tests of the speaker on the network shapes real clusters have
//! (`ferrolb_e2e::topology`): two LAN segments joined by a router, nodes whose
//! LAN interface is a VLAN sub-interface of a trunk, a node with an
//! active-backup bond. The shared lab's control plane serves them; the extra
//! nodes, their speakers and the segments' clients are made per test and
//! removed when it ends.
//!
//! What is asserted is what a client on the segment sees: which MACs answer
//! ARP, whether ping gets through, the client's IPv6 neighbour entry, and the
//! ServiceL2Status.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ferrolb_e2e::checker::{self, Stamp, capture};
use ferrolb_e2e::harness::{self, wait_for};
use ferrolb_e2e::lab::Lab;
use ferrolb_e2e::lan::Host;
use ferrolb_e2e::speakers::{Setup, client_neighbor, wait_for_ping_via, wait_for_single_mac};
use ferrolb_e2e::topology::{
    self, LINK_LABEL, PortDown, SEGMENT_LABEL, Segment, ShapeNode, TOPOLOGY_LABEL, Topology,
};
use serde_json::{Value, json};

/// The test's speakers on the topology's nodes, and the topology itself
/// (dropped in this order: speakers first).
struct Shapes {
    setup: Setup,
    topology: Topology,
    /// One topology at a time: every test builds the same namespaces. Last,
    /// so it is released after the rest is torn down.
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// Taken by each test for its whole length.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Shapes {
    /// Builds the topology and starts a speaker on each of its nodes, with a
    /// pool of `addresses` whose L2Advertisement selects the nodes
    /// `selector` matches (always only the topology's).
    async fn new(
        lab: &'static Lab,
        prefix: &str,
        addresses: &[&str],
        ports: (u16, u16),
        selector: Value,
    ) -> Result<Self> {
        let serial = SERIAL.lock().await;
        let topology = Topology::create(lab).await?;
        let hosts: Vec<Host> = topology.nodes.iter().map(|n| n.host.clone()).collect();
        let macs = topology
            .nodes
            .iter()
            .map(|n| topology.mac(n))
            .collect::<Result<_>>()?;
        let setup = Setup::on_hosts(lab, prefix, addresses, ports, true, hosts, macs).await?;
        let shapes = Self {
            setup,
            topology,
            _serial: serial,
        };
        shapes.select(selector, json!({})).await?;
        Ok(shapes)
    }

    /// Makes the L2Advertisement select the topology's nodes that `labels`
    /// match too, with `extra` spec fields.
    async fn select(&self, labels: Value, extra: Value) -> Result<()> {
        let mut match_labels = json!({TOPOLOGY_LABEL: "shapes"});
        if let (Some(m), Value::Object(more)) = (match_labels.as_object_mut(), labels) {
            m.extend(more);
        }
        let mut spec = json!({"nodeSelectors": [{"matchLabels": match_labels}]});
        if let (Some(s), Value::Object(more)) = (spec.as_object_mut(), extra) {
            s.extend(more);
        }
        self.setup.advertise(spec).await
    }

    /// A Service `name` with `ips` (bound to every node's `kube-ipvs0` first).
    async fn service(&self, name: &str, ips: &[IpAddr]) -> Result<()> {
        let mut bound: Vec<IpAddr> = self.bound_vips()?;
        bound.extend_from_slice(ips);
        self.topology.bind_vips(&bound)?;
        let endpoint_node = &self.topology.nodes[0].host.name;
        self.setup
            .service_with_ips(name, ips, endpoint_node, true, "Cluster")
            .await
    }

    fn bound_vips(&self) -> Result<Vec<IpAddr>> {
        let host = &self.topology.nodes[0].host;
        let out = harness::exec_in(host, "ip", &["-j", "addr", "show", "dev", "kube-ipvs0"])?;
        let links: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        Ok(links
            .get(0)
            .and_then(|l| l["addr_info"].as_array())
            .into_iter()
            .flatten()
            // The VIPs, not the device's own link-local address.
            .filter(|a| a["scope"] == "global")
            .filter_map(|a| a["local"].as_str()?.parse().ok())
            .collect())
    }

    /// Waits until the ServiceL2Status of `name` names a node; returns it.
    async fn owner(&self, name: &str) -> Result<&ShapeNode> {
        let node = wait_for(
            &format!("ServiceL2Status {name} to name a node"),
            Duration::from_secs(30),
            || async {
                match self.setup.l2_status(name).await? {
                    Some(s) if s["node"].is_string() => Ok(s["node"].as_str().map(str::to_owned)),
                    Some(s) => anyhow::bail!("status {s}"),
                    None => Ok(None),
                }
            },
        )
        .await?;
        self.topology.node(&node)
    }
}

/// How the node with two links is built here: a bond, or where the kernel
/// has no bonding the spanning-tree pair standing in for it.
fn redundant_link() -> topology::LinkShape {
    match topology::Support::probe() {
        Ok(s) if s.bond => topology::LinkShape::Bond,
        _ => topology::LinkShape::StpPair,
    }
}

/// 198.18.40.`last` or 198.18.41.`last`.
fn vip4(segment: Segment, last: u8) -> Ipv4Addr {
    segment.v4(last)
}

/// 2001:db8:40::`last` or 2001:db8:41::`last`.
fn vip6(segment: Segment, last: u16) -> Ipv6Addr {
    segment.v6(last)
}

/// The pool of the tests: .200-.219 of both segments, both families.
const POOL: [&str; 4] = [
    "198.18.40.200-198.18.40.219",
    "198.18.41.200-198.18.41.219",
    "2001:db8:40::200-2001:db8:40::219",
    "2001:db8:41::200-2001:db8:41::219",
];

/// The interfaces `name`'s ServiceL2Status lists.
async fn status_interfaces(setup: &Setup, name: &str) -> Result<Vec<String>> {
    let status = setup.l2_status(name).await?.unwrap_or(Value::Null);
    Ok(status["interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_owned))
        .collect())
}

/// Checks from `node`'s segment client that `v4` and `v6` are answered by
/// `node`'s MAC alone (ARP, the IPv6 neighbour entry) and pinged.
async fn answered_by(shapes: &Shapes, node: &ShapeNode, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
    let client = topology::client(node.segment);
    let mac = shapes.topology.mac(node)?;
    wait_for_single_mac(&client, v4, &mac, Duration::from_secs(30)).await?;
    let answers = harness::arping(&client, v4, 5)?;
    ensure!(
        answers == [mac.clone()],
        "{v4} owned by {} ({mac} on {}) is answered by {answers:?}",
        node.host.name,
        node.interface()
    );
    ensure!(
        harness::ping(&client, IpAddr::V4(v4))?,
        "ping {v4} unanswered"
    );
    wait_for_ping_via(&client, v6, &mac, Duration::from_secs(30)).await?;
    eprintln!(
        "{v4} and {v6}: {} answers alone with {mac} on {}; ping and ping -6 answered, the client's neighbour entry is {mac}",
        node.host.name,
        node.interface()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs 802.1Q VLANs and bridge VLAN filtering: this lab's kernel has neither (CONFIG_VLAN_8021Q, CONFIG_BRIDGE_VLAN_FILTERING unset, no modules)"]
async fn vlan_subinterface_answers_arp_and_ndp() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let support = topology::Support::probe()?;
    ensure!(
        support.vlan,
        "this kernel cannot build VLAN sub-interfaces: {:?}",
        support.missing()
    );
    let shapes = Shapes::new(
        lab,
        "topo-vlan",
        &POOL,
        (17980, 17510),
        json!({LINK_LABEL: "vlan"}),
    )
    .await?;
    let (v4, v6) = (vip4(Segment::A, 200), vip6(Segment::A, 200));
    shapes
        .service("web", &[IpAddr::V4(v4), IpAddr::V6(v6)])
        .await?;
    let owner = shapes.owner("web").await?;
    ensure!(
        owner.link == topology::LinkShape::Vlan,
        "{} owns web, but only the VLAN nodes are selected",
        owner.host.name
    );
    answered_by(&shapes, owner, v4, v6).await?;
    let interfaces = status_interfaces(&shapes.setup, "web").await?;
    ensure!(
        interfaces.contains(&"eth0.100".to_owned()),
        "the status lists {interfaces:?}, not eth0.100"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "not reliable yet: a Service on the shapes nodes sometimes stays NoReadyEndpoints (fixture); run with --ignored while investigating"]
async fn bond_answers_arp_and_ndp() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let shapes = Shapes::new(
        lab,
        "topo-bond",
        &POOL,
        (17981, 17511),
        json!({LINK_LABEL: redundant_link().label()}),
    )
    .await?;
    let (v4, v6) = (vip4(Segment::A, 201), vip6(Segment::A, 201));
    shapes
        .service("web", &[IpAddr::V4(v4), IpAddr::V6(v6)])
        .await?;
    let owner = shapes.owner("web").await?;
    ensure!(
        owner.link == redundant_link(),
        "{} owns web, but only the node with two links is selected",
        owner.host.name
    );
    answered_by(&shapes, owner, v4, v6).await?;
    let interfaces = status_interfaces(&shapes.setup, "web").await?;
    ensure!(
        interfaces.contains(&owner.interface())
            && !interfaces.iter().any(|i| i == "lan0" || i == "lan1"),
        "the status lists {interfaces:?}: {}, and not its members, should announce",
        owner.interface()
    );
    Ok(())
}

/// `ping -D -i 0.01` from a client namespace, its output in a file.
struct Pinger {
    child: Child,
    log: PathBuf,
}

impl Pinger {
    fn start(lab: &Lab, from: &Host, to: IpAddr) -> Result<Self> {
        let dir = lab.state.join("logs");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!(
            "test-{}-ping-{to}-{}.log",
            from.name,
            std::process::id()
        ));
        let out = std::fs::File::create(&log)?;
        // `stdbuf` makes ping write every reply line at once.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &from.netns,
                "stdbuf",
                "-oL",
                "ping",
                "-D",
                "-n",
            ])
            .args(["-i", "0.01", &to.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ping")?;
        Ok(Self { child, log })
    }

    /// Stops it; returns the times of its replies.
    fn replies(mut self) -> Result<Vec<Stamp>> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.log)?;
        Ok(text.lines().filter_map(capture::parse_ping_reply).collect())
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tcpdump` of every ARP frame and neighbour advertisement on a client's
/// `eth0`, into a file.
struct Capture {
    child: Child,
    log: PathBuf,
}

impl Capture {
    /// Starts capturing; returns once tcpdump listens.
    async fn start(lab: &Lab, on: &Host) -> Result<Self> {
        let dir = lab.state.join("logs");
        std::fs::create_dir_all(&dir)?;
        let log = dir.join(format!(
            "test-{}-tcpdump-{}.log",
            on.name,
            std::process::id()
        ));
        let err = dir.join(format!(
            "test-{}-tcpdump-{}.err",
            on.name,
            std::process::id()
        ));
        let child = Command::new("ip")
            .args([
                "netns", "exec", &on.netns, "tcpdump", "-i", "eth0", "-n", "-e",
            ])
            .args(["-l", "-tt", "--immediate-mode"])
            .arg("arp or (icmp6 and ip6[40] == 136)")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .context("cannot start tcpdump")?;
        let capture = Self { child, log };
        wait_for(
            &format!("tcpdump to listen in {}", on.netns),
            Duration::from_secs(10),
            || async {
                Ok(std::fs::read_to_string(&err)?
                    .contains("listening on")
                    .then_some(()))
            },
        )
        .await?;
        Ok(capture)
    }

    /// Stops it; returns the frames that claim an IP (replies, gratuitous
    /// ARP, advertisements).
    fn claims(mut self) -> Result<Vec<capture::Frame>> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.log)?;
        Ok(text
            .lines()
            .filter_map(capture::parse_tcpdump)
            .filter(capture::Frame::is_claim)
            .collect())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The longest gap between replies after `from`, with where it started.
fn longest_gap(replies: &[Stamp], from: Stamp) -> (Duration, Stamp) {
    replies
        .windows(2)
        .filter(|w| w[1] >= from)
        .map(|w| (w[1].saturating_sub(w[0]), w[0]))
        .max()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "not reliable yet: a Service on the shapes nodes sometimes stays NoReadyEndpoints (fixture); run with --ignored while investigating"]
async fn bond_active_link_failure_keeps_the_vip_reachable() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let shapes = Shapes::new(
        lab,
        "topo-bondfail",
        &POOL,
        (17982, 17512),
        json!({LINK_LABEL: redundant_link().label()}),
    )
    .await?;
    let (v4, v6) = (vip4(Segment::A, 202), vip6(Segment::A, 202));
    shapes
        .service("web", &[IpAddr::V4(v4), IpAddr::V6(v6)])
        .await?;
    let owner = shapes.owner("web").await?;
    answered_by(&shapes, owner, v4, v6).await?;
    let client = topology::client(Segment::A);
    let mac = shapes.topology.mac(owner)?;

    let pings = [
        Pinger::start(lab, &client, IpAddr::V4(v4))?,
        Pinger::start(lab, &client, IpAddr::V6(v6))?,
    ];
    tokio::time::sleep(Duration::from_secs(2)).await;
    let active = shapes.topology.active_port(owner)?;
    // The active link's cable, pulled on the switch side.
    let fault = checker::now();
    let down = PortDown::set(&active)?;
    let now_active = wait_for(
        &format!("{} to send through its other link", owner.interface()),
        Duration::from_secs(30),
        || async {
            let port = shapes.topology.active_port(owner)?;
            Ok((port != active).then_some(port))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let end = checker::now();
    let [p4, p6] = pings;
    let replies = [
        (IpAddr::V4(v4), p4.replies()?),
        (IpAddr::V6(v6), p6.replies()?),
    ];

    eprintln!(
        "{} of {} ({}): {active} down, now {now_active}",
        owner.interface(),
        owner.host.name,
        owner.link.label()
    );
    for (vip, replies) in &replies {
        let before = replies.iter().filter(|r| **r < fault).count();
        let after = replies.iter().filter(|r| **r >= fault).count();
        let (gap, at) = longest_gap(replies, fault);
        let last = replies.last().copied().unwrap_or_default();
        eprintln!(
            "{vip}: {before} replies before the link failed, {after} after; longest gap {} ms, starting {} ms after the fault; last reply {} ms before the end",
            gap.as_millis(),
            at.saturating_sub(fault).as_millis(),
            end.saturating_sub(last).as_millis()
        );
        ensure!(before > 0, "{vip} was not pinged before the fault");
        ensure!(
            end.saturating_sub(last) < Duration::from_secs(1),
            "{vip} is not reachable after the active link failed (last reply {} ms before the end)",
            end.saturating_sub(last).as_millis()
        );
        // Generous: a bond fails over within miimon (100 ms); the spanning
        // tree standing in for it here needs two forward delays (4 s).
        let bound = match owner.link {
            topology::LinkShape::StpPair => Duration::from_secs(15),
            _ => Duration::from_secs(5),
        };
        ensure!(
            gap < bound,
            "{vip} was unreachable for {} ms after the active link failed",
            gap.as_millis()
        );
    }
    // Still the same node, and the bond's MAC alone answers.
    ensure!(
        shapes.setup.status_node("web").await?.as_deref() == Some(owner.host.name.as_str()),
        "the IPs moved away from {} when one of its links failed",
        owner.host.name
    );
    let answers = harness::arping(&client, v4, 3)?;
    ensure!(
        answers == [mac.clone()],
        "after the failover {v4} is answered by {answers:?}"
    );
    ensure!(
        client_neighbor(&client, IpAddr::V6(v6))?.as_deref() == Some(mac.as_str()),
        "the client's neighbour entry for {v6} is not {mac}"
    );
    drop(down);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "not reliable yet: one run saw a second MAC (shapes-a1) answer 198.18.40.212 right after shapes-a3 answered alone, another timed out on NoReadyEndpoints for a segment-B Service; run with --ignored while investigating"]
async fn segment_ips_are_owned_only_by_nodes_of_their_segment() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    // Every node of both segments selected: only subnets keep IPs apart.
    let shapes = Shapes::new(lab, "topo-seg", &POOL, (17983, 17513), json!({})).await?;
    // Every claim made on each segment's wire, from before the first Service.
    let mut captures = Vec::new();
    for segment in Segment::ALL {
        captures.push((
            segment,
            Capture::start(lab, &topology::client(segment)).await?,
        ));
    }
    let mut services = Vec::new();
    for segment in Segment::ALL {
        for i in 0..4_u8 {
            let last = 210 + i;
            let name = format!("web-{}{i}", segment.letter());
            let (v4, v6) = (vip4(segment, last), vip6(segment, u16::from(last)));
            shapes
                .service(&name, &[IpAddr::V4(v4), IpAddr::V6(v6)])
                .await?;
            services.push((name, segment, v4, v6));
        }
    }
    // Checked twice, some seconds apart: owned by the segment's nodes then
    // and still.
    for round in 0..2 {
        for (name, segment, v4, v6) in &services {
            let owner = shapes.owner(name).await?;
            ensure!(
                owner.segment == *segment,
                "{name} ({v4}, {v6}) of segment {} is owned by {} of segment {}",
                segment.letter(),
                owner.host.name,
                owner.segment.letter()
            );
            if round == 0 {
                answered_by(&shapes, owner, *v4, *v6).await?;
            } else {
                let mac = shapes.topology.mac(owner)?;
                let answers = harness::arping(&topology::client(*segment), *v4, 2)?;
                ensure!(
                    answers == [mac.clone()],
                    "{v4} owned by {} ({mac}) is answered by {answers:?}",
                    owner.host.name
                );
            }
            let elsewhere = topology::client(if *segment == Segment::A {
                Segment::B
            } else {
                Segment::A
            });
            let stray = harness::arping(&elsewhere, *v4, 2)?;
            ensure!(
                stray.is_empty(),
                "{v4} is answered on the other segment by {stray:?}"
            );
        }
        if round == 0 {
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    // Over the whole test, nobody claimed a VIP on the other segment's wire,
    // and the VIPs of each segment were announced on it.
    for (segment, capture) in captures {
        let claims = capture.claims()?;
        let ours = |ip: &IpAddr| {
            services
                .iter()
                .filter(|s| s.1 == segment)
                .any(|s| *ip == IpAddr::V4(s.2) || *ip == IpAddr::V6(s.3))
        };
        let theirs = |ip: &IpAddr| {
            services
                .iter()
                .filter(|s| s.1 != segment)
                .any(|s| *ip == IpAddr::V4(s.2) || *ip == IpAddr::V6(s.3))
        };
        let stray: Vec<String> = claims
            .iter()
            .filter(|f| theirs(&f.ip))
            .map(|f| format!("{} at {}", f.ip, f.mac))
            .collect();
        let announced = claims.iter().filter(|f| ours(&f.ip)).count();
        eprintln!(
            "segment {}: {announced} claims of its own VIPs seen on its wire, {} of the other segment's",
            segment.letter(),
            stray.len()
        );
        ensure!(
            stray.is_empty(),
            "the other segment's VIPs were claimed on segment {}: {stray:?}",
            segment.letter()
        );
        ensure!(
            announced > 0,
            "no claim of segment {}'s VIPs was seen on its wire: the capture saw nothing",
            segment.letter()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "not reliable yet: a Service on the shapes nodes sometimes stays NoReadyEndpoints (fixture); run with --ignored while investigating"]
async fn node_lacking_the_named_interface_is_not_elected() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let shapes = Shapes::new(
        lab,
        "topo-iface",
        &POOL,
        (17984, 17514),
        json!({SEGMENT_LABEL: "a"}),
    )
    .await?;
    // Segment A's three nodes selected, but only the one with two links
    // has their upper interface (bond0, or br0 standing in for it).
    let upper = redundant_link().interface();
    shapes
        .select(json!({SEGMENT_LABEL: "a"}), json!({"interfaces": [upper]}))
        .await?;
    let mut ips = Vec::new();
    for i in 0..4_u8 {
        let last = 204 + i;
        let name = format!("web-{i}");
        let (v4, v6) = (vip4(Segment::A, last), vip6(Segment::A, u16::from(last)));
        shapes
            .service(&name, &[IpAddr::V4(v4), IpAddr::V6(v6)])
            .await?;
        ips.push((name, v4, v6));
    }
    for (name, v4, v6) in &ips {
        let owner = shapes.owner(name).await?;
        ensure!(
            owner.link == redundant_link(),
            "{name} is owned by {}, which has no {upper}",
            owner.host.name
        );
        answered_by(&shapes, owner, *v4, *v6).await?;
    }

    // An interface no node has: nobody is elected, and the status says why.
    shapes
        .select(
            json!({SEGMENT_LABEL: "a"}),
            json!({"interfaces": ["bond9"]}),
        )
        .await?;
    let (name, v4, _) = &ips[0];
    let status = wait_for(
        &format!("ServiceL2Status {name} to say NoEligibleNode, naming bond9"),
        Duration::from_secs(30),
        || async {
            let s = shapes.setup.l2_status(name).await?;
            Ok(s.filter(|s| {
                s["reason"] == "NoEligibleNode"
                    && s["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("has none of the interfaces bond9"))
            }))
        },
    )
    .await?;
    eprintln!("with bond9 named: {status}");
    ensure!(
        status.get("node").is_none_or(Value::is_null),
        "status {status}"
    );
    let client = topology::client(Segment::A);
    wait_for(
        &format!("nobody to answer ARP for {v4}"),
        Duration::from_secs(20),
        || async { Ok(harness::arping(&client, *v4, 2)?.is_empty().then_some(())) },
    )
    .await?;
    Ok(())
}
