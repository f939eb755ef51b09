//! The fault lab: faults injected into the speakers of a 3-node lab while a
//! client on the LAN watches a few VIPs (every ARP and neighbor advertisement
//! frame, a ping every 10 ms and an ARP request every 100 ms per VIP, its
//! neighbour entries, and each Service's `ServiceL2Status`), checked against
//! SPEC §4 and §9 by `ferrolb_e2e::checker`:
//!
//! - after every fault ends, within 1 s exactly one MAC answers, it is the
//!   node `ServiceL2Status` names, and the client's neighbour entry points at it;
//! - no ownership ping-pong (A→B→A), and at most as many moves as the fault
//!   allows (none for VIPs of nodes the fault does not touch);
//! - a crash of any node that announced a VIP at any time costs clients at
//!   most 1 s (the gap between ping replies, from their timestamps).
//!
//! Every test prints one line per VIP and phase (owners, moves, time with
//! several MACs answering, the longest gap between ping replies, how soon it
//! settled); timings are reported, only the bounds above are asserted. Each
//! test uses a class, a pool, ports and IPs of its own (198.18.0.104-159;
//! the checker probes as 198.18.0.178 and the ARP flood comes from .179;
//! gossip ports 17960-17973, metrics ports 17490-17503). They skip without
//! root or built tools unless `FERROLB_E2E` is set (as `cargo lab test` does).
//!
//! `cargo lab faults` runs them against the running lab (or a new one);
//! `cargo lab faults -- --ignored soak` runs the long soak
//! (`FERROLB_SOAK_ROUNDS`, default 30).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrolb_e2e::checker::{self, Expectation, Observer, Stamp, Window};
use ferrolb_e2e::faults::{self, Direction, NodeFilter};
use ferrolb_e2e::harness::{self, CutLink};
use ferrolb_e2e::lab::Lab;
use ferrolb_e2e::lan::Host;
use ferrolb_e2e::speakers::{Setup, flush_client_neighbor, vip, wait_for_quiet_owner};
use tokio::sync::Mutex;

mod common;
use common::expected_owner;

/// One fault test at a time: they share the node namespaces.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// How long the client keeps watching after a fault ends.
const OBSERVE: Duration = Duration::from_secs(4);
/// How many VIPs each test watches.
const VIPS: u8 = 3;
/// A crash of a node that announced an IP costs clients at most this.
const CRASH_OUTAGE: Duration = Duration::from_secs(1);
/// The sender of the ARP flood: a lab address no host holds.
const FLOODER_IP: [u8; 4] = [198, 18, 0, 179];
const FLOODER_MAC: &str = "02:00:c6:12:00:b3";

/// One fault test's world: speakers on every node, three Services with a VIP
/// each, and the client watching them.
struct FaultLab {
    setup: Setup,
    /// Service names and their VIPs.
    services: Vec<(String, IpAddr)>,
    observer: Observer,
    names: BTreeMap<String, String>,
    /// Every violation found so far, with its phase.
    violations: Vec<String>,
}

impl FaultLab {
    /// Speakers, pool and advertisement for 198.18.0.`first`…`first + 3`,
    /// gossip and metrics on `ports`, three Services, and the observer; returns
    /// once each VIP is answered by its elected owner alone and its status
    /// names it.
    async fn new(lab: &'static Lab, prefix: &str, first: u8, ports: (u16, u16)) -> Result<Self> {
        let range = format!("{}-{}", vip(first), vip(first + 3));
        let setup = Setup::new(lab, prefix, &[range.as_str()], ports, true).await?;
        let client = Host::client();
        let all: Vec<&str> = setup.names.iter().map(String::as_str).collect();
        let mut services = Vec::new();
        for k in 0..VIPS {
            let ip = vip(first + k);
            flush_client_neighbor(&client, IpAddr::V4(ip))?;
            let name = format!("web-{k}");
            setup.service(&name, ip, &setup.names[0], true).await?;
            services.push((name, IpAddr::V4(ip)));
        }
        let vips: Vec<IpAddr> = services.iter().map(|(_, ip)| *ip).collect();
        let observer = setup.observe(&vips)?;
        for (name, ip) in &services {
            let owner = expected_owner([*ip], &all);
            let mac = setup
                .mac_of(&owner)
                .context("the elected owner is not a lab node")?
                .to_owned();
            wait_for_quiet_owner(&observer, *ip, &mac, Duration::from_secs(30)).await?;
            harness::wait_for(
                &format!("ServiceL2Status {name} to name {owner}"),
                Duration::from_secs(10),
                || async {
                    Ok(
                        (setup.status_node(name).await?.as_deref() == Some(owner.as_str()))
                            .then_some(()),
                    )
                },
            )
            .await?;
        }
        let names = setup.names_by_mac();
        let lab = Self {
            setup,
            services,
            observer,
            names,
            violations: Vec::new(),
        };
        eprintln!("owners before the faults: {}", lab.owners_line());
        Ok(lab)
    }

