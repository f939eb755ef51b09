//! Invariants over arbitrary sequences of pool edits and Service operations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_address::Family;
use proptest::prelude::*;

use ferrolb_address::IpRange;

use super::super::{
    Allocation, Allocator, FamilyPolicy, FreezeReason, IpFamilies, Pool, Port, ServiceAllocation,
    ServiceKey, ServiceRequest, SharingKey, TrafficPolicy,
};
use super::{ip, labels, pool, svc};

const POOL_NAMES: [&str; 3] = ["p0", "p1", "p2"];

/// Address menus chosen to produce overlaps, mixed families, `.0`/`.255` corners and
/// pools small enough to run out.
const ADDRESSES: [&[&str]; 6] = [
    &["198.18.0.0/29"],
    &["198.18.0.4-198.18.0.12"],
    &["198.18.1.0/30", "2001:db8::/126"],
    &["2001:db8::/125"],
    &["198.18.0.254-198.18.1.3"],
    &["198.18.2.0/31", "2001:db8:1::/127"],
];

const REQUESTABLE: [&str; 6] = [
    "198.18.0.1",
    "198.18.0.5",
    "198.18.1.1",
    "198.18.2.0",
    "2001:db8::2",
    "2001:db8:1::1",
];

/// Reservable ranges `(label, first, last)` cutting through the address menus.
const RESERVABLE: [(&str, &str, &str); 6] = [
    ("ServiceCIDR kubernetes", "198.18.0.0", "198.18.0.2"),
    ("InternalIP of node n1", "198.18.0.5", "198.18.0.5"),
    ("podCIDR of node n1", "198.18.1.0", "198.18.1.1"),
    ("podCIDR of node n2", "2001:db8::", "2001:db8::1"),
    ("InternalIP of node n2", "198.18.0.250", "198.18.1.0"),
    ("InternalIP of node n3", "2001:db8:1::1", "2001:db8:1::1"),
];

const SERVICES: [(&str, &str); 6] = [
    ("ns1", "a"),
    ("ns1", "b"),
    ("ns1", "c"),
    ("ns2", "a"),
    ("ns2", "d"),
    ("ns2", "e"),
];

#[derive(Debug, Clone)]
enum Op {
    UpsertPool(Pool),
    RemovePool(usize),
    Assign(ServiceRequest),
    /// Assign again with the Service's last request.
    Reassign(usize),
    Release(usize),
    Reserve(Vec<(String, IpRange)>),
    Freeze(usize, Option<FreezeReason>),
}

fn arb_reserved() -> impl Strategy<Value = Vec<(String, IpRange)>> {
    prop::sample::subsequence(RESERVABLE.to_vec(), 0..=3).prop_map(|v| {
        v.into_iter()
            .map(|(label, first, last)| {
                (label.to_owned(), IpRange::new(ip(first), ip(last)).unwrap())
            })
            .collect()
    })
}

fn arb_freeze() -> impl Strategy<Value = Option<FreezeReason>> {
    prop_oneof![
        Just(None),
        Just(Some(FreezeReason::Invalid)),
        Just(Some(FreezeReason::Deleting)),
    ]
}

fn arb_pool() -> impl Strategy<Value = Pool> {
    (
        0..POOL_NAMES.len(),
        0..ADDRESSES.len(),
        prop::bool::weighted(0.85),
        any::<bool>(),
        prop_oneof![
            4 => Just(None),
            1 => Just(Some(ServiceAllocation { namespaces: vec!["ns1".into()], ..Default::default() })),
            1 => (-2i32..3).prop_map(|p| Some(ServiceAllocation { priority: Some(p), ..Default::default() })),
        ],
    )
        .prop_map(|(n, a, auto_assign, avoid_buggy_ips, allocation)| Pool {
            auto_assign,
            avoid_buggy_ips,
            allocation,
            ..pool(POOL_NAMES[n], ADDRESSES[a])
        })
}

