//! The speaker's ownership decisions: from the cluster, the membership and
//! what this node announced last, which IPs it announces now, which it
//! gives up, and which it announces again although they stayed.
//!
//! [`Ownership::decide`] is the whole loop body of the speaker, minus I/O:
//! the runtime feeds it the caches' contents and the membership's [`View`]
//! and carries out the [`Decision`]. Fault sequences (a stalled speaker, a
//! speaker declared down that rejoins, a partition that heals, a speaker
//! that hears nobody) are therefore unit- and property-tested here.
//!
//! The rules, in the order they apply:
//! 1. **Stand down when declared down.** When this speaker's incarnation
//!    changed (it learnt that its peers declared it down and rejoined), it
//!    forgets what it announced: those IPs were taken over, and its old
//!    claims in ServiceL2Status are stale, so the election gives them to
//!    the successors (see [`crate::eligibility`]).
//! 2. **Stand down while stalled.** While the membership says this speaker
//!    was stalled long enough to be declared down without knowing it yet
//!    ([`View::stalled`]), it announces nothing.
//! 3. **No fail-open.** A speaker that hears no peer (none alive in its
//!    view, or no datagram from any for a while: [`View::deaf`]) while the
//!    API shows other ready speakers is *isolated*: the fault is more likely its own
//!    (a filtered gossip port, a wrong key, a cut link) than every other
//!    node's. It keeps only the IPs it announced already and that no other
//!    node has claimed since, and claims nothing else, until it hears a peer.
//! 4. **Re-announce when peers may have been confused.** When another
//!    speaker rejoins or restarts (a new incarnation) or a speaker appears,
//!    the IPs this node keeps are announced again: the returning node may
//!    have answered for some of them meanwhile, and clients must point here.
//!    A node that gains IPs announces them anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::election::NodeName;
use crate::eligibility::plan_with_own_claims;
use crate::eligibility::{Claim, Cluster, Incarnation, InterfaceSelection, Live, Plan, Policy};
use crate::membership::View;

/// Why this speaker announces less than the election gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It announces what the election gives it.
    Normal,
    /// It stalled long enough to have been declared down and waits for the
    /// membership to say whether it was.
    Stalled,
    /// It hears no peer although `known` other speakers are ready.
    Isolated {
        /// Other ready speakers the API shows.
        known: usize,
    },
}

/// What to do after one recomputation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The election's plan, as every speaker with the same inputs computes it.
    pub plan: Plan,
    /// Every IP to announce from now on, with its interfaces.
    pub owned: BTreeMap<IpAddr, InterfaceSelection>,
    /// IPs announced now that were not before.
    pub gained: Vec<IpAddr>,
    /// IPs no longer announced.
    pub lost: Vec<IpAddr>,
    /// IPs kept that must be announced again (rule 4).
    pub reannounce: Vec<IpAddr>,
    /// Whether this speaker stands down, and why.
    pub standing: Standing,
    /// This speaker rejoined since the last decision (rule 1).
    pub rejoined: bool,
}

impl Decision {
    /// Whether the ServiceL2Status writes of `plan` describe what this
    /// speaker does: not while it stands down.
    #[must_use]
    pub fn reports(&self) -> bool {
        self.standing == Standing::Normal
    }
}

/// The ownership state of one speaker.
#[derive(Debug, Clone)]
pub struct Ownership {
    me: NodeName,
    policy: Policy,
    /// What it announces, as last decided.
    owned: BTreeMap<IpAddr, InterfaceSelection>,
    /// Its incarnation at the last decision.
    incarnation: Option<Incarnation>,
    /// The live speakers at the last decision.
    members: Live,
}

impl Ownership {
    /// The state of a speaker on node `me` that announces nothing yet.
    #[must_use]
    pub fn new(me: NodeName, policy: Policy) -> Self {
        Self {
            me,
            policy,
            owned: BTreeMap::new(),
            incarnation: None,
            members: Live::new(),
        }
    }

    /// The node this speaker runs on.
    #[must_use]
    pub fn me(&self) -> &NodeName {
        &self.me
    }

    /// What it announces now.
    #[must_use]
    pub fn owned(&self) -> &BTreeMap<IpAddr, InterfaceSelection> {
        &self.owned
    }