    fn vip(&self, k: usize) -> IpAddr {
        self.services[k].1
    }

    /// The node answering alone for VIP `k` in the last second, if one is.
    fn current_owner(&self, k: usize) -> Option<usize> {
        let rounds = self
            .observer
            .recent_answers(self.vip(k), Duration::from_secs(1));
        let last = rounds.last()?;
        match last.as_slice() {
            [mac] if rounds.iter().all(|r| r == last) => {
                self.setup.macs.iter().position(|m| m == mac)
            }
            _ => None,
        }
    }

    fn owners_line(&self) -> String {
        (0..self.services.len())
            .map(|k| {
                let owner = self
                    .current_owner(k)
                    .map_or("-", |i| self.setup.names[i].as_str());
                format!("{} {owner}", self.vip(k))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Waits until every VIP is answered by one MAC alone, as before a fault.
    async fn wait_quiet(&self) -> Result<()> {
        for k in 0..self.services.len() {
            let vip = self.vip(k);
            harness::wait_for(
                &format!("one MAC alone to answer for {vip}"),
                Duration::from_secs(30),
                || async move { Ok(self.current_owner(k).map(|_| ())) },
            )
            .await?;
        }
        Ok(())
    }

    /// The node owning VIP 0 now (waiting for the VIPs to be quiet first).
    async fn owner_now(&self) -> Result<usize> {
        self.wait_quiet().await?;
        self.current_owner(0)
            .context("VIP 0 is answered by no lab node alone")
    }

    /// After a fault on `faulted` nodes that lasted from `start` to `end`:
    /// watches for [`OBSERVE`] more, recording the statuses, then reports
    /// each VIP and checks it, VIPs owned by a faulted node at `start` against
    /// `expect`, the others against `bystander`. Violations are kept for the
    /// end of the test, so every phase's figures are printed.
    async fn check(
        &mut self,
        phase: &str,
        faulted: &[usize],
        (start, end): (Stamp, Stamp),
        expect: Expectation,
        bystander: Expectation,
    ) {
        let until = end + OBSERVE;
        let services: Vec<(&str, IpAddr)> = self
            .services
            .iter()
            .map(|(n, ip)| (n.as_str(), *ip))
            .collect();
        self.setup
            .record_statuses(&self.observer, &services, until)
            .await;
        let faulted_macs: Vec<&str> = faulted
            .iter()
            .map(|i| self.setup.macs[*i].as_str())
            .collect();
        eprintln!("{phase}:");
        for k in 0..self.services.len() {
            let report = self
                .observer
                .report(self.vip(k), Window { start, end, until });
            eprintln!("  {}", report.describe(&self.names));
            let touched = report
                .owners
                .first()
                .is_some_and(|m| faulted_macs.contains(&m.as_str()));
            let expectation = if touched { expect } else { bystander };
            for v in expectation.violations(&report, &self.names) {
                eprintln!("  VIOLATION {v}");
                self.violations.push(format!("{phase}: {v}"));
            }
        }
    }

    /// Fails with every violation found, if any.
    fn verdict(self) -> Result<()> {
        if self.violations.is_empty() {
            return Ok(());
        }
        bail!(
            "{} violations:\n{}",
            self.violations.len(),
            self.violations.join("\n")
        )
    }
}

/// Runs `f` on a new fault lab, or returns when the lab cannot run here.
macro_rules! fault_lab {
    ($prefix:expr, $first:expr, $ports:expr) => {{
        let Some(lab) = harness::lab().await? else {
            return Ok(());
        };
        let serial = SERIAL.lock().await;
        (serial, FaultLab::new(lab, $prefix, $first, $ports).await?)
    }};
}

/// The owner of VIP 0 is stopped (SIGSTOP) for `pause`, then continued.
async fn owner_stall(
    prefix: &str,
    first: u8,
    ports: (u16, u16),
    pause: Duration,
    moves: usize,
) -> Result<()> {
    let (_serial, mut lab) = fault_lab!(prefix, first, ports);
    let owner = lab.owner_now().await?;
    let window = lab.setup.stall_speaker(owner, pause).await?;
    lab.check(
        &format!("{}'s speaker stopped for {pause:?}", lab.setup.names[owner]),
        &[owner],
        window,
        Expectation::after_any_fault().moves(moves),
        Expectation::after_any_fault().moves(0),
    )
    .await;
    lab.verdict()
}

/// A stall well below the suspicion tolerance moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_stall_100ms_moves_nothing() -> Result<()> {
    owner_stall(
        "flt-stall01",
        104,
        (17960, 17490),
        Duration::from_millis(100),
        0,
    )
    .await
}

/// Above the tolerance: at most one move, no ping-pong, and the node that
/// answers afterwards is the one the status names and the client uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_stall_300ms_moves_at_most_once() -> Result<()> {
    owner_stall(
        "flt-stall03",
        108,
        (17961, 17491),
        Duration::from_millis(300),
        1,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_stall_1s_moves_at_most_once() -> Result<()> {
    owner_stall("flt-stall1", 112, (17962, 17492), Duration::from_secs(1), 1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_stall_3s_moves_at_most_once() -> Result<()> {
    owner_stall("flt-stall3", 116, (17963, 17493), Duration::from_secs(3), 1).await
}

/// After a 0.3 s stall of the owner, every node that announced a VIP at any
/// time is crashed in turn (SIGKILL and link cut), first those that no longer
/// answer (a client may still use them), then the one answering: each crash
/// costs clients at most 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_any_announcer_after_a_stall_costs_at_most_1s() -> Result<()> {
    let (_serial, mut lab) = fault_lab!("flt-stallcrash", 120, (17964, 17494));
    let owner = lab.owner_now().await?;
    let watched_from = checker::now();
    let window = lab
        .setup
        .stall_speaker(owner, Duration::from_millis(300))
        .await?;
    lab.check(
        &format!("{}'s speaker stopped for 300ms", lab.setup.names[owner]),
        &[owner],
        window,
        Expectation::after_any_fault().moves(1),
        Expectation::after_any_fault().moves(0),
    )
    .await;
    // The stall's own violations are the stall tests' business: here only
    // the crashes count.
    let stall_violations = std::mem::take(&mut lab.violations);
    if !stall_violations.is_empty() {
        eprintln!(
            "(the stall itself broke {} expectations; see the stall tests)",
            stall_violations.len()
        );
    }
    let vip = lab.vip(0);
    let report = lab.observer.report(
        vip,
        Window {
            start: watched_from,
            end: checker::now(),
            until: checker::now(),
        },
    );
    let answering = report.settle.last_answers.clone();
    let mut victims: Vec<usize> = report
        .announcers
        .iter()
        .filter_map(|mac| lab.setup.macs.iter().position(|m| m == mac))
        .collect();
    // Those no longer answering first, then the one answering.
    victims.sort_by_key(|i| answering.contains(&lab.setup.macs[*i]));
    eprintln!(
        "{vip} was announced by {:?}; crashing them in that order",
        victims
            .iter()
            .map(|i| lab.setup.names[*i].as_str())
            .collect::<Vec<_>>()
    );
    for victim in victims {
        // Every VIP must be answered again within the bound (one the victim
        // announced earlier too, whatever the client still points at), and
        // VIPs the victim did not own must not move. One node down at a
        // time: the victim comes back before the next crash (with two of
        // three nodes down, the survivor hears nobody while the API shows
        // two ready speakers, and rightly claims none of their IPs).
        let start = checker::now();
        lab.setup.kill(victim);
        let cut = CutLink::cut(&lab.setup.nodes[victim])?;
        lab.check(
            &format!("crash of {}", lab.setup.names[victim]),
            &[victim],
            (start, start),
            Expectation::after_any_fault().outage(CRASH_OUTAGE),
            Expectation::after_any_fault().moves(0).outage(CRASH_OUTAGE),
        )
        .await;
        drop(cut);
        lab.setup.start(victim)?;
        lab.owner_now().await?;
    }
    lab.verdict()
}

/// Gossip lost at the owner of VIP 0 for 2 s (nftables in its namespace):
/// inbound only, outbound only, both ways; then both ways between the owner
/// and one peer only. After each heal: one owner, named by the status, used
/// by the client; at most one move for the faulted nodes' VIPs, none for
/// the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_loss_one_way_both_ways_and_between_two_nodes() -> Result<()> {
    let (_serial, mut lab) = fault_lab!("flt-gossip", 124, (17965, 17495));
    let port = lab.setup.gossip_port;
    for direction in [Direction::Inbound, Direction::Outbound, Direction::Both] {
        let owner = lab.owner_now().await?;
        let node = lab.setup.nodes[owner].clone();
        let filter = NodeFilter::gossip_loss(&node, port, direction)?;
        let start = checker::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(filter);
        let end = checker::now();
        lab.check(
            &format!("gossip lost {direction:?} at {} for 2s", node.name),
            &[owner],
            (start, end),
            Expectation::after_any_fault().moves(1),
            Expectation::after_any_fault().moves(0),
        )
        .await;
    }
    let owner = lab.owner_now().await?;
    let peer = (owner + 1) % lab.setup.nodes.len();
    let (node, other) = (
        lab.setup.nodes[owner].clone(),
        lab.setup.nodes[peer].clone(),
    );
    let filter = NodeFilter::gossip_loss_between(&node, &other, port)?;
    let start = checker::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(filter);
    let end = checker::now();
    lab.check(
        &format!(
            "gossip lost between {} and {} for 2s",
            node.name, other.name
        ),
        &[owner, peer],
        (start, end),
        Expectation::after_any_fault().moves(1),
        Expectation::after_any_fault().moves(0),
    )
    .await;
    lab.verdict()
}

/// The owner of VIP 0 cut off from the other nodes (all IP traffic with
/// them dropped in its namespace) but not from the client or the API server,
/// for 3 s; then healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cut_from_peers_but_not_from_the_client() -> Result<()> {
    let (_serial, mut lab) = fault_lab!("flt-peers", 128, (17966, 17496));
    let owner = lab.owner_now().await?;
    let node = lab.setup.nodes[owner].clone();
    let peers: Vec<Host> = lab
        .setup
        .nodes
        .iter()
        .filter(|h| h.name != node.name)
        .cloned()
        .collect();
    let filter = NodeFilter::cut_from_peers(&node, &peers)?;
    let start = checker::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(filter);
    let end = checker::now();
    lab.check(
        &format!("{} cut from its peers for 3s", node.name),
        &[owner],
        (start, end),
        Expectation::after_any_fault().moves(1),
        Expectation::after_any_fault().moves(0),
    )
    .await;
    lab.verdict()
}

/// The owner of VIP 0 cut off from the API server only, for 10 s: membership
/// and the data path do not depend on it, so nothing moves, no second MAC
/// answers and ping goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cut_from_the_api_server_only_moves_nothing() -> Result<()> {
    let (_serial, mut lab) = fault_lab!("flt-api", 132, (17967, 17497));
    let owner = lab.owner_now().await?;
    let node = lab.setup.nodes[owner].clone();
    let filter = NodeFilter::cut_from_api_server(&node)?;
    let start = checker::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    drop(filter);
    let end = checker::now();
    let unaffected = Expectation::after_any_fault()
        .moves(0)
        .overlap(Duration::ZERO)
        .outage(CRASH_OUTAGE);
    lab.check(
        &format!("{} cut from the API server for 10s", node.name),
        &[owner],
        (start, end),
        unaffected,
        unaffected,
    )
    .await;
    lab.verdict()
}

/// A new gossip key written into the Secret while the client pings: the
/// speakers pick it up at different times (they re-read it every second
/// here, each on its own clock) and must stay one membership through both
/// phases of the rotation (new key accepted, then sent with after 3 s, old
/// key refused 3 s later): nothing moves, no second MAC, ping goes on.
/// Watched for 10 s after the write, past the old key's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_key_rotation_under_traffic_moves_nothing() -> Result<()> {
    let (_serial, mut lab) = fault_lab!("flt-key", 136, (17968, 17498));
    // Short phases, so the whole rotation fits in the test.
    lab.setup.extra_args = ["--gossip-key-reload=1s", "--gossip-key-phase=3s"]
        .map(str::to_owned)
        .to_vec();
    for i in 0..lab.setup.nodes.len() {
        lab.setup.terminate(i);
        lab.setup.start(i)?;
        // Staggered, so each reads the Secret at its own moment.
        tokio::time::sleep(Duration::from_millis(330)).await;
    }
    lab.owner_now().await?;
    let start = checker::now();
    let key: Vec<u8> = (0..32u8)
        .map(|b| b.wrapping_mul(7).wrapping_add(101))
        .collect();
    lab.setup.rotate_gossip_key(&key).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let end = checker::now();
    let unaffected = Expectation::after_any_fault()
        .moves(0)
        .overlap(Duration::ZERO)
        .outage(CRASH_OUTAGE);
    lab.check(
        "gossip key rotated, 10s watched",
        &[],
        (start, end),
        unaffected,
        unaffected,
    )
    .await;
    lab.verdict()
}