fn arb_request() -> impl Strategy<Value = ServiceRequest> {
    let families = prop_oneof![
        Just(IpFamilies::single(Family::V4)),
        Just(IpFamilies::single(Family::V6)),
        Just(IpFamilies::default()),
        Just(IpFamilies::dual(FamilyPolicy::PreferDualStack)),
        Just(IpFamilies::dual(FamilyPolicy::RequireDualStack)),
    ];
    (
        0..SERVICES.len(),
        families,
        prop_oneof![Just(None), Just(Some("k1")), Just(Some("k2"))],
        prop::sample::subsequence(vec![80u16, 443, 53], 0..=2),
        prop_oneof![Just(None), Just(Some("x")), Just(Some("y"))],
        prop_oneof![3 => Just(None), 1 => (0..REQUESTABLE.len()).prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => (0..POOL_NAMES.len()).prop_map(Some)],
        prop_oneof![3 => Just(None), 1 => (0..REQUESTABLE.len()).prop_map(Some)],
    )
        .prop_map(
            |(s, ip_families, key, ports, local, requested, named, current)| {
                let (ns, name) = SERVICES[s];
                ServiceRequest {
                    key: ServiceKey::new(ns, name),
                    ip_families,
                    sharing_key: key.and_then(SharingKey::new),
                    ports: ports.into_iter().map(Port::tcp).collect(),
                    traffic_policy: match local {
                        None => TrafficPolicy::Cluster,
                        Some(app) => TrafficPolicy::Local {
                            selector: labels(&[("app", app)]),
                        },
                    },
                    requested_ips: requested
                        .map(|i| vec![ip(REQUESTABLE[i])])
                        .unwrap_or_default(),
                    requested_pool: named.map(|n| POOL_NAMES[n].to_owned()),
                    // A status the allocator may not know about (first sight after start).
                    current_ips: current
                        .map(|i| vec![ip(REQUESTABLE[i])])
                        .unwrap_or_default(),
                    ..svc(name)
                }
            },
        )
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => arb_pool().prop_map(Op::UpsertPool),
        1 => (0..POOL_NAMES.len()).prop_map(Op::RemovePool),
        5 => arb_request().prop_map(Op::Assign),
        2 => (0..SERVICES.len()).prop_map(Op::Reassign),
        2 => (0..SERVICES.len()).prop_map(Op::Release),
        1 => arb_reserved().prop_map(Op::Reserve),
        1 => (0..POOL_NAMES.len(), arb_freeze()).prop_map(|(p, f)| Op::Freeze(p, f)),
    ]
}

fn key_of(i: usize) -> ServiceKey {
    ServiceKey::new(SERVICES[i].0, SERVICES[i].1)
}

/// The sharing rule, written independently of the allocator's code.
fn may_share(a: &ServiceRequest, b: &ServiceRequest) -> bool {
    let keys = matches!((&a.sharing_key, &b.sharing_key), (Some(x), Some(y)) if x == y);
    let ports_a: BTreeSet<Port> = a.ports.iter().copied().collect();
    let disjoint = b.ports.iter().all(|p| !ports_a.contains(p));
    keys && disjoint && a.traffic_policy == b.traffic_policy
}