    /// Decides what to announce given the cluster, the membership view and
    /// the number of other speakers the API shows ready (`known_peers`).
    pub fn decide(&mut self, cluster: &Cluster, view: &View, known_peers: usize) -> Decision {
        let rejoined = self
            .incarnation
            .is_some_and(|previous| previous != view.incarnation);
        let claim = Claim {
            node: self.me.clone(),
            incarnation: view.incarnation,
        };
        // Rule 1: what it claimed before was taken over; it is no claim of
        // this incarnation (but still what the data plane announces, so
        // giving it up shows as lost below).
        let announced: BTreeSet<IpAddr> = if rejoined {
            BTreeSet::new()
        } else {
            self.owned.keys().copied().collect()
        };
        let plan =
            plan_with_own_claims(cluster, &view.live, self.policy, Some((&claim, &announced)));
        let mut owned = plan.owned_by(&self.me);
        let standing = if view.stalled {
            owned.clear();
            Standing::Stalled
        } else if (!view.has_peers() || view.deaf) && known_peers > 0 {
            let claimed_elsewhere = claimed_by_others(cluster, &self.me);
            owned.retain(|ip, _| announced.contains(ip) && !claimed_elsewhere.contains(ip));
            Standing::Isolated { known: known_peers }
        } else {
            Standing::Normal
        };

        let returned = view.live.iter().any(|(node, incarnation)| {
            *node != self.me && self.members.get(node) != Some(incarnation)
        });
        // A peer came back (it may have answered meanwhile), or this node
        // did (it was declared down, and a successor may have answered).
        let reannounce: Vec<IpAddr> = if (returned && !self.members.is_empty()) || rejoined {
            owned
                .keys()
                .filter(|ip| self.owned.contains_key(ip))
                .copied()
                .collect()
        } else {
            Vec::new()
        };
        let gained = owned
            .keys()
            .filter(|ip| !self.owned.contains_key(ip))
            .copied()
            .collect();
        let lost = self
            .owned
            .keys()
            .filter(|ip| !owned.contains_key(ip))
            .copied()
            .collect();
        self.owned.clone_from(&owned);
        self.incarnation = Some(view.incarnation);
        self.members.clone_from(&view.live);
        Decision {
            plan,
            owned,
            gained,
            lost,
            reannounce,
            standing,
            rejoined,
        }
    }
}