/// Floods from the client: broadcast ARP requests for VIP 0 (from a sender
/// that is not the client's probe), then UDP datagrams at the gossip port of
/// VIP 0's owner. Nothing moves and ping keeps being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arp_and_gossip_floods_from_the_client_move_nothing() -> Result<()> {
    let (_serial, mut lab) = fault_lab!("flt-flood", 140, (17969, 17499));
    let unaffected = Expectation::after_any_fault().moves(0).outage(CRASH_OUTAGE);

    let owner = lab.owner_now().await?;
    let target = lab.vip(0);
    let start = checker::now();
    let took = tokio::task::spawn_blocking(move || {
        faults::arp_flood(
            &Host::client(),
            target,
            12_500,
            Duration::from_micros(200),
            IpAddr::from(FLOODER_IP),
            FLOODER_MAC,
        )
    })
    .await
    .context("the ARP flood task failed")??;
    let end = checker::now();
    lab.check(
        &format!(
            "12,500 ARP requests for {target} in {:.1}s",
            took.as_secs_f64()
        ),
        &[owner],
        (start, end),
        unaffected,
        unaffected,
    )
    .await;

    let owner = lab.owner_now().await?;
    let to = std::net::SocketAddr::from((lab.setup.nodes[owner].ipv4, lab.setup.gossip_port));
    let start = checker::now();
    let sent = tokio::task::spawn_blocking(move || {
        harness::udp_flood(&Host::client(), to, 50_000, Duration::from_secs(5))
    })
    .await
    .context("the UDP flood task failed")??;
    let end = checker::now();
    lab.check(
        &format!("{sent} UDP datagrams to {to} in 5s"),
        &[owner],
        (start, end),
        unaffected,
        unaffected,
    )
    .await;
    lab.verdict()
}