fn snapshot(a: &Allocator) -> BTreeMap<ServiceKey, Allocation> {
    a.allocations()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the test knows the allocator was told.
#[derive(Debug, Default)]
struct Model {
    pools: BTreeMap<String, Pool>,
    requests: BTreeMap<ServiceKey, ServiceRequest>,
    reserved: Vec<(String, IpRange)>,
    frozen: BTreeMap<String, FreezeReason>,
}

impl Model {
    fn is_reserved(&self, ip: IpAddr) -> bool {
        self.reserved.iter().any(|(_, r)| r.contains(ip))
    }

    /// Every address a pool offers, by brute force (the menus are tiny).
    fn offered(&self, pool: &Pool, family: Family) -> Vec<IpAddr> {
        pool.addresses
            .ranges_of(family)
            .flat_map(|r| {
                (r.first_bits()..=r.last_bits()).map(move |b| ferrolb_address::from_bits(family, b))
            })
            .filter(|i| pool.offers(*i))
            .collect()
    }
}

/// Checks every invariant that must hold between operations.
fn check_invariants(a: &Allocator, model: &Model) -> Result<(), TestCaseError> {
    let (pools, requests) = (&model.pools, &model.requests);
    let mut holders: BTreeMap<IpAddr, Vec<&ServiceKey>> = BTreeMap::new();
    for (k, alloc) in a.allocations() {
        prop_assert!(!alloc.ips.is_empty(), "{k} is recorded with no IP");
        let p = pools.get(&alloc.pool);
        prop_assert!(p.is_some(), "{k} holds IPs of deleted pool {}", alloc.pool);
        let families: BTreeSet<Family> = alloc.ips.iter().map(|i| Family::of(*i)).collect();
        prop_assert_eq!(
            families.len(),
            alloc.ips.len(),
            "{} holds two IPs of a family",
            k
        );
        for i in &alloc.ips {
            prop_assert!(
                p.is_some_and(|p| p.offers(*i)),
                "{k} holds {i} outside pool {}",
                alloc.pool
            );
            holders.entry(*i).or_default().push(k);
        }
    }
    // No IP held by two Services unless they share it by the rules.
    for (i, users) in &holders {
        let mut from_allocator: Vec<&ServiceKey> = a.holders(*i).iter().collect();
        from_allocator.sort();
        let mut derived = users.clone();
        derived.sort();
        prop_assert_eq!(&from_allocator, &derived, "holders of {} disagree", i);
        for (n, x) in users.iter().enumerate() {
            for y in users.iter().skip(n + 1) {
                let (rx, ry) = (&requests[*x], &requests[*y]);
                prop_assert!(
                    may_share(rx, ry),
                    "{x} and {y} both hold {i} but may not share"
                );
            }
        }
    }
    // Counts per pool and family add up and match the holders and the reservations.
    for (name, p) in pools {
        prop_assert_eq!(
            a.frozen(name),
            model.frozen.get(name).copied(),
            "{} frozen",
            name
        );
        for family in [Family::V4, Family::V6] {
            let usage = a.usage(name, family);
            let reserved = a.reserved_unassigned(name, family);
            prop_assert!(usage.is_some() && reserved.is_some());
            let usage = usage.unwrap_or_default();
            let reserved = reserved.unwrap_or_default();
            prop_assert_eq!(usage.total, p.size(family));
            prop_assert_eq!(
                usage.total,
                usage.assigned + usage.available + reserved,
                "{} {}",
                name,
                family
            );
            let offered = model.offered(p, family);
            let held = offered.iter().filter(|i| holders.contains_key(*i)).count();
            prop_assert_eq!(usage.assigned, held as u128, "{} {} assigned", name, family);
            let withheld = offered
                .iter()
                .filter(|i| !holders.contains_key(*i) && model.is_reserved(**i))
                .count();
            prop_assert_eq!(reserved, withheld as u128, "{} {} reserved", name, family);
        }
    }
    Ok(())
}

/// A fresh allocator told the same pools, freezes and reserved ranges, restored from
/// `a`'s assignments and quarantines.
fn restarted(a: &Allocator, model: &Model) -> Result<Allocator, TestCaseError> {
    let mut fresh = Allocator::new();
    for p in model.pools.values() {
        fresh.upsert_pool(p.clone());
    }
    for (name, reason) in &model.frozen {
        fresh.set_frozen(name, Some(*reason));
    }
    fresh.set_reserved(model.reserved.clone());
    for (k, alloc) in a.allocations() {
        let request = ServiceRequest {
            current_pool: Some(alloc.pool.clone()),
            ..model.requests[k].clone()
        };
        let restored = fresh.restore(&request, &alloc.ips);
        prop_assert!(restored.rejected.is_empty(), "{k}: {:?}", restored.rejected);
    }
    for name in model.pools.keys() {
        let list = a.quarantine(name);
        let n = list.len();
        prop_assert_eq!(fresh.restore_quarantine(name, list), n, "{}", name);
    }
    Ok(fresh)
}

/// A restart at any point moves nothing, counts alike and keeps each quarantine.
fn check_restore(a: &Allocator, model: &Model) -> Result<(), TestCaseError> {
    let fresh = restarted(a, model)?;
    prop_assert_eq!(snapshot(&fresh), snapshot(a));
    for name in model.pools.keys() {
        prop_assert_eq!(
            fresh.quarantine(name),
            a.quarantine(name),
            "{} quarantine",
            name
        );
        for family in [Family::V4, Family::V6] {
            prop_assert_eq!(fresh.usage(name, family), a.usage(name, family));
            prop_assert_eq!(
                fresh.reserved_unassigned(name, family),
                a.reserved_unassigned(name, family)
            );
        }
    }
    Ok(())
}

/// IPs the Service holds now and did not before may not be reserved nor come from a
/// frozen pool, unless the allocator first saw it with them in its status (a restore).
fn check_new_ips(
    a: &Allocator,
    model: &Model,
    request: &ServiceRequest,
    before: Option<&Allocation>,
) -> Result<(), TestCaseError> {
    let Some(now) = a.allocation(&request.key) else {
        return Ok(());
    };
    for i in &now.ips {
        let kept = before.is_some_and(|b| b.ips.contains(i));
        let restored = before.is_none() && request.current_ips.contains(i);
        if kept || restored {
            continue;
        }
        prop_assert!(
            !model.is_reserved(*i),
            "{} was handed reserved {}",
            request.key,
            i
        );
        prop_assert!(
            !model.frozen.contains_key(&now.pool),
            "{} got {} from frozen pool {}",
            request.key,
            i,
            now.pool
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_any_operation_sequence(ops in prop::collection::vec(arb_op(), 1..40)) {
        let mut a = Allocator::new();
        let mut model = Model::default();
        for op in ops {
            let before = snapshot(&a);
            // The Services an operation may change; everyone else must not move.
            let (touched, invalidated): (Option<ServiceKey>, Vec<ServiceKey>) = match op {
                Op::UpsertPool(p) => {
                    model.pools.insert(p.name.clone(), p.clone());
                    (None, a.upsert_pool(p))
                }
                Op::RemovePool(i) => {
                    model.pools.remove(POOL_NAMES[i]);
                    model.frozen.remove(POOL_NAMES[i]);
                    (None, a.remove_pool(POOL_NAMES[i]))
                }
                Op::Assign(r) => {
                    model.requests.insert(r.key.clone(), r.clone());
                    let _ = a.assign(&r);
                    check_new_ips(&a, &model, &r, before.get(&r.key))?;
                    (Some(r.key), Vec::new())
                }
                Op::Reassign(i) => {
                    let k = key_of(i);
                    if let Some(r) = model.requests.get(&k) {
                        let result = a.assign(r);
                        check_new_ips(&a, &model, r, before.get(&k))?;
                        // Same request, nothing invalidated: held IPs are all kept.
                        if let Some(old) = before.get(&k) {
                            let now = a.allocation(&k);
                            prop_assert!(now.is_some(), "{k} lost {old:?} on a repeated assign");
                            let now = now.cloned().unwrap_or_else(|| old.clone());
                            prop_assert_eq!(&now.pool, &old.pool);
                            prop_assert!(old.ips.iter().all(|i| now.ips.contains(i)), "{k}: {old:?} -> {now:?}");
                            if let Ok(got) = result {
                                prop_assert_eq!(got, now);
                            }
                        }
                    }
                    (Some(k), Vec::new())
                }
                Op::Release(i) => {
                    let k = key_of(i);
                    a.release(&k);
                    prop_assert!(a.allocation(&k).is_none());
                    (Some(k), Vec::new())
                }
                Op::Reserve(ranges) => {
                    model.reserved = ranges.clone();
                    a.set_reserved(ranges);
                    (None, Vec::new())
                }
                Op::Freeze(i, reason) => {
                    let name = POOL_NAMES[i];
                    let known = model.pools.contains_key(name);
                    prop_assert_eq!(a.set_frozen(name, reason), known);
                    match reason {
                        Some(r) if known => {
                            model.frozen.insert(name.to_owned(), r);
                        }
                        _ => {
                            model.frozen.remove(name);
                        }
                    }
                    (None, Vec::new())
                }
            };
            let after = snapshot(&a);
            for (k, old) in &before {
                if Some(k) == touched.as_ref() {
                    continue;
                }
                if invalidated.contains(k) {
                    // Only invalid IPs were dropped; the rest stayed.
                    if let Some(now) = after.get(k) {
                        prop_assert!(now.ips.iter().all(|i| old.ips.contains(i)));
                    }
                } else {
                    prop_assert_eq!(after.get(k), Some(old), "{} moved without cause", k);
                }
            }
            prop_assert!(after.keys().all(|k| before.contains_key(k) || Some(k) == touched.as_ref()));
            check_invariants(&a, &model)?;
            check_restore(&a, &model)?;
        }
    }

    #[test]
    fn released_ips_come_back_only_when_nothing_fresh_is_left(
        ops in prop::collection::vec((any::<bool>(), 0usize..12), 1..80),
    ) {
        let mut a = Allocator::new();
        a.upsert_pool(pool("p", &["198.18.0.0/29"]));
        let everything: BTreeSet<IpAddr> = (0..8).map(|i| ip(&format!("198.18.0.{i}"))).collect();
        let mut ever_used: BTreeSet<IpAddr> = BTreeSet::new();
        // Free released addresses, oldest first.
        let mut quarantine: Vec<IpAddr> = Vec::new();
        for (assign, n) in ops {
            let k = ServiceKey::new("default", format!("s{n}"));
            if assign {
                let had = a.allocation(&k).cloned();
                let Ok(got) = a.assign(&ServiceRequest::new(k.clone())) else { continue };
                if had.is_some() {
                    continue;
                }
                let new_ip = got.ips[0];
                if ever_used.contains(&new_ip) {
                    prop_assert_eq!(&ever_used, &everything, "{} reused while fresh IPs remained", new_ip);
                    prop_assert_eq!(quarantine.first(), Some(&new_ip), "not the oldest released");
                    quarantine.remove(0);
                }
                ever_used.insert(new_ip);
            } else {
                quarantine.extend(a.release(&k));
            }
        }
    }

    #[test]
    fn a_restart_with_the_quarantine_hands_out_what_the_running_allocator_would(
        pools in prop::collection::vec(arb_pool(), 1..4),
        reserved in arb_reserved(),
        ops in prop::collection::vec(prop_oneof![
            3 => arb_request().prop_map(Op::Assign),
            3 => (0..SERVICES.len()).prop_map(Op::Release),
        ], 1..40),
        next in prop::collection::vec(arb_request(), 1..12),
    ) {
        let mut a = Allocator::new();
        let mut model = Model::default();
        for p in pools {
            model.pools.insert(p.name.clone(), p.clone());
            a.upsert_pool(p);
        }
        model.reserved = reserved.clone();
        a.set_reserved(reserved);
        for op in ops {
            match op {
                Op::Assign(r) => {
                    model.requests.insert(r.key.clone(), r.clone());
                    let _ = a.assign(&r);
                }
                Op::Release(i) => {
                    a.release(&key_of(i));
                }
                _ => {}
            }
        }
        let mut b = restarted(&a, &model)?;
        for (n, r) in next.into_iter().enumerate() {
            let r = ServiceRequest {
                key: ServiceKey::new("new", format!("n{n}")),
                current_ips: Vec::new(),
                ..r
            };
            model.requests.insert(r.key.clone(), r.clone());
            let (from_a, from_b) = (a.assign(&r), b.assign(&r));
            prop_assert_eq!(from_a, from_b, "{}", r.key);
        }
        prop_assert_eq!(snapshot(&a), snapshot(&b));
        check_invariants(&a, &model)?;
        check_invariants(&b, &model)?;
    }

    #[test]
    fn reserved_addresses_are_never_handed_out_and_return_when_unreserved(
        menu in prop::sample::subsequence(vec![0usize, 3, 4, 5], 1..=3),
        avoid in any::<bool>(),
        ops in prop::collection::vec(prop_oneof![
            4 => (arb_request(), any::<bool>()).prop_map(|(r, share)| Op::Assign(ServiceRequest {
                // Plenty of sharing: one key, single ports, one traffic policy.
                sharing_key: if share { SharingKey::new("k1") } else { None },
                ports: r.ports.into_iter().take(1).collect(),
                traffic_policy: TrafficPolicy::Cluster,
                current_ips: Vec::new(),
                requested_pool: None,
                ..r
            })),
            2 => (0..SERVICES.len()).prop_map(Op::Release),
            1 => arb_reserved().prop_map(Op::Reserve),
        ], 1..50),
    ) {
        // Menus 0, 3, 4 and 5 do not overlap; every pool takes automatic allocations.
        let mut a = Allocator::new();
        let mut model = Model::default();
        for i in menu {
            let p = Pool { avoid_buggy_ips: avoid, ..pool(&format!("m{i}"), ADDRESSES[i]) };
            model.pools.insert(p.name.clone(), p.clone());
            a.upsert_pool(p);
        }
        for op in ops {
            match op {
                Op::Assign(r) => {
                    let before = a.allocation(&r.key).cloned();
                    model.requests.insert(r.key.clone(), r.clone());
                    if let Err(e) = a.assign(&r) {
                        // A requested reserved IP is refused as such (when nothing
                        // else about the request is wrong first).
                        if let Some(requested) = r.requested_ips.first()
                            && r.ip_families.policy != FamilyPolicy::RequireDualStack
                            && r.ip_families.allowed().contains(&Family::of(*requested))
                            && model.is_reserved(*requested)
                            && before.as_ref().is_none_or(|b| !b.ips.contains(requested))
                            && model.pools.values().any(|p| p.offers(*requested))
                        {
                            prop_assert_eq!(e.reason(), "ip_reserved", "{}", e);
                        }
                    }
                    check_new_ips(&a, &model, &r, before.as_ref())?;
                }
                Op::Release(i) => {
                    a.release(&key_of(i));
                }
                Op::Reserve(ranges) => {
                    model.reserved = ranges.clone();
                    a.set_reserved(ranges);
                }
                _ => {}
            }
            check_invariants(&a, &model)?;
        }
        // Without reservations every address serves again, quarantined ones included.
        model.reserved.clear();
        a.set_reserved(Vec::new());
        for n in 0.. {
            let families = [IpFamilies::single(Family::V4), IpFamilies::single(Family::V6)];
            let mut progress = false;
            for (f, ip_families) in families.into_iter().enumerate() {
                let r = ServiceRequest { ip_families, ..svc(&format!("fill-{n}-{f}")) };
                model.requests.insert(r.key.clone(), r.clone());
                progress |= a.assign(&r).is_ok();
            }
            if !progress {
                break;
            }
        }
        check_invariants(&a, &model)?;
        for (name, p) in &model.pools {
            for family in [Family::V4, Family::V6] {
                let usage = a.usage(name, family).unwrap_or_default();
                prop_assert_eq!(usage.assigned, p.size(family), "{} {} not all in use", name, family);
                prop_assert_eq!(a.reserved_unassigned(name, family), Some(0));
            }
        }
    }
}
