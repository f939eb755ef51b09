//! Invariants over arbitrary sequences of pool edits and Service operations.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferrolb_address::Family;
use proptest::prelude::*;

use super::super::{
    Allocation, Allocator, FamilyPolicy, IpFamilies, Pool, Port, ServiceAllocation, ServiceKey,
    ServiceRequest, SharingKey, TrafficPolicy,
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

/// Checks every invariant that must hold between operations.
fn check_invariants(
    a: &Allocator,
    pools: &BTreeMap<String, Pool>,
    requests: &BTreeMap<ServiceKey, ServiceRequest>,
) -> Result<(), TestCaseError> {
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
    // Counts per pool and family add up and match the holders.
    for (name, p) in pools {
        for family in [Family::V4, Family::V6] {
            let usage = a.usage(name, family);
            prop_assert!(usage.is_some());
            let usage = usage.unwrap_or_default();
            prop_assert_eq!(usage.total, p.size(family));
            prop_assert_eq!(
                usage.total,
                usage.assigned + usage.available,
                "{} {}",
                name,
                family
            );
            let held = holders
                .keys()
                .filter(|i| Family::of(**i) == family && p.offers(**i))
                .count();
            prop_assert_eq!(usage.assigned, held as u128, "{} {} assigned", name, family);
        }
    }
    Ok(())
}

/// A fresh allocator restored from `a`'s assignments holds exactly the same.
fn check_restore(
    a: &Allocator,
    pools: &BTreeMap<String, Pool>,
    requests: &BTreeMap<ServiceKey, ServiceRequest>,
) -> Result<(), TestCaseError> {
    let mut fresh = Allocator::new();
    for p in pools.values() {
        fresh.upsert_pool(p.clone());
    }
    for (k, alloc) in a.allocations() {
        let request = ServiceRequest {
            current_pool: Some(alloc.pool.clone()),
            ..requests[k].clone()
        };
        let restored = fresh.restore(&request, &alloc.ips);
        prop_assert!(restored.rejected.is_empty(), "{k}: {:?}", restored.rejected);
    }
    prop_assert_eq!(snapshot(&fresh), snapshot(a));
    for name in pools.keys() {
        for family in [Family::V4, Family::V6] {
            prop_assert_eq!(fresh.usage(name, family), a.usage(name, family));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_any_operation_sequence(ops in prop::collection::vec(arb_op(), 1..40)) {
        let mut a = Allocator::new();
        let mut pools: BTreeMap<String, Pool> = BTreeMap::new();
        let mut requests: BTreeMap<ServiceKey, ServiceRequest> = BTreeMap::new();
        for op in ops {
            let before = snapshot(&a);
            // The Services an operation may change; everyone else must not move.
            let (touched, invalidated): (Option<ServiceKey>, Vec<ServiceKey>) = match op {
                Op::UpsertPool(p) => {
                    pools.insert(p.name.clone(), p.clone());
                    (None, a.upsert_pool(p))
                }
                Op::RemovePool(i) => {
                    pools.remove(POOL_NAMES[i]);
                    (None, a.remove_pool(POOL_NAMES[i]))
                }
                Op::Assign(r) => {
                    requests.insert(r.key.clone(), r.clone());
                    let _ = a.assign(&r);
                    (Some(r.key), Vec::new())
                }
                Op::Reassign(i) => {
                    let k = key_of(i);
                    if let Some(r) = requests.get(&k) {
                        let result = a.assign(r);
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
            check_invariants(&a, &pools, &requests)?;
            // A restart at any point moves nothing.
            check_restore(&a, &pools, &requests)?;
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
}