/// The owner of VIP 0 loses its link (the root side of its veth) three times
/// for 0.5 s, a second apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_link_flaps() -> Result<()> {
    let (_serial, mut lab) = fault_lab!("flt-flap", 144, (17970, 17500));
    let owner = lab.owner_now().await?;
    let node = lab.setup.nodes[owner].clone();
    let start = checker::now();
    for flap in 0..3 {
        if flap > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let cut = CutLink::cut(&node)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(cut);
    }
    let end = checker::now();
    lab.check(
        &format!("{}'s link flapped 3 times", node.name),
        &[owner],
        (start, end),
        Expectation::after_any_fault(),
        Expectation::after_any_fault().moves(0),
    )
    .await;
    lab.verdict()
}

/// The speaker of VIP 0's owner crashes (SIGKILL) and is restarted at once,
/// four times, a second apart: at the end one MAC answers, named by the
/// status, used by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaker_crash_loop_ends_with_one_owner() -> Result<()> {
    let (_serial, mut lab) = fault_lab!("flt-crashloop", 148, (17971, 17501));
    let owner = lab.owner_now().await?;
    let start = checker::now();
    for round in 0..4 {
        if round > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        lab.setup.kill(owner);
        lab.setup.start(owner)?;
    }
    let end = checker::now();
    let settles = Expectation {
        no_ping_pong: false,
        ..Expectation::after_any_fault()
    };
    lab.check(
        &format!(
            "{}'s speaker crashed and restarted 4 times",
            lab.setup.names[owner]
        ),
        &[owner],
        (start, end),
        settles,
        settles,
    )
    .await;
    lab.verdict()
}