/// The IPs whose Services' ServiceL2Status names another node.
fn claimed_by_others(cluster: &Cluster, me: &NodeName) -> BTreeSet<IpAddr> {
    cluster
        .services
        .iter()
        .filter(|s| s.claim.as_ref().is_some_and(|c| &c.node != me))
        .flat_map(|s| s.ips.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use proptest::prelude::*;

    use super::*;
    use crate::eligibility::{AdvertisementView, NodeView, PoolView, ServiceId, ServiceView};

    const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn service(last: u8) -> ServiceView {
        ServiceView {
            id: ServiceId::new("default", format!("s{last}")),
            ips: vec![ip(last)],
            pool: Some("lan".to_owned()),
            has_ready_endpoints: true,
            ..ServiceView::default()
        }
    }

    fn cluster(services: impl IntoIterator<Item = u8>) -> Cluster {
        Cluster {
            services: services.into_iter().map(service).collect(),
            nodes: NODES
                .iter()
                .map(|n| ((*n).to_owned(), NodeView::default()))
                .collect(),
            pools: [(
                "lan".to_owned(),
                PoolView {
                    addresses: vec![ferrolb_address::parse_entry("198.18.0.0/24").unwrap()],
                    ..PoolView::default()
                },
            )]
            .into(),
            advertisements: vec![AdvertisementView::default()],
        }
    }

    fn view(live: &[(&str, u64)], incarnation: u64) -> View {
        View {
            live: live.iter().map(|(n, i)| (NodeName::from(*n), *i)).collect(),
            incarnation,
            stalled: false,
            deaf: false,
        }
    }

    /// A cluster of speakers, each with its own view, and the statuses the
    /// owners write, as the API would hold them.
    struct Sim {
        cluster: Cluster,
        speakers: BTreeMap<String, Ownership>,
        incarnations: BTreeMap<String, u64>,
    }

    impl Sim {
        fn new(services: impl IntoIterator<Item = u8>) -> Self {
            Self {
                cluster: cluster(services),
                speakers: NODES
                    .iter()
                    .map(|n| {
                        (
                            (*n).to_owned(),
                            Ownership::new(NodeName::from(*n), Policy::default()),
                        )
                    })
                    .collect(),
                incarnations: NODES.iter().map(|n| ((*n).to_owned(), 1)).collect(),
            }
        }

        /// The view of the speakers in `alive` that see each other.
        fn view_of(&self, me: &str, alive: &[&str]) -> View {
            let live: Vec<(&str, u64)> =
                alive.iter().map(|n| (*n, self.incarnations[*n])).collect();
            view(&live, self.incarnations[me])
        }

        /// Each speaker in `alive` decides with a view of exactly `alive`;
        /// then the owners' status writes land. Returns the decisions.
        fn round(&mut self, alive: &[&str]) -> BTreeMap<String, Decision> {
            let mut decisions = BTreeMap::new();
            for node in alive {
                let view = self.view_of(node, alive);
                let speaker = self.speakers.get_mut(*node).unwrap();
                decisions.insert(
                    (*node).to_owned(),
                    speaker.decide(&self.cluster, &view, alive.len() - 1),
                );
            }
            self.write_statuses(&decisions);
            decisions
        }

        fn write_statuses(&mut self, decisions: &BTreeMap<String, Decision>) {
            for (node, decision) in decisions {
                if !decision.reports() {
                    continue;
                }
                for service in &mut self.cluster.services {
                    if service.ips.iter().all(|ip| decision.owned.contains_key(ip)) {
                        service.claim = Some(Claim {
                            node: NodeName::from(node.as_str()),
                            incarnation: self.incarnations[node],
                        });
                    }
                }
            }
        }

        /// Who announces each IP, among `alive`.
        fn announcers(&self, alive: &[&str]) -> BTreeMap<IpAddr, Vec<String>> {
            let mut out: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
            for node in alive {
                for ip in self.speakers[*node].owned().keys() {
                    out.entry(*ip).or_default().push((*node).to_owned());
                }
            }
            out
        }

        fn owner_of(&self, ip: IpAddr, alive: &[&str]) -> Vec<String> {
            self.announcers(alive).remove(&ip).unwrap_or_default()
        }
    }

    #[test]
    fn steady_state_one_owner_per_ip() {
        let mut sim = Sim::new(1..=20);
        sim.round(&NODES);
        let announcers = sim.announcers(&NODES);
        assert_eq!(announcers.len(), 20);
        assert!(announcers.values().all(|nodes| nodes.len() == 1));
        // A second round changes nothing.
        let decisions = sim.round(&NODES);
        assert!(
            decisions
                .values()
                .all(|d| d.gained.is_empty() && d.lost.is_empty() && d.reannounce.is_empty())
        );
    }

    #[test]
    fn owners_chosen_from_partial_views_converge_once_statuses_land() {
        let mut sim = Sim::new(1..=12);
        // node-1 decides before it hears anyone, on a fresh cluster where no
        // other speaker is known yet: it claims everything.
        let alone = sim.view_of("node-1", &["node-1"]);
        let d = sim
            .speakers
            .get_mut("node-1")
            .unwrap()
            .decide(&sim.cluster, &alone, 0);
        assert_eq!(d.owned.len(), 12);
        // Then everyone sees everyone: the published statuses settle it.
        sim.round(&NODES);
        sim.round(&NODES);
        let announcers = sim.announcers(&NODES);
        assert_eq!(announcers.len(), 12);
        assert!(announcers.values().all(|n| n.len() == 1), "{announcers:?}");
    }

    #[test]
    fn a_stalled_owner_declared_down_does_not_take_its_ips_back() {
        let mut sim = Sim::new([7]);
        sim.round(&NODES);
        let first = sim.owner_of(ip(7), &NODES)[0].clone();
        let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != first).collect();

        // The owner stalls: the others declare it down and one takes over.
        sim.round(&others);
        let successor = sim.owner_of(ip(7), &others)[0].clone();
        assert_ne!(successor, first);

        // It comes back as a new incarnation: it stands down at once, and
        // nobody moves the IP again.
        *sim.incarnations.get_mut(&first).unwrap() += 1;
        let decisions = sim.round(&NODES);
        assert!(decisions[&first].rejoined);
        assert!(decisions[&first].owned.is_empty());
        assert_eq!(
            decisions[&first].lost,
            vec![ip(7)],
            "the data plane is told to stop"
        );
        assert_eq!(sim.owner_of(ip(7), &NODES), vec![successor.clone()]);
        assert_eq!(
            decisions[&successor].reannounce,
            vec![ip(7)],
            "the successor re-announces"
        );
        for _ in 0..3 {
            sim.round(&NODES);
            assert_eq!(
                sim.owner_of(ip(7), &NODES),
                vec![successor.clone()],
                "no ping-pong"
            );
        }
    }

    #[test]
    fn a_returning_owner_stands_down_before_the_successors_status_lands() {
        let mut sim = Sim::new([7]);
        sim.round(&NODES);
        let first = sim.owner_of(ip(7), &NODES)[0].clone();
        let others: Vec<&str> = NODES.iter().copied().filter(|n| *n != first).collect();
        // The successor takes over, but its status write has not landed.
        let claim_before = sim.cluster.services[0].claim.clone();
        sim.round(&others);
        let successor = sim.owner_of(ip(7), &others)[0].clone();
        sim.cluster.services[0].claim = claim_before;
        *sim.incarnations.get_mut(&first).unwrap() += 1;
        // Everyone decides with the stale claim: still one owner, the successor.
        let mut decisions = BTreeMap::new();
        for node in NODES {
            let view = sim.view_of(node, &NODES);
            decisions.insert(
                node,
                sim.speakers
                    .get_mut(node)
                    .unwrap()
                    .decide(&sim.cluster, &view, 2),
            );
        }
        assert_eq!(sim.owner_of(ip(7), &NODES), vec![successor]);
    }

    #[test]
    fn a_stall_below_the_suspicion_moves_nothing() {
        let mut sim = Sim::new(1..=10);
        sim.round(&NODES);
        let before = sim.announcers(&NODES);
        // Suspected and refuted: the membership never changed; the owner
        // noticed its own stall and stood down for a moment.
        let owner = before[&ip(1)][0].clone();
        let mut stalled = sim.view_of(&owner, &NODES);
        stalled.stalled = true;
        let d = sim
            .speakers
            .get_mut(&owner)
            .unwrap()
            .decide(&sim.cluster, &stalled, 2);
        assert_eq!(d.standing, Standing::Stalled);
        assert!(d.owned.is_empty());
        assert!(!d.reports(), "no status write while standing down");
        let resumed = sim.view_of(&owner, &NODES);
        let d = sim
            .speakers
            .get_mut(&owner)
            .unwrap()
            .decide(&sim.cluster, &resumed, 2);
        assert!(
            d.gained.contains(&ip(1)),
            "announced afresh after the stall"
        );
        assert_eq!(sim.announcers(&NODES), before);
    }

    #[test]
    fn an_isolated_speaker_claims_nothing_new_and_gives_up_what_others_took() {
        let mut sim = Sim::new(1..=12);
        sim.round(&NODES);
        let lonely = "node-1";
        let others = ["node-2", "node-3"];
        let mine: BTreeSet<IpAddr> = sim.speakers[lonely].owned().keys().copied().collect();
        assert!(!mine.is_empty());

        // node-1 hears nobody; the API still shows two ready speakers.
        let alone = sim.view_of(lonely, &[lonely]);
        let d = sim
            .speakers
            .get_mut(lonely)
            .unwrap()
            .decide(&sim.cluster, &alone, 2);
        assert_eq!(d.standing, Standing::Isolated { known: 2 });
        assert_eq!(
            d.owned.keys().copied().collect::<BTreeSet<_>>(),
            mine,
            "keeps its own, claims nothing else"
        );
        assert!(!d.reports());

        // The others declare it down and take its IPs; their statuses land.
        let decisions = sim.round(&others);
        sim.write_statuses(&decisions);
        let d = sim
            .speakers
            .get_mut(lonely)
            .unwrap()
            .decide(&sim.cluster, &alone, 2);
        assert!(
            d.owned.is_empty(),
            "gives up what the others claimed: {:?}",
            d.owned
        );

        // Peers in view but none heard for a while (lost inbound gossip):
        // the same as hearing nobody.
        let mut deaf = sim.view_of(lonely, &NODES);
        deaf.deaf = true;
        let d = sim
            .speakers
            .get_mut(lonely)
            .unwrap()
            .decide(&sim.cluster, &deaf, 2);
        assert_eq!(d.standing, Standing::Isolated { known: 2 });
        assert!(d.owned.is_empty());

        // A speaker that never heard a peer claims nothing at all.
        let mut fresh = Ownership::new(NodeName::from(lonely), Policy::default());
        let d = fresh.decide(&sim.cluster, &alone, 2);
        assert!(d.owned.is_empty());
        // Alone in the API too (a one-node cluster): it announces.
        let d = fresh.decide(&cluster(1..=3), &alone, 0);
        assert_eq!(d.standing, Standing::Normal);
        assert_eq!(d.owned.len(), 3);
    }

    #[test]
    fn a_healed_partition_leaves_one_owner_per_ip() {
        let mut sim = Sim::new(1..=12);
        sim.round(&NODES);
        let lonely = "node-3";
        let others = ["node-2", "node-1"];
        // Partition: the majority takes over; the isolated node keeps only
        // what nobody else claimed.
        sim.round(&others);
        let alone = sim.view_of(lonely, &[lonely]);
        sim.speakers
            .get_mut(lonely)
            .unwrap()
            .decide(&sim.cluster, &alone, 2);
        // Healed: the isolated node was declared down and rejoins.
        *sim.incarnations.get_mut(lonely).unwrap() += 1;
        sim.round(&NODES);
        sim.round(&NODES);
        let announcers = sim.announcers(&NODES);
        assert_eq!(announcers.len(), 12);
        assert!(announcers.values().all(|n| n.len() == 1), "{announcers:?}");
        assert!(
            !sim.speakers[lonely].owned().keys().any(|_| true),
            "no IP goes back to the rejoined node"
        );
    }

    #[derive(Debug, Clone)]
    enum Fault {
        /// A node is declared down by the others for some rounds, then rejoins.
        DeclaredDown(usize, u8),
        /// A node restarts (new incarnation), unseen by nobody.
        Restart(usize),
        /// A node stalls briefly without being declared down.
        Stall(usize),
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            (0..3usize, 1..3u8).prop_map(|(n, r)| Fault::DeclaredDown(n, r)),
            (0..3usize).prop_map(Fault::Restart),
            (0..3usize).prop_map(Fault::Stall),
        ]
    }

    proptest! {
        /// Whatever faults happen, once they end and statuses settle every IP
        /// has exactly one announcer, and a stall below the suspicion moves
        /// nothing.
        #[test]
        fn faults_end_with_one_owner(faults in proptest::collection::vec(fault(), 1..6)) {
            let mut sim = Sim::new(1..=9);
            sim.round(&NODES);
            for fault in faults {
                match fault {
                    Fault::DeclaredDown(n, rounds) => {
                        let down = NODES[n];
                        let others: Vec<&str> = NODES.iter().copied().filter(|x| *x != down).collect();
                        for _ in 0..rounds {
                            sim.round(&others);
                        }
                        *sim.incarnations.get_mut(down).unwrap() += 1;
                        sim.round(&NODES);
                    }
                    Fault::Restart(n) => {
                        let node = NODES[n];
                        *sim.incarnations.get_mut(node).unwrap() += 1;
                        sim.speakers.insert(node.to_owned(), Ownership::new(NodeName::from(node), Policy::default()));
                        sim.round(&NODES);
                    }
                    Fault::Stall(n) => {
                        let before = sim.announcers(&NODES);
                        let node = NODES[n];
                        let mut stalled = sim.view_of(node, &NODES);
                        stalled.stalled = true;
                        sim.speakers.get_mut(node).unwrap().decide(&sim.cluster, &stalled, 2);
                        sim.round(&NODES);
                        prop_assert_eq!(sim.announcers(&NODES), before);
                    }
                }
                sim.round(&NODES);
                let announcers = sim.announcers(&NODES);
                prop_assert_eq!(announcers.len(), 9);
                for (ip, nodes) in &announcers {
                    prop_assert_eq!(nodes.len(), 1, "{} announced by {:?}", ip, nodes);
                }
                // Settled: another round moves nothing.
                let decisions = sim.round(&NODES);
                for d in decisions.values() {
                    prop_assert!(d.gained.is_empty() && d.lost.is_empty());
                }
            }
        }
    }
}