/// The owner's speaker starved of CPU (a cgroup quota of 5 % of a CPU, in
/// 100 ms periods, so it runs at most 5 ms of every 100 ms) for 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_cpu_starvation() -> Result<()> {
    let (_serial, mut lab) = fault_lab!("flt-cpu", 152, (17972, 17502));
    let owner = lab.owner_now().await?;
    let quota = lab
        .setup
        .starve_speaker(owner, 5, Duration::from_millis(100))?;
    let start = checker::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(quota);
    let end = checker::now();
    lab.check(
        &format!(
            "{}'s speaker held to 5% of a CPU for 5s",
            lab.setup.names[owner]
        ),
        &[owner],
        (start, end),
        Expectation::after_any_fault().moves(1),
        Expectation::after_any_fault().moves(0),
    )
    .await;
    lab.verdict()
}

/// The soak: `FERROLB_SOAK_ROUNDS` (default 30) faults in turn on whichever
/// node owns VIP 0 (stalls of 0.1, 0.3, 1 and 3 s, gossip lost both ways for
/// 2 s, a link cut for 1 s, a speaker crash and restart), each checked like
/// the tests above. `cargo lab faults -- --ignored soak`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: cargo lab faults -- --ignored soak"]
async fn soak_mixed_faults() -> Result<()> {
    let rounds: usize = std::env::var("FERROLB_SOAK_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let (_serial, mut lab) = fault_lab!("flt-soak", 156, (17973, 17503));
    for round in 0..rounds {
        let owner = lab.owner_now().await?;
        let node = lab.setup.nodes[owner].clone();
        let one_move = Expectation::after_any_fault().moves(1);
        let (what, window, expect) = match round % 7 {
            k @ 0..=3 => {
                let pause = [100, 300, 1000, 3000][k];
                let window = lab
                    .setup
                    .stall_speaker(owner, Duration::from_millis(pause))
                    .await?;
                let expect = if pause == 100 {
                    Expectation::after_any_fault().moves(0)
                } else {
                    one_move
                };
                (format!("stall {pause}ms"), window, expect)
            }
            4 => {
                let filter =
                    NodeFilter::gossip_loss(&node, lab.setup.gossip_port, Direction::Both)?;
                let start = checker::now();
                tokio::time::sleep(Duration::from_secs(2)).await;
                drop(filter);
                (
                    "gossip lost 2s".to_owned(),
                    (start, checker::now()),
                    one_move,
                )
            }
            5 => {
                let cut = CutLink::cut(&node)?;
                let start = checker::now();
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(cut);
                ("link cut 1s".to_owned(), (start, checker::now()), one_move)
            }
            _ => {
                let start = checker::now();
                lab.setup.kill(owner);
                lab.setup.start(owner)?;
                (
                    "speaker crash and restart".to_owned(),
                    (start, checker::now()),
                    one_move,
                )
            }
        };
        lab.check(
            &format!("round {round}: {what} on {}", node.name),
            &[owner],
            window,
            expect,
            Expectation::after_any_fault().moves(0),
        )
        .await;
    }
    lab.verdict()
}
